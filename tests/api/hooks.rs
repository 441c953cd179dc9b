//! `/hooks/{name}`: senders' payloads in, Chat posts out, answered in each sender's dialect;
//! secrets in the path or as a bearer token, never in logs or metrics.

use secrecy::SecretString;
use serde_json::{Value, json};
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::config::{HookSettings, Settings};
use syno_chat_gateway::formats::Format;
use syno_chat_gateway::sim::{LoggedRequest, SimConfig};

use crate::helpers::{
    Answer, TestApp, WEBHOOK_TOKEN_NAME, last_request, param, read, spawn_app_with,
};

const SECRET: &str = "hook-secret-5f0d8c2a9b7e4d1f";

fn hook(target: (&str, &str)) -> HookSettings {
    let mut hook = HookSettings {
        secret_hash: Some(SecretString::from(hash_key(SECRET))),
        ..HookSettings::default()
    };
    match target {
        ("channel", value) => hook.channel = Some(value.into()),
        ("user", value) => hook.user = Some(value.into()),
        (_, value) => hook.token = Some(value.into()),
    }
    hook
}

fn with_hooks(settings: &mut Settings) {
    settings
        .hooks
        .insert("ops".into(), hook(("channel", "ops")));
    settings
        .hooks
        .insert("by-id".into(), hook(("channel", "1")));
    settings
        .hooks
        .insert("alice".into(), hook(("user", "alice")));
    settings
        .hooks
        .insert("webhook".into(), hook(("token", WEBHOOK_TOKEN_NAME)));
    settings
        .hooks
        .insert("nowhere".into(), hook(("channel", "no-such-channel")));
    settings
        .hooks
        .insert("gone".into(), hook(("channel", "9999")));
    let mut kuma = hook(("channel", "ops"));
    kuma.template = Some("{{ monitor.name }}: {{ msg }}".into());
    settings.hooks.insert("kuma".into(), kuma);
    let mut kuma_readme = hook(("channel", "ops"));
    kuma_readme.template = Some(KUMA_README_TEMPLATE.into());
    settings.hooks.insert("kuma-readme".into(), kuma_readme);
    let mut templated = hook(("channel", "ops"));
    templated.template = Some("alert: {{ text }}".into());
    settings.hooks.insert("templated".into(), templated);
    let mut am = hook(("channel", "ops"));
    am.format = Some(Format::Alertmanager);
    settings.hooks.insert("am".into(), am);
    // Argo CD's text-only Google Chat template is a bare `{"text"}`: only the hook can say so.
    let mut gchat = hook(("channel", "ops"));
    gchat.format = Some(Format::GoogleChat);
    settings.hooks.insert("gchat".into(), gchat);
    let mut plain = hook(("channel", "ops"));
    plain.markup = syno_chat_gateway::formats::Markup::Plain;
    settings.hooks.insert("plain".into(), plain);
    let mut brief = hook(("channel", "1"));
    brief.duplicate_window_secs = Some(1);
    settings.hooks.insert("brief".into(), brief);
    // GitHub's webhook secret instead of a secret in the URL.
    let mut signed = hook(("channel", "1"));
    signed.secret_hash = None;
    signed.signing_secret = Some(SecretString::from(SIGNING_SECRET));
    settings.hooks.insert("signed".into(), signed);
    // Grafana: a bearer secret and a timestamped HMAC, both required.
    let mut grafana = hook(("channel", "1"));
    grafana.signing_secret = Some(SecretString::from(SIGNING_SECRET));
    grafana.signature_timestamp_header = Some("X-Grafana-Alerting-Timestamp".into());
    settings.hooks.insert("grafana".into(), grafana);
    // A sender of its own signing a timestamp, with a short duplicate window.
    let mut stamped = hook(("channel", "1"));
    stamped.secret_hash = None;
    stamped.signing_secret = Some(SecretString::from(SIGNING_SECRET));
    stamped.signature_header = Some("X-Sig".into());
    stamped.signature_timestamp_header = Some("X-Stamp".into());
    stamped.duplicate_window_secs = Some(1);
    settings.hooks.insert("stamped".into(), stamped);
    // A secret of its own, so `/hooks/<secret>` finds it (shoutrrr's `mattermost://`).
    let mut watchtower = hook(("channel", "ops"));
    watchtower.secret_hash = Some(SecretString::from(hash_key(WATCHTOWER_SECRET)));
    settings.hooks.insert("watchtower".into(), watchtower);
    // A Standard Webhooks sender (Svix-based services, another gateway's subscriptions).
    let mut standard = hook(("channel", "1"));
    standard.secret_hash = None;
    standard.signing_secret = Some(SecretString::from(STANDARD_SECRET));
    settings.hooks.insert("standard".into(), standard);
}

const WATCHTOWER_SECRET: &str = "watchtower-7d2c0e9a41b3";

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const SIGNING_SECRET: &str = "signing-secret-0c1d2e3f4a5b";

/// Hex HMAC-SHA256 of `text` under [`SIGNING_SECRET`], as the senders compute it.
fn hmac_hex(text: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(text);
    hex::encode(mac.finalize().into_bytes())
}

async fn app() -> TestApp {
    spawn_app_with(SimConfig::default(), with_hooks).await
}

async fn send(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> Answer {
    let mut request = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Content-Type", content_type));
    if let Some(secret) = bearer {
        request = request.insert_header(("Authorization", format!("Bearer {secret}")));
    }
    read(request.send_body(body).await.expect("gateway answers")).await
}

async fn send_json(app: &TestApp, path: &str, body: Value) -> Answer {
    send(
        app,
        path,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
        None,
    )
    .await
}

fn golden(case: &str) -> Value {
    let path = format!("{}/tests/formats/{case}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The hook's message is posted by the outbox after the answer: waits for the `count`-th such
/// call in the simulator's log and returns the latest.
async fn posted(app: &TestApp, api: &str, method: &str, count: usize) -> LoggedRequest {
    for _ in 0..200 {
        if app.sim.count(api, method) >= count {
            return last_request(app, api, method);
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{api} {method} was not called {count} times");
}

async fn channel_id(app: &TestApp, name: &str) -> String {
    let found = app.get(&format!("/api/v1/channels?name={name}")).await;
    assert_eq!(found.status, 200, "{}", found.body);
    found.body["items"][0]["channel_id"].to_string()
}

/// A Gotify sender (Proxmox VE's Gotify target, Kuma's Gotify type): `<server>/message`, the
/// hook's URL as the server, its secret as the application token in `?token=` or a header.
#[actix_rt::test]
async fn a_gotify_sender_posts_to_the_hook_it_names_as_its_server() {
    let app = app().await;
    let body = json!({"title": "Backup", "message": "vzdump finished", "priority": 5});
    let answer = send_json(
        &app,
        &format!("/hooks/ops/message?token={SECRET}"),
        body.clone(),
    )
    .await;
    // 200, as Gotify answers (Apprise's `gotify://` takes no other status), with the receipt.
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["delivery_id"].is_string(), "{}", answer.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(param(&create, "message"), Some("Backup\nvzdump finished"));
    let answer = send_raw(
        &app,
        "/hooks/ops/message",
        &serde_json::to_vec(&body).unwrap(),
        &[("X-Gotify-Key", SECRET)],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    // The hook's own URL still answers 202 to the same body.
    let direct = send_json(&app, &format!("/hooks/ops/{SECRET}"), body.clone()).await;
    assert_eq!(direct.status, 202, "{}", direct.body);
    // A wrong token is a wrong secret.
    let wrong = send_json(&app, "/hooks/ops/message?token=nope", body).await;
    assert_eq!(wrong.status, 404);
}

/// GitLab's own webhook: its "Secret token" in `X-Gitlab-Token`, its push read as a forge's.
#[actix_rt::test]
async fn a_gitlab_push_with_its_secret_token_header_is_posted() {
    let app = app().await;
    let body = json!({"object_kind": "push", "user_username": "jane", "ref": "refs/heads/main",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
        "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "total_commits_count": 1,
        "project": {"path_with_namespace": "ops/nas", "web_url": "https://gitlab.example/ops/nas"},
        "commits": [{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "Fix backups",
            "url": "https://gitlab.example/ops/nas/-/commit/da156088", "author": {"name": "Jane"}}]});
    let answer = send_raw(
        &app,
        "/hooks/ops",
        &serde_json::to_vec(&body).unwrap(),
        &[("X-Gitlab-Token", SECRET), ("X-Gitlab-Event", "Push Hook")],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    assert_eq!(answer.body["format"], "forge", "{}", answer.body);
    let sent = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    let message = param(&sent, "message").unwrap();
    assert!(
        message.starts_with("[ops/nas:main] jane pushed 1 commit"),
        "{message}"
    );
    // A wrong token is a wrong secret.
    let refused = send_raw(&app, "/hooks/ops", b"{}", &[("X-Gitlab-Token", "nope")]).await;
    assert_eq!(refused.status.as_u16(), 404);
}

#[actix_rt::test]
async fn a_slack_payload_is_posted_by_channel_name_and_answered_ok() {
    let app = app().await;
    let answer = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}"),
        golden("slack/alertmanager_default"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The delivery can be followed, as with the other formats.
    let location = answer.header("location").expect("a Location").to_owned();
    let delivery = location
        .strip_prefix(&format!("{}/api/v1/deliveries/", app.base))
        .unwrap_or_else(|| panic!("{location}"));
    let followed = app.get(&format!("/api/v1/deliveries/{delivery}")).await;
    assert_eq!(followed.status, 200, "{}", followed.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        param(&create, "channel_id"),
        Some(channel_id(&app, "ops").await.as_str())
    );
    assert_eq!(
        param(&create, "message"),
        Some(
            "🔴 <http://alertmanager.example:9093/#/alerts?receiver=chat-slack|[FIRING:2] HighCPU (prod critical)>"
        )
    );
}

/// A Microsoft Teams sender with the hook's URL as its webhook: a connector's MessageCard is
/// answered as the connector answered, `200` and `1` (Argo CD and Zabbix check the body), a
/// Workflows message of Adaptive Cards as Power Automate answers, `202`.
#[actix_rt::test]
async fn teams_cards_are_posted_and_answered_as_teams_answers() {
    let app = app().await;
    let card = json!({"@type": "MessageCard", "@context": "http://schema.org/extensions",
        "themeColor": "2DC72D", "summary": "web-1 is up", "title": "web-1 is up",
        "sections": [{"facts": [{"name": "Monitor", "value": "web-1"}]}]});
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), card).await;
    assert_eq!(
        (answer.status.as_u16(), &answer.body),
        (200, &json!(1)),
        "the body is the text 1"
    );
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(answer.header("location").is_some());
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        param(&create, "message"),
        Some("🟢 web-1 is up\nMonitor: web-1")
    );
    let workflows = json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": [
            {"type": "TextBlock", "text": "HighCPU firing", "weight": "Bolder"},
            {"type": "FactSet", "facts": [{"title": "instance", "value": "web-1"}]}]}}]});
    // Workflows answers 202, and Zabbix's "MS Teams Workflow" takes nothing else.
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), workflows).await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
    assert_eq!(answer.body["format"], "teams_workflows", "{}", answer.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(
        param(&create, "message"),
        Some("HighCPU firing\ninstance: web-1")
    );
    // A card with nothing to show is refused, as other bodies without text are.
    let empty = json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "body": []}}]});
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), empty).await;
    assert_eq!(answer.status.as_u16(), 400, "{}", answer.body);
}

