//! The OneFuzz-compatible routes under `/api/webhooks`, so existing OneFuzz clients work
//! unchanged: JSON bodies on every method, unknown non-null fields refused, 200 on success and
//! a missing webhook answered with 400 "unable to find webhook".
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json as value;

use super::inputs::{COMPAT_UPDATE_FIELDS, CREATE_FIELDS, CreateBody, UpdateBody, WebhookIdBody};
use super::request::{json_object, parse_object, route_segments};
use super::{ApiError, LogEntryView, Surface, WebhookDetail, WebhookSummary, json, run};
use crate::App;

/// Most log entries the compat route returns in its one array, newest first.
const MAX_COMPAT_LOG_ENTRIES: usize = 1000;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Compat, dispatch).await
}

async fn dispatch(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let segments = route_segments(&request);
    let tail: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (tail.as_slice(), method) {
        (["api", "webhooks"], Method::POST) => create(&app, &request).await,
        (["api", "webhooks"], Method::GET) => get(&app, &request).await,
        (["api", "webhooks"], Method::PATCH) => update(&app, &request).await,
        (["api", "webhooks"], Method::DELETE) => delete(&app, &request).await,
        (["api", "webhooks", "ping"], Method::POST) => ping(&app, &request).await,
        (["api", "webhooks", "logs"], Method::POST) => logs(&app, &request).await,
        (["api", "webhooks"], other) => {
            Err(ApiError::MethodNotAllowed { method: other.to_string(), allowed: "GET, POST, PATCH, DELETE" })
        }
        (["api", "webhooks", "ping" | "logs"], other) => {
            Err(ApiError::MethodNotAllowed { method: other.to_string(), allowed: "POST" })
        }
        _ => Err(ApiError::NoRoute(request.uri().path().to_owned())),
    }
}

async fn create(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = parse_object(json_object(request, false)?, CREATE_FIELDS)?;
    let webhook = app.create_webhook(body.parse(&app.config)?).await?;
    json(StatusCode::OK, &WebhookSummary::from(&webhook))
}

async fn get(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: WebhookIdBody = parse_object(json_object(request, true)?, &["webhook_id"])?;
    match body.optional()? {
        Some(id) => json(StatusCode::OK, &WebhookDetail::from(&app.get_webhook(id).await?)),
        None => {
            let all = app.all_webhooks().await?;
            json(StatusCode::OK, &all.iter().map(WebhookSummary::from).collect::<Vec<_>>())
        }
    }
}

async fn update(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = parse_object(json_object(request, false)?, COMPAT_UPDATE_FIELDS)?;
    let id = body.webhook_id()?;
    let webhook = app.update_webhook(id, body.parse(&app.config, false)?).await?;
    json(StatusCode::OK, &WebhookSummary::from(&webhook))
}

async fn delete(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: WebhookIdBody = parse_object(json_object(request, false)?, &["webhook_id"])?;
    app.delete_webhook(body.required()?).await?;
    json(StatusCode::OK, &value!({ "result": true }))
}

async fn ping(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: WebhookIdBody = parse_object(json_object(request, false)?, &["webhook_id"])?;
    let ping_id = app.ping_webhook(body.required()?).await?;
    json(StatusCode::OK, &value!({ "ping_id": ping_id }))
}

async fn logs(app: &App, request: &Request) -> Result<Response<Body>, ApiError> {
    let body: WebhookIdBody = parse_object(json_object(request, false)?, &["webhook_id"])?;
    let entries = app.recent_logs(body.required()?, MAX_COMPAT_LOG_ENTRIES).await?;
    json(StatusCode::OK, &entries.iter().map(LogEntryView::compat).collect::<Vec<_>>())
}
