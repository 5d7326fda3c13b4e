//! The client verbs. Each prints the service's JSON answer, pretty with 4-space indents like
//! the OneFuzz CLI; lists follow pagination and print one array.

use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::args::{Command, Remote};
use crate::client::Client;

pub async fn run(remote: &Remote, command: Command) -> Result<(), String> {
    let client = Client::new(remote).await?;
    let output = match command {
        Command::Create { name, url, event_types, secret_token, message_format, headers, rate_limit_per_second } => {
            let mut body = json!({ "name": name, "url": url, "event_types": event_types });
            insert_some(&mut body, "secret_token", secret_token);
            insert_some(&mut body, "message_format", message_format);
            insert_some(&mut body, "headers", header_map(&headers)?);
            insert_some(&mut body, "rate_limit_per_second", rate_limit_per_second);
            client.call(Method::POST, "/webhooks", Some(&body)).await?
        }
        Command::List { event_type } => {
            let query = event_type.map(|t| format!("event_type={}", encode(&t))).unwrap_or_default();
            Value::Array(all_pages(&client, "/webhooks", &query, usize::MAX).await?)
        }
        Command::Get { id } => {
            let id = resolve_id(&client, &id).await?;
            client.call(Method::GET, &format!("/webhooks/{id}"), None).await?
        }
        Command::Update {
            id,
            name,
            url,
            event_types,
            secret_token,
            message_format,
            headers,
            clear_headers,
            rate_limit_per_second,
            clear_rate_limit,
            enable,
        } => {
            let id = resolve_id(&client, &id).await?;
            let mut body = json!({});
            insert_some(&mut body, "name", name);
            insert_some(&mut body, "url", url);
            insert_some(&mut body, "event_types", event_types);
            insert_some(&mut body, "secret_token", secret_token);
            insert_some(&mut body, "message_format", message_format);
            insert_some(&mut body, "headers", header_map(&headers)?);
            insert_some(&mut body, "rate_limit_per_second", rate_limit_per_second);
            if clear_headers {
                insert_some(&mut body, "headers", Some(Value::Null));
            }
            if clear_rate_limit {
                insert_some(&mut body, "rate_limit_per_second", Some(Value::Null));
            }
            if enable {
                insert_some(&mut body, "state", Some("enabled"));
            }
            client.call(Method::PATCH, &format!("/webhooks/{id}"), Some(&body)).await?
        }
        Command::Delete { id } => {
            let id = resolve_id(&client, &id).await?;
            client.call(Method::DELETE, &format!("/webhooks/{id}"), None).await?
        }
        Command::Ping { id } => {
            let id = resolve_id(&client, &id).await?;
            client.call(Method::POST, &format!("/webhooks/{id}/ping"), None).await?
        }
        Command::Logs { id, state, limit } => {
            let id = resolve_id(&client, &id).await?;
            let query = state.map(|s| format!("state={s}")).unwrap_or_default();
            Value::Array(all_pages(&client, &format!("/webhooks/{id}/logs"), &query, limit).await?)
        }
        Command::EventTypes { name: None } => {
            let catalog = client.call(Method::GET, "/event-types", None).await?;
            let items = catalog.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            let summary = items.iter().map(|t| json!({"name": t["name"], "operational": t["operational"]})).collect();
            Value::Array(summary)
        }
        Command::EventTypes { name: Some(name) } => {
            client.call(Method::GET, &format!("/event-types/{}", encode(&name)), None).await?
        }
        Command::Publish { event_type, event } => {
            let event: Value =
                serde_json::from_str(&read_arg(&event)?).map_err(|e| format!("--event is not JSON: {e}"))?;
            client.call(Method::POST, "/events", Some(&json!({ "event_type": event_type, "event": event }))).await?
        }
        Command::Redeliver { id, event_id } => {
            let id = resolve_id(&client, &id).await?;
            client.call(Method::POST, &format!("/webhooks/{id}/logs/{}/redeliver", encode(&event_id)), None).await?
        }
        Command::Recover { id, since } => {
            let id = resolve_id(&client, &id).await?;
            client.call(Method::POST, &format!("/webhooks/{id}/recover"), Some(&json!({ "since": since }))).await?
        }
        Command::Serve(_)
        | Command::Console(_)
        | Command::Listen { .. }
        | Command::Verify { .. }
        | Command::Completions { .. }
        | Command::MigrateTable { .. } => {
            return Err("not a client verb".into());
        }
    };
    print_json(&output);
    Ok(())
}

/// Prints JSON the way the OneFuzz CLI does: pretty, 4-space indents.
pub fn print_json<T: Serialize>(value: &T) {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut serializer).is_ok() {
        println!("{}", String::from_utf8_lossy(&out));
    }
}

fn insert_some<T: Serialize>(body: &mut Value, key: &str, value: Option<T>) {
    if let (Value::Object(map), Some(value)) = (body, value) {
        map.insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
    }
}

/// `@FILE` reads the file; anything else is the value itself.
pub fn read_arg(arg: &str) -> Result<String, String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(arg.to_owned()),
    }
}

/// `--header 'Name: value'` arguments as the API's `headers` object; none given is `None`.
/// Errors name the argument by position, never its text, which may hold a credential.
fn header_map(headers: &[String]) -> Result<Option<Map<String, Value>>, String> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = Map::new();
    for (i, header) in headers.iter().enumerate() {
        let (name, value) =
            header.split_once(':').ok_or_else(|| format!("--header #{}: expected 'Name: value'", i + 1))?;
        let name = name.trim();
        if map.keys().any(|known| known.eq_ignore_ascii_case(name)) {
            return Err(format!("--header #{}: {name} is given twice", i + 1));
        }
        map.insert(name.to_owned(), Value::String(value.trim().to_owned()));
    }
    Ok(Some(map))
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn all_pages(client: &Client, path: &str, query: &str, limit: usize) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut params: Vec<String> = vec![format!("limit={}", limit.clamp(1, 100))];
        if !query.is_empty() {
            params.push(query.to_owned());
        }
        if let Some(cursor) = &next {
            params.push(format!("next={}", encode(cursor)));
        }
        let page = client.call(Method::GET, &format!("{path}?{}", params.join("&")), None).await?;
        let page: Map<String, Value> = match page {
            Value::Object(map) => map,
            other => return Err(format!("unexpected answer: {other}")),
        };
        items.extend(page.get("items").and_then(Value::as_array).cloned().unwrap_or_default());
        next = page.get("next").and_then(Value::as_str).map(str::to_owned);
        if next.is_none() || items.len() >= limit {
            items.truncate(limit);
            return Ok(items);
        }
    }
}

/// A full UUID as given, or the one webhook whose id starts with `prefix`.
async fn resolve_id(client: &Client, given: &str) -> Result<String, String> {
    if uuid::Uuid::parse_str(given).is_ok() {
        return Ok(given.to_owned());
    }
    let prefix = given.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(format!("{given:?} is not a webhook id or id prefix"));
    }
    let all = all_pages(client, "/webhooks", "", usize::MAX).await?;
    let matches: Vec<String> = all
        .iter()
        .filter_map(|w| w.get("webhook_id").and_then(Value::as_str))
        .filter(|id| id.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("UNABLE_TO_FIND: no webhook id starts with {given}")),
        many => Err(format!("INVALID_REQUEST: {given} matches {} webhooks; give more of the id", many.len())),
    }
}
