//! ntfy's publish API, so the tools that notify through ntfy (curl one-liners, Apprise's
//! `ntfy://`, Uptime Kuma's and Healthchecks' ntfy types, shoutrrr, cron
//! scripts) post into Chat by changing the server: `https://gateway/ntfy` is the server, a
//! hook's name the topic, the hook's secret the access token (`Authorization: Bearer`, Basic
//! credentials' password, or ntfy's `?auth=`). The hook's own door does the rest: the message is
//! rendered by [`crate::formats::ntfy`] and stored in the outbox before the answer.

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, post, put, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::deliveries::Deliveries;
use super::error::ApiError;
use super::hooks::{self, Answered, Secret};
use super::{Dsm, State};
use crate::formats::{self, FormatError, Payload};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(publish_json)
        .service(publish_to_topic)
        .service(put_to_topic)
        .service(publish_by_get);
}

/// Root-level JSON publishing (`POST /`), for clients that take a server without a path
/// (Apprise's `ntfy://`); registered after every other route.
pub fn root_route(cfg: &mut ServiceConfig) {
    cfg.service(publish_json_at_root);
}

/// Marks a request that came through ntfy's API: the hook reads it as ntfy's and answers as
/// ntfy does.
#[derive(Clone, Copy, Debug)]
pub struct NtfyCall {
    /// ntfy's JSON publish (`topic` in the body), else a topic URL's body and fields.
    json: bool,
}

impl NtfyCall {
    /// The publish object the request carries; `None` when its `topic` is not the hook's.
    pub(super) fn payload(
        self,
        hook: &str,
        req: &HttpRequest,
        body: &[u8],
    ) -> Result<Option<Payload>, FormatError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|value| formats::ntfy::header_text(value.as_bytes()))
        };
        let query = |name: &str| {
            form_urlencoded::parse(req.query_string().as_bytes())
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.into_owned())
        };
        if self.json {
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| FormatError::InvalidPayload(format!("ntfy's JSON publish: {e}")))?;
            let topic = value.get("topic").and_then(serde_json::Value::as_str);
            if topic != Some(hook) {
                return Ok(None);
            }
            let value = formats::ntfy::with_fields(value, header, query);
            return Ok(Some(Payload::Json(value)));
        }
        let text = std::str::from_utf8(body).map_err(|_| {
            FormatError::InvalidPayload(
                "the body is not UTF-8 text: files are not passed on (give a URL in `X-Attach`)"
                    .into(),
            )
        })?;
        let value = formats::ntfy::from_fields(text, header, query);
        Ok(Some(Payload::Json(value)))
    }
}

/// The access token a request presents: its `Authorization` (bearer, or Basic's password), or
/// ntfy's `auth` query parameter (that header's value in base64).
fn presented_secret(req: &HttpRequest) -> Option<String> {
    // As ntfy reads it, the query's `auth` (or `authorization`) before the header.
    let Some((_, auth)) = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, value)| (key == "auth" || key == "authorization") && !value.is_empty())
    else {
        return hooks::header_secret(req.headers()).map(std::borrow::Cow::into_owned);
    };
    use base64::Engine as _;
    let unpadded = auth.trim_end_matches('=');
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(unpadded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded))
        .ok()?;
    let mut headers = header::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        header::HeaderValue::from_bytes(&decoded).ok()?,
    );
    hooks::header_secret(&headers).map(std::borrow::Cow::into_owned)
}

/// ntfy's answer to a publish, with the delivery it was stored as.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10", "time": 1764133200,
    "event": "message", "topic": "alerts", "delivery_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10"}))]
pub struct Published {
    /// The delivery's id (ntfy's message id).
    id: String,
    /// When it was stored, in Unix seconds.
    time: u64,
    /// Always `message`.
    event: &'static str,
    /// The hook's name.
    topic: String,
    /// The stored delivery (`GET /api/v1/deliveries/{id}` with a read key).
    delivery_id: String,
}

impl Published {
    pub(super) fn new(topic: &str, delivery_id: String) -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            id: delivery_id.clone(),
            time,
            event: "message",
            topic: topic.to_owned(),
            delivery_id,
        }
    }
}

/// A topic URL's body: the message as UTF-8 text, whatever its `Content-Type`.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documentation only: the body is read by `NtfyCall::payload`
pub struct MessageBytes(Vec<u8>);

