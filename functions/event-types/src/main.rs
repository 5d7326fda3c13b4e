//! `GET /event-types` and `GET /event-types/{name}`: the event type catalog with schemas.
use std::convert::Infallible;

use lambda_http::{Error, Request, run, service_fn};
use webhooks::api::handlers;
use webhooks::{App, Needs, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_lambda();
    let app = App::from_env(Needs::Store).await?;
    let app = &app;
    run(service_fn(
        move |request: Request| async move { Ok::<_, Infallible>(handlers::event_types(app, request).await) },
    ))
    .await
}
