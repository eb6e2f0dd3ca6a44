//! A media worker thread: owns one UDP socket, one [`WorkerCore`] and its timers, and
//! drives the core with datagrams, commands, other workers' messages and timeouts.
//!
//! Each turn waits for one of those, hands it to the core with the current time, then
//! flushes the core's output: datagrams to the socket, frames and keyframe requests to
//! other workers (bounded channels, `try_send`, overflow counted), connection reports to
//! the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedReceiver, error::TrySendError};

use crate::engine::Engine;
use crate::metrics::ForwardDelayTally;
use crate::sfu::{Command, CoreConfig, CoreOutput, WorkerCore, WorkerMessage};
use crate::tcp::{TcpEvent, TcpWriters};
use crate::udp_batch::{BatchSender, Outgoing};

/// Capacity of each worker's inbound channel from other workers. At 30 fps video plus
/// 50 audio frames per second per live this is a few seconds of media.
pub const WORKER_CHANNEL_CAPACITY: usize = 1024;
/// Socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams read per wake-up before looking at other inputs.
const RECV_BATCH: usize = 64;
/// How long reads pause after a batch of nothing but errors (a failing socket), so the
/// loop does not spin; timers and commands keep running meanwhile.
const RECV_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Everything one worker thread needs.
pub struct WorkerParts {
    pub index: usize,
    pub socket: std::net::UdpSocket,
    /// The announced address of this worker's port.
    pub announced: SocketAddr,
    pub core_config: CoreConfig,
    pub commands: UnboundedReceiver<Command>,
    pub inbound: Receiver<WorkerMessage>,
    /// Inbound senders of the workers by index, `None` at this worker's own.
    pub workers: Vec<Option<Sender<WorkerMessage>>>,
    /// Frames of the ICE-TCP connections whose peers are on this worker.
    pub tcp_events: Receiver<TcpEvent>,
}

/// Binds a worker's UDP socket with large buffers, non-blocking; with `shared_port`,
/// `SO_REUSEPORT` lets every worker bind the same port.
pub fn bind_socket(addr: SocketAddr, shared_port: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    #[cfg(unix)]
    if shared_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    if shared_port {
        return Err(std::io::Error::other(
            "one shared UDP port needs SO_REUSEPORT (Linux); set MEDIA_RTC_MIN_PORT/MAX_PORT",
        ));
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts the worker thread.
pub fn spawn(
    parts: WorkerParts,
    engine: Arc<Engine>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("media-worker-{}", parts.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start worker runtime");
                    return;
                }
            };
            runtime.block_on(run(parts, engine));
        })
}

async fn run(parts: WorkerParts, engine: Arc<Engine>) {
    let WorkerParts {
        index,
        socket,
        announced,
        core_config,
        mut commands,
        mut inbound,
        workers,
        mut tcp_events,
    } = parts;
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(error) => {
            tracing::error!(worker = index, %error, "cannot register UDP socket");
            return;
        }
    };
    let metrics = engine.metrics.clone();
    let mut core = WorkerCore::new(announced, core_config, metrics.clone());
    let mut output = OutputSink {
        socket: &socket,
        workers: &workers,
        engine: &engine,
        sender: BatchSender::default(),
        delays: ForwardDelayTally::default(),
        tcp: TcpWriters::default(),
    };
    let mut buf = vec![0u8; 2048];
    let mut shutting_down = false;
    // With one worker nobody else holds a sender and the channel is closed at once.
    let mut inbound_open = workers.iter().any(Option::is_some);
    let mut tcp_open = true;
    // Set while reads are paused after a failing batch; `failing` logs that once.
    let mut reads_paused_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        let deadline = core
            .next_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let resume_reads = reads_paused_until.unwrap_or(deadline);
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Command::Shutdown) | None => {
                    core.handle_command(Instant::now(), Command::Shutdown);
                    shutting_down = true;
                }
                Some(command) => core.handle_command(Instant::now(), command),
            },
            _ = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
            _ = tokio::time::sleep_until(resume_reads.into()), if reads_paused_until.is_some() => {
                reads_paused_until = None;
            }
            readable = socket.readable(), if reads_paused_until.is_none() => {
                let batch = match readable {
                    Ok(()) => receive_batch(&socket, &mut buf, &mut core, &mut output).await,
                    Err(error) => Batch::failed(error),
                };
                // One update per batch: the counters are shared by all workers.
                metrics.packets_in.fetch_add(batch.packets, Relaxed);
                metrics.bytes_in.fetch_add(batch.bytes, Relaxed);
                metrics.udp_recv_errors.fetch_add(batch.errors, Relaxed);
                if batch.is_failing() {
                    if !failing {
                        tracing::warn!(worker = index, error = ?batch.last_error, "UDP reads failing; retrying every {RECV_ERROR_BACKOFF:?}");
                    }
                    failing = true;
                    reads_paused_until = Some(Instant::now() + RECV_ERROR_BACKOFF);
                } else if batch.packets > 0 {
                    failing = false;
                } else if batch.errors > 0 {
                    tracing::debug!(worker = index, error = ?batch.last_error, "UDP read error skipped");
                }
            }
            message = inbound.recv(), if inbound_open => match message {
                Some(message) => core.handle_worker_message(Instant::now(), message),
                None => inbound_open = false,
            },
            event = tcp_events.recv(), if tcp_open => match event {
                Some(TcpEvent::Opened { source, writer }) => output.tcp.opened(source, writer),
                Some(TcpEvent::Frame { source, contents }) => {
                    metrics.packets_in.fetch_add(1, Relaxed);
                    metrics.bytes_in.fetch_add(contents.len() as u64, Relaxed);
                    core.handle_tcp_frame(Instant::now(), source, &contents);
                }
                Some(TcpEvent::Closed { source }) => {
                    output.tcp.closed(source);
                    core.handle_tcp_closed(source);
                }
                None => tcp_open = false,
            },
        }
        output.flush(&mut core).await;
        if shutting_down {
            tracing::debug!(worker = index, "worker stopped");
            return;
        }
    }
}

