//! Long texts become several consecutive posts (`delivery.max_message_chars`), split further
//! when DSM still answers 410, and paced when an incoming webhook's parts meet DSM's 411.

use serde_json::{Value, json};
use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{WEBHOOK_TOKEN_NAME, param, spawn_app, spawn_app_with};

/// About `len` characters of paragraphs, lines, links and multi-byte characters.
fn long_text(len: usize) -> String {
    let mut text = String::new();
    let mut n = 0;
    while text.chars().count() < len {
        n += 1;
        text.push_str(&format!(
            "Zeile {n}: ünïcode ✓ 🚀 <https://example.org/{n}|link {n}> & more"
        ));
        text.push_str(if n % 7 == 0 {
            "\n\n"
        } else if n % 3 == 0 {
            "\n"
        } else {
            " "
        });
    }
    text
}

/// The newest `count` posts of a channel, oldest first.
async fn newest_messages(app: &crate::helpers::TestApp, channel: u64, count: usize) -> Vec<String> {
    let list = app
        .get(&format!("/api/v1/channels/{channel}/posts?limit={count}"))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let mut messages: Vec<String> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap().to_owned())
        .collect();
    messages.reverse();
    messages
}

#[actix_rt::test]
async fn a_6000_character_message_arrives_as_ordered_posts_that_join_back() {
    let app = spawn_app().await;
    let text = long_text(6000);
    let created = app
        .post("/api/v1/channels/1/posts", json!({ "message": text }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let count: usize = created
        .header("x-chat-post-count")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        count >= 4,
        "6000 characters at 1800 need at least 4 posts, got {count}"
    );
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), count);
    let messages = newest_messages(&app, 1, count).await;
    assert!(messages.iter().all(|m| m.chars().count() <= 1800));
    assert_eq!(messages.concat(), text);
    // The answer is the first part's post.
    assert_eq!(created.body["message"].as_str(), Some(messages[0].as_str()));
}

