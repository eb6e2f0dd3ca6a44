//! The loop of one socket: the client's messages to the service's [`SocketHandler`],
//! pings, and the checks that keep one client from holding the server: silent clients,
//! floods of frames, messages over the limit, readers that stopped reading.

use std::future::Future;
use std::time::{Duration, Instant};

use actix_http::ws::{CloseCode, CloseReason};
use bytestring::ByteString;
use futures_util::StreamExt;

use super::{InboundError, Incoming, Outbox, OutboxError, Socket};
use crate::limits::SlidingWindow;

/// What the loop does after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Close the socket (after what is queued) with this reason.
    Close(Option<CloseReason>),
}

/// A client frame the loop refuses (the socket then closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Binary,
    TooLarge,
    Malformed,
    /// More than `max_frames_per_second` frames in a second.
    Flood,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client sent a close frame.
    ClientClosed,
    /// The connection ended without one.
    ClientGone,
    Refused(Refusal),
    /// Nothing heard from the client (not even a pong) for `client_timeout`.
    HeartbeatTimeout,
    /// The client stopped reading: it was cut without a close frame.
    Stalled,
    /// Somebody holding the outbox closed it (the chat server, the engine).
    ClosedByServer,
    /// The handler asked to close.
    Handler,
}

/// A service's side of the socket.
pub trait SocketHandler {
    /// A text message from the client. Replies go to `outbox`.
    fn on_text(&mut self, text: ByteString, outbox: &Outbox) -> impl Future<Output = Flow>;

    /// What the service pushes to the client through the loop rather than straight
    /// into the outbox; resolves when there is something. By default, nothing.
    fn next_push(&mut self, outbox: &Outbox) -> impl Future<Output = Flow> {
        let _ = outbox;
        std::future::pending()
    }

    /// The loop refuses a frame: a chance to queue an explanation before the close
    /// frame. Returns the close reason.
    fn refused(&mut self, refusal: Refusal, outbox: &Outbox) -> Option<CloseReason> {
        let _ = outbox;
        Some(refusal.close_reason())
    }
}

impl Refusal {
    /// The close frame sent for this refusal by default.
    pub fn close_reason(self) -> CloseReason {
        let (code, description) = match self {
            Refusal::Binary => (CloseCode::Unsupported, "binary frames are not supported"),
            Refusal::TooLarge => (CloseCode::Size, "message too large"),
            Refusal::Malformed => (CloseCode::Protocol, "malformed frame"),
            Refusal::Flood => (CloseCode::Policy, "too many messages"),
        };
        CloseReason {
            code,
            description: Some(description.into()),
        }
    }
}

/// Runs `socket` until it ends; the socket is closed (or cut) on return.
pub async fn run_session<H: SocketHandler>(socket: Socket, handler: &mut H) -> Ended {
    let Socket {
        mut inbound,
        outbox,
        settings,
    } = socket;
    let check_every = settings.send_timeout.min(settings.heartbeat_interval);
    let mut checks =
        tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut last_ping = last_heard;
    let mut frames = FrameWindow::new(settings.max_frames_per_second);
    let (ended, reason) = loop {
        // Biased: the checks first, or a client that always has a frame ready would
        // starve them.
        tokio::select! {
            biased;
            _ = checks.tick() => {
                let now = Instant::now();
                if now.saturating_duration_since(last_heard) > settings.client_timeout {
                    break (Ended::HeartbeatTimeout, Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("heartbeat timeout".into()),
                    }));
                }
                if outbox.is_stalled(now, settings.send_timeout) {
                    break (Ended::Stalled, None);
                }
                if now.saturating_duration_since(last_ping) >= settings.heartbeat_interval {
                    last_ping = now;
                    if let Err(error) = outbox.ping() {
                        break queue_failed(error);
                    }
                }
            }
            () = outbox.closed() => break (Ended::ClosedByServer, None),
            flow = handler.next_push(&outbox) => {
                if let Flow::Close(reason) = flow {
                    break (Ended::Handler, reason);
                }
            }
            incoming = inbound.next() => {
                let now = Instant::now();
                last_heard = now;
                let Some(incoming) = incoming else {
                    break (Ended::ClientGone, None);
                };
                if !frames.admit(now) {
                    break refuse(handler, Refusal::Flood, &outbox);
                }
                match incoming {
                    Ok(Incoming::Text(text)) => {
                        if let Flow::Close(reason) = handler.on_text(text, &outbox).await {
                            break (Ended::Handler, reason);
                        }
                    }
                    Ok(Incoming::Binary(_)) => break refuse(handler, Refusal::Binary, &outbox),
                    Ok(Incoming::Ping(payload)) => {
                        if let Err(error) = outbox.pong(payload) {
                            break queue_failed(error);
                        }
                    }
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Close(reason)) => break (Ended::ClientClosed, reason),
                    Err(InboundError::TooLarge) => break refuse(handler, Refusal::TooLarge, &outbox),
                    Err(InboundError::Malformed(error)) => {
                        tracing::debug!(%error, "malformed WebSocket frame");
                        break refuse(handler, Refusal::Malformed, &outbox);
                    }
                }
            }
        }
    };
    match ended {
        Ended::Stalled => outbox.cut(),
        // Whoever closed the outbox queued its own close frame.
        Ended::ClosedByServer => {}
        _ => outbox.close(reason),
    }
    if outbox.was_cut() {
        // Keep the client's side unread until the connection is gone: a dropped payload
        // is drained, and a client that keeps writing then keeps the kernel from ever
        // timing the stuck connection out (each of its segments re-arms the zero-window
        // probe). Unread, its writes stop, and TCP_USER_TIMEOUT ends the connection.
        actix_web::rt::spawn(async move {
            outbox.connection_gone().await;
            drop(inbound);
        });
    }
    ended
}

fn refuse<H: SocketHandler>(
    handler: &mut H,
    refusal: Refusal,
    outbox: &Outbox,
) -> (Ended, Option<CloseReason>) {
    (Ended::Refused(refusal), handler.refused(refusal, outbox))
}

/// A ping or pong could not be queued.
fn queue_failed(error: OutboxError) -> (Ended, Option<CloseReason>) {
    match error {
        OutboxError::Full => (Ended::Stalled, None),
        OutboxError::Closed => (Ended::ClosedByServer, None),
    }
}

/// At most `limit` frames in any one second.
struct FrameWindow(SlidingWindow);

impl FrameWindow {
    fn new(limit: usize) -> FrameWindow {
        FrameWindow(SlidingWindow::new(limit, Duration::from_secs(1)))
    }

    fn admit(&mut self, now: Instant) -> bool {
        self.0.try_acquire(now).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_in_any_second() {
        let start = Instant::now();
        let mut window = FrameWindow::new(3);
        let at = |millis| start + Duration::from_millis(millis);
        assert!(window.admit(at(0)) && window.admit(at(600)) && window.admit(at(900)));
        assert!(!window.admit(at(950)), "a fourth within one second");
        // A fixed window would allow three more right after 1,000 ms.
        assert!(window.admit(at(1000)));
        assert!(!window.admit(at(1100)));
        assert!(window.admit(at(1600)));
    }
}
