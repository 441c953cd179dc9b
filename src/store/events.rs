//! Events received from Chat: insert (deduplicated per inbound and post), read after an id,
//! purge past retention. On PostgreSQL inserts are serialised by a transaction lock, so ids
//! become visible in increasing order, and each commit notifies every replica.

use super::{Pool, Store, StoreError, with_pool};
use crate::events::{ButtonClick, Event, EventFilter, EventKind, NewEvent};

/// The PostgreSQL channel carrying new event ids between replicas.
pub const EVENTS_CHANNEL: &str = "syno_chat_gateway_events";
/// `pg_advisory_xact_lock` key serialising event inserts ("2001", the events migration).
const INSERT_LOCK: i64 = 2001;

const INSERT: &str = "INSERT INTO events (inbound, kind, channel_id, channel_name, user_id, \
    username, post_id, thread_id, timestamp, text, trigger_word, command, received_at, button, \
    channel_type) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
    ON CONFLICT (inbound, post_id) DO NOTHING RETURNING event_id";

pub(super) const COLUMNS: &str = "event_id, kind, inbound, channel_id, channel_name, user_id, username, \
    post_id, thread_id, timestamp, text, trigger_word, command, received_at, button, channel_type";

pub(super) type Row = (
    i64,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    Option<i64>,
);

/// The `button` column: a click, with the clicked message's post id (kept out of `post_id`, which
/// deduplicates posts).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredClick {
    post_id: Option<i64>,
    #[serde(flatten)]
    click: ButtonClick,
}

pub(super) fn event(row: Row) -> Result<Event, StoreError> {
    let kind = EventKind::parse(&row.1)
        .ok_or_else(|| StoreError::Corrupt(format!("event {} has kind {:?}", row.0, row.1)))?;
    let click = match row.14.as_deref() {
        None => None,
        Some(raw) => Some(serde_json::from_str::<StoredClick>(raw).map_err(|e| {
            StoreError::Corrupt(format!("event {} has a malformed button: {e}", row.0))
        })?),
    };
    Ok(Event {
        event_id: row.0,
        kind,
        inbound: row.2,
        channel_id: row.3,
        channel_name: row.4,
        channel_type: row.15,
        user_id: row.5,
        username: row.6,
        post_id: row.7.or(click.as_ref().and_then(|c| c.post_id)),
        thread_id: row.8,
        timestamp: row.9,
        text: row.10,
        trigger_word: row.11,
        command: row.12,
        received_at: row.13,
        button: click.map(|c| c.click),
    })
}

macro_rules! bind_new_event {
    ($e:expr, $now:expr) => {
        sqlx::query_scalar::<_, i64>(INSERT)
            .bind(&$e.inbound)
            .bind($e.kind.as_str())
            .bind($e.channel_id)
            .bind(&$e.channel_name)
            .bind($e.user_id)
            .bind(&$e.username)
            .bind($e.post_id.filter(|_| $e.button.is_none()))
            .bind($e.thread_id)
            .bind($e.timestamp)
            .bind(&$e.text)
            .bind(&$e.trigger_word)
            .bind(&$e.command)
            .bind($now)
            .bind($e.button.as_ref().map(|click| {
                serde_json::to_string(&StoredClick {
                    post_id: $e.post_id,
                    click: click.clone(),
                })
                .unwrap_or_default()
            }))
            .bind($e.channel_type)
    };
}

/// New-event notifications from every replica (PostgreSQL only).
pub struct EventNotifications(Option<sqlx::postgres::PgListener>);

impl EventNotifications {
    /// Waits for the next notification, or until the connection was lost and made again
    /// (`PgListener::recv` would reconnect silently). Notifications sent while it was lost are
    /// gone, so after either the caller re-reads the table. After an error the listener
    /// reconnects on the next call.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        if let Some(listener) = self.0.as_mut() {
            // `None`: the connection was lost; the listener has reconnected (eagerly).
            listener.try_recv().await?;
        }
        Ok(())
    }
}

impl Drop for EventNotifications {
    fn drop(&mut self) {
        // PgListener's own drop spawns a task to hand its connection back, which panics when
        // the runtime is going away (the listening task is dropped at shutdown): then the
        // connection is simply closed with the process.
        if let Some(listener) = self.0.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(listener);
        }
    }
}

