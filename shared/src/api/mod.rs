//! HTTP adapters, one module per route: parse the request, make one call on [`App`], shape
//! the response. Lambda binaries run a single adapter; local mode and the compat binary run
//! [`route`], which dispatches on method and path.

mod compat;
mod create;
mod delete;
mod error;
mod event_types;
mod get;
mod inputs;
mod list;
mod logs;
mod ping;
mod publish;
mod request;
mod router;
mod update;
mod views;

use std::future::Future;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

pub use error::ApiError;
pub use request::{BodyKind, authorize, parse_body};
pub use router::{ROUTES, route};
pub use views::{LogEntryView, WebhookDetail, WebhookSummary};

use crate::App;

/// The REST routes answer with honest statuses; the OneFuzz-compatible routes keep OneFuzz's
/// quirks (a missing webhook is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Rest,
    Compat,
}

/// Largest request body accepted, as in SPEC's bad-input list.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub mod handlers {
    //! Entry points for the Lambda binaries, one per route.
    pub use super::compat::handle as compat;
    pub use super::create::handle as create;
    pub use super::delete::handle as delete;
    pub use super::event_types::handle as event_types;
    pub use super::get::handle as get;
    pub use super::list::handle as list;
    pub use super::logs::handle as logs;
    pub use super::logs::handle_recover as recover;
    pub use super::logs::handle_recovery as recovery;
    pub use super::logs::handle_redeliver as redeliver;
    pub use super::ping::handle as ping;
    pub use super::publish::handle as publish;
    pub use super::update::handle as update;
}

/// Runs one adapter: checks the bearer token when one is configured, then turns the
/// adapter's error, if any, into problem+json. Every outcome is an `Ok` response.
pub(crate) async fn run<F, Fut>(app: &App, request: Request, surface: Surface, adapter: F) -> Response<Body>
where
    F: FnOnce(App, Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    if let Err(err) = request::authorize(app, request.headers()) {
        return err.into_response(surface);
    }
    match adapter(app.clone(), request).await {
        Ok(response) => response,
        Err(err) => err.into_response(surface),
    }
}

pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("response encoding: {e}")))?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(response)
}
