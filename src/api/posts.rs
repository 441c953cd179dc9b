//! `/channels/{channel_id}/posts`: reading and writing messages.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::{BodyProblems, Chat, CommonProblems, InvalidInput, NotFound};
use crate::auth::{Authorized, Read, Write};
use crate::domain::{ChannelId, MessageText, Post, PostId};
use crate::error::ApiError;
use crate::upstream::NewPost;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_posts).service(create_post);
}

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// How many posts (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// How many of the newest posts to skip (default 0).
    #[param(minimum = 0)]
    offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct PostList {
    items: Vec<Post>,
}

/// A message to post.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Deploy finished: 100% & green", "thread_id": null}))]
pub struct NewPostBody {
    /// The text, sent to Chat byte for byte. `<https://url|label>` makes a link.
    message: MessageText,
    /// Reply in the thread of this root post.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1)]
    thread_id: Option<PostId>,
}

/// List a channel's posts
///
/// Top-level posts, newest first as DSM returns them; thread replies are not included.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id"), PageQuery),
    responses((status = 200, body = PostList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/posts")]
pub async fn list_posts(
    _: Authorized<Read>,
    channel_id: web::Path<ChannelId>,
    page: web::Query<PageQuery>,
    chat: Chat,
) -> Result<web::Json<PostList>, ApiError> {
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let channel_id = channel_id.into_inner();
    let items = chat
        .posts(channel_id, limit, page.offset.unwrap_or(0))
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(PostList { items }))
}

/// Post a message to a channel
///
/// Answers 201 with the post DSM created. Text with `%`, `&`, `+`, quotes, new lines and
/// non-ASCII characters arrives unchanged.
#[utoipa::path(tag = "posts", security(("bearer" = [])),
    params(("channel_id" = u64, Path, minimum = 1, description = "Channel id")),
    request_body = NewPostBody,
    responses((status = 201, body = Post), InvalidInput, NotFound, BodyProblems, CommonProblems))]
#[post("/channels/{channel_id}/posts")]
pub async fn create_post(
    _: Authorized<Write>,
    channel_id: web::Path<ChannelId>,
    body: web::Json<NewPostBody>,
    chat: Chat,
) -> Result<HttpResponse, ApiError> {
    let channel_id = channel_id.into_inner();
    let post = chat
        .create_post(NewPost {
            channel_id,
            message: &body.message,
            thread_id: body.thread_id,
        })
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(HttpResponse::Created().json(post))
}