/// A topic: the name of a configured hook.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TopicPath {
    /// The hook's name.
    topic: String,
}

/// ntfy's webhook-style GET: the fields in the query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TopicActionPath {
    /// The hook's name.
    topic: String,
    /// `publish`, `send` or `trigger` (ntfy's three names for it).
    #[param(pattern = "^(publish|send|trigger)$")]
    action: String,
}

/// ntfy's JSON publish.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is read by `formats::ntfy`
pub struct NtfyPublish {
    /// The hook's name.
    topic: String,
    message: Option<String>,
    title: Option<String>,
    /// Emoji short codes (`warning`, `white_check_mark`) go in front of the title; the others
    /// are listed.
    tags: Option<Vec<String>>,
    /// 1 to 5: 4 is marked ❗, 5 ‼️.
    priority: Option<u8>,
    /// A link shown under the message.
    click: Option<String>,
    /// A file's URL, shown as a link (files are not passed on).
    attach: Option<String>,
}

/// A refusal as ntfy words it.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documentation only: written by `in_ntfys_words`
#[schema(example = json!({"code": 40401, "http": 404, "error":
    "no hook by that name, or not with that secret (request 3e0dfb99-fedb-4605-ad76-7c675f248e63)",
    "link": "https://docs.ntfy.sh/publish/"}))]
pub struct NtfyError {
    /// The HTTP status times 100, plus 1.
    code: u32,
    /// The HTTP status.
    http: u16,
    /// What was wrong, and the request's id.
    error: String,
    /// ntfy's documentation of publishing.
    link: String,
}

/// The answers of ntfy's routes: refusals in ntfy's words, which its clients parse.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only
enum NtfyAnswers {
    /// Stored in the outbox; it is posted to the hook's target (`Location` names the delivery).
    #[response(status = 200)]
    Stored(Published),
    /// A field ntfy's API does not take so (a priority beyond 1–5, a `delay`: scheduled
    /// delivery is not offered), not ntfy's JSON, a body that is not UTF-8 text, a malformed
    /// `Idempotency-Key`, or (JSON publishing) a token several hooks share.
    #[response(status = 400)]
    Invalid(NtfyError),
    /// No hook by that name or with that token (or whose name is the JSON's `topic`), or a GET
    /// to another action than `publish`, `send` or `trigger`.
    #[response(status = 404)]
    NoHook(NtfyError),
    /// The body did not arrive within `server.body_timeout_ms`.
    #[response(status = 408)]
    TimedOut(NtfyError),
    /// The body is over 5 MiB.
    #[response(status = 413)]
    TooLarge(NtfyError),
    /// DSM refused the gateway's account the list it needed to find the hook's target.
    #[response(status = 403)]
    Forbidden(NtfyError),
    /// The hook's target name matches no channel or user, or several.
    #[response(status = 422)]
    NoTarget(NtfyError),
    /// The message could not be stored, or too many hook bodies are being read at once: retry
    /// later.
    #[response(status = 503)]
    Unavailable(NtfyError),
}

/// The hook's door, for a request ntfy's way; `None` for a topic that names no hook.
async fn through_hook(
    name: &str,
    json: bool,
    req: HttpRequest,
    payload: web::Payload,
    (state, chat, outbox): (State, Dsm, Deliveries),
) -> HttpResponse {
    let presented = presented_secret(&req);
    req.extensions_mut().insert(NtfyCall { json });
    let answered = hooks::answered(
        name,
        Secret::Header(presented.as_deref()),
        &req,
        payload,
        (&state, &chat, &outbox),
    )
    .await;
    let refusal = match answered {
        Answered::Stored(stored) => {
            let published = Published::new(name, stored.delivery_id.clone());
            return stored.answer(published);
        }
        Answered::NotPosted(reason) => return hooks::not_posted(reason),
        Answered::Failed(answer) => return answer,
        Answered::Refused(refusal) => refusal,
    };
    in_ntfys_words(&refusal)
}

/// A refusal as ntfy words one (`{"code": 40001, "http": 400, "error", "link"}`, which ntfy's
/// clients parse: aiontfy fails on any other shape); its request id goes into `error`, its
/// headers (`Retry-After`) stay.
fn in_ntfys_words(refusal: &hooks::Refusal) -> HttpResponse {
    let status = refusal.status().as_u16();
    refusal.answer(serde_json::json!({
        "code": u32::from(status) * 100 + 1,
        "http": status,
        "error": refusal.error,
        "link": "https://docs.ntfy.sh/publish/",
    }))
}

