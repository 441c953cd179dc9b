//! `Idempotency-Key` on every `/api/v1` write (POST, PUT, PATCH, DELETE), after the IETF
//! httpapi draft and Stripe: the first request with a key runs and its answer is kept; a repeat
//! with the same body gets that answer again (`Idempotent-Replayed: true`) without reaching DSM.
//!
//! One middleware on the `/api/v1` scope, not code in each handler. A request carrying the
//! header has its body read here once (hashed for the fingerprint) and handed on to the handler.
//! Transient failures (5xx, 429) are not kept: the key is released so the client can retry
//! (unless parts of a message were posted, or a resource created, before the failure: see
//! `PartlyDone`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::api::error::{ApiError, ProblemCode, STORE_RETRY_SECS, WithheldAnswer};
use crate::auth::{ApiKeys, Scope};
use crate::store::deliveries::EventKey;
use crate::store::idempotency::{Begin, IdempotencyScope, StoredResponse};
use crate::store::{Store, StoreError};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on an answer that is a replay of the first one.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
/// Seconds a client is told to wait before retrying a key that is still in flight.
const IN_FLIGHT_RETRY_SECS: u64 = 1;

/// Marks an answer that holds secrets in the named top-level JSON fields (a new integration's
/// `token`, a subscription's signing `secret`). Such an answer goes to the caller as it is, but
/// the gateway never keeps secrets at rest, so the idempotency record keeps it **without** those
/// fields and a repeat of the key gets 409 `idempotency_answer_withheld` (with that redacted
/// answer as `answer`) rather than a replay:
/// - replaying the secret would mean storing it for `idempotency.ttl_secs`;
/// - replaying a 2xx without it (or with a placeholder) would look like success to a client
///   that then has no usable token and may not notice until it sends;
/// - running the request again would create a second integration, which the key exists to
///   prevent.
///
/// The caller learns that the first request succeeded, what it created (`user_id`, `id`,
/// `Location`), and that the secret must be obtained again (delete and re-create, or read it in
/// DSM).
#[derive(Clone, Copy, Debug)]
pub struct SecretFields(pub &'static [&'static str]);

/// `response`, marked as holding secrets in `fields` (see [`SecretFields`]).
pub fn holds_secrets(mut response: HttpResponse, fields: &'static [&'static str]) -> HttpResponse {
    response.extensions_mut().insert(SecretFields(fields));
    response
}

/// `body` (a JSON object) without `fields`; anything else is not kept at all.
fn redacted(body: &[u8], fields: &[&str]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            for field in fields {
                map.remove(*field);
            }
            serde_json::to_vec(&map).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// The middleware's settings, as app data.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub ttl: Duration,
    pub lease: Duration,
    /// Largest body read for the fingerprint: the upload limit plus room for the form.
    pub max_body_bytes: usize,
}

/// Room for multipart boundaries, part headers and a caption next to an upload's file.
pub const FORM_OVERHEAD_BYTES: usize = 128 * 1024;

/// Headers of an answer that belong to that one exchange, not to the stored answer.
const NOT_STORED: [HeaderName; 5] = [
    header::DATE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    crate::telemetry::REQUEST_ID_HEADER,
];

fn bad_key(detail: &str) -> ApiError {
    ApiError::invalid(format!("the Idempotency-Key header {detail}"))
}

/// The key from the header: an RFC 8941 string (`"abc"`, as the draft says) or a bare value,
/// 1 to 255 printable ASCII characters. `None` without the header.
pub fn parse_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key("must be sent once"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad_key("must be printable ASCII"))?
        .trim();
    let key = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => unescape(quoted).ok_or_else(|| bad_key("is not a valid quoted string"))?,
        // A lone quote is a broken structured string, not part of a bare key.
        None if text.starts_with('"') => return Err(bad_key("is not a valid quoted string")),
        None => text.to_owned(),
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad_key(&format!(
            "must be 1 to {MAX_KEY_LEN} characters long"
        )));
    }
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(bad_key("must be printable ASCII"));
    }
    Ok(Some(key))
}

