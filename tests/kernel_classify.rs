//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: every frame
//! passes, and lands in exactly the counters it should.

use monitor_common::counters::{
    Direction, KernelStat, Method, PacketClass, packet_index, request_index, response_index,
};
use sipflow_tests::{
    kernel::{LoadedXdp, TC_ACT_UNSPEC, XDP_PASS},
    packets::*,
};

/// What one frame must add to the counters.
struct Expect {
    classes: &'static [PacketClass],
    method: Option<Method>,
    code: Option<u16>,
}

const fn class(c: &'static [PacketClass]) -> Expect {
    Expect { classes: c, method: None, code: None }
}
const fn request(m: Method) -> Expect {
    Expect { classes: &[PacketClass::SipRequest], method: Some(m), code: None }
}
const fn response(code: u16) -> Expect {
    Expect { classes: &[PacketClass::SipResponse], method: None, code: Some(code) }
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use PacketClass::*;
    let truncate = |frame: Vec<u8>, len: usize| frame[..len].to_vec();
    let mut bad_ihl = udp4(CLIENT_PORT, SIP_PORT, INVITE);
    bad_ihl[IPV4_OFFSET] = 0x44;
    let mut bad_tcp_offset = tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), INVITE);
    bad_tcp_offset[IPV4_OFFSET + 20 + 12] = 0x40;
    let mut udp_len_past_end = udp4(CLIENT_PORT, SIP_PORT, INVITE);
    udp_len_past_end[IPV4_OFFSET + 20 + 4..IPV4_OFFSET + 20 + 6].copy_from_slice(&2000u16.to_be_bytes());
    let mut ip_len_past_end = udp4(CLIENT_PORT, SIP_PORT, INVITE);
    ip_len_past_end[IPV4_OFFSET + 2..IPV4_OFFSET + 4].copy_from_slice(&3000u16.to_be_bytes());
    let mut arp = udp4(CLIENT_PORT, SIP_PORT, b"x");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());

    vec![
        ("UDP INVITE", udp4(CLIENT_PORT, SIP_PORT, INVITE), request(Method::Invite)),
        ("UDP 430 from the server", udp4(SIP_PORT, CLIENT_PORT, FLOW_FAILED), response(430)),
        ("UDP 300", udp4(SIP_PORT, CLIENT_PORT, MULTIPLE_CHOICES), response(300)),
        ("UDP extension method", udp4(CLIENT_PORT, SIP_PORT, b"FOO sip:a@b SIP/2.0\r\n\r\n"), request(Method::Other)),
        ("UDP non-SIP on the SIP port", udp4(CLIENT_PORT, SIP_PORT, b"hello world"), class(&[Other])),
        ("UDP SIP on another port", udp4(CLIENT_PORT, 5080, INVITE), class(&[Other])),
        ("UDP empty on the SIP port", udp4(CLIENT_PORT, SIP_PORT, b""), class(&[Other])),
        ("TCP REGISTER", tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), REGISTER), request(Method::Register)),
        (
            "TCP REGISTER after CRLFs",
            tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &[b"\r\n\r\n\r\n".as_slice(), REGISTER].concat()),
            request(Method::Register),
        ),
        ("TCP ping", tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"\r\n\r\n"), class(&[KeepalivePing])),
        ("TCP pong", tcp4(SIP_PORT, CLIENT_PORT, Flags::default(), b"\r\n"), class(&[KeepalivePong])),
        ("TCP SYN", tcp4(CLIENT_PORT, SIP_PORT, Flags { syn: true, ..Flags::default() }, b""), class(&[TcpControl])),
        ("TCP FIN", tcp4(CLIENT_PORT, SIP_PORT, Flags { fin: true, ..Flags::default() }, b""), class(&[TcpControl])),
        ("TCP RST", tcp4(SIP_PORT, CLIENT_PORT, Flags { rst: true, ..Flags::default() }, b""), class(&[TcpControl])),
        ("TCP bare ACK", tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b""), class(&[Other])),
        ("TLS payload", tcp4(CLIENT_PORT, SIPS_PORT, Flags::default(), b"\x17\x03\x03\x00\x10"), class(&[Other])),
        ("TLS SYN", tcp4(CLIENT_PORT, SIPS_PORT, Flags { syn: true, ..Flags::default() }, b""), class(&[TcpControl])),
        ("TLS carrying SIP-looking bytes", tcp4(CLIENT_PORT, SIPS_PORT, Flags::default(), INVITE), class(&[Other])),
        ("STUN request", udp4(CLIENT_PORT, SIP_PORT, &stun(0x0001)), class(&[StunRequest])),
        ("STUN success", udp4(SIP_PORT, CLIENT_PORT, &stun(0x0101)), class(&[StunResponse])),
        ("STUN error", udp4(SIP_PORT, CLIENT_PORT, &stun(0x0111)), class(&[StunError])),
        ("IPv6 INVITE", udp6(CLIENT_PORT, SIP_PORT, INVITE), request(Method::Invite)),
        (
            "IPv6 with a destination-options header",
            with_ipv6_destination_options(&udp6(CLIENT_PORT, SIP_PORT, INVITE)),
            request(Method::Invite),
        ),
        (
            "IPv6 with hop-by-hop, routing and destination options",
            with_ipv6_extension(
                &with_ipv6_extension(
                    &with_ipv6_destination_options(&udp6(CLIENT_PORT, SIP_PORT, INVITE)),
                    IPV6_ROUTING,
                    [0, 0, 0, 0, 0, 0],
                ),
                IPV6_HOP_BY_HOP,
                [1, 4, 0, 0, 0, 0],
            ),
            request(Method::Invite),
        ),
        (
            "first IPv6 fragment",
            as_ipv6_fragment(&udp6(CLIENT_PORT, SIP_PORT, INVITE), 0, true),
            Expect { classes: &[SipRequest, Fragment], method: Some(Method::Invite), code: None },
        ),
        (
            "later IPv6 fragment that looks like SIP",
            as_ipv6_fragment(&udp6(CLIENT_PORT, SIP_PORT, INVITE), 185, false),
            class(&[Fragment]),
        ),
        (
            "IPv6 TCP REGISTER behind a destination-options header",
            with_ipv6_destination_options(&tcp6(CLIENT_PORT, SIP_PORT, REGISTER)),
            request(Method::Register),
        ),
        (
            "VLAN IPv4 MESSAGE",
            udp4_vlan(&[42], CLIENT_PORT, SIP_PORT, b"MESSAGE sip:a@b SIP/2.0\r\n\r\n"),
            request(Method::Message),
        ),
        (
            "QinQ IPv6 OPTIONS",
            udp6_vlan(&[100, 200], CLIENT_PORT, SIP_PORT, b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"),
            request(Method::Options),
        ),
        (
            "IPv4 options",
            with_ipv4_options(&udp4(CLIENT_PORT, SIP_PORT, INVITE), &[1, 1, 1, 0]),
            request(Method::Invite),
        ),
        (
            "first IPv4 fragment",
            as_ipv4_fragment(&udp4(CLIENT_PORT, SIP_PORT, INVITE), 0, true),
            Expect { classes: &[SipRequest, Fragment], method: Some(Method::Invite), code: None },
        ),
        (
            "later IPv4 fragment that looks like SIP",
            as_ipv4_fragment(&udp4(CLIENT_PORT, SIP_PORT, INVITE), 185, false),
            class(&[Fragment]),
        ),
        ("ARP", arp, class(&[Other])),
        ("Ethernet header only", truncate(udp4(CLIENT_PORT, SIP_PORT, INVITE), 14), class(&[Malformed])),
        ("IPv4 header cut", truncate(udp4(CLIENT_PORT, SIP_PORT, INVITE), 30), class(&[Malformed])),
        ("UDP header cut", truncate(udp4(CLIENT_PORT, SIP_PORT, INVITE), 38), class(&[Malformed])),
        ("IHL past the end of the datagram", bad_ihl, class(&[Malformed])),
        ("TCP data offset below 5", bad_tcp_offset, class(&[Malformed])),
        ("UDP length past the datagram", udp_len_past_end, class(&[Malformed])),
        ("IP total length past the frame", ip_len_past_end, class(&[Malformed])),
        ("VLAN tag cut", truncate(udp4_vlan(&[7], CLIENT_PORT, SIP_PORT, INVITE), 16), class(&[Malformed])),
    ]
}

