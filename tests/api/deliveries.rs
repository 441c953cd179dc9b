//! Asynchronous delivery (`Prefer: respond-async`) against the simulator, on SQLite and on a
//! real PostgreSQL.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use syno_chat_gateway::config::PostListPaging;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{
    ADMIN_KEY, Answer, BOT_TOKEN_NAME, TestApp, WEBHOOK_TOKEN_NAME, WRITE_KEY, last_request, param,
    read, spawn_app, spawn_app_with,
};

/// POSTs `body` to `path` with `Prefer: respond-async`.
pub async fn post_async(app: &TestApp, path: &str, body: Value) -> Answer {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Prefer", "respond-async"))
        .send_json(&body)
        .await;
    read(response.expect("gateway answers")).await
}

/// Asserts the 202 answer and returns the delivery id.
fn accepted(answer: &Answer) -> String {
    assert_eq!(answer.status.as_u16(), 202, "body: {}", answer.body);
    assert_eq!(answer.body["state"], "queued");
    assert_eq!(answer.header("preference-applied"), Some("respond-async"));
    let id = answer.body["delivery_id"].as_str().unwrap().to_owned();
    // Absolute, under the origin the caller used.
    let location = answer.header("location").unwrap();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    assert!(
        location.ends_with(&format!("/api/v1/deliveries/{id}")),
        "{location}"
    );
    id
}

/// Polls the delivery until it reaches `state`.
pub async fn wait_for(app: &TestApp, id: &str, state: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let answer = app.get(&format!("/api/v1/deliveries/{id}")).await;
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
        if answer.body["state"] == state {
            return answer.body;
        }
        assert!(
            start.elapsed() < within,
            "delivery {id} not {state} in {within:?}: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages of channel `channel_id`, oldest first.
async fn messages(app: &TestApp, channel_id: u64) -> Vec<String> {
    let list = app
        .get(&format!("/api/v1/channels/{channel_id}/posts?limit=200"))
        .await;
    assert_eq!(list.status.as_u16(), 200, "{}", list.body);
    crate::posts::messages_oldest_first(&list.body)
}

/// A gateway on SQLite, or on a fresh PostgreSQL database (`None`: skipped loudly).
async fn app_on(postgres: bool, sim: SimConfig, timeout_ms: u64) -> Option<TestApp> {
    let url = if postgres {
        Some(crate::postgres::fresh_database()?)
    } else {
        None
    };
    Some(
        spawn_app_with(sim, move |s| {
            if let Some(url) = url {
                s.store.url = SecretString::from(url);
            }
            s.upstream.timeout_ms = timeout_ms;
        })
        .await,
    )
}

#[actix_web::test]
async fn an_async_post_answers_202_then_is_delivered_once() {
    let app = spawn_app().await;
    let answer = post_async(
        &app,
        "/api/v1/channels/2/posts",
        json!({"message": "async hello"}),
    )
    .await;
    let id = accepted(&answer);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["at_least_once"], false);
    assert!(done["finished_at"].as_i64().is_some());
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == "async hello").count(),
        1,
        "{posted:?}"
    );
    // The post id is DSM's.
    let post_id = done["post_ids"][0].as_u64().unwrap();
    assert_eq!(
        app.get("/api/v1/channels/2/posts?limit=1").await.body["items"][0]["post_id"],
        post_id
    );
}

#[actix_web::test]
async fn a_long_async_message_is_posted_as_ordered_parts_that_join_back() {
    let app = spawn_app().await;
    let text = (0..1000).map(|i| format!("w{i:04} ")).collect::<String>() + "end";
    assert!(text.chars().count() > 6000);
    let id =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({ "message": text })).await);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    let parts = done["post_ids"].as_array().unwrap().len();
    assert!(parts >= 4, "split at delivery.max_message_chars: {done}");
    let sent: Vec<String> = app
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.api.as_deref() == Some("SYNO.Chat.Post")
                && r.method.as_deref() == Some("create")
                && r.error_code.is_none()
        })
        .filter_map(|r| param(r, "message").map(str::to_owned))
        .collect();
    assert_eq!(sent.len(), parts);
    assert!(sent.iter().all(|part| part.chars().count() <= 1800));
    assert_eq!(
        sent.concat(),
        text,
        "the parts, in order, join back to the text"
    );
}

#[actix_web::test]
async fn every_sending_route_takes_respond_async() {
    let app = spawn_app().await;
    let dm = accepted(
        &post_async(
            &app,
            "/api/v1/users/2/messages",
            json!({"message": "dm later"}),
        )
        .await,
    );
    let hook = accepted(
        &post_async(
            &app,
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": "hook later"}),
        )
        .await,
    );
    let bot = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": "bot later", "user_ids": [2]}),
        )
        .await,
    );
    for id in [&dm, &hook, &bot] {
        wait_for(&app, id, "delivered", Duration::from_secs(20)).await;
    }
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 1);
    assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 1);
    // As Synology's help and the seed send them: control fields and token in the query,
    // `payload` alone in the body.
    for method in ["incoming", "chatbot"] {
        let sent = last_request(&app, "SYNO.Chat.External", method);
        assert_eq!(sent.http_method, "POST");
        let mut in_query = sent.query_fields.clone();
        in_query.sort();
        assert_eq!(in_query, ["api", "method", "token", "version"], "{sent:?}");
        assert!(param(&sent, "payload").is_some(), "{sent:?}");
    }
    let dm = app.get(&format!("/api/v1/deliveries/{dm}")).await;
    assert_eq!(dm.body["post_ids"].as_array().unwrap().len(), 1);

    // A caller's own token is not kept at rest: asynchronous sending is refused.
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/incoming", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Prefer", "respond-async"))
        .insert_header(("X-Chat-Token", "a".repeat(64)))
        .send_json(&json!({"text": "x"}))
        .await;
    let refused = read(response.unwrap()).await;
    assert!(
        refused.assert_problem(422, "unprocessable")["detail"]
            .as_str()
            .unwrap()
            .contains("tokens.<name>")
    );
    // Invalid input is refused before anything is stored.
    post_async(&app, "/api/v1/channels/2/posts", json!({"message": " "}))
        .await
        .assert_problem(400, "invalid_request");
    let listed = app.get("/api/v1/deliveries").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 3);
}

/// A NUL character is refused alike whether the message is sent at once or stored first, on
/// either store (PostgreSQL cannot hold one in text; it used to be a 422 there alone).
async fn a_nul_in_a_message_is_refused_before_it_is_stored(postgres: bool) {
    let Some(app) = app_on(postgres, SimConfig::default(), 3_000).await else {
        return;
    };
    let body = json!({"message": "before\u{0}after"});
    for answer in [
        app.post("/api/v1/channels/2/posts", body.clone()).await,
        post_async(&app, "/api/v1/channels/2/posts", body).await,
    ] {
        let problem = answer.assert_problem(400, "invalid_request");
        assert!(
            problem["detail"].as_str().unwrap().contains("NUL"),
            "{problem}"
        );
    }
    let listed = app.get("/api/v1/deliveries").await;
    assert_eq!(listed.body["items"], json!([]), "{}", listed.body);
    assert!(!messages(&app, 2).await.iter().any(|m| m.contains("before")));
}

#[actix_web::test]
async fn a_nul_in_a_message_is_refused_before_it_is_stored_sqlite() {
    a_nul_in_a_message_is_refused_before_it_is_stored(false).await;
}

#[actix_web::test]
async fn a_nul_in_a_message_is_refused_before_it_is_stored_postgres() {
    a_nul_in_a_message_is_refused_before_it_is_stored(true).await;
}

async fn nas_down_while_messages_arrive(postgres: bool) {
    let Some(app) = app_on(postgres, SimConfig::default(), 3_000).await else {
        return;
    };
    app.sim.refuse_connections(true).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let channel = 1 + n % 3;
        let start = Instant::now();
        let answer = post_async(
            &app,
            &format!("/api/v1/channels/{channel}/posts"),
            json!({"message": format!("down {n}")}),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_millis(1_000),
            "the 202 took {:?} while the NAS is down",
            start.elapsed()
        );
        ids.push(accepted(&answer));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let queued = app.get("/api/v1/deliveries?state=delivered").await;
    assert_eq!(queued.body["items"].as_array().unwrap().len(), 0);
    app.sim.refuse_connections(false).await;
    for (n, id) in ids.iter().enumerate() {
        let done = wait_for(&app, id, "delivered", Duration::from_secs(90)).await;
        if n < 3 {
            // The head of each channel was tried while the NAS was away; the rest waited.
            // The last failure is the refused connection, or the login back-off it started.
            let code = done["last_error"]["code"].as_str().unwrap_or_default();
            assert!(
                ["upstream_unreachable", "upstream_login_backoff"].contains(&code),
                "{done}"
            );
            assert!(done["attempts"].as_i64().unwrap() > 1, "{done}");
        }
    }
    for channel in 1..=3u64 {
        let posted: Vec<String> = messages(&app, channel)
            .await
            .into_iter()
            .filter(|m| m.starts_with("down "))
            .collect();
        let expected: Vec<String> = (0..50u64)
            .filter(|n| 1 + n % 3 == channel)
            .map(|n| format!("down {n}"))
            .collect();
        assert_eq!(posted, expected, "channel {channel}: once each, in order");
    }
}

