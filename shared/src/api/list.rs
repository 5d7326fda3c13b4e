//! `GET /webhooks?event_type=&limit=&next=`
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::request::{limit_param, query_param};
use super::views::PageView;
use super::{ApiError, Surface, WebhookSummary, json, run};
use crate::App;
use crate::events::EventType;
use crate::store::{Cursor, PageRequest};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, list).await
}

async fn list(app: App, request: Request) -> Result<Response<Body>, ApiError> {
    let event_type = query_param(&request, "event_type").map(|name| EventType::parse(&name)).transpose()?;
    let page = PageRequest {
        limit: limit_param(&request, DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor: query_param(&request, "next").map(|token| Cursor::from_client(&token)),
    };
    let page = app.list_webhooks(event_type, page).await?;
    json(
        StatusCode::OK,
        &PageView {
            items: page.items.iter().map(WebhookSummary::from).collect(),
            next: page.next.map(|cursor| cursor.as_str().to_owned()),
        },
    )
}
