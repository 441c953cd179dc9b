//! The gateway's own API keys: `Authorization: Bearer <key>`, checked against SHA-256 hashes
//! from the configuration in constant time, with scopes `read` < `write` < `admin` (each scope
//! includes the ones before it).

use std::future::{Ready, ready};
use std::marker::PhantomData;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::{ApiError, ProblemCode};
use crate::config::AuthSettings;
pub use crate::config::Scope;

struct Key {
    name: String,
    hash: [u8; 32],
    scope: Scope,
}

/// The configured keys, or an open gate when authentication is off.
pub struct ApiKeys {
    keys: Vec<Key>,
    open: bool,
}

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
pub fn bearer_token(headers: &header::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|v| !v.is_empty())
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
                    name: name.clone(),
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
    pub fn identify(&self, headers: &header::HeaderMap) -> Option<&str> {
        self.find(Self::presented(headers)?)
            .map(|key| key.name.as_str())
    }

    fn presented(headers: &header::HeaderMap) -> Option<&str> {
        bearer_token(headers)
    }

    fn find(&self, presented: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every key without stopping early, so timing reveals nothing.
        let mut found: Option<&Key> = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }

    /// Checks the request's bearer key for `needed`; returns the key's name.
    pub fn authorize(&self, req: &HttpRequest, needed: Scope) -> Result<Option<String>, ApiError> {
        if self.open {
            return Ok(None);
        }
        let presented = Self::presented(req.headers()).ok_or_else(|| {
            ApiError::new(
                ProblemCode::Unauthorized,
                "send an API key as `Authorization: Bearer <key>`",
            )
        })?;
        let key = self
            .find(presented)
            .ok_or_else(|| ApiError::new(ProblemCode::Unauthorized, "the API key is not valid"))?;
        if key.scope < needed {
            return Err(ApiError::new(
                ProblemCode::InsufficientScope,
                format!(
                    "this operation needs the `{}` scope; the key has `{}`",
                    needed.as_str(),
                    key.scope.as_str()
                ),
            ));
        }
        Ok(Some(key.name.clone()))
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
    pub key_name: Option<String>,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequest for Authorized<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<ApiKeys>>() {
            Some(keys) => keys.authorize(req, S::SCOPE).map(|key_name| Authorized {
                key_name,
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

    #[test]
    fn scopes_are_enforced() {
        let keys = keys();
        let req = TestRequest::default()
            .insert_header(("Authorization", "Bearer r-key"))
            .to_http_request();
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
        let wrong = TestRequest::default()
            .insert_header(("Authorization", "Bearer nope"))
            .to_http_request();
        assert_eq!(
            keys.authorize(&wrong, Scope::Read).unwrap_err().code(),
            ProblemCode::Unauthorized
        );
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_key("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }
}
