//! Integration management through the DSM session (admin account): webhooks, slash commands,
//! bots and chatbots (PROTOCOL.md [C1]). Integration tokens in DSM's lists are removed
//! here: the only token that leaves this module is the one a `create` just issued.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{DsmClient, decode_data};
use super::error::{Result, UpstreamError};
use super::ops::{Op, Verb, op};
use super::wire::{WireChatbot, WireCreatedIntegration, WireWebhook, list_from_value};
use crate::domain::{ChannelId, Chatbot, CreatedIntegration, HttpUrl, UserId, Webhook};

/// The three webhook-like integrations; their list/create/delete calls differ only in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookKind {
    Incoming,
    Outgoing,
    Slash,
}

struct WebhookOps {
    list: Op,
    create: Op,
    /// `set {user_id, channel_id, …}`: binds what `create` made (N8N's Chat 2.4.6 binds the
    /// channel and URL only this way, PROTOCOL.md [C1]).
    bind: Option<Op>,
    /// The library's `delete {id}`: what `id` is, is not documented (PROTOCOL.md [C1]), so it
    /// is sent only for slash commands, where nothing else is known; webhooks are deleted as
    /// the bots they are ([`DsmClient::delete_webhook`]).
    delete: Op,
    /// Key of the item array in `list`'s data (Slash's is undocumented, see `webhook_items`).
    list_key: &'static str,
}

/// The free-text parameters of the webhook and slash-command `create` calls.
const WEBHOOK_TEXT: &[&str] = &["name", "command", "url", "icon_url"];
const INCOMING_OPS: WebhookOps = WebhookOps {
    list: op("SYNO.Chat.Webhook.Incoming", "list", 1..=1, Verb::Get),
    create: op("SYNO.Chat.Webhook.Incoming", "create", 1..=1, Verb::Post).text(WEBHOOK_TEXT),
    bind: Some(op("SYNO.Chat.Webhook.Incoming", "set", 1..=1, Verb::Post)),
    delete: op("SYNO.Chat.Webhook.Incoming", "delete", 1..=1, Verb::Post),
    list_key: "webhook_incomings",
};
const OUTGOING_OPS: WebhookOps = WebhookOps {
    list: op("SYNO.Chat.Webhook.Outgoing", "list", 1..=1, Verb::Get),
    create: op("SYNO.Chat.Webhook.Outgoing", "create", 1..=1, Verb::Post).text(WEBHOOK_TEXT),
    bind: Some(op("SYNO.Chat.Webhook.Outgoing", "set", 1..=1, Verb::Post).text(&["url"])),
    delete: op("SYNO.Chat.Webhook.Outgoing", "delete", 1..=1, Verb::Post),
    list_key: "webhook_outgoings",
};
const SLASH_OPS: WebhookOps = WebhookOps {
    list: op("SYNO.Chat.Webhook.Slash", "list", 1..=2, Verb::Get),
    create: op("SYNO.Chat.Webhook.Slash", "create", 1..=2, Verb::Post).text(WEBHOOK_TEXT),
    bind: None,
    delete: op("SYNO.Chat.Webhook.Slash", "delete", 1..=2, Verb::Post),
    list_key: "webhook_slashes",
};

const BUILTIN_WEBHOOK_LIST: Op = op("SYNO.Chat.Webhook.BuiltIn", "list", 1..=2, Verb::Get);
const BROADCAST_WEBHOOK_LIST: Op = op("SYNO.Chat.Webhook.Broadcast", "list", 1..=1, Verb::Get);
const BOT_SET: Op = op("SYNO.Chat.Bot", "set", 1..=1, Verb::Post).text(&["nickname"]);
const BOT_DELETE: Op = op("SYNO.Chat.Bot", "delete", 1..=1, Verb::Post);
const BOT_ENABLE: Op = op("SYNO.Chat.Bot", "enable", 1..=1, Verb::Post);
const CHATBOT_LIST: Op = op("SYNO.Chat.Chatbot", "list", 1..=1, Verb::Get);
const CHATBOT_SET: Op =
    op("SYNO.Chat.Chatbot", "set", 1..=1, Verb::Post).text(&["url", "purpose", "welcome_note"]);
const EXTERNAL_LIST: Op = op("SYNO.Chat.External", "list", 1..=3, Verb::Get);

impl WebhookKind {
    fn ops(self) -> &'static WebhookOps {
        match self {
            Self::Incoming => &INCOMING_OPS,
            Self::Outgoing => &OUTGOING_OPS,
            Self::Slash => &SLASH_OPS,
        }
    }
}

