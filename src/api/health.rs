//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::mode::GatewayMode;
use super::{CommonProblems, Dsm};
use crate::api::error::{ApiError, Problem, ProblemCode};
use crate::auth::{Authorized, Read};

#[derive(Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (alive) or `ready` (serving its API; DSM's state is in `GET /api/v1/health`).
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
pub async fn healthz(chat: Dsm) -> Result<HttpResponse, ApiError> {
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

/// Readiness: the gateway serves its API (no DSM call)
///
/// Deliberately independent of DSM: during a NAS outage the gateway stays in the Service and
/// answers its own problem documents with `Retry-After`, instead of vanishing. DSM's state is
/// in `GET /api/v1/health`.
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthStatus),
    (status = 503, body = Problem, content_type = "application/problem+json",
        description = "Wedged (see `/healthz`)"),
))]
#[get("/readyz")]
pub async fn readyz(
    chat: Dsm,
    mode: Option<web::Data<GatewayMode>>,
) -> Result<HttpResponse, ApiError> {
    let mode = mode.map_or(GatewayMode::Nas, |m| **m);
    match chat.wedged() {
        None => Ok(HttpResponse::Ok().json(HealthStatus {
            status: "ready",
            mode: Some(mode),
        })),
        Some(reason) => Err(ApiError::new(
            ProblemCode::NotReady,
            format!("not ready: wedged: {reason}"),
        )),
    }
}

/// DSM's state as the gateway last saw it.
#[derive(Serialize, ToSchema)]
pub struct DsmState {
    /// The last check logged in (if needed) and got an answer from `SYNO.API.Info`.
    ok: bool,
    /// The gateway holds a DSM session now.
    session_held: bool,
    /// Why the last check failed (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The problem code callers get for that failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// The DSM error number, when DSM refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    dsm_code: Option<i64>,
    /// Age of the check in seconds; checks are reused for 5 s, so probing this view costs DSM
    /// at most one check per 5 s.
    checked_secs_ago: f64,
}

#[derive(Serialize, ToSchema)]
pub struct HealthDetails {
    /// `ok`, `degraded` (DSM is not usable; the gateway answers problems with `Retry-After`)
    /// or `wedged`.
    #[schema(example = "ok")]
    status: &'static str,
    dsm: DsmState,
    /// Why the gateway counts as wedged, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    wedged: Option<&'static str>,
}

/// Health in detail, with DSM's state
///
/// Needs the read scope. DSM is checked at most once per 5 s (a login if needed and
/// `SYNO.API.Info`); concurrent callers share the check in flight.
#[utoipa::path(security(("bearer" = ["read"])), tag = "health",
    responses((status = 200, body = HealthDetails), CommonProblems))]
#[get("/health")]
pub async fn health_details(
    _: Authorized<Read>,
    chat: Dsm,
) -> Result<web::Json<HealthDetails>, ApiError> {
    let health = chat.dsm_health().await;
    let wedged = chat.wedged();
    let problem = health.error.clone().map(ApiError::from);
    let status = match (&wedged, &health.error) {
        (Some(_), _) => "wedged",
        (None, Some(_)) => "degraded",
        (None, None) => "ok",
    };
    Ok(web::Json(HealthDetails {
        status,
        dsm: DsmState {
            ok: health.error.is_none(),
            session_held: chat.has_session(),
            detail: health.error.as_ref().map(ToString::to_string),
            code: problem.as_ref().map(|p| p.code().as_str()),
            dsm_code: health.error.as_ref().and_then(|e| e.dsm_code()),
            checked_secs_ago: health.checked_at.elapsed().as_secs_f64(),
        },
        wedged,
    }))
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
