//! `PATCH /webhooks/{id}`
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::inputs::{REST_UPDATE_FIELDS, UpdateBody};
use super::request::{json_object, parse_object, webhook_id};
use super::{ApiError, Surface, WebhookSummary, json, run};
use crate::App;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, update).await
}

async fn update(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let id = webhook_id(&request)?;
    let body: UpdateBody = parse_object(json_object(&request, false)?, REST_UPDATE_FIELDS)?;
    let webhook = app.update_webhook(id, body.parse(&app.config, true)?).await?;
    json(StatusCode::OK, &WebhookSummary::from(&webhook))
}
