//! `/webapi/entry.cgi`: Synology Chat's own incoming-webhook and chatbot URL
//! (`?api=SYNO.Chat.External&method=incoming&version=2&token=…`, `method=chatbot`), answered
//! by the gateway. The tools with a native Synology Chat notifier (Apprise's `synology://`,
//! Home Assistant's `synology_chat`, scripts written from Synology's help) and chatbots then
//! post through the outbox when only the host in their URL changes. The token is a configured
//! incoming webhook's or chatbot's own DSM token (`tokens.<name>`), or for `incoming` a hook's
//! secret (the hook's target then).
//!
//! Answers: `{"success": true}` once the message is stored, as DSM answers a post. A message
//! that cannot be taken gets a problem with an HTTP error status and DSM's envelope in it
//! (`success: false`, `error.code`), where DSM would answer HTTP 200: Apprise, Home Assistant
//! and OpenClaw judge by the status alone, and DSM's 200 is how their users lost messages
//! without a word (peer-survey §1.3, §1.4). A call without a message for an API, method or
//! version this URL does not serve is answered as DSM answers it, HTTP 200 with
//! `success: false` and 102, 103 or 104: DSM's clients probe so (ioBroker's adapter will not
//! start unless `method=kuchen` gets its 103).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, get, post, web};
use secrecy::ExposeSecret;
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{checked_file_url, outgoing_message};
use super::deliveries::Deliveries;
use super::error::{ApiError, ProblemCode};
use super::hooks::{self, Admission, DispatchError, HookTarget, MAX_HOOK_BODY, Unread};
use super::idempotency::IDEMPOTENT_REPLAYED;
use super::{AppState, Dsm, State};
use crate::config::{TokenKind, normalize_token};
use crate::delivery::Job;
use crate::formats::FormatError;
use crate::formats::synology::{Call, Method, message};
use crate::forwarded::public_url_for;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(incoming_by_post).service(incoming_by_get);
}

/// The only API this URL serves, and the versions of it DSM offers.
const API: &str = "SYNO.Chat.External";
const VERSIONS: [&str; 2] = ["1", "2"];

/// The methods this URL serves: the two that send.
fn method_of(name: &str) -> Option<Method> {
    match name {
        "incoming" => Some(Method::Incoming),
        "chatbot" => Some(Method::Chatbot),
        _ => None,
    }
}

/// DSM's error numbers for the same mistakes (upstream-protocol §2 and §4.3).
mod dsm_number {
    pub const UNKNOWN: u16 = 100;
    pub const PARAMETER_MISSING: u16 = 101;
    pub const NO_SUCH_API: u16 = 102;
    pub const NO_SUCH_METHOD: u16 = 103;
    pub const VERSION_UNSUPPORTED: u16 = 104;
    pub const INVALID_PARAMETER: u16 = 117;
    pub const BAD_PAYLOAD: u16 = 120;
    pub const UNKNOWN_TOKEN: u16 = 404;
}

/// The call's parameters, as Synology's URL carries them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: read with the body by `Call::read`
pub struct EntryParams {
    /// `SYNO.Chat.External` (another API is answered as DSM answers one it does not have: 102).
    api: String,
    /// `incoming` (an incoming webhook's post, or a hook's) or `chatbot` (a chatbot's message
    /// to `user_ids`); another method is answered as DSM answers one it does not have (103).
    method: String,
    /// `2` or `1` (another is answered as DSM answers a version it does not offer: 104).
    version: String,
    /// `incoming`: a configured incoming webhook's DSM token (`tokens.<name>`), or a hook's
    /// secret; `chatbot`: a configured chatbot's token. Bare or in double quotes (`%22…%22`),
    /// as Chat's settings copy it. It may come in a form body instead.
    token: Option<String>,
    /// `{"text": "…", "file_url": "…"}` (and for `chatbot` `"user_ids": [5, …]`): Chat's text
    /// (its `<url|label>` links included) and optionally a file the NAS downloads (not through
    /// a hook). It may come in a URL-encoded form body, as the whole body, or (for a GET) here.
    payload: Option<String>,
}

