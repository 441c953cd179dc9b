//! The DSM client: the only code that knows `entry.cgi`, `SYNO.API.Auth` and the WebAPI
//! envelope. It returns domain types and [`UpstreamError`]s and knows nothing of actix handlers.
//! DSM's error numbers are read here too, into what they mean ([`Refusal`]), which the HTTP face
//! and the outbox decide on.
//!
//! One name for the DSM client: [`DsmClient`] (a worker's handle; handlers extract it as
//! `api::Dsm`). [`DsmShared`] is its shared, thread-safe part (settings, the API catalog, the
//! one DSM session); a [`DsmClient`] pairs it with an `awc::Client`, which is bound to one
//! worker thread.
//!
//! What the client assumes about DSM, and where each fact comes from (the reference library,
//! observed behaviour, or our inference), is written down in `src/upstream/PROTOCOL.md`; code
//! comments cite its sections by tag, for example `(PROTOCOL.md [T2])`.

mod backoff;
mod catalog;
mod channels;
mod client;
mod envelope;
mod error;
mod external;
mod integrations;
mod login;
mod misc;
mod ops;
mod post_satellites;
mod posts;
mod session;
mod transport;
mod users;
mod watchdog;
mod wire;

/// The one-pass page reader, the general way and DSM's error details, for the fuzz crate
/// (`tests/fuzz`, `make fuzz`) alone: not the gateway's API.
#[doc(hidden)]
pub mod fuzzing {
    pub fn posts_page(body: &[u8], limit: usize) -> Option<(Vec<u8>, usize)> {
        super::wire::page::posts_page(body, limit)
    }

    pub fn general_page(body: &[u8], limit: usize) -> Option<Vec<u8>> {
        super::wire::page::general_page(body, limit)
    }

    pub fn error_details(body: &[u8], sent: &[&str]) -> Option<String> {
        super::envelope::error_details(body, sent)
    }
}

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::metrics::Metrics;

pub use crate::tls::TlsTrust;

/// Bench-only (`examples/bench_page.rs`, `make bench`): the posts page's one-pass translation
/// from DSM's bytes to the API's, timed apart from the request around it; `None` where the
/// gateway would take the general way.
#[doc(hidden)]
pub fn posts_page_translation(body: &[u8], limit: usize) -> Option<(Vec<u8>, usize)> {
    wire::page::posts_page(body, limit)
}
pub use client::{Download, DsmClient, LoginOutcome, NewPost, Upload};
pub use error::{ApiFamily, Refusal, UpstreamError};
pub use external::{ChatbotDelivery, ExternalMessage, PostWindow};
pub use integrations::{ChatbotChanges, NewWebhook, WebhookKind};
pub use post_satellites::{Reminder, ScheduledPost};
pub use posts::{
    NewFilePost, PostHas, PostSearch, PostType, SearchOrder, SearchPage, SortKey, ThreadPage,
    WireWord,
};

use catalog::Catalog;
use session::SharedSession;

/// How long a DSM health check is reused: probes of the health view cost at most one DSM
/// check per this period.
pub const HEALTH_TTL: Duration = Duration::from_secs(5);

/// The outcome of the last DSM health check (a login if needed, then `SYNO.API.Info`).
#[derive(Clone, Debug)]
pub struct DsmHealth {
    pub checked_at: std::time::Instant,
    pub error: Option<UpstreamError>,
}

/// How to reach and log in to the NAS.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Base URL without `/webapi` (`https://nas.example:5001`).
    pub base_url: url::Url,
    pub account: String,
    pub password: SecretString,
    pub device_id: Option<SecretString>,
    pub device_name: String,
    pub session_name: String,
    pub timeout: Duration,
    pub login_backoff_max: Duration,
    /// Most DSM calls in flight at once, shared by every worker.
    pub max_concurrency: usize,
    /// How long a call waits for a free slot.
    pub slot_wait: Duration,
    /// How the NAS pages `Post.list`.
    pub post_list_paging: crate::config::PostListPaging,
    pub trust: TlsTrust,
}

/// State shared by every worker's [`DsmClient`].
pub struct DsmShared {
    config: UpstreamConfig,
    webapi_base: String,
    tls: Arc<rustls::ClientConfig>,
    catalog: Catalog,
    sessions: SharedSession,
    /// The latest posts made by synchronous sends (not the outbox), newest last: the outbox's
    /// duplicate check must not take one of them for its own (same text, same account).
    /// Each with a tag of the Idempotency-Key it was made under (0: none).
    direct_posts: std::sync::Mutex<std::collections::VecDeque<(u64, u64)>>,
    // The last DSM health check; its lock makes concurrent checks share one.
    health: tokio::sync::Mutex<Option<DsmHealth>>,
    // One permit per DSM call in flight, across all workers.
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
    /// What the NAS showed of its `Post.list` paging (see `posts::OffsetPaging`).
    pub(crate) offset_paging: posts::OffsetPaging,
    /// The NAS's clock less this host's, in ms, from the `Date` of its last good answer that
    /// had one ([`NO_CLOCK`]: none yet): where the outbox's duplicate check starts looking.
    nas_clock_offset_ms: std::sync::atomic::AtomicI64,
    /// The same from the `create_at` of the last post this process made: the clock the
    /// check compares with, where a `Date` may be a reverse proxy's on another host.
    nas_clock_offset_of_posts_ms: std::sync::atomic::AtomicI64,
    /// The `Date` that offset was taken from: later answers of the same second are skipped
    /// (the first one's is the closer estimate, and parsing dates on every call costs).
    nas_clock_date: std::sync::Mutex<Option<actix_web::http::header::HeaderValue>>,
}

