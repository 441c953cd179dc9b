//! `/inbound/{name}`: the URL pasted into Chat's outgoing webhook, slash command or chatbot
//! settings. Chat authenticates with the integration's token in the body, not an API key.
//! Each accepted call is stored before Chat gets its answer.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, head, post, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{InboundPath, checked_file_url};
use super::error::{ApiError, ProblemCode};
use super::hooks::{Admission, Unread};
use crate::config::{InboundKind, InboundVerify};
use crate::events::inbound::{Fields, Refusal, accept_with, token};
use crate::events::{Events, Inbound};
use crate::store::StoreError;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(receive).service(probe).service(probe_head);
}

/// What Chat sends (form-urlencoded; a JSON object with the same fields is accepted too).
/// Every value is a string; fields a kind of integration does not send are absent. A click on
/// a chatbot's button is a form with `payload` alone.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documentation only: the handler reads the fields one by one
#[schema(example = json!({"token": "<the integration's token>", "channel_id": "2",
    "channel_name": "general", "channel_type": "1", "user_id": "3", "username": "alice",
    "post_id": "8589934605", "thread_id": "0", "timestamp": "1647060330657",
    "text": "!deploy web", "trigger_word": "!deploy"}))]
pub struct InboundCall {
    /// The integration's token, as Chat shows it (inside `payload` for a button click).
    token: Option<String>,
    channel_id: Option<String>,
    channel_name: Option<String>,
    /// A number (`1` in real captures); kept on the event as `channel_type` when it is one.
    channel_type: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    post_id: Option<String>,
    thread_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    timestamp: Option<String>,
    text: Option<String>,
    trigger_word: Option<String>,
    /// A click on a chatbot's button, the only field then: JSON `{"actions": [{"type",
    /// "name", "value", "text", "style"}], "callback_id", "post_id", "token", "user":
    /// {"user_id", "username"}}`. Stored as a `button_click` event.
    payload: Option<String>,
}

/// Bodies of calls to `/inbound/…` one client address may have read at once (Chat's come from
/// the NAS's one address, small and whole, so only stalled bodies are held).
pub(super) const BODIES_PER_ADDRESS: usize = 4;

/// Largest body of a call from Chat. Chat's forms are small, but a long message is long
/// encoded: a CJK character takes 9 bytes of a form (`%E4%BD%A0`), so 1 MiB holds a text of
/// over 100,000 of them (DSM's own limit on a message is far lower).
const MAX_INBOUND_BODY: usize = 1024 * 1024;

/// The configured inbound called `name`; unknown names are 404 whatever the method.
fn inbound<'a>(events: &'a Events, name: &str) -> Result<&'a Inbound, ApiError> {
    events
        .inbounds
        .get(name)
        .ok_or_else(|| ApiError::not_found("no inbound is configured under this name"))
}

/// The event routes' answer to a store failure: `not_ready` while the event store cannot be
/// reached, and Chat's refused value a 400, as these routes have always documented them.
pub(super) fn store_failure(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(_) => {
            ApiError::new(ProblemCode::NotReady, "the event store is unavailable")
                .with_retry_after(1)
        }
        StoreError::Refused(detail) => ApiError::new(ProblemCode::InvalidRequest, detail),
        corrupt @ StoreError::Corrupt(_) => corrupt.into(),
    }
}

