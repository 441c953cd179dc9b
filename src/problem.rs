//! The gateway's one error type and its tables: every failure is answered (by the HTTP face,
//! [`crate::api::error`]) and kept (as a delivery's `last_error`, by the outbox) as an RFC 9457
//! problem document with a stable `code`, the request id and, when DSM refused, the DSM error
//! number.
//!
//! The tables from a failure to its answer live here: [`ProblemCode::spec`] (problem code →
//! HTTP status and title), [`problem_for`] (what DSM's refusal means → problem code; the
//! numbers are read in `upstream`, [`Refusal::of`]) and the store's failures
//! (`From<StoreError>`).

use actix_web::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::telemetry;
use crate::upstream::{ApiFamily, Refusal, UpstreamError};

/// Stable, machine-readable problem codes. The `type` URI of a problem is derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ProblemCode {
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized,
    InsufficientScope,
    RouteNotFound,
    MethodNotAllowed,
    NotFound,
    Conflict,
    Unprocessable,
    UpstreamPermissionDenied,
    UpstreamTokenRejected,
    ChatTokenRejected,
    UpstreamRejectedInput,
    UpstreamContractError,
    MessageTooLong,
    UpstreamRateLimited,
    UpstreamApiUnsupported,
    UpstreamLoginFailed,
    UpstreamLoginBlocked,
    UpstreamLoginBackoff,
    UpstreamBusy,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamInvalidResponse,
    UpstreamError,
    NotReady,
    Internal,
    UploadsBusy,
    RateLimited,
    CrossSiteRequest,
    MisdirectedRequest,
    StoreUnavailable,
    DeliveryExpired,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    IdempotencyAnswerWithheld,
    InboundTokenRejected,
    SubscriptionUrlRefused,
    SubscriptionDeliveryFailed,
    FileTooLarge,
    RequestTimeout,
    HooksBusy,
    OutboxAhead,
}

impl ProblemCode {
    /// Every code, in declaration order (the README's error table lists exactly these).
    pub const ALL: [ProblemCode; 44] = [
        ProblemCode::InvalidRequest,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::PayloadTooLarge,
        ProblemCode::Unauthorized,
        ProblemCode::InsufficientScope,
        ProblemCode::RouteNotFound,
        ProblemCode::MethodNotAllowed,
        ProblemCode::NotFound,
        ProblemCode::Conflict,
        ProblemCode::Unprocessable,
        ProblemCode::UpstreamPermissionDenied,
        ProblemCode::UpstreamTokenRejected,
        ProblemCode::ChatTokenRejected,
        ProblemCode::UpstreamRejectedInput,
        ProblemCode::UpstreamContractError,
        ProblemCode::MessageTooLong,
        ProblemCode::UpstreamRateLimited,
        ProblemCode::UpstreamApiUnsupported,
        ProblemCode::UpstreamLoginFailed,
        ProblemCode::UpstreamLoginBlocked,
        ProblemCode::UpstreamLoginBackoff,
        ProblemCode::UpstreamBusy,
        ProblemCode::UpstreamUnreachable,
        ProblemCode::UpstreamTimeout,
        ProblemCode::UpstreamInvalidResponse,
        ProblemCode::UpstreamError,
        ProblemCode::NotReady,
        ProblemCode::Internal,
        ProblemCode::UploadsBusy,
        ProblemCode::RateLimited,
        ProblemCode::CrossSiteRequest,
        ProblemCode::MisdirectedRequest,
        ProblemCode::StoreUnavailable,
        ProblemCode::DeliveryExpired,
        ProblemCode::IdempotencyKeyReused,
        ProblemCode::IdempotencyKeyInFlight,
        ProblemCode::IdempotencyAnswerWithheld,
        ProblemCode::InboundTokenRejected,
        ProblemCode::SubscriptionUrlRefused,
        ProblemCode::SubscriptionDeliveryFailed,
        ProblemCode::FileTooLarge,
        ProblemCode::RequestTimeout,
        ProblemCode::HooksBusy,
        ProblemCode::OutboxAhead,
    ];

