//! The `webhooks` binary end to end: `serve` on a temp dir and a free port, driven by the
//! client verbs, with `listen` as the receiver.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_webhooks");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process whose stdout lines are collected; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::null()).env_remove("WEBHOOKS_API_TOKEN");
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stdout line containing `text`; returns every line seen so far.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line);
                if self.seen.last().is_some_and(|l| l.contains(text)) {
                    return self.seen.join("\n");
                }
            }
        }
        panic!("no line with {text:?}; saw:\n{}", self.seen.join("\n"));
    }

    fn interrupt_and_wait(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop after Ctrl-C");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut server = Running::spawn(&["serve", "--listen", &listen, "--data-dir", dir.to_str().expect("dir")], envs);
    server.wait_for("listening on");
    server
}

fn cli(port: u16, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WEBHOOKS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env_remove("WEBHOOKS_API_TOKEN")
        .output()
        .expect("run cli")
}

fn json_ok(port: u16, args: &[&str]) -> Value {
    let output = cli(port, args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    let indents: Vec<usize> = stdout.lines().map(|l| l.len() - l.trim_start().len()).filter(|n| *n > 0).collect();
    assert!(
        indents.iter().all(|n| n % 4 == 0) && (indents.is_empty() || indents.contains(&4)),
        "4-space indents: {stdout}"
    );
    serde_json::from_str(&stdout).expect("stdout is JSON")
}

fn keys(value: &Value) -> Vec<&str> {
    value.as_object().expect("object").keys().map(String::as_str).collect()
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn every_verb_works_against_a_local_server_with_the_seed_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, listen_port) = (free_port(), free_port());
    let _server = serve(dir.path(), port, &[]);
    let mut listener = Running::spawn(&["listen", "--port", &listen_port.to_string(), "--secret", "s3cret"], &[]);
    listener.wait_for("listening on");
    let url = format!("http://127.0.0.1:{listen_port}/hook");

    let created = json_ok(port, &["create", "MYWEBHOOK", &url, "task_created", "--secret_token", "s3cret"]);
    let id = created["webhook_id"].as_str().expect("id").to_owned();
    let listed = json_ok(port, &["list"]);
    let got = json_ok(port, &["get", &id[..8]]);
    let updated = json_ok(port, &["update", &id, "--event_types", "task_created", "task_failed"]);
    let pinged = json_ok(port, &["ping", &id]);
    let seen = listener.wait_for("VERIFIED");
    let examples: Value =
        serde_json::from_str(include_str!("../../shared/data/event-examples.json")).expect("examples");
    let event_path = dir.path().join("task_failed.json");
    std::fs::write(&event_path, examples["task_failed"].to_string()).expect("write event");
    let published = json_ok(port, &["publish", "task_failed", "--event", &format!("@{}", event_path.display())]);
    listener.wait_for(published["event_id"].as_str().expect("event id"));
    assert!(wait_until(|| json_ok(port, &["logs", &id])
        .as_array()
        .is_some_and(|a| a.len() == 2 && a.iter().all(|e| e["state"] == "succeeded"))));
    let logs = json_ok(port, &["logs", &id]);
    let event_id = logs[0]["event_id"].as_str().expect("event id").to_owned();
    let redelivered = json_ok(port, &["redeliver", &id, &event_id]);
    let recovered = json_ok(port, &["recover", &id, "--since", "2020-01-01T00:00:00Z"]);
    let deleted = json_ok(port, &["delete", &id]);

    assert_eq!(keys(&created), ["webhook_id", "name", "event_types"]);
    assert_eq!(created["event_types"], serde_json::json!(["task_created"]));
    assert_eq!(listed, serde_json::json!([created]));
    assert_eq!(got["url"], url.as_str());
    assert_eq!(keys(&updated), ["webhook_id", "name", "event_types"]);
    assert_eq!(updated["event_types"], serde_json::json!(["task_created", "task_failed"]));
    assert_eq!(keys(&pinged), ["ping_id"]);
    assert!(seen.contains("VERIFIED: X-Onefuzz-Digest: verified; webhook-signature: verified"), "{seen}");
    assert_eq!(keys(&published), ["event_id"]);
    assert_eq!(logs[0]["event_type"], "task_failed", "newest first");
    assert_eq!(redelivered["event_id"], event_id.as_str());
    assert_eq!(recovered, serde_json::json!({"queued": 0}));
    assert_eq!(deleted, serde_json::json!({"result": true}));
    assert_eq!(json_ok(port, &["list"]), serde_json::json!([]));
}