/// A call's body: a form with `payload` (URL-encoded or not), or the payload as JSON.
#[derive(ToSchema)]
#[schema(value_type = Object, example = json!({"text": "Backup done <https://nas.example/logs|logs>"}))]
#[allow(dead_code)] // documentation only
pub struct EntryPayload(serde_json::Value);

/// DSM's answer to a post, with where the message waits.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": true, "data": {"delivery_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10"}}))]
pub struct EntryAccepted {
    /// Always `true`: the message is stored in the outbox.
    success: bool,
    data: EntryAcceptedData,
}

#[derive(Serialize, ToSchema)]
pub struct EntryAcceptedData {
    /// The stored delivery (`GET /api/v1/deliveries/{id}` with a read key).
    delivery_id: String,
}

/// The answers, documented once for both methods.
pub struct EntryAnswers;

impl utoipa::IntoResponses for EntryAnswers {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, ResponsesBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        ResponsesBuilder::new()
            .response("200", ResponseBuilder::new()
                .description("`{\"success\": true}` as DSM answers, once the message is stored in the outbox; it is posted once, in order, when the NAS takes it (split when long, retried while the NAS is down). `Location` names the delivery; `Idempotent-Replayed: true` marks the answer to an `Idempotency-Key` sent before with the same text. A call without a `payload` for another API, method or version: DSM's `success: false` with 102, 103 or 104, as DSM answers such a probe")
                .header("Location", utoipa::openapi::header::HeaderBuilder::new().schema(Some(<String as utoipa::PartialSchema>::schema())).build())
                .content("application/json", ContentBuilder::new().schema(Some(utoipa::openapi::Schema::OneOf(
                    utoipa::openapi::schema::OneOfBuilder::new()
                        .item(Ref::from_schema_name("EntryAccepted"))
                        .item(Ref::from_schema_name("EntryNotServed"))
                        .build()))).build()))
            .response("400", problem("`api`, `method`, `version` or `payload` missing, `payload` not an object with `text` (or with buttons or `user_ids`), a `file_url` that is not an http(s) URL, or a malformed `Idempotency-Key` (DSM numbers 101, 117, 120 in `error.code`)"))
            .response("404", problem("No configured incoming webhook or hook (`incoming`) or chatbot (`chatbot`) has this token (`error.code` 404), or a message for another API or method than `SYNO.Chat.External`'s `incoming` and `chatbot`, or for a version other than 1 or 2 (102, 103, 104)"))
            .response("408", problem("The body did not arrive within `server.body_timeout_ms`"))
            .response("413", problem("The body is over 5 MiB, or over 256 KiB unless the query names the call and its token (`api`, `method`, `version`, `token`) (`error.code` 120)"))
            .response("415", problem("The body is compressed (`Content-Encoding`)"))
            .response("422", problem("A `file_url` naming an internal host that `server.file_url_allow` does not allow, a `file_url` for a hook whose target is not an incoming webhook, or a hook target that matches nothing (`error.code` 117)"))
            .response("503", problem("The message could not be stored, or too many hook bodies are being read at once: retry later (`Retry-After`; `error.code` 100)"))
            .build()
            .into()
    }
}

/// Post a message as Synology Chat's incoming webhook does
///
/// Synology Chat's own incoming-webhook URL, for tools with a native Synology Chat notifier
/// (Apprise `synology://host/token`, Home Assistant's `synology_chat` with its `resource`
/// pointed here, scripts from Synology's help): only the host changes. The `token` is a
/// configured incoming webhook's DSM token (the message goes through it, `file_url` too) or a
/// hook's secret (the message goes to the hook's target). The message is stored in the outbox
/// before the answer, so a NAS that is down or busy still gets `{"success": true}`, and the
/// post follows once, in order. Failures answer an HTTP error status (DSM answers 200) with
/// DSM's `success: false` and `error.code` inside the problem.
#[utoipa::path(tag = "hooks", params(EntryParams), request_body(content(
    (EntryPayload = "application/x-www-form-urlencoded"), (EntryPayload = "application/json"))), responses(EntryAnswers))]
