//! The console's static serving through the real binary: `webhooks serve` redirects `/` to the
//! console, answers deep links with the app shell and assets with their types, 404s the rest
//! and keeps the API where it was; `webhooks console` refuses a non-loopback address.

#![allow(clippy::expect_used, reason = "helpers of a test: a failed expectation is a failed test")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_webhooks");

struct Serve {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .env_remove("WEBHOOKS_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("serve printed its address").expect("a line");
            if line.contains("listening on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self { child, port, _dir: dir }
    }

    /// One HTTP/1.1 request; the status, the lower-cased head and the body.
    fn request(&self, method: &str, path: &str) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        (status, head, raw[split + 4..].to_vec())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_redirects_the_root_to_the_console_and_answers_deep_links_with_the_app_shell() {
    let serve = Serve::start();

    let (status, head, _) = serve.request("GET", "/");
    assert_eq!(status, 302, "{head}");
    assert!(head.contains("\r\nlocation: /console/"), "{head}");
    let (status, head, _) = serve.request("GET", "/console");
    assert_eq!(status, 301, "{head}");
    assert!(head.contains("\r\nlocation: /console/"), "{head}");

    let (_, _, shell) = serve.request("GET", "/console/");
    for path in [
        "/console/",
        "/console/webhooks/6f1c2d7e-0000-4000-8000-000000000001",
        "/console/webhooks/6f1c2d7e-0000-4000-8000-000000000001/deliveries/0b0b0b0b-0000-4000-8000-000000000002",
    ] {
        let (status, head, body) = serve.request("GET", path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains("content-type: text/html; charset=utf-8"), "{path}: {head}");
        assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{path}: {head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{path}: {head}");
        assert_eq!(body, shell, "{path}");
    }
    let shell = String::from_utf8_lossy(&shell);
    assert!(shell.contains("<title>Webhooks console</title>"));
    assert!(shell.contains(r#"<script type="module" src="/console/assets/app.js"></script>"#));
}

#[test]
fn serve_answers_console_assets_with_their_content_types_and_unknown_ones_with_404() {
    let serve = Serve::start();

    for (path, content_type) in [
        ("/console/assets/app.js", "text/javascript; charset=utf-8"),
        ("/console/assets/pages.js", "text/javascript; charset=utf-8"),
        ("/console/assets/style.css", "text/css; charset=utf-8"),
        ("/console/assets/icon.svg", "image/svg+xml"),
    ] {
        let (status, head, body) = serve.request("GET", path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains(&format!("content-type: {content_type}")), "{path}: {head}");
        assert!(!body.is_empty(), "{path}");
    }
    for path in ["/console/assets/nope.js", "/console/assets/", "/console/settings", "/console/webhooks/a/b"] {
        let (status, head, _) = serve.request("GET", path);
        assert_eq!(status, 404, "{path}: {head}");
        assert!(head.contains("content-type: text/plain"), "{path}: {head}");
    }
    let (status, head, _) = serve.request("POST", "/console/");
    assert_eq!(status, 405, "{head}");
    assert!(head.contains("allow: get, head"), "{head}");
    let (status, head, body) = serve.request("HEAD", "/console/assets/app.js");
    assert_eq!((status, body.len()), (200, 0), "{head}");
}

#[test]
fn serve_keeps_the_api_beside_the_console() {
    let serve = Serve::start();

    let (status, head, body) = serve.request("GET", "/webhooks");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"items\""));
    let (status, head, _) = serve.request("POST", "/");
    assert_eq!(status, 404, "POST / is the API's (no route), not a redirect: {head}");
}

#[test]
fn the_console_command_refuses_a_non_loopback_listen_address() {
    let output = Command::new(BIN)
        .args(["console", "--endpoint", "http://127.0.0.1:9", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run console");

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve the console on 0.0.0.0:0") && stderr.contains("loopback"), "{stderr}");
}
