//! Logging set-up: JSON lines in Lambda (CloudWatch reads fields), readable text locally. Log
//! lines must not be forgeable by clients: values are escaped (JSON does it; the text format
//! here escapes control characters), and client-supplied values are cut short with
//! [`client_value`] wherever they are logged or echoed.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Longest client-supplied value kept whole in an error detail or a log field.
pub const MAX_CLIENT_VALUE_CHARS: usize = 128;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// JSON logs without ANSI colours or timestamps (Lambda adds its own).
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        // The current span's fields (webhook_id, event_id, attempt) on every line, flat.
        .with_current_span(true)
        .with_span_list(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .log_internal_errors(false)
        .try_init();
}

/// Human-readable logs on stderr, for local mode and the CLI: colour only on a terminal, and
/// every field's control characters escaped, so a value cannot end a line or move the cursor.
pub fn init_local() {
    let fields = debug_fn(|writer: &mut Writer<'_>, field: &Field, value: &dyn std::fmt::Debug| {
        let text = escape_controls(&format!("{value:?}"));
        if field.name() == "message" { writer.write_str(&text) } else { write!(writer, "{}={text}", field.name()) }
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(fields)
        // A log that cannot be written (its disk is full) is skipped: reporting that with
        // `eprintln!` would panic, and kill whichever thread was logging (the store's).
        .log_internal_errors(false)
        .try_init();
}

/// `text` with every control character (newline, carriage return, escape, …) written as an
/// escape sequence, so it stays on one line and sends no terminal commands.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    escaped
}

/// A client-supplied value as it may appear in an error detail or a log field: control
/// characters escaped, and at most [`MAX_CLIENT_VALUE_CHARS`] characters, then `…`.
pub fn client_value(value: &str) -> String {
    truncate_chars(&escape_controls(value), MAX_CLIENT_VALUE_CHARS)
}

/// At most `max` characters of `text`, with `…` in place of the rest.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_a_value_cannot_forge_a_log_line() {
        assert_eq!(escape_controls("a\nINFO forged\r\u{1b}[31mred\u{7}"), "a\\nINFO forged\\r\\u{1b}[31mred\\u{7}");
        assert_eq!(escape_controls("plain ü ✓"), "plain ü ✓");
    }

    #[test]
    fn a_long_client_value_is_cut_to_128_characters_and_an_ellipsis() {
        let long = "é".repeat(200_000);

        let kept = client_value(&long);

        assert_eq!(kept.chars().count(), MAX_CLIENT_VALUE_CHARS + 1);
        assert!(kept.ends_with('…'));
        assert_eq!(client_value("short"), "short");
    }
}
