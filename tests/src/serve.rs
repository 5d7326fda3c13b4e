//! The accept loop of the harness's loopback HTTP servers (the Runtime API emulator, the
//! benchmark's recording proxy).

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves HTTP/1 on `listener`, each connection on a task of its own, every request answered
/// by `answer` with a clone of `state`, until the returned task is aborted.
pub fn serve_http1<S, A, F>(listener: TcpListener, state: S, answer: A) -> JoinHandle<()>
where
    S: Clone + Send + Sync + 'static,
    A: Fn(S, hyper::Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let per_connection = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answered = answer(per_connection.clone(), request);
                    async move { Ok::<_, Infallible>(answered.await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
