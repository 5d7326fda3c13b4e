//! The OpenAPI description (`openapi/openapi.yaml`) against the server it describes: the same
//! routes, a documented status and a body matching the documented schema for every answer,
//! request schemas that accept and refuse what the server does, and the catalog's event types.

#![allow(clippy::expect_used, reason = "helpers of a test: a failed expectation is a failed test")]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::Utc;
use http::{HeaderMap, Method};
use lambda_http::Body;
use serde_json::{Value, json};
use uuid::Uuid;
use webhooks::api::ROUTES;
use webhooks::domain::{
    Attempt, CustomHeaders, DeliveryLog, DeliveryState, EventEnvelope, MessageFormat, RateLimit, SecretToken,
    WebhookId, WebhookState,
};
use webhooks::events::EventType;
use webhooks_tests::TestApp;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.yaml");
const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// --- reading the document ---

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC_PATH).expect("openapi/openapi.yaml is readable");
        serde_norway::from_str(&text).expect("openapi/openapi.yaml is YAML with string keys")
    })
}

/// What a local `$ref` points at.
fn target(reference: &str) -> &'static Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs are used: {reference}"));
    spec().pointer(pointer).unwrap_or_else(|| panic!("$ref {reference} resolves to nothing"))
}

/// A response, parameter or request body object, with its `$ref` (if any) followed.
fn resolved(value: &'static Value) -> &'static Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolved(target(reference)),
        None => value,
    }
}

fn operation(method: &str, template: &str) -> &'static Value {
    spec()["paths"][template]
        .get(method.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("the spec has no operation {method} {template}"))
}

fn spec_routes() -> BTreeSet<(String, String)> {
    let paths = spec()["paths"].as_object().expect("paths is a map");
    paths
        .iter()
        .flat_map(|(template, item)| {
            HTTP_METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| (method.to_ascii_uppercase(), template.clone()))
        })
        .collect()
}

fn served_routes() -> BTreeSet<(String, String)> {
    ROUTES.iter().map(|(method, path)| ((*method).to_owned(), (*path).to_owned())).collect()
}

fn request_schema(method: &str, template: &str) -> Option<&'static Value> {
    let body = resolved(operation(method, template).get("requestBody")?);
    Some(&body["content"]["application/json"]["schema"])
}

fn enum_of(schema: &str) -> Vec<String> {
    spec()["components"]["schemas"][schema]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema} has an enum"))
        .iter()
        .map(|value| value.as_str().expect("enum values are strings").to_owned())
        .collect()
}

/// Compiles `schema` with the document's components beside it, so that every
/// `#/components/...` reference in it resolves as it does in the document.
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut root = schema.as_object().cloned().unwrap_or_else(|| panic!("a schema object, not {schema}"));
    root.insert("components".to_owned(), spec()["components"].clone());
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|err| panic!("schema {schema} does not compile: {err}"))
}

