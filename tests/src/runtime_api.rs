//! Running the real Lambda binaries locally: a Lambda Runtime API emulator on 127.0.0.1 (one
//! per function process), the process itself spawned with a Lambda-like environment, and
//! builders for the events AWS hands those functions (API Gateway HTTP API payload 2.0, SQS).
//!
//! The emulator implements what `lambda_runtime` calls: `GET /2018-06-01/runtime/invocation/next`
//! (long poll; answered with the event and the `Lambda-Runtime-*` headers),
//! `POST .../invocation/{id}/response`, `POST .../invocation/{id}/error` and
//! `POST /2018-06-01/runtime/init/error`.

// Test harness: a broken socket or a poisoned lock should fail the test loudly.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const PREFIX: &str = "/2018-06-01/runtime";
const ACCOUNT_ID: &str = "123456789012";
const REGION: &str = "us-east-1";

/// How long an invocation may run before the emulator gives up on it.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cold start may take before the process is reported as stuck.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(60);

type Outcome = Result<Value, Value>;

struct Invocation {
    request_id: String,
    event: Value,
    deadline: Duration,
    reply: oneshot::Sender<Outcome>,
}

struct State {
    function_name: String,
    pending: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: watch::Sender<Option<Instant>>,
    init_error: Mutex<Option<Value>>,
    polls: AtomicU64,
}

/// A Lambda Runtime API for one function process, on a free loopback port.
pub struct RuntimeApi {
    addr: SocketAddr,
    state: Arc<State>,
    queue: mpsc::UnboundedSender<Invocation>,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start(function_name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the runtime API emulator");
        let addr = listener.local_addr().expect("emulator address");
        let (queue, pending) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            function_name: function_name.to_owned(),
            pending: tokio::sync::Mutex::new(pending),
            in_flight: Mutex::default(),
            first_poll: watch::channel(None).0,
            init_error: Mutex::default(),
            polls: AtomicU64::new(0),
        });
        let server = crate::serve_http1(listener, state.clone(), |state: Arc<State>, request| async move {
            state.answer(request).await
        });
        Self { addr, state, queue, server }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// When the function first asked for an invocation (its cold start was over).
    pub fn first_poll(&self) -> Option<Instant> {
        *self.state.first_poll.borrow()
    }

    /// Waits until the function first polls `/next`, or `timeout` passes.
    pub async fn wait_for_first_poll(&self, timeout: Duration) -> Option<Instant> {
        let mut first = self.state.first_poll.subscribe();
        match tokio::time::timeout(timeout, first.wait_for(Option::is_some)).await {
            Ok(Ok(at)) => *at,
            _ => None,
        }
    }

    /// What the function posted to `/runtime/init/error`, if anything.
    pub fn init_error(&self) -> Option<Value> {
        self.state.init_error.lock().expect("init error").clone()
    }

    /// How many times the function has polled `/next`.
    pub fn polls(&self) -> u64 {
        self.state.polls.load(Ordering::SeqCst)
    }

    /// Hands `event` to the function's next `/next` poll and waits for its `/response`
    /// (`Ok`) or `/error` (`Err`, the error document with `errorType` and `errorMessage`).
    pub async fn invoke(&self, event: Value) -> Outcome {
        self.invoke_with_timeout(event, DEFAULT_INVOKE_TIMEOUT).await
    }

    /// As [`invoke`](Self::invoke); a function that does not answer in time is an
    /// `Emulator.Timeout` error, as Lambda reports "Task timed out".
    pub async fn invoke_with_timeout(&self, event: Value, timeout: Duration) -> Outcome {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (reply, outcome) = oneshot::channel();
        let invocation = Invocation { request_id: request_id.clone(), event, deadline: timeout, reply };
        if self.queue.send(invocation).is_err() {
            return Err(emulator_error("Emulator.Closed", "the emulator is no longer accepting invocations"));
        }
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(emulator_error("Emulator.Dropped", &format!("invocation {request_id} was dropped"))),
            Err(_) => {
                self.state.in_flight.lock().expect("in flight").remove(&request_id);
                Err(emulator_error(
                    "Emulator.Timeout",
                    &format!("{} did not answer invocation {request_id} within {timeout:?}", self.state.function_name),
                ))
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn emulator_error(error_type: &str, message: &str) -> Value {
    json!({"errorType": error_type, "errorMessage": message})
}

impl State {
    async fn answer(&self, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let Some(route) = path.strip_prefix(PREFIX) else {
            return reply(StatusCode::NOT_FOUND, json!({"errorMessage": format!("no route {path}")}));
        };
        let segments: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
        match (parts.method.clone(), segments.as_slice()) {
            (Method::GET, ["invocation", "next"]) => self.next().await,
            (Method::POST, ["invocation", request_id, kind @ ("response" | "error")]) => {
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let mut document: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
                if *kind == "error"
                    && let (Value::Object(object), Some(error_type)) =
                        (&mut document, parts.headers.get("lambda-runtime-function-error-type"))
                {
                    object
                        .entry("errorType")
                        .or_insert_with(|| Value::String(error_type.to_str().unwrap_or_default().to_owned()));
                }
                let waiting = self.in_flight.lock().expect("in flight").remove(*request_id);
                match waiting {
                    Some(waiting) => {
                        let _ = waiting.send(if *kind == "response" { Ok(document) } else { Err(document) });
                        reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
                    }
                    None => reply(
                        StatusCode::BAD_REQUEST,
                        json!({"errorType": "InvalidRequestID", "errorMessage": format!("unknown request id {request_id}")}),
                    ),
                }
            }
            (Method::POST, ["init", "error"]) => {
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let document = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
                *self.init_error.lock().expect("init error") = Some(document);
                reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
            }
            _ => reply(StatusCode::NOT_FOUND, json!({"errorMessage": format!("no route {} {path}", parts.method)})),
        }
    }

    /// The long poll: waits for the next invocation, then answers with its event.
    async fn next(&self) -> Response<Full<Bytes>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.first_poll.send_if_modified(|first| {
            if first.is_none() {
                *first = Some(Instant::now());
                true
            } else {
                false
            }
        });
        let invocation = {
            let mut pending = self.pending.lock().await;
            pending.recv().await
        };
        let Some(invocation) = invocation else {
            return reply(StatusCode::GONE, json!({"errorMessage": "the emulator is shutting down"}));
        };
        let deadline_ms = SystemTime::now()
            .checked_add(invocation.deadline)
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or_default();
        self.in_flight.lock().expect("in flight").insert(invocation.request_id.clone(), invocation.reply);
        let mut response = Response::new(Full::new(Bytes::from(invocation.event.to_string())));
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("lambda-runtime-aws-request-id", invocation.request_id),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", function_arn(&self.function_name)),
            ("lambda-runtime-trace-id", format!("Root=1-00000000-{:024x};Sampled=0", deadline_ms)),
        ] {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

pub fn function_arn(function_name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}")
}

/// Where cargo put the workspace's binaries: `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
pub fn binaries_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(Into::into))
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { workspace.join(dir) })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug")
}

