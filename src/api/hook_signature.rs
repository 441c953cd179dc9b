//! Signed hook bodies: the HMAC-SHA256 signatures GitHub, Gitea, Forgejo, Gogs and Grafana put
//! on what they send, and Standard Webhooks' (a `whsec_` secret: Svix-based senders, another
//! gateway's subscriptions), checked against the hook's `signing_secret`. A sender's secret
//! then authenticates it without appearing in the URL (senders-delivery-events A.3, A.9, D).

use actix_web::http::header::{HeaderMap, HeaderName};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from now (Grafana's `timestamp_header`): a captured
/// request replayed later than this is refused.
const TIMESTAMP_TOLERANCE_SECS: u64 = 300;

/// How long after its first copy a request signed with a timestamp can still be replayed as
/// it was captured: its timestamp may be up to the tolerance behind the first copy's arrival,
/// and is accepted until the tolerance after it.
pub const REPLAYABLE_FOR_MS: i64 = 2 * TIMESTAMP_TOLERANCE_SECS as i64 * 1000;

/// Headers the senders sign in, each with the prefix its value has before the hex digest.
const KNOWN_HEADERS: [(&str, &str); 5] = [
    // GitHub; Gitea and Forgejo send it too.
    ("x-hub-signature-256", "sha256="),
    ("x-gitea-signature", ""),
    ("x-forgejo-signature", ""),
    ("x-gogs-signature", ""),
    ("x-grafana-alerting-signature", ""),
];

/// A hook's signature check.
#[derive(Clone, Debug)]
pub struct Signing {
    secret: SecretString,
    /// A header of the hook's own choosing (bare hex), instead of the known ones.
    header: Option<HeaderName>,
    /// Grafana's timestamp header: the signed text is `<timestamp>:<body>`.
    timestamp_header: Option<HeaderName>,
}

/// Why a request's signature was not accepted (logged for the operator, never answered).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("no signature header")]
    Missing,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signed timestamp is missing, malformed or more than 5 minutes away")]
    Stale,
}

impl Signing {
    /// From settings validated by the config (header names are tokens).
    pub fn new(
        secret: SecretString,
        header: Option<&str>,
        timestamp_header: Option<&str>,
    ) -> Option<Self> {
        let name = |h: &str| HeaderName::from_bytes(h.as_bytes()).ok();
        Some(Self {
            secret,
            header: match header {
                Some(h) => Some(name(h)?),
                None => None,
            },
            timestamp_header: match timestamp_header {
                Some(h) => Some(name(h)?),
                None => None,
            },
        })
    }

    /// Whether this is a Standard Webhooks check (a `whsec_` secret): its message id is signed.
    pub fn is_standard(&self) -> bool {
        self.secret.expose_secret().starts_with("whsec_")
    }

    /// What a captured copy of a request signed over a timestamp (Grafana's
    /// `timestamp_header`) replays unchanged: its signature. `None` for other checks: a
    /// signature over the body alone is the same for two sends of the same text, and a
    /// Standard Webhooks request is named by its signed id.
    ///
    /// The MAC itself, decoded: the same MAC verifies under any of the known headers (each with
    /// its own prefix), so a copy sent under another header's name is the same request.
    pub fn replay_name(&self, headers: &HeaderMap) -> Option<String> {
        self.timestamp_header.as_ref()?;
        let (value, prefix) = match &self.header {
            Some(custom) => (headers.get(custom)?, ""),
            None => KNOWN_HEADERS
                .iter()
                .find_map(|(name, prefix)| Some((headers.get(*name)?, *prefix)))?,
        };
        let value = strip_prefix_ignoring_case(value.to_str().ok()?.trim(), prefix)?;
        hex::decode(value).ok().map(hex::encode)
    }

    /// Whether the request carries a signature header this check reads: without one a signed
    /// hook refuses it before reading its body.
    pub fn is_presented(&self, headers: &HeaderMap) -> bool {
        if self.secret.expose_secret().starts_with("whsec_") {
            return standard_header(headers, "signature").is_some();
        }
        match &self.header {
            Some(custom) => headers.contains_key(custom),
            None => KNOWN_HEADERS
                .iter()
                .any(|(name, _)| headers.contains_key(*name)),
        }
    }

    /// Checks the request's signature, at `now` (Unix seconds), over one of `texts`: the body,
    /// or the JSON the body carries (Gitea and Forgejo sign the payload, also when they send it
    /// as a form's or a query's `payload` field). Every signature header present must verify
    /// over the same text: a request cannot pass on one while carrying a forged other.
    pub fn verify(&self, headers: &HeaderMap, texts: &[&[u8]], now: i64) -> Result<(), Unsigned> {
        if self.secret.expose_secret().starts_with("whsec_") {
            return self.verify_standard(headers, texts.first().copied().unwrap_or_default(), now);
        }
        let mut outcome = Err(Unsigned::Missing);
        for text in texts {
            outcome = self.verify_text(headers, text, now);
            if !matches!(outcome, Err(Unsigned::Mismatch)) {
                break;
            }
        }
        outcome
    }

