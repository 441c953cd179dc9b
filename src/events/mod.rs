//! Inbound events: what Chat's outgoing webhooks, slash commands and chatbots send to the
//! gateway, kept in the store and fanned out to consumers.
//!
//! The table is the source of truth. One pump per gateway reads the events after the last one
//! it broadcast whenever it is woken (a local insert, or on PostgreSQL a `NOTIFY` from any
//! replica) and hands them to the live streams in id order; a stream that falls behind reads
//! the table instead. Inserts commit in id order (SQLite has one writer; PostgreSQL takes a
//! transaction lock), so "after the last id" never skips an event.

pub mod dsm_tokens;
pub mod inbound;
pub mod subscriptions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use utoipa::ToSchema;

use crate::config::{InboundKind, InboundVerify, Settings, SubscriptionsSettings};
use crate::store::{Store, StoreError};

/// What happened in Chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A post in a channel an outgoing webhook watches (no trigger word configured).
    Message,
    /// A slash command typed by a user.
    SlashCommand,
    /// A message to a chatbot.
    Chatbot,
    /// A post starting with an outgoing webhook's trigger word.
    TriggerWord,
    /// A click on a button of a chatbot's message (`button` says which).
    ButtonClick,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::SlashCommand => "slash_command",
            Self::Chatbot => "chatbot",
            Self::TriggerWord => "trigger_word",
            Self::ButtonClick => "button_click",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Message,
            Self::SlashCommand,
            Self::Chatbot,
            Self::TriggerWord,
            Self::ButtonClick,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// An event as stored and as consumers receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"event_id": 42, "kind": "trigger_word", "inbound": "ops",
    "channel_id": 2, "channel_name": "general", "channel_type": 1, "user_id": 3,
    "username": "alice", "post_id": 8589934605_i64, "thread_id": 0, "timestamp": 1647060330657_i64,
    "text": "!deploy web", "trigger_word": "!deploy", "command": null,
    "received_at": 1647060330702_i64}))]
pub struct Event {
    /// Increasing, never reused: resume a stream after it (`Last-Event-ID`, `?after=`).
    pub event_id: i64,
    pub kind: EventKind,
    /// The configured inbound (`inbound.<name>`) Chat called.
    pub inbound: String,
    pub channel_id: Option<i64>,
    pub channel_name: Option<String>,
    /// The channel's type as Chat reports it (a number: 1 in real captures), when it does.
    #[serde(default)]
    pub channel_type: Option<i64>,
    /// The Chat user who wrote.
    pub user_id: Option<i64>,
    pub username: Option<String>,
    /// The post Chat reported (none for slash commands on some versions).
    pub post_id: Option<i64>,
    pub thread_id: Option<i64>,
    /// When the post was made, ms since the Unix epoch (Chat's clock).
    pub timestamp: Option<i64>,
    /// The text as written (for slash commands the whole line, `/command` included).
    pub text: String,
    /// The outgoing webhook's trigger word, for `trigger_word` events.
    pub trigger_word: Option<String>,
    /// The slash command (`/deploy`), for `slash_command` events.
    pub command: Option<String>,
    /// When the gateway stored it, ms since the Unix epoch.
    pub received_at: i64,
    /// For `button_click` events: the button clicked, as Chat reports it. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<ButtonClick>,
}

/// A click on a button of a chatbot's message: Chat sends the message's `callback_id` and the
/// clicked button's fields. The event's `post_id` is the message's, `text` the button's
/// `value`, and `channel_id` the message's channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"callback_id": "deploy-42", "actions": [{"type": "button",
    "name": "approve", "value": "approve 42", "text": "Approve", "style": "green"}]}))]
pub struct ButtonClick {
    /// The `callback_id` of the message's attachment.
    pub callback_id: Option<String>,
    /// The button clicked (Chat sends a list of one).
    pub actions: Vec<ButtonAction>,
}

/// One button, as the chatbot's message defined it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ButtonAction {
    /// `button`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
    /// The label shown.
    pub text: Option<String>,
    /// `green`, `grey`, `red`, `orange`, `blue` or `teal`.
    pub style: Option<String>,
}

/// An accepted call, before the store gives it an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub inbound: String,
    pub channel_id: Option<i64>,
    pub channel_name: Option<String>,
    pub channel_type: Option<i64>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub post_id: Option<i64>,
    pub thread_id: Option<i64>,
    pub timestamp: Option<i64>,
    pub text: String,
    pub trigger_word: Option<String>,
    pub command: Option<String>,
    pub button: Option<ButtonClick>,
}

/// Which events a consumer wants.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub inbound: Option<String>,
    pub channel_id: Option<i64>,
    pub kind: Option<EventKind>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.inbound.as_ref().is_none_or(|i| *i == event.inbound)
            && self.channel_id.is_none_or(|c| Some(c) == event.channel_id)
            && self.kind.is_none_or(|k| k == event.kind)
    }
}

/// A configured receiver: the token Chat sends (or that DSM's lists are checked) and what
/// kind of integration calls it.
pub struct Inbound {
    pub token: Option<SecretString>,
    pub kind: InboundKind,
    pub verify: InboundVerify,
}

