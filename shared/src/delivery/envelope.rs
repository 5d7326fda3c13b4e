//! The bytes a receiver gets, per `message_format` (SPEC §6.1), and the headers that sign
//! them (§6.2). Signatures are computed over these exact bytes, never a re-serialisation.

use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::{EventEnvelope, MessageFormat, Webhook, WebhookId};
use crate::events::EventType;
use crate::signing;

pub const USER_AGENT: &str = concat!("onefuzz-webhook ", env!("CARGO_PKG_VERSION"));

#[derive(Serialize)]
struct OnefuzzBody<'a> {
    webhook_id: WebhookId,
    event_id: Uuid,
    event_type: EventType,
    event: &'a RawValue,
    instance_id: Uuid,
    instance_name: &'a str,
    created_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventGridEvent<'a> {
    id: Uuid,
    event_type: EventType,
    subject: &'a str,
    event_time: String,
    data: &'a RawValue,
    data_version: &'static str,
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    kind: EventType,
    time: String,
    datacontenttype: &'static str,
    data: &'a RawValue,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The request body and its content type for `webhook`'s format.
pub fn body(
    webhook_id: WebhookId,
    format: MessageFormat,
    envelope: &EventEnvelope,
) -> Result<(Vec<u8>, &'static str), serde_json::Error> {
    // Encoded once per event, not once per subscriber; the bytes are the same.
    let event = crate::domain::payload::encoded(&envelope.event)?;
    let event = event.as_ref();
    match format {
        MessageFormat::Onefuzz => serde_json::to_vec(&OnefuzzBody {
            webhook_id,
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            event,
            instance_id: envelope.instance_id,
            instance_name: &envelope.instance_name,
            created_at: rfc3339(envelope.created_at),
        })
        .map(|bytes| (bytes, "application/json")),
        MessageFormat::EventGrid => serde_json::to_vec(&[EventGridEvent {
            id: envelope.event_id,
            event_type: envelope.event_type,
            subject: &envelope.instance_name,
            event_time: rfc3339(envelope.created_at),
            data: event,
            data_version: "1.0.0",
        }])
        .map(|bytes| (bytes, "application/json")),
        MessageFormat::CloudEvents => serde_json::to_vec(&CloudEvent {
            specversion: "1.0",
            id: envelope.event_id,
            source: format!("/onefuzz/{}/{}", envelope.instance_name, envelope.instance_id),
            kind: envelope.event_type,
            time: rfc3339(envelope.created_at),
            datacontenttype: "application/json",
            data: event,
        })
        .map(|bytes| (bytes, "application/cloudevents+json")),
    }
}

