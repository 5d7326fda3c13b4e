use std::sync::Arc;

use chrono::{Duration, Utc};

use super::conformance::{self, delivery, webhook};
use super::{EmbeddedStore, Store};
use crate::domain::WebhookId;
use crate::events::EventType;

#[tokio::test]
async fn the_embedded_store_passes_the_conformance_suite() {
    conformance::run_all(|| async { Arc::new(EmbeddedStore::in_memory().expect("open")) as Arc<dyn Store> }).await;
}

#[tokio::test]
async fn the_embedded_store_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = webhook("durable", &[EventType::TaskCreated]);
    let entry = delivery(hook.webhook_id, Utc::now());
    {
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store.create_webhook(&hook).await.expect("create");
        store.insert_delivery(&entry).await.expect("insert");
    }

    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");

    assert_eq!(reopened.get_webhook(hook.webhook_id).await.expect("get"), Some(hook));
    assert_eq!(reopened.subscribers(EventType::TaskCreated).await.expect("subs").len(), 1);
    assert_eq!(reopened.get_delivery(entry.webhook_id, entry.event_id).await.expect("get"), Some(entry));
}

#[tokio::test]
async fn expired_log_entries_are_purged() {
    let store = EmbeddedStore::in_memory().expect("open");
    let old = delivery(WebhookId::new(), Utc::now() - Duration::days(8));
    let fresh = delivery(WebhookId::new(), Utc::now());
    store.insert_delivery(&old).await.expect("insert");
    store.insert_delivery(&fresh).await.expect("insert");

    let purged = store.purge_expired(Utc::now()).await.expect("purge");

    assert_eq!(purged, 1);
    assert!(store.get_delivery(old.webhook_id, old.event_id).await.expect("get").is_none());
    assert!(store.get_delivery(fresh.webhook_id, fresh.event_id).await.expect("get").is_some());
}
