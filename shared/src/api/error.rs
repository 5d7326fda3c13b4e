//! The one mapping from failures to HTTP: RFC 7807 problem+json with OneFuzz's title and code,
//! so both OneFuzz clients and plain HTTP clients read them.

use http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;

use super::Surface;
use crate::domain::ParseError;
use crate::events::CatalogError;
use crate::manage::ManageError;
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::telemetry::{escape_controls, truncate_chars};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("unable to find webhook")]
    WebhookNotFound,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed { method: String, allowed: &'static str },
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("request body is over the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json, not {0:?}")]
    UnsupportedMediaType(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The store cannot write for now (full disk, database locked): a 503 with `Retry-After`,
    /// so clients try again. The cause goes to the log only.
    #[error("the service cannot store requests right now; retry in {RETRY_AFTER_SECS} s")]
    Unavailable(String),
    /// Complete in logs, opaque to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a 503 tells clients to wait: long enough for an operator or a purge to free space,
/// short enough that a retry soon succeeds once it has.
pub const RETRY_AFTER_SECS: u64 = 5;

impl From<ParseError> for ApiError {
    fn from(err: ParseError) -> Self {
        Self::InvalidRequest(err.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Self::Conflict("the webhook was changed by another request; retry".into()),
            StoreError::NotFound => Self::WebhookNotFound,
            StoreError::BadCursor => Self::InvalidRequest("next: not a valid pagination cursor".into()),
            StoreError::Backend(detail) => Self::Internal(format!("store: {detail}")),
            StoreError::Unavailable(detail) => Self::Unavailable(format!("store: {detail}")),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Embedded(cause) => Self::Internal(cause),
            refused => Self::InvalidRequest(refused.to_string()),
        }
    }
}

impl From<ManageError> for ApiError {
    fn from(err: ManageError) -> Self {
        match err {
            ManageError::WebhookNotFound => Self::WebhookNotFound,
            err @ ManageError::DeliveryNotFound { .. } => Self::NotFound(err.to_string()),
            err @ ManageError::DeliveryInProgress { .. } => Self::Conflict(err.to_string()),
            ManageError::Store(err) => err.into(),
            ManageError::Queue(err) => err.into(),
            err @ ManageError::Enqueue(_) => Self::Internal(err.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Unavailable(detail) => Self::Unavailable(format!("queue: {detail}")),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// RFC 7807 without `type` (which then means `about:blank`): SPEC §3 shows this exact body.
#[derive(Serialize)]
struct Problem<'a> {
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: u16,
    errors: [&'a str; 1],
}

/// Longest error detail: room for a message around a few client values cut to
/// [`crate::telemetry::MAX_CLIENT_VALUE_CHARS`].
const MAX_DETAIL_CHARS: usize = 512;

const INTERNAL_DETAIL: &str = "internal server error; the service logged the details";

impl ApiError {
    /// The HTTP status on `surface`. The compat routes answer a missing webhook with 400,
    /// because the OneFuzz client retries 404s.
    pub fn status(&self, surface: Surface) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::WebhookNotFound if surface == Surface::Compat => StatusCode::BAD_REQUEST,
            Self::WebhookNotFound | Self::NotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title_and_code(&self, surface: Surface) -> (&'static str, u16) {
        match self {
            Self::WebhookNotFound if surface == Surface::Compat => ("INVALID_REQUEST", 450),
            Self::WebhookNotFound | Self::NotFound(_) | Self::NoRoute(_) => ("UNABLE_TO_FIND", 467),
            Self::Unauthorized => ("UNAUTHORIZED", 457),
            Self::Internal(_) | Self::Unavailable(_) => ("INTERNAL_ERROR", 500),
            _ => ("INVALID_REQUEST", 450),
        }
    }

    pub fn into_response(self, surface: Surface) -> Response<Body> {
        let status = self.status(surface);
        let (title, code) = self.title_and_code(surface);
        // Details quote client input (names, values, schema violations): however they were
        // built, one is never longer than this, nor carries control characters into the log.
        let message = truncate_chars(&escape_controls(&self.to_string()), MAX_DETAIL_CHARS);
        let detail = if let Self::Internal(cause) = &self {
            tracing::error!(status = status.as_u16(), error = %cause, "request failed");
            INTERNAL_DETAIL
        } else if let Self::Unavailable(cause) = &self {
            tracing::warn!(status = status.as_u16(), error = %cause, "request refused for now: the store cannot write");
            message.as_str()
        } else {
            tracing::info!(status = status.as_u16(), detail = %message, "request refused");
            message.as_str()
        };
        let problem = Problem { title, status: status.as_u16(), detail, code, errors: [detail] };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/problem+json"));
        if let Self::MethodNotAllowed { allowed, .. } = self {
            response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
        }
        if let Self::Unavailable(_) = self {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Self::Unauthorized = self {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
