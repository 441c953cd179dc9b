//! The store on both back-ends: SQLite in a temporary directory and a real PostgreSQL started by
//! the tests (see `support/postgres.rs`).

#[path = "support/backends.rs"]
mod backends;
#[path = "support/postgres.rs"]
mod postgres;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use secrecy::SecretString;
use syno_chat_gateway::config::StoreSettings;
use syno_chat_gateway::store::deliveries::{DeliveryState, Enqueued, EventKey};
use syno_chat_gateway::store::{Store, StoreError};

const BIN: &str = env!("CARGO_BIN_EXE_syno-chat-gateway");

fn settings(url: &str) -> StoreSettings {
    StoreSettings {
        url: SecretString::from(url.to_owned()),
        ..Default::default()
    }
}

backends::on_both!(
    migrations_run_once_and_reopen_cleanly,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        store.ping().await.unwrap();
        let version = store.schema_version().await.unwrap();
        assert!(version >= 1, "schema version {version}");
        store.close().await;
        let again = Store::connect(&settings(&backend.url)).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), version);
    }
);

backends::on_both!(
    a_newer_gateways_schema_opens_unless_it_says_this_one_cannot_run,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        store.close().await;
        // A newer gateway added a migration (additive, as every one so far): this one still
        // opens the database, so a rolling upgrade can be rolled back.
        backend.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9998, 'from the future', TRUE, X'00', 1)",
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9998, 'from the future', TRUE, '\\x00', 1)",
        )
        .await;
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 9998);
        store.ping().await.unwrap();
        store.close().await;
        // One it could not live with says so: refused, in one line.
        backend
            .execute(
                "UPDATE schema_compat SET requires = 9998",
                "UPDATE schema_compat SET requires = 9998",
            )
            .await;
        let error = Store::connect(&settings(&backend.url)).await.unwrap_err();
        assert!(error.contains("requires schema version 9998"), "{error}");
        assert!(error.contains("run a newer gateway"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
);

backends::on_both!(
    a_database_that_takes_no_write_stops_the_start,
    |backend: Backend| async move {
        Store::connect(&settings(&backend.url))
            .await
            .unwrap()
            .close()
            .await;
        let read_only = if backend.postgres {
            format!(
                "{}?options=-c%20default_transaction_read_only%3Don",
                backend.url
            )
        } else {
            // Migrated already, so SQLite's migrations write nothing (PostgreSQL's make sure of
            // their own table, and are refused there); reads still work.
            let read_only = format!("{}?mode=ro", backend.url);
            let store = Store::connect(&settings(&read_only)).await.unwrap();
            store.ping().await.unwrap();
            assert!(store.take_a_write().await.is_err());
            store.close().await;
            read_only
        };
        let error = Store::connect_to_serve(&settings(&read_only))
            .await
            .map(drop)
            .unwrap_err();
        assert!(
            error.contains("cannot write to the database") || error.contains("read-only"),
            "{error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
        let (store, _sole_use) = Store::connect_to_serve(&settings(&backend.url))
            .await
            .unwrap();
        store.take_a_write().await.unwrap();
    }
);

#[actix_web::test]
async fn the_sqlite_file_is_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    let path = dir.path().join("nested").join("gateway.db");
    let store = Store::connect(&settings(&format!("sqlite://{}", path.display())))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "database file mode {mode:o}");
    assert!(
        dir.path().join("nested").join("gateway.db-wal").exists(),
        "WAL mode keeps a -wal file next to the database"
    );
    store.close().await;
    // A backup restored readable by everyone is made private again when it is opened.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::connect(&settings(&format!("sqlite://{}", path.display())))
        .await
        .unwrap();
    store.ping().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "reopened database file mode {mode:o}");
}

#[actix_web::test]
async fn an_unreachable_postgres_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = Store::connect(&settings(&format!(
        "postgres://gateway:hunter2@127.0.0.1:{port}/chat"
    )))
    .await
    .unwrap_err();
    assert!(error.starts_with("store: cannot connect to"), "{error}");
    assert!(!error.contains("hunter2"), "the password leaked: {error}");
    assert!(!error.contains('\n'), "{error}");
}

#[test]
fn the_binary_exits_non_zero_with_one_line_on_a_bad_store() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    for (url, expected) in [
        ("mysql://localhost/chat", "store.url"),
        (
            // A directory that cannot be created: its parent is a file.
            &*format!("sqlite://{}/sub/gateway.db", blocked.display()),
            "store: cannot create",
        ),
        (
            // A directory that does not exist (a typo): not made, with a new, empty outbox.
            &*format!("sqlite://{}/typo/gateway.db", dir.path().display()),
            "typo does not exist",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .env_remove("SYNOCHAT_CONFIG")
            .env("SYNOCHAT__SERVER__BIND", "127.0.0.1:0")
            .env("SYNOCHAT__STORE__URL", url)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(expected), "{url}: {stderr}");
        assert!(last.starts_with("syno-chat-gateway: "), "{stderr}");
    }
}

fn delivery(id: &str, target: &str, now: i64) -> syno_chat_gateway::store::deliveries::NewDelivery {
    syno_chat_gateway::store::deliveries::NewDelivery {
        id: id.to_owned(),
        caller: "ci".to_owned(),
        target: target.to_owned(),
        request: "{}".to_owned(),
        chunks: vec![format!("text of {id}")],
        now_ms: now,
        expires_at_ms: now + 86_400_000,
    }
}

backends::on_both!(
    only_each_targets_head_says_when_the_worker_wakes,
    |backend: Backend| async move {
        // A delivery behind a head that waits out a back-off is not due, however old: counted,
        // it woke the worker to claim in vain five times a second while the head waited.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        store
            .enqueue(&delivery("head", "channel:1", now))
            .await
            .unwrap();
        store
            .enqueue(&delivery("behind", "channel:1", now + 1))
            .await
            .unwrap();
        let head = store.claim("w", now, now + 100).await.unwrap().unwrap();
        assert_eq!(head.id, "head");
        assert!(
            store
                .finish(
                    "head",
                    "w",
                    DeliveryState::Queued,
                    now + 60_000,
                    None,
                    now + 2
                )
                .await
                .unwrap()
        );
        assert_eq!(store.next_due().await.unwrap(), Some(now + 60_000));
        // A paced target's head is due when its pacing allows.
        store
            .enqueue(&delivery("paced", "channel:2", now + 3))
            .await
            .unwrap();
        store
            .pace_target("channel:2", now + 5_000, 0)
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(now + 5_000));
        // A head being sent: when its lease ends.
        store.pace_target("channel:2", 0, 0).await.unwrap();
        let sending = store
            .claim("w", now + 10, now + 700)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sending.id, "paced");
        assert_eq!(store.next_due().await.unwrap(), Some(now + 700));
    }
);

backends::on_both!(
    a_target_s_backlog_takes_turns_with_other_targets,
    |backend: Backend| async move {
        // Claims go by when a head came due: a target's next delivery comes due when the one
        // before it finishes, behind heads already due, so a backlog does not hold the lanes.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        for id in ["a1", "a2", "a3"] {
            store
                .enqueue(&delivery(id, "channel:1", now))
                .await
                .unwrap();
        }
        store
            .enqueue(&delivery("b1", "channel:2", now + 1))
            .await
            .unwrap();
        let first = store.claim("w", now + 2, now + 100).await.unwrap().unwrap();
        assert_eq!(first.id, "a1");
        assert!(
            store
                .finish("a1", "w", DeliveryState::Delivered, now + 2, None, now + 3)
                .await
                .unwrap()
        );
        let next = store.claim("w", now + 4, now + 100).await.unwrap().unwrap();
        assert_eq!(next.id, "b1", "channel 2 waited behind channel 1's backlog");
        let then = store.claim("w", now + 5, now + 100).await.unwrap().unwrap();
        assert_eq!(then.id, "a2");
    }
);

backends::on_both!(
    a_target_has_unfinished_deliveries_until_they_are_finished,
    |backend: Backend| async move {
        // What a synchronous send asks before it goes, so it cannot overtake the outbox.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        assert_eq!(
            store.last_unfinished("channel:1", None).await.unwrap(),
            None
        );
        assert!(store.unfinished_targets().await.unwrap().is_empty());
        for (id, target) in [("a", "channel:1"), ("b", "channel:1"), ("c", "user:2")] {
            store.enqueue(&delivery(id, target, now)).await.unwrap();
        }
        let mut targets = store.unfinished_targets().await.unwrap();
        targets.sort();
        assert_eq!(targets, ["channel:1", "user:2"]);
        let b = store
            .last_unfinished("channel:1", None)
            .await
            .unwrap()
            .expect("b");
        let a = store
            .last_unfinished("channel:1", Some(b - 1))
            .await
            .unwrap()
            .expect("a, before b");
        assert!(a < b);
        assert_eq!(
            store.last_unfinished("channel:3", None).await.unwrap(),
            None
        );
        // Being sent is unfinished; delivered, failed or cancelled is not.
        let sending = store.claim("w", now, now + 100).await.unwrap().unwrap();
        assert_eq!(sending.id, "a");
        assert_eq!(
            store.last_unfinished("channel:1", Some(a)).await.unwrap(),
            Some(a)
        );
        assert!(
            store
                .finish("a", "w", DeliveryState::Delivered, now, None, now + 1)
                .await
                .unwrap()
        );
        // What was ahead of a send that began with `a` last is done; `b` came after it.
        assert_eq!(
            store.last_unfinished("channel:1", Some(a)).await.unwrap(),
            None
        );
        assert_eq!(
            store.last_unfinished("channel:1", None).await.unwrap(),
            Some(b)
        );
        store.cancel_delivery("b", now + 2).await.unwrap();
        assert_eq!(
            store.last_unfinished("channel:1", None).await.unwrap(),
            None
        );
        assert_eq!(store.unfinished_targets().await.unwrap(), ["user:2"]);
    }
);

