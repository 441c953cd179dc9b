//! `/bots/{name}`: acting as a configured chatbot through `SYNO.Chat.External` with its token,
//! which never leaves the gateway.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{
    BotChannelPath, BotPath, BotPostPath, ChannelList, FileBytes, Items, PostList, UserList,
    outgoing_message,
};
use super::extract::{Json, Query, whole_number};
use super::{
    BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, POST_COUNT_HEADER, State,
    Unprocessable, file_response, send_text_stopping, told_parts_posted,
};
use crate::api::error::ApiError;
use crate::auth::{Authorized, Read, Write};
use crate::config::TokenKind;
use crate::domain::{Channel, Post, PostId, User, UserId};
use crate::upstream::{ExternalMessage, PostWindow, Refusal, UpstreamError};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(send_bot_message)
        .service(list_bot_channels)
        .service(list_bot_users)
        .service(list_bot_posts)
        .service(get_bot_post_file);
}

/// Posts read when neither count is given.
const DEFAULT_PREV_COUNT: u32 = 50;
const MAX_COUNT: u32 = 200;

/// A chatbot message to users.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "Your build #42 passed: 100% & green", "user_ids": [2, 3],
    "file_url": null}))]
pub struct BotMessageBody {
    /// The text, sent byte for byte.
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    text: String,
    /// Who gets it, each in their conversation with the bot (at least one).
    #[schema(min_items = 1)]
    user_ids: Vec<UserId>,
    /// A public absolute http(s) URL of a file (at most 32 MB) the NAS downloads and attaches.
    #[serde(default)]
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$"
    )]
    file_url: Option<String>,
}

/// A post created for one recipient.
#[derive(Serialize, ToSchema)]
pub struct DeliveredMessage {
    #[schema(value_type = u64)]
    user_id: UserId,
    #[schema(value_type = u64)]
    post_id: PostId,
}

/// A recipient DSM did not deliver to.
#[derive(Serialize, ToSchema)]
pub struct FailedRecipient {
    #[schema(value_type = u64)]
    user_id: UserId,
    reason: String,
}

/// Per-recipient outcome; the answer is 200 when at least one recipient got the message.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"user_id": 2, "post_id": 30064771073_u64}],
    "failed": [{"user_id": 3, "reason": "user not found"}]}))]
pub struct BotDelivery {
    items: Vec<DeliveredMessage>,
    failed: Vec<FailedRecipient>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PostWindowQuery {
    /// Anchor post; without it `prev_count` counts back from the newest post.
    #[param(value_type = Option<u64>, minimum = 1)]
    post_id: Option<PostId>,
    /// Posts before the anchor (0 to 200; 50 when neither count is given).
    #[param(minimum = 0, maximum = 200)]
    #[serde(default, deserialize_with = "whole_number")]
    prev_count: Option<u32>,
    /// Posts after the anchor (0 to 200, default 0).
    #[param(minimum = 0, maximum = 200)]
    #[serde(default, deserialize_with = "whole_number")]
    next_count: Option<u32>,
}

/// DSM answers a chatbot's read with 401 when the bot is not in the channel and 117 when the
/// addressed resource (`missing`) does not exist.
fn bot_read_error(
    error: UpstreamError,
    name: &str,
    channel: impl std::fmt::Display,
    missing: impl std::fmt::Display,
) -> ApiError {
    if error.refusal() == Some(Refusal::BotNotInChannel) {
        let detail = format!("the bot `{name}` is not a member of {channel}");
        return ApiError::from(error).with_detail(detail);
    }
    ApiError::for_resource(error, missing)
}

/// Send a chatbot message
///
/// Sends the message to each user's conversation with the bot configured as `name`; answers
/// the post created per user and the users DSM did not deliver to. When DSM delivered it to
/// none of them, the answer is a `400 upstream_rejected_input` naming each user's reason (as
/// the outbox's delivery fails), not a success; a `404` when DSM found none of the users.
#[utoipa::path(security(("bearer" = ["write"])), tag = "bots",
    params(BotPath,
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the message is stored; the outbox delivers it, paced at `delivery.rate_per_sec`")),
    request_body = BotMessageBody,
    responses((status = 200, body = BotDelivery,
        headers(("X-Chat-Post-Count" = u32, description = "How many posts the text was sent as, per user (long texts are split)"))), (status = 202, description = "Committed to the outbox, which sends each part once to each user (`Location` names the delivery). Happens with `Prefer: respond-async` (`Preference-Applied: respond-async`) and, with an `Idempotency-Key`, in three more cases: DSM's answer to a part never came (it may have posted it); some parts were posted and DSM then asked the gateway to wait (rate limited or busy; only when every recipient got the parts already posted); or the request retries an earlier attempt with the same key that was cut off before it answered (the outbox first looks for what that attempt posted). Also, with or without a key, when the outbox still has earlier messages for the same target that are not delivered within `delivery.queue_wait_ms`: the message is queued behind them rather than overtaking them.", body = super::deliveries::DeliveryAccepted),
        InvalidInput, NotFound, Unprocessable, BodyProblems,
        CommonProblems))]
