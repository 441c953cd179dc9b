//! Idempotency-Key records: the SQL behind the `/api/v1` idempotency middleware.
//!
//! A record is claimed (`running`, with a lease) before the request runs, then either filled
//! with the answer (`done`, kept until `expires_at`) or released. A running record whose lease
//! has passed belongs to a request that died with its process (or was dropped): a retry with
//! the same body takes it over and is told when that first attempt began, since it may have
//! carried out part of its work. Claims are kept until the key expires (and never while their
//! lease runs), so that is known however late the retry comes.

use super::{Store, StoreError, with_pool};

/// Which request a record belongs to: the caller's identity, the method and path, and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// The API key's configured name; empty when authentication is off (one shared scope).
    pub caller: String,
    pub method: String,
    pub path: String,
    pub key: String,
}

/// A stored answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The answer held a secret (a new integration's token, a signing secret): `body` is kept
    /// without it, and a repeat is told so instead of being replayed.
    pub withheld: bool,
}

/// How [`StoredResponse::withheld`] is kept: a pseudo-header in the `headers` column (no
/// migration), which is never a valid header name, so no replay can send it.
const WITHHELD: &str = ":secret-withheld";

/// What [`Store::idempotency_begin`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// The key is now held by this request (`owner`): run it, then `finish` or `release`.
    /// `interrupted_since`: the key was held by an earlier attempt with the same body that
    /// ended without an answer (its process died); it began then (ms), and what it did is not
    /// known.
    Started { interrupted_since: Option<i64> },
    /// The same key and body were answered before: replay this.
    Replay(StoredResponse),
    /// The same key is held by a request still running.
    InFlight,
    /// The same key was used with a different body.
    Reused,
}

/// fingerprint, state, status, headers, body, lease_until.
type Row = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
);