fn violations(schema: &Value, instance: &Value) -> Vec<String> {
    validator(schema)
        .iter_errors(instance)
        .map(|err| format!("at {:?}: {err}", err.instance_path().to_string()))
        .collect()
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                refs.push(reference.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

// --- talking to the server ---

enum Payload {
    None,
    Json(Value),
    Raw(&'static str, String),
}

/// One request to one operation, and the status it must get.
struct Case {
    method: Method,
    template: &'static str,
    uri: String,
    payload: Payload,
    expect: u16,
}

fn case(method: Method, template: &'static str, uri: impl Into<String>) -> Case {
    Case { method, template, uri: uri.into(), payload: Payload::None, expect: 200 }
}

impl Case {
    fn json(mut self, body: Value) -> Self {
        self.payload = Payload::Json(body);
        self
    }

    fn raw(mut self, content_type: &'static str, body: impl Into<String>) -> Self {
        self.payload = Payload::Raw(content_type, body.into());
        self
    }

    fn expect(mut self, status: u16) -> Self {
        self.expect = status;
        self
    }

    fn route(&self) -> (String, String) {
        (self.method.to_string(), self.template.to_owned())
    }

    fn describe(&self) -> String {
        format!("{} {} (as {})", self.method, self.template, self.uri)
    }
}

struct Answer {
    status: u16,
    content_type: String,
    headers: HeaderMap,
    raw: String,
    body: Option<Value>,
}

async fn send(app: &TestApp, case: &Case) -> Answer {
    let builder = http::Request::builder().method(case.method.clone()).uri(&case.uri);
    let request = match &case.payload {
        Payload::None => builder.body(Body::Empty),
        Payload::Json(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
        Payload::Raw(content_type, text) => {
            builder.header("content-type", *content_type).body(Body::from(text.clone()))
        }
    }
    .expect("a well-formed request");

    let response = webhooks::api::route(&app.app, request).await;

    let raw = String::from_utf8_lossy(response.body().as_ref()).into_owned();
    Answer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        headers: response.headers().clone(),
        body: serde_json::from_str(&raw).ok(),
        raw,
    }
}

/// Asserts that the operation documents the answer's status, that the answer has the
/// documented required headers and content type, and that its body matches the schema.
fn assert_documented(case: &Case, answer: &Answer) {
    let what = format!("{} answered {}", case.describe(), answer.status);
    let response = operation(case.method.as_str(), case.template)["responses"]
        .get(answer.status.to_string())
        .map(resolved)
        .unwrap_or_else(|| panic!("{what}, a status it does not document: {}", answer.raw));
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let header = resolved(header);
            match answer.headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(value) => {
                    let errors = violations(&header["schema"], &Value::String(value.to_owned()));
                    assert!(errors.is_empty(), "{what}: header {name}: {value:?} breaks its schema: {errors:#?}");
                }
                None => assert!(header["required"] != true, "{what} without its required {name} header"),
            }
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        assert!(answer.raw.is_empty(), "{what} with a body it does not document: {}", answer.raw);
        return;
    };
    let media = content.get(&answer.content_type).unwrap_or_else(|| {
        let documented: Vec<&String> = content.keys().collect();
        panic!("{what} as {:?}; documented: {documented:?}", answer.content_type)
    });
    let body = answer.body.as_ref().unwrap_or_else(|| panic!("{what} with a body that is not JSON: {}", answer.raw));
    let errors = violations(&media["schema"], body);
    assert!(errors.is_empty(), "{what} with {body}, which breaks its schema: {errors:#?}");
}

/// Asserts that a request body the server accepted is one the operation documents.
fn assert_request_documented(case: &Case) {
    let schema = request_schema(case.method.as_str(), case.template);
    match (&case.payload, schema) {
        (Payload::Json(body), Some(schema)) => {
            let errors = violations(schema, body);
            assert!(
                errors.is_empty(),
                "{} accepted {body}, which its request schema refuses: {errors:#?}",
                case.describe()
            );
        }
        (Payload::Json(body), None) => {
            panic!("{} accepted {body} but documents no request body", case.describe())
        }
        _ => {}
    }
}

// --- fixtures ---

fn log_entry(webhook: &str, state: DeliveryState, attempts: Vec<Attempt>) -> DeliveryLog {
    let created = Utc::now() - chrono::Duration::minutes(30);
    let envelope = EventEnvelope {
        event_id: Uuid::new_v4(),
        event_type: EventType::Ping,
        event: json!({"ping_id": Uuid::new_v4()}).into(),
        instance_id: Uuid::new_v4(),
        instance_name: "openapi".into(),
        created_at: created,
    };
    let id = WebhookId::parse(webhook, "webhook_id").expect("a webhook id");
    let mut entry = DeliveryLog::new(id, envelope, created, chrono::Duration::days(7));
    entry.state = state;
    entry.try_count = u32::try_from(attempts.len()).expect("a few attempts");
    entry.attempts = attempts;
    // Kept on the record even when final; the views must hide it then.
    entry.next_attempt_at = Some(Utc::now() + chrono::Duration::minutes(5));
    entry
}

fn attempt(number: u32, status_code: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        attempt: number,
        at: Utc::now() - chrono::Duration::minutes(20),
        status_code,
        error: error.map(str::to_owned),
        duration_ms: 42,
        response_head: status_code.map(|code| format!("HTTP {code}: hello")),
    }
}

