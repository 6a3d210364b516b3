//! `--transactions`, through BPF_PROG_TEST_RUN: the head of every request but
//! ACK and of every response goes to the agent, and a request in a TCP
//! segment seen before goes up marked as sent again. Without it only the
//! heads registrations need go up (see kernel_flows).

use monitor_common::counters::{Direction, Method, request_index};
use sipflow_tests::{
    kernel::{LoadedXdp, XDP_PASS},
    packets::*,
};

#[test]
fn every_request_but_ack_and_every_response_goes_up() {
    sipflow_tests::root_or_skip!();
    let from_server = |m: &[u8]| udp4_between((SERVER_V4, SIP_PORT), (CLIENT_V4, CLIENT_PORT), m);
    let to_server = |m: &[u8]| udp4_between((CLIENT_V4, CLIENT_PORT), (SERVER_V4, SIP_PORT), m);
    let ack = b"ACK sip:bob@example.com SIP/2.0\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    let frames = [
        to_server(INVITE),
        from_server(RINGING),
        from_server(MULTIPLE_CHOICES),
        to_server(ack),
        from_server(FLOW_FAILED),
        from_server(RINGING),
    ];
    let mut xdp = LoadedXdp::load_with_transactions();
    xdp.run_all(&frames);
    let heads: Vec<Vec<u8>> = xdp.heads().into_iter().map(|h| h.bytes).collect();
    let expected = [INVITE, RINGING, MULTIPLE_CHOICES, FLOW_FAILED, RINGING].map(<[u8]>::to_vec);
    assert_eq!(heads, expected, "the ACK pairs with nothing and stays a counter");
    assert_eq!(xdp.counters().requests[request_index(Direction::Ingress, Method::Ack) as usize], 1);

    // The same packets without it: only what registrations and 430 grading read.
    let mut xdp = LoadedXdp::load();
    xdp.run_all(&frames);
    let heads: Vec<Vec<u8>> = xdp.heads().into_iter().map(|h| h.bytes).collect();
    assert_eq!(heads, [MULTIPLE_CHOICES, FLOW_FAILED].map(<[u8]>::to_vec));
}

#[test]
fn a_request_in_a_repeated_segment_goes_up_marked_as_sent_again() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load_with_transactions();
    let register =
        tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"REGISTER sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    xdp.run_all(&[register.clone(), register.clone(), register.clone()]);
    let marks: Vec<bool> = xdp.heads().iter().map(|h| h.retransmission).collect();
    assert_eq!(marks, vec![false, true, true], "once to pair, then twice as resends");
    assert_eq!(xdp.counters().requests[request_index(Direction::Ingress, Method::Register) as usize], 1);

    // A response sent again is no request sent again: only its first copy goes up.
    let answer =
        tcp4_from_server(SIP_PORT, CLIENT_PORT, Flags::default(), b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    xdp.run_all(&[answer.clone(), answer]);
    let heads: Vec<(bool, bool)> = xdp.heads().iter().map(|h| (h.from_client, h.retransmission)).collect();
    assert_eq!(heads, vec![(false, false)]);

    // Without --transactions a repeated REGISTER is not sent again at all.
    let mut xdp = LoadedXdp::load();
    xdp.run_all(&[register.clone(), register]);
    assert_eq!(xdp.heads().len(), 1);
}

#[test]
fn every_message_of_a_segment_goes_up_in_order() {
    sipflow_tests::root_or_skip!();
    let mut xdp = LoadedXdp::load_with_transactions();
    let segment = [
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n".as_slice(),
        b"\r\n\r\n",
        REGISTER,
        b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n",
    ]
    .concat();
    assert_eq!(xdp.run(&tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), &segment)), XDP_PASS);
    let starts: Vec<Vec<u8>> =
        xdp.heads().iter().map(|h| h.bytes.split(|b| *b == b' ').next().unwrap().to_vec()).collect();
    assert_eq!(starts, [&b"OPTIONS"[..], b"REGISTER", b"SIP/2.0", b"BYE"]);
}