/// BPF_PROG_TEST_RUN builds a socket buffer only around a complete IPv4 or IPv6
/// header (EINVAL otherwise), as every real one has: frames cut shorter are for XDP only.
fn skb_can_hold(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() >= 14 + 20,
        0x86dd => frame.len() >= 14 + 40,
        _ => frame.len() > 14,
    }
}

/// Runs every case through `run`, which must answer `pass`, and checks that
/// exactly the expected counters of `direction` grew.
fn check_cases(
    mut run: impl FnMut(&[u8]) -> u32,
    counters: impl Fn() -> sipflow::kernel::maps::CounterSnapshot,
    pass: u32,
    direction: Direction,
) {
    let mut failures = Vec::new();
    for (name, frame, expect) in cases() {
        let before = counters();
        if direction == Direction::Egress && !skb_can_hold(&frame) {
            continue;
        }
        assert_eq!(run(&frame), pass, "{name}: not passed");
        let after = counters();
        let grew = |b: &[u64], a: &[u64]| -> Vec<usize> { (0..a.len()).filter(|&i| a[i] != b[i]).collect() };

        let mut want_packets: Vec<usize> =
            expect.classes.iter().map(|c| packet_index(direction, *c) as usize).collect();
        want_packets.sort();
        let want_requests: Vec<usize> =
            expect.method.map(|m| request_index(direction, m) as usize).into_iter().collect();
        let want_responses: Vec<usize> =
            expect.code.and_then(|c| response_index(direction, c)).map(|i| i as usize).into_iter().collect();
        let got = (
            grew(&before.packets, &after.packets),
            grew(&before.requests, &after.requests),
            grew(&before.responses, &after.responses),
        );
        if got != (want_packets.clone(), want_requests.clone(), want_responses.clone()) {
            failures.push(format!(
                "{name}: counters that grew {got:?}, wanted {:?}",
                (want_packets, want_requests, want_responses)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_case_passes_and_counts_where_it_should() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    check_cases(|f| xdp.run(f), || xdp.counters(), XDP_PASS, Direction::Ingress);
}

/// The TC egress program shares the classifier: same cases, egress slots, and
/// it lets every packet through.
#[test]
fn egress_classifies_the_same_and_lets_everything_through() {
    sipflow_tests::root_or_skip!();
    let programs = std::cell::RefCell::new(LoadedXdp::load());
    check_cases(|f| programs.borrow_mut().run_tc(f), || programs.borrow().counters(), TC_ACT_UNSPEC, Direction::Egress);
}

#[test]
fn counts_add_up_over_repeats() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let (verdict, _) = xdp.run_repeat(&udp4(CLIENT_PORT, SIP_PORT, INVITE), 1000);
    assert_eq!(verdict, XDP_PASS);
    let counters = xdp.counters();
    assert_eq!(counters.packets[packet_index(Direction::Ingress, PacketClass::SipRequest) as usize], 1000);
    assert_eq!(counters.requests[request_index(Direction::Ingress, Method::Invite) as usize], 1000);
    assert_eq!(counters.packets.iter().sum::<u64>(), 1000);
}

#[test]
fn every_standard_method_over_tcp_and_udp() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    for (method, token) in Method::STANDARD {
        let message = [token, b" sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"].concat();
        xdp.run(&udp4(CLIENT_PORT, SIP_PORT, &message));
        xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &message));
        assert_eq!(xdp.counters().requests[request_index(Direction::Ingress, method) as usize], 2, "{method:?}");
    }
}

