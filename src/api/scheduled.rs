//! Scheduled posts: messages Chat sends later on the gateway account's behalf.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::extract::Json;
use super::posts::future_unix_ms;
use super::{BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, Unprocessable};
use crate::auth::{Authorized, Read, Write};
use crate::domain::{ChannelId, CronjobId, MessageText};
use crate::error::ApiError;
use crate::upstream::ScheduledPost;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_scheduled_posts)
        .service(schedule_post)
        .service(delete_scheduled_post);
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"cronjob_id": 3, "channel_id": 1,
    "message": "Stand-up in 5 minutes", "send_at": 1893456000000_u64}]}))]
pub struct ScheduledPostList {
    items: Vec<ScheduledPost>,
}

/// A message to send later.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Stand-up in 5 minutes", "send_at": 1893456000000_u64}))]
pub struct NewScheduledPost {
    /// The text, sent to Chat byte for byte.
    message: MessageText,
    /// When to send it: Unix time in milliseconds, in the future.
    #[schema(minimum = 100_000_000_000_u64, maximum = 9_999_999_999_999_u64)]
    send_at: u64,
}

/// List a channel's scheduled posts
///
/// The posts the gateway's account scheduled in the channel.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id")),
    responses((status = 200, body = ScheduledPostList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/scheduled-posts")]
pub async fn list_scheduled_posts(
    _: Authorized<Read>,
    channel_id: web::Path<ChannelId>,
    chat: Dsm,
) -> Result<web::Json<ScheduledPostList>, ApiError> {
    let channel_id = channel_id.into_inner();
    let items = chat
        .scheduled_posts(channel_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(ScheduledPostList { items }))
}

/// Schedule a post
///
/// Chat sends the message into the channel at `send_at`. Answers 201 with the scheduled post.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id")),
    request_body = NewScheduledPost,
    responses((status = 201, body = ScheduledPost), InvalidInput, NotFound, Unprocessable, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/scheduled-posts")]
pub async fn schedule_post(
    _: Authorized<Write>,
    channel_id: web::Path<ChannelId>,
    body: Json<NewScheduledPost>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = channel_id.into_inner();
    let send_at = future_unix_ms("send_at", body.send_at)?;
    let scheduled = chat
        .schedule_post(channel_id, &body.message, send_at)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(HttpResponse::Created().json(scheduled))
}

/// Delete a scheduled post
///
/// Chat will not send it.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("cronjob_id" = u64, Path, minimum = 1, description = "Scheduled post id")),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/scheduled-posts/{cronjob_id}")]
pub async fn delete_scheduled_post(
    _: Authorized<Write>,
    cronjob_id: web::Path<CronjobId>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let cronjob_id = cronjob_id.into_inner();
    chat.delete_scheduled_post(cronjob_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("scheduled post {cronjob_id}")))?;
    Ok(HttpResponse::NoContent().finish())
}
