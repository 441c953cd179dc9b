//! Rate limits: a token bucket per caller. [`RateLimiter`] is keyed by any type, so a limit
//! per API key, per client address (and later per hook secret) share one implementation;
//! [`refuses`] and [`refuse`] apply the configured ones to every request except the probes and
//! hooks.
//!
//! An empty bucket answers 429 `rate_limited` with `Retry-After` and the `RateLimit` /
//! `RateLimit-Policy` headers of the IETF draft (draft-ietf-httpapi-ratelimit-headers).

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};

use crate::api::error::{ApiError, ProblemCode};
use crate::auth::{ApiKeys, KeyId};
use crate::config::RateLimitSettings;
use crate::forwarded::PublicOrigin;
use crate::telemetry::FastMap;

/// Buckets kept at most per limiter; beyond it full (idle) buckets are dropped first, then the
/// least recently used, so a flood of new callers cannot grow memory without bound.
const MAX_BUCKETS: usize = 50_000;

/// Refill rate and size of a bucket.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    fn per_sec(self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Seconds an empty bucket takes to fill up: the `w` of `RateLimit-Policy`.
    fn window_secs(self) -> u64 {
        (f64::from(self.burst) / self.per_sec()).ceil() as u64
    }
}

/// What a check decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole requests left in the bucket after this one.
    pub remaining: u32,
    /// When refused: time until the next request is allowed; else until the bucket is full.
    pub reset: Duration,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key.