#[test]
fn every_status_code_is_counted_exactly() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    for code in 100..=699u16 {
        let message = format!("SIP/2.0 {code} Whatever\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(xdp.run(&udp4(SIP_PORT, CLIENT_PORT, message.as_bytes())), XDP_PASS);
    }
    let counters = xdp.counters();
    for code in 100..=699u16 {
        let index = response_index(Direction::Ingress, code).unwrap() as usize;
        assert_eq!(counters.responses[index], 1, "code {code}");
    }
}

/// A TCP retransmission repeats a segment the flow already carried: it is a
/// packet again, but its message is counted once (tshark does the same).
#[test]
fn tcp_retransmissions_are_packets_but_not_messages_again() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let register =
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"REGISTER sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(xdp.run(&register), XDP_PASS);
    }
    let counters = xdp.counters();
    assert_eq!(counters.requests[request_index(Direction::Ingress, Method::Register) as usize], 1);
    assert_eq!(counters.packets[packet_index(Direction::Ingress, PacketClass::SipRequest) as usize], 3);
    // The next segment is new data; so is the server's first answer on the flow.
    xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n"));
    let answer =
        tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    xdp.run(&answer);
    xdp.run(&answer);
    let counters = xdp.counters();
    assert_eq!(counters.requests[request_index(Direction::Ingress, Method::Options) as usize], 1);
    assert_eq!(counters.responses.iter().sum::<u64>(), 1);
}

/// Requests counted, by method, and responses, by code: the non-zero ones.
type MessageCounts = (Vec<(Method, u64)>, Vec<(u16, u64)>);

