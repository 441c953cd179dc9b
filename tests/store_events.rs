//! The events table on both back-ends: ids, deduplication per post, filters, retention.

#[path = "support/backends.rs"]
mod backends;
#[path = "support/postgres.rs"]
mod postgres;

use secrecy::SecretString;
use syno_chat_gateway::config::StoreSettings;
use syno_chat_gateway::events::{EventFilter, EventKind, NewEvent};
use syno_chat_gateway::store::Store;
use syno_chat_gateway::store::deliveries::DeliveryState;

async fn open(url: &str) -> Store {
    Store::connect(&StoreSettings {
        url: SecretString::from(url.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn event(inbound: &str, kind: EventKind, channel_id: i64, post_id: Option<i64>) -> NewEvent {
    NewEvent {
        kind,
        inbound: inbound.to_owned(),
        channel_id: Some(channel_id),
        channel_name: Some("general".into()),
        channel_type: Some(1),
        user_id: Some(3),
        username: Some("alice".into()),
        post_id,
        thread_id: Some(0),
        timestamp: Some(1_647_060_330_657),
        text: "hello".into(),
        trigger_word: None,
        command: None,
        button: None,
    }
}

/// An enabled subscription to every event, as created through the API.
fn subscription(id: &str) -> syno_chat_gateway::events::subscriptions::Subscription {
    syno_chat_gateway::events::subscriptions::Subscription {
        id: id.into(),
        url: "https://receiver.example.org/chat".into(),
        secret: SecretString::from("whsec_c2VjcmV0".to_owned()),
        filter: EventFilter::default(),
        respond: false,
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        last_delivered_event_id: None,
        created_at: 900,
        disabled_at: None,
        previous_secret: None,
        events_missed_through: None,
    }
}

/// A delivery of `e` to `s`, due at once, that never expires.
fn bare_delivery(
    s: &syno_chat_gateway::events::subscriptions::Subscription,
    e: &syno_chat_gateway::events::Event,
) -> syno_chat_gateway::store::subscriptions::SubscriptionDelivery {
    syno_chat_gateway::store::subscriptions::SubscriptionDelivery {
        id: format!("00000000-0000-4000-8000-{:012}", e.event_id),
        target: format!("subscription:{}", s.id),
        request: "{}".into(),
        body: "{}".into(),
        next_attempt_at: 0,
        expires_at: i64::MAX,
    }
}

backends::on_both!(
    events_get_increasing_ids_and_one_row_per_post,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        assert_eq!(store.latest_event_id().await.unwrap(), 0);
        let a = store
            .insert_event(&event("ops", EventKind::Message, 2, Some(10)), 1_000)
            .await
            .unwrap()
            .unwrap();
        let again = store
            .insert_event(&event("ops", EventKind::Message, 2, Some(10)), 1_001)
            .await
            .unwrap();
        assert_eq!(
            again, None,
            "the same post on the same inbound is stored once"
        );
        // The same post id on another inbound, and events without a post, are distinct.
        let b = store
            .insert_event(&event("other", EventKind::Message, 2, Some(10)), 1_002)
            .await
            .unwrap()
            .unwrap();
        let c = store
            .insert_event(&event("ops", EventKind::SlashCommand, 3, None), 1_003)
            .await
            .unwrap()
            .unwrap();
        let d = store
            .insert_event(&event("ops", EventKind::SlashCommand, 3, None), 1_004)
            .await
            .unwrap()
            .unwrap();
        assert!(a < b && b < c && c < d);
        assert_eq!(store.latest_event_id().await.unwrap(), d);

        let all = store
            .events_after(0, &EventFilter::default(), 100)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            [a, b, c, d]
        );
        assert_eq!(all[0].received_at, 1_000);
        assert_eq!(all[0].channel_name.as_deref(), Some("general"));
        assert_eq!(all[0].channel_type, Some(1));
        assert_eq!(all[0].timestamp, Some(1_647_060_330_657));
        let ids = |filter: EventFilter, after: i64, limit: i64| {
            let store = store.clone();
            async move {
                store
                    .events_after(after, &filter, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.event_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(EventFilter::default(), b, 100).await, [c, d]);
        assert_eq!(ids(EventFilter::default(), 0, 2).await, [a, b]);
        let by_inbound = EventFilter {
            inbound: Some("other".into()),
            ..Default::default()
        };
        assert_eq!(ids(by_inbound, 0, 100).await, [b]);
        let by_channel = EventFilter {
            channel_id: Some(3),
            ..Default::default()
        };
        assert_eq!(ids(by_channel, 0, 100).await, [c, d]);
        let by_kind = EventFilter {
            kind: Some(EventKind::Message),
            inbound: Some("ops".into()),
            ..Default::default()
        };
        assert_eq!(ids(by_kind, 0, 100).await, [a]);

        // Retention: what was received before the cut-off goes; ids are not reused.
        assert_eq!(store.events_purged_through().await.unwrap(), 0);
        assert_eq!(store.purge_events(1_003).await.unwrap(), 2);
        assert_eq!(ids(EventFilter::default(), 0, 100).await, [c, d]);
        assert_eq!(store.events_purged_through().await.unwrap(), b);
        let e = store
            .insert_event(&event("ops", EventKind::Message, 2, Some(11)), 2_000)
            .await
            .unwrap()
            .unwrap();
        assert!(e > d);
        // Every event purged: none is kept, and the ids handed out are still known.
        assert_eq!(store.purge_events(3_000).await.unwrap(), 3);
        // Nothing kept: a new reader starts after the purged events, not before them.
        assert_eq!(store.latest_event_id().await.unwrap(), e);
        assert_eq!(store.event_id_high_water().await.unwrap(), e);
        assert_eq!(store.events_purged_through().await.unwrap(), e);
        // A purge that deletes nothing leaves the mark where it was.
        assert_eq!(store.purge_events(3_000).await.unwrap(), 0);
        assert_eq!(store.events_purged_through().await.unwrap(), e);
        store.close().await;
    }
);

/// Events of posts 10 and 11, received at 1 000 and 1 001, and of post 12 at 2 000: their ids.
async fn two_old_events_and_a_new_one(store: &Store) -> Vec<i64> {
    let mut ids = Vec::new();
    for (post_id, received_at) in [(10, 1_000), (11, 1_001), (12, 2_000)] {
        let event = event("ops", EventKind::Message, 2, Some(post_id));
        ids.push(
            store
                .insert_event(&event, received_at)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    ids
}

backends::on_both!(
    a_subscription_disabled_past_the_retention_records_the_events_it_missed,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let paused = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e02");
        let target = format!("subscription:{}", paused.id);
        store.insert_subscription(&paused, 0).await.unwrap();
        let ids = two_old_events_and_a_new_one(&store).await;
        // Disabled, it holds nothing back: the events past the retention go.
        store
            .disable_subscription(&paused.id, &target, "paused", 1_100)
            .await
            .unwrap();
        assert_eq!(store.purge_events(1_500).await.unwrap(), 2);
        store
            .enable_subscription(&paused.id, &target, 2_100, i64::MAX)
            .await
            .unwrap();
        assert_eq!(
            store
                .fan_out(&paused.id, 100, 2_101, &bare_delivery)
                .await
                .unwrap(),
            1
        );
        let after = store.subscription(&paused.id).await.unwrap().unwrap();
        assert_eq!(after.events_missed_through, Some(ids[1]));
        // A subscription created after the purge starts at the newest event: it missed nothing.
        let other = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e03");
        store.insert_subscription(&other, ids[2]).await.unwrap();
        store
            .fan_out(&other.id, 100, 2_102, &bare_delivery)
            .await
            .unwrap();
        let other = store.subscription(&other.id).await.unwrap().unwrap();
        assert_eq!(other.events_missed_through, None);
        store.close().await;
    }
);

backends::on_both!(
    purging_events_forgets_the_subscription_deliveries_made_for_them,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let subscription = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e01");
        store.insert_subscription(&subscription, 0).await.unwrap();
        two_old_events_and_a_new_one(&store).await;
        // Past the retention but not yet fanned out (a gateway down longer than the
        // retention): kept for the subscription.
        assert_eq!(store.purge_events(1_500).await.unwrap(), 0);
        assert_eq!(
            store
                .fan_out(&subscription.id, 100, 2_001, &bare_delivery)
                .await
                .unwrap(),
            3
        );
        let recorded = "SELECT COUNT(*) FROM subscription_deliveries";
        assert_eq!(backend.count(recorded).await, 3);

        // Still queued, the deliveries keep their records (a backlog is read from them).
        assert_eq!(store.purge_events(1_500).await.unwrap(), 2);
        assert_eq!(backend.count(recorded).await, 3);
        // Made, they go at the next purge, though their events are gone already.
        let made = "UPDATE deliveries SET state = 'delivered', finished_at = 2000";
        backend.execute(made, made).await;
        assert_eq!(store.purge_events(1_500).await.unwrap(), 0);
        assert_eq!(
            backend.count(recorded).await,
            1,
            "only the kept event's record stays"
        );
        store.close().await;
    }
);

backends::on_both!(
    a_subscription_enabled_again_gets_the_deliveries_cancelled_when_it_was_disabled,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let id = "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e02";
        let target = format!("subscription:{id}");
        let subscription = subscription(id);
        store.insert_subscription(&subscription, 0).await.unwrap();
        for post_id in [10, 11] {
            let e = event("ops", EventKind::Message, 2, Some(post_id));
            store.insert_event(&e, 1_000).await.unwrap().unwrap();
        }
        assert_eq!(
            store.fan_out(id, 100, 1_001, &bare_delivery).await.unwrap(),
            2
        );
        let queued = format!(
            "SELECT COUNT(*) FROM deliveries WHERE target = '{target}' AND state = 'queued'"
        );

        // Two failures of three allowed, then a third: disabled, the queue cancelled.
        for (at, status, counted) in [
            (2_000, "500", (1, false)),
            (2_001, "500", (2, false)),
            (2_002, "503", (3, true)),
        ] {
            let failed = store.subscription_failed(id, &target, 3, status, at).await;
            assert_eq!(failed.unwrap(), counted, "{at}");
        }
        let disabled = store.subscription(id).await.unwrap().unwrap();
        assert!(!disabled.enabled);
        assert_eq!(disabled.disabled_at, Some(2_002));
        // Counted for the metrics; one an operator paused is not.
        let paused = self::subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e09");
        store.insert_subscription(&paused, 0).await.unwrap();
        store
            .disable_subscription(
                &paused.id,
                &format!("subscription:{}", paused.id),
                syno_chat_gateway::store::subscriptions::DISABLED_BY_OPERATOR,
                2_003,
            )
            .await
            .unwrap();
        assert_eq!(store.disabled_subscriptions().await.unwrap(), 1);
        assert!(disabled.disabled_reason.unwrap().contains("503"));
        assert_eq!(backend.count(&queued).await, 0);
        // Disabling again keeps the first reason and time.
        assert!(
            store
                .disable_subscription(id, &target, "again", 2_500)
                .await
                .unwrap()
        );
        assert_eq!(
            store.subscription(id).await.unwrap().unwrap().disabled_at,
            Some(2_002)
        );
        // Past the events' retention and the deliveries' (disabled for longer than both),
        // they stay: enabling the subscription queues them again, and their bodies are theirs.
        assert_eq!(store.purge_events(2_600).await.unwrap(), 2);
        assert_eq!(store.purge_deliveries(1_000_000).await.unwrap(), 0);
        // Nothing of it unfinished, its target goes with the housekeeping; enabling makes it
        // again, or the deliveries queued again would never be claimed.
        let its_target = format!("SELECT COUNT(*) FROM targets WHERE target = '{target}'");
        store.prune_targets(2_700).await.unwrap();
        assert_eq!(backend.count(&its_target).await, 0);

        assert_eq!(
            store
                .enable_subscription(id, &target, 3_000, 9_000)
                .await
                .unwrap(),
            Some(2)
        );
        let enabled = store.subscription(id).await.unwrap().unwrap();
        assert!(enabled.enabled);
        assert_eq!(
            (enabled.consecutive_failures, enabled.disabled_at),
            (0, None)
        );
        assert!(enabled.disabled_reason.is_none());
        assert_eq!(backend.count(&queued).await, 2);
        // Enabled already: nothing more; unknown: none.
        assert_eq!(
            store
                .enable_subscription(id, &target, 3_100, 9_000)
                .await
                .unwrap(),
            Some(0)
        );
        let unknown = "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e03";
        assert_eq!(
            store
                .enable_subscription(unknown, "subscription:x", 3_100, 9_000)
                .await
                .unwrap(),
            None
        );
        assert!(
            !store
                .disable_subscription(unknown, "subscription:x", "x", 3_100)
                .await
                .unwrap()
        );
        assert_eq!(backend.count(&its_target).await, 1);
        let claimed = store.claim("w", 3_200, 3_300).await.unwrap();
        assert_eq!(claimed.map(|row| row.target), Some(target));
        store.close().await;
    }
);

// The worker found the subscription disabled and records it. If an operator enabled it in the
// meantime (after the worker looked, before it recorded), enabling could not queue the delivery
// again (it was being sent), so recording queues it; otherwise it is failed, and enabling
// queues it.
backends::on_both!(
    a_delivery_found_disabled_is_queued_if_its_subscription_was_enabled_meanwhile,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let id = "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e04";
        let target = format!("subscription:{id}");
        store
            .insert_subscription(&subscription(id), 0)
            .await
            .unwrap();
        let e = event("ops", EventKind::Message, 2, Some(12));
        store.insert_event(&e, 1_000).await.unwrap().unwrap();
        assert_eq!(
            store.fan_out(id, 100, 1_001, &bare_delivery).await.unwrap(),
            1
        );
        let state =
            format!("SELECT COUNT(*) FROM deliveries WHERE target = '{target}' AND state = ");

        // Enabled again before the worker recorded what it saw: queued, due now.
        let claimed = store.claim("w", 2_000, 9_000).await.unwrap().unwrap();
        assert!(
            store
                .finish_while_disabled(&claimed.id, "w", id, "{}", 2_001)
                .await
                .unwrap()
        );
        let row = store.delivery(&claimed.id).await.unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.finished_at), ("queued", None));
        assert_eq!(row.next_attempt_at, 2_001);

        // Disabled while it was being sent, and still disabled: failed, and enabling queues it
        // again.
        let claimed = store.claim("w", 3_000, 9_000).await.unwrap().unwrap();
        assert!(
            store
                .disable_subscription(id, &target, "by hand", 2_500)
                .await
                .unwrap()
        );
        assert!(
            !store
                .finish_while_disabled(&claimed.id, "other", id, "{}", 3_001)
                .await
                .unwrap(),
            "only the claim's owner records"
        );
        assert!(
            store
                .finish_while_disabled(&claimed.id, "w", id, "{}", 3_001)
                .await
                .unwrap()
        );
        assert_eq!(backend.count(&format!("{state}'failed'")).await, 1);
        assert_eq!(
            store
                .enable_subscription(id, &target, 4_000, 9_000)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(backend.count(&format!("{state}'queued'")).await, 1);
        store.close().await;
    }
);

backends::on_both!(
    button_clicks_are_stored_whole_and_never_taken_for_a_repeated_post,
    |backend: Backend| async move {
        use syno_chat_gateway::events::{ButtonAction, ButtonClick};

        let store = open(&backend.url).await;
        let message = (2_i64 << 32) + 9;
        let mut click = event("helper", EventKind::ButtonClick, 2, Some(message));
        click.button = Some(ButtonClick {
            callback_id: Some("release-7".into()),
            actions: vec![ButtonAction {
                kind: Some("button".into()),
                name: Some("deploy".into()),
                value: Some("deploy web".into()),
                text: Some("Deploy".into()),
                style: Some("teal".into()),
            }],
        });
        let first = store.insert_event(&click, 1_000).await.unwrap();
        let second = store.insert_event(&click, 1_001).await.unwrap();
        assert!(
            first.is_some() && second.is_some() && first != second,
            "two clicks"
        );
        // The message itself, as a post, is still stored once.
        let post = event("helper", EventKind::Chatbot, 2, Some(message));
        assert!(store.insert_event(&post, 1_002).await.unwrap().is_some());
        assert!(store.insert_event(&post, 1_003).await.unwrap().is_none());
        let read = store
            .events_after(0, &EventFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(read.len(), 3);
        for e in &read[..2] {
            assert_eq!(e.post_id, Some(message));
            assert_eq!(e.button, click.button);
        }
        assert_eq!(read[2].button, None);
        store.close().await;
    }
);

/// PostgreSQL notifications are not durable: a replica whose listening connection is cut still
/// streams an event another replica stored meanwhile (it re-reads the table after reconnecting,
/// and every few seconds).
#[actix_web::test]
async fn a_replica_streams_events_stored_while_its_listener_was_cut_off() {
    let Some(backend) = backends::Backend::postgres() else {
        return;
    };
    let settings = syno_chat_gateway::config::Settings::default();
    let hub = syno_chat_gateway::events::Events::new(open(&backend.url).await, &settings)
        .await
        .unwrap();
    hub.start().await.unwrap();
    let mut live = hub.subscribe();
    let other_replica = open(&backend.url).await;
    for round in 0..3 {
        let listening = "SELECT COUNT(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND query ILIKE 'LISTEN%'";
        assert_eq!(
            backend.count(listening).await,
            1,
            "round {round}: one listener"
        );
        backend
            .execute(
                "SELECT 1",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .await;
        let id = other_replica
            .insert_event(&event("ops", EventKind::Message, 2, Some(round)), 1_000)
            .await
            .unwrap()
            .unwrap();
        let seen = tokio::time::timeout(std::time::Duration::from_secs(15), live.recv())
            .await
            .unwrap_or_else(|_| panic!("round {round}: event {id} never streamed"))
            .unwrap();
        assert_eq!(seen.event_id, id);
    }
    other_replica.close().await;
}

// Text PostgreSQL cannot hold (a NUL character) is the caller's value, not a store outage:
// refused as such (answered 4xx), never taken for "unavailable, try again".
backends::on_both!(
    a_value_the_database_cannot_hold_is_refused_not_unavailable,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let mut e = event("ops", EventKind::Message, 2, Some(77));
        e.text = "a\0b".into();
        let stored = store.insert_event(&e, 1_000).await;
        if backend.postgres {
            assert!(
                matches!(
                    stored,
                    Err(syno_chat_gateway::store::StoreError::Refused(_))
                ),
                "{stored:?}"
            );
        } else {
            assert!(stored.is_ok(), "{stored:?}");
        }
        store.close().await;
    }
);

// A rotation keeps the replaced secret beside the new one until the grace ends.
backends::on_both!(
    a_rotated_secret_keeps_the_one_it_replaced_for_the_grace,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let first = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e04");
        store.insert_subscription(&first, 0).await.unwrap();
        let new = SecretString::from("whsec_bmV3LXNlY3JldC1mb3ItdGhlLXRlc3Q=".to_owned());
        assert!(
            store
                .rotate_subscription_secret(&first.id, &new, Some(5_000))
                .await
                .unwrap()
        );
        let rotated = store.subscription(&first.id).await.unwrap().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(rotated.secret.expose_secret(), new.expose_secret());
        let (previous, until) = rotated.previous_secret.unwrap();
        assert_eq!(previous.expose_secret(), first.secret.expose_secret());
        assert_eq!(until, 5_000);
        assert!(
            !store
                .rotate_subscription_secret(
                    "6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e05",
                    &new,
                    Some(5_000)
                )
                .await
                .unwrap()
        );
        // Once its grace has ended the replaced secret is dropped, not kept at rest.
        assert_eq!(store.forget_replaced_secrets(5_000).await.unwrap(), 0);
        assert_eq!(store.forget_replaced_secrets(5_001).await.unwrap(), 1);
        let forgotten = store.subscription(&first.id).await.unwrap().unwrap();
        assert!(forgotten.previous_secret.is_none());
        // Rotated without a grace (it leaked): the replaced one is not kept at all.
        let newer = SecretString::from("whsec_bmV3ZXItc2VjcmV0LWZvci10aGUtdGVzdA==".to_owned());
        assert!(
            store
                .rotate_subscription_secret(&first.id, &newer, None)
                .await
                .unwrap()
        );
        let rotated = store.subscription(&first.id).await.unwrap().unwrap();
        assert_eq!(rotated.secret.expose_secret(), newer.expose_secret());
        assert!(rotated.previous_secret.is_none());
        store.close().await;
    }
);

backends::on_both!(
    a_backlog_is_an_unfinished_delivery_of_an_earlier_event,
    |backend: Backend| async move {
        let store = open(&backend.url).await;
        let (a, b) = (
            subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e21"),
            subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e22"),
        );
        let build = |s: &syno_chat_gateway::events::subscriptions::Subscription,
                     e: &syno_chat_gateway::events::Event| {
            syno_chat_gateway::store::subscriptions::SubscriptionDelivery {
                id: format!("{}-{}", s.id, e.event_id),
                ..bare_delivery(s, e)
            }
        };
        for s in [&a, &b] {
            store.insert_subscription(s, 0).await.unwrap();
        }
        let mut ids = Vec::new();
        for post_id in [10, 11] {
            let e = event("ops", EventKind::Message, 2, Some(post_id));
            ids.push(store.insert_event(&e, 1_000).await.unwrap().unwrap());
        }
        for s in [&a, &b] {
            assert_eq!(store.fan_out(&s.id, 100, 1_001, &build).await.unwrap(), 2);
        }
        let backlog = |s: &str, event: i64| {
            let (store, s) = (store.clone(), s.to_owned());
            async move { store.subscription_has_backlog(&s, event).await.unwrap() }
        };
        // Queued and never tried (its synchronous call running, or about to be made by another
        // request or replica): the later event waits behind it all the same.
        assert!(backlog(&a.id, ids[1]).await);
        store.note_reply_missed(&a.id, ids[0]).await.unwrap();
        assert!(backlog(&a.id, ids[1]).await);
        assert!(!backlog(&a.id, ids[0]).await, "only earlier events count");
        // Being sent counts; delivered does not; another subscription's does not count.
        let row = store.claim("w", 2_000, 60_000).await.unwrap().unwrap();
        assert_eq!(row.id, format!("{}-{}", a.id, ids[0]));
        let other = store.claim("w", 2_000, 60_000).await.unwrap().unwrap();
        assert_eq!(other.id, format!("{}-{}", b.id, ids[0]));
        assert!(
            store
                .finish(&other.id, "w", DeliveryState::Delivered, 2_000, None, 2_000)
                .await
                .unwrap()
        );
        assert!(backlog(&a.id, ids[1]).await);
        assert!(!backlog(&b.id, ids[1]).await, "another subscription's");
        assert!(
            store
                .finish(&row.id, "w", DeliveryState::Delivered, 2_001, None, 2_001)
                .await
                .unwrap()
        );
        assert!(!backlog(&a.id, ids[1]).await);
        store.close().await;
    }
);

/// A secret replaced or deleted in SQLite is overwritten where it was, not left in the page's
/// free space (or a free page) of the file or in its write-ahead log until something reuses
/// them: a copy of the files (a backup) does not hold it.
#[actix_rt::test]
async fn a_replaced_secret_is_not_left_in_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&format!("sqlite://{}", path.display())).await;
    let mut first = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e31");
    let old = "whsec_b2xkLXNlY3JldC10aGF0LWxlYWtlZC0xMjM0NTY3OA==";
    first.secret = SecretString::from(old.to_owned());
    store.insert_subscription(&first, 0).await.unwrap();
    let mut second = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e32");
    let deleted = "whsec_ZGVsZXRlZC1zdWJzY3JpcHRpb24tc2VjcmV0LTk4NzY=";
    second.secret = SecretString::from(deleted.to_owned());
    store.insert_subscription(&second, 0).await.unwrap();
    let new = SecretString::from("whsec_bmV3LXNlY3JldA==".to_owned());
    assert!(
        store
            .rotate_subscription_secret(&first.id, &new, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_subscription(&second.id, &format!("subscription:{}", second.id), 0)
            .await
            .unwrap()
    );
    // Neither the file nor its write-ahead log (which held the page as inserted) has it.
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let file = std::fs::read(&path).unwrap();
        for secret in [old, deleted] {
            let found = file.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} is still in {}", path.display());
        }
        files += 1;
    }
    assert!(files >= 2, "the database and its log");
    let current = store.subscription(&first.id).await.unwrap().unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(current.secret.expose_secret(), new.expose_secret());
    store.close().await;
}