    /// Its place in [`Self::ALL`]; the match makes a new variant a compile error until it is
    /// added there (checked by the tests).
    pub const fn index(self) -> usize {
        use ProblemCode::*;
        match self {
            InvalidRequest => 0,
            UnsupportedMediaType => 1,
            PayloadTooLarge => 2,
            Unauthorized => 3,
            InsufficientScope => 4,
            RouteNotFound => 5,
            MethodNotAllowed => 6,
            NotFound => 7,
            Conflict => 8,
            Unprocessable => 9,
            UpstreamPermissionDenied => 10,
            UpstreamTokenRejected => 11,
            ChatTokenRejected => 12,
            UpstreamRejectedInput => 13,
            UpstreamContractError => 14,
            MessageTooLong => 15,
            UpstreamRateLimited => 16,
            UpstreamApiUnsupported => 17,
            UpstreamLoginFailed => 18,
            UpstreamLoginBlocked => 19,
            UpstreamLoginBackoff => 20,
            UpstreamBusy => 21,
            UpstreamUnreachable => 22,
            UpstreamTimeout => 23,
            UpstreamInvalidResponse => 24,
            UpstreamError => 25,
            NotReady => 26,
            Internal => 27,
            UploadsBusy => 28,
            RateLimited => 29,
            CrossSiteRequest => 30,
            MisdirectedRequest => 31,
            StoreUnavailable => 32,
            DeliveryExpired => 33,
            IdempotencyKeyReused => 34,
            IdempotencyKeyInFlight => 35,
            IdempotencyAnswerWithheld => 36,
            InboundTokenRejected => 37,
            SubscriptionUrlRefused => 38,
            SubscriptionDeliveryFailed => 39,
            FileTooLarge => 40,
            RequestTimeout => 41,
            HooksBusy => 42,
            OutboxAhead => 43,
        }
    }

