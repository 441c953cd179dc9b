//! Channel management, membership, read markers and preferences; user status, avatars,
//! direct messages and the gateway account's preferences.
//!
//! Simulator demo data: the gateway's account `admin` is user 1; alice 2, bob 3, carol 4.
//! Channels: 1 general (public, everyone), 2 random (public: 1, 2, 3), 3 ops (private: 1, 4),
//! 4 the direct-message channel of admin and alice (demo bots are members of some channels).

use serde_json::{Value, json};

use crate::helpers::{Answer, READ_KEY, TestApp, WRITE_KEY, last_request, param, spawn_app};

async fn channel(app: &TestApp, channel_id: u64) -> Value {
    let answer = app.get(&format!("/api/v1/channels/{channel_id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

fn members(channel: &Value) -> Vec<u64> {
    channel["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_u64().unwrap())
        .collect()
}

fn assert_detail_names(answer: &Answer, status: u16, code: &str, field: &str) {
    let detail = answer.assert_problem(status, code)["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains(field), "{detail:?} should name {field}");
}

#[actix_web::test]
async fn a_created_channel_is_joined_listed_and_has_its_members() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/v1/channels",
            json!({"name": "release-team", "type": "public", "members": [3, 2, 3]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["channel_id"].as_u64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("{}/api/v1/channels/{id}", app.base).as_str())
    );
    assert_eq!(created.body["name"], "release-team");
    assert_eq!(created.body["type"], "public");
    let mut listed_members = members(&created.body);
    listed_members.sort_unstable();
    assert_eq!(listed_members, [1, 2, 3]);

    let create = last_request(&app, "SYNO.Chat.Channel.Named", "create");
    assert_eq!(create.version.as_deref(), Some("1"));
    // Channel.Named JSON-decodes its values (requestFormat JSON): text goes JSON-encoded.
    assert_eq!(param(&create, "name"), Some("\"release-team\""));
    assert_eq!(param(&create, "type"), Some("\"public\""));
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "join"), 1);
    let invite = last_request(&app, "SYNO.Chat.Channel.Named", "invite");
    assert_eq!(param(&invite, "channel_id"), Some(id.to_string().as_str()));
    assert_eq!(param(&invite, "user_ids"), Some("[2,3]"));
    assert_eq!(param(&invite, "channel_key_encs"), Some("[]"));

    assert_eq!(channel(&app, id).await["name"], "release-team");

    let private = app.post("/api/v1/channels", json!({"name": "quiet"})).await;
    assert_eq!(private.status, 201, "{}", private.body);
    assert_eq!(private.body["type"], "private");
    assert_eq!(members(&private.body), [1]);
    assert_eq!(
        app.sim.count("SYNO.Chat.Channel.Named", "invite"),
        1,
        "no invite without members"
    );
}

#[actix_web::test]
async fn channel_creation_input_is_checked() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "  "}), "name"),
        (json!({"name": "x", "type": "secret"}), "type"),
        (json!({"name": "x", "members": [0]}), "user_id"),
        (json!({"name": "x", "purpose": "y"}), "purpose"),
        (json!({"type": "public"}), "name"),
    ] {
        let answer = app.post("/api/v1/channels", body).await;
        assert_detail_names(&answer, 400, "invalid_request", field);
    }
    // Well-formed ids of users that do not exist: 422, the request cannot be carried out.
    let ghost = app
        .post(
            "/api/v1/channels",
            json!({"name": "x", "members": [2, 4242]}),
        )
        .await;
    assert_detail_names(&ghost, 422, "unprocessable", "4242");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "create"), 0);

    // DSM answers 152 for names with spaces: refused before DSM, naming the field.
    let spaced = app
        .post("/api/v1/channels", json!({"name": "team alpha"}))
        .await;
    assert_detail_names(&spaced, 400, "invalid_request", "name");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "create"), 0);
    // Should DSM refuse a name for another reason (152), the 400 still names the field.
    app.sim
        .fail_next("SYNO.Chat.Channel.Named", Some("create"), 1, 152);
    let refused = app
        .post("/api/v1/channels", json!({"name": "team-alpha"}))
        .await;
    assert_detail_names(&refused, 400, "upstream_rejected_input", "name");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "join"), 0);
}

