//! Frames for the layers' host tests, built with etherparse (as the kernel
//! tests in tests/ build theirs), read through `frame::SliceFrame`.

use etherparse::{PacketBuilder, VlanId};

pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
pub const SERVER_V4: [u8; 4] = [192, 0, 2, 2];
pub const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// UDP over IPv4 behind `tags` VLAN tags (none, 802.1Q, or 802.1ad outside 802.1Q).
pub fn udp4(tags: &[u16], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let base = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let id = |v: u16| VlanId::try_new(v).expect("vlan id");
    let builder = match tags {
        [] => base.ipv4(CLIENT_V4, SERVER_V4, 64),
        [one] => base.single_vlan(id(*one)).ipv4(CLIENT_V4, SERVER_V4, 64),
        [outer, inner, ..] => base.double_vlan(id(*outer), id(*inner)).ipv4(CLIENT_V4, SERVER_V4, 64),
    }
    .udp(ports.0, ports.1);
    let mut out = Vec::new();
    builder.write(&mut out, payload).expect("build");
    out
}

/// TCP over IPv6 with an ACK, a window of 1000 and a 12-byte option block (timestamps).
pub fn tcp6(ports: (u16, u16), sequence: u32, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .tcp(ports.0, ports.1, sequence, 1000)
        .ack(7)
        .options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(1, 2),
        ])
        .expect("options");
    let mut out = Vec::new();
    builder.write(&mut out, payload).expect("build");
    out
}

/// Where the IP header starts in an untagged frame.
pub const IP_OFFSET: usize = 14;
