//! Liveness and readiness.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::mode::GatewayMode;
use super::{CommonProblems, Dsm};
use crate::api::error::{ApiError, Problem, ProblemCode};
use crate::auth::{Authorized, Read};
use crate::store::Store;

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

/// Whether the store takes writes, as a background check last found it: readiness reads an
/// atomic instead of asking the database on every probe.
pub struct StoreWatch {
    /// Monotonic ms since when the store has not taken a write; 0 while it takes them.
    unreachable_since_ms: AtomicI64,
}

/// How often the store is asked, how long an answer may take, and how long it may go without
/// one before the replica leaves the load balancer (a brief database restart does not).
const STORE_CHECK_EVERY: Duration = Duration::from_secs(5);
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const STORE_UNREACHABLE_FOR: Duration = Duration::from_secs(15);

impl StoreWatch {
    /// Starts the checks (on the current runtime) and returns what readiness reads.
    pub fn spawn(store: Store) -> web::Data<Self> {
        let watch = web::Data::new(Self {
            unreachable_since_ms: AtomicI64::new(0),
        });
        let checked = watch.clone();
        actix_web::rt::spawn(async move {
            let mut every = actix_web::rt::time::interval(STORE_CHECK_EVERY);
            loop {
                every.tick().await;
                let answered = matches!(
                    actix_web::rt::time::timeout(STORE_CHECK_TIMEOUT, store.take_a_write()).await,
                    Ok(Ok(()))
                );
                checked.record(answered, monotonic_ms());
            }
        });
        watch
    }

    fn record(&self, answered: bool, now_ms: i64) {
        if answered {
            self.unreachable_since_ms.store(0, Ordering::Relaxed);
        } else {
            let _ = self.unreachable_since_ms.compare_exchange(
                0,
                now_ms.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// How long the store has gone unanswered, once that is past the allowance (the clock is
    /// read only then: readiness is probed often, and answered stores are the rule).
    fn unreachable_for(&self, now_ms: impl FnOnce() -> i64) -> Option<Duration> {
        let since = self.unreachable_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let gone = Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0));
        (gone >= STORE_UNREACHABLE_FOR).then_some(gone)
    }
}

/// The monotonic clock as the watch keeps it (0 means answered).
fn monotonic_ms() -> i64 {
    crate::clock::monotonic_ms() as i64
}

/// Readiness: the gateway serves its API and its store takes writes (no DSM call)
///
/// Deliberately independent of DSM: during a NAS outage the gateway stays in the Service and
/// answers its own problem documents with `Retry-After`, instead of vanishing. DSM's state is
/// in `GET /api/v1/health`. A store that has not taken a write for 15 s (one write that changes
/// nothing, every 5 s, in the background) makes the replica not ready: it could not take a
/// message or an event. A full disk or a read-only database answers reads, so a read would not do.
#[utoipa::path(tag = "health", responses(
    (status = 200, body = HealthStatus),
    (status = 503, body = Problem, content_type = "application/problem+json",
        description = "Wedged (see `/healthz`), or the store has not taken a write for 15 s"),
))]
#[get("/readyz")]
pub async fn readyz(
    chat: Dsm,
    mode: Option<web::Data<GatewayMode>>,
    store: Option<web::Data<StoreWatch>>,
) -> Result<HttpResponse, ApiError> {
    let mode = mode.map_or(GatewayMode::Nas, |m| **m);
    if let Some(gone) = store.and_then(|watch| watch.unreachable_for(monotonic_ms)) {
        return Err(ApiError::new(
            ProblemCode::NotReady,
            format!(
                "not ready: the store has not taken a write for {} s",
                gone.as_secs()
            ),
        ));
    }
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
            // To the millisecond: 5.088e-6 is JSON too, but no reader wants it.
            checked_secs_ago: health.checked_at.elapsed().as_millis() as f64 / 1000.0,
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
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok());
    // The format follows `Accept`: a cache in between must keep the two apart.
    let vary = (actix_web::http::header::VARY, "Accept");
    Ok(if crate::metrics::wants_openmetrics(accept) {
        HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .insert_header(vary)
            .body(metrics.render())
    } else {
        HttpResponse::Ok()
            .content_type(crate::metrics::TEXT_CONTENT_TYPE)
            .insert_header(vary)
            .body(crate::metrics::as_prometheus_text(&metrics.render()))
    })
}

/// Whether `/metrics` needs a key.
pub struct MetricsAccess {
    pub require_key: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_allows_the_store_a_brief_silence_and_no_more() {
        let watch = StoreWatch {
            unreachable_since_ms: AtomicI64::new(0),
        };
        assert_eq!(watch.unreachable_for(|| 1_000_000), None);
        watch.record(false, 1_000_000);
        // A later miss keeps the first one's time.
        watch.record(false, 1_005_000);
        assert_eq!(watch.unreachable_for(|| 1_014_999), None);
        assert_eq!(
            watch.unreachable_for(|| 1_015_000),
            Some(Duration::from_secs(15))
        );
        watch.record(true, 1_020_000);
        assert_eq!(watch.unreachable_for(|| 1_100_000), None);
    }
}