backends::on_both!(
    stored_times_follow_a_step_of_the_wall_clock,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let (now, hour) = (10_000_000, 3_600_000);
        // Written with a clock an hour ahead: a retry time and a pacing end.
        store
            .enqueue(&delivery("retried", "channel:1", now - 1))
            .await
            .unwrap();
        store
            .enqueue(&delivery("paced", "channel:2", now))
            .await
            .unwrap();
        store
            .enqueue(&delivery("elsewhere", "channel:3", now - 2))
            .await
            .unwrap();
        // Another replica, on the right clock, puts its delivery off for ten minutes.
        let other = store
            .claim("other/0", now, now + 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.id, "elsewhere");
        assert!(
            store
                .finish(
                    "elsewhere",
                    "other/0",
                    DeliveryState::Queued,
                    now + 600_000,
                    None,
                    now
                )
                .await
                .unwrap()
        );
        let first = store.claim("me/0", now, now + 100).await.unwrap().unwrap();
        assert_eq!(first.id, "retried");
        assert!(
            store
                .finish(
                    "retried",
                    "me/0",
                    DeliveryState::Queued,
                    now + hour + 500,
                    None,
                    now + hour
                )
                .await
                .unwrap()
        );
        store
            .pace_target("channel:2", now + hour + 1_000, 0)
            .await
            .unwrap();
        // The clock stepped back an hour: they come due as they would have; the other
        // replica's delivery keeps its time.
        store
            .clock_stepped(-hour, now, "me/", 50_000)
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(now + 500));
        let elsewhere = store.delivery("elsewhere").await.unwrap().unwrap();
        assert_eq!(elsewhere.next_attempt_at, now + 600_000);
        let mine = store
            .claim("me/0", now + 1_000, now + 51_000)
            .await
            .unwrap()
            .unwrap();
        let theirs = store
            .claim("other/0", now + 1_000, now + 51_000)
            .await
            .unwrap()
            .unwrap();
        let mut both = [mine.id.as_str(), theirs.id.as_str()];
        both.sort_unstable();
        assert_eq!(both, ["paced", "retried"]);
        // Then an hour forward: this process's leases still in flight follow it, another's not.
        let later = now + 1_000 + hour;
        store
            .clock_stepped(hour, later, "me/", 50_000)
            .await
            .unwrap();
        let taken = store
            .claim("x/0", later + 1, later + 50_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.id, theirs.id);
        // What is left is the other replica's delivery, due by now; not this process's.
        let left = store
            .claim("x/0", later + 1, later + 50_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.id, "elsewhere");
        assert!(
            store
                .claim("x/0", later + 1, later + 50_000)
                .await
                .unwrap()
                .is_none()
        );
    }
);

backends::on_both!(
    targets_are_claimed_by_when_their_head_came_due,
    |backend: Backend| async move {
        // The first target in the table does not go first: each claim takes the target whose
        // head is due soonest, so one busy target does not starve the others.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        for (id, target, at) in [
            ("a1", "channel:1", now),
            ("b1", "channel:2", now + 1),
            ("a2", "channel:1", now + 2),
            ("a3", "channel:1", now + 3),
        ] {
            store.enqueue(&delivery(id, target, at)).await.unwrap();
        }
        let mut order = Vec::new();
        while let Some(row) = store.claim("w", now + 10, now + 100).await.unwrap() {
            assert!(
                store
                    .finish(
                        &row.id,
                        "w",
                        DeliveryState::Delivered,
                        now + 10,
                        None,
                        now + 10
                    )
                    .await
                    .unwrap()
            );
            order.push(row.id);
        }
        assert_eq!(order, ["a1", "b1", "a2", "a3"]);
    }
);

backends::on_both!(
    claims_follow_the_order_per_target_and_leases_expire,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        for (id, target) in [
            ("a1", "channel:1"),
            ("a2", "channel:1"),
            ("b1", "channel:2"),
        ] {
            store.enqueue(&delivery(id, target, now)).await.unwrap();
        }
        let first = store.claim("w1", now, now + 10).await.unwrap().unwrap();
        assert_eq!(first.id, "a1");
        assert_eq!(first.attempts, 1);
        // a2 waits behind a1, which is being sent: the next claim is the other target's head.
        let second = store.claim("w1", now, now + 10).await.unwrap().unwrap();
        assert_eq!(second.id, "b1");
        assert!(store.claim("w1", now, now + 10).await.unwrap().is_none());
        // w1 dies: after its lease another worker takes a1 over, and w1 can no longer finish it.
        let taken = store
            .claim("w2", now + 20, now + 30)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.id, "a1");
        assert_eq!(taken.attempts, 2);
        // w2 is sending a1, its outcome unknown while it is in flight; w1, whose lease ran
        // out, cannot take that mark away (the next attempt would not look first) nor change
        // the chunks.
        assert!(
            store
                .mark_uncertain("a1", "w2", now + 20, now + 40)
                .await
                .unwrap()
        );
        store
            .record_post("a1", "w1", 0, &[(1, Some(41))], now + 21)
            .await
            .unwrap();
        store.clear_uncertain("a1", "w1", false).await.unwrap();
        assert!(
            !store
                .replace_chunks("a1", "w1", &["x".into(), "y".into()])
                .await
                .unwrap()
        );
        let row = store.delivery("a1").await.unwrap().unwrap();
        assert_eq!(row.uncertain_since, Some(now + 20));
        assert_eq!(row.chunks.len(), 1);
        // What w1 posted is recorded all the same: a fact the holder needs.
        assert!(store.post_is_recorded(41, "another", 0).await.unwrap());
        assert!(
            !store
                .finish(
                    "a1",
                    "w1",
                    DeliveryState::Delivered,
                    now + 21,
                    None,
                    now + 21
                )
                .await
                .unwrap()
        );
        store
            .record_post("a1", "w2", 0, &[(0, Some(42))], now + 21)
            .await
            .unwrap();
        assert!(store.post_is_recorded(42, "another", 0).await.unwrap());
        assert!(store.post_is_recorded(42, "a1", 1).await.unwrap());
        // Its own chunk's post: found by the delivery as its own, not as someone else's.
        assert!(!store.post_is_recorded(42, "a1", 0).await.unwrap());
        assert!(
            store
                .finish(
                    "a1",
                    "w2",
                    DeliveryState::Delivered,
                    now + 21,
                    None,
                    now + 21
                )
                .await
                .unwrap()
        );
        // b1's lease expired too; a2 is now its target's head.
        let mut next: Vec<String> = Vec::new();
        while let Some(row) = store.claim("w2", now + 40, now + 50).await.unwrap() {
            next.push(row.id);
        }
        next.sort();
        assert_eq!(next, ["a2", "b1"]);
        let a1 = store.delivery("a1").await.unwrap().unwrap();
        assert_eq!(a1.state, DeliveryState::Delivered);
        // w2's post, and the one w1 recorded for another recipient while w2 held it.
        assert_eq!(a1.posts, [(0, Some(42)), (0, Some(41))]);
        // A failed one can be retried, a queued one cancelled; other states are refused.
        use syno_chat_gateway::store::deliveries::Transition;
        assert!(
            store
                .finish(
                    "b1",
                    "w2",
                    DeliveryState::Failed,
                    now + 41,
                    Some("{}"),
                    now + 41
                )
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .retry_delivery("b1", now + 42, now + 99_999)
                .await
                .unwrap(),
            Transition::Done
        );
        assert_eq!(
            store.cancel_delivery("b1", now + 43).await.unwrap(),
            Transition::Done
        );
        assert_eq!(
            store.cancel_delivery("b1", now + 44).await.unwrap(),
            Transition::WrongState(DeliveryState::Cancelled)
        );
        assert_eq!(
            store.cancel_delivery("zz", now).await.unwrap(),
            Transition::NotFound
        );
        assert_eq!(
            store.release_leases("w2").await.unwrap(),
            1,
            "a2 handed back"
        );
        let listed = store
            .deliveries(Some(DeliveryState::Queued), None, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a2"]
        );
        let after = store
            .deliveries(None, Some("a1"), 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            after.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["a2", "b1"]
        );
        // A cursor naming no delivery is not taken for the start of the list.
        assert!(
            store
                .deliveries(None, Some("zz"), 10)
                .await
                .unwrap()
                .is_none()
        );
    }
);

