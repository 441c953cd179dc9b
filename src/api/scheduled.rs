//! Scheduled posts: messages Chat sends later on the gateway account's behalf.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{ChannelPath, CronjobPath, Items, ScheduledPostList, UnixMillis, done};
use super::extract::Json;
use super::{BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, Unprocessable};
use crate::api::error::ApiError;
use crate::auth::{Authorized, Read, Write};
use crate::domain::MessageText;
use crate::upstream::ScheduledPost;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_scheduled_posts)
        .service(schedule_post)
        .service(delete_scheduled_post);
}

/// A message to send later.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Stand-up in 5 minutes", "send_at": 1893456000000_u64}))]
pub struct NewScheduledPost {
    /// The text, sent to Chat byte for byte.
    message: MessageText,
    /// When to send it: Unix time in milliseconds, in the future.
    send_at: UnixMillis,
}

/// List a channel's scheduled posts
///
/// The posts the gateway's account scheduled in the channel.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(ChannelPath),
    responses((status = 200, body = ScheduledPostList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/scheduled-posts")]
pub async fn list_scheduled_posts(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    chat: Dsm,
) -> Result<web::Json<Items<ScheduledPost>>, ApiError> {
    let channel_id = path.channel_id;
    let items = chat
        .scheduled_posts(channel_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(Items { items }))
}

/// Schedule a post
///
/// Chat sends the message into the channel at `send_at`. Answers 201 with the scheduled post.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(ChannelPath),
    request_body = NewScheduledPost,
    responses((status = 201, body = ScheduledPost), InvalidInput, NotFound, Unprocessable, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/scheduled-posts")]
pub async fn schedule_post(
    _: Authorized<Write>,
    path: web::Path<ChannelPath>,
    body: Json<NewScheduledPost>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let channel_id = path.channel_id;
    let send_at = body.send_at.in_future("send_at")?.get();
    let scheduled = chat
        .schedule_post(channel_id, &body.message, send_at)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(HttpResponse::Created().json(scheduled))
}

/// Delete a scheduled post
///
/// Chat will not send it.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(CronjobPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/scheduled-posts/{cronjob_id}")]
pub async fn delete_scheduled_post(
    _: Authorized<Write>,
    path: web::Path<CronjobPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let cronjob_id = path.cronjob_id;
    let result = chat.delete_scheduled_post(cronjob_id).await;
    done(result, format_args!("scheduled post {cronjob_id}"))
}
