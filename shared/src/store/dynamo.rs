//! The AWS store: one DynamoDB table holds every kind of record, told apart by key prefixes.
//! `docs/storage.md` explains the layout and what each step of a delivery costs.
//!
//! # Table (the SAM template mirrors [`TableDefinition::describe`])
//!
//! - Partition key `pk` (S), sort key `sk` (S); on-demand billing (`PAY_PER_REQUEST`); no
//!   secondary index. Time to live on the number attribute `expires_at` (unix seconds).
//!
//! | record            | `pk`                 | `sk`                         | other attributes |
//! |-------------------|----------------------|------------------------------|------------------|
//! | webhook           | `WEBHOOKS`           | `WEBHOOK#{webhook_id}`       | the webhook's fields |
//! | subscription      | `SUB#{event_type}`   | `WEBHOOK#{webhook_id}`       | a copy of the webhook's fields |
//! | run of failures   | `FAILING#{webhook_id}` | `FAILING`                  | `since` (unix ms) |
//! | rate limit state  | `RATE#{webhook_id}`  | `RATE`                       | `tat` (unix ns), `expires_at` |
//! | delivery log      | `LOG#{webhook_id}`   | `T#{created_us}#{event_id}`  | `st`, `v`, `u`, `expires_at`, `d` |
//!
//! `{created_us}` is the event's creation time in unix microseconds, zero-padded to 16 digits,
//! so a webhook's log is its partition in time order: listing newest first, the state filter
//! and `recover --since` are Queries of the table, and no index item is written per delivery.
//! A log item keeps the entry as deflated JSON in `d` (the event payload with it, so a retry
//! sends the bytes the first attempt sent) and, beside it, the few attributes that conditions
//! and filters read: `st` (state), `v` (version), `u` (last change, unix seconds).
//!
//! Why this shape (a delivery's happy path is one Query share and one PutItem of < 1 KB):
//! - A subscription item carries a copy of its webhook, so an event's fan-out is one
//!   eventually consistent Query of one partition, O(subscribers), never O(webhooks). Every
//!   write of a webhook rewrites its copies in the same TransactWriteItems, conditional on its
//!   `version`; webhooks change rarely.
//! - The log item's key is computable from the message a sender handles (webhook, event id and
//!   time), so the sender writes an entry once, after the attempt, with a condition that it
//!   does not exist yet: the at-least-once dedup costs no read.
//! - Successes write nothing but their log entry. Failures note the start of a run of
//!   failures in a small item of its own, with no condition, so they never contend.
//!
//! Items written by the first layout (log entries under `EVENT#{event_id}` with a `gsi1`
//! index, subscription items without a webhook copy) still read: a sender that meets one moves
//! it to this layout, and [`migrate_legacy_layout`] moves them all.
//!
//! Cursors encode the key of the last item *returned*, never DynamoDB's `LastEvaluatedKey`:
//! filters and the one-item look-ahead (to know whether another page exists) read past the
//! page, and resuming from there would skip items.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, IndexStatus, KeySchemaElement, KeyType,
    KeysAndAttributes, Put, ReturnValue, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Cursor, DeliveryKey, Page, PageRequest, Read, Store, StoreError};
use crate::domain::{Attempt, DeliveryLog, DeliveryState, EventEnvelope, EventPattern, Gcra, Webhook, WebhookId};
use crate::events::EventType;

#[cfg(test)]
#[path = "dynamo_tests.rs"]
mod tests;

type Item = HashMap<String, AttributeValue>;

const WEBHOOKS_PARTITION: &str = "WEBHOOKS";
const WEBHOOK_SORT_PREFIX: &str = "WEBHOOK#";
const FAILING_SORT: &str = "FAILING";
/// Log items of this layout sort under this prefix; the first layout's under `EVENT#`.
const LOG_SORT_PREFIX: &str = "T#";
const LEGACY_LOG_SORT_PREFIX: &str = "EVENT#";
/// Largest inflated log entry accepted: the 400 KB item limit holds far less once deflated.
const MAX_ENTRY_JSON_BYTES: usize = 4 << 20;

/// BatchGetItem takes at most 100 keys per call.
const BATCH_GET_MAX_KEYS: usize = 100;
/// DynamoDB applies `Limit` before a filter, so asking for exactly the missing count would
/// cost a round trip per few matches when they are sparse. Tests read one item at a time so
/// that a handful of log entries already drives the loop over short filtered pages.
const FILTERED_READ_BATCH: usize = if cfg!(test) { 1 } else { 100 };
/// Unprocessed keys mean throttling; a few backed-off retries ride it out.
const MAX_UNPROCESSED_RETRIES: u32 = 8;
/// Writes that read, then write conditionally, start over this many times under contention.
const MAX_CONTENDED_ATTEMPTS: u32 = 5;
/// Rounds of a rate slot reservation's two conditional updates; each round fails only when
/// the limit's time crosses `now` between them.
const RATE_RESERVE_ATTEMPTS: u32 = 4;
/// A new table with an index can take minutes to become ACTIVE in AWS.
const TABLE_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The table's shape, for [`TableDefinition::create`] and for the SAM template to mirror.
pub struct TableDefinition;

impl TableDefinition {
    pub const PARTITION_KEY: &'static str = "pk";
    pub const SORT_KEY: &'static str = "sk";
    pub const TTL_ATTRIBUTE: &'static str = "expires_at";

    /// The `Properties` of the `AWS::DynamoDB::Table` resource (without `TableName`), as YAML
    /// for the SAM template. It describes exactly what [`TableDefinition::create`] builds.
    pub fn describe() -> String {
        format!(
            "BillingMode: PAY_PER_REQUEST
AttributeDefinitions:
  - AttributeName: {pk}
    AttributeType: S
  - AttributeName: {sk}
    AttributeType: S
KeySchema:
  - AttributeName: {pk}
    KeyType: HASH
  - AttributeName: {sk}
    KeyType: RANGE
TimeToLiveSpecification:
  AttributeName: {ttl}
  Enabled: true
",
            pk = Self::PARTITION_KEY,
            sk = Self::SORT_KEY,
            ttl = Self::TTL_ATTRIBUTE,
        )
    }

