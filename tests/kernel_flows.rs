//! The flow map and the head events, through BPF_PROG_TEST_RUN: one entry per
//! flow whichever way a packet goes, the liveness timestamps RFC 5626 verdicts
//! need, and the heads of REGISTERs, their responses, 3xx and 430.

use monitor_common::{
    counters::{Direction, KernelStat, Method, request_index, response_index},
    flow::{FlowKey, FlowState, FlowTransport},
};
use sipflow_tests::{
    kernel::{LoadedXdp, XDP_PASS},
    packets::*,
};

fn key(transport: FlowTransport) -> FlowKey {
    let mut server_addr = [0; 16];
    let mut client_addr = [0; 16];
    server_addr[..4].copy_from_slice(&SERVER_V4);
    client_addr[..4].copy_from_slice(&CLIENT_V4);
    FlowKey {
        server_addr,
        client_addr,
        server_port: SIP_PORT,
        client_port: CLIENT_PORT,
        vlan_id: 0,
        family: 4,
        transport: transport as u8,
    }
}

fn only_flow(xdp: &LoadedXdp) -> (FlowKey, FlowState) {
    let flows = xdp.flows.snapshot();
    assert_eq!(flows.len(), 1, "one flow: {flows:?}");
    flows[0]
}

#[test]
fn register_over_tcp_is_one_flow_and_two_heads() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let syn = Flags { syn: true, ..Flags::default() };
    xdp.run_all(&[
        tcp4(CLIENT_PORT, SIP_PORT, syn, b""),
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), REGISTER),
        tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), REGISTER_OK),
    ]);
    let (k, state) = only_flow(&xdp);
    assert_eq!(k, key(FlowTransport::Tcp));
    assert_eq!((state.packets_from_client, state.packets_from_server), (2, 1));
    assert_eq!(state.last_method, Method::Register as u8);
    assert_eq!(state.last_status, 200);
    assert_ne!(state.last_register_ns, 0, "the REGISTER opened a transaction its answer is paired with");
    assert_ne!(state.tcp_flags & 0x02, 0, "SYN seen");
    assert!(state.last_client_activity_ns >= state.first_seen_ns && state.last_client_activity_ns > 0);

    let heads = xdp.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(heads[0].bytes, REGISTER);
    assert!(heads[0].from_client);
    assert_eq!(heads[1].bytes, REGISTER_OK);
    assert!(!heads[1].from_client);
    assert!(heads.iter().all(|h| h.key == key(FlowTransport::Tcp) && !h.cut));
    assert_eq!(xdp.counters().stat(KernelStat::EventsSent), 2);
}

#[test]
fn udp_both_directions_share_one_entry() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    xdp.run_all(&[
        udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), INVITE),
        udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), RINGING),
    ]);
    let (k, state) = only_flow(&xdp);
    assert_eq!(k, key(FlowTransport::Udp));
    assert_eq!((state.packets_from_client, state.packets_from_server), (1, 1));
    assert_eq!(xdp.counters().stat(KernelStat::FlowsCreated), 1);
}

#[test]
fn pings_pongs_and_stun_keep_their_times() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    xdp.run_all(&[tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"\r\n\r\n")]);
    let (_, state) = only_flow(&xdp);
    assert_ne!(state.unanswered_ping_ns, 0, "a ping waits for its pong");
    assert_eq!(state.last_client_activity_ns, state.last_ping_ns);
    xdp.run_all(&[tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), b"\r\n")]);
    let (_, state) = only_flow(&xdp);
    assert_eq!(state.unanswered_ping_ns, 0, "answered");
    assert!(state.last_pong_ns >= state.last_ping_ns);

    let xdp = LoadedXdp::load();
    let request = udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), &stun(0x0001));
    xdp.run_all(&[request.clone(), request]);
    let (_, state) = only_flow(&xdp);
    assert_eq!(state.stun_unanswered, 2, "a request and its retransmission");
    assert_ne!(state.unanswered_stun_ns, 0);
    xdp.run_all(&[udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), &stun(0x0111))]);
    let (_, state) = only_flow(&xdp);
    assert_eq!((state.stun_unanswered, state.unanswered_stun_ns), (0, 0));
    assert_ne!(state.last_stun_error_ns, 0);
}

