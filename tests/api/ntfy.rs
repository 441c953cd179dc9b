//! ntfy's publish API at `/ntfy` (and JSON at `/`): a hook's name as the topic, its secret as
//! the access token, ntfy's fields in headers, query or JSON; answered as ntfy answers.

use serde_json::json;

use crate::helpers::{Answer, TestApp, nth_post_text, read, spawn_app_with_hooks};

const SECRET: &str = "ntfy-secret-2b7c9d1e4f";

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut request = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base));
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

/// An error as ntfy words it (its clients parse exactly these members), naming the request.
fn ntfy_error(answer: &Answer, status: u16) -> String {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    let members: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    assert_eq!(
        members,
        ["code", "error", "http", "link"],
        "{}",
        answer.body
    );
    assert_eq!(answer.body["http"], status);
    assert_eq!(answer.body["code"], u64::from(status) * 100 + 1);
    let error = answer.body["error"].as_str().unwrap().to_owned();
    let id = answer.header("x-request-id").unwrap();
    assert!(error.contains(id), "{error}");
    error
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {SECRET}"))
}

#[actix_rt::test]
async fn a_topic_urls_body_and_headers_are_posted_and_answered_as_ntfy_does() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET)]).await;
    let (name, value) = bearer();
    let answer = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[
            (name, &value),
            ("Title", "Disk =?"),
            ("X-Tags", "warning,sda"),
            ("Priority", "5"),
            // curl's default for `-d`: the body is still the message as typed.
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"95% full & rising",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["event"], "message");
    assert_eq!(answer.body["topic"], "alerts");
    let id = answer.body["id"].as_str().unwrap();
    assert_eq!(answer.body["delivery_id"], id);
    assert!(answer.header("location").unwrap().ends_with(id));
    assert_eq!(
        nth_post_text(&app, 1).await,
        "‼️⚠️ Disk =?\n95% full & rising\nTags: sda"
    );
    // A title beyond ASCII in an encoded word, as ntfy's clients send it.
    let answer = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[(name, &value), ("X-Title", "=?UTF-8?B?w6l0w6k=?=")],
        b"chaud",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 2).await, "été\nchaud");
}

#[actix_rt::test]
async fn a_get_to_publish_takes_the_query_and_the_token_in_auth() {
    use base64::Engine as _;
    let app = spawn_app_with_hooks(&[("alerts", SECRET)]).await;
    let auth = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Bearer {SECRET}"));
    let answer = send(
        &app,
        "GET",
        &format!(
            "/ntfy/alerts/publish?message=Backup+done&t=NAS&tags=white_check_mark&auth={auth}"
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 1).await, "✅ NAS\nBackup done");
    // Without a message, ntfy's own "triggered".
    let answer = send(
        &app,
        "GET",
        &format!("/ntfy/alerts/trigger?auth={auth}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 2).await, "triggered");
    // ntfy's Markdown, asked for in the query (`md`): its links are links.
    let answer = send(
        &app,
        "GET",
        &format!(
            "/ntfy/alerts/publish?message=%5Blogs%5D(https://nas.example/l)&md=yes&auth={auth}"
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 3).await, "<https://nas.example/l|logs>");
    let other = send(
        &app,
        "GET",
        &format!("/ntfy/alerts/other?auth={auth}"),
        &[],
        b"",
    )
    .await;
    ntfy_error(&other, 404);
    // A HEAD is safe: a link checker's posts nothing (it was answered as the GET and posted).
    let head = send(
        &app,
        "HEAD",
        &format!("/ntfy/alerts/publish?message=head&auth={auth}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET"));
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 3);
}

#[actix_rt::test]
async fn a_json_publish_finds_its_hook_by_token_and_topic() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET)]).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("someone:{SECRET}")
        )
    );
    let body = json!({"topic": "alerts", "title": "Kuma", "message": "web is down",
        "tags": ["red_circle"], "priority": 4});
    // The server URL as written, with a trailing slash (Uptime Kuma posts to it as given), or
    // without a path (Apprise).
    for (count, path) in [(1, "/ntfy"), (2, "/"), (3, "/ntfy/")] {
        let answer = send(
            &app,
            "POST",
            path,
            &[
                ("Authorization", &basic),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(nth_post_text(&app, count).await, "❗🔴 Kuma\nweb is down");
    }
    // Another topic than the hook the token opens, or no hook for the token: nothing posted.
    let elsewhere = json!({"topic": "other", "message": "x"});
    let refused = send(
        &app,
        "POST",
        "/ntfy",
        &[("Authorization", &basic)],
        &serde_json::to_vec(&elsewhere).unwrap(),
    )
    .await;
    ntfy_error(&refused, 404);
    let refused = send(
        &app,
        "POST",
        "/",
        &[("Authorization", "Bearer not-the-secret")],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    ntfy_error(&refused, 404);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 3);
}

#[actix_rt::test]
async fn what_ntfy_would_do_otherwise_is_refused_not_posted_differently() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET)]).await;
    let (name, value) = bearer();
    let wrong = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[("Authorization", "Bearer nope")],
        b"x",
    )
    .await;
    ntfy_error(&wrong, 404);
    let unknown = send(&app, "POST", "/ntfy/nobody", &[(name, &value)], b"x").await;
    ntfy_error(&unknown, 404);
    // Scheduled delivery would post now: refused, with the reason.
    let delayed = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[(name, &value), ("X-Delay", "30m")],
        b"x",
    )
    .await;
    let error = ntfy_error(&delayed, 400);
    assert!(error.contains("delay"), "{error}");
    let loud = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[(name, &value), ("Priority", "9")],
        b"x",
    )
    .await;
    ntfy_error(&loud, 400);
    // A file's bytes are not passed on.
    let file = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[(name, &value)],
        b"\xff\xd8\xff\xe0",
    )
    .await;
    ntfy_error(&file, 400);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
}

/// Apprise puts priority, tags and a delay in headers beside its JSON: taken as ntfy takes them.
/// A proxy's `Priority: u=3, i` is HTTP's, not ntfy's; `curl -T` publishes with PUT.
#[actix_rt::test]
async fn fields_beside_a_json_publish_and_the_other_ways_ntfys_clients_send_them() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET)]).await;
    let (name, value) = bearer();
    let body = json!({"topic": "alerts", "title": "Disk", "message": "95%"});
    let answer = send(
        &app,
        "POST",
        "/",
        &[(name, &value), ("X-Priority", "max"), ("X-Tags", "warning")],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 1).await, "‼️⚠️ Disk\n95%");
    let delayed = send(
        &app,
        "POST",
        "/ntfy",
        &[(name, &value), ("X-Delay", "30m")],
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    ntfy_error(&delayed, 400);
    let proxied = send(
        &app,
        "POST",
        "/ntfy/alerts",
        &[(name, &value), ("Priority", "u=3, i")],
        b"through a proxy",
    )
    .await;
    assert_eq!(proxied.status, 200, "{}", proxied.body);
    assert_eq!(nth_post_text(&app, 2).await, "through a proxy");
    let put = send(
        &app,
        "PUT",
        "/ntfy/alerts",
        &[(name, &value)],
        b"a small log file",
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(nth_post_text(&app, 3).await, "a small log file");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 3);
}
