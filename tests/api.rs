//! The HTTP API through its handlers, on the embedded store: every route of SPEC §3, the
//! seed's response shapes, and every kind of bad input the spec names.

use chrono::Utc;
use http::{Method, StatusCode};
use lambda_http::Body;
use serde_json::{Value, json};
use webhooks::domain::{DeliveryLog, DeliveryState, EventEnvelope, WebhookId};
use webhooks::events::EventType;
use webhooks_tests::TestApp;

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn create_answers_201_with_the_seed_shape_and_no_url_or_secret() {
    let app = TestApp::new();

    let created = app
        .post("/webhooks", json!({"name": "MYWEBHOOK", "url": "https://contoso.com/my-custom-webhook", "event_types": ["task_created"]}))
        .await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert_eq!(keys(&created.body), ["event_types", "name", "webhook_id"]);
    assert_eq!(created.body["name"], "MYWEBHOOK");
    assert_eq!(created.body["event_types"], json!(["task_created"]));
    let id = created.body["webhook_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
}

#[tokio::test]
async fn message_format_is_shown_only_when_it_was_set() {
    let app = TestApp::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://example.com", "event_types": [], "message_format": "event_grid"}),
        )
        .await;

    assert_eq!(created.body["message_format"], "event_grid");
    assert_eq!(created.body["event_types"], json!([]));
}

#[tokio::test]
async fn get_shows_the_url_and_metadata_but_never_the_secret() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["task_created"]).await;

    let got = app.get(&format!("/webhooks/{id}")).await;

    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["url"], "https://example.com/hook");
    assert_eq!(got.body["has_secret_token"], true);
    assert_eq!(got.body["state"], "enabled");
    assert!(got.body["created_at"].is_string() && got.body["updated_at"].is_string());
    assert!(!got.raw.contains("s3cr3t-token"));
}

#[tokio::test]
async fn update_replaces_event_types_and_a_null_secret_removes_it() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["task_created"]).await;

    let updated = app
        .patch(&format!("/webhooks/{id}"), json!({"event_types": ["task_created", "task_failed", "task_failed"]}))
        .await;
    let cleared = app.patch(&format!("/webhooks/{id}"), json!({"secret_token": null, "name": "renamed"})).await;
    let got = app.get(&format!("/webhooks/{id}")).await;

    assert_eq!(updated.status, StatusCode::OK, "{}", updated.raw);
    assert_eq!(keys(&updated.body), ["event_types", "name", "webhook_id"]);
    assert_eq!(updated.body["event_types"], json!(["task_created", "task_failed"]));
    assert_eq!(cleared.body["name"], "renamed");
    assert_eq!(got.body["has_secret_token"], false);
    assert_eq!(got.body["event_types"], json!(["task_created", "task_failed"]));
}

#[tokio::test]
async fn delete_answers_result_true_and_the_webhook_is_gone() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["task_created"]).await;

    let deleted = app.delete(&format!("/webhooks/{id}")).await;
    let again = app.delete(&format!("/webhooks/{id}")).await;
    let got = app.get(&format!("/webhooks/{id}")).await;

    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.body, json!({"result": true}));
    assert_eq!(again.problem(StatusCode::NOT_FOUND), "unable to find webhook");
    assert_eq!(got.problem(StatusCode::NOT_FOUND), "unable to find webhook");
    assert_eq!(got.body["title"], "UNABLE_TO_FIND");
    assert_eq!(got.body["code"], 467);
}

#[tokio::test]
async fn list_pages_through_every_webhook_with_opaque_cursors() {
    let app = TestApp::new();
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.create_webhook(&format!("hook-{i}"), &["task_created"]).await);
    }

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &next {
            Some(cursor) => format!("/webhooks?limit=2&next={cursor}"),
            None => "/webhooks?limit=2".to_owned(),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.raw);
        pages += 1;
        for item in page.body["items"].as_array().unwrap() {
            assert_eq!(keys(item), ["event_types", "name", "webhook_id"]);
            seen.push(item["webhook_id"].as_str().unwrap().to_owned());
        }
        match page.body["next"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => {
                assert!(page.body["next"].is_null());
                break;
            }
        }
    }

    seen.sort();
    created.sort();
    assert_eq!(seen, created);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn list_filters_by_event_type() {
    let app = TestApp::new();
    let wanted = app.create_webhook("crashes", &["crash_reported"]).await;
    app.create_webhook("tasks", &["task_created"]).await;

    let listed = app.get("/webhooks?event_type=crash_reported").await;
    let bad = app.get("/webhooks?event_type=crash_reportd").await;

    let ids: Vec<&str> =
        listed.body["items"].as_array().unwrap().iter().map(|w| w["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [wanted.as_str()]);
    assert_eq!(bad.problem(StatusCode::BAD_REQUEST), "unknown event type: crash_reportd");
}

#[tokio::test]
async fn bad_list_parameters_are_refused_by_name() {
    let app = TestApp::new();

    let limit = app.get("/webhooks?limit=0").await;
    let huge = app.get("/webhooks?limit=100000").await;
    let cursor = app.get("/webhooks?next=garbage").await;

    assert!(limit.problem(StatusCode::BAD_REQUEST).starts_with("limit:"));
    assert!(huge.problem(StatusCode::BAD_REQUEST).starts_with("limit:"));
    assert!(cursor.problem(StatusCode::BAD_REQUEST).starts_with("next:"));
}

#[tokio::test]
async fn empty_query_parameters_count_as_absent() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["ping"]).await;

    let listed = app.get("/webhooks?event_type=&limit=&next=").await;
    let logs = app.get(&format!("/webhooks/{id}/logs?state=&limit=&next=")).await;

    assert_eq!(listed.status, StatusCode::OK, "{}", listed.raw);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(logs.status, StatusCode::OK, "{}", logs.raw);
}

