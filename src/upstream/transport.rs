//! The transport to DSM: one request encoded (query, form or multipart; the sid as a cookie),
//! sent under a deadline and a concurrency slot, its answer read and recorded.

use actix_http::error::ParseError;
use awc::error::{ConnectError, SendRequestError};
use awc::http::header;
use bytes::Bytes;
use futures_util::TryStreamExt;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::catalog::Endpoint;
use super::client::DsmClient;
use super::envelope::{error_details, parse_envelope};
use super::error::{ApiFamily, Result, UpstreamError};
use super::ops::{Op, Verb};
use super::session::Session;

/// DSM's CSRF header, sent with a session that has a SynoToken.
const SYNO_TOKEN: header::HeaderName = header::HeaderName::from_static("x-syno-token");

/// Largest DSM answer read (user and channel lists of big installations run to megabytes).
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// What a call sent that DSM (or a proxy in front of it) may echo in a refusal: its
/// parameters' values (a password, a device id, a one-time code among them) and its
/// credential (the sid and SynoToken, or a token). Masked in the logged details.
fn sent_values<'a>(params: &[(&'a str, &'a str)], credential: Credential<'a>) -> Vec<&'a str> {
    let mut sent: Vec<&str> = params.iter().map(|&(_, value)| value).collect();
    match credential {
        Credential::Session(session) => {
            sent.push(session.sid.expose_secret());
            if let Some(Ok(token)) = &session.headers.synotoken
                && let Ok(token) = token.to_str()
            {
                sent.push(token);
            }
        }
        Credential::Token(token) => sent.push(token),
        Credential::Anonymous => {}
    }
    sent
}

/// Who a request speaks for.
#[derive(Clone, Copy)]
pub(super) enum Credential<'a> {
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

/// A file name as browsers write it in a multipart part's quoted `filename` (WHATWG's
/// multipart/form-data encoding): `"` as `%22`, CR and LF as `%0D` and `%0A`, nothing else
/// escaped (a `\` is sent as it is; browsers never escape it, so servers read it literally),
/// other control characters dropped. DSM stores the name it reads: the lost-answer check looks
/// for this name too ([`super::posts`]).
pub fn wire_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '"' => out.push_str("%22"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Upload {
    /// The time an upload has beyond `upstream.timeout_ms` to carry its file: a second a
    /// [`UPLOAD_BYTES_PER_SEC`].
    fn allowance(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.bytes.len() as u64).div_ceil(UPLOAD_BYTES_PER_SEC))
    }

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
        let file_name = wire_file_name(&self.file_name);
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

/// DSM's HTTP answer, its body still to be read.
type DsmResponse = awc::ClientResponse<actix_http::encoding::Decoder<actix_http::Payload>>;

/// The request was sent and the connection ended before any byte of an answer.
const CLOSED_BEFORE_ANSWER: &str = "connection closed before an answer";

fn classify_send_error(error: &SendRequestError) -> UpstreamError {
    // The awc error's own text can contain the request URL (and so `_sid`): never keep it.
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            UpstreamError::Timeout
        }
        // awc names the end of the stream where the answer's head should begin `Disconnected`,
        // a connect error, although the request was sent then: the NAS may have carried it
        // out (a web server restarting mid-request), so the outcome is unknown, which the
        // outbox must not take for a connection that never opened.
        SendRequestError::Connect(ConnectError::Disconnected)
        // A pooled keep-alive connection the NAS closed (restart, idle timeout) ends before
        // an answer: that is the NAS going away, not a malformed answer.
        | SendRequestError::Response(ParseError::Incomplete | ParseError::Io(_)) => {
            UpstreamError::Unreachable(CLOSED_BEFORE_ANSWER)
        }
        SendRequestError::Connect(_) => UpstreamError::Unreachable("connection failed"),
        SendRequestError::Send(_) | SendRequestError::Body(_) => {
            UpstreamError::Unreachable("connection lost while sending")
        }
        SendRequestError::Response(_) => {
            UpstreamError::InvalidResponse("malformed HTTP response".to_owned())
        }
        _ => UpstreamError::Unreachable("request failed"),
    }
}

