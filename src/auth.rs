//! The gateway's own API keys: `Authorization: Bearer <key>`, checked against SHA-256 hashes
//! from the configuration in constant time, with scopes `read` < `write` < `admin` (each scope
//! includes the ones before it).

use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::header, web};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::{ApiError, Challenge, ProblemCode};
use crate::config::AuthSettings;
pub use crate::config::Scope;

struct Key {
    name: Arc<str>,
    hash: [u8; 32],
    scope: Scope,
}

/// A configured key, by its place in [`ApiKeys`]: what the rate limit counts requests by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(usize);

/// The configured key a request presented (`None`: none, or not a configured one), found once
/// per request and kept in its extensions: the rate limit, idempotency and the route's own
/// check all ask, and finding it means hashing the presented key.
#[derive(Clone, Copy)]
struct Presented {
    /// Whether the request has a bearer token at all.
    token: bool,
    key: Option<KeyId>,
}

/// The configured keys, or an open gate when authentication is off.
pub struct ApiKeys {
    keys: Vec<Key>,
    open: bool,
}

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
pub fn bearer_token(headers: &header::HeaderMap) -> Option<&str> {
    credentials(headers, "Bearer ")
}

/// The credentials of an `Authorization` header in `scheme` (its name and the space after it),
/// if they are not empty. The scheme's name is case-insensitive (RFC 9110, section 11.1). Two
/// `Authorization` headers are none: which one counts would be a guess.
pub fn credentials<'h>(headers: &'h header::HeaderMap, scheme: &str) -> Option<&'h str> {
    let mut sent = headers.get_all(header::AUTHORIZATION);
    let value = sent.next()?.to_str().ok()?;
    if sent.next().is_some() {
        return None;
    }
    let (given, credentials) = value.split_at_checked(scheme.len())?;
    if !given.eq_ignore_ascii_case(scheme) {
        return None;
    }
    Some(credentials.trim_ascii()).filter(|credentials| !credentials.is_empty())
}

/// Hex SHA-256 of a key, as configured in `auth.keys.<name>.hash`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// `open_without_keys`: demo mode may run without keys (it only binds loopback).
    pub fn from_settings(settings: &AuthSettings, open_without_keys: bool) -> Self {
        let keys = settings
            .keys
            .iter()
            .filter_map(|(name, key)| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(key.hash.as_ref()?.expose_secret(), &mut hash).ok()?;
                // Validation refused keys without scopes; the widest one counts.
                let scope = key.scopes.iter().copied().max()?;
                Some(Key {
                    name: name.as_str().into(),
                    hash,
                    scope,
                })
            })
            .collect::<Vec<_>>();
        let open = settings.disabled || (keys.is_empty() && open_without_keys);
        Self { keys, open }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The configured key the request presents, if any (whether or not keys are required).
    pub fn identify(&self, req: &HttpRequest) -> Option<KeyId> {
        self.presented(req).key
    }

    fn presented(&self, req: &HttpRequest) -> Presented {
        if let Some(known) = req.extensions().get::<Presented>() {
            return *known;
        }
        let token = bearer_token(req.headers());
        let presented = Presented {
            token: token.is_some(),
            key: token.and_then(|token| self.find(token)),
        };
        req.extensions_mut().insert(presented);
        presented
    }

    fn find(&self, presented: &str) -> Option<KeyId> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every key without stopping early, so timing reveals nothing.
        let mut found = None;
        for (at, key) in self.keys.iter().enumerate() {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(KeyId(at));
            }
        }
        found
    }

    /// Checks the request's bearer key for `needed`; returns the key's name.
    pub fn authorize(
        &self,
        req: &HttpRequest,
        needed: Scope,
    ) -> Result<Option<Arc<str>>, ApiError> {
        Ok(self.authorize_key(req, needed)?.map(|key| key.name.clone()))
    }

    /// As [`ApiKeys::authorize`], with the whole key; `None` when the gate is open.
    fn authorize_key(&self, req: &HttpRequest, needed: Scope) -> Result<Option<&Key>, ApiError> {
        if self.open {
            return Ok(None);
        }
        let KeyId(at) = match self.presented(req) {
            Presented { token: false, .. } => {
                return Err(ApiError::new(
                    ProblemCode::Unauthorized,
                    "send an API key as `Authorization: Bearer <key>`",
                ));
            }
            Presented { key: None, .. } => {
                return Err(
                    ApiError::new(ProblemCode::Unauthorized, "the API key is not valid")
                        .with_challenge(Challenge::InvalidToken),
                );
            }
            Presented { key: Some(key), .. } => key,
        };
        let key = &self.keys[at];
        if key.scope < needed {
            return Err(ApiError::new(
                ProblemCode::InsufficientScope,
                format!(
                    "this operation needs the `{}` scope; the key has `{}`",
                    needed.as_str(),
                    key.scope.as_str()
                ),
            )
            .with_challenge(Challenge::InsufficientScope(needed)));
        }
        Ok(Some(key))
    }
}

