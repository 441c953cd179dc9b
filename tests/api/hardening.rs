//! Hostile callers: SSRF through `file_url`, oversized and concurrent uploads, rate limits,
//! cross-site requests and DNS rebinding, download headers, CORS.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{
    BOT_TOKEN_NAME, WEBHOOK_TOKEN_NAME, WRITE_KEY, read, spawn_app, spawn_app_with,
};

const EXTERNAL: &str = "SYNO.Chat.External";

#[actix_web::test]
async fn file_urls_naming_internal_hosts_are_refused() {
    let app = spawn_app().await;
    let webhook = format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}");
    for url in [
        "http://127.0.0.1/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:5000/admin",
        "http://nas.localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.1.1/x",
        "http://2130706433/x",
    ] {
        let answer = app
            .post(&webhook, json!({"text": "x", "file_url": url}))
            .await;
        let detail = answer.assert_problem(422, "unprocessable")["detail"].clone();
        assert!(detail.as_str().unwrap().contains("file_url"), "{detail}");
    }
    app.post(
        &format!("/api/v1/bots/{BOT_TOKEN_NAME}/messages"),
        json!({"text": "x", "user_ids": [2], "file_url": "http://127.0.0.1/x"}),
    )
    .await
    .assert_problem(422, "unprocessable");
    assert_eq!(app.sim.count(EXTERNAL, "incoming"), 0);
    assert_eq!(app.sim.count(EXTERNAL, "chatbot"), 0);
    let public = app
        .post(
            &webhook,
            json!({"text": "x", "file_url": "https://files.example.org/a.pdf"}),
        )
        .await;
    assert_eq!(public.status, 200, "{}", public.body);
}

#[actix_web::test]
async fn operators_can_allow_lan_file_urls() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.file_url_allow = vec!["192.168.1.0/24".into(), "localhost".into()];
    })
    .await;
    let webhook = format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}");
    for url in [
        "http://192.168.1.20/report.pdf",
        "http://localhost/report.pdf",
    ] {
        let answer = app
            .post(&webhook, json!({"text": "x", "file_url": url}))
            .await;
        assert_eq!(answer.status, 200, "{url}: {}", answer.body);
    }
    app.post(
        &webhook,
        json!({"text": "x", "file_url": "http://192.168.2.20/x"}),
    )
    .await
    .assert_problem(422, "unprocessable");
}

/// A multipart body sent chunked (no Content-Length) whose preamble never reaches a boundary.
fn endless_preamble(
    total: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let chunk = Bytes::from(vec![b'a'; 16 * 1024]);
    futures_util::stream::iter((0..total / chunk.len()).map(move |_| Ok(chunk.clone())))
}

#[actix_web::test]
async fn a_chunked_upload_is_cut_off_at_the_limit() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.max_upload_bytes = 1024).await;
    let response = app
        .http
        .post(format!("{}/api/v1/channels/1/posts", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Content-Type", "multipart/form-data; boundary=never-sent"))
        .send_stream(endless_preamble(256 * 1024))
        .await
        .expect("gateway answers");
    read(response)
        .await
        .assert_problem(413, "payload_too_large");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
}

#[actix_web::test]
async fn concurrent_uploads_are_capped() {
    use std::io::{Read, Write};
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.max_concurrent_uploads = 1
    })
    .await;
    let upload = |name: &'static str| {
        app.http
            .post(format!("{}/api/v1/channels/1/posts", app.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Content-Type", "multipart/form-data; boundary=b"))
            .send_body(format!(
                "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\nx\r\n--b--\r\n"
            ))
    };
    // The first upload sends its headers and part of its body, then stalls (a raw socket:
    // awc holds a streamed body back until it has more to send).
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled.set_nodelay(true).unwrap();
    let part =
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello";
    let head = format!(
        "POST /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{part}\r\n",
        part.len()
    );
    // One write: small writes would wait on Nagle and delayed acknowledgements.
    stalled.write_all(head.as_bytes()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let busy = read(upload("b.txt").await.unwrap()).await;
    busy.assert_problem(503, "uploads_busy");
    assert!(busy.header("retry-after").is_some());

    // The first one finishes; then uploads are accepted again.
    let end = "\r\n--b--\r\n";
    let tail = format!("{:x}\r\n{end}\r\n0\r\n\r\n", end.len());
    stalled.write_all(tail.as_bytes()).unwrap();
    let first = actix_web::rt::task::spawn_blocking(move || {
        let mut answer = vec![0u8; 4096];
        let n = stalled.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(first.starts_with("HTTP/1.1 201"), "{first}");
    assert_eq!(read(upload("c.txt").await.unwrap()).await.status, 201);
}
