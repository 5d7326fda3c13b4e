//! What one delivery costs in AWS, measured offline: the real `sender` binary under the
//! project's Lambda Runtime API emulator, against DynamoDB and SQS in moto, with this process
//! acting as Lambda's SQS poller (batches of 10, partial batch responses honoured) and as the
//! receivers at the other end. Every call the sender makes passes a recording proxy that prices
//! it with DynamoDB's sizing rules ([`sizing`]) against the table and indexes declared in
//! `infra/template.yaml`; moto's own request recorder counts the same calls as a cross-check.
//! The benchmark measures whatever the sender does: nothing here knows the storage layout.

mod proxy;
mod sizing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use webhooks::domain::{EventEnvelope, EventPattern, NewWebhook, SecretToken, WebhookName, WebhookUrl};
use webhooks::events::EventType;
use webhooks::queue::SqsQueue;
use webhooks::store::{DynamoStore, TableDefinition};
use webhooks::{App, Config};
use webhooks_tests::runtime_api::LambdaProcess;

use proxy::{Call, INTERNAL_HEADER, Proxy};
use sizing::Schema;

const REGION: &str = "us-east-1";
const ACCOUNT_ID: &str = "123456789012";
/// The access keys tell the sender's calls from the poller's in moto's recording.
const SENDER_ACCESS_KEY: &str = "costbenchsender";
const POLLER_ACCESS_KEY: &str = "costbenchpoller";
/// Short, so a message the sender reports failed comes back within the run.
const VISIBILITY_TIMEOUT_SECS: i32 = 10;
/// A scenario that makes no progress for this long is reported as stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(90);

/// List prices, us-east-1, on demand, as of 2026-12-01 (../shared/NOTES.md).
mod price {
    pub const DATE: &str = "2026-12-01";
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    pub const DYNAMO_WRU: f64 = 0.625 / 1e6;
    pub const DYNAMO_RRU: f64 = 0.125 / 1e6;
    pub const LOGS_GB: f64 = 0.50;
    pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
    pub const EVENTBRIDGE_API_DESTINATION: f64 = 0.20 / 1e6;
    pub const SNS_PUBLISH: f64 = 0.50 / 1e6;
    pub const SNS_HTTP_DELIVERY: f64 = 0.60 / 1e6;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every first attempt answered 200.
    Happy,
    /// Each (webhook, event)'s first attempt answered 500, the next 200.
    Retry,
    /// Pings queued as the ping API queues them.
    Ping,
}

pub struct Options {
    pub sender: PathBuf,
    pub template: PathBuf,
    pub moto: String,
    pub scenarios: Vec<Scenario>,
    pub events: usize,
    pub subscribers: usize,
    pub pings: usize,
    pub payload_bytes: usize,
}

pub async fn run(options: Options) -> Result<(), String> {
    let yaml =
        std::fs::read_to_string(&options.template).map_err(|e| format!("read {}: {e}", options.template.display()))?;
    let schema = Schema::from_template(&yaml)?;
    let memory_mb = sizing::function_property(&yaml, "sender", "MemorySize")?;
    // The invocation's deadline decides how much of a fan-out the sender delivers inline.
    let timeout = Duration::from_secs(sizing::function_property(&yaml, "sender", "Timeout")?);
    let environment = sizing::function_environment(&yaml, "sender")?;
    if !options.sender.is_file() {
        return Err(format!("no sender binary at {} (cargo build -p sender)", options.sender.display()));
    }
    let sdk = sdk_config(&options.moto, POLLER_ACCESS_KEY);
    let bench = Bench {
        dynamo: aws_sdk_dynamodb::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        http: reqwest::Client::new(),
        receiver: Receiver::start().await?,
        proxy: Proxy::start(&options.moto, schema.clone()).await?,
        memory_mb,
        timeout,
        environment,
        options,
    };
    println!(
        "# AWS cost of a delivery: {} under the Runtime API emulator, moto at {}, sender MemorySize {memory_mb} MB and Timeout {timeout:?}, \
         table keys {}/{} with {} index(es) from {}",
        bench.options.sender.display(),
        bench.options.moto,
        schema.hash,
        schema.range.as_deref().unwrap_or("-"),
        schema.indexes.len(),
        bench.options.template.display()
    );
    let shown: Vec<String> = bench.environment.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!(
        "#   the sender's default environment from the template: {}; set here: HTTPS_ONLY=false, \
         ALLOWED_TARGET_CIDRS=127.0.0.0/8 (loopback receivers), RETRY_SCHEDULE=1 on the retry path",
        shown.join(" ")
    );
    for index in &schema.indexes {
        println!(
            "#   index {}: {} / {} projecting {:?}",
            index.name,
            index.hash,
            index.range.as_deref().unwrap_or("-"),
            index.projection
        );
    }
    for scenario in bench.options.scenarios.clone() {
        let report = bench.scenario(scenario).await?;
        report.print(bench.memory_mb);
    }
    Ok(())
}

