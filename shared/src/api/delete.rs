//! `DELETE /webhooks/{id}`
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json as value;

use super::request::webhook_id;
use super::{ApiError, Surface, json, run};
use crate::App;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, delete).await
}

async fn delete(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    app.delete_webhook(webhook_id(&request)?).await?;
    json(StatusCode::OK, &value!({ "result": true }))
}
