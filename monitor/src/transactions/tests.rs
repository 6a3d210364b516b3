use monitor_common::{
    counters::{Direction, Method},
    flow::{FlowKey, FlowTransport},
};

use super::{HEADS_LATE_NS, InviteOutcome, Kpi, MAX_ANSWERED_KEPT, MAX_OPEN, RINGING_NS, TIMER_B_NS, Transactions};
use crate::{kernel::head_events::Head, sip_head};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn key(transport: FlowTransport, client_port: u16) -> FlowKey {
    FlowKey {
        server_addr: [192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        client_addr: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        server_port: 5060,
        client_port,
        vlan_id: 0,
        family: 4,
        transport: transport as u8,
    }
}

fn request(method: &str, call_id: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch={branch}\r\n\
         From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn response(code: u16, method: &str, call_id: &str, cseq: u32, branch: &str) -> String {
    format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch={branch}\r\n\
         From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A head as the kernel sends it; `from_client` as the text's sender.
fn head(key: FlowKey, at: u64, from_client: bool, text: &str) -> Head {
    Head {
        key,
        timestamp_ns: at,
        direction: Direction::Ingress,
        from_client,
        bytes: text.as_bytes().to_vec(),
        cut: false,
        retransmission: false,
    }
}

fn take(t: &mut Transactions, head: &Head) -> Vec<Kpi> {
    t.on_head(0, head, &sip_head::parse(&head.bytes).unwrap(), 1)
}

fn udp() -> FlowKey {
    key(FlowTransport::Udp, 5062)
}

/// The same ports, another client.
fn elsewhere() -> FlowKey {
    let mut other = udp();
    other.client_addr[3] = 9;
    other
}

#[test]
fn a_request_and_its_final_answer_give_one_time() {
    let mut t = Transactions::default();
    assert!(take(&mut t, &head(udp(), S, true, &request("OPTIONS", "c1", 1, "z9hG4bK1"))).is_empty());
    assert!(take(&mut t, &head(udp(), S + 20 * MS, false, &response(100, "OPTIONS", "c1", 1, "z9hG4bK1"))).is_empty());
    let kpis = take(&mut t, &head(udp(), S + 40 * MS, false, &response(200, "OPTIONS", "c1", 1, "z9hG4bK1")));
    assert_eq!(kpis, vec![Kpi::Answered { method: Method::Options, peer: 1, seconds: 0.04 }]);
    // The server resends its 200 (the first was lost past us): no second sample.
    assert!(take(&mut t, &head(udp(), S + 90 * MS, false, &response(200, "OPTIONS", "c1", 1, "z9hG4bK1"))).is_empty());
}

#[test]
fn an_invite_gives_its_time_and_its_outcome() {
    for (code, outcome) in [
        (200, InviteOutcome::Answered),
        (486, InviteOutcome::UserBusy),
        (503, InviteOutcome::Failed),
        (302, InviteOutcome::Redirected),
    ] {
        let mut t = Transactions::default();
        take(&mut t, &head(udp(), S, true, &request("INVITE", "c1", 1, "z9hG4bK1")));
        take(&mut t, &head(udp(), 2 * S, false, &response(180, "INVITE", "c1", 1, "z9hG4bK1")));
        let kpis = take(&mut t, &head(udp(), 5 * S, false, &response(code, "INVITE", "c1", 1, "z9hG4bK1")));
        assert_eq!(
            kpis,
            vec![Kpi::Answered { method: Method::Invite, peer: 1, seconds: 4.0 }, Kpi::Invite { outcome, peer: 1 }]
        );
    }
}

#[test]
fn answers_that_do_not_match_pair_with_nothing() {
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &request("INVITE", "c1", 1, "z9hG4bK1")));
    let forged = [
        // Sent back by the requester's own end: a client cannot answer itself.
        head(udp(), 2 * S, true, &response(200, "INVITE", "c1", 1, "z9hG4bK1")),
        // Another branch, Call-ID, CSeq number or method: another transaction.
        head(udp(), 2 * S, false, &response(200, "INVITE", "c1", 1, "z9hG4bK2")),
        head(udp(), 2 * S, false, &response(200, "INVITE", "c2", 1, "z9hG4bK1")),
        head(udp(), 2 * S, false, &response(200, "INVITE", "c1", 2, "z9hG4bK1")),
        head(udp(), 2 * S, false, &response(200, "CANCEL", "c1", 1, "z9hG4bK1")),
        // The same answer to another client.
        head(elsewhere(), 2 * S, false, &response(200, "INVITE", "c1", 1, "z9hG4bK1")),
    ];
    for h in &forged {
        assert!(take(&mut t, h).is_empty(), "{}", String::from_utf8_lossy(&h.bytes));
    }
    // On another interface the same flow is another flow.
    let real = head(udp(), 3 * S, false, &response(486, "INVITE", "c1", 1, "z9hG4bK1"));
    assert!(t.on_head(1, &real, &sip_head::parse(&real.bytes).unwrap(), 1).is_empty());
    assert_eq!(take(&mut t, &real).len(), 2, "the true answer still pairs");
}

#[test]
fn a_request_sent_again_is_a_retransmission() {
    let mut t = Transactions::default();
    let invite = request("INVITE", "c1", 1, "z9hG4bK1");
    take(&mut t, &head(udp(), S, true, &invite));
    let again = take(&mut t, &head(udp(), S + 500 * MS, true, &invite));
    assert_eq!(again, vec![Kpi::Retransmission { method: Method::Invite, peer: 1 }]);
    // Its time runs from the first sending, as tshark's does.
    let kpis = take(&mut t, &head(udp(), 2 * S, false, &response(200, "INVITE", "c1", 1, "z9hG4bK1")));
    assert_eq!(kpis[0], Kpi::Answered { method: Method::Invite, peer: 1, seconds: 1.0 });
    // Over UDP its answer may be lost past us: a resend after it is still one.
    let late = take(&mut t, &head(udp(), 3 * S, true, &invite));
    assert_eq!(late, vec![Kpi::Retransmission { method: Method::Invite, peer: 1 }]);

    // The same Call-ID and CSeq with a new branch is a new request (a proxy's
    // retry after a 503, RFC 3261 §16.7), not a retransmission.
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &invite));
    assert!(take(&mut t, &head(udp(), S, true, &request("INVITE", "c1", 1, "z9hG4bK9"))).is_empty());

    // TCP: the kernel marks the segment it saw before.
    let tcp = key(FlowTransport::Tcp, 40000);
    let repeat = Head { retransmission: true, ..head(tcp, S, true, &request("BYE", "c1", 2, "z9hG4bK3")) };
    assert_eq!(take(&mut t, &repeat), vec![Kpi::Retransmission { method: Method::Bye, peer: 1 }]);
}

