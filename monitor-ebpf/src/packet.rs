//! Walks a frame from Ethernet down to the transport payload.

use crate::{
    eth,
    frame::{self, Frame},
    icmp, ipv4, ipv6, tcp, udp,
};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A UDP datagram or TCP segment, located in the frame.
pub struct Segment {
    pub transport: Transport,
    /// 4 or 6.
    pub family: u8,
    /// IPv4 addresses sit in the first four bytes.
    pub source: [u8; 16],
    pub destination: [u8; 16],
    pub source_port: u16,
    pub destination_port: u16,
    /// TCP flags; 0 for UDP.
    pub tcp_flags: u8,
    /// The TCP sequence number of the first payload byte; 0 for UDP.
    pub tcp_sequence: u32,
    /// The TCP acknowledgment number and window as written; 0 for UDP.
    pub tcp_acknowledgment: u32,
    pub tcp_window: u16,
    /// The UDP length as written (header and payload); 0 for TCP. What an
    /// ICMP error's quote is matched by (a checksum may be left to the NIC).
    pub udp_len: u16,
    pub payload_offset: usize,
    /// Payload bytes present in this packet (of a first fragment: up to its end).
    pub payload_len: usize,
    pub vlan_id: u16,
    /// The first fragment of a fragmented datagram: classified, and counted as a fragment too.
    pub first_fragment: bool,
}

pub enum Parsed {
    Segment(Segment),
    /// An ICMP port unreachable (IPv4): the UDP datagram it quotes, as a
    /// segment without payload (its `udp_len` the quoted one).
    PortUnreachable(Segment),
    /// A fragment other than the first: it has no transport header to read.
    LaterFragment,
    /// Not IP, or IP carrying neither UDP nor TCP.
    Untracked,
    /// Truncated or inconsistent headers.
    Malformed,
}

#[derive(Default)]
struct TcpFields {
    flags: u8,
    sequence: u32,
    acknowledgment: u32,
    window: u16,
}

/// Where the network layer put the transport header.
struct Network {
    family: u8,
    source: [u8; 16],
    destination: [u8; 16],
    protocol: u8,
    transport_offset: usize,
    /// Offset one past the datagram's last byte.
    end: usize,
    more_fragments: bool,
    fragment_offset: u16,
}

#[inline(always)]
pub fn parse(frame: &impl Frame) -> Parsed {
    let Some(ethernet) = eth::parse(frame) else {
        return Parsed::Malformed;
    };
    let network = match ethernet.ethertype {
        eth::ETHERTYPE_IPV4 => network_v4(frame, ethernet.l3_offset),
        eth::ETHERTYPE_IPV6 => network_v6(frame, ethernet.l3_offset),
        _ => return Parsed::Untracked,
    };
    let Some(network) = network else {
        return Parsed::Malformed;
    };
    if network.end > frame::len(frame) || network.transport_offset > network.end {
        return Parsed::Malformed;
    }
    if network.fragment_offset != 0 {
        return Parsed::LaterFragment;
    }
    let first_fragment = network.more_fragments;
    if network.protocol == icmp::IPPROTO_ICMP && network.family == 4 {
        return match icmp::port_unreachable(frame, network.transport_offset) {
            Some(quoted) => Parsed::PortUnreachable(quoted_segment(&quoted, ethernet.vlan_id)),
            None => Parsed::Untracked,
        };
    }
    let mut udp_len = 0;
    let (transport, source_port, destination_port, tcp, payload_offset, payload_end) = match network.protocol {
        IPPROTO_UDP => {
            let Some(header) = udp::parse(frame, network.transport_offset) else {
                return Parsed::Malformed;
            };
            udp_len = header.length as u16;
            let udp_end = network.transport_offset + header.length;
            // A first fragment holds only the start of the datagram's payload.
            let payload_end = if first_fragment {
                network.end
            } else if udp_end > network.end {
                return Parsed::Malformed;
            } else {
                udp_end
            };
            (
                Transport::Udp,
                header.source_port,
                header.destination_port,
                TcpFields::default(),
                network.transport_offset + udp::HEADER_LEN,
                payload_end,
            )
        }
        IPPROTO_TCP => {
            let Some(header) = tcp::parse(frame, network.transport_offset) else {
                return Parsed::Malformed;
            };
            (
                Transport::Tcp,
                header.source_port,
                header.destination_port,
                TcpFields {
                    flags: header.flags,
                    sequence: header.sequence,
                    acknowledgment: header.acknowledgment,
                    window: header.window,
                },
                network.transport_offset + header.header_len,
                network.end,
            )
        }
        _ => return Parsed::Untracked,
    };
    if payload_offset > payload_end {
        return Parsed::Malformed;
    }
    Parsed::Segment(Segment {
        transport,
        family: network.family,
        source: network.source,
        destination: network.destination,
        source_port,
        destination_port,
        tcp_flags: tcp.flags,
        tcp_sequence: tcp.sequence,
        tcp_acknowledgment: tcp.acknowledgment,
        tcp_window: tcp.window,
        udp_len,
        payload_offset,
        payload_len: payload_end - payload_offset,
        vlan_id: ethernet.vlan_id,
        first_fragment,
    })
}

