//! HTTP subscriptions and their fan-out into the outbox.
//!
//! Fan-out turns each stored event a subscription wants into one outbox delivery (target
//! `subscription:<id>`, so the outbox keeps them in order). The pair (subscription, event) is a
//! primary key in `subscription_deliveries`, so whichever replica (or a synchronous reply) gets
//! there first makes the only delivery; on PostgreSQL the subscription row is locked while its
//! fan-out runs, so replicas also keep the deliveries in event order.

use secrecy::{ExposeSecret, SecretString};

use super::events::{COLUMNS as EVENT_COLUMNS, Row as EventRow, event};
use super::{Pool, Store, StoreError, with_pool};
use crate::events::subscriptions::Subscription;
use crate::events::{Event, EventFilter, EventKind};

/// What the outbox needs to send one event to one subscription.
pub struct SubscriptionDelivery {
    /// The outbox delivery id (a UUID).
    pub id: String,
    pub target: String,
    /// The job (JSON, read by the delivery module).
    pub request: String,
    /// The body to POST.
    pub body: String,
    pub next_attempt_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str = "id, url, secret, inbound, channel_id, kind, respond, enabled, \
    disabled_reason, consecutive_failures, last_delivered_event_id, created_at, disabled_at, \
    previous_secret, previous_secret_until, events_missed_through";

type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn subscription(row: Row) -> Result<Subscription, StoreError> {
    let kind = match row.5.as_deref() {
        None => None,
        Some(raw) => Some(EventKind::parse(raw).ok_or_else(|| {
            StoreError::Corrupt(format!("subscription {} has kind {raw:?}", row.0))
        })?),
    };
    Ok(Subscription {
        id: row.0,
        url: row.1,
        secret: SecretString::from(row.2),
        filter: EventFilter {
            inbound: row.3,
            channel_id: row.4,
            kind,
        },
        respond: row.6 != 0,
        enabled: row.7 != 0,
        disabled_reason: row.8,
        consecutive_failures: row.9,
        last_delivered_event_id: row.10,
        created_at: row.11,
        disabled_at: row.12,
        previous_secret: row
            .13
            .zip(row.14)
            .map(|(secret, until)| (SecretString::from(secret), until)),
        events_missed_through: row.15,
    })
}

/// Cancels a subscription's queued deliveries (its outbox target), inside transaction `tx`.
macro_rules! cancel_queued {
    ($tx:expr, $target:expr, $now:expr) => {
        sqlx::query(
            "UPDATE deliveries SET state = 'cancelled', finished_at = $2, updated_at = $2 \
             WHERE target = $1 AND state = 'queued'",
        )
        .bind($target)
        .bind($now)
        .execute(&mut *$tx)
        .await?
    };
}

/// Disables subscription `$id` with `$reason` unless it is disabled, and cancels its queued
/// deliveries, inside transaction `$tx`; `true` when the subscription exists.
macro_rules! disable {
    ($tx:expr, $id:expr, $target:expr, $reason:expr, $now:expr) => {{
        sqlx::query(
            "UPDATE subscriptions SET enabled = 0, disabled_reason = $2, disabled_at = $3 \
             WHERE id = $1 AND enabled = 1",
        )
        .bind($id)
        .bind($reason)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        cancel_queued!($tx, $target, $now);
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = $1")
                .bind($id)
                .fetch_optional(&mut *$tx)
                .await?;
        exists.is_some()
    }};
}

/// Inserts the delivery row of one (subscription, event) unless it has one: `true` when this
/// call made it. `$state` is `queued` (fan-out) or `delivered` (a synchronous reply).
macro_rules! insert_delivery {
    ($tx:expr, $subscription:expr, $event_id:expr, $d:expr, $state:expr, $now:expr) => {{
        let claimed = sqlx::query(
            "INSERT INTO subscription_deliveries (subscription_id, event_id, delivery_id) \
             VALUES ($1, $2, $3) ON CONFLICT (subscription_id, event_id) DO NOTHING",
        )
        .bind($subscription)
        .bind($event_id)
        .bind(&$d.id)
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query($crate::store::deliveries::TARGET_KEPT)
                .bind(&$d.target)
                .execute(&mut *$tx)
                .await?;
            sqlx::query(
                "INSERT INTO deliveries (id, caller, target, request, chunks, state, attempts, \
                 next_attempt_at, created_at, updated_at, expires_at, finished_at) \
                 VALUES ($1, $9, $2, $3, $4, $5, 0, $6, $7, $7, $8, \
                 CASE WHEN $5 = 'delivered' THEN $7 ELSE NULL END)",
            )
            .bind(&$d.id)
            .bind(&$d.target)
            .bind(&$d.request)
            .bind(serde_json::to_string(&[&$d.body]).unwrap_or_default())
            .bind($state)
            .bind($d.next_attempt_at)
            .bind($now)
            .bind($d.expires_at)
            .bind(super::deliveries::callers::SUBSCRIPTIONS)
            .execute(&mut *$tx)
            .await?;
        }
        claimed
    }};
}

