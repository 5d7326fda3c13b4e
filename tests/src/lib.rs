//! The test harness: a `TestApp` running the real handlers on the embedded store and the
//! store-backed local queue, driven with plain HTTP requests; a recording queue and a
//! sender for delivery tests; real loopback receivers; moto.

pub mod moto;
mod receiver;
pub mod runtime_api;
mod sending;
mod serve;

pub use receiver::{Received, Receiver, Reply, most_within};
pub use sending::{RecordingDeadLetters, RecordingQueue, TestSender};
pub use serve::serve_http1;

use std::sync::Arc;

use http::{Method, StatusCode};
use lambda_http::{Body, Request};
use serde_json::Value;
use webhooks::queue::LocalQueue;
use webhooks::store::{EmbeddedStore, LocalTasks, Store};
use webhooks::{App, Config};

pub struct TestApp {
    pub app: App,
    pub store: Arc<dyn Store>,
    /// The local queue's tasks: what the handlers queued.
    pub tasks: LocalTasks,
}

/// What a request got back: status, content type and the body parsed as JSON (or the text).
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub raw: String,
}

impl TestApp {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let embedded = EmbeddedStore::in_memory().expect("in-memory store");
        let tasks = LocalTasks::new(&embedded);
        let store: Arc<dyn Store> = Arc::new(embedded);
        let queue = Arc::new(LocalQueue::new(tasks.clone()));
        Self { app: App::new(store.clone(), queue, config), store, tasks }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        let builder = http::Request::builder().method(method).uri(path);
        let request = match body {
            Some(json) => builder.header("content-type", "application/json").body(Body::from(json.to_string())),
            None => builder.body(Body::Empty),
        };
        self.send(request.expect("request")).await
    }

    pub async fn send(&self, request: Request) -> TestResponse {
        let response = webhooks::api::route(&self.app, request).await;
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let raw = String::from_utf8_lossy(response.body().as_ref()).into_owned();
        let body = serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        TestResponse { status, content_type, body, raw }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> TestResponse {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.request(Method::DELETE, path, None).await
    }

    /// Creates a webhook through the API and returns its id.
    pub async fn create_webhook(&self, name: &str, event_types: &[&str]) -> String {
        let response = self
            .post(
                "/webhooks",
                serde_json::json!({"name": name, "url": "https://example.com/hook", "event_types": event_types, "secret_token": "s3cr3t-token"}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.raw);
        response.body["webhook_id"].as_str().expect("webhook_id").to_owned()
    }
}

impl Default for TestApp {
    fn default() -> Self {
        Self::new()
    }
}

impl TestResponse {
    /// Asserts a problem+json answer with this status, and returns its detail.
    pub fn problem(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.raw);
        assert_eq!(self.content_type, "application/problem+json", "{}", self.raw);
        assert_eq!(self.body["status"], status.as_u16(), "{}", self.raw);
        assert!(self.body["code"].is_u64() && self.body["title"].is_string(), "{}", self.raw);
        assert_eq!(self.body["errors"][0], self.body["detail"]);
        self.body["detail"].as_str().unwrap_or_default().to_owned()
    }
}
