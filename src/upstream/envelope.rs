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

/// Keys of `error.errors` whose values are logged: DSM's names and reasons for a refusal. Any
/// other key is logged by name only: 403's `errors.token` is a login token.
const DETAIL_KEYS: [&str; 5] = ["name", "reason", "type", "types", "code"];
/// The longest text logged from `error.errors`.
const DETAILS_MAX: usize = 240;

/// What DSM said about a refusal in `error.errors` (PROTOCOL.md [T3]: `{"name": "payload",
/// "reason": "required"}` with 120, the 2-step `types` with 403), cut down to names and
/// reasons for the log line of the failed call: values of other keys are left out, what the
/// call sent (`sent`: its parameters, the sid, the SynoToken, a token; DSM or a proxy may
/// echo them) and long runs of letters and digits (a token, a sid) are masked, and the whole
/// is short. `None` when the body is not an error envelope with details.
pub(super) fn error_details(body: &[u8], sent: &[&str]) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        error: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        errors: Option<serde_json::Value>,
    }
    let errors = serde_json::from_slice::<Head>(body).ok()?.error?.errors?;
    let mut text = String::new();
    describe(&errors, 0, sent, &mut text);
    if text.chars().count() > DETAILS_MAX {
        text = text.chars().take(DETAILS_MAX).chain(['…']).collect();
    }
    (!text.is_empty()).then_some(text)
}

/// Writes `value` into `out`: objects as `{key: value, other_key}` (the value only for
/// [`DETAIL_KEYS`]), arrays as `[…]`, text masked.
fn describe(value: &serde_json::Value, depth: usize, sent: &[&str], out: &mut String) {
    use serde_json::Value;
    match value {
        _ if depth > 3 => out.push('…'),
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().take(8).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_masked(key, sent, out);
                if DETAIL_KEYS.contains(&key.as_str()) {
                    out.push_str(": ");
                    describe(item, depth + 1, sent, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().take(8).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                describe(item, depth + 1, sent, out);
            }
            out.push(']');
        }
        Value::String(text) => push_masked(text, sent, out),
        Value::Number(_) | Value::Bool(_) | Value::Null => out.push_str(&value.to_string()),
    }
}

/// `text` with every place any value of `sent` occurs in it written `****`. The places are
/// found in the text as it is, then masked together: masking one value first (the session
/// name `Chat`) could break up another that holds it (a password `MyChatPassword!`).
fn without_sent<'t>(text: &'t str, sent: &[&str]) -> std::borrow::Cow<'t, str> {
    let mut places: Vec<(usize, usize)> = sent
        .iter()
        .filter(|v| v.len() >= SENT_MIN_LEN)
        .flat_map(|value| {
            text.match_indices(value)
                .map(|(at, found)| (at, at + found.len()))
        })
        .collect();
    if places.is_empty() {
        return text.into();
    }
    places.sort_unstable();
    let mut masked = String::with_capacity(text.len());
    let mut kept_to = 0;
    for (start, end) in places {
        if start >= kept_to {
            masked.push_str(&text[kept_to..start]);
            masked.push_str("****");
        }
        kept_to = kept_to.max(end);
    }
    masked.push_str(&text[kept_to..]);
    masked.into()
}

/// Values shorter than this are not looked for (a `limit=5` is no secret, and masking every
/// `5` would garble the reasons).
const SENT_MIN_LEN: usize = 4;

/// `text` without control characters, each value of `sent` in it and each run of 16 or more
/// letters and digits (the shape of tokens and sids, never of DSM's reason words) written
/// `****`.
fn push_masked(text: &str, sent: &[&str], out: &mut String) {
    // Control characters go first: dropped after the masking, one inside an echoed secret
    // (`secret-\u0001token`) hid it from the masking and then joined it up again.
    let text = without_controls(text);
    let sent: Vec<_> = sent.iter().map(|value| without_controls(value)).collect();
    let sent: Vec<&str> = sent.iter().map(|value| value.as_ref()).collect();
    let text = without_sent(&text, &sent);
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 16 {
            out.push_str("****");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, out);
            out.push(c);
        }
    }
    flush(&mut run, out);
}

fn without_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(char::is_control) {
        text.chars().filter(|c| !c.is_control()).collect()
    } else {
        text.into()
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

    #[test]
    fn error_details_keep_names_and_reasons_only() {
        let details = |body: &str| error_details(body.as_bytes(), &[]);
        assert_eq!(
            details(
                r#"{"error":{"code":120,"errors":{"name":"payload","reason":"required"}},"success":false}"#
            )
            .as_deref(),
            Some("{name: payload, reason: required}")
        );
        // 2-step login: the token's value never reaches the log, its name and the types do.
        let login = details(
            r#"{"error":{"code":403,"errors":{"token":"s3cr3tT0kenValue","types":[{"type":"otp"}]}},"success":false}"#,
        )
        .unwrap();
        assert_eq!(login, "{token, types: [{type: otp}]}");
        assert!(!login.contains("s3cr3t"));
        // Free text (as FHEM reads it), with a token-shaped run masked.
        assert_eq!(
            details(
                r#"{"success":false,"error":{"code":117,"errors":"bad token abcdefghijklmnopqrstuvwxyz0123456789"}}"#
            )
            .as_deref(),
            Some("bad token ****")
        );
        // What the call sent, echoed back (a password, a sid, a short SynoToken), whatever
        // its shape.
        let echoed = error_details(
            br#"{"success":false,"error":{"code":400,"errors":{"name":"passwd","reason":"wrong pw-S3cr3t_x sid Ab-3_x9 tok SYNO13chars"}}}"#,
            &["pw-S3cr3t_x", "Ab-3_x9", "SYNO13chars", "5"],
        )
        .unwrap();
        assert_eq!(
            echoed,
            "{name: passwd, reason: wrong **** sid **** tok ****}"
        );
        // A value inside another (the session name in the password), and overlapping ones.
        let inside = error_details(
            br#"{"success":false,"error":{"code":400,"errors":"bad MyChatPassword! and abcdefgh"}}"#,
            &["Chat", "MyChatPassword!", "abcdef", "defgh"],
        )
        .unwrap();
        assert_eq!(inside, "bad **** and ****");
        // A control character inside an echoed value does not hide it from the masking.
        let split = error_details(
            br#"{"error":{"code":120,"errors":{"name":"secret-\u0001token-1234"}}}"#,
            &["secret-token-1234", "pass\u{7}word-x"],
        )
        .unwrap();
        assert_eq!(split, "{name: ****}");
        let sent_with_one = error_details(
            br#"{"error":{"code":120,"errors":"was password-x"}}"#,
            &["pass\u{7}word-x"],
        )
        .unwrap();
        assert_eq!(sent_with_one, "was ****");
        assert_eq!(details(r#"{"success":false,"error":{"code":119}}"#), None);
        assert_eq!(details(r#"{"success":true,"data":{}}"#), None);
        assert_eq!(details("<html>"), None);
        let long = format!(
            r#"{{"success":false,"error":{{"code":120,"errors":"{}"}}}}"#,
            "word ".repeat(100)
        );
        assert!(details(&long).unwrap().chars().count() <= DETAILS_MAX + 1);
    }
}
