//! The ICE-TCP listener (RFC 6544 passive candidates, RFC 4571 framing: each packet is
//! preceded by its 16-bit length), for clients whose network lets no UDP out.
//!
//! Every connection's first frame must be an ICE check naming one of our ufrags, whose
//! prefix names the worker (see `sfu::demux`); from then on the connection's frames go
//! to that worker over a bounded channel, in order (opened, frames, closed), and the
//! worker hands its frames for the connection to a bounded writer queue. A plain STUN
//! binding request (no USERNAME, what `scripts/test-connection` sends) is answered on
//! the connection itself. Limits, each counted in `media_tcp_refused_total`: connections
//! per client address and per second (the `/ws` limits), a total, the first frame's
//! deadline, an idle deadline, the frame size, frames per second, and a write deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{Receiver, Sender, channel, error::TrySendError};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::limits::{ClientAddress, SocketLimiter};
use crate::metrics::{Metrics, TcpRefusal};
use crate::sfu::{demux, stun};

/// Longest frame accepted: well above any datagram the server handles (its UDP reads
/// use 2,048-byte buffers; RTP, DTLS and STUN from browsers stay under 1,500).
pub const MAX_FRAME_BYTES: usize = 4096;
/// A new connection must send its first frame within this.
const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// A connection with no frame for this long is closed (ICE consent checks come every
/// few seconds on a live connection).
const IDLE_FOR: Duration = Duration::from_secs(30);
/// A write the client does not take within this closes the connection.
const WRITE_WITHIN: Duration = Duration::from_secs(5);
/// More frames than this in one second close the connection (a 8 Mbit/s publisher sends
/// under 1,000).
const MAX_FRAMES_PER_SECOND: u32 = 5000;
/// Frames queued for one connection before the worker drops further ones (like UDP
/// loss; str0m retransmits what matters).
pub const WRITER_QUEUE: usize = 512;
/// Plain STUN bindings answered on one connection before it is closed.
const MAX_PLAIN_BINDINGS: u32 = 10;
/// How long the kernel keeps unacknowledged data before it aborts the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// What a connection tells the worker that owns its peer (in this order).
#[derive(Debug)]
pub enum TcpEvent {
    Opened {
        source: SocketAddr,
        writer: Sender<Vec<u8>>,
    },
    Frame {
        source: SocketAddr,
        contents: Vec<u8>,
    },
    Closed {
        source: SocketAddr,
    },
}

/// Capacity of each worker's channel of TCP events.
pub const TCP_EVENTS_CAPACITY: usize = 1024;

/// What the listener shares with its connections.
pub struct TcpShared {
    /// Per worker, where its TCP events go.
    pub workers: Vec<Sender<TcpEvent>>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<SocketLimiter>,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Binds the listener (non-blocking, with `SO_REUSEADDR` so a restart does not wait for
/// old connections' `TIME_WAIT`).
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: std::net::TcpListener, shared: Arc<TcpShared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register the ICE-TCP listener");
            return;
        }
    };
    loop {
        let (stream, source) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!(%error, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = &shared.metrics.transport;
        let slot = match shared
            .limiter
            .try_open(Some(ClientAddress::Direct(source.ip())), Instant::now())
        {
            Ok(slot) => slot,
            Err(_) => {
                metrics.tcp_refused(TcpRefusal::PerAddressLimit);
                continue;
            }
        };
        if metrics.tcp_connections.load(Relaxed) >= shared.max_connections as i64 {
            metrics.tcp_refused(TcpRefusal::Full);
            continue;
        }
        metrics.tcp_connections.fetch_add(1, Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let refusal = serve_connection(stream, source, &shared).await;
            if let Some(why) = refusal {
                shared.metrics.transport.tcp_refused(why);
            }
            shared
                .metrics
                .transport
                .tcp_connections
                .fetch_sub(1, Relaxed);
            drop(slot);
        });
    }
}

