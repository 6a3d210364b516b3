//! UDP (RFC 768).

use crate::frame::{Frame, be16, read};

pub const HEADER_LEN: usize = 8;
pub const SOURCE_PORT_OFFSET: usize = 0;
pub const DESTINATION_PORT_OFFSET: usize = 2;
pub const LENGTH_OFFSET: usize = 4;
pub const CHECKSUM_OFFSET: usize = 6;

pub struct Udp {
    pub source_port: u16,
    pub destination_port: u16,
    /// Header plus payload, as the header states it.
    pub length: usize,
    pub checksum: u16,
}

#[inline(always)]
pub fn parse(frame: &impl Frame, offset: usize) -> Option<Udp> {
    let h: [u8; HEADER_LEN] = read(frame, offset)?;
    let length = be16(&h, LENGTH_OFFSET) as usize;
    if length < HEADER_LEN {
        return None;
    }
    Some(Udp {
        source_port: be16(&h, SOURCE_PORT_OFFSET),
        destination_port: be16(&h, DESTINATION_PORT_OFFSET),
        length,
        checksum: be16(&h, CHECKSUM_OFFSET),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        frame::SliceFrame,
        test_frames::{IP_OFFSET, udp4},
    };

    const UDP_OFFSET: usize = IP_OFFSET + 20;

    #[test]
    fn ports_and_length() {
        let frame = udp4(&[], (40000, 5060), b"hello");
        let udp = parse(&SliceFrame(&frame), UDP_OFFSET).expect("parsed");
        assert_eq!((udp.source_port, udp.destination_port, udp.length), (40000, 5060, 13));
    }

    #[test]
    fn a_length_below_the_header_is_none() {
        let mut frame = udp4(&[], (40000, 5060), b"hello");
        frame[UDP_OFFSET + LENGTH_OFFSET..][..2].copy_from_slice(&7u16.to_be_bytes());
        assert!(parse(&SliceFrame(&frame), UDP_OFFSET).is_none());
    }
}
