//! Request ids and the per-route metrics handle ([`crate::logging`] writes the log lines).
//!
//! Every request gets an id (the caller's `X-Request-Id` when it is sane, else a new UUID). The
//! [front door](crate::front_door) echoes it in the response header and serves the request
//! inside a task-local [`RequestInfo`]: error bodies name the request from it, and every log
//! line written while the request is served carries its id, method, path and client address
//! ([`crate::logging`] writes them as the `request` span's fields).
//!
//! A task-local, not a tracing span: the span cost every request about 3,000 instructions in
//! tracing's registry (made, entered and left on every poll, closed) and another 3,800 to
//! render its fields into a string of their own that grew by reallocation, before any line was
//! written (callgrind, cached channel list at `info`). The task-local is set once a poll, and
//! its fields are written straight into the line.

use actix_web::dev::ServiceRequest;
use actix_web::http::Method;
use actix_web::http::header::HeaderName;

use crate::metrics::{Metrics, RouteMetrics};
use std::net::IpAddr;
use std::rc::Rc;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request being served: what error bodies name and log lines carry.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub id: String,
    /// As the caller sees it: behind a proxy, with the public prefix; hook secrets masked.
    pub path: String,
    /// Where the path the gateway was asked for (what the log shows) starts in `path`.
    logged_from: usize,
    /// As [`method_label`] names it.
    pub method: &'static str,
    pub client_ip: Option<IpAddr>,
}

impl RequestInfo {
    /// `logged_path` is the path as it may be logged (see [`loggable_path`]); `prefix` the
    /// public prefix a proxy in front of the gateway strips.
    pub fn new(
        id: String,
        method: &'static str,
        prefix: &str,
        logged_path: &str,
        client_ip: Option<IpAddr>,
    ) -> Self {
        RequestInfo {
            id,
            path: [prefix, logged_path].concat(),
            logged_from: prefix.len(),
            method,
            client_ip,
        }
    }

    /// The path as the gateway was asked for it, hook secrets masked: the query string never.
    pub fn logged_path(&self) -> &str {
        &self.path[self.logged_from..]
    }
}

tokio::task_local! {
    static CURRENT_REQUEST: RequestInfo;
}