/// Marker for the scope an extractor demands.
pub trait RequiredScope {
    const SCOPE: Scope;
}

pub struct Read;
pub struct Write;
pub struct Admin;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Write {
    const SCOPE: Scope = Scope::Write;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// Extractor that admits a request only with a key holding scope `S`.
pub struct Authorized<S> {
    pub key_name: Option<Arc<str>>,
    /// The key has the `admin` scope, or keys are off.
    admin: bool,
    scope: PhantomData<S>,
}

impl<S> Authorized<S> {
    /// The key has the `admin` scope, or keys are off.
    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

impl<S: RequiredScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<ApiKeys>>() {
            Some(keys) => keys.authorize_key(req, S::SCOPE).map(|key| Authorized {
                key_name: key.map(|key| key.name.clone()),
                admin: key.is_none_or(|key| key.scope >= Scope::Admin),
                scope: PhantomData,
            }),
            None => Err(ApiError::new(
                ProblemCode::Internal,
                "API keys are not configured in this app",
            )),
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySettings;
    use actix_web::test::TestRequest;
    use secrecy::SecretString;

    fn keys() -> ApiKeys {
        let mut settings = AuthSettings::default();
        settings.keys.insert(
            "reader".into(),
            KeySettings {
                hash: Some(SecretString::from(hash_key("r-key"))),
                hash_file: None,
                scopes: vec![Scope::Read],
            },
        );
        ApiKeys::from_settings(&settings, true)
    }

    fn bearer(key: &str) -> HttpRequest {
        TestRequest::default()
            .insert_header(("Authorization", format!("Bearer {key}")))
            .to_http_request()
    }

    #[test]
    fn scopes_are_enforced() {
        let keys = keys();
        let req = bearer("r-key");
        assert_eq!(
            keys.authorize(&req, Scope::Read).unwrap().as_deref(),
            Some("reader")
        );
        assert_eq!(
            keys.authorize(&req, Scope::Write).unwrap_err().code(),
            ProblemCode::InsufficientScope
        );
        let anonymous = TestRequest::default().to_http_request();
        assert_eq!(
            keys.authorize(&anonymous, Scope::Read).unwrap_err().code(),
            ProblemCode::Unauthorized
        );
        let wrong = bearer("nope");
        assert_eq!(
            keys.authorize(&wrong, Scope::Read).unwrap_err().code(),
            ProblemCode::Unauthorized
        );
    }

    #[test]
    fn a_key_found_once_answers_every_later_question_about_the_request() {
        let keys = keys();
        let valid = bearer("r-key");
        let found = keys.identify(&valid);
        assert_eq!(found, Some(KeyId(0)));
        assert_eq!(keys.identify(&valid), found);
        assert_eq!(
            keys.authorize(&valid, Scope::Read).unwrap().as_deref(),
            Some("reader")
        );
        let invalid = bearer("r-key-");
        assert_eq!(keys.identify(&invalid), None);
        assert_eq!(
            keys.authorize(&invalid, Scope::Read).unwrap_err().code(),
            ProblemCode::Unauthorized
        );
    }

    #[test]
    fn a_bearer_token_is_the_trimmed_visible_ascii_after_the_scheme() {
        let token = |value: &[u8]| {
            let mut headers = header::HeaderMap::new();
            let value = header::HeaderValue::from_bytes(value).unwrap();
            headers.insert(header::AUTHORIZATION, value);
            bearer_token(&headers).map(str::to_owned)
        };
        assert_eq!(token(b"Bearer r-key").as_deref(), Some("r-key"));
        assert_eq!(token(b"bearer \t r-key  ").as_deref(), Some("r-key"));
        assert_eq!(token(b"BEARER r-key").as_deref(), Some("r-key"));
        assert_eq!(token(b"Bearer a key").as_deref(), Some("a key"));
        for refused in [
            &b"Basic r-key"[..],
            b"Bearer",
            b"Bearer   ",
            b"Bearerr-key",
            "Bearer clé".as_bytes(),
        ] {
            assert_eq!(token(refused), None, "{}", String::from_utf8_lossy(refused));
        }
        assert_eq!(bearer_token(&header::HeaderMap::new()), None);
        // Two headers: neither is taken (first-wins would let the order decide the key).
        let mut twice = header::HeaderMap::new();
        for key in ["Bearer read-key", "Bearer admin-key"] {
            twice.append(header::AUTHORIZATION, header::HeaderValue::from_static(key));
        }
        assert_eq!(bearer_token(&twice), None);
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_key("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
