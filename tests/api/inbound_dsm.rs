//! `inbound.<name>.verify = "dsm"`: Chat's token is checked against DSM's own lists of
//! integrations (read through the simulated NAS), cached for `inbound.dsm_refresh_ms` and read
//! at most once per interval.

use syno_chat_gateway::config::{InboundKind, InboundSettings, InboundVerify};
use syno_chat_gateway::sim::SimConfig;

use crate::events::stored;
use crate::helpers::{TestApp, spawn_app_with_sim};

fn list_calls(app: &TestApp, api: &str) -> usize {
    app.sim
        .requests()
        .iter()
        .filter(|r| r.api.as_deref() == Some(api) && r.method.as_deref() == Some("list"))
        .count()
}

async fn post_form(app: &TestApp, path: &str, body: String) -> u16 {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(body)
        .await
        .expect("gateway answers");
    crate::helpers::read(response).await.status.as_u16()
}

#[actix_web::test]
async fn tokens_are_checked_against_dsm_and_refreshes_are_rate_limited() {
    let mut tokens = (String::new(), String::new());
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        tokens = (
            sim.add_slash_command("deploy", ""),
            sim.add_outgoing_webhook(2, "!ping", ""),
        );
        for (name, kind) in [
            ("deploy", InboundKind::SlashCommand),
            ("ops", InboundKind::OutgoingWebhook),
        ] {
            settings.inbound.receivers.insert(
                name.to_owned(),
                InboundSettings {
                    kind,
                    verify: InboundVerify::Dsm,
                    ..Default::default()
                },
            );
        }
    })
    .await;
    let (slash, outgoing) = tokens;
    let slash_lists = || list_calls(&app, "SYNO.Chat.Webhook.Slash");

    // The slash command's token, as Chat sends it.
    let ok = format!("token={slash}&user_id=3&username=alice&text=%2Fdeploy+web");
    assert_eq!(post_form(&app, "/inbound/deploy", ok.clone()).await, 200);
    assert_eq!(slash_lists(), 1);
    assert_eq!(post_form(&app, "/inbound/deploy", ok).await, 200);
    assert_eq!(slash_lists(), 1, "a known token is answered from the cache");
    assert_eq!(stored(&app).await.len(), 2);

    // Wrong tokens: refused, nothing stored, and DSM is read again at most once a minute.
    for body in [
        format!("token={}&text=%2Fdeploy", "w".repeat(64)),
        "text=%2Fdeploy".to_owned(),
        // Another integration's token is not this kind's.
        format!("token={outgoing}&text=%2Fdeploy"),
    ] {
        assert_eq!(post_form(&app, "/inbound/deploy", body).await, 403);
    }
    assert_eq!(slash_lists(), 1, "misses within the minute do not refresh");
    assert_eq!(stored(&app).await.len(), 2);

    // The outgoing webhook's inbound reads its own list.
    let hook = format!("token={outgoing}&channel_id=2&post_id=5&text=%21ping&trigger_word=%21ping");
    assert_eq!(post_form(&app, "/inbound/ops", hook).await, 200);
    assert_eq!(list_calls(&app, "SYNO.Chat.Webhook.Outgoing"), 1);
    assert_eq!(stored(&app).await.len(), 3);
}

#[actix_web::test]
async fn an_account_that_may_not_list_integrations_stores_nothing() {
    let mut token = String::new();
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        token = sim.add_slash_command("deploy", "");
        settings.inbound.receivers.insert(
            "deploy".to_owned(),
            InboundSettings {
                kind: InboundKind::SlashCommand,
                verify: InboundVerify::Dsm,
                ..Default::default()
            },
        );
    })
    .await;
    // DSM's "no permission" (a non-administrator account).
    app.sim
        .fail_next("SYNO.Chat.Webhook.Slash", Some("list"), 1, 105);
    let body = format!("token={token}&text=%2Fdeploy");
    assert_eq!(post_form(&app, "/inbound/deploy", body.clone()).await, 403);
    assert!(stored(&app).await.is_empty());
    // Within the minute the list is not asked for again: the call stays refused.
    assert_eq!(post_form(&app, "/inbound/deploy", body).await, 403);
    assert_eq!(list_calls(&app, "SYNO.Chat.Webhook.Slash"), 1);
    assert!(stored(&app).await.is_empty());
}

/// The test gateway's DSM token lists expire after this (the default is a minute).
const REFRESH_MS: u64 = 1_000;

fn verified_by_dsm(
    settings: &mut syno_chat_gateway::config::Settings,
    receivers: &[(&str, InboundKind)],
) {
    settings.inbound.dsm_refresh_ms = REFRESH_MS;
    for (name, kind) in receivers {
        settings.inbound.receivers.insert(
            (*name).to_owned(),
            InboundSettings {
                kind: *kind,
                verify: InboundVerify::Dsm,
                ..Default::default()
            },
        );
    }
}

