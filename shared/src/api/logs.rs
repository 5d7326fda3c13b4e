//! `GET /webhooks/{id}/logs`, `GET /webhooks/{id}/logs/{event_id}`,
//! `POST /webhooks/{id}/logs/{event_id}/redeliver` and `POST /webhooks/{id}/recover`.
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json as value;
use uuid::Uuid;

use super::inputs::RecoverBody;
use super::request::{json_object, limit_param, parse_object, path_param, query_param, webhook_id};
use super::views::PageView;
use super::{ApiError, LogEntryView, Surface, json, run};
use crate::App;
use crate::domain::DeliveryState;
use crate::store::{Cursor, PageRequest};

/// Both log reads, for the one function that serves them: the listing, or one entry when the
/// path names an event.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    if path_param(&request, "event_id", "logs").is_some() {
        run(app, request, Surface::Rest, entry).await
    } else {
        run(app, request, Surface::Rest, logs).await
    }
}

pub async fn handle_redeliver(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, redeliver).await
}

pub async fn handle_recover(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, recover).await
}

/// Both recovery routes, for the one function that serves them.
pub async fn handle_recovery(app: &App, request: Request) -> Response<Body> {
    if request.uri().path().trim_end_matches('/').ends_with("/recover") {
        handle_recover(app, request).await
    } else {
        handle_redeliver(app, request).await
    }
}

async fn logs(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let id = webhook_id(&request)?;
    let state = query_param(&request, "state").map(|s| DeliveryState::parse(&s)).transpose()?;
    let page = PageRequest {
        limit: limit_param(&request, 50, 100)?,
        cursor: query_param(&request, "next").map(|token| Cursor::from_client(&token)),
    };
    let page = app.list_logs(id, state, page).await?;
    json(
        StatusCode::OK,
        &PageView {
            items: page.items.iter().map(LogEntryView::rest).collect(),
            next: page.next.map(|cursor| cursor.as_str().to_owned()),
        },
    )
}

/// One log entry as the listing shows it, plus the event payload, for a delivery's own page.
async fn entry(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let id = webhook_id(&request)?;
    let event_id = event_id(&request)?;
    let entry = app.get_log(id, event_id).await?;
    json(
        StatusCode::OK,
        &LogEntryView { event: Some(serde_json::Value::clone(&entry.envelope.event)), ..LogEntryView::rest(&entry) },
    )
}

fn event_id(request: &Request) -> Result<Uuid, ApiError> {
    let raw = path_param(request, "event_id", "logs")
        .ok_or_else(|| ApiError::InvalidRequest("event_id: missing from the path".into()))?;
    Uuid::parse_str(&raw).map_err(|_| ApiError::InvalidRequest(format!("event_id: not a valid UUID: {raw:?}")))
}

async fn redeliver(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let id = webhook_id(&request)?;
    let event_id = event_id(&request)?;
    app.redeliver(id, event_id).await?;
    json(StatusCode::ACCEPTED, &value!({ "event_id": event_id }))
}

async fn recover(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let id = webhook_id(&request)?;
    let body: RecoverBody = parse_object(json_object(&request, false)?, &["since"])?;
    let queued = app.recover(id, body.since()?).await?;
    json(StatusCode::ACCEPTED, &value!({ "queued": queued }))
}
