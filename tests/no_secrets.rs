//! Passwords, sids, SynoTokens, API keys and hook secrets never reach the logs, even at the most
//! verbose level (the same capture also checks that a misnamed hook target is reported at start-up).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::config::{HookSettings, KeySettings, LogFormat, LogSettings, Settings};
use syno_chat_gateway::logging;
use syno_chat_gateway::sim::{DEMO_ACCOUNT, DEMO_PASSWORD, SimConfig, Simulator};
use syno_chat_gateway::startup::Application;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const API_KEY: &str = "key-that-must-not-be-logged";
const HOOK_SECRET: &str = "hook-secret-that-must-not-be-logged";
const SIGNING_SECRET: &str = "signing-secret-that-must-not-be-logged";

#[actix_web::test]
async fn no_secret_appears_in_the_logs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let captured = Captured::default();
    let sink = captured.clone();
    // SAFETY of the test: this binary holds only this test, so the global subscriber is ours.
    unsafe { std::env::remove_var("RUST_LOG") };
    logging::init(
        &LogSettings {
            format: LogFormat::Json,
            level: "trace".to_owned(),
        },
        move || sink.clone(),
    )
    .unwrap();

    let simulator = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let sim = simulator.control();
    let mut settings = Settings::default();
    settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let store_dir = tempfile::tempdir().unwrap();
    settings.store.url = SecretString::from(format!(
        "sqlite://{}",
        store_dir.path().join("store.db").display()
    ));
    settings.server.workers = Some(1);
    settings.upstream.url = Some(simulator.base_url().parse().unwrap());
    settings.upstream.username = Some(DEMO_ACCOUNT.to_owned());
    settings.upstream.password = Some(SecretString::from(DEMO_PASSWORD.to_owned()));
    settings.auth.keys.insert(
        "ci".to_owned(),
        KeySettings {
            hash: Some(SecretString::from(hash_key(API_KEY))),
            hash_file: None,
            scopes: vec!["admin".parse().unwrap()],
        },
    );
    settings.hooks.insert(
        "alerts".to_owned(),
        HookSettings {
            channel: Some("general".to_owned()),
            secret_hash: Some(SecretString::from(hash_key(HOOK_SECRET))),
            ..HookSettings::default()
        },
    );
    settings.hooks.insert(
        "signed".to_owned(),
        HookSettings {
            channel: Some("general".to_owned()),
            signing_secret: Some(SecretString::from(SIGNING_SECRET)),
            ..HookSettings::default()
        },
    );
    // A hook whose target name matches nothing is reported at start-up (its secret never).
    settings.hooks.insert(
        "misnamed".to_owned(),
        HookSettings {
            channel: Some("no-such-channel".to_owned()),
            secret_hash: Some(SecretString::from(hash_key(HOOK_SECRET))),
            ..HookSettings::default()
        },
    );
    let inbound_token = "i".repeat(64);
    settings.subscriptions.allow_private = true;
    settings.inbound.receivers.insert(
        "ops".to_owned(),
        syno_chat_gateway::config::InboundSettings {
            token: Some(SecretString::from(inbound_token.clone())),
            ..Default::default()
        },
    );
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.address());
    let handle = app.handle();
    let (done, stopped) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let _ = app.run_until_stopped().await;
        let _ = done.send(());
    });

    let client = awc::Client::default();
    let auth = ("Authorization", format!("Bearer {API_KEY}"));
    let mut sessions = Vec::new();
    for round in 0..2 {
        let posted = client
            .post(format!("{base}/api/v1/channels/1/posts"))
            .insert_header(auth.clone())
            .send_json(&serde_json::json!({"message": format!("round {round}")}))
            .await
            .unwrap();
        assert_eq!(posted.status(), 201);
        let listed = client
            .get(format!("{base}/api/v1/channels/1/posts"))
            .insert_header(auth.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        sessions.extend(sim.active_sessions());
        // Force a re-login so a second sid and token are issued and used.
        sim.expire_all_sessions();
    }
    client
        .get(format!("{base}/api/v1/users"))
        .insert_header(auth.clone())
        .insert_header(("X-Request-Id", "users-request"))
        .send()
        .await
        .unwrap();
    // A hook's secret in the path, on a matched route and on one that is not.
    for path in [
        format!("/hooks/alerts/{HOOK_SECRET}"),
        format!("/hooks/alerts/{HOOK_SECRET}/more"),
        // Mattermost's shape: the secret alone.
        format!("/hooks/{HOOK_SECRET}"),
        // Percent-encoded, as actix decodes it to route: the same hook.
        format!("/hook%73/alerts/{HOOK_SECRET}"),
        // The name and the secret the wrong way round, with more after them or not.
        format!("/hooks/{HOOK_SECRET}/alerts"),
        format!("/hooks/{HOOK_SECRET}/x/y"),
    ] {
        let mut answer = client
            .post(format!("{base}{path}"))
            .send_json(&serde_json::json!({"text": "hook"}))
            .await
            .unwrap();
        let body = answer.body().await.unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains(HOOK_SECRET),
            "the answer to a hook URL echoes its secret"
        );
    }
    // Matrix's access token (in the query, or a header) and Telegram's bot token (in the
    // path) are a hook's secret: the message is sent, the token stays out of the lines.
    let matrix_path = format!(
        "/_matrix/client/v3/rooms/alerts/send/m.room.message/t1?access_token={HOOK_SECRET}"
    );
    let telegram_path = format!("/telegram/bot{HOOK_SECRET}/sendMessage");
    for (path, body) in [
        (
            matrix_path.as_str(),
            serde_json::json!({"msgtype": "m.text", "body": "via matrix"}),
        ),
        (
            telegram_path.as_str(),
            serde_json::json!({"chat_id": 1, "text": "via telegram"}),
        ),
    ] {
        let method = if path.starts_with("/_matrix") {
            awc::http::Method::PUT
        } else {
            awc::http::Method::POST
        };
        let mut answer = client
            .request(method, format!("{base}{path}"))
            .send_json(&body)
            .await
            .unwrap();
        let text = answer.body().await.unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(
            !text.contains(HOOK_SECRET),
            "{path} echoes the token: {text}"
        );
    }
    // A caller's own incoming-webhook token travels to DSM in the URL's query (as Synology's
    // help sends it): not in the gateway's lines about the call (DSM refuses this one).
    let chat_token = "t".repeat(64);
    let refused = client
        .post(format!("{base}/api/v1/webhooks/incoming"))
        .insert_header(auth.clone())
        .insert_header(("X-Chat-Token", chat_token.clone()))
        .send_json(&serde_json::json!({"text": "via a caller's token"}))
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "DSM was asked, and refused the token"
    );
    // A signature that does not verify is logged as such.
    client
        .post(format!("{base}/hooks/signed"))
        .insert_header(("X-Hub-Signature-256", "sha256=00"))
        .send_json(&serde_json::json!({"text": "forged"}))
        .await
        .unwrap();
    sessions.extend(sim.active_sessions());
    // A subscription's signing secret is in the creation's answer only.
    let mut created = client
        .post(format!("{base}/api/v1/subscriptions"))
        .insert_header(auth.clone())
        .send_json(&serde_json::json!({"url": "http://127.0.0.1:9/nobody-listens"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let subscription_secret = created["secret"].as_str().unwrap().to_owned();
    // Chat's call to an inbound carries the integration token in its body.
    for token in [inbound_token.as_str(), "wrong"] {
        client
            .post(format!("{base}/inbound/ops"))
            .send_form(&[("token", token), ("text", "hi"), ("post_id", "5")])
            .await
            .unwrap();
    }
    // The subscription's delivery is signed and attempted (port 9 refuses it).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    handle.stop(true).await;
    let _ = stopped.await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("logged in to DSM"), "the capture works");
    // Every line, the dependencies' included, is one JSON object.
    for line in logs.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            parsed["timestamp"].is_string() && parsed["target"].is_string(),
            "{line}"
        );
    }
    assert!(logs.contains("DSM call"), "upstream calls are logged");
    // What is logged while a request is served names it, the access line and the DSM call alike.
    let of_users_request: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["span"]["request_id"] == "users-request")
        .collect();
    for message in ["DSM call", "request finished"] {
        let line = of_users_request
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line of the request: {of_users_request:?}"));
        assert_eq!(line["span"]["name"], "request");
        assert_eq!(line["span"]["method"], "GET");
        assert_eq!(line["span"]["path"], "/api/v1/users");
        assert_eq!(line["span"]["client_ip"], "127.0.0.1");
    }
    assert!(
        logs.contains("inbound event stored"),
        "the inbound call is logged"
    );
    assert!(sessions.len() >= 2);
    assert!(
        logs.contains("subscription_delivery_failed"),
        "the subscription delivery was attempted and logged"
    );
    assert!(
        logs.contains("/hooks/alerts/****") && logs.contains("/hook%73/alerts/****"),
        "hook requests are logged, masked"
    );
    assert!(
        logs.contains("signature did not verify"),
        "a refused signature is logged"
    );
    let mut secrets = vec![
        DEMO_PASSWORD.to_owned(),
        API_KEY.to_owned(),
        HOOK_SECRET.to_owned(),
        SIGNING_SECRET.to_owned(),
        inbound_token,
        chat_token,
        subscription_secret.clone(),
        subscription_secret["whsec_".len()..].to_owned(),
    ];
    for session in sessions {
        secrets.push(session.sid);
        secrets.push(session.synotoken);
    }
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret ({} chars) appears in the logs",
            secret.len()
        );
    }
}
