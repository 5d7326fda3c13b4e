//! `webhooks serve` end to end, as a separate process measured from outside: `task_created`
//! events posted to `/events`, fanned out to subscribers on an in-process loopback receiver.
//!
//! - `live`: publishers post as fast as the server answers; the figure is the server's CPU
//!   seconds per 1 000 deliveries, with publish→delivered latency and the backlog it built.
//! - `backlog`: the events are queued in the store while the server is stopped, then it starts
//!   with every delivery pending; the figures are its peak RSS and drain rate.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use uuid::Uuid;
use webhooks::Config;
use webhooks::events::parse_event_message;
use webhooks::queue::{LocalQueue, Queue, QueueMessage};
use webhooks::store::{EmbeddedStore, LocalTasks};

use crate::process::percentile;

/// Publish times by event id, and what the receiver saw.
#[derive(Default)]
struct Tally {
    published: Mutex<HashMap<String, Instant>>,
    published_count: AtomicUsize,
    delivered: AtomicUsize,
    latencies_ms: Mutex<Vec<f64>>,
}

pub async fn run(bin: &str, backlog: bool, events: usize, subscribers: usize, publishers: usize) -> Result<(), String> {
    let tally = Arc::new(Tally::default());
    let receiver_port = receive(tally.clone()).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port()?;
    let mut server = Server::start(bin, dir.path(), port)?;
    let api = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for n in 0..subscribers {
        let hook = json!({"name": format!("bench-{n}"), "url": format!("http://127.0.0.1:{receiver_port}/hook"), "event_types": ["task_created"]});
        let created = client
            .post(format!("{api}/webhooks"))
            .header("content-type", "application/json")
            .body(hook.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if created.status() != 201 {
            return Err(format!("create webhook: {}", created.status()));
        }
    }
    let total = events * subscribers;
    let payload = task_created();
    let started;
    let publish_ended: Option<Duration>;
    if backlog {
        server.stop()?;
        queue_offline(dir.path(), events, &payload, &tally).await?;
        started = Instant::now();
        server = Server::start(bin, dir.path(), port)?;
        publish_ended = Some(Duration::ZERO);
        server.peak.delivered_at_publish_end = Some(0);
    } else {
        started = Instant::now();
        let publish = publish(&client, &api, events, publishers, &payload, &tally);
        tokio::pin!(publish);
        let mut peak = Sample::default();
        loop {
            tokio::select! {
                result = &mut publish => { result?; break; }
                _ = tokio::time::sleep(Duration::from_millis(100)) => peak.take(&tally, subscribers),
            }
        }
        publish_ended = Some(started.elapsed());
        peak.delivered_at_publish_end = Some(tally.delivered.load(Ordering::Relaxed));
        server.peak = peak;
    }
    let mut peak = std::mem::take(&mut server.peak);
    let deadline = Instant::now() + Duration::from_secs(600);
    while tally.delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak.take(&tally, subscribers);
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu_seconds();
    let peak_rss = server.status_mib("VmHWM:");
    let delivered = tally.delivered.load(Ordering::Relaxed);
    let mut latencies = tally.latencies_ms.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    let publish_seconds = publish_ended.unwrap_or_default().as_secs_f64();
    let drain_seconds = (elapsed.as_secs_f64() - publish_seconds).max(0.001);
    let delivered_in_drain = delivered.saturating_sub(peak.delivered_at_publish_end.unwrap_or(0));
    println!(
        "{}",
        json!({
            "mode": if backlog { "serve-backlog" } else { "serve-live" },
            "events": events,
            "subscribers": subscribers,
            "publishers": publishers,
            "deliveries": total,
            "delivered": delivered,
            "seconds": elapsed.as_secs_f64(),
            "per_second": delivered as f64 / elapsed.as_secs_f64(),
            "publish_seconds": publish_seconds,
            "serve_cpu_seconds": cpu,
            "cpu_seconds_per_1000": cpu / (delivered.max(1) as f64 / 1000.0),
            "peak_rss_mib": peak_rss,
            "peak_pending": if backlog { total } else { peak.pending },
            "latency_p50_ms": percentile(&latencies, 0.5),
            "latency_p99_ms": percentile(&latencies, 0.99),
            "drain_per_second": delivered_in_drain as f64 / drain_seconds,
        })
    );
    server.stop()?;
    Ok(())
}

#[derive(Default)]
struct Sample {
    pending: usize,
    delivered_at_publish_end: Option<usize>,
}

impl Sample {
    fn take(&mut self, tally: &Tally, subscribers: usize) {
        let published = tally.published_count.load(Ordering::Relaxed) * subscribers;
        let delivered = tally.delivered.load(Ordering::Relaxed);
        self.pending = self.pending.max(published.saturating_sub(delivered));
    }
}

fn task_created() -> Value {
    json!({
        "config": {"containers": [{"name": "my-setup", "type": "setup"}, {"name": "my-inputs", "type": "inputs"}, {"name": "my-crashes", "type": "crashes"}],
                   "job_id": "00000000-0000-0000-0000-000000000000", "tags": {},
                   "task": {"check_debugger": true, "duration": 1, "target_env": {}, "target_exe": "fuzz.exe", "target_options": [], "type": "libfuzzer_fuzz"}},
        "job_id": "00000000-0000-0000-0000-000000000000",
        "task_id": "00000000-0000-0000-0000-000000000000",
        "user_info": {"application_id": "00000000-0000-0000-0000-000000000000", "object_id": "00000000-0000-0000-0000-000000000000", "upn": "example@contoso.com"}
    })
}

async fn publish(
    client: &reqwest::Client,
    api: &str,
    events: usize,
    publishers: usize,
    payload: &Value,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..publishers)
        .map(|_| {
            let (client, url, next, tally) = (client.clone(), format!("{api}/events"), next.clone(), tally.clone());
            let payload = payload.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < events {
                    // The id is chosen here, so the receiver can tell the latency of each.
                    let id = Uuid::new_v4().to_string();
                    let body = json!({"event_type": "task_created", "event_id": id, "event": payload}).to_string();
                    if let Ok(mut published) = tally.published.lock() {
                        published.insert(id, Instant::now());
                    }
                    let sent = client.post(&url).header("content-type", "application/json").body(body).send().await;
                    match sent {
                        Ok(response) if response.status() == 202 => {
                            tally.published_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => return Err(format!("publish: {}", response.status())),
                        Err(err) => return Err(format!("publish: {err}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Queues `events` events in the stopped server's store, as `POST /events` would.
async fn queue_offline(dir: &std::path::Path, events: usize, payload: &Value, tally: &Tally) -> Result<(), String> {
    let store = EmbeddedStore::open(dir).map_err(|e| e.to_string())?;
    let queue = LocalQueue::new(LocalTasks::new(&store));
    let defaults = Config::default().ingest_defaults();
    let now = Utc::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let sends = chunk.iter().map(|_| {
            let message = json!({"event_type": "task_created", "event": payload});
            let envelope = parse_event_message(message, Uuid::new_v4(), &defaults, now);
            let queue = queue.clone();
            async move {
                let envelope = envelope.map_err(|e| e.0)?;
                let id = envelope.event_id.to_string();
                queue.send(&QueueMessage::Event(envelope), Duration::ZERO).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(id)
            }
        });
        for id in futures_util::future::join_all(sends).await {
            let id = id?;
            if let Ok(mut published) = tally.published.lock() {
                published.insert(id, Instant::now());
            }
            tally.published_count.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The receiver: 200 at once, noting each delivery's latency from its event's publish.
async fn receive(tally: Arc<Tally>) -> Result<u16, String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let tally = tally.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let tally = tally.clone();
                    async move {
                        let id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let _ = request.into_body().collect().await;
                        let published = id.and_then(|id| tally.published.lock().ok()?.get(&id).copied());
                        if let (Some(at), Ok(mut latencies)) = (published, tally.latencies_ms.lock()) {
                            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                        }
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(port)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

struct Server {
    child: Child,
    peak: Sample,
}

impl Server {
    fn start(bin: &str, dir: &std::path::Path, port: u16) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .env_remove("WEBHOOKS_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => return Err("serve exited before listening".into()),
            }
        }
        // Keeps reading, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, peak: Sample::default() })
    }

    fn stop(&mut self) -> Result<(), String> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else { return 0.0 };
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        [11, 12].iter().filter_map(|i| fields.get(*i)).filter_map(|f| f.parse::<f64>().ok()).sum::<f64>() / 100.0
    }

    fn status_mib(&self, field: &str) -> f64 {
        crate::process::status_mib(&format!("/proc/{}/status", self.child.id()), field)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
