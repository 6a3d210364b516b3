//! Frames for the tests, built with etherparse rather than by hand where it can.

use etherparse::{PacketBuilder, VlanId};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Documentation ranges (RFC 5737, RFC 3849): never real hosts.
pub const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
pub const SERVER_V4: [u8; 4] = [192, 0, 2, 2];
pub const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const CLIENT_PORT: u16 = 40000;
pub const SIP_PORT: u16 = 5060;
pub const SIPS_PORT: u16 = 5061;
/// SIP over WebSocket in clear (`--ws-port`), as the kernel tests configure it.
pub const WS_PORT: u16 = 8080;

pub const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bK1\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
pub const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK2\r\nCall-ID: r@b\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
pub const FLOW_FAILED: &[u8] = b"SIP/2.0 430 Flow Failed\r\nVia: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
pub const REGISTER_OK: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK2\r\nCall-ID: r@b\r\nCSeq: 1 REGISTER\r\nFlow-Timer: 25\r\nContent-Length: 0\r\n\r\n";
pub const RINGING: &[u8] = b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
pub const MULTIPLE_CHOICES: &[u8] = b"SIP/2.0 300 Multiple Choices\r\nContact: <sip:a@192.0.2.9>\r\nContact: <sip:a@192.0.2.10>\r\nContent-Length: 0\r\n\r\n";

fn finish<B>(builder: B, payload: &[u8], write: impl FnOnce(B, &mut Vec<u8>, &[u8])) -> Vec<u8> {
    let mut out = Vec::new();
    write(builder, &mut out, payload);
    out
}