#[post("/webapi/entry.cgi")]
pub async fn incoming_by_post(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    serve(req, body, state, chat, outbox).await
}

/// Post a message as Synology Chat's incoming webhook does (GET)
///
/// The same as the POST, with every field, `payload` included, in the query.
#[utoipa::path(tag = "hooks", params(EntryParams), responses(EntryAnswers))]
#[get("/webapi/entry.cgi")]
pub async fn incoming_by_get(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    serve(req, body, state, chat, outbox).await
}

/// Where a token leads.
enum Door<'s> {
    /// A configured incoming webhook, by its `tokens.<name>`.
    Webhook(&'s str),
    /// A configured chatbot, by its `tokens.<name>`.
    Bot(&'s str),
    /// A hook, by name.
    Hook(&'s str),
}

impl Door<'_> {
    /// The `hook` label of `synochat_hook_requests_total` (configured names only), and the
    /// caller its deliveries are kept under (`hook:<label>`).
    fn label(&self) -> String {
        match self {
            Self::Webhook(name) | Self::Bot(name) => format!("tokens.{name}"),
            Self::Hook(name) => (*name).to_owned(),
        }
    }
}

/// The door `presented` opens for `method`: a configured token of the method's kind (compared
/// in constant time), else for `incoming` the one hook whose secret it is. A token of the other
/// kind opens nothing, as DSM refuses a webhook's token for a chatbot's method (404).
fn door_of<'s>(state: &'s AppState, presented: &str, method: Method) -> Option<Door<'s>> {
    let token = normalize_token(presented);
    if token.is_empty() {
        return None;
    }
    let kind = match method {
        Method::Incoming => TokenKind::Webhook,
        Method::Chatbot => TokenKind::Bot,
    };
    let mut found = None;
    for (name, configured) in &state.tokens {
        let equal: bool = configured
            .token
            .expose_secret()
            .as_bytes()
            .ct_eq(token.as_bytes())
            .into();
        if equal && configured.kind == kind && found.is_none() {
            found = Some(name.as_str());
        }
    }
    match (method, found) {
        (Method::Incoming, Some(name)) => Some(Door::Webhook(name)),
        (Method::Chatbot, Some(name)) => Some(Door::Bot(name)),
        // A hook that checks its senders' signatures takes no unsigned message, here either.
        (Method::Incoming, None) => hooks::hook_of_secret(&state.hooks, &token)
            .filter(|name| !hooks::requires_signature(&state.hooks, name))
            .map(Door::Hook),
        (Method::Chatbot, None) => None,
    }
}

/// How a call ended.
enum Outcome {
    /// Stored: the delivery, and whether the same message was handed over before.
    Stored(String, bool),
    /// A call without a message for what this URL does not serve: DSM's number and why.
    NotServed(u16, String),
    Refused(ApiError),
}

impl From<ApiError> for Outcome {
    fn from(error: ApiError) -> Self {
        Self::Refused(error)
    }
}

/// DSM's answer to a call it does not serve (HTTP 200).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"success": false, "error": {"code": 103, "errors": "only SYNO.Chat.External's `incoming` and `chatbot` are answered at this URL"}}))]
pub struct EntryNotServed {
    /// Always `false`.
    success: bool,
    error: EntryNotServedError,
}

#[derive(Serialize, ToSchema)]
pub struct EntryNotServedError {
    /// `102` (no such API), `103` (no such method) or `104` (version not offered).
    code: u16,
    /// Why, in words.
    errors: String,
}