/// Runs `fut` as the serving of the request `info` describes: error bodies rendered inside name it.
pub(crate) fn serving<F: std::future::Future>(
    info: RequestInfo,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<RequestInfo, F> {
    CURRENT_REQUEST.scope(info, fut)
}

/// Spawns `work` on this worker, inside the current request's scope if there is one: its log
/// lines keep the request's fields though it outlives the request (work that must run to its
/// end when the request is dropped because its caller went away).
pub(crate) fn spawn_for_request<F>(work: F) -> actix_web::rt::task::JoinHandle<F::Output>
where
    F: std::future::Future + 'static,
{
    match current_request() {
        Some(request) => actix_web::rt::spawn(serving(request, work)),
        None => actix_web::rt::spawn(work),
    }
}

/// Runs `f` as part of serving the request `info` describes (log lines written inside carry it).
#[cfg(test)]
pub(crate) fn in_request<R>(info: RequestInfo, f: impl FnOnce() -> R) -> R {
    CURRENT_REQUEST.sync_scope(info, f)
}

/// The request being served by the current task, if any.
pub fn current_request() -> Option<RequestInfo> {
    CURRENT_REQUEST.try_with(Clone::clone).ok()
}

/// `f` of the request being served by the current task, if any, without copying it.
pub(crate) fn with_current_request<R>(f: impl FnOnce(&RequestInfo) -> R) -> Option<R> {
    CURRENT_REQUEST.try_with(f).ok()
}

/// The request method as a metric label and log field: the standard methods, else `other`.
/// Callers may send any token as a method; used raw, each invented one would add series to
/// `/metrics` for as long as the process lives.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Per worker thread: the route metrics of each (registry, method, path) seen. Resolving a
/// path's route template (`match_pattern`) walks the route table's patterns again, and a
/// label set is built and hashed to find its series; a hit here costs one map look-up.
/// Bounded: emptied when full, so paths that are all different (scanners, ids) cannot grow it.
struct RouteCache {
    entries: FastMap<(u64, &'static str), RoutesByPath>,
    len: usize,
}

type RoutesByPath = FastMap<Box<str>, Rc<RouteMetrics>>;

/// A map looked up on every request: foldhash (seeded per process) instead of SipHash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

const ROUTE_CACHE_MAX: usize = 4096;

/// The longest path kept in the cache: a request line may hold 64 KiB, and 4,096 such paths a
/// worker, sent by callers without a key, were 256 MiB. Longer paths are resolved each time.
const MAX_CACHED_PATH: usize = 256;

thread_local! {
    static ROUTES: std::cell::RefCell<RouteCache> = std::cell::RefCell::new(RouteCache {
        entries: Default::default(),
        len: 0,
    });
}

pub(crate) fn route_metrics(
    metrics: &Metrics,
    req: &ServiceRequest,
    method: &'static str,
) -> Rc<RouteMetrics> {
    ROUTES.with_borrow_mut(|cache| {
        let key = (metrics.id(), method);
        if let Some(hit) = cache
            .entries
            .get(&key)
            .and_then(|paths| paths.get(req.path()))
        {
            return hit.clone();
        }
        if cache.len >= ROUTE_CACHE_MAX {
            cache.entries.clear();
            cache.len = 0;
        }
        // Label by route template, never the raw path: unknown paths share one label, and so
        // do methods a route does not serve (every route times ten methods would be series of
        // their own, made by callers refused before the method is looked at: 401, 421, 429).
        let route = req.match_pattern().filter(|_| serves(req, method));
        let resolved = Rc::new(metrics.route(route.as_deref().unwrap_or("unmatched"), method));
        // Unknown paths are not kept: each would take a place, and they share one label.
        if route.is_some() && req.path().len() <= MAX_CACHED_PATH {
            cache
                .entries
                .entry(key)
                .or_default()
                .insert(req.path().into(), resolved.clone());
            cache.len += 1;
        }
        resolved
    })
}

/// Whether the route table lists `method` for the request's path (HEAD with GET where the
/// front door serves it as the GET, as the 405's `Allow` says). A route the table does not
/// know keeps its label.
fn serves(req: &ServiceRequest, method: &str) -> bool {
    let Some(methods) = req
        .app_data::<actix_web::web::Data<crate::api::RouteTable>>()
        .and_then(|table| table.allowed_methods(req.path()))
    else {
        return true;
    };
    let head_as_get = method == "HEAD" && crate::front_door::head_is_get(req.path());
    methods
        .iter()
        .any(|allowed| allowed == method || (head_as_get && allowed == "GET"))
}

pub(crate) fn request_id_from(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A new request id, a random UUID, written without the formatting machinery (`to_string`
/// costs several hundred instructions on every request that brings no id).
fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

/// A route whose segments after its own may hold a secret: a hook's
/// `/hooks/{name}/{secret}` (also sent as `/hook/...`, a common slip, and in any case), and an
/// inbound's `/inbound/{name}` (Chat's token pasted into the URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretPath {
    Hook,
    Inbound,
    /// `/webapi/entry.cgi` (Synology Chat's URL): anything else under `/webapi` may be a token
    /// pasted into the path.
    Webapi,
    /// A Matrix room (`/_matrix/client/{v}/rooms/{room}/…`, `/join/{room}`), which names a
    /// hook: any other room may be the access token put in the wrong place.
    MatrixRoom,
}

impl SecretPath {
    fn of(segment: &str) -> Option<Self> {
        let segment = decoded(segment);
        // ntfy's topics are hooks' names; Telegram's bot token (`/telegram/bot<token>/…`) a
        // hook's secret.
        if segment.eq_ignore_ascii_case("hooks")
            || segment.eq_ignore_ascii_case("hook")
            || segment.eq_ignore_ascii_case("ntfy")
            || segment.eq_ignore_ascii_case("telegram")
        {
            Some(Self::Hook)
        } else if segment.eq_ignore_ascii_case("inbound") {
            Some(Self::Inbound)
        } else if segment.eq_ignore_ascii_case("webapi") {
            Some(Self::Webapi)
        } else {
            None
        }
    }
}

/// The path as it may be logged or echoed: what follows a [`SecretPath`] segment is masked
/// (`/hooks/{name}/{secret}` and anything after it), wherever that segment is (`//hooks/...`
/// from a base URL ending in `/`, a prefix a proxy did not strip); so is everything after it
/// unless it begins with a name `is_known` knows for that route (`/hooks/{secret}`,
/// Mattermost's shape, `/hooks/{secret}/{name}` in the wrong order, `/inbound/{token}`).
/// Segments are compared percent-decoded, as actix routes them (`/hook%73/am/...` reaches the
/// hook `am`), with an encoded `/` (`%2F`) splitting them too, and kept as sent: nothing
/// decoded (a `%0A`, say) reaches a log line.
pub fn loggable_path(
    path: &str,
    is_known: impl Fn(SecretPath, &str) -> bool,
) -> std::borrow::Cow<'_, str> {
    // Cheap for every other path: a look at each segment's start (a substring search costs
    // several hundred instructions on every request, the profile showed).
    let bytes = path.as_bytes();
    let starts = |at: usize, word: &[u8]| {
        bytes
            .get(at..at + word.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(word))
    };
    let maybe_secret = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            || b == b'/'
                && (starts(i + 1, b"hook")
                    || starts(i + 1, b"inbound")
                    || starts(i + 1, b"webapi")
                    || starts(i + 1, b"ntfy")
                    || starts(i + 1, b"telegram")
                    || starts(i + 1, b"bot")
                    || starts(i + 1, b"_matrix")
                    || starts(i + 1, b"scg_"))
    });
    if !maybe_secret {
        return path.into();
    }
    let segments: Vec<&str> = path
        .split('/')
        .flat_map(|s| split_encoded_slashes(s))
        .collect();
    // A Telegram bot token where a sender put it after a Bot API URL not quite the gateway's
    // (`/bot<token>/…` at the root, `/telegram<token>/…`): masked, with all after it.
    let bot_token_at = segments.iter().enumerate().position(|(at, s)| {
        let after_bots = at > 0 && decoded(segments[at - 1]).eq_ignore_ascii_case("bots");
        !after_bots && bears_bot_token(&decoded(s))
    });
    if let Some(at) = bot_token_at {
        let mut kept = segments[..at].to_vec();
        kept.push("****");
        return kept.join("/").into();
    }
    // A key or hook secret as `hash-key` makes them (`scg_…`) anywhere, such as a hook's
    // secret pasted into another sender's URL shape (Slack's `/services/…/{secret}`,
    // Discord's `/api/webhooks/{id}/{secret}`); and a Matrix room that names no hook, which
    // may be the access token put where the room goes: each is masked with all after it, as
    // a hook's secret is, and the path before it still goes through the masking below (a
    // hook's URL taken for a homeserver's: `/hooks/am/{secret}/_matrix/…`).
    let mut segments = segments;
    let generated_secret = segments.iter().position(|s| looks_generated(&decoded(s)));
    let masked_at = [generated_secret, unknown_matrix_room(&segments, &is_known)]
        .into_iter()
        .flatten()
        .min();
    if let Some(at) = masked_at {
        segments.truncate(at);
        segments.push("****");
    }
    let as_read = |segments: &[&str]| match masked_at {
        Some(_) => segments.join("/").into(),
        None => path.into(),
    };
    let Some((at, route)) = segments
        .iter()
        .enumerate()
        .find_map(|(at, s)| SecretPath::of(s).map(|route| (at, route)))
    else {
        return as_read(&segments);
    };
    let rest: Vec<&str> = segments[at + 1..]
        .iter()
        .copied()
        .filter(|s| !s.is_empty())
        .collect();
    let mut kept: Vec<&str> = segments[..=at].to_vec();
    // Only a configured name is kept: any other first segment may be a secret (a
    // `/hooks/{secret}/{name}` pasted the other way round, say).
    match rest.as_slice() {
        [] => return as_read(&segments),
        [name] if is_known(route, &decoded(name)) => return as_read(&segments),
        [name, _, ..] if is_known(route, &decoded(name)) => kept.push(name),
        _ => {}
    }
    kept.push("****");
    kept.join("/").into()
}

