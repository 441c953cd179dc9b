//! A NAS that hangs, is slow or is down: deadlines, bounded waits and shared failure state.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{READ_KEY, TestApp, spawn_app_with};

const TIMEOUT_MS: u64 = 1500;

async fn app_with_short_timeout() -> TestApp {
    let app = spawn_app_with(SimConfig::default(), |s| s.upstream.timeout_ms = TIMEOUT_MS).await;
    let first = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(first.status, 200, "{}", first.body);
    warm_up_finished(&app).await;
    app
}

/// Waits for the start-up warm-up (spawned at start: the login, then its own API.Info query),
/// after a first call has made its own query. On a loaded machine the warm-up's query can still
/// be on its way, and would then land among the calls a test counts or stalls.
async fn warm_up_finished(app: &TestApp) {
    let info_queries = || {
        let calls = app.sim.requests();
        calls
            .iter()
            .filter(|r| r.api.as_deref() == Some("SYNO.API.Info"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while info_queries() < 2 {
        assert!(Instant::now() < deadline, "no start-up API.Info query");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `path` until it answers 200 (a back-off may have to pass first).
async fn eventually_ok(app: &TestApp, path: &str) {
    for _ in 0..40 {
        if app.get(path).await.status == 200 {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path} never recovered");
}

/// Every answer arrived well within a few timeouts: nothing hangs for good.
fn assert_bounded(started: Instant, timeouts: u32) {
    let limit = Duration::from_millis(TIMEOUT_MS) * timeouts + Duration::from_millis(1500);
    assert!(
        started.elapsed() < limit,
        "took {:?}, more than {limit:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn a_nas_silent_halfway_through_a_read_is_a_504_within_the_timeout() {
    let app = app_with_short_timeout().await;
    app.sim.stall_next("SYNO.Chat.Post", Some("list"), 1);
    let started = Instant::now();
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(504, "upstream_timeout");
    assert_bounded(started, 1);
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
}

#[actix_web::test]
async fn a_nas_silent_halfway_through_a_login_does_not_hold_the_lock_for_good() {
    let app = app_with_short_timeout().await;
    app.sim.expire_all_sessions();
    app.sim.stall_next("SYNO.API.Auth", Some("login"), 1);
    let started = Instant::now();
    let answers = join_all((0..5).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    assert_bounded(started, 2);
    assert!(
        answers.iter().any(|a| a.status == 504),
        "the stalled login answers 504"
    );
    for answer in &answers {
        // Callers behind the lock give up after their own bounded wait, or get the back-off
        // the timed-out login started.
        match answer.status.as_u16() {
            504 => answer.assert_problem(504, "upstream_timeout"),
            _ => answer.assert_problem(503, "upstream_login_backoff"),
        };
    }
    // The lock was released: once the back-off passes, a caller logs in and is served.
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    eventually_ok(&app, "/api/v1/channels/1/posts").await;
}

#[actix_web::test]
async fn a_nas_silent_halfway_through_the_api_list_does_not_hold_the_lock_for_good() {
    let app = app_with_short_timeout().await;
    // A version error makes the gateway reload the API list; that load hangs mid-answer.
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 104);
    app.sim.stall_next("SYNO.API.Info", None, 1);
    let started = Instant::now();
    let answers = join_all((0..5).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    assert_bounded(started, 2);
    assert!(
        answers.iter().any(|a| a.status == 504),
        "the stalled load answers 504"
    );
    // Callers that queued behind the stalled load share its failure: the timeout, or the
    // back-off it started (a failed API-list load is remembered, not retried by each caller).
    for answer in answers.iter().filter(|a| a.status != 200) {
        // Callers behind the lock give up after their bounded wait, or get the failed load's
        // back-off.
        match answer.status.as_u16() {
            504 => answer.assert_problem(504, "upstream_timeout"),
            _ => answer.assert_problem(503, "upstream_login_backoff"),
        };
    }
    eventually_ok(&app, "/api/v1/channels/1/posts").await;
}

#[actix_web::test]
async fn calls_beyond_max_concurrency_wait_for_a_slot_then_get_503_upstream_busy() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.max_concurrency = 2;
        s.upstream.slot_wait_ms = 200;
    })
    .await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim.set_latency(Duration::from_millis(800));
    app.sim.clear_requests();
    let answers = join_all((0..6).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    let served = answers.iter().filter(|a| a.status == 200).count();
    assert!(served <= 2, "only max_concurrency calls reach the NAS");
    let busy: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(busy.len() >= 4, "the others wait for a slot, then give up");
    let refused = busy.len();
    for answer in busy {
        answer.assert_problem(503, "upstream_busy");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    // Counted as calls that found the NAS busy.
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    let series =
        r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="busy"} "#;
    let counted = text
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(counted, Some(refused), "{text}");
    app.sim.set_latency(Duration::ZERO);
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
}

#[actix_web::test]
async fn a_download_that_stops_moving_gives_its_slot_back() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout_ms = TIMEOUT_MS;
        s.upstream.max_concurrency = 1;
        s.upstream.slot_wait_ms = 5_000;
    })
    .await;
    app.sim.stall_next("SYNO.Chat.User.Avatar", Some("get"), 1);
    let started = Instant::now();
    let mut response = app
        .http
        .get(format!("{}/api/v1/users/1/avatar", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 200);
    // The body ends once the NAS has been silent for a timeout, instead of holding the
    // connection and the slot for the old 600 s; DSM's length is passed on, so the caller
    // sees an incomplete download rather than a complete, shorter file.
    let announced: usize = response
        .headers()
        .get("content-length")
        .expect("DSM's length is passed on")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // (awc ends the body at the closed connection; curl or httpx report it incomplete.)
    let received = response.body().limit(1 << 20).await.map_or(0, |b| b.len());
    assert!(
        received < announced,
        "a download cut short is visibly incomplete: {received} of {announced} bytes"
    );
    assert_bounded(started, 2);
    // The only slot is free again: a read is served at once rather than after the 5 s wait.
    let started = Instant::now();
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[actix_web::test]
async fn a_failed_api_list_load_is_remembered_and_later_callers_fail_fast() {
    let app = app_with_short_timeout().await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // The start-up probe's own API.Info query is not counted below.
    warm_up_finished(&app).await;
    // The NAS stops answering the API list (blackholed) after a version error forced a reload.
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 104);
    app.sim.stall_next("SYNO.API.Info", None, 100);
    let infos = app.sim.count("SYNO.API.Info", "query");
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(504, "upstream_timeout");
    let started = Instant::now();
    for _ in 0..5 {
        // The remembered failure, at once.
        app.get("/api/v1/channels/1/posts")
            .await
            .assert_problem(504, "upstream_timeout");
    }
    assert!(
        started.elapsed() < Duration::from_millis(TIMEOUT_MS),
        "callers during the back-off do not each wait a timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.sim.count("SYNO.API.Info", "query"),
        infos + 1,
        "one load attempt per back-off step"
    );
}

#[actix_web::test]
async fn repeated_forbidden_calls_check_the_session_once_with_the_cheapest_call() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let (channel_lists, logins) = (
        app.sim.count("SYNO.Chat.Channel", "list"),
        app.sim.login_attempts(),
    );
    // 105 means "not allowed" or "session gone"; the session is alive, so it is the former.
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 10, 105);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let answer = app.get("/api/v1/channels/1/posts").await;
        assert_eq!(
            answer.assert_problem(403, "upstream_permission_denied")["dsm_code"],
            105
        );
    }
    // A proof is remembered for 2 s: one check, or one more per 2 s a slow machine took.
    let checks = app.sim.count("SYNO.Chat.User.Preference", "get") as u64;
    let windows = 1 + started.elapsed().as_secs() / 2;
    assert!(
        (1..=windows).contains(&checks),
        "{checks} cheap checks for the session in {windows} windows of 2 s"
    );
    assert_eq!(
        app.sim.count("SYNO.Chat.Channel", "list"),
        channel_lists,
        "no channel listing to prove a session"
    );
    assert_eq!(app.sim.login_attempts(), logins, "no login either");
}

/// A NAS rebooted right after another call was refused: the proof of that refusal does not
/// stand for this one (PROTOCOL.md §1.4: 119 or 105 after a reboot, log in again once).
#[actix_web::test]
async fn a_reboot_right_after_another_calls_permission_error_is_logged_in_again() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim
        .fail_next("SYNO.Chat.Admin.Setting", Some("get"), 1, 105);
    app.call(
        "GET",
        "/api/v1/admin/settings",
        Some(crate::helpers::ADMIN_KEY),
        None,
    )
    .await
    .assert_problem(403, "upstream_permission_denied");
    // No pause: the session was proven alive for the admin call a moment ago.
    app.sim.expire_all_sessions();
    let logins = app.sim.login_attempts();
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

#[actix_web::test]
async fn a_session_ended_soon_after_a_permission_error_is_logged_in_again() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // A permission error proves the session alive ...
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 105);
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(403, "upstream_permission_denied");
    // ... and then the NAS reboots: every call with the old session is refused with 119.
    // Once the proof has aged (2 s), the next refusal is checked, fails, and a login follows.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    app.sim.expire_all_sessions();
    let logins = app.sim.login_attempts();
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

