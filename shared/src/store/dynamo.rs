//! The AWS store: one DynamoDB table holds every kind of record, told apart by key prefixes.
//!
//! # Table (the SAM template mirrors [`TableDefinition::describe`])
//!
//! - Partition key `pk` (S), sort key `sk` (S); on-demand billing (`PAY_PER_REQUEST`).
//! - Global secondary index `gsi1`: partition key `gsi1pk` (S), sort key `gsi1sk` (S),
//!   projection `ALL`.
//! - Time to live on the number attribute `expires_at` (unix seconds).
//!
//! | record       | `pk`               | `sk`                   | `gsi1pk`           | `gsi1sk`         |
//! |--------------|--------------------|------------------------|--------------------|------------------|
//! | webhook      | `WEBHOOKS`         | `WEBHOOK#{webhook_id}` |                    |                  |
//! | subscription | `SUB#{event_type}` | `WEBHOOK#{webhook_id}` |                    |                  |
//! | delivery log | `LOG#{webhook_id}` | `EVENT#{event_id}`     | `LOG#{webhook_id}` | `{created_at}#{event_id}` |
//!
//! `{created_at}` is RFC 3339 UTC with exactly nine fractional digits
//! (`2026-11-28T13:45:00.123456789Z`) so that string order is time order at full precision.
//! Ids are lowercase hyphenated
//! UUIDs, whose string order is their byte order. Every record's own fields sit next to its
//! keys as ordinary attributes (mapped with `serde_dynamo`), except a log entry's event
//! payload, kept as JSON text in `envelope.event_json` so that its bytes survive.
//!
//! Why this shape:
//! - Webhooks share one partition so that a Query lists them in id order. There are few and
//!   they change rarely, so the single partition is not a hot spot.
//! - One subscription item per (event type, webhook) makes the sender's fan-out a Query of one
//!   partition plus a BatchGetItem: it costs O(subscribers), never O(webhooks). Every write
//!   that changes a webhook's `event_types` changes its subscription items in the same
//!   TransactWriteItems, conditional on the webhook's `version`.
//! - Delivery logs are keyed by (webhook, event) in the table, so `insert_delivery` is a
//!   conditional put (at-least-once dedup), and by creation time in `gsi1` for newest-first
//!   listing. TTL forgets them. A GSI is eventually consistent: a list right after an insert
//!   can miss the new entry for a moment; `get_delivery` never does.
//! - Pending delivery tasks are not here: in AWS they are SQS messages.
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
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex, IndexStatus, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType, TableDescription, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Cursor, Page, PageRequest, Store, StoreError};
use crate::domain::{DeliveryLog, DeliveryState, Webhook, WebhookId};
use crate::events::EventType;

#[cfg(test)]
#[path = "dynamo_tests.rs"]
mod tests;

type Item = HashMap<String, AttributeValue>;

const WEBHOOKS_PARTITION: &str = "WEBHOOKS";
const WEBHOOK_SORT_PREFIX: &str = "WEBHOOK#";

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
/// A new table with an index can take minutes to become ACTIVE in AWS.
const TABLE_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The table's shape, for [`TableDefinition::create`] and for the SAM template to mirror.
pub struct TableDefinition;

