//! HTTP subscriptions end to end: a post in the simulated Chat reaches the gateway's inbound,
//! and the gateway POSTs the event, signed, to a receiver on a local port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::backends::on_both;
use crate::events::app_with_inbounds;
use crate::helpers::{ADMIN_KEY, READ_KEY, TestApp, WRITE_KEY};

const CHANNEL: i64 = 2;
const USER: i64 = 3;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: String,
    at: std::time::Instant,
}

/// How the receiver answers: status, body, delay.
type Answer = (u16, &'static str, u64);

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answers to give, in order; afterwards `otherwise`.
    script: VecDeque<Answer>,
    otherwise: Option<Answer>,
    /// Sent with every answer that is not a 2xx.
    retry_after: Option<&'static str>,
}

struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
    _server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(script: &[Answer], otherwise: Answer) -> Self {
        Self::serve(script, otherwise, None).await
    }

    /// A receiver over HTTPS, with `tls`'s certificate.
    async fn start_https(tls: Arc<rustls::ServerConfig>) -> Self {
        Self::serve(&[], (200, "", 0), Some(tls)).await
    }

    async fn serve(
        script: &[Answer],
        otherwise: Answer,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let state = Arc::new(Mutex::new(ReceiverState {
            script: script.iter().copied().collect(),
            otherwise: Some(otherwise),
            ..Default::default()
        }));
        let shared = state.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .default_service(web::to(receive))
        })
        .workers(1);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, (*tls).clone()),
            None => server.listen(listener),
        }
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("{scheme}://127.0.0.1:{port}/hook"),
            state,
            _server: handle,
        }
    }

    /// From now on, every answer is `answer`.
    fn answer_with(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap();
        state.script.clear();
        state.otherwise = Some(answer);
    }

    fn set_retry_after(&self, value: &'static str) {
        self.state.lock().unwrap().retry_after = Some(value);
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the receiver got {} requests, not {count}",
            self.received().len()
        );
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<ReceiverState>>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, reply, delay, retry_after) = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            content_type: header("content-type"),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: std::time::Instant::now(),
        });
        let otherwise = state.otherwise.unwrap_or((200, "", 0));
        let answer = state.script.pop_front().unwrap_or(otherwise);
        (answer.0, answer.1, answer.2, state.retry_after)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut answer = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(wait) = retry_after.filter(|_| !(200..300).contains(&status)) {
        answer.insert_header(("retry-after", wait));
    }
    answer.content_type("application/json").body(reply)
}

