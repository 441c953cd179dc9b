//! DSM requests where the protocol reference leaves a point open, each taking the side a
//! source reports working against a NAS: a bot's newest posts asked without an anchor, webhooks
//! deleted as the bots they are, a refused channel `type` left out, and reads answered without
//! `data` taken as empty.

use serde_json::json;

use crate::helpers::{BOT_TOKEN_NAME, last_request, param, spawn_app};
use crate::surface_integrations::{admin, ids};

const EXTERNAL: &str = "SYNO.Chat.External";
const NAMED: &str = "SYNO.Chat.Channel.Named";

/// Without an anchor, a bot's read of the newest posts leaves `post_id` out (the library:
/// "omit for newest"), instead of ACE's made-up anchor, which only session `Post.list` v8 saw.
#[actix_web::test]
async fn a_bots_newest_posts_are_asked_without_an_anchor() {
    let app = spawn_app().await;
    let path = format!("/api/v1/bots/{BOT_TOKEN_NAME}/channels/1/posts?prev_count=2");
    let newest = app.get(&path).await;
    assert_eq!(newest.status, 200, "{}", newest.body);
    assert_eq!(newest.body["items"].as_array().unwrap().len(), 2);
    let asked = last_request(&app, EXTERNAL, "post_list");
    assert_eq!(param(&asked, "prev_count"), Some("2"));
    assert_eq!(param(&asked, "next_count"), Some("0"));
    assert_eq!(param(&asked, "post_id"), None, "{:?}", asked.params);
    // A NAS whose session Post.list pages as ACE's v8 still answers External the newest.
    app.sim.set_post_list_anchor_only(true);
    assert_eq!(app.get(&path).await.body["items"], newest.body["items"]);
    app.sim.set_post_list_anchor_only(false);
    // With an anchor, it is sent.
    let oldest = newest.body["items"][1]["post_id"].as_u64().unwrap();
    let around = app
        .get(&format!(
            "/api/v1/bots/{BOT_TOKEN_NAME}/channels/1/posts?post_id={oldest}&next_count=1"
        ))
        .await;
    assert_eq!(around.status, 200, "{}", around.body);
    let asked = last_request(&app, EXTERNAL, "post_list");
    assert_eq!(param(&asked, "post_id"), Some(&*oldest.to_string()));
}