impl TableDefinition {
    pub const PARTITION_KEY: &'static str = "pk";
    pub const SORT_KEY: &'static str = "sk";
    pub const INDEX_NAME: &'static str = "gsi1";
    pub const INDEX_PARTITION_KEY: &'static str = "gsi1pk";
    pub const INDEX_SORT_KEY: &'static str = "gsi1sk";
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
  - AttributeName: {gpk}
    AttributeType: S
  - AttributeName: {gsk}
    AttributeType: S
KeySchema:
  - AttributeName: {pk}
    KeyType: HASH
  - AttributeName: {sk}
    KeyType: RANGE
GlobalSecondaryIndexes:
  - IndexName: {index}
    KeySchema:
      - AttributeName: {gpk}
        KeyType: HASH
      - AttributeName: {gsk}
        KeyType: RANGE
    Projection:
      ProjectionType: ALL
TimeToLiveSpecification:
  AttributeName: {ttl}
  Enabled: true
",
            pk = Self::PARTITION_KEY,
            sk = Self::SORT_KEY,
            gpk = Self::INDEX_PARTITION_KEY,
            gsk = Self::INDEX_SORT_KEY,
            index = Self::INDEX_NAME,
            ttl = Self::TTL_ATTRIBUTE,
        )
    }

    /// Creates the table (or accepts an existing one of the same shape), waits until it and
    /// its index are ACTIVE, then turns on TTL.
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
        let index = GlobalSecondaryIndex::builder()
            .index_name(Self::INDEX_NAME)
            .key_schema(key(Self::INDEX_PARTITION_KEY, KeyType::Hash)?)
            .key_schema(key(Self::INDEX_SORT_KEY, KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(backend)?;
        let created = client
            .create_table()
            .table_name(table_name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(Self::PARTITION_KEY)?)
            .attribute_definitions(string_attribute(Self::SORT_KEY)?)
            .attribute_definitions(string_attribute(Self::INDEX_PARTITION_KEY)?)
            .attribute_definitions(string_attribute(Self::INDEX_SORT_KEY)?)
            .key_schema(key(Self::PARTITION_KEY, KeyType::Hash)?)
            .key_schema(key(Self::SORT_KEY, KeyType::Range)?)
            .global_secondary_indexes(index)
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
        let expected_index_keys = vec![
            (Self::INDEX_PARTITION_KEY.to_owned(), KeyType::Hash),
            (Self::INDEX_SORT_KEY.to_owned(), KeyType::Range),
        ];
        let index_ok = table.global_secondary_indexes().iter().any(|index| {
            index.index_name() == Some(Self::INDEX_NAME) && keys(index.key_schema()) == expected_index_keys
        });
        if keys(table.key_schema()) == expected_keys && index_ok {
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

/// A table key; also the position a webhook-list cursor carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Key {
    pk: String,
    sk: String,
}

impl Key {
    fn webhook(id: WebhookId) -> Self {
        Self { pk: WEBHOOKS_PARTITION.to_owned(), sk: webhook_sort(id) }
    }

    fn subscription(event_type: EventType, id: WebhookId) -> Self {
        Self { pk: subscription_partition(event_type), sk: webhook_sort(id) }
    }

    fn log(webhook_id: WebhookId, event_id: Uuid) -> Self {
        Self { pk: log_partition(webhook_id), sk: format!("EVENT#{event_id}") }
    }
}

/// A table key plus index key: what resuming a query of `gsi1` needs, and what a log-list
/// cursor carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexedKey {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
}

impl IndexedKey {
    fn log(entry: &DeliveryLog) -> Self {
        let Key { pk, sk } = Key::log(entry.webhook_id, entry.event_id);
        Self { gsi1pk: pk.clone(), gsi1sk: format!("{}#{}", time_key(entry.created_at), entry.event_id), pk, sk }
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

/// A record stored under a table key and an index key.
#[derive(Serialize, Deserialize)]
struct Indexed<T> {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    record: T,
}

impl<T> Indexed<T> {
    fn new(key: IndexedKey, record: T) -> Self {
        Self { pk: key.pk, sk: key.sk, gsi1pk: key.gsi1pk, gsi1sk: key.gsi1sk, record }
    }
}

#[derive(Serialize, Deserialize)]
struct Subscription {
    webhook_id: WebhookId,
    event_type: EventType,
}

fn webhook_sort(id: WebhookId) -> String {
    format!("{WEBHOOK_SORT_PREFIX}{id}")
}

fn subscription_partition(event_type: EventType) -> String {
    format!("SUB#{event_type}")
}

fn log_partition(webhook_id: WebhookId) -> String {
    format!("LOG#{webhook_id}")
}

fn time_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn encode<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::to_item(value)
        .map_err(|err| StoreError::Backend(format!("cannot encode a DynamoDB item: {err}")))
}

fn decode<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|err| StoreError::Backend(format!("cannot decode a DynamoDB item: {err}")))
}