/// Publish to a topic, ntfy's way
///
/// The body is the message; `X-Title` (`Title`, `t`), `X-Priority` (`p`), `X-Tags` (`ta`),
/// `X-Click`, `X-Attach` and `X-Message` in headers or as query parameters, as ntfy reads them.
/// The topic is a hook's name and the token its secret (`Authorization: Bearer`, Basic
/// credentials, or `?auth=`). Answers 200 once the message is stored in the outbox.
#[utoipa::path(tag = "hooks", params(TopicPath),
    request_body(content = MessageBytes, content_type = "application/octet-stream", description = "The message as UTF-8 text, whatever its label (curl's `-d` labels it a form)"),
    responses(NtfyAnswers))]
#[post("/ntfy/{topic}")]
pub async fn publish_to_topic(
    path: web::Path<TopicPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    through_hook(&path.topic, false, req, payload, (state, chat, outbox)).await
}

/// Publish to a topic with PUT, ntfy's way
///
/// The same as the POST (`curl -T`, ntfy-lite): a file's bytes are not passed on, a small UTF-8
/// text file is posted as the message.
#[utoipa::path(tag = "hooks", params(TopicPath),
    request_body(content = MessageBytes, content_type = "application/octet-stream", description = "The message as UTF-8 text, whatever its label (curl's `-d` labels it a form)"),
    responses(NtfyAnswers))]
#[put("/ntfy/{topic}")]
pub async fn put_to_topic(
    path: web::Path<TopicPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    through_hook(&path.topic, false, req, payload, (state, chat, outbox)).await
}

/// Publish to a topic by GET, ntfy's way
///
/// ntfy's webhook URL (`/ntfy/{topic}/publish?message=…&title=…`): the fields in the query, the
/// token too (`?auth=`). Without a message, `triggered` is posted, as ntfy does.
#[utoipa::path(tag = "hooks", params(TopicActionPath), responses(NtfyAnswers))]
#[get("/ntfy/{topic}/{action}")]
pub async fn publish_by_get(
    path: web::Path<TopicActionPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    if !matches!(path.action.as_str(), "publish" | "send" | "trigger") {
        let elsewhere = ApiError::not_found("ntfy's GET publishes at /publish, /send or /trigger");
        return in_ntfys_words(&elsewhere.into());
    }
    through_hook(&path.topic, false, req, payload, (state, chat, outbox)).await
}

/// Publish as JSON, ntfy's way
///
/// ntfy's JSON publish to the server's URL (Uptime Kuma, Healthchecks): `topic` names the hook,
/// whose secret is the token. Answers 200 once the message is stored in the outbox.
#[utoipa::path(tag = "hooks", request_body = NtfyPublish,
    responses(NtfyAnswers))]
#[post("/ntfy")]
pub async fn publish_json(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    json_publish(req, payload, (state, chat, outbox)).await
}

/// Publish as JSON at the server's root, ntfy's way
///
/// The same as `POST /ntfy`, for clients that take a server without a path (Apprise's
/// `ntfy://user:secret@gateway/topic`).
#[utoipa::path(tag = "hooks", request_body = NtfyPublish,
    responses(NtfyAnswers))]
#[post("/")]
pub async fn publish_json_at_root(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    json_publish(req, payload, (state, chat, outbox)).await
}

/// Several hooks have the secret presented where no hook is named.
pub(super) const SHARED_SECRET: &str =
    "several hooks have this token; give each hook its own secret";

/// The hook whose secret the request presents, reached ntfy's JSON way.
async fn json_publish(
    req: HttpRequest,
    payload: web::Payload,
    services: (State, Dsm, Deliveries),
) -> HttpResponse {
    let hooks = presented_secret(&req)
        .map(|secret| hooks::hooks_of_secret(&services.0.hooks, &secret))
        .unwrap_or_default();
    match hooks.as_slice() {
        [name] => {
            let name = (*name).to_owned();
            through_hook(&name, true, req, payload, services).await
        }
        [] => in_ntfys_words(&ApiError::not_found("no hook has this token").into()),
        _ => in_ntfys_words(&ApiError::invalid(SHARED_SECRET).into()),
    }
}
