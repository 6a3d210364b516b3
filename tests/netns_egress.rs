//! `sipflow run --egress`: the server's own answers are seen too. The registrar's
//! Flow-Timer comes from its 2xx, a server that never pongs gives pong_timeout,
//! and the server's own 430 is counted as egress.

use std::{
    collections::HashMap,
    io::Write,
    net::{SocketAddr, TcpListener},
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    peers::{self, TcpServer, connect, exchange},
};

#[test]
fn egress_gives_the_registrars_flow_timer_pong_timeouts_and_outgoing_430s() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("egress");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(
        SERVER_IF,
        &[
            "--egress",
            "--sip-port",
            "5060",
            "--sip-port",
            "5062",
            "--flow-timer",
            "60s",
            "--grace",
            "1s",
            "--pong-timeout",
            "1s",
            "--sweep-interval",
            "200ms",
        ],
    );
    // The registrar on 5060 says Flow-Timer: 2 and pongs; the one on 5062 never pongs.
    let _answering = TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), 2);
    let _mute =
        TcpServer::start_with(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5062)).unwrap()), 2, false);

    let mut answered = connect(&client, 5060);
    let mut unanswered = connect(&client, 5062);
    let names = HashMap::from([
        (answered.local_addr().unwrap().port(), "answered"),
        (unanswered.local_addr().unwrap().port(), "unanswered"),
    ]);
    for (stream, user) in [(&mut answered, "alice"), (&mut unanswered, "bob")] {
        assert!(peers::register(stream, user).starts_with(b"SIP/2.0 200"));
    }
    for _ in 0..2 {
        assert_eq!(exchange(&mut answered, b"\r\n\r\n"), b"\r\n", "pong");
        thread::sleep(Duration::from_millis(300));
    }
    // A 430 for an AOR nobody registered: sipflow had predicted nothing.
    assert!(exchange(&mut answered, &peers::invite_to("nobody", "call-1")).starts_with(b"SIP/2.0 430"));
    let answered_silent_from = Instant::now();
    unanswered.write_all(b"\r\n\r\n").unwrap();
    let unanswered_ping = Instant::now();

    let mut seen: HashMap<&str, (serde_json::Value, Instant)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && seen.len() < 2 {
        let (_, body) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed").expect("GET /flows");
        for f in serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap() {
            let remote: SocketAddr = f["remote"].as_str().unwrap().parse().unwrap();
            if let Some(name) = names.get(&remote.port()) {
                seen.entry(name).or_insert((f, Instant::now()));
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    if seen.len() < 2 {
        let (_, all) = http_get(&server, "http://127.0.0.1:9560/flows").unwrap();
        let (_, m) = http_get(&server, "http://127.0.0.1:9560/metrics").unwrap();
        let m: Vec<&str> = m.lines().filter(|l| l.starts_with("sipflow_") && !l.ends_with(" 0")).collect();
        panic!("verdicts {seen:?}\nflows {all}\nmetrics {m:#?}");
    }
    let (answered_flow, answered_at) = seen.get("answered").expect("a verdict for the client that fell silent");
    let (unanswered_flow, unanswered_at) = seen.get("unanswered").expect("a verdict for the unanswered ping");
    println!(
        "keepalive_timeout after {:.2}s (Flow-Timer 2 from the 2xx + grace 1), pong_timeout after {:.2}s (--pong-timeout 1)",
        answered_at.duration_since(answered_silent_from).as_secs_f64(),
        unanswered_at.duration_since(unanswered_ping).as_secs_f64()
    );
    assert_eq!(answered_flow["reason"], "keepalive_timeout");
    assert_eq!(answered_flow["flow_timer"], 2, "the registrar's Flow-Timer, seen in its 2xx on egress");
    assert_eq!(answered_flow["flow_timer_from_registrar"], true);
    assert_eq!(answered_flow["would_430"], true);
    assert_eq!(unanswered_flow["reason"], "pong_timeout");
    assert_eq!(unanswered_flow["would_430"], true);
    let early = answered_at.duration_since(answered_silent_from).as_secs_f64();
    assert!(early < 10.0, "flagged by the registrar's Flow-Timer (2 s), not the 60 s default");

    // A caller then tries alice, whose flow sipflow flagged: the registrar's 430 was predicted.
    let mut caller = connect(&client, 5060);
    assert!(exchange(&mut caller, &peers::invite_to("alice", "call-2")).starts_with(b"SIP/2.0 430"));
    thread::sleep(Duration::from_millis(500));

    let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").unwrap();
    assert_eq!(metric(&text, "sipflow_430_sent_total", &[("predicted", "true")]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "sipflow_430_sent_total", &[("predicted", "false")]), Some(1.0), "{text}");
    let rtt_samples = metric(&text, "sipflow_keepalive_rtt_seconds_count", &[("transport", "tcp")]).unwrap();
    assert!(rtt_samples >= 1.0, "pongs give RTT samples: {text}");
    println!("RTT histogram (tcp):");
    for line in text.lines().filter(|l| l.starts_with("sipflow_keepalive_rtt_seconds")) {
        println!("  {line}");
    }
    let packets = |direction: &str, class: &str| {
        metric(&text, "sipflow_packets_total", &[("iface", SERVER_IF), ("direction", direction), ("class", class)])
            .unwrap()
    };
    assert!(packets("egress", "keepalive_pong") >= 2.0, "{text}");
    assert_eq!(packets("egress", "sip_response"), 4.0, "two 200s and two 430s leave the server");
    assert_eq!(packets("egress", "keepalive_ping"), 0.0);
    assert_eq!(metric(&text, "sipflow_responses_total", &[("code", "430")]), Some(2.0));
    assert_eq!(metric(&text, "sipflow_flow_failures_total", &[("reason", "pong_timeout")]), Some(1.0));

    // SIGTERM detaches both programs.
    let agent = lab.spawned().first_mut().expect("agent");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    let tc =
        std::process::Command::new("ip").args(["netns", "exec", &server, "bpftool", "net", "show"]).output().unwrap();
    let tc = String::from_utf8_lossy(&tc.stdout);
    assert!(!tc.contains("sipflow"), "nothing of sipflow left attached: {tc}");
}
