//! The HTTP client every delivery attempt goes through (SPEC §6.3, §6.4).
//!
//! It owns three things the rest of the sender must not have to think about:
//! - the SSRF guard, enforced on the addresses actually connected to: a resolver that drops
//!   every address the [`AddressPolicy`] refuses, plus a check of IP-literal hosts (which the
//!   connector dials without asking the resolver). Checking the URL text alone would be defeated by
//!   DNS names that point inside, and re-resolving after a check would be defeated by DNS
//!   rebinding; filtering inside the resolver means the checked address is the one dialled.
//! - one long-lived pooled hyper client (HTTP/1.1, TLS by rustls with the platform's roots), so
//!   a warm Lambda reuses connections across attempts. hyper directly rather than reqwest: an
//!   attempt is one POST that follows no redirect and uses no proxy, cookie or decompression,
//!   and reqwest's layers for those (two more parses of the URL among them) cost a quarter of
//!   the client's time per request;
//! - turning whatever happened into an [`AttemptOutcome`] for the delivery log, whose messages
//!   never carry header values (signatures) or the URL's path and query (credentials).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use http::HeaderMap;
use http::header::{ACCEPT, HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::{Host, Url};

use super::address::AddressPolicy;

/// How much of a response body is kept for the delivery log.
pub const RESPONSE_HEAD_BYTES: usize = 4096;

/// Idle pooled connections are dropped after this long. A Lambda may sit frozen between
/// invocations while receivers close idle connections (often after 5 to 75 s), so a pooled
/// connection much older than this is more likely to fail on reuse than to save a handshake.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound on resolving, TCP connect and TLS handshake together; a receiver that cannot
/// even accept within this is down, and waiting longer only eats into the attempt's budget.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive probes on pooled connections, and how long unacknowledged data may wait
/// before the kernel drops the connection: a receiver that vanished is noticed, not waited on.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a [`DeliveryClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryClientError {
    #[error("the user agent {0:?} is not a valid header value")]
    UserAgent(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Why an attempt got no HTTP status. Its `Display` goes into the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryErrorKind {
    /// Refused by the SSRF guard before any connection was attempted.
    Blocked(String),
    /// No complete response head within the per-attempt timeout (or no connection within the
    /// connect timeout).
    Timeout,
    /// DNS failure, refused or reset connection, unreachable host.
    Connect(String),
    /// Anything else: TLS, protocol errors, an unusable URL.
    Other(String),
}

impl fmt::Display for DeliveryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blocked(message) => write!(f, "blocked: {message}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Connect(message) => write!(f, "connection failed: {message}"),
            Self::Other(message) => write!(f, "request failed: {message}"),
        }
    }
}

/// What one POST produced. A 3xx is not followed: it is just a non-2xx status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub status: Option<u16>,
    /// `Retry-After`, as seconds or an HTTP-date (a past date gives zero). Present whatever the
    /// status; the retry policy decides whether to honour it (SPEC: on 429 and 503).
    pub retry_after: Option<Duration>,
    /// The first [`RESPONSE_HEAD_BYTES`] of the body, lossy UTF-8; `None` when empty.
    pub response_head: Option<String>,
    pub duration: Duration,
    pub error: Option<DeliveryErrorKind>,
}

impl AttemptOutcome {
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }

    fn failed(error: DeliveryErrorKind, started: Instant) -> Self {
        Self { status: None, retry_after: None, response_head: None, duration: started.elapsed(), error: Some(error) }
    }
}

/// The resolver's refusal. A distinct type so [`classify`] can find it in the client's error chain
/// and report `Blocked` rather than a generic connect failure.
#[derive(Debug)]
struct BlockedHost {
    host: String,
}

impl fmt::Display for BlockedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves only to non-public addresses", self.host)
    }
}

impl StdError for BlockedHost {}

/// Resolves with the system resolver, then keeps only the addresses the policy permits. The
/// connector dials exactly the addresses returned here, so nothing unchecked is ever dialled.
#[derive(Debug, Clone)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

