//! The HTTP face: one module per resource. Handlers validate input into domain types, call the
//! upstream client, and answer typed JSON or a problem document. Routes and their OpenAPI
//! entries come from the same declarations (utoipa-actix-web).

mod bots;
pub mod cache;
mod channels;
mod common;
pub mod deliveries;
pub(crate) mod divert;
pub mod docs;
mod entry_cgi;
pub mod error;
mod events;
mod extract;
pub mod health;
pub mod hook_signature;
pub mod hooks;
pub mod idempotency;
mod inbound;
mod integrations;
mod matrix;
mod misc;
pub mod mode;
mod ntfy;
mod post_actions;
mod post_search;
mod post_upload;
mod posts;
mod scheduled;
mod subscriptions;
mod telegram;
pub mod token_check;
mod users;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;

use actix_web::error::PathError;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_actix_web::AppExt;
use utoipa_actix_web::service_config::ServiceConfig;

use actix_web::ResponseError;

use crate::api::cache::Caches;
use crate::api::error::{ApiError, Problem, ProblemCode};
use crate::chunking;
use crate::config::TokenKind;
use crate::domain::{MessageText, Post};
use crate::upstream::{Download, DsmClient, DsmShared};

pub use docs::RouteTable;
pub use events::OpenStreams;

/// State shared by all workers.
pub struct AppState {
    pub caches: Caches,
    pub upstream: Arc<DsmShared>,
    /// Chat integration tokens by configured name; callers use the name, never the token.
    pub tokens: BTreeMap<String, IntegrationToken>,
    /// Largest file accepted by the upload route.
    pub max_upload_bytes: usize,
    /// Uploads in progress; a permit per upload (`server.max_concurrent_uploads`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Which hosts a `file_url` may name (`server.file_url_allow`).
    pub file_urls: crate::domain::FileUrlPolicy,
    /// How texts are cut into posts (`delivery.max_message_chars`, `.max_message_parts`).
    pub message_parts: chunking::PartLimits,
    /// The configured `/hooks` endpoints by name.
    pub hooks: hooks::Hooks,
    /// Hook bodies being read and rendered: a permit each ([`hooks::BODIES_AT_ONCE`]).
    pub hook_bodies: Arc<hooks::HookBodies>,
    /// Bodies of calls to `/inbound/…` being read: Chat's token is inside them, so each is
    /// read before the caller is known, under the same limits as an unproven hook body.
    pub inbound_bodies: Arc<hooks::HookBodies>,
    /// Signed hook requests taken lately, to answer a captured copy as a duplicate.
    pub hook_replays: hooks::Replays,
}

/// Whether a request is for one of the doors senders open with a hook's secret: `/hooks/`,
/// ntfy's (`/ntfy`, `/ntfy/…` and its JSON publishing at the root), Synology Chat's own URL,
/// Matrix's and Telegram's. The `Host` check and the rate limits treat them alike: a sender is
/// set up with whatever address reaches the gateway, and drops a notification it is refused.
pub fn is_senders_door(method: &actix_web::http::Method, path: &str) -> bool {
    path.starts_with("/hooks/")
        || path == "/ntfy"
        || path.starts_with("/ntfy/")
        || path == "/webapi/entry.cgi"
        || path.starts_with("/_matrix/")
        || path.starts_with("/telegram/")
        || (path == "/" && method == actix_web::http::Method::POST)
}

/// Whether `name` is a configured hook's or inbound's (as `route` says): a lone segment after
/// `/hooks/` or `/inbound/` that is not one may be a secret (`/hooks/{secret}`, a pasted
/// token), masked wherever the path is logged or echoed.
pub fn is_endpoint_name(
    state: Option<&web::Data<AppState>>,
    events: Option<&web::Data<crate::events::Events>>,
    route: crate::telemetry::SecretPath,
    name: &str,
) -> bool {
    match route {
        crate::telemetry::SecretPath::Hook => {
            state.is_some_and(|state| state.hooks.contains_key(name))
        }
        crate::telemetry::SecretPath::Inbound => {
            events.is_some_and(|events| events.inbounds.contains_key(name))
        }
        crate::telemetry::SecretPath::Webapi => name == "entry.cgi",
        crate::telemetry::SecretPath::MatrixRoom => {
            state.is_some_and(|state| state.hooks.contains_key(matrix::hook_of_room(name)))
        }
    }
}