/// The datagram a port unreachable quotes, as the segment it was.
#[inline(always)]
fn quoted_segment(quoted: &icmp::Quoted, vlan_id: u16) -> Segment {
    let [s0, s1, s2, s3] = quoted.source;
    let [d0, d1, d2, d3] = quoted.destination;
    Segment {
        transport: Transport::Udp,
        family: 4,
        source: [s0, s1, s2, s3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        destination: [d0, d1, d2, d3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        source_port: quoted.source_port,
        destination_port: quoted.destination_port,
        tcp_flags: 0,
        tcp_sequence: 0,
        tcp_acknowledgment: 0,
        tcp_window: 0,
        udp_len: quoted.udp_len,
        payload_offset: 0,
        payload_len: 0,
        vlan_id,
        first_fragment: false,
    }
}

#[inline(always)]
fn network_v4(frame: &impl Frame, offset: usize) -> Option<Network> {
    let header = ipv4::parse(frame, offset)?;
    let [s0, s1, s2, s3] = header.source;
    let [d0, d1, d2, d3] = header.destination;
    let source = [s0, s1, s2, s3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let destination = [d0, d1, d2, d3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    Some(Network {
        family: 4,
        source,
        destination,
        protocol: header.protocol,
        transport_offset: offset + header.header_len,
        end: offset + header.total_len,
        more_fragments: header.more_fragments,
        fragment_offset: header.fragment_offset,
    })
}

#[inline(always)]
fn network_v6(frame: &impl Frame, offset: usize) -> Option<Network> {
    let header = ipv6::parse(frame, offset)?;
    Some(Network {
        family: 6,
        source: header.source,
        destination: header.destination,
        protocol: header.protocol,
        transport_offset: header.transport_offset,
        end: offset + header.total_len,
        more_fragments: header.more_fragments,
        fragment_offset: header.fragment_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        frame::SliceFrame,
        test_frames::{CLIENT_V4, tcp6, udp4},
    };

    #[test]
    fn a_tagged_udp_datagram_is_a_segment_with_its_payload() {
        let frame = udp4(&[100, 200], (40000, 5060), b"OPTIONS");
        let Parsed::Segment(segment) = parse(&SliceFrame(&frame)) else { panic!("a segment") };
        assert!(segment.transport == Transport::Udp);
        assert_eq!((segment.family, segment.vlan_id), (4, 100));
        assert_eq!(&segment.source[..4], &CLIENT_V4);
        assert_eq!((segment.source_port, segment.destination_port, segment.udp_len), (40000, 5060, 15));
        assert_eq!(&frame[segment.payload_offset..][..segment.payload_len], b"OPTIONS");
    }

    #[test]
    fn a_tcp_segment_over_ipv6_starts_its_payload_past_the_options() {
        let frame = tcp6((40000, 5060), 99, b"\r\n\r\n");
        let Parsed::Segment(segment) = parse(&SliceFrame(&frame)) else { panic!("a segment") };
        assert!(segment.transport == Transport::Tcp);
        assert_eq!((segment.family, segment.tcp_sequence, segment.tcp_acknowledgment), (6, 99, 7));
        assert_eq!(&frame[segment.payload_offset..][..segment.payload_len], b"\r\n\r\n");
    }

    #[test]
    fn a_datagram_longer_than_its_frame_is_malformed() {
        let frame = udp4(&[], (40000, 5060), b"OPTIONS");
        assert!(matches!(parse(&SliceFrame(&frame[..frame.len() - 3])), Parsed::Malformed));
    }
}
