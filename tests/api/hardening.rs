//! Hostile callers: SSRF through `file_url`, oversized and concurrent uploads, rate limits,
//! cross-site requests and DNS rebinding, download headers, CORS.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{
    ADMIN_KEY, BOT_TOKEN_NAME, READ_KEY, WEBHOOK_TOKEN_NAME, WRITE_KEY, read, spawn_app,
    spawn_app_with,
};

const EXTERNAL: &str = "SYNO.Chat.External";

/// A key or secret as `hash-key` makes them, put where a token's name goes (a hook's URL
/// pasted into an incoming-webhook shape), is not repeated in the answer; a mistyped name is.
#[actix_web::test]
async fn a_secret_given_as_a_token_name_is_not_repeated() {
    let app = spawn_app().await;
    let secret = "scg_85c7e2cbb9f58c3e54ffe42db186fa1f03e63f41b1d88b8eaa95be8854b662fb";
    let answer = app
        .post(
            &format!("/api/v1/webhooks/incoming/{secret}"),
            json!({"text": "x"}),
        )
        .await;
    answer.assert_problem(404, "not_found");
    assert!(
        !answer.body.to_string().contains(&secret[4..]),
        "{}",
        answer.body
    );
    let typo = app
        .post("/api/v1/webhooks/incoming/alertz", json!({"text": "x"}))
        .await;
    typo.assert_problem(404, "not_found");
    assert!(
        typo.body["detail"].as_str().unwrap().contains("`alertz`"),
        "{}",
        typo.body
    );
}

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
        "http://[::1]:8080/x",
        "http://[fd12:3456::1]/x",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
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
    for public in [
        "https://files.example.org/a.pdf",
        "https://[2606:4700::6810:84e5]/a.pdf",
    ] {
        let answer = app
            .post(&webhook, json!({"text": "x", "file_url": public}))
            .await;
        assert_eq!(answer.status, 200, "{public}: {}", answer.body);
    }
    assert_eq!(app.sim.count(EXTERNAL, "incoming"), 2);
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

