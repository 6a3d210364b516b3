//! Per-flow liveness in the `FLOWS` map: the timestamps and counts the agent's
//! RFC 5626 verdicts are made from.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_boot_ns};
use monitor_common::{
    counters::{Direction, KernelStat, Method},
    flow::{FlowKey, FlowState, FlowTransport, TCP_SEQ_SEEN_FROM_CLIENT, TCP_SEQ_SEEN_FROM_SERVER},
    ports::PortKind,
};
use monitor_ebpf::{
    frame::Frame,
    packet::{Segment, Transport},
    payload::Payload,
    stun::Stun,
    tcp,
};

use crate::{
    events,
    maps::{FLOWS, SIP_PORTS, Scratch, bump_stat},
};

/// Which end of a segment is the SIP server.
pub struct Side {
    pub kind: PortKind,
    /// The destination is on a SIP port: the client sent this packet.
    pub server_is_destination: bool,
}

/// The server side is the one on a configured SIP port. Between two SIP ports
/// (proxy to proxy), the lower port, then the lower address, so that both
/// directions still find the same entry.
#[inline(always)]
pub fn server_side(segment: &Segment) -> Option<Side> {
    let kind_of = |port: u16| SIP_PORTS.get(u32::from(port)).copied().filter(|kind| *kind != 0);
    let (kind, server_is_destination) = match (kind_of(segment.destination_port), kind_of(segment.source_port)) {
        (Some(d), None) => (d, true),
        (None, Some(s)) => (s, false),
        (Some(d), Some(_)) => (d, destination_is_lower(segment)),
        (None, None) => return None,
    };
    Some(Side { kind: PortKind::from_u8(kind)?, server_is_destination })
}

#[inline(always)]
fn destination_is_lower(segment: &Segment) -> bool {
    if segment.destination_port != segment.source_port {
        return segment.destination_port < segment.source_port;
    }
    let mut i = 0;
    while i < 16 {
        if segment.destination[i] != segment.source[i] {
            return segment.destination[i] < segment.source[i];
        }
        i += 1;
    }
    true
}

#[inline(always)]
pub fn key_into(key: &mut FlowKey, segment: &Segment, side: &Side) {
    let transport = match (segment.transport, side.kind) {
        (Transport::Udp, _) => FlowTransport::Udp,
        (Transport::Tcp, PortKind::Tls) => FlowTransport::Tls,
        (Transport::Tcp, PortKind::Plain) => FlowTransport::Tcp,
    };
    if side.server_is_destination {
        key.server_addr = segment.destination;
        key.client_addr = segment.source;
        key.server_port = segment.destination_port;
        key.client_port = segment.source_port;
    } else {
        key.server_addr = segment.source;
        key.client_addr = segment.destination;
        key.server_port = segment.source_port;
        key.client_port = segment.destination_port;
    }
    key.vlan_id = segment.vlan_id;
    key.family = segment.family;
    key.transport = transport as u8;
}

/// Records the packet in its flow, creating the flow on first sight. False for
/// a TCP retransmission: its payload was seen before and is not taken again.
#[inline(always)]
pub fn update(frame: &impl Frame, scratch: &mut Scratch, payload: Payload, direction: Direction) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let state = match FLOWS.get_ptr_mut(&scratch.key) {
        Some(state) => state,
        None => {
            scratch.new_flow = FlowState::new(now);
            if FLOWS.insert(&scratch.key, &scratch.new_flow, BPF_NOEXIST as u64).is_ok() {
                bump_stat(KernelStat::FlowsCreated);
            }
            match FLOWS.get_ptr_mut(&scratch.key) {
                Some(state) => state,
                None => return true,
            }
        }
    };
    // SAFETY: a live map value. Another CPU may update the same flow at once (core
    // has no atomic add for the BPF target); at worst a count or a timestamp is
    // lost, and a flow's packets nearly always arrive on one CPU (RSS hashing).
    let state = unsafe { &mut *state };
    let from_client = scratch.from_client != 0;
    state.last_seen_ns = now;
    let bytes = scratch.frame_len as u64;
    if from_client {
        state.packets_from_client += 1;
        state.bytes_from_client += bytes;
    } else {
        state.packets_from_server += 1;
        state.bytes_from_server += bytes;
    }

    let flags = scratch.tcp_flags;
    state.tcp_flags |= flags;
    if flags & tcp::RST != 0 {
        state.rst_ns = now;
    }
    if flags & tcp::FIN != 0 {
        if from_client {
            state.fin_from_client_ns = now;
        } else {
            state.fin_from_server_ns = now;
        }
    }
    if scratch.key.transport != FlowTransport::Udp as u8 && scratch.payload_len != 0 && retransmitted(state, scratch) {
        return false;
    }
    record(frame, scratch, state, payload, direction, now);
    true
}

