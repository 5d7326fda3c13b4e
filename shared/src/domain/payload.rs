//! An event payload's JSON text, encoded once however many deliveries and log entries carry
//! it: a fan-out's requests and entries share their event's payload (`Arc`), so its encoding
//! is kept by the payload's allocation for as long as that fan-out is likely to run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use serde_json::value::RawValue;

/// The encodings kept: about as many events as are fanned out at once. Each kept `Arc` holds
/// its allocation, so no other payload can turn up at the same address, and a shared payload
/// is never changed in place.
static KEPT: Mutex<VecDeque<(Arc<Value>, Arc<RawValue>)>> = Mutex::new(VecDeque::new());
const KEPT_PAYLOADS: usize = 32;
/// Larger payloads are encoded each time rather than kept.
const KEPT_MAX_BYTES: usize = 64 * 1024;

/// `payload` as compact JSON, the same bytes `serde_json::to_string` gives.
pub fn encoded(payload: &Arc<Value>) -> Result<Arc<RawValue>, serde_json::Error> {
    if let Ok(kept) = KEPT.lock()
        && let Some((_, text)) = kept.iter().find(|(kept, _)| Arc::ptr_eq(kept, payload))
    {
        return Ok(Arc::clone(text));
    }
    let text: Arc<RawValue> = RawValue::from_string(serde_json::to_string(payload.as_ref())?)?.into();
    if text.get().len() <= KEPT_MAX_BYTES
        && let Ok(mut kept) = KEPT.lock()
    {
        if kept.len() >= KEPT_PAYLOADS {
            kept.pop_front();
        }
        kept.push_back((Arc::clone(payload), Arc::clone(&text)));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_is_the_payloads_compact_json_whether_kept_or_not() {
        let small = Arc::new(serde_json::json!({"b": [1, 2.5, "three"], "a": null}));
        let large = Arc::new(serde_json::json!({"padding": "x".repeat(KEPT_MAX_BYTES + 1)}));

        for payload in [&small, &small, &large, &large] {
            assert_eq!(encoded(payload).expect("encodes").get(), serde_json::to_string(payload.as_ref()).unwrap());
        }
    }

    #[test]
    fn equal_payloads_in_other_allocations_are_encoded_each_for_itself() {
        let first = Arc::new(serde_json::json!({"n": 1}));
        let kept = encoded(&first).expect("encodes");
        let other = Arc::new(serde_json::json!({"n": 2}));

        assert_eq!(encoded(&other).expect("encodes").get(), r#"{"n":2}"#);
        assert_eq!(kept.get(), r#"{"n":1}"#);
    }
}
