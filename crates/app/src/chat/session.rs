//! `GET /ws`: the app's real-time socket. Checks the `Origin` (a page of another site
//! must not open a socket with the visitor's cookies), then runs one loop per socket:
//! client frames → [`ChatHandle`], server messages → the socket, and a heartbeat that
//! drops silent clients.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::ORIGIN;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use privatehub_protocol::app_socket::{
    AppClientMessage, AppServerMessage, AppSocketErrorCode, MAX_APP_SOCKET_MESSAGE_BYTES,
};
use tokio::sync::mpsc;

use super::rate_limit::SlidingWindow;
use super::server::{ChatHandle, ChatUser, OUTBOX_CAPACITY};
use crate::auth::MaybeUser;
use crate::domain::Origin;
use crate::error::json_error;
use crate::state::AppState;

/// How often the server pings the client.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A client that sent nothing (not even a pong) for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames a client may send per second (all kinds) before the socket is closed.
const FRAMES_PER_SECOND: usize = 20;

/// `GET /ws`: upgrades to a WebSocket if the request comes from the app's own origin.
pub async fn socket(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    MaybeUser(user): MaybeUser,
) -> Result<HttpResponse, actix_web::Error> {
    if !origin_allowed(&request, &state.settings.public_origin) {
        tracing::warn!(
            origin = ?request.headers().get(ORIGIN),
            expected = %state.settings.public_origin,
            "refused an app WebSocket from another origin (is APP_PUBLIC_URL the URL browsers use?)"
        );
        return Ok(json_error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "WebSocket connections are only accepted from this site's own pages",
        ));
    }
    let (response, session, stream) = actix_ws::handle(&request, body)?;
    let stream = stream
        .max_frame_size(MAX_APP_SOCKET_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_APP_SOCKET_MESSAGE_BYTES);
    let user = user.map(|user| ChatUser {
        id: user.id,
        username: user.username,
    });
    actix_web::rt::spawn(run_session(state.chat.clone(), user, session, stream));
    Ok(response)
}

/// The `Origin` header must be present and equal to the app's public origin.
fn origin_allowed(request: &HttpRequest, public_origin: &Origin) -> bool {
    request
        .headers()
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Origin::parse_url(value).ok())
        .is_some_and(|origin| &origin == public_origin)
}

async fn run_session(
    chat: ChatHandle,
    user: Option<ChatUser>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let (outbox, mut inbox) = mpsc::channel::<AppServerMessage>(OUTBOX_CAPACITY);
    let conn = chat.connect(user, outbox);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let mut flood = SlidingWindow::new(FRAMES_PER_SECOND, Duration::from_secs(1));
    let close_reason: Option<CloseReason> = loop {
        tokio::select! {
            frame = stream.recv() => {
                let Some(frame) = frame else { break None };
                last_heard = Instant::now();
                if flood.try_acquire(last_heard).is_err() {
                    break Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("too many messages".into()),
                    });
                }
                match frame {
                    Ok(AggregatedMessage::Text(text)) => {
                        match serde_json::from_str::<AppClientMessage>(&text) {
                            Ok(message) => chat.client_message(conn, message),
                            Err(error) => {
                                let reply = AppServerMessage::Error {
                                    code: AppSocketErrorCode::MalformedMessage,
                                    message: format!("Malformed message: {error}"),
                                    retry_after_ms: None,
                                };
                                if send(&mut session, &reply).await.is_err() {
                                    break None;
                                }
                            }
                        }
                    }
                    Ok(AggregatedMessage::Binary(_)) => {
                        break Some(CloseReason {
                            code: CloseCode::Unsupported,
                            description: Some("binary frames are not supported".into()),
                        });
                    }
                    Ok(AggregatedMessage::Ping(bytes)) => {
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Ok(AggregatedMessage::Pong(_)) => {}
                    Ok(AggregatedMessage::Close(reason)) => break reason,
                    Err(error) => {
                        tracing::debug!(%error, "app socket protocol error");
                        break Some(CloseReason {
                            code: CloseCode::Size,
                            description: Some("frame too large or malformed".into()),
                        });
                    }
                }
            }
            outgoing = inbox.recv() => {
                // `None`: the chat server dropped this socket (too slow, or stopping).
                let Some(message) = outgoing else {
                    break Some(CloseReason {
                        code: CloseCode::Again,
                        description: Some("reconnect".into()),
                    });
                };
                if send(&mut session, &message).await.is_err() {
                    break None;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("heartbeat timeout".into()),
                    });
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
        }
    };
    chat.disconnect(conn);
    let _ = session.close(close_reason).await;
}

async fn send(
    session: &mut actix_ws::Session,
    message: &AppServerMessage,
) -> Result<(), actix_ws::Closed> {
    match serde_json::to_string(message) {
        Ok(json) => session.text(json).await,
        Err(error) => {
            tracing::error!(%error, "serializing a socket message failed");
            Ok(())
        }
    }
}
