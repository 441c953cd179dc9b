//! Integration management, webhook and chatbot token routes, stickers/settings/app/misc.

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_KEY, Answer, BOT_TOKEN_NAME, READ_KEY, TestApp, WEBHOOK_TOKEN_NAME, WRITE_KEY, spawn_app,
};

const EXTERNAL: &str = "SYNO.Chat.External";
/// Text that breaks an unencoded form body (src/upstream/PROTOCOL.md [C5]).
const TRICKY_TEXT: &str = "100% & \"done\" + a=b?c\nnext line ✓ 🎉";

/// A call with the admin key.
pub(crate) async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Answer {
    app.call(method, path, Some(ADMIN_KEY), body).await
}

/// The decoded `payload` of the last External call with `method`, as JSON.
fn last_payload(app: &TestApp, method: &str) -> Value {
    let request = app
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.api.as_deref() == Some(EXTERNAL) && r.method.as_deref() == Some(method))
        .expect("an External call");
    let payload = request
        .params
        .iter()
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.clone())
        .expect("a payload field");
    serde_json::from_str(&payload).expect("payload is JSON")
}

/// The params of the last call of `api`/`method`.
fn last_params(app: &TestApp, api: &str, method: &str) -> Vec<(String, String)> {
    app.sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.api.as_deref() == Some(api) && r.method.as_deref() == Some(method))
        .expect("a DSM call")
        .params
}

