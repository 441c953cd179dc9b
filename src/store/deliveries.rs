//! The outbox tables: deliveries, their per-chunk progress and per-target pacing.
//!
//! Order per target: a target's *head* is its oldest delivery still `queued` or `sending`; only
//! the head may be claimed, so message n+1 waits until n is delivered, failed or cancelled.
//! A claim sets a lease; a `sending` row whose lease expired (a dead replica) is claimable again.

use sqlx::Row;

use super::{Pool, Store, StoreError, with_pool};

/// Who handed a delivery over (`deliveries.caller`): an API key's name, or one of these.
pub mod callers {
    /// Anything handed over while keys are off.
    pub const ANONYMOUS: &str = "anonymous";
    /// Events fanned out to HTTP subscriptions.
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    const HOOK_PREFIX: &str = "hook:";

    /// A hook's messages: `hook:<name>`.
    pub fn hook(name: &str) -> String {
        format!("{HOOK_PREFIX}{name}")
    }

    /// Whether `caller` is a hook's.
    pub fn is_hook(caller: &str) -> bool {
        caller.starts_with(HOOK_PREFIX)
    }

    /// Whether `caller` names an API key, not one of the callers above (a key named like one of
    /// them is taken for it).
    pub fn is_key(caller: &str) -> bool {
        caller != ANONYMOUS && caller != SUBSCRIPTIONS && !caller.starts_with(HOOK_PREFIX)
    }
}

/// What the outbox needs to keep for one message.
pub struct NewDelivery {
    pub id: String,
    pub caller: String,
    /// `channel:<id>`, `user:<id>` or `token:<name>`: the unit of ordering and pacing.
    pub target: String,
    /// What to send (JSON, read by the delivery module).
    pub request: String,
    pub chunks: Vec<String>,
    pub now_ms: i64,
    pub expires_at_ms: i64,
}

/// The sender's id of an event, or a digest of it: what makes a second copy of the event
/// recognisable (`deliveries.event_key`, per caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKey {
    pub key: String,
    /// A copy created before this time (ms) is an earlier occurrence, not the same event;
    /// `None`: the key names one event for as long as its delivery is kept.
    pub since_ms: Option<i64>,
}

/// What [`Store::enqueue_event`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    New,
    /// The event was handed over before: nothing stored; the earlier delivery's id.
    Repeat(String),
}

/// Where a delivery is in its life (the `state` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its turn or its next attempt.
    Queued,
    /// Claimed by a worker, under its lease.
    Sending,
    /// Every part posted (or the subscription answered).
    Delivered,
    /// For good: no retry could help, or its age ran out.
    Failed,
    /// Cancelled by its caller before it was sent.
    Cancelled,
}

impl DeliveryState {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Sending,
        Self::Delivered,
        Self::Failed,
        Self::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == raw)
    }

    /// Still to be sent: queued or being sent.
    pub const fn is_unfinished(self) -> bool {
        matches!(self, Self::Queued | Self::Sending)
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state as the store read it: one of [`DeliveryState`], or the row is unreadable.
fn decoded_state(raw: &str) -> Result<DeliveryState, sqlx::Error> {
    DeliveryState::parse(raw)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown delivery state {raw:?}").into()))
}

/// A delivery as stored.
#[derive(Clone, Debug)]
pub struct DeliveryRow {
    pub id: String,
    pub caller: String,
    pub target: String,
    pub request: String,
    pub chunks: Vec<String>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub uncertain_since: Option<i64>,
    pub at_least_once: bool,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub expires_at: i64,
    /// Posts in chunk order: (chunk index, post id when DSM named one); a chatbot chunk has one
    /// per recipient.
    pub posts: Vec<(i64, Option<i64>)>,
    /// Who each post went to, in the same order: (chunk index, recipient); a chatbot's
    /// recipient is the user's id, every other post's 0.
    pub posted_to: Vec<(i64, i64)>,
}

type PostsOf = (Vec<(i64, Option<i64>)>, Vec<(i64, i64)>);

/// A state change asked for over the API.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    Done,
    NotFound,
    /// The delivery is in another state (named).
    WrongState(DeliveryState),
}

/// Queue depth and oldest entry per state.
#[derive(Debug)]
pub struct StateStats {
    pub state: DeliveryState,
    pub count: i64,
    pub oldest_created_at: Option<i64>,
}

const COLUMNS: &str = "id, caller, target, request, chunks, state, attempts, next_attempt_at, \
    uncertain_since, at_least_once, last_error, created_at, updated_at, finished_at, expires_at";

