//! The DynamoDB store against moto: the shared conformance suite, plus what only this backend
//! can get wrong (item mapping, the fan-out query, cursors, rescheduling, error text).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents};
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, TimeToLiveStatus};
use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    DynamoStore, Indexed, IndexedKey, Key, Keyed, TableDefinition, decode, decode_delivery, encode, encode_delivery,
};
use crate::domain::{Attempt, DeliveryState, Webhook, WebhookId};
use crate::events::EventType;
use crate::store::conformance::{self, delivery, webhook};
use crate::store::{PageRequest, Store, StoreError};

/// The emulator's address. A missing emulator fails the test rather than skipping it: a
/// skipped adapter test reads as a passing one.
fn emulator_url() -> String {
    let url = std::env::var("WEBHOOKS_TEST_MOTO_URL").or_else(|_| std::env::var("AWS_ENDPOINT_URL"));
    match url {
        Ok(url) if !url.trim().is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must run a DynamoDB emulator: set WEBHOOKS_TEST_MOTO_URL or AWS_ENDPOINT_URL (see scripts/test)")
        }
        _ => panic!(
            "no DynamoDB emulator: run scripts/test, or start `.venv/bin/moto_server -p 5055` and set \
             AWS_ENDPOINT_URL=http://127.0.0.1:5055"
        ),
    }
}

/// Every setting explicit, none from the process environment, so parallel tests never race
/// on env vars and never probe the instance-metadata address for credentials.
fn client_with(log: Option<OperationLog>) -> Client {
    let mut config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .endpoint_url(emulator_url());
    if let Some(log) = log {
        config = config.interceptor(log);
    }
    Client::from_conf(config.build())
}

fn client() -> Client {
    client_with(None)
}

async fn fresh_table(client: &Client) -> String {
    let table = format!("webhooks-test-{}", Uuid::new_v4());
    TableDefinition::create(client, &table).await.expect("create table");
    table
}

async fn drop_table(client: &Client, table: &str) {
    client.delete_table().table_name(table).send().await.expect("delete table");
}

/// Records the DynamoDB operation of every request sent, read from its `X-Amz-Target`.
#[derive(Debug, Clone, Default)]
struct OperationLog(Arc<Mutex<Vec<String>>>);

impl OperationLog {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "OperationLog"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            let operation = target.rsplit('.').next().unwrap_or(target);
            self.0.lock().unwrap().push(operation.to_owned());
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_dynamodb_store_passes_the_conformance_suite() {
    let client = client();
    let tables = Arc::new(Mutex::new(Vec::new()));

    conformance::run_all(|| {
        let client = client.clone();
        let tables = Arc::clone(&tables);
        async move {
            let table = fresh_table(&client).await;
            tables.lock().unwrap().push(table.clone());
            Arc::new(DynamoStore::new(client, table)) as Arc<dyn Store>
        }
    })
    .await;

    let tables = std::mem::take(&mut *tables.lock().unwrap());
    for table in tables {
        drop_table(&client, &table).await;
    }
}

#[tokio::test]
async fn subscribers_are_found_by_a_query_of_their_partition_not_a_scan() {
    let log = OperationLog::default();
    let client = client_with(Some(log.clone()));
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let mut subscribed = HashSet::new();
    for i in 0..30 {
        let types: &[EventType] = match i % 10 {
            0 => &[EventType::TaskStopped, EventType::TaskCreated],
            1..=5 => &[EventType::TaskCreated],
            _ => &[],
        };
        let hook = webhook(&format!("hook-{i}"), types);
        if types.contains(&EventType::TaskStopped) {
            subscribed.insert(hook.webhook_id);
        }
        store.create_webhook(&hook).await.expect("create");
    }
    log.take();

    let found = store.subscribers(EventType::TaskStopped).await.expect("subscribers");

    assert_eq!(found.iter().map(|w| w.webhook_id).collect::<HashSet<_>>(), subscribed);
    assert_eq!(found.len(), 3);
    assert_eq!(log.take(), vec!["Query", "BatchGetItem"]);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_created_table_has_the_documented_keys_index_and_ttl_and_creating_it_again_is_harmless() {
    let client = client();
    let table = fresh_table(&client).await;

    TableDefinition::create(&client, &table).await.expect("create again");
    let described = client.describe_table().table_name(&table).send().await.expect("describe").table.expect("table");
    let ttl = client.describe_time_to_live().table_name(&table).send().await.expect("ttl");

    let keys: Vec<(&str, KeyType)> =
        described.key_schema().iter().map(|k| (k.attribute_name(), k.key_type().clone())).collect();
    assert_eq!(keys, vec![("pk", KeyType::Hash), ("sk", KeyType::Range)]);
    let index = &described.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), Some(TableDefinition::INDEX_NAME));
    let index_keys: Vec<&str> = index.key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(index_keys, vec!["gsi1pk", "gsi1sk"]);
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    drop_table(&client, &table).await;
}

