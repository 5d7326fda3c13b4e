//! Webhook options beyond OneFuzz (SPEC §9): custom request headers and a rate limit.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ParseError;

pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_NAME_CHARS: usize = 64;
pub const MAX_HEADER_VALUE_CHARS: usize = 1024;
pub const MAX_RATE_LIMIT_PER_SECOND: u32 = 10_000;

/// Names the service sets itself, or that would let a webhook forge a signature or break
/// framing. Compared in lowercase; every `webhook-*` name is refused as well.
const RESERVED_HEADERS: &[&str] =
    &["content-type", "content-length", "host", "user-agent", "transfer-encoding", "connection", "x-onefuzz-digest"];

/// One header as stored: the name as the client spelled it, and its value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CustomHeader {
    name: String,
    value: String,
}

/// Extra request headers sent on every delivery of a webhook (SPEC §9.1). Values often carry
/// a receiver's credentials, so they are write-only like the secret: `Debug` shows the names
/// only, and only [`CustomHeaders::expose`] (used to build a request) reaches the values.
/// Kept as a list so the names keep the order the client gave them in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomHeaders(Vec<CustomHeader>);

impl CustomHeaders {
    /// Parses `(name, value)` pairs. Every error names the header (never its value) and
    /// starts with `headers`. An empty set is `None`: there is nothing to send.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Option<Self>, ParseError> {
        let mut headers: Vec<CustomHeader> = Vec::new();
        for (name, value) in pairs {
            let name = header_name(name)?;
            if headers.len() == MAX_HEADERS {
                return Err(ParseError::new(format!("headers: at most {MAX_HEADERS} headers are allowed")));
            }
            if headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)) {
                return Err(ParseError::new(format!(
                    "headers.{name}: given twice (header names are case-insensitive)"
                )));
            }
            header_value(name, value)?;
            headers.push(CustomHeader { name: name.to_owned(), value: value.to_owned() });
        }
        Ok(if headers.is_empty() { None } else { Some(Self(headers)) })
    }

    /// The names, in the order given: what `get` shows.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.name.as_str()).collect()
    }

    /// Names and values, for building a delivery request only.
    pub fn expose(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|h| (h.name.as_str(), h.value.as_str()))
    }

    /// `text` (a receiver's response head) with every header value in it replaced by
    /// `[REDACTED]`: a receiver that echoes its request would otherwise put a value into the
    /// log, and so into API responses.
    pub fn redact(&self, text: &str) -> String {
        let mut values: Vec<&str> = self.0.iter().map(|h| h.value.as_str()).filter(|v| !v.is_empty()).collect();
        // Longest first, so a value that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.iter().fold(text.to_owned(), |text, value| text.replace(value, "[REDACTED]"))
    }
}

impl fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomHeaders({:?}: [REDACTED])", self.names())
    }
}

/// An HTTP token (RFC 9110 `tchar`s) of 1 to 64 characters, not a reserved name.
fn header_name(name: &str) -> Result<&str, ParseError> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.chars().count() > MAX_HEADER_NAME_CHARS || !name.chars().all(is_tchar) {
        return Err(ParseError::new(format!(
            "headers: {} is not a valid header name (an HTTP token of 1 to {MAX_HEADER_NAME_CHARS} characters)",
            shown(name)
        )));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
        return Err(ParseError::new(format!("headers.{name}: a reserved header name; the service sets it")));
    }
    Ok(name)
}

/// 1 to 1024 visible ASCII characters or spaces. The message never quotes the value.
fn header_value(name: &str, value: &str) -> Result<(), ParseError> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_HEADER_VALUE_CHARS {
        return Err(ParseError::new(format!(
            "headers.{name}: the value must be 1 to {MAX_HEADER_VALUE_CHARS} characters, got {chars}"
        )));
    }
    if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(ParseError::new(format!(
            "headers.{name}: the value may hold only visible ASCII characters and spaces (no CR, LF, NUL or tab)"
        )));
    }
    Ok(())
}

/// A refused name as it may be shown: escaped, and cut short so a huge name cannot flood a
/// response or a log line.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(MAX_HEADER_NAME_CHARS).collect();
    let suffix = if cut.len() < name.len() { "…" } else { "" };
    format!("{cut:?}{suffix}")
}

/// At most this many attempts start per second to one webhook (SPEC §9.3): 1 to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RateLimit(u32);

impl RateLimit {
    const ERROR: &'static str = "rate_limit_per_second: must be a whole number from 1 to 10000";

    pub fn new(per_second: u64) -> Result<Self, ParseError> {
        u32::try_from(per_second)
            .ok()
            .filter(|n| (1..=MAX_RATE_LIMIT_PER_SECOND).contains(n))
            .map(Self)
            .ok_or_else(|| ParseError::new(Self::ERROR))
    }