fn sdk_config(endpoint: &str, access_key: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(access_key, "test", None, None, "bench")))
        .endpoint_url(endpoint)
        .build()
}

struct Bench {
    dynamo: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    http: reqwest::Client,
    receiver: Receiver,
    proxy: Proxy,
    memory_mb: u64,
    timeout: Duration,
    /// The deployed defaults (log level, retry schedule, ...), before this run's settings.
    environment: Vec<(String, String)>,
    options: Options,
}

/// What the poller did: its SQS calls are billed too.
#[derive(Default)]
struct Poller {
    receives_with_messages: u64,
    empty_receives: u64,
    received_bytes: u64,
    messages: u64,
    deletes: u64,
    billed_requests: f64,
    reported_failures: u64,
    failed_invocations: u64,
}

struct Report {
    title: String,
    deliveries: u64,
    attempts: u64,
    producer_messages: u64,
    calls: Vec<Call>,
    poller: Poller,
    invocations: Vec<Duration>,
    log_bytes: u64,
    recorded_sender_calls: Option<usize>,
    elapsed: Duration,
}

impl Bench {
    async fn scenario(&self, scenario: Scenario) -> Result<Report, String> {
        let o = &self.options;
        let envelope_bytes =
            serde_json::to_string(&task_created(o.payload_bytes, &Config::default())).map_or(0, |s| s.len());
        let title = match scenario {
            Scenario::Happy => format!(
                "happy path: {} events x {} subscribers, {envelope_bytes} B task_created envelopes, every first attempt 200",
                o.events, o.subscribers
            ),
            Scenario::Retry => format!(
                "retry path: {} events x {} subscribers, {envelope_bytes} B task_created envelopes, each first attempt 500, then 200",
                o.events, o.subscribers
            ),
            Scenario::Ping => format!("pings: {} webhooks x {} pings", o.subscribers, o.pings),
        };
        let webhooks = o.subscribers;
        eprintln!("aws-cost: {title}");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let table = format!("costbench-{id}");
        TableDefinition::create(&self.dynamo, &table).await.map_err(|e| format!("create table: {e}"))?;
        let events_queue = self.create_queue(&format!("costbench-events-{id}")).await?;
        let dead_letters = self.create_queue(&format!("costbench-dlq-{id}")).await?;
        let app = App::new(
            Arc::new(DynamoStore::new(self.dynamo.clone(), table.clone())),
            Arc::new(SqsQueue::new(self.sqs.clone(), events_queue.clone())),
            Config::default(),
        );

        let mut ids = Vec::with_capacity(webhooks);
        for i in 0..webhooks {
            let created = app
                .create_webhook(NewWebhook {
                    event_types: vec![EventPattern::Type(EventType::TaskCreated)],
                    secret_token: Some(SecretToken::parse("costbench-receiver-secret").map_err(|e| e.to_string())?),
                    ..NewWebhook::new(
                        WebhookName::parse(&format!("costbench-{i}")).map_err(|e| e.to_string())?,
                        WebhookUrl::parse(&self.receiver.url(i), false).map_err(|e| e.to_string())?,
                    )
                })
                .await
                .map_err(|e| format!("create webhook: {e:?}"))?;
            ids.push(created.webhook_id);
        }
        self.receiver.reset(scenario == Scenario::Retry);
        let producer_messages = match scenario {
            Scenario::Happy | Scenario::Retry => {
                for _ in 0..o.events {
                    let envelope = task_created(o.payload_bytes, &app.config);
                    app.publish_event(envelope).await.map_err(|e| format!("publish: {e:?}"))?;
                }
                o.events
            }
            Scenario::Ping => {
                for id in &ids {
                    for _ in 0..o.pings {
                        app.ping_webhook(*id).await.map_err(|e| format!("ping: {e:?}"))?;
                    }
                }
                ids.len() * o.pings
            }
        };
        let expected = match scenario {
            Scenario::Ping => (ids.len() * o.pings) as u64,
            _ => (o.events * ids.len()) as u64,
        };

        let mut env: Vec<(&str, String)> =
            self.environment.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
        env.extend([
            ("TABLE_NAME", table.clone()),
            ("EVENTS_QUEUE_URL", events_queue.clone()),
            ("DEAD_LETTER_QUEUE_URL", dead_letters.clone()),
            ("AWS_ENDPOINT_URL", self.proxy.url()),
            ("AWS_ACCESS_KEY_ID", SENDER_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", self.memory_mb.to_string()),
            ("ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
            // The receivers are plain-HTTP loopback servers.
            ("HTTPS_ONLY", "false".to_owned()),
            ("INSTANCE_NAME", "costbench".to_owned()),
        ]);
        if scenario == Scenario::Retry {
            env.push(("RETRY_SCHEDULE", "1".to_owned()));
        }
        self.proxy.begin(&table).await?;
        let sender = LambdaProcess::try_start_at(self.options.sender.clone(), "sender", &env)
            .await
            .map_err(|failure| failure.to_string())?;
        let logs_at_start = sender.logs().len() as u64;
        self.recorder("reset-recording").await?;
        self.recorder("start-recording").await?;

        let started = Instant::now();
        let mut poller = Poller::default();
        let mut invocations = Vec::new();
        let mut progress = (0, Instant::now());
        loop {
            let attempts = self.receiver.attempts();
            if attempts != progress.0 {
                progress = (attempts, Instant::now());
            } else if progress.1.elapsed() > STALL_TIMEOUT {
                return Err(format!(
                    "{title}: stuck at {} of {expected} deliveries for {STALL_TIMEOUT:?}; the sender's log:\n{}",
                    self.receiver.succeeded(),
                    sender.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
                ));
            }
            let received = self
                .sqs
                .receive_message()
                .queue_url(&events_queue)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| format!("receive: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                poller.empty_receives += 1;
                if self.receiver.succeeded() >= expected && self.queue_is_empty(&events_queue).await? {
                    break;
                }
                continue;
            }
            let bytes: u64 = messages.iter().map(|m| m.body().map_or(0, str::len) as u64).sum();
            poller.receives_with_messages += 1;
            poller.messages += messages.len() as u64;
            poller.received_bytes += bytes;
            poller.billed_requests += bytes.div_ceil(64 * 1024).max(1) as f64;

            let event = sqs_event(&events_queue, &messages);
            let invoked = Instant::now();
            let outcome = sender.api.invoke_with_timeout(event, self.timeout).await;
            invocations.push(invoked.elapsed());
            let failed: HashSet<String> = match outcome {
                Ok(response) => response["batchItemFailures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
                    .collect(),
                Err(error) => {
                    // Lambda leaves the whole batch on the queue when an invocation fails.
                    eprintln!("aws-cost: the sender failed an invocation: {error}");
                    poller.failed_invocations += 1;
                    messages.iter().filter_map(|m| m.message_id().map(str::to_owned)).collect()
                }
            };
            poller.reported_failures += failed.len() as u64;
            let done: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.message_id().is_none_or(|id| !failed.contains(id)))
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                        .build()
                        .ok()
                })
                .collect();
            if !done.is_empty() {
                self.sqs
                    .delete_message_batch()
                    .queue_url(&events_queue)
                    .set_entries(Some(done))
                    .send()
                    .await
                    .map_err(|e| format!("delete: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
                poller.deletes += 1;
                poller.billed_requests += 1.0;
            }
        }
        let elapsed = started.elapsed();
        self.recorder("stop-recording").await?;
        let recorded_sender_calls = self.recorded_sender_calls().await;
        let log_bytes = (sender.logs().len() as u64).saturating_sub(logs_at_start);
        drop(sender);
        Ok(Report {
            title,
            deliveries: self.receiver.succeeded(),
            attempts: self.receiver.attempts(),
            producer_messages: producer_messages as u64,
            calls: self.proxy.calls(),
            poller,
            invocations,
            log_bytes,
            recorded_sender_calls,
            elapsed,
        })
    }

    async fn create_queue(&self, name: &str) -> Result<String, String> {
        let created = self
            .sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, VISIBILITY_TIMEOUT_SECS.to_string())
            .send()
            .await
            .map_err(|e| format!("create queue: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
        created.queue_url().map(str::to_owned).ok_or_else(|| "create queue: no URL".to_owned())
    }

    /// Nothing visible, in flight or delayed (a retry waiting for its time).
    async fn queue_is_empty(&self, queue_url: &str) -> Result<bool, String> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| format!("queue attributes: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
        let count = |name: QueueAttributeName| {
            attributes.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesDelayed) == 0)
    }

    async fn recorder(&self, action: &str) -> Result<(), String> {
        let url = format!("{}/moto-api/recorder/{action}", self.options.moto.trim_end_matches('/'));
        self.http.post(&url).send().await.map_err(|e| format!("moto recorder {action}: {e}"))?;
        Ok(())
    }

    /// How many calls moto recorded from the sender's access key (not the proxy's own).
    async fn recorded_sender_calls(&self) -> Option<usize> {
        let url = format!("{}/moto-api/recorder/download-recording", self.options.moto.trim_end_matches('/'));
        let text = self.http.get(&url).send().await.ok()?.text().await.ok()?;
        Some(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|entry| {
                    let headers: HashMap<String, String> = entry["headers"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    !headers.contains_key(INTERNAL_HEADER)
                        && headers
                            .get("authorization")
                            .is_some_and(|a| a.contains(&format!("Credential={SENDER_ACCESS_KEY}/")))
                })
                .count(),
        )
    }
}

/// A OneFuzz `task_created` event (the catalog's example) with realistic fields filled in, its
/// envelope padded to `bytes` of JSON with a tag.
fn task_created(bytes: usize, config: &Config) -> EventEnvelope {
    let examples: Value =
        serde_json::from_str(include_str!("../../shared/data/event-examples.json")).unwrap_or(Value::Null);
    let mut event = examples["task_created"].clone();
    let (job, task) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    event["job_id"] = json!(job);
    event["task_id"] = json!(task);
    if event["config"].is_object() {
        event["config"]["job_id"] = json!(job);
        event["config"]["tags"] = json!({
            "project": "libpng", "build": "2026.12.01-r4812", "owner": "fuzzing@contoso.com",
            "pipeline": "nightly-regression", "os": "linux"
        });
        event["config"]["task"]["target_env"] = json!({"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1"});
        event["config"]["task"]["target_options"] = json!(["-max_len=65536", "-timeout=30"]);
    }
    let mut envelope = EventEnvelope {
        event_id: uuid::Uuid::new_v4(),
        event_type: EventType::TaskCreated,
        event: event.into(),
        instance_id: config.instance_id,
        instance_name: config.instance_name.clone(),
        created_at: chrono::Utc::now(),
    };
    let size = |e: &EventEnvelope| serde_json::to_string(e).map(|s| s.len()).unwrap_or(0);
    let note = ",\"notes\":\"\"".len();
    let room = bytes.saturating_sub(size(&envelope) + note);
    if room > 0 && envelope.event["config"]["tags"].is_object() {
        let text =
            "regression corpus from the nightly build; crashes triaged by the security team. ".repeat(room / 40 + 1);
        std::sync::Arc::make_mut(&mut envelope.event)["config"]["tags"]["notes"] = json!(&text[..room]);
    }
    envelope
}

/// The event Lambda's SQS event source mapping hands the function for these messages.
fn sqs_event(queue_url: &str, messages: &[aws_sdk_sqs::types::Message]) -> Value {
    let queue_name = queue_url.rsplit('/').next().unwrap_or("queue");
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let system = m.attributes();
            let attribute = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name)).cloned();
            let mut attributes = serde_json::Map::new();
            for name in [
                MessageSystemAttributeName::ApproximateReceiveCount,
                MessageSystemAttributeName::SentTimestamp,
                MessageSystemAttributeName::SenderId,
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                MessageSystemAttributeName::AwsTraceHeader,
            ] {
                if let Some(value) = attribute(name.clone()) {
                    attributes.insert(name.as_str().to_owned(), json!(value));
                }
            }
            let message_attributes: serde_json::Map<String, Value> = m
                .message_attributes()
                .into_iter()
                .flatten()
                .map(|(name, value)| {
                    // As Lambda writes them: a value's absent half is left out, the lists empty.
                    let mut attribute =
                        json!({"stringListValues": [], "binaryListValues": [], "dataType": value.data_type()});
                    if let Some(text) = value.string_value() {
                        attribute["stringValue"] = json!(text);
                    }
                    if let Some(bytes) = value.binary_value() {
                        use base64::Engine;
                        attribute["binaryValue"] =
                            json!(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()));
                    }
                    (name.clone(), attribute)
                })
                .collect();
            let mut record = json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"),
                "awsRegion": REGION,
            });
            if let Some(md5) = m.md5_of_message_attributes() {
                record["md5OfMessageAttributes"] = json!(md5);
            }
            record
        })
        .collect();
    json!({ "Records": records })
}

