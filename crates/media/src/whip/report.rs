//! The media server's half of the internal API: the report of WHIP publishes sent to
//! the app every few seconds, and `POST /internal/v1/publishers/end`, which the app
//! calls when a stream key is rotated.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use privatehub_protocol::internal_api::{
    EndPublishesRequest, EndPublishesResponse, InternalCaller, verify_internal_token,
};
use secrecy::ExposeSecret;

use super::sessions::StopReason;
use crate::AppState;

/// How often the media server reports its WHIP publishes (the app ends a WHIP live
/// nobody reported for 30 s).
pub const WHIP_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Reports WHIP publishes to the app and ends those it revoked. Runs for the server's
/// lifetime.
pub async fn report_whip_sessions(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(WHIP_REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sessions = state.http_sessions.whip_reports();
        if sessions.is_empty() {
            continue;
        }
        match state.app_api.sync(sessions).await {
            Ok(answer) => {
                for live in answer.revoked {
                    let ended = state
                        .http_sessions
                        .stop_whip_where(StopReason::Revoked, |_, session_live| {
                            session_live == live
                        });
                    tracing::info!(%live, ended, "WHIP publish revoked by the app");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot report WHIP publishes to the app"),
        }
    }
}

/// `POST /internal/v1/publishers/end`: ends the user's WHIP publishes holding a stream
/// key older than `key_generation`.
pub async fn end_publishes(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<EndPublishesRequest>,
) -> HttpResponse {
    let token = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    let secret = state.settings.token_secret.expose_secret().as_bytes();
    if verify_internal_token(token.trim(), secret, InternalCaller::App, request.path()).is_err() {
        return HttpResponse::Unauthorized().json(serde_json::json!({
            "error": {"code": "unauthenticated", "message": "missing or invalid internal token"}
        }));
    }
    let request = body.into_inner();
    let ended = state
        .http_sessions
        .stop_whip_where(StopReason::Revoked, |publisher, _| {
            publisher.user_id == request.user_id
                && publisher.key_generation < request.key_generation
        });
    if ended > 0 {
        tracing::info!(
            user_id = request.user_id,
            ended,
            "WHIP publishes ended: stream key rotated"
        );
    }
    HttpResponse::Ok().json(EndPublishesResponse { ended })
}
