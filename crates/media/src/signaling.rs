//! The signaling WebSocket (`/ws`): one session per client, translating protocol
//! messages into engine calls and engine notices into protocol messages.
//!
//! Order of a session: the first message is `publish` or `watch` (token + SDP offer);
//! the server answers with `answer`; then `candidate`, `ping` and `leave` are accepted
//! and the server may push `publisher_joined`, `publisher_left`, `publisher_stalled`,
//! `publisher_resumed`, `replaced`. Errors are
//! `error{code,message,close}`; see `docs/protocol.md`.
//!
//! One client cannot hurt the others: sockets per client IP are capped (`limits`, refused
//! with `rate_limited` right after the upgrade), messages per socket are rate limited,
//! trickled candidates are capped, engine notices wait in a bounded queue (a session
//! that falls behind is closed), and `Rtc` builds run on the blocking pool, at most one
//! per core at a time.
//!
//! The connection and its loop are the edge crate's (`privatehub_edge::websocket`, the
//! same as the app's `/ws`): frame and message limits, heartbeat, a bounded outbox that
//! replies and notices are queued to without waiting, and a client that stops reading
//! is cut (its outbox full, or its queued frames untaken for [`SEND_TIMEOUT`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use bytestring::ByteString;
use privatehub_edge::limits::TokenBucket;
use privatehub_edge::websocket::{
    self, CloseCode, Ended, Flow, Outbox, OutboxError, Refusal as FrameRefusal, SocketHandler,
    SocketSettings, WebSocketCloseReason as CloseReason,
};
use privatehub_protocol::{
    MAX_SIGNALING_MESSAGE_BYTES, MediaClientMessage, MediaErrorCode, MediaRole, MediaServerMessage,
    MediaTokenClaims, MediaTokenError, SdpKind, SessionDescription, verify_media_token,
};
use secrecy::ExposeSecret;

use crate::AppState;
use crate::engine::{NoticeSender, PrepareError, notice_channel};
use crate::limits::ClientAddress;
use crate::sfu::layers::LayerChoice;
use crate::sfu::{PeerId, RemoveReason, Role};
use privatehub_protocol::media_signaling::MAX_RID_CHARS;

/// Messages a client may send in a burst.
const RATE_BURST: f64 = 40.0;
/// Sustained messages per second.
const RATE_PER_SECOND: f64 = 20.0;
/// Server WebSocket ping interval.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A client silent this long is disconnected.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// A client whose queued messages wait this long untaken is cut.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies and notices queued for one client.
const OUTBOX_CAPACITY: usize = 64;
/// Frames of any kind per second (the message bucket below is the finer limit).
const FRAMES_PER_SECOND: usize = 100;

const SOCKET_SETTINGS: SocketSettings = SocketSettings {
    max_message_bytes: MAX_SIGNALING_MESSAGE_BYTES,
    outbox_capacity: OUTBOX_CAPACITY,
    heartbeat_interval: HEARTBEAT,
    client_timeout: CLIENT_TIMEOUT,
    send_timeout: SEND_TIMEOUT,
    max_frames_per_second: FRAMES_PER_SECOND,
};

/// Remote ICE candidates accepted per socket; later ones are ignored.
const MAX_CANDIDATES: usize = 32;

/// Names of the client message types, to tell "unknown type" from "malformed".
const KNOWN_TYPES: [&str; 6] = ["publish", "watch", "candidate", "leave", "ping", "quality"];

/// `GET /ws`: upgrades, then runs the session on the current actix worker.
pub async fn ws_route(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let client = ClientAddress::of_http_request(&req, state.settings.trust_proxy_headers);
    // Counted before the upgrade, refused after it: a browser cannot read an HTTP status
    // of a failed WebSocket upgrade, but it can read an `error` message.
    let slot = state.socket_limiter.try_open(client, Instant::now());
    let origin_allowed = origin_allowed(&req, &state);
    let state = state.into_inner();
    let refused = match slot {
        Ok(slot) => {
            let (response, socket) =
                websocket::accept(&req, body, SOCKET_SETTINGS, None, Some(Box::new(slot)))?;
            if !origin_allowed {
                refuse(
                    &socket.outbox,
                    &state,
                    MediaErrorCode::Forbidden,
                    "origin not allowed",
                );
                return Ok(response);
            }
            actix_web::rt::spawn(run_session(socket, state));
            return Ok(response);
        }
        Err(refused) => refused,
    };
    tracing::debug!(?client, ?refused, "signaling socket refused");
    state.metrics.sockets_refused.fetch_add(1, Relaxed);
    let (response, socket) = websocket::accept(&req, body, SOCKET_SETTINGS, None, None)?;
    refuse(
        &socket.outbox,
        &state,
        MediaErrorCode::RateLimited,
        refused.message(),
    );
    Ok(response)
}