/// Receive an event from Chat
///
/// For outgoing webhooks, slash commands and chatbots: set this URL and the integration's
/// token in Chat, and `inbound.<name>.token` in the gateway. A call with a wrong or missing
/// token is refused (403) and nothing is stored. An accepted call is stored (once per post)
/// and answered 200 `{"success": true}`, the acknowledgement Chat's outgoing webhooks look for
/// (a body without `text`, so Chat posts nothing); consumers read it from `GET /api/v1/events`. When a
/// `respond: true` subscription answers `{"text": …}` within `inbound.reply_timeout_ms`,
/// that answer is the body (`application/json`), and Chat posts it. Its `file_url`, when it
/// has one, is passed on for outgoing webhooks and chatbots (Chat ignores it for slash
/// commands) if it passes the checks of every `file_url` (`server.file_url_allow`); otherwise
/// it is left out and the text still goes.
#[utoipa::path(tag = "inbound",
    params(InboundPath),
    request_body(description = "The form Chat sends. The same fields as JSON are accepted too (not \
        described separately: client generators cannot model one body in two encodings).",
        content((InboundCall = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Stored (or a post already stored): `{\"success\": true}`, or a `respond: true` subscription's `{\"text\": …}` answer (with its `file_url`, except for slash commands) for Chat to post", body = InboundAnswer),
        (status = 400, description = "A field is malformed", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 403, description = "Wrong or missing token (or, with `verify = \"dsm\"`, the \
            gateway's account may not list integrations)", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such inbound", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within `server.body_timeout_ms`",
            body = super::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over 1 MiB", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 415, description = "The body is compressed (`Content-Encoding`); send it \
            uncompressed", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "With `verify = \"dsm\"`: DSM is rate-limiting the gateway \
            (`upstream_rate_limited`)", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 501, description = "With `verify = \"dsm\"`: the NAS does not offer the \
            integration lists (`upstream_api_unsupported`)", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 502, description = "With `verify = \"dsm\"`: DSM could not be asked for its \
            integrations' tokens", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "The event store is unavailable (or, with `verify = \"dsm\"`, \
            DSM is busy), or as many inbound bodies as the gateway reads at once (16, at most 4 \
            from one client address) are being read already (`hooks_busy`)",
            body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 504, description = "With `verify = \"dsm\"`: DSM did not answer in time",
            body = super::error::Problem, content_type = "application/problem+json")))]
#[post("/{name}")]
pub async fn receive(
    req: HttpRequest,
    path: web::Path<InboundPath>,
    payload: web::Payload,
    events: web::Data<Events>,
    chat: super::Dsm,
    state: super::State,
) -> Result<HttpResponse, ApiError> {
    let name = &path.name;
    // Before a byte of the body is read: an unknown name costs the caller nothing of ours.
    let inbound = inbound(&events, name)?;
    // Read before its caller is known (the token is inside): at most as many at once as
    // unproven hook bodies, [`BODIES_PER_ADDRESS`] from one address, so stalled bodies cannot
    // fill the memory. The permit is given back once the body is in.
    let read = super::hooks::read_body(
        &state.inbound_bodies,
        &req,
        payload,
        (Admission::SignatureToCheck, MAX_INBOUND_BODY),
    );
    let body = match read.await {
        Ok((body, _permit)) => body,
        Err(Unread::TooLarge) => {
            return Err(ApiError::new(
                ProblemCode::PayloadTooLarge,
                format!("an inbound call's body may hold at most {MAX_INBOUND_BODY} bytes"),
            ));
        }
        Err(Unread::Busy) => {
            return Err(ApiError::new(
                ProblemCode::HooksBusy,
                "as many inbound bodies as the gateway reads at once are being read already; \
                 retry shortly",
            )
            .with_retry_after(1));
        }
        Err(Unread::TimedOut | Unread::Failed) => {
            return Err(crate::body_deadline::read_failed(
                &req,
                ApiError::invalid("the request body could not be read"),
            ));
        }
    };
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    // Chat sends forms; anything that is not JSON is read as one.
    let fields = if is_json {
        Fields::from_json(&body)
    } else {
        Ok(Fields::from_form(&body))
    };
    take_call(name, inbound, fields, &events, &chat, &state).await
}