/// A configured Chat integration token.
pub struct IntegrationToken {
    pub token: SecretString,
    pub kind: TokenKind,
}

impl AppState {
    /// The configured token called `name`, checked to be of `kind` before any upstream call:
    /// an unknown name is a 404, a token of the other kind a 400.
    pub fn integration_token(
        &self,
        name: &str,
        kind: TokenKind,
    ) -> Result<&SecretString, ApiError> {
        let token = self.tokens.get(name).ok_or_else(|| {
            ApiError::not_found(match crate::telemetry::looks_generated(name) {
                // A secret put where the name goes: not repeated.
                true => "no integration token is configured under that name, which is shaped \
                         as a key or secret (scg_…): give the token's name under `tokens`"
                    .to_owned(),
                false => format!("no integration token is configured as `{name}`"),
            })
        })?;
        let describe = |kind| match kind {
            TokenKind::Webhook => "an incoming-webhook token",
            TokenKind::Bot => "a chatbot token",
        };
        if token.kind != kind {
            return Err(ApiError::invalid(format!(
                "`{name}` is {}; this route needs {}",
                describe(token.kind),
                describe(kind)
            )));
        }
        Ok(&token.token)
    }
}

/// Response header: how many posts a text was sent as (long texts are split).
pub const POST_COUNT_HEADER: &str = "X-Chat-Post-Count";

/// What DSM's answer to one part of a long text means for [`chunking::send_in_parts`]: too
/// long, too fast, or another failure, in the session and the External family alike.
pub(crate) fn part_outcome<T>(
    result: Result<T, crate::upstream::UpstreamError>,
    describe: impl FnOnce(crate::upstream::UpstreamError) -> ApiError,
) -> chunking::PartOutcome<T, ApiError> {
    use crate::upstream::Refusal;
    let error = match result {
        Ok(value) => return chunking::PartOutcome::Sent(value),
        Err(error) => error,
    };
    match error.refusal() {
        Some(Refusal::TooLong) => chunking::PartOutcome::TooLong(describe(error)),
        Some(Refusal::RateLimited) => chunking::PartOutcome::RateLimited(describe(error)),
        _ => chunking::PartOutcome::Failed(describe(error)),
    }
}

/// A part of a long text as a message; parts [`chunking::send_in_parts`] sends are never blank.
pub(crate) fn part_text(part: String) -> Result<MessageText, ApiError> {
    MessageText::parse(part).map_err(|_| ApiError::new(ProblemCode::Internal, "blank message part"))
}

/// Sends `text` as one post, or as consecutive posts when it is longer than
/// `delivery.max_message_chars`, through `send` (one call per part, in order); `describe`
/// turns DSM's refusal into the route's problem, which names the parts posted before it
/// (their ids as `post_ids` reads them). Answers what each part's call returned.
pub(crate) async fn send_text<T, F, Fut>(
    state: &AppState,
    text: &MessageText,
    send: F,
    describe: impl Fn(crate::upstream::UpstreamError) -> ApiError,
    post_ids: impl Fn(&T) -> Vec<u64>,
) -> Result<Vec<T>, ApiError>
where
    F: Fn(MessageText) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::upstream::UpstreamError>>,
{
    send_text_stopping(state, text, send, describe)
        .await
        .map_err(|stopped| told_parts_posted(stopped, post_ids))
}

/// [`send_text`], answering a failure with the parts sent before it and those left, for a
/// route that can hand the rest to the outbox.
pub(crate) async fn send_text_stopping<T, F, Fut>(
    state: &AppState,
    text: &MessageText,
    send: F,
    describe: impl Fn(crate::upstream::UpstreamError) -> ApiError,
) -> Result<Vec<T>, chunking::Stopped<T, ApiError>>
where
    F: Fn(MessageText) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::upstream::UpstreamError>>,
{
    let parts = match state.message_parts.split(text.as_str()) {
        Ok(parts) => parts,
        Err(too_long) => {
            return Err(chunking::Stopped {
                error: too_long.into(),
                sent: Vec::new(),
                done: Vec::new(),
                left: Vec::new(),
            });
        }
    };
    let (send, describe) = (&send, &describe);
    chunking::send_in_parts(parts, state.message_parts.max_chars, |part| async move {
        if !idempotency::step_allowed() {
            return chunking::PartOutcome::Failed(lease_lapsing());
        }
        match part_text(part) {
            Ok(message) => part_outcome(send(message).await, describe),
            Err(error) => chunking::PartOutcome::Failed(error),
        }
    })
    .await
}

