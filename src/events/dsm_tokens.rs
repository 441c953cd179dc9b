//! DSM's own tokens for inbounds with `verify = "dsm"`: the tokens of its outgoing webhooks,
//! slash commands and chatbots, read with the gateway's account so an operator need not copy
//! them. Cached; a token not in the cache refreshes the list of its kind at most once a minute,
//! so callers with wrong tokens cannot make the gateway hammer DSM.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::Mutex;

use super::inbound::token_matches;
use crate::config::InboundKind;
use crate::upstream::{DsmClient, UpstreamError, WebhookKind};

/// How often a miss may re-read DSM's list.
pub const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Cached {
    tokens: Vec<SecretString>,
    refreshed_at: Option<Instant>,
}

/// The cache, one list per kind of integration.
#[derive(Default)]
pub struct DsmTokens {
    outgoing: Mutex<Cached>,
    slash: Mutex<Cached>,
    chatbot: Mutex<Cached>,
}

impl DsmTokens {
    /// DSM's tokens for `kind`, refreshed first when `given` is not among them and the last
    /// refresh is a minute old.
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
        // Held while refreshing: concurrent misses wait for the one refresh.
        let mut cached = cache.lock().await;
        let known = token_matches(given, &cached.tokens.iter().collect::<Vec<_>>());
        let due = cached
            .refreshed_at
            .is_none_or(|at| at.elapsed() >= REFRESH_AT_MOST_EVERY);
        if !known && due {
            // Counted before the call: a failing DSM is not asked again at once either.
            cached.refreshed_at = Some(Instant::now());
            cached.tokens = chat.inbound_tokens(list).await?;
            tracing::info!(
                kind = ?kind,
                count = cached.tokens.len(),
                "inbound: DSM's integration tokens read"
            );
        }
        Ok(cached.tokens.clone())
    }
}