/// A NAS rebooting answers its API list before Chat runs, then 102 for Chat's APIs: the
/// backlog waits for Chat instead of failing for good, one delivery after another.
#[actix_web::test]
async fn a_backlog_waits_for_chat_on_a_nas_that_is_still_starting_it() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/2/posts").await.status, 200);
    app.sim.set_chat_stopped(true);
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": format!("after the reboot {n}")}),
        )
        .await;
        ids.push(accepted(&answer));
    }
    let head = &ids[0];
    let start = Instant::now();
    loop {
        let answer = app.get(&format!("/api/v1/deliveries/{head}")).await;
        assert_ne!(answer.body["state"], "failed", "{}", answer.body);
        // A second attempt that is still `sending` (claimed, not yet refused) is asked again.
        let tried_twice =
            answer.body["attempts"].as_i64().unwrap_or(0) >= 2 && answer.body["state"] != "sending";
        if tried_twice || start.elapsed() > Duration::from_secs(8) {
            assert_eq!(answer.body["state"], "queued", "{}", answer.body);
            assert_eq!(
                answer.body["last_error"]["code"], "upstream_api_unsupported",
                "{}",
                answer.body
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.sim.set_chat_stopped(false);
    for id in &ids {
        wait_for(&app, id, "delivered", Duration::from_secs(90)).await;
    }
    let posted: Vec<String> = messages(&app, 2)
        .await
        .into_iter()
        .filter(|m| m.starts_with("after the reboot "))
        .collect();
    assert_eq!(
        posted,
        [
            "after the reboot 0",
            "after the reboot 1",
            "after the reboot 2"
        ],
        "once each, in order"
    );
}

#[actix_web::test]
async fn nas_down_for_10s_while_50_messages_arrive_sqlite() {
    nas_down_while_messages_arrive(false).await;
}

#[actix_web::test]
async fn nas_down_for_10s_while_50_messages_arrive_postgres() {
    nas_down_while_messages_arrive(true).await;
}

/// `anchor_only`: the NAS lists posts as ACE's v8 does, from an anchor only (without one, the
/// oldest post), so the duplicate check must ask with an anchor to see the newest posts.
/// `anchor_only`: the simulator pages `Post.list` as ACE's v8; `anchor_paging`: the gateway is
/// told so (`upstream.post_list_paging = "anchor"`).
async fn timeout_after_the_post_was_created(
    postgres: bool,
    anchor_only: bool,
    anchor_paging: bool,
) {
    let app = if anchor_paging {
        spawn_app_with(SimConfig::default(), |s| {
            s.upstream.timeout_ms = 500;
            s.upstream.post_list_paging = PostListPaging::Anchor;
        })
        .await
    } else {
        let Some(app) = app_on(postgres, SimConfig::default(), 500).await else {
            return;
        };
        app
    };
    // Log in first, so only the send is slow.
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    app.sim.set_post_list_anchor_only(anchor_only);
    app.sim.set_latency(Duration::from_millis(1_500));
    let id = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "slow but once"}),
        )
        .await,
    );
    let start = Instant::now();
    while app.sim.count("SYNO.Chat.Post", "create") == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no send attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.sim.set_latency(Duration::ZERO);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(done["last_error"]["code"], "upstream_timeout", "{done}");
    assert_eq!(
        done["outcome_unknown"], false,
        "the check settled it: {done}"
    );
    app.sim.set_post_list_anchor_only(false);
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == "slow but once").count(),
        1,
        "a duplicate after the timeout: {posted:?}"
    );
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 1, "{done}");
    let lists = app.sim.requests();
    let lists = lists.iter().filter(|r| {
        r.api.as_deref() == Some("SYNO.Chat.Post") && r.method.as_deref() == Some("list")
    });
    if anchor_paging {
        assert!(
            lists.clone().count() > 0 && lists.clone().all(|r| param(r, "post_id").is_some()),
            "told the NAS pages from an anchor, the gateway asks no offset"
        );
    }
}

#[actix_web::test]
async fn a_timeout_after_dsm_created_the_post_does_not_duplicate_sqlite() {
    timeout_after_the_post_was_created(false, false, false).await;
}

#[actix_web::test]
async fn a_timeout_after_dsm_created_the_post_does_not_duplicate_postgres() {
    timeout_after_the_post_was_created(true, false, false).await;
}

#[actix_web::test]
async fn a_timeout_does_not_duplicate_on_a_nas_that_lists_posts_by_anchor_only() {
    timeout_after_the_post_was_created(false, true, false).await;
    timeout_after_the_post_was_created(false, true, true).await;
}

/// Queues `message` for channel `channel` (`Prefer: respond-async`); its delivery id.
async fn queued(app: &TestApp, channel: u64, message: &str) -> String {
    let path = format!("/api/v1/channels/{channel}/posts");
    accepted(&post_async(app, &path, json!({ "message": message })).await)
}

/// The next `Post.create` is carried out and answered only after `ms` milliseconds.
pub(crate) fn slow_create(app: &TestApp, ms: u64) {
    app.sim.slow_next(
        "SYNO.Chat.Post",
        Some("create"),
        1,
        Duration::from_millis(ms),
    );
}

/// A send DSM carries out only after the gateway gave up on it (a NAS slower than
/// `upstream.timeout_ms`, other calls answered at once): the duplicate check waits for it to
/// land instead of looking at once, finding nothing and posting the chunk a second time.
#[actix_web::test]
async fn the_duplicate_check_waits_for_a_slow_send_to_land() {
    let Some(app) = app_on(false, SimConfig::default(), 500).await else {
        return;
    };
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    slow_create(&app, 2_000);
    let id = queued(&app, 2, "late but once").await;
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(done["last_error"]["code"], "upstream_timeout", "{done}");
    // The slow create has landed by now, whatever the outbox did meanwhile.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == "late but once").count(),
        1,
        "a duplicate after the slow send: {posted:?}"
    );
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1, "{done}");
}

/// A target whose send is slow holds up only its own messages: another channel's message is
/// delivered meanwhile (`delivery.concurrency`).
#[actix_web::test]
async fn a_slow_target_does_not_hold_up_another() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    slow_create(&app, 2_500);
    let slow = queued(&app, 2, "slow").await;
    // Its create is under way (the simulator logs a call once answered): the claim says so.
    let start = Instant::now();
    while app.get(&format!("/api/v1/deliveries/{slow}")).await.body["state"] != "sending" {
        assert!(start.elapsed() < Duration::from_secs(5), "never claimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quick = queued(&app, 3, "quick").await;
    let done = wait_for(&app, &quick, "delivered", Duration::from_secs(10)).await;
    let still = app.get(&format!("/api/v1/deliveries/{slow}")).await;
    assert_eq!(still.body["state"], "sending", "{done} {}", still.body);
    wait_for(&app, &slow, "delivered", Duration::from_secs(10)).await;
}

/// Posts `message` through the outbox while the simulator has a fault armed for the next
/// `Post.create`: the delivery once delivered, after exactly one post of `message`.
async fn posted_once_after(app: &TestApp, message: &str) -> Value {
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    let id = accepted(
        &post_async(
            app,
            "/api/v1/channels/2/posts",
            json!({ "message": message }),
        )
        .await,
    );
    let done = wait_for(app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates + 1,
        "{done}"
    );
    let posted = messages(app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == message).count(),
        1,
        "a duplicate after the fault: {posted:?}"
    );
    done
}