#[actix_rt::test]
async fn a_part_dsm_still_refuses_is_split_further() {
    let app = spawn_app_with(
        SimConfig {
            max_message_len: 700,
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    let text = long_text(3000);
    let created = app
        .post("/api/v1/channels/1/posts", json!({ "message": text }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let count: usize = created
        .header("x-chat-post-count")
        .unwrap()
        .parse()
        .unwrap();
    // Some sends were refused with 410 and split: more calls than posts.
    assert!(app.sim.count("SYNO.Chat.Post", "create") > count);
    let messages = newest_messages(&app, 1, count).await;
    assert!(messages.iter().all(|m| m.chars().count() <= 700));
    assert_eq!(messages.concat(), text);
}

#[actix_rt::test]
async fn a_short_message_is_one_post_and_says_so() {
    let app = spawn_app().await;
    let created = app
        .post("/api/v1/channels/1/posts", json!({ "message": "short" }))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("x-chat-post-count"), Some("1"));
    let dm = app
        .post(
            "/api/v1/users/2/messages",
            json!({ "message": long_text(2500) }),
        )
        .await;
    assert_eq!(dm.status, 201, "{}", dm.body);
    assert_eq!(dm.header("x-chat-post-count"), Some("2"));
}

#[actix_rt::test]
async fn a_long_webhook_text_is_paced_through_dsms_rate_limit() {
    let app = spawn_app().await;
    // The simulator allows 2 External sends per token per second: 4 parts meet its 411.
    let text = long_text(6500);
    let sent = app
        .post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({ "text": text }),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let count: usize = sent.header("x-chat-post-count").unwrap().parse().unwrap();
    assert!(count >= 4);
    let incoming: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.api.as_deref() == Some("SYNO.Chat.External")
                && r.method.as_deref() == Some("incoming")
        })
        .collect();
    assert!(
        incoming.len() > count,
        "some sends were refused with 411 and paced"
    );
    let accepted: String = incoming
        .iter()
        .filter(|r| r.error_code.is_none())
        .map(|r| {
            let payload: Value = serde_json::from_str(param(r, "payload").unwrap()).unwrap();
            payload["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(accepted, text);
}

#[actix_rt::test]
async fn a_long_message_that_fails_midway_names_the_parts_already_posted() {
    let app = spawn_app().await;
    let text = long_text(6000);
    // Each call takes a while, so the fault is in place before the second part goes out.
    app.sim.set_latency(std::time::Duration::from_millis(300));
    let sim = app.sim.clone();
    actix_rt::spawn(async move {
        while sim.count("SYNO.Chat.Post", "create") == 0 {
            actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        sim.fail_next("SYNO.Chat.Post", Some("create"), 1, 105);
    });
    let failed = app
        .post("/api/v1/channels/1/posts", json!({ "message": text }))
        .await;
    let problem = failed.assert_problem(403, "upstream_permission_denied");
    assert_eq!(problem["dsm_code"], 105);
    assert_eq!(problem["parts_posted"], 1, "{problem}");
    app.sim.set_latency(std::time::Duration::ZERO);
    let posted = newest_messages(&app, 1, 1).await;
    assert!(text.starts_with(&posted[0]));
    let first = &app.get("/api/v1/channels/1/posts?limit=1").await.body["items"][0];
    assert_eq!(problem["post_ids"], json!([first["post_id"]]), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1 part(s) of the message had been posted"),
        "{problem}"
    );
}

/// A gateway that sends one message as at most three posts.
async fn three_posts_at_most() -> crate::helpers::TestApp {
    spawn_app_with(SimConfig::default(), |settings| {
        settings.delivery.max_message_parts = 3;
        let mut hook = syno_chat_gateway::config::HookSettings {
            secret_hash: Some(secrecy::SecretString::from(
                syno_chat_gateway::auth::hash_key(HOOK_SECRET),
            )),
            ..Default::default()
        };
        hook.channel = Some("1".into());
        settings.hooks.insert("long".into(), hook);
    })
    .await
}

const HOOK_SECRET: &str = "hook-secret-long-3c9e1f7a";

#[actix_rt::test]
async fn an_api_text_of_more_posts_than_allowed_is_refused_before_anything_is_sent() {
    let app = three_posts_at_most().await;
    let text = long_text(6000); // at least 4 posts of 1,800 characters
    let refused = app
        .post("/api/v1/channels/1/posts", json!({ "message": text }))
        .await;
    let problem = refused.assert_problem(413, "message_too_long");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("delivery.max_message_parts") && detail.contains("at most 3"),
        "{detail}"
    );
    // Asked to answer once stored: refused too, and nothing stored.
    let asked = app
        .http
        .post(format!("{}/api/v1/channels/1/posts", app.base))
        .insert_header((
            "Authorization",
            format!("Bearer {}", crate::helpers::WRITE_KEY),
        ))
        .insert_header(("Prefer", "respond-async"))
        .send_json(&json!({ "message": text }))
        .await
        .unwrap();
    crate::helpers::read(asked)
        .await
        .assert_problem(413, "message_too_long");
    let webhook = app
        .post(
            &format!("/api/v1/webhooks/incoming/{WEBHOOK_TOKEN_NAME}"),
            json!({ "text": text }),
        )
        .await;
    webhook.assert_problem(413, "message_too_long");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
    assert_eq!(app.sim.count("SYNO.Chat.External", "incoming"), 0);
    let stored = app.get("/api/v1/deliveries").await;
    assert_eq!(stored.body["items"], json!([]), "{}", stored.body);
    // Three posts' worth is sent whole.
    let fits = long_text(4000);
    let created = app
        .post("/api/v1/channels/1/posts", json!({ "message": fits }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let count: usize = created
        .header("x-chat-post-count")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(newest_messages(&app, 1, count).await.concat(), fits);
}

#[actix_rt::test]
async fn a_hooks_text_of_more_posts_than_allowed_is_cut_and_says_so() {
    let app = three_posts_at_most().await;
    let text = long_text(20_000);
    let sent = app
        .http
        .post(format!("{}/hooks/long/{HOOK_SECRET}", app.base))
        .send_json(&json!({ "text": text }))
        .await
        .unwrap();
    let sent = crate::helpers::read(sent).await;
    // Read as Slack's: answered `ok`, the delivery named in `Location`.
    assert_eq!(sent.status, 200, "{}", sent.body);
    let id = sent.header("location").unwrap().rsplit('/').next().unwrap();
    crate::deliveries::wait_for(&app, id, "delivered", std::time::Duration::from_secs(20)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 3);
    let posts = newest_messages(&app, 1, 3).await;
    let last = posts.last().unwrap();
    let note_at = last
        .rfind("\n\n… (")
        .expect("the last post says the text was cut");
    let left_out: usize = last[note_at + "\n\n… (".len()..]
        .trim_end_matches(" more characters not shown)")
        .parse()
        .unwrap();
    let kept = format!("{}{}", posts[..2].concat(), &last[..note_at]);
    assert!(
        text.starts_with(&kept),
        "the posts are the text's beginning"
    );
    // (The hook's text is the payload's without its trailing white space.)
    assert_eq!(
        kept.chars().count() + left_out,
        text.trim_end().chars().count()
    );
    assert!(posts.iter().all(|p| p.chars().count() <= 1800));
}

/// Two long messages sent at once to one channel, DSM slow: each one's posts are consecutive.
/// They interleaved (`A1 B1 A2 B2 …`) when each send went its own way; a message of several
/// posts now sends alone at its target, while single posts still go side by side.
#[actix_rt::test]
async fn long_messages_sent_at_once_do_not_interleave() {
    let app = spawn_app().await;
    app.sim.set_latency(std::time::Duration::from_millis(40));
    let (first, second) = (
        long_text(4000).replace("Zeile", "Alpha"),
        long_text(4000).replace("Zeile", "Beta"),
    );
    let (a, b) = tokio::join!(
        app.post("/api/v1/channels/1/posts", json!({ "message": first })),
        app.post("/api/v1/channels/1/posts", json!({ "message": second })),
    );
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (201, 201));
    let parts = |answer: &crate::helpers::Answer| -> usize {
        answer.header("x-chat-post-count").unwrap().parse().unwrap()
    };
    let total = parts(&a) + parts(&b);
    let posts = newest_messages(&app, 1, total).await;
    let joined: Vec<bool> = posts.iter().map(|p| p.contains("Alpha")).collect();
    // One run of the first message's posts, one of the second's, in either order.
    let switches = joined.windows(2).filter(|pair| pair[0] != pair[1]).count();
    assert_eq!(switches, 1, "{joined:?}");
    assert_eq!(posts.concat().len(), first.len() + second.len());
}

/// A file posted while a long message is being sent does not land between its posts: it takes
/// a single post's turn at the channel, as a short message does.
#[actix_rt::test]
async fn a_file_posted_during_a_long_message_does_not_land_between_its_posts() {
    let app = spawn_app().await;
    app.sim.set_latency(std::time::Duration::from_millis(100));
    let text = long_text(6000);
    let upload = async {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let response = app
            .http
            .post(format!("{}/api/v1/channels/1/files", app.base))
            .insert_header(("Authorization", format!("Bearer {}", crate::helpers::WRITE_KEY)))
            .insert_header(("Content-Type", "multipart/form-data; boundary=b"))
            .send_body(
                "--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nthe file\r\n\
                 --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.txt\"\r\n\r\nx\r\n--b--\r\n",
            )
            .await
            .unwrap();
        crate::helpers::read(response).await
    };
    let (long, file) = tokio::join!(
        app.post("/api/v1/channels/1/posts", json!({ "message": text })),
        upload
    );
    assert_eq!(long.status.as_u16(), 201, "{}", long.body);
    assert_eq!(file.status.as_u16(), 201, "{}", file.body);
    let parts: usize = long.header("x-chat-post-count").unwrap().parse().unwrap();
    assert!(parts >= 3, "{parts}");
    let posts = newest_messages(&app, 1, parts + 1).await;
    let at = posts.iter().position(|p| p == "the file").unwrap();
    assert!(
        at == 0 || at == parts,
        "the file is post {at} of {}, inside the long message",
        parts + 1
    );
}

/// The outbox's message to a target whose turn a long synchronous send holds is put back after
/// a third of its lease, and its lane takes another target's: it waited for the whole send,
/// and once its claim ran out other lanes took the same message over and waited too, while
/// messages to other channels waited for a lane.
#[actix_rt::test]
async fn a_lane_does_not_wait_out_a_long_synchronous_send_to_another_message_s_target() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.delivery.concurrency = 1;
        // A lease of 6.25 s: the outbox waits for a turn about 2 s.
        s.upstream.timeout_ms = 1_000;
    })
    .await;
    app.sim.set_latency(std::time::Duration::from_millis(400));
    let text = long_text(26_000);
    let long_done = std::cell::Cell::new(false);
    let long = async {
        let answer = app
            .post("/api/v1/channels/1/posts", json!({ "message": text }))
            .await;
        long_done.set(true);
        answer
    };
    let others = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let behind = crate::deliveries::post_async(
            &app,
            "/api/v1/channels/1/posts",
            json!({"message": "behind the long one"}),
        )
        .await;
        assert_eq!(behind.status.as_u16(), 202, "{}", behind.body);
        let elsewhere = crate::deliveries::post_async(
            &app,
            "/api/v1/channels/2/posts",
            json!({"message": "to another channel"}),
        )
        .await;
        assert_eq!(elsewhere.status.as_u16(), 202, "{}", elsewhere.body);
        let id = elsewhere.body["delivery_id"].as_str().unwrap();
        crate::deliveries::wait_for(&app, id, "delivered", std::time::Duration::from_secs(30))
            .await;
        assert!(
            !long_done.get(),
            "the other channel's message waited for the long send to end"
        );
        behind.body["delivery_id"].as_str().unwrap().to_owned()
    };
    let (long, behind) = tokio::join!(long, others);
    assert_eq!(long.status.as_u16(), 201, "{}", long.body);
    crate::deliveries::wait_for(
        &app,
        &behind,
        "delivered",
        std::time::Duration::from_secs(30),
    )
    .await;
}

/// A hook's channel named by name (`channel = "general"`) takes the turn of its id: the hook's
/// long message, sent by the outbox, and the API's to channel 1 at the same time do not
/// interleave.
#[actix_rt::test]
async fn a_named_channels_long_message_and_one_to_its_id_do_not_interleave() {
    use secrecy::SecretString;
    use syno_chat_gateway::config::HookSettings;
    const SECRET: &str = "hook-secret-for-the-named-channel";
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.hooks.insert(
            "named".into(),
            HookSettings {
                secret_hash: Some(SecretString::from(syno_chat_gateway::auth::hash_key(
                    SECRET,
                ))),
                channel: Some("general".into()),
                ..HookSettings::default()
            },
        );
    })
    .await;
    app.sim.set_latency(std::time::Duration::from_millis(150));
    let text = |word: &str| -> String {
        (1..)
            .map(|n| format!("{word} line {n:03}: lorem ipsum dolor sit amet.\n"))
            .scan(String::new(), |all, line| {
                all.push_str(&line);
                Some(all.clone())
            })
            .find(|all| all.len() >= 7000)
            .unwrap()
    };
    let (hooked, direct) = (text("Alpha"), text("Gamma"));
    let hook = async {
        let response = app
            .http
            .post(format!("{}/hooks/named/{SECRET}", app.base))
            .send_json(&json!({ "text": hooked }))
            .await
            .unwrap();
        crate::helpers::read(response).await
    };
    // The API's message while the outbox sends the hook's.
    let hook = hook.await;
    assert_eq!(hook.status.as_u16(), 200, "{}", hook.body);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let api = app
        .post("/api/v1/channels/1/posts", json!({ "message": direct }))
        .await;
    assert_eq!(api.status.as_u16(), 201, "{}", api.body);
    let parts: usize = api.header("x-chat-post-count").unwrap().parse().unwrap();
    assert!(parts >= 2, "{parts}");
    let mut posts = Vec::new();
    for _ in 0..200 {
        posts = newest_messages(&app, 1, 2 * parts).await;
        if posts.iter().filter(|p| p.contains("Alpha")).count() == parts {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hooked_posts: Vec<bool> = posts.iter().map(|p| p.contains("Alpha")).collect();
    assert_eq!(
        hooked_posts.iter().filter(|&&h| h).count(),
        parts,
        "{hooked_posts:?}"
    );
    let switches = hooked_posts.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "{hooked_posts:?}");
}