    /// The one table from problem code to HTTP status, stable code string and title.
    pub const fn spec(self) -> (StatusCode, &'static str, &'static str) {
        use ProblemCode::*;
        match self {
            InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is not valid",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body has an unsupported content type",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time",
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid API key is required",
            ),
            InsufficientScope => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "The API key lacks the required scope",
            ),
            RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", "No such route"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed on this route",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "No such resource"),
            Unprocessable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "The request is well formed but cannot be carried out",
            ),
            Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "The request conflicts with the resource's state",
            ),
            UpstreamPermissionDenied => (
                StatusCode::FORBIDDEN,
                "upstream_permission_denied",
                "DSM denied the gateway's account access to this resource",
            ),
            UpstreamTokenRejected => (
                StatusCode::BAD_GATEWAY,
                "upstream_token_rejected",
                "DSM rejected the integration token (unknown, disabled, or not allowed for this method)",
            ),
            ChatTokenRejected => (
                StatusCode::FORBIDDEN,
                "chat_token_rejected",
                "DSM rejected the Chat token sent with the request (unknown, disabled, or not an incoming-webhook token)",
            ),
            UpstreamRejectedInput => (
                StatusCode::BAD_REQUEST,
                "upstream_rejected_input",
                "DSM rejected the request's input",
            ),
            UpstreamContractError => (
                StatusCode::BAD_GATEWAY,
                "upstream_contract_error",
                "DSM rejected the request the gateway sent",
            ),
            MessageTooLong => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_long",
                "The message is too long",
            ),
            UpstreamRateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                "DSM is rate-limiting these requests",
            ),
            UpstreamApiUnsupported => (
                StatusCode::NOT_IMPLEMENTED,
                "upstream_api_unsupported",
                "The NAS does not offer the API this route needs",
            ),
            UpstreamLoginFailed => (
                StatusCode::BAD_GATEWAY,
                "upstream_login_failed",
                "The gateway could not log in to DSM",
            ),
            UpstreamLoginBlocked => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_login_blocked",
                "DSM is not accepting the gateway's login for now",
            ),
            UpstreamLoginBackoff => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_login_backoff",
                "The gateway is waiting before it tries to log in to DSM again",
            ),
            UpstreamBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                "DSM is busy",
            ),
            UpstreamUnreachable => (
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "DSM could not be reached",
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "DSM did not answer in time",
            ),
            UpstreamInvalidResponse => (
                StatusCode::BAD_GATEWAY,
                "upstream_invalid_response",
                "DSM sent an answer the gateway could not read",
            ),
            UpstreamError => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "DSM refused the request",
            ),
            NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "The gateway is not ready",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
            UploadsBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "uploads_busy",
                "Too many uploads are in progress",
            ),
            HooksBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "hooks_busy",
                "Too many hook bodies are being read at once",
            ),
            OutboxAhead => (
                StatusCode::SERVICE_UNAVAILABLE,
                "outbox_ahead",
                "Earlier messages to this channel are still in the outbox",
            ),
            RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests from this API key or address",
            ),
            CrossSiteRequest => (
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "Cross-site requests are refused while API keys are not required",
            ),
            MisdirectedRequest => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "The request's Host is not this gateway's public host",
            ),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "The Idempotency-Key was already used with a different request body",
            ),
            IdempotencyKeyInFlight => (
                StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "A request with this Idempotency-Key is still being processed",
            ),
            IdempotencyAnswerWithheld => (
                StatusCode::CONFLICT,
                "idempotency_answer_withheld",
                "The request with this Idempotency-Key already ran; its answer held a secret, which is not kept",
            ),
            StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The gateway's store is unavailable",
            ),
            DeliveryExpired => (
                StatusCode::GATEWAY_TIMEOUT,
                "delivery_expired",
                "The message could not be delivered within delivery.max_age_secs",
            ),
            InboundTokenRejected => (
                StatusCode::FORBIDDEN,
                "inbound_token_rejected",
                "The token Chat sent does not match the inbound's configured token",
            ),
            SubscriptionUrlRefused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "subscription_url_refused",
                "The subscription URL points inside the gateway's network",
            ),
            SubscriptionDeliveryFailed => (
                StatusCode::BAD_GATEWAY,
                "subscription_delivery_failed",
                "The subscription's receiver did not accept the delivery",
            ),
            FileTooLarge => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "file_too_large",
                "DSM refused the file_url's file as larger than it accepts (32 MB)",
            ),
        }
    }

    pub const fn status(self) -> StatusCode {
        self.spec().0
    }

    pub const fn as_str(self) -> &'static str {
        self.spec().1
    }
}

/// The one table from what DSM's refusal means ([`Refusal`], read from its number in the
/// family that answered) to a problem code. Session errors 106/107/150 reach it only after the
/// pool has logged in again once and the retry failed the same way; 105/119 once the session was
/// checked and found alive (they also refuse what the account may not do), or after such a new
/// login.
pub fn problem_for(refusal: Refusal) -> ProblemCode {
    use ProblemCode::*;
    match refusal {
        Refusal::LoginBlocked => UpstreamLoginBlocked,
        Refusal::OtpRequired | Refusal::OtpWrong | Refusal::LoginFailed => UpstreamLoginFailed,
        Refusal::NoSuchApi | Refusal::NoSuchMethod => UpstreamApiUnsupported,
        Refusal::Busy => UpstreamBusy,
        // `External`'s 117: the caller's `file_url`. Not 101 or 120 (payload empty, missing or
        // malformed): the gateway writes the whole payload, so those are its own mistake.
        Refusal::PayloadRefused | Refusal::PayloadRecordInvalid => UpstreamRejectedInput,
        Refusal::BotNotInChannel | Refusal::PermissionDenied => UpstreamPermissionDenied,
        Refusal::TokenRejected => UpstreamTokenRejected,
        // The file behind `file_url` is over DSM's limit (PROTOCOL.md [C2], [C3]).
        Refusal::FileTooLarge => FileTooLarge,
        Refusal::TooLong => MessageTooLong,
        Refusal::RateLimited => UpstreamRateLimited,
        Refusal::GatewayMistake => UpstreamContractError,
        // What only the operation can tell apart, or no source explains.
        Refusal::SessionLost
        | Refusal::NotAllowedOrMissing
        | Refusal::InvalidRecord
        | Refusal::RecordRefused
        | Refusal::NasFailed
        | Refusal::Unknown => UpstreamError,
    }
}

