//! `Idempotency-Key` on `/api/v1` writes, on both store back-ends (SQLite and the test's
//! PostgreSQL): replays, reuse with another body, concurrency, transient failures, expiry,
//! scoping per API key, and a store that refuses.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use syno_chat_gateway::config::Settings;
use syno_chat_gateway::sim::SimConfig;

use crate::backends::{self, Backend};
use crate::helpers::{ADMIN_KEY, Answer, TestApp, WRITE_KEY, read, spawn_app_with};

const POSTS: &str = "/api/v1/channels/1/posts";

async fn gateway(backend: &Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = backend.url.clone();
    spawn_app_with(SimConfig::default(), move |settings| {
        settings.store.url = SecretString::from(url);
        adjust(settings);
    })
    .await
}

/// A write with an Idempotency-Key.
async fn send(app: &TestApp, api_key: &str, idempotency_key: &str, body: Value) -> Answer {
    keyed(app, api_key, POSTS, idempotency_key, body).await
}

/// A writer's post to `path` with an Idempotency-Key.
async fn send_to(app: &TestApp, path: &str, idempotency_key: &str, body: Value) -> Answer {
    keyed(app, WRITE_KEY, path, idempotency_key, body).await
}

async fn keyed(
    app: &TestApp,
    api_key: &str,
    path: &str,
    idempotency_key: &str,
    body: Value,
) -> Answer {
    let response = keyed_request(app, api_key, path, idempotency_key)
        .send_json(&body)
        .await;
    read(response.expect("gateway answers")).await
}

/// A writer's post with an Idempotency-Key and `Prefer: respond-async`.
async fn send_async(app: &TestApp, idempotency_key: &str, body: &Value) -> Answer {
    let response = keyed_request(app, WRITE_KEY, POSTS, idempotency_key)
        .insert_header(("Prefer", "respond-async"))
        .send_json(body)
        .await;
    read(response.expect("gateway answers")).await
}

fn keyed_request(
    app: &TestApp,
    api_key: &str,
    path: &str,
    idempotency_key: &str,
) -> awc::ClientRequest {
    app.http
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {api_key}")))
        .insert_header(("Idempotency-Key", idempotency_key))
}

fn creates(app: &TestApp) -> usize {
    app.sim.count("SYNO.Chat.Post", "create")
}

backends::on_both!(
    a_repeat_gets_the_kept_answer_without_reaching_dsm,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let body = json!({"message": "deploy finished"});
        let first = send(&app, WRITE_KEY, "\"key-1\"", body.clone()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.header("idempotent-replayed"), None);
        let again = send(&app, WRITE_KEY, "\"key-1\"", body.clone()).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("content-type"), first.header("content-type"));
        assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
        assert_eq!(creates(&app), 1, "DSM saw one Post create");

        // The same key with another body is refused and still does not reach DSM.
        let other = send(
            &app,
            WRITE_KEY,
            "key-1",
            json!({"message": "something else"}),
        )
        .await;
        other.assert_problem(422, "idempotency_key_reused");
        assert_eq!(creates(&app), 1);
        // Without a key the same write runs again: nothing changes for callers who do not opt in.
        let plain = app.post(POSTS, body).await;
        assert_eq!(plain.status, 201);
        assert_eq!(creates(&app), 2);
    }
);

backends::on_both!(
    a_repeat_while_the_first_runs_gets_409,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        // Log in first, so the latency below holds only the post.
        assert_eq!(app.get("/api/v1/channels").await.status, 200);
        app.sim.set_latency(Duration::from_millis(1_500));
        let body = json!({"message": "slow"});
        let first = send(&app, WRITE_KEY, "slow-key", body.clone());
        let second = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            send(&app, WRITE_KEY, "slow-key", body.clone()).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.status, 201, "{}", first.body);
        second.assert_problem(409, "idempotency_key_in_flight");
        assert!(second.header("retry-after").is_some());
        assert_eq!(creates(&app), 1);
        app.sim.set_latency(Duration::ZERO);
        let later = send(&app, WRITE_KEY, "slow-key", body).await;
        assert_eq!(later.header("idempotent-replayed"), Some("true"));
        assert_eq!(later.body, first.body);
    }
);

