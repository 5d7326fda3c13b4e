//! The receiver the throughput runs post to: HTTP/1.1 keep-alive, 200 with an empty body,
//! at once or after a fixed delay.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub async fn run(port: u16, delay_ms: u64) -> Result<(), String> {
    let delay = std::time::Duration::from_millis(delay_ms);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    println!("ready");
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| async move {
                let _ = request.into_body().collect().await;
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