backends::on_both!(
    a_delivery_taken_over_from_a_synchronous_send_keeps_its_progress,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 4_000_000;
        let mut new = delivery("t1", "channel:7", now);
        new.chunks = vec!["one".into(), "two".into(), "three".into()];
        // Part one was answered (post 51); part two's answer never came.
        store
            .enqueue_resumed(&new, &[(0, 0, Some(51))], Some(now - 10), now, None)
            .await
            .unwrap();
        let row = store.claim("w", now, now + 10).await.unwrap().unwrap();
        assert_eq!(row.id, "t1");
        assert_eq!(row.posts, [(0, Some(51))]);
        assert_eq!(row.uncertain_since, Some(now - 10));
        assert!(store.post_is_recorded(51, "another", 0).await.unwrap());
        // A plain enqueue has neither.
        store
            .enqueue(&delivery("t2", "channel:8", now))
            .await
            .unwrap();
        let plain = store.delivery("t2").await.unwrap().unwrap();
        assert!(plain.posts.is_empty());
        assert_eq!(plain.uncertain_since, None);
        // Not looked at before the unanswered part has had time to land.
        let mut later = delivery("t3", "channel:9", now);
        later.chunks = vec!["late".into()];
        store
            .enqueue_resumed(&later, &[], Some(now - 10), now + 1_000, None)
            .await
            .unwrap();
        // Taken over again under the same key (a retry of a cut-off request): the first
        // delivery stands, nothing new is stored.
        let key = EventKey {
            key: "idempotency:k".into(),
            since_ms: Some(now - 100),
        };
        let keyed = delivery("t4", "channel:10", now);
        assert_eq!(
            store
                .enqueue_resumed(&keyed, &[], None, now, Some(&key))
                .await
                .unwrap(),
            Enqueued::New
        );
        let again = delivery("t5", "channel:10", now + 5);
        assert_eq!(
            store
                .enqueue_resumed(&again, &[], Some(now), now, Some(&key))
                .await
                .unwrap(),
            Enqueued::Repeat("t4".into())
        );
        assert!(store.delivery("t5").await.unwrap().is_none());
        while let Some(row) = store.claim("w", now, now + 10).await.unwrap() {
            assert_ne!(row.id, "t3", "claimed before its first attempt is due");
        }
        let mut due = Vec::new();
        while let Some(row) = store.claim("w", now + 1_000, now + 100_000).await.unwrap() {
            due.push(row.id);
        }
        assert!(due.iter().any(|id| id == "t3"), "{due:?}");
    }
);

backends::on_both!(
    finished_deliveries_past_retention_are_purged_with_their_posts,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 3_000_000;
        // 505 delivered ones (more than one batch of 500), then one of each other state.
        for n in 0..505 {
            let id = format!("old{n}");
            store
                .enqueue(&delivery(&id, &format!("channel:{n}"), now))
                .await
                .unwrap();
        }
        while let Some(row) = store.claim("w", now, now + 10).await.unwrap() {
            store
                .record_post(
                    &row.id,
                    "w",
                    0,
                    &[(0, Some(row.id[3..].parse().unwrap()))],
                    now,
                )
                .await
                .unwrap();
            assert!(
                store
                    .finish(&row.id, "w", DeliveryState::Delivered, now, None, now)
                    .await
                    .unwrap()
            );
        }
        for (id, target) in [
            ("x1", "channel:a"),
            ("x2", "channel:b"),
            ("x3", "channel:c"),
            ("x4", "channel:d"),
            ("cancelled", "channel:e"),
        ] {
            store.enqueue(&delivery(id, target, now)).await.unwrap();
        }
        store.cancel_delivery("cancelled", now).await.unwrap();
        // Of three claimed: one fails, one is delivered after the cutoff, one stays sending;
        // the fourth stays queued.
        let claimed: Vec<String> = [
            store.claim("w", now, now + 10).await.unwrap().unwrap().id,
            store.claim("w", now, now + 10).await.unwrap().unwrap().id,
            store.claim("w", now, now + 10).await.unwrap().unwrap().id,
        ]
        .into();
        assert!(
            store
                .finish(
                    &claimed[0],
                    "w",
                    DeliveryState::Failed,
                    now,
                    Some("{}"),
                    now
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .finish(
                    &claimed[1],
                    "w",
                    DeliveryState::Delivered,
                    now + 5_000,
                    None,
                    now + 5_000
                )
                .await
                .unwrap()
        );
        assert_eq!(store.purge_deliveries(now + 1_000).await.unwrap(), 507);
        let mut left: Vec<&str> = store
            .deliveries(None, None, 500)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|d| d.state.as_str())
            .collect();
        left.sort();
        // Unfinished ones stay whatever their age, and so does one finished after the cutoff.
        assert_eq!(left, ["delivered", "queued", "sending"]);
        // Their posts went with them: post 7 is no longer owned by a delivery.
        assert!(!store.post_is_recorded(7, "another", 0).await.unwrap());
        assert_eq!(store.purge_deliveries(now + 1_000).await.unwrap(), 0);
    }
);

/// Worker `a` takes `r1`, which fails, then takes `r2` (the next to the same target).
async fn r1_failed_and_r2_claimed(store: &Store, now: i64) {
    let first = store.claim("a", now, now + 60_000).await.unwrap().unwrap();
    assert_eq!(first.id, "r1");
    assert!(
        store
            .finish("r1", "a", DeliveryState::Failed, now, Some("{}"), now)
            .await
            .unwrap()
    );
    let second = store.claim("a", now, now + 60_000).await.unwrap().unwrap();
    assert_eq!(second.id, "r2");
}

backends::on_both!(
    a_delivery_retried_by_hand_waits_for_the_one_in_flight_to_its_target,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 6_000_000;
        for id in ["r1", "r2"] {
            store
                .enqueue(&delivery(id, "channel:4", now))
                .await
                .unwrap();
        }
        r1_failed_and_r2_claimed(&store, now).await;
        // r1 retried by hand while r2 is being sent: another worker (another replica) must
        // not send it beside r2.
        store
            .retry_delivery("r1", now + 1, now + 100_000)
            .await
            .unwrap();
        assert!(
            store
                .claim("b", now + 2, now + 60_000)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .finish("r2", "a", DeliveryState::Delivered, now + 3, None, now + 3)
                .await
                .unwrap()
        );
        let retried = store
            .claim("b", now + 4, now + 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(retried.id, "r1");
    }
);

backends::on_both!(
    a_delivery_retried_by_hand_goes_behind_its_targets_queue_and_between_no_parts,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 7_000_000;
        let mut long = delivery("r2", "channel:5", now);
        long.chunks = vec!["part 1".into(), "part 2".into()];
        store
            .enqueue(&delivery("r1", "channel:5", now))
            .await
            .unwrap();
        store.enqueue(&long).await.unwrap();
        store
            .enqueue(&delivery("r3", "channel:5", now))
            .await
            .unwrap();
        // r2's first part is posted, then DSM turns the second away for now (a 411): back to
        // the queue, half sent.
        r1_failed_and_r2_claimed(&store, now).await;
        store
            .record_post("r2", "a", 0, &[(0, Some(71))], now)
            .await
            .unwrap();
        assert!(
            store
                .finish("r2", "a", DeliveryState::Queued, now + 1, Some("{}"), now)
                .await
                .unwrap()
        );
        // r1 retried by hand meanwhile: it must not land between r2's parts, nor before r3,
        // which was handed over before the retry.
        store
            .retry_delivery("r1", now + 1, now + 100_000)
            .await
            .unwrap();
        let mut order = Vec::new();
        for step in 2..5 {
            let at = now + step;
            let row = store.claim("b", at, at + 60_000).await.unwrap().unwrap();
            assert!(
                store
                    .finish(&row.id, "b", DeliveryState::Delivered, at, None, at)
                    .await
                    .unwrap()
            );
            order.push(row.id);
        }
        assert_eq!(order, ["r2", "r3", "r1"]);
        // The listing follows the new place, and an enqueue after it gets a later one still.
        store
            .enqueue(&delivery("r4", "channel:5", now))
            .await
            .unwrap();
        let listed = store.deliveries(None, None, 10).await.unwrap().unwrap();
        let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["r2", "r3", "r1", "r4"]);
    }
);

