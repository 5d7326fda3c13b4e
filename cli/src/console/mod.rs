//! The operator console (SPEC §12): plain HTML, ES modules and CSS under `cli/console/`,
//! compiled into the binary, so `cargo build` alone ships it. `webhooks serve` answers the
//! console's paths beside the API; `webhooks console` ([`proxy`]) serves the same files and
//! forwards the API calls to a deployment.
//!
//! The page routes (`/console/`, `/console/webhooks/{id}`,
//! `/console/webhooks/{id}/deliveries/{event_id}`) all answer the one app shell, which routes
//! on the client; assets live under `/console/assets/`; anything else under `/console/` is a
//! 404, so a typo never looks like a blank page.

pub mod proxy;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

/// Where the console lives, and where `GET /` sends a browser.
pub const BASE: &str = "/console/";

const SHELL: &[u8] = include_bytes!("../../console/index.html");

/// (file name under `/console/assets/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../../console/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_bytes!("../../console/dom.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_bytes!("../../console/chart.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_bytes!("../../console/pages.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../console/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../console/icon.svg")),
];

/// The page may load only its own scripts and styles and talk only to its own origin: an API
/// string that somehow became markup still could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's answer for `path`, or `None` when the path belongs to the API.
pub fn respond(method: &Method, path: &str) -> Option<Response<Bytes>> {
    let reads = method == Method::GET || method == Method::HEAD;
    if path == "/" && reads {
        return Some(redirect(StatusCode::FOUND));
    }
    if path == "/console" {
        return Some(redirect(StatusCode::MOVED_PERMANENTLY));
    }
    let rest = path.strip_prefix(BASE)?;
    if !reads {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "the console answers GET and HEAD only\n");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    let response = match lookup(rest) {
        Some((content_type, body)) => file(content_type, body),
        None => text(StatusCode::NOT_FOUND, "no such console page or asset\n"),
    };
    Some(if method == Method::HEAD { response.map(|_| Bytes::new()) } else { response })
}

/// The content type and bytes for a path under `/console/`.
fn lookup(rest: &str) -> Option<(&'static str, &'static [u8])> {
    if let Some(name) = rest.strip_prefix("assets/") {
        return ASSETS.iter().find(|(file, _, _)| *file == name).map(|(_, content_type, body)| (*content_type, *body));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let page = match segments.as_slice() {
        [""] => true,
        ["webhooks", id] => !id.is_empty(),
        ["webhooks", id, "deliveries", event_id] => !id.is_empty() && !event_id.is_empty(),
        _ => false,
    };
    page.then_some(("text/html; charset=utf-8", SHELL))
}

fn redirect(status: StatusCode) -> Response<Bytes> {
    let mut response = text(status, "the console is at /console/\n");
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static(BASE));
    response
}

fn file(content_type: &'static str, body: &'static [u8]) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; revalidating is cheap on loopback and never shows a
    // stale console after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    secure(response)
}

fn secure(mut response: Response<Bytes>) -> Response<Bytes> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Bytes> {
        respond(&Method::GET, path).unwrap_or_else(|| panic!("{path} is the console's"))
    }

    #[test]
    fn deep_links_answer_the_app_shell_and_typos_answer_404() {
        for path in ["/console/", "/console/webhooks/abc", "/console/webhooks/abc/deliveries/def"] {
            let response = get(path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.body().as_ref(), SHELL, "{path}");
        }
        for path in ["/console/nope", "/console/webhooks/", "/console/webhooks/a/b", "/console/assets/nope.js"] {
            assert_eq!(get(path).status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn api_paths_are_not_the_consoles() {
        for path in ["/webhooks", "/events", "/api/webhooks", "/consoles"] {
            assert!(respond(&Method::GET, path).is_none(), "{path}");
        }
    }

    #[test]
    fn every_asset_the_shell_names_is_served_with_its_type() {
        let shell = String::from_utf8_lossy(SHELL);
        for (name, content_type, _) in ASSETS {
            let response = get(&format!("/console/assets/{name}"));
            assert_eq!(response.headers()[header::CONTENT_TYPE], *content_type);
            let imported =
                ASSETS.iter().any(|(_, _, body)| String::from_utf8_lossy(body).contains(&format!("./{name}")));
            assert!(shell.contains(&format!("/console/assets/{name}")) || imported, "{name} is used");
        }
    }
}
