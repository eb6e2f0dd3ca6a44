//! One thread driving many bots: it owns their sockets (one mio `Poll`) and their timers,
//! feeds str0m datagrams and timeouts, and stops by itself.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::LoadgenError;
use crate::payload::epoch_micros;
use crate::peer::{Peer, PeerOutcome};
use crate::run::Shared;

const WAKER: Token = Token(usize::MAX);
/// Longest single wait, so the stop flag is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Largest datagram we expect.
const RECEIVE_BUFFER: usize = 2048;
/// Most datagrams read from one socket per readiness event before moving on; the rest
/// are read in the next turn (the socket is re-checked).
const MAX_READS_PER_TURN: usize = 256;

/// Sends new bots to a driver thread.
pub struct DriverHandle {
    sender: Sender<Peer>,
    waker: Arc<Waker>,
    thread: JoinHandle<Vec<PeerOutcome>>,
}

impl DriverHandle {
    /// Starts a driver thread that runs until `shared.stop` or `hard_deadline`.
    pub fn spawn(
        name: String,
        shared: Arc<Shared>,
        hard_deadline: Instant,
    ) -> Result<Self, LoadgenError> {
        let poll = Poll::new().map_err(LoadgenError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(LoadgenError::Io)?);
        let (sender, receiver) = channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || Driver::new(poll, receiver, shared, hard_deadline).run())
            .map_err(LoadgenError::Io)?;
        Ok(DriverHandle {
            sender,
            waker,
            thread,
        })
    }

    /// Hands a bot over to the driver.
    pub fn add(&self, peer: Peer) {
        if self.sender.send(peer).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Waits for the driver to stop and returns its bots' outcomes.
    pub fn join(self) -> Vec<PeerOutcome> {
        drop(self.sender);
        self.thread.join().unwrap_or_default()
    }
}

struct Driver {
    poll: Poll,
    receiver: Receiver<Peer>,
    shared: Arc<Shared>,
    hard_deadline: Instant,
    peers: Vec<Peer>,
    /// Sockets that still had data when their read budget ran out.
    backlog: Vec<usize>,
    earliest: Instant,
}

impl Driver {
    fn new(
        poll: Poll,
        receiver: Receiver<Peer>,
        shared: Arc<Shared>,
        hard_deadline: Instant,
    ) -> Self {
        Driver {
            poll,
            receiver,
            shared,
            hard_deadline,
            peers: Vec::new(),
            backlog: Vec::new(),
            earliest: Instant::now(),
        }
    }

    fn run(mut self) -> Vec<PeerOutcome> {
        let mut events = Events::with_capacity(1024);
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        // Sockets to read this turn; reused, so a turn allocates nothing.
        let mut ready: Vec<usize> = Vec::with_capacity(1024);
        while !self.shared.stop.load(Ordering::Relaxed) && Instant::now() < self.hard_deadline {
            let now = Instant::now();
            let wait = if self.backlog.is_empty() {
                self.earliest.saturating_duration_since(now).min(MAX_WAIT)
            } else {
                Duration::ZERO
            };
            if let Err(error) = self.poll.poll(&mut events, Some(wait))
                && error.kind() != ErrorKind::Interrupted
            {
                break;
            }
            ready.clear();
            ready.append(&mut self.backlog);
            for event in events.iter() {
                if event.token() == WAKER {
                    self.accept_new_peers();
                } else {
                    ready.push(event.token().0);
                }
            }
            for &index in &ready {
                self.read_socket(index, &mut buffer);
            }
            self.run_timers();
        }
        self.peers.into_iter().map(Peer::finish).collect()
    }

    fn accept_new_peers(&mut self) {
        while let Ok(mut peer) = self.receiver.try_recv() {
            let index = self.peers.len();
            if self
                .poll
                .registry()
                .register(&mut peer.socket, Token(index), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            let now = Instant::now();
            peer.on_timeout(now, epoch_micros());
            self.earliest = self.earliest.min(peer.due());
            self.peers.push(peer);
        }
    }

    fn read_socket(&mut self, index: usize, buffer: &mut [u8]) {
        let Some(peer) = self.peers.get_mut(index) else {
            return;
        };
        for read in 0..=MAX_READS_PER_TURN {
            if read == MAX_READS_PER_TURN {
                self.backlog.push(index);
                break;
            }
            match peer.socket.recv_from(buffer) {
                Ok((length, source)) => {
                    let now = Instant::now();
                    peer.on_datagram(source, &buffer[..length], now, epoch_micros());
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors (port unreachable) surface here; keep reading.
                Err(_) => continue,
            }
        }
        self.earliest = self.earliest.min(peer.due());
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        if now < self.earliest {
            return;
        }
        let now_us = epoch_micros();
        let mut earliest = now + MAX_WAIT;
        for peer in &mut self.peers {
            if peer.due() <= now {
                peer.on_timeout(now, now_us);
            }
            if peer.is_alive() {
                earliest = earliest.min(peer.due());
            }
        }
        self.earliest = earliest;
    }
}