#[cfg(test)]
fn problem_for_dsm(family: ApiFamily, code: i64) -> ProblemCode {
    problem_for(Refusal::of(family, code))
}

/// The request path as a problem names it: at most 1024 bytes, then `…`.
fn clipped_path(path: &str) -> String {
    const KEPT: usize = 1024;
    match path.len() <= KEPT {
        true => path.to_owned(),
        false => {
            let end = (0..=KEPT)
                .rev()
                .find(|&i| path.is_char_boundary(i))
                .unwrap_or(0);
            format!("{}…", &path[..end])
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "urn:syno-chat-gateway:problem:invalid_request",
    "title": "The request is not valid", "status": 400, "detail": "channel_id must be a positive integer",
    "instance": "/api/v1/channels/abc", "code": "invalid_request",
    "request_id": "6f1c2b8e-0d1a-4c3e-9f10-2b7d9a1e5c44"}))]
pub struct Problem {
    /// `urn:syno-chat-gateway:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request path that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code (see the README's error table).
    #[schema(value_type = ProblemCode)]
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The error number DSM answered with, when DSM refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsm_code: Option<i64>,
    /// A long message sent as several posts that failed midway: how many of its parts were
    /// posted before the failure. They stay posted; sending the whole text again repeats them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts_posted: Option<usize>,
    /// The ids of those posts, where DSM names them (not for incoming webhooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_ids: Option<Vec<u64>>,
    /// The URL of what the request created before it failed (a channel whose members could
    /// not be invited): it exists, and sending the request again would create another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// With `idempotency_answer_withheld`: the first answer to the Idempotency-Key, without
    /// the secret it held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<WithheldAnswer>,
    /// Only on `/webapi/entry.cgi` (Synology Chat's own incoming-webhook URL): `false`, DSM's
    /// envelope, so that clients written for DSM read the failure too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Only on `/webapi/entry.cgi`: DSM's error member, with the number DSM gives the same
    /// mistake (`404` unknown token, `120` no or malformed payload, `101`–`104` missing or
    /// unknown `api`, `method` or `version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DsmErrorNumber>,
}

/// DSM's `error` member: `{"code": N}` (for a Google Chat sender, the HTTP status, as Google
/// Chat's own `error.code`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DsmErrorNumber {
    pub code: u16,
}

/// The kept answer a 409 `idempotency_answer_withheld` shows instead of replaying it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithheldAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its `Location` header, where it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Its JSON body, without the secret.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

/// Why a key was refused, as RFC 6750 §3 has a Bearer challenge say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    InvalidToken,
    InsufficientScope(crate::config::Scope),
}

impl Challenge {
    pub fn header(self) -> String {
        match self {
            Self::InvalidToken => r#"Bearer error="invalid_token""#.to_owned(),
            Self::InsufficientScope(scope) => format!(
                r#"Bearer error="insufficient_scope", scope="{}""#,
                scope.as_str()
            ),
        }
    }
}

/// What a failed request did before it failed, so running it again would do it twice.
#[derive(Debug, Clone)]
enum DoneBefore {
    /// Parts of a long message posted, and their post ids.
    Posted(usize, Vec<u64>),
    /// The URL of a resource created.
    Created(String),
}

