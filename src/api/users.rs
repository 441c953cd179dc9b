//! `/users` and `/me`: Chat users, their presence and avatars, direct messages, and the
//! gateway account's own preferences.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{UserList, UserPath, cached_item, cached_list, own_user_id, post_text};
use super::extract::{Json, Query};
use super::{
    BodyProblems, CommittedToOutbox, CommonProblems, Dsm, InvalidInput, NotFound, State,
    Unprocessable, file_response,
};
use crate::api::error::{ApiError, ProblemCode};
use crate::auth::{Authorized, Read, Write};
use crate::domain::{Channel, ChannelId, ChannelKind, MessageText, Post, User, UserId};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_users)
        .service(get_user)
        .service(get_user_status)
        .service(get_user_avatar)
        .service(send_direct_message)
        .service(get_own_preferences);
}

/// A user's presence as DSM reports it. DSM does not document this object: its fields are
/// DSM's own and are passed on unchanged.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(example = json!({"user_id": 2, "status": "online"}))]
pub struct UserStatus(Map<String, Value>);

/// The gateway account's Chat preferences as DSM reports them. DSM does not document this
/// object: its fields are DSM's own and are passed on unchanged.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(example = json!({"language": "def", "timezone": "UTC",
    "enter_to_send": true, "desktop_notification": true}))]
pub struct OwnPreferences(Map<String, Value>);

/// A direct message to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Your build is ready"}))]
pub struct DirectMessage {
    /// The text, sent to Chat byte for byte. `<https://url|label>` makes a link.
    message: MessageText,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Only the user with this username (DSM account names ignore case), e.g. `alice`.
    #[param(min_length = 1)]
    username: Option<String>,
}

/// List Chat users
///
/// Served from a cache refreshed every `cache.ttl_secs`. `?username=` filters by username.
#[utoipa::path(security(("bearer" = ["read"])), tag = "users", params(UserFilter,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a list already held: answered 304 while it is current")),
    responses((status = 200, body = UserList,
            headers(("ETag" = String, description = "The whole list's version (not sent for filtered lists)"))),
        (status = 304, description = "The list is the one `If-None-Match` names",
            headers(("ETag" = String, description = "The whole list's version"))),
        InvalidInput, CommonProblems))]
#[get("/users")]
pub async fn list_users(
    _: Authorized<Read>,
    req: HttpRequest,
    filter: Query<UserFilter>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let list = state.caches.user_list(&chat).await?;
    cached_list(
        &req,
        &list,
        "username",
        filter.username.as_deref(),
        |u, username| u.username.eq_ignore_ascii_case(username),
    )
}

/// Get one user
#[utoipa::path(security(("bearer" = ["read"])), tag = "users",
    params(UserPath),
    responses((status = 200, body = User), InvalidInput, NotFound, CommonProblems))]
#[get("/users/{user_id}")]
pub async fn get_user(
    _: Authorized<Read>,
    path: web::Path<UserPath>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<User>, ApiError> {
    let user_id = path.user_id;
    let list = state.caches.user_list(&chat).await?;
    cached_item(
        &list,
        |u| u.user_id == user_id,
        || ApiError::not_found(format!("user {user_id} does not exist")),
    )
}

/// Get a user's presence
///
/// Asks DSM each time (not cached).
#[utoipa::path(security(("bearer" = ["read"])), tag = "users",
    params(UserPath),
    responses((status = 200, description = "DSM's presence object", body = UserStatus), InvalidInput, NotFound, CommonProblems))]
#[get("/users/{user_id}/status")]
pub async fn get_user_status(
    _: Authorized<Read>,
    path: web::Path<UserPath>,
    chat: Dsm,
) -> Result<web::Json<UserStatus>, ApiError> {
    let user_id = path.user_id;
    let status = chat
        .user_status(user_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("user {user_id}")))?;
    Ok(web::Json(UserStatus(status)))
}

