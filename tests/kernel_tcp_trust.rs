//! What a TCP segment proves, through BPF_PROG_TEST_RUN: an RST or FIN closes
//! a flow only where the host's own stack would act on it (RFC 5961), the
//! host's own closes (egress) are believed, and a forged segment ahead in
//! sequence cannot make the client's real keepalives look like retransmissions.

use monitor_common::{counters::KernelStat, flow::FlowState};
use sipflow_tests::{
    kernel::{LoadedXdp, TC_ACT_UNSPEC, XDP_PASS},
    packets::*,
};

const CLIENT_ISN: u32 = 1_000;
const SERVER_ISN: u32 = 900_000;
const WINDOW: u16 = 64_000;

fn state(xdp: &LoadedXdp) -> FlowState {
    let flows = xdp.flows.snapshot();
    assert_eq!(flows.len(), 1, "one flow: {flows:?}");
    flows[0].1
}

fn numbers(seq: u32, ack: u32) -> Sequence {
    Sequence { seq, ack, window: WINDOW }
}

const SYN: Flags = Flags { syn: true, fin: false, rst: false };
const RST: Flags = Flags { syn: false, fin: false, rst: true };
const FIN: Flags = Flags { syn: false, fin: true, rst: false };
const NONE: Flags = Flags { syn: false, fin: false, rst: false };

/// A handshake and a REGISTER, as a tap sees them (both directions on
/// ingress); returns the client's next sequence number.
fn connected(xdp: &LoadedXdp, port: u16) -> u32 {
    let frames = [
        tcp4_segment(true, port, numbers(CLIENT_ISN, 0), SYN, b""),
        tcp4_segment(false, port, numbers(SERVER_ISN, CLIENT_ISN + 1), SYN, b""),
        tcp4_segment(true, port, numbers(CLIENT_ISN + 1, SERVER_ISN + 1), NONE, REGISTER),
    ];
    for frame in &frames {
        assert_eq!(xdp.run(frame), XDP_PASS);
    }
    CLIENT_ISN + 1 + REGISTER.len() as u32
}

fn from_client(xdp: &LoadedXdp, seq: u32, flags: Flags, payload: &[u8]) {
    assert_eq!(xdp.run(&tcp4_segment(true, SIP_PORT, numbers(seq, SERVER_ISN + 1), flags, payload)), XDP_PASS);
}

#[test]
fn an_rst_at_the_next_sequence_number_closes_the_flow() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    from_client(&xdp, next, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0);
    let ignored = KernelStat::IGNORED_SEGMENTS.iter().map(|(s, _)| xdp.counters().stat(*s)).sum::<u64>();
    assert_eq!(ignored, 0);
}

#[test]
fn an_rst_in_the_window_or_outside_it_is_counted_and_not_believed() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    // In the window: the host sends a challenge ACK and keeps the connection (RFC 5961 §3.2).
    from_client(&xdp, next + 1, RST, b"");
    // Far away, and just behind: the host drops them.
    from_client(&xdp, next.wrapping_add(0x8000_0000), RST, b"");
    from_client(&xdp, next - 1, RST, b"");
    assert_eq!(state(&xdp).rst_ns, 0, "no close believed");
    let c = xdp.counters();
    assert_eq!((c.stat(KernelStat::RstInWindow), c.stat(KernelStat::RstOutOfWindow)), (1, 2));
    // The real one still closes.
    from_client(&xdp, next, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0);
}

#[test]
fn a_fin_closes_only_at_the_next_sequence_number() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    from_client(&xdp, next + 7, FIN, b"");
    from_client(&xdp, 0x1234_5678, FIN, b"");
    assert_eq!(state(&xdp).fin_from_client_ns, 0);
    assert_eq!(xdp.counters().stat(KernelStat::FinOutOfSequence), 2);
    // A FIN after a last ping in the same segment sits after the ping.
    from_client(&xdp, next, FIN, b"\r\n\r\n");
    let s = state(&xdp);
    assert_ne!(s.fin_from_client_ns, 0);
    assert_ne!(s.last_ping_ns, 0);
}