async fn serve(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    let (label, outcome) = receive(&req, body, &state, &chat, &outbox).await;
    let answer = match &outcome {
        Outcome::Stored(_, true) => "duplicate",
        Outcome::Stored(..) => "accepted",
        Outcome::NotServed(..) => "bad_request",
        // As `/hooks` counts them: the target or DSM refused (403, 422), the store or the
        // body slots are away (5xx), else the request itself.
        Outcome::Refused(error) => match error.code().status().as_u16() {
            403 | 422 => "refused",
            500.. => "unavailable",
            _ => "bad_request",
        },
    };
    if let (Some(label), Some(metrics)) =
        (label, req.app_data::<web::Data<crate::metrics::Metrics>>())
    {
        metrics.hook_request(&label, answer);
    }
    match outcome {
        Outcome::Stored(delivery_id, duplicate) => {
            let mut answer = HttpResponse::Ok();
            answer.insert_header((
                header::LOCATION,
                public_url_for(&req, &format!("/api/v1/deliveries/{delivery_id}")),
            ));
            if duplicate {
                answer.insert_header((IDEMPOTENT_REPLAYED, "true"));
            }
            answer.json(EntryAccepted {
                success: true,
                data: EntryAcceptedData { delivery_id },
            })
        }
        Outcome::NotServed(code, errors) => HttpResponse::Ok().json(EntryNotServed {
            success: false,
            error: EntryNotServedError { code, errors },
        }),
        Outcome::Refused(error) => error.error_response(),
    }
}

/// The call read, checked and handed to the outbox; with the door's metric label once the
/// token opened one.
async fn receive(
    req: &HttpRequest,
    body: web::Payload,
    state: &State,
    chat: &Dsm,
    outbox: &Deliveries,
) -> (Option<String>, Outcome) {
    // A token in the query of a call this URL serves is checked before the body is read; one
    // in a form body only after, so such bodies take the slots of unproven senders.
    let in_query = Call::read(req.query_string(), None, b"");
    let admission = match (&in_query.token, check_call(&in_query)) {
        (Some(token), Ok(method)) if door_of(state, token, method).is_none() => {
            return (None, unknown_token().into());
        }
        (Some(_), Ok(_)) => Admission::Secret,
        _ => Admission::SignatureToCheck,
    };
    // Before its token is proven, a body is read only as far as a message needs.
    let limit = match admission {
        Admission::Secret => MAX_HOOK_BODY,
        Admission::SignatureToCheck => MAX_UNPROVEN_BODY,
    };
    let (body, permit) =
        match hooks::read_body(&state.hook_bodies, req, body, (admission, limit)).await {
            Ok(read) => read,
            Err(unread) => {
                let error = match unread {
                    Unread::TooLarge => too_large(limit),
                    Unread::Busy => Unread::busy()
                        .with_retry_after(30)
                        .in_dsm_envelope(dsm_number::UNKNOWN),
                    Unread::TimedOut => crate::body_deadline::timeout_problem()
                        .in_dsm_envelope(dsm_number::BAD_PAYLOAD),
                    Unread::Failed => ApiError::invalid("the body could not be read")
                        .in_dsm_envelope(dsm_number::BAD_PAYLOAD),
                };
                return (None, error.into());
            }
        };
    let mut content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // `curl -F token=… -F payload=…` and PHP's forms: a multipart body's fields, read as the
    // URL-encoded form they stand for.
    let body = if crate::formats::media_type_is(content_type, "multipart/form-data") {
        content_type = Some("application/x-www-form-urlencoded");
        match hooks::multipart_fields(req, body).await {
            Ok((fields, files)) if files.is_empty() => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (name, value) in &fields {
                    let Ok(value) = std::str::from_utf8(value) else {
                        let garbled =
                            ApiError::invalid(format!("field `{name}` is not UTF-8 text"));
                        return (
                            None,
                            garbled.in_dsm_envelope(dsm_number::BAD_PAYLOAD).into(),
                        );
                    };
                    form.append_pair(name, value);
                }
                web::Bytes::from(form.finish())
            }
            Ok(_) => {
                let files = ApiError::invalid(
                    "files in the body are not passed on: give the file's URL as `file_url`",
                );
                return (None, files.in_dsm_envelope(dsm_number::BAD_PAYLOAD).into());
            }
            Err(error) => {
                let unread = ApiError::invalid(error.to_string());
                return (None, unread.in_dsm_envelope(dsm_number::BAD_PAYLOAD).into());
            }
        }
    } else {
        body
    };
    let call = Call::read(req.query_string(), content_type, &body);
    let method = match check_call(&call) {
        Ok(method) => method,
        // A probe (no message): answered as DSM answers it.
        Err((Some(number), error)) if call.payload.is_none() => {
            return (None, Outcome::NotServed(number, error.detail().to_owned()));
        }
        Err((_, error)) => return (None, error.into()),
    };
    let Some(door) = call
        .token
        .as_deref()
        .and_then(|t| door_of(state, t, method))
    else {
        return (None, unknown_token().into());
    };
    let label = Some(door.label());
    let outcome = match post(req, (&call, method), &door, state, chat, outbox, permit).await {
        Ok((delivery_id, duplicate)) => Outcome::Stored(delivery_id, duplicate),
        Err(error) => error.into(),
    };
    (label, outcome)
}

