//! `/events`: the events Chat sent, as a Server-Sent Events stream (replay after an id, then
//! live) or as pages for clients that poll.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use super::error::{ApiError, ProblemCode};
use super::extract::{Query, whole_number};
use super::inbound::store_failure;
use super::{InvalidInput, StoreProblems};
use crate::auth::{Authorized, Read};
use crate::events::{Event, EventFilter, EventKind, Events};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_events);
}

/// Events read from the store at a time while replaying, at most.
const REPLAY_PAGE: i64 = 500;
/// The fewest read at a time once a page's frames filled [`REPLAY_BUFFER`].
const REPLAY_PAGE_MIN: i64 = 16;
/// How many bytes of frames a replaying stream queues for its client: the rest of a page is
/// read again once the client has taken them. A client that stops reading holds that much,
/// not a page of 500 events of up to a MiB each (the events audit: 100 MB a stream).
const REPLAY_BUFFER: usize = 256 * 1024;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this id. The `Last-Event-ID` header or `lastEventId`, when sent, wins
    /// (a reconnecting client sends it with the original URL); without any of them a stream
    /// starts with the next event and a page with the oldest kept.
    #[param(value_type = Option<u64>, minimum = 0)]
    #[serde(default, deserialize_with = "whole_number")]
    after: Option<i64>,
    /// The resume point as `event-source-polyfill` sends it on a reconnect (it cannot send
    /// `Last-Event-ID` as a header, and appends this to the original URL): like the header, it
    /// wins over `after`.
    #[param(value_type = Option<u64>, minimum = 0)]
    #[serde(default, rename = "lastEventId", deserialize_with = "whole_number")]
    last_event_id: Option<i64>,
    /// Page size for `application/json` (1 to 1000, default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "whole_number")]
    limit: Option<i64>,
    /// Only events received on this inbound.
    inbound: Option<String>,
    /// Only events from this channel.
    #[param(value_type = Option<u64>, minimum = 1)]
    #[serde(default, deserialize_with = "whole_number")]
    channel_id: Option<i64>,
    /// Only events of this kind.
    kind: Option<EventKind>,
}

/// A page of events, oldest first.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    items: Vec<Event>,
    /// Pass as `after` for the next page (the last item's id, or `after` when empty).
    next_after: i64,
    /// Present when events after `after` were deleted by the retention (`events.retention_secs`)
    /// before they were read: those up to this id are gone (some may not have matched the
    /// filter). The page holds the events kept after `after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    purged_through: Option<i64>,
}

/// A Server-Sent Events stream.
#[derive(ToSchema)]
#[schema(value_type = String, example = "retry: 3000\nid: 41\nevent: ready\ndata: {\"resume\":41}\n\nid: 42\nevent: trigger_word\ndata: {\"event_id\":42,\"kind\":\"trigger_word\",\"inbound\":\"ops\",\"text\":\"!deploy web\"}\n\n: heartbeat\n")]
#[allow(dead_code)] // documentation only
pub struct EventStream(String);

/// Stream or poll the events Chat sent
///
/// With `Accept: text/event-stream` (as EventSource and SSE libraries send): a Server-Sent
/// Events stream. It opens with `retry: 3000`, `id: <resume point>`, `event: ready` and
/// `data: {"resume": <resume point>}` (clients take the id as their `Last-Event-ID`, so one
/// that drops before its first event resumes without a gap; skip the kind `ready`, which
/// browsers' `onmessage` does not see). Each event is `id: <event_id>`,
/// `event: <kind>` and `data: <Event as JSON>` (listen with `addEventListener(kind, …)`:
/// `onmessage` sees only the kind `message`); a `: heartbeat` comment line (no blank line after
/// it, so no client dispatches anything) comes every `events.heartbeat_ms` (default 15 s).
/// `Last-Event-ID` (or `?lastEventId=`, as `event-source-polyfill` sends it, or `?after=`)
/// first replays the kept events after that id, then the stream continues live with nothing
/// lost or repeated at the seam. When the gateway shuts down the stream ends; reconnect with
/// `Last-Event-ID`.
/// Events older than `events.retention_secs` are deleted: a replay that starts before one of
/// them first sends `event: gap` with `data: {"after": id, "purged_through": id}` (no `id:`),
/// saying that the events after `after` up to `purged_through` are gone.
/// Behind nginx the answer carries `X-Accel-Buffering: no`. At most 32 streams per API key
/// and 2048 in all are open at once; one more is refused with 429 `rate_limited` (without
/// `Retry-After`) until another closes.
///
/// Otherwise (`Accept: application/json`, `*/*`, none): one page, `{"items": [...],
/// "next_after": id}`, so generic HTTP clients never hang on an endless answer; with
/// `"purged_through": id` when events after `after` were deleted by the retention.
///
/// A resume point newer than the newest event the store has ever given (an id from another
/// gateway's store, or from before the store was replaced) is refused with 409: resuming there
/// would skip every event until the ids caught up.
#[utoipa::path(security(("bearer" = ["read"])), tag = "events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, nullable = false, minimum = 0, description = "Resume a stream (or a page) after this event id")),
    responses(
        (status = 200, description = "The events",
            // The page first: Swagger UI asks for the first type, and a stream would never end.
            content((EventPage = "application/json"), (EventStream = "text/event-stream"))),
        (status = 409, description = "The resume point is newer than any event this store \
            has given (`conflict`): read again without it", body = super::error::Problem,
            content_type = "application/problem+json"),
        InvalidInput, StoreProblems))]