async fn send_with_header(app: &TestApp, token: Option<&str>, body: Value) -> Answer {
    let mut request = app
        .http
        .post(format!("{}/api/v1/webhooks/incoming", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")));
    if let Some(token) = token {
        request = request.insert_header(("X-Chat-Token", token));
    }
    let mut response = request.send_json(&body).await.expect("gateway answers");
    let bytes = response.body().await.expect("body");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Asserts that no configured token appears in `answer`.
fn assert_no_configured_token(app: &TestApp, answer: &Answer) {
    let text = answer.body.to_string();
    for token in [app.sim.demo_webhook_token(), app.sim.demo_bot_token()] {
        assert!(!text.contains(&token), "a configured token leaked: {text}");
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The bot user ids in a list answer.
pub(crate) fn ids(list: &Answer) -> Vec<u64> {
    list.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {}", list.body))
        .iter()
        .map(|i| i["user_id"].as_u64().unwrap())
        .collect()
}

#[actix_web::test]
async fn webhook_kinds_are_created_listed_and_deleted() {
    let app = spawn_app().await;
    let kinds = [
        (
            "incoming-webhooks",
            "SYNO.Chat.Webhook.Incoming",
            json!({"name": "ci", "channel_id": 1, "icon_url": "https://ci.example.org/i.png"}),
        ),
        (
            "outgoing-webhooks",
            "SYNO.Chat.Webhook.Outgoing",
            json!({"name": "ci-out", "channel_id": 2, "url": "https://ci.example.org/out"}),
        ),
        (
            "slash-commands",
            "SYNO.Chat.Webhook.Slash",
            json!({"name": "deploy", "command": "/deploy", "url": "https://ci.example.org/slash"}),
        ),
    ];
    for (resource, api, body) in kinds {
        let path = format!("/api/v1/integrations/{resource}");
        let created = admin(&app, "POST", &path, Some(body.clone())).await;
        assert_eq!(created.status, 201, "{resource}: {}", created.body);
        let token = created.body["token"].as_str().unwrap();
        assert_eq!(token.len(), 64);
        let id = created.body["user_id"].as_u64().unwrap();
        if resource != "slash-commands" {
            // The channel (and URL) bound with `set` too, for DSMs that ignore them in `create`.
            let bound = last_params(&app, api, "set");
            assert_eq!(param(&bound, "user_id"), Some(&*id.to_string()));
            assert_eq!(
                param(&bound, "channel_id"),
                Some(&*body["channel_id"].to_string())
            );
            assert_eq!(param(&bound, "url"), body["url"].as_str());
        }
        // Ready for use: its bot is named after the integration and enabled (a bot made
        // through the session API starts unnamed and disabled; the simulator, like DSM,
        // refuses a token whose bot has no nickname or is disabled).
        let set = last_params(&app, "SYNO.Chat.Bot", "set");
        assert_eq!(param(&set, "nickname"), body["name"].as_str(), "{resource}");
        assert_eq!(param(&set, "user_id"), Some(&*id.to_string()));
        let enable = last_params(&app, "SYNO.Chat.Bot", "enable");
        assert_eq!(param(&enable, "user_id"), Some(&*id.to_string()));
        if resource == "incoming-webhooks" {
            let sent = send_with_header(&app, Some(token), json!({"text": "first"})).await;
            assert_eq!(sent.status, 200, "{}", sent.body);
        }

        let list = admin(&app, "GET", &path, None).await;
        assert_eq!(list.status, 200, "{}", list.body);
        assert!(ids(&list).contains(&id), "{resource}: {}", list.body);
        let listed = list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["user_id"] == id)
            .unwrap();
        assert_eq!(listed["is_disabled"], false, "{resource}: {listed}");
        assert!(!list.body.to_string().contains(token), "list shows a token");
        assert_no_configured_token(&app, &list);

        let deleted = admin(&app, "DELETE", &format!("{path}/{id}"), None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.body);
        // Webhooks are deleted as the bots they are (n8n's call against a NAS); slash
        // commands with the library's `delete {id}`.
        let (api, key) = if api == "SYNO.Chat.Webhook.Slash" {
            (api, "id")
        } else {
            ("SYNO.Chat.Bot", "user_id")
        };
        assert_eq!(
            param(&last_params(&app, api, "delete"), key),
            Some(&*id.to_string())
        );
        let list = admin(&app, "GET", &path, None).await;
        assert!(!ids(&list).contains(&id));
        admin(&app, "DELETE", &format!("{path}/{id}"), None)
            .await
            .assert_problem(404, "not_found");
    }
    let outgoing = last_params(&app, "SYNO.Chat.Webhook.Outgoing", "create");
    assert_eq!(param(&outgoing, "events"), Some(r#"["message"]"#));
    let slash = last_params(&app, "SYNO.Chat.Webhook.Slash", "create");
    assert_eq!(param(&slash, "command"), Some("deploy"));
    assert_eq!(param(&slash, "channel_id"), None);
}

#[actix_web::test]
async fn an_incoming_webhook_that_cannot_be_enabled_is_not_left_behind() {
    let app = spawn_app().await;
    app.sim.fail_next("SYNO.Chat.Bot", Some("enable"), 1, 105);
    let path = "/api/v1/integrations/incoming-webhooks";
    admin(
        &app,
        "POST",
        path,
        Some(json!({"name": "half", "channel_id": 1})),
    )
    .await
    .assert_problem(403, "upstream_permission_denied");
    let created = last_params(&app, "SYNO.Chat.Bot", "set");
    let id = param(&created, "user_id").unwrap().to_owned();
    let deleted = last_params(&app, "SYNO.Chat.Bot", "delete");
    assert_eq!(param(&deleted, "user_id"), Some(&*id));
    assert_eq!(param(&deleted, "real_delete"), Some("true"));
    assert_eq!(app.sim.count("SYNO.Chat.Webhook.Incoming", "delete"), 0);
    let list = admin(&app, "GET", path, None).await;
    assert!(!ids(&list).contains(&id.parse().unwrap()), "{}", list.body);
}

#[actix_web::test]
async fn webhook_creation_validates_input_before_calling_dsm() {
    let app = spawn_app().await;
    let cases = [
        (
            "incoming-webhooks",
            json!({"name": " ", "channel_id": 1}),
            "name",
        ),
        (
            "incoming-webhooks",
            json!({"name": "x", "channel_id": 0}),
            "channel_id",
        ),
        (
            "incoming-webhooks",
            json!({"name": "x", "channel_id": 1, "icon_url": "ftp://x/y.png"}),
            "icon_url",
        ),
        (
            "outgoing-webhooks",
            json!({"name": "x", "channel_id": 1, "url": "/relative"}),
            "url",
        ),
        (
            "outgoing-webhooks",
            json!({"name": "x", "channel_id": 1, "url": "https://a.example", "events": []}),
            "events",
        ),
        (
            "slash-commands",
            json!({"name": "x", "command": "/two words", "url": "https://a.example"}),
            "command",
        ),
        (
            "slash-commands",
            json!({"name": "x", "command": "/", "url": "https://a.example"}),
            "command",
        ),
    ];
    for (resource, body, field) in cases {
        let answer = admin(
            &app,
            "POST",
            &format!("/api/v1/integrations/{resource}"),
            Some(body),
        )
        .await;
        let detail = answer.assert_problem(400, "invalid_request")["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains(field), "{detail} should name {field}");
    }
    for api in [
        "SYNO.Chat.Webhook.Incoming",
        "SYNO.Chat.Webhook.Outgoing",
        "SYNO.Chat.Webhook.Slash",
    ] {
        assert_eq!(app.sim.count(api, "create"), 0);
    }
    admin(
        &app,
        "POST",
        "/api/v1/integrations/incoming-webhooks",
        Some(json!({"name": "x", "channel_id": 999})),
    )
    .await
    .assert_problem(404, "not_found");
    admin(
        &app,
        "DELETE",
        "/api/v1/integrations/slash-commands/abc",
        None,
    )
    .await
    .assert_problem(400, "invalid_request");
}

#[actix_web::test]
async fn integration_lists_are_served_without_tokens() {
    let app = spawn_app().await;
    let overview = admin(&app, "GET", "/api/v1/integrations", None).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body["externals"].as_array().unwrap().len() >= 2);
    assert_eq!(app.sim.count(EXTERNAL, "list"), 1);
    for path in [
        "/api/v1/integrations",
        "/api/v1/integrations/incoming-webhooks",
        "/api/v1/integrations/builtin-webhooks",
        "/api/v1/integrations/broadcast-webhooks",
        "/api/v1/integrations/chatbots",
    ] {
        let answer = admin(&app, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(!answer.body.to_string().contains("\"token\""), "{path}");
        assert_no_configured_token(&app, &answer);
    }
    let builtin = admin(&app, "GET", "/api/v1/integrations/builtin-webhooks", None).await;
    assert!(builtin.body["webhook_builtins"].is_array());

    // A refusal of the gateway's account is DSM's, not the caller's.
    app.sim
        .fail_next("SYNO.Chat.Webhook.Broadcast", None, 1, 105);
    admin(&app, "GET", "/api/v1/integrations/broadcast-webhooks", None)
        .await
        .assert_problem(403, "upstream_permission_denied");
}

#[actix_web::test]
async fn bots_are_renamed_and_deleted() {
    let app = spawn_app().await;
    let created = admin(
        &app,
        "POST",
        "/api/v1/integrations/incoming-webhooks",
        Some(json!({"name": "renamed", "channel_id": 1})),
    )
    .await;
    let id = created.body["user_id"].as_u64().unwrap();
    let path = format!("/api/v1/integrations/bots/{id}");

    let renamed = admin(&app, "PUT", &path, Some(json!({"nickname": "CI & co"}))).await;
    assert_eq!(renamed.status, 204, "{}", renamed.body);
    let list = admin(&app, "GET", "/api/v1/integrations/incoming-webhooks", None).await;
    let item = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user_id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(item["nickname"], "CI & co");

    admin(&app, "PUT", &path, Some(json!({"nickname": "  "})))
        .await
        .assert_problem(400, "invalid_request");
    admin(&app, "PUT", &path, Some(json!({})))
        .await
        .assert_problem(400, "invalid_request");
    // Once when the webhook was created, once to rename it; the refused bodies call nothing.
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "set"), 2);

    assert_eq!(admin(&app, "DELETE", &path, None).await.status, 204);
    let deleted = last_params(&app, "SYNO.Chat.Bot", "delete");
    assert_eq!(
        param(&deleted, "real_delete"),
        Some("true"),
        "not only marked deleted"
    );
    let list = admin(&app, "GET", "/api/v1/integrations/incoming-webhooks", None).await;
    assert!(!ids(&list).contains(&id));
    admin(&app, "DELETE", &path, None)
        .await
        .assert_problem(404, "not_found");
    admin(
        &app,
        "PUT",
        "/api/v1/integrations/bots/424242",
        Some(json!({"nickname": "x"})),
    )
    .await
    .assert_problem(404, "not_found");

    // A person's user id (a mistyped bot id): `Bot.delete {real_delete}` and `Bot.set` take
    // any user id, so neither is sent for one no integration lists.
    let (sets, deletes) = (
        app.sim.count("SYNO.Chat.Bot", "set"),
        app.sim.count("SYNO.Chat.Bot", "delete"),
    );
    let person = "/api/v1/integrations/bots/3";
    admin(&app, "DELETE", person, None)
        .await
        .assert_problem(404, "not_found");
    admin(&app, "PUT", person, Some(json!({"nickname": "bot?"})))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "set"), sets);
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "delete"), deletes);
    let users = admin(&app, "GET", "/api/v1/users", None).await;
    assert!(
        users.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == 3 && u["nickname"] != "bot?"),
        "{}",
        users.body
    );
}