/// A reply whose send had an unknown outcome is looked for in its thread (the channel's list
/// leaves replies out): found there, it is not posted again.
#[actix_web::test]
async fn an_uncertain_reply_is_looked_for_in_its_thread_and_not_posted_twice() {
    let app = spawn_app().await;
    let root = app
        .call(
            "POST",
            "/api/v1/channels/2/posts",
            Some(WRITE_KEY),
            Some(json!({"message": "a root"})),
        )
        .await;
    assert_eq!(root.status.as_u16(), 201, "{}", root.body);
    let root = root.body["post_id"].as_u64().unwrap();
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/posts/{root}/replies"),
            json!({ "message": "replied once" }),
        )
        .await,
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates + 1,
        "the reply was posted again: {done}"
    );
    let looked = last_request(&app, "SYNO.Chat.Post", "list");
    assert_eq!(param(&looked, "thread_id"), Some(root.to_string().as_str()));
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 1, "{done}");
}

/// README "Errors": a resource DSM does not know (117) is `not_found` with its DSM code, in a
/// delivery's `last_error` as in the synchronous answer to the same request.
#[actix_web::test]
async fn a_delivery_to_a_missing_resource_fails_as_the_synchronous_send_answers() {
    let app = spawn_app().await;
    let sends = [
        (
            "/api/v1/channels/999/posts",
            json!({"message": "to nowhere"}),
        ),
        (
            "/api/v1/posts/4294967999/replies",
            json!({"message": "to nowhere"}),
        ),
        (
            "/api/v1/users/999/messages",
            json!({"message": "to nobody"}),
        ),
        (
            &*format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": "to nobody", "user_ids": [999]}),
        ),
    ];
    for (path, body) in sends {
        let now = app.post(path, body.clone()).await;
        let answered = now.assert_problem(404, "not_found").clone();
        let id = accepted(&post_async(&app, path, body).await);
        let failed = wait_for(&app, &id, "failed", Duration::from_secs(30)).await;
        let last = &failed["last_error"];
        assert_eq!(last["code"], "not_found", "{path}: {failed}");
        assert_eq!(last["status"], 404, "{path}: {failed}");
        assert_eq!(last["dsm_code"], answered["dsm_code"], "{path}: {failed}");
    }
}

/// An async post to channel 2 whose answer DSM never sent (it posted, then closed the
/// connection), with `newer` posts by a user made before the gateway looks for it (the
/// settle time, two upstream timeouts; the gateway's own synchronous sends would wait for the
/// message). Returns the delivery once delivered, and how many times the NAS was asked to post.
async fn uncertain_post_behind(newer: usize) -> (Value, usize) {
    let app = spawn_app().await;
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let id = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({ "message": "posted once" }),
        )
        .await,
    );
    let started = Instant::now();
    while app.sim.count("SYNO.Chat.Post", "create") == creates {
        assert!(started.elapsed() < Duration::from_secs(5), "never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..newer {
        assert_ne!(app.sim.post_as_user(2, 2, &format!("newer {i}")), 0);
    }
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    (done, app.sim.count("SYNO.Chat.Post", "create") - creates)
}

/// An uncertain post is looked for past the newest hundred: a channel that got more posts
/// than that before the look (a busy channel, synchronous posts going on) did not find it, and
/// posted the part again.
#[actix_web::test]
async fn an_uncertain_post_is_found_behind_more_than_a_page_of_newer_posts() {
    let (done, posted) = uncertain_post_behind(150).await;
    assert_eq!(posted, 1, "the message was posted again: {done}");
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["outcome_unknown"], false, "{done}");
    assert_eq!(done["at_least_once"], false, "{done}");
}

/// README "Delivery guarantees": the look reads at most 2,000 posts back. Behind more, the
/// part is sent again, and the delivery says it may have been posted twice.
#[actix_web::test]
async fn an_uncertain_post_behind_more_than_two_thousand_is_sent_again_and_says_so() {
    let (done, posted) = uncertain_post_behind(2_050).await;
    assert_eq!(posted, 2, "{done}");
    assert_eq!(done["at_least_once"], true, "{done}");
}

/// After a restart, a synchronous post of the same text made shortly before is not taken for
/// an uncertain send's lost post: the restart forgot which posts its synchronous sends made,
/// and the check looked five minutes back from the send. It now starts at the send, placed on
/// the NAS's clock by the `Date` of its answers (whole seconds), less two seconds.
#[actix_web::test]
async fn a_post_made_before_a_restart_is_not_taken_for_a_lost_one() {
    let app = spawn_app().await;
    let body = json!({ "message": "disk full on nas1" });
    let first = post_sync(&app, "/api/v1/channels/3/posts", None, &body).await;
    assert_eq!(first.status.as_u16(), 201, "{}", first.body);
    let app = app.restarted().await;
    // Beyond the margin, and the second `Date` leaves out of the NAS's clock.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    // Not carried out: the connection closes before an answer.
    app.sim.drop_next("SYNO.Chat.Post", Some("create"), 1);
    let id = accepted(&post_async(&app, "/api/v1/channels/3/posts", body).await);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates + 2,
        "the dropped call and the real post: {done} (first: {})",
        first.body
    );
    assert_ne!(done["post_ids"][0], first.body["post_id"], "{done}");
}

/// A chatbot message that reached some recipients and failed for others is retried for those
/// alone: a retry neither skips them (it was reported "delivered" with nothing sent) nor posts
/// twice to the others.
#[actix_web::test]
async fn a_retried_chatbot_message_goes_to_the_recipients_it_missed() {
    let app = spawn_app().await;
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": "to two", "user_ids": [2, 999]}),
        )
        .await,
    );
    let failed = wait_for(&app, &id, "failed", Duration::from_secs(20)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.External", "chatbot"),
        1,
        "{failed}"
    );
    let retried = app
        .call(
            "POST",
            &format!("/api/v1/deliveries/{id}/retry"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(retried.status.as_u16(), 200, "{}", retried.body);
    let again = wait_for(&app, &id, "failed", Duration::from_secs(20)).await;
    assert_eq!(again["attempts"], 2, "{again}");
    assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 2);
    let sent = last_request(&app, "SYNO.Chat.External", "chatbot");
    let payload: Value = serde_json::from_str(param(&sent, "payload").unwrap()).unwrap();
    assert_eq!(payload["user_ids"], json!([999]), "{payload}");
}

/// The messages of user `user_id`'s conversation with the configured chatbot, oldest first
/// (empty before the bot ever wrote to them), read through the gateway with the bot's token.
async fn bot_messages(app: &TestApp, user_id: u64) -> Vec<String> {
    let channels = app
        .get(&format!("/api/v1/bots/{BOT_TOKEN_NAME}/channels"))
        .await;
    assert_eq!(channels.status.as_u16(), 200, "{}", channels.body);
    let Some(conversation) = crate::posts::conversation_with(&channels.body, user_id) else {
        return Vec::new();
    };
    let posts = app
        .get(&format!(
            "/api/v1/bots/{BOT_TOKEN_NAME}/channels/{conversation}/posts?prev_count=100"
        ))
        .await;
    assert_eq!(posts.status.as_u16(), 200, "{}", posts.body);
    crate::posts::messages_oldest_first(&posts.body)
}

/// A chatbot send whose answer never came (DSM posted, then the connection closed) is looked
/// for with the bot's token in each recipient's conversation: found, it is recorded with its
/// post, not sent again, and the delivery is exactly once (`at_least_once` stays false).
#[actix_web::test]
async fn an_uncertain_chatbot_send_is_looked_for_in_the_conversations_and_not_sent_twice() {
    let app = spawn_app().await;
    let text = "chatbot: backup finished";
    app.sim.close_next("SYNO.Chat.External", Some("chatbot"), 1);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": text, "user_ids": [2, 3]}),
        )
        .await,
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.External", "chatbot"),
        1,
        "sent again: {done}"
    );
    assert_eq!(done["at_least_once"], false, "{done}");
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 2, "{done}");
    for user in [2, 3] {
        let posted = bot_messages(&app, user).await;
        assert_eq!(
            posted.iter().filter(|m| *m == text).count(),
            1,
            "user {user}: {posted:?}"
        );
    }
}

/// An uncertain chatbot send found in one recipient's conversation is sent again only to the
/// recipient without one; that one has no conversation with the bot to look in, so the delivery
/// says the send may be their second.
#[actix_web::test]
async fn an_uncertain_chatbot_send_found_for_some_recipients_goes_again_to_the_others() {
    let app = spawn_app().await;
    // User 999 does not exist: DSM posts to user 2 alone, then the connection closes.
    app.sim.close_next("SYNO.Chat.External", Some("chatbot"), 1);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": "chatbot: to a user and a stranger", "user_ids": [2, 999]}),
        )
        .await,
    );
    let failed = wait_for(&app, &id, "failed", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.External", "chatbot"),
        2,
        "{failed}"
    );
    let sent = last_request(&app, "SYNO.Chat.External", "chatbot");
    let payload: Value = serde_json::from_str(param(&sent, "payload").unwrap()).unwrap();
    assert_eq!(payload["user_ids"], json!([999]), "{payload}");
    assert_eq!(failed["at_least_once"], true, "{failed}");
    assert_eq!(failed["post_ids"].as_array().unwrap().len(), 1, "{failed}");
}

