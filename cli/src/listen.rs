//! `webhooks listen`: a receiver on loopback that prints every delivery and says whether its
//! signatures verify, like `stripe listen`.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use webhooks::domain::SecretToken;

use crate::verify;

pub async fn run(port: u16, secret: Option<String>) -> Result<(), String> {
    let secret = secret.map(|s| SecretToken::parse(&s)).transpose().map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{bound}/ — use it as the webhook URL");
    if secret.is_none() {
        println!("no --secret given: signatures are shown but not checked");
    }
    flush();
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| format!("accept failed: {e}"))?;
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let secret = secret.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    report(&parts, &body, secret.as_ref());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn report(parts: &http::request::Parts, body: &[u8], secret: Option<&SecretToken>) {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    println!(
        "--> {} {} ({} bytes, webhook-id {})",
        parts.method,
        parts.uri.path(),
        body.len(),
        header("webhook-id").unwrap_or_default()
    );
    match secret {
        Some(secret) => {
            let verdict = verify::check(secret, body, header);
            let overall = if verdict.all_present_verify() { "VERIFIED" } else { "NOT VERIFIED" };
            println!("    {overall}: {}", verdict.describe());
        }
        None => println!("    signatures not checked"),
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(body)),
    }
    flush();
}

fn flush() {
    let _ = std::io::stdout().flush();
}