#[actix_web::test]
async fn chatbots_are_listed_and_changed() {
    let app = spawn_app().await;
    let list = admin(&app, "GET", "/api/v1/integrations/chatbots", None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let helper = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["nickname"] == "helper")
        .cloned()
        .expect("demo chatbot");
    assert_eq!(helper["chatbot_props"]["purpose"], "Answers questions");
    assert_no_configured_token(&app, &list);
    let path = format!("/api/v1/integrations/chatbots/{}", helper["user_id"]);

    let changed = admin(
        &app,
        "PUT",
        &path,
        Some(
            json!({"purpose": "Deploys & reports", "hide_from_user": true,
                "url": "https://bot.example.org/in"}),
        ),
    )
    .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    // Sent with every setting, as the seed sends it: those not changed as they were.
    let set = crate::helpers::last_request(&app, "SYNO.Chat.Chatbot", "set");
    let sent = |name| crate::helpers::param(&set, name);
    assert_eq!(sent("purpose"), Some("Deploys & reports"));
    assert_eq!(sent("hide_from_user"), Some("true"));
    assert_eq!(sent("url"), Some("https://bot.example.org/in"));
    assert_eq!(
        sent("welcome_note"),
        helper["chatbot_props"]["welcome_note"].as_str()
    );
    let list = admin(&app, "GET", "/api/v1/integrations/chatbots", None).await;
    let helper = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["nickname"] == "helper")
        .cloned()
        .unwrap();
    assert_eq!(helper["chatbot_props"]["purpose"], "Deploys & reports");
    assert_eq!(helper["chatbot_props"]["hide_from_user"], true);
    assert_eq!(helper["url"], "https://bot.example.org/in");

    admin(&app, "PUT", &path, Some(json!({})))
        .await
        .assert_problem(400, "invalid_request");
    admin(&app, "PUT", &path, Some(json!({"url": "not a url"})))
        .await
        .assert_problem(400, "invalid_request");
    assert_eq!(app.sim.count("SYNO.Chat.Chatbot", "set"), 1);
    // User 2 is a person, not a chatbot.
    admin(
        &app,
        "PUT",
        "/api/v1/integrations/chatbots/2",
        Some(json!({"purpose": "x"})),
    )
    .await
    .assert_problem(404, "not_found");
    // A listed chatbot's 117 is Chatbot.set's "permission denied", the account's refusal.
    app.sim.fail_next("SYNO.Chat.Chatbot", Some("set"), 1, 117);
    let refused = admin(&app, "PUT", &path, Some(json!({"purpose": "y"}))).await;
    refused.assert_problem(403, "upstream_permission_denied");
    assert_eq!(refused.body["dsm_code"], 117, "{}", refused.body);
}