/// A Google Chat sender (Grafana's, Uptime Kuma's, Jenkins') with the hook's URL as its
/// webhook, Google's query beside it: answered 200 with a JSON body, as Google Chat answers
/// (Jenkins takes only 200; Argo CD needs JSON).
#[actix_rt::test]
async fn google_chat_cards_are_posted_and_answered_200() {
    let app = app().await;
    let card = json!({"cardsV2": [{"cardId": "c", "card": {
    "header": {"title": "web-1 went down"},
    "sections": [{"widgets": [
        {"decoratedText": {"topLabel": "Message", "text": "<b>ECONNREFUSED</b>"}},
        {"buttonList": {"buttons": [{"text": "Open", "onClick": {"openLink": {"url": "https://kuma.example/1"}}}]}}
    ]}]}}]});
    let answer = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}?key=AIza&token=t&threadKey=web-1"),
        card,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["format"], "google_chat", "{}", answer.body);
    assert!(answer.body.get("error").is_none(), "{}", answer.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        param(&create, "message"),
        Some("web-1 went down\nMessage: ECONNREFUSED\n<https://kuma.example/1|Open>")
    );
    // A refusal carries Google Chat's `error` member: Argo CD reads it, not the status.
    let empty = json!({"cardsV2": [{"cardId": "c", "card": {"sections": []}}]});
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), empty).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], 400, "{}", answer.body);
    assert!(answer.body["request_id"].is_string(), "{}", answer.body);
}

/// Sends `text` to `path`: answered as Google Chat answers (JSON, no `error`) and posted as
/// typed; a wrong secret at `wrong_path` gets Google's `error` member, which Argo CD judges by.
async fn answered_as_google_chat(app: &TestApp, path: &str, wrong_path: &str, text: &str) {
    let answer = send_json(app, path, json!({ "text": text })).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["format"], "google_chat", "{}", answer.body);
    assert!(answer.body.get("error").is_none(), "{}", answer.body);
    let create = posted(app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(param(&create, "message"), Some(text));
    let wrong = send_json(app, wrong_path, json!({"text": "x"})).await;
    assert_eq!(wrong.status, 404, "{}", wrong.body);
    assert_eq!(wrong.body["error"]["code"], 404, "{}", wrong.body);
}

/// A hook set to Google Chat's format reads a bare text as Google Chat's and answers every
/// refusal in Google's words, a wrong secret too: Argo CD judges by the `error` member alone.
#[actix_rt::test]
async fn a_google_chat_hook_answers_text_and_a_wrong_secret_as_google_chat() {
    let app = app().await;
    answered_as_google_chat(
        &app,
        &format!("/hooks/gchat/{SECRET}"),
        "/hooks/gchat/not-the-secret",
        "Application *web* is <https://argo.example/app|Healthy>",
    )
    .await;
    // Another hook's wrong secret stays Slack's string, which Slack senders read.
    let slack = send_json(&app, "/hooks/ops/not-the-secret", json!({"text": "x"})).await;
    assert_eq!(
        (slack.status.as_u16(), &slack.body),
        (404, &json!("no_service"))
    );
}

/// Argo CD, GitLab and Jenkins add Google Chat's `messageReplyOption` to the URL when they
/// thread: a hook of no configured format then reads and answers their bare text as Google
/// Chat's (JSON, and a wrong secret with the `error` member Argo CD judges by).
#[actix_rt::test]
async fn a_threading_google_chat_sender_is_answered_as_google_chat_without_configuration() {
    let app = app().await;
    let thread = "messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD&threadKey=app-web";
    answered_as_google_chat(
        &app,
        &format!("/hooks/ops/{SECRET}?{thread}"),
        &format!("/hooks/ops/not-the-secret?{thread}"),
        "Application web is <https://argo.example/app|Healthy>",
    )
    .await;
    // Without the parameter the same body is Slack's, answered `ok`.
    let slack = send_json(&app, &format!("/hooks/ops/{SECRET}"), json!({"text": "y"})).await;
    assert_eq!((slack.status.as_u16(), &slack.body), (200, &json!("ok")));
}

/// A body of hundreds of kilobytes is read off the worker's thread (the blocking pool), and
/// its message posted as any other's.
#[actix_rt::test]
async fn a_large_body_is_read_and_posted() {
    let app = app().await;
    let body = json!({"text": "backup report attached", "padding": "x".repeat(300_000)});
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), body).await;
    assert_eq!((answer.status.as_u16(), &answer.body), (200, &json!("ok")));
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(param(&create, "message"), Some("backup report attached"));
    let broken = send(
        &app,
        &format!("/hooks/ops/{SECRET}"),
        "application/json",
        format!("{{\"text\": \"{}", "y".repeat(300_000)).into_bytes(),
        None,
    )
    .await;
    assert_eq!(broken.status.as_u16(), 400, "{}", broken.body);
}

#[actix_rt::test]
async fn an_alertmanager_webhook_with_a_bearer_secret_gets_a_json_receipt() {
    let app = app().await;
    let body = serde_json::to_vec(&golden("alertmanager/firing")).unwrap();
    let answer = send(&app, "/hooks/am", "application/json", body, Some(SECRET)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["format"], "alertmanager");
    let delivery = answer.body["delivery_id"].as_str().unwrap();
    assert_eq!(
        answer.header("location"),
        Some(format!("{}/api/v1/deliveries/{delivery}", app.base).as_str())
    );
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert!(
        param(&create, "message")
            .unwrap()
            .starts_with("🔥 [FIRING:2] HighCPU (prod critical)\n")
    );
}

