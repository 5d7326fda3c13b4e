//! The DynamoDB store against moto: the shared conformance suite, plus what only this backend
//! can get wrong (item mapping and size, the fan-out query, cursors, the first layout's items,
//! error text).

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
    DynamoStore, Key, Keyed, LEGACY_PAYLOAD_JSON, TableDefinition, decode, decode_delivery, encode, encode_delivery,
    migrate_legacy_layout,
};
use crate::domain::{Attempt, DeliveryLog, DeliveryState, EventEnvelope, EventPattern, Webhook, WebhookId};
use crate::events::EventType;
use crate::store::conformance::{self, delivery, webhook};
use crate::store::{DeliveryKey, PageRequest, Read, Store, StoreError};

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
    assert_eq!(log.take(), vec!["Query", "Query"], "its type's partition and `*`'s; the items carry their webhooks");
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_created_table_has_the_documented_keys_no_index_and_ttl_and_creating_it_again_is_harmless() {
    let client = client();
    let table = fresh_table(&client).await;

    TableDefinition::create(&client, &table).await.expect("create again");
    let described = client.describe_table().table_name(&table).send().await.expect("describe").table.expect("table");
    let ttl = client.describe_time_to_live().table_name(&table).send().await.expect("ttl");

    let keys: Vec<(&str, KeyType)> =
        described.key_schema().iter().map(|k| (k.attribute_name(), k.key_type().clone())).collect();
    assert_eq!(keys, vec![("pk", KeyType::Hash), ("sk", KeyType::Range)]);
    assert!(described.global_secondary_indexes().is_empty(), "no delivery pays for an index");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    drop_table(&client, &table).await;
}

#[test]
fn the_described_table_names_every_key_a_log_item_carries() {
    let described = TableDefinition::describe();
    let entry = delivery(crate::domain::WebhookId::new(), Utc::now());
    let item = encode_delivery(&entry).expect("encode");

    for name in [TableDefinition::PARTITION_KEY, TableDefinition::SORT_KEY, TableDefinition::TTL_ATTRIBUTE] {
        assert!(item.contains_key(name), "the item lacks {name}");
        assert!(described.contains(&format!(" {name}\n")), "{name} missing from:\n{described}");
    }
    assert!(!described.contains("IndexName"));
    assert!(described.contains("BillingMode: PAY_PER_REQUEST"));
}

/// DynamoDB's item size: attribute names plus values (numbers roughly one byte per two
/// digits), as its write units are counted.
fn item_size(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) => text.len(),
                    AttributeValue::N(number) => number.len().div_ceil(2) + 1,
                    AttributeValue::B(bytes) => bytes.as_ref().len(),
                    _ => 8,
                }
        })
        .sum()
}

/// A realistic OneFuzz `task_created` payload of about 1 KiB.
fn one_kib_event() -> serde_json::Value {
    let mut tags = serde_json::Map::new();
    for i in 0..12 {
        tags.insert(format!("tag{i}"), json!(Uuid::new_v4().to_string()));
    }
    json!({
        "job_id": Uuid::new_v4(), "task_id": Uuid::new_v4(),
        "config": {"job_id": Uuid::new_v4(), "task": {"type": "libfuzzer_fuzz", "duration": 24,
            "target_exe": "fuzz.exe", "target_env": {}, "target_options": ["-max_len=4096"]},
            "pool": {"count": 1, "pool_name": "linux-pool"}, "containers": [{"type": "setup", "name": "setup-c0ffee"}],
            "tags": tags},
        "user_info": {"application_id": Uuid::new_v4(), "object_id": Uuid::new_v4(), "upn": "fuzzer@example.com"}
    })
}