/// The call is `SYNO.Chat.External`'s `incoming` or `chatbot` in a version DSM offers; else
/// the problem, with DSM's number for a call of something this URL does not serve.
fn check_call(call: &Call) -> Result<Method, (Option<u16>, ApiError)> {
    let (Some(api), Some(method), Some(version)) = (&call.api, &call.method, &call.version) else {
        let missing = ApiError::invalid(
            "the call names no `api`, `method` or `version`: this URL takes \
             api=SYNO.Chat.External&method=incoming&version=2",
        );
        return Err((None, missing.in_dsm_envelope(dsm_number::PARAMETER_MISSING)));
    };
    let not_served =
        |number: u16, error: ApiError| Err((Some(number), error.in_dsm_envelope(number)));
    if api != API {
        return not_served(
            dsm_number::NO_SUCH_API,
            ApiError::not_found(format!(
                "only {API}'s `incoming` and `chatbot` are answered at this URL; the gateway's \
                 own API is under /api/v1 (see /docs)"
            )),
        );
    }
    let Some(method) = method_of(method) else {
        return not_served(
            dsm_number::NO_SUCH_METHOD,
            ApiError::not_found(format!(
                "only {API}'s `incoming` and `chatbot` are answered at this URL (a chatbot's \
                 lists: GET /api/v1/bots/{{name}}/users and /channels)"
            )),
        );
    };
    if !VERSIONS.contains(&version.as_str()) {
        return not_served(
            dsm_number::VERSION_UNSUPPORTED,
            ApiError::not_found(format!("{API} is offered in versions 1 and 2")),
        );
    }
    Ok(method)
}

