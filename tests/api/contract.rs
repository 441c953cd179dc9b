//! The documented contract: OpenAPI document, error shape for unknown routes, request ids,
//! Swagger UI, demo mode.

use std::net::SocketAddr;

use syno_chat_gateway::config::Settings;
use syno_chat_gateway::startup::Application;

use crate::helpers::spawn_app;

#[test]
fn the_committed_openapi_document_is_current() {
    let generated = syno_chat_gateway::api::openapi_document()
        .to_pretty_json()
        .unwrap()
        + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "openapi/openapi.json is out of date with the handlers: run `make openapi` and commit the result"
    );
}

#[test]
fn every_api_operation_is_documented_with_security_and_problems() {
    let doc: serde_json::Value = serde_json::from_str(
        &syno_chat_gateway::api::openapi_document()
            .to_json()
            .unwrap(),
    )
    .unwrap();
    // The key is required for the whole document; each operation names the scope it needs
    // (`keys::every_operation_enforces_the_scope_it_documents` checks that it enforces it).
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["summary"].is_string(),
                "{method} {path} has no summary"
            );
            if path.starts_with("/api/v1") {
                let scope = ["read", "write", "admin"].into_iter().find(|scope| {
                    operation["security"] == serde_json::json!([{"bearer": [scope]}])
                });
                assert!(
                    scope.is_some(),
                    "{method} {path} needs the API key with one scope, not {}",
                    operation["security"]
                );
                // The outbox's, the events' and the subscriptions' routes answer from the
                // gateway's own store and never reach DSM: no 502 or 504 to document there.
                let store_only = [
                    "/api/v1/deliveries",
                    "/api/v1/events",
                    "/api/v1/subscriptions",
                ]
                .iter()
                .any(|prefix| path.starts_with(prefix));
                let statuses: &[&str] = if store_only {
                    &["401", "403", "503"]
                } else {
                    &["401", "403", "502", "503", "504"]
                };
                for status in statuses {
                    let response = &operation["responses"][status];
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{method} {path} lacks {status}"
                    );
                }
                if store_only {
                    for status in ["501", "502", "504"] {
                        assert!(
                            operation["responses"][status].is_null(),
                            "{method} {path} never reaches DSM but documents {status}"
                        );
                    }
                }
            } else if path == "/hooks/{name}" {
                // The hook's secret as a bearer token or a Basic password, or neither (signed).
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{"hookSecret": []}, {"hookBasic": []}, {}]),
                    "{method} {path} takes the hook's secret, or a signature"
                );
            } else {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([]),
                    "{method} {path} takes no API key and must say so"
                );
            }
        }
    }
}

fn document() -> serde_json::Value {
    serde_json::from_str(
        &syno_chat_gateway::api::openapi_document()
            .to_json()
            .unwrap(),
    )
    .unwrap()
}

/// Every operation of the document, as (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_documented_url_field_has_the_pattern_the_gateway_checks() {
    fn patterns<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(pattern) = map.get("pattern").and_then(|p| p.as_str())
                    && pattern.starts_with("^https?://")
                {
                    found.push(pattern);
                }
                map.values().for_each(|v| patterns(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| patterns(v, found)),
            _ => {}
        }
    }
    let doc: serde_json::Value = serde_json::from_str(
        &syno_chat_gateway::api::openapi_document()
            .to_json()
            .unwrap(),
    )
    .unwrap();
    let mut found = Vec::new();
    patterns(&doc, &mut found);
    assert!(found.len() >= 6, "{found:?}");
    for pattern in found {
        assert_eq!(pattern, syno_chat_gateway::domain::HTTP_URL_PATTERN);
    }
}

#[test]
fn every_operation_id_is_unique() {
    let doc = document();
    let mut seen = std::collections::BTreeMap::new();
    for (method, path, operation) in operations(&doc) {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
            .to_owned();
        if let Some(first) = seen.insert(id.clone(), format!("{method} {path}")) {
            panic!("operationId {id} is used by {first} and {method} {path}");
        }
    }
}

