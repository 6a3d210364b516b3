//! Per-flow liveness in the `FLOWS` map: the timestamps and counts the agent's
//! RFC 5626 verdicts are made from.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_boot_ns};
use monitor_common::{
    counters::{Direction, KernelStat, Method},
    events::{FlowEventKind, REGISTER_TRANSACTION_NS},
    flow::{FlowKey, FlowState, FlowTransport},
    ports::PortKind,
    tcp_sequence::{self, Close, SegmentHead},
};
use monitor_ebpf::{
    frame::Frame,
    packet::{Segment, Transport},
    payload::Payload,
    stun::Stun,
    tcp,
};

use crate::{
    events::{self, HeadFor},
    maps::{BOUND_FLOWS, FLOWS, SIP_PORTS, Scratch, bump_stat, flow_state, hint_bound},
    tally,
};

/// Which end of a segment is the SIP server.
pub struct Side {
    pub kind: PortKind,
    /// The destination is on a SIP port: the client sent this packet.
    pub server_is_destination: bool,
}

/// The server side is the one on a configured SIP port; between two SIP ports,
/// see `both_on_sip_ports`. Both directions find the same entry.
#[inline(always)]
pub fn server_side(segment: &Segment, direction: Direction) -> Option<Side> {
    let kind_of = |port: u16| SIP_PORTS.get(u32::from(port)).copied().filter(|kind| *kind != 0);
    let (kind, server_is_destination) = match (kind_of(segment.destination_port), kind_of(segment.source_port)) {
        (Some(d), None) => (d, true),
        (None, Some(s)) => (s, false),
        // The server's port says what the flow carries: a phone sending from
        // 5061 (the SIPS port) to 5060 speaks plain SIP, both ways.
        (Some(d), Some(s)) => {
            let server_is_destination = both_on_sip_ports(segment, direction);
            (if server_is_destination { d } else { s }, server_is_destination)
        }
        (None, None) => return None,
    };
    Some(Side { kind: PortKind::from_u8(kind)?, server_is_destination })
}

/// Set by the agent at load time: only ingress is seen (`--ingress-only`, a tap).
#[unsafe(no_mangle)]
static INGRESS_ONLY: u8 = 0;

/// Which end is the server when both ports are SIP ports. Where the host's
/// own traffic is seen both ways, the host is: phones commonly send from
/// 5060 too, and a phone must not be taken for the server because its
/// address sorts lower. Off a tap, where either end may be the monitored one,
/// the lower port, then the lower address.
#[inline(always)]
fn both_on_sip_ports(segment: &Segment, direction: Direction) -> bool {
    // SAFETY: a read of a constant the loader may have rewritten; volatile so
    // that the compiler does not fold in the default.
    let ingress_only = unsafe { core::ptr::read_volatile(&INGRESS_ONLY) } != 0;
    if ingress_only { destination_is_lower(segment) } else { direction == Direction::Ingress }
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
        (Transport::Tcp, PortKind::Plain | PortKind::Ws) => FlowTransport::Tcp,
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

/// What became of a packet's payload in its flow.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Read from its start: its first message was recorded.
    Read,
    /// New data after this many bytes seen before (a TCP retransmission that
    /// merges old and new data): its messages start that far in, if any do.
    After(u32),
    /// Seen before, every byte (a TCP retransmission): not read again.
    Old,
    /// Nothing the host reads (after a gap, outside the window, a segment the
    /// host drops): not read, and counted as nothing it seemed to carry.
    Refused,
}