backends::on_both!(
    many_failed_deliveries_retried_at_once_are_all_requeued,
    |backend: Backend| async move {
        // "Retry every failed one": all at once, while new messages arrive. Taking a new place
        // in the order reads and writes; none may be refused as "database is locked".
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 8_000_000;
        let ids: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
        for id in &ids {
            store
                .enqueue(&delivery(id, &format!("channel:{id}"), now))
                .await
                .unwrap();
            let row = store.claim("a", now, now + 60_000).await.unwrap().unwrap();
            assert!(
                store
                    .finish(&row.id, "a", DeliveryState::Failed, now, Some("{}"), now)
                    .await
                    .unwrap()
            );
        }
        let news: Vec<_> = (0..10)
            .map(|i| delivery(&format!("n{i}"), "channel:n", now))
            .collect();
        let retries = ids
            .iter()
            .map(|id| store.retry_delivery(id, now + 1, now + 100_000));
        let arrivals = news.iter().map(|new| store.enqueue(new));
        let (retried, arrived) = futures_util::future::join(
            futures_util::future::join_all(retries),
            futures_util::future::join_all(arrivals),
        )
        .await;
        for outcome in retried {
            assert!(
                matches!(
                    outcome,
                    Ok(syno_chat_gateway::store::deliveries::Transition::Done)
                ),
                "{outcome:?}"
            );
        }
        assert!(arrived.iter().all(Result::is_ok), "{arrived:?}");
    }
);

backends::on_both!(
    a_paced_target_is_not_claimed_before_its_time,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 2_000_000;
        store
            .enqueue(&delivery("t1", "token:alerts", now))
            .await
            .unwrap();
        store
            .pace_target("token:alerts", now + 1_000, 500)
            .await
            .unwrap();
        assert!(store.claim("w", now, now + 10).await.unwrap().is_none());
        assert_eq!(store.target_penalty("token:alerts").await.unwrap(), 500);
        assert_eq!(
            store
                .claim("w", now + 1_000, now + 2_000)
                .await
                .unwrap()
                .unwrap()
                .id,
            "t1"
        );
        // Delivered, the target's penalty ends: the next 411 starts again from nothing.
        assert!(
            store
                .finish(
                    "t1",
                    "w",
                    DeliveryState::Delivered,
                    now + 1_100,
                    None,
                    now + 1_100
                )
                .await
                .unwrap()
        );
        assert_eq!(store.target_penalty("token:alerts").await.unwrap(), 0);
    }
);

backends::on_both!(
    idempotency_records_are_kept_released_and_purged,
    |backend: Backend| async move {
        use syno_chat_gateway::store::idempotency::{Begin, IdempotencyScope, StoredResponse};
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let scope = IdempotencyScope {
            caller: "ci".into(),
            method: "POST".into(),
            path: "/api/v1/channels/1/posts".into(),
            key: "k1".into(),
        };
        let answer = StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"post_id\":1}".to_vec(),
            withheld: false,
        };
        // A minute's lease, ten minutes' keeping.
        let begin = |scope: &IdempotencyScope, print: &'static str, owner: &'static str, now| {
            let (store, scope) = (store.clone(), scope.clone());
            async move {
                store
                    .idempotency_begin(&scope, print, owner, now, 60_000, 600_000)
                    .await
                    .unwrap()
            }
        };
        let fresh = Begin::Started {
            interrupted_since: None,
        };
        assert_eq!(begin(&scope, "fp", "a", 1_000).await, fresh);
        // Only the owner stores the answer.
        assert!(
            !store
                .idempotency_finish(&scope, "b", &answer, 5_000)
                .await
                .unwrap()
        );
        assert!(
            store
                .idempotency_finish(&scope, "a", &answer, 5_000)
                .await
                .unwrap()
        );
        assert_eq!(
            begin(&scope, "fp", "c", 2_000).await,
            Begin::Replay(answer.clone())
        );
        assert_eq!(begin(&scope, "other", "c", 2_000).await, Begin::Reused);
        // A released key runs again.
        let released = IdempotencyScope {
            key: "k2".into(),
            ..scope.clone()
        };
        begin(&released, "fp", "d", 2_000).await;
        store.idempotency_release(&released, "d").await.unwrap();
        assert_eq!(begin(&released, "fp", "e", 3_000).await, fresh);
        // The purge deletes the expired answer (5 000), not the claim whose lease ended
        // (63 000): it is kept until the key expires.
        assert_eq!(store.idempotency_purge(4_999).await.unwrap(), 0);
        assert_eq!(store.idempotency_purge(63_000).await.unwrap(), 1);
        assert_eq!(begin(&scope, "other", "f", 63_000).await, fresh);
        // A claim whose lease ended is taken over by the same request, which learns when the
        // cut-off attempt began; another body is another request.
        assert_eq!(begin(&released, "other", "g", 63_000).await, Begin::Reused);
        assert_eq!(
            begin(&released, "fp", "g", 63_000).await,
            Begin::Started {
                interrupted_since: Some(3_000)
            }
        );
        assert_eq!(begin(&released, "fp", "h", 64_000).await, Begin::InFlight);
        // Abandoned again (cut off once more): the first attempt's start is still known.
        store
            .idempotency_abandon(&released, "g", 65_000)
            .await
            .unwrap();
        assert_eq!(
            begin(&released, "fp", "h", 65_000).await,
            Begin::Started {
                interrupted_since: Some(3_000)
            }
        );
        // A claim is never deleted while its lease runs, even past the key's expiry (a
        // request that outlives `ttl_secs`, or a `ttl_secs` below `lease_secs`).
        let short = IdempotencyScope {
            key: "k3".into(),
            ..scope.clone()
        };
        let long_lease = |owner: &'static str, now| {
            let (store, short) = (store.clone(), short.clone());
            async move {
                store
                    .idempotency_begin(&short, "fp", owner, now, 60_000, 1_000)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(long_lease("j", 100_000).await, fresh);
        assert_eq!(store.idempotency_purge(102_000).await.unwrap(), 0);
        assert_eq!(long_lease("k", 102_000).await, Begin::InFlight);
        // Renewed, its expiry follows the lease.
        assert!(store.idempotency_renew(&short, "j", 170_000).await.unwrap());
        assert_eq!(store.idempotency_purge(165_000).await.unwrap(), 0);
        assert_eq!(long_lease("k", 165_000).await, Begin::InFlight);
        store.idempotency_release(&short, "j").await.unwrap();
        // Ten minutes after it was first claimed, the key starts afresh.
        assert_eq!(store.idempotency_purge(603_000).await.unwrap(), 1);
        assert_eq!(begin(&released, "fp", "i", 603_000).await, fresh);
    }
);

/// Hands the delivery `id`, created at `at`, over as the event `key`.
async fn as_event(
    store: &Store,
    (id, caller, at): (&str, &str, i64),
    key: &str,
    since_ms: Option<i64>,
) -> Enqueued {
    let mut new = delivery(id, "channel:1", at);
    new.caller = caller.to_owned();
    let key = EventKey {
        key: key.to_owned(),
        since_ms,
    };
    store.enqueue_event(&new, &key).await.unwrap()
}

backends::on_both!(
    an_event_is_queued_once_per_caller_and_window,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 5_000_000;
        let (hook, guid) = ("hook:a", "delivery:guid-1");
        assert_eq!(
            as_event(&store, ("e1", hook, now), guid, None).await,
            Enqueued::New
        );
        // A redelivery much later is still the same event; nothing is stored for it.
        let again = as_event(&store, ("e2", hook, now + 9_000_000), guid, None).await;
        assert_eq!(again, Enqueued::Repeat("e1".into()));
        assert!(store.delivery("e2").await.unwrap().is_none());
        // Another caller's event with the same key is its own.
        let theirs = as_event(&store, ("e3", "hook:b", now), guid, None).await;
        assert_eq!(theirs, Enqueued::New);

        // A key with a window (60 s here): a copy inside it is the same event, one after it a
        // new one, which then owns the key.
        let window = |at: i64| Some(at - 60_000);
        let digest = "alerts:abc";
        let w1 = as_event(&store, ("w1", hook, now), digest, window(now)).await;
        assert_eq!(w1, Enqueued::New);
        let at = now + 30_000;
        let inside = as_event(&store, ("w2", hook, at), digest, window(at)).await;
        assert_eq!(inside, Enqueued::Repeat("w1".into()));
        let at = now + 61_000;
        let after = as_event(&store, ("w3", hook, at), digest, window(at)).await;
        assert_eq!(after, Enqueued::New);
        let at = now + 62_000;
        let of_new = as_event(&store, ("w4", hook, at), digest, window(at)).await;
        assert_eq!(of_new, Enqueued::Repeat("w3".into()));
        assert!(store.delivery("w1").await.unwrap().is_some(), "kept");

        // Copies racing each other: exactly one is stored, and all name it.
        let copies: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    let id = format!("r{i}");
                    as_event(&store, (&id, hook, now), "delivery:race", None).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for copy in copies {
            answers.push(copy.await.unwrap());
        }
        let firsts: Vec<usize> = (0..8).filter(|i| answers[*i] == Enqueued::New).collect();
        assert_eq!(firsts.len(), 1, "{answers:?}");
        let first = Enqueued::Repeat(format!("r{}", firsts[0]));
        assert!(
            answers.iter().all(|a| *a == Enqueued::New || *a == first),
            "{answers:?}"
        );
    }
);