#[test]
fn shared_headers_and_internal_errors_are_documented_everywhere() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses["500"]["content"]["application/problem+json"].is_object(),
            "{method} {path} lacks 500"
        );
        for (status, response) in responses {
            let headers = &response["headers"];
            let documented = |name: &str| {
                headers[name]["$ref"].as_str().is_some_and(|r| {
                    r.strip_prefix("#/components/headers/")
                        .is_some_and(|h| h == name && doc["components"]["headers"][h].is_object())
                })
            };
            for name in ["X-Request-Id", "X-Gateway-Mode"] {
                assert!(documented(name), "{method} {path} {status} lacks {name}");
            }
            let expected = match status.as_str() {
                "401" => Some("WWW-Authenticate"),
                "429" | "503" => Some("Retry-After"),
                _ => None,
            };
            if let Some(name) = expected {
                assert!(documented(name), "{method} {path} {status} lacks {name}");
            }
            if status == "413" {
                let description = response["description"].as_str().unwrap();
                assert!(
                    !description.contains("not valid JSON"),
                    "{method} {path}: {description}"
                );
            }
        }
    }
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/api/v1/nothing-here")
        .await
        .assert_problem(404, "route_not_found");
    let wrong_method = app
        .call(
            "DELETE",
            "/api/v1/channels/1/preferences",
            Some(crate::helpers::ADMIN_KEY),
            None,
        )
        .await;
    wrong_method.assert_problem(405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));
    // So are the routes the OpenAPI document does not list: itself, Swagger UI, the metrics.
    for (method, path) in [
        ("POST", "/metrics"),
        ("POST", "/openapi.json"),
        ("DELETE", "/docs"),
        ("POST", "/docs/"),
        ("PUT", "/docs/index.html"),
    ] {
        let answer = app.call(method, path, None, None).await;
        answer.assert_problem(405, "method_not_allowed");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
}

#[actix_web::test]
async fn request_ids_are_echoed_and_generated() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/api/v1/channels/abc", app.base))
        .insert_header((
            "Authorization",
            format!("Bearer {}", crate::helpers::READ_KEY),
        ))
        .insert_header(("X-Request-Id", "trace-me-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-me-123"
    );
    // Without one, each request gets a new random UUID, in its lowercase hyphenated form.
    let mut generated = Vec::new();
    for _ in 0..2 {
        let id = app
            .get("/api/v1/channels")
            .await
            .header("x-request-id")
            .unwrap()
            .to_owned();
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(
            (uuid.get_version_num(), uuid.hyphenated().to_string()),
            (4, id.clone())
        );
        generated.push(id);
    }
    assert_ne!(generated[0], generated[1]);
}

#[actix_web::test]
async fn swagger_ui_and_the_document_are_served() {
    let app = spawn_app().await;
    let redirect = app.call("GET", "/docs", None, None).await;
    assert_eq!(redirect.status, 308);
    let page = app.call("GET", "/docs/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.as_str().unwrap().contains("swagger"));
    let initializer = app
        .call("GET", "/docs/swagger-initializer.js", None, None)
        .await;
    assert!(
        initializer
            .body
            .as_str()
            .unwrap()
            .contains("../openapi.json")
    );
    // The UI's assets come from the binary whole (served without a copy to the heap).
    let bundle = app
        .call("GET", "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(bundle.status, 200);
    assert!(
        bundle
            .header("content-type")
            .unwrap()
            .contains("javascript")
    );
    assert!(bundle.body.as_str().unwrap().len() > 100_000);
    app.call("GET", "/docs/no-such-file.js", None, None)
        .await
        .assert_problem(404, "route_not_found");
    let doc = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.body["info"]["title"], "syno-chat-gateway");
    assert!(doc.body["paths"]["/api/v1/channels/{channel_id}/posts"]["post"].is_object());
}

#[actix_web::test]
async fn demo_mode_serves_the_simulator_without_keys_on_loopback() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = Settings::default();
    settings.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.workers = Some(1);
    let store_dir = tempfile::tempdir().unwrap();
    settings.store.url = crate::helpers::store_url(store_dir.path());
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.address());
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::default();
    let mut response = client
        .get(format!("{base}/api/v1/channels"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "general")
    );
    // Demo mode says so on every answer, problems included, and in /readyz.
    assert_eq!(response.headers().get("x-gateway-mode").unwrap(), "demo");
    let missing = client
        .get(format!("{base}/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers().get("x-gateway-mode").unwrap(), "demo");
    let mut ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.headers().get("x-gateway-mode").unwrap(), "demo");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "mode": "demo"})
    );
    handle.stop(true).await;
}

#[actix_web::test]
async fn a_real_nas_is_not_marked_as_demo() {
    let app = spawn_app().await;
    let ready = app.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["mode"], "nas");
    assert_eq!(ready.header("x-gateway-mode"), None);
    assert_eq!(
        app.get("/api/v1/channels").await.header("x-gateway-mode"),
        None
    );
}

#[actix_web::test]
async fn the_served_document_lists_the_configured_token_names() {
    let app = spawn_app().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    let parameter = |path: &str, method: &str| {
        doc["paths"][path][method]["parameters"][0]["schema"]["enum"].clone()
    };
    assert_eq!(
        parameter("/api/v1/webhooks/incoming/{name}", "post"),
        serde_json::json!([crate::helpers::WEBHOOK_TOKEN_NAME])
    );
    assert_eq!(
        parameter("/api/v1/bots/{name}/users", "get"),
        serde_json::json!([crate::helpers::BOT_TOKEN_NAME])
    );
}
