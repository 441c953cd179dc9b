//! `SYNO.Chat.External` v2 with an integration token (PROTOCOL.md [C1]): sending through
//! incoming webhooks and chatbots, and a chatbot's reads. No DSM session is involved.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DsmShared;
use super::client::{Download, DsmClient};
use super::error::{Result, UpstreamError};
use super::ops::{Op, Verb, op};
use super::wire::{WireChannel, WireUser, list_from_value};
use crate::domain::{Channel, ChannelId, HttpUrl, MessageText, Post, PostId, User, UserId};

const EXTERNAL_INCOMING: Op = op("SYNO.Chat.External", "incoming", 2..=2, Verb::Post);
const EXTERNAL_CHATBOT: Op = op("SYNO.Chat.External", "chatbot", 2..=2, Verb::Post);
const EXTERNAL_CHANNEL_LIST: Op = op("SYNO.Chat.External", "channel_list", 2..=2, Verb::Get);
const EXTERNAL_USER_LIST: Op = op("SYNO.Chat.External", "user_list", 2..=2, Verb::Get);
const EXTERNAL_POST_LIST: Op = op("SYNO.Chat.External", "post_list", 2..=2, Verb::Get);
const EXTERNAL_POST_FILE_GET: Op = op("SYNO.Chat.External", "post_file_get", 2..=2, Verb::Get);

/// A message sent with a token.
pub struct ExternalMessage<'a> {
    /// `None`: a file sent alone (an incoming webhook's `file_url` without text).
    pub text: Option<&'a MessageText>,
    /// A public file the NAS downloads and attaches (at most 32 MB).
    pub file_url: Option<&'a HttpUrl>,
}

/// Which posts of a channel to read: `prev_count` before the anchor and `next_count` after it;
/// without an anchor, `prev_count` counts back from the newest post (PROTOCOL.md [C4]).
pub struct PostWindow {
    pub anchor: Option<PostId>,
    pub prev_count: u32,
    pub next_count: u32,
}

/// Where a chatbot message went.
pub struct ChatbotDelivery {
    /// Recipient and the post created for them.
    pub sent: Vec<(UserId, PostId)>,
    /// Recipient and DSM's reason, for every requested user DSM created no post for.
    pub failed: Vec<(UserId, String)>,
}

/// The `payload` form field: JSON text, URL-encoded by the transport like every form value, so
/// `%`, `&`, `+` and quotes arrive intact (PROTOCOL.md [C5]).
fn payload(message: &ExternalMessage<'_>, user_ids: Option<&[UserId]>) -> Result<String> {
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_ids: Option<&'a [UserId]>,
    }
    serde_json::to_string(&Payload {
        text: message.text.map(MessageText::as_str),
        file_url: message.file_url.map(ToString::to_string),
        user_ids,
    })
    .map_err(|_| UpstreamError::InvalidResponse("payload could not be encoded".to_owned()))
}

/// A post id in `user_id_post_map`: a number, or text on some builds.
fn post_id_of(value: &Value) -> Option<PostId> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .and_then(|id| PostId::new(id).ok())
}