/// Whether `text` is shaped as the keys and secrets `hash-key` makes (`scg_…`, in any case):
/// one put where a name goes is not repeated in logs or answers.
pub(crate) fn looks_generated(text: &str) -> bool {
    text.get(..4)
        .is_some_and(|start| start.eq_ignore_ascii_case("scg_"))
}

/// Where a Matrix room (`…/_matrix/client/{v}/rooms/{room}/…`, `…/join/{room}`, in any case,
/// the first segment that is not empty) that names no hook is among `segments`.
fn unknown_matrix_room(
    segments: &[&str],
    is_known: &impl Fn(SecretPath, &str) -> bool,
) -> Option<usize> {
    let is = |segment: &str, word: &str| decoded(segment).eq_ignore_ascii_case(word);
    let matrix = segments.iter().position(|s| is(s, "_matrix"))?;
    let rooms = matrix
        + segments[matrix..]
            .iter()
            .position(|s| is(s, "rooms") || is(s, "join"))?;
    let room = rooms + 1 + segments[rooms + 1..].iter().position(|s| !s.is_empty())?;
    (!is_known(SecretPath::MatrixRoom, &decoded(segments[room]))).then_some(room)
}

/// Whether a path segment holds a bot token after `bot`, `telegram` or `telegrambot` (as
/// senders join a Bot API URL and a token): Telegram's `<digits>:<secret>`, or anything of 8
/// characters or more, since the gateway's bot token is a hook's secret of any shape (`scg_…`
/// from `hash-key`). A bot's name after `/bots/` is not one.
fn bears_bot_token(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    ["telegrambot", "telegram", "bot"].iter().any(|prefix| {
        lower.strip_prefix(prefix).is_some_and(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            (digits > 0 && rest[digits..].starts_with(':')) || rest.chars().count() >= 8
        })
    })
}

