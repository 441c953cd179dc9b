//! Success and input-error answers of the channel, user and post resources.

use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn channels_are_listed_and_fetched_by_id() {
    let app = spawn_app().await;
    let list = app.get("/api/v1/channels").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    let general = items
        .iter()
        .find(|c| c["name"] == "general")
        .expect("demo channel general");
    assert_eq!(general["type"], "public");
    assert!(general["channel_id"].is_u64());
    assert!(
        general["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m.is_u64())
    );

    let id = general["channel_id"].as_u64().unwrap();
    let one = app.get(&format!("/api/v1/channels/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["name"], "general");
}

#[actix_web::test]
async fn bad_and_unknown_channel_ids_are_problems() {
    let app = spawn_app().await;
    let problem = app.get("/api/v1/channels/abc").await;
    assert!(
        problem.assert_problem(400, "invalid_request")["detail"]
            .as_str()
            .unwrap()
            .contains("channel_id")
    );
    app.get("/api/v1/channels/0")
        .await
        .assert_problem(400, "invalid_request");
    app.get("/api/v1/channels/-4")
        .await
        .assert_problem(400, "invalid_request");
    app.get("/api/v1/channels/999999")
        .await
        .assert_problem(404, "not_found");
}

#[actix_web::test]
async fn users_are_listed_and_fetched_by_id() {
    let app = spawn_app().await;
    let list = app.get("/api/v1/users").await;
    assert_eq!(list.status, 200);
    let alice = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .cloned()
        .expect("alice");
    let one = app
        .get(&format!("/api/v1/users/{}", alice["user_id"]))
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, alice);
    app.get("/api/v1/users/xyz")
        .await
        .assert_problem(400, "invalid_request");
    app.get("/api/v1/users/424242")
        .await
        .assert_problem(404, "not_found");
}

#[actix_web::test]
async fn a_posted_message_is_created_and_listed() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/api/v1/channels/1/posts",
            json!({"message": "hello from the gateway"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let post_id = created.body["post_id"].as_u64().unwrap();
    assert_eq!(
        post_id >> 32,
        1,
        "post ids carry the channel id in their high bits"
    );
    assert_eq!(created.body["channel_id"], 1);
    assert_eq!(created.body["message"], "hello from the gateway");

    let list = app.get("/api/v1/channels/1/posts?limit=5").await;
    assert_eq!(list.status, 200);
    let items = list.body["items"].as_array().unwrap();
    assert!(items.len() <= 5);
    assert!(
        items
            .iter()
            .any(|p| p["post_id"] == post_id && p["message"] == "hello from the gateway")
    );
}

#[actix_web::test]
async fn a_thread_reply_carries_its_root() {
    let app = spawn_app().await;
    let root = app
        .post("/api/v1/channels/1/posts", json!({"message": "root"}))
        .await;
    let root_id = root.body["post_id"].as_u64().unwrap();
    let reply = app
        .post(
            "/api/v1/channels/1/posts",
            json!({"message": "reply", "thread_id": root_id}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["thread_id"], root_id);
    let sent = app
        .sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method.as_deref() == Some("create"))
        .unwrap();
    assert!(
        sent.params
            .contains(&("thread_id".to_owned(), root_id.to_string()))
    );
}

#[actix_web::test]
async fn special_characters_arrive_at_the_nas_byte_for_byte() {
    let app = spawn_app().await;
    let text = "100% sure & done + a=b?c #1 \"quoted\" 'single' <https://x.org|link>\nline two\tü ✓ 🚀 %22 %2B";
    let created = app
        .post("/api/v1/channels/1/posts", json!({"message": text}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let create = app
        .sim
        .requests()
        .into_iter()
        .find(|r| {
            r.api.as_deref() == Some("SYNO.Chat.Post") && r.method.as_deref() == Some("create")
        })
        .expect("Post.create reached the NAS");
    assert_eq!(create.http_method, "POST", "writes go as POST forms");
    let sent: Vec<_> = create
        .params
        .iter()
        .filter(|(k, _)| k == "message")
        .collect();
    assert_eq!(sent, [&("message".to_owned(), text.to_owned())]);
    let listed = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(listed.body["items"][0]["message"], text);
}

#[actix_web::test]
async fn bad_post_input_is_rejected_before_the_nas() {
    let app = spawn_app().await;
    app.post("/api/v1/channels/1/posts", json!({"message": ""}))
        .await
        .assert_problem(400, "invalid_request");
    app.post("/api/v1/channels/1/posts", json!({"message": "  \n "}))
        .await
        .assert_problem(400, "invalid_request");
    app.post("/api/v1/channels/1/posts", json!({"text": "wrong field"}))
        .await
        .assert_problem(400, "invalid_request");
    app.post(
        "/api/v1/channels/1/posts",
        json!({"message": "x", "thread_id": 0}),
    )
    .await
    .assert_problem(400, "invalid_request");
    app.post("/api/v1/channels/abc/posts", json!({"message": "x"}))
        .await
        .assert_problem(400, "invalid_request");
    app.post_raw(
        "/api/v1/channels/1/posts",
        "application/json",
        "{\"message\": ",
    )
    .await
    .assert_problem(400, "invalid_request");
    app.post_raw("/api/v1/channels/1/posts", "text/plain", "hello")
        .await
        .assert_problem(415, "unsupported_media_type");
    // The query is read twice only when it fails: the second reading names the parameter.
    for (query, detail) in [
        (
            "limit=0",
            "invalid query string: limit: must be between 1 and 200",
        ),
        (
            "limit=many",
            "invalid query string: limit: must be between 1 and 200",
        ),
        (
            "offset=-1",
            "invalid query string: offset: must be between 0 and 2147483647",
        ),
    ] {
        let answer = app.get(&format!("/api/v1/channels/1/posts?{query}")).await;
        assert_eq!(
            answer.assert_problem(400, "invalid_request")["detail"],
            detail
        );
    }
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        0,
        "nothing invalid reached the NAS"
    );
}

#[actix_web::test]
async fn posting_to_an_unknown_channel_is_a_404_with_the_dsm_code() {
    let app = spawn_app().await;
    let answer = app
        .post("/api/v1/channels/9999/posts", json!({"message": "anyone?"}))
        .await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
    let answer = app.get("/api/v1/channels/9999/posts").await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn numbers_outside_the_documented_formats_are_400_not_sent_to_the_nas() {
    let app = spawn_app().await;
    let too_big = "9223372036854775808";
    app.get(&format!("/api/v1/channels/{too_big}/posts"))
        .await
        .assert_problem(400, "invalid_request");
    app.post(
        &format!("/api/v1/channels/{too_big}/posts"),
        json!({"message": "x"}),
    )
    .await
    .assert_problem(400, "invalid_request");
    let body = json!({"message": "x", "thread_id": 9223372036854775808_u64});
    let answer = app.post("/api/v1/channels/1/posts", body).await;
    assert!(
        answer.assert_problem(400, "invalid_request")["detail"]
            .as_str()
            .unwrap()
            .contains("thread_id")
    );
    app.get("/api/v1/channels/1/posts?offset=2147483648")
        .await
        .assert_problem(400, "invalid_request");
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create") + app.sim.count("SYNO.Chat.Post", "list"),
        0
    );
}

#[actix_web::test]
async fn json_errors_name_the_field_and_whole_floats_count_as_integers() {
    let app = spawn_app().await;
    let answer = app
        .post("/api/v1/channels/1/posts", json!({"message": 42}))
        .await;
    let detail = answer.assert_problem(400, "invalid_request")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("message"), "{detail}");
    let root = app
        .post("/api/v1/channels/1/posts", json!({"message": "root"}))
        .await;
    let root_id = root.body["post_id"].as_u64().unwrap();
    let listed = app
        .get("/api/v1/channels/1.0/posts?limit=2.0&offset=0.0")
        .await;
    assert_eq!(
        listed.status, 200,
        "ids and integers may be written as 1.0: {}",
        listed.body
    );
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    app.get("/api/v1/channels/1.5/posts")
        .await
        .assert_problem(400, "invalid_request");
    let reply = app
        .post(
            "/api/v1/channels/1/posts",
            json!({"message": "reply", "thread_id": root_id as f64}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["thread_id"], root_id);
}