#[actix_web::test]
async fn stickers_settings_app_and_misc_pass_dsm_data_through() {
    let app = spawn_app().await;
    let stickers = app.get("/api/v1/stickers").await;
    assert_eq!(stickers.status, 200, "{}", stickers.body);
    assert!(stickers.body["stickers"].is_array());
    let app_info = app.get("/api/v1/app").await;
    assert_eq!(app_info.body["name"], "Chat");
    let misc = app.get("/api/v1/misc").await;
    assert!(misc.body["server_time"].is_u64(), "{}", misc.body);
    let settings = admin(&app, "GET", "/api/v1/admin/settings", None).await;
    assert_eq!(settings.status, 200);
    assert!(settings.body["allow_edit_message"].is_boolean());
    assert!(settings.body.get("success").is_none(), "not the envelope");

    app.sim.fail_next("SYNO.Chat.Misc", None, 1, 103);
    app.get("/api/v1/misc")
        .await
        .assert_problem(501, "upstream_api_unsupported");
}

#[actix_web::test]
async fn a_configured_webhook_sends_text_intact() {
    let app = spawn_app().await;
    let sent = app
        .post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": TRICKY_TEXT, "file_url": "https://files.example.org/r%201.pdf?a=1&b=2"}),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body["accepted"], true);
    assert_eq!(sent.body["webhook"], WEBHOOK_TOKEN_NAME);
    assert_no_configured_token(&app, &sent);

    let payload = last_payload(&app, "incoming");
    assert_eq!(payload["text"], TRICKY_TEXT);
    assert_eq!(
        payload["file_url"],
        "https://files.example.org/r%201.pdf?a=1&b=2"
    );
    let posts = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(posts.body["items"][0]["message"], TRICKY_TEXT);

    for body in [
        json!({"text": "  "}),
        json!({"text": "x", "file_url": "file:///etc/passwd"}),
        json!({"text": "x", "file_url": "relative/path"}),
    ] {
        app.post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            body,
        )
        .await
        .assert_problem(400, "invalid_request");
    }
    app.post("/api/v1/webhooks/incoming/nobody", json!({"text": "x"}))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.sim.count(EXTERNAL, "incoming"), 1);
}

