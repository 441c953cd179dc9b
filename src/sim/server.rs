//! HTTP plumbing: decode, validate (101/102/103/104), authenticate, dispatch, log, answer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(feature = "sim-test-hooks")]
use std::time::Duration;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::apis::{self, Access};
use super::store::State;
use super::wire::{ApiErr, Args, Params, R, Reply, envelope_err, envelope_ok, err};
use super::{LoggedRequest, SimConfig};

#[cfg(feature = "sim-test-hooks")]
pub(crate) struct Fault {
    pub api: String,
    pub method: Option<String>,
    /// Matching calls still answered normally before the fault starts.
    pub pass: u32,
    pub remaining: u32,
    pub kind: FaultKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "sim-test-hooks"), allow(dead_code))]
pub(crate) enum FaultKind {
    /// Answer this DSM error code.
    Code(i64),
    /// Send the headers and half the body, then nothing more (a NAS wedged mid-answer).
    StallMidBody,
    /// Carry the call out, then close the connection before any byte of the answer (a NAS
    /// whose web server restarts mid-request).
    CloseBeforeAnswer,
    /// Carry the call out, then answer a proxy's 504 page (a reverse proxy in front of the
    /// NAS that stopped waiting).
    ProxyTimeoutAfter,
    /// Close the connection before any byte of the answer without carrying the call out (a
    /// NAS whose web server went down as the request arrived).
    DropBeforeCall,
    /// Do not carry the call out: answer this HTTP status (429 or 503) with `Retry-After`
    /// of the given seconds (a reverse proxy in front of the NAS shedding load).
    TurnedAway(u16, u64),
    /// Carry the call out, then answer this DSM error code (a busy NAS that made the post
    /// but reported 110).
    CodeAfter(i64),
    /// Wait this many milliseconds, then carry the call out and answer (a NAS slower than
    /// the gateway waits, while other calls are answered at once).
    SlowCall(u64),
    /// Carry the call out and answer a success without its `data` (`{"success":true}`).
    WithoutData,
}

/// Outbound work the actix-side control task performs (it owns the server handle and awc).
pub(crate) enum Cmd {
    #[cfg(feature = "sim-test-hooks")]
    Refuse(bool, tokio::sync::oneshot::Sender<std::io::Result<()>>),
    Stop(tokio::sync::oneshot::Sender<()>),
    Deliver(super::events::Delivery),
}

pub(crate) struct Shared {
    pub config: SimConfig,
    pub state: Mutex<State>,
    #[cfg(feature = "sim-test-hooks")]
    pub log: Mutex<Vec<LoggedRequest>>,
    #[cfg(feature = "sim-test-hooks")]
    pub faults: Mutex<Vec<Fault>>,
    #[cfg(feature = "sim-test-hooks")]
    pub latency: Mutex<Duration>,
    pub login_attempts: AtomicUsize,
    pub outbound: Mutex<Vec<super::events::OutboundEvent>>,
    pub ctl: mpsc::UnboundedSender<Cmd>,
}

/// Poison-tolerant lock: a panicking handler must not take the whole simulator down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub user_id: i64,
    pub admin: bool,
}

/// Everything a handler needs about the request.
pub(crate) struct Cx<'a> {
    pub a: Args<'a>,
    pub method: &'a str,
    pub caller: Option<Caller>,
    pub peer: IpAddr,
    pub config: &'a SimConfig,
    pub sid: Option<String>,
    pub cookies: Vec<String>,
}

impl Cx<'_> {
    /// The session user; only called by session handlers, which always have one.
    pub fn me(&self) -> Result<&Caller, ApiErr> {
        self.caller.as_ref().ok_or_else(|| err(119))
    }

    pub fn admin(&self) -> Result<&Caller, ApiErr> {
        let me = self.me()?;
        if me.admin { Ok(me) } else { Err(err(105)) }
    }
}

