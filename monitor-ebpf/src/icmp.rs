//! ICMP destination unreachable, port unreachable (RFC 792, RFC 1122
//! §3.2.2.1): what the host of a UA that is gone (its process dead, its
//! socket closed) answers a datagram with. It quotes the datagram's IP header
//! and its first 8 bytes, the UDP header: enough to tell which flow, and by
//! the quoted length, which request.

use crate::{
    frame::{Frame, be16, read},
    ipv4,
    packet::IPPROTO_UDP,
};

pub const IPPROTO_ICMP: u8 = 1;
pub const HEADER_LEN: usize = 8;
const TYPE_OFFSET: usize = 0;
const CODE_OFFSET: usize = 1;
const DESTINATION_UNREACHABLE: u8 = 3;
const PORT_UNREACHABLE: u8 = 3;
/// In the quoted UDP header.
const UDP_SOURCE_PORT_OFFSET: usize = 0;
const UDP_DESTINATION_PORT_OFFSET: usize = 2;
const UDP_LENGTH_OFFSET: usize = 4;
const QUOTED_UDP_LEN: usize = 8;

/// The UDP datagram a port unreachable quotes.
pub struct Quoted {
    pub source: [u8; 4],
    pub destination: [u8; 4],
    pub source_port: u16,
    pub destination_port: u16,
    /// The UDP length field: header and payload.
    pub udp_len: u16,
}

/// The datagram an ICMP port unreachable at `offset` quotes; `None` for any
/// other ICMP message, or one whose quote is not a whole IPv4 and UDP header.
#[inline(always)]
pub fn port_unreachable(frame: &impl Frame, offset: usize) -> Option<Quoted> {
    let h: [u8; HEADER_LEN] = read(frame, offset)?;
    if h[TYPE_OFFSET] != DESTINATION_UNREACHABLE || h[CODE_OFFSET] != PORT_UNREACHABLE {
        return None;
    }
    let quoted = ipv4::parse(frame, offset + HEADER_LEN)?;
    if quoted.protocol != IPPROTO_UDP || quoted.fragment_offset != 0 {
        return None;
    }
    let udp: [u8; QUOTED_UDP_LEN] = read(frame, offset + HEADER_LEN + quoted.header_len)?;
    Some(Quoted {
        source: quoted.source,
        destination: quoted.destination,
        source_port: be16(&udp, UDP_SOURCE_PORT_OFFSET),
        destination_port: be16(&udp, UDP_DESTINATION_PORT_OFFSET),
        udp_len: be16(&udp, UDP_LENGTH_OFFSET),
    })
}