#[test]
fn a_close_from_a_side_never_seen_is_unverifiable() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    from_client(&xdp, 0x4242_4242, RST, b"");
    from_client(&xdp, 0x4242_4242, FIN, b"");
    let s = state(&xdp);
    assert_eq!((s.rst_ns, s.fin_from_client_ns), (0, 0));
    assert_eq!(xdp.counters().stat(KernelStat::CloseUnverifiable), 2);
}

#[test]
fn the_hosts_own_rst_and_fin_on_egress_are_believed() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    connected(&xdp, SIP_PORT);
    // Whatever its sequence number: the host's stack decided.
    let own_fin = tcp4_segment(false, SIP_PORT, numbers(0x0bad_cafe, CLIENT_ISN + 1), FIN, b"");
    assert_eq!(xdp.run_tc(&own_fin), TC_ACT_UNSPEC);
    assert_ne!(state(&xdp).fin_from_server_ns, 0);
    let own_rst = tcp4_segment(false, SIP_PORT, numbers(0x0bad_cafe, CLIENT_ISN + 1), RST, b"");
    assert_eq!(xdp.run_tc(&own_rst), TC_ACT_UNSPEC);
    assert_ne!(state(&xdp).rst_ns, 0);
}

#[test]
fn a_forged_segment_ahead_does_not_hide_the_clients_real_pings() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    // A forged ping far ahead: data, but it moves no mark.
    from_client(&xdp, next + 100_000, NONE, b"\r\n\r\n");
    let forged_ping = state(&xdp).last_ping_ns;
    // The client's real ping is new data, not a retransmission.
    from_client(&xdp, next, NONE, b"\r\n\r\n");
    let s = state(&xdp);
    assert!(s.last_ping_ns > forged_ping, "the real ping was taken");
    assert_eq!(s.tcp_client.next_seq, next + 4);
    // And the real RST after it still closes.
    from_client(&xdp, next + 4, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0);
}

#[test]
fn the_hosts_acknowledgment_is_its_next_expected_sequence_number() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    // A segment out of order (a gap before it) leaves the mark where it was...
    from_client(&xdp, next + 10, NONE, b"0123456789");
    assert_eq!(state(&xdp).tcp_client.next_seq, next);
    // ...until the host acknowledges everything: its RCV.NXT, and the client's RST there closes.
    let ack = tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 1, next + 20), NONE, b"");
    assert_eq!(xdp.run_tc(&ack), TC_ACT_UNSPEC);
    assert_eq!(state(&xdp).tcp_client.next_seq, next + 20);
    from_client(&xdp, next + 20, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0);
}

#[test]
fn tls_payload_from_the_client_is_client_activity() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIPS_PORT);
    let before = state(&xdp).last_client_activity_ns;
    let record = tcp4_segment(true, SIPS_PORT, numbers(next, SERVER_ISN + 1), NONE, &[0x17; 100]);
    assert_eq!(xdp.run(&record), XDP_PASS);
    let s = state(&xdp);
    assert!(s.last_client_activity_ns > before, "opaque bytes from the client are the client alive");
    assert_ne!(s.last_data_from_client_ns, 0);
}

#[test]
fn the_servers_data_waits_for_the_clients_acknowledgment() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    // The host sends a request of 100 bytes on egress.
    let request = tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 1, next), NONE, &[b'x'; 100]);
    assert_eq!(xdp.run_tc(&request), TC_ACT_UNSPEC);
    let since = state(&xdp).server_unacked_since_ns;
    assert_ne!(since, 0, "waiting for the client's acknowledgment");
    // A pure ACK for half of it: the client is alive, the wait for the rest starts again.
    let ack = |n: u32| tcp4_segment(true, SIP_PORT, numbers(next, SERVER_ISN + 1 + n), NONE, b"");
    assert_eq!(xdp.run(&ack(50)), XDP_PASS);
    let s = state(&xdp);
    assert!(s.server_unacked_since_ns > since);
    assert_eq!(s.srtt_us, 0, "no sample from a partial acknowledgment");
    // All of it: no wait, and one RTT sample.
    assert_eq!(xdp.run(&ack(100)), XDP_PASS);
    let s = state(&xdp);
    assert_eq!(s.server_unacked_since_ns, 0);
    // A retransmission of acknowledged data starts no wait.
    assert_eq!(xdp.run_tc(&request), TC_ACT_UNSPEC);
    assert_eq!(state(&xdp).server_unacked_since_ns, 0);
}