/// README "Errors": a file DSM refuses as over its size limit (External 409) is the caller's
/// to fix, 422 `file_too_large` with DSM's code, not a gateway failure; and it is not sent
/// again.
#[actix_web::test]
async fn a_file_dsm_finds_too_large_is_422_file_too_large() {
    let app = spawn_app().await;
    let before = app.sim.count(EXTERNAL, "incoming");
    app.sim.fail_next(EXTERNAL, Some("incoming"), 1, 409);
    let refused = app
        .post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": "the nightly dump", "file_url": "https://files.example.org/dump.tar"}),
        )
        .await;
    assert_eq!(
        refused.assert_problem(422, "file_too_large")["dsm_code"],
        409,
        "{}",
        refused.body
    );
    assert_eq!(app.sim.count(EXTERNAL, "incoming"), before + 1);
}

#[actix_web::test]
async fn configured_webhooks_are_listed_with_masked_urls() {
    let app = spawn_app().await;
    let list = app.get("/api/v1/webhooks/incoming").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only webhook-kind tokens: {}", list.body);
    assert_eq!(items[0]["name"], WEBHOOK_TOKEN_NAME);
    assert_eq!(
        items[0]["url"],
        format!("{}/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}", app.base)
    );
    let upstream = items[0]["upstream_url"].as_str().unwrap();
    assert!(upstream.ends_with(
        "/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2&token=%22****%22"
    ));
    assert_no_configured_token(&app, &list);
    assert!(
        app.sim
            .requests()
            .iter()
            .all(|r| r.api.as_deref() != Some(EXTERNAL))
    );
}

#[actix_web::test]
async fn a_token_of_the_wrong_kind_is_refused_before_dsm() {
    let app = spawn_app().await;
    let text = json!({"text": "x", "user_ids": [2]});
    let answers = [
        app.post(
            &format!("/api/v1/webhooks/incoming/{BOT_TOKEN_NAME}"),
            json!({"text": "x"}),
        )
        .await,
        app.post(&format!("/api/v1/bots/{WEBHOOK_TOKEN_NAME}/messages"), text)
            .await,
        app.get(&format!("/api/v1/bots/{WEBHOOK_TOKEN_NAME}/channels"))
            .await,
        app.get(&format!("/api/v1/bots/{WEBHOOK_TOKEN_NAME}/users"))
            .await,
        app.get(&format!(
            "/api/v1/bots/{WEBHOOK_TOKEN_NAME}/channels/1/posts"
        ))
        .await,
        app.get(&format!("/api/v1/bots/{WEBHOOK_TOKEN_NAME}/posts/5/file"))
            .await,
    ];
    for answer in &answers {
        let detail = answer.assert_problem(400, "invalid_request")["detail"]
            .as_str()
            .unwrap();
        assert!(detail.contains("token"), "{detail}");
        assert_no_configured_token(&app, answer);
    }
    app.get("/api/v1/bots/nobody/channels")
        .await
        .assert_problem(404, "not_found");
    assert!(
        app.sim
            .requests()
            .iter()
            .all(|r| r.api.as_deref() != Some(EXTERNAL)),
        "no External call"
    );
}

