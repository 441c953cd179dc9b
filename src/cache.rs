//! Cached user and channel lists (moka). Concurrent misses share one upstream call; each list
//! is kept together with its serialised `{"items": [...]}` body so a hit costs no JSON work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::domain::{Channel, User};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;

/// A list as loaded from DSM and its ready-to-send JSON body.
pub struct CachedList<T> {
    pub items: Vec<T>,
    pub body: Bytes,
}

#[derive(Serialize)]
struct ListBody<'a, T> {
    items: &'a [T],
}

pub struct ListCache<T> {
    name: &'static str,
    inner: moka::future::Cache<(), Arc<CachedList<T>>>,
    metrics: Arc<Metrics>,
}

impl<T: Serialize + Send + Sync + 'static> ListCache<T> {
    pub fn new(name: &'static str, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            name,
            inner: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(ttl)
                .build(),
            metrics,
        }
    }

    /// The cached list, or the result of `load` (run once for all concurrent callers).
    pub async fn get_or_load<F>(&self, load: F) -> Result<Arc<CachedList<T>>, ApiError>
    where
        F: Future<Output = Result<Vec<T>, UpstreamError>>,
    {
        let entry = self
            .inner
            .entry(())
            .or_try_insert_with(async {
                let items = load.await?;
                let body = serde_json::to_vec(&ListBody { items: &items })
                    .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
                Ok::<_, UpstreamError>(Arc::new(CachedList {
                    items,
                    body: Bytes::from(body),
                }))
            })
            .await?;
        let hit = !entry.is_fresh();
        self.metrics.cache_lookup(self.name, hit);
        tracing::debug!(cache = self.name, hit, "list cache");
        Ok(entry.into_value())
    }

    /// Drops the list after a write that changed it.
    pub async fn invalidate(&self) {
        self.inner.invalidate(&()).await;
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
}