backends::on_both!(
    a_transient_failure_is_not_kept,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let body = json!({"message": "retry me"});
        app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 100);
        let failed = send(&app, WRITE_KEY, "flaky", body.clone()).await;
        failed.assert_problem(502, "upstream_error");
        let retried = send(&app, WRITE_KEY, "flaky", body.clone()).await;
        assert_eq!(retried.status, 201, "{}", retried.body);
        assert_eq!(retried.header("idempotent-replayed"), None);
        // A client error is kept: the same request gets the same 4xx again.
        let missing = json!({"message": "to nowhere"});
        let path = "/api/v1/channels/999999/posts";
        let send_missing = || async {
            let response = app
                .http
                .post(format!("{}{path}", app.base))
                .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
                .insert_header(("Idempotency-Key", "to-nowhere"))
                .send_json(&missing)
                .await;
            read(response.expect("gateway answers")).await
        };
        let first = send_missing().await;
        assert!(first.status.is_client_error(), "{}", first.status);
        let before = creates(&app);
        let second = send_missing().await;
        assert_eq!(second.status, first.status);
        assert_eq!(second.body, first.body);
        assert_eq!(second.header("idempotent-replayed"), Some("true"));
        assert_eq!(creates(&app), before);
    }
);

/// README "Idempotency": 429 answers are not kept, like 5xx: after the NAS (or a proxy in
/// front of it) turned a keyed send away, the retry with the same key runs and posts, once.
#[actix_web::test]
async fn a_429_is_not_kept_and_the_retry_with_the_key_posts() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    for (status, code) in [(429, "upstream_rate_limited"), (503, "upstream_busy")] {
        let key = format!("turned-away-{status}");
        let body = json!({"message": format!("sent after a {status}")});
        app.sim
            .turn_away_next("SYNO.Chat.Post", Some("create"), 1, status, 1);
        let before = creates(&app);
        let refused = send(&app, WRITE_KEY, &key, body.clone()).await;
        refused.assert_problem(status, code);
        let retried = send(&app, WRITE_KEY, &key, body.clone()).await;
        assert_eq!(retried.status, 201, "{status}: {}", retried.body);
        assert_eq!(retried.header("idempotent-replayed"), None, "{status}");
        // Now the 201 is kept.
        let again = send(&app, WRITE_KEY, &key, body).await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.body, retried.body);
        // The turned-away call made no post; the retry made one.
        assert_eq!(creates(&app), before + 2, "{status}");
        let listed = app.get("/api/v1/channels/1/posts?limit=20").await;
        let made = listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["message"] == format!("sent after a {status}"))
            .count();
        assert_eq!(made, 1, "{status}: {}", listed.body);
    }
}

