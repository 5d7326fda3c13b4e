use std::sync::Arc;

use chrono::{Duration, Utc};

use super::conformance::{self, delivery, webhook};
use super::{EmbeddedStore, PageRequest, Store};
use crate::domain::{DeliveryState, WebhookId};
use crate::events::EventType;

#[tokio::test]
async fn the_embedded_store_passes_the_conformance_suite() {
    conformance::run_all(|| async { Arc::new(EmbeddedStore::in_memory().expect("open")) as Arc<dyn Store> }).await;
}

#[tokio::test]
async fn the_file_backed_embedded_store_passes_the_conformance_suite() {
    // A file store reads on its own connection; an in-memory one does not.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = 0;
    conformance::run_all(|| {
        stores += 1;
        let path = dir.path().join(stores.to_string());
        async move { Arc::new(EmbeddedStore::open(&path).expect("open")) as Arc<dyn Store> }
    })
    .await;
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

#[tokio::test]
async fn an_event_payload_is_stored_once_however_many_webhooks_it_goes_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let mut first = delivery(WebhookId::new(), Utc::now());
    first.envelope.event = serde_json::json!({"marker": "PAYLOAD-MARKER"}).into();
    for webhook_id in [first.webhook_id, WebhookId::new(), WebhookId::new()] {
        let mut entry = first.clone();
        entry.webhook_id = webhook_id;
        assert!(store.insert_delivery(&entry).await.expect("insert"));
    }

    let raw = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
    let payload_rows: i64 = raw
        .query_row("SELECT count(*) FROM events WHERE payload LIKE '%PAYLOAD-MARKER%'", [], |row| row.get(0))
        .unwrap();
    let entries_with_payload: i64 = raw
        .query_row("SELECT count(*) FROM deliveries WHERE record LIKE '%PAYLOAD-MARKER%'", [], |row| row.get(0))
        .unwrap();

    assert_eq!(payload_rows, 1);
    assert_eq!(entries_with_payload, 0);
    assert_eq!(store.get_delivery(first.webhook_id, first.event_id).await.expect("get"), Some(first));
}

/// Three entries of one event, to three webhooks; the last one's payload differs (a producer
/// reused the event id), as stores written before an upgrade may hold.
fn entries_of_one_event() -> [crate::domain::DeliveryLog; 3] {
    let entry = delivery(WebhookId::new(), Utc::now());
    let mut same_event = entry.clone();
    same_event.webhook_id = WebhookId::new();
    let mut reused_id = entry.clone();
    reused_id.webhook_id = WebhookId::new();
    reused_id.envelope.event = serde_json::json!({"a": "different event under the same id"}).into();
    [entry, same_event, reused_id]
}

/// `created_key` as every schema version wrote it.
fn old_created_key(entry: &crate::domain::DeliveryLog) -> String {
    format!("{}#{}", entry.created_at.format("%Y-%m-%dT%H:%M:%S%.9fZ"), entry.event_id)
}

/// Opens (upgrades) the store, updates the first entry and checks that each reads back whole,
/// its own payload included. Returns the store and the updated first entry.
async fn open_upgraded_and_check_entries(
    dir: &std::path::Path,
    [entry, same_event, reused_id]: [&crate::domain::DeliveryLog; 3],
) -> (EmbeddedStore, crate::domain::DeliveryLog) {
    let store = EmbeddedStore::open(dir).expect("open upgrades");
    let mut updated = entry.clone();
    updated.version = 1;
    updated.state = DeliveryState::Failed;
    store.update_delivery(&updated).await.expect("update");

    assert_eq!(store.get_delivery(entry.webhook_id, entry.event_id).await.expect("get"), Some(updated.clone()));
    assert_eq!(store.get_delivery(same_event.webhook_id, entry.event_id).await.expect("get"), Some(same_event.clone()));
    assert_eq!(store.get_delivery(reused_id.webhook_id, entry.event_id).await.expect("get"), Some(reused_id.clone()));
    (store, updated)
}