#[test]
fn heads_of_3xx_and_430_but_not_of_other_responses() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let from_server = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    xdp.run_all(&[from_server(RINGING), from_server(MULTIPLE_CHOICES), from_server(FLOW_FAILED), from_server(RINGING)]);
    let heads: Vec<Vec<u8>> = xdp.heads().into_iter().map(|h| h.bytes).collect();
    assert_eq!(heads, vec![MULTIPLE_CHOICES.to_vec(), FLOW_FAILED.to_vec()]);
}

#[test]
fn a_long_register_is_cut_at_the_head_limit() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let mut register = REGISTER[..REGISTER.len() - 2].to_vec();
    while register.len() < 1300 {
        register.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    register.extend_from_slice(b"\r\n");
    xdp.run_all(&[tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &register)]);
    let heads = xdp.heads();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].bytes, &register[..1024]);
    assert!(heads[0].cut);
}

#[test]
fn a_full_lru_evicts_and_the_creations_are_counted() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load_with_max_flows(16);
    for client in 0..100u16 {
        let frame = udp4_between(([192, 0, 2, 100], 20000 + client), (SERVER_V4, SIP_PORT), INVITE);
        assert_eq!(xdp.run(&frame), XDP_PASS);
    }
    let live = xdp.flows.snapshot().len();
    assert!(live <= 16, "the map holds at most its size, got {live}");
    assert_eq!(xdp.counters().stat(KernelStat::FlowsCreated), 100);
}

#[test]
fn a_full_ring_buffer_drops_and_counts() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let sent = 8000;
    // UDP: every repeat is a REGISTER of its own (a repeated TCP segment would be a retransmission).
    let frame = udp4(CLIENT_PORT, SIP_PORT, REGISTER);
    let (verdict, _) = xdp.run_repeat(&frame, sent);
    assert_eq!(verdict, XDP_PASS);
    let counters = xdp.counters();
    let (delivered, lost) = (counters.stat(KernelStat::EventsSent), counters.stat(KernelStat::EventsLost));
    assert!(lost > 0, "4 MiB holds fewer than {sent} heads");
    assert_eq!(delivered + lost, sent as u64);
}

#[test]
fn every_final_response_after_pipelined_registers_reaches_the_agent() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let to_server = |m: &[u8]| udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), m);
    let from_server = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    // Five REGISTERs in flight on one flow (an SBC, a NAT shared by phones), then their answers.
    xdp.run_all(&vec![to_server(REGISTER); 5]);
    xdp.run_all(&vec![from_server(REGISTER_OK); 5]);
    let heads = xdp.heads();
    let answers = heads.iter().filter(|h| h.bytes == REGISTER_OK).count();
    assert_eq!(answers, 5, "one flag per flow let only the first answer through");

    // A final response on a flow that never carried a REGISTER stays a counter.
    let xdp = LoadedXdp::load();
    xdp.run_all(&[udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT + 1), REGISTER_OK)]);
    assert_eq!(xdp.counters().stat(KernelStat::EventsSent), 0);
}

#[test]
fn a_phone_sending_from_5060_is_the_client_where_the_host_is_seen_both_ways() {
    sipflow_tests::root_or_skip!();
    // A phone at .1 registers from its own 5060 with the server at .2: .1 sorts
    // lower, and by address alone the phone would be taken for the server.
    let phone_to_server = udp4_between((CLIENT_V4, SIP_PORT), (SERVER_V4, SIP_PORT), REGISTER);
    let server_to_phone = udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, SIP_PORT), REGISTER_OK);
    let mut xdp = LoadedXdp::load();
    assert_eq!(xdp.run(&phone_to_server), XDP_PASS);
    assert_eq!(xdp.run_tc(&server_to_phone), sipflow_tests::kernel::TC_ACT_UNSPEC);
    let (key, state) = only_flow(&xdp);
    assert_eq!(
        (key.server_addr[..4].to_vec(), key.client_addr[..4].to_vec()),
        (SERVER_V4.to_vec(), CLIENT_V4.to_vec())
    );
    assert_eq!((state.packets_from_client, state.packets_from_server), (1, 1));
    let heads = xdp.heads();
    assert!(heads[0].from_client && !heads[1].from_client, "the REGISTER from the phone, the 200 from the host");

    // Off a tap both directions arrive on ingress, and either end may be the
    // monitored host: the lower port, then the lower address, as before.
    let xdp = LoadedXdp::load_ingress_only();
    assert_eq!(xdp.run(&phone_to_server), XDP_PASS);
    assert_eq!(xdp.run(&udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, SIP_PORT), REGISTER_OK)), XDP_PASS);
    let (key, _) = only_flow(&xdp);
    assert_eq!(key.server_addr[..4], CLIENT_V4, "one entry for both directions");
}

