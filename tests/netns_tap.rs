//! A tap or mirror port: both directions arrive on ingress, so XDP alone sees
//! the server's answers too (`--ingress-only`, as a tap is meant to be watched).
//! The server's veth is mirrored (tc u32 + mirred, both directions) onto a veth
//! pair whose far end carries sipflow.

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    peers::{self, TcpServer},
};

/// The mirror's two ends, inside the server's namespace.
const MIRROR_OUT: &str = "mir0";
const TAP: &str = "tap0";

fn run(namespace: &str, args: &[&str]) {
    let status = Command::new("ip").args(["netns", "exec", namespace]).args(args).status().expect("run");
    assert!(status.success(), "{args:?}");
}

#[test]
fn a_mirror_port_gives_both_directions_without_egress() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tap");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    run(&server, &["ip", "link", "add", MIRROR_OUT, "type", "veth", "peer", "name", TAP]);
    for link in [MIRROR_OUT, TAP] {
        run(&server, &["ip", "link", "set", link, "up"]);
    }
    run(&server, &["tc", "qdisc", "add", "dev", SERVER_IF, "clsact"]);
    for hook in ["ingress", "egress"] {
        run(
            &server,
            &[
                "tc", "filter", "add", "dev", SERVER_IF, hook, "protocol", "all", "u32", "match", "u32", "0", "0",
                "action", "mirred", "egress", "mirror", "dev", MIRROR_OUT,
            ],
        );
    }
    lab.start_agent(TAP, &["--ingress-only", "--flow-timer", "60s", "--grace", "1s", "--sweep-interval", "200ms"]);
    let _registrar = TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), 2);

    let mut stream = peers::connect(&client, 5060);
    assert!(peers::register(&mut stream, "alice").starts_with(b"SIP/2.0 200"));
    let mut buf = [0u8; 2];
    for _ in 0..2 {
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.read_exact(&mut buf).unwrap();
        thread::sleep(Duration::from_millis(300));
    }
    let silent_from = Instant::now();

    let mut failed = None;
    while silent_from.elapsed() < Duration::from_secs(8) && failed.is_none() {
        let (_, body) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed").unwrap();
        failed = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap().into_iter().next();
        thread::sleep(Duration::from_millis(100));
    }
    let flow = failed.expect("the silent client is flagged");
    println!("keepalive_timeout after {:.2}s on the tap (Flow-Timer 2 + grace 1)", silent_from.elapsed().as_secs_f64());
    assert_eq!(flow["reason"], "keepalive_timeout");
    assert_eq!(flow["flow_timer"], 2, "the registrar's 2xx was seen on the tap");
    assert_eq!(flow["would_430"], true);

    let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").unwrap();
    let packets = |direction: &str, class: &str| {
        metric(&text, "sipflow_packets_total", &[("iface", TAP), ("direction", direction), ("class", class)]).unwrap()
    };
    assert_eq!(packets("ingress", "keepalive_ping"), 2.0, "{text}");
    assert_eq!(packets("ingress", "keepalive_pong"), 2.0, "the server's pongs arrive on the tap's ingress");
    assert_eq!(packets("egress", "keepalive_pong"), 0.0, "no egress program here");
    assert!(metric(&text, "sipflow_keepalive_rtt_seconds_count", &[("transport", "tcp")]).unwrap() >= 1.0);
}
