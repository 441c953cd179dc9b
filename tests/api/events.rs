//! Inbound events end to end: the simulator's outgoing webhook, slash command and chatbot call
//! the gateway's `/inbound/{name}` as Chat would, and consumers read the events back.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use syno_chat_gateway::config::{InboundKind, InboundSettings};
use syno_chat_gateway::events::EventFilter;
use syno_chat_gateway::sim::SimConfig;
use syno_chat_gateway::store::Store;

use crate::helpers::{ADMIN_KEY, READ_KEY, TestApp, spawn_app_with_sim};

/// Channel 2 of the simulator's demo data, and a member of it.
const CHANNEL: i64 = 2;
const USER: i64 = 3;

/// A gateway with inbound `ops` fed by a `!ping` outgoing webhook on channel 2, `deploy` by
/// the slash command `/deploy` and `helper` by the demo chatbot. Returns the app and the
/// outgoing webhook's token.
pub async fn app_with_inbounds(
    adjust: impl FnOnce(&mut syno_chat_gateway::config::Settings),
) -> (TestApp, String) {
    let mut tokens = Vec::new();
    let app = spawn_app_with_sim(SimConfig::default(), |settings, sim| {
        let hook = sim.add_outgoing_webhook(CHANNEL, "!ping", "");
        let slash = sim.add_slash_command("deploy", "");
        for (name, token, kind) in [
            ("ops", hook.clone(), InboundKind::OutgoingWebhook),
            ("deploy", slash.clone(), InboundKind::SlashCommand),
            ("helper", sim.demo_bot_token(), InboundKind::Chatbot),
        ] {
            settings.inbound.receivers.insert(
                name.to_owned(),
                InboundSettings {
                    token: Some(SecretString::from(token.clone())),
                    token_file: None,
                    kind,
                    ..Default::default()
                },
            );
            tokens.push((name, token));
        }
        adjust(settings);
    })
    .await;
    for (name, token) in &tokens {
        assert!(
            app.sim
                .set_integration_url(token, &format!("{}/inbound/{name}", app.base)),
            "{name}"
        );
    }
    (app, tokens[0].1.clone())
}

