//! Transport and typed operations against DSM's WebAPI.

use std::sync::Arc;

use actix_http::error::ParseError;
use awc::error::{ConnectError, SendRequestError};
use awc::http::header;
use bytes::Bytes;
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::DsmShared;
use super::catalog::{self, ApiTable, Endpoint};
use super::error::{ApiFamily, Result, UpstreamError};
use super::ops::{self, Op, Verb};
use super::session::Session;
use crate::domain::{ChannelId, MessageText, PostId};

/// Largest DSM answer read (user and channel lists of big installations run to megabytes).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// DSM codes that always mean "this session is gone".
const SESSION_GONE: [i64; 2] = [106, 107];
/// DSM codes that mean either "session gone" or "not allowed" (upstream-protocol §3.4).
const SESSION_OR_PERMISSION: [i64; 2] = [105, 119];

/// A worker's handle on the NAS.
pub struct DsmClient {
    http: awc::Client,
    up: Arc<DsmShared>,
}

/// Who a request speaks for.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Session(&'a Session),
    Token(&'a str),
    Anonymous,
}

impl Credential<'_> {
    /// Which error table DSM's answer belongs to.
    fn family(&self, op: &Op) -> ApiFamily {
        match self {
            _ if op.api == "SYNO.API.Auth" => ApiFamily::Auth,
            Credential::Token(_) => ApiFamily::External,
            _ => ApiFamily::Session,
        }
    }
}

/// A file DSM sends, streamed as it arrives.
pub struct Download {
    pub content_type: String,
    pub content_disposition: Option<String>,
    /// The file's length when DSM announced it (and did not compress it in transit): passed
    /// on so a download cut short is seen as incomplete, never as a complete, shorter file.
    pub content_length: Option<u64>,
    pub body: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes>>>>,
}