#[actix_web::test]
async fn external_errors_map_to_http() {
    let app = spawn_app().await;
    let path = format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}");
    let body = json!({"text": "x"});

    app.sim.fail_next(EXTERNAL, Some("incoming"), 1, 411);
    let limited = app.post(&path, body.clone()).await;
    limited.assert_problem(429, "upstream_rate_limited");
    assert!(limited.header("retry-after").is_some());

    app.sim.fail_next(EXTERNAL, Some("incoming"), 1, 410);
    app.post(&path, body.clone())
        .await
        .assert_problem(413, "message_too_long");

    app.sim.fail_next(EXTERNAL, Some("incoming"), 1, 404);
    let rejected = app.post(&path, body.clone()).await;
    rejected.assert_problem(502, "upstream_token_rejected");
    assert_eq!(rejected.body["dsm_code"], 404);
    assert_no_configured_token(&app, &rejected);

    app.sim.fail_next(EXTERNAL, Some("incoming"), 1, 117);
    app.post(&path, body.clone())
        .await
        .assert_problem(400, "upstream_rejected_input");

    app.sim.fail_next(EXTERNAL, Some("chatbot"), 1, 411);
    app.post(
        &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
        json!({"text": "x", "user_ids": [2]}),
    )
    .await
    .assert_problem(429, "upstream_rate_limited");

    app.sim.fail_next(EXTERNAL, Some("channel_list"), 1, 404);
    app.get(&format!("/api/v1/bots/{BOT_TOKEN_NAME}/channels"))
        .await
        .assert_problem(502, "upstream_token_rejected");
}