/// A webhook or slash command to create, with the parameters the seed sends (PROTOCOL.md [C1]).
pub enum NewWebhook<'a> {
    Incoming {
        name: &'a str,
        channel_id: ChannelId,
        icon_url: Option<&'a HttpUrl>,
    },
    Outgoing {
        name: &'a str,
        channel_id: ChannelId,
        url: &'a HttpUrl,
        events: &'a [String],
    },
    Slash {
        name: &'a str,
        /// Without the leading `/`.
        command: &'a str,
        url: &'a HttpUrl,
        channel_id: Option<ChannelId>,
    },
}

impl NewWebhook<'_> {
    fn kind(&self) -> WebhookKind {
        match self {
            Self::Incoming { .. } => WebhookKind::Incoming,
            Self::Outgoing { .. } => WebhookKind::Outgoing,
            Self::Slash { .. } => WebhookKind::Slash,
        }
    }
}

/// Chatbot settings to change; `None` leaves a setting as it is.
pub struct ChatbotChanges<'a> {
    pub url: Option<&'a HttpUrl>,
    pub purpose: Option<&'a str>,
    pub welcome_note: Option<&'a str>,
    pub hide_from_user: Option<bool>,
}

/// Removes every field whose name holds `token` or `secret` (any case: `token`, `Token`,
/// `bot_token`, `access_token`), at any depth, from a DSM answer, and masks `token=` query
/// values in its texts (an incoming webhook's URL carries its token).
fn without_tokens(mut data: Map<String, Value>) -> Map<String, Value> {
    fn secret_name(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        key.contains("token") || key.contains("secret")
    }
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| !secret_name(key));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            Value::String(text) => {
                if let Some(masked) = masked_token_params(text) {
                    *text = masked;
                }
            }
            _ => {}
        }
    }
    data.retain(|key, _| !secret_name(key));
    data.values_mut().for_each(strip);
    data
}

/// `text` with the value of each `token=` parameter (any case, up to the next `&`, `#` or
/// white space) written `****`; `None` when it has none.
fn masked_token_params(text: &str) -> Option<String> {
    const NAME: &str = "token=";
    let lower = text.to_ascii_lowercase();
    if !lower.contains(NAME) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(NAME) {
        if at < rest {
            continue;
        }
        let value = at + NAME.len();
        let end = text[value..]
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace())
            .map_or(text.len(), |len| value + len);
        out.push_str(&text[rest..value]);
        out.push_str("****");
        rest = end;
    }
    out.push_str(&text[rest..]);
    Some(out)
}

/// The items of a list answer: under the documented key or, when DSM names it otherwise (the
/// Slash key is not documented, PROTOCOL.md [C1]), the one array in `data`.
fn list_array(key: &str, mut data: Map<String, Value>) -> Value {
    let mut items = match data.remove(key) {
        Some(items) => items,
        None => {
            let mut arrays = data.into_iter().filter(|(_, v)| v.is_array());
            match (arrays.next(), arrays.next()) {
                (Some((_, items)), None) => items,
                _ => Value::Array(Vec::new()),
            }
        }
    };
    // DSM keeps some deleted integrations, marked `deleted` (PROTOCOL.md [C1]: the webhook lists
    // carry it; `Bot.delete` without `real_delete` only marks): gone for the gateway, in lists
    // and as tokens to trust.
    if let Value::Array(list) = &mut items {
        list.retain(|item| !item.get("deleted").is_some_and(is_set));
    }
    items
}

/// A listed integration's bot user id, a number or (on some builds) text.
fn user_id_of(item: &Value) -> Option<u64> {
    let id = item.get("user_id")?;
    id.as_u64().or_else(|| id.as_str()?.trim().parse().ok())
}

/// A flag DSM sends as `true` or `1`.
fn is_set(flag: &Value) -> bool {
    flag.as_bool().unwrap_or(false) || flag.as_i64().is_some_and(|n| n != 0)
}

/// The items of a list answer (see [`list_array`]), decoded as `T`.
fn list_items<T: serde::de::DeserializeOwned>(
    op: &Op,
    key: &str,
    data: Map<String, Value>,
) -> Result<Vec<T>> {
    serde_json::from_value(list_array(key, data))
        .map_err(|e| UpstreamError::InvalidResponse(format!("{} {}: {e}", op.api, op.method)))
}

impl DsmClient {
    pub async fn webhooks(&self, kind: WebhookKind) -> Result<Vec<Webhook>> {
        let ops = kind.ops();
        let data: Map<String, Value> = self.fetch_or_empty(&ops.list, &[]).await?;
        let items = list_array(ops.list_key, data);
        list_from_value(ops.list.api, &items, WireWebhook::into_webhook)
    }