/// Mattermost's incoming-webhook URL is `/hooks/<key>`, the only shape shoutrrr's
/// `mattermost://` (Watchtower's notifications) can send: the secret alone finds its hook, when
/// no other hook shares it. Basic credentials carry the secret as their password, for senders
/// that offer only `basic_auth`.
#[actix_rt::test]
async fn a_hook_is_found_by_its_secret_alone_or_basic_credentials() {
    let app = app().await;
    // shoutrrr's Mattermost body: text, username, channel, icon_url.
    let body = json!({"text": "Watchtower updated 2 containers", "username": "watchtower",
        "channel": "", "icon_url": ""});
    let answer = send_json(&app, &format!("/hooks/{WATCHTOWER_SECRET}"), body.clone()).await;
    assert_eq!((answer.status.as_u16(), &answer.body), (200, &json!("ok")));
    post_arrives(&app, "Watchtower updated 2 containers").await;
    // A secret several hooks share, a wrong one, and a hook's name without its secret.
    for path in [
        format!("/hooks/{SECRET}"),
        "/hooks/wrong".into(),
        "/hooks/watchtower".into(),
    ] {
        let answer = send_json(&app, &path, body.clone()).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
    }
    // ntfy's JSON publishing names no hook either: it says why the shared secret is refused.
    let shared = app
        .http
        .post(format!("{}/ntfy", app.base))
        .insert_header(("Authorization", format!("Bearer {SECRET}")))
        .send_json(&json!({"topic": "alerts", "message": "which hook?"}))
        .await;
    let shared = read(shared.expect("gateway answers")).await;
    assert_eq!(shared.status, 400, "{}", shared.body);
    assert!(
        shared.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("several hooks have this token")),
        "{}",
        shared.body
    );

    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let credentials = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    let alert = serde_json::to_vec(&golden("alertmanager/firing")).unwrap();
    for (authorization, status) in [
        (basic("alertmanager", SECRET), 202),
        (basic(SECRET, ""), 202),
        (basic("alertmanager", "wrong"), 404),
        ("Basic not-base64".into(), 404),
    ] {
        let answer = send_raw(
            &app,
            "/hooks/am",
            &alert,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &authorization),
            ],
        )
        .await;
        assert_eq!(answer.status, status, "{authorization}: {}", answer.body);
    }
}

/// `markup = "plain"` strips what Chat would show as typed; the default leaves it.
#[actix_rt::test]
async fn a_plain_markup_hook_strips_emphasis_and_the_default_keeps_it() {
    let app = app().await;
    let body = json!({"text": "# Deploy\n**done** for `app_v2` in rate(x)*2"});
    let answer = send_json(&app, &format!("/hooks/plain/{SECRET}"), body.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    post_arrives(&app, "Deploy\ndone for `app_v2` in rate(x)*2").await;
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    post_arrives(&app, "# Deploy\n**done** for `app_v2` in rate(x)*2").await;
    // A Slack message with `mrkdwn: false` means its text as typed: nothing is stripped.
    let literal = json!({"text": "*nightly* _backup_ done", "mrkdwn": false});
    let answer = send_json(&app, &format!("/hooks/plain/{SECRET}"), literal).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    post_arrives(&app, "*nightly* _backup_ done").await;
}

/// Sonarr's and Radarr's Webhook connection, with PUT as their settings allow: the Test event
/// is confirmed in Chat and answered 2xx, so the Test button shows success.
#[actix_rt::test]
async fn sonarr_and_radarr_webhooks_are_posted_with_post_or_put() {
    let app = app().await;
    for (method, case, text) in [
        (
            "PUT",
            "sonarr/test",
            "[Sonarr] ✅ Test notification: this connection reaches Synology Chat",
        ),
        (
            "POST",
            "radarr/imported",
            "[Radarr] ✅ Imported Arrival (2016) [Bluray-1080p]",
        ),
    ] {
        let body = serde_json::to_vec(&golden(case)).unwrap();
        let request = app
            .http
            .request(
                method.parse().unwrap(),
                format!("{}/hooks/ops/{SECRET}", app.base),
            )
            .insert_header(("Content-Type", "application/json"));
        let answer = read(request.send_body(body).await.unwrap()).await;
        assert_eq!(answer.status, 202, "{method} {case}: {}", answer.body);
        assert_eq!(answer.body["format"], "arr");
        post_arrives(&app, text).await;
    }
    // PUT with the secret as a bearer token, and a wrong secret.
    let put = |secret: &str| {
        app.http
            .put(format!("{}/hooks/ops", app.base))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Authorization", format!("Bearer {secret}")))
    };
    let health = serde_json::to_vec(&golden("sonarr/health")).unwrap();
    let answer = read(put(SECRET).send_body(health.clone()).await.unwrap()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let answer = read(put("wrong").send_body(health).await.unwrap()).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    let wrong_method = read(
        app.http
            .delete(format!("{}/hooks/ops/{SECRET}", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, POST, PUT"));
}

/// Uptime Kuma's webhook set to GET sends `msg`, `heartbeat` and `monitor` in the query.
#[actix_rt::test]
async fn a_get_call_is_read_from_its_query() {
    let app = app().await;
    let query = "msg=%5Bweb%5D+%5B%F0%9F%94%B4+Down%5D+timeout&heartbeat=%7B%22status%22%3A0%7D&monitor=%7B%22name%22%3A%22web%22%7D";
    let answer = app.get(&format!("/hooks/kuma/{SECRET}?{query}")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["format"], "generic");
    // The hook's template reads the JSON fields of the query.
    post_arrives(&app, "web: [web] [🔴 Down] timeout").await;
    // A GET without a query is a check of the URL (Uptime Kuma's Discord type reads the
    // webhook first): a success that posts nothing.
    let posts = app.sim.count("SYNO.Chat.Post", "create");
    let probe = app.get(&format!("/hooks/ops/{SECRET}")).await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.body["posted"], false, "{}", probe.body);
    // Kuma's Discord provider checks a thread's URL with its `thread_id`: still a check.
    let probe = app
        .get(&format!("/hooks/ops/{SECRET}?thread_id=123456"))
        .await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.body["posted"], false, "{}", probe.body);
    let probe = app.get(&format!("/hooks/ops/{SECRET}x")).await;
    assert_eq!(probe.status, 404, "a wrong secret is still refused");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), posts);
    let wrong = app.get("/hooks/ops/wrong?msg=x").await;
    assert_eq!(wrong.status, 404);
}

/// The README's template for Uptime Kuma's webhook (section "Uptime Kuma").
const KUMA_README_TEMPLATE: &str = r#"{% if monitor %}{{ monitor.name }} {{ "is up ✅" if heartbeat.status == 1 else "is down 🔴" }}: {{ heartbeat.msg }}{% else %}{{ msg }}{% endif %}"#;

#[actix_rt::test]
async fn the_readmes_uptime_kuma_template_reads_an_alert_and_the_test_button() {
    let app = app().await;
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(&format!("template = '{KUMA_README_TEMPLATE}'")),
        "the README shows the template tested here"
    );
    let path = format!("/hooks/kuma-readme/{SECRET}");
    let alert = send_json(&app, &path, golden("generic/uptime_kuma_webhook")).await;
    assert_eq!(alert.status, 202, "{}", alert.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        param(&create, "message"),
        Some("My site is down 🔴: timeout of 48000ms exceeded")
    );
    // The Test button: `heartbeat` and `monitor` are null.
    let test = send_json(
        &app,
        &path,
        json!({"heartbeat": null, "monitor": null, "msg": "Uptime Kuma Webhook Testing"}),
    )
    .await;
    assert_eq!(test.status, 202, "{}", test.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(
        param(&create, "message"),
        Some("Uptime Kuma Webhook Testing")
    );
}

/// A hook URL pasted with a trailing slash, or with Discord's `/slack` after it, still reaches
/// its hook (a 404 loses the sender's alerts: it gives up), secret checked as ever; a GET's
/// query is kept.
#[actix_rt::test]
async fn a_hook_url_with_a_trailing_slash_reaches_its_hook() {
    let app = app().await;
    let answer = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}/"),
        json!({"text": "slash at the end"}),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.clone()),
        (200, json!("ok"))
    );
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(param(&create, "message"), Some("slash at the end"));
    let wrong = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}x//"),
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(wrong.status, 404);
    let query = "msg=via+get&monitor=%7B%22name%22%3A%22web%22%7D";
    let answer = app.get(&format!("/hooks/kuma/{SECRET}/?{query}")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(param(&create, "message"), Some("web: via get"));
    // Discord's Slack-compatible suffix, as Netdata adds it to every Discord URL.
    let answer = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}/slack"),
        json!({"text": "disk 93%"}),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.clone()),
        (200, json!("ok"))
    );
    let create = posted(&app, "SYNO.Chat.Post", "create", 3).await;
    assert_eq!(param(&create, "message"), Some("disk 93%"));
}