/// A chatbot send that never reached DSM (the connection dropped first) is not found in the
/// conversation, which holds a synchronous send of the same text: that post is not taken for
/// it, the message is sent again, and once.
#[actix_web::test]
async fn an_uncertain_chatbot_send_that_never_landed_is_sent_again_once() {
    let app = spawn_app().await;
    let text = "chatbot: disk almost full";
    let direct = app
        .call(
            "POST",
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            Some(WRITE_KEY),
            Some(json!({"text": text, "user_ids": [2]})),
        )
        .await;
    assert_eq!(direct.status.as_u16(), 200, "{}", direct.body);
    app.sim.drop_next("SYNO.Chat.External", Some("chatbot"), 1);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": text, "user_ids": [2]}),
        )
        .await,
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 3, "{done}");
    assert_eq!(done["at_least_once"], false, "{done}");
    let posted = bot_messages(&app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == text).count(),
        2,
        "the outbox's message was taken for the synchronous one: {posted:?}"
    );
}

/// A chatbot DSM will not let list its channels cannot look: after an unknown outcome the
/// message is sent again, and the delivery says it may have been posted twice.
#[actix_web::test]
async fn an_uncertain_chatbot_send_that_cannot_be_looked_for_is_sent_again_and_says_so() {
    let app = spawn_app().await;
    app.sim.close_next("SYNO.Chat.External", Some("chatbot"), 1);
    app.sim
        .fail_next("SYNO.Chat.External", Some("channel_list"), 1, 117);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
            json!({"text": "chatbot: blind", "user_ids": [2]}),
        )
        .await,
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(app.sim.count("SYNO.Chat.External", "chatbot"), 2, "{done}");
    assert_eq!(done["at_least_once"], true, "{done}");
}

/// An incoming webhook cannot look for what it posted: after an unknown outcome the message is
/// sent again, and the delivery says it may have been posted twice.
#[actix_web::test]
async fn an_uncertain_incoming_webhook_send_is_sent_again_and_says_so() {
    let app = spawn_app().await;
    app.sim
        .close_next("SYNO.Chat.External", Some("incoming"), 1);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": "webhook: at least once"}),
        )
        .await,
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 2, "{done}");
    assert_eq!(done["at_least_once"], true, "{done}");
}

/// The duplicate check after an unknown outcome does not take a synchronous post of the same
/// text for the outbox's own: that message would be counted delivered and never posted.
#[actix_web::test]
async fn the_duplicate_check_does_not_take_a_synchronous_post_of_the_same_text() {
    let app = spawn_app().await;
    let text = "CPU high on nas-01";
    let direct = app
        .call(
            "POST",
            "/api/v1/channels/2/posts",
            Some(WRITE_KEY),
            Some(json!({ "message": text })),
        )
        .await;
    assert_eq!(direct.status.as_u16(), 201, "{}", direct.body);
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    // The connection drops before DSM carries the create out: an unknown outcome.
    app.sim.drop_next("SYNO.Chat.Post", Some("create"), 1);
    let id =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({ "message": text })).await);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates + 2,
        "{done}"
    );
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted.iter().filter(|m| *m == text).count(),
        2,
        "the async message was taken for the synchronous one: {posted:?}"
    );
    assert_ne!(done["post_ids"][0], direct.body["post_id"], "{done}");
}

/// A NAS that creates the post and then closes the connection before its answer (its web
/// server restarting): the send's outcome is unknown, so the next attempt checks before it
/// posts again. Neither the synchronous route nor the outbox may call it a failed connect. So
/// for an answer that is not DSM's.
#[actix_web::test]
async fn a_connection_closed_before_the_answer_does_not_duplicate() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let done = posted_once_after(&app, "closed but once").await;
    assert_eq!(
        done["last_error"]["detail"], "could not reach DSM: connection closed before an answer",
        "{done}"
    );
    // A reverse proxy in front of the NAS that stopped waiting: its 504 page is no answer.
    app.sim
        .proxy_timeout_next("SYNO.Chat.Post", Some("create"), 1);
    let done = posted_once_after(&app, "proxied but once").await;
    assert_eq!(
        done["last_error"]["code"], "upstream_invalid_response",
        "{done}"
    );

    // DSM's "busy" (109-111, 118) does not say the post was not made: this NAS made it.
    app.sim
        .fail_after_next("SYNO.Chat.Post", Some("create"), 1, 110);
    let done = posted_once_after(&app, "busy but once").await;
    assert_eq!(done["last_error"]["code"], "upstream_busy", "{done}");

    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let answer = app
        .post("/api/v1/channels/2/posts", json!({"message": "sync"}))
        .await;
    let problem = answer.assert_problem(502, "upstream_unreachable");
    assert_eq!(
        problem["detail"],
        "could not reach DSM: connection closed before an answer"
    );
}

/// A read whose connection closes before the answer (a keep-alive connection meeting the
/// NAS's idle timeout) is sent once more on a new connection; twice in a row is a 502.
#[actix_web::test]
async fn a_read_is_sent_again_once_when_its_connection_closed_before_the_answer() {
    // Pages asked one way only (by default, until a page proves `offset`, both ways).
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.post_list_paging = PostListPaging::Anchor
    })
    .await;
    let page = "/api/v1/channels/2/posts?limit=5";
    assert_eq!(app.get(page).await.status.as_u16(), 200);
    let lists = app.sim.count("SYNO.Chat.Post", "list");
    app.sim.close_next("SYNO.Chat.Post", Some("list"), 1);
    let listed = app.get(page).await;
    assert_eq!(listed.status.as_u16(), 200, "{}", listed.body);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "list"), lists + 2);

    app.sim.close_next("SYNO.Chat.Post", Some("list"), 2);
    app.get(page)
        .await
        .assert_problem(502, "upstream_unreachable");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "list"), lists + 4);
}