#[tokio::test]
async fn a_store_from_before_payloads_moved_out_of_log_entries_is_upgraded_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [entry, same_event, reused_id] = entries_of_one_event();
    {
        // Log entries as version 0 stored them: the payload inline, no `events` table.
        let old = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
        old.execute_batch(
            "CREATE TABLE deliveries (webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, created_key TEXT NOT NULL,
                 state TEXT NOT NULL, version INTEGER NOT NULL, expires_at INTEGER NOT NULL, record TEXT NOT NULL,
                 PRIMARY KEY (webhook_id, event_id));",
        )
        .expect("old schema");
        for old_entry in [&entry, &same_event, &reused_id] {
            old.execute(
                "INSERT INTO deliveries (webhook_id, event_id, created_key, state, version, expires_at, record)
                 VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5)",
                rusqlite::params![
                    old_entry.webhook_id.to_string(),
                    old_entry.event_id.to_string(),
                    old_created_key(old_entry),
                    old_entry.expires_at,
                    serde_json::to_string(old_entry).unwrap()
                ],
            )
            .expect("old-style row");
        }
    }

    let (store, updated) = open_upgraded_and_check_entries(dir.path(), [&entry, &same_event, &reused_id]).await;
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).expect("opening again changes nothing");
    let listed = reopened.list_deliveries(entry.webhook_id, None, PageRequest { limit: 10, cursor: None }).await;
    assert_eq!(listed.expect("list").items, vec![updated]);
}

#[tokio::test]
async fn purging_forgets_expired_payloads_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    store.insert_delivery(&delivery(WebhookId::new(), Utc::now() - Duration::days(8))).await.expect("insert old");
    store.insert_delivery(&delivery(WebhookId::new(), Utc::now())).await.expect("insert fresh");

    store.purge_expired(Utc::now()).await.expect("purge");

    let raw = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
    let payloads: i64 = raw.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).unwrap();
    assert_eq!(payloads, 1);
}

#[tokio::test]
async fn many_concurrent_writers_all_land_and_stay_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let entries: Vec<_> = (0..300).map(|_| delivery(WebhookId::new(), Utc::now())).collect();
    let writes = entries.iter().map(|entry| {
        let store = store.clone();
        async move {
            assert!(store.insert_delivery(entry).await.expect("insert"));
            let mut done = entry.clone();
            done.version = 1;
            done.state = DeliveryState::Succeeded;
            store.update_delivery(&done).await.expect("update");
        }
    });
    futures_util::future::join_all(writes).await;
    drop(store);

    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
    for entry in &entries {
        let read = reopened.get_delivery(entry.webhook_id, entry.event_id).await.expect("get").expect("present");
        assert_eq!((read.state, read.version), (DeliveryState::Succeeded, 1));
    }
}

#[tokio::test]
async fn a_payload_stays_while_any_entry_of_its_event_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let old = delivery(WebhookId::new(), Utc::now() - Duration::days(8));
    let mut recent = old.clone();
    recent.webhook_id = WebhookId::new();
    recent.expires_at = (Utc::now() + Duration::days(1)).timestamp();
    store.insert_delivery(&old).await.expect("insert old");
    store.insert_delivery(&recent).await.expect("insert recent");

    assert_eq!(store.purge_expired(Utc::now()).await.expect("purge"), 1);

    assert!(store.get_delivery(old.webhook_id, old.event_id).await.expect("get old").is_none());
    assert_eq!(store.get_delivery(recent.webhook_id, recent.event_id).await.expect("get recent"), Some(recent));
}

#[tokio::test]
async fn committed_pages_reach_the_database_file_while_the_store_stays_open() {
    // SQLite's own checkpoint would wait for thousands of WAL pages; the checkpoint thread
    // copies them within a fraction of a second.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let file = dir.path().join("webhooks.db");
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let hook = webhook("checkpointed", &[EventType::TaskCreated]);
    let entries: Vec<_> = (0..300).map(|_| delivery(hook.webhook_id, Utc::now())).collect();
    store.insert_deliveries(&entries).await.expect("insert");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while size() < before + 100 * 1024 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert!(size() >= before + 100 * 1024, "the database file grew from {before} to only {} bytes", size());
}