    pub async fn create_webhook(&self, new: NewWebhook<'_>) -> Result<CreatedIntegration> {
        let ops = new.kind().ops();
        let mut params: Vec<(&str, String)> = Vec::new();
        match &new {
            NewWebhook::Incoming {
                name,
                channel_id,
                icon_url,
            } => {
                params.push(("name", name.to_string()));
                params.push(("channel_id", channel_id.to_string()));
                if let Some(icon_url) = icon_url {
                    params.push(("icon_url", icon_url.to_string()));
                }
            }
            NewWebhook::Outgoing {
                name,
                channel_id,
                url,
                events,
            } => {
                params.push(("name", name.to_string()));
                params.push(("channel_id", channel_id.to_string()));
                params.push(("url", url.to_string()));
                // Lists travel as JSON text (PROTOCOL.md [T2]).
                let events = serde_json::to_string(events).map_err(|_| {
                    UpstreamError::InvalidResponse("events could not be encoded".to_owned())
                })?;
                params.push(("events", events));
            }
            NewWebhook::Slash {
                name,
                command,
                url,
                channel_id,
            } => {
                params.push(("name", name.to_string()));
                params.push(("command", command.to_string()));
                params.push(("url", url.to_string()));
                if let Some(channel_id) = channel_id {
                    params.push(("channel_id", channel_id.to_string()));
                }
            }
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let created = self
            .fetch_converted(&ops.create, &params, |body| {
                decode_data(body, WireCreatedIntegration::into_created)
            })
            .await?;
        // A webhook nobody can use is not left behind.
        if let Err(error) = self.finish_setup(&new, created.user_id).await {
            if let Err(cleanup) = self.remove_webhook(new.kind(), created.user_id).await {
                tracing::warn!(user_id = %created.user_id, error = %cleanup,
                    "a webhook that could not be set up was not deleted");
            }
            return Err(error);
        }
        Ok(created)
    }

    /// After `create`: binds the channel (and URL) with `set`, as DSM versions that ignore
    /// them in `create` need; the integration's bot is then named and enabled. A bot made
    /// through the session API starts unnamed and disabled: External refuses an incoming
    /// webhook's token until it is named and enabled (PROTOCOL.md [C1]), and an
    /// outgoing webhook or slash command left disabled would never be called.
    async fn finish_setup(&self, new: &NewWebhook<'_>, user_id: UserId) -> Result<()> {
        let id = user_id.to_string();
        let (channel_id, url, name) = match new {
            NewWebhook::Incoming {
                channel_id, name, ..
            } => (channel_id.to_string(), None, name),
            NewWebhook::Outgoing {
                channel_id,
                url,
                name,
                ..
            } => (channel_id.to_string(), Some(url.to_string()), name),
            NewWebhook::Slash { name, .. } => return self.make_sendable(user_id, name).await,
        };
        if let Some(bind) = &new.kind().ops().bind {
            let mut params = vec![
                ("user_id", id.as_str()),
                ("channel_id", channel_id.as_str()),
            ];
            if let Some(url) = &url {
                params.push(("url", url.as_str()));
            }
            self.call::<serde::de::IgnoredAny>(bind, &params).await?;
        }
        self.make_sendable(user_id, name).await
    }

    /// Names an integration's bot and enables it.
    async fn make_sendable(&self, user_id: UserId, nickname: &str) -> Result<()> {
        self.set_bot_nickname(user_id, nickname).await?;
        let user_id = user_id.to_string();
        self.call::<serde::de::IgnoredAny>(&BOT_ENABLE, &[("user_id", &user_id)])
            .await
            .map(drop)
    }

    /// Deletes the webhook or slash command whose bot is `id` ([`Self::remove_webhook`]);
    /// `false` when `kind`'s list does not show it. A webhook is deleted only once its list
    /// shows it, since `Bot.delete` would delete any bot, a chatbot or another kind of webhook
    /// included; for one the list does not show nothing is sent.
    pub async fn delete_webhook(&self, kind: WebhookKind, id: UserId) -> Result<bool> {
        if kind != WebhookKind::Slash {
            let ops = kind.ops();
            if !self.lists_bot(&ops.list, ops.list_key, id).await? {
                return Ok(false);
            }
        }
        self.remove_webhook(kind, id).await.map(|()| true)
    }

    /// Deletes an integration of `kind` whose bot is `id`. Incoming and outgoing webhooks are
    /// bots, deleted with `Bot.delete {user_id, real_delete=true}`, as n8n deletes them against
    /// a NAS (PROTOCOL.md [C1]); the library's `Webhook.*.delete {id}` is not: no source says
    /// that `id` is the bot's user id, and a NAS that reads it as the webhook's own id could
    /// delete another webhook. Slash commands keep the library's `Webhook.Slash.delete {id}`,
    /// the only call any source names for them.
    async fn remove_webhook(&self, kind: WebhookKind, id: UserId) -> Result<()> {
        match kind {
            WebhookKind::Incoming | WebhookKind::Outgoing => self.delete_bot(id).await,
            WebhookKind::Slash => {
                let id = id.to_string();
                self.call::<serde::de::IgnoredAny>(&kind.ops().delete, &[("id", &id)])
                    .await
                    .map(drop)
            }
        }
    }

    /// DSM's built-in (package) integrations; the answer's shape is undocumented.
    pub async fn builtin_webhooks(&self) -> Result<Map<String, Value>> {
        Ok(without_tokens(
            self.fetch_or_empty(&BUILTIN_WEBHOOK_LIST, &[]).await?,
        ))
    }

    /// Broadcast webhooks; the answer's shape is undocumented.
    pub async fn broadcast_webhooks(&self) -> Result<Map<String, Value>> {
        Ok(without_tokens(
            self.fetch_or_empty(&BROADCAST_WEBHOOK_LIST, &[]).await?,
        ))
    }

    /// Every integration (`SYNO.Chat.External list` with the session); shape undocumented.
    pub async fn external_integrations(&self) -> Result<Map<String, Value>> {
        Ok(without_tokens(
            self.fetch_or_empty(&EXTERNAL_LIST, &[]).await?,
        ))
    }

    /// Whether `list` (items under `key`, see [`list_array`]) shows the bot `id`.
    async fn lists_bot(&self, list: &'static Op, key: &str, id: UserId) -> Result<bool> {
        let data: Map<String, Value> = self.fetch_or_empty(list, &[]).await?;
        let listed = list_array(key, data);
        Ok(listed
            .as_array()
            .is_some_and(|items| items.iter().any(|item| user_id_of(item) == Some(id.get()))))
    }

    /// Whether `user_id` is an integration's bot: an incoming, outgoing, slash or broadcast
    /// webhook's, or a chatbot. `Bot.set` and `Bot.delete {real_delete}` name a user id and no
    /// source says DSM refuses a person's, so the gateway sends them only for a listed bot:
    /// a mistyped id must not rename or delete someone's account.
    pub async fn is_integration_bot(&self, user_id: UserId) -> Result<bool> {
        let lists = [
            (&INCOMING_OPS.list, INCOMING_OPS.list_key),
            (&OUTGOING_OPS.list, OUTGOING_OPS.list_key),
            (&SLASH_OPS.list, SLASH_OPS.list_key),
            (&CHATBOT_LIST, "chatbots"),
            (&BROADCAST_WEBHOOK_LIST, "webhook_broadcasts"),
        ];
        for (list, key) in lists {
            if self.lists_bot(list, key, user_id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sets a bot's (webhook's or chatbot's) display name; without one External refuses its
    /// token (PROTOCOL.md [C1]).
    pub async fn set_bot_nickname(&self, user_id: UserId, nickname: &str) -> Result<()> {
        let user_id = user_id.to_string();
        self.call::<serde::de::IgnoredAny>(
            &BOT_SET,
            &[("user_id", &user_id), ("nickname", nickname)],
        )
        .await
        .map(drop)
    }

    pub async fn delete_bot(&self, user_id: UserId) -> Result<()> {
        let user_id = user_id.to_string();
        // Without it DSM may only mark the bot deleted (N8N sends it, PROTOCOL.md [C1]).
        let params = [("user_id", user_id.as_str()), ("real_delete", "true")];
        self.call::<serde::de::IgnoredAny>(&BOT_DELETE, &params)
            .await
            .map(drop)
    }

    /// The tokens DSM holds for outgoing webhooks (`Outgoing`), slash commands (`Slash`) or, with
    /// `None`, chatbots: what Chat sends to an inbound URL, to check a call against. They stay
    /// secret (never serialised, never logged).
    pub async fn inbound_tokens(
        &self,
        kind: Option<WebhookKind>,
    ) -> Result<Vec<secrecy::SecretString>> {
        #[derive(Deserialize)]
        struct Tokened {
            #[serde(default)]
            token: String,
            #[serde(default)]
            is_disabled: bool,
        }
        let (list, key) = match kind {
            Some(kind) => (&kind.ops().list, kind.ops().list_key),
            None => (&CHATBOT_LIST, "chatbots"),
        };
        // No `data`: no tokens, so every inbound call is refused (never the other way round).
        let data: Map<String, Value> = self.fetch_or_empty(list, &[]).await?;
        let items: Vec<Tokened> = list_items(list, key, data)?;
        Ok(items
            .into_iter()
            .filter(|i| !i.is_disabled && !i.token.is_empty())
            .map(|i| secrecy::SecretString::from(i.token))
            .collect())
    }

    pub async fn chatbots(&self) -> Result<Vec<Chatbot>> {
        let data: Map<String, Value> = self.fetch_or_empty(&CHATBOT_LIST, &[]).await?;
        let items = list_array("chatbots", data);
        list_from_value(CHATBOT_LIST.api, &items, WireChatbot::into_chatbot)
    }

    /// Changes a chatbot's settings. Answers `false` when `user_id` is not a chatbot (the
    /// list says so before anything is changed). `Chatbot.set` is sent with every setting, as
    /// the seed sends it (DSM may answer 105 "missing parameter" otherwise, and a NAS that
    /// replaces the settings must not lose those not changed): the changes over the chatbot's
    /// current settings from the list. Its `url` is kept only when the list shows it.
    pub async fn set_chatbot(&self, user_id: UserId, changes: &ChatbotChanges<'_>) -> Result<bool> {
        let known = self.chatbots().await?;
        let Some(current) = known.into_iter().find(|bot| bot.user_id == user_id) else {
            return Ok(false);
        };
        let id = user_id.to_string();
        let url = changes.url.map(ToString::to_string).or(current.url);
        let props = current.chatbot_props;
        let hide = changes
            .hide_from_user
            .unwrap_or(props.hide_from_user)
            .to_string();
        let mut params = vec![
            ("user_id", id.as_str()),
            ("purpose", changes.purpose.unwrap_or(&props.purpose)),
            (
                "welcome_note",
                changes.welcome_note.unwrap_or(&props.welcome_note),
            ),
            ("hide_from_user", hide.as_str()),
        ];
        if let Some(url) = &url {
            params.insert(1, ("url", url.as_str()));
        }
        self.call::<serde::de::IgnoredAny>(&CHATBOT_SET, &params)
            .await
            .map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_removed_at_every_depth() {
        let data = json!({"token": "t", "webhook_broadcasts": [{"token": "x", "user_id": 3,
            "props": {"token": "y", "keep": 1}}]});
        let Value::Object(map) = data else {
            unreachable!()
        };
        let cleaned = Value::Object(without_tokens(map));
        assert_eq!(
            cleaned,
            json!({"webhook_broadcasts": [{"user_id": 3, "props": {"keep": 1}}]})
        );
        // Under other names, and inside a URL.
        let Value::Object(map) = json!({"chatbot": [{"Token": "a", "bot_token": "b",
            "name": "ops", "props": {"access_token": "c", "signing_secret": "d"}}],
            "incoming": [{"url": "https://nas/webapi/entry.cgi?api=x&Token=%22s3cret%22&x=1"}]})
        else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(without_tokens(map)),
            json!({"chatbot": [{"name": "ops", "props": {}}],
                "incoming": [{"url": "https://nas/webapi/entry.cgi?api=x&Token=****&x=1"}]})
        );
    }

    #[test]
    fn list_items_fall_back_to_the_only_array() {
        let Value::Object(data) = json!({"slash_commands": [{"user_id": 4}], "total": 1}) else {
            unreachable!()
        };
        let items: Vec<Value> = list_items(&SLASH_OPS.list, SLASH_OPS.list_key, data).unwrap();
        assert_eq!(items, vec![json!({"user_id": 4})]);
    }

    #[test]
    fn integrations_dsm_marks_deleted_are_left_out() {
        let Value::Object(data) = json!({"webhook_outgoings": [
            {"user_id": 1, "deleted": false},
            {"user_id": 2, "deleted": true},
            {"user_id": 3, "deleted": 1},
            {"user_id": 4, "deleted": 0},
            {"user_id": 5}
        ]}) else {
            unreachable!()
        };
        let items: Vec<Value> = list_items(&SLASH_OPS.list, "webhook_outgoings", data).unwrap();
        let kept: Vec<_> = items.iter().map(|i| i["user_id"].as_i64()).collect();
        assert_eq!(kept, [Some(1), Some(4), Some(5)]);
    }
}