#[actix_web::test]
async fn failed_deliveries_can_be_retried_and_queued_ones_cancelled() {
    let app = spawn_app().await;
    // DSM: no such channel (117) is permanent.
    let lost = accepted(
        &post_async(
            &app,
            "/api/v1/channels/9999/posts",
            json!({"message": "nowhere"}),
        )
        .await,
    );
    let failed = wait_for(&app, &lost, "failed", Duration::from_secs(20)).await;
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["last_error"]["dsm_code"], 117, "{failed}");
    let listed = app.get("/api/v1/deliveries?state=failed").await;
    assert_eq!(listed.body["items"][0]["delivery_id"], lost.as_str());
    let retried = app
        .call(
            "POST",
            &format!("/api/v1/deliveries/{lost}/retry"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(retried.status.as_u16(), 200, "{}", retried.body);
    let again = wait_for(&app, &lost, "failed", Duration::from_secs(20)).await;
    assert_eq!(again["attempts"], 2);

    // With the NAS away, the second message to a channel waits behind the first: cancel it.
    app.sim.refuse_connections(true).await;
    let first =
        accepted(&post_async(&app, "/api/v1/channels/3/posts", json!({"message": "one"})).await);
    let second =
        accepted(&post_async(&app, "/api/v1/channels/3/posts", json!({"message": "two"})).await);
    let cancelled = app
        .call(
            "DELETE",
            &format!("/api/v1/deliveries/{second}"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(cancelled.status.as_u16(), 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["state"], "cancelled");
    app.call(
        "DELETE",
        &format!("/api/v1/deliveries/{second}"),
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(409, "conflict");
    app.sim.refuse_connections(false).await;
    wait_for(&app, &first, "delivered", Duration::from_secs(30)).await;
    app.call(
        "POST",
        &format!("/api/v1/deliveries/{first}/retry"),
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(409, "conflict");
    assert!(!messages(&app, 3).await.contains(&"two".to_owned()));

    app.get("/api/v1/deliveries/not-a-uuid")
        .await
        .assert_problem(400, "invalid_request");
    app.get("/api/v1/deliveries/00000000-0000-4000-8000-000000000000")
        .await
        .assert_problem(404, "not_found");
    app.get("/api/v1/deliveries?state=lost")
        .await
        .assert_problem(400, "invalid_request");
    // A cursor naming no delivery is refused, not taken for the start of the list.
    app.get("/api/v1/deliveries?after=00000000-0000-4000-8000-000000000000")
        .await
        .assert_problem(404, "not_found");
    let after_lost = app.get(&format!("/api/v1/deliveries?after={lost}")).await;
    assert_eq!(after_lost.status.as_u16(), 200, "{}", after_lost.body);
    assert_eq!(after_lost.body["items"][0]["delivery_id"], first.as_str());
    // Reading needs the read scope, changing the write scope.
    app.call(
        "DELETE",
        &format!("/api/v1/deliveries/{first}"),
        Some(crate::helpers::READ_KEY),
        None,
    )
    .await
    .assert_problem(403, "insufficient_scope");
}

#[actix_web::test]
async fn only_the_key_that_handed_a_delivery_over_or_an_admin_key_changes_it() {
    const OTHER_WRITER: &str = "test-other-writer-key";
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.auth.keys.insert(
            "other-writer".to_owned(),
            syno_chat_gateway::config::KeySettings {
                hash: Some(SecretString::from(syno_chat_gateway::auth::hash_key(
                    OTHER_WRITER,
                ))),
                hash_file: None,
                scopes: vec!["write".parse().unwrap()],
            },
        );
    })
    .await;
    // With the NAS away the messages stay queued.
    app.sim.refuse_connections(true).await;
    let first =
        accepted(&post_async(&app, "/api/v1/channels/3/posts", json!({"message": "one"})).await);
    let second =
        accepted(&post_async(&app, "/api/v1/channels/3/posts", json!({"message": "two"})).await);
    let call = |method: &'static str, path: String, key: &'static str| {
        let app = &app;
        async move { app.call(method, &path, Some(key), None).await }
    };
    // Another write key sees them, and can neither cancel nor retry them.
    let seen = call("GET", format!("/api/v1/deliveries/{second}"), OTHER_WRITER).await;
    assert_eq!(seen.status.as_u16(), 200, "{}", seen.body);
    call(
        "DELETE",
        format!("/api/v1/deliveries/{second}"),
        OTHER_WRITER,
    )
    .await
    .assert_problem(403, "insufficient_scope");
    call(
        "POST",
        format!("/api/v1/deliveries/{second}/retry"),
        OTHER_WRITER,
    )
    .await
    .assert_problem(403, "insufficient_scope");
    let still = call("GET", format!("/api/v1/deliveries/{second}"), OTHER_WRITER).await;
    assert_eq!(still.body["state"], "queued", "{}", still.body);
    // The key that handed it over can, and so can an admin key.
    let own = call("DELETE", format!("/api/v1/deliveries/{second}"), WRITE_KEY).await;
    assert_eq!(own.status.as_u16(), 200, "{}", own.body);
    assert_eq!(own.body["state"], "cancelled");
    let admin = call("DELETE", format!("/api/v1/deliveries/{first}"), ADMIN_KEY).await;
    assert_eq!(admin.status.as_u16(), 200, "{}", admin.body);
    assert_eq!(admin.body["state"], "cancelled");
    // An unknown delivery is still a 404, whoever asks.
    call(
        "DELETE",
        "/api/v1/deliveries/00000000-0000-4000-8000-000000000000".to_owned(),
        OTHER_WRITER,
    )
    .await
    .assert_problem(404, "not_found");
    app.sim.refuse_connections(false).await;
}

/// README "Delivery guarantees": a hook's deliveries are changed with an admin key (no API key
/// handed them over, so no write key may silence them); with keys off, anyone may.
#[actix_web::test]
async fn a_hook_s_deliveries_are_changed_with_an_admin_key_or_by_anyone_without_keys() {
    const SECRET: &str = "hook-secret-for-ownership";
    for keys_off in [false, true] {
        let app = spawn_app_with(SimConfig::default(), |s| {
            s.auth.disabled = keys_off;
            s.hooks.insert(
                "alerts".into(),
                syno_chat_gateway::config::HookSettings {
                    secret_hash: Some(SecretString::from(syno_chat_gateway::auth::hash_key(
                        SECRET,
                    ))),
                    channel: Some("3".into()),
                    ..Default::default()
                },
            );
        })
        .await;
        app.sim.refuse_connections(true).await;
        let mut queued = Vec::new();
        for text in ["one", "two"] {
            let sent = app
                .call(
                    "POST",
                    &format!("/hooks/alerts/{SECRET}"),
                    None,
                    Some(json!({ "message": text })),
                )
                .await;
            assert_eq!(sent.status.as_u16(), 202, "{}", sent.body);
            queued.push(sent.body["delivery_id"].as_str().unwrap().to_owned());
        }
        // While the outbox tries it (the NAS refuses it at once), a delivery is `sending` and
        // cannot be cancelled (409): asked again once it is back in the queue.
        let cancel = |id: &str, key: Option<&'static str>| {
            let (app, path) = (&app, format!("/api/v1/deliveries/{id}"));
            async move {
                let mut answer = app.call("DELETE", &path, key, None).await;
                for _ in 0..100 {
                    if answer.status.as_u16() != 409 {
                        break;
                    }
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    answer = app.call("DELETE", &path, key, None).await;
                }
                answer
            }
        };
        if keys_off {
            let anyone = cancel(&queued[0], None).await;
            assert_eq!(anyone.status.as_u16(), 200, "{}", anyone.body);
            assert_eq!(anyone.body["state"], "cancelled");
        } else {
            cancel(&queued[0], Some(WRITE_KEY))
                .await
                .assert_problem(403, "insufficient_scope");
            let admin = cancel(&queued[0], Some(ADMIN_KEY)).await;
            assert_eq!(admin.status.as_u16(), 200, "{}", admin.body);
            assert_eq!(admin.body["state"], "cancelled");
        }
        app.sim.refuse_connections(false).await;
        wait_for(&app, &queued[1], "delivered", Duration::from_secs(30)).await;
        let posted = messages(&app, 3).await;
        assert!(!posted.contains(&"one".to_owned()), "{posted:?}");
        assert!(posted.contains(&"two".to_owned()), "{posted:?}");
    }
}

#[actix_web::test]
async fn a_cancelled_delivery_whose_send_went_unanswered_says_it_may_be_posted() {
    let app = spawn_app_with(SimConfig::default(), |s| s.upstream.timeout_ms = 500).await;
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    // Every call outlasts the timeout: the create and each later check go unanswered.
    app.sim.set_latency(Duration::from_millis(1_500));
    let id = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "maybe posted"}),
        )
        .await,
    );
    let start = Instant::now();
    let cancelled = loop {
        assert!(start.elapsed() < Duration::from_secs(20), "never cancelled");
        let now = app.get(&format!("/api/v1/deliveries/{id}")).await;
        if now.body["outcome_unknown"] == true {
            let answer = app
                .call(
                    "DELETE",
                    &format!("/api/v1/deliveries/{id}"),
                    Some(WRITE_KEY),
                    None,
                )
                .await;
            // 409 while an attempt holds it; the next pause between attempts lets it go.
            if answer.status.as_u16() == 200 {
                break answer.body;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["outcome_unknown"], true, "{cancelled}");
}

#[actix_web::test]
async fn a_rate_limited_token_waits_and_is_paced() {
    let app = spawn_app().await;
    app.sim
        .fail_next("SYNO.Chat.External", Some("incoming"), 2, 411);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(accepted(
            &post_async(
                &app,
                &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
                json!({"text": format!("paced {n}")}),
            )
            .await,
        ));
    }
    let start = Instant::now();
    for id in &ids {
        wait_for(&app, id, "delivered", Duration::from_secs(30)).await;
    }
    // Two 411s, then three sends at most one per second.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let first = app.get(&format!("/api/v1/deliveries/{}", ids[0])).await;
    assert_eq!(first.body["attempts"], 3, "{}", first.body);
    assert_eq!(first.body["last_error"]["dsm_code"], 411);
}

/// README "Delivery guarantees", Retries: a DSM 411 slows its target by one interval plus a
/// penalty that starts at 0.5 s and doubles with each further 411. After a burst of 411s has
/// passed and the target's messages went through again, a new 411 starts again at 0.5 s (as a
/// token target's does, whose penalty each successful send clears), rather than at double
/// the old burst's last penalty.
#[actix_web::test]
async fn a_channel_s_411_penalty_starts_again_after_its_messages_go_through() {
    let app = spawn_app_with(SimConfig::default(), |s| s.delivery.rate_per_sec = 100.0).await;
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    // A burst: three 411s in a row (0.5 + 1 + 2 s of penalty), then delivered.
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 3, 411);
    let first = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "burst"}),
        )
        .await,
    );
    let started = Instant::now();
    wait_for(&app, &first, "delivered", Duration::from_secs(30)).await;
    let burst = started.elapsed();
    assert!(burst >= Duration::from_millis(3_000), "{burst:?}");
    // Messages flow again.
    let calm =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": "calm"})).await);
    wait_for(&app, &calm, "delivered", Duration::from_secs(10)).await;
    // Much later, one 411: a 0.5 s penalty, not the 4 s the burst would have gone on to.
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 411);
    let started = Instant::now();
    let later = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "later"}),
        )
        .await,
    );
    let done = wait_for(&app, &later, "delivered", Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(done["attempts"], 2, "{done}");
    // Kept, the burst's doubling would have gone on to 4 s.
    assert!(
        took < Duration::from_millis(3_500),
        "one 411 after calm held the channel {took:?}"
    );
}