/// The signature the Standard Webhooks specification gives for this request and secret.
fn expected_signature(secret: &str, r: &Received) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The text of each event the receiver got, in the order it got them.
fn event_texts(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["data"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn subscribe(app: &TestApp, body: Value) -> (String, String) {
    let answer = app
        .call("POST", "/api/v1/subscriptions", Some(ADMIN_KEY), Some(body))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let id = answer.body["subscription_id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer.header("location"),
        Some(format!("{}/api/v1/subscriptions/{id}", app.base).as_str())
    );
    (id, answer.body["secret"].as_str().unwrap().to_owned())
}

async fn subscription(app: &TestApp, id: &str) -> Value {
    let answer = app
        .call(
            "GET",
            &format!("/api/v1/subscriptions/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Polls the subscription until `done` holds.
async fn subscription_until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let s = subscription(app, id).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "subscription never reached the state: {}",
        subscription(app, id).await
    );
}

/// Receivers on this host are allowed, and retries come within a second (not the Standard
/// Webhooks schedule's minutes and hours).
fn allow_private(settings: &mut syno_chat_gateway::config::Settings) {
    settings.subscriptions.allow_private = true;
    settings.subscriptions.retry_delays_ms = vec![100, 200, 400];
}

on_both!(
    a_post_in_chat_reaches_a_subscription_signed,
    |backend: Backend| async move {
        let (app, _) = app_with_inbounds(|s| {
            allow_private(s);
            s.store.url = secrecy::SecretString::from(backend.url.clone());
        })
        .await;
        let receiver = Receiver::start(&[], (200, "", 0)).await;
        let (id, secret) = subscribe(&app, json!({"url": receiver.url, "inbound": "ops"})).await;
        assert!(secret.starts_with("whsec_"));
        assert!(BASE64.decode(&secret[6..]).unwrap().len() >= 24);

        let post_id = app.sim.post_as_user(USER, CHANNEL, "!ping the NAS");
        app.sim.post_as_user(USER, CHANNEL, "/deploy web");
        let got = receiver.wait_for(1).await;
        let r = &got[0];
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.signature, expected_signature(&secret, r), "{r:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((r.timestamp.parse::<i64>().unwrap() - now).abs() < 60);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "chat.trigger_word");
        // Standard Webhooks' payload convention: an RFC 3339 time next to type and data.
        let time = body["timestamp"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{time}"
        );
        assert!(
            time.starts_with(&format!("{}-", 1970 + now / 31_556_952)),
            "{time}"
        );
        assert_eq!(body["data"]["text"], "!ping the NAS");
        assert_eq!(body["data"]["post_id"], post_id);
        let event_id = body["data"]["event_id"].as_i64().unwrap();

        let s = subscription_until(&app, &id, |s| s["last_delivered_event_id"] == event_id).await;
        assert_eq!(s["enabled"], true);
        assert_eq!(s["consecutive_failures"], 0);
        assert_eq!(s["inbound"], "ops");
        // The slash command is not for this subscription: still one request.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(receiver.received().len(), 1);

        // The secret is shown once only.
        let list = app
            .call("GET", "/api/v1/subscriptions", Some(ADMIN_KEY), None)
            .await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        for text in [list.body.to_string(), s.to_string()] {
            assert!(!text.contains(&secret[6..]), "{text}");
            assert!(!text.contains("\"secret\""), "{text}");
        }
    }
);

#[actix_web::test]
async fn internal_and_non_http_urls_are_refused() {
    let (app, _) = app_with_inbounds(|_| {}).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://chat.localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.1.1/",
        "http://[::1]/hook",
        "http://[fd12::1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://224.0.0.1/hook",
    ] {
        let answer = app
            .call(
                "POST",
                "/api/v1/subscriptions",
                Some(ADMIN_KEY),
                Some(json!({ "url": url })),
            )
            .await;
        answer.assert_problem(422, "subscription_url_refused");
    }
    for url in [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "not a url",
        "/relative",
        // Credentials would be stored and shown as typed.
        "https://user:pw@example.org/hook",
        "https://token@example.org/hook",
    ] {
        let answer = app
            .call(
                "POST",
                "/api/v1/subscriptions",
                Some(ADMIN_KEY),
                Some(json!({ "url": url })),
            )
            .await;
        answer.assert_problem(422, "unprocessable");
    }
    // A filter on an inbound that is not configured would match nothing.
    let answer = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(ADMIN_KEY),
            Some(json!({ "url": "https://example.org/", "inbound": "nosuch" })),
        )
        .await;
    answer.assert_problem(422, "unprocessable");
    assert!(
        answer.body["detail"].as_str().unwrap().contains("ops"),
        "{}",
        answer.body
    );
    let answer = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(ADMIN_KEY),
            Some(json!({ "url": "https://example.org/", "channel_id": 0 })),
        )
        .await;
    answer.assert_problem(400, "invalid_request");
    let list = app
        .call("GET", "/api/v1/subscriptions", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(list.body["items"], json!([]));
}

#[actix_web::test]
async fn a_failing_receiver_is_retried_with_the_same_webhook_id() {
    let (app, _) = app_with_inbounds(allow_private).await;
    let receiver = Receiver::start(&[(500, "", 0), (503, "", 0)], (200, "", 0)).await;
    let (id, secret) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping retry");
    let got = receiver.wait_for(3).await;
    assert!(got.iter().all(|r| r.id == got[0].id), "{got:?}");
    assert!(got.iter().all(|r| r.body == got[0].body));
    for r in &got {
        assert_eq!(r.signature, expected_signature(&secret, r));
    }
    let s = subscription_until(&app, &id, |s| !s["last_delivered_event_id"].is_null()).await;
    assert_eq!(s["consecutive_failures"], 0);
    assert_eq!(s["enabled"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 3, "delivered once");
}

#[actix_web::test]
async fn a_receiver_that_keeps_failing_is_disabled_and_gets_nothing_more() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.max_failures = 2;
    })
    .await;
    let receiver = Receiver::start(&[], (500, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    // Chat sends each outgoing webhook on its own, so two posts in a row may reach the gateway
    // in either order: the second is posted once the first has arrived.
    crate::events::outbound_calls(&app, 1).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    let s = subscription_until(&app, &id, |s| s["enabled"] == false).await;
    assert_eq!(s["consecutive_failures"], 2);
    let reason = s["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    assert!(s["last_delivered_event_id"].is_null());
    app.sim.post_as_user(USER, CHANNEL, "!ping three");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().all(|r| r.body.contains("!ping one")),
        "in order: {got:?}"
    );
}

#[actix_web::test]
async fn a_gone_receiver_disables_the_subscription_at_once() {
    let (app, _) = app_with_inbounds(allow_private).await;
    let receiver = Receiver::start(&[], (410, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping gone");
    let s = subscription_until(&app, &id, |s| s["enabled"] == false).await;
    assert!(
        s["disabled_reason"].as_str().unwrap().contains("410"),
        "{s}"
    );
    assert!(s["disabled_at"].as_i64().is_some(), "{s}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "410 is not retried");
    // Counted for the alert within the gauges' 2 s.
    let mut counted = String::new();
    for _ in 0..50 {
        let metrics = app.call("GET", "/metrics", None, None).await;
        counted = metrics.body.as_str().unwrap_or_default().to_owned();
        if counted.contains("synochat_subscriptions_disabled 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        counted.contains("synochat_subscriptions_disabled 1"),
        "{counted}"
    );
}

/// A failed subscription delivery retried by hand gets `subscriptions.max_age_secs` again, not
/// the age limit of messages to Chat (`delivery.max_age_secs`).
#[actix_web::test]
async fn a_retried_subscription_delivery_keeps_the_subscription_age_limit() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.max_failures = 1;
        s.subscriptions.max_age_secs = 7 * 86_400;
        s.delivery.max_age_secs = 600;
    })
    .await;
    let receiver = Receiver::start(&[], (500, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping once");
    subscription_until(&app, &id, |s| s["enabled"] == false).await;
    let failed = app.get("/api/v1/deliveries?state=failed").await;
    let delivery = failed.body["items"][0]["delivery_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed delivery: {}", failed.body))
        .to_owned();
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // Subscriptions are the admin's: a write key may not retry their deliveries.
    app.call(
        "POST",
        &format!("/api/v1/deliveries/{delivery}/retry"),
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(403, "insufficient_scope");
    let before = unix_ms();
    let retried = app
        .call(
            "POST",
            &format!("/api/v1/deliveries/{delivery}/retry"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    let after = unix_ms();
    assert_eq!(retried.status, 200, "{}", retried.body);
    let week = 7 * 86_400 * 1000;
    let expires = retried.body["expires_at"].as_i64().unwrap();
    assert!(
        (before + week..=after + week).contains(&expires),
        "{}",
        retried.body
    );
}

/// 429 asks the sender to wait: its `Retry-After` is honoured and it is not a failure (with
/// `max_failures = 1`, a counted failure would disable the subscription). 503 counts, and its
/// longer `Retry-After` wins over the schedule.
#[actix_web::test]
async fn a_throttling_receiver_is_waited_for_as_it_asks() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.max_failures = 2;
        // Retry-After is honoured up to the schedule's longest wait.
        s.subscriptions.retry_delays_ms = vec![100, 100, 3_000];
    })
    .await;
    let receiver = Receiver::start(&[(429, "", 0), (429, "", 0), (503, "", 0)], (200, "", 0)).await;
    receiver.set_retry_after("1");
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping slowly");
    let got = receiver.wait_for(4).await;
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(900), "waited {gap:?}");
    }
    assert!(got.iter().all(|r| r.id == got[0].id));
    let s = subscription_until(&app, &id, |s| !s["last_delivered_event_id"].is_null()).await;
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["consecutive_failures"], 0);
}