/// Queues an error and closes, without a session.
fn refuse(outbox: &Outbox, state: &AppState, code: MediaErrorCode, message: &str) {
    state.metrics.signaling_errors.fetch_add(1, Relaxed);
    let _ = queue(
        outbox,
        &MediaServerMessage::Error {
            code,
            message: message.to_owned(),
            close: true,
        },
    );
    outbox.close(Some(normal_close()));
}

async fn run_session(socket: websocket::Socket, state: Arc<AppState>) {
    let _open = OpenSocket::new(state.metrics.clone());
    let (notify, notices) = notice_channel(state.metrics.clone());
    let mut signaling = Signaling {
        outbox: socket.outbox.clone(),
        state,
        peer: None,
        messages: TokenBucket::new(RATE_BURST, RATE_PER_SECOND, Instant::now()),
        candidates: 0,
        watching: false,
        notify,
        notices: notices.messages,
        close_signal: notices.close,
    };
    let ended = websocket::run_session(socket, &mut signaling).await;
    if ended == Ended::Stalled {
        signaling.state.metrics.send_timeouts.fetch_add(1, Relaxed);
        tracing::debug!(peer = ?signaling.peer, "signaling client stopped reading; cut");
    }
    // Removing an already removed peer (replaced, timed out...) is a no-op.
    if let Some(peer) = signaling.peer.take() {
        signaling.state.engine.remove_peer(peer, RemoveReason::Left);
    }
}

fn normal_close() -> CloseReason {
    CloseReason {
        code: CloseCode::Normal,
        description: None,
    }
}

/// Serializes and queues `message`.
fn queue(outbox: &Outbox, message: &MediaServerMessage) -> Result<(), OutboxError> {
    let text = serde_json::to_string(message).unwrap_or_default();
    outbox.text(ByteString::from(text))
}

fn origin_allowed(req: &HttpRequest, state: &AppState) -> bool {
    match req.headers().get(actix_web::http::header::ORIGIN) {
        None => state.settings.allow_missing_origin,
        Some(origin) => {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            let origin = origin.trim_end_matches('/');
            state
                .settings
                .cors_origins
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
        }
    }
}

/// Counts an open `/ws` socket in `media_signaling_sockets` while alive.
struct OpenSocket(Arc<crate::metrics::Metrics>);

impl OpenSocket {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics.signaling_sockets.fetch_add(1, Relaxed);
        OpenSocket(metrics)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.signaling_sockets.fetch_sub(1, Relaxed);
    }
}

/// A refusal to send back to the client. Public (unnameable outside the crate) only
/// because [`parse_message`] is re-exported for the fuzz entry points.
pub struct Refusal {
    code: MediaErrorCode,
    message: String,
    close: bool,
}

impl Refusal {
    fn new(code: MediaErrorCode, message: impl Into<String>, close: bool) -> Self {
        Refusal {
            code,
            message: message.into(),
            close,
        }
    }
}

struct Signaling {
    outbox: Outbox,
    state: Arc<AppState>,
    peer: Option<PeerId>,
    /// The peer is a viewer (may send `quality`).
    watching: bool,
    /// Messages the client may send (a burst, then a sustained rate).
    messages: TokenBucket,
    /// `candidate` messages accepted so far (capped at [`MAX_CANDIDATES`]).
    candidates: usize,
    /// Where the engine sends this session's notices, and the close signal it fires.
    notify: NoticeSender,
    notices: tokio::sync::mpsc::Receiver<MediaServerMessage>,
    close_signal: Arc<tokio::sync::Notify>,
}

/// The client cannot be written to: its connection is gone, or it stopped reading.
#[derive(Debug)]
struct Gone;

impl SocketHandler for Signaling {
    async fn on_text(&mut self, text: ByteString, _outbox: &Outbox) -> Flow {
        let notify = self.notify.clone();
        if self.handle_text(&text, &notify).await {
            Flow::Continue
        } else {
            Flow::Close(Some(normal_close()))
        }
    }

    /// Engine notices, in order; the engine's close signal after the notices queued
    /// before it (`replaced` then close).
    async fn next_push(&mut self, _outbox: &Outbox) -> Flow {
        tokio::select! {
            biased;
            Some(message) = self.notices.recv() => match self.send(&message) {
                Ok(()) => Flow::Continue,
                Err(Gone) => Flow::Close(None),
            },
            () = self.close_signal.notified() => Flow::Close(Some(normal_close())),
        }
    }