#[test]
fn a_phone_sending_from_the_sips_port_over_udp_gets_its_answers_seen() {
    sipflow_tests::root_or_skip!();
    // A phone's second account often registers from 5061 over UDP. Between two
    // SIP ports the host is the server, and its 200 is SIP from 5060, not TLS
    // to 5061: it is classified, and it reaches the agent to make the binding.
    let phone = (CLIENT_V4, SIPS_PORT);
    let mut xdp = LoadedXdp::load();
    assert_eq!(xdp.run(&udp4_between(phone, (SERVER_V4, SIP_PORT), REGISTER)), XDP_PASS);
    let answer = udp4_between((SERVER_V4, SIP_PORT), phone, REGISTER_OK);
    assert_eq!(xdp.run_tc(&answer), sipflow_tests::kernel::TC_ACT_UNSPEC);
    let (key, state) = only_flow(&xdp);
    assert_eq!((key.server_port, key.client_port), (SIP_PORT, SIPS_PORT));
    assert_eq!((state.packets_from_client, state.packets_from_server), (1, 1));
    let heads = xdp.heads();
    assert_eq!(heads.len(), 2, "the REGISTER and its 200: {heads:?}");
    assert!(heads[0].from_client && !heads[1].from_client);
}

/// SIP over WebSocket (RFC 7118) on a `--ws-port`: the HTTP upgrade is no SIP;
/// a client's masked REGISTER is counted and its head reaches the agent
/// unmasked; the server's 200 in an unmasked frame binds; WebSocket ping and
/// pong frames are the flow's keepalives; a frame a client did not mask, or
/// one with an extension's bits, is read or skipped by what it says, never
/// mistaken: its payload is not SIP unless unmasked to SIP.
#[test]
fn sip_over_websocket_frames() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let mask = Some([0xa1, 0xb2, 0xc3, 0xd4]);
    let upgrade = b"GET / HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\r\n";
    let switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    xdp.run_all(&[
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), upgrade),
        tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), switching),
    ]);
    let requests_before: u64 = xdp.counters().requests.iter().sum();
    assert_eq!(requests_before, 0, "the HTTP upgrade is not SIP");

    xdp.run_all(&[
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(1, REGISTER, mask)),
        tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), &ws_frame(1, REGISTER_OK, None)),
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(9, b"", mask)),
        tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), &ws_frame(10, b"", None)),
    ]);
    let counters = xdp.counters();
    let register = request_index(Direction::Ingress, Method::Register) as usize;
    assert_eq!(counters.requests[register], 1);
    let ok = response_index(Direction::Ingress, 200).unwrap() as usize;
    assert_eq!(counters.responses[ok], 1, "XDP sees both directions of crafted frames as ingress");
    let (k, state) = only_flow(&xdp);
    assert_eq!((k.server_port, k.transport), (WS_PORT, FlowTransport::Tcp as u8));
    assert_eq!(state.last_status, 200);
    assert_ne!(state.last_ping_ns, 0, "a WebSocket ping is a keepalive");
    assert_ne!(state.last_pong_ns, 0);
    assert_eq!(state.unanswered_ping_ns, 0, "answered by the pong frame");
    let heads = xdp.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(heads[0].bytes, REGISTER, "the agent gets the REGISTER unmasked");
    assert_eq!(heads[1].bytes, REGISTER_OK);

    // Masked with another key, the same bytes are still this REGISTER; a text
    // frame whose payload is not SIP counts nothing.
    xdp.run_all(&[
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(1, REGISTER, Some([9, 8, 7, 6]))),
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(1, b"hello, not SIP", mask)),
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &[0xc1, 0x05, 1, 2, 3, 4, 5]),
    ]);
    assert_eq!(xdp.counters().requests[register], 2);
    assert_eq!(xdp.counters().requests.iter().sum::<u64>(), 2);
}