#[actix_rt::test]
async fn a_wrong_name_or_secret_is_no_service_and_posts_nothing() {
    let app = app().await;
    let before = app.sim.count("SYNO.Chat.Post", "create");
    for path in [
        format!("/hooks/ops/{SECRET}x"),
        format!("/hooks/unknown/{SECRET}"),
        "/hooks/ops/".to_owned() + &"a".repeat(64),
    ] {
        let answer = send_json(&app, &path, json!({"text": "hi"})).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.body, "no_service");
    }
    let answer = send(
        &app,
        "/hooks/ops",
        "application/json",
        b"{\"text\":\"hi\"}".to_vec(),
        Some("wrong"),
    )
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.clone()),
        (404, json!("no_service"))
    );
    let answer = send(
        &app,
        "/hooks/ops",
        "application/json",
        b"{\"text\":\"hi\"}".to_vec(),
        None,
    )
    .await;
    assert_eq!(answer.status, 404);
    // A hook set to a format that answers JSON answers a problem document.
    let answer = send(
        &app,
        "/hooks/am",
        "application/json",
        b"{}".to_vec(),
        Some("wrong"),
    )
    .await;
    answer.assert_problem(404, "not_found");
    assert!(!answer.body.to_string().contains("wrong"));
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), before);
}

#[actix_rt::test]
async fn bad_payloads_get_slacks_error_strings() {
    let app = app().await;
    let path = format!("/hooks/ops/{SECRET}");
    let form = send(
        &app,
        &path,
        "application/x-www-form-urlencoded",
        b"payload=%7Bnot+json".to_vec(),
        None,
    )
    .await;
    assert_eq!(
        (form.status.as_u16(), form.body.clone()),
        (400, json!("invalid_payload"))
    );
    // A form without `payload` is read by its fields (nothing is refused that can be shown).
    let fields = send(
        &app,
        &path,
        "application/x-www-form-urlencoded",
        b"text=hi+from+a+form".to_vec(),
        None,
    )
    .await;
    assert_eq!(
        (fields.status.as_u16(), fields.body.clone()),
        (200, json!("ok"))
    );
    post_arrives(&app, "hi from a form").await;
    let empty = send_json(&app, &path, json!({"text": " ", "attachments": []})).await;
    assert_eq!(
        (empty.status.as_u16(), empty.body.clone()),
        (400, json!("no_text"))
    );
    // A sender's stray NUL (a label, a title) is dropped: refused, the alert would be lost,
    // since senders do not retry a 400.
    let nul = send_json(&app, &path, json!({"text": "nul\u{0}dropped"})).await;
    assert_eq!((nul.status.as_u16(), nul.body.clone()), (200, json!("ok")));
    post_arrives(&app, "nuldropped").await;
    // A legacy form with `payload=` is accepted.
    let legacy = send(
        &app,
        &path,
        "application/x-www-form-urlencoded",
        b"payload=%7B%22text%22%3A%22a+%26+b%22%7D".to_vec(),
        None,
    )
    .await;
    assert_eq!(
        (legacy.status.as_u16(), legacy.body.clone()),
        (200, json!("ok"))
    );
    assert_eq!(
        param(
            &posted(&app, "SYNO.Chat.Post", "create", 3).await,
            "message"
        ),
        Some("a & b")
    );
    // A body of another shape that shows nothing gets a problem, not Slack's string.
    let other = send_json(
        &app,
        &path,
        json!({"type": "deploy.finished", "timestamp": "2026-12-05T10:00:00Z", "data": {"id": 1}}),
    )
    .await;
    other.assert_problem(400, "invalid_request");
    // A forced non-Slack format answers problems.
    let wrong = send_json(
        &app,
        &format!("/hooks/am/{SECRET}"),
        json!({"text": "not an alert"}),
    )
    .await;
    wrong.assert_problem(400, "invalid_request");
}

/// Waits until the simulator created a post with exactly this text.
async fn post_arrives(app: &TestApp, text: &str) {
    for _ in 0..600 {
        let created = app.sim.requests().iter().any(|r| {
            r.method.as_deref() == Some("create")
                && r.api.as_deref() == Some("SYNO.Chat.Post")
                && r.error_code.is_none()
                && param(r, "message") == Some(text)
        });
        if created {
            return;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no post {text:?} arrived");
}

#[actix_rt::test]
async fn a_nas_that_refuses_or_is_down_still_gets_ok_and_the_post_follows() {
    let app = app().await;
    let path = format!("/hooks/ops/{SECRET}");
    // The name is resolved through the cached channel list; then the NAS fails.
    assert_eq!(
        send_json(&app, &path, json!({"text": "warm"})).await.status,
        200
    );
    post_arrives(&app, "warm").await;
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 2, 109);
    let busy = send_json(&app, &path, json!({"text": "while busy"})).await;
    assert_eq!(
        (busy.status.as_u16(), busy.body.clone()),
        (200, json!("ok"))
    );
    post_arrives(&app, "while busy").await;

    app.sim.refuse_connections(true).await;
    let down = send_json(&app, &path, json!({"text": "while down"})).await;
    assert_eq!(
        (down.status.as_u16(), down.body.clone()),
        (200, json!("ok"))
    );
    actix_rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.sim.refuse_connections(false).await;
    post_arrives(&app, "while down").await;
    let sent = app
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.error_code.is_none() && param(r, "message").is_some_and(|m| m.starts_with("while"))
        })
        .count();
    assert_eq!(sent, 2, "each message is posted once");
}

/// A hook naming its channel, called while the NAS is down and the channel list is not in
/// memory (just after a start): the message is accepted and posted, in order, once the NAS is
/// back; senders that do not retry (Grafana, the forges, Uptime Kuma) lose nothing.
/// A NAS that hangs does not hold a sender's answer past its patience (Gitea gives up after
/// 5 s): a named target not checked within 2 s is stored unchecked and looked up when sent.
#[actix_rt::test]
async fn a_hanging_nas_does_not_hold_the_answer_to_a_named_target() {
    let app = spawn_app_with(SimConfig::default(), |settings| {
        with_hooks(settings);
        settings.cache.ttl_secs = 1;
        settings.upstream.timeout_ms = 10_000;
    })
    .await;
    // Past the list's time in memory, with every DSM answer 6 s late.
    actix_rt::time::sleep(std::time::Duration::from_millis(1_500)).await;
    app.sim.set_latency(std::time::Duration::from_secs(6));
    let started = std::time::Instant::now();
    let answer = send_json(
        &app,
        &format!("/hooks/ops/{SECRET}"),
        json!({"text": "while the NAS hangs"}),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(
        (answer.status.as_u16(), answer.body.clone()),
        (200, json!("ok"))
    );
    assert!(
        waited < std::time::Duration::from_millis(4_500),
        "answered after {waited:?}, not within the 2 s check"
    );
    app.sim.set_latency(std::time::Duration::ZERO);
    post_arrives(&app, "while the NAS hangs").await;
}

#[actix_rt::test]
async fn a_named_target_is_looked_up_when_the_nas_is_back() {
    let app = spawn_app_with(SimConfig::default(), |settings| {
        with_hooks(settings);
        settings.cache.ttl_secs = 1;
    })
    .await;
    let path = format!("/hooks/ops/{SECRET}");
    // Past the list's time in memory, with the NAS gone.
    actix_rt::time::sleep(std::time::Duration::from_millis(1_500)).await;
    app.sim.refuse_connections(true).await;
    for text in ["first while down", "second while down"] {
        let answer = send_json(&app, &path, json!({"text": text})).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body.clone()),
            (200, json!("ok")),
            "{text}"
        );
    }
    actix_rt::time::sleep(std::time::Duration::from_millis(1_000)).await;
    app.sim.refuse_connections(false).await;
    post_arrives(&app, "second while down").await;
    let ops = channel_id(&app, "ops").await;
    let posted: Vec<(String, String)> = app
        .sim
        .requests()
        .iter()
        .filter(|r| r.error_code.is_none() && r.method.as_deref() == Some("create"))
        .filter_map(|r| {
            Some((
                param(r, "channel_id")?.to_owned(),
                param(r, "message")?.to_owned(),
            ))
        })
        .filter(|(_, m)| m.ends_with("while down"))
        .collect();
    assert_eq!(
        posted,
        [
            (ops.clone(), "first while down".into()),
            (ops, "second while down".into())
        ],
        "once each, in order, in the named channel"
    );
}

#[actix_rt::test]
async fn a_target_name_that_matches_nothing_is_refused_and_posts_nothing() {
    let app = app().await;
    let before = app.sim.count("SYNO.Chat.Post", "create");
    let answer = send(
        &app,
        &format!("/hooks/nowhere/{SECRET}"),
        "text/plain",
        b"hello".to_vec(),
        None,
    )
    .await;
    // A plain-text sender gets JSON answers, so a problem document.
    answer.assert_problem(422, "unprocessable");
    // Slack's own answer to a channel it does not know, to a Slack body.
    let slack = send(
        &app,
        &format!("/hooks/nowhere/{SECRET}"),
        "application/json",
        br#"{"text": "hello"}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(slack.status, 404, "{}", slack.body);
    assert_eq!(slack.body, "channel_not_found");
    // And an Alertmanager body, detected as such, its problem document.
    let alerts = send(
        &app,
        &format!("/hooks/nowhere/{SECRET}"),
        "application/json",
        br#"{"version": "4", "groupKey": "g", "status": "firing", "alerts": []}"#.to_vec(),
        None,
    )
    .await;
    alerts.assert_problem(422, "unprocessable");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), before);
}