/// A compiled Lambda binary running as a child process against its own emulator. The
/// process is killed when this is dropped.
pub struct LambdaProcess {
    pub name: String,
    pub binary: PathBuf,
    /// The binary's size on disk, in bytes.
    pub binary_size: u64,
    /// Process spawn to its first `/next` poll.
    pub cold_init: Duration,
    pub api: RuntimeApi,
    child: Mutex<Child>,
    log: PathBuf,
}

impl LambdaProcess {
    /// Spawns `<binaries_dir>/<package>` with the Lambda runtime's environment plus `env`
    /// (nothing else is inherited but `RUST_LOG`), and waits for its cold start to finish.
    /// Panics, with the process's output, when the cold start fails.
    pub async fn start(package: &str, env: &[(&str, String)]) -> Self {
        match Self::try_start(package, env).await {
            Ok(process) => process,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// As [`start`](Self::start), but a process that exits during its cold start is an
    /// `Err` with its exit status, what it posted to `/runtime/init/error` and its output.
    pub async fn try_start(package: &str, env: &[(&str, String)]) -> Result<Self, ColdStartFailure> {
        Self::try_start_at(binaries_dir().join(package), package, env).await
    }

    /// As [`try_start`](Self::try_start), for the binary at `binary` (a release build, say),
    /// running as the function `package`.
    pub async fn try_start_at(
        binary: PathBuf,
        package: &str,
        env: &[(&str, String)],
    ) -> Result<Self, ColdStartFailure> {
        let binary_size = match std::fs::metadata(&binary) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => panic!(
                "the Lambda binary {} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
                binary.display()
            ),
        };
        let api = RuntimeApi::start(package).await;
        let log =
            std::env::temp_dir().join(format!("lambda-e2e-{package}-{}-{}.log", std::process::id(), api.addr.port()));
        let log_file = File::create(&log).expect("create the function's log file");
        let mut command = Command::new(&binary);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.host_port())
            .env("AWS_LAMBDA_FUNCTION_NAME", package)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{package}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file handle"))
            .stderr(log_file);
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let spawned = Instant::now();
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let process = Self {
            name: package.to_owned(),
            binary,
            binary_size,
            cold_init: Duration::ZERO,
            api,
            child: Mutex::new(child),
            log,
        };
        process.wait_for_init(spawned).await
    }