#[tokio::test]
async fn ping_answers_202_with_a_ping_id_and_queues_a_delivery_for_that_webhook_only() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &[]).await;

    let pinged = app.post(&format!("/webhooks/{id}/ping"), json!({})).await;

    assert_eq!(pinged.status, StatusCode::ACCEPTED, "{}", pinged.raw);
    let ping_id = pinged.body["ping_id"].as_str().unwrap();
    let queued = app.tasks.due(Utc::now(), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let task: Value = serde_json::from_str(&queued[0].body).unwrap();
    assert_eq!(task["kind"], "deliver");
    assert_eq!(task["v"], 2);
    assert_eq!(task["trigger"], json!({"type": "ping"}));
    assert_eq!(task["webhook_id"], id.as_str());
    assert_eq!(task["envelope"]["event_type"], "ping");
    assert_eq!(task["envelope"]["event"]["ping_id"], ping_id);
}

#[tokio::test]
async fn publishing_an_event_answers_202_and_queues_it_with_its_id() {
    let app = TestApp::new();

    let published = app.post("/events", json!({"event_type": "ping", "event": {"ping_id": uuid::Uuid::nil()}})).await;

    assert_eq!(published.status, StatusCode::ACCEPTED, "{}", published.raw);
    let queued = app.tasks.due(Utc::now(), 10).await.unwrap();
    let message: Value = serde_json::from_str(&queued[0].body).unwrap();
    assert_eq!(message["event_id"], published.body["event_id"]);
    assert_eq!(message["event_type"], "ping");
    assert_eq!(message["instance_name"], "webhooks");
}

#[tokio::test]
async fn publishing_an_invalid_event_is_refused_with_the_reason() {
    let app = TestApp::new();

    let unknown = app.post("/events", json!({"event_type": "tsk_created", "event": {}})).await;
    let invalid = app.post("/events", json!({"event_type": "ping", "event": {"ping_id": 5}})).await;

    assert_eq!(unknown.problem(StatusCode::BAD_REQUEST), "unknown event type: tsk_created");
    assert!(invalid.problem(StatusCode::BAD_REQUEST).contains("ping_id"));
    assert!(app.tasks.due(Utc::now(), 10).await.unwrap().is_empty(), "nothing queued");
}

async fn insert_logs(app: &TestApp, webhook_id: &str, count: usize) -> Vec<uuid::Uuid> {
    let webhook_id = WebhookId::parse(webhook_id, "id").unwrap();
    let start = Utc::now() - chrono::Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..count {
        let created = start + chrono::Duration::minutes(i as i64);
        let envelope = EventEnvelope {
            event_id: uuid::Uuid::new_v4(),
            event_type: EventType::Ping,
            event: json!({"ping_id": uuid::Uuid::new_v4()}).into(),
            instance_id: uuid::Uuid::nil(),
            instance_name: "test".into(),
            created_at: created,
        };
        let mut entry = DeliveryLog::new(webhook_id, envelope, created, chrono::Duration::days(7));
        if i == 0 {
            entry.state = DeliveryState::Failed;
        }
        ids.push(entry.event_id);
        app.store.insert_delivery(&entry).await.unwrap();
    }
    ids
}

#[tokio::test]
async fn logs_page_newest_first_and_filter_by_state() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["ping"]).await;
    let event_ids = insert_logs(&app, &id, 3).await;

    let first = app.get(&format!("/webhooks/{id}/logs?limit=2")).await;
    let cursor = first.body["next"].as_str().unwrap().to_owned();
    let second = app.get(&format!("/webhooks/{id}/logs?limit=2&next={cursor}")).await;
    let failed = app.get(&format!("/webhooks/{id}/logs?state=failed")).await;
    let bad_state = app.get(&format!("/webhooks/{id}/logs?state=lost")).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.raw);
    let listed: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = event_ids.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(listed, expected);
    assert!(second.body["next"].is_null());
    let entry = &first.body["items"][0];
    for key in ["webhook_id", "event_id", "event_type", "state", "try_count", "created_at", "updated_at", "attempts"] {
        assert!(entry.get(key).is_some(), "log entry has {key}: {entry}");
    }
    assert!(entry.get("event").is_none(), "REST log entries leave the payload out");
    assert_eq!(failed.body["items"].as_array().unwrap().len(), 1);
    assert!(bad_state.problem(StatusCode::BAD_REQUEST).starts_with("state:"));
}

