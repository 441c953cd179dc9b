//! Cached user and channel lists (moka). Concurrent misses share one upstream call; each list
//! is kept together with its serialised `{"items": [...]}` body and its `ETag`, so a hit costs
//! no JSON work and no copy (the body is a `Bytes` clone), and a caller that has the list
//! already gets `304 Not Modified` without it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Serialize;
use sha2::Digest;

use super::Dsm;
use super::error::{ApiError, ProblemCode};
use crate::domain::{Channel, User};
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;
use prometheus_client::metrics::counter::Counter;

/// A list as loaded from DSM, its ready-to-send JSON body and that body's entity tag.
pub struct CachedList<T> {
    pub items: Vec<T>,
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl<T> CachedList<T> {
    /// The whole list: 200 with the body, or 304 when `If-None-Match` names this version.
    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        if if_none_match(req, &self.etag) {
            return HttpResponse::NotModified()
                .insert_header((header::ETAG, self.etag.clone()))
                .finish();
        }
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, APPLICATION_JSON))
            .insert_header((header::ETAG, self.etag.clone()))
            .body(self.body.clone())
    }
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A strong tag from the body's SHA-256 (16 hex digits): equal bodies, equal tags, across
/// reloads and replicas.
fn entity_tag(body: &[u8]) -> HeaderValue {
    let digest = sha2::Sha256::digest(body);
    let tag = format!("\"{}\"", hex::encode(&digest[..8]));
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` lists `etag` or is `*` (RFC 9110 §13.1.2, weak comparison).
fn if_none_match(req: &HttpRequest, etag: &HeaderValue) -> bool {
    let tag = etag.as_bytes();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == tag)
}

#[derive(Serialize)]
struct ListBody<'a, T> {
    items: &'a [T],
}

pub struct ListCache<T> {
    name: &'static str,
    /// Keyed by the generation the load began in: a load an invalidation overtook lands under
    /// a key nobody asks for any more (and is evicted), where under one fixed key moka would
    /// keep and serve it until it expired.
    inner: moka::future::Cache<u64, Arc<CachedList<T>>>,
    /// Shared with the loads' tasks, which publish what they loaded.
    published: Arc<Published<T>>,
    ttl: Duration,
    hits: Counter,
    misses: Counter,
}

struct Published<T> {
    /// The list moka last loaded, while it is fresh. A hit reads it under an uncontended lock:
    /// a clock read and an `Arc` clone, where moka's own read path also records the access
    /// for its eviction policy, which a one-entry cache does not need. Moka still decides
    /// expiry on a miss and runs one load for all concurrent misses.
    current: RwLock<Option<Current<T>>>,
    /// Bumped by every invalidation, so a load that began before one does not publish its
    /// list after it, in `current` or in moka.
    generation: AtomicU64,
}

struct Current<T> {
    list: Arc<CachedList<T>>,
    stale_at: Instant,
}

impl<T: Serialize + Send + Sync + 'static> ListCache<T> {
    pub fn new(name: &'static str, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            name,
            inner: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(ttl)
                .build(),
            published: Arc::new(Published {
                current: RwLock::new(None),
                generation: AtomicU64::new(0),
            }),
            ttl,
            hits: metrics.cache_counter(name, true),
            misses: metrics.cache_counter(name, false),
        }
    }

    /// The cached list, or the result of `load` (run once for all concurrent callers).
    pub async fn get_or_load<L, F>(&self, load: L) -> Result<Arc<CachedList<T>>, ApiError>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Vec<T>, UpstreamError>> + 'static,
    {
        if let Some(list) = self.fresh() {
            self.hits.inc();
            return Ok(list);
        }
        // Boxed: the upstream call's future is large, and kept inline it would be part of (and
        // copied with) every hit's future too.
        Box::pin(self.load(load())).await
    }

    async fn load<F>(&self, load: F) -> Result<Arc<CachedList<T>>, ApiError>
    where
        F: Future<Output = Result<Vec<T>, UpstreamError>> + 'static,
    {
        let generation = self.published.generation.load(Ordering::Acquire);
        let asked = Instant::now();
        let (inner, published) = (self.inner.clone(), self.published.clone());
        let (hits, misses, ttl, name) =
            (self.hits.clone(), self.misses.clone(), self.ttl, self.name);
        // In a task of its own, to its end, published by it: a request is dropped when its
        // caller goes (README "Hardening"), and moka gives up with a panic once a caller has
        // seen 200 loads in a row dropped unfinished.
        crate::telemetry::spawn_for_request(async move {
            let entry = inner
                .entry(generation)
                .or_try_insert_with(async {
                    let items = load.await?;
                    let body = serde_json::to_vec(&ListBody { items: &items })
                        .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
                    Ok::<_, UpstreamError>(Arc::new(CachedList {
                        items,
                        etag: entity_tag(&body),
                        body: Bytes::from(body),
                    }))
                })
                .await?;
            let hit = !entry.is_fresh();
            if hit {
                hits.inc();
            } else {
                misses.inc();
                // Stale no later than moka's copy, whose clock started once the load was done.
                let mut current = published.current.write().unwrap_or_else(|e| e.into_inner());
                if published.generation.load(Ordering::Acquire) == generation {
                    *current = Some(Current {
                        list: entry.value().clone(),
                        stale_at: asked + ttl,
                    });
                }
            }
            tracing::debug!(cache = name, hit, "list cache");
            Ok(entry.into_value())
        })
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ProblemCode::Internal,
                "the list's load ended early",
            ))
        })
    }

    fn fresh(&self) -> Option<Arc<CachedList<T>>> {
        let current = self
            .published
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|c| Instant::now() < c.stale_at)
            .map(|c| c.list.clone())
    }

    /// Drops the list after a write that changed it.
    pub fn invalidate(&self) {
        {
            let published = &self.published;
            let mut current = published.current.write().unwrap_or_else(|e| e.into_inner());
            published.generation.fetch_add(1, Ordering::AcqRel);
            *current = None;
        }
        self.inner.invalidate_all();
    }
}

pub struct Caches {
    pub users: ListCache<User>,
    pub channels: ListCache<Channel>,
}

impl Caches {
    pub fn new(ttl: Duration, metrics: &Arc<Metrics>) -> Self {
        Self {
            users: ListCache::new("users", ttl, metrics.clone()),
            channels: ListCache::new("channels", ttl, metrics.clone()),
        }
    }

    /// The channels the gateway's account sees, cached.
    pub async fn channel_list(&self, chat: &Dsm) -> Result<Arc<CachedList<Channel>>, ApiError> {
        self.channels
            .get_or_load(|| {
                let chat = chat.clone();
                async move { chat.channels().await }
            })
            .await
    }

    /// The NAS's users, cached.
    pub async fn user_list(&self, chat: &Dsm) -> Result<Arc<CachedList<User>>, ApiError> {
        self.users
            .get_or_load(|| {
                let chat = chat.clone();
                async move { chat.users().await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cache(ttl: Duration) -> ListCache<u32> {
        ListCache::new("users", ttl, Metrics::new())
    }

    async fn load(
        cache: &ListCache<u32>,
        loads: &Arc<AtomicUsize>,
        item: u32,
    ) -> Arc<CachedList<u32>> {
        let loads = loads.clone();
        cache
            .get_or_load(|| async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(vec![item])
            })
            .await
            .unwrap_or_else(|_| panic!("load failed"))
    }

    #[actix_web::test]
    async fn a_list_is_loaded_once_until_it_is_invalidated_or_stale() {
        let loads = Arc::new(AtomicUsize::new(0));
        let lists = cache(Duration::from_millis(300));
        let first = load(&lists, &loads, 1).await;
        let again = load(&lists, &loads, 2).await;
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&first.body[..], b"{\"items\":[1]}");
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        lists.invalidate();
        assert!(lists.fresh().is_none());
        assert_eq!(&load(&lists, &loads, 3).await.body[..], b"{\"items\":[3]}");
        assert_eq!(loads.load(Ordering::SeqCst), 2);

        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        assert!(lists.fresh().is_none());
        assert_eq!(&load(&lists, &loads, 4).await.body[..], b"{\"items\":[4]}");
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }

    #[actix_web::test]
    async fn a_load_that_an_invalidation_overtook_is_not_served() {
        let lists = cache(Duration::from_secs(60));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = lists.get_or_load(|| async move {
            released.await.ok();
            Ok(vec![1])
        });
        let invalidate = async {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            lists.invalidate();
            release.send(()).ok();
        };
        let (loaded, ()) = futures_util::join!(slow, invalidate);
        assert!(loaded.is_ok());
        assert!(lists.fresh().is_none());
        // Nor from moka: the next caller loads the list as it is after the write.
        let loads = Arc::new(AtomicUsize::new(0));
        assert_eq!(&load(&lists, &loads, 2).await.body[..], b"{\"items\":[2]}");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[actix_web::test]
    async fn a_load_whose_caller_went_away_is_finished_for_the_next() {
        let lists = cache(Duration::from_secs(60));
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = loads.clone();
        // The caller gives up (its request is dropped with its connection) while DSM answers.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            lists.get_or_load(|| async move {
                actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(vec![1])
            }),
        )
        .await;
        assert!(gave_up.is_err());
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        // Published by the load itself: hits take it without asking moka.
        assert!(lists.fresh().is_some());
        // Cut off with its caller, the load would be made again (and moka panics once a
        // waiting caller has seen 200 such loads in a row).
        assert_eq!(&load(&lists, &loads, 2).await.body[..], b"{\"items\":[1]}");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn if_none_match_matches_the_tag_in_lists_weakly_and_star() {
        let etag = entity_tag(b"{\"items\":[]}");
        assert_eq!(etag, entity_tag(b"{\"items\":[]}"));
        assert_ne!(etag, entity_tag(b"{\"items\":[1]}"));
        let tag = etag.to_str().unwrap().to_owned();
        let with = |value: &str| {
            actix_web::test::TestRequest::default()
                .insert_header((header::IF_NONE_MATCH, value))
                .to_http_request()
        };
        assert!(if_none_match(&with(&tag), &etag));
        assert!(if_none_match(&with(&format!("\"x\", W/{tag}")), &etag));
        assert!(if_none_match(&with("*"), &etag));
        assert!(!if_none_match(&with("\"x\""), &etag));
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert!(!if_none_match(&none, &etag));
    }
}
