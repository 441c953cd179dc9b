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
    pub store: StoreSettings,
    /// Receivers for Chat's outgoing webhooks, slash commands and chatbots, by name.
    pub inbound: BTreeMap<String, InboundSettings>,
    pub events: EventsSettings,
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
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// How long received events are kept (and can be replayed).
    pub retention_secs: u64,
    /// Interval of the keep-alive comment on event streams.
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_STORE_URL),
            url_file: None,
            password: None,
            password_file: None,
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
    pub workers: Option<usize>,
    /// Seconds SIGTERM waits for in-flight requests before stopping.
    pub shutdown_timeout_secs: u64,
    /// Largest file accepted by the upload route.
    pub max_upload_bytes: usize,
    /// Reverse proxies (CIDRs or addresses) whose `X-Forwarded-*`/`Forwarded` headers are
    /// honoured; a list or a comma-separated string.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            workers: None,
            shutdown_timeout_secs: 30,
            max_upload_bytes: 32 * 1024 * 1024,
            trusted_proxies: Vec::new(),
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
    pub timeout_ms: u64,
    /// Longest pause between login attempts after failures.
    pub login_backoff_max_secs: u64,
    pub tls: TlsSettings,
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
            tls: TlsSettings::default(),
        }
    }
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
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// Hex SHA-256 of the key (`syno-chat-gateway hash-key`).
    #[serde(serialize_with = "mask_secret")]
    pub hash: Option<SecretString>,
    pub hash_file: Option<PathBuf>,
    /// `read`, `write`, `admin` (each implies the ones before it); a list or a comma-separated string.
    #[serde(deserialize_with = "list_or_comma_string")]
    pub scopes: Vec<String>,
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

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    list_or_comma_string(d)?
        .iter()
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{entry:?} is not a CIDR (10.0.0.0/8) or an IP address"
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
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(sources.env);
        let settings: Settings = builder
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        settings.resolve_secret_files()?.validated()
    }

    fn resolve_secret_files(mut self) -> Result<Self, ConfigError> {
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
        for (name, token) in &mut self.tokens {
            let key = format!("tokens.{name}.token");
            resolve_file(&mut token.token, &token.token_file, &key)?;
            token.token = token
                .token
                .take()
                .map(|t| SecretString::from(normalize_token(t.expose_secret())));
        }
        for (name, inbound) in &mut self.inbound {
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
        if let Some(url) = &up.url {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(
                    "upstream.url",
                    "must be an http:// or https:// URL with a host",
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
        if !(100..=600_000).contains(&up.timeout_ms) {
            return Err(ConfigError::new(
                "upstream.timeout_ms",
                "must be between 100 and 600000",
            ));
        }
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
        if let Some(ca) = &up.tls.ca_file
            && !ca.is_file()
        {
            return Err(ConfigError::new(
                "upstream.tls.ca_file",
                format!("{} is not a readable file", ca.display()),
            ));
        }
        if self.cache.ttl_secs > 86_400 {
            return Err(ConfigError::new("cache.ttl_secs", "must be at most 86400"));
        }
        if self.server.workers == Some(0) {
            return Err(ConfigError::new("server.workers", "must be at least 1"));
        }
        for (name, key) in &self.auth.keys {
            let hash = key
                .hash
                .as_ref()
                .map(|h| h.expose_secret().to_owned())
                .unwrap_or_default();
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
            if let Some(bad) = key
                .scopes
                .iter()
                .find(|s| !matches!(s.as_str(), "read" | "write" | "admin"))
            {
                return Err(ConfigError::new(
                    format!("auth.keys.{name}.scopes"),
                    format!("unknown scope {bad:?} (expected read, write or admin)"),
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
        for (name, inbound) in &self.inbound {
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
            if inbound
                .token
                .as_ref()
                .is_none_or(|t| t.expose_secret().is_empty())
            {
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
        if !(10..=3_600_000).contains(&self.events.heartbeat_ms) {
            return Err(ConfigError::new(
                "events.heartbeat_ms",
                "must be between 10 and 3600000",
            ));
        }
        if self.server.max_upload_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_upload_bytes",
                "must be at least 1",
            ));
        }
        Ok(self)
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
        assert_eq!(s.auth.keys["ci"].scopes, ["read", "write"]);
        assert!(!s.masked_json().contains("\"pw\""));
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
    fn trusted_proxies_accept_cidrs_and_addresses() {
        let s = load(&[("SYNOCHAT__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).unwrap();
        assert_eq!(s.server.trusted_proxies.len(), 2);
        let err = load(&[("SYNOCHAT__SERVER__TRUSTED_PROXIES", "everyone")]).unwrap_err();
        assert!(err.to_string().contains("everyone"), "{err}");
    }

    #[test]
    fn demo_mode_without_keys_refuses_a_public_bind() {
        let err = load(&[("SYNOCHAT__SERVER__BIND", "0.0.0.0:8080")]).unwrap_err();
        assert_eq!(err.key, "server.bind");
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
        assert!(err.to_string().contains("robot"), "{err}");
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
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = std::env::temp_dir().join(format!("synochat-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
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
        assert_eq!(settings.inbound["ops"].kind, InboundKind::OutgoingWebhook);
        assert_eq!(
            settings.inbound["ops"]
                .token
                .as_ref()
                .unwrap()
                .expose_secret(),
            token
        );
        assert_eq!(settings.inbound["deploy"].kind, InboundKind::SlashCommand);
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
    }
}
