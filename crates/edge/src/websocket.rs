//! A WebSocket connection on actix-web, built for fan-out.
//!
//! [`accept`] answers the upgrade and returns a [`Socket`]: the client's frames as a
//! stream ([`Inbound`]) and an [`Outbox`]. The outbox is the response body's own
//! bounded queue: whoever holds a clone (a chat room, a session loop) queues frames
//! without waiting, and the connection's task encodes and writes them. One queue and
//! one task wake per frame; no task sits between the sender and the socket.
//!
//! A queue that is full means the client is not reading: the sender decides (the app
//! drops the socket). A client that stops reading while little is sent is caught by
//! the write deadline: frames are waiting and the body made no progress for
//! [`SocketSettings::send_timeout`] (checked by [`run_session`]).

mod body;
mod inbound;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use actix_http::ws::{CloseReason, Codec};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, mpsc};

pub use self::body::OutboxBody;
pub use self::inbound::{Inbound, InboundError, Incoming};
pub use self::session::{Ended, Flow, Refusal, SocketHandler, run_session};
pub use actix_http::ws::CloseCode;
pub use actix_http::ws::CloseReason as WebSocketCloseReason;

/// The limits and timers of one kind of socket.
#[derive(Debug, Clone, Copy)]
pub struct SocketSettings {
    /// Largest client message (a frame, or continuations put together).
    pub max_message_bytes: usize,
    /// Frames the server may have queued for the client.
    pub outbox_capacity: usize,
    /// How often the server pings.
    pub heartbeat_interval: Duration,
    /// A client that sent nothing (not even a pong) for this long is dropped.
    pub client_timeout: Duration,
    /// A client whose queued frames were not taken for this long is dropped.
    pub send_timeout: Duration,
    /// Frames of any kind a client may send per second before it is closed.
    pub max_frames_per_second: usize,
}

/// Called with a timed frame's time in the queue when it is handed to the connection.
pub type DeliveryObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// One accepted socket, before its session loop runs.
pub struct Socket {
    pub inbound: Inbound,
    pub outbox: Outbox,
    pub settings: SocketSettings,
}

/// Answers a WebSocket upgrade: the `101` response (return it from the handler) and
/// the socket. `keep` is dropped only when the connection itself is gone, not when the
/// session loop ends: a per-address slot held there keeps counting a client that
/// stopped reading for as long as its connection holds memory.
pub fn accept(
    request: &HttpRequest,
    payload: web::Payload,
    settings: SocketSettings,
    observer: Option<DeliveryObserver>,
    keep: Option<Box<dyn std::any::Any>>,
) -> Result<(HttpResponse, Socket), actix_web::Error> {
    let mut response = actix_http::ws::handshake(request.head())?;
    let (frames, queued) = mpsc::channel(settings.outbox_capacity.max(1));
    let shared = Arc::new(Shared::new());
    let body = OutboxBody::new(queued, shared.clone(), observer, keep);
    let response: HttpResponse = response
        .message_body(actix_web::body::BoxBody::new(
            actix_web::body::BodyStream::new(body),
        ))?
        .into();
    let inbound = Inbound::new(payload.into_inner(), settings.max_message_bytes);
    let outbox = Outbox { frames, shared };
    Ok((
        response,
        Socket {
            inbound,
            outbox,
            settings,
        },
    ))
}

/// What is queued for the client.
#[derive(Debug)]
pub(crate) enum Frame {
    Text {
        text: ByteString,
        queued_at: Option<Instant>,
    },
    Ping,
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxError {
    /// The client has not taken what is already queued.
    Full,
    /// The connection is closing or gone.
    Closed,
}

/// The socket's outgoing queue; clones share it. Queuing never waits.
#[derive(Clone)]
pub struct Outbox {
    frames: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Outbox")
            .field("queued", &self.queued())
            .field("closing", &self.is_closing())
            .finish()
    }
}

impl Outbox {
    /// Queues a text message.
    pub fn text(&self, text: ByteString) -> Result<(), OutboxError> {
        self.push(Frame::Text {
            text,
            queued_at: None,
        })
    }