/// Where a log item keeps its event payload: JSON text inside the envelope map. As native
/// attributes, DynamoDB would normalise numbers (`1.0` reads back as `1`), and a retry would
/// not send the bytes the first attempt sent. Items written before keep `event` as a map.
const PAYLOAD_JSON: &str = "event_json";

fn encode_delivery(entry: &DeliveryLog) -> Result<Item, StoreError> {
    let mut item = encode(&Indexed::new(IndexedKey::log(entry), entry))?;
    let payload = serde_json::to_string(&entry.envelope.event).map_err(StoreError::backend)?;
    match item.get_mut("envelope") {
        Some(AttributeValue::M(envelope)) => {
            envelope.remove("event");
            envelope.insert(PAYLOAD_JSON.to_owned(), AttributeValue::S(payload));
            Ok(item)
        }
        _ => Err(StoreError::Backend("a log entry encoded without its envelope".into())),
    }
}

fn decode_delivery(mut item: Item) -> Result<DeliveryLog, StoreError> {
    let payload = match item.get_mut("envelope") {
        Some(AttributeValue::M(envelope)) => match envelope.remove(PAYLOAD_JSON) {
            Some(AttributeValue::S(json)) => {
                envelope.insert("event".to_owned(), AttributeValue::Null(true));
                Some(json)
            }
            _ => None,
        },
        _ => None,
    };
    let mut entry = decode::<Indexed<DeliveryLog>>(item)?.record;
    if let Some(json) = payload {
        entry.envelope.event = serde_json::from_str(&json)
            .map_err(|err| StoreError::Backend(format!("a log entry's payload is not JSON: {err}")))?;
    }
    Ok(entry)
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
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
            values: Some(HashMap::from([(":now".to_owned(), AttributeValue::N(now.timestamp().to_string()))])),
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
        Self::equals("version", AttributeValue::N(version.to_string()))
    }
}

/// A Query over one partition of the table or of `gsi1`.
struct PartitionQuery {
    index: Option<&'static str>,
    key_condition: &'static str,
    names: Option<HashMap<String, String>>,
    values: Item,
    filter: Option<&'static str>,
    forward: bool,
}

impl PartitionQuery {
    fn table(partition: &str) -> Self {
        Self {
            index: None,
            key_condition: "pk = :pk",
            names: None,
            values: HashMap::from([(":pk".to_owned(), string(partition))]),
            filter: None,
            forward: true,
        }
    }

