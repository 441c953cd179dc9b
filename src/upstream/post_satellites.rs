//! The APIs around posts: `SYNO.Chat.Post.Attachment`, `.Reaction`, `.Reminder`, `.Schedule`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::DsmClient;
use super::error::Result;
use super::ops::{Op, Verb, op};
use crate::domain::{ChannelId, CronjobId, MessageText, PostId};
pub use crate::domain::{Reminder, ScheduledPost};

const ATTACHMENT_LIST: Op = op("SYNO.Chat.Post.Attachment", "list", 1..=1, Verb::Get);
// Free text is declared on every API whose Info entry may say `requestFormat: JSON` (PROTOCOL.md
// §2: unknown for these), so a sticker `100` or a message `true` stays a string there.
const REACTION_SET: Op =
    op("SYNO.Chat.Post.Reaction", "set", 1..=1, Verb::Post).text(&["sticker_name"]);
const REMINDER_GET: Op = op("SYNO.Chat.Post.Reminder", "get", 1..=1, Verb::Get);
const REMINDER_SET: Op = op("SYNO.Chat.Post.Reminder", "set", 1..=1, Verb::Post);
const REMINDER_DELETE: Op = op("SYNO.Chat.Post.Reminder", "delete", 1..=1, Verb::Post);
const REMINDER_LIST: Op = op("SYNO.Chat.Post.Reminder", "list", 1..=1, Verb::Get);
const SCHEDULE_LIST: Op = op("SYNO.Chat.Post.Schedule", "list", 1..=1, Verb::Get);
const SCHEDULE_CREATE: Op =
    op("SYNO.Chat.Post.Schedule", "create", 1..=1, Verb::Post).text(&["message"]);
const SCHEDULE_DELETE: Op = op("SYNO.Chat.Post.Schedule", "delete", 1..=1, Verb::Post);

impl DsmClient {
    /// A channel's files. DSM's answer is not documented, so its `data` is passed on as is.
    pub async fn attachments(
        &self,
        channel_id: ChannelId,
        limit: u32,
    ) -> Result<Map<String, Value>> {
        let (channel_id, limit) = (channel_id.to_string(), limit.to_string());
        let params = [
            ("channel_id", channel_id.as_str()),
            ("limit", limit.as_str()),
        ];
        self.fetch_or_empty(&ATTACHMENT_LIST, &params).await
    }

    pub async fn add_reaction(&self, post_id: PostId, sticker_name: &str) -> Result<()> {
        let post_id = post_id.to_string();
        let params = [
            ("post_id", post_id.as_str()),
            ("sticker_name", sticker_name),
        ];
        self.call::<serde::de::IgnoredAny>(&REACTION_SET, &params)
            .await
            .map(drop)
    }

    /// When the account is reminded of the post (Unix ms), if at all.
    pub async fn reminder(&self, post_id: PostId) -> Result<Option<u64>> {
        // An answer without `data` sets no reminder either.
        #[derive(Deserialize, Default)]
        struct Data {
            // 0 means "no reminder".
            #[serde(default)]
            remind_at: u64,
        }
        let post_id = post_id.to_string();
        let data: Data = self
            .fetch_or_empty(&REMINDER_GET, &[("post_id", post_id.as_str())])
            .await?;
        Ok((data.remind_at != 0).then_some(data.remind_at))
    }

    pub async fn set_reminder(&self, post_id: PostId, remind_at: u64) -> Result<()> {
        let (post_id, remind_at) = (post_id.to_string(), remind_at.to_string());
        let params = [
            ("post_id", post_id.as_str()),
            ("remind_at", remind_at.as_str()),
        ];
        self.call::<serde::de::IgnoredAny>(&REMINDER_SET, &params)
            .await
            .map(drop)
    }

    pub async fn delete_reminder(&self, post_id: PostId) -> Result<()> {
        // The seed sends the channel too, the web client's fixture only the post: send both.
        let channel_id = (post_id.get() >> 32).to_string();
        let post_id = post_id.to_string();
        let params = [
            ("channel_id", channel_id.as_str()),
            ("post_id", post_id.as_str()),
        ];
        self.call::<serde::de::IgnoredAny>(&REMINDER_DELETE, &params)
            .await
            .map(drop)
    }

    pub async fn reminders(&self, channel_id: ChannelId) -> Result<Vec<Reminder>> {
        // The seed reads `posts` (posts carrying `remind_at`); other clients expect `reminders`.
        #[derive(Deserialize)]
        struct Listed {
            post_id: PostId,
            // The seed documents only `posts: [...]`: a listed post without the field is kept,
            // with DSM's own "no reminder" value (0, as `get` answers).
            #[serde(default)]
            remind_at: Option<u64>,
            #[serde(default)]
            message: Option<String>,
        }
        // An answer without `data` lists none.
        #[derive(Deserialize, Default)]
        struct Data {
            #[serde(alias = "reminders", default)]
            posts: Vec<Listed>,
        }
        let channel_id = channel_id.to_string();
        let data: Data = self
            .fetch_or_empty(&REMINDER_LIST, &[("channel_id", channel_id.as_str())])
            .await?;
        Ok(data
            .posts
            .into_iter()
            .map(|r| Reminder {
                post_id: r.post_id,
                remind_at: r.remind_at.unwrap_or(0),
                message: r.message,
            })
            .collect())
    }

    pub async fn scheduled_posts(&self, channel_id: ChannelId) -> Result<Vec<ScheduledPost>> {
        #[derive(Deserialize)]
        struct Listed {
            cronjob_id: CronjobId,
            #[serde(default)]
            message: String,
            #[serde(default)]
            send_at: u64,
        }
        // An answer without `data` lists none.
        #[derive(Deserialize, Default)]
        struct Data {
            #[serde(default)]
            schedule_posts: Vec<Listed>,
        }
        let id = channel_id.to_string();
        let data: Data = self
            .fetch_or_empty(&SCHEDULE_LIST, &[("channel_id", id.as_str())])
            .await?;
        Ok(data
            .schedule_posts
            .into_iter()
            .map(|s| ScheduledPost {
                cronjob_id: s.cronjob_id,
                channel_id,
                message: s.message,
                send_at: s.send_at,
            })
            .collect())
    }

    pub async fn schedule_post(
        &self,
        channel_id: ChannelId,
        message: &MessageText,
        send_at: u64,
    ) -> Result<ScheduledPost> {
        #[derive(Deserialize)]
        struct Data {
            cronjob_id: CronjobId,
        }
        let (id, send_at_text) = (channel_id.to_string(), send_at.to_string());
        let params = [
            ("channel_id", id.as_str()),
            ("message", message.as_str()),
            ("send_at", send_at_text.as_str()),
        ];
        let data: Data = self.fetch(&SCHEDULE_CREATE, &params).await?;
        Ok(ScheduledPost {
            cronjob_id: data.cronjob_id,
            channel_id,
            message: message.as_str().to_owned(),
            send_at,
        })
    }

    pub async fn delete_scheduled_post(&self, cronjob_id: CronjobId) -> Result<()> {
        let cronjob_id = cronjob_id.to_string();
        self.call::<serde::de::IgnoredAny>(&SCHEDULE_DELETE, &[("cronjob_id", cronjob_id.as_str())])
            .await
            .map(drop)
    }
}