#[test]
fn an_invite_unanswered_times_out_at_timer_b_or_after_ringing_at_timer_c() {
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &request("INVITE", "silent", 1, "z9hG4bK1")));
    take(&mut t, &head(udp(), S, true, &request("INVITE", "ringing", 1, "z9hG4bK2")));
    take(&mut t, &head(udp(), 2 * S, false, &response(180, "INVITE", "ringing", 1, "z9hG4bK2")));
    take(&mut t, &head(udp(), S, true, &request("OPTIONS", "o", 1, "z9hG4bK3")));
    // Judged a little after the deadline: a head stamped before it may still be on its way.
    assert_eq!(t.next_due(), Some(S + TIMER_B_NS + HEADS_LATE_NS));
    assert!(t.expire(S + TIMER_B_NS + HEADS_LATE_NS - 1).is_empty());
    assert_eq!(
        t.expire(S + TIMER_B_NS + HEADS_LATE_NS),
        vec![Kpi::Invite { outcome: InviteOutcome::TimedOut, peer: 1 }]
    );
    assert_eq!(t.len(), 1, "the ringing INVITE waits on");
    // Each provisional restarts Timer C, and a flood of them queues nothing more.
    for at in 3..100 {
        take(&mut t, &head(udp(), at * S, false, &response(183, "INVITE", "ringing", 1, "z9hG4bK2")));
    }
    assert!(t.due.len() <= 3, "{}", t.due.len());
    assert!(t.expire(99 * S + RINGING_NS + HEADS_LATE_NS - 1).is_empty());
    assert_eq!(
        t.expire(99 * S + RINGING_NS + HEADS_LATE_NS),
        vec![Kpi::Invite { outcome: InviteOutcome::TimedOut, peer: 1 }]
    );
    assert!(t.is_empty());
}