/// The `disabled_reason` of a subscription an operator paused.
pub const DISABLED_BY_OPERATOR: &str = "disabled by an operator";

impl Store {
    /// Stores a new subscription; it receives the events after `after` (the latest at creation).
    pub async fn insert_subscription(
        &self,
        s: &Subscription,
        after: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO subscriptions (id, url, secret, inbound, channel_id, kind, respond, \
                   enabled, consecutive_failures, fanned_out_to, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, $8, $9)";
        with_pool!(self, p => sqlx::query(sql)
            .bind(&s.id)
            .bind(&s.url)
            .bind(s.secret.expose_secret())
            .bind(&s.filter.inbound)
            .bind(s.filter.channel_id)
            .bind(s.filter.kind.map(EventKind::as_str))
            .bind(i64::from(s.respond))
            .bind(after)
            .bind(s.created_at)
            .execute(p)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Every subscription, oldest first.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions ORDER BY created_at, id");
        let rows: Vec<Row> = with_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(subscription).collect()
    }

    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions WHERE id = $1");
        let row: Option<Row> =
            with_pool!(self, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
        row.map(subscription).transpose()
    }

    /// Removes a subscription and cancels its queued deliveries; `false` when there was none.
    pub async fn delete_subscription(
        &self,
        id: &str,
        target: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let deleted = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            let deleted = sqlx::query("DELETE FROM subscriptions WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            cancel_queued!(tx, target, now);
            tx.commit().await?;
            deleted
        });
        if deleted == 1 {
            self.scrub_replaced_values().await;
        }
        Ok(deleted == 1)
    }

