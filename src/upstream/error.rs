//! The upstream boundary's error type. It names what went wrong on the wire, never how the
//! HTTP face should answer (that is `crate::api::error`'s table), and never carries a secret: URLs
//! (which hold `_sid` on GETs) and raw transport messages are not kept.

use std::time::Duration;

/// Which family of WebAPI answered: their error numbers collide (PROTOCOL.md [T4], [S4], [C2]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiFamily {
    /// `SYNO.API.Auth` login/logout.
    Auth,
    /// `SYNO.API.Info` and every session-authenticated `SYNO.Chat.*` API.
    Session,
    /// `SYNO.Chat.External`, authenticated by an integration token.
    External,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("DSM refused {api} {method} with error {code}")]
    Dsm {
        api: &'static str,
        method: &'static str,
        code: i64,
        family: ApiFamily,
    },
    #[error("DSM refused the gateway's login with error {code} ({})", login_refusal_meaning(*code))]
    LoginRefused { code: i64 },
    #[error("login to DSM is backing off for {retry_after:?} after a failed attempt ({last})")]
    LoginBackoff {
        retry_after: Duration,
        last: Box<UpstreamError>,
    },
    #[error("could not reach DSM: {0}")]
    Unreachable(&'static str),
    #[error("DSM did not answer within the configured timeout")]
    Timeout,
    #[error(
        "the gateway's calls to DSM are all in use (upstream.max_concurrency); try again shortly"
    )]
    Busy,
    #[error("DSM sent an answer that is not a valid WebAPI response: {0}")]
    InvalidResponse(String),
    /// The NAS's web server, or a proxy in front of it, turned the call away with HTTP 429 or
    /// 503 (DSM answers its own refusals in an HTTP 200): nothing was carried out.
    /// `retry_after`: what the answer asked for (at most [`TURNED_AWAY_WAIT_MAX`]).
    #[error("the NAS's web server answered HTTP {status}: the call was not carried out")]
    TurnedAway {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("DSM does not offer {api} in a version this gateway speaks ({reason})")]
    Unsupported { api: &'static str, reason: String },
    /// The NAS's API list lacks the API: the Chat package is not installed, or not running
    /// yet (a NAS starting up answers its API list before Chat runs; PROTOCOL.md [T4]).
    #[error("the NAS does not list {api} (is the Chat package installed and running?)")]
    NotListed { api: &'static str },
    /// The gateway itself found the request unsendable before anything left it (e.g. a stored
    /// chunk that is not a valid message). Never DSM's answer, and no retry can change it.
    #[error("the gateway cannot send this: {0}")]
    NotSendable(String),
}

/// The longest `Retry-After` of a turned-away call the gateway honours: a proxy's mistaken
/// day must not hold a caller or a delivery that long.
pub const TURNED_AWAY_WAIT_MAX: Duration = Duration::from_secs(300);

/// What `SYNO.API.Auth` login error numbers mean (PROTOCOL.md [S4]).
pub fn login_refusal_meaning(code: i64) -> &'static str {
    match code {
        400 => "no such account or wrong password",
        401 => "account disabled",
        402 => "the account may not use this application",
        403 => "2-step verification code required: run `syno-chat-gateway enroll-device`",
        404 => "2-step verification code wrong",
        // PYDSM's meaning; FHEM-SVS reads it as "method not allowed / password too long".
        405 => "app portal incorrect (or: method not allowed, password too long)",
        406 => "2-step verification is enforced but not set up for the account",
        407 => "this IP address is blocked after too many failed logins",
        408..=410 => "the password has expired or must be changed",
        411 => "the account is locked",
        _ => "unknown login error",
    }
}

impl UpstreamError {
    /// The DSM error number, when DSM itself refused.
    pub fn dsm_code(&self) -> Option<i64> {
        match self {
            Self::Dsm { code, .. } | Self::LoginRefused { code } => Some(*code),
            Self::LoginBackoff { last, .. } => last.dsm_code(),
            _ => None,
        }
    }

    /// Whether DSM may have carried the call out although it did not say so: a timeout, a
    /// connection lost after the request left, an answer that is not DSM's (a proxy's 504
    /// page), or DSM's own "network unstable or system busy" (109-111, 118; PROTOCOL.md [T4]),
    /// which does not say whether the call ran. A connection that never opened sent nothing.
    pub fn may_have_been_carried_out(&self) -> bool {
        match self {
            Self::Timeout | Self::InvalidResponse(_) => true,
            Self::Dsm {
                code: 109..=111 | 118,
                ..
            } => true,
            Self::Unreachable(reason) => *reason != "connection failed",
            _ => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Dsm { .. } | Self::LoginRefused { .. } | Self::LoginBackoff { .. } => "dsm_error",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::Unreachable(_)
            | Self::InvalidResponse(_)
            | Self::TurnedAway { .. }
            | Self::Unsupported { .. }
            | Self::NotListed { .. } => "transport_error",
            Self::NotSendable(_) => "not_sendable",
        }
    }
}

pub type Result<T> = std::result::Result<T, UpstreamError>;