    fn refused(&mut self, refusal: FrameRefusal, _outbox: &Outbox) -> Option<CloseReason> {
        let explained = match refusal {
            FrameRefusal::Binary => Some((
                MediaErrorCode::MessageTooLarge,
                "binary frames are not accepted",
            )),
            FrameRefusal::TooLarge => Some((MediaErrorCode::MessageTooLarge, "message too large")),
            FrameRefusal::Flood => Some((MediaErrorCode::RateLimited, "too many messages")),
            FrameRefusal::Malformed => None,
        };
        if let Some((code, message)) = explained {
            let _ = self.error(code, message, true);
        }
        Some(normal_close())
    }
}

impl Signaling {
    /// Handles one text message; returns false when the socket must close.
    async fn handle_text(&mut self, text: &str, notify: &NoticeSender) -> bool {
        if !self.take_token() {
            let _ = self.error(MediaErrorCode::RateLimited, "too many messages", true);
            return false;
        }
        let result = match parse_message(text) {
            Ok(message) => self.on_message(message, notify).await,
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok(keep_going) => keep_going,
            Err(refusal) => {
                let sent = self.error(refusal.code, &refusal.message, refusal.close);
                sent.is_ok() && !refusal.close
            }
        }
    }

    async fn on_message(
        &mut self,
        message: MediaClientMessage,
        notify: &NoticeSender,
    ) -> Result<bool, Refusal> {
        match message {
            MediaClientMessage::Ping => Ok(self.send(&MediaServerMessage::Pong).is_ok()),
            MediaClientMessage::Leave => {
                if let Some(peer) = self.peer.take() {
                    self.state.engine.remove_peer(peer, RemoveReason::Left);
                }
                Ok(false)
            }
            MediaClientMessage::Candidate { candidate } => {
                let Some(peer) = self.peer else {
                    return Err(Refusal::new(
                        MediaErrorCode::WrongState,
                        "candidate before publish or watch",
                        false,
                    ));
                };
                let line = candidate.trim();
                let line = line.strip_prefix("a=").unwrap_or(line);
                // Each remote candidate costs memory and ICE pairs in the peer's `Rtc`:
                // browsers send a handful, so more than MAX_CANDIDATES are ignored.
                if self.candidates >= MAX_CANDIDATES {
                    return Ok(true);
                }
                // mDNS (.local) and end-of-candidates lines do not parse: ignore them.
                if let Ok(candidate) = str0m::Candidate::from_sdp_string(line) {
                    self.candidates += 1;
                    self.state.engine.remote_candidate(peer, candidate);
                }
                Ok(true)
            }
            MediaClientMessage::Quality { layer } => {
                let Some(peer) = self.peer.filter(|_| self.watching) else {
                    return Err(Refusal::new(
                        MediaErrorCode::WrongState,
                        "quality before watch",
                        false,
                    ));
                };
                let choice = match layer.as_str() {
                    "auto" => LayerChoice::Auto,
                    rid if !rid.is_empty()
                        && rid.len() <= MAX_RID_CHARS
                        && rid
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                    {
                        LayerChoice::Fixed(str0m::media::Rid::from(rid))
                    }
                    _ => {
                        return Err(Refusal::new(
                            MediaErrorCode::MalformedMessage,
                            "layer must be \"auto\" or a layer's rid",
                            false,
                        ));
                    }
                };
                self.state.engine.set_layer_choice(peer, choice);
                Ok(true)
            }
            MediaClientMessage::Publish { token, offer } => {
                self.start(Role::Publisher, &token, offer, notify).await
            }
            MediaClientMessage::Watch { token, offer } => {
                self.start(Role::Viewer, &token, offer, notify).await
            }
        }
    }

