//! The outbox with the real binary: SIGKILL and restart on the same store, and two gateway
//! processes sharing one PostgreSQL.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/posts.rs"]
mod posts;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syno_chat_gateway::auth::hash_key;
use syno_chat_gateway::sim::{DEMO_ACCOUNT, DEMO_PASSWORD, SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_syno-chat-gateway");
const KEY: &str = "outbox-test-key";

struct Gateway {
    child: Child,
    base: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The gateway binary in front of `sim`, its outbox on `store_url`, with the simulator's
/// chatbot configured as `helper`.
async fn start_gateway(sim: &Simulator, store_url: &str) -> Gateway {
    let port = free_port();
    let child = Command::new(BIN)
        .arg("serve")
        .env(
            "SYNOCHAT__TOKENS__HELPER__TOKEN",
            sim.control().demo_bot_token(),
        )
        .env("SYNOCHAT__TOKENS__HELPER__KIND", "bot")
        .env_remove("SYNOCHAT_CONFIG")
        .env_remove("RUST_LOG")
        .env("SYNOCHAT__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("SYNOCHAT__UPSTREAM__URL", sim.base_url())
        .env("SYNOCHAT__UPSTREAM__USERNAME", DEMO_ACCOUNT)
        .env("SYNOCHAT__UPSTREAM__PASSWORD", DEMO_PASSWORD)
        .env("SYNOCHAT__UPSTREAM__TIMEOUT_MS", "1000")
        .env("SYNOCHAT__AUTH__KEYS__CI__HASH", hash_key(KEY))
        .env("SYNOCHAT__AUTH__KEYS__CI__SCOPES", "write")
        .env("SYNOCHAT__STORE__URL", store_url)
        .env("SYNOCHAT__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the gateway starts");
    let gateway = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    let client = awc::Client::default();
    while client
        .get(format!("{}/healthz", gateway.base))
        .send()
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway
}

async fn call(method: &str, url: String, body: Option<Value>, prefer: bool) -> (u16, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .insert_header(("Authorization", format!("Bearer {KEY}")));
    if prefer {
        request = request.insert_header(("Prefer", "respond-async"));
    }
    let mut response = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    }
    .expect("gateway answers");
    let bytes = response.body().limit(1 << 24).await.unwrap();
    (
        response.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn enqueue(gateway: &Gateway, channel: u64, message: &str) -> String {
    let (status, body) = call(
        "POST",
        format!("{}/api/v1/channels/{channel}/posts", gateway.base),
        Some(json!({ "message": message })),
        true,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["delivery_id"].as_str().unwrap().to_owned()
}

async fn wait_delivered(gateway: &Gateway, ids: &[String], within: Duration) {
    let start = Instant::now();
    for id in ids {
        loop {
            let (_, body) = call(
                "GET",
                format!("{}/api/v1/deliveries/{id}", gateway.base),
                None,
                false,
            )
            .await;
            if body["state"] == "delivered" {
                break;
            }
            assert!(
                start.elapsed() < within,
                "{id} not delivered in {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The channel's messages with `prefix`, oldest first.
async fn messages(gateway: &Gateway, channel: u64, prefix: &str) -> Vec<String> {
    let (status, body) = call(
        "GET",
        format!("{}/api/v1/channels/{channel}/posts?limit=200", gateway.base),
        None,
        false,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    posts::messages_oldest_first(&body)
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect()
}

async fn simulator() -> Simulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

async fn sigkill_and_restart(store_url: String) {
    let sim = simulator().await;
    // Every DSM call is slow, so the kill lands in the middle of the sends; the first post is
    // made and its answer hangs, so the outbox must find it rather than post it again.
    sim.control().set_latency(Duration::from_millis(150));
    sim.control()
        .stall_next("SYNO.Chat.Post", Some("create"), 1);
    let first = start_gateway(&sim, &store_url).await;
    let mut ids = Vec::new();
    for n in 0..30u64 {
        ids.push(enqueue(&first, 1 + n % 2, &format!("kill {n}")).await);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(first); // SIGKILL
    let second = start_gateway(&sim, &store_url).await;
    wait_delivered(&second, &ids, Duration::from_secs(120)).await;
    sim.control().set_latency(Duration::ZERO);
    for channel in 1..=2u64 {
        let expected: Vec<String> = (0..30u64)
            .filter(|n| 1 + n % 2 == channel)
            .map(|n| format!("kill {n}"))
            .collect();
        assert_eq!(
            messages(&second, channel, "kill ").await,
            expected,
            "channel {channel}: each once, in order"
        );
    }
}

/// Chatbot messages to two users, the gateway SIGKILLed while DSM, which has carried out the
/// first send, hangs in its answer; restarted, each user gets each message once, in order: the
/// unanswered send is looked for in the users' conversations with the bot's token, found, and
/// not sent again.
#[actix_web::test]
async fn sigkill_and_restart_delivers_each_chatbot_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let sim = simulator().await;
    // DSM carries the first send out and hangs mid-answer.
    sim.control()
        .stall_next("SYNO.Chat.External", Some("chatbot"), 1);
    let first = start_gateway(&sim, &store_url).await;
    let mut ids = Vec::new();
    for n in 0..6u64 {
        let (status, body) = call(
            "POST",
            format!("{}/api/v1/bots/helper/messages", first.base),
            Some(json!({ "text": format!("bot kill {n}"), "user_ids": [2, 3] })),
            true,
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["delivery_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(first); // SIGKILL
    let second = start_gateway(&sim, &store_url).await;
    wait_delivered(&second, &ids, Duration::from_secs(120)).await;
    let sends = sim.control().count("SYNO.Chat.External", "chatbot");
    let expected: Vec<String> = (0..6u64).map(|n| format!("bot kill {n}")).collect();
    for user in [2u64, 3] {
        let (_, channels) = call(
            "GET",
            format!("{}/api/v1/bots/helper/channels", second.base),
            None,
            false,
        )
        .await;
        let conversation = posts::conversation_with(&channels, user)
            .unwrap_or_else(|| panic!("no conversation with user {user}: {channels}"));
        let (status, page) = call(
            "GET",
            format!(
                "{}/api/v1/bots/helper/channels/{conversation}/posts?prev_count=100",
                second.base
            ),
            None,
            false,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let posted: Vec<String> = posts::messages_oldest_first(&page)
            .into_iter()
            .filter(|m| m.starts_with("bot kill "))
            .collect();
        assert_eq!(
            posted, expected,
            "user {user}: each once, in order ({sends} sends)"
        );
    }
    assert_eq!(sends, 6, "a message was sent twice");
}

#[actix_web::test]
async fn sigkill_and_restart_delivers_each_message_once_in_order_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_and_restart(format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await;
}

#[actix_web::test]
async fn sigkill_and_restart_delivers_each_message_once_in_order_postgres() {
    let Some(url) = postgres::fresh_database() else {
        return;
    };
    sigkill_and_restart(url).await;
}

#[actix_web::test]
async fn two_gateways_on_one_postgres_deliver_each_message_once() {
    let Some(url) = postgres::fresh_database() else {
        return;
    };
    let sim = simulator().await;
    sim.control().set_latency(Duration::from_millis(30));
    let a = start_gateway(&sim, &url).await;
    let b = start_gateway(&sim, &url).await;
    let mut ids = Vec::new();
    for n in 0..30u64 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        ids.push(enqueue(gateway, 1 + n % 3, &format!("pair {n}")).await);
    }
    wait_delivered(&a, &ids, Duration::from_secs(90)).await;
    for channel in 1..=3u64 {
        let expected: Vec<String> = (0..30u64)
            .filter(|n| 1 + n % 3 == channel)
            .map(|n| format!("pair {n}"))
            .collect();
        assert_eq!(
            messages(&b, channel, "pair ").await,
            expected,
            "channel {channel}: each once, in order"
        );
    }
}

#[actix_web::test]
async fn sigterm_hands_back_the_work_and_a_restart_finishes_it() {
    let Some(url) = postgres::fresh_database() else {
        return;
    };
    let sim = simulator().await;
    sim.control().set_latency(Duration::from_millis(200));
    let mut first = start_gateway(&sim, &url).await;
    let mut ids = Vec::new();
    for n in 0..10u64 {
        ids.push(enqueue(&first, 1, &format!("term {n}")).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = first.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = actix_web::rt::task::spawn_blocking(move || {
        let status = first.child.wait();
        (first, status)
    })
    .await
    .unwrap()
    .1
    .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    // Nothing is left claimed by the stopped gateway.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let sending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'sending' OR lease_owner IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sending, 0, "leases held after SIGTERM");
    let delivered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        delivered < 10,
        "the shutdown came too late to test anything"
    );
    pool.close().await;
    let second = start_gateway(&sim, &url).await;
    wait_delivered(&second, &ids, Duration::from_secs(60)).await;
    sim.control().set_latency(Duration::ZERO);
    let expected: Vec<String> = (0..10u64).map(|n| format!("term {n}")).collect();
    assert_eq!(messages(&second, 1, "term ").await, expected);
}

/// The gateway SIGKILLed while DSM is still making a post it was sent (slow, not yet made):
/// restarted at once, the outbox does not look for it before it has had the time to land
/// (twice `upstream.timeout_ms`), so it is found, not posted a second time.
#[actix_web::test]
async fn a_post_dsm_is_still_making_when_the_gateway_dies_is_not_made_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let sim = simulator().await;
    let first = start_gateway(&sim, &store_url).await;
    // Signed in and warm, so the kill lands in the create.
    let (status, _) = call(
        "GET",
        format!("{}/api/v1/channels/1/posts?limit=1", first.base),
        None,
        false,
    )
    .await;
    assert_eq!(status, 200);
    sim.control().slow_next(
        "SYNO.Chat.Post",
        Some("create"),
        1,
        Duration::from_millis(1500),
    );
    let creates = sim.control().count("SYNO.Chat.Post", "create");
    let id = enqueue(&first, 1, "late landing").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(first); // SIGKILL, DSM still working on the post
    let second = start_gateway(&sim, &store_url).await;
    wait_delivered(&second, &[id], Duration::from_secs(30)).await;
    // Whatever the outbox did, DSM has finished the first send by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        messages(&second, 1, "late landing").await,
        ["late landing"],
        "posted once"
    );
    assert_eq!(sim.control().count("SYNO.Chat.Post", "create"), creates + 1);
}

/// A message whose send DSM never carried out (the connection dropped as it arrived), the
/// gateway SIGKILLed before it looked: restarted, it looks for the post from a few seconds
/// before the send, so an earlier synchronous post of the same text (which the new process
/// cannot know it made) is not taken for it. Looking five minutes back, it was: the message was
/// never posted, and its delivery said `delivered`.
#[actix_web::test]
async fn an_earlier_synchronous_post_of_the_same_text_is_not_taken_for_a_lost_one() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let sim = simulator().await;
    let first = start_gateway(&sim, &store_url).await;
    let (status, body) = call(
        "POST",
        format!("{}/api/v1/channels/1/posts", first.base),
        Some(json!({"message": "backup ok"})),
        false,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Older than the window's room for replicas' clocks.
    tokio::time::sleep(Duration::from_secs(6)).await;
    sim.control().drop_next("SYNO.Chat.Post", Some("create"), 1);
    let creates = sim.control().count("SYNO.Chat.Post", "create");
    let id = enqueue(&first, 1, "backup ok").await;
    let dropped = Instant::now();
    while sim.control().count("SYNO.Chat.Post", "create") == creates {
        assert!(dropped.elapsed() < Duration::from_secs(10), "never sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL, before the outbox looked for the unanswered send's post
    let second = start_gateway(&sim, &store_url).await;
    wait_delivered(&second, std::slice::from_ref(&id), Duration::from_secs(30)).await;
    assert_eq!(
        messages(&second, 1, "backup ok").await,
        ["backup ok", "backup ok"],
        "the synchronous post and the message"
    );
}