#[actix_web::test]
async fn a_message_dsm_finds_too_long_is_split_and_still_delivered() {
    let app = spawn_app().await;
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 410);
    // Halves of 50 characters: the floor the outbox splits down to.
    let text = format!("{} {}", "a".repeat(49), "b".repeat(50));
    let id =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": text})).await);
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(done["chunks"], 2, "{done}");
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 2);
    let posted = messages(&app, 2).await;
    let tail: String = posted[posted.len() - 2..].concat();
    assert_eq!(tail, text);
}

/// README "Delivery guarantees", Retries: a 410 past the 50-character floor fails the delivery
/// with `message_too_long` (DSM's problem stored, no endless halving or retrying), and the
/// target's next message is not held up behind it.
#[actix_web::test]
async fn a_chunk_dsm_still_finds_too_long_at_the_floor_fails_with_message_too_long() {
    let app = spawn_app().await;
    // The first 410 halves the chunk into two of 50 characters; the second refuses one of
    // those, which cannot be halved any further.
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 2, 410);
    let text = format!("{} {}", "a".repeat(49), "b".repeat(50));
    let id =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": text})).await);
    let next = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "after the refused one"}),
        )
        .await,
    );
    let failed = wait_for(&app, &id, "failed", Duration::from_secs(20)).await;
    assert_eq!(failed["last_error"]["code"], "message_too_long", "{failed}");
    assert_eq!(failed["last_error"]["status"], 413, "{failed}");
    assert_eq!(failed["last_error"]["dsm_code"], 410, "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["post_ids"].as_array().unwrap().len(), 0, "{failed}");
    wait_for(&app, &next, "delivered", Duration::from_secs(20)).await;
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted.last().map(String::as_str),
        Some("after the refused one")
    );
    assert!(
        !posted
            .iter()
            .any(|m| m.contains("aaaa") || m.contains("bbbb")),
        "{posted:?}"
    );
}

/// README "Delivery guarantees", Retries: a message the NAS keeps turning away is retried
/// until `delivery.max_age_secs`, then fails with `delivery_expired` (504, naming the
/// setting); it is not posted once the NAS is back, and its target moves on.
#[actix_web::test]
async fn a_message_not_delivered_within_max_age_fails_as_expired() {
    let app = spawn_app_with(SimConfig::default(), |s| s.delivery.max_age_secs = 3).await;
    // Logged in first, so what follows is the post's own failure.
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    app.sim.refuse_connections(true).await;
    let started = Instant::now();
    let id = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "too late to matter"}),
        )
        .await,
    );
    let failed = wait_for(&app, &id, "failed", Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(failed["last_error"]["code"], "delivery_expired", "{failed}");
    assert_eq!(failed["last_error"]["status"], 504, "{failed}");
    assert!(
        failed["last_error"]["detail"]
            .as_str()
            .unwrap()
            .contains("delivery.max_age_secs"),
        "{failed}"
    );
    assert!(failed["attempts"].as_i64().unwrap() >= 2, "{failed}");
    // Retried until about its age limit, not given up at once nor kept for long after.
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_secs(20),
        "{took:?}"
    );
    app.sim.refuse_connections(false).await;
    let next = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "on time"}),
        )
        .await,
    );
    wait_for(&app, &next, "delivered", Duration::from_secs(30)).await;
    let posted = messages(&app, 2).await;
    assert!(
        !posted.contains(&"too late to matter".to_owned()),
        "{posted:?}"
    );
}

/// Halving a chunk DSM refused can leave a part of only spaces; it is dropped (as at enqueue),
/// not sent, refused locally and retried until expiry while the target's next message waits.
#[actix_web::test]
async fn a_blank_half_of_a_refused_chunk_is_dropped_and_the_target_moves_on() {
    let app = spawn_app().await;
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 410);
    // Halves of 101 characters: "x…\n\n", fifty spaces, the y's.
    let text = format!(
        "{}\n\n{}{}",
        "x".repeat(50),
        " ".repeat(50),
        "y".repeat(100)
    );
    let first =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": text})).await);
    let next = accepted(
        &post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "next one"}),
        )
        .await,
    );
    let done = wait_for(&app, &first, "delivered", Duration::from_secs(10)).await;
    assert_eq!(done["chunks"], 2, "{done}");
    assert_eq!(done["post_ids"].as_array().unwrap().len(), 2, "{done}");
    wait_for(&app, &next, "delivered", Duration::from_secs(10)).await;
    let posted = messages(&app, 2).await;
    let tail = &posted[posted.len() - 3..];
    assert_eq!(
        tail,
        [
            format!("{}\n\n", "x".repeat(50)),
            "y".repeat(100),
            "next one".into()
        ]
    );
}

#[actix_web::test]
async fn a_lost_store_is_503_for_async_writes_while_synchronous_calls_keep_working() {
    let Some(url) = crate::postgres::fresh_database() else {
        return;
    };
    let app = spawn_app_with(SimConfig::default(), {
        let url = url.clone();
        move |s| s.store.url = SecretString::from(url)
    })
    .await;
    // A message to channel 3 waits in the outbox for a NAS that is away (logged in before, so
    // the NAS's return is not met by a login's back-off).
    assert_eq!(app.get("/api/v1/channels/3").await.status, 200);
    app.sim.refuse_connections(true).await;
    let waiting = accepted(
        &post_async(
            &app,
            "/api/v1/channels/3/posts",
            json!({"message": "queued before"}),
        )
        .await,
    );
    // The database goes away under the running gateway; the NAS comes back.
    crate::postgres::set_reachable(&url, false);
    let refused = post_async(
        &app,
        "/api/v1/channels/2/posts",
        json!({"message": "later"}),
    )
    .await;
    refused.assert_problem(503, "store_unavailable");
    assert!(refused.header("retry-after").is_some());
    app.sim.refuse_connections(false).await;
    // A synchronous send would overtake the message queued to its target: refused.
    app.post("/api/v1/channels/3/posts", json!({"message": "overtaking"}))
        .await
        .assert_problem(503, "store_unavailable");
    // The NAS's return is seen once the back-off its refusals started has run out.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.get("/api/v1/channels/2/posts?limit=1").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the NAS's return was never seen"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Synchronous calls to other targets do not need the store.
    let now = app
        .post("/api/v1/channels/2/posts", json!({"message": "now"}))
        .await;
    assert_eq!(now.status.as_u16(), 201, "{}", now.body);
    assert_eq!(app.get("/api/v1/channels/2").await.status.as_u16(), 200);
    // Back: accepted again.
    crate::postgres::set_reachable(&url, true);
    let id =
        accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": "back"})).await);
    wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    wait_for(&app, &waiting, "delivered", Duration::from_secs(30)).await;
    let posted = messages(&app, 3).await;
    assert!(!posted.contains(&"overtaking".to_owned()), "{posted:?}");
    assert_eq!(posted.last().map(String::as_str), Some("queued before"));
}

#[actix_web::test]
async fn a_queued_hook_message_whose_token_left_the_configuration_fails_naming_it() {
    let app = spawn_app().await;
    app.sim.set_chat_stopped(true);
    let id = accepted(
        &post_async(
            &app,
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": "sent with a token removed before it went out"}),
        )
        .await,
    );
    let app = app
        .restarted_with(|settings| {
            settings.tokens.remove(WEBHOOK_TOKEN_NAME);
        })
        .await;
    app.sim.set_chat_stopped(false);
    let failed = wait_for(&app, &id, "failed", Duration::from_secs(30)).await;
    // The gateway's configuration, not a NAS without the API (it was 501
    // `upstream_api_unsupported`).
    assert_eq!(failed["last_error"]["code"], "unprocessable", "{failed}");
    assert!(
        failed["last_error"]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "tokens.{WEBHOOK_TOKEN_NAME} is no longer configured"
            )),
        "{failed}"
    );
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 0);
}