/// A 429 that asks for no wait at all (`Retry-After: 0`) is waited on for a second: the lane
/// called such a receiver again at once, as fast as it answered (events audit).
#[actix_web::test]
async fn a_throttling_receiver_asking_for_no_wait_is_not_called_at_once() {
    let (app, _) = app_with_inbounds(allow_private).await;
    let receiver = Receiver::start(&[(429, "", 0), (429, "", 0)], (200, "", 0)).await;
    receiver.set_retry_after("0");
    subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping slowly");
    let got = receiver.wait_for(3).await;
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(900), "waited {gap:?}");
    }
}

#[actix_web::test]
async fn a_disabled_subscription_enabled_again_gets_what_it_missed_in_order() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.max_failures = 1;
    })
    .await;
    let receiver = Receiver::start(&[], (500, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    let path = format!("/api/v1/subscriptions/{id}");
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    subscription_until(&app, &id, |s| s["enabled"] == false).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    crate::events::outbound_calls(&app, 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.received().len(), 1, "nothing while disabled");

    // Wrong bodies and ids first.
    for body in [
        json!({}),
        json!({"enabled": "yes"}),
        json!({"enabled": true, "url": "x"}),
    ] {
        app.call("PATCH", &path, Some(ADMIN_KEY), Some(body))
            .await
            .assert_problem(400, "invalid_request");
    }
    app.call(
        "PATCH",
        "/api/v1/subscriptions/0b6f7c1e-5d0a-4f61-9d7c-2d1f1f4e8a10",
        Some(ADMIN_KEY),
        Some(json!({"enabled": true})),
    )
    .await
    .assert_problem(404, "not_found");
    app.call(
        "PATCH",
        &path,
        Some(WRITE_KEY),
        Some(json!({"enabled": true})),
    )
    .await
    .assert_problem(403, "insufficient_scope");

    receiver.answer_with((200, "", 0));
    let answer = app
        .call(
            "PATCH",
            &path,
            Some(ADMIN_KEY),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["enabled"], true);
    assert_eq!(answer.body["consecutive_failures"], 0);
    assert!(answer.body["disabled_reason"].is_null());
    let got = receiver.wait_for(3).await;
    let texts: Vec<String> = got
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["data"]["text"].to_string())
        .collect();
    assert_eq!(
        texts,
        [r#""!ping one""#, r#""!ping one""#, r#""!ping two""#]
    );
    assert_eq!(got[0].id, got[1].id, "the same event, the same webhook-id");

    // Disabled by hand: nothing more until enabled, then the event comes.
    let answer = app
        .call(
            "PATCH",
            &path,
            Some(ADMIN_KEY),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(answer.body["enabled"], false, "{}", answer.body);
    assert_eq!(answer.body["disabled_reason"], "disabled by an operator");
    app.sim.post_as_user(USER, CHANNEL, "!ping three");
    crate::events::outbound_calls(&app, 3).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.received().len(), 3);
    app.call(
        "PATCH",
        &path,
        Some(ADMIN_KEY),
        Some(json!({"enabled": true})),
    )
    .await;
    let got = receiver.wait_for(4).await;
    assert!(got[3].body.contains("!ping three"), "{:?}", got[3]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 4, "each event once");
}

#[actix_web::test]
async fn a_deleted_subscription_gets_nothing_more() {
    let (app, _) = app_with_inbounds(allow_private).await;
    let receiver = Receiver::start(&[], (200, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": receiver.url})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping before");
    receiver.wait_for(1).await;
    let path = format!("/api/v1/subscriptions/{id}");
    let answer = app.call("DELETE", &path, Some(ADMIN_KEY), None).await;
    assert_eq!(answer.status, 204);
    app.call("GET", &path, Some(ADMIN_KEY), None)
        .await
        .assert_problem(404, "not_found");
    app.call("DELETE", &path, Some(ADMIN_KEY), None)
        .await
        .assert_problem(404, "not_found");
    app.call(
        "GET",
        "/api/v1/subscriptions/not-a-uuid",
        Some(ADMIN_KEY),
        None,
    )
    .await
    .assert_problem(400, "invalid_request");
    app.sim.post_as_user(USER, CHANNEL, "!ping after");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(receiver.received().len(), 1);
}

/// A rotated secret signs from then on; the one it replaced signs beside it for the grace
/// (`v1,<new> v1,<old>`), so the receiver can switch over without refusing a delivery.
#[actix_web::test]
async fn a_rotated_secret_signs_beside_the_old_one_for_the_grace() {
    let (app, _) = app_with_inbounds(allow_private).await;
    let receiver = Receiver::start(&[], (200, "", 0)).await;
    let (id, old) = subscribe(&app, json!({"url": receiver.url})).await;
    let rotate = |query: &'static str| {
        let path = format!("/api/v1/subscriptions/{id}/secret{query}");
        let app = &app;
        async move { app.call("POST", &path, Some(ADMIN_KEY), None).await }
    };
    let rotated = rotate("").await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new = rotated.body["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let until = rotated.body["previous_secret_until"].as_i64().unwrap();
    let in_a_day = syno_chat_gateway::events::now_ms() + 86_400_000;
    assert!((in_a_day - 5_000..=in_a_day).contains(&until), "{until}");
    assert_eq!(
        subscription(&app, &id).await["previous_secret_until"],
        until
    );

    app.sim
        .post_as_user(USER, CHANNEL, "!ping after the rotation");
    let got = receiver.wait_for(1).await;
    let both = format!(
        "{} {}",
        expected_signature(&new, &got[0]),
        expected_signature(&old, &got[0])
    );
    assert_eq!(got[0].signature, both);

    // Without a grace, only the newest secret signs; the secret is never listed.
    let rotated = rotate("?grace_secs=0").await;
    let newest = rotated.body["secret"].as_str().unwrap().to_owned();
    app.sim
        .post_as_user(USER, CHANNEL, "!ping after the second rotation");
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].signature, expected_signature(&newest, &got[1]));
    let listed = subscription(&app, &id).await;
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    assert_eq!(listed["previous_secret_until"], Value::Null);
    // Shown, and null: this subscription missed no event to the retention.
    assert_eq!(listed.get("events_missed_through"), Some(&Value::Null));

    rotate("?grace_secs=604801")
        .await
        .assert_problem(400, "invalid_request");
    app.call(
        "POST",
        "/api/v1/subscriptions/6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e09/secret",
        Some(ADMIN_KEY),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

#[actix_web::test]
async fn subscriptions_need_the_admin_scope() {
    let (app, _) = app_with_inbounds(allow_private).await;
    for key in [READ_KEY, WRITE_KEY] {
        app.call(
            "POST",
            "/api/v1/subscriptions",
            Some(key),
            Some(json!({"url": "https://example.org/hook"})),
        )
        .await
        .assert_problem(403, "insufficient_scope");
        app.call("GET", "/api/v1/subscriptions", Some(key), None)
            .await
            .assert_problem(403, "insufficient_scope");
        app.call(
            "POST",
            "/api/v1/subscriptions/6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e09/secret",
            Some(key),
            None,
        )
        .await
        .assert_problem(403, "insufficient_scope");
    }
    app.call("GET", "/api/v1/subscriptions", None, None)
        .await
        .assert_problem(401, "unauthorized");
}

#[actix_web::test]
async fn a_respond_subscription_answers_in_the_channel_and_is_not_called_again() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 500;
    })
    .await;
    let bot = Receiver::start(&[], (200, r#"{"text": "pong from the bot"}"#, 0)).await;
    let (id, secret) = subscribe(
        &app,
        json!({"url": bot.url, "respond": true, "kind": "trigger_word"}),
    )
    .await;
    // A plain subscriber gets the same event through the outbox.
    let plain = Receiver::start(&[], (200, "", 0)).await;
    subscribe(&app, json!({"url": plain.url})).await;

    app.sim.post_as_user(USER, CHANNEL, "!ping are you there");
    let calls = crate::events::outbound_calls(&app, 1).await;
    assert_eq!(calls[0].status, Some(200));
    let reply = calls[0].reply_post_id.expect("Chat posted the answer");
    let posts = app
        .get(&format!("/api/v1/channels/{CHANNEL}/posts?limit=10"))
        .await;
    assert_eq!(posts.status, 200, "{}", posts.body);
    let posted = posts.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["post_id"] == reply)
        .unwrap_or_else(|| panic!("post {reply} in {}", posts.body));
    assert_eq!(posted["message"], "pong from the bot");

    let r = &bot.received()[0];
    assert_eq!(r.signature, expected_signature(&secret, r));
    plain.wait_for(1).await;
    let s = subscription_until(&app, &id, |s| !s["last_delivered_event_id"].is_null()).await;
    assert_eq!(s["consecutive_failures"], 0);
    // Past the reply budget and the outbox's wait: the synchronous call was the delivery.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(bot.received().len(), 1, "{:?}", bot.received());
    assert_eq!(plain.received().len(), 1);
}

