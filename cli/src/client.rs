//! The HTTP client behind the verbs: bearer token for a local server with
//! `WEBHOOKS_API_TOKEN`, AWS SigV4 for API Gateway, and problem+json turned into one line.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::Method;
use serde_json::Value;

use crate::args::Remote;

enum Auth {
    None,
    Bearer(String),
    SigV4 { region: String, credentials: aws_credential_types::Credentials },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl Client {
    pub async fn new(remote: &Remote) -> Result<Self, String> {
        let base = remote.endpoint.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base).map_err(|e| format!("--endpoint {base:?} is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let auth = if remote.aws || host.ends_with(".amazonaws.com") {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let region = remote
                .region
                .clone()
                .or_else(|| region_from_host(&host))
                .or_else(|| sdk.region().map(ToString::to_string))
                .ok_or("no AWS region: pass --region or set AWS_REGION")?;
            let provider = sdk.credentials_provider().ok_or("no AWS credentials provider configured")?;
            let credentials =
                provider.provide_credentials().await.map_err(|e| format!("cannot load AWS credentials: {e}"))?;
            Auth::SigV4 { region, credentials }
        } else {
            match std::env::var("WEBHOOKS_API_TOKEN") {
                Ok(token) if !token.is_empty() => Auth::Bearer(token),
                _ => Auth::None,
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { http, base, auth })
    }

    /// Sends one request; a non-2xx answer becomes `Err("TITLE: detail")`.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let content_type = body.is_some().then_some("application/json");
        let response = self.send(method, path, content_type, bytes).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("cannot read the response: {e}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            return Ok(value);
        }
        match (value.get("title").and_then(Value::as_str), value.get("detail").and_then(Value::as_str)) {
            (Some(title), Some(detail)) => Err(format!("{title}: {detail}{}", typo_hint(detail))),
            _ => Err(format!("HTTP {status}: {text}")),
        }
    }

    /// Sends `body` (of `content_type`, if any) to `path` on the endpoint, authorized as the
    /// endpoint needs; the answer is the caller's to read, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::SigV4 { region, credentials } => {
                for (name, value) in sigv4_headers(region, credentials, &method, &url, content_type, &body)? {
                    request = request.header(name, value);
                }
            }
        }
        if content_type.is_some() || !body.is_empty() {
            request = request.body(body);
        }
        request.send().await.map_err(|e| {
            if e.is_connect() {
                format!("cannot reach {}: is `webhooks serve` running, or is --endpoint right?", self.base)
            } else {
                format!("request to {} failed: {e}", self.base)
            }
        })
    }

    /// How requests are authorized, for a startup line.
    pub fn auth_kind(&self) -> &'static str {
        match self.auth {
            Auth::None => "unsigned",
            Auth::Bearer(_) => "with the bearer token from WEBHOOKS_API_TOKEN",
            Auth::SigV4 { .. } => "signed with AWS SigV4",
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }
}

/// The API names an unknown event type in SPEC's exact words; a person at a terminal is also
/// told which known type was probably meant.
fn typo_hint(detail: &str) -> String {
    detail
        .strip_prefix(webhooks::events::UNKNOWN_EVENT_TYPE)
        .and_then(webhooks::events::EventType::closest)
        .map(|meant| format!(" (did you mean {meant}?)"))
        .unwrap_or_default()
}

/// `abc.execute-api.eu-west-1.amazonaws.com` → `eu-west-1`.
fn region_from_host(host: &str) -> Option<String> {
    let parts: Vec<&str> = host.split('.').collect();
    parts.iter().position(|p| *p == "execute-api").and_then(|i| parts.get(i + 1)).map(|r| (*r).to_owned())
}

fn sigv4_headers(
    region: &str,
    credentials: &aws_credential_types::Credentials,
    method: &Method,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let headers: Vec<(&str, &str)> = content_type.map(|value| ("content-type", value)).into_iter().collect();
    let signable = SignableRequest::new(method.as_str(), url, headers.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| format!("cannot sign the request: {e}"))?.into_parts();
    Ok(instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_execute_api_host() {
        assert_eq!(region_from_host("abc123.execute-api.eu-west-1.amazonaws.com").as_deref(), Some("eu-west-1"));
        assert_eq!(region_from_host("127.0.0.1"), None);
    }

    #[test]
    fn sigv4_adds_an_authorization_header_for_execute_api() {
        let credentials = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");

        let headers = sigv4_headers(
            "us-east-1",
            &credentials,
            &Method::GET,
            "https://x.execute-api.us-east-1.amazonaws.com/webhooks",
            None,
            b"",
        )
        .unwrap();

        let authorization = headers.iter().find(|(n, _)| n == "authorization").map(|(_, v)| v.as_str()).unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{authorization}");
        assert!(authorization.contains("/us-east-1/execute-api/aws4_request"));
        assert!(headers.iter().any(|(n, _)| n == "x-amz-date"));
    }
}