impl Report {
    fn print(&self, memory_mb: u64) {
        let n = self.deliveries.max(1) as f64;
        println!("\n## {}", self.title);
        println!(
            "{} deliveries succeeded ({} HTTP attempts) in {:.1} s; {} Lambda invocations; {} records reported failed; {} invocations failed",
            self.deliveries,
            self.attempts,
            self.elapsed.as_secs_f64(),
            self.invocations.len(),
            self.poller.reported_failures,
            self.poller.failed_invocations
        );
        println!(
            "\n| who | service | operation | calls / delivery | WRU / delivery | RRU / delivery | refused (condition failed or transaction cancelled) |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut by_operation: BTreeMap<(String, String), (u64, f64, f64, u64)> = BTreeMap::new();
        for call in &self.calls {
            let row = by_operation.entry((call.service.clone(), call.operation.clone())).or_default();
            row.0 += 1;
            row.1 += call.wru;
            row.2 += call.rru;
            row.3 += u64::from(call.refused);
        }
        for ((service, operation), (count, wru, rru, refused)) in &by_operation {
            let units = |u: f64| if service == "DynamoDB" { format!("{:.2}", u / n) } else { "–".into() };
            println!(
                "| sender | {service} | {operation} | {:.3} | {} | {} | {refused} |",
                *count as f64 / n,
                units(*wru),
                units(*rru)
            );
        }
        let p = &self.poller;
        println!(
            "| poller | SQS | ReceiveMessage (with messages) | {:.3} | – | – | |",
            p.receives_with_messages as f64 / n
        );
        println!("| poller | SQS | DeleteMessageBatch | {:.3} | – | – | |", p.deletes as f64 / n);
        println!(
            "| producer | SQS | SendMessage (the event or ping, before the sender) | {:.3} | – | – | |",
            self.producer_messages as f64 / n
        );
        let errors = self.calls.iter().filter(|c| c.status >= 400 && !c.refused).count();
        if errors > 0 {
            println!("\n{errors} sender calls were answered with an error (other than a refused condition)");
        }
        let wru: f64 = self.calls.iter().map(|c| c.wru).sum();
        let rru: f64 = self.calls.iter().map(|c| c.rru).sum();
        let sender_sqs: f64 = self.calls.iter().map(|c| c.sqs_requests).sum();
        let sent_messages: u64 = self.calls.iter().map(|c| c.messages).sum();
        let gb_seconds: f64 = self
            .invocations
            .iter()
            .map(|d| (d.as_secs_f64() * 1000.0).ceil() / 1000.0 * memory_mb as f64 / 1024.0)
            .sum();
        let sqs_total = sender_sqs + p.billed_requests + self.producer_messages as f64;
        let mut durations: Vec<f64> = self.invocations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        durations.sort_by(f64::total_cmp);
        let median_ms = durations.get(durations.len() / 2).copied().unwrap_or(0.0);
        println!(
            "\nDynamoDB: **{:.2} WRU and {:.2} RRU per delivery**; log output {:.0} bytes per delivery; \
             Lambda {:.3} invocations and {:.5} GB-s per delivery (wall time x {memory_mb} MB; median invocation {median_ms:.0} ms, moto-bound); \
             SQS billed requests per delivery: sender {:.3} ({sent_messages} messages sent), poller {:.3}, producer {:.3} \
             ({} empty receives not counted); moto recorded {} sender calls, the proxy priced {}",
            wru / n,
            rru / n,
            self.log_bytes as f64 / n,
            self.invocations.len() as f64 / n,
            gb_seconds / n,
            sender_sqs / n,
            p.billed_requests / n,
            self.producer_messages as f64 / n,
            p.empty_receives,
            self.recorded_sender_calls.map_or("?".to_owned(), |c| c.to_string()),
            self.calls.len()
        );
        let per_million = |total: f64| total / n * 1e6;
        let rows = [
            ("DynamoDB writes", per_million(wru * price::DYNAMO_WRU)),
            ("DynamoDB reads", per_million(rru * price::DYNAMO_RRU)),
            ("Lambda requests", per_million(self.invocations.len() as f64 * price::LAMBDA_REQUEST)),
            ("Lambda duration (arm64)", per_million(gb_seconds * price::LAMBDA_ARM_GB_SECOND)),
            ("SQS (sender + poller + producer)", per_million(sqs_total * price::SQS_REQUEST)),
            ("CloudWatch Logs ingestion", per_million(self.log_bytes as f64 / (1u64 << 30) as f64 * price::LOGS_GB)),
        ];
        let total: f64 = rows.iter().map(|(_, dollars)| dollars).sum();
        println!("\n| $ per million deliveries (us-east-1 list prices of {}) | $ | share / ratio |", price::DATE);
        println!("|---|---|---|");
        for (name, dollars) in rows {
            println!("| {name} | {dollars:.3} | {:.0} % |", dollars / total.max(f64::MIN_POSITIVE) * 100.0);
        }
        println!("| **this service** | **{total:.2}** | |");
        // Ten targets per event, as in the scenario: one put event or publish per ten deliveries.
        let eventbridge = 1e6 / 10.0 * price::EVENTBRIDGE_EVENT + 1e6 * price::EVENTBRIDGE_API_DESTINATION;
        let sns = 1e6 / 10.0 * price::SNS_PUBLISH + 1e6 * price::SNS_HTTP_DELIVERY;
        println!(
            "| EventBridge API destinations ($1.00/M events + $0.20/M invocations, 10 targets per event, first attempts) | {eventbridge:.2} | this service: {:.1}x |",
            total / eventbridge
        );
        println!(
            "| SNS HTTP(S) ($0.50/M publishes + $0.60/M deliveries, 10 subscriptions, first attempts) | {sns:.2} | this service: {:.1}x |",
            total / sns
        );
    }
}

/// The receivers: `/hook/{n}` per webhook. A (path, event) pair counts as delivered once it was
/// answered 200; in `fail_first` mode its first attempt is answered 500.
struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
}

