//! Signatures receivers verify (SPEC §6.2). Pure functions, with the timestamp passed in, so
//! known answers pin them. They always sign the exact bytes that are sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};

use crate::domain::SecretToken;

/// `X-Onefuzz-Digest`: lowercase hex HMAC-SHA512 of the body, keyed by the secret's UTF-8.
pub fn onefuzz_digest(secret: &SecretToken, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty digest would only make
    // receivers reject the delivery, never leak anything.
    match Hmac::<Sha512>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The Standard Webhooks key: the base64-decoded rest of a `whsec_` secret, else its UTF-8.
fn standard_key(secret: &SecretToken) -> Vec<u8> {
    let raw = secret.expose();
    match raw.strip_prefix("whsec_").map(|rest| STANDARD.decode(rest)) {
        Some(Ok(key)) => key,
        _ => raw.as_bytes().to_vec(),
    }
}

/// One `v1,<base64>` Standard Webhooks signature over `{id}.{timestamp}.{body}`.
pub fn standard_signature(secret: &SecretToken, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&standard_key(secret)) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one space-separated signature per live secret.
pub fn standard_signature_header(secrets: &[&SecretToken], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|secret| standard_signature(secret, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Whether any signature in a `webhook-signature` header matches, compared in constant time.
pub fn verify_standard(secret: &SecretToken, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = standard_signature(secret, msg_id, timestamp, body);
    header.split(' ').any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
}

/// Whether an `X-Onefuzz-Digest` value matches the body, compared in constant time.
pub fn verify_onefuzz(secret: &SecretToken, body: &[u8], digest: &str) -> bool {
    constant_time_eq(digest.trim().to_ascii_lowercase().as_bytes(), onefuzz_digest(secret, body).as_bytes())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretToken {
        SecretToken::parse(s).unwrap()
    }

    #[test]
    fn the_standard_webhooks_signature_matches_the_spec_known_answer() {
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;

        let signature = standard_signature(
            &secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            body,
        );

        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn the_onefuzz_digest_is_128_lowercase_hex_chars_of_hmac_sha512() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let digest = onefuzz_digest(&secret("Jefe"), b"what do ya want for nothing?");

        assert_eq!(
            digest,
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert!(verify_onefuzz(&secret("Jefe"), b"what do ya want for nothing?", &digest.to_uppercase()));
        assert!(!verify_onefuzz(&secret("Jefe"), b"what do ya want for nothing!", &digest));
    }

    #[test]
    fn each_live_secret_adds_a_signature_and_either_verifies() {
        let (new, old) = (secret("new-secret"), secret("old-secret"));

        let header = standard_signature_header(&[&new, &old], "msg", 42, b"{}");

        assert_eq!(header.split(' ').count(), 2);
        assert!(verify_standard(&new, "msg", 42, b"{}", &header));
        assert!(verify_standard(&old, "msg", 42, b"{}", &header));
        assert!(!verify_standard(&secret("other"), "msg", 42, b"{}", &header));
        assert!(!verify_standard(&new, "msg", 43, b"{}", &header));
    }
}
