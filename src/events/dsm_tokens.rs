//! DSM's own tokens for inbounds with `verify = "dsm"`: the tokens of its outgoing webhooks,
//! slash commands and chatbots, read with the gateway's account so an operator need not copy
//! them.
//!
//! Each kind's list is cached for `inbound.dsm_refresh_ms` (a minute), and Chat's calls are
//! answered from it without waiting for DSM (stale-while-revalidate): a call whose token is in
//! the cached list is checked against it at once, and when the list is older than the
//! interval, that call starts a read in the background, which the following calls use. A call
//! waits for DSM only when there is no list to check against yet (none read, or none usable
//! any more), or when its token is not in the cached list and the list is due (a just-created
//! integration). So an integration deleted or disabled in DSM stops being accepted once the
//! first read after the interval has finished, and a new one is accepted within that time.
//! Whatever callers send, DSM is asked at most once per interval and kind, one read at a time,
//! so wrong tokens cannot make the gateway hammer DSM.
//!
//! When DSM cannot be reached (no connection, timeout, busy, an answer that is not DSM's), the
//! last list read is still used, for at most [`UNREACHABLE_GRACE_INTERVALS`] intervals after
//! it was read (five minutes by default): Chat calling while the gateway briefly cannot reach
//! DSM is still accepted, and a token revoked during a long outage is not accepted forever.
//! After that, calls are answered with the upstream error (502/503/504) until a read succeeds.
//! When DSM itself refuses (an error number, e.g. 105 for an account that lost its
//! administrator rights), the list is dropped at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Data;
use secrecy::SecretString;

use super::inbound::token_matches;
use crate::config::InboundKind;
use crate::upstream::{DsmClient, UpstreamError, WebhookKind};

/// How many refresh intervals after it was read a list is still used while DSM cannot be
/// reached.
pub const UNREACHABLE_GRACE_INTERVALS: u32 = 5;

#[derive(Default)]
struct Cached {
    tokens: Vec<SecretString>,
    /// The last successful read.
    read_at: Option<Instant>,
    /// The end of the last attempt, successful or not (its start while it runs).
    tried_at: Option<Instant>,
    /// Why the last attempt failed, when it did.
    failed: Option<UpstreamError>,
    /// How many reads have finished (successful or not).
    reads: u64,
}

impl Cached {
    /// Whether DSM may be asked again: the last attempt is older than the interval.
    fn due(&self, refresh: Duration) -> bool {
        self.tried_at.is_none_or(|at| at.elapsed() >= refresh)
    }

    /// Whether the list may still be used: read, and not longer ago than the grace.
    fn usable(&self, refresh: Duration) -> bool {
        self.read_at
            .is_some_and(|at| at.elapsed() < refresh.saturating_mul(UNREACHABLE_GRACE_INTERVALS))
    }

    fn holds(&self, given: &str) -> bool {
        token_matches(given, &self.tokens.iter().collect::<Vec<_>>())
    }
}

