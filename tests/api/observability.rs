//! `/metrics`: series by route template, upstream calls, logins, cache use; access options.

use std::net::SocketAddr;

use syno_chat_gateway::sim::SimConfig;

use crate::helpers::{READ_KEY, spawn_app, spawn_app_with};

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix_web::test]
async fn metrics_count_requests_by_route_template_and_upstream_work() {
    let app = spawn_app().await;
    app.get("/api/v1/channels/1").await;
    app.get("/api/v1/channels/2").await;
    app.get("/api/v1/no/such/route/42").await;
    app.get("/api/v1/channels/1/posts").await;
    // Prometheus asks for OpenMetrics; a scraper that does not gets the older text format.
    let prometheus = app
        .http
        .get(format!("{}/metrics", app.base))
        .insert_header((
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ))
        .send()
        .await
        .unwrap();
    let prometheus = crate::helpers::read(prometheus).await;
    assert!(
        prometheus
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let openmetrics = prometheus.body.as_str().unwrap().to_owned();
    assert!(openmetrics.contains("# TYPE synochat_http_requests counter"));
    assert!(openmetrics.ends_with("# EOF\n"));
    let answer = app.call("GET", "/metrics", None, None).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = answer.body.as_str().unwrap();
    assert!(
        text.contains("# TYPE synochat_http_requests_total counter"),
        "{text}"
    );
    let by_template = r#"synochat_http_requests_total{route="/api/v1/channels/{channel_id}",method="GET",status="200"}"#;
    assert_eq!(line_value(text, by_template), Some(2.0), "{text}");
    assert!(
        !text.contains("/api/v1/channels/2\""),
        "raw paths never become labels"
    );
    assert_eq!(
        line_value(
            text,
            r#"synochat_http_requests_total{route="unmatched",method="GET",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(
        line_value(
            text,
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="ok"}"#
        ) >= Some(1.0)
    );
    assert!(
        text.contains(r#"synochat_upstream_call_duration_seconds_bucket{le="#)
            || text.contains("synochat_upstream_call_duration_seconds_bucket{api=")
    );
    assert_eq!(
        line_value(text, r#"synochat_upstream_logins_total{outcome="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            text,
            r#"synochat_cache_requests_total{cache="channels",result="miss"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            text,
            r#"synochat_cache_requests_total{cache="channels",result="hit"}"#
        ),
        Some(1.0)
    );
    // The scrape itself is in flight while it renders.
    assert_eq!(
        line_value(text, "synochat_http_requests_in_flight"),
        Some(1.0)
    );
}

#[actix_web::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let before = app.call("GET", "/metrics", None, None).await;
    // Only the HTTP series: the delivery gauges fill in on their own schedule.
    let http_lines = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("synochat_http_"))
            .count()
    };
    let lines_before = http_lines(before.body.as_str().unwrap());
    for i in 0..40 {
        let answer = app
            .call(
                &format!("XMETHOD{i}"),
                "/api/v1/channels",
                Some(READ_KEY),
                None,
            )
            .await;
        assert_eq!(answer.status, 405, "{}", answer.body);
        assert!(!answer.body["detail"].as_str().unwrap().contains("XMETHOD"));
    }
    let after = app.call("GET", "/metrics", None, None).await;
    let text = after.body.as_str().unwrap();
    assert!(!text.contains("XMETHOD"), "{text}");
    let others: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("synochat_http_requests_total{")
                && l.contains(r#"method="other",status="405""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(others, 40.0, "{text}");
    // A few new series (this route with `other`, the first scrape), not forty histograms.
    assert!(
        http_lines(text) <= lines_before + 100,
        "{lines_before} lines before, {} after:\n{text}",
        http_lines(text)
    );
    // Known methods a route does not serve, without a key: one `unmatched` series per method,
    // not one per route and method.
    let routes = [
        "/api/v1/channels",
        "/api/v1/channels/1/posts",
        "/api/v1/users",
        "/api/v1/deliveries",
    ];
    for route in routes {
        for method in ["TRACE", "PATCH"] {
            let answer = app.call(method, route, None, None).await;
            assert_eq!(answer.status, 405, "{method} {route}: {}", answer.body);
        }
    }
    let text = app.call("GET", "/metrics", None, None).await.body;
    let text = text.as_str().unwrap();
    for method in ["TRACE", "PATCH"] {
        let series = format!(
            r#"synochat_http_requests_total{{route="unmatched",method="{method}",status="405"}}"#
        );
        assert_eq!(line_value(text, &series), Some(4.0), "{text}");
        assert_no_api_series(text, method);
    }
}

