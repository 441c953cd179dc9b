//! DSM's answer envelope, `{"success": true, "data": …}` or `{"success": false, "error":
//! {"code": N}}`, unwrapped into the data or an [`UpstreamError::Dsm`].

use serde::Deserialize;

use super::error::{ApiFamily, Result, UpstreamError};
use super::ops::Op;

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

pub(super) fn parse_envelope<'a, T: Deserialize<'a>>(
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
pub(super) fn parse_envelope_error<T>(
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
    // sonic-rs decodes (about a fifth of the CPU of a 16 KB page, see README "Performance");
    // a body it refuses is read again by serde_json, whose verdict and error message decide.
    match sonic_rs::from_slice::<Success<W>>(body) {
        Ok(success) => Ok(convert(success.data)),
        Err(_) => serde_json::from_slice::<Success<W>>(body).map(|s| convert(s.data)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ops;
    use bytes::Bytes;

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
}
