//! Logging in: the shared session (one login for all callers, retried once when DSM says the
//! session is gone), logout, and the one-off login of `enroll-device`.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::catalog::Endpoint;
use super::client::DsmClient;
use super::error::{Result, UpstreamError};
use super::ops::{self, Op};
use super::session::Session;
use super::transport::Credential;

/// DSM codes that always mean "this session is gone": timed out, interrupted by another login,
/// or made from another address than the request's (150, when DSM pins sessions to the IP).
const SESSION_GONE: [i64; 3] = [106, 107, 150];
/// DSM codes that mean either "session gone" or "not allowed" (PROTOCOL.md [S3]).
const SESSION_OR_PERMISSION: [i64; 2] = [105, 119];

/// What a one-off login (device enrolment) produced.
pub struct LoginOutcome {
    /// The trusted-device id DSM issued, when one was requested.
    pub device_id: Option<String>,
}

#[derive(Deserialize)]
struct LoginData {
    sid: String,
    #[serde(default)]
    synotoken: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    // DSM 6 names the device token `did`.
    #[serde(default)]
    did: Option<String>,
}

/// How many times a read is asked again after DSM's "network unstable / system busy" (109–111).
const BUSY_RETRIES: u32 = 2;
/// The pause before the first of those; the second waits twice as long.
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a call DSM answered `code` is asked again after [`pause_for_busy`]: a read, answered
/// "network unstable / system busy" (109–111), asked again fewer than [`BUSY_RETRIES`] times.
/// A write is not, since it may have been carried out (the outbox retries its own, with its
/// duplicate check).
pub(super) fn asks_again_when_busy(op: &Op, code: i64, busy: u32) -> bool {
    (109..=111).contains(&code) && op.verb == super::ops::Verb::Get && busy < BUSY_RETRIES
}

/// Counts a busy answer and waits before asking again, longer each time.
pub(super) async fn pause_for_busy(op: &Op, code: i64, busy: &mut u32) {
    *busy += 1;
    tracing::debug!(
        api = op.api,
        method = op.method,
        dsm_code = code,
        "DSM busy; asking again"
    );
    actix_web::rt::time::sleep(BUSY_PAUSE * *busy).await;
}

