//! Matrix's client-server API, the part notifiers use, so the tools that notify a Matrix room
//! (Uptime Kuma, Gatus, Apprise's `matrix://`, shoutrrr, Healthchecks, Gitea's Matrix webhook)
//! post into Chat by changing the homeserver: the gateway's URL is the homeserver, a hook's
//! name the room (`!name:server`, `#name:server` or the bare name), the hook's secret the
//! access token (`Authorization: Bearer`, or `?access_token=`). The hook's own door does the
//! rest: the message is rendered by [`crate::formats`] as Matrix's and stored in the outbox
//! before the answer, and the transaction id in the URL names it, so a client's retry is not
//! posted twice.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, post, put, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::deliveries::Deliveries;
use super::hooks::{self, Answered, Secret, SenderApi};
use super::{Dsm, State};
use crate::forwarded::PublicOrigin;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(send_in_transaction)
        .service(send_without_transaction)
        .service(join)
        .service(whoami)
        .service(joined_rooms);
}

/// The versions of the API whose paths are served (`r0`: Uptime Kuma, Gitea; `v3`: the rest).
const VERSIONS: [&str; 2] = ["r0", "v3"];

/// The one event type that becomes a Chat message.
const MESSAGE_EVENT: &str = "m.room.message";

/// A message's room and type.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SendPath {
    /// `r0` or `v3`.
    #[param(pattern = "^(r0|v3)$")]
    version: String,
    /// The room: a hook's name, also as `!name:server` or `#name:server`.
    room_id: String,
    /// `m.room.message` (the only type posted).
    event_type: String,
}

/// A message's room, type and transaction.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TransactionPath {
    /// `r0` or `v3`.
    #[param(pattern = "^(r0|v3)$")]
    version: String,
    /// The room: a hook's name, also as `!name:server` or `#name:server`.
    room_id: String,
    /// `m.room.message` (the only type posted).
    event_type: String,
    /// The client's id for this message: the same id with the same message again (within an
    /// hour) is the same message, answered with the same `event_id` and not posted again.
    txn_id: String,
}

/// A room to join.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JoinPath {
    /// `r0` or `v3`.
    #[param(pattern = "^(r0|v3)$")]
    version: String,
    /// The room: a hook's name, also as `!name:server` or `#name:server`.
    room_id_or_alias: String,
}

/// The API's version.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionPath {
    /// `r0` or `v3`.
    #[param(pattern = "^(r0|v3)$")]
    version: String,
}

/// The content of a room message, as Matrix's clients send it.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: the body is read by `formats::matrix`
pub struct RoomMessage {
    /// `m.text`, `m.notice` (posted alike) or `m.emote` (after a `*`).
    msgtype: String,
    /// The text; Markdown links in it become Chat links.
    body: Option<String>,
    /// `org.matrix.custom.html` when `formatted_body` is HTML.
    format: Option<String>,
    /// The text as HTML, posted instead of `body` when given: paragraphs, headings and list
    /// items on lines of their own, links as Chat links, other tags dropped.
    formatted_body: Option<String>,
}

/// The message, stored.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"event_id": "$0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10:gateway.example"}))]
pub struct EventSent {
    /// `$` and the delivery's id (`GET /api/v1/deliveries/{id}` with a read key), then the
    /// server's name.
    event_id: String,
}

/// A room joined: the hook's room.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"room_id": "!alerts:gateway.example"}))]
pub struct RoomJoined {
    room_id: String,
}

/// Who the access token is.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"user_id": "@gateway:gateway.example", "device_id": "GATEWAY"}))]
pub struct Whoami {
    user_id: String,
    device_id: &'static str,
}

/// The rooms the access token may post to: the hooks whose secret it is.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"joined_rooms": ["!alerts:gateway.example"]}))]
pub struct JoinedRooms {
    joined_rooms: Vec<String>,
}

/// A refusal as Matrix words it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"errcode": "M_UNKNOWN_TOKEN",
    "error": "no hook has this access token (request 3e0dfb99-fedb-4605-ad76-7c675f248e63)"}))]