#[post("/bots/{name}/messages")]
pub async fn send_bot_message(
    auth: Authorized<Write>,
    path: web::Path<BotPath>,
    body: Json<BotMessageBody>,
    state: State,
    chat: Dsm,
    req: actix_web::HttpRequest,
    outbox: super::deliveries::Deliveries,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    let token = state.integration_token(&name, TokenKind::Bot)?;
    let body = body.into_inner();
    let (text, file_url) =
        outgoing_message(&body.text, body.file_url.as_deref(), &state.file_urls)?;
    let mut user_ids = body.user_ids;
    user_ids.sort();
    user_ids.dedup();
    if user_ids.is_empty() {
        return Err(ApiError::invalid("user_ids must name at least one user"));
    }
    // A retry of a keyed send cut off before its answer goes to the outbox, which looks for
    // what the first attempt posted before it sends.
    let handover = super::common::Handover {
        req: &req,
        chat: &chat,
        outbox: &outbox,
        caller: auth.key_name.as_deref(),
        job: crate::delivery::Job::Bot {
            name: name.clone(),
            user_ids: user_ids.clone(),
            file_url: body.file_url.clone(),
        },
    };
    if let Some(accepted) = handover.accept_if_asked_or_queued(&text).await {
        return accepted;
    }
    let _turn = handover.hold_target(&text).await;
    let since = crate::delivery::now_ms();
    let key = handover.key();
    let key = key.as_deref();
    let (chat, user_ids, file_url) = (&chat, &user_ids, file_url.as_ref());
    let file_sent = std::cell::Cell::new(false);
    let file_sent = &file_sent;
    let sent = send_text_stopping(
        &state,
        &text,
        |part| async move {
            let message = ExternalMessage {
                text: Some(&part),
                file_url: file_url.filter(|_| !file_sent.get()),
            };
            let result = chat.send_chatbot(token, &message, user_ids).await;
            file_sent.set(file_sent.get() || result.is_ok());
            // The outbox's look for an uncertain chatbot send passes these over.
            result.inspect(|delivery| {
                for (_, post) in &delivery.sent {
                    chat.note_posted_directly(*post, key);
                }
            })
        },
        ApiError::from,
    )
    .await;
    let parts = match sent {
        Ok(parts) => parts,
        // Every recipient of the parts posted got them: the outbox can finish the rest.
        Err(stopped) if stopped.sent.iter().all(|part| part.failed.is_empty()) => {
            return handover
                .finish_stopped(stopped, since, |part| {
                    part.sent
                        .iter()
                        .map(|(user, post)| (user.get(), post.get()))
                        .collect()
                })
                .await;
        }
        // A recipient DSM refused on an earlier part is told so, not sent later parts by the
        // outbox.
        Err(stopped) => {
            return Err(told_parts_posted(stopped, |part| {
                part.sent.iter().map(|(_, post)| post.get()).collect()
            }));
        }
    };
    // A long text is several posts per user: the answer names each user's first post, and a
    // user any part failed for is reported with the first reason.
    let count = parts.len();
    let mut items: Vec<DeliveredMessage> = Vec::new();
    let mut failed: Vec<FailedRecipient> = Vec::new();
    for delivery in parts {
        for (user_id, post_id) in delivery.sent {
            if !items.iter().any(|d| d.user_id == user_id) {
                items.push(DeliveredMessage { user_id, post_id });
            }
        }
        for (user_id, reason) in delivery.failed {
            if !failed.iter().any(|f| f.user_id == user_id) {
                failed.push(FailedRecipient { user_id, reason });
            }
        }
    }
    items.retain(|d| !failed.iter().any(|f| f.user_id == d.user_id));
    if items.is_empty() && !failed.is_empty() {
        let reasons: Vec<String> = failed
            .iter()
            .map(|f| format!("user {}: {}", f.user_id, f.reason))
            .collect();
        let detail = format!(
            "DSM delivered the message to none of its recipients ({})",
            reasons.join("; ")
        );
        return Err(ApiError::recipients_refused(
            detail,
            failed.iter().map(|f| f.reason.as_str()),
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((POST_COUNT_HEADER, count.to_string()))
        .json(BotDelivery { items, failed }))
}

/// List the bot's channels
#[utoipa::path(security(("bearer" = ["read"])), tag = "bots",
    params(BotPath),
    responses((status = 200, body = ChannelList), InvalidInput, NotFound, CommonProblems))]
