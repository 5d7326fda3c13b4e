//! `GET /webhooks/{id}`
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::request::webhook_id;
use super::{ApiError, Surface, WebhookDetail, json, run};
use crate::App;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, get).await
}

async fn get(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let webhook = app.get_webhook(webhook_id(&request)?).await?;
    json(StatusCode::OK, &WebhookDetail::from(&webhook))
}