#[actix_rt::test]
async fn hooks_post_to_users_ids_and_incoming_webhooks() {
    let app = app().await;
    let dm = send(
        &app,
        &format!("/hooks/alice/{SECRET}"),
        "text/plain",
        b"backup done".to_vec(),
        None,
    )
    .await;
    assert_eq!(dm.status, 202, "{}", dm.body);
    assert_eq!(dm.body["format"], "text");
    let alice = app.get("/api/v1/users?username=alice").await;
    let alice_id = alice.body["items"][0]["user_id"].as_u64().unwrap();
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    let channels = app.get("/api/v1/channels").await;
    let dm_channel = channels.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["type"] == "anonymous" && c["members"].as_array().unwrap().contains(&json!(alice_id))
        })
        .expect("a DM channel with alice");
    assert_eq!(
        param(&create, "channel_id"),
        Some(dm_channel["channel_id"].to_string().as_str())
    );

    let by_id = send_json(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        json!({"content": "from <@1>"}),
    )
    .await;
    // Answered as Discord answers: 204, or with `?wait=true` 200 and a body.
    assert_eq!(by_id.status, 204, "{}", by_id.body);
    assert!(
        by_id
            .header("location")
            .unwrap()
            .starts_with(&format!("{}/api/v1/deliveries/", app.base))
    );
    let create = posted(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(
        (param(&create, "channel_id"), param(&create, "message")),
        (Some("1"), Some("from @1"))
    );

    let webhook = send_json(
        &app,
        &format!("/hooks/webhook/{SECRET}"),
        json!({"text": "via token"}),
    )
    .await;
    assert_eq!(
        (webhook.status.as_u16(), webhook.body.clone()),
        (200, json!("ok"))
    );
    let incoming = posted(&app, "SYNO.Chat.External", "incoming", 1).await;
    let payload: Value = serde_json::from_str(param(&incoming, "payload").unwrap()).unwrap();
    assert_eq!(payload["text"], "via token");

    let kuma = send_json(
        &app,
        &format!("/hooks/kuma/{SECRET}"),
        golden("generic/uptime_kuma_webhook"),
    )
    .await;
    assert_eq!(kuma.body["format"], "generic");
    assert_eq!(
        param(
            &posted(&app, "SYNO.Chat.Post", "create", 3).await,
            "message"
        ),
        Some("My site: [My site] [🔴 Down] timeout of 48000ms exceeded")
    );

    // A template decides how the message reads, not who sent it: a Slack sender (Grafana's
    // Slack contact point takes nothing but `ok`) still gets Slack's answer.
    let slack = send_json(
        &app,
        &format!("/hooks/templated/{SECRET}"),
        json!({"text": "CPU high"}),
    )
    .await;
    assert_eq!((slack.status.as_u16(), slack.body), (200, json!("ok")));
    assert_eq!(
        param(
            &posted(&app, "SYNO.Chat.Post", "create", 4).await,
            "message"
        ),
        Some("alert: CPU high")
    );
}

/// A forge event the hook does not post (CI in progress, GitHub's repeat of a release) is a
/// success that says so, and stores nothing.
#[actix_rt::test]
async fn forge_events_left_unposted_are_answered_as_such() {
    let app = app().await;
    let run = |action: &str| {
        json!({"action": action, "repository": {"full_name": "o/r"}, "sender": {"login": "al"},
            "workflow_run": {"name": "CI", "conclusion": "success", "head_branch": "main"}})
    };
    let path = format!("/hooks/by-id/{SECRET}");
    let waiting = send_json(&app, &path, run("in_progress")).await;
    assert_eq!(waiting.status.as_u16(), 200, "{}", waiting.body);
    assert_eq!(waiting.body["posted"], false);
    assert!(
        waiting.body["reason"]
            .as_str()
            .unwrap()
            .contains("completed")
    );
    let done = send_json(&app, &path, run("completed")).await;
    assert_eq!(done.status.as_u16(), 202, "{}", done.body);
    let posted = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        param(&posted, "message"),
        Some("[o/r] ✅ workflow CI success on main")
    );
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        1,
        "the run in progress was not posted"
    );
}

/// Sends `body` with extra headers (a sender's delivery id).
async fn send_with(app: &TestApp, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    send_raw(app, path, &serde_json::to_vec(body).unwrap(), headers).await
}

/// Waits until `count` posts were created, then a little longer, and says how many there are.
async fn posts_after_settling(app: &TestApp, count: usize) -> usize {
    posted(app, "SYNO.Chat.Post", "create", count).await;
    actix_rt::time::sleep(std::time::Duration::from_millis(400)).await;
    app.sim.count("SYNO.Chat.Post", "create")
}

/// GitHub's "Redeliver" (and a script redelivering what looked failed) sends the event again
/// with the same `X-GitHub-Delivery`: it is answered as the first time, not posted twice.
#[actix_rt::test]
async fn a_redelivered_forge_event_is_answered_as_before_and_posted_once() {
    let app = app().await;
    let path = format!("/hooks/by-id/{SECRET}");
    let push = golden("github/push");
    let event = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3"),
    ];
    let first = send_with(&app, &path, &push, &event).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    assert!(first.body.get("duplicate").is_none(), "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = send_with(&app, &path, &push, &event).await;
    assert_eq!(again.status.as_u16(), 202, "{}", again.body);
    assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    // Another event, and the same event sent to another hook, are posted.
    let next = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e4"),
    ];
    let other = send_with(&app, &path, &push, &next).await;
    assert_ne!(other.body["delivery_id"], first.body["delivery_id"]);
    let elsewhere = send_with(&app, &format!("/hooks/brief/{SECRET}"), &push, &event).await;
    assert_eq!(elsewhere.status.as_u16(), 202, "{}", elsewhere.body);
    assert!(elsewhere.body.get("duplicate").is_none());
    assert_eq!(
        posts_after_settling(&app, 3).await,
        3,
        "the redelivery was not posted"
    );

    // Gitea's header, from a Slack-style sender: `ok` both times, posted once.
    let slack = json!({"text": "deployed"});
    let gitea = [("X-Gitea-Delivery", "b8bd5a1c-0f3f-4c5e")];
    for _ in 0..2 {
        let answer = send_with(&app, &format!("/hooks/ops/{SECRET}"), &slack, &gitea).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body.clone()),
            (200, json!("ok"))
        );
    }
    assert_eq!(posts_after_settling(&app, 4).await, 4);

    // A caller's own Idempotency-Key works the same; a malformed one is refused.
    let keyed = [("Idempotency-Key", "\"nightly-42\"")];
    let text = json!({"title": "Backup", "message": "done"});
    let once = send_with(&app, &path, &text, &keyed).await;
    let twice = send_with(&app, &path, &text, &keyed).await;
    assert_eq!(twice.body["delivery_id"], once.body["delivery_id"]);
    assert_eq!(posts_after_settling(&app, 5).await, 5);
    // The same key with another message: another message, posted, not dropped as a repeat.
    let other = json!({"title": "Backup", "message": "failed"});
    let reused = send_with(&app, &path, &other, &keyed).await;
    assert_ne!(reused.body["delivery_id"], once.body["delivery_id"]);
    assert!(reused.body.get("duplicate").is_none());
    assert_eq!(posts_after_settling(&app, 6).await, 6);
    let bad = send_with(&app, &path, &text, &[("Idempotency-Key", "\"open")]).await;
    bad.assert_problem(400, "invalid_request");
}

/// The members of an Alertmanager cluster each send a group's notification (with their own
/// `externalURL`): the copies arriving within the hook's window are posted once. Later, or
/// changed, the same group is posted again.
#[actix_rt::test]
async fn copies_of_an_alertmanager_notification_are_posted_once() {
    let app = app().await;
    let path = format!("/hooks/brief/{SECRET}");
    let mut firing = golden("alertmanager/firing");
    let first = send_with(&app, &path, &firing, &[]).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    firing["externalURL"] = json!("http://alertmanager-2.example:9093");
    let copy = send_with(&app, &path, &firing, &[]).await;
    assert_eq!(copy.body["delivery_id"], first.body["delivery_id"]);
    assert_eq!(copy.body["duplicate"], true);
    assert_eq!(
        posts_after_settling(&app, 1).await,
        1,
        "the copy was not posted"
    );

    // A changed group is another notification.
    let mut resolved = firing.clone();
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    let changed = send_with(&app, &path, &resolved, &[]).await;
    assert_ne!(changed.body["delivery_id"], first.body["delivery_id"]);
    // After the window (1 s on this hook), the unchanged group is a repeat worth posting.
    actix_rt::time::sleep(std::time::Duration::from_millis(1100)).await;
    let repeat = send_with(&app, &path, &firing, &[]).await;
    assert_eq!(repeat.status.as_u16(), 202, "{}", repeat.body);
    assert_ne!(repeat.body["delivery_id"], first.body["delivery_id"]);
    assert!(repeat.body.get("duplicate").is_none());
    assert_eq!(posts_after_settling(&app, 3).await, 3);
}