/// README "Idempotency": answers are kept per method and path, so the same key on another route
/// is another request (not 422 `idempotency_key_reused`); and an unrouted answer (404 for an
/// unknown route, 405) is not kept, so the key still runs the right request afterwards.
#[actix_web::test]
async fn a_key_is_per_method_and_path_and_an_unrouted_answer_is_not_kept() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    let body = json!({"message": "one key, two channels"});
    let first = send_to(&app, "/api/v1/channels/1/posts", "shared", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = send_to(&app, "/api/v1/channels/2/posts", "shared", body.clone()).await;
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(first.body["post_id"], second.body["post_id"]);
    assert_eq!(creates(&app), 2);

    // A typo in the path, then a wrong method: neither ran anything, neither is kept.
    let typo = send_to(&app, "/api/v1/channels/3/post", "fresh", body.clone()).await;
    typo.assert_problem(404, "route_not_found");
    let wrong_method = app
        .http
        .put(format!("{}/api/v1/channels/3/posts", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Idempotency-Key", "fresh"))
        .send_json(&body)
        .await;
    let wrong_method = read(wrong_method.expect("gateway answers")).await;
    wrong_method.assert_problem(405, "method_not_allowed");
    assert_eq!(wrong_method.header("idempotent-replayed"), None);
    let again = send_to(&app, "/api/v1/channels/3/post", "fresh", body.clone()).await;
    assert_eq!(again.header("idempotent-replayed"), None, "{}", again.body);
    let right = send_to(&app, "/api/v1/channels/3/posts", "fresh", body).await;
    assert_eq!(right.status, 201, "{}", right.body);
    assert_eq!(right.header("idempotent-replayed"), None);
    assert_eq!(creates(&app), 3);
    assert_eq!(
        stored_records(&backend)
            .await
            .iter()
            .filter(|r| r.starts_with("fresh "))
            .count(),
        1,
        "only the routed request's answer is kept"
    );
}

backends::on_both!(an_expired_key_runs_again, |backend: Backend| async move {
    let app = gateway(&backend, |s| s.idempotency.ttl_secs = 1).await;
    let body = json!({"message": "daily report"});
    assert_eq!(
        send(&app, WRITE_KEY, "daily", body.clone()).await.status,
        201
    );
    let replay = send(&app, WRITE_KEY, "daily", body.clone()).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let again = send(&app, WRITE_KEY, "daily", body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_eq!(creates(&app), 2);
});

backends::on_both!(keys_are_scoped_per_api_key, |backend: Backend| async move {
    let app = gateway(&backend, |_| {}).await;
    let body = json!({"message": "same key, two callers"});
    let writer = send(&app, WRITE_KEY, "shared-value", body.clone()).await;
    let admin = send(&app, ADMIN_KEY, "shared-value", body).await;
    assert_eq!(writer.status, 201);
    assert_eq!(admin.status, 201);
    assert_eq!(admin.header("idempotent-replayed"), None);
    assert_ne!(writer.body["post_id"], admin.body["post_id"]);
    assert_eq!(creates(&app), 2);
});

backends::on_both!(
    an_abandoned_claim_frees_itself_when_its_lease_ends,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        // Claims left by a gateway that died mid-request: one whose lease ended, one still leased.
        for (key, lease_until) in [("crashed", 1_i64), ("running", i64::MAX / 2)] {
            let sql = format!(
                "INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, owner, state, \
             lease_until, created_at, expires_at) VALUES ('writer', 'POST', '{POSTS}', '{key}', \
             'x', 'dead', 'running', {lease_until}, 0, {lease_until})"
            );
            backend.execute(&sql, &sql).await;
        }
        let body = json!({"message": "after a crash"});
        let taken_over = send(&app, WRITE_KEY, "crashed", body.clone()).await;
        assert_eq!(taken_over.status, 201, "{}", taken_over.body);
        send(&app, WRITE_KEY, "running", body)
            .await
            .assert_problem(409, "idempotency_key_in_flight");
        assert_eq!(creates(&app), 1);
    }
);

backends::on_both!(
    a_request_outlasting_its_lease_keeps_its_key,
    |backend: Backend| async move {
        // A one-second lease, and a send DSM takes two and a half seconds over.
        let app = gateway(&backend, |s| s.idempotency.lease_secs = 1).await;
        assert_eq!(app.get("/api/v1/channels/1").await.status, 200);
        crate::deliveries::slow_create(&app, 2_500);
        let body = json!({"message": "slow, once"});
        let first = {
            let (app, body) = (&app, body.clone());
            async move { send(app, WRITE_KEY, "slow-1", body).await }
        };
        let retry = async {
            tokio::time::sleep(Duration::from_millis(1_800)).await;
            send(&app, WRITE_KEY, "slow-1", body.clone()).await
        };
        let (first, retry) = tokio::join!(first, retry);
        assert_eq!(first.status, 201, "{}", first.body);
        retry.assert_problem(409, "idempotency_key_in_flight");
        assert_eq!(creates(&app), 1);
    }
);

backends::on_both!(
    a_store_that_refuses_is_503_for_keyed_writes_only,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        // The database refuses the idempotency statements (as when it is gone or broken).
        backend
            .execute("DROP TABLE idempotency_keys", "DROP TABLE idempotency_keys")
            .await;
        let body = json!({"message": "store down"});
        let refused = send(&app, WRITE_KEY, "k", body.clone()).await;
        refused.assert_problem(503, "store_unavailable");
        assert!(refused.header("retry-after").is_some());
        assert_eq!(creates(&app), 0);
        assert_eq!(app.post(POSTS, body).await.status, 201);
    }
);

/// Every kept record (key, fingerprint, headers, body) as text, read behind the gateway's back.
async fn stored_records(backend: &Backend) -> Vec<String> {
    let columns = "key || ' ' || fingerprint || ' ' || COALESCE(headers, '')";
    backend
        .bytes(
            &format!("SELECT CAST({columns} AS BLOB) || COALESCE(body, X'') FROM idempotency_keys"),
            &format!(
                "SELECT convert_to({columns}, 'UTF8') || COALESCE(body, ''::bytea) FROM idempotency_keys"
            ),
        )
        .await
        .into_iter()
        .map(|row| String::from_utf8_lossy(&row).into_owned())
        .collect()
}

/// An admin write with an Idempotency-Key.
async fn admin_send(app: &TestApp, path: &str, idempotency_key: &str, body: Value) -> Answer {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {ADMIN_KEY}")))
        .insert_header(("Idempotency-Key", idempotency_key))
        .send_json(&body)
        .await;
    read(response.expect("gateway answers")).await
}

backends::on_both!(
    an_answer_with_a_secret_is_never_kept_nor_replayed,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        for (path, body, field) in [
            (
                "/api/v1/integrations/incoming-webhooks",
                json!({"name": "ci", "channel_id": 1}),
                "token",
            ),
            (
                "/api/v1/integrations/outgoing-webhooks",
                json!({"name": "out", "channel_id": 1, "url": "https://hooks.example.com/out"}),
                "token",
            ),
            (
                "/api/v1/integrations/slash-commands",
                json!({"name": "cmd", "command": "/deploy", "url": "https://hooks.example.com/cmd"}),
                "token",
            ),
            (
                "/api/v1/subscriptions",
                json!({"url": "https://hooks.example.com/events"}),
                "secret",
            ),
        ] {
            let first = admin_send(&app, path, "create-once", body.clone()).await;
            assert_eq!(first.status, 201, "{path}: {}", first.body);
            let secret = first.body[field].as_str().unwrap().to_owned();
            assert!(secret.len() >= 16, "{path}: {}", first.body);
            for record in stored_records(&backend).await {
                assert!(
                    !record.contains(&secret),
                    "{path}: the secret is at rest: {record}"
                );
            }
            // A repeat does not run again, does not show the secret, and says why.
            let again = admin_send(&app, path, "create-once", body).await;
            let problem = again.assert_problem(409, "idempotency_answer_withheld");
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
            assert!(
                again.header("retry-after").is_none(),
                "not a wait-and-retry"
            );
            assert!(
                !again.body.to_string().contains(&secret),
                "{path}: {}",
                again.body
            );
            assert_eq!(problem["answer"]["status"], 201);
            let kept = &problem["answer"]["body"];
            assert!(kept.get(field).is_none(), "{path}: {kept}");
            let id = if field == "token" { "user_id" } else { "id" };
            assert_eq!(kept[id], first.body[id], "{path}: {kept}");
            if let Some(location) = first.header("location") {
                assert_eq!(problem["answer"]["location"], location);
            }
        }
        // Each DSM integration was created once.
        for api in [
            "SYNO.Chat.Webhook.Incoming",
            "SYNO.Chat.Webhook.Outgoing",
            "SYNO.Chat.Webhook.Slash",
        ] {
            assert_eq!(app.sim.count(api, "create"), 1, "{api}");
        }
        let kept = backend
            .count("SELECT COUNT(*) FROM idempotency_keys WHERE state = 'done'")
            .await;
        assert_eq!(kept, 4);
    }
);