/// An account refused the cheap proof too (`User.Preference get` answers 105) proves its
/// session with the channel list: refused requests log in again never, where each of them
/// logged in again (and left the live session behind on the NAS).
#[actix_web::test]
async fn an_account_refused_the_cheap_proof_is_not_logged_in_again_on_every_refusal() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    app.sim
        .fail_next("SYNO.Chat.User.Preference", Some("get"), 100, 105);
    for _ in 0..4 {
        app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 105);
        app.get("/api/v1/channels/1/posts")
            .await
            .assert_problem(403, "upstream_permission_denied");
        // Past the proof's memory (2 s), so that every refusal is checked again.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
    }
    assert_eq!(app.sim.login_attempts(), logins, "no login");
    assert!(app.sim.count("SYNO.Chat.User.Preference", "get") >= 1);
    // A session that is really gone is still replaced: the channel list is refused too.
    app.sim.expire_all_sessions();
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
}

/// A NAS that does not offer the cheap proof (`User.Preference get` answers 103) still gets
/// its ended sessions replaced: the channel list proves the session instead.
#[actix_web::test]
async fn a_nas_without_the_cheap_session_proof_still_gets_a_new_login() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim
        .fail_next("SYNO.Chat.User.Preference", Some("get"), 100, 103);
    app.sim.expire_all_sessions();
    let logins = app.sim.login_attempts();
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(app.sim.login_attempts(), logins + 1);
    assert!(app.sim.count("SYNO.Chat.User.Preference", "get") >= 1);
}

