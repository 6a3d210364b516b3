//! The real-peer lab (tests/src/edge_lab.rs): Kamailio as an RFC 5626 edge
//! proxy answers 430 for the flows that broke; sipflow must have flagged each of
//! them before the 430 went out (a UA killed and registered again at once, a
//! zombie flow under a 4 s transaction timer), must flag no live flow, and must
//! count the SIP on the interface exactly as tshark does.

use sipflow_tests::edge_lab::{self, BROKEN, LIVE, REAL_UA, REDIRECT, RESTARTED, TLS_ZOMBIE, WS_ZOMBIE, ZOMBIE};

#[test]
fn kamailio_430s_were_predicted_and_counts_match_tshark() {
    sipflow_tests::root_or_skip!();
    let outcome = edge_lab::run("kam", &mut |line| eprintln!("{line}"));
    let context = || {
        format!(
            "flagged {:#?}\n430s {:?}\nflows {}\nkamailio log (tail):\n{}",
            outcome.flagged,
            outcome.answers_430,
            outcome.flows,
            outcome.kamailio_log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
        )
    };
    assert_eq!(outcome.caller_ok, [true, true], "every call got a final answer it expected\n{}", context());

    // Kamailio answered 430 for every broken AOR, once per round, and only for
    // them; and once more for the zombie's and the restarted UA's requests
    // during the break, the TLS zombie's too.
    let mut got_430: Vec<&str> = outcome.answers_430.iter().map(|(_, aor)| aor.as_str()).collect();
    got_430.sort();
    // The TLS zombie is left out of the caller's rounds (see edge_lab).
    let rounds = BROKEN.iter().copied().filter(|a| *a != TLS_ZOMBIE);
    let mut want: Vec<&str> = rounds.clone().chain(rounds).chain([ZOMBIE, RESTARTED, TLS_ZOMBIE, WS_ZOMBIE]).collect();
    want.sort();
    assert_eq!(got_430, want, "{}", context());

    // sipflow had flagged each of those flows, as would warrant 430, before the 430.
    assert_eq!(edge_lab::unpredicted_430s(&outcome), Vec::<String>::new(), "{}", context());
    for (aor, reason) in [
        ("carol", "tcp_fin"),
        ("dave", "tcp_reset"),
        ("erin", "keepalive_timeout"),
        ("frank", "keepalive_timeout"),
        (ZOMBIE, "tcp_unacked"),
        (RESTARTED, "tcp_fin"),
        // Over TLS: the bindings, pings and pongs read from Kamailio's libssl.
        ("tom", "tcp_fin"),
        ("tara", "tcp_reset"),
        ("toni", "keepalive_timeout"),
        (TLS_ZOMBIE, "tcp_unacked"),
        // Over WebSocket: frames read by the kernel (ws) and from libssl (wss).
        ("wendy", "tcp_fin"),
        ("wes", "tcp_reset"),
        (WS_ZOMBIE, "tcp_unacked"),
        ("wynn", "keepalive_timeout"),
    ] {
        assert_eq!(outcome.flagged[aor].reason, reason, "{aor}\n{}", context());
    }
    // Each failed flow carries its client's network: the office LAN, or the phones behind it.
    for aor in ["carol", "dave", RESTARTED, "tom", "tara", "wendy", "wes"] {
        assert_eq!(outcome.flagged[aor].peer, "office", "{aor}\n{}", context());
    }
    for aor in ["erin", "frank", ZOMBIE, "toni", TLS_ZOMBIE, WS_ZOMBIE, "wynn"] {
        assert_eq!(outcome.flagged[aor].peer, "phones", "{aor}\n{}", context());
    }
    for (aor, at) in edge_lab::leads_over_430(&outcome) {
        eprintln!("{aor:<5} flagged {at:.3} s before Kamailio's 430");
    }

    // The restarted UA: its dead flow flagged, its new one never.
    let (before, after) = &outcome.restarted_flows;
    assert_eq!(&outcome.flagged[RESTARTED].remote, before, "{}", context());
    assert!(!outcome.flagged_flows.contains(after), "gus's new flow {after} was flagged\n{}", context());

    // No live flow flagged; the live UAs got their INVITE and MESSAGE.
    for aor in LIVE {
        if aor != RESTARTED {
            assert!(!outcome.flagged.contains_key(aor), "{aor} was flagged\n{}", context());
        }
        let delivered = &outcome.delivered[aor];
        for method in ["INVITE", "MESSAGE"] {
            assert!(delivered.iter().any(|l| l.starts_with(method)), "{aor} got no {method}: {delivered:?}");
        }
    }

    // baresip, idle over TCP (it pings every 16-20 s, not every Flow-Timer): never flagged.
    assert!(!outcome.flagged.contains_key(REAL_UA), "{REAL_UA} (baresip) was flagged\n{}", context());
    let heidi = outcome.flow_of(REAL_UA).unwrap_or_else(|| panic!("no flow for {REAL_UA}\n{}", outcome.real_ua_log));
    assert_ne!(heidi["state"], "failed", "{heidi}");

    // The same SIP, counted by sipflow in the kernel and by tshark from a capture.
    // A message still on its way while the capture stops (a retransmission)
    // is counted by sipflow after it: tshark's counts, by method and by code,
    // lie between sipflow's just before and just after, and so equal them
    // exactly when nothing moved meanwhile.
    assert_eq!(edge_lab::counts_outside_capture(&outcome), Vec::<String>::new(), "{}", context());
    for code in [300, 430] {
        assert!(outcome.tshark.responses.get(&code).copied().unwrap_or(0) >= 2, "{code} in both rounds ({REDIRECT})");
    }
    for transport in ["udp", "tcp", "tls"] {
        assert!(outcome.tshark.by_transport.get(transport).copied().unwrap_or(0) > 0, "SIP over {transport}");
    }
    // sipflow graded each 430 the host sent against its own earlier verdicts.
    assert!(outcome.metrics.contains("sipflow_430_sent_total{predicted=\"false\"} 0"), "{}", outcome.metrics);
}