/// A WebRTC client's INVITE (RFC 7118) in one masked text frame of a few KB,
/// as a browser sends it: in several TCP segments, each after the first
/// starting inside the frame.
fn long_invite() -> Vec<u8> {
    let sdp = "a=candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host generation 0 Ŋ\r\n".repeat(60);
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks\r\n\
         Call-ID: long@b\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// Splits `frame` into three segments, the second starting at the first
/// byte past `from` whose value is `byte`.
fn split_at_byte(frame: &[u8], from: usize, byte: u8) -> [Vec<u8>; 3] {
    let at = from + frame[from..].iter().position(|b| *b == byte).expect("the byte is in the frame");
    let second_end = (at + 1400).min(frame.len() - 10);
    [frame[..at].to_vec(), frame[at..second_end].to_vec(), frame[second_end..].to_vec()]
}

/// A segment that starts inside a WebSocket frame longer than the segment
/// before it is no frame head, whatever its first byte (RFC 6455 §5.2): a
/// continuation starting with 0x89 is no ping, one with 0x8a no pong; frames
/// after the long one, in its last segment or their own, are read.
#[test]
fn a_websocket_frame_longer_than_a_segment_is_read_as_one() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let invite = long_invite();
    let payload_at = 8; // two bytes, a 16-bit length, the masking key
    // The mask makes the masked byte 100 bytes into the payload 0x89.
    let mut mask = [0x11, 0x22, 0x33, 0x44];
    mask[100 % 4] = invite[100] ^ 0x89;
    let frame = ws_frame(1, &invite, Some(mask));
    assert_eq!(frame[payload_at + 100], 0x89);
    let client = split_at_byte(&frame, payload_at + 100, 0x89);
    xdp.run_all(&[
        tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(1, REGISTER, Some(mask))),
        tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), &ws_frame(1, REGISTER_OK, None)),
    ]);
    for segment in &client {
        assert_eq!(xdp.run(&tcp4(CLIENT_PORT, WS_PORT, Flags::default(), segment)), XDP_PASS);
    }
    let (_, state) = only_flow(&xdp);
    assert_eq!((state.last_ping_ns, state.unanswered_ping_ns), (0, 0), "the frame's middle read as a ping");
    let counters = xdp.counters();
    assert_eq!(counters.requests[request_index(Direction::Ingress, Method::Invite) as usize], 1);
    assert!(counters.stat(KernelStat::WebsocketMidFrame) >= 2);

    // A real ping after it is one; the server's long frame with a 0x8a at a
    // segment's start is no pong, and the ping stays unanswered.
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(9, b"", Some(mask)))), XDP_PASS);
    assert_ne!(only_flow(&xdp).1.unanswered_ping_ns, 0, "the ping after the long frame");
    let answer = ws_frame(1, &invite, None);
    for segment in split_at_byte(&answer, 100, 0x8a) {
        assert_eq!(xdp.run(&tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), &segment)), XDP_PASS);
    }
    let (_, state) = only_flow(&xdp);
    assert_eq!(state.last_pong_ns, 0, "the frame's middle read as a pong");
    assert_ne!(state.unanswered_ping_ns, 0);
    // The long frame's end and a pong in one segment: the pong is read.
    let end = ws_frame(1, &invite, None);
    let (first, last) = end.split_at(end.len() - 30);
    for segment in first.chunks(1400) {
        assert_eq!(xdp.run(&tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), segment)), XDP_PASS);
    }
    let tail = [last, &ws_frame(10, b"", None)[..]].concat();
    assert_eq!(xdp.run(&tcp4_from_server(WS_PORT, CLIENT_PORT, Flags::default(), &tail)), XDP_PASS);
    assert_eq!(only_flow(&xdp).1.unanswered_ping_ns, 0, "the pong after the frame's end");
}