/// The request's `Idempotency-Key` lease could not be renewed for a while (the store did not
/// answer) or another attempt took it over: no further part is posted, since a retry may be
/// finishing the message.
fn lease_lapsing() -> ApiError {
    ApiError::new(
        ProblemCode::StoreUnavailable,
        "the store did not confirm this request's Idempotency-Key in time, so no further part was \
         posted; a retry with the same key finishes the message once the store answers",
    )
    .with_retry_after(5)
}

/// A stopped send's failure, naming the parts posted before it (ids as `post_ids` reads them).
pub(crate) fn told_parts_posted<T>(
    stopped: chunking::Stopped<T, ApiError>,
    post_ids: impl Fn(&T) -> Vec<u64>,
) -> ApiError {
    let ids = stopped.sent.iter().flat_map(&post_ids).collect();
    stopped.error.after_parts_posted(stopped.sent.len(), ids)
}

/// 201 with the first post created and, in [`POST_COUNT_HEADER`], how many were.
pub(crate) fn created_posts(posts: Vec<Post>) -> HttpResponse {
    let count = posts.len();
    match posts.into_iter().next() {
        Some(first) => HttpResponse::Created()
            .insert_header((POST_COUNT_HEADER, count.to_string()))
            .json(first),
        None => ApiError::new(ProblemCode::Internal, "no post was created").error_response(),
    }
}

/// The worker-local DSM client, as handlers receive it.
pub type Dsm = web::Data<DsmClient>;
/// The shared state, as handlers receive it.
pub type State = web::Data<AppState>;

/// An upload's place among the uploads at once, taken before its body was read (by the
/// idempotency middleware, which reads a keyed upload whole) and held until DSM answers.
pub struct UploadPermit(pub tokio::sync::OwnedSemaphorePermit);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "syno-chat-gateway",
        description = "A REST/JSON API in front of Synology Chat. Every `/api/v1` operation needs \
            `Authorization: Bearer <key>`; errors are RFC 9457 `application/problem+json` documents.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, crate::events::Event, common::DeliveryId, hooks::HookReceipt, hooks::HookNotPosted,
        entry_cgi::EntryAccepted, entry_cgi::EntryNotServed, ntfy::Published, ntfy::NtfyError,
        matrix::EventSent, matrix::MatrixError, telegram::TelegramAnswer, telegram::TelegramError)),
    tags(
        (name = "channels", description = "Chat channels"),
        (name = "posts", description = "Messages in channels"),
        (name = "users", description = "Chat users"),
        (name = "integrations", description = "Managing webhooks, slash commands, bots and chatbots (admin scope)"),
        (name = "webhooks", description = "Sending through incoming webhooks with integration tokens"),
        (name = "bots", description = "Acting as a chatbot with its integration token"),
        (name = "misc", description = "Stickers, settings and Chat information"),
        (name = "deliveries", description = "Messages delivered by the outbox: accepted with `Prefer: respond-async`, sent through `/hooks`, or events POSTed to subscriptions"),
        (name = "inbound", description = "Receiving what Chat's outgoing webhooks, slash commands and chatbots send"),
        (name = "events", description = "Reading the events Chat sent (Server-Sent Events or polling)"),
        (name = "subscriptions", description = "HTTP endpoints that receive the events Chat sent, signed (Standard Webhooks); admin scope"),
        (name = "health", description = "Liveness and readiness"),
        (name = "hooks", description = "Endpoints for tools that speak Slack, Mattermost, Alertmanager, Grafana or Discord (outside /api/v1: authenticated by the hook's secret)")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // A hook's secret, for `/hooks/{name}`: as a bearer token, or as Basic credentials'
        // password (senders that offer only `basic_auth`).
        let mut hook_secret = Http::new(HttpAuthScheme::Bearer);
        hook_secret.description = Some("The hook's secret (`/hooks/{name}`)".to_owned());
        components.add_security_scheme("hookSecret", SecurityScheme::Http(hook_secret));
        let mut hook_basic = Http::new(HttpAuthScheme::Basic);
        hook_basic.description =
            Some("Any user name, the hook's secret as the password (`/hooks/{name}`)".to_owned());
        components.add_security_scheme("hookBasic", SecurityScheme::Http(hook_basic));
    }
}

