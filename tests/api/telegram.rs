//! Telegram's Bot API at `/telegram/bot{token}/{method}`: a hook's secret as the bot token;
//! `sendMessage` read in its `parse_mode` and answered as Telegram answers, refusals too.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, nth_post_text, read, spawn_app_with_hooks};

const TOKEN: &str = "123456789:AAHf-telegram-style-secret_0";
const SHARED: &str = "987654321:shared-by-two-hooks";

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let request = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base))
        .insert_header(("Content-Type", content_type));
    read(request.send_body(body).await.expect("gateway answers")).await
}

/// A Bot API call with a form, as python-telegram-bot sends one.
async fn form(app: &TestApp, method: &str, fields: Vec<u8>) -> Answer {
    let path = format!("/telegram/bot{TOKEN}/{method}");
    call(
        app,
        "POST",
        &path,
        "application/x-www-form-urlencoded",
        fields,
    )
    .await
}

async fn send_json(app: &TestApp, token: &str, body: &Value) -> Answer {
    let path = format!("/telegram/bot{token}/sendMessage");
    call(
        app,
        "POST",
        &path,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// A refusal as the Bot API words it, naming the request.
fn telegram_error(answer: &Answer, status: u16) -> String {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.body["ok"], false, "{}", answer.body);
    assert_eq!(answer.body["error_code"], status, "{}", answer.body);
    let description = answer.body["description"].as_str().unwrap().to_owned();
    assert!(
        description.contains(answer.header("x-request-id").unwrap()),
        "{description}"
    );
    description
}

/// Alertmanager's request (every value a string, HTML) and its needs: `ok`, and a `result`
/// with a `chat` (telebot reads `result.chat.id`; without it Alertmanager crashes).
#[actix_rt::test]
async fn send_message_is_posted_and_answered_as_telegram_answers() {
    let app = spawn_app_with_hooks(&[("alerts", TOKEN), ("a", SHARED), ("b", SHARED)]).await;
    let alertmanager = json!({"chat_id": "-1001234567890", "disable_web_page_preview": "true",
        "parse_mode": "HTML",
        "text": "<b>Alerts Firing:</b>\nLabels:\n - alertname = HighCPU\nSource: <a href=\"http://prom:9090/graph\">graph</a>\n"});
    let answer = send_json(&app, TOKEN, &alertmanager).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["ok"], true);
    let result = &answer.body["result"];
    assert!(result["message_id"].as_i64().unwrap() > 0, "{result}");
    assert!(result["date"].as_i64().unwrap() > 1_700_000_000, "{result}");
    assert!(result["chat"]["id"].is_i64(), "{result}");
    let delivery = result["delivery_id"].as_str().unwrap();
    assert!(answer.header("location").unwrap().ends_with(delivery));
    assert_eq!(
        nth_post_text(&app, 1).await,
        "Alerts Firing:\nLabels:\n - alertname = HighCPU\nSource: <http://prom:9090/graph|graph>"
    );
    // A form (python-telegram-bot) and a GET with a query read alike.
    let fields = b"chat_id=42&text=Backup+done+%5Blog%5D%28https%3A%2F%2Fnas.example%2Flog%29&parse_mode=Markdown";
    let answer = form(&app, "sendMessage", fields.to_vec()).await;
    let path = format!("/telegram/bot{TOKEN}/sendMessage");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        nth_post_text(&app, 2).await,
        "Backup done <https://nas.example/log|log>"
    );
    let answer = call(
        &app,
        "GET",
        &format!("{path}?chat_id=42&text=from+a+query"),
        "text/plain",
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 3).await, "from a query");
    // An API URL given with a trailing slash.
    let body = serde_json::to_vec(&json!({"chat_id": 1, "text": "slashed"})).unwrap();
    let slashed = format!("/telegram//bot{TOKEN}/sendMessage");
    let answer = call(&app, "POST", &slashed, "application/json", body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 4).await, "slashed");
    // `curl -F` (a multipart form), and a method name in another case.
    let boundary = "XyZ";
    let multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nfrom a form with parts\r\n--{boundary}--\r\n"
    );
    let answer = call(
        &app,
        "POST",
        &format!("/telegram/bot{TOKEN}/sendmessage"),
        &format!("multipart/form-data; boundary={boundary}"),
        multipart.into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 5).await, "from a form with parts");
    // `getChat`, as Home Assistant asks for each chat before it sends to it.
    let asked = call(
        &app,
        "GET",
        &format!("/telegram/bot{TOKEN}/getChat?chat_id=-100777"),
        "text/plain",
        Vec::new(),
    )
    .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert_eq!(asked.body["result"]["id"], -100_777);
    assert_eq!(asked.body["result"]["title"], "alerts");
    // python-telegram-bot asks with a form, and reads a full description (Bot API 7.3).
    let asked = form(&app, "getChat", b"chat_id=-100888".to_vec()).await;
    assert_eq!(asked.body["result"]["id"], -100_888, "{}", asked.body);
    assert!(
        asked.body["result"]["max_reaction_count"].is_u64(),
        "{}",
        asked.body
    );
    // `getMe` checks the token.
    let me = call(
        &app,
        "GET",
        &format!("/telegram/bot{TOKEN}/getMe"),
        "text/plain",
        Vec::new(),
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["result"]["is_bot"], true);
    assert_eq!(me.body["result"]["username"], "alerts_bot");
}