#[get("/events")]
pub async fn list_events(
    key: Authorized<Read>,
    req: HttpRequest,
    query: Query<EventsQuery>,
    events: web::Data<Events>,
    open: web::Data<OpenStreams>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = EventFilter {
        inbound: query.inbound,
        channel_id: query.channel_id,
        kind: query.kind,
    };
    if filter.channel_id == Some(0) {
        return Err(ApiError::invalid("channel_id must be a positive integer"));
    }
    // Checked for both answers: a malformed id is the caller's mistake, never silently ignored.
    let last_event_id = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event id"))?,
        ),
    };
    let resume = last_event_id.or(query.last_event_id).or(query.after);
    if let Some(after) = resume.filter(|after| *after > 0) {
        let newest = events
            .store
            .event_id_high_water()
            .await
            .map_err(store_failure)?;
        if after > newest {
            return Err(ApiError::new(
                ProblemCode::Conflict,
                format!(
                    "event {after} is newer than any event this store has given (the newest is \
                     {newest}): it comes from another store, or the store was replaced; read \
                     again without Last-Event-ID or after"
                ),
            ));
        }
    }
    if !wants_stream(&req) {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let after = resume.unwrap_or(0);
        let items = events
            .store
            .events_after(after, &filter, limit)
            .await
            .map_err(store_failure)?;
        let purged = events
            .store
            .events_purged_through()
            .await
            .map_err(store_failure)?;
        let next_after = items.last().map_or(after, |e| e.event_id);
        return Ok(HttpResponse::Ok().json(EventPage {
            items,
            next_after,
            purged_through: (purged > after).then_some(purged),
        }));
    }
    // Without keys (`auth.disabled`, a demo), each client address has its own share: one
    // share for every keyless client let a 33rd service anywhere be refused.
    let owner = match &key.key_name {
        Some(name) => StreamOwner::Key(name.clone()),
        None => StreamOwner::Address(crate::ratelimit::client_address(&req)),
    };
    let held = OpenStreams::open(&open, owner)?;
    // Without a resume point, the stream carries what is stored after its latest event, read
    // before subscribing; then it reads the table after that point once before following the
    // broadcast, so an event stored in between comes from the table and none falls between
    // the two (read after subscribing, one stored in between would count as already sent).
    let after = match resume {
        Some(after) => after,
        None => events
            .store
            .latest_event_id()
            .await
            .map_err(store_failure)?,
    };
    let live = events.subscribe();
    let stopping = events.stopping();
    let mut feed = Feed::new(events.into_inner(), live, stopping, filter, after);
    feed.held = Some(held);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // nginx: pass each event on as it comes instead of filling a buffer.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(feed.into_stream()))
}

/// Event streams open at once, per API key and in all: each holds a connection, its buffers
/// and a place in the broadcast for as long as its client keeps it, so a key could otherwise
/// open them until the process ran out of file descriptors.
pub const STREAMS_PER_KEY: usize = 32;
pub const STREAMS_IN_ALL: usize = 2048;

/// The event streams open on this gateway, by the key that opened them (keys off: by the
/// client address).
#[derive(Default)]
pub struct OpenStreams(std::sync::Mutex<OpenCounts>);

#[derive(Default)]
struct OpenCounts {
    all: usize,
    by_key: std::collections::HashMap<StreamOwner, usize>,
}

/// Whose share of the streams one is: its API key's, or without keys its client address's.
#[derive(Clone, PartialEq, Eq, Hash)]
enum StreamOwner {
    Key(Arc<str>),
    Address(Option<std::net::IpAddr>),
}