#[tokio::test]
async fn logs_of_a_missing_webhook_are_404() {
    let app = TestApp::new();

    let logs = app.get(&format!("/webhooks/{}/logs", uuid::Uuid::new_v4())).await;

    logs.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn redeliver_and_recover_queue_stored_deliveries_again() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["ping"]).await;
    let event_ids = insert_logs(&app, &id, 2).await;

    let redelivered = app.post(&format!("/webhooks/{id}/logs/{}/redeliver", event_ids[0]), json!({})).await;
    let still_pending = app.post(&format!("/webhooks/{id}/logs/{}/redeliver", event_ids[1]), json!({})).await;
    let recovered = app
        .post(
            &format!("/webhooks/{id}/recover"),
            json!({"since": (Utc::now() - chrono::Duration::days(1)).to_rfc3339()}),
        )
        .await;
    let missing = app.post(&format!("/webhooks/{id}/logs/{}/redeliver", uuid::Uuid::new_v4()), json!({})).await;
    let bad_since = app.post(&format!("/webhooks/{id}/recover"), json!({"since": "yesterday"})).await;

    assert_eq!(redelivered.status, StatusCode::ACCEPTED, "{}", redelivered.raw);
    assert_eq!(recovered.body, json!({"queued": 1}), "only the failed one");
    missing.problem(StatusCode::NOT_FOUND);
    assert!(still_pending.problem(StatusCode::CONFLICT).contains("still queued"));
    assert!(bad_since.problem(StatusCode::BAD_REQUEST).starts_with("since:"));
    assert_eq!(app.tasks.due(Utc::now(), 10).await.unwrap().len(), 2);
}

// --- OneFuzz-compatible routes ---

#[tokio::test]
async fn compat_routes_serve_a_whole_onefuzz_session() {
    let app = TestApp::new();

    let created = app.post("/api/webhooks", json!({"name": "MYWEBHOOK", "url": "https://contoso.com/x", "event_types": ["task_created"], "secret_token": null, "message_format": null})).await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    let listed = app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": null}))).await;
    let listed_bodiless = app.get("/api/webhooks").await;
    let got = app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": id}))).await;
    let updated = app
        .patch("/api/webhooks", json!({"webhook_id": id, "event_types": ["task_created", "task_failed"], "name": null, "url": null, "secret_token": null, "message_format": null}))
        .await;
    let pinged = app.post("/api/webhooks/ping", json!({"webhook_id": id})).await;
    let logs = app.post("/api/webhooks/logs", json!({"webhook_id": id})).await;
    let deleted = app.request(Method::DELETE, "/api/webhooks", Some(json!({"webhook_id": id}))).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.raw);
    assert_eq!(keys(&created.body), ["event_types", "name", "webhook_id"]);
    assert_eq!(listed.body, json!([created.body]));
    assert_eq!(listed_bodiless.body, listed.body);
    assert_eq!(got.body["url"], "https://contoso.com/x");
    assert_eq!(updated.body["event_types"], json!(["task_created", "task_failed"]));
    assert_eq!(updated.body["name"], "MYWEBHOOK", "null means unchanged on compat routes");
    assert_eq!(pinged.status, StatusCode::OK);
    assert!(uuid::Uuid::parse_str(pinged.body["ping_id"].as_str().unwrap()).is_ok());
    assert_eq!(logs.body, json!([]));
    assert_eq!(deleted.body, json!({"result": true}));
}

#[tokio::test]
async fn compat_logs_include_the_onefuzz_event_fields() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &["ping"]).await;
    insert_logs(&app, &id, 1).await;

    let logs = app.post("/api/webhooks/logs", json!({"webhook_id": id})).await;

    let entry = &logs.body[0];
    assert!(entry["event"]["ping_id"].is_string(), "{entry}");
    assert_eq!(entry["instance_name"], "test");
    assert!(entry["instance_id"].is_string());
}

#[tokio::test]
async fn an_unknown_event_type_gets_the_exact_problem_body_of_the_spec() {
    let app = TestApp::new();
    let create = json!({"name": "n", "url": "https://e.com", "event_types": ["tsk_created"]});

    for path in ["/webhooks", "/api/webhooks"] {
        let response = app.post(path, create.clone()).await;

        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            response.body,
            json!({
                "title": "INVALID_REQUEST",
                "status": 400,
                "detail": "unknown event type: tsk_created",
                "code": 450,
                "errors": ["unknown event type: tsk_created"],
            }),
            "{path}"
        );
    }
}

