//! `webhooks serve`: every HTTP route, through the same handlers the Lambdas run, plus the
//! sender on the store-backed queue, in one process with an embedded store. No AWS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use webhooks::api::{ApiError, MAX_BODY_BYTES, Surface};
use webhooks::delivery::{CidrList, LocalWorker, Sender};
use webhooks::queue::{FileDeadLetters, LocalQueue};
use webhooks::store::{EmbeddedStore, Store};
use webhooks::{App, Config, telemetry};

use crate::args::Serve;

/// How long open HTTP connections get to finish after Ctrl-C.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

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
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&options.data_dir)
            .map_err(|e| format!("cannot open {}: {e}", options.data_dir.display()))?,
    );
    let queue = LocalQueue::new(store.clone());
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
    let worker = tokio::spawn(LocalWorker::new(Arc::new(sender), queue).run(stopped));
    let mut connections = JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let app = app.clone();
                    connections.spawn(serve_connection(app, stream, peer));
                }
                Err(err) => tracing::warn!(error = %err, "accept failed"),
            },
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    println!("webhooks: shutting down; finishing deliveries in flight");
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(HTTP_DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    worker.await.map_err(|e| format!("sender stopped abnormally: {e}"))?;
    println!("webhooks: stopped");
    Ok(())
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

async fn serve_connection(app: App, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, request).await) }
    });
    if let Err(err) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
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
    match Limited::new(body, MAX_BODY_BYTES + 1).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let body =
                if bytes.is_empty() { lambda_http::Body::Empty } else { lambda_http::Body::from(bytes.to_vec()) };
            webhooks::api::route(app, http::Request::from_parts(parts, body)).await
        }
        Err(_) => ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }.into_response(Surface::Rest),
    }
}
