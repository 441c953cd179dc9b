//! Configuration: built-in defaults < optional TOML file < `SYNOCHAT__SECTION__KEY` environment
//! variables. Typed and validated once at start-up; every error names the key at fault.
//!
//! Secrets are `SecretString` (redacted in `Debug`, masked when printed) and may be given as
//! `<key>_file` paths instead, for Docker/Kubernetes/systemd credentials.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of configuration environment variables (`SYNOCHAT__UPSTREAM__URL`).
pub const ENV_PREFIX: &str = "SYNOCHAT";

/// A configuration problem, displayed as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `value` within `range`, or the error naming `key` and the range.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    match range.contains(&value) {
        true => Ok(()),
        false => Err(ConfigError::new(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        )),
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub cache: CacheSettings,
    pub auth: AuthSettings,
    /// Chat integration tokens by name (webhooks and bots), used by the token routes.
    pub tokens: BTreeMap<String, TokenSettings>,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub rate_limit: RateLimitSettings,
    pub store: StoreSettings,
    pub delivery: DeliverySettings,
    /// Hooks by name: `POST /hooks/<name>/<secret>` endpoints for Slack, Alertmanager, Grafana, …
    pub hooks: BTreeMap<String, HookSettings>,
    pub idempotency: IdempotencySettings,
    /// Receivers for Chat's outgoing webhooks, slash commands and chatbots.
    pub inbound: InboundSection,
    pub events: EventsSettings,
    /// HTTP subscriptions to inbound events (`/api/v1/subscriptions`).
    pub subscriptions: SubscriptionsSettings,
}

/// A hook: where its messages go (exactly one of `channel`, `user`, `token`), its secret's
/// hash, and how bodies are read.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// A channel id or name.
    #[serde(deserialize_with = "name_or_id")]
    pub channel: Option<String>,
    /// A user id or username: a direct message from the gateway's account.
    #[serde(deserialize_with = "name_or_id")]
    pub user: Option<String>,
    /// The name of a configured incoming-webhook token (`tokens.<name>`).
    pub token: Option<String>,
    /// Hex SHA-256 of the hook's secret (`syno-chat-gateway hash-key`).
    #[serde(serialize_with = "mask_secret")]
    pub secret_hash: Option<SecretString>,
    pub secret_hash_file: Option<PathBuf>,
    /// The secret the sender signs its bodies with (GitHub's, Gitea's or Forgejo's webhook
    /// secret, Grafana's HMAC secret): every request must carry a valid HMAC-SHA256 signature.
    #[serde(serialize_with = "mask_secret")]
    pub signing_secret: Option<SecretString>,
    pub signing_secret_file: Option<PathBuf>,
    /// The header holding a bare hex signature, when not one the gateway knows
    /// (`X-Hub-Signature-256`, `X-Gitea-Signature`, `X-Forgejo-Signature`,
    /// `X-Gogs-Signature`, `X-Grafana-Alerting-Signature`).
    pub signature_header: Option<String>,
    /// Grafana's `timestamp_header`: the signed text is `<timestamp>:<body>`, and a timestamp
    /// more than 5 minutes away from now is refused (a replayed request).
    pub signature_timestamp_header: Option<String>,
    /// Force a format instead of detecting it from each body.
    pub format: Option<crate::formats::Format>,
    /// A MiniJinja template for the generic format (the body's JSON fields are its variables).
    pub template: Option<String>,
    /// `raw` (default): emphasis left as sent; `plain`: `**b**`, `_i_`, `# h` markers stripped.
    pub markup: crate::formats::Markup,
    /// How long (s) a second copy of an Alertmanager or Grafana notification (same receiver,
    /// group, status and alerts) is taken for the same one and not posted again; 0: never.
    /// Default 60.
    #[serde(deserialize_with = "some_whole")]
    pub duplicate_window_secs: Option<u64>,
}

fn name_or_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Id(u64),
        Name(String),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Id(id) => id.to_string(),
        Raw::Name(name) => name,
    }))
}

/// The `[inbound]` table: the receivers by name (`[inbound.<name>]`), and the settings they
/// share, `reply_timeout_ms` and `dsm_refresh_ms` (so no receiver can be named either).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct InboundSection {
    /// Total time `respond: true` subscriptions get to answer an inbound call (Chat waits).
    #[serde(default = "default_reply_timeout_ms", deserialize_with = "whole")]
    pub reply_timeout_ms: u64,
    /// For `verify = "dsm"`: how long DSM's list of integration tokens is used before it is
    /// read again (also the least time between two reads).
    #[serde(default = "default_dsm_refresh_ms", deserialize_with = "whole")]
    pub dsm_refresh_ms: u64,
    #[serde(flatten)]
    pub receivers: BTreeMap<String, InboundSettings>,
}

impl Default for InboundSection {
    fn default() -> Self {
        Self {
            reply_timeout_ms: default_reply_timeout_ms(),
            dsm_refresh_ms: default_dsm_refresh_ms(),
            receivers: BTreeMap::new(),
        }
    }
}

fn default_reply_timeout_ms() -> u64 {
    3_000
}

fn default_dsm_refresh_ms() -> u64 {
    60_000
}

/// A whole number, as TOML writes it or as text as environment variables carry it (read the
/// same way when a flattened table makes serde buffer it). The config crate's own conversion
/// would take `2.5` as 3, `true` as 1 and `"yes"` as 1: a typo in a setting is refused instead.
fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, Visitor};
    struct Whole;
    // The value is never repeated in an error: it may be a secret put under the wrong key.
    impl Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom("expected a whole number (not a negative one)"))
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<u64, E> {
            Err(E::custom(
                "expected a whole number (no decimal point or exponent)",
            ))
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<u64, E> {
            Err(E::custom("expected a whole number (not true or false)"))
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<u64, E> {
            text.trim()
                .parse()
                .map_err(|_| E::custom("expected a whole number"))
        }
    }
    let n = d.deserialize_any(Whole)?;
    T::try_from(n).map_err(|_| D::Error::custom("the number is too large"))
}

/// [`whole`], for a setting that may be left unset.
fn some_whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole(d).map(Some)
}

/// Which kind of Chat integration calls an inbound URL.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InboundKind {
    /// An outgoing webhook: events of kind `message`, or `trigger_word` when Chat sends one.
    #[default]
    OutgoingWebhook,
    SlashCommand,
    Chatbot,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundSettings {
    /// The token Chat shows for the integration; calls without it are refused (403).
    #[serde(serialize_with = "mask_secret")]
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub kind: InboundKind,
    /// `dsm`: check the token against DSM's own integrations instead of `token`.
    pub verify: InboundVerify,
}

/// How an inbound checks the token Chat sends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InboundVerify {
    /// Against the configured `token`.
    #[default]
    Token,
    /// Against the tokens of DSM's outgoing webhooks, slash commands or chatbots (by `kind`),
    /// read with the gateway's account (an administrator), cached for `inbound.dsm_refresh_ms`
    /// (a minute) and read again on the first call after that.
    Dsm,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Longer texts are sent as several consecutive posts (DSM's limit is undocumented).
    #[serde(deserialize_with = "whole")]
    pub max_message_chars: usize,
    /// At most this many posts for one message: an API caller's longer text is refused (413
    /// `message_too_long`), a hook's is cut, its last post saying how much was left out.
    #[serde(deserialize_with = "whole")]
    pub max_message_parts: usize,
    /// A queued message not delivered within this many seconds fails for good.
    #[serde(deserialize_with = "whole")]
    pub max_age_secs: u64,
    /// Sends per second per integration token (DSM answers 411 to bursts).
    pub rate_per_sec: f64,
    /// How long a finished delivery (delivered, failed, cancelled) stays listed before it is
    /// removed.
    #[serde(deserialize_with = "whole")]
    pub retention_secs: u64,
    /// Deliveries this process sends at once, each to a different target (a channel, a user, a
    /// token, a subscription), so one slow or paced target does not hold up the others.
    #[serde(deserialize_with = "whole")]
    pub concurrency: usize,
    /// How long a synchronous send waits for the outbox's earlier messages to the same target
    /// before it is queued behind them (202), so it cannot overtake them.
    #[serde(deserialize_with = "whole")]
    pub queue_wait_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_message_chars: crate::chunking::DEFAULT_MAX_MESSAGE_CHARS,
            max_message_parts: crate::chunking::DEFAULT_MAX_MESSAGE_PARTS,
            max_age_secs: 86_400,
            rate_per_sec: 1.0,
            retention_secs: 7 * 86_400,
            concurrency: 4,
            queue_wait_ms: 5_000,
        }
    }
}

/// Token buckets per caller: per API key, and per client address for requests without a
/// valid key. A bucket holds `*_burst` requests and refills at `*_per_minute`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    #[serde(deserialize_with = "whole")]
    pub key_per_minute: u32,
    #[serde(deserialize_with = "whole")]
    pub key_burst: u32,
    #[serde(deserialize_with = "whole")]
    pub ip_per_minute: u32,
    #[serde(deserialize_with = "whole")]
    pub ip_burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            key_per_minute: 1200,
            key_burst: 200,
            ip_per_minute: 600,
            ip_burst: 100,
        }
    }
}

/// `Idempotency-Key` on `/api/v1` writes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencySettings {
    /// How long a key's first answer is kept and replayed (Stripe keeps keys at least 24 h).
    #[serde(deserialize_with = "whole")]
    pub ttl_secs: u64,
    /// How long a key stays claimed by a request that has not answered; after that (a crashed
    /// gateway) the key is free again. Longer than any request takes.
    #[serde(deserialize_with = "whole")]
    pub lease_secs: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl_secs: 86_400,
            lease_secs: 120,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// How long received events are kept (and can be replayed).
    #[serde(deserialize_with = "whole")]
    pub retention_secs: u64,
    /// Interval of the keep-alive comment on event streams.
    #[serde(deserialize_with = "whole")]
    pub heartbeat_ms: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            retention_secs: 7 * 86_400,
            heartbeat_ms: 15_000,
        }
    }
}

/// HTTP subscriptions: signed deliveries of events, and synchronous replies.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsSettings {
    /// Consecutive failed attempts after which a subscription is disabled. With the default
    /// `retry_delays_ms` the tenth failure in a row comes about three days after the first.
    #[serde(deserialize_with = "whole")]
    pub max_failures: u32,
    /// Wait after the 1st, 2nd, … failure in a row (the last one repeats), ±20 % jitter: the
    /// Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h). A
    /// receiver's `Retry-After` on 429, 502, 503 or 504 is honoured when it asks for longer.
    /// A list or a comma-separated string.
    #[serde(deserialize_with = "millis_list")]
    pub retry_delays_ms: Vec<u64>,
    /// A delivery to a subscription not made within this many seconds fails for good (the
    /// retry schedule spans about three days).
    #[serde(deserialize_with = "whole")]
    pub max_age_secs: u64,
    /// Allow subscription URLs on loopback, private, link-local and similar addresses.
    pub allow_private: bool,
    /// Timeout of one delivery attempt (Standard Webhooks senders wait 15 to 30 s).
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
    /// PEM file with CA certificates trusted for `https://` subscription URLs besides the
    /// public roots: receivers on the LAN whose certificates a private CA signed.
    pub ca_file: Option<PathBuf>,
    /// Deliveries to subscriptions this process sends at once, each to a different
    /// subscription: lanes of their own, apart from `delivery.concurrency`'s to Chat, so
    /// receivers that do not answer cannot hold up messages to Chat.
    #[serde(deserialize_with = "whole")]
    pub concurrency: usize,
}