/// The inside of an RFC 8941 string: `\"` and `\\` are the only escapes, a bare `"` is refused.
fn unescape(quoted: &str) -> Option<String> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                e @ ('"' | '\\') => out.push(e),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Request headers holding a credential that chooses where a write goes: `X-Chat-Token` picks
/// the incoming webhook `POST /webhooks/incoming` posts through. The same key, body and another
/// token is another request (a different integration), so the token is part of the fingerprint;
/// only a SHA-256 of it, never the token itself, since the fingerprint is kept in the store.
const CREDENTIAL_HEADERS: [HeaderName; 1] = [HeaderName::from_static("x-chat-token")];

/// The SHA-256 of the credentials the request presents ([`CREDENTIAL_HEADERS`], normalized as
/// the routes read them), or `None` when it presents none.
fn credential_digest(headers: &HeaderMap) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut any = false;
    for name in &CREDENTIAL_HEADERS {
        for value in headers.get_all(name) {
            any = true;
            hash.update(name.as_str().as_bytes());
            hash.update(b":");
            match value.to_str() {
                Ok(text) => hash.update(crate::config::normalize_token(text.trim()).as_bytes()),
                Err(_) => hash.update(value.as_bytes()),
            }
            hash.update(b"\n");
        }
    }
    any.then(|| hash.finalize().into())
}

/// SHA-256 over content type, query string and body, and the digest of the request's
/// credential headers when it has any: a repeat must match them all. (A request without
/// credentials hashes exactly as before, so keys kept by an earlier version still replay;
/// the credential part starts with a NUL, which no content type can, so the two layouts
/// cannot collide.)
fn fingerprint(
    content_type: &str,
    query: &str,
    body: &[u8],
    credential: Option<&[u8; 32]>,
) -> String {
    let mut hash = Sha256::new();
    if let Some(digest) = credential {
        hash.update(b"\0credential:");
        hash.update(hex::encode(digest).as_bytes());
        hash.update(b"\n");
    }
    for part in [
        content_type.as_bytes(),
        b"\n",
        query.as_bytes(),
        b"\n",
        body,
    ] {
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "idempotency store unavailable");
            ApiError::new(
                ProblemCode::StoreUnavailable,
                "the Idempotency-Key cannot be checked: the gateway's store is unavailable",
            )
            .with_retry_after(STORE_RETRY_SECS)
        }
        other => other.into(),
    }
}

fn answer(req: ServiceRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    let response = error.error_response();
    req.into_response(response)
}