    /// Creates the table (or accepts an existing one with the same keys), waits until it and
    /// any index are ACTIVE, then turns on TTL.
    pub async fn create(client: &Client, table_name: &str) -> Result<(), StoreError> {
        let string_attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(backend)
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(backend)
        };
        let created = client
            .create_table()
            .table_name(table_name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(Self::PARTITION_KEY)?)
            .attribute_definitions(string_attribute(Self::SORT_KEY)?)
            .key_schema(key(Self::PARTITION_KEY, KeyType::Hash)?)
            .key_schema(key(Self::SORT_KEY, KeyType::Range)?)
            .send()
            .await;
        if let Err(err) = created {
            // A second local start or a rerun finds the table there; its shape is checked below.
            if !err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) {
                return Err(backend(err));
            }
        }
        Self::wait_until_active(client, table_name).await?;
        Self::enable_ttl(client, table_name).await
    }

    async fn wait_until_active(client: &Client, table_name: &str) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + TABLE_READY_TIMEOUT;
        let mut pause = Duration::from_millis(100);
        loop {
            let described = client.describe_table().table_name(table_name).send().await.map_err(backend)?;
            let table = described
                .table
                .ok_or_else(|| StoreError::Backend(format!("DescribeTable returned no description of {table_name}")))?;
            Self::check_shape(&table, table_name)?;
            let indexes_active =
                table.global_secondary_indexes().iter().all(|index| index.index_status() == Some(&IndexStatus::Active));
            if table.table_status() == Some(&TableStatus::Active) && indexes_active {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Backend(format!(
                    "table {table_name} is not ACTIVE after {} s",
                    TABLE_READY_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// An existing table with other keys would fail every query with a confusing message;
    /// say what is wrong once, at start.
    fn check_shape(table: &TableDescription, table_name: &str) -> Result<(), StoreError> {
        let keys = |schema: &[KeySchemaElement]| {
            schema.iter().map(|k| (k.attribute_name().to_owned(), k.key_type().clone())).collect::<Vec<_>>()
        };
        let expected_keys =
            vec![(Self::PARTITION_KEY.to_owned(), KeyType::Hash), (Self::SORT_KEY.to_owned(), KeyType::Range)];
        // Extra indexes (the first layout's `gsi1`) cost writes but break nothing.
        if keys(table.key_schema()) == expected_keys {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "table {table_name} exists with another key schema; expected:\n{}",
                Self::describe()
            )))
        }
    }

    async fn enable_ttl(client: &Client, table_name: &str) -> Result<(), StoreError> {
        let described = client.describe_time_to_live().table_name(table_name).send().await.map_err(backend)?;
        if let Some(ttl) = described.time_to_live_description() {
            let on = matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
            match ttl.attribute_name() {
                Some(name) if on && name == Self::TTL_ATTRIBUTE => return Ok(()),
                Some(other) if on => {
                    return Err(StoreError::Backend(format!(
                        "table {table_name} expires items on {other}, not {}",
                        Self::TTL_ATTRIBUTE
                    )));
                }
                _ => {}
            }
        }
        let specification = TimeToLiveSpecification::builder()
            .attribute_name(Self::TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(backend)?;
        client
            .update_time_to_live()
            .table_name(table_name)
            .time_to_live_specification(specification)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self { client, table: table_name.into() }
    }
}

// ---- keys and items --------------------------------------------------------------------
// The serde field names below are `TableDefinition`'s key constants; the expressions in the
// queries spell them out too.

/// A table key; also the position a cursor carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Key {
    pk: String,
    sk: String,
}

impl Key {
    fn webhook(id: WebhookId) -> Self {
        Self { pk: WEBHOOKS_PARTITION.to_owned(), sk: webhook_sort(id) }
    }

    fn subscription(event_type: EventPattern, id: WebhookId) -> Self {
        Self { pk: subscription_partition(event_type), sk: webhook_sort(id) }
    }

    fn failing(id: WebhookId) -> Self {
        Self { pk: format!("FAILING#{id}"), sk: FAILING_SORT.to_owned() }
    }

    fn rate(id: WebhookId) -> Self {
        Self { pk: format!("RATE#{id}"), sk: "RATE".to_owned() }
    }

    fn log(key: &DeliveryKey) -> Self {
        Self { pk: log_partition(key.webhook_id), sk: log_sort(key.created_at, key.event_id) }
    }

    fn legacy_log(webhook_id: WebhookId, event_id: Uuid) -> Self {
        Self { pk: log_partition(webhook_id), sk: format!("{LEGACY_LOG_SORT_PREFIX}{event_id}") }
    }
}

/// A record stored under a table key.
#[derive(Serialize, Deserialize)]
struct Keyed<T> {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: T,
}

impl<T> Keyed<T> {
    fn new(key: Key, record: T) -> Self {
        Self { pk: key.pk, sk: key.sk, record }
    }
}

/// The first layout's subscription item: only which webhook, so a fan-out read the webhooks.
#[derive(Serialize, Deserialize)]
struct LegacySubscription {
    webhook_id: WebhookId,
}

fn webhook_sort(id: WebhookId) -> String {
    format!("{WEBHOOK_SORT_PREFIX}{id}")
}

/// `SUB#*` holds the webhooks subscribed to every OneFuzz type.
fn subscription_partition(pattern: EventPattern) -> String {
    format!("SUB#{}", pattern.as_str())
}

fn log_partition(webhook_id: WebhookId) -> String {
    format!("LOG#{webhook_id}")
}

/// Times before 1970 clamp to zero, keeping the key a fixed-width number whose string order is
/// time order.
fn time_key(at: DateTime<Utc>) -> String {
    format!("{:016}", at.timestamp_micros().max(0))
}

fn log_sort(created_at: DateTime<Utc>, event_id: Uuid) -> String {
    format!("{LOG_SORT_PREFIX}{}#{event_id}", time_key(created_at))
}

fn encode<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::to_item(value)
        .map_err(|err| StoreError::Backend(format!("cannot encode a DynamoDB item: {err}")))
}

fn decode<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|err| StoreError::Backend(format!("cannot decode a DynamoDB item: {err}")))
}

/// The log item's attributes besides its keys. Short names: every byte of an item is paid
/// for on every write.
mod log_item {
    pub const STATE: &str = "st";
    pub const VERSION: &str = "v";
    pub const UPDATED: &str = "u";
    pub const ENTRY: &str = "d";
}