/// Live events for the streams of this gateway.
pub(crate) const LIVE_CAPACITY: usize = 1024;
/// How often the table is read for events no wake announced (see `Events::start`).
const STORE_POLL: Duration = Duration::from_secs(5);
/// How often old events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The event hub: the receivers, the live broadcast and the pump that feeds it.
pub struct Events {
    pub store: Store,
    pub inbounds: BTreeMap<String, Inbound>,
    pub heartbeat: Duration,
    /// What subscriptions may call.
    pub subscriptions: SubscriptionsSettings,
    /// How long `respond: true` subscriptions may take to answer, all together.
    pub reply_timeout: Duration,
    /// DSM's integration tokens, for inbounds with `verify = "dsm"`.
    pub dsm_tokens: dsm_tokens::DsmTokens,
    retention: Duration,
    live: broadcast::Sender<Arc<Event>>,
    wake: Notify,
    /// The highest event id broadcast so far.
    broadcast_up_to: AtomicI64,
    /// Set when graceful shutdown begins: event streams end, so they do not hold it up.
    stopping: watch::Sender<bool>,
}

impl Events {
    pub async fn new(store: Store, settings: &Settings) -> Result<Arc<Self>, StoreError> {
        let inbounds = settings
            .inbound
            .receivers
            .iter()
            .map(|(name, i)| {
                (
                    name.clone(),
                    Inbound {
                        token: i.token.clone(),
                        kind: i.kind,
                        verify: i.verify,
                    },
                )
            })
            .collect();
        let latest = store.latest_event_id().await?;
        Ok(Arc::new(Self {
            store,
            inbounds,
            heartbeat: Duration::from_millis(settings.events.heartbeat_ms),
            subscriptions: settings.subscriptions.clone(),
            reply_timeout: Duration::from_millis(settings.inbound.reply_timeout_ms),
            dsm_tokens: dsm_tokens::DsmTokens::new(Duration::from_millis(
                settings.inbound.dsm_refresh_ms,
            )),
            retention: Duration::from_secs(settings.events.retention_secs),
            live: broadcast::channel(LIVE_CAPACITY).0,
            wake: Notify::new(),
            broadcast_up_to: AtomicI64::new(latest),
            stopping: watch::channel(false).0,
        }))
    }

    /// Stores an event (before Chat gets its answer); `None` when Chat sent this post before.
    pub async fn record(&self, event: &NewEvent) -> Result<Option<i64>, StoreError> {
        let id = self.store.insert_event(event, now_ms()).await;
        // Also on a duplicate or a failure: an insert whose answer came too late (the store's
        // deadline) may have committed, and Chat's retry then finds it a duplicate; on SQLite
        // nothing else would tell the live streams (the pump reads the table).
        self.wake.notify_one();
        id
    }

    /// A receiver of the events broadcast from now on. Subscribe before reading the backlog.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// Ends every event stream, now and for streams opened later: graceful shutdown has begun,
    /// and an open stream would hold the drain for its whole timeout. Clients reconnect (to
    /// another replica, or to this gateway once it is back) with `Last-Event-ID`.
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether streams should end, watched by each stream.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Wakes the pump (another replica stored an event).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Broadcasts every stored event after the last one broadcast, in id order.
    async fn pump_once(&self) -> Result<(), StoreError> {
        loop {
            let after = self.broadcast_up_to.load(Ordering::Acquire);
            let batch = self
                .store
                .events_after(after, &EventFilter::default(), 500)
                .await?;
            let Some(last) = batch.last().map(|e| e.event_id) else {
                return Ok(());
            };
            for event in batch {
                // No receiver is fine: nobody is listening.
                let _ = self.live.send(Arc::new(event));
            }
            self.broadcast_up_to.store(last, Ordering::Release);
        }
    }

    /// Starts listening to the other replicas (PostgreSQL), then runs the pump and the
    /// retention purge until the process ends.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        if let Some(mut notifications) = self.store.listen_events().await? {
            let hub = self.clone();
            crate::store::task::spawn(async move {
                loop {
                    if let Err(error) = notifications.next().await {
                        tracing::warn!(%error, "events: lost the PostgreSQL notifications; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // The id in the notification is not needed: the pump reads the table.
                    hub.wake();
                }
            });
        }
        // The table is also read every few seconds, so an event no wake announced waits that
        // long at most: PostgreSQL's notifications are not durable (one sent while the
        // listener reconnects is lost), and an insert the store's deadline cut off may still
        // have committed (SQLite's writer carries a statement it began to its end).
        let hub = self.clone();
        actix_web::rt::spawn(async move {
            let mut poll = tokio::time::interval(STORE_POLL);
            loop {
                poll.tick().await;
                hub.wake();
            }
        });
        self.spawn_pump();
        Ok(())
    }

    fn spawn_pump(self: &Arc<Self>) {
        let hub = self.clone();
        crate::store::task::spawn(async move {
            loop {
                hub.wake.notified().await;
                if let Err(error) = hub.pump_once().await {
                    tracing::warn!(%error, "events: cannot read new events");
                    // Try again shortly: the events are in the table.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    hub.wake.notify_one();
                }
            }
        });
        // Apart from the pump: a long purge (after a pause, or a retention made shorter) must
        // not hold up the live streams.
        let hub = self.clone();
        crate::store::task::spawn(async move {
            let mut purge = tokio::time::interval(PURGE_EVERY);
            loop {
                purge.tick().await;
                hub.purge().await;
            }
        });
    }

    async fn purge(&self) {
        let cutoff = now_ms() - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        match self.store.purge_events(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "events: removed events past retention"),
            Err(error) => tracing::warn!(%error, "events: purge failed"),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
