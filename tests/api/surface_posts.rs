//! The post routes around messages: replies, threads, search, pins, reactions, reminders,
//! scheduled posts, attachments, file download and multipart upload.

use serde_json::{Value, json};
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{
    Answer, READ_KEY, TestApp, WRITE_KEY, last_request, param, read, spawn_app, spawn_app_with,
};

/// A file with every byte value, including NUL, CR/LF and 0xFF, that must survive unchanged.
fn binary_file() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend_from_slice(b"\r\n--not-a-boundary\r\n\0\0\xff\xfe");
    bytes
}

/// One part of a multipart body: name, optional (file name, content type), bytes.
type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

fn multipart_body(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some((file_name, content_type)) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(app: &TestApp, channel_id: u64, parts: &[Part<'_>]) -> Answer {
    upload_to(app, &format!("/api/v1/channels/{channel_id}/posts"), parts).await
}

async fn upload_to(app: &TestApp, path: &str, parts: &[Part<'_>]) -> Answer {
    let (content_type, body) = multipart_body(parts);
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Content-Type", content_type))
        .send_body(body)
        .await
        .expect("gateway answers");
    read(response).await
}

async fn create_post(app: &TestApp, channel_id: u64, message: &str) -> u64 {
    let created = app
        .post(
            &format!("/api/v1/channels/{channel_id}/posts"),
            json!({ "message": message }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body["post_id"].as_u64().unwrap()
}

/// The last request DSM received for `api`/`method`.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["post_id"].as_u64().unwrap())
        .collect()
}

async fn search(app: &TestApp, query: &str) -> Answer {
    app.get(&format!("/api/v1/posts/search?{query}")).await
}

fn assert_detail_names(answer: &Answer, field: &str) {
    let detail = answer.assert_problem(400, "invalid_request")["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains(field), "{field} not named in {detail:?}");
}

#[actix_web::test]
async fn a_reply_lands_in_the_thread_of_its_root_and_threads_list_it() {
    let app = spawn_app().await;
    let root = create_post(&app, 1, "who takes the release?").await;
    let reply = app
        .post(
            &format!("/api/v1/posts/{root}/replies"),
            json!({"message": "I do."}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["thread_id"], root);
    assert_eq!(reply.body["channel_id"], 1);
    assert_eq!(reply.body["message"], "I do.");
    let sent = last_request(&app, "SYNO.Chat.Post", "create");
    assert_eq!(param(&sent, "channel_id"), Some("1"));
    assert_eq!(param(&sent, "thread_id"), Some(root.to_string().as_str()));

    let threads = app
        .get("/api/v1/channels/1/threads?limit=5&replies_per_thread=2")
        .await;
    assert_eq!(threads.status, 200, "{}", threads.body);
    // The most recently active thread comes first.
    assert_eq!(threads.body["items"][0]["post_id"], root);
    assert_eq!(threads.body["items"][0]["comment_count"], 1);
    assert!(ids(&threads.body["related"]).contains(&reply.body["post_id"].as_u64().unwrap()));
    assert!(threads.body["total"].as_u64().unwrap() >= 1);
    let sent = last_request(&app, "SYNO.Chat.Post", "thread_list");
    assert_eq!(param(&sent, "channel_id"), Some("1"));
    assert_eq!(param(&sent, "limit"), Some("5"));
    assert_eq!(param(&sent, "offset"), Some("0"));
    assert_eq!(param(&sent, "related_comment_count"), Some("2"));
}

#[actix_web::test]
async fn bad_replies_and_thread_queries_are_rejected_and_unknown_ones_are_404() {
    let app = spawn_app().await;
    let root = create_post(&app, 1, "root").await;
    let reply_path = format!("/api/v1/posts/{root}/replies");
    app.post(&reply_path, json!({"message": " "}))
        .await
        .assert_problem(400, "invalid_request");
    app.post(&reply_path, json!({"message": "x", "thread_id": root}))
        .await
        .assert_problem(400, "invalid_request");
    // Post ids carry their channel in the high 32 bits; 5 names no channel, so no post.
    let no_channel = app
        .post("/api/v1/posts/5/replies", json!({"message": "x"}))
        .await;
    no_channel.assert_problem(404, "not_found");
    assert_detail_names(
        &app.post("/api/v1/posts/0/replies", json!({"message": "x"}))
            .await,
        "post_id",
    );
    for query in ["limit=0", "limit=201", "replies_per_thread=51", "page=2"] {
        app.get(&format!("/api/v1/channels/1/threads?{query}"))
            .await
            .assert_problem(400, "invalid_request");
    }
    assert_detail_names(&app.get("/api/v1/channels/x/threads").await, "channel_id");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "thread_list"), 0);
    let creates = app.sim.count("SYNO.Chat.Post", "create");

    let unknown_root = (1u64 << 32) | 999_999;
    let answer = app
        .post(
            &format!("/api/v1/posts/{unknown_root}/replies"),
            json!({"message": "anyone?"}),
        )
        .await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), creates + 1);
    let answer = app.get("/api/v1/channels/9999/threads").await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn search_sends_dsm_its_json_lists_and_answers_a_page() {
    let app = spawn_app().await;
    let hit = create_post(&app, 1, "release notes <https://example.org/notes>").await;
    create_post(&app, 1, "unrelated chatter").await;

    let all = search(&app, "keyword=release").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert!(ids(&all.body["items"]).contains(&hit));
    let sent = last_request(&app, "SYNO.Chat.Post", "search");
    assert_eq!(param(&sent, "in"), Some("[]"), "no channel: all chats");
    assert_eq!(param(&sent, "keyword"), Some("release"));

    let after = now_ms() - 3_600_000;
    let before = now_ms() + 3_600_000;
    let page = search(
        &app,
        &format!(
            "channel_id=1,2&type=normal&has=url&creator_id=1&after={after}&before={before}\
             &sort_by=update_at&thread_id=0&offset=0&limit=5"
        ),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(ids(&page.body["items"]), [hit]);
    assert_eq!(page.body["total"], 1);
    assert_eq!(page.body["offset"], 0);
    assert_eq!(page.body["limit"], 5);
    let sent = last_request(&app, "SYNO.Chat.Post", "search");
    for (name, value) in [
        ("in", "[1,2]".to_owned()),
        ("post_type", r#"["normal"]"#.to_owned()),
        ("has", r#"["url"]"#.to_owned()),
        ("creator_ids", "[1]".to_owned()),
        ("after", after.to_string()),
        ("before", before.to_string()),
        ("sort_by", "update_at".to_owned()),
        ("thread_id", "0".to_owned()),
        ("offset", "0".to_owned()),
        ("limit", "5".to_owned()),
    ] {
        assert_eq!(param(&sent, name), Some(value.as_str()), "{name}");
    }
    assert_eq!(param(&sent, "keyword"), None);
    assert_eq!(param(&sent, "sort_by_array"), None);
    // Pinned posts in pin order, as Chat's client asks (reference: post_pin).
    let pinned = search(
        &app,
        "channel_id=1&has=pin&sort_by_array=is_sticky,last_pin_at",
    )
    .await;
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    let sent = last_request(&app, "SYNO.Chat.Post", "search");
    assert_eq!(
        param(&sent, "sort_by_array"),
        Some(r#"["is_sticky","last_pin_at"]"#)
    );
}

#[actix_web::test]
async fn bad_search_queries_never_reach_the_nas() {
    let app = spawn_app().await;
    for (query, field) in [
        ("has=file", "has"),
        ("has=pin,mention", "has"),
        ("type=sticker", "type"),
        ("sort_by=random", "sort_by"),
        ("sort_by_array=is_sticky,random", "sort_by_array"),
        ("channel_id=abc", "channel_id"),
        ("channel_id=1,0", "channel_id"),
        ("creator_id=me", "creator_id"),
        ("after=1700000000", "after"),
        ("before=12", "before"),
        ("after=10000000000000", "after"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("in=[1]", "in"),
    ] {
        assert_detail_names(&search(&app, query).await, field);
    }
    search(&app, "thread_id=-1")
        .await
        .assert_problem(400, "invalid_request");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "search"), 0);
    app.sim.fail_next("SYNO.Chat.Post", Some("search"), 1, 120);
    search(&app, "")
        .await
        .assert_problem(502, "upstream_contract_error");
}

#[actix_web::test]
async fn a_pinned_post_is_found_by_search_until_it_is_unpinned() {
    let app = spawn_app().await;
    let post = create_post(&app, 1, "pin me").await;
    let pin_path = format!("/api/v1/posts/{post}/pin");
    let pinned = app.call("PUT", &pin_path, Some(WRITE_KEY), None).await;
    assert_eq!(pinned.status, 204, "{}", pinned.body);
    assert_eq!(
        param(&last_request(&app, "SYNO.Chat.Post", "pin"), "post_id"),
        Some(post.to_string().as_str())
    );
    let found = search(&app, "channel_id=1&has=pin&sort_by=last_pin_at").await;
    assert_eq!(
        found.body["items"][0]["post_id"], post,
        "the latest pin first"
    );
    assert_eq!(
        param(&last_request(&app, "SYNO.Chat.Post", "search"), "has"),
        Some(r#"["pin"]"#)
    );

    let unpinned = app.call("DELETE", &pin_path, Some(WRITE_KEY), None).await;
    assert_eq!(unpinned.status, 204, "{}", unpinned.body);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "unpin"), 1);
    let found = search(&app, "channel_id=1&has=pin").await;
    assert!(!ids(&found.body["items"]).contains(&post));
}

#[actix_web::test]
async fn pin_errors_map_to_problems() {
    let app = spawn_app().await;
    let post = create_post(&app, 1, "pin me").await;
    app.sim.fail_next("SYNO.Chat.Post", Some("pin"), 1, 105);
    let denied = app
        .call(
            "PUT",
            &format!("/api/v1/posts/{post}/pin"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(
        denied.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
    let unknown = (1u64 << 32) | 999_999;
    let missing = app
        .call(
            "DELETE",
            &format!("/api/v1/posts/{unknown}/pin"),
            Some(WRITE_KEY),
            None,
        )
        .await;
    assert_eq!(missing.assert_problem(404, "not_found")["dsm_code"], 117);
    assert_detail_names(
        &app.call("PUT", "/api/v1/posts/abc/pin", Some(WRITE_KEY), None)
            .await,
        "post_id",
    );
}

#[actix_web::test]
async fn a_reaction_is_sent_as_a_sticker_name() {
    let app = spawn_app().await;
    let post = create_post(&app, 1, "react to me").await;
    let path = format!("/api/v1/posts/{post}/reactions");
    let added = app.post(&path, json!({"sticker": "thumbsup"})).await;
    assert_eq!(added.status, 204, "{}", added.body);
    let sent = last_request(&app, "SYNO.Chat.Post.Reaction", "set");
    assert_eq!(sent.version.as_deref(), Some("1"));
    assert_eq!(param(&sent, "post_id"), Some(post.to_string().as_str()));
    assert_eq!(param(&sent, "sticker_name"), Some("thumbsup"));

    for body in [
        json!({"sticker": ""}),
        json!({"sticker": "thumbs up"}),
        json!({"sticker": "a&b"}),
        json!({}),
        json!({"sticker": "heart", "extra": 1}),
    ] {
        app.post(&path, body)
            .await
            .assert_problem(400, "invalid_request");
    }
    assert_detail_names(&app.post(&path, json!({"sticker": "x y"})).await, "sticker");
    assert_eq!(app.sim.count("SYNO.Chat.Post.Reaction", "set"), 1);

    let unknown = (1u64 << 32) | 999_999;
    let missing = app
        .post(
            &format!("/api/v1/posts/{unknown}/reactions"),
            json!({"sticker": "heart"}),
        )
        .await;
    assert_eq!(missing.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn a_reminder_is_set_read_listed_and_deleted() {
    let app = spawn_app().await;
    let post = create_post(&app, 1, "remind me").await;
    let path = format!("/api/v1/posts/{post}/reminder");
    let remind_at = now_ms() + 86_400_000;

    app.get(&path).await.assert_problem(404, "not_found");
    let set = app
        .call(
            "PUT",
            &path,
            Some(WRITE_KEY),
            Some(json!({"remind_at": remind_at})),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body, json!({"post_id": post, "remind_at": remind_at}));
    let sent = last_request(&app, "SYNO.Chat.Post.Reminder", "set");
    assert_eq!(
        param(&sent, "remind_at"),
        Some(remind_at.to_string().as_str())
    );

    let got = app.get(&path).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["remind_at"], remind_at);
    let listed = app.get("/api/v1/channels/1/reminders").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(ids(&listed.body["items"]), [post]);
    assert_eq!(listed.body["items"][0]["remind_at"], remind_at);
    assert_eq!(listed.body["items"][0]["message"], "remind me");

    let deleted = app.call("DELETE", &path, Some(WRITE_KEY), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let sent = last_request(&app, "SYNO.Chat.Post.Reminder", "delete");
    assert_eq!(param(&sent, "post_id"), Some(post.to_string().as_str()));
    assert_eq!(param(&sent, "channel_id"), Some("1"));
    app.get(&path).await.assert_problem(404, "not_found");
    let again = app.call("DELETE", &path, Some(WRITE_KEY), None).await;
    assert_eq!(again.assert_problem(404, "not_found")["dsm_code"], 117);
    let empty = app.get("/api/v1/channels/1/reminders").await;
    assert_eq!(empty.body["items"], json!([]));
}

#[actix_web::test]
async fn bad_reminders_are_rejected_and_dsm_refusals_mapped() {
    let app = spawn_app().await;
    let post = create_post(&app, 1, "remind me").await;
    let path = format!("/api/v1/posts/{post}/reminder");
    // A time that has passed is well formed but cannot be carried out.
    let past = app
        .call(
            "PUT",
            &path,
            Some(WRITE_KEY),
            Some(json!({"remind_at": now_ms() - 60_000})),
        )
        .await;
    assert!(
        past.assert_problem(422, "unprocessable")["detail"]
            .as_str()
            .unwrap()
            .contains("remind_at")
    );
    for body in [json!({"remind_at": 1_900_000_000}), json!({})] {
        assert_detail_names(
            &app.call("PUT", &path, Some(WRITE_KEY), Some(body)).await,
            "remind_at",
        );
    }
    app.call(
        "PUT",
        &path,
        Some(WRITE_KEY),
        Some(json!({"remind_at": "tomorrow"})),
    )
    .await
    .assert_problem(400, "invalid_request");
    assert_eq!(app.sim.count("SYNO.Chat.Post.Reminder", "set"), 0);
    assert_detail_names(&app.get("/api/v1/channels/0/reminders").await, "channel_id");

    app.sim
        .fail_next("SYNO.Chat.Post.Reminder", Some("set"), 1, 105);
    let denied = app
        .call(
            "PUT",
            &path,
            Some(WRITE_KEY),
            Some(json!({"remind_at": now_ms() + 60_000})),
        )
        .await;
    assert_eq!(
        denied.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
    app.sim
        .fail_next("SYNO.Chat.Post.Reminder", Some("list"), 1, 117);
    let missing = app.get("/api/v1/channels/1/reminders").await;
    assert_eq!(missing.assert_problem(404, "not_found")["dsm_code"], 117);
    let unknown = (1u64 << 32) | 999_999;
    app.get(&format!("/api/v1/posts/{unknown}/reminder"))
        .await
        .assert_problem(404, "not_found");
}

#[actix_web::test]
async fn a_scheduled_post_is_listed_until_deleted() {
    let app = spawn_app().await;
    let send_at = now_ms() + 3_600_000;
    let created = app
        .post(
            "/api/v1/channels/1/scheduled-posts",
            json!({"message": "stand-up in 5 & counting", "send_at": send_at}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let cronjob_id = created.body["cronjob_id"].as_u64().unwrap();
    assert_eq!(
        created.body,
        json!({"cronjob_id": cronjob_id, "channel_id": 1,
            "message": "stand-up in 5 & counting", "send_at": send_at})
    );
    let sent = last_request(&app, "SYNO.Chat.Post.Schedule", "create");
    assert_eq!(param(&sent, "channel_id"), Some("1"));
    assert_eq!(param(&sent, "message"), Some("stand-up in 5 & counting"));
    assert_eq!(param(&sent, "send_at"), Some(send_at.to_string().as_str()));

    let listed = app.get("/api/v1/channels/1/scheduled-posts").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["items"], json!([created.body]));

    let path = format!("/api/v1/scheduled-posts/{cronjob_id}");
    let deleted = app.call("DELETE", &path, Some(WRITE_KEY), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let listed = app.get("/api/v1/channels/1/scheduled-posts").await;
    assert_eq!(listed.body["items"], json!([]));
    let again = app.call("DELETE", &path, Some(WRITE_KEY), None).await;
    assert_eq!(again.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn bad_scheduled_posts_are_rejected_before_the_nas() {
    let app = spawn_app().await;
    let path = "/api/v1/channels/1/scheduled-posts";
    let future = now_ms() + 3_600_000;
    let late = app
        .post(
            path,
            json!({"message": "late", "send_at": now_ms() - 1_000}),
        )
        .await;
    assert!(
        late.assert_problem(422, "unprocessable")["detail"]
            .as_str()
            .unwrap()
            .contains("send_at")
    );
    for (body, field) in [
        (
            json!({"message": "seconds", "send_at": 1_900_000_000}),
            "send_at",
        ),
        (json!({"message": "", "send_at": future}), "message"),
        (json!({"message": "no time"}), "send_at"),
        (
            json!({"text": "x", "message": "y", "send_at": future}),
            "text",
        ),
    ] {
        assert_detail_names(&app.post(path, body).await, field);
    }
    assert_eq!(app.sim.count("SYNO.Chat.Post.Schedule", "create"), 0);
    for id in ["abc", "0"] {
        assert_detail_names(
            &app.call(
                "DELETE",
                &format!("/api/v1/scheduled-posts/{id}"),
                Some(WRITE_KEY),
                None,
            )
            .await,
            "cronjob_id",
        );
    }
    let answer = app
        .post(
            "/api/v1/channels/9999/scheduled-posts",
            json!({"message": "x", "send_at": future}),
        )
        .await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
    app.sim
        .fail_next("SYNO.Chat.Post.Schedule", Some("list"), 1, 105);
    let denied = app.get("/api/v1/channels/1/scheduled-posts").await;
    assert_eq!(
        denied.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
}

#[actix_web::test]
async fn an_uploaded_file_arrives_intact_and_downloads_byte_for_byte() {
    let app = spawn_app().await;
    let bytes = binary_file();
    let created = upload(
        &app,
        1,
        &[
            ("message", None, "the weekly report ✓".as_bytes()),
            (
                "file",
                Some(("report.bin", "application/x-test-binary")),
                &bytes,
            ),
        ],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["type"], "file");
    assert_eq!(created.body["channel_id"], 1);
    assert_eq!(created.body["message"], "the weekly report ✓");
    assert_eq!(created.body["file_props"]["name"], "report.bin");
    assert_eq!(created.body["file_props"]["size"], bytes.len());
    let post_id = created.body["post_id"].as_u64().unwrap();

    let sent = last_request(&app, "SYNO.Chat.Post", "create");
    assert_eq!(sent.http_method, "POST");
    assert_eq!(sent.version.as_deref(), Some("5"));
    assert_eq!(param(&sent, "channel_id"), Some("1"));
    assert_eq!(param(&sent, "type"), Some("file"));
    assert_eq!(param(&sent, "message"), Some("the weekly report ✓"));
    assert_eq!(
        sent.params.last().map(|(k, _)| k.as_str()),
        Some("file"),
        "the file is the last part"
    );

    let mut response = app
        .http
        .get(format!("{}/api/v1/posts/{post_id}/file", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-test-binary")
    );
    assert!(
        header("content-disposition")
            .unwrap()
            .contains("filename=\"report.bin\"")
    );
    let downloaded = response.body().await.unwrap();
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    let sent = last_request(&app, "SYNO.Chat.Post.File", "get");
    assert_eq!(sent.version.as_deref(), Some("2"));

    let attachments = app.get("/api/v1/channels/1/attachments?limit=5").await;
    assert_eq!(attachments.status, 200, "{}", attachments.body);
    assert_eq!(ids(&attachments.body["attachments"]), [post_id]);
    let sent = last_request(&app, "SYNO.Chat.Post.Attachment", "list");
    assert_eq!(param(&sent, "limit"), Some("5"));
    let files = search(&app, "channel_id=1&type=file").await;
    assert_eq!(ids(&files.body["items"]), [post_id]);
}

/// The seed describes an upload's answer as `file_props` alone: the post DSM created is found
/// among the channel's newest, and answered as any upload is.
#[actix_web::test]
async fn an_upload_answered_without_a_post_id_finds_its_post() {
    let app = spawn_app().await;
    app.sim.set_upload_answers_file_props_only(true);
    let older = upload(&app, 1, &[("file", Some(("same.txt", "text/plain")), b"1")]).await;
    assert_eq!(older.status, 201, "{}", older.body);
    app.post("/api/v1/channels/1/posts", json!({"message": "in between"}))
        .await;
    let created = upload(
        &app,
        1,
        &[
            ("message", None, b"second".as_slice()),
            ("file", Some(("same.txt", "text/plain")), b"22"),
        ],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["message"], "second");
    assert_eq!(created.body["file_props"]["name"], "same.txt");
    assert_eq!(created.body["type"], "file");
    let newest = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(created.body["post_id"], newest.body["items"][0]["post_id"]);
    assert_ne!(created.body["post_id"], older.body["post_id"]);
    // The same name and caption again: the newer post, not the one found before.
    let again = upload(&app, 1, &[("file", Some(("same.txt", "text/plain")), b"3")]).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert!(again.body["post_id"].as_u64() > older.body["post_id"].as_u64());
}

/// A success with no `data` at all: the post exists, and is found the same way.
#[actix_web::test]
async fn an_upload_answered_without_data_finds_its_post() {
    let app = spawn_app().await;
    app.sim.set_upload_answers_without_data(true);
    let created = upload(
        &app,
        1,
        &[
            ("message", None, b"bare".as_slice()),
            ("file", Some(("bare.txt", "text/plain")), b"1"),
        ],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["message"], "bare");
    assert_eq!(created.body["file_props"]["name"], "bare.txt");
    let newest = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(created.body["post_id"], newest.body["items"][0]["post_id"]);
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        1,
        "uploaded once"
    );
}

/// A text post DSM accepts with a bare success (PROTOCOL.md §1.3: some writes answer without
/// `data`) is found, not reported as a 502 that invites the caller to post it again.
#[actix_web::test]
async fn a_post_answered_without_data_finds_its_post() {
    let app = spawn_app().await;
    app.sim
        .answer_without_data_next("SYNO.Chat.Post", Some("create"), 1);
    let created = app
        .post("/api/v1/channels/1/posts", json!({"message": "bare text"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["message"], "bare text");
    let newest = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(created.body["post_id"], newest.body["items"][0]["post_id"]);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1, "posted once");
}

/// File names with a quote, a backslash or a `;`: sent as browsers write them (`"` as `%22`,
/// `\` as it is), and the post found by the name DSM stores when its answer names none. Before,
/// the name was changed on the way (`"` to `'`, `\` doubled) and looked for unchanged: the
/// upload was posted and answered 502, inviting a second one.
#[actix_web::test]
async fn an_upload_whose_name_needs_escaping_is_found_by_the_name_sent() {
    let app = spawn_app().await;
    app.sim.set_upload_answers_without_data(true);
    // As a client writes them in the quoted `filename` (RFC 7578 quoted pairs).
    for (written, stored) in [
        (r#"q\"x ; y.txt"#, "q%22x ; y.txt"),
        (r"dir\\name.txt", "name.txt"),
    ] {
        let created = upload(&app, 1, &[("file", Some((written, "text/plain")), b"1")]).await;
        assert_eq!(created.status, 201, "{written}: {}", created.body);
        assert_eq!(
            created.body["file_props"]["name"], stored,
            "{}",
            created.body
        );
    }
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        2,
        "each uploaded once"
    );
}

/// A file named in UTF-8 downloads under its name (RFC 6266: `filename*`, and an ASCII
/// `filename` for clients that read only that), JSON content included, and without the path
/// a client put in its name.
#[actix_web::test]
async fn a_file_named_in_utf8_downloads_under_its_name() {
    let app = spawn_app().await;
    let created = upload(
        &app,
        1,
        &[(
            "file",
            Some(("../../rapport é 日本.json", "application/json")),
            br#"{"a": 1}"#,
        )],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["file_props"]["name"], "rapport é 日本.json");
    let post_id = created.body["post_id"].as_u64().unwrap();
    let mut response = app
        .http
        .get(format!("{}/api/v1/posts/{post_id}/file", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response
        .headers()
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        disposition,
        "attachment; filename=\"rapport _ __.json\"; \
         filename*=UTF-8''rapport%20%C3%A9%20%E6%97%A5%E6%9C%AC.json"
    );
    assert_eq!(response.body().await.unwrap().as_ref(), br#"{"a": 1}"#);
}

#[actix_web::test]
async fn a_caption_with_a_nul_is_refused_as_the_json_routes_refuse_it() {
    let app = spawn_app().await;
    let refused = upload(
        &app,
        1,
        &[
            ("message", None, b"a\0b"),
            ("file", Some(("a.txt", "text/plain")), b"hi"),
        ],
    )
    .await;
    refused.assert_problem(400, "invalid_request");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
}

#[actix_web::test]
async fn a_file_without_caption_is_posted_with_an_empty_message() {
    let app = spawn_app().await;
    let created = upload(&app, 1, &[("file", Some(("a.txt", "text/plain")), b"hi")]).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let sent = last_request(&app, "SYNO.Chat.Post", "create");
    assert_eq!(param(&sent, "message"), Some(""));
}

#[actix_web::test]
async fn the_files_route_uploads_and_refuses_json() {
    let app = spawn_app().await;
    let created = upload_to(
        &app,
        "/api/v1/channels/1/files",
        &[
            ("message", None, b"report"),
            (
                "file",
                Some(("r.bin", "application/octet-stream")),
                &binary_file(),
            ),
        ],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["type"], "file");
    let sent = last_request(&app, "SYNO.Chat.Post", "create");
    assert_eq!(param(&sent, "message"), Some("report"));
    // As the seed sends it: the channel in the query beside the control fields.
    for field in ["api", "version", "method", "channel_id"] {
        assert!(sent.query_fields.iter().any(|k| k == field), "{sent:?}");
    }
    assert!(
        !sent.query_fields.iter().any(|k| k == "message"),
        "{sent:?}"
    );
    app.post(
        "/api/v1/channels/1/files",
        serde_json::json!({"message": "x"}),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
}

#[actix_web::test]
async fn bad_uploads_are_rejected_before_the_nas() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.max_upload_bytes = 1024).await;
    let big = vec![0xffu8; 4096];
    let too_large = upload(
        &app,
        1,
        &[("file", Some(("big.bin", "application/octet-stream")), &big)],
    )
    .await;
    too_large.assert_problem(413, "payload_too_large");
    // Refused from its declared length, before reading.
    let huge = vec![1u8; 256 * 1024];
    upload(
        &app,
        1,
        &[(
            "file",
            Some(("huge.bin", "application/octet-stream")),
            &huge,
        )],
    )
    .await
    .assert_problem(413, "payload_too_large");
    let just_fits = vec![0u8; 1024];
    let fits = upload(
        &app,
        1,
        &[(
            "file",
            Some(("ok.bin", "application/octet-stream")),
            &just_fits,
        )],
    )
    .await;
    assert_eq!(fits.status, 201, "{}", fits.body);
    let creates = app.sim.count("SYNO.Chat.Post", "create");

    let missing_file = upload(&app, 1, &[("message", None, b"caption only")]).await;
    assert_detail_names(&missing_file, "file");
    let unknown_part = upload(
        &app,
        1,
        &[
            ("file", Some(("a.txt", "text/plain")), b"x"),
            ("thread_id", None, b"5"),
        ],
    )
    .await;
    assert_detail_names(&unknown_part, "thread_id");
    let twice = upload(
        &app,
        1,
        &[
            ("file", Some(("a.txt", "text/plain")), b"x"),
            ("file", Some(("b.txt", "text/plain")), b"y"),
        ],
    )
    .await;
    assert_detail_names(&twice, "file");
    let not_utf8 = upload(
        &app,
        1,
        &[
            ("message", None, b"\xff\xfe"),
            ("file", Some(("a.txt", "text/plain")), b"x"),
        ],
    )
    .await;
    assert_detail_names(&not_utf8, "message");
    app.post_raw(
        "/api/v1/channels/1/posts",
        "multipart/form-data",
        "no boundary",
    )
    .await
    .assert_problem(400, "invalid_request");
    app.post_raw(
        "/api/v1/channels/1/posts",
        "application/octet-stream",
        "bytes",
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), creates);

    let unknown = upload(&app, 9999, &[("file", Some(("a.txt", "text/plain")), b"x")]).await;
    assert_eq!(unknown.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn file_and_attachment_errors_map_to_problems() {
    let app = spawn_app().await;
    let text_post = create_post(&app, 1, "no file here").await;
    let answer = app.get(&format!("/api/v1/posts/{text_post}/file")).await;
    assert_eq!(answer.assert_problem(404, "not_found")["dsm_code"], 117);
    app.sim
        .fail_next("SYNO.Chat.Post.File", Some("get"), 1, 105);
    let denied = app.get(&format!("/api/v1/posts/{text_post}/file")).await;
    assert_eq!(
        denied.assert_problem(403, "upstream_permission_denied")["dsm_code"],
        105
    );
    assert_detail_names(&app.get("/api/v1/posts/0/file").await, "post_id");
    assert_detail_names(
        &app.get("/api/v1/channels/1/attachments?limit=0").await,
        "limit",
    );
    let missing = app.get("/api/v1/channels/9999/attachments").await;
    assert_eq!(missing.assert_problem(404, "not_found")["dsm_code"], 117);
}

#[actix_web::test]
async fn every_post_route_checks_the_key_and_its_scope() {
    let app = spawn_app().await;
    let p = (1u64 << 32) | 1;
    let reads = [
        "/api/v1/posts/search".to_owned(),
        "/api/v1/channels/1/threads".to_owned(),
        "/api/v1/channels/1/attachments".to_owned(),
        "/api/v1/channels/1/reminders".to_owned(),
        "/api/v1/channels/1/scheduled-posts".to_owned(),
        format!("/api/v1/posts/{p}/reminder"),
        format!("/api/v1/posts/{p}/file"),
    ];
    let writes = [
        (
            "POST",
            format!("/api/v1/posts/{p}/replies"),
            json!({"message": "x"}),
        ),
        ("PUT", format!("/api/v1/posts/{p}/pin"), Value::Null),
        ("DELETE", format!("/api/v1/posts/{p}/pin"), Value::Null),
        (
            "POST",
            format!("/api/v1/posts/{p}/reactions"),
            json!({"sticker": "heart"}),
        ),
        (
            "PUT",
            format!("/api/v1/posts/{p}/reminder"),
            json!({"remind_at": now_ms() + 60_000}),
        ),
        ("DELETE", format!("/api/v1/posts/{p}/reminder"), Value::Null),
        (
            "POST",
            "/api/v1/channels/1/scheduled-posts".to_owned(),
            json!({"message": "x", "send_at": now_ms() + 60_000}),
        ),
        (
            "DELETE",
            "/api/v1/scheduled-posts/1".to_owned(),
            Value::Null,
        ),
        (
            "POST",
            "/api/v1/channels/1/posts".to_owned(),
            json!({"message": "x"}),
        ),
    ];
    let body = |b: &Value| (!b.is_null()).then(|| b.clone());
    for path in &reads {
        app.call("GET", path, None, None)
            .await
            .assert_problem(401, "unauthorized");
    }
    for (method, path, b) in &writes {
        app.call(method, path, None, body(b))
            .await
            .assert_problem(401, "unauthorized");
        app.call(method, path, Some(READ_KEY), body(b))
            .await
            .assert_problem(403, "insufficient_scope");
    }
    assert!(
        app.sim.requests().iter().all(|r| r
            .api
            .as_deref()
            .is_none_or(|a| !a.starts_with("SYNO.Chat.Post"))),
        "no unauthorised call reached the NAS"
    );
    let search = app.get("/api/v1/posts/search").await;
    assert_eq!(search.status, 200, "read key reads: {}", search.body);
}

/// The `post_id`s of a page's items, in order.
async fn page_ids(app: &TestApp, path: &str) -> Vec<u64> {
    let page = app.get(path).await;
    assert_eq!(page.status, 200, "{path}: {}", page.body);
    page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["post_id"].as_u64().unwrap())
        .collect()
}

/// Every top-level post of `channel`, newest first, read `limit` at a time with `before` from
/// the page `first` starts with.
async fn page_through(app: &TestApp, channel: u64, first: &str, limit: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..100 {
        let items = page_ids(app, &path).await;
        assert!(items.len() <= limit as usize, "{path}: {items:?}");
        let Some(&last) = items.last() else {
            return ids;
        };
        ids.extend(items);
        path = format!("/api/v1/channels/{channel}/posts?limit={limit}&before={last}");
    }
    panic!("paging did not end: {ids:?}");
}

async fn post_messages(app: &TestApp, channel: u64, count: usize) {
    for n in 0..count {
        let created = app
            .post(
                &format!("/api/v1/channels/{channel}/posts"),
                json!({"message": format!("page test {n}")}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
}

#[actix_web::test]
async fn before_pages_newest_first_without_gaps_however_the_nas_pages() {
    let app = spawn_app().await;
    post_messages(&app, 1, 7).await;
    let expected = page_ids(&app, "/api/v1/channels/1/posts?limit=200").await;
    assert!(expected.len() >= 8, "{expected:?}");
    assert!(
        expected.windows(2).all(|w| w[0] > w[1]),
        "newest first: {expected:?}"
    );
    let first = "/api/v1/channels/1/posts?limit=3";
    assert_eq!(
        page_through(&app, 1, first, 3).await,
        expected,
        "a NAS honouring offset"
    );

    // The first page as the default (offset) paging reads it, then `before` on a NAS that
    // ignores offset (Chat 2.4.1) and on one that pages only from an anchor (ACE's v8).
    let newest = expected[0];
    // Another channel's post as the anchor is a mixed-up cursor, not a first page.
    let elsewhere = format!("/api/v1/channels/2/posts?before={newest}");
    let refused = app.get(&elsewhere).await;
    let problem = refused.assert_problem(404, "not_found");
    assert!(
        problem["detail"].as_str().unwrap().starts_with("before:"),
        "{problem}"
    );
    let from_newest = format!("/api/v1/channels/1/posts?limit=3&before={}", newest + 1);
    app.sim.set_post_list_offset_ignored(true);
    assert_eq!(
        page_through(&app, 1, &from_newest, 3).await,
        expected,
        "offset ignored"
    );
    // That NAS answers its newest ten whatever the limit: the page still holds `limit` posts.
    let capped = page_ids(&app, "/api/v1/channels/1/posts?limit=3").await;
    assert_eq!(capped, expected[..3], "limit kept where the NAS ignores it");
    app.sim.set_post_list_offset_ignored(false);
    app.sim.set_post_list_anchor_only(true);
    assert_eq!(
        page_through(&app, 1, &from_newest, 3).await,
        expected,
        "anchor only"
    );
    let sent = last_request(&app, "SYNO.Chat.Post", "list");
    assert_eq!(param(&sent, "next_count"), Some("0"));
    // One more than the page, in case the NAS counts the anchor it echoes.
    assert_eq!(param(&sent, "prev_count"), Some("4"));
    assert!(
        param(&sent, "offset").is_none(),
        "an anchored page asks no offset"
    );

    // `offset` skips posts after the anchor too.
    let skipped = format!("/api/v1/channels/1/posts?limit=2&offset=3&before={newest}");
    assert_eq!(page_ids(&app, &skipped).await, expected[4..6]);
    let sent = last_request(&app, "SYNO.Chat.Post", "list");
    assert_eq!(param(&sent, "post_id"), Some(newest.to_string().as_str()));
    for bad in ["0", "-1", "x", "9223372036854775808"] {
        app.get(&format!("/api/v1/channels/1/posts?before={bad}"))
            .await
            .assert_problem(400, "invalid_request");
    }
}

/// With the default (`offset`) paging, a NAS that shows it pages otherwise is paged from an
/// anchor from then on, without configuration: the page a caller gets is the same.
#[actix_web::test]
async fn a_nas_that_does_not_page_by_offset_is_recognised_and_paged_from_an_anchor() {
    // Chat 2.4.1: offset and limit ignored, the newest ten answered.
    let app = spawn_app().await;
    post_messages(&app, 1, 14).await;
    let expected = page_ids(&app, "/api/v1/channels/1/posts?limit=200").await;
    assert!(expected.len() >= 15, "{expected:?}");
    app.sim.set_post_list_offset_ignored(true);
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=3&offset=3").await,
        expected[3..6],
        "offset ignored"
    );
    let sent = last_request(&app, "SYNO.Chat.Post", "list");
    assert!(param(&sent, "post_id").is_some(), "asked from an anchor");
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=4&offset=8").await,
        expected[8..12]
    );
    assert!(param(&last_request(&app, "SYNO.Chat.Post", "list"), "offset").is_none());

    // ACE's v8: without an anchor, the oldest post alone.
    let app = spawn_app().await;
    post_messages(&app, 1, 6).await;
    app.sim.set_post_list_anchor_only(true);
    // Asked from an anchor past the channel's last possible post id.
    let newest_anchor = (1u64 << 32) | 0xFFFF_FFFF;
    let expected = page_ids(
        &app,
        &format!("/api/v1/channels/1/posts?limit=200&before={newest_anchor}"),
    )
    .await;
    assert!(expected.len() >= 6, "{expected:?}");
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=5").await,
        expected[..5],
        "the newest five, not the oldest post"
    );
    let lists = app.sim.count("SYNO.Chat.Post", "list");
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=2&offset=1").await,
        expected[1..3]
    );
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "list"),
        lists + 1,
        "recognised once: one call a page"
    );
}

/// A NAS that pages by offset is asked once per page once a page proved it: a full page of more
/// than ten posts (Chat 2.4.1 answers ten whatever the limit). A page shorter than asked (the
/// whole of a small channel) proves nothing: until then each page is asked both ways.
#[actix_web::test]
async fn a_full_page_proves_offset_paging_once() {
    let app = spawn_app().await;
    post_messages(&app, 1, 12).await;
    let lists = app.sim.count("SYNO.Chat.Post", "list");
    let expected = page_ids(&app, "/api/v1/channels/1/posts?limit=200").await;
    assert!(expected.len() > 12, "{expected:?}");
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=200").await,
        expected
    );
    assert_eq!(app.sim.count("SYNO.Chat.Post", "list"), lists + 4);
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=11").await,
        expected[..11]
    );
    let lists = app.sim.count("SYNO.Chat.Post", "list");
    for _ in 0..3 {
        assert_eq!(
            page_ids(&app, "/api/v1/channels/1/posts?limit=200").await,
            expected
        );
    }
    assert_eq!(app.sim.count("SYNO.Chat.Post", "list"), lists + 3);
    assert!(param(&last_request(&app, "SYNO.Chat.Post", "list"), "offset").is_some());
}

/// A NAS that ignores `offset` (Chat 2.4.1's newest ten) answers a small channel as one that
/// honours it would: that proves nothing, and a later page of a longer channel, at an offset
/// or longer than ten, is still the right one.
#[actix_web::test]
async fn a_small_channel_does_not_prove_offset_paging() {
    let app = spawn_app().await;
    app.sim.set_post_list_offset_ignored(true);
    let small = page_ids(&app, "/api/v1/channels/1/posts?limit=50").await;
    assert!(!small.is_empty() && small.len() < 10, "{small:?}");
    post_messages(&app, 1, 30).await;
    let newest_anchor = (1u64 << 32) | 0xFFFF_FFFF;
    let expected = page_ids(
        &app,
        &format!("/api/v1/channels/1/posts?limit=200&before={newest_anchor}"),
    )
    .await;
    assert!(expected.len() > 30, "{expected:?}");
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=50&offset=20").await,
        expected[20..]
    );
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=50").await,
        expected[..expected.len().min(50)]
    );
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=10&offset=10").await,
        expected[10..20]
    );
}

/// No source says in which order DSM lists a page: the API's pages are newest first whatever
/// it is, read from a NAS paging by offset (proven or not) or from an anchor.
#[actix_web::test]
async fn a_nas_listing_oldest_first_is_paged_newest_first() {
    let app = spawn_app().await;
    post_messages(&app, 1, 14).await;
    let expected = page_ids(&app, "/api/v1/channels/1/posts?limit=200").await;
    assert!(expected.windows(2).all(|w| w[0] > w[1]), "{expected:?}");
    app.sim.set_post_list_oldest_first(true);
    // Unproven, then proven by the full page of eleven, then read in one pass.
    for _ in 0..2 {
        assert_eq!(
            page_ids(&app, "/api/v1/channels/1/posts?limit=11").await,
            expected[..11]
        );
        assert_eq!(
            page_ids(&app, "/api/v1/channels/1/posts?limit=3&offset=3").await,
            expected[3..6]
        );
    }
    let first = "/api/v1/channels/1/posts?limit=4";
    assert_eq!(page_through(&app, 1, first, 4).await, expected);
}

#[actix_web::test]
async fn a_nas_that_pages_from_an_anchor_lists_its_newest_posts_first() {
    use syno_chat_gateway::config::PostListPaging;
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.post_list_paging = PostListPaging::Anchor;
    })
    .await;
    post_messages(&app, 1, 5).await;
    let expected = page_ids(&app, "/api/v1/channels/1/posts?limit=200").await;
    // The simulator as ACE's v8: without an anchor it would answer the oldest post.
    app.sim.set_post_list_anchor_only(true);
    let first = "/api/v1/channels/1/posts?limit=2";
    let newest = app.get(first).await;
    assert_eq!(
        newest.body["items"][0]["message"], "page test 4",
        "{}",
        newest.body
    );
    assert_eq!(page_through(&app, 1, first, 2).await, expected);
    assert_eq!(
        page_ids(&app, "/api/v1/channels/1/posts?limit=2&offset=2").await,
        expected[2..4]
    );
}

#[actix_web::test]
async fn a_json_file_downloads_as_the_file_it_is() {
    let app = spawn_app().await;
    let data = br#"{"success": true, "data": {"report": [1, 2]}}"#;
    let created = upload(
        &app,
        1,
        &[("file", Some(("data.json", "application/json")), data)],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let post_id = created.body["post_id"].as_u64().unwrap();
    // DSM answers it as `application/json` with its file name: a file, not DSM's envelope.
    let mut response = app
        .http
        .get(format!("{}/api/v1/posts/{post_id}/file", app.base))
        .insert_header((
            "Authorization",
            format!("Bearer {}", crate::helpers::READ_KEY),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().await.unwrap().as_ref(), data);
}

/// White space beyond ASCII's (U+00A0, U+3000) is text to the message's own check (which the
/// documented pattern shares), so it goes to DSM like any text and DSM decides: never a 500,
/// never "accepted" with nothing sent.
#[actix_web::test]
async fn a_message_of_unicode_white_space_goes_to_dsm_which_decides() {
    let app = spawn_app().await;
    for text in ["\u{a0}", "\u{3000}", "\u{2028}"] {
        let answer = app
            .call(
                "POST",
                "/api/v1/channels/1/posts",
                Some(crate::helpers::WRITE_KEY),
                Some(serde_json::json!({ "message": text })),
            )
            .await;
        assert!(
            answer.status.as_u16() < 500 || answer.body["dsm_code"].is_i64(),
            "{text:?}: {}",
            answer.body
        );
        let sent = last_request(&app, "SYNO.Chat.Post", "create");
        assert_eq!(param(&sent, "message"), Some(text));
    }
}

/// A caller that asks for a file and never reads it: the download ends once its chunks wait
/// `upstream.timeout_ms`, and the DSM call slot with it. Before, the slot stayed with the
/// connection for as long as the caller kept it open, and `upstream.max_concurrency` such
/// callers stopped every other DSM call (503 `upstream_busy`), the outbox's included.
#[actix_web::test]
async fn a_download_nobody_reads_gives_its_dsm_slot_back() {
    use std::io::Write;
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.max_concurrency = 1;
        s.upstream.timeout_ms = 2_000;
    })
    .await;
    // Larger than what the sockets' buffers and actix's write buffer hold between them.
    let bytes: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let created = upload(
        &app,
        1,
        &[("file", Some(("big.bin", "application/x-test")), &bytes)],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let post_id = created.body["post_id"].as_u64().unwrap();
    let address: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let mut stalled: std::net::TcpStream = socket.into();
    write!(
        stalled,
        "GET /api/v1/posts/{post_id}/file HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {READ_KEY}\r\n\r\n"
    )
    .unwrap();
    // The download has started and stalled; the one slot comes back within the timeout.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(4_500)).await;
    let page = app.get("/api/v1/channels/1/posts?limit=1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    drop(stalled);
}

/// A file to a channel the outbox still has messages for does not overtake them: it waits
/// `delivery.queue_wait_ms` for them and, as the outbox does not keep files, is refused unsent
/// past that (503 `outbox_ahead`); once they are delivered it goes.
#[actix_web::test]
async fn a_file_does_not_overtake_the_outbox_s_messages() {
    let app = spawn_app_with(SimConfig::default(), |s| s.delivery.queue_wait_ms = 2_000).await;
    app.sim
        .turn_away_next("SYNO.Chat.Post", Some("create"), 1, 503, 6);
    let queued = crate::deliveries::post_async(
        &app,
        "/api/v1/channels/2/posts",
        json!({"message": "before the file"}),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let id = queued.body["delivery_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    let file: Part<'_> = ("file", Some(("a.txt", "text/plain")), b"hello");
    let refused = upload(&app, 2, &[file]).await;
    refused.assert_problem(503, "outbox_ahead");
    assert!(refused.header("retry-after").is_some());
    // With a key the upload already holds its slot and its body: told at once, not after
    // the wait.
    let (content_type, body) = multipart_body(&[file]);
    let asked = std::time::Instant::now();
    let response = app
        .http
        .post(format!("{}/api/v1/channels/2/files", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Idempotency-Key", "file-behind-the-queue"))
        .insert_header(("Content-Type", content_type))
        .send_body(body)
        .await
        .expect("gateway answers");
    read(response).await.assert_problem(503, "outbox_ahead");
    assert!(
        asked.elapsed() < std::time::Duration::from_millis(1_500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        creates,
        "nothing sent"
    );
    crate::deliveries::wait_for(&app, &id, "delivered", std::time::Duration::from_secs(20)).await;
    let sent = upload(&app, 2, &[file]).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
}

/// README "Caching": a reply, a file and a direct message move their channel's
/// `last_post_at` as a post does, so each drops the cached channel list.
#[actix_web::test]
async fn replies_files_and_direct_messages_drop_the_cached_channel_list() {
    let app = spawn_app().await;
    let root = create_post(&app, 1, "a thread to answer").await;
    // (channel, the write's path, whether it is a file) — admin and alice talk in channel 4.
    let writes = [
        (1, format!("/api/v1/posts/{root}/replies"), false),
        (1, "/api/v1/channels/1/files".to_owned(), true),
        (4, "/api/v1/users/2/messages".to_owned(), false),
    ];
    for (channel, path, file) in writes {
        let before = app.get(&format!("/api/v1/channels/{channel}")).await;
        assert_eq!(before.status, 200, "{}", before.body);
        actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        let written = if file {
            let part: Part<'_> = ("file", Some(("note.txt", "text/plain")), b"cache probe");
            upload_to(&app, &path, &[part]).await
        } else {
            app.post(&path, json!({"message": "cache probe"})).await
        };
        assert_eq!(written.status, 201, "{path}: {}", written.body);
        let after = app.get(&format!("/api/v1/channels/{channel}")).await;
        assert_eq!(
            after.body["last_post_at"], written.body["create_at"],
            "{path}: {}",
            after.body
        );
        assert_ne!(
            after.body["last_post_at"], before.body["last_post_at"],
            "{path}"
        );
    }
}