/// The claimable head of each target: oldest unfinished delivery, queued (or with an expired
/// lease), due, its target not paced, and no other delivery to the target being sent (a
/// failed one retried by hand is older than the one in flight, and must not go out beside
/// it). `$1` = now.
/// Which targets a claim looks among (`claim_among`, `next_due_among`), by a prefix of their
/// name: lanes kept for one kind of target are not taken by another's slow sends.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    All,
    Starting(&'a str),
    NotStarting(&'a str),
    /// The subscriptions' targets (named by the prefix and the subscription's id) whose last
    /// delivery did not fail: a lane kept for receivers that answer, so those that do not
    /// cannot take every lane for their timeouts.
    AnsweringSubscriptions(&'a str),
}

impl Targets<'_> {
    /// The prefix bound as the condition's parameter (unused by `All`, which is true).
    fn prefix(&self) -> &str {
        match self {
            Targets::All => "",
            Targets::Starting(prefix)
            | Targets::NotStarting(prefix)
            | Targets::AnsweringSubscriptions(prefix) => prefix,
        }
    }

    /// SQL true for the targets in `column`, with the prefix as the parameter `param`.
    fn condition(&self, column: &str, param: &str) -> String {
        let op = match self {
            // Every name starts with the empty prefix.
            Targets::All | Targets::Starting(_) | Targets::AnsweringSubscriptions(_) => "=",
            Targets::NotStarting(_) => "<>",
        };
        let starting = format!("substr({column}, 1, length({param})) {op} {param}");
        match self {
            Targets::AnsweringSubscriptions(_) => format!(
                "{starting} AND EXISTS (SELECT 1 FROM subscriptions s \
                 WHERE {column} = {param} || s.id AND s.consecutive_failures = 0)"
            ),
            _ => starting,
        }
    }
}

/// Each target's head, its first unfinished delivery, found from the targets: two look-ups in
/// `deliveries_by_state` per target (its first queued and its first sending row), so a claim or
/// [`Store::next_due`] costs the number of targets, not the backlog. Grouping every unfinished
/// row by target took 36 ms a claim on SQLite under a 70,000-message backlog (the outbox drained
/// 22 messages a second), and 24 ms on PostgreSQL. Binds `t` (the target) and `d` (its head).
fn heads(pool: &Pool) -> String {
    const FIRST_QUEUED: &str = "(SELECT MIN(h.seq) FROM deliveries h \
        WHERE h.state = 'queued' AND h.target = t.target)";
    const FIRST_SENDING: &str = "(SELECT MIN(h.seq) FROM deliveries h \
        WHERE h.state = 'sending' AND h.target = t.target)";
    let first = match pool {
        // SQLite's two-argument `min` is NULL when either is.
        Pool::Sqlite(_) => format!(
            "(SELECT min(coalesce(q, s), coalesce(s, q)) \
             FROM (SELECT {FIRST_QUEUED} AS q, {FIRST_SENDING} AS s))"
        ),
        // PostgreSQL's `LEAST` ignores NULLs.
        Pool::Postgres(_) => format!("LEAST({FIRST_QUEUED}, {FIRST_SENDING})"),
    };
    format!("FROM targets t JOIN deliveries d ON d.seq = {first}")
}

/// True for a head of [`heads`] that may be claimed at `$1`: its target's pacing allows, it is
/// queued (or its lease ran out) and due, and no other row of its target is being sent.
const CLAIMABLE: &str = "t.next_send_at <= $1 \
    AND (d.state = 'queued' OR d.lease_until < $1) \
    AND d.next_attempt_at <= $1 \
    AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.target = d.target \
        AND o.state = 'sending' AND o.lease_until >= $1 AND o.seq <> d.seq)";

fn decode<R: Row>(row: &R) -> Result<DeliveryRow, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let chunks: String = row.try_get("chunks")?;
    Ok(DeliveryRow {
        id: row.try_get("id")?,
        caller: row.try_get("caller")?,
        target: row.try_get("target")?,
        request: row.try_get("request")?,
        chunks: serde_json::from_str(&chunks).map_err(|e| sqlx::Error::Decode(e.into()))?,
        state: decoded_state(&row.try_get::<String, _>("state")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        uncertain_since: row.try_get("uncertain_since")?,
        at_least_once: row.try_get::<i64, _>("at_least_once")? != 0,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        expires_at: row.try_get("expires_at")?,
        posts: Vec::new(),
        posted_to: Vec::new(),
    })
}

fn chunks_json(chunks: &[String]) -> String {
    serde_json::to_string(chunks).unwrap_or_else(|_| "[]".to_owned())
}

/// Makes sure a delivery's target row exists, and locks it until the enqueue commits (an
/// update, not `DO NOTHING`): [`Store::prune_targets`] must not delete it in between, or on
/// PostgreSQL the delivery would never be claimed.
pub(super) const TARGET_KEPT: &str = "INSERT INTO targets (target, next_send_at, penalty_ms) \
     VALUES ($1, 0, 0) ON CONFLICT (target) DO UPDATE SET target = excluded.target";

impl Store {
    /// Commits a new queued delivery (and its target's pacing row).
    pub async fn enqueue(&self, new: &NewDelivery) -> Result<(), StoreError> {
        self.insert(new, &[], None, new.now_ms, None)
            .await
            .map(drop)
    }

    /// Commits a new queued delivery that a synchronous send began: the posts `posted` names
    /// (chunk, recipient (0 in a channel), post id) are recorded, and with `uncertain_since` the next one's send
    /// went unanswered (sent then), so the worker looks for it before sending. Not tried before
    /// `first_attempt_at`. One transaction: no worker sees the delivery without its progress.
    /// With `event`, nothing is stored when the caller handed that event over before (as
    /// [`Self::enqueue_event`]).
    pub async fn enqueue_resumed(
        &self,
        new: &NewDelivery,
        posted: &[(i64, i64, Option<i64>)],
        uncertain_since: Option<i64>,
        first_attempt_at: i64,
        event: Option<&EventKey>,
    ) -> Result<Enqueued, StoreError> {
        self.insert(new, posted, uncertain_since, first_attempt_at, event)
            .await
    }

    /// Commits a new queued delivery for the event `event`, unless the same caller handed the
    /// same event over before (within its window): then nothing is stored and the earlier
    /// delivery's id is answered. The check and the insert are one transaction, and the
    /// unique index decides between concurrent copies, so an event is queued once.
    pub async fn enqueue_event(
        &self,
        new: &NewDelivery,
        event: &EventKey,
    ) -> Result<Enqueued, StoreError> {
        self.insert(new, &[], None, new.now_ms, Some(event)).await
    }

    async fn insert(
        &self,
        new: &NewDelivery,
        posted: &[(i64, i64, Option<i64>)],
        uncertain_since: Option<i64>,
        first_attempt_at: i64,
        event: Option<&EventKey>,
    ) -> Result<Enqueued, StoreError> {
        let chunks = chunks_json(&new.chunks);
        let key = event.map(|e| e.key.as_str());
        let enqueued = with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            if let Some(EventKey { key, since_ms: Some(since) }) = event {
                // An older copy is another occurrence: its key no longer stands in the way.
                sqlx::query(
                    "UPDATE deliveries SET event_key = NULL \
                     WHERE caller = $1 AND event_key = $2 AND created_at < $3",
                )
                .bind(&new.caller).bind(key).bind(since)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(TARGET_KEPT)
            .bind(&new.target)
            .execute(&mut *tx)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO deliveries (id, caller, target, request, chunks, state, attempts, \
                 next_attempt_at, created_at, updated_at, expires_at, uncertain_since, event_key) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', 0, $10, $6, $6, $7, $8, $9) \
                 ON CONFLICT (caller, event_key) DO NOTHING",
            )
            .bind(&new.id)
            .bind(&new.caller)
            .bind(&new.target)
            .bind(&new.request)
            .bind(&chunks)
            .bind(new.now_ms)
            .bind(new.expires_at_ms)
            .bind(uncertain_since)
            .bind(key)
            .bind(first_attempt_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let first: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM deliveries WHERE caller = $1 AND event_key = $2",
                )
                .bind(&new.caller)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                // Gone between the two statements (removed by retention): rare; try again.
                first.map(Enqueued::Repeat).ok_or_else(|| {
                    StoreError::Unavailable("the event's earlier delivery vanished; retry".into())
                })?
            } else {
                for (chunk, recipient, post_id) in posted {
                    sqlx::query(
                        "INSERT INTO delivery_posts (delivery_id, chunk, recipient, post_id, posted_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&new.id).bind(chunk).bind(recipient).bind(post_id).bind(new.now_ms)
                    .execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Enqueued::New
            }
        });
        Ok(enqueued)
    }

    /// One delivery with its posted chunks.
    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1");
        let row = with_pool!(self, p => {
            match sqlx::query(&sql).bind(id).fetch_optional(p).await? {
                Some(row) => Some(decode(&row)?),
                None => None,
            }
        });
        let Some(mut row) = row else { return Ok(None) };
        (row.posts, row.posted_to) = self.posts_of(&row.id).await?;
        Ok(Some(row))
    }

    /// A delivery's posts (chunk, post id) and their recipients (chunk, recipient).
    async fn posts_of(&self, id: &str) -> Result<PostsOf, StoreError> {
        let sql = "SELECT chunk, recipient, post_id FROM delivery_posts WHERE delivery_id = $1 \
                   ORDER BY chunk, recipient";
        let rows: Vec<(i64, i64, Option<i64>)> = with_pool!(self, p => {
            let rows = sqlx::query(sql).bind(id).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("chunk")?, r.try_get("recipient")?, r.try_get("post_id")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows
            .into_iter()
            .map(|(chunk, recipient, post)| ((chunk, post), (chunk, recipient)))
            .unzip())
    }

    /// Deliveries in arrival order, optionally of one state, after the delivery `after`;
    /// `None` when `after` names no delivery (never one, or purged): starting over from the
    /// first would hand a poller everything again.
    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<Vec<DeliveryRow>>, StoreError> {
        let after_seq = match after {
            Some(id) => {
                let sql = "SELECT seq FROM deliveries WHERE id = $1";
                let seq: Option<i64> = with_pool!(self, p =>
                    sqlx::query_scalar(sql).bind(id).fetch_optional(p).await)?;
                match seq {
                    Some(seq) => seq,
                    None => return Ok(None),
                }
            }
            None => 0,
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries \
             WHERE ($1 = '' OR state = $1) AND seq > $2 \
             ORDER BY seq LIMIT $3"
        );
        let rows = with_pool!(self, p => {
            sqlx::query(&sql)
                .bind(state.map_or("", DeliveryState::as_str))
                .bind(after_seq)
                .bind(limit)
                .fetch_all(p)
                .await?
                .iter()
                .map(decode)
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            (row.posts, row.posted_to) = self.posts_of(&row.id).await?;
            out.push(row);
        }
        Ok(Some(out))
    }

    /// Removes deliveries that finished (delivered, failed or cancelled) before `before` (ms),
    /// and with them their posts (`ON DELETE CASCADE`), a batch at a time so a large backlog
    /// never holds the write lock long; returns how many. Unfinished ones stay, whatever their
    /// age, and so does a subscription's failed or cancelled delivery of an event still
    /// retained: enabling the subscription again queues it again. The outer test repeats the
    /// inner one: a delivery retried meanwhile is kept.
    pub async fn purge_deliveries(&self, before: i64) -> Result<u64, StoreError> {
        const BATCH: i64 = 500;
        // An index range per state on (state, finished_at); no order for the batch, as one
        // by seq would walk every finished row. NOT EXISTS probes an index where NOT IN
        // materialises the whole set on PostgreSQL.
        const FINISHED: &str = "state IN ('delivered', 'failed', 'cancelled') \
             AND finished_at < $1 AND (state = 'delivered' OR NOT EXISTS \
                 (SELECT 1 FROM subscription_deliveries s WHERE s.delivery_id = deliveries.id))";
        let sql = format!(
            "DELETE FROM deliveries WHERE {FINISHED} AND seq IN \
             (SELECT seq FROM deliveries WHERE {FINISHED} LIMIT $2)"
        );
        let mut purged = 0;
        loop {
            let done = with_pool!(self, p => sqlx::query(&sql).bind(before).bind(BATCH)
                .execute(p).await?.rows_affected());
            purged += done;
            if done < BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Removes the targets no unfinished delivery names (they are kept while a delivery of
    /// theirs is queued or being sent, and while their pacing lasts), 500 at a time; how many
    /// went. What queues a finished delivery again makes its target again.
    pub async fn prune_targets(&self, now: i64) -> Result<u64, StoreError> {
        let mut pruned = 0;
        loop {
            let gone = self.prune_targets_batch(now).await?;
            pruned += gone;
            if gone < 500 {
                return Ok(pruned);
            }
        }
    }

    /// Up to 500 of [`Self::prune_targets`]. An enqueue locks its target row
    /// ([`TARGET_KEPT`]): on PostgreSQL the rows are locked first, skipping those an enqueue
    /// holds, and checked again by a later statement, which sees every enqueue committed
    /// before the locks; one that comes after waits and inserts the row again.
    async fn prune_targets_batch(&self, now: i64) -> Result<u64, StoreError> {
        super::bounded(self.deadline, self.prune_targets_batch_unbounded(now)).await
    }

    async fn prune_targets_batch_unbounded(&self, now: i64) -> Result<u64, StoreError> {
        // Only unfinished deliveries keep their target: every claim and the worker's idle
        // look walk the targets, and kept for the finished ones' retention, a write key's
        // sends to ids that do not exist made thousands a day. A failed delivery retried
        // by hand makes its target again.
        const UNUSED: &str = "t.next_send_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
             WHERE d.state IN ('queued', 'sending') AND d.target = t.target)";
        match &self.pool {
            Pool::Sqlite(p) => {
                // One writer at a time: no enqueue can come between the test and the delete.
                let sql = format!(
                    "DELETE FROM targets WHERE target IN \
                     (SELECT t.target FROM targets t WHERE {UNUSED} LIMIT 500)"
                );
                Ok(sqlx::query(&sql)
                    .bind(now)
                    .execute(p)
                    .await?
                    .rows_affected())
            }
            Pool::Postgres(p) => {
                let mut tx = super::begin(p).await?;
                let locked: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT t.target FROM targets t WHERE {UNUSED} \
                     LIMIT 500 FOR UPDATE SKIP LOCKED"
                ))
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let sql = format!("DELETE FROM targets t WHERE t.target = ANY($2) AND {UNUSED}");
                let gone = sqlx::query(&sql)
                    .bind(now)
                    .bind(&locked)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(gone)
            }
        }
    }

    /// Takes the next due delivery for `owner` until `lease_until`, or `None`. On PostgreSQL
    /// the target row is locked with `FOR UPDATE SKIP LOCKED` first, so replicas never claim
    /// the same target at once and pacing holds across them.
    pub async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        self.claim_among(owner, now, lease_until, Targets::All)
            .await
    }

    /// [`Store::claim`] among `targets` only.
    pub async fn claim_among(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        targets: Targets<'_>,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let among = targets.condition("d.target", "$5");
        let heads = heads(&self.pool);
        // The outer state check makes a concurrent claim of the same row a no-op.
        let update = format!(
            "UPDATE deliveries SET state = 'sending', lease_owner = $2, lease_until = $3, \
                 attempts = attempts + 1, updated_at = $1 \
             WHERE (state = 'queued' OR lease_until < $1) AND seq = ( \
                 SELECT d.seq {heads} WHERE {CLAIMABLE} AND t.target = COALESCE($4, t.target) \
                 AND {among} ORDER BY d.next_attempt_at, d.seq LIMIT 1) \
             RETURNING {COLUMNS}"
        );
        // Under the store's deadline: a database that stops answering would hold the lane
        // for good. On SQLite a claim cut off after it committed is the lane's until its
        // lease runs out, then anyone's again; on PostgreSQL it is rolled back.
        let claimed = super::bounded(self.deadline, async {
            Ok(match &self.pool {
                // Stepped to its end (the store's module comment: writes that return rows).
                Pool::Sqlite(p) => sqlx::query(&update)
                    .bind(now)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(None::<String>)
                    .bind(targets.prefix())
                    .fetch_all(p)
                    .await?
                    .first()
                    .map(decode)
                    .transpose()?,
                Pool::Postgres(p) => {
                    let mut tx = super::begin(p).await?;
                    // The target whose head is due first, as SQLite's claim orders them: in the
                    // table's own order, the first targets would take every free lane while later
                    // ones waited.
                    let lock = format!(
                        "SELECT t.target {heads} WHERE {CLAIMABLE} AND {} \
                     ORDER BY d.next_attempt_at, d.seq \
                     LIMIT 1 FOR UPDATE OF t SKIP LOCKED",
                        targets.condition("d.target", "$2")
                    );
                    let target: Option<String> = sqlx::query_scalar(&lock)
                        .bind(now)
                        .bind(targets.prefix())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let row = match target {
                        Some(target) => sqlx::query(&update)
                            .bind(now)
                            .bind(owner)
                            .bind(lease_until)
                            .bind(Some(target))
                            .bind(targets.prefix())
                            .fetch_optional(&mut *tx)
                            .await?
                            .map(|r| decode(&r))
                            .transpose()?,
                        None => None,
                    };
                    tx.commit().await?;
                    row
                }
            })
        });
        let Some(mut row) = claimed.await? else {
            return Ok(None);
        };
        (row.posts, row.posted_to) = self.posts_of(&row.id).await?;
        Ok(Some(row))
    }

    /// Notes that chunk `chunk` is about to be sent (its outcome unknown until recorded), and
    /// extends the lease. `false` when `owner` no longer holds the lease.
    pub async fn mark_uncertain(
        &self,
        id: &str,
        owner: &str,
        since: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE deliveries SET uncertain_since = $3, lease_until = $4, updated_at = $3 \
                   WHERE id = $1 AND lease_owner = $2 AND state = 'sending'";
        let done = with_pool!(self, p => {
            sqlx::query(sql).bind(id).bind(owner).bind(since).bind(lease_until)
                .execute(p).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Records chunk `chunk` as posted (with each recipient's post id, or one row with
    /// recipient 0) and clears the uncertainty, in one transaction.
    pub async fn record_post(
        &self,
        id: &str,
        owner: &str,
        chunk: i64,
        posts: &[(i64, Option<i64>)],
        now: i64,
    ) -> Result<(), StoreError> {
        self.record_posts(id, owner, chunk, posts, now, false).await
    }

    /// Records posts of chunk `chunk` (recipient and post id; recipient 0 in a channel) found
    /// made by a send whose outcome was unknown. With `still_uncertain` (the chunk is done and
    /// more follow) the uncertainty is kept: that send may have gone on to post the next.
    pub async fn record_found_posts(
        &self,
        id: &str,
        owner: &str,
        chunk: i64,
        found: &[(i64, i64)],
        still_uncertain: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let posts: Vec<(i64, Option<i64>)> = found
            .iter()
            .map(|&(recipient, post_id)| (recipient, Some(post_id)))
            .collect();
        self.record_posts(id, owner, chunk, &posts, now, still_uncertain)
            .await
    }

    /// The posts are facts, recorded whoever holds the delivery now (a worker whose lease ran
    /// out mid-send still tells the new holder what it posted); the uncertainty is the
    /// holder's alone, and a former holder must not clear the mark of a send in flight.
    async fn record_posts(
        &self,
        id: &str,
        owner: &str,
        chunk: i64,
        posts: &[(i64, Option<i64>)],
        now: i64,
        still_uncertain: bool,
    ) -> Result<(), StoreError> {
        with_pool!(self, p => {
            let mut tx = super::begin(p).await?;
            for (recipient, post_id) in posts {
                sqlx::query(
                    "INSERT INTO delivery_posts (delivery_id, chunk, recipient, post_id, posted_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (delivery_id, chunk, recipient) DO NOTHING",
                )
                .bind(id).bind(chunk).bind(recipient).bind(post_id).bind(now)
                .execute(&mut *tx).await?;
            }
            sqlx::query(
                "UPDATE deliveries SET uncertain_since = CASE WHEN $3 THEN uncertain_since END, \
                 updated_at = $2 WHERE id = $1 AND lease_owner = $4",
            )
            .bind(id).bind(now).bind(still_uncertain).bind(owner)
            .execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Whether `post_id` is recorded as another post than chunk `chunk` of delivery `id`:
    /// another delivery's, or another chunk's. The same chunk's record is the delivery's own
    /// post (a former holder's send that landed), not someone else's.
    pub async fn post_is_recorded(
        &self,
        post_id: i64,
        id: &str,
        chunk: i64,
    ) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) FROM delivery_posts WHERE post_id = $1 \
                   AND NOT (delivery_id = $2 AND chunk = $3)";
        let n: i64 = with_pool!(self, p => {
            sqlx::query_scalar(sql).bind(post_id).bind(id).bind(chunk).fetch_one(p).await
        })?;
        Ok(n > 0)
    }

    /// Clears an uncertainty that turned out to be a send that never happened, if `owner`
    /// still holds the delivery.
    pub async fn clear_uncertain(
        &self,
        id: &str,
        owner: &str,
        at_least_once: bool,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE deliveries SET uncertain_since = NULL, \
                   at_least_once = CASE WHEN $2 = 1 THEN 1 ELSE at_least_once END \
                   WHERE id = $1 AND lease_owner = $3";
        with_pool!(self, p => sqlx::query(sql).bind(id).bind(i64::from(at_least_once)).bind(owner).execute(p).await.map(drop))?;
        Ok(())
    }

    /// Replaces the chunk list (a chunk DSM found too long, split in two); false when `owner`
    /// no longer holds the delivery.
    pub async fn replace_chunks(
        &self,
        id: &str,
        owner: &str,
        chunks: &[String],
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE deliveries SET chunks = $2 WHERE id = $1 AND lease_owner = $3";
        let done = with_pool!(self, p => sqlx::query(sql)
            .bind(id).bind(chunks_json(chunks)).bind(owner).execute(p).await?.rows_affected());
        Ok(done == 1)
    }

    /// Ends a claim: `delivered`, `failed` (for good) or back to `queued` at `next_attempt_at`.
    pub async fn finish(
        &self,
        id: &str,
        owner: &str,
        state: DeliveryState,
        next_attempt_at: i64,
        last_error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE deliveries SET state = $3, next_attempt_at = $4, \
                       last_error = COALESCE($5, last_error), lease_owner = NULL, lease_until = NULL, \
                       updated_at = $6, finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE $6 END \
                   WHERE id = $1 AND lease_owner = $2 AND state = 'sending'";
        let done = with_pool!(self, p => {
            sqlx::query(sql).bind(id).bind(owner).bind(state.as_str()).bind(next_attempt_at)
                .bind(last_error).bind(now).execute(p).await?.rows_affected()
        });
        if done == 1 && state != DeliveryState::Queued {
            self.next_head_comes_due(id, now).await;
        }
        if done == 1 && state == DeliveryState::Delivered {
            self.target_calmed(id).await;
        }
        Ok(done == 1)
    }

    /// After the delivery `id` went through, its target's 411 penalty starts again from
    /// nothing: kept, the next 411 months later doubled the last burst's, up to 30 s. Only
    /// the pace; a failure leaves the old penalty.
    async fn target_calmed(&self, id: &str) {
        let sql = "UPDATE targets SET penalty_ms = 0 WHERE penalty_ms <> 0 \
                   AND target = (SELECT target FROM deliveries WHERE id = $1)";
        let calmed: Result<(), StoreError> = (async {
            with_pool!(self, p => sqlx::query(sql).bind(id).execute(p).await.map(drop)?);
            Ok(())
        })
        .await;
        if let Err(error) = calmed {
            tracing::debug!(%error, "the target's 411 penalty was not cleared");
        }
    }

    /// After the delivery `id` finished, its target's next delivery (its head now) comes due
    /// at `now`, behind the heads already due (claims go by when a head came due): kept at its
    /// enqueue time, a backlog to as many targets as there are lanes took every lane until it
    /// was drained, and other targets' messages waited for all of it. Only an order; a
    /// failure leaves the old one.
    async fn next_head_comes_due(&self, id: &str, now: i64) {
        let sql = "UPDATE deliveries SET next_attempt_at = $2 \
                   WHERE state = 'queued' AND next_attempt_at < $2 AND seq = ( \
                       SELECT MIN(h.seq) FROM deliveries h \
                       WHERE h.state IN ('queued', 'sending') AND h.target = ( \
                           SELECT target FROM deliveries WHERE id = $1))";
        let moved: Result<(), StoreError> = (async {
            with_pool!(self, p => {
                sqlx::query(sql).bind(id).bind(now).execute(p).await.map(drop)?
            });
            Ok(())
        })
        .await;
        if let Err(error) = moved {
            tracing::debug!(%error, "the next delivery's turn was not moved");
        }
    }

    /// Spaces the next send to `target` (rate limits): not before `next_send_at`.
    pub async fn pace_target(
        &self,
        target: &str,
        next_send_at: i64,
        penalty_ms: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE targets SET next_send_at = $2, penalty_ms = $3 WHERE target = $1";
        with_pool!(self, p => sqlx::query(sql).bind(target).bind(next_send_at).bind(penalty_ms)
            .execute(p).await.map(drop))?;
        Ok(())
    }

    /// The newest delivery to `target` the outbox has not finished (queued or being sent), of
    /// those up to `up_to` (its `seq`) when given.
    pub async fn last_unfinished(
        &self,
        target: &str,
        up_to: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let sql = "SELECT MAX(seq) FROM deliveries \
                   WHERE state IN ('queued', 'sending') AND target = $1 AND seq <= $2";
        Ok(with_pool!(self, p => sqlx::query_scalar(sql).bind(target)
            .bind(up_to.unwrap_or(i64::MAX)).fetch_one(p).await)?)
    }

    /// Every target with a message the outbox has not finished.
    pub async fn unfinished_targets(&self) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT DISTINCT target FROM deliveries WHERE state IN ('queued', 'sending')";
        Ok(with_pool!(self, p => sqlx::query_scalar(sql).fetch_all(p).await)?)
    }

    /// The extra spacing currently applied to `target` after rate limiting.
    pub async fn target_penalty(&self, target: &str) -> Result<i64, StoreError> {
        let sql = "SELECT penalty_ms FROM targets WHERE target = $1";
        let penalty: Option<i64> =
            with_pool!(self, p => sqlx::query_scalar(sql).bind(target).fetch_optional(p).await)?;
        Ok(penalty.unwrap_or(0))
    }

    /// A failed delivery back to the queue, due now, behind whatever its target has queued:
    /// handed over again, it takes a new place in the order (a fresh `seq`). Kept at its old
    /// place it would be the target's head at once, and go out between the parts of a long
    /// message already partly posted.
    pub async fn retry_delivery(
        &self,
        id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Transition, StoreError> {
        // Under the store's deadline, as every request's store call.
        let done = super::bounded(self.deadline, self.requeue_failed(id, now, expires_at)).await?;
        self.transition(id, done).await
    }

    /// [`Self::retry_delivery`]'s change: 1 when the delivery was failed and is queued again.
    async fn requeue_failed(&self, id: &str, now: i64, expires_at: i64) -> Result<u64, StoreError> {
        const REQUEUE: &str = "state = 'queued', next_attempt_at = $2, expires_at = $3, \
            finished_at = NULL, updated_at = $2";
        let done = match &self.pool {
            Pool::Sqlite(p) => {
                // AUTOINCREMENT never hands out a seq again, but an UPDATE does not advance
                // its counter: the new place is taken past both, and the counter moved to it.
                // Writing from the start: a read that then writes is refused at once ("database
                // is locked") when another write came between, where this waits its turn.
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let next: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(v), 0) + 1 FROM (SELECT MAX(seq) AS v FROM deliveries \
                     UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'deliveries')",
                )
                .fetch_one(&mut *tx)
                .await?;
                let target: Option<String> = sqlx::query_scalar(&format!(
                    "UPDATE deliveries SET seq = $4, {REQUEUE} WHERE id = $1 AND state = 'failed' \
                     RETURNING target"
                ))
                .bind(id)
                .bind(now)
                .bind(expires_at)
                .bind(next)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(target) = &target {
                    sqlx::query("UPDATE sqlite_sequence SET seq = $1 WHERE name = 'deliveries'")
                        .bind(next)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(TARGET_KEPT)
                        .bind(target)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                u64::from(target.is_some())
            }
            Pool::Postgres(p) => {
                let mut tx = super::begin(p).await?;
                let target: Option<String> = sqlx::query_scalar(&format!(
                    "UPDATE deliveries SET seq = DEFAULT, {REQUEUE} \
                     WHERE id = $1 AND state = 'failed' RETURNING target"
                ))
                .bind(id)
                .bind(now)
                .bind(expires_at)
                .fetch_optional(&mut *tx)
                .await?;
                // Its target may have been pruned since it failed: made again, as an enqueue
                // makes it (and waits for a prune that holds it).
                if let Some(target) = &target {
                    sqlx::query(TARGET_KEPT)
                        .bind(target)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                u64::from(target.is_some())
            }
        };
        Ok(done)
    }

    /// A queued delivery cancelled.
    pub async fn cancel_delivery(&self, id: &str, now: i64) -> Result<Transition, StoreError> {
        let sql = "UPDATE deliveries SET state = 'cancelled', finished_at = $2, updated_at = $2 \
                   WHERE id = $1 AND state = 'queued'";
        let done = with_pool!(self, p => sqlx::query(sql).bind(id).bind(now).execute(p).await?.rows_affected());
        if done == 1 {
            self.next_head_comes_due(id, now).await;
        }
        self.transition(id, done).await
    }

    async fn transition(&self, id: &str, changed: u64) -> Result<Transition, StoreError> {
        if changed == 1 {
            return Ok(Transition::Done);
        }
        let sql = "SELECT state FROM deliveries WHERE id = $1";
        let state: Option<String> =
            with_pool!(self, p => sqlx::query_scalar(sql).bind(id).fetch_optional(p).await)?;
        match state {
            None => Ok(Transition::NotFound),
            Some(raw) => Ok(Transition::WrongState(decoded_state(&raw)?)),
        }
    }

    /// Hands back every claim of `owner` (graceful shutdown): `sending` becomes `queued`.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let sql = "UPDATE deliveries SET state = 'queued', lease_owner = NULL, lease_until = NULL \
                   WHERE lease_owner = $1 AND state = 'sending'";
        Ok(with_pool!(self, p => sqlx::query(sql).bind(owner).execute(p).await?.rows_affected()))
    }

    /// Hands back every claim (single-node SQLite at start-up: no other process holds one).
    /// One whose send was unanswered when the process died is not tried before `settled_at`:
    /// DSM may still have been carrying the call out then, and it is looked for only once it
    /// has had the time to land. Not so on targets starting with `resent_at_once` (the
    /// subscriptions', whose receivers drop a repeat by its id): their queues would wait on it.
    pub async fn release_all_leases(
        &self,
        settled_at: i64,
        resent_at_once: &str,
    ) -> Result<u64, StoreError> {
        let sql = "UPDATE deliveries SET state = 'queued', lease_owner = NULL, lease_until = NULL, \
                   next_attempt_at = CASE WHEN uncertain_since IS NOT NULL \
                       AND substr(target, 1, length($2)) <> $2 \
                       AND next_attempt_at < $1 THEN $1 ELSE next_attempt_at END \
                   WHERE state = 'sending'";
        Ok(with_pool!(self, p => sqlx::query(sql)
            .bind(settled_at)
            .bind(resent_at_once)
            .execute(p)
            .await?
            .rows_affected()))
    }

    /// Count and oldest creation time of the unfinished states (`queued`, `sending`): cheap
    /// (an index range), for frequent gauges.
    pub async fn queue_stats(&self) -> Result<Vec<StateStats>, StoreError> {
        self.state_stats("'queued', 'sending'").await
    }

    /// Count and oldest creation time of the finished states (`delivered`, `failed`,
    /// `cancelled`): walks the retained history's index, so call it rarely.
    pub async fn finished_stats(&self) -> Result<Vec<StateStats>, StoreError> {
        self.state_stats("'delivered', 'failed', 'cancelled'").await
    }

    async fn state_stats(&self, states: &str) -> Result<Vec<StateStats>, StoreError> {
        let sql = format!(
            "SELECT state, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries \
             WHERE state IN ({states}) GROUP BY state"
        );
        Ok(with_pool!(self, p => {
            sqlx::query(&sql).fetch_all(p).await?.iter().map(|r| {
                Ok(StateStats {
                    state: decoded_state(&r.try_get::<String, _>("state")?)?,
                    count: r.try_get("n")?,
                    oldest_created_at: r.try_get("oldest")?,
                })
            }).collect::<Result<Vec<_>, sqlx::Error>>()?
        }))
    }

    /// Moves stored times with a step of this host's wall clock by `step_ms` (found against the
    /// monotonic clock; `now` on the clock after it). A step back left every pacing end and
    /// retry time written before it that much further away (an hour back: an hour with nothing
    /// sent); they are moved back with it. A step forward cut short the leases this process's
    /// lanes (`owner_prefix`) took before it for sends still in flight, which a sibling lane or
    /// another replica would take over and post again; those are moved forward with it (a
    /// lease taken after the step, longer than `now - step + lease_ms`, is left alone).
    pub async fn clock_stepped(
        &self,
        step_ms: i64,
        now: i64,
        owner_prefix: &str,
        lease_ms: i64,
    ) -> Result<(), StoreError> {
        if step_ms < 0 {
            let paced =
                "UPDATE targets SET next_send_at = next_send_at + $1 WHERE next_send_at > $2";
            // Rows written on the clock before the step (not another replica's): their
            // `updated_at` is ahead of now too. The uncertain send's time moves with them, or
            // its look for the post would wait the step out.
            let due = "UPDATE deliveries SET \
                       next_attempt_at = CASE WHEN next_attempt_at > $2 \
                           THEN next_attempt_at + $1 ELSE next_attempt_at END, \
                       uncertain_since = CASE WHEN uncertain_since > $2 \
                           THEN uncertain_since + $1 ELSE uncertain_since END \
                       WHERE state IN ('queued', 'sending') AND updated_at > $2";
            // Together or not at all: the step is not tried again once noted.
            with_pool!(self, p => {
                let mut tx = super::begin(p).await?;
                sqlx::query(paced).bind(step_ms).bind(now).execute(&mut *tx).await?;
                sqlx::query(due).bind(step_ms).bind(now).execute(&mut *tx).await?;
                tx.commit().await.map(drop)
            })?;
        } else if step_ms > 0 {
            let leases = "UPDATE deliveries SET lease_until = lease_until + $1 \
                          WHERE state = 'sending' AND lease_owner LIKE $2 AND lease_until <= $3";
            let owned = format!("{owner_prefix}%");
            let taken_before = now - step_ms + lease_ms;
            with_pool!(self, p => sqlx::query(leases).bind(step_ms).bind(&owned)
                .bind(taken_before).execute(p).await.map(drop))?;
        }
        Ok(())
    }

    /// The earliest time something may become due (the worker sleeps until then at most): of
    /// each target's head only, and not before its target's pacing allows. A delivery queued
    /// behind a head that waits out a back-off is not due however old it is: counted, it kept
    /// the worker claiming in vain five times a second for as long as the head waited.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.next_due_among(Targets::All).await
    }

    /// [`Store::next_due`] among `targets` only.
    pub async fn next_due_among(&self, targets: Targets<'_>) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT MIN(CASE WHEN d.state = 'sending' THEN d.lease_until \
                 WHEN t.next_send_at > d.next_attempt_at THEN t.next_send_at \
                 ELSE d.next_attempt_at END) \
             {} WHERE {}",
            heads(&self.pool),
            targets.condition("d.target", "$1")
        );
        Ok(
            with_pool!(self, p => sqlx::query_scalar(&sql).bind(targets.prefix()).fetch_one(p).await)?,
        )
    }
}
