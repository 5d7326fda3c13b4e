//! API input bodies: REST create and patch, the compat create, patch and `{webhook_id}`
//! bodies, and recover's `{since}`, each parsed down to domain values as its route does. The
//! first byte picks the route; the rest is the body.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use webhooks::Config;
use webhooks::api::{ApiError, BodyKind, parse_body};

static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::from_lookup(|_| None).unwrap_or_else(|_| std::process::abort()));

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let kind = BodyKind::ALL[usize::from(selector) % BodyKind::ALL.len()];
    if let Err(err) = parse_body(kind, body, &CONFIG) {
        // A client's mistake is a 4xx, never an internal error.
        assert!(!matches!(err, ApiError::Internal(_) | ApiError::Unavailable(_)), "{kind:?}: {err}");
    }
});