#[test]
fn a_udp_request_from_the_server_waits_for_anything_from_the_client() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let from_server = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    assert_eq!(xdp.run_tc(&from_server(INVITE)), TC_ACT_UNSPEC);
    let s = state(&xdp);
    assert_ne!(s.server_request_unanswered_ns, 0);
    assert_eq!(xdp.run(&udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), RINGING)), XDP_PASS);
    assert_eq!(state(&xdp).server_request_unanswered_ns, 0, "answered");
    // An ACK expects no answer.
    let ack = b"ACK sip:bob@example.com SIP/2.0\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(xdp.run_tc(&from_server(ack)), TC_ACT_UNSPEC);
    assert_eq!(state(&xdp).server_request_unanswered_ns, 0);
}

#[test]
fn accepted_closes_and_begun_waits_reach_the_agent_as_events_forged_ones_do_not() {
    sipflow_tests::root_or_skip!();
    use monitor_common::events::FlowEventKind;
    let mut xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    xdp.flow_news();
    // Forged: nothing to look at.
    from_client(&xdp, next.wrapping_add(0x8000_0000), RST, b"");
    from_client(&xdp, next + 9, FIN, b"");
    assert!(xdp.flow_news().is_empty(), "a close the host ignores is no event");
    // The host sends data: a wait for the client's acknowledgment begins.
    let request = tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 1, next), NONE, &[b'x'; 10]);
    assert_eq!(xdp.run_tc(&request), TC_ACT_UNSPEC);
    let news = xdp.flow_news();
    assert_eq!(news.len(), 1);
    assert_eq!(news[0].kind, FlowEventKind::WaitBegan);
    // More data while the first waits: the same wait, no new event.
    assert_eq!(xdp.run_tc(&tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 11, next), NONE, b"y")), TC_ACT_UNSPEC);
    assert!(xdp.flow_news().is_empty());
    // The real RST: one event, with the flow's key and the packet's time.
    from_client(&xdp, next, RST, b"");
    let news = xdp.flow_news();
    assert_eq!(news.len(), 1);
    assert_eq!(news[0].kind, FlowEventKind::Closed);
    assert_eq!(news[0].timestamp_ns, state(&xdp).rst_ns);
    assert_eq!(news[0].key, xdp.flows.snapshot()[0].0);
}

/// The client's REGISTER's requests counted, both directions.
fn registers(xdp: &LoadedXdp) -> u64 {
    use monitor_common::counters::{Direction, Method, request_index};
    xdp.counters().requests[request_index(Direction::Ingress, Method::Register) as usize]
}

#[test]
fn a_forged_syn_moves_no_mark_its_rst_and_fin_close_nothing() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    let before = state(&xdp).tcp_client;
    // RFC 5961 §4: the host answers a SYN on an open connection with a challenge ACK.
    let forged = 0x4242_4242u32;
    from_client(&xdp, forged, SYN, b"");
    assert_eq!(state(&xdp).tcp_client, before, "the SYN moved the client's mark");
    from_client(&xdp, forged + 1, RST, b"");
    from_client(&xdp, forged + 1, FIN, b"");
    let s = state(&xdp);
    assert_eq!((s.rst_ns, s.fin_from_client_ns), (0, 0), "a close judged against the forged SYN");
    let c = xdp.counters();
    assert_eq!(c.stat(KernelStat::SynOnOpenFlow), 1);
    assert_eq!(c.stat(KernelStat::RstOutOfWindow) + c.stat(KernelStat::FinOutOfSequence), 2);
    // The real close still closes.
    from_client(&xdp, next, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0);
}