/// Problem answers any `/api/v1` operation can give.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the variants describe answers built by `ApiError`
pub enum CommonProblems {
    /// No API key, or an unknown one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key lacks the scope, DSM denied the gateway's account, or (while keys are not
    /// required) the request came from another site.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The `Host` is not the gateway's public host (`misdirected_request`).
    #[response(status = 421, content_type = "application/problem+json")]
    Misdirected(Problem),
    /// This API key's (or, without a valid key, this address's) rate limit is used up
    /// (`rate_limited`), or DSM is rate-limiting (`upstream_rate_limited`).
    #[response(status = 429, content_type = "application/problem+json", headers(
        // Retry-After is added to every 429 and 503 by `document_shared_answers`.
        ("RateLimit" = String, description = "With `rate_limited`: the bucket's state, \
            e.g. `\"key\";r=0;t=2` (r: requests left, t: seconds until the next is allowed)"),
        ("RateLimit-Policy" = String, description = "With `rate_limited`: the bucket, \
            e.g. `\"key\";q=200;w=10` (q: burst size, w: seconds an empty bucket takes to refill)")))]
    TooManyRequests(Problem),
    /// The NAS does not offer the API this operation needs.
    #[response(status = 501, content_type = "application/problem+json")]
    Unsupported(Problem),
    /// DSM could not be reached, refused the gateway's login or request, or answered nonsense.
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(Problem),
    /// DSM is busy or blocks the gateway's login for now, or too many uploads are in
    /// progress (see `Retry-After`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// DSM did not answer in time.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
}

/// Problem answers of the operations that read and write only the gateway's own store
/// (deliveries, events, subscriptions): they never call DSM, so DSM's failures (501, 502, 504)
/// cannot happen there, and their 503 is the store's.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the variants describe answers built by `ApiError`
pub enum StoreProblems {
    /// No API key, or an unknown one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key lacks the scope, or (while keys are not required) the request came from another
    /// site.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The `Host` is not the gateway's public host (`misdirected_request`).
    #[response(status = 421, content_type = "application/problem+json")]
    Misdirected(Problem),
    /// The key's (or the address's) rate limit is used up (`rate_limited`, with `RateLimit`
    /// and `RateLimit-Policy` as on the other operations), or, for an event stream, too many
    /// are open (`rate_limited`, without them).
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Problem),
    /// The gateway's store (outbox, events, subscriptions) is unavailable (`store_unavailable`,
    /// or `not_ready` for the event store); see `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// A message's 202 on the routes that send one message to one target (a channel, a reply, a
/// person): it was committed to the outbox rather than sent while the caller waited.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the answer is built by `Handover`
pub enum CommittedToOutbox {
    /// Committed to the outbox, which sends each part once (`Location` names the delivery). Happens with `Prefer: respond-async` (`Preference-Applied: respond-async`) and, with an `Idempotency-Key`, in three more cases: DSM's answer to a part never came (it may have posted it); some parts were posted and DSM then asked the gateway to wait (rate limited or busy); or the request retries an earlier attempt with the same key that was cut off before it answered (the outbox first looks for what that attempt posted). Also, with or without a key, when the outbox still has earlier messages for the same target that are not delivered within `delivery.queue_wait_ms`: the message is queued behind them rather than overtaking them.
    #[response(status = 202)]
    Accepted(deliveries::DeliveryAccepted),
}

/// A path or query parameter is malformed.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub enum InvalidInput {
    /// A parameter is malformed (the detail names it).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
}

/// The addressed resource does not exist.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub enum NotFound {
    /// No such resource (or not visible to the gateway's account).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// A well-formed request that cannot be carried out (e.g. a time in the past, users that do
/// not exist): rules a schema cannot state.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub enum Unprocessable {
    /// The request is well formed but cannot be carried out (the detail says why).
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
}

