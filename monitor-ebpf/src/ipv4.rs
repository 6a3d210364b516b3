//! IPv4 (RFC 791), options included: the header length comes from IHL.

use crate::frame::{Frame, be16, read};

pub const MIN_HEADER_LEN: usize = 20;
pub const VERSION_IHL_OFFSET: usize = 0;
pub const TOTAL_LENGTH_OFFSET: usize = 2;
pub const FLAGS_FRAGMENT_OFFSET: usize = 6;
pub const PROTOCOL_OFFSET: usize = 9;
pub const SOURCE_OFFSET: usize = 12;
pub const DESTINATION_OFFSET: usize = 16;

pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

pub struct Ipv4 {
    pub header_len: usize,
    /// Total length from the header: where the datagram ends, not the frame.
    pub total_len: usize,
    pub protocol: u8,
    pub more_fragments: bool,
    pub fragment_offset: u16,
    pub source: [u8; 4],
    pub destination: [u8; 4],
}

/// `None` when the header is truncated or inconsistent.
#[inline(always)]
pub fn parse(frame: &impl Frame, offset: usize) -> Option<Ipv4> {
    // The fixed part in one bounds check. Options need none: the transport header
    // is read past them, and the datagram's end is checked against the frame.
    let h: [u8; MIN_HEADER_LEN] = read(frame, offset)?;
    let version_ihl = h[VERSION_IHL_OFFSET];
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < MIN_HEADER_LEN {
        return None;
    }
    let total_len = be16(&h, TOTAL_LENGTH_OFFSET) as usize;
    if total_len < header_len {
        return None;
    }
    let flags_fragment = be16(&h, FLAGS_FRAGMENT_OFFSET);
    Some(Ipv4 {
        header_len,
        total_len,
        protocol: h[PROTOCOL_OFFSET],
        more_fragments: flags_fragment & MORE_FRAGMENTS != 0,
        fragment_offset: flags_fragment & FRAGMENT_OFFSET_MASK,
        source: [h[SOURCE_OFFSET], h[SOURCE_OFFSET + 1], h[SOURCE_OFFSET + 2], h[SOURCE_OFFSET + 3]],
        destination: [
            h[DESTINATION_OFFSET],
            h[DESTINATION_OFFSET + 1],
            h[DESTINATION_OFFSET + 2],
            h[DESTINATION_OFFSET + 3],
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        frame::SliceFrame,
        test_frames::{CLIENT_V4, IP_OFFSET, SERVER_V4, udp4},
    };

    #[test]
    fn the_header_is_read_by_its_named_offsets() {
        let frame = udp4(&[], (5060, 5061), b"hello");
        let ip = parse(&SliceFrame(&frame), IP_OFFSET).expect("parsed");
        assert_eq!((ip.header_len, ip.total_len, ip.protocol), (20, 20 + 8 + 5, 17));
        assert_eq!((ip.source, ip.destination), (CLIENT_V4, SERVER_V4));
        assert!(!ip.more_fragments && ip.fragment_offset == 0);
    }

    #[test]
    fn options_fragments_and_bad_headers() {
        let frame = udp4(&[], (5060, 5061), b"hello");
        let mut options = frame.clone();
        options[IP_OFFSET] = 0x46; // IHL 6: four bytes of options
        assert_eq!(parse(&SliceFrame(&options), IP_OFFSET).map(|ip| ip.header_len), Some(24));
        let mut fragment = frame.clone();
        fragment[IP_OFFSET + FLAGS_FRAGMENT_OFFSET..][..2].copy_from_slice(&(MORE_FRAGMENTS | 3).to_be_bytes());
        let ip = parse(&SliceFrame(&fragment), IP_OFFSET).expect("parsed");
        assert!(ip.more_fragments && ip.fragment_offset == 3);
        for (byte, value) in [(0, 0x65), (0, 0x44), (3, 0x10)] {
            let mut bad = frame.clone();
            bad[IP_OFFSET + byte] = value;
            if byte == 3 {
                bad[IP_OFFSET + 2] = 0; // total length 16, below the header's 20
            }
            assert!(parse(&SliceFrame(&bad), IP_OFFSET).is_none(), "byte {byte} = {value:#x}");
        }
        assert!(parse(&SliceFrame(&frame[..IP_OFFSET + 19]), IP_OFFSET).is_none(), "truncated");
    }
}
