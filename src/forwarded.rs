//! Where the caller reached us: behind a reverse proxy the public scheme, host and path prefix
//! differ from what the gateway sees. `X-Forwarded-For/-Proto/-Host/-Prefix` and `Forwarded`
//! are honoured only from peers in `server.trusted_proxies`; anyone else could forge them.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;

/// The peers whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            // An IPv4 peer may show up as an IPv4-mapped IPv6 address on dual-stack sockets.
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            self.0.iter().any(|net| net.contains(&ip))
        })
    }
}

/// The public view of the current request.
#[derive(Clone, Debug)]
pub struct PublicOrigin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host (and port) the caller used.
    pub host: String,
    /// Path prefix the proxy removed (`/chat`), or empty.
    pub prefix: String,
    /// The caller's address (the first `X-Forwarded-For` hop when the peer is trusted).
    pub client_ip: Option<IpAddr>,
}

impl PublicOrigin {
    /// `scheme://host/prefix`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.prefix)
    }

    /// The origin of a request, trusting forwarding headers only from `proxies`.
    pub fn resolve(req: &ServiceRequest, proxies: &TrustedProxies) -> Self {
        let peer = req.peer_addr().map(|a| a.ip());
        let direct = Self::direct(req.request());
        if !proxies.trusts(peer) {
            return direct;
        }
        let headers = req.headers();
        let forwarded = parse_forwarded(headers);
        let scheme = header(headers, "x-forwarded-proto")
            .or(forwarded.proto)
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| s == "http" || s == "https")
            .unwrap_or(direct.scheme);
        let host = header(headers, "x-forwarded-host")
            .or(forwarded.host)
            .filter(|h| is_valid_host(h))
            .unwrap_or(direct.host);
        let prefix = header(headers, "x-forwarded-prefix")
            .map_or_else(String::new, |p| normalize_prefix(&p));
        let client_ip = header(headers, "x-forwarded-for")
            .and_then(|v| v.split(',').next().and_then(|ip| ip.trim().parse().ok()))
            .or(forwarded.for_ip)
            .or(peer);
        Self {
            scheme,
            host,
            prefix,
            client_ip,
        }
    }

    /// The origin stored on the request by the request middleware (or the direct view).
    pub fn of(req: &HttpRequest) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self::direct(req))
    }

    /// What the connection itself says. Not actix's `connection_info()`: that believes
    /// forwarding headers from any peer.
    fn direct(req: &HttpRequest) -> Self {
        let config = req.app_config();
        Self {
            scheme: if config.secure() { "https" } else { "http" }.to_owned(),
            host: req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_valid_host(h))
                .map_or_else(|| config.host().to_owned(), str::to_owned),
            prefix: String::new(),
            client_ip: req.peer_addr().map(|a| a.ip()),
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    // Proxies that append keep the first (outermost) value first.
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// A host header value: letters, digits, dots, dashes, brackets and colons only.
fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// `/chat/` → `/chat`; anything that is not a clean absolute path → no prefix.
fn normalize_prefix(raw: &str) -> String {
    let trimmed = raw.trim().trim_end_matches('/');
    let clean = trimmed.starts_with('/')
        && !trimmed.contains("//")
        && !trimmed.split('/').any(|s| s == "..")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    if clean {
        trimmed.to_owned()
    } else {
        String::new()
    }
}

#[derive(Default)]
struct ForwardedFirst {
    proto: Option<String>,
    host: Option<String>,
    for_ip: Option<IpAddr>,
}

/// The first element of an RFC 7239 `Forwarded` header.
fn parse_forwarded(headers: &HeaderMap) -> ForwardedFirst {
    let mut result = ForwardedFirst::default();
    let Some(value) = headers.get("forwarded").and_then(|v| v.to_str().ok()) else {
        return result;
    };
    let first = value.split(',').next().unwrap_or_default();
    for pair in first.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "proto" => result.proto = Some(value.to_owned()),
            "host" => result.host = Some(value.to_owned()),
            "for" => {
                let ip = value
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or(value);
                result.for_ip = ip.parse().ok();
            }
            _ => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec!["127.0.0.0/8".parse().unwrap()])
    }

    fn request(peer: &str) -> TestRequest {
        TestRequest::get()
            .uri("/openapi.json")
            .peer_addr(format!("{peer}:40000").parse().unwrap())
            .insert_header(("host", "127.0.0.1:8080"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("x-forwarded-host", "example.org"))
            .insert_header(("x-forwarded-prefix", "/chat/"))
            .insert_header(("x-forwarded-for", "203.0.113.9, 127.0.0.1"))
    }

    #[test]
    fn trusted_proxies_set_the_public_origin() {
        let origin = PublicOrigin::resolve(&request("127.0.0.1").to_srv_request(), &proxies());
        assert_eq!(origin.base_url(), "https://example.org/chat");
        assert_eq!(origin.client_ip, Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn untrusted_peers_cannot_forge_the_origin() {
        let origin = PublicOrigin::resolve(&request("198.51.100.7").to_srv_request(), &proxies());
        assert_eq!(origin.base_url(), "http://127.0.0.1:8080");
        assert_eq!(origin.client_ip, Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn forwarded_header_and_bad_prefixes() {
        let req = TestRequest::get()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header((
                "forwarded",
                "for=\"[2001:db8::1]\";proto=https;host=chat.example.org",
            ))
            .insert_header(("x-forwarded-prefix", "/../etc"))
            .to_srv_request();
        let origin = PublicOrigin::resolve(&req, &proxies());
        assert_eq!(origin.base_url(), "https://chat.example.org");
        assert_eq!(origin.client_ip, Some("2001:db8::1".parse().unwrap()));
    }
}
