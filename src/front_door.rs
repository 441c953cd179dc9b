//! The front door: the one middleware every request passes first. It gives the request its id
//! (the caller's `X-Request-Id` when it is sane, else a new UUID), the scope its log lines and
//! error bodies name it from, its public origin and a deadline over reading its body, turns
//! away what the browser guard refuses, and once the request is answered records the route's
//! metrics, logs the access line and puts the id on the answer, errors included.
//!
//! One layer, not one per concern: each `from_fn` layer keeps its own future and boxes the
//! next one, and the profile showed the copies of those futures on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};

use crate::api::error::{ApiError, ProblemCode};
use crate::body_deadline::BodyDeadlines;
use crate::browser::BrowserGuard;
use crate::forwarded::{PublicOrigin, TrustedProxies};
use crate::later_heads::ConnectionClock;
use crate::metrics::Metrics;
use crate::telemetry::{
    REQUEST_ID_HEADER, RequestInfo, loggable_path, method_label, request_id_from, route_metrics,
    serving,
};

/// Middleware (outermost but for the demo marker).
pub async fn front_door(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Labelled as sent, before a HEAD is routed as its GET.
    let method = method_label(req.method());
    if let Some(path) = pasted_path_as_meant(req.path()) {
        route_as(&mut req, &path);
    }
    if let Some(path) = gotify_as_hook(&req) {
        route_as_without_query(&mut req, &path);
        req.extensions_mut().insert(GotifyCall);
    }
    // By the path it is routed to: `HEAD //webapi/entry.cgi?…` must not post as its GET would.
    if req.method() == Method::HEAD && head_is_get(req.path()) {
        req.head_mut().method = Method::GET;
    }
    let clock = req.conn_data::<Arc<ConnectionClock>>().cloned();
    if let Some(clock) = &clock {
        clock.request_started();
    }
    let id = request_id_from(&req);
    let origin = match req.app_data::<web::Data<TrustedProxies>>() {
        Some(proxies) => PublicOrigin::resolve(&req, proxies),
        None => PublicOrigin::resolve(&req, &TrustedProxies::default()),
    };
    let path = loggable_path(req.path(), |route, name| {
        crate::api::is_endpoint_name(req.app_data(), req.app_data(), route, name)
    });
    let id_header = HeaderValue::from_str(&id).ok();
    // The path, never the query string: callers' queries are not ours to log.
    let info = RequestInfo::new(id, method, &origin.prefix, &path, origin.client_ip);
    let refusal = encoded_body_refusal(&req).or_else(|| {
        req.app_data::<web::Data<BrowserGuard>>()
            .and_then(|guard| guard.refusal(&req, &origin).err())
    });
    req.extensions_mut().insert(origin);
    if let Some(deadlines) = req.app_data::<web::Data<BodyDeadlines>>().cloned() {
        deadlines.apply(&mut req);
    }
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<Metrics>>()
        .map(|m| m.clone().into_inner());
    let route = metrics.as_ref().map(|m| route_metrics(m, &req, method));
    let in_flight = metrics.as_ref().map(Metrics::request_started);
    let cancellable = reads_only(req.method(), req.path());
    // A request that runs in a task of its own, and whether its caller waits for it still.
    let detached = (!cancellable).then(|| {
        std::rc::Rc::new(Detached {
            tasks: req.app_data::<web::Data<RequestTasks>>().cloned(),
            caller_gone: std::cell::Cell::new(false),
            ended: std::cell::Cell::new(false),
        })
    });
    let in_task = detached.clone();
    // Served, its access line logged and its errors rendered inside the request's scope: the
    // line carries the request's fields, the problem body its id.
    let serve = serving(info, async move {
        let unanswered = Unanswered {
            route,
            started,
            in_flight,
            answered: false,
        };
        let outcome = match refusal {
            Some(refusal) => {
                let response = refusal.error_response();
                Ok(req.into_response(response))
            }
            None => next
                .call(req)
                .await
                .map(|response| refusal_as_problem(response.map_into_boxed_body()))
                .map_err(|error| {
                    let response = error.error_response();
                    (error, response)
                }),
        };
        unanswered.answered(match &outcome {
            Ok(response) => response.status(),
            Err((_, response)) => response.status(),
        });
        if in_task.as_ref().is_some_and(|d| d.caller_gone.get()) {
            tracing::info!(
                "the caller closed its connection before the answer: the request was carried \
                 out, its answer not delivered"
            );
        }
        outcome
    });
    let outcome = match detached {
        // Dropped with its connection when the caller goes ([`reads_only`]).
        None => serve.await,
        // Runs to its end even when the caller goes (dropped at shutdown inside the runtime,
        // as the store's connections need).
        Some(detached) => {
            let task_side = TaskSide::new(detached.clone());
            let task = crate::store::task::spawn_awaited(async move {
                let outcome = serve.await;
                drop(task_side);
                outcome
            });
            let caller_side = CallerSide(detached);
            let joined = task.await;
            drop(caller_side);
            match joined {
                Ok(outcome) => outcome,
                Err(_) => {
                    let error =
                        ApiError::new(ProblemCode::Internal, "the request's task ended early");
                    let response = error.error_response();
                    Err((error.into(), response))
                }
            }
        }
    };
    // A body that ran out of time (408): the connection is closed once it is answered, so the
    // rest of that body is never read as the next request.
    if let Some(clock) = &clock {
        let status = match &outcome {
            Ok(response) => response.status(),
            Err((_, response)) => response.status(),
        };
        if status == actix_web::http::StatusCode::REQUEST_TIMEOUT {
            clock.close_when_answered();
        }
    }
    match outcome {
        Ok(mut response) => {
            if let Some(value) = id_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(match clock {
                Some(clock) => response.map_body(|_, body| clock.watch(body)),
                None => response,
            })
        }
        Err((error, mut response)) => {
            if let Some(value) = id_header {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // An error's body is small and made by actix: finished here.
            if let Some(clock) = clock {
                clock.request_finished();
            }
            Err(InternalError::from_response(error.to_string(), response).into())
        }
    }
}

/// Whether a request only reads, so that it may end with its connection: a caller that closes
/// it has given up on the answer, and the request's DSM call, upstream slot and memory are
/// given back at once (a client that timed out and retried against a hanging NAS left every
/// attempt running, holding the slots its retries waited for). GETs and HEADs of the API's
/// resources and the health and metrics routes. Every other request runs to its end, as a
/// write cut part way could leave a message half posted or a channel half made: the hooks'
/// and other tools' doors post on a GET too.
fn reads_only(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path.starts_with("/api/") || matches!(path, "/healthz" | "/readyz" | "/metrics"))
}

