//! Logging and request ids.
//!
//! Every request gets an id (the caller's `X-Request-Id` when it is sane, else a new UUID). It is
//! echoed in the response header, recorded on the request's span (so every log line of the
//! request carries it) and kept in a task-local so error bodies can name it.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogSettings};
use crate::forwarded::{PublicOrigin, TrustedProxies};
use crate::metrics::{Metrics, RouteMetrics};
use std::rc::Rc;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What error bodies need to know about the request being served.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub id: String,
    pub path: String,
}

tokio::task_local! {
    static CURRENT_REQUEST: RequestInfo;
}

/// The request being served by the current task, if any.
pub fn current_request() -> Option<RequestInfo> {
    CURRENT_REQUEST.try_with(Clone::clone).ok()
}

/// Installs the global subscriber: pretty or JSON lines on `writer`, filtered by `RUST_LOG`
/// when set, else by `log.level`.
pub fn init<W>(settings: &LogSettings, writer: W) -> Result<(), String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .map_err(|e| format!("log.level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// The request method as a metric label and log field: the standard methods, else `other`.
/// Callers may send any token as a method; used raw, each invented one would add series to
/// `/metrics` for as long as the process lives.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Per worker thread: the route metrics of each (registry, method, path) seen. Resolving a
/// path's route template (`match_pattern`) walks the route table's patterns again, and a
/// label set is built and hashed to find its series; a hit here costs one map look-up.
/// Bounded: emptied when full, so paths that are all different (scanners, ids) cannot grow it.
struct RouteCache {
    entries: std::collections::HashMap<(u64, &'static str), RoutesByPath>,
    len: usize,
}

type RoutesByPath = std::collections::HashMap<Box<str>, Rc<RouteMetrics>>;

const ROUTE_CACHE_MAX: usize = 4096;

thread_local! {
    static ROUTES: std::cell::RefCell<RouteCache> = std::cell::RefCell::new(RouteCache {
        entries: Default::default(),
        len: 0,
    });
}

fn route_metrics(
    metrics: &Metrics,
    req: &ServiceRequest,
    method: &'static str,
) -> Rc<RouteMetrics> {
    ROUTES.with_borrow_mut(|cache| {
        let key = (metrics.id(), method);
        if let Some(hit) = cache
            .entries
            .get(&key)
            .and_then(|paths| paths.get(req.path()))
        {
            return hit.clone();
        }
        if cache.len >= ROUTE_CACHE_MAX {
            cache.entries.clear();
            cache.len = 0;
        }
        // Label by route template, never the raw path: unknown paths share one label.
        let route = req.match_pattern();
        let resolved = Rc::new(metrics.route(route.as_deref().unwrap_or("unmatched"), method));
        cache
            .entries
            .entry(key)
            .or_default()
            .insert(req.path().into(), resolved.clone());
        cache.len += 1;
        resolved
    })
}

fn request_id_from(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The path as it may be logged or echoed: a hook's secret (`/hooks/{name}/{secret}`, and
/// anything after it) is masked.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix("/hooks/") else {
        return path.into();
    };
    match rest.split_once('/') {
        Some((name, _secret)) => format!("/hooks/{name}/****").into(),
        None => path.into(),
    }
}

/// Middleware (outermost): request id, request span, access log line, and conversion of errors
/// into responses while the request id is still known.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id_from(&req);
    let origin = match req.app_data::<web::Data<TrustedProxies>>() {
        Some(proxies) => PublicOrigin::resolve(&req, proxies),
        None => PublicOrigin::resolve(&req, &TrustedProxies::default()),
    };
    let path = loggable_path(req.path());
    let info = RequestInfo {
        id: id.clone(),
        // As the caller sees it: behind a proxy the path carries the public prefix.
        path: format!("{}{}", origin.prefix, path),
    };
    // The path, never the query string: callers' queries are not ours to log.
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method,
        path = %path,
        client_ip = origin.client_ip.map(tracing::field::display),
    );
    req.extensions_mut().insert(origin);
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<Metrics>>()
        .map(|m| m.clone().into_inner());
    let route = metrics.as_ref().map(|m| route_metrics(m, &req, method));
    let in_flight = metrics.as_ref().map(Metrics::request_started);
    let outcome = CURRENT_REQUEST
        .scope(info, async move {
            // Errors are rendered inside the scope so the problem body carries the request id.
            next.call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body)
                .map_err(|error| {
                    let response = error.error_response();
                    (error, response)
                })
        })
        .instrument(span.clone())
        .await;
    let status = match &outcome {
        Ok(response) => response.status(),
        Err((_, response)) => response.status(),
    };
    drop(in_flight);
    if let Some(route) = &route {
        route.finished(status.as_u16(), started.elapsed());
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    let id_header = HeaderValue::from_str(&id).ok();
    match outcome {
        Ok(mut response) => {
            if let Some(value) = id_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        }
        Err((error, mut response)) => {
            if let Some(value) = id_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Err(InternalError::from_response(error.to_string(), response).into())
        }
    }
}