pub(crate) async fn handle(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    #[cfg(feature = "sim-test-hooks")]
    {
        let latency = *lock(&shared.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let params = Params::parse(req.query_string(), &content_type, body);
    let path = req.path().to_string();
    let http_method = req.method().as_str().to_string();
    let entry = LoggedRequest {
        http_method: http_method.clone(),
        path: path.clone(),
        // Control values as sent: DSM does not JSON-unquote them (ref §1, "each non-control
        // value JSON-encoded"), so `api="SYNO.Chat.Post"` names no API.
        api: params.raw("api").map(str::to_owned),
        method: params.raw("method").map(str::to_owned),
        version: params.raw("version").map(str::to_owned),
        params: params.logged.clone(),
        query_fields: url::form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect(),
        session_account: None,
        syno_token_ok: false,
        error_code: None,
    };
    if !apis::is_known_path(&path) || !(http_method == "GET" || http_method == "POST") {
        record(&shared, entry);
        return HttpResponse::NotFound()
            .content_type("text/html")
            .body("<h1>404 Not Found</h1>");
    }

    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let cookie_sid = req.cookie("id").map(|c| c.value().to_string());
    // A GET `_sid` that starts with a digit is not recognised although the same sid works as
    // the `id` cookie (upstream/PROTOCOL.md [S2], aerialls/synology-srm#3); `_sid` wins over the
    // cookie, so such a request has no usable session.
    let get_query_sid_unusable = http_method == "GET"
        && url::form_urlencoded::parse(req.query_string().as_bytes())
            .any(|(k, v)| k == "_sid" && v.starts_with(|c: char| c.is_ascii_digit()));
    let sid = if get_query_sid_unusable {
        None
    } else {
        params
            .raw("_sid")
            .filter(|s| !s.is_empty())
            .map(|sid| PresentedSid {
                sid: sid.to_owned(),
                as_cookie: false,
            })
            .or(cookie_sid.map(|sid| PresentedSid {
                sid,
                as_cookie: true,
            }))
    };
    let token = req
        .headers()
        .get("X-SYNO-TOKEN")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| params.raw("SynoToken").map(str::to_owned));

    let fault = match (&entry.api, &entry.method) {
        (Some(api), Some(method)) => take_fault(&shared, api, method, |k| {
            matches!(
                k,
                FaultKind::StallMidBody
                    | FaultKind::CloseBeforeAnswer
                    | FaultKind::ProxyTimeoutAfter
                    | FaultKind::DropBeforeCall
                    | FaultKind::TurnedAway(..)
                    | FaultKind::CodeAfter(_)
                    | FaultKind::SlowCall(_)
                    | FaultKind::WithoutData
            )
        }),
        _ => None,
    };
    let call = Call {
        shared: shared.get_ref().clone(),
        path,
        params,
        peer,
        sid,
        token,
        entry,
        fault,
    };
    match fault {
        // Carried out on a task of its own, to the end even when the caller hangs up (or dies)
        // meanwhile, as DSM finishes what it was sent.
        Some(FaultKind::SlowCall(ms)) => actix_web::rt::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            call.carry_out().await
        })
        .await
        .unwrap_or_else(|_| HttpResponse::InternalServerError().finish()),
        _ => call.carry_out().await,
    }
}

/// The session id a request carries, and how.
struct PresentedSid {
    sid: String,
    /// As the `id` cookie rather than `_sid`.
    as_cookie: bool,
}

/// A call past its faults' first effects: what is left to carry it out and answer it.
struct Call {
    shared: Arc<Shared>,
    path: String,
    params: Params,
    peer: IpAddr,
    sid: Option<PresentedSid>,
    token: Option<String>,
    entry: LoggedRequest,
    fault: Option<FaultKind>,
}

