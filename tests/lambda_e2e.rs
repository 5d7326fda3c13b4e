//! End to end through the deployed artefacts: the real compiled Lambda binaries, each a child
//! process polling its own Lambda Runtime API emulator, against DynamoDB and SQS in moto, with
//! a loopback receiver at the other end. Events are the JSON API Gateway (HTTP API, payload
//! 2.0) and the SQS event source mapping hand to Lambda.
//!
//! Needs the binaries built first (`cargo build --workspace --bins`; `scripts/test` does it).

#![allow(clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use webhooks_tests::runtime_api::{HttpReply, LambdaProcess, http_event, sqs_event};
use webhooks_tests::{Received, Receiver, moto};

const SECRET: &str = "e2e-receiver-secret";

const HTTP_FUNCTIONS: [&str; 11] = [
    "create-webhook",
    "list-webhooks",
    "get-webhook",
    "update-webhook",
    "delete-webhook",
    "ping-webhook",
    "webhook-logs",
    "redeliver",
    "publish-event",
    "onefuzz-compat",
    "event-types",
];

struct Deployment {
    functions: Vec<LambdaProcess>,
    events_queue: String,
    dead_letter_queue: String,
}

impl Deployment {
    /// Creates the table and queues in moto, then cold-starts every function, one at a time
    /// so each start is timed alone.
    async fn start() -> Self {
        let (_store, table) = moto::dynamo_store().await;
        let events_queue = moto::queue("e2e-events").await;
        let dead_letter_queue = moto::queue("e2e-dlq").await;
        let env = [
            ("TABLE_NAME", table),
            ("EVENTS_QUEUE_URL", events_queue.clone()),
            ("DEAD_LETTER_QUEUE_URL", dead_letter_queue.clone()),
            ("AWS_ENDPOINT_URL", moto::endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
            ("RETRY_SCHEDULE", "1,1".to_owned()),
            ("DELIVERY_TIMEOUT_SECS", "5".to_owned()),
            ("INSTANCE_NAME", "lambda-e2e".to_owned()),
        ];
        let mut functions = Vec::new();
        for package in HTTP_FUNCTIONS.iter().copied().chain(["sender"]) {
            functions.push(LambdaProcess::start(package, &env).await);
        }
        Self { functions, events_queue, dead_letter_queue }
    }

    fn function(&self, name: &str) -> &LambdaProcess {
        self.functions.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no function {name}"))
    }

    /// One HTTP API request through the function that serves `route_key`.
    async fn http(&self, function: &str, route_key: &str, path: &str, body: Option<Value>) -> HttpReply {
        self.function(function).request(http_event(route_key, path, body.as_ref())).await
    }

    /// Takes every message now on the events queue and hands them to the sender as one
    /// SQS batch; returns the sender's response and how many records it got.
    async fn run_sender(&self) -> (Result<Value, Value>, usize) {
        let messages: Vec<(String, String)> =
            moto::drain(&self.events_queue).await.into_iter().map(|(id, body, _)| (id, body)).collect();
        assert!(!messages.is_empty(), "nothing on the events queue for the sender");
        let count = messages.len();
        (self.function("sender").invoke(sqs_event(&self.events_queue, &messages)).await, count)
    }

    fn print_cold_starts(&self) {
        println!();
        println!("{:<16} {:>14} {:>14}", "binary", "cold init ms", "size MiB");
        for function in &self.functions {
            println!(
                "{:<16} {:>14.1} {:>14.1}",
                function.name,
                function.cold_init.as_secs_f64() * 1000.0,
                function.binary_size as f64 / (1024.0 * 1024.0)
            );
        }
        println!();
    }
}

fn assert_json(reply: &HttpReply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.raw);
    assert_eq!(reply.content_type(), "application/json", "{}", reply.raw);
    assert!(!reply.is_base64_encoded, "JSON came back base64-encoded: {}", reply.raw);
}

fn no_failures(response: &Value) {
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
}