/// Waits past the refresh interval.
async fn list_expires() {
    tokio::time::sleep(std::time::Duration::from_millis(REFRESH_MS + 200)).await;
}

/// Waits until DSM has been asked for `api`'s list `count` times, and a little more for the
/// gateway to take the answer in.
async fn lists_read(app: &TestApp, api: &str, count: usize) {
    for _ in 0..250 {
        if list_calls(app, api) >= count {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert_eq!(list_calls(app, api), count, "{api}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{api}: {} reads, not {count}", list_calls(app, api));
}

#[actix_web::test]
async fn a_token_deleted_or_disabled_in_dsm_is_refused_after_the_refresh_interval() {
    let mut tokens = (String::new(), String::new());
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        tokens = (
            sim.add_slash_command("deploy", ""),
            sim.add_outgoing_webhook(2, "!ping", ""),
        );
        verified_by_dsm(
            settings,
            &[
                ("deploy", InboundKind::SlashCommand),
                ("ops", InboundKind::OutgoingWebhook),
            ],
        );
    })
    .await;
    let (slash, outgoing) = tokens;
    let command = format!("token={slash}&user_id=3&username=alice&text=%2Fdeploy+web");
    let hook = |post_id: i64| {
        format!("token={outgoing}&channel_id=2&post_id={post_id}&text=%21ping&trigger_word=%21ping")
    };
    assert_eq!(
        post_form(&app, "/inbound/deploy", command.clone()).await,
        200
    );
    assert_eq!(post_form(&app, "/inbound/ops", hook(5)).await, 200);
    assert_eq!(stored(&app).await.len(), 2);

    // An administrator deletes the slash command (through DSM) and disables the webhook.
    let listed = app
        .call(
            "GET",
            "/api/v1/integrations/slash-commands",
            Some(crate::helpers::ADMIN_KEY),
            None,
        )
        .await;
    let user_id = listed.body["items"][0]["user_id"].as_i64().unwrap();
    let deleted = app
        .call(
            "DELETE",
            &format!("/api/v1/integrations/slash-commands/{user_id}"),
            Some(crate::helpers::ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(app.sim.set_integration_disabled(&outgoing, true));
    let read_before = (
        list_calls(&app, "SYNO.Chat.Webhook.Slash"),
        list_calls(&app, "SYNO.Chat.Webhook.Outgoing"),
    );

    // Once the cached lists are older than the interval, the first call is still checked
    // against them (Chat is not kept waiting for DSM) and has them read again in the
    // background; once that read is done, the tokens are refused, and nothing more is stored.
    list_expires().await;
    assert_eq!(
        post_form(&app, "/inbound/deploy", command.clone()).await,
        200
    );
    assert_eq!(post_form(&app, "/inbound/ops", hook(6)).await, 200);
    assert_eq!(stored(&app).await.len(), 4);
    lists_read(&app, "SYNO.Chat.Webhook.Slash", read_before.0 + 1).await;
    lists_read(&app, "SYNO.Chat.Webhook.Outgoing", read_before.1 + 1).await;
    assert_eq!(
        post_form(&app, "/inbound/deploy", command.clone()).await,
        403
    );
    assert_eq!(post_form(&app, "/inbound/ops", hook(8)).await, 403);
    assert_eq!(stored(&app).await.len(), 4);
    // One read per interval whatever the calls: refusals do not read again at once.
    let slash_lists = list_calls(&app, "SYNO.Chat.Webhook.Slash");
    assert_eq!(post_form(&app, "/inbound/deploy", command).await, 403);
    assert_eq!(list_calls(&app, "SYNO.Chat.Webhook.Slash"), slash_lists);

    // Enabled again: accepted after the next refresh.
    assert!(app.sim.set_integration_disabled(&outgoing, false));
    list_expires().await;
    assert_eq!(post_form(&app, "/inbound/ops", hook(7)).await, 200);
    assert_eq!(stored(&app).await.len(), 5);
}

#[actix_web::test]
async fn while_dsm_cannot_be_reached_the_last_list_is_used_for_a_bounded_time() {
    let mut token = String::new();
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        token = sim.add_slash_command("deploy", "");
        verified_by_dsm(settings, &[("deploy", InboundKind::SlashCommand)]);
    })
    .await;
    let call = |n: u32| format!("token={token}&user_id=3&username=alice&text=%2Fdeploy+{n}");
    assert_eq!(post_form(&app, "/inbound/deploy", call(1)).await, 200);
    let read = std::time::Instant::now();

    // DSM goes away after the list expired: the last list read is still used.
    list_expires().await;
    app.sim.refuse_connections(true).await;
    assert_eq!(post_form(&app, "/inbound/deploy", call(2)).await, 200);
    assert_eq!(stored(&app).await.len(), 2);

    // Past the grace (5 intervals after the last read), the call is refused with DSM's error
    // and nothing is stored.
    let grace = std::time::Duration::from_millis(
        REFRESH_MS * u64::from(syno_chat_gateway::events::dsm_tokens::UNREACHABLE_GRACE_INTERVALS),
    );
    tokio::time::sleep((read + grace).saturating_duration_since(std::time::Instant::now())).await;
    list_expires().await;
    let status = post_form(&app, "/inbound/deploy", call(3)).await;
    assert!((502..=504).contains(&status), "{status}");
    assert_eq!(stored(&app).await.len(), 2);

    // DSM back: the list is read again and the token accepted.
    app.sim.refuse_connections(false).await;
    list_expires().await;
    assert_eq!(post_form(&app, "/inbound/deploy", call(4)).await, 200);
    assert_eq!(stored(&app).await.len(), 3);
}