backends::on_both!(
    a_store_from_before_event_keys_gains_them_at_start,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        store
            .enqueue(&delivery("queued-before", "channel:1", 1_000))
            .await
            .unwrap();
        store.close().await;
        // The schema as the release before event keys left it: migration 2 missing, though
        // later ones (1001, 2001, 3001...) are applied.
        for sql in [
            "DROP INDEX deliveries_by_event_key",
            "ALTER TABLE deliveries DROP COLUMN event_key",
            "DELETE FROM _sqlx_migrations WHERE version = 2",
        ] {
            backend.execute(sql, sql).await;
        }
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        assert!(store.delivery("queued-before").await.unwrap().is_some());
        let key = "delivery:after-upgrade";
        let first = as_event(&store, ("e1", "hook:a", 2_000), key, None).await;
        assert_eq!(first, Enqueued::New);
        let again = as_event(&store, ("e2", "hook:a", 3_000), key, None).await;
        assert_eq!(again, Enqueued::Repeat("e1".into()));
    }
);

#[actix_web::test]
async fn a_claim_among_thousands_of_targets_with_a_backlog_stays_quick() {
    // A NAS back after an outage: 2,000 targets with a backlog. The claim once ran a subquery
    // per target that re-joined every head (about 4 s per claim here); one pass takes ms.
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let store = Store::connect(&settings(&backend.url)).await.unwrap();
    let now: i64 = 1_000_000;
    backend
        .execute(
            "SELECT 1",
            "INSERT INTO targets (target) SELECT 'user:' || n FROM generate_series(1, 2000) n",
        )
        .await;
    backend
        .execute(
            "SELECT 1",
            "INSERT INTO deliveries (id, caller, target, request, chunks, state, \
                 next_attempt_at, created_at, updated_at, expires_at) \
             SELECT 'd' || n || '-' || k, 'ci', 'user:' || n, '{}', '[\"x\"]', 'queued', \
                 1000000 + n, 1000000, 1000000, 9000000 \
             FROM generate_series(1, 2000) n, generate_series(1, 5) k ORDER BY k, n",
        )
        .await;
    // The target whose head came due first goes first (user:1 at now + 1).
    let mut slowest = std::time::Duration::ZERO;
    for expected in ["d1-1", "d2-1", "d3-1"] {
        let started = std::time::Instant::now();
        let row = store
            .claim("w", now + 10_000, now + 60_000)
            .await
            .unwrap()
            .unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(row.id, expected);
    }
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "a claim took {slowest:?}"
    );
    store.close().await;
}

#[actix_web::test]
async fn postgres_sessions_cut_off_a_frozen_replica_and_a_vanished_host() {
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let store = Store::connect(&settings(&backend.url)).await.unwrap();
    for (name, value) in [
        ("idle_in_transaction_session_timeout", "1min"),
        ("tcp_keepalives_idle", "30"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "3"),
        // Migrations may run long: no statement timeout.
        ("statement_timeout", "0"),
    ] {
        let got = store.session_setting(name).await.unwrap();
        assert_eq!(got.as_deref(), Some(value), "{name}");
    }
    store.close().await;
    // The URL's own `options` wins over the defaults.
    let url = format!(
        "{}?options=-c%20idle_in_transaction_session_timeout%3D5s",
        backend.url
    );
    let store = Store::connect(&settings(&url)).await.unwrap();
    let got = store
        .session_setting("idle_in_transaction_session_timeout")
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some("5s"));
    assert_eq!(
        store
            .session_setting("tcp_keepalives_count")
            .await
            .unwrap()
            .as_deref(),
        Some("3")
    );
    store.close().await;
}

#[actix_web::test]
async fn the_event_listener_does_not_take_a_pooled_connection() {
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let store = Store::connect(&StoreSettings {
        max_connections: Some(1),
        ..settings(&backend.url)
    })
    .await
    .unwrap();
    let _listening = store.listen_events().await.unwrap().unwrap();
    // The pool's only connection is still free.
    let started = std::time::Instant::now();
    store.ping().await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    store.close().await;
}

backends::on_both!(the_pool_size_is_a_setting, |backend: Backend| async move {
    let store = Store::connect(&StoreSettings {
        max_connections: Some(1),
        ..settings(&backend.url)
    })
    .await
    .unwrap();
    store.ping().await.unwrap();
    store.close().await;
});

#[test]
fn store_max_connections_is_validated() {
    use syno_chat_gateway::config::{Settings, Sources};
    let load = |value: &str| {
        let env = [(
            "SYNOCHAT__STORE__MAX_CONNECTIONS".to_owned(),
            value.to_owned(),
        )];
        Settings::load(Sources {
            file: None,
            env: Some(env.into_iter().collect()),
        })
    };
    assert_eq!(load("32").unwrap().store.max_connections, Some(32));
    for bad in ["0", "1001"] {
        assert_eq!(load(bad).unwrap_err().key, "store.max_connections", "{bad}");
    }
    let defaults = Settings::load(Sources {
        file: None,
        env: Some(Default::default()),
    })
    .unwrap();
    assert_eq!(defaults.store.max_connections, None);
}

