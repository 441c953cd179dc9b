//! Sessions, logins, failures of the NAS, caching and the DSM error table.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{ADMIN_KEY, READ_KEY, WRITE_KEY, read, spawn_app, spawn_app_with};

#[actix_web::test]
async fn an_expired_session_is_renewed_with_one_login() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    app.sim.expire_all_sessions();
    let answers = join_all((0..10).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "callers never see the expiry"
    );
    assert_eq!(
        app.sim.login_attempts(),
        logins + 1,
        "one login for all waiting callers"
    );
}

#[actix_web::test]
async fn every_call_carries_the_sid_and_synotoken() {
    let app = spawn_app().await;
    app.get("/api/v1/channels/1/posts").await;
    app.post("/api/v1/channels/1/posts", json!({"message": "x"}))
        .await;
    let chat_calls: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.api.as_deref().is_some_and(|a| a.starts_with("SYNO.Chat")))
        .collect();
    assert!(!chat_calls.is_empty());
    for call in chat_calls {
        assert!(call.session_account.is_some(), "{call:?}");
        assert!(call.syno_token_ok, "{call:?}");
    }
}

/// README "Errors": the caller whose own request found the session lost and whose login DSM
/// then refused gets `upstream_login_failed` (502, with DSM's code); the callers after it get
/// the back-off that failure started, and no login of their own.
#[actix_web::test]
async fn the_caller_whose_login_dsm_refuses_is_told_so() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 107);
    app.sim.fail_next("SYNO.API.Auth", Some("login"), 1, 400);
    let refused = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(
        refused.assert_problem(502, "upstream_login_failed")["dsm_code"],
        400,
        "{}",
        refused.body
    );
    let after = app.get("/api/v1/channels/1/posts").await;
    after.assert_problem(503, "upstream_login_backoff");
    assert!(after.header("retry-after").is_some());
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

#[actix_web::test]
async fn a_wrong_password_is_one_login_attempt_per_backoff_step_under_load() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.password = Some(secrecy::SecretString::from("wrong".to_owned()));
    })
    .await;
    let answers = join_all((0..50).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    for answer in &answers {
        assert!(
            matches!(answer.status.as_u16(), 502 | 503),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.body["dsm_code"], 400, "{}", answer.body);
    }
    // The start-up login failed; everyone since is told when the next attempt will be made.
    for answer in &answers {
        answer.assert_problem(503, "upstream_login_backoff");
        assert!(answer.header("retry-after").is_some());
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap()
                .contains("wrong password"),
            "{}",
            answer.body
        );
    }
    assert_eq!(
        app.sim.login_attempts(),
        1,
        "at most one login per back-off step"
    );
    // Readiness does not depend on DSM; the health view says what is wrong.
    assert_eq!(app.call("GET", "/readyz", None, None).await.status, 200);
    let health = app.get("/api/v1/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(health.body["dsm"]["ok"], false);
    assert_eq!(health.body["dsm"]["code"], "upstream_login_backoff");
    assert_eq!(health.body["dsm"]["dsm_code"], 400);
}

#[actix_web::test]
async fn a_blocked_ip_is_503_with_retry_after() {
    let app = spawn_app_with(
        SimConfig {
            auto_block_failures: 1,
            ..SimConfig::default()
        },
        |s| {
            s.upstream.password = Some(secrecy::SecretString::from("wrong".to_owned()));
            s.upstream.login_backoff_max_secs = 0;
        },
    )
    .await;
    // The warm-up login failed and blocked the IP; the next login is answered 407.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let answer = app.get("/api/v1/users").await;
    assert_eq!(
        answer.assert_problem(503, "upstream_login_blocked")["dsm_code"],
        407
    );
    assert!(answer.header("retry-after").is_some());
}

