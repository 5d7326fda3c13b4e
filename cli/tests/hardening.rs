//! `webhooks serve` under faults and abuse, as a process: killed with SIGKILL mid-delivery, a
//! full disk, slowloris clients, too few file descriptors, malformed bodies, and receivers
//! that fail in every way at once. Receivers are plain threads on loopback.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_webhooks");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `webhooks serve` process; stderr (the log) goes to a file. Killed on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, port: u16, envs: &[(&str, &str)]) -> Self {
        Self::start_with(&[], dir, port, envs)
    }

    /// `wrapper` runs the server (e.g. `prlimit --nofile=…`).
    fn start_with(wrapper: &[&str], dir: &Path, port: u16, envs: &[(&str, &str)]) -> Self {
        // Not on a disk a test fills, unless a test asks for that.
        let log = std::env::temp_dir().join(format!("webhooks-hardening-{}-{port}.log", std::process::id()));
        Self::start_logging_to(log, wrapper, dir, port, envs)
    }

    fn start_logging_to(log: PathBuf, wrapper: &[&str], dir: &Path, port: u16, envs: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let data_dir = dir.to_str().expect("dir");
        let serve = [BIN, "serve", "--listen", &listen, "--data-dir", data_dir];
        let mut words: Vec<&str> = wrapper.to_vec();
        words.extend(serve);
        let mut command = Command::new(words[0]);
        command
            .args(&words[1..])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .env_remove("WEBHOOKS_API_TOKEN")
            .env("RUST_LOG", "info");
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let (ready, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready.send(());
                }
            }
        });
        listening.recv_timeout(Duration::from_secs(20)).expect("serve did not start listening");
        Self { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU seconds (user + system) the process has used, from /proc.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("stat");
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// One request on a fresh connection; the status, headers (lowercase names) and body.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, HashMap<String, String>, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    raw(port, &[head.as_bytes(), body.as_bytes()].concat())
}

/// Sends `bytes` on a fresh connection and reads the answer to its end.
fn raw(port: u16, bytes: &[u8]) -> (u16, HashMap<String, String>, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    stream.write_all(bytes).expect("send");
    read_answer(stream)
}