/// What an upload's query carries besides the control fields, as the seed sends
/// `post_file_upload` (PROTOCOL.md [T2]: `api`, `method`, `version`, `channel_id` in the query,
/// the rest in the multipart body).
const UPLOAD_QUERY_PARAMS: &[&str] = &["channel_id"];
/// The rate an upload's deadline allows for its file beyond `upstream.timeout_ms`: a 32 MiB
/// file gets 32 s more (a NAS on a slow link, or busy writing it).
const UPLOAD_BYTES_PER_SEC: u64 = 1024 * 1024;

fn upload_query<'a>(params: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    params
        .iter()
        .filter(|(name, _)| UPLOAD_QUERY_PARAMS.contains(name))
        .copied()
        .collect()
}

impl DsmClient {
    /// Encodes and sends one request; answers the HTTP response once its status is 200.
    /// Control fields and credentials go in the query for GETs, uploads and token calls, else in
    /// the form.
    /// A read whose connection closed before its answer is sent once more: awc reuses a
    /// keep-alive connection unless the NAS had already closed it, so a request can meet the
    /// NAS's idle timeout on its way. A read is safe to repeat; a write is not (the outbox
    /// checks what the NAS did before it sends again).
    pub(super) async fn send(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
        upload: Option<&Upload>,
    ) -> Result<DsmResponse> {
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
        // The sid travels in the `id` cookie, which DSM reads (PROTOCOL.md [S2]), so it
        // stays out of URLs and so out of DSM's and proxies' access logs. POST forms also carry
        // `_sid` in the body. A sid that cannot be a cookie goes in the body: such a read is
        // sent as a POST form instead of a GET (DSM accepts both, PROTOCOL.md [T2]).
        let (session_sid, sid_cookie) = match credential {
            Credential::Session(session) => (
                Some(session.sid.expose_secret()),
                session.headers.cookie.as_ref(),
            ),
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
        let body_sid: &[(&str, &str)] = match session_sid {
            Some(sid) => &[("_sid", sid)],
            None => &[],
        };
        let mut repeat = op.verb == Verb::Get;
        loop {
            // The URL, with its query, is written in one allocation.
            let url = [&*self.up.webapi_base, &endpoint.path, "?"];
            let (mut request, form) = match (verb, upload) {
                (Verb::Get, _) => (self.http.get(url_encoded(&url, &[&control, params])), None),
                (Verb::Post, Some(_)) => (
                    self.http
                        .post(url_encoded(&url, &[&control, &upload_query(params)])),
                    None,
                ),
                // As the seed sends `SYNO.Chat.External`: `api`, `version`, `method` and the
                // token in the query, `payload` in the body (PROTOCOL.md [T2]).
                (Verb::Post, None) if matches!(credential, Credential::Token(_)) => (
                    self.http.post(url_encoded(&url, &[&control])),
                    Some(url_encoded(&[], &[params])),
                ),
                (Verb::Post, None) => (
                    self.http.post(url[..2].concat()),
                    Some(url_encoded(&[], &[&control, body_sid, params])),
                ),
            };
            // Answers are read as sent (the client asks for `identity`): awc would inflate a
            // compressed chunk whole, before any size limit, so a few KB could become gigabytes.
            request = request.no_decompress();
            if let Credential::Session(session) = credential
                && let Some(token) = &session.headers.synotoken
            {
                let token = token.as_ref().map_err(|_| {
                    UpstreamError::InvalidResponse(
                        "DSM gave a SynoToken that is not a header value".into(),
                    )
                })?;
                request = request.insert_header((SYNO_TOKEN, token.clone()));
            }
            if let Some(cookie) = sid_cookie {
                request = request.insert_header((header::COOKIE, cookie.clone()));
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
                    let fields = params
                        .iter()
                        .filter(|(name, _)| !UPLOAD_QUERY_PARAMS.contains(name))
                        .copied();
                    let fields: Vec<(&str, &str)> = match sid_cookie {
                        Some(_) => fields.collect(),
                        None => body_sid.iter().copied().chain(fields).collect(),
                    };
                    let (content_type, chunks) = upload.encode(&fields);
                    let length = chunks.iter().map(|c| c.len() as u64).sum();
                    // Sized, so DSM gets a Content-Length rather than a chunked body.
                    let body = actix_http::body::SizedStream::new(
                        length,
                        futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>)),
                    );
                    // awc's own deadline (to the answer's head) stretched like the exchange's.
                    request
                        .timeout(self.up.config.timeout + upload.allowance())
                        .insert_header((header::CONTENT_TYPE, content_type))
                        .send_body(body)
                        .await
                }
                (None, None) => request.send().await,
            };
            return match sent {
                Err(error) => match classify_send_error(&error) {
                    UpstreamError::Unreachable(CLOSED_BEFORE_ANSWER) if repeat => {
                        repeat = false;
                        continue;
                    }
                    error => Err(error),
                },
                Ok(response) if response.status().is_success() => {
                    match response.headers().get(header::CONTENT_ENCODING) {
                        Some(coding) if !coding.as_bytes().eq_ignore_ascii_case(b"identity") => {
                            Err(UpstreamError::InvalidResponse(format!(
                                "an answer with Content-Encoding {:?}, which was not asked for",
                                String::from_utf8_lossy(coding.as_bytes())
                            )))
                        }
                        _ => Ok(response),
                    }
                }
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                    Err(UpstreamError::TurnedAway {
                        status: response.status().as_u16(),
                        retry_after: response
                            .headers()
                            .get(header::RETRY_AFTER)
                            .and_then(|value| value.to_str().ok())
                            .and_then(|value| {
                                crate::domain::retry_after(value, std::time::SystemTime::now())
                            })
                            .map(|wait| wait.min(super::error::TURNED_AWAY_WAIT_MAX)),
                    })
                }
                Ok(response) => Err(UpstreamError::InvalidResponse(format!(
                    "HTTP status {}",
                    response.status().as_u16()
                ))),
            };
        }
    }

    /// One JSON exchange: send, read, unwrap the envelope, and log the outcome (never the
    /// parameters: they hold passwords, sids and tokens).
    pub(super) async fn exchange<T: DeserializeOwned>(
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
    pub(super) async fn exchange_with<R, D>(
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
        let _slot = self.counted_slot(op, endpoint, started).await?;
        let in_flight = CallInFlight::new(self, op, endpoint, started);
        let mut details = None;
        // One deadline over connect, send, headers and body: awc's own timeout stops at the
        // headers, and a NAS that goes silent mid-body must not hold the caller (or a lock).
        let deadline =
            self.up.config.timeout + upload.map_or(Default::default(), Upload::allowance);
        let result = self
            .within(deadline, async {
                let mut response = self.send(op, endpoint, params, credential, upload).await?;
                let body = read_whole(&mut response).await?;
                let decoded = decode(op, family, &body);
                // DSM's own answers only: a proxy's error page dates it by the proxy's clock.
                if decoded.is_ok() {
                    self.up.note_nas_clock(response.headers().get(header::DATE));
                }
                if let Err(UpstreamError::Dsm { .. }) = &decoded {
                    details = error_details(&body, &sent_values(params, credential));
                }
                decoded
            })
            .await;
        in_flight.answered();
        self.record_call(op, endpoint, started, result.as_ref().err(), details);
        result
    }

    /// A binary exchange (files, avatars): the bytes with DSM's content type, or DSM's JSON
    /// error envelope turned into an error.
    pub(super) async fn exchange_download(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        params: &[(&str, &str)],
        credential: Credential<'_>,
    ) -> Result<Download> {
        let family = credential.family(op);
        let started = std::time::Instant::now();
        let slot = self.counted_slot(op, endpoint, started).await?;
        let in_flight = CallInFlight::new(self, op, endpoint, started);
        let mut details = None;
        let result = self
            .within_deadline(async {
                let mut response = self.send(op, endpoint, params, credential, None).await?;
                // As UTF-8, not as visible ASCII: DSM names a file `é 日本.txt` in raw UTF-8.
                let header_text = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v: &header::HeaderValue| std::str::from_utf8(v.as_bytes()).ok())
                        .map(str::to_owned)
                };
                let content_type = header_text(header::CONTENT_TYPE)
                    .unwrap_or_else(|| "application/octet-stream".to_owned());
                let content_disposition = header_text(header::CONTENT_DISPOSITION);
                let content_length = header_text(header::CONTENT_LENGTH)
                    .filter(|_| header_text(header::CONTENT_ENCODING).is_none())
                    .and_then(|length| length.parse().ok());
                // Errors come as the usual envelope, without `Content-Disposition`; a JSON file
                // someone posted comes as a file, with it.
                if content_type.starts_with("application/json") && content_disposition.is_none() {
                    // A JSON "file" with success and no file name is not a file.
                    let body = response
                        .body()
                        .limit(MAX_RESPONSE_BYTES)
                        .await
                        .map_err(|_| UpstreamError::Unreachable("connection lost while reading"))?;
                    if let Err(error) = parse_envelope::<serde::de::IgnoredAny>(op, family, &body) {
                        details = error_details(&body, &sent_values(params, credential));
                        return Err(error);
                    }
                    return Err(UpstreamError::InvalidResponse(format!(
                        "{} {} answered JSON instead of a file",
                        op.api, op.method
                    )));
                }
                // The file is passed on as it arrives; a large one may take longer than a call, so
                // the deadline is per chunk, on both sides: a download that stops moving ends,
                // whether DSM stops sending or the caller stops reading. The slot goes with it.
                let body = pumped(
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
        in_flight.answered();
        self.record_call(op, endpoint, started, result.as_ref().err(), details);
        result
    }

    /// One of the `upstream.max_concurrency` slots for a DSM call; waiting longer than
    /// `upstream.slot_wait` is [`UpstreamError::Busy`].
    pub(super) async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
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

    /// [`Self::slot`] for a call: a call refused for want of one counts as a `busy` call.
    async fn counted_slot(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        started: std::time::Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.slot().await.inspect_err(|busy| {
            self.record_call(op, endpoint, started, Some(busy), None);
        })
    }

    /// Runs one exchange under `upstream.timeout`; running out of time is a timeout.
    pub(super) async fn within_deadline<T>(
        &self,
        exchange: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.within(self.up.config.timeout, exchange).await
    }

    async fn within<T>(
        &self,
        deadline: std::time::Duration,
        exchange: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    /// Logs and counts a DSM call (never its parameters: they hold passwords, sids and tokens).
    /// `details`: what DSM said about a refusal in `error.errors`, names and reasons only
    /// ([`error_details`]).
    pub(super) fn record_call(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        started: std::time::Instant,
        error: Option<&UpstreamError>,
        details: Option<String>,
    ) {
        let outcome = error.map_or("ok", UpstreamError::outcome);
        let dsm_code = error.and_then(UpstreamError::dsm_code);
        self.record_outcome(op, endpoint, started, (outcome, dsm_code), details);
    }

    fn record_outcome(
        &self,
        op: &Op,
        endpoint: &Endpoint,
        started: std::time::Instant,
        (outcome, dsm_code): (&'static str, Option<i64>),
        details: Option<String>,
    ) {
        self.up
            .metrics
            .upstream_call(op.api, op.method, outcome, started.elapsed());
        tracing::debug!(
            api = op.api,
            method = op.method,
            version = endpoint.version,
            elapsed_ms = crate::logging::millis(started.elapsed()),
            outcome,
            dsm_code,
            dsm_errors = details.as_deref(),
            "DSM call"
        );
    }
}

/// The pieces of `prefix`, then the `application/x-www-form-urlencoded` text of the fields,
/// written into one allocation sized for them up front (the encoding is serde_urlencoded's,
/// which uses the same encoder).
fn url_encoded(prefix: &[&str], groups: &[&[(&str, &str)]]) -> String {
    let fields = groups.iter().flat_map(|group| group.iter());
    // Names are plain; values grow by a third when about one byte in six needs escaping.
    let capacity = prefix.iter().map(|piece| piece.len()).sum::<usize>()
        + fields
            .clone()
            .map(|(name, value)| name.len() + value.len() + value.len() / 3 + 2)
            .sum::<usize>();
    let mut text = String::with_capacity(capacity);
    prefix.iter().for_each(|piece| text.push_str(piece));
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            text.push('&');
        }
        push_form_encoded(&mut text, name);
        text.push('=');
        push_form_encoded(&mut text, value);
    }
    text
}

/// `piece` as `application/x-www-form-urlencoded` writes it (form_urlencoded's encoder, which
/// serde_urlencoded uses too). Names, `api`, `method`, ids and numbers need no escaping and are
/// copied whole: escaping byte by byte cost about 1,500 instructions on every DSM call.
fn push_form_encoded(text: &mut String, piece: &str) {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
    if piece.bytes().all(plain) {
        text.push_str(piece);
    } else {
        text.extend(form_urlencoded::byte_serialize(piece.as_bytes()));
    }
}

/// Reads a whole JSON answer (at most [`MAX_RESPONSE_BYTES`]). An answer that arrives as one
/// chunk is passed on as that chunk, with no copy; one in several chunks is gathered into one
/// buffer sized from `Content-Length` up front (awc's own reader grows its buffer as it goes).
async fn read_whole<S>(response: &mut awc::ClientResponse<S>) -> Result<Bytes>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let lost = || UpstreamError::Unreachable("connection lost while reading");
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|length| length > MAX_RESPONSE_BYTES) {
        return Err(lost());
    }
    let mut first: Option<Bytes> = None;
    let mut gathered = bytes::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(response).await {
        let chunk = chunk.map_err(|_| lost())?;
        if let Some(first) = first.take() {
            gathered.reserve(length.unwrap_or(0).max(first.len() + chunk.len()));
            gathered.extend_from_slice(&first);
        } else if gathered.is_empty() {
            first = Some(chunk);
            continue;
        }
        if gathered.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(lost());
        }
        gathered.extend_from_slice(&chunk);
    }
    Ok(first.unwrap_or_else(|| gathered.freeze()))
}