#[actix_web::test]
async fn a_nas_refusing_connections_is_502_and_recovery_is_automatic() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim.refuse_connections(true).await;
    // A request already on a kept-alive connection may still be answered while the simulator
    // winds down; the first one that is not must be the documented 502.
    let mut refused = None;
    for _ in 0..50 {
        let answer = app.get("/api/v1/channels/1/posts").await;
        if answer.status != 200 {
            refused = Some(answer);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    refused
        .expect("the gateway notices the NAS is gone")
        .assert_problem(502, "upstream_unreachable");
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.status,
        200,
        "the gateway stays in the Service during a NAS outage, answering its own problems"
    );
    let health = app.get("/api/v1/health").await;
    assert_eq!(health.body["dsm"]["ok"], false, "{}", health.body);
    assert_eq!(health.body["dsm"]["code"], "upstream_unreachable");
    assert_eq!(
        app.call("GET", "/healthz", None, None).await.status,
        200,
        "liveness does not depend on the NAS"
    );
    app.sim.refuse_connections(false).await;
    let mut recovered = false;
    for _ in 0..50 {
        if app.get("/api/v1/channels/1/posts").await.status == 200 {
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway serves again once the NAS is back");
    assert_eq!(app.call("GET", "/readyz", None, None).await.status, 200);
}

#[actix_web::test]
async fn a_slow_nas_is_a_504() {
    let app = spawn_app_with(SimConfig::default(), |s| s.upstream.timeout_ms = 300).await;
    // A cold simulator on a busy machine may miss the first 300 ms deadline; its back-off passes.
    let mut first = app.get("/api/v1/channels/1/posts").await;
    for _ in 0..120 {
        if first.status == 200 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        first = app.get("/api/v1/channels/1/posts").await;
    }
    assert_eq!(first.status, 200, "{}", first.body);
    app.sim.set_latency(Duration::from_millis(1_000));
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(504, "upstream_timeout");
}

#[actix_web::test]
async fn a_hundred_concurrent_cold_reads_make_one_upstream_call() {
    let app = spawn_app().await;
    let answers =
        join_all((0..100).map(|_| app.call("GET", "/api/v1/users", Some(READ_KEY), None))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    assert!(answers.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(app.sim.count("SYNO.Chat.User", "list"), 1);
    // Lookups by id are served from the same cached list.
    app.get("/api/v1/users/1").await;
    assert_eq!(app.sim.count("SYNO.Chat.User", "list"), 1);
}

#[actix_web::test]
async fn the_cache_expires_after_its_ttl() {
    let app = spawn_app_with(SimConfig::default(), |s| s.cache.ttl_secs = 1).await;
    app.get("/api/v1/channels").await;
    app.get("/api/v1/channels").await;
    assert_eq!(app.sim.count("SYNO.Chat.Channel", "list"), 1);
    actix_web::rt::time::sleep(Duration::from_millis(1_200)).await;
    app.get("/api/v1/channels").await;
    assert_eq!(app.sim.count("SYNO.Chat.Channel", "list"), 2);
}

#[actix_web::test]
async fn cached_lists_carry_an_etag_and_answer_304_to_if_none_match() {
    let app = spawn_app().await;
    let with_tag = |path: &str, tag: &str| {
        app.http
            .get(format!("{}{path}", app.base))
            .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
            .insert_header(("If-None-Match", tag.to_owned()))
    };
    for path in ["/api/v1/channels", "/api/v1/users"] {
        let first = app.get(path).await;
        assert_eq!(first.status, 200);
        let etag = first
            .header("etag")
            .expect("a whole list has an ETag")
            .to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        let same = read(with_tag(path, &etag).send().await.unwrap()).await;
        assert_eq!(same.status, 304, "{path}");
        assert_eq!(same.body, serde_json::Value::Null, "a 304 has no body");
        assert_eq!(same.header("etag"), Some(etag.as_str()));
        assert!(same.header("x-request-id").is_some());

        let other = read(with_tag(path, "\"0000\"").send().await.unwrap()).await;
        assert_eq!(other.status, 200);
        assert_eq!(other.body, first.body);
        assert_eq!(other.header("etag"), Some(etag.as_str()));
    }
    // A filtered answer is another representation: no tag, and a tag does not make it 304.
    let etag = app
        .get("/api/v1/channels")
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let filtered = read(
        with_tag("/api/v1/channels?name=general", &etag)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(filtered.status, 200);
    assert_eq!(filtered.header("etag"), None);
    // Only the same list matches: another version of the channel list gets another tag.
    assert_eq!(app.sim.count("SYNO.Chat.Channel", "list"), 1);
    let created = app
        .post(
            "/api/v1/channels",
            json!({"name": "etag-check", "type": "public"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let changed = read(with_tag("/api/v1/channels", &etag).send().await.unwrap()).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

/// A write through the gateway that changes a cached list drops it: a post moves its channel's
/// `last_post_at`, and an integration's bot user joins the user list.
#[actix_web::test]
async fn writes_that_change_a_cached_list_drop_it() {
    let app = spawn_app().await;
    let before = app.get("/api/v1/channels/1").await;
    assert_eq!(before.status, 200, "{}", before.body);
    let users = app.get("/api/v1/users").await;
    assert_eq!(users.status, 200);
    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    let posted = app
        .post(
            "/api/v1/channels/1/posts",
            json!({"message": "cache probe"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let after = app.get("/api/v1/channels/1").await;
    assert_eq!(
        after.body["last_post_at"], posted.body["create_at"],
        "{}",
        after.body
    );
    assert_ne!(after.body["last_post_at"], before.body["last_post_at"]);

    let created = app
        .call(
            "POST",
            "/api/v1/integrations/incoming-webhooks",
            Some(ADMIN_KEY),
            Some(json!({"name": "cache-check", "channel_id": 1})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bot = created.body["user_id"].clone();
    let listed = app.get("/api/v1/users").await;
    let ids: Vec<&serde_json::Value> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["user_id"])
        .collect();
    assert!(ids.contains(&&bot), "bot {bot} in {ids:?}");
}

#[actix_web::test]
async fn dsm_error_codes_map_to_documented_statuses() {
    let app = spawn_app().await;
    app.get("/api/v1/channels/1/posts").await;
    // 105 twice: the session is checked (still valid), so it is a permission error, not a re-login.
    let logins = app.sim.login_attempts();
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 105);
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(
        answer.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
    assert_eq!(
        app.sim.login_attempts(),
        logins,
        "a permission error does not cause a login"
    );

    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 114);
    assert_eq!(
        app.get("/api/v1/channels/1/posts")
            .await
            .assert_problem(502, "upstream_contract_error")["dsm_code"],
        114
    );
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 410);
    assert_eq!(
        app.post("/api/v1/channels/1/posts", json!({"message": "long"}))
            .await
            .assert_problem(413, "message_too_long")["dsm_code"],
        410
    );
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 411);
    let limited = app
        .post("/api/v1/channels/1/posts", json!({"message": "fast"}))
        .await;
    limited.assert_problem(429, "upstream_rate_limited");
    assert!(limited.header("retry-after").is_some());
    // A read is asked again twice before DSM's "busy" is the answer.
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 3, 111);
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(503, "upstream_busy");
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 103);
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(501, "upstream_api_unsupported");
}

#[actix_web::test]
async fn a_session_killed_by_duplicate_login_is_renewed() {
    let app = spawn_app().await;
    app.get("/api/v1/channels/1/posts").await;
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 107);
    let logins = app.sim.login_attempts();
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

/// README "Sessions and logins": DSM 150 (a NAS that pins sessions to an address saw another
/// one) is a lost session like 106/107: one login for the waiting callers, the call retried
/// once, and the caller gets the answer; the outbox's send gets through the same way.
#[actix_web::test]
async fn a_session_pinned_to_another_address_is_renewed() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 150);
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
    // A write too: posted once, after one more login.
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 150);
    let posted = app
        .post(
            "/api/v1/channels/1/posts",
            serde_json::json!({"message": "after a pinned session"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(app.sim.login_attempts(), logins + 2);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), creates + 2);
}

/// After a reboot a NAS answered the old session 105 ("no permission", nas-download-manager#24)
/// instead of 119: the session check finds it gone, the gateway logs in again once, and the
/// caller gets the answer, not a 403.
#[actix_web::test]
async fn a_session_a_reboot_answers_105_for_is_renewed() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    app.sim.reboot_answering_105();
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

#[actix_web::test]
async fn shutdown_logs_out_of_dsm() {
    let mut app = spawn_app().await;
    app.get("/api/v1/channels/1/posts").await;
    assert_eq!(app.sim.active_sessions().len(), 1);
    app.stop().await;
    let logout = app
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method.as_deref() == Some("logout"))
        .expect("logout sent");
    assert!(
        logout.params.iter().any(|(k, _)| k == "_sid"),
        "logout names the session, or DSM keeps it"
    );
    assert!(app.sim.active_sessions().is_empty());
}

/// A gateway on a fresh PostgreSQL database with `store.timeout_ms` at its least (6 s), its
/// store answering, and the database's URL (`None`: skipped loudly).
async fn gateway_with_a_short_store_deadline() -> Option<(crate::helpers::TestApp, String)> {
    let url = crate::postgres::fresh_database()?;
    let store_url = url.clone();
    let app = spawn_app_with(SimConfig::default(), move |s| {
        s.store.url = secrecy::SecretString::from(store_url);
        s.store.timeout_ms = 6_000;
    })
    .await;
    assert_eq!(app.get("/api/v1/deliveries").await.status, 200);
    Some((app, url))
}

/// A statement the database does not answer (here: waiting for a lock another session holds,
/// as it would on a frozen VM or process, whose kernel still answers TCP keepalives) does not
/// hold the request that needs it: it fails as unavailable after `store.timeout_ms`, and the
/// store serves again once the database does.
#[actix_web::test]
async fn a_statement_the_database_does_not_answer_fails_after_the_store_timeout() {
    use sqlx::Connection as _;
    let Some((app, url)) = gateway_with_a_short_store_deadline().await else {
        return;
    };

    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let stuck = tokio::time::timeout(Duration::from_secs(20), app.get("/api/v1/deliveries"))
        .await
        .expect("the request was held by the statement the database did not answer");
    stuck.assert_problem(503, "store_unavailable");
    assert!(stuck.header("retry-after").is_some(), "{}", stuck.body);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    // Reads that need no store are not held meanwhile.
    assert_eq!(app.get("/api/v1/channels").await.status, 200);

    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    assert_eq!(app.get("/api/v1/deliveries").await.status, 200);
}

/// A store that commits a message after the gateway stopped waiting for it (the deadline drops
/// a commit in flight): the 503 tells the caller nothing was confirmed, and the caller's retry
/// with the same `Idempotency-Key` answers 202 with the delivery stored meanwhile, once.
#[actix_web::test]
async fn a_keyed_message_committed_after_the_store_timeout_is_not_stored_twice_by_its_retry() {
    use sqlx::Connection as _;
    let Some((app, url)) = gateway_with_a_short_store_deadline().await else {
        return;
    };
    // The next delivery stored takes 9 s to commit (a trigger deferred to COMMIT), once.
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE slow_once (x int); INSERT INTO slow_once VALUES (1);
         CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN DELETE FROM slow_once; IF FOUND THEN PERFORM pg_sleep(9); END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON deliveries
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let send = || async {
        let response = app
            .http
            .post(format!("{}/api/v1/channels/2/posts", app.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Prefer", "respond-async"))
            .insert_header(("Idempotency-Key", "committed-late"))
            .send_json(&json!({"message": "committed late"}))
            .await;
        read(response.expect("gateway answers")).await
    };
    let first = send().await;
    first.assert_problem(503, "store_unavailable");
    // Until the commit the gateway gave up on has landed.
    let mut stored = 0i64;
    for _ in 0..100 {
        stored = sqlx::query_scalar("SELECT count(*) FROM deliveries")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1, "the first attempt's commit landed");

    let retry = send().await;
    assert_eq!(retry.status.as_u16(), 202, "{}", retry.body);
    let id = retry.body["delivery_id"].as_str().unwrap().to_owned();
    crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(stored, 1, "one delivery for the one message");
    let posts = app.get("/api/v1/channels/2/posts?limit=50").await;
    let posted = crate::posts::messages_oldest_first(&posts.body);
    assert_eq!(
        posted.iter().filter(|m| *m == "committed late").count(),
        1,
        "{posted:?}"
    );
}

#[actix_web::test]
async fn a_send_that_never_reached_the_nas_keeps_the_cached_channel_list() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels").await.status, 200);
    app.sim.refuse_connections(true).await;
    // The connections DSM closed are found closed by reads first: a send on one of them may
    // have reached DSM (its outcome unknown), which is another case.
    for _ in 0..10 {
        let read = app.get("/api/v1/channels/1/posts").await;
        if read.body["detail"] == "could not reach DSM: connection failed" {
            break;
        }
    }
    let failed = app
        .post(
            "/api/v1/channels/2/posts",
            json!({"message": "while the NAS is away"}),
        )
        .await;
    assert!(failed.status.is_server_error(), "{}", failed.body);
    // Nothing was posted, so the list read before is still what reads get (it was dropped, and
    // every channel read then failed until the NAS was back).
    let cached = app.get("/api/v1/channels").await;
    assert_eq!(cached.status, 200, "{}", cached.body);
    app.sim.refuse_connections(false).await;
}

/// A request is dropped when its caller goes (README "Hardening"); a login it began is not:
/// cut off, it could leave DSM a session nobody ends, and the next caller logged in again.
#[actix_web::test]
async fn a_login_whose_caller_has_gone_is_finished_and_kept() {
    use std::io::Write;
    let app = spawn_app_with(SimConfig::default(), |s| s.upstream.timeout_ms = 60_000).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // The session is gone: the next call logs in again, slowly (1.5 s for the refused call,
    // then 1.5 s for the login).
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 107);
    app.sim.set_latency(Duration::from_millis(1_500));
    let logins = app.sim.login_attempts();
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut caller = std::net::TcpStream::connect(&address).unwrap();
    write!(
        caller,
        "GET /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {READ_KEY}\r\n\r\n"
    )
    .unwrap();
    // Gone halfway through the login.
    actix_web::rt::time::sleep(Duration::from_millis(2_250)).await;
    drop(caller);
    actix_web::rt::time::sleep(Duration::from_millis(1_500)).await;
    app.sim.set_latency(Duration::ZERO);
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    assert_eq!(app.sim.login_attempts(), logins + 1, "logged in again");
}
