//! HTTP routes, one module per resource. [`configure`] is the whole route table.

pub mod accounts;
pub mod assets;
pub mod health;
pub mod internal;
pub mod json;
pub mod lives;
pub mod pages;
pub mod stream_keys;
pub mod videos;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::json_error;

/// Registers every route. Unknown `/api` paths get a JSON 404, anything else the
/// HTML 404 page (see [`not_found`]).
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/healthz").route(get_or_head().to(health::healthz)))
        .service(web::resource("/metrics").route(web::get().to(health::metrics)))
        .service(web::resource("/ws").route(web::get().to(crate::chat::session::socket)))
        .service(
            web::scope("/api")
                .service(web::resource("/auth/signup").route(web::post().to(accounts::signup)))
                .service(web::resource("/auth/login").route(web::post().to(accounts::login)))
                .service(web::resource("/auth/logout").route(web::post().to(accounts::logout)))
                .service(web::resource("/auth/me").route(web::get().to(accounts::me)))
                .service(
                    web::resource("/account/recording")
                        .route(web::put().to(accounts::set_recording)),
                )
                .service(web::resource("/lives").route(web::get().to(lives::list)))
                .service(web::resource("/lives/start").route(web::post().to(lives::start)))
                .service(web::resource("/lives/stop").route(web::post().to(lives::stop)))
                .service(web::resource("/lives/{username}").route(web::get().to(lives::get_one)))
                .service(
                    web::resource("/lives/{username}/token").route(web::post().to(lives::token)),
                )
                .service(
                    web::resource("/users/{username}/lives").route(web::get().to(lives::history)),
                )
                .service(web::resource("/me/stream-key").route(web::get().to(stream_keys::show)))
                .service(
                    web::resource("/me/stream-key/rotate")
                        .route(web::post().to(stream_keys::rotate)),
                )
                .service(
                    web::resource("/videos/{id}")
                        .route(web::get().to(videos::get_one))
                        .route(web::delete().to(videos::delete)),
                )
                .default_service(web::to(not_found)),
        )
        .service(
            web::scope("/internal/v1")
                .app_data(
                    web::JsonConfig::default()
                        .limit(privatehub_protocol::internal_api::MAX_INTERNAL_BODY_BYTES),
                )
                .service(
                    web::resource("/whip/authorize")
                        .route(web::post().to(internal::whip_authorize)),
                )
                .service(web::resource("/whip/start").route(web::post().to(internal::whip_start)))
                .service(web::resource("/whip/ended").route(web::post().to(internal::whip_ended)))
                .service(web::resource("/whip/sync").route(web::post().to(internal::whip_sync)))
                .service(
                    web::resource("/recordings/sync")
                        .route(web::post().to(internal::recordings_sync)),
                )
                .service(
                    web::resource("/lives/{username}").route(web::get().to(internal::current_live)),
                ),
        )
        .service(web::resource("/static/{file}").route(get_or_head().to(assets::serve)))
        .service(web::resource("/").route(get_or_head().to(pages::home)))
        .service(web::resource("/signup").route(get_or_head().to(pages::signup)))
        .service(web::resource("/login").route(get_or_head().to(pages::login)))
        .service(web::resource("/settings/stream").route(get_or_head().to(pages::stream_settings)))
        .service(web::resource("/{username}/live").route(get_or_head().to(pages::live)))
        .service(web::resource("/{username}/start-live").route(get_or_head().to(pages::start_live)))
        .service(web::resource("/{username}/videos").route(get_or_head().to(pages::videos)))
        .service(web::resource("/{username}/videos/{id}").route(get_or_head().to(pages::replay)));
}

/// GET, and HEAD (answered with the same headers and no body) for pages and probes.
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Whether a path belongs to the JSON API.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || is_internal_path(path)
}

/// Whether a path belongs to the internal API (token-authenticated, no cookies).
pub fn is_internal_path(path: &str) -> bool {
    path.starts_with("/internal/")
}

/// The app's default service: JSON for the API, the HTML page otherwise.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    if is_api_path(request.path()) {
        json_error(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
    } else if request.method() == Method::GET || request.method() == Method::HEAD {
        pages::error_page(StatusCode::NOT_FOUND, "Page not found", None)
    } else {
        pages::error_page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None)
    }
}
