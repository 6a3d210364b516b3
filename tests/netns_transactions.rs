//! Transaction KPIs on real calls: sipp callers and callees whose outcomes are
//! known (answered, 486, 503, never answered), and calls from a phone behind
//! a lossy access link, with sipflow on the callees' interface seeing both
//! directions and tshark capturing the same interface as the referee for
//! retransmissions and response times.
//!
//! The kernel here has no netem (CONFIG_NET_SCH_NETEM is off, as are all
//! qdiscs), so the lossy link is made with nftables in the access router:
//! 30 % of the answers on their way to the phone are dropped at random after
//! they passed the monitored interface, and the phone sends its requests again.

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{CLIENT_V4, Lab, PHONE_V4, SERVER_IF, SERVER_V4, http_get, metric},
    scratch_dir::ScratchDir,
    sipp,
    tshark::{self, Capture, Transacted},
};

const METRICS: &str = "http://127.0.0.1:9560/metrics";
/// Callee ports, one per outcome.
const ANSWER: u16 = 5060;
const BUSY: u16 = 5070;
const DOWN: u16 = 5080;
const SILENT: u16 = 5090;
const OFFICE: &str = "office";
const PHONES: &str = "phones";

/// The peer a message's client is in: requests come from it, answers go to it.
fn peer_of(address: &str) -> &'static str {
    if address.starts_with("198.51.100.") { PHONES } else { OFFICE }
}

