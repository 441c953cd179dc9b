//! In-process DSM simulator (query.cgi / auth.cgi / entry.cgi) speaking the Synology Chat wire
//! protocol. It shares no code with the gateway so it cannot inherit the client's assumptions.

mod apis;
mod auth;
mod chat;
mod events;
mod integ;
mod png;
mod rand;
mod server;
mod store;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::{mpsc, oneshot};

pub use events::OutboundEvent;
use server::{Cmd, Shared, lock};
#[cfg(feature = "sim-test-hooks")]
use server::{Fault, FaultKind};
use store::State;

/// DSM account the gateway logs in with in demo mode.
pub const DEMO_ACCOUNT: &str = "admin";
pub const DEMO_PASSWORD: &str = "synology-demo";

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Idle time after which a sid is unknown (119).
    pub session_idle_timeout: Duration,
    /// Session calls without the session's X-SYNO-TOKEN header / SynoToken param -> 119.
    pub enforce_syno_token: bool,
    pub seed_demo_data: bool,
    /// Failed logins from one IP within 10 minutes before that IP gets 407 (0 = never).
    pub auto_block_failures: u32,
    /// A new login of an account invalidates its older sids (107).
    pub kill_previous_session_on_relogin: bool,
    /// SYNO.Chat.External sends per token per second; more -> 411.
    pub external_rate_per_sec: u32,
    /// Longer External text / Post.create message -> 410.
    pub max_message_len: usize,
    /// Serve HTTPS with this configuration (a NAS on port 5001), e.g. a self-signed certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            session_idle_timeout: Duration::from_secs(30 * 60),
            enforce_syno_token: true,
            seed_demo_data: true,
            auto_block_failures: 5,
            kill_previous_session_on_relogin: false,
            external_rate_per_sec: 2,
            max_message_len: 2000,
            tls: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimSession {
    pub sid: String,
    pub synotoken: String,
    pub account: String,
}

#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub http_method: String,
    pub path: String,
    pub api: Option<String>,
    pub method: Option<String>,
    pub version: Option<String>,
    /// Every field after merging query string and body, decoded, in arrival order.
    pub params: Vec<(String, String)>,
    /// Names of the fields that came in the URL's query string (what access logs record).
    pub query_fields: Vec<String>,
    pub session_account: Option<String>,
    pub syno_token_ok: bool,
    pub error_code: Option<i64>,
}

pub struct Simulator {
    control: SimControl,
    addr: SocketAddr,
}

/// Cheap-to-clone handle on the running simulator's state.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

fn build_server(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let tls = shared.config.tls.clone();
    let data = web::Data::new(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(web::to(server::handle))
    })
    .workers(1)
    .disable_signals();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, (*tls).clone())?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

#[cfg(feature = "sim-test-hooks")]
/// Binds `addr` again after a refusal; the old socket may take a moment to be released.
async fn rebind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let mut last = None;
    for _ in 0..100 {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("rebind failed")))
}

/// Owns the actix server handle so that Send + Sync `SimControl` can stop/restart listening.
#[cfg_attr(not(feature = "sim-test-hooks"), allow(unused_variables))]
async fn control_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    mut handle: Option<actix_web::dev::ServerHandle>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            #[cfg(feature = "sim-test-hooks")]
            Cmd::Refuse(true, reply) => {
                if let Some(h) = handle.take() {
                    h.stop(false).await;
                }
                let _ = reply.send(Ok(()));
            }
            #[cfg(feature = "sim-test-hooks")]
            Cmd::Refuse(false, reply) => {
                let res = if handle.is_some() {
                    Ok(())
                } else {
                    match rebind(addr)
                        .await
                        .and_then(|l| build_server(shared.clone(), l))
                    {
                        Ok(server) => {
                            handle = Some(server.handle());
                            actix_rt::spawn(server);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                };
                let _ = reply.send(res);
            }
            Cmd::Deliver(d) => {
                actix_rt::spawn(events::deliver(shared.clone(), d));
            }
            Cmd::Stop(reply) => {
                if let Some(h) = handle.take() {
                    h.stop(false).await;
                }
                let _ = reply.send(());
                return;
            }
        }
    }
}

