//! RFC 5626 verdicts end to end: `sipflow run` on the server's veth, real TCP
//! and UDP clients in the client namespace that register, keep alive, fall
//! silent or die, and /flows read over HTTP until each verdict appears.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, atomic::AtomicBool},
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{CLIENT_IF, CLIENT_V4, Lab, SERVER_IF, SERVER_V4, http_get, sipflow_bin},
    peers::{self, TcpServer, connect},
};

const FLOW_TIMER_S: f64 = 3.0;
const GRACE_S: f64 = 1.0;
const SWEEP_S: f64 = 0.2;
/// The UDP client's own address: in none of the named peers' networks.
const OTHER_CLIENT_V4: &str = "192.0.2.11";

/// Registers and checks the registrar's 200.
fn register(stream: &mut TcpStream, user: &str) {
    let reply = peers::register(stream, user);
    assert!(reply.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&reply));
}

fn ping(stream: &mut TcpStream) {
    stream.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).expect("pong");
}

#[derive(Debug)]
struct Seen {
    reason: String,
    would_430: bool,
    at: Instant,
}

#[test]
fn verdicts_for_silent_killed_and_stopped_clients_and_none_for_a_healthy_one() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("live");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let (timer, grace) = (format!("{FLOW_TIMER_S}s").replace(".0", ""), format!("{GRACE_S}s").replace(".0", ""));
    // The TCP clients are the peer `pbx`; the UDP one is in no named network; `access` sends nothing.
    let pbx = format!("pbx={CLIENT_V4}");
    let named = ["--peer", &pbx, "--peer", "access=198.51.100.0/24,2001:db8:a::/48"];
    let timers: [&str; 6] = ["--flow-timer", &timer, "--grace", &grace, "--sweep-interval", "200ms"];
    lab.start_agent(SERVER_IF, &[&timers[..], &named[..]].concat());
    let added = std::process::Command::new("ip")
        .args(["-n", &client, "addr", "add", &format!("{OTHER_CLIENT_V4}/24"), "dev", CLIENT_IF])
        .status()
        .expect("ip addr add");
    assert!(added.success(), "a second client address");

    let stop = Arc::new(AtomicBool::new(false));
    let _tcp_server = TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), 3);
    peers::udp_server(Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).unwrap()), 3, stop.clone());

    let start = Instant::now();
    let mut silent = connect(&client, 5060);
    let mut killed = connect(&client, 5060);
    let mut closed = connect(&client, 5060);
    let mut healthy = connect(&client, 5060);
    let udp = Lab::in_namespace(&client, || UdpSocket::bind((OTHER_CLIENT_V4, 0)).unwrap());
    let port = |s: &TcpStream| s.local_addr().unwrap().port();
    let ports = HashMap::from([
        (port(&silent), "silent"),
        (port(&killed), "killed"),
        (port(&closed), "closed"),
        (port(&healthy), "healthy"),
        (udp.local_addr().unwrap().port(), "udp"),
    ]);
    for (stream, user) in [(&mut silent, "alice"), (&mut killed, "bob"), (&mut closed, "carol"), (&mut healthy, "erin")]
    {
        register(stream, user);
    }
    let udp_local: SocketAddr = udp.local_addr().unwrap();
    udp.send_to(&peers::outbound_register("dave", "UDP", udp_local, "dave", "dave-reg"), (SERVER_V4, 5060)).unwrap();

    // Keepalives for 2.5 s; then the silent client stops, the killed one is reset,
    // the closed one sends a FIN, the UDP one stops its STUN; the healthy one goes on.
    let mut last_silent_ping = start;
    let mut last_udp_stun = start;
    let mut tick = 0u32;
    while start.elapsed() < Duration::from_millis(2500) {
        ping(&mut silent);
        last_silent_ping = Instant::now();
        ping(&mut healthy);
        udp.send_to(&peers::stun_binding_request(tick), (SERVER_V4, 5060)).unwrap();
        last_udp_stun = Instant::now();
        tick += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let killed_at = Instant::now();
    peers::reset(killed);
    peers::finish(&closed);
    let closed_at = Instant::now();

    let mut seen: HashMap<&str, Seen> = HashMap::new();
    let deadline = last_silent_ping + Duration::from_secs_f64(FLOW_TIMER_S + GRACE_S + 4.0);
    let mut next_ping = Instant::now();
    while Instant::now() < deadline && seen.len() < 4 {
        if Instant::now() >= next_ping {
            ping(&mut healthy);
            next_ping = Instant::now() + Duration::from_millis(500);
        }
        let (_, body) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed").expect("GET /flows");
        let flows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
        for f in flows {
            let remote: SocketAddr = f["remote"].as_str().unwrap().parse().unwrap();
            if let Some(name) = ports.get(&remote.port()) {
                seen.entry(name).or_insert_with(|| Seen {
                    reason: f["reason"].as_str().unwrap().to_string(),
                    would_430: f["would_430"].as_bool().unwrap(),
                    at: Instant::now(),
                });
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let delay = |name: &str, since: Instant| seen[name].at.duration_since(since).as_secs_f64();
    println!("verdict delays (s), measured from the failure:");
    for (name, since) in
        [("silent", last_silent_ping), ("killed", killed_at), ("closed", closed_at), ("udp", last_udp_stun)]
    {
        if seen.contains_key(name) {
            println!(
                "  {name:<7} {:<17} {:.2} would_430={}",
                seen[name].reason,
                delay(name, since),
                seen[name].would_430
            );
        }
    }
    assert!(!seen.contains_key("healthy"), "a client that keeps pinging is never flagged: {seen:?}");
    for (name, reason) in
        [("silent", "keepalive_timeout"), ("killed", "tcp_reset"), ("closed", "tcp_fin"), ("udp", "keepalive_timeout")]
    {
        let s = seen.get(name).unwrap_or_else(|| panic!("no verdict for the {name} client: {seen:?}"));
        assert_eq!(s.reason, reason, "{name}");
        assert!(s.would_430, "{name}: a registered flow that failed would warrant 430");
    }
    // Never before Flow-Timer + grace; within it plus one sweep (and the 100 ms poll), with slack for a busy machine.
    let limit = FLOW_TIMER_S + GRACE_S;
    for (name, since) in [("silent", last_silent_ping), ("udp", last_udp_stun)] {
        let d = delay(name, since);
        assert!(d >= limit - 0.05, "{name} flagged early: {d:.2}s");
        assert!(d <= limit + SWEEP_S + 1.5, "{name} flagged late: {d:.2}s");
    }
    assert!(delay("killed", killed_at) <= SWEEP_S + 1.5);
    assert!(delay("closed", closed_at) <= SWEEP_S + 1.5);

    // The agent logged one line per verdict, and still reports the healthy flow alive.
    let (_, all) = http_get(&server, "http://127.0.0.1:9560/flows").expect("GET /flows");
    let all: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let healthy_port = ports.iter().find(|(_, n)| **n == "healthy").map(|(p, _)| *p).unwrap();
    let healthy_flow =
        all.iter().find(|f| f["remote"].as_str().unwrap().ends_with(&format!(":{healthy_port}"))).expect("listed");
    assert_eq!(healthy_flow["state"], "alive");
    assert_eq!(healthy_flow["peer"], "pbx");
    let udp_flow = all.iter().find(|f| f["transport"] == "udp").expect("the UDP flow listed");
    assert_eq!(udp_flow["peer"], "other", "{udp_flow}");
    // `sipflow flows` prints the same as a table, from the agent's namespace.
    let table = std::process::Command::new("ip")
        .args(["netns", "exec", &server, &sipflow_bin(), "flows", "--state", "failed"])
        .output()
        .expect("sipflow flows");
    let table = String::from_utf8_lossy(&table.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("IFACE") && rows[0].contains("REASON") && rows[0].contains("430"), "{table}");
    assert!(rows[0].contains("PEER") && table.contains(" pbx "), "{table}");
    assert_eq!(rows.len(), 5, "a header and four failed flows:\n{table}");
    for reason in ["keepalive_timeout", "tcp_reset", "tcp_fin"] {
        assert!(table.contains(reason), "{table}");
    }
    assert!(rows[1..].iter().all(|r| r.contains(" failed ")), "--state failed lists failed flows only:\n{table}");

    let (_, metrics) = http_get(&server, "http://127.0.0.1:9560/metrics").unwrap();
    for series in [
        r#"sipflow_flow_failures_total{peer="pbx",reason="tcp_reset"} 1"#,
        r#"sipflow_flow_failures_total{peer="pbx",reason="keepalive_timeout"} 1"#,
        r#"sipflow_flow_failures_total{peer="other",reason="keepalive_timeout"} 1"#,
        r#"sipflow_flows_would_430{peer="pbx",transport="tcp"} 3"#,
        r#"sipflow_flows_would_430{peer="other",transport="udp"} 1"#,
        r#"sipflow_flows_would_430{peer="access",transport="tcp"} 0"#,
        r#"sipflow_registrations{outbound="true",peer="pbx"} 4"#,
        r#"sipflow_registrations{outbound="true",peer="other"} 1"#,
        r#"sipflow_registrations{outbound="true",peer="access"} 0"#,
        r#"sipflow_requests_total{method="REGISTER",peer="pbx"} 4"#,
        r#"sipflow_requests_total{method="REGISTER",peer="other"} 1"#,
        r#"sipflow_requests_total{method="REGISTER",peer="access"} 0"#,
        r#"sipflow_responses_total{code="200",peer="pbx"} 4"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}