/// The requests running in tasks of their own (not [`reads_only`]): a stop waits for them
/// before the server's own drain. The drain waits for open connections, and a write's caller
/// that leaves, before or during it, takes its connection along while the write goes on; the
/// tasks still running when the drain ends are dropped with their worker. Once the stop
/// began, code that would spawn from a `Drop` must not: spawning there panics.
#[derive(Default)]
pub struct RequestTasks {
    running: AtomicUsize,
    none_running: tokio::sync::Notify,
    stopping: AtomicBool,
}

impl RequestTasks {
    /// Whether the gateway began to stop.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the stop begun and waits up to `within` for the requests running in tasks:
    /// whether they all ended.
    pub async fn stop(&self, within: std::time::Duration) -> bool {
        self.stopping.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self.none_running.notified();
            let running = self.running.load(Ordering::Acquire);
            if running == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(
                    running,
                    "writes were still running when the drain's time was up"
                );
                return false;
            }
        }
    }
}

/// A request running in a task of its own, between its caller and its task.
struct Detached {
    tasks: Option<web::Data<RequestTasks>>,
    caller_gone: std::cell::Cell<bool>,
    ended: std::cell::Cell<bool>,
}

/// The caller's side of a [`Detached`] request: dropped before the task ended, the caller has
/// gone (its answer is then not delivered, which the task logs).
struct CallerSide(std::rc::Rc<Detached>);

impl Drop for CallerSide {
    fn drop(&mut self) {
        if !self.0.ended.get() {
            self.0.caller_gone.set(true);
        }
    }
}

/// The task's side of a [`Detached`] request, counted in [`RequestTasks`] from its start until
/// the task ends (or is dropped).
struct TaskSide(std::rc::Rc<Detached>);

