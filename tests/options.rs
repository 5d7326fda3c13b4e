//! Webhook options (SPEC §9) on the wire: a real sender delivering to a real HTTP receiver on
//! 127.0.0.1.

use serde_json::{Value, json};
use uuid::Uuid;
use webhooks_tests::{Receiver, TestSender};

const SECRET: &str = "receiver-shared-secret";

async fn call(sender: &TestSender, method: &str, path: &str, body: Value) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(body.to_string()))
        .expect("request");
    let response = webhooks::api::route(&sender.app, request).await;
    let answer: Value = serde_json::from_slice(response.body().as_ref()).expect("json");
    assert!(response.status().is_success(), "{answer}");
    answer
}

#[tokio::test]
async fn custom_headers_reach_the_receiver_on_every_delivery_and_ping_and_signatures_still_verify() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let created = call(
        &sender,
        "POST",
        "/webhooks",
        json!({"name": "hook", "url": receiver.url(), "event_types": ["ping"], "secret_token": SECRET,
               "headers": {"Authorization": "Bearer receiver-api-key", "X-Tenant": "42"}}),
    )
    .await;
    let id = created["webhook_id"].as_str().expect("id").to_owned();
    let event = json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}, "event_id": Uuid::new_v4()});

    sender.handle(&event.to_string()).await;
    call(&sender, "POST", &format!("/webhooks/{id}/ping"), json!({})).await;
    sender.pump().await;
    call(&sender, "PATCH", &format!("/webhooks/{id}"), json!({"headers": null})).await;
    call(&sender, "POST", &format!("/webhooks/{id}/ping"), json!({})).await;
    sender.pump().await;

    let received = receiver.received();
    assert_eq!(received.len(), 3, "an event, a ping, and a ping after the headers were removed");
    for delivery in &received[..2] {
        assert_eq!(delivery.header("authorization"), Some("Bearer receiver-api-key"));
        assert_eq!(delivery.header("x-tenant"), Some("42"));
        assert_eq!(delivery.header("content-type"), Some("application/json"));
        delivery.assert_signed(SECRET);
    }
    assert_eq!(received[1].json()["event_type"], "ping");
    assert_eq!(received[2].header("authorization"), None);
    assert_eq!(received[2].header("x-tenant"), None);
    received[2].assert_signed(SECRET);
}

#[tokio::test]
async fn an_operational_event_reaches_webhooks_that_name_it_signed_in_every_format_but_not_the_wildcard() {
    let named = Receiver::ok().await;
    let wildcard = Receiver::ok().await;
    let sender = TestSender::new();
    for format in ["onefuzz", "event_grid", "cloud_events"] {
        call(
            &sender,
            "POST",
            "/webhooks",
            json!({"name": format, "url": named.url(), "event_types": ["delivery_failed"], "secret_token": SECRET, "message_format": format}),
        )
        .await;
    }
    call(&sender, "POST", "/webhooks", json!({"name": "all", "url": wildcard.url(), "event_types": ["*"]})).await;
    let payload = webhooks::events::operational::delivery_failed_payload(
        webhooks::domain::WebhookId::new(),
        Uuid::new_v4(),
        webhooks::events::EventType::TaskCreated,
        8,
        Some(503),
        None,
    );

    sender.handle(&json!({"event_type": "delivery_failed", "event": payload}).to_string()).await;
    sender.pump().await;

    let received = named.received();
    assert_eq!(received.len(), 3, "one per format");
    for delivery in &received {
        delivery.assert_signed(SECRET);
    }
    let bodies: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let data = |body: &Value| match body {
        Value::Array(events) => events[0]["data"].clone(),
        object if object.get("specversion").is_some() => object["data"].clone(),
        object => object["event"].clone(),
    };
    for body in &bodies {
        assert_eq!(data(body), payload, "{body}");
    }
    assert!(wildcard.received().is_empty(), "\"*\" does not include the operational types");
}