/// Waits until the simulator has made `count` outbound calls (and had their answers).
pub async fn outbound_calls(
    app: &TestApp,
    count: usize,
) -> Vec<syno_chat_gateway::sim::OutboundEvent> {
    for _ in 0..250 {
        let calls = app.sim.outbound_events();
        if calls.len() >= count {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the simulator made {} calls, not {count}",
        app.sim.outbound_events().len()
    );
}

pub async fn stored(app: &TestApp) -> Vec<syno_chat_gateway::events::Event> {
    let store = Store::connect(&syno_chat_gateway::config::StoreSettings {
        url: app.store_url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = store
        .events_after(0, &EventFilter::default(), 1000)
        .await
        .unwrap();
    store.close().await;
    events
}

async fn post_form(app: &TestApp, path: &str, body: String) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(body)
        .await
        .expect("gateway answers");
    let answer = crate::helpers::read(response).await;
    (answer.status.as_u16(), answer.body)
}

#[actix_web::test]
async fn a_post_in_chat_becomes_one_stored_event() {
    let (app, _) = app_with_inbounds(|_| {}).await;
    app.sim.post_as_user(USER, CHANNEL, "not for the hook");
    let post_id = app.sim.post_as_user(USER, CHANNEL, "!ping the NAS");
    let calls = outbound_calls(&app, 1).await;
    assert_eq!(calls.len(), 1, "only the trigger word fires");
    assert_eq!(
        calls[0].status,
        Some(200),
        "the gateway accepted Chat's call"
    );
    assert_eq!(
        calls[0].reply_post_id, None,
        "an empty answer posts nothing"
    );

    let events = stored(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.kind.as_str(), "trigger_word");
    assert_eq!(event.inbound, "ops");
    assert_eq!(event.channel_id, Some(CHANNEL));
    assert!(event.channel_name.as_deref().is_some_and(|n| !n.is_empty()));
    assert_eq!(
        event.channel_type,
        Some(1),
        "the simulator's public channel"
    );
    assert_eq!(event.user_id, Some(USER));
    assert!(event.username.is_some());
    assert_eq!(event.post_id, Some(post_id));
    assert_eq!(event.thread_id, Some(0));
    assert!(event.timestamp.unwrap() > 1_600_000_000_000);
    assert_eq!(event.text, "!ping the NAS");
    assert_eq!(event.trigger_word.as_deref(), Some("!ping"));
    assert!(event.event_id > 0);
}

#[actix_web::test]
async fn slash_commands_and_chatbot_messages_are_events_too() {
    let (app, _) = app_with_inbounds(|_| {}).await;
    app.sim.post_as_user(USER, CHANNEL, "/deploy web now");
    app.sim.message_chatbot(USER, 6, "help me");
    outbound_calls(&app, 2).await;
    let events = stored(&app).await;
    let slash = events.iter().find(|e| e.inbound == "deploy").unwrap();
    assert_eq!(slash.kind.as_str(), "slash_command");
    assert_eq!(slash.command.as_deref(), Some("/deploy"));
    assert_eq!(slash.text, "/deploy web now");
    let bot = events.iter().find(|e| e.inbound == "helper").unwrap();
    assert_eq!(bot.kind.as_str(), "chatbot");
    assert_eq!(bot.text, "help me");
    assert_eq!(bot.user_id, Some(USER));
    assert!(slash.event_id != bot.event_id);
}

/// Chat posts a button click as a form with one field, `payload`, holding JSON with the token
/// inside (upstream/PROTOCOL.md §5.3). Each click is an event, even two on one message.
#[actix_web::test]
async fn clicks_on_a_chatbots_buttons_are_events() {
    let (app, _) = app_with_inbounds(|_| {}).await;
    let message = (7_i64 << 32) + 5;
    let click = |token: &str, value: &str| {
        let payload = json!({
            "actions": [{"type": "button", "name": "deploy", "value": value,
                "text": "Deploy", "style": "green"}],
            "callback_id": "release-7", "post_id": message, "token": token,
            "user": {"user_id": USER, "username": "alice"},
        });
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish()
    };
    let token = app.sim.demo_bot_token();
    for value in ["deploy web", "deploy web"] {
        let (status, body) = post_form(&app, "/inbound/helper", click(&token, value)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, problem) = post_form(&app, "/inbound/helper", click(&"x".repeat(64), "no")).await;
    assert_eq!(status, 403, "{problem}");
    // A payload that cannot be read holds no token that could be checked: refused as any
    // call without it, the caller told nothing of the body.
    let (status, problem) = post_form(&app, "/inbound/helper", "payload=%7Bbroken".into()).await;
    assert_eq!(status, 403, "{problem}");
    assert!(!problem.to_string().contains("JSON"), "{problem}");

    let page = app.get("/api/v1/events?kind=button_click").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "two clicks, two events: {}", page.body);
    for event in items {
        assert_eq!(event["kind"], "button_click");
        assert_eq!(event["inbound"], "helper");
        assert_eq!(event["post_id"], message);
        assert_eq!(event["channel_id"], 7);
        assert_eq!(event["user_id"], USER);
        assert_eq!(event["username"], "alice");
        assert_eq!(event["text"], "deploy web");
        assert_eq!(event["button"]["callback_id"], "release-7");
        assert_eq!(
            event["button"]["actions"],
            json!([{"type": "button", "name": "deploy", "value": "deploy web",
                "text": "Deploy", "style": "green"}])
        );
    }
    // Other events carry no `button`.
    app.sim.message_chatbot(USER, 6, "help me");
    outbound_calls(&app, 1).await;
    let page = app.get("/api/v1/events?kind=chatbot").await;
    let event = &page.body["items"][0];
    assert_eq!(event["text"], "help me", "{}", page.body);
    assert!(event.get("button").is_none(), "{event}");
}

#[actix_web::test]
async fn a_wrong_or_missing_token_is_refused_and_nothing_is_stored() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    let wrong = "x".repeat(64);
    for body in [
        format!("token={wrong}&channel_id=2&post_id=11&text=hi"),
        "channel_id=2&post_id=12&text=hi".to_owned(),
        format!("token={}&post_id=13&text=hi", &token[..63]),
    ] {
        let (status, problem) = post_form(&app, "/inbound/ops", body.clone()).await;
        assert_eq!(status, 403, "{body}: {problem}");
        assert_eq!(problem["code"], "inbound_token_rejected");
        assert!(!problem.to_string().contains(&token));
    }
    // The right token on another inbound is refused too.
    let (status, _) = post_form(
        &app,
        "/inbound/deploy",
        format!("token={token}&text=%2Fdeploy"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(stored(&app).await.is_empty());

    let (status, problem) = post_form(&app, "/inbound/nobody", format!("token={token}")).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "not_found");
}

#[actix_web::test]
async fn the_same_post_twice_is_stored_once() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    let body = format!(
        "token={token}&channel_id=2&user_id=3&post_id=77&text=%21ping+x&trigger_word=%21ping"
    );
    // The second time to the URL pasted with a trailing slash: still the same inbound.
    for path in ["/inbound/ops", "/inbound/ops/"] {
        assert_eq!(post_form(&app, path, body.clone()).await.0, 200, "{path}");
    }
    // A JSON body is accepted as well; no post id: no deduplication.
    for _ in 0..2 {
        let answer = app
            .call(
                "POST",
                "/inbound/ops",
                None,
                Some(serde_json::json!({"token": token, "channel_id": 2, "text": "plain"})),
            )
            .await;
        assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    }
    let events = stored(&app).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].post_id, Some(77));
    assert_eq!(events[1].kind.as_str(), "message");
    assert!(events[0].event_id < events[1].event_id && events[1].event_id < events[2].event_id);
}