/// A service with webhooks in every shape an answer can show: with a secret and several
/// subscriptions, disabled with a reason, and with failed, retrying and delivered log entries.
struct Fixture {
    app: TestApp,
    id: String,
    spare: String,
    compat_spare: String,
    disabled: String,
    failed_event: Uuid,
    retrying_event: Uuid,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::new();
        let id = app.create_webhook("main", &["ping", "task_created"]).await;
        let spare = app.create_webhook("spare", &["ping"]).await;
        let compat_spare = app.create_webhook("compat-spare", &[]).await;
        let disabled = app.create_webhook("disabled", &["task_failed"]).await;
        let disabled_id = WebhookId::parse(&disabled, "webhook_id").expect("an id");
        let mut webhook = app.store.get_webhook(disabled_id).await.expect("store").expect("the webhook");
        webhook.state = WebhookState::Disabled;
        webhook.disabled_reason = Some("the endpoint answered 410 Gone".into());
        webhook.headers = CustomHeaders::parse([("Authorization", "Bearer k")]).expect("headers");
        webhook.rate_limit_per_second = Some(RateLimit::new(20).expect("a limit"));
        webhook.version += 1;
        app.store.update_webhook(&webhook).await.expect("disabled");
        let failed = log_entry(
            &id,
            DeliveryState::Failed,
            vec![attempt(1, Some(500), Some("the endpoint answered 500")), attempt(2, None, Some("timed out"))],
        );
        let retrying = log_entry(&id, DeliveryState::Retrying, vec![attempt(1, Some(503), None)]);
        let delivered = log_entry(&id, DeliveryState::Succeeded, vec![attempt(1, Some(204), None)]);
        for entry in [&failed, &retrying, &delivered] {
            assert!(app.store.insert_delivery(entry).await.expect("store"));
        }
        Self {
            app,
            id,
            spare,
            compat_spare,
            disabled,
            failed_event: failed.event_id,
            retrying_event: retrying.event_id,
        }
    }

    /// At least one success and one refusal for every route, in an order where each
    /// request finds what it needs.
    fn cases(&self) -> Vec<Case> {
        use Method as M;
        let Self { id, spare, compat_spare, disabled, failed_event, retrying_event, .. } = self;
        let ghost = Uuid::new_v4();
        let huge = json!({"name": "n", "url": "https://example.com", "event_types": [], "pad": "x".repeat(300 * 1024)});
        let since = (Utc::now() - chrono::Duration::days(1)).to_rfc3339();
        vec![
            // POST /webhooks
            case(M::POST, "/webhooks", "/webhooks")
                .json(json!({"name": "MYWEBHOOK", "url": "https://contoso.com/my-custom-webhook", "event_types": ["task_created"]}))
                .expect(201),
            case(M::POST, "/webhooks", "/webhooks")
                .json(json!({"name": " full ", "url": "https://example.com/hook?x=1", "event_types": ["ping", "ping", "crash_reported"], "secret_token": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "message_format": "event_grid", "extra": null}))
                .expect(201),
            case(M::POST, "/webhooks", "/webhooks")
                .json(json!({"name": "n", "url": "https://example.com", "event_types": ["tsk_created"]}))
                .expect(400),
            case(M::POST, "/webhooks", "/webhooks")
                .json(json!({"name": "opts", "url": "https://example.com", "event_types": ["*", "delivery_failed"], "headers": {"Authorization": "Bearer k", "X-Tenant": "42"}, "rate_limit_per_second": 100}))
                .expect(201),
            case(M::POST, "/webhooks", "/webhooks").json(huge.clone()).expect(413),
            case(M::POST, "/webhooks", "/webhooks").raw("text/plain", "name=x").expect(415),
            // GET /webhooks
            case(M::GET, "/webhooks", "/webhooks?event_type=ping&limit=1"),
            case(M::GET, "/webhooks", "/webhooks"),
            case(M::GET, "/webhooks", "/webhooks?limit=0").expect(400),
            case(M::GET, "/webhooks", "/webhooks?next=garbage").expect(400),
            case(M::GET, "/webhooks", "/webhooks?event_type=tsk_created").expect(400),
            // GET /webhooks/{id}
            case(M::GET, "/webhooks/{id}", format!("/webhooks/{id}")),
            case(M::GET, "/webhooks/{id}", format!("/webhooks/{disabled}")),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{disabled}"))
                .json(json!({"headers": {"X-Api-Key": "k"}, "rate_limit_per_second": 5, "event_types": ["*"]})),
            case(M::GET, "/webhooks/{id}", format!("/webhooks/{disabled}")),
            case(M::GET, "/webhooks/{id}", "/webhooks/not-a-uuid").expect(400),
            case(M::GET, "/webhooks/{id}", format!("/webhooks/{ghost}")).expect(404),
            // PATCH /webhooks/{id}
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{id}"))
                .json(json!({"name": "renamed", "event_types": ["ping", "task_created", "task_failed"], "secret_token": null, "message_format": "cloud_events", "url": null})),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{disabled}")).json(json!({"state": "enabled"})),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{id}")).json(json!({"state": "disabled"})).expect(400),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{id}")).json(json!({"webhook_id": id})).expect(400),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{ghost}")).json(json!({})).expect(404),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{id}")).raw("text/plain", "x").expect(415),
            case(M::PATCH, "/webhooks/{id}", format!("/webhooks/{id}")).json(huge.clone()).expect(413),
            // DELETE /webhooks/{id}
            case(M::DELETE, "/webhooks/{id}", format!("/webhooks/{spare}")),
            case(M::DELETE, "/webhooks/{id}", format!("/webhooks/{spare}")).expect(404),
            case(M::DELETE, "/webhooks/{id}", "/webhooks/not-a-uuid").expect(400),
            // POST /webhooks/{id}/ping
            case(M::POST, "/webhooks/{id}/ping", format!("/webhooks/{id}/ping")).expect(202),
            case(M::POST, "/webhooks/{id}/ping", format!("/webhooks/{ghost}/ping")).expect(404),
            case(M::POST, "/webhooks/{id}/ping", "/webhooks/nope/ping").expect(400),
            // GET /webhooks/{id}/logs
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs")),
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs?limit=1")),
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs?state=failed&limit=100")),
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs?state=lost")).expect(400),
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs?limit=101")).expect(400),
            case(M::GET, "/webhooks/{id}/logs", format!("/webhooks/{ghost}/logs")).expect(404),
            // GET /webhooks/{id}/logs/{event_id}
            case(M::GET, "/webhooks/{id}/logs/{event_id}", format!("/webhooks/{id}/logs/{failed_event}")),
            case(M::GET, "/webhooks/{id}/logs/{event_id}", format!("/webhooks/{id}/logs/{retrying_event}")),
            case(M::GET, "/webhooks/{id}/logs/{event_id}", format!("/webhooks/{id}/logs/{ghost}")).expect(404),
            case(M::GET, "/webhooks/{id}/logs/{event_id}", format!("/webhooks/{ghost}/logs/{failed_event}")).expect(404),
            case(M::GET, "/webhooks/{id}/logs/{event_id}", format!("/webhooks/{id}/logs/nope")).expect(400),
            // POST /webhooks/{id}/logs/{event_id}/redeliver
            case(M::POST, "/webhooks/{id}/logs/{event_id}/redeliver", format!("/webhooks/{id}/logs/{failed_event}/redeliver"))
                .expect(202),
            case(M::POST, "/webhooks/{id}/logs/{event_id}/redeliver", format!("/webhooks/{id}/logs/{ghost}/redeliver"))
                .expect(404),
            case(M::POST, "/webhooks/{id}/logs/{event_id}/redeliver", format!("/webhooks/{id}/logs/{retrying_event}/redeliver"))
                .expect(409),
            case(M::POST, "/webhooks/{id}/logs/{event_id}/redeliver", format!("/webhooks/{id}/logs/nope/redeliver"))
                .expect(400),
            // POST /webhooks/{id}/recover
            case(M::POST, "/webhooks/{id}/recover", format!("/webhooks/{id}/recover")).json(json!({"since": since})).expect(202),
            case(M::POST, "/webhooks/{id}/recover", format!("/webhooks/{id}/recover"))
                .json(json!({"since": "yesterday"}))
                .expect(400),
            case(M::POST, "/webhooks/{id}/recover", format!("/webhooks/{ghost}/recover")).json(json!({"since": since})).expect(404),
            case(M::POST, "/webhooks/{id}/recover", format!("/webhooks/{id}/recover")).raw("text/csv", "a,b").expect(415),
            // POST /events
            case(M::POST, "/events", "/events").json(json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}})).expect(202),
            case(M::POST, "/events", "/events")
                .json(json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}, "event_id": Uuid::new_v4(), "instance_id": Uuid::new_v4(), "instance_name": "fuzzing", "created_at": Utc::now().to_rfc3339()}))
                .expect(202),
            case(M::POST, "/events", "/events").json(json!({"event_type": "tsk_created", "event": {}})).expect(400),
            case(M::POST, "/events", "/events").json(json!({"event_type": "ping", "event": {"ping_id": 5}})).expect(400),
            case(M::POST, "/events", "/events").json(huge.clone()).expect(413),
            case(M::POST, "/events", "/events")
                .json(json!({"event_type": "delivery_failed", "event": EventType::DeliveryFailed.example().expect("example")}))
                .expect(202),
            case(M::POST, "/events", "/events")
                .json(json!({"event_type": "webhook_disabled", "event": {"webhook_id": Uuid::new_v4(), "name": "n", "reason": "bored", "failing_since": null}}))
                .expect(400),
            // GET /event-types, GET /event-types/{name}
            case(M::GET, "/event-types", "/event-types"),
            case(M::GET, "/event-types", "/event-types?operational=true"),
            case(M::GET, "/event-types", "/event-types?operational=maybe").expect(400),
            case(M::GET, "/event-types/{name}", "/event-types/task_created"),
            case(M::GET, "/event-types/{name}", "/event-types/webhook_disabled"),
            case(M::GET, "/event-types/{name}", "/event-types/tsk_created").expect(404),
            // POST /api/webhooks
            case(M::POST, "/api/webhooks", "/api/webhooks")
                .json(json!({"name": "MYWEBHOOK", "url": "https://contoso.com/x", "event_types": ["task_created"], "secret_token": null, "message_format": null})),
            case(M::POST, "/api/webhooks", "/api/webhooks")
                .json(json!({"name": "n", "url": "https://e.com", "event_types": [], "colour": "blue"}))
                .expect(400),
            case(M::POST, "/api/webhooks", "/api/webhooks").raw("text/plain", "x").expect(415),
            // GET /api/webhooks
            case(M::GET, "/api/webhooks", "/api/webhooks"),
            case(M::GET, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": null})),
            case(M::GET, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": id})),
            case(M::GET, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": "nope"})).expect(400),
            case(M::GET, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": ghost})).expect(400),
            case(M::GET, "/api/webhooks", "/api/webhooks").raw("text/plain", "x").expect(415),
            // PATCH /api/webhooks
            case(M::PATCH, "/api/webhooks", "/api/webhooks")
                .json(json!({"webhook_id": id, "name": null, "url": "https://example.com/moved", "event_types": ["ping"], "secret_token": null, "message_format": "onefuzz"})),
            case(M::PATCH, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": ghost})).expect(400),
            case(M::PATCH, "/api/webhooks", "/api/webhooks").json(json!({"name": "no id"})).expect(400),
            case(M::PATCH, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": id, "state": "enabled"})).expect(400),
            // DELETE /api/webhooks
            case(M::DELETE, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": compat_spare})),
            case(M::DELETE, "/api/webhooks", "/api/webhooks").json(json!({"webhook_id": compat_spare})).expect(400),
            case(M::DELETE, "/api/webhooks", "/api/webhooks").expect(400),
            // POST /api/webhooks/ping
            case(M::POST, "/api/webhooks/ping", "/api/webhooks/ping").json(json!({"webhook_id": id})),
            case(M::POST, "/api/webhooks/ping", "/api/webhooks/ping").json(json!({"webhook_id": ghost})).expect(400),
            // POST /api/webhooks/logs
            case(M::POST, "/api/webhooks/logs", "/api/webhooks/logs").json(json!({"webhook_id": id})),
            case(M::POST, "/api/webhooks/logs", "/api/webhooks/logs").json(json!({"webhook_id": "nope"})).expect(400),
            case(M::POST, "/api/webhooks/logs", "/api/webhooks/logs").json(huge).expect(413),
        ]
    }
}

fn with(base: &Value, key: &str, value: Value) -> Value {
    let mut body = base.clone();
    body[key] = value;
    body
}

fn without(base: &Value, key: &str) -> Value {
    let mut body = base.clone();
    body.as_object_mut().expect("an object").remove(key);
    body
}

// --- the tests ---

#[test]
fn the_spec_documents_exactly_the_routes_the_server_serves() {
    let documented = spec_routes();
    let served = served_routes();

    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "in openapi.yaml but not served: {unserved:?}");
    assert_eq!(spec()["openapi"], "3.1.0");
}

#[test]
fn the_event_type_enum_is_the_catalog_in_its_order() {
    let catalog: Vec<String> = EventType::ALL.iter().map(|t| t.as_str().to_owned()).collect();

    let documented = enum_of("EventType");

    assert_eq!(documented, catalog);
    assert_eq!(documented.len(), 30);
}

/// What `scripts/openapi-events` does to a catalog schema: its definitions move to shared
/// components prefixed `OneFuzz`, and its `$ref`s follow them.
fn as_component(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| key.as_str() != "definitions")
                .map(|(key, item)| match (key.as_str(), item.as_str()) {
                    ("$ref", Some(reference)) => {
                        (key.clone(), json!(reference.replace("#/definitions/", "#/components/schemas/OneFuzz")))
                    }
                    _ => (key.clone(), as_component(item)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(as_component).collect()),
        other => other.clone(),
    }
}

#[test]
fn post_events_is_typed_per_event_type_with_the_catalogs_schemas() {
    let schemas = &spec()["components"]["schemas"];
    let message = &schemas["EventMessage"];
    let mapping = message["discriminator"]["mapping"].as_object().expect("a discriminator mapping");

    assert_eq!(message["discriminator"]["propertyName"], "event_type");
    assert_eq!(mapping.keys().cloned().collect::<Vec<_>>(), enum_of("EventType"));
    assert_eq!(message["oneOf"].as_array().expect("oneOf").len(), EventType::ALL.len());
    for event_type in EventType::ALL {
        let catalog = event_type.schema().expect("a schema");
        let reference = mapping[event_type.as_str()].as_str().expect("a $ref");
        let branch = target(reference);
        let payload_ref = branch["allOf"][1]["properties"]["event"]["$ref"].as_str().expect("the payload's $ref");

        assert_eq!(branch["allOf"][1]["properties"]["event_type"]["const"], event_type.as_str());
        assert_eq!(target(payload_ref), &as_component(catalog), "{event_type}: run scripts/openapi-events");
        for (name, definition) in catalog["definitions"].as_object().into_iter().flatten() {
            assert_eq!(&schemas[format!("OneFuzz{name}")], &as_component(definition), "{event_type}: {name}");
        }
        let example = json!({"event_type": event_type.as_str(), "event": event_type.example().expect("an example")});
        let errors = violations(request_schema("POST", "/events").expect("a body"), &example);
        assert!(errors.is_empty(), "{event_type}: the catalog's example breaks the request schema: {errors:#?}");
    }
}

#[test]
fn the_message_format_and_state_enums_match_the_domain_types() {
    let formats: Vec<String> = MessageFormat::ALL.iter().map(|f| f.as_str().to_owned()).collect();
    let states: Vec<String> = DeliveryState::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    let webhook_states: Vec<Value> = [WebhookState::Enabled, WebhookState::Disabled]
        .iter()
        .map(|s| serde_json::to_value(s).expect("serialises"))
        .collect();

    assert_eq!(enum_of("MessageFormat"), formats);
    assert_eq!(enum_of("DeliveryState"), states);
    assert_eq!(spec()["components"]["schemas"]["WebhookState"]["enum"], json!(webhook_states));
}

#[test]
fn every_ref_resolves_every_schema_compiles_and_every_example_matches_its_schema() {
    let mut refs = Vec::new();
    collect_refs(spec(), &mut refs);
    let components = &spec()["components"];
    let media_types = components["responses"]
        .as_object()
        .expect("responses")
        .values()
        .flat_map(|response| response["content"].as_object().expect("content").values());
    let mut examples = 0;

    for reference in &refs {
        target(reference);
    }
    for (name, schema) in components["schemas"].as_object().expect("schemas") {
        let errors = schema.get("example").map(|example| violations(schema, example)).unwrap_or_default();
        examples += usize::from(schema.get("example").is_some());
        assert!(errors.is_empty(), "components/schemas/{name}: its example breaks it: {errors:#?}");
    }
    for media in media_types {
        if let Some(example) = media.get("example") {
            examples += 1;
            let errors = violations(&media["schema"], example);
            assert!(errors.is_empty(), "{example} breaks its schema: {errors:#?}");
        }
    }

    assert!(refs.len() > 50, "the document uses its components: {}", refs.len());
    assert!(examples >= 5, "the examples were checked: {examples}");
}

#[test]
fn every_path_parameter_is_declared_required_and_a_uuid_but_an_event_type_name() {
    for (method, template) in spec_routes() {
        let item = &spec()["paths"][template.as_str()];
        let declared: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .chain(operation(&method, &template)["parameters"].as_array())
            .flatten()
            .map(resolved)
            .filter(|p| p["in"] == "path")
            .collect();
        let in_template: BTreeSet<&str> =
            template.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();

        let names: BTreeSet<&str> = declared.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, in_template, "{method} {template}");
        for parameter in declared {
            assert_eq!(parameter["required"], true, "{method} {template}: {parameter}");
            let schema = resolved(&parameter["schema"]);
            if parameter["name"] == "name" {
                // Any string: an unknown name is the documented 404, not a 400.
                assert_eq!(schema["type"], "string", "{method} {template}: {parameter}");
            } else {
                assert_eq!(schema["format"], "uuid", "{method} {template}: {parameter}");
            }
        }
    }
}

#[test]
fn every_operation_documents_its_refusals_as_problem_json() {
    let mut operation_ids = BTreeSet::new();
    for (method, template) in spec_routes() {
        let operation = operation(&method, &template);
        let responses = operation["responses"].as_object().expect("responses");

        assert!(operation_ids.insert(operation["operationId"].as_str().expect("an operationId")));
        for status in ["400", "401", "403", "413", "500"] {
            assert!(responses.contains_key(status), "{method} {template} documents {status}");
        }
        for (status, response) in responses {
            let content: Vec<&String> = resolved(response)["content"].as_object().expect("content").keys().collect();
            match status.as_str() {
                "403" => assert_eq!(content, ["application/json"], "API Gateway's own refusal"),
                s if s.starts_with('4') || s.starts_with('5') => {
                    assert_eq!(content, ["application/problem+json"], "{method} {template} {status}")
                }
                _ => assert_eq!(content, ["application/json"], "{method} {template} {status}"),
            }
        }
    }
}

#[test]
fn every_link_names_an_operation_and_its_parameters() {
    let mut by_id = std::collections::BTreeMap::new();
    for (method, template) in spec_routes() {
        let operation = operation(&method, &template);
        by_id.insert(operation["operationId"].as_str().expect("an operationId").to_owned(), (method, template));
    }
    let mut links = 0;

    for (method, template) in spec_routes() {
        for response in operation(&method, &template)["responses"].as_object().expect("responses").values() {
            for (name, link) in resolved(response)["links"].as_object().into_iter().flatten() {
                links += 1;
                let target = link["operationId"].as_str().expect("links name their operation by id");
                let (target_method, target_template) =
                    by_id.get(target).unwrap_or_else(|| panic!("{method} {template}: link {name} -> unknown {target}"));
                for parameter in link["parameters"].as_object().into_iter().flatten().map(|(p, _)| p) {
                    assert!(
                        target_template.contains(&format!("{{{parameter}}}")),
                        "{method} {template}: link {name} sets {parameter}, not a path parameter of {target_method} {target_template}"
                    );
                }
            }
        }
    }

    assert!(links > 0, "create links to the operations on the webhook it made");
}

#[tokio::test]
async fn every_operation_answers_with_a_documented_status_and_a_body_matching_its_schema() {
    let fixture = Fixture::new().await;
    let cases = fixture.cases();
    let mut succeeded = BTreeSet::new();
    let mut refused = BTreeSet::new();

    for case in &cases {
        let answer = send(&fixture.app, case).await;

        assert_eq!(answer.status, case.expect, "{}: {}", case.describe(), answer.raw);
        assert_documented(case, &answer);
        if answer.status < 300 {
            assert_request_documented(case);
            succeeded.insert(case.route());
        } else {
            refused.insert(case.route());
        }
    }

    assert_eq!(succeeded, served_routes(), "every route is exercised with a success");
    assert_eq!(refused, served_routes(), "every route is exercised with a refusal");
}

#[tokio::test]
async fn answers_show_every_optional_field_the_schemas_allow() {
    // The schemas are only as good as the answers checked against them: make sure those
    // answers include the optional fields, so their documented types were checked too.
    let fixture = Fixture::new().await;
    let id = &fixture.id;

    let logs = send(&fixture.app, &case(Method::GET, "/webhooks/{id}/logs", format!("/webhooks/{id}/logs"))).await;
    let compat_logs = send(
        &fixture.app,
        &case(Method::POST, "/api/webhooks/logs", "/api/webhooks/logs").json(json!({"webhook_id": id})),
    )
    .await;
    let disabled =
        send(&fixture.app, &case(Method::GET, "/webhooks/{id}", format!("/webhooks/{}", fixture.disabled))).await;

    let entries = logs.body.as_ref().expect("JSON")["items"].as_array().expect("items").clone();
    assert_eq!(entries.len(), 3);
    let shown = |key: &str| entries.iter().any(|e| e.get(key).is_some());
    assert!(shown("next_attempt_at"), "a retrying entry shows its next attempt");
    for entry in &entries {
        let is_final = matches!(entry["state"].as_str(), Some("succeeded" | "failed"));
        assert_eq!(entry.get("next_attempt_at").is_some(), !is_final, "{entry}");
    }
    let attempts: Vec<&Value> = entries.iter().flat_map(|e| e["attempts"].as_array().expect("attempts")).collect();
    for key in ["status_code", "error", "response_head"] {
        assert!(attempts.iter().any(|a| a.get(key).is_some()), "some attempt shows {key}");
    }
    let compat = compat_logs.body.expect("JSON");
    assert!(
        compat.as_array().expect("an array").iter().all(|e| e["event"].is_object() && e["instance_id"].is_string())
    );
    let disabled = disabled.body.expect("JSON");
    assert_eq!(disabled["disabled_reason"], "the endpoint answered 410 Gone");
    assert_eq!(disabled["header_names"], json!(["Authorization"]));
    assert_eq!(disabled["rate_limit_per_second"], 20);
}

#[tokio::test]
async fn every_operation_documents_the_401_it_answers_without_the_bearer_token() {
    let config =
        webhooks::Config { api_token: Some(SecretToken::parse("the-token").expect("a token")), ..Default::default() };
    let app = TestApp::with_config(config);

    for (method, template) in ROUTES {
        let uri = template
            .replace("{id}", &Uuid::new_v4().to_string())
            .replace("{event_id}", &Uuid::new_v4().to_string())
            .replace("{name}", "ping");
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let case = case(method, template, uri).json(json!({})).expect(401);

        let answer = send(&app, &case).await;

        assert_eq!(answer.status, 401, "{}: {}", case.describe(), answer.raw);
        assert_documented(&case, &answer);
    }
}

#[tokio::test]
async fn request_schemas_accept_what_the_server_accepts_and_refuse_what_it_refuses() {
    let fixture = Fixture::new().await;
    let id = fixture.id.as_str();
    let create = json!({"name": "n", "url": "https://example.com/hook", "event_types": []});
    let compat_update = json!({"webhook_id": id});
    let event = json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}});
    let since = json!({"since": Utc::now().to_rfc3339()});
    let rows: Vec<(Method, &'static str, String, Value)> = [
        create.clone(),
        with(&create, "event_types", json!(["ping", "ping", "task_created"])),
        with(&create, "name", json!("  padded  ")),
        with(&create, "name", json!("é".repeat(256))),
        with(&create, "name", json!("x".repeat(257))),
        with(&create, "name", json!("   ")),
        with(&create, "name", json!("")),
        with(&create, "name", json!("bell\u{7}")),
        with(&create, "name", json!(5)),
        with(&create, "name", Value::Null),
        without(&create, "name"),
        without(&create, "url"),
        without(&create, "event_types"),
        with(&create, "url", json!("http://example.com")),
        with(&create, "url", json!("HTTPS://EXAMPLE.COM/X")),
        with(&create, "url", json!("https://[::1]:8443/hook")),
        with(&create, "url", json!("ftp://example.com/x")),
        with(&create, "url", json!("/relative")),
        with(&create, "url", json!("https://user:pw@example.com/")),
        with(&create, "url", json!("https://user@example.com/")),
        with(&create, "url", json!("http://:80/")),
        with(&create, "url", json!(format!("https://example.com/{}", "a".repeat(2048)))),
        with(&create, "event_types", json!(["tsk_created"])),
        with(&create, "event_types", json!("ping")),
        with(&create, "event_types", Value::Null),
        with(&create, "secret_token", json!("s")),
        with(&create, "secret_token", json!("s".repeat(1024))),
        with(&create, "secret_token", json!("s".repeat(1025))),
        with(&create, "secret_token", json!("")),
        with(&create, "secret_token", Value::Null),
        with(&create, "message_format", json!("cloud_events")),
        with(&create, "message_format", json!("xml")),
        with(&create, "message_format", Value::Null),
        with(&create, "event_types", json!(["*"])),
        with(&create, "event_types", json!(["*", "webhook_disabled", "delivery_failed"])),
        with(&create, "event_types", json!(["*", "tsk_created"])),
        with(&create, "event_types", json!(["**"])),
        with(&create, "headers", json!({"Authorization": "Bearer abc", "X-Tenant": "42"})),
        with(&create, "headers", json!({})),
        with(&create, "headers", Value::Null),
        with(&create, "headers", json!({"X-Key": "a value ~ with spaces"})),
        with(&create, "headers", json!({"Webhook": "v", "X-Webhook-Id": "v"})),
        with(&create, "headers", json!({"Host": "h"})),
        with(&create, "headers", json!({"content-TYPE": "text/plain"})),
        with(&create, "headers", json!({"X-OneFuzz-Digest": "x"})),
        with(&create, "headers", json!({"webhook-id": "x"})),
        with(&create, "headers", json!({"WEBHOOK-SIGNATURE": "x"})),
        with(&create, "headers", json!({"X-Key": "a\r\nb"})),
        with(&create, "headers", json!({"X-Key": "a\u{0}b"})),
        with(&create, "headers", json!({"X-Key": "tab\there"})),
        with(&create, "headers", json!({"X-Key": ""})),
        with(&create, "headers", json!({"X-Key": "v".repeat(1024)})),
        with(&create, "headers", json!({"X-Key": "v".repeat(1025)})),
        with(&create, "headers", json!({"X-Key": 5})),
        with(&create, "headers", json!({("X".repeat(64)): "v"})),
        with(&create, "headers", json!({("X".repeat(65)): "v"})),
        with(&create, "headers", json!({"Bad Name": "v"})),
        with(&create, "headers", json!({"": "v"})),
        with(&create, "headers", Value::Object((0..20).map(|i| (format!("X-{i}"), json!("v"))).collect())),
        with(&create, "headers", Value::Object((0..21).map(|i| (format!("X-{i}"), json!("v"))).collect())),
        with(&create, "headers", json!(["X-Key: v"])),
        with(&create, "rate_limit_per_second", json!(1)),
        with(&create, "rate_limit_per_second", json!(10000)),
        with(&create, "rate_limit_per_second", json!(0)),
        with(&create, "rate_limit_per_second", json!(10001)),
        with(&create, "rate_limit_per_second", json!(2.5)),
        with(&create, "rate_limit_per_second", json!("5")),
        with(&create, "rate_limit_per_second", Value::Null),
        with(&create, "colour", json!("blue")),
        with(&create, "colour", Value::Null),
        json!([create.clone()]),
    ]
    .into_iter()
    .flat_map(|body| {
        [
            (Method::POST, "/webhooks", "/webhooks".to_owned(), body.clone()),
            (Method::POST, "/api/webhooks", "/api/webhooks".to_owned(), body),
        ]
    })
    .chain(
        [
            json!({}),
            json!({"name": null, "url": null, "event_types": null, "message_format": null}),
            json!({"secret_token": null}),
            json!({"secret_token": "new-secret"}),
            json!({"state": "enabled"}),
            json!({"state": null}),
            json!({"state": "disabled"}),
            json!({"event_types": ["task_stopped"]}),
            json!({"event_types": ["task_stop"]}),
            json!({"headers": {"X-New": "v"}, "rate_limit_per_second": 7}),
            json!({"headers": null, "rate_limit_per_second": null}),
            json!({"headers": {"Connection": "close"}}),
            json!({"rate_limit_per_second": 0}),
            json!({"name": ""}),
            json!({"webhook_id": id}),
            json!({"webhook_id": null}),
        ]
        .into_iter()
        .map(|body| (Method::PATCH, "/webhooks/{id}", format!("/webhooks/{id}"), body)),
    )
    .chain(
        [
            compat_update.clone(),
            with(&compat_update, "secret_token", Value::Null),
            with(&compat_update, "name", json!("renamed")),
            with(&compat_update, "url", json!("ftp://example.com")),
            with(&compat_update, "state", json!("enabled")),
            with(&compat_update, "headers", json!({"X-Key": "v"})),
            with(&compat_update, "headers", Value::Null),
            with(&compat_update, "headers", json!({"user-agent": "v"})),
            with(&compat_update, "rate_limit_per_second", json!(3)),
            with(&compat_update, "rate_limit_per_second", Value::Null),
            with(&compat_update, "rate_limit_per_second", json!(-3)),
            with(&compat_update, "webhook_id", json!("nope")),
            with(&compat_update, "webhook_id", Value::Null),
            json!({}),
        ]
        .into_iter()
        .map(|body| (Method::PATCH, "/api/webhooks", "/api/webhooks".to_owned(), body)),
    )
    .chain(
        [
            json!({}),
            json!({"webhook_id": null}),
            json!({"webhook_id": id}),
            json!({"webhook_id": "nope"}),
            json!({"other": 1}),
        ]
        .into_iter()
        .map(|body| (Method::GET, "/api/webhooks", "/api/webhooks".to_owned(), body)),
    )
    .chain(
        [json!({"webhook_id": id}), json!({"webhook_id": id, "x": null}), json!({"webhook_id": id, "x": 1}), json!({})]
            .into_iter()
            .flat_map(|body| {
                [
                    (Method::POST, "/api/webhooks/ping", "/api/webhooks/ping".to_owned(), body.clone()),
                    (Method::POST, "/api/webhooks/logs", "/api/webhooks/logs".to_owned(), body),
                ]
            }),
    )
    .chain(
        [
            since.clone(),
            json!({"since": "2024-01-02T03:04:05+01:00"}),
            json!({"since": "yesterday"}),
            json!({"since": null}),
            json!({}),
            with(&since, "extra", json!(1)),
            with(&since, "extra", Value::Null),
        ]
        .into_iter()
        .map(|body| (Method::POST, "/webhooks/{id}/recover", format!("/webhooks/{id}/recover"), body)),
    )
    .chain(
        [
            event.clone(),
            with(&event, "event_id", json!(Uuid::new_v4())),
            with(&event, "event_id", Value::Null),
            with(&event, "event_id", json!("nope")),
            with(&event, "instance_id", json!(Uuid::new_v4())),
            with(&event, "instance_id", json!(7)),
            with(&event, "instance_name", json!("fuzzing")),
            with(&event, "created_at", json!("2024-01-02T03:04:05Z")),
            with(&event, "created_at", json!("noon")),
            with(&event, "event_type", json!("tsk_created")),
            with(&event, "event", json!("not an object")),
            with(&event, "unknown", json!("ignored")),
            json!({"event_type": "delivery_failed", "event": EventType::DeliveryFailed.example().expect("example")}),
            json!({"event_type": "delivery_failed", "event": {"webhook_id": Uuid::new_v4()}}),
            json!({"event_type": "ping", "event": EventType::DeliveryFailed.example().expect("example")}),
            without(&event, "event"),
            without(&event, "event_type"),
        ]
        .into_iter()
        .map(|body| (Method::POST, "/events", "/events".to_owned(), body)),
    )
    .collect();

    for (method, template, uri, body) in rows {
        let case = case(method, template, uri).json(body.clone());
        let schema = request_schema(case.method.as_str(), template).expect("a request body");

        let answer = send(&fixture.app, &case).await;

        assert!(matches!(answer.status, 200..=299 | 400), "{}: {body} -> {}", case.describe(), answer.raw);
        let errors = violations(schema, &body);
        let server_accepts = answer.status < 300;
        assert_eq!(
            errors.is_empty(),
            server_accepts,
            "{} with {body}: the server answered {} {}, the request schema says {errors:#?}",
            case.describe(),
            answer.status,
            answer.raw
        );
    }
}
