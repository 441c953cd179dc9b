//! Asynchronous delivery: the only code that retries. Messages accepted with
//! `Prefer: respond-async` are committed to the [`Store`] first; a worker per gateway process
//! claims them with a lease and sends them chunk by chunk, in order per target.
//!
//! Exactly once: before each chunk is sent its delivery is marked *uncertain*; a recorded post
//! clears the mark. A send whose outcome is unknown (timeout, connection lost after the request
//! left, or a crash) leaves the mark, and the next attempt first looks for the post among the
//! channel's recent posts by the gateway's account; a chatbot's, with its token, in each
//! recipient's conversation with the bot. Incoming webhooks cannot look: a webhook lists
//! nothing, and its posts' ids are never known (DSM answers a send without one), so an earlier
//! post of the same text could not be told from the one looked for. Their sends are re-sent and
//! the delivery says `at_least_once: true`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::chunking::{PartLimits, Parts};
use crate::config::{DeliverySettings, SubscriptionsSettings};
use crate::domain::{ChannelId, ChannelKind, HttpUrl, MessageText, PostId, UserId};
use crate::events::subscriptions::{NotDelivered, Sent as SubscriptionSent, post_signed};
use crate::metrics::Metrics;
// A delivery's last error is kept as the problem document `GET /deliveries/{id}` shows.
use crate::problem::{ApiError, ProblemCode};
use crate::store::deliveries::{
    DeliveryRow, DeliveryState, Enqueued, EventKey, NewDelivery, Targets, callers,
};
use crate::store::{Store, StoreError};
use crate::upstream::{DsmClient, DsmShared, ExternalMessage, NewPost, Refusal, UpstreamError};

mod bells;
use bells::FinishBells;

/// What a delivery sends, besides its text (stored as JSON with the delivery).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    Channel {
        channel_id: ChannelId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<PostId>,
    },
    User {
        user_id: UserId,
    },
    /// A channel by name, looked up when sent (a hook whose target is named).
    ChannelNamed {
        channel: String,
    },
    /// A user's conversation by username, looked up when sent.
    UserNamed {
        username: String,
    },
    /// A configured incoming webhook, by name (the token stays in the configuration).
    Webhook {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
    },
    /// A configured chatbot, by name.
    Bot {
        name: String,
        user_ids: Vec<UserId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_url: Option<String>,
    },
    /// One event POSTed to an HTTP subscription (the body is the delivery's one chunk).
    Subscription {
        subscription_id: String,
        event_id: i64,
    },
}

impl Job {
    /// The unit of ordering and pacing: one channel, one user's conversation, one token.
    pub fn target(&self) -> String {
        match self {
            Job::Channel { channel_id, .. } => format!("channel:{channel_id}"),
            Job::User { user_id } => format!("user:{user_id}"),
            Job::ChannelNamed { channel } => format!("channel-name:{}", channel.to_lowercase()),
            Job::UserNamed { username } => format!("user-name:{}", username.to_lowercase()),
            Job::Webhook { name, .. } | Job::Bot { name, .. } => format!("token:{name}"),
            Job::Subscription {
                subscription_id, ..
            } => crate::events::subscriptions::target(subscription_id),
        }
    }

    /// The resource a send addresses, as the synchronous routes name it in a 404 (DSM's 117:
    /// it does not exist or is not visible); none for a token's sends and callbacks.
    fn resource(&self) -> Option<String> {
        match self {
            // DSM's 117 does not say which of the two it did not find.
            Job::Channel {
                channel_id,
                thread_id: Some(root),
            } => Some(format!("channel {channel_id} or thread {root}")),
            Job::Channel { channel_id, .. } => Some(format!("channel {channel_id}")),
            Job::User { user_id } => Some(format!("user {user_id}")),
            Job::ChannelNamed { channel } => Some(format!("channel {channel:?}")),
            Job::UserNamed { username } => Some(format!("user {username:?}")),
            Job::Webhook { .. } | Job::Bot { .. } | Job::Subscription { .. } => None,
        }
    }

    /// A refusal no retry can change, as the synchronous route would answer it. A hook's
    /// target is the gateway's configuration, not its sender's mistake: no 404 for it.
    fn refusal(&self, caller: &str, error: UpstreamError) -> ApiError {
        match self.resource() {
            Some(what) if !callers::is_hook(caller) => ApiError::for_resource(error, what),
            _ => error.into(),
        }
    }

    fn uses_token(&self) -> bool {
        matches!(self, Job::Webhook { .. } | Job::Bot { .. })
    }

    /// An incoming webhook's file sent without text: its one part is empty.
    fn is_file_alone(&self, text: &str) -> bool {
        matches!(
            self,
            Job::Webhook {
                file_url: Some(_),
                ..
            }
        ) && text.is_empty()
    }

    /// How many of the delivery's chunks are done, from the first: posted, and for a chatbot
    /// posted to every recipient (a retry after some failed must not skip them).
    fn chunks_done(&self, row: &DeliveryRow) -> usize {
        match self {
            Job::Bot { user_ids, .. } => (0..row.chunks.len())
                .take_while(|&chunk| {
                    user_ids
                        .iter()
                        .all(|user| row.posted_to.contains(&(chunk as i64, user.get() as i64)))
                })
                .count(),
            _ => distinct_chunks(&row.posts),
        }
    }

    /// The job for chunk `chunk`: a chatbot's without the recipients it was posted to already.
    fn left_for(&self, chunk: i64, posted_to: &[(i64, i64)]) -> Job {
        match self {
            Job::Bot {
                name,
                user_ids,
                file_url,
            } => Job::Bot {
                name: name.clone(),
                user_ids: user_ids
                    .iter()
                    .copied()
                    .filter(|user| !posted_to.contains(&(chunk, user.get() as i64)))
                    .collect(),
                file_url: file_url.clone(),
            },
            other => other.clone(),
        }
    }

    /// How many recipients chunk `chunk` still has to reach: a chatbot's without a post of
    /// it, else one.
    fn recipients_left(&self, chunk: i64, posted_to: &[(i64, i64)]) -> usize {
        match self.left_for(chunk, posted_to) {
            Job::Bot { user_ids, .. } => user_ids.len(),
            _ => 1,
        }
    }

    /// The thread a reply goes into.
    fn thread(&self) -> Option<PostId> {
        match self {
            Job::Channel { thread_id, .. } => *thread_id,
            _ => None,
        }
    }
}

fn millis(wait: Duration) -> i64 {
    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Poll interval when nothing wakes the worker (another replica's enqueues, expired leases).
const POLL: Duration = Duration::from_secs(2);
/// How far back it looks before the send as the NAS's `Date` placed it when this process made
/// the send: drift since then. Tight, so an earlier post of the same text (a synchronous send's,
/// which a restart forgets) is not taken for the lost one, and the lost message never posted.
const CHECK_MARGIN_MS: i64 = 2_000;
/// The same for a send another process made (another replica, or this one before a restart),
/// placed on the NAS's clock by this process's distance from it: the replicas' clocks may be
/// apart by up to a second unnoticed (the README asks for NTP; start-up warns past a second).
/// A window that starts too late only costs a second copy (the post is not found and is sent
/// again); one that starts too early can lose a message.
const CHECK_MARGIN_OTHER_MS: i64 = 5_000;
/// Posts read at a time for the duplicate check.
const CHECK_POSTS: u32 = 100;
/// Pages the duplicate check reads at most, going back until it reaches posts older than the
/// uncertain send: a busy channel may have had hundreds of posts since (a taken-over message
/// waits behind its target's queue while synchronous posts go on).
const CHECK_PAGES: usize = 20;

/// Retry delay after `attempts` failed attempts: 0.5 s doubling, capped at 15 s, ±20 % jitter.
/// The cap is what a backlog waits after the NAS is back (the issue: seconds, not minutes). It
/// costs little while the NAS is down: only the oldest delivery of each target is tried, and a
/// NAS the gateway already knows to be down fails the call in the gateway (the login and
/// API-list back-offs).
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    jittered(500u64.saturating_mul(1u64 << exp).min(BACKOFF_CAP_MS))
}

const BACKOFF_CAP_MS: u64 = 15_000;

/// `base_ms` ±20 %, so retries of many deliveries do not arrive together.
fn jittered(base_ms: u64) -> Duration {
    let mut byte = [0u8; 2];
    let _ = getrandom::fill(&mut byte);
    let jitter = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX); // 0..1
    Duration::from_millis((base_ms as f64 * (0.8 + 0.4 * jitter)) as u64)
}

/// The wait after the `failures`-th failure in a row of a subscription: its entry of
/// `subscriptions.retry_delays_ms` (the last one repeats), with jitter.
fn subscription_delay(delays: &[u64], failures: i64) -> Duration {
    let index = usize::try_from(failures.max(1) - 1).unwrap_or(usize::MAX);
    jittered(
        delays
            .get(index)
            .or(delays.last())
            .copied()
            .unwrap_or(5_000),
    )
}

/// A receiver's `Retry-After`, no longer than the schedule's longest wait.
fn bounded_retry_after(delays: &[u64], asked: Duration) -> Duration {
    let longest = Duration::from_millis(delays.iter().copied().max().unwrap_or(86_400_000));
    asked.min(longest)
}

/// What a failed send means for the delivery.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The request never reached DSM or DSM refused it: try again later.
    NotSent,
    /// DSM may have posted: look before sending again.
    Ambiguous,
    /// DSM 411: slow this target down.
    RateLimited,
    /// The NAS's web server turned the call away (HTTP 429, 503): nothing was sent; try again
    /// no sooner than it asked.
    TurnedAway(Duration),
    /// DSM 410: split the chunk.
    TooLong,
    /// No retry can succeed.
    Permanent,
}

