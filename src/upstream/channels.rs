//! Channel operations.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::client::{DsmClient, decode_data};
use super::error::{Result, UpstreamError};
use super::ops::{Op, Verb, op};
use super::wire::WireChannel;
use crate::domain::{Channel, ChannelId, ChannelKind, ChannelType, UserId};

pub const CHANNEL_LIST: Op = op("SYNO.Chat.Channel", "list", 1..=5, Verb::Get);
// The seed pins close to v4 and archive to v2; other versions' parameters are unknown.
const CHANNEL_CLOSE: Op = op("SYNO.Chat.Channel", "close", 4..=4, Verb::Post);
const CHANNEL_ARCHIVE: Op = op("SYNO.Chat.Channel", "archive", 2..=2, Verb::Post);
const CHANNEL_VIEW: Op = op("SYNO.Chat.Channel", "view", 1..=5, Verb::Post);
const NAMED_CREATE: Op =
    op("SYNO.Chat.Channel.Named", "create", 1..=1, Verb::Post).text(&["name", "type"]);
const NAMED_JOIN: Op = op("SYNO.Chat.Channel.Named", "join", 1..=1, Verb::Post);
const NAMED_DISJOIN: Op = op("SYNO.Chat.Channel.Named", "disjoin", 1..=1, Verb::Post);
const NAMED_INVITE: Op = op("SYNO.Chat.Channel.Named", "invite", 1..=1, Verb::Post);
const ANONYMOUS_INITIATE: Op = op("SYNO.Chat.Channel.Anonymous", "initiate", 2..=2, Verb::Post);
/// What `Channel.Named.create` answered `type` with in one n8n report (PROTOCOL.md [C2]). DSM
/// refused the call, so asking again without `type` cannot make a second channel.
const TYPE_REFUSED: i64 = 407;
const PREFERENCE_GET: Op = op("SYNO.Chat.Channel.Preference", "get", 1..=2, Verb::Get);

/// Encodes ids as the JSON array text DSM expects for list parameters (`[2,3]`).
fn json_id_list(ids: &[UserId]) -> String {
    let ids: Vec<u64> = ids.iter().map(|id| id.get()).collect();
    Value::from(ids).to_string()
}

impl DsmClient {
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            channels: Vec<WireChannel<'a>>,
        }
        self.fetch_converted(&CHANNEL_LIST, &[], |body| {
            decode_data(body, |data: Data| {
                data.channels
                    .into_iter()
                    .map(WireChannel::into_channel)
                    .collect()
            })
        })
        .await
    }

    /// Creates a named channel. DSM answers at least its id; fields it leaves out are taken
    /// from the request.
    ///
    /// `type` is sent, as the library and the web client's fixtures send it; one n8n note says
    /// DSM refuses it with 407 (PROTOCOL.md [C2]). A private channel, what both always ask
    /// for, is then asked for once more without `type`; a public one cannot be, and the 407
    /// is the answer.
    pub async fn create_channel(&self, name: &str, kind: ChannelType) -> Result<Channel> {
        let decode = |body: &[u8]| {
            decode_data(body, |created: WireChannel| {
                created.into_created(name, kind)
            })
        };
        let typed = [("name", name), ("type", kind.as_str())];
        match self.fetch_converted(&NAMED_CREATE, &typed, decode).await {
            Err(UpstreamError::Dsm {
                code: TYPE_REFUSED, ..
            }) if kind == ChannelType::Private => {
                tracing::info!(
                    api = NAMED_CREATE.api,
                    method = NAMED_CREATE.method,
                    dsm_code = TYPE_REFUSED,
                    "DSM refused the channel type; asking again without it (private by default)"
                );
                let created = self
                    .fetch_converted(&NAMED_CREATE, &[("name", name)], decode)
                    .await?;
                if created.kind != ChannelKind::Private {
                    tracing::warn!(
                        channel_id = %created.channel_id,
                        kind = ?created.kind,
                        "DSM made a channel asked for without a type, and not a private one"
                    );
                }
                Ok(created)
            }
            other => other,
        }
    }

    /// Joins a channel. DSM answers 117 both when the account is already a member and when the
    /// channel does not exist; callers tell these apart.
    pub async fn join_channel(&self, channel_id: ChannelId) -> Result<()> {
        self.channel_call(&NAMED_JOIN, channel_id, &[]).await
    }

    /// Leaves a named channel (the last member leaving orphans it: nobody can rejoin it).
    pub async fn leave_channel(&self, channel_id: ChannelId) -> Result<()> {
        self.channel_call(&NAMED_DISJOIN, channel_id, &[]).await
    }

    pub async fn invite_to_channel(
        &self,
        channel_id: ChannelId,
        user_ids: &[UserId],
    ) -> Result<()> {
        let user_ids = json_id_list(user_ids);
        let params = [("user_ids", user_ids.as_str()), ("channel_key_encs", "[]")];
        self.channel_call(&NAMED_INVITE, channel_id, &params).await
    }

    /// Closes the conversation for the gateway's account; messages are kept (PROTOCOL.md
    /// [C1]: close is not delete).
    pub async fn close_channel(&self, channel_id: ChannelId) -> Result<()> {
        self.channel_call(&CHANNEL_CLOSE, channel_id, &[]).await
    }

    pub async fn archive_channel(&self, channel_id: ChannelId) -> Result<()> {
        self.channel_call(&CHANNEL_ARCHIVE, channel_id, &[]).await
    }

    /// Moves the account's read marker to `last_view_at` (Unix ms).
    pub async fn view_channel(&self, channel_id: ChannelId, last_view_at: u64) -> Result<()> {
        let last_view_at = last_view_at.to_string();
        self.channel_call(
            &CHANNEL_VIEW,
            channel_id,
            &[("last_view_at", last_view_at.as_str())],
        )
        .await
    }

    /// The account's preferences for a channel, as DSM's free-form `data` object (empty when
    /// DSM answers none).
    pub async fn channel_preferences(&self, channel_id: ChannelId) -> Result<Map<String, Value>> {
        let channel_id = channel_id.to_string();
        self.fetch_or_empty(&PREFERENCE_GET, &[("channel_id", channel_id.as_str())])
            .await
    }

    /// Opens (or returns the existing) unencrypted 1:1 conversation with `user_id`.
    pub async fn open_direct_channel(&self, user_id: UserId) -> Result<ChannelId> {
        // N8N reads `channel_id` at the top of `data`; some builds nest it in `channel`.
        #[derive(Deserialize)]
        struct Opened {
            channel_id: Option<ChannelId>,
            channel: Option<Nested>,
        }
        #[derive(Deserialize)]
        struct Nested {
            channel_id: ChannelId,
        }
        let user_ids = json_id_list(&[user_id]);
        let params = [
            ("user_ids", user_ids.as_str()),
            ("encrypted", "false"),
            ("channel_key_encs", "[]"),
        ];
        let opened: Opened = self.fetch(&ANONYMOUS_INITIATE, &params).await?;
        opened
            .channel_id
            .or(opened.channel.map(|c| c.channel_id))
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(
                    "SYNO.Chat.Channel.Anonymous initiate answered without a channel_id".to_owned(),
                )
            })
    }

    /// A write addressed to one channel whose answer carries nothing the gateway needs.
    async fn channel_call(
        &self,
        op: &'static Op,
        channel_id: ChannelId,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let channel_id = channel_id.to_string();
        let params = [&[("channel_id", channel_id.as_str())], extra].concat();
        self.call::<IgnoredAny>(op, &params).await.map(drop)
    }
}