/// One kind's list.
struct Kind {
    kind: InboundKind,
    /// DSM's list to read (`None`: the chatbots').
    list: Option<WebhookKind>,
    /// Never held across a DSM call: calls answered from the list do not wait for a read.
    cached: Mutex<Cached>,
    /// Held during a read of DSM: one read at a time, and calls that must wait for one wait
    /// for the read in progress rather than start another.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl Kind {
    fn new(kind: InboundKind, list: Option<WebhookKind>) -> Arc<Self> {
        Arc::new(Self {
            kind,
            list,
            cached: Mutex::default(),
            reading: Arc::default(),
        })
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        // A panic while the lock was held leaves a list that is still consistent.
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads DSM's list, unless another read made it fresh meanwhile. The caller holds
    /// `reading`. `waiting` is the call that waits for this read: its token (only used in the
    /// log line) and how many reads had finished when it decided to wait (a read finished since
    /// serves it, even when that read took longer than the interval). `None` for a read in the
    /// background (whose caller's token was in the list).
    async fn read(&self, chat: &DsmClient, refresh: Duration, waiting: Option<(&str, u64)>) {
        let given = waiting.map(|(given, _)| given);
        {
            let mut cached = self.cached();
            let served = waiting.is_some_and(|(_, seen)| cached.reads != seen);
            if served || !cached.due(refresh) {
                return;
            }
            // Counted before the call too: a read given up half-way (its caller gone) does
            // not let the next call ask DSM at once.
            cached.tried_at = Some(Instant::now());
        }
        let started = Instant::now();
        let read = chat.inbound_tokens(self.list).await;
        let mut cached = self.cached();
        cached.reads += 1;
        // The interval counts from the answer (a failure too: a failing DSM is not asked
        // again at once), so a read slower than the interval is not due once it is done.
        cached.tried_at = Some(Instant::now());
        match read {
            Ok(tokens) => {
                tracing::debug!(
                    kind = ?self.kind, count = tokens.len(), background = given.is_none(),
                    "inbound: DSM's integration tokens read"
                );
                cached.tokens = tokens;
                cached.read_at = Some(started);
                cached.failed = None;
            }
            Err(error) => {
                if error.dsm_code().is_some() {
                    // DSM answered: it no longer lets this account list them.
                    cached.tokens.clear();
                    cached.read_at = None;
                }
                let known = given.is_none_or(|given| cached.holds(given));
                tracing::warn!(
                    kind = ?self.kind, %error, last_list_kept = cached.read_at.is_some(),
                    token_in_it = known, background = given.is_none(),
                    "inbound: cannot read DSM's integration tokens"
                );
                cached.failed = Some(error);
            }
        }
    }

    /// The list as it stands: an error when it may no longer be used and the last read failed.
    fn answer(&self, refresh: Duration) -> Result<Vec<SecretString>, UpstreamError> {
        let mut cached = self.cached();
        if !cached.usable(refresh) {
            cached.tokens.clear();
            cached.read_at = None;
            if let Some(error) = &cached.failed {
                return Err(error.clone());
            }
        }
        Ok(cached.tokens.clone())
    }
}

/// What a call does about DSM before its token is checked.
enum Refresh {
    /// Nothing: the list is not due, and no read is in progress for a token not in it.
    No,
    /// The token is in a usable list: check it now, read DSM in the background.
    Background,
    /// No usable list, or the token is not in it: wait for a read (the one in progress, or
    /// one made now when the list is due).
    Wait,
}

/// The cache, one list per kind of integration.
pub struct DsmTokens {
    refresh: Duration,
    outgoing: Arc<Kind>,
    slash: Arc<Kind>,
    chatbot: Arc<Kind>,
}

impl DsmTokens {
    /// A cache whose lists are read again after `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            outgoing: Kind::new(InboundKind::OutgoingWebhook, Some(WebhookKind::Outgoing)),
            slash: Kind::new(InboundKind::SlashCommand, Some(WebhookKind::Slash)),
            chatbot: Kind::new(InboundKind::Chatbot, None),
        }
    }

    /// DSM's tokens for `kind`, to check `given` against. Answered from the cached list when
    /// `given` is in it (a read of DSM starts in the background when the list is due); read
    /// from DSM first when there is no usable list, or when `given` is not in it and the list
    /// is due (or being read: then that read is waited for). `chat` is kept by a background
    /// read (it runs on this worker).
    pub async fn tokens_for(
        &self,
        chat: &Data<DsmClient>,
        kind: InboundKind,
        given: &str,
    ) -> Result<Vec<SecretString>, UpstreamError> {
        let entry = match kind {
            InboundKind::OutgoingWebhook => &self.outgoing,
            InboundKind::SlashCommand => &self.slash,
            InboundKind::Chatbot => &self.chatbot,
        };
        let (refresh, seen) = {
            let cached = entry.cached();
            let known = cached.usable(self.refresh) && cached.holds(given);
            let refresh = if known {
                match cached.due(self.refresh) {
                    true => Refresh::Background,
                    false => Refresh::No,
                }
            } else if cached.due(self.refresh) || entry.reading.try_lock().is_err() {
                // A token not in the list may be in the one being read.
                Refresh::Wait
            } else {
                Refresh::No
            };
            (refresh, cached.reads)
        };
        match refresh {
            Refresh::No => {}
            Refresh::Background => {
                // A read already in progress will do.
                if let Ok(reading) = entry.reading.clone().try_lock_owned() {
                    let (entry, chat, every) = (entry.clone(), chat.clone(), self.refresh);
                    actix_web::rt::spawn(async move {
                        entry.read(&chat, every, None).await;
                        drop(reading);
                    });
                }
            }
            Refresh::Wait => {
                // After the read in progress, if there is one: a read that finished meanwhile
                // serves this call too, and DSM is not asked again.
                let _reading = entry.reading.lock().await;
                entry.read(chat, self.refresh, Some((given, seen))).await;
            }
        }
        entry.answer(self.refresh)
    }
}