#[test]
fn transaction_times_retransmissions_and_outcomes_match_the_wire() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("txn");
    let phone = lab.add_phone();
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let work = ScratchDir::new(&format!("sipflow-txn-{}", std::process::id()));
    lossy_toward_phone(&client);

    // The refusing callee's scenario is a template: sipp checks status codes as it reads the file.
    let template = std::fs::read_to_string(sipp::scenario("refuse.xml")).expect("refuse.xml");
    let refuse = |status: &str| {
        let path = work.path().join(format!("refuse-{}.xml", &status[..3]));
        std::fs::write(&path, template.replace("STATUS_LINE", status)).expect("write the scenario");
        path.to_string_lossy().into_owned()
    };
    let callee = |lab: &mut Lab, port: u16, scenario: String| {
        lab.spawn(&server, "sipp", &["-sf", &scenario, "-i", SERVER_V4, "-p", &port.to_string(), "-nostdin"]);
    };
    callee(&mut lab, ANSWER, sipp::scenario("answer_after_ringing.xml").to_string_lossy().into_owned());
    callee(&mut lab, BUSY, refuse("486 Busy Here"));
    callee(&mut lab, DOWN, refuse("503 Service Unavailable"));
    callee(&mut lab, SILENT, sipp::scenario("never_answer.xml").to_string_lossy().into_owned());
    for port in [ANSWER, BUSY, DOWN, SILENT] {
        await_udp_listener(&server, port);
    }
    let ports: Vec<String> = [ANSWER, BUSY, DOWN, SILENT].iter().map(u16::to_string).collect();
    let mut args = vec!["--transactions", "--peer", "office=192.0.2.0/24", "--peer", "phones=198.51.100.0/24"];
    for port in &ports {
        args.extend(["--sip-port", port.as_str()]);
    }
    lab.start_agent(SERVER_IF, &args);
    let mut capture = Capture::start(&server, SERVER_IF, &work.path().join("txn.pcap"));

    // The INVITE nobody answers: sipp gives up after 3 resends (7.5 s); sipflow
    // at Timer B, 32 s after the first.
    let silent_started = Instant::now();
    let silent = caller(&client, CLIENT_V4, 5071, SILENT, 1, &["-max_invite_retrans", "3"], work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    let answered = run(caller(&client, CLIENT_V4, 5061, ANSWER, 5, &[], work.path()));
    assert_eq!(sipp::final_statistic(&answered, "Successful call"), 5, "{answered}");
    let busy = run(caller(&client, CLIENT_V4, 5062, BUSY, 3, &[], work.path()));
    assert_eq!(sipp::final_statistic(&busy, "Successful call"), 3, "{busy}");
    let down = run(caller(&client, CLIENT_V4, 5063, DOWN, 2, &[], work.path()));
    assert_eq!(sipp::final_statistic(&down, "Successful call"), 2, "{down}");
    // Through the lossy link: each request is resent up to 4 times.
    let resends = ["-max_invite_retrans", "4", "-max_non_invite_retrans", "4"];
    let lossy = run(caller(&phone, PHONE_V4, 5064, ANSWER, 20, &resends, work.path()));
    eprintln!("phone: {} of 20 calls completed", sipp::final_statistic(&lossy, "Successful call"));

    let mut silent = silent;
    let _ = silent.wait();
    let timer_b = Duration::from_secs(33);
    thread::sleep(timer_b.saturating_sub(silent_started.elapsed()));
    // Stragglers (a callee's last resent 200) are not what is compared, but the capture waits for them.
    thread::sleep(Duration::from_millis(500));
    capture.stop();
    thread::sleep(Duration::from_millis(500));
    let (status, text) = http_get(&server, METRICS).expect("scrape /metrics");
    assert_eq!(status, 200);
    let wire = tshark::transacted(&capture.path);
    // For a closer look: SIPFLOW_LAB_PCAP=/path keeps the capture.
    if let Some(keep) = std::env::var_os("SIPFLOW_LAB_PCAP") {
        let _ = std::fs::copy(&capture.path, keep);
    }

    // Outcomes known in advance, from the office.
    let invites = |outcome: &str, peer: &str| {
        metric(&text, "sipflow_invites_total", &[("outcome", outcome), ("peer", peer)]).unwrap_or(0.0)
    };
    for (outcome, expected) in
        [("answered", 5.0), ("user_busy", 3.0), ("failed", 2.0), ("timed_out", 1.0), ("no_answer", 0.0)]
    {
        assert_eq!(invites(outcome, OFFICE), expected, "{outcome}:\n{text}");
    }

    // The phone's outcomes, resends and times, against tshark's reading of the same wire.
    let phone_answered = wire
        .iter()
        .filter(|m| first_final(m) && m.cseq_method == "INVITE" && peer_of(&m.destination) == PHONES)
        .filter(|m| m.code.is_some_and(|c| (200..300).contains(&c)))
        .count();
    assert_eq!(invites("answered", PHONES), phone_answered as f64, "{text}");
    assert!(phone_answered > 0, "some of the phone's calls got through");

    let resent = resent_requests(&wire);
    assert!(resent.get(&("INVITE".into(), OFFICE)).is_some_and(|n| *n >= 3), "the silent INVITE's resends: {resent:?}");
    assert!(resent.keys().any(|(_, peer)| *peer == PHONES), "the lossy link made the phone resend: {resent:?}");
    for method in ["INVITE", "BYE"] {
        for peer in [OFFICE, PHONES] {
            let counted = metric(&text, "sipflow_retransmissions_total", &[("method", method), ("peer", peer)]);
            let on_wire = resent.get(&(method.to_string(), peer)).copied().unwrap_or(0);
            assert_eq!(counted.unwrap_or(0.0), on_wire as f64, "{method} resent by {peer}");
        }
    }

    for ((method, peer), (count, sum_ms)) in response_times(&wire) {
        let labels = [("method", method.as_str()), ("peer", peer)];
        let counted = metric(&text, "sipflow_transaction_seconds_count", &labels).unwrap_or(0.0);
        assert_eq!(counted, count as f64, "{method} {peer}: transactions timed\n{text}");
        let sum_s = metric(&text, "sipflow_transaction_seconds_sum", &labels).expect("a sum");
        // tshark truncates each time to whole milliseconds; the two stamp the
        // same packets at points microseconds apart.
        let slack_ms = 1.5 * count as f64;
        let diff_ms = (sum_s * 1000.0 - sum_ms as f64).abs();
        assert!(diff_ms <= slack_ms, "{method} {peer}: sipflow {sum_s} s, tshark {sum_ms} ms over {count}");
        eprintln!("{method} {peer}: {count} transactions, sipflow {:.1} ms, tshark {sum_ms} ms", sum_s * 1000.0);
    }
    assert_eq!(
        metric(&text, "sipflow_transaction_seconds_count", &[("method", "INVITE"), ("peer", OFFICE)]),
        Some(10.0)
    );
}