#[actix_web::test]
async fn channel_creation_refused_by_dsm_is_a_403() {
    let app = spawn_app().await;
    app.sim
        .fail_next("SYNO.Chat.Channel.Named", Some("create"), 1, 105);
    let answer = app.post("/api/v1/channels", json!({"name": "nope"})).await;
    assert_eq!(
        answer.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
}

#[actix_web::test]
async fn a_closed_channel_leaves_the_list() {
    let app = spawn_app().await;
    let closed = app
        .call("DELETE", "/api/v1/channels/2", Some(WRITE_KEY), None)
        .await;
    assert_eq!(closed.status, 204, "{}", closed.body);
    let close = last_request(&app, "SYNO.Chat.Channel", "close");
    assert_eq!(close.version.as_deref(), Some("4"));
    assert_eq!(param(&close, "channel_id"), Some("2"));
    let list = app.get("/api/v1/channels").await;
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["channel_id"] != 2),
        "{}",
        list.body
    );

    let unknown = app
        .call("DELETE", "/api/v1/channels/999", Some(WRITE_KEY), None)
        .await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    let bad = app
        .call("DELETE", "/api/v1/channels/abc", Some(WRITE_KEY), None)
        .await;
    assert_detail_names(&bad, 400, "invalid_request", "channel_id");
}

