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
//! A client that stops reading is closed: actix-ws queues at most 32 outgoing frames, so
//! once the TCP window and buffers are full a send waits; every send (replies, notices,
//! pings) has a timeout, and any failed or timed-out send ends the session. The
//! heartbeat goes first in the session's `select!`, so a client that keeps sending
//! cannot starve it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use futures_util::StreamExt;
use privatehub_protocol::{
    MAX_SIGNALING_MESSAGE_BYTES, MediaClientMessage, MediaErrorCode, MediaRole, MediaServerMessage,
    MediaTokenClaims, MediaTokenError, SdpKind, SessionDescription, verify_media_token,
};
use secrecy::ExposeSecret;

use crate::AppState;
use crate::engine::{NoticeSender, PrepareError, SessionNotices, notice_channel};
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
/// Longest wait for one outgoing message to be accepted by a client's socket.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the close frame of a session whose sends still worked.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
    let client = crate::limits::client_ip(
        req.peer_addr(),
        req.headers()
            .get(actix_web::http::header::X_FORWARDED_FOR)
            .and_then(|h| h.to_str().ok()),
        state.settings.trust_proxy_headers,
    );
    // Counted before the upgrade, refused after it: a browser cannot read an HTTP status
    // of a failed WebSocket upgrade, but it can read an `error` message.
    let slot = state.socket_limiter.try_open(client, Instant::now());
    let origin_allowed = origin_allowed(&req, &state);
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_SIGNALING_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_SIGNALING_MESSAGE_BYTES);
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let _open = OpenSocket::new(state.metrics.clone());
        let mut signaling = Signaling {
            session,
            state,
            peer: None,
            bucket: RATE_BURST,
            bucket_at: Instant::now(),
            candidates: 0,
            watching: false,
            gone: false,
        };
        let _slot = match slot {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(?client, ?refused, "signaling socket refused");
                signaling
                    .state
                    .metrics
                    .sockets_refused
                    .fetch_add(1, Relaxed);
                let _ = signaling
                    .error(MediaErrorCode::RateLimited, refused.message(), true)
                    .await;
                signaling.close().await;
                return;
            }
        };
        if !origin_allowed {
            let _ = signaling
                .error(MediaErrorCode::Forbidden, "origin not allowed", true)
                .await;
            signaling.close().await;
            return;
        }
        signaling.run(stream).await;
    });
    Ok(response)
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
    session: Session,
    state: Arc<AppState>,
    peer: Option<PeerId>,
    /// The peer is a viewer (may send `quality`).
    watching: bool,
    bucket: f64,
    bucket_at: Instant,
    /// `candidate` messages accepted so far (capped at [`MAX_CANDIDATES`]).
    candidates: usize,
    /// A send failed or timed out: nothing more is sent, not even a close frame.
    gone: bool,
}

/// The client cannot be written to: its connection is gone, or it stopped reading.
#[derive(Debug)]
struct Gone;

