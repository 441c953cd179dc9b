//! The events table on both back-ends: ids, deduplication per post, filters, retention.

#[path = "support/backends.rs"]
mod backends;
#[path = "support/postgres.rs"]
mod postgres;

use secrecy::SecretString;
use syno_chat_gateway::config::StoreSettings;
use syno_chat_gateway::events::{EventFilter, EventKind, NewEvent};
use syno_chat_gateway::store::Store;

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
        user_id: Some(3),
        username: Some("alice".into()),
        post_id,
        thread_id: Some(0),
        timestamp: Some(1_647_060_330_657),
        text: "hello".into(),
        trigger_word: None,
        command: None,
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
        assert_eq!(store.purge_events(1_003).await.unwrap(), 2);
        assert_eq!(ids(EventFilter::default(), 0, 100).await, [c, d]);
        let e = store
            .insert_event(&event("ops", EventKind::Message, 2, Some(11)), 2_000)
            .await
            .unwrap()
            .unwrap();
        assert!(e > d);
        store.close().await;
    }
);
