//! `POST /webhooks/{id}/ping`
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json as value;

use super::request::webhook_id;
use super::{ApiError, Surface, json, run};
use crate::App;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, ping).await
}

async fn ping(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let ping_id = app.ping_webhook(webhook_id(&request)?).await?;
    json(StatusCode::ACCEPTED, &value!({ "ping_id": ping_id }))
}
