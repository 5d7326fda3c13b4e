//! The local-mode store: one SQLite file (WAL), so webhooks, logs and pending retries survive
//! a restart. Records are JSON columns next to the few columns queries need. An event's
//! payload is stored once in `events`, not in each of its subscribers' log entries: a log
//! entry is rewritten on every attempt, and the payload is most of its size.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Cursor, Page, PageRequest, Store, StoreError};
use crate::domain::{Attempt, DeliveryLog, DeliveryState, EventEnvelope, EventPattern, Gcra, Webhook, WebhookId};
use crate::events::EventType;

/// The first release's schema; [`migrate`] brings it up to date.
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
CREATE TABLE IF NOT EXISTS failures (
    webhook_id TEXT PRIMARY KEY,
    since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limits (
    webhook_id TEXT PRIMARY KEY,
    tat_ns INTEGER NOT NULL
);
";

/// All SQLite work runs on one thread that owns the connection. Callers hand it jobs and await
/// the answer, so no async worker ever blocks on SQLite, and the thread commits every job that
/// queued up meanwhile in one transaction (group commit): under load, concurrent deliveries
/// share a commit instead of queueing for one each. A job is answered only after the commit
/// that holds its writes. (WAL with `synchronous = NORMAL`: a commit survives the process
/// crashing at any point; an OS crash or power loss can undo the last few.)
///
/// Reads of a file store run on a second connection, on the caller's thread: WAL lets it read
/// committed data while the store thread writes, and a read then costs no thread hand-off
/// (two wake-ups, which dominate a lookup on an idle machine).
///
/// Checkpoints (copying committed WAL frames into the database file, then syncing both) run on
/// a third connection, on a thread of their own every [`CHECKPOINT_EVERY`]: off the store
/// thread, so commits never wait for one, and a page rewritten by many commits in between (an
/// index's last page) is copied and synced once, not once per 1 000 frames as SQLite's own
/// automatic checkpoint would.
#[derive(Clone)]
pub struct EmbeddedStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
    reader: Option<Arc<Mutex<Connection>>>,
    /// Dropped with the last handle to the store, which stops the checkpoint thread.
    open: Option<Arc<mpsc::Sender<()>>>,
    subscribers: Arc<SubscriberCache>,
}

/// Each event type's subscribers as last read, and the webhooks generation they were read at: a
/// counter that every write to `webhooks` or `subscriptions` raises, by trigger, in its own
/// transaction. A lookup reads the generation, one small row, and reuses the list while it is
/// unchanged; another process writing the same file raises it too, so no write is missed.
#[derive(Default)]
struct SubscriberCache(Mutex<Option<(i64, SubscriberLists)>>);

type SubscriberLists = std::collections::HashMap<EventType, Vec<Webhook>>;

impl SubscriberCache {
    fn get(&self, generation: i64, event_type: EventType) -> Option<Vec<Webhook>> {
        let cached = self.0.lock().ok()?;
        match cached.as_ref() {
            Some((at, lists)) if *at == generation => lists.get(&event_type).cloned(),
            _ => None,
        }
    }

    /// Keeps `list`, read after `generation` was: if a write came in between, the list is newer
    /// than the generation says, and the next lookup reads it again.
    fn put(&self, generation: i64, event_type: EventType, list: &[Webhook]) {
        let Ok(mut cached) = self.0.lock() else { return };
        match cached.as_mut() {
            Some((at, lists)) if *at == generation => {
                lists.insert(event_type, list.to_vec());
            }
            _ => *cached = Some((generation, [(event_type, list.to_vec())].into_iter().collect())),
        }
    }
}

/// Puts the file in WAL mode. SQLite refuses the switch at once, without its busy handler,
/// while another connection (another process opening the same new store) holds a lock, so it
/// is tried again for as long as the busy timeout.
fn into_wal(connection: &Connection) -> Result<(), StoreError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(err)
                if matches!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < until =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) => return Err(db(err)),
        }
    }
}

/// How often the checkpoint thread copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// How large the WAL may grow (in 4 KiB pages) before a commit checkpoints it itself: a
/// backstop, should the checkpoint thread fall behind or fail.
const WAL_BACKSTOP_PAGES: u32 = 25_000;

/// The checkpoint thread: a passive checkpoint (it never blocks the writer or the readers)
/// every [`CHECKPOINT_EVERY`], until every handle to the store is gone. A failure (full disk)
/// is logged once until a checkpoint succeeds again; the frames stay in the WAL meanwhile.
fn checkpoint_until_closed(connection: &Connection, closed: &mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CHECKPOINT_EVERY) {
        match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("store: checkpoints work again");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "store: checkpoint failed; committed data stays in the WAL until one succeeds");
            }
            Err(_) => {}
        }
    }
}

/// One caller's work on the connection and the channel that answers it.
trait Job: Send {
    /// Runs the work; returns how to answer the caller once the commit outcome is known.
    fn run(self: Box<Self>, connection: &Connection) -> Answer;
    /// Answers without running: the transaction could not start.
    fn refuse(self: Box<Self>, err: &StoreError);
}

type Answer = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

struct Pending<T, F> {
    work: F,
    /// Whether the work's writes must stand or fall together. Costs a savepoint, which copies
    /// every page the work touches to a sub-journal, so single-statement work goes without.
    atomic: bool,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(self: Box<Self>, connection: &Connection) -> Answer {
        let Pending { work, atomic, reply } = *self;
        let result = if atomic { atomically(connection, work) } else { contained(connection, work) };
        Box::new(move |committed: Result<(), &StoreError>| {
            let _ = reply.send(match committed {
                Ok(()) => result,
                Err(err) => Err(transaction_failed("commit failed", err)),
            });
        })
    }

    fn refuse(self: Box<Self>, err: &StoreError) {
        let _ = self.reply.send(Err(transaction_failed("cannot begin a transaction", err)));
    }
}

