//! Build the envelope and sign it, per format, for 1 KiB and 64 KiB events: the CPU cost of
//! one delivery before any I/O.

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use uuid::Uuid;
use webhooks::delivery::signed_request;
use webhooks::domain::{EventEnvelope, MessageFormat, NewWebhook, SecretToken, Webhook, WebhookName, WebhookUrl};
use webhooks::events::EventType;

fn envelope(payload_bytes: usize) -> EventEnvelope {
    EventEnvelope {
        event_id: Uuid::new_v4(),
        event_type: EventType::Ping,
        event: json!({"ping_id": Uuid::new_v4(), "padding": "x".repeat(payload_bytes)}).into(),
        instance_id: Uuid::new_v4(),
        instance_name: "bench".into(),
        created_at: Utc::now(),
    }
}

fn webhook(format: MessageFormat) -> Webhook {
    let new = NewWebhook {
        event_types: vec![EventType::Ping.into()],
        secret_token: Some(SecretToken::parse("bench-secret").expect("secret")),
        message_format: Some(format),
        ..NewWebhook::new(
            WebhookName::parse("bench").expect("name"),
            WebhookUrl::parse("https://example.com/hook", false).expect("url"),
        )
    };
    Webhook::new(new, Utc::now())
}

fn envelope_and_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_and_sign");
    for size in [1024, 64 * 1024] {
        let event = envelope(size);
        group.throughput(Throughput::Bytes(size as u64));
        for format in MessageFormat::ALL {
            let hook = webhook(format);
            group.bench_with_input(
                BenchmarkId::new(format.as_str(), format!("{}KiB", size / 1024)),
                &event,
                |b, event| b.iter(|| signed_request(&hook, event, Utc::now()).expect("sign")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, envelope_and_sign);
criterion_main!(benches);
