//! The DSM client's typed calls: session, token and file calls on top of the transport
//! (`transport.rs`), the envelope (`envelope.rs`) and the login (`login.rs`), and the API list.

use std::future::Future;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::DsmShared;
use super::catalog::{self, ApiTable, Endpoint};
use super::envelope::parse_envelope_error;
use super::error::{ApiFamily, Result, UpstreamError};
use super::ops::{self, Op};
use super::transport::{Credential, enable_keepalive};
pub use super::transport::{Download, Upload};
use crate::domain::{ChannelId, MessageText, PostId};

pub(super) use super::envelope::decode_data;
pub use super::login::LoginOutcome;

/// A worker's handle on the NAS.
#[derive(Clone)]
pub struct DsmClient {
    pub(super) http: awc::Client,
    pub(super) up: Arc<DsmShared>,
}

/// A text post to create.
pub struct NewPost<'a> {
    pub channel_id: ChannelId,
    pub message: &'a MessageText,
    pub thread_id: Option<PostId>,
}

impl DsmClient {
    pub(super) fn new(up: Arc<DsmShared>) -> Self {
        let tcp = actix_service::ServiceExt::map(
            actix_tls::connect::ConnectorService::default(),
            |connection: actix_tls::connect::Connection<awc::http::Uri, tokio::net::TcpStream>| {
                enable_keepalive(connection.io_ref());
                connection
            },
        );
        let connector = awc::Connector::new()
            .connector(tcp)
            .rustls_0_23(up.tls.clone())
            .timeout(up.config.timeout);
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(up.config.timeout)
            .disable_redirects()
            // Uncompressed answers only (each request is sent with `no_decompress`).
            .add_default_header((awc::http::header::ACCEPT_ENCODING, "identity"))
            .finish();
        Self { http, up }
    }