/// The middleware (on the `/api/v1` scope).
/// The requests the middleware looks at: those naming a key (a write to keep, or a bad key to
/// refuse). The rest pass it by.
pub fn concerns(req: &ServiceRequest) -> bool {
    req.headers().contains_key(IDEMPOTENCY_KEY)
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let is_write = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    // A read is idempotent already: its key, well-formed or not, changes nothing and is not
    // read (a malformed one is no reason to refuse a GET, and no GET documents a 400 for it).
    let parsed = if is_write {
        parse_key(req.headers())
    } else {
        Ok(None)
    };
    let key = match parsed {
        Ok(Some(key)) => key,
        Ok(None) => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
        Err(error) => return Ok(answer(req, error)),
    };
    let (Some(settings), Some(store)) = (
        req.app_data::<web::Data<Idempotency>>().cloned(),
        req.app_data::<web::Data<Store>>().cloned(),
    ) else {
        return Ok(answer(
            req,
            ApiError::new(ProblemCode::Internal, "idempotency is not configured"),
        ));
    };
    // The scope is the caller's identity. Without one that may write (no key, a bad one, a
    // read key) the handler answers 401/403 itself: such an answer is nobody's to keep, and
    // its body is not read here (a read key must not make the gateway hold an upload's bytes).
    let caller = match req.app_data::<web::Data<ApiKeys>>() {
        Some(keys) => match keys.authorize(req.request(), Scope::Write) {
            Ok(name) => name.as_deref().unwrap_or_default().to_owned(),
            Err(_) => {
                return next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body);
            }
        },
        None => String::new(),
    };

    // Read the body once: hashed here, then handed on to the handler unchanged. Only an upload
    // (a multipart form) may be as large as the upload limit; any other body is JSON, whose
    // limit is far smaller.
    let is_upload = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
        });
    let max_body_bytes = if is_upload {
        settings.max_body_bytes
    } else {
        super::extract::JSON_LIMIT.min(settings.max_body_bytes)
    };
    // An upload's bytes are held from here until DSM answers: its place among the uploads at
    // once (`server.max_concurrent_uploads`) is taken before they are read, not after, and
    // handed to the handler.
    if is_upload && let Some(state) = req.app_data::<super::State>() {
        match state.uploads.clone().try_acquire_owned() {
            Ok(permit) => {
                req.extensions_mut().insert(super::UploadPermit(permit));
            }
            Err(_) => return Ok(answer(req, super::posts::uploads_busy())),
        }
    }
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            let error = crate::body_deadline::read_failed(
                req.request(),
                ApiError::invalid("the request body could not be read"),
            );
            return Ok(answer(req, error));
        };
        if body.len() + chunk.len() > max_body_bytes {
            return Ok(answer(
                req,
                ApiError::new(
                    ProblemCode::PayloadTooLarge,
                    format!("the body exceeds {max_body_bytes} bytes"),
                ),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let credential = credential_digest(req.headers());
    let print = fingerprint(content_type, req.query_string(), &body, credential.as_ref());
    let (_, mut handed_on) = actix_http::h1::Payload::create(true);
    handed_on.unread_data(body);
    req.set_payload(handed_on.into());

    let scope = IdempotencyScope {
        caller,
        method: req.method().as_str().to_owned(),
        path: req.path().to_owned(),
        key,
    };
    let owner = uuid::Uuid::new_v4().to_string();
    let lease_ms = settings.lease.as_millis() as i64;
    let ttl_ms = settings.ttl.as_millis() as i64;
    let began = now_ms();
    match store
        .idempotency_begin(&scope, &print, &owner, began, lease_ms, ttl_ms)
        .await
    {
        Err(error) => return Ok(answer(req, store_error(error))),
        Ok(Begin::Reused) => {
            return Ok(answer(
                req,
                ApiError::new(
                    ProblemCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request (another body, content type, query or X-Chat-Token); use a new key for a new request",
                ),
            ));
        }
        Ok(Begin::InFlight) => {
            return Ok(answer(
                req,
                ApiError::new(
                    ProblemCode::IdempotencyKeyInFlight,
                    "the first request with this Idempotency-Key is still running; retry later",
                )
                .with_retry_after(IN_FLIGHT_RETRY_SECS),
            ));
        }
        Ok(Begin::Replay(stored)) => return Ok(req.into_response(replay(stored))),
        Ok(Begin::Started { interrupted_since }) => {
            let mut extensions = req.extensions_mut();
            if let Some(since_ms) = interrupted_since {
                tracing::warn!(
                    "an earlier attempt with this Idempotency-Key ended without an answer; it is taken over"
                );
                extensions.insert(InterruptedAttempt { since_ms });
            }
            extensions.insert(KeyedRequest {
                delivery_key: EventKey {
                    key: delivery_key(&scope),
                    since_ms: Some(interrupted_since.unwrap_or(began)),
                },
            });
        }
    }

    let lease = Lease {
        held_until: Arc::new(AtomicI64::new(began.saturating_add(lease_ms))),
        length_ms: lease_ms,
    };
    let claim = Claim {
        tasks: req
            .app_data::<web::Data<crate::front_door::RequestTasks>>()
            .cloned(),
        interrupted: req.extensions().contains::<InterruptedAttempt>(),
        store,
        scope,
        owner,
        held: true,
        lease: lease.clone(),
    };
    run_to_the_end(async move {
        // The lease is renewed while the request runs (a long message paced through DSM's
        // rate limit can outlast it): a retry meanwhile gets 409, never a second run beside it.
        let handler = LEASE.scope(lease, next.call(req));
        tokio::pin!(handler);
        let renew_every = settings.lease / 3;
        let response = loop {
            tokio::select! {
                response = &mut handler => break response,
                () = tokio::time::sleep(renew_every) => claim.renew(lease_ms).await,
            }
        };
        claim.settle(response, settings.ttl).await
    })
    .await
}

/// On every request that holds its key: what a message it hands to the outbox is committed
/// under, so that a retry of a request cut off after the handover finds that delivery again
/// instead of queuing the message twice (the key, per caller, from when the first attempt
/// with it began; an earlier use of the key that expired is another request).
#[derive(Clone, Debug)]
pub struct KeyedRequest {
    pub delivery_key: EventKey,
}

/// A digest of the method, path and key: the deliveries' `event_key`, which is per caller.
fn delivery_key(scope: &IdempotencyScope) -> String {
    let mut hash = Sha256::new();
    for part in [&scope.method, &scope.path, &scope.key] {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    format!("idempotency-key:{}", hex::encode(hash.finalize()))
}

/// On a request whose key an earlier attempt held, with the same body, that ended without an
/// answer (the gateway died or stopped while it ran): it began at `since_ms` and may have
/// carried out part of its work. A route that can find out what it did (a channel post looks
/// for its parts in the channel) does so before acting again; the others run again.
#[derive(Clone, Copy, Debug)]
pub struct InterruptedAttempt {
    pub since_ms: i64,
}

/// Runs a keyed request to its end in a task of its own, so a client that goes away does not
/// cut it off part way (a message half posted, a post made whose answer nobody keeps): its
/// answer is kept for the retry, which meanwhile gets 409 `idempotency_key_in_flight`.
async fn run_to_the_end<F>(run: F) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    F: std::future::Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let request = crate::telemetry::current_request();
    let run = async move {
        // Error bodies rendered and lines logged inside name the request, as they would on its
        // own task.
        let response = match request {
            Some(info) => crate::telemetry::serving(info, run).await,
            None => run.await,
        };
        // Nobody waits when the client went away: the answer was kept, which is what counts.
        let _ = answer.send(response);
    };
    crate::store::task::spawn(run);
    answered.await.unwrap_or_else(|_| {
        // The task was dropped: the gateway is stopping. The claim lapses, so the retry takes
        // it over.
        Err(ApiError::new(
            ProblemCode::NotReady,
            "the gateway stopped while the request ran; retry it with the same Idempotency-Key",
        )
        .with_retry_after(IN_FLIGHT_RETRY_SECS)
        .into())
    })
}

/// The stored answer again, marked as a replay.
fn replay(stored: StoredResponse) -> HttpResponse {
    if stored.withheld {
        return withheld(stored);
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.append_header((name, value));
        }
    }
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    response.body(stored.body)
}

/// The answer to a repeat whose first answer held a secret: 409 `idempotency_answer_withheld`,
/// with the kept answer (without its secret) as the extension member `answer`.
fn withheld(stored: StoredResponse) -> HttpResponse {
    let error = ApiError::new(
        ProblemCode::IdempotencyAnswerWithheld,
        format!(
            "the request with this Idempotency-Key already ran and answered {}; that answer held a secret, which the gateway shows once and does not keep. `answer` is the answer without it: to get a secret again, delete what was created and create it anew (or read it in DSM)",
            stored.status
        ),
    );
    let mut problem = error.problem();
    problem.answer = Some(WithheldAnswer {
        status: stored.status,
        location: stored
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("location"))
            .map(|(_, location)| location.clone()),
        body: serde_json::from_slice(&stored.body).unwrap_or_default(),
    });
    HttpResponse::build(error.code().status())
        .content_type(crate::api::error::PROBLEM_JSON)
        .insert_header((IDEMPOTENT_REPLAYED, "true"))
        .body(serde_json::to_vec(&problem).unwrap_or_default())
}

