//! `/static/{file}`: the CSS and browser scripts, compiled into the binary so the
//! app runs from any directory. Add new files to [`ASSETS`].

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// `(file name, content type, content)`.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("../../static/app.css")),
    ("app.js", JS, include_str!("../../static/app.js")),
    (
        "broadcast-page.js",
        JS,
        include_str!("../../static/broadcast-page.js"),
    ),
    (
        "stream-settings.js",
        JS,
        include_str!("../../static/stream-settings.js"),
    ),
    (
        "chat-client.js",
        JS,
        include_str!("../../static/chat-client.js"),
    ),
    ("favicon.svg", SVG, include_str!("../../static/favicon.svg")),
    (
        "live-page.js",
        JS,
        include_str!("../../static/live-page.js"),
    ),
    (
        "replay-page.js",
        JS,
        include_str!("../../static/replay-page.js"),
    ),
    (
        "media-client.js",
        JS,
        include_str!("../../static/media-client.js"),
    ),
];

pub async fn serve(path: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(name, _, _)| *name == path.as_str()) {
        Some((_, content_type, content)) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, *content_type))
            .insert_header((CACHE_CONTROL, "public, max-age=300"))
            .body(*content),
        None => super::pages::error_page(StatusCode::NOT_FOUND, "File not found", None),
    }
}