    /// Queues a text message whose wait is reported to the socket's observer when the
    /// connection takes it.
    pub fn timed_text(&self, text: ByteString, queued_at: Instant) -> Result<(), OutboxError> {
        self.push(Frame::Text {
            text,
            queued_at: Some(queued_at),
        })
    }

    pub(crate) fn ping(&self) -> Result<(), OutboxError> {
        self.push(Frame::Ping)
    }

    pub(crate) fn pong(&self, payload: Bytes) -> Result<(), OutboxError> {
        self.push(Frame::Pong(payload))
    }

    /// Ends the connection: the close frame goes after what is queued (or, when the
    /// queue is full, the connection is cut at once), and the session loop stops.
    /// Later frames are refused. Closing twice does nothing.
    pub fn close(&self, reason: Option<CloseReason>) {
        if self.shared.closing.swap(true, Relaxed) {
            return;
        }
        if self.frames.try_send(Frame::Close(reason)).is_err() {
            self.shared.abort();
        }
        self.shared.stop.notify_one();
    }

    /// Cuts the connection without a close frame (its client does not read).
    pub fn cut(&self) {
        self.shared.closing.store(true, Relaxed);
        self.shared.abort();
        self.shared.stop.notify_one();
    }

    /// Whether the connection was cut (its client did not read).
    pub fn was_cut(&self) -> bool {
        self.shared.aborted.load(Relaxed)
    }

    /// Whether [`Outbox::close`] was called (by anyone) or the connection is gone.
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Relaxed) || self.frames.is_closed()
    }

    /// Frames waiting to be taken by the connection.
    pub fn queued(&self) -> usize {
        self.frames.max_capacity() - self.frames.capacity()
    }

    /// Frames are waiting and the connection took none for `timeout`: the client
    /// stopped reading.
    pub fn is_stalled(&self, now: Instant, timeout: Duration) -> bool {
        self.queued() > 0 && self.shared.since_progress(now) > timeout
    }

    fn push(&self, frame: Frame) -> Result<(), OutboxError> {
        if self.shared.closing.load(Relaxed) {
            return Err(OutboxError::Closed);
        }
        self.frames.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => OutboxError::Full,
            mpsc::error::TrySendError::Closed(_) => OutboxError::Closed,
        })
    }

    /// Resolves once the connection itself is gone (not only its session).
    pub(crate) async fn connection_gone(&self) {
        self.shared.connection_gone().await;
    }

    /// Resolves once [`Outbox::close`] has been called.
    pub(crate) async fn closed(&self) {
        if !self.shared.closing.load(Relaxed) {
            self.shared.stop.notified().await;
        }
    }
}

/// State shared by the outbox's clones and the body that drains it.
pub(crate) struct Shared {
    epoch: Instant,
    /// When the body last ran (milliseconds since `epoch`).
    progress_ms: AtomicU64,
    closing: AtomicBool,
    /// Set when the connection must be cut without a close frame.
    aborted: AtomicBool,
    /// The body's task, woken to notice `aborted`.
    body_waker: AtomicWaker,
    /// Wakes the session loop on [`Outbox::close`].
    stop: Notify,
    /// Set (and notified) when the body is dropped: the connection is gone.
    body_dropped: AtomicBool,
    gone: Notify,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            progress_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            body_waker: AtomicWaker::new(),
            stop: Notify::new(),
            body_dropped: AtomicBool::new(false),
            gone: Notify::new(),
        }
    }

    /// Resolves once the connection (its response body) is gone.
    async fn connection_gone(&self) {
        loop {
            let notified = self.gone.notified();
            if self.body_dropped.load(Relaxed) {
                return;
            }
            notified.await;
        }
    }

    fn abort(&self) {
        self.aborted.store(true, Relaxed);
        self.body_waker.wake();
    }

    fn note_progress(&self, now: Instant) {
        let millis = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.progress_ms.store(millis, Relaxed);
    }

    fn since_progress(&self, now: Instant) -> Duration {
        let progress = self.epoch + Duration::from_millis(self.progress_ms.load(Relaxed));
        now.saturating_duration_since(progress)
    }
}

/// The codec for the server side of a connection (frames to the client unmasked).
fn server_codec(max_message_bytes: usize) -> Codec {
    Codec::new().max_size(max_message_bytes)
}
