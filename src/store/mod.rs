//! The store: the only code that knows SQL. SQLite (one file, WAL) by default; PostgreSQL when
//! several replicas share one queue.
//!
//! The two back-ends sit behind one enum over two native sqlx pools rather than sqlx's `Any`
//! driver: each keeps its own connect options (WAL, `busy_timeout`, a 0600 file; TLS and a
//! password from a file for PostgreSQL) and native types, and the few statements that must
//! differ (PostgreSQL's `FOR UPDATE SKIP LOCKED`) say so in one `match`. Every other query is
//! written once and run on either pool by [`with_pool!`], so there are no two copies of the logic.
//!
//! Writes that return rows (`RETURNING`) outside an explicit transaction are read with
//! `fetch_all`, never `fetch_one`/`fetch_optional`: on SQLite those stop after the first row and
//! reset the statement, which is when its own transaction commits, and sqlx drops the error of
//! that reset (launchbadge/sqlx#3430). On a full disk the write was reported done and was not.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::clock::monotonic_ms;
use crate::config::StoreSettings;

pub mod deliveries;
pub mod events;
pub mod idempotency;
pub mod subscriptions;
pub mod task;

/// Which database the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to whichever native pool the store has: the query is written
/// once and type-checked against both drivers. The body runs under the store's deadline
/// (`store.timeout_ms`): past it, the enclosing function returns [`StoreError::Unavailable`]
/// (its `?` on a body's error works as before).
macro_rules! with_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($p) => {
                $crate::store::bounded($store.deadline, async {
                    Ok::<_, $crate::store::StoreError>($body)
                })
                .await?
            }
            $crate::store::Pool::Postgres($p) => {
                $crate::store::bounded($store.deadline, async {
                    Ok::<_, $crate::store::StoreError>($body)
                })
                .await?
            }
        }
    };
}
pub(crate) use with_pool;

/// `operation` under `deadline` (`store.timeout_ms`). A database that stops answering without
/// closing its connections (a frozen host or process: TCP keepalives are still answered) would
/// otherwise hold each request that needs it, and the outbox, for good. When the deadline
/// passes the operation is dropped: a transaction it held is rolled back, its connection
/// closed by the pool.
pub(crate) async fn bounded<T>(
    deadline: Duration,
    operation: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the database did not answer within {} ms",
                deadline.as_millis()
            )))
        })
}

impl Store {
    /// After a secret was replaced or removed: on SQLite, the write-ahead log, which still
    /// holds the pages as they were, is copied into the file (where `secure_delete` zeroed the
    /// old value) and emptied. It never waits on a reader (a backup tool's open transaction):
    /// then it is tried again every minute, in the background, for half an hour. The change
    /// itself is made either way.
    pub(crate) async fn scrub_replaced_values(&self) {
        let Pool::Sqlite(pool) = &self.pool else {
            return;
        };
        // In a task of its own: cut off between its two PRAGMAs (the caller gone), it would
        // give the pool back a connection that never waits for a lock.
        let scrubbed = {
            let pool = pool.clone();
            tokio::spawn(async move { scrub_log(&pool).await }).await
        };
        if !matches!(scrubbed, Ok(Ok(false))) {
            return;
        }
        tracing::info!(
            "a reader holds the store's write-ahead log: the replaced secret leaves it once the reader is done"
        );
        let pool = pool.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if pool.is_closed() || !matches!(scrub_log(&pool).await, Ok(false)) {
                    return;
                }
            }
            tracing::warn!(
                "a reader held the store's write-ahead log for half an hour: a replaced secret stays in it until SQLite's next full checkpoint"
            );
        });
    }
}

/// `pool.begin()`, carried to its end even when the caller is dropped (the store's deadline, a
/// caller gone, the stop): sqlx 0.8's PostgreSQL driver counts a transaction only once the
/// server has answered its BEGIN, so a BEGIN cut off in flight left the pooled connection inside
/// a transaction nobody would commit, where the next borrower's writes were reported done and
/// never committed (launchbadge/sqlx#4393). In a task of its own the BEGIN completes, and a
/// transaction no one waits for any more is rolled back as any dropped one.
pub(crate) async fn begin<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
}