    /// A webhook's log entries by creation time, optionally only those in `state`.
    /// A webhook's log entries still within retention at `now`: TTL deletes lazily, and an
    /// entry past retention is gone all the same.
    fn logs(webhook_id: WebhookId, state: Option<DeliveryState>, forward: bool, now: DateTime<Utc>) -> Self {
        let mut query = Self {
            index: Some(TableDefinition::INDEX_NAME),
            key_condition: "gsi1pk = :pk",
            names: Some(HashMap::from([("#expires_at".to_owned(), TableDefinition::TTL_ATTRIBUTE.to_owned())])),
            values: HashMap::from([
                (":pk".to_owned(), string(log_partition(webhook_id))),
                (":now".to_owned(), AttributeValue::N(now.timestamp().to_string())),
            ]),
            filter: Some("#expires_at >= :now"),
            forward,
        };
        if let Some(state) = state {
            // `state` is a DynamoDB reserved word.
            query.filter = Some("#state = :state AND #expires_at >= :now");
            query.names.get_or_insert_default().insert("#state".to_owned(), "state".to_owned());
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
    async fn get_item(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(encode(key)?))
            .consistent_read(true)
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
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(query.key_condition)
            .set_expression_attribute_names(query.names.clone())
            .set_expression_attribute_values(Some(query.values.clone()))
            .set_filter_expression(query.filter.map(str::to_owned))
            .scan_index_forward(query.forward)
            // Strong reads are refused on a global index, and free of surprises on the table.
            .consistent_read(query.index.is_none())
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

    /// The webhooks with these ids that exist, in the order of `ids`.
    async fn webhooks_by_id(&self, ids: &[WebhookId]) -> Result<Vec<Webhook>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_GET_MAX_KEYS) {
            let keys = chunk.iter().map(|id| encode(&Key::webhook(*id))).collect::<Result<Vec<_>, _>>()?;
            let mut pending =
                Some(KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build().map_err(backend)?);
            let mut retries = 0;
            while let Some(request) = pending.take() {
                let output =
                    self.client.batch_get_item().request_items(&self.table, request).send().await.map_err(backend)?;
                for item in output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let webhook = decode::<Keyed<Webhook>>(item)?.record;
                    found.insert(webhook.webhook_id, webhook);
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
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
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

    fn subscription_write(
        &self,
        event_type: EventType,
        webhook_id: WebhookId,
    ) -> Result<TransactWriteItem, StoreError> {
        let item =
            encode(&Keyed::new(Key::subscription(event_type, webhook_id), Subscription { webhook_id, event_type }))?;
        self.put_write(item, None)
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

    /// Where a cursor for the list of `partition` resumes, if it is one.
    fn webhook_list_start(cursor: &Cursor, partition: &str) -> Result<Item, StoreError> {
        let key: Key = cursor.decode()?;
        if key.pk != partition || !key.sk.starts_with(WEBHOOK_SORT_PREFIX) {
            return Err(StoreError::BadCursor);
        }
        encode(&key)
    }

    /// Where a cursor for `webhook_id`'s log list resumes, if it is one.
    fn log_list_start(cursor: &Cursor, webhook_id: WebhookId) -> Result<Item, StoreError> {
        let key: IndexedKey = cursor.decode()?;
        let partition = log_partition(webhook_id);
        if key.pk != partition || key.gsi1pk != partition {
            return Err(StoreError::BadCursor);
        }
        encode(&key)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let id = webhook.webhook_id;
        let mut writes =
            vec![self.put_write(encode(&Keyed::new(Key::webhook(id), webhook))?, Some(Condition::absent()))?];
        // A set: one transaction may not touch the same subscription item twice.
        for event_type in webhook.event_types.iter().copied().collect::<BTreeSet<_>>() {
            writes.push(self.subscription_write(event_type, id)?);
        }
        match self.transact(writes).await {
            Ok(()) => Ok(()),
            Err(TransactFailure::Condition | TransactFailure::Contention) => Err(StoreError::Conflict),
            Err(TransactFailure::Backend(err)) => Err(err),
        }
    }

    async fn get_webhook(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        self.get_item(&Key::webhook(id))
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
        let before: BTreeSet<EventType> = current.event_types.iter().copied().collect();
        let after: BTreeSet<EventType> = webhook.event_types.iter().copied().collect();
        let mut writes = vec![
            self.put_write(encode(&Keyed::new(Key::webhook(id), webhook))?, Some(Condition::version_is(expected)))?,
        ];
        for removed in before.difference(&after) {
            writes.push(self.delete_write(&Key::subscription(*removed, id), None)?);
        }
        for added in after.difference(&before) {
            writes.push(self.subscription_write(*added, id)?);
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
            let mut writes = vec![self.delete_write(&Key::webhook(id), Some(Condition::version_is(current.version)))?];
            for event_type in current.event_types.iter().copied().collect::<BTreeSet<_>>() {
                writes.push(self.delete_write(&Key::subscription(event_type, id), None)?);
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
            Some(event_type) => subscription_partition(event_type),
            None => WEBHOOKS_PARTITION.to_owned(),
        };
        let mut start = page.cursor.as_ref().map(|cursor| Self::webhook_list_start(cursor, &partition)).transpose()?;
        if page.limit == 0 {
            return Ok(Page { items: Vec::new(), next: None });
        }
        let wanted = page.limit.saturating_add(1);
        let query = PartitionQuery::table(&partition);
        let mut found: Vec<Webhook> = Vec::new();
        loop {
            let (items, last) = self.query_page(&query, start, Some(wanted - found.len())).await?;
            match event_type {
                None => {
                    for item in items {
                        found.push(decode::<Keyed<Webhook>>(item)?.record);
                    }
                }
                Some(event_type) => {
                    let ids = items
                        .into_iter()
                        .map(|item| decode::<Keyed<Subscription>>(item).map(|keyed| keyed.record.webhook_id))
                        .collect::<Result<Vec<_>, _>>()?;
                    // A webhook deleted or moved between the two reads is left out, not
                    // shown under a type it no longer has.
                    let webhooks = self.webhooks_by_id(&ids).await?;
                    found.extend(webhooks.into_iter().filter(|w| w.event_types.contains(&event_type)));
                }
            }
            if found.len() >= wanted {
                break;
            }
            match last {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        paginate(found, page.limit, |webhook| {
            Cursor::encode(&Key { pk: partition.clone(), sk: webhook_sort(webhook.webhook_id) })
        })
    }

    async fn subscribers(&self, event_type: EventType) -> Result<Vec<Webhook>, StoreError> {
        let ids = self
            .query_all(&PartitionQuery::table(&subscription_partition(event_type)))
            .await?
            .into_iter()
            .map(|item| decode::<Keyed<Subscription>>(item).map(|keyed| keyed.record.webhook_id))
            .collect::<Result<Vec<_>, _>>()?;
        let webhooks = self.webhooks_by_id(&ids).await?;
        Ok(webhooks.into_iter().filter(|webhook| webhook.event_types.contains(&event_type)).collect())
    }

    async fn insert_delivery(&self, entry: &DeliveryLog) -> Result<bool, StoreError> {
        self.put_item(encode_delivery(entry)?, Condition::absent_or_expired(Utc::now())).await
    }

    async fn get_delivery(&self, webhook_id: WebhookId, event_id: Uuid) -> Result<Option<DeliveryLog>, StoreError> {
        let entry = self.get_item(&Key::log(webhook_id, event_id)).await?.map(decode_delivery).transpose()?;
        Ok(entry.filter(|entry| !entry.is_expired(Utc::now())))
    }

    async fn update_delivery(&self, entry: &DeliveryLog) -> Result<(), StoreError> {
        let expected = entry.version.checked_sub(1).ok_or(StoreError::Conflict)?;
        let item = encode_delivery(entry)?;
        if self.put_item(item, Condition::version_is(expected)).await? { Ok(()) } else { Err(StoreError::Conflict) }
    }

    async fn list_deliveries(
        &self,
        webhook_id: WebhookId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<DeliveryLog>, StoreError> {
        let mut start = page.cursor.as_ref().map(|cursor| Self::log_list_start(cursor, webhook_id)).transpose()?;
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
        paginate(found, page.limit, |entry| Cursor::encode(&IndexedKey::log(entry)))
    }

    async fn deliveries_since(
        &self,
        webhook_id: WebhookId,
        state: DeliveryState,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeliveryLog>, StoreError> {
        let mut query = PartitionQuery::logs(webhook_id, Some(state), true, Utc::now());
        // An entry at exactly `since` has a longer key with the same prefix, so `>=` keeps it.
        query.key_condition = "gsi1pk = :pk AND gsi1sk >= :since";
        query.values.insert(":since".to_owned(), string(time_key(since)));
        self.query_all(&query).await?.into_iter().map(decode_delivery).collect()
    }
}