async fn wait_for_deliveries(receiver: &Receiver, count: usize) -> Vec<Received> {
    for _ in 0..50 {
        if receiver.received().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.received()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_binaries_create_deliver_and_log_through_the_runtime_api() {
    let receiver = Receiver::ok().await;
    let deployment = Deployment::start().await;
    deployment.print_cold_starts();
    let sqs = aws_sdk_sqs::Client::new(&moto::sdk_config());
    let examples: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("data/event-examples.json")).expect("examples");

    // create-webhook: 201, the summary without URL or secret.
    let created = deployment
        .http(
            "create-webhook",
            "POST /webhooks",
            "/webhooks",
            Some(json!({"name": "e2e hook", "url": receiver.url(), "event_types": ["ping"], "secret_token": SECRET})),
        )
        .await;
    assert_json(&created, 201);
    let webhook_id = created.body["webhook_id"].as_str().expect("webhook_id").to_owned();
    Uuid::parse_str(&webhook_id).expect("webhook_id is a UUID");
    assert_eq!(created.body["name"], "e2e hook");
    assert_eq!(created.body["event_types"], json!(["ping"]));
    assert!(created.body.get("url").is_none() && !created.raw.contains(SECRET), "{}", created.raw);

    // get-webhook: the URL and metadata, never the secret.
    let got = deployment.http("get-webhook", "GET /webhooks/{id}", &format!("/webhooks/{webhook_id}"), None).await;
    assert_json(&got, 200);
    assert_eq!(got.body["webhook_id"], webhook_id.as_str());
    assert_eq!(got.body["url"], receiver.url());
    assert_eq!(got.body["has_secret_token"], true);
    assert!(!got.raw.contains(SECRET), "{}", got.raw);

    // list-webhooks, filtered by event type (the table is this test's own).
    let listed = deployment.http("list-webhooks", "GET /webhooks", "/webhooks?event_type=ping&limit=10", None).await;
    assert_json(&listed, 200);
    let items = listed.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", listed.raw);
    assert_eq!(items[0]["webhook_id"], webhook_id.as_str());
    assert!(items[0].get("url").is_none(), "{}", listed.raw);
    assert!(listed.body.get("next").is_some_and(Value::is_null), "{}", listed.raw);

    // A producer's event on the events queue, received and handed to the sender as SQS does.
    let ping_id = Uuid::new_v4();
    sqs.send_message()
        .queue_url(&deployment.events_queue)
        .message_body(json!({"event_type": "ping", "event": {"ping_id": ping_id}}).to_string())
        .send()
        .await
        .expect("send the event to the events queue");
    let (response, records) = deployment.run_sender().await;
    assert_eq!(records, 1);
    no_failures(&response.expect("the sender answered"));

    let received = wait_for_deliveries(&receiver, 1).await;
    assert_eq!(received.len(), 1, "one delivery");
    let first = &received[0];
    first.assert_signed(SECRET);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(first.header("user-agent").is_some_and(|ua| ua.starts_with("onefuzz-webhook ")));
    let body = first.json();
    assert_eq!(body["webhook_id"], webhook_id.as_str());
    assert_eq!(body["event_type"], "ping");
    assert_eq!(body["event"]["ping_id"], ping_id.to_string());
    assert_eq!(body["instance_name"], "lambda-e2e");
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();
    assert_eq!(first.header("webhook-id"), Some(event_id.as_str()));
    assert!(moto::drain(&deployment.events_queue).await.is_empty(), "a success queues nothing more");

    // webhook-logs: the delivery, succeeded at the first attempt.
    let logs =
        deployment.http("webhook-logs", "GET /webhooks/{id}/logs", &format!("/webhooks/{webhook_id}/logs"), None).await;
    assert_json(&logs, 200);
    let entries = logs.body["items"].as_array().expect("items");
    assert_eq!(entries.len(), 1, "{}", logs.raw);
    assert_eq!(entries[0]["event_id"], event_id.as_str());
    assert_eq!(entries[0]["event_type"], "ping");
    assert_eq!(entries[0]["state"], "succeeded");
    assert_eq!(entries[0]["try_count"], 1);
    assert_eq!(entries[0]["attempts"][0]["status_code"], 200);

    // update-webhook: rename, and subscribe to task_created instead of ping.
    let updated = deployment
        .http(
            "update-webhook",
            "PATCH /webhooks/{id}",
            &format!("/webhooks/{webhook_id}"),
            Some(json!({"name": "e2e hook renamed", "event_types": ["task_created"], "headers": {"X-Tenant": "e2e-tenant"}, "rate_limit_per_second": 50})),
        )
        .await;
    assert_json(&updated, 200);
    assert_eq!(updated.body["webhook_id"], webhook_id.as_str());
    assert_eq!(updated.body["name"], "e2e hook renamed");
    assert_eq!(updated.body["event_types"], json!(["task_created"]));

    // ping-webhook: 202, and the ping reaches this webhook though it no longer subscribes to ping.
    let pinged = deployment
        .http("ping-webhook", "POST /webhooks/{id}/ping", &format!("/webhooks/{webhook_id}/ping"), None)
        .await;
    assert_json(&pinged, 202);
    let pinged_id = pinged.body["ping_id"].as_str().expect("ping_id").to_owned();
    let (response, records) = deployment.run_sender().await;
    assert_eq!(records, 1, "the ping queued one task");
    no_failures(&response.expect("the sender answered"));
    let received = wait_for_deliveries(&receiver, 2).await;
    assert_eq!(received.len(), 2);
    received[1].assert_signed(SECRET);
    assert_eq!(received[1].json()["event"]["ping_id"], pinged_id.as_str());
    assert_eq!(received[1].header("x-tenant"), Some("e2e-tenant"), "the custom header set by the PATCH");
    assert_eq!(received[0].header("x-tenant"), None);

    // event-types: the catalog, and one type by name (404 for an unknown one).
    let catalog = deployment.http("event-types", "GET /event-types", "/event-types", None).await;
    assert_json(&catalog, 200);
    assert_eq!(catalog.body["items"].as_array().map(Vec::len), Some(30), "{}", catalog.raw);
    let one = deployment.http("event-types", "GET /event-types/{name}", "/event-types/delivery_failed", None).await;
    assert_json(&one, 200);
    assert_eq!(one.body["operational"], true);
    let unknown = deployment.http("event-types", "GET /event-types/{name}", "/event-types/tsk_created", None).await;
    assert_eq!(unknown.status, 404, "{}", unknown.raw);
    assert_eq!(unknown.body["detail"], "unknown event type: tsk_created");

    // publish-event: 202 with the event id, then fanned out to the new subscription.
    let published = deployment
        .http(
            "publish-event",
            "POST /events",
            "/events",
            Some(json!({"event_type": "task_created", "event": examples["task_created"]})),
        )
        .await;
    assert_json(&published, 202);
    let published_id = published.body["event_id"].as_str().expect("event_id").to_owned();
    let (response, records) = deployment.run_sender().await;
    assert_eq!(records, 1, "the publish queued one message");
    no_failures(&response.expect("the sender answered"));
    let received = wait_for_deliveries(&receiver, 3).await;
    assert_eq!(received.len(), 3);
    received[2].assert_signed(SECRET);
    let body = received[2].json();
    assert_eq!(body["event_id"], published_id.as_str());
    assert_eq!(body["event_type"], "task_created");
    assert_eq!(body["event"], examples["task_created"]);

    // onefuzz-compat: POST /api/webhooks/logs lists every entry with OneFuzz's extra fields.
    let compat = deployment
        .http(
            "onefuzz-compat",
            "POST /api/webhooks/logs",
            "/api/webhooks/logs",
            Some(json!({"webhook_id": webhook_id})),
        )
        .await;
    assert_json(&compat, 200);
    let entries = compat.body.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 3, "{}", compat.raw);
    assert!(entries.iter().all(|e| e["state"] == "succeeded"), "{}", compat.raw);
    let entry = entries.iter().find(|e| e["event_id"] == event_id.as_str()).expect("the first delivery");
    assert_eq!(entry["event"]["ping_id"], ping_id.to_string());
    assert_eq!(entry["instance_name"], "lambda-e2e");
    assert!(entry["instance_id"].is_string(), "{entry}");

    // redeliver: the first delivery is sent again from its stored payload.
    let redelivered = deployment
        .http(
            "redeliver",
            "POST /webhooks/{id}/logs/{event_id}/redeliver",
            &format!("/webhooks/{webhook_id}/logs/{event_id}/redeliver"),
            None,
        )
        .await;
    assert_json(&redelivered, 202);
    assert_eq!(redelivered.body["event_id"], event_id.as_str());
    let (response, records) = deployment.run_sender().await;
    assert_eq!(records, 1);
    no_failures(&response.expect("the sender answered"));
    let received = wait_for_deliveries(&receiver, 4).await;
    assert_eq!(received.len(), 4);
    received[3].assert_signed(SECRET);
    assert_eq!(received[3].header("webhook-id"), Some(event_id.as_str()));
    assert_eq!(received[3].json()["event"]["ping_id"], ping_id.to_string());

    // An event the sender cannot even read as an SQS event is an invocation error (/error).
    let error = deployment.function("sender").invoke(json!({"Records": "not a list"})).await;
    let error = error.expect_err("a malformed SQS event is an error");
    assert!(error["errorType"].is_string() && error["errorMessage"].is_string(), "{error}");

    // An invalid event: dead-lettered with its reason, not reported as a batch failure.
    let invalid = json!({"event_type": "tsk_created", "event": {}}).to_string();
    sqs.send_message()
        .queue_url(&deployment.events_queue)
        .message_body(&invalid)
        .send()
        .await
        .expect("send the invalid event");
    let (response, records) = deployment.run_sender().await;
    assert_eq!(records, 1);
    no_failures(&response.expect("the sender answered"));
    let dead = moto::drain(&deployment.dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, invalid);
    let reason = dead[0].2.as_deref().expect("a reason attribute");
    assert!(reason.contains("tsk_created"), "{reason}");
    assert_eq!(receiver.received().len(), 4, "nothing delivered for the invalid event");

    // delete-webhook: 200 {"result": true}; the webhook is gone.
    let deleted =
        deployment.http("delete-webhook", "DELETE /webhooks/{id}", &format!("/webhooks/{webhook_id}"), None).await;
    assert_json(&deleted, 200);
    assert_eq!(deleted.body, json!({"result": true}));
    let gone = deployment.http("get-webhook", "GET /webhooks/{id}", &format!("/webhooks/{webhook_id}"), None).await;
    assert_eq!(gone.status, 404, "{}", gone.raw);
    assert_eq!(gone.content_type(), "application/problem+json");
    assert_eq!(gone.body["title"], "UNABLE_TO_FIND");
}