/// A signed request, ready to send: the body bytes and every header.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// Builds and signs the request for one attempt. `timestamp` is this attempt's time, so a
/// retry carries a fresh `webhook-timestamp` (receivers reject stale ones). The webhook's
/// custom headers go in first: their names never collide with the service's (reserved names
/// are refused when they are set), and the signature covers the body alone.
pub fn signed_request(
    webhook: &Webhook,
    envelope: &EventEnvelope,
    now: DateTime<Utc>,
) -> Result<SignedRequest, serde_json::Error> {
    let (body, content_type) = body(webhook.webhook_id, webhook.format(), envelope)?;
    let mut headers = HeaderMap::new();
    for (name, value) in webhook.headers.iter().flat_map(|custom| custom.expose()) {
        // Parsed at the edge, so both always convert; a stored value that somehow does not is
        // left out rather than failing the delivery.
        if let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            // Marked sensitive: `Debug` of the map prints it redacted, and HTTP/2 keeps it out
            // of header compression tables.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    }
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let msg_id = envelope.event_id.to_string();
    let timestamp = now.timestamp();
    insert(&mut headers, "webhook-id", &msg_id);
    insert(&mut headers, "webhook-timestamp", &timestamp.to_string());
    let secrets = webhook.signing_secrets(now);
    if let Some(current) = webhook.secret_token.as_ref() {
        insert(&mut headers, "x-onefuzz-digest", &signing::onefuzz_digest(current, &body));
    }
    if !secrets.is_empty() {
        insert(
            &mut headers,
            "webhook-signature",
            &signing::standard_signature_header(&secrets, &msg_id, timestamp, &body),
        );
    }
    Ok(SignedRequest { body, headers })
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Every value here is hex, base64, digits or a UUID: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::domain::{CustomHeaders, NewWebhook, SecretToken, WebhookName, WebhookUrl};
    use serde_json::json;

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::from_u128(1),
            event_type: EventType::Ping,
            event: json!({"ping_id": Uuid::from_u128(2)}).into(),
            instance_id: Uuid::from_u128(3),
            instance_name: "example".into(),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    fn webhook(format: Option<MessageFormat>, secret: Option<&str>) -> Webhook {
        let new = NewWebhook {
            secret_token: secret.map(|s| SecretToken::parse(s).unwrap()),
            message_format: format,
            ..NewWebhook::new(
                WebhookName::parse("n").unwrap(),
                WebhookUrl::parse("https://example.com", false).unwrap(),
            )
        };
        let mut webhook = Webhook::new(new, Utc::now());
        // A fixed id, so the pinned signatures below stay valid.
        webhook.webhook_id = WebhookId::from(Uuid::from_u128(4));
        webhook
    }

    #[test]
    fn the_onefuzz_body_has_the_onefuzz_envelope_fields() {
        let (bytes, content_type) =
            body(WebhookId::from(Uuid::from_u128(4)), MessageFormat::Onefuzz, &envelope()).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();

        assert_eq!(content_type, "application/json");
        assert_eq!(
            value,
            json!({
                "webhook_id": Uuid::from_u128(4), "event_id": Uuid::from_u128(1), "event_type": "ping",
                "event": {"ping_id": Uuid::from_u128(2)}, "instance_id": Uuid::from_u128(3),
                "instance_name": "example", "created_at": "2023-11-14T22:13:20Z"
            })
        );
    }

    #[test]
    fn the_event_grid_body_is_a_one_element_array() {
        let (bytes, _) = body(WebhookId::new(), MessageFormat::EventGrid, &envelope()).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();

        assert_eq!(
            value,
            json!([{"id": Uuid::from_u128(1), "eventType": "ping", "subject": "example",
                    "eventTime": "2023-11-14T22:13:20Z", "data": {"ping_id": Uuid::from_u128(2)}, "dataVersion": "1.0.0"}])
        );
    }

    #[test]
    fn the_cloud_events_body_is_structured_mode_with_its_own_content_type() {
        let (bytes, content_type) = body(WebhookId::new(), MessageFormat::CloudEvents, &envelope()).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();

        assert_eq!(content_type, "application/cloudevents+json");
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["id"], Uuid::from_u128(1).to_string());
        assert_eq!(value["type"], "ping");
        assert_eq!(value["time"], "2023-11-14T22:13:20Z");
        assert_eq!(value["datacontenttype"], "application/json");
        assert!(value["source"].as_str().unwrap().starts_with("/onefuzz/example"));
    }

    #[test]
    fn a_signed_request_signs_the_exact_body_bytes() {
        let hook = webhook(None, Some("secret"));
        let now = DateTime::from_timestamp(1_700_000_100, 0).unwrap();

        let request = signed_request(&hook, &envelope(), now).unwrap();

        let secret = SecretToken::parse("secret").unwrap();
        let digest = request.headers["x-onefuzz-digest"].to_str().unwrap();
        assert_eq!(digest.len(), 128);
        assert!(signing::verify_onefuzz(&secret, &request.body, digest));
        assert_eq!(request.headers["webhook-id"], Uuid::from_u128(1).to_string().as_str());
        assert_eq!(request.headers["webhook-timestamp"], "1700000100");
        let signature = request.headers["webhook-signature"].to_str().unwrap();
        assert!(signing::verify_standard(
            &secret,
            &Uuid::from_u128(1).to_string(),
            1_700_000_100,
            &request.body,
            signature
        ));
        assert!(request.headers["user-agent"].to_str().unwrap().starts_with("onefuzz-webhook "));
    }

    #[test]
    fn without_a_secret_only_the_unsigned_headers_are_sent() {
        let request = signed_request(&webhook(None, None), &envelope(), Utc::now()).unwrap();

        assert!(request.headers.get("x-onefuzz-digest").is_none());
        assert!(request.headers.get("webhook-signature").is_none());
        assert!(request.headers.get("webhook-id").is_some());
        assert!(request.headers.get("webhook-timestamp").is_some());
    }

    #[test]
    fn custom_headers_are_sent_beside_the_signature_and_redacted_in_debug() {
        let mut hook = webhook(None, Some("secret"));
        hook.headers =
            CustomHeaders::parse([("Authorization", "Bearer receiver-api-key"), ("X-Tenant", "42")]).unwrap();

        let request = signed_request(&hook, &envelope(), Utc::now()).unwrap();

        assert_eq!(request.headers["authorization"], "Bearer receiver-api-key");
        assert_eq!(request.headers["x-tenant"], "42");
        assert!(request.headers.get("webhook-signature").is_some());
        assert!(request.headers.get("x-onefuzz-digest").is_some());
        assert_eq!(request.headers["content-type"], "application/json");
        let printed = format!("{request:?}");
        assert!(!printed.contains("receiver-api-key"), "{printed}");
    }
}