impl Store {
    /// Claims `scope` for the request `owner` until `now_ms + lease_ms`, or says why not.
    /// Records past their expiry are deleted first (a claim only once its lease has ended too),
    /// so an expired key starts afresh; a claim is kept until `now_ms + ttl_ms`, or its lease.
    pub async fn idempotency_begin(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        ttl_ms: i64,
    ) -> Result<Begin, StoreError> {
        let s = scope;
        // A concurrent request may delete or insert between the statements: look again.
        for _ in 0..3 {
            with_pool!(self, p => sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND expires_at <= $5 \
                 AND (state = 'done' OR lease_until <= $5)",
            )
            .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(now_ms)
            .execute(p).await.map(drop))?;
            let inserted = with_pool!(self, p => sqlx::query(
                "INSERT INTO idempotency_keys \
                 (scope, method, path, key, fingerprint, owner, state, lease_until, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key)
            .bind(fingerprint).bind(owner).bind(now_ms + lease_ms).bind(now_ms)
            .bind(now_ms.saturating_add(ttl_ms))
            .execute(p).await.map(|r| r.rows_affected()))?;
            if inserted == 1 {
                return Ok(Begin::Started {
                    interrupted_since: None,
                });
            }
            // An abandoned claim with this body: taken over, keeping when the first attempt
            // began (a second interruption still knows it). Stepped to its end (the
            // store's module comment: writes that return rows).
            let began: Option<i64> = with_pool!(self, p => sqlx::query_scalar(
                "UPDATE idempotency_keys SET owner = $6, lease_until = $7, \
                 expires_at = CASE WHEN expires_at < $7 THEN $7 ELSE expires_at END \
                 WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND fingerprint = $5 \
                 AND state = 'running' AND lease_until <= $8 \
                 RETURNING created_at",
            )
            .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(fingerprint)
            .bind(owner).bind(now_ms + lease_ms).bind(now_ms)
            .fetch_all(p).await)?
            .into_iter()
            .next();
            if let Some(began) = began {
                return Ok(Begin::Started {
                    interrupted_since: Some(began),
                });
            }
            let row: Option<Row> = with_pool!(self, p => sqlx::query_as(
                "SELECT fingerprint, state, status, headers, body, lease_until FROM idempotency_keys \
                 WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4",
            )
            .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key)
            .fetch_optional(p).await)?;
            let Some(row) = row else { continue };
            let same_body = row.0 == fingerprint;
            if row.1 != "done" {
                // While the first runs its body is not compared: "wait and retry" holds either
                // way. An abandoned one with another body: this is another request.
                let abandoned = row.5 <= now_ms;
                return Ok(match (abandoned, same_body) {
                    (false, _) => Begin::InFlight,
                    (true, false) => Begin::Reused,
                    // Taken over by a concurrent retry between the statements.
                    (true, true) => continue,
                });
            }
            if !same_body {
                return Ok(Begin::Reused);
            }
            return Ok(Begin::Replay(stored(row)?));
        }
        // Three lost races in a row: another request is busy with this very key.
        Ok(Begin::InFlight)
    }

    /// Stores the answer of the request that holds `scope`, kept until `expires_at_ms`. Does
    /// nothing when the record was taken over (this request outlived its lease).
    pub async fn idempotency_finish(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        response: &StoredResponse,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let s = scope;
        let mut headers = response.headers.clone();
        if response.withheld {
            headers.push((WITHHELD.to_owned(), "true".to_owned()));
        }
        let headers =
            serde_json::to_string(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let updated = with_pool!(self, p => sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $6, headers = $7, body = $8, \
             expires_at = $9 \
             WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND owner = $5 \
             AND state = 'running'",
        )
        .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(owner)
        .bind(i64::from(response.status)).bind(headers).bind(&response.body).bind(expires_at_ms)
        .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(updated == 1)
    }

    /// Extends a running request's claim to `lease_until` (ms); whether `owner` still held it.
    pub async fn idempotency_renew(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let s = scope;
        let updated = with_pool!(self, p => sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $6, \
             expires_at = CASE WHEN expires_at < $6 THEN $6 ELSE expires_at END \
             WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND owner = $5 \
             AND state = 'running'",
        )
        .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(owner).bind(lease_until)
        .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(updated == 1)
    }

    /// Gives the key back (the answer was transient, or the request was abandoned), so the
    /// client's retry runs again.
    pub async fn idempotency_release(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
    ) -> Result<(), StoreError> {
        let s = scope;
        with_pool!(self, p => sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND owner = $5 \
             AND state = 'running'",
        )
        .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(owner)
        .execute(p).await.map(drop))?;
        Ok(())
    }

    /// Ends the lease of a claim whose request was cut off part way (it may have carried out
    /// some of its work): a retry takes it over at once, and is told so.
    pub async fn idempotency_abandon(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let s = scope;
        with_pool!(self, p => sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $6 \
             WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND owner = $5 \
             AND state = 'running'",
        )
        .bind(&s.caller).bind(&s.method).bind(&s.path).bind(&s.key).bind(owner).bind(now_ms)
        .execute(p).await.map(drop))?;
        Ok(())
    }

    /// Deletes expired records, abandoned claims included, a batch at a time so a day's keys
    /// after a long downtime never hold the write lock long; returns how many. The outer test
    /// repeats the inner one: a record taken over meanwhile is kept.
    pub async fn idempotency_purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        const BATCH: i64 = 500;
        const EXPIRED: &str = "expires_at <= $1 AND (state = 'done' OR lease_until <= $1)";
        let sql = format!(
            "DELETE FROM idempotency_keys WHERE {EXPIRED} AND (scope, method, path, key) IN \
             (SELECT scope, method, path, key FROM idempotency_keys WHERE {EXPIRED} LIMIT $2)"
        );
        let mut purged = 0;
        loop {
            let done = with_pool!(self, p => sqlx::query(&sql).bind(now_ms).bind(BATCH)
                .execute(p).await?.rows_affected());
            purged += done;
            if done < BATCH as u64 {
                return Ok(purged);
            }
        }
    }
}

fn stored((_, _, status, headers, body, _): Row) -> Result<StoredResponse, StoreError> {
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| StoreError::Corrupt("idempotency record without a status".into()))?;
    let mut headers: Vec<(String, String)> = match headers {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("idempotency record headers: {e}")))?,
        None => Vec::new(),
    };
    let before = headers.len();
    headers.retain(|(name, _)| name != WITHHELD);
    Ok(StoredResponse {
        status,
        withheld: headers.len() != before,
        headers,
        body: body.unwrap_or_default(),
    })
}