tokio::task_local! {
    /// The lease of the `Idempotency-Key` the running request holds ([`step_allowed`]).
    static LEASE: Lease;
}

/// A running request's lease, as the store last confirmed it.
#[derive(Clone)]
struct Lease {
    /// Until when (Unix milliseconds); 0 once another attempt took the key over.
    held_until: Arc<AtomicI64>,
    length_ms: i64,
}

/// Whether the running request may start another step it cannot take back (the next part of a
/// long message): always without an `Idempotency-Key`, and while at least a third of its key's
/// lease is left with one. Renewals come every third of the lease, so a request whose store
/// answers never falls below two thirds; one that has missed renewals (the store unreachable)
/// stops before its lease can lapse and a retry take the message over while parts of it are
/// still being posted. The third left covers the part being posted (`upstream.timeout_ms` is
/// far shorter than the default two-minute lease).
pub(crate) fn step_allowed() -> bool {
    LEASE
        .try_with(|lease| {
            let until = lease.held_until.load(Ordering::Relaxed);
            now_ms() < until.saturating_sub(lease.length_ms / 3)
        })
        .unwrap_or(true)
}

/// Whether the request failed on a store that did not answer: what it wrote may be there.
fn store_may_have_written<B>(response: &ServiceResponse<B>) -> bool {
    response
        .response()
        .error()
        .and_then(|error| error.as_error::<ApiError>())
        .is_some_and(|error| error.code() == ProblemCode::StoreUnavailable)
}