fn classify(error: &UpstreamError) -> Failure {
    match error {
        // A timeout, an answer that is not DSM's (a proxy's 504 page, a garbled body), or DSM's
        // "busy" (109-111, 118) may follow a call DSM carried out.
        error if error.may_have_been_carried_out() => Failure::Ambiguous,
        // The first arm takes every timeout and unreadable answer; a failed connection is left.
        UpstreamError::Timeout | UpstreamError::InvalidResponse(_) => Failure::Ambiguous,
        UpstreamError::Unreachable(_) => Failure::NotSent,
        UpstreamError::TurnedAway { retry_after, .. } => {
            Failure::TurnedAway(retry_after.unwrap_or_default())
        }
        // Busy: no concurrency slot was free, so nothing left the gateway.
        UpstreamError::Busy
        | UpstreamError::LoginBackoff { .. }
        | UpstreamError::LoginRefused { .. } => Failure::NotSent,
        // Chat not running (yet): a NAS starting up lists its APIs before Chat runs, and
        // answers 102 for them once listed (PROTOCOL.md [T4]). Tried again until it runs, or
        // until the delivery's age runs out, instead of failing the whole backlog at once.
        UpstreamError::NotListed { .. } => Failure::NotSent,
        // Found by the gateway before sending: nothing left it and no retry can change it.
        UpstreamError::Unsupported { .. } | UpstreamError::NotSendable(_) => Failure::Permanent,
        UpstreamError::Dsm { .. } => match error.refusal() {
            Some(Refusal::RateLimited) => Failure::RateLimited,
            Some(Refusal::TooLong) => Failure::TooLong,
            // No such API (Chat stopped, see `NotListed`), a session expired, interrupted or
            // seen from another address than its login's (the retry logs in again), or the
            // NAS's own failure: refused before it ran. Not 119 (`PermissionDenied`): it
            // reaches here only when the session was checked and found alive, or a new login
            // was refused the same way, which the reference reads as a request or permission
            // error (PROTOCOL.md [S3]), and a message retried for a day would hold back every
            // later one to its target.
            Some(Refusal::NoSuchApi | Refusal::SessionLost | Refusal::NasFailed) => {
                Failure::NotSent
            }
            _ => Failure::Permanent,
        },
    }
}

/// The worker's two sets of lanes: Chat's (channels, people, tokens, chatbots) and the
/// subscriptions' callbacks. Receivers that are slow or do not answer hold a lane up to
/// `subscriptions.timeout_ms` (15 s) per attempt: sharing the lanes, four of them stopped every
/// message to Chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Traffic {
    Chat,
    Callbacks,
}

impl Traffic {
    fn of(target: &str) -> Self {
        match crate::events::subscriptions::is_target(target) {
            true => Traffic::Callbacks,
            false => Traffic::Chat,
        }
    }

    fn targets(self) -> Targets<'static> {
        use crate::events::subscriptions::TARGET_PREFIX;
        match self {
            Traffic::Chat => Targets::NotStarting(TARGET_PREFIX),
            Traffic::Callbacks => Targets::Starting(TARGET_PREFIX),
        }
    }
}

/// Wakes a lane of each [`Traffic`], and the callback lane kept for receivers that answer
/// (on a wake of its own, so it never takes one meant for a lane that can send what came).
#[derive(Default)]
struct Wakes {
    chat: Notify,
    callbacks: Notify,
    answering: Notify,
}

impl Wakes {
    fn of(&self, traffic: Traffic) -> &Notify {
        match traffic {
            Traffic::Chat => &self.chat,
            Traffic::Callbacks => &self.callbacks,
        }
    }

    /// Work of `traffic`'s came: a lane of it, and the kept one for callbacks, look.
    fn rouse(&self, traffic: Traffic) {
        self.of(traffic).notify_one();
        if traffic == Traffic::Callbacks {
            self.answering.notify_one();
        }
    }
}

/// Shared by the handlers (enqueue) and the worker.
pub struct Outbox {
    store: Store,
    settings: DeliverySettings,
    wake: Wakes,
    stopping: AtomicBool,
    stopped: Notify,
    /// When the stop began: [`Self::shut_down`]'s grace counts from then.
    stop_began: std::sync::OnceLock<tokio::time::Instant>,
    /// The worker has ended (for a [`Self::shut_down`] that comes after it).
    worker_ended: AtomicBool,
    /// Rung for a target whenever this replica's worker records the final state of one of its
    /// deliveries.
    finished: FinishBells,
    metrics: Arc<Metrics>,
    /// How long a claim lasts without progress before another worker may take it over: it is
    /// renewed before every chunk (five upstream timeouts, at least 6.25 s), and a send is cut
    /// short before it ends ([`Self::send_budget_ms`]).
    lease_ms: i64,
    /// `subscriptions.max_age_secs` in ms: a subscription delivery's age limit, on retry too.
    subscription_max_age_ms: i64,
    /// Named channels looked up in the last minute, so a busy hook with a named target does
    /// not list DSM's channels before each message (and its receipt can name the channel).
    channel_names: moka::future::Cache<String, ChannelId>,
    /// The wall and monotonic clocks at the last look ([`Worker::follow_clock_steps`]); the
    /// lock holds the lanes' claims while stored times follow a step.
    clocks: tokio::sync::Mutex<(i64, std::time::Instant)>,
    /// Where the duplicate check of each uncertain send this process made starts, on the NAS's
    /// clock: (delivery, `uncertain_since`) → ms. See [`Outbox::check_window_start`].
    uncertain_windows: std::sync::Mutex<std::collections::HashMap<(String, i64), i64>>,
    /// Each target's turn to be sent to in this process ([`Outbox::hold_target`]).
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Targets this process knows may have unfinished deliveries (its own hand-overs, its
    /// worker's claims, the store's queue at start), each with a count of times noted: a
    /// synchronous send to one asks the store before it goes ([`Outbox::wait_turn`]).
    maybe_queued: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// More targets were noted than [`MAYBE_QUEUED_KEPT`]: the store is asked always.
    too_many_queued: AtomicBool,
}

/// Targets noted as maybe queued at most ([`Outbox::note_queued`]).
const MAYBE_QUEUED_KEPT: usize = 10_000;

/// Targets whose turn is kept before those no send holds are dropped ([`Outbox::hold_target`]).
const TURNS_KEPT: usize = 4_096;

/// A send's turn at its target ([`Outbox::hold_target`]), given back when dropped.
#[must_use = "the turn ends when it is dropped"]
pub enum TargetHold {
    Shared(tokio::sync::OwnedRwLockReadGuard<()>),
    Sole(tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// Uncertain sends whose window is remembered at most (then the memory starts over, and the
/// older ones are looked for over [`CHECK_MARGIN_OTHER_MS`]).
const UNCERTAIN_WINDOWS_KEPT: usize = 10_000;

/// How far the wall clock must move against the monotonic one between two looks to count as a
/// step (NTP slews at most half a millisecond a second).
const CLOCK_STEP_MS: i64 = 2_000;

/// How far the wall clock stepped between two readings of (wall ms, monotonic) against the
/// monotonic clock: 0 unless that is at least [`CLOCK_STEP_MS`].
fn wall_clock_step(
    (wall_before, mono_before): (i64, std::time::Instant),
    (wall, mono): (i64, std::time::Instant),
) -> i64 {
    let ran = mono.saturating_duration_since(mono_before).as_millis() as i64;
    let step = wall - (wall_before + ran);
    if step.abs() >= CLOCK_STEP_MS { step } else { 0 }
}

impl Outbox {
    pub fn new(
        store: Store,
        settings: DeliverySettings,
        subscriptions: &SubscriptionsSettings,
        metrics: Arc<Metrics>,
        upstream_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            lease_ms: (upstream_timeout.as_millis() as i64 * 5).max(6_250),
            subscription_max_age_ms: (subscriptions.max_age_secs as i64).saturating_mul(1000),
            store,
            settings,
            wake: Wakes::default(),
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
            stop_began: std::sync::OnceLock::new(),
            worker_ended: AtomicBool::new(false),
            finished: FinishBells::default(),
            metrics,
            channel_names: name_cache(),
            clocks: tokio::sync::Mutex::new((now_ms(), std::time::Instant::now())),
            uncertain_windows: Default::default(),
            turns: Default::default(),
            maybe_queued: Default::default(),
            too_many_queued: AtomicBool::new(false),
        })
    }

    /// Notes the targets the store has unfinished deliveries for (at start, before requests
    /// come: a synchronous send must not overtake what an earlier run queued).
    pub async fn load_queued_targets(&self) -> Result<(), StoreError> {
        for target in self.store.unfinished_targets().await? {
            self.note_queued(&target);
        }
        Ok(())
    }

    /// Notes that `target` may have unfinished deliveries. Subscriptions are left out: no
    /// synchronous send goes to them.
    pub fn note_queued(&self, target: &str) {
        if crate::events::subscriptions::is_target(target) {
            return;
        }
        let mut queued = self.maybe_queued.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = queued.get_mut(target) {
            *times = times.wrapping_add(1);
            return;
        }
        if queued.len() >= MAYBE_QUEUED_KEPT {
            // Past this many targets, every synchronous send asks the store instead.
            self.too_many_queued.store(true, Ordering::Relaxed);
            queued.clear();
            return;
        }
        queued.insert(target.to_owned(), 1);
    }

    /// After a delivery to `target` reached its final state: forgets the target when nothing
    /// of it is left, so later sends need not ask the store (and, during a store outage, are
    /// not refused for a queue long empty). A target noted again meanwhile is kept.
    pub async fn forget_if_done(&self, target: &str) {
        let Some(noted) = self.noted(target) else {
            return;
        };
        if let Ok(None) = self.store.last_unfinished(target, None).await {
            self.forget_noted(target, noted);
        }
    }

    /// How many times `target` was noted as maybe queued, if it is.
    fn noted(&self, target: &str) -> Option<u64> {
        self.maybe_queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .copied()
    }

    /// Forgets `target`, found with nothing queued after it was noted `noted` times, unless it
    /// was noted again meanwhile (queued after the store was read).
    fn forget_noted(&self, target: &str, noted: u64) {
        let mut queued = self.maybe_queued.lock().unwrap_or_else(|e| e.into_inner());
        if queued.get(target) == Some(&noted) {
            queued.remove(target);
        }
    }