fn read_answer(mut stream: TcpStream) -> (u16, HashMap<String, String>, Value) {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn create_webhook(port: u16, url: &str) -> String {
    let (status, _, body) =
        request(port, "POST", "/webhooks", Some(&json!({"name": "hook", "url": url, "event_types": ["ping"]})));
    assert_eq!(status, 201, "{body}");
    body["webhook_id"].as_str().expect("webhook_id").to_owned()
}

/// Publishes a ping event padded to about `pad` bytes; its id when accepted, and the answer.
fn publish(port: u16, pad: usize) -> (u16, HashMap<String, String>, Option<String>) {
    let event = json!({"event_type": "ping", "event": {"ping_id": uuid::Uuid::new_v4(), "pad": "x".repeat(pad)}});
    let (status, headers, body) = request(port, "POST", "/events", Some(&event));
    (status, headers, body["event_id"].as_str().map(str::to_owned))
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

/// How a receiver answers a delivery, chosen by the URL's path.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Ok,
    Status(u16),
    /// Holds the request, answering nothing, for this long.
    Hang(Duration),
    Reset,
    TooManyRequests,
    Redirect,
    /// 200 with a body sent a byte at a time, slowly.
    Trickle,
    /// 200 after this long.
    Slow(Duration),
}

/// A loopback receiver recording (path, event id) of each delivery it saw in full.
#[derive(Clone)]
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start(faults: &[(&'static str, Fault)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let faults: HashMap<&'static str, Fault> = faults.iter().copied().collect();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let faults = faults.clone();
                let record = record.clone();
                std::thread::spawn(move || answer(stream, &faults, &record));
            }
        });
        Self { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn events(&self, path: &str) -> HashSet<String> {
        self.seen.lock().expect("seen").iter().filter(|(p, _)| p == path).map(|(_, id)| id.clone()).collect()
    }
}

fn answer(mut stream: TcpStream, faults: &HashMap<&'static str, Fault>, seen: &Mutex<Vec<(String, String)>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
    let fault = faults.get(path.as_str()).copied().unwrap_or(Fault::Ok);
    if fault == Fault::Reset {
        // Closing with the rest of the request unread makes the kernel send a reset.
        return;
    }
    let (mut length, mut event_id) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "webhook-id" => event_id = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let reply: &[u8] = match fault {
        Fault::Hang(hold) => {
            std::thread::sleep(hold);
            return;
        }
        Fault::Status(410) => b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Fault::Status(_) => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
        Fault::TooManyRequests => {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Fault::Redirect => {
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Fault::Trickle => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\n");
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(250));
                if stream.write_all(b".").is_err() {
                    return;
                }
            }
            seen.lock().expect("seen").push((path, event_id));
            return;
        }
        Fault::Slow(wait) => {
            std::thread::sleep(wait);
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Fault::Ok | Fault::Reset => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    };
    seen.lock().expect("seen").push((path, event_id));
    let _ = stream.write_all(reply);
}

fn logs(port: u16, webhook_id: &str) -> Vec<Value> {
    let (_, _, body) = request(port, "GET", &format!("/webhooks/{webhook_id}/logs"), None);
    body["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_kill_9_mid_delivery_loses_nothing_and_a_restart_delivers_it_all_within_the_timeout_plus_45_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let paths = ["/slow0", "/slow1", "/slow2"];
    let slow = Fault::Slow(Duration::from_millis(300));
    let receiver = Receiver::start(&paths.map(|path| (path, slow)));
    let envs = [("DELIVERY_TIMEOUT_SECS", "5"), ("DELIVERY_CONCURRENCY", "8")];
    let mut server = Server::start(dir.path(), port, &envs);
    let hooks: Vec<String> = paths.iter().map(|path| create_webhook(port, &receiver.url(path))).collect();
    let accepted: Vec<String> = (0..60).filter_map(|_| publish(port, 0).2).collect();
    assert_eq!(accepted.len(), 60);
    let delivered = || paths.iter().map(|path| receiver.events(path).len()).sum::<usize>();
    assert!(wait_until(Duration::from_secs(20), || delivered() >= 10), "deliveries began");

    server.kill_9();
    let before_restart = delivered();
    let restarted_at = Instant::now();
    let _server = Server::start(dir.path(), port, &envs);
    let everything = accepted.iter().cloned().collect::<HashSet<_>>();
    let delivered_all =
        wait_until(Duration::from_secs(50), || paths.iter().all(|path| receiver.events(path) == everything));
    let took = restarted_at.elapsed();

    assert!(before_restart < accepted.len() * hooks.len(), "the kill came mid-delivery: {before_restart}");
    assert!(delivered_all, "every accepted event reaches every webhook; got {} of 180", delivered());
    for hook in &hooks {
        let succeeded = logs(port, hook).iter().filter(|e| e["state"] == "succeeded").count();
        assert!(succeeded >= 50, "each webhook's entries succeed (first page: {succeeded})");
    }
    assert!(took <= Duration::from_secs(50), "within DELIVERY_TIMEOUT_SECS + 45 s: {took:?}");
}

/// A tmpfs of `size`, unmounted on drop. The tests run as root (CI too): a failed mount fails.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", at.to_str().expect("path")])
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: this test needs root (CI runs as root)");
        Self(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_answers_503_with_retry_after_and_once_space_is_freed_every_accepted_event_is_delivered() {
    full_disk_then_space_again(false);
}

#[test]
fn a_log_on_the_full_disk_too_neither_stops_the_store_nor_loses_an_accepted_event() {
    full_disk_then_space_again(true);
}

fn full_disk_then_space_again(log_on_the_disk: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let disk_dir = root.path().join("disk");
    let _disk = SmallDisk::mount(&disk_dir, "8m");
    let data_dir = disk_dir.join("data");
    let port = free_port();
    let receiver = Receiver::start(&[]);
    let envs = [("DELIVERY_TIMEOUT_SECS", "2")];
    let _server = if log_on_the_disk {
        Server::start_logging_to(disk_dir.join("serve.log"), &[], &data_dir, port, &envs)
    } else {
        Server::start(&data_dir, port, &envs)
    };
    create_webhook(port, &receiver.url("/ok"));
    let mut accepted: Vec<String> = (0..5).filter_map(|_| publish(port, 100).2).collect();

    // Fills the disk but for a few KiB, then publishes until the store cannot write.
    let filler = disk_dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    let mut refused = None;
    for _ in 0..400 {
        let (status, headers, id) = publish(port, 20_000);
        match status {
            202 => accepted.extend(id),
            _ => {
                refused = Some((status, headers));
                break;
            }
        }
    }
    drop(file);
    std::fs::remove_file(&filler).expect("free the space");
    let after: Vec<String> = (0..5).filter_map(|_| publish(port, 100).2).collect();

    let (status, headers) = refused.expect("publishing to a full disk is refused at some point");
    assert_eq!(status, 503, "{headers:?}; log:\n{}", _server.log_text());
    assert!(headers.get("retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "{headers:?}");
    assert_eq!(after.len(), 5, "publishing works again once there is space");
    accepted.extend(after);
    let everything: HashSet<String> = accepted.into_iter().collect();
    let delivered = wait_until(Duration::from_secs(60), || receiver.events("/ok").is_superset(&everything));
    assert!(delivered, "every accepted event is delivered: {} of {}", receiver.events("/ok").len(), everything.len());
}

#[test]
fn slowloris_connections_do_not_keep_normal_requests_from_being_answered_and_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = Server::start(dir.path(), port, &[]);
    let mut held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.write_all(b"GET /webhooks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").expect("half a header");
            stream
        })
        .collect();

    let started = Instant::now();
    let (status, _, _) = request(port, "GET", "/webhooks", None);
    let answered_in = started.elapsed();
    std::thread::sleep(Duration::from_secs(11));
    let closed = held
        .iter_mut()
        .map(|stream| {
            stream.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
            let mut rest = Vec::new();
            // Closed: the end of the stream (perhaps after an error answer) or a reset. Still
            // open: the read times out.
            match stream.read_to_end(&mut rest) {
                Ok(_) => true,
                Err(err) => !matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            }
        })
        .filter(|closed| *closed)
        .count();

    assert_eq!(status, 200);
    assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
    assert_eq!(closed, held.len(), "every half-sent request is closed after the header-read timeout");
}

#[test]
fn out_of_file_descriptors_the_server_backs_off_without_spinning_logs_once_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start_with(&["prlimit", "--nofile=64:64", "--"], dir.path(), port, &[]);
    // Each held connection costs the server a descriptor: more than it has.
    let mut held: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = server.cpu_seconds();
    std::thread::sleep(Duration::from_secs(3));
    let cpu_used = server.cpu_seconds() - cpu_before;
    let failures_logged = server.log_text().lines().filter(|l| l.contains("accept failed")).count();
    held.clear();
    let recovered = wait_until(Duration::from_secs(15), || request(port, "GET", "/webhooks", None).0 == 200);

    assert!(cpu_used < 0.5, "backing off, not spinning: {cpu_used} CPU-s in 3 s");
    assert!((1..=3).contains(&failures_logged), "one line per burst, not per failure: {failures_logged}");
    assert!(recovered, "a new client is served once descriptors are free");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_a_malformed_body_is_400_and_only_an_oversized_one_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = Server::start(dir.path(), port, &[]);
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_port = free_port();
    let _guarded = Server::start(token_dir.path(), token_port, &[("WEBHOOKS_API_TOKEN", "t0ken")]);
    let get = |scheme: &str| {
        raw(
            token_port,
            format!("GET /webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} t0ken\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .0
    };

    let bad_chunks = raw(
        port,
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    );
    let short = {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        stream
            .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event_type\"")
            .expect("send");
        stream.shutdown(Shutdown::Write).expect("half close");
        read_answer(stream)
    };
    let oversized = {
        let body = vec![b' '; webhooks::api::MAX_BODY_BYTES + 1];
        let head = format!(
            "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        raw(port, &[head.as_bytes(), &body].concat())
    };

    assert_eq!((get("Bearer"), get("bearer"), get("BEARER"), get("Basic")), (200, 200, 200, 401));
    assert_eq!(bad_chunks.0, 400, "{:?}", bad_chunks.2);
    assert_eq!(short.0, 400, "{:?}", short.2);
    assert_eq!(oversized.0, 413, "{:?}", oversized.2);
}

#[test]
fn client_strings_reach_the_log_escaped_and_cut_short_and_a_huge_unknown_type_is_not_echoed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(dir.path(), port, &[]);
    let forged = "x\nINFO webhooks: forged line \u{1b}[31m";
    let huge = "y".repeat(200_000);

    let (forged_status, _, _) = request(port, "POST", "/events", Some(&json!({"event_type": forged, "event": {}})));
    let (huge_status, _, huge_body) = request(port, "POST", "/events", Some(&json!({"event_type": huge, "event": {}})));
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log_text();

    assert_eq!((forged_status, huge_status), (400, 400));
    assert!(!log.contains("\nINFO webhooks: forged line"), "{log}");
    assert!(!log.contains('\u{1b}'), "no escape sequences (nor colour) in a log that is a file");
    assert!(log.contains("forged line"), "the value is there, escaped: {log}");
    let detail = huge_body["detail"].as_str().expect("detail");
    assert!(detail.chars().count() < 300 && detail.ends_with('…'), "{detail}");
    assert!(log.len() < 20_000, "the log holds no 200 KB value: {} bytes", log.len());
}

#[test]
fn each_receiver_fault_stays_with_its_webhook_while_a_healthy_one_gets_everything_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let faults = [
        ("/e500", Fault::Status(500)),
        ("/hang", Fault::Hang(Duration::from_secs(8))),
        ("/reset", Fault::Reset),
        ("/429", Fault::TooManyRequests),
        ("/410", Fault::Status(410)),
        ("/redirect", Fault::Redirect),
        ("/trickle", Fault::Trickle),
    ];
    let receiver = Receiver::start(&faults);
    // Enough permits that the hanging and trickling attempts (2 s each) leave some free.
    let envs = [("DELIVERY_TIMEOUT_SECS", "2"), ("RETRY_SCHEDULE", "60"), ("DELIVERY_CONCURRENCY", "64")];
    let _server = Server::start(dir.path(), port, &envs);
    let faulty: Vec<(&str, String)> =
        faults.iter().map(|(path, _)| (*path, create_webhook(port, &receiver.url(path)))).collect();
    create_webhook(port, &receiver.url("/ok"));

    let started = Instant::now();
    let accepted: HashSet<String> = (0..20).filter_map(|_| publish(port, 0).2).collect();
    let healthy = wait_until(Duration::from_secs(10), || receiver.events("/ok") == accepted);
    let healthy_in = started.elapsed();
    let attempted = wait_until(Duration::from_secs(20), || {
        faulty.iter().all(|(path, id)| {
            let entries = logs(port, id);
            // A 410 disables the webhook: the events after it are not attempted.
            let all = entries.len() == accepted.len() || (*path == "/410" && !entries.is_empty());
            all && entries.iter().all(|e| e["try_count"].as_u64().unwrap_or(0) >= 1)
        })
    });

    assert!(healthy, "the healthy webhook got every event: {} of {}", receiver.events("/ok").len(), accepted.len());
    assert!(healthy_in < Duration::from_secs(10), "{healthy_in:?}");
    let summary: Vec<String> = faulty
        .iter()
        .map(|(path, id)| {
            let entries = logs(port, id);
            let tries: Vec<u64> = entries.iter().map(|e| e["try_count"].as_u64().unwrap_or(0)).collect();
            format!("{path}: {} entries, tries {tries:?}", entries.len())
        })
        .collect();
    assert!(attempted, "every faulty webhook's deliveries were attempted and logged: {summary:#?}");
    for (path, id) in &faulty {
        for entry in logs(port, id) {
            let first = &entry["attempts"][0];
            let expected = match *path {
                "/e500" => Some(500),
                "/429" => Some(429),
                "/410" => Some(410),
                "/redirect" => Some(302),
                _ => None,
            };
            if let Some(code) = expected {
                assert_eq!(first["status_code"], code, "{path}: {entry}");
            }
            if matches!(*path, "/hang" | "/reset") {
                assert!(first["error"].is_string(), "{path}: {entry}");
            }
            if *path != "/trickle" {
                assert_ne!(entry["state"], "succeeded", "{path}: {entry}");
            }
        }
    }
}

#[test]
fn sigterm_closes_idle_connections_at_once_and_leaves_the_backlog_for_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = Receiver::start(&[("/slow", Fault::Slow(Duration::from_millis(500)))]);
    let envs = [("DELIVERY_TIMEOUT_SECS", "3"), ("DELIVERY_CONCURRENCY", "2")];
    let mut server = Server::start(dir.path(), port, &envs);
    create_webhook(port, &receiver.url("/slow"));
    let accepted: HashSet<String> = (0..40).filter_map(|_| publish(port, 0).2).collect();
    // An idle keep-alive connection: one request answered, then nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.write_all(b"GET /webhooks HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("answer");

    let stopping = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    let exited = wait_until(Duration::from_secs(10), || matches!(server.child.try_wait(), Ok(Some(_))));
    let stopped_in = stopping.elapsed();
    let delivered_before = receiver.events("/slow").len();
    let _again = Server::start(dir.path(), port, &envs);
    let resumed = wait_until(Duration::from_secs(30), || receiver.events("/slow") == accepted);

    assert!(exited, "the server exits on SIGTERM");
    assert!(stopped_in < Duration::from_secs(3), "no waiting on idle connections nor the backlog: {stopped_in:?}");
    assert!(delivered_before < accepted.len(), "the backlog was left, not delivered at exit: {delivered_before}");
    assert!(resumed, "the next start delivers the rest: {} of {}", receiver.events("/slow").len(), accepted.len());
}