/// What one read batch got.
#[derive(Debug, Default)]
struct Batch {
    packets: u64,
    bytes: u64,
    errors: u64,
    /// Reads stopped at an error that is about the socket, not one datagram.
    socket_failed: bool,
    last_error: Option<std::io::Error>,
}

impl Batch {
    fn failed(error: std::io::Error) -> Self {
        Batch {
            errors: 1,
            socket_failed: true,
            last_error: Some(error),
            ..Batch::default()
        }
    }

    /// Nothing but errors: reading again at once would spin.
    fn is_failing(&self) -> bool {
        self.socket_failed || (self.packets == 0 && self.errors >= RECV_BATCH as u64)
    }
}

/// Reads up to [`RECV_BATCH`] datagrams into the core, flushing after each. A read error
/// is counted and skipped: most concern one datagram (an ICMP unreachable for an
/// earlier send surfaces as ECONNREFUSED on a later read) and the next read works.
async fn receive_batch(
    socket: &UdpSocket,
    buf: &mut [u8],
    core: &mut WorkerCore,
    output: &mut OutputSink<'_>,
) -> Batch {
    let mut batch = Batch::default();
    for _ in 0..RECV_BATCH {
        match socket.try_recv_from(buf) {
            Ok((n, source)) => {
                batch.packets += 1;
                batch.bytes += n as u64;
                core.handle_datagram(Instant::now(), source, &buf[..n]);
                output.flush(core).await;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) => {
                batch.errors += 1;
                batch.last_error = Some(error);
            }
        }
    }
    batch
}

/// Where a worker's core output goes: datagrams to the socket in `sendmmsg` batches,
/// messages to the other workers, reports to the engine.
struct OutputSink<'a> {
    socket: &'a UdpSocket,
    workers: &'a [Option<Sender<WorkerMessage>>],
    engine: &'a Engine,
    sender: BatchSender,
    delays: ForwardDelayTally,
    tcp: TcpWriters,
}