impl Simulator {
    /// Binds `addr` (port 0 allowed) and serves in the current actix system.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<Simulator> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(
                config.seed_demo_data,
                config.session_idle_timeout,
            )),
            config,
            #[cfg(feature = "sim-test-hooks")]
            log: Mutex::new(Vec::new()),
            #[cfg(feature = "sim-test-hooks")]
            faults: Mutex::new(Vec::new()),
            #[cfg(feature = "sim-test-hooks")]
            latency: Mutex::new(Duration::ZERO),
            login_attempts: AtomicUsize::new(0),
            outbound: Mutex::new(Vec::new()),
            ctl: tx,
        });
        let server = build_server(shared.clone(), listener)?;
        let handle = server.handle();
        actix_rt::spawn(server);
        actix_rt::spawn(control_loop(shared.clone(), addr, Some(handle), rx));
        Ok(Simulator {
            control: SimControl { shared },
            addr,
        })
    }

    /// `http://IP:PORT`; a wildcard bind is reported as 127.0.0.1.
    pub fn base_url(&self) -> String {
        let scheme = if self.control.shared.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match self.addr.ip() {
            ip if ip.is_unspecified()
                || ip == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) =>
            {
                format!("{scheme}://127.0.0.1:{}", self.addr.port())
            }
            std::net::IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", self.addr.port()),
            ip => format!("{scheme}://{ip}:{}", self.addr.port()),
        }
    }

    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.shared.ctl.send(Cmd::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Serves until Ctrl-C / SIGTERM (the `simulate` subcommand).
pub async fn run_standalone(config: SimConfig, addr: SocketAddr) -> std::io::Result<()> {
    let sim = Simulator::start(config, addr).await?;
    let ctl = sim.control();
    tracing::info!(
        url = %sim.base_url(),
        account = DEMO_ACCOUNT,
        password = DEMO_PASSWORD,
        webhook_token = %ctl.demo_webhook_token(),
        bot_token = %ctl.demo_bot_token(),
        "DSM simulator listening"
    );
    wait_for_shutdown().await;
    tracing::info!("DSM simulator stopping");
    sim.stop().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}

impl SimControl {
    /// The next `times` calls of `api` (and `method`, when given) answer error `code`.
    #[cfg(feature = "sim-test-hooks")]
    pub fn fail_next(&self, api: &str, method: Option<&str>, times: u32, code: i64) {
        self.inject(api, method, times, FaultKind::Code(code));
    }

    /// As [`Self::fail_next`], once `pass` calls of `api` (and `method`) were answered normally
    /// (a long message whose later parts DSM turns away).
    #[cfg(feature = "sim-test-hooks")]
    pub fn fail_after_passing(
        &self,
        api: &str,
        method: Option<&str>,
        pass: u32,
        times: u32,
        code: i64,
    ) {
        self.inject_after(api, method, pass, times, FaultKind::Code(code));
    }

    /// The next `times` calls of `api` (and `method`, when given) are carried out, then
    /// answered with error `code` (DSM's "busy" after it made the post).
    #[cfg(feature = "sim-test-hooks")]
    pub fn fail_after_next(&self, api: &str, method: Option<&str>, times: u32, code: i64) {
        self.inject(api, method, times, FaultKind::CodeAfter(code));
    }

    /// The next `times` calls of `api` (and `method`, when given) wait `delay`, then are carried
    /// out and answered (a NAS slower than the gateway's timeout, whose call lands late); other
    /// calls meanwhile are answered at once.
    #[cfg(feature = "sim-test-hooks")]
    pub fn slow_next(&self, api: &str, method: Option<&str>, times: u32, delay: Duration) {
        self.inject(
            api,
            method,
            times,
            FaultKind::SlowCall(delay.as_millis() as u64),
        );
    }

    /// The next `times` calls of `api` (and `method`, when given) are carried out and answered
    /// `{"success":true}` without their `data` (answers whose shape no source shows).
    #[cfg(feature = "sim-test-hooks")]
    pub fn answer_without_data_next(&self, api: &str, method: Option<&str>, times: u32) {
        self.inject(api, method, times, FaultKind::WithoutData);
    }

    /// The next `times` calls of `api` (and `method`, when given) get the answer's headers and
    /// half its body, then silence on an open connection (a NAS that hangs mid-answer).
    #[cfg(feature = "sim-test-hooks")]
    pub fn stall_next(&self, api: &str, method: Option<&str>, times: u32) {
        self.inject(api, method, times, FaultKind::StallMidBody);
    }

    /// The next `times` calls of `api` (and `method`, when given) are carried out, then the
    /// connection closes before any byte of the answer (a NAS whose web server restarts).
    #[cfg(feature = "sim-test-hooks")]
    pub fn close_next(&self, api: &str, method: Option<&str>, times: u32) {
        self.inject(api, method, times, FaultKind::CloseBeforeAnswer);
    }

    /// The next `times` calls of `api` (and `method`, when given) are not carried out: the
    /// connection closes before any byte of the answer (a web server going down).
    #[cfg(feature = "sim-test-hooks")]
    pub fn drop_next(&self, api: &str, method: Option<&str>, times: u32) {
        self.inject(api, method, times, FaultKind::DropBeforeCall);
    }

    /// The next `times` calls of `api` (and `method`, when given) are not carried out: a
    /// reverse proxy answers HTTP `status` (429 or 503) with `Retry-After: retry_after_secs`.
    #[cfg(feature = "sim-test-hooks")]
    pub fn turn_away_next(
        &self,
        api: &str,
        method: Option<&str>,
        times: u32,
        status: u16,
        retry_after_secs: u64,
    ) {
        self.inject(
            api,
            method,
            times,
            FaultKind::TurnedAway(status, retry_after_secs),
        );
    }

    /// The next `times` calls of `api` (and `method`, when given) are carried out, then
    /// answered by a reverse proxy's 504 page.
    #[cfg(feature = "sim-test-hooks")]
    pub fn proxy_timeout_next(&self, api: &str, method: Option<&str>, times: u32) {
        self.inject(api, method, times, FaultKind::ProxyTimeoutAfter);
    }

    #[cfg(feature = "sim-test-hooks")]
    fn inject(&self, api: &str, method: Option<&str>, times: u32, kind: FaultKind) {
        self.inject_after(api, method, 0, times, kind);
    }

    #[cfg(feature = "sim-test-hooks")]
    fn inject_after(
        &self,
        api: &str,
        method: Option<&str>,
        pass: u32,
        times: u32,
        kind: FaultKind,
    ) {
        if times == 0 {
            return;
        }
        lock(&self.shared.faults).push(Fault {
            api: api.to_string(),
            method: method.map(str::to_string),
            pass,
            remaining: times,
            kind,
        });
    }

    /// Like a NAS reboot: every current sid becomes unknown (119).
    pub fn expire_all_sessions(&self) {
        let mut st = lock(&self.shared.state);
        st.sessions.clear();
        st.killed.clear();
    }

    /// Like a NAS reboot after which the old sids answer 105 ("no permission"), as one was seen
    /// to (nas-download-manager#24), rather than 119: every current sid ends with that answer.
    #[cfg(feature = "sim-test-hooks")]
    pub fn reboot_answering_105(&self) {
        let mut st = lock(&self.shared.state);
        let ended: Vec<String> = st.sessions.drain().map(|(sid, _)| sid).collect();
        st.killed.clear();
        for sid in ended {
            st.killed.insert(sid, 105);
        }
    }

    #[cfg(feature = "sim-test-hooks")]
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.shared.latency) = d;
    }

    /// true: stop listening (connects are refused); false: listen again on the same port.
    #[cfg(feature = "sim-test-hooks")]
    pub async fn refuse_connections(&self, refuse: bool) {
        let (tx, rx) = oneshot::channel();
        if self.shared.ctl.send(Cmd::Refuse(refuse, tx)).is_ok()
            && let Ok(Err(e)) = rx.await
        {
            tracing::warn!(error = %e, "simulator could not listen again");
        }
    }

    #[cfg(feature = "sim-test-hooks")]
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).clone()
    }

    #[cfg(feature = "sim-test-hooks")]
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    #[cfg(feature = "sim-test-hooks")]
    pub fn count(&self, api: &str, method: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.api.as_deref() == Some(api) && r.method.as_deref() == Some(method))
            .count()
    }

    pub fn login_attempts(&self) -> usize {
        self.shared.login_attempts.load(Ordering::SeqCst)
    }

    pub fn active_sessions(&self) -> Vec<SimSession> {
        let st = lock(&self.shared.state);
        let idle = self.shared.config.session_idle_timeout;
        st.sessions
            .values()
            .filter(|s| s.last_used.elapsed() <= idle)
            .map(|s| SimSession {
                sid: s.sid.clone(),
                synotoken: s.synotoken.clone(),
                account: s.account.clone(),
            })
            .collect()
    }

    /// Clears the IP auto-block and the failure counters.
    pub fn unblock_all(&self) {
        let mut st = lock(&self.shared.state);
        st.blocked.clear();
        st.login_failures.clear();
    }

    pub fn set_password(&self, account: &str, password: &str) {
        if let Some(a) = lock(&self.shared.state).accounts.get_mut(account) {
            a.password = password.to_string();
        }
    }

    /// Creates (or updates) a DSM account and its Chat user; returns the user_id.
    pub fn add_account(&self, account: &str, password: &str, admin: bool) -> i64 {
        lock(&self.shared.state).add_account(account, password, admin)
    }

    /// Turns on 2-step verification for `account` with the fixed code `code`.
    pub fn enable_otp(&self, account: &str, code: &str) {
        if let Some(a) = lock(&self.shared.state).accounts.get_mut(account) {
            a.otp = Some(code.to_string());
        }
    }

    /// Disables or re-enables a DSM account (login -> 401 while disabled).
    pub fn set_disabled(&self, account: &str, disabled: bool) {
        let mut st = lock(&self.shared.state);
        let uid = st.accounts.get_mut(account).map(|a| {
            a.disabled = disabled;
            a.user_id
        });
        if let Some(u) = uid.and_then(|uid| st.users.get_mut(&uid)) {
            u.is_disabled = disabled;
        }
    }

    /// A post made by a user through the Chat UI; returns its post_id (0 if the channel is unknown).
    /// Like real Chat it fires matching outgoing webhooks, slash commands and chatbots.
    pub fn post_as_user(&self, user_id: i64, channel_id: i64, message: &str) -> i64 {
        let mut st = lock(&self.shared.state);
        let Some(post_id) = st.add_post(channel_id, user_id, message, 0, store::now_ms()) else {
            return 0;
        };
        if let Some(ch) = st.channels.get_mut(&channel_id) {
            ch.last_view.insert(user_id, store::now_ms());
        }
        for (url, fields, reply_to) in integ::triggered_by(&st, post_id) {
            let _ = self.shared.ctl.send(Cmd::Deliver(events::Delivery {
                url,
                fields,
                reply_to,
            }));
        }
        post_id
    }

    /// A UI user writes to a chatbot (opening their 1:1 chatbot conversation); returns the post_id.
    pub fn message_chatbot(&self, user_id: i64, bot_user_id: i64, message: &str) -> i64 {
        let channel_id = lock(&self.shared.state).chatbot_channel(bot_user_id, user_id);
        self.post_as_user(user_id, channel_id, message)
    }

    /// Form POSTs the simulator made to integrators (completed ones), in order.
    pub fn outbound_events(&self) -> Vec<OutboundEvent> {
        lock(&self.shared.outbound).clone()
    }

    /// Mimic Chat 2.4.1 Post.list v5 (LS-OBS): offset/limit ignored, the newest 10 returned.
    pub fn set_post_list_offset_ignored(&self, on: bool) {
        lock(&self.shared.state).post_list_ignores_offset = on;
    }

    /// Mimic ACE's Post.list v8: `offset`/`limit` ignored; without an anchor (`post_id`,
    /// `prev_count`, `next_count`) the answer is the channel's oldest post. Session `Post.list`
    /// only: `External post_list` without `post_id` still answers the newest posts (the
    /// library's "omit for newest").
    pub fn set_post_list_anchor_only(&self, on: bool) {
        lock(&self.shared.state).post_list_anchor_only = on;
    }

    /// The next login hands out `token` as its SynoToken (one DSM could not have meant, e.g.
    /// with a control character).
    #[cfg(feature = "sim-test-hooks")]
    pub fn hand_out_synotoken_next(&self, token: &str) {
        lock(&self.shared.state).next_synotoken = Some(token.to_owned());
    }

    /// List the posts `Post.list` picks oldest first, whichever way it picks them (no source
    /// says in which order DSM lists a page).
    pub fn set_post_list_oldest_first(&self, on: bool) {
        lock(&self.shared.state).post_list_oldest_first = on;
    }

    /// Stop (or start) the Chat package: while stopped, Info lists no `SYNO.Chat.*` API and
    /// calls to one answer 102 (a NAS still starting Chat after a reboot or an upgrade).
    pub fn set_chat_stopped(&self, stopped: bool) {
        lock(&self.shared.state).chat_stopped = stopped;
    }

    /// Answer a file post's `Post.create` with its `file_props` only, without `post_id` (the
    /// answer the seed describes for uploads; the default), or (`false`) with the whole post.
    pub fn set_upload_answers_file_props_only(&self, on: bool) {
        lock(&self.shared.state).upload_answers_file_props_only = on;
    }

    /// Answer a file post's `Post.create` with success alone, no `data` (the post is created).
    pub fn set_upload_answers_without_data(&self, on: bool) {
        lock(&self.shared.state).upload_answers_without_data = on;
    }

    /// `Channel.Named.create` refuses a `type` parameter with 407, as one n8n note reports
    /// (another calls `type` required); without `type` it makes a private channel.
    pub fn set_named_create_refuses_type(&self, on: bool) {
        lock(&self.shared.state).named_create_refuses_type = on;
    }

    /// An enabled outgoing webhook, as an admin would create it in Chat: it calls `url` for UI
    /// posts in `channel_id` (0: any channel, then a trigger word is needed) that start with
    /// `trigger_word` (empty: every post). Returns its token.
    pub fn add_outgoing_webhook(&self, channel_id: i64, trigger_word: &str, url: &str) -> String {
        self.add_caller(store::IntegKind::Outgoing, "outgoing", |i| {
            i.channel_id = channel_id;
            i.trigger_word = trigger_word.to_owned();
            i.url = url.to_owned();
        })
    }

    /// An enabled slash command `/command` that calls `url`. Returns its token.
    pub fn add_slash_command(&self, command: &str, url: &str) -> String {
        self.add_caller(store::IntegKind::Slash, command, |i| {
            i.command = command.to_owned();
            i.url = url.to_owned();
        })
    }

    /// Points the integration holding `token` (e.g. the demo chatbot) at `url`; false when
    /// no integration has that token.
    pub fn set_integration_url(&self, token: &str, url: &str) -> bool {
        let mut st = lock(&self.shared.state);
        st.integrations
            .values_mut()
            .find(|i| i.token == token)
            .map(|i| i.url = url.to_owned())
            .is_some()
    }

    /// Disables (or enables again) the integration holding `token`, as an admin would in
    /// Chat's settings; false when no integration has that token.
    pub fn set_integration_disabled(&self, token: &str, disabled: bool) -> bool {
        let mut st = lock(&self.shared.state);
        st.integrations
            .values_mut()
            .find(|i| i.token == token)
            .map(|i| i.is_disabled = disabled)
            .is_some()
    }

    fn add_caller(
        &self,
        kind: store::IntegKind,
        name: &str,
        set: impl FnOnce(&mut store::Integration),
    ) -> String {
        let mut st = lock(&self.shared.state);
        let admin = st.accounts.get(DEMO_ACCOUNT).map_or(1, |a| a.user_id);
        let user_id = st.add_integration(kind, name, admin);
        let i = st
            .integrations
            .get_mut(&user_id)
            .expect("the integration just added");
        i.nickname = name.to_owned();
        i.is_disabled = false;
        set(i);
        i.token.clone()
    }

    pub fn demo_webhook_token(&self) -> String {
        lock(&self.shared.state).demo_webhook_token.clone()
    }

    pub fn demo_bot_token(&self) -> String {
        lock(&self.shared.state).demo_bot_token.clone()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync + Clone>() {}
    is::<SimControl>();
}