/// A file to upload, sent as the last part of a `multipart/form-data` body after the
/// operation's other fields (DSM reads the file part last).
pub struct Upload {
    pub field: &'static str,
    pub file_name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

impl Upload {
    /// The content type and the body as three chunks: the fields and the file part's headers,
    /// the file itself (the same `Bytes`, not a copy, so a retry after a lost session sends it
    /// again without holding the upload twice), and the closing boundary.
    fn encode(&self, fields: &[(&str, &str)]) -> (String, [Bytes; 3]) {
        let boundary = format!("----syno-chat-gateway-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(512);
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(value.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        let file_name: String = self
            .file_name
            .chars()
            .filter(|c| !c.is_control())
            .map(|c| if c == '"' { '\'' } else { c })
            .collect();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{file_name}\"\r\nContent-Type: {}\r\n\r\n",
                self.field, self.content_type
            )
            .as_bytes(),
        );
        let suffix = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        (
            format!("multipart/form-data; boundary={boundary}"),
            [Bytes::from(body), self.bytes.clone(), suffix],
        )
    }
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
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

fn classify_send_error(error: &SendRequestError) -> UpstreamError {
    // The awc error's own text can contain the request URL (and so `_sid`): never keep it.
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            UpstreamError::Timeout
        }
        SendRequestError::Connect(_) => UpstreamError::Unreachable("connection failed"),
        SendRequestError::Send(_) | SendRequestError::Body(_) => {
            UpstreamError::Unreachable("connection lost while sending")
        }
        // A pooled keep-alive connection the NAS closed (restart, idle timeout) ends before
        // an answer: that is the NAS going away, not a malformed answer.
        SendRequestError::Response(ParseError::Incomplete | ParseError::Io(_)) => {
            UpstreamError::Unreachable("connection closed before an answer")
        }
        SendRequestError::Response(_) => {
            UpstreamError::InvalidResponse("malformed HTTP response".to_owned())
        }
        _ => UpstreamError::Unreachable("request failed"),
    }
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
            .finish();
        Self { http, up }
    }

    /// Encodes and sends one request; answers the HTTP response once its status is 200.
    /// Control fields and credentials go in the query for GETs and uploads, else in the form.
    async fn send(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
        upload: Option<&Upload>,
    ) -> Result<
        awc::ClientResponse<
            impl futures_util::Stream<Item = std::result::Result<Bytes, awc::error::PayloadError>>
            + use<>,
        >,
    > {
        let version = endpoint.version.to_string();
        let json_text: Vec<(&str, String)>;
        let json_params: Vec<(&str, &str)>;
        let params = if endpoint.json_format && !op.text_params.is_empty() {
            json_text = params
                .iter()
                .map(|&(name, value)| match op.text_params.contains(&name) {
                    true => (name, serde_json::Value::from(value).to_string()),
                    false => (name, value.to_owned()),
                })
                .collect();
            json_params = json_text.iter().map(|(k, v)| (*k, v.as_str())).collect();
            json_params.as_slice()
        } else {
            params
        };
        let mut control: Vec<(&str, &str)> = vec![
            ("api", op.api),
            ("version", version.as_str()),
            ("method", op.method),
        ];
        // The sid travels in the `id` cookie, which DSM reads (upstream-protocol §3.2), so it
        // stays out of URLs and so out of DSM's and proxies' access logs. POST forms also carry
        // `_sid` in the body. A sid that cannot be a cookie goes in the body: such a read is
        // sent as a POST form instead of a GET (DSM accepts both, §1.2).
        let (session_sid, sid_cookie) = match credential {
            Credential::Session(session) => {
                let sid = session.sid.expose_secret();
                (Some(sid), is_cookie_safe(sid).then_some(sid))
            }
            _ => None.unzip(),
        };
        let verb = match (op.verb, session_sid, sid_cookie) {
            (Verb::Get, Some(_), None) => Verb::Post,
            (verb, _, _) => verb,
        };
        match credential {
            Credential::Token(token) => control.push(("token", token)),
            Credential::Session(_) | Credential::Anonymous => {}
        }
        let url = format!("{}{}", self.up.webapi_base, endpoint.path);
        let encode = |fields: &[(&str, &str)]| {
            serde_urlencoded::to_string(fields).map_err(|_| {
                UpstreamError::InvalidResponse("parameters could not be encoded".to_owned())
            })
        };
        let body_sid: Vec<(&str, &str)> =
            session_sid.map(|sid| ("_sid", sid)).into_iter().collect();
        let (query, form) = match (verb, upload) {
            (Verb::Get, _) => (encode(&[control.as_slice(), params].concat())?, None),
            (Verb::Post, Some(_)) => (encode(&control)?, None),
            (Verb::Post, None) => (
                String::new(),
                Some(encode(&[control.as_slice(), &body_sid, params].concat())?),
            ),
        };
        let mut request = match verb {
            Verb::Get => self.http.get(format!("{url}?{query}")),
            Verb::Post if query.is_empty() => self.http.post(url),
            Verb::Post => self.http.post(format!("{url}?{query}")),
        };
        if let Credential::Session(session) = credential
            && let Some(token) = &session.synotoken
        {
            request = request.insert_header(("X-SYNO-TOKEN", token.expose_secret()));
        }
        if let Some(sid) = sid_cookie {
            request = request.insert_header((header::COOKIE, format!("id={sid}")));
        }
        let sent = match (form, upload) {
            (Some(form), _) => {
                request
                    .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                    .send_body(form)
                    .await
            }
            (None, Some(upload)) => {
                // Without a cookie, the sid goes in the multipart fields, not the URL.
                let fields = match sid_cookie {
                    Some(_) => params.to_vec(),
                    None => [body_sid.as_slice(), params].concat(),
                };
                let (content_type, chunks) = upload.encode(&fields);
                let length = chunks.iter().map(|c| c.len() as u64).sum();
                // Sized, so DSM gets a Content-Length rather than a chunked body.
                let body = actix_http::body::SizedStream::new(
                    length,
                    futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>)),
                );
                request
                    .insert_header((header::CONTENT_TYPE, content_type))
                    .send_body(body)
                    .await
            }
            (None, None) => request.send().await,
        };
        match sent {
            Err(error) => Err(classify_send_error(&error)),
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) => Err(UpstreamError::InvalidResponse(format!(
                "HTTP status {}",
                response.status().as_u16()
            ))),
        }
    }

    /// One JSON exchange: send, read, unwrap the envelope, and log the outcome (never the
    /// parameters: they hold passwords, sids and tokens).
    async fn exchange<T: DeserializeOwned>(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
        upload: Option<&Upload>,
    ) -> Result<Option<T>> {
        self.exchange_with(
            op,
            endpoint,
            params,
            credential,
            upload,
            &|op, family, body| parse_envelope::<T>(op, family, body),
        )
        .await
    }

    /// [`Self::exchange`] with the answer read by `decode` from the body, which it may borrow
    /// from (see [`super::wire`]).
    async fn exchange_with<R, D>(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
        upload: Option<&Upload>,
        decode: &D,
    ) -> Result<Option<R>>
    where
        D: Fn(&Op, ApiFamily, &[u8]) -> Result<Option<R>>,
    {
        let family = credential.family(op);
        let started = std::time::Instant::now();
        let _slot = self.slot().await?;
        // One deadline over connect, send, headers and body: awc's own timeout stops at the
        // headers, and a NAS that goes silent mid-body must not hold the caller (or a lock).
        let result = self
            .within_deadline(async {
                let mut response = self.send(op, endpoint, params, credential, upload).await?;
                match response.body().limit(MAX_RESPONSE_BYTES).await {
                    Ok(body) => decode(op, family, &body),
                    Err(_) => Err(UpstreamError::Unreachable("connection lost while reading")),
                }
            })
            .await;
        self.record_call(op, endpoint, started, result.as_ref().err());
        result
    }

    /// A binary exchange (files, avatars): the bytes with DSM's content type, or DSM's JSON
    /// error envelope turned into an error.
    async fn exchange_download(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
    ) -> Result<Download> {
        let family = credential.family(op);
        let slot = self.slot().await?;
        let started = std::time::Instant::now();
        let result = self
            .within_deadline(async {
                let mut response = self.send(op, endpoint, params, credential, None).await?;
                let header_text = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v: &header::HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                let content_type = header_text(header::CONTENT_TYPE)
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                let content_disposition = header_text(header::CONTENT_DISPOSITION);
                let content_length = header_text(header::CONTENT_LENGTH)
                    .filter(|_| header_text(header::CONTENT_ENCODING).is_none())
                    .and_then(|length| length.parse().ok());
                if content_type.starts_with("application/json") {
                    // Errors come as the usual envelope; a JSON "file" with success is not a file.
                    let body = response
                        .body()
                        .limit(MAX_RESPONSE_BYTES)
                        .await
                        .map_err(|_| UpstreamError::Unreachable("connection lost while reading"))?;
                    parse_envelope::<serde::de::IgnoredAny>(op, family, &body)?;
                    return Err(UpstreamError::InvalidResponse(format!(
                        "{} {} answered JSON instead of a file",
                        op.api, op.method
                    )));
                }
                // The file is passed on as it arrives; a large one may take longer than a call, so
                // the deadline is per chunk: a download that stops moving ends.
                // The slot goes with the stream: it is released when the download ends,
                // fails, stops moving for a timeout, or the caller goes away.
                let body = idle_limited(
                    response
                        .map_err(|_| UpstreamError::Unreachable("connection lost while reading")),
                    self.up.config.timeout,
                    slot,
                );
                Ok(Download {
                    content_type,
                    content_disposition,
                    content_length,
                    body: Box::pin(body),
                })
            })
            .await;
        self.record_call(op, endpoint, started, result.as_ref().err());
        result
    }

    /// One of the `upstream.max_concurrency` slots for a DSM call; waiting longer than
    /// `upstream.slot_wait` is [`UpstreamError::Busy`].
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(
            self.up.config.slot_wait,
            self.up.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(UpstreamError::Busy),
        }
    }

    /// Runs one exchange under `upstream.timeout`; running out of time is a timeout.
    async fn within_deadline<T>(&self, exchange: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.up.config.timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    /// Logs and counts a DSM call (never its parameters: they hold passwords, sids and tokens).
    fn record_call(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        started: std::time::Instant,
        error: Option<&UpstreamError>,
    ) {
        let outcome = error.map_or("ok", UpstreamError::outcome);
        self.up
            .metrics
            .upstream_call(op.api, op.method, outcome, started.elapsed());
        tracing::debug!(
            api = op.api,
            method = op.method,
            version = endpoint.version,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            outcome,
            dsm_code = error.and_then(UpstreamError::dsm_code),
            "DSM call"
        );
    }

    /// Runs `attempt` with the shared session; when DSM says the session is gone, logs in again
    /// (once, for all concurrent callers) and retries once; on a version error, reloads the
    /// Info table and retries once.
    async fn with_session<T, F, Fut>(&self, op: &'static Op, attempt: F) -> Result<T>
    where
        F: Fn(Endpoint, Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retried = false;
        loop {
            let endpoint = self.endpoint(op).await?;
            let session = self.session().await?;
            match attempt(endpoint, session.clone()).await {
                Err(UpstreamError::Dsm { code, .. })
                    if !retried && self.session_is_lost(code, &session).await =>
                {
                    tracing::info!(
                        api = op.api,
                        method = op.method,
                        dsm_code = code,
                        "DSM session lost; logging in again"
                    );
                    self.up.metrics.relogin();
                    self.up.sessions.invalidate(&session);
                }
                Err(UpstreamError::Dsm { code: 104, .. }) if !retried => self.up.catalog.forget(),
                other => return other,
            }
            retried = true;
        }
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
        let endpoint = self.endpoint(op).await?;
        self.exchange(
            op,
            &endpoint,
            params,
            Credential::Token(token.expose_secret()),
            None,
        )
        .await
    }

    /// A `SYNO.Chat.External` call answered with a file.
    pub(super) async fn download_with_token(
        &self,
        op: &'static Op,
        token: &SecretString,
        params: &[(&str, &str)],
    ) -> Result<Download> {
        let endpoint = self.endpoint(op).await?;
        self.exchange_download(
            op,
            &endpoint,
            params,
            Credential::Token(token.expose_secret()),
        )
        .await
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
        // A session proven alive a moment ago is not checked again: callers repeating a
        // forbidden request cause at most one check per session and SESSION_CHECK_TTL.
        if self.up.sessions.recently_proven(session) {
            return false;
        }
        let proof = &super::users::PREFERENCE_GET;
        let Ok(endpoint) = self.endpoint(proof).await else {
            return false;
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
        let lost = matches!(check, Err(UpstreamError::Dsm { code, .. }) if SESSION_GONE.contains(&code) || SESSION_OR_PERMISSION.contains(&code));
        if check.is_ok() {
            self.up.sessions.proven_alive(session);
        }
        lost
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

    async fn load_catalog(&self) -> Result<Arc<ApiTable>> {
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

    async fn session(&self) -> Result<Arc<Session>> {
        self.up
            .sessions
            .get(|| async {
                let outcome = self.login(None, false).await;
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

    async fn end_session(&self, session: &Session) -> Result<()> {
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

    /// Why the gateway counts as wedged, if it does (see [`DsmShared::wedged`]).
    pub fn wedged(&self) -> Option<&'static str> {
        self.up.wedged()
    }

    /// DSM's state for the health view: the last check if younger than [`super::HEALTH_TTL`],
    /// else a new one. Concurrent callers share one check in flight.
    pub async fn dsm_health(&self) -> super::DsmHealth {
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

/// TCP keepalive on a connection to the NAS: a NAS that vanished (power cut, cable) without a
/// FIN is noticed on pooled idle connections instead of leaving them half-open.
fn enable_keepalive(stream: &tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(30))
        .with_interval(std::time::Duration::from_secs(10));
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keepalive could not be enabled");
    }
}

/// Ends `body` with a timeout error when no chunk arrives for `idle`; `slot` is held until the
/// stream ends or is dropped.
fn idle_limited<S>(
    body: S,
    idle: std::time::Duration,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes>>
where
    S: futures_util::Stream<Item = Result<Bytes>> + Unpin,
{
    futures_util::stream::unfold(Some((body, slot)), move |state| async move {
        let (mut body, slot) = state?;
        match tokio::time::timeout(idle, futures_util::StreamExt::next(&mut body)).await {
            Ok(Some(item)) => Some((item, Some((body, slot)))),
            Ok(None) => None,
            Err(_) => Some((Err(UpstreamError::Timeout), None)),
        }
    })
}

fn parse_envelope<'a, T: Deserialize<'a>>(
    op: &Op,
    family: ApiFamily,
    body: &'a [u8],
) -> Result<Option<T>> {
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(Envelope {
            success: true,
            data,
            ..
        }) => Ok(data),
        Ok(Envelope { error, .. }) => Err(dsm_refused(op, family, error)),
        Err(decode_error) => parse_envelope_error(op, family, body, &decode_error),
    }
}

fn dsm_refused(op: &Op, family: ApiFamily, error: Option<ErrorBody>) -> UpstreamError {
    UpstreamError::Dsm {
        api: op.api,
        method: op.method,
        code: error.map_or(100, |e| e.code),
        family,
    }
}

/// A body whose data did not have the expected shape: still honour an error envelope.
fn parse_envelope_error<T>(
    op: &Op,
    family: ApiFamily,
    body: &[u8],
    decode_error: &serde_json::Error,
) -> Result<T> {
    match serde_json::from_slice::<EnvelopeHead>(body) {
        Ok(EnvelopeHead {
            success: false,
            error,
        }) => Err(dsm_refused(op, family, error)),
        _ => Err(UpstreamError::InvalidResponse(format!(
            "{} {}: {}",
            op.api, op.method, decode_error
        ))),
    }
}

/// Decodes a successful envelope's `data` as `W` borrowed from `body` and converts it; an
/// error envelope or another shape is a `serde_json` error for [`parse_envelope_error`].
pub(super) fn decode_data<'a, W: Deserialize<'a>, R>(
    body: &'a [u8],
    convert: impl FnOnce(W) -> Result<R>,
) -> serde_json::Result<Result<R>> {
    #[derive(Deserialize)]
    struct Success<W> {
        #[serde(rename = "success")]
        _success: True,
        data: W,
    }
    /// Only `true`: a `false` envelope fails here and is read as an error envelope.
    struct True;
    impl<'de> Deserialize<'de> for True {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            match bool::deserialize(d)? {
                true => Ok(True),
                false => Err(serde::de::Error::custom("success is false")),
            }
        }
    }
    serde_json::from_slice::<Success<W>>(body).map(|s| convert(s.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_encoded_around_the_file_without_copying_it() {
        let upload = Upload {
            field: "file",
            file_name: "a\"b.txt".to_owned(),
            content_type: "text/plain".to_owned(),
            bytes: Bytes::from(vec![7u8; 4096]),
        };
        let (content_type, [prefix, file, suffix]) = upload.encode(&[("channel_id", "1")]);
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        assert_eq!(
            file.as_ptr(),
            upload.bytes.as_ptr(),
            "the file is not copied"
        );
        assert_eq!(file.len(), 4096);
        let prefix = String::from_utf8(prefix.to_vec()).unwrap();
        assert!(prefix.starts_with(&format!("--{boundary}\r\n")));
        assert!(prefix.contains("name=\"channel_id\"\r\n\r\n1\r\n"));
        assert!(
            prefix.ends_with(
                "name=\"file\"; filename=\"a'b.txt\"\r\nContent-Type: text/plain\r\n\r\n"
            )
        );
        assert_eq!(
            suffix.as_ref(),
            format!("\r\n--{boundary}--\r\n").as_bytes()
        );
    }

    #[derive(Debug, Deserialize)]
    struct Data {
        n: u32,
    }

    #[test]
    fn envelopes_are_read_for_success_and_errors() {
        let ok = parse_envelope::<Data>(
            &ops::INFO_QUERY,
            ApiFamily::Session,
            &Bytes::from_static(br#"{"success":true,"data":{"n":3}}"#),
        );
        assert_eq!(ok.unwrap().unwrap().n, 3);
        let refused = parse_envelope::<Data>(
            &ops::INFO_QUERY,
            ApiFamily::Session,
            &Bytes::from_static(br#"{"success":false,"error":{"code":119}}"#),
        );
        assert_eq!(refused.unwrap_err().dsm_code(), Some(119));
        let garbage = parse_envelope::<Data>(
            &ops::INFO_QUERY,
            ApiFamily::Session,
            &Bytes::from_static(b"<html>"),
        );
        assert!(matches!(garbage, Err(UpstreamError::InvalidResponse(_))));
    }

    #[actix_web::test]
    async fn connections_to_the_nas_get_tcp_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!socket2::SockRef::from(&stream).keepalive().unwrap());
        enable_keepalive(&stream);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn odd_sids_are_not_put_in_cookies() {
        assert!(is_cookie_safe("0aB-_.x"));
        assert!(!is_cookie_safe("a;b"));
        assert!(!is_cookie_safe("a b"));
    }
}
