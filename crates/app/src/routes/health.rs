//! `GET /healthz`: 200 when the database answers, 503 otherwise; `GET /metrics`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::json::HealthJson;
use crate::db;
use crate::error::InternalError;
use crate::state::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let result = db::run(&state.pool, |connection| {
        db::ping(connection).map_err(InternalError::from)
    })
    .await;
    let redis = state.cluster.as_ref().map(|cluster| {
        let state = match cluster.connection.get() {
            Some(_) => "ok",
            None => "unreachable",
        };
        state.to_owned()
    });
    match result {
        Ok(()) => HttpResponse::Ok().json(HealthJson {
            status: "ok".into(),
            database: "ok".into(),
            redis,
        }),
        Err(error) => {
            tracing::error!(%error, "health check: database unreachable");
            HttpResponse::ServiceUnavailable().json(HealthJson {
                status: "unavailable".into(),
                database: "unreachable".into(),
                redis,
            })
        }
    }
}

/// `GET /metrics`: the app's counters in the Prometheus text format, for a scraper on
/// the host. Requests that came through the proxy (they carry `X-Forwarded-For` while
/// proxy headers are trusted) get 404: the numbers are not for the internet, and the
/// shipped nginx site refuses the path as well.
pub async fn metrics(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if state.settings.trust_proxy_headers && request.headers().contains_key("x-forwarded-for") {
        return crate::routes::not_found(request).await;
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