#[tokio::test]
async fn compat_routes_answer_a_missing_webhook_with_400_unable_to_find() {
    let app = TestApp::new();
    let ghost = uuid::Uuid::new_v4();

    for (method, path) in [
        (Method::GET, "/api/webhooks"),
        (Method::PATCH, "/api/webhooks"),
        (Method::DELETE, "/api/webhooks"),
        (Method::POST, "/api/webhooks/ping"),
        (Method::POST, "/api/webhooks/logs"),
    ] {
        let response = app.request(method.clone(), path, Some(json!({"webhook_id": ghost}))).await;
        assert_eq!(response.problem(StatusCode::BAD_REQUEST), "unable to find webhook", "{method} {path}");
        assert_eq!(response.body["title"], "INVALID_REQUEST");
        assert_eq!(response.body["code"], 450);
    }
}

#[tokio::test]
async fn compat_routes_refuse_unknown_fields_unless_null() {
    let app = TestApp::new();

    let unknown = app
        .post("/api/webhooks", json!({"name": "n", "url": "https://e.com", "event_types": [], "colour": "blue"}))
        .await;
    let null_unknown = app
        .post("/api/webhooks", json!({"name": "n", "url": "https://e.com", "event_types": [], "colour": null}))
        .await;

    assert!(unknown.problem(StatusCode::BAD_REQUEST).starts_with("colour: unknown field"));
    assert_eq!(null_unknown.status, StatusCode::OK, "{}", null_unknown.raw);
}

// --- bad input ---

#[tokio::test]
async fn every_kind_of_bad_create_body_gets_a_400_naming_the_field() {
    let app = TestApp::new();
    let long_name = "n".repeat(257);
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let cases = [
        (json!({"name": 5, "url": "https://e.com", "event_types": []}), "name: invalid type"),
        (json!({"name": "n", "url": "https://e.com", "event_types": "task_created"}), "event_types: invalid type"),
        (json!({"name": "n", "url": "https://e.com"}), "missing field `event_types`"),
        (json!({"url": "https://e.com", "event_types": []}), "missing field `name`"),
        (json!({"name": "  ", "url": "https://e.com", "event_types": []}), "name: must not be empty"),
        (json!({"name": long_name, "url": "https://e.com", "event_types": []}), "name: must be at most 256"),
        (json!({"name": "n", "url": "ftp://e.com", "event_types": []}), "url: scheme must be http or https"),
        (json!({"name": "n", "url": "/hook", "event_types": []}), "url: must be an absolute"),
        (json!({"name": "n", "url": "https://u:p@e.com", "event_types": []}), "url: must not contain a username"),
        (json!({"name": "n", "url": long_url, "event_types": []}), "url: must be at most 2048"),
        (
            json!({"name": "n", "url": "https://e.com", "event_types": ["tsk_created"]}),
            "unknown event type: tsk_created",
        ),
        (
            json!({"name": "n", "url": "https://e.com", "event_types": [], "message_format": "xml"}),
            "message_format: must be one of",
        ),
        (
            json!({"name": "n", "url": "https://e.com", "event_types": [], "secret_token": ""}),
            "secret_token: must not be empty",
        ),
        (
            json!({"name": "n", "url": "https://e.com", "event_types": [], "webhook_id": "x"}),
            "webhook_id: unknown field",
        ),
        (json!([1, 2]), "request body must be a JSON object"),
    ];

    for (body, expected) in cases {
        let response = app.post("/webhooks", body.clone()).await;
        let detail = response.problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains(expected), "{body} -> {detail}");
    }
    assert_eq!(app.get("/webhooks").await.body["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn duplicate_event_types_are_deduplicated_not_refused() {
    let app = TestApp::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://e.com", "event_types": ["ping", "task_created", "ping"]}),
        )
        .await;

    assert_eq!(created.body["event_types"], json!(["ping", "task_created"]));
}