/// `POST /webhooks/incoming` with a caller's `X-Chat-Token`.
async fn send_with_token(app: &TestApp, token: &str, idempotency_key: &str, body: Value) -> Answer {
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/incoming", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Idempotency-Key", idempotency_key))
        .insert_header(("X-Chat-Token", token))
        .send_json(&body)
        .await;
    read(response.expect("gateway answers")).await
}

/// The same key and body with another `X-Chat-Token` is another integration's message: it is
/// refused as a reuse, never answered with the first integration's receipt.
#[actix_web::test]
async fn another_chat_token_with_the_same_key_is_a_reuse() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    let created = app
        .call(
            "POST",
            "/api/v1/integrations/incoming-webhooks",
            Some(ADMIN_KEY),
            Some(json!({"name": "second", "channel_id": 1})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let first_token = app.sim.demo_webhook_token();
    let second_token = created.body["token"].as_str().unwrap().to_owned();
    let incoming = || app.sim.count("SYNO.Chat.External", "incoming");
    let body = json!({"text": "build green"});

    let first = send_with_token(&app, &first_token, "hook-1", body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(incoming(), 1);
    send_with_token(&app, &second_token, "hook-1", body.clone())
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert_eq!(incoming(), 1);
    // The same token, even quoted as copied from Chat, is the same request: a replay.
    let again = send_with_token(&app, &format!("\"{first_token}\""), "hook-1", body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(incoming(), 1);
    // The store holds neither token, only a digest inside the fingerprint.
    let rows = stored_records(&backend).await;
    assert!(!rows.is_empty());
    for row in rows {
        assert!(!row.contains(&first_token) && !row.contains(&second_token));
    }
}

#[actix_web::test]
async fn a_malformed_key_is_400_naming_the_header() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    for bad in ["\"\"", "\"unterminated", "\"in\"side\"", &"k".repeat(256)] {
        let answer = send(&app, WRITE_KEY, bad, json!({"message": "x"})).await;
        let problem = answer.assert_problem(400, "invalid_request");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{bad:?}: {problem}"
        );
    }
    assert_eq!(creates(&app), 0);
    // A read ignores the header: it changes nothing, and no GET documents a 400 for it.
    let read = app
        .http
        .get(format!("{}/api/v1/channels", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Idempotency-Key", "\"unterminated"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status().as_u16(), 200);
}

/// The body is read for the fingerprint only for a caller who may write, and only up to the
/// limit of its kind: a read key (refused by the route anyway) or a JSON body cannot make the
/// gateway hold an upload's worth of bytes.
#[actix_web::test]
async fn only_a_writer_s_body_is_read_for_the_fingerprint_and_json_only_to_its_limit() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    let big = json!({"message": "x".repeat(300 * 1024)});
    // Refused by the route for its scope, before anything is read.
    let reader = send(&app, crate::helpers::READ_KEY, "k-read", big.clone()).await;
    reader.assert_problem(403, "insufficient_scope");
    // A JSON body over the JSON limit: 413 at that limit, not at the upload limit.
    let writer = send(&app, WRITE_KEY, "k-write", big).await;
    let problem = writer.assert_problem(413, "payload_too_large");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&(256 * 1024).to_string()),
        "{problem}"
    );
    assert_eq!(creates(&app), 0);
}

