//! `/integrations`: managing webhooks, slash commands, bots and chatbots through the gateway's
//! DSM session (admin scope). Lists never show integration tokens; a token is shown once, in the
//! answer to the `POST` that created it.

use actix_web::{HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use super::common::{
    BotUserPath, ChatbotList, IntegrationPath, Items, WebhookList, done, dsm_object,
};
use super::extract::{Json, present};
use super::{BodyProblems, CommonProblems, Dsm, InvalidInput, NotFound, State};
use crate::api::error::ApiError;
use crate::auth::{Admin, Authorized};
use crate::domain::{
    ChannelId, Chatbot, CreatedIntegration, HttpUrl, UserId, Webhook, is_blank, is_blank_char,
    is_name_separator,
};
use crate::upstream::{ChatbotChanges, NewWebhook, WebhookKind};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_integrations)
        .service(list_incoming_webhooks)
        .service(create_incoming_webhook)
        .service(delete_incoming_webhook)
        .service(list_outgoing_webhooks)
        .service(create_outgoing_webhook)
        .service(delete_outgoing_webhook)
        .service(list_slash_commands)
        .service(create_slash_command)
        .service(delete_slash_command)
        .service(list_builtin_webhooks)
        .service(list_broadcast_webhooks)
        .service(set_bot)
        .service(delete_bot)
        .service(list_chatbots)
        .service(set_chatbot)
        .service(super::token_check::check_tokens);
}

dsm_object!(
    "DSM's answer to `SYNO.Chat.External list`, passed through without tokens.",
    IntegrationOverview,
    {"externals": [{"user_id": 5, "name": "Demo webhook", "nickname": "Demo webhook",
        "bot_type": "incoming", "channel_id": 1, "is_disabled": false}]}
);
dsm_object!(
    "DSM's answer to `SYNO.Chat.Webhook.BuiltIn list`, passed through without tokens.",
    BuiltinWebhooks,
    {"webhook_builtins": [{"app_id": 1, "name": "Synology Calendar", "is_disabled": false}]}
);
dsm_object!(
    "DSM's answer to `SYNO.Chat.Webhook.Broadcast list`, passed through without tokens.",
    BroadcastWebhooks,
    {"webhook_broadcasts": [{"user_id": 8, "name": "announcements", "channel_id": 0,
        "url": "https://hooks.example.org/chat", "is_disabled": false}]}
);

/// A new incoming webhook: it posts into one channel.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "CI", "channel_id": 1, "icon_url": "https://ci.example.org/icon.png"}))]
pub struct NewIncomingWebhookBody {
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    name: String,
    #[schema(value_type = u64, minimum = 1)]
    channel_id: ChannelId,
    /// An absolute http(s) URL of the avatar.
    #[serde(default)]
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$"
    )]
    icon_url: Option<String>,
}

/// A new outgoing webhook: Chat posts a channel's messages to `url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "CI", "channel_id": 1, "url": "https://ci.example.org/chat",
    "events": ["message"]}))]
pub struct NewOutgoingWebhookBody {
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    name: String,
    #[schema(value_type = u64, minimum = 1)]
    channel_id: ChannelId,
    /// An absolute http(s) URL.
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$"
    )]
    url: String,
    /// Events that fire the webhook (default `["message"]`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<EventName>>, min_items = 1, nullable = false)]
    events: Option<Vec<String>>,
}

/// A new slash command: Chat posts `/command ...` lines to `url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Deploy", "command": "/deploy", "url": "https://ci.example.org/slash",
    "channel_id": null}))]
pub struct NewSlashCommandBody {
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    name: String,
    /// The command; a leading `/` is optional. No spaces.
    #[schema(
        pattern = "^[ \\t\\n\\r\\f\\v]*/*[^\\t\\n\\u000b\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff/][^\\t\\n\\u000b\\f\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]*[ \\t\\n\\r\\f\\v]*$"
    )]
    command: String,
    /// An absolute http(s) URL.
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$"
    )]
    url: String,
    /// Limit the command to one channel (default: every channel).
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1)]
    channel_id: Option<ChannelId>,
}

/// A bot's (webhook's or chatbot's) new display name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"nickname": "CI bot"}))]
pub struct BotNicknameBody {
    #[schema(min_length = 1, pattern = "[^ \\t\\n\\r\\f\\v]")]
    nickname: String,
}