/// How many events one transaction of the retention purge deletes at most.
const PURGE_BATCH: u64 = 1_000;

impl Store {
    /// Listens for events stored by any replica; `None` on SQLite (one gateway per file).
    pub async fn listen_events(&self) -> Result<Option<EventNotifications>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(None),
            Pool::Postgres(p) => {
                // Its own connection (a pool of one, which also reconnects it), not one taken
                // from the store's pool for good.
                let own = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(0)
                    .max_lifetime(None)
                    .idle_timeout(None)
                    .acquire_timeout(std::time::Duration::from_secs(5))
                    .connect_lazy_with((*p.connect_options()).clone());
                let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
                listener.listen(EVENTS_CHANNEL).await?;
                Ok(Some(EventNotifications(Some(listener))))
            }
        }
    }

    /// Stores an event; `None` when the inbound already holds this post.
    pub async fn insert_event(
        &self,
        e: &NewEvent,
        received_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        // Under the store's deadline, as every request's store call: Chat gives up on its call
        // long before a lock held for half a minute is let go.
        super::bounded(self.deadline, self.insert_event_unbounded(e, received_at)).await
    }

    async fn insert_event_unbounded(
        &self,
        e: &NewEvent,
        received_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        match &self.pool {
            // Stepped to its end (the store's module comment: writes that return rows).
            Pool::Sqlite(p) => Ok(bind_new_event!(e, received_at)
                .fetch_all(p)
                .await?
                .into_iter()
                .next()),
            Pool::Postgres(p) => {
                let mut tx = super::begin(p).await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(INSERT_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let id = bind_new_event!(e, received_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(id) = id {
                    // Delivered to the listeners when the transaction commits.
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(EVENTS_CHANNEL)
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(id)
            }
        }
    }

    /// Up to `limit` events after `after` matching `filter`, oldest first.
    pub async fn events_after(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        // Only the filters given, so each can use its index (`events_by_*`): written as
        // `$n IS NULL OR column = $n`, none could, and a filter matching nothing read every
        // retained event.
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE event_id > $1");
        let mut n = 1;
        let mut condition = |column: &str, given: bool| {
            if given {
                n += 1;
                sql.push_str(&format!(" AND {column} = ${n}"));
            }
        };
        condition("inbound", filter.inbound.is_some());
        condition("channel_id", filter.channel_id.is_some());
        condition("kind", filter.kind.is_some());
        sql.push_str(&format!(" ORDER BY event_id LIMIT ${}", n + 1));
        let rows: Vec<Row> = with_pool!(self, p => {
            let mut query = sqlx::query_as(&sql).bind(after);
            if let Some(inbound) = &filter.inbound {
                query = query.bind(inbound);
            }
            if let Some(channel_id) = filter.channel_id {
                query = query.bind(channel_id);
            }
            if let Some(kind) = filter.kind {
                query = query.bind(kind.as_str());
            }
            query.bind(limit).fetch_all(p).await
        })?;
        rows.into_iter().map(event).collect()
    }

    /// The highest event id the store has handed out, its events purged or not (0 when none):
    /// ids are never reused, so a resume point above it comes from elsewhere.
    pub async fn event_id_high_water(&self) -> Result<i64, StoreError> {
        let id = super::bounded(self.deadline, async {
            Ok(match &self.pool {
                Pool::Sqlite(p) => {
                    sqlx::query_scalar(
                        "SELECT MAX(v) FROM (SELECT MAX(event_id) AS v FROM events \
                     UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'events')",
                    )
                    .fetch_one(p)
                    .await?
                }
                Pool::Postgres(p) => {
                    sqlx::query_scalar(
                        "SELECT GREATEST((SELECT MAX(event_id) FROM events), \
                     pg_sequence_last_value(pg_get_serial_sequence('events', 'event_id')))",
                    )
                    .fetch_one(p)
                    .await?
                }
            })
        });
        let id: Option<i64> = id.await?;
        Ok(id.unwrap_or(0))
    }

    /// The highest event id the retention purge has deleted (0 when none): a reader whose
    /// resume point is below it has missed events.
    pub async fn events_purged_through(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = with_pool!(self, p => {
            sqlx::query_scalar("SELECT MAX(through_id) FROM events_purged").fetch_one(p).await
        })?;
        Ok(id.unwrap_or(0))
    }

    /// The newest event kept, or purged when the purge deleted every later one (0 when none):
    /// where a live stream or a new subscription starts (so neither is told it missed what it
    /// was never owed).
    pub async fn latest_event_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = with_pool!(self, p => {
            sqlx::query_scalar(
                "SELECT MAX(v) FROM (SELECT MAX(event_id) AS v FROM events \
                 UNION ALL SELECT MAX(through_id) AS v FROM events_purged) AS newest",
            )
            .fetch_one(p)
            .await
        })?;
        Ok(id.unwrap_or(0))
    }

    /// Removes the events received before `before` (ms) that every enabled subscription has
    /// fanned out (one not yet fanned out, after a gateway was down longer than the retention,
    /// stays until it is), and the subscriptions' records of having made a delivery for them
    /// (fan-out never goes back to a purged event, so those would only grow) once those
    /// deliveries can no longer be made, and remembers the highest id deleted
    /// ([`Self::events_purged_through`]); returns how many events.
    pub async fn purge_events(&self, before: i64) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let gone = self.purge_events_batch(before).await?;
            purged += gone;
            if gone < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    /// Up to [`PURGE_BATCH`] of [`Self::purge_events`], the oldest first, in a transaction of
    /// their own under the store's deadline: after a long pause, or a retention made shorter,
    /// one transaction over every event past retention held SQLite's write lock for as long as
    /// it took, and Chat's calls, which wait for it up to the deadline and are not sent again,
    /// were refused. What a batch deleted stays deleted if a later one fails.
    async fn purge_events_batch(&self, before: i64) -> Result<u64, StoreError> {
        let done = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            // A write first: SQLite then holds the write lock from the start, where a read
            // first and a write after fail at once (SQLITE_BUSY_SNAPSHOT, which no busy timeout
            // waits out) whenever another connection committed in between.
            sqlx::query("UPDATE events_purged SET through_id = through_id WHERE singleton = 1")
                .execute(&mut *tx)
                .await?;
            let fanned_out: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(fanned_out_to) FROM subscriptions WHERE enabled = 1",
            )
            .fetch_one(&mut *tx)
            .await?;
            let up_to = fanned_out.unwrap_or(i64::MAX);
            let through: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(event_id) FROM (SELECT event_id FROM events \
                 WHERE received_at < $1 AND event_id <= $2 ORDER BY event_id LIMIT $3) AS batch",
            )
            .bind(before)
            .bind(up_to)
            .bind(PURGE_BATCH as i64)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(through) = through {
                sqlx::query(
                    "INSERT INTO events_purged (singleton, through_id) VALUES (1, $1) \
                     ON CONFLICT (singleton) DO UPDATE SET through_id = CASE \
                     WHEN excluded.through_id > events_purged.through_id \
                     THEN excluded.through_id ELSE events_purged.through_id END",
                )
                .bind(through)
                .execute(&mut *tx)
                .await?;
            }
            // The records of events purged now or before, but not those whose delivery may
            // still be made: one still queued or being sent (a subscription's backlog is read
            // from them), or one failed or cancelled since its subscription was disabled, which
            // enabling it queues again (its body is in the delivery, not in the event).
            sqlx::query(
                "DELETE FROM subscription_deliveries WHERE event_id <= \
                 (SELECT COALESCE(MAX(through_id), 0) FROM events_purged) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d, subscriptions s \
                     WHERE d.id = subscription_deliveries.delivery_id \
                     AND s.id = subscription_deliveries.subscription_id \
                     AND (d.state IN ('queued', 'sending') \
                         OR (s.enabled = 0 AND d.state IN ('failed', 'cancelled') \
                             AND d.finished_at >= s.disabled_at)))",
            )
            .execute(&mut *tx)
            .await?;
            let done = match through {
                Some(through) => sqlx::query(
                    "DELETE FROM events WHERE received_at < $1 AND event_id <= $2",
                )
                .bind(before)
                .bind(through)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                None => 0,
            };
            tx.commit().await?;
            done
        });
        Ok(done)
    }
}