/// The upload's raw body is read once for the fingerprint and handed on whole to the handler.
#[actix_web::test]
async fn an_upload_is_fingerprinted_and_still_reaches_the_handler() {
    let backend = Backend::sqlite();
    let app = gateway(&backend, |_| {}).await;
    let app = &app;
    let upload = |file: &'static str| async move {
        let boundary = "idem-boundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nreport\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n{file}\r\n--{boundary}--\r\n"
        );
        let response = app
            .http
            .post(format!("{}{POSTS}", app.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Idempotency-Key", "upload-1"))
            .insert_header((
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            ))
            .send_body(body)
            .await;
        read(response.expect("gateway answers")).await
    };
    let first = upload("hello").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = upload("hello").await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    upload("other bytes")
        .await
        .assert_problem(422, "idempotency_key_reused");
    assert_eq!(creates(app), 1);
}

// A client that gives up on a keyed send (its connection reset) does not cut the
// send off part way: it runs to its end and its answer is kept, so the retry is told to wait
// while it runs and then gets that answer, instead of posting the message a second time.
backends::on_both!(
    a_client_that_goes_away_does_not_cut_its_keyed_send_off,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        assert_eq!(app.get("/api/v1/channels/1").await.status, 200);
        crate::deliveries::slow_create(&app, 1_500);
        let body = json!({"message": "posted once, though nobody waited"});
        // The client resets its connection while DSM is still at work.
        let addr = app.base.trim_start_matches("http://");
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let json = body.to_string();
        let request = format!(
            "POST {POSTS} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
             Idempotency-Key: gone-1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.set_zero_linger().unwrap();
        drop(client);
        send(&app, WRITE_KEY, "gone-1", body.clone())
            .await
            .assert_problem(409, "idempotency_key_in_flight");
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        let again = send(&app, WRITE_KEY, "gone-1", body).await;
        assert_eq!(again.status, 201, "{}", again.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(creates(&app), 1);
    }
);

// A keyed send whose gateway died part way (its claim left running, its lease over): the
// retry cannot know which parts were posted, so the outbox finishes the message, looking for
// each part posted since the first attempt began; none is posted twice.
backends::on_both!(
    a_send_cut_off_by_a_crash_is_finished_without_posting_a_part_twice,
    |backend: Backend| async move {
        use sha2::{Digest, Sha256};
        let app = gateway(&backend, |_| {}).await;
        let path = "/api/v1/channels/3/posts";
        let text = crate::deliveries::three_part_text("crashed");
        let body = json!({ "message": text });
        let print = {
            let mut hash = Sha256::new();
            hash.update(b"application/json\n\n");
            hash.update(serde_json::to_vec(&body).unwrap());
            hex::encode(hash.finalize())
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let (began, lapsed, expires) = (now - 5_000, now - 1_000, now + 86_400_000);
        let sql = format!(
            "INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, owner, state, \
             lease_until, created_at, expires_at) VALUES ('writer', 'POST', '{path}', \
             'crashed-1', '{print}', 'dead', 'running', {lapsed}, {began}, {expires})"
        );
        backend.execute(&sql, &sql).await;
        // The dead attempt had posted all parts but the last as the gateway's account.
        let users = app.get("/api/v1/users").await;
        let own = users.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == syno_chat_gateway::sim::DEMO_ACCOUNT)
            .and_then(|u| u["user_id"].as_i64())
            .expect("the gateway's account is a Chat user");
        let parts = syno_chat_gateway::chunking::split_message(
            &text,
            syno_chat_gateway::chunking::DEFAULT_MAX_MESSAGE_CHARS,
        );
        assert!(parts.len() >= 3, "{}", parts.len());
        for part in &parts[..parts.len() - 1] {
            app.sim.post_as_user(own, 3, part);
        }

        let answer = send_to(&app, path, "crashed-1", body.clone()).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.body["delivery_id"].as_str().unwrap().to_owned();
        let done =
            crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
        crate::deliveries::parts_posted_once(&app, 3, "crashed", &text).await;
        assert_eq!(creates(&app), 1, "only the last part was posted: {done}");
        let again = send_to(&app, path, "crashed-1", body).await;
        assert_eq!(again.body["delivery_id"], id.as_str(), "{}", again.body);
        assert_eq!(creates(&app), 1);
    }
);

// A keyed message accepted for the outbox (202), whose gateway died before it kept the
// answer: the retry finds the delivery committed under the key instead of queuing the
// message a second time.
backends::on_both!(
    a_retry_of_an_accept_cut_off_before_its_answer_was_kept_gets_the_same_delivery,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let body = json!({"message": "queued once"});
        let accept = || send_async(&app, "accepted-1", &body);
        let first = accept().await;
        assert_eq!(first.status, 202, "{}", first.body);
        forget_answer(&backend, "accepted-1").await;
        let again = accept().await;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(
            again.header("idempotent-replayed"),
            None,
            "run again, not replayed"
        );
        assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);

        // The same for a synchronous send the outbox took over (DSM's answer never came).
        app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
        let body = json!({"message": "taken over once"});
        let first = send(&app, WRITE_KEY, "taken-over-1", body.clone()).await;
        assert_eq!(first.status, 202, "{}", first.body);
        forget_answer(&backend, "taken-over-1").await;
        let again = send(&app, WRITE_KEY, "taken-over-1", body).await;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);
        let listed = app.get("/api/v1/deliveries").await;
        assert_eq!(
            listed.body["items"].as_array().unwrap().len(),
            2,
            "{}",
            listed.body
        );
    }
);

