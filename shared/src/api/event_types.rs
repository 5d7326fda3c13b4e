//! `GET /event-types` and `GET /event-types/{name}`: the catalog (SPEC §11), each type with
//! the JSON Schema its payloads are validated against and an example.
use http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::request::{path_param, query_param};
use super::views::{EventTypeView, ItemsView};
use super::{ApiError, Surface, json, run};
use crate::App;
use crate::events::{CatalogError, EventType};

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    run(app, request, Surface::Rest, answer).await
}

async fn answer(_app: App, request: Request) -> Result<Response<Body>, ApiError> {
    match path_param(&request, "name", "event-types") {
        None => {
            let operational = match query_param(&request, "operational").as_deref() {
                None => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(_) => return Err(ApiError::InvalidRequest("operational: must be true or false".into())),
            };
            let items = EventType::ALL
                .iter()
                .filter(|t| operational.is_none_or(|wanted| t.is_operational() == wanted))
                .map(|t| EventTypeView::of(*t))
                .collect::<Result<Vec<_>, _>>()?;
            json(StatusCode::OK, &ItemsView { items })
        }
        Some(name) => match EventType::parse(&name) {
            Ok(event_type) => json(StatusCode::OK, &EventTypeView::of(event_type)?),
            // The same words as an unknown type in a body, but the resource is what is missing.
            Err(unknown @ CatalogError::UnknownType(_)) => Err(ApiError::NotFound(unknown.to_string())),
            Err(other) => Err(other.into()),
        },
    }
}