#[actix_web::test]
async fn the_sid_never_appears_in_a_url() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    // Several sessions, so that sids starting with a digit (a third of them) are among them:
    // DSM does not recognise those as a GET `_sid`, only as the `id` cookie.
    for _ in 0..6 {
        assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
        assert_eq!(app.get("/api/v1/users/1/status").await.status, 200);
        let avatar = app.get("/api/v1/users/1/avatar").await;
        assert_eq!(avatar.status, 200);
        app.sim.expire_all_sessions();
    }
    let session_calls: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.session_account.is_some())
        .collect();
    assert!(session_calls.len() >= 18);
    for call in session_calls {
        assert!(!call.query_fields.iter().any(|k| k == "_sid"), "{call:?}");
    }
}

#[actix_web::test]
async fn readiness_probes_never_call_dsm() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // Only the probes are measured.
    warm_up_finished(&app).await;
    let before = app.sim.requests().len();
    let answers = join_all((0..100).map(|_| app.call("GET", "/readyz", None, None))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let during = app.sim.requests().split_off(before);
    assert!(during.is_empty(), "100 probes, no DSM call: {during:?}");
}

#[actix_web::test]
async fn the_health_view_needs_a_key_and_checks_dsm_once_per_period() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.call("GET", "/api/v1/health", None, None)
        .await
        .assert_problem(401, "unauthorized");
    warm_up_finished(&app).await;
    let infos = app.sim.count("SYNO.API.Info", "query");
    let answers = join_all((0..50).map(|_| app.get("/api/v1/health"))).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "ok");
        assert_eq!(answer.body["dsm"]["ok"], true);
        assert_eq!(answer.body["dsm"]["session_held"], true);
    }
    assert_eq!(
        app.sim.count("SYNO.API.Info", "query"),
        infos + 1,
        "one shared, cached check for 50 callers"
    );
}

#[actix_web::test]
async fn a_nas_whose_chat_was_not_running_yet_is_served_once_chat_runs() {
    // A gateway started while the NAS is still starting Chat: the API list lacks every Chat API.
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    app.sim.set_chat_stopped(true);
    app.get("/api/v1/channels")
        .await
        .assert_problem(501, "upstream_api_unsupported");
    // Chat starts: the list is asked for again, not kept until the gateway restarts.
    app.sim.set_chat_stopped(false);
    eventually_ok(&app, "/api/v1/channels").await;
}