#[actix_web::test]
async fn a_burst_from_chat_is_not_rate_limited() {
    // The NAS is one client address; a burst larger than that address's bucket is all stored.
    let (app, token) = app_with_inbounds(|s| {
        s.rate_limit.ip_burst = 2;
        s.rate_limit.ip_per_minute = 6;
    })
    .await;
    for post_id in 1..=6 {
        let body = format!("token={token}&channel_id=2&user_id=3&post_id={post_id}&text=hi");
        let (status, answer) = post_form(&app, "/inbound/ops", body).await;
        assert_eq!(status, 200, "post {post_id}: {answer}");
    }
    assert_eq!(stored(&app).await.len(), 6);
    // The address's bucket still limits everything else.
    for _ in 0..2 {
        app.call("GET", "/openapi.json", None, None).await;
    }
    app.call("GET", "/openapi.json", None, None)
        .await
        .assert_problem(429, "rate_limited");
}

#[actix_web::test]
async fn probes_get_chats_acknowledgement_and_a_malformed_number_loses_only_its_field() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    for method in ["GET", "HEAD"] {
        let answer = app.call(method, "/inbound/ops", None, None).await;
        assert_eq!(answer.status.as_u16(), 200, "{method}");
        let expected = match method {
            "GET" => serde_json::json!({"success": true}),
            _ => Value::Null,
        };
        assert_eq!(answer.body, expected, "{method}");
        if method == "HEAD" {
            let length = answer
                .headers
                .get("content-length")
                .map(|v| v.to_str().unwrap());
            assert_eq!(
                length,
                Some("16"),
                "HEAD: the GET's length, without its body"
            );
        }
        let unknown = app.call(method, "/inbound/nobody", None, None).await;
        assert_eq!(unknown.status.as_u16(), 404, "{method}");
    }
    let answer = app
        .call("PUT", "/inbound/ops", None, Some(serde_json::json!({})))
        .await;
    answer.assert_problem(405, "method_not_allowed");
    assert_eq!(answer.header("allow"), Some("GET, HEAD, POST"));
    assert!(stored(&app).await.is_empty());
    // The token is right: a number Chat wrote otherwise is left out, the event is kept (a
    // refusal would lose it: Chat does not send it again).
    let (status, answer) = post_form(
        &app,
        "/inbound/ops",
        format!("token={token}&channel_id=two&user_id=4&text=x"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let events = stored(&app).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].channel_id, events[0].user_id), (None, Some(4)));
    // A call sent as GET (a redirect turned Chat's POST into one) is received, not probed;
    // with a wrong token it is refused like a POST.
    let query = format!("/inbound/ops?token={token}&post_id=77&text=via+get");
    let answer = app.call("GET", &query, None, None).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    let events = stored(&app).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].text, "via get");
    let wrong = app
        .call("GET", "/inbound/ops?token=wrong&text=x", None, None)
        .await;
    wrong.assert_problem(403, "inbound_token_rejected");
    assert_eq!(stored(&app).await.len(), 2);
}

/// A long text is long encoded: 30,000 CJK characters are 270 KB of form, received whole.
#[actix_web::test]
async fn a_long_cjk_message_is_received() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    let text = "你".repeat(30_000);
    let body = form_urlencoded::Serializer::new(format!("token={token}&"))
        .append_pair("text", &text)
        .finish();
    assert!(body.len() > 256 * 1024);
    let (status, answer) = post_form(&app, "/inbound/ops", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(stored(&app).await[0].text, text);
}

/// A Server-Sent Events reader over a gateway response, line by line as the WHATWG parser
/// reads (and as strictly as httpx-sse: a blank line with nothing before it is a frame).
pub struct Sse {
    response: awc::ClientResponse<actix_web::dev::Decompress<actix_web::dev::Payload>>,
    buffer: String,
    /// The lines of the block being read.
    block: Vec<String>,
    pub headers: actix_web::http::header::HeaderMap,
    /// The opening block, as sent.
    pub opening: String,
    /// The resume point the opening block gave (its `id:`).
    pub ready_id: i64,
    /// Everything received after the opening block.
    pub raw: String,
}

/// One frame: (id, event, data) for events, or a comment.
#[derive(Debug)]
pub enum Frame {
    Event {
        id: i64,
        event: String,
        data: Value,
    },
    Comment(String),
    /// `event: ready` with an `id:` and `data: {"resume": id}`.
    Ready {
        id: i64,
    },
    /// `event: gap` without an id: the events after `after` up to `purged_through` are gone.
    Gap {
        data: Value,
    },
    /// A blank line ending a block with no field: nothing for a browser, but an empty
    /// `message` event for httpx-sse once it has seen an id.
    Empty,
}

impl Sse {
    pub async fn open(base: &str, path: &str, last_event_id: Option<i64>) -> Self {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let mut request = client
            .get(format!("{base}{path}"))
            .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
            .insert_header(("Accept", "text/event-stream"));
        if let Some(id) = last_event_id {
            request = request.insert_header(("Last-Event-ID", id.to_string()));
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status().as_u16(), 200);
        let headers = response.headers().clone();
        let mut sse = Self {
            response,
            buffer: String::new(),
            block: Vec::new(),
            headers,
            opening: String::new(),
            ready_id: -1,
            raw: String::new(),
        };
        // The opening block comes at once: `retry:`, the resume point, `event: ready`.
        while !sse.buffer.contains("\n\n") {
            sse.read_chunk(tokio::time::Instant::now() + WAIT).await;
        }
        let end = sse.buffer.find("\n\n").unwrap() + 2;
        sse.opening = sse.buffer[..end].to_owned();
        sse.raw = sse.buffer[end..].to_owned();
        match sse.next(WAIT).await {
            Frame::Ready { id } => sse.ready_id = id,
            other => panic!("the stream opens with `event: ready`, not {other:?}"),
        }
        sse
    }

