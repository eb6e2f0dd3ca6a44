//! A cursor over fuzz input: takes what it needs and yields zeros once it runs out, so
//! every input decodes to something.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub(crate) struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for byte in &mut out {
            *byte = self.u8();
        }
        out
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }

    /// Up to `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A string of at most `max` bytes, length-prefixed by one byte.
    pub(crate) fn string(&mut self, max: usize) -> String {
        let len = usize::from(self.u8()).min(max);
        String::from_utf8_lossy(self.take(len)).into_owned()
    }

    /// An IPv4 (first byte even) or IPv6 (odd) address and a port.
    pub(crate) fn socket_addr(&mut self) -> SocketAddr {
        let ip = if self.u8() & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()))
        };
        SocketAddr::new(ip, self.u16())
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
