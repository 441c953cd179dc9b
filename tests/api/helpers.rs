//! Starts a fresh DSM simulator and a gateway pointed at it, both on port 0, per test.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use secrecy::SecretString;
use serde_json::Value;
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::config::{HookSettings, KeySettings, Settings, TokenKind, TokenSettings};
use syno_chat_gateway::sim::{
    DEMO_ACCOUNT, DEMO_PASSWORD, LoggedRequest, SimConfig, SimControl, Simulator,
};
use syno_chat_gateway::startup::{AppHandle, Application};

pub const READ_KEY: &str = "test-read-key";
pub const WRITE_KEY: &str = "test-write-key";
pub const ADMIN_KEY: &str = "test-admin-key";
/// Configured name of the simulator's demo incoming-webhook token.
pub const WEBHOOK_TOKEN_NAME: &str = "alerts";
/// Configured name of the simulator's demo chatbot token.
pub const BOT_TOKEN_NAME: &str = "helper";

pub struct TestApp {
    pub base: String,
    /// The separate metrics listener, when `metrics.bind` is set.
    pub metrics_base: Option<String>,
    pub sim: SimControl,
    pub http: awc::Client,
    pub handle: AppHandle,
    pub stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    _simulator: Simulator,
    /// The gateway's store.
    pub store_url: SecretString,
    /// Holds the test's SQLite store.
    _store_dir: tempfile::TempDir,
}

/// The answer to a gateway call.
pub struct Answer {
    pub status: StatusCode,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and code; returns the body.
    pub fn assert_problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].as_str().unwrap().ends_with(code));
        assert!(!self.body["title"].as_str().unwrap().is_empty());
        assert!(!self.body["detail"].as_str().unwrap().is_empty());
        assert_eq!(
            self.body["request_id"].as_str(),
            self.header("x-request-id")
        );
        &self.body
    }
}

/// Settings for a gateway in front of `sim_url`, with one key per scope.
pub fn settings_for(sim_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.workers = Some(2);
    settings.server.shutdown_timeout_secs = 1;
    settings.upstream.url = Some(sim_url.parse().unwrap());
    settings.upstream.username = Some(DEMO_ACCOUNT.to_owned());
    settings.upstream.password = Some(SecretString::from(DEMO_PASSWORD.to_owned()));
    settings.upstream.timeout_ms = 3_000;
    for (name, key, scope) in [
        ("reader", READ_KEY, "read"),
        ("writer", WRITE_KEY, "write"),
        ("admin", ADMIN_KEY, "admin"),
    ] {
        settings.auth.keys.insert(
            name.to_owned(),
            KeySettings {
                hash: Some(SecretString::from(hash_key(key))),
                hash_file: None,
                scopes: vec![scope.parse().unwrap()],
            },
        );
    }
    settings
}

/// A SQLite store in `dir` (a test's temporary directory).
pub fn store_url(dir: &std::path::Path) -> SecretString {
    SecretString::from(format!("sqlite://{}", dir.join("store.db").display()))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(SimConfig::default(), |_| {}).await
}

pub async fn spawn_app_with(sim_config: SimConfig, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_sim(sim_config, |settings, _| adjust(settings)).await
}

/// Like [`spawn_app_with`], with the simulator at hand while adjusting the settings (e.g. to
/// create an integration in Chat and configure its token in the gateway).
pub async fn spawn_app_with_sim(
    sim_config: SimConfig,
    adjust: impl FnOnce(&mut Settings, &SimControl),
) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let simulator = Simulator::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts");
    let store_dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = settings_on(&simulator, &store_dir);
    adjust(&mut settings, &simulator.control());
    start(settings, simulator, store_dir).await
}

/// The settings of a gateway in front of `simulator`, its store in `store_dir`.
fn settings_on(simulator: &Simulator, store_dir: &tempfile::TempDir) -> Settings {
    let mut settings = settings_for(&simulator.base_url());
    settings.store.url = store_url(store_dir.path());
    let control = simulator.control();
    for (name, token, kind) in [
        (
            WEBHOOK_TOKEN_NAME,
            control.demo_webhook_token(),
            TokenKind::Webhook,
        ),
        (BOT_TOKEN_NAME, control.demo_bot_token(), TokenKind::Bot),
    ] {
        settings.tokens.insert(
            name.to_owned(),
            TokenSettings {
                token: Some(SecretString::from(token)),
                token_file: None,
                kind,
            },
        );
    }
    settings
}

