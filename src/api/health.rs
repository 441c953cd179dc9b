//! Liveness and readiness.

use actix_web::{HttpResponse, get};
use serde::Serialize;
use utoipa::ToSchema;

use super::Chat;
use crate::error::{ApiError, Problem, ProblemCode};

#[derive(Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` (alive) or `ready` (DSM answers and a session is held).
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process serves requests (no DSM call)
#[utoipa::path(tag = "health", responses((status = 200, body = HealthStatus)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

/// Readiness: DSM answered just now and the gateway holds a session
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthStatus),
    (status = 503, body = Problem, content_type = "application/problem+json",
        description = "DSM unreachable, login refused or backing off; the detail says which"),
))]
#[get("/readyz")]
pub async fn readyz(chat: Chat) -> Result<HttpResponse, ApiError> {
    match chat.probe().await {
        Ok(()) => Ok(HttpResponse::Ok().json(HealthStatus { status: "ready" })),
        Err(error) => Err(ApiError::new(
            ProblemCode::NotReady,
            format!("not ready: {error}"),
        )),
    }
}
