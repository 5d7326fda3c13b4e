//! `webhooks serve`: every HTTP route, through the same handlers the Lambdas run, plus the
//! sender on the store-backed queue, in one process with an embedded store. No AWS.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use webhooks::api::{ApiError, MAX_BODY_BYTES, Surface};
use webhooks::delivery::{CidrList, LocalWorker, Sender};
use webhooks::queue::{FileDeadLetters, LocalQueue};
use webhooks::store::{EmbeddedStore, LocalTasks, Store};
use webhooks::{App, Config, telemetry};

use crate::args::Serve;

/// How long connections busy with a request get to finish after Ctrl-C or SIGTERM.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// How long a client gets to send a request's headers (slowloris), and its body.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The header timeout of a connection accepted while fewer than a quarter of the slots are
/// free: a flood of slow clients then recycles its slots within a second or two, so real
/// requests waiting behind it in the listen backlog get their turn.
const PRESSED_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's listen backlog.
const MAX_CONNECTIONS: usize = 1024;
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

pub async fn run(options: Serve) -> Result<(), String> {
    telemetry::init_local();
    let config = Config::from_env().map_err(|e| e.to_string())?;
    if !options.listen.ip().is_loopback() && config.api_token.is_none() {
        return Err(format!(
            "refusing to listen on {} without WEBHOOKS_API_TOKEN: anyone who can reach it could manage webhooks. \
             Set WEBHOOKS_API_TOKEN, or listen on 127.0.0.1",
            options.listen
        ));
    }
    let embedded = EmbeddedStore::open(&options.data_dir)
        .map_err(|e| format!("cannot open {}: {e}", options.data_dir.display()))?;
    let queue = LocalQueue::new(LocalTasks::new(&embedded));
    let store: Arc<dyn Store> = Arc::new(embedded);
    let dead_letters = Arc::new(FileDeadLetters::new(options.data_dir.join("dead-letters.jsonl")));
    let allowed = if options.deny_loopback { CidrList::default() } else { CidrList::loopback() };
    let config = Arc::new(config);
    let sender = Sender::new(store.clone(), Arc::new(queue.clone()), dead_letters, config.clone(), &allowed)
        .map_err(|e| e.to_string())?;
    let app = App { store, queue: Arc::new(queue.clone()), config: config.clone() };

    let listener =
        TcpListener::bind(options.listen).await.map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("webhooks: listening on http://{bound}");
    println!("webhooks: console on http://{bound}{}", crate::console::BASE);
    println!("webhooks: data dir {}", options.data_dir.display());
    if options.deny_loopback {
        println!(
            "webhooks: loopback targets are refused (--deny-loopback): the SSRF guard allows only public addresses"
        );
    } else {
        println!("webhooks: loopback targets are allowed in local mode (--deny-loopback turns this off)");
    }
    if config.api_token.is_some() {
        println!("webhooks: every route requires Authorization: Bearer $WEBHOOKS_API_TOKEN");
    }

    let (stop, stopped) = watch::channel(false);
    let worker = LocalWorker::new(Arc::new(sender), queue, app.store.clone(), config.delivery_concurrency);
    let worker = tokio::spawn(worker.run(stopped));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let connections = accept_until(&listener, app, &mut shutdown).await;
    println!("webhooks: shutting down; finishing deliveries in flight");
    drop(listener);
    let _ = stop.send(true);
    // Idle keep-alive connections close at once; a request being answered is finished first.
    if tokio::time::timeout(HTTP_DRAIN, connections.shutdown()).await.is_err() {
        println!("webhooks: some connections were still busy after {} s; closing them", HTTP_DRAIN.as_secs());
    }
    worker.await.map_err(|e| format!("sender stopped abnormally: {e}"))?;
    println!("webhooks: stopped");
    Ok(())
}

/// Serves connections until `shutdown` resolves; returns the handle that closes those still
/// open. Holds up to abuse: at most [`MAX_CONNECTIONS`] at once (past that, new ones wait in
/// the listen backlog), each given [`HEADER_READ_TIMEOUT`] to send its headers (less when the
/// slots run short), and a failing
/// `accept` (out of file descriptors) backs off instead of spinning.
async fn accept_until(
    listener: &TcpListener,
    app: App,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut *shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut *shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let pressed = slots.available_permits() < MAX_CONNECTIONS / 4;
                let connection =
                    connection_builder(pressed).serve_connection(TokioIo::new(stream), service(app.clone()));
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            Err(err) => {
                let pause = backoff.failed(&err);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut *shutdown => break,
                }
            }
        }
    }
    graceful
}

fn connection_builder(pressed: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    let timeout = if pressed { PRESSED_HEADER_READ_TIMEOUT } else { HEADER_READ_TIMEOUT };
    builder.timer(TokioTimer::new()).header_read_timeout(timeout);
    builder
}

/// Pauses after failed accepts, doubling up to [`MAX_ACCEPT_PAUSE`]; logs once per burst of
/// failures, so running out of file descriptors costs neither a core nor the disk.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    pause: Option<Duration>,
    failures: u64,
}

impl AcceptBackoff {
    pub(crate) fn failed(&mut self, err: &std::io::Error) -> Duration {
        self.failures += 1;
        let pause = match self.pause {
            None => {
                tracing::warn!(error = %err, "accept failed; backing off until it succeeds again");
                FIRST_ACCEPT_PAUSE
            }
            Some(pause) => (pause * 2).min(MAX_ACCEPT_PAUSE),
        };
        self.pause = Some(pause);
        pause
    }

    pub(crate) fn succeeded(&mut self) {
        if self.pause.take().is_some() {
            tracing::info!(failures = self.failures, "accept works again");
        }
        self.failures = 0;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn service(
    app: App,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send,
> + Clone {
    service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, request).await) }
    })
}

/// Turns a hyper request into the `lambda_http` request the handlers take, and back.
async fn handle(app: &App, request: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    // The console's files carry no data, and the page must load to ask for the token.
    if let Some(page) = crate::console::respond(&parts.method, parts.uri.path()) {
        return page.map(Full::new);
    }
    // A caller without the token learns nothing, not even that its body was too large.
    let authorized = webhooks::api::authorize(app, &parts.headers);
    let response = match authorized {
        Err(unauthorized) => unauthorized.into_response(Surface::Rest),
        Ok(()) => read_and_route(app, parts, body).await,
    };
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}

async fn read_and_route(
    app: &App,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> http::Response<lambda_http::Body> {
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect()).await;
    match read {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            let body =
                if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::from(bytes.to_vec()) };
            webhooks::api::route(app, http::Request::from_parts(parts, body)).await
        }
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }.into_response(Surface::Rest)
        }
        // Bad chunked encoding, or the client closed before sending all it announced.
        Ok(Err(err)) => {
            ApiError::InvalidRequest(format!("the request body could not be read: {err}")).into_response(Surface::Rest)
        }
        Err(_) => ApiError::InvalidRequest(format!(
            "the request body did not arrive within {} s",
            BODY_READ_TIMEOUT.as_secs()
        ))
        .into_response(Surface::Rest),
    }
}
