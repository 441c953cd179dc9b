//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::Chat;
use super::mode::GatewayMode;
use crate::error::{ApiError, Problem, ProblemCode};

#[derive(Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (alive) or `ready` (DSM answers and a session is held).
    #[schema(example = "ok")]
    status: &'static str,
    /// Readiness only: `demo` when the built-in simulator answers instead of a NAS.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<GatewayMode>,
}

/// Liveness: the process serves requests and is not wedged (no DSM call)
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthStatus),
    (status = 503, body = Problem, content_type = "application/problem+json",
        description = "Wedged: the DSM login or API-list lock has been held for several \
            `upstream.timeout_ms` although every DSM exchange has that deadline; restart the process"),
))]
#[get("/healthz")]
pub async fn healthz(chat: Chat) -> Result<HttpResponse, ApiError> {
    match chat.wedged() {
        None => Ok(HttpResponse::Ok().json(HealthStatus {
            status: "ok",
            mode: None,
        })),
        Some(reason) => {
            tracing::error!(reason, "liveness check failed: the gateway is wedged");
            Err(ApiError::new(
                ProblemCode::NotReady,
                format!("wedged: {reason}"),
            ))
        }
    }
}

/// Readiness: DSM answered just now and the gateway holds a session
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthStatus),
    (status = 503, body = Problem, content_type = "application/problem+json",
        description = "DSM unreachable, login refused or backing off; the detail says which"),
))]
#[get("/readyz")]
pub async fn readyz(
    chat: Chat,
    mode: Option<web::Data<GatewayMode>>,
) -> Result<HttpResponse, ApiError> {
    let mode = mode.map_or(GatewayMode::Nas, |m| **m);
    match chat.probe().await {
        Ok(()) => Ok(HttpResponse::Ok().json(HealthStatus {
            status: "ready",
            mode: Some(mode),
        })),
        Err(error) => Err(ApiError::new(
            ProblemCode::NotReady,
            format!("not ready: {error}"),
        )),
    }
}

/// `/metrics`: Prometheus (OpenMetrics) text; optionally behind an API key with `read`.
pub async fn metrics(
    req: actix_web::HttpRequest,
    metrics: actix_web::web::Data<crate::metrics::Metrics>,
    settings: actix_web::web::Data<MetricsAccess>,
    keys: Option<actix_web::web::Data<crate::auth::ApiKeys>>,
) -> Result<HttpResponse, ApiError> {
    if settings.require_key {
        let keys = keys
            .ok_or_else(|| ApiError::new(ProblemCode::Internal, "API keys are not configured"))?;
        keys.authorize(&req, crate::auth::Scope::Read)?;
    }
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(metrics.render()))
}

/// Whether `/metrics` needs a key.
pub struct MetricsAccess {
    pub require_key: bool,
}
