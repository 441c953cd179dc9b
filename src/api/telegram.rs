//! Telegram's Bot API, the part notifiers use, so the tools whose Bot API URL can be set
//! (Alertmanager's `telegram_configs` `api_url`, Uptime Kuma's server URL, Gatus' `api-url`,
//! Home Assistant's API endpoint) post into Chat: `https://gateway/telegram` is the API URL,
//! a hook's secret the bot token. The hook's own door does the rest: the message is rendered by
//! [`crate::formats`] as Telegram's and stored in the outbox before the answer.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::deliveries::Deliveries;
use super::hooks::{self, Answered, Secret, SenderApi};
use super::{Dsm, State};
use crate::formats;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(call_by_post).service(call_by_get);
}

/// A Bot API call.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CallPath {
    /// The bot token: a hook's secret.
    token: String,
    /// `sendMessage`; `getMe` (a check of the token) or `getChat` (the hook's chat, as Home
    /// Assistant asks before it sends). In any case, as Telegram reads them.
    method: String,
}

/// `sendMessage`'s parameters (as JSON, a form, or the query).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is read by `formats::telegram`
pub struct SendMessage {
    /// Not used: the hook's target is the chat (the token names the hook).
    #[schema(value_type = String)]
    chat_id: serde_json::Value,
    /// The message.
    text: String,
    /// `HTML`, `Markdown` or `MarkdownV2`; plain text without.
    parse_mode: Option<String>,
    /// An inline keyboard: its buttons that open a web page are posted as links.
    #[schema(value_type = Option<Object>)]
    reply_markup: Option<serde_json::Value>,
}

/// A Bot API answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ok": true, "result": {"message_id": 180_613_905, "date": 1_764_133_200,
    "chat": {"id": 1_350_771_432, "type": "channel", "title": "alerts"},
    "delivery_id": "0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10"}}))]
pub struct TelegramAnswer {
    /// `true`.
    ok: bool,
    /// The message sent (`sendMessage`), the bot (`getMe`) or the chat (`getChat`).
    #[schema(value_type = Object)]
    result: serde_json::Value,
}

/// A refusal as the Bot API words it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"ok": false, "error_code": 401,
    "description": "Unauthorized: no hook has this token (request 3e0dfb99-fedb-4605-ad76-7c675f248e63)"}))]
pub struct TelegramError {
    /// `false`.
    ok: bool,
    /// The HTTP status.
    error_code: u16,
    /// What was wrong, and the request's id.
    description: String,
    /// With a 429 or 503: `retry_after`, seconds to wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
}

/// The answers of the Bot API's routes: refusals in its words, which its clients parse.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only
enum TelegramAnswers {
    /// `sendMessage`: stored in the outbox, it is posted to the hook's target (`Location`
    /// names the delivery); `result.message_id` is derived from the delivery's id. `getMe`: the
    /// bot, named after the hook. `getChat`: the hook's chat.
    #[response(status = 200)]
    Sent(TelegramAnswer),
    /// No text, parameters that are not JSON, a form or a query, or a token that several hooks
    /// share.
    #[response(status = 400)]
    Invalid(TelegramError),
    /// The token is no hook's secret.
    #[response(status = 401)]
    Unauthorized(TelegramError),
    /// DSM refused the gateway's account the list it needed to find the hook's target.
    #[response(status = 403)]
    Forbidden(TelegramError),
    /// Another method than `sendMessage`, `getMe` or `getChat`.
    #[response(status = 404)]
    NotFound(TelegramError),
    /// The body did not arrive within `server.body_timeout_ms`.
    #[response(status = 408)]
    TimedOut(TelegramError),
    /// The body is over 5 MiB.
    #[response(status = 413)]
    TooLarge(TelegramError),
    /// The hook's target name matches no channel or user, or several.
    #[response(status = 422)]
    NoTarget(TelegramError),
    /// The message could not be stored, or too many hook bodies are being read at once: retry
    /// after `parameters.retry_after` seconds.
    #[response(status = 503)]
    Unavailable(TelegramError),
}

/// Call the Bot API, Telegram's way
///
/// `sendMessage` posts `text` to the hook whose secret the token is, read in its `parse_mode`;
/// `getMe` checks the token, `getChat` describes the hook's chat. Answers 200 with `ok: true`
/// once the message is stored in the outbox; refusals are `ok: false` with `error_code` and
/// `description`, as Telegram's.
#[utoipa::path(tag = "hooks", params(CallPath), request_body = SendMessage,
    responses(TelegramAnswers))]
#[post("/telegram/bot{token}/{method}")]
pub async fn call_by_post(
    path: web::Path<CallPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    call(path.into_inner(), req, payload, (state, chat, outbox)).await
}

/// Call the Bot API with a query, Telegram's way
///
/// As the `POST`, the parameters in the query.
#[utoipa::path(tag = "hooks", params(CallPath), responses(TelegramAnswers))]
#[get("/telegram/bot{token}/{method}")]
pub async fn call_by_get(
    path: web::Path<CallPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    call(path.into_inner(), req, payload, (state, chat, outbox)).await
}

