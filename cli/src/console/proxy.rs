//! `webhooks console`: the console on loopback for a deployed stack. The browser talks only to
//! this process; API calls are forwarded to `--endpoint` through the CLI's own client, which
//! signs them with SigV4 from the standard AWS credential chain. No credential, signature or
//! upstream header reaches the browser: only the status, the content type and the body.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use webhooks::api::MAX_BODY_BYTES;

use crate::args::{ConsoleOptions, Remote};
use crate::client::Client;

/// The first path segments of the public API routes; nothing else is forwarded.
const FORWARDED: &[&str] = &["webhooks", "events", "event-types", "api"];

struct Proxy {
    client: Client,
    /// The `Host` a request from our own page carries (`127.0.0.1:PORT`, `localhost:PORT`).
    hosts: Vec<String>,
}

pub async fn run(remote: &Remote, options: ConsoleOptions) -> Result<(), String> {
    if !options.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to serve the console on {}: it forwards requests signed with your AWS credentials, so it \
             listens on loopback only (for example --listen 127.0.0.1:8090)",
            options.listen
        ));
    }
    let client = Client::new(remote).await?;
    let listener =
        TcpListener::bind(options.listen).await.map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let port = bound.port();
    let hosts = vec![bound.to_string(), format!("localhost:{port}")];
    println!("webhooks console: listening on http://{bound}");
    println!("webhooks console: open http://{bound}{}", super::BASE);
    println!("webhooks console: forwarding API calls to {} {}", client.endpoint(), client.auth_kind());
    let proxy = Arc::new(Proxy { client, hosts });

    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    // As `serve` does: running out of file descriptors must cost neither a core nor the log.
    let mut backoff = crate::serve::AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let proxy = proxy.clone();
                            async move { Ok::<_, Infallible>(proxy.handle(request).await.map(Full::new)) }
                        });
                        if let Err(err) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    let pause = backoff.failed(&err);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        }
    }
    println!("webhooks console: stopped");
    Ok(())
}

impl Proxy {
    async fn handle(&self, request: hyper::Request<hyper::body::Incoming>) -> Response<Bytes> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        if let Some(response) = super::respond(&parts.method, path) {
            return response;
        }
        let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        if !FORWARDED.contains(&first) || path.split('/').any(is_dot_segment) {
            return problem(StatusCode::NOT_FOUND, "UNABLE_TO_FIND", 467, "no such route");
        }
        if let Err(detail) = self.check_own_page(&parts.headers) {
            return problem(StatusCode::FORBIDDEN, "UNAUTHORIZED", 457, detail);
        }
        let body = match Limited::new(body, MAX_BODY_BYTES + 1).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                let detail = format!("request body over {MAX_BODY_BYTES} bytes");
                return problem(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_REQUEST", 450, &detail);
            }
        };
        let target = parts.uri.path_and_query().map_or(path, |p| p.as_str());
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        self.forward(parts.method.clone(), target, content_type, body).await
    }

    /// Every forwarded call is signed with the operator's credentials, so only the console's
    /// own page may make one: another site in the same browser (a cross-site form post, a
    /// DNS-rebound name) is refused before anything is signed.
    fn check_own_page(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let host = value("host").unwrap_or_default();
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err("the console proxy answers only requests addressed to its loopback address");
        }
        if let Some(origin) = value("origin")
            && !origin.eq_ignore_ascii_case(&format!("http://{host}"))
        {
            return Err("the console proxy forwards only requests from its own page");
        }
        if let Some(site) = value("sec-fetch-site")
            && !matches!(site, "same-origin" | "none")
        {
            return Err("the console proxy forwards only requests from its own page");
        }
        Ok(())
    }

    async fn forward(&self, method: Method, target: &str, content_type: Option<&str>, body: Bytes) -> Response<Bytes> {
        let answer = match self.client.send(method, target, content_type, body.to_vec()).await {
            Ok(answer) => answer,
            Err(detail) => return problem(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", 502, &detail),
        };
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(err) => {
                let detail = format!("cannot read the answer from {}: {err}", self.client.endpoint());
                return problem(StatusCode::BAD_GATEWAY, "BAD_GATEWAY", 502, &detail);
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if let Some(content_type) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `.` and `..`, spelled as URL parsers read them: the upstream URL would lose them, and with
/// them the check on the first segment.
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

fn problem(status: StatusCode, title: &str, code: u16, detail: &str) -> Response<Bytes> {
    let body = json!({ "title": title, "status": status.as_u16(), "detail": detail, "code": code, "errors": [detail] });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_recognised_however_they_are_spelled() {
        for segment in [".", "..", "%2e", "%2E%2e", ".%2E"] {
            assert!(is_dot_segment(segment), "{segment}");
        }
        for segment in ["", "webhooks", "...", "%2e%2e%2e", "a.b"] {
            assert!(!is_dot_segment(segment), "{segment}");
        }
    }
}
