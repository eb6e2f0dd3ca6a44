//! The response body of an accepted socket: it drains the outbox, encodes what it
//! finds into one buffer, and hands that to actix's connection to write. actix polls
//! it only while the client takes what was written, so a client that stops reading
//! stops it, and the outbox fills.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_http::ws::{Codec, Message};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

use super::{DeliveryObserver, Frame, Shared};

/// Past this size a buffer is not kept for the next frames: one large message (an SDP
/// answer, a history) must not leave every idle socket holding its size; chat lines fit.
const KEPT_BUFFER_BYTES: usize = 2 * 1024;
/// Encoded bytes handed over at once; the rest waits for the next poll.
const CHUNK_BYTES: usize = 64 * 1024;

/// The connection was cut on purpose (its client could not keep up).
#[derive(Debug)]
pub struct ConnectionCut;

impl std::fmt::Display for ConnectionCut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("the WebSocket connection was cut: its client did not read")
    }
}

impl std::error::Error for ConnectionCut {}

/// See the module documentation.
pub struct OutboxBody {
    frames: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    codec: Codec,
    buffer: BytesMut,
    observer: Option<DeliveryObserver>,
    ended: bool,
    /// Dropped with the connection (see [`super::accept`]).
    _keep: Option<Box<dyn std::any::Any>>,
}

impl OutboxBody {
    pub(super) fn new(
        frames: mpsc::Receiver<Frame>,
        shared: Arc<Shared>,
        observer: Option<DeliveryObserver>,
        keep: Option<Box<dyn std::any::Any>>,
    ) -> OutboxBody {
        OutboxBody {
            frames,
            shared,
            codec: super::server_codec(0),
            buffer: BytesMut::new(),
            observer,
            ended: false,
            _keep: keep,
        }
    }

    fn encode(&mut self, frame: Frame, now: Instant) -> Result<(), ()> {
        let message = match frame {
            Frame::Text { text, queued_at } => {
                if let (Some(queued_at), Some(observer)) = (queued_at, &self.observer) {
                    observer(now.saturating_duration_since(queued_at));
                }
                Message::Text(text)
            }
            Frame::Ping => Message::Ping(Bytes::new()),
            Frame::Pong(payload) => Message::Pong(payload),
            Frame::Close(reason) => {
                self.ended = true;
                Message::Close(reason)
            }
        };
        self.codec
            .encode(message, &mut self.buffer)
            .map_err(|error| tracing::debug!(%error, "encoding a WebSocket frame failed"))
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        self.shared.body_dropped.store(true, Relaxed);
        self.shared.gone.notify_waiters();
    }
}

impl Stream for OutboxBody {
    type Item = Result<Bytes, ConnectionCut>;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.shared.body_waker.register(context.waker());
        if this.shared.aborted.load(Relaxed) {
            this.ended = true;
            this.frames.close();
            return Poll::Ready(Some(Err(ConnectionCut)));
        }
        let now = Instant::now();
        this.shared.note_progress(now);
        while !this.ended && this.buffer.len() < CHUNK_BYTES {
            match this.frames.poll_recv(context) {
                Poll::Ready(Some(frame)) => {
                    if this.encode(frame, now).is_err() {
                        this.ended = true;
                    }
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => break,
            }
        }
        if this.ended {
            // Nothing queued after the close frame is sent; senders see `Closed`.
            this.shared.closing.store(true, Relaxed);
            this.frames.close();
        }
        if !this.buffer.is_empty() {
            let chunk = this.buffer.split().freeze();
            if this.buffer.capacity() > KEPT_BUFFER_BYTES {
                this.buffer = BytesMut::new();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if this.ended {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}