    /// Whether a synchronous send asks the store whatever this process noted: on PostgreSQL
    /// (another replica may have queued for the target, and may be sending it now), or once
    /// too many targets were noted to keep.
    fn asks_store_always(&self) -> bool {
        self.store.backend() == crate::store::Backend::Postgres
            || self.too_many_queued.load(Ordering::Relaxed)
    }

    /// Waits, at most `patience`, until the deliveries of `target` the outbox had not finished
    /// when the wait began are finished: true then, false when some are still queued or being
    /// sent. Those committed later come after the send that waits, and are not waited for. A
    /// target this process has not seen queued is not looked up (on SQLite: one process has
    /// the store). This replica's worker says when it finishes one; the store is also read
    /// every 250 ms, since another replica's worker may be sending. A store that does not
    /// answer within the patience (at least a second) is unavailable: an error for a target
    /// this process noted, a turn for any other (on PostgreSQL, a store outage must not stop
    /// every synchronous send; another replica's queue may then be overtaken).
    pub async fn wait_turn(&self, target: &str, patience: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        // The newest delivery queued before the wait began, once read.
        let mut ahead = None;
        let bell = self.finished.bell(target);
        loop {
            let noted = self.noted(target);
            if noted.is_none() && !self.asks_store_always() {
                return Ok(true);
            }
            // Registered before the read, so a finish between the two is not missed.
            let finished = bell.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            // A target not noted here is asked about only on PostgreSQL, and sent to anyway
            // when the store cannot say: a store outage must not hold each such send long.
            let read_by = match (noted, ahead) {
                (None, None) => deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                _ => deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)),
            };
            let read = tokio::time::timeout_at(read_by, self.store.last_unfinished(target, ahead))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "no answer within delivery.queue_wait_ms to whether the target has \
                         queued messages"
                            .to_owned(),
                    ))
                });
            let last = match read {
                Ok(last) => last,
                Err(error) if noted.is_none() && ahead.is_none() => {
                    tracing::warn!(%error, %target, "the store cannot say whether the target has queued messages; sending");
                    return Ok(true);
                }
                Err(error) => return Err(error),
            };
            let Some(last) = last else {
                // Nothing left at all.
                if let (None, Some(noted)) = (ahead, noted) {
                    self.forget_noted(target, noted);
                }
                return Ok(true);
            };
            ahead.get_or_insert(last);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let nap = (deadline - now).min(Duration::from_millis(250));
            let _ = tokio::time::timeout(nap, finished).await;
        }
    }

    /// How long a synchronous send waits for its target's queue ([`Self::wait_turn`]).
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.settings.queue_wait_ms)
    }

    /// How long after a send with an unknown outcome the channel is first looked at: twice the
    /// upstream timeout (two fifths of the lease), so a call DSM was still working on when the
    /// gateway gave up has had as long again to land (a look that came first would not see it,
    /// and the chunk would be posted twice).
    fn settle_ms(&self) -> i64 {
        self.lease_ms * 2 / 5
    }

    /// How long one send may take: the lease less the settle time, so another worker that takes
    /// the delivery over when the lease ends (another replica, after a crash) looks for the post
    /// no sooner than the settle time after the send was cut off.
    fn send_budget_ms(&self) -> i64 {
        self.lease_ms - self.settle_ms()
    }

    /// Remembers where the duplicate check of a send this process began at `since` (its own
    /// clock) starts: the send placed on the NAS's clock by `nas_offset` as known now, less
    /// [`CHECK_MARGIN_MS`].
    pub fn note_uncertain_send(&self, id: &str, since: i64, nas_offset: Option<i64>) {
        let Some(offset) = nas_offset else { return };
        let mut windows = self
            .uncertain_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if windows.len() >= UNCERTAIN_WINDOWS_KEPT {
            windows.clear();
        }
        windows.insert(
            (id.to_owned(), since),
            since.saturating_add(offset) - CHECK_MARGIN_MS,
        );
    }

    /// Where the duplicate check for the send of `delivery` begun at `since` starts, on the
    /// NAS's clock (posts are dated by it): as noted when this process made the send; else
    /// `since` placed by `nas_offset` (this process's distance from the NAS's clock, known
    /// once any answer carried a `Date`: the check's own reads do) less
    /// [`CHECK_MARGIN_OTHER_MS`]. Before, a send another process made was looked for over
    /// the five minutes before it, and an earlier synchronous post of the same text (which only
    /// the process that made it remembers) was taken for it: the message was never posted,
    /// and its delivery said `delivered`.
    fn check_window_start(&self, delivery: &str, since: i64, nas_offset: Option<i64>) -> u64 {
        let noted = self
            .uncertain_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(delivery.to_owned(), since))
            .copied();
        noted
            .unwrap_or_else(|| {
                since.saturating_add(nas_offset.unwrap_or(0)) - CHECK_MARGIN_OTHER_MS
            })
            .max(0) as u64
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Commits the message; the worker is woken at once. Returns the delivery id.
    pub async fn enqueue(
        &self,
        caller: &str,
        job: &Job,
        parts: Parts,
    ) -> Result<String, StoreError> {
        let new = self.new_delivery(caller, job, parts.into_vec());
        self.store.enqueue(&new).await?;
        self.note_queued(&new.target);
        self.wake.rouse(Traffic::of(&new.target));
        Ok(new.id)
    }

    /// Commits the message of a sender's event, unless the same caller handed that event over
    /// before (a redelivery, a second copy from a cluster): then nothing is stored and the
    /// first delivery's id is answered. Returns the delivery id and whether it was a repeat.
    pub async fn enqueue_event(
        &self,
        caller: &str,
        job: &Job,
        parts: Parts,
        event: &EventKey,
    ) -> Result<(String, bool), StoreError> {
        let new = self.new_delivery(caller, job, parts.into_vec());
        match self.store.enqueue_event(&new, event).await? {
            Enqueued::New => {
                self.note_queued(&new.target);
                self.wake.rouse(Traffic::of(&new.target));
                Ok((new.id, false))
            }
            Enqueued::Repeat(first) => Ok((first, true)),
        }
    }

    /// Takes over a synchronous send whose part went unanswered (DSM may have posted it):
    /// `done` are the texts of the parts it posted, with their post ids, `left` the unanswered
    /// part and the ones after it. The outbox records the posted parts as delivered, looks for
    /// the unanswered one (sent after `since`) before sending it, and sends the rest: each
    /// part once, as for a message accepted with `respond-async`. Returns the delivery id:
    /// with `event`, the earlier delivery's when the caller handed that event over before.
    pub async fn take_over(
        &self,
        caller: &str,
        job: &Job,
        done: Vec<(String, Vec<(i64, i64)>)>,
        left: Vec<String>,
        (unanswered_since, nas_offset): (Option<i64>, Option<i64>),
        event: Option<&EventKey>,
    ) -> Result<String, StoreError> {
        let posted: Vec<(i64, i64, Option<i64>)> = done
            .iter()
            .enumerate()
            .flat_map(|(chunk, (_, posts))| {
                posts
                    .iter()
                    .map(move |&(recipient, post_id)| (chunk as i64, recipient, Some(post_id)))
            })
            .collect();
        let chunks = done.into_iter().map(|(text, _)| text).chain(left).collect();
        let new = self.new_delivery(caller, job, chunks);
        // An unanswered part is looked for once it has had time to land; a part DSM turned
        // away (busy, rate limited) is sent again after the first back-off.
        let wait = match unanswered_since {
            Some(_) => self.settle_ms(),
            None => backoff(1).as_millis() as i64,
        };
        match self
            .store
            .enqueue_resumed(&new, &posted, unanswered_since, now_ms() + wait, event)
            .await?
        {
            Enqueued::New => {
                self.note_queued(&new.target);
                if let Some(since) = unanswered_since {
                    self.note_uncertain_send(&new.id, since, nas_offset);
                }
                self.wake.rouse(Traffic::of(&new.target));
                Ok(new.id)
            }
            Enqueued::Repeat(first) => Ok(first),
        }
    }

    /// This process's turn to send to `target`, held until the send ends: a message of
    /// `several` posts sends alone, single posts side by side, so the parts of a long message
    /// are consecutive among this process's sends (synchronous ones and the outbox's).
    /// Otherwise two long messages sent at once interleaved their parts. Other replicas'
    /// sends, and people in the channel, are not held.
    pub async fn hold_target(&self, target: &str, several: bool) -> TargetHold {
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            match turns.get(target) {
                Some(turn) => turn.clone(),
                None => {
                    if turns.len() >= TURNS_KEPT {
                        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
                    }
                    let turn = Arc::new(tokio::sync::RwLock::new(()));
                    turns.insert(target.to_owned(), turn.clone());
                    turn
                }
            }
        };
        match several {
            true => TargetHold::Sole(turn.write_owned().await),
            false => TargetHold::Shared(turn.read_owned().await),
        }
    }

    /// The turn for a synchronous send of `text` to `target` ([`Outbox::hold_target`]):
    /// alone when it may be several posts. Bytes are at least characters, so a text within
    /// the limit in bytes is one post.
    pub async fn hold_target_for_text(&self, target: &str, text: &str) -> TargetHold {
        let several = text.len() > self.settings.max_message_chars;
        self.hold_target(target, several).await
    }

    /// How texts are cut into posts (`delivery.max_message_chars`, `.max_message_parts`).
    pub fn part_limits(&self) -> PartLimits {
        PartLimits {
            max_chars: self.settings.max_message_chars,
            max_parts: self.settings.max_message_parts,
        }
    }

    fn new_delivery(&self, caller: &str, job: &Job, chunks: Vec<String>) -> NewDelivery {
        let now = now_ms();
        NewDelivery {
            id: uuid::Uuid::new_v4().to_string(),
            caller: caller.to_owned(),
            target: job.target(),
            request: serde_json::to_string(job).unwrap_or_default(),
            // A part of only whitespace is not posted (the posted ones never are); a file sent
            // alone is one empty part.
            chunks: match chunks
                .into_iter()
                .filter(|part| !crate::domain::is_blank(part))
                .collect::<Vec<_>>()
            {
                none if none.is_empty() && job.is_file_alone("") => vec![String::new()],
                parts => parts,
            },
            now_ms: now,
            expires_at_ms: now + self.max_age_ms(),
        }
    }

    pub fn max_age_ms(&self) -> i64 {
        (self.settings.max_age_secs as i64).saturating_mul(1000)
    }

    /// The age limit of a delivery to `target`: `subscriptions.max_age_secs` for an event
    /// POSTed to a subscription, `delivery.max_age_secs` for a message to Chat.
    pub fn max_age_ms_for(&self, target: &str) -> i64 {
        if crate::events::subscriptions::is_target(target) {
            self.subscription_max_age_ms
        } else {
            self.max_age_ms()
        }
    }

    /// True once `shut_down` has begun: the store is about to close, so background tasks
    /// that write to it end instead of failing against a closed pool.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Wakes the worker (a delivery was put back in the queue).
    pub fn wake(&self) {
        for traffic in [Traffic::Chat, Traffic::Callbacks] {
            self.wake.rouse(traffic);
        }
    }

    /// The delivery once it is delivered, failed or cancelled, or as it is after `patience`
    /// (`None`: no such delivery). This replica's worker says when it finishes one; the store
    /// is also read every 250 ms, since another replica's worker may be the one sending it.
    pub async fn settled(
        &self,
        id: &str,
        patience: Duration,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        let settled =
            |row: &Option<DeliveryRow>| row.as_ref().is_none_or(|r| !r.state.is_unfinished());
        // The first read says which target's bell to listen to.
        let first = self.store.delivery(id).await?;
        let bell = match &first {
            Some(row) if !settled(&first) => self.finished.bell(&row.target),
            _ => return Ok(first),
        };
        loop {
            // Registered before the read, so a finish between the two is not missed.
            let finished = bell.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let row = self.store.delivery(id).await?;
            let now = tokio::time::Instant::now();
            if settled(&row) || now >= deadline {
                return Ok(row);
            }
            let nap = (deadline - now).min(Duration::from_millis(250));
            let _ = tokio::time::timeout(nap, finished).await;
        }
    }

    /// The channel a delivery's posts went to, when it is known here: a channel target's, or
    /// a named channel's as looked up in the last minute (a Discord-style receipt names it).
    pub async fn posted_channel(&self, row: &DeliveryRow) -> Option<ChannelId> {
        match serde_json::from_str::<Job>(&row.request).ok()? {
            Job::Channel { channel_id, .. } => Some(channel_id),
            Job::ChannelNamed { channel } => self.channel_names.get(&channel).await,
            _ => None,
        }
    }

    /// Stops claiming new work, at once: the delivery being sent finishes its chunk, and the
    /// worker hands the rest back while the HTTP requests drain (SIGTERM), not after them, so
    /// the whole stop fits in `server.shutdown_timeout_secs` and the DSM logout.
    pub fn begin_stopping(&self) {
        self.stop_began.get_or_init(tokio::time::Instant::now);
        self.stopping.store(true, Ordering::SeqCst);
        for wake in [&self.wake.chat, &self.wake.callbacks, &self.wake.answering] {
            wake.notify_waiters();
            wake.notify_one();
        }
    }

    /// Stops claiming new work (if not stopped already) and returns once the worker has
    /// released its leases, or `grace` after the stop began.
    pub async fn shut_down(&self, grace: Duration) {
        let stopped = self.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        self.begin_stopping();
        if self.worker_ended.load(Ordering::SeqCst) {
            return;
        }
        let began = *self.stop_began.get_or_init(tokio::time::Instant::now);
        let _ = tokio::time::timeout_at(began + grace, stopped).await;
    }

    /// Starts the worker on the current thread's runtime.
    pub fn spawn_worker(
        self: &Arc<Self>,
        upstream: Arc<DsmShared>,
        tokens: BTreeMap<String, SecretString>,
        subscriptions: SubscriptionsSettings,
        callbacks: awc::Client,
    ) {
        let worker = Worker {
            subscriptions,
            http: callbacks,
            outbox: self.clone(),
            chat: upstream.client(),
            account: upstream.account().to_owned(),
            tokens,
            owner: uuid::Uuid::new_v4().to_string(),
            user_names: name_cache(),
        };
        crate::store::task::spawn(worker.run());
    }
}