impl OutputSink<'_> {
    /// Takes the core's output until it has none, sending each batch of datagrams as
    /// soon as it is full (the core hands out a delivery in slices, so the first
    /// viewers' datagrams leave before the last ones are encrypted).
    async fn flush(&mut self, core: &mut WorkerCore) {
        let metrics = &self.engine.metrics;
        let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        loop {
            while !self.sender.is_full() {
                let Some(output) = core.poll_output() else {
                    break;
                };
                match output {
                    CoreOutput::Transmit {
                        destination,
                        contents,
                        media_received_at,
                    } => self.sender.push(Outgoing {
                        destination,
                        contents,
                        media_received_at,
                    }),
                    CoreOutput::TransmitTcp {
                        destination,
                        contents,
                    } => {
                        let length = contents.len() as u64;
                        if self.tcp.send(destination, contents) {
                            packets += 1;
                            bytes += length;
                        } else {
                            metrics.transport.tcp_frames_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    CoreOutput::ToOtherWorkers(message) => {
                        for other in self.workers.iter().flatten() {
                            send_to_worker(other, message.clone(), metrics);
                        }
                    }
                    CoreOutput::ToWorker { worker, message } => {
                        if let Some(Some(other)) = self.workers.get(worker) {
                            send_to_worker(other, message, metrics);
                        }
                    }
                    other => self.engine.on_core_output(&other),
                }
            }
            if self.sender.is_empty() {
                break;
            }
            let delays = &mut self.delays;
            let sent = self
                .sender
                .send_all(self.socket, |outgoing, now| {
                    if let Some(at) = outgoing.media_received_at {
                        delays.observe(now.saturating_duration_since(at));
                    }
                })
                .await;
            packets += sent.packets;
            bytes += sent.bytes;
            errors += sent.errors;
        }
        if packets > 0 {
            metrics.packets_out.fetch_add(packets, Relaxed);
            metrics.bytes_out.fetch_add(bytes, Relaxed);
            self.delays.merge_into(metrics);
        }
        if errors > 0 {
            metrics.udp_send_errors.fetch_add(errors, Relaxed);
        }
    }
}

/// Hands a message to another worker without waiting (dropped, and counted, when its
/// channel is full: a worker never blocks on another).
fn send_to_worker(
    worker: &Sender<WorkerMessage>,
    message: WorkerMessage,
    metrics: &crate::metrics::Metrics,
) {
    match worker.try_send(message) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            metrics.channel_drops.fetch_add(1, Relaxed);
        }
        Err(TrySendError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediaSettings;
    use crate::metrics::Metrics;

    /// On Linux a connected UDP socket reports an ICMP port unreachable for an earlier
    /// send as ECONNREFUSED on its next read, before any datagram already queued.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_read_error_is_skipped_not_the_end_of_the_batch() {
        let settings = MediaSettings::for_tests("worker-test-secret-0123456789abcdef", 40000, 1);
        let metrics = Arc::new(Metrics::default());
        let engine = Engine::new(&settings, metrics.clone(), Vec::new(), None).unwrap();
        let announced = "127.0.0.1:40000".parse().unwrap();
        let mut core = WorkerCore::new(announced, CoreConfig::default(), metrics);
        let mut buf = vec![0u8; 2048];
        // The ICMP normally arrives before `send` returns on loopback; if it was late
        // the batch read only the datagram, and the set-up is repeated.
        for _ in 0..20 {
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(peer.local_addr().unwrap()).unwrap();
            socket.set_nonblocking(true).unwrap();
            let socket = UdpSocket::from_std(socket).unwrap();
            peer.send_to(b"queued first", socket.local_addr().unwrap())
                .unwrap();
            drop(peer);
            socket.send(b"to a closed port").await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), socket.readable())
                .await
                .expect("readable")
                .unwrap();
            let mut output = OutputSink {
                socket: &socket,
                workers: &[],
                engine: &engine,
                sender: BatchSender::default(),
                delays: ForwardDelayTally::default(),
                tcp: TcpWriters::default(),
            };
            let batch = receive_batch(&socket, &mut buf, &mut core, &mut output).await;
            if batch.errors == 0 {
                continue;
            }
            assert_eq!(batch.errors, 1, "{batch:?}");
            assert_eq!(
                batch.last_error.as_ref().map(std::io::Error::kind),
                Some(std::io::ErrorKind::ConnectionRefused)
            );
            assert_eq!(batch.packets, 1, "the datagram after the error is read too");
            assert!(!batch.is_failing());
            return;
        }
        panic!("no ICMP error was ever reported");
    }

    #[test]
    fn only_a_batch_of_nothing_but_errors_pauses_reads() {
        let errors = |packets, errors| Batch {
            packets,
            errors,
            ..Batch::default()
        };
        assert!(!errors(0, 1).is_failing());
        assert!(!errors(1, RECV_BATCH as u64 - 1).is_failing());
        assert!(errors(0, RECV_BATCH as u64).is_failing());
        assert!(Batch::failed(std::io::Error::other("driver gone")).is_failing());
    }
}