/// Serves one connection until it closes; returns why it was cut, if it was.
async fn serve_connection(
    stream: TcpStream,
    source: SocketAddr,
    shared: &TcpShared,
) -> Option<TcpRefusal> {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    let (reader, mut writer) = stream.into_split();
    let mut frames = FramedRead::new(
        reader,
        LengthDelimitedCodec::builder()
            .length_field_length(2)
            .max_frame_length(MAX_FRAME_BYTES)
            .new_codec(),
    );
    let mut plain_bindings = 0;
    // Until a frame names a worker: answer plain bindings, refuse anything else.
    let (worker, first) = loop {
        let frame = match next_frame(&mut frames, FIRST_FRAME_WITHIN).await {
            Ok(frame) => frame,
            Err(refusal) => return refusal,
        };
        match stun::classify(&frame) {
            stun::StunKind::PlainBinding if plain_bindings < MAX_PLAIN_BINDINGS => {
                plain_bindings += 1;
                shared.metrics.stun_bindings_answered.fetch_add(1, Relaxed);
                let answer = stun::binding_success(&frame, source);
                if write_frames(&mut writer, &[answer]).await.is_err() {
                    return Some(TcpRefusal::SlowReader);
                }
            }
            stun::StunKind::Ice => match demux::worker_of_check(&frame) {
                Some(worker) if worker < shared.workers.len() => break (worker, frame),
                _ => return Some(TcpRefusal::NotIce),
            },
            _ => return Some(TcpRefusal::NotIce),
        }
    };
    let events = &shared.workers[worker];
    let (writer_tx, writer_rx) = channel(WRITER_QUEUE);
    let opened = TcpEvent::Opened {
        source,
        writer: writer_tx,
    };
    let first = TcpEvent::Frame {
        source,
        contents: first.to_vec(),
    };
    if events.send(opened).await.is_err() || events.send(first).await.is_err() {
        return None;
    }
    let mut writing = tokio::spawn(write_queued(writer, writer_rx));
    let (refusal, writer_ended) = tokio::select! {
        refusal = read_frames(&mut frames, source, events) => (refusal, false),
        wrote = &mut writing => (wrote.ok().and_then(Result::err), true),
    };
    let _ = events.send(TcpEvent::Closed { source }).await;
    if !writer_ended {
        // The worker drops its queue's sender on `Closed`: the writer sends what is
        // left and ends.
        match tokio::time::timeout(WRITE_WITHIN, &mut writing).await {
            Ok(wrote) => return refusal.or(wrote.ok().and_then(Result::err)),
            Err(_) => writing.abort(),
        }
    }
    refusal
}

/// Passes frames to the worker until the connection ends; the refusal that ended it.
async fn read_frames(
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    source: SocketAddr,
    events: &Sender<TcpEvent>,
) -> Option<TcpRefusal> {
    let mut window_start = Instant::now();
    let mut in_window = 0u32;
    loop {
        let frame = match next_frame(frames, IDLE_FOR).await {
            Ok(frame) => frame,
            Err(refusal) => return refusal,
        };
        let now = Instant::now();
        if now.duration_since(window_start) >= Duration::from_secs(1) {
            window_start = now;
            in_window = 0;
        }
        in_window += 1;
        if in_window > MAX_FRAMES_PER_SECOND {
            return Some(TcpRefusal::Flood);
        }
        let event = TcpEvent::Frame {
            source,
            contents: frame.to_vec(),
        };
        // Waiting here slows only this connection, which is what TCP would do anyway.
        if events.send(event).await.is_err() {
            return None;
        }
    }
}

/// The next frame within `within`; `Err(None)` for a clean close.
async fn next_frame(
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    within: Duration,
) -> Result<bytes::BytesMut, Option<TcpRefusal>> {
    match tokio::time::timeout(within, frames.next()).await {
        Err(_) => Err(Some(TcpRefusal::Idle)),
        Ok(None) => Err(None),
        Ok(Some(Ok(frame))) => Ok(frame),
        // The codec refuses a length above the maximum before reading the frame.
        Ok(Some(Err(error))) if error.kind() == std::io::ErrorKind::InvalidData => {
            Err(Some(TcpRefusal::Oversized))
        }
        Ok(Some(Err(_))) => Err(None),
    }
}

/// Writes what the worker queues, several frames per write when they pile up.
async fn write_queued(
    mut writer: OwnedWriteHalf,
    mut queue: Receiver<Vec<u8>>,
) -> Result<(), TcpRefusal> {
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 64).await > 0 {
        write_frames(&mut writer, &batch).await?;
        batch.clear();
    }
    let _ = writer.shutdown().await;
    Ok(())
}

/// Writes frames with their RFC 4571 length prefixes in one write.
async fn write_frames(writer: &mut OwnedWriteHalf, frames: &[Vec<u8>]) -> Result<(), TcpRefusal> {
    let mut bytes = Vec::with_capacity(frames.iter().map(|f| f.len() + 2).sum());
    for frame in frames {
        let Ok(length) = u16::try_from(frame.len()) else {
            continue;
        };
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(frame);
    }
    match tokio::time::timeout(WRITE_WITHIN, writer.write_all(&bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(TcpRefusal::SlowReader),
    }
}

/// The worker side: the connections' writer queues, by remote address.
#[derive(Default)]
pub struct TcpWriters {
    writers: std::collections::HashMap<SocketAddr, Sender<Vec<u8>>>,
}

impl TcpWriters {
    pub fn opened(&mut self, source: SocketAddr, writer: Sender<Vec<u8>>) {
        self.writers.insert(source, writer);
    }

    pub fn closed(&mut self, source: SocketAddr) {
        self.writers.remove(&source);
    }

    /// Queues a frame; `false` when it was dropped (queue full or connection gone).
    pub fn send(&mut self, destination: SocketAddr, contents: Vec<u8>) -> bool {
        let Some(writer) = self.writers.get(&destination) else {
            return false;
        };
        match writer.try_send(contents) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Closed(_)) => {
                self.writers.remove(&destination);
                false
            }
        }
    }
}