/// A store failure as the routes answer it, unless a route's documented answer differs
/// (the event routes' `not_ready`, [`super::inbound::store_failure`]).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                ApiError::new(ProblemCode::StoreUnavailable, error.to_string())
                    .with_retry_after(STORE_RETRY_SECS)
            }
            // A bug or a hand-edited database: asking again cannot help.
            StoreError::Corrupt(_) => {
                tracing::error!(%error, "the store holds a row the gateway cannot read");
                ApiError::new(ProblemCode::Internal, error.to_string())
            }
            // The caller's value, not the store's state: asking again cannot help.
            StoreError::Refused(_) => ApiError::new(ProblemCode::Unprocessable, error.to_string()),
        }
    }
}

/// How long a caller is asked to wait when the store is unavailable.
pub const STORE_RETRY_SECS: u64 = 5;

/// The HTTP face's one error type.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ProblemCode,
    detail: String,
    dsm_code: Option<i64>,
    retry_after_secs: Option<u64>,
    /// What the request did before this failure (boxed: rare, and the error travels in
    /// `Result`s everywhere).
    done_before: Option<Box<DoneBefore>>,
    /// DSM may have carried the call out although its answer never came.
    outcome_unknown: bool,
    /// Why a key was refused, for `WWW-Authenticate`; a 401 without one answers the bare
    /// `Bearer`.
    challenge: Option<Challenge>,
    /// Answered inside DSM's envelope as well, with this error number
    /// ([`Self::in_dsm_envelope`]).
    dsm_envelope: Option<u16>,
    /// With an `error` member as Google Chat answers a failure ([`Self::for_google_chat`]).
    google_chat: bool,
}

