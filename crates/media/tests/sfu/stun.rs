//! The plain STUN binding contract used by `scripts/test-connection`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use privatehub_protocol::stun::{Class, Message, MessageBuilder, attribute, method};

use crate::helpers::spawn_server;

/// A plain Binding Request, built with the one STUN codec (`privatehub_protocol::stun`).
pub(crate) fn binding_request(transaction: [u8; 12]) -> Vec<u8> {
    MessageBuilder::new(method::BINDING, Class::Request, &transaction).finish()
}

/// The XOR-MAPPED-ADDRESS of a Binding Success Response.
pub(crate) fn decode_xor_mapped(response: &[u8]) -> SocketAddr {
    let message = Message::parse(response).expect("a STUN message");
    assert_eq!(
        (message.method, message.class),
        (method::BINDING, Class::Success),
        "binding success"
    );
    message
        .xor_address(attribute::XOR_MAPPED_ADDRESS)
        .expect("a well-formed address")
        .expect("an XOR-MAPPED-ADDRESS")
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
