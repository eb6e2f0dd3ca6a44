//! `GET /ws`: the app's real-time socket. Checks the `Origin` (a page of another site
//! must not open a socket with the visitor's cookies) and the sockets per client
//! network, then runs the edge crate's session loop: client frames → [`ChatHandle`],
//! pings, and the limits. The chat server writes to the socket's outbox itself, so a
//! broadcast costs one queue push per member and no task in between.
//!
//! A client that stops reading is dropped: its outbox fills (the chat server drops it)
//! or, when little is sent, its queued frames wait past [`SEND_TIMEOUT`] (the loop
//! cuts it). Its address keeps the socket counted until the connection is really gone.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::ORIGIN;
use actix_web::{HttpRequest, HttpResponse, web};
use bytestring::ByteString;
use privatehub_edge::websocket::{
    self, CloseCode, DeliveryObserver, Ended, Flow, Outbox, Refusal, SocketHandler, SocketSettings,
    WebSocketCloseReason as CloseReason,
};
use privatehub_protocol::app_socket::{
    AppClientMessage, AppServerMessage, AppSocketErrorCode, MAX_APP_SOCKET_MESSAGE_BYTES,
};

use super::server::{ChatHandle, ChatUser, ConnId, Fanout, OUTBOX_CAPACITY, Outgoing};
use crate::auth::client::ClientInfo;
use crate::auth::session::MaybeSession;
use crate::domain::Origin;
use crate::error::json_error;
use crate::log_field::LogField;
use crate::state::AppState;

/// How often the server pings the client.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A client that sent nothing (not even a pong) for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames a client may send per second (all kinds) before the socket is closed.
const FRAMES_PER_SECOND: usize = 20;
/// A client whose queued messages wait this long untaken is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

const SOCKET_SETTINGS: SocketSettings = SocketSettings {
    max_message_bytes: MAX_APP_SOCKET_MESSAGE_BYTES,
    outbox_capacity: OUTBOX_CAPACITY,
    heartbeat_interval: HEARTBEAT_INTERVAL,
    client_timeout: CLIENT_TIMEOUT,
    send_timeout: SEND_TIMEOUT,
    max_frames_per_second: FRAMES_PER_SECOND,
};

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
    let slot = state.sockets.try_open(network, Instant::now()).ok();
    let metrics = state.metrics.clone();
    let delivery_metrics = metrics.clone();
    let observer: DeliveryObserver =
        Arc::new(move |delay| delivery_metrics.chat_delivery.observe(delay));
    let refused = slot.is_none();
    let keep = slot.map(|slot| Box::new(slot) as Box<dyn std::any::Any>);
    let (response, socket) =
        websocket::accept(&request, body, SOCKET_SETTINGS, Some(observer), keep)?;
    if refused {
        metrics.refused_socket_cap.fetch_add(1, Relaxed);
        tracing::info!(network = ?network, "refused an app socket: too many from this address");
        queue(
            &socket.outbox,
            &AppServerMessage::Error {
                code: AppSocketErrorCode::RateLimited,
                message: "Too many open connections from your address.".into(),
                retry_after_ms: Some(10_000),
                message_id: None,
            },
        );
        socket.outbox.close(Some(CloseReason {
            code: CloseCode::Policy,
            description: Some("too many connections".into()),
        }));
        return Ok(response);
    }
    let user = signed_in.map(|(user, session)| ChatUser {
        id: user.id,
        username: user.username,
        session,
    });
    let chat = state.chat.clone();
    actix_web::rt::spawn(async move {
        metrics.sockets_open.fetch_add(1, Relaxed);
        let fanout = Fanout::for_this_worker(&metrics);
        let conn = chat.connect(user, network, socket.outbox.clone(), Some(fanout));
        let mut handler = ChatSocket {
            chat: chat.clone(),
            conn,
        };
        match websocket::run_session(socket, &mut handler).await {
            Ended::Stalled => {
                metrics.sockets_send_timeouts.fetch_add(1, Relaxed);
            }
            Ended::HeartbeatTimeout => {
                metrics.sockets_heartbeat_timeouts.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        chat.disconnect(conn);
        metrics.sockets_open.fetch_sub(1, Relaxed);
    });
    Ok(response)
}

/// The app's side of one socket: client messages go to the chat server.
struct ChatSocket {
    chat: ChatHandle,
    conn: ConnId,
}

impl SocketHandler for ChatSocket {
    async fn on_text(&mut self, text: ByteString, outbox: &Outbox) -> Flow {
        match serde_json::from_str::<AppClientMessage>(&text) {
            Ok(message) => self.chat.client_message(self.conn, message),
            Err(error) => queue(
                outbox,
                &AppServerMessage::Error {
                    code: AppSocketErrorCode::MalformedMessage,
                    message: format!("Malformed message: {error}"),
                    retry_after_ms: None,
                    message_id: None,
                },
            ),
        }
        Flow::Continue
    }

    fn refused(&mut self, refusal: Refusal, _outbox: &Outbox) -> Option<CloseReason> {
        match refusal {
            Refusal::TooLarge | Refusal::Malformed => Some(CloseReason {
                code: CloseCode::Size,
                description: Some("frame too large or malformed".into()),
            }),
            Refusal::Binary | Refusal::Flood => Some(refusal.close_reason()),
        }
    }
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

/// Queues a reply the socket makes itself (refusals before or outside the chat server).
fn queue(outbox: &Outbox, message: &AppServerMessage) {
    if let Some(outgoing) = Outgoing::new(message, Instant::now()) {
        let _ = outbox.text(outgoing.json);
    }
}
