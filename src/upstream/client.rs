//! Transport and typed operations against DSM's WebAPI.

use std::sync::Arc;

use awc::error::{ConnectError, SendRequestError};
use awc::http::header;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::catalog::{self, ApiTable, Endpoint};
use super::error::{ApiFamily, Result, UpstreamError};
use super::ops::{self, Op, Verb};
use super::session::Session;
use super::Upstream;
use crate::domain::{Channel, ChannelId, MessageText, Post, PostId, User};

/// Largest DSM answer read (user and channel lists of big installations run to megabytes).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// DSM codes that always mean "this session is gone".
const SESSION_GONE: [i64; 2] = [106, 107];
/// DSM codes that mean either "session gone" or "not allowed" (upstream-protocol §3.4).
const SESSION_OR_PERMISSION: [i64; 2] = [105, 119];

/// A worker's handle on the NAS.
pub struct ChatClient {
    http: awc::Client,
    up: Arc<Upstream>,
}

/// A text post to create.
pub struct NewPost<'a> {
    pub channel_id: ChannelId,
    pub message: &'a MessageText,
    pub thread_id: Option<PostId>,
}

/// What a one-off login (device enrolment) produced.
pub struct LoginOutcome {
    /// The trusted-device id DSM issued, when one was requested.
    pub device_id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default = "Option::default")]
    data: Option<T>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct EnvelopeHead {
    success: bool,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
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

fn is_cookie_safe(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

fn classify_send_error(error: &SendRequestError) -> UpstreamError {
    // The awc error's own text can contain the request URL (and so `_sid`): never keep it.
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => UpstreamError::Timeout,
        SendRequestError::Connect(_) => UpstreamError::Unreachable("connection failed"),
        SendRequestError::Send(_) | SendRequestError::Body(_) => UpstreamError::Unreachable("connection lost while sending"),
        SendRequestError::Response(_) => UpstreamError::InvalidResponse("malformed HTTP response".to_owned()),
        _ => UpstreamError::Unreachable("request failed"),
    }
}

impl ChatClient {
    pub(super) fn new(up: Arc<Upstream>) -> Self {
        let connector = awc::Connector::new()
            .rustls_0_23(up.tls.clone())
            .timeout(up.config.timeout);
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(up.config.timeout)
            .disable_redirects()
            .finish();
        Self { http, up }
    }

    /// One HTTP exchange: encode, send, read, and unwrap the envelope.
    async fn exchange<T: DeserializeOwned>(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        session: Option<&Session>,
        family: ApiFamily,
    ) -> Result<Option<T>> {
        let version = endpoint.version.to_string();
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 4);
        fields.extend([("api", op.api), ("version", version.as_str()), ("method", op.method)]);
        fields.extend_from_slice(params);
        if let Some(session) = session {
            fields.push(("_sid", session.sid.expose_secret()));
        }
        let encoded = serde_urlencoded::to_string(&fields)
            .map_err(|_| UpstreamError::InvalidResponse("parameters could not be encoded".to_owned()))?;
        let url = format!("{}{}", self.up.webapi_base, endpoint.path);
        let mut request = match op.verb {
            Verb::Get => self.http.get(format!("{url}?{encoded}")),
            Verb::Post => self.http.post(url),
        };
        if let Some(session) = session {
            if let Some(token) = &session.synotoken {
                request = request.insert_header(("X-SYNO-TOKEN", token.expose_secret()));
            }
            // DSM also reads the sid from the `id` cookie; some DSM builds reject a `_sid` that
            // starts with a digit but accept the cookie (upstream-protocol §3.2).
            let sid = session.sid.expose_secret();
            if is_cookie_safe(sid) {
                request = request.insert_header((header::COOKIE, format!("id={sid}")));
            }
        }
        let started = std::time::Instant::now();
        let sent = match op.verb {
            Verb::Get => request.send().await,
            Verb::Post => {
                request
                    .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                    .send_body(encoded)
                    .await
            }
        };
        let result = match sent {
            Err(error) => Err(classify_send_error(&error)),
            Ok(mut response) if response.status().is_success() => match response.body().limit(MAX_RESPONSE_BYTES).await {
                Ok(body) => parse_envelope(op, family, &body),
                Err(_) => Err(UpstreamError::Unreachable("connection lost while reading")),
            },
            Ok(response) => Err(UpstreamError::InvalidResponse(format!("HTTP status {}", response.status().as_u16()))),
        };
        tracing::debug!(
            api = op.api,
            method = op.method,
            version = endpoint.version,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            outcome = result.as_ref().map_or_else(UpstreamError::outcome, |_| "ok"),
            dsm_code = result.as_ref().err().and_then(UpstreamError::dsm_code),
            "DSM call"
        );
        result
    }

    /// A session API call with re-login on lost sessions and Info reload on version errors,
    /// each at most once.
    async fn call<T: DeserializeOwned>(&self, op: &'static Op, params: &[(&str, &str)]) -> Result<Option<T>> {
        let mut retried = false;
        loop {
            let endpoint = self.endpoint(op).await?;
            let session = self.session().await?;
            match self.exchange(op, &endpoint, params, Some(&session), ApiFamily::Session).await {
                Err(UpstreamError::Dsm { code, .. }) if !retried && self.session_is_lost(code, &session).await => {
                    tracing::info!(api = op.api, method = op.method, dsm_code = code, "DSM session lost; logging in again");
                    self.up.sessions.invalidate(&session);
                }
                Err(UpstreamError::Dsm { code: 104, .. }) if !retried => self.up.catalog.forget(),
                other => return other,
            }
            retried = true;
        }
    }

    /// Whether DSM's `code` means the session is gone. 105/119 also answer requests the account
    /// may not make; re-logging in on each of those would let any caller make the gateway hammer
    /// the NAS's login, so the session is first checked with a call every account may make.
    async fn session_is_lost(&self, code: i64, session: &Session) -> bool {
        if SESSION_GONE.contains(&code) {
            return true;
        }
        if !SESSION_OR_PERMISSION.contains(&code) {
            return false;
        }
        let Ok(endpoint) = self.endpoint(&ops::CHANNEL_LIST).await else {
            return false;
        };
        let check = self
            .exchange::<serde::de::IgnoredAny>(&ops::CHANNEL_LIST, &endpoint, &[], Some(session), ApiFamily::Session)
            .await;
        matches!(check, Err(UpstreamError::Dsm { code, .. }) if SESSION_GONE.contains(&code) || SESSION_OR_PERMISSION.contains(&code))
    }

    /// Like [`Self::call`] for operations whose answer must carry `data`.
    async fn fetch<T: DeserializeOwned>(&self, op: &'static Op, params: &[(&str, &str)]) -> Result<T> {
        self.call(op, params)
            .await?
            .ok_or_else(|| UpstreamError::InvalidResponse(format!("{} {} answered without data", op.api, op.method)))
    }

    async fn endpoint(&self, op: &Op) -> Result<Endpoint> {
        let table = match self.up.catalog.current() {
            Some(table) => table,
            None => self.load_catalog().await?,
        };
        catalog::resolve(&table, op)
    }

    async fn query_info(&self) -> Result<ApiTable> {
        let query = ops::KNOWN_APIS.join(",");
        let endpoint = Endpoint {
            path: "query.cgi".to_owned(),
            version: 1,
        };
        self.exchange(&ops::INFO_QUERY, &endpoint, &[("query", &query)], None, ApiFamily::Session)
            .await?
            .ok_or_else(|| UpstreamError::InvalidResponse("SYNO.API.Info answered without data".to_owned()))
    }

    async fn load_catalog(&self) -> Result<Arc<ApiTable>> {
        let _reload = self.up.catalog.reload.lock().await;
        if let Some(table) = self.up.catalog.current() {
            return Ok(table);
        }
        let table = self.query_info().await?;
        Ok(self.up.catalog.store(table))
    }

    async fn login(&self, otp_code: Option<&str>, request_device_token: bool) -> Result<LoginData> {
        let endpoint = self.endpoint(&ops::AUTH_LOGIN).await?;
        let config = &self.up.config;
        let mut params = vec![
            ("account", config.account.as_str()),
            ("passwd", config.password.expose_secret()),
            ("session", config.session_name.as_str()),
            ("format", "sid"),
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
        let outcome = self.exchange(&ops::AUTH_LOGIN, &endpoint, &params, None, ApiFamily::Auth).await;
        match outcome {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(UpstreamError::InvalidResponse("login answered without a session id".to_owned())),
            Err(UpstreamError::Dsm { code, .. }) => Err(UpstreamError::LoginRefused { code }),
            Err(other) => Err(other),
        }
    }

    async fn session(&self) -> Result<Arc<Session>> {
        self.up
            .sessions
            .get(|| async {
                let data = self.login(None, false).await?;
                tracing::info!("logged in to DSM");
                Ok((SecretString::from(data.sid), data.synotoken.map(SecretString::from)))
            })
            .await
    }

    async fn end_session(&self, session: &Session) -> Result<()> {
        let endpoint = self.endpoint(&ops::AUTH_LOGOUT).await?;
        let params = [("session", self.up.config.session_name.as_str())];
        self.exchange::<serde::de::IgnoredAny>(&ops::AUTH_LOGOUT, &endpoint, &params, Some(session), ApiFamily::Auth)
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
    pub async fn login_once(&self, otp_code: Option<&str>, request_device_token: bool) -> Result<LoginOutcome> {
        let data = self.login(otp_code, request_device_token).await?;
        let device_id = data.device_id.clone().or(data.did.clone());
        let session = Session {
            sid: SecretString::from(data.sid),
            synotoken: data.synotoken.map(SecretString::from),
            generation: 0,
        };
        if let Err(error) = self.end_session(&session).await {
            tracing::warn!(%error, "logout after enrolment failed");
        }
        Ok(LoginOutcome { device_id })
    }

    /// Readiness: a session is held (logging in if needed) and DSM answers right now.
    pub async fn probe(&self) -> Result<()> {
        self.session().await?;
        self.query_info().await.map(drop)
    }

    pub async fn channels(&self) -> Result<Vec<Channel>> {
        #[derive(Deserialize)]
        struct Data {
            channels: Vec<Channel>,
        }
        Ok(self.fetch::<Data>(&ops::CHANNEL_LIST, &[]).await?.channels)
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct Data {
            users: Vec<User>,
        }
        Ok(self.fetch::<Data>(&ops::USER_LIST, &[]).await?.users)
    }

    pub async fn posts(&self, channel_id: ChannelId, limit: u32, offset: u32) -> Result<Vec<Post>> {
        #[derive(Deserialize)]
        struct Data {
            posts: Vec<Post>,
        }
        let (channel_id, limit, offset) = (channel_id.to_string(), limit.to_string(), offset.to_string());
        let params = [("channel_id", channel_id.as_str()), ("limit", limit.as_str()), ("offset", offset.as_str())];
        Ok(self.fetch::<Data>(&ops::POST_LIST, &params).await?.posts)
    }

    pub async fn create_post(&self, new: NewPost<'_>) -> Result<Post> {
        // DSM answers at least the new post's id; fields it leaves out are the ones just sent.
        #[derive(Deserialize)]
        struct Created {
            post_id: PostId,
            #[serde(default)]
            creator_id: Option<u64>,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            create_at: Option<u64>,
            #[serde(default)]
            update_at: Option<u64>,
            #[serde(default)]
            thread_id: Option<u64>,
            #[serde(default)]
            comment_count: Option<u64>,
            #[serde(rename = "type", default)]
            kind: Option<String>,
        }
        let channel_id = new.channel_id.to_string();
        let thread_id = new.thread_id.map(|t| t.to_string());
        let mut params = vec![
            ("channel_id", channel_id.as_str()),
            ("message", new.message.as_str()),
            // Must be the string `normal`: a numeric type stores an invisible post (§4.1).
            ("type", "normal"),
        ];
        if let Some(thread_id) = &thread_id {
            params.push(("thread_id", thread_id.as_str()));
        }
        let created: Created = self.fetch(&ops::POST_CREATE, &params).await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let create_at = created.create_at.unwrap_or(now_ms);
        Ok(Post {
            post_id: created.post_id,
            channel_id: new.channel_id,
            creator_id: created.creator_id.unwrap_or_default(),
            message: created.message.unwrap_or_else(|| new.message.as_str().to_owned()),
            create_at,
            update_at: created.update_at.unwrap_or(create_at),
            thread_id: created.thread_id.or(new.thread_id.map(PostId::get)).unwrap_or(0),
            comment_count: created.comment_count.unwrap_or(0),
            last_comment_at: None,
            kind: created.kind.unwrap_or_else(|| "normal".to_owned()),
            file_props: None,
        })
    }
}

fn parse_envelope<T: DeserializeOwned>(op: &Op, family: ApiFamily, body: &Bytes) -> Result<Option<T>> {
    let dsm_refused = |code| UpstreamError::Dsm {
        api: op.api,
        method: op.method,
        code,
        family,
    };
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(Envelope { success: true, data, .. }) => Ok(data),
        Ok(Envelope { error, .. }) => Err(dsm_refused(error.map_or(100, |e| e.code))),
        // The data did not have the expected shape: still honour an error envelope.
        Err(decode_error) => match serde_json::from_slice::<EnvelopeHead>(body) {
            Ok(EnvelopeHead { success: false, error }) => Err(dsm_refused(error.map_or(100, |e| e.code))),
            _ => Err(UpstreamError::InvalidResponse(format!(
                "{} {}: {}",
                op.api,
                op.method,
                decode_error
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Data {
        n: u32,
    }

    #[test]
    fn envelopes_are_read_for_success_and_errors() {
        let ok = parse_envelope::<Data>(&ops::USER_LIST, ApiFamily::Session, &Bytes::from_static(br#"{"success":true,"data":{"n":3}}"#));
        assert_eq!(ok.unwrap().unwrap().n, 3);
        let refused = parse_envelope::<Data>(
            &ops::USER_LIST,
            ApiFamily::Session,
            &Bytes::from_static(br#"{"success":false,"error":{"code":119}}"#),
        );
        assert_eq!(refused.unwrap_err().dsm_code(), Some(119));
        let garbage = parse_envelope::<Data>(&ops::USER_LIST, ApiFamily::Session, &Bytes::from_static(b"<html>"));
        assert!(matches!(garbage, Err(UpstreamError::InvalidResponse(_))));
    }

    #[test]
    fn odd_sids_are_not_put_in_cookies() {
        assert!(is_cookie_safe("0aB-_.x"));
        assert!(!is_cookie_safe("a;b"));
        assert!(!is_cookie_safe("a b"));
    }
}