/// A log entry inside its item, before deflating: short names and unix-nanosecond times,
/// since every byte is paid for on every write. The webhook and event ids are in the keys;
/// the event's creation time is the entry's.
#[derive(Serialize, Deserialize)]
struct StoredEntry {
    #[serde(rename = "t")]
    event_type: EventType,
    #[serde(rename = "s")]
    state: DeliveryState,
    #[serde(rename = "n")]
    try_count: u32,
    #[serde(rename = "c", with = "chrono::serde::ts_nanoseconds")]
    created_at: DateTime<Utc>,
    #[serde(rename = "u", with = "chrono::serde::ts_nanoseconds")]
    updated_at: DateTime<Utc>,
    #[serde(rename = "x", default, with = "chrono::serde::ts_nanoseconds_option")]
    next_attempt_at: Option<DateTime<Utc>>,
    #[serde(rename = "a", default)]
    attempts: Vec<StoredAttempt>,
    #[serde(rename = "l", default, with = "chrono::serde::ts_nanoseconds_option")]
    lease_until: Option<DateTime<Utc>>,
    #[serde(rename = "r", default)]
    retry_scheduled: bool,
    #[serde(rename = "e")]
    expires_at: i64,
    #[serde(rename = "v")]
    version: u64,
    #[serde(rename = "i")]
    instance_id: Uuid,
    #[serde(rename = "m")]
    instance_name: String,
    #[serde(rename = "p")]
    event: std::sync::Arc<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    #[serde(rename = "n")]
    attempt: u32,
    #[serde(rename = "t", with = "chrono::serde::ts_nanoseconds")]
    at: DateTime<Utc>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "d")]
    duration_ms: u64,
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    response_head: Option<String>,
}

impl StoredEntry {
    /// Names every field, so a field added to `DeliveryLog` does not compile until it is
    /// stored here too.
    fn of(entry: &DeliveryLog) -> Self {
        let DeliveryLog {
            webhook_id: _,
            event_id: _,
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
        Self {
            event_type: *event_type,
            state: *state,
            try_count: *try_count,
            created_at: *created_at,
            updated_at: *updated_at,
            next_attempt_at: *next_attempt_at,
            attempts: attempts
                .iter()
                .map(|a| StoredAttempt {
                    attempt: a.attempt,
                    at: a.at,
                    status_code: a.status_code,
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                    response_head: a.response_head.clone(),
                })
                .collect(),
            lease_until: *lease_until,
            retry_scheduled: *retry_scheduled,
            expires_at: *expires_at,
            version: *version,
            instance_id: envelope.instance_id,
            instance_name: envelope.instance_name.clone(),
            event: envelope.event.clone(),
        }
    }

    fn into_entry(self, webhook_id: WebhookId, event_id: Uuid) -> DeliveryLog {
        DeliveryLog {
            webhook_id,
            event_id,
            event_type: self.event_type,
            state: self.state,
            try_count: self.try_count,
            created_at: self.created_at,
            updated_at: self.updated_at,
            next_attempt_at: self.next_attempt_at,
            attempts: self
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    attempt: a.attempt,
                    at: a.at,
                    status_code: a.status_code,
                    error: a.error,
                    duration_ms: a.duration_ms,
                    response_head: a.response_head,
                })
                .collect(),
            envelope: EventEnvelope {
                event_id,
                event_type: self.event_type,
                event: self.event,
                instance_id: self.instance_id,
                instance_name: self.instance_name,
                created_at: self.created_at,
            },
            lease_until: self.lease_until,
            retry_scheduled: self.retry_scheduled,
            expires_at: self.expires_at,
            version: self.version,
        }
    }
}

/// A log entry as an item: the deflated entry, plus what conditions and filters read.
fn encode_delivery(entry: &DeliveryLog) -> Result<Item, StoreError> {
    let json = serde_json::to_vec(&StoredEntry::of(entry)).map_err(StoreError::backend)?;
    let deflated = miniz_oxide::deflate::compress_to_vec(&json, 9);
    let Key { pk, sk } = Key::log(&entry.key());
    Ok(HashMap::from([
        (TableDefinition::PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
        (TableDefinition::SORT_KEY.to_owned(), AttributeValue::S(sk)),
        (log_item::STATE.to_owned(), AttributeValue::S(entry.state.as_str().to_owned())),
        (log_item::VERSION.to_owned(), AttributeValue::N(entry.version.to_string())),
        (log_item::UPDATED.to_owned(), AttributeValue::N(entry.updated_at.timestamp().to_string())),
        (TableDefinition::TTL_ATTRIBUTE.to_owned(), AttributeValue::N(entry.expires_at.to_string())),
        (log_item::ENTRY.to_owned(), AttributeValue::B(Blob::new(deflated))),
    ]))
}

fn decode_delivery(item: Item) -> Result<DeliveryLog, StoreError> {
    let Some(AttributeValue::B(deflated)) = item.get(log_item::ENTRY) else {
        return decode_legacy_delivery(item);
    };
    let (webhook_id, event_id) = match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
            let webhook_id = pk.strip_prefix("LOG#").and_then(|id| Uuid::parse_str(id).ok());
            let event_id = sk.rsplit('#').next().and_then(|id| Uuid::parse_str(id).ok());
            match (webhook_id, event_id) {
                (Some(w), Some(e)) => (WebhookId::from(w), e),
                _ => return Err(StoreError::Backend(format!("a log item with a malformed key: {pk} {sk}"))),
            }
        }
        _ => return Err(StoreError::Backend("a log item without its key".into())),
    };
    let json = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated.as_ref(), MAX_ENTRY_JSON_BYTES)
        .map_err(|err| StoreError::Backend(format!("a log item does not inflate: {err:?}")))?;
    let stored: StoredEntry = serde_json::from_slice(&json)
        .map_err(|err| StoreError::Backend(format!("a log item does not decode: {err}")))?;
    Ok(stored.into_entry(webhook_id, event_id))
}

/// Where a first-layout log item keeps its event payload: JSON text inside the envelope map.
/// Items older still keep `event` as a map.
const LEGACY_PAYLOAD_JSON: &str = "event_json";

fn decode_legacy_delivery(mut item: Item) -> Result<DeliveryLog, StoreError> {
    let payload = match item.get_mut("envelope") {
        Some(AttributeValue::M(envelope)) => match envelope.remove(LEGACY_PAYLOAD_JSON) {
            Some(AttributeValue::S(json)) => {
                envelope.insert("event".to_owned(), AttributeValue::Null(true));
                Some(json)
            }
            _ => None,
        },
        _ => None,
    };
    let mut entry = decode::<DeliveryLog>(item)?;
    if let Some(json) = payload {
        entry.envelope.event = serde_json::from_str(&json)
            .map_err(|err| StoreError::Backend(format!("a log entry's payload is not JSON: {err}")))?;
    }
    // This layout finds an entry by its event's time; the first one kept the entry's own.
    entry.created_at = entry.envelope.created_at;
    Ok(entry)
}