#[test]
fn bad_input_exits_1_with_the_problem_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = serve(dir.path(), port, &[]);

    let unknown_type = cli(port, &["create", "n", "https://example.com", "tsk_created"]);
    let bad_url = cli(port, &["create", "n", "ftp://example.com", "task_created"]);
    let missing = cli(port, &["get", "00000000"]);

    assert_eq!(unknown_type.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown_type.stderr).trim(),
        "error: INVALID_REQUEST: unknown event type: tsk_created (did you mean task_created?)"
    );
    assert_eq!(bad_url.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("url: scheme must be http or https"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no webhook id starts with 00000000"));
    assert!(unknown_type.stdout.is_empty());
}

#[test]
fn a_restart_keeps_webhooks_logs_and_pending_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, receiver_port) = (free_port(), free_port());
    let retry = [("RETRY_SCHEDULE", "3,3,3,3")];
    let mut server = serve(dir.path(), port, &retry);
    let url = format!("http://127.0.0.1:{receiver_port}/hook");
    let id = json_ok(port, &["create", "hook", &url, "ping", "--secret_token", "s3cret"])["webhook_id"]
        .as_str()
        .expect("id")
        .to_owned();
    json_ok(port, &["ping", &id]);
    // Nothing listens yet: the first attempt is refused and a retry is scheduled.
    assert!(wait_until(|| json_ok(port, &["logs", &id])[0]["state"] == "retrying"));
    server.interrupt_and_wait();

    let mut receiver = Running::spawn(&["listen", "--port", &receiver_port.to_string(), "--secret", "s3cret"], &[]);
    receiver.wait_for("listening on");
    let _restarted = serve(dir.path(), port, &retry);
    let seen = receiver.wait_for("VERIFIED");

    assert!(seen.contains("VERIFIED: X-Onefuzz-Digest: verified"), "{seen}");
    assert_eq!(json_ok(port, &["get", &id])["webhook_id"], id.as_str());
    assert!(wait_until(|| json_ok(port, &["logs", &id])[0]["state"] == "succeeded"));
    assert_eq!(json_ok(port, &["logs", &id])[0]["try_count"], 2);
}