pub struct RateLimiter<K> {
    quota: Quota,
    buckets: Mutex<FastMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            buckets: Mutex::new(FastMap::default()),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one request from `key`'s bucket if it has one.
    pub fn check(&self, key: &K) -> Decision {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Decision {
        let rate = self.quota.per_sec();
        let burst = f64::from(self.quota.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            Self::make_room(&mut buckets, now, rate, burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = if allowed {
            burst - bucket.tokens
        } else {
            1.0 - bucket.tokens
        };
        Decision {
            allowed,
            remaining: bucket.tokens.floor() as u32,
            reset: Duration::from_secs_f64((missing / rate).max(0.0)),
        }
    }

    fn make_room(buckets: &mut FastMap<K, Bucket>, now: Instant, rate: f64, burst: f64) {
        // A bucket that has refilled is the same as no bucket.
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
        });
        if buckets.len() >= MAX_BUCKETS
            && let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }
}

/// The configured limits, shared by all workers.
pub struct CallerLimits {
    keys: RateLimiter<KeyId>,
    addresses: RateLimiter<IpAddr>,
}

impl CallerLimits {
    /// `None` when rate limiting is off.
    pub fn from_settings(settings: &RateLimitSettings) -> Option<Self> {
        settings.enabled.then(|| Self {
            keys: RateLimiter::new(Quota {
                per_minute: settings.key_per_minute,
                burst: settings.key_burst,
            }),
            addresses: RateLimiter::new(Quota {
                per_minute: settings.ip_per_minute,
                burst: settings.ip_burst,
            }),
        })
    }
}

/// The client's address, as limits count it: the one trusted proxies name, else the peer's,
/// an IPv6 client's /64 as one ([`address_key`]).
pub fn client_address(req: &actix_web::HttpRequest) -> Option<IpAddr> {
    let named = req
        .extensions()
        .get::<PublicOrigin>()
        .and_then(|o| o.client_ip);
    named
        .or_else(|| req.peer_addr().map(|a| a.ip()))
        .map(address_key)
}

/// An IPv6 client usually holds a whole /64: one bucket for it, or it would get 2^64 buckets.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

/// Liveness and readiness probes are never limited: a throttled probe restarts the pod.
/// The senders' doors are not either (hooks, and the doors that speak ntfy's, Synology's,
/// Matrix's and Telegram's APIs): their senders drop a notification on any 4xx (a 429
/// included), so a burst is stored and paced by the outbox instead, and their refusals are in
/// those APIs' words, which a 429 of the limits is not (Apprise gives up after one retry); a
/// wrong secret costs one hash and a 404. Nor are Chat's calls to `/inbound/`: the NAS is one
/// address whose bucket its other calls may share, and whether Chat retries a refused call is
/// not known, so a 429 could lose the event; a wrong token costs one comparison and a 403.
fn exempt(method: &actix_web::http::Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
        || path.starts_with("/inbound/")
        || crate::api::is_senders_door(method, path)
}

/// A request the limits refused, with what the 429 tells.
#[derive(Clone, Copy)]
struct Refused {
    decision: Decision,
    quota: Quota,
    policy: &'static str,
}

/// Takes the request from the presented API key's bucket, or from the client address's for
/// requests without a valid key; whether the limits refuse it. Every request is checked here;
/// only refused ones go on to [`refuse`] (through [`crate::api::divert::Divert`]), so an allowed
/// request carries no middleware future of its own.
pub fn refuses(req: &ServiceRequest) -> bool {
    let Some(limits) = req.app_data::<web::Data<CallerLimits>>() else {
        return false;
    };
    if exempt(req.method(), req.path()) {
        return false;
    }
    let key = req
        .app_data::<web::Data<ApiKeys>>()
        .and_then(|keys| keys.identify(req.request()));
    let (limiter_decision, quota, policy) = match key {
        Some(key) => (limits.keys.check(&key), limits.keys.quota(), "key"),
        None => {
            let Some(ip) = client_address(req.request()) else {
                return false;
            };
            (
                limits.addresses.check(&ip),
                limits.addresses.quota(),
                "address",
            )
        }
    };
    if limiter_decision.allowed {
        return false;
    }
    req.extensions_mut().insert(Refused {
        decision: limiter_decision,
        quota,
        policy,
    });
    true
}

/// Middleware for the requests [`refuses`] refused: 429 `rate_limited` with `Retry-After` and
/// the `RateLimit` headers.
pub async fn refuse(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let refused = req.extensions_mut().remove::<Refused>();
    let Some(Refused {
        decision,
        quota,
        policy,
    }) = refused
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let retry_after = decision.reset.as_secs_f64().ceil().max(1.0) as u64;
    let error = ApiError::new(
        ProblemCode::RateLimited,
        format!(
            "more than {} requests in a burst or {} a minute from this {policy}; retry in {retry_after} s",
            quota.burst, quota.per_minute
        ),
    )
    .with_retry_after(retry_after);
    let mut response = error.error_response();
    let headers = response.headers_mut();
    let policy_value = format!("\"{policy}\";q={};w={}", quota.burst, quota.window_secs());
    let state_value = format!("\"{policy}\";r={};t={retry_after}", decision.remaining);
    for (name, value) in [
        ("ratelimit-policy", policy_value),
        ("ratelimit", state_value),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(req.into_response(response))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probes_and_the_senders_doors_are_never_limited() {
        use actix_web::http::Method;
        let exempt = |method: Method, path: &str| super::exempt(&method, path);
        for path in [
            "/healthz",
            "/hooks/alerts/secret",
            "/_matrix/client/v3/rooms/a/send/m.room.message/t",
            "/telegram/bot1:x/sendMessage",
            "/ntfy",
            "/ntfy/alerts",
            "/webapi/entry.cgi",
            "/inbound/ops",
        ] {
            assert!(exempt(Method::POST, path), "{path}");
        }
        assert!(exempt(Method::POST, "/") && !exempt(Method::GET, "/"));
        assert!(!exempt(Method::GET, "/api/v1/channels") && !exempt(Method::POST, "/hookshot"));
        assert!(!exempt(Method::GET, "/ntfyx") && !exempt(Method::GET, "/metrics"));
    }

    use super::*;

    #[test]
    fn a_bucket_empties_and_refills() {
        let limiter = RateLimiter::new(Quota {
            per_minute: 60,
            burst: 3,
        });
        let start = Instant::now();
        for remaining in [2, 1, 0] {
            let decision = limiter.check_at(&"a", start);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = limiter.check_at(&"a", start);
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_secs(1));
        // Other keys have their own bucket.
        assert!(limiter.check_at(&"b", start).allowed);
        // One token a second.
        assert!(
            limiter
                .check_at(&"a", start + Duration::from_secs(1))
                .allowed
        );
        assert!(
            !limiter
                .check_at(&"a", start + Duration::from_secs(1))
                .allowed
        );
        let later = limiter.check_at(&"a", start + Duration::from_secs(60));
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            address_key("::ffff:203.0.113.9".parse().unwrap()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