#[get("/bots/{name}/channels")]
pub async fn list_bot_channels(
    _: Authorized<Read>,
    path: web::Path<BotPath>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<Items<Channel>>, ApiError> {
    let token = state.integration_token(&path.name, TokenKind::Bot)?;
    let items = chat.bot_channels(token).await?;
    Ok(web::Json(Items { items }))
}

/// List the users the bot sees
#[utoipa::path(security(("bearer" = ["read"])), tag = "bots",
    params(BotPath),
    responses((status = 200, body = UserList), InvalidInput, NotFound, CommonProblems))]
#[get("/bots/{name}/users")]
pub async fn list_bot_users(
    _: Authorized<Read>,
    path: web::Path<BotPath>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<Items<User>>, ApiError> {
    let token = state.integration_token(&path.name, TokenKind::Bot)?;
    let items = chat.bot_users(token).await?;
    Ok(web::Json(Items { items }))
}

/// Read posts of a channel the bot is in
///
/// `prev_count` posts before the anchor `post_id`, the anchor, and `next_count` posts after it,
/// in DSM's order. A channel the bot is not a member of is a 403.
#[utoipa::path(security(("bearer" = ["read"])), tag = "bots",
    params(BotChannelPath, PostWindowQuery),
    responses((status = 200, body = PostList), InvalidInput, NotFound, CommonProblems))]
#[get("/bots/{name}/channels/{channel_id}/posts")]
pub async fn list_bot_posts(
    _: Authorized<Read>,
    path: web::Path<BotChannelPath>,
    query: Query<PostWindowQuery>,
    state: State,
    chat: Dsm,
) -> Result<web::Json<Items<Post>>, ApiError> {
    let BotChannelPath { name, channel_id } = path.into_inner();
    let token = state.integration_token(&name, TokenKind::Bot)?;
    let (prev_count, next_count) = match (query.prev_count, query.next_count) {
        (None, None) => (DEFAULT_PREV_COUNT, 0),
        (prev, next) => (prev.unwrap_or(0), next.unwrap_or(0)),
    };
    for (field, count) in [("prev_count", prev_count), ("next_count", next_count)] {
        if count > MAX_COUNT {
            return Err(ApiError::invalid(format!(
                "{field} must be between 0 and {MAX_COUNT}"
            )));
        }
    }
    let window = PostWindow {
        anchor: query.post_id,
        prev_count,
        next_count,
    };
    let items = chat
        .bot_posts(token, channel_id, &window)
        .await
        .map_err(|e| {
            let channel = format_args!("channel {channel_id}");
            bot_read_error(e, &name, channel, channel)
        })?;
    Ok(web::Json(Items { items }))
}

/// Download a post's file as the bot
///
/// The bytes with DSM's content type, for a post in a channel the bot is a member of.
#[utoipa::path(security(("bearer" = ["read"])), tag = "bots",
    params(BotPostPath),
    responses((status = 200,
        description = "The file, with the content type DSM gives it (`application/octet-stream` when it names none)",
        content((FileBytes = "application/octet-stream"), (FileBytes = "*/*"))),
        InvalidInput, NotFound, CommonProblems))]
#[get("/bots/{name}/posts/{post_id}/file")]
pub async fn get_bot_post_file(
    _: Authorized<Read>,
    path: web::Path<BotPostPath>,
    state: State,
    chat: Dsm,
) -> Result<HttpResponse, ApiError> {
    let BotPostPath { name, post_id } = path.into_inner();
    let token = state.integration_token(&name, TokenKind::Bot)?;
    let file = chat.bot_post_file(token, post_id).await.map_err(|e| {
        bot_read_error(
            e,
            &name,
            format_args!("the channel of post {post_id}"),
            format_args!("a file of post {post_id}"),
        )
    })?;
    Ok(file_response(file))
}