impl ApiError {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            dsm_code: None,
            retry_after_secs: None,
            done_before: None,
            outcome_unknown: false,
            challenge: None,
            dsm_envelope: None,
            google_chat: false,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::NotFound, detail)
    }

    /// For an operation addressed to one resource (`what`, e.g. "channel 7"): Chat answers 117
    /// when that resource does not exist or is not visible to the account (or integration
    /// token), which is a 404.
    pub fn for_resource(error: UpstreamError, what: impl std::fmt::Display) -> Self {
        let missing = matches!(
            error.refusal(),
            Some(Refusal::NotAllowedOrMissing | Refusal::PayloadRefused)
        );
        if !missing {
            return error.into();
        }
        let mut api_error = ApiError::not_found(format!(
            "{what} does not exist or is not visible to the gateway's account"
        ));
        api_error.dsm_code = error.dsm_code();
        api_error
    }

    /// DSM's refusal of a chatbot message's recipients, one reason each: recipients DSM does
    /// not know are missing resources, as a missing channel is (404); any other reason is a
    /// refused input (400 `upstream_rejected_input`).
    pub fn recipients_refused<'a>(
        detail: String,
        mut reasons: impl Iterator<Item = &'a str>,
    ) -> Self {
        if reasons.all(|reason| reason.to_ascii_lowercase().contains("not found")) {
            ApiError::not_found(detail)
        } else {
            ApiError::new(ProblemCode::UpstreamRejectedInput, detail)
        }
    }

    /// For a call on which Chat's 117 can only mean "permission denied" (`Chatbot.set` on a
    /// chatbot its list shows, `src/upstream/PROTOCOL.md` [C2]): 403
    /// `upstream_permission_denied`, not the unknown 117's 502.
    pub fn for_permission(error: UpstreamError) -> Self {
        let denied = error.refusal() == Some(Refusal::NotAllowedOrMissing);
        let mut api_error = ApiError::from(error);
        if denied {
            api_error.code = ProblemCode::UpstreamPermissionDenied;
        }
        api_error
    }

    /// For a `SYNO.Chat.External` call made with a token the caller sent: DSM's "bad token" is
    /// the caller's mistake (403 `chat_token_rejected`), not a gateway misconfiguration (502).
    pub fn for_caller_token(error: UpstreamError) -> Self {
        let mut api_error = ApiError::from(error);
        if api_error.code == ProblemCode::UpstreamTokenRejected {
            api_error.code = ProblemCode::ChatTokenRejected;
            api_error.detail = "DSM rejected the token in X-Chat-Token".to_owned();
        }
        api_error
    }

    /// A problem stored as a delivery's `last_error` ([`Self::problem`]), as an error again:
    /// its code, detail and DSM code.
    pub fn from_stored(problem: &str) -> Option<Self> {
        let problem: serde_json::Value = serde_json::from_str(problem).ok()?;
        let code = ProblemCode::ALL
            .into_iter()
            .find(|code| problem["code"].as_str() == Some(code.as_str()))?;
        let mut error = Self::new(code, problem["detail"].as_str().unwrap_or_default());
        error.dsm_code = problem["dsm_code"].as_i64();
        Some(error)
    }

    /// Replaces the detail with one that says more than the generic DSM refusal.
    /// The same failure (its DSM code kept) as `code`: for a DSM error number whose meaning
    /// the operation knows better than the general table.
    pub fn recoded(mut self, code: ProblemCode, detail: impl Into<String>) -> Self {
        self.code = code;
        self.detail = detail.into();
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn code(&self) -> ProblemCode {
        self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The DSM error number, when DSM refused.
    pub fn dsm_code(&self) -> Option<i64> {
        self.dsm_code
    }

    /// How long the caller is asked to wait (`Retry-After`), if at all.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// Why a key was refused, for `WWW-Authenticate`.
    pub fn challenge(&self) -> Option<Challenge> {
        self.challenge
    }

    /// Whether the request did something before it failed ([`Self::after_parts_posted`],
    /// [`Self::after_creating`]), so that running it again would do it twice.
    pub fn partly_done(&self) -> bool {
        self.done_before.is_some()
    }

    /// Whether DSM may have carried the failed call out (its answer never came).
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// Whether the failure says to come back later (429, 503: DSM rate limiting or busy, the
    /// gateway's DSM calls all in use, a login back-off), which the outbox's retries can wait
    /// out.
    pub fn asks_to_wait(&self) -> bool {
        matches!(
            self.code.status(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
    }

    /// A failure after `parts` parts of a long message were posted (with `post_ids` where DSM
    /// named them): said in the detail and in `parts_posted`/`post_ids`, since repeating the
    /// whole text would post those parts twice.
    pub fn after_parts_posted(mut self, parts: usize, post_ids: Vec<u64>) -> Self {
        if parts > 0 {
            self.detail = format!(
                "{}; {parts} part(s) of the message had been posted before this failure and \
                 stay posted (sending the whole text again repeats them)",
                self.detail
            );
            self.done_before = Some(Box::new(DoneBefore::Posted(parts, post_ids)));
        }
        self
    }

    /// A failure after the request created the resource at `url` (said in the detail and in
    /// `created`), since sending the request again would create a second one.
    pub fn after_creating(mut self, what: impl std::fmt::Display, url: String) -> Self {
        self.detail = format!(
            "{}; {what} was created before this failure and exists (`created`): sending the \
             request again would create another",
            self.detail
        );
        self.done_before = Some(Box::new(DoneBefore::Created(url)));
        self
    }

    /// Answers with the `WWW-Authenticate` challenge that says why the key was refused.
    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The problem also as DSM answers a failed call (`success: false`, `error.code`), for
    /// the callers of `/webapi/entry.cgi`, which are written for DSM.
    pub fn in_dsm_envelope(mut self, code: u16) -> Self {
        self.dsm_envelope = Some(code);
        self
    }

    /// The problem with an `error` member (`{"code": <the status>}`), as Google Chat answers a
    /// failed call: Argo CD reads the answer of a Google Chat webhook for it, not the status.
    pub fn for_google_chat(mut self) -> Self {
        self.google_chat = true;
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
    }

    /// The problem document (also stored as a delivery's `last_error`).
    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.code.spec();
        let request = telemetry::current_request();
        Problem {
            kind: format!("urn:syno-chat-gateway:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail.clone(),
            // A path of 60 000 digits is not echoed whole (a document of its own size).
            instance: request.as_ref().map(|r| clipped_path(&r.path)),
            code,
            request_id: request.map(|r| r.id),
            dsm_code: self.dsm_code,
            parts_posted: match self.done_before.as_deref() {
                Some(DoneBefore::Posted(parts, _)) => Some(*parts),
                _ => None,
            },
            post_ids: match self.done_before.as_deref() {
                Some(DoneBefore::Posted(_, ids)) if !ids.is_empty() => Some(ids.clone()),
                _ => None,
            },
            created: match self.done_before.as_deref() {
                Some(DoneBefore::Created(url)) => Some(url.clone()),
                _ => None,
            },
            answer: None,
            success: self.dsm_envelope.map(|_| false),
            error: self
                .dsm_envelope
                .map(|code| DsmErrorNumber { code })
                .or(self.google_chat.then_some(DsmErrorNumber {
                    code: status.as_u16(),
                })),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        let (code, retry_after) = match &error {
            UpstreamError::Dsm { family, code, .. } => {
                let problem = problem_for(Refusal::of(*family, *code));
                let retry = matches!(
                    problem,
                    ProblemCode::UpstreamRateLimited | ProblemCode::UpstreamBusy
                )
                .then_some(1);
                (problem, retry)
            }
            UpstreamError::LoginRefused { code } => {
                let problem = problem_for(Refusal::of(ApiFamily::Auth, *code));
                (
                    problem,
                    (problem == ProblemCode::UpstreamLoginBlocked).then_some(60),
                )
            }
            UpstreamError::LoginBackoff { retry_after, .. } => (
                ProblemCode::UpstreamLoginBackoff,
                Some(retry_after.as_secs_f64().ceil() as u64),
            ),
            UpstreamError::Unreachable(_) => (ProblemCode::UpstreamUnreachable, None),
            UpstreamError::Timeout => (ProblemCode::UpstreamTimeout, None),
            UpstreamError::Busy => (ProblemCode::UpstreamBusy, Some(1)),
            UpstreamError::InvalidResponse(_) => (ProblemCode::UpstreamInvalidResponse, None),
            UpstreamError::TurnedAway {
                status,
                retry_after,
            } => (
                if *status == 429 {
                    ProblemCode::UpstreamRateLimited
                } else {
                    ProblemCode::UpstreamBusy
                },
                Some(retry_after.map_or(1, |wait| wait.as_secs_f64().ceil() as u64)),
            ),
            UpstreamError::Unsupported { .. } | UpstreamError::NotListed { .. } => {
                (ProblemCode::UpstreamApiUnsupported, None)
            }
            UpstreamError::NotSendable(_) => (ProblemCode::Unprocessable, None),
        };
        let mut api_error = ApiError::new(code, error.to_string());
        api_error.dsm_code = error.dsm_code();
        api_error.outcome_unknown = error.may_have_been_carried_out();
        api_error.retry_after_secs = retry_after.map(|s| s.max(1));
        api_error
    }
}

impl From<crate::chunking::TooManyParts> for ApiError {
    fn from(too_long: crate::chunking::TooManyParts) -> Self {
        ApiError::new(ProblemCode::MessageTooLong, too_long.to_string())
    }
}

impl From<std::sync::Arc<UpstreamError>> for ApiError {
    fn from(error: std::sync::Arc<UpstreamError>) -> Self {
        (*error).clone().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once_in_its_place() {
        for (i, code) in ProblemCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code:?}");
        }
        let mut names: Vec<_> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            ProblemCode::ALL.len(),
            "code strings are unique"
        );
    }

    #[test]
    fn the_readme_error_table_lists_exactly_the_codes_with_their_status() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let table = readme
            .split("| `code` | HTTP | When |")
            .nth(1)
            .expect("the README has the error table");
        let mut listed = Vec::new();
        for row in table
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
        {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let status: u16 = cells[2].parse().expect("an HTTP status");
            // `a` / `b` and `a`, `b` rows name several codes of one status.
            for name in cells[1].split('`').skip(1).step_by(2) {
                let code = ProblemCode::ALL
                    .into_iter()
                    .find(|code| code.as_str() == name)
                    .unwrap_or_else(|| {
                        panic!("the README lists `{name}`, which is no ProblemCode")
                    });
                assert_eq!(code.status().as_u16(), status, "`{name}` in the README");
                listed.push(code);
            }
        }
        for code in ProblemCode::ALL {
            assert_eq!(
                listed.iter().filter(|c| **c == code).count(),
                1,
                "`{}` must be listed once in the README's error table",
                code.as_str()
            );
        }
    }

    #[test]
    fn the_documented_code_enum_is_the_code_strings() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(ProblemCode::schema()).unwrap();
        let documented: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let codes: Vec<&str> = ProblemCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, codes);
    }

    #[test]
    fn dsm_table_follows_the_documented_mapping() {
        use ApiFamily::*;
        // (family, DSM's number, the status it is answered with)
        for (family, code, status) in [
            (Session, 105, StatusCode::FORBIDDEN),
            (Session, 119, StatusCode::FORBIDDEN),
            (Session, 114, StatusCode::BAD_GATEWAY),
            (Session, 103, StatusCode::NOT_IMPLEMENTED),
            (External, 117, StatusCode::BAD_REQUEST),
            // External's 407 is a record (the payload) DSM finds invalid, not a blocked login.
            (External, 407, StatusCode::BAD_REQUEST),
            (Auth, 407, StatusCode::SERVICE_UNAVAILABLE),
            (Auth, 400, StatusCode::BAD_GATEWAY),
            (External, 411, StatusCode::TOO_MANY_REQUESTS),
            (External, 410, StatusCode::PAYLOAD_TOO_LARGE),
            (External, 409, StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            assert_eq!(
                problem_for_dsm(family, code).status(),
                status,
                "{family:?} {code}"
            );
        }
        // External's payload is the gateway's own writing; its `file_url` is the caller's,
        // and its 409 is the file behind `file_url`, not the message.
        for (code, problem) in [
            (120, ProblemCode::UpstreamContractError),
            (101, ProblemCode::UpstreamContractError),
            (404, ProblemCode::UpstreamTokenRejected),
            (409, ProblemCode::FileTooLarge),
        ] {
            assert_eq!(problem_for_dsm(External, code), problem, "External {code}");
        }
    }

    #[test]
    fn a_rejected_caller_token_is_the_callers_problem() {
        let refused = |code| UpstreamError::Dsm {
            api: "SYNO.Chat.External",
            method: "incoming",
            code,
            family: ApiFamily::External,
        };
        let rejected = ApiError::for_caller_token(refused(404));
        assert_eq!(rejected.code(), ProblemCode::ChatTokenRejected);
        assert_eq!(rejected.code().status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ApiError::for_caller_token(refused(411)).code(),
            ProblemCode::UpstreamRateLimited
        );
    }

    #[test]
    fn transport_failures_map_to_gateway_statuses() {
        let timeout: ApiError = UpstreamError::Timeout.into();
        assert_eq!(timeout.code().status(), StatusCode::GATEWAY_TIMEOUT);
        let down: ApiError = UpstreamError::Unreachable("connection refused").into();
        assert_eq!(down.code().status(), StatusCode::BAD_GATEWAY);
    }
}