fn messages_counted(counters: &sipflow::kernel::maps::CounterSnapshot, direction: Direction) -> MessageCounts {
    let methods = Method::STANDARD
        .iter()
        .map(|(m, _)| *m)
        .chain([Method::Other])
        .map(|m| (m, counters.requests[request_index(direction, m) as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    let codes = (100..=699u16)
        .map(|c| (c, counters.responses[response_index(direction, c).unwrap() as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    (methods, codes)
}

/// A NOTIFY whose body (RFC 3420 sipfrag) looks like a status line: only its
/// Content-Length says that it is no message of its own.
const NOTIFY_SIPFRAG: &[u8] =
    b"NOTIFY sip:a@b SIP/2.0\r\nEvent: refer\r\nContent-Type: message/sipfrag\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n";

/// An INVITE whose head spans several windows and whose body is an SDP offer.
fn long_invite() -> Vec<u8> {
    let sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let mut head = b"INVITE sip:bob@example.com SIP/2.0\r\n".to_vec();
    for i in 0..12 {
        head.extend_from_slice(format!("X-Padding-{i}: {}\r\n", "p".repeat(60)).as_bytes());
    }
    head.extend_from_slice(format!("content-length : {}\r\n\r\n", sdp.len()).as_bytes());
    [head, sdp.to_vec()].concat()
}

#[test]
fn several_messages_in_one_segment_are_each_counted() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let segment = [
        REGISTER,
        NOTIFY_SIPFRAG,
        // A keepalive's CRLFs may sit between messages.
        b"\r\n\r\n",
        &long_invite(),
        b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhello",
        // Only the start of the last message is in this segment: it still counts.
        b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n",
    ]
    .concat();
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &segment)), XDP_PASS);
    let counters = xdp.counters();
    let (methods, codes) = messages_counted(&counters, Direction::Ingress);
    assert_eq!(
        methods,
        vec![(Method::Invite, 1), (Method::Bye, 1), (Method::Register, 1), (Method::Notify, 1), (Method::Message, 1)]
    );
    assert_eq!(codes, vec![], "the sipfrag body is not a response");
    assert_eq!(counters.packets.iter().sum::<u64>(), 1, "one packet");
    assert_eq!(counters.stat(KernelStat::MessageBoundReached), 0);
    // Every REGISTER reaches the agent, the first in a segment or not.
    let mut xdp = xdp;
    let heads = xdp.heads();
    assert_eq!(heads.len(), 1, "the REGISTER's head");
}

#[test]
fn a_register_after_another_message_still_reaches_the_agent() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load();
    let segment = [b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n".as_slice(), REGISTER].concat();
    xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &segment));
    let heads = xdp.heads();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].bytes.starts_with(b"REGISTER "), "{:?}", String::from_utf8_lossy(&heads[0].bytes));
}

#[test]
fn responses_the_server_sends_together_are_each_counted_on_egress() {
    sipflow_tests::root_or_skip!();
    let mut programs = LoadedXdp::load();
    let segment = [RINGING, REGISTER_OK, FLOW_FAILED].concat();
    let frame = tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), &segment);
    assert_eq!(programs.run_tc(&frame), TC_ACT_UNSPEC);
    let (methods, codes) = messages_counted(&programs.counters(), Direction::Egress);
    assert_eq!(methods, vec![]);
    assert_eq!(codes, vec![(180, 1), (200, 1), (430, 1)]);
}

/// The walk is bounded: past MAX_MESSAGES the rest of the segment is not
/// read, and that is counted.
#[test]
fn a_segment_of_many_messages_is_cut_at_the_bound_and_the_cut_is_counted() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let segment = b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n".repeat(40);
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &segment)), XDP_PASS);
    let counters = xdp.counters();
    let options = counters.requests[request_index(Direction::Ingress, Method::Options) as usize];
    assert!((2..40).contains(&options), "{options} OPTIONS counted");
    assert_eq!(counters.stat(KernelStat::MessageBoundReached), 1);
}

/// A wrong Content-Length sends the walk into the middle of a message: it
/// stops there rather than count what is not a start line.
#[test]
fn a_lost_framing_stops_the_walk() {
    sipflow_tests::root_or_skip!();
    let xdp = LoadedXdp::load();
    let segment = [b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nhello\r\n".as_slice(), INVITE].concat();
    xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &segment));
    let (methods, _) = messages_counted(&xdp.counters(), Direction::Ingress);
    assert_eq!(methods, vec![(Method::Message, 1)]);
}