/// Problems of operations that take a JSON body.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only
pub enum BodyProblems {
    /// The body is larger than the gateway accepts (`payload_too_large`), or the text would
    /// be more posts than `delivery.max_message_parts` allows, or DSM refused the message as
    /// too long (`message_too_long`).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// The body paused for longer than `server.body_timeout_ms`, or took longer than it (an
    /// upload: `server.upload_timeout_ms`) to arrive (`request_timeout`); the connection is
    /// closed.
    #[response(status = 408, content_type = "application/problem+json")]
    TimedOut(Problem),
}

/// Registers every documented route.
pub fn routes(cfg: &mut ServiceConfig) {
    // The order is the OpenAPI document's, and the order in which actix tries the patterns
    // (the docs and `/metrics` come after these, see `startup`).
    cfg.service(health::healthz)
        .service(health::readyz)
        // Scopes: their prefix is a plain string test, where each route's own pattern is a
        // regex that every `/api/v1` request would otherwise run on its way past.
        .service(utoipa_actix_web::scope("/hooks").configure(hooks::routes))
        .service(utoipa_actix_web::scope("/inbound").configure(inbound::routes))
        .service(
            utoipa_actix_web::scope("/api/v1")
                .service(health::health_details)
                // Lookup order: actix tries each route's pattern in turn, and a pattern with a
                // path parameter is a regex, run (its captures allocated) for every request that
                // gets that far. The channel list's routes first (a cached list answers in a few
                // µs), then a channel's posts (the busiest routes with a parameter), then the
                // rest: a page of posts passed eight regexes before.
                .configure(channels::collection_routes)
                .configure(posts::routes)
                .configure(channels::routes)
                .configure(post_search::routes)
                .configure(post_actions::routes)
                .configure(scheduled::routes)
                .configure(users::routes)
                .configure(integrations::routes)
                .configure(webhooks::routes)
                .configure(bots::routes)
                .configure(misc::routes)
                .configure(deliveries::routes)
                .configure(events::routes)
                .configure(subscriptions::routes)
                .wrap(divert::Divert::new(
                    idempotency::concerns,
                    actix_web::middleware::from_fn(idempotency::middleware),
                )),
        )
        // Synology Chat's own incoming-webhook URL, ntfy's publish API, Matrix's client-server
        // API and Telegram's Bot API, after the API: tried last.
        .configure(entry_cgi::routes)
        .configure(ntfy::routes)
        .configure(matrix::routes)
        .configure(telegram::routes)
        .configure(ntfy::root_route);
}

/// The OpenAPI document, built from the same registrations the server uses.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    describe_bare_responses(&mut api);
    require_request_bodies(&mut api);
    document_security(&mut api);
    // Idempotency first: the responses it adds get the shared headers too.
    idempotency::document(&mut api);
    document_shared_answers(&mut api);
    api
}

/// The API key is required once, for the whole document, and each `/api/v1` operation names
/// the scope it needs in its own `security` (`#[utoipa::path(security(...))]`, next to the
/// `Authorized<Scope>` that enforces it; a test holds the two together). The routes outside
/// `/api/v1` (probes, `/hooks`, `/inbound`) take no API key and say so with an empty `security`;
/// `/hooks/{name}` takes the hook's secret as a bearer token or a Basic password, or neither
/// (a signed hook, Mattermost's `/hooks/<secret>`).
fn document_security(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    let none = || Vec::<String>::new();
    api.security = Some(vec![SecurityRequirement::new("bearer", none())]);
    for (path, item) in api.paths.paths.iter_mut() {
        if path.starts_with("/api/v1/") {
            continue;
        }
        let security = match path.as_str() {
            "/hooks/{name}" => vec![
                SecurityRequirement::new("hookSecret", none()),
                SecurityRequirement::new("hookBasic", none()),
                SecurityRequirement::default(),
            ],
            _ => Vec::new(),
        };
        for operation in operations_mut(item) {
            operation.security = Some(security.clone());
        }
    }
}

