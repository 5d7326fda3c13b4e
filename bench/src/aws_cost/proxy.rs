//! A recording HTTP proxy between the sender and moto (`AWS_ENDPOINT_URL` → proxy → moto). moto's
//! recorder keeps requests but not responses, and read units depend on what was read; so every
//! call the sender makes is priced here, exactly, as it passes:
//!
//! - writes: each written key is locked (writes to one key are serialised, as DynamoDB does),
//!   the old item comes from a simulated copy of the table (seeded with a Scan, then replayed),
//!   the new one is read back from moto after the write;
//! - GetItem / BatchGetItem / TransactGetItems: the full size of each item read, from the copy
//!   (a projection expression does not lower the bill);
//! - Query / Scan: the same request sent again without its filter and projection, so the items
//!   DynamoDB reads (before filtering) are the ones summed;
//! - SQS: one request per started 64 KB of payload.
//!
//! The proxy's own calls to moto carry the `x-costbench-internal` header and their own access
//! key, so moto's recording can tell them apart from the sender's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::sizing::{Item, Schema, charged_write, item_size, read_units_for};

pub const INTERNAL_HEADER: &str = "x-costbench-internal";
pub const INTERNAL_ACCESS_KEY: &str = "costbenchinternal";
const SQS_CHUNK_BYTES: u64 = 64 * 1024;

/// One call the sender made, priced.
#[derive(Debug, Clone)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub status: u16,
    pub wru: f64,
    pub rru: f64,
    /// Billed SQS requests (per 64 KB chunk); 0 for DynamoDB.
    pub sqs_requests: f64,
    /// Messages a SendMessage/SendMessageBatch carried.
    pub messages: u64,
    /// A conditional write refused, or a transaction cancelled.
    pub refused: bool,
}