impl DsmClient {
    /// Runs `attempt` with the shared session; when DSM says the session is gone, logs in again
    /// (once, for all concurrent callers) and retries once; when DSM says the API or version is
    /// not there (102, 104), reloads the Info table and retries once. Each at most once, but
    /// both in one call: a NAS back from an upgrade may answer 104 and then, on the retry, say
    /// the session is gone. A read that DSM answers busy is asked again
    /// ([`asks_again_when_busy`]; PROTOCOL.md [T4]: bounded retry).
    pub(super) async fn with_session<T, F, Fut>(&self, op: &'static Op, attempt: F) -> Result<T>
    where
        F: Fn(Endpoint, Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (mut logged_in_again, mut reloaded, mut busy) = (false, false, 0);
        loop {
            let endpoint = self.endpoint(op).await?;
            let session = self.session().await?;
            match attempt(endpoint, session.clone()).await {
                Err(UpstreamError::Dsm { code, .. })
                    if !logged_in_again && self.session_is_lost(code, &session, op).await =>
                {
                    logged_in_again = true;
                    tracing::info!(
                        api = op.api,
                        method = op.method,
                        dsm_code = code,
                        "DSM session lost; logging in again"
                    );
                    self.found_lost(&session);
                }
                Err(UpstreamError::Dsm {
                    code: 102 | 104, ..
                }) if !reloaded => {
                    reloaded = true;
                    self.up.catalog.forget();
                }
                Err(UpstreamError::Dsm { code, .. }) if asks_again_when_busy(op, code, busy) => {
                    pause_for_busy(op, code, &mut busy).await;
                }
                other => return other,
            }
        }
    }

    /// Whether DSM's `code` means the session is gone. 105/119 also answer requests the account
    /// may not make; re-logging in on each of those would let any caller make the gateway hammer
    /// the NAS's login, so the session is first checked with a call every account may make.
    pub(super) async fn session_is_lost(&self, code: i64, session: &Arc<Session>, op: &Op) -> bool {
        if SESSION_GONE.contains(&code) {
            return true;
        }
        if !SESSION_OR_PERMISSION.contains(&code) {
            return false;
        }
        // A session proven alive a moment ago for the same operation is not checked again:
        // callers repeating a forbidden request cause at most one check per session and
        // SESSION_CHECK_TTL.
        let refused = (op.api, op.method);
        if self.up.sessions.recently_proven(session, refused) {
            return false;
        }
        let session = session.clone();
        self.to_the_end(
            |client| async move { client.check_session(&session, refused).await },
            || false,
        )
        .await
    }

    /// Ends `session`, found lost, while the check's lock is held: the callers waiting for it
    /// find it ended, not still current (each then checked it again). Counted once per session
    /// ended, not per caller it refused. Always `true`.
    fn found_lost(&self, session: &Session) -> bool {
        if self.up.sessions.invalidate(session) {
            self.up.metrics.relogin();
        }
        true
    }

    /// [`Self::session_is_lost`]'s check of `session` after `op` was refused with 105/119.
    async fn check_session(
        &self,
        session: &Session,
        refused: (&'static str, &'static str),
    ) -> bool {
        // One check at a time: callers refused together take the first one's verdict. Not
        // waited for longer than a call may take: a check stuck on a hanging NAS proves nothing,
        // and the caller gets its refusal.
        let checking = self.up.sessions.checking.lock();
        let Ok(_checking) = tokio::time::timeout(self.up.config.timeout, checking).await else {
            return false;
        };
        if !self.up.sessions.is_current(session) {
            // Found lost (or replaced) meanwhile: the retry takes the new session.
            return true;
        }
        if self.up.sessions.recently_proven(session, refused) {
            return false;
        }
        // The cheapest call that proves a session; when the NAS cannot answer it (an API or
        // method it does not offer: 102–104) or refuses it too (105/119: the account may not be
        // allowed it, and then it proves nothing), the channel list, which every Chat account
        // may make. Only the last proof's refusal says the session is gone: otherwise an
        // account refused the cheap proof would log in again on every refused request.
        let proofs = [
            &super::users::PREFERENCE_GET,
            &super::channels::CHANNEL_LIST,
        ];
        for (n, proof) in proofs.into_iter().enumerate() {
            let last = n + 1 == proofs.len();
            let Ok(endpoint) = self.endpoint(proof).await else {
                continue;
            };
            let check = self
                .exchange::<serde::de::IgnoredAny>(
                    proof,
                    &endpoint,
                    &[],
                    Credential::Session(session),
                    None,
                )
                .await;
            match check {
                Ok(_) => {
                    self.up.sessions.proven_alive(session, refused);
                    return false;
                }
                Err(UpstreamError::Dsm { code, .. }) if SESSION_GONE.contains(&code) => {
                    return self.found_lost(session);
                }
                Err(UpstreamError::Dsm { code, .. })
                    if SESSION_OR_PERMISSION.contains(&code) && last =>
                {
                    return self.found_lost(session);
                }
                Err(UpstreamError::Dsm {
                    code: 102..=105 | 119,
                    ..
                }) => continue,
                // A timeout or a NAS going away proves nothing either way: the caller gets its
                // error, and the next call checks again.
                Err(_) => return false,
            }
        }
        false
    }

    async fn login(&self, otp_code: Option<&str>, request_device_token: bool) -> Result<LoginData> {
        let endpoint = self.endpoint(&ops::AUTH_LOGIN).await?;
        let config = &self.up.config;
        let mut params = vec![
            ("account", config.account.as_str()),
            ("passwd", config.password.expose_secret()),
            ("session", config.session_name.as_str()),
            // The cookie format, as the library logs in: the gateway sends the sid as the `id`
            // cookie (PROTOCOL.md [S2]), which the reference ties to this format; the answer
            // carries the sid in its JSON as well.
            ("format", "cookie"),
            ("enable_syno_token", "yes"),
        ];
        if let Some(device_id) = &config.device_id {
            params.push(("device_id", device_id.expose_secret()));
        }
        if config.device_id.is_some() || request_device_token {
            params.push(("device_name", config.device_name.as_str()));
        }
        if let Some(code) = otp_code {
            params.push(("otp_code", code));
        }
        if request_device_token {
            params.push(("enable_device_token", "yes"));
        }
        let outcome = self
            .exchange(
                &ops::AUTH_LOGIN,
                &endpoint,
                &params,
                Credential::Anonymous,
                None,
            )
            .await;
        match outcome {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(UpstreamError::InvalidResponse(
                "login answered without a session id".to_owned(),
            )),
            Err(UpstreamError::Dsm { code, .. }) => Err(UpstreamError::LoginRefused { code }),
            Err(other) => Err(other),
        }
    }

    /// The shared session, logging in when there is none. The login runs to its end
    /// ([`DsmClient::to_the_end`]): cut off, DSM may have made a session nobody would end.
    pub(super) async fn session(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.up.sessions.current() {
            return Ok(session);
        }
        self.to_the_end(
            |client| async move { client.shared_login().await },
            || Err(UpstreamError::Unreachable("the login's task ended early")),
        )
        .await
    }

    async fn shared_login(&self) -> Result<Arc<Session>> {
        self.up
            .sessions
            .get(|| async {
                let outcome = self.login(None, false).await;
                let outcome = match outcome {
                    // A session whose every call would fail: not kept, so the next call logs in
                    // again (with the login back-off) instead of failing until a restart.
                    Ok(data) if !data.synotoken.as_deref().is_none_or(is_header_value) => {
                        let session = Session::new(SecretString::from(data.sid), None, 0);
                        let _ = self.end_session(&session).await;
                        Err(UpstreamError::InvalidResponse(
                            "DSM gave a SynoToken that is not a header value".into(),
                        ))
                    }
                    other => other,
                };
                self.up.metrics.login(outcome.is_ok());
                let data = outcome?;
                tracing::info!("logged in to DSM");
                Ok((
                    SecretString::from(data.sid),
                    data.synotoken.map(SecretString::from),
                ))
            })
            .await
    }

    pub(super) async fn end_session(&self, session: &Session) -> Result<()> {
        let endpoint = self.endpoint(&ops::AUTH_LOGOUT).await?;
        let params = [("session", self.up.config.session_name.as_str())];
        self.exchange::<serde::de::IgnoredAny>(
            &ops::AUTH_LOGOUT,
            &endpoint,
            &params,
            Credential::Session(session),
            None,
        )
        .await
        .map(drop)
    }

    /// Ends the shared session (at shutdown), so sessions do not pile up on the NAS.
    pub async fn logout(&self) -> Result<()> {
        match self.up.sessions.take() {
            Some(session) => self.end_session(&session).await,
            None => Ok(()),
        }
    }

    /// Logs in once outside the pool (optionally with a one-time code and asking for a trusted
    /// device id), then logs out again. Used by `enroll-device`.
    pub async fn login_once(
        &self,
        otp_code: Option<&str>,
        request_device_token: bool,
    ) -> Result<LoginOutcome> {
        let data = self.login(otp_code, request_device_token).await?;
        let device_id = data.device_id.clone().or(data.did.clone());
        let session = Session::new(
            SecretString::from(data.sid),
            data.synotoken.map(SecretString::from),
            0,
        );
        if let Err(error) = self.end_session(&session).await {
            tracing::warn!(%error, "logout after enrolment failed");
        }
        Ok(LoginOutcome { device_id })
    }
}

/// Whether DSM's SynoToken can travel in the `X-SYNO-TOKEN` header.
fn is_header_value(token: &str) -> bool {
    actix_web::http::header::HeaderValue::from_str(token).is_ok()
}
