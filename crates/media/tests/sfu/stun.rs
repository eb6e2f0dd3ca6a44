//! The plain STUN binding contract used by `scripts/test-connection`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::helpers::spawn_server;

fn binding_request(transaction: [u8; 12]) -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    b.extend_from_slice(&transaction);
    b
}

fn decode_xor_mapped(resp: &[u8]) -> SocketAddr {
    assert_eq!(&resp[0..2], &[0x01, 0x01], "binding success");
    let mut at = 20;
    while at + 4 <= resp.len() {
        let attr = u16::from_be_bytes([resp[at], resp[at + 1]]);
        let len = u16::from_be_bytes([resp[at + 2], resp[at + 3]]) as usize;
        if attr == 0x0020 {
            let v = &resp[at + 4..at + 4 + len];
            assert_eq!(v[1], 0x01, "IPv4");
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ 0x2112_A442;
            return SocketAddr::from((std::net::Ipv4Addr::from(ip), port));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    panic!("no XOR-MAPPED-ADDRESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_binding_request_gets_xor_mapped_address() {
    let _heap = crate::alloc::shared().await;
    let server = spawn_server(42020, 2).await;
    for port in server.rtc_ports.clone() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let transaction = [port as u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        socket
            .send_to(&binding_request(transaction), ("127.0.0.1", port))
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).expect("a binding response");
        assert_eq!(&buf[8..20], &transaction, "same transaction id");
        assert_eq!(decode_xor_mapped(&buf[..n]), socket.local_addr().unwrap());
    }

    // Rate limited per source: a burst gets at most a handful of answers.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for i in 0..50u8 {
        socket
            .send_to(
                &binding_request([i; 12]),
                ("127.0.0.1", server.rtc_ports[0]),
            )
            .unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 512];
    while socket.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    // The first loop's requests came from other sockets; this source gets its own budget.
    assert!((1..=10).contains(&answers), "got {answers} answers");
    server.stop().await;
}
