//! The sender against real HTTP receivers on 127.0.0.1: signatures, formats, retries,
//! idempotence, isolation, the SSRF guard, auto-disable and dead letters (moto).

use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use serde_json::{Value, json};
use uuid::Uuid;
use webhooks::delivery::{CidrList, MessageOutcome, Sender};
use webhooks::domain::DeliveryState;
use webhooks::{Config, delivery};
use webhooks_tests::{Received, Receiver, Reply, TestSender, moto};

const SECRET: &str = "receiver-shared-secret";

async fn create(sender: &TestSender, url: &str, event_types: &[&str], extra: Value) -> String {
    let mut body = json!({"name": "hook", "url": url, "event_types": event_types, "secret_token": SECRET});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let request = http::Request::builder()
        .method("POST")
        .uri("/webhooks")
        .header("content-type", "application/json")
        .body(lambda_http::Body::from(body.to_string()))
        .expect("request");
    let response = webhooks::api::route(&sender.app, request).await;
    let created: Value = serde_json::from_slice(response.body().as_ref()).expect("json");
    assert_eq!(response.status(), 201, "{created}");
    created["webhook_id"].as_str().expect("id").to_owned()
}

fn ping_event(event_id: Uuid) -> String {
    json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}, "event_id": event_id}).to_string()
}

#[tokio::test]
async fn a_delivery_carries_signatures_the_receiver_can_verify() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    let outcome = sender.handle(&ping_event(event_id)).await;

    assert!(matches!(outcome, MessageOutcome::Done(ref t) if t.delivered == 1), "{outcome:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    received[0].assert_signed(SECRET);
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    assert!(received[0].header("user-agent").expect("user agent").starts_with("onefuzz-webhook "));
    assert_eq!(received[0].header("webhook-id"), Some(event_id.to_string().as_str()));
    let body = received[0].json();
    assert_eq!(body["webhook_id"], webhook_id.as_str());
    assert_eq!(body["event_id"], event_id.to_string());
    assert_eq!(sender.log(&webhook_id, event_id).await.state, DeliveryState::Succeeded);
}

#[tokio::test]
async fn every_example_event_is_delivered_in_every_format_and_parses_back() {
    let examples: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("data/event-examples.json")).expect("examples");
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let all_types: Vec<&str> = examples.keys().filter(|k| !k.starts_with('_')).map(String::as_str).collect();
    assert_eq!(all_types.len(), 28);
    for format in ["onefuzz", "event_grid", "cloud_events"] {
        create(&sender, &receiver.url(), &all_types, json!({"message_format": format})).await;
    }

    for event_type in &all_types {
        let message = json!({"event_type": event_type, "event": examples[*event_type]});
        let outcome = sender.handle(&message.to_string()).await;
        assert!(matches!(outcome, MessageOutcome::Done(ref t) if t.delivered == 3), "{event_type}: {outcome:?}");
    }

    let received = receiver.received();
    assert_eq!(received.len(), 28 * 3);
    for delivery in &received {
        delivery.assert_signed(SECRET);
        let body = delivery.json();
        let (event_type, data) = if let Some(array) = body.as_array() {
            assert_eq!(array.len(), 1);
            assert_eq!(array[0]["dataVersion"], "1.0.0");
            (array[0]["eventType"].as_str().expect("eventType"), &array[0]["data"])
        } else if body.get("specversion").is_some() {
            assert_eq!(delivery.header("content-type"), Some("application/cloudevents+json"));
            (body["type"].as_str().expect("type"), &body["data"])
        } else {
            (body["event_type"].as_str().expect("event_type"), &body["event"])
        };
        assert_eq!(data, &examples[event_type], "{event_type}");
    }
}

#[tokio::test]
async fn a_500_then_a_200_is_one_success_after_a_retry() {
    let receiver = Receiver::start(vec![Reply::status(500).with_body("boom")]).await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;
    let after_failure = sender.log(&webhook_id, event_id).await;
    sender.pump().await;
    let after_retry = sender.log(&webhook_id, event_id).await;

    assert_eq!(after_failure.state, DeliveryState::Retrying);
    assert_eq!(after_failure.attempts[0].status_code, Some(500));
    assert_eq!(after_failure.attempts[0].response_head.as_deref(), Some("boom"));
    assert!(after_failure.next_attempt_at.is_some());
    assert_eq!(after_retry.state, DeliveryState::Succeeded);
    assert_eq!(after_retry.try_count, 2);
    assert_eq!(receiver.received().len(), 2);
    let ids: Vec<_> = receiver.received().iter().map(|r| r.header("webhook-id").map(str::to_owned)).collect();
    assert_eq!(ids[0], ids[1], "a retry keeps the event id");
}