    /// From a JSON value: an integer (a float such as `5.0` or a string is refused).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ParseError> {
        value.as_u64().ok_or_else(|| ParseError::new(Self::ERROR)).and_then(Self::new)
    }

    pub fn per_second(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_that_echoes_a_header_value_is_redacted() {
        let headers = CustomHeaders::parse([("Authorization", "Bearer abc123"), ("X-Tenant", "abc")]).unwrap().unwrap();

        let head = headers.redact("HTTP/1.1 400\r\nx-echo: Bearer abc123\r\n\r\n{\"tenant\":\"abc\"}");

        assert_eq!(head, "HTTP/1.1 400\r\nx-echo: [REDACTED]\r\n\r\n{\"tenant\":\"[REDACTED]\"}");
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<CustomHeaders>, ParseError> {
        CustomHeaders::parse(pairs.iter().copied())
    }

    #[test]
    fn headers_keep_their_names_and_order_and_hide_their_values_in_debug() {
        let headers = parse(&[("X-Tenant", "42"), ("Authorization", "Bearer abc-secret")]).unwrap().unwrap();

        let printed = format!("{headers:?}");

        assert_eq!(headers.names(), ["X-Tenant", "Authorization"]);
        assert!(!printed.contains("abc-secret") && !printed.contains("42"), "{printed}");
        assert!(printed.contains("REDACTED") && printed.contains("Authorization"));
    }

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for name in [
            "Content-Type",
            "content-length",
            "HOST",
            "User-Agent",
            "Transfer-Encoding",
            "Connection",
            "X-OneFuzz-Digest",
            "webhook-signature",
            "Webhook-Id",
            "WEBHOOK-anything",
        ] {
            let err = parse(&[(name, "v")]).unwrap_err();
            assert!(err.0.starts_with("headers") && err.0.contains(name) && err.0.contains("reserved"), "{err}");
        }
        assert!(parse(&[("Webhook", "v")]).is_ok(), "only the webhook- prefix is reserved");
    }

    #[test]
    fn bad_values_are_refused_without_being_echoed() {
        for value in ["secret\r\nX-Injected: 1", "secret\nx", "secret\0", "secret\ttab", "", "sécret"] {
            let err = parse(&[("X-Key", value)]).unwrap_err();
            assert!(err.0.starts_with("headers.X-Key:"), "{err}");
            assert!(!err.0.contains("secret"), "{err}");
        }
        let long = "v".repeat(MAX_HEADER_VALUE_CHARS + 1);
        assert!(parse(&[("X-Key", &long)]).unwrap_err().0.contains("1 to 1024"));
        assert!(parse(&[("X-Key", &"v".repeat(MAX_HEADER_VALUE_CHARS))]).is_ok());
        assert!(parse(&[("X-Key", "a value with spaces ~!")]).is_ok());
    }

    #[test]
    fn names_must_be_short_http_tokens() {
        for name in ["", "X Key", "X:Key", "X-Ké", "X\r\nY", "(x)"] {
            assert!(parse(&[(name, "v")]).unwrap_err().0.contains("not a valid header name"), "{name:?}");
        }
        let long = "X".repeat(MAX_HEADER_NAME_CHARS + 1);
        let err = parse(&[(&long, "v")]).unwrap_err();
        assert!(err.0.len() < 200, "{err}");
        assert!(parse(&[(&"X".repeat(MAX_HEADER_NAME_CHARS), "v")]).is_ok());
    }

    #[test]
    fn at_most_twenty_headers_and_no_name_twice() {
        let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();

        assert!(CustomHeaders::parse(pairs[..MAX_HEADERS].iter().copied()).is_ok());
        assert!(CustomHeaders::parse(pairs.iter().copied()).unwrap_err().0.contains("at most 20"));
        assert!(parse(&[("X-A", "1"), ("x-a", "2")]).unwrap_err().0.contains("twice"));
        assert_eq!(parse(&[]).unwrap(), None);
    }

    #[test]
    fn a_rate_limit_is_a_whole_number_from_1_to_10000() {
        use serde_json::json;

        assert_eq!(RateLimit::from_json(&json!(1)).unwrap().per_second(), 1);
        assert_eq!(RateLimit::from_json(&json!(10_000)).unwrap().per_second(), 10_000);
        for bad in [json!(0), json!(10_001), json!(-1), json!(2.5), json!(5.0), json!("5"), json!(u64::MAX)] {
            let err = RateLimit::from_json(&bad).unwrap_err();
            assert!(err.0.starts_with("rate_limit_per_second:"), "{bad}: {err}");
        }
    }
}