/// SHA-384 of every shipped migration (`sqlx` refuses a database whose applied migration text
/// changed, so a shipped file must never be edited: add a new migration instead). A new
/// migration adds its line here.
#[rustfmt::skip]
const SHIPPED_MIGRATIONS: &[(&str, i64, &str, &str)] = &[
    ("sqlite", 1, "0001_deliveries.sql", "2e8bb410006ecb6b1c5e0db2bacd0b0e780563374a2b3f57f59ab8e9bdf19d0ea55f4fa977b0e0257cc0d2d8ada6e3f3"),
    ("sqlite", 2, "0002_deliveries_event_key.sql", "e67e9e1f9431b8df9a1a2684ce92f4555c581ae6a52420a46aa9c3ec75c5d6f1ea370188fb2a7ca982cc3eee0a300e42"),
    ("sqlite", 3, "0003_deliveries_age_indexes.sql", "8ca1ec2567412751b4ba00aa6f6a9747ff16c3ea955f848faa0fd90b6837f584e3bc9790af39014555a68bc10a93be88"),
    ("sqlite", 1001, "1001_idempotency_keys.sql", "f9ce22db6289192671d1358937f149842c72198518d773261d263e59425076313d46dbc348e9e2f07302f318b89ea590"),
    ("sqlite", 2001, "2001_events.sql", "16bb94fb7032874af382705276a05aee8238c5712e4a6b32e22cedde19a38bfda758692eb8c643bd0cf0c28d425adfad"),
    ("sqlite", 2002, "2002_events_button.sql", "e2aefd2298a38c7fa22ee2d5c7e4b78a5aaebc8e8418f7e8ad76ab93876fcfa337939eaeb538a809db8115b53f7498d1"),
    ("sqlite", 2003, "2003_events_channel_type.sql", "b98ef2c805ab540b1f551c35365e1f0c8df774db7af650498e8bf0ad552f2478d77a1f9396a58c8bb8309fc0d2db52ac"),
    ("sqlite", 2004, "2004_events_purged.sql", "4fc80ea9585a9c9ed2b01eecaa3d3f7062b961d18963dacde8d05528610f7c3c95d49babd4c31b5e2c19b5bb754b9558"),
    ("sqlite", 2005, "2005_events_filters.sql", "a45489a6877c393535f9968b1eed289e7d75f8525f5ff3ba28d67a1c4cc7a2545a999eb7c7e17975b04915c871469d3d"),
    ("sqlite", 3001, "3001_subscriptions.sql", "ec891533867e5be23f71631083ed88afbfa53df6b1540b5c4ebff2ebcb6ba087db353143fb198e23559bae1523462a37"),
    ("sqlite", 3002, "3002_subscriptions_disabled_at.sql", "651f2cefbb9201b501e63ba2232879a30a424f2d279e58fee31eb278c1b16657cc78349273ef51f4d671c3a0834eaf7a"),
    ("sqlite", 3003, "3003_subscriptions_previous_secret.sql", "51cf60c34fdd3aa0dab131599939be7253435cf96ec18496ebd0b82d85176717e7f7d7acedf142f64ccfa93d82c8f0c4"),
    ("sqlite", 3004, "3004_subscriptions_events_missed.sql", "8b0e538c7035d1fa8ffbfe21304726a810d627864acd933fb1b5982b718f40c51e561e20396774676e76f78ac3daeb11"),
    ("sqlite", 3005, "3005_subscription_deliveries_by_delivery.sql", "d3d8192a11f636d9d073ed4193854007a906f146270b318a352a050a4cc0f74c3101fbbe2308e6213ea2119590cb8274"),
    ("sqlite", 9001, "9001_schema_compat.sql", "66893bad463cbfad849a9e334ba67ab10e7e17af7126426eab2b9137a794b4f7e986323c26502efb53080c327901cd40"),
    ("sqlite", 9002, "9002_store_probe.sql", "3f877059271aa0368b0b2a02c1715a9ff06b1ff3ebebc9e054c9b4642b540cc5c7ecdfe3a4921452fc0ee427008b0b52"),
    ("postgres", 1, "0001_deliveries.sql", "dfd89072160b3cac4424a5f3030fbc8c7f3ce56ed3f2190496c41d0e26a1d035010ff9e1258da0d2d094b5d4205405bf"),
    ("postgres", 2, "0002_deliveries_event_key.sql", "e67e9e1f9431b8df9a1a2684ce92f4555c581ae6a52420a46aa9c3ec75c5d6f1ea370188fb2a7ca982cc3eee0a300e42"),
    ("postgres", 3, "0003_deliveries_age_indexes.sql", "8ca1ec2567412751b4ba00aa6f6a9747ff16c3ea955f848faa0fd90b6837f584e3bc9790af39014555a68bc10a93be88"),
    ("postgres", 1001, "1001_idempotency_keys.sql", "60563f458d60d3c8b5681e3b17aa1f5b365e1e56876096f210f64efa4f4bc0e719fad364ba973fdccc5cda537e8ccbb9"),
    ("postgres", 2001, "2001_events.sql", "9b49f56a2b1d52f88ca2d92a4ea80e322a8e91ecf3f0cbffd67fd2e37ba6caa7c4f36a96f0c6f87b5c39957377d47999"),
    ("postgres", 2002, "2002_events_button.sql", "e2aefd2298a38c7fa22ee2d5c7e4b78a5aaebc8e8418f7e8ad76ab93876fcfa337939eaeb538a809db8115b53f7498d1"),
    ("postgres", 2003, "2003_events_channel_type.sql", "b98ef2c805ab540b1f551c35365e1f0c8df774db7af650498e8bf0ad552f2478d77a1f9396a58c8bb8309fc0d2db52ac"),
    ("postgres", 2004, "2004_events_purged.sql", "4fc80ea9585a9c9ed2b01eecaa3d3f7062b961d18963dacde8d05528610f7c3c95d49babd4c31b5e2c19b5bb754b9558"),
    ("postgres", 2005, "2005_events_filters.sql", "a45489a6877c393535f9968b1eed289e7d75f8525f5ff3ba28d67a1c4cc7a2545a999eb7c7e17975b04915c871469d3d"),
    ("postgres", 3001, "3001_subscriptions.sql", "ec891533867e5be23f71631083ed88afbfa53df6b1540b5c4ebff2ebcb6ba087db353143fb198e23559bae1523462a37"),
    ("postgres", 3002, "3002_subscriptions_disabled_at.sql", "651f2cefbb9201b501e63ba2232879a30a424f2d279e58fee31eb278c1b16657cc78349273ef51f4d671c3a0834eaf7a"),
    ("postgres", 3003, "3003_subscriptions_previous_secret.sql", "51cf60c34fdd3aa0dab131599939be7253435cf96ec18496ebd0b82d85176717e7f7d7acedf142f64ccfa93d82c8f0c4"),
    ("postgres", 3004, "3004_subscriptions_events_missed.sql", "8b0e538c7035d1fa8ffbfe21304726a810d627864acd933fb1b5982b718f40c51e561e20396774676e76f78ac3daeb11"),
    ("postgres", 3005, "3005_subscription_deliveries_by_delivery.sql", "d3d8192a11f636d9d073ed4193854007a906f146270b318a352a050a4cc0f74c3101fbbe2308e6213ea2119590cb8274"),
    ("postgres", 9001, "9001_schema_compat.sql", "66893bad463cbfad849a9e334ba67ab10e7e17af7126426eab2b9137a794b4f7e986323c26502efb53080c327901cd40"),
    ("postgres", 9002, "9002_store_probe.sql", "3f877059271aa0368b0b2a02c1715a9ff06b1ff3ebebc9e054c9b4642b540cc5c7ecdfe3a4921452fc0ee427008b0b52"),
];

#[test]
fn every_shipped_migration_file_keeps_its_checksum() {
    use sha2::{Digest, Sha384};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
    let mut found = Vec::new();
    for engine in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(root.join(engine)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let digest = hex::encode(Sha384::digest(std::fs::read(&path).unwrap()));
            found.push((engine, name, digest));
        }
    }
    for (engine, name, digest) in &found {
        let pinned = SHIPPED_MIGRATIONS
            .iter()
            .find(|(e, _, n, _)| e == engine && n == name)
            .unwrap_or_else(|| panic!("{engine}/{name} has no entry in SHIPPED_MIGRATIONS"));
        assert_eq!(
            digest, pinned.3,
            "{engine}/{name} changed after it shipped: databases that applied it would refuse \
             to open; put the change in a new migration"
        );
    }
    assert_eq!(
        found.len(),
        SHIPPED_MIGRATIONS.len(),
        "a pinned file is gone"
    );
}

backends::on_both!(
    the_applied_migrations_are_the_pinned_ones,
    |backend: Backend| async move {
        // What sqlx records is what the binary embeds: every pinned file, none other.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        store.close().await;
        let engine = if backend.postgres {
            "postgres"
        } else {
            "sqlite"
        };
        let checksums = backend
            .bytes(
                "SELECT checksum FROM _sqlx_migrations ORDER BY version",
                "SELECT checksum FROM _sqlx_migrations ORDER BY version",
            )
            .await;
        let applied: Vec<String> = checksums.iter().map(hex::encode).collect();
        let mut pinned: Vec<(i64, &str)> = SHIPPED_MIGRATIONS
            .iter()
            .filter(|(e, ..)| *e == engine)
            .map(|(_, version, _, digest)| (*version, *digest))
            .collect();
        pinned.sort();
        let pinned: Vec<&str> = pinned.into_iter().map(|(_, d)| d).collect();
        assert_eq!(applied, pinned);
    }
);

backends::on_both!(
    frequent_queries_skip_the_retained_history,
    |backend: Backend| async move {
        // A week of retained history: 100,000 finished deliveries, half of them a
        // subscription's. The gauges, the backlog check before a synchronous reply and a purge
        // with nothing due must not walk them.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let sub = "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e09";
        let sql = |series: &str| {
            [
                format!(
                    "INSERT INTO subscriptions (id, url, secret, fanned_out_to, created_at) \
                     VALUES ('{sub}', 'https://r.example/', 'whsec_x', 0, 0)"
                ),
                format!(
                    "INSERT INTO deliveries (id, caller, target, request, chunks, state, \
                         attempts, next_attempt_at, created_at, updated_at, finished_at, expires_at) \
                     {series} SELECT 'h' || i, 'subscriptions', \
                         CASE WHEN i % 2 = 0 THEN 'subscription:{sub}' ELSE 'channel:' || (i % 97) END, \
                         '{{}}', '[\"x\"]', CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'delivered' END, \
                         1, i, i, i, 1000000 + i, 9000000 FROM n"
                ),
                format!(
                    "INSERT INTO subscription_deliveries (subscription_id, event_id, delivery_id) \
                     {series} SELECT '{sub}', i, 'h' || i FROM n WHERE i % 2 = 0"
                ),
            ]
        };
        let sqlite =
            sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)");
        let postgres = sql("WITH n(i) AS (SELECT generate_series(1, 100000))");
        for (lite, pg) in sqlite.iter().zip(&postgres) {
            backend.execute(lite, pg).await;
        }
        if backend.postgres {
            backend.execute("", "ANALYZE").await;
        }
        store
            .enqueue(&delivery("q1", "channel:1", 5_000_000))
            .await
            .unwrap();
        let timed = std::time::Instant::now();
        let stats = store.queue_stats().await.unwrap();
        let gauges = timed.elapsed();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (
                stats[0].state.as_str(),
                stats[0].count,
                stats[0].oldest_created_at
            ),
            ("queued", 1, Some(5_000_000))
        );
        let timed = std::time::Instant::now();
        assert!(!store.subscription_has_backlog(sub, 200_000).await.unwrap());
        let backlog = timed.elapsed();
        let timed = std::time::Instant::now();
        assert_eq!(store.purge_deliveries(1_000_000).await.unwrap(), 0);
        let purge = timed.elapsed();
        // Walking the history took 120-350 ms each on SQLite (debug build), under 5 ms now.
        // PostgreSQL's scans were quick enough here (10-40 ms): its bound is a sanity check.
        let bound = std::time::Duration::from_millis(if backend.postgres { 200 } else { 50 });
        for (what, took) in [("gauges", gauges), ("backlog", backlog), ("purge", purge)] {
            assert!(took < bound, "{what} took {took:?}");
        }
        // The finished states are still counted, when asked.
        let mut finished: Vec<(String, i64)> = store
            .finished_stats()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.state.to_string(), s.count))
            .collect();
        finished.sort();
        assert_eq!(
            finished,
            [
                ("delivered".to_owned(), 90_000),
                ("failed".to_owned(), 10_000)
            ]
        );
        // The purge still keeps a subscription's failed deliveries while their events are.
        assert_eq!(store.purge_deliveries(2_000_000).await.unwrap(), 90_000);
        store.close().await;
    }
);