#[test]
fn a_100_trying_stops_timer_b_and_a_late_head_still_counts() {
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &request("INVITE", "c1", 1, "z9hG4bK1")));
    take(&mut t, &head(udp(), S, false, &response(100, "INVITE", "c1", 1, "z9hG4bK1")));
    assert!(t.expire(S + TIMER_B_NS + HEADS_LATE_NS).is_empty(), "a proxy's Timer C runs past Timer B");
    let kpis = take(&mut t, &head(udp(), 41 * S, false, &response(200, "INVITE", "c1", 1, "z9hG4bK1")));
    assert_eq!(kpis[1], Kpi::Invite { outcome: InviteOutcome::Answered, peer: 1 });

    // An answer stamped just before Timer B, reaching the engine after it.
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &request("INVITE", "c2", 1, "z9hG4bK2")));
    assert!(t.expire(S + TIMER_B_NS + HEADS_LATE_NS / 2).is_empty());
    let kpis = take(&mut t, &head(udp(), S + TIMER_B_NS - 1, false, &response(408, "INVITE", "c2", 1, "z9hG4bK2")));
    assert_eq!(kpis[1], Kpi::Invite { outcome: InviteOutcome::Failed, peer: 1 });
}

#[test]
fn only_an_invite_outside_a_dialog_has_a_call_outcome() {
    let mut t = Transactions::default();
    let reinvite =
        request("INVITE", "c1", 2, "z9hG4bK7").replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=b");
    take(&mut t, &head(udp(), S, true, &reinvite));
    let kpis = take(&mut t, &head(udp(), 2 * S, false, &response(491, "INVITE", "c1", 2, "z9hG4bK7")));
    assert_eq!(kpis, vec![Kpi::Answered { method: Method::Invite, peer: 1, seconds: 1.0 }], "a time, no outcome");
    take(&mut t, &head(udp(), 3 * S, true, &reinvite.replace("z9hG4bK7", "z9hG4bK8")));
    assert!(t.expire(3 * S + TIMER_B_NS + HEADS_LATE_NS).is_empty(), "an unanswered re-INVITE is no failed call");
    // A challenge is no failure (RFC 6076 §4.4): the caller sends the INVITE again.
    take(&mut t, &head(udp(), S, true, &request("INVITE", "c2", 1, "z9hG4bK9")));
    let kpis = take(&mut t, &head(udp(), S, false, &response(407, "INVITE", "c2", 1, "z9hG4bK9")));
    assert_eq!(kpis[1], Kpi::Invite { outcome: InviteOutcome::Challenged, peer: 1 });
}

#[test]
fn over_udp_the_answer_may_come_back_to_another_port() {
    // A UA sending from an ephemeral port without rport is answered at its Via's port (RFC 3261 §18.2.2).
    let mut t = Transactions::default();
    take(&mut t, &head(key(FlowTransport::Udp, 40123), S, true, &request("OPTIONS", "c1", 1, "z9hG4bK1")));
    let kpis = take(&mut t, &head(udp(), 2 * S, false, &response(200, "OPTIONS", "c1", 1, "z9hG4bK1")));
    assert_eq!(kpis.len(), 1);
    // Over TCP a connection is the flow.
    take(&mut t, &head(key(FlowTransport::Tcp, 40123), S, true, &request("OPTIONS", "c2", 1, "z9hG4bK2")));
    assert!(
        take(&mut t, &head(key(FlowTransport::Tcp, 40124), S, false, &response(200, "OPTIONS", "c2", 1, "z9hG4bK2")))
            .is_empty()
    );
}

