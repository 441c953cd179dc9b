//! Defences against web pages a user's browser opens: DNS rebinding (a foreign `Host`) and,
//! while API keys are not required, cross-site requests (CSRF: any page could post a form).

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::Method;

use crate::api::error::{ApiError, ProblemCode};
use crate::forwarded::{Host, PublicOrigin};

/// What the guard checks, built once from the settings.
pub struct BrowserGuard {
    /// Keys are not required (`auth.disabled`, or demo mode without keys).
    pub open: bool,
    /// `server.public_url`: the only host callers may name.
    pub public_url: Option<url::Url>,
    /// `server.cors_origins`: foreign origins allowed to call.
    pub cors_origins: Vec<String>,
}

impl BrowserGuard {
    /// The request's problem, if it has one (checked by the front door).
    pub(crate) fn refusal(
        &self,
        req: &ServiceRequest,
        origin: &PublicOrigin,
    ) -> Result<(), ApiError> {
        if !any_host_may_name(req.method(), req.path()) {
            // A `Host` that is no host name or address is not taken for the configured one
            // (what the origin falls back to): it is refused where the host is checked.
            let guarded = self.open || self.public_url.is_some();
            if guarded
                && req
                    .headers()
                    .get(actix_web::http::header::HOST)
                    .is_some_and(|host| Host::of_header(host).is_none())
            {
                return Err(ApiError::invalid(
                    "the Host header is not a host name or address",
                ));
            }
            if !self.host_allowed(&origin.host) {
                return Err(ApiError::new(
                    ProblemCode::MisdirectedRequest,
                    "this gateway does not answer for that host name",
                ));
            }
        }
        if self.open {
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let allowed_origin =
                |o: &str| self.origin_allowed(o, origin.scheme, origin.host.as_str());
            let foreign_origin = header("origin").is_some_and(|o| !allowed_origin(o));
            let cross_site = header("sec-fetch-site") == Some("cross-site")
                && !header("origin").is_some_and(allowed_origin);
            if foreign_origin || cross_site {
                return Err(ApiError::new(
                    ProblemCode::CrossSiteRequest,
                    "API keys are not required here, so requests from other sites are refused",
                ));
            }
        }
        Ok(())
    }

    /// An `Origin` the gateway's own pages have: its public URL's origin (behind a proxy that
    /// ends TLS, the scheme the gateway sees is not the browser's), the origin as seen, or one
    /// of `server.cors_origins`.
    fn origin_allowed(&self, origin: &str, seen_scheme: &str, seen_host: &str) -> bool {
        let public = self
            .public_url
            .as_ref()
            .map(|url| url.origin().ascii_serialization());
        public.is_some_and(|public| public.eq_ignore_ascii_case(origin))
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                scheme.eq_ignore_ascii_case(seen_scheme) && host.eq_ignore_ascii_case(seen_host)
            })
            || self
                .cors_origins
                .iter()
                .any(|c| c.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// With `server.public_url`, only its host (and port); without it, while keys are not
    /// required, only addresses and `localhost` (a rebound DNS name is neither); else any.
    fn host_allowed(&self, host: &str) -> bool {
        match &self.public_url {
            Some(url) => {
                let (name, port) = split_host(host);
                // Without a port the caller used the public URL's default one (behind a proxy
                // the scheme the gateway sees may differ from the caller's).
                url.host_str()
                    .is_some_and(|h| h.trim_matches(['[', ']']).eq_ignore_ascii_case(name))
                    && port.is_none_or(|p| Some(p) == url.port_or_known_default())
            }
            None if self.open => {
                let name = split_host(host).0.trim_end_matches('.');
                let tail = name.len().saturating_sub(".localhost".len());
                name.parse::<IpAddr>().is_ok()
                    || name.eq_ignore_ascii_case("localhost")
                    || name
                        .get(tail..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(".localhost"))
            }
            None => true,
        }
    }
}

/// Routes that answer whatever host name the caller used. Probes and scrapers address the pod
/// by IP. Senders (`/hooks`) and Chat (`/inbound`) reach the gateway by whatever name leads to
/// it (a Kubernetes Service name, a LAN address) and prove themselves with a secret or token
/// of the route's own, which a page rebound to the gateway's address does not have: the Host
/// check guards what a browser could reach with no secret of its own.
/// The other senders' doors (Synology's `entry.cgi`, ntfy's, Matrix's and Telegram's APIs) are
/// hooks too, opened with the hook's secret: a sender set up with the gateway's LAN address
/// had its alerts refused with 421 once `public_url` was set.
fn any_host_may_name(method: &Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/inbound/")
        || crate::api::is_senders_door(method, path)
}

/// `example.org:8443` → (`example.org`, 8443); `[::1]:80` → (`::1`, 80).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (name, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(open: bool, public_url: Option<&str>) -> BrowserGuard {
        BrowserGuard {
            open,
            public_url: public_url.map(|u| u.parse().unwrap()),
            cors_origins: vec!["https://app.example.org".into()],
        }
    }

    #[test]
    fn hosts_are_checked_against_the_public_url() {
        let g = guard(false, Some("https://chat.example.org/chat"));
        assert!(g.host_allowed("chat.example.org"));
        assert!(g.host_allowed("CHAT.example.org:443"));
        assert!(!g.host_allowed("chat.example.org:8443"));
        assert!(!g.host_allowed("evil.example"));
        assert!(guard(false, None).host_allowed("anything.example"));
        let open = guard(true, None);
        assert!(open.host_allowed("127.0.0.1:8080"));
        assert!(open.host_allowed("[::1]:8080"));
        assert!(open.host_allowed("localhost:8080"));
        assert!(!open.host_allowed("rebind.attacker.example:8080"));
        assert!(open.host_allowed("LocalHost."));
        assert!(open.host_allowed("app.LOCALHOST:3000"));
        assert!(!open.host_allowed("localhost.attacker.example"));
        assert!(!open.host_allowed("notlocalhost"));
        assert!(!open.host_allowed("é.localhos"));
    }

    #[test]
    fn the_public_urls_origin_is_the_gateways_own_behind_a_proxy_that_ends_tls() {
        let g = guard(true, Some("https://chat.example.org/chat"));
        // The proxy speaks plain HTTP to the gateway; the browser's page is https.
        assert!(g.origin_allowed("https://chat.example.org", "http", "chat.example.org"));
        assert!(g.origin_allowed("http://chat.example.org", "http", "chat.example.org"));
        assert!(!g.origin_allowed("https://chat.example.org:8443", "http", "chat.example.org"));
        assert!(!g.origin_allowed("https://evil.example", "http", "chat.example.org"));
        assert!(g.origin_allowed("https://app.example.org", "http", "chat.example.org"));
        let without = guard(true, None);
        assert!(!without.origin_allowed("https://127.0.0.1:8080", "http", "127.0.0.1:8080"));
        assert!(without.origin_allowed("http://127.0.0.1:8080", "http", "127.0.0.1:8080"));
    }
}