    async fn wait_for_init(mut self, spawned: Instant) -> Result<Self, ColdStartFailure> {
        let give_up = spawned + DEFAULT_INIT_TIMEOUT;
        loop {
            if let Some(first) = self.api.wait_for_first_poll(Duration::from_millis(50)).await {
                self.cold_init = first.duration_since(spawned);
                return Ok(self);
            }
            if let Some(status) = self.exited() {
                return Err(ColdStartFailure {
                    name: self.name.clone(),
                    status,
                    init_error: self.api.init_error(),
                    output: self.logs(),
                    log_tail: self.log_tail(),
                });
            }
            if Instant::now() > give_up {
                panic!(
                    "{} did not poll for an invocation within {DEFAULT_INIT_TIMEOUT:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
    }

    /// Invokes the function; a process that dies meanwhile is a `Runtime.ExitError`, as in Lambda.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let invocation = self.api.invoke(event);
        tokio::pin!(invocation);
        loop {
            tokio::select! {
                outcome = &mut invocation => return outcome,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(status) = self.exited() {
                        return Err(json!({
                            "errorType": "Runtime.ExitError",
                            "errorMessage": format!("{} exited ({status})\n{}", self.name, self.log_tail()),
                        }));
                    }
                }
            }
        }
    }

    /// Invokes an HTTP function with an API Gateway event and reads its answer.
    pub async fn request(&self, event: Value) -> HttpReply {
        match self.invoke(event).await {
            Ok(response) => HttpReply::from_lambda(&response),
            Err(error) => panic!("{} failed instead of answering: {error}\n{}", self.name, self.log_tail()),
        }
    }

    fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().expect("child").try_wait().ok().flatten()
    }

    /// What the function logged (stdout and stderr).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- last lines of {} ({}):\n{tail}", self.name, self.log.display())
    }
}

/// A function process that exited before asking for its first invocation.
#[derive(Debug)]
pub struct ColdStartFailure {
    pub name: String,
    pub status: ExitStatus,
    /// What it posted to `/runtime/init/error`, if anything.
    pub init_error: Option<Value>,
    /// Everything it wrote to stdout and stderr.
    pub output: String,
    log_tail: String,
}

impl std::fmt::Display for ColdStartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited during its cold start ({}); init error: {:?}\n{}",
            self.name, self.status, self.init_error, self.log_tail
        )
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}: logs kept in {}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// An API Gateway HTTP API (payload format 2.0) event for `route_key` such as
/// `"GET /webhooks/{id}"`, requesting `path` (with an optional `?query`). Path parameters are
/// read off the route template, as the gateway does; the caller is an IAM principal.
pub fn http_event(route_key: &str, path: &str, body: Option<&Value>) -> Value {
    let (method, template) = route_key.split_once(' ').unwrap_or(("GET", route_key));
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let domain = "abcdef1234.execute-api.us-east-1.amazonaws.com";
    let mut headers = Map::new();
    headers.insert("accept".into(), "application/json".into());
    headers.insert("host".into(), domain.into());
    headers.insert("user-agent".into(), "lambda-e2e".into());
    headers.insert("x-amzn-trace-id".into(), format!("Root=1-{:08x}-{}", now.as_secs(), &request_id[..24]).into());
    headers.insert("x-forwarded-for".into(), "127.0.0.1".into());
    headers.insert("x-forwarded-port".into(), "443".into());
    headers.insert("x-forwarded-proto".into(), "https".into());
    let body_text = body.map(Value::to_string);
    match &body_text {
        Some(text) => {
            headers.insert("content-type".into(), "application/json".into());
            headers.insert("content-length".into(), text.len().to_string().into());
        }
        None => {
            headers.insert("content-length".into(), "0".into());
        }
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "abcdef1234",
            "authorizer": {
                "iam": {
                    "accessKey": "AKIAIOSFODNN7EXAMPLE",
                    "accountId": ACCOUNT_ID,
                    "callerId": "AIDACKCEVSQ6C2EXAMPLE",
                    "principalOrgId": null,
                    "userArn": format!("arn:aws:iam::{ACCOUNT_ID}:user/operator"),
                    "userId": "AIDACKCEVSQ6C2EXAMPLE"
                }
            },
            "domainName": domain,
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "lambda-e2e"
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2025:00:00:00 +0000",
            "timeEpoch": now.as_millis() as u64
        },
        "isBase64Encoded": false
    });
    let parameters = path_parameters(template, raw_path);
    if !parameters.is_empty() {
        event["pathParameters"] = Value::Object(parameters);
    }
    let query = query_parameters(raw_query);
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if let Some(text) = body_text {
        event["body"] = Value::String(text);
    }
    event
}

