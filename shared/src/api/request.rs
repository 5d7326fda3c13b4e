//! Reading requests the same way whether they came from API Gateway (path and query
//! parameters filled by the gateway) or from the local server (only the URI).

use lambda_http::{Request, RequestExt};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiError, MAX_BODY_BYTES};
use crate::App;
use crate::domain::WebhookId;
use crate::telemetry::client_value;

/// The local bearer token check (`WEBHOOKS_API_TOKEN`); in AWS, IAM at API Gateway does this.
/// It needs only the headers, so a server can run it before reading a body.
pub fn authorize(app: &App, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.config.api_token else {
        return Ok(());
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_credentials)
        .unwrap_or("");
    if crate::signing::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The token of a `Bearer` authorization: the scheme is case-insensitive (RFC 9110 §11.1),
/// and one or more spaces separate it from the token.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' ')).filter(|token| !token.is_empty())
}

/// The path's segments from the first known resource name on, so a stage prefix such as
/// `/prod` in front of the route does not matter.
pub(crate) fn route_segments(request: &Request) -> Vec<String> {
    let segments: Vec<String> = request.uri().path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let start =
        segments.iter().position(|s| matches!(s.as_str(), "webhooks" | "api" | "events" | "event-types")).unwrap_or(0);
    segments[start..].to_vec()
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// A path parameter: from the gateway's `pathParameters`, else the segment after `after`.
pub(crate) fn path_param(request: &Request, name: &str, after: &str) -> Option<String> {
    if let Some(value) = request.path_parameters().first(name) {
        return Some(value.to_owned());
    }
    let segments = route_segments(request);
    segments.iter().position(|s| s == after).and_then(|i| segments.get(i + 1)).cloned()
}

pub(crate) fn webhook_id(request: &Request) -> Result<WebhookId, ApiError> {
    let raw = path_param(request, "id", "webhooks")
        .ok_or_else(|| ApiError::InvalidRequest("webhook_id: missing from the path".into()))?;
    Ok(WebhookId::parse(&raw, "webhook_id")?)
}

/// A query parameter's value. An empty one (`?next=`, as a form or a script with an unset
/// variable sends it) counts as absent.
pub(crate) fn query_param(request: &Request, name: &str) -> Option<String> {
    let from_gateway = request.query_string_parameters();
    let value = match from_gateway.first(name) {
        Some(value) => Some(value.to_owned()),
        None => {
            let query = request.uri().query()?;
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        }
    };
    value.filter(|value| !value.is_empty())
}

pub(crate) fn limit_param(request: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    match query_param(request, "limit") {
        None => Ok(default),
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "limit: must be a whole number from 1 to {max}, not {:?}",
                client_value(&text)
            ))
        }),
    }
}

/// The body as a JSON object, after the size and content-type checks. An empty body reads as
/// `{}` when `empty_is_object`, as OneFuzz clients send bodiless GETs.
pub(crate) fn json_object(
    request: &Request,
    empty_is_object: bool,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    if let Some(content_type) = request.headers().get(http::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or("");
        let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !bytes.is_empty() && essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(text.to_owned()));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if empty_is_object {
            Ok(serde_json::Map::new())
        } else {
            Err(ApiError::InvalidRequest("request body is required: a JSON object".into()))
        };
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::InvalidRequest("request body must be a JSON object".into())),
        Err(err) => Err(ApiError::InvalidRequest(format!("malformed JSON: {err}"))),
    }
}

/// Deserialises a body object into `T`, refusing fields `T` does not know unless they are
/// null, and naming the offending field in every error.
pub(crate) fn parse_object<T: DeserializeOwned>(
    mut object: serde_json::Map<String, Value>,
    known: &[&str],
) -> Result<T, ApiError> {
    object.retain(|key, value| known.contains(&key.as_str()) || !value.is_null());
    if let Some(unknown) = object.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(ApiError::InvalidRequest(format!(
            "{}: unknown field; expected one of {}",
            client_value(unknown),
            known.join(", ")
        )));
    }
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
        if path == "." { ApiError::InvalidRequest(inner) } else { ApiError::InvalidRequest(format!("{path}: {inner}")) }
    })
}

/// The bodies clients send, each parsed as its route does; for fuzzing the whole parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    RestCreate,
    RestUpdate,
    CompatCreate,
    CompatUpdate,
    CompatWebhookId,
    Recover,
}

impl BodyKind {
    pub const ALL: [Self; 6] = [
        Self::RestCreate,
        Self::RestUpdate,
        Self::CompatCreate,
        Self::CompatUpdate,
        Self::CompatWebhookId,
        Self::Recover,
    ];
}

/// Parses `body` (JSON bytes) as the route taking `kind` does, down to domain values.
pub fn parse_body(kind: BodyKind, body: &[u8], config: &crate::Config) -> Result<(), ApiError> {
    use super::inputs::{
        COMPAT_UPDATE_FIELDS, CREATE_FIELDS, CreateBody, REST_UPDATE_FIELDS, RecoverBody, UpdateBody, WebhookIdBody,
    };
    let mut request = Request::new(lambda_http::Body::from(body.to_vec()));
    request.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let compat = matches!(kind, BodyKind::CompatCreate | BodyKind::CompatUpdate | BodyKind::CompatWebhookId);
    let object = json_object(&request, compat)?;
    match kind {
        BodyKind::RestCreate | BodyKind::CompatCreate => {
            parse_object::<CreateBody>(object, CREATE_FIELDS)?.parse(config).map(drop)
        }
        BodyKind::RestUpdate => parse_object::<UpdateBody>(object, REST_UPDATE_FIELDS)?.parse(config, true).map(drop),
        BodyKind::CompatUpdate => {
            let body = parse_object::<UpdateBody>(object, COMPAT_UPDATE_FIELDS)?;
            body.webhook_id()?;
            body.parse(config, false).map(drop)
        }
        BodyKind::CompatWebhookId => parse_object::<WebhookIdBody>(object, &["webhook_id"])?.optional().map(drop),
        BodyKind::Recover => parse_object::<RecoverBody>(object, &["since"])?.since().map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_other_schemes_are_not_bearer() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearerabc"), None);
        assert_eq!(bearer_credentials("Bearer "), None);
    }
}
