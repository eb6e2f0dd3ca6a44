//! Batched UDP sends: up to [`SEND_BATCH`] datagrams, each to its own destination, in
//! one `sendmmsg` call (through `nix`'s safe wrapper) on Linux; one `send_to` each
//! elsewhere.
//!
//! An SFU's fan-out sends one packet to many destinations, so `sendmmsg` (one syscall
//! for many destinations) is what applies; UDP GSO needs several equal-sized segments to
//! one destination, which a viewer rarely gets at once (see docs/benchmarks.md).

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call.
pub const SEND_BATCH: usize = 32;

/// One datagram waiting to be sent.
#[derive(Debug)]
pub struct Outgoing {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    /// Forwarded media: when the publisher's packet was received.
    pub media_received_at: Option<Instant>,
}

/// What sending a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// A worker's send queue and the reusable `sendmmsg` headers.
pub struct BatchSender {
    queue: Vec<Outgoing>,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    #[cfg(target_os = "linux")]
    addresses: Vec<Option<nix::sys::socket::SockaddrStorage>>,
}

impl Default for BatchSender {
    fn default() -> Self {
        BatchSender {
            queue: Vec::with_capacity(SEND_BATCH),
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(SEND_BATCH, None),
            #[cfg(target_os = "linux")]
            addresses: Vec::with_capacity(SEND_BATCH),
        }
    }
}

impl BatchSender {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= SEND_BATCH
    }

    pub fn push(&mut self, outgoing: Outgoing) {
        self.queue.push(outgoing);
    }

    /// Sends everything queued, waiting for socket space rather than dropping (on
    /// loopback a keyframe to hundreds of viewers can fill the send buffer for a
    /// moment). A datagram the socket refuses is counted and skipped. `on_sent` sees
    /// each datagram sent, right after the call that sent it returned.
    pub async fn send_all(
        &mut self,
        socket: &UdpSocket,
        mut on_sent: impl FnMut(&Outgoing, Instant),
    ) -> Sent {
        let mut sent = Sent::default();
        let mut start = 0;
        while start < self.queue.len() {
            let result = socket.try_io(tokio::io::Interest::WRITABLE, || {
                self.send_some(socket, start)
            });
            match result {
                Ok(count) => {
                    let now = Instant::now();
                    for outgoing in &self.queue[start..start + count] {
                        sent.packets += 1;
                        sent.bytes += outgoing.contents.len() as u64;
                        on_sent(outgoing, now);
                    }
                    start += count.max(1);
                    if count == 0 {
                        sent.errors += 1;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        sent.errors += (self.queue.len() - start) as u64;
                        break;
                    }
                }
                Err(_) => {
                    // The first datagram of the batch was refused; the rest go on.
                    sent.errors += 1;
                    start += 1;
                }
            }
        }
        self.queue.clear();
        sent
    }

    /// Sends a prefix of `queue[start..]`; returns how many datagrams left.
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, socket: &UdpSocket, start: usize) -> std::io::Result<usize> {
        use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmmsg};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        let batch = &self.queue[start..(start + SEND_BATCH).min(self.queue.len())];
        self.addresses.clear();
        self.addresses.extend(
            batch
                .iter()
                .map(|o| Some(SockaddrStorage::from(o.destination))),
        );
        let slices: [[IoSlice<'_>; 1]; SEND_BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(
                batch.get(i).map_or(&[][..], |o| o.contents.as_slice()),
            )]
        });
        let results = sendmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices[..batch.len()].iter(),
            &self.addresses,
            [],
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        Ok(results.count())
    }

    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, socket: &UdpSocket, start: usize) -> std::io::Result<usize> {
        let outgoing = &self.queue[start];
        socket.try_send_to(&outgoing.contents, outgoing.destination)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_reaches_every_destination_and_skips_a_refused_one() {
        let sender_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut sender = BatchSender::default();
        // 70 datagrams: three sendmmsg batches, round-robin over the receivers, with an
        // IPv6 destination the IPv4 socket refuses in the middle.
        for i in 0..70u32 {
            let destination = if i == 40 {
                "[::1]:9".parse().unwrap()
            } else {
                receivers[i as usize % 3].local_addr().unwrap()
            };
            sender.push(Outgoing {
                destination,
                contents: i.to_be_bytes().to_vec(),
                media_received_at: None,
            });
        }
        let mut seen = 0;
        let sent = sender.send_all(&sender_socket, |_, _| seen += 1).await;
        assert_eq!(sent.packets, 69);
        assert_eq!(sent.errors, 1);
        assert_eq!(seen, 69);
        let mut got = Vec::new();
        for receiver in &receivers {
            let mut buf = [0u8; 16];
            while let Ok(Ok((n, _))) = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                receiver.recv_from(&mut buf),
            )
            .await
            {
                got.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
            }
        }
        got.sort();
        let want: Vec<u32> = (0..70).filter(|i| *i != 40).collect();
        assert_eq!(got, want);
    }
}
