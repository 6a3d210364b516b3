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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        frame::SliceFrame,
        test_frames::{CLIENT_V6, IP_OFFSET, SERVER_V6, tcp6},
    };

    /// `frame` with an 8-byte extension header of `kind` after the fixed header.
    fn with_extension(frame: &[u8], kind: u8, body: [u8; 6]) -> Vec<u8> {
        let mut out = frame[..IP_OFFSET + HEADER_LEN].to_vec();
        out.extend_from_slice(&[frame[IP_OFFSET + NEXT_HEADER_OFFSET], 0]);
        out.extend_from_slice(&body);
        out.extend_from_slice(&frame[IP_OFFSET + HEADER_LEN..]);
        out[IP_OFFSET + NEXT_HEADER_OFFSET] = kind;
        let length = u16::from_be_bytes([out[IP_OFFSET + 4], out[IP_OFFSET + 5]]) + 8;
        out[IP_OFFSET + PAYLOAD_LENGTH_OFFSET..][..2].copy_from_slice(&length.to_be_bytes());
        out
    }

    #[test]
    fn the_fixed_header_and_the_extension_chain() {
        let frame = tcp6((40000, 5060), 1, b"hi");
        let ip = parse(&SliceFrame(&frame), IP_OFFSET).expect("parsed");
        assert_eq!((ip.transport_offset, ip.protocol), (IP_OFFSET + 40, 6));
        assert_eq!((ip.source, ip.destination), (CLIENT_V6, SERVER_V6));
        let options = with_extension(&frame, DESTINATION_OPTIONS, [1, 4, 0, 0, 0, 0]);
        let ip = parse(&SliceFrame(&options), IP_OFFSET).expect("parsed");
        assert_eq!((ip.transport_offset, ip.protocol), (IP_OFFSET + 48, 6));
        let [high, low] = (5u16 << 3 | MORE_FRAGMENTS).to_be_bytes();
        let fragment = with_extension(&options, FRAGMENT, [high, low, 0, 0, 0x12, 0x34]);
        let ip = parse(&SliceFrame(&fragment), IP_OFFSET).expect("parsed");
        assert_eq!((ip.transport_offset, ip.more_fragments, ip.fragment_offset), (IP_OFFSET + 56, true, 5));
    }

    #[test]
    fn too_many_extension_headers_or_a_wrong_version_is_none() {
        let mut frame = tcp6((40000, 5060), 1, b"hi");
        for _ in 0..MAX_EXTENSION_HEADERS {
            frame = with_extension(&frame, DESTINATION_OPTIONS, [1, 4, 0, 0, 0, 0]);
        }
        assert!(parse(&SliceFrame(&frame), IP_OFFSET).is_none(), "{MAX_EXTENSION_HEADERS} extension headers");
        let mut v4 = tcp6((40000, 5060), 1, b"hi");
        v4[IP_OFFSET] = 0x45;
        assert!(parse(&SliceFrame(&v4), IP_OFFSET).is_none());
    }
}