/// Posts raw `body` bytes with headers.
async fn send_raw(app: &TestApp, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Answer {
    let mut request = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Content-Type", "application/json"));
    for header in headers {
        request = request.insert_header(*header);
    }
    read(
        request
            .send_body(body.to_vec())
            .await
            .expect("gateway answers"),
    )
    .await
}

/// A hook with GitHub's webhook secret: the signature authenticates the body, so the URL holds
/// no secret; anything unsigned, signed over other bytes or with another secret posts nothing.
#[actix_rt::test]
async fn a_signed_hook_takes_what_its_sender_signed_and_nothing_else() {
    let app = app().await;
    let body = serde_json::to_vec(&golden("github/push")).unwrap();
    let signature = format!("sha256={}", hmac_hex(&body));
    let signed = send_raw(
        &app,
        "/hooks/signed",
        &body,
        &[("X-Hub-Signature-256", &signature)],
    )
    .await;
    assert_eq!(signed.status.as_u16(), 202, "{}", signed.body);
    posted(&app, "SYNO.Chat.Post", "create", 1).await;

    // Gitea's bare header works alike.
    let gitea = send_raw(
        &app,
        "/hooks/signed",
        &body,
        &[("X-Gitea-Signature", &hmac_hex(&body))],
    )
    .await;
    assert_eq!(gitea.status.as_u16(), 202, "{}", gitea.body);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    let refused = [
        send_raw(
            &app,
            "/hooks/signed",
            &tampered,
            &[("X-Hub-Signature-256", &signature)],
        )
        .await,
        send_raw(&app, "/hooks/signed", &body, &[]).await,
        send_raw(
            &app,
            "/hooks/signed",
            &body,
            &[("X-Hub-Signature-256", "sha256=00")],
        )
        .await,
        // No secret in the path to match: the path form is not this hook's.
        send_raw(
            &app,
            &format!("/hooks/signed/{SECRET}"),
            &body,
            &[("X-Hub-Signature-256", &signature)],
        )
        .await,
    ];
    for answer in refused {
        assert_eq!(answer.status.as_u16(), 404, "{}", answer.body);
        assert_eq!(answer.body, "no_service");
    }
    actix_rt::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        2,
        "only the signed bodies"
    );

    // Gitea and Forgejo sign the JSON also when they send it as a form, or with GET.
    let json = serde_json::to_vec(&golden("gitea/push")).unwrap();
    let signature = hmac_hex(&json);
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let request = app
        .http
        .post(format!("{}/hooks/signed", app.base))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .insert_header(("X-Gitea-Signature", signature.as_str()));
    let as_form = read(request.send_body(form.clone()).await.unwrap()).await;
    assert_eq!(as_form.status.as_u16(), 202, "{}", as_form.body);
    let request = app
        .http
        .get(format!("{}/hooks/signed?{form}", app.base))
        .insert_header(("X-Gitea-Signature", signature.as_str()));
    let as_query = read(request.send().await.unwrap()).await;
    assert_eq!(as_query.status.as_u16(), 202, "{}", as_query.body);
    let request = app
        .http
        .get(format!("{}/hooks/signed?{form}", app.base))
        .insert_header(("X-Gitea-Signature", hmac_hex(b"other").as_str()));
    assert_eq!(
        read(request.send().await.unwrap()).await.status.as_u16(),
        404
    );
    assert_eq!(posts_after_settling(&app, 4).await, 4);
}

/// A Standard Webhooks sender: signed with a `whsec_` secret, and a redelivery (the same
/// `webhook-id`, or Svix's `svix-id`) answered as the first and not posted again.
#[actix_rt::test]
async fn a_standard_webhooks_sender_is_verified_and_its_redelivery_posted_once() {
    let app = app().await;
    let body = r##"{"title": "Invoice paid", "message": "#1042: 120 EUR"}"##;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secret = SecretString::from(STANDARD_SECRET);
    let signature =
        syno_chat_gateway::events::subscriptions::signature(&secret, "msg_1", now, body);
    let stamp = now.to_string();
    let signed = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", stamp.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let first = send_raw(&app, "/hooks/standard", body.as_bytes(), &signed).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let again = send_raw(&app, "/hooks/standard", body.as_bytes(), &signed).await;
    assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);
    assert_eq!(again.body["duplicate"], true);
    // Signed for another message id: refused.
    let moved = [("webhook-id", "msg_2"), signed[1], signed[2]];
    let refused = send_raw(&app, "/hooks/standard", body.as_bytes(), &moved).await;
    assert_eq!(refused.status.as_u16(), 404, "{}", refused.body);
    assert_eq!(posts_after_settling(&app, 1).await, 1);
    let posted = last_request(&app, "SYNO.Chat.Post", "create");
    assert_eq!(
        param(&posted, "message"),
        Some("Invoice paid\n#1042: 120 EUR")
    );
    // A Svix sender (its own header names unless white-labelled), and its retry.
    let body = r#"{"title": "Refund", "message": "svix says hi"}"#;
    let signature =
        syno_chat_gateway::events::subscriptions::signature(&secret, "msg_svix", now, body);
    let svix = [
        ("svix-id", "msg_svix"),
        ("svix-timestamp", stamp.as_str()),
        ("svix-signature", signature.as_str()),
    ];
    let first = send_raw(&app, "/hooks/standard", body.as_bytes(), &svix).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let again = send_raw(&app, "/hooks/standard", body.as_bytes(), &svix).await;
    assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);
    assert_eq!(again.body["duplicate"], true);
    // A captured request replayed with an `Idempotency-Key` added is still the signed event.
    let replayed = [svix[0], svix[1], svix[2], ("Idempotency-Key", "evil-1")];
    let again = send_raw(&app, "/hooks/standard", body.as_bytes(), &replayed).await;
    assert_eq!(
        again.body["delivery_id"], first.body["delivery_id"],
        "{}",
        again.body
    );
    assert_eq!(posts_after_settling(&app, 2).await, 2);
}

