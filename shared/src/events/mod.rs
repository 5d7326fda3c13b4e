//! What producers send: the event catalog (a leaf module), the message shape producers use
//! (SPEC §4-5), and the service's own operational events (§10).

mod catalog;
mod ingest;
pub mod operational;

pub use catalog::{CatalogError, EventType, UNKNOWN_EVENT_TYPE};
pub use ingest::{IngestDefaults, MAX_EVENT_BYTES, id_from_message_id, parse_event_message};
