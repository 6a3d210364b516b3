//! `cargo xtask demo`: a client and a server namespace joined by a veth pair;
//! a registrar on the server (RFC 5626 outbound, Flow-Timer 3), sipflow attached
//! to its veth with --egress. Three clients register: one keeps alive, one falls
//! silent, one is killed. sipflow flags the two that failed; a call to the
//! silent one gets 430 Flow Failed, which sipflow had predicted.

use std::{
    net::TcpListener,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{CLIENT_V4, Lab, SERVER_IF, SERVER_V4, http_get, sipflow_bin},
    peers::{self, TcpServer, connect, exchange},
};

const FLOW_TIMER: u32 = 3;

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or("").to_string()
}

fn main() {
    let mut lab = Lab::new("demo");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    println!("lab: {client} ({CLIENT_V4}) <-veth-> {server} ({SERVER_V4})");
    let bin = sipflow_bin();
    lab.start_agent(SERVER_IF, &["--egress", "--grace", "1s", "--sweep-interval", "200ms"]);
    println!("sipflow: XDP + TC egress on {server}/{SERVER_IF}; /metrics and /flows on 127.0.0.1:9560 there");
    let _registrar =
        TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), FLOW_TIMER);
    println!("registrar: {SERVER_V4}:5060/tcp, answers REGISTER with Require: outbound, Flow-Timer: {FLOW_TIMER}\n");

    let mut alice = connect(&client, 5060);
    let mut bob = connect(&client, 5060);
    let carol = {
        let mut carol = connect(&client, 5060);
        for (stream, user) in [(&mut alice, "alice"), (&mut bob, "bob"), (&mut carol, "carol")] {
            let reply = peers::register(stream, user);
            let local = stream.local_addr().unwrap();
            println!("{user:<5} REGISTER from {local} (reg-id 1, +sip.instance) -> {}", first_line(&reply));
        }
        carol
    };
    let mut bob_silent = Instant::now();
    for _ in 0..2 {
        exchange(&mut alice, b"\r\n\r\n");
        exchange(&mut bob, b"\r\n\r\n");
        bob_silent = Instant::now();
        thread::sleep(Duration::from_millis(500));
    }
    println!("\nbob   stops sending keepalives (his phone lost its network)");
    let carol_killed = Instant::now();
    peers::reset(carol);
    println!("carol is killed: her connection ends with an RST");

    // alice keeps pinging while sipflow decides.
    let mut reported = std::collections::HashSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(FLOW_TIMER as u64 + 4) && reported.len() < 2 {
        exchange(&mut alice, b"\r\n\r\n");
        let (_, body) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed").unwrap();
        for f in serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap() {
            let aor = f["aor"].as_str().unwrap_or("-").to_string();
            if reported.insert(aor.clone()) {
                let since = if aor.contains("carol") { carol_killed } else { bob_silent };
                println!(
                    "sipflow: {aor} flow {} failed: {} {:.1}s after the last sign of life, would warrant 430: {}",
                    f["remote"].as_str().unwrap_or("?"),
                    f["reason"].as_str().unwrap_or("?"),
                    since.elapsed().as_secs_f64(),
                    f["would_430"]
                );
            }
        }
        thread::sleep(Duration::from_millis(200));
    }

    let mut caller = connect(&client, 5060);
    let answer = exchange(&mut caller, &peers::invite_to("bob", "demo-call"));
    println!("\ncaller INVITE sip:bob@example.com -> registrar answers {}", first_line(&answer));
    thread::sleep(Duration::from_millis(400));

    println!("\n$ sipflow flows");
    let table = Command::new("ip").args(["netns", "exec", &server, &bin, "flows"]).output().expect("sipflow flows");
    print!("{}", String::from_utf8_lossy(&table.stdout));

    let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape /metrics");
    println!("\nsipflow's /metrics (excerpt):");
    for line in text.lines() {
        let interesting = [
            "sipflow_flow_failures_total",
            "sipflow_flows_would_430",
            "sipflow_430_sent_total",
            "sipflow_responses_total",
            "sipflow_requests_total",
            "sipflow_keepalive_rtt_seconds_count",
            "sipflow_registrations",
        ];
        if interesting.iter().any(|m| line.starts_with(m)) && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    println!("\nThe lab is removed now; `cargo xtask test` runs the checks.");
}