/// A reader holding the SQLite file open (a backup tool's transaction) does not make a secret's
/// rotation, or the writes around it, wait; the old secret leaves the files once it is done.
#[actix_rt::test]
async fn a_reader_holding_the_log_does_not_hold_a_rotation() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&format!("sqlite://{}", path.display())).await;
    let mut first = subscription("6f1c1d9e-8a4b-4d7e-9a55-2f0c6b8f1e41");
    let old = "whsec_cmVhZGVyLWhlbGQtc2VjcmV0LXRoYXQtbGVha2VkLTQy";
    first.secret = SecretString::from(old.to_owned());
    store.insert_subscription(&first, 0).await.unwrap();
    let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    let _: (i64,) = sqlx::query_as("SELECT count(*) FROM subscriptions")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let newer = SecretString::from("whsec_bmV3ZXItb25l".to_owned());
    assert!(
        store
            .rotate_subscription_secret(&first.id, &newer, None)
            .await
            .unwrap()
    );
    // The busy timeout is 5 s: a rotation that waited for the reader took all of it.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    sqlx::query("COMMIT").execute(&mut reader).await.unwrap();
    reader.close().await.unwrap();
    // The next change to a secret, with no reader left, empties the log.
    let newest = SecretString::from("whsec_bmV3ZXN0LW9uZQ==".to_owned());
    assert!(
        store
            .rotate_subscription_secret(&first.id, &newest, None)
            .await
            .unwrap()
    );
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let file = std::fs::read(&path).unwrap();
        let found = file.windows(old.len()).any(|w| w == old.as_bytes());
        assert!(!found, "the replaced secret is still in {}", path.display());
    }
    store.close().await;
}

backends::on_both!(
    a_long_retention_purge_goes_in_batches_and_leaves_nothing_behind,
    |backend: Backend| async move {
        // After a pause, or a retention made shorter: thousands of events past it at once.
        // Each batch is a transaction of its own, and together they purge what one did.
        let store = open(&backend.url).await;
        let insert = "INSERT INTO events (inbound, kind, text, received_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             SELECT 'ops', 'message', 'old', i FROM n";
        let insert_pg = "INSERT INTO events (inbound, kind, text, received_at) \
             SELECT 'ops', 'message', 'old', i FROM generate_series(1, 2500) AS i";
        backend.execute(insert, insert_pg).await;
        let kept = store
            .insert_event(&event("ops", EventKind::Message, 2, Some(10)), 5_000)
            .await
            .unwrap()
            .unwrap();
        let old_through = kept - 1;
        assert_eq!(store.purge_events(4_000).await.unwrap(), 2_500);
        assert_eq!(backend.count("SELECT COUNT(*) FROM events").await, 1);
        assert_eq!(store.events_purged_through().await.unwrap(), old_through);
        assert_eq!(store.latest_event_id().await.unwrap(), kept);
        assert_eq!(store.purge_events(4_000).await.unwrap(), 0);
        store.close().await;
    }
);