impl TaskSide {
    fn new(detached: std::rc::Rc<Detached>) -> Self {
        if let Some(tasks) = &detached.tasks {
            tasks.running.fetch_add(1, Ordering::AcqRel);
        }
        Self(detached)
    }
}

impl Drop for TaskSide {
    fn drop(&mut self) {
        let detached = &self.0;
        detached.ended.set(true);
        if let Some(tasks) = &detached.tasks
            && tasks.running.fetch_sub(1, Ordering::AcqRel) == 1
        {
            tasks.none_running.notify_waiters();
        }
    }
}

/// A request being served, until its answer is made: its route's metrics and access line, as
/// `499` (nginx's "client closed request") when it is dropped unanswered because its caller
/// closed the connection.
struct Unanswered {
    route: Option<std::rc::Rc<crate::metrics::RouteMetrics>>,
    started: Instant,
    in_flight: Option<crate::metrics::InFlight>,
    answered: bool,
}

/// The status a request dropped unanswered is counted and logged with.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Unanswered {
    fn answered(mut self, status: actix_web::http::StatusCode) {
        self.answered = true;
        self.finish(status.as_u16());
    }

    fn finish(&mut self, status: u16) {
        self.in_flight.take();
        let elapsed = self.started.elapsed();
        if let Some(route) = &self.route {
            route.finished(status, elapsed);
        }
        tracing::info!(
            status,
            elapsed_ms = crate::logging::millis(elapsed),
            "request finished"
        );
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered {
            // A request task's panic is answered 500 ("the request's task ended early").
            let status = match std::thread::panicking() {
                true => 500,
                false => CLIENT_CLOSED_REQUEST,
            };
            self.finish(status);
        }
    }
}

/// A compressed request body is refused before anything reads it: actix inflates each
/// received chunk whole before a body limit applies, so 33 KB of zstd would become a gigabyte.
/// No sender the gateway serves compresses its requests.
fn encoded_body_refusal(req: &ServiceRequest) -> Option<ApiError> {
    let coding = req.headers().get(header::CONTENT_ENCODING)?;
    if coding.as_bytes().eq_ignore_ascii_case(b"identity") {
        return None;
    }
    Some(ApiError::new(
        ProblemCode::UnsupportedMediaType,
        format!(
            "compressed request bodies are not accepted (Content-Encoding: {}); send the body uncompressed",
            String::from_utf8_lossy(coding.as_bytes())
        ),
    ))
}

/// A CORS preflight actix-cors refuses (an origin, method or header not allowed) is answered
/// in plain text by the middleware itself: the caller gets the API's problem instead.
fn refusal_as_problem(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let refused = response
        .response()
        .error()
        .and_then(|error| error.as_error::<actix_cors::CorsError>())
        .map(|refusal| format!("the CORS preflight was refused: {refusal}"));
    match refused {
        Some(detail) => {
            let problem = crate::api::error::ApiError::invalid(detail).error_response();
            response.into_response(problem)
        }
        None => response,
    }
}

