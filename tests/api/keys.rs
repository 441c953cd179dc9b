//! The gateway's own API keys and scopes.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, READ_KEY, WRITE_KEY, spawn_app};

#[actix_web::test]
async fn requests_without_a_valid_key_get_401() {
    let app = spawn_app().await;
    let missing = app.call("GET", "/api/v1/channels", None, None).await;
    missing.assert_problem(401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    // RFC 6750 §3: no key, the bare challenge; a wrong key, `invalid_token`.
    let wrong = app
        .call("GET", "/api/v1/users", Some("not-a-key"), None)
        .await;
    wrong.assert_problem(401, "unauthorized");
    assert_eq!(
        wrong.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    app.call(
        "POST",
        "/api/v1/channels/1/posts",
        None,
        Some(json!({"message": "x"})),
    )
    .await
    .assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), 0);
}

#[actix_web::test]
async fn scopes_decide_what_a_key_may_do() {
    let app = spawn_app().await;
    let body = json!({"message": "scoped"});
    let refused = app
        .call(
            "POST",
            "/api/v1/channels/1/posts",
            Some(READ_KEY),
            Some(body.clone()),
        )
        .await;
    refused.assert_problem(403, "insufficient_scope");
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="write""#)
    );
    assert_eq!(
        app.call(
            "POST",
            "/api/v1/channels/1/posts",
            Some(WRITE_KEY),
            Some(body.clone())
        )
        .await
        .status,
        201
    );
    assert_eq!(
        app.call(
            "POST",
            "/api/v1/channels/1/posts",
            Some(ADMIN_KEY),
            Some(body)
        )
        .await
        .status,
        201
    );
    for key in [READ_KEY, WRITE_KEY, ADMIN_KEY] {
        assert_eq!(
            app.call("GET", "/api/v1/users", Some(key), None)
                .await
                .status,
            200
        );
    }
}

#[actix_web::test]
async fn health_needs_no_key() {
    let app = spawn_app().await;
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(app.call("GET", "/readyz", None, None).await.status, 200);
    assert_eq!(
        app.call("GET", "/openapi.json", None, None).await.status,
        200
    );
}

/// The scope each operation documents (`security: [{"bearer": [scope]}]`) is the one it
/// enforces: a key one scope short is refused with 403 `insufficient_scope`, a key with the
/// scope is not (whatever else it is answered: the calls carry no body, so writes stop at
/// validation).
#[actix_web::test]
async fn every_operation_enforces_the_scope_it_documents() {
    let app = spawn_app().await;
    let document = app.call("GET", "/openapi.json", None, None).await.body;
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let documented = &operation["security"];
            if !path.starts_with("/api/v1/") {
                // No API key: nothing, or for `/hooks/{name}` the hook's own secret.
                assert!(
                    documented == &json!([])
                        || path == "/hooks/{name}"
                            && documented
                                .as_array()
                                .is_some_and(|alternatives| alternatives
                                    .iter()
                                    .all(|a| a.get("bearer").is_none())),
                    "{method} {path} takes no API key: {documented}"
                );
                continue;
            }
            let scope = match documented.as_array().map(Vec::as_slice) {
                Some([requirement]) => requirement["bearer"][0].as_str(),
                _ => None,
            }
            .unwrap_or_else(|| panic!("{method} {path} documents one scope: {documented}"));
            let (short, enough) = match scope {
                "read" => (None, READ_KEY),
                "write" => (Some(READ_KEY), WRITE_KEY),
                "admin" => (Some(WRITE_KEY), ADMIN_KEY),
                other => panic!("{method} {path}: unknown scope {other}"),
            };
            // Every parameter is 1: an id, or a name no resource has.
            let concrete: String = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "1"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = method.to_uppercase();
            if let Some(short) = short {
                let refused = app.call(&method, &concrete, Some(short), None).await;
                assert_eq!(
                    refused.status.as_u16(),
                    403,
                    "{method} {path} documents the {scope} scope but let a lesser key in"
                );
                refused.assert_problem(403, "insufficient_scope");
            }
            let answer = app.call(&method, &concrete, Some(enough), None).await;
            assert_ne!(
                answer.body["code"], "insufficient_scope",
                "{method} {path} refused a key with the {scope} scope"
            );
            assert_ne!(answer.status.as_u16(), 401, "{method} {path}");
            *checked.entry(scope).or_default() += 1;
        }
    }
    assert!(
        checked.values().sum::<usize>() > 60 && checked.len() == 3,
        "operations checked by scope: {checked:?}"
    );
}

/// Two `Authorization` headers present no key: taking the first (or the last) would let the
/// order of headers decide which key's rights a request gets.
#[actix_web::test]
async fn two_authorization_headers_present_no_key() {
    let app = spawn_app().await;
    for order in [[READ_KEY, ADMIN_KEY], [ADMIN_KEY, READ_KEY]] {
        let response = app
            .http
            .get(format!("{}/api/v1/deliveries", app.base))
            .append_header(("Authorization", format!("Bearer {}", order[0])))
            .append_header(("Authorization", format!("Bearer {}", order[1])))
            .send()
            .await
            .unwrap();
        crate::helpers::read(response)
            .await
            .assert_problem(401, "unauthorized");
    }
    // Two X-Chat-Token headers name two places for the message: refused.
    let response = app
        .http
        .post(format!("{}/api/v1/webhooks/incoming", app.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .append_header(("X-Chat-Token", "a".repeat(64)))
        .append_header(("X-Chat-Token", "b".repeat(64)))
        .send_json(&json!({"text": "where to?"}))
        .await
        .unwrap();
    crate::helpers::read(response)
        .await
        .assert_problem(400, "invalid_request");
}
