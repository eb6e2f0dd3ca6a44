//! A bot's transport: a loopback UDP socket, or an ICE-TCP connection (RFC 4571
//! framing) to the server's TCP listener.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use str0m::Candidate;
use str0m::net::{Protocol, TcpType};

/// Where a bot's media goes.
#[derive(Debug, Clone, Copy)]
pub enum BotTransport {
    Udp,
    /// ICE-TCP to the server's listener at this address.
    Tcp(SocketAddr),
}

pub enum BotSocket {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        server: SocketAddr,
        /// Bytes read but not yet a whole frame.
        pending: Vec<u8>,
    },
}

impl BotSocket {
    pub fn open(transport: BotTransport) -> BotSocket {
        match transport {
            BotTransport::Udp => BotSocket::Udp(UdpSocket::bind("127.0.0.1:0").unwrap()),
            BotTransport::Tcp(server) => {
                let stream = TcpStream::connect(server).unwrap();
                stream.set_nodelay(true).unwrap();
                BotSocket::Tcp {
                    stream,
                    server,
                    pending: Vec::new(),
                }
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            BotSocket::Udp(socket) => socket.local_addr().unwrap(),
            BotSocket::Tcp { stream, .. } => stream.local_addr().unwrap(),
        }
    }

    /// The bot's host candidate: UDP, or active TCP (it connects to the server's
    /// passive one).
    pub fn candidate(&self) -> Candidate {
        let local = self.local_addr();
        match self {
            BotSocket::Udp(_) => Candidate::host(local, "udp").unwrap(),
            BotSocket::Tcp { .. } => Candidate::builder()
                .tcp()
                .host(local)
                .tcptype(TcpType::Active)
                .build()
                .unwrap(),
        }
    }

    pub fn send(&mut self, contents: &[u8], destination: SocketAddr) {
        match self {
            BotSocket::Udp(socket) => {
                let _ = socket.send_to(contents, destination);
            }
            BotSocket::Tcp { stream, .. } => {
                let mut framed = (contents.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(contents);
                let _ = stream.write_all(&framed);
            }
        }
    }

    /// The next datagram or frame within `wait`: its protocol, source and length in `buf`.
    pub fn recv(
        &mut self,
        buf: &mut [u8],
        wait: Duration,
    ) -> Option<(Protocol, SocketAddr, usize)> {
        match self {
            BotSocket::Udp(socket) => {
                socket.set_read_timeout(Some(wait)).unwrap();
                let (n, source) = socket.recv_from(buf).ok()?;
                Some((Protocol::Udp, source, n))
            }
            BotSocket::Tcp {
                stream,
                server,
                pending,
            } => loop {
                if pending.len() >= 2 {
                    let length = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
                    if pending.len() >= 2 + length {
                        buf[..length].copy_from_slice(&pending[2..2 + length]);
                        pending.drain(..2 + length);
                        return Some((Protocol::Tcp, *server, length));
                    }
                }
                stream.set_read_timeout(Some(wait)).unwrap();
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        std::thread::sleep(wait);
                        return None;
                    }
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return None;
                    }
                    Err(_) => {
                        std::thread::sleep(wait);
                        return None;
                    }
                }
            },
        }
    }
}
