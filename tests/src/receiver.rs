//! A real HTTP receiver on 127.0.0.1 that records every request and answers from a script.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request's headers arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Checks both signatures as a receiver would: recomputed from the received bytes with the
    /// HMAC primitives, not with the code under test.
    pub fn assert_signed(&self, secret: &str) {
        self.assert_digest(secret);
        self.assert_standard_signature(secret);
    }

    /// `X-Onefuzz-Digest`: lowercase hex HMAC-SHA512 of the body.
    pub fn assert_digest(&self, secret: &str) {
        use hmac::{Hmac, KeyInit, Mac};
        let mut sha512 = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).expect("key");
        sha512.update(&self.body);
        let expected = hex::encode(sha512.finalize().into_bytes());
        assert_eq!(self.header("x-onefuzz-digest"), Some(expected.as_str()), "X-Onefuzz-Digest");
    }

    /// `webhook-signature` holds `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` for
    /// this secret, and the timestamp is fresh.
    pub fn assert_standard_signature(&self, secret: &str) {
        use base64::Engine;
        use hmac::{Hmac, KeyInit, Mac};
        let id = self.header("webhook-id").expect("webhook-id");
        let timestamp = self.header("webhook-timestamp").expect("webhook-timestamp");
        let mut sha256 = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        sha256.update(format!("{id}.{timestamp}.").as_bytes());
        sha256.update(&self.body);
        let expected =
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(sha256.finalize().into_bytes()));
        let header = self.header("webhook-signature").expect("webhook-signature");
        assert!(header.split(' ').any(|s| s == expected), "{header} lacks {expected}");
        let sent_at: i64 = timestamp.parse().expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60, "stale webhook-timestamp {sent_at}");
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), delay: Duration::ZERO, body: String::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    connections: Arc<AtomicUsize>,
}

impl Receiver {
    /// Answers with `script` in order, then 200 to everything.
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let receiver = Self {
            addr,
            received: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            connections: Arc::default(),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serving.connections.fetch_add(1, Ordering::SeqCst);
                let per_connection = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let receiver = per_connection.clone();
                        async move { Ok::<_, Infallible>(receiver.answer(request).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        receiver
    }

    pub async fn ok() -> Self {
        Self::start(Vec::new()).await
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
        let at = std::time::Instant::now();
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let reply = self.script.lock().expect("script").pop_front().unwrap_or(Reply::status(200));
        self.received.lock().expect("received").push(Received {
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            body,
            at,
        });
        tokio::time::sleep(reply.delay).await;
        let mut response = Response::new(Full::new(Bytes::from(reply.body)));
        *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value.parse().expect("header value"));
        }
        response
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The most requests that arrived within any span of `window`.
pub fn most_within(received: &[Received], window: Duration) -> usize {
    received
        .iter()
        .map(|first| received.iter().filter(|r| r.at >= first.at && r.at < first.at + window).count())
        .max()
        .unwrap_or(0)
}