backends::on_both!(
    expired_idempotency_records_are_purged_in_batches,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let insert = |series: &str| {
            format!(
                "INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, owner, \
                     state, lease_until, created_at, expires_at) \
                 {series} SELECT 'ci', 'POST', '/p', 'k' || i, 'fp', 'o', \
                     CASE WHEN i % 100 = 0 THEN 'running' ELSE 'done' END, \
                     CASE WHEN i % 200 = 0 THEN 99999 ELSE 0 END, 0, 1000 FROM n"
            )
        };
        backend
            .execute(
                &insert(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)",
                ),
                &insert("WITH n(i) AS (SELECT generate_series(1, 1200))"),
            )
            .await;
        // Six claims whose lease still runs stay; more than two batches of the rest go.
        assert_eq!(store.idempotency_purge(2_000).await.unwrap(), 1_194);
        let left = "SELECT COUNT(*) FROM idempotency_keys";
        assert_eq!(backend.count(left).await, 6);
        assert_eq!(store.idempotency_purge(2_000).await.unwrap(), 0);
        store.close().await;
    }
);

backends::on_both!(
    the_clock_is_compared_with_the_database_servers,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let ahead = store.clock_ahead_ms().await.unwrap();
        if backend.postgres {
            // The same host: the two clocks agree to within the query's round trip.
            let ahead = ahead.expect("PostgreSQL has a clock of its own");
            assert!(ahead.abs() < 1_000, "{ahead}");
        } else {
            assert_eq!(ahead, None);
        }
    }
);

backends::on_both!(
    an_events_filter_reads_its_own_events_only,
    |backend: Backend| async move {
        use syno_chat_gateway::events::{EventFilter, EventKind};
        // A week of events on one busy inbound; a filter that matches none of them, or a few,
        // must not read them all (a read key may ask 20 times a second, and every lagging
        // stream asks again).
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let sql = |series: &str| {
            format!(
                "INSERT INTO events (inbound, kind, channel_id, post_id, text, received_at) \
                 {series} SELECT 'ops', CASE WHEN i % 3000 = 0 THEN 'slash_command' ELSE \
                 'message' END, CASE WHEN i % 3000 = 0 THEN 7 ELSE 1 END, i, 'x', i FROM n"
            )
        };
        backend
            .execute(
                &sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)"),
                &sql("WITH n(i) AS (SELECT generate_series(1, 300000))"),
            )
            .await;
        if backend.postgres {
            backend.execute("", "ANALYZE").await;
        }
        let filters = [
            (Some("nope"), None, None, 0),
            (None, Some(7), None, 100),
            (None, None, Some(EventKind::SlashCommand), 100),
            (Some("ops"), Some(7), Some(EventKind::SlashCommand), 100),
            (Some("ops"), Some(2), None, 0),
        ];
        for (inbound, channel_id, kind, expected) in filters {
            let filter = EventFilter {
                inbound: inbound.map(str::to_owned),
                channel_id,
                kind,
            };
            // The quickest of three reads: a busy machine's pause is not the query's cost.
            let mut took = std::time::Duration::MAX;
            let mut events = Vec::new();
            for _ in 0..3 {
                let timed = std::time::Instant::now();
                events = store.events_after(0, &filter, 500).await.unwrap();
                took = took.min(timed.elapsed());
            }
            assert_eq!(
                events.len(),
                expected,
                "{inbound:?} {channel_id:?} {kind:?}"
            );
            assert!(events.iter().all(|e| filter.matches(e)));
            assert!(events.windows(2).all(|w| w[0].event_id < w[1].event_id));
            // SQLite read every one of the 300,000 events for a filter that matches none (about
            // 30 ms in a debug build); an index range takes well under one. PostgreSQL planned
            // the old query per call and was quick either way.
            let selective = inbound == Some("nope") || channel_id == Some(2);
            if selective && !backend.postgres {
                assert!(
                    took < std::time::Duration::from_millis(10),
                    "{inbound:?} {channel_id:?} {kind:?}: {took:?}"
                );
            }
        }
    }
);

backends::on_both!(
    targets_no_delivery_names_are_pruned_and_come_back_when_needed,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        for (id, target) in [("p1", "channel:1"), ("p2", "channel:2"), ("p3", "user:3")] {
            store.enqueue(&delivery(id, target, now)).await.unwrap();
        }
        // channel:1's delivery is done and purged; user:3's is done but its pacing lasts;
        // channel:2's goes back to the queue.
        while let Some(row) = store.claim("w", now, now + 10).await.unwrap() {
            let state = if row.id == "p2" {
                DeliveryState::Queued
            } else {
                DeliveryState::Delivered
            };
            assert!(
                store
                    .finish(&row.id, "w", state, now + 1, None, now + 1)
                    .await
                    .unwrap()
            );
        }
        store.pace_target("user:3", now + 60_000, 0).await.unwrap();
        assert_eq!(store.purge_deliveries(now + 2).await.unwrap(), 2);
        // channel:2 still has its queued delivery.
        assert_eq!(store.prune_targets(now + 3).await.unwrap(), 1);
        assert_eq!(store.prune_targets(now + 3).await.unwrap(), 0);
        // user:3 goes once its pacing has passed.
        assert_eq!(store.prune_targets(now + 60_001).await.unwrap(), 1);
        // A target named again is made again, and its delivery is claimed.
        store
            .enqueue(&delivery("p4", "channel:1", now + 10))
            .await
            .unwrap();
        let mut claimed = Vec::new();
        while let Some(row) = store.claim("w", now + 20, now + 30).await.unwrap() {
            claimed.push(row.id);
        }
        claimed.sort();
        assert_eq!(claimed, ["p2", "p4"]);
        // A finished delivery kept for its retention does not keep its target (each claim
        // walks the targets): a failed one's goes, and its retry by hand makes it again.
        for id in claimed {
            let finished =
                store.finish(&id, "w", DeliveryState::Delivered, now + 21, None, now + 21);
            assert!(finished.await.unwrap());
        }
        store
            .enqueue(&delivery("p5", "user:9", now + 40))
            .await
            .unwrap();
        let row = store.claim("w", now + 41, now + 50).await.unwrap().unwrap();
        assert_eq!(row.id, "p5");
        assert!(
            store
                .finish(
                    "p5",
                    "w",
                    DeliveryState::Failed,
                    now + 42,
                    Some("{}"),
                    now + 42
                )
                .await
                .unwrap()
        );
        assert_eq!(store.prune_targets(now + 60_002).await.unwrap(), 3);
        assert_eq!(backend.count("SELECT COUNT(*) FROM targets").await, 0);
        store
            .retry_delivery("p5", now + 60_003, now + 1_000_000)
            .await
            .unwrap();
        let retried = store.claim("w", now + 60_004, now + 60_010).await.unwrap();
        assert_eq!(retried.map(|row| row.id).as_deref(), Some("p5"));
    }
);