/// What every operation can answer, documented once here rather than per route: the
/// `X-Request-Id` and (demo mode only) `X-Gateway-Mode` headers on every response,
/// `WWW-Authenticate` on 401, `Retry-After` on 429 and 503 (when the wait is known), and 500
/// `internal` for the gateway's own faults.
fn document_shared_answers(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::Header;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    // Each header is described once under `components.headers` and referenced.
    let components = api.components.get_or_insert_with(Default::default);
    let mut mode = Header::new(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["demo"]))
            .build(),
    );
    mode.description = Some(
        "`demo` when the built-in DSM simulator answers instead of a NAS (demo mode); absent otherwise."
            .to_owned(),
    );
    components
        .headers
        .insert(mode::MODE_HEADER_NAME.to_owned(), RefOr::T(mode));
    for (name, schema_type, description) in [
        (
            "X-Request-Id",
            Type::String,
            "The caller's X-Request-Id when it is sane, else a new UUID; also in the logs and in problem bodies.",
        ),
        (
            "WWW-Authenticate",
            Type::String,
            "`Bearer`: the API key scheme (RFC 6750); `Bearer error=\"invalid_token\"` for a key that is not valid, and on a 403 for a key without the scope the operation needs, `Bearer error=\"insufficient_scope\", scope=\"<scope>\"`.",
        ),
        (
            "Retry-After",
            Type::Integer,
            "Seconds to wait before trying again, when the gateway knows.",
        ),
        (
            "Location",
            Type::String,
            "Where the delivery the message was committed to can be read (`GET /api/v1/deliveries/{id}`).",
        ),
        (
            "Preference-Applied",
            Type::String,
            "`respond-async` when the answer is 202 because the caller asked for it with `Prefer`.",
        ),
    ] {
        let mut header = Header::new(ObjectBuilder::new().schema_type(schema_type).build());
        header.description = Some(description.to_owned());
        components.headers.insert(name.to_owned(), RefOr::T(header));
    }
    let reference = |name: &str| RefOr::Ref(Ref::new(format!("#/components/headers/{name}")));
    let internal = ResponseBuilder::new()
        .description("A fault of the gateway itself (`internal`), never of the caller's request.")
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build();
    for (path, item) in api.paths.paths.iter_mut() {
        let committed_to_outbox = path.starts_with("/api/v1/");
        for operation in operations_mut(item) {
            let responses = &mut operation.responses.responses;
            responses
                .entry("500".to_owned())
                .or_insert_with(|| RefOr::T(internal.clone()));
            for (status, response) in responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let mut names = vec!["X-Request-Id", mode::MODE_HEADER_NAME];
                match status.as_str() {
                    "401" | "403" => names.push("WWW-Authenticate"),
                    "429" | "503" => names.push("Retry-After"),
                    // The API's 202s: a message committed to the outbox (`deliveries::accepted`).
                    "202" if committed_to_outbox => {
                        names.extend(["Location", "Preference-Applied"])
                    }
                    _ => {}
                }
                for name in names {
                    response
                        .headers
                        .entry(name.to_owned())
                        .or_insert_with(|| reference(name));
                }
            }
        }
    }
}

/// The served document lists the configured integration-token names as the only values of
/// the `{name}` path parameters (webhook names for webhook routes, bot names for bot routes),
/// so Swagger UI offers them and clients know them. The committed document stays generic.
pub fn describe_configured_tokens(
    api: &mut utoipa::openapi::OpenApi,
    tokens: &BTreeMap<String, IntegrationToken>,
) {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let names_of = |kind: TokenKind| -> Vec<String> {
        tokens
            .iter()
            .filter(|(_, t)| t.kind == kind)
            .map(|(name, _)| name.clone())
            .collect()
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let kind = if path.starts_with("/api/v1/bots/{name}") {
            TokenKind::Bot
        } else if path.starts_with("/api/v1/webhooks/incoming/{name}") {
            TokenKind::Webhook
        } else {
            continue;
        };
        let names = names_of(kind);
        if names.is_empty() {
            continue;
        }
        for operation in operations_mut(item) {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let utoipa::openapi::RefOr::T(parameter) = parameter
                    && parameter.name == "name"
                {
                    let schema = ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(names.clone()))
                        .build();
                    parameter.schema = Some(utoipa::openapi::RefOr::T(schema.into()));
                }
            }
        }
    }
}

/// The operations of a path item, whatever their method.
fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Every body the API accepts is required (the handlers refuse a missing one); saying so also
/// keeps client generators from typing bodies as optional.
fn require_request_bodies(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            if let Some(utoipa::openapi::RefOr::T(body)) = operation.request_body.as_mut() {
                body.required = Some(utoipa::openapi::Required::True);
            }
        }
    }
}