#[tokio::test]
async fn a_delivery_moves_from_queued_to_retrying_to_succeeded() {
    let receiver = Receiver::start(vec![Reply::status(500).after(Duration::from_millis(400))]).await;
    let sender = std::sync::Arc::new(TestSender::new());
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    let running = sender.clone();
    let first = tokio::spawn(async move { running.handle(&ping_event(event_id)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during_first_attempt = sender.log(&webhook_id, event_id).await;
    first.await.expect("first attempt");
    let after_first_attempt = sender.log(&webhook_id, event_id).await;
    sender.pump().await;
    let after_retry = sender.log(&webhook_id, event_id).await;

    assert_eq!(during_first_attempt.state, DeliveryState::Queued);
    assert_eq!(during_first_attempt.try_count, 0);
    assert_eq!(after_first_attempt.state, DeliveryState::Retrying);
    assert_eq!(after_first_attempt.try_count, 1);
    assert_eq!(after_retry.state, DeliveryState::Succeeded);
    assert_eq!(after_retry.try_count, 2);
}

#[tokio::test]
async fn timeouts_refused_connections_and_redirects_are_failures() {
    let slow = Receiver::start(vec![Reply::status(200).after(Duration::from_secs(3))]).await;
    let redirect = Receiver::start(vec![Reply::status(302).with_header("location", "http://127.0.0.1:9/")]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let config = Config { retry_schedule: vec![], delivery_timeout: Duration::from_millis(500), ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    let slow_id = create(&sender, &slow.url(), &["ping"], json!({})).await;
    let redirect_id = create(&sender, &redirect.url(), &["ping"], json!({})).await;
    let closed_id = create(&sender, &closed_url, &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    let slow_log = sender.log(&slow_id, event_id).await;
    let redirect_log = sender.log(&redirect_id, event_id).await;
    let closed_log = sender.log(&closed_id, event_id).await;
    assert_eq!(slow_log.state, DeliveryState::Failed);
    assert_eq!(slow_log.attempts[0].error.as_deref(), Some("timed out"));
    assert_eq!(redirect_log.state, DeliveryState::Failed);
    assert_eq!(redirect_log.attempts[0].status_code, Some(302));
    assert!(closed_log.attempts[0].error.as_deref().expect("error").starts_with("connection failed"));
}

#[tokio::test]
async fn retry_after_on_a_503_sets_the_next_attempt_within_one_to_two_steps() {
    let receiver = Receiver::start(vec![Reply::status(503).with_header("retry-after", "7")]).await;
    let config = Config { retry_schedule: vec![Duration::from_secs(5)], ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    let entry = sender.log(&webhook_id, event_id).await;
    let wait = (entry.next_attempt_at.expect("next attempt") - entry.attempts[0].at).num_milliseconds();
    assert!((6_900..=7_100).contains(&wait), "{wait} ms");
    let queued = sender.queue.take();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1, Duration::from_secs(7));
}

#[tokio::test]
async fn a_wait_past_the_queue_delay_cap_hops_through_the_queue() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let config = Config { retry_schedule: vec![Duration::from_secs(2 * 3600)], ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;
    let first_hop = sender.queue.take();
    sender.handle(&first_hop[0].0).await;
    let second_hop = sender.queue.take();

    assert_eq!(first_hop[0].1, Duration::from_secs(15 * 60), "capped at SQS's 15 minutes");
    assert_eq!(second_hop.len(), 1, "an early retry re-queues itself");
    assert!(second_hop[0].1 > Duration::from_secs(14 * 60));
    assert_eq!(receiver.received().len(), 1, "no attempt before its time");
    assert_eq!(sender.log(&webhook_id, event_id).await.try_count, 1);
}

#[tokio::test]
async fn an_entry_with_a_retry_pending_is_kept_past_its_next_attempt_whatever_the_retention() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let config = Config {
        retry_schedule: vec![Duration::from_secs(2 * 3600)],
        log_retention: chrono::Duration::minutes(30),
        ..Config::default()
    };
    let sender = TestSender::with(config, CidrList::loopback());
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    let entry = sender.log(&webhook_id, event_id).await;
    let next_attempt_at = entry.next_attempt_at.expect("a retry is scheduled").timestamp();
    assert_eq!(entry.state, DeliveryState::Retrying);
    assert!(entry.expires_at >= next_attempt_at + 24 * 3600, "{} < {next_attempt_at} + 1 day", entry.expires_at);
}

#[tokio::test]
async fn an_exhausted_delivery_fails_and_a_redelivery_succeeds() {
    let receiver =
        Receiver::start(vec![Reply::status(500), Reply::status(500), Reply::status(500), Reply::status(500)]).await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;
    sender.pump().await;
    let exhausted = sender.log(&webhook_id, event_id).await;
    let status = redeliver(&sender, &webhook_id, event_id).await;
    sender.pump().await;
    let redelivered = sender.log(&webhook_id, event_id).await;

    assert_eq!(exhausted.state, DeliveryState::Failed);
    assert_eq!(exhausted.try_count, 4, "1 attempt + 3 retries");
    assert_eq!(status, 202);
    assert_eq!(redelivered.state, DeliveryState::Succeeded);
    assert_eq!(redelivered.try_count, 5);
    assert_eq!(receiver.received().len(), 5);
}

async fn redeliver(sender: &TestSender, webhook_id: &str, event_id: Uuid) -> http::StatusCode {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/webhooks/{webhook_id}/logs/{event_id}/redeliver"))
        .body(lambda_http::Body::Empty)
        .expect("request");
    webhooks::api::route(&sender.app, request).await.status()
}

/// A sender whose failed attempts are final: no retry series to pump through.
fn sender_without_retries() -> TestSender {
    TestSender::with(Config { retry_schedule: Vec::new(), ..Config::default() }, CidrList::loopback())
}

/// A webhook whose one delivery failed for good (no retries), and that event's id.
async fn failed_delivery(sender: &TestSender, receiver: &Receiver) -> (String, Uuid) {
    let webhook_id = create(sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();
    sender.handle(&ping_event(event_id)).await;
    sender.pump().await;
    assert_eq!(sender.log(&webhook_id, event_id).await.state, DeliveryState::Failed);
    (webhook_id, event_id)
}

#[tokio::test]
async fn a_redelivery_message_handled_twice_sends_once() {
    for second_reply in [Reply::status(200), Reply::status(500)] {
        let receiver = Receiver::start(vec![Reply::status(500), second_reply]).await;
        let sender = sender_without_retries();
        let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;

        assert_eq!(redeliver(&sender, &webhook_id, event_id).await, 202);
        let queued = sender.queue.take();
        assert_eq!(queued.len(), 1);
        sender.handle(&queued[0].0).await;
        let after_first = sender.log(&webhook_id, event_id).await;
        sender.handle(&queued[0].0).await;
        let after_duplicate = sender.log(&webhook_id, event_id).await;

        assert_eq!(receiver.received().len(), 2, "the first attempt and one redelivery");
        assert_eq!(after_first.try_count, 2);
        assert_eq!(after_duplicate, after_first, "the duplicate changes nothing");
    }
}

#[tokio::test]
async fn each_redelivery_request_sends_again() {
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)]).await;
    let sender = sender_without_retries();
    let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;

    redeliver(&sender, &webhook_id, event_id).await;
    sender.pump().await;
    redeliver(&sender, &webhook_id, event_id).await;
    sender.pump().await;

    assert_eq!(receiver.received().len(), 3);
    assert_eq!(sender.log(&webhook_id, event_id).await.state, DeliveryState::Succeeded);
}

#[tokio::test]
async fn a_late_duplicate_of_an_earlier_redelivery_does_not_send_again() {
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)]).await;
    let sender = sender_without_retries();
    let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;

    redeliver(&sender, &webhook_id, event_id).await;
    let first_request = sender.queue.take();
    sender.handle(&first_request[0].0).await;
    redeliver(&sender, &webhook_id, event_id).await;
    sender.pump().await;
    sender.handle(&first_request[0].0).await;

    assert_eq!(receiver.received().len(), 3, "the first attempt and two redeliveries");
    assert_eq!(sender.log(&webhook_id, event_id).await.try_count, 3);
}

