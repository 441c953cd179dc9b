//! The gateway's own API keys and scopes.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, READ_KEY, WRITE_KEY, spawn_app};

#[actix_web::test]
async fn requests_without_a_valid_key_get_401() {
    let app = spawn_app().await;
    let missing = app.call("GET", "/api/v1/channels", None, None).await;
    missing.assert_problem(401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    app.call("GET", "/api/v1/users", Some("not-a-key"), None)
        .await
        .assert_problem(401, "unauthorized");
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
    app.call(
        "POST",
        "/api/v1/channels/1/posts",
        Some(READ_KEY),
        Some(body.clone()),
    )
    .await
    .assert_problem(403, "insufficient_scope");
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