/// Turns the kept answer of `key` back into the claim of a request that died before keeping
/// it (its lease over).
async fn forget_answer(backend: &Backend, key: &str) {
    let sql = format!(
        "UPDATE idempotency_keys SET state = 'running', lease_until = 1, status = NULL, \
         headers = NULL, body = NULL WHERE key = '{key}'"
    );
    backend.execute(&sql, &sql).await;
}

// A synchronous send that finished in this process but whose answer was not kept (the store
// failed at that moment, say): the retry, even one that now asks for `respond-async`, hands
// the message to the outbox, which finds the post this process made instead of posting again.
backends::on_both!(
    a_retry_finds_the_posts_its_cut_off_attempt_made_in_this_process,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let body = json!({"message": "made here, found here"});
        let first = send(&app, WRITE_KEY, "here-1", body.clone()).await;
        assert_eq!(first.status, 201, "{}", first.body);
        forget_answer(&backend, "here-1").await;
        let again = send_async(&app, "here-1", &body).await;
        assert_eq!(again.status, 202, "{}", again.body);
        let id = again.body["delivery_id"].as_str().unwrap().to_owned();
        let done =
            crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(done["post_ids"][0], first.body["post_id"], "{done}");
        assert_eq!(creates(&app), 1, "{done}");
    }
);