/// A gateway whose replies to Chat wait 300 ms, and a `respond: true` subscriber that answers
/// its first call after 1.5 s (too late), the others at once.
async fn slow_respond_subscriber() -> (TestApp, Receiver) {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 300;
    })
    .await;
    let bot = Receiver::start(&[(200, r#"{"text": "too late"}"#, 1500)], (200, "", 0)).await;
    subscribe(&app, json!({"url": bot.url, "respond": true})).await;
    (app, bot)
}

#[actix_web::test]
async fn a_respond_subscription_too_slow_for_chat_gets_the_event_later_with_the_same_id() {
    let (app, bot) = slow_respond_subscriber().await;
    let started = std::time::Instant::now();
    app.sim.post_as_user(USER, CHANNEL, "!ping slow");
    let calls = crate::events::outbound_calls(&app, 1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the budget held"
    );
    assert_eq!(calls[0].status, Some(200), "Chat still gets its answer");
    assert_eq!(calls[0].reply_post_id, None);
    let got = bot.wait_for(2).await;
    assert_eq!(got[0].id, got[1].id, "the retry reuses webhook-id");
    assert_eq!(
        crate::events::stored(&app).await.len(),
        1,
        "the event is kept"
    );
}

/// An event whose synchronous call found no answer in time is not overtaken by the next
/// one: that waits behind it in the outbox, so the receiver gets them in event order.
#[actix_web::test]
async fn a_respond_subscription_that_missed_a_reply_gets_the_next_event_after_it() {
    let (app, bot) = slow_respond_subscriber().await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    crate::events::outbound_calls(&app, 1).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    let calls = crate::events::outbound_calls(&app, 2).await;
    assert_eq!(calls[1].reply_post_id, None, "not called at once");
    let got = bot.wait_for(3).await;
    let texts = event_texts(&got);
    assert_eq!(
        texts,
        ["!ping one", "!ping one", "!ping two"],
        "in event order"
    );
}

/// A `respond: true` receiver that is failing is not called at once for a new event: it
/// would get that event before the earlier one the outbox is retrying, and its failures
/// would never count.
#[actix_web::test]
async fn a_failing_respond_subscription_gets_later_events_in_order_through_the_outbox() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 300;
        s.subscriptions.retry_delays_ms = vec![3_000];
    })
    .await;
    // Down for the first event's synchronous call and its first retry, then back.
    let bot = Receiver::start(
        &[(503, "", 0), (503, "", 0)],
        (200, r#"{"text": "pong"}"#, 0),
    )
    .await;
    let (id, _) = subscribe(&app, json!({"url": bot.url, "respond": true})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    bot.wait_for(2).await;
    subscription_until(&app, &id, |s| s["consecutive_failures"] == 1).await;

    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    let calls = crate::events::outbound_calls(&app, 2).await;
    assert_eq!(calls[1].status, Some(200), "Chat still gets its answer");
    assert_eq!(calls[1].reply_post_id, None, "not called at once");
    let got = bot.wait_for(4).await;
    let texts = event_texts(&got);
    assert_eq!(
        texts,
        ["!ping one", "!ping one", "!ping one", "!ping two"],
        "in event order"
    );
}

/// An event that came while its `respond: true` receiver was failing is not called at once,
/// and goes through the outbox; once the receiver is back, a later event must wait behind it
/// rather than be called at once and overtake it.
#[actix_web::test]
async fn an_event_held_for_the_outbox_is_not_overtaken_once_the_receiver_is_back() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 1_000;
        s.subscriptions.retry_delays_ms = vec![1_000];
    })
    .await;
    // The first event's synchronous call and first retry fail; everything after succeeds.
    let bot = Receiver::start(&[(503, "", 0), (503, "", 0)], (200, "", 0)).await;
    let (id, _) = subscribe(&app, json!({"url": bot.url, "respond": true})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    subscription_until(&app, &id, |s| s["consecutive_failures"] == 1).await;
    // Failing: not called, held for the outbox (due after the reply budget).
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    crate::events::outbound_calls(&app, 2).await;
    // The first event's retry succeeds; the second is still held.
    bot.wait_for(3).await;
    subscription_until(&app, &id, |s| s["consecutive_failures"] == 0).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping three");
    let got = bot.wait_for(5).await;
    assert_eq!(
        event_texts(&got),
        [
            "!ping one",
            "!ping one",
            "!ping one",
            "!ping two",
            "!ping three"
        ],
        "in event order"
    );
}

