//! `POST /events`: a producer's event message (SPEC §4 shape 1).
use chrono::Utc;
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json as value};
use uuid::Uuid;

use super::request::json_object;
use super::{ApiError, Surface, json, run};
use crate::App;
use crate::events::parse_event_message;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, publish).await
}

async fn publish(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let message = Value::Object(json_object(&request, false)?);
    let envelope = parse_event_message(message, Uuid::new_v4(), &app.config.ingest_defaults(), Utc::now())?;
    let event_id = app.publish_event(envelope).await?;
    json(StatusCode::ACCEPTED, &value!({ "event_id": event_id }))
}