/// The payload checked and stored for the door's target.
async fn post(
    req: &HttpRequest,
    (call, method): (&Call, Method),
    door: &Door<'_>,
    state: &State,
    chat: &Dsm,
    outbox: &Deliveries,
    permit: Option<hooks::BodyPermit<'_>>,
) -> Result<(String, bool), ApiError> {
    let payload = call.payload.as_deref().ok_or_else(|| {
        ApiError::invalid("the call has no `payload` (payload={\"text\": \"…\"})")
            .in_dsm_envelope(dsm_number::BAD_PAYLOAD)
    })?;
    let message = message(payload, method).map_err(|error| match error {
        FormatError::NoText => no_text(),
        other => ApiError::invalid(other.to_string()).in_dsm_envelope(dsm_number::BAD_PAYLOAD),
    })?;
    let keyed = |text: &str| {
        hooks::keyed_event(req, text).map_err(|error| {
            let detail = match error {
                FormatError::InvalidPayload(detail) => detail,
                other => other.to_string(),
            };
            ApiError::invalid(detail).in_dsm_envelope(dsm_number::INVALID_PARAMETER)
        })
    };
    let stored = |handed: Result<(String, bool), ApiError>| {
        handed.map_err(|error| {
            error
                .with_retry_after(30)
                .in_dsm_envelope(dsm_number::UNKNOWN)
        })
    };
    let label = door.label();
    // An `Idempotency-Key` names the whole message: its text, its file and its recipients.
    let content = format!(
        "{}\n{}\n{:?}",
        message.text,
        message.file_url.as_deref().unwrap_or_default(),
        message.user_ids
    );
    // An incoming webhook's file sent alone (ioBroker's image messages): DSM posts it.
    if let (Door::Webhook(name), Some(raw), true) = (
        door,
        message.file_url.as_deref(),
        crate::domain::is_blank(&message.text),
    ) {
        let file_url = checked_file_url(raw, &state.file_urls)
            .map_err(|error| error.in_dsm_envelope(dsm_number::INVALID_PARAMETER))?;
        let event = keyed(&content)?;
        drop(permit);
        let job = Job::Webhook {
            name: (*name).to_owned(),
            file_url: Some(file_url.to_string()),
        };
        return stored(hooks::hand_over(outbox, &label, &job, "", event.as_ref()).await);
    }
    if crate::domain::is_blank(&message.text) {
        return Err(no_text());
    }
    let (text, file_url) =
        outgoing_message(&message.text, message.file_url.as_deref(), &state.file_urls)
            .map_err(|error| error.in_dsm_envelope(dsm_number::INVALID_PARAMETER))?;
    let event = keyed(&content)?;
    // Read and checked: the wait for the store is not held against other senders.
    drop(permit);
    let target = match door {
        Door::Webhook(name) => HookTarget::Token((*name).to_owned()),
        Door::Hook(name) => match state.hooks.get(*name) {
            Some(hook) => hook.target.clone(),
            None => return Err(unknown_token()),
        },
        Door::Bot(name) => {
            let job = Job::Bot {
                name: (*name).to_owned(),
                user_ids: message.user_ids,
                file_url: file_url.as_ref().map(ToString::to_string),
            };
            return stored(
                hooks::hand_over(outbox, &label, &job, text.as_str(), event.as_ref()).await,
            );
        }
    };
    hooks::dispatch(
        state,
        chat,
        outbox,
        (&label, &target, event.as_ref()),
        &text,
        file_url.as_ref(),
    )
    .await
    .map_err(|error| match error {
        DispatchError::Transient(error) => error
            .with_retry_after(30)
            .in_dsm_envelope(dsm_number::UNKNOWN),
        DispatchError::Permanent { error, .. } => {
            error.in_dsm_envelope(dsm_number::INVALID_PARAMETER)
        }
    })
}

/// No text, and no file an incoming webhook could send alone.
fn no_text() -> ApiError {
    ApiError::invalid(
        "the payload has no `text` to post (a `file_url` alone goes only through an incoming \
         webhook's own token)",
    )
    .in_dsm_envelope(dsm_number::PARAMETER_MISSING)
}

fn unknown_token() -> ApiError {
    ApiError::not_found(
        "no incoming webhook or hook (method=incoming), or chatbot (method=chatbot), of the \
         gateway has this token (or several hooks have it: give each hook its own secret)",
    )
    .in_dsm_envelope(dsm_number::UNKNOWN_TOKEN)
}

/// The largest body of a call whose token is not in the query: it is read before anything
/// proves the caller, and held while it is parsed.
const MAX_UNPROVEN_BODY: usize = 256 * 1024;

fn too_large(limit: usize) -> ApiError {
    let detail = if limit < MAX_HOOK_BODY {
        format!(
            "the body may hold at most {limit} bytes unless the query names the call and its \
             token (`api`, `method`, `version`, `token`: then {MAX_HOOK_BODY})"
        )
    } else {
        format!("the body may hold at most {limit} bytes")
    };
    ApiError::new(ProblemCode::PayloadTooLarge, detail).in_dsm_envelope(dsm_number::BAD_PAYLOAD)
}