/// UDP over IPv4, client to server.
pub fn udp4(source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(source_port, destination_port);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// UDP over IPv4 between any two addresses.
pub fn udp4_between(source: ([u8; 4], u16), destination: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC).ipv4(source.0, destination.0, 64).udp(source.1, destination.1);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// UDP over IPv6.
pub fn udp6(source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .udp(source_port, destination_port);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// TCP over IPv6 from the client, with an ACK and new data.
pub fn tcp6(source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .tcp(
            source_port,
            destination_port,
            next_sequence((&CLIENT_V6, source_port), (&SERVER_V6, destination_port), payload.len() as u32),
            65535,
        )
        .ack(1);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// UDP over IPv6 behind one or two VLAN tags (802.1Q, or 802.1ad outside 802.1Q).
pub fn udp6_vlan(tags: &[u16], source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let base = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let id = |v: u16| VlanId::try_new(v).expect("vlan id");
    let b = match tags {
        [one] => base.single_vlan(id(*one)).ipv6(CLIENT_V6, SERVER_V6, 64),
        [outer, inner] => base.double_vlan(id(*outer), id(*inner)).ipv6(CLIENT_V6, SERVER_V6, 64),
        _ => panic!("one or two tags"),
    }
    .udp(source_port, destination_port);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// UDP over IPv4 behind one or two VLAN tags.
pub fn udp4_vlan(tags: &[u16], source_port: u16, destination_port: u16, payload: &[u8]) -> Vec<u8> {
    let base = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let id = |v: u16| VlanId::try_new(v).expect("vlan id");
    let b = match tags {
        [one] => base.single_vlan(id(*one)).ipv4(CLIENT_V4, SERVER_V4, 64),
        [outer, inner] => base.double_vlan(id(*outer), id(*inner)).ipv4(CLIENT_V4, SERVER_V4, 64),
        _ => panic!("one or two tags"),
    }
    .udp(source_port, destination_port);
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// TCP flags for [`tcp4`].
#[derive(Clone, Copy, Default)]
pub struct Flags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// TCP over IPv4 from the client's address, with an ACK and the given extra flags.
pub fn tcp4(source_port: u16, destination_port: u16, flags: Flags, payload: &[u8]) -> Vec<u8> {
    tcp4_between((CLIENT_V4, source_port), (SERVER_V4, destination_port), flags, payload)
}

/// TCP over IPv4 from the server's address back to the client.
pub fn tcp4_from_server(source_port: u16, destination_port: u16, flags: Flags, payload: &[u8]) -> Vec<u8> {
    tcp4_between((SERVER_V4, source_port), (CLIENT_V4, destination_port), flags, payload)
}

/// One direction of a crafted connection: source address and port, destination address and port.
type Direction = (Vec<u8>, u16, Vec<u8>, u16);

thread_local! {
    /// Where each direction of each crafted connection goes on: a test's
    /// segments follow one another in sequence, as a sender's do (the kernel
    /// reads only what the host would take in order, and counts a repeated
    /// segment's messages once). Per thread: each test runs in its own.
    static NEXT_SEQUENCE: std::cell::RefCell<std::collections::HashMap<Direction, u32>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The sequence number of the next segment from `source` to `destination`,
/// which takes `len` numbers of it (its payload, and one for a SYN or FIN).
fn next_sequence(source: (&[u8], u16), destination: (&[u8], u16), len: u32) -> u32 {
    NEXT_SEQUENCE.with(|next| {
        let mut next = next.borrow_mut();
        let seq = next.entry((source.0.to_vec(), source.1, destination.0.to_vec(), destination.1)).or_insert(1000);
        let this = *seq;
        *seq = this.wrapping_add(len);
        this
    })
}

/// Sequence numbers a segment takes: its payload, and one for a SYN or FIN.
fn taken_len(flags: Flags, payload: &[u8]) -> u32 {
    payload.len() as u32 + u32::from(flags.syn) + u32::from(flags.fin)
}

/// TCP over IPv4 between any two addresses.
pub fn tcp4_between(source: ([u8; 4], u16), destination: ([u8; 4], u16), flags: Flags, payload: &[u8]) -> Vec<u8> {
    let (source_port, destination_port) = (source.1, destination.1);
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(source.0, destination.0, 64)
        .tcp(
            source_port,
            destination_port,
            next_sequence((&source.0, source_port), (&destination.0, destination_port), taken_len(flags, payload)),
            65535,
        )
        .ack(1);
    if flags.syn {
        b = b.syn();
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// The numbers a segment of a real connection carries.
#[derive(Clone, Copy)]
pub struct Sequence {
    pub seq: u32,
    /// 0: no ACK flag (a client's first SYN).
    pub ack: u32,
    pub window: u16,
}

/// TCP over IPv4 between the client (port `CLIENT_PORT`) and the server's SIP
/// port, with the sequence numbers given rather than made up.
pub fn tcp4_segment(from_client: bool, port: u16, numbers: Sequence, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let (source, destination) = if from_client {
        ((CLIENT_V4, CLIENT_PORT), (SERVER_V4, port))
    } else {
        ((SERVER_V4, port), (CLIENT_V4, CLIENT_PORT))
    };
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC).ipv4(source.0, destination.0, 64).tcp(
        source.1,
        destination.1,
        numbers.seq,
        numbers.window,
    );
    if numbers.ack != 0 {
        b = b.ack(numbers.ack);
    }
    if flags.syn {
        b = b.syn();
    }
    if flags.fin {
        b = b.fin();
    }
    if flags.rst {
        b = b.rst();
    }
    finish(b, payload, |b, out, p| b.write(out, p).expect("build"))
}

/// Offsets into an untagged IPv4 frame, for the tests that damage headers on purpose.
pub const IPV4_OFFSET: usize = 14;
pub const IPV6_OFFSET: usize = 14;

/// An IPv4 frame with `options` (a multiple of 4 bytes) inserted after the fixed header.
pub fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl_at = IPV4_OFFSET;
    let mut out = frame[..IPV4_OFFSET + 20].to_vec();
    out.extend_from_slice(options);
    out.extend_from_slice(&frame[IPV4_OFFSET + 20..]);
    out[ihl_at] = 0x40 | (((20 + options.len()) / 4) as u8);
    let total = u16::from_be_bytes([out[IPV4_OFFSET + 2], out[IPV4_OFFSET + 3]]) + options.len() as u16;
    out[IPV4_OFFSET + 2..IPV4_OFFSET + 4].copy_from_slice(&total.to_be_bytes());
    out
}

/// IPv6 extension header types (RFC 8200 §4).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DESTINATION_OPTIONS: u8 = 60;

/// An IPv6 frame with one more 8-byte extension header of `kind` right after
/// the fixed header; `body` is its six bytes after next-header and length.
pub fn with_ipv6_extension(frame: &[u8], kind: u8, body: [u8; 6]) -> Vec<u8> {
    let next = frame[IPV6_OFFSET + 6];
    let mut out = frame[..IPV6_OFFSET + 40].to_vec();
    // For every kind used here, length 0 means 8 bytes (the fragment header has no length field).
    out.extend_from_slice(&[next, 0]);
    out.extend_from_slice(&body);
    out.extend_from_slice(&frame[IPV6_OFFSET + 40..]);
    out[IPV6_OFFSET + 6] = kind;
    let payload = u16::from_be_bytes([out[IPV6_OFFSET + 4], out[IPV6_OFFSET + 5]]) + 8;
    out[IPV6_OFFSET + 4..IPV6_OFFSET + 6].copy_from_slice(&payload.to_be_bytes());
    out
}

/// A destination-options header (a PadN option filling it).
pub fn with_ipv6_destination_options(frame: &[u8]) -> Vec<u8> {
    with_ipv6_extension(frame, IPV6_DESTINATION_OPTIONS, [1, 4, 0, 0, 0, 0])
}

/// An IPv6 frame as a fragment (RFC 8200 §4.5): `offset` in 8-byte units, `more` to come.
pub fn as_ipv6_fragment(frame: &[u8], offset: u16, more: bool) -> Vec<u8> {
    let [high, low] = (offset << 3 | u16::from(more)).to_be_bytes();
    with_ipv6_extension(frame, IPV6_FRAGMENT, [high, low, 0, 0, 0x12, 0x34])
}

/// Marks an IPv4 frame as a fragment: `offset` in 8-byte units, `more` fragments to come.
pub fn as_ipv4_fragment(frame: &[u8], offset: u16, more: bool) -> Vec<u8> {
    let mut out = frame.to_vec();
    let field = offset | if more { 0x2000 } else { 0 };
    out[IPV4_OFFSET + 6..IPV4_OFFSET + 8].copy_from_slice(&field.to_be_bytes());
    out
}

/// A STUN message of `kind` (RFC 8489 §5) with an empty body.
pub fn stun(kind: u16) -> Vec<u8> {
    let mut m = kind.to_be_bytes().to_vec();
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&0x2112_a442u32.to_be_bytes());
    m.extend_from_slice(&[0x5a; 12]);
    m
}

/// A WebSocket frame (RFC 6455 §5.2) with FIN set; masked with `mask` when
/// given, as a client must send it.
pub fn ws_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// An ICMP port unreachable (RFC 792) from the client's host to the server,
/// quoting `datagram` (a whole Ethernet frame the server sent the client): its
/// IPv4 header and the first 8 bytes after it, as a host's stack quotes them.
pub fn icmp4_port_unreachable(datagram: &[u8]) -> Vec<u8> {
    let ip = &datagram[IPV4_OFFSET..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let quoted = &ip[..header_len + 8];
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let checksum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut header = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&CLIENT_V4);
    header.extend_from_slice(&SERVER_V4);
    let checksum = internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = datagram[..IPV4_OFFSET].to_vec();
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&icmp);
    frame
}

/// RFC 1071's one's complement sum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