/// A key held by the running request. Dropped while still held (the gateway stopped while the
/// request ran), its lease is ended at once, so a retry takes it over and is told that this
/// attempt may have carried out part of its work ([`InterruptedAttempt`]).
struct Claim {
    store: web::Data<Store>,
    scope: IdempotencyScope,
    owner: String,
    held: bool,
    /// A retry of a cut-off attempt ([`InterruptedAttempt`]): a failure abandons the claim
    /// rather than releasing it, since what the first attempt did is still unknown.
    interrupted: bool,
    /// What the request's steps check ([`step_allowed`]): moved on by each renewal.
    lease: Lease,
    /// Whether the gateway began to stop: then a claim dropped unfinished is left to lapse.
    tasks: Option<web::Data<crate::front_door::RequestTasks>>,
}

impl Claim {
    /// Keeps the answer, or releases the key when the answer is transient.
    async fn settle<B: MessageBody + 'static>(
        mut self,
        response: Result<ServiceResponse<B>, actix_web::Error>,
        ttl: Duration,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                self.give_back().await;
                return Err(error);
            }
        };
        let status = response.status();
        // No route took the request (an unknown path or method): nothing ran, keep nothing.
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || (status == StatusCode::NOT_FOUND && response.request().match_pattern().is_none());
        // A failure a retry may get past is released, unless parts of the message were posted
        // or a resource created before it: running the request again would do that twice.
        let transient = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let partly_done = response
            .response()
            .extensions()
            .get::<super::error::PartlyDone>()
            .is_some();
        // A store that did not answer in time may still have committed the write (the
        // deadline drops a commit in flight): a retry takes the key over as an interrupted
        // attempt, so it finds a delivery stored meanwhile instead of storing a second one.
        if transient && store_may_have_written(&response) {
            self.abandon().await;
            return Ok(response.map_into_boxed_body());
        }
        if unrouted
            || (transient && !partly_done)
            || !(status.is_success() || status.is_client_error() || transient)
        {
            self.give_back().await;
            return Ok(response.map_into_boxed_body());
        }
        let secrets = response
            .response()
            .extensions()
            .get::<SecretFields>()
            .copied();
        let (req, response) = response.into_parts();
        let (head, body) = response.into_parts();
        let Ok(bytes) = actix_web::body::to_bytes(body).await else {
            // The request ran, and what it did is not known from here: a retry is told so.
            self.abandon().await;
            let error = ApiError::new(ProblemCode::Internal, "the answer could not be read");
            return Ok(answer_for(req, error));
        };
        let headers = head
            .headers()
            .iter()
            .filter(|(name, _)| !NOT_STORED.contains(name) && **name != IDEMPOTENT_REPLAYED)
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        // Secrets are never kept: such an answer is stored without them (see `SecretFields`).
        let stored = StoredResponse {
            status: status.as_u16(),
            headers,
            body: match secrets {
                Some(SecretFields(fields)) => redacted(&bytes, fields),
                None => bytes.to_vec(),
            },
            withheld: secrets.is_some(),
        };
        let expires_at = now_ms().saturating_add(ttl.as_millis() as i64);
        match self
            .store
            .idempotency_finish(&self.scope, &self.owner, &stored, expires_at)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the request outlived its Idempotency-Key lease; its answer is not kept"
                )
            }
            // The work is done and its answer goes out; the key stays claimed until its lease
            // ends, so a retry within the lease gets 409 rather than a second run.
            Err(error) => {
                tracing::warn!(%error, "the answer to an Idempotency-Key request could not be kept")
            }
        }
        self.held = false;
        let response = head.set_body(bytes).map_into_boxed_body();
        Ok(ServiceResponse::new(req, response))
    }

    /// Extends the lease to `lease_ms` from now.
    async fn renew(&self, lease_ms: i64) {
        let until = now_ms().saturating_add(lease_ms);
        match self
            .store
            .idempotency_renew(&self.scope, &self.owner, until)
            .await
        {
            Ok(true) => self.lease.held_until.store(until, Ordering::Relaxed),
            Ok(false) => {
                self.lease.held_until.store(0, Ordering::Relaxed);
                tracing::warn!("an Idempotency-Key's lease was lost while its request ran")
            }
            Err(error) => {
                tracing::warn!(%error, "an Idempotency-Key's lease could not be renewed")
            }
        }
    }

    /// Lets a retry run: releases the key, or for a retry of a cut-off attempt that failed in
    /// turn ends the lease and keeps the claim, so the next retry is told as well.
    async fn give_back(&mut self) {
        if self.interrupted {
            self.abandon().await;
        } else {
            self.release().await;
        }
    }

    /// Ends the lease, keeping the claim: see [`Store::idempotency_abandon`].
    async fn abandon(&mut self) {
        self.held = false;
        if let Err(error) = self
            .store
            .idempotency_abandon(&self.scope, &self.owner, now_ms())
            .await
        {
            tracing::warn!(%error, "an Idempotency-Key could not be given back; it frees itself when its lease ends");
        }
    }

    async fn release(&mut self) {
        self.held = false;
        if let Err(error) = self
            .store
            .idempotency_release(&self.scope, &self.owner)
            .await
        {
            tracing::warn!(%error, "an Idempotency-Key could not be released; it frees itself when its lease ends");
        }
    }
}

