//! The SQLite store when the disk refuses its writes: nothing reported stored that is not, and
//! the store takes writes again once the disk does.
//!
//! A test binary of its own: the file size limit that stands in for a full disk
//! (`RLIMIT_FSIZE`) holds for the whole process, and other tests write files.

use secrecy::SecretString;
use sqlx::Connection as _;
use syno_chat_gateway::config::StoreSettings;
use syno_chat_gateway::events::{EventKind, NewEvent};
use syno_chat_gateway::store::Store;
use syno_chat_gateway::store::deliveries::NewDelivery;

fn event(post_id: i64) -> NewEvent {
    NewEvent {
        kind: EventKind::parse("message").unwrap(),
        inbound: "chat".into(),
        channel_id: Some(1),
        channel_name: Some("general".into()),
        channel_type: Some(1),
        user_id: Some(3),
        username: Some("alice".into()),
        post_id: Some(post_id),
        thread_id: Some(0),
        timestamp: Some(1),
        text: "e".repeat(3000),
        trigger_word: None,
        command: None,
        button: None,
    }
}

fn delivery(n: usize) -> NewDelivery {
    NewDelivery {
        id: format!("d{n}"),
        caller: "ci".into(),
        target: "channel:1".into(),
        request: "{}".into(),
        chunks: vec!["d".repeat(3000)],
        now_ms: 1_000_000,
        expires_at_ms: 2_000_000_000_000,
    }
}

/// Files this process writes may grow to `bytes` (or without limit); past it a write fails
/// (EFBIG, as a full disk fails it with ENOSPC) instead of raising SIGXFSZ.
fn limit_file_size(bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on this process's own settings.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

/// What another process would find: the committed deliveries and events, and whether a writer
/// could begin (no connection of the store's left holding the write lock).
async fn seen_from_outside(path: &std::path::Path) -> (i64, i64, bool) {
    let url = format!("sqlite://{}", path.display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let deliveries = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
        .fetch_one(&mut other)
        .await
        .unwrap();
    let events = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut other)
        .await
        .unwrap();
    sqlx::query("PRAGMA busy_timeout = 200")
        .execute(&mut other)
        .await
        .unwrap();
    let writable = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .is_ok();
    if writable {
        sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    }
    other.close().await.unwrap();
    (deliveries, events, writable)
}

#[actix_web::test]
async fn a_full_disk_reports_nothing_stored_that_is_not_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = Store::connect(&StoreSettings {
        url: SecretString::from(format!("sqlite://{}", path.display())),
        ..Default::default()
    })
    .await
    .unwrap();
    let grown = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
    limit_file_size(Some(
        grown("gateway.db").max(grown("gateway.db-wal")) + 16 * 1024,
    ));

    // Every connection of the pool meets the full disk, more than once.
    let (mut stored_deliveries, mut stored_events, mut refused) = (0, 0, 0);
    for n in 0..24 {
        match store.enqueue(&delivery(n)).await {
            Ok(()) => stored_deliveries += 1,
            Err(_) => refused += 1,
        }
        match store.insert_event(&event(n as i64), 1).await {
            Ok(Some(_)) => stored_events += 1,
            Ok(None) => panic!("event {n} taken for a duplicate"),
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 0, "the limit never refused a write");
    // What readiness asks, one page, is refused too once no page fits (the failed writes left
    // the log longer than what it holds, so a small write may still fit in it).
    limit_file_size(Some(0));
    assert!(store.take_a_write().await.is_err());
    limit_file_size(None);
    let (deliveries, events, writable) = seen_from_outside(&path).await;
    assert_eq!(
        (deliveries, events),
        (stored_deliveries, stored_events),
        "what the store said it stored ({refused} refused)"
    );
    assert!(
        writable,
        "a connection of the store still holds the write lock"
    );

    // The disk takes writes again: so does the store, on every connection.
    for n in 100..112 {
        store.enqueue(&delivery(n)).await.unwrap();
        store
            .insert_event(&event(n as i64), 1)
            .await
            .unwrap()
            .unwrap();
    }
    let (deliveries, events, writable) = seen_from_outside(&path).await;
    assert_eq!(
        (deliveries, events),
        (stored_deliveries + 12, stored_events + 12)
    );
    assert!(writable);
    store.take_a_write().await.unwrap();
    assert!(
        store
            .claim("ci", 1_000_001, 1_100_000)
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
}