/// Get a user's avatar
///
/// The image bytes with the `Content-Type` (and `Content-Disposition`) DSM sent.
#[utoipa::path(security(("bearer" = ["read"])), tag = "users",
    params(UserPath),
    responses((status = 200, description = "The avatar image", content_type = "image/*"),
        InvalidInput, NotFound, CommonProblems))]
#[get("/users/{user_id}/avatar")]
pub async fn get_user_avatar(
    _: Authorized<Read>,
    path: web::Path<UserPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.user_id;
    let avatar = chat
        .user_avatar(user_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("user {user_id}")))?;
    Ok(file_response(avatar))
}

/// Send a direct message to a user
///
/// Posts into the 1:1 conversation between the gateway's account and the user, opening it
/// first when there is none. Answers 201 with the post.
#[utoipa::path(security(("bearer" = ["write"])), tag = "users",
    params(UserPath,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the message is stored; the outbox delivers it")),
    request_body = DirectMessage,
    responses((status = 201, description = "The (first) post in the direct-message channel", body = Post,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as (long texts are split)"))),
        CommittedToOutbox,
        InvalidInput, NotFound,
        Unprocessable, BodyProblems, CommonProblems))]
#[post("/users/{user_id}/messages")]
pub async fn send_direct_message(
    auth: Authorized<Write>,
    path: web::Path<UserPath>,
    body: Json<DirectMessage>,
    state: State,
    chat: Dsm,
    req: actix_web::HttpRequest,
    outbox: super::deliveries::Deliveries,
) -> Result<HttpResponse, ApiError> {
    let recipient = path.user_id;
    let handover = super::common::Handover {
        req: &req,
        chat: &chat,
        outbox: &outbox,
        caller: auth.key_name.as_deref(),
        job: crate::delivery::Job::User { user_id: recipient },
    };
    // No DSM call before the 202: the outbox opens the conversation when it sends.
    if let Some(accepted) = handover.accept_if_asked_or_queued(&body.message).await {
        return accepted;
    }
    let _turn = handover.hold_target(&body.message).await;
    let own_id = own_user_id(&state, &chat).await?;
    if recipient == own_id {
        return Err(ApiError::new(
            ProblemCode::Unprocessable,
            format!("user {recipient} is the gateway's own account, which cannot message itself"),
        ));
    }
    let channel_id = direct_channel(&state, &chat, own_id, recipient).await?;
    let what = format!("direct-message channel {channel_id}");
    post_text(
        &state,
        &chat,
        channel_id,
        None,
        &body.message,
        what,
        handover,
    )
    .await
}

/// Get the gateway account's Chat preferences
#[utoipa::path(security(("bearer" = ["read"])), tag = "users",
    responses((status = 200, description = "DSM's preferences object", body = OwnPreferences), CommonProblems))]
#[get("/me/preferences")]
pub async fn get_own_preferences(
    _: Authorized<Read>,
    chat: Dsm,
) -> Result<web::Json<OwnPreferences>, ApiError> {
    Ok(web::Json(OwnPreferences(chat.own_preferences().await?)))
}

/// The DM channel of the two users: an `anonymous` channel with exactly them as members
/// (upstream/PROTOCOL.md [C1]), opened through DSM when the channel list has none.
pub(super) async fn direct_channel(
    state: &State,
    chat: &Dsm,
    own_id: UserId,
    recipient: UserId,
) -> Result<ChannelId, ApiError> {
    let is_direct = |c: &Channel| {
        c.kind == ChannelKind::Anonymous
            && c.members.len() == 2
            && c.members.contains(&own_id)
            && c.members.contains(&recipient)
    };
    let channels = state.caches.channel_list(chat).await?;
    if let Some(channel) = channels.items.iter().find(|c| is_direct(c)) {
        return Ok(channel.channel_id);
    }
    let channel_id = chat
        .open_direct_channel(recipient)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("user {recipient}")))?;
    state.caches.channels.invalidate();
    Ok(channel_id)
}