/// Chatbot settings to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, example = json!({"url": "https://bot.example.org/chat", "purpose": "Answers questions",
    "welcome_note": "Hi!", "hide_from_user": false}))]
pub struct ChatbotSettingsBody {
    /// Where Chat posts users' messages: an absolute http(s) URL.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        pattern = "^https?://([A-Za-z0-9.-]+|\\[(([0-9A-Fa-f]{1,4}:){6}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|::([0-9A-Fa-f]{1,4}:){5}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|([0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){4}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){3}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:){2}([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})|(([0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}|(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::)\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[!-~]*)?$",
        nullable = false
    )]
    url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    purpose: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    welcome_note: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    hide_from_user: Option<bool>,
}

fn non_blank<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if is_blank(value) {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    Ok(value)
}

fn http_url(field: &str, raw: &str) -> Result<HttpUrl, ApiError> {
    HttpUrl::parse(field, raw).map_err(ApiError::invalid)
}

fn webhook_noun(kind: WebhookKind) -> &'static str {
    match kind {
        WebhookKind::Incoming => "incoming webhook",
        WebhookKind::Outgoing => "outgoing webhook",
        WebhookKind::Slash => "slash command",
    }
}

/// The list/create/delete helpers behind the three webhook kinds' routes.
async fn list_webhooks(
    kind: WebhookKind,
    chat: Dsm,
) -> Result<web::Json<Items<Webhook>>, ApiError> {
    let items = chat.webhooks(kind).await?;
    Ok(web::Json(Items { items }))
}

/// The user list holds every integration's bot user: a write to integrations drops it.
/// Refuses (404) a user id that no integration lists as its bot: see
/// [`crate::upstream::DsmClient::is_integration_bot`].
async fn listed_bot(chat: &Dsm, user_id: UserId) -> Result<(), ApiError> {
    match chat.is_integration_bot(user_id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::not_found(format!(
            "no integration has bot user {user_id} (a person's account is never changed here)"
        ))),
        Err(error) => Err(ApiError::for_resource(error, format_args!("bot {user_id}"))),
    }
}

fn bots_changed(state: &State) {
    state.caches.users.invalidate();
}

async fn create_webhook(
    new: NewWebhook<'_>,
    chat: Dsm,
    state: &State,
) -> Result<HttpResponse, ApiError> {
    let channel = match &new {
        NewWebhook::Incoming { channel_id, .. } | NewWebhook::Outgoing { channel_id, .. } => {
            Some(*channel_id)
        }
        NewWebhook::Slash { channel_id, .. } => *channel_id,
    };
    let created = chat.create_webhook(new).await;
    bots_changed(state);
    let created = created.map_err(|e| match channel {
        Some(channel_id) => ApiError::for_resource(e, format_args!("channel {channel_id}")),
        None => e.into(),
    })?;
    // The token is shown once: never kept by the Idempotency-Key layer.
    Ok(crate::api::idempotency::holds_secrets(
        HttpResponse::Created().json(created),
        &["token"],
    ))
}

async fn delete_webhook(
    kind: WebhookKind,
    id: UserId,
    chat: Dsm,
    state: &State,
) -> Result<HttpResponse, ApiError> {
    let what = format!("{} {id}", webhook_noun(kind));
    let deleted = chat.delete_webhook(kind, id).await;
    bots_changed(state);
    match deleted {
        // Not among DSM's webhooks of this kind: nothing was asked of DSM.
        Ok(false) => Err(ApiError::not_found(format!("no {what}"))),
        result => done(result.map(drop), what),
    }
}