// The same for a chatbot message: the retry of a keyed send whose answer was not kept hands
// the message to the outbox, which finds each recipient's post with the bot's token and sends
// nothing again.
backends::on_both!(
    a_retried_chatbot_send_finds_the_posts_its_cut_off_attempt_made,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let path = format!("/api/v1/bots/{}/messages", crate::helpers::BOT_TOKEN_NAME);
        let body = json!({"text": "chatbot made here, found here", "user_ids": [2, 3]});
        let first = send_to(&app, &path, "bot-here-1", body.clone()).await;
        assert_eq!(first.status, 200, "{}", first.body);
        forget_answer(&backend, "bot-here-1").await;
        let again = send_to(&app, &path, "bot-here-1", body).await;
        assert_eq!(again.status, 202, "{}", again.body);
        let id = again.body["delivery_id"].as_str().unwrap().to_owned();
        let done =
            crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(
            app.sim.count("SYNO.Chat.External", "chatbot"),
            1,
            "sent again: {done}"
        );
        assert_eq!(done["at_least_once"], false, "{done}");
        let mut found: Vec<u64> = done["post_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap())
            .collect();
        let mut made: Vec<u64> = first.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["post_id"].as_u64().unwrap())
            .collect();
        found.sort();
        made.sort();
        assert_eq!(found, made, "{done}");
    }
);

// A keyed chatbot send whose DSM answer never came (DSM posted, then the connection closed) is
// handed to the outbox (a kept 202), which finds the posts and sends nothing again; without a
// key the caller gets the failure.
backends::on_both!(
    an_unanswered_keyed_chatbot_send_is_finished_once_by_the_outbox,
    |backend: Backend| async move {
        let app = gateway(&backend, |_| {}).await;
        let path = format!("/api/v1/bots/{}/messages", crate::helpers::BOT_TOKEN_NAME);
        let body = json!({"text": "chatbot: unanswered, once", "user_ids": [2, 3]});
        app.sim.close_next("SYNO.Chat.External", Some("chatbot"), 1);
        let answer = send_to(&app, &path, "bot-unanswered-1", body.clone()).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.body["delivery_id"].as_str().unwrap().to_owned();
        let done =
            crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
        assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 1, "{done}");
        assert_eq!(done["at_least_once"], false, "{done}");
        assert_eq!(done["post_ids"].as_array().unwrap().len(), 2, "{done}");
        let again = send_to(&app, &path, "bot-unanswered-1", body.clone()).await;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(again.body["delivery_id"], id.as_str(), "{}", again.body);
        assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 1);

        app.sim.close_next("SYNO.Chat.External", Some("chatbot"), 1);
        let unkeyed = app.call("POST", &path, Some(WRITE_KEY), Some(body)).await;
        unkeyed.assert_problem(502, "upstream_unreachable");
    }
);