    async fn start(
        &mut self,
        role: Role,
        token: &str,
        offer: SessionDescription,
        notify: &NoticeSender,
    ) -> Result<bool, Refusal> {
        if self.peer.is_some() {
            return Err(Refusal::new(
                MediaErrorCode::WrongState,
                "this socket already publishes or watches",
                false,
            ));
        }
        let claims = self.verify(token)?;
        if role == Role::Publisher && claims.role != MediaRole::Publish {
            return Err(Refusal::new(
                MediaErrorCode::Forbidden,
                "this token may only watch",
                true,
            ));
        }
        if offer.kind != SdpKind::Offer {
            return Err(Refusal::new(
                MediaErrorCode::InvalidSdp,
                "expected an offer",
                false,
            ));
        }
        let live = claims.live_id;
        let prepared = crate::whip::build_peer(&self.state, role, live, offer.sdp).await;
        let (mut new_peer, answer, worker) = prepared.map_err(|error| match error {
            PrepareError::ServerFull | PrepareError::LiveFull => {
                Refusal::new(MediaErrorCode::ServerFull, error.to_string(), true)
            }
            PrepareError::InvalidSdp { problem, detail } => {
                // str0m's text stays in the log: it can hold heap addresses.
                tracing::debug!(?problem, %detail, "offer refused");
                Refusal::new(MediaErrorCode::InvalidSdp, problem.message(), false)
            }
            PrepareError::Internal(detail) => {
                tracing::error!(%detail, "peer set-up failed");
                Refusal::new(MediaErrorCode::Internal, "peer set-up failed", true)
            }
        })?;
        new_peer.record = role == Role::Publisher && claims.record;
        let peer = new_peer.id;
        let adaptive = new_peer.estimating;
        tracing::debug!(%peer, %live, ?role, worker, adaptive, sub = %claims.sub, "peer prepared");
        // Register first so the worker knows the peer before the client's first STUN
        // check; notices queued meanwhile are only read after the answer is sent.
        self.peer = Some(peer);
        self.watching = role == Role::Viewer;
        self.state
            .engine
            .add_peer(new_peer, worker, notify.clone())
            .map_err(|error| Refusal::new(MediaErrorCode::Internal, error.to_string(), true))?;
        let answer = MediaServerMessage::Answer {
            answer: SessionDescription {
                kind: SdpKind::Answer,
                sdp: answer.to_sdp_string(),
            },
            live_id: live,
            adaptive,
        };
        Ok(self.send(&answer).is_ok())
    }

    fn verify(&self, token: &str) -> Result<MediaTokenClaims, Refusal> {
        let secret = self.state.settings.token_secret.expose_secret().as_bytes();
        verify_media_token(token, secret).map_err(|error| match error {
            MediaTokenError::Expired => {
                Refusal::new(MediaErrorCode::TokenExpired, error.to_string(), true)
            }
            _ => Refusal::new(MediaErrorCode::InvalidToken, error.to_string(), true),
        })
    }

    fn take_token(&mut self) -> bool {
        self.messages.try_take(Instant::now())
    }

    /// Queues `message`; a full outbox means the client stopped reading.
    fn send(&mut self, message: &MediaServerMessage) -> Result<(), Gone> {
        match queue(&self.outbox, message) {
            Ok(()) => Ok(()),
            Err(OutboxError::Full) => {
                self.state.metrics.send_timeouts.fetch_add(1, Relaxed);
                tracing::debug!(peer = ?self.peer, "signaling client stopped reading; closing");
                Err(Gone)
            }
            Err(OutboxError::Closed) => Err(Gone),
        }
    }

    fn error(&mut self, code: MediaErrorCode, message: &str, close: bool) -> Result<(), Gone> {
        self.state.metrics.signaling_errors.fetch_add(1, Relaxed);
        self.send(&MediaServerMessage::Error {
            code,
            message: message.to_owned(),
            close,
        })
    }
}

/// Parses a client message, telling malformed JSON from an unknown `type`. Public for
/// the fuzz entry points (`crates/fuzz-entry`).
pub fn parse_message(text: &str) -> Result<MediaClientMessage, Refusal> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            MediaErrorCode::MalformedMessage,
            format!("not JSON: {e}"),
            false,
        )
    })?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(Refusal::new(
            MediaErrorCode::MalformedMessage,
            "expected an object with a string \"type\"",
            false,
        ));
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Err(Refusal::new(
            MediaErrorCode::UnknownMessageType,
            format!("unknown message type {kind:?}"),
            false,
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        Refusal::new(
            MediaErrorCode::MalformedMessage,
            format!("bad {kind} message: {e}"),
            false,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Option<MediaErrorCode> {
        parse_message(text).err().map(|r| r.code)
    }

    #[test]
    fn parse_errors_have_codes() {
        assert_eq!(code("{"), Some(MediaErrorCode::MalformedMessage));
        assert_eq!(code("[1]"), Some(MediaErrorCode::MalformedMessage));
        assert_eq!(
            code(r#"{"type":"dance"}"#),
            Some(MediaErrorCode::UnknownMessageType)
        );
        assert_eq!(
            code(r#"{"type":"watch"}"#),
            Some(MediaErrorCode::MalformedMessage)
        );
        assert_eq!(code(r#"{"type":"ping"}"#), None);
    }
}
