//! Delivering events: fan-out, envelopes, signatures, the SSRF-safe HTTP client, attempts and
//! the retry policy.

mod address;
mod batch;
mod cidr;
mod client;
mod envelope;
mod health;
mod local_worker;
mod sender;

pub use crate::domain::RetryPolicy;
pub use address::{AddressPolicy, is_global};
pub use batch::{emit_metrics, handle_sqs_event};
pub use cidr::{Cidr, CidrList, canonical};
pub use client::{AttemptOutcome, DeliveryClient, DeliveryClientError, DeliveryErrorKind, RESPONSE_HEAD_BYTES};
pub use envelope::{SignedRequest, USER_AGENT, body, signed_request};
pub use local_worker::LocalWorker;
pub use sender::{MessageOutcome, Received, Sender, Tally, Transient};