struct State {
    moto: String,
    http: reqwest::Client,
    schema: Schema,
    table: Mutex<String>,
    sim: Mutex<HashMap<String, Item>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    calls: Mutex<Vec<Call>>,
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(moto: &str, schema: Schema) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("bind the proxy: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(State {
            moto: moto.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            schema,
            table: Mutex::default(),
            sim: Mutex::default(),
            locks: Mutex::default(),
            calls: Mutex::default(),
        });
        let server = webhooks_tests::serve_http1(listener, state.clone(), |state: Arc<State>, request| async move {
            state.handle(request).await
        });
        Ok(Self { addr, state, server })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts pricing calls on `table`: forgets earlier calls and copies the table as it is now.
    pub async fn begin(&self, table: &str) -> Result<(), String> {
        *lock(&self.state.table) = table.to_owned();
        lock(&self.state.calls).clear();
        let mut copy = HashMap::new();
        let mut start: Option<Value> = None;
        loop {
            let mut request = json!({"TableName": table, "ConsistentRead": true});
            if let Some(key) = start.take() {
                request["ExclusiveStartKey"] = key;
            }
            let (status, page) = self.state.internal("Scan", &request).await;
            if status != 200 {
                return Err(format!("scan of {table} for the proxy's copy: {status} {page}"));
            }
            for item in page["Items"].as_array().into_iter().flatten().filter_map(Value::as_object) {
                copy.insert(self.state.schema.key_string(&self.state.schema.key_of(item)), item.clone());
            }
            match page.get("LastEvaluatedKey") {
                Some(key) if !key.is_null() => start = Some(key.clone()),
                _ => break,
            }
        }
        *lock(&self.state.sim) = copy;
        Ok(())
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one write request does to one item.
struct Written {
    key: Item,
    transactional: bool,
    /// A condition check in a transaction: priced as a write of the unchanged item.
    check_only: bool,
}

impl State {
    async fn handle(&self, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (prefix, operation) = target.split_once('.').unwrap_or(("unknown", target.as_str()));
        let service = if prefix.starts_with("DynamoDB") {
            "DynamoDB"
        } else if prefix.starts_with("AmazonSQS") {
            "SQS"
        } else {
            "other"
        };
        let document: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

        let writes = if service == "DynamoDB" { self.written_keys(operation, &document) } else { Vec::new() };
        let mut key_strings: Vec<String> = writes.iter().map(|w| self.schema.key_string(&w.key)).collect();
        key_strings.sort();
        key_strings.dedup();
        let mut guards = Vec::with_capacity(key_strings.len());
        for key in &key_strings {
            let mutex = lock(&self.locks).entry(key.clone()).or_default().clone();
            guards.push(mutex.lock_owned().await);
        }

        let mut forward = self.http.request(parts.method.clone(), format!("{}{}", self.moto, parts.uri));
        for (name, value) in &parts.headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding" | "accept-encoding" | "expect"
            ) {
                forward = forward.header(name, value);
            }
        }
        let (status, headers, reply) = match forward.body(body.clone()).send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                (status, headers, response.bytes().await.unwrap_or_default())
            }
            Err(e) => (StatusCode::BAD_GATEWAY, http::HeaderMap::new(), Bytes::from(format!("proxy: {e}"))),
        };
        let answer: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        let error_type = answer["__type"].as_str().unwrap_or_default().rsplit('#').next().unwrap_or_default();
        let refused = matches!(error_type, "ConditionalCheckFailedException" | "TransactionCanceledException");

        let mut call = Call {
            service: service.to_owned(),
            operation: operation.to_owned(),
            status: status.as_u16(),
            wru: 0.0,
            rru: 0.0,
            sqs_requests: 0.0,
            messages: 0,
            refused,
        };
        match service {
            "DynamoDB" if status.is_success() || refused => {
                call.wru = self.price_writes(&writes, status.is_success()).await;
                call.rru = self.price_reads(operation, &document).await;
            }
            "SQS" => (call.sqs_requests, call.messages) = sqs_billing(operation, &document),
            _ => {}
        }
        drop(guards);
        lock(&self.calls).push(call);

        let mut response = Response::new(Full::new(reply));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                response.headers_mut().append(name, value.clone());
            }
        }
        response
    }

    fn is_our_table(&self, name: &Value) -> bool {
        name.as_str() == Some(lock(&self.table).as_str())
    }

    fn written_keys(&self, operation: &str, request: &Value) -> Vec<Written> {
        let single = |key: Option<&Map<String, Value>>| {
            key.filter(|_| self.is_our_table(&request["TableName"]))
                .map(|key| Written { key: self.schema.key_of(key), transactional: false, check_only: false })
                .into_iter()
                .collect()
        };
        match operation {
            "PutItem" => single(request["Item"].as_object()),
            "UpdateItem" | "DeleteItem" => single(request["Key"].as_object()),
            "BatchWriteItem" => request["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(table, _)| self.is_our_table(&Value::String((*table).clone())))
                .flat_map(|(_, requests)| requests.as_array().into_iter().flatten())
                .filter_map(|r| r["PutRequest"]["Item"].as_object().or_else(|| r["DeleteRequest"]["Key"].as_object()))
                .map(|key| Written { key: self.schema.key_of(key), transactional: false, check_only: false })
                .collect(),
            "TransactWriteItems" => request["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|entry| {
                    let (kind, action) = entry.as_object()?.iter().next()?;
                    if !self.is_our_table(&action["TableName"]) {
                        return None;
                    }
                    let key = if kind == "Put" { action["Item"].as_object()? } else { action["Key"].as_object()? };
                    Some(Written {
                        key: self.schema.key_of(key),
                        transactional: true,
                        check_only: kind == "ConditionCheck",
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Prices each written item from its old copy and its state in moto now, and replays the
    /// write on the copy.
    async fn price_writes(&self, writes: &[Written], applied: bool) -> f64 {
        let mut units = 0.0;
        for write in writes {
            let key = self.schema.key_string(&write.key);
            let old = lock(&self.sim).get(&key).cloned();
            if write.check_only || !applied {
                units += charged_write(&self.schema, old.as_ref(), old.as_ref(), applied, write.transactional);
                continue;
            }
            let table = lock(&self.table).clone();
            let (_, read) =
                self.internal("GetItem", &json!({"TableName": table, "Key": write.key, "ConsistentRead": true})).await;
            let new = read["Item"].as_object().cloned();
            units += charged_write(&self.schema, old.as_ref(), new.as_ref(), true, write.transactional);
            let mut sim = lock(&self.sim);
            match new {
                Some(item) => sim.insert(key, item),
                None => sim.remove(&key),
            };
        }
        units
    }

    async fn price_reads(&self, operation: &str, request: &Value) -> f64 {
        let consistent = |value: &Value| value["ConsistentRead"].as_bool().unwrap_or(false);
        let stored_size = |key: &Value| {
            key.as_object().map(|key| {
                lock(&self.sim).get(&self.schema.key_string(&self.schema.key_of(key))).map(item_size).unwrap_or(0)
            })
        };
        match operation {
            "GetItem" if self.is_our_table(&request["TableName"]) => {
                read_units_for(stored_size(&request["Key"]).unwrap_or(0), consistent(request))
            }
            "BatchGetItem" => request["RequestItems"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(table, _)| self.is_our_table(&Value::String((*table).clone())))
                .map(|(_, asked)| {
                    asked["Keys"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|key| read_units_for(stored_size(key).unwrap_or(0), consistent(asked)))
                        .sum::<f64>()
                })
                .sum(),
            "TransactGetItems" => request["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|entry| self.is_our_table(&entry["Get"]["TableName"]))
                .map(|entry| 2.0 * read_units_for(stored_size(&entry["Get"]["Key"]).unwrap_or(0), true))
                .sum(),
            "Query" | "Scan" if self.is_our_table(&request["TableName"]) => {
                let (status, read) = self.internal(operation, &unfiltered(request)).await;
                if status != 200 {
                    eprintln!("aws-cost: the unfiltered copy of a {operation} failed ({status}): {read}");
                }
                // An index holds only what it projects, whatever moto hands back.
                let index =
                    request["IndexName"].as_str().and_then(|name| self.schema.indexes.iter().find(|i| i.name == name));
                let bytes: u64 = read["Items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .map(|item| match index {
                        Some(index) => self.schema.projected(index, item).as_ref().map_or(0, item_size),
                        None => item_size(item),
                    })
                    .sum();
                read_units_for(bytes, consistent(request))
            }
            _ => 0.0,
        }
    }

    /// A DynamoDB call of the proxy's own, straight to moto.
    async fn internal(&self, operation: &str, request: &Value) -> (u16, Value) {
        let sent = self
            .http
            .post(format!("{}/", self.moto))
            .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
            .header("content-type", "application/x-amz-json-1.0")
            .header(INTERNAL_HEADER, "1")
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={INTERNAL_ACCESS_KEY}/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0"
                ),
            )
            .body(request.to_string())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }
}

/// The same Query or Scan without what only trims its answer (filter, projection, select), and
/// without the expression names and values only those used: it reads, and returns, what the
/// original read.
fn unfiltered(request: &Value) -> Value {
    let mut copy = request.clone();
    let Some(object) = copy.as_object_mut() else {
        return copy;
    };
    for field in ["FilterExpression", "ProjectionExpression", "Select", "AttributesToGet", "QueryFilter", "ScanFilter"]
    {
        object.remove(field);
    }
    let used = object.get("KeyConditionExpression").and_then(Value::as_str).unwrap_or_default().to_owned();
    for placeholders in ["ExpressionAttributeNames", "ExpressionAttributeValues"] {
        if let Some(Value::Object(map)) = object.get_mut(placeholders) {
            map.retain(|name, _| mentions(&used, name));
            if map.is_empty() {
                object.remove(placeholders);
            }
        }
    }
    copy
}

/// Whether `expression` uses the placeholder `name` (`:pk` and not only `:pk2`).
fn mentions(expression: &str, name: &str) -> bool {
    expression.match_indices(name).any(|(at, _)| {
        !expression[at + name.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Billed requests (one per started 64 KB of payload) and messages carried.
fn sqs_billing(operation: &str, request: &Value) -> (f64, u64) {
    let payload = |message: &Value| {
        let attributes: u64 = message["MessageAttributes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, value)| {
                name.len() as u64
                    + value["DataType"].as_str().map_or(0, str::len) as u64
                    + value["StringValue"].as_str().map_or(0, str::len) as u64
                    + value["BinaryValue"].as_str().map_or(0, str::len) as u64
            })
            .sum();
        message["MessageBody"].as_str().map_or(0, str::len) as u64 + attributes
    };
    let chunks = |bytes: u64| bytes.div_ceil(SQS_CHUNK_BYTES).max(1) as f64;
    match operation {
        "SendMessage" => (chunks(payload(request)), 1),
        "SendMessageBatch" => {
            let entries = request["Entries"].as_array().cloned().unwrap_or_default();
            (chunks(entries.iter().map(payload).sum()), entries.len() as u64)
        }
        _ => (1.0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unfiltered_query_keeps_the_key_condition_and_its_placeholders_only() {
        let query = json!({
            "TableName": "t", "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "FilterExpression": "#s = :s2", "ProjectionExpression": "sk",
            "ExpressionAttributeNames": {"#s": "state"},
            "ExpressionAttributeValues": {":pk": {"S": "a"}, ":p": {"S": "b"}, ":s2": {"S": "c"}},
            "Limit": 10
        });
        assert_eq!(
            unfiltered(&query),
            json!({
                "TableName": "t", "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                "ExpressionAttributeValues": {":pk": {"S": "a"}, ":p": {"S": "b"}}, "Limit": 10
            })
        );
    }

    #[test]
    fn sqs_bills_a_batch_per_started_64_kb_of_its_payload() {
        let small = json!({"Entries": [{"MessageBody": "x"}, {"MessageBody": "y"}]});
        assert_eq!(sqs_billing("SendMessageBatch", &small), (1.0, 2));
        let big = json!({"MessageBody": "x".repeat(70_000)});
        assert_eq!(sqs_billing("SendMessage", &big), (2.0, 1));
    }
}