    /// A session API call (JSON answer).
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
    ) -> Result<Option<T>> {
        self.with_session(op, |endpoint, session| async move {
            self.exchange(op, &endpoint, params, Credential::Session(&session), None)
                .await
        })
        .await
    }

    /// A session API call whose `data` is decoded borrowed from the body as `W` and converted
    /// by `convert`; an answer without `data` is an invalid response.
    pub(super) async fn fetch_converted<R>(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
        decode: impl Fn(&[u8]) -> serde_json::Result<Result<R>>,
    ) -> Result<R> {
        let decode = |op: &Op, family: ApiFamily, body: &[u8]| -> Result<Option<R>> {
            match decode(body) {
                Ok(converted) => converted.map(Some),
                // Not the expected shape: an error envelope, or an invalid answer.
                Err(error) => parse_envelope_error(op, family, body, &error),
            }
        };
        self.with_session(op, |endpoint, session| async move {
            self.exchange_with(
                op,
                &endpoint,
                params,
                Credential::Session(&session),
                None,
                &decode,
            )
            .await
        })
        .await?
        .ok_or_else(|| {
            UpstreamError::InvalidResponse(format!(
                "{} {} answered without data",
                op.api, op.method
            ))
        })
    }

    /// A session API call answered with a file.
    pub(super) async fn call_download(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
    ) -> Result<Download> {
        self.with_session(op, |endpoint, session| async move {
            self.exchange_download(op, &endpoint, params, Credential::Session(&session))
                .await
        })
        .await
    }

    /// A session API call that uploads a file as `multipart/form-data` (the file is held once,
    /// as `Bytes`: a lost session must be retried with the same bytes).
    pub(super) async fn call_upload<T: DeserializeOwned>(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
        upload: &Upload,
    ) -> Result<Option<T>> {
        self.with_session(op, |endpoint, session| async move {
            self.exchange(
                op,
                &endpoint,
                params,
                Credential::Session(&session),
                Some(upload),
            )
            .await
        })
        .await
    }

    /// A `SYNO.Chat.External` call authenticated by an integration token (no DSM session).
    pub(super) async fn call_with_token<T: DeserializeOwned>(
        &self,
        op: &'static Op,
        token: &SecretString,
        params: &[(&str, &str)],
    ) -> Result<Option<T>> {
        self.with_catalog(op, |endpoint| async move {
            self.exchange(
                op,
                &endpoint,
                params,
                Credential::Token(token.expose_secret()),
                None,
            )
            .await
        })
        .await
    }

    /// A `SYNO.Chat.External` call answered with a file.
    pub(super) async fn download_with_token(
        &self,
        op: &'static Op,
        token: &SecretString,
        params: &[(&str, &str)],
    ) -> Result<Download> {
        self.with_catalog(op, |endpoint| async move {
            self.exchange_download(
                op,
                &endpoint,
                params,
                Credential::Token(token.expose_secret()),
            )
            .await
        })
        .await
    }

    /// Runs a call that needs no session; when DSM says the API or version is not there (102,
    /// 104: a Chat package upgraded or restarted since the Info table was loaded), reloads the
    /// table and runs it once more. DSM did not carry such a call out, so it is safe to repeat.
    /// A read answered busy is asked again, as with a session
    /// ([`super::login::asks_again_when_busy`]).
    async fn with_catalog<T, F, Fut>(&self, op: &'static Op, attempt: F) -> Result<T>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (mut reloaded, mut busy) = (false, 0);
        loop {
            match attempt(self.endpoint(op).await?).await {
                Err(UpstreamError::Dsm {
                    code: 102 | 104, ..
                }) if !reloaded => {
                    reloaded = true;
                    self.up.catalog.forget();
                }
                Err(UpstreamError::Dsm { code, .. })
                    if super::login::asks_again_when_busy(op, code, busy) =>
                {
                    super::login::pause_for_busy(op, code, &mut busy).await;
                }
                other => return other,
            }
        }
    }

    /// Like [`Self::call`] for operations whose answer must carry `data`.
    pub(super) async fn fetch<T: DeserializeOwned>(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
    ) -> Result<T> {
        self.call(op, params).await?.ok_or_else(|| {
            UpstreamError::InvalidResponse(format!(
                "{} {} answered without data",
                op.api, op.method
            ))
        })
    }

    /// Like [`Self::call`] for reads whose answer's shape is undocumented and has an empty form
    /// (an object of settings, a list that may be empty): `{"success":true}` without `data`
    /// is that empty form (PROTOCOL.md [C1]: `data` may be absent). Reads whose data the
    /// gateway cannot do without (posts, channels, users) use [`Self::fetch`] and refuse it.
    pub(super) async fn fetch_or_empty<T: DeserializeOwned + Default>(
        &self,
        op: &'static Op,
        params: &[(&str, &str)],
    ) -> Result<T> {
        Ok(self.call(op, params).await?.unwrap_or_default())
    }

    pub(super) async fn endpoint(&self, op: &Op) -> Result<Endpoint> {
        let table = match self.up.catalog.current() {
            Some(table) => table,
            None => self.load_catalog().await?,
        };
        if self.up.catalog.forget_if_lacking(&table, op.api) {
            tracing::info!(
                api = op.api,
                "DSM did not list the API; asking for the list again"
            );
            let table = self.load_catalog().await?;
            return catalog::resolve(&table, op);
        }
        catalog::resolve(&table, op)
    }

    async fn query_info(&self) -> Result<ApiTable> {
        let query = ops::KNOWN_APIS.join(",");
        let endpoint = Endpoint {
            path: "query.cgi".into(),
            version: 1,
            json_format: false,
        };
        self.exchange(
            &ops::INFO_QUERY,
            &endpoint,
            &[("query", &query)],
            Credential::Anonymous,
            None,
        )
        .await?
        .ok_or_else(|| {
            UpstreamError::InvalidResponse("SYNO.API.Info answered without data".to_owned())
        })
    }

    /// `work` on a copy of this client, in a task of its own, to its end. For work other
    /// callers wait for and take the result of (a login, a session check, the API list, the
    /// health probe): a request is dropped when its own caller goes (README "Hardening"), and
    /// done in the request, such work was thrown away half done and the next caller in line
    /// began it again. `ended_early` answers if the task failed (a panic). Its log lines keep
    /// the request's fields.
    pub(super) async fn to_the_end<T, F>(
        &self,
        work: impl FnOnce(DsmClient) -> F,
        ended_early: impl FnOnce() -> T,
    ) -> T
    where
        T: 'static,
        F: Future<Output = T> + 'static,
    {
        crate::telemetry::spawn_for_request(work(self.clone()))
            .await
            .unwrap_or_else(|_| ended_early())
    }

    async fn load_catalog(&self) -> Result<Arc<ApiTable>> {
        self.to_the_end(
            |client| async move { client.load_catalog_once().await },
            || {
                Err(UpstreamError::Unreachable(
                    "the API list's task ended early",
                ))
            },
        )
        .await
    }

    async fn load_catalog_once(&self) -> Result<Arc<ApiTable>> {
        let backoff = || {
            self.up
                .catalog
                .backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        // During the back-off callers get the remembered failure itself (unreachable, timeout,
        // ...): it says what is wrong with the NAS, where "login back-off" would not.
        let remembered = |error| match error {
            UpstreamError::LoginBackoff { last, .. } => *last,
            other => other,
        };
        backoff().check().map_err(remembered)?;
        let _reload = tokio::time::timeout(self.up.config.timeout, self.up.catalog.reload.lock())
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        let _held = self.up.catalog.reload_watch.hold();
        if let Some(table) = self.up.catalog.current() {
            return Ok(table);
        }
        // The load this caller waited for may have failed just now.
        backoff().check().map_err(remembered)?;
        match self.query_info().await {
            Ok(table) => {
                backoff().succeeded();
                Ok(self.up.catalog.store(table))
            }
            Err(error) => {
                let delay = backoff().failed(&error, self.up.config.login_backoff_max);
                tracing::warn!(retry_in_secs = delay.as_secs_f64(), %error, "DSM API list could not be loaded");
                Err(error)
            }
        }
    }

    /// Why the gateway counts as wedged, if it does (see [`DsmShared::wedged`]).
    pub fn wedged(&self) -> Option<&'static str> {
        self.up.wedged()
    }

    /// DSM's state for the health view: the last check if younger than [`super::HEALTH_TTL`],
    /// else a new one. Concurrent callers share one check in flight.
    pub async fn dsm_health(&self) -> super::DsmHealth {
        self.to_the_end(
            |client| async move { client.dsm_health_shared().await },
            || super::DsmHealth {
                checked_at: std::time::Instant::now(),
                error: Some(UpstreamError::Unreachable(
                    "the health check's task ended early",
                )),
            },
        )
        .await
    }

    async fn dsm_health_shared(&self) -> super::DsmHealth {
        let wait = self
            .up
            .config
            .timeout
            .saturating_mul(super::watchdog::WEDGED_AFTER_TIMEOUTS);
        let Ok(mut last) = tokio::time::timeout(wait, self.up.health.lock()).await else {
            return super::DsmHealth {
                checked_at: std::time::Instant::now(),
                error: Some(UpstreamError::Timeout),
            };
        };
        if let Some(fresh) = last
            .as_ref()
            .filter(|h| h.checked_at.elapsed() < super::HEALTH_TTL)
        {
            return fresh.clone();
        }
        let error = self.probe().await.err();
        let health = super::DsmHealth {
            checked_at: std::time::Instant::now(),
            error,
        };
        *last = Some(health.clone());
        health
    }

    /// Whether a DSM session is currently held.
    pub fn has_session(&self) -> bool {
        self.up.has_session()
    }

    /// Readiness: a session is held (logging in if needed) and DSM answers right now.
    pub async fn probe(&self) -> Result<()> {
        self.session().await?;
        self.query_info().await.map(drop)
    }
}
