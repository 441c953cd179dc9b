//! What the gateway's account does to a post: pins, reactions and reminders.

use actix_web::{HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{ChannelPath, Items, PostPath, ReminderList, UnixMillis, done};
use super::extract::Json;
use super::{BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, Unprocessable};
use crate::api::error::ApiError;
use crate::auth::{Authorized, Read, Write};
use crate::domain::PostId;
use crate::upstream::Reminder;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(pin_post)
        .service(unpin_post)
        .service(add_reaction)
        .service(get_reminder)
        .service(set_reminder)
        .service(delete_reminder)
        .service(list_reminders);
}

const MAX_STICKER_NAME: usize = 64;

/// A sticker's name, such as `thumbsup`.
#[derive(Deserialize, ToSchema)]
#[serde(try_from = "String")]
#[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_+-]+$",
    example = "thumbsup")]
pub struct StickerName(String);

impl TryFrom<String> for StickerName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let valid = !name.is_empty()
            && name.len() <= MAX_STICKER_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b));
        if valid {
            Ok(Self(name))
        } else {
            Err(format!(
                "sticker must be a sticker name such as `thumbsup` (letters, digits, `_`, `+`, `-`; at most {MAX_STICKER_NAME})"
            ))
        }
    }
}

/// A reaction to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sticker": "thumbsup"}))]
pub struct ReactionBody {
    sticker: StickerName,
}

/// When to be reminded of a post.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"remind_at": 1893456000000_u64}))]
pub struct ReminderBody {
    /// Unix time in milliseconds, in the future.
    remind_at: UnixMillis,
}

/// Pin a post
///
/// Pinned posts are found with `GET /posts/search?has=pin`.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath),
    responses((status = 204, description = "Pinned"), InvalidInput, NotFound, CommonProblems))]
#[put("/posts/{post_id}/pin")]
pub async fn pin_post(
    _: Authorized<Write>,
    path: web::Path<PostPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
    done(
        chat.pin_post(post_id, true).await,
        format_args!("post {post_id}"),
    )
}

/// Unpin a post
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath),
    responses((status = 204, description = "Unpinned"), InvalidInput, NotFound, CommonProblems))]
#[delete("/posts/{post_id}/pin")]
pub async fn unpin_post(
    _: Authorized<Write>,
    path: web::Path<PostPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
    done(
        chat.pin_post(post_id, false).await,
        format_args!("post {post_id}"),
    )
}

/// React to a post with a sticker
///
/// Adding the same reaction again changes nothing.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath),
    request_body = ReactionBody,
    responses((status = 204, description = "Reaction added"), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[post("/posts/{post_id}/reactions")]
pub async fn add_reaction(
    _: Authorized<Write>,
    path: web::Path<PostPath>,
    body: Json<ReactionBody>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
    let result = chat.add_reaction(post_id, &body.sticker.0).await;
    done(result, format_args!("post {post_id}"))
}

/// The answer of the reminder pair (get and set): DSM's answers carry no message.
fn reminder(post_id: PostId, remind_at: u64) -> web::Json<Reminder> {
    web::Json(Reminder {
        post_id,
        remind_at,
        message: None,
    })
}

/// Get the reminder on a post
///
/// 404 when the gateway's account has no reminder on the post.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(PostPath),
    responses((status = 200, body = Reminder), InvalidInput, NotFound, CommonProblems))]
#[get("/posts/{post_id}/reminder")]
pub async fn get_reminder(
    _: Authorized<Read>,
    path: web::Path<PostPath>,
    chat: Dsm,
) -> Result<web::Json<Reminder>, ApiError> {
    let post_id = path.post_id;
    let remind_at = chat
        .reminder(post_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("post {post_id}")))?
        .ok_or_else(|| ApiError::not_found(format!("post {post_id} has no reminder")))?;
    Ok(reminder(post_id, remind_at))
}

/// Set the reminder on a post
///
/// Replaces any earlier reminder of the gateway's account on the post.
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath),
    request_body = ReminderBody,
    responses((status = 200, body = Reminder), InvalidInput, NotFound, Unprocessable, BodyProblems, CommonProblems))]
#[put("/posts/{post_id}/reminder")]
pub async fn set_reminder(
    _: Authorized<Write>,
    path: web::Path<PostPath>,
    body: Json<ReminderBody>,
    chat: Dsm,
) -> Result<web::Json<Reminder>, ApiError> {
    let post_id = path.post_id;
    let remind_at = body.remind_at.in_future("remind_at")?.get();
    chat.set_reminder(post_id, remind_at)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("post {post_id}")))?;
    Ok(reminder(post_id, remind_at))
}

/// Delete the reminder on a post
#[utoipa::path(security(("bearer" = ["write"])), tag = "posts",
    params(PostPath),
    responses((status = 204, description = "Reminder deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/posts/{post_id}/reminder")]
pub async fn delete_reminder(
    _: Authorized<Write>,
    path: web::Path<PostPath>,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let post_id = path.post_id;
    // Chat answers 117 both for an unknown post and for a post without reminder.
    let result = chat.delete_reminder(post_id).await;
    done(result, format_args!("the reminder of post {post_id}"))
}

/// List the reminders in a channel
///
/// The gateway account's reminders on the channel's posts.
#[utoipa::path(security(("bearer" = ["read"])), tag = "posts",
    params(ChannelPath),
    responses((status = 200, body = ReminderList), InvalidInput, NotFound, CommonProblems))]
#[get("/channels/{channel_id}/reminders")]
pub async fn list_reminders(
    _: Authorized<Read>,
    path: web::Path<ChannelPath>,
    chat: Dsm,
) -> Result<web::Json<Items<Reminder>>, ApiError> {
    let channel_id = path.channel_id;
    let items = chat
        .reminders(channel_id)
        .await
        .map_err(|e| ApiError::for_resource(e, format_args!("channel {channel_id}")))?;
    Ok(web::Json(Items { items }))
}