#[test]
fn answered_transactions_are_forgotten_over_tcp_at_once_and_over_udp_at_timer_b() {
    let mut t = Transactions::default();
    let tcp = key(FlowTransport::Tcp, 40000);
    take(&mut t, &head(tcp, S, true, &request("REGISTER", "r", 1, "z9hG4bK1")));
    take(&mut t, &head(tcp, S, false, &response(200, "REGISTER", "r", 1, "z9hG4bK1")));
    assert!(t.is_empty());
    take(&mut t, &head(udp(), S, true, &request("REGISTER", "r", 1, "z9hG4bK1")));
    take(&mut t, &head(udp(), S, false, &response(200, "REGISTER", "r", 1, "z9hG4bK1")));
    assert_eq!(t.len(), 1);
    assert!(t.expire(S + TIMER_B_NS + HEADS_LATE_NS).is_empty(), "answered: no outcome at expiry");
    assert!(t.is_empty());

    // An INVITE that rang for a minute before its answer is not kept for Timer C.
    take(&mut t, &head(udp(), S, true, &request("INVITE", "i", 1, "z9hG4bK2")));
    take(&mut t, &head(udp(), 2 * S, false, &response(180, "INVITE", "i", 1, "z9hG4bK2")));
    take(&mut t, &head(udp(), 61 * S, false, &response(200, "INVITE", "i", 1, "z9hG4bK2")));
    assert_eq!(t.len(), 1);
    assert!(t.expire(61 * S + HEADS_LATE_NS).is_empty());
    assert!(t.is_empty(), "forgotten once answered and past Timer B");
}

#[test]
fn the_queue_sheds_the_entries_of_transactions_answered_over_tcp() {
    let mut t = Transactions::default();
    let tcp = key(FlowTransport::Tcp, 40000);
    for i in 0..20_000 {
        let call = format!("c{i}");
        take(&mut t, &head(tcp, S, true, &request("OPTIONS", &call, 1, "z9hG4bK1")));
        take(&mut t, &head(tcp, S, false, &response(200, "OPTIONS", &call, 1, "z9hG4bK1")));
    }
    assert!(t.is_empty());
    assert!(t.due.len() <= 4097, "{}", t.due.len());
}

#[test]
fn a_flood_of_unanswered_requests_is_bounded_and_counted() {
    let mut t = Transactions::default();
    for i in 0..MAX_OPEN + 10 {
        take(&mut t, &head(udp(), S, true, &request("OPTIONS", &format!("scan-{i}"), 1, "z9hG4bK1")));
    }
    assert_eq!((t.len(), t.untracked), (MAX_OPEN, 10));
}

#[test]
fn answered_udp_requests_kept_for_their_resends_crowd_out_no_new_one() {
    let mut t = Transactions::default();
    for i in 0..MAX_ANSWERED_KEPT + 10 {
        let call = format!("c{i}");
        take(&mut t, &head(udp(), S, true, &request("OPTIONS", &call, 1, "z9hG4bK1")));
        take(&mut t, &head(udp(), S, false, &response(200, "OPTIONS", &call, 1, "z9hG4bK1")));
    }
    assert_eq!((t.len(), t.untracked), (MAX_ANSWERED_KEPT, 0), "the ten past the cap forgotten once answered");
    take(&mut t, &head(udp(), 2 * S, true, &request("INVITE", "new", 1, "z9hG4bK2")));
    let kpis = take(&mut t, &head(udp(), 3 * S, false, &response(200, "INVITE", "new", 1, "z9hG4bK2")));
    assert_eq!(kpis.len(), 2, "a new request is still paired");
    assert!(t.expire(3 * S + TIMER_B_NS + HEADS_LATE_NS).is_empty());
    assert!(t.is_empty());
    assert_eq!(t.answered_kept, 0);
}

#[test]
fn acks_and_heads_without_call_id_or_cseq_open_nothing() {
    let mut t = Transactions::default();
    take(&mut t, &head(udp(), S, true, &request("ACK", "c1", 1, "z9hG4bK1")));
    let no_cseq = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n";
    take(&mut t, &head(udp(), S, true, no_cseq));
    let mismatched = request("OPTIONS", "c1", 1, "z9hG4bK1").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    take(&mut t, &head(udp(), S, true, &mismatched));
    assert!(t.is_empty());
}