/// A registered flow is moved where junk flows cannot reach it: the host's
/// own 2xx to a REGISTER (seen leaving it) moves it to BOUND_FLOWS, and a
/// flood of one-byte datagrams from as many ports as the map holds and more
/// evicts only unbound flows. A 2xx forged on ingress moves nothing.
#[test]
fn junk_flows_cannot_evict_a_registered_flow() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load_with_max_flows(256);
    let registered = key(FlowTransport::Tcp);
    let numbers = |seq, ack| Sequence { seq, ack, window: 64_000 };
    let (client, server) = (7_000u32, 90_000u32);
    let from_client =
        |seq, payload: &[u8]| tcp4_segment(true, SIP_PORT, numbers(seq, server), Flags::default(), payload);
    assert_eq!(xdp.run(&from_client(client, REGISTER)), XDP_PASS);
    let after_register = client + REGISTER.len() as u32;
    assert!(!xdp.flows.is_bound(&registered));
    // On ingress (not a tap), a "2xx" is no answer of the host's registrar.
    let forged = udp4_between((CLIENT_V4, SIP_PORT), (SERVER_V4, CLIENT_PORT), REGISTER_OK);
    assert_eq!(xdp.run(&forged), XDP_PASS);
    assert!(!xdp.flows.is_bound(&registered));
    let ok = tcp4_segment(false, SIP_PORT, numbers(server, after_register), Flags::default(), REGISTER_OK);
    assert_eq!(xdp.run_tc(&ok), u32::MAX);
    assert!(xdp.flows.is_bound(&registered), "the host's 2xx binds the flow");
    assert_eq!(xdp.counters().stat(KernelStat::FlowsBound), 1);
    let before = xdp.flows.get(&registered).expect("the bound flow");

    for port in 0..2_000u16 {
        let junk = udp4_between(([198, 51, 100, 7], 10_000 + port), (SERVER_V4, SIP_PORT), b"x");
        assert_eq!(xdp.run(&junk), XDP_PASS);
    }
    let after = xdp.flows.get(&registered).expect("the flood evicted the registered flow");
    assert_eq!(after.last_register_ns, before.last_register_ns);
    assert!(xdp.flows.snapshot().len() <= 2 * 256);
    // Its packets still land on it.
    assert_eq!(xdp.run(&from_client(after_register, b"\r\n\r\n")), XDP_PASS);
    assert_ne!(xdp.flows.get(&registered).expect("bound").last_ping_ns, 0);
}

/// Every ping its pong answers is one round-trip sample, sent up as it
/// happens (a walk of the map sees one per flow at most); a pong that answers
/// no ping is none.
#[test]
fn each_answered_ping_is_one_round_trip_event() {
    sipflow_tests::root_or_skip!();
    use monitor_common::events::FlowEventKind;
    let mut xdp = LoadedXdp::load();
    for _ in 0..5 {
        assert_eq!(xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"\r\n\r\n")), XDP_PASS);
        assert_eq!(xdp.run(&tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), b"\r\n")), XDP_PASS);
    }
    assert_eq!(xdp.run(&tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), b"\r\n")), XDP_PASS);
    let answered: Vec<_> = xdp.flow_news().into_iter().filter(|n| n.kind == FlowEventKind::Answered).collect();
    assert_eq!(answered.len(), 5, "{answered:?}");
    assert!(answered.iter().all(|n| n.rtt_us < 1_000_000 && n.key == key(FlowTransport::Tcp)));
}

/// Many UAs keep their NAT binding with CRLFCRLF over UDP: a keepalive ping,
/// which nobody answers over UDP (no pong is waited for).
#[test]
fn crlf_keepalives_over_udp_are_pings() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    assert_eq!(xdp.run(&udp4(CLIENT_PORT, SIP_PORT, b"\r\n\r\n")), XDP_PASS);
    let (_, state) = only_flow(&xdp);
    assert_ne!(state.last_ping_ns, 0);
    assert_eq!(state.last_client_activity_ns, state.last_ping_ns);
    assert_eq!(state.unanswered_ping_ns, 0, "no pong is waited for over UDP");
    use monitor_common::counters::{PacketClass, packet_index};
    assert_eq!(xdp.counters().packets[packet_index(Direction::Ingress, PacketClass::KeepalivePing) as usize], 1);
}