fn is_legacy_log_item(item: &Item) -> bool {
    matches!(item.get(TableDefinition::SORT_KEY), Some(AttributeValue::S(sk)) if sk.starts_with(LEGACY_LOG_SORT_PREFIX))
}

/// A subscription item: a copy of its webhook, or the first layout's pointer to it.
enum SubscriptionItem {
    Copy(Box<Webhook>),
    Pointer(WebhookId),
}

fn decode_subscription(item: Item) -> Result<SubscriptionItem, StoreError> {
    if item.contains_key("url") {
        Ok(SubscriptionItem::Copy(Box::new(decode::<Keyed<Webhook>>(item)?.record)))
    } else {
        Ok(SubscriptionItem::Pointer(decode::<Keyed<LegacySubscription>>(item)?.record.webhook_id))
    }
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The SDK's own `Display` stops at "service error"; the context chain names the cause.
fn backend<E: std::error::Error>(err: E) -> StoreError {
    StoreError::Backend(DisplayErrorContext(&err).to_string())
}

fn query_limit(count: usize) -> i32 {
    i32::try_from(count.max(1)).unwrap_or(i32::MAX)
}

/// Keeps `limit` items; the look-ahead item beyond them, if any, is what proves another page
/// exists, and the cursor points at the last item kept.
fn paginate<T>(
    mut items: Vec<T>,
    limit: usize,
    position: impl Fn(&T) -> Result<Cursor, StoreError>,
) -> Result<Page<T>, StoreError> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(position).transpose()?
    } else {
        None
    };
    Ok(Page { items, next })
}

// ---- conditions, queries and transactions ---------------------------------------------

struct Condition {
    expression: &'static str,
    names: Option<HashMap<String, String>>,
    values: Option<Item>,
}

impl Condition {
    fn absent() -> Self {
        Self { expression: "attribute_not_exists(pk)", names: None, values: None }
    }

    /// An item past its TTL counts as absent: DynamoDB deletes it only within a day or two.
    fn absent_or_expired(now: DateTime<Utc>) -> Self {
        Self {
            expression: "attribute_not_exists(pk) OR #expires_at < :now",
            names: Some(HashMap::from([("#expires_at".to_owned(), TableDefinition::TTL_ATTRIBUTE.to_owned())])),
            values: Some(HashMap::from([(":now".to_owned(), number(now.timestamp()))])),
        }
    }

    /// Also false when the item is missing, so it doubles as an existence check.
    fn equals(attribute: &str, value: AttributeValue) -> Self {
        Self {
            expression: "#attribute = :expected",
            names: Some(HashMap::from([("#attribute".to_owned(), attribute.to_owned())])),
            values: Some(HashMap::from([(":expected".to_owned(), value)])),
        }
    }

    fn version_is(version: u64) -> Self {
        Self::equals("version", number(version))
    }

    fn log_version_is(version: u64) -> Self {
        Self::equals(log_item::VERSION, number(version))
    }
}

/// A Query over one partition of the table.
struct PartitionQuery {
    key_condition: &'static str,
    names: Option<HashMap<String, String>>,
    values: Item,
    filter: Option<&'static str>,
    forward: bool,
    consistent: bool,
}

impl PartitionQuery {
    fn table(partition: &str) -> Self {
        Self {
            key_condition: "pk = :pk",
            names: None,
            values: HashMap::from([(":pk".to_owned(), string(partition))]),
            filter: None,
            forward: true,
            consistent: true,
        }
    }

    /// A webhook's log entries still within retention at `now`, by event time, optionally only
    /// those in `state`: TTL deletes lazily, and an entry past retention is gone all the same.
    fn logs(webhook_id: WebhookId, state: Option<DeliveryState>, forward: bool, now: DateTime<Utc>) -> Self {
        let mut query = Self {
            key_condition: "pk = :pk AND begins_with(sk, :prefix)",
            names: Some(HashMap::from([("#expires_at".to_owned(), TableDefinition::TTL_ATTRIBUTE.to_owned())])),
            values: HashMap::from([
                (":pk".to_owned(), string(log_partition(webhook_id))),
                (":prefix".to_owned(), string(LOG_SORT_PREFIX)),
                (":now".to_owned(), number(now.timestamp())),
            ]),
            filter: Some("#expires_at >= :now"),
            forward,
            consistent: true,
        };
        if let Some(state) = state {
            query.filter = Some("st = :state AND #expires_at >= :now");
            query.values.insert(":state".to_owned(), string(state.as_str()));
        }
        query
    }
}

enum TransactFailure {
    /// A condition of the transaction did not hold.
    Condition,
    /// Another transaction was writing one of the items at the same moment.
    Contention,
    Backend(StoreError),
}