#[tokio::test]
async fn a_late_redelivery_leaves_a_delivery_in_its_retry_series_alone() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let sender = sender_without_retries();
    let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;
    redeliver(&sender, &webhook_id, event_id).await;
    let message = sender.queue.take().remove(0).0;
    // The entry expired meanwhile, and the same event started a new one, now waiting for a retry.
    let mut younger = sender.log(&webhook_id, event_id).await;
    younger.state = DeliveryState::Retrying;
    younger.next_attempt_at = Some(chrono::Utc::now() + chrono::Duration::minutes(5));
    younger.version += 1;
    sender.store.update_delivery(&younger).await.expect("update");

    sender.handle(&message).await;

    assert_eq!(receiver.received().len(), 1, "no attempt outside the retry schedule");
    assert_eq!(sender.log(&webhook_id, event_id).await, younger);
}

#[tokio::test]
async fn recover_asked_twice_before_it_ran_sends_each_failed_delivery_once() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let sender = sender_without_retries();
    let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;
    let recover = || {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("/webhooks/{webhook_id}/recover"))
            .header("content-type", "application/json")
            .body(lambda_http::Body::from(json!({"since": "2000-01-01T00:00:00Z"}).to_string()))
            .expect("request");
        webhooks::api::route(&sender.app, request)
    };

    assert_eq!(recover().await.status(), 202);
    assert_eq!(recover().await.status(), 202);
    assert_eq!(sender.queue.peek().len(), 2, "both requests queued a task");
    sender.pump().await;

    assert_eq!(receiver.received().len(), 2, "the first attempt and one redelivery");
    assert_eq!(sender.log(&webhook_id, event_id).await.state, DeliveryState::Succeeded);
}

#[tokio::test]
async fn a_redelivery_duplicate_stands_back_while_the_claim_is_held_and_sends_once_it_lapsed_unsent() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let sender = sender_without_retries();
    let (webhook_id, event_id) = failed_delivery(&sender, &receiver).await;
    redeliver(&sender, &webhook_id, event_id).await;
    let message = sender.queue.take().remove(0).0;
    // What the first handling of the message leaves while its attempt is in flight, and
    // what it leaves if it dies before attempting.
    let claim = |lease: chrono::Duration| {
        let sender = &sender;
        let webhook_id = &webhook_id;
        async move {
            let mut claimed = sender.log(webhook_id, event_id).await;
            claimed.state = DeliveryState::Retrying;
            claimed.lease_until = Some(chrono::Utc::now() + lease);
            claimed.version += 1;
            sender.store.update_delivery(&claimed).await.expect("update");
        }
    };

    claim(chrono::Duration::seconds(60)).await;
    sender.handle(&message).await;
    let while_held = receiver.received().len();
    claim(chrono::Duration::seconds(-1)).await;
    sender.handle(&message).await;

    assert_eq!(while_held, 1, "only the first attempt");
    assert_eq!(receiver.received().len(), 2);
    let entry = sender.log(&webhook_id, event_id).await;
    assert_eq!((entry.state, entry.try_count), (DeliveryState::Succeeded, 2));
}

