//! The per-packet path: parse, find the flow's server side, classify the
//! payload, count it, and update the flow.

use monitor_common::{
    counters::{Direction, KernelStat, PacketClass, packet_index},
    ports::PortKind,
};
use monitor_ebpf::{
    frame::{self, Frame, MAX_HEADER_OFFSET, MAX_PAYLOAD, WINDOW},
    packet::{self, Parsed, Segment, Transport},
    payload::{self, Payload},
    stun::Stun,
    tcp,
};

use crate::{
    flow::{self, Taken},
    follow::{self, Next},
    maps::{PACKETS, Scratch, bump, bump_stat, packet_scratch},
    tally::count_message,
    websocket_frame,
};

/// Counts the packet and updates its flow. Says what comes next: when a TCP
/// segment's first message is counted and more may follow it, the `follow`
/// programs walk the rest (`Scratch::follow`); a WebSocket port's segment goes
/// to the program that reads its frame.
#[inline(always)]
pub fn observe(frame: &impl Frame, direction: Direction) -> Next {
    let (class, next) = match packet::parse(frame) {
        Parsed::Segment(segment) => {
            if segment.first_fragment {
                count(direction, PacketClass::Fragment);
                bump_stat(KernelStat::FirstFragments);
            }
            observe_segment(frame, &segment, direction)
        }
        Parsed::PortUnreachable(quoted) => {
            observe_unreachable(&quoted, direction);
            (PacketClass::Other, Next::Done)
        }
        Parsed::LaterFragment => (PacketClass::Fragment, Next::Done),
        Parsed::Untracked => (PacketClass::Other, Next::Done),
        Parsed::Malformed => (PacketClass::Malformed, Next::Done),
    };
    count(direction, class);
    next
}

#[inline(always)]
fn count(direction: Direction, class: PacketClass) {
    bump(&PACKETS, packet_index(direction, class));
}

#[inline(always)]
fn observe_segment(frame: &impl Frame, segment: &Segment, direction: Direction) -> (PacketClass, Next) {
    let Some(side) = flow::server_side(segment, direction) else {
        return (PacketClass::Other, Next::Done);
    };
    let Some(scratch) = packet_scratch() else {
        return (PacketClass::Other, Next::Done);
    };
    flow::key_into(&mut scratch.key, segment, &side);
    scratch.from_client = side.server_is_destination as u8;
    scratch.tcp_flags = segment.tcp_flags;
    scratch.tcp_sequence = segment.tcp_sequence;
    scratch.tcp_acknowledgment = segment.tcp_acknowledgment;
    scratch.tcp_window = segment.tcp_window;
    scratch.tcp_payload_len = segment.payload_len as u32;
    scratch.udp_len = segment.udp_len;
    scratch.frame_len = frame::len(frame) as u32;
    scratch.payload_offset = segment.payload_offset as u32;
    scratch.payload_len = segment.payload_len as u32;

    scratch.ws_framed = 0;
    scratch.ws_mask = [0; 4];
    let payload = classify(frame, scratch, side.kind, segment.transport);
    // SAFETY: a plain write and read of this CPU's scratch slot (see `Scratch::payload`).
    let payload = unsafe {
        core::ptr::write_volatile(&mut scratch.payload, payload.encode());
        Payload::decode(core::ptr::read_volatile(&scratch.payload))
    };
    // A TCP retransmission is counted as a packet but its messages only once, as tshark does.
    let websocket = side.kind == PortKind::Ws && segment.transport == Transport::Tcp;
    let mut next = Next::Done;
    let taken = flow::update(frame, scratch, payload, direction);
    match taken {
        Taken::Read => {
            scratch.stream_position = segment.tcp_sequence;
            count_message(payload, direction);
            if websocket && segment.payload_len != 0 {
                // Its packets are class `other`; its SIP is counted by method and code there.
                next = Next::Websocket;
            } else if segment.transport == Transport::Tcp && follow::start(scratch, payload) {
                next = Next::Scan;
            }
        }
        Taken::After(skip) => {
            // What was seen before is not counted again: the new data's messages are.
            let skip = skip as usize;
            if skip < segment.payload_len {
                scratch.payload_offset = (segment.payload_offset + skip) as u32;
                scratch.payload_len = (segment.payload_len - skip) as u32;
                scratch.stream_position = segment.tcp_sequence.wrapping_add(skip as u32);
                next = if websocket { Next::Websocket } else { follow::start_at_new_data(scratch) };
            }
        }
        Taken::Old | Taken::Refused => {}
    }
    // A segment the host drops is counted as a packet, and as nothing it seemed to carry.
    let payload = if taken == Taken::Refused { Payload::Other } else { payload };

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
    (class, next)
}

/// An ICMP port unreachable quoting a datagram the server sent a client: the
/// client's host saying nobody listens there any more.
#[inline(always)]
fn observe_unreachable(quoted: &Segment, direction: Direction) {
    // The quoted datagram left the host: its direction is the opposite of the error's.
    let sent = if direction == Direction::Ingress { Direction::Egress } else { Direction::Ingress };
    let Some(side) = flow::server_side(quoted, sent) else {
        return;
    };
    // Only what the server sent to the client tells of the client.
    if side.server_is_destination {
        return;
    }
    let Some(scratch) = packet_scratch() else {
        return;
    };
    flow::key_into(&mut scratch.key, quoted, &side);
    flow::client_unreachable(&scratch.key, quoted.udp_len);
}

/// What the payload is, where the entry program reads it.
#[inline(always)]
fn classify(frame: &impl Frame, scratch: &mut Scratch, kind: PortKind, transport: Transport) -> Payload {
    match (kind, transport) {
        // Read where the TLS library has it (see `tls`).
        (PortKind::Tls, _) => Payload::Other,
        // Read by a program of its own (see `websocket_frame`).
        (PortKind::Ws, Transport::Tcp) => Payload::Other,
        _ => classify_payload(frame, scratch, transport),
    }
}

/// Plaintext a TLS library handled: SIP, or WebSocket frames carrying it
/// (wss). A frame head never parses from SIP's text (see `websocket`).
#[inline(always)]
pub fn classify_plaintext(frame: &impl Frame, scratch: &mut Scratch) -> Payload {
    scratch.ws_framed = 0;
    scratch.ws_mask = [0; 4];
    let payload = websocket_frame::classify(frame, scratch);
    // SAFETY: a plain read of the scratch slot (volatile: see `Scratch`).
    if unsafe { core::ptr::read_volatile(&scratch.ws_framed) } != 0 {
        return payload;
    }
    classify_payload(frame, scratch, Transport::Tcp)
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