/// A call from Chat, its fields read: the token checked, the event stored, the answer.
async fn take_call(
    name: &str,
    inbound: &Inbound,
    fields: Result<Fields, Refusal>,
    events: &Events,
    chat: &super::Dsm,
    state: &super::State,
) -> Result<HttpResponse, ApiError> {
    let refused = |refusal| match refusal {
        Refusal::BadToken => {
            tracing::warn!(inbound = %name, "inbound call refused: wrong or missing token");
            ApiError::new(
                ProblemCode::InboundTokenRejected,
                format!("the token does not match inbound `{name}`"),
            )
        }
        Refusal::Malformed(detail) => ApiError::invalid(detail),
    };
    let fields = fields.map_err(refused)?;
    let dsm_tokens = match inbound.verify {
        InboundVerify::Token => Vec::new(),
        InboundVerify::Dsm => events
            .dsm_tokens
            .tokens_for(chat, inbound.kind, token(&fields))
            .await
            .map_err(ApiError::from)?,
    };
    let event = accept_with(name, inbound, &fields, &dsm_tokens).map_err(refused)?;
    let reply = match events.record(&event).await.map_err(store_failure)? {
        Some(event_id) => {
            tracing::info!(inbound = %name, event_id, kind = event.kind.as_str(), "inbound event stored");
            crate::events::subscriptions::reply_to_stored(events, event_id).await
        }
        None => {
            tracing::info!(inbound = %name, post_id = event.post_id, "inbound post already stored");
            None
        }
    };
    // Chat posts a `{"text": …}` answer in the channel (upstream/PROTOCOL.md [I1]).
    Ok(match reply {
        Some(reply) => {
            let text = within_one_post(&reply.text, state.message_parts.max_chars);
            if text.len() < reply.text.len() {
                tracing::warn!(
                    inbound = %name,
                    chars = reply.text.chars().count(),
                    max_chars = state.message_parts.max_chars,
                    "a subscription's reply is longer than one post; Chat gets its first part"
                );
            }
            let mut answer = serde_json::json!({ "text": text });
            // Outgoing webhooks and chatbots may attach a file; slash commands may not. The NAS
            // fetches it, so it gets the same SSRF checks as any `file_url` sent through the API.
            let file_url = reply
                .file_url
                .filter(|_| inbound.kind != InboundKind::SlashCommand);
            if let Some(raw) = file_url {
                match checked_file_url(&raw, &state.file_urls) {
                    Ok(url) => answer["file_url"] = url.to_string().into(),
                    Err(refused) => tracing::warn!(
                        inbound = %name, %refused,
                        "a subscription's reply named a file_url Chat may not fetch; sent without it"
                    ),
                }
            }
            HttpResponse::Ok().json(answer)
        }
        None => acknowledged(),
    })
}

/// A reply as Chat can post it: Chat refuses a post over its length (DSM 410), and this answer
/// cannot be split into several, so a longer reply is cut where the outbox would split it, and
/// says so with `…`.
fn within_one_post(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    if text.chars().count() <= max_chars {
        return text.into();
    }
    let mut parts = crate::chunking::split_message(text, max_chars.saturating_sub(1));
    let mut first = parts.swap_remove(0);
    // A part cut inside a code block ends with the fence that closes it: the `…` goes before
    // that line, or the fence would no longer close anything.
    let last_line = first.rfind('\n').map(|at| (at, &first[at + 1..]));
    match last_line {
        Some((at, line))
            if line.len() >= 3
                && (line.bytes().all(|b| b == b'`') || line.bytes().all(|b| b == b'~')) =>
        {
            first.insert(at, '…');
        }
        _ => first.push('…'),
    }
    first.into()
}

/// Probe an inbound URL
///
/// Chat and proxies check the URL before using it: 200 `{"success": true}` (Chat's outgoing
/// webhook probes with HEAD and flags a bot that answers 405 or 204). A GET whose query holds
/// Chat's fields, a `token` among them (a call whose POST a redirect turned into a GET), is
/// received as `POST /inbound/{name}` receives that form, with the same answers.
#[utoipa::path(tag = "inbound",
    params(InboundPath),
    responses((status = 200, description = "The inbound exists: `{\"success\": true}` (or, for a \
            call in the query, as for `POST`)", body = InboundAnswer),
        (status = 400, description = "A call in the query: a field is malformed", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 403, description = "A call in the query: wrong token (or, with \
            `verify = \"dsm\"`, the gateway's account may not list integrations)",
            body = super::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such inbound", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "A call in the query, with `verify = \"dsm\"`: DSM is \
            rate-limiting the gateway (`upstream_rate_limited`)", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 501, description = "A call in the query, with `verify = \"dsm\"`: the NAS does \
            not offer the integration lists (`upstream_api_unsupported`)",
            body = super::error::Problem, content_type = "application/problem+json"),
        (status = 502, description = "A call in the query, with `verify = \"dsm\"`: DSM could not \
            be asked for its integrations' tokens", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "A call in the query: the event store is unavailable (or, \
            with `verify = \"dsm\"`, DSM is busy)", body = super::error::Problem,
            content_type = "application/problem+json"),
        (status = 504, description = "A call in the query, with `verify = \"dsm\"`: DSM did not \
            answer in time", body = super::error::Problem,
            content_type = "application/problem+json")))]