    async fn read_chunk(&mut self, deadline: tokio::time::Instant) -> Option<()> {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout_at(deadline, self.response.next())
            .await
            .expect("a frame in time")?
            .expect("readable");
        let text = std::str::from_utf8(&chunk).unwrap();
        self.buffer.push_str(text);
        self.raw.push_str(text);
        Some(())
    }

    /// The next frame (skipping a block of `retry:` alone), or a panic after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=end).collect();
                let line = line.trim_end_matches('\n');
                if let Some(comment) = line.strip_prefix(':') {
                    return Frame::Comment(comment.trim().to_owned());
                }
                if !line.is_empty() {
                    self.block.push(line.to_owned());
                    continue;
                }
                let block = std::mem::take(&mut self.block);
                if block.is_empty() {
                    return Frame::Empty;
                }
                let field = |name: &str| {
                    block
                        .iter()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                };
                let id = field("id").map(|v| v.parse::<i64>().expect("a numeric id"));
                match (id, field("event"), field("data")) {
                    (Some(id), Some("ready"), Some(data)) => {
                        let data: Value = serde_json::from_str(data).expect("JSON data");
                        assert_eq!(data, serde_json::json!({"resume": id}));
                        return Frame::Ready { id };
                    }
                    (Some(id), Some(event), Some(data)) => {
                        return Frame::Event {
                            id,
                            event: event.to_owned(),
                            data: serde_json::from_str(data).expect("JSON data"),
                        };
                    }
                    (None, Some("gap"), Some(data)) => {
                        return Frame::Gap {
                            data: serde_json::from_str(data).expect("JSON data"),
                        };
                    }
                    (None, None, None) if field("retry").is_some() => {}
                    _ => panic!("an unexpected block: {block:?}"),
                }
            }
            self.read_chunk(deadline).await.expect("the stream goes on");
        }
    }

    /// The next event, skipping comments.
    pub async fn next_event(&mut self, wait: Duration) -> (i64, String, Value) {
        loop {
            match self.next(wait).await {
                Frame::Event { id, event, data } => return (id, event, data),
                Frame::Comment(_) => {}
                other => panic!("{other:?} on a stream already opened"),
            }
        }
    }

    /// Whether the stream ends (the server closes it) within `wait`, reading what comes.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(
                deadline,
                futures_util::StreamExt::next(&mut self.response),
            )
            .await
            {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Makes Chat send `count` distinct trigger-word posts to inbound `ops` (as the simulator's
/// outgoing webhook would), straight to the gateway.
pub async fn send_posts(base: &str, token: &str, first_post: i64, count: i64) {
    let client = awc::Client::default();
    for post_id in first_post..first_post + count {
        let response = client
            .post(format!("{base}/inbound/ops"))
            .send_form(&[
                ("token", token),
                ("channel_id", "2"),
                ("post_id", &post_id.to_string()),
                ("text", &format!("!ping {post_id}")),
                ("trigger_word", "!ping"),
            ])
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[actix_web::test]
async fn a_post_in_chat_reaches_an_sse_client() {
    let (app, _) = app_with_inbounds(|_| {}).await;
    let mut stream = Sse::open(&app.base, "/api/v1/events", None).await;
    assert_eq!(
        stream.headers.get("content-type").unwrap(),
        "text/event-stream"
    );
    assert_eq!(stream.headers.get("x-accel-buffering").unwrap(), "no");
    let post_id = app.sim.post_as_user(USER, CHANNEL, "!ping from the UI");
    let (id, kind, data) = stream.next_event(WAIT).await;
    assert_eq!(kind, "trigger_word");
    assert_eq!(data["event_id"], id);
    assert_eq!(data["post_id"], post_id);
    assert_eq!(data["text"], "!ping from the UI");
    assert_eq!(data["inbound"], "ops");
    assert_eq!(data["channel_id"], CHANNEL);
}

#[actix_web::test]
async fn last_event_id_replays_exactly_then_continues_live_without_gap_or_duplicate() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    send_posts(&app.base, &token, 100, 5).await;
    let first = stored(&app).await[0].event_id;
    // A client that saw the first event reconnects while more keep arriving.
    let mut stream = Sse::open(&app.base, "/api/v1/events", Some(first)).await;
    let base = app.base.clone();
    let writer = actix_web::rt::spawn(async move { send_posts(&base, &token, 200, 40).await });
    let mut seen = Vec::new();
    while seen.len() < 44 {
        let (id, _, data) = stream.next_event(WAIT).await;
        seen.push((id, data["post_id"].as_i64().unwrap()));
    }
    writer.await.unwrap();
    let expected: Vec<(i64, i64)> = stored(&app)
        .await
        .into_iter()
        .skip(1)
        .map(|e| (e.event_id, e.post_id.unwrap()))
        .collect();
    assert_eq!(
        seen, expected,
        "every event after the first, once, in order"
    );
    // ?after= does the same for clients that cannot send headers.
    let last = expected.last().unwrap().0;
    let mut from_query = Sse::open(
        &app.base,
        &format!("/api/v1/events?after={}", last - 1),
        None,
    )
    .await;
    assert_eq!(from_query.next_event(WAIT).await.0, last);

    // A resume point this store never gave (another gateway's, or from before the store was
    // replaced) is refused: resuming there would skip every event until the ids caught up.
    let beyond = last + 1_000;
    app.get(&format!("/api/v1/events?after={beyond}"))
        .await
        .assert_problem(409, "conflict");
    let refused = awc::Client::new()
        .get(format!("{}/api/v1/events", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Last-Event-ID", beyond.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    assert_eq!(
        app.get(&format!("/api/v1/events?after={last}"))
            .await
            .status,
        200
    );
}

/// A replay of large events queues a bounded number of bytes for its client and reads the
/// rest again once they are taken (a client that stopped reading held a page of 500 events,
/// up to a MiB each: the events audit). Every event still comes once, in order, and the
/// small ones after them too.
#[actix_web::test]
async fn a_replay_of_large_events_comes_whole_and_in_order() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    let client = awc::Client::default();
    for post_id in 1..=40 {
        let text = format!("!ping {post_id} {}", "x".repeat(40_000));
        let response = client
            .post(format!("{}/inbound/ops", app.base))
            .send_form(&[
                ("token", token.as_str()),
                ("channel_id", "2"),
                ("post_id", &post_id.to_string()),
                ("text", &text),
                ("trigger_word", "!ping"),
            ])
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    send_posts(&app.base, &token, 100, 30).await;
    let mut stream = Sse::open(&app.base, "/api/v1/events?after=0", None).await;
    let mut seen = Vec::new();
    while seen.len() < 70 {
        let (id, _, data) = stream.next_event(WAIT).await;
        seen.push((id, data["post_id"].as_i64().unwrap()));
    }
    let expected: Vec<(i64, i64)> = stored(&app)
        .await
        .into_iter()
        .map(|e| (e.event_id, e.post_id.unwrap()))
        .collect();
    assert_eq!(seen, expected);
}

/// An event committed without a wake (an insert the store's deadline cut off, which SQLite's
/// writer still carried to its end; the caller got 503) reaches the live streams all the same:
/// the table is read every few seconds on SQLite too, not only on PostgreSQL.
#[actix_web::test]
async fn an_event_committed_without_a_wake_still_reaches_the_streams() {
    use secrecy::ExposeSecret as _;
    let (app, token) = app_with_inbounds(|_| {}).await;
    let mut stream = Sse::open(&app.base, "/api/v1/events", None).await;
    // The stream is live once it has passed an event on (its replay read the table itself).
    send_posts(&app.base, &token, 1, 1).await;
    stream.next_event(WAIT).await;
    let writer = sqlx::SqlitePool::connect(app.store_url.expose_secret())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (inbound, kind, channel_id, text, received_at) \
         VALUES ('ops', 'message', 2, 'committed late', 1)",
    )
    .execute(&writer)
    .await
    .unwrap();
    let (_, kind, data) = stream.next_event(WAIT).await;
    assert_eq!(
        (kind.as_str(), &data["text"]),
        ("message", &json!("committed late"))
    );
}

#[actix_web::test]
async fn streams_filter_and_send_heartbeats() {
    let (app, token) = app_with_inbounds(|s| s.events.heartbeat_ms = 50).await;
    let mut slash_only = Sse::open(&app.base, "/api/v1/events?kind=slash_command", Some(0)).await;
    let mut heartbeats = 0;
    while heartbeats < 2 {
        if let Frame::Comment(text) = slash_only.next(WAIT).await {
            assert_eq!(text, "heartbeat");
            heartbeats += 1;
        }
    }
    send_posts(&app.base, &token, 1, 2).await;
    app.sim.post_as_user(USER, CHANNEL, "/deploy api");
    let (_, kind, data) = slash_only.next_event(WAIT).await;
    assert_eq!(kind, "slash_command");
    assert_eq!(data["command"], "/deploy");
    let mut other_channel = Sse::open(&app.base, "/api/v1/events?channel_id=1", Some(0)).await;
    send_posts(&app.base, &token, 3, 1).await;
    // Nothing from channel 2 comes through: only heartbeats.
    for _ in 0..3 {
        assert!(matches!(other_channel.next(WAIT).await, Frame::Comment(_)));
    }
}

/// `event-source-polyfill` (the usual way to send a key from a browser) resumes with
/// `?lastEventId=` appended to its URL: it wins over the URL's own `after`, as the header does.
#[actix_web::test]
async fn a_polyfill_reconnect_resumes_from_its_query_parameter() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    send_posts(&app.base, &token, 1, 3).await;
    let ids: Vec<i64> = stored(&app).await.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 3);
    let path = format!("/api/v1/events?after=0&lastEventId={}", ids[0]);
    let mut resumed = Sse::open(&app.base, &path, None).await;
    assert_eq!(resumed.next_event(WAIT).await.0, ids[1]);
    assert_eq!(resumed.next_event(WAIT).await.0, ids[2]);
    // A JSON page reads it too.
    let page = app
        .http
        .get(format!("{}{path}", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .insert_header(("Accept", "application/json"))
        .send()
        .await
        .unwrap();
    let page = crate::helpers::read(page).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    let paged: Vec<i64> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(paged, ids[1..]);
}

/// A client that drops before its first event still has a resume point: the opening block's
/// id (0 for an empty store).
#[actix_web::test]
async fn a_stream_opened_without_last_event_id_gives_a_resume_point() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    // Empty store: the resume point is 0, and 0 replays every event kept.
    let first = Sse::open(&app.base, "/api/v1/events", None).await;
    assert_eq!(first.ready_id, 0);
    assert_eq!(
        first.opening,
        "retry: 3000\nid: 0\nevent: ready\ndata: {\"resume\":0}\n\n"
    );
    drop(first);
    send_posts(&app.base, &token, 1, 2).await;
    let mut resumed = Sse::open(&app.base, "/api/v1/events", Some(0)).await;
    let ids: Vec<i64> = stored(&app).await.iter().map(|e| e.event_id).collect();
    for id in &ids {
        assert_eq!(resumed.next_event(WAIT).await.0, *id);
    }
    drop(resumed);

    // Events stored: the resume point is the latest. Events posted while the client is away
    // come on reconnect, and nothing from before.
    let second = Sse::open(&app.base, "/api/v1/events?kind=trigger_word", None).await;
    assert_eq!(second.ready_id, *ids.last().unwrap());
    let resume = second.ready_id;
    drop(second);
    send_posts(&app.base, &token, 10, 3).await;
    let mut resumed = Sse::open(&app.base, "/api/v1/events?kind=trigger_word", Some(resume)).await;
    let mut posts = Vec::new();
    for _ in 0..3 {
        posts.push(
            resumed.next_event(WAIT).await.2["post_id"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(posts, [10, 11, 12]);
}

/// Heartbeats are comment lines with no blank line after them: nothing a client dispatches,
/// not even httpx-sse, which makes an empty `message` of a blank line once it has seen an id.
#[actix_web::test]
async fn heartbeats_dispatch_nothing_even_after_an_id() {
    let (app, token) = app_with_inbounds(|s| s.events.heartbeat_ms = 50).await;
    send_posts(&app.base, &token, 1, 1).await;
    let mut stream = Sse::open(&app.base, "/api/v1/events", Some(0)).await;
    stream.next_event(WAIT).await;
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match stream.next(WAIT).await {
            Frame::Comment(text) => {
                assert_eq!(text, "heartbeat");
                heartbeats += 1;
            }
            other => panic!("only heartbeats, not {other:?}"),
        }
    }
    let after_event = stream.raw.split("\n\n").last().unwrap();
    assert!(
        after_event
            .split_inclusive('\n')
            .all(|line| line == ": heartbeat\n"),
        "{after_event:?}"
    );
}

/// A graceful stop ends open streams at once instead of waiting out the drain timeout.
#[actix_web::test]
async fn open_streams_end_when_the_gateway_shuts_down() {
    let (mut app, token) = app_with_inbounds(|s| s.server.shutdown_timeout_secs = 30).await;
    send_posts(&app.base, &token, 1, 1).await;
    let mut live = Sse::open(&app.base, "/api/v1/events", None).await;
    let mut replaying = Sse::open(&app.base, "/api/v1/events", Some(0)).await;
    replaying.next_event(WAIT).await;
    let started = std::time::Instant::now();
    let handle = app.handle.clone();
    let stopping = actix_web::rt::spawn(async move { handle.stop(true).await });
    assert!(
        live.ends_within(Duration::from_secs(5)).await,
        "the live stream ended"
    );
    assert!(
        replaying.ends_within(Duration::from_secs(5)).await,
        "the other one too"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped without waiting out the drain")
        .unwrap();
    let stopped = app.stopped.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the gateway shut down")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn polling_pages_through_the_events() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    send_posts(&app.base, &token, 1, 5).await;
    let poll = |query: String| {
        let app = &app;
        async move {
            let response = app
                .http
                .get(format!("{}/api/v1/events{query}", app.base))
                .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
                .insert_header(("Accept", "application/json"))
                .send()
                .await
                .unwrap();
            crate::helpers::read(response).await
        }
    };
    let page = poll("?limit=3".into()).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let next = page.body["next_after"].as_i64().unwrap();
    assert_eq!(items[2]["event_id"], next);
    let rest = poll(format!("?after={next}&limit=3")).await;
    let rest_items = rest.body["items"].as_array().unwrap();
    assert_eq!(rest_items.len(), 2);
    assert_eq!(rest_items[0]["post_id"], 4);
    let end = rest.body["next_after"].as_i64().unwrap();
    let empty = poll(format!("?after={end}")).await;
    assert_eq!(empty.body["items"], serde_json::json!([]));
    assert_eq!(empty.body["next_after"], end);
    let none = poll("?inbound=helper".into()).await;
    assert_eq!(none.body["items"], serde_json::json!([]));
    // Without Accept: text/event-stream a generic client gets a page, never an endless stream.
    let plain = app.get("/api/v1/events?limit=1").await;
    assert_eq!(plain.status.as_u16(), 200);
    assert_eq!(plain.body["items"][0]["post_id"], 1);

    for bad in [
        "?limit=0",
        "?limit=1001",
        "?kind=bogus",
        "?after=-1",
        "?channel_id=0",
        "?what=1",
    ] {
        poll(bad.into())
            .await
            .assert_problem(400, "invalid_request");
    }
    let bad_header = app
        .http
        .get(format!("{}/api/v1/events", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Last-Event-ID", "abc"))
        .send()
        .await
        .unwrap();
    crate::helpers::read(bad_header)
        .await
        .assert_problem(400, "invalid_request");
    app.call("GET", "/api/v1/events", None, None)
        .await
        .assert_problem(401, "unauthorized");
}

/// Events the retention deleted are not skipped in silence: a page or a replay that starts
/// before them says which are gone, then goes on with those kept.
#[actix_web::test]
async fn a_resume_point_older_than_the_retention_is_told_what_is_gone() {
    let (app, token) = app_with_inbounds(|_| {}).await;
    send_posts(&app.base, &token, 1, 3).await;
    let purged: Vec<i64> = stored(&app).await.iter().map(|e| e.event_id).collect();
    assert_eq!(purged.len(), 3);
    let store = Store::connect(&syno_chat_gateway::config::StoreSettings {
        url: app.store_url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let now = syno_chat_gateway::events::now_ms();
    assert_eq!(store.purge_events(now + 1).await.unwrap(), 3);
    store.close().await;
    send_posts(&app.base, &token, 4, 2).await;
    let (first, last) = (purged[0], purged[2]);

    let page = app.get(&format!("/api/v1/events?after={first}")).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    assert_eq!(page.body["purged_through"], last, "{}", page.body);
    assert_eq!(page.body["items"][0]["post_id"], 4, "{}", page.body);
    let whole = app.get(&format!("/api/v1/events?after={last}")).await;
    assert_eq!(whole.body.get("purged_through"), None, "{}", whole.body);
    assert_eq!(whole.body["items"].as_array().unwrap().len(), 2);

    let mut stream = Sse::open(&app.base, "/api/v1/events", Some(first)).await;
    match stream.next(WAIT).await {
        Frame::Gap { data } => {
            assert_eq!(
                data,
                serde_json::json!({"after": first, "purged_through": last})
            );
        }
        other => panic!("a gap first, not {other:?}"),
    }
    assert_eq!(stream.next_event(WAIT).await.2["post_id"], 4);
    assert_eq!(stream.next_event(WAIT).await.2["post_id"], 5);
    let mut whole = Sse::open(&app.base, "/api/v1/events", Some(last)).await;
    assert_eq!(whole.next_event(WAIT).await.2["post_id"], 4);
}

#[actix_web::test]
async fn events_survive_a_restart() {
    let (mut first, token) = app_with_inbounds(|_| {}).await;
    send_posts(&first.base, &token, 1, 3).await;
    first.stop().await;
    let url = first.store_url.clone();
    let (second, token) = app_with_inbounds(move |s| s.store.url = url).await;
    let mut stream = Sse::open(&second.base, "/api/v1/events", Some(0)).await;
    for post_id in 1..=3 {
        assert_eq!(stream.next_event(WAIT).await.2["post_id"], post_id);
    }
    // New events continue after the old ids; a post Chat sends again is still known.
    send_posts(&second.base, &token, 3, 2).await;
    let (_, _, data) = stream.next_event(WAIT).await;
    assert_eq!(data["post_id"], 4);
}

#[actix_web::test]
async fn an_event_on_replica_a_reaches_an_sse_client_on_replica_b_over_postgres() {
    let Some(url) = crate::postgres::fresh_database() else {
        return;
    };
    let shared = SecretString::from(url);
    let store_a = shared.clone();
    let (a, token_a) = app_with_inbounds(move |s| s.store.url = store_a).await;
    let (b, token_b) = app_with_inbounds(move |s| s.store.url = shared).await;
    let mut on_b = Sse::open(&b.base, "/api/v1/events", None).await;
    let mut on_a = Sse::open(&a.base, "/api/v1/events", None).await;

    let sent = tokio::time::Instant::now();
    send_posts(&a.base, &token_a, 1, 1).await;
    let (first, _, data) = on_b.next_event(WAIT).await;
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(data["post_id"], 1);

    // Both replicas take posts at once: each stream sees every event once, in id order.
    let (base_a, base_b) = (a.base.clone(), b.base.clone());
    let writers = [
        actix_web::rt::spawn(async move { send_posts(&base_a, &token_a, 100, 15).await }),
        actix_web::rt::spawn(async move { send_posts(&base_b, &token_b, 200, 15).await }),
    ];
    for writer in writers {
        writer.await.unwrap();
    }
    let all: Vec<i64> = stored(&a).await.iter().map(|e| e.event_id).collect();
    assert_eq!(all.len(), 31);
    assert_eq!(all[0], first);
    let mut seen_b = vec![first];
    let mut seen_a = Vec::new();
    while seen_b.len() < 31 {
        seen_b.push(on_b.next_event(WAIT).await.0);
    }
    while seen_a.len() < 31 {
        seen_a.push(on_a.next_event(WAIT).await.0);
    }
    assert_eq!(seen_b, all);
    assert_eq!(seen_a, all);
}

async fn ask_for_a_stream(
    app: &TestApp,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>,
> {
    app.http
        .get(format!("{}/api/v1/events", app.base))
        .insert_header(("Authorization", format!("Bearer {READ_KEY}")))
        .insert_header(("Accept", "text/event-stream"))
        .send()
        .await
        .unwrap()
}

/// A key may hold 32 streams at once: the 33rd is refused until one of them closes (each holds
/// a connection, its buffers and a place in the broadcast for as long as its client keeps it).
#[actix_web::test]
async fn a_key_holds_a_bounded_number_of_streams() {
    // A client that went away is noticed at the next heartbeat at the latest.
    let (app, _) = app_with_inbounds(|s| s.events.heartbeat_ms = 50).await;
    let mut open = Vec::new();
    for _ in 0..32 {
        open.push(Sse::open(&app.base, "/api/v1/events", None).await);
    }
    let answer = crate::helpers::read(ask_for_a_stream(&app).await).await;
    let problem = answer.assert_problem(429, "rate_limited");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("32 event streams"),
        "{problem}"
    );
    // A page is not a stream: still answered.
    let page = app.get("/api/v1/events").await;
    assert_eq!(page.status, 200, "{}", page.body);
    drop(open.pop());
    for _ in 0..100 {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        if ask_for_a_stream(&app).await.status() == 200 {
            return;
        }
    }
    panic!("a closed stream's place was not given back");
}

#[actix_web::test]
async fn stalled_inbound_bodies_cannot_pile_up_and_a_huge_one_is_refused_unread() {
    use std::io::{Read, Write};
    let (app, token) = app_with_inbounds(|_| {}).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    // Callers that declare a body and send a little of it: before, each held up to 1 MiB until
    // the body timeout, without a token, as many as the connection limit let in.
    let stall = |length: u64| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST /inbound/ops HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\ntoken="
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    };
    // Four from one address (the NAS is one), held until they come or time out.
    let stalled: Vec<std::net::TcpStream> = (0..4).map(|_| stall(1_000)).collect();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let body = format!("token={token}&channel_id=2&user_id=3&post_id=5&text=hi");
    let (status, problem) = post_form(&app, "/inbound/ops", body.clone()).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "hooks_busy", "{problem}");
    drop(stalled);
    let mut status = 0;
    for _ in 0..50 {
        (status, _) = post_form(&app, "/inbound/ops", body.clone()).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the address's bodies are given back with their connections"
    );
    // Declared too large: refused before a byte of it is read.
    let mut huge = stall(1_000_000_000);
    let mut answer = [0u8; 12];
    huge.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    // An unknown name is not repeated back (it may be a token pasted in the wrong place).
    let (status, problem) = post_form(&app, &format!("/inbound/{token}"), body).await;
    assert_eq!(status, 404, "{problem}");
    assert!(!problem.to_string().contains(&token), "{problem}");
}

/// README "Errors": while the event store cannot be reached, Chat's calls, the event page and
/// stream and the subscriptions answer 503 `not_ready` with `Retry-After` (Chat's call is not
/// acknowledged, so nothing is taken that was not stored); when it is back, they are served.
#[actix_web::test]
async fn a_lost_event_store_is_not_ready_and_nothing_is_acknowledged_unstored() {
    let Some(url) = crate::postgres::fresh_database() else {
        return;
    };
    let store = SecretString::from(url.clone());
    let (app, token) = app_with_inbounds(move |s| s.store.url = store).await;
    send_posts(&app.base, &token, 1, 1).await;
    crate::postgres::set_reachable(&url, false);

    let from_chat = app
        .http
        .post(format!("{}/inbound/ops", app.base))
        .send_form(&[
            ("token", token.as_str()),
            ("channel_id", "2"),
            ("post_id", "2"),
            ("text", "!ping while the store is away"),
        ])
        .await
        .unwrap();
    let from_chat = crate::helpers::read(from_chat).await;
    from_chat.assert_problem(503, "not_ready");
    assert!(from_chat.header("retry-after").is_some());
    let page = app.get("/api/v1/events?after=0").await;
    page.assert_problem(503, "not_ready");
    assert!(page.header("retry-after").is_some());
    let stream = crate::helpers::read(ask_for_a_stream(&app).await).await;
    stream.assert_problem(503, "not_ready");
    let subscriptions = app
        .call("GET", "/api/v1/subscriptions", Some(ADMIN_KEY), None)
        .await;
    subscriptions.assert_problem(503, "not_ready");
    assert!(subscriptions.header("retry-after").is_some());

    crate::postgres::set_reachable(&url, true);
    // Chat's call again (a caller repeating what was not acknowledged) is stored now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post_form(
            &app,
            "/inbound/ops",
            format!("token={token}&channel_id=2&post_id=2&text=%21ping+again"),
        )
        .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let posts: Vec<Option<i64>> = stored(&app).await.iter().map(|e| e.post_id).collect();
    assert_eq!(posts, [Some(1), Some(2)]);
}