#[test]
fn a_delivered_entry_of_a_one_kib_event_fits_in_one_write_unit() {
    let mut entry = delivery(WebhookId::new(), Utc::now());
    entry.envelope.event = one_kib_event().into();
    let payload = serde_json::to_string(&entry.envelope.event).expect("json").len();
    entry.attempts.push(Attempt {
        attempt: 1,
        at: Utc::now(),
        status_code: Some(200),
        error: None,
        duration_ms: 3,
        response_head: Some("ok".into()),
    });
    entry.state = DeliveryState::Succeeded;
    entry.try_count = 1;

    let size = item_size(&encode_delivery(&entry).expect("encode"));

    assert!(payload >= 1000, "the payload is {payload} bytes");
    assert!(size <= 1024, "a delivered entry's item is {size} bytes");
    eprintln!("a delivered entry of a {payload}-byte event: a {size}-byte item");
}

#[test]
fn a_webhook_and_a_delivery_round_trip_through_their_items() {
    let hook = webhook("a", &[EventType::TaskCreated, EventType::Ping]);
    let mut entry = delivery(hook.webhook_id, Utc::now());
    entry.envelope.event =
        json!({"nested": {"list": [1, "two", null, true], "big": 18_446_744_073_709_551_615_u64, "f": 1.0}}).into();
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
    assert_eq!(entry_item["pk"], AttributeValue::S(format!("LOG#{}", entry.webhook_id)));
    let sort = entry_item["sk"].as_s().expect("string sort key");
    assert_eq!(sort, &format!("T#{:016}#{}", entry.created_at.timestamp_micros(), entry.event_id));
    assert_eq!(entry_item["v"], AttributeValue::N("3".into()));
    assert_eq!(entry_item["st"], AttributeValue::S("queued".into()));
    assert_eq!(decode::<Keyed<Webhook>>(hook_item).expect("decode webhook").record, hook);
    let decoded = decode_delivery(entry_item).expect("decode entry");
    assert_eq!(decoded, entry);
    let bytes = serde_json::to_string(&decoded.envelope.event).expect("json");
    assert!(bytes.contains("18446744073709551615") && bytes.contains("\"f\":1.0"), "{bytes}");
}

// ---- the first layout -------------------------------------------------------------------

/// A log item exactly as the first layout wrote it: the entry's fields as attributes under
/// `EVENT#{event_id}`, the `gsi1` keys beside them, the payload as JSON text.
fn legacy_log_item(entry: &DeliveryLog) -> std::collections::HashMap<String, AttributeValue> {
    #[derive(serde::Serialize)]
    struct Indexed<'a> {
        pk: String,
        sk: String,
        gsi1pk: String,
        gsi1sk: String,
        #[serde(flatten)]
        record: &'a DeliveryLog,
    }
    let pk = format!("LOG#{}", entry.webhook_id);
    let mut item = encode(&Indexed {
        sk: format!("EVENT#{}", entry.event_id),
        gsi1pk: pk.clone(),
        gsi1sk: format!("{}#{}", entry.created_at.format("%Y-%m-%dT%H:%M:%S%.9fZ"), entry.event_id),
        pk,
        record: entry,
    })
    .expect("encode");
    let Some(AttributeValue::M(envelope)) = item.get_mut("envelope") else { panic!("no envelope") };
    envelope.remove("event");
    let payload = serde_json::to_string(&entry.envelope.event).expect("json");
    envelope.insert(LEGACY_PAYLOAD_JSON.to_owned(), AttributeValue::S(payload));
    item
}

async fn put_raw(client: &Client, table: &str, item: std::collections::HashMap<String, AttributeValue>) {
    client.put_item().table_name(table).set_item(Some(item)).send().await.expect("put raw item");
}

