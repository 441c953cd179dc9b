//! What the NAS offers, from `SYNO.API.Info`: each API's CGI path and version range.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::error::{Result, UpstreamError};
use super::ops::Op;

#[derive(Clone, Debug, Deserialize)]
pub struct ApiInfo {
    /// Shared with every [`Endpoint`] resolved from it: resolving runs on every DSM call.
    pub path: Arc<str>,
    #[serde(rename = "minVersion")]
    pub min_version: u32,
    #[serde(rename = "maxVersion")]
    pub max_version: u32,
    /// `JSON` when DSM JSON-decodes the API's parameter values.
    #[serde(rename = "requestFormat", default)]
    pub request_format: Option<String>,
}

/// Looked up on every DSM call: foldhash, not SipHash (as `telemetry::FastMap`).
pub type ApiTable = HashMap<String, ApiInfo, foldhash::quality::RandomState>;

/// Where and in which version to send an operation.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub path: Arc<str>,
    pub version: u32,
    /// The API JSON-decodes its values (`requestFormat: JSON`).
    pub json_format: bool,
}

/// How long a table that lacks an API is trusted before a call that needs the API asks DSM
/// again: a NAS whose Chat package is still starting (after a reboot or an upgrade) lists no
/// Chat APIs yet, and a gateway that kept that first answer would stay broken until restarted.
/// Not on every call: a NAS without Chat must not be asked for the list on every request.
pub const MISSING_API_RECHECK: Duration = Duration::from_secs(3);

/// The cached Info table; loaded on first use, reloaded when DSM says a version or an API is
/// wrong, and when a call needs an API it lacks ([`MISSING_API_RECHECK`]).
#[derive(Default)]
pub struct Catalog {
    table: RwLock<Option<Loaded>>,
    // Serialises reloads so concurrent misses cause one Info call.
    pub(super) reload: tokio::sync::Mutex<()>,
    pub(super) reload_watch: super::watchdog::LockWatch,
    // A failed load is remembered: during its back-off callers fail fast instead of each
    // waiting a full timeout behind the lock on a blackholed NAS.
    pub(super) backoff: std::sync::Mutex<super::backoff::Backoff>,
}

/// A table and when it was loaded.
#[derive(Clone)]
struct Loaded {
    table: Arc<ApiTable>,
    at: Instant,
}

impl Catalog {
    pub fn current(&self) -> Option<Arc<ApiTable>> {
        self.loaded().map(|loaded| loaded.table)
    }

    fn loaded(&self) -> Option<Loaded> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn store(&self, table: ApiTable) -> Arc<ApiTable> {
        let table = Arc::new(table);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Some(Loaded {
            table: table.clone(),
            at: Instant::now(),
        });
        table
    }

    pub fn forget(&self) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Forgets `table` if it lacks `api`, is still the current one (a concurrent caller may have
    /// reloaded it already) and is older than [`MISSING_API_RECHECK`]; whether it did.
    pub fn forget_if_lacking(&self, table: &Arc<ApiTable>, api: &str) -> bool {
        if table.contains_key(api) {
            return false;
        }
        let mut current = self.table.write().unwrap_or_else(|e| e.into_inner());
        let stale = current.as_ref().is_some_and(|loaded| {
            Arc::ptr_eq(&loaded.table, table) && loaded.at.elapsed() >= MISSING_API_RECHECK
        });
        if stale {
            *current = None;
        }
        stale
    }
}

/// Chooses the highest version both sides speak, or says why there is none.
pub fn resolve(table: &ApiTable, op: &Op) -> Result<Endpoint> {
    let info = table
        .get(op.api)
        .ok_or(UpstreamError::NotListed { api: op.api })?;
    let high = (*op.versions.end()).min(info.max_version);
    let low = (*op.versions.start()).max(info.min_version);
    if high < low {
        return Err(UpstreamError::Unsupported {
            api: op.api,
            reason: format!(
                "the NAS offers versions {}..={}, the gateway speaks {}..={}",
                info.min_version,
                info.max_version,
                op.versions.start(),
                op.versions.end()
            ),
        });
    }
    Ok(Endpoint {
        path: info.path.clone(),
        version: high,
        json_format: info
            .request_format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("json")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::channels::CHANNEL_LIST;
    use crate::upstream::ops::{Verb, op};

    const POST_LIST: Op = op("SYNO.Chat.Post", "list", 1..=8, Verb::Get);

    fn table(max: u32) -> ApiTable {
        let mut t = ApiTable::default();
        t.insert(
            "SYNO.Chat.Post".into(),
            ApiInfo {
                path: "entry.cgi".into(),
                min_version: 1,
                max_version: max,
                request_format: None,
            },
        );
        t
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(resolve(&table(5), &POST_LIST).unwrap().version, 5);
        assert_eq!(resolve(&table(12), &POST_LIST).unwrap().version, 8);
    }

    #[test]
    fn a_missing_api_is_not_listed_not_a_crash() {
        let err = resolve(&table(8), &CHANNEL_LIST).unwrap_err();
        assert!(matches!(
            err,
            UpstreamError::NotListed {
                api: "SYNO.Chat.Channel",
            }
        ));
    }
}