impl Signaling {
    async fn run(&mut self, mut stream: AggregatedMessageStream) {
        let (notify, notices) = notice_channel(self.state.metrics.clone());
        let SessionNotices {
            messages: mut notices,
            close: close_signal,
            ..
        } = notices;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut last_heard = Instant::now();
        loop {
            // Biased: the heartbeat first, or a client that always has a message ready
            // would starve it; queued notices before a close signal sent after them
            // (`replaced` then close).
            tokio::select! {
                biased;
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT || self.ping().await.is_err() {
                        break;
                    }
                }
                Some(message) = notices.recv() => {
                    if self.send(&message).await.is_err() {
                        break;
                    }
                }
                () = close_signal.notified() => break,
                message = stream.next() => {
                    last_heard = Instant::now();
                    let Some(message) = message else { break };
                    let keep_going = match message {
                        Ok(AggregatedMessage::Text(text)) => self.on_text(&text, &notify).await,
                        Ok(AggregatedMessage::Binary(_)) => {
                            let _ = self.error(MediaErrorCode::MessageTooLarge, "binary frames are not accepted", true).await;
                            false
                        }
                        Ok(AggregatedMessage::Ping(bytes)) => self.pong(&bytes).await.is_ok(),
                        Ok(AggregatedMessage::Pong(_)) => true,
                        Ok(AggregatedMessage::Close(_)) => false,
                        Err(actix_ws::ProtocolError::Overflow) => {
                            let _ = self.error(MediaErrorCode::MessageTooLarge, "message too large", true).await;
                            false
                        }
                        Err(_) => false,
                    };
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        // Removing an already removed peer (replaced, timed out...) is a no-op.
        if let Some(peer) = self.peer.take() {
            self.state.engine.remove_peer(peer, RemoveReason::Left);
        }
        self.close().await;
    }

    /// Handles one text message; returns false when the socket must close.
    async fn on_text(&mut self, text: &str, notify: &NoticeSender) -> bool {
        if !self.take_token() {
            let _ = self
                .error(MediaErrorCode::RateLimited, "too many messages", true)
                .await;
            return false;
        }
        let result = match parse_message(text) {
            Ok(message) => self.on_message(message, notify).await,
            Err(refusal) => Err(refusal),
        };
        match result {
            Ok(keep_going) => keep_going,
            Err(refusal) => {
                let sent = self
                    .error(refusal.code, &refusal.message, refusal.close)
                    .await;
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
            MediaClientMessage::Ping => Ok(self.send(&MediaServerMessage::Pong).await.is_ok()),
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
        let (new_peer, answer, worker) = prepared.map_err(|error| match error {
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
        Ok(self.send(&answer).await.is_ok())
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
        let now = Instant::now();
        let refill = now.duration_since(self.bucket_at).as_secs_f64() * RATE_PER_SECOND;
        self.bucket = (self.bucket + refill).min(RATE_BURST);
        self.bucket_at = now;
        if self.bucket >= 1.0 {
            self.bucket -= 1.0;
            true
        } else {
            false
        }
    }

    async fn send(&mut self, message: &MediaServerMessage) -> Result<(), Gone> {
        let text = serde_json::to_string(message).unwrap_or_default();
        let sent = within_send_timeout(SEND_TIMEOUT, self.session.text(text)).await;
        self.sent(sent)
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        let sent = within_send_timeout(SEND_TIMEOUT, self.session.ping(b"")).await;
        self.sent(sent)
    }

    async fn pong(&mut self, bytes: &[u8]) -> Result<(), Gone> {
        let sent = within_send_timeout(SEND_TIMEOUT, self.session.pong(bytes)).await;
        self.sent(sent)
    }

    /// Every send goes through here: one failure and the session is done.
    fn sent(&mut self, sent: Result<(), SendFailed>) -> Result<(), Gone> {
        if self.gone {
            return Err(Gone);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(failure) => {
                if failure == SendFailed::TimedOut {
                    self.state.metrics.send_timeouts.fetch_add(1, Relaxed);
                    tracing::debug!(peer = ?self.peer, "signaling client stopped reading; closing");
                }
                self.gone = true;
                Err(Gone)
            }
        }
    }

    async fn error(
        &mut self,
        code: MediaErrorCode,
        message: &str,
        close: bool,
    ) -> Result<(), Gone> {
        self.state.metrics.signaling_errors.fetch_add(1, Relaxed);
        self.send(&MediaServerMessage::Error {
            code,
            message: message.to_owned(),
            close,
        })
        .await
    }

    /// Sends a close frame unless a send already failed: then the frame would only wait
    /// behind the ones the client is not reading. Dropping the session ends the socket.
    async fn close(&mut self) {
        if self.gone {
            return;
        }
        self.gone = true;
        let close = self.session.clone().close(Some(CloseReason {
            code: CloseCode::Normal,
            description: None,
        }));
        let _ = within_send_timeout(CLOSE_TIMEOUT, close).await;
    }
}

/// Why a send to the client did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailed {
    /// The socket is closed.
    Closed,
    /// Not accepted within the timeout: the client does not read (its TCP window and
    /// actix-ws's queue of 32 frames are full).
    TimedOut,
}

async fn within_send_timeout(
    timeout: Duration,
    send: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), SendFailed> {
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(actix_ws::Closed)) => Err(SendFailed::Closed),
        Err(_) => Err(SendFailed::TimedOut),
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
