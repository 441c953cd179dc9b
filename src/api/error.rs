//! The HTTP face's answers to a failure: [`crate::problem`]'s error as an RFC 9457
//! `application/problem+json` response, with its status, `Retry-After` and
//! `WWW-Authenticate` (the error type and its tables are [`crate::problem`]'s, which the outbox
//! shares to store a delivery's `last_error`).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};

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
            tracing::warn!(code = self.code().as_str(), dsm_code = self.dsm_code(), detail = %self.detail(), "request failed");
        }
        response.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

/// On an answer: parts of a long message were posted, or a resource created, before the
/// failure it reports, so running the request again would post them twice or create another (the `Idempotency-Key` layer keeps such an answer,
/// 5xx and 429 included).
#[derive(Clone, Copy, Debug)]
pub struct PartlyDone;
