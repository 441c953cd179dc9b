//! `/webapi/entry.cgi`: Synology Chat's own incoming-webhook URL, so tools with a native
//! Synology Chat notifier post through the outbox by changing only the host.

use secrecy::SecretString;
use serde_json::{Value, json};
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::config::HookSettings;
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{Answer, TestApp, param, read, spawn_app_with};

const SECRET: &str = "hook-secret-for-native-senders";

async fn app() -> TestApp {
    spawn_app_with(SimConfig::default(), |settings| {
        let hook = |channel: &str| HookSettings {
            secret_hash: Some(SecretString::from(hash_key(SECRET))),
            channel: Some(channel.into()),
            ..HookSettings::default()
        };
        settings.hooks.insert("ops".into(), hook("1"));
    })
    .await
}

fn url(token: &str) -> String {
    format!("/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2&token={token}")
}

/// A POST of `body` as it is, with `content_type` when given.
async fn call(app: &TestApp, path: &str, content_type: Option<&str>, body: &str) -> Answer {
    let mut request = app.http.post(format!("{}{path}", app.base));
    if let Some(content_type) = content_type {
        request = request.insert_header(("Content-Type", content_type));
    }
    read(
        request
            .send_body(body.to_owned())
            .await
            .expect("gateway answers"),
    )
    .await
}