/// A due list is read again in the background: calls whose token is in the cached list are
/// answered at once while DSM is slow, one read serves them all, and a call with a token the
/// cached list does not hold waits for that read instead of starting another.
#[actix_web::test]
async fn a_due_list_is_read_in_the_background_and_chat_is_not_kept_waiting() {
    let mut token = String::new();
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        token = sim.add_slash_command("deploy", "");
        verified_by_dsm(settings, &[("deploy", InboundKind::SlashCommand)]);
    })
    .await;
    let call = |token: &str, n: u32| format!("token={token}&user_id=3&text=%2Fdeploy+{n}");
    const SLASH: &str = "SYNO.Chat.Webhook.Slash";
    assert_eq!(
        post_form(&app, "/inbound/deploy", call(&token, 1)).await,
        200
    );
    assert_eq!(list_calls(&app, SLASH), 1);

    // DSM takes longer than the interval to list them once the list is due.
    list_expires().await;
    app.sim.slow_next(
        SLASH,
        Some("list"),
        1,
        std::time::Duration::from_millis(1_500),
    );
    let started = std::time::Instant::now();
    let calls = (2..6).map(|n| post_form(&app, "/inbound/deploy", call(&token, n)));
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000),
        "answered from the cached list: {:?}",
        started.elapsed()
    );
    assert_eq!(stored(&app).await.len(), 5);

    // An integration created meanwhile: its first call waits for the read in progress (which
    // sees it), and DSM is not asked a second time.
    let created = app.sim.add_slash_command("release", "");
    assert_eq!(
        post_form(&app, "/inbound/deploy", call(&created, 6)).await,
        200
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1_400),
        "it waited for the read"
    );
    assert_eq!(list_calls(&app, SLASH), 2, "one read for all these calls");
    assert_eq!(stored(&app).await.len(), 6);
    // Fresh now: answered from the cache.
    assert_eq!(
        post_form(&app, "/inbound/deploy", call(&created, 7)).await,
        200
    );
    assert_eq!(list_calls(&app, SLASH), 2);
}

/// While DSM cannot be reached, calls whose token is in the last list are still answered at
/// once from it (within the grace), and the failed background read is not tried again before
/// an interval has passed, whatever the calls.
#[actix_web::test]
async fn a_failed_background_read_keeps_the_list_and_is_not_retried_at_once() {
    let mut token = String::new();
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        token = sim.add_slash_command("deploy", "");
        verified_by_dsm(settings, &[("deploy", InboundKind::SlashCommand)]);
    })
    .await;
    let call = |n: u32| format!("token={token}&user_id=3&text=%2Fdeploy+{n}");
    const SLASH: &str = "SYNO.Chat.Webhook.Slash";
    assert_eq!(post_form(&app, "/inbound/deploy", call(1)).await, 200);
    assert_eq!(list_calls(&app, SLASH), 1);
    list_expires().await;
    app.sim.refuse_connections(true).await;
    let started = std::time::Instant::now();
    assert_eq!(post_form(&app, "/inbound/deploy", call(2)).await, 200);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    // The read in the background fails; DSM is back before the interval is over.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.sim.refuse_connections(false).await;
    for n in 3..6 {
        assert_eq!(post_form(&app, "/inbound/deploy", call(n)).await, 200);
    }
    // A wrong token does not make it ask again either.
    let wrong = format!("token={}&text=%2Fdeploy", "w".repeat(64));
    assert_eq!(post_form(&app, "/inbound/deploy", wrong).await, 403);
    assert_eq!(
        list_calls(&app, SLASH),
        1,
        "not asked again within the interval"
    );
    assert_eq!(stored(&app).await.len(), 5);
}