/// List every integration
///
/// DSM's `SYNO.Chat.External list` answer, passed through without tokens (its shape is not
/// documented).
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = IntegrationOverview), CommonProblems))]
#[get("/integrations")]
pub async fn list_integrations(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<IntegrationOverview>, ApiError> {
    Ok(web::Json(IntegrationOverview(
        chat.external_integrations().await?,
    )))
}

/// List incoming webhooks
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = WebhookList), CommonProblems))]
#[get("/integrations/incoming-webhooks")]
pub async fn list_incoming_webhooks(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<Items<Webhook>>, ApiError> {
    list_webhooks(WebhookKind::Incoming, chat).await
}

/// Create an incoming webhook
///
/// Answers 201 with the new webhook's bot user id and token; the token is not shown again.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    request_body = NewIncomingWebhookBody,
    responses((status = 201, body = CreatedIntegration), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[post("/integrations/incoming-webhooks")]
pub async fn create_incoming_webhook(
    _: Authorized<Admin>,
    body: Json<NewIncomingWebhookBody>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let icon_url = body
        .icon_url
        .as_deref()
        .map(|raw| http_url("icon_url", raw))
        .transpose()?;
    let new = NewWebhook::Incoming {
        name: non_blank("name", &body.name)?,
        channel_id: body.channel_id,
        icon_url: icon_url.as_ref(),
    };
    create_webhook(new, chat, &state).await
}

/// Delete an incoming webhook
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(IntegrationPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/integrations/incoming-webhooks/{id}")]
pub async fn delete_incoming_webhook(
    _: Authorized<Admin>,
    path: web::Path<IntegrationPath>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    delete_webhook(WebhookKind::Incoming, path.id, chat, &state).await
}

/// List outgoing webhooks
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = WebhookList), CommonProblems))]
#[get("/integrations/outgoing-webhooks")]
pub async fn list_outgoing_webhooks(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<Items<Webhook>>, ApiError> {
    list_webhooks(WebhookKind::Outgoing, chat).await
}

/// Create an outgoing webhook
///
/// Answers 201 with the new webhook's bot user id and token; the token is not shown again.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    request_body = NewOutgoingWebhookBody,
    responses((status = 201, body = CreatedIntegration), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[post("/integrations/outgoing-webhooks")]
pub async fn create_outgoing_webhook(
    _: Authorized<Admin>,
    body: Json<NewOutgoingWebhookBody>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let events = body
        .events
        .clone()
        .unwrap_or_else(|| vec!["message".to_owned()]);
    if events.is_empty()
        || events.iter().any(|e| {
            e.is_empty()
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        })
    {
        return Err(ApiError::invalid(
            "events must be a non-empty list of event names",
        ));
    }
    let url = http_url("url", &body.url)?;
    let new = NewWebhook::Outgoing {
        name: non_blank("name", &body.name)?,
        channel_id: body.channel_id,
        url: &url,
        events: &events,
    };
    create_webhook(new, chat, &state).await
}

/// Delete an outgoing webhook
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(IntegrationPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/integrations/outgoing-webhooks/{id}")]
pub async fn delete_outgoing_webhook(
    _: Authorized<Admin>,
    path: web::Path<IntegrationPath>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    delete_webhook(WebhookKind::Outgoing, path.id, chat, &state).await
}

/// List slash commands
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = WebhookList), CommonProblems))]
#[get("/integrations/slash-commands")]
pub async fn list_slash_commands(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<Items<Webhook>>, ApiError> {
    list_webhooks(WebhookKind::Slash, chat).await
}

/// Create a slash command
///
/// Answers 201 with the new command's bot user id and token; the token is not shown again.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    request_body = NewSlashCommandBody,
    responses((status = 201, body = CreatedIntegration), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[post("/integrations/slash-commands")]
pub async fn create_slash_command(
    _: Authorized<Admin>,
    body: Json<NewSlashCommandBody>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    // DSM stores the command without its slash (upstream/PROTOCOL.md [C1]).
    let command = body
        .command
        .trim_matches(is_blank_char)
        .trim_start_matches('/');
    if command.is_empty() || command.chars().any(is_name_separator) {
        return Err(ApiError::invalid(
            "command must be one word, optionally starting with `/`",
        ));
    }
    let url = http_url("url", &body.url)?;
    let new = NewWebhook::Slash {
        name: non_blank("name", &body.name)?,
        command,
        url: &url,
        channel_id: body.channel_id,
    };
    create_webhook(new, chat, &state).await
}

/// Delete a slash command
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(IntegrationPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/integrations/slash-commands/{id}")]
pub async fn delete_slash_command(
    _: Authorized<Admin>,
    path: web::Path<IntegrationPath>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    delete_webhook(WebhookKind::Slash, path.id, chat, &state).await
}

/// List built-in webhooks
///
/// The integrations Synology packages bring, as DSM describes them (shape not documented).
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = BuiltinWebhooks), CommonProblems))]
#[get("/integrations/builtin-webhooks")]
pub async fn list_builtin_webhooks(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<BuiltinWebhooks>, ApiError> {
    Ok(web::Json(BuiltinWebhooks(chat.builtin_webhooks().await?)))
}

/// List broadcast webhooks
///
/// As DSM describes them, without tokens (shape not documented).
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = BroadcastWebhooks), CommonProblems))]
#[get("/integrations/broadcast-webhooks")]
pub async fn list_broadcast_webhooks(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<BroadcastWebhooks>, ApiError> {
    Ok(web::Json(BroadcastWebhooks(
        chat.broadcast_webhooks().await?,
    )))
}

/// Rename a bot
///
/// Sets the display name of a webhook's or chatbot's bot user. Chat refuses to send through an
/// integration that has none. A user id no integration lists as its bot (a person's) is 404,
/// and nothing is changed.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(BotUserPath),
    request_body = BotNicknameBody,
    responses((status = 204, description = "Renamed"), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[put("/integrations/bots/{user_id}")]
pub async fn set_bot(
    _: Authorized<Admin>,
    path: web::Path<BotUserPath>,
    body: Json<BotNicknameBody>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.user_id;
    let nickname = non_blank("nickname", &body.nickname)?;
    listed_bot(&chat, user_id).await?;
    let result = chat.set_bot_nickname(user_id, nickname).await;
    bots_changed(&state);
    done(result, format_args!("bot {user_id}"))
}

/// Delete a bot
///
/// Deletes any integration (webhook, slash command or chatbot) by its bot user id. A user id no
/// integration lists as its bot (a person's) is 404, and nothing is deleted.
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(BotUserPath),
    responses((status = 204, description = "Deleted"), InvalidInput, NotFound, CommonProblems))]