    /// Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>` signatures of
    /// `{webhook-id}.{webhook-timestamp}.{body}` (several while a secret rotates); one that
    /// matches is enough. The timestamp must be within 5 minutes of now.
    fn verify_standard(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Unsigned> {
        let (Some(id), Some(stamp), Some(signatures)) = (
            standard_header(headers, "id"),
            standard_header(headers, "timestamp"),
            standard_header(headers, "signature"),
        ) else {
            return Err(Unsigned::Missing);
        };
        let at: i64 = stamp.trim().parse().map_err(|_| Unsigned::Stale)?;
        if now.abs_diff(at) > TIMESTAMP_TOLERANCE_SECS {
            return Err(Unsigned::Stale);
        }
        let body = std::str::from_utf8(body).map_err(|_| Unsigned::Mismatch)?;
        let expected = crate::events::subscriptions::signature(&self.secret, id, at, body);
        let matches = signatures
            .split_ascii_whitespace()
            .fold(false, |found, presented| {
                found | bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
            });
        if matches {
            Ok(())
        } else {
            Err(Unsigned::Mismatch)
        }
    }

    fn verify_text(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Unsigned> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        if let Some(name) = &self.timestamp_header {
            let stamp = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(Unsigned::Stale)?;
            let at: i64 = stamp.trim().parse().map_err(|_| Unsigned::Stale)?;
            if now.abs_diff(at) > TIMESTAMP_TOLERANCE_SECS {
                return Err(Unsigned::Stale);
            }
            mac.update(stamp.trim().as_bytes());
            mac.update(b":");
        }
        mac.update(body);
        let custom = self.header.as_ref().map(|h| (h.as_str(), ""));
        let candidates: Vec<(&str, &str)> = match custom {
            Some(custom) => vec![custom],
            None => KNOWN_HEADERS.to_vec(),
        };
        let mut checked = false;
        for (name, prefix) in candidates {
            for value in headers.get_all(name) {
                let digest = value
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .and_then(|v| strip_prefix_ignoring_case(v, prefix))
                    .and_then(|hex_digest| hex::decode(hex_digest).ok())
                    .ok_or(Unsigned::Mismatch)?;
                mac.clone()
                    .verify_slice(&digest)
                    .map_err(|_| Unsigned::Mismatch)?;
                checked = true;
            }
        }
        if checked {
            Ok(())
        } else {
            Err(Unsigned::Missing)
        }
    }
}

fn strip_prefix_ignoring_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// A Standard Webhooks header (`id`, `timestamp`, `signature`): `webhook-<name>`, or Svix's own
/// `svix-<name>`, which every Svix sender uses unless its plan white-labels them (as Svix's
/// libraries read them).
pub fn standard_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = |prefix: &str| {
        headers
            .get(format!("{prefix}{name}"))
            .and_then(|v| v.to_str().ok())
    };
    value("webhook-").or_else(|| value("svix-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    /// GitHub's documented example of this secret and body ("Validating webhook deliveries").
    const GITHUB_EXAMPLE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn signing(header: Option<&str>, timestamp: Option<&str>) -> Signing {
        Signing::new(SecretString::from(SECRET), header, timestamp).unwrap()
    }

    #[test]
    fn githubs_example_verifies_in_each_forges_header() {
        let s = signing(None, None);
        let github = format!("sha256={GITHUB_EXAMPLE}");
        assert_eq!(
            s.verify(&headers(&[("X-Hub-Signature-256", &github)]), &[BODY], 0),
            Ok(())
        );
        for header in [
            "X-Gitea-Signature",
            "X-Forgejo-Signature",
            "X-Gogs-Signature",
        ] {
            assert_eq!(
                s.verify(&headers(&[(header, GITHUB_EXAMPLE)]), &[BODY], 0),
                Ok(())
            );
        }
        // Gitea sends both; both must hold.
        let both = headers(&[
            ("X-Hub-Signature-256", &github),
            ("X-Gitea-Signature", GITHUB_EXAMPLE),
        ]);
        assert_eq!(s.verify(&both, &[BODY], 0), Ok(()));
        let forged = headers(&[
            ("X-Hub-Signature-256", &github),
            ("X-Gitea-Signature", "00"),
        ]);
        assert_eq!(s.verify(&forged, &[BODY], 0), Err(Unsigned::Mismatch));
    }

    #[test]
    fn a_form_or_query_payload_is_checked_as_the_json_it_carries() {
        let s = signing(None, None);
        let gitea = headers(&[("X-Gitea-Signature", GITHUB_EXAMPLE)]);
        let form: &[u8] = b"payload=Hello%2C+World%21";
        assert_eq!(s.verify(&gitea, &[form, BODY], 0), Ok(()));
        assert_eq!(s.verify(&gitea, &[form], 0), Err(Unsigned::Mismatch));
        assert_eq!(s.verify(&gitea, &[], 0), Err(Unsigned::Missing));
    }

    #[test]
    fn another_body_secret_or_shape_is_refused() {
        let s = signing(None, None);
        let github = format!("sha256={GITHUB_EXAMPLE}");
        let h = headers(&[("X-Hub-Signature-256", &github)]);
        assert_eq!(
            s.verify(&h, &[b"Hello, World?"], 0),
            Err(Unsigned::Mismatch)
        );
        let other = Signing::new(SecretString::from("another secret!!"), None, None).unwrap();
        assert_eq!(other.verify(&h, &[BODY], 0), Err(Unsigned::Mismatch));
        // GitHub's header without its prefix, or not hex.
        let bare = headers(&[("X-Hub-Signature-256", GITHUB_EXAMPLE)]);
        assert_eq!(s.verify(&bare, &[BODY], 0), Err(Unsigned::Mismatch));
        let junk = headers(&[("X-Gitea-Signature", "zz")]);
        assert_eq!(s.verify(&junk, &[BODY], 0), Err(Unsigned::Mismatch));
        assert_eq!(s.verify(&headers(&[]), &[BODY], 0), Err(Unsigned::Missing));
    }

    #[test]
    fn standard_webhooks_signatures_verify_with_a_whsec_secret() {
        // The specification's reference example (standard-webhooks tests).
        let s = Signing::new(
            SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            None,
            None,
        )
        .unwrap();
        let body: &[u8] = br#"{"test": 2432232314}"#;
        let at = 1_614_265_330;
        let signed = |signature: &str| {
            headers(&[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", signature),
            ])
        };
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(s.verify(&signed(good), &[body], at), Ok(()));
        // While a secret rotates, the sender signs with both; one match is enough.
        let rotating = format!("v1,bm9wZQ== {good}");
        assert_eq!(s.verify(&signed(&rotating), &[body], at + 10), Ok(()));
        assert_eq!(
            s.verify(&signed("v1,bm9wZQ=="), &[body], at),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            s.verify(&signed(good), &[b"{}"], at),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            s.verify(&signed(good), &[body], at + 301),
            Err(Unsigned::Stale)
        );
        assert_eq!(s.verify(&headers(&[]), &[body], at), Err(Unsigned::Missing));
        // Svix's own header names, which its senders use unless white-labelled.
        let svix = headers(&[
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", good),
        ]);
        assert!(s.is_presented(&svix));
        assert_eq!(s.verify(&svix, &[body], at), Ok(()));
        // Timestamps at the ends of the range are stale, not an overflow.
        for stamp in ["-9223372036854775808", "9223372036854775807"] {
            let extreme = headers(&[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", stamp),
                ("webhook-signature", good),
            ]);
            assert_eq!(s.verify(&extreme, &[body], at), Err(Unsigned::Stale));
        }
    }

    #[test]
    fn grafanas_timestamped_signature_verifies_while_fresh() {
        let s = signing(Some("X-Signature"), Some("X-Grafana-Alerting-Timestamp"));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"1700000000:");
        mac.update(BODY);
        let hex_digest = hex::encode(mac.finalize().into_bytes());
        let signed = headers(&[
            ("X-Signature", &hex_digest),
            ("X-Grafana-Alerting-Timestamp", "1700000000"),
        ]);
        assert_eq!(s.verify(&signed, &[BODY], 1_700_000_100), Ok(()));
        assert_eq!(
            s.verify(&signed, &[BODY], 1_700_000_400),
            Err(Unsigned::Stale)
        );
        // The known headers are not looked at when the hook names its own.
        let elsewhere = headers(&[
            ("X-Grafana-Alerting-Signature", &hex_digest),
            ("X-Grafana-Alerting-Timestamp", "1700000000"),
        ]);
        assert_eq!(
            s.verify(&elsewhere, &[BODY], 1_700_000_000),
            Err(Unsigned::Missing)
        );
        // The timestamp is part of what is signed.
        let moved = headers(&[
            ("X-Signature", &hex_digest),
            ("X-Grafana-Alerting-Timestamp", "1700000001"),
        ]);
        assert_eq!(
            s.verify(&moved, &[BODY], 1_700_000_000),
            Err(Unsigned::Mismatch)
        );
        let unstamped = headers(&[("X-Signature", &hex_digest)]);
        assert_eq!(
            s.verify(&unstamped, &[BODY], 1_700_000_000),
            Err(Unsigned::Stale)
        );
    }
}