async fn call(
    CallPath { token, method }: CallPath,
    req: HttpRequest,
    payload: web::Payload,
    (state, chat, outbox): (State, Dsm, Deliveries),
) -> HttpResponse {
    // Telegram reads method names in any case.
    let method = ["sendMessage", "getMe", "getChat"]
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(&method));
    let Some(method) = method else {
        return refused(StatusCode::NOT_FOUND, "Not Found: method not found");
    };
    // The token is all that names the hook: the chat is the hook's target, whatever `chat_id`
    // says (Alertmanager's is a number).
    let hooks = hooks::hooks_of_secret(&state.hooks, &token);
    let name = match hooks.as_slice() {
        [] => {
            return refused(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: no hook has this token",
            );
        }
        [name] => (*name).to_owned(),
        _ => {
            return refused(
                StatusCode::BAD_REQUEST,
                &format!("Bad Request: {}", super::ntfy::SHARED_SECRET),
            );
        }
    };
    match method {
        "getMe" => {
            return HttpResponse::Ok().json(TelegramAnswer {
                ok: true,
                result: serde_json::json!({
                    "id": numeric_id(&name), "is_bot": true, "first_name": name,
                    "username": format!("{name}_bot"), "can_join_groups": false,
                    "can_read_all_group_messages": false, "supports_inline_queries": false,
                }),
            });
        }
        // Home Assistant asks for each chat it is to send to before it does.
        "getChat" => {
            let chat_id = match chat_id_asked(&req, payload).await {
                Ok(chat_id) => chat_id,
                Err(refusal) => return refusal,
            };
            return HttpResponse::Ok().json(TelegramAnswer {
                ok: true,
                result: chat_of(&name, chat_id.as_deref()),
            });
        }
        _ => {}
    }
    req.extensions_mut().insert(SenderApi::Telegram);
    let answered = hooks::answered(
        &name,
        Secret::Header(Some(&token)),
        &req,
        payload,
        (&state, &chat, &outbox),
    )
    .await;
    in_telegrams_words(answered, &name)
}

/// Largest `getChat` body read: its parameters are a chat id.
const CHAT_QUERY_MAX: usize = 8 * 1024;

/// The `chat_id` a `getChat` asks about, from its body (a form or JSON) or its query.
async fn chat_id_asked(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Option<String>, HttpResponse> {
    use futures_util::StreamExt as _;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "Bad Request: the body could not be read",
            ));
        };
        if body.len() + chunk.len() > CHAT_QUERY_MAX {
            return Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let in_form = |fields: &[u8]| {
        form_urlencoded::parse(fields)
            .find(|(key, _)| key == "chat_id")
            .map(|(_, value)| value.into_owned())
    };
    // python-telegram-bot sends a form; others JSON, or the query.
    let id = if body.is_empty() {
        in_form(req.query_string().as_bytes())
    } else if formats::media_type_is(content_type, "application/x-www-form-urlencoded") {
        in_form(&body)
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body)
            .map(|parameters| parameters["chat_id"].clone())
        {
            Ok(serde_json::Value::String(id)) => Some(id),
            Ok(serde_json::Value::Number(id)) => Some(id.to_string()),
            _ => None,
        }
    };
    Ok(id)
}

/// The chat a hook's messages go to, as Telegram describes one: the id asked about when it is
/// a number, else one standing for the hook.
fn chat_of(hook: &str, asked: Option<&str>) -> serde_json::Value {
    let id = asked
        .and_then(|id| id.trim().parse::<i64>().ok())
        .unwrap_or_else(|| numeric_id(hook));
    // `accent_color_id` and `max_reaction_count` are required of a chat's full description since
    // Bot API 7.3 (python-telegram-bot refuses one without them).
    serde_json::json!({"id": id, "type": "channel", "title": hook,
        "accent_color_id": 0, "max_reaction_count": 0})
}

/// A number standing for `name` in Telegram's integer ids.
fn numeric_id(name: &str) -> i64 {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
    i64::from(u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 1)
}

/// A refusal of the gateway's own, in Telegram's words, with the request's id.
fn refused(status: StatusCode, description: &str) -> HttpResponse {
    let description = match crate::telemetry::current_request() {
        Some(request) => format!("{description} (request {})", request.id),
        None => description.to_owned(),
    };
    HttpResponse::build(status).json(TelegramError {
        ok: false,
        error_code: status.as_u16(),
        description,
        parameters: None,
    })
}

/// The hook's answer as the Bot API's: the stored message (its `message_id` from the delivery's
/// id), or the refusal; the gateway's own failures (500, 502, 504) stay problem documents, as
/// documented for every route.
fn in_telegrams_words(answered: Answered, hook: &str) -> HttpResponse {
    let refusal = match answered {
        Answered::Stored(stored) => {
            let date = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            return stored.answer(TelegramAnswer {
                ok: true,
                result: serde_json::json!({
                    "message_id": numeric_id(&stored.delivery_id),
                    "date": date,
                    "chat": chat_of(hook, None),
                    "delivery_id": stored.delivery_id,
                }),
            });
        }
        Answered::NotPosted(reason) => return hooks::not_posted(reason),
        Answered::Failed(answer) => return answer,
        Answered::Refused(refusal) => refusal,
    };
    let reason = match refusal.status().as_u16() {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        _ => refusal.status().canonical_reason().unwrap_or("Error"),
    };
    let parameters = refusal
        .retry_after()
        .map(|secs| serde_json::json!({"retry_after": secs}));
    let body = serde_json::to_value(TelegramError {
        ok: false,
        error_code: refusal.status().as_u16(),
        description: format!("{reason}: {}", refusal.error),
        parameters,
    })
    .unwrap_or_default();
    refusal.answer(body)
}