#[actix_web::test]
async fn a_delivery_row_the_gateway_cannot_read_is_a_500_not_an_unavailable_store() {
    let app = spawn_app().await;
    let id = accepted(&post_async(&app, "/api/v1/channels/2/posts", json!({"message": "x"})).await);
    wait_for(&app, &id, "delivered", Duration::from_secs(20)).await;
    // A hand-edited database: SQLite keeps any type in any column.
    let url = app.store_url.expose_secret().to_owned();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE deliveries SET attempts = 'many' WHERE id = ?")
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let answer = app.get(&format!("/api/v1/deliveries/{id}")).await;
    // Asking again cannot help, so no `Retry-After` (it was 503 `store_unavailable`).
    answer.assert_problem(500, "internal");
    assert_eq!(answer.header("retry-after"), None);
}

#[actix_web::test]
async fn a_second_gateway_on_the_same_sqlite_file_does_not_start() {
    let mut first = spawn_app().await;
    let store_url = first.store_url.clone();
    let settings_on = |url: &SecretString| {
        let mut settings = crate::helpers::settings_for("http://127.0.0.1:9");
        settings.store.url = url.clone();
        settings
    };
    let second_settings = || settings_on(&store_url);
    // The same file through a symbolic link, in a directory of its own.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("linked.db");
    let file = store_url
        .expose_secret()
        .trim_start_matches("sqlite://")
        .to_owned();
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let through_link = SecretString::from(format!("sqlite://{}", link.display()));
    // It would take the first one's claims back at its start and post them again.
    for settings in [second_settings(), settings_on(&through_link)] {
        let refused = syno_chat_gateway::startup::Application::build(settings)
            .await
            .err()
            .expect("a second gateway on one SQLite file is refused");
        assert!(
            refused
                .to_string()
                .contains("another gateway is serving from"),
            "{refused}"
        );
    }
    // Once the first has stopped, the file is free.
    first.stop().await;
    let later = syno_chat_gateway::startup::Application::build(second_settings()).await;
    assert!(later.is_ok(), "{:?}", later.err());
}

/// POSTs `body` to `path` synchronously (no `Prefer`), with `Idempotency-Key: key` when given.
async fn post_sync(app: &TestApp, path: &str, key: Option<&str>, body: &Value) -> Answer {
    let mut request = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")));
    if let Some(key) = key {
        request = request.insert_header(("Idempotency-Key", key));
    }
    read(request.send_json(body).await.expect("gateway answers")).await
}

#[actix_web::test]
async fn an_unanswered_synchronous_send_with_an_idempotency_key_is_finished_once_by_the_outbox() {
    let app = spawn_app().await;
    // Three parts; DSM posts the first and its answer is lost (the connection closes).
    let text = three_part_text("paragraph");
    let body = json!({"message": text});
    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let first = post_sync(&app, "/api/v1/channels/3/posts", Some("sync-once-1"), &body).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    // Not asked for, so not said to be applied; the Location names the delivery.
    assert_eq!(first.header("preference-applied"), None);
    let id = first.body["delivery_id"].as_str().unwrap().to_owned();
    assert!(
        first
            .header("location")
            .unwrap()
            .ends_with(&format!("/api/v1/deliveries/{id}"))
    );
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert!(done["chunks"].as_u64().unwrap() >= 3, "{done}");
    // The retry with the same key is the same answer, and posts nothing.
    let again = post_sync(&app, "/api/v1/channels/3/posts", Some("sync-once-1"), &body).await;
    assert_eq!(again.status.as_u16(), 202, "{}", again.body);
    assert_eq!(again.body["delivery_id"], id.as_str());
    let posted = parts_posted_once(&app, 3, "paragraph", &text).await;
    assert_eq!(
        done["post_ids"].as_array().unwrap().len(),
        posted.len(),
        "{done}"
    );
    // The first part was found, not sent again.
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        posted.len(),
        "{done}"
    );

    // Without a key the caller learns the outcome is unknown, and nothing is queued.
    app.sim.close_next("SYNO.Chat.Post", Some("create"), 1);
    let unkeyed = post_sync(
        &app,
        "/api/v1/channels/3/posts",
        None,
        &json!({"message": "no key"}),
    )
    .await;
    assert!(unkeyed.status.is_server_error(), "{}", unkeyed.body);
    let listed = app.get("/api/v1/deliveries").await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
}

/// A keyed synchronous send whose answer never came, and whose hand-over to the outbox then
/// met a store that did not answer: the key is kept as an interrupted attempt's (503), so the
/// retry looks for the unanswered part instead of sending the message again.
#[actix_web::test]
async fn a_keyed_send_the_outbox_could_not_take_over_is_resumed_not_sent_again() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout_ms = 1_000;
        // The store that did not answer could not end the claim either: it lapses.
        s.idempotency.lease_secs = 2;
    })
    .await;
    let text = three_part_text("stalled");
    let body = json!({"message": text});
    // DSM posts the first part and hangs in its answer.
    app.sim.stall_next("SYNO.Chat.Post", Some("create"), 1);
    let url = app.store_url.expose_secret().to_owned();
    let send = post_sync(&app, "/api/v1/channels/3/posts", Some("stalled-1"), &body);
    // Another writer holds the store while the gateway waits on DSM (the key is claimed by then).
    let hold = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        other
    };
    let (first, mut other) = futures_util::future::join(send, hold).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    first.assert_problem(503, "store_unavailable");
    let mut again = post_sync(&app, "/api/v1/channels/3/posts", Some("stalled-1"), &body).await;
    for _ in 0..50 {
        if again.status.as_u16() != 409 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        again = post_sync(&app, "/api/v1/channels/3/posts", Some("stalled-1"), &body).await;
    }
    assert_eq!(again.status.as_u16(), 202, "{}", again.body);
    let id = again.body["delivery_id"].as_str().unwrap().to_owned();
    wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    let posted = parts_posted_once(&app, 3, "stalled", &text).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), posted.len());
}

/// DSM answering "busy" to a synchronous keyed send may have made the post: the outbox
/// finishes the message, looking before it posts, instead of a 503 that frees the key for a
/// retry that would post it again.
#[actix_web::test]
async fn a_busy_answer_to_a_synchronous_keyed_send_is_finished_once_by_the_outbox() {
    let app = spawn_app().await;
    let body = json!({"message": "busy, once"});
    app.sim
        .fail_after_next("SYNO.Chat.Post", Some("create"), 1, 111);
    let first = post_sync(&app, "/api/v1/channels/3/posts", Some("busy-once-1"), &body).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let id = first.body["delivery_id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    let again = post_sync(&app, "/api/v1/channels/3/posts", Some("busy-once-1"), &body).await;
    assert_eq!(again.body["delivery_id"], id.as_str(), "{}", again.body);
    let posted = messages(&app, 3).await;
    assert_eq!(
        posted.iter().filter(|m| *m == "busy, once").count(),
        1,
        "{posted:?} {done}"
    );
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1, "{done}");
}

/// The posts of channel `channel` made from [`three_part_text`]`(label)`, checked to be each
/// part of `text` once, in order.
pub(crate) async fn parts_posted_once(
    app: &TestApp,
    channel: u64,
    label: &str,
    text: &str,
) -> Vec<String> {
    let prefix = format!("{label} ");
    let posted: Vec<String> = messages(app, channel)
        .await
        .into_iter()
        .filter(|m| m.starts_with(&prefix))
        .collect();
    assert!(
        posted.concat() == text,
        "each part once, in order: {posted:#?}"
    );
    posted
}

