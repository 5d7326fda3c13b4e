//! Cold start: from exec to the binary's first `GET .../invocation/next` on a stub Runtime
//! API, the moment Lambda would hand it its first event. Median of several runs, with the
//! binary's size.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::process::percentile;

pub async fn run(dir: &Path, runs: usize, binaries: &[String]) -> Result<(), String> {
    for name in binaries {
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
        let mut timings_ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            timings_ms.push(time_to_first_poll(&path).await?.as_secs_f64() * 1000.0);
        }
        timings_ms.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({
                "binary": name,
                "cold_init_median_ms": percentile(&timings_ms, 0.5),
                "cold_init_min_ms": timings_ms.first().copied().unwrap_or_default(),
                "size_mib": size as f64 / (1024.0 * 1024.0),
            })
        );
    }
    Ok(())
}

async fn time_to_first_poll(binary: &Path) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let api = listener.local_addr().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", api.to_string().as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("TABLE_NAME", "bench"),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/000000000000/events"),
            ("DEAD_LETTER_QUEUE_URL", "http://127.0.0.1:9/000000000000/dlq"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut buffer = [0u8; 256];
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        let request = String::from_utf8_lossy(&buffer[..read]);
        if request.contains("/runtime/invocation/next") {
            Ok(started.elapsed())
        } else {
            Err(format!("unexpected first request: {request}"))
        }
    })
    .await;
    let _ = child.kill().await;
    waited.map_err(|_| format!("{} never polled the Runtime API", binary.display()))?
}
