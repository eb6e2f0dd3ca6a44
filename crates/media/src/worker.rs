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
use crate::sfu::{Command, CoreConfig, CoreOutput, WorkerCore, WorkerMessage};

/// Capacity of each worker's inbound channel from other workers. At 30 fps video plus
/// 50 audio frames per second per live this is a few seconds of media.
pub const WORKER_CHANNEL_CAPACITY: usize = 1024;
/// Socket buffer size asked of the kernel (it may grant less).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams read per wake-up before looking at other inputs.
const RECV_BATCH: usize = 64;

/// Everything one worker thread needs.
pub struct WorkerParts {
    pub index: usize,
    pub socket: std::net::UdpSocket,
    /// The announced address of this worker's port.
    pub announced: SocketAddr,
    pub core_config: CoreConfig,
    pub commands: UnboundedReceiver<Command>,
    pub inbound: Receiver<WorkerMessage>,
    /// Inbound senders of the *other* workers.
    pub others: Vec<Sender<WorkerMessage>>,
}

/// Binds a worker's UDP socket with large buffers, non-blocking.
pub fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
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
        others,
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
    let mut buf = vec![0u8; 2048];
    let mut shutting_down = false;
    // With one worker nobody else holds a sender and the channel is closed at once.
    let mut inbound_open = !others.is_empty();
    loop {
        let deadline = core
            .next_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
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
            readable = socket.readable() => {
                if readable.is_ok() {
                    let (mut packets, mut bytes) = (0u64, 0u64);
                    for _ in 0..RECV_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => {
                                packets += 1;
                                bytes += n as u64;
                                core.handle_datagram(Instant::now(), source, &buf[..n]);
                            }
                            Err(_) => break,
                        }
                        flush(&mut core, &socket, &others, &engine).await;
                    }
                    // One update per batch: the counters are shared by all workers.
                    metrics.packets_in.fetch_add(packets, Relaxed);
                    metrics.bytes_in.fetch_add(bytes, Relaxed);
                }
            }
            message = inbound.recv(), if inbound_open => match message {
                Some(message) => core.handle_worker_message(Instant::now(), message),
                None => inbound_open = false,
            },
        }
        flush(&mut core, &socket, &others, &engine).await;
        if shutting_down {
            tracing::debug!(worker = index, "worker stopped");
            return;
        }
    }
}

async fn flush(
    core: &mut WorkerCore,
    socket: &UdpSocket,
    others: &[Sender<WorkerMessage>],
    engine: &Engine,
) {
    let metrics = &engine.metrics;
    let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    while let Some(output) = core.poll_output() {
        match output {
            CoreOutput::Transmit {
                destination,
                contents,
            } => {
                // Wait for socket space rather than drop: on loopback bursts (a keyframe to
                // hundreds of viewers) can momentarily fill the send buffer.
                match socket.send_to(&contents, destination).await {
                    Ok(n) => {
                        packets += 1;
                        bytes += n as u64;
                    }
                    Err(_) => errors += 1,
                }
            }
            CoreOutput::ToOtherWorkers(message) => {
                for other in others {
                    match other.try_send(message.clone()) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            metrics.channel_drops.fetch_add(1, Relaxed);
                        }
                        Err(TrySendError::Closed(_)) => {}
                    }
                }
            }
            other => engine.on_core_output(&other),
        }
    }
    if packets > 0 {
        metrics.packets_out.fetch_add(packets, Relaxed);
        metrics.bytes_out.fetch_add(bytes, Relaxed);
    }
    if errors > 0 {
        metrics.udp_send_errors.fetch_add(errors, Relaxed);
    }
}