/// Records the packet in its flow, creating the flow on first sight, and says
/// what of its payload was taken: a TCP segment's only as the host takes it.
#[inline(always)]
pub fn update(frame: &impl Frame, scratch: &mut Scratch, payload: Payload, direction: Direction) -> Taken {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let state = match flow_state(&scratch.key) {
        Some(state) => state,
        // Bound a moment ago on another CPU (see `bind`: BOUND_FLOWS has it before FLOWS lets go).
        None if let Some(state) = BOUND_FLOWS.get_ptr_mut(&scratch.key) => state,
        None => {
            scratch.new_flow = FlowState::new(now);
            if FLOWS.insert(&scratch.key, &scratch.new_flow, BPF_NOEXIST as u64).is_ok() {
                bump_stat(KernelStat::FlowsCreated);
            }
            match FLOWS.get_ptr_mut(&scratch.key) {
                Some(state) => state,
                None => return Taken::Read,
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
        // Anything from the client answers the server's request as far as liveness goes.
        state.server_request_unanswered_ns = 0;
        state.packets_from_client += 1;
        state.bytes_from_client += bytes;
    } else {
        state.packets_from_server += 1;
        state.bytes_from_server += bytes;
    }

    if scratch.key.transport != FlowTransport::Udp as u8 {
        match judge_segment(state, scratch, direction, now) {
            tcp_sequence::Payload::Empty | tcp_sequence::Payload::New { skip: 0 } => {}
            tcp_sequence::Payload::New { skip } => return Taken::After(skip),
            tcp_sequence::Payload::Old => {
                // A request sent again: a retransmission the agent counts by method and peer.
                if let Payload::Request(method) = payload
                    && method != Method::Ack
                    && events::every_head()
                {
                    events::send_head(frame, scratch, direction, now, HeadFor::Retransmission);
                }
                return Taken::Old;
            }
            tcp_sequence::Payload::Refused(stat) => {
                bump_stat(stat);
                return Taken::Refused;
            }
        }
    }
    record(frame, scratch, state, payload, direction, now);
    Taken::Read
}

/// The client acknowledged the server's data up to `ack`: all of it ends the
/// wait and gives a round-trip sample (RFC 6298's smoothing); part of it is the
/// client alive, and the wait for the rest starts again.
#[inline(always)]
fn client_acknowledged(state: &mut FlowState, ack: u32, acked_before: u32, now: u64) {
    let since = state.server_unacked_since_ns;
    if since == 0 {
        return;
    }
    if !tcp_sequence::after(state.tcp_server.next_seq, ack) {
        let sample_us = now.saturating_sub(since) / 1000;
        let sample_us = if sample_us > u32::MAX as u64 { u32::MAX } else { sample_us as u32 };
        let srtt = state.srtt_us;
        state.srtt_us = if srtt == 0 { sample_us } else { srtt - srtt / 8 + sample_us / 8 };
        state.server_unacked_since_ns = 0;
    } else if tcp_sequence::after(ack, acked_before) {
        state.server_unacked_since_ns = now;
    }
}

/// A keepalive after the one before it (`previous_ns`, 0: none): the longest
/// gap between two is the client's own cadence. Gaps from a REGISTER or other
/// traffic say nothing of it: a UA's keepalive timer runs from its own start.
#[inline(always)]
fn note_keepalive_gap(state: &mut FlowState, previous_ns: u64, now: u64) {
    if previous_ns == 0 || now <= previous_ns {
        return;
    }
    let gap_ms = (now - previous_ns) / 1_000_000;
    let gap_ms = if gap_ms > u32::MAX as u64 { u32::MAX } else { gap_ms as u32 };
    if gap_ms > state.keepalive_gap_ms {
        state.keepalive_gap_ms = gap_ms;
    }
}

/// The client's host answered a datagram of the server's with an ICMP port
/// unreachable quoting a UDP length of `udp_len`: believed only while the
/// server waits on a request of that very length, so that neither a stale one
/// nor a forged one (which would have to know the flow, the moment and the
/// request) fails the flow. The length, not the checksum: a NIC that
/// offloads checksums fills it in after the TC program saw the datagram.
#[inline(always)]
pub fn client_unreachable(key: &FlowKey, udp_len: u16) {
    let Some(state) = flow_state(key) else {
        bump_stat(KernelStat::PortUnreachableUnmatched);
        return;
    };
    // SAFETY: a live map value; see `update` on concurrent writers.
    let state = unsafe { &mut *state };
    if state.server_request_unanswered_ns == 0 || udp_len == 0 || udp_len != state.server_request_udp_len {
        bump_stat(KernelStat::PortUnreachableUnmatched);
        return;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    state.client_unreachable_ns = now;
    bump_stat(KernelStat::PortUnreachable);
    events::send_flow_event(key, FlowEventKind::Closed, now);
}

/// Records a message on a flow already seen: a further message of a segment
/// already taken (see `follow`), or plaintext the host's TLS library handled
/// (see `tls`). False when the flow is not in the map.
#[inline(always)]
pub fn update_followed(frame: &impl Frame, scratch: &Scratch, payload: Payload, direction: Direction) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(state) = flow_state(&scratch.key) else {
        return false;
    };
    // SAFETY: a live map value; see `update` on concurrent writers.
    record(frame, scratch, unsafe { &mut *state }, payload, direction, now);
    true
}

/// The same, for a flow already looked up (`maps::flow_state`): the
/// WebSocket and TLS readers need it before they classify, and a second
/// lookup would have the verifier walk all that follows once per map.
#[inline(always)]
pub fn record_followed(
    frame: &impl Frame,
    scratch: &Scratch,
    state: *mut FlowState,
    payload: Payload,
    direction: Direction,
) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: a live map value; see `update` on concurrent writers.
    record(frame, scratch, unsafe { &mut *state }, payload, direction, now);
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
    tally::count_for_peer(state, &scratch.key, payload);
    match payload {
        Payload::Request(method) => {
            state.last_sip_ns = now;
            state.last_method = method as u8;
            if from_client {
                state.last_client_activity_ns = now;
            } else if method != Method::Ack {
                // The request a port unreachable must quote.
                state.server_request_udp_len = scratch.udp_len;
                if state.server_request_unanswered_ns == 0 {
                    // Every request but ACK gets an answer from a live UA (RFC 3261 §17).
                    state.server_request_unanswered_ns = now;
                    events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
                }
            }
            if method == Method::Register {
                state.last_register_ns = now;
                events::send_head(frame, scratch, direction, now, HeadFor::Registrations);
            } else if method != Method::Ack && events::every_head() {
                // An ACK opens no transaction (RFC 3261 §17.1.1.3): nothing to pair.
                events::send_head(frame, scratch, direction, now, HeadFor::Transactions);
            }
        }
        Payload::Response(code) => {
            state.last_sip_ns = now;
            state.last_status = code;
            if from_client {
                state.last_client_activity_ns = now;
            }
            // Any final response within a REGISTER transaction's lifetime may answer
            // it, however many are in flight: the agent pairs them by CSeq. The
            // difference is signed: with REGISTERs pipelined, another CPU may stamp
            // the next one a moment after this response took its time.
            let answers_register = code >= 200
                && state.last_register_ns != 0
                && (now.wrapping_sub(state.last_register_ns) as i64) <= REGISTER_TRANSACTION_NS as i64;
            if answers_register || (300..400).contains(&code) || code == 430 {
                events::send_head(frame, scratch, direction, now, HeadFor::Registrations);
            } else if events::every_head() {
                events::send_head(frame, scratch, direction, now, HeadFor::Transactions);
            }
            // The last request on the flow was the REGISTER (a 200 to an OPTIONS sent after
            // a challenged REGISTER binds nothing); the agent pairs them exactly.
            let register_last = state.last_method == Method::Register as u8;
            if answers_register && code < 300 && register_last && !from_client && registrar_spoke(direction) {
                bind(&scratch.key, state);
            }
        }
        // RFC 5626 §4.4.1: the client pings, the server pongs.
        Payload::Ping if from_client => {
            note_keepalive_gap(state, state.last_ping_ns, now);
            let first = state.last_ping_ns == 0;
            state.last_ping_ns = now;
            state.last_client_activity_ns = now;
            if scratch.key.transport == FlowTransport::Udp as u8 {
                // A NAT keepalive: nobody answers it over UDP. A new pinger's silence counts from now.
                if first {
                    events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
                }
            } else if state.unanswered_ping_ns == 0 {
                // The first ping of a wait: a pong deadline, and for a new pinger a keepalive one.
                state.unanswered_ping_ns = now;
                events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
            }
        }
        Payload::Pong if !from_client => {
            state.last_pong_ns = now;
            let ping = state.unanswered_ping_ns;
            state.unanswered_ping_ns = 0;
            if ping != 0 && now > ping {
                // One round-trip sample per answered ping (the walk would see one per flow at most).
                let rtt_us = (now - ping) / 1000;
                let rtt_us = if rtt_us > u32::MAX as u64 { u32::MAX } else { rtt_us as u32 };
                events::send_flow_event_with(&scratch.key, FlowEventKind::Answered, now, rtt_us);
            }
        }
        Payload::Stun(Stun::Request) if from_client => {
            note_keepalive_gap(state, state.last_stun_request_ns, now);
            state.last_stun_request_ns = now;
            state.last_client_activity_ns = now;
            state.stun_unanswered = state.stun_unanswered.saturating_add(1);
            if state.unanswered_stun_ns == 0 {
                state.unanswered_stun_ns = now;
                events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
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

/// The server's answer is the host's own: seen leaving it, or off a tap,
/// where no side is the host's and every packet arrives on ingress.
#[inline(always)]
fn registrar_spoke(direction: Direction) -> bool {
    // SAFETY: a read of a constant the loader may have rewritten (see `both_on_sip_ports`).
    direction == Direction::Egress || unsafe { core::ptr::read_volatile(&INGRESS_ONLY) } != 0
}

/// Moves a flow the registrar bound a REGISTER to into `BOUND_FLOWS`, out of
/// the reach of junk flows. Once: a bound flow's state is found there first.
#[inline(always)]
fn bind(key: &FlowKey, state: &FlowState) {
    if BOUND_FLOWS.get_ptr(key).is_some() {
        return;
    }
    // The hint first: between the two, the flow is found in FLOWS still.
    hint_bound(key);
    if BOUND_FLOWS.insert(key, state, BPF_NOEXIST as u64).is_ok() {
        let _ = FLOWS.remove(key);
        bump_stat(KernelStat::FlowsBound);
    }
}

/// Takes a TCP segment's sequence numbers, flags and window into the flow, as
/// the host's stack would (see `tcp_sequence`): an RST or FIN counts only where
/// the host would act on it, and the payload only as the host takes it.
#[inline(always)]
fn judge_segment(state: &mut FlowState, scratch: &Scratch, direction: Direction, now: u64) -> tcp_sequence::Payload {
    let from_client = scratch.from_client != 0;
    let flags = scratch.tcp_flags;
    state.tcp_flags |= flags;
    let segment = SegmentHead {
        seq: scratch.tcp_sequence,
        ack: scratch.tcp_acknowledgment,
        window: scratch.tcp_window,
        flags,
        payload_len: scratch.tcp_payload_len,
        from_host: direction == Direction::Egress,
        closed: closed(state),
    };
    let client_acked_before = state.tcp_client.ack;
    let (sender, receiver) = if from_client {
        (&mut state.tcp_client, &mut state.tcp_server)
    } else {
        (&mut state.tcp_server, &mut state.tcp_client)
    };
    let judged = tcp_sequence::on_segment(sender, receiver, &segment);
    if flags & tcp::SYN != 0 && judged.close != Close::Ignored(monitor_common::counters::KernelStat::SynOnOpenFlow) {
        // A connection (re)opens: its WebSocket framing starts afresh.
        state.ws_client = monitor_common::flow::WsSide::UNKNOWN;
        state.ws_server = monitor_common::flow::WsSide::UNKNOWN;
    }
    let dropped = matches!(judged.payload, tcp_sequence::Payload::Refused(_))
        || judged.close == Close::Ignored(monitor_common::counters::KernelStat::AckOfUnsentData);
    if flags & tcp::ACK != 0 && !dropped {
        tcp_sequence::on_acknowledged(receiver, segment.ack, segment.from_host);
    }
    match judged.close {
        Close::None => {}
        Close::Reset => state.rst_ns = now,
        Close::Fin if from_client => state.fin_from_client_ns = now,
        Close::Fin => state.fin_from_server_ns = now,
        Close::Ignored(stat) => bump_stat(stat),
    }
    if matches!(judged.close, Close::Reset | Close::Fin) {
        events::send_flow_event(&scratch.key, FlowEventKind::Closed, now);
    }
    if dropped {
        return judged.payload;
    }
    let new_data = matches!(judged.payload, tcp_sequence::Payload::New { .. });
    if new_data {
        if from_client {
            state.last_data_from_client_ns = now;
        } else {
            state.last_data_from_server_ns = now;
        }
    }
    if from_client {
        if flags & tcp::ACK != 0 {
            client_acknowledged(state, segment.ack, client_acked_before, now);
        }
    } else if new_data && state.server_unacked_since_ns == 0 {
        state.server_unacked_since_ns = now;
        state.server_retransmissions = 0;
        events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
    } else if resent(judged.payload) && state.server_unacked_since_ns != 0 {
        // The server's stack sent its data again (maybe with more behind it,
        // merged): it, too, heard nothing back. The first time, the wait's
        // deadline comes nearer (see the agent's tcp_unacked): tell the agent.
        if state.server_retransmissions == 0 {
            events::send_flow_event(&scratch.key, FlowEventKind::WaitBegan, now);
        }
        state.server_retransmissions = state.server_retransmissions.saturating_add(1);
    }
    // TLS payload is opaque, but any of it from the client is the client alive.
    if new_data && from_client && scratch.key.transport == FlowTransport::Tls as u8 {
        state.last_client_activity_ns = now;
    }
    judged.payload
}

/// A segment that repeats bytes sent before: all of them, or some with new ones.
#[inline(always)]
fn resent(payload: tcp_sequence::Payload) -> bool {
    match payload {
        tcp_sequence::Payload::Old => true,
        tcp_sequence::Payload::New { skip } => skip != 0,
        _ => false,
    }
}

/// The connection was closed: an RST, or a FIN each way, was accepted.
#[inline(always)]
fn closed(state: &FlowState) -> bool {
    let fin_both = state.tcp_client.known & state.tcp_server.known & tcp_sequence::FIN_ACCEPTED != 0;
    state.rst_ns != 0 || fin_both
}
