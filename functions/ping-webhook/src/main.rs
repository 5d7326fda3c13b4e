//! `POST /webhooks/{id}/ping`: queues a signed ping to one webhook.
use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};
use webhooks::api::handlers;
use webhooks::{App, Needs, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda();
    let app = App::from_env(Needs::StoreAndQueue).await?;
    let app = &app;
    run(service_fn(move |request: Request| async move { Ok::<_, Infallible>(handlers::ping(app, request).await) }))
        .await
}