/// OpenAPI requires a description on every response; success responses declared with only a
/// body get their status's reason phrase, so generators accept the document.
fn describe_bare_responses(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let utoipa::openapi::RefOr::T(response) = response
                    && response.description.trim().is_empty()
                {
                    let reason = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| actix_web::http::StatusCode::from_u16(code).ok())
                        .and_then(|code| code.canonical_reason())
                        .unwrap_or("Response");
                    response.description = reason.to_owned();
                }
            }
        }
    }
}

/// A file from DSM, passed on as it arrives with DSM's content type and file name. Files are
/// whatever a chat member uploaded: a browser must save them, never render them on the
/// gateway's origin (an HTML or SVG file would run its scripts there), so the disposition is
/// always `attachment` and the content sandboxed.
pub fn file_response(file: Download) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type(file.content_type)
        // The content type is DSM's: browsers must not guess a more dangerous one.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"));
    let name = file.content_disposition.as_deref().and_then(download_name);
    response.insert_header(header::ContentDisposition {
        disposition: header::DispositionType::Attachment,
        parameters: name.map_or_else(Vec::new, |name| attachment_name(&name)),
    });
    match file.content_length {
        Some(length) => response.body(actix_web::body::SizedStream::new(length, file.body)),
        None => response.streaming(file.body),
    }
}

/// The file name in DSM's `Content-Disposition` (`filename*` first, UTF-8 also when DSM sends
/// it raw), without any path a browser could be led to honour (`../../x`, `C:\x\y`).
fn download_name(raw: &str) -> Option<String> {
    let value = header::HeaderValue::from_bytes(raw.as_bytes()).ok()?;
    let disposition = header::ContentDisposition::from_raw(&value).ok()?;
    let name = match disposition.get_filename_ext() {
        Some(ext) => String::from_utf8_lossy(&ext.value).into_owned(),
        None => disposition.get_filename()?.to_owned(),
    };
    let name = crate::domain::shown_file_name(&name);
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    (!base.trim().is_empty()).then(|| base.to_owned())
}

/// RFC 6266 §4.3: the name as `filename*` in UTF-8, and an ASCII `filename` for clients that
/// read only that one.
fn attachment_name(name: &str) -> Vec<header::DispositionParam> {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut parameters = vec![header::DispositionParam::Filename(ascii.clone())];
    if ascii != name {
        parameters.push(header::DispositionParam::FilenameExt(
            header::ExtendedValue {
                charset: header::Charset::Ext("UTF-8".to_owned()),
                language_tag: None,
                value: name.as_bytes().to_vec(),
            },
        ));
    }
    parameters
}

/// Turns actix's path-extractor failures into problem documents (bodies and query strings
/// go through [`extract`], whose errors name the field).
pub fn extractor_configs(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(path_error));
}

fn path_error(error: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("invalid path parameter: {error}")).into()
}

/// Answers requests no route took: 405 with `Allow` when the path exists, else 404.
pub async fn fallback(req: HttpRequest, table: web::Data<RouteTable>) -> HttpResponse {
    match table.allowed_methods(req.path()) {
        Some(mut methods) => {
            // A GET route takes HEAD too (the front door routes it as its GET).
            if methods.iter().any(|m| m == "GET")
                && !methods.iter().any(|m| m == "HEAD")
                && crate::front_door::head_is_get(req.path())
            {
                methods.push("HEAD".to_owned());
                methods.sort();
            }
            let mut response = ApiError::new(
                ProblemCode::MethodNotAllowed,
                format!(
                    "{} is not allowed here; allowed: {}",
                    // An invented method is not echoed (nor counted by its name).
                    match crate::telemetry::method_label(req.method()) {
                        "other" => "this method",
                        known => known,
                    },
                    methods.join(", ")
                ),
            )
            .error_response();
            if let Ok(value) = header::HeaderValue::from_str(&methods.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        None => ApiError::new(
            ProblemCode::RouteNotFound,
            format!(
                "no route for {}",
                crate::telemetry::loggable_path(req.path(), |route, name| {
                    is_endpoint_name(req.app_data(), req.app_data(), route, name)
                })
            ),
        )
        .error_response(),
    }
}

pub use docs::docs_routes;