impl OpenStreams {
    /// A place for one more stream of `key`'s, held until the stream ends.
    fn open(streams: &web::Data<Self>, key: StreamOwner) -> Result<HeldStream, ApiError> {
        let mut counts = streams.0.lock().unwrap_or_else(|e| e.into_inner());
        let of_key = counts.by_key.get(&key).copied().unwrap_or(0);
        let refusal = if of_key >= STREAMS_PER_KEY {
            let whose = match key {
                StreamOwner::Key(_) => "this API key",
                StreamOwner::Address(_) => "this client address",
            };
            Some(format!(
                "{whose} has {STREAMS_PER_KEY} event streams open already; close one first"
            ))
        } else if counts.all >= STREAMS_IN_ALL {
            Some(format!(
                "the gateway has {STREAMS_IN_ALL} event streams open already; try again later"
            ))
        } else {
            None
        };
        if let Some(detail) = refusal {
            return Err(ApiError::new(ProblemCode::RateLimited, detail));
        }
        counts.all += 1;
        *counts.by_key.entry(key.clone()).or_insert(0) += 1;
        Ok(HeldStream {
            streams: streams.clone().into_inner(),
            key,
        })
    }
}

/// One stream's place in [`OpenStreams`], given back when the stream is dropped.
struct HeldStream {
    streams: Arc<OpenStreams>,
    key: StreamOwner,
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        let mut counts = self.streams.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.all = counts.all.saturating_sub(1);
        if let Some(count) = counts.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.by_key.remove(&self.key);
            }
        }
    }
}

/// The client asked for `text/event-stream` by name, and not with `q=0` ("not acceptable").
fn wants_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let named = parts
                .next()
                .is_some_and(|media| media.eq_ignore_ascii_case("text/event-stream"));
            let refused = parts.any(|param| {
                param
                    .split_once('=')
                    .filter(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .and_then(|(_, q)| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            named && !refused
        })
}

/// One client's stream: replays the table after `last`, then follows the live broadcast,
/// dropping what it already sent. A client that falls behind the broadcast reads the table.
/// It ends when the gateway begins to shut down.
struct Feed {
    hub: Arc<Events>,
    live: broadcast::Receiver<Arc<Event>>,
    /// True once graceful shutdown has begun.
    stopping: watch::Receiver<bool>,
    filter: EventFilter,
    /// The highest event id sent or skipped.
    last: i64,
    replaying: bool,
    /// Events read from the store at a time while replaying: fewer after a page's frames
    /// filled [`REPLAY_BUFFER`], more again (up to [`REPLAY_PAGE`]) after one that did not.
    page: i64,
    /// The purge point last reported with `event: gap`.
    gap_told: i64,
    pending: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    done: bool,
    /// The stream's place among the open ones, given back when it ends.
    held: Option<HeldStream>,
}

impl Feed {
    fn new(
        hub: Arc<Events>,
        live: broadcast::Receiver<Arc<Event>>,
        stopping: watch::Receiver<bool>,
        filter: EventFilter,
        after: i64,
    ) -> Self {
        let period = hub.heartbeat;
        Self {
            hub,
            live,
            stopping,
            filter,
            last: after,
            replaying: true,
            page: REPLAY_PAGE,
            gap_told: 0,
            pending: VecDeque::from([opening(after)]),
            heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
            done: false,
            held: None,
        }
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
        futures_util::stream::unfold(self, |mut feed| async move {
            let chunk = feed.next_chunk().await?;
            Some((Ok(chunk), feed))
        })
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            if *self.stopping.borrow() {
                // Shutting down: the client reconnects with Last-Event-ID and loses nothing.
                self.done = true;
                continue;
            }
            if self.replaying {
                self.replay_page().await;
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(event) => self.offer(&event),
                    // Fell behind: the table has everything after `last`.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.replaying = true,
                    Err(broadcast::error::RecvError::Closed) => self.done = true,
                },
                _ = self.heartbeat.tick() => {
                    // A comment line with no blank line after it: valid SSE that no client
                    // dispatches (httpx-sse makes an empty `message` of every blank line once
                    // it has seen an id). Each is its own chunk, which nginx passes on at once
                    // (`X-Accel-Buffering: no`).
                    self.pending.push_back(Bytes::from_static(b": heartbeat\n"));
                }
                changed = self.stopping.changed() => {
                    // Checked at the top of the loop; a gone sender cannot say "stop" any more.
                    if changed.is_err() {
                        self.done = true;
                    }
                }
            }
        }
    }

    async fn replay_page(&mut self) {
        let store = &self.hub.store;
        // The purge point is read after the page: a purge between the two is then told too.
        let read = match store.events_after(self.last, &self.filter, self.page).await {
            Ok(page) => store.events_purged_through().await.map(|p| (page, p)),
            Err(error) => Err(error),
        };
        match read {
            Ok((page, through)) => {
                // Events after `last` that the retention deleted: the client is told, not left
                // to believe the replay is whole.
                if through > self.last && through > self.gap_told {
                    self.gap_told = through;
                    self.pending.push_back(gap(self.last, through));
                }
                self.replaying = page.len() as i64 == self.page;
                let mut queued: usize = self.pending.iter().map(Bytes::len).sum();
                for (taken, event) in page.iter().enumerate() {
                    if queued >= REPLAY_BUFFER {
                        // The rest after the client has taken these (`last` is the last one
                        // offered), fewer at a time.
                        self.replaying = true;
                        self.page = (taken as i64).max(REPLAY_PAGE_MIN);
                        return;
                    }
                    let before = self.pending.len();
                    self.offer(event);
                    if self.pending.len() > before {
                        queued += self.pending.back().map_or(0, Bytes::len);
                    }
                }
                self.page = (self.page * 2).min(REPLAY_PAGE);
            }
            Err(error) => {
                // End the stream: the client reconnects with Last-Event-ID and loses nothing.
                tracing::warn!(%error, "events: cannot replay for a stream");
                self.done = true;
            }
        }
    }

    fn offer(&mut self, event: &Event) {
        if event.event_id <= self.last {
            return;
        }
        self.last = event.event_id;
        if self.filter.matches(event) {
            self.pending.push_back(frame(event));
        }
    }
}