/// A compressed body is refused before it is read: actix inflates each received chunk whole
/// before a body limit applies, so a small body could become gigabytes (16 KB of gzip here
/// inflates to 16 MB; zstd reaches 30,000:1).
#[actix_web::test]
async fn compressed_request_bodies_are_refused_unread() {
    use std::io::Write;
    let app = spawn_app().await;
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    bomb.write_all(br#"{"message": ""#).unwrap();
    bomb.write_all(&vec![b'a'; 16 << 20]).unwrap();
    bomb.write_all(br#""}"#).unwrap();
    let bomb = bomb.finish().unwrap();
    for (coding, body) in [
        ("gzip", bomb),
        ("zstd", b"not zstd at all".to_vec()),
        ("br", b"{}".to_vec()),
    ] {
        let response = app
            .http
            .post(format!("{}/api/v1/channels/1/posts", app.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Content-Encoding", coding))
            .send_body(body)
            .await
            .expect("gateway answers");
        let answer = read(response).await;
        let problem = answer.assert_problem(415, "unsupported_media_type");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("compressed") && detail.contains(coding),
            "{problem}"
        );
    }
    // `identity` is no compression at all.
    let response = app
        .http
        .post(format!("{}/api/v1/channels/1/posts", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Content-Encoding", "identity"))
        .send_body(r#"{"message": "plain"}"#)
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 201);
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1);
}

/// An upload that sends its headers and part of its body, then stalls (a raw socket: awc
/// holds a streamed body back until it has more to send); with `key`, as an idempotent retry.
fn stalled_upload(address: &str, key: Option<&str>) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    let part =
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello";
    let key = key
        .map(|key| format!("Idempotency-Key: {key}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
         {key}Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{part}\r\n",
        part.len()
    );
    // One write: small writes would wait on Nagle and delayed acknowledgements.
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream
}

/// What has arrived on `stream` so far (nothing when the gateway has not answered yet).
fn answered(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = vec![0u8; 4096];
    match stream.read(&mut answer) {
        Ok(n) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

#[actix_web::test]
async fn concurrent_uploads_are_capped() {
    concurrent_uploads_are_capped_with_keys([None, None]).await;
}

/// An upload with an Idempotency-Key is read whole before the handler: the cap is taken before
/// that, not after the bytes are held.
#[actix_web::test]
async fn concurrent_keyed_uploads_are_capped_before_they_are_read() {
    concurrent_uploads_are_capped_with_keys([Some("upload-a"), Some("upload-b")]).await;
}

async fn concurrent_uploads_are_capped_with_keys(keys: [Option<&str>; 2]) {
    use std::io::Write;
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.max_concurrent_uploads = 1
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // Two uploads that stall halfway: whichever the gateway takes up second is refused.
    let mut uploads = keys.map(|key| stalled_upload(&address, key));
    let mut refused = None;
    for _ in 0..100 {
        for (index, upload) in uploads.iter_mut().enumerate() {
            let answer = answered(upload);
            if !answer.is_empty() {
                refused = Some((index, answer));
            }
        }
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (index, answer) = refused.expect("one of two concurrent uploads is refused");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("uploads_busy"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );

    // The other one finishes; then uploads are accepted again.
    let mut other = uploads.into_iter().nth(1 - index).unwrap();
    let end = "\r\n--b--\r\n";
    let tail = format!("{:x}\r\n{end}\r\n0\r\n\r\n", end.len());
    other.write_all(tail.as_bytes()).unwrap();
    let mut finished = String::new();
    for _ in 0..100 {
        finished = answered(&mut other);
        if !finished.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished.starts_with("HTTP/1.1 201"), "{finished}");
    let again = app
        .http
        .post(format!("{}/api/v1/channels/1/posts", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Content-Type", "multipart/form-data; boundary=b"))
        .send_body("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.txt\"\r\n\r\nx\r\n--b--\r\n")
        .await
        .unwrap();
    assert_eq!(read(again).await.status, 201);
}

#[actix_web::test]
async fn each_key_and_each_address_has_a_rate_limit() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.rate_limit.key_burst = 3;
        s.rate_limit.key_per_minute = 60;
        s.rate_limit.ip_burst = 2;
        s.rate_limit.ip_per_minute = 6;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/channels/1").await.status, 200);
    }
    let limited = app.get("/api/v1/channels/1").await;
    limited.assert_problem(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit"), Some("\"key\";r=0;t=1"));
    assert_eq!(limited.header("ratelimit-policy"), Some("\"key\";q=3;w=3"));
    // Another key has its own bucket.
    assert_eq!(
        app.call("GET", "/api/v1/channels/1", Some(ADMIN_KEY), None)
            .await
            .status,
        200
    );

    // Without a valid key: the client address's bucket (wrong keys included).
    assert_eq!(
        app.call("GET", "/openapi.json", None, None).await.status,
        200
    );
    app.call("GET", "/api/v1/channels/1", Some("wrong-key"), None)
        .await
        .assert_problem(401, "unauthorized");
    let limited = app.call("GET", "/openapi.json", None, None).await;
    limited.assert_problem(429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("10"));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"address\";q=2;w=20")
    );
    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    }
}

/// A sender drops a notification it is refused, and its door answers in its own API's words:
/// ntfy's and Synology's doors are held to no rate limit, as hooks are (a burst is stored and
/// paced by the outbox instead).
#[actix_web::test]
async fn the_senders_doors_are_not_rate_limited() {
    const HOOK_SECRET: &str = "hook-secret-for-a-burst";
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.rate_limit.ip_burst = 1;
        s.rate_limit.ip_per_minute = 1;
        with_alerts_hook(s, HOOK_SECRET);
    })
    .await;
    for n in 0..4 {
        for door in [
            format!(
                "/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2\
                 &token={HOOK_SECRET}&payload=%7B%22text%22%3A%22entry+{n}%22%7D"
            ),
            format!(
                "/ntfy/alerts/publish?message=ntfy+{n}&auth={}",
                ntfy_auth(HOOK_SECRET)
            ),
        ] {
            let sent = app.call("GET", &door, None, None).await;
            assert_eq!(sent.status, 200, "{door}: {}", sent.body);
        }
    }
    // The API's callers without a key are still limited.
    assert_eq!(
        app.call("GET", "/openapi.json", None, None).await.status,
        200
    );
    app.call("GET", "/openapi.json", None, None)
        .await
        .assert_problem(429, "rate_limited");
}

/// A hook `alerts` with `secret`, posting to channel 1.
fn with_alerts_hook(settings: &mut syno_chat_gateway::config::Settings, secret: &str) {
    settings.hooks.insert(
        "alerts".into(),
        syno_chat_gateway::config::HookSettings {
            secret_hash: Some(syno_chat_gateway::auth::hash_key(secret).into()),
            channel: Some("1".into()),
            ..Default::default()
        },
    );
}

/// ntfy's `auth` query parameter for `secret`: `Bearer <secret>`, base64url without padding.
fn ntfy_auth(secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Bearer {secret}"))
}

#[actix_web::test]
async fn rate_limits_can_be_turned_off() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.rate_limit.enabled = false;
        s.rate_limit.ip_burst = 1;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.call("GET", "/openapi.json", None, None).await.status,
            200
        );
    }
}

/// A request with extra headers (browser-like), answered as an [`Answer`].
async fn browser_call(
    app: &crate::helpers::TestApp,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> crate::helpers::Answer {
    let mut request = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base));
    if let Some(key) = key {
        request = request.insert_header(("Authorization", format!("Bearer {key}")));
    }
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let response = if method == "POST" {
        request
            .send_json(&json!({"message": "from a browser"}))
            .await
    } else {
        request.send().await
    };
    read(response.expect("gateway answers")).await
}