/// An event that comes while the receiver is still answering the one before (slowly, and in
/// the end with a failure) does not overtake it: it waits behind it in the outbox.
#[actix_web::test]
async fn an_event_does_not_overtake_the_one_whose_reply_is_still_running() {
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 3_000;
        s.subscriptions.retry_delays_ms = vec![500];
    })
    .await;
    // The first call fails after 1.5 s; everything after succeeds at once.
    let bot = Receiver::start(&[(500, "", 1_500)], (200, "", 0)).await;
    let (_, _) = subscribe(&app, json!({"url": bot.url, "respond": true})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    bot.wait_for(1).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    let got = bot.wait_for(3).await;
    assert_eq!(
        event_texts(&got),
        ["!ping one", "!ping one", "!ping two"],
        "in event order"
    );
}

#[actix_web::test]
async fn two_replicas_on_postgres_deliver_each_event_once_in_order() {
    let Some(url) = crate::postgres::fresh_database() else {
        return;
    };
    let shared = secrecy::SecretString::from(url);
    let store_a = shared.clone();
    let (a, token_a) = app_with_inbounds(move |s| {
        allow_private(s);
        s.store.url = store_a;
    })
    .await;
    let (b, token_b) = app_with_inbounds(move |s| {
        allow_private(s);
        s.store.url = shared;
    })
    .await;
    let receiver = Receiver::start(&[], (200, "", 0)).await;
    let (id, _) = subscribe(&a, json!({"url": receiver.url})).await;
    // Created on A, visible on B: one store.
    assert_eq!(subscription(&b, &id).await["enabled"], true);

    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let writers = [
        actix_web::rt::spawn(
            async move { crate::events::send_posts(&base_a, &token_a, 100, 12).await },
        ),
        actix_web::rt::spawn(
            async move { crate::events::send_posts(&base_b, &token_b, 200, 12).await },
        ),
    ];
    for writer in writers {
        writer.await.unwrap();
    }
    receiver.wait_for(24).await;
    // Both replicas fan out and deliver: give a duplicate time to show up.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 24, "each event once");
    let ids: Vec<i64> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["data"]["event_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in event order: {ids:?}"
    );
    let mut webhook_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    webhook_ids.sort_unstable();
    webhook_ids.dedup();
    assert_eq!(webhook_ids.len(), 24);
}