#[tokio::test]
async fn a_store_from_before_entries_were_keyed_by_event_sequence_is_upgraded_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [entry, same_event, reused_id] = entries_of_one_event();
    let stored = |entry: &crate::domain::DeliveryLog| {
        let mut record = serde_json::to_value(entry).unwrap();
        record["envelope"]["event"] = serde_json::Value::Null;
        record.to_string()
    };
    {
        // Version 2's layout: entries keyed by (webhook id, event id), payloads by event id.
        let old = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
        old.execute_batch(
            "CREATE TABLE deliveries (webhook_id TEXT NOT NULL, event_id TEXT NOT NULL, created_key TEXT NOT NULL,
                 state TEXT NOT NULL, version INTEGER NOT NULL, expires_at INTEGER NOT NULL, record TEXT NOT NULL,
                 payload TEXT, PRIMARY KEY (webhook_id, event_id));
             CREATE INDEX deliveries_by_time ON deliveries (webhook_id, created_key);
             CREATE TABLE events (event_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, payload TEXT NOT NULL);
             CREATE TABLE tasks (task_id TEXT PRIMARY KEY, due_ms INTEGER NOT NULL, body TEXT NOT NULL,
                 receive_count INTEGER NOT NULL DEFAULT 0);
             PRAGMA user_version = 2;",
        )
        .expect("version 2 schema");
        old.execute(
            "INSERT INTO events (event_id, expires_at, payload) VALUES (?1, ?2, ?3)",
            rusqlite::params![entry.event_id.to_string(), entry.expires_at, entry.envelope.event.to_string()],
        )
        .expect("event row");
        for (old_entry, own_payload) in
            [(&entry, None), (&same_event, None), (&reused_id, Some(reused_id.envelope.event.to_string()))]
        {
            old.execute(
                "INSERT INTO deliveries (webhook_id, event_id, created_key, state, version, expires_at, record, payload)
                 VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?6)",
                rusqlite::params![
                    old_entry.webhook_id.to_string(),
                    old_entry.event_id.to_string(),
                    old_created_key(old_entry),
                    old_entry.expires_at,
                    stored(old_entry),
                    own_payload,
                ],
            )
            .expect("version 2 row");
        }
    }

    let (store, updated) = open_upgraded_and_check_entries(dir.path(), [&entry, &same_event, &reused_id]).await;
    // The (webhook, event) key survived the upgrade: the same delivery cannot be logged twice.
    assert!(!store.insert_delivery(&same_event).await.expect("insert again"));
    let listed = store.list_deliveries(entry.webhook_id, None, PageRequest { limit: 10, cursor: None }).await;
    assert_eq!(listed.expect("list").items, vec![updated]);
}

#[tokio::test]
async fn subscribers_follow_webhook_writes_made_by_another_process_on_the_same_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = EmbeddedStore::open(dir.path()).expect("open writer");
    let reader = EmbeddedStore::open(dir.path()).expect("open reader");
    let mut hook = webhook("shared file", &[EventType::TaskCreated]);
    assert!(reader.subscribers(EventType::TaskCreated).await.expect("subs").is_empty());

    writer.create_webhook(&hook).await.expect("create");
    let after_create = reader.subscribers(EventType::TaskCreated).await.expect("subs");
    hook.name = crate::domain::WebhookName::parse("renamed").expect("name");
    hook.version += 1;
    writer.update_webhook(&hook).await.expect("update");
    let after_update = reader.subscribers(EventType::TaskCreated).await.expect("subs");
    writer.delete_webhook(hook.webhook_id).await.expect("delete");
    let after_delete = reader.subscribers(EventType::TaskCreated).await.expect("subs");

    assert_eq!(after_create.len(), 1);
    assert_eq!(after_update.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["renamed"]);
    assert!(after_delete.is_empty());
}

#[test]
fn a_store_written_by_a_newer_build_is_refused_rather_than_written_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    rusqlite::Connection::open(dir.path().join("webhooks.db"))
        .expect("raw connection")
        .execute_batch("PRAGMA user_version = 99;")
        .expect("newer version");

    let refused = EmbeddedStore::open(dir.path()).err().map(|err| err.to_string()).unwrap_or_default();

    assert!(refused.contains("schema version 99, newer than this build's 3"), "{refused}");
    let raw = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
    let objects: i64 = raw.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0)).unwrap();
    let journal: String = raw.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!((objects, journal.as_str()), (0, "delete"), "nothing was created or switched");
}

#[tokio::test]
async fn subscribers_follow_a_webhook_removed_by_a_tool_that_knows_nothing_of_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let hook = webhook("removed by hand", &[EventType::TaskCreated]);
    store.create_webhook(&hook).await.expect("create");
    assert_eq!(store.subscribers(EventType::TaskCreated).await.expect("subs").len(), 1);

    let raw = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
    raw.execute_batch("DELETE FROM subscriptions; DELETE FROM webhooks;").expect("raw delete");

    assert!(store.subscribers(EventType::TaskCreated).await.expect("subs").is_empty());
}

#[test]
fn processes_opening_a_new_store_at_once_all_open_it_and_it_is_upgraded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| EmbeddedStore::open(dir.path()).map(|_| ()))).collect();
        handles.into_iter().map(|handle| handle.join().expect("thread")).collect()
    });

    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    let raw = rusqlite::Connection::open(dir.path().join("webhooks.db")).expect("raw connection");
    let version: i64 = raw.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, 3);
}