pub struct MatrixError {
    /// Matrix's error code (`M_UNKNOWN_TOKEN`, `M_FORBIDDEN`, `M_BAD_JSON`, `M_NOT_JSON`,
    /// `M_TOO_LARGE`, `M_LIMIT_EXCEEDED`, `M_UNRECOGNIZED`, `M_UNKNOWN`).
    errcode: &'static str,
    /// What was wrong, and the request's id.
    error: String,
    /// With `M_LIMIT_EXCEEDED` and a 503: when to try again, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// The answers of the message routes, refusals in Matrix's words, which its clients parse.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only
enum SendAnswers {
    /// Stored in the outbox; it is posted to the hook's target (`Location` names the delivery).
    #[response(status = 200)]
    Sent(EventSent),
    /// The content is not a JSON object, or has no text (`M_NOT_JSON`, `M_BAD_JSON`).
    #[response(status = 400)]
    Invalid(MatrixError),
    /// No access token, or one that is no hook's secret (`M_MISSING_TOKEN`, `M_UNKNOWN_TOKEN`).
    #[response(status = 401)]
    NoToken(MatrixError),
    /// The room is not a hook the token opens, the event is not a room message, or DSM refused
    /// the gateway's account the list it needed to find the hook's target (`M_FORBIDDEN`).
    #[response(status = 403)]
    Forbidden(MatrixError),
    /// Not a version of the API served here (`M_UNRECOGNIZED`).
    #[response(status = 404)]
    Unrecognized(MatrixError),
    /// The body did not arrive within `server.body_timeout_ms` (`M_UNKNOWN`).
    #[response(status = 408)]
    TimedOut(MatrixError),
    /// The body is over 5 MiB (`M_TOO_LARGE`).
    #[response(status = 413)]
    TooLarge(MatrixError),
    /// The hook's target name matches no channel or user, or several (`M_UNKNOWN`).
    #[response(status = 422)]
    NoTarget(MatrixError),
    /// The message could not be stored, or too many hook bodies are being read at once: retry
    /// later (`M_UNKNOWN`, with `retry_after_ms`).
    #[response(status = 503)]
    Unavailable(MatrixError),
}

/// The answers of the routes about the token and its rooms.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only
enum TokenAnswers {
    /// No access token, or one that is no hook's secret (`M_MISSING_TOKEN`, `M_UNKNOWN_TOKEN`).
    #[response(status = 401)]
    NoToken(MatrixError),
    /// The room is not a hook the token opens (`M_FORBIDDEN`).
    #[response(status = 403)]
    Forbidden(MatrixError),
    /// Not a version of the API served here (`M_UNRECOGNIZED`).
    #[response(status = 404)]
    Unrecognized(MatrixError),
}

/// Send a room message, Matrix's way
///
/// The message (`m.room.message`) to the room, a hook's name; the access token is its secret
/// (`Authorization: Bearer`, or `?access_token=`). Answers 200 with an `event_id` once the
/// message is stored in the outbox; the same transaction id again gets the same answer, and
/// nothing new is posted.
#[utoipa::path(tag = "hooks", params(TransactionPath), request_body = RoomMessage,
    responses(SendAnswers))]
#[put("/_matrix/client/{version}/rooms/{room_id}/send/{event_type}/{txn_id}")]
pub async fn send_in_transaction(
    path: web::Path<TransactionPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    let TransactionPath {
        version,
        room_id,
        event_type,
        txn_id,
    } = path.into_inner();
    let message = Message {
        version,
        room_id,
        event_type,
        txn: Some(txn_id),
    };
    send(message, req, payload, (state, chat, outbox)).await
}

/// Send a room message without a transaction, Matrix's old way
///
/// As the `PUT` with a transaction id (containrrr's shoutrrr still posts so), but a retry of
/// it is another message.
#[utoipa::path(tag = "hooks", params(SendPath), request_body = RoomMessage,
    responses(SendAnswers))]
