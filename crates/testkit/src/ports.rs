//! Free loopback ports for services under test. Each test process starts from its own
//! offset in the UDP range so concurrent test binaries rarely probe the same ports.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};

/// UDP ports handed out for RTC ranges; below the media server's production default
/// (40000) and above most ephemeral-port allocations of tests' TCP listeners.
const UDP_SEARCH_START: u16 = 20_000;
const UDP_SEARCH_END: u16 = 32_000;

static NEXT_UDP_PORT: AtomicU16 = AtomicU16::new(0);

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    listener.local_addr().expect("local address").port()
}

/// `count` consecutive UDP ports on 127.0.0.1 that are all free now. Returns the first
/// and last port of the range.
pub fn free_udp_port_range(count: u16) -> (u16, u16) {
    let count = count.max(1);
    let span = UDP_SEARCH_END - UDP_SEARCH_START;
    if NEXT_UDP_PORT.load(Ordering::Relaxed) == 0 {
        let offset = (std::process::id() % u32::from(span / 16)) as u16 * 16;
        let _ = NEXT_UDP_PORT.compare_exchange(
            0,
            UDP_SEARCH_START + offset,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    for _ in 0..2_000 {
        let mut first = NEXT_UDP_PORT.fetch_add(count + 1, Ordering::Relaxed);
        if first < UDP_SEARCH_START || first + count >= UDP_SEARCH_END {
            NEXT_UDP_PORT.store(UDP_SEARCH_START, Ordering::Relaxed);
            first = UDP_SEARCH_START;
        }
        let all_free = (first..first + count).all(|port| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("0.0.0.0", port)).is_ok()
        });
        if all_free {
            return (first, first + count - 1);
        }
    }
    panic!("no free UDP port range of {count} ports found");
}