#[tokio::test]
async fn malformed_json_and_uuids_are_400() {
    let app = TestApp::new();
    let raw = http::Request::builder()
        .method(Method::POST)
        .uri("/webhooks")
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();

    let malformed = app.send(raw).await;
    let bad_path = app.get("/webhooks/not-a-uuid").await;
    let bad_body = app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": "nope"}))).await;

    assert!(malformed.problem(StatusCode::BAD_REQUEST).starts_with("malformed JSON"));
    assert!(bad_path.problem(StatusCode::BAD_REQUEST).starts_with("webhook_id: not a valid UUID"));
    assert!(bad_body.problem(StatusCode::BAD_REQUEST).starts_with("webhook_id: not a valid UUID"));
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = TestApp::new();
    let huge = json!({"name": "n", "url": "https://e.com", "event_types": [], "pad": "x".repeat(300 * 1024)});

    let response = app.post("/webhooks", huge).await;

    response.problem(StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_non_json_content_type_is_415() {
    let app = TestApp::new();
    let request = http::Request::builder()
        .method(Method::POST)
        .uri("/webhooks")
        .header("content-type", "text/plain")
        .body(Body::from("name=x"))
        .unwrap();

    let response = app.send(request).await;

    assert!(response.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE).contains("text/plain"));
}

#[tokio::test]
async fn wrong_methods_are_405_with_an_allow_header() {
    let app = TestApp::new();
    let id = app.create_webhook("hook", &[]).await;

    for (method, path) in [
        (Method::PUT, "/webhooks".to_owned()),
        (Method::POST, format!("/webhooks/{id}")),
        (Method::GET, format!("/webhooks/{id}/ping")),
        (Method::PUT, "/api/webhooks".to_owned()),
        (Method::GET, "/api/webhooks/logs".to_owned()),
    ] {
        let response = app.request(method.clone(), &path, None).await;
        response.problem(StatusCode::METHOD_NOT_ALLOWED);
    }
    let unknown = app.get("/nowhere").await;
    unknown.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn https_only_refuses_plain_http_urls() {
    let config = webhooks::Config { https_only: true, ..Default::default() };
    let app = TestApp::with_config(config);

    let response = app.post("/webhooks", json!({"name": "n", "url": "http://e.com", "event_types": []})).await;

    assert!(response.problem(StatusCode::BAD_REQUEST).contains("https"));
}

#[tokio::test]
async fn with_an_api_token_every_route_requires_the_bearer_token() {
    let config = webhooks::Config {
        api_token: Some(webhooks::domain::SecretToken::parse("tok").unwrap()),
        ..Default::default()
    };
    let app = TestApp::with_config(config);
    let authorized = http::Request::builder()
        .method(Method::GET)
        .uri("/webhooks")
        .header("authorization", "Bearer tok")
        .body(Body::Empty)
        .unwrap();
    let wrong = http::Request::builder()
        .method(Method::GET)
        .uri("/webhooks")
        .header("authorization", "Bearer nope")
        .body(Body::Empty)
        .unwrap();

    let missing = app.get("/webhooks").await;
    let compat = app.get("/api/webhooks").await;
    let wrong = app.send(wrong).await;
    let ok = app.send(authorized).await;

    assert_eq!(missing.problem(StatusCode::UNAUTHORIZED), "missing or invalid bearer token");
    assert_eq!(missing.body["code"], 457);
    compat.problem(StatusCode::UNAUTHORIZED);
    wrong.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn api_gateway_path_and_query_parameters_are_honoured() {
    use lambda_http::RequestExt;
    use std::collections::HashMap;
    let app = TestApp::new();
    let id = app.create_webhook("hook", &[]).await;
    // A gateway with a stage prefix, and parameters only in the gateway's maps.
    let request = http::Request::builder()
        .method(Method::GET)
        .uri("/prod/webhooks/ignored")
        .body(Body::Empty)
        .unwrap()
        .with_path_parameters(HashMap::from([("id".to_owned(), id.clone())]));

    let response = webhooks::api::handlers::get(&app.app, request).await;

    assert_eq!(response.status(), StatusCode::OK);
}

// --- secrets ---

/// Collects every log line written while `f` runs.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_route_ever_shows_the_secret_in_a_response_or_a_log_line() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let secret = "TOPSECRET-0123456789";
    let rotated = "ROTATEDSECRET-987654";
    let app = TestApp::new();
    let mut outputs = Vec::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://e.com", "event_types": ["ping"], "secret_token": secret}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    outputs.push(created);
    outputs.push(app.patch(&format!("/webhooks/{id}"), json!({"secret_token": rotated})).await);
    outputs.push(app.get(&format!("/webhooks/{id}")).await);
    outputs.push(app.get("/webhooks").await);
    outputs.push(app.post(&format!("/webhooks/{id}/ping"), json!({})).await);
    insert_logs(&app, &id, 1).await;
    outputs.push(app.get(&format!("/webhooks/{id}/logs")).await);
    outputs.push(
        app.post(
            "/api/webhooks",
            json!({"name": "c", "url": "https://e.com", "event_types": [], "secret_token": secret}),
        )
        .await,
    );
    outputs.push(app.request(Method::GET, "/api/webhooks", Some(json!({}))).await);
    outputs.push(app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": id}))).await);
    outputs.push(app.patch("/api/webhooks", json!({"webhook_id": id, "secret_token": secret})).await);
    outputs.push(app.post("/api/webhooks/ping", json!({"webhook_id": id})).await);
    outputs.push(app.post("/api/webhooks/logs", json!({"webhook_id": id})).await);
    // Refusals must not echo the secret either.
    outputs.push(
        app.post("/webhooks", json!({"name": "", "url": "https://e.com", "event_types": [], "secret_token": secret}))
            .await,
    );
    outputs.push(
        app.post(
            "/webhooks",
            json!({"name": "n", "url": "https://e.com", "event_types": [], "secret_token": secret.repeat(100)}),
        )
        .await,
    );
    outputs.push(app.patch(&format!("/webhooks/{id}"), json!({"secret_token": 5})).await);
    let numeric_secret = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://e.com", "event_types": [], "secret_token": 98765432123456789u64}),
        )
        .await;
    assert_eq!(numeric_secret.problem(StatusCode::BAD_REQUEST), "secret_token: must be a string");
    assert!(!numeric_secret.raw.contains("98765432123456789"));
    outputs.push(app.delete(&format!("/webhooks/{id}")).await);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "the capture saw the handlers' log lines");
    for output in &outputs {
        assert!(!output.raw.contains(secret) && !output.raw.contains(rotated), "{}", output.raw);
    }
    assert!(!logs.contains(secret) && !logs.contains(rotated), "{logs}");
}

// ---- Options beyond OneFuzz (SPEC §9) and the event type catalog (§11) ----------------------

async fn webhook_count(app: &TestApp) -> usize {
    app.get("/webhooks").await.body["items"].as_array().map(Vec::len).unwrap_or_default()
}

#[tokio::test]
async fn custom_headers_are_write_only_and_get_shows_only_their_names() {
    let app = TestApp::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://example.com", "event_types": ["ping"],
                   "headers": {"Authorization": "Bearer HEADERVALUE-1", "X-Tenant": "HEADERVALUE-2"}}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    let got = app.get(&format!("/webhooks/{id}")).await;
    let listed = app.get("/webhooks").await;
    let compat = app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": id}))).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert_eq!(keys(&created.body), ["event_types", "name", "webhook_id"]);
    assert_eq!(got.body["header_names"], json!(["Authorization", "X-Tenant"]));
    assert_eq!(compat.body["header_names"], json!(["Authorization", "X-Tenant"]));
    for response in [&created, &got, &listed, &compat] {
        assert!(!response.raw.contains("HEADERVALUE"), "{}", response.raw);
    }
}