/// TCP keepalive on a connection to the NAS: a NAS that vanished (power cut, cable) without a
/// FIN is noticed on pooled idle connections instead of leaving them half-open.
pub(super) fn enable_keepalive(stream: &tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(30))
        .with_interval(std::time::Duration::from_secs(10));
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "TCP keepalive could not be enabled");
    }
}

/// A DSM call in flight: dropped before its answer (its request dropped because the caller
/// went away, README "Hardening"), it is counted with the outcome `cancelled`.
struct CallInFlight<'a> {
    client: &'a DsmClient,
    op: &'a Op,
    endpoint: &'a Endpoint,
    started: std::time::Instant,
    answered: bool,
}

impl<'a> CallInFlight<'a> {
    fn new(
        client: &'a DsmClient,
        op: &'a Op,
        endpoint: &'a Endpoint,
        started: std::time::Instant,
    ) -> Self {
        Self {
            client,
            op,
            endpoint,
            started,
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for CallInFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.client.record_outcome(
                self.op,
                self.endpoint,
                self.started,
                ("cancelled", None),
                None,
            );
        }
    }
}

/// Ends `body` with a timeout error when no chunk arrives for `idle`; `slot` is held until the
/// stream ends or is dropped.
/// Chunks of a download a caller may hold unread: with the ones in the socket's buffers, what
/// a caller that stopped reading keeps in memory.
const PUMPED_CHUNKS: usize = 4;