/// A store as the first layout left it: a webhook, its subscription pointer, and two log
/// entries (one succeeded, one failed) whose own creation time is later than their event's.
async fn first_layout_store(client: &Client) -> (String, Webhook, Vec<DeliveryLog>) {
    let table = fresh_table(client).await;
    let hook = webhook("old", &[EventType::TaskCreated]);
    put_raw(client, &table, encode(&Keyed::new(Key::webhook(hook.webhook_id), &hook)).expect("webhook")).await;
    let pointer = json!({"pk": format!("SUB#{}", EventType::TaskCreated), "sk": format!("WEBHOOK#{}", hook.webhook_id),
        "webhook_id": hook.webhook_id, "event_type": "task_created"});
    put_raw(client, &table, serde_dynamo::aws_sdk_dynamodb_1::to_item(pointer).expect("pointer")).await;
    let mut entries = Vec::new();
    for (minutes, state) in [(10, DeliveryState::Succeeded), (5, DeliveryState::Failed)] {
        let event_time = Utc::now() - Duration::minutes(minutes);
        let envelope = EventEnvelope {
            event_id: Uuid::new_v4(),
            event_type: EventType::TaskCreated,
            event: json!({"n": 1.0, "minutes": minutes}).into(),
            instance_id: Uuid::nil(),
            instance_name: "old".into(),
            created_at: event_time,
        };
        let mut entry = DeliveryLog::new(hook.webhook_id, envelope, event_time, Duration::days(7));
        entry.created_at = event_time + Duration::seconds(2);
        entry.state = state;
        entry.try_count = 1;
        entry.next_attempt_at = None;
        entry.version = 2;
        put_raw(client, &table, legacy_log_item(&entry)).await;
        entries.push(entry);
    }
    (table, hook, entries)
}

#[tokio::test]
async fn items_of_the_first_layout_read_and_a_sender_moves_the_entries_it_meets() {
    let client = client();
    let (table, hook, entries) = first_layout_store(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());

    let subscribers = store.subscribers(EventType::TaskCreated).await.expect("subscribers");
    let looked_up = store.get_delivery(hook.webhook_id, entries[0].event_id).await.expect("get").expect("found");
    let key = DeliveryKey::of(hook.webhook_id, &entries[1].envelope);
    let mut loaded = store.load_delivery(&key, Read::MaybeStale).await.expect("load").expect("found");
    loaded.fail_pending(Utc::now());
    loaded.state = DeliveryState::Succeeded;
    loaded.version += 1;
    store.update_delivery(&loaded).await.expect("an update after the move lands on the new item");

    assert_eq!(subscribers.iter().map(|w| w.webhook_id).collect::<Vec<_>>(), vec![hook.webhook_id]);
    assert_eq!(looked_up.event_id, entries[0].event_id);
    assert_eq!(*looked_up.envelope.event, json!({"n": 1.0, "minutes": 10}));
    assert_eq!(looked_up.created_at, entries[0].envelope.created_at, "ordered by the event's time now");
    let again = store.load_delivery(&key, Read::Latest).await.expect("load").expect("found");
    assert_eq!(again.state, DeliveryState::Succeeded);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn the_migration_moves_a_first_layout_table_and_everything_lists_and_redelivers_after_it() {
    let client = client();
    let (table, hook, entries) = first_layout_store(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());

    let first = migrate_legacy_layout(&client, &table).await.expect("migrate");
    let second = migrate_legacy_layout(&client, &table).await.expect("migrate again");

    assert_eq!((first.log_entries_moved, first.subscriptions_rewritten), (2, 1));
    assert_eq!((second.log_entries_moved, second.subscriptions_rewritten), (0, 0), "running it again is harmless");
    let listed =
        store.list_deliveries(hook.webhook_id, None, PageRequest { limit: 10, cursor: None }).await.expect("list");
    let ids: Vec<Uuid> = listed.items.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, vec![entries[1].event_id, entries[0].event_id], "newest first");
    let failed = store
        .deliveries_since(hook.webhook_id, DeliveryState::Failed, Utc::now() - Duration::hours(1))
        .await
        .expect("since");
    assert_eq!(failed.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![entries[1].event_id]);
    let raw = client.scan().table_name(&table).send().await.expect("scan").items.unwrap_or_default();
    assert!(raw.iter().all(|item| !item.contains_key("gsi1pk")), "no item is left in the old index");
    let subscription =
        raw.iter().find(|item| matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with("SUB#")));
    assert!(subscription.expect("subscription").contains_key("url"), "the pointer became a copy");
    drop_table(&client, &table).await;
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
        update.event_types = vec![event_type.into()];
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
    assert_eq!(stored.event_types, winners.iter().map(|t| EventPattern::Type(*t)).collect::<Vec<_>>());
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