#[test]
fn listen_reports_a_tampered_body_as_not_verified() {
    let port = free_port();
    let mut listener = Running::spawn(&["listen", "--port", &port.to_string(), "--secret", "s3cret"], &[]);
    listener.wait_for("listening on");
    let body = br#"{"event_type":"ping"}"#;
    let signature = webhooks::signing::standard_signature(
        &webhooks::domain::SecretToken::parse("s3cret").expect("secret"),
        "msg_1",
        1700000000,
        body,
    );
    let digest =
        webhooks::signing::onefuzz_digest(&webhooks::domain::SecretToken::parse("s3cret").expect("secret"), body);
    let post = |payload: &[u8]| {
        post_raw(
            port,
            payload,
            &[
                ("x-onefuzz-digest", &digest),
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", "1700000000"),
                ("webhook-signature", &signature),
            ],
        )
    };

    post(body);
    let good = listener.wait_for("VERIFIED");
    post(br#"{"event_type":"pong"}"#);
    let bad = listener.wait_for("NOT VERIFIED");

    assert!(
        good.lines().any(|l| l.trim() == "VERIFIED: X-Onefuzz-Digest: verified; webhook-signature: verified"),
        "{good}"
    );
    assert!(bad.contains("NOT VERIFIED: X-Onefuzz-Digest: NOT verified; webhook-signature: NOT verified"), "{bad}");
}

/// One HTTP/1.1 POST over a plain socket; returns the status line.
fn post_raw(port: u16, body: &[u8], headers: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!(
        "POST /hook HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn verify_checks_a_saved_delivery_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, br#"{"a":1}"#).expect("write");
    let secret = webhooks::domain::SecretToken::parse("s3cret").expect("secret");
    let digest = webhooks::signing::onefuzz_digest(&secret, br#"{"a":1}"#);
    let body_arg = format!("@{}", body_path.display());
    let digest_header = format!("X-Onefuzz-Digest: {digest}");

    let good = Command::new(BIN)
        .args(["verify", "--secret", "s3cret", "--body", &body_arg, "--header", &digest_header])
        .output()
        .expect("run");
    let bad = Command::new(BIN)
        .args(["verify", "--secret", "wrong", "--body", &body_arg, "--header", &digest_header])
        .output()
        .expect("run");

    assert!(good.status.success());
    assert!(String::from_utf8_lossy(&good.stdout).contains("X-Onefuzz-Digest: verified"));
    assert_eq!(bad.status.code(), Some(1));
}

/// One HTTP/1.1 POST on a fresh connection announcing `content_length` and sending `body`;
/// the status code of the answer. Tests send no more than the server reads: a server closing
/// with unread bytes resets the connection, and the client may lose the answer.
fn post_status(port: u16, token: Option<&str>, content_length: usize, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // A server waiting for a body it was never sent fails the test instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /webhooks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(body).expect("body");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[test]
fn with_a_token_set_serve_answers_401_before_reading_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = serve(dir.path(), port, &[("WEBHOOKS_API_TOKEN", "local-token")]);
    let too_large = webhooks::api::MAX_BODY_BYTES + 1;
    let oversized = vec![b' '; too_large];
    let small = br#"{"name": "n", "url": "http://127.0.0.1:9/", "event_types": ["ping"]}"#;

    // Without the token, the answer comes before any of the body is sent.
    assert_eq!(post_status(port, None, too_large, b""), 401);
    assert_eq!(post_status(port, Some("wrong"), small.len(), small), 401);
    assert_eq!(post_status(port, Some("local-token"), too_large, &oversized), 413);
    assert_eq!(post_status(port, Some("local-token"), small.len(), small), 201);
}

#[test]
fn serve_refuses_a_public_listen_address_without_a_token() {
    let output = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir", "/nonexistent/never-created"])
        .env_remove("WEBHOOKS_API_TOKEN")
        .output()
        .expect("run");

    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("without WEBHOOKS_API_TOKEN"));
}

#[test]
fn every_verb_has_help_and_completions_are_generated() {
    for verb in [
        "serve",
        "create",
        "list",
        "get",
        "update",
        "delete",
        "ping",
        "logs",
        "publish",
        "redeliver",
        "recover",
        "event-types",
        "listen",
        "verify",
    ] {
        let output = Command::new(BIN).args([verb, "--help"]).output().expect("run");
        assert!(output.status.success() && !output.stdout.is_empty(), "{verb}");
    }
    let bash = Command::new(BIN).args(["completions", "bash"]).output().expect("run");
    assert!(String::from_utf8_lossy(&bash.stdout).contains("webhooks"));
}

#[test]
fn headers_rate_limits_and_the_wildcard_are_set_replaced_and_cleared_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = serve(dir.path(), port, &[]);

    let created = json_ok(
        port,
        &[
            "create",
            "opts",
            "https://example.com/hook",
            "*",
            "delivery_failed",
            "--header",
            "Authorization: Bearer CLIVALUE-1",
            "-H",
            "X-Tenant:42",
            "--rate_limit_per_second",
            "25",
        ],
    );
    let id = created["webhook_id"].as_str().expect("id").to_owned();
    let got = json_ok(port, &["get", &id]);
    json_ok(port, &["update", &id, "--header", "X-Other: CLIVALUE-2", "--rate-limit-per-second", "10000"]);
    let replaced = json_ok(port, &["get", &id]);
    json_ok(port, &["update", &id, "--name", "renamed"]);
    let kept = json_ok(port, &["get", &id]);
    json_ok(port, &["update", &id, "--clear_headers", "--clear_rate_limit"]);
    let cleared = json_ok(port, &["get", &id]);

    assert_eq!(created["event_types"], serde_json::json!(["*", "delivery_failed"]));
    assert_eq!(got["header_names"], serde_json::json!(["Authorization", "X-Tenant"]));
    assert_eq!(got["rate_limit_per_second"], 25);
    assert!(!got.to_string().contains("CLIVALUE"), "{got}");
    assert_eq!(replaced["header_names"], serde_json::json!(["X-Other"]));
    assert_eq!(replaced["rate_limit_per_second"], 10000);
    assert_eq!(kept["header_names"], serde_json::json!(["X-Other"]));
    assert!(cleared.get("header_names").is_none() && cleared.get("rate_limit_per_second").is_none(), "{cleared}");
}

#[test]
fn bad_headers_and_rate_limits_exit_1_naming_them_without_echoing_a_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = serve(dir.path(), port, &[]);
    let create = |extra: &[&str]| {
        let mut args = vec!["create", "n", "https://example.com", "ping"];
        args.extend_from_slice(extra);
        cli(port, &args)
    };

    let reserved = create(&["--header", "Host: CLISECRET"]);
    let no_colon = create(&["--header", "CLISECRET"]);
    let twice = create(&["--header", "X-A: 1", "--header", "x-a: CLISECRET"]);
    let zero = create(&["--rate_limit_per_second", "0"]);
    let too_high = create(&["--rate_limit_per_second", "10001"]);
    let both = cli(port, &["update", "00000000", "--header", "X-A: 1", "--clear_headers"]);

    for (output, expected) in [
        (&reserved, "INVALID_REQUEST: headers.Host: a reserved header name"),
        (&no_colon, "--header #1: expected 'Name: value'"),
        (&twice, "--header #2: x-a is given twice"),
        (&zero, "rate_limit_per_second: must be a whole number from 1 to 10000"),
        (&too_high, "rate_limit_per_second: must be a whole number from 1 to 10000"),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("CLISECRET"), "{stderr}");
    }
    assert!(!both.status.success(), "--header and --clear_headers conflict");
    assert_eq!(json_ok(port, &["list"]), serde_json::json!([]), "nothing was stored");
}

#[test]
fn event_types_lists_the_catalog_and_shows_one_types_schema_and_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = serve(dir.path(), port, &[]);

    let listed = json_ok(port, &["event-types"]);
    let ping = json_ok(port, &["event-types", "ping"]);
    let unknown = cli(port, &["event-types", "tsk_created"]);

    let names: Vec<&str> =
        listed.as_array().expect("array").iter().map(|t| t["name"].as_str().expect("name")).collect();
    assert_eq!(names.len(), 30);
    assert_eq!(names[0], "crash_reported");
    assert_eq!(&names[28..], ["webhook_disabled", "delivery_failed"]);
    assert_eq!(listed[29]["operational"], true);
    assert_eq!(ping["schema"]["required"], serde_json::json!(["ping_id"]));
    assert!(ping["example"]["ping_id"].is_string(), "{ping}");
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "error: UNABLE_TO_FIND: unknown event type: tsk_created (did you mean task_created?)"
    );
}