async fn start(settings: Settings, simulator: Simulator, store_dir: tempfile::TempDir) -> TestApp {
    let store_url = settings.store.url.clone();
    let app = Application::build(settings).await.expect("gateway starts");
    let base = format!("http://{}", app.address());
    let metrics_base = app.metrics_address().map(|a| format!("http://{a}"));
    let handle = app.handle();
    let (done, stopped) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let _ = app.run_until_stopped().await;
        let _ = done.send(());
    });
    TestApp {
        base,
        metrics_base,
        sim: simulator.control(),
        http: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .disable_redirects()
            .finish(),
        handle,
        stopped: Some(stopped),
        _simulator: simulator,
        store_url,
        _store_dir: store_dir,
    }
}

impl TestApp {
    /// Starts another gateway (default settings) on the same store and simulator: a second
    /// replica when the store is PostgreSQL. Answers its base URL; it runs until the test ends.
    pub async fn another_replica(&self) -> String {
        let mut settings = settings_on(&self._simulator, &self._store_dir);
        settings.store.url = self.store_url.clone();
        let app = Application::build(settings).await.expect("replica starts");
        let base = format!("http://{}", app.address());
        actix_web::rt::spawn(app.run_until_stopped());
        base
    }

    /// Stops the gateway and starts a new one (default settings) on the same store and
    /// simulator: a restart, which forgets what the process kept in memory.
    pub async fn restarted(self) -> TestApp {
        self.restarted_with(|_| {}).await
    }

    /// [`Self::restarted`] with its settings changed by `adjust` (a configuration edited
    /// between two runs).
    pub async fn restarted_with(mut self, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        self.stop().await;
        let mut settings = settings_on(&self._simulator, &self._store_dir);
        adjust(&mut settings);
        start(settings, self._simulator, self._store_dir).await
    }
}

impl TestApp {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.insert_header(("Authorization", format!("Bearer {key}")));
        }
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        read(response.expect("gateway answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, Some(READ_KEY), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(WRITE_KEY), Some(body)).await
    }

    /// Sends a raw body with the given content type (for malformed-input tests).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &'static str) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await;
        read(response.expect("gateway answers")).await
    }

    /// Stops the gateway gracefully and waits until it has logged out.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }
}

/// A gateway whose hooks, each `(name, secret)`, post to channel 1.
pub async fn spawn_app_with_hooks(hooks: &[(&str, &str)]) -> TestApp {
    spawn_app_with(SimConfig::default(), |settings| {
        for (name, secret) in hooks {
            let hook = HookSettings {
                secret_hash: Some(SecretString::from(hash_key(secret))),
                channel: Some("1".into()),
                ..HookSettings::default()
            };
            settings.hooks.insert((*name).into(), hook);
        }
    })
    .await
}

/// The text of the `count`-th post DSM took, once it has (the outbox posts after the answer).
pub async fn nth_post_text(app: &TestApp, count: usize) -> String {
    for _ in 0..200 {
        if app.sim.count("SYNO.Chat.Post", "create") >= count {
            let sent = last_request(app, "SYNO.Chat.Post", "create");
            return param(&sent, "message").unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("post {count} never came");
}

/// The last call of `api` `method` the simulated NAS received.
pub fn last_request(app: &TestApp, api: &str, method: &str) -> LoggedRequest {
    app.sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.api.as_deref() == Some(api) && r.method.as_deref() == Some(method))
        .unwrap_or_else(|| panic!("{api} {method} reached the NAS"))
}

/// The value of parameter `name` in a request the simulated NAS received.
pub fn param<'a>(request: &'a LoggedRequest, name: &str) -> Option<&'a str> {
    request
        .params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub async fn read<S>(mut response: awc::ClientResponse<S>) -> Answer
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let bytes = response.body().limit(16 * 1024 * 1024).await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body,
    }
}
