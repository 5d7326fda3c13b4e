//! Queue body ingestion: every SPEC §4 shape (plain, SNS-wrapped, EventBridge) and the task
//! enum, as the sender reads SQS and local-queue messages. Must never panic; a parse either
//! yields a message or a reason.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use webhooks::Config;
use webhooks::events::IngestDefaults;
use webhooks::queue::parse_queue_body;

static DEFAULTS: LazyLock<IngestDefaults> = LazyLock::new(|| {
    Config::from_lookup(|_| None).map(|config| config.ingest_defaults()).unwrap_or_else(|_| std::process::abort())
});

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    let _ = parse_queue_body(body, "fuzz-message-id", &DEFAULTS, now);
});
