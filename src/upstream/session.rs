//! The shared DSM session: one login serves every worker and request. When DSM reports the
//! session gone, exactly one caller logs in again while the others wait for its result, and
//! failed logins back off exponentially so a burst of requests can never become a burst of
//! logins (DSM blocks an IP after a few failures).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_http::header::{HeaderValue, InvalidHeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::backoff::Backoff;
use super::error::{Result, UpstreamError};
use super::watchdog::LockWatch;

/// How long a session proven alive after a 105/119 is taken as alive on the next ones. Longer
/// means fewer checks (each one call every account may make, never a login); a session that
/// ends in that time, as at a NAS reboot, answers 403 until then (PROTOCOL.md [S3] says to
/// log in again once), so it is short.
const SESSION_CHECK_TTL: Duration = Duration::from_secs(2);

/// A logged-in session. `generation` tells apart a session that failed from its successor.
pub struct Session {
    pub sid: SecretString,
    pub generation: u64,
    /// The headers every call with this session carries, made once per login rather than per
    /// call (each was a `format!` and a header parse), and marked sensitive.
    pub(super) headers: SessionHeaders,
}

pub(super) struct SessionHeaders {
    /// `id=<sid>`: the sid travels in the `id` cookie (PROTOCOL.md [S2]); `None` for a sid
    /// that cannot be a cookie, which goes in the form body instead.
    pub(super) cookie: Option<HeaderValue>,
    /// `X-SYNO-TOKEN`, when DSM gave a SynoToken; `Err` for one that cannot be a header value.
    pub(super) synotoken: Option<std::result::Result<HeaderValue, InvalidHeaderValue>>,
}

impl Session {
    pub fn new(sid: SecretString, synotoken: Option<SecretString>, generation: u64) -> Self {
        let sensitive = |mut value: HeaderValue| {
            value.set_sensitive(true);
            value
        };
        let cookie = Some(sid.expose_secret())
            .filter(|sid| is_cookie_safe(sid))
            .and_then(|sid| HeaderValue::try_from(format!("id={sid}")).ok())
            .map(sensitive);
        let token = synotoken
            .as_ref()
            .map(|token| HeaderValue::from_str(token.expose_secret()).map(sensitive));
        Self {
            sid,
            generation,
            headers: SessionHeaders {
                cookie,
                synotoken: token,
            },
        }
    }
}

/// A sid fit for a cookie value: visible ASCII without `"`, `,`, `;` or `\`.
fn is_cookie_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

struct LoginState {
    generation: u64,
    backoff: Backoff,
}

/// A session check that found the session alive after an operation was refused 105/119.
#[derive(Clone, Copy)]
struct Proof {
    generation: u64,
    at: Instant,
    refused: (&'static str, &'static str),
}

/// The one DSM session every worker shares, with the login lock and back-off that guard it.
pub struct SharedSession {
    current: RwLock<Option<Arc<Session>>>,
    // Held while logging in: waiters find the new session (or the back-off) once it is released.
    login: tokio::sync::Mutex<LoginState>,
    pub(super) login_watch: LockWatch,
    // The session generation last proven alive after a 105/119, when, and the operation
    // (api, method) whose refusal it was checked for.
    proven: std::sync::Mutex<Option<Proof>>,
    // Held while a session is checked after a 105/119: callers refused at once wait for one
    // check instead of each making their own (a burst of 132 refusals made 264 checks).
    pub(super) checking: tokio::sync::Mutex<()>,
    // How long a caller waits for another caller's login before giving up (504).
    lock_wait: Duration,
    backoff_max: Duration,
}

impl SharedSession {
    pub fn new(backoff_max: Duration, lock_wait: Duration) -> Self {
        Self {
            current: RwLock::new(None),
            login: tokio::sync::Mutex::new(LoginState {
                generation: 0,
                backoff: Backoff::default(),
            }),
            login_watch: LockWatch::default(),
            proven: std::sync::Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
            lock_wait,
            backoff_max,
        }
    }

    pub fn current(&self) -> Option<Arc<Session>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets `failed` unless a newer session already replaced it (or another caller forgot
    /// it first): `true` when this call ended it.
    pub fn invalidate(&self, failed: &Session) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let ends_it = current
            .as_ref()
            .is_some_and(|s| s.generation == failed.generation);
        if ends_it {
            *current = None;
        }
        ends_it
    }