#[actix_web::test]
async fn chat_stopped_after_the_api_list_was_loaded_is_reported_as_missing_then_served_again() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // The start-up probe's own API.Info query is not counted below.
    warm_up_finished(&app).await;
    // DSM answers 102 for an API its list named: the list is loaded again, and it says why.
    app.sim.set_chat_stopped(true);
    let lists_before = app.sim.count("SYNO.API.Info", "query");
    app.get("/api/v1/channels/1/posts")
        .await
        .assert_problem(501, "upstream_api_unsupported");
    assert_eq!(app.sim.count("SYNO.API.Info", "query"), lists_before + 1);
    app.sim.set_chat_stopped(false);
    eventually_ok(&app, "/api/v1/channels/1/posts").await;
}

#[actix_web::test]
async fn a_version_error_then_a_lost_session_are_both_recovered_in_one_call() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    // A Chat upgrade: the first answer is a version error (the list is reloaded), the retry
    // finds the session gone (the gateway logs in again).
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 104);
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 106);
    let answer = app.get("/api/v1/channels/1/posts").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// DSM's "network unstable / system busy" (109–111): a read is asked again (at most twice), a
/// write is not, since DSM may have carried it out.
#[actix_web::test]
async fn a_busy_nas_is_asked_again_for_reads_and_not_for_writes() {
    // Pages asked one way only (by default, until a page proves `offset`, both ways).
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.post_list_paging = syno_chat_gateway::config::PostListPaging::Anchor
    })
    .await;
    let page = "/api/v1/channels/1/posts?limit=5";
    assert_eq!(app.get(page).await.status, 200);
    let lists = || app.sim.count("SYNO.Chat.Post", "list");

    let before = lists();
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 2, 110);
    let answer = app.get(page).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(lists(), before + 3, "two answers of 110, then the page");

    let before = lists();
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 3, 109);
    app.get(page).await.assert_problem(503, "upstream_busy");
    assert_eq!(lists(), before + 3, "bounded: asked three times in all");

    // Reads with an integration token too.
    let bot_channels = format!("/api/v1/bots/{}/channels", crate::helpers::BOT_TOKEN_NAME);
    let external = || app.sim.count("SYNO.Chat.External", "channel_list");
    let before = external();
    app.sim
        .fail_next("SYNO.Chat.External", Some("channel_list"), 2, 111);
    let answer = app.get(&bot_channels).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(external(), before + 3, "two answers of 111, then the list");

    let creates = app.sim.count("SYNO.Chat.Post", "create");
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 111);
    app.post(
        "/api/v1/channels/1/posts",
        serde_json::json!({"message": "once"}),
    )
    .await
    .assert_problem(503, "upstream_busy");
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates + 1,
        "a write is not asked again"
    );
}

/// The gateway asks DSM for answers as they are (`Accept-Encoding: identity`) and does not
/// inflate one compressed anyway: awc would inflate each received chunk whole before any size
/// limit, so a few KB from a NAS (or anyone on a plain-http link to it) could become gigabytes.
#[actix_web::test]
async fn dsm_answers_are_asked_for_and_read_uncompressed() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = asked.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nas = format!("http://{}", listener.local_addr().unwrap());
    // A NAS that compresses every answer, whatever it was asked.
    let server = actix_web::HttpServer::new(move || {
        let seen = seen.clone();
        actix_web::App::new().default_service(actix_web::web::to(
            move |req: actix_web::HttpRequest| {
                let seen = seen.clone();
                async move {
                    let accept = req
                        .headers()
                        .get("accept-encoding")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push(accept);
                    let mut gzip =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gzip.write_all(br#"{"success":true,"data":{}}"#).unwrap();
                    actix_web::HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("content-encoding", "gzip"))
                        .body(gzip.finish().unwrap())
                }
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.url = Some(nas.parse().unwrap());
    })
    .await;
    let answer = app.get("/api/v1/channels").await;
    answer.assert_problem(502, "upstream_invalid_response");
    let asked = asked.lock().unwrap().clone();
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|a| a == "identity"), "{asked:?}");
    handle.stop(false).await;
}

