//! The local-mode store: one SQLite file (WAL), so webhooks, logs and pending retries survive
//! a restart. Records are JSON columns next to the few columns queries need.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{Cursor, Page, PageRequest, PendingTask, Store, StoreError};
use crate::domain::{DeliveryLog, DeliveryState, Webhook, WebhookId};
use crate::events::EventType;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    event_type TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    PRIMARY KEY (event_type, webhook_id)
);
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_key TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (webhook_id, created_key);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    due_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_due ON tasks (due_ms);
";

#[derive(Clone)]
pub struct EmbeddedStore {
    connection: Arc<Mutex<Connection>>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir/webhooks.db`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let connection = Connection::open(dir.join("webhooks.db")).map_err(StoreError::backend)?;
        Self::init(connection)
    }

    /// A store that lives only as long as the process, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(StoreError::backend)?)
    }

    fn init(connection: Connection) -> Result<Self, StoreError> {
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
            .map_err(StoreError::backend)?;
        connection.execute_batch(SCHEMA).map_err(StoreError::backend)?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    /// Rows whose first column is a record's JSON, decoded after the lock is released so that
    /// concurrent deliveries wait on SQLite only, not on each other's JSON.
    fn read_records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let raw: Vec<String> = {
            let connection = self.lock()?;
            let mut statement = connection.prepare_cached(sql).map_err(db)?;
            let rows = statement.query_map(args, |row| row.get::<_, String>(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        raw.iter().map(|text| from_json(text)).collect()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.connection.lock().map_err(|_| StoreError::Backend("store lock poisoned".into()))
    }
}

fn db(err: rusqlite::Error) -> StoreError {
    StoreError::backend(err)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(StoreError::backend)
}

fn created_key(entry: &DeliveryLog) -> String {
    format!("{}#{}", entry.created_at.format("%Y-%m-%dT%H:%M:%S%.9fZ"), entry.event_id)
}

fn page<T>(mut items: Vec<T>, limit: usize, position: impl Fn(&T) -> String) -> Result<Page<T>, StoreError> {
    // One row past the limit was fetched only to learn whether another page exists.
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| Cursor::encode(&position(last))).transpose()?
    } else {
        None
    };
    Ok(Page { items, next })
}

fn insert_subscriptions(tx: &rusqlite::Transaction<'_>, webhook: &Webhook) -> Result<(), StoreError> {
    let id = webhook.webhook_id.to_string();
    for event_type in &webhook.event_types {
        tx.execute(
            "INSERT OR IGNORE INTO subscriptions (event_type, webhook_id) VALUES (?1, ?2)",
            params![event_type.as_str(), id],
        )
        .map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let record = to_json(webhook)?;
        let mut connection = self.lock()?;
        let tx = connection.transaction().map_err(db)?;
        let id = webhook.webhook_id.to_string();
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO webhooks (webhook_id, version, record) VALUES (?1, ?2, ?3)",
                params![id, webhook.version as i64, record],
            )
            .map_err(db)?;
        if inserted == 0 {
            return Err(StoreError::Conflict);
        }
        insert_subscriptions(&tx, webhook)?;
        tx.commit().map_err(db)
    }

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let mut found =
            self.read_records::<Webhook>("SELECT record FROM webhooks WHERE webhook_id = ?1", params![id.to_string()])?;
        Ok(found.pop())
    }

    async fn update_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let record = to_json(webhook)?;
        let mut connection = self.lock()?;
        let tx = connection.transaction().map_err(db)?;
        let id = webhook.webhook_id.to_string();
        let stored: Option<i64> = tx
            .query_row("SELECT version FROM webhooks WHERE webhook_id = ?1", params![id], |row| row.get(0))
            .optional()
            .map_err(db)?;
        match stored {
            None => return Err(StoreError::NotFound),
            Some(version) if version + 1 != webhook.version as i64 => {
                return Err(StoreError::Conflict);
            }
            Some(_) => {}
        }
        tx.execute(
            "UPDATE webhooks SET version = ?2, record = ?3 WHERE webhook_id = ?1",
            params![id, webhook.version as i64, record],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM subscriptions WHERE webhook_id = ?1", params![id]).map_err(db)?;
        insert_subscriptions(&tx, webhook)?;
        tx.commit().map_err(db)
    }

    async fn delete_webhook(&self, id: WebhookId) -> Result<(), StoreError> {
        let mut connection = self.lock()?;
        let tx = connection.transaction().map_err(db)?;
        let id = id.to_string();
        let deleted = tx.execute("DELETE FROM webhooks WHERE webhook_id = ?1", params![id]).map_err(db)?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("DELETE FROM subscriptions WHERE webhook_id = ?1", params![id]).map_err(db)?;
        tx.commit().map_err(db)
    }

    async fn list_webhooks(
        &self,
        event_type: Option<EventType>,
        request: PageRequest,
    ) -> Result<Page<Webhook>, StoreError> {
        let after: String = match &request.cursor {
            Some(cursor) => cursor.decode()?,
            None => String::new(),
        };
        let fetch = request.limit as i64 + 1;
        let items = match event_type {
            None => self.read_records::<Webhook>(
                "SELECT record FROM webhooks WHERE webhook_id > ?1 ORDER BY webhook_id LIMIT ?2",
                params![after, fetch],
            )?,
            Some(event_type) => self.read_records::<Webhook>(
                "SELECT w.record FROM subscriptions s JOIN webhooks w ON w.webhook_id = s.webhook_id
                 WHERE s.event_type = ?1 AND s.webhook_id > ?2 ORDER BY s.webhook_id LIMIT ?3",
                params![event_type.as_str(), after, fetch],
            )?,
        };
        page(items, request.limit, |w| w.webhook_id.to_string())
    }

    async fn subscribers(&self, event_type: EventType) -> Result<Vec<Webhook>, StoreError> {
        self.read_records::<Webhook>(
            "SELECT w.record FROM subscriptions s JOIN webhooks w ON w.webhook_id = s.webhook_id WHERE s.event_type = ?1",
            params![event_type.as_str()],
        )
    }

    async fn insert_delivery(&self, entry: &DeliveryLog) -> Result<bool, StoreError> {
        let record = to_json(entry)?;
        let connection = self.lock()?;
        let inserted = connection
            .prepare_cached("INSERT OR IGNORE INTO deliveries (webhook_id, event_id, created_key, state, version, expires_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .map_err(db)?
            .execute(
                params![
                    entry.webhook_id.to_string(),
                    entry.event_id.to_string(),
                    created_key(entry),
                    entry.state.as_str(),
                    entry.version as i64,
                    entry.expires_at,
                    record
                ],
            )
            .map_err(db)?;
        Ok(inserted == 1)
    }

    async fn get_delivery(&self, webhook_id: WebhookId, event_id: Uuid) -> Result<Option<DeliveryLog>, StoreError> {
        let mut found = self.read_records::<DeliveryLog>(
            "SELECT record FROM deliveries WHERE webhook_id = ?1 AND event_id = ?2",
            params![webhook_id.to_string(), event_id.to_string()],
        )?;
        Ok(found.pop())
    }

    async fn update_delivery(&self, entry: &DeliveryLog) -> Result<(), StoreError> {
        let record = to_json(entry)?;
        let connection = self.lock()?;
        let updated = connection
            .prepare_cached(
                "UPDATE deliveries SET state = ?3, version = ?4, expires_at = ?5, record = ?6
                 WHERE webhook_id = ?1 AND event_id = ?2 AND version = ?7",
            )
            .map_err(db)?
            .execute(params![
                entry.webhook_id.to_string(),
                entry.event_id.to_string(),
                entry.state.as_str(),
                entry.version as i64,
                entry.expires_at,
                record,
                entry.version as i64 - 1
            ])
            .map_err(db)?;
        if updated == 1 { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn list_deliveries(
        &self,
        webhook_id: WebhookId,
        state: Option<DeliveryState>,
        request: PageRequest,
    ) -> Result<Page<DeliveryLog>, StoreError> {
        // Newest first: everything strictly before the cursor's position.
        let before: String = match &request.cursor {
            Some(cursor) => cursor.decode()?,
            None => "\u{10FFFF}".to_owned(),
        };
        let fetch = request.limit as i64 + 1;
        let items = match state {
            None => self.read_records::<DeliveryLog>(
                "SELECT record FROM deliveries WHERE webhook_id = ?1 AND created_key < ?2 ORDER BY created_key DESC LIMIT ?3",
                params![webhook_id.to_string(), before, fetch],
            )?,
            Some(state) => self.read_records::<DeliveryLog>(
                "SELECT record FROM deliveries WHERE webhook_id = ?1 AND created_key < ?2 AND state = ?3
                 ORDER BY created_key DESC LIMIT ?4",
                params![webhook_id.to_string(), before, state.as_str(), fetch],
            )?,
        };
        page(items, request.limit, created_key)
    }

    async fn deliveries_since(
        &self,
        webhook_id: WebhookId,
        state: DeliveryState,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLog>, StoreError> {
        let from = since.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
        self.read_records::<DeliveryLog>(
            "SELECT record FROM deliveries WHERE webhook_id = ?1 AND created_key >= ?2 AND state = ?3 ORDER BY created_key",
            params![webhook_id.to_string(), from, state.as_str()],
        )
    }

    async fn put_task(&self, task: &PendingTask) -> Result<(), StoreError> {
        let connection = self.lock()?;
        connection
            .prepare_cached("INSERT OR REPLACE INTO tasks (task_id, due_ms, body) VALUES (?1, ?2, ?3)")
            .map_err(db)?
            .execute(params![task.task_id.to_string(), task.due_at.timestamp_millis(), task.body])
            .map_err(db)?;
        Ok(())
    }

    async fn due_tasks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PendingTask>, StoreError> {
        let connection = self.lock()?;
        let mut statement = connection
            .prepare_cached(
                "SELECT task_id, due_ms, body FROM tasks WHERE due_ms <= ?1 ORDER BY due_ms, task_id LIMIT ?2",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![now.timestamp_millis(), limit as i64], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
            })
            .map_err(db)?;
        rows.map(|row| {
            let (task_id, due_ms, body) = row.map_err(db)?;
            Ok(PendingTask {
                task_id: Uuid::parse_str(&task_id).map_err(StoreError::backend)?,
                due_at: DateTime::from_timestamp_millis(due_ms)
                    .ok_or_else(|| StoreError::Backend("bad due time".into()))?,
                body,
            })
        })
        .collect()
    }

    async fn next_task_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let connection = self.lock()?;
        let due: Option<i64> =
            connection.query_row("SELECT MIN(due_ms) FROM tasks", [], |row| row.get(0)).map_err(db)?;
        Ok(due.and_then(DateTime::from_timestamp_millis))
    }

    async fn delete_task(&self, task_id: Uuid) -> Result<(), StoreError> {
        let connection = self.lock()?;
        connection
            .prepare_cached("DELETE FROM tasks WHERE task_id = ?1")
            .map_err(db)?
            .execute(params![task_id.to_string()])
            .map_err(db)?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.lock()?.execute("DELETE FROM deliveries WHERE expires_at < ?1", params![now.timestamp()]).map_err(db)
    }
}