#[test]
fn the_described_table_names_every_key_a_log_item_carries() {
    let described = TableDefinition::describe();
    let entry = delivery(crate::domain::WebhookId::new(), Utc::now());
    let item = encode(&Indexed::new(IndexedKey::log(&entry), &entry)).expect("encode");

    for name in [
        TableDefinition::PARTITION_KEY,
        TableDefinition::SORT_KEY,
        TableDefinition::INDEX_PARTITION_KEY,
        TableDefinition::INDEX_SORT_KEY,
        TableDefinition::TTL_ATTRIBUTE,
    ] {
        assert!(item.contains_key(name), "the item lacks {name}");
        assert!(described.contains(&format!(" {name}\n")), "{name} missing from:\n{described}");
    }
    assert!(described.contains(&format!("IndexName: {}\n", TableDefinition::INDEX_NAME)));
    assert!(described.contains("BillingMode: PAY_PER_REQUEST"));
}

#[test]
fn a_webhook_and_a_delivery_round_trip_through_their_items() {
    let hook = webhook("a", &[EventType::TaskCreated, EventType::Ping]);
    let mut entry = delivery(hook.webhook_id, Utc::now());
    entry.envelope.event = json!({"nested": {"list": [1, "two", null, true], "big": 18_446_744_073_709_551_615_u64}});
    entry.attempts.push(Attempt {
        attempt: 1,
        at: Utc::now(),
        status_code: Some(503),
        error: Some("unavailable".into()),
        duration_ms: 7,
        response_head: None,
    });
    entry.version = 3;

    let hook_item = encode(&Keyed::new(Key::webhook(hook.webhook_id), &hook)).expect("encode webhook");
    let entry_item = encode_delivery(&entry).expect("encode entry");

    assert_eq!(hook_item["pk"], AttributeValue::S("WEBHOOKS".into()));
    assert_eq!(hook_item["sk"], AttributeValue::S(format!("WEBHOOK#{}", hook.webhook_id)));
    assert_eq!(entry_item["expires_at"], AttributeValue::N(entry.expires_at.to_string()), "TTL needs a number");
    assert_eq!(entry_item["gsi1pk"], AttributeValue::S(format!("LOG#{}", entry.webhook_id)));
    let time = entry_item["gsi1sk"].as_s().expect("string sort key");
    assert_eq!(time.len(), "2026-11-28T13:45:00.123456789Z#".len() + 36, "{time}");
    assert_eq!(decode::<Keyed<Webhook>>(hook_item).expect("decode webhook").record, hook);
    let envelope = entry_item["envelope"].as_m().expect("envelope map");
    assert!(!envelope.contains_key("event"), "the payload is kept as JSON text, not as attributes");
    assert!(envelope["event_json"].as_s().expect("JSON text").contains("18446744073709551615"));
    assert_eq!(decode_delivery(entry_item).expect("decode entry"), entry);
}

#[test]
fn a_log_item_with_its_payload_as_attributes_still_decodes() {
    // How log items were written before payloads became JSON text.
    let mut entry = delivery(WebhookId::new(), Utc::now());
    entry.envelope.event = json!({"task": {"id": "t-1", "tags": ["a"]}, "count": 2});
    let old_item = encode(&Indexed::new(IndexedKey::log(&entry), &entry)).expect("encode");

    assert_eq!(decode_delivery(old_item).expect("decode"), entry);
}

