//! The static assets, embedded in the binary: one stylesheet and one small script module (copy
//! buttons, typed confirmations), both optional to the pages, which work without script.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::StatusCode;
use hyper::header;

use super::Console;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The assets under `prefix` (`/console/assets`, `/portal/assets`).
pub fn routes(prefix: &str) -> Router<Console> {
    Router::new().route(&format!("{prefix}/{{file}}"), get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Short: a new release's assets reach browsers within minutes.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