impl DynamoStore {
    async fn get_item(&self, key: &Key, read: Read) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(encode(key)?))
            .consistent_read(read == Read::Latest)
            .send()
            .await
            .map_err(backend)?;
        Ok(output.item)
    }

    /// Returns whether the item was written; `false` when `condition` did not hold.
    async fn put_item(&self, item: Item, condition: Condition) -> Result<bool, StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(condition.names)
            .set_expression_attribute_values(condition.values)
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    /// An UpdateItem of a webhook's rate limit time under `condition`: the new time, or `None`
    /// when the condition did not hold. The item is forgotten a day after its last use.
    async fn update_rate_time(
        &self,
        id: WebhookId,
        update: &str,
        condition: &str,
        values: [(&str, AttributeValue); 3],
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(encode(&Key::rate(id))?))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#expires_at", TableDefinition::TTL_ATTRIBUTE)
            .set_expression_attribute_values(Some(values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match written {
            Ok(output) => match output.attributes.as_ref().and_then(|a| a.get("tat")) {
                Some(AttributeValue::N(ns)) => match ns.parse::<i64>() {
                    Ok(ns) => Ok(Some(DateTime::from_timestamp_nanos(ns))),
                    Err(_) => Err(StoreError::Backend("the rate limit's time is not a number".into())),
                },
                _ => Err(StoreError::Backend("the rate limit update returned no time".into())),
            },
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }

    /// One page of a query. The returned key is where DynamoDB would resume, `None` at the end.
    async fn query_page(
        &self,
        query: &PartitionQuery,
        start: Option<Item>,
        limit: Option<usize>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(query.key_condition)
            .set_expression_attribute_names(query.names.clone())
            .set_expression_attribute_values(Some(query.values.clone()))
            .set_filter_expression(query.filter.map(str::to_owned))
            .scan_index_forward(query.forward)
            .consistent_read(query.consistent)
            .set_exclusive_start_key(start)
            .set_limit(limit.map(query_limit))
            .send()
            .await
            .map_err(backend)?;
        Ok((output.items.unwrap_or_default(), output.last_evaluated_key.filter(|key| !key.is_empty())))
    }

    async fn query_all(&self, query: &PartitionQuery) -> Result<Vec<Item>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (items, last) = self.query_page(query, start, None).await?;
            all.extend(items);
            match last {
                Some(key) => start = Some(key),
                None => return Ok(all),
            }
        }
    }

    /// The items under these keys that exist, by key (strongly consistent).
    async fn items_by_key(&self, keys: &[Key]) -> Result<HashMap<Key, Item>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        let unique: BTreeSet<(String, String)> = keys.iter().map(|k| (k.pk.clone(), k.sk.clone())).collect();
        let unique: Vec<Key> = unique.into_iter().map(|(pk, sk)| Key { pk, sk }).collect();
        for chunk in unique.chunks(BATCH_GET_MAX_KEYS) {
            let keys = chunk.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
            let mut pending =
                Some(KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build().map_err(backend)?);
            let mut retries = 0;
            while let Some(request) = pending.take() {
                let output =
                    self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(backend)?;
                for item in output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let key = match (item.get("pk"), item.get("sk")) {
                        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => {
                            Key { pk: pk.clone(), sk: sk.clone() }
                        }
                        _ => return Err(StoreError::Backend("BatchGetItem returned an item without its key".into())),
                    };
                    found.insert(key, item);
                }
                pending = output
                    .unprocessed_keys
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .filter(|request| !request.keys().is_empty());
                if pending.is_some() {
                    retries += 1;
                    if retries > MAX_UNPROCESSED_RETRIES {
                        return Err(StoreError::Backend(format!(
                            "BatchGetItem on {} left keys unprocessed after {MAX_UNPROCESSED_RETRIES} retries",
                            self.table
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(25 << retries.min(7))).await;
                }
            }
        }
        Ok(found)
    }

    /// The webhooks with these ids that exist, in the order of `ids`.
    async fn webhooks_by_id(&self, ids: &[WebhookId]) -> Result<Vec<Webhook>, StoreError> {
        let keys: Vec<Key> = ids.iter().map(|id| Key::webhook(*id)).collect();
        let mut found = self.items_by_key(&keys).await?;
        let mut webhooks = Vec::with_capacity(ids.len());
        for key in keys {
            if let Some(item) = found.remove(&key) {
                webhooks.push(decode::<Keyed<Webhook>>(item)?.record);
            }
        }
        Ok(webhooks)
    }

    /// Webhooks from subscription items: copies as they are; the first layout's pointers read
    /// their webhooks.
    async fn webhooks_of_subscriptions(&self, items: Vec<Item>) -> Result<Vec<Webhook>, StoreError> {
        let mut webhooks = Vec::with_capacity(items.len());
        let mut pointers = Vec::new();
        for item in items {
            match decode_subscription(item)? {
                SubscriptionItem::Copy(webhook) => webhooks.push(*webhook),
                SubscriptionItem::Pointer(id) => pointers.push(id),
            }
        }
        if !pointers.is_empty() {
            webhooks.extend(self.webhooks_by_id(&pointers).await?);
            webhooks.sort_by_key(|webhook| webhook.webhook_id);
        }
        Ok(webhooks)
    }

    fn put_write(&self, item: Item, condition: Option<Condition>) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if let Some(condition) = condition {
            put = put
                .condition_expression(condition.expression)
                .set_expression_attribute_names(condition.names)
                .set_expression_attribute_values(condition.values);
        }
        Ok(TransactWriteItem::builder().put(put.build().map_err(backend)?).build())
    }

    fn delete_write(&self, key: &Key, condition: Option<Condition>) -> Result<TransactWriteItem, StoreError> {
        let mut delete = Delete::builder().table_name(&self.table).set_key(Some(encode(key)?));
        if let Some(condition) = condition {
            delete = delete
                .condition_expression(condition.expression)
                .set_expression_attribute_names(condition.names)
                .set_expression_attribute_values(condition.values);
        }
        Ok(TransactWriteItem::builder().delete(delete.build().map_err(backend)?).build())
    }

    /// The webhook's item, conditional, and a copy in each of its subscription partitions.
    fn webhook_writes(&self, webhook: &Webhook, condition: Condition) -> Result<Vec<TransactWriteItem>, StoreError> {
        let id = webhook.webhook_id;
        let mut writes = vec![self.put_write(encode(&Keyed::new(Key::webhook(id), webhook))?, Some(condition))?];
        // A set: one transaction may not touch the same subscription item twice.
        for pattern in webhook.event_types.iter().copied().collect::<BTreeSet<_>>() {
            writes.push(self.put_write(encode(&Keyed::new(Key::subscription(pattern, id), webhook))?, None)?);
        }
        Ok(writes)
    }

    /// The SDK gives every call an idempotency token, so its own retries of a transaction that
    /// did commit succeed rather than trip over their own conditions.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> Result<(), TransactFailure> {
        let Err(err) = self.client.transact_write_items().set_transact_items(Some(writes)).send().await else {
            return Ok(());
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() {
            let codes: Vec<&str> = cancelled.cancellation_reasons().iter().filter_map(|reason| reason.code()).collect();
            if codes.contains(&"ConditionalCheckFailed") {
                return Err(TransactFailure::Condition);
            }
            if codes.contains(&"TransactionConflict") {
                return Err(TransactFailure::Contention);
            }
        }
        Err(TransactFailure::Backend(backend(err)))
    }

    /// Where a cursor for the list of `partition` resumes, if it is one of its cursors.
    /// Up to `wanted` webhooks of one partition (all webhooks, or one subscription pattern's
    /// copies) after `start`, in id order; under a pattern, only those that still receive
    /// `event_type` (a webhook moved off it between two reads of the first layout is left out).
    async fn list_partition(
        &self,
        partition: &str,
        mut start: Option<Item>,
        wanted: usize,
        event_type: Option<EventType>,
    ) -> Result<Vec<Webhook>, StoreError> {
        let query = PartitionQuery::table(partition);
        let mut found: Vec<Webhook> = Vec::new();
        loop {
            let (items, last) = self.query_page(&query, start, Some(wanted - found.len())).await?;
            match event_type {
                None => {
                    for item in items {
                        found.push(decode::<Keyed<Webhook>>(item)?.record);
                    }
                }
                Some(event_type) => found.extend(
                    self.webhooks_of_subscriptions(items).await?.into_iter().filter(|w| w.subscribes_to(event_type)),
                ),
            }
            if found.len() >= wanted {
                return Ok(found);
            }
            match last {
                Some(key) => start = Some(key),
                None => return Ok(found),
            }
        }
    }

    fn list_start(cursor: &Cursor, partition: &str, sort_prefix: &str) -> Result<Item, StoreError> {
        encode(&Self::list_position(cursor, partition, sort_prefix)?)
    }

    /// The key a list cursor resumes after, refused unless it is of `partition`.
    fn list_position(cursor: &Cursor, partition: &str, sort_prefix: &str) -> Result<Key, StoreError> {
        let key: Key = cursor.decode()?;
        if key.pk != partition || !key.sk.starts_with(sort_prefix) {
            return Err(StoreError::BadCursor);
        }
        Ok(key)
    }

    /// Moves a first-layout log entry to this layout: the new item (unless already there),
    /// then the old one goes. Returns the entry as this layout keeps it.
    async fn move_legacy_entry(&self, item: Item) -> Result<DeliveryLog, StoreError> {
        let legacy_key = match (item.get("pk"), item.get("sk")) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => Key { pk: pk.clone(), sk: sk.clone() },
            _ => return Err(StoreError::Backend("a legacy log item without its key".into())),
        };
        let entry = decode_legacy_delivery(item)?;
        let writes = vec![
            self.put_write(encode_delivery(&entry)?, Some(Condition::absent()))?,
            self.delete_write(&legacy_key, None)?,
        ];
        match self.transact(writes).await {
            // Moved already (by a concurrent reader): the old item is left for the migration.
            Ok(()) | Err(TransactFailure::Condition | TransactFailure::Contention) => Ok(entry),
            Err(TransactFailure::Backend(err)) => Err(err),
        }
    }

    /// A first-layout entry for this (webhook, event), `None` if none. A sender (`moving`)
    /// moves it to this layout, since it is about to write it; an operator's read leaves it.
    async fn legacy_entry(
        &self,
        webhook_id: WebhookId,
        event_id: Uuid,
        moving: bool,
    ) -> Result<Option<DeliveryLog>, StoreError> {
        match self.get_item(&Key::legacy_log(webhook_id, event_id), Read::Latest).await? {
            Some(item) if moving => Ok(Some(self.move_legacy_entry(item).await?)),
            Some(item) => Ok(Some(decode_legacy_delivery(item)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        match self.transact(self.webhook_writes(webhook, Condition::absent())?).await {
            Ok(()) => Ok(()),
            Err(TransactFailure::Condition | TransactFailure::Contention) => Err(StoreError::Conflict),
            Err(TransactFailure::Backend(err)) => Err(err),
        }
    }

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.get_item(&Key::webhook(id), Read::Latest)
            .await?
            .map(|item| decode::<Keyed<Webhook>>(item).map(|keyed| keyed.record))
            .transpose()
    }

    async fn webhook_for_delivery(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.get_item(&Key::webhook(id), Read::MaybeStale)
            .await?
            .map(|item| decode::<Keyed<Webhook>>(item).map(|keyed| keyed.record))
            .transpose()
    }

    async fn update_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let id = webhook.webhook_id;
        // The stored event types say which subscription items exist; the version condition
        // below guarantees they are still the ones read here when the transaction commits.
        let current = self.get_webhook(id).await?.ok_or(StoreError::NotFound)?;
        let expected = webhook.version.checked_sub(1).ok_or(StoreError::Conflict)?;
        if current.version != expected {
            return Err(StoreError::Conflict);
        }
        let before: BTreeSet<EventPattern> = current.event_types.iter().copied().collect();
        let after: BTreeSet<EventPattern> = webhook.event_types.iter().copied().collect();
        let mut writes = self.webhook_writes(webhook, Condition::version_is(expected))?;
        for removed in before.difference(&after) {
            writes.push(self.delete_write(&Key::subscription(*removed, id), None)?);
        }
        match self.transact(writes).await {
            Ok(()) => Ok(()),
            Err(TransactFailure::Condition | TransactFailure::Contention) => match self.get_webhook(id).await? {
                None => Err(StoreError::NotFound),
                Some(_) => Err(StoreError::Conflict),
            },
            Err(TransactFailure::Backend(err)) => Err(err),
        }
    }

    async fn delete_webhook(&self, id: WebhookId) -> Result<(), StoreError> {
        // The caller holds no version, so a concurrent update only means: read again, retry.
        for _ in 0..MAX_CONTENDED_ATTEMPTS {
            let current = self.get_webhook(id).await?.ok_or(StoreError::NotFound)?;
            let mut writes = vec![
                self.delete_write(&Key::webhook(id), Some(Condition::version_is(current.version)))?,
                self.delete_write(&Key::failing(id), None)?,
                self.delete_write(&Key::rate(id), None)?,
            ];
            for pattern in current.event_types.iter().copied().collect::<BTreeSet<_>>() {
                writes.push(self.delete_write(&Key::subscription(pattern, id), None)?);
            }
            match self.transact(writes).await {
                Ok(()) => return Ok(()),
                Err(TransactFailure::Condition | TransactFailure::Contention) => continue,
                Err(TransactFailure::Backend(err)) => return Err(err),
            }
        }
        Err(StoreError::Conflict)
    }

    async fn list_webhooks(
        &self,
        event_type: Option<EventType>,
        page: PageRequest,
    ) -> Result<Page<Webhook>, StoreError> {
        let partition = match event_type {
            Some(event_type) => subscription_partition(EventPattern::Type(event_type)),
            None => WEBHOOKS_PARTITION.to_owned(),
        };
        let after = match &page.cursor {
            Some(cursor) => Some(Self::list_position(cursor, &partition, WEBHOOK_SORT_PREFIX)?),
            None => None,
        };
        if page.limit == 0 {
            return Ok(Page { items: Vec::new(), next: None });
        }
        let wanted = page.limit.saturating_add(1);
        let start = after.as_ref().map(encode).transpose()?;
        let mut found = self.list_partition(&partition, start, wanted, event_type).await?;
        // Those on `"*"` receive the type too: the `*` partition from the same webhook id on,
        // merged in id order.
        if let Some(event_type) = event_type.filter(|t| t.matched_by_wildcard()) {
            let everything = subscription_partition(EventPattern::All);
            let start = after.map(|key| encode(&Key { pk: everything.clone(), sk: key.sk })).transpose()?;
            found.extend(self.list_partition(&everything, start, wanted, Some(event_type)).await?);
            found.sort_by_key(|webhook| webhook_sort(webhook.webhook_id));
            found.dedup_by_key(|webhook| webhook.webhook_id);
            found.truncate(wanted);
        }
        paginate(found, page.limit, |webhook| {
            Cursor::encode(&Key { pk: partition.clone(), sk: webhook_sort(webhook.webhook_id) })
        })
    }

    async fn subscribers(&self, event_type: EventType) -> Result<Vec<Webhook>, StoreError> {
        // Eventually consistent, at half the cost: a webhook created or changed a moment ago
        // may miss an event, as it may with any webhook service. Those subscribed to `*` are
        // one more partition, so no fan-out scans all webhooks.
        let mut patterns = vec![EventPattern::Type(event_type)];
        if event_type.matched_by_wildcard() {
            patterns.push(EventPattern::All);
        }
        let mut items = Vec::new();
        for pattern in patterns {
            let mut query = PartitionQuery::table(&subscription_partition(pattern));
            query.consistent = false;
            items.extend(self.query_all(&query).await?);
        }
        let mut webhooks = self.webhooks_of_subscriptions(items).await?;
        webhooks.retain(|webhook| webhook.event_types.iter().any(|pattern| pattern.matches(event_type)));
        let mut seen = std::collections::HashSet::new();
        webhooks.retain(|webhook| seen.insert(webhook.webhook_id));
        Ok(webhooks)
    }

    async fn insert_delivery(&self, entry: &DeliveryLog) -> Result<bool, StoreError> {
        self.put_item(encode_delivery(entry)?, Condition::absent_or_expired(Utc::now())).await
    }

    async fn get_delivery(&self, webhook_id: WebhookId, event_id: Uuid) -> Result<Option<DeliveryLog>, StoreError> {
        let now = Utc::now();
        if let Some(entry) = self.legacy_entry(webhook_id, event_id, false).await? {
            return Ok(Some(entry).filter(|entry| !entry.is_expired(now)));
        }
        // Without the event's time, the entry is found by reading the webhook's log newest
        // first: an operator's look-up, usually of a recent delivery, never a sender's.
        let suffix = format!("#{event_id}");
        let mut query = PartitionQuery::logs(webhook_id, None, false, now);
        query.filter = None;
        query.names = None;
        query.values.remove(":now");
        let mut start = None;
        loop {
            let (items, last) = self.query_page(&query, start, None).await?;
            for item in items {
                if matches!(item.get(TableDefinition::SORT_KEY), Some(AttributeValue::S(sk)) if sk.ends_with(&suffix)) {
                    let entry = decode_delivery(item)?;
                    return Ok(Some(entry).filter(|entry| !entry.is_expired(now)));
                }
            }
            match last {
                Some(key) => start = Some(key),
                None => return Ok(None),
            }
        }
    }

    async fn load_delivery(&self, key: &DeliveryKey, read: Read) -> Result<Option<DeliveryLog>, StoreError> {
        let now = Utc::now();
        let entry = match self.get_item(&Key::log(key), read).await? {
            Some(item) => Some(decode_delivery(item)?),
            None => self.legacy_entry(key.webhook_id, key.event_id, true).await?,
        };
        Ok(entry.filter(|entry| !entry.is_expired(now)))
    }

    async fn load_deliveries(&self, keys: &[DeliveryKey]) -> Result<Vec<Option<DeliveryLog>>, StoreError> {
        let now = Utc::now();
        let item_keys: Vec<Key> = keys.iter().map(Key::log).collect();
        let mut found = self.items_by_key(&item_keys).await?;
        let missing: Vec<&DeliveryKey> =
            keys.iter().zip(&item_keys).filter(|(_, key)| !found.contains_key(key)).map(|(key, _)| key).collect();
        let legacy_keys: Vec<Key> = missing.iter().map(|key| Key::legacy_log(key.webhook_id, key.event_id)).collect();
        let mut legacy = if legacy_keys.is_empty() { HashMap::new() } else { self.items_by_key(&legacy_keys).await? };
        let mut entries = Vec::with_capacity(keys.len());
        for (key, item_key) in keys.iter().zip(item_keys) {
            let entry = match found.remove(&item_key) {
                Some(item) => Some(decode_delivery(item)?),
                None => match legacy.remove(&Key::legacy_log(key.webhook_id, key.event_id)) {
                    Some(item) => Some(self.move_legacy_entry(item).await?),
                    None => None,
                },
            };
            entries.push(entry.filter(|entry| !entry.is_expired(now)));
        }
        Ok(entries)
    }

    async fn update_delivery(&self, entry: &DeliveryLog) -> Result<(), StoreError> {
        let expected = entry.version.checked_sub(1).ok_or(StoreError::Conflict)?;
        let item = encode_delivery(entry)?;
        if self.put_item(item, Condition::log_version_is(expected)).await? { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn list_deliveries(
        &self,
        webhook_id: WebhookId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<DeliveryLog>, StoreError> {
        let partition = log_partition(webhook_id);
        let mut start =
            page.cursor.as_ref().map(|cursor| Self::list_start(cursor, &partition, LOG_SORT_PREFIX)).transpose()?;
        if page.limit == 0 {
            return Ok(Page { items: Vec::new(), next: None });
        }
        let wanted = page.limit.saturating_add(1);
        let query = PartitionQuery::logs(webhook_id, state, false, Utc::now());
        let mut found: Vec<DeliveryLog> = Vec::new();
        // Every log query filters, so a read may keep fewer items than it reads: a state
        // filter often, the retention filter only at an expired tail. Reads after the first
        // take bigger bites.
        let mut least_read = if state.is_some() { FILTERED_READ_BATCH } else { 1 };
        loop {
            let missing = wanted - found.len();
            let (items, last) = self.query_page(&query, start, Some(missing.max(least_read))).await?;
            least_read = FILTERED_READ_BATCH;
            for item in items {
                found.push(decode_delivery(item)?);
            }
            if found.len() >= wanted {
                break;
            }
            match last {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        paginate(found, page.limit, |entry| Cursor::encode(&Key::log(&entry.key())))
    }

    async fn deliveries_since(
        &self,
        webhook_id: WebhookId,
        state: DeliveryState,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLog>, StoreError> {
        let mut query = PartitionQuery::logs(webhook_id, Some(state), true, Utc::now());
        query.key_condition = "pk = :pk AND sk BETWEEN :since AND :end";
        query.values.remove(":prefix");
        query.values.insert(":since".to_owned(), string(format!("{LOG_SORT_PREFIX}{}", time_key(since))));
        query.values.insert(":end".to_owned(), string(format!("{LOG_SORT_PREFIX}~")));
        self.query_all(&query).await?.into_iter().map(decode_delivery).collect()
    }

    async fn note_failure(&self, id: WebhookId, now: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(encode(&Key::failing(id))?))
            .update_expression("SET since = if_not_exists(since, :now)")
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(backend)?;
        let since = match output.attributes.as_ref().and_then(|a| a.get("since")) {
            Some(AttributeValue::N(ms)) => ms.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis),
            _ => None,
        };
        Ok(since.unwrap_or(now))
    }

    async fn restart_failures(&self, id: WebhookId, from: DateTime<Utc>) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(encode(&Key::failing(id))?))
            .update_expression("SET since = :from")
            .expression_attribute_values(":from", number(from.timestamp_millis()))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn clear_failures(&self, id: WebhookId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(encode(&Key::failing(id))?))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn reserve_rate_slot(
        &self,
        id: WebhookId,
        limit: Gcra,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let nanos = |at: DateTime<Utc>| number(at.timestamp_nanos_opt().unwrap_or(i64::MAX));
        let interval = limit.interval();
        // `limit.reserve` as conditional updates, no read: while slots are booked ahead (the
        // time is at or past now) the time moves on by one interval; otherwise it starts again
        // from now. Only a change between those two cases can make both conditions fail.
        for _ in 0..RATE_RESERVE_ATTEMPTS {
            let booked = self
                .update_rate_time(
                    id,
                    "SET tat = tat + :interval, #expires_at = :expires",
                    "tat >= :now",
                    [
                        (":interval", number(interval.num_nanoseconds().unwrap_or(i64::MAX))),
                        (":now", nanos(now)),
                        (":expires", number((now + chrono::Duration::days(1)).timestamp())),
                    ],
                )
                .await?;
            if let Some(tat) = booked {
                return Ok(tat - interval);
            }
            let fresh = self
                .update_rate_time(
                    id,
                    "SET tat = :tat, #expires_at = :expires",
                    "attribute_not_exists(tat) OR tat < :now",
                    [
                        (":tat", nanos(now + interval)),
                        (":now", nanos(now)),
                        (":expires", number((now + chrono::Duration::days(1)).timestamp())),
                    ],
                )
                .await?;
            if fresh.is_some() {
                return Ok(now);
            }
        }
        Err(StoreError::Backend("the rate limit's time kept changing under its reservation".into()))
    }

    async fn succeeded_since(&self, id: WebhookId, since: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut query = PartitionQuery::logs(id, Some(DeliveryState::Succeeded), false, Utc::now());
        query.filter = Some("st = :state AND #expires_at >= :now AND u >= :since");
        query.values.insert(":since".to_owned(), number(since.timestamp()));
        let mut start = None;
        loop {
            let (items, last) = self.query_page(&query, start, None).await?;
            if !items.is_empty() {
                return Ok(true);
            }
            match last {
                Some(key) => start = Some(key),
                None => return Ok(false),
            }
        }
    }
}

// ---- moving a table of the first layout ------------------------------------------------

/// What [`migrate_legacy_layout`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub log_entries_moved: usize,
    pub subscriptions_rewritten: usize,
    pub items_scanned: usize,
}

/// Moves every item of the first layout to this one: log entries under `EVENT#` move to their
/// time-ordered key (their `gsi1` attributes go with the old item), subscription pointers
/// become copies of their webhook. Safe to run again, and while senders run: each move is
/// conditional, and senders read either layout.
pub async fn migrate_legacy_layout(client: &Client, table: &str) -> Result<MigrationReport, StoreError> {
    let store = DynamoStore::new(client.clone(), table);
    let mut report = MigrationReport::default();
    let mut start: Option<Item> = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(backend)?;
        for item in output.items.unwrap_or_default() {
            report.items_scanned += 1;
            if is_legacy_log_item(&item) {
                store.move_legacy_entry(item).await?;
                report.log_entries_moved += 1;
                continue;
            }
            let is_subscription = matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with("SUB#"));
            if is_subscription && !item.contains_key("url") {
                let keys = decode::<Key>(item.clone())?;
                let SubscriptionItem::Pointer(id) = decode_subscription(item)? else { continue };
                match store.get_webhook(id).await? {
                    // Rewritten with the webhook's version as it is; a webhook written since
                    // wrote its copies itself.
                    Some(webhook) => {
                        let copy = encode(&Keyed::new(keys.clone(), &webhook))?;
                        store.put_item(copy, Condition::absent_or_pointer()).await?;
                    }
                    None => {
                        client
                            .delete_item()
                            .table_name(table)
                            .set_key(Some(encode(&keys)?))
                            .send()
                            .await
                            .map_err(backend)?;
                    }
                }
                report.subscriptions_rewritten += 1;
            }
        }
        match output.last_evaluated_key.filter(|key| !key.is_empty()) {
            Some(key) => start = Some(key),
            None => return Ok(report),
        }
    }
}

impl Condition {
    /// The item is absent or still the first layout's pointer (it has no `url`).
    fn absent_or_pointer() -> Self {
        Self {
            expression: "attribute_not_exists(pk) OR attribute_not_exists(#url)",
            names: Some(HashMap::from([("#url".to_owned(), "url".to_owned())])),
            values: None,
        }
    }
}