#[post("/_matrix/client/{version}/rooms/{room_id}/send/{event_type}")]
pub async fn send_without_transaction(
    path: web::Path<SendPath>,
    req: HttpRequest,
    payload: web::Payload,
    state: State,
    chat: Dsm,
    outbox: Deliveries,
) -> HttpResponse {
    let SendPath {
        version,
        room_id,
        event_type,
    } = path.into_inner();
    let message = Message {
        version,
        room_id,
        event_type,
        txn: None,
    };
    send(message, req, payload, (state, chat, outbox)).await
}

/// Join a room, Matrix's way
///
/// The room of a hook whose secret the access token is: answered with its id
/// (`!name:server`), which the clients that join first (Apprise, shoutrrr, Healthchecks) send
/// to. Nothing else happens; the body is not read.
#[utoipa::path(tag = "hooks", params(JoinPath),
    responses((status = 200, body = RoomJoined), TokenAnswers))]
#[post("/_matrix/client/{version}/join/{room_id_or_alias}")]
pub async fn join(path: web::Path<JoinPath>, req: HttpRequest, state: State) -> HttpResponse {
    let rooms = match rooms_of_token(&path.version, &req, &state) {
        Ok(rooms) => rooms,
        Err(refusal) => return *refusal,
    };
    let name = hook_of_room(&path.room_id_or_alias);
    if !rooms.contains(&name) {
        return not_in_room();
    }
    HttpResponse::Ok().json(RoomJoined {
        room_id: room_id(name, &req),
    })
}

/// Who the access token is, Matrix's way
///
/// A check of the token (Apprise asks before it posts).
#[utoipa::path(tag = "hooks", params(VersionPath),
    responses((status = 200, body = Whoami), TokenAnswers))]
#[get("/_matrix/client/{version}/account/whoami")]
pub async fn whoami(path: web::Path<VersionPath>, req: HttpRequest, state: State) -> HttpResponse {
    if let Err(refusal) = rooms_of_token(&path.version, &req, &state) {
        return *refusal;
    }
    HttpResponse::Ok().json(Whoami {
        user_id: format!("@gateway:{}", server_name(&req)),
        device_id: "GATEWAY",
    })
}

/// The rooms of the access token, Matrix's way
///
/// The hooks whose secret the token is, as rooms (`!name:server`).
#[utoipa::path(tag = "hooks", params(VersionPath),
    responses((status = 200, body = JoinedRooms), TokenAnswers))]
#[get("/_matrix/client/{version}/joined_rooms")]
pub async fn joined_rooms(
    path: web::Path<VersionPath>,
    req: HttpRequest,
    state: State,
) -> HttpResponse {
    match rooms_of_token(&path.version, &req, &state) {
        Ok(rooms) => HttpResponse::Ok().json(JoinedRooms {
            joined_rooms: rooms.iter().map(|name| room_id(name, &req)).collect(),
        }),
        Err(refusal) => *refusal,
    }
}

/// A message as its URL names it.
struct Message {
    version: String,
    room_id: String,
    event_type: String,
    txn: Option<String>,
}

/// The hook's door, for a message sent Matrix's way.
async fn send(
    message: Message,
    req: HttpRequest,
    payload: web::Payload,
    (state, chat, outbox): (State, Dsm, Deliveries),
) -> HttpResponse {
    let rooms = match rooms_of_token(&message.version, &req, &state) {
        Ok(rooms) => rooms,
        Err(refusal) => return *refusal,
    };
    let name = hook_of_room(&message.room_id).to_owned();
    if !rooms.contains(&name.as_str()) {
        return not_in_room();
    }
    if message.event_type != MESSAGE_EVENT {
        return refused(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            format!("only {MESSAGE_EVENT} events are posted to Chat"),
        );
    }
    let token = access_token(&req);
    req.extensions_mut()
        .insert(SenderApi::Matrix { txn: message.txn });
    let answered = hooks::answered(
        &name,
        Secret::Header(token.as_deref()),
        &req,
        payload,
        (&state, &chat, &outbox),
    )
    .await;
    in_matrix_words(answered, &req)
}

