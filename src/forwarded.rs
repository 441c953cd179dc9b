//! Where the caller reached us: behind a reverse proxy the public scheme, host and path prefix
//! differ from what the gateway sees. `X-Forwarded-For/-Proto/-Host/-Prefix` and `Forwarded`
//! are honoured only from peers in `server.trusted_proxies`; anyone else could forge them.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;

/// `server.public_url` (app data, when configured): the base of every URL the gateway hands out.
#[derive(Clone, Debug)]
pub struct ConfiguredBase(String);

impl ConfiguredBase {
    pub fn new(public_url: &url::Url) -> Self {
        Self(public_url.as_str().trim_end_matches('/').to_owned())
    }
}

/// The absolute URL under which the caller reaches `path` (`/api/v1/…`): below
/// `server.public_url` when it is configured, else below the request's public origin (through
/// a trusted proxy: its scheme, host and `X-Forwarded-Prefix`). The one place `Location`
/// headers and self-links are made.
pub fn public_url_for(req: &HttpRequest, path: &str) -> String {
    match req.app_data::<actix_web::web::Data<ConfiguredBase>>() {
        Some(base) => format!("{}{path}", base.0),
        None => format!("{}{path}", PublicOrigin::of(req).base_url()),
    }
}

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
    pub scheme: &'static str,
    /// Host (and port) the caller used.
    pub host: Host,
    /// Path prefix the proxy removed (`/chat`), or empty.
    pub prefix: String,
    /// The caller's address: behind trusted proxies, the rightmost `X-Forwarded-For` (or
    /// `Forwarded: for=`) hop that is not itself a trusted proxy.
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
        let forwarded = parse_forwarded(headers, proxies);
        let scheme = header(headers, "x-forwarded-proto")
            .or(forwarded.proto)
            .and_then(|s| {
                ["http", "https"]
                    .into_iter()
                    .find(|known| s.eq_ignore_ascii_case(known))
            })
            .unwrap_or(direct.scheme);
        let host = header(headers, "x-forwarded-host")
            .or(forwarded.host)
            .and_then(|h| Host::new(&h))
            .unwrap_or(direct.host);
        let prefix = header(headers, "x-forwarded-prefix")
            .map_or_else(String::new, |p| normalize_prefix(&p));
        let client_ip = client_ip(headers, proxies).or(forwarded.for_ip).or(peer);
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
            scheme: if config.secure() { "https" } else { "http" },
            host: req
                .headers()
                .get(actix_web::http::header::HOST)
                .and_then(Host::of_header)
                // As configured (actix's `server_hostname`, by default `localhost:8080`).
                .or_else(|| HeaderValue::from_str(config.host()).ok().map(Host))
                .unwrap_or_else(|| Host(HeaderValue::from_static("localhost"))),
            prefix: String::new(),
            client_ip: req.peer_addr().map(|a| a.ip()),
        }
    }
}

/// The client address in `X-Forwarded-For`, read from the right: each trusted proxy appends the
/// address it received the request from, so hops left of the first untrusted one are whatever
/// the client chose to send. When every hop is a trusted proxy, the leftmost one.
/// An unparsable hop ends the walk (nothing left of it can be believed).
fn client_ip(headers: &HeaderMap, proxies: &TrustedProxies) -> Option<IpAddr> {
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    walk_from_right(hops.into_iter().map(parse_hop), proxies)
}

