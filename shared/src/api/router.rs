//! Dispatch on method and path for the processes that serve every route: local mode and
//! tests. In AWS, API Gateway does this and each function runs one adapter.
use http::Method;
use lambda_http::{Body, Request, Response};

use super::request::route_segments;
use super::{ApiError, Surface, handlers, run};
use crate::App;

/// Every route the service serves, as (method, path template): the OpenAPI document and the
/// SAM template are checked against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", "/webhooks/{id}"),
    ("PATCH", "/webhooks/{id}"),
    ("DELETE", "/webhooks/{id}"),
    ("POST", "/webhooks/{id}/ping"),
    ("GET", "/webhooks/{id}/logs"),
    ("GET", "/webhooks/{id}/logs/{event_id}"),
    ("POST", "/webhooks/{id}/logs/{event_id}/redeliver"),
    ("POST", "/webhooks/{id}/recover"),
    ("POST", "/events"),
    ("GET", "/event-types"),
    ("GET", "/event-types/{name}"),
    ("POST", "/api/webhooks"),
    ("GET", "/api/webhooks"),
    ("PATCH", "/api/webhooks"),
    ("DELETE", "/api/webhooks"),
    ("POST", "/api/webhooks/ping"),
    ("POST", "/api/webhooks/logs"),
];

pub async fn route(app: &App, request: Request) -> Response<Body> {
    let segments = route_segments(&request);
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (path.as_slice(), &method) {
        (["api", "webhooks", ..], _) => handlers::compat(app, request).await,
        (["webhooks"], &Method::POST) => handlers::create(app, request).await,
        (["webhooks"], &Method::GET) => handlers::list(app, request).await,
        (["webhooks", _], &Method::GET) => handlers::get(app, request).await,
        (["webhooks", _], &Method::PATCH) => handlers::update(app, request).await,
        (["webhooks", _], &Method::DELETE) => handlers::delete(app, request).await,
        (["webhooks", _, "ping"], &Method::POST) => handlers::ping(app, request).await,
        (["webhooks", _, "logs"] | ["webhooks", _, "logs", _], &Method::GET) => handlers::logs(app, request).await,
        (["webhooks", _, "logs", _, "redeliver"], &Method::POST) => handlers::redeliver(app, request).await,
        (["webhooks", _, "recover"], &Method::POST) => handlers::recover(app, request).await,
        (["events"], &Method::POST) => handlers::publish(app, request).await,
        (["event-types"] | ["event-types", _], &Method::GET) => handlers::event_types(app, request).await,
        _ => {
            let error = match allowed_methods(&path) {
                Some(allowed) => ApiError::MethodNotAllowed { method: method.to_string(), allowed },
                None => ApiError::NoRoute(request.uri().path().to_owned()),
            };
            run(app, request, Surface::Rest, |_, _| async move { Err(error) }).await
        }
    }
}

fn allowed_methods(path: &[&str]) -> Option<&'static str> {
    match path {
        ["webhooks"] => Some("GET, POST"),
        ["webhooks", _] => Some("GET, PATCH, DELETE"),
        ["webhooks", _, "ping" | "recover"] | ["webhooks", _, "logs", _, "redeliver"] | ["events"] => Some("POST"),
        ["webhooks", _, "logs"] | ["webhooks", _, "logs", _] | ["event-types"] | ["event-types", _] => Some("GET"),
        _ => None,
    }
}