/// Most jobs committed together; bounds how long the first caller of a batch waits.
const MAX_JOBS_PER_COMMIT: usize = 512;

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir/webhooks.db`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("webhooks.db");
        let mut store = Self::init(Connection::open(&path).map_err(StoreError::backend)?)?;
        let reader = Connection::open(&path).map_err(StoreError::backend)?;
        reader.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;").map_err(StoreError::backend)?;
        store.reader = Some(Arc::new(Mutex::new(reader)));
        let checkpoints = Connection::open(&path).map_err(StoreError::backend)?;
        checkpoints.execute_batch("PRAGMA synchronous = NORMAL;").map_err(StoreError::backend)?;
        let (open, closed) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("webhooks-checkpoint".into())
            .spawn(move || checkpoint_until_closed(&checkpoints, &closed))
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        store.open = Some(Arc::new(open));
        Ok(store)
    }

    /// A store that lives only as long as the process, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(StoreError::backend)?)
    }

    fn init(connection: Connection) -> Result<Self, StoreError> {
        // First: another process may be opening (and upgrading) the same file this moment.
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(StoreError::backend)?;
        // Before anything is written, even the journal mode.
        refuse_newer(user_version(&connection)?)?;
        into_wal(&connection)?;
        connection
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;")
            .map_err(StoreError::backend)?;
        connection.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES).map_err(StoreError::backend)?;
        migrate(&connection)?;
        let (jobs, queued) = mpsc::channel();
        std::thread::Builder::new()
            .name("webhooks-store".into())
            .spawn(move || run_jobs(&connection, &queued))
            .map_err(|e| StoreError::Backend(format!("cannot start the store thread: {e}")))?;
        Ok(Self { jobs, reader: None, open: None, subscribers: Arc::default() })
    }

    /// Runs `work` on the store thread inside the next commit. For work that is one statement
    /// (atomic by itself), or whose partial effect is harmless.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(work, false).await
    }

    /// Runs `work` on the store thread inside the next commit, atomically: if it fails, none
    /// of its writes are kept.
    async fn run_atomically<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(work, true).await
    }

    /// Runs read-only `work` on the reader connection if there is one, else on the store
    /// thread (an in-memory store has only the one connection).
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.reader {
            Some(reader) => {
                let connection = reader.lock().map_err(|_| StoreError::Backend("store reader lock poisoned".into()))?;
                work(&connection)
            }
            None => self.run(work).await,
        }
    }

    async fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        atomic: bool,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Pending { work, atomic, reply }))
            .map_err(|_| StoreError::Backend("the store thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the store thread has stopped".into()))?
    }

    /// Rows whose first column is a record's JSON, decoded on the caller's thread so the store
    /// thread spends its time on SQLite only.
    async fn read_records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &'static str,
        args: Vec<Value>,
    ) -> Result<Vec<T>, StoreError> {
        let raw: Vec<String> = self
            .read(move |connection| {
                let mut statement = connection.prepare_cached(sql).map_err(db)?;
                let rows = statement.query_map(params_from_iter(args), |row| row.get::<_, String>(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            })
            .await?;
        raw.iter().map(|text| from_json(text)).collect()
    }
}

/// The least `expires_at` (unix seconds) of an entry still kept: the purge and the readers
/// agree on it, so an entry past retention is gone before the purge gets to it.
fn unexpired_from() -> Value {
    Value::Integer(Utc::now().timestamp())
}

impl EmbeddedStore {
    /// Log entries from a query whose columns are a record and its event's payload (or NULL).
    async fn read_deliveries(&self, sql: &'static str, args: Vec<Value>) -> Result<Vec<DeliveryLog>, StoreError> {
        let raw: Vec<(String, Option<String>)> = self
            .read(move |connection| {
                let mut statement = connection.prepare_cached(sql).map_err(db)?;
                let rows =
                    statement.query_map(params_from_iter(args), |row| Ok((row.get(0)?, row.get(1)?))).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            })
            .await?;
        raw.iter()
            .map(|(record, payload)| {
                let mut entry: DeliveryLog = from_json(record)?;
                let payload = payload.as_deref().ok_or_else(|| {
                    StoreError::Backend(format!(
                        "log entry {}/{} has no event payload",
                        entry.webhook_id, entry.event_id
                    ))
                })?;
                entry.envelope.event = from_json(payload)?;
                Ok(entry)
            })
            .collect()
    }
}

/// A log entry as stored: everything but the event payload, which `events` holds. The
/// destructuring in [`StoredDelivery::of`] names every field, so a field added to
/// `DeliveryLog` does not compile until it is stored here too.
#[derive(Serialize)]
struct StoredDelivery<'a> {
    webhook_id: &'a WebhookId,
    event_id: &'a Uuid,
    event_type: &'a EventType,
    state: &'a DeliveryState,
    try_count: u32,
    created_at: &'a DateTime<Utc>,
    updated_at: &'a DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: &'a Option<DateTime<Utc>>,
    attempts: &'a [Attempt],
    envelope: StoredEnvelope<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_until: &'a Option<DateTime<Utc>>,
    retry_scheduled: bool,
    expires_at: i64,
    version: u64,
}

#[derive(Serialize)]
struct StoredEnvelope<'a> {
    event_id: &'a Uuid,
    event_type: &'a EventType,
    /// Always null here: read back from `events`.
    event: (),
    instance_id: &'a Uuid,
    instance_name: &'a str,
    created_at: &'a DateTime<Utc>,
}

impl<'a> StoredDelivery<'a> {
    fn of(entry: &'a DeliveryLog) -> Self {
        let DeliveryLog {
            webhook_id,
            event_id,
            event_type,
            state,
            try_count,
            created_at,
            updated_at,
            next_attempt_at,
            attempts,
            envelope,
            lease_until,
            retry_scheduled,
            expires_at,
            version,
        } = entry;
        let EventEnvelope {
            event_id: envelope_event_id,
            event_type: envelope_type,
            event: _,
            instance_id,
            instance_name,
            created_at: envelope_created_at,
        } = envelope;
        Self {
            webhook_id,
            event_id,
            event_type,
            state,
            try_count: *try_count,
            created_at,
            updated_at,
            next_attempt_at,
            attempts,
            envelope: StoredEnvelope {
                event_id: envelope_event_id,
                event_type: envelope_type,
                event: (),
                instance_id,
                instance_name,
                created_at: envelope_created_at,
            },
            lease_until,
            retry_scheduled: *retry_scheduled,
            expires_at: *expires_at,
            version: *version,
        }
    }

    fn json(entry: &DeliveryLog) -> Result<String, StoreError> {
        to_json(&StoredDelivery::of(entry))
    }
}

/// The schema version [`migrate`] brings a store to.
const SCHEMA_VERSION: i64 = 3;

/// Brings the store to [`SCHEMA_VERSION`]: the first release's schema, then each change since,
/// by `PRAGMA user_version`. All of it runs in one transaction that reads the version itself,
/// so processes opening a store at once upgrade it once: the others wait, then find nothing
/// to do.
fn migrate(connection: &Connection) -> Result<(), StoreError> {
    // The write lock first, then the schema: a statement that read the schema before another
    // process changed it could not take the lock without failing at once.
    control(connection, "BEGIN IMMEDIATE")?;
    let upgraded = connection
        .execute_batch(SCHEMA)
        .map_err(db)
        .and_then(|()| user_version(connection))
        .and_then(|version| migrate_from(connection, version));
    match upgraded {
        Ok(()) => control(connection, "COMMIT"),
        Err(err) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

fn user_version(connection: &Connection) -> Result<i64, StoreError> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(db)
}

/// Refuses a store a newer build has laid out: its tables may be ones this build does not
/// know, and writing to them could lose what that build stored.
fn refuse_newer(version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the store is at schema version {version}, newer than this build's {SCHEMA_VERSION}: run a newer webhooks"
        )));
    }
    Ok(())
}

fn migrate_from(connection: &Connection, version: i64) -> Result<(), StoreError> {
    refuse_newer(version)?;
    if version < 1 {
        // Version 1 moves event payloads out of log entries into `events`. An entry whose
        // payload differs from its event's stored one (a producer reused an event id) keeps
        // its own in `deliveries.payload`.
        connection
            .execute_batch(
                "CREATE TABLE events (
                     event_id TEXT PRIMARY KEY,
                     expires_at INTEGER NOT NULL,
                     payload TEXT NOT NULL
                 );
                 ALTER TABLE deliveries ADD COLUMN payload TEXT;
                 INSERT INTO events (event_id, expires_at, payload)
                     SELECT event_id, MAX(expires_at), MIN(record -> '$.envelope.event') FROM deliveries
                     WHERE record -> '$.envelope.event' != 'null' GROUP BY event_id;
                 UPDATE deliveries SET payload = record -> '$.envelope.event'
                     WHERE record -> '$.envelope.event' != 'null'
                     AND record -> '$.envelope.event' != (SELECT e.payload FROM events e WHERE e.event_id = deliveries.event_id);
                 UPDATE deliveries SET record = json_set(record, '$.envelope.event', json('null'))
                     WHERE record -> '$.envelope.event' != 'null';",
            )
            .map_err(|err| StoreError::Backend(format!("cannot upgrade the store to version 1: {err}")))?;
    }
    if version < 2 {
        // Version 2 counts how often the local worker handed each task to the sender.
        connection
            .execute_batch("ALTER TABLE tasks ADD COLUMN receive_count INTEGER NOT NULL DEFAULT 0;")
            .map_err(|err| StoreError::Backend(format!("cannot upgrade the store to version 2: {err}")))?;
    }
    if version < 3 {
        // Version 3 keys log entries by (event, webhook) through the event's sequence number
        // instead of by (webhook, event id). Event ids are producers' random UUIDs, so an index
        // on them takes each new entry to a random page, and each commit wrote about one page
        // per entry for it alone; sequence numbers grow, so new entries share the last pages.
        // An entry whose event row is missing (none should be) gets one from its own payload.
        // `generations` counts the writes to webhooks and subscriptions (triggers, so a writer
        // that does not know of it counts too), so a process can keep the subscribers it read
        // for as long as nothing has written a webhook since.
        connection
            .execute_batch(
                "CREATE TABLE events_v3 (
                     seq INTEGER PRIMARY KEY,
                     event_id TEXT NOT NULL UNIQUE,
                     expires_at INTEGER NOT NULL,
                     payload TEXT NOT NULL
                 );
                 INSERT INTO events_v3 (event_id, expires_at, payload)
                     SELECT event_id, expires_at, payload FROM events ORDER BY rowid;
                 INSERT INTO events_v3 (event_id, expires_at, payload)
                     SELECT event_id, MAX(expires_at), COALESCE(MIN(payload), 'null') FROM deliveries
                     WHERE event_id NOT IN (SELECT event_id FROM events_v3) GROUP BY event_id;
                 CREATE TABLE deliveries_v3 (
                     event_seq INTEGER NOT NULL,
                     webhook_id TEXT NOT NULL,
                     created_key TEXT NOT NULL,
                     state TEXT NOT NULL,
                     version INTEGER NOT NULL,
                     expires_at INTEGER NOT NULL,
                     record TEXT NOT NULL,
                     payload TEXT,
                     PRIMARY KEY (event_seq, webhook_id)
                 );
                 INSERT INTO deliveries_v3
                         (event_seq, webhook_id, created_key, state, version, expires_at, record, payload)
                     SELECT e.seq, d.webhook_id, d.created_key, d.state, d.version, d.expires_at, d.record, d.payload
                     FROM deliveries d JOIN events_v3 e ON e.event_id = d.event_id ORDER BY e.seq;
                 DROP TABLE deliveries;
                 DROP TABLE events;
                 ALTER TABLE events_v3 RENAME TO events;
                 ALTER TABLE deliveries_v3 RENAME TO deliveries;
                 CREATE INDEX deliveries_by_time ON deliveries (webhook_id, created_key);
                 CREATE TABLE generations (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO generations (name, value) VALUES ('webhooks', 0);
                 CREATE TRIGGER webhooks_insert_raises_generation AFTER INSERT ON webhooks
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;
                 CREATE TRIGGER webhooks_update_raises_generation AFTER UPDATE ON webhooks
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;
                 CREATE TRIGGER webhooks_delete_raises_generation AFTER DELETE ON webhooks
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;
                 CREATE TRIGGER subscriptions_insert_raises_generation AFTER INSERT ON subscriptions
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;
                 CREATE TRIGGER subscriptions_update_raises_generation AFTER UPDATE ON subscriptions
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;
                 CREATE TRIGGER subscriptions_delete_raises_generation AFTER DELETE ON subscriptions
                     BEGIN UPDATE generations SET value = value + 1 WHERE name = 'webhooks'; END;",
            )
            .map_err(|err| StoreError::Backend(format!("cannot upgrade the store to version 3: {err}")))?;
    }
    if version < SCHEMA_VERSION {
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(db)?;
    }
    Ok(())
}

/// The store thread: takes the jobs that are waiting, runs them in one transaction, commits,
/// answers. Ends when every handle to the store is gone.
fn run_jobs(connection: &Connection, queued: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queued.recv() {
        let mut batch = std::iter::once(first).chain(queued.try_iter().take(MAX_JOBS_PER_COMMIT - 1));
        let mut answers: Vec<Answer> = Vec::new();
        if let Err(err) = begin(connection) {
            batch.for_each(|job| job.refuse(&err));
            continue;
        }
        while let Some(job) = batch.next() {
            answers.push(job.run(connection));
            if connection.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk full): nothing
                // written in it stands, so each job so far fails, and the rest get a new one.
                // SQLite rolls back on its own only for passing causes (full disk, I/O, busy).
                let lost = StoreError::Unavailable("the transaction was rolled back".into());
                answers.drain(..).for_each(|answer| answer(Err(&lost)));
                if let Err(err) = begin(connection) {
                    batch.by_ref().for_each(|job| job.refuse(&err));
                }
            }
        }
        if connection.is_autocommit() {
            continue;
        }
        let committed = control(connection, "COMMIT");
        if let Err(err) = &committed {
            tracing::error!(error = %err, jobs = answers.len(), "store: commit failed");
            let _ = connection.execute_batch("ROLLBACK");
        }
        for answer in answers {
            answer(committed.as_ref().map(|_| ()));
        }
    }
}

fn begin(connection: &Connection) -> Result<(), StoreError> {
    if !connection.is_autocommit() {
        // Left open by a failed COMMIT and ROLLBACK: start clean rather than fail forever.
        let _ = connection.execute_batch("ROLLBACK");
    }
    control(connection, "BEGIN IMMEDIATE").inspect_err(|err| tracing::error!(error = %err, "store: cannot begin"))
}

/// Runs one job so that a panic fails this job alone instead of stopping the store thread.
fn contained<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)))
        .unwrap_or_else(|_| Err(StoreError::Backend("a store operation panicked".into())))
}

/// Runs one job inside a savepoint, so its writes are kept only if it succeeds.
fn atomically<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    control(connection, "SAVEPOINT job")?;
    let result = contained(connection, work);
    if result.is_err()
        && let Err(err) = control(connection, "ROLLBACK TO job")
    {
        // The job's writes cannot be undone alone: undo the whole transaction (the caller
        // sees it gone and fails every job in it).
        tracing::error!(error = %err, "store: cannot roll back a failed operation");
        let _ = connection.execute_batch("ROLLBACK");
        return result;
    }
    control(connection, "RELEASE job")?;
    result
}

/// A transaction control statement, prepared once: they run several times per commit.
fn control(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    connection.prepare_cached(sql).map_err(db)?.execute([]).map_err(db).map(|_| ())
}

/// SQLite's failures that pass: the disk is full, the file is locked by another process or
/// cannot be read or written for now. The caller can retry later; anything else is a bug or a
/// corrupt file.
fn db(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
    match err.sqlite_error_code() {
        Some(DiskFull | DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen) => {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::backend(err),
    }
}

/// A failure of a whole transaction, for each job in it: passing if its cause was.
fn transaction_failed(context: &str, err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(detail) => StoreError::Unavailable(format!("{context}: {detail}")),
        other => StoreError::Backend(format!("{context}: {other}")),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(StoreError::backend)
}

/// RFC 3339 UTC with exactly nine fractional digits, so string order is time order.
fn sortable_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn created_key(entry: &DeliveryLog) -> String {
    format!("{}#{}", sortable_time(entry.created_at), entry.event_id)
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

fn insert_subscriptions(connection: &Connection, webhook: &Webhook) -> Result<(), StoreError> {
    let id = webhook.webhook_id.to_string();
    let mut insert = connection
        .prepare_cached("INSERT OR IGNORE INTO subscriptions (event_type, webhook_id) VALUES (?1, ?2)")
        .map_err(db)?;
    for event_type in &webhook.event_types {
        insert.execute(params![event_type.as_str(), id]).map_err(db)?;
    }
    Ok(())
}

fn text(value: impl ToString) -> Value {
    Value::Text(value.to_string())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let record = to_json(webhook)?;
        let webhook = webhook.clone();
        self.run_atomically(move |connection| {
            let id = webhook.webhook_id.to_string();
            let inserted = connection
                .prepare_cached("INSERT OR IGNORE INTO webhooks (webhook_id, version, record) VALUES (?1, ?2, ?3)")
                .map_err(db)?
                .execute(params![id, webhook.version as i64, record])
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::Conflict);
            }
            insert_subscriptions(connection, &webhook)
        })
        .await
    }

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let mut found =
            self.read_records::<Webhook>("SELECT record FROM webhooks WHERE webhook_id = ?1", vec![text(id)]).await?;
        Ok(found.pop())
    }

    async fn update_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let record = to_json(webhook)?;
        let webhook = webhook.clone();
        self.run_atomically(move |connection| {
            let id = webhook.webhook_id.to_string();
            let stored: Option<i64> = connection
                .prepare_cached("SELECT version FROM webhooks WHERE webhook_id = ?1")
                .map_err(db)?
                .query_row(params![id], |row| row.get(0))
                .optional()
                .map_err(db)?;
            match stored {
                None => return Err(StoreError::NotFound),
                Some(version) if version + 1 != webhook.version as i64 => return Err(StoreError::Conflict),
                Some(_) => {}
            }
            connection
                .prepare_cached("UPDATE webhooks SET version = ?2, record = ?3 WHERE webhook_id = ?1")
                .map_err(db)?
                .execute(params![id, webhook.version as i64, record])
                .map_err(db)?;
            connection
                .prepare_cached("DELETE FROM subscriptions WHERE webhook_id = ?1")
                .map_err(db)?
                .execute(params![id])
                .map_err(db)?;
            insert_subscriptions(connection, &webhook)
        })
        .await
    }

    async fn delete_webhook(&self, id: WebhookId) -> Result<(), StoreError> {
        self.run_atomically(move |connection| {
            let id = id.to_string();
            let deleted = connection.execute("DELETE FROM webhooks WHERE webhook_id = ?1", params![id]).map_err(db)?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            connection.execute("DELETE FROM subscriptions WHERE webhook_id = ?1", params![id]).map_err(db)?;
            connection.execute("DELETE FROM failures WHERE webhook_id = ?1", params![id]).map_err(db)?;
            connection.execute("DELETE FROM rate_limits WHERE webhook_id = ?1", params![id]).map_err(db)?;
            Ok(())
        })
        .await
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
        let fetch = Value::Integer(request.limit as i64 + 1);
        let items = match event_type {
            None => {
                self.read_records::<Webhook>(
                    "SELECT record FROM webhooks WHERE webhook_id > ?1 ORDER BY webhook_id LIMIT ?2",
                    vec![text(after), fetch],
                )
                .await?
            }
            Some(event_type) => {
                // Those on `"*"` receive every OneFuzz type, so they are listed under each.
                let wildcard = if event_type.matched_by_wildcard() { EventPattern::ALL_NAME } else { "" };
                self.read_records::<Webhook>(
                    "SELECT w.record FROM webhooks w WHERE w.webhook_id > ?2 AND w.webhook_id IN
                     (SELECT s.webhook_id FROM subscriptions s WHERE s.event_type = ?1 OR s.event_type = ?4)
                     ORDER BY w.webhook_id LIMIT ?3",
                    vec![text(event_type.as_str()), text(after), fetch, text(wildcard)],
                )
                .await?
            }
        };
        page(items, request.limit, |w| w.webhook_id.to_string())
    }

    async fn subscribers(&self, event_type: EventType) -> Result<Vec<Webhook>, StoreError> {
        let generation: i64 = self
            .read(|connection| {
                connection
                    .prepare_cached("SELECT value FROM generations WHERE name = 'webhooks'")
                    .map_err(db)?
                    .query_row([], |row| row.get(0))
                    .map_err(db)
            })
            .await?;
        if let Some(list) = self.subscribers.get(generation, event_type) {
            return Ok(list);
        }
        // `*` rows reach every OneFuzz type, never an operational one (SPEC §9.2).
        let wildcard = if event_type.matched_by_wildcard() { EventPattern::ALL_NAME } else { "" };
        let list = self
            .read_records::<Webhook>(
                "SELECT w.record FROM webhooks w WHERE w.webhook_id IN
                 (SELECT s.webhook_id FROM subscriptions s WHERE s.event_type = ?1 OR s.event_type = ?2)",
                vec![text(event_type.as_str()), text(wildcard)],
            )
            .await?;
        self.subscribers.put(generation, event_type, &list);
        Ok(list)
    }

    async fn insert_delivery(&self, entry: &DeliveryLog) -> Result<bool, StoreError> {
        let mut inserted = self.insert_deliveries(std::slice::from_ref(entry)).await?;
        inserted.pop().ok_or_else(|| StoreError::Backend("no insert result".into()))
    }

    async fn insert_deliveries(&self, entries: &[DeliveryLog]) -> Result<Vec<bool>, StoreError> {
        // An event's payload is encoded once, however many of its entries come together.
        let mut events: Vec<(Uuid, i64, Arc<RawValue>)> = Vec::new();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload = match events.iter_mut().find(|(event_id, ..)| *event_id == entry.event_id) {
                Some((_, expires_at, payload)) => {
                    *expires_at = (*expires_at).max(entry.expires_at);
                    payload.clone()
                }
                None => {
                    let payload =
                        crate::domain::payload::encoded(&entry.envelope.event).map_err(StoreError::backend)?;
                    events.push((entry.event_id, entry.expires_at, payload.clone()));
                    payload
                }
            };
            let row = [
                text(entry.webhook_id),
                Value::Text(created_key(entry)),
                text(entry.state.as_str()),
                Value::Integer(entry.version as i64),
                Value::Integer(entry.expires_at),
                Value::Text(StoredDelivery::json(entry)?),
            ];
            rows.push((row, entry.event_id, payload));
        }
        self.run(move |connection| {
            // The payload row outlives every entry of its event, so purging never strands one.
            let mut upsert = connection
                .prepare_cached(
                    "INSERT INTO events (event_id, expires_at, payload) VALUES (?1, ?2, ?3)
                     ON CONFLICT (event_id) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE excluded.expires_at > events.expires_at",
                )
                .map_err(db)?;
            // The comparison runs in SQLite: reading the payload back would copy it out per entry.
            let mut stored =
                connection.prepare_cached("SELECT seq, payload = ?2 FROM events WHERE event_id = ?1").map_err(db)?;
            // Each event's sequence number, and whether its stored payload is another one (a
            // producer reused the id): entries of those keep their own payload.
            let mut sequenced: Vec<(Uuid, i64, bool)> = Vec::with_capacity(events.len());
            for (event_id, expires_at, payload) in &events {
                let id = event_id.to_string();
                upsert.execute(params![id, expires_at, payload.get()]).map_err(db)?;
                let (seq, same): (i64, bool) =
                    stored.query_row(params![id, payload.get()], |row| Ok((row.get(0)?, row.get(1)?))).map_err(db)?;
                sequenced.push((*event_id, seq, !same));
            }
            // An entry past retention counts as gone, purged or not: a new one replaces it.
            let mut insert = connection
                .prepare_cached(
                    "INSERT INTO deliveries
                         (event_seq, webhook_id, created_key, state, version, expires_at, record, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (event_seq, webhook_id) DO UPDATE SET
                         created_key = excluded.created_key, state = excluded.state, version = excluded.version,
                         expires_at = excluded.expires_at, record = excluded.record, payload = excluded.payload
                     WHERE deliveries.expires_at < ?9",
                )
                .map_err(db)?;
            let unexpired_from = unexpired_from();
            rows.into_iter()
                .map(|(row, event_id, payload)| {
                    let (seq, differs) = sequenced
                        .iter()
                        .find(|(id, ..)| *id == event_id)
                        .map(|(_, seq, differs)| (*seq, *differs))
                        .ok_or_else(|| StoreError::Backend("an entry's event was not stored".into()))?;
                    let own_payload = if differs { Value::Text(payload.get().to_owned()) } else { Value::Null };
                    let values =
                        std::iter::once(Value::Integer(seq)).chain(row).chain([own_payload, unexpired_from.clone()]);
                    insert.execute(params_from_iter(values)).map(|n| n == 1).map_err(db)
                })
                .collect()
        })
        .await
    }

    async fn get_delivery(&self, webhook_id: WebhookId, event_id: Uuid) -> Result<Option<DeliveryLog>, StoreError> {
        let mut found = self
            .read_deliveries(
                "SELECT d.record, COALESCE(d.payload, e.payload) FROM events e JOIN deliveries d ON d.event_seq = e.seq
                 WHERE e.event_id = ?2 AND d.webhook_id = ?1 AND d.expires_at >= ?3",
                vec![text(webhook_id), text(event_id), unexpired_from()],
            )
            .await?;
        Ok(found.pop())
    }

    async fn update_delivery(&self, entry: &DeliveryLog) -> Result<(), StoreError> {
        let values = [
            text(entry.webhook_id),
            text(entry.event_id),
            text(entry.state.as_str()),
            Value::Integer(entry.version as i64),
            Value::Integer(entry.expires_at),
            Value::Text(StoredDelivery::json(entry)?),
            Value::Integer(entry.version as i64 - 1),
        ];
        let updated = self
            .run(move |connection| {
                let updated = connection
                    .prepare_cached(
                        "UPDATE deliveries SET state = ?3, version = ?4, expires_at = ?5, record = ?6
                         WHERE event_seq = (SELECT seq FROM events WHERE event_id = ?2) AND webhook_id = ?1
                         AND version = ?7",
                    )
                    .map_err(db)?
                    .execute(params_from_iter(values.iter()))
                    .map_err(db)?;
                // Keeps the payload at least as long as the entry, should its expiry move.
                connection
                    .prepare_cached("UPDATE events SET expires_at = ?2 WHERE event_id = ?1 AND expires_at < ?2")
                    .map_err(db)?
                    .execute(params![&values[1], &values[4]])
                    .map_err(db)?;
                Ok(updated)
            })
            .await?;
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
        let fetch = Value::Integer(request.limit as i64 + 1);
        let items = match state {
            None => {
                self.read_deliveries(
                    "SELECT d.record, COALESCE(d.payload, e.payload) FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
                     WHERE d.webhook_id = ?1 AND d.created_key < ?2 AND d.expires_at >= ?4
                     ORDER BY d.created_key DESC LIMIT ?3",
                    vec![text(webhook_id), text(before), fetch, unexpired_from()],
                )
                .await?
            }
            Some(state) => {
                self.read_deliveries(
                    "SELECT d.record, COALESCE(d.payload, e.payload) FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
                     WHERE d.webhook_id = ?1 AND d.created_key < ?2 AND d.state = ?3 AND d.expires_at >= ?5
                     ORDER BY d.created_key DESC LIMIT ?4",
                    vec![text(webhook_id), text(before), text(state.as_str()), fetch, unexpired_from()],
                )
                .await?
            }
        };
        page(items, request.limit, created_key)
    }

    async fn deliveries_since(
        &self,
        webhook_id: WebhookId,
        state: DeliveryState,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLog>, StoreError> {
        let from = sortable_time(since);
        self.read_deliveries(
            "SELECT d.record, COALESCE(d.payload, e.payload) FROM deliveries d LEFT JOIN events e ON e.seq = d.event_seq
             WHERE d.webhook_id = ?1 AND d.created_key >= ?2 AND d.state = ?3 AND d.expires_at >= ?4
             ORDER BY d.created_key",
            vec![text(webhook_id), text(from), text(state.as_str()), unexpired_from()],
        )
        .await
    }

    async fn note_failure(&self, id: WebhookId, now: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        let since_ms: i64 = self
            .run(move |connection| {
                connection
                    .prepare_cached(
                        "INSERT INTO failures (webhook_id, since_ms) VALUES (?1, ?2)
                         ON CONFLICT (webhook_id) DO UPDATE SET since_ms = since_ms RETURNING since_ms",
                    )
                    .map_err(db)?
                    .query_row(params![id.to_string(), now.timestamp_millis()], |row| row.get(0))
                    .map_err(db)
            })
            .await?;
        Ok(DateTime::from_timestamp_millis(since_ms).unwrap_or(now))
    }

    async fn restart_failures(&self, id: WebhookId, from: DateTime<Utc>) -> Result<(), StoreError> {
        self.run(move |connection| {
            connection
                .prepare_cached("UPDATE failures SET since_ms = ?2 WHERE webhook_id = ?1")
                .map_err(db)?
                .execute(params![id.to_string(), from.timestamp_millis()])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn clear_failures(&self, id: WebhookId) -> Result<(), StoreError> {
        self.run(move |connection| {
            connection
                .prepare_cached("DELETE FROM failures WHERE webhook_id = ?1")
                .map_err(db)?
                .execute(params![id.to_string()])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn reserve_rate_slot(
        &self,
        id: WebhookId,
        limit: Gcra,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let interval = limit.interval().num_nanoseconds().unwrap_or(i64::MAX);
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        // `limit.reserve` in one statement: the new time is max(stored, now) + interval.
        let tat: i64 = self
            .run(move |connection| {
                connection
                    .prepare_cached(
                        "INSERT INTO rate_limits (webhook_id, tat_ns) VALUES (?1, ?2 + ?3)
                         ON CONFLICT (webhook_id) DO UPDATE SET tat_ns = max(tat_ns, ?2) + ?3 RETURNING tat_ns",
                    )
                    .map_err(db)?
                    .query_row(params![id.to_string(), now_ns, interval], |row| row.get(0))
                    .map_err(db)
            })
            .await?;
        Ok(DateTime::from_timestamp_nanos(tat) - limit.interval())
    }

    async fn succeeded_since(&self, id: WebhookId, since: DateTime<Utc>) -> Result<bool, StoreError> {
        let since = since.timestamp_millis();
        self.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE webhook_id = ?1 AND state = 'succeeded'
                     AND CAST(unixepoch(record ->> '$.updated_at', 'subsec') * 1000 AS INTEGER) >= ?2)",
                )
                .map_err(db)?
                .query_row(params![id.to_string(), since], |row| row.get(0))
                .map_err(db)
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run(move |connection| {
            let purged = connection
                .execute("DELETE FROM deliveries WHERE expires_at < ?1", params![now.timestamp()])
                .map_err(db)?;
            connection.execute("DELETE FROM events WHERE expires_at < ?1", params![now.timestamp()]).map_err(db)?;
            Ok(purged)
        })
        .await
    }
}

/// A delivery task of the local queue, waiting for its time.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingTask {
    pub task_id: Uuid,
    pub due_at: DateTime<Utc>,
    pub body: String,
    /// How many times the worker has handed the task to the sender: 1 on the first hand-off.
    /// The local equivalent of SQS's `ApproximateReceiveCount`.
    pub receive_count: u32,
}

/// The local queue's task table, in the embedded store's file and on its store thread, so a
/// task and the log entries its handling writes share commits. Not part of [`Store`]: AWS
/// keeps its tasks in SQS.
#[derive(Clone)]
pub struct LocalTasks {
    store: EmbeddedStore,
}

impl LocalTasks {
    pub fn new(store: &EmbeddedStore) -> Self {
        Self { store: store.clone() }
    }

    /// Adds a task due at `due_at`, not yet received.
    pub async fn put(&self, task_id: Uuid, due_at: DateTime<Utc>, body: String) -> Result<(), StoreError> {
        let values = [text(task_id), Value::Integer(due_at.timestamp_millis()), Value::Text(body)];
        self.store
            .run(move |connection| {
                connection
                    .prepare_cached(
                        "INSERT OR REPLACE INTO tasks (task_id, due_ms, body, receive_count) VALUES (?1, ?2, ?3, 0)",
                    )
                    .map_err(db)?
                    .execute(params_from_iter(values))
                    .map_err(db)?;
                Ok(())
            })
            .await
    }

    /// Takes up to `limit` tasks due at `now`, earliest first: each is held (due again only
    /// at `hold_until`, so a crash leaves it due soon after) and its receive count goes up,
    /// in one statement, so two callers never take the same task.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        hold_until: DateTime<Utc>,
    ) -> Result<Vec<PendingTask>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, i64)> = self
            .store
            .run(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "UPDATE tasks SET due_ms = ?3, receive_count = receive_count + 1 WHERE task_id IN
                             (SELECT task_id FROM tasks WHERE due_ms <= ?1 ORDER BY due_ms LIMIT ?2)
                         RETURNING task_id, body, receive_count",
                    )
                    .map_err(db)?;
                let rows = statement
                    .query_map(params![now.timestamp_millis(), limit as i64, hold_until.timestamp_millis()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            })
            .await?;
        rows.into_iter()
            .map(|(task_id, body, receive_count)| {
                Ok(PendingTask {
                    task_id: Uuid::parse_str(&task_id).map_err(StoreError::backend)?,
                    due_at: hold_until,
                    body,
                    receive_count: u32::try_from(receive_count).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Moves a task's due time, keeping its receive count.
    pub async fn reschedule(&self, task_id: Uuid, due_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.store
            .run(move |connection| {
                connection
                    .prepare_cached("UPDATE tasks SET due_ms = ?2 WHERE task_id = ?1")
                    .map_err(db)?
                    .execute(params![task_id.to_string(), due_at.timestamp_millis()])
                    .map_err(db)?;
                Ok(())
            })
            .await
    }

    /// Tasks due at or before `now`, earliest first, left as they are.
    pub async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<PendingTask>, StoreError> {
        let rows: Vec<(String, i64, String, i64)> = self
            .store
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT task_id, due_ms, body, receive_count FROM tasks WHERE due_ms <= ?1
                         ORDER BY due_ms, task_id LIMIT ?2",
                    )
                    .map_err(db)?;
                let rows = statement
                    .query_map(params![now.timestamp_millis(), limit as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)
            })
            .await?;
        rows.into_iter()
            .map(|(task_id, due_ms, body, receive_count)| {
                Ok(PendingTask {
                    task_id: Uuid::parse_str(&task_id).map_err(StoreError::backend)?,
                    due_at: DateTime::from_timestamp_millis(due_ms)
                        .ok_or_else(|| StoreError::Backend("bad due time".into()))?,
                    body,
                    receive_count: u32::try_from(receive_count).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Earliest due time of any pending task, to know how long to sleep.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let due: Option<i64> = self
            .store
            .read(|connection| connection.query_row("SELECT MIN(due_ms) FROM tasks", [], |row| row.get(0)).map_err(db))
            .await?;
        Ok(due.and_then(DateTime::from_timestamp_millis))
    }

    /// How many tasks are pending, due or not.
    pub async fn count(&self) -> Result<usize, StoreError> {
        let count: i64 = self
            .store
            .read(|connection| connection.query_row("SELECT COUNT(*) FROM tasks", [], |row| row.get(0)).map_err(db))
            .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    pub async fn delete(&self, task_id: Uuid) -> Result<(), StoreError> {
        self.store
            .run(move |connection| {
                connection
                    .prepare_cached("DELETE FROM tasks WHERE task_id = ?1")
                    .map_err(db)?
                    .execute(params![task_id.to_string()])
                    .map_err(db)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_task(connection: &Connection, id: &str) -> Result<usize, StoreError> {
        connection.execute("INSERT INTO tasks (task_id, due_ms, body) VALUES (?1, 1, '{}')", params![id]).map_err(db)
    }

    #[test]
    fn sortable_times_have_nine_fractional_digits_so_string_order_is_time_order() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);

        assert_eq!(sortable_time(at("2026-11-28T17:25:37Z")), "2026-11-28T17:25:37.000000000Z");
        assert_eq!(sortable_time(at("2026-11-28T17:25:37.1735+00:00")), "2026-11-28T17:25:37.173500000Z");
        assert!(sortable_time(at("2026-11-28T17:25:37.9Z")) < sortable_time(at("2026-11-28T17:25:38Z")));
    }

    async fn task_ids(store: &EmbeddedStore) -> Vec<String> {
        store
            .run(|connection| {
                let mut statement = connection.prepare("SELECT task_id FROM tasks ORDER BY task_id").map_err(db)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(db)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(db)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn tasks_come_due_in_order_and_a_claim_holds_them_and_counts_the_hand_off() {
        let store = EmbeddedStore::in_memory().unwrap();
        let tasks = LocalTasks::new(&store);
        let now = Utc::now();
        let (later, soon, sooner) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        tasks.put(later, now + chrono::Duration::seconds(30), "later".into()).await.unwrap();
        tasks.put(soon, now - chrono::Duration::seconds(1), "soon".into()).await.unwrap();
        tasks.put(sooner, now - chrono::Duration::seconds(5), "sooner".into()).await.unwrap();

        let due: Vec<String> = tasks.due(now, 10).await.unwrap().into_iter().map(|t| t.body).collect();
        let hold = now + chrono::Duration::seconds(20);
        let first = tasks.claim_due(now, 1, hold).await.unwrap();
        let second = tasks.claim_due(now, 10, hold).await.unwrap();
        let none_left = tasks.claim_due(now, 10, hold).await.unwrap();
        let again = tasks.claim_due(hold, 10, hold + chrono::Duration::seconds(20)).await.unwrap();
        tasks.delete(sooner).await.unwrap();

        assert_eq!(due, ["sooner", "soon"]);
        assert_eq!(first.iter().map(|t| (t.task_id, t.receive_count)).collect::<Vec<_>>(), [(sooner, 1)]);
        assert_eq!(second.iter().map(|t| (t.task_id, t.receive_count)).collect::<Vec<_>>(), [(soon, 1)]);
        assert!(none_left.is_empty(), "held tasks are not due");
        let mut counts: Vec<(String, u32)> = again.into_iter().map(|t| (t.body, t.receive_count)).collect();
        counts.sort();
        assert_eq!(counts, [("soon".to_owned(), 2), ("sooner".to_owned(), 2)]);
        assert_eq!(tasks.count().await.unwrap(), 2);
        assert_eq!(
            tasks.next_due().await.unwrap().map(|t| t.timestamp_millis()),
            Some((now + chrono::Duration::seconds(30)).timestamp_millis())
        );
    }

    #[tokio::test]
    async fn a_rescheduled_task_keeps_its_receive_count() {
        let store = EmbeddedStore::in_memory().unwrap();
        let tasks = LocalTasks::new(&store);
        let now = Utc::now();
        let id = Uuid::new_v4();
        tasks.put(id, now, "t".into()).await.unwrap();
        tasks.claim_due(now, 1, now + chrono::Duration::seconds(60)).await.unwrap();

        tasks.reschedule(id, now).await.unwrap();

        assert_eq!(tasks.due(now, 10).await.unwrap().first().map(|t| t.receive_count), Some(1));
    }

    #[tokio::test]
    async fn a_failed_atomic_operation_keeps_none_of_its_writes_while_the_rest_of_its_commit_lands() {
        let store = EmbeddedStore::in_memory().unwrap();

        // Holds the store thread, so the next two queue up and share one commit.
        let blocker = store.run(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            Ok(())
        });
        let failing = store.run_atomically(|connection| {
            add_task(connection, "written-then-failed")?;
            Err::<(), _>(StoreError::Conflict)
        });
        let succeeding = store.run(|connection| add_task(connection, "kept"));
        let (blocked, failed, succeeded) = tokio::join!(blocker, failing, succeeding);
        blocked.unwrap();

        assert!(matches!(failed, Err(StoreError::Conflict)), "{failed:?}");
        assert_eq!(succeeded.unwrap(), 1);
        assert_eq!(task_ids(&store).await, vec!["kept".to_owned()]);
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone_and_the_store_keeps_working() {
        let store = EmbeddedStore::in_memory().unwrap();

        let panicked = store
            .run_atomically(|connection| {
                add_task(connection, "before-the-panic")?;
                if connection.is_autocommit() {
                    return Ok(());
                }
                panic!("a bug in one operation");
            })
            .await;
        let after = store.run(|connection| add_task(connection, "after")).await;

        assert!(matches!(panicked, Err(StoreError::Backend(_))), "{panicked:?}");
        assert_eq!(after.unwrap(), 1);
        assert_eq!(task_ids(&store).await, vec!["after".to_owned()]);
    }
}