/// The rightmost address that is not a trusted proxy, or the leftmost when all are; `None`
/// when a hop cannot be parsed before one is found.
fn walk_from_right(
    hops: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    proxies: &TrustedProxies,
) -> Option<IpAddr> {
    let mut leftmost = None;
    for hop in hops.rev() {
        let ip = hop?;
        if !proxies.trusts(Some(ip)) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// `203.0.113.9`, `[2001:db8::1]`, `"[2001:db8::1]:4711"` or `198.51.100.7:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')
        .and_then(|(ip, _port)| ip.parse::<std::net::Ipv4Addr>().ok())
        .map(IpAddr::V4)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    // Proxies that append keep the first (outermost) value first.
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// The host (and port) a caller used, checked ([`is_valid_host`]). Kept as the header value it
/// came in, so the request's own `Host` is shared, not copied, on every request.
#[derive(Clone, Debug)]
pub struct Host(HeaderValue);

impl Host {
    pub fn new(host: &str) -> Option<Self> {
        if !is_valid_host(host.as_bytes()) {
            return None;
        }
        HeaderValue::from_str(host).ok().map(Self)
    }

    pub(crate) fn of_header(value: &HeaderValue) -> Option<Self> {
        is_valid_host(value.as_bytes()).then(|| Self(value.clone()))
    }

    pub fn as_str(&self) -> &str {
        // Checked by `is_valid_host`: ASCII, so UTF-8 (and std's check of ASCII goes a word at a
        // time, where `HeaderValue::to_str` checks each byte again).
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl std::ops::Deref for Host {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host header value: letters, digits, dots, dashes, brackets and colons only.
fn is_valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.iter().all(|b| {
            matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b':' | b'[' | b']' | b'_')
        })
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

/// An RFC 7239 `Forwarded` header: `proto` and `host` of the first element, `for` walked
/// from the right like `X-Forwarded-For`.
fn parse_forwarded(headers: &HeaderMap, proxies: &TrustedProxies) -> ForwardedFirst {
    let mut result = ForwardedFirst::default();
    let Some(value) = headers.get("forwarded").and_then(|v| v.to_str().ok()) else {
        return result;
    };
    let mut hops = Vec::new();
    for (index, element) in value.split(',').enumerate() {
        let mut for_hop = None;
        for pair in element.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "proto" if index == 0 => result.proto = Some(value.to_owned()),
                "host" if index == 0 => result.host = Some(value.to_owned()),
                "for" => for_hop = Some(parse_hop(value)),
                _ => {}
            }
        }
        // An element without `for` says nothing about the client; an obfuscated one
        // (`for=unknown`, `for=_hidden`) stops the walk like an unparsable hop.
        if let Some(hop) = for_hop {
            hops.push(hop);
        }
    }
    result.for_ip = walk_from_right(hops.into_iter(), proxies);
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
    fn self_urls_carry_the_public_prefix_or_the_configured_base() {
        let proxied = request("127.0.0.1").to_srv_request();
        let origin = PublicOrigin::resolve(&proxied, &proxies());
        proxied.extensions_mut().insert(origin);
        assert_eq!(
            public_url_for(proxied.request(), "/api/v1/channels/5"),
            "https://example.org/chat/api/v1/channels/5"
        );
        let configured = TestRequest::get()
            .app_data(actix_web::web::Data::new(ConfiguredBase::new(
                &"https://chat.example.net/gw/".parse().unwrap(),
            )))
            .to_http_request();
        assert_eq!(
            public_url_for(&configured, "/api/v1/deliveries/x"),
            "https://chat.example.net/gw/api/v1/deliveries/x"
        );
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
    fn the_client_is_the_rightmost_untrusted_hop() {
        // The client sent a forged first hop; the trusted proxy appended the real address.
        let proxies = TrustedProxies::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        let req = TestRequest::get()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "198.51.100.66, 203.0.113.9, 10.1.2.3"))
            .to_srv_request();
        let origin = PublicOrigin::resolve(&req, &proxies);
        assert_eq!(origin.client_ip, Some("203.0.113.9".parse().unwrap()));

        // Only trusted hops: the leftmost.
        let req = TestRequest::get()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "10.1.9.9, 10.1.2.3"))
            .to_srv_request();
        let origin = PublicOrigin::resolve(&req, &proxies);
        assert_eq!(origin.client_ip, Some("10.1.9.9".parse().unwrap()));

        // RFC 7239: the same walk over `for=`.
        let req = TestRequest::get()
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header((
                "forwarded",
                "for=198.51.100.66;proto=https, for=\"[2001:db8::7]:4711\", for=10.1.2.3",
            ))
            .to_srv_request();
        let origin = PublicOrigin::resolve(&req, &proxies);
        assert_eq!(origin.client_ip, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(origin.scheme, "https");
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