/// A `respond: true` answer's `file_url` reaches Chat for outgoing webhooks and chatbots
/// (upstream protocol §5.1), not for slash commands (§5.2), and only when the NAS may fetch it.
#[actix_web::test]
async fn a_reply_passes_its_file_url_on_where_chat_supports_it() {
    use secrecy::SecretString;
    use syno_chat_gateway::config::{InboundKind, InboundSettings};
    let mut tokens = Vec::new();
    let app = crate::helpers::spawn_app_with_sim(
        syno_chat_gateway::sim::SimConfig::default(),
        |settings, sim| {
            allow_private(settings);
            settings.inbound.reply_timeout_ms = 2_000;
            for (name, token, kind) in [
                (
                    "ops",
                    sim.add_outgoing_webhook(CHANNEL, "!chart", ""),
                    InboundKind::OutgoingWebhook,
                ),
                (
                    "deploy",
                    sim.add_slash_command("chart", ""),
                    InboundKind::SlashCommand,
                ),
                ("helper", sim.demo_bot_token(), InboundKind::Chatbot),
            ] {
                settings.inbound.receivers.insert(
                    name.to_owned(),
                    InboundSettings {
                        token: Some(SecretString::from(token.clone())),
                        kind,
                        ..Default::default()
                    },
                );
                tokens.push(token);
            }
        },
    )
    .await;
    let bot = Receiver::start(
        &[],
        (
            200,
            r#"{"text": "the chart", "file_url": "https://files.example.org/chart.png"}"#,
            0,
        ),
    )
    .await;
    subscribe(&app, json!({"url": bot.url, "respond": true})).await;
    let chat_calls = |path: &'static str, token: String, post_id: i64| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(format!("{}{path}", app.base))
                .send_form(&[
                    ("token", token.as_str()),
                    ("channel_id", "2"),
                    ("user_id", "3"),
                    ("post_id", &post_id.to_string()),
                    ("text", "!chart cpu"),
                    ("trigger_word", "!chart"),
                ])
                .await
                .unwrap();
            let answer = crate::helpers::read(response).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            answer.body
        }
    };
    let with_file = json!({"text": "the chart", "file_url": "https://files.example.org/chart.png"});
    assert_eq!(
        chat_calls("/inbound/ops", tokens[0].clone(), 1).await,
        with_file
    );
    assert_eq!(
        chat_calls("/inbound/helper", tokens[2].clone(), 2).await,
        with_file
    );
    assert_eq!(
        chat_calls("/inbound/deploy", tokens[1].clone(), 3).await,
        json!({"text": "the chart"}),
        "slash commands cannot attach files"
    );
    // A file the NAS would fetch from inside its network, or no URL at all: the text goes alone.
    for file_url in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:5000/",
        "file:///etc/passwd",
    ] {
        let body = format!(r#"{{"text": "the chart", "file_url": "{file_url}"}}"#);
        bot.answer_with((200, Box::leak(body.into_boxed_str()), 0));
        assert_eq!(
            chat_calls(
                "/inbound/ops",
                tokens[0].clone(),
                10 + file_url.len() as i64
            )
            .await,
            json!({"text": "the chart"}),
            "{file_url}"
        );
    }
}

/// A self-signed certificate for 127.0.0.1, its PEM in a temporary file.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, Arc<rustls::ServerConfig>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = dir.join("lan-ca.pem");
    std::fs::write(&pem, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    (pem, Arc::new(server))
}

#[actix_web::test]
async fn a_receiver_with_a_private_ca_is_reached_once_its_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, tls) = self_signed(dir.path());
    let receiver = Receiver::start_https(tls).await;
    // Public roots only: the receiver's certificate is refused, nothing is delivered.
    let (untrusting, _) = app_with_inbounds(allow_private).await;
    let (refused, _) = subscribe(&untrusting, json!({"url": receiver.url, "inbound": "ops"})).await;
    untrusting.sim.post_as_user(USER, CHANNEL, "!ping first");
    subscription_until(&untrusting, &refused, |s| {
        s["consecutive_failures"].as_u64() >= Some(1)
    })
    .await;
    assert!(receiver.received().is_empty());
    // With its CA in `subscriptions.ca_file`, the event arrives over TLS.
    let (trusting, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.ca_file = Some(pem.clone());
    })
    .await;
    subscribe(&trusting, json!({"url": receiver.url, "inbound": "ops"})).await;
    trusting.sim.post_as_user(USER, CHANNEL, "!ping second");
    let got = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["data"]["text"], "!ping second");
}