/// A text of three parts at the default `delivery.max_message_chars` (1800).
pub(crate) fn three_part_text(label: &str) -> String {
    (1..=40)
        .map(|n| format!("{label} {n}: {}", "lorem ipsum ".repeat(11)))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A keyed synchronous send whose second part DSM keeps rate limiting (411 past the pacing)
/// after the first was posted: the outbox finishes the message, instead of a 429 that frees
/// the key for a retry that would post the first part again. Without a key, the 429 names
/// the part posted.
#[actix_web::test]
async fn a_keyed_send_rate_limited_part_way_is_finished_once_by_the_outbox() {
    let app = spawn_app().await;
    let text = three_part_text("limited");
    app.sim
        .fail_after_passing("SYNO.Chat.Post", Some("create"), 1, 6, 411);
    let first = post_sync(
        &app,
        "/api/v1/channels/3/posts",
        Some("limited-1"),
        &json!({ "message": text }),
    )
    .await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let id = first.body["delivery_id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(30)).await;
    assert_eq!(done["outcome_unknown"], false, "{done}");
    parts_posted_once(&app, 3, "limited", &text).await;

    let text = three_part_text("unkeyed");
    app.sim
        .fail_after_passing("SYNO.Chat.Post", Some("create"), 1, 6, 411);
    let unkeyed = post_sync(
        &app,
        "/api/v1/channels/3/posts",
        None,
        &json!({ "message": text }),
    )
    .await;
    let problem = unkeyed.assert_problem(429, "upstream_rate_limited");
    assert_eq!(problem["parts_posted"], 1, "{problem}");
}

/// The same for a chatbot message: the part posted to both recipients is recorded for each of
/// them, and the outbox sends only the rest, each part once to each.
#[actix_web::test]
async fn a_keyed_chatbot_send_rate_limited_part_way_is_finished_once_by_the_outbox() {
    let app = spawn_app().await;
    let text = three_part_text("bot-limited");
    app.sim
        .fail_after_passing("SYNO.Chat.External", Some("chatbot"), 1, 6, 411);
    let first = post_sync(
        &app,
        &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
        Some("bot-limited-1"),
        &json!({ "text": text, "user_ids": [2, 3] }),
    )
    .await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let id = first.body["delivery_id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, &id, "delivered", Duration::from_secs(60)).await;
    let chunks = done["chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "{done}");
    // A post per part and recipient.
    assert_eq!(
        done["post_ids"].as_array().unwrap().len() as u64,
        2 * chunks,
        "{done}"
    );
    for user in [2, 3] {
        let posted: Vec<String> = bot_messages(&app, user)
            .await
            .into_iter()
            .filter(|m| m.starts_with("bot-limited "))
            .collect();
        assert!(
            posted.concat() == text,
            "user {user}: each part once, in order: {posted:#?}"
        );
    }
}

/// An incoming-webhook send (which the outbox cannot check) that fails part way after posting
/// a part keeps its answer under its `Idempotency-Key`: the retry is told again, and posts
/// nothing a second time.
#[actix_web::test]
async fn a_token_send_that_failed_part_way_keeps_its_answer_for_the_key() {
    let app = spawn_app().await;
    let path = format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}");
    let body = json!({ "text": three_part_text("token") });
    app.sim
        .fail_after_passing("SYNO.Chat.External", Some("incoming"), 1, 6, 411);
    let first = post_sync(&app, &path, Some("token-1"), &body).await;
    let problem = first.assert_problem(429, "upstream_rate_limited");
    assert_eq!(problem["parts_posted"], 1, "{problem}");
    let sends = app.sim.count("SYNO.Chat.External", "incoming");
    let again = post_sync(&app, &path, Some("token-1"), &body).await;
    assert_eq!(again.status.as_u16(), 429, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), sends);
}

#[actix_web::test]
async fn a_synchronous_send_refused_by_dsm_is_not_handed_to_the_outbox() {
    let app = spawn_app().await;
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 105);
    post_sync(
        &app,
        "/api/v1/channels/3/posts",
        Some("refused-1"),
        &json!({"message": "denied"}),
    )
    .await
    .assert_problem(403, "upstream_permission_denied");
    let listed = app.get("/api/v1/deliveries").await;
    assert_eq!(listed.body["items"], json!([]), "{}", listed.body);
}

/// A stop stops the outbox at once, not after the HTTP drain: a delivery that comes due while a
/// request still holds the drain is left in the store for the next start, and the outbox's own
/// wait counts from the stop, so the whole stop fits in `server.shutdown_timeout_secs` and the
/// logout (the 45 s the deployment files give it).
#[actix_web::test]
async fn the_outbox_stops_when_the_stop_begins_not_after_the_drain() {
    use std::io::Write;
    let mut app = spawn_app_with(SimConfig::default(), |s| {
        s.server.shutdown_timeout_secs = 5;
        s.server.body_timeout_ms = 20_000;
        // An unanswered send is looked for 2.5 s later (twice the timeout, at least 2.5 s).
        s.upstream.timeout_ms = 1_000;
    })
    .await;
    // DSM "busy": the send may have been carried out, so it comes due again 2.5 s later.
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 111);
    let answer = post_async(
        &app,
        "/api/v1/channels/2/posts",
        json!({"message": "due during the drain"}),
    )
    .await;
    accepted(&answer);
    let started = Instant::now();
    while app.sim.count("SYNO.Chat.Post", "create") == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request whose body never ends holds the drain for the whole 5 s.
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled
        .write_all(
            format!(
                "POST /api/v1/channels/2/posts HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {WRITE_KEY}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"message\":"
            )
            .as_bytes(),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() >= Duration::from_secs(4),
        "the drain was held: {:?}",
        stopping.elapsed()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(9),
        "the stop took {:?}",
        stopping.elapsed()
    );
    // The delivery came due 2.5 s into the drain and was not sent: the next start sends it.
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1);
    drop(stalled);
}

/// A message handed to the outbox and a synchronous send after it to the same channel arrive
/// in that order: the send waits for the outbox's message, even one slow to post.
#[actix_web::test]
async fn a_send_waits_for_the_outbox_s_earlier_message_to_its_channel() {
    let app = spawn_app().await;
    slow_create(&app, 800);
    let first = queued(&app, 2, "handed over first").await;
    // The outbox's send has begun (and is held up by the NAS).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = app
        .post(
            "/api/v1/channels/2/posts",
            json!({"message": "sent synchronously second"}),
        )
        .await;
    assert_eq!(second.status.as_u16(), 201, "{}", second.body);
    wait_for(&app, &first, "delivered", Duration::from_secs(20)).await;
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted[posted.len() - 2..],
        ["handed over first", "sent synchronously second"],
        "{posted:?}"
    );
}

/// A synchronous send whose target's earlier message is not delivered within
/// `delivery.queue_wait_ms` (the NAS turned it away for a while) is queued behind it, 202
/// without `Preference-Applied`, rather than overtaking it.
#[actix_web::test]
async fn a_send_behind_a_message_that_waits_is_queued_behind_it() {
    let app = spawn_app_with(SimConfig::default(), |s| s.delivery.queue_wait_ms = 300).await;
    app.sim
        .turn_away_next("SYNO.Chat.Post", Some("create"), 1, 503, 2);
    app.sim
        .turn_away_next("SYNO.Chat.External", Some("incoming"), 1, 503, 2);
    let first = queued(&app, 2, "queued first").await;
    let hook_path = format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}");
    let hook_first = accepted(&post_async(&app, &hook_path, json!({"text": "hook first"})).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut behind = Vec::new();
    for (path, body) in [
        (
            "/api/v1/channels/2/posts",
            json!({"message": "sent second"}),
        ),
        (hook_path.as_str(), json!({"text": "hook second"})),
    ] {
        let answer = app.post(path, body).await;
        assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
        assert_eq!(answer.header("preference-applied"), None);
        assert!(answer.header("location").is_some());
        behind.push(answer.body["delivery_id"].as_str().unwrap().to_owned());
    }
    for id in [&first, &hook_first].into_iter().chain(&behind) {
        wait_for(&app, id, "delivered", Duration::from_secs(20)).await;
    }
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted[posted.len() - 2..],
        ["queued first", "sent second"],
        "{posted:?}"
    );
    // The call turned away, then the two messages.
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 3);
    // Its queue empty, the target takes synchronous sends again.
    let now = app
        .post("/api/v1/channels/2/posts", json!({"message": "third"}))
        .await;
    assert_eq!(now.status.as_u16(), 201, "{}", now.body);
}

/// Replicas on one PostgreSQL: a synchronous send to one waits for the message another
/// replica's outbox is still sending to the same channel (it knew nothing of it before).
#[actix_web::test]
async fn a_send_to_one_replica_waits_for_another_replica_s_message() {
    let Some(app) = app_on(true, SimConfig::default(), 10_000).await else {
        return;
    };
    let other = app.another_replica().await;
    slow_create(&app, 800);
    let first = queued(&app, 2, "queued on the first replica").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = app
        .http
        .post(format!("{other}/api/v1/channels/2/posts"))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .send_json(&json!({"message": "sent to the second replica"}))
        .await;
    let second = read(second.expect("replica answers")).await;
    assert_eq!(second.status.as_u16(), 201, "{}", second.body);
    wait_for(&app, &first, "delivered", Duration::from_secs(20)).await;
    let posted = messages(&app, 2).await;
    assert_eq!(
        posted[posted.len() - 2..],
        ["queued on the first replica", "sent to the second replica"],
        "{posted:?}"
    );
}