type Resolved = Result<std::vec::IntoIter<SocketAddr>, Box<dyn StdError + Send + Sync>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Resolved> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if policy.permits_nothing() {
                return Err(Box::new(BlockedHost { host }) as Box<dyn StdError + Send + Sync>);
            }
            // Port 0: the connector substitutes the URL's port (or the scheme default).
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if resolved.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            let permitted: Vec<SocketAddr> = resolved.into_iter().filter(|addr| policy.permits(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(Box::new(BlockedHost { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(permitted.into_iter())
        })
    }
}

/// Sends delivery attempts. Build one per process and share it (it is cheap to clone), so
/// connections to a receiver are reused across attempts.
/// A connector whose whole connect (resolving, TCP, TLS handshake) must finish within `limit`:
/// the TCP connector's own timeout covers only each `connect` call, not the name lookup or
/// the handshake.
#[derive(Debug, Clone)]
struct ConnectWithin<C> {
    inner: C,
    limit: Duration,
}

type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, Box<dyn StdError + Send + Sync>>> + Send>>;

impl<C> tower_service::Service<http::Uri> for ConnectWithin<C>
where
    C: tower_service::Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Connecting<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (connecting, limit) = (self.inner.call(uri), self.limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")) as _),
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryClient {
    http: Client<ConnectWithin<HttpsConnector<HttpConnector<GuardedResolver>>>, Full<Bytes>>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    user_agent: HeaderValue,
    /// URLs that passed [`DeliveryClient::check_target`], as the request URI to send to.
    targets: Arc<Mutex<HashMap<Box<str>, Target>>>,
}

/// A URL that passed the check: its host (for error messages) and the URI to send to.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    uri: http::Uri,
}

/// How many checked URLs are kept; past that the cache starts again (more webhooks than this
/// just pay the parse).
const TARGETS_KEPT: usize = 4096;

impl DeliveryClient {
    /// `timeout` bounds each attempt from connect to the end of reading the response head.
    pub fn new(timeout: Duration, policy: AddressPolicy, user_agent: &str) -> Result<Self, DeliveryClientError> {
        Self::with_connect_timeout(timeout, timeout.min(MAX_CONNECT_TIMEOUT), policy, user_agent)
    }

    fn with_connect_timeout(
        timeout: Duration,
        connect_timeout: Duration,
        policy: AddressPolicy,
        user_agent: &str,
    ) -> Result<Self, DeliveryClientError> {
        let user_agent =
            HeaderValue::from_str(user_agent).map_err(|_| DeliveryClientError::UserAgent(user_agent.to_owned()))?;
        let policy = Arc::new(policy);
        // No proxy is ever used: a proxy would make the resolver judge the proxy, not the
        // receiver, and let the proxy reach whatever the receiver's name points to.
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver { policy: Arc::clone(&policy) });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        // The provider named, not the process default: that one is ambiguous (and panics) once
        // any dependency enables a second one.
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|error| DeliveryClientError::Tls(error.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let connector = ConnectWithin { inner: tls, limit: connect_timeout };
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            // OneFuzz receivers were written against `X-Onefuzz-Digest` as sent by Python
            // requests; some look headers up case-sensitively, so send names title-cased.
            .http1_title_case_headers(true)
            .build(connector);
        Ok(Self { http, policy, timeout, user_agent, targets: Arc::default() })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// POSTs `body` to `url` once. Never fails: every problem is described in the outcome.
    pub async fn post(&self, url: &str, mut headers: HeaderMap, body: Vec<u8>) -> AttemptOutcome {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Target { host, uri } = match self.target(url) {
            Ok(target) => target,
            Err(error) => return AttemptOutcome::failed(error, started),
        };
        headers.entry(USER_AGENT).or_insert_with(|| self.user_agent.clone());
        // As Python requests (OneFuzz's own sender) and reqwest before this client send it.
        headers.entry(ACCEPT).or_insert_with(|| HeaderValue::from_static("*/*"));
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;

        let response = match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return AttemptOutcome::failed(classify(&error, &host), started),
            Err(_) => return AttemptOutcome::failed(DeliveryErrorKind::Timeout, started),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let response_head = read_head(response.into_body(), deadline).await;
        AttemptOutcome { status: Some(status), retry_after, response_head, duration: started.elapsed(), error: None }
    }

    /// The checked target of `url`, from the cache when it was checked before: the check
    /// depends on the URL and the policy alone, and a webhook's URL is sent to again and again.
    fn target(&self, url: &str) -> Result<Target, DeliveryErrorKind> {
        if let Some(known) = self.targets.lock().ok().and_then(|known| known.get(url).cloned()) {
            return Ok(known);
        }
        let checked = self.check_target(url)?;
        // The checked URL's own serialisation, so the host dialled is the host checked.
        let uri = checked
            .as_str()
            .parse::<http::Uri>()
            .map_err(|error| DeliveryErrorKind::Other(format!("invalid URL ({error})")))?;
        let target = Target { host: checked.host_str().unwrap_or_default().to_owned(), uri };
        if let Ok(mut known) = self.targets.lock() {
            if known.len() >= TARGETS_KEPT {
                known.clear();
            }
            known.insert(url.into(), target.clone());
        }
        Ok(target)
    }

    /// Parses the URL and refuses IP-literal hosts the policy does not permit: the connector
    /// dials literals without calling the resolver. The `url` crate has already turned every
    /// spelling of an IPv4 address (`0x7f000001`, `2130706433`, `127.1`, ...) into a literal.
    fn check_target(&self, url: &str) -> Result<Url, DeliveryErrorKind> {
        // `url::ParseError` describes the problem without echoing the input.
        let parsed = Url::parse(url).map_err(|error| DeliveryErrorKind::Other(format!("invalid URL ({error})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(DeliveryErrorKind::Other(format!("unsupported URL scheme {:?}", parsed.scheme())));
        }
        let literal = match parsed.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(Host::Domain(_)) => None,
            None => return Err(DeliveryErrorKind::Other("URL has no host".to_owned())),
        };
        if let Some(ip) = literal
            && !self.policy.permits(ip)
        {
            return Err(DeliveryErrorKind::Blocked(format!("{ip} is not a public address")));
        }
        Ok(parsed)
    }
}

/// Reads at most [`RESPONSE_HEAD_BYTES`] of the body, frame by frame, until `deadline`, and
/// stops: a receiver may answer with an endless, huge or trickling body. A short body is read
/// to its end, which is what lets the connection go back to the pool. A failure mid-body keeps
/// what was read: the status, already received, is what decides the attempt.
async fn read_head(mut body: hyper::body::Incoming, deadline: tokio::time::Instant) -> Option<String> {
    let mut head = Vec::new();
    while head.len() < RESPONSE_HEAD_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    let room = RESPONSE_HEAD_BYTES - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            Ok(None | Some(Err(_))) | Err(_) => break,
        }
    }
    (!head.is_empty()).then(|| head_text(&head))
}

/// Lossy UTF-8 of `head`, cut back to [`RESPONSE_HEAD_BYTES`] at a character boundary: each
/// invalid byte becomes a 3-byte U+FFFD, and twenty attempts of these share one 400 KB
/// DynamoDB item with the payload.
fn head_text(head: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(head).into_owned();
    if text.len() > RESPONSE_HEAD_BYTES {
        let cut = (0..=RESPONSE_HEAD_BYTES).rev().find(|at| text.is_char_boundary(*at)).unwrap_or(0);
        text.truncate(cut);
    }
    text
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// IMF-fixdate, plus the two obsolete forms recipients must still accept (RFC 850, asctime).
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

fn classify(error: &hyper_util::client::legacy::Error, host: &str) -> DeliveryErrorKind {
    // Before `is_connect`: the resolver's refusal surfaces as a connect error too.
    if let Some(blocked) = sources(error).find_map(|source| source.downcast_ref::<BlockedHost>()) {
        return DeliveryErrorKind::Blocked(blocked.to_string());
    }
    let timed_out = sources(error)
        .filter_map(|source| source.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::TimedOut);
    if timed_out {
        return DeliveryErrorKind::Timeout;
    }
    if error.is_connect() {
        return DeliveryErrorKind::Connect(format!("{host}: {}", describe(error)));
    }
    DeliveryErrorKind::Other(describe(error))
}

fn sources<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(error.source(), |&source| source.source())
}

/// The causes of a client error, innermost last; none of them carries the URL (whose path and
/// query may hold credentials). hyper's "client error (Connect)" wrapper only repeats what the
/// caller already knows.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for source in sources(error) {
        let text = source.to_string();
        if text.starts_with("client error (") || parts.last() == Some(&text) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return "error sending the request".to_owned();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::TimeZone;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::delivery::cidr::CidrList;

    /// A canned HTTP/1.1 receiver on a loopback address, counting accepted connections and
    /// requests. It answers every request on a connection with the same bytes, keep-alive.
    struct Receiver {
        addr: SocketAddr,
        accepts: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    impl Receiver {
        async fn start(response: String) -> Self {
            Self::start_with_delay(response, Duration::ZERO).await
        }

        async fn start_with_delay(response: String, delay: Duration) -> Self {
            Self::bind("127.0.0.1:0".parse().unwrap(), response, delay).await.unwrap()
        }

        async fn bind(addr: SocketAddr, response: String, delay: Duration) -> io::Result<Self> {
            let listener = TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            let accepts = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let response = Arc::new(response.into_bytes());
            let (accepted, answered) = (Arc::clone(&accepts), Arc::clone(&requests));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (answered, response) = (Arc::clone(&answered), Arc::clone(&response));
                    tokio::spawn(async move {
                        let mut pending = Vec::new();
                        while read_request(&stream, &mut pending).await.is_ok() {
                            answered.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            if write_all(&stream, &response).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Ok(Self { addr, accepts, requests })
        }

        fn port(&self) -> u16 {
            self.addr.port()
        }

        fn url(&self) -> String {
            format!("http://{}/hook", self.addr)
        }

        fn accepts(&self) -> usize {
            self.accepts.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn response(status_line: &str, extra_headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}", body.len())
    }

    // The receiver uses the readiness API because the crate's tokio has no `io-util` feature.
    async fn read_some(stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            stream.readable().await?;
            match stream.try_read(buffer) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            stream.writable().await?;
            match stream.try_write(data) {
                Ok(written) => data = &data[written..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Consumes one request (head and `Content-Length` body) from `pending` plus the stream.
    async fn read_request(stream: &TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if pending.len() >= end + 4 + length {
                    pending.drain(..end + 4 + length);
                    return Ok(());
                }
            }
            let read = read_some(stream, &mut buffer).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            pending.extend_from_slice(&buffer[..read]);
        }
    }

    fn client(policy: AddressPolicy) -> DeliveryClient {
        client_with_timeout(policy, Duration::from_secs(5))
    }

    fn client_with_timeout(policy: AddressPolicy, timeout: Duration) -> DeliveryClient {
        DeliveryClient::new(timeout, policy, "onefuzz-webhook test").unwrap()
    }

    fn loopback_allowed() -> AddressPolicy {
        AddressPolicy::new(CidrList::loopback())
    }

    fn signed_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("webhook-signature", HeaderValue::from_static("v1,SIGNATURE-SECRET"));
        headers
    }

    async fn post(client: &DeliveryClient, url: &str) -> AttemptOutcome {
        client.post(url, signed_headers(), b"{\"ping\":true}".to_vec()).await
    }

    #[test]
    fn the_url_parser_turns_every_ipv4_spelling_into_a_literal() {
        for spelling in ["0x7f000001", "2130706433", "127.1", "0177.0.0.1", "127.0.0.1.", "0x7f.1"] {
            let url = Url::parse(&format!("http://{spelling}:8080/")).unwrap();
            assert_eq!(url.host(), Some(Host::Ipv4([127, 0, 0, 1].into())), "{spelling}");
        }
        let url = Url::parse("https://[::ffff:7f00:1]/").unwrap();
        assert_eq!(url.host(), Some(Host::Ipv6("::ffff:127.0.0.1".parse().unwrap())));
    }

    #[tokio::test]
    async fn loopback_in_any_spelling_is_refused_before_connecting() {
        let ok = response("200 OK", "", "ok");
        let v4 = Receiver::start(ok.clone()).await;
        let port = v4.port();
        // Listen on every loopback address a spelling could reach, so a leak would be counted.
        let second =
            Receiver::bind(SocketAddr::from(([127, 0, 0, 2], port)), ok.clone(), Duration::ZERO).await.unwrap();
        let v6 = Receiver::bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), ok, Duration::ZERO).await.ok();
        let client = client(AddressPolicy::global_only());

        for host in
            ["127.0.0.1", "127.0.0.2", "0x7f000001", "2130706433", "127.1", "[::ffff:127.0.0.1]", "[::1]", "localhost"]
        {
            let outcome = post(&client, &format!("http://{host}:{port}/hook?token=QUERY-SECRET")).await;
            assert!(matches!(outcome.error, Some(DeliveryErrorKind::Blocked(_))), "{host}: {outcome:?}");
            assert_eq!(outcome.status, None, "{host}");
            assert!(!outcome.succeeded());
            let message = outcome.error.map(|error| error.to_string()).unwrap_or_default();
            assert!(!message.contains("SECRET"), "{host}: {message}");
        }

        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(v4.accepts() + second.accepts() + v6.map_or(0, |v6| v6.accepts()), 0);
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_loopback_is_reported_as_blocked_with_its_host() {
        let client = client(AddressPolicy::global_only());

        let outcome = post(&client, "http://localhost:9/hook").await;

        assert_eq!(
            outcome.error,
            Some(DeliveryErrorKind::Blocked("localhost resolves only to non-public addresses".to_owned()))
        );
    }

    #[tokio::test]
    async fn header_names_go_out_title_cased_with_the_user_agent_accept_and_length() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = read_some(&stream, &mut buffer).await.unwrap();
                assert!(read > 0, "the request ended before its head did");
                head.extend_from_slice(&buffer[..read]);
            }
            write_all(&stream, response("200 OK", "", "").as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        let mut headers = signed_headers();
        headers.insert("x-onefuzz-digest", HeaderValue::from_static("DIGEST"));

        let outcome = client(loopback_allowed()).post(&url, headers, b"{}".to_vec()).await;
        let head = seen.await.unwrap();

        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
        for line in
            ["X-Onefuzz-Digest: DIGEST", "Webhook-Signature: ", "Content-Type: application/json", "Content-Length: 2"]
        {
            assert!(head.contains(line), "{line:?} missing from {head}");
        }
        assert!(head.contains("User-Agent: onefuzz-webhook test\r\n"), "{head}");
        assert!(head.contains("Accept: */*\r\n"), "{head}");
        assert!(head.contains("Host: 127.0.0.1:"), "{head}");
    }

    #[tokio::test]
    async fn a_2xx_is_success_and_its_body_is_kept() {
        let receiver = Receiver::start(response("200 OK", "", "thanks")).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &receiver.url()).await;

        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.status, Some(200));
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.response_head.as_deref(), Some("thanks"));
        assert_eq!(outcome.retry_after, None);
        assert_eq!(receiver.requests(), 1);
    }

    #[tokio::test]
    async fn an_allowed_name_is_resolved_and_delivered_to() {
        let receiver = Receiver::start(response("204 No Content", "", "")).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &format!("http://localhost:{}/hook", receiver.port())).await;

        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.response_head, None);
    }

    #[tokio::test]
    async fn a_500_is_a_failure_that_keeps_its_status() {
        let receiver = Receiver::start(response("500 Internal Server Error", "", "boom")).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &receiver.url()).await;

        assert!(!outcome.succeeded());
        assert_eq!(outcome.status, Some(500));
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.response_head.as_deref(), Some("boom"));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
        let target = Receiver::start(response("200 OK", "", "ok")).await;
        let redirecting = Receiver::start(response("302 Found", &format!("Location: {}\r\n", target.url()), "")).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &redirecting.url()).await;

        assert_eq!(outcome.status, Some(302));
        assert!(!outcome.succeeded());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(target.accepts(), 0);
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_timeout_gives_timeout() {
        let receiver = Receiver::start_with_delay(response("200 OK", "", "late"), Duration::from_secs(3)).await;
        let client = client_with_timeout(loopback_allowed(), Duration::from_millis(300));

        let outcome = post(&client, &receiver.url()).await;

        assert_eq!(outcome.error, Some(DeliveryErrorKind::Timeout));
        assert_eq!(outcome.status, None);
        assert!(outcome.duration >= Duration::from_millis(300), "{outcome:?}");
        assert!(outcome.duration < Duration::from_secs(2), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_comes_is_cut_at_the_connect_limit_not_the_attempt_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        // Accepts the TCP connection, then never answers the ClientHello.
        let held = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
        let client = DeliveryClient::with_connect_timeout(
            Duration::from_secs(5),
            Duration::from_millis(300),
            loopback_allowed(),
            "onefuzz-webhook test",
        )
        .unwrap();

        let outcome = post(&client, &url).await;

        assert_eq!(outcome.error, Some(DeliveryErrorKind::Timeout), "{outcome:?}");
        assert!(outcome.duration < Duration::from_secs(2), "{outcome:?}");
        drop(held);
    }

    #[tokio::test]
    async fn a_closed_port_gives_connect_without_the_query() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = client(loopback_allowed());

        let outcome = post(&client, &format!("http://127.0.0.1:{port}/hook?token=QUERY-SECRET")).await;

        assert!(matches!(outcome.error, Some(DeliveryErrorKind::Connect(_))), "{outcome:?}");
        let message = outcome.error.map(|error| error.to_string()).unwrap_or_default();
        assert!(message.starts_with("connection failed: 127.0.0.1: "), "{message}");
        assert!(!message.contains("SECRET") && !message.contains("/hook"), "{message}");
    }

    #[tokio::test]
    async fn retry_after_in_seconds_is_reported() {
        let receiver = Receiver::start(response("503 Service Unavailable", "Retry-After: 7\r\n", "")).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &receiver.url()).await;

        assert_eq!(outcome.status, Some(503));
        assert_eq!(outcome.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_accepts_seconds_and_every_http_date_form() {
        let now = Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 0).unwrap();

        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(37)));
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::from_secs(37)));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(Duration::from_secs(37)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[tokio::test]
    async fn a_long_body_is_cut_to_four_kib() {
        let body = "x".repeat(3 * RESPONSE_HEAD_BYTES);
        let receiver = Receiver::start(response("200 OK", "", &body)).await;
        let client = client(loopback_allowed());

        let outcome = post(&client, &receiver.url()).await;

        assert_eq!(outcome.response_head.map(|head| head.len()), Some(RESPONSE_HEAD_BYTES));
    }

    #[test]
    fn a_head_of_invalid_utf8_stays_within_its_bytes_when_made_text() {
        let invalid = vec![0xff_u8; RESPONSE_HEAD_BYTES];
        // The read limit cut an "é" in two.
        let mut cut_char = vec![b'x'; RESPONSE_HEAD_BYTES - 1];
        cut_char.push("é".as_bytes()[0]);

        let replaced = head_text(&invalid);
        let cut = head_text(&cut_char);

        assert_eq!(replaced.len(), RESPONSE_HEAD_BYTES - RESPONSE_HEAD_BYTES % 3);
        assert!(replaced.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
        assert_eq!(cut, "x".repeat(RESPONSE_HEAD_BYTES - 1));
    }

    #[tokio::test]
    async fn sequential_posts_reuse_one_connection() {
        let receiver = Receiver::start(response("200 OK", "", "ok")).await;
        let client = client(loopback_allowed());

        let first = post(&client, &receiver.url()).await;
        // The finished connection returns to the pool on a background task; give it a moment,
        // otherwise the second request may race it and dial anew.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = post(&client, &receiver.url()).await;

        assert!(first.succeeded() && second.succeeded());
        assert_eq!(receiver.requests(), 2);
        assert_eq!(receiver.accepts(), 1);
    }

    #[test]
    fn an_invalid_user_agent_is_refused() {
        let result = DeliveryClient::new(Duration::from_secs(1), AddressPolicy::global_only(), "bad\nagent");
        assert!(matches!(result, Err(DeliveryClientError::UserAgent(_))));
    }

    #[tokio::test]
    async fn urls_that_are_not_http_are_refused_without_echoing_them() {
        let client = client(loopback_allowed());

        for url in ["file:///etc/passwd", "not a url?token=QUERY-SECRET", "gopher://127.0.0.1/"] {
            let outcome = post(&client, url).await;
            assert!(matches!(outcome.error, Some(DeliveryErrorKind::Other(_))), "{url}: {outcome:?}");
            let message = outcome.error.map(|error| error.to_string()).unwrap_or_default();
            assert!(!message.contains("SECRET") && !message.contains("passwd"), "{message}");
        }
    }
}
