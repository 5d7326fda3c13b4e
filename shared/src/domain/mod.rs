//! The webhook resource and its parts. Every type here is parsed at the edge: once a value
//! exists, it is valid, and nothing past the HTTP adapters re-checks it.

mod delivery;
mod options;
mod pattern;
pub mod payload;
mod rate;
mod retry;
mod webhook;

pub use delivery::{
    Attempt, Decision, DeliveryLog, DeliveryState, EventEnvelope, MAX_LOGGED_ATTEMPTS, Outcome, Recorded, Trigger,
};
pub use options::{CustomHeaders, MAX_HEADERS, RateLimit};
pub use pattern::EventPattern;
pub use rate::{Gcra, Reservation, wait_for};
pub use retry::RetryPolicy;
pub use webhook::{
    MessageFormat, NewWebhook, RotatedSecret, SecretToken, Webhook, WebhookId, WebhookName, WebhookState, WebhookUrl,
    dedup_event_types,
};

/// Why a value from a client was refused. The text names the field and is safe to show:
/// it never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl From<crate::events::CatalogError> for ParseError {
    fn from(err: crate::events::CatalogError) -> Self {
        Self(err.to_string())
    }
}