#[get("/{name}")]
pub async fn probe(
    req: HttpRequest,
    path: web::Path<InboundPath>,
    events: web::Data<Events>,
    chat: super::Dsm,
    state: super::State,
) -> Result<HttpResponse, ApiError> {
    let name = &path.name;
    let inbound = inbound(&events, name)?;
    // Chat's fields in the query (a `token` among them): a call sent as GET (a redirect turned
    // the POST into one, a sender that sends GET), received as the form it carries, never
    // answered as a probe and dropped.
    let query = req.query_string().as_bytes();
    if form_urlencoded::parse(query).any(|(field, _)| field == "token") {
        return take_call(
            name,
            inbound,
            Ok(Fields::from_form(query)),
            &events,
            &chat,
            &state,
        )
        .await;
    }
    answer_probe(&events, name)
}

fn answer_probe(events: &Events, name: &str) -> Result<HttpResponse, ApiError> {
    inbound(events, name)?;
    Ok(acknowledged())
}

/// What Chat is answered: the acknowledgement, or a subscription's reply for Chat to post.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"success": true}))]
#[allow(dead_code)] // documentation only: the answers are written as they come
pub struct InboundAnswer {
    /// `true` in the acknowledgement (no text: Chat posts nothing).
    success: Option<bool>,
    /// A `respond: true` subscription's answer, which Chat posts; longer than
    /// `delivery.max_message_chars`, it is cut to one post ending in `…`.
    text: Option<String>,
    /// Passed on with `text`, except for slash commands, when it passes the `file_url` checks.
    file_url: Option<String>,
}

/// The answer Chat's outgoing webhooks expect (docs `peer-survey`: openclaw #53439): `200`
/// and `{"success": true}`, with no `text` to post.
fn acknowledged() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::mime::APPLICATION_JSON)
        .body(r#"{"success":true}"#)
}

/// Probe an inbound URL (HEAD)
#[utoipa::path(tag = "inbound",
    params(InboundPath),
    responses((status = 200, description = "The inbound exists"),
        (status = 404, description = "No such inbound")))]
#[head("/{name}")]
pub async fn probe_head(
    path: web::Path<InboundPath>,
    events: web::Data<Events>,
) -> Result<HttpResponse, ApiError> {
    answer_probe(&events, &path.name)
}

#[cfg(test)]
mod tests {
    use super::within_one_post;

    #[test]
    fn a_reply_longer_than_one_post_is_cut_where_the_outbox_would_split_it() {
        assert_eq!(within_one_post("pong", 10), "pong");
        assert_eq!(within_one_post("exactly 10", 10), "exactly 10");
        let cut = within_one_post("one two three four five", 10);
        assert!(cut.ends_with('…'), "{cut}");
        assert!(cut.chars().count() <= 10, "{cut}");
        assert!("one two three four five".starts_with(cut.trim_end_matches('…').trim_end()));
        // Cut inside a code block: the `…` before the fence that closes the part's block.
        let log: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let block = format!("```\n{log}```");
        let cut = within_one_post(&block, 60);
        assert!(cut.starts_with("```\n"), "{cut}");
        assert!(cut.ends_with("…\n```"), "{cut}");
        assert!(cut.chars().count() <= 60, "{cut}");
    }
}
