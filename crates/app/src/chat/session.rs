//! `GET /ws`: the app's real-time socket. Checks the `Origin` (a page of another site
//! must not open a socket with the visitor's cookies) and the sockets per client
//! network, then runs one loop per socket: client frames → [`ChatHandle`], server
//! messages → the socket, and a heartbeat that drops silent clients.
//!
//! Every write to the client has a deadline: a client that stops reading fills its TCP
//! window, and without one the loop would wait forever, its heartbeat never firing and
//! its socket still counted as a viewer.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
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
use super::server::{ChatHandle, ChatUser, OUTBOX_CAPACITY, Outgoing, OutgoingKind};
use super::socket_limit::SocketSlot;
use crate::auth::client::{ClientInfo, ClientNetwork};
use crate::auth::session::MaybeSession;
use crate::domain::Origin;
use crate::error::json_error;
use crate::log_field::LogField;
use crate::metrics::AppMetrics;
use crate::state::AppState;

/// How often the server pings the client.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A client that sent nothing (not even a pong) for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames a client may send per second (all kinds) before the socket is closed.
const FRAMES_PER_SECOND: usize = 20;
/// Longest wait for one message (or ping, or close) to be taken by the client's
/// connection; a client that does not read for this long is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /ws`: upgrades to a WebSocket if the request comes from the app's own origin.
pub async fn socket(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    MaybeSession(signed_in): MaybeSession,
) -> Result<HttpResponse, actix_web::Error> {
    if !origin_allowed(&request, &state.settings.public_origin) {
        let origin = request
            .headers()
            .get(ORIGIN)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        tracing::warn!(
            origin = ?origin.as_deref().map(LogField),
            expected = %state.settings.public_origin,
            "refused an app WebSocket from another origin (is APP_PUBLIC_URL the URL browsers use?)"
        );
        return Ok(json_error(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "WebSocket connections are only accepted from this site's own pages",
        ));
    }
    let network = ClientInfo::from_request(&request, state.settings.trust_proxy_headers).network();
    // Counted before the upgrade, refused after it: a page cannot read the status of a
    // failed upgrade, but it can read an `error` message.
    let slot = state.sockets.try_open(network);
    let (response, mut session, stream) = actix_ws::handle(&request, body)?;
    let metrics = state.metrics.clone();
    let Some(slot) = slot else {
        metrics.refused_socket_cap.fetch_add(1, Relaxed);
        tracing::info!(network = ?network, "refused an app socket: too many from this address");
        let refusal = AppServerMessage::Error {
            code: AppSocketErrorCode::RateLimited,
            message: "Too many open connections from your address.".into(),
            retry_after_ms: Some(10_000),
            message_id: None,
        };
        actix_web::rt::spawn(async move {
            let _ = send(&mut session, &refusal).await;
            let reason = CloseReason {
                code: CloseCode::Policy,
                description: Some("too many connections".into()),
            };
            let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(reason))).await;
        });
        return Ok(response);
    };
    let stream = stream
        .max_frame_size(MAX_APP_SOCKET_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_APP_SOCKET_MESSAGE_BYTES);
    let user = signed_in.map(|(user, session)| ChatUser {
        id: user.id,
        username: user.username,
        session,
    });
    let socket = Socket {
        chat: state.chat.clone(),
        user,
        network,
        metrics,
        _slot: slot,
    };
    actix_web::rt::spawn(run_session(socket, session, stream));
    Ok(response)
}

/// What one socket's loop needs besides the connection itself.
struct Socket {
    chat: ChatHandle,
    user: Option<ChatUser>,
    network: Option<ClientNetwork>,
    metrics: Arc<AppMetrics>,
    /// Its place in the per-network count, freed when the loop ends.
    _slot: SocketSlot,
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
    socket: Socket,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let Socket {
        chat,
        user,
        network,
        metrics,
        _slot,
    } = socket;
    metrics.sockets_open.fetch_add(1, Relaxed);
    let (outbox, mut inbox) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
    let conn = chat.connect(user, network, outbox);
    let send_timed_out = || {
        metrics.sockets_send_timeouts.fetch_add(1, Relaxed);
        None
    };
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
                message_id: None,
                                };
                                match send(&mut session, &reply).await {
                                    Ok(()) => {}
                                    Err(SendFailure::Closed) => break None,
                                    Err(SendFailure::TimedOut) => break send_timed_out(),
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
                        match within_deadline(session.pong(&bytes)).await {
                            Ok(()) => {}
                            Err(SendFailure::Closed) => break None,
                            Err(SendFailure::TimedOut) => break send_timed_out(),
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
                let Some(Outgoing { json, kind, queued_at }) = outgoing else {
                    break Some(CloseReason {
                        code: CloseCode::Again,
                        description: Some("reconnect".into()),
                    });
                };
                match within_deadline(session.text(json)).await {
                    Ok(()) => {}
                    Err(SendFailure::Closed) => break None,
                    Err(SendFailure::TimedOut) => break send_timed_out(),
                }
                if kind == OutgoingKind::ChatMessage {
                    metrics.chat_delivery.observe(queued_at.elapsed());
                }
                if kind == OutgoingKind::ServerRestarting {
                    break Some(CloseReason {
                        code: CloseCode::Restart,
                        description: Some("server restarting".into()),
                    });
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > CLIENT_TIMEOUT {
                    metrics.sockets_heartbeat_timeouts.fetch_add(1, Relaxed);
                    break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("heartbeat timeout".into()),
                    });
                }
                match within_deadline(session.ping(b"")).await {
                    Ok(()) => {}
                    Err(SendFailure::Closed) => break None,
                    Err(SendFailure::TimedOut) => break send_timed_out(),
                }
            }
        }
    };
    // Out of the room (and the viewer count) first; then the close frame, which a
    // client that does not read may never take.
    chat.disconnect(conn);
    metrics.sockets_open.fetch_sub(1, Relaxed);
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(close_reason)).await;
}

/// Why a write to the client did not happen.
enum SendFailure {
    Closed,
    TimedOut,
}

async fn within_deadline(
    write: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), SendFailure> {
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(actix_ws::Closed)) => Err(SendFailure::Closed),
        Err(_) => Err(SendFailure::TimedOut),
    }
}

/// Sends a reply the socket makes itself (refusals before or outside the chat server).
async fn send(
    session: &mut actix_ws::Session,
    message: &AppServerMessage,
) -> Result<(), SendFailure> {
    match Outgoing::new(message, std::time::Instant::now()) {
        Some(outgoing) => within_deadline(session.text(outgoing.json)).await,
        None => Ok(()),
    }
}
