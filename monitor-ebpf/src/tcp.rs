//! TCP (RFC 9293): ports, header length, and the flags a flow's liveness needs.

use crate::frame::{Frame, be16, read};

pub const MIN_HEADER_LEN: usize = 20;
pub const SOURCE_PORT_OFFSET: usize = 0;
pub const DESTINATION_PORT_OFFSET: usize = 2;
pub const SEQUENCE_OFFSET: usize = 4;
pub const ACKNOWLEDGMENT_OFFSET: usize = 8;
pub const DATA_OFFSET_OFFSET: usize = 12;
pub const FLAGS_OFFSET: usize = 13;
pub const WINDOW_OFFSET: usize = 14;

/// The flags, defined once beside the sequence checks that read them.
pub use monitor_common::tcp_sequence::{ACK, FIN, RST, SYN};

pub struct Tcp {
    pub source_port: u16,
    pub destination_port: u16,
    /// The sequence number of the segment's first payload byte.
    pub sequence: u32,
    pub acknowledgment: u32,
    pub window: u16,
    pub header_len: usize,
    pub flags: u8,
}

#[inline(always)]
fn be32(h: &[u8; MIN_HEADER_LEN], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// `None` when truncated or when the data offset is below 5 words.
#[inline(always)]
pub fn parse(frame: &impl Frame, offset: usize) -> Option<Tcp> {
    let h: [u8; MIN_HEADER_LEN] = read(frame, offset)?;
    let header_len = ((h[DATA_OFFSET_OFFSET] >> 4) as usize) * 4;
    if header_len < MIN_HEADER_LEN {
        return None;
    }
    // Options need no read: packet::parse checks that the payload starts inside the datagram.
    Some(Tcp {
        source_port: be16(&h, SOURCE_PORT_OFFSET),
        destination_port: be16(&h, DESTINATION_PORT_OFFSET),
        sequence: be32(&h, SEQUENCE_OFFSET),
        acknowledgment: be32(&h, ACKNOWLEDGMENT_OFFSET),
        window: be16(&h, WINDOW_OFFSET),
        header_len,
        flags: h[FLAGS_OFFSET],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        frame::SliceFrame,
        test_frames::{IP_OFFSET, tcp6},
    };

    const TCP_OFFSET: usize = IP_OFFSET + 40;

    #[test]
    fn ports_numbers_flags_and_options_length() {
        let frame = tcp6((40000, 5060), 0xdead_beef, b"hi");
        let tcp = parse(&SliceFrame(&frame), TCP_OFFSET).expect("parsed");
        assert_eq!((tcp.source_port, tcp.destination_port), (40000, 5060));
        assert_eq!((tcp.sequence, tcp.acknowledgment, tcp.window), (0xdead_beef, 7, 1000));
        assert_eq!(tcp.header_len, 32, "12 bytes of options");
        assert_eq!(tcp.flags & (ACK | SYN | FIN | RST), ACK);
    }

    #[test]
    fn a_data_offset_below_five_words_or_a_cut_header_is_none() {
        let mut frame = tcp6((40000, 5060), 1, b"hi");
        frame[TCP_OFFSET + DATA_OFFSET_OFFSET] = 4 << 4;
        assert!(parse(&SliceFrame(&frame), TCP_OFFSET).is_none());
        assert!(parse(&SliceFrame(&frame[..TCP_OFFSET + 19]), TCP_OFFSET).is_none());
    }
}