impl Call {
    async fn carry_out(self) -> HttpResponse {
        let Call {
            shared,
            path,
            params,
            peer,
            sid,
            token,
            mut entry,
            fault,
        } = self;
        if matches!(fault, Some(FaultKind::DropBeforeCall)) {
            record(&shared, entry);
            return closed_before_answer();
        }
        if let Some(FaultKind::TurnedAway(status, retry_after)) = fault {
            record(&shared, entry);
            let status = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
            return HttpResponse::build(status)
                .insert_header((header::RETRY_AFTER, retry_after.to_string()))
                .content_type("text/html")
                .body("<html><body><h1>Service Unavailable</h1></body></html>");
        }
        let mut cookies = Vec::new();
        let result = process(
            &shared,
            &path,
            &params,
            peer,
            sid,
            token,
            &mut entry,
            &mut cookies,
        );

        let result = match (fault, result) {
            (Some(FaultKind::CodeAfter(code)), Ok(_)) => Err(err(code)),
            (Some(FaultKind::WithoutData), Ok(Reply::Ok(_))) => Ok(Reply::Ok(None)),
            (_, result) => result,
        };
        let mut resp = match result {
            Ok(Reply::Binary {
                content_type,
                filename,
                data,
            }) => {
                let mut b = HttpResponse::Ok();
                b.content_type(content_type).insert_header((
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ));
                b.body(data)
            }
            Ok(Reply::Ok(data)) => json_response(envelope_ok(data)),
            Err(e) => {
                entry.error_code = Some(e.code);
                json_response(envelope_err(&e))
            }
        };
        for c in cookies {
            if let Ok(v) = header::HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        record(&shared, entry);
        match fault {
            Some(FaultKind::StallMidBody) => stalled(resp).await,
            Some(FaultKind::CloseBeforeAnswer) => closed_before_answer(),
            Some(FaultKind::ProxyTimeoutAfter) => HttpResponse::GatewayTimeout()
                .content_type("text/html")
                .body("<html><body><h1>504 Gateway Time-out</h1></body></html>"),
            _ => resp,
        }
    }
}

/// An answer whose body fails before its first byte: actix-http then drops the connection
/// without writing the head it had encoded, so the caller reads the end of the stream where
/// the answer should begin.
fn closed_before_answer() -> HttpResponse {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("the web server restarts"))
    });
    HttpResponse::Ok().streaming(failing)
}

/// The same answer with its full Content-Length, but only the first half of the body is ever
/// sent; the connection then stays open and silent.
async fn stalled(resp: HttpResponse) -> HttpResponse {
    let (head, body) = resp.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) });
    let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    head.set_body(actix_web::body::SizedStream::new(
        bytes.len() as u64,
        Box::pin(stream),
    ))
    .map_into_boxed_body()
}

fn json_response(v: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json; charset=\"UTF-8\""))
        .insert_header((
            header::CACHE_CONTROL,
            "max-age=0, no-cache, no-store, must-revalidate",
        ))
        .body(v.to_string())
}