#[actix_web::test]
async fn archiving_uses_version_2_and_maps_refusals() {
    let app = spawn_app().await;
    let archived = app.post("/api/v1/channels/2/archive", Value::Null).await;
    assert_eq!(archived.status, 204, "{}", archived.body);
    let archive = last_request(&app, "SYNO.Chat.Channel", "archive");
    assert_eq!(archive.version.as_deref(), Some("2"));
    assert_eq!(param(&archive, "channel_id"), Some("2"));

    app.sim
        .fail_next("SYNO.Chat.Channel", Some("archive"), 1, 105);
    let refused = app.post("/api/v1/channels/3/archive", Value::Null).await;
    assert_eq!(
        refused.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
    let unknown = app.post("/api/v1/channels/999/archive", Value::Null).await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.post("/api/v1/channels/0/archive", Value::Null)
        .await
        .assert_problem(400, "invalid_request");
}

#[actix_web::test]
async fn invited_users_become_members() {
    let app = spawn_app().await;
    assert_eq!(members(&channel(&app, 3).await), [1, 4]);
    let invited = app
        .post("/api/v1/channels/3/members", json!({"user_ids": [3, 2]}))
        .await;
    assert_eq!(invited.status, 204, "{}", invited.body);
    let invite = last_request(&app, "SYNO.Chat.Channel.Named", "invite");
    assert_eq!(param(&invite, "user_ids"), Some("[2,3]"));
    assert_eq!(param(&invite, "channel_key_encs"), Some("[]"));
    let mut now = members(&channel(&app, 3).await);
    now.sort_unstable();
    assert_eq!(now, [1, 2, 3, 4], "the cached list was refreshed");

    for (body, field) in [
        (json!({"user_ids": []}), "user_ids"),
        (json!({"user_ids": [0]}), "user_id"),
        (json!({}), "user_ids"),
    ] {
        let answer = app.post("/api/v1/channels/3/members", body).await;
        assert_detail_names(&answer, 400, "invalid_request", field);
    }
    let ghost = app
        .post("/api/v1/channels/3/members", json!({"user_ids": [2, 4242]}))
        .await;
    assert_detail_names(&ghost, 422, "unprocessable", "4242");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "invite"), 1);

    let unknown = app
        .post("/api/v1/channels/999/members", json!({"user_ids": [2]}))
        .await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn the_gateway_leaves_and_joins_channels() {
    let app = spawn_app().await;
    let path = "/api/v1/channels/2/membership";
    let left = app.call("DELETE", path, Some(WRITE_KEY), None).await;
    assert_eq!(left.status, 204, "{}", left.body);
    assert_eq!(
        param(
            &last_request(&app, "SYNO.Chat.Channel.Named", "disjoin"),
            "channel_id"
        ),
        Some("2")
    );
    assert!(!members(&channel(&app, 2).await).contains(&1));
    let again = app.call("DELETE", path, Some(WRITE_KEY), None).await;
    assert_detail_names(&again, 404, "not_found", "not a member");

    let joined = app.call("PUT", path, Some(WRITE_KEY), None).await;
    assert_eq!(joined.status, 204, "{}", joined.body);
    assert!(members(&channel(&app, 2).await).contains(&1));
    // Joining again is fine: DSM's 117 "already a member" is checked against the list.
    let rejoined = app.call("PUT", path, Some(WRITE_KEY), None).await;
    assert_eq!(rejoined.status, 204, "{}", rejoined.body);
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "join"), 2);

    let unknown = app
        .call(
            "PUT",
            "/api/v1/channels/999/membership",
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.call(
        "DELETE",
        "/api/v1/channels/999/membership",
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    app.sim
        .fail_next("SYNO.Chat.Channel.Named", Some("join"), 1, 105);
    let refused = app
        .call(
            "PUT",
            "/api/v1/channels/3/membership",
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(
        refused.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
}

#[actix_web::test]
async fn leaving_as_the_only_member_needs_force() {
    let app = spawn_app().await;
    let solo = app.post("/api/v1/channels", json!({"name": "solo"})).await;
    let id = solo.body["channel_id"].as_u64().unwrap();
    let path = format!("/api/v1/channels/{id}/membership");

    let refused = app.call("DELETE", &path, Some(WRITE_KEY), None).await;
    assert_detail_names(&refused, 409, "conflict", "force=true");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "disjoin"), 0);
    app.call(
        "DELETE",
        &format!("{path}?force=maybe"),
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(400, "invalid_request");

    let forced = app
        .call(
            "DELETE",
            &format!("{path}?force=true"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(forced.status, 204, "{}", forced.body);
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "disjoin"), 1);

    // A direct-message conversation cannot be left.
    app.call(
        "DELETE",
        "/api/v1/channels/4/membership",
        Some(WRITE_KEY),
        None,
    )
    .await
    .assert_problem(409, "conflict");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Named", "disjoin"), 1);
}

#[actix_web::test]
async fn marking_read_moves_the_read_marker() {
    let app = spawn_app().await;
    let at = 1_764_133_200_000_u64;
    let marked = app
        .post("/api/v1/channels/1/read", json!({"last_view_at": at}))
        .await;
    assert_eq!(marked.status, 204, "{}", marked.body);
    let view = last_request(&app, "SYNO.Chat.Channel", "view");
    assert_eq!(param(&view, "channel_id"), Some("1"));
    assert_eq!(param(&view, "last_view_at"), Some(at.to_string().as_str()));
    assert_eq!(channel(&app, 1).await["last_view_at"], at);

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let now = app.post("/api/v1/channels/1/read", json!({})).await;
    assert_eq!(now.status, 204, "{}", now.body);
    let sent: u64 = param(
        &last_request(&app, "SYNO.Chat.Channel", "view"),
        "last_view_at",
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(
        sent >= before && sent < before + 60_000,
        "now in ms: {sent}"
    );
    let general = channel(&app, 1).await;
    assert_eq!(general["last_view_at"], sent);
    assert_eq!(general["unread"], 0);

    for body in [
        json!({"last_view_at": 1_764_133_200_u64}),
        json!({"last_view_at": "soon"}),
        json!({"last_view_at": -1}),
    ] {
        let answer = app.post("/api/v1/channels/1/read", body).await;
        assert_detail_names(&answer, 400, "invalid_request", "last_view_at");
    }
    assert_eq!(app.sim.count("SYNO.Chat.Channel", "view"), 2);
    let unknown = app.post("/api/v1/channels/999/read", json!({})).await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn channel_preferences_are_dsms_object() {
    let app = spawn_app().await;
    let prefs = app.get("/api/v1/channels/1/preferences").await;
    assert_eq!(prefs.status, 200, "{}", prefs.body);
    assert_eq!(prefs.body["channel_id"], 1);
    assert_eq!(prefs.body["notification"], "all");
    assert!(prefs.body.get("success").is_none(), "no DSM envelope");
    assert_eq!(
        param(
            &last_request(&app, "SYNO.Chat.Channel.Preference", "get"),
            "channel_id"
        ),
        Some("1")
    );
    let unknown = app.get("/api/v1/channels/999/preferences").await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.get("/api/v1/channels/x/preferences")
        .await
        .assert_problem(400, "invalid_request");
}

#[actix_web::test]
async fn user_status_and_own_preferences_are_dsms_objects() {
    let app = spawn_app().await;
    let status = app.get("/api/v1/users/1/status").await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["user_id"], 1);
    assert_eq!(status.body["status"], "online", "the gateway is logged in");
    assert_eq!(
        app.get("/api/v1/users/3/status").await.body["status"],
        "offline"
    );
    assert_eq!(
        param(
            &last_request(&app, "SYNO.Chat.User.Status", "get"),
            "user_id"
        ),
        Some("3")
    );
    let unknown = app.get("/api/v1/users/999/status").await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.get("/api/v1/users/0/status")
        .await
        .assert_problem(400, "invalid_request");

    let prefs = app.get("/api/v1/me/preferences").await;
    assert_eq!(prefs.status, 200, "{}", prefs.body);
    assert_eq!(prefs.body["timezone"], "UTC");
    assert!(prefs.body.get("data").is_none(), "no DSM envelope");
    app.sim
        .fail_next("SYNO.Chat.User.Preference", Some("get"), 1, 105);
    let refused = app.get("/api/v1/me/preferences").await;
    assert_eq!(
        refused.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
}

#[actix_web::test]
async fn an_avatar_is_the_image_dsm_sent() {
    let app = spawn_app().await;
    let mut response = app
        .http
        .get(format!("{}/api/v1/users/2/avatar", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").unwrap(), "image/png");
    assert!(
        response
            .headers()
            .get("content-disposition")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("alice.png")
    );
    let bytes = response.body().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG image");
    assert_eq!(
        param(
            &last_request(&app, "SYNO.Chat.User.Avatar", "get"),
            "user_id"
        ),
        Some("2")
    );

    let unknown = app.get("/api/v1/users/999/avatar").await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.get("/api/v1/users/abc/avatar")
        .await
        .assert_problem(400, "invalid_request");
}

#[actix_web::test]
async fn direct_messages_reuse_or_open_the_conversation() {
    let app = spawn_app().await;
    // admin and alice already have a DM channel (4).
    let to_alice = app
        .post(
            "/api/v1/users/2/messages",
            json!({"message": "hi alice & co"}),
        )
        .await;
    assert_eq!(to_alice.status, 201, "{}", to_alice.body);
    assert_eq!(to_alice.body["channel_id"], 4);
    assert_eq!(to_alice.body["message"], "hi alice & co");
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Anonymous", "initiate"), 0);

    // bob has none: it is opened once, then reused.
    let to_bob = app
        .post("/api/v1/users/3/messages", json!({"message": "hi bob"}))
        .await;
    assert_eq!(to_bob.status, 201, "{}", to_bob.body);
    let initiate = last_request(&app, "SYNO.Chat.Channel.Anonymous", "initiate");
    assert_eq!(initiate.version.as_deref(), Some("2"));
    assert_eq!(param(&initiate, "user_ids"), Some("[3]"));
    assert_eq!(param(&initiate, "encrypted"), Some("false"));
    assert_eq!(param(&initiate, "channel_key_encs"), Some("[]"));
    let dm_id = to_bob.body["channel_id"].as_u64().unwrap();
    let dm = channel(&app, dm_id).await;
    assert_eq!(dm["type"], "anonymous");
    let mut dm_members = members(&dm);
    dm_members.sort_unstable();
    assert_eq!(dm_members, [1, 3]);
    let listed = app.get(&format!("/api/v1/channels/{dm_id}/posts")).await;
    assert_eq!(listed.body["items"][0]["message"], "hi bob");

    let again = app
        .post("/api/v1/users/3/messages", json!({"message": "again"}))
        .await;
    assert_eq!(again.body["channel_id"], dm_id);
    assert_eq!(app.sim.count("SYNO.Chat.Channel.Anonymous", "initiate"), 1);

    assert_detail_names(
        &app.post("/api/v1/users/1/messages", json!({"message": "me"}))
            .await,
        422,
        "unprocessable",
        "own account",
    );
    for body in [json!({"message": " "}), json!({"text": "x"})] {
        app.post("/api/v1/users/3/messages", body)
            .await
            .assert_problem(400, "invalid_request");
    }
    let unknown = app
        .post("/api/v1/users/999/messages", json!({"message": "anyone?"}))
        .await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
    app.sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 105);
    let refused = app
        .post("/api/v1/users/3/messages", json!({"message": "denied"}))
        .await;
    assert_eq!(
        refused.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
}

#[actix_web::test]
async fn every_route_demands_its_scope() {
    let app = spawn_app().await;
    let writes: [(&str, &str, Option<Value>); 8] = [
        ("POST", "/api/v1/channels", Some(json!({"name": "x"}))),
        ("DELETE", "/api/v1/channels/2", None),
        ("POST", "/api/v1/channels/2/archive", None),
        (
            "POST",
            "/api/v1/channels/2/members",
            Some(json!({"user_ids": [4]})),
        ),
        ("PUT", "/api/v1/channels/2/membership", None),
        ("DELETE", "/api/v1/channels/2/membership", None),
        ("POST", "/api/v1/channels/2/read", Some(json!({}))),
        (
            "POST",
            "/api/v1/users/3/messages",
            Some(json!({"message": "x"})),
        ),
    ];
    let reads = [
        "/api/v1/channels/1/preferences",
        "/api/v1/users/2/status",
        "/api/v1/users/2/avatar",
        "/api/v1/me/preferences",
    ];
    for (method, path, body) in &writes {
        app.call(method, path, Some(READ_KEY), body.clone())
            .await
            .assert_problem(403, "insufficient_scope");
        app.call(method, path, None, body.clone())
            .await
            .assert_problem(401, "unauthorized");
    }
    for path in reads {
        app.call("GET", path, None, None)
            .await
            .assert_problem(401, "unauthorized");
        let allowed = app.call("GET", path, Some(READ_KEY), None).await;
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.body);
    }
    let reached: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| r.method)
        .filter(|m| !matches!(m.as_str(), "query" | "login" | "get" | "list"))
        .collect();
    assert!(reached.is_empty(), "no write reached the NAS: {reached:?}");
}

#[actix_web::test]
async fn channel_names_that_look_like_json_stay_strings() {
    let app = spawn_app().await;
    for name in ["123", "null", "true", "\"quoted\"", "[1]"] {
        let created = app
            .post("/api/v1/channels", json!({"name": name, "type": "private"}))
            .await;
        assert_eq!(created.status, 201, "{name}: {}", created.body);
        assert_eq!(created.body["name"], name);
        let id = created.body["channel_id"].as_u64().unwrap();
        assert_eq!(channel(&app, id).await["name"], name, "as DSM stored it");
    }
}
