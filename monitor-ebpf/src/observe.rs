//! The per-packet path: parse, find the flow's server side, classify the
//! payload, count it, and update the flow.

use monitor_common::{
    counters::{Direction, KernelStat, PacketClass, packet_index},
    ports::PortKind,
};
use monitor_ebpf::{
    frame::{self, Frame, MAX_HEADER_OFFSET, WINDOW},
    packet::{self, Parsed, Segment, Transport},
    payload::{self, Payload},
    stun::Stun,
    tcp,
};

use crate::{
    flow, follow,
    maps::{PACKETS, Scratch, bump, bump_stat, packet_scratch},
    tally::count_message,
};

/// No IP datagram carries more.
const MAX_PAYLOAD: usize = 65535;

/// Counts the packet and updates its flow. True when a TCP segment's first
/// message is counted and more may follow it: the caller then hands the
/// segment to the `follow` program, which reads `Scratch::follow`.
#[inline(always)]
pub fn observe(frame: &impl Frame, direction: Direction) -> bool {
    let (class, more) = match packet::parse(frame) {
        Parsed::Segment(segment) => {
            if segment.first_fragment {
                count(direction, PacketClass::Fragment);
                bump_stat(KernelStat::FirstFragments);
            }
            observe_segment(frame, &segment, direction)
        }
        Parsed::LaterFragment => (PacketClass::Fragment, false),
        Parsed::Untracked => (PacketClass::Other, false),
        Parsed::Malformed => (PacketClass::Malformed, false),
    };
    count(direction, class);
    more
}

#[inline(always)]
fn count(direction: Direction, class: PacketClass) {
    bump(&PACKETS, packet_index(direction, class));
}

#[inline(always)]
fn observe_segment(frame: &impl Frame, segment: &Segment, direction: Direction) -> (PacketClass, bool) {
    let Some(side) = flow::server_side(segment, direction) else {
        return (PacketClass::Other, false);
    };
    let Some(scratch) = packet_scratch() else {
        return (PacketClass::Other, false);
    };
    flow::key_into(&mut scratch.key, segment, &side);
    scratch.from_client = side.server_is_destination as u8;
    scratch.tcp_flags = segment.tcp_flags;
    scratch.tcp_sequence = segment.tcp_sequence;
    scratch.tcp_acknowledgment = segment.tcp_acknowledgment;
    scratch.tcp_window = segment.tcp_window;
    scratch.tcp_payload_len = segment.payload_len as u32;
    scratch.frame_len = frame::len(frame) as u32;
    scratch.payload_offset = segment.payload_offset as u32;
    scratch.payload_len = segment.payload_len as u32;

    let payload = classify(frame, scratch, side.kind, segment.transport);
    // SAFETY: a plain write and read of this CPU's scratch slot (see `Scratch::payload`).
    let payload = unsafe {
        core::ptr::write_volatile(&mut scratch.payload, payload.encode());
        Payload::decode(core::ptr::read_volatile(&scratch.payload))
    };
    // A TCP retransmission is counted as a packet but its messages only once, as tshark does.
    let mut more = false;
    if flow::update(frame, scratch, payload, direction) {
        count_message(payload, direction);
        more = segment.transport == Transport::Tcp && follow::start(scratch, payload);
    }

    let control = scratch.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) != 0;
    let class = match payload {
        Payload::Request(_) => PacketClass::SipRequest,
        Payload::Response(_) => PacketClass::SipResponse,
        Payload::Ping => PacketClass::KeepalivePing,
        Payload::Pong => PacketClass::KeepalivePong,
        Payload::Stun(Stun::Request) => PacketClass::StunRequest,
        Payload::Stun(Stun::Success) => PacketClass::StunResponse,
        Payload::Stun(Stun::Error) => PacketClass::StunError,
        Payload::Stun(Stun::Other) | Payload::Other if control => PacketClass::TcpControl,
        Payload::Stun(Stun::Other) | Payload::Other => PacketClass::Other,
    };
    (class, more)
}

/// What the payload is; a TLS port's is opaque here (its plaintext is read
/// where the host's TLS library has it, see `tls`).
#[inline(always)]
fn classify(frame: &impl Frame, scratch: &mut Scratch, kind: PortKind, transport: Transport) -> Payload {
    if kind == PortKind::Tls {
        return Payload::Other;
    }
    classify_payload(frame, scratch, transport)
}

/// What the payload at the scratch's offset is. Leaves the message's offset
/// and length in the scratch slot for the flow update.
#[inline(always)]
pub fn classify_payload(frame: &impl Frame, scratch: &mut Scratch, transport: Transport) -> Payload {
    // SAFETY: plain reads of fields just written; volatile so that they are re-read
    // from map memory (see `Scratch`).
    let mut offset = unsafe { core::ptr::read_volatile(&scratch.payload_offset) } as usize;
    let mut payload_len = unsafe { core::ptr::read_volatile(&scratch.payload_len) } as usize;
    if offset > MAX_HEADER_OFFSET || payload_len > MAX_PAYLOAD || payload_len == 0 {
        return Payload::Other;
    }
    let window = &mut scratch.window;
    let mut loaded = if payload_len < WINDOW { payload_len } else { WINDOW };
    if !frame.load_bytes(offset, loaded, window) {
        return Payload::Other;
    }
    if transport == Transport::Tcp {
        // Start the window at the message, past CRLFs left between messages.
        let skip = payload::leading_crlf(window, loaded, payload_len);
        if skip > 0 {
            offset += skip;
            payload_len -= skip;
            loaded = if payload_len < WINDOW { payload_len } else { WINDOW };
            if !frame.load_bytes(offset, loaded, window) {
                return Payload::Other;
            }
        }
    }
    let payload = payload::classify(window, loaded, payload_len, transport);
    scratch.payload_offset = offset as u32;
    scratch.payload_len = payload_len as u32;
    payload
}