/// A segment split at each percent-encoded `/`, which routing may decode into a separator.
fn split_encoded_slashes(segment: &str) -> Vec<&str> {
    let lower = segment.to_ascii_lowercase();
    if !lower.contains("%2f") {
        return vec![segment];
    }
    let mut parts = Vec::new();
    let mut from = 0;
    for (at, _) in lower.match_indices("%2f") {
        parts.push(&segment[from..at]);
        from = at + 3;
    }
    parts.push(&segment[from..]);
    parts
}

fn decoded(segment: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn a_matrix_room_that_names_no_hook_is_masked() {
        use super::SecretPath;
        let path = |p| {
            loggable_path(p, |route, room| {
                route == SecretPath::MatrixRoom
                    && room.trim_start_matches(['!', '#']).split(':').next() == Some("am")
            })
        };
        for kept in [
            "/_matrix/client/v3/rooms/!am:gateway.example/send/m.room.message/t1",
            "/_matrix/client/v3/rooms/%21am%3Agateway.example/send/m.room.message/t1",
            "/_matrix/client/r0/join/%23am%3Agateway.example",
            "/_matrix/client/v3/account/whoami",
        ] {
            assert_eq!(path(kept), kept);
        }
        assert_eq!(
            path("/_matrix/client/v3/rooms/s3cret-token/send/m.room.message/t1"),
            "/_matrix/client/v3/rooms/****"
        );
        assert_eq!(
            path("/_matrix/client/v3/join/s3cret-token"),
            "/_matrix/client/v3/join/****"
        );
        // In any case, after an empty segment, with what follows an encoded `/`.
        for (sent, logged) in [
            (
                "/_MATRIX/client/v3/ROOMS/s3cret/send/m.room.message/t1",
                "/_MATRIX/client/v3/ROOMS/****",
            ),
            (
                "/_matrix/client/v3/rooms//s3cret/send/m.room.message/t1",
                "/_matrix/client/v3/rooms//****",
            ),
            (
                "/_matrix/client/v3/rooms/s3cret%2Fmore-secret/send/m.room.message/t1",
                "/_matrix/client/v3/rooms/****",
            ),
        ] {
            assert_eq!(path(sent), logged);
        }
        // A hook's URL taken for a homeserver's: its secret is masked still.
        let hooks = |p| {
            loggable_path(p, |route, name| match route {
                SecretPath::Hook => name == "am",
                _ => false,
            })
        };
        assert_eq!(
            hooks("/hooks/am/s3cret/_matrix/client/v3/rooms/!x:y/send/m.room.message/t1"),
            "/hooks/am/****"
        );
        assert_eq!(
            hooks("/hooks/s3cret/_matrix/client/v3/join/x"),
            "/hooks/****"
        );
    }

    #[test]
    fn a_hooks_secret_is_masked_wherever_the_hooks_segment_is() {
        let path = |p| loggable_path(p, |_, name| name == "am");
        assert_eq!(path("/hooks/am/s3cr3t"), "/hooks/am/****");
        // ntfy's topic is a hook's name; a secret given as the topic is masked.
        assert_eq!(path("/ntfy/am"), "/ntfy/am");
        assert_eq!(path("/ntfy/s3cr3t"), "/ntfy/****");
        // Telegram's bot token is a hook's secret.
        assert_eq!(
            path("/telegram/bot123:s3cr3t/sendMessage"),
            "/telegram/****"
        );
        assert_eq!(path("/NTFY/s3cr3t/publish"), "/NTFY/****");
        // A bot token after a Bot API URL that is not quite the gateway's.
        assert_eq!(path("/bot123:s3cr3t/sendMessage"), "/****");
        assert_eq!(path("/telegram123:s3cr3t/getMe"), "/****");
        assert_eq!(path("/chat/telegrambot123:s3cr3t/getMe"), "/chat/****");
        // The gateway's bot tokens are hooks' secrets, of any shape.
        assert_eq!(path("/botscg_89d3a1f0c2/sendMessage"), "/****");
        assert_eq!(path("/tg/botscg_89d3a1f0c2/getMe"), "/tg/****");
        assert_eq!(path("/telegrambotS3cr3tS3cr3t"), "/****");
        assert_eq!(path("/api/v1/bots"), "/api/v1/bots");
        assert_eq!(
            path("/api/v1/bots/bot-alerts-prod/messages"),
            "/api/v1/bots/bot-alerts-prod/messages"
        );
        assert_eq!(
            path("/api/v1/bots/helper/messages"),
            "/api/v1/bots/helper/messages"
        );
        // A secret as `hash-key` makes them, in another sender's URL shape (Discord's,
        // Slack's) or anywhere else.
        let secret = "scg_4f1c2b7e9a0d3c5e8b6a1f2d4c7e9b0a3d5f8c1e2b4a6d9c0e3f5a7b8c1d2e4f";
        for (sent, logged) in [
            (format!("/api/webhooks/1/{secret}"), "/api/webhooks/1/****"),
            (format!("/services/T0/B0/{secret}"), "/services/T0/B0/****"),
            (format!("/{secret}"), "/****"),
            (format!("/x/{}/y", secret.to_uppercase()), "/x/****"),
            (format!("/x/%73cg_{}", &secret[4..]), "/x/****"),
            (format!("/hooks/am/{secret}/extra"), "/hooks/am/****"),
        ] {
            assert_eq!(loggable_path(&sent, |_, name| name == "am"), logged);
        }
        assert_eq!(path("/api/v1/users/scg"), "/api/v1/users/scg");
        assert_eq!(path("/hooks/am/s3cr3t/extra"), "/hooks/am/****");
        assert_eq!(path("//hooks/am/s3cr3t"), "//hooks/am/****");
        assert_eq!(path("/chat/hooks//am/s3cr3t"), "/chat/hooks/am/****");
        assert_eq!(path("/hooks/am"), "/hooks/am");
        // Not a hook's name: a secret (`/hooks/{secret}`).
        assert_eq!(path("/hooks/s3cr3t"), "/hooks/****");
        assert_eq!(path("/chat/hooks/s3cr3t/"), "/chat/hooks/****");
        // A first segment that is no hook's name may be the secret too.
        assert_eq!(path("/hooks/s3cr3t/am"), "/hooks/****");
        assert_eq!(path("/hooks/s3cr3t/x/y"), "/hooks/****");
        assert_eq!(path("/api/v1/channels"), "/api/v1/channels");
        // Encoded as actix decodes it to route: masked all the same, kept as sent.
        assert_eq!(path("/hook%73/am/s3cr3t"), "/hook%73/am/****");
        assert_eq!(path("/%68ooks/a%6D/s3cr3t"), "/%68ooks/a%6D/****");
        assert_eq!(path("/hooks/s%33cr3t"), "/hooks/****");
        assert_eq!(path("/hooks/a%6D"), "/hooks/a%6D");
        // Encoded slashes, another case, the singular, an inbound's pasted token.
        assert_eq!(path("/hooks%2Fam%2Fs3cr3t"), "/hooks/am/****");
        assert_eq!(path("/HOOKS/am/s3cr3t"), "/HOOKS/am/****");
        assert_eq!(path("/Hook/am/s3cr3t"), "/Hook/am/****");
        assert_eq!(path("/inbound/s3cr3t"), "/inbound/****");
        assert_eq!(path("/inbound/am/s3cr3t"), "/inbound/am/****");
        assert_eq!(path("/inbound/am"), "/inbound/am");
        assert_eq!(path("/api/v1/hookshot"), "/api/v1/hookshot");
        assert_eq!(
            path("/api/v1/channels/caf%C3%A9"),
            "/api/v1/channels/caf%C3%A9"
        );
    }
}