/// No series of an API route has `method`.
fn assert_no_api_series(text: &str, method: &str) {
    let by_route = format!(r#"method="{method}""#);
    assert!(
        !text
            .lines()
            .any(|l| l.contains(&by_route) && l.contains(r#"route="/api"#)),
        "{text}"
    );
}

/// Refused before its method is looked at (here by the rate limit), a method the route does
/// not serve is still no series of the route's: it was, for every route and method, from
/// callers without a key (found by the soak audit: 700 series grew to 11,000).
#[actix_web::test]
async fn refusals_before_routing_do_not_grow_the_metrics() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.rate_limit.ip_burst = 1;
        s.rate_limit.ip_per_minute = 1;
    })
    .await;
    let routes = ["/api/v1/channels", "/api/v1/users", "/api/v1/deliveries"];
    for route in routes {
        for method in ["PUT", "TRACE", "DELETE"] {
            let answer = app.call(method, route, None, None).await;
            assert!(
                matches!(answer.status.as_u16(), 405 | 429),
                "{method} {route}: {}",
                answer.body
            );
        }
    }
    // The route's own method keeps its label when refused, and so does HEAD where it is the
    // GET; a HEAD where a GET posts (a hook: 405) does not.
    app.call("GET", "/api/v1/users", None, None)
        .await
        .assert_problem(429, "rate_limited");
    app.call("HEAD", "/api/v1/users", None, None).await;
    app.call("HEAD", "/hooks/alerts/not-a-secret", None, None)
        .await;
    let text = app.call("GET", "/metrics", Some(READ_KEY), None).await.body;
    let text = text.as_str().unwrap();
    for method in ["PUT", "TRACE", "DELETE"] {
        assert_no_api_series(text, method);
    }
    assert_eq!(
        line_value(
            text,
            r#"synochat_http_requests_total{route="/api/v1/users",method="GET",status="429"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"synochat_http_requests_total{route="/api/v1/users",method="HEAD""#),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains(r#"method="HEAD""#) && l.contains(r#"route="/hooks"#)),
        "{text}"
    );
}

#[actix_web::test]
async fn relogins_and_failed_calls_are_counted() {
    let app = spawn_app().await;
    app.get("/api/v1/channels/1/posts").await;
    app.sim.expire_all_sessions();
    app.get("/api/v1/channels/1/posts").await;
    app.sim.fail_next("SYNO.Chat.Post", Some("list"), 1, 114);
    app.get("/api/v1/channels/1/posts").await;
    let text = app
        .call("GET", "/metrics", None, None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        line_value(&text, "synochat_upstream_relogins_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line_value(&text, r#"synochat_upstream_logins_total{outcome="ok"}"#),
        Some(2.0)
    );
    assert!(
        line_value(
            &text,
            r#"synochat_upstream_calls_total{api="SYNO.Chat.Post",method="list",outcome="dsm_error"}"#
        ) >= Some(2.0)
    );
}

#[actix_web::test]
async fn metrics_can_require_a_key() {
    let app = spawn_app_with(SimConfig::default(), |s| s.metrics.require_key = true).await;
    app.call("GET", "/metrics", None, None)
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(
        app.call("GET", "/metrics", Some(READ_KEY), None)
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn metrics_can_live_on_a_separate_listener() {
    let app = spawn_app_with(SimConfig::default(), |s| {
        s.metrics.bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)))
    })
    .await;
    app.call("GET", "/metrics", None, None)
        .await
        .assert_problem(404, "route_not_found");
    let mut response = app
        .http
        .get(format!("{}/metrics", app.metrics_base.as_ref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("synochat_http_requests_total"));
    // Anything else there is answered as the API answers it.
    let metrics_base = app.metrics_base.as_ref().unwrap();
    let elsewhere = app
        .http
        .get(format!("{metrics_base}/api/v1/channels"))
        .send()
        .await
        .unwrap();
    crate::helpers::read(elsewhere)
        .await
        .assert_problem(404, "route_not_found");
    let posted = app
        .http
        .post(format!("{metrics_base}/metrics"))
        .send()
        .await
        .unwrap();
    let posted = crate::helpers::read(posted).await;
    posted.assert_problem(405, "method_not_allowed");
    assert_eq!(posted.header("allow"), Some("GET, HEAD"));
}

/// HEAD is GET without the body (RFC 9110 §9.3.2), except where a GET posts (a hook).
#[actix_web::test]
async fn head_answers_as_get_without_the_body() {
    let app = crate::helpers::spawn_app().await;
    let get = app.get("/api/v1/channels").await;
    let head = app
        .call(
            "HEAD",
            "/api/v1/channels",
            Some(crate::helpers::READ_KEY),
            None,
        )
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, serde_json::Value::Null, "no body");
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(app.call("HEAD", "/healthz", None, None).await.status, 200);
    // A route's 405 lists HEAD beside GET.
    let delete = app.call("DELETE", "/healthz", None, None).await;
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, HEAD"));
}

/// README "Hardening": a hook called with GET posts its message; HEAD, which a crawler or a
/// link preview sends without a thought, is refused and posts nothing.
#[actix_web::test]
async fn a_head_on_a_hook_posts_nothing() {
    let app = crate::helpers::spawn_app_with_hooks(&[("alerts", "hook-secret-for-head")]).await;
    let creates = app.sim.count("SYNO.Chat.Post", "create");
    let head = app
        .call(
            "HEAD",
            "/hooks/alerts/hook-secret-for-head?msg=from+head",
            None,
            None,
        )
        .await;
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET, POST, PUT"));
    // The GET after it is the first and only post.
    let get = app
        .get("/hooks/alerts/hook-secret-for-head?msg=from+get")
        .await;
    assert!(get.status.is_success(), "{} {}", get.status, get.body);
    assert_eq!(
        crate::helpers::nth_post_text(&app, creates + 1).await,
        "from get"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.sim.count("SYNO.Chat.Post", "create"), creates + 1);
}