/// How long a SQLite statement waits for a lock another connection holds.
const SQLITE_BUSY: Duration = Duration::from_secs(5);

/// Copies the write-ahead log into the file and empties it, without waiting: `Ok(false)` when a
/// reader still uses it. PASSIVE first, which never blocks; TRUNCATE (which would hold new
/// writers while it waits for readers) only then, on a connection that does not wait.
async fn scrub_log(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let passive: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    if passive.0 != 0 || passive.1 != passive.2 {
        return Ok(false);
    }
    let truncated = async {
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut *conn)
            .await?;
        let done: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "PRAGMA busy_timeout = {}",
            SQLITE_BUSY.as_millis()
        ))
        .execute(&mut *conn)
        .await?;
        Ok::<_, sqlx::Error>(done.0 == 0)
    }
    .await;
    if truncated.is_err() {
        // Its busy timeout may be left at 0: not given back to the pool.
        let _ = conn.detach();
    }
    truncated
}

/// The store handle; cheap to clone (the pools are shared).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// How long one operation may take (`store.timeout_ms`).
    deadline: Duration,
}

/// Held by the gateway that serves from a SQLite file, for as long as it serves: a second
/// gateway on the same file would hand the first one's claims back at its start and post them
/// again. Released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct SoleUse {
    _lock: Option<std::fs::File>,
}

/// A failure while running: the database is unreachable or refused a statement.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy: try again later (answered as 503).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A row did not have the expected shape (a bug or a hand-edited database).
    #[error("the store holds an unreadable row: {0}")]
    Corrupt(String),
    /// The database refused a value it cannot hold (PostgreSQL's data exceptions, SQLSTATE
    /// class 22, e.g. a NUL character in text): retrying cannot help (answered as 422).
    #[error("the store cannot hold a value: {0}")]
    Refused(String),
}