fn path_parameters(template: &str, path: &str) -> Map<String, Value> {
    let mut parameters = Map::new();
    let names = template.split('/').filter(|s| !s.is_empty());
    let values = path.split('/').filter(|s| !s.is_empty());
    for (name, value) in names.zip(values) {
        if let Some(name) = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            parameters.insert(name.trim_end_matches('+').to_owned(), Value::String(value.to_owned()));
        }
    }
    parameters
}

/// The gateway's `queryStringParameters`: repeated keys joined with commas.
fn query_parameters(raw: &str) -> Map<String, Value> {
    let mut parameters = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let bytes = s.replace('+', " ");
            percent_decode(&bytes)
        };
        let (key, value) = (decode(key), decode(value));
        match parameters.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                parameters.insert(key, Value::String(value));
            }
        }
    }
    parameters
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An SQS event as Lambda's event source mapping delivers it, one record per
/// `(message_id, body)` taken from the queue at `queue_url`.
pub fn sqs_event(queue_url: &str, messages: &[(String, String)]) -> Value {
    sqs_event_received(queue_url, messages, 1)
}

/// An SQS event whose records the queue has handed out `receive_count` times (SQS's
/// `ApproximateReceiveCount`): more than 1 for a message redelivered after a visibility timeout.
pub fn sqs_event_received(queue_url: &str, messages: &[(String, String)], receive_count: u32) -> Value {
    let queue_name = queue_url.rsplit('/').next().unwrap_or("queue");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().to_string();
    let records: Vec<Value> = messages
        .iter()
        .map(|(message_id, body)| {
            json!({
                "messageId": message_id,
                "receiptHandle": format!("AQEB{}", base64::engine::general_purpose::STANDARD.encode(message_id)),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": receive_count.to_string(),
                    "SentTimestamp": now,
                    "SenderId": "AIDACKCEVSQ6C2EXAMPLE",
                    "ApproximateFirstReceiveTimestamp": now
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"),
                "awsRegion": REGION
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An API Gateway payload 2.0 response, its body decoded and parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Map<String, Value>,
    pub is_base64_encoded: bool,
    /// The body text (base64-decoded when the function encoded it).
    pub raw: String,
    /// The body as JSON, or the text as a JSON string.
    pub body: Value,
}

impl HttpReply {
    pub fn from_lambda(response: &Value) -> Self {
        let status = response["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no statusCode in {response}"));
        let headers: Map<String, Value> = response["headers"]
            .as_object()
            .map(|h| h.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
            .unwrap_or_default();
        let is_base64_encoded = response["isBase64Encoded"].as_bool().unwrap_or(false);
        let text = response["body"].as_str().unwrap_or_default();
        let raw = if is_base64_encoded {
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).expect("base64 body");
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            text.to_owned()
        };
        let body = serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw.clone()));
        Self { status, headers, is_base64_encoded, raw, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).and_then(Value::as_str)
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_parameters_are_read_like_the_gateway_does() {
        let event = http_event("GET /webhooks/{id}/logs", "/webhooks/abc/logs?state=failed&limit=5&x=a&x=b%20c", None);
        assert_eq!(event["pathParameters"], json!({"id": "abc"}));
        assert_eq!(event["queryStringParameters"], json!({"state": "failed", "limit": "5", "x": "a,b c"}));
        assert_eq!(event["rawPath"], "/webhooks/abc/logs");
        assert_eq!(event["requestContext"]["http"]["method"], "GET");
        assert!(event.get("body").is_none());
    }
}