#[tokio::test]
async fn a_patch_replaces_the_headers_and_null_removes_them_or_the_rate_limit() {
    let app = TestApp::new();
    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://example.com", "event_types": [],
                   "headers": {"X-A": "1", "X-B": "2"}, "rate_limit_per_second": 50}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    let path = format!("/webhooks/{id}");

    let before = app.get(&path).await;
    let replaced = app.patch(&path, json!({"headers": {"X-C": "3"}, "rate_limit_per_second": 10000})).await;
    let after_replace = app.get(&path).await;
    let untouched = app.patch(&path, json!({"name": "renamed"})).await;
    let after_rename = app.get(&path).await;
    let removed = app.patch(&path, json!({"headers": null, "rate_limit_per_second": null})).await;
    let after_remove = app.get(&path).await;

    assert_eq!(before.body["header_names"], json!(["X-A", "X-B"]));
    assert_eq!(before.body["rate_limit_per_second"], 50);
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.raw);
    assert_eq!(after_replace.body["header_names"], json!(["X-C"]));
    assert_eq!(after_replace.body["rate_limit_per_second"], 10000);
    assert_eq!(untouched.status, StatusCode::OK);
    assert_eq!(after_rename.body["header_names"], json!(["X-C"]));
    assert_eq!(after_rename.body["rate_limit_per_second"], 10000);
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.raw);
    assert!(after_remove.body.get("header_names").is_none(), "{}", after_remove.raw);
    assert!(after_remove.body.get("rate_limit_per_second").is_none(), "{}", after_remove.raw);
}