impl DsmClient {
    /// Like [`Self::call_with_token`] for methods whose answer must carry `data`.
    async fn fetch_with_token<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static Op,
        token: &SecretString,
        params: &[(&str, &str)],
    ) -> Result<T> {
        self.call_with_token(op, token, params)
            .await?
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(format!(
                    "{} {} answered without data",
                    op.api, op.method
                ))
            })
    }

    /// Posts to the incoming webhook's channel.
    pub async fn send_incoming(
        &self,
        token: &SecretString,
        message: &ExternalMessage<'_>,
    ) -> Result<()> {
        let payload = payload(message, None)?;
        self.call_with_token::<serde::de::IgnoredAny>(
            &EXTERNAL_INCOMING,
            token,
            &[("payload", &payload)],
        )
        .await
        .map(drop)
    }

    /// Sends a chatbot message to each user's conversation with the bot.
    pub async fn send_chatbot(
        &self,
        token: &SecretString,
        message: &ExternalMessage<'_>,
        user_ids: &[UserId],
    ) -> Result<ChatbotDelivery> {
        #[derive(Deserialize, Default)]
        struct Succ {
            #[serde(default)]
            user_id_post_map: BTreeMap<String, Value>,
        }
        #[derive(Deserialize)]
        struct Data {
            #[serde(default)]
            succ: Succ,
            #[serde(default)]
            fail: Value,
        }
        let payload = payload(message, Some(user_ids))?;
        let data: Data = self
            .fetch_with_token(&EXTERNAL_CHATBOT, token, &[("payload", &payload)])
            .await?;
        let sent: Vec<(UserId, PostId)> = data
            .succ
            .user_id_post_map
            .iter()
            .filter_map(|(user, post)| Some((user.parse().ok()?, post_id_of(post)?)))
            .collect();
        // `fail` maps user ids to reasons on the builds seen; whatever its shape, every requested
        // user without a post is reported, so no failure goes unnoticed.
        let reasons = match data.fail {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let failed = user_ids
            .iter()
            .filter(|user| !sent.iter().any(|(sent_to, _)| sent_to == *user))
            .map(|user| {
                let reason = match reasons.get(&user.to_string()) {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => "DSM reported no post for this user".to_owned(),
                };
                (*user, reason)
            })
            .collect();
        Ok(ChatbotDelivery { sent, failed })
    }

    /// The channels the chatbot is a member of.
    pub async fn bot_channels(&self, token: &SecretString) -> Result<Vec<Channel>> {
        #[derive(Deserialize)]
        struct Data {
            channels: Value,
        }
        let data = self
            .fetch_with_token::<Data>(&EXTERNAL_CHANNEL_LIST, token, &[])
            .await?;
        list_from_value("channels", &data.channels, WireChannel::into_channel)
    }

    pub async fn bot_users(&self, token: &SecretString) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct Data {
            users: Value,
        }
        let data = self
            .fetch_with_token::<Data>(&EXTERNAL_USER_LIST, token, &[])
            .await?;
        list_from_value("users", &data.users, WireUser::into_user)
    }

    /// Posts of a channel the chatbot is a member of (DSM answers 401 otherwise).
    pub async fn bot_posts(
        &self,
        token: &SecretString,
        channel_id: ChannelId,
        window: &PostWindow,
    ) -> Result<Vec<Post>> {
        #[derive(Deserialize)]
        struct Data {
            posts: serde_json::Value,
        }
        let channel = channel_id.to_string();
        let prev_count = window.prev_count.to_string();
        let next_count = window.next_count.to_string();
        // Without an anchor, `post_id` is left out: for this API the library documents "omit
        // for newest", and `prev_count=N`, `next_count=0` without one reads the newest N
        // (PROTOCOL.md [C4]). The anchor past the channel's last possible id is ACE's recipe for
        // session `Post.list` v8 only; an External post list may look an anchor up and refuse
        // one that does not exist.
        let anchor = window.anchor.map(|post_id| post_id.get().to_string());
        let mut params = vec![
            ("channel_id", channel.as_str()),
            ("prev_count", prev_count.as_str()),
            ("next_count", next_count.as_str()),
        ];
        if let Some(anchor) = &anchor {
            params.push(("post_id", anchor.as_str()));
        }
        let data = self
            .fetch_with_token::<Data>(&EXTERNAL_POST_LIST, token, &params)
            .await?;
        super::wire::posts_from_value(&data.posts)
    }

    /// The newest `count` posts of a channel the chatbot is a member of: `prev_count=count`,
    /// `next_count=0` and no `post_id`, as the library documents it for this API.
    pub async fn bot_newest_posts(
        &self,
        token: &SecretString,
        channel_id: ChannelId,
        count: u32,
    ) -> Result<Vec<Post>> {
        let window = PostWindow {
            anchor: None,
            prev_count: count,
            next_count: 0,
        };
        self.bot_posts(token, channel_id, &window).await
    }

    /// The file attached to a post in a channel the chatbot is a member of.
    pub async fn bot_post_file(&self, token: &SecretString, post_id: PostId) -> Result<Download> {
        let post_id = post_id.to_string();
        self.download_with_token(&EXTERNAL_POST_FILE_GET, token, &[("post_id", &post_id)])
            .await
    }
}

