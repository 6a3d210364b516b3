//! IPv6 (RFC 8200) and the extension headers that may sit before the transport header.

use crate::frame::{Frame, be16, read, read_be16};

pub const HEADER_LEN: usize = 40;
pub const VERSION_OFFSET: usize = 0;
pub const PAYLOAD_LENGTH_OFFSET: usize = 4;
pub const NEXT_HEADER_OFFSET: usize = 6;
pub const SOURCE_OFFSET: usize = 8;
pub const DESTINATION_OFFSET: usize = 24;

pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AUTHENTICATION: u8 = 51;
pub const DESTINATION_OPTIONS: u8 = 60;

/// Fragment header: next header, reserved, offset (13 bits) + flags, id.
pub const FRAGMENT_HEADER_LEN: usize = 8;
pub const FRAGMENT_OFFSET_FIELD: usize = 2;
pub const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
pub const MORE_FRAGMENTS: u16 = 0x0001;

/// More extension headers than this in one packet are treated as hostile.
pub const MAX_EXTENSION_HEADERS: usize = 8;

pub struct Ipv6 {
    /// Offset of the transport header, after any extension headers.
    pub transport_offset: usize,
    /// Where the datagram ends (header + payload length), relative to the IPv6 header.
    pub total_len: usize,
    pub protocol: u8,
    pub more_fragments: bool,
    pub fragment_offset: u16,
    pub source: [u8; 16],
    pub destination: [u8; 16],
}

/// `None` when a header is truncated or the chain is too long.
#[inline(always)]
pub fn parse(frame: &impl Frame, offset: usize) -> Option<Ipv6> {
    let h: [u8; HEADER_LEN] = read(frame, offset)?;
    if h[VERSION_OFFSET] >> 4 != 6 {
        return None;
    }
    let total_len = HEADER_LEN + be16(&h, PAYLOAD_LENGTH_OFFSET) as usize;
    let mut protocol = h[NEXT_HEADER_OFFSET];
    let mut header = offset + HEADER_LEN;
    let mut more_fragments = false;
    let mut fragment_offset = 0;
    let mut walked = 0;
    while walked < MAX_EXTENSION_HEADERS {
        if !matches!(protocol, HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS | AUTHENTICATION | FRAGMENT) {
            break;
        }
        // Every extension header starts with its next header and its length.
        let [next, length] = read::<[u8; 2]>(frame, header)?;
        let len = match protocol {
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => (length as usize + 1) * 8,
            // RFC 4302 §2.2: the length is in 4-octet units, minus 2.
            AUTHENTICATION => (length as usize + 2) * 4,
            FRAGMENT => {
                let field = read_be16(frame, header + FRAGMENT_OFFSET_FIELD)?;
                more_fragments = field & MORE_FRAGMENTS != 0;
                fragment_offset = (field & FRAGMENT_OFFSET_MASK) >> 3;
                FRAGMENT_HEADER_LEN
            }
            _ => break,
        };
        protocol = next;
        header += len;
        walked += 1;
    }
    if walked == MAX_EXTENSION_HEADERS {
        return None;
    }
    Some(Ipv6 {
        transport_offset: header,
        total_len,
        protocol,
        more_fragments,
        fragment_offset,
        source: address(&h, SOURCE_OFFSET),
        destination: address(&h, DESTINATION_OFFSET),
    })
}

#[inline(always)]
fn address(h: &[u8; HEADER_LEN], at: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = h[at + i];
        i += 1;
    }
    out
}
