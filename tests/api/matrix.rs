//! Matrix's client-server API at `/_matrix/client/{r0,v3}/…`: a hook's name as the room, its
//! secret as the access token; messages answered with an `event_id`, refusals in Matrix's words,
//! a transaction id that names its message.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, nth_post_text, read, spawn_app_with_hooks};

const SECRET: &str = "matrix-secret-8d2e6a0c4b";

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Answer {
    let mut request = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base))
        .insert_header(("Content-Type", "application/json"));
    if let Some(token) = token {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    read(
        request
            .send_body(serde_json::to_vec(body).unwrap())
            .await
            .expect("gateway answers"),
    )
    .await
}

/// An error as Matrix words it, naming the request.
fn matrix_error(answer: &Answer, status: u16, errcode: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.body["errcode"], errcode, "{}", answer.body);
    let error = answer.body["error"].as_str().unwrap();
    let id = answer.header("x-request-id").unwrap();
    assert!(error.contains(id), "{error}");
}

/// Uptime Kuma's and Gatus' requests: a `PUT` with a transaction id, the token in a header or
/// the query; each posted once, a retry of a transaction answered alike and not posted again.
#[actix_rt::test]
async fn a_room_message_is_posted_once_per_transaction() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET), ("other", "another-secret-77")]).await;
    let kuma =
        json!({"msgtype": "m.text", "body": "[My Website] [🔴 Down] timeout of 48000ms exceeded"});
    let path = "/_matrix/client/r0/rooms/%21alerts%3Agateway.example/send/m.room.message/Zm9vYmFy";
    let first = call(&app, "PUT", path, Some(SECRET), &kuma).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let event = first.body["event_id"].as_str().unwrap().to_owned();
    assert!(event.starts_with('$'), "{event}");
    let delivery = event[1..].split(':').next().unwrap();
    assert!(first.header("location").unwrap().ends_with(delivery));
    assert_eq!(
        nth_post_text(&app, 1).await,
        "[My Website] [🔴 Down] timeout of 48000ms exceeded"
    );
    // The client's retry: the same event, nothing posted again.
    let again = call(&app, "PUT", path, Some(SECRET), &kuma).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["event_id"], event.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Gatus: v3, the token in the query, HTML beside the plain body.
    let gatus = json!({"msgtype": "m.text", "format": "org.matrix.custom.html",
        "body": "An alert for `core_api` has been triggered",
        "formatted_body": "<h3>An alert for <code>core_api</code> has been triggered</h3>\n<ul><li>❌ - <code>[STATUS] == 200</code></li></ul>"});
    let path = format!(
        "/_matrix/client/v3/rooms/alerts/send/m.room.message/TxnGatus1?access_token={SECRET}"
    );
    let answer = call(&app, "PUT", &path, None, &gatus).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        nth_post_text(&app, 2).await,
        "An alert for core_api has been triggered\n• ❌ - [STATUS] == 200"
    );
    // A client that reuses its transaction ids (shoutrrr's `shoutrrr-1`) for other messages:
    // each is posted. A homeserver URL given with a trailing slash (Gatus, Healthchecks).
    for (count, text) in [(3, "first"), (4, "second")] {
        let path = "//_matrix/client/v3/rooms/alerts/send/m.room.message/shoutrrr-1";
        let body = json!({"msgtype": "m.text", "body": text});
        let answer = call(&app, "PUT", path, Some(SECRET), &body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(nth_post_text(&app, count).await, text);
    }
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 4);
}

