//! The per-packet path: parse, decide whether the packet is on a SIP port,
//! classify its payload, count it.

use monitor_common::{
    counters::{Direction, PacketClass, packet_index, request_index, response_index},
    ports::PortKind,
};
use monitor_ebpf::{
    frame::{Frame, MAX_HEADER_OFFSET, WINDOW},
    packet::{self, Parsed, Segment, Transport},
    payload::{self, Payload},
    stun::Stun,
    tcp,
};

use crate::maps::{PACKETS, REQUESTS, RESPONSES, SCRATCH, SIP_PORTS, bump};

/// No IP datagram carries more.
const MAX_PAYLOAD: usize = 65535;

#[inline(always)]
pub fn observe(frame: &impl Frame, direction: Direction) {
    let class = match packet::parse(frame) {
        Parsed::Segment(segment) => {
            if segment.first_fragment {
                count(direction, PacketClass::Fragment);
            }
            classify_segment(frame, &segment, direction)
        }
        Parsed::LaterFragment => PacketClass::Fragment,
        Parsed::Untracked => PacketClass::Other,
        Parsed::Malformed => PacketClass::Malformed,
    };
    count(direction, class);
}

#[inline(always)]
fn count(direction: Direction, class: PacketClass) {
    bump(&PACKETS, packet_index(direction, class));
}

/// The kind of the SIP port on either end, server side first.
#[inline(always)]
fn sip_port(segment: &Segment) -> Option<PortKind> {
    // SAFETY: values are plain bytes, read once.
    let kind = unsafe { SIP_PORTS.get(&segment.destination_port) }
        .or_else(|| unsafe { SIP_PORTS.get(&segment.source_port) })?;
    PortKind::from_u8(*kind)
}

#[inline(always)]
fn classify_segment(frame: &impl Frame, segment: &Segment, direction: Direction) -> PacketClass {
    let Some(port) = sip_port(segment) else {
        return PacketClass::Other;
    };
    let control = segment.transport == Transport::Tcp
        && segment.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0;
    if port == PortKind::Tls {
        return if control {
            PacketClass::TcpControl
        } else {
            PacketClass::Other
        };
    }
    if segment.payload_len == 0 {
        return if control {
            PacketClass::TcpControl
        } else {
            PacketClass::Other
        };
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return PacketClass::Other;
    };
    // SAFETY: this CPU's scratch slot, used only for the duration of this packet.
    let scratch = unsafe { &mut *scratch };
    scratch.payload_offset = segment.payload_offset as u32;
    scratch.payload_len = segment.payload_len as u32;
    // SAFETY: plain reads of the fields just written; volatile so they are really re-read.
    let mut offset = unsafe { core::ptr::read_volatile(&scratch.payload_offset) } as usize;
    let mut payload_len = unsafe { core::ptr::read_volatile(&scratch.payload_len) } as usize;
    if offset > MAX_HEADER_OFFSET || payload_len > MAX_PAYLOAD {
        return PacketClass::Malformed;
    }
    let window = &mut scratch.window;
    let mut loaded = if payload_len < WINDOW {
        payload_len
    } else {
        WINDOW
    };
    if !frame.load_window(offset, loaded, window) {
        return PacketClass::Malformed;
    }
    if segment.transport == Transport::Tcp {
        // Start the window at the message, past CRLFs left between messages.
        let skip = payload::leading_crlf(window, loaded, payload_len);
        if skip > 0 {
            offset += skip;
            payload_len -= skip;
            loaded = if payload_len < WINDOW {
                payload_len
            } else {
                WINDOW
            };
            if !frame.load_window(offset, loaded, window) {
                return PacketClass::Malformed;
            }
        }
    }
    match payload::classify(window, loaded, payload_len, segment.transport) {
        Payload::Request(method) => {
            bump(&REQUESTS, request_index(direction, method));
            PacketClass::SipRequest
        }
        Payload::Response(code) => {
            if let Some(index) = response_index(direction, code) {
                bump(&RESPONSES, index);
            }
            PacketClass::SipResponse
        }
        Payload::Ping => PacketClass::KeepalivePing,
        Payload::Pong => PacketClass::KeepalivePong,
        Payload::Stun(Stun::Request) => PacketClass::StunRequest,
        Payload::Stun(Stun::Success) => PacketClass::StunResponse,
        Payload::Stun(Stun::Error) => PacketClass::StunError,
        Payload::Stun(Stun::Other) | Payload::Other => PacketClass::Other,
    }
}
