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

/// What a DSM error number means, read in the family that answered (PROTOCOL.md [T4], [S4],
/// [C2]). The numbers are read here and nowhere else: the HTTP face and the outbox decide on
/// meanings. Where one number means several things, the meaning says so, and the operation
/// that knows which one it is decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Login: too many failed logins from this address (407), or the account locked (411).
    LoginBlocked,
    /// Login: a 2-step verification code is required (403).
    OtpRequired,
    /// Login: the 2-step verification code was wrong (404).
    OtpWrong,
    /// Login: any other refusal (wrong credentials, account disabled, password expired …).
    LoginFailed,
    /// No such API (102): also the Chat package stopped.
    NoSuchApi,
    /// No such method, or a version the NAS does not support (103, 104).
    NoSuchMethod,
    /// The network is unstable or the system busy (109–111, 118): the call may have run.
    Busy,
    /// The account may not do this (105, 115, 119, 160; 105/119 also when the session is gone,
    /// which the client has already ruled out by then).
    PermissionDenied,
    /// The session expired, was ended by another login, or is used from another address (106,
    /// 107, 150): refused before it ran.
    SessionLost,
    /// A parameter the gateway wrote is wrong or missing (101, 114, 120): the gateway's mistake.
    GatewayMistake,
    /// A session call's 117: no such resource or not visible to the account, or, by the
    /// operation, "already joined" (`Channel.join`) or "permission denied" (`Chatbot.set`).
    NotAllowedOrMissing,
    /// `External`'s 117: the payload or its `file_url` is invalid; for a read, the record
    /// asked for does not exist or is not the bot's to see.
    PayloadRefused,
    /// `External`'s 407: a record in the payload is not valid.
    PayloadRecordInvalid,
    /// `External`: the bot is not a member of the channel (401).
    BotNotInChannel,
    /// `External`: an unknown token, or a bot that is not ready (404).
    TokenRejected,
    /// `External`: the file behind `file_url` is over DSM's limit (409).
    FileTooLarge,
    /// The message is too long (410).
    TooLong,
    /// Posting too fast (411).
    RateLimited,
    /// A session call's "record not valid" (152; a channel name with spaces, for one).
    InvalidRecord,
    /// A session call's 407 (`Channel.Named.create` refusing `type`).
    RecordRefused,
    /// The NAS's side failed or timed out (408, 500, 502–504): refused before it ran.
    NasFailed,
    /// A number no source explains.
    Unknown,
}

impl Refusal {
    /// The meaning of `code` from `family`.
    pub fn of(family: ApiFamily, code: i64) -> Self {
        use ApiFamily::*;
        match (family, code) {
            (Auth, 407 | 411) => Self::LoginBlocked,
            (Auth, 403) => Self::OtpRequired,
            (Auth, 404) => Self::OtpWrong,
            (Auth, _) => Self::LoginFailed,
            (_, 102) => Self::NoSuchApi,
            (_, 103 | 104) => Self::NoSuchMethod,
            (_, 109..=111 | 118) => Self::Busy,
            (External, 117) => Self::PayloadRefused,
            (External, 407) => Self::PayloadRecordInvalid,
            (External, 401) => Self::BotNotInChannel,
            (External, 404) => Self::TokenRejected,
            (External, 409) => Self::FileTooLarge,
            (_, 410) => Self::TooLong,
            (_, 411) => Self::RateLimited,
            (_, 105 | 115 | 119 | 160) => Self::PermissionDenied,
            (_, 101 | 114 | 120) => Self::GatewayMistake,
            (Session, 106 | 107 | 150) => Self::SessionLost,
            (Session, 117) => Self::NotAllowedOrMissing,
            (Session, 152) => Self::InvalidRecord,
            (Session, 407) => Self::RecordRefused,
            (_, 408 | 500 | 502..=504) => Self::NasFailed,
            _ => Self::Unknown,
        }
    }
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
    #[error(
        "login to DSM is backing off for another {} s after a failed attempt ({last})",
        .retry_after.as_secs_f64().ceil()
    )]
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
    /// What DSM's refusal means, when DSM itself refused (a login's refusal too).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Dsm { code, family, .. } => Some(Refusal::of(*family, *code)),
            Self::LoginRefused { code } => Some(Refusal::of(ApiFamily::Auth, *code)),
            // The login backing off is the gateway's own wait, not DSM refusing this call.
            _ => None,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_read_in_the_family_that_answered() {
        use ApiFamily::*;
        // The same numbers mean other things in login, session and token calls.
        assert_eq!(Refusal::of(Auth, 407), Refusal::LoginBlocked);
        assert_eq!(Refusal::of(External, 407), Refusal::PayloadRecordInvalid);
        assert_eq!(Refusal::of(Session, 407), Refusal::RecordRefused);
        assert_eq!(Refusal::of(Auth, 411), Refusal::LoginBlocked);
        assert_eq!(Refusal::of(External, 411), Refusal::RateLimited);
        assert_eq!(Refusal::of(Session, 411), Refusal::RateLimited);
        assert_eq!(Refusal::of(Auth, 404), Refusal::OtpWrong);
        assert_eq!(Refusal::of(External, 404), Refusal::TokenRejected);
        assert_eq!(Refusal::of(External, 117), Refusal::PayloadRefused);
        assert_eq!(Refusal::of(Session, 117), Refusal::NotAllowedOrMissing);
        assert_eq!(Refusal::of(External, 401), Refusal::BotNotInChannel);
        assert_eq!(Refusal::of(Session, 106), Refusal::SessionLost);
        assert_eq!(Refusal::of(External, 106), Refusal::Unknown);
        assert_eq!(Refusal::of(Session, 102), Refusal::NoSuchApi);
        assert_eq!(Refusal::of(Session, 110), Refusal::Busy);
        assert_eq!(Refusal::of(Session, 999), Refusal::Unknown);
        // A login's refusal is read as a login's; the gateway's own backing off is no refusal.
        let refused = UpstreamError::LoginRefused { code: 403 };
        assert_eq!(refused.refusal(), Some(Refusal::OtpRequired));
        let backing_off = UpstreamError::LoginBackoff {
            retry_after: Duration::from_secs(1),
            last: Box::new(refused),
        };
        assert_eq!(backing_off.refusal(), None);
        assert_eq!(UpstreamError::Timeout.refusal(), None);
    }
}
