//! `/channels`: the channels the gateway's DSM account can see, creating them, and the
//! account's membership, read marker and preferences in them.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{
    ChannelList, ChannelPath, UnixMillis, cached_item, cached_list, ensure_users_exist, own_user_id,
};
use super::extract::{Json, Query};
use super::{BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, State, Unprocessable};
use crate::api::error::{ApiError, Problem, ProblemCode};
use crate::auth::{Authorized, Read, Write};
use crate::domain::{Channel, ChannelId, ChannelKind, ChannelType, UserId, is_name_separator};
use crate::forwarded::public_url_for;
use crate::upstream::{Refusal, UpstreamError};

/// The routes without a path parameter: looked up first (see `api::routes`).
pub fn collection_routes(cfg: &mut ServiceConfig) {
    cfg.service(list_channels).service(create_channel);
}

/// The routes of one channel.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(get_channel)
        .service(close_channel)
        .service(archive_channel)
        .service(invite_members)
        .service(join_channel)
        .service(leave_channel)
        .service(mark_read)
        .service(get_channel_preferences);
}

/// A named channel to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "release-team", "type": "private", "members": [2, 3]}))]
pub struct NewChannel {
    /// The channel's name: no white space (DSM refuses names with spaces, error 152).
    #[schema(
        min_length = 1,
        pattern = "^[^\\t\\n\\u000b\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]+$"
    )]
    name: String,
    /// Default `private`.
    #[serde(rename = "type", default)]
    kind: Option<ChannelType>,
    /// Users to invite once the channel exists.
    #[serde(default)]
    members: Vec<UserId>,
}

/// Users to add to a channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_ids": [2, 3]}))]
pub struct NewMembers {
    #[schema(min_items = 1)]
    user_ids: Vec<UserId>,
}

/// Where the gateway's account has read a channel up to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"last_view_at": 1764133200000_u64}))]
pub struct ReadMarker {
    /// Unix milliseconds; default now. Chat's own clients send the `create_at` of the last
    /// post they showed.
    #[serde(default)]
    last_view_at: Option<UnixMillis>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeaveQuery {
    /// Leave even when the gateway's account is the channel's only member, which orphans the
    /// channel: nobody can rejoin or close it through the API afterwards.
    #[serde(default)]
    force: bool,
}

/// The gateway account's preferences for a channel as DSM reports them. DSM does not document
/// this object: its fields are DSM's own and are passed on unchanged.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(example = json!({"channel_id": 1, "notification": "all",
    "is_muted": false, "is_favorite": false, "is_hidden": false}))]
pub struct ChannelPreferences(Map<String, Value>);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChannelFilter {
    /// Only the channels with this name (ignoring case), e.g. `ops`.
    #[param(min_length = 1)]
    name: Option<String>,
}

/// List the channels visible to the gateway's account
///
/// Served from a cache refreshed every `cache.ttl_secs`. `?name=` filters by name.
#[utoipa::path(security(("bearer" = ["read"])), tag = "channels", params(ChannelFilter,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a list already held: answered 304 while it is current")),
    responses((status = 200, body = ChannelList,
            headers(("ETag" = String, description = "The whole list's version (not sent for filtered lists)"))),
        (status = 304, description = "The list is the one `If-None-Match` names",
            headers(("ETag" = String, description = "The whole list's version"))),
        InvalidInput, CommonProblems))]
#[get("/channels")]
pub async fn list_channels(
    _: Authorized<Read>,
    req: HttpRequest,
    filter: Query<ChannelFilter>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let list = state.caches.channel_list(&chat).await?;
    cached_list(&req, &list, "name", filter.name.as_deref(), |c, name| {
        !c.name.is_empty() && c.name.eq_ignore_ascii_case(name)
    })
}

/// Get one channel
#[utoipa::path(security(("bearer" = ["read"])), tag = "channels",
    params(ChannelPath),
    responses((status = 200, body = Channel), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}")]
pub async fn get_channel(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<Channel>, ApiError> {
    let channel_id = path.channel_id;
    let list = state.caches.channel_list(&chat).await?;
    cached_item(
        &list,
        |c| c.channel_id == channel_id,
        || not_visible(channel_id),
    )
}

/// Create a named channel
///
/// Creates the channel, makes sure the gateway's account has joined it and invites `members`.
/// Answers 201 with the channel as DSM then lists it. If joining or inviting fails after the
/// channel was created, the channel exists: the problem says why inviting failed and names it
/// in `created` (its URL), and an `Idempotency-Key` keeps that answer, 5xx or not, so a retry
/// with the key does not create a second channel.
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    request_body = NewChannel,
    responses((status = 201, description = "The channel as DSM lists it", body = Channel, headers(("Location" = String, description = "The new channel's URL"))),
        InvalidInput, NotFound, Unprocessable, BodyProblems, CommonProblems))]