    /// Makes the deliveries of the events after the subscription's fan-out cursor (at most
    /// `limit` events read), in event order; returns how many were made. `build` turns an event
    /// into its delivery. A disabled or deleted subscription gets none.
    pub async fn fan_out(
        &self,
        id: &str,
        limit: i64,
        now: i64,
        build: &(dyn Fn(&Subscription, &Event) -> SubscriptionDelivery + Sync),
    ) -> Result<usize, StoreError> {
        // PostgreSQL: replicas fanning out the same subscription wait for each other. SQLite:
        // write first, so the transaction holds the write lock from the start (a read
        // transaction cannot become a writer once another connection has written: "locked").
        let (take_lock, lock) = match self.pool {
            Pool::Sqlite(_) => (
                "UPDATE subscriptions SET fanned_out_to = fanned_out_to WHERE id = $1",
                format!("SELECT {COLUMNS} FROM subscriptions WHERE id = $1"),
            ),
            Pool::Postgres(_) => (
                "SELECT CAST($1 AS TEXT)",
                format!("SELECT {COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE"),
            ),
        };
        let events = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id > \
                 (SELECT fanned_out_to FROM subscriptions WHERE id = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR inbound = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR channel_id = $3) \
             AND (CAST($4 AS TEXT) IS NULL OR kind = $4) \
             AND event_id <= $6 ORDER BY event_id LIMIT $5"
        );
        let made = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            sqlx::query(take_lock).bind(id).execute(&mut *tx).await?;
            let row: Option<Row> = sqlx::query_as(&lock).bind(id).fetch_optional(&mut *tx).await?;
            let Some(sub) = row.map(subscription).transpose()? else {
                return Ok(0);
            };
            if !sub.enabled {
                return Ok(0);
            }
            // Read first: an event committed meanwhile waits for the next round, not skipped.
            let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(event_id), 0) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            let rows: Vec<EventRow> = sqlx::query_as(&events)
                .bind(id)
                .bind(&sub.filter.inbound)
                .bind(sub.filter.channel_id)
                .bind(sub.filter.kind.map(EventKind::as_str))
                .bind(limit)
                .bind(newest)
                .fetch_all(&mut *tx)
                .await?;
            // The cursor passes non-matching events too: up to the last event read, or the
            // newest one when fewer than `limit` matched.
            let upto = if (rows.len() as i64) < limit {
                newest
            } else {
                rows.last().map_or(newest, |r| r.0)
            };
            let mut made = 0;
            for row in rows {
                let e = event(row)?;
                let d = build(&sub, &e);
                if insert_delivery!(tx, &sub.id, e.event_id, d, "queued", now) {
                    made += 1;
                }
            }
            // Events the retention deleted before this subscription was handed them (it was
            // disabled longer than the retention): the cursor passes them, and the loss is kept.
            sqlx::query(
                "UPDATE subscriptions SET events_missed_through = \
                 (SELECT MAX(through_id) FROM events_purged) \
                 WHERE id = $1 AND fanned_out_to < (SELECT COALESCE(MAX(through_id), 0) FROM events_purged)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE subscriptions SET fanned_out_to = $2 WHERE id = $1 AND fanned_out_to < $2",
            )
            .bind(id)
            .bind(upto)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            made
        });
        Ok(made)
    }

    /// A synchronous reply reached the subscription: its delivery of this event is done. Makes
    /// the delivery as delivered, or marks the one fan-out made (still waiting) delivered.
    pub async fn record_reply(
        &self,
        subscription_id: &str,
        event_id: i64,
        d: &SubscriptionDelivery,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            if !insert_delivery!(tx, subscription_id, event_id, d, "delivered", now) {
                sqlx::query(
                    "UPDATE deliveries SET state = 'delivered', finished_at = $3, updated_at = $3 \
                     WHERE state = 'queued' AND id = (SELECT delivery_id FROM subscription_deliveries \
                         WHERE subscription_id = $1 AND event_id = $2)",
                )
                .bind(subscription_id)
                .bind(event_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        self.subscription_succeeded(subscription_id, event_id).await
    }

    /// Fans the subscription out ([`Self::fan_out`]) until its cursor has passed `event_id`:
    /// the deliveries of that event and the earlier ones exist, made in event order. A
    /// synchronous call can fail before the fan-out task has made its event's delivery (a
    /// refused connection takes a millisecond), and [`Self::note_reply_missed`] has a delivery
    /// to mark only once it exists; made here rather than alone, it cannot be queued ahead of
    /// an earlier event's that the fan-out has not made yet. Nothing is made for a disabled or
    /// deleted subscription.
    pub async fn fan_out_through(
        &self,
        id: &str,
        event_id: i64,
        now: i64,
        build: &(dyn Fn(&Subscription, &Event) -> SubscriptionDelivery + Sync),
    ) -> Result<(), StoreError> {
        let mut before = None;
        loop {
            self.fan_out(id, 500, now, build).await?;
            let cursor: Option<i64> = with_pool!(self, p => sqlx::query_scalar(
                "SELECT fanned_out_to FROM subscriptions WHERE id = $1 AND enabled = 1",
            )
            .bind(id)
            .fetch_optional(p)
            .await)?;
            match cursor {
                // Each round moves the cursor on; one that did not is the last.
                Some(at) if at < event_id && before != Some(at) => before = Some(at),
                _ => return Ok(()),
            }
        }
    }

    /// A synchronous call did not reach the subscription (an error, no answer within the
    /// reply budget): its delivery of the event counts as tried (`attempts` 1), as a failed
    /// call of the outbox does. The delivery must exist: fan the subscription out first
    /// ([`Self::fan_out_through`]).
    pub async fn note_reply_missed(
        &self,
        subscription_id: &str,
        event_id: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE deliveries SET attempts = 1 WHERE state = 'queued' AND attempts = 0 \
                   AND id = (SELECT delivery_id FROM subscription_deliveries \
                       WHERE subscription_id = $1 AND event_id = $2)";
        with_pool!(self, p => sqlx::query(sql).bind(subscription_id).bind(event_id)
            .execute(p).await?.rows_affected());
        Ok(())
    }

    /// How many subscriptions the gateway disabled (after failures, or a 410), for the
    /// metrics; not those an operator paused.
    pub async fn disabled_subscriptions(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM subscriptions WHERE enabled = 0 \
                   AND (disabled_reason IS NULL OR disabled_reason <> $1)";
        Ok(with_pool!(self, p => sqlx::query_scalar(sql)
            .bind(DISABLED_BY_OPERATOR).fetch_one(p).await)?)
    }

    /// Whether the subscription has an unfinished delivery of an event before `event_id`: one
    /// the outbox is sending or will send, or one held for its synchronous call, running or
    /// not yet begun (by another request, or another replica). A later event must not
    /// overtake it. The earlier deliveries must exist: fan out first
    /// ([`Self::fan_out_through`]).
    pub async fn subscription_has_backlog(
        &self,
        subscription_id: &str,
        event_id: i64,
    ) -> Result<bool, StoreError> {
        // From the target's unfinished deliveries (the (state, target, seq) index), not from
        // every retained record of the subscription.
        let sql = "SELECT d.id FROM deliveries d \
                   WHERE d.target = $3 AND d.state IN ('queued', 'sending') \
                   AND EXISTS (SELECT 1 FROM subscription_deliveries s \
                       WHERE s.delivery_id = d.id AND s.subscription_id = $1 AND s.event_id < $2) \
                   LIMIT 1";
        let target = crate::events::subscriptions::target(subscription_id);
        let found: Option<String> = with_pool!(self, p => sqlx::query_scalar(sql)
            .bind(subscription_id).bind(event_id).bind(&target).fetch_optional(p).await)?;
        Ok(found.is_some())
    }

    /// Gives the subscription `secret`; the one it replaces keeps signing beside it until
    /// `previous_until` (ms), or is dropped at once without one (a secret rotated because it
    /// leaked is not kept). `false` when there is no such subscription.
    pub async fn rotate_subscription_secret(
        &self,
        id: &str,
        secret: &SecretString,
        previous_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE subscriptions SET \
                   previous_secret = CASE WHEN $3 IS NULL THEN NULL ELSE secret END, \
                   previous_secret_until = $3, secret = $2 WHERE id = $1";
        let done = with_pool!(self, p => sqlx::query(sql).bind(id)
            .bind(secret.expose_secret()).bind(previous_until)
            .execute(p).await?.rows_affected());
        self.scrub_replaced_values().await;
        Ok(done == 1)
    }

    /// Drops the replaced secrets whose time to sign beside the new one ended before `now`:
    /// nothing uses them any more. Returns how many.
    pub async fn forget_replaced_secrets(&self, now: i64) -> Result<u64, StoreError> {
        let sql = "UPDATE subscriptions SET previous_secret = NULL, previous_secret_until = NULL \
                   WHERE previous_secret_until < $1";
        let forgotten =
            with_pool!(self, p => sqlx::query(sql).bind(now).execute(p).await?.rows_affected());
        if forgotten > 0 {
            self.scrub_replaced_values().await;
        }
        Ok(forgotten)
    }

    /// A delivery reached the subscription: the failure count starts again.
    pub async fn subscription_succeeded(&self, id: &str, event_id: i64) -> Result<(), StoreError> {
        let sql = "UPDATE subscriptions SET consecutive_failures = 0, \
                   last_delivered_event_id = CASE WHEN last_delivered_event_id IS NULL \
                       OR last_delivered_event_id < $2 THEN $2 ELSE last_delivered_event_id END \
                   WHERE id = $1";
        with_pool!(self, p => sqlx::query(sql).bind(id).bind(event_id).execute(p).await.map(drop))?;
        Ok(())
    }

    /// Counts a failed attempt; at `max_failures` in a row the subscription is disabled with
    /// `reason` and its queued deliveries are cancelled. Returns the failures in a row now, and
    /// whether the subscription is now disabled.
    pub async fn subscription_failed(
        &self,
        id: &str,
        target: &str,
        max_failures: i64,
        reason: &str,
        now: i64,
    ) -> Result<(i64, bool), StoreError> {
        let counted = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            let failures: Option<i64> = sqlx::query_scalar(
                "UPDATE subscriptions SET consecutive_failures = consecutive_failures + 1 \
                 WHERE id = $1 RETURNING consecutive_failures",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let failures = failures.unwrap_or(0);
            let disabled = failures >= max_failures;
            if disabled {
                let why = format!("{max_failures} consecutive failed deliveries; the last: {reason}");
                let _ = disable!(tx, id, target, &why, now);
            }
            tx.commit().await?;
            (failures, disabled)
        });
        Ok(counted)
    }

    /// Disables the subscription at once (the receiver said `410 Gone`, or an operator asked)
    /// and cancels its queued deliveries. `false` when there is no such subscription.
    pub async fn disable_subscription(
        &self,
        id: &str,
        target: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let found = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            let found = disable!(tx, id, target, reason, now);
            tx.commit().await?;
            found
        });
        Ok(found)
    }

    /// Records that a claimed delivery to subscription `subscription_id` was not sent because
    /// the subscription is disabled: `failed`, so enabling it queues the delivery again. If it
    /// has been enabled since the worker looked, the delivery is queued at once instead, due
    /// `now` (enabling re-queues only what had failed by then). `false` when `owner` no longer
    /// holds the claim.
    pub async fn finish_while_disabled(
        &self,
        delivery_id: &str,
        owner: &str,
        subscription_id: &str,
        last_error: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE deliveries SET \
                       state = CASE WHEN EXISTS (SELECT 1 FROM subscriptions \
                           WHERE id = $3 AND enabled = 1) THEN 'queued' ELSE 'failed' END, \
                       finished_at = CASE WHEN EXISTS (SELECT 1 FROM subscriptions \
                           WHERE id = $3 AND enabled = 1) THEN NULL ELSE $5 END, \
                       next_attempt_at = $5, last_error = $4, lease_owner = NULL, \
                       lease_until = NULL, updated_at = $5 \
                   WHERE id = $1 AND lease_owner = $2 AND state = 'sending'";
        // The same statement on either backend, bound the same way.
        macro_rules! update {
            () => {
                sqlx::query(sql)
                    .bind(delivery_id)
                    .bind(owner)
                    .bind(subscription_id)
                    .bind(last_error)
                    .bind(now)
            };
        }
        let done = super::bounded(self.deadline, async {
            Ok(match &self.pool {
                // One writer at a time: an enable runs wholly before or after this.
                Pool::Sqlite(p) => update!().execute(p).await?.rows_affected(),
                // The subscription's row under a share lock first: an enable in progress (which
                // holds it) is waited for and seen, and one that comes after sees this delivery
                // failed and queues it again. Read unlocked, a concurrent enable could skip the
                // row while it was still `sending`, and the event was lost to the subscription.
                Pool::Postgres(p) => {
                    let mut tx = super::begin(p).await?;
                    sqlx::query("SELECT 1 FROM subscriptions WHERE id = $1 FOR SHARE")
                        .bind(subscription_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let done = update!().execute(&mut *tx).await?.rows_affected();
                    tx.commit().await?;
                    done
                }
            })
        })
        .await?;
        Ok(done == 1)
    }

    /// Enables a disabled subscription: its failure count starts again, and the deliveries that
    /// failed or were cancelled since it was disabled are queued again (due now, expiring at
    /// `expires_at`), in their order. Returns how many, or `None` when there is no such
    /// subscription. Enabling an enabled subscription changes nothing.
    pub async fn enable_subscription(
        &self,
        id: &str,
        target: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<u64>, StoreError> {
        let requeued = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            // A write first: SQLite then holds the write lock from the start (a read first and
            // a write after fail at once, SQLITE_BUSY_SNAPSHOT, when another connection
            // committed in between), and PostgreSQL the subscription's row, which a paused
            // delivery being recorded waits for (`finish_while_disabled`).
            sqlx::query("UPDATE subscriptions SET enabled = enabled WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let disabled_at: Option<Option<i64>> = sqlx::query_scalar(
                "SELECT disabled_at FROM subscriptions WHERE id = $1 AND enabled = 0",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let requeued = match disabled_at {
                None => {
                    let exists: Option<String> =
                        sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    exists.map(|_| 0)
                }
                Some(since) => {
                    sqlx::query(
                        "UPDATE subscriptions SET enabled = 1, disabled_reason = NULL, \
                         disabled_at = NULL, consecutive_failures = 0 WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    // Tried before (`attempts` 1, the back-off from its start): a new event
                    // waits behind them, not called at once ([`Self::subscription_has_backlog`]).
                    let again = sqlx::query(
                        "UPDATE deliveries SET state = 'queued', attempts = 1, next_attempt_at = $2, \
                         expires_at = $3, finished_at = NULL, last_error = NULL, updated_at = $2 \
                         WHERE target = $1 AND state IN ('failed', 'cancelled') \
                         AND finished_at >= $4",
                    )
                    .bind(target)
                    .bind(now)
                    .bind(expires_at)
                    .bind(since.unwrap_or(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    // Its target was pruned once nothing of it was unfinished: made again (and
                    // waited for against a prune holding it), or claims, which start from the
                    // targets, would never see the rows queued here.
                    if again > 0 {
                        sqlx::query(super::deliveries::TARGET_KEPT)
                            .bind(target)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some(again)
                }
            };
            tx.commit().await?;
            requeued
        });
        Ok(requeued)
    }
}