struct Worker {
    outbox: Arc<Outbox>,
    chat: DsmClient,
    account: String,
    tokens: BTreeMap<String, SecretString>,
    subscriptions: SubscriptionsSettings,
    /// The client for subscription deliveries (not the NAS's).
    http: awc::Client,
    /// This process's lease owner id; each lane's is this and its number.
    owner: String,
    /// Named users looked up in the last minute (channels: [`Outbox::channel_names`]).
    user_names: moka::future::Cache<String, UserId>,
}

fn name_cache<T: Clone + Send + Sync + 'static>() -> moka::future::Cache<String, T> {
    moka::future::Cache::builder()
        .max_capacity(1_000)
        .time_to_live(Duration::from_secs(60))
        .build()
}

/// How one claim ended.
enum Outcome {
    Delivered,
    Retry {
        at: i64,
        error: ApiError,
    },
    Failed(ApiError),
    /// Not sent: the subscription it is for is disabled (failed until it is enabled again).
    Paused {
        subscription_id: String,
        error: ApiError,
    },
    /// Shutting down, or the lease was lost: leave the row to its next owner.
    HandBack,
    /// Not to be tried before `at` (a send with an unknown outcome settling).
    NotYet {
        at: i64,
    },
}

impl Worker {
    async fn run(self) {
        let store = self.outbox.store.clone();
        // A SQLite file has one gateway: claims left by a previous process (killed) are void.
        if store.backend() == crate::store::Backend::Sqlite {
            // From now, not from the send's start: the process may have died at any point of it.
            match store
                .release_all_leases(
                    now_ms() + self.outbox.settle_ms(),
                    crate::events::subscriptions::TARGET_PREFIX,
                )
                .await
            {
                Ok(n) if n > 0 => tracing::info!(
                    taken_back = n,
                    "deliveries left sending by a previous run are queued again"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot take back earlier claims"),
            }
        }
        // Lanes on this one task: each claims and sends on its own, and the claim gives each a
        // different target, so a slow or paced target holds up only its lane. Chat's lanes and
        // the subscriptions' are apart ([`Traffic`]).
        // Each lane holds its leases as its own owner: a lane's lease that ran out (a long look
        // at DSM, a slow pace) may be taken over by a sibling lane, and the first one's writes
        // must then find it gone, as another replica's would.
        let chat_lanes = self.outbox.settings.concurrency.max(1);
        let callback_lanes = self.subscriptions.concurrency.max(1);
        let lanes: Vec<(String, Traffic, Targets, &Notify, bool)> = (0..chat_lanes
            + callback_lanes)
            .map(|lane| {
                let (traffic, first) = match lane.checked_sub(chat_lanes) {
                    None => (Traffic::Chat, lane == 0),
                    Some(nth) => (Traffic::Callbacks, nth == 0),
                };
                // With two callback lanes or more, the second is kept for receivers whose
                // last delivery did not fail: those that time out, retried together, took
                // every lane for `subscriptions.timeout_ms` and held the others' events.
                let (targets, woken_by) = match (traffic, lane.checked_sub(chat_lanes)) {
                    (Traffic::Callbacks, Some(1)) => (
                        Targets::AnsweringSubscriptions(
                            crate::events::subscriptions::TARGET_PREFIX,
                        ),
                        &self.outbox.wake.answering,
                    ),
                    _ => (traffic.targets(), self.outbox.wake.of(traffic)),
                };
                (
                    format!("{}/{lane}", self.owner),
                    traffic,
                    targets,
                    woken_by,
                    first,
                )
            })
            .collect();
        futures_util::future::join_all(lanes.iter().map(
            |(owner, traffic, targets, woken_by, first)| {
                self.lane(owner, *traffic, *targets, woken_by, *first)
            },
        ))
        .await;
        let mut handed_back = 0;
        for (owner, ..) in &lanes {
            match store.release_leases(owner).await {
                Ok(n) => handed_back += n,
                Err(error) => {
                    tracing::warn!(%error, "delivery worker could not hand back its leases")
                }
            }
        }
        if handed_back > 0 {
            tracing::info!(handed_back, "delivery worker stopped");
        } else {
            tracing::info!("delivery worker stopped");
        }
        self.outbox.worker_ended.store(true, Ordering::SeqCst);
        self.outbox.stopped.notify_waiters();
    }

    /// Moves the store's times with a step of the wall clock since the last look (see
    /// [`Store::clock_stepped`]), before a claim compares them with the clock.
    async fn follow_clock_steps(&self) {
        let mut last = self.outbox.clocks.lock().await;
        let reading = (now_ms(), std::time::Instant::now());
        let step = wall_clock_step(*last, reading);
        *last = reading;
        if step == 0 {
            return;
        }
        tracing::warn!(
            step_ms = step,
            "the wall clock stepped: the outbox's pacing, retry and lease times follow it"
        );
        let prefix = format!("{}/", self.owner);
        if let Err(error) = self
            .outbox
            .store
            .clock_stepped(step, reading.0, &prefix, self.outbox.lease_ms)
            .await
        {
            tracing::warn!(%error, "the outbox's times could not follow the clock's step");
        }
    }

    /// Claims and sends `traffic`'s deliveries among `targets` until the outbox stops.
    /// `poller`: this lane also watches the clock (its traffic's deliveries coming due; Chat's
    /// poller the queue metrics); the others wait to be woken (`woken_by`), when a message is
    /// handed over or a lane took one, so an idle gateway asks its store no more often than
    /// with one lane of each.
    async fn lane(
        &self,
        owner: &str,
        traffic: Traffic,
        targets: Targets<'_>,
        woken_by: &Notify,
        poller: bool,
    ) {
        let store = &self.outbox.store;
        let wake = woken_by;
        // Another lane of the traffic may take the next target while this one sends.
        let pass_on = self.outbox.wake.of(traffic);
        let stopping = || self.outbox.stopping.load(Ordering::SeqCst);
        let mut gauges_at = 0;
        let mut finished_gauges_at = 0;
        let mut claim_now = poller;
        loop {
            if !claim_now {
                // Registered before the check, so a stop in between still wakes it.
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if stopping() {
                    break;
                }
                woken.await;
            }
            if stopping() {
                break;
            }
            claim_now = poller;
            let now = now_ms();
            if poller && traffic == Traffic::Chat && now - gauges_at >= 2_000 {
                gauges_at = now;
                // The finished states walk the retained history: every few minutes only.
                const FINISHED_GAUGES_EVERY_MS: i64 = 5 * 60_000;
                let finished = now - finished_gauges_at >= FINISHED_GAUGES_EVERY_MS;
                if finished {
                    finished_gauges_at = now;
                }
                self.update_gauges(now, finished).await;
            }
            self.follow_clock_steps().await;
            let now = now_ms();
            match store
                .claim_among(owner, now, now + self.outbox.lease_ms, targets)
                .await
            {
                Ok(Some(row)) => {
                    // Perhaps another replica's, or an earlier run's: sends wait for it.
                    self.outbox.note_queued(&row.target);
                    // Another lane may take the next target meanwhile.
                    pass_on.notify_one();
                    self.deliver(row, owner).await;
                    claim_now = true;
                }
                Ok(None) if poller => {
                    let wait = match store.next_due_among(targets).await {
                        Ok(Some(due)) if due > now => {
                            Duration::from_millis((due - now) as u64).min(POLL)
                        }
                        Ok(Some(_)) => Duration::from_millis(200).min(POLL),
                        _ => POLL,
                    };
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "delivery worker cannot reach the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Queue depth and oldest age per state, for the metrics: the unfinished states each
    /// time, the finished ones with `finished` (their gauges keep the last values between).
    async fn update_gauges(&self, now: i64, finished: bool) {
        let store = &self.outbox.store;
        // A small table: every time, so the alert on it is prompt.
        if let Ok(disabled) = store.disabled_subscriptions().await {
            self.outbox.metrics.subscriptions_disabled(disabled);
        }
        let (stats, states) = if finished {
            let (Ok(mut stats), Ok(done)) =
                (store.queue_stats().await, store.finished_stats().await)
            else {
                return;
            };
            stats.extend(done);
            (stats, &DeliveryState::ALL[..])
        } else {
            let Ok(stats) = store.queue_stats().await else {
                return;
            };
            (stats, &[DeliveryState::Queued, DeliveryState::Sending][..])
        };
        for &state in states {
            let found = stats.iter().find(|s| s.state == state);
            let depth = found.map_or(0, |s| s.count);
            let age = found
                .and_then(|s| s.oldest_created_at)
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            self.outbox
                .metrics
                .delivery_queue(state.as_str(), depth, age);
        }
    }

    async fn deliver(&self, row: DeliveryRow, owner: &str) {
        let store = &self.outbox.store;
        let outcome = match serde_json::from_str::<Job>(&row.request) {
            Ok(job) => self.attempt(&job, row.clone(), owner).await,
            Err(error) => Outcome::Failed(ApiError::new(
                ProblemCode::Internal,
                format!("the stored request cannot be read: {error}"),
            )),
        };
        let now = now_ms();
        let mut paused_for = None;
        let (state, at, error, label) = match outcome {
            Outcome::Delivered => (DeliveryState::Delivered, now, None, "delivered"),
            Outcome::Failed(error) => (DeliveryState::Failed, now, Some(error), "failed"),
            Outcome::Paused {
                subscription_id,
                error,
            } => {
                paused_for = Some(subscription_id);
                (DeliveryState::Failed, now, Some(error), "failed")
            }
            Outcome::Retry { at, error } if at < row.expires_at => {
                (DeliveryState::Queued, at, Some(error), "retry")
            }
            Outcome::Retry { error, .. } => (
                DeliveryState::Failed,
                now,
                Some(ApiError::new(
                    ProblemCode::DeliveryExpired,
                    format!(
                        "not delivered within {}; last error: {error}",
                        if crate::events::subscriptions::is_target(&row.target) {
                            "subscriptions.max_age_secs"
                        } else {
                            "delivery.max_age_secs"
                        }
                    ),
                )),
                "expired",
            ),
            Outcome::HandBack => (DeliveryState::Queued, now, None, "handed_back"),
            Outcome::NotYet { at } => (DeliveryState::Queued, at, None, "handed_back"),
        };
        self.outbox.metrics.delivery_attempt(label);
        if state == DeliveryState::Delivered {
            self.outbox
                .metrics
                .delivery_latency(Duration::from_millis((now - row.created_at).max(0) as u64));
        }
        let problem = error
            .as_ref()
            .and_then(|e| serde_json::to_string(&e.problem()).ok());
        if let Some(error) = &error {
            // A NAS down for a day is tried every 15 s: the 1st, 2nd, 4th, 8th… attempt that
            // leaves a delivery queued is logged at info, the others at debug.
            let attempts = row.attempts;
            if label != "retry" || (attempts > 0 && (attempts as u64).is_power_of_two()) {
                tracing::info!(delivery = %row.id, outcome = label, attempts, %error, "delivery attempt");
            } else {
                tracing::debug!(delivery = %row.id, outcome = label, attempts, %error, "delivery attempt");
            }
        }
        let recorded = match (&paused_for, &problem) {
            // Enabled again meanwhile: queued at once, not left failed (see the store).
            (Some(subscription_id), Some(problem)) => {
                store
                    .finish_while_disabled(&row.id, owner, subscription_id, problem, now)
                    .await
            }
            _ => {
                store
                    .finish(&row.id, owner, state, at, problem.as_deref(), now)
                    .await
            }
        };
        match recorded {
            Ok(true) if state != DeliveryState::Queued => {
                self.outbox.finished.ring(&row.target);
                self.outbox.forget_if_done(&row.target).await;
            }
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %row.id, "lease lost before the outcome was recorded")
            }
            Err(error) => {
                tracing::warn!(delivery = %row.id, %error, "cannot record a delivery outcome; the lease will expire")
            }
        }
    }

    fn retry(&self, row: &DeliveryRow, error: ApiError) -> Outcome {
        Outcome::Retry {
            at: now_ms() + backoff(row.attempts).as_millis() as i64,
            error,
        }
    }

    /// Sends the chunks not yet posted, in order.
    async fn attempt(&self, job: &Job, mut row: DeliveryRow, owner: &str) -> Outcome {
        if let Job::Subscription {
            subscription_id,
            event_id,
        } = job
        {
            return self
                .attempt_subscription(subscription_id, *event_id, &row, owner)
                .await;
        }
        // A send whose outcome is unknown may still land: DSM may be carrying it out still,
        // after the gateway gave up on it or died (a restart queues its claims again at once).
        // It is not looked for before it has had the time to.
        if let Some(since) = row.uncertain_since {
            let settled = since + self.outbox.settle_ms();
            if now_ms() < settled {
                return Outcome::NotYet { at: settled };
            }
        }
        let store = &self.outbox.store;
        let mut posted = job.chunks_done(&row);
        let (mut channel, _turn) = match self.take_turn(job, &row, posted).await {
            Ok(taken) => taken,
            Err(outcome) => return outcome,
        };
        let mut uncertain = row.uncertain_since;
        // An uncertain chatbot send found for some recipients of a part: it may have posted
        // the next part to them too.
        let mut got_past: Option<i64> = None;
        while posted < row.chunks.len() {
            if self.outbox.stopping.load(Ordering::SeqCst) {
                return Outcome::HandBack;
            }
            let chunk = row.chunks[posted].clone();
            if !job.uses_token() && channel.is_none() {
                match self.channel_of(job, &row).await {
                    Ok(id) => channel = Some(id),
                    Err(outcome) => return outcome,
                }
            }
            if let Some(since) = uncertain {
                let found = match self
                    .look_for_posts(
                        job,
                        channel,
                        (&row.id, posted as i64),
                        &row.posted_to,
                        &chunk,
                        since,
                    )
                    .await
                {
                    Ok(found) => found,
                    Err(error) => return self.failed_send(job, &row, error),
                };
                if !found.posts.is_empty() {
                    let complete =
                        found.posts.len() >= job.recipients_left(posted as i64, &row.posted_to);
                    let more = posted + 1 < row.chunks.len();
                    tracing::info!(delivery = %row.id, chunk = posted, posts = found.posts.len(), "an uncertain send had posted: not sending it again");
                    if let Err(error) = store
                        .record_found_posts(
                            &row.id,
                            owner,
                            posted as i64,
                            &found.posts,
                            complete && more,
                            now_ms(),
                        )
                        .await
                    {
                        return self.store_trouble(&row, error);
                    }
                    row.posted_to.extend(
                        found
                            .posts
                            .iter()
                            .map(|&(recipient, _)| (posted as i64, recipient)),
                    );
                    if complete {
                        // The send got past this part, so the next one may have
                        // landed too (a cut-off synchronous send posts them in a row):
                        // it is looked for as well.
                        posted += 1;
                        continue;
                    }
                    // The recipients without a post get it now. The send got past this
                    // part for the others, so the next part is looked for too.
                    got_past = Some(since);
                }
                if found.blind {
                    // Some recipient's post could not be looked for: re-send and say so on
                    // the delivery.
                    if let Err(error) = store.clear_uncertain(&row.id, owner, true).await {
                        return self.store_trouble(&row, error);
                    }
                }
            }
            // The send's budget counts from before the lease is renewed, not from when the
            // store confirmed it: a slow store must not let the send outlive the lease.
            let renewed = tokio::time::Instant::now();
            let now = now_ms();
            match store
                .mark_uncertain(&row.id, owner, now, now + self.outbox.lease_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Outcome::HandBack,
                Err(error) => return self.store_trouble(&row, error),
            }
            self.outbox
                .note_uncertain_send(&row.id, now, self.chat.nas_clock_offset_ms());
            let first = posted == 0;
            // A chatbot chunk retried after some recipients failed goes to those alone.
            let job = &job.left_for(posted as i64, &row.posted_to);
            // The send ends before the lease just renewed does: once it expires another worker
            // (another replica on PostgreSQL) may take the delivery over and post this chunk
            // too. One send may chain several exchanges (the API list, a new login, the call);
            // cut short, it is an unknown outcome, and the next attempt looks before posting.
            let budget = Duration::from_millis(self.outbox.send_budget_ms() as u64);
            let sent =
                tokio::time::timeout_at(renewed + budget, self.send(job, channel, &chunk, first))
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout));
            match sent {
                Ok(posts) => {
                    if let Err(error) = store
                        .record_post(&row.id, owner, posted as i64, &posts.sent, now_ms())
                        .await
                    {
                        return self.store_trouble(&row, error);
                    }
                    posted += 1;
                    uncertain = got_past.take();
                    if !posts.failed.is_empty() {
                        let detail = format!("DSM did not deliver to: {}", posts.failed.join("; "));
                        // As the synchronous route: a 404 only when it reached none of them
                        // (and never for a hook's, whose recipients are its configuration).
                        return Outcome::Failed(
                            if posts.sent.is_empty() && !callers::is_hook(&row.caller) {
                                ApiError::recipients_refused(
                                    detail,
                                    posts.failed.iter().map(String::as_str),
                                )
                            } else {
                                ApiError::new(ProblemCode::UpstreamRejectedInput, detail)
                            },
                        );
                    }
                    if job.uses_token() {
                        // Pace the token: across deliveries through the target row, between
                        // the chunks of this one by waiting.
                        let interval = self.interval_ms(0);
                        let _ = store.pace_target(&row.target, now_ms() + interval, 0).await;
                        if posted < row.chunks.len() {
                            tokio::time::sleep(Duration::from_millis(interval as u64)).await;
                        }
                    }
                }
                Err(error) => {
                    if let Some(outcome) = self
                        .after_failed_send(job, error, &mut row, owner, posted)
                        .await
                    {
                        return outcome;
                    }
                    // Halved: its first half is sent next, with nothing uncertain.
                    uncertain = None;
                }
            }
        }
        Outcome::Delivered
    }

    /// The delivery's turn at its target (see [`Outbox::hold_target`]), with the id of a
    /// channel it names by name (whose turn is its id's, which the API's sends to it take).
    /// Not overlapping a synchronous send's long message to the target, nor letting one into
    /// this one's. Waited for a third of the lease at most, then handed back: the claim ran out
    /// while its lane waited, and other lanes took the same delivery over and waited too,
    /// while other targets' messages waited for a lane.
    async fn take_turn(
        &self,
        job: &Job,
        row: &DeliveryRow,
        posted: usize,
    ) -> Result<(Option<ChannelId>, TargetHold), Outcome> {
        let mut channel = None;
        let mut turn_target = Cow::Borrowed(row.target.as_str());
        if matches!(job, Job::ChannelNamed { .. }) && posted < row.chunks.len() {
            let id = self.channel_of(job, row).await?;
            channel = Some(id);
            let by_id = Job::Channel {
                channel_id: id,
                thread_id: None,
            };
            turn_target = Cow::Owned(by_id.target());
        }
        let several = row.chunks.len().saturating_sub(posted) > 1;
        let turn = tokio::time::timeout(
            Duration::from_millis((self.outbox.lease_ms / 3).max(1) as u64),
            self.outbox.hold_target(&turn_target, several),
        )
        .await
        .map_err(|_| Outcome::NotYet { at: now_ms() })?;
        Ok((channel, turn))
    }

    /// What DSM's refusal of the chunk `posted` means for the delivery: its outcome, or `None`
    /// when the chunk was too long and is now halved in `row`, to be sent next.
    async fn after_failed_send(
        &self,
        job: &Job,
        error: UpstreamError,
        row: &mut DeliveryRow,
        owner: &str,
        posted: usize,
    ) -> Option<Outcome> {
        let store = &self.outbox.store;
        let failure = classify(&error);
        if failure != Failure::Ambiguous {
            let _ = store.clear_uncertain(&row.id, owner, false).await;
        }
        Some(match failure {
            // The mark stays: the next attempt looks before sending, once the call has had
            // time to land.
            Failure::Ambiguous => {
                let wait = backoff(row.attempts).as_millis() as i64;
                Outcome::Retry {
                    at: now_ms() + wait.max(self.outbox.settle_ms()),
                    error: error.into(),
                }
            }
            Failure::TooLong => {
                let Some((parts, _)) = crate::chunking::halve(&row.chunks[posted], usize::MAX)
                else {
                    return Some(Outcome::Failed(error.into()));
                };
                row.chunks.splice(posted..=posted, parts);
                match store.replace_chunks(&row.id, owner, &row.chunks).await {
                    Ok(true) => return None,
                    Ok(false) => Outcome::HandBack,
                    Err(error) => self.store_trouble(row, error),
                }
            }
            Failure::RateLimited => {
                let penalty = store.target_penalty(&row.target).await.unwrap_or(0);
                let penalty = (penalty * 2).clamp(500, 30_000);
                let _ = store
                    .pace_target(&row.target, now_ms() + self.interval_ms(penalty), penalty)
                    .await;
                Outcome::Retry {
                    at: now_ms(),
                    error: error.into(),
                }
            }
            Failure::NotSent => self.retry(row, error.into()),
            Failure::TurnedAway(asked) => {
                let wait = backoff(row.attempts).max(asked);
                Outcome::Retry {
                    at: now_ms() + wait.as_millis() as i64,
                    error: error.into(),
                }
            }
            Failure::Permanent => Outcome::Failed(job.refusal(&row.caller, error)),
        })
    }

    /// One signed POST of an event to a subscription, with the Standard Webhooks etiquette:
    /// `410 Gone` disables the subscription at once; `429` is a request to wait (its
    /// `Retry-After`) and does not count as a failure; every other failure counts towards
    /// `subscriptions.max_failures`, and the next attempt waits the schedule's delay for the
    /// failures in a row (or the receiver's longer `Retry-After` on 502, 503, 504).
    async fn attempt_subscription(
        &self,
        id: &str,
        event_id: i64,
        row: &DeliveryRow,
        owner: &str,
    ) -> Outcome {
        let store = &self.outbox.store;
        let failed = |detail: String| {
            Outcome::Failed(ApiError::new(
                ProblemCode::SubscriptionDeliveryFailed,
                detail,
            ))
        };
        let subscription = match store.subscription(id).await {
            Ok(Some(s)) if s.enabled => s,
            Ok(Some(s)) => {
                return Outcome::Paused {
                    subscription_id: s.id,
                    error: ApiError::new(
                        ProblemCode::SubscriptionDeliveryFailed,
                        format!(
                            "the subscription is disabled: {}",
                            s.disabled_reason.unwrap_or_default()
                        ),
                    ),
                };
            }
            Ok(None) => return failed("the subscription was deleted".into()),
            Err(error) => return self.store_trouble(row, error),
        };
        let Some(body) = row.chunks.first() else {
            return failed("the stored delivery has no body".into());
        };
        let timeout = Duration::from_millis(self.subscriptions.timeout_ms);
        // The lease must outlast the request, or another replica could send it too: the
        // receiver's address lookup and the POST each have `timeout`.
        let now = now_ms();
        let lease_until = now + self.outbox.lease_ms + 2 * timeout.as_millis() as i64;
        match store.mark_uncertain(&row.id, owner, now, lease_until).await {
            Ok(true) => {}
            Ok(false) => return Outcome::HandBack,
            Err(error) => return self.store_trouble(row, error),
        }
        let sent = post_signed(
            &self.http,
            &subscription,
            event_id,
            body,
            &self.subscriptions,
            timeout,
        )
        .await;
        // Receivers drop repeats by `webhook-id`: a retry after an unknown outcome is safe.
        let _ = store.clear_uncertain(&row.id, owner, false).await;
        match sent {
            SubscriptionSent::Accepted(_) => {
                if let Err(error) = store.subscription_succeeded(id, event_id).await {
                    tracing::warn!(subscription = %id, %error, "cannot record a subscription's success");
                }
                Outcome::Delivered
            }
            SubscriptionSent::Failed(failed) => self.subscription_refused(id, row, failed).await,
        }
    }

    async fn subscription_refused(
        &self,
        id: &str,
        row: &DeliveryRow,
        failed: NotDelivered,
    ) -> Outcome {
        let store = &self.outbox.store;
        let delays = &self.subscriptions.retry_delays_ms;
        let error = ApiError::new(
            ProblemCode::SubscriptionDeliveryFailed,
            failed.reason.clone(),
        );
        let asked = failed
            .retry_after
            .map(|wait| bounded_retry_after(delays, wait));
        match failed.status {
            Some(410) => {
                let reason = "the receiver answered 410 Gone";
                match store
                    .disable_subscription(id, &row.target, reason, now_ms())
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(subscription = %id, "subscription disabled: {reason}");
                        Outcome::Failed(error)
                    }
                    Err(store_error) => self.store_trouble(row, store_error),
                }
            }
            Some(429) => Outcome::Retry {
                // At least a second: a `Retry-After: 0` (or a date gone by) had the lane call
                // the receiver again at once, as fast as it answered, for as long as it did.
                at: now_ms()
                    + millis(asked.map_or_else(
                        || subscription_delay(delays, row.attempts),
                        |wait| wait.max(Duration::from_secs(1)),
                    )),
                error,
            },
            _ => match store
                .subscription_failed(
                    id,
                    &row.target,
                    i64::from(self.subscriptions.max_failures),
                    &failed.reason,
                    now_ms(),
                )
                .await
            {
                Ok((_, true)) => {
                    tracing::warn!(subscription = %id, reason = %failed.reason, "subscription disabled after repeated failures");
                    Outcome::Failed(error)
                }
                Ok((failures, false)) => {
                    let wait = subscription_delay(delays, failures).max(asked.unwrap_or_default());
                    Outcome::Retry {
                        at: now_ms() + millis(wait),
                        error,
                    }
                }
                Err(store_error) => self.store_trouble(row, store_error),
            },
        }
    }

    fn failed_send(&self, job: &Job, row: &DeliveryRow, error: UpstreamError) -> Outcome {
        match classify(&error) {
            Failure::Permanent => Outcome::Failed(job.refusal(&row.caller, error)),
            _ => self.retry(row, error.into()),
        }
    }

    fn store_trouble(&self, row: &DeliveryRow, error: StoreError) -> Outcome {
        self.retry(
            row,
            ApiError::new(ProblemCode::StoreUnavailable, error.to_string()),
        )
    }

    /// Milliseconds between two sends with one token: `1 / rate_per_sec` plus any penalty.
    fn interval_ms(&self, penalty: i64) -> i64 {
        (1000.0 / self.outbox.settings.rate_per_sec) as i64 + penalty
    }

    /// The configured token a webhook or chatbot message is sent with. One removed from the
    /// configuration since the message was queued fails it: nothing else may send it.
    fn token(&self, job: &Job) -> Result<&SecretString, UpstreamError> {
        let name = match job {
            Job::Webhook { name, .. } | Job::Bot { name, .. } => name,
            _ => {
                return Err(UpstreamError::NotSendable(
                    "no token sends this job".to_owned(),
                ));
            }
        };
        self.tokens.get(name).ok_or_else(|| {
            UpstreamError::NotSendable(format!("tokens.{name} is no longer configured"))
        })
    }

    async fn channel_of(&self, job: &Job, row: &DeliveryRow) -> Result<ChannelId, Outcome> {
        let missing = |what: &str, name: &str, reason: &str| {
            Outcome::Failed(ApiError::new(
                ProblemCode::Unprocessable,
                format!("{what} {name:?} {reason}"),
            ))
        };
        let upstream = |error| self.failed_send(job, row, error);
        match job {
            Job::Channel { channel_id, .. } => Ok(*channel_id),
            // DSM returns the existing 1:1 conversation when there is one.
            Job::User { user_id } => self
                .chat
                .open_direct_channel(*user_id)
                .await
                .map_err(upstream),
            Job::ChannelNamed { channel } => {
                if let Some(id) = self.outbox.channel_names.get(channel).await {
                    return Ok(id);
                }
                let channels = self.chat.channels().await.map_err(upstream)?;
                let names: Vec<(&str, ChannelId)> = channels
                    .iter()
                    .filter(|c| !c.name.is_empty())
                    .map(|c| (c.name.as_str(), c.channel_id))
                    .collect();
                let id = crate::domain::find_by_name(&names, channel)
                    .map_err(|reason| missing("channel", channel, reason))?;
                self.outbox.channel_names.insert(channel.clone(), id).await;
                Ok(id)
            }
            Job::UserNamed { username } => {
                let user_id = match self.user_names.get(username).await {
                    Some(id) => id,
                    None => {
                        let users = self.chat.users().await.map_err(upstream)?;
                        let names: Vec<(&str, UserId)> = users
                            .iter()
                            .filter(|u| !u.deleted)
                            .map(|u| (u.username.as_str(), u.user_id))
                            .collect();
                        let id = crate::domain::find_by_name(&names, username)
                            .map_err(|reason| missing("user", username, reason))?;
                        self.user_names.insert(username.clone(), id).await;
                        id
                    }
                };
                self.chat
                    .open_direct_channel(user_id)
                    .await
                    .map_err(upstream)
            }
            Job::Webhook { .. } | Job::Bot { .. } | Job::Subscription { .. } => {
                unreachable!("token and subscription jobs have no channel")
            }
        }
    }

    /// Whether post `id` is recorded as no other post than chunk `chunk` of `delivery`: one of
    /// the same text that another delivery (or chunk) made is not this send's.
    async fn owned_by_none(
        &self,
        id: i64,
        (delivery, chunk): (&str, i64),
    ) -> Result<bool, UpstreamError> {
        self.outbox
            .store
            .post_is_recorded(id, delivery, chunk)
            .await
            .map(|recorded| !recorded)
            .map_err(|_| UpstreamError::Unreachable("store unavailable"))
    }

    /// A post by the gateway's account in `channel_id` (in the thread of `thread`, for a
    /// reply) with exactly `text`, created after `since` (less the skew allowance), that no
    /// delivery owns yet.
    async fn find_post(
        &self,
        (delivery, chunk): (&str, i64),
        channel_id: ChannelId,
        thread: Option<PostId>,
        text: &str,
        since: i64,
    ) -> Result<(Option<i64>, bool), UpstreamError> {
        let own = self
            .chat
            .users()
            .await?
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(&self.account))
            .map(|u| u.user_id.get());
        // Whose a post is cannot be told without the account's user: another user's post of
        // the same text would be taken for the lost one, and the message never posted. The
        // part goes again (at least once).
        let Some(own) = own else {
            tracing::warn!(
                delivery,
                "the duplicate check cannot find the gateway's account among Chat's users: sent again blind"
            );
            return Ok((None, true));
        };
        // Replies are not in the channel's list: a reply is looked for in its thread.
        let mut posts = match thread {
            Some(root) => {
                self.chat
                    .newest_replies(channel_id, root, CHECK_POSTS)
                    .await?
            }
            None => self.chat.newest_posts(channel_id, CHECK_POSTS).await?,
        };
        let earliest =
            self.outbox
                .check_window_start(delivery, since, self.chat.nas_clock_offset_ms());
        for page in 1..=CHECK_PAGES {
            for post in &posts {
                if post.message == text
                    && post.create_at >= earliest
                    && post.creator_id.map(u64::from) == Some(own)
                {
                    if self.chat.posted_directly(post.post_id.get()) {
                        continue;
                    }
                    let id = post.post_id.get() as i64;
                    if self.owned_by_none(id, (delivery, chunk)).await? {
                        return Ok((Some(id), false));
                    }
                }
            }
            // On back, page by page, while the oldest post read is not older than the send.
            match posts.iter().min_by_key(|post| post.post_id.get()) {
                Some(oldest) if oldest.create_at >= earliest && page == CHECK_PAGES => {
                    // Not read to the window's start: a send again may post twice.
                    tracing::warn!(
                        delivery,
                        pages = CHECK_PAGES,
                        "the duplicate check stopped before the send's time: sent again blind"
                    );
                    return Ok((None, true));
                }
                Some(oldest) if oldest.create_at >= earliest => {
                    let anchor = oldest.post_id.get();
                    // A NAS that refuses the anchored form further back cannot be read to
                    // the window's start: the part goes again blind (at least once).
                    match self
                        .chat
                        .posts_older_than(channel_id, thread, anchor, CHECK_POSTS)
                        .await
                    {
                        Ok(older) => posts = older,
                        Err(error) => {
                            tracing::warn!(%error, "the duplicate check could not read further back: sent again blind");
                            return Ok((None, true));
                        }
                    }
                }
                _ => break,
            }
        }
        Ok((None, false))
    }

    /// What the uncertain send of chunk `chunk` (`text`) posted: in the channel by the
    /// gateway's account, or a chatbot's in its recipients' conversations.
    async fn look_for_posts(
        &self,
        job: &Job,
        channel: Option<ChannelId>,
        (delivery, chunk): (&str, i64),
        posted_to: &[(i64, i64)],
        text: &str,
        since: i64,
    ) -> Result<Found, UpstreamError> {
        match channel {
            Some(channel_id) => {
                let (found, blind) = self
                    .find_post((delivery, chunk), channel_id, job.thread(), text, since)
                    .await?;
                Ok(Found {
                    posts: found.map(|post_id| vec![(0, post_id)]).unwrap_or_default(),
                    blind,
                })
            }
            None => {
                self.find_bot_posts(job, (delivery, chunk), posted_to, text, since)
                    .await
            }
        }
    }

    /// The posts a chatbot's uncertain send of `text` made in the conversations of the
    /// recipients of chunk `chunk` still without one, read with the bot's token (a chatbot may
    /// list its channels and their posts). A conversation is a channel of the bot's of type
    /// `chatbot` (or a two-member direct one) that holds the recipient; a recipient without
    /// one, or one that cannot be read, is looked for blind. So is every recipient of an
    /// incoming webhook, which can list nothing.
    async fn find_bot_posts(
        &self,
        job: &Job,
        (delivery, chunk): (&str, i64),
        posted_to: &[(i64, i64)],
        text: &str,
        since: i64,
    ) -> Result<Found, UpstreamError> {
        let blind = Found {
            posts: Vec::new(),
            blind: true,
        };
        let (Job::Bot { user_ids, .. }, Some(token)) =
            (job.left_for(chunk, posted_to), self.token(job).ok())
        else {
            return Ok(blind);
        };
        // A refusal no retry changes means the bot cannot look; anything else is retried.
        let refused = |error: &UpstreamError| classify(error) == Failure::Permanent;
        let channels = match self.chat.bot_channels(token).await {
            Ok(channels) => channels,
            Err(error) if refused(&error) => return Ok(blind),
            Err(error) => return Err(error),
        };
        let earliest =
            self.outbox
                .check_window_start(delivery, since, self.chat.nas_clock_offset_ms());
        let mut found = Found {
            posts: Vec::new(),
            blind: false,
        };
        for user in user_ids {
            let conversation = channels.iter().find(|c| {
                c.members.contains(&user)
                    && match c.kind {
                        ChannelKind::Chatbot => true,
                        ChannelKind::Anonymous => c.members.len() == 2,
                        _ => false,
                    }
            });
            let posts = match conversation {
                Some(c) => {
                    self.chat
                        .bot_newest_posts(token, c.channel_id, CHECK_POSTS)
                        .await
                }
                None => Ok(Vec::new()),
            };
            let posts = match posts {
                Ok(posts) if conversation.is_some() => posts,
                Err(error) if !refused(&error) => return Err(error),
                _ => {
                    found.blind = true;
                    continue;
                }
            };
            // The conversation has two members: a post not by the recipient is the bot's.
            for post in posts {
                if post.message != text
                    || post.create_at < earliest
                    || post.creator_id.is_none_or(|creator| creator == user)
                    || self.chat.posted_directly(post.post_id.get())
                {
                    continue;
                }
                let id = post.post_id.get() as i64;
                if self.owned_by_none(id, (delivery, chunk)).await? {
                    found.posts.push((user.get() as i64, id));
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn send(
        &self,
        job: &Job,
        channel: Option<ChannelId>,
        text: &str,
        first: bool,
    ) -> Result<Sent, UpstreamError> {
        let message = match MessageText::parse(text.to_owned()) {
            Ok(message) => Some(message),
            Err(_) if first && job.is_file_alone(text) => None,
            Err(e) => {
                return Err(UpstreamError::NotSendable(format!(
                    "stored text: message {e}"
                )));
            }
        };
        let text_of = |message: Option<MessageText>| {
            message.ok_or_else(|| UpstreamError::NotSendable("stored text: empty".to_owned()))
        };
        let file_url = |raw: &Option<String>| {
            raw.as_deref()
                .filter(|_| first)
                .and_then(|u| HttpUrl::parse("file_url", u).ok())
        };
        match job {
            Job::Subscription { .. } => Err(UpstreamError::Unsupported {
                api: "subscription",
                reason: "subscription deliveries are not sent to Chat".to_owned(),
            }),
            Job::Channel { .. }
            | Job::User { .. }
            | Job::ChannelNamed { .. }
            | Job::UserNamed { .. } => {
                let thread_id = match job {
                    Job::Channel { thread_id, .. } => *thread_id,
                    _ => None,
                };
                let channel_id = channel.expect("session jobs resolve their channel first");
                let message = text_of(message)?;
                let post = self
                    .chat
                    .create_post(NewPost {
                        channel_id,
                        message: &message,
                        thread_id,
                    })
                    .await?;
                Ok(Sent {
                    sent: vec![(0, Some(post.post_id.get() as i64))],
                    failed: Vec::new(),
                })
            }
            Job::Webhook { file_url: url, .. } => {
                let token = self.token(job)?;
                let url = file_url(url);
                self.chat
                    .send_incoming(
                        token,
                        &ExternalMessage {
                            text: message.as_ref(),
                            file_url: url.as_ref(),
                        },
                    )
                    .await?;
                Ok(Sent {
                    sent: vec![(0, None)],
                    failed: Vec::new(),
                })
            }
            Job::Bot {
                user_ids,
                file_url: url,
                ..
            } => {
                let token = self.token(job)?;
                let url = file_url(url);
                let message = text_of(message)?;
                let delivery = self
                    .chat
                    .send_chatbot(
                        token,
                        &ExternalMessage {
                            text: Some(&message),
                            file_url: url.as_ref(),
                        },
                        user_ids,
                    )
                    .await?;
                Ok(Sent {
                    sent: delivery
                        .sent
                        .iter()
                        .map(|(user, post)| (user.get() as i64, Some(post.get() as i64)))
                        .collect(),
                    failed: delivery
                        .failed
                        .iter()
                        .map(|(user, reason)| format!("user {user}: {reason}"))
                        .collect(),
                })
            }
        }
    }
}

/// What a look for the posts of an uncertain send found.
struct Found {
    /// (recipient, post id); recipient 0 in a channel.
    posts: Vec<(i64, i64)>,
    /// Some recipient's post could not be looked for (an incoming webhook lists nothing; a
    /// chatbot's conversation that cannot be read or recognised): a send to them again may
    /// post twice.
    blind: bool,
}

/// What one chunk's send produced.
struct Sent {
    sent: Vec<(i64, Option<i64>)>,
    failed: Vec<String>,
}

fn distinct_chunks(posts: &[(i64, Option<i64>)]) -> usize {
    let mut chunks: Vec<i64> = posts.iter().map(|(c, _)| *c).collect();
    chunks.dedup();
    chunks.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ApiFamily;

    #[test]
    fn backoff_starts_within_a_second_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(600));
        assert!(backoff(1) >= Duration::from_millis(400));
        // A backlog is sent within seconds of the NAS's return, not minutes.
        assert!(backoff(30) <= Duration::from_secs(18));
        assert!(backoff(30) >= Duration::from_secs(12));
    }

    #[test]
    fn subscriptions_follow_the_standard_webhooks_schedule() {
        let delays = crate::config::STANDARD_WEBHOOKS_RETRY_DELAYS_MS;
        let within = |d: Duration, ms: u64| {
            d >= Duration::from_millis(ms * 8 / 10) && d <= Duration::from_millis(ms * 12 / 10)
        };
        assert!(within(subscription_delay(&delays, 1), 5_000));
        assert!(within(subscription_delay(&delays, 2), 300_000));
        assert!(within(subscription_delay(&delays, 9), 86_400_000));
        assert!(
            within(subscription_delay(&delays, 40), 86_400_000),
            "the last repeats"
        );
        assert!(within(subscription_delay(&delays, 0), 5_000));
        let asked = Duration::from_secs(3 * 86_400);
        assert_eq!(
            bounded_retry_after(&delays, asked),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            bounded_retry_after(&delays, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn only_unknown_outcomes_are_ambiguous() {
        assert_eq!(classify(&UpstreamError::Timeout), Failure::Ambiguous);
        assert_eq!(
            classify(&UpstreamError::Unreachable("connection failed")),
            Failure::NotSent
        );
        assert_eq!(
            classify(&UpstreamError::Unreachable("connection lost while reading")),
            Failure::Ambiguous
        );
        assert_eq!(
            classify(&UpstreamError::InvalidResponse("HTTP status 504".into())),
            Failure::Ambiguous
        );
        assert_eq!(classify(&UpstreamError::Busy), Failure::NotSent);
        assert_eq!(
            classify(&UpstreamError::TurnedAway {
                status: 503,
                retry_after: Some(Duration::from_secs(30)),
            }),
            Failure::TurnedAway(Duration::from_secs(30))
        );
        // The gateway's own refusal (a stored chunk that is not a message) is not DSM's
        // answer: retrying it would only hold up the target until the delivery expires.
        let local = UpstreamError::NotSendable("stored text: message must not be empty".into());
        assert_eq!(classify(&local), Failure::Permanent);
        assert_eq!(ApiError::from(local).code(), ProblemCode::Unprocessable);
        let dsm = |code| UpstreamError::Dsm {
            api: "SYNO.Chat.Post",
            method: "create",
            code,
            family: ApiFamily::Session,
        };
        assert_eq!(classify(&dsm(411)), Failure::RateLimited);
        assert_eq!(classify(&dsm(410)), Failure::TooLong);
        assert_eq!(classify(&dsm(117)), Failure::Permanent);
        assert_eq!(classify(&dsm(106)), Failure::NotSent);
        // Refused again after a new login: the request or the account's rights, for good.
        assert_eq!(classify(&dsm(119)), Failure::Permanent);
        // Chat not running yet on a NAS starting up: listed or not, tried again later.
        assert_eq!(classify(&dsm(102)), Failure::NotSent);
        assert_eq!(
            classify(&UpstreamError::NotListed {
                api: "SYNO.Chat.Post"
            }),
            Failure::NotSent
        );
        // A version the gateway does not speak stays so.
        assert_eq!(
            classify(&UpstreamError::Unsupported {
                api: "SYNO.Chat.Post",
                reason: String::new()
            }),
            Failure::Permanent
        );
        // Still seen from another address after the login again: the next attempt may not be.
        assert_eq!(classify(&dsm(150)), Failure::NotSent);
        // Network unstable or system busy, for a session call and for an External send alike:
        // DSM does not say whether the post was made, so the next attempt looks first.
        let external = |code| UpstreamError::Dsm {
            api: "SYNO.Chat.External",
            method: "incoming",
            code,
            family: ApiFamily::External,
        };
        for code in [109, 110, 111, 118] {
            assert_eq!(classify(&dsm(code)), Failure::Ambiguous, "{code}");
            assert_eq!(classify(&external(code)), Failure::Ambiguous, "{code}");
        }
        assert_eq!(classify(&dsm(503)), Failure::NotSent);
        assert_eq!(classify(&external(106)), Failure::Permanent);
        assert_eq!(classify(&external(404)), Failure::Permanent);
    }

    #[test]
    fn a_wall_clock_step_is_told_from_time_passing() {
        let start = std::time::Instant::now();
        let later = start + Duration::from_secs(10);
        let wall = 1_000_000;
        assert_eq!(wall_clock_step((wall, start), (wall + 10_000, later)), 0);
        // NTP's slew, and a reading a little off: no step.
        assert_eq!(wall_clock_step((wall, start), (wall + 11_500, later)), 0);
        assert_eq!(wall_clock_step((wall, start), (wall + 8_500, later)), 0);
        // An hour back, an hour forward.
        assert_eq!(
            wall_clock_step((wall, start), (wall + 10_000 - 3_600_000, later)),
            -3_600_000
        );
        assert_eq!(
            wall_clock_step((wall, start), (wall + 10_000 + 3_600_000, later)),
            3_600_000
        );
    }

    #[test]
    fn targets_separate_channels_users_and_tokens() {
        let channel = Job::Channel {
            channel_id: ChannelId::new(3).unwrap(),
            thread_id: None,
        };
        assert_eq!(channel.target(), "channel:3");
        let json = serde_json::to_string(&channel).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), channel);
        assert_eq!(
            Job::Webhook {
                name: "alerts".into(),
                file_url: None
            }
            .target(),
            "token:alerts"
        );
    }
}
