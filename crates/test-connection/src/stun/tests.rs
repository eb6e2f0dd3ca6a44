use super::*;
use std::net::Ipv6Addr;

const ID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

/// A response header for `ID` followed by `attributes` (already padded).
fn response(message_type: u16, attributes: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&message_type.to_be_bytes());
    message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    message.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    message.extend_from_slice(&ID);
    message.extend_from_slice(attributes);
    message
}

fn xor_mapped_v4(ip: [u8; 4], port: u16) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut attribute = vec![0x00, 0x20, 0x00, 0x08, 0x00, 0x01];
    attribute.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
    attribute.extend(ip.iter().zip(cookie).map(|(octet, mask)| octet ^ mask));
    attribute
}

#[test]
fn request_is_a_bare_binding_request() {
    let request = binding_request(&ID);
    assert_eq!(&request[0..4], &[0x00, 0x01, 0x00, 0x00]);
    assert_eq!(&request[4..8], &[0x21, 0x12, 0xA4, 0x42]);
    assert_eq!(&request[8..], &ID);
}

#[test]
fn success_with_xor_mapped_ipv4() {
    let datagram = response(0x0101, &xor_mapped_v4([192, 0, 2, 7], 54321));
    assert_eq!(
        parse_binding_response(&datagram, &ID),
        Ok(BindingResponse::Success {
            mapped: "192.0.2.7:54321".parse().unwrap(),
            xor_mapped: true,
        })
    );
}

#[test]
fn success_with_xor_mapped_ipv6() {
    let ip: Ipv6Addr = "2001:db8::1234".parse().unwrap();
    let mask: Vec<u8> = MAGIC_COOKIE.to_be_bytes().into_iter().chain(ID).collect();
    let mut attribute = vec![0x00, 0x20, 0x00, 0x14, 0x00, 0x02];
    attribute.extend_from_slice(&(443u16 ^ 0x2112).to_be_bytes());
    attribute.extend(ip.octets().iter().zip(&mask).map(|(octet, m)| octet ^ m));
    let datagram = response(0x0101, &attribute);
    assert_eq!(
        parse_binding_response(&datagram, &ID),
        Ok(BindingResponse::Success {
            mapped: "[2001:db8::1234]:443".parse().unwrap(),
            xor_mapped: true,
        })
    );
}

#[test]
fn unknown_attributes_before_the_address_are_skipped() {
    // SOFTWARE attribute with a 5-byte value, padded to 8.
    let mut attributes = vec![
        0x80, 0x22, 0x00, 0x05, b's', b't', b'r', b'0', b'm', 0, 0, 0,
    ];
    attributes.extend(xor_mapped_v4([127, 0, 0, 1], 40000));
    let datagram = response(0x0101, &attributes);
    assert!(matches!(
        parse_binding_response(&datagram, &ID),
        Ok(BindingResponse::Success { mapped, .. }) if mapped.port() == 40000
    ));
}

#[test]
fn legacy_mapped_address_is_accepted_but_flagged() {
    let attribute = [0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x9C, 0x40, 10, 0, 0, 1];
    let datagram = response(0x0101, &attribute);
    assert_eq!(
        parse_binding_response(&datagram, &ID),
        Ok(BindingResponse::Success {
            mapped: "10.0.0.1:40000".parse().unwrap(),
            xor_mapped: false,
        })
    );
}

#[test]
fn error_response_carries_code_and_reason() {
    let attribute = [0x00, 0x09, 0x00, 0x08, 0, 0, 4, 1, b'N', b'o', b'p', b'e'];
    let datagram = response(0x0111, &attribute);
    assert_eq!(
        parse_binding_response(&datagram, &ID),
        Ok(BindingResponse::Error {
            code: 401,
            reason: "Nope".into()
        })
    );
}

#[test]
fn bad_answers_are_named() {
    let good = response(0x0101, &xor_mapped_v4([127, 0, 0, 1], 1));
    let check = |datagram: &[u8], expected: StunParseError| {
        assert_eq!(parse_binding_response(datagram, &ID), Err(expected));
    };
    check(&good[..10], StunParseError::Codec(CodecError::TooShort(10)));
    check(
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        StunParseError::Codec(CodecError::NotStun),
    );
    check(
        &good[..good.len() - 4],
        StunParseError::Codec(CodecError::BadLength {
            declared: 12,
            actual: 8,
        }),
    );
    let mut other_transaction = good.clone();
    other_transaction[19] ^= 0xFF;
    check(&other_transaction, StunParseError::WrongTransaction);
    check(
        &response(0x0001, &[]),
        StunParseError::UnexpectedType(0x0001),
    );
    check(&response(0x0101, &[]), StunParseError::NoMappedAddress);
    check(
        &response(0x0101, &[0x00, 0x20, 0x00, 0x10, 0, 1, 0, 0]),
        StunParseError::Codec(CodecError::BadAttribute(0x0020)),
    );
}