/// The hooks whose secret the request's access token is; a refusal when there is none, or the
/// version is not one served.
fn rooms_of_token<'s>(
    version: &str,
    req: &HttpRequest,
    state: &'s State,
) -> Result<Vec<&'s str>, Box<HttpResponse>> {
    if !VERSIONS.contains(&version) {
        return Err(Box::new(refused(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            format!(
                "the client API's {} are served (r0, v3)",
                VERSIONS.join(" and ")
            ),
        )));
    }
    let Some(token) = access_token(req) else {
        return Err(Box::new(refused(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "an access token is required: the hook's secret, as `Authorization: Bearer` or `?access_token=`",
        )));
    };
    let rooms = hooks::hooks_of_secret(&state.hooks, &token);
    if rooms.is_empty() {
        return Err(Box::new(refused(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "no hook has this access token",
        )));
    }
    Ok(rooms)
}

/// The access token: `Authorization: Bearer`, else the query's `access_token`.
fn access_token(req: &HttpRequest) -> Option<String> {
    crate::auth::bearer_token(req.headers())
        .map(str::to_owned)
        .or_else(|| {
            form_urlencoded::parse(req.query_string().as_bytes())
                .find(|(key, value)| key == "access_token" && !value.is_empty())
                .map(|(_, value)| value.into_owned())
        })
}

/// The hook a room names: `!name:server`, `#name:server` or `name`.
pub(crate) fn hook_of_room(room: &str) -> &str {
    let local = room.strip_prefix(['!', '#']).unwrap_or(room);
    local.split_once(':').map_or(local, |(name, _)| name)
}

/// A hook's room id, on this server.
fn room_id(hook: &str, req: &HttpRequest) -> String {
    format!("!{hook}:{}", server_name(req))
}

/// The server's name in ids: the host the client called.
fn server_name(req: &HttpRequest) -> String {
    req.extensions()
        .get::<PublicOrigin>()
        .map_or_else(|| "gateway".to_owned(), |origin| origin.host.to_string())
}

fn not_in_room() -> HttpResponse {
    refused(
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
        "the access token is not a secret of the hook the room names",
    )
}

/// A refusal of the gateway's own, in Matrix's words, with the request's id.
fn refused(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> HttpResponse {
    let error = error.into();
    let error = match crate::telemetry::current_request() {
        Some(request) => format!("{error} (request {})", request.id),
        None => error,
    };
    HttpResponse::build(status).json(MatrixError {
        errcode,
        error,
        retry_after_ms: None,
    })
}

/// The hook's answer as a homeserver's: the stored message's `event_id` (its delivery's id),
/// or the refusal with Matrix's error code; the gateway's own failures (500, 502, 504) stay
/// problem documents, as documented for every route.
fn in_matrix_words(answered: Answered, req: &HttpRequest) -> HttpResponse {
    let refusal = match answered {
        Answered::Stored(stored) => {
            return stored.answer(EventSent {
                event_id: format!("${}:{}", stored.delivery_id, server_name(req)),
            });
        }
        Answered::NotPosted(reason) => return hooks::not_posted(reason),
        Answered::Failed(answer) => return answer,
        Answered::Refused(refusal) => refusal,
    };
    let errcode = match refusal.status().as_u16() {
        400 if refusal.error.contains("not JSON") => "M_NOT_JSON",
        400 => "M_BAD_JSON",
        401 => "M_UNKNOWN_TOKEN",
        403 | 404 => "M_FORBIDDEN",
        413 => "M_TOO_LARGE",
        429 => "M_LIMIT_EXCEEDED",
        _ => "M_UNKNOWN",
    };
    let retry_after_ms = refusal.retry_after().map(|secs| secs.saturating_mul(1000));
    let body = serde_json::to_value(MatrixError {
        errcode,
        error: refusal.error.clone(),
        retry_after_ms,
    })
    .unwrap_or_default();
    refusal.answer(body)
}

#[cfg(test)]
mod tests {
    use super::hook_of_room;

    #[test]
    fn a_room_names_its_hook_in_any_of_matrix_spellings() {
        assert_eq!(hook_of_room("!alerts:gateway.example"), "alerts");
        assert_eq!(hook_of_room("#alerts:gateway.example:8443"), "alerts");
        assert_eq!(hook_of_room("alerts"), "alerts");
    }
}