#[delete("/integrations/bots/{user_id}")]
pub async fn delete_bot(
    _: Authorized<Admin>,
    path: web::Path<BotUserPath>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.user_id;
    listed_bot(&chat, user_id).await?;
    let result = chat.delete_bot(user_id).await;
    bots_changed(&state);
    done(result, format_args!("bot {user_id}"))
}

/// List chatbots
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    responses((status = 200, body = ChatbotList), CommonProblems))]
#[get("/integrations/chatbots")]
pub async fn list_chatbots(
    _: Authorized<Admin>,
    chat: Dsm,
) -> Result<web::Json<Items<Chatbot>>, ApiError> {
    Ok(web::Json(Items {
        items: chat.chatbots().await?,
    }))
}

/// Change a chatbot's settings
#[utoipa::path(security(("bearer" = ["admin"])), tag = "integrations",
    params(BotUserPath),
    request_body = ChatbotSettingsBody,
    responses((status = 204, description = "Changed"), InvalidInput, NotFound, BodyProblems,
        CommonProblems))]
#[put("/integrations/chatbots/{user_id}")]
pub async fn set_chatbot(
    _: Authorized<Admin>,
    path: web::Path<BotUserPath>,
    body: Json<ChatbotSettingsBody>,
    chat: Dsm,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let user_id = path.user_id;
    let body = body.into_inner();
    if body.url.is_none()
        && body.purpose.is_none()
        && body.welcome_note.is_none()
        && body.hide_from_user.is_none()
    {
        return Err(ApiError::invalid(
            "send at least one of url, purpose, welcome_note, hide_from_user",
        ));
    }
    let url = body
        .url
        .as_deref()
        .map(|raw| http_url("url", raw))
        .transpose()?;
    let changes = ChatbotChanges {
        url: url.as_ref(),
        purpose: body.purpose.as_deref(),
        welcome_note: body.welcome_note.as_deref(),
        hide_from_user: body.hide_from_user,
    };
    let changed = chat.set_chatbot(user_id, &changes).await;
    bots_changed(&state);
    // The list showed the chatbot, so a 117 is not "no such chatbot".
    if !changed.map_err(ApiError::for_permission)? {
        return Err(ApiError::not_found(format!(
            "chatbot {user_id} does not exist"
        )));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// An outgoing-webhook event name (documentation of the `events` items: one word).
#[derive(ToSchema)]
#[schema(pattern = "^[A-Za-z0-9_.-]+$", example = "message")]
#[allow(dead_code)] // documentation only: events are checked as they are read
struct EventName(String);