fn answer_for(req: actix_web::HttpRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    ServiceResponse::new(req, error.error_response())
}

impl Drop for Claim {
    fn drop(&mut self) {
        // No runtime, or the gateway stopping (dropped with its worker, where spawning
        // panics): the lease lapses by itself.
        let stopping = self.tasks.as_ref().is_some_and(|tasks| tasks.stopping());
        if self.held && !stopping && tokio::runtime::Handle::try_current().is_ok() {
            let store = self.store.clone();
            let scope = self.scope.clone();
            let owner = std::mem::take(&mut self.owner);
            crate::store::task::spawn(async move {
                let _ = store.idempotency_abandon(&scope, &owner, now_ms()).await;
            });
        }
    }
}

/// What [`parse_key`] accepts, as a schema: a bare key (not starting with `"`) or an RFC 8941
/// string, in printable ASCII; so clients and contract tests send only keys the gateway takes.
fn key_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_LEN))
        .pattern(Some(r#"^(?:[!#-~][ -~]*|"(?:[ !#-\[\]-~]|\\["\\])+")$"#))
        .build()
}

/// Documents the header once for every `/api/v1` write operation: the `Idempotency-Key`
/// parameter, the 409/422 problems, and `Idempotent-Replayed` on success answers, all as
/// references to shared components.
pub fn document(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required};

    let string = |max: Option<usize>| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(max.map(|_| 1))
            .max_length(max)
            .build()
    };
    let problem = |description: &str, retry_after: bool| {
        let mut response = ResponseBuilder::new().description(description).content(
            crate::api::error::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if retry_after {
            response = response.header(
                "Retry-After",
                // An integer, as `components.headers.Retry-After` has it.
                HeaderBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new().schema_type(Type::Integer).build(),
                    ))
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            );
        }
        response.build()
    };
    let components = api.components.get_or_insert_with(Default::default);
    components.parameters.insert(
        "IdempotencyKey".into(),
        RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes the write safe to retry: the first request with a key runs and its \
                     answer (2xx or 4xx) is kept for `idempotency.ttl_secs` (default 24 h), per \
                     API key, method and path; a repeat with the same body gets that answer again \
                     with `Idempotent-Replayed: true` and does not reach DSM. 1 to 255 printable \
                     ASCII characters, bare or as a quoted string (`\"8e03…\"`); a UUID is a good \
                     choice. 5xx and 429 answers are not kept (retry them with the same key), except one that \
                     reports `parts_posted`: parts of the message were posted, and a retry gets that \
                     answer again instead of posting them twice.",
                ))
                .schema(Some(key_schema()))
                .build(),
        ),
    );
    components.headers.insert(
        "IdempotentReplayed".into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(string(None)))
                .description(Some(
                    "`true` when this is the kept answer to an earlier request with the same Idempotency-Key",
                ))
                .build(),
        ),
    );
    // Inline (not `$ref`) so the shared headers (X-Request-Id, Retry-After) are added to them.
    let in_flight = problem(
        "`idempotency_key_in_flight`: the first request with this Idempotency-Key is still running (see `Retry-After`); or `idempotency_answer_withheld`: it already ran, and its answer held a secret (an integration's `token` or a subscription's signing `secret`), which is not kept or replayed (the problem's `answer` is that answer without it)",
        true,
    );
    let reused = problem(
        "`idempotency_key_reused`: the Idempotency-Key was used with a different request (body, content type, query or `X-Chat-Token`)",
        false,
    );
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let writes = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in writes.into_iter().flatten() {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(RefOr::Ref(Ref::new(
                    "#/components/parameters/IdempotencyKey",
                )));
            let responses = &mut operation.responses.responses;
            for (status, own, also) in [
                (
                    "409",
                    Some(&in_flight),
                    "Or `idempotency_key_in_flight`: the first request with this Idempotency-Key is still running (see `Retry-After`); or `idempotency_answer_withheld`: it already ran and its answer held a secret, which is not kept (`answer` is that answer without it).",
                ),
                (
                    "422",
                    Some(&reused),
                    "Or `idempotency_key_reused`: the Idempotency-Key was used with a different request (body, content type, query or `X-Chat-Token`).",
                ),
                (
                    "503",
                    None,
                    "Or `store_unavailable`: a request with an Idempotency-Key while the store is unavailable (see `Retry-After`).",
                ),
            ] {
                match responses.get_mut(status) {
                    Some(RefOr::T(existing)) => {
                        existing.description =
                            format!("{} {also}", existing.description.trim_end());
                    }
                    Some(RefOr::Ref(_)) => {}
                    None if own.is_some() => {
                        responses.insert(status.into(), RefOr::T(own.cloned().unwrap_or_default()));
                    }
                    None => {
                        responses.insert(
                            status.into(),
                            RefOr::T(problem(also.trim_start_matches("Or "), true)),
                        );
                    }
                }
            }
            // A body is read to compare repeats, also for operations that take none.
            for (status, kept) in [
                (
                    "408",
                    problem(
                        "`request_timeout`: with an Idempotency-Key the body is read before the request runs, and it paused for longer than `server.body_timeout_ms`; the connection is closed",
                        false,
                    ),
                ),
                (
                    "413",
                    problem(
                        "`payload_too_large`: with an Idempotency-Key the body is read before the request runs, and it is larger than 256 KiB",
                        false,
                    ),
                ),
            ] {
                responses.entry(status.into()).or_insert(RefOr::T(kept));
            }
            // Kept answers, 2xx and 4xx, are replayed with the header, and so is the withheld
            // answer's 409; 429 is never kept.
            for (status, response) in responses.iter_mut() {
                if (status.starts_with('2') || status.starts_with('4'))
                    && status != "429"
                    && let RefOr::T(response) = response
                {
                    response.headers.insert(
                        "Idempotent-Replayed".into(),
                        RefOr::Ref(Ref::new("#/components/headers/IdempotentReplayed")),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(raw: &str) -> Result<Option<String>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(raw).unwrap());
        parse_key(&headers)
    }

    #[test]
    fn keys_are_bare_or_structured_strings_of_printable_ascii() {
        assert_eq!(key_of("abc-123").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(key_of("\"8e03 x\"").unwrap().as_deref(), Some("8e03 x"));
        assert_eq!(key_of(r#""a\"b\\c""#).unwrap().as_deref(), Some(r#"a"b\c"#));
        assert_eq!(key_of(&"k".repeat(255)).unwrap().unwrap().len(), 255);
        for bad in [
            "",
            "\"\"",
            &"k".repeat(256),
            "tab\there",
            r#""bad\escape""#,
            r#""in"side""#,
            "\"unterminated",
        ] {
            let error = key_of(bad).unwrap_err();
            assert_eq!(error.code(), ProblemCode::InvalidRequest, "{bad:?}");
            assert!(error.to_string().contains("Idempotency-Key"), "{error}");
        }
        assert_eq!(parse_key(&HeaderMap::new()).unwrap(), None);
        let mut twice = HeaderMap::new();
        twice.append(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        twice.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        assert!(parse_key(&twice).is_err());
        let mut binary = HeaderMap::new();
        binary.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        assert!(parse_key(&binary).is_err());
    }

    #[test]
    fn the_fingerprint_covers_content_type_query_and_body() {
        let base = fingerprint("application/json", "", b"{}", None);
        assert_eq!(base, fingerprint("application/json", "", b"{}", None));
        assert_ne!(base, fingerprint("text/plain", "", b"{}", None));
        assert_ne!(base, fingerprint("application/json", "a=1", b"{}", None));
        assert_ne!(base, fingerprint("application/json", "", b"{ }", None));
        assert_eq!(base.len(), 64);
        // Unchanged for requests without credentials: records kept before still replay.
        assert_eq!(base, hex::encode(Sha256::digest(b"application/json\n\n{}")));
    }

    #[test]
    fn the_fingerprint_covers_a_hash_of_the_chat_token() {
        let with = |token: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_static("x-chat-token"),
                HeaderValue::from_str(token).unwrap(),
            );
            credential_digest(&headers)
        };
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(credential_digest(&HeaderMap::new()), None);
        let print = |t: &str| fingerprint("application/json", "", b"{}", with(t).as_ref());
        assert_ne!(print(&a), print(&b));
        assert_ne!(print(&a), fingerprint("application/json", "", b"{}", None));
        // The same token as the route reads it (quoted as copied from Chat) is the same request.
        assert_eq!(print(&a), print(&format!("\"{a}\"")));
        assert_eq!(print(&a), print(&format!("%22{a}%22")));
    }
}