    /// Whether `session` is still the one calls are made with.
    pub fn is_current(&self, session: &Session) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| s.generation == session.generation)
    }

    /// Records that `session` answered a session check made after `refused` (api, method)
    /// was refused.
    pub fn proven_alive(&self, session: &Session, refused: (&'static str, &'static str)) {
        *self.proven.lock().unwrap_or_else(|e| e.into_inner()) = Some(Proof {
            generation: session.generation,
            at: Instant::now(),
            refused,
        });
    }

    /// Whether `session` answered a session check within [`SESSION_CHECK_TTL`], after a
    /// refusal of the same operation: the refusals of one forbidden call repeated. Another
    /// operation's refusal is checked (a NAS rebooted since ends every session, PROTOCOL.md
    /// [S3]: log in again once).
    pub fn recently_proven(
        &self,
        session: &Session,
        refused: (&'static str, &'static str),
    ) -> bool {
        self.proven
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|proof| {
                proof.generation == session.generation
                    && proof.refused == refused
                    && proof.at.elapsed() < SESSION_CHECK_TTL
            })
    }

    /// Takes the session away (for logout at shutdown).
    pub fn take(&self) -> Option<Arc<Session>> {
        self.current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The current session, logging in with `login` when there is none. Concurrent callers share
    /// one login; during a back-off they get the last failure without contacting DSM.
    pub async fn get<F, Fut>(&self, login: F) -> Result<Arc<Session>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Option<SecretString>)>>,
    {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let mut state = tokio::time::timeout(self.lock_wait, self.login.lock())
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        let _held = self.login_watch.hold();
        if let Some(session) = self.current() {
            return Ok(session);
        }
        state.backoff.check()?;
        match login().await {
            Ok((sid, synotoken)) => {
                state.generation += 1;
                state.backoff.succeeded();
                let session = Arc::new(Session::new(sid, synotoken, state.generation));
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
                Ok(session)
            }
            // Not a login attempt, nothing more to count: the API list is backing off, or no
            // call slot came free in time (the gateway's own queue, not DSM refusing).
            Err(error @ (UpstreamError::LoginBackoff { .. } | UpstreamError::Busy)) => Err(error),
            Err(error) => {
                let delay = state.backoff.failed(&error, self.backoff_max);
                tracing::warn!(failures = state.backoff.failures(), retry_in_secs = delay.as_secs(), error = %error, "DSM login failed");
                Err(error)
            }
        }
    }

    /// Whether a login back-off is in force, and until when.
    #[cfg(test)]
    pub async fn backoff_remaining(&self) -> Option<Duration> {
        self.login.lock().await.backoff.remaining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_session_makes_its_headers_once_and_odd_sids_stay_out_of_cookies() {
        let session = |sid: &str, token: Option<&str>| {
            Session::new(sid.into(), token.map(SecretString::from), 1).headers
        };
        let headers = session("0aB-_.x", Some("tok3n"));
        let cookie = headers.cookie.unwrap();
        assert_eq!(cookie, "id=0aB-_.x");
        assert!(cookie.is_sensitive());
        let token = headers.synotoken.unwrap().unwrap();
        assert_eq!(token, "tok3n");
        assert!(token.is_sensitive());
        for odd in ["a;b", "a b", "a\"b", "a,b", "a\\b", "sid\u{e9}"] {
            assert!(session(odd, None).cookie.is_none(), "{odd}");
        }
        assert!(session("s", None).synotoken.is_none());
        assert!(session("s", Some("bad\ntoken")).synotoken.unwrap().is_err());
    }

    #[actix_web::test]
    async fn concurrent_callers_share_one_login_and_failures_back_off() {
        let pool = Arc::new(SharedSession::new(
            Duration::from_secs(60),
            Duration::from_secs(5),
        ));
        let attempts = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (pool, attempts) = (pool.clone(), attempts.clone());
            tasks.push(actix_web::rt::spawn(async move {
                pool.get(|| async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    Err(UpstreamError::LoginRefused { code: 400 })
                })
                .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(pool.backoff_remaining().await.is_some());
    }

    /// A login that found every call slot taken (downloads held open, say) never reached DSM:
    /// backing off for it would outlast the crowd by minutes.
    #[actix_web::test]
    async fn a_login_that_found_no_call_slot_does_not_back_off() {
        let pool = SharedSession::new(Duration::from_secs(60), Duration::from_secs(5));
        let busy = pool.get(|| async { Err(UpstreamError::Busy) }).await;
        assert!(matches!(busy, Err(UpstreamError::Busy)));
        assert!(pool.backoff_remaining().await.is_none());
        let session = pool
            .get(|| async { Ok((SecretString::from("sid"), None)) })
            .await;
        assert!(session.is_ok());
    }
}