/// Records a further message of a segment already taken (see `follow`).
#[inline(always)]
pub fn update_followed(frame: &impl Frame, scratch: &Scratch, payload: Payload, direction: Direction) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if let Some(state) = FLOWS.get_ptr_mut(&scratch.key) {
        // SAFETY: a live map value; see `update` on concurrent writers.
        record(frame, scratch, unsafe { &mut *state }, payload, direction, now);
    }
}

/// What the payload tells about the flow's liveness; the heads the agent
/// parses go to the ring buffer.
#[inline(always)]
fn record(
    frame: &impl Frame,
    scratch: &Scratch,
    state: &mut FlowState,
    payload: Payload,
    direction: Direction,
    now: u64,
) {
    let from_client = scratch.from_client != 0;
    match payload {
        Payload::Request(method) => {
            state.last_sip_ns = now;
            state.last_method = method as u8;
            if from_client {
                state.last_client_activity_ns = now;
            }
            if method == Method::Register {
                state.register_pending = 1;
                events::send_head(frame, scratch, direction, now);
            }
        }
        Payload::Response(code) => {
            state.last_sip_ns = now;
            state.last_status = code;
            if from_client {
                state.last_client_activity_ns = now;
            }
            let answers_register = state.register_pending != 0 && code >= 200;
            if answers_register {
                state.register_pending = 0;
            }
            if answers_register || (300..400).contains(&code) || code == 430 {
                events::send_head(frame, scratch, direction, now);
            }
        }
        // RFC 5626 §4.4.1: the client pings, the server pongs.
        Payload::Ping if from_client => {
            state.last_ping_ns = now;
            state.last_client_activity_ns = now;
            if state.unanswered_ping_ns == 0 {
                state.unanswered_ping_ns = now;
            }
        }
        Payload::Pong if !from_client => {
            state.last_pong_ns = now;
            state.unanswered_ping_ns = 0;
        }
        Payload::Stun(Stun::Request) if from_client => {
            state.last_stun_request_ns = now;
            state.last_client_activity_ns = now;
            state.stun_unanswered = state.stun_unanswered.saturating_add(1);
            if state.unanswered_stun_ns == 0 {
                state.unanswered_stun_ns = now;
            }
        }
        Payload::Stun(Stun::Success) if !from_client => {
            state.last_stun_response_ns = now;
            state.stun_unanswered = 0;
            state.unanswered_stun_ns = 0;
        }
        Payload::Stun(Stun::Error) if !from_client => {
            state.last_stun_error_ns = now;
            state.last_stun_response_ns = now;
            state.stun_unanswered = 0;
            state.unanswered_stun_ns = 0;
        }
        _ => {}
    }
}

/// Whether this TCP segment only repeats payload its sender sent before, and
/// otherwise moves the sender's high-water mark. Sequence numbers wrap: "at or
/// before" is a signed comparison of the difference (RFC 9293 §3.4).
#[inline(always)]
fn retransmitted(state: &mut FlowState, scratch: &Scratch) -> bool {
    let end = scratch.tcp_data_end;
    let (next, seen) = if scratch.from_client != 0 {
        (&mut state.tcp_next_seq_from_client, TCP_SEQ_SEEN_FROM_CLIENT)
    } else {
        (&mut state.tcp_next_seq_from_server, TCP_SEQ_SEEN_FROM_SERVER)
    };
    if state.tcp_seq_seen & seen != 0 && (end.wrapping_sub(*next) as i32) <= 0 {
        return true;
    }
    *next = end;
    state.tcp_seq_seen |= seen;
    false
}