#[actix_web::test]
async fn without_keys_cross_site_requests_and_foreign_hosts_are_refused() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.auth.disabled = true;
        s.server.cors_origins = vec!["https://app.example.org".into()];
    })
    .await;
    let posts = "/api/v1/channels/1/posts";
    browser_call(
        &app,
        "POST",
        posts,
        None,
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .await
    .assert_problem(403, "cross_site_request");
    browser_call(
        &app,
        "POST",
        posts,
        None,
        &[("Origin", "http://evil.example")],
    )
    .await
    .assert_problem(403, "cross_site_request");
    browser_call(&app, "POST", posts, None, &[("Origin", "null")])
        .await
        .assert_problem(403, "cross_site_request");
    // DNS rebinding: the attacker's name resolves to the gateway, the Host still says it.
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        None,
        &[("Host", &format!("rebind.attacker.example:{port}"))],
    )
    .await
    .assert_problem(421, "misdirected_request");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);

    // The gateway's own pages (Swagger UI), an allowed CORS origin and non-browser callers.
    let own = browser_call(
        &app,
        "POST",
        posts,
        None,
        &[
            ("Origin", app.base.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(own.status, 201, "{}", own.body);
    let allowed = browser_call(
        &app,
        "POST",
        posts,
        None,
        &[
            ("Origin", "https://app.example.org"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(allowed.status, 201, "{}", allowed.body);
    let localhost = browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        None,
        &[("Host", &format!("localhost:{port}"))],
    )
    .await;
    assert_eq!(localhost.status, 200, "{}", localhost.body);
}

#[actix_web::test]
async fn with_keys_cross_site_calls_need_the_key_anyway() {
    let app = spawn_app().await;
    let answer = browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        Some(READ_KEY),
        &[
            ("Origin", "http://elsewhere.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.header("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn the_host_must_be_the_public_urls() {
    const HOOK_SECRET: &str = "hook-secret-for-any-host";
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.public_url = Some("https://chat.example.org/chat".parse().unwrap());
        with_alerts_hook(s, HOOK_SECRET);
    })
    .await;
    app.get("/api/v1/channels/1")
        .await
        .assert_problem(421, "misdirected_request");
    // A sender in the cluster names the Service, not the public URL; the hook's secret is
    // what it proves itself with.
    let in_cluster = [("Host", "syno-chat-gateway.chat.svc:8080")];
    let hook = format!("/hooks/alerts/{HOOK_SECRET}");
    let sent = browser_call(&app, "POST", &hook, None, &in_cluster).await;
    assert!(sent.status.is_success(), "{} {}", sent.status, sent.body);
    // So does one at the other senders' doors, each opened with the hook's secret.
    let ntfy_auth = ntfy_auth(HOOK_SECRET);
    for door in [
        format!(
            "/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2\
             &token={HOOK_SECRET}&payload=%7B%22text%22%3A%22by+entry.cgi%22%7D"
        ),
        format!("/ntfy/alerts/publish?message=by+ntfy&auth={ntfy_auth}"),
        format!("/telegram/bot{HOOK_SECRET}/sendMessage?chat_id=1&text=by+telegram"),
        format!("/_matrix/client/v3/account/whoami?access_token={HOOK_SECRET}"),
    ] {
        let sent = browser_call(&app, "GET", &door, None, &in_cluster).await;
        assert!(
            sent.status.is_success(),
            "{door}: {} {}",
            sent.status,
            sent.body
        );
    }
    // ntfy's JSON publishing, at the root and at its server URL with and without the slash.
    for server in ["/", "/ntfy", "/ntfy/"] {
        let published = app
            .http
            .post(format!("{}{server}", app.base))
            .insert_header(in_cluster[0])
            .insert_header(("Authorization", format!("Bearer {HOOK_SECRET}")))
            .send_json(&json!({"topic": "alerts", "message": format!("by ntfy at {server}")}))
            .await;
        let published = read(published.expect("gateway answers")).await;
        assert_eq!(published.status, 200, "{server}: {}", published.body);
    }
    // The rest of the root is the API's: held to the public URL's host.
    browser_call(&app, "GET", "/", None, &in_cluster)
        .await
        .assert_problem(421, "misdirected_request");
    browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        Some(READ_KEY),
        &in_cluster,
    )
    .await
    .assert_problem(421, "misdirected_request");
    // A Host that is no host name is not taken for the public one.
    for host in [
        "chat.example.org/",
        "a@chat.example.org",
        "évil.example",
        "",
    ] {
        browser_call(
            &app,
            "GET",
            "/api/v1/channels/1",
            Some(READ_KEY),
            &[("Host", host)],
        )
        .await
        .assert_problem(400, "invalid_request");
    }
    let named = browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        Some(READ_KEY),
        &[("Host", "chat.example.org")],
    )
    .await;
    assert_eq!(named.status, 200, "{}", named.body);
    // Probes address the pod directly.
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
}

/// README "Hardening": with `server.public_url` set, `/inbound/…` (Chat calls it by whatever
/// name leads to the gateway, and proves itself with its token), `/readyz` and `/metrics`
/// (probes and scrapers address the pod) answer any `Host`; an `/api` route does not.
#[actix_web::test]
async fn chat_s_calls_and_probes_are_not_held_to_the_public_url_s_host() {
    let (app, token) = crate::events::app_with_inbounds(|s| {
        s.server.public_url = Some("https://chat.example.org".parse().unwrap());
    })
    .await;
    // The simulator's Chat calls `http://127.0.0.1:<port>/inbound/ops`, not the public host.
    app.sim.post_as_user(3, 2, "!ping through the LAN address");
    let calls = crate::events::outbound_calls(&app, 1).await;
    assert_eq!(
        calls[0].status,
        Some(200),
        "Chat's call was refused: {calls:?}"
    );
    let events = crate::events::stored(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].text, "!ping through the LAN address");
    // The same with another name for the gateway (a Service name, a LAN host name).
    let lan = [("Host", "nas-gateway.lan:8080")];
    let response = app
        .http
        .post(format!("{}/inbound/ops", app.base))
        .insert_header(lan[0])
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(format!(
            "token={token}&channel_id=2&user_id=3&username=alice&post_id=77&timestamp=1700000000000&text=%21ping+by+name"
        ))
        .await
        .expect("gateway answers");
    let answer = read(response).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(crate::events::stored(&app).await.len(), 2);
    // Chat's probe, the readiness probe and the scrape, by any name.
    for path in ["/inbound/ops", "/readyz", "/metrics", "/healthz"] {
        let probe = browser_call(&app, "GET", path, None, &lan).await;
        assert_eq!(probe.status, 200, "{path}: {}", probe.body);
    }
    // The API is still held to the public URL's host.
    browser_call(&app, "GET", "/api/v1/channels/1", Some(READ_KEY), &lan)
        .await
        .assert_problem(421, "misdirected_request");
}

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> crate::helpers::Answer {
    preflight_for(app, origin, "/api/v1/channels/1", "authorization").await
}

async fn preflight_for(
    app: &crate::helpers::TestApp,
    origin: &str,
    path: &str,
    headers: &str,
) -> crate::helpers::Answer {
    browser_call(
        app,
        "OPTIONS",
        path,
        None,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", headers),
        ],
    )
    .await
}

/// A gateway whose CORS allows `origin`.
async fn app_allowing(origin: &str) -> crate::helpers::TestApp {
    let origin = origin.to_owned();
    spawn_app_with(SimConfig::default(), move |s| {
        s.server.cors_origins = vec![origin];
    })
    .await
}

/// A fetch-based SSE client (not EventSource) sends its key and, when resuming, the last id.
#[actix_web::test]
async fn cors_lets_an_event_stream_resume_with_last_event_id() {
    let origin = "https://app.example.org";
    let app = app_allowing(origin).await;
    let answer = preflight_for(
        &app,
        origin,
        "/api/v1/events",
        "authorization,last-event-id",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some(origin));
    let allowed = answer
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
    assert!(allowed.contains("authorization"), "{allowed}");
}

/// A browser app sends asynchronously and idempotently, and reads what the answers name.
#[actix_web::test]
async fn cors_lets_browser_apps_send_async_and_idempotently_and_read_the_answers() {
    let origin = "https://app.example.org";
    let app = app_allowing(origin).await;
    let answer = preflight_for(
        &app,
        origin,
        "/api/v1/channels/1/posts",
        "authorization,content-type,prefer,idempotency-key,if-none-match",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = browser_call(
        &app,
        "GET",
        "/api/v1/channels",
        Some(READ_KEY),
        &[("Origin", origin)],
    )
    .await;
    let exposed = answer
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in [
        "location",
        "etag",
        "preference-applied",
        "idempotent-replayed",
        "x-chat-post-count",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[actix_web::test]
async fn cors_is_opt_in() {
    let origin = "https://app.example.org";
    let closed = spawn_app().await;
    let answer = preflight(&closed, origin).await;
    assert!(answer.header("access-control-allow-origin").is_none());

    let app = app_allowing(origin).await;
    let answer = preflight(&app, origin).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), Some(origin));
    let read_answer = browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        Some(READ_KEY),
        &[("Origin", origin)],
    )
    .await;
    assert_eq!(read_answer.status, 200);
    assert_eq!(
        read_answer.header("access-control-allow-origin"),
        Some(origin)
    );
    assert!(
        read_answer
            .header("access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-request-id")
    );
    let other = browser_call(
        &app,
        "GET",
        "/api/v1/channels/1",
        Some(READ_KEY),
        &[("Origin", "https://other.example")],
    )
    .await;
    assert!(other.header("access-control-allow-origin").is_none());
    // A preflight from another origin, or for a header not allowed, is refused as a problem.
    let refused = preflight(&app, "https://other.example").await;
    let problem = refused.assert_problem(400, "invalid_request");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("CORS preflight"),
        "{problem}"
    );
    preflight_for(&app, origin, "/api/v1/channels/1", "x-not-allowed")
        .await
        .assert_problem(400, "invalid_request");
}

