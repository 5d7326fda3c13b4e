//! `POST /webhooks`
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::inputs::{CREATE_FIELDS, CreateBody};
use super::request::{json_object, parse_object};
use super::{ApiError, Surface, WebhookSummary, json, run};
use crate::App;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, create).await
}

async fn create(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = parse_object(json_object(&request, false)?, CREATE_FIELDS)?;
    let webhook = app.create_webhook(body.parse(&app.config)?).await?;
    json(StatusCode::CREATED, &WebhookSummary::from(&webhook))
}