backends::on_both!(
    a_send_waits_only_for_what_the_outbox_had_queued_before_it,
    |backend: Backend| async move {
        use std::time::Duration;
        use syno_chat_gateway::config::{DeliverySettings, SubscriptionsSettings};
        use syno_chat_gateway::delivery::{Job, Outbox, now_ms};
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let outbox = Outbox::new(
            store.clone(),
            DeliverySettings::default(),
            &SubscriptionsSettings::default(),
            syno_chat_gateway::metrics::Metrics::new(),
            Duration::from_secs(10),
        );
        let job: Job = serde_json::from_str(r#"{"kind": "channel", "channel_id": 1}"#).unwrap();
        assert!(
            outbox
                .wait_turn(&job.target(), Duration::ZERO)
                .await
                .unwrap(),
            "nothing queued: no wait"
        );
        outbox
            .enqueue("ci", &job, outbox.part_limits().split("ahead").unwrap())
            .await
            .unwrap();
        assert!(
            !outbox
                .wait_turn(&job.target(), Duration::from_millis(300))
                .await
                .unwrap(),
            "a message queued before: the send waits, then is told it is still there"
        );
        let waiting = {
            let outbox = outbox.clone();
            let target = job.target();
            actix_web::rt::spawn(
                async move { outbox.wait_turn(&target, Duration::from_secs(10)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Queued while the send waits: after it, not waited for.
        outbox
            .enqueue("ci", &job, outbox.part_limits().split("behind").unwrap())
            .await
            .unwrap();
        let now = now_ms();
        let ahead = store.claim("w", now, now + 60_000).await.unwrap().unwrap();
        assert!(
            store
                .finish(&ahead.id, "w", DeliveryState::Delivered, now, None, now)
                .await
                .unwrap()
        );
        let turn = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("the wait ends once what was ahead is delivered")
            .unwrap()
            .unwrap();
        assert!(turn);
        assert!(
            !outbox
                .wait_turn(&job.target(), Duration::ZERO)
                .await
                .unwrap(),
            "a new send waits for the one queued behind"
        );
        // Once the worker has finished the last of them the target is forgotten: a send to
        // it no longer needs the store (noted, it would be refused while the store is away).
        let now = now_ms();
        let behind = store.claim("w", now, now + 60_000).await.unwrap().unwrap();
        assert!(
            store
                .finish(&behind.id, "w", DeliveryState::Delivered, now, None, now)
                .await
                .unwrap()
        );
        outbox.forget_if_done(&job.target()).await;
        store.close().await;
        assert!(
            outbox
                .wait_turn(&job.target(), Duration::from_millis(100))
                .await
                .unwrap()
        );
    }
);

backends::on_both!(
    claims_left_by_a_dead_process_wait_to_settle_but_a_subscriptions_do_not,
    |backend: Backend| async move {
        // A DSM send cut off may still land, so it is looked for only after `settled_at`; a
        // subscription's receiver drops a repeat by its id, and its queue must not wait.
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        for (id, target) in [("dsm", "channel:1"), ("sub", "subscription:s1")] {
            store.enqueue(&delivery(id, target, now)).await.unwrap();
            let claimed = store.claim("w", now, now + 100).await.unwrap().unwrap();
            assert_eq!(claimed.id, id);
            assert!(
                store
                    .mark_uncertain(id, "w", now + 1, now + 100)
                    .await
                    .unwrap()
            );
        }
        let settled_at = now + 20_000;
        assert_eq!(
            store
                .release_all_leases(settled_at, "subscription:")
                .await
                .unwrap(),
            2
        );
        let due = |id: &'static str| {
            let store = store.clone();
            async move { store.delivery(id).await.unwrap().unwrap().next_attempt_at }
        };
        assert_eq!(due("dsm").await, settled_at);
        assert!(due("sub").await < settled_at);
    }
);

backends::on_both!(
    a_claim_among_some_targets_leaves_the_others_to_their_own_lanes,
    |backend: Backend| async move {
        use syno_chat_gateway::store::deliveries::Targets;
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        let now = 1_000_000;
        store
            .enqueue(&delivery("sub", "subscription:s1", now))
            .await
            .unwrap();
        store
            .enqueue(&delivery("chat", "channel:1", now + 5))
            .await
            .unwrap();
        let (callbacks, chat) = (
            Targets::Starting("subscription:"),
            Targets::NotStarting("subscription:"),
        );
        assert_eq!(store.next_due_among(chat).await.unwrap(), Some(now + 5));
        assert_eq!(store.next_due_among(callbacks).await.unwrap(), Some(now));
        // The subscription's delivery is due first, but not among Chat's targets.
        let claimed = store.claim_among("w/0", now + 10, now + 100, chat).await;
        assert_eq!(claimed.unwrap().unwrap().id, "chat");
        assert!(
            store
                .claim_among("w/0", now + 10, now + 100, chat)
                .await
                .unwrap()
                .is_none()
        );
        let claimed = store
            .claim_among("w/1", now + 10, now + 100, callbacks)
            .await;
        assert_eq!(claimed.unwrap().unwrap().id, "sub");
        assert!(
            store
                .claim_among("w/1", now + 10, now + 100, callbacks)
                .await
                .unwrap()
                .is_none()
        );
    }
);

/// A TCP relay to PostgreSQL that, armed (`held`), holds back its answers to `BEGIN`: a
/// database that stops answering part-way through an exchange; `frozen` holds back every
/// answer, as a frozen host whose kernel still acknowledges the bytes sent to it.
struct Relay {
    port: u16,
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn relay_to(server_port: u16) -> Relay {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (holding, freezing) = (held.clone(), frozen.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", server_port))
                .await
                .unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let (holding, freezing) = (holding.clone(), freezing.clone());
            tokio::spawn(async move {
                let mut buf = vec![0; 16 * 1024];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Armed, it holds the server's answer to a BEGIN (its command tag).
                    while freezing.load(Ordering::SeqCst)
                        || holding.load(Ordering::SeqCst)
                            && buf[..n].windows(6).any(|w| w == b"BEGIN\0")
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Relay { port, held, frozen }
}

/// A store reached through a [`Relay`] to `backend`'s server, with `timeout_ms` as its deadline.
async fn store_behind_a_relay(
    backend: &backends::Backend,
    max_connections: u32,
    timeout_ms: u64,
) -> (Store, Relay) {
    Store::connect(&settings(&backend.url))
        .await
        .unwrap()
        .close()
        .await;
    let (head, database) = backend.url.rsplit_once('/').unwrap();
    let (host, server_port) = head.rsplit_once(':').unwrap();
    let relay = relay_to(server_port.parse().unwrap()).await;
    let store = Store::connect(&StoreSettings {
        url: SecretString::from(format!("{host}:{}/{database}", relay.port)),
        max_connections: Some(max_connections),
        timeout_ms,
        ..Default::default()
    })
    .await
    .unwrap();
    (store, relay)
}

#[actix_web::test]
async fn a_transaction_cut_off_before_postgresql_answered_its_begin_leaves_none_open() {
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    // One connection, so the operation after the cut one runs on the same.
    let (store, relay) = store_behind_a_relay(&backend, 1, 300).await;
    let writes = || backend.count("SELECT writes FROM store_probe");
    let before = writes().await;
    relay.held.store(true, std::sync::atomic::Ordering::SeqCst);
    // An enqueue begins a transaction; the store's deadline drops it while its BEGIN is out.
    assert!(
        store
            .enqueue(&delivery("cut", "channel:1", 1))
            .await
            .is_err()
    );
    relay.held.store(false, std::sync::atomic::Ordering::SeqCst);
    store.take_a_write().await.unwrap();
    assert_eq!(
        writes().await,
        before + 1,
        "a write reported done is committed (not left in a transaction the cut BEGIN opened)"
    );
    assert_eq!(backend.count("SELECT COUNT(*) FROM deliveries").await, 0);
    store.close().await;
}

#[actix_web::test]
async fn the_outboxs_and_the_events_background_statements_are_held_to_the_store_deadline() {
    // A frozen database host: its kernel still takes the bytes, nothing answers. The outbox's
    // claim and prune, the events' high-water mark, a paused subscription delivery and the
    // replica clock check each give up at the deadline instead of holding their lane.
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let (store, relay) = store_behind_a_relay(&backend, 4, 300).await;
    store
        .enqueue(&delivery("frozen", "channel:1", 1_000))
        .await
        .unwrap();
    relay
        .frozen
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let gives_up = |what: &'static str, done: Result<(), StoreError>| {
        assert!(
            matches!(done, Err(StoreError::Unavailable(_))),
            "{what}: {done:?}"
        );
    };
    let within = std::time::Duration::from_secs(5);
    macro_rules! at_the_deadline {
        ($what:literal, $call:expr) => {{
            let done = tokio::time::timeout(within, $call)
                .await
                .unwrap_or_else(|_| panic!("{} still waits after {within:?}", $what));
            gives_up($what, done.map(drop));
        }};
    }
    at_the_deadline!("claim", store.claim("w", 2_000, 60_000));
    at_the_deadline!("prune", store.prune_targets(2_000));
    at_the_deadline!("high water", store.event_id_high_water());
    at_the_deadline!("clock", store.clock_ahead_ms());
    at_the_deadline!(
        "paused delivery",
        store.finish_while_disabled("frozen", "w", "sub", "disabled", 2_000)
    );
    relay
        .frozen
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The database answers again: the claim that was cut off was rolled back.
    let claimed = store.claim("w", 3_000, 60_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, "frozen");
    assert_eq!(claimed.attempts, 1);
    store.close().await;
}

#[actix_web::test]
async fn postgresql_sessions_opened_read_only_are_not_reused_once_it_takes_writes_again() {
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let store = Store::connect(&settings(&backend.url)).await.unwrap();
    store.take_a_write().await.unwrap();
    let database = backend.url.rsplit('/').next().unwrap().to_owned();
    // The database made read-only, its sessions ended: the pool's new ones start read-only.
    backend
        .execute(
            "SELECT 1",
            &format!("ALTER DATABASE {database} SET default_transaction_read_only = on"),
        )
        .await;
    backend
        .execute(
            "SELECT 1",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
    for _ in 0..3 {
        assert!(store.take_a_write().await.is_err());
    }
    // From a session that asks to write (the database's default would refuse it).
    let writer = sqlx::PgPool::connect(&format!(
        "{}?options=-c%20default_transaction_read_only%3Doff",
        backend.url
    ))
    .await
    .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {database} RESET default_transaction_read_only"
    ))
    .execute(&writer)
    .await
    .unwrap();
    writer.close().await;
    // The sessions that started read-only are closed, not handed out again: every write,
    // the first one included, is taken.
    for attempt in 0..5 {
        let taken = store.take_a_write().await;
        assert!(taken.is_ok(), "write {attempt} after: {taken:?}");
    }
    store.close().await;
}