#[tokio::test]
async fn a_binary_missing_its_configuration_fails_its_cold_start_naming_the_variable() {
    let env = [("AWS_REGION", "us-east-1".to_owned()), ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/q".to_owned())];

    let failure = match LambdaProcess::try_start("create-webhook", &env).await {
        Ok(process) => panic!("{} started without TABLE_NAME", process.name),
        Err(failure) => failure,
    };

    assert!(!failure.status.success(), "{failure}");
    assert!(failure.output.contains("TABLE_NAME"), "{failure}");
}

/// SPEC §6.3 and issue 10's stranded deliveries: a message redelivered while a dead sender's
/// claims on some of its deliveries are still live must come back later (it is reported in
/// `batchItemFailures`), never be acknowledged with those deliveries left unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_blocked_by_a_dead_senders_claim_comes_back_and_is_delivered_once_it_lapses() {
    use webhooks::domain::{DeliveryLog, DeliveryState, EventEnvelope, Trigger};
    use webhooks::events::EventType;
    use webhooks::store::{DeliveryKey, Read, Store};
    use webhooks_tests::runtime_api::sqs_event_received;

    let receiver = Receiver::ok().await;
    let (store, events_queue, env) = sender_stack("stranded", &[("DELIVERY_TIMEOUT_SECS", "10")]).await;
    let sender = LambdaProcess::start("sender", &env).await;
    let mut hooks = Vec::new();
    for name in ["claimed-by-the-dead", "free"] {
        hooks.push(stored_webhook(&store, name, &receiver.url(), &["ping"], None).await);
    }
    let event_id = Uuid::new_v4();
    let created_at = chrono::Utc::now();
    let body = json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}, "event_id": event_id,
        "created_at": created_at})
    .to_string();
    let envelope = EventEnvelope {
        event_id,
        event_type: EventType::Ping,
        event: json!({}).into(),
        instance_id: Uuid::nil(),
        instance_name: "x".into(),
        created_at,
    };
    // The first sender inserted this entry claimed for 40 s, then was killed before sending.
    let now = chrono::Utc::now();
    let mut dead = DeliveryLog::new(hooks[0].webhook_id, envelope.clone(), now, chrono::Duration::days(7));
    dead.claim(Trigger::Fanout, now + chrono::Duration::seconds(40), now);
    assert!(store.insert_delivery(&dead).await.expect("insert the dead sender's claim"));
    let message = vec![("redelivered-message".to_owned(), body)];

    let blocked = sender.invoke(sqs_event_received(&events_queue, &message, 2)).await.expect("invoke");
    let delivered_while_blocked = wait_for_deliveries(&receiver, 1).await.len();
    let mut lapsed = store
        .load_delivery(&DeliveryKey::of(hooks[0].webhook_id, &envelope), Read::Latest)
        .await
        .expect("load")
        .expect("the claimed entry");
    lapsed.lease_until = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    lapsed.version += 1;
    store.update_delivery(&lapsed).await.expect("let the claim lapse");
    let after = sender.invoke(sqs_event_received(&events_queue, &message, 3)).await.expect("invoke again");
    let received = wait_for_deliveries(&receiver, 2).await;

    assert_eq!(blocked["batchItemFailures"], json!([{"itemIdentifier": "redelivered-message"}]), "{blocked}");
    assert_eq!(delivered_while_blocked, 1, "the free webhook got its delivery at once");
    no_failures(&after);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "each webhook got the event exactly once: {received:?}");
    for hook in &hooks {
        let key = DeliveryKey::of(hook.webhook_id, &envelope);
        let entry = store.load_delivery(&key, Read::Latest).await.expect("load").expect("entry");
        assert_eq!(entry.state, DeliveryState::Succeeded, "{}", hook.name.as_str());
        assert_eq!(entry.try_count, 1);
    }
}