/// The stream's opening block: how soon EventSource reconnects, and the resume point as its
/// id, so a client that drops before the first event resumes after `resume` and loses nothing.
/// Its data names the point too (`{"resume": id}`): `event-source-polyfill` takes an id as its
/// `Last-Event-ID` only from a block with data. The kind is `ready`, not a real kind (browsers'
/// `onmessage` does not see it), and the data has no `channel_id`, so a client that reads every
/// `data:` line as an event (the README's example) passes it by. `resume` is 0 for an empty
/// store: `Last-Event-ID: 0` replays every event kept. The block also gets the headers through
/// proxies at once.
fn opening(resume: i64) -> Bytes {
    Bytes::from(format!(
        "retry: 3000\nid: {resume}\nevent: ready\ndata: {{\"resume\":{resume}}}\n\n"
    ))
}

/// Events after `after` up to `through` were purged. No `id:`, so the client's resume point
/// stays where it was.
fn gap(after: i64, through: i64) -> Bytes {
    Bytes::from(format!(
        "event: gap\ndata: {{\"after\":{after},\"purged_through\":{through}}}\n\n"
    ))
}

/// One event in the SSE format (the JSON is on one line). U+2028, U+2029 and U+0085 are
/// escaped as JSON allows: the format breaks lines on CR and LF alone, but readers that split
/// with their language's "lines" (Python's `str.splitlines()`) would cut the event there.
fn frame(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    let data = if data.contains(['\u{2028}', '\u{2029}', '\u{85}']) {
        data.replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
            .replace('\u{85}', "\\u0085")
    } else {
        data
    };
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.event_id,
        event.kind.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, StoreSettings};

    #[test]
    fn a_stream_is_what_accept_names_unless_its_quality_is_zero() {
        let wants = |accept: &str| {
            let req = actix_web::test::TestRequest::get()
                .insert_header((header::ACCEPT, accept))
                .to_http_request();
            wants_stream(&req)
        };
        assert!(wants("text/event-stream"));
        assert!(wants("application/json, Text/Event-Stream; q=0.5"));
        assert!(!wants("application/json, text/event-stream;q=0"));
        assert!(!wants("text/event-stream; q=0.000"));
        assert!(!wants("application/json"));
        assert!(!wants("*/*"));
    }

    #[test]
    fn keyless_clients_each_have_their_own_share_of_the_streams() {
        let streams = web::Data::new(OpenStreams::default());
        let address = |last: u8| StreamOwner::Address(Some([192, 168, 1, last].into()));
        let held: Vec<HeldStream> = (0..STREAMS_PER_KEY)
            .map(|_| OpenStreams::open(&streams, address(1)).unwrap())
            .collect();
        let refused = OpenStreams::open(&streams, address(1)).err().unwrap();
        assert!(refused.to_string().contains("client address"), "{refused}");
        // Another client, and a key, are not refused for that one's streams.
        let other = OpenStreams::open(&streams, address(2)).unwrap();
        let keyed = OpenStreams::open(&streams, StreamOwner::Key("ci".into())).unwrap();
        drop((held, other, keyed));
        assert_eq!(streams.0.lock().unwrap().all, 0);
    }
    #[test]
    fn the_gateway_holds_a_bounded_number_of_streams_in_all() {
        let streams = web::Data::new(OpenStreams::default());
        let owner = |n: usize| StreamOwner::Key(format!("key-{n}").into());
        let mut held: Vec<HeldStream> = (0..STREAMS_IN_ALL)
            .map(|n| OpenStreams::open(&streams, owner(n / STREAMS_PER_KEY)).unwrap())
            .collect();
        // A key with none open yet is refused for the others' streams, and told why.
        let fresh = owner(STREAMS_IN_ALL);
        let refused = OpenStreams::open(&streams, fresh.clone()).err().unwrap();
        assert_eq!(refused.code(), ProblemCode::RateLimited);
        assert!(
            refused.to_string().contains("2048 event streams"),
            "{refused}"
        );
        // One closed anywhere gives its place to anyone.
        held.pop();
        let admitted = OpenStreams::open(&streams, fresh).unwrap();
        drop((held, admitted));
        let counts = streams.0.lock().unwrap();
        assert_eq!((counts.all, counts.by_key.len()), (0, 0));
    }

    use crate::events::NewEvent;
    use crate::store::Store;

    fn post(post_id: i64) -> NewEvent {
        NewEvent {
            kind: EventKind::Message,
            inbound: "ops".into(),
            channel_id: Some(2),
            channel_name: None,
            channel_type: None,
            user_id: Some(3),
            username: None,
            post_id: Some(post_id),
            thread_id: None,
            timestamp: None,
            text: format!("post {post_id}"),
            trigger_word: None,
            command: None,
            button: None,
        }
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        Store::connect(&StoreSettings {
            url: format!("sqlite://{}/events.db", dir.path().display()).into(),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    #[actix_web::test]
    async fn line_separators_in_an_event_are_escaped_and_the_data_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let mut new = post(1);
        new.text = "a\u{2028}b\u{2029}c\u{85}d\ne".into();
        store.insert_event(&new, 1).await.unwrap();
        let stored = store
            .events_after(0, &EventFilter::default(), 1)
            .await
            .unwrap();
        let framed = String::from_utf8(frame(&stored[0]).to_vec()).unwrap();
        // One `data:` line, which every "lines" splitter leaves whole, and the same text.
        assert_eq!(
            framed.lines().filter(|l| l.starts_with("data: ")).count(),
            1
        );
        assert!(
            !framed.contains(['\u{2028}', '\u{2029}', '\u{85}']),
            "{framed}"
        );
        let data = framed
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(event["text"], "a\u{2028}b\u{2029}c\u{85}d\ne");
    }

    #[actix_web::test]
    async fn a_live_stream_that_falls_behind_replays_only_what_came_after_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let hub = Events::new(store, &Settings::default()).await.unwrap();
        hub.start().await.unwrap();
        for post_id in 1..=3 {
            hub.record(&post(post_id)).await.unwrap();
        }
        let latest = hub.store.latest_event_id().await.unwrap();
        let live = hub.subscribe();
        let mut feed = Feed::new(
            hub.clone(),
            live,
            hub.stopping(),
            EventFilter::default(),
            latest,
        );
        assert_eq!(
            feed.next_chunk().await.unwrap(),
            format!("retry: 3000\nid: {latest}\nevent: ready\ndata: {{\"resume\":{latest}}}\n\n")
        );
        // More than the broadcast holds arrive before the client reads any.
        let count = crate::events::LIVE_CAPACITY as i64 + 10;
        for post_id in 100..100 + count {
            hub.record(&post(post_id)).await.unwrap();
        }
        // Until the pump has broadcast enough for this receiver to have lagged.
        for _ in 0..500 {
            if feed.live.len() > crate::events::LIVE_CAPACITY {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            feed.live.len() > crate::events::LIVE_CAPACITY,
            "the stream fell behind"
        );
        let mut ids = Vec::new();
        while ids.len() < count as usize {
            let chunk = feed.next_chunk().await.unwrap();
            let text = std::str::from_utf8(&chunk).unwrap();
            if let Some(id) = text.strip_prefix("id: ") {
                ids.push(id.split('\n').next().unwrap().parse::<i64>().unwrap());
            }
        }
        let expected: Vec<i64> = (latest + 1..=latest + count).collect();
        assert_eq!(
            ids, expected,
            "the new events, once, in order, and none from before"
        );
    }
}