#[tokio::test]
async fn a_cursor_from_another_listing_is_refused() {
    let client = client();
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    for i in 0..2 {
        store.create_webhook(&webhook(&format!("hook-{i}"), &[EventType::Ping])).await.expect("create");
    }
    let webhook_id = crate::domain::WebhookId::new();
    for minutes in 0..2 {
        store.insert_delivery(&delivery(webhook_id, Utc::now() - Duration::minutes(minutes))).await.expect("insert");
    }
    let all = store.list_webhooks(None, PageRequest { limit: 1, cursor: None }).await.expect("list");
    let logs = store.list_deliveries(webhook_id, None, PageRequest { limit: 1, cursor: None }).await.expect("logs");

    let by_type = store.list_webhooks(Some(EventType::Ping), PageRequest { limit: 1, cursor: all.next.clone() }).await;
    let other_logs = store
        .list_deliveries(crate::domain::WebhookId::new(), None, PageRequest { limit: 1, cursor: logs.next.clone() })
        .await;
    let logs_as_webhooks = store.list_webhooks(None, PageRequest { limit: 1, cursor: logs.next.clone() }).await;

    assert!(all.next.is_some() && logs.next.is_some());
    assert!(matches!(by_type, Err(StoreError::BadCursor)), "{by_type:?}");
    assert!(matches!(other_logs, Err(StoreError::BadCursor)), "{other_logs:?}");
    assert!(matches!(logs_as_webhooks, Err(StoreError::BadCursor)), "{logs_as_webhooks:?}");
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_sparse_state_filter_still_fills_pages_without_skipping() {
    let client = client();
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let webhook_id = crate::domain::WebhookId::new();
    let start = Utc::now() - Duration::hours(1);
    let mut failed = Vec::new();
    for i in 0..9 {
        let mut entry = delivery(webhook_id, start + Duration::minutes(i));
        if i % 4 == 0 {
            entry.state = DeliveryState::Failed;
            failed.push(entry.event_id);
        }
        store.insert_delivery(&entry).await.expect("insert");
    }

    let mut listed = Vec::new();
    let mut pages = 0;
    let mut cursor = None;
    loop {
        let page = store
            .list_deliveries(webhook_id, Some(DeliveryState::Failed), PageRequest { limit: 2, cursor })
            .await
            .expect("page");
        pages += 1;
        listed.extend(page.items.iter().map(|e| e.event_id));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }

    failed.reverse();
    assert_eq!(listed, failed);
    assert_eq!(pages, 2);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn concurrent_updates_from_one_version_let_exactly_one_win() {
    let client = client();
    let table = fresh_table(&client).await;
    let store = Arc::new(DynamoStore::new(client.clone(), table.clone()));
    let hook = webhook("contended", &[EventType::TaskCreated]);
    store.create_webhook(&hook).await.expect("create");
    let candidates = [EventType::JobCreated, EventType::NodeCreated, EventType::PoolCreated, EventType::ProxyCreated];

    let mut handles = Vec::new();
    for event_type in candidates {
        let store = Arc::clone(&store);
        let mut update = hook.clone();
        update.version = 1;
        update.event_types = vec![event_type];
        handles.push(tokio::spawn(async move { (event_type, store.update_webhook(&update).await) }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        match handle.await.expect("join") {
            (event_type, Ok(())) => winners.push(event_type),
            (_, Err(StoreError::Conflict)) => {}
            (_, Err(other)) => panic!("unexpected {other:?}"),
        }
    }

    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = store.get_webhook(hook.webhook_id).await.expect("get").expect("exists");
    assert_eq!(stored.event_types, winners);
    for event_type in candidates.into_iter().chain([EventType::TaskCreated]) {
        let expected = usize::from(winners.contains(&event_type));
        assert_eq!(store.subscribers(event_type).await.expect("subs").len(), expected, "{event_type}");
    }
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_backend_failure_names_its_cause() {
    let store = DynamoStore::new(client(), format!("no-such-table-{}", Uuid::new_v4()));

    let result = store.get_webhook(crate::domain::WebhookId::new()).await;

    match result {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("ResourceNotFound"), "{message}")
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}