#[tokio::test]
async fn the_same_message_processed_twice_is_delivered_once() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let body = json!({"event_type": "ping", "event": {"ping_id": Uuid::new_v4()}}).to_string();

    let first = sender.sender.handle_message(&body, "sqs-message-1").await;
    let second = sender.sender.handle_message(&body, "sqs-message-1").await;

    assert!(matches!(first, MessageOutcome::Done(ref t) if t.delivered == 1), "{first:?}");
    assert!(matches!(second, MessageOutcome::Done(ref t) if t.delivered == 0 && t.skipped == 1), "{second:?}");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_failing_webhook_never_causes_resends_to_another() {
    let failing = Receiver::start(vec![Reply::status(500), Reply::status(500)]).await;
    let healthy = Receiver::ok().await;
    let sender = TestSender::new();
    create(&sender, &failing.url(), &["ping"], json!({})).await;
    create(&sender, &healthy.url(), &["ping"], json!({})).await;
    let body = ping_event(Uuid::new_v4());

    sender.sender.handle_message(&body, "m").await;
    sender.pump().await;
    sender.sender.handle_message(&body, "m").await;

    assert_eq!(failing.received().len(), 3);
    assert_eq!(healthy.received().len(), 1);
}

#[tokio::test]
async fn disabled_webhooks_are_skipped_and_410_gone_disables() {
    let gone = Receiver::start(vec![Reply::status(410)]).await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &gone.url(), &["ping"], json!({})).await;

    sender.handle(&ping_event(Uuid::new_v4())).await;
    sender.handle(&ping_event(Uuid::new_v4())).await;
    let request = http::Request::builder()
        .uri(format!("/webhooks/{webhook_id}"))
        .body(lambda_http::Body::Empty)
        .expect("request");
    let got: Value =
        serde_json::from_slice(webhooks::api::route(&sender.app, request).await.body().as_ref()).expect("json");

    assert_eq!(gone.received().len(), 1, "no delivery after it was disabled");
    assert_eq!(got["state"], "disabled");
    assert!(got["disabled_reason"].as_str().expect("reason").contains("410"));
    let enable = http::Request::builder()
        .method("PATCH")
        .uri(format!("/webhooks/{webhook_id}"))
        .body(lambda_http::Body::from(json!({"state": "enabled"}).to_string()))
        .expect("request");
    assert_eq!(webhooks::api::route(&sender.app, enable).await.status(), 200);
    sender.handle(&ping_event(Uuid::new_v4())).await;
    assert_eq!(gone.received().len(), 2, "re-enabled by PATCH");
}

#[tokio::test]
async fn a_webhook_failing_for_the_whole_window_is_disabled() {
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)]).await;
    let config = Config { retry_schedule: vec![], auto_disable_after: chrono::Duration::zero(), ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;

    sender.handle(&ping_event(Uuid::new_v4())).await;
    sender.handle(&ping_event(Uuid::new_v4())).await;

    let id = webhooks::domain::WebhookId::parse(&webhook_id, "id").expect("id");
    let webhook = sender.store.get_webhook(id).await.expect("get").expect("webhook");
    assert_eq!(webhook.state, webhooks::domain::WebhookState::Disabled);
    assert!(webhook.disabled_reason.expect("reason").starts_with("every delivery failed since"));
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_during_its_grace_window() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let rotate = http::Request::builder()
        .method("PATCH")
        .uri(format!("/webhooks/{webhook_id}"))
        .body(lambda_http::Body::from(json!({"secret_token": "the-new-secret"}).to_string()))
        .expect("request");
    assert_eq!(webhooks::api::route(&sender.app, rotate).await.status(), 200);

    sender.handle(&ping_event(Uuid::new_v4())).await;

    let received = &receiver.received()[0];
    assert_eq!(received.header("webhook-signature").expect("signature").split(' ').count(), 2);
    received.assert_standard_signature(SECRET);
    received.assert_signed("the-new-secret");
}

#[tokio::test]
async fn with_loopback_not_allowed_every_spelling_of_it_is_refused_before_connecting() {
    let receiver = Receiver::ok().await;
    let port = receiver.addr.port();
    let sender = TestSender::with(Config::default(), CidrList::default());
    let urls = [
        format!("http://127.0.0.2:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://localhost:{port}/"),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        ids.push(create(&sender, url, &["ping"], json!({})).await);
    }
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    for (url, id) in urls.iter().zip(&ids) {
        let entry = sender.log(id, event_id).await;
        let error = entry.attempts[0].error.clone().unwrap_or_default();
        assert!(error.starts_with("blocked"), "{url}: {error}");
    }
    assert_eq!(receiver.connections(), 0, "no connection was attempted");
}