impl Default for SubscriptionsSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            retry_delays_ms: STANDARD_WEBHOOKS_RETRY_DELAYS_MS.to_vec(),
            max_age_secs: 4 * 86_400,
            allow_private: false,
            timeout_ms: 15_000,
            ca_file: None,
            concurrency: 4,
        }
    }
}

/// The retry schedule the Standard Webhooks specification recommends, after the first attempt.
pub const STANDARD_WEBHOOKS_RETRY_DELAYS_MS: [u64; 9] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000,
    86_400_000,
];

/// The integration tokens demo mode adds for the simulator's incoming webhook and chatbot,
/// unless tokens of these names are configured.
pub const DEMO_WEBHOOK_TOKEN: &str = "demo-webhook";
pub const DEMO_BOT_TOKEN: &str = "demo-bot";

/// Default store: a SQLite file in the working directory (`make run`); the container, Kubernetes
/// and systemd files point it at `/var/lib/syno-chat-gateway`.
pub const DEFAULT_STORE_URL: &str = "sqlite://syno-chat-gateway.db";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://PATH` (WAL, created with mode 0600) or `postgres://user@host/db` (replicas).
    /// A secret because a PostgreSQL URL may carry the password.
    #[serde(serialize_with = "mask_store_url")]
    pub url: SecretString,
    pub url_file: Option<PathBuf>,
    /// The PostgreSQL password, when it is not in the URL.
    #[serde(serialize_with = "mask_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Connections in this gateway's pool (1–1000); unset: 16 on PostgreSQL (plus one for the
    /// event listener), 4 on SQLite. PostgreSQL's own `max_connections` must cover every
    /// replica's pool.
    #[serde(deserialize_with = "some_whole")]
    pub max_connections: Option<u32>,
    /// How long one store operation may take before it fails as unavailable (503 to a
    /// request): a database that stops answering without closing its connections would
    /// otherwise hold every request that needs it.
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_STORE_URL),
            url_file: None,
            password: None,
            password_file: None,
            max_connections: None,
            timeout_ms: 15_000,
        }
    }
}

fn mask_store_url<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::store::redacted_url(value.expose_secret()))
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics` (Prometheus/OpenMetrics text).
    pub enabled: bool,
    /// Serve `/metrics` on this separate address instead of the API listener.
    pub bind: Option<SocketAddr>,
    /// Require an API key with the `read` scope for `/metrics`.
    pub require_key: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: None,
            require_key: false,
        }
    }
}

/// What a Chat integration token is for.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// An incoming webhook: may only send with `incoming`.
    #[default]
    Webhook,
    /// A chatbot: sends with `chatbot`, reads channels, users and posts.
    Bot,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// The 64-character token from Chat's Integration panel (surrounding `"` or `%22` are stripped).
    #[serde(serialize_with = "mask_secret")]
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub kind: TokenKind,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the API listens on. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// Public base URL (e.g. `https://example.org/chat`), used in the OpenAPI `servers`.
    pub public_url: Option<url::Url>,
    /// Worker threads; default: one per core.
    #[serde(deserialize_with = "some_whole")]
    pub workers: Option<usize>,
    /// Seconds SIGTERM waits for in-flight requests before stopping.
    #[serde(deserialize_with = "whole")]
    pub shutdown_timeout_secs: u64,
    /// Seconds an idle client connection is kept open for its next request (0: one request
    /// a connection). Longer than the idle timeouts of the proxies in front (nginx's 60 s,
    /// Go's and Traefik's 90 s, Caddy's 2 min), so the proxy, not the gateway, closes an idle
    /// connection: one the gateway closed as the proxy reused it fails that request.
    #[serde(deserialize_with = "whole")]
    pub keep_alive_secs: u64,
    /// Client connections held at once, across workers (event streams included); more wait in
    /// the kernel's queue. Default: what the open-files limit leaves after room for the NAS,
    /// the store and the logs, so the gateway's own connections never run out of descriptors.
    #[serde(deserialize_with = "some_whole")]
    pub max_connections: Option<usize>,
    /// Largest file accepted by the upload route.
    #[serde(deserialize_with = "whole")]
    pub max_upload_bytes: usize,
    /// Reverse proxies (CIDRs or addresses) whose `X-Forwarded-*`/`Forwarded` headers are
    /// honoured; a list or a comma-separated string.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Uploads handled at once; more are refused with 503 and `Retry-After`.
    #[serde(deserialize_with = "whole")]
    pub max_concurrent_uploads: usize,
    /// Longest pause in a request body, and the longest a body other than an upload may take
    /// to arrive; then 408 `request_timeout`.
    #[serde(deserialize_with = "whole")]
    pub body_timeout_ms: u64,
    /// The longest a `multipart/form-data` upload may take to arrive (pauses are still limited
    /// by `body_timeout_ms`).
    #[serde(deserialize_with = "whole")]
    pub upload_timeout_ms: u64,
    /// Networks (CIDRs, addresses) and host names a `file_url` may name although they are
    /// internal (loopback, private, link-local, unique-local, `localhost`).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub file_url_allow: Vec<String>,
    /// Origins (`https://app.example.org`) allowed to call the API from a browser (CORS).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub cors_origins: Vec<String>,
    /// Swagger UI keeps the key entered under "Authorize" in the browser's local storage.
    pub docs_persist_authorization: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            workers: None,
            shutdown_timeout_secs: 30,
            keep_alive_secs: 130,
            max_connections: None,
            max_upload_bytes: 32 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            max_concurrent_uploads: 4,
            body_timeout_ms: 30_000,
            upload_timeout_ms: 300_000,
            file_url_allow: Vec::new(),
            cors_origins: Vec::new(),
            docs_persist_authorization: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Base URL of the NAS (`https://nas.example:5001`). Absent: demo mode with the built-in simulator.
    pub url: Option<url::Url>,
    pub username: Option<String>,
    #[serde(serialize_with = "mask_secret")]
    pub password: Option<SecretString>,
    pub password_file: Option<PathBuf>,
    /// Device id from `enroll-device`, for accounts with 2-step verification.
    #[serde(serialize_with = "mask_secret")]
    pub device_id: Option<SecretString>,
    pub device_id_file: Option<PathBuf>,
    pub device_name: String,
    /// DSM `session` name used at login.
    pub session_name: String,
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
    /// Longest pause between login attempts after failures.
    #[serde(deserialize_with = "whole")]
    pub login_backoff_max_secs: u64,
    /// Most DSM calls in flight at once, across all workers (a NAS is a small box).
    #[serde(deserialize_with = "whole")]
    pub max_concurrency: u32,
    /// How long a call waits for one of those slots before answering 503 `upstream_busy`.
    #[serde(deserialize_with = "whole")]
    pub slot_wait_ms: u64,
    /// How the NAS pages `Post.list`: `offset` (its `offset`/`limit`, as the seed library asks)
    /// or `anchor` (from a post id, for a NAS that ignores `offset`, as ACE's v8 does).
    pub post_list_paging: PostListPaging,
    pub tls: TlsSettings,
    /// Demo mode chosen explicitly: required (with no `url`) when keys are configured and the
    /// bind is not loopback, so a forgotten `url` does not silently serve the simulator.
    pub demo: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: None,
            username: None,
            password: None,
            password_file: None,
            device_id: None,
            device_id_file: None,
            device_name: "syno-chat-gateway".to_owned(),
            session_name: "Chat".to_owned(),
            timeout_ms: 10_000,
            login_backoff_max_secs: 300,
            max_concurrency: 8,
            slot_wait_ms: 2_000,
            post_list_paging: PostListPaging::Offset,
            tls: TlsSettings::default(),
            demo: false,
        }
    }
}

/// How the NAS pages a channel's posts (PROTOCOL.md [C4]: sources disagree).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PostListPaging {
    /// `offset`/`limit` are honoured (the seed library and n8n page this way), until the NAS
    /// shows otherwise (`upstream::posts::OffsetPaging`).
    #[default]
    Offset,
    /// Only a `post_id` anchor with `prev_count`/`next_count` pages; without one the NAS
    /// answers its oldest post (ACE's v8) or ignores `offset` (Chat 2.4.1).
    Anchor,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the CA (or self-signed certificate) that signed the NAS's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Dangerous: logged loudly at start-up.
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// How long the user and channel lists are served from memory.
    #[serde(deserialize_with = "whole")]
    pub ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl_secs: 60 }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Serve `/api/v1` without API keys. Required explicitly to run a real upstream without keys.
    pub disabled: bool,
    /// API keys by name.
    pub keys: BTreeMap<String, KeySettings>,
    /// Acknowledges `disabled = true` with a real NAS on a non-loopback bind (anyone who can
    /// reach the port acts as the DSM account).
    pub allow_disabled_on_public_bind: bool,
}

/// SHA-256 of the demo key published in `deploy/` (`sck_demo_…`): fine for demo mode, never
/// in front of a real NAS.
pub const PUBLISHED_DEMO_KEY_HASH: &str =
    "04ad8ee9cdacecbc1a7b32119f0369c969be0a8a79081c335a9c8f7cbfec5cf1";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// Hex SHA-256 of the key (`syno-chat-gateway hash-key`).
    #[serde(serialize_with = "mask_secret")]
    pub hash: Option<SecretString>,
    pub hash_file: Option<PathBuf>,
    /// `read`, `write`, `admin` (each implies the ones before it); a list or a comma-separated string.
    #[serde(deserialize_with = "scopes")]
    pub scopes: Vec<Scope>,
}

/// What an API key may do; each scope includes the ones before it (`read` < `write` < `admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            _ => Err("unknown scope (expected read, write or admin)".to_owned()),
        }
    }
}

/// Scopes as a list or a comma-separated string; an unknown one is refused at load.
fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Scope>, D::Error> {
    list_or_comma_string(d)?
        .iter()
        .map(|name| name.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `syno_chat_gateway=debug,info`, …
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

fn mask_secret<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_none(),
    }
}

fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(list) => list,
        Raw::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn millis_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Numbers(Vec<u64>),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Numbers(list) => Ok(list),
        Raw::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(at, entry)| {
                entry.parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "entry {} is not a number of milliseconds",
                        at + 1
                    ))
                })
            })
            .collect(),
    }
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    list_or_comma_string(d)?
        .iter()
        .enumerate()
        .map(|(at, entry)| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "entry {} is not a CIDR (10.0.0.0/8) or an IP address",
                        at + 1
                    ))
                })
        })
        .collect()
}

/// Where configuration comes from: an optional file and an environment (the process's, or a
/// given map for hermetic tests).
#[derive(Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Option<std::collections::HashMap<String, String>>,
}

/// A parser's error without the lines of the file it quotes (`4 | password = "…`, and the
/// gutter and caret lines around it): a line with a syntax error may hold a secret, and the
/// error goes to the terminal and the service's log. Its position and reason stay, on one line.
fn without_quoted_source(reason: &str) -> String {
    let quoted = |line: &str| {
        let gutter = line
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit());
        gutter.trim_start().starts_with('|')
    };
    reason
        .lines()
        .filter(|line| !line.trim().is_empty() && !quoted(line))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A type error without the value it quotes (`invalid type: string "…"`, `unknown variant
/// `…``): a password put under the wrong key, or in a variable of another setting, would
/// otherwise be shown. The key, the expected type and the choices stay.
fn without_given_values(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    // Where serde and the config crate quote a value, and what ends it: its last occurrence,
    // as the value may hold it too (a field's unknown name is a key, and stays).
    let quotes = [
        ("string \"", "\", expected"),
        ("unknown variant `", "`, expected"),
        ("does not have variant constructor ", " for key"),
        // The url crate's `relative URL without a base: "…"`.
        (": \"", "\" for key"),
    ];
    while let Some((at, opening, close)) = quotes
        .iter()
        .filter_map(|&(opening, close)| Some((rest.find(opening)?, opening, close)))
        .min_by_key(|&(at, ..)| at)
    {
        let value_start = at + opening.len();
        let Some(length) = rest[value_start..].rfind(close) else {
            break;
        };
        out.push_str(&rest[..value_start]);
        out.push('…');
        out.push_str(close);
        rest = &rest[value_start + length + close.len()..];
    }
    out.push_str(rest);
    out
}

/// The names of the environment's variables (the process's, or a test's).
fn env_names(env: Option<&std::collections::HashMap<String, String>>) -> Vec<String> {
    match env {
        Some(map) => map.keys().cloned().collect(),
        None => std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect(),
    }
}

/// The config crate's error as one line under the key it names (`… for key `server.bind``),
/// without the value given, with the choices of a key that takes one of a few words, and with
/// the variable that set a key no setting has (an operator looks for a typo where it is).
fn loading_error(error: &str, variables: &[String]) -> ConfigError {
    let reason = without_given_values(&without_quoted_source(error));
    // A misspelled shared key of `[inbound]` is read as a receiver's name, and serde names
    // only the receiver type it expected.
    if reason.contains("expected struct InboundSettings") {
        return ConfigError::new(
            "inbound",
            format!(
                "{reason}: [inbound] holds reply_timeout_ms, dsm_refresh_ms and receivers as tables ([inbound.<name>]); is a key misspelled?"
            ),
        );
    }
    // A key at the top level is named by no `for key`.
    // (`… for key `server.bind` in the environment`, `… in <file>`: where it was set.)
    let (reason, key) = reason
        .rsplit_once(" for key `")
        .and_then(|(reason, key)| Some((reason, key.split_once('`')?.0)))
        .unwrap_or((&reason, ""));
    // A receiver's kind or check: the config crate names the table only.
    let key = match key {
        "inbound" if reason.contains("`outgoing_webhook`") => "inbound.<name>.kind",
        "inbound" if reason.contains("`token` or `dsm`") => "inbound.<name>.verify",
        _ => key,
    };
    if reason == "invalid socket address syntax" {
        return ConfigError::new(
            key,
            "must be an IP address and a port (0.0.0.0:8080, 127.0.0.1:8080, [::]:8080); a host \
             name is not resolved",
        );
    }
    if let Some(kind) = reason
        .strip_prefix("enum ")
        .and_then(|rest| rest.strip_suffix(" does not have variant constructor …"))
    {
        let reason = match choices(kind) {
            Some(choices) => format!("must be one of {choices}"),
            None => "is none of the words this setting takes (README: Configuration)".to_owned(),
        };
        return ConfigError::new(key, reason);
    }
    if let Some(field) = reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    {
        // The variable is `SYNOCHAT__<key>__<field>`, or, in a table of named entries
        // (`[inbound.<name>]`, named by the config crate without the entry),
        // `SYNOCHAT__<key>__<name>__<field>`.
        let prefix = match key {
            "" => format!("{ENV_PREFIX}__"),
            key => format!("{ENV_PREFIX}__{}__", key.replace('.', "__")),
        }
        .to_ascii_uppercase();
        let suffix = format!("__{field}").to_ascii_uppercase();
        let set_it = |variable: &&String| {
            let variable = variable.to_ascii_uppercase();
            variable.starts_with(&prefix)
                && variable.ends_with(&suffix)
                && variable.len() >= prefix.len() + field.len()
        };
        if let Some(variable) = variables.iter().find(set_it) {
            // The key as the variable spells it: `SYNOCHAT__INBOUND__A__KND` is inbound.a.knd.
            let dotted = variable
                .get(ENV_PREFIX.len() + 2..)
                .unwrap_or_default()
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_ascii_lowercase();
            let expected = reason.split_once(", ").map_or("", |(_, expected)| expected);
            return ConfigError::new(
                variable.as_str(),
                format!("names {dotted}, which no setting is; {expected}"),
            );
        }
    }
    match key {
        "" => ConfigError::new("config", reason),
        key => ConfigError::new(key, reason),
    }
}

/// The words an enumeration of the settings takes, as serde lists them (`` `a`, `b` or `c` ``).
fn choices(kind: &str) -> Option<String> {
    fn listed<T: serde::de::DeserializeOwned>() -> Option<String> {
        let refusal = serde_json::from_value::<T>(serde_json::Value::String(String::new()))
            .err()?
            .to_string();
        let (_, choices) = refusal.split_once("expected ")?;
        Some(choices.trim_start_matches("one of ").to_owned())
    }
    match kind {
        "PostListPaging" => listed::<PostListPaging>(),
        "LogFormat" => listed::<LogFormat>(),
        "TokenKind" => listed::<TokenKind>(),
        "InboundKind" => listed::<InboundKind>(),
        "InboundVerify" => listed::<InboundVerify>(),
        "Format" => listed::<crate::formats::Format>(),
        _ => None,
    }
}

