//! `GET /healthz`: 200 when the database answers, 503 otherwise.

use actix_web::{HttpResponse, web};

use super::json::HealthJson;
use crate::db;
use crate::error::InternalError;
use crate::state::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let result = db::run(&state.pool, |connection| {
        db::ping(connection).map_err(InternalError::from)
    })
    .await;
    match result {
        Ok(()) => HttpResponse::Ok().json(HealthJson {
            status: "ok",
            database: "ok",
        }),
        Err(error) => {
            tracing::error!(%error, "health check: database unreachable");
            HttpResponse::ServiceUnavailable().json(HealthJson {
                status: "unavailable",
                database: "unreachable",
            })
        }
    }
}