#[allow(clippy::too_many_arguments)]
fn process(
    shared: &Shared,
    path: &str,
    params: &Params,
    peer: IpAddr,
    sid: Option<PresentedSid>,
    token: Option<String>,
    entry: &mut LoggedRequest,
    cookies: &mut Vec<String>,
) -> R {
    let mut st = lock(&shared.state);
    st.run_due_schedules();
    // A session logged in with `format=sid` is not taken back from the cookie
    // (upstream-protocol §3.1c): such a request carries no session.
    let sid = sid
        .filter(|p| !p.as_cookie || st.sessions.get(&p.sid).is_none_or(|s| s.cookie_format))
        .map(|p| p.sid);

    // What the log records about the presented session, independent of the API called.
    if let Some(s) = sid.as_deref().and_then(|s| st.sessions.get(s))
        && s.last_used.elapsed() <= shared.config.session_idle_timeout
    {
        entry.session_account = Some(s.account.clone());
        entry.syno_token_ok = token.as_deref() == Some(s.synotoken.as_str());
    }

    let (Some(api), Some(method), Some(version)) = (
        entry.api.clone().filter(|s| !s.is_empty()),
        entry.method.clone().filter(|s| !s.is_empty()),
        entry.version.clone().filter(|s| !s.is_empty()),
    ) else {
        return Err(err(101));
    };
    if api == "SYNO.API.Auth" && method == "login" {
        shared.login_attempts.fetch_add(1, Ordering::SeqCst);
    }
    let Some(def) = apis::find(&api)
        .filter(|d| apis::path_serves(path, d.name))
        .filter(|d| !(st.chat_stopped && apis::is_chat(d.name)))
    else {
        return Err(err(102));
    };
    let Ok(version) = version.trim().parse::<u32>() else {
        return Err(err(101));
    };
    if version < def.min || version > def.max {
        return Err(err(104));
    }
    if let Some(FaultKind::Code(code)) =
        take_fault(shared, &api, &method, |k| matches!(k, FaultKind::Code(_)))
    {
        return Err(err(code));
    }

    let external = def.access == Access::External && method != "list";
    let mut cx = Cx {
        a: Args {
            p: params,
            external,
            json_format: def.json,
        },
        method: &method,
        caller: None,
        peer,
        config: &shared.config,
        sid: sid.clone(),
        cookies: Vec::new(),
    };
    let needs_session =
        def.access == Access::Session || (def.access == Access::External && !external);
    // Method existence is checked before the session or an integration's token, as DSM's
    // dispatcher does: a misspelt External method is 103, not a rejected token (404).
    let known = |api: &str, method: &str| {
        super::chat::has_method(api, method) || super::integ::has_method(api, method)
    };
    if (needs_session || api == "SYNO.Chat.External") && !known(&api, &method) {
        return Err(err(103));
    }
    if needs_session {
        cx.caller = Some(check_session(
            &mut st,
            &shared.config,
            sid.as_deref(),
            token.as_deref(),
        )?);
    }
    let r = match api.as_str() {
        "SYNO.API.Info" | "SYNO.API.Auth" | "SYNO.API.Auth.UIConfig" | "SYNO.API.Encryption" => {
            super::auth::handle(&api, &mut cx, &mut st)
        }
        _ if super::integ::has_method(&api, &method) => {
            super::integ::handle(&api, &mut cx, &mut st)
        }
        _ => super::chat::handle(&api, &mut cx, &mut st),
    };
    cookies.append(&mut cx.cookies);
    r
}

/// Keeps the request in the tests' log; without the test hooks there is no log to grow.
fn record(shared: &Shared, entry: LoggedRequest) {
    #[cfg(feature = "sim-test-hooks")]
    lock(&shared.log).push(entry);
    #[cfg(not(feature = "sim-test-hooks"))]
    let _ = (shared, entry);
}

/// Without the test hooks no fault can have been injected.
#[cfg(not(feature = "sim-test-hooks"))]
fn take_fault(_: &Shared, _: &str, _: &str, _: impl Fn(FaultKind) -> bool) -> Option<FaultKind> {
    None
}

#[cfg(feature = "sim-test-hooks")]
fn take_fault(
    shared: &Shared,
    api: &str,
    method: &str,
    wanted: impl Fn(FaultKind) -> bool,
) -> Option<FaultKind> {
    let mut faults = lock(&shared.faults);
    let idx = faults.iter().position(|f| {
        f.remaining > 0
            && wanted(f.kind)
            && f.api == api
            && f.method.as_deref().is_none_or(|m| m == method)
    })?;
    let f = &mut faults[idx];
    if f.pass > 0 {
        f.pass -= 1;
        return None;
    }
    f.remaining -= 1;
    let kind = f.kind;
    if f.remaining == 0 {
        faults.remove(idx);
    }
    Some(kind)
}

fn check_session(
    st: &mut State,
    config: &SimConfig,
    sid: Option<&str>,
    token: Option<&str>,
) -> Result<Caller, ApiErr> {
    let sid = sid.ok_or_else(|| err(119))?;
    if let Some(&code) = st.killed.get(sid) {
        return Err(err(code));
    }
    let Some(s) = st.sessions.get_mut(sid) else {
        return Err(err(119));
    };
    if s.last_used.elapsed() > config.session_idle_timeout {
        st.sessions.remove(sid);
        return Err(err(119));
    }
    if config.enforce_syno_token && token != Some(s.synotoken.as_str()) {
        return Err(err(119));
    }
    s.last_used = Instant::now();
    let Some(acc) = st.accounts.get(&s.account) else {
        return Err(err(119));
    };
    Ok(Caller {
        user_id: acc.user_id,
        admin: acc.admin,
    })
}