#[test]
fn a_flow_met_mid_stream_judges_no_close_until_the_host_vouches_for_its_mark() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    // Evicted, or older than sipflow: its first segment is a forgery of the attacker's choosing.
    let forged = 0x7000_0000u32;
    from_client(&xdp, forged, NONE, b"x");
    from_client(&xdp, forged + 1, RST, b"");
    from_client(&xdp, forged + 1, FIN, b"");
    let s = state(&xdp);
    assert_eq!((s.rst_ns, s.fin_from_client_ns), (0, 0), "a close judged against a forged baseline");
    assert_eq!(xdp.counters().stat(KernelStat::CloseUnverifiable), 2);
    // The host's own acknowledgment tells where the client really is.
    let real = 5_000u32;
    assert_eq!(xdp.run_tc(&tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 1, real), NONE, b"")), TC_ACT_UNSPEC);
    from_client(&xdp, forged + 1, RST, b"");
    assert_eq!(state(&xdp).rst_ns, 0);
    from_client(&xdp, real, RST, b"");
    assert_ne!(state(&xdp).rst_ns, 0, "the real RST closes");
}

#[test]
fn payload_the_host_would_not_take_is_not_read() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    assert_eq!(registers(&xdp), 1);
    // Outside the window, and after a gap: the host drops or queues them, reading nothing yet.
    from_client(&xdp, next.wrapping_add(0x4000_0000), NONE, b"\r\n\r\n");
    from_client(&xdp, next + 10, NONE, REGISTER);
    // At the right sequence number but acknowledging data the host never sent: dropped.
    let unsent = tcp4_segment(true, SIP_PORT, numbers(next, SERVER_ISN + 0x1000_0000), NONE, b"\r\n\r\n");
    assert_eq!(xdp.run(&unsent), XDP_PASS);
    let s = state(&xdp);
    assert_eq!((s.last_ping_ns, s.unanswered_ping_ns), (0, 0), "a ping the host never took");
    assert_eq!(registers(&xdp), 1, "a REGISTER the host never took");
    let heads = xdp.heads();
    assert_eq!(heads.iter().filter(|h| h.bytes.starts_with(b"REGISTER")).count(), 1, "only the real REGISTER goes up");
    let c = xdp.counters();
    assert_eq!(c.stat(KernelStat::PayloadNotInOrder), 2);
    assert_eq!(c.stat(KernelStat::AckOfUnsentData), 1);
    // Counted as packets, and as nothing they seemed to carry.
    use monitor_common::counters::{Direction, PacketClass, packet_index};
    assert_eq!(c.packets[packet_index(Direction::Ingress, PacketClass::KeepalivePing) as usize], 0);
    // The real ping is read.
    let _ = xdp.run_tc(&tcp4_segment(false, SIP_PORT, numbers(SERVER_ISN + 1, next), NONE, b""));
    from_client(&xdp, next, NONE, b"\r\n\r\n");
    assert_ne!(state(&xdp).last_ping_ns, 0);
}

#[test]
fn a_retransmission_that_merges_old_and_new_data_counts_only_the_new() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let next = connected(&xdp, SIP_PORT);
    let start = next - REGISTER.len() as u32;
    // The REGISTER again, with an OPTIONS after it in the same segment.
    let options = b"OPTIONS sip:example.com SIP/2.0\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let merged = [REGISTER, &options[..]].concat();
    from_client(&xdp, start, NONE, &merged);
    use monitor_common::counters::{Direction, Method, request_index};
    let c = xdp.counters();
    assert_eq!(registers(&xdp), 1, "the REGISTER counted twice");
    assert_eq!(c.requests[request_index(Direction::Ingress, Method::Options) as usize], 1);
    assert_eq!(state(&xdp).tcp_client.next_seq, start + merged.len() as u32);
}