/// [`DsmShared::nas_clock_offset_ms`] before any answer with a `Date`.
const NO_CLOCK: i64 = i64::MIN;

impl DsmShared {
    pub fn new(config: UpstreamConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let tls = crate::tls::client_config(&config.trust)?;
        let webapi_base = format!("{}/webapi/", config.base_url.as_str().trim_end_matches('/'));
        Ok(Arc::new(Self {
            sessions: SharedSession::new(config.login_backoff_max, config.timeout),
            direct_posts: Default::default(),
            catalog: Catalog::default(),
            health: tokio::sync::Mutex::new(None),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrency.max(1))),
            offset_paging: posts::OffsetPaging::new(config.post_list_paging),
            nas_clock_offset_ms: std::sync::atomic::AtomicI64::new(NO_CLOCK),
            nas_clock_offset_of_posts_ms: std::sync::atomic::AtomicI64::new(NO_CLOCK),
            nas_clock_date: std::sync::Mutex::new(None),
            webapi_base,
            tls,
            config,
            metrics,
        }))
    }

    /// Notes the NAS's clock from an answer's `Date` (whole seconds, taken when the answer
    /// was made) as the middle of that second: within half a second of the true offset, less
    /// the answer's time on its way. The start of the second was up to a second (and the way)
    /// early, and a duplicate check placed that early could take an earlier post of the same
    /// text for a lost one, which a loaded machine's test showed.
    pub(crate) fn note_nas_clock(&self, date: Option<&actix_web::http::header::HeaderValue>) {
        let Some(date) = date else { return };
        {
            let mut last = self
                .nas_clock_date
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.as_ref() == Some(date) {
                return;
            }
            *last = Some(date.clone());
        }
        let Some(date) = date
            .to_str()
            .ok()
            .and_then(|date| date.parse::<actix_web::http::header::HttpDate>().ok())
        else {
            return;
        };
        let unix_ms = |time: std::time::SystemTime| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        let offset = unix_ms(date.into()) + 500 - unix_ms(std::time::SystemTime::now());
        self.nas_clock_offset_ms
            .store(offset, std::sync::atomic::Ordering::Relaxed);
    }

    /// Notes the NAS's clock from a post this process just made (`create_at`, ms): made
    /// before its answer was read, so the estimate is at most the true offset.
    pub(crate) fn note_nas_clock_of_post(&self, create_at_ms: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if let Ok(created) = i64::try_from(create_at_ms)
            && created > 0
        {
            self.nas_clock_offset_of_posts_ms
                .store(created - now, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The NAS's clock less this host's (ms): as the last post this process made dated it,
    /// else as the last dated answer's `Date` showed it.
    pub fn nas_clock_offset_ms(&self) -> Option<i64> {
        [
            &self.nas_clock_offset_of_posts_ms,
            &self.nas_clock_offset_ms,
        ]
        .into_iter()
        .map(|offset| offset.load(std::sync::atomic::Ordering::Relaxed))
        .find(|&offset| offset != NO_CLOCK)
    }

    /// A client for the calling worker thread (awc clients cannot move between threads).
    pub fn client(self: &Arc<Self>) -> DsmClient {
        DsmClient::new(self.clone())
    }

    /// Whether a DSM session is currently held.
    pub fn has_session(&self) -> bool {
        self.sessions.current().is_some()
    }

    /// Why the gateway counts as wedged, when it does: the login or API-list lock has been held
    /// for several timeouts although every exchange under it has a deadline.
    pub fn wedged(&self) -> Option<&'static str> {
        let limit = self
            .config
            .timeout
            .saturating_mul(watchdog::WEDGED_AFTER_TIMEOUTS);
        if self.sessions.login_watch.stuck(limit) {
            Some("the DSM login lock has been held for too long")
        } else if self.catalog.reload_watch.stuck(limit) {
            Some("the DSM API-list lock has been held for too long")
        } else {
            None
        }
    }

    /// The DSM account the gateway logs in with (its Chat `username`).
    pub fn account(&self) -> &str {
        &self.config.account
    }
}
