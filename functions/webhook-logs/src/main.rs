//! `GET /webhooks/{id}/logs` and `GET /webhooks/{id}/logs/{event_id}`: a webhook's delivery log, and
//! one entry of it.
use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};
use webhooks::api::handlers;
use webhooks::{App, Needs, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda();
    let app = App::from_env(Needs::Store).await?;
    let app = &app;
    run(service_fn(move |request: Request| async move { Ok::<_, Infallible>(handlers::logs(app, request).await) }))
        .await
}