impl Settings {
    /// Loads, resolves `_file` secrets and validates.
    pub fn load(sources: Sources) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = &sources.file {
            if !file.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            builder = builder
                .add_source(config::File::from(file.as_path()).format(config::FileFormat::Toml));
        }
        let variables = env_names(sources.env.as_ref());
        check_env_spelling(&variables)?;
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(sources.env);
        let settings: Settings = builder
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| loading_error(&e.to_string(), &variables))?;
        settings.resolve_secret_files()?.validated()
    }

    fn resolve_secret_files(mut self) -> Result<Self, ConfigError> {
        self.check_nas_account_without_url()?;
        resolve_file(
            &mut self.upstream.password,
            &self.upstream.password_file,
            "upstream.password",
        )?;
        resolve_file(
            &mut self.upstream.device_id,
            &self.upstream.device_id_file,
            "upstream.device_id",
        )?;
        if let Some(path) = &self.store.url_file {
            self.store.url = read_secret_file(path)
                .map_err(|reason| ConfigError::new("store.url_file", reason))?;
        }
        resolve_file(
            &mut self.store.password,
            &self.store.password_file,
            "store.password",
        )?;
        for (name, key) in &mut self.auth.keys {
            resolve_file(
                &mut key.hash,
                &key.hash_file,
                &format!("auth.keys.{name}.hash"),
            )?;
        }
        for (name, hook) in &mut self.hooks {
            resolve_file(
                &mut hook.secret_hash,
                &hook.secret_hash_file,
                &format!("hooks.{name}.secret_hash"),
            )?;
            resolve_file(
                &mut hook.signing_secret,
                &hook.signing_secret_file,
                &format!("hooks.{name}.signing_secret"),
            )?;
        }
        for (name, token) in &mut self.tokens {
            let key = format!("tokens.{name}.token");
            resolve_file(&mut token.token, &token.token_file, &key)?;
            token.token = token
                .token
                .take()
                .map(|t| SecretString::from(normalize_token(t.expose_secret())));
        }
        for (name, inbound) in &mut self.inbound.receivers {
            let key = format!("inbound.{name}.token");
            resolve_file(&mut inbound.token, &inbound.token_file, &key)?;
            inbound.token = inbound
                .token
                .take()
                .map(|t| SecretString::from(normalize_token(t.expose_secret())));
        }
        Ok(self)
    }

    fn validated(self) -> Result<Self, ConfigError> {
        let up = &self.upstream;
        // Asked for first: what the settings below require depends on which of the two is
        // meant (a user fixing the account or the keys first would meet this only then).
        if up.url.is_some() && up.demo {
            return Err(ConfigError::new(
                "upstream.demo",
                "cannot be combined with upstream.url (remove one of them)",
            ));
        }
        if let Some(url) = &up.url {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(
                    "upstream.url",
                    "must be an http:// or https:// URL with a host",
                ));
            }
            // Printed by `check-config` and in start-up errors; the account has its own keys.
            if !url.username().is_empty() || url.password().is_some() {
                return Err(ConfigError::new(
                    "upstream.url",
                    "must not carry a user name or password (set upstream.username and upstream.password)",
                ));
            }
            if up.username.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::new(
                    "upstream.username",
                    "is required when upstream.url is set",
                ));
            }
            if up
                .password
                .as_ref()
                .is_none_or(|p| p.expose_secret().is_empty())
            {
                return Err(ConfigError::new(
                    "upstream.password",
                    "is required when upstream.url is set (or upstream.password_file)",
                ));
            }
            if self.auth.keys.is_empty() && !self.auth.disabled {
                return Err(ConfigError::new(
                    "auth.keys",
                    "a real upstream needs at least one API key (or set auth.disabled = true explicitly)",
                ));
            }
        } else if self.auth.keys.is_empty() && !self.server.bind.ip().is_loopback() {
            return Err(ConfigError::new(
                "server.bind",
                "demo mode without API keys only binds a loopback address; configure auth.keys to expose it",
            ));
        }
        self.check_unsafe_combinations()?;
        within("upstream.timeout_ms", up.timeout_ms, 100..=600_000)?;
        within("upstream.max_concurrency", up.max_concurrency, 1..=1024)?;
        within("upstream.slot_wait_ms", up.slot_wait_ms, 1..=600_000)?;
        if up.session_name.is_empty() {
            return Err(ConfigError::new(
                "upstream.session_name",
                "must not be empty",
            ));
        }
        if up.tls.insecure_skip_verify && up.tls.ca_file.is_some() {
            return Err(ConfigError::new(
                "upstream.tls.insecure_skip_verify",
                "cannot be combined with upstream.tls.ca_file",
            ));
        }
        for (key, ca) in [
            ("upstream.tls.ca_file", &up.tls.ca_file),
            ("subscriptions.ca_file", &self.subscriptions.ca_file),
        ] {
            if let Some(ca) = ca
                && !ca.is_file()
            {
                return Err(ConfigError::new(
                    key,
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        // Durations the server adds to instants: a huge one overflowed them (a panic at start,
        // or after every answer, or at SIGTERM).
        for (key, secs) in [
            ("cache.ttl_secs", self.cache.ttl_secs),
            ("server.keep_alive_secs", self.server.keep_alive_secs),
            (
                "server.shutdown_timeout_secs",
                self.server.shutdown_timeout_secs,
            ),
        ] {
            if secs > 86_400 {
                return Err(ConfigError::new(key, "must be at most 86400 (a day)"));
            }
        }
        if self.server.workers == Some(0) {
            return Err(ConfigError::new("server.workers", "must be at least 1"));
        }
        for (name, key) in &self.auth.keys {
            let Some(hash) = key.hash.as_ref().map(|h| h.expose_secret().to_owned()) else {
                // Often a variable meant for a key the file names with capitals or a dash:
                // variables reach lower-case names only, and made a key of their own.
                return Err(ConfigError::new(
                    format!("auth.keys.{name}.hash"),
                    "missing: every key needs the SHA-256 of its secret (see `syno-chat-gateway \
                     hash-key`). A SYNOCHAT__AUTH__KEYS__<NAME>__… variable addresses the key \
                     named <name> in lower case, with `_` for `-`: name keys so in the file",
                ));
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::new(
                    format!("auth.keys.{name}.hash"),
                    "must be the 64-hex-digit SHA-256 of the key (see `syno-chat-gateway hash-key`)",
                ));
            }
            if key.scopes.is_empty() {
                return Err(ConfigError::new(
                    format!("auth.keys.{name}.scopes"),
                    "must name at least one scope",
                ));
            }
        }
        for (name, token) in &self.tokens {
            let value = token
                .token
                .as_ref()
                .map(|t| t.expose_secret().len())
                .unwrap_or(0);
            if value != 64 {
                return Err(ConfigError::new(
                    format!("tokens.{name}.token"),
                    format!(
                        "must be the 64-character token from Chat's Integration panel (got {value} characters)"
                    ),
                ));
            }
            if let Some(bad) = token.token.as_ref().and_then(|t| {
                t.expose_secret()
                    .chars()
                    .find(|c| !c.is_ascii_alphanumeric())
            }) {
                return Err(ConfigError::new(
                    format!("tokens.{name}.token"),
                    format!("contains {bad:?}; tokens are letters and digits"),
                ));
            }
        }
        for (name, hook) in &self.hooks {
            self.validate_hook(name, hook)?;
        }
        within(
            "delivery.max_message_chars",
            self.delivery.max_message_chars,
            100..=100_000,
        )?;
        within(
            "delivery.max_message_parts",
            self.delivery.max_message_parts,
            1..=1000,
        )?;
        within(
            "delivery.max_age_secs",
            self.delivery.max_age_secs,
            60..=30 * 86_400,
        )?;
        // The check after an unanswered send looks back minutes for posts other deliveries
        // own; a delivery removed sooner could have its post taken for another's.
        if self.delivery.retention_secs < 3_600 {
            return Err(ConfigError::new(
                "delivery.retention_secs",
                "must be at least 3600 (one hour)",
            ));
        }
        within("delivery.concurrency", self.delivery.concurrency, 1..=64)?;
        within(
            "subscriptions.concurrency",
            self.subscriptions.concurrency,
            1..=64,
        )?;
        if self.delivery.queue_wait_ms > 60_000 {
            return Err(ConfigError::new(
                "delivery.queue_wait_ms",
                "must be at most 60000 (a synchronous caller waits for it)",
            ));
        }
        if !(self.delivery.rate_per_sec > 0.0 && self.delivery.rate_per_sec <= 100.0) {
            return Err(ConfigError::new(
                "delivery.rate_per_sec",
                "must be above 0 and at most 100",
            ));
        }
        let store_url = self.store.url.expose_secret();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| store_url.starts_with(scheme))
        {
            return Err(ConfigError::new(
                "store.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if let Some(n) = self.store.max_connections {
            within("store.max_connections", n, 1..=1000)?;
        }
        // Above the pool's 5 s wait for a connection and SQLite's 5 s wait for its lock.
        within("store.timeout_ms", self.store.timeout_ms, 6_000..=600_000)?;
        for (key, value) in [
            ("idempotency.ttl_secs", self.idempotency.ttl_secs),
            ("idempotency.lease_secs", self.idempotency.lease_secs),
        ] {
            within(key, value, 1..=31_536_000)?;
        }
        for (name, inbound) in &self.inbound.receivers {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::new(
                    format!("inbound.{name}"),
                    "names are letters, digits, - and _ (they appear in the URL /inbound/{name})",
                ));
            }
            let has_token = inbound
                .token
                .as_ref()
                .is_some_and(|t| !t.expose_secret().is_empty());
            if inbound.verify == InboundVerify::Dsm && has_token {
                return Err(ConfigError::new(
                    format!("inbound.{name}.token"),
                    "is not used with verify = \"dsm\" (DSM's own tokens are checked): remove one",
                ));
            }
            if inbound.verify == InboundVerify::Token && !has_token {
                return Err(ConfigError::new(
                    format!("inbound.{name}.token"),
                    "is required (or inbound.<name>.token_file): the token Chat shows for the integration",
                ));
            }
        }
        if self.events.retention_secs == 0 {
            return Err(ConfigError::new(
                "events.retention_secs",
                "must be at least 1",
            ));
        }
        within(
            "events.heartbeat_ms",
            self.events.heartbeat_ms,
            10..=3_600_000,
        )?;
        if self.subscriptions.max_failures == 0 {
            return Err(ConfigError::new(
                "subscriptions.max_failures",
                "must be at least 1",
            ));
        }
        if self.subscriptions.retry_delays_ms.is_empty()
            || self.subscriptions.retry_delays_ms.len() > 100
            || self
                .subscriptions
                .retry_delays_ms
                .iter()
                .any(|d| !(10..=7 * 86_400_000).contains(d))
        {
            return Err(ConfigError::new(
                "subscriptions.retry_delays_ms",
                "must list 1 to 100 delays, each between 10 ms and 7 days",
            ));
        }
        within(
            "subscriptions.max_age_secs",
            self.subscriptions.max_age_secs,
            60..=30 * 86_400,
        )?;
        within(
            "inbound.dsm_refresh_ms",
            self.inbound.dsm_refresh_ms,
            1_000..=3_600_000,
        )?;
        for (key, value) in [
            ("inbound.reply_timeout_ms", self.inbound.reply_timeout_ms),
            ("subscriptions.timeout_ms", self.subscriptions.timeout_ms),
        ] {
            within(key, value, 100..=600_000)?;
        }
        if self.server.max_upload_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_upload_bytes",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.upload_timeout_ms", self.server.upload_timeout_ms),
        ] {
            within(key, value, 100..=3_600_000)?;
        }
        if self.server.max_connections == Some(0) {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if self.server.max_concurrent_uploads == 0 {
            return Err(ConfigError::new(
                "server.max_concurrent_uploads",
                "must be at least 1",
            ));
        }
        if let Some(bad) = self.server.file_url_allow.iter().position(|entry| {
            let network =
                entry.parse::<ipnet::IpNet>().is_ok() || entry.parse::<std::net::IpAddr>().is_ok();
            let host = entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            !(network || (host && !entry.is_empty()))
        }) {
            return Err(ConfigError::new(
                "server.file_url_allow",
                format!(
                    "entry {} is not a CIDR, an IP address or a host name",
                    bad + 1
                ),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new("log.level", e.to_string()));
        }
        if self.log.level.split(',').all(|d| d.trim().is_empty()) {
            return Err(ConfigError::new(
                "log.level",
                "is empty: no line would be written (an unset variable?); use a level such as info",
            ));
        }
        if let Some(at) = bare_target(&self.log.level) {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "directive {} is a bare name, not a level (off, error, warn, info, debug, \
                     trace); a bare name selects a log target and would switch every other line \
                     off: use a level, or target=level",
                    at + 1
                ),
            ));
        }
        if let Some(url) = &self.server.public_url
            && (!matches!(url.scheme(), "http" | "https")
                || url.host_str().is_none()
                || !url.username().is_empty()
                || url.password().is_some())
        {
            return Err(ConfigError::new(
                "server.public_url",
                "must be an http:// or https:// URL with a host and no user name or password",
            ));
        }
        if let Some(bad) = self.server.cors_origins.iter().position(|origin| {
            url::Url::parse(origin).ok().is_none_or(|url| {
                !matches!(url.scheme(), "http" | "https")
                    || url.origin().ascii_serialization() != origin.trim_end_matches('/')
            })
        }) {
            return Err(ConfigError::new(
                "server.cors_origins",
                format!(
                    "entry {} is not an origin (scheme://host[:port], no path)",
                    bad + 1
                ),
            ));
        }
        let rate = &self.rate_limit;
        if rate.enabled
            && [
                rate.key_per_minute,
                rate.key_burst,
                rate.ip_per_minute,
                rate.ip_burst,
            ]
            .contains(&0)
        {
            return Err(ConfigError::new(
                "rate_limit",
                "rates and bursts must be at least 1 (or set rate_limit.enabled = false)",
            ));
        }
        Ok(self)
    }

    /// A NAS account with no `upstream.url` is a real NAS meant and its URL lost (a misspelled
    /// variable, say): refused, or the gateway would quietly serve its simulator. With
    /// `upstream.demo = true` the account is set aside unread, so a demo needs no credential file.
    fn check_nas_account_without_url(&mut self) -> Result<(), ConfigError> {
        let up = &mut self.upstream;
        if up.url.is_some() {
            return Ok(());
        }
        let account = [
            ("upstream.username", up.username.is_some()),
            ("upstream.password", up.password.is_some()),
            ("upstream.password_file", up.password_file.is_some()),
            ("upstream.device_id", up.device_id.is_some()),
            ("upstream.device_id_file", up.device_id_file.is_some()),
        ];
        let Some((key, _)) = account.into_iter().find(|(_, set)| *set) else {
            return Ok(());
        };
        if !up.demo {
            return Err(ConfigError::new(
                key,
                "is set but upstream.url is not: set upstream.url for the NAS (check its spelling, e.g. SYNOCHAT__UPSTREAM__URL), or upstream.demo = true to run the built-in simulator",
            ));
        }
        (up.username, up.password, up.password_file) = (None, None, None);
        (up.device_id, up.device_id_file) = (None, None);
        Ok(())
    }

    /// Settings that are each fine alone but open the gateway together (issue 7, items 13-15).
    fn check_unsafe_combinations(&self) -> Result<(), ConfigError> {
        let public_bind = !self.server.bind.ip().is_loopback();
        if self.upstream.url.is_some() {
            if self.auth.disabled && public_bind && !self.auth.allow_disabled_on_public_bind {
                return Err(ConfigError::new(
                    "auth.disabled",
                    format!(
                        "with a real NAS on the non-loopback bind {} anyone who reaches the port acts as the DSM account; bind a loopback address, configure auth.keys, or set auth.allow_disabled_on_public_bind = true",
                        self.server.bind
                    ),
                ));
            }
            if let Some(name) = self.auth.keys.iter().find_map(|(name, key)| {
                key.hash
                    .as_ref()
                    .is_some_and(|h| {
                        h.expose_secret()
                            .eq_ignore_ascii_case(PUBLISHED_DEMO_KEY_HASH)
                    })
                    .then_some(name)
            }) {
                return Err(ConfigError::new(
                    format!("auth.keys.{name}.hash"),
                    "is the published demo key (sck_demo_… from deploy/), which must not guard a real NAS; make a new key with `syno-chat-gateway hash-key`",
                ));
            }
        } else if public_bind && !self.auth.keys.is_empty() && !self.upstream.demo {
            return Err(ConfigError::new(
                "upstream.url",
                format!(
                    "is not set, so the gateway would serve its built-in DSM simulator (demo mode) on the non-loopback bind {}; set upstream.url for a real NAS, or upstream.demo = true to choose demo mode",
                    self.server.bind
                ),
            ));
        }
        Ok(())
    }

    fn validate_hook(&self, name: &str, hook: &HookSettings) -> Result<(), ConfigError> {
        let key = |field: &str| format!("hooks.{name}.{field}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                format!("hooks.{name}"),
                "hook names are letters, digits, `-` and `_` (they are URL path segments)",
            ));
        }
        let targets = [&hook.channel, &hook.user, &hook.token]
            .iter()
            .filter(|t| t.is_some())
            .count();
        if targets != 1 {
            return Err(ConfigError::new(
                format!("hooks.{name}"),
                "needs exactly one target: `channel`, `user` or `token`",
            ));
        }
        for (field, value) in [("channel", &hook.channel), ("user", &hook.user)] {
            if value
                .as_deref()
                .is_some_and(|v| v.trim().is_empty() || v == "0")
            {
                return Err(ConfigError::new(key(field), "must be an id or a name"));
            }
        }
        if let Some(token) = &hook.token {
            let demo_kind = match token.as_str() {
                DEMO_WEBHOOK_TOKEN if self.is_demo() => Some(TokenKind::Webhook),
                DEMO_BOT_TOKEN if self.is_demo() => Some(TokenKind::Bot),
                _ => None,
            };
            match self.tokens.get(token).map(|t| t.kind).or(demo_kind) {
                Some(TokenKind::Webhook) => {}
                Some(_) => {
                    return Err(ConfigError::new(
                        key("token"),
                        format!(
                            "tokens.{token} is a chatbot token; a hook needs an incoming-webhook token"
                        ),
                    ));
                }
                None => {
                    return Err(ConfigError::new(
                        key("token"),
                        format!("no token is configured as tokens.{token}"),
                    ));
                }
            }
        }
        let signed = hook.signing_secret.is_some();
        match hook.secret_hash.as_ref().map(|h| h.expose_secret()) {
            Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            // A signed hook may do without a secret in its URL: the signature authenticates.
            None if signed => {}
            _ => {
                return Err(ConfigError::new(
                    key("secret_hash"),
                    "must be the 64-hex-digit SHA-256 of the hook's secret (see `syno-chat-gateway hash-key`), unless the hook has a signing_secret",
                ));
            }
        }
        if hook
            .signing_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 16)
        {
            return Err(ConfigError::new(
                key("signing_secret"),
                "must be at least 16 characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        // Standard Webhooks senders show the secret as `whsec_` and the key in base64; one
        // that is not base64 would be used as typed and match none of their signatures.
        if let Some(encoded) = hook
            .signing_secret
            .as_ref()
            .and_then(|s| s.expose_secret().strip_prefix("whsec_"))
        {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .is_err()
            {
                return Err(ConfigError::new(
                    key("signing_secret"),
                    "starts with `whsec_` (a Standard Webhooks secret), so the rest must be its key in base64, as the sender shows it",
                ));
            }
        }
        for (field, header) in [
            ("signature_header", &hook.signature_header),
            (
                "signature_timestamp_header",
                &hook.signature_timestamp_header,
            ),
        ] {
            if let Some(header) = header {
                if !signed {
                    return Err(ConfigError::new(key(field), "needs a signing_secret"));
                }
                // RFC 9110 token characters.
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if header.is_empty() || !header.bytes().all(token) {
                    return Err(ConfigError::new(key(field), "is not a header name"));
                }
            }
        }
        if hook.duplicate_window_secs.is_some_and(|secs| secs > 86_400) {
            return Err(ConfigError::new(
                key("duplicate_window_secs"),
                "must be at most 86400 (a day): Alertmanager repeats an unchanged group after its repeat_interval, and such a repeat is posted",
            ));
        }
        if let Some(template) = &hook.template {
            crate::formats::check_template(template)
                .map_err(|reason| ConfigError::new(key("template"), reason))?;
            if hook
                .format
                .is_some_and(|f| f != crate::formats::Format::Generic)
            {
                return Err(ConfigError::new(
                    key("template"),
                    "is only used by the generic format (leave `format` unset or set it to \"generic\")",
                ));
            }
        }
        Ok(())
    }

    /// Demo mode: no NAS configured, the built-in simulator stands in.
    pub fn is_demo(&self) -> bool {
        self.upstream.url.is_none()
    }

    /// The effective configuration with every secret masked, as pretty JSON.
    pub fn masked_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The loader reads only `SYNOCHAT__…`; a variable naming a section after one underscore
/// (`SYNOCHAT_UPSTREAM__URL`) is a typo whose setting would silently keep its default, so it is
/// refused. Other `SYNOCHAT_…` names (`SYNOCHAT_CONFIG`, a client's `SYNOCHAT_KEY`) are not
/// settings and are left alone.
fn check_env_spelling(names: &[String]) -> Result<(), ConfigError> {
    let sections: Vec<String> = match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    };
    let single = format!("{ENV_PREFIX}_");
    let misspelled = names.iter().find(|name| {
        let Some(rest) = name.strip_prefix(&single).filter(|r| !r.starts_with('_')) else {
            return false;
        };
        let rest = rest.to_ascii_lowercase();
        sections.iter().any(|section| {
            rest.strip_prefix(section.as_str())
                .is_some_and(|tail| tail.is_empty() || tail.starts_with('_'))
        })
    });
    match misspelled {
        Some(name) => Err(ConfigError::new(
            name,
            format!(
                "is not read: settings are {ENV_PREFIX}__ (two underscores) and the key with __ between levels, e.g. {ENV_PREFIX}__UPSTREAM__URL"
            ),
        )),
        None => Ok(()),
    }
}

/// Tokens copied from Chat's URLs come wrapped in quotes, sometimes percent-encoded (`%22`).
pub fn normalize_token(raw: &str) -> String {
    let trimmed = raw.trim();
    let unwrapped = trimmed
        .strip_prefix("%22")
        .and_then(|t| t.strip_suffix("%22"))
        .or_else(|| trimmed.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
        .unwrap_or(trimmed);
    unwrapped.to_owned()
}

fn resolve_file(
    value: &mut Option<SecretString>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::new(
            format!("{key}_file"),
            format!("cannot be combined with {key}"),
        ));
    }
    *value = Some(
        read_secret_file(path).map_err(|reason| ConfigError::new(format!("{key}_file"), reason))?,
    );
    Ok(())
}

fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretString::from(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// Where the first directive of a log filter is that is a bare name other than a level (`warning`,
/// `verbose`): `EnvFilter` reads it as "this target at every level", which silences every other
/// line, where the operator meant a level.
fn bare_target(filter: &str) -> Option<usize> {
    // The names, and the numbers `EnvFilter` takes for them (0 = off … 5 = trace).
    const LEVELS: [&str; 12] = [
        "off", "error", "warn", "info", "debug", "trace", "0", "1", "2", "3", "4", "5",
    ];
    filter.split(',').map(str::trim).position(|directive| {
        !directive.is_empty()
            && !directive.contains(['=', '['])
            && !LEVELS
                .iter()
                .any(|level| directive.eq_ignore_ascii_case(level))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(Sources {
            file: None,
            env: Some(env),
        })
    }

    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn defaults_are_demo_mode_on_loopback() {
        let s = load(&[]).unwrap();
        assert!(s.is_demo());
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        let s = load(&[
            ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
            ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
            ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
            ("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "2500"),
            ("SYNOCHAT__AUTH__KEYS__CI__HASH", HASH),
            ("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "read,write"),
        ])
        .unwrap();
        assert_eq!(s.upstream.timeout_ms, 2500);
        assert_eq!(s.auth.keys["ci"].scopes, [Scope::Read, Scope::Write]);
        assert!(!s.masked_json().contains("\"pw\""));
    }

    #[test]
    fn unknown_scopes_are_refused_at_load() {
        let err = load(&[
            ("SYNOCHAT__AUTH__KEYS__CI__HASH", HASH),
            ("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "read,root"),
        ])
        .unwrap_err();
        assert!(
            err.reason
                .contains("unknown scope (expected read, write or admin)"),
            "{err}"
        );
        assert!(err.to_string().contains("auth.keys.ci.scopes"), "{err}");
    }

    #[test]
    fn wrong_values_name_the_key() {
        let err = load(&[("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "5")]).unwrap_err();
        assert_eq!(err.key, "upstream.timeout_ms");
        let err = load(&[("SYNOCHAT__UPSTREAM__URL", "https://nas.example")]).unwrap_err();
        assert_eq!(err.key, "upstream.username");
        let err = load(&[("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("timeout_ms"), "{err}");
        let err = load(&[("SYNOCHAT__UPSTREAM__PASWORD", "typo")]).unwrap_err();
        assert!(err.to_string().contains("pasword"), "{err}");
    }

    #[test]
    fn real_upstream_without_keys_refuses_to_start() {
        let err = load(&[
            ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
            ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
            ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "auth.keys");
    }

    #[test]
    fn the_shipped_example_file_loads_and_matches_the_defaults() {
        let example = Settings::load(Sources {
            file: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml").into()),
            env: Some(Default::default()),
        })
        .unwrap();
        assert_eq!(example.masked_json(), Settings::default().masked_json());
    }

    #[test]
    fn subscription_deliveries_wait_as_long_as_standard_webhooks_recommends() {
        // Standard Webhooks: a timeout of 15 to 30 s per attempt.
        let timeout = Settings::default().subscriptions.timeout_ms;
        assert!((15_000..=30_000).contains(&timeout), "{timeout}");
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_addresses() {
        let s = load(&[("SYNOCHAT__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(s.server.trusted_proxies.len(), 2);
        let err = load(&[("SYNOCHAT__SERVER__TRUSTED_PROXIES", "everyone")]).unwrap_err();
        assert!(err.to_string().contains("entry 1 is not a CIDR"), "{err}");
        assert!(!err.to_string().contains("everyone"), "{err}");
    }

    #[test]
    fn durations_added_to_instants_are_at_most_a_day() {
        for key in ["KEEP_ALIVE_SECS", "SHUTDOWN_TIMEOUT_SECS"] {
            let var = format!("SYNOCHAT__SERVER__{key}");
            let err = load(&[(var.as_str(), "18446744073709551615")]).unwrap_err();
            assert_eq!(err.key, format!("server.{}", key.to_lowercase()), "{err}");
            assert!(load(&[(var.as_str(), "86400")]).is_ok());
        }
    }

    #[test]
    fn caller_hardening_settings_are_checked() {
        let s = load(&[(
            "SYNOCHAT__SERVER__FILE_URL_ALLOW",
            "192.168.1.0/24, files.lan",
        )])
        .unwrap();
        assert_eq!(s.server.file_url_allow, ["192.168.1.0/24", "files.lan"]);
        let err = load(&[("SYNOCHAT__SERVER__FILE_URL_ALLOW", "http://x/")]).unwrap_err();
        assert_eq!(err.key, "server.file_url_allow");
        let err = load(&[("SYNOCHAT__SERVER__MAX_CONCURRENT_UPLOADS", "0")]).unwrap_err();
        assert_eq!(err.key, "server.max_concurrent_uploads");
        let s = load(&[("SYNOCHAT__SERVER__CORS_ORIGINS", "https://app.example.org")]).unwrap();
        assert_eq!(s.server.cors_origins, ["https://app.example.org"]);
        let err = load(&[(
            "SYNOCHAT__SERVER__CORS_ORIGINS",
            "https://app.example.org/path",
        )])
        .unwrap_err();
        assert_eq!(err.key, "server.cors_origins");
        let err = load(&[("SYNOCHAT__RATE_LIMIT__KEY_BURST", "0")]).unwrap_err();
        assert_eq!(err.key, "rate_limit");
        load(&[
            ("SYNOCHAT__RATE_LIMIT__ENABLED", "false"),
            ("SYNOCHAT__RATE_LIMIT__KEY_BURST", "0"),
        ])
        .unwrap();
    }

    #[test]
    fn demo_mode_without_keys_refuses_a_public_bind() {
        let err = load(&[("SYNOCHAT__SERVER__BIND", "0.0.0.0:8080")]).unwrap_err();
        assert_eq!(err.key, "server.bind");
    }

    const NAS: [(&str, &str); 3] = [
        ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
        ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
        ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
    ];

    fn with_nas(extra: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        load(&[NAS.as_slice(), extra].concat())
    }

    #[test]
    fn auth_disabled_with_a_real_nas_on_a_public_bind_needs_an_acknowledgement() {
        let open = [
            ("SYNOCHAT__AUTH__DISABLED", "true"),
            ("SYNOCHAT__SERVER__BIND", "0.0.0.0:8080"),
        ];
        let err = with_nas(&open).unwrap_err();
        assert_eq!(err.key, "auth.disabled");
        assert!(
            err.reason.contains("auth.allow_disabled_on_public_bind"),
            "{err}"
        );
        let acknowledged = [
            open.as_slice(),
            &[("SYNOCHAT__AUTH__ALLOW_DISABLED_ON_PUBLIC_BIND", "true")],
        ]
        .concat();
        assert!(with_nas(&acknowledged).unwrap().auth.disabled);
        // Loopback stays as it was: only the local machine reaches it.
        with_nas(&[("SYNOCHAT__AUTH__DISABLED", "true")]).unwrap();
    }

    #[test]
    fn the_published_demo_key_refuses_a_real_nas() {
        let demo_key = [
            ("SYNOCHAT__AUTH__KEYS__DEMO__HASH", PUBLISHED_DEMO_KEY_HASH),
            ("SYNOCHAT__AUTH__KEYS__DEMO__SCOPES", "read"),
        ];
        let err = with_nas(&demo_key).unwrap_err();
        assert_eq!(err.key, "auth.keys.demo.hash");
        assert!(err.reason.contains("hash-key"), "{err}");
        assert_eq!(
            crate::auth::hash_key("sck_demo_7f3a9c1e5b2d4086_not_a_secret"),
            PUBLISHED_DEMO_KEY_HASH
        );
        // Demo mode may use it (that is what it is published for).
        load(
            &[
                demo_key.as_slice(),
                &[
                    ("SYNOCHAT__SERVER__BIND", "0.0.0.0:8080"),
                    ("SYNOCHAT__UPSTREAM__DEMO", "true"),
                ],
            ]
            .concat(),
        )
        .unwrap();
    }

    #[test]
    fn a_public_demo_must_be_chosen_explicitly() {
        let public_with_key = [
            ("SYNOCHAT__SERVER__BIND", "0.0.0.0:8080"),
            ("SYNOCHAT__AUTH__KEYS__CI__HASH", HASH),
            ("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "read"),
        ];
        let err = load(&public_with_key).unwrap_err();
        assert_eq!(err.key, "upstream.url");
        assert!(err.reason.contains("upstream.demo = true"), "{err}");
        let chosen = load(
            &[
                public_with_key.as_slice(),
                &[("SYNOCHAT__UPSTREAM__DEMO", "true")],
            ]
            .concat(),
        )
        .unwrap();
        assert!(chosen.is_demo());
        // A loopback demo (`make run`) needs no switch.
        assert!(load(&public_with_key[1..]).unwrap().is_demo());
        let err = with_nas(&[
            ("SYNOCHAT__UPSTREAM__DEMO", "true"),
            ("SYNOCHAT__AUTH__DISABLED", "true"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "upstream.demo");
        // Named first, before what a NAS would also need (an account, keys).
        let err = load(&[
            ("SYNOCHAT__UPSTREAM__URL", "https://nas.lan:5001"),
            ("SYNOCHAT__UPSTREAM__DEMO", "true"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "upstream.demo");
    }

    #[test]
    fn a_nas_account_without_its_url_is_refused_unless_demo_is_chosen() {
        // The systemd layout: a loopback bind behind nginx, the URL's variable misspelled away.
        let account = [
            ("SYNOCHAT__AUTH__KEYS__CI__HASH", HASH),
            ("SYNOCHAT__UPSTREAM__USERNAME", "chat-gateway"),
            ("SYNOCHAT__UPSTREAM__PASSWORD", "pw"),
        ];
        let err = load(&account).unwrap_err();
        assert_eq!(err.key, "upstream.username");
        assert!(err.reason.contains("upstream.url"), "{err}");
        let err = load(&[(
            "SYNOCHAT__UPSTREAM__PASSWORD_FILE",
            "/nonexistent/dsm_password",
        )])
        .unwrap_err();
        assert_eq!(err.key, "upstream.password_file");
        assert!(err.reason.contains("upstream.demo = true"), "{err}");
        // Demo chosen: the account is set aside, its file not even read.
        let demo = load(&[
            ("SYNOCHAT__UPSTREAM__DEMO", "true"),
            ("SYNOCHAT__UPSTREAM__USERNAME", "chat-gateway"),
            (
                "SYNOCHAT__UPSTREAM__PASSWORD_FILE",
                "/nonexistent/dsm_password",
            ),
        ])
        .unwrap();
        assert!(demo.is_demo());
        assert!(demo.upstream.username.is_none() && demo.upstream.password.is_none());
    }

    #[test]
    fn a_setting_after_a_single_underscore_is_refused_not_ignored() {
        for name in [
            "SYNOCHAT_UPSTREAM__URL",
            "SYNOCHAT_UPSTREAM_URL",
            "SYNOCHAT_rate_limit__enabled",
            "SYNOCHAT_LOG",
        ] {
            let err = load(&[(name, "x")]).unwrap_err();
            assert_eq!(err.key, name);
            assert!(err.reason.contains("SYNOCHAT__UPSTREAM__URL"), "{err}");
        }
        // Not settings: the config file's variable, a client's key, a build's revision.
        for name in [
            "SYNOCHAT_CONFIG",
            "SYNOCHAT_KEY",
            "SYNOCHAT_GIT_REVISION",
            "SYNOCHAT_LOGGER",
        ] {
            load(&[(name, "x")]).unwrap();
        }
    }

    #[test]
    fn a_refused_value_is_never_shown_and_its_key_is_named() {
        for (variable, key) in [
            ("SYNOCHAT__UPSTREAM__URL", "upstream.url"),
            ("SYNOCHAT__SERVER__PUBLIC_URL", "server.public_url"),
            ("SYNOCHAT__LOG__LEVEL", "log.level"),
            ("SYNOCHAT__LOG__FORMAT", "log.format"),
            ("SYNOCHAT__SERVER__CORS_ORIGINS", "server.cors_origins"),
            ("SYNOCHAT__SERVER__FILE_URL_ALLOW", "server.file_url_allow"),
            ("SYNOCHAT__SERVER__BIND", "server.bind"),
            (
                "SYNOCHAT__UPSTREAM__POST_LIST_PAGING",
                "upstream.post_list_paging",
            ),
            ("SYNOCHAT__HOOKS__A__FORMAT", "hooks.a.format"),
            ("SYNOCHAT__TOKENS__A__KIND", "tokens.a.kind"),
            ("SYNOCHAT__INBOUND__A__KIND", "inbound.<name>.kind"),
            ("SYNOCHAT__INBOUND__A__VERIFY", "inbound.<name>.verify"),
        ] {
            // Values that hold what ends a quoted value in the messages, too.
            for value in [
                "hunter2 pw",
                "x\" for key hunter2",
                "x for key hunter2",
                "x`, expected hunter2",
                "x\", expected hunter2",
            ] {
                let err = load(&[(variable, value)]).unwrap_err();
                assert_eq!(err.key, key, "{value}: {err}");
                assert!(!err.to_string().contains("hunter2"), "{value}: {err}");
            }
        }
        // A value of the wrong type: the message names where it was set, the key still parsed.
        let err = load(&[("SYNOCHAT__AUTH__DISABLED", "hunter2")]).unwrap_err();
        assert_eq!(err.key, "auth.disabled");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // The words a setting takes, as its type has them.
        let err = load(&[("SYNOCHAT__UPSTREAM__POST_LIST_PAGING", "x")]).unwrap_err();
        assert_eq!(err.reason, "must be one of `offset` or `anchor`");
        let err = load(&[("SYNOCHAT__HOOKS__A__FORMAT", "x")]).unwrap_err();
        assert!(err.reason.contains("`alertmanager`"), "{err}");
        let err = load(&[("SYNOCHAT__SERVER__BIND", "localhost:8080")]).unwrap_err();
        assert!(err.reason.contains("IP address and a port"), "{err}");
    }

    #[test]
    fn a_variable_for_no_setting_is_named() {
        for (variable, dotted) in [
            ("SYNOCHAT__SERVER__BND", "server.bnd"),
            ("SYNOCHAT__upstream__password_fle", "upstream.password_fle"),
            ("SYNOCHAT__AUTH_DISABLED", "auth_disabled"),
            ("SYNOCHAT__INBOUND__A__KND", "inbound.a.knd"),
        ] {
            let err = load(&[(variable, "1")]).unwrap_err();
            assert_eq!(err.key, variable);
            assert!(err.reason.starts_with(&format!("names {dotted},")), "{err}");
            assert!(err.reason.contains("expected one of"), "{err}");
        }
    }

    #[test]
    fn urls_that_would_be_shown_with_a_password_are_refused() {
        let err =
            with_nas(&[("SYNOCHAT__UPSTREAM__URL", "https://admin:hunter2@nas:5001")]).unwrap_err();
        assert_eq!(err.key, "upstream.url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for bad in ["ftp://gateway.example/", "https://u:p@gateway.example/"] {
            let err = load(&[("SYNOCHAT__SERVER__PUBLIC_URL", bad)]).unwrap_err();
            assert_eq!(err.key, "server.public_url", "{bad}");
        }
        load(&[("SYNOCHAT__SERVER__PUBLIC_URL", "https://gateway.example/")]).unwrap();
    }

    #[test]
    fn a_misspelled_shared_inbound_key_is_named_as_such() {
        let err = load(&[("SYNOCHAT__INBOUND__REPLY_TIMEOUT", "5000")]).unwrap_err();
        assert_eq!(err.key, "inbound");
        assert!(err.reason.contains("reply_timeout_ms"), "{err}");
        assert!(err.reason.contains("misspelled"), "{err}");
    }

    #[test]
    fn a_log_level_serve_would_refuse_is_refused_at_load() {
        let err = load(&[("SYNOCHAT__LOG__LEVEL", "nonsense=bogus")]).unwrap_err();
        assert_eq!(err.key, "log.level");
        load(&[("SYNOCHAT__LOG__LEVEL", "syno_chat_gateway=debug,warn")]).unwrap();
        // A word that is no level parses as a target and would silence every other line.
        for (typo, at) in [("warning", 1), ("verbose", 1), ("info,warning", 2)] {
            let err = load(&[("SYNOCHAT__LOG__LEVEL", typo)]).unwrap_err();
            assert_eq!(err.key, "log.level");
            assert!(
                err.reason
                    .starts_with(&format!("directive {at} is a bare name")),
                "{err}"
            );
        }
        load(&[("SYNOCHAT__LOG__LEVEL", "INFO")]).unwrap();
        load(&[("SYNOCHAT__LOG__LEVEL", "off")]).unwrap();
        load(&[("SYNOCHAT__LOG__LEVEL", "3")]).unwrap();
        // An unset variable in a compose file: nothing would be written.
        for empty in ["", " ", ","] {
            let err = load(&[("SYNOCHAT__LOG__LEVEL", empty)]).unwrap_err();
            assert_eq!(err.key, "log.level", "{empty:?}");
        }
    }

    #[test]
    fn the_store_url_is_shown_without_any_password() {
        let s = load(&[(
            "SYNOCHAT__STORE__URL",
            "postgres://gw:inline@db/chat?password=hunter2&sslmode=require&sslpassword=keypass",
        )])
        .unwrap();
        let shown = s.masked_json();
        for secret in ["inline", "hunter2", "keypass"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(
            crate::store::redacted_url("sqlite://data/gateway.db"),
            "sqlite://data/gateway.db"
        );
    }

    #[test]
    fn integration_tokens_are_unquoted_and_checked() {
        let token = "a".repeat(64);
        let s = load(&[
            ("SYNOCHAT__TOKENS__ALERTS__TOKEN", &format!("%22{token}%22")),
            ("SYNOCHAT__TOKENS__HELPER__TOKEN", &format!("\"{token}\"")),
            ("SYNOCHAT__TOKENS__HELPER__KIND", "bot"),
        ])
        .unwrap();
        assert_eq!(
            s.tokens["alerts"].token.as_ref().unwrap().expose_secret(),
            token
        );
        assert_eq!(s.tokens["alerts"].kind, TokenKind::Webhook);
        assert_eq!(s.tokens["helper"].kind, TokenKind::Bot);
        let err = load(&[("SYNOCHAT__TOKENS__SHORT__TOKEN", "abc")]).unwrap_err();
        assert_eq!(err.key, "tokens.short.token");
        let err = load(&[
            ("SYNOCHAT__TOKENS__X__TOKEN", &token),
            ("SYNOCHAT__TOKENS__X__KIND", "robot"),
        ])
        .unwrap_err();
        // Named by its key; the value is not repeated (it could be a secret put there).
        assert!(err.to_string().contains("tokens.x.kind"), "{err}");
        assert!(!err.to_string().contains("robot"), "{err}");
    }

    #[test]
    fn hooks_need_one_target_a_secret_hash_and_a_valid_template() {
        let token = "a".repeat(64);
        let ok = load(&[
            ("SYNOCHAT__HOOKS__OPS__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__OPS__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__KUMA__USER", "7"),
            ("SYNOCHAT__HOOKS__KUMA__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__KUMA__TEMPLATE", "{{ msg }}"),
            ("SYNOCHAT__HOOKS__AM__TOKEN", "alerts"),
            ("SYNOCHAT__HOOKS__AM__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__AM__FORMAT", "alertmanager"),
            ("SYNOCHAT__TOKENS__ALERTS__TOKEN", &token),
        ])
        .unwrap();
        assert_eq!(s_channel(&ok, "ops"), Some("ops"));
        assert_eq!(ok.hooks["kuma"].user.as_deref(), Some("7"));
        assert!(!ok.masked_json().contains(HASH));
        let err = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__USER", "alice"),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
        ])
        .unwrap_err();
        assert_eq!(err.key, "hooks.x");
        let err = load(&[("SYNOCHAT__HOOKS__X__CHANNEL", "ops")]).unwrap_err();
        assert_eq!(err.key, "hooks.x.secret_hash");
        let err = load(&[
            ("SYNOCHAT__HOOKS__X__TOKEN", "missing"),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
        ])
        .unwrap_err();
        assert_eq!(err.key, "hooks.x.token");
        // Demo mode's own tokens, as the simulator's incoming webhook and chatbot.
        let demo_hook = [
            ("SYNOCHAT__HOOKS__X__TOKEN", DEMO_WEBHOOK_TOKEN),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
        ];
        assert!(load(&demo_hook).unwrap().is_demo());
        let with_a_nas = [
            demo_hook.as_slice(),
            &[("SYNOCHAT__AUTH__DISABLED", "true")],
        ]
        .concat();
        assert_eq!(with_nas(&with_a_nas).unwrap_err().key, "hooks.x.token");
        let err = load(&[
            ("SYNOCHAT__HOOKS__X__TOKEN", DEMO_BOT_TOKEN),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
        ])
        .unwrap_err();
        assert!(err.reason.contains("chatbot token"), "{err}");
        let err = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__X__TEMPLATE", "{{ unclosed"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "hooks.x.template");
        let err = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__X__FORMAT", "irc"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("hooks.x.format"), "{err}");
        assert!(!err.to_string().contains("irc"), "{err}");
        let window = |secs: &str| {
            load(&[
                ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
                ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
                ("SYNOCHAT__HOOKS__X__DUPLICATE_WINDOW_SECS", secs),
            ])
        };
        assert_eq!(
            window("0").unwrap().hooks["x"].duplicate_window_secs,
            Some(0)
        );
        assert_eq!(
            window("86401").unwrap_err().key,
            "hooks.x.duplicate_window_secs"
        );
        // A signing secret stands in for the secret hash, if it is long enough; the signature
        // headers need it.
        let signed = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SIGNING_SECRET", "sixteen-chars-ok"),
        ])
        .unwrap();
        assert!(!signed.masked_json().contains("sixteen-chars-ok"));
        let short = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SIGNING_SECRET", "short"),
        ]);
        assert_eq!(short.unwrap_err().key, "hooks.x.signing_secret");
        // A Standard Webhooks secret is base64 after its prefix.
        let signed_by = |secret: &str| {
            load(&[
                ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
                ("SYNOCHAT__HOOKS__X__SIGNING_SECRET", secret),
            ])
        };
        assert!(signed_by("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        let not_base64 = signed_by("whsec_not-base64-but-long-enough");
        assert_eq!(not_base64.unwrap_err().key, "hooks.x.signing_secret");
        let unsigned_header = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SECRET_HASH", HASH),
            ("SYNOCHAT__HOOKS__X__SIGNATURE_TIMESTAMP_HEADER", "X-Stamp"),
        ]);
        assert_eq!(
            unsigned_header.unwrap_err().key,
            "hooks.x.signature_timestamp_header"
        );
        let bad_name = load(&[
            ("SYNOCHAT__HOOKS__X__CHANNEL", "ops"),
            ("SYNOCHAT__HOOKS__X__SIGNING_SECRET", "sixteen-chars-ok"),
            ("SYNOCHAT__HOOKS__X__SIGNATURE_HEADER", "X Sig"),
        ]);
        assert_eq!(bad_name.unwrap_err().key, "hooks.x.signature_header");
    }

    fn s_channel<'a>(s: &'a Settings, hook: &str) -> Option<&'a str> {
        s.hooks[hook].channel.as_deref()
    }

    #[test]
    fn the_store_url_is_checked_and_its_password_masked() {
        let s = load(&[(
            "SYNOCHAT__STORE__URL",
            "postgres://gateway:hunter2@db.example/chat",
        )])
        .unwrap();
        assert!(!s.masked_json().contains("hunter2"), "{}", s.masked_json());
        assert!(s.masked_json().contains("db.example"));
        let err = load(&[("SYNOCHAT__STORE__URL", "mysql://db.example/chat")]).unwrap_err();
        assert_eq!(err.key, "store.url");
        assert_eq!(s.store.timeout_ms, 15_000);
        // Above the pool's and SQLite's own 5 s waits.
        for (value, fine) in [("6000", true), ("5999", false), ("600001", false)] {
            let loaded = load(&[("SYNOCHAT__STORE__TIMEOUT_MS", value)]);
            match fine {
                true => assert_eq!(
                    loaded.unwrap().store.timeout_ms,
                    value.parse::<u64>().unwrap()
                ),
                false => assert_eq!(loaded.unwrap_err().key, "store.timeout_ms"),
            }
        }
    }

    #[test]
    fn whole_number_settings_refuse_fractions_booleans_and_words() {
        let dir = tempfile::tempdir().unwrap();
        let from_file = |toml: &str| {
            let file = dir.path().join("gateway.toml");
            std::fs::write(&file, toml).unwrap();
            Settings::load(Sources {
                file: Some(file),
                env: Some(Default::default()),
            })
        };
        for (toml, key, reason) in [
            (
                "[delivery]\nmax_message_parts = 2.5\n",
                "delivery.max_message_parts",
                "decimal point",
            ),
            (
                "[delivery]\nmax_message_parts = 3.0\n",
                "delivery.max_message_parts",
                "decimal point",
            ),
            (
                "[upstream]\ntimeout_ms = true\n",
                "upstream.timeout_ms",
                "not true or false",
            ),
            (
                "[store]\ntimeout_ms = \"yes\"\n",
                "store.timeout_ms",
                "whole number",
            ),
            (
                "[rate_limit]\nkey_burst = -1\n",
                "rate_limit.key_burst",
                "negative",
            ),
            (
                "[rate_limit]\nkey_burst = 4294967296\n",
                "rate_limit.key_burst",
                "too large",
            ),
            (
                "[store]\nmax_connections = 1.5\n",
                "store.max_connections",
                "decimal point",
            ),
            (
                "[inbound]\nreply_timeout_ms = 2.5\n",
                "inbound.reply_timeout_ms",
                "decimal point",
            ),
        ] {
            let error = from_file(toml).unwrap_err();
            assert_eq!(error.key, key, "{toml}: {error}");
            assert!(error.reason.contains(reason), "{toml}: {error}");
        }
        let loaded =
            from_file("[delivery]\nmax_message_parts = 7\n[store]\nmax_connections = 3\n").unwrap();
        assert_eq!(loaded.delivery.max_message_parts, 7);
        assert_eq!(loaded.store.max_connections, Some(3));
        // Environment variables carry numbers as text, with spaces around them at times.
        let loaded = load(&[
            ("SYNOCHAT__DELIVERY__MAX_MESSAGE_PARTS", " 9 "),
            ("SYNOCHAT__SERVER__WORKERS", "2"),
            ("SYNOCHAT__INBOUND__REPLY_TIMEOUT_MS", "4000"),
        ])
        .unwrap();
        assert_eq!(loaded.delivery.max_message_parts, 9);
        assert_eq!(loaded.server.workers, Some(2));
        assert_eq!(loaded.inbound.reply_timeout_ms, 4000);
        for value in ["yes", "2.5", "true"] {
            let error = load(&[("SYNOCHAT__DELIVERY__MAX_MESSAGE_PARTS", value)]).unwrap_err();
            assert_eq!(error.key, "delivery.max_message_parts", "{value}: {error}");
        }
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_line_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "[upstream]\npassword = \"s3cret-Unclosed\n",
            "[store]\nurl = postgres://gw:s3cret-Unclosed@db/chat\n",
            "[upstream]\npassword = \"s3cret-Unclosed\"\npassword = \"s3cret-Unclosed\"\n",
        ] {
            let file = dir.path().join("gateway.toml");
            std::fs::write(&file, bad).unwrap();
            let error = Settings::load(Sources {
                file: Some(file),
                env: Some(Default::default()),
            })
            .unwrap_err()
            .to_string();
            assert!(!error.contains("s3cret"), "{error}");
            assert!(!error.contains('\n'), "one line: {error}");
            assert!(error.contains("parse error at line "), "{error}");
        }
    }

    #[test]
    fn a_type_error_does_not_quote_the_value_given() {
        for (key, value) in [
            ("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "s3cret-in-a-number"),
            ("SYNOCHAT__LOG__FORMAT", "s3cret-as-a-choice"),
            ("SYNOCHAT__DELIVERY__RATE_PER_SEC", "s3cret \"quoted\""),
            ("SYNOCHAT__INBOUND__REPLY_TIMEOUT_MS", "s3cret-in-a-number"),
            ("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "s3cret-as-a-scope"),
        ] {
            let error = load(&[(key, value)]).unwrap_err().to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
        let error = load(&[("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "s3cret")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected a whole number") && error.contains("upstream.timeout_ms"),
            "the key and the type stay: {error}"
        );
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = load(&[
            ("SYNOCHAT__UPSTREAM__URL", "https://nas.example:5001"),
            ("SYNOCHAT__UPSTREAM__USERNAME", "bot"),
            ("SYNOCHAT__UPSTREAM__PASSWORD_FILE", file.to_str().unwrap()),
            ("SYNOCHAT__AUTH__DISABLED", "true"),
        ])
        .unwrap();
        assert_eq!(s.upstream.password.unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn inbounds_need_their_token_and_a_known_kind() {
        let token = "a".repeat(64);
        let settings = load(&[
            ("SYNOCHAT__INBOUND__OPS__TOKEN", &format!("\"{token}\"")),
            ("SYNOCHAT__INBOUND__DEPLOY__TOKEN", &token),
            ("SYNOCHAT__INBOUND__DEPLOY__KIND", "slash_command"),
        ])
        .unwrap();
        assert_eq!(
            settings.inbound.receivers["ops"].kind,
            InboundKind::OutgoingWebhook
        );
        assert_eq!(
            settings.inbound.receivers["ops"]
                .token
                .as_ref()
                .unwrap()
                .expose_secret(),
            token
        );
        assert_eq!(
            settings.inbound.receivers["deploy"].kind,
            InboundKind::SlashCommand
        );
        assert!(!settings.masked_json().contains(&token));
        assert_eq!(settings.events.retention_secs, 604_800);

        let err = load(&[("SYNOCHAT__INBOUND__OPS__KIND", "chatbot")]).unwrap_err();
        assert_eq!(err.key, "inbound.ops.token");
        let err = load(&[
            ("SYNOCHAT__INBOUND__OPS__TOKEN", &token),
            ("SYNOCHAT__INBOUND__OPS__KIND", "webhook"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("kind") || err.to_string().contains("variant"),
            "{err}"
        );
        let err = load(&[("SYNOCHAT__EVENTS__HEARTBEAT_MS", "0")]).unwrap_err();
        assert_eq!(err.key, "events.heartbeat_ms");
        let err = load(&[("SYNOCHAT__EVENTS__RETENTION_SECS", "0")]).unwrap_err();
        assert_eq!(err.key, "events.retention_secs");
        let err = load(&[("SYNOCHAT__DELIVERY__RETENTION_SECS", "3599")]).unwrap_err();
        assert_eq!(err.key, "delivery.retention_secs");
        let settings = load(&[("SYNOCHAT__DELIVERY__RETENTION_SECS", "3600")]).unwrap();
        assert_eq!(settings.delivery.retention_secs, 3_600);
    }

    #[test]
    fn dsm_verified_inbounds_take_no_token_and_subscriptions_are_bounded() {
        let settings = load(&[("SYNOCHAT__INBOUND__OPS__VERIFY", "dsm")]).unwrap();
        assert_eq!(settings.inbound.receivers["ops"].verify, InboundVerify::Dsm);
        let err = load(&[
            ("SYNOCHAT__INBOUND__OPS__VERIFY", "dsm"),
            ("SYNOCHAT__INBOUND__OPS__TOKEN", &"a".repeat(64)),
        ])
        .unwrap_err();
        assert_eq!(err.key, "inbound.ops.token");
        assert_eq!(settings.subscriptions.max_failures, 10);
        assert!(!settings.subscriptions.allow_private);
        let err = load(&[("SYNOCHAT__SUBSCRIPTIONS__MAX_FAILURES", "0")]).unwrap_err();
        assert_eq!(err.key, "subscriptions.max_failures");
        assert_eq!(
            settings.subscriptions.retry_delays_ms[..2],
            [5_000, 300_000]
        );
        assert_eq!(settings.subscriptions.max_age_secs, 345_600);
        let s = load(&[("SYNOCHAT__SUBSCRIPTIONS__RETRY_DELAYS_MS", "100, 2000")]).unwrap();
        assert_eq!(s.subscriptions.retry_delays_ms, [100, 2000]);
        for bad in ["", "5", "100,x"] {
            let err = load(&[("SYNOCHAT__SUBSCRIPTIONS__RETRY_DELAYS_MS", bad)]).unwrap_err();
            assert!(
                err.key.starts_with("subscriptions") || err.key == "config",
                "{bad}: {err:?}"
            );
        }
        let err = load(&[("SYNOCHAT__SUBSCRIPTIONS__MAX_AGE_SECS", "10")]).unwrap_err();
        assert_eq!(err.key, "subscriptions.max_age_secs");
        // The shared setting sits next to the receivers, as the environment gives it (text)
        // and as TOML writes it (a number), and is bounded.
        assert_eq!(settings.inbound.reply_timeout_ms, 3_000);
        let s = load(&[
            ("SYNOCHAT__INBOUND__REPLY_TIMEOUT_MS", "2500"),
            ("SYNOCHAT__INBOUND__OPS__VERIFY", "dsm"),
        ])
        .unwrap();
        assert_eq!(s.inbound.reply_timeout_ms, 2_500);
        assert_eq!(s.inbound.receivers.len(), 1, "not a receiver");
        let err = load(&[("SYNOCHAT__INBOUND__REPLY_TIMEOUT_MS", "5")]).unwrap_err();
        assert_eq!(err.key, "inbound.reply_timeout_ms");
        let toml = "[inbound]\nreply_timeout_ms = 1500\n[inbound.ops]\nverify = \"dsm\"\n";
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap();
        assert_eq!(s.inbound.reply_timeout_ms, 1_500);
        assert_eq!(s.inbound.receivers["ops"].verify, InboundVerify::Dsm);
        // The DSM token list's refresh interval is shared the same way.
        assert_eq!(settings.inbound.dsm_refresh_ms, 60_000);
        let s = load(&[
            ("SYNOCHAT__INBOUND__DSM_REFRESH_MS", "5000"),
            ("SYNOCHAT__INBOUND__OPS__VERIFY", "dsm"),
        ])
        .unwrap();
        assert_eq!(s.inbound.dsm_refresh_ms, 5_000);
        assert_eq!(s.inbound.receivers.len(), 1, "not a receiver");
        let err = load(&[("SYNOCHAT__INBOUND__DSM_REFRESH_MS", "10")]).unwrap_err();
        assert_eq!(err.key, "inbound.dsm_refresh_ms");
    }
}