/// Whether a HEAD request is answered as its GET without the body (RFC 9110 §9.3.2: actix's
/// codec leaves the body of a HEAD answer out). Not where a GET has an effect (a hook called
/// or Synology's `entry.cgi` called with GET posts its message) or never ends (an event stream); `/inbound` answers HEAD itself.
/// A hook, inbound or ntfy URL pasted with a trailing slash (`/hooks/alerts/<secret>/`,
/// `/inbound/deploys/`, `/ntfy/`): the one it names. A sender, or Chat, gets only a 404 for it and gives
/// up, and its alerts or events are lost.
///
/// Also a hook's URL with Discord's `/slack` or `/github` after it: senders that speak Slack's
/// or GitHub's language to a Discord webhook add them (Netdata's Discord notifications always
/// do), and the body says the rest.
///
/// Also Synology Chat's `/webapi/entry.cgi` after a prefix: Apprise puts its `fullpath` there
/// (`synology://host/token/` sends `//webapi/entry.cgi`), as a proxy in front of a NAS may.
/// And Matrix's and Telegram's paths after a doubled slash.
fn pasted_path_as_meant(path: &str) -> Option<String> {
    if path.len() > ENTRY_CGI.len() && path.ends_with(ENTRY_CGI) {
        return Some(ENTRY_CGI.to_owned());
    }
    // A homeserver's or Bot API's URL given with a trailing slash: Gatus and Healthchecks send
    // `//_matrix/…`, Alertmanager `/telegram//bot…`.
    if let Some(rest) = path
        .strip_prefix("//")
        .filter(|rest| rest.starts_with("_matrix/"))
    {
        return Some(format!("/{}", rest.trim_start_matches('/')));
    }
    if let Some(rest) = path.strip_prefix("/telegram//") {
        return Some(format!("/telegram/{}", rest.trim_start_matches('/')));
    }
    if let Some(rest) = path.strip_prefix("/hooks/") {
        let rest = rest.trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').collect();
        if let [name, secret, "slack" | "github"] = segments.as_slice()
            && !name.is_empty()
            && !secret.is_empty()
        {
            return Some(format!("/hooks/{name}/{secret}"));
        }
    }
    if !path.ends_with('/') {
        return None;
    }
    // ntfy's server URL as written (`/ntfy/`), or a topic's with a slash after it.
    if path.starts_with("/ntfy/") {
        return Some(path.trim_end_matches('/').to_owned());
    }
    let prefix = ["/hooks/", "/inbound/"]
        .into_iter()
        .find(|prefix| path.starts_with(prefix))?;
    let trimmed = path.trim_end_matches('/');
    (trimmed.len() >= prefix.len()).then(|| trimmed.to_owned())
}

/// Marks a request [`gotify_as_hook`] routed: the hook answers it 200, as Gotify does (Apprise's
/// `gotify://` counts any other status as a failure, a 202 included).
#[derive(Clone, Copy, Debug)]
pub struct GotifyCall;

/// A Gotify sender's message to a hook (`<server>/message`, the server being the hook's URL):
/// its application token, in `?token=` or `X-Gotify-Key`, is the hook's secret. Proxmox VE's
/// Gotify target, and the Gotify types of Uptime Kuma, Healthchecks and the *arr apps, call so.
/// The token leaves the query (which holds nothing else of Gotify's).
fn gotify_as_hook(req: &ServiceRequest) -> Option<String> {
    let name = req
        .path()
        .strip_prefix("/hooks/")?
        .strip_suffix("/message")
        .filter(|name| !name.is_empty() && !name.contains('/'))?;
    if req.headers().contains_key("x-gotify-key") {
        return Some(format!("/hooks/{name}"));
    }
    let token = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, token)| token.into_owned())?;
    let plain = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    plain.then(|| format!("/hooks/{name}/{token}"))
}

/// Routes the request as if it had been sent to `path`, without its query.
fn route_as_without_query(req: &mut ServiceRequest, path: &str) {
    let mut parts = req.head().uri.clone().into_parts();
    let Ok(path) = path.parse() else {
        return;
    };
    parts.path_and_query = Some(path);
    if let Ok(uri) = actix_web::http::Uri::from_parts(parts) {
        req.match_info_mut().get_mut().update(&uri);
        req.head_mut().uri = uri;
    }
}

/// Routes the request as if it had been sent to `path` (its query kept).
fn route_as(req: &mut ServiceRequest, path: &str) {
    let mut parts = req.head().uri.clone().into_parts();
    let path_and_query = match req.query_string() {
        "" => path.to_owned(),
        query => format!("{path}?{query}"),
    };
    let Ok(path_and_query) = path_and_query.parse() else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = actix_web::http::Uri::from_parts(parts) {
        req.match_info_mut().get_mut().update(&uri);
        req.head_mut().uri = uri;
    }
}

/// Synology Chat's incoming-webhook path (`api::entry_cgi`).
const ENTRY_CGI: &str = "/webapi/entry.cgi";

/// Whether a HEAD to `path` is answered as its GET would be, without the body: not where a GET
/// posts (hooks, ntfy, Telegram, Synology's URL, inbound calls) or streams (events).
pub fn head_is_get(path: &str) -> bool {
    ![
        "/hooks",
        "/inbound",
        "/api/v1/events",
        "/webapi",
        "/telegram",
        "/_matrix",
        // Its GETs publish (`/ntfy/{topic}/publish?message=…`): a HEAD must not post.
        "/ntfy",
    ]
    .iter()
    .any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}