/// `payload=<json>` URL-encoded, as Apprise and `curl --data-urlencode` send it.
fn form(payload: &Value) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// Waits for the `count`-th call of `method` that DSM took, and returns its parameters.
async fn taken(app: &TestApp, api: &str, method: &str, count: usize) -> Vec<(String, String)> {
    for _ in 0..200 {
        let taken: Vec<_> = app
            .sim
            .requests()
            .into_iter()
            .filter(|r| {
                r.api.as_deref() == Some(api)
                    && r.method.as_deref() == Some(method)
                    && r.error_code.is_none()
            })
            .collect();
        if taken.len() >= count {
            return taken[count - 1].params.clone();
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{api} {method} was not taken {count} times");
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Apprise's call: the webhook's own token in quotes in the query, an encoded form payload with
/// a file; answered as DSM answers, while the NAS is down too, and posted once it is back.
#[actix_rt::test]
async fn a_native_sender_posts_through_the_webhooks_own_token() {
    let app = app().await;
    let token = app.sim.demo_webhook_token();
    let path = url(&format!("%22{token}%22"));
    let payload = json!({"text": "Backup 100% done & verified <https://nas.example/logs|logs>",
        "file_url": "https://files.example.org/report.pdf"});
    app.sim.refuse_connections(true).await;
    let answer = call(
        &app,
        &path,
        Some("application/x-www-form-urlencoded"),
        &form(&payload),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["success"], true);
    let delivery = answer.body["data"]["delivery_id"].as_str().unwrap();
    assert_eq!(
        answer.header("location"),
        Some(format!("{}/api/v1/deliveries/{delivery}", app.base).as_str())
    );
    app.sim.refuse_connections(false).await;
    let sent = taken(&app, "SYNO.Chat.External", "incoming", 1).await;
    assert_eq!(field(&sent, "token"), Some(token.as_str()));
    let sent: Value = serde_json::from_str(field(&sent, "payload").unwrap()).unwrap();
    assert_eq!(sent["text"], payload["text"]);
    assert_eq!(sent["file_url"], payload["file_url"]);
    // DSM took it; the outbox records it right after.
    let mut state = Value::Null;
    for _ in 0..100 {
        state = app
            .get(&format!("/api/v1/deliveries/{delivery}"))
            .await
            .body;
        if state["state"] == "delivered" {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "delivered", "{state}");
}

/// ioBroker's image message: a `file_url` and no text, through the webhook's own token, is
/// posted as DSM posts it (the file, no text); to a hook, or without a file, it is refused.
#[actix_rt::test]
async fn a_file_alone_goes_through_the_webhooks_token() {
    let app = app().await;
    let token = app.sim.demo_webhook_token();
    let image = json!({"file_url": "https://files.example.org/cam.jpg"});
    let answer = call(&app, &url(&token), None, &format!("payload={image}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = taken(&app, "SYNO.Chat.External", "incoming", 1).await;
    let sent: Value = serde_json::from_str(field(&sent, "payload").unwrap()).unwrap();
    assert_eq!(sent, image, "the file, and no text");
    for (token, body) in [
        (SECRET.to_owned(), image.clone()),
        (token, json!({"text": ""})),
    ] {
        let refused = call(&app, &url(&token), None, &format!("payload={body}")).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!(refused.body["error"]["code"], 101);
    }
}

/// Home Assistant's call: a hook's secret as the token, `payload=` and the JSON unencoded with
/// no Content-Type. DSM splits such a body at an `&` and loses the message; here it arrives
/// whole. A GET with the payload in the query posts too; a HEAD posts nothing.
#[actix_rt::test]
async fn a_bare_payload_to_a_hooks_secret_arrives_whole() {
    let app = app().await;
    let path = url(SECRET);
    let answer = call(&app, &path, None, r#"payload={"text": "CPU 50% & rising"}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = taken(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(
        (field(&sent, "channel_id"), field(&sent, "message")),
        (Some("1"), Some("CPU 50% & rising"))
    );

    let query = format!(
        "{path}&{}",
        form(&json!({"text": "by GET <https://x.example|x>"}))
    );
    let got = app
        .http
        .get(format!("{}{query}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read(got).await.status, 200);
    let sent = taken(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(
        field(&sent, "message"),
        Some("by GET <https://x.example|x>")
    );
    // Also at Apprise's `//webapi/…`: a HEAD never posts as its GET would.
    for prefix in ["", "/"] {
        let head = app
            .http
            .head(format!("{}{prefix}{query}", app.base))
            .send()
            .await
            .unwrap();
        assert_ne!(head.status(), 200, "HEAD {prefix}{query}");
    }
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.sim.count("SYNO.Chat.Post", "create"),
        2,
        "HEAD posts nothing"
    );
}

/// `curl -F payload=…` (a multipart body) posts as a form does; a hook that checks its
/// senders' signatures is not reachable by its secret alone at this URL; a token pasted into
/// the path is not logged.
#[actix_rt::test]
async fn multipart_signed_hooks_and_pasted_tokens() {
    let app = spawn_app_with(SimConfig::default(), |settings| {
        let hook = HookSettings {
            secret_hash: Some(SecretString::from(hash_key(SECRET))),
            channel: Some("1".into()),
            ..HookSettings::default()
        };
        settings.hooks.insert("ops".into(), hook);
        let signed = HookSettings {
            secret_hash: Some(SecretString::from(hash_key("signed-hook-secret"))),
            signing_secret: Some(SecretString::from("signing-secret-0c1d2e3f4a5b")),
            channel: Some("1".into()),
            ..HookSettings::default()
        };
        settings.hooks.insert("signed".into(), signed);
    })
    .await;
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\n{{\"text\":\"from a form\"}}\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let answer = call(&app, &url(SECRET), Some(&content_type), &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = taken(&app, "SYNO.Chat.Post", "create", 1).await;
    assert_eq!(field(&sent, "message"), Some("from a form"));
    // Every field in the multipart body, the token and the call's names too (`curl -F`).
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let body = [
        part("api", "SYNO.Chat.External"),
        part("method", "incoming"),
        part("version", "2"),
        part("token", &format!("\"{SECRET}\"")),
        part("payload", r#"{"text":"all fields & 100% + more"}"#),
        format!("--{boundary}--\r\n"),
    ]
    .concat();
    let answer = call(&app, "/webapi/entry.cgi", Some(&content_type), &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = taken(&app, "SYNO.Chat.Post", "create", 2).await;
    assert_eq!(field(&sent, "message"), Some("all fields & 100% + more"));

    let unsigned = call(
        &app,
        &url("signed-hook-secret"),
        None,
        &form(&json!({"text": "x"})),
    )
    .await;
    assert_eq!(unsigned.status, 404, "{}", unsigned.body);

    let pasted = app
        .http
        .get(format!("{}/webapi/entry.cgi/pasted-token-1234", app.base))
        .send()
        .await
        .unwrap();
    let pasted = read(pasted).await;
    assert!(
        !pasted.body.to_string().contains("pasted-token-1234"),
        "{}",
        pasted.body
    );
}

/// A probe carries no body, so it takes no body slot: two slow bodies from the same address
/// (all the unproven ones it may hold) do not turn ioBroker's start-up probe away.
#[actix_rt::test]
async fn a_probe_is_answered_while_slow_bodies_hold_the_slots() {
    use std::io::Write;
    let app = app().await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let path = "/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2";
    let slow: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 1000\r\n\r\ntoken="
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
        })
        .collect();
    actix_rt::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let probe = app
        .http
        .get(format!(
            "{}/webapi/entry.cgi?api=SYNO.Chat.External&method=kuchen&version=2",
            app.base
        ))
        .send()
        .await
        .unwrap();
    let probe = read(probe).await;
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.body["error"]["code"], 103);
    drop(slow);
}

/// A chatbot's call (`method=chatbot` with its own token and `user_ids`), as chatbots built
/// on Chat's bot URL make it, goes to each user through the outbox; a webhook's token does not
/// open the chatbot's door, nor the chatbot's token the webhook's.
#[actix_rt::test]
async fn a_chatbots_call_reaches_its_users() {
    let app = app().await;
    let bot = app.sim.demo_bot_token();
    let path = url(&format!("%22{bot}%22")).replace("method=incoming", "method=chatbot");
    let answer = call(
        &app,
        &path,
        None,
        r#"payload={"text": "build 7 passed & deployed", "user_ids": [2]}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["success"], true);
    let sent = taken(&app, "SYNO.Chat.External", "chatbot", 1).await;
    let sent: Value = serde_json::from_str(field(&sent, "payload").unwrap()).unwrap();
    assert_eq!(
        (sent["text"].as_str(), sent["user_ids"].clone()),
        (Some("build 7 passed & deployed"), json!([2]))
    );

    let webhook = app.sim.demo_webhook_token();
    for (token, method) in [(webhook.as_str(), "chatbot"), (bot.as_str(), "incoming")] {
        let path = url(token).replace("method=incoming", &format!("method={method}"));
        let body = form(&json!({"text": "t", "user_ids": [2]}));
        let refused = call(
            &app,
            &path,
            Some("application/x-www-form-urlencoded"),
            &body,
        )
        .await;
        assert_eq!(refused.status, 404, "{method}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], 404);
    }
}

/// An `Idempotency-Key` sent again with the same text is the same delivery, posted once.
#[actix_rt::test]
async fn a_repeated_key_is_the_same_delivery() {
    let app = app().await;
    let path = url(SECRET);
    let body = form(&json!({"text": "once"}));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let answer = read(
            app.http
                .post(format!("{}{path}", app.base))
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .insert_header(("Idempotency-Key", "native-1"))
                .send_body(body.clone())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        ids.push((
            answer.body["data"]["delivery_id"].clone(),
            answer.header("idempotent-replayed").map(str::to_owned),
        ));
    }
    assert_eq!(ids[0].0, ids[1].0);
    assert_eq!(
        (ids[0].1.as_deref(), ids[1].1.as_deref()),
        (None, Some("true"))
    );
    taken(&app, "SYNO.Chat.Post", "create", 1).await;
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 1);

    // The key names the whole message: the same key with other recipients is another one.
    let bot = app.sim.demo_bot_token();
    let path = url(&bot).replace("method=incoming", "method=chatbot");
    let mut delivered = Vec::new();
    for users in [json!([2]), json!([2, 3])] {
        let answer = read(
            app.http
                .post(format!("{}{path}", app.base))
                .insert_header(("Idempotency-Key", "native-2"))
                .send_body(format!(
                    "payload={}",
                    json!({"text": "same", "user_ids": users})
                ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("idempotent-replayed"), None);
        delivered.push(answer.body["data"]["delivery_id"].clone());
    }
    assert_ne!(delivered[0], delivered[1]);
}

/// A body whose token is not in the query is read before anything proves its sender: it may
/// hold 256 KiB.
#[actix_rt::test]
async fn an_unproven_body_is_small() {
    let app = app().await;
    let path = "/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2";
    let big = form(&json!({"text": "x".repeat(300 * 1024)}));
    let answer = call(&app, path, None, &format!("token={SECRET}&{big}")).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], 120);
    let small = form(&json!({"text": "token in the body"}));
    let answer = call(&app, path, None, &format!("token={SECRET}&{small}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// Every refusal is an HTTP error status (DSM's senders judge by it) with a problem that also
/// carries DSM's envelope and number; nothing is posted.
#[actix_rt::test]
async fn refusals_answer_an_error_status_with_dsms_envelope() {
    let app = app().await;
    let text = form(&json!({"text": "t"}));
    let encoded = Some("application/x-www-form-urlencoded");
    let cases: Vec<(String, String, u16, u16)> = vec![
        (url("not-a-token"), text.clone(), 404, 404),
        (url(""), text.clone(), 404, 404),
        // A hook's secret is no chatbot's token.
        (
            url(SECRET).replace("method=incoming", "method=chatbot"),
            form(&json!({"text": "t", "user_ids": [2]})),
            404,
            404,
        ),
        // Messages for what this URL does not serve (without one, a probe: below).
        (
            url(SECRET).replace("method=incoming", "method=user_list"),
            text.clone(),
            404,
            103,
        ),
        (
            url(SECRET).replace("SYNO.Chat.External", "SYNO.API.Info"),
            text.clone(),
            404,
            102,
        ),
        (
            url(SECRET).replace("version=2", "version=3"),
            text.clone(),
            404,
            104,
        ),
        (
            url(SECRET).replace("&version=2", ""),
            text.clone(),
            400,
            101,
        ),
        (url(SECRET), String::new(), 400, 120),
        (url(SECRET), "payload=%7Bnot".into(), 400, 120),
        (url(SECRET), form(&json!({"text": " "})), 400, 101),
        (
            url(SECRET),
            form(&json!({"text": "t", "attachments": [{"actions": [{"type": "button"}]}]})),
            400,
            120,
        ),
        (
            url(SECRET),
            form(&json!({"text": "t", "file_url": "ftp://x.example/a"})),
            400,
            117,
        ),
        // Only an incoming webhook takes a file; this hook posts to a channel.
        (
            url(SECRET),
            form(&json!({"text": "t", "file_url": "https://x.example/a.png"})),
            422,
            117,
        ),
    ];
    for (path, body, status, number) in cases {
        let answer = call(&app, &path, encoded, &body).await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{path} {body}: {}",
            answer.body
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(answer.body["success"], false, "{path}");
        assert_eq!(answer.body["error"]["code"], number, "{path} {body}");
        assert!(answer.body["request_id"].is_string());
        assert!(answer.body["code"].is_string());
        assert!(
            !answer.body.to_string().contains(SECRET),
            "no secret in {}",
            answer.body
        );
    }
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 0);
}

/// A call without a message for what this URL does not serve is answered as DSM answers it:
/// ioBroker's adapter probes `method=kuchen` and starts only on its 103.
#[actix_rt::test]
async fn a_probe_without_a_message_gets_dsms_own_answer() {
    let app = app().await;
    for (query, number) in [
        ("api=SYNO.Chat.External&method=kuchen&version=2", 103),
        ("api=SYNO.API.Nothing&method=incoming&version=2", 102),
        ("api=SYNO.Chat.External&method=incoming&version=9", 104),
    ] {
        let probe = app
            .http
            .get(format!("{}/webapi/entry.cgi?{query}", app.base))
            .send()
            .await
            .unwrap();
        let probe = read(probe).await;
        assert_eq!(probe.status, 200, "{query}: {}", probe.body);
        assert_eq!(probe.body["success"], false);
        assert_eq!(probe.body["error"]["code"], number, "{query}");
    }
}

/// Apprise's path quirks: `synology://host/token/` sends `//webapi/entry.cgi`, a `fullpath`
/// goes before it. Its payload is not URL-encoded: `&` and `+` arrive as written.
#[actix_rt::test]
async fn apprises_paths_and_unencoded_payload_arrive() {
    let app = app().await;
    let query = url(SECRET);
    for (n, prefix) in ["/", "/sub/dir"].into_iter().enumerate() {
        let answer = call(
            &app,
            &format!("{prefix}{query}"),
            Some("application/x-www-form-urlencoded"),
            &format!(r#"payload={{"text": "Title\r\nC++ & Rust {n}"}}"#),
        )
        .await;
        assert_eq!(answer.status, 200, "{prefix}: {}", answer.body);
        let sent = taken(&app, "SYNO.Chat.Post", "create", n + 1).await;
        assert_eq!(
            field(&sent, "message"),
            Some(format!("Title\r\nC++ & Rust {n}").as_str())
        );
    }
    let _ = param;
}