/// When PostgreSQL last refused a write as read-only (SQLSTATE 25006), in ms on the monotonic
/// clock from its first reading, plus one; 0: never. A session keeps the read-only default of
/// its start (`default_transaction_read_only` set on the database, a standby behind the same
/// address), so once the database takes writes again, only new sessions can write: the pool
/// closes every connection opened before the last refusal instead of handing it out again.
static READ_ONLY_SEEN_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether a pooled PostgreSQL connection `age` old was opened before the last read-only
/// refusal ([`READ_ONLY_SEEN_MS`]).
fn opened_read_only(age: Duration) -> bool {
    let seen = READ_ONLY_SEEN_MS.load(std::sync::atomic::Ordering::Relaxed);
    seen != 0 && monotonic_ms().saturating_sub(age.as_millis() as u64) <= seen
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| pg.code() == "25006")
        {
            READ_ONLY_SEEN_MS.store(monotonic_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        match error {
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| pg.code().starts_with("22")) =>
            {
                Self::Refused(db.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Corrupt(error.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Migrations per back-end. Versions 0001–0999 belong to the delivery store, 1001+ to the
/// idempotency records, 2001+ to the inbound events, 3001+ to
/// the subscriptions. A database holding a version missing here is newer than this binary.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "deliveries",
        include_str!("migrations/sqlite/0001_deliveries.sql"),
    ),
    (
        2,
        "deliveries_event_key",
        include_str!("migrations/sqlite/0002_deliveries_event_key.sql"),
    ),
    (
        3,
        "deliveries_age_indexes",
        include_str!("migrations/sqlite/0003_deliveries_age_indexes.sql"),
    ),
    (
        1001,
        "idempotency_keys",
        include_str!("migrations/sqlite/1001_idempotency_keys.sql"),
    ),
    (
        2001,
        "events",
        include_str!("migrations/sqlite/2001_events.sql"),
    ),
    (
        2002,
        "events_button",
        include_str!("migrations/sqlite/2002_events_button.sql"),
    ),
    (
        2003,
        "events_channel_type",
        include_str!("migrations/sqlite/2003_events_channel_type.sql"),
    ),
    (
        2004,
        "events_purged",
        include_str!("migrations/sqlite/2004_events_purged.sql"),
    ),
    (
        2005,
        "events_filters",
        include_str!("migrations/sqlite/2005_events_filters.sql"),
    ),
    (
        3001,
        "subscriptions",
        include_str!("migrations/sqlite/3001_subscriptions.sql"),
    ),
    (
        3002,
        "subscriptions_disabled_at",
        include_str!("migrations/sqlite/3002_subscriptions_disabled_at.sql"),
    ),
    (
        3003,
        "subscriptions_previous_secret",
        include_str!("migrations/sqlite/3003_subscriptions_previous_secret.sql"),
    ),
    (
        3004,
        "subscriptions_events_missed",
        include_str!("migrations/sqlite/3004_subscriptions_events_missed.sql"),
    ),
    (
        3005,
        "subscription_deliveries_by_delivery",
        include_str!("migrations/sqlite/3005_subscription_deliveries_by_delivery.sql"),
    ),
    (
        9001,
        "schema_compat",
        include_str!("migrations/sqlite/9001_schema_compat.sql"),
    ),
    (
        9002,
        "store_probe",
        include_str!("migrations/sqlite/9002_store_probe.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "deliveries",
        include_str!("migrations/postgres/0001_deliveries.sql"),
    ),
    (
        2,
        "deliveries_event_key",
        include_str!("migrations/postgres/0002_deliveries_event_key.sql"),
    ),
    (
        3,
        "deliveries_age_indexes",
        include_str!("migrations/postgres/0003_deliveries_age_indexes.sql"),
    ),
    (
        1001,
        "idempotency_keys",
        include_str!("migrations/postgres/1001_idempotency_keys.sql"),
    ),
    (
        2001,
        "events",
        include_str!("migrations/postgres/2001_events.sql"),
    ),
    (
        2002,
        "events_button",
        include_str!("migrations/postgres/2002_events_button.sql"),
    ),
    (
        2003,
        "events_channel_type",
        include_str!("migrations/postgres/2003_events_channel_type.sql"),
    ),
    (
        2004,
        "events_purged",
        include_str!("migrations/postgres/2004_events_purged.sql"),
    ),
    (
        2005,
        "events_filters",
        include_str!("migrations/postgres/2005_events_filters.sql"),
    ),
    (
        3001,
        "subscriptions",
        include_str!("migrations/postgres/3001_subscriptions.sql"),
    ),
    (
        3002,
        "subscriptions_disabled_at",
        include_str!("migrations/postgres/3002_subscriptions_disabled_at.sql"),
    ),
    (
        3003,
        "subscriptions_previous_secret",
        include_str!("migrations/postgres/3003_subscriptions_previous_secret.sql"),
    ),
    (
        3004,
        "subscriptions_events_missed",
        include_str!("migrations/postgres/3004_subscriptions_events_missed.sql"),
    ),
    (
        3005,
        "subscription_deliveries_by_delivery",
        include_str!("migrations/postgres/3005_subscription_deliveries_by_delivery.sql"),
    ),
    (
        9001,
        "schema_compat",
        include_str!("migrations/postgres/9001_schema_compat.sql"),
    ),
    (
        9002,
        "store_probe",
        include_str!("migrations/postgres/9002_store_probe.sql"),
    ),
];

/// Pool sizes when `store.max_connections` is unset.
const SQLITE_POOL: u32 = 4;
const POSTGRES_POOL: u32 = 16;

/// Server-side limits on every PostgreSQL session, unless the URL's `options` sets the same
/// one: a replica frozen inside a transaction (advisory or row locks held) is cut off after a
/// minute, and a vanished host is noticed by keepalives in about a minute rather than hours.
/// No `statement_timeout`: a migration may run long. Set with `SET` once connected rather than
/// as startup `options`, which PgBouncer refuses by default.
const SESSION_GUARDS: &[(&str, &str)] = &[
    ("idle_in_transaction_session_timeout", "60s"),
    ("tcp_keepalives_idle", "30"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
];

fn session_guards(options: &PgConnectOptions) -> String {
    let given = options.get_options().unwrap_or_default();
    SESSION_GUARDS
        .iter()
        .filter(|(key, _)| !given.contains(key))
        .map(|(key, value)| format!("SET {key} = '{value}';"))
        .collect()
}

fn migrator(list: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            list.iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect(),
        ),
        // A database migrated by a newer gateway still opens (a rolling upgrade can be undone);
        // `schema_compat` says whether this gateway may run on it.
        ignore_missing: true,
        locking: true,
        no_tx: false,
    }
}

/// The host of a PostgreSQL URL that is neither local nor checked by `sslmode=verify-ca` or
/// `verify-full`: its messages, events and subscription secrets travel a network unverified.
fn unverified_remote_host(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let verified = parsed
        .query_pairs()
        .any(|(key, value)| key == "sslmode" && matches!(&*value, "verify-ca" | "verify-full"));
    let host = parsed.host_str().filter(|h| !h.is_empty())?.to_owned();
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!verified && !local).then_some(host)
}

/// The store URL without its password, for messages: the user-info password and any query
/// parameter naming one (sqlx reads `?password=`, libpq also `sslpassword`). A URL that does not
/// parse is not shown at all.
pub fn redacted_url(url: &str) -> String {
    const MASK: &str = "********";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(not shown: it does not parse as a URL)".to_owned();
    };
    let secret = |key: &str| key.to_ascii_lowercase().contains("password");
    let in_query = parsed.query_pairs().any(|(key, _)| secret(&key));
    if parsed.password().is_none() && !in_query {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some(MASK));
    }
    if in_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret(&key) { MASK.into() } else { value };
                (key.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

impl Store {
    /// Opens the store and brings its schema up to date. Every error is one line fit for the
    /// start-up failure message (no password in it).
    pub async fn connect(settings: &StoreSettings) -> Result<Self, String> {
        let store = Self::open_pool(settings).await?;
        store.migrated(settings).await
    }

    /// [`Self::connect`] for the gateway that will serve from the store: a SQLite file is
    /// taken for this process alone ([`Self::take_sole_use`]) before its schema is touched, so
    /// a second gateway started on a live file is refused before it could migrate it under the
    /// one serving.
    pub async fn connect_to_serve(settings: &StoreSettings) -> Result<(Self, SoleUse), String> {
        let store = Self::open_pool(settings).await?;
        let sole_use = store.take_sole_use()?;
        let store = store.migrated(settings).await?;
        // Migrations write nothing to a database already migrated: one that cannot take a
        // write would otherwise serve, refusing every message with 503 while ready.
        store.take_a_write().await.map_err(|e| {
            format!(
                "store: cannot write to the database at {}: {e}",
                redacted_url(settings.url.expose_secret())
            )
        })?;
        Ok((store, sole_use))
    }

    async fn migrated(self, settings: &StoreSettings) -> Result<Self, String> {
        let shown = redacted_url(settings.url.expose_secret());
        self.migrate()
            .await
            .map_err(|e| format!("store: cannot migrate the database at {shown}: {e}"))?;
        let known = self.newest_known_version();
        let (applied, requires) = self
            .schema_state()
            .await
            .map_err(|e| format!("store: cannot read the schema of {shown}: {e}"))?;
        if requires > known {
            return Err(format!(
                "store: the database at {shown} was changed by a newer gateway in a way this one cannot use (it requires schema version {requires}; this gateway knows up to {known}): run a newer gateway"
            ));
        }
        if applied > known {
            tracing::warn!(
                applied,
                known,
                "the database's schema is newer than this gateway's (a newer gateway ran on it); \
                 its additions are left alone"
            );
        }
        Ok(self)
    }

    /// The newest migration this binary carries.
    fn newest_known_version(&self) -> i64 {
        let list = match &self.pool {
            Pool::Sqlite(_) => SQLITE_MIGRATIONS,
            Pool::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        list.iter()
            .map(|(version, _, _)| *version)
            .max()
            .unwrap_or(0)
    }

    /// The newest migration applied, and the oldest schema a gateway must know to run here.
    async fn schema_state(&self) -> Result<(i64, i64), StoreError> {
        let requires: i64 = with_pool!(self, p => {
            sqlx::query_scalar("SELECT requires FROM schema_compat WHERE id = 1")
                .fetch_one(p)
                .await
        })?;
        Ok((self.schema_version().await?, requires))
    }

    async fn open_pool(settings: &StoreSettings) -> Result<Self, String> {
        // Its clock starts before any connection does (see `opened_read_only`).
        monotonic_ms();
        let url = settings.url.expose_secret();
        let shown = redacted_url(url);
        let pool = if url.starts_with("sqlite:") {
            let size = settings.max_connections.unwrap_or(SQLITE_POOL);
            Pool::Sqlite(open_sqlite(url, size).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options = PgConnectOptions::from_str(url)
                .map_err(|e| format!("store.url {shown} is not a PostgreSQL URL: {e}"))?;
            if let Some(host) = unverified_remote_host(url) {
                tracing::warn!(
                    host,
                    "store.url reaches PostgreSQL on another host without checking its \
                     certificate (sqlx's default sslmode=prefer can be read or downgraded on the \
                     way): add sslmode=verify-full&sslrootcert=<CA file>"
                );
            }
            if let Some(password) = &settings.password {
                options = options.password(password.expose_secret());
            }
            // Once per store (a process opens one), so the text may live as long as the pool.
            let guards: &'static str = Box::leak(session_guards(&options).into_boxed_str());
            let pool = PgPoolOptions::new()
                .after_connect(move |connection, _| {
                    Box::pin(async move {
                        if !guards.is_empty() {
                            sqlx::Executor::execute(connection, guards).await?;
                        }
                        Ok(())
                    })
                })
                .max_connections(settings.max_connections.unwrap_or(POSTGRES_POOL))
                .acquire_timeout(Duration::from_secs(5))
                .before_acquire(|_, meta| Box::pin(async move { Ok(!opened_read_only(meta.age)) }))
                .after_release(|_, meta| Box::pin(async move { Ok(!opened_read_only(meta.age)) }))
                .connect_with(options)
                .await
                .map_err(|e| format!("store: cannot connect to {shown}: {e}"))?;
            Pool::Postgres(pool)
        } else {
            return Err(format!(
                "store.url {shown} must start with sqlite:// or postgres://"
            ));
        };
        Ok(Self {
            pool,
            deadline: Duration::from_millis(settings.timeout_ms),
        })
    }

    async fn migrate(&self) -> Result<(), MigrateError> {
        match &self.pool {
            Pool::Sqlite(pool) => migrator(SQLITE_MIGRATIONS).run(pool).await,
            Pool::Postgres(pool) => migrator(POSTGRES_MIGRATIONS).run(pool).await,
        }
    }

    /// Takes the SQLite file for this process alone (an advisory lock on `<file>.lock`,
    /// independent of SQLite's own locks); PostgreSQL and in-memory stores are shared freely.
    pub fn take_sole_use(&self) -> Result<SoleUse, String> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Ok(SoleUse { _lock: None });
        };
        let path = pool.connect_options().get_filename().to_owned();
        let name = path.as_os_str();
        if name.is_empty() || name == ":memory:" || name.to_string_lossy().starts_with("file:") {
            return Ok(SoleUse { _lock: None });
        }
        // Named after the file's real path: a symbolic link to the file another gateway serves
        // from is that file (a hard link, another name of it, is not caught).
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|e| format!("store: cannot open {}: {e}", lock_path.display()))?
        };
        match file.try_lock() {
            Ok(()) => Ok(SoleUse { _lock: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "store: another gateway is serving from {} (it holds {}); a SQLite file serves \
                 one gateway, so give each its own file, or point several replicas at one \
                 PostgreSQL",
                path.display(),
                lock_path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("store: cannot lock {}: {e}", lock_path.display()))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// A committed write of `store_probe`'s counter, and of nothing else. Readiness and the
    /// start ask for it: a database that answers reads may refuse every write (a full disk, a
    /// read-only file, a PostgreSQL standby or read-only database).
    pub async fn take_a_write(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query(
            "UPDATE store_probe SET writes = writes + 1 WHERE id = 1"
        )
        .execute(p)
        .await
        .map(drop))?;
        Ok(())
    }

    /// A round trip to the database (tests).
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))?;
        Ok(())
    }

    /// How far this host's clock is ahead of the database server's, in ms; `None` on SQLite
    /// (one clock). Replicas compare leases and settle times written by each other's clocks.
    pub async fn clock_ahead_ms(&self) -> Result<Option<i64>, StoreError> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        let before = unix_ms_now();
        let server: i64 = bounded(self.deadline, async {
            Ok(
                sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                    .fetch_one(p)
                    .await?,
            )
        })
        .await?;
        let after = unix_ms_now();
        Ok(Some((before + after) / 2 - server))
    }

    /// A PostgreSQL session setting as a store connection sees it (tests); `None` on SQLite.
    #[doc(hidden)]
    pub async fn session_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(None),
            Pool::Postgres(p) => Ok(Some(
                sqlx::query_scalar("SELECT current_setting($1)")
                    .bind(name)
                    .fetch_one(p)
                    .await?,
            )),
        }
    }

    /// The highest schema version applied.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let version: Option<i64> = with_pool!(self, p => {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(p)
                .await
        })?;
        Ok(version.unwrap_or(0))
    }

    /// Closes the pools (waits for connections in use to come back).
    pub async fn close(&self) {
        // Not bounded: closing waits for the connections in use to come back.
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Opens (creating it with mode 0600 when missing) a SQLite file in WAL mode.
async fn open_sqlite(url: &str, size: u32) -> Result<SqlitePool, String> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("store.url {url} is not a SQLite URL: {e}"))?;
    let path = options.get_filename().to_owned();
    if !path.as_os_str().is_empty() && path.as_os_str() != ":memory:" {
        if path.exists() {
            keep_private(&path);
        } else {
            create_private_file(&path)
                .map_err(|e| format!("store: cannot create {}: {e}", path.display()))?;
            // Expected at the first start; at a later one, the file was moved or deleted and
            // what it held (queued messages, events, subscriptions) is not in the new one.
            tracing::warn!(path = %path.display(), "the store's file did not exist (as at a first start): created a new, empty one");
        }
    }
    let options = options
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before the 202 goes out, even across a power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY)
        .foreign_keys(true)
        // A replaced or deleted value (a subscription's secret) is overwritten with zeros where
        // it was, not left in the page's free space for a copy of the file to hold.
        .pragma("secure_delete", "ON");
    SqlitePoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .after_release(|conn, _| {
            Box::pin(async move {
                // A COMMIT that failed (a full disk) ends SQLite's transaction, but sqlx counts
                // it open and the ROLLBACK it then sends fails: the next transaction on this
                // connection would be a savepoint inside nothing, whose failed release leaves a
                // real transaction open, holding the write lock, in which later writes are
                // reported done and never committed. Such a connection is closed, not reused.
                // The ping first runs a rollback the dropped transaction queued.
                use sqlx::Connection as _;
                conn.ping().await?;
                Ok(!conn.is_in_transaction())
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| format!("store: cannot open {}: {e}", path.display()))
}

/// An existing database (a restored backup, say) readable by others is made private, as a new
/// one is created, before SQLite opens it and gives its `-wal` and `-shm` files its mode.
fn keep_private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            was = format!("{:o}", mode & 0o777),
            "the store's file was readable by others; made private to the gateway's user (0600)"
        ),
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            "the store's file is readable by others and could not be made private"
        ),
    }
}

/// The database holds queued messages: readable by the gateway's user only. SQLite gives its
/// `-wal` and `-shm` files the same mode. Its directory must exist: a typo in `store.url`
/// would otherwise make a new, empty outbox somewhere, the queued messages left behind
/// without a word.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "its directory {} does not exist (the gateway creates the database file, not \
                 its directory)",
                parent.display()
            ),
        ));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_remote_postgres_without_a_checked_certificate_is_named() {
        use super::unverified_remote_host as unverified;
        assert_eq!(
            unverified("postgres://gw@db.example/chat").as_deref(),
            Some("db.example")
        );
        assert_eq!(
            unverified("postgres://gw@10.0.0.5/chat?sslmode=require").as_deref(),
            Some("10.0.0.5")
        );
        for fine in [
            "postgres://gw@db.example/chat?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgres://gw@db.example/chat?sslmode=verify-ca",
            "postgres://gw@localhost/chat",
            "postgres://gw@127.0.0.1:5433/chat",
            "postgres://gw@[::1]/chat",
            "postgres:///chat?host=/run/postgresql",
        ] {
            assert_eq!(unverified(fine), None, "{fine}");
        }
    }
}