/// The client's host answers the server's request with a port unreachable
/// quoting it: the UA is gone, and the flow fails now rather than at the
/// request timeout. One that quotes another datagram, or comes when no
/// request waits, is not believed.
#[test]
fn a_port_unreachable_quoting_the_servers_request_is_believed() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let server_to_client = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    // Before any request: not believed.
    assert_eq!(xdp.run(&icmp4_port_unreachable(&server_to_client(INVITE))), XDP_PASS);
    assert_eq!(xdp.counters().stat(KernelStat::PortUnreachableUnmatched), 1);
    let options = b"OPTIONS sip:alice@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK9\r\nCall-ID: o@b\r\nCSeq: 9 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let request = server_to_client(options);
    assert_eq!(xdp.run_tc(&request), u32::MAX);
    // Quoting another datagram (another checksum): not believed.
    assert_eq!(xdp.run(&icmp4_port_unreachable(&server_to_client(INVITE))), XDP_PASS);
    assert_eq!(only_flow(&xdp).1.client_unreachable_ns, 0);
    // Quoting the request: believed, and the agent is told at once.
    xdp.flow_news();
    assert_eq!(xdp.run(&icmp4_port_unreachable(&request)), XDP_PASS);
    let (_, state) = only_flow(&xdp);
    assert!(
        state.client_unreachable_ns >= state.server_request_unanswered_ns && state.server_request_unanswered_ns != 0
    );
    let c = xdp.counters();
    assert_eq!((c.stat(KernelStat::PortUnreachable), c.stat(KernelStat::PortUnreachableUnmatched)), (1, 2));
    assert_eq!(xdp.flow_news().len(), 1);
}

/// A 2xx binds a flow only as the answer to a REGISTER: a scanner's
/// challenged REGISTER and then an OPTIONS the registrar answers 200 bind
/// nothing, so junk cannot fill BOUND_FLOWS either.
#[test]
fn only_a_2xx_after_a_register_binds_the_flow() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let client = |m: &[u8]| udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), m);
    let server = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    let options = b"OPTIONS sip:example.com SIP/2.0\r\nCall-ID: x@b\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let challenge = b"SIP/2.0 401 Unauthorized\r\nCall-ID: r@b\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    let ok = b"SIP/2.0 200 OK\r\nCall-ID: x@b\r\nCSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(xdp.run(&client(REGISTER)), XDP_PASS);
    assert_eq!(xdp.run_tc(&server(challenge)), u32::MAX);
    assert_eq!(xdp.run(&client(options)), XDP_PASS);
    assert_eq!(xdp.run_tc(&server(ok)), u32::MAX);
    assert!(!xdp.flows.is_bound(&key(FlowTransport::Udp)), "a 200 to an OPTIONS bound the flow");
    // The REGISTER again, answered: bound.
    assert_eq!(xdp.run(&client(REGISTER)), XDP_PASS);
    assert_eq!(xdp.run_tc(&server(REGISTER_OK)), u32::MAX);
    assert!(xdp.flows.is_bound(&key(FlowTransport::Udp)));
}

/// Where a side's framing is not known (a flow met mid-stream), a frame
/// that fills its segment exactly shows where frames start: a ping frame of
/// its own is a ping; a JavaScript UA's CRLF keepalive in a text frame too.
#[test]
fn a_websocket_frame_that_fills_its_segment_shows_the_framing() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let mask = Some([1, 2, 3, 4]);
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(9, b"", mask))), XDP_PASS);
    let (_, state) = only_flow(&xdp);
    assert_ne!(state.last_ping_ns, 0, "a ping frame alone in its segment");
    assert_eq!(state.ws_client.known, monitor_common::flow::WS_FRAMED);
    let first = state.last_ping_ns;
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, WS_PORT, Flags::default(), &ws_frame(1, b"\r\n\r\n", mask))), XDP_PASS);
    assert!(only_flow(&xdp).1.last_ping_ns > first, "a CRLF keepalive in a text frame");
}

/// A retransmission that merges old bytes with a new ping: the ping is read.
#[test]
fn a_ping_in_the_new_bytes_of_a_merged_retransmission_is_read() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let numbers = |seq, ack| Sequence { seq, ack, window: 64_000 };
    let from_client = |seq, payload: &[u8]| tcp4_segment(true, SIP_PORT, numbers(seq, 0), Flags::default(), payload);
    assert_eq!(xdp.run(&from_client(5_000, REGISTER)), XDP_PASS);
    assert_eq!(only_flow(&xdp).1.last_ping_ns, 0);
    let merged = [REGISTER, b"\r\n\r\n"].concat();
    assert_eq!(xdp.run(&from_client(5_000, &merged)), XDP_PASS);
    assert_ne!(only_flow(&xdp).1.last_ping_ns, 0);
}