/// Grafana's HMAC with its timestamp header, on a hook that also wants its bearer secret.
#[actix_rt::test]
async fn grafanas_timestamped_signature_is_checked_beside_the_bearer_secret() {
    let app = app().await;
    let body = serde_json::to_vec(&golden("grafana/firing")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_at = |at: u64| {
        let mut text = format!("{at}:").into_bytes();
        text.extend_from_slice(&body);
        (at.to_string(), hmac_hex(&text))
    };
    let bearer = format!("Bearer {SECRET}");
    let (at, signature) = signed_at(now);
    let fresh = [
        ("Authorization", bearer.as_str()),
        ("X-Grafana-Alerting-Timestamp", at.as_str()),
        ("X-Grafana-Alerting-Signature", signature.as_str()),
    ];
    let ok = send_raw(&app, "/hooks/grafana", &body, &fresh).await;
    assert_eq!(ok.status.as_u16(), 202, "{}", ok.body);
    // Without the bearer secret; a capture replayed ten minutes later.
    let unsigned_in = send_raw(&app, "/hooks/grafana", &body, &fresh[1..]).await;
    assert_eq!(unsigned_in.status.as_u16(), 404);
    let (old, old_signature) = signed_at(now - 600);
    let replayed = [
        ("Authorization", bearer.as_str()),
        ("X-Grafana-Alerting-Timestamp", old.as_str()),
        ("X-Grafana-Alerting-Signature", old_signature.as_str()),
    ];
    assert_eq!(
        send_raw(&app, "/hooks/grafana", &body, &replayed)
            .await
            .status
            .as_u16(),
        404
    );
    assert_eq!(posts_after_settling(&app, 1).await, 1);
}

/// A request signed over a timestamp, captured and sent again while its timestamp is still
/// accepted (5 minutes), is the same request: answered as a duplicate and not posted again,
/// past the hook's duplicate window too. Before, a generic body was posted again at once, and a
/// notification once the window (60 s by default) had passed.
#[actix_rt::test]
async fn a_captured_timestamped_request_sent_again_is_not_posted_again() {
    let app = app().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let generic = br#"{"title": "disk full", "message": "on nas1"}"#.to_vec();
    let notification = serde_json::to_vec(&golden("grafana/firing")).unwrap();
    for body in [generic, notification] {
        let mut text = format!("{now}:").into_bytes();
        text.extend_from_slice(&body);
        let signature = hmac_hex(&text);
        let headers = [("X-Stamp", now.as_str()), ("X-Sig", signature.as_str())];
        let first = send_raw(&app, "/hooks/stamped", &body, &headers).await;
        assert_eq!(first.status.as_u16(), 202, "{}", first.body);
        // Past the hook's one-second duplicate window.
        actix_rt::time::sleep(std::time::Duration::from_millis(1_500)).await;
        let again = send_raw(&app, "/hooks/stamped", &body, &headers).await;
        assert_eq!(again.status.as_u16(), 202, "{}", again.body);
        assert_eq!(again.body["duplicate"], true, "{}", again.body);
        assert_eq!(again.body["delivery_id"], first.body["delivery_id"]);
        // An `Idempotency-Key` added to the copy does not make it new.
        let keyed = [headers[0], headers[1], ("Idempotency-Key", "made-up-1")];
        let keyed = send_raw(&app, "/hooks/stamped", &body, &keyed).await;
        assert_eq!(keyed.body["duplicate"], true, "{}", keyed.body);
    }
    // Nor does another known header's name for the same MAC.
    let body = serde_json::to_vec(&golden("grafana/firing")).unwrap();
    let mut text = format!("{now}:").into_bytes();
    text.extend_from_slice(&body);
    let mac = hmac_hex(&text);
    let bearer = format!("Bearer {SECRET}");
    let grafana = [
        ("Authorization", bearer.as_str()),
        ("X-Grafana-Alerting-Timestamp", now.as_str()),
        ("X-Grafana-Alerting-Signature", mac.as_str()),
    ];
    let first = send_raw(&app, "/hooks/grafana", &body, &grafana).await;
    assert_eq!(first.status.as_u16(), 202, "{}", first.body);
    let hub = format!("sha256={mac}");
    let renamed = [
        grafana[0],
        grafana[1],
        ("X-Hub-Signature-256", hub.as_str()),
    ];
    let renamed = send_raw(&app, "/hooks/grafana", &body, &renamed).await;
    assert_eq!(renamed.body["duplicate"], true, "{}", renamed.body);
    assert_eq!(renamed.body["delivery_id"], first.body["delivery_id"]);
    assert_eq!(posts_after_settling(&app, 3).await, 3);
}

#[actix_rt::test]
async fn multipart_bodies_are_read_from_their_json_field_and_discord_is_answered_as_discord() {
    let app = app().await;
    const FILE: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"files[0]\"; \
        filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nnot posted\r\n";
    let field = |name: &str, value: &str| {
        format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let multipart =
        |name: &str, json: &str| format!("{FILE}{}--XyZ--\r\n", field(name, json)).into_bytes();
    // Discord with a file: the message is `payload_json`.
    let discord = send(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        "multipart/form-data; boundary=XyZ",
        multipart(
            "payload_json",
            r#"{"content": "deploy [log](https://ci.example/1)"}"#,
        ),
        None,
    )
    .await;
    assert_eq!(discord.status, 204, "{}", discord.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 1).await;
    // The file is not posted, and the message says so.
    assert_eq!(
        param(&create, "message"),
        Some("deploy <https://ci.example/1|log>\n📎 a.txt (file not forwarded)")
    );
    let waiting = send(
        &app,
        &format!("/hooks/by-id/{SECRET}?wait=true"),
        "application/json",
        br#"{"content": "and wait"}"#.to_vec(),
        None,
    )
    .await;
    // Answered once the message is posted, with the post's id (a string, as Discord's are).
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    assert_eq!(waiting.body["format"], "discord");
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        2,
        "posted before the answer"
    );
    let delivery = delivery_named_in(&app, &waiting).await;
    assert_eq!(delivery.body["state"], "delivered", "{}", delivery.body);
    assert_eq!(
        waiting.body["id"],
        delivery.body["post_ids"][0].to_string().as_str(),
        "{}",
        waiting.body
    );
    // The rest of a Discord message object, which discord.py's `wait=True` reads as one.
    assert_eq!(waiting.body["content"], "and wait", "{}", waiting.body);
    assert_eq!(waiting.body["channel_id"], "1", "{}", waiting.body);
    assert_eq!(waiting.body["type"], 0, "{}", waiting.body);
    assert!(
        waiting.body["edited_timestamp"].is_null(),
        "{}",
        waiting.body
    );
    let timestamp = waiting.body["timestamp"].as_str().unwrap_or_default();
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z'),
        "{}",
        waiting.body
    );
    assert_eq!(
        waiting.body["author"]["username"], "by-id",
        "{}",
        waiting.body
    );
    for empty in ["attachments", "embeds", "mentions", "mention_roles"] {
        assert_eq!(
            waiting.body[empty],
            serde_json::json!([]),
            "{}",
            waiting.body
        );
    }
    for no in ["tts", "pinned", "mention_everyone"] {
        assert_eq!(waiting.body[no], false, "{}", waiting.body);
    }
    // Uptime Kuma's form-data option: one field `data`.
    let kuma = send(
        &app,
        &format!("/hooks/kuma/{SECRET}"),
        "multipart/form-data; boundary=XyZ",
        format!(
            "{}--XyZ--\r\n",
            field(
                "data",
                r#"{"msg": "[web] [Down] timeout", "monitor": {"name": "web"}}"#
            )
        )
        .into_bytes(),
        None,
    )
    .await;
    assert_eq!(kuma.status, 202, "{}", kuma.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 3).await;
    assert_eq!(param(&create, "message"), Some("web: [web] [Down] timeout"));
    // Discord also takes the message's fields as form fields beside the files.
    let fields = send(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        "multipart/form-data; boundary=XyZ",
        format!(
            "{FILE}{}{}--XyZ--\r\n",
            field("content", "build 7 ✓"),
            field("username", "ci")
        )
        .into_bytes(),
        None,
    )
    .await;
    assert_eq!(fields.status, 204, "{}", fields.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 4).await;
    assert_eq!(
        param(&create, "message"),
        Some("build 7 ✓\n📎 a.txt (file not forwarded)")
    );
    // A file alone is a Discord message too: it is named.
    let file_only = send(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        "multipart/form-data; boundary=XyZ",
        format!("{FILE}--XyZ--\r\n").into_bytes(),
        None,
    )
    .await;
    assert_eq!(file_only.status, 204, "{}", file_only.body);
    let create = posted(&app, "SYNO.Chat.Post", "create", 5).await;
    assert_eq!(
        param(&create, "message"),
        Some("📎 a.txt (file not forwarded)")
    );
    // Neither text nor a file: refused, nothing posted.
    let none = send(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        "multipart/form-data; boundary=XyZ",
        format!("{}--XyZ--\r\n", field("other", "{}")).into_bytes(),
        None,
    )
    .await;
    assert_eq!(none.status, 400, "{}", none.body);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 5);
}