/// A reverse proxy in front of the NAS that sheds load (HTTP 503 or 429 with `Retry-After`)
/// turned the call away: nothing was carried out. Synchronous callers get DSM's busy or rate
/// limit problem with the proxy's `Retry-After` (it was a 502 `upstream_invalid_response`);
/// the outbox sends again no sooner than asked, without looking for a post first.
#[actix_web::test]
async fn a_proxy_turning_calls_away_is_a_wait_not_an_unknown_outcome() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let creates = || app.sim.count("SYNO.Chat.Post", "create");
    let before = creates();
    for (status, code, wait) in [(503, "upstream_busy", 7), (429, "upstream_rate_limited", 9)] {
        app.sim
            .turn_away_next("SYNO.Chat.Post", Some("create"), 1, status, wait);
        let answer = app
            .post(
                "/api/v1/channels/1/posts",
                serde_json::json!({"message": "shed"}),
            )
            .await;
        answer.assert_problem(status, code);
        assert_eq!(
            answer.header("retry-after"),
            Some(wait.to_string().as_str())
        );
        assert_ne!(answer.body["outcome_unknown"], true, "{}", answer.body);
    }
    // Through the outbox: sent again after the proxy's two seconds, once, not looked for.
    app.sim
        .turn_away_next("SYNO.Chat.Post", Some("create"), 1, 503, 2);
    let lists = || app.sim.count("SYNO.Chat.Post", "list");
    let lists_before = lists();
    let queued = crate::deliveries::post_async(
        &app,
        "/api/v1/channels/1/posts",
        serde_json::json!({"message": "after the wait"}),
    )
    .await;
    assert_eq!(queued.status.as_u16(), 202, "{}", queued.body);
    let id = queued.body["delivery_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let done = crate::deliveries::wait_for(&app, &id, "delivered", Duration::from_secs(20)).await;
    assert!(started.elapsed() >= Duration::from_millis(1_800), "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["outcome_unknown"], false, "{done}");
    assert_eq!(
        lists(),
        lists_before,
        "looked for a post that was never made"
    );
    // The turned-away calls reached the simulator's log but made no post.
    let made: Vec<_> = app.get("/api/v1/channels/1/posts?limit=10").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(made.iter().filter(|m| *m == "shed").count(), 0, "{made:?}");
    assert_eq!(
        made.iter().filter(|m| *m == "after the wait").count(),
        1,
        "{made:?}"
    );
    assert!(creates() >= before + 3);
}

/// A SynoToken that cannot travel as a header is a failed login, not a session kept: the
/// gateway logs in again (after its back-off) instead of failing every call until a restart.
#[actix_web::test]
async fn a_synotoken_that_cannot_be_sent_is_a_failed_login() {
    let app = crate::helpers::spawn_app().await;
    app.sim.hand_out_synotoken_next("bad\u{1}token");
    let first = app.get("/api/v1/users").await;
    assert!(first.status.is_server_error(), "{}", first.body);
    assert!(
        first.body["detail"]
            .as_str()
            .unwrap()
            .contains("SynoToken that is not a header value"),
        "{}",
        first.body
    );
    let started = std::time::Instant::now();
    loop {
        let again = app.get("/api/v1/users").await;
        if again.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "never logged in again: {}",
            again.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(app.sim.login_attempts() >= 2);
}

/// A NAS reboot under load: every caller's call is refused 119 at once. One of them checks the
/// session and logs in again; the others take its verdict. Each used to check the session
/// itself (two calls each) and count a relogin of its own.
#[actix_web::test]
async fn callers_refused_together_share_one_session_check_and_one_relogin() {
    let app = spawn_app_with(SimConfig::default(), |_| {}).await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    let logins = app.sim.login_attempts();
    let checks = || {
        app.sim.count("SYNO.Chat.User.Preference", "get")
            + app.sim.count("SYNO.Chat.Channel", "list")
    };
    let checked_before = checks();
    app.sim.expire_all_sessions();
    let answers = join_all((0..20).map(|_| app.get("/api/v1/channels/1/posts"))).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(app.sim.login_attempts(), logins + 1);
    let checked = checks() - checked_before;
    assert!(
        checked <= 2,
        "{checked} session checks for one lost session"
    );
    let metrics = app.call("GET", "/metrics", None, None).await;
    let relogins = metrics
        .body
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("synochat_upstream_relogins_total"))
        .map(str::to_owned);
    assert_eq!(
        relogins.as_deref(),
        Some("synochat_upstream_relogins_total 1")
    );
}
