//! Pagination cursors as clients send them back: decoded as each store reads its position.
//! Anything that is not a cursor the store made must be `BadCursor`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhooks::store::{Cursor, StoreError};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let cursor = Cursor::from_client(token);
    for result in [cursor.decode::<String>().map(drop), cursor.decode::<serde_json::Value>().map(drop)] {
        assert!(matches!(result, Ok(()) | Err(StoreError::BadCursor)), "{result:?}");
    }
    // What a store encodes, it decodes.
    if let Ok(position) = cursor.decode::<String>() {
        let again = Cursor::encode(&position).and_then(|c| c.decode::<String>());
        assert_eq!(again.ok().as_deref(), Some(position.as_str()));
    }
});