impl DsmShared {
    /// The URL an incoming webhook posts to, with the token masked (the library's
    /// `build_webhook_url`; Chat's UI quotes the token as `%22…%22`).
    pub fn masked_incoming_webhook_url(&self) -> String {
        format!(
            "{}entry.cgi?api={}&method={}&version={}&token=%22****%22",
            self.webapi_base,
            EXTERNAL_INCOMING.api,
            EXTERNAL_INCOMING.method,
            EXTERNAL_INCOMING.versions.end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_json_with_optional_fields() {
        let text = MessageText::parse("50% & \"more\" + ✓\nnext".to_owned()).unwrap();
        let plain = payload(
            &ExternalMessage {
                text: Some(&text),
                file_url: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&plain).unwrap(),
            serde_json::json!({"text": "50% & \"more\" + ✓\nnext"})
        );
        let file = HttpUrl::parse("file_url", "https://example.org/a.png").unwrap();
        let ids = [UserId::new(3).unwrap()];
        let full = payload(
            &ExternalMessage {
                text: Some(&text),
                file_url: Some(&file),
            },
            Some(&ids),
        )
        .unwrap();
        let full: Value = serde_json::from_str(&full).unwrap();
        assert_eq!(full["file_url"], "https://example.org/a.png");
        assert_eq!(full["user_ids"], serde_json::json!([3]));
    }

    /// DSM's details of a refusal (`error.errors`) reach the failed call's log line, and the
    /// token the call was made with does not.
    #[actix_web::test]
    async fn dsm_error_details_reach_the_log_line_of_the_failed_call() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = crate::sim::Simulator::start(
            crate::sim::SimConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let bot_token = sim.control().demo_bot_token();
        let config = crate::upstream::UpstreamConfig {
            base_url: sim.base_url().parse().unwrap(),
            account: crate::sim::DEMO_ACCOUNT.to_owned(),
            password: SecretString::from(crate::sim::DEMO_PASSWORD),
            device_id: None,
            device_name: "test".to_owned(),
            session_name: "Chat".to_owned(),
            timeout: std::time::Duration::from_secs(10),
            login_backoff_max: std::time::Duration::from_secs(60),
            max_concurrency: 4,
            slot_wait: std::time::Duration::from_secs(5),
            post_list_paging: crate::config::PostListPaging::Offset,
            trust: crate::upstream::TlsTrust::PublicRoots,
        };
        let client = DsmShared::new(config, crate::metrics::Metrics::new())
            .unwrap()
            .client();
        let lines = crate::logging::captured::Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(lines.clone())
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let text = MessageText::parse("hello".to_owned()).unwrap();
        let message = ExternalMessage {
            text: Some(&text),
            file_url: None,
        };
        // No recipients: DSM answers 120 with `{"name": "user_ids", "reason": "required"}`.
        let refused = client
            .send_chatbot(&SecretString::from(bot_token.clone()), &message, &[])
            .await;
        assert_eq!(refused.err().and_then(|e| e.dsm_code()), Some(120));
        let log = lines.text();
        let line = log
            .lines()
            .find(|line| line.contains("DSM call") && line.contains("method=\"chatbot\""))
            .unwrap_or_else(|| panic!("a log line for the call: {log}"));
        assert!(
            line.contains("dsm_errors=\"{name: user_ids, reason: required}\""),
            "{line}"
        );
        assert!(!log.contains(&bot_token), "{log}");
        sim.stop().await;
    }
}
