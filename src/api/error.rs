//! The HTTP face's answers to a failure: [`crate::problem`]'s error as an RFC 9457
//! `application/problem+json` response, with its status, `Retry-After` and
//! `WWW-Authenticate` (the error type and its tables are [`crate::problem`]'s, which the outbox
//! shares to store a delivery's `last_error`).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use crate::problem::*;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        match self.challenge() {
            Some(challenge) => {
                response.insert_header((header::WWW_AUTHENTICATE, challenge.header()));
            }
            None if self.code() == ProblemCode::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            None => {}
        }
        if self.code() == ProblemCode::RequestTimeout {
            // The rest of the body may still come: the connection cannot carry another request.
            response.force_close();
        }
        if self.partly_done() {
            response.extensions_mut().insert(PartlyDone);
        }
        if self.code().status().is_server_error() {
            match FAILURE_WARNINGS.admit(self.code(), coarse_now_ms()) {
                Some(similar_since) => tracing::warn!(
                    code = self.code().as_str(),
                    dsm_code = self.dsm_code(),
                    detail = %self.detail(),
                    similar_since,
                    "request failed"
                ),
                None => {
                    tracing::debug!(code = self.code().as_str(), dsm_code = self.dsm_code(), detail = %self.detail(), "request failed")
                }
            }
        }
        response.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

/// How often a failure of one code is logged at WARN: an outage of the NAS fails every request
/// with the same code, and a line for each at the default level buried everything else (a
/// back-off answers thousands a minute). The others go to DEBUG and are counted on the next
/// WARN; every one still has its access line and its metric.
const FAILURE_WARNING_EVERY_MS: u64 = 10_000;

static FAILURE_WARNINGS: RepeatedWarnings = RepeatedWarnings::new();

/// Per problem code, when it was last logged at WARN and how many were not since.
struct RepeatedWarnings {
    last_ms: [AtomicU64; ProblemCode::ALL.len()],
    quiet: [AtomicU64; ProblemCode::ALL.len()],
}

impl RepeatedWarnings {
    const fn new() -> Self {
        // The array repeat needs a constant, not a value (AtomicU64 is not Copy).
        #[allow(clippy::declare_interior_mutable_const)]
        const NEVER: AtomicU64 = AtomicU64::new(u64::MAX);
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: AtomicU64 = AtomicU64::new(0);
        Self {
            last_ms: [NEVER; ProblemCode::ALL.len()],
            quiet: [ZERO; ProblemCode::ALL.len()],
        }
    }

    /// At `now_ms`, whether a failure of `code` is logged at WARN, with how many of the same
    /// code went to DEBUG since the last WARN; `None`: this one goes to DEBUG.
    fn admit(&self, code: ProblemCode, now_ms: u64) -> Option<u64> {
        let (last, quiet) = (&self.last_ms[code.index()], &self.quiet[code.index()]);
        let seen = last.load(Ordering::Relaxed);
        let due = seen == u64::MAX || now_ms.saturating_sub(seen) >= FAILURE_WARNING_EVERY_MS;
        // One of the requests failing together wins the WARN.
        if due
            && last
                .compare_exchange(seen, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(quiet.swap(0, Ordering::Relaxed));
        }
        quiet.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Milliseconds since the first call: enough for spacing log lines.
fn coarse_now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// On an answer: parts of a long message were posted, or a resource created, before the
/// failure it reports, so running the request again would post them twice or create another (the `Idempotency-Key` layer keeps such an answer,
/// 5xx and 429 included).
#[derive(Clone, Copy, Debug)]
pub struct PartlyDone;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_warned_once_per_spell_with_the_quiet_ones_counted() {
        let warnings = RepeatedWarnings::new();
        let code = ProblemCode::ALL[ProblemCode::ALL.len() - 1];
        let other = ProblemCode::ALL[0];
        assert_eq!(warnings.admit(code, 0), Some(0));
        assert_eq!(warnings.admit(code, 1), None);
        assert_eq!(warnings.admit(code, FAILURE_WARNING_EVERY_MS - 1), None);
        // Another code has its own spell.
        assert_eq!(warnings.admit(other, 5), Some(0));
        assert_eq!(
            warnings.admit(code, FAILURE_WARNING_EVERY_MS),
            Some(2),
            "the two quiet ones are counted on the next warning"
        );
        assert_eq!(warnings.admit(code, FAILURE_WARNING_EVERY_MS + 1), None);
        assert_eq!(warnings.admit(code, 3 * FAILURE_WARNING_EVERY_MS), Some(1));
    }
}