#[actix_web::test]
async fn a_caller_token_is_normalised_checked_and_its_rejection_is_the_callers() {
    let app = spawn_app().await;
    let token = app.sim.demo_webhook_token();
    let sent = send_with_header(
        &app,
        Some(&format!("%22{token}%22")),
        json!({"text": TRICKY_TEXT}),
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(sent.body.get("webhook").is_none());
    assert_eq!(last_payload(&app, "incoming")["text"], TRICKY_TEXT);
    let quoted = send_with_header(
        &app,
        Some(&format!("\"{token}\"")),
        json!({"text": "again"}),
    )
    .await;
    assert_eq!(quoted.status, 200, "{}", quoted.body);
    let sent_token = last_params(&app, EXTERNAL, "incoming");
    assert_eq!(param(&sent_token, "token"), Some(token.as_str()));

    for bad in [None, Some("short"), Some(&*format!("{}!", &token[..63]))] {
        let answer = send_with_header(&app, bad, json!({"text": "x"})).await;
        let detail = answer.assert_problem(400, "invalid_request")["detail"]
            .as_str()
            .unwrap();
        assert!(detail.contains("X-Chat-Token"), "{detail}");
    }
    assert_eq!(app.sim.count(EXTERNAL, "incoming"), 2);

    let unknown = send_with_header(&app, Some(&"Z".repeat(64)), json!({"text": "x"})).await;
    unknown.assert_problem(403, "chat_token_rejected");
    assert!(!unknown.body.to_string().contains(&"Z".repeat(64)));
}

#[actix_web::test]
async fn a_bot_message_reports_posts_per_user() {
    let app = spawn_app().await;
    let path = format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages");
    let sent = app
        .post(
            &path,
            json!({"text": TRICKY_TEXT, "user_ids": [2, 424242, 2]}),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_no_configured_token(&app, &sent);
    let items = sent.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", sent.body);
    assert_eq!(items[0]["user_id"], 2);
    assert!(items[0]["post_id"].as_u64().unwrap() > 1 << 32);
    assert_eq!(sent.body["failed"][0]["user_id"], 424242);
    assert!(sent.body["failed"][0]["reason"].is_string());
    let payload = last_payload(&app, "chatbot");
    assert_eq!(payload["text"], TRICKY_TEXT);
    assert_eq!(payload["user_ids"], json!([2, 424242]));

    // Delivered to nobody: a failure, not a success with an empty list; users DSM does not know
    // are missing resources (404), as schemathesis expects of ids that name nothing.
    let nobody = app
        .post(&path, json!({"text": "x", "user_ids": [424242, 424243]}))
        .await;
    nobody.assert_problem(404, "not_found");
    let detail = nobody.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("user 424242") && detail.contains("user 424243"),
        "{detail}"
    );
    assert_eq!(app.sim.count(EXTERNAL, "chatbot"), 2);

    for body in [
        json!({"text": "x", "user_ids": []}),
        json!({"text": "x"}),
        json!({"text": "x", "user_ids": [0]}),
        json!({"text": "", "user_ids": [2]}),
        json!({"text": "x", "user_ids": [2], "file_url": "nope"}),
    ] {
        app.post(&path, body)
            .await
            .assert_problem(400, "invalid_request");
    }
    assert_eq!(app.sim.count(EXTERNAL, "chatbot"), 2);
}

#[actix_web::test]
async fn a_bot_reads_channels_users_posts_and_files() {
    let app = spawn_app().await;
    let bot = format!("/api/v1/bots/{BOT_TOKEN_NAME}");
    let channels = app.get(&format!("{bot}/channels")).await;
    assert_eq!(channels.status, 200, "{}", channels.body);
    let channel_ids: Vec<u64> = channels.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_id"].as_u64().unwrap())
        .collect();
    assert_eq!(channel_ids, vec![1, 2]);
    let users = app.get(&format!("{bot}/users")).await;
    assert!(
        users.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "alice")
    );
    assert_no_configured_token(&app, &users);

    // A post with a file, through the webhook, then read back as the bot.
    app.post(
        &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
        json!({"text": "report", "file_url": "https://files.example.org/report.pdf"}),
    )
    .await;
    let newest = app
        .get(&format!("{bot}/channels/1/posts?prev_count=3"))
        .await;
    assert_eq!(newest.status, 200, "{}", newest.body);
    let posts = newest.body["items"].as_array().unwrap();
    assert_eq!(posts.len(), 3);
    let report = posts
        .iter()
        .find(|p| p["message"] == "report")
        .expect("the newest post is among the last 3");
    let report_id = report["post_id"].as_u64().unwrap();
    let params = last_params(&app, EXTERNAL, "post_list");
    assert_eq!(param(&params, "prev_count"), Some("3"));
    assert_eq!(param(&params, "next_count"), Some("0"));
    // Without an anchor, as the library and LS-OBS ask for the newest posts.
    assert_eq!(param(&params, "post_id"), None);
    app.sim.set_post_list_anchor_only(true);
    let as_v8 = app
        .get(&format!("{bot}/channels/1/posts?prev_count=3"))
        .await;
    assert_eq!(as_v8.body["items"], newest.body["items"]);
    app.sim.set_post_list_anchor_only(false);

    let around = app
        .get(&format!(
            "{bot}/channels/1/posts?post_id={report_id}&prev_count=1&next_count=5"
        ))
        .await;
    assert_eq!(around.body["items"].as_array().unwrap().len(), 2);

    let mut file = app
        .http
        .get(format!("{}{bot}/posts/{report_id}/file", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.headers().get("content-type").unwrap(),
        "application/octet-stream"
    );
    assert!(file.headers().get("content-disposition").is_some());
    let _ = file.body().await.unwrap();

    let without_file = posts.iter().find(|p| p["message"] != "report").unwrap()["post_id"]
        .as_u64()
        .unwrap();
    app.get(&format!("{bot}/posts/{without_file}/file"))
        .await
        .assert_problem(404, "not_found");
    // Channel 3 (ops) does not have the bot.
    let outsider = app.get(&format!("{bot}/channels/3/posts")).await;
    let detail = outsider.assert_problem(403, "upstream_permission_denied")["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("not a member"), "{detail}");
    for query in ["prev_count=201", "post_id=0", "next_count=-1", "limit=3"] {
        app.get(&format!("{bot}/channels/1/posts?{query}"))
            .await
            .assert_problem(400, "invalid_request");
    }
}

/// Every route with the smallest scope it needs.
const SCOPED_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/integrations", "admin"),
    ("GET", "/api/v1/integrations/incoming-webhooks", "admin"),
    ("POST", "/api/v1/integrations/incoming-webhooks", "admin"),
    (
        "DELETE",
        "/api/v1/integrations/incoming-webhooks/9",
        "admin",
    ),
    ("GET", "/api/v1/integrations/outgoing-webhooks", "admin"),
    ("POST", "/api/v1/integrations/outgoing-webhooks", "admin"),
    (
        "DELETE",
        "/api/v1/integrations/outgoing-webhooks/9",
        "admin",
    ),
    ("GET", "/api/v1/integrations/slash-commands", "admin"),
    ("POST", "/api/v1/integrations/slash-commands", "admin"),
    ("DELETE", "/api/v1/integrations/slash-commands/9", "admin"),
    ("GET", "/api/v1/integrations/builtin-webhooks", "admin"),
    ("GET", "/api/v1/integrations/broadcast-webhooks", "admin"),
    ("PUT", "/api/v1/integrations/bots/9", "admin"),
    ("DELETE", "/api/v1/integrations/bots/9", "admin"),
    ("GET", "/api/v1/integrations/chatbots", "admin"),
    ("PUT", "/api/v1/integrations/chatbots/9", "admin"),
    ("GET", "/api/v1/admin/settings", "admin"),
    ("POST", "/api/v1/webhooks/incoming/alerts", "write"),
    ("POST", "/api/v1/webhooks/incoming", "write"),
    ("POST", "/api/v1/bots/helper/messages", "write"),
    ("GET", "/api/v1/webhooks/incoming", "read"),
    ("GET", "/api/v1/bots/helper/channels", "read"),
    ("GET", "/api/v1/bots/helper/users", "read"),
    ("GET", "/api/v1/bots/helper/channels/1/posts", "read"),
    ("GET", "/api/v1/bots/helper/posts/5/file", "read"),
    ("GET", "/api/v1/stickers", "read"),
    ("GET", "/api/v1/app", "read"),
    ("GET", "/api/v1/misc", "read"),
];

#[actix_web::test]
async fn every_route_demands_its_scope() {
    let app = spawn_app().await;
    let body = || Some(json!({"text": "x"}));
    for &(method, path, scope) in SCOPED_ROUTES {
        let with_body = matches!(method, "POST" | "PUT");
        app.call(method, path, None, with_body.then(body).flatten())
            .await
            .assert_problem(401, "unauthorized");
        let too_weak: &[&str] = match scope {
            "admin" => &[READ_KEY, WRITE_KEY],
            "write" => &[READ_KEY],
            _ => &[],
        };
        for key in too_weak {
            app.call(method, path, Some(key), with_body.then(body).flatten())
                .await
                .assert_problem(403, "insufficient_scope");
        }
    }
    assert!(
        app.sim
            .requests()
            .iter()
            .all(|r| r.api.as_deref() == Some("SYNO.API.Info")
                || r.api.as_deref() == Some("SYNO.API.Auth")),
        "no Chat call without the scope"
    );
}

/// The configured tokens, each looked for among DSM's integrations: the mix-ups users make (a
/// chatbot's token configured as a webhook's, a webhook deleted since) are named, and no token
/// is shown.
#[actix_web::test]
async fn configured_tokens_are_checked_against_dsms_integrations() {
    use secrecy::SecretString;
    use syno_chat_gateway::config::{TokenKind, TokenSettings};
    let app = crate::helpers::spawn_app_with_sim(
        syno_chat_gateway::sim::SimConfig::default(),
        |settings, sim| {
            for (name, token) in [("mixed-up", sim.demo_bot_token()), ("gone", "g".repeat(64))] {
                settings.tokens.insert(
                    name.to_owned(),
                    TokenSettings {
                        token: Some(SecretString::from(token)),
                        token_file: None,
                        kind: TokenKind::Webhook,
                    },
                );
            }
        },
    )
    .await;
    let checked = admin(&app, "GET", "/api/v1/integrations/tokens", None).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert_eq!(
        checked.body,
        json!({"items": [
            {"name": WEBHOOK_TOKEN_NAME, "kind": "webhook", "state": "ok"},
            {"name": "gone", "kind": "webhook", "state": "not_found"},
            {"name": BOT_TOKEN_NAME, "kind": "bot", "state": "ok"},
            {"name": "mixed-up", "kind": "webhook", "state": "wrong_kind", "found_as": "chatbot"},
        ]})
    );
    assert_no_configured_token(&app, &checked);
    assert!(
        app.sim
            .requests()
            .iter()
            .all(|r| r.api.as_deref() != Some(EXTERNAL)),
        "nothing is sent with the tokens"
    );
    // A Chat without slash commands (103, asked again after reloading the API list) has none
    // of their tokens; an account that may not list integrations gets DSM's refusal.
    app.sim
        .fail_next("SYNO.Chat.Webhook.Slash", Some("list"), 2, 103);
    let without_slash = admin(&app, "GET", "/api/v1/integrations/tokens", None).await;
    assert_eq!(without_slash.body, checked.body);
    app.sim
        .fail_next("SYNO.Chat.Webhook.Incoming", Some("list"), 1, 105);
    admin(&app, "GET", "/api/v1/integrations/tokens", None)
        .await
        .assert_problem(403, "upstream_permission_denied");
    app.call("GET", "/api/v1/integrations/tokens", Some(WRITE_KEY), None)
        .await
        .assert_problem(403, "insufficient_scope");
}