#[post("/channels")]
pub async fn create_channel(
    _: Authorized<Write>,
    req: HttpRequest,
    body: Json<NewChannel>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let NewChannel {
        name,
        kind,
        mut members,
    } = body.into_inner();
    if name.is_empty() || name.chars().any(is_name_separator) {
        return Err(ApiError::invalid(
            "name must be one word: not empty, no white space (DSM refuses spaces)",
        ));
    }
    members.sort_unstable();
    members.dedup();
    ensure_users_exist(&state, &chat, &members, "members").await?;
    let created = chat
        .create_channel(&name, kind.unwrap_or(ChannelType::Private))
        .await
        .map_err(|e| match e.refusal() {
            // "Record not valid": DSM's verdict on the name (it refuses spaces, for one).
            Some(Refusal::InvalidRecord) => ApiError::from(e).recoded(
                ProblemCode::UpstreamRejectedInput,
                format!("name {name:?} is not a valid channel name for DSM (error 152)"),
            ),
            // `type` refused (one n8n note, PROTOCOL.md): a private channel was already asked
            // again without it, so only a public one ends here.
            Some(Refusal::RecordRefused) => ApiError::from(e).recoded(
                ProblemCode::UpstreamRejectedInput,
                "DSM refused to create a channel of this type (error 407)",
            ),
            _ => e.into(),
        })?;
    let channel_id = created.channel_id;
    state.caches.channels.invalidate();
    let location = public_url_for(&req, &format!("/api/v1/channels/{channel_id}"));
    let created_before = |e: crate::upstream::UpstreamError| {
        ApiError::from(e).after_creating(format_args!("channel {channel_id}"), location.clone())
    };
    // The creator is normally a member already; join answers 117 then (upstream/PROTOCOL.md [C1]).
    if let Err(e) = chat.join_channel(channel_id).await
        && e.refusal() != Some(Refusal::NotAllowedOrMissing)
    {
        return Err(created_before(e));
    }
    // Whoever DSM already lists as a member (the creator) needs no invitation.
    members.retain(|m| !created.members.contains(m));
    if !members.is_empty() {
        chat.invite_to_channel(channel_id, &members)
            .await
            .map_err(created_before)?;
    }
    state.caches.channels.invalidate();
    // The channel exists now: should the list fail to load, answer with what create said.
    let channel = match state.caches.channel_list(&chat).await {
        Ok(list) => list
            .items
            .iter()
            .find(|c| c.channel_id == channel_id)
            .cloned()
            .unwrap_or(created),
        Err(_) => created,
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(channel))
}

/// Close a channel for the gateway's account
///
/// DSM hides the conversation from the account's channel list until its next post; no
/// message is deleted and other members are not affected.
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath),
    responses((status = 204, description = "Closed"), InvalidInput, NotFound, CommonProblems))]
#[delete("/channels/{channel_id}")]
pub async fn close_channel(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    channel_changed(&state, channel_id, chat.close_channel(channel_id).await).await
}

/// Archive a channel
///
/// DSM allows it to the channel's creator and to administrators.
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath),
    responses((status = 204, description = "Archived"), InvalidInput, NotFound, CommonProblems))]
#[post("/channels/{channel_id}/archive")]
pub async fn archive_channel(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    channel_changed(&state, channel_id, chat.archive_channel(channel_id).await).await
}

/// Invite users to a channel
///
/// Every id must be an existing user; members already in the channel are left as they are.
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath),
    request_body = NewMembers,
    responses((status = 204, description = "Invited"), InvalidInput, NotFound, Unprocessable, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/members")]
pub async fn invite_members(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    body: Json<NewMembers>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    let mut user_ids = body.into_inner().user_ids;
    if user_ids.is_empty() {
        return Err(ApiError::invalid("user_ids must name at least one user"));
    }
    user_ids.sort_unstable();
    user_ids.dedup();
    ensure_users_exist(&state, &chat, &user_ids, "user_ids").await?;
    let result = chat.invite_to_channel(channel_id, &user_ids).await;
    channel_changed(&state, channel_id, result).await
}

/// Join a channel with the gateway's account
///
/// Idempotent: answers 204 when the account is already a member.
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath),
    responses((status = 204, description = "The gateway's account is a member"), InvalidInput, NotFound, CommonProblems))]