#[actix_web::test]
async fn swagger_ui_persists_the_key_only_when_configured() {
    let initializer = |app: &crate::helpers::TestApp| {
        app.http
            .get(format!("{}/docs/swagger-initializer.js", app.base))
            .send()
    };
    let app = spawn_app().await;
    let mut response = initializer(&app).await.unwrap();
    assert_eq!(response.status(), 200);
    let script = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
    assert!(
        script.contains("persistAuthorization\": false")
            || !script.contains("persistAuthorization\": true"),
        "{script}"
    );
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.docs_persist_authorization = true
    })
    .await;
    let mut response = initializer(&app).await.unwrap();
    let script = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
    assert!(
        script.contains("\"persistAuthorization\": true"),
        "{script}"
    );
}

#[actix_web::test]
async fn downloads_are_attachments_in_a_sandbox() {
    let app = spawn_app().await;
    let (content_type, body) = (
        "multipart/form-data; boundary=b",
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"page.html\"\r\nContent-Type: text/html\r\n\r\n<script>alert(1)</script>\r\n--b--\r\n",
    );
    let created = read(
        app.http
            .post(format!("{}/api/v1/channels/1/posts", app.base))
            .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let post_id = created.body["post_id"].as_u64().unwrap();
    // A file post the bot can read: sent through the webhook into channel 1.
    let sent = app
        .post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({"text": "bot file", "file_url": "https://files.example.org/page.svg"}),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let bot = format!("/api/v1/bots/{BOT_TOKEN_NAME}");
    let newest = app
        .get(&format!("{bot}/channels/1/posts?prev_count=1"))
        .await;
    let bot_post = newest.body["items"][0]["post_id"].as_u64().unwrap();
    for path in [
        format!("/api/v1/posts/{post_id}/file"),
        format!("{bot}/posts/{bot_post}/file"),
        "/api/v1/users/2/avatar".to_owned(),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-security-policy"), "sandbox", "{path}");
        assert!(
            header("content-disposition").starts_with("attachment"),
            "{path}: {}",
            header("content-disposition")
        );
    }
}

/// Opens a connection and sends `request` (head and as much of the body as the test wants).
fn raw(address: &str, request: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    stream
}

/// A gateway in front of a NAS that answers every call `latency` late (after one read at full
/// speed), with the address a raw connection dials.
async fn behind_a_slow_nas(
    latency: Duration,
    adjust: impl FnOnce(&mut syno_chat_gateway::config::Settings),
) -> (crate::helpers::TestApp, String) {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.timeout_ms = 60_000;
        adjust(s);
    })
    .await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim.set_latency(latency);
    let address = app.base.trim_start_matches("http://").to_owned();
    (app, address)
}