#[derive(Default)]
struct ReceiverState {
    fail_first: AtomicBool,
    attempts: AtomicU64,
    seen: Mutex<HashMap<(String, String), u32>>,
    succeeded: AtomicU64,
}

impl Receiver {
    async fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind the receiver: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(ReceiverState::default());
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let id_header =
                                request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let event_id = id_header.unwrap_or_else(|| {
                                serde_json::from_slice::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["event_id"].as_str().map(str::to_owned))
                                    .unwrap_or_default()
                            });
                            Ok::<_, Infallible>(state.answer(path, event_id))
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Self { port, state })
    }

    fn url(&self, webhook: usize) -> String {
        format!("http://127.0.0.1:{}/hook/{webhook}", self.port)
    }

    fn reset(&self, fail_first: bool) {
        self.state.fail_first.store(fail_first, Ordering::SeqCst);
        self.state.attempts.store(0, Ordering::SeqCst);
        self.state.succeeded.store(0, Ordering::SeqCst);
        self.state.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn succeeded(&self) -> u64 {
        self.state.succeeded.load(Ordering::SeqCst)
    }

    fn attempts(&self) -> u64 {
        self.state.attempts.load(Ordering::SeqCst)
    }
}

impl ReceiverState {
    fn answer(&self, path: String, event_id: String) -> Response<Full<Bytes>> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let status = {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tries = seen.entry((path, event_id)).or_insert(0);
            *tries += 1;
            if self.fail_first.load(Ordering::SeqCst) && *tries == 1 {
                500
            } else {
                if *tries == 1 || self.fail_first.load(Ordering::SeqCst) && *tries == 2 {
                    self.succeeded.fetch_add(1, Ordering::SeqCst);
                }
                200
            }
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        response
    }
}