#[tokio::test]
async fn with_https_only_on_a_webhook_stored_with_an_http_url_is_not_sent_to() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::with(Config { https_only: true, ..Config::default() }, CidrList::loopback());
    // Stored before HTTPS_ONLY was turned on: the API would refuse this URL now.
    let new = webhooks::domain::NewWebhook {
        event_types: vec![webhooks::events::EventType::Ping.into()],
        ..webhooks::domain::NewWebhook::new(
            webhooks::domain::WebhookName::parse("old").expect("name"),
            webhooks::domain::WebhookUrl::parse(&receiver.url(), false).expect("url"),
        )
    };
    let webhook = webhooks::domain::Webhook::new(new, chrono::Utc::now());
    sender.store.create_webhook(&webhook).await.expect("create");
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    let entry = sender.log(&webhook.webhook_id.to_string(), event_id).await;
    let error = entry.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("HTTPS_ONLY"), "{error}");
    assert_eq!(receiver.connections(), 0, "no connection was attempted");
}

#[tokio::test]
async fn a_batch_of_ten_events_to_ten_slow_receivers_runs_concurrently() {
    let sender = TestSender::new();
    let mut receivers = Vec::new();
    for _ in 0..10 {
        let receiver =
            Receiver::start((0..10).map(|_| Reply::status(200).after(Duration::from_millis(100))).collect()).await;
        create(&sender, &receiver.url(), &["ping"], json!({})).await;
        receivers.push(receiver);
    }
    let records: Vec<SqsMessage> = (0..10)
        .map(|i| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m-{i}"));
            message.body = Some(ping_event(Uuid::new_v4()));
            message
        })
        .collect();
    let mut event = SqsEvent::default();
    event.records = records;

    let started = std::time::Instant::now();
    let response = delivery::handle_sqs_event(&sender.sender, event, None).await.expect("batch");
    let elapsed = started.elapsed();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(receivers.iter().map(|r| r.received().len()).sum::<usize>(), 100);
    // Sequential would take 10 s; this only shows the deliveries overlap (the benchmark measures).
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_large_fan_out_delivers_some_inline_and_hands_the_rest_to_the_queue() {
    let receiver = Receiver::ok().await;
    let config = Config { fanout_inline_limit: 3, ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    for _ in 0..5 {
        create(&sender, &receiver.url(), &["ping"], json!({})).await;
    }

    let outcome = sender.handle(&ping_event(Uuid::new_v4())).await;
    let handed_off = sender.queue.peek();
    sender.pump().await;

    assert!(matches!(outcome, MessageOutcome::Done(ref t) if t.delivered == 3), "{outcome:?}");
    assert_eq!(handed_off.len(), 2);
    assert!(handed_off.iter().all(|(body, _)| body.contains(r#""trigger":{"type":"fanout"}"#)));
    assert_eq!(receiver.received().len(), 5);
}

#[tokio::test]
async fn a_batch_delivers_inline_only_what_fits_before_the_invocation_deadline() {
    let receiver = Receiver::ok().await;
    // One wave is the 1 s attempt timeout plus 2 s for its writes; 5 s stay in reserve. So
    // 11 s left hold 2 waves of 2 attempts: 4 inline deliveries, 2 for each of the 2 events.
    let config = Config { delivery_timeout: Duration::from_secs(1), delivery_concurrency: 2, ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    for _ in 0..5 {
        create(&sender, &receiver.url(), &["ping"], json!({})).await;
    }
    let mut event = SqsEvent::default();
    event.records = (0..2)
        .map(|i| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m-{i}"));
            message.body = Some(ping_event(Uuid::new_v4()));
            message
        })
        .collect();
    let deadline = std::time::SystemTime::now() + Duration::from_millis(11_500);

    let response = delivery::handle_sqs_event(&sender.sender, event, Some(deadline)).await.expect("batch");
    let inline = receiver.received().len();
    let handed_off = sender.queue.take();

    assert!(response.batch_item_failures.is_empty());
    assert_eq!(inline, 4);
    assert_eq!(handed_off.len(), 6);
    assert!(handed_off.iter().all(|(body, _)| body.contains(r#""trigger":{"type":"fanout"}"#)));
    assert_eq!(sender.sender.inline_limit_within(Duration::from_secs(600), 10), 16, "capped at FANOUT_INLINE_LIMIT");
    assert_eq!(sender.sender.inline_limit_within(Duration::from_secs(4), 1), 0, "not even one wave fits");
}

#[tokio::test]
async fn a_fan_out_delivery_that_waited_long_for_its_turn_claims_only_when_its_turn_comes() {
    // One request at a time, and the first takes 16 s: the second waits past half of the
    // claim's 30 s margin, so a claim taken before the wait would be stale by its attempt.
    let receiver = Receiver::start(vec![Reply::status(200).after(Duration::from_secs(16))]).await;
    let config = Config { delivery_timeout: Duration::from_secs(20), delivery_concurrency: 1, ..Config::default() };
    let sender = TestSender::with(config, CidrList::loopback());
    let first = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let second = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    let entries = [sender.log(&first, event_id).await, sender.log(&second, event_id).await];
    assert!(entries.iter().all(|entry| entry.state == DeliveryState::Succeeded));
    let mut versions: Vec<u64> = entries.iter().map(|entry| entry.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, [2, 2], "each inserted claimed when its turn came, then recorded: no renewal needed");
    let second_attempt = entries.iter().map(|entry| entry.attempts[0].at).max().expect("attempts");
    assert!(second_attempt - entries[0].envelope.created_at >= chrono::Duration::seconds(16));
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_task_cannot_smuggle_another_payload_past_the_log() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let sender = TestSender::new();
    let webhook_id = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();
    sender.handle(&ping_event(event_id)).await;
    let mut retry: Value = serde_json::from_str(&sender.queue.take()[0].0).expect("retry task");
    retry["envelope"]["event"]["ping_id"] = json!(Uuid::nil());
    let mut fake_ping = retry.clone();
    fake_ping["trigger"] = json!({"type": "ping"});
    fake_ping["envelope"]["event_type"] = json!("task_created");

    let forged = sender.handle(&fake_ping.to_string()).await;
    sender.handle(&retry.to_string()).await;

    assert!(matches!(forged, MessageOutcome::Invalid(ref reason) if reason.contains("ping task")), "{forged:?}");
    let bodies: Vec<Value> = receiver.received().iter().map(Received::json).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["event"], bodies[0]["event"], "the retry sent the stored payload");
    assert_eq!(sender.log(&webhook_id, event_id).await.state, DeliveryState::Succeeded);
}

// --- with moto: SQS, the dead-letter queue and DynamoDB ---

#[tokio::test]
async fn an_invalid_event_lands_on_the_dead_letter_queue_and_a_valid_one_in_the_same_batch_is_delivered() {
    let receiver = Receiver::ok().await;
    let (store, _table) = moto::dynamo_store().await;
    let events_url = moto::queue("events").await;
    let dlq_url = moto::queue("dlq").await;
    let sqs = aws_sdk_sqs::Client::new(&moto::sdk_config());
    let store: std::sync::Arc<dyn webhooks::store::Store> = std::sync::Arc::new(store);
    let queue = std::sync::Arc::new(webhooks::queue::SqsQueue::new(sqs.clone(), events_url.clone()));
    let dead_letters = std::sync::Arc::new(webhooks::queue::SqsDeadLetters::new(sqs.clone(), dlq_url.clone()));
    let config = std::sync::Arc::new(Config::default());
    let sender =
        Sender::new(store.clone(), queue.clone(), dead_letters, config.clone(), &CidrList::loopback()).expect("sender");
    let app = webhooks::App { store, queue: queue.clone(), config };
    let new = webhooks::manage::NewWebhook {
        event_types: vec![webhooks::events::EventType::Ping.into()],
        secret_token: Some(webhooks::domain::SecretToken::parse(SECRET).expect("secret")),
        ..webhooks::manage::NewWebhook::new(
            webhooks::domain::WebhookName::parse("hook").expect("name"),
            webhooks::domain::WebhookUrl::parse(&receiver.url(), false).expect("url"),
        )
    };
    let webhook = app.create_webhook(new).await.expect("create");
    for body in [ping_event(Uuid::new_v4()), json!({"event_type": "tsk_created", "event": {}}).to_string()] {
        sqs.send_message().queue_url(&events_url).message_body(body).send().await.expect("send");
    }
    let mut event = SqsEvent::default();
    for (id, body, _) in moto::drain(&events_url).await {
        let mut message = SqsMessage::default();
        message.message_id = Some(id);
        message.body = Some(body);
        event.records.push(message);
    }
    assert_eq!(event.records.len(), 2);

    let response = delivery::handle_sqs_event(&sender, event, None).await.expect("batch");

    assert!(response.batch_item_failures.is_empty(), "the invalid one is handled by dead-lettering it");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    received[0].assert_signed(SECRET);
    let dead = moto::drain(&dlq_url).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1.contains("tsk_created"));
    assert_eq!(dead[0].2.as_deref(), Some("unknown event type: tsk_created"));
    let logs = app
        .list_logs(webhook.webhook_id, None, webhooks::store::PageRequest { limit: 10, cursor: None })
        .await
        .expect("logs");
    assert_eq!(logs.items.len(), 1);
    assert_eq!(logs.items[0].state, DeliveryState::Succeeded);
}

#[tokio::test]
async fn a_retry_goes_through_moto_sqs_and_succeeds_on_dynamodb() {
    let receiver = Receiver::start(vec![Reply::status(500)]).await;
    let (store, _table) = moto::dynamo_store().await;
    let events_url = moto::queue("events").await;
    let sqs = aws_sdk_sqs::Client::new(&moto::sdk_config());
    let store: std::sync::Arc<dyn webhooks::store::Store> = std::sync::Arc::new(store);
    let queue = std::sync::Arc::new(webhooks::queue::SqsQueue::new(sqs.clone(), events_url.clone()));
    let dead_letters = std::sync::Arc::new(webhooks_tests::RecordingDeadLetters::default());
    let config = std::sync::Arc::new(Config { retry_schedule: vec![Duration::ZERO], ..Config::default() });
    let sender =
        Sender::new(store.clone(), queue.clone(), dead_letters, config.clone(), &CidrList::loopback()).expect("sender");
    let app = webhooks::App { store, queue, config };
    let new = webhooks::manage::NewWebhook {
        event_types: vec![webhooks::events::EventType::Ping.into()],
        ..webhooks::manage::NewWebhook::new(
            webhooks::domain::WebhookName::parse("hook").expect("name"),
            webhooks::domain::WebhookUrl::parse(&receiver.url(), false).expect("url"),
        )
    };
    let webhook = app.create_webhook(new).await.expect("create");
    let event_id = Uuid::new_v4();

    sender.handle_message(&ping_event(event_id), "first").await;
    let retries = moto::drain(&events_url).await;
    assert_eq!(retries.len(), 1, "the retry task is on the queue");
    let retry: Value = serde_json::from_str(&retries[0].1).expect("task");
    sender.handle_message(&retries[0].1, &retries[0].0).await;
    sender.handle_message(&retries[0].1, &retries[0].0).await;

    assert_eq!(retry["kind"], "deliver");
    assert_eq!(retry["v"], 2);
    assert_eq!(retry["trigger"], json!({"type": "retry", "attempt": 2}));
    let entry = app.store.get_delivery(webhook.webhook_id, event_id).await.expect("get").expect("entry");
    assert_eq!(entry.state, DeliveryState::Succeeded);
    assert_eq!(entry.try_count, 2);
    assert_eq!(receiver.received().len(), 2, "the duplicate retry task sent nothing");
}

#[tokio::test]
async fn a_message_received_for_the_first_time_writes_each_delivery_once_after_its_attempt() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let hooks = [
        create(&sender, &receiver.url(), &["ping"], json!({})).await,
        create(&sender, &receiver.url(), &["ping"], json!({})).await,
    ];
    let event_id = Uuid::new_v4();
    let body = ping_event(event_id);
    let first = webhooks::delivery::Received {
        body: &body,
        message_id: "m-1",
        receive_count: 1,
        sent_at: Some(chrono::Utc::now()),
    };

    let outcomes = sender.sender.handle_batch(&[first], 16).await;

    assert!(matches!(outcomes[0], MessageOutcome::Done(ref t) if t.delivered == 2), "{outcomes:?}");
    for hook in &hooks {
        let entry = sender.log(hook, event_id).await;
        assert_eq!(entry.state, DeliveryState::Succeeded);
        assert_eq!(entry.version, 1, "one write: no claim before the attempt");
        assert_eq!(entry.lease_until, None);
    }
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn the_same_message_received_again_after_it_was_handled_sends_nothing() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let hook = create(&sender, &receiver.url(), &["ping"], json!({})).await;
    let event_id = Uuid::new_v4();
    let body = ping_event(event_id);
    let sent_at = Some(chrono::Utc::now());
    let received =
        |receive_count| webhooks::delivery::Received { body: &body, message_id: "m-2", receive_count, sent_at };

    sender.sender.handle_batch(&[received(1)], 16).await;
    let again = sender.sender.handle_batch(&[received(2)], 16).await;

    assert!(matches!(again[0], MessageOutcome::Done(ref t) if t.delivered == 0 && t.skipped == 1), "{again:?}");
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(sender.log(&hook, event_id).await.version, 1);
}

// --- operational events and rate limits (SPEC §9.3, §10) ---

fn operational(received: &[Received], event_type: &str) -> Vec<Value> {
    received.iter().map(Received::json).filter(|body| body["event_type"] == event_type).collect()
}

#[tokio::test]
async fn a_delivery_that_exhausts_its_attempts_raises_delivery_failed_once_and_its_failure_raises_nothing() {
    let failing = Receiver::start(vec![Reply::status(500); 10]).await;
    let operators = Receiver::start(vec![Reply::status(500); 10]).await;
    let sender = TestSender::new();
    let broken = create(&sender, &failing.url(), &["ping"], json!({})).await;
    let watcher = create(&sender, &operators.url(), &["delivery_failed"], json!({})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;
    sender.pump().await;

    assert_eq!(sender.log(&broken, event_id).await.state, DeliveryState::Failed);
    assert_eq!(failing.received().len(), 4, "the first attempt and three retries");
    let raised = operational(&operators.received(), "delivery_failed");
    assert_eq!(raised.len(), 4, "one delivery_failed, tried four times itself: {raised:?}");
    assert!(raised.iter().all(|body| body["event_id"] == raised[0]["event_id"]));
    let payload = &raised[0]["event"];
    assert_eq!(payload["webhook_id"], broken.as_str());
    assert_eq!(payload["event_id"], event_id.to_string());
    assert_eq!(payload["event_type"], "ping");
    assert_eq!(payload["try_count"], 4);
    assert_eq!(payload["last_status_code"], 500);
    let _ = watcher;
}

#[tokio::test]
async fn a_webhook_disabled_for_410_raises_webhook_disabled_to_those_who_name_it() {
    let gone = Receiver::start(vec![Reply::status(410)]).await;
    let operators = Receiver::ok().await;
    let sender = TestSender::new();
    let retired = create(&sender, &gone.url(), &["ping"], json!({})).await;
    create(&sender, &operators.url(), &["webhook_disabled", "*"], json!({})).await;

    sender.handle(&ping_event(Uuid::new_v4())).await;
    sender.pump().await;

    let disabled = operational(&operators.received(), "webhook_disabled");
    assert_eq!(disabled.len(), 1, "{:?}", operators.received());
    assert_eq!(disabled[0]["event"]["webhook_id"], retired.as_str());
    assert_eq!(disabled[0]["event"]["reason"], "gone");
    assert_eq!(disabled[0]["event"]["failing_since"], Value::Null);
    assert_eq!(
        operational(&operators.received(), "delivery_failed").len(),
        0,
        "\"*\" does not include operational types"
    );
    disabled[0].get("webhook_id").expect("an onefuzz envelope");
}

#[tokio::test]
async fn a_long_rate_limit_wait_goes_through_the_queue_keeping_its_slot_and_starts_on_time() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let limited = create(&sender, &receiver.url(), &["ping"], json!({"rate_limit_per_second": 1})).await;
    let events: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();

    let bodies: Vec<String> = events.iter().map(|id| ping_event(*id)).collect();
    // Slots at 0.25, 1.25, 2.25, 3.25 and 4.25 s (reserved a little ahead): the first two are
    // slept for in the process, the rest wait on the queue.
    futures_util::future::join_all(bodies.iter().map(|body| sender.handle(body))).await;
    let waiting: Vec<(Value, Duration)> =
        sender.queue.peek().iter().map(|(body, delay)| (serde_json::from_str(body).expect("json"), *delay)).collect();
    sender.pump_in_time().await;

    let received = receiver.received();
    assert_eq!(received.len(), 5);
    assert!(webhooks_tests::most_within(&received, Duration::from_millis(950)) <= 1, "more than 1 within a second");
    assert_eq!(waiting.len(), 3, "the slots over 2 s away wait on the queue: {waiting:?}");
    for (task, delay) in &waiting {
        assert!(task["rate_slot"].is_string(), "each keeps the slot it reserved: {task}");
        assert!(*delay >= Duration::from_millis(500), "delayed until just before its slot, not {delay:?}");
    }
    let span = received.iter().map(|r| r.at).max().expect("last") - received.iter().map(|r| r.at).min().expect("first");
    assert!(span >= Duration::from_millis(3900), "5 at 1/s span 4 s, not {span:?}");
    for id in events {
        let entry = sender.log(&limited, id).await;
        assert_eq!((entry.state, entry.try_count), (DeliveryState::Succeeded, 1), "waiting is not an attempt");
    }
}

#[tokio::test]
async fn a_rate_limited_webhook_gets_at_most_its_limit_per_second_and_every_delivery_in_the_end() {
    let receiver = Receiver::ok().await;
    let sender = TestSender::new();
    let limited = create(&sender, &receiver.url(), &["ping"], json!({"rate_limit_per_second": 4})).await;
    let events: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();

    let bodies: Vec<String> = events.iter().map(|id| ping_event(*id)).collect();
    let started = std::time::Instant::now();
    futures_util::future::join_all(bodies.iter().map(|body| sender.handle(body))).await;
    sender.pump_in_time().await;
    let took = started.elapsed();

    let received = receiver.received();
    assert_eq!(received.len(), 10);
    assert!(webhooks_tests::most_within(&received, Duration::from_millis(950)) <= 4, "more than 4 within a second");
    assert!(took >= Duration::from_millis(2000), "10 at 4/s take over 2 s, took {took:?}");
    for id in events {
        let entry = sender.log(&limited, id).await;
        assert_eq!((entry.state, entry.try_count), (DeliveryState::Succeeded, 1), "waiting is not an attempt");
    }
}

#[tokio::test]
async fn a_receiver_that_echoes_a_custom_header_value_never_gets_it_into_the_log() {
    const KEY: &str = "Bearer receiver-api-key-5521";
    let echo = Receiver::start(vec![
        webhooks_tests::Reply::status(401)
            .with_header("x-seen-authorization", KEY)
            .with_body(format!("{{\"error\":\"bad key {KEY}\"}}")),
    ])
    .await;
    let sender = TestSender::new();
    let hook = create(&sender, &echo.url(), &["ping"], json!({"headers": {"Authorization": KEY}})).await;
    let event_id = Uuid::new_v4();

    sender.handle(&ping_event(event_id)).await;

    assert_eq!(echo.received()[0].header("authorization"), Some(KEY), "the receiver got the value");
    let entry = sender.log(&hook, event_id).await;
    let head = entry.attempts[0].response_head.clone().expect("a response head");
    assert!(!head.contains("receiver-api-key"), "{head}");
    assert_eq!(head, "{\"error\":\"bad key [REDACTED]\"}");
}