/// Apprise's and shoutrrr's way: ask who the token is, join the room, send to the id the join
/// answered (old shoutrrr with a `POST` and no transaction).
#[actix_rt::test]
async fn a_client_that_joins_first_sends_to_the_room_it_was_given() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET), ("other", "another-secret-77")]).await;
    let whoami = call(
        &app,
        "GET",
        "/_matrix/client/v3/account/whoami",
        Some(SECRET),
        &json!(null),
    )
    .await;
    assert_eq!(whoami.status, 200, "{}", whoami.body);
    assert!(
        whoami.body["user_id"]
            .as_str()
            .unwrap()
            .starts_with("@gateway:")
    );
    let rooms = call(
        &app,
        "GET",
        "/_matrix/client/v3/joined_rooms",
        Some(SECRET),
        &json!(null),
    )
    .await;
    let room = rooms.body["joined_rooms"][0].as_str().unwrap().to_owned();
    assert!(room.starts_with("!alerts:"), "{}", rooms.body);
    assert_eq!(rooms.body["joined_rooms"].as_array().unwrap().len(), 1);
    let joined = call(
        &app,
        "POST",
        "/_matrix/client/r0/join/%23alerts%3Anas.example",
        Some(SECRET),
        &json!({}),
    )
    .await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    assert_eq!(joined.body["room_id"], room.as_str());
    let encoded: String = form_urlencoded::byte_serialize(room.as_bytes()).collect();
    let path = format!("/_matrix/client/r0/rooms/{encoded}/send/m.room.message");
    let body = json!({"msgtype": "m.text", "body": "Watchtower updates on host1\n\n[nginx](https://hub.example/nginx) updated"});
    let sent = call(&app, "POST", &path, Some(SECRET), &body).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(
        nth_post_text(&app, 1).await,
        "Watchtower updates on host1\n\n<https://hub.example/nginx|nginx> updated"
    );
    // No transaction: the same request again is another message.
    let again = call(&app, "POST", &path, Some(SECRET), &body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.body["event_id"], sent.body["event_id"]);
    nth_post_text(&app, 2).await;
}

/// What Matrix clients read when something is wrong: the token missing or unknown, another
/// hook's room, another event type, content that is no message, a version not served.
#[actix_rt::test]
async fn refusals_are_matrix_errors_and_nothing_is_posted() {
    let app = spawn_app_with_hooks(&[("alerts", SECRET), ("other", "another-secret-77")]).await;
    let message = json!({"msgtype": "m.text", "body": "x"});
    let send = |room: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1");
    matrix_error(
        &call(&app, "PUT", &send("alerts"), None, &message).await,
        401,
        "M_MISSING_TOKEN",
    );
    matrix_error(
        &call(&app, "PUT", &send("alerts"), Some("wrong"), &message).await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    // The token of one hook does not open another's room.
    let other = call(&app, "PUT", &send("other"), Some(SECRET), &message).await;
    matrix_error(&other, 403, "M_FORBIDDEN");
    let joined = call(
        &app,
        "POST",
        "/_matrix/client/v3/join/other",
        Some(SECRET),
        &json!({}),
    )
    .await;
    matrix_error(&joined, 403, "M_FORBIDDEN");
    let reaction = call(
        &app,
        "PUT",
        "/_matrix/client/v3/rooms/alerts/send/m.reaction/t2",
        Some(SECRET),
        &message,
    )
    .await;
    matrix_error(&reaction, 403, "M_FORBIDDEN");
    let empty = call(
        &app,
        "PUT",
        &send("alerts"),
        Some(SECRET),
        &json!({"msgtype": "m.text", "body": ""}),
    )
    .await;
    matrix_error(&empty, 400, "M_BAD_JSON");
    let list = call(&app, "PUT", &send("alerts"), Some(SECRET), &json!(["x"])).await;
    matrix_error(&list, 400, "M_BAD_JSON");
    let old = call(
        &app,
        "PUT",
        "/_matrix/client/v1/rooms/alerts/send/m.room.message/t3",
        Some(SECRET),
        &message,
    )
    .await;
    matrix_error(&old, 404, "M_UNRECOGNIZED");
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
    // Neither the token nor the room reaches the metrics but as the route's pattern.
    let metrics = app.call("GET", "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(!text.contains(SECRET) && !text.contains("wrong"));
    assert!(
        text.contains(
            r#"route="/_matrix/client/{version}/rooms/{room_id}/send/{event_type}/{txn_id}""#
        ),
        "{text}"
    );
}