/// A sender Lambda environment on a fresh table and queue, and that store.
async fn sender_stack(
    prefix: &str,
    overrides: &[(&'static str, &str)],
) -> (webhooks::store::DynamoStore, String, Vec<(&'static str, String)>) {
    let (store, table) = moto::dynamo_store().await;
    let events_queue = moto::queue(&format!("{prefix}-events")).await;
    let dead_letter_queue = moto::queue(&format!("{prefix}-dlq")).await;
    let mut env: Vec<(&'static str, String)> = vec![
        ("TABLE_NAME", table),
        ("EVENTS_QUEUE_URL", events_queue.clone()),
        ("DEAD_LETTER_QUEUE_URL", dead_letter_queue),
        ("AWS_ENDPOINT_URL", moto::endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
        ("DELIVERY_TIMEOUT_SECS", "5".to_owned()),
    ];
    for (name, value) in overrides {
        env.retain(|(existing, _)| existing != name);
        env.push((name, (*value).to_owned()));
    }
    (store, events_queue, env)
}

async fn stored_webhook(
    store: &webhooks::store::DynamoStore,
    name: &str,
    url: &str,
    types: &[&str],
    rate: Option<u64>,
) -> webhooks::domain::Webhook {
    use webhooks::domain::{EventPattern, NewWebhook, RateLimit, Webhook, WebhookName, WebhookUrl};
    use webhooks::store::Store;
    let new = NewWebhook {
        event_types: types.iter().map(|t| EventPattern::parse(t).expect("type")).collect(),
        rate_limit_per_second: rate.map(|n| RateLimit::new(n).expect("limit")),
        ..NewWebhook::new(WebhookName::parse(name).expect("name"), WebhookUrl::parse(url, false).expect("url"))
    };
    let hook = Webhook::new(new, chrono::Utc::now());
    store.create_webhook(&hook).await.expect("create");
    hook
}

/// Runs the queue through `senders` like Lambda's pollers until it stays empty (bounded).
async fn drain_through(senders: &[&LambdaProcess], queue: &str) {
    let mut idle = 0;
    for _ in 0..60 {
        let messages: Vec<(String, String)> =
            moto::drain(queue).await.into_iter().map(|(id, body, _)| (id, body)).collect();
        if messages.is_empty() {
            idle += 1;
            if idle > 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        idle = 0;
        let halves: Vec<Vec<(String, String)>> =
            messages.chunks(messages.len().div_ceil(senders.len())).map(<[_]>::to_vec).collect();
        let runs = senders.iter().zip(&halves).map(|(sender, batch)| sender.invoke(sqs_event(queue, batch)));
        for response in futures_util::future::join_all(runs).await {
            no_failures(&response.expect("invoke"));
        }
    }
    panic!("the queue never drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_binary_raises_delivery_failed_and_webhook_disabled_and_delivers_them_signed() {
    let gone = Receiver::start(vec![webhooks_tests::Reply::status(410)]).await;
    let operators = Receiver::ok().await;
    let (store, queue, env) = sender_stack("ops", &[("RETRY_SCHEDULE", "1")]).await;
    let sender = LambdaProcess::start("sender", &env).await;
    let retired = stored_webhook(&store, "retired", &gone.url(), &["task_created"], None).await;
    stored_webhook(&store, "operators", &operators.url(), &["webhook_disabled", "delivery_failed"], None).await;
    let examples: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("data/event-examples.json")).expect("examples");
    let event = json!({"event_type": "task_created", "event": examples["task_created"]}).to_string();
    let sqs = aws_sdk_sqs::Client::new(&moto::sdk_config());
    sqs.send_message().queue_url(&queue).message_body(event).send().await.expect("publish");

    drain_through(&[&sender], &queue).await;

    let bodies: Vec<Value> = operators.received().iter().map(Received::json).collect();
    let types: Vec<&str> = bodies.iter().filter_map(|b| b["event_type"].as_str()).collect();
    assert_eq!(types.len(), 2, "{bodies:?}");
    assert!(types.contains(&"webhook_disabled") && types.contains(&"delivery_failed"), "{types:?}");
    let disabled = bodies.iter().find(|b| b["event_type"] == "webhook_disabled").expect("disabled");
    assert_eq!(disabled["event"]["webhook_id"], retired.webhook_id.to_string());
    assert_eq!(disabled["event"]["reason"], "gone");
    let failed = bodies.iter().find(|b| b["event_type"] == "delivery_failed").expect("failed");
    assert_eq!(failed["event"]["last_status_code"], 410);
    assert_eq!(failed["event"]["try_count"], 1);
    assert!(operators.received().iter().all(|r| r.header("webhook-id").is_some()));
    assert_eq!(gone.received().len(), 1, "410 stops at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_concurrent_sender_binaries() {
    let receiver = Receiver::ok().await;
    let (store, queue, env) = sender_stack("rate", &[]).await;
    let first = LambdaProcess::start("sender", &env).await;
    let second = LambdaProcess::start("sender", &env).await;
    let limited = stored_webhook(&store, "limited", &receiver.url(), &["ping"], Some(3)).await;
    let sqs = aws_sdk_sqs::Client::new(&moto::sdk_config());
    // Each sender's first request also sets up its HTTP client (a hundred ms or so in a debug
    // build); a warm-up delivery elsewhere keeps that out of the arrival times measured.
    let warm_up = Receiver::ok().await;
    stored_webhook(&store, "warm-up", &warm_up.url(), &["task_created"], None).await;
    let examples: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("data/event-examples.json")).expect("examples");
    for _ in 0..2 {
        let body = json!({"event_type": "task_created", "event": examples["task_created"]}).to_string();
        sqs.send_message().queue_url(&queue).message_body(body).send().await.expect("publish");
    }
    drain_through(&[&first, &second], &queue).await;
    assert_eq!(warm_up.received().len(), 2);
    for _ in 0..12 {
        let body = json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}}).to_string();
        sqs.send_message().queue_url(&queue).message_body(body).send().await.expect("publish");
    }

    drain_through(&[&first, &second], &queue).await;

    let received = receiver.received();
    assert_eq!(received.len(), 12, "every delivery went out in the end");
    let most = webhooks_tests::most_within(&received, Duration::from_millis(950));
    let first = received.iter().map(|r| r.at).min().expect("first");
    let mut offsets: Vec<u128> = received.iter().map(|r| (r.at - first).as_millis()).collect();
    offsets.sort_unstable();
    assert!(most <= 3, "{most} deliveries within one second to a webhook limited to 3/s: {offsets:?} ms");
    let span = received.iter().map(|r| r.at).max().expect("last") - received.iter().map(|r| r.at).min().expect("first");
    assert!(span >= Duration::from_millis(3300), "12 at 3/s span over 3.3 s, not {span:?}");
    let _ = limited;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_type_reaches_the_lambda_log_as_one_json_line_cut_short() {
    let (_store, queue, env) = sender_stack("forged", &[]).await;
    let sender = LambdaProcess::start("sender", &env).await;
    let forged = format!(
        "no_such_type\n{{\"level\":\"ERROR\",\"fields\":{{\"message\":\"forged\"}}}}\u{1b}[31m{}",
        "x".repeat(200_000)
    );
    let body = json!({"event_type": forged, "event": {}}).to_string();

    let response = sender.invoke(sqs_event(&queue, &[("forged-1".to_owned(), body)])).await.expect("invoke");

    no_failures(&response);
    let logs = sender.logs();
    assert!(!logs.contains('\u{1b}'), "a terminal escape reached the log");
    for line in logs.lines().filter(|line| !line.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not one JSON line: {line:.300}"));
        assert_ne!(parsed["fields"]["message"], "forged", "a client forged a log line");
        assert!(line.len() < 2_000, "a {}-byte log line", line.len());
    }
    let invalid = logs.lines().find(|line| line.contains("dead-lettering")).expect("the dead-letter line");
    let reason = serde_json::from_str::<Value>(invalid).expect("json")["fields"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.starts_with("unknown event type: no_such_type\\n"), "{reason:.200}");
    assert!(reason.chars().count() <= 130 && reason.ends_with('…'), "{reason}");
}
