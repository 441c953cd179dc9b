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
use syno_chat_gateway::store::Store;
use syno_chat_gateway::store::deliveries::{Enqueued, EventKey};

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
    a_schema_newer_than_the_binary_refuses_to_start,
    |backend: Backend| async move {
        let store = Store::connect(&settings(&backend.url)).await.unwrap();
        store.close().await;
        backend.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (998, 'from the future', TRUE, X'00', 1)",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (998, 'from the future', TRUE, '\\x00', 1)",
    )
    .await;
        let error = Store::connect(&settings(&backend.url)).await.unwrap_err();
        assert!(error.contains("schema version 998"), "{error}");
        assert!(error.contains("newer than this binary"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
);

#[actix_web::test]
async fn the_sqlite_file_is_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
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
                    .finish(&row.id, "w", "delivered", now + 10, None, now + 10)
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
        assert!(
            !store
                .finish("a1", "w1", "delivered", now + 21, None, now + 21)
                .await
                .unwrap()
        );
        store
            .record_post("a1", 0, &[(0, Some(42))], now + 21)
            .await
            .unwrap();
        assert!(store.post_is_recorded(42).await.unwrap());
        assert!(
            store
                .finish("a1", "w2", "delivered", now + 21, None, now + 21)
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
        assert_eq!(a1.state, "delivered");
        assert_eq!(a1.posts, [(0, Some(42))]);
        // A failed one can be retried, a queued one cancelled; other states are refused.
        use syno_chat_gateway::store::deliveries::Transition;
        assert!(
            store
                .finish("b1", "w2", "failed", now + 41, Some("{}"), now + 41)
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
            Transition::WrongState("cancelled".to_owned())
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
            .deliveries(Some("queued"), None, 10)
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
        assert!(store.post_is_recorded(51).await.unwrap());
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
                .record_post(&row.id, 0, &[(0, Some(row.id[3..].parse().unwrap()))], now)
                .await
                .unwrap();
            assert!(
                store
                    .finish(&row.id, "w", "delivered", now, None, now)
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
                .finish(&claimed[0], "w", "failed", now, Some("{}"), now)
                .await
                .unwrap()
        );
        assert!(
            store
                .finish(
                    &claimed[1],
                    "w",
                    "delivered",
                    now + 5_000,
                    None,
                    now + 5_000
                )
                .await
                .unwrap()
        );
        assert_eq!(store.purge_deliveries(now + 1_000).await.unwrap(), 507);
        let mut left: Vec<String> = store
            .deliveries(None, None, 500)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|d| d.state)
            .collect();
        left.sort();
        // Unfinished ones stay whatever their age, and so does one finished after the cutoff.
        assert_eq!(left, ["delivered", "queued", "sending"]);
        // Their posts went with them: post 7 is no longer owned by a delivery.
        assert!(!store.post_is_recorded(7).await.unwrap());
        assert_eq!(store.purge_deliveries(now + 1_000).await.unwrap(), 0);
    }
);

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
        let first = store.claim("a", now, now + 60_000).await.unwrap().unwrap();
        assert_eq!(first.id, "r1");
        assert!(
            store
                .finish("r1", "a", "failed", now, Some("{}"), now)
                .await
                .unwrap()
        );
        let second = store.claim("a", now, now + 60_000).await.unwrap().unwrap();
        assert_eq!(second.id, "r2");
        // r1 retried by hand while r2 is being sent: the older one is the head again, but
        // another worker (another replica) must not send it beside r2.
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
                .finish("r2", "a", "delivered", now + 3, None, now + 3)
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
