//! Behind Debian's nginx under `/chat/`, with the shipped test template: the docs, the
//! document's `servers`, problem links and API calls all carry the public prefix.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{READ_KEY, spawn_app_with};

struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits. SIGKILL alone left them
        // running, orphaned, after every test run.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The nginx binary, or `None` after saying loudly that the test is skipped (under `CI=true`
/// a missing nginx fails instead: `.ci/run` installs it).
fn nginx_or_skip(test: &str) -> Option<&'static str> {
    let binary = nginx_binary();
    if binary.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is required in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {test}: nginx is not installed (apt-get install nginx)");
    }
    binary
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(binary: &str, upstream: SocketAddr, prefix: &str) -> (Nginx, u16) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("synochat-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // nginx's workers run as `nobody` when started by root: they must reach the temp dirs.
    let _ = Command::new("chmod").arg("0755").arg(&dir).status();
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/nginx/test-template.conf"
    ))
    .unwrap();
    let config = template
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@PREFIX@", prefix);
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-e", "stderr"])
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Nginx { child, dir }, port)
}

#[actix_web::test]
async fn the_gateway_works_behind_nginx_under_a_prefix() {
    let Some(binary) = nginx_or_skip("reverse-proxy test") else {
        return;
    };
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let upstream: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let (_nginx, port) = start_nginx(binary, upstream, "/chat");
    let public = format!("http://127.0.0.1:{port}");
    let get = |path: String, key: Option<&'static str>| {
        let mut request = app.http.get(format!("{public}{path}"));
        if let Some(key) = key {
            request = request.insert_header(("Authorization", format!("Bearer {key}")));
        }
        async move {
            let mut response = request.send().await.expect("nginx answers");
            let body = response.body().limit(8 * 1024 * 1024).await.unwrap();
            (
                response.status().as_u16(),
                response.headers().clone(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };

    let (status, headers, _) = get("/chat/docs".into(), None).await;
    assert_eq!(status, 308);
    assert_eq!(
        headers.get("location").unwrap(),
        "docs/",
        "relative, so the browser stays under /chat/"
    );
    let (status, _, page) = get("/chat/docs/".into(), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("swagger-ui"));
    let (_, _, initializer) = get("/chat/docs/swagger-initializer.js".into(), None).await;
    assert!(
        initializer.contains("../openapi.json"),
        "the UI fetches the document relative to /chat/docs/"
    );

    let (status, _, document) = get("/chat/openapi.json".into(), None).await;
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    assert_eq!(
        document["servers"][0]["url"],
        format!("{public}/chat"),
        "Try it out goes through the proxy"
    );

    let (status, _, channels) = get("/chat/api/v1/channels".into(), Some(READ_KEY)).await;
    assert_eq!(status, 200, "{channels}");
    assert!(channels.contains("general"));
    let (status, _, problem) = get("/chat/api/v1/channels/abc".into(), Some(READ_KEY)).await;
    assert_eq!(status, 400);
    let problem: serde_json::Value = serde_json::from_str(&problem).unwrap();
    assert_eq!(problem["instance"], "/chat/api/v1/channels/abc");

    // Straight to the gateway (no proxy headers), the document names the direct origin.
    let direct = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(direct.body["servers"][0]["url"], app.base);
}

/// While the gateway is down, nginx closes an event stream's connection instead of answering
/// its 502 page: a browser's EventSource gives up for good on an answer that is not a stream,
/// and reconnects after a network error. Other routes still get the 502.
#[actix_web::test]
async fn an_event_stream_through_nginx_to_a_gateway_that_is_down_is_a_network_error() {
    use std::io::{Read, Write};
    let Some(binary) = nginx_or_skip("reverse-proxy test") else {
        return;
    };
    // Nothing listens there.
    let down = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let (_nginx, port) = start_nginx(binary, down, "/chat");
    let ask = |path: &str| {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let stream = ask("/chat/api/v1/events");
    assert_eq!(stream, "", "the connection is closed without an answer");
    let other = ask("/chat/api/v1/channels");
    assert!(other.starts_with("HTTP/1.1 502"), "{other}");
}

#[actix_web::test]
async fn chat_events_come_in_and_stream_out_through_nginx() {
    let Some(binary) = nginx_or_skip("reverse-proxy SSE test") else {
        return;
    };
    let (app, token) = crate::events::app_with_inbounds(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.events.heartbeat_ms = 200;
    })
    .await;
    let upstream: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let (_nginx, port) = start_nginx(binary, upstream, "/chat");
    let public = format!("http://127.0.0.1:{port}");
    // Chat calls the inbound URL through the proxy.
    assert!(
        app.sim
            .set_integration_url(&token, &format!("{public}/chat/inbound/ops"))
    );
    let mut stream = crate::events::Sse::open(&public, "/chat/api/v1/events", None).await;
    assert_eq!(
        stream.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    // Each heartbeat comes on its own, not when a buffer fills.
    for _ in 0..3 {
        assert!(matches!(
            stream.next(Duration::from_secs(2)).await,
            crate::events::Frame::Comment(_)
        ));
    }
    let post_id = app.sim.post_as_user(3, 2, "!ping through the proxy");
    let started = Instant::now();
    let (_, kind, data) = stream.next_event(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(kind, "trigger_word");
    assert_eq!(data["post_id"], post_id);
    assert_eq!(
        crate::events::outbound_calls(&app, 1).await[0].status,
        Some(200)
    );
}

/// Behind a trusted proxy that sends its public origin (no nginx needed: the test is the
/// proxy), every `Location` and self-link carries the public scheme, host and prefix.
#[actix_web::test]
async fn locations_and_self_links_carry_the_public_prefix() {
    use serde_json::json;
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let call = |method: &str, path: &str, key: &str, body: Option<serde_json::Value>| {
        let request = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("X-Forwarded-Proto", "https"))
            .insert_header(("X-Forwarded-Host", "example.org"))
            .insert_header(("X-Forwarded-Prefix", "/chat/"))
            .insert_header(("Prefer", "respond-async"));
        async move {
            let response = match body {
                Some(body) => request.send_json(&body).await,
                None => request.send().await,
            };
            crate::helpers::read(response.unwrap()).await
        }
    };
    let public = "https://example.org/chat";

    let created = call(
        "POST",
        "/api/v1/channels",
        crate::helpers::WRITE_KEY,
        Some(json!({"name": "behind-proxy", "type": "public"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["channel_id"].as_u64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("{public}/api/v1/channels/{id}").as_str())
    );

    let queued = call(
        "POST",
        "/api/v1/channels/1/posts",
        crate::helpers::WRITE_KEY,
        Some(json!({"message": "later"})),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let delivery = queued.body["delivery_id"].as_str().unwrap();
    assert_eq!(
        queued.header("location"),
        Some(format!("{public}/api/v1/deliveries/{delivery}").as_str())
    );

    let subscribed = call(
        "POST",
        "/api/v1/subscriptions",
        crate::helpers::ADMIN_KEY,
        Some(json!({"url": "https://receiver.example.org/in"})),
    )
    .await;
    assert_eq!(subscribed.status, 201, "{}", subscribed.body);
    let subscription = subscribed.body["subscription_id"].as_str().unwrap();
    assert_eq!(
        subscribed.header("location"),
        Some(format!("{public}/api/v1/subscriptions/{subscription}").as_str())
    );

    let webhooks = call("GET", "/api/v1/webhooks/incoming", READ_KEY, None).await;
    assert_eq!(
        webhooks.body["items"][0]["url"],
        format!(
            "{public}/api/v1/webhooks/incoming/{}",
            crate::helpers::WEBHOOK_TOKEN_NAME
        )
    );
}

/// With `server.public_url`, self-links are made under it.
#[actix_web::test]
async fn self_links_use_the_configured_public_url() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.server.public_url = Some("https://gw.example.org/gw/".parse().unwrap());
    })
    .await;
    let response = app
        .http
        .get(format!("{}/api/v1/webhooks/incoming", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .insert_header(("Host", "gw.example.org"))
        .send()
        .await
        .unwrap();
    let webhooks = crate::helpers::read(response).await;
    assert_eq!(webhooks.status, 200, "{}", webhooks.body);
    assert_eq!(
        webhooks.body["items"][0]["url"],
        format!(
            "https://gw.example.org/gw/api/v1/webhooks/incoming/{}",
            crate::helpers::WEBHOOK_TOKEN_NAME
        )
    );
}