/// Where peers are named, each message is counted once more under its flow's
/// peer: the client's longest matching network (IPv4 and IPv6), `other` for
/// none. The server's address never decides it, whichever way the message goes.
#[test]
fn messages_are_counted_again_by_the_clients_peer() {
    sipflow_tests::root_or_skip!();
    use monitor_common::counters::{peer_request_index, peer_response_index};
    use sipflow::peers::{Peers, peer_arg};
    let named = ["lab=192.0.2.0/24", "pbx=192.0.2.1", "v6=2001:db8::/32"];
    let peers = Peers::new(&named.map(|text| peer_arg(text).unwrap())).unwrap();
    let (lab, pbx, v6, other) = (1, 2, 3, 0);
    let xdp = LoadedXdp::load_with_peers(&peers);
    let server = (SERVER_V4, SIP_PORT);
    for frame in [
        udp4_between((CLIENT_V4, CLIENT_PORT), server, INVITE),
        // The server (192.0.2.2, in `lab`) answers on the pbx's flow.
        udp4_between(server, (CLIENT_V4, CLIENT_PORT), FLOW_FAILED),
        udp4_between(([192, 0, 2, 9], CLIENT_PORT), server, REGISTER),
        udp4_between(([203, 0, 113, 5], CLIENT_PORT), server, REGISTER),
        udp6(CLIENT_PORT, SIP_PORT, INVITE),
        udp4_between((CLIENT_V4, CLIENT_PORT), server, &stun(0x0001)),
    ] {
        assert_eq!(xdp.run(&frame), XDP_PASS);
    }
    let counted = xdp.counters();
    let request = |peer, method| counted.peer_requests[peer_request_index(peer, method) as usize];
    let response = |peer, code| counted.peer_responses[peer_response_index(peer, code).unwrap() as usize];
    assert_eq!(counted.peer_requests.len(), 4 * Method::COUNT, "three peers and other");
    assert_eq!((request(pbx, Method::Invite), response(pbx, 430)), (1, 1));
    assert_eq!((request(lab, Method::Register), request(other, Method::Register)), (1, 1));
    assert_eq!(request(v6, Method::Invite), 1);
    assert_eq!(response(lab, 430), 0, "the server's own network does not count");
    assert_eq!(counted.peer_requests.iter().sum::<u64>(), 4, "a STUN request is no SIP request");
    assert_eq!(counted.requests.iter().sum::<u64>(), 4, "the totals are counted as before");
    assert_eq!(counted, xdp.counters_one_by_one(), "batches read what slot-by-slot reads do");
    // Without peers nothing is counted twice, and nothing is read.
    let plain = LoadedXdp::load();
    plain.run(&udp4_between((CLIENT_V4, CLIENT_PORT), server, INVITE));
    assert!(plain.counters().peer_requests.is_empty());
    assert_eq!(plain.counters().requests.iter().sum::<u64>(), 1);
}

/// Per-peer counts survive a reload with the same peers (a restart), start
/// afresh with other peers, and a flow met again under the new peers is
/// counted under its new peer, not the one it was first given.
#[test]
fn a_reload_with_other_peers_starts_their_counts_afresh() {
    sipflow_tests::root_or_skip!();
    use monitor_common::counters::peer_request_index;
    use sipflow::peers::{Peers, peer_arg};
    let peers = |named: &[&str]| Peers::new(&named.iter().map(|t| peer_arg(t).unwrap()).collect::<Vec<_>>()).unwrap();
    let invite = udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), INVITE);
    let invites =
        |xdp: &LoadedXdp, peer| xdp.counters().peer_requests[peer_request_index(peer, Method::Invite) as usize];

    let xdp = LoadedXdp::load_with_peers(&peers(&["lab=192.0.2.0/24"]));
    xdp.run(&invite);
    assert_eq!(invites(&xdp, 1), 1);
    let xdp = xdp.reload_with_peers(&peers(&["lab=192.0.2.0/24"]));
    xdp.run(&invite);
    assert_eq!(invites(&xdp, 1), 2, "the same peers: counting goes on");
    let xdp = xdp.reload_with_peers(&peers(&["pbx=192.0.2.1", "lab=192.0.2.0/24"]));
    assert_eq!(xdp.counters().peer_requests.iter().sum::<u64>(), 0, "other peers: afresh");
    xdp.run(&invite);
    assert_eq!((invites(&xdp, 1), invites(&xdp, 2)), (1, 0), "the flow is the pbx's now, not lab's");
    assert_eq!(xdp.counters().requests.iter().sum::<u64>(), 3, "the totals go on throughout");
}