/// Incoming and outgoing webhooks are deleted with `Bot.delete {user_id,
/// real_delete=true}` (n8n, against a NAS), once their kind's list shows the bot; slash
/// commands keep the library's `Webhook.Slash.delete {id}`.
#[actix_web::test]
async fn webhooks_are_deleted_as_the_bots_they_are() {
    let app = spawn_app().await;
    let incoming = admin(
        &app,
        "POST",
        "/api/v1/integrations/incoming-webhooks",
        Some(json!({"name": "in", "channel_id": 1})),
    )
    .await;
    assert_eq!(incoming.status, 201, "{}", incoming.body);
    let incoming_id = incoming.body["user_id"].as_u64().unwrap();
    let outgoing = admin(
        &app,
        "POST",
        "/api/v1/integrations/outgoing-webhooks",
        Some(json!({"name": "out", "channel_id": 2, "url": "https://ci.example.org/out"})),
    )
    .await;
    assert_eq!(outgoing.status, 201, "{}", outgoing.body);
    let outgoing_id = outgoing.body["user_id"].as_u64().unwrap();

    // An outgoing webhook's id through the incoming route: not an incoming webhook, so
    // nothing is deleted and nothing is sent.
    let wrong = admin(
        &app,
        "DELETE",
        &format!("/api/v1/integrations/incoming-webhooks/{outgoing_id}"),
        None,
    )
    .await;
    wrong.assert_problem(404, "not_found");
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "delete"), 0);
    let listed = admin(&app, "GET", "/api/v1/integrations/outgoing-webhooks", None).await;
    assert!(ids(&listed).contains(&outgoing_id), "{}", listed.body);

    for (route, id) in [
        ("incoming-webhooks", incoming_id),
        ("outgoing-webhooks", outgoing_id),
    ] {
        let path = format!("/api/v1/integrations/{route}/{id}");
        let deleted = admin(&app, "DELETE", &path, None).await;
        assert_eq!(deleted.status, 204, "{route}: {}", deleted.body);
        let bot_delete = last_request(&app, "SYNO.Chat.Bot", "delete");
        assert_eq!(param(&bot_delete, "user_id"), Some(&*id.to_string()));
        assert_eq!(param(&bot_delete, "real_delete"), Some("true"));
        let list = admin(&app, "GET", &format!("/api/v1/integrations/{route}"), None).await;
        assert!(!ids(&list).contains(&id), "{route}: {}", list.body);
        // Gone: a 404, without another delete.
        let again = admin(&app, "DELETE", &path, None).await;
        assert!(again.assert_problem(404, "not_found")["dsm_code"].is_null());
    }
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "delete"), 2);
    for api in ["SYNO.Chat.Webhook.Incoming", "SYNO.Chat.Webhook.Outgoing"] {
        assert_eq!(app.sim.count(api, "delete"), 0, "{api}");
    }

    let slash = admin(
        &app,
        "POST",
        "/api/v1/integrations/slash-commands",
        Some(json!({"name": "deploy", "command": "/deploy", "url": "https://ci.example.org/s"})),
    )
    .await;
    assert_eq!(slash.status, 201, "{}", slash.body);
    let slash_id = slash.body["user_id"].as_u64().unwrap();
    let deleted = admin(
        &app,
        "DELETE",
        &format!("/api/v1/integrations/slash-commands/{slash_id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let slash_delete = last_request(&app, "SYNO.Chat.Webhook.Slash", "delete");
    assert_eq!(param(&slash_delete, "id"), Some(&*slash_id.to_string()));
    assert_eq!(app.sim.count("SYNO.Chat.Bot", "delete"), 2);
}

/// A NAS that refuses `type` on `Channel.Named.create` (407, one n8n note) still makes a
/// private channel: asked once more without `type`. A public one is not asked again.
#[actix_web::test]
async fn a_refused_channel_type_is_left_out_for_a_private_channel() {
    let app = spawn_app().await;
    app.sim.set_named_create_refuses_type(true);
    let created = app
        .post("/api/v1/channels", json!({"name": "quiet-room"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["type"], "private");
    assert_eq!(created.body["name"], "quiet-room");
    let creates: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.api.as_deref() == Some(NAMED) && r.method.as_deref() == Some("create"))
        .collect();
    assert_eq!(creates.len(), 2);
    assert!(param(&creates[0], "type").is_some());
    assert_eq!(creates[0].error_code, Some(407));
    assert_eq!(param(&creates[1], "type"), None);
    assert_eq!(creates[1].error_code, None);
    let listed = app.get("/api/v1/channels").await;
    let named: Vec<_> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "quiet-room")
        .collect();
    assert_eq!(named.len(), 1, "one channel: {}", listed.body);

    let public = app
        .post(
            "/api/v1/channels",
            json!({"name": "open-room", "type": "public"}),
        )
        .await;
    assert_eq!(
        public.assert_problem(400, "upstream_rejected_input")["dsm_code"],
        407
    );
    assert_eq!(
        app.sim.count(NAMED, "create"),
        3,
        "no second try for public"
    );

    app.sim.set_named_create_refuses_type(false);
    let typed = app
        .post(
            "/api/v1/channels",
            json!({"name": "open-room", "type": "public"}),
        )
        .await;
    assert_eq!(typed.status, 201, "{}", typed.body);
    assert_eq!(typed.body["type"], "public");
}

/// Reads whose answer is an object or a list with an empty form take `{"success":true}`
/// without `data` as empty; a read whose data is essential still refuses it.
#[actix_web::test]
async fn undocumented_reads_answered_without_data_are_empty() {
    let app = spawn_app().await;
    let objects = [
        (
            "/api/v1/channels/1/preferences",
            "SYNO.Chat.Channel.Preference",
            "get",
        ),
        ("/api/v1/users/1/status", "SYNO.Chat.User.Status", "get"),
        ("/api/v1/me/preferences", "SYNO.Chat.User.Preference", "get"),
        ("/api/v1/stickers", "SYNO.Chat.Sticker", "list"),
        ("/api/v1/admin/settings", "SYNO.Chat.Admin.Setting", "get"),
        ("/api/v1/app", "SYNO.Chat.App", "get"),
        ("/api/v1/misc", "SYNO.Chat.Misc", "get"),
        ("/api/v1/integrations", EXTERNAL, "list"),
        (
            "/api/v1/integrations/builtin-webhooks",
            "SYNO.Chat.Webhook.BuiltIn",
            "list",
        ),
        (
            "/api/v1/integrations/broadcast-webhooks",
            "SYNO.Chat.Webhook.Broadcast",
            "list",
        ),
    ];
    let lists = [
        (
            "/api/v1/channels/1/reminders",
            "SYNO.Chat.Post.Reminder",
            "list",
        ),
        (
            "/api/v1/channels/1/scheduled-posts",
            "SYNO.Chat.Post.Schedule",
            "list",
        ),
        (
            "/api/v1/integrations/incoming-webhooks",
            "SYNO.Chat.Webhook.Incoming",
            "list",
        ),
        (
            "/api/v1/integrations/outgoing-webhooks",
            "SYNO.Chat.Webhook.Outgoing",
            "list",
        ),
        (
            "/api/v1/integrations/slash-commands",
            "SYNO.Chat.Webhook.Slash",
            "list",
        ),
        ("/api/v1/integrations/chatbots", "SYNO.Chat.Chatbot", "list"),
    ];
    for (path, api, method) in objects.iter().chain(&lists) {
        app.sim.answer_without_data_next(api, Some(method), 1);
        let answer = admin(&app, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(
            app.sim.count(api, method),
            1,
            "{path}: asked DSM once (not served from a cache)"
        );
        let empty = match answer.body.get("items") {
            Some(items) => items == &json!([]),
            None => answer.body.as_object().is_some_and(|o| {
                o.iter()
                    .all(|(key, value)| key.ends_with("_id") || value.is_null())
            }),
        };
        assert!(empty, "{path}: {}", answer.body);
    }
    // A post's reminder: no data, no reminder.
    app.sim
        .answer_without_data_next("SYNO.Chat.Post.Reminder", Some("get"), 1);
    let posts = app.get("/api/v1/channels/1/posts?limit=1").await;
    let post_id = posts.body["items"][0]["post_id"].as_u64().unwrap();
    let reminder = admin(
        &app,
        "GET",
        &format!("/api/v1/posts/{post_id}/reminder"),
        None,
    )
    .await;
    assert!(
        reminder
            .assert_problem(404, "not_found")
            .get("dsm_code")
            .is_none()
    );

    // Essential data: a bot's channel list without `data` is not an empty list.
    app.sim
        .answer_without_data_next(EXTERNAL, Some("channel_list"), 1);
    let channels = app
        .get(&format!("/api/v1/bots/{BOT_TOKEN_NAME}/channels"))
        .await;
    channels.assert_problem(502, "upstream_invalid_response");
    // A scheduled post's creation needs its id.
    app.sim
        .answer_without_data_next("SYNO.Chat.Post.Schedule", Some("create"), 1);
    let send_at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000) as u64;
    let scheduled = app
        .post(
            "/api/v1/channels/1/scheduled-posts",
            json!({"message": "later", "send_at": send_at}),
        )
        .await;
    scheduled.assert_problem(502, "upstream_invalid_response");
}