/// A receiver that reads each request, writes `answer` (its start, or nothing) and then holds
/// the connection open without another byte. Its URL, and a message for each request read.
fn holding_receiver(answer: &'static [u8]) -> (String, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (reached, called) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 16 * 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer);
            let _ = reached.send(());
            held.push(stream);
        }
    });
    (url, called)
}

/// A receiver that answers its head and then stalls in its body: awc's timeout ends at the
/// head, so the delivery lane waited for the body for good, and once every lane had met it no
/// message reached DSM. The body is now read within the attempt's timeout; the 2xx stands.
#[actix_web::test]
async fn a_receiver_stalling_in_its_answer_body_does_not_hold_the_lane() {
    let (url, _) = holding_receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok");
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.timeout_ms = 1_000;
    })
    .await;
    let (id, _) = subscribe(&app, json!({"url": url, "inbound": "ops"})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping one");
    app.sim.post_as_user(USER, CHANNEL, "!ping two");
    let s = subscription_until(&app, &id, |s| {
        s["last_delivered_event_id"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(s["consecutive_failures"], 0, "{s}");
}

/// Receivers that take the connection and never answer hold a lane up to
/// `subscriptions.timeout_ms` per attempt: sharing the lanes with Chat's messages, as many of
/// them as `delivery.concurrency` stopped every message to Chat. Subscriptions have lanes of
/// their own: a message handed over meanwhile is delivered while the receiver still hangs.
#[actix_web::test]
async fn a_receiver_that_never_answers_does_not_hold_up_messages_to_chat() {
    let (url, called) = holding_receiver(b"");
    let (app, _) = app_with_inbounds(|s| {
        allow_private(s);
        s.subscriptions.timeout_ms = 600_000;
        s.delivery.concurrency = 1;
        s.subscriptions.concurrency = 1;
    })
    .await;
    subscribe(&app, json!({"url": url, "inbound": "ops"})).await;
    app.sim.post_as_user(USER, CHANNEL, "!ping the NAS");
    tokio::task::spawn_blocking(move || called.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the receiver was called");

    let answer =
        crate::deliveries::post_async(&app, "/api/v1/channels/1/posts", json!({"message": "up"}))
            .await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    let id = answer.body["delivery_id"].as_str().unwrap();
    crate::deliveries::wait_for(&app, id, "delivered", Duration::from_secs(20)).await;
}

// Receivers that stopped answering, retried together, took every callback lane for
// `subscriptions.timeout_ms`, and the events of a receiver that answers waited for them (the
// events audit: 4 such receivers held a fifth's events for the whole timeout). With two
// lanes or more, the second is kept for receivers whose last delivery did not fail.
on_both!(
    receivers_that_stopped_answering_do_not_hold_up_one_that_answers,
    |backend: Backend| async move {
        let (app, _) = app_with_inbounds(|s| {
            allow_private(s);
            s.subscriptions.timeout_ms = 600_000;
            s.subscriptions.concurrency = 2;
            s.store.url = secrecy::SecretString::from(backend.url.clone());
        })
        .await;
        // Each refuses its first call, then never answers again.
        let mut dead = Vec::new();
        for _ in 0..2 {
            let receiver = Receiver::start(&[(500, "", 0)], (200, "", 600_000)).await;
            subscribe(&app, json!({"url": receiver.url, "inbound": "ops"})).await;
            dead.push(receiver);
        }
        let answering = Receiver::start(&[], (200, "", 0)).await;
        subscribe(&app, json!({"url": answering.url, "inbound": "ops"})).await;
        app.sim.post_as_user(USER, CHANNEL, "!ping one");
        answering.wait_for(1).await;
        // A retry hangs; the other's is due soon after, and a free lane would take it too.
        for _ in 0..500 {
            if dead.iter().map(|d| d.received().len()).sum::<usize>() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.sim.post_as_user(USER, CHANNEL, "!ping two");
        answering.wait_for(2).await;
    }
);

/// Posts what Chat's outgoing webhook `ops` sends (`trigger_word` empty: a `message` event);
/// returns Chat's answer.
async fn chat_posts(app: &TestApp, token: &str, post_id: i64, trigger_word: &str) -> Value {
    let response = app
        .http
        .post(format!("{}/inbound/ops", app.base))
        .send_form(&[
            ("token", token),
            ("channel_id", "2"),
            ("user_id", "3"),
            ("post_id", &post_id.to_string()),
            ("text", &format!("{trigger_word} hello")),
            ("trigger_word", trigger_word),
        ])
        .await
        .unwrap();
    let answer = crate::helpers::read(response).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Chat gets its answer once it is decided: at once when the first subscription (in order)
/// answered a text, without waiting for a slower one, whose call goes on and still counts as
/// its delivery. A later subscription's faster text does not win over an earlier one's.
#[actix_web::test]
async fn a_reply_goes_to_chat_once_decided_and_slower_calls_are_still_recorded() {
    let (app, token) = app_with_inbounds(|s| {
        allow_private(s);
        s.inbound.reply_timeout_ms = 1_500;
    })
    .await;
    let first = Receiver::start(&[], (200, r#"{"text": "first"}"#, 0)).await;
    let slow = Receiver::start(&[], (200, r#"{"text": "second"}"#, 800)).await;
    let in_order = Receiver::start(&[], (200, r#"{"text": "in order"}"#, 300)).await;
    let faster = Receiver::start(&[], (200, r#"{"text": "out of order"}"#, 0)).await;
    let mut ids = Vec::new();
    for (receiver, kind) in [
        (&first, "trigger_word"),
        (&slow, "trigger_word"),
        (&in_order, "message"),
        (&faster, "message"),
    ] {
        let (id, _) = subscribe(
            &app,
            json!({"url": receiver.url, "respond": true, "kind": kind}),
        )
        .await;
        ids.push(id);
        // Subscriptions are taken in the order they were created.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let started = std::time::Instant::now();
    assert_eq!(
        chat_posts(&app, &token, 1, "!ping").await,
        json!({"text": "first"})
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(600),
        "the slow subscription was waited for: {waited:?}"
    );
    // The slow call went on: it reached its subscription, so it is its delivery, and the
    // outbox (due 2 s after the budget) does not send the event again.
    let event_id = crate::events::stored(&app).await[0].event_id;
    let s = subscription_until(&app, &ids[1], |s| s["last_delivered_event_id"] == event_id).await;
    assert_eq!(s["consecutive_failures"], 0);

    // The earlier subscription's text wins, though the later one answered first.
    assert_eq!(
        chat_posts(&app, &token, 2, "").await,
        json!({"text": "in order"})
    );

    tokio::time::sleep(Duration::from_millis(4_000).saturating_sub(started.elapsed())).await;
    for (receiver, calls) in [(&first, 1), (&slow, 1), (&in_order, 1), (&faster, 1)] {
        assert_eq!(receiver.received().len(), calls, "{}", receiver.url);
    }
}

on_both!(
    a_reply_missed_before_the_fan_out_holds_the_next_event_back,
    |backend: Backend| async move {
        use syno_chat_gateway::events::subscriptions::{Subscription, new_secret, reply};
        use syno_chat_gateway::events::{EventFilter, EventKind, Events, NewEvent, now_ms};
        let store =
            syno_chat_gateway::store::Store::connect(&syno_chat_gateway::config::StoreSettings {
                url: secrecy::SecretString::from(backend.url.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut settings = syno_chat_gateway::config::Settings::default();
        allow_private(&mut settings);
        settings.inbound.reply_timeout_ms = 1_000;
        // No fan-out task here: the synchronous call fails before the delivery of its event
        // exists (a refused connection is that fast).
        let events = Events::new(store.clone(), &settings).await.unwrap();
        // Down for the first call, back for the next.
        let bot = Receiver::start(&[(503, "", 0)], (200, r#"{"text": "too early"}"#, 0)).await;
        let subscription = Subscription {
            id: "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e31".into(),
            url: bot.url.clone(),
            secret: new_secret(),
            filter: EventFilter::default(),
            respond: true,
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            last_delivered_event_id: None,
            created_at: now_ms(),
            disabled_at: None,
            previous_secret: None,
            events_missed_through: None,
        };
        store.insert_subscription(&subscription, 0).await.unwrap();
        let mut stored = Vec::new();
        for post_id in [10, 11] {
            let new = NewEvent {
                kind: EventKind::Message,
                inbound: "ops".into(),
                channel_id: Some(CHANNEL),
                channel_name: None,
                channel_type: None,
                user_id: Some(USER),
                username: None,
                post_id: Some(post_id),
                thread_id: None,
                timestamp: None,
                text: format!("post {post_id}"),
                trigger_word: None,
                command: None,
                button: None,
            };
            let id = store.insert_event(&new, now_ms()).await.unwrap().unwrap();
            let event = store
                .events_after(id - 1, &EventFilter::default(), 1)
                .await
                .unwrap()
                .remove(0);
            stored.push(event);
        }

        assert_eq!(reply(&events, &stored[0]).await, None);
        // The missed call's delivery is unfinished: the next event waits behind it, so the
        // receiver, back now, is not called at once with it.
        assert!(
            store
                .subscription_has_backlog(&subscription.id, stored[1].event_id)
                .await
                .unwrap()
        );
        assert_eq!(reply(&events, &stored[1]).await, None);
        assert_eq!(bot.received().len(), 1, "{:?}", bot.received());
        // Both events' deliveries were made, in event order, and queued: the first's call
        // missed (tried once), the second's was not made (behind the first, not tried), and a
        // third event waits behind both.
        assert_eq!(
            backend
                .count("SELECT COUNT(*) FROM deliveries WHERE attempts = 1 AND state = 'queued'")
                .await,
            1
        );
        assert_eq!(
            backend
                .count("SELECT COUNT(*) FROM deliveries WHERE attempts = 0 AND state = 'queued'")
                .await,
            1
        );
        let first_seq = backend
            .count(&format!(
                "SELECT d.seq FROM deliveries d JOIN subscription_deliveries s \
                 ON s.delivery_id = d.id WHERE s.event_id = {}",
                stored[0].event_id
            ))
            .await;
        let second_seq = backend
            .count(&format!(
                "SELECT d.seq FROM deliveries d JOIN subscription_deliveries s \
                 ON s.delivery_id = d.id WHERE s.event_id = {}",
                stored[1].event_id
            ))
            .await;
        assert!(first_seq < second_seq, "queued in event order");
        store.close().await;
    }
);