/// A response that is the first final one of its transaction (not a resend).
fn first_final(m: &Transacted) -> bool {
    m.code.is_some_and(|c| c >= 200) && !m.resend
}

/// Requests tshark took for resends, by method and the client's peer, where
/// the top Via's branch is the original's: the same Call-ID and `CSeq` on a new
/// branch is a new transaction (RFC 3261 §17.2.3; sipp sends such a BYE when it
/// gives a call up). ACK opens no transaction and sipflow does not count it.
fn resent_requests(wire: &[Transacted]) -> BTreeMap<(String, &'static str), u64> {
    let branches: BTreeMap<u64, &str> = wire.iter().map(|m| (m.frame, m.branch.as_str())).collect();
    let same_branch = |m: &Transacted| m.resend_of.and_then(|f| branches.get(&f)).is_some_and(|b| *b == m.branch);
    let mut resent = BTreeMap::new();
    for m in wire.iter().filter(|m| m.resend && m.code.is_none() && same_branch(m)) {
        if let Some(method) = m.method.as_ref().filter(|m| *m != "ACK") {
            *resent.entry((method.clone(), peer_of(&m.source))).or_default() += 1;
        }
    }
    resent
}

/// tshark's response times of the first final answers: count and sum in ms,
/// by `CSeq` method and the client's peer.
fn response_times(wire: &[Transacted]) -> BTreeMap<(String, &'static str), (u64, u64)> {
    let mut times: BTreeMap<(String, &'static str), (u64, u64)> = BTreeMap::new();
    for m in wire.iter().filter(|m| first_final(m)) {
        if let Some(ms) = m.response_ms {
            let entry = times.entry((m.cseq_method.clone(), peer_of(&m.destination))).or_default();
            entry.0 += 1;
            entry.1 += ms;
        }
    }
    times
}

/// A sipp caller in `namespace` from `ip:port`, `calls` calls to the callee on `callee_port`.
fn caller(namespace: &str, ip: &str, port: u16, callee_port: u16, calls: u32, extra: &[&str], work: &Path) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace, "sipp", &format!("{SERVER_V4}:{callee_port}"), "-sf"])
        .arg(sipp::scenario("call_outcome.xml"))
        .args(["-t", "u1", "-i", ip, "-p", &port.to_string(), "-nostdin"])
        .args(["-m", &calls.to_string(), "-r", "10", "-timeout", "60s"])
        .args(extra)
        .current_dir(work)
        .stdin(Stdio::null());
    command
}

fn run(mut command: Command) -> String {
    let Output { stdout, stderr, .. } = command.output().expect("run sipp (package sip-tester)");
    format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr))
}

/// Waits until something listens on UDP `port` in `namespace`.
fn await_udp_listener(namespace: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["netns", "exec", namespace, "ss", "-Hulpn", &format!("sport = :{port}")])
            .output()
            .expect("run ss (package iproute2)");
        if !out.stdout.is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on UDP {port} in {namespace} after 10 s");
}

/// Drops 30 % of the SIP answers the access router forwards to the phone.
fn lossy_toward_phone(router: &str) {
    let rules = format!(
        "table inet sipflow_lossy {{\n  chain forward {{\n    type filter hook forward priority 0;\n    \
         ip daddr {PHONE_V4} udp sport {ANSWER} numgen random mod 100 < 30 drop\n  }}\n}}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", router, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft (package nftables)");
    nft.stdin.take().expect("piped stdin").write_all(rules.as_bytes()).expect("write the rules");
    assert!(nft.wait().expect("wait for nft").success(), "nft could not make the lossy link");
}
