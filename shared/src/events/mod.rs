//! What producers send: the event catalog and the accepted message shapes (SPEC §4-5).

mod catalog;
mod ingest;

pub use catalog::{EventType, UNKNOWN_EVENT_TYPE};
pub use ingest::{Incoming, IngestDefaults, MAX_EVENT_BYTES, parse_event_message, parse_queue_body};