/// A download's body, moved by a task of its own: a chunk DSM does not send within `idle`, or
/// the caller does not take within `idle`, ends it, and the DSM call slot with it. Read in the
/// response alone, a caller that stopped reading (actix stops polling a body it cannot write)
/// held the slot for as long as it kept the connection open; eight such callers stopped every
/// other DSM call, the outbox's included.
fn pumped<S>(
    mut body: S,
    idle: std::time::Duration,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes>>
where
    S: futures_util::Stream<Item = Result<Bytes>> + Unpin + 'static,
{
    let (chunks, taken) = tokio::sync::mpsc::channel(PUMPED_CHUNKS);
    // awc's body is not `Send`: the task stays on this worker's thread.
    actix_web::rt::spawn(async move {
        let _slot = slot;
        loop {
            let next = tokio::time::timeout(idle, futures_util::StreamExt::next(&mut body));
            let chunk = tokio::select! {
                next = next => match next {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return,
                    Err(_) => Err(UpstreamError::Timeout),
                },
                // The caller went away while DSM was slow to send: the slot is not held for it.
                () = chunks.closed() => return,
            };
            let failed = chunk.is_err();
            // Not taken in time, or the caller went away: the download ends here.
            if chunks.send_timeout(chunk, idle).await.is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(taken, |mut taken| async move {
        taken.recv().await.map(|chunk| (chunk, taken))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_has_a_second_more_per_started_mib() {
        let upload = |len: usize| Upload {
            field: "file",
            file_name: "f".into(),
            content_type: "application/octet-stream".into(),
            bytes: Bytes::from(vec![0u8; len]),
        };
        assert_eq!(upload(0).allowance(), std::time::Duration::ZERO);
        assert_eq!(upload(1).allowance(), std::time::Duration::from_secs(1));
        assert_eq!(
            upload(32 * 1024 * 1024).allowance(),
            std::time::Duration::from_secs(32)
        );
        assert_eq!(wire_file_name("q\"x\r\n\\y\u{7}.txt"), "q%22x%0D%0A\\y.txt");
    }

    /// The plain pieces copied whole are encoded as form_urlencoded's serializer encodes them,
    /// and so is every other piece.
    #[test]
    fn fields_are_encoded_as_form_urlencoded_encodes_them() {
        let fields: &[(&str, &str)] = &[
            ("api", "SYNO.Chat.Post"),
            ("limit", "50"),
            ("text", "a b&c=d+e%f/g?h#i\u{e9}\u{1f600}*-._~'\"<>\n"),
            ("name with space", ""),
            ("_sid", "Ab-9_x.Y*"),
            ("one", "x~y"),
            ("two", "a/b"),
            ("three", "c d"),
        ];
        for prefix in [&[][..], &["http://nas:5000/webapi/entry.cgi", "?"][..]] {
            let expected = form_urlencoded::Serializer::new(prefix.concat())
                .extend_pairs(fields)
                .finish();
            let expected = match prefix {
                [] => expected,
                _ => expected.replacen("?&", "?", 1),
            };
            assert_eq!(url_encoded(prefix, &[&fields[..2], &fields[2..]]), expected);
        }
    }

    #[test]
    fn an_upload_is_encoded_around_the_file_without_copying_it() {
        let upload = Upload {
            field: "file",
            file_name: "a\"b\\c\\.txt".to_owned(),
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
        assert!(prefix.ends_with(
            "name=\"file\"; filename=\"a%22b\\c\\.txt\"\r\nContent-Type: text/plain\r\n\r\n"
        ));
        assert_eq!(
            suffix.as_ref(),
            format!("\r\n--{boundary}--\r\n").as_bytes()
        );
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
    fn forms_are_encoded_as_serde_urlencoded_encodes_them() {
        let control = [("api", "SYNO.Chat.Post"), ("method", "create")];
        let params = [("message", "100% & green + \"ü\"\n"), ("type", "normal")];
        let expected = serde_urlencoded::to_string([control.as_slice(), &params].concat()).unwrap();
        assert_eq!(url_encoded(&[], &[&control, &params]), expected);
        assert_eq!(url_encoded(&[], &[]), "");
        let url = url_encoded(
            &["http://nas/webapi/", "entry.cgi", "?"],
            &[&control, &params],
        );
        assert_eq!(url, format!("http://nas/webapi/entry.cgi?{expected}"));
    }
}