#[tokio::test]
async fn compat_bodies_accept_the_options_and_still_refuse_unknown_fields() {
    let app = TestApp::new();

    let created = app
        .post(
            "/api/webhooks",
            json!({"name": "c", "url": "https://example.com", "event_types": ["*"],
                   "headers": {"X-Key": "v"}, "rate_limit_per_second": 3}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    // OneFuzz clients send every field, null when unset: null leaves an option as it is.
    let onefuzz_style = app
        .patch(
            "/api/webhooks",
            json!({"webhook_id": id, "name": "c2", "url": null, "event_types": null, "secret_token": null,
                   "message_format": null, "headers": null, "rate_limit_per_second": null}),
        )
        .await;
    let kept = app.get(&format!("/webhooks/{id}")).await;
    let replaced = app.patch("/api/webhooks", json!({"webhook_id": id, "headers": {"X-Other": "w"}})).await;
    let after = app.get(&format!("/webhooks/{id}")).await;
    let unknown = app.patch("/api/webhooks", json!({"webhook_id": id, "header": {"X-Key": "v"}})).await;
    let emptied = app.patch("/api/webhooks", json!({"webhook_id": id, "headers": {}})).await;
    let after_empty = app.get(&format!("/webhooks/{id}")).await;

    assert_eq!(created.status, StatusCode::OK, "{}", created.raw);
    assert_eq!(created.body["event_types"], json!(["*"]));
    assert_eq!(onefuzz_style.status, StatusCode::OK, "{}", onefuzz_style.raw);
    assert_eq!(kept.body["header_names"], json!(["X-Key"]));
    assert_eq!(kept.body["rate_limit_per_second"], 3);
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.raw);
    assert_eq!(after.body["header_names"], json!(["X-Other"]));
    assert!(unknown.problem(StatusCode::BAD_REQUEST).starts_with("header: unknown field"));
    assert_eq!(emptied.status, StatusCode::OK, "{}", emptied.raw);
    assert!(
        after_empty.body.get("header_names").is_none(),
        "{{}} removes the headers on compat too: {}",
        after_empty.raw
    );
}

#[tokio::test]
async fn every_bad_header_or_rate_limit_gets_a_400_naming_it_and_nothing_is_stored() {
    let app = TestApp::new();
    let too_many: serde_json::Map<String, Value> = (0..21).map(|i| (format!("X-{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"headers": {"Host": "evil.example"}}), "headers.Host: a reserved header name"),
        (json!({"headers": {"content-type": "text/plain"}}), "headers.content-type: a reserved header name"),
        (json!({"headers": {"CONTENT-LENGTH": "1"}}), "headers.CONTENT-LENGTH: a reserved"),
        (json!({"headers": {"User-Agent": "x"}}), "headers.User-Agent: a reserved"),
        (json!({"headers": {"Transfer-Encoding": "x"}}), "headers.Transfer-Encoding: a reserved"),
        (json!({"headers": {"connection": "x"}}), "headers.connection: a reserved"),
        (json!({"headers": {"X-OneFuzz-Digest": "x"}}), "headers.X-OneFuzz-Digest: a reserved"),
        (json!({"headers": {"Webhook-Signature": "v1,forged"}}), "headers.Webhook-Signature: a reserved"),
        (json!({"headers": {"X-Key": "SECRETVALUE\r\nX-Injected: 1"}}), "headers.X-Key: the value may hold only"),
        (json!({"headers": {"X-Key": "SECRETVALUE\nx"}}), "headers.X-Key: the value may hold only"),
        (json!({"headers": {"X-Key": "SECRETVALUE\u{0}"}}), "headers.X-Key: the value may hold only"),
        (json!({"headers": {"X-Key": "S".repeat(1025)}}), "headers.X-Key: the value must be 1 to 1024"),
        (json!({"headers": {"X-Key": ""}}), "headers.X-Key: the value must be 1 to 1024"),
        (json!({"headers": {"X-Key": 5}}), "headers.X-Key: the value must be a string"),
        (json!({"headers": Value::Object(too_many)}), "headers: at most 20 headers"),
        (json!({"headers": {("X".repeat(65)): "v"}}), "headers: \"XXXX"),
        (json!({"headers": {"Bad Name": "v"}}), "headers: \"Bad Name\" is not a valid header name"),
        (json!({"headers": {"X-A": "1", "x-a": "2"}}), "headers.x-a: given twice"),
        (json!({"headers": ["X-Key: v"]}), "headers: must be an object"),
        (json!({"rate_limit_per_second": 0}), "rate_limit_per_second: must be a whole number from 1 to 10000"),
        (json!({"rate_limit_per_second": 10001}), "rate_limit_per_second: must be a whole number"),
        (json!({"rate_limit_per_second": 2.5}), "rate_limit_per_second: must be a whole number"),
        (json!({"rate_limit_per_second": "5"}), "rate_limit_per_second: must be a whole number"),
        (json!({"rate_limit_per_second": -1}), "rate_limit_per_second: must be a whole number"),
        (json!({"event_types": ["*", "tsk_created"]}), "unknown event type: tsk_created"),
    ];
    let existing = app
        .post(
            "/webhooks",
            json!({"name": "kept", "url": "https://example.com", "event_types": ["ping"], "headers": {"X-Keep": "1"}, "rate_limit_per_second": 9}),
        )
        .await;
    let id = existing.body["webhook_id"].as_str().unwrap().to_owned();
    let before = app.get(&format!("/webhooks/{id}")).await.body;

    for (fields, expected) in cases {
        let mut body = json!({"name": "n", "url": "https://example.com", "event_types": ["ping"]});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let mut compat_patch = fields.clone();
        compat_patch["webhook_id"] = json!(id);
        for response in [
            app.post("/webhooks", body.clone()).await,
            app.post("/api/webhooks", body.clone()).await,
            app.patch(&format!("/webhooks/{id}"), fields.clone()).await,
            app.patch("/api/webhooks", compat_patch).await,
        ] {
            let detail = response.problem(StatusCode::BAD_REQUEST);
            assert!(detail.starts_with(expected), "{fields}: {detail}");
            assert!(
                !response.raw.contains("SECRETVALUE") && !response.raw.contains("evil.example"),
                "{}",
                response.raw
            );
            assert!(response.raw.len() < 600, "a refusal stays short: {}", response.raw);
        }
    }

    assert_eq!(webhook_count(&app).await, 1, "no refused create stored a webhook");
    assert_eq!(app.get(&format!("/webhooks/{id}")).await.body, before, "no refused patch changed the webhook");
}

#[tokio::test]
async fn the_wildcard_is_stored_as_itself_beside_named_operational_types() {
    let app = TestApp::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "all", "url": "https://example.com", "event_types": ["*", "delivery_failed", "*"]}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    let got = app.get(&format!("/webhooks/{id}")).await;
    let narrowed = app.patch(&format!("/webhooks/{id}"), json!({"event_types": ["task_created"]})).await;
    let widened = app.patch(&format!("/webhooks/{id}"), json!({"event_types": ["*"]})).await;

    assert_eq!(created.status, StatusCode::CREATED, "{}", created.raw);
    assert_eq!(created.body["event_types"], json!(["*", "delivery_failed"]));
    assert_eq!(got.body["event_types"], json!(["*", "delivery_failed"]));
    assert_eq!(narrowed.body["event_types"], json!(["task_created"]));
    assert_eq!(widened.body["event_types"], json!(["*"]));
}

#[tokio::test]
async fn the_event_type_catalog_lists_all_30_types_with_schemas_that_their_examples_pass() {
    let app = TestApp::new();

    let listed = app.get("/event-types").await;

    assert_eq!(listed.status, StatusCode::OK, "{}", listed.raw);
    assert_eq!(keys(&listed.body), ["items"]);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    for item in items {
        assert_eq!(keys(item), ["example", "name", "operational", "schema"]);
        let event_type = EventType::parse(item["name"].as_str().unwrap()).unwrap();
        assert_eq!(item["operational"], event_type.is_operational());
        assert!(item["schema"]["properties"].is_object(), "{item}");
        assert_eq!(event_type.validate(&item["example"]), Ok(()));
    }
    let operational: Vec<&str> =
        items.iter().filter(|i| i["operational"] == true).map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(operational, ["webhook_disabled", "delivery_failed"]);
}

#[tokio::test]
async fn one_event_type_is_served_by_name_and_an_unknown_name_is_404() {
    let app = TestApp::new();

    let ping = app.get("/event-types/ping").await;
    let disabled = app.get("/event-types/webhook_disabled").await;
    let unknown = app.get("/event-types/tsk_created").await;
    let wildcard = app.get("/event-types/*").await;
    let wrong_method = app.post("/event-types", json!({})).await;

    assert_eq!(ping.status, StatusCode::OK, "{}", ping.raw);
    assert_eq!(ping.body["name"], "ping");
    assert_eq!(ping.body["operational"], false);
    assert_eq!(ping.body["schema"]["required"], json!(["ping_id"]));
    assert_eq!(disabled.body["operational"], true);
    assert_eq!(disabled.body["schema"]["properties"]["reason"]["enum"], json!(["gone", "failing"]));
    assert_eq!(unknown.problem(StatusCode::NOT_FOUND), "unknown event type: tsk_created");
    assert_eq!(unknown.body["title"], "UNABLE_TO_FIND");
    assert_eq!(wildcard.problem(StatusCode::NOT_FOUND), "unknown event type: *");
    wrong_method.problem(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn operational_events_can_be_published_and_are_validated_against_their_schemas() {
    let app = TestApp::new();
    let example = EventType::DeliveryFailed.example().unwrap().clone();

    let accepted = app.post("/events", json!({"event_type": "delivery_failed", "event": example})).await;
    let refused = app.post("/events", json!({"event_type": "webhook_disabled", "event": {"webhook_id": "nope"}})).await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.raw);
    assert!(refused.problem(StatusCode::BAD_REQUEST).contains("webhook_disabled schema"));
}

#[tokio::test]
async fn no_route_ever_shows_a_header_value_in_a_response_or_a_log_line() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let value = "HDRVALUE-0123456789";
    let app = TestApp::new();
    let mut outputs = Vec::new();

    let created = app
        .post(
            "/webhooks",
            json!({"name": "n", "url": "https://e.com", "event_types": ["ping"], "headers": {"Authorization": value}}),
        )
        .await;
    let id = created.body["webhook_id"].as_str().unwrap().to_owned();
    outputs.push(created);
    outputs.push(app.patch(&format!("/webhooks/{id}"), json!({"headers": {"X-Api-Key": value}})).await);
    outputs.push(app.get(&format!("/webhooks/{id}")).await);
    outputs.push(app.get("/webhooks").await);
    outputs.push(app.post(&format!("/webhooks/{id}/ping"), json!({})).await);
    outputs.push(app.request(Method::GET, "/api/webhooks", Some(json!({}))).await);
    outputs.push(app.request(Method::GET, "/api/webhooks", Some(json!({"webhook_id": id}))).await);
    outputs.push(app.patch("/api/webhooks", json!({"webhook_id": id, "headers": {"X-Api-Key": value}})).await);
    outputs.push(app.patch(&format!("/webhooks/{id}"), json!({"headers": {"X-Bad": format!("{value}\r\n")}})).await);
    outputs.push(app.patch(&format!("/webhooks/{id}"), json!({"headers": {"Host": value}})).await);
    outputs.push(app.delete(&format!("/webhooks/{id}")).await);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty(), "the capture saw the handlers' log lines");
    for output in &outputs {
        assert!(!output.raw.contains(value), "{}", output.raw);
    }
    assert!(!logs.contains(value), "{logs}");
}
