//! DSM's own tokens for inbounds with `verify = "dsm"`: the tokens of its outgoing webhooks,
//! slash commands and chatbots, read with the gateway's account so an operator need not copy
//! them.
//!
//! Each kind's list is cached for `inbound.dsm_refresh_ms` (a minute): the first call after
//! that reads it again before its token is checked, so an integration deleted or disabled in
//! DSM stops being accepted within that time, and a new one starts being accepted. Whatever
//! callers send, DSM is asked at most once per interval and kind, so wrong tokens cannot make
//! the gateway hammer DSM.
//!
//! When DSM cannot be reached (no connection, timeout, busy, an answer that is not DSM's), the
//! last list read is still used, for at most [`UNREACHABLE_GRACE_INTERVALS`] intervals after
//! it was read (five minutes by default): Chat calling while the gateway briefly cannot reach
//! DSM is still accepted, and a token revoked during a long outage is not accepted forever.
//! After that, calls are answered with the upstream error (502/503/504) until a read succeeds.
//! When DSM itself refuses (an error number, e.g. 105 for an account that lost its
//! administrator rights), the list is dropped at once.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Mutex;

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
    /// The last attempt, successful or not.
    tried_at: Option<Instant>,
    /// Why the last attempt failed, when it did.
    failed: Option<UpstreamError>,
}

/// The cache, one list per kind of integration.
pub struct DsmTokens {
    refresh: Duration,
    outgoing: Mutex<Cached>,
    slash: Mutex<Cached>,
    chatbot: Mutex<Cached>,
}

impl DsmTokens {
    /// A cache whose lists are read again after `refresh`.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            outgoing: Mutex::default(),
            slash: Mutex::default(),
            chatbot: Mutex::default(),
        }
    }

    /// DSM's tokens for `kind`, read again first when the cached list is older than the
    /// refresh interval (and the last attempt too). `given` is only used in the log line.
    pub async fn tokens_for(
        &self,
        chat: &DsmClient,
        kind: InboundKind,
        given: &str,
    ) -> Result<Vec<SecretString>, UpstreamError> {
        let (cache, list) = match kind {
            InboundKind::OutgoingWebhook => (&self.outgoing, Some(WebhookKind::Outgoing)),
            InboundKind::SlashCommand => (&self.slash, Some(WebhookKind::Slash)),
            InboundKind::Chatbot => (&self.chatbot, None),
        };
        // Held while reading: concurrent calls wait for the one read.
        let mut cached = cache.lock().await;
        let due = cached
            .tried_at
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if due {
            // Counted before the call: a failing DSM is not asked again at once either.
            cached.tried_at = Some(Instant::now());
            match chat.inbound_tokens(list).await {
                Ok(tokens) => {
                    tracing::debug!(kind = ?kind, count = tokens.len(), "inbound: DSM's integration tokens read");
                    cached.tokens = tokens;
                    cached.read_at = cached.tried_at;
                    cached.failed = None;
                }
                Err(error) => {
                    if error.dsm_code().is_some() {
                        // DSM answered: it no longer lets this account list them.
                        cached.tokens.clear();
                        cached.read_at = None;
                    }
                    let known = token_matches(given, &cached.tokens.iter().collect::<Vec<_>>());
                    tracing::warn!(
                        kind = ?kind, %error, last_list_kept = cached.read_at.is_some(), token_in_it = known,
                        "inbound: cannot read DSM's integration tokens"
                    );
                    cached.failed = Some(error);
                }
            }
        }
        let usable = cached.read_at.is_some_and(|at| {
            at.elapsed() < self.refresh.saturating_mul(UNREACHABLE_GRACE_INTERVALS)
        });
        if !usable {
            cached.tokens.clear();
            cached.read_at = None;
            if let Some(error) = &cached.failed {
                return Err(error.clone());
            }
        }
        Ok(cached.tokens.clone())
    }
}
