//! Request bodies as clients send them, and their parsing into domain values. Raw fields are
//! plain JSON types so that a wrong type is reported by field name; the domain newtypes then
//! check each value.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ApiError;
use crate::config::Config;
use crate::domain::{
    CustomHeaders, EventPattern, ParseError, RateLimit, SecretToken, WebhookId, WebhookName, WebhookUrl,
    dedup_event_types,
};
use crate::manage::{NewWebhook, WebhookPatch};

pub(crate) const CREATE_FIELDS: &[&str] =
    &["name", "url", "event_types", "secret_token", "message_format", "headers", "rate_limit_per_second"];
pub(crate) const REST_UPDATE_FIELDS: &[&str] =
    &["name", "url", "event_types", "secret_token", "message_format", "headers", "rate_limit_per_second", "state"];
pub(crate) const COMPAT_UPDATE_FIELDS: &[&str] =
    &["webhook_id", "name", "url", "event_types", "secret_token", "message_format", "headers", "rate_limit_per_second"];

#[derive(Deserialize)]
pub(crate) struct CreateBody {
    name: String,
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    secret_token: Option<Value>,
    #[serde(default)]
    message_format: Option<String>,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    rate_limit_per_second: Option<Value>,
}

impl CreateBody {
    pub(crate) fn parse(self, config: &Config) -> Result<NewWebhook, ApiError> {
        Ok(NewWebhook {
            name: WebhookName::parse(&self.name)?,
            url: WebhookUrl::parse(&self.url, config.https_only)?,
            event_types: event_types(&self.event_types)?,
            secret_token: self.secret_token.as_ref().map(secret).transpose()?.flatten(),
            message_format: self.message_format.as_deref().map(str::parse).transpose()?,
            headers: self.headers.as_ref().map(headers).transpose()?.flatten(),
            rate_limit_per_second: self.rate_limit_per_second.as_ref().map(rate_limit).transpose()?.flatten(),
        })
    }
}

/// Fields of a PATCH. On REST, null removes an optional setting (`secret_token`, `headers`,
/// `rate_limit_per_second`); on the compat routes null means "unchanged", as OneFuzz clients
/// send every field.
#[derive(Deserialize)]
pub(crate) struct UpdateBody {
    #[serde(default)]
    webhook_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    secret_token: Option<Value>,
    #[serde(default)]
    message_format: Option<String>,
    #[serde(default, deserialize_with = "present")]
    headers: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_second: Option<Value>,
    #[serde(default)]
    state: Option<String>,
}

/// Tells an absent field (`None`, by `default`) from an explicit null (`Some(Value::Null)`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl UpdateBody {
    pub(crate) fn webhook_id(&self) -> Result<WebhookId, ApiError> {
        match &self.webhook_id {
            Some(id) => Ok(WebhookId::parse(id, "webhook_id")?),
            None => Err(ApiError::InvalidRequest("webhook_id: missing field".into())),
        }
    }

    pub(crate) fn parse(self, config: &Config, null_removes: bool) -> Result<WebhookPatch, ApiError> {
        let secret_token = removable(self.secret_token.as_ref().map(secret).transpose()?, null_removes);
        // An empty object is an explicit "no headers" on both surfaces; only null differs.
        let explicitly_empty = matches!(&self.headers, Some(Value::Object(map)) if map.is_empty());
        let headers = removable(self.headers.as_ref().map(headers).transpose()?, null_removes || explicitly_empty);
        let rate_limit_per_second =
            removable(self.rate_limit_per_second.as_ref().map(rate_limit).transpose()?, null_removes);
        let enable = match self.state.as_deref() {
            None => false,
            Some("enabled") => true,
            Some(other) => {
                return Err(ParseError::new(format!("state: can only be set to \"enabled\", not {other:?}")).into());
            }
        };
        Ok(WebhookPatch {
            name: self.name.as_deref().map(WebhookName::parse).transpose()?,
            url: self.url.as_deref().map(|url| WebhookUrl::parse(url, config.https_only)).transpose()?,
            event_types: self.event_types.as_deref().map(event_types).transpose()?,
            secret_token,
            message_format: self.message_format.as_deref().map(str::parse).transpose()?,
            headers,
            rate_limit_per_second,
            enable,
        })
    }
}

/// A parsed optional field of a PATCH: absent leaves it, a value sets it, and null removes it
/// when `null_removes` (else leaves it).
fn removable<T>(parsed: Option<Option<T>>, null_removes: bool) -> Option<Option<T>> {
    match parsed {
        Some(None) if !null_removes => None,
        other => other,
    }
}

/// The `{"webhook_id": ...}` body of the compat routes; absent or null means "none given".
#[derive(Deserialize)]
pub(crate) struct WebhookIdBody {
    #[serde(default)]
    webhook_id: Option<String>,
}

impl WebhookIdBody {
    pub(crate) fn optional(&self) -> Result<Option<WebhookId>, ApiError> {
        Ok(self.webhook_id.as_deref().map(|id| WebhookId::parse(id, "webhook_id")).transpose()?)
    }

    pub(crate) fn required(&self) -> Result<WebhookId, ApiError> {
        self.optional()?.ok_or_else(|| ApiError::InvalidRequest("webhook_id: missing field".into()))
    }
}

/// The `{"since": RFC 3339}` body of `recover`.
#[derive(Deserialize)]
pub(crate) struct RecoverBody {
    since: String,
}

impl RecoverBody {
    pub(crate) fn since(&self) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        chrono::DateTime::parse_from_rfc3339(&self.since)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| ApiError::InvalidRequest(format!("since: not an RFC 3339 time: {:?}", self.since)))
    }
}

/// The secret is read from raw JSON so that a wrong type is refused without serde's usual
/// message, which quotes the value it got.
fn secret(value: &Value) -> Result<Option<SecretToken>, ParseError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => SecretToken::parse(text).map(Some),
        _ => Err(ParseError::new("secret_token: must be a string")),
    }
}

/// `{"Name": "value", ...}`; every error names the header, none shows a value.
fn headers(value: &Value) -> Result<Option<CustomHeaders>, ParseError> {
    let map = match value {
        Value::Null => return Ok(None),
        Value::Object(map) => map,
        _ => return Err(ParseError::new("headers: must be an object of header names to string values")),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        match value {
            Value::String(text) => pairs.push((name.as_str(), text.as_str())),
            _ => {
                // The name is checked first, so an error never echoes a name it refuses.
                CustomHeaders::parse([(name.as_str(), "-")])?;
                return Err(ParseError::new(format!("headers.{name}: the value must be a string")));
            }
        }
    }
    CustomHeaders::parse(pairs)
}

fn rate_limit(value: &Value) -> Result<Option<RateLimit>, ParseError> {
    match value {
        Value::Null => Ok(None),
        other => RateLimit::from_json(other).map(Some),
    }
}

fn event_types(names: &[String]) -> Result<Vec<EventPattern>, ParseError> {
    let parsed = names.iter().map(|name| EventPattern::parse(name)).collect::<Result<Vec<_>, _>>()?;
    Ok(dedup_event_types(parsed))
}