/// A post of the JSON `body` to channel 1 on a connection of its own, with `headers` (each
/// ending in CRLF); its answer is not read.
fn raw_post(address: &str, headers: &str, body: &str) -> std::net::TcpStream {
    raw(
        address,
        &format!(
            "POST /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {WRITE_KEY}\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Waits up to `within` for the gateway's answer on `stream` (empty when none came).
async fn answer_within(stream: &mut std::net::TcpStream, within: Duration) -> String {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        let answer = answered(stream);
        if !answer.is_empty() {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    String::new()
}

/// The head of a file upload to `/api/v1/channels/1/files` with the start of its `file`
/// part, whose closing boundary never comes.
fn cut_off_upload(address: &str) -> String {
    let part =
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello";
    format!(
        "POST /api/v1/channels/1/files HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 4096\r\n\r\n{part}"
    )
}

async fn upload_once(app: &crate::helpers::TestApp) -> u16 {
    let response = app
        .http
        .post(format!("{}/api/v1/channels/1/files", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Content-Type", "multipart/form-data; boundary=b"))
        .send_body("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.txt\"\r\n\r\nx\r\n--b--\r\n")
        .await
        .unwrap();
    read(response).await.status.as_u16()
}

#[actix_web::test]
async fn a_stalled_upload_answers_408_and_frees_its_slot() {
    let app = spawn_app_with(SimConfig::default(), |s| s.server.body_timeout_ms = 500).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // As many stalled uploads as there are slots (4).
    let mut stalled: Vec<_> = (0..4)
        .map(|_| raw(&address, &cut_off_upload(&address)))
        .collect();
    for upload in &mut stalled {
        let answer = answer_within(upload, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_eq!(upload_once(&app).await, 201, "the slots are free again");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1);
}

#[actix_web::test]
async fn uploads_cut_off_by_a_disconnect_free_their_slots() {
    // The body deadline is far away: only the end of the connection can free the slots.
    let app = spawn_app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    for _ in 0..4 {
        let upload = raw(&address, &cut_off_upload(&address));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(upload);
    }
    let started = std::time::Instant::now();
    loop {
        let status = upload_once(&app).await;
        if status == 201 {
            break;
        }
        assert_eq!(
            status, 503,
            "only busy while the cut-off uploads are wound up"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cut-off uploads still hold the upload slots"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_trickled_body_is_cut_off_at_the_deadline() {
    use std::io::Write;
    let app = spawn_app_with(SimConfig::default(), |s| s.server.body_timeout_ms = 1_000).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = raw(
        &address,
        &format!(
            "POST /api/v1/channels HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        ),
    );
    // A byte every 100 ms: never idle long enough for the pause limit, still cut off.
    let started = std::time::Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        if stream.write_all(b" ").is_err() {
            break;
        }
        answer = answered(&mut stream);
        if !answer.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if answer.is_empty() {
        answer = answered(&mut stream);
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A chunked body that stalls gets its 408, and the connection is closed: actix announces
/// `Connection: close` but went on reading the chunked body and serving the connection until
/// keep-alive ran out (the sweeper closes it within its second once the 408 is handed over).
#[actix_web::test]
async fn a_chunked_body_that_stalls_gets_408_and_loses_its_connection() {
    use std::io::{Read, Write};
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.body_timeout_ms = 1_000;
        s.server.keep_alive_secs = 30;
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = raw(
        &address,
        &format!(
            "POST /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {WRITE_KEY}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"mes\r\n"
        ),
    );
    let answer = answer_within(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // The rest of the body, then another request, a little later: never answered on this
    // connection.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let _ = stream
        .write_all(format!("0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes());
    let started = std::time::Instant::now();
    let closed = loop {
        let mut rest = [0u8; 256];
        match stream.read(&mut rest) {
            Ok(0) => break true,
            Ok(n) => {
                let more = String::from_utf8_lossy(&rest[..n]).into_owned();
                assert!(
                    !more.contains("HTTP/1.1 200"),
                    "served after its 408: {more}"
                );
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(closed, "the connection outlived its 408 by 12 s");
}

#[actix_web::test]
async fn an_unknown_inbound_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // The body never comes: the name alone decides.
    let mut stream = raw(
        &address,
        &format!(
            "POST /inbound/nope HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken="
        ),
    );
    let answer = answer_within(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    assert!(answer.contains("not_found"), "{answer}");
}

#[actix_web::test]
async fn a_stalled_inbound_body_answers_408() {
    let (app, _) = crate::events::app_with_inbounds(|s| s.server.body_timeout_ms = 500).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = raw(
        &address,
        &format!(
            "POST /inbound/ops HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken="
        ),
    );
    let answer = answer_within(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// An idle keep-alive connection stays open for `server.keep_alive_secs` (longer than the
/// proxies' idle timeouts by default, so they close first), and is closed after it.
#[actix_web::test]
async fn idle_connections_are_kept_for_keep_alive_secs() {
    use std::io::{Read, Write};
    // Set to one second, and the default (actix's own, 5 s, was shorter than every proxy's).
    for (keep_alive_secs, idle, closed) in [(Some(1), 2500, true), (None, 6000, false)] {
        let app = spawn_app_with(SimConfig::default(), |s| {
            if let Some(secs) = keep_alive_secs {
                s.server.keep_alive_secs = secs
            }
        })
        .await;
        let address = app.base.trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
            .unwrap();
        // Read without blocking the test's runtime, which serves the simulator.
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut answer = String::new();
        for _ in 0..100 {
            answer = answered(&mut stream);
            if !answer.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(idle)).await;
        let mut rest = [0u8; 64];
        let after = stream.read(&mut rest);
        assert_eq!(
            matches!(after, Ok(0)),
            closed,
            "keep_alive_secs {keep_alive_secs:?} after {idle} ms idle: {after:?}"
        );
    }
}

/// A later request's head sent a byte at a time does not hold the connection: actix times only
/// a connection's first head, so the gateway gives a later head the same 5 s from its first
/// byte (well before keep-alive's 30 s here). A connection whose requests come in time stays
/// open.
#[actix_web::test]
async fn a_later_request_head_sent_slowly_is_cut_off() {
    use std::io::{Read, Write};
    let app = spawn_app_with(SimConfig::default(), |s| s.server.keep_alive_secs = 30).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let connect = || {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        stream
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let (mut slow, mut steady) = (connect(), connect());
    for stream in [&mut slow, &mut steady] {
        stream.write_all(request.as_bytes()).unwrap();
        let answer = answer_within(stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    slow.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let started = std::time::Instant::now();
    let mut closed_after = None;
    let mut steady_answers = 0;
    while started.elapsed() < Duration::from_secs(12) && closed_after.is_none() {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // A byte of the head, as long as the connection takes them.
        let sent = slow.write_all(b"a");
        let mut rest = [0u8; 64];
        if sent.is_err() || matches!(slow.read(&mut rest), Ok(0)) {
            closed_after = Some(started.elapsed());
        }
        // The other connection's requests come well within keep-alive.
        steady.write_all(request.as_bytes()).unwrap();
        let answer = answer_within(&mut steady, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        steady_answers += 1;
    }
    let closed_after = closed_after.expect("the slow head still held its connection after 12 s");
    // The head deadline (5 s), noticed within the sweeper's second (and its first look).
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(9)).contains(&closed_after),
        "closed after {closed_after:?}"
    );
    assert!(steady_answers >= 12, "{steady_answers}");
}

/// Idle client connections beyond `server.max_connections` wait in the kernel's queue instead
/// of taking descriptors the gateway needs for the NAS and its store; one comes in as soon as
/// another closes.
#[actix_web::test]
async fn client_connections_beyond_the_cap_wait_their_turn() {
    use std::io::{Read, Write};
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.workers = Some(1);
        s.server.max_connections = Some(2);
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let answered = |stream: &mut std::net::TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_millis(1_500)))
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
    };
    // Kept-alive connections take the places (the test's own client may hold one already);
    // by the third at the latest one must wait.
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    let mut waiting = None;
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let (served, stream) = actix_web::rt::task::spawn_blocking(move || {
            let served = answered(&mut stream);
            (served, stream)
        })
        .await
        .unwrap();
        if !served {
            waiting = Some(stream);
            break;
        }
        held.push(stream);
    }
    let mut third = waiting.expect("every connection was served beyond the cap of 2");
    drop(held.pop());
    let served = actix_web::rt::task::spawn_blocking(move || answered(&mut third))
        .await
        .unwrap();
    assert!(
        served,
        "the waiting connection was not served once a place came free"
    );
}

/// A caller's very long value is not echoed whole: neither the detail nor `instance` grows
/// with it.
#[actix_web::test]
async fn a_very_long_path_value_is_clipped_in_the_problem() {
    let app = spawn_app().await;
    let long = "9".repeat(20_000);
    let answer = app.get(&format!("/api/v1/channels/{long}")).await;
    answer.assert_problem(400, "invalid_request");
    let detail = answer.body["detail"].as_str().unwrap();
    let instance = answer.body["instance"].as_str().unwrap();
    assert!(detail.len() < 200 && detail.contains('…'), "{detail}");
    assert!(
        instance.len() < 1100 && instance.ends_with('…'),
        "{instance}"
    );
    assert!(answer.body.to_string().len() < 2_000);
}

#[actix_web::test]
async fn a_request_whose_caller_has_gone_gives_back_its_dsm_slot() {
    // One upstream slot and a NAS that hangs: a caller that gave up must not keep the slot
    // (and its DSM call) for the NAS's 30 s, or its own retry waits behind it.
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.upstream.max_concurrency = 1;
        s.upstream.timeout_ms = 60_000;
    })
    .await;
    assert_eq!(app.get("/api/v1/channels/1/posts").await.status, 200);
    app.sim.set_latency(Duration::from_secs(30));
    let address = app.base.trim_start_matches("http://").to_owned();
    let caller = raw(
        &address,
        &format!(
            "GET /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\n\
             Authorization: Bearer {READ_KEY}\r\n\r\n"
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(caller);
    app.sim.set_latency(Duration::ZERO);
    let started = std::time::Instant::now();
    loop {
        let answer = app.get("/api/v1/users").await;
        if answer.status == 200 {
            break;
        }
        answer.assert_problem(503, "upstream_busy");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the request whose caller went away still holds the DSM slot"
        );
    }
    // Counted as nginx counts a request its caller closed before the answer.
    let answer = app.call("GET", "/metrics", None, None).await;
    let metrics = answer.body.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            r#"synochat_http_requests_total{route="/api/v1/channels/{channel_id}/posts",method="GET",status="499"} 1"#
        ),
        "{metrics}"
    );
    // This scrape alone.
    assert!(
        metrics.contains("synochat_http_requests_in_flight 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="cancelled"} 1"#
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_write_whose_caller_has_gone_is_carried_out_whole() {
    // A long message sent synchronously, posted in three parts by a slow NAS: its caller gives
    // up after the first part. Cut off there, the message would stay a third posted.
    let (app, address) = behind_a_slow_nas(Duration::from_millis(700), |s| {
        s.delivery.max_message_chars = 100;
    })
    .await;
    let before = app.sim.count("SYNO.Chat.Post", "create");
    let body = json!({ "message": "word ".repeat(55) }).to_string();
    let caller = raw_post(&address, "", &body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(caller);
    let started = std::time::Instant::now();
    while app.sim.count("SYNO.Chat.Post", "create") < before + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the message was cut off: {} of its 3 parts posted",
            app.sim.count("SYNO.Chat.Post", "create") - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// README "Hardening", Callers that give up: a client that half-closes its connection after
/// sending a write (`shutdown(SHUT_WR)`, as `nc -N` does) is taken to have gone, but the write
/// it sent is carried out, whole.
#[actix_web::test]
async fn a_write_from_a_caller_that_half_closes_is_carried_out() {
    let (app, address) = behind_a_slow_nas(Duration::from_millis(300), |_| {}).await;
    let before = app.sim.count("SYNO.Chat.Post", "create");
    let body = json!({ "message": "sent then half-closed" }).to_string();
    let caller = raw_post(&address, "", &body);
    caller.shutdown(std::net::Shutdown::Write).unwrap();
    let started = std::time::Instant::now();
    while app.sim.count("SYNO.Chat.Post", "create") < before + 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the half-closed caller's write was dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.sim.set_latency(Duration::ZERO);
    let listed = app.get("/api/v1/channels/1/posts?limit=5").await;
    let made = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["message"] == "sent then half-closed")
        .count();
    assert_eq!(made, 1, "{}", listed.body);
    drop(caller);
}

/// When a keyed write's caller leaves, against the gateway's stop.
#[derive(Clone, Copy)]
enum CallerLeaves {
    BeforeTheStop,
    DuringTheStop,
}

/// A keyed post to a slow NAS whose caller leaves (`when`) as the gateway stops: the write is
/// carried out, and its retry after the restart is answered with the answer kept for it.
async fn a_keyed_write_outlives_its_caller(when: CallerLeaves, key: &str) {
    let (app, address) = behind_a_slow_nas(Duration::from_millis(1_500), |s| {
        s.server.shutdown_timeout_secs = 10;
    })
    .await;
    let body = json!({ "message": format!("sent with the key {key}") });
    let caller = raw_post(
        &address,
        &format!("Idempotency-Key: {key}\r\n"),
        &body.to_string(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = match when {
        CallerLeaves::BeforeTheStop => {
            drop(caller);
            tokio::time::sleep(Duration::from_millis(100)).await;
            app.restarted().await
        }
        CallerLeaves::DuringTheStop => {
            let handle = app.handle.clone();
            let stop = actix_web::rt::spawn(async move { handle.stop(true).await });
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(caller);
            stop.await.unwrap();
            app.restarted().await
        }
    };
    app.sim.set_latency(Duration::ZERO);
    let retry = app
        .http
        .post(format!("{}/api/v1/channels/1/posts", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .insert_header(("Idempotency-Key", key))
        .send_json(&body)
        .await
        .unwrap();
    let retry = read(retry).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}

#[actix_web::test]
async fn a_stop_waits_for_writes_whose_callers_have_gone() {
    // Its caller gone, its connection is too: the server's own drain found nothing to wait for
    // and dropped the write half done (and its key's claim panicked as its worker ended).
    a_keyed_write_outlives_its_caller(CallerLeaves::BeforeTheStop, "before-the-stop").await;
}

#[actix_web::test]
async fn a_write_whose_caller_leaves_during_the_stop_is_carried_out() {
    // The stop began while its caller still waited; then the caller left, taking along the
    // connection the server's drain waited for, and the write was dropped with its worker.
    a_keyed_write_outlives_its_caller(CallerLeaves::DuringTheStop, "during-the-stop").await;
}

#[actix_web::test]
async fn a_stop_cuts_what_is_still_open_when_its_time_is_up() {
    // A write that ends late, and a read asked meanwhile on a connection kept open: after the
    // wait for the write, the server's own drain gave the read its whole timeout again.
    let (app, address) = behind_a_slow_nas(Duration::from_millis(4_000), |s| {
        s.server.shutdown_timeout_secs = 5;
    })
    .await;
    let _writer = raw_post(&address, "", &json!({ "message": "ends late" }).to_string());
    // Taken before the stop, which takes no new connection.
    let reader = std::net::TcpStream::connect(&address).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handle = app.handle.clone();
    let stopping = std::time::Instant::now();
    let stop = actix_web::rt::spawn(async move { handle.stop(true).await });
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    {
        use std::io::Write;
        (&reader)
            .write_all(
                format!(
                    "GET /api/v1/channels/1/posts HTTP/1.1\r\nHost: {address}\r\n\
                     Authorization: Bearer {READ_KEY}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
    }
    stop.await.unwrap();
    let took = stopping.elapsed();
    // The write (4 s from its start, half a second before the stop) was waited for; the read
    // (4 s from 3 s into the stop) was not, past the stop's 5 s.
    assert!(took >= Duration::from_millis(3_200), "{took:?}");
    assert!(
        took < Duration::from_millis(6_300),
        "the stop took {took:?}"
    );
}
