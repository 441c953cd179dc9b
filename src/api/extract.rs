//! Body and query extractors whose errors name the field at fault (`remind_at: invalid type:
//! string "tomorrow", expected u64`), where actix's own say only "invalid type" and a column.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, mime, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::error::{ApiError, ProblemCode};

/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 256 * 1024;

/// Describes a deserialisation failure with the path of the field it happened at.
fn describe<E: std::fmt::Display>(error: serde_path_to_error::Error<E>) -> String {
    let path = error.path().to_string();
    if path == "." || path.is_empty() {
        error.into_inner().to_string()
    } else {
        format!("{path}: {}", error.into_inner())
    }
}

/// A JSON request body (`application/json` or `+json`), at most [`JSON_LIMIT`] bytes.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
        let too_long = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|length| length > JSON_LIMIT);
        let body = web::Bytes::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    ProblemCode::UnsupportedMediaType,
                    "the body must be sent as `Content-Type: application/json`",
                ));
            }
            let too_large = || {
                ApiError::new(
                    ProblemCode::PayloadTooLarge,
                    format!("the JSON body exceeds {JSON_LIMIT} bytes"),
                )
            };
            if too_long {
                return Err(too_large());
            }
            let bytes = body.await.map_err(|error| {
                let unreadable = match error.as_error::<actix_web::error::PayloadError>() {
                    Some(actix_web::error::PayloadError::Overflow) | None => too_large(),
                    // A body its Content-Encoding does not decode, or cut short.
                    Some(error) => {
                        ApiError::invalid(format!("the body could not be read: {error}"))
                    }
                };
                crate::body_deadline::read_failed(&req, unreadable)
            })?;
            if bytes.len() > JSON_LIMIT {
                return Err(too_large());
            }
            // Most bodies decode straight from the bytes. Only one that does not (an integer
            // written `36941.0`, or a mistake to describe) is read again through a `Value`.
            let mut direct = serde_json::Deserializer::from_slice(&bytes);
            if let Ok(parsed) = T::deserialize(&mut direct)
                && direct.end().is_ok()
            {
                return Ok(Json(parsed));
            }
            let mut value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
            integral_floats_to_integers(&mut value);
            serde_path_to_error::deserialize(value)
                .map(Json)
                .map_err(|e| ApiError::invalid(format!("invalid JSON body: {}", describe(e))))
        })
    }
}

/// JSON Schema counts `36941.0` as an integer; serde's integer types do not. Rewrites such
/// numbers (whole, and below 2^53, where a float names one integer) as integers so documented
/// integer fields accept them.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < crate::domain::EXACT_FLOAT_INTEGERS {
                *n = serde_json::Number::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_floats_to_integers)
        }
        _ => {}
    }
}

/// For optional body fields that may be left out but not sent as `null` (so the documented
/// `nullable: false` holds): `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For optional integer query parameters: `40` or `40.0` (JSON Schema counts both as integers,
/// serde only the first): `#[serde(default, deserialize_with = "whole_number")]`.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = crate::domain::parse_whole_number(&text).ok_or_else(|| {
        D::Error::custom(format!("expected a non-negative integer, got {text:?}"))
    })?;
    T::try_from(value)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{text} is out of range")))
}

/// Query-string parameters.
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Query<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = || form_urlencoded::parse(req.query_string().as_bytes());
        // Read directly first: tracking the path copies every key into a `String` (about a
        // thousand instructions on a page of posts). Only a query that fails is read again,
        // with the path, to name the parameter in the error.
        if let Ok(parsed) = T::deserialize(serde_urlencoded::Deserializer::new(pairs())) {
            return std::future::ready(Ok(Query(parsed)));
        }
        std::future::ready(
            serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs()))
                .map(Query)
                .map_err(|e| ApiError::invalid(format!("invalid query string: {}", describe(e)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_become_integers_exactly_and_others_stay() {
        // 2251799813685247.0 was read as a float just off the integer (serde_json's default,
        // fast float parsing), so it was refused as an id (found by schemathesis).
        let mut value: serde_json::Value = serde_json::from_str(
            r#"[4064.0, 2251799813685247.0, 8999999999999999.0, 9007199254740991.0, -9007199254740991.0, 9007199254740992.0, 1.5, 1e300, -3.0, 7]"#,
        )
        .unwrap();
        integral_floats_to_integers(&mut value);
        assert_eq!(
            value,
            serde_json::json!([
                4064,
                2251799813685247_i64,
                8999999999999999_i64,
                // 2^53 - 1, JavaScript's largest safe integer (found by schemathesis).
                9007199254740991_i64,
                -9007199254740991_i64,
                9007199254740992.0,
                1.5,
                1e300,
                -3,
                7
            ])
        );
    }
}