// A keyed long message whose store stops answering while it is being posted: the request
// renews its key's lease every third of it; once renewals have failed for two thirds, it posts
// no further part (a retry could take the key over once the lease lapsed, and finish the
// message beside it), and hands the rest to the outbox, which posts each part once.
backends::on_both!(
    a_keyed_send_whose_lease_cannot_be_renewed_posts_no_further_part_itself,
    |backend: Backend| async move {
        // A three-second lease (renewed every second); DSM takes 1.6 s for each part (of four).
        let app = gateway(&backend, |s| s.idempotency.lease_secs = 3).await;
        assert_eq!(app.get("/api/v1/channels/3").await.status, 200);
        app.sim.slow_next(
            "SYNO.Chat.Post",
            Some("create"),
            3,
            Duration::from_millis(1_600),
        );
        let text = crate::deliveries::three_part_text("lapsing");
        let body = json!({ "message": text });
        let sent = send_to(&app, "/api/v1/channels/3/posts", "lapsing-1", body);
        let outage = async {
            // The claim is taken at once; then the idempotency statements fail.
            tokio::time::sleep(Duration::from_millis(300)).await;
            backend
                .execute("DROP TABLE idempotency_keys", "DROP TABLE idempotency_keys")
                .await;
        };
        let (first, ()) = tokio::join!(sent, outage);
        // Part one went out, and part two (at 1.6 s, with more than a third of the lease left);
        // part three would have started at 3.2 s, with less than a third left even had the
        // renewal at one second come before the outage. (Posting every part itself: 201.)
        assert_eq!(first.status, 202, "{}", first.body);
        let id = first.body["delivery_id"].as_str().unwrap().to_owned();
        let done =
            crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
        let posted = crate::deliveries::parts_posted_once(&app, 3, "lapsing", &text).await;
        assert_eq!(creates(&app), posted.len(), "{done}");
    }
);

/// A channel created before its invitation failed exists: the problem names it in `created`,
/// and the key keeps that answer although it is a 5xx, so a retry with the key does not
/// create a second channel.
#[actix_web::test]
async fn a_channel_created_before_its_invitation_failed_is_not_created_twice() {
    let app = crate::helpers::spawn_app().await;
    app.sim
        .close_next("SYNO.Chat.Channel.Named", Some("invite"), 1);
    let body = json!({"name": "half-made", "members": [2]});
    let first = send_to(&app, "/api/v1/channels", "make-half-made", body.clone()).await;
    assert!(first.status.is_server_error(), "{}", first.body);
    let created = first.body["created"].as_str().expect("created named");
    let channel_id: u64 = created.rsplit('/').next().unwrap().parse().unwrap();
    assert!(
        created.starts_with(&app.base)
            && created.ends_with(&format!("/api/v1/channels/{channel_id}")),
        "{created}"
    );
    assert!(
        first.body["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("channel {channel_id} was created")),
        "{}",
        first.body
    );
    let again = send_to(&app, "/api/v1/channels", "make-half-made", body).await;
    assert_eq!(again.status, first.status, "{}", again.body);
    assert_eq!(again.body["created"], first.body["created"]);
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "create"), 1);
    // It is there to invite to by hand.
    assert_eq!(
        app.get(&format!("/api/v1/channels/{channel_id}"))
            .await
            .status,
        200
    );
}