/// A form's parameters are strings (a text that looks like JSON stays text); JSON sent with a
/// form's label (`curl -d '{…}'`) is read as JSON.
#[actix_rt::test]
async fn a_forms_text_is_text_and_json_labelled_as_a_form_is_json() {
    let app = spawn_app_with_hooks(&[("alerts", TOKEN)]).await;
    let answer = form(&app, "sendMessage", b"chat_id=1&text=%5B1%2C2%5D".to_vec()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 1).await, "[1,2]");
    let json = br#"{"chat_id": 1, "text": "sent by curl -d"}"#.to_vec();
    let answer = form(&app, "sendMessage", json).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(nth_post_text(&app, 2).await, "sent by curl -d");
}

#[actix_rt::test]
async fn refusals_are_the_bot_apis_and_nothing_is_posted() {
    let app = spawn_app_with_hooks(&[("alerts", TOKEN), ("a", SHARED), ("b", SHARED)]).await;
    let message = json!({"chat_id": 1, "text": "x"});
    let wrong = telegram_error(&send_json(&app, "1:wrong", &message).await, 401);
    assert!(wrong.starts_with("Unauthorized"), "{wrong}");
    let empty = telegram_error(
        &send_json(&app, TOKEN, &json!({"chat_id": 1, "text": ""})).await,
        400,
    );
    assert!(empty.starts_with("Bad Request"), "{empty}");
    // A form of parameters without a text is told so, as a JSON one is.
    let no_text = telegram_error(&form(&app, "sendMessage", b"chat_id=1".to_vec()).await, 400);
    assert!(no_text.contains("text"), "{no_text}");
    assert!(!no_text.contains("must be a JSON object"), "{no_text}");
    telegram_error(&send_json(&app, TOKEN, &json!(["x"])).await, 400);
    // A GET without parameters is a message without text, not a check of the hook; a HEAD
    // posts nothing.
    let path = format!("/telegram/bot{TOKEN}/sendMessage");
    telegram_error(
        &call(&app, "GET", &path, "text/plain", Vec::new()).await,
        400,
    );
    let head = call(
        &app,
        "HEAD",
        &format!("{path}?text=head"),
        "text/plain",
        Vec::new(),
    )
    .await;
    // The route exists: 405 with its methods, as every other route answers (it was 404).
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET, POST"));
    let put = call(&app, "PUT", &path, "application/json", b"{}".to_vec()).await;
    assert_eq!(put.status, 405);
    // Two hooks with one token: which one is meant cannot be told.
    telegram_error(&send_json(&app, SHARED, &message).await, 400);
    let other = call(
        &app,
        "POST",
        &format!("/telegram/bot{TOKEN}/sendPhoto"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    telegram_error(&other, 404);
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
    // The token is a hook's secret: the metrics name the route, never the token.
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        !text.contains("AAHf-telegram") && !text.contains("shared-by-two"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/telegram/bot{token}/{method}""#),
        "{text}"
    );
}
