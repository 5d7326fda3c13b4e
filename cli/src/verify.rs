//! `webhooks verify`: checks a delivery's signatures offline, for receivers debugging theirs.

use webhooks::domain::SecretToken;
use webhooks::signing;

use crate::commands::read_arg;

/// What each signature header says about a delivery.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `None` when the header is absent.
    pub onefuzz_digest: Option<bool>,
    pub standard_webhooks: Option<bool>,
}

impl Verdict {
    pub fn all_present_verify(&self) -> bool {
        (self.onefuzz_digest.is_some() || self.standard_webhooks.is_some())
            && self.onefuzz_digest != Some(false)
            && self.standard_webhooks != Some(false)
    }

    pub fn describe(&self) -> String {
        fn word(v: Option<bool>) -> &'static str {
            match v {
                Some(true) => "verified",
                Some(false) => "NOT verified",
                None => "absent",
            }
        }
        format!("X-Onefuzz-Digest: {}; webhook-signature: {}", word(self.onefuzz_digest), word(self.standard_webhooks))
    }
}

/// Checks whichever signature headers `header` finds (by case-insensitive name).
pub fn check(secret: &SecretToken, body: &[u8], header: impl Fn(&str) -> Option<String>) -> Verdict {
    let onefuzz_digest = header("x-onefuzz-digest").map(|digest| signing::verify_onefuzz(secret, body, &digest));
    let standard_webhooks = header("webhook-signature").map(|signature| {
        let id = header("webhook-id").unwrap_or_default();
        let timestamp = header("webhook-timestamp").and_then(|t| t.trim().parse::<i64>().ok());
        timestamp.is_some_and(|t| signing::verify_standard(secret, &id, t, body, &signature))
    });
    Verdict { onefuzz_digest, standard_webhooks }
}

pub fn run(secret: &str, body: &str, headers: &[String]) -> Result<(), String> {
    let secret = SecretToken::parse(secret).map_err(|e| e.to_string())?;
    let body = read_arg(body)?;
    let mut parsed = Vec::new();
    for header in headers {
        let (name, value) =
            header.split_once(':').ok_or_else(|| format!("--header {header:?} is not 'Name: value'"))?;
        parsed.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let verdict =
        check(&secret, body.as_bytes(), |name| parsed.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()));
    println!("{}", verdict.describe());
    if verdict.all_present_verify() { Ok(()) } else { Err("signature verification failed".into()) }
}