#[put("/channels/{channel_id}/membership")]
pub async fn join_channel(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    match chat.join_channel(channel_id).await {
        // 117 means "already a member" or "no such channel": the channel list tells which.
        Err(e) if e.refusal() == Some(Refusal::NotAllowedOrMissing) => {
            let own_id = own_user_id(&state, &chat).await?;
            let is_member = fresh_channel(&state, &chat, channel_id)
                .await?
                .is_some_and(|c| c.members.contains(&own_id));
            if is_member {
                Ok(HttpResponse::NoContent().finish())
            } else {
                Err(ApiError::for_resource(
                    e,
                    format_args!("channel {channel_id}"),
                ))
            }
        }
        result => channel_changed(&state, channel_id, result).await,
    }
}

/// Leave a channel with the gateway's account
///
/// Refused with 409 when the gateway's account is the only member (leaving would orphan the
/// channel) unless `force=true`, and for direct-message and bot conversations, which cannot be
/// left (close them instead).
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath, LeaveQuery),
    responses((status = 204, description = "Left"), InvalidInput, NotFound,
        (status = 409, description = "Leaving would orphan the channel, or it cannot be left", body = Problem, content_type = "application/problem+json"),
        CommonProblems))]
#[delete("/channels/{channel_id}/membership")]
pub async fn leave_channel(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    query: Query<LeaveQuery>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    let own_id = own_user_id(&state, &chat).await?;
    // Decided on a fresh list: a stale one could let the last member leave.
    let channel = fresh_channel(&state, &chat, channel_id)
        .await?
        .ok_or_else(|| not_visible(channel_id))?;
    if !channel.members.contains(&own_id) {
        return Err(ApiError::not_found(format!(
            "the gateway's account is not a member of channel {channel_id}"
        )));
    }
    if !matches!(channel.kind, ChannelKind::Public | ChannelKind::Private) {
        return Err(ApiError::new(
            ProblemCode::Conflict,
            format!(
                "channel {channel_id} is a {} conversation, which cannot be left; close it instead",
                channel.kind
            ),
        ));
    }
    if channel.members == [own_id] && !query.force {
        return Err(ApiError::new(
            ProblemCode::Conflict,
            format!(
                "the gateway's account is the only member of channel {channel_id}: leaving would \
                 orphan it (nobody could rejoin or close it); repeat with force=true to leave anyway"
            ),
        ));
    }
    channel_changed(&state, channel_id, chat.leave_channel(channel_id).await).await
}

/// Mark a channel as read
///
/// Moves the gateway account's read marker to `last_view_at` (default now), which resets the
/// channel's `unread` count. Send `{}` for "now".
#[utoipa::path(security(("bearer" = ["write"])), tag = "channels",
    params(ChannelPath),
    request_body = ReadMarker,
    responses((status = 204, description = "Marked"), InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/read")]
pub async fn mark_read(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    body: Json<ReadMarker>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    let last_view_at = body.last_view_at.unwrap_or_else(UnixMillis::now).get();
    let result = chat.view_channel(channel_id, last_view_at).await;
    channel_changed(&state, channel_id, result).await
}

/// Get the gateway account's preferences for a channel
#[utoipa::path(security(("bearer" = ["read"])), tag = "channels",
    params(ChannelPath),
    responses((status = 200, description = "DSM's preferences object", body = ChannelPreferences), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/preferences")]
pub async fn get_channel_preferences(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    chat: Dsm,
) -> Result<web::Json<ChannelPreferences>, ApiError> {
    let channel_id = path.channel_id;
    let preferences = chat
        .channel_preferences(channel_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(ChannelPreferences(preferences)))
}

/// Answers a write to one channel: DSM's 117 becomes 404, and the cached list is dropped
/// because the write changed it.
async fn channel_changed(
    state: &State,
    channel_id: ChannelId,
    result: Result<(), UpstreamError>,
) -> Result<HttpResponse, ApiError> {
    result.map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    state.caches.channels.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

/// The channel as DSM lists it right now, for decisions a stale cache must not make.
async fn fresh_channel(
    state: &State,
    chat: &Dsm,
    channel_id: ChannelId,
) -> Result<Option<Channel>, ApiError> {
    state.caches.channels.invalidate();
    let list = state.caches.channel_list(chat).await?;
    Ok(list
        .items
        .iter()
        .find(|c| c.channel_id == channel_id)
        .cloned())
}

fn not_visible(channel_id: ChannelId) -> ApiError {
    ApiError::not_found(format!(
        "channel {channel_id} does not exist or is not visible to the gateway's account"
    ))
}