/// Discord's `?wait=true` waits for the post: a delivery that fails is answered with its
/// problem (DSM's code included, the secret masked), one not posted within 5 s with `200` and
/// the receipt without an id (stored is success; Discord clients know only 200 and 204).
#[actix_rt::test]
async fn a_discord_wait_answers_what_became_of_the_message() {
    let app = app().await;
    let failed = send(
        &app,
        &format!("/hooks/gone/{SECRET}?wait=true"),
        "application/json",
        br#"{"content": "to a channel that is not there"}"#.to_vec(),
        None,
    )
    .await;
    // The hook's target is the gateway's configuration, not the caller's mistake.
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(failed.body["dsm_code"], 117, "{}", failed.body);
    assert_eq!(
        failed.body["instance"], "/hooks/gone/****",
        "{}",
        failed.body
    );
    assert!(
        failed.headers.contains_key("location"),
        "{:?}",
        failed.headers
    );

    // Through an incoming webhook, whose answer names no post: posted, so 200, without an id.
    let webhook = send(
        &app,
        &format!("/hooks/webhook/{SECRET}?wait=true"),
        "application/json",
        br#"{"content": "through the webhook"}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(webhook.status, 200, "{}", webhook.body);
    assert!(webhook.body["id"].is_null(), "{}", webhook.body);
    assert!(webhook.body["content"].is_null(), "{}", webhook.body);
    let delivery = delivery_named_in(&app, &webhook).await;
    assert_eq!(delivery.body["state"], "delivered", "{}", delivery.body);

    app.sim.refuse_connections(true).await;
    let started = std::time::Instant::now();
    let pending = send(
        &app,
        &format!("/hooks/by-id/{SECRET}?wait=1"),
        "application/json",
        br#"{"content": "while the NAS is away"}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(pending.status, 200, "{}", pending.body);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "wait=1 waits as wait=true does"
    );
    assert!(pending.body["id"].is_null(), "{}", pending.body);
    assert!(pending.body["content"].is_null(), "{}", pending.body);
    assert!(pending.body["delivery_id"].is_string(), "{}", pending.body);
    app.sim.refuse_connections(false).await;
    // The first create was DSM's refusal of the channel that is not there.
    let create = posted(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(param(&create, "message"), Some("while the NAS is away"));
}

#[actix_rt::test]
async fn long_hook_texts_are_chunked() {
    let app = app().await;
    let text = "word ".repeat(800);
    let answer = send(
        &app,
        &format!("/hooks/by-id/{SECRET}"),
        "text/plain",
        text.clone().into_bytes(),
        None,
    )
    .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    // The outbox posts the text as three consecutive parts that join back to it.
    posted(&app, "SYNO.Chat.Post", "create", 3).await;
    let parts: Vec<String> = app
        .sim
        .requests()
        .iter()
        .filter(|r| r.api.as_deref() == Some("SYNO.Chat.Post") && r.error_code.is_none())
        .filter_map(|r| param(r, "message").map(str::to_owned))
        .collect();
    assert_eq!(parts.len(), 3);
    // The text format trims the body's trailing whitespace.
    assert_eq!(parts.concat(), text.trim_end());
}

/// The series the shipped alert rules take `increase()` of exist at 0 from the start: a
/// series first seen at 1 has no increase for Prometheus, so the first refusal went unseen.
#[actix_rt::test]
async fn alerted_series_start_at_zero() {
    let app = app().await;
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    for series in [
        r#"synochat_hook_requests_total{hook="ops",answer="unauthorized"} 0"#,
        r#"synochat_hook_requests_total{hook="by-id",answer="unauthorized"} 0"#,
        r#"synochat_delivery_attempts_total{outcome="failed"} 0"#,
        r#"synochat_delivery_attempts_total{outcome="expired"} 0"#,
        r#"synochat_upstream_logins_total{outcome="failed"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
}

#[actix_rt::test]
async fn the_secret_never_reaches_metrics_or_problem_documents() {
    let app = app().await;
    send_json(&app, &format!("/hooks/ops/{SECRET}"), json!({"text": "x"})).await;
    send_json(
        &app,
        &format!("/hooks/ops/{SECRET}/extra"),
        json!({"text": "x"}),
    )
    .await;
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(!text.contains(SECRET));
    assert!(text.contains(r#"route="/hooks/{name}/{secret}""#), "{text}");
    let problem = send_json(&app, &format!("/hooks/am/{SECRET}"), json!({"text": "x"})).await;
    assert!(
        !problem.body.to_string().contains(SECRET),
        "{}",
        problem.body
    );
    assert_eq!(problem.body["instance"], "/hooks/am/****");
}

/// `synochat_hook_requests_total{hook, answer}`: per configured hook, how its requests were
/// answered; a name no hook has never becomes a label.
#[actix_rt::test]
async fn hook_requests_are_counted_by_hook_and_answer() {
    let app = app().await;
    let ops = format!("/hooks/ops/{SECRET}");
    send_json(&app, &ops, json!({"text": "one"})).await;
    let keyed = [("X-GitHub-Delivery", "g-1")];
    send_with(&app, &ops, &json!({"text": "two"}), &keyed).await;
    send_with(&app, &ops, &json!({"text": "two"}), &keyed).await;
    send_json(&app, "/hooks/ops/wrong-secret", json!({"text": "x"})).await;
    send_json(&app, &ops, json!({"no": "text"})).await;
    send_json(&app, "/hooks/made-up-name/x", json!({"text": "x"})).await;
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    let count = |answer: &str| {
        let series = format!(r#"synochat_hook_requests_total{{hook="ops",answer="{answer}"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(count("accepted"), Some(2.0), "{text}");
    assert_eq!(count("duplicate"), Some(1.0));
    assert_eq!(count("unauthorized"), Some(1.0));
    assert_eq!(count("bad_request"), Some(1.0));
    assert!(!text.contains("made-up-name"));
}

#[actix_rt::test]
async fn channels_and_users_are_found_by_name() {
    let app = app().await;
    let ops = app.get("/api/v1/channels?name=OPS").await;
    assert_eq!(ops.status, 200);
    let items = ops.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "ops");
    let none = app.get("/api/v1/channels?name=nope").await;
    assert_eq!(none.body, json!({"items": []}));
    let alice = app.get("/api/v1/users?username=alice").await;
    assert_eq!(alice.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(alice.body["items"][0]["username"], "alice");
    app.get("/api/v1/users?username=")
        .await
        .assert_problem(400, "invalid_request");
    app.get("/api/v1/channels?nam=ops")
        .await
        .assert_problem(400, "invalid_request");
}

/// The delivery a hook's receipt names (`delivery_id`).
async fn delivery_named_in(app: &TestApp, receipt: &Answer) -> Answer {
    let id = receipt.body["delivery_id"].as_str().unwrap();
    app.get(&format!("/api/v1/deliveries/{id}")).await
}

#[actix_rt::test]
async fn a_hooks_secret_is_never_echoed_by_an_unknown_route() {
    let app = app().await;
    for path in [
        format!("/hooks/am/{SECRET}/extra"),
        format!("//hooks/am/{SECRET}"),
    ] {
        let answer = app.call("GET", &path, None, None).await;
        assert!(answer.status.is_client_error(), "{path}: {}", answer.body);
        assert!(
            !answer.body.to_string().contains(SECRET),
            "{path}: {}",
            answer.body
        );
    }
}

#[actix_web::test]
async fn an_oversized_body_is_413() {
    let app = app().await;
    let big = |text: &str| {
        let mut body = serde_json::to_vec(&json!({ "text": text })).unwrap();
        body.resize(6 * 1024 * 1024, b' ');
        body
    };
    // Slack's senders get Slack's string; the others a problem document.
    let slack = send(
        &app,
        &format!("/hooks/ops/{SECRET}"),
        "application/json",
        big("x"),
        None,
    )
    .await;
    assert_eq!(slack.status, 413, "{}", slack.body);
    assert_eq!(slack.body, "payload_too_large");
    let am = send(
        &app,
        "/hooks/am",
        "application/json",
        big("x"),
        Some(SECRET),
    )
    .await;
    am.assert_problem(413, "payload_too_large");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
}

#[actix_web::test]
async fn a_stalled_hook_body_answers_408() {
    use std::io::{Read, Write};
    let app = spawn_app_with(SimConfig::default(), |s| {
        with_hooks(s);
        s.server.body_timeout_ms = 500;
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(
            format!(
                "POST /hooks/ops/{SECRET} HTTP/1.1\r\nHost: {address}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"text\":"
            )
            .as_bytes(),
        )
        .unwrap();
    // Short reads between sleeps: a blocking read would stall the test's runtime.
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let mut answer = String::new();
    for _ in 0..100 {
        let mut buffer = vec![0; 4096];
        if let Ok(n) = stream.read(&mut buffer) {
            answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A Slack-style hook: Slack's kind of answer, a string.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.ends_with("request_timeout"), "{answer}");
}

/// Hook bodies held at once are capped: beyond the cap a sender is told to retry, and a body
/// declared over the limit is refused before a byte of it is read. A signed hook admits a
/// request on the mere presence of a signature header, before its body can be checked: such
/// requests have their own cap, and one client address holds two of them at most, so a client
/// without any secret cannot keep the other hooks busy.
#[actix_rt::test]
async fn hook_bodies_held_at_once_are_capped() {
    use std::io::Write;
    let app = app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // Senders that declare a body and send a little of it.
    let stall = |path: &str, extra: &str| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"text\":"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };
    let unverified: Vec<std::net::TcpStream> = (0..16)
        .map(|_| stall("/hooks/signed", "X-Hub-Signature-256: sha256=00\r\n"))
        .collect();
    actix_rt::time::sleep(std::time::Duration::from_millis(1_000)).await;
    // Hooks with a secret are not held up; a third unverified body from this address is
    // refused at once.
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), json!({"text": "hi"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let third = send_raw(
        &app,
        "/hooks/signed",
        br#"{"text": "x"}"#,
        &[("X-Hub-Signature-256", "sha256=00")],
    )
    .await;
    assert_eq!(third.status.as_u16(), 503, "{}", third.body);
    drop(unverified);
    // Sixteen bodies admitted by the secret fill that cap.
    let stalled: Vec<std::net::TcpStream> = (0..16)
        .map(|_| stall(&format!("/hooks/ops/{SECRET}"), ""))
        .collect();
    // Time for all sixteen to be read up to their stall, on a loaded machine too.
    actix_rt::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), json!({"text": "hi"})).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body, "temporarily_unavailable");
    assert_eq!(answer.header("retry-after"), Some("30"));
    // A format whose errors are problem documents: a code of its own, not the uploads' one.
    let answer = send_json(
        &app,
        &format!("/hooks/am/{SECRET}"),
        json!({"version": "4"}),
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["code"], "hooks_busy", "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("30"));
    drop(stalled);
    let answer = send_json(&app, &format!("/hooks/ops/{SECRET}"), json!({"text": "hi"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Declared too large: refused at once, the body never sent.
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    let head = format!(
        "POST /hooks/ops/{SECRET} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        6 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut status = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 413");
}
