//! The HTTP face: one module per resource. Handlers validate input into domain types, call the
//! upstream client, and answer typed JSON or a problem document. Routes and their OpenAPI
//! entries come from the same declarations (utoipa-actix-web).

mod bots;
mod channels;
pub mod docs;
mod events;
mod extract;
pub mod health;
mod inbound;
mod integrations;
mod misc;
mod post_actions;
mod post_search;
mod post_upload;
mod posts;
mod scheduled;
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

use crate::cache::Caches;
use crate::config::TokenKind;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::upstream::{ChatClient, Download, Upstream};

pub use docs::RouteTable;

/// State shared by all workers.
pub struct AppState {
    pub caches: Caches,
    pub upstream: Arc<Upstream>,
    /// Chat integration tokens by configured name; callers use the name, never the token.
    pub tokens: BTreeMap<String, IntegrationToken>,
    /// Largest file accepted by the upload route.
    pub max_upload_bytes: usize,
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
            ApiError::not_found(format!("no integration token is configured as `{name}`"))
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

/// The worker-local DSM client, as handlers receive it.
pub type Chat = web::Data<ChatClient>;
/// The shared state, as handlers receive it.
pub type State = web::Data<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "syno-chat-gateway",
        description = "A REST/JSON API in front of Synology Chat. Every `/api/v1` operation needs \
            `Authorization: Bearer <key>`; errors are RFC 9457 `application/problem+json` documents.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, crate::events::Event)),
    tags(
        (name = "channels", description = "Chat channels"),
        (name = "posts", description = "Messages in channels"),
        (name = "users", description = "Chat users"),
        (name = "integrations", description = "Managing webhooks, slash commands, bots and chatbots (admin scope)"),
        (name = "webhooks", description = "Sending through incoming webhooks with integration tokens"),
        (name = "bots", description = "Acting as a chatbot with its integration token"),
        (name = "misc", description = "Stickers, settings and Chat information"),
        (name = "inbound", description = "Receiving what Chat's outgoing webhooks, slash commands and chatbots send"),
        (name = "events", description = "Reading the events Chat sent (Server-Sent Events or polling)"),
        (name = "health", description = "Liveness and readiness")
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
    }
}

/// Problem answers any `/api/v1` operation can give.
#[derive(IntoResponses)]
#[allow(dead_code)] // documentation only: the variants describe answers built by `ApiError`
pub enum CommonProblems {
    /// No API key, or an unknown one.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key lacks the scope, or DSM denied the gateway's account.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The NAS does not offer the API this operation needs.
    #[response(status = 501, content_type = "application/problem+json")]
    Unsupported(Problem),
    /// DSM could not be reached, refused the gateway's login or request, or answered nonsense.
    #[response(status = 502, content_type = "application/problem+json")]
    BadGateway(Problem),
    /// DSM is busy or blocks the gateway's login for now (see `Retry-After`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
    /// DSM did not answer in time.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
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
    /// The body is not valid JSON for this operation, or DSM refused the message as too long.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// DSM is rate-limiting (see `Retry-After`).
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
}

/// Registers every documented route.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .configure(inbound::routes)
        .service(
            utoipa_actix_web::scope("/api/v1")
                .configure(channels::routes)
                .configure(posts::routes)
                .configure(post_search::routes)
                .configure(post_actions::routes)
                .configure(scheduled::routes)
                .configure(users::routes)
                .configure(integrations::routes)
                .configure(webhooks::routes)
                .configure(bots::routes)
                .configure(misc::routes)
                .configure(events::routes),
        );
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
    api
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

/// A file from DSM, passed on as it arrives with DSM's content type and disposition.
pub fn file_response(file: Download) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type(file.content_type)
        // The content type is DSM's: browsers must not guess a more dangerous one.
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if let Some(disposition) = file.content_disposition {
        response.insert_header((header::CONTENT_DISPOSITION, disposition));
    }
    response.streaming(file.body)
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
    use actix_web::ResponseError;
    match table.allowed_methods(req.path()) {
        Some(methods) => {
            let mut response = ApiError::new(
                ProblemCode::MethodNotAllowed,
                format!(
                    "{} is not allowed here; allowed: {}",
                    req.method(),
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
            format!("no route for {}", req.path()),
        )
        .error_response(),
    }
}

pub use docs::docs_routes;
