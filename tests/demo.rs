//! `cargo xtask demo`: a client and a server namespace joined by a veth pair,
//! sipflow attached to the server's side, SIP and keepalives sent from the
//! client, and what sipflow counted read back over HTTP.

use std::{
    io::Write,
    net::{TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use sipflow_tests::netns::{self, Lab, SERVER_IF, SERVER_V4, http_get, sipflow_bin, wait_healthy};

const METRICS: &str = "http://127.0.0.1:9560/metrics";

fn main() {
    let mut lab = Lab::new("demo");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    println!("lab: namespaces {client} (client, {}) and {server} (server, {SERVER_V4})", netns::CLIENT_V4);

    let bin = sipflow_bin();
    let agent = lab.spawn(&server, &bin, &["run", "-i", SERVER_IF, "--listen", "127.0.0.1:9560"]);
    wait_healthy(&server, "http://127.0.0.1:9560/healthz", agent, Duration::from_secs(30));
    println!("sipflow: attached to {server}/{SERVER_IF}, serving http://127.0.0.1:9560 in that namespace");

    // A TCP listener on 5060 in the server namespace: the peer of the client's stream flow.
    let listener = Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).expect("bind 5060/tcp"));
    let accept = thread::spawn(move || listener.accept().map(|(s, _)| s));

    Lab::in_namespace(&client, || {
        let udp = UdpSocket::bind((netns::CLIENT_V4, 0)).expect("bind");
        for _ in 0..3 {
            udp.send_to(b"OPTIONS sip:server SIP/2.0\r\nContent-Length: 0\r\n\r\n", (SERVER_V4, 5060)).unwrap();
        }
        udp.send_to(b"SIP/2.0 430 Flow Failed\r\nContent-Length: 0\r\n\r\n", (SERVER_V4, 5060)).unwrap();
        udp.send_to(b"SIP/2.0 300 Multiple Choices\r\nContent-Length: 0\r\n\r\n", (SERVER_V4, 5060)).unwrap();
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        udp.send_to(&stun, (SERVER_V4, 5060)).unwrap();

        let mut tcp = TcpStream::connect((SERVER_V4, 5060)).expect("connect 5060/tcp");
        tcp.write_all(b"REGISTER sip:example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(50));
        tcp.write_all(b"\r\n\r\n").unwrap();
        thread::sleep(Duration::from_millis(50));
    });
    let _server_side = accept.join().expect("accept thread");
    println!("client: sent 3 OPTIONS, a 430, a 300 and a STUN Binding request over UDP;");
    println!("        a REGISTER and a CRLFCRLF keepalive ping over TCP");
    thread::sleep(Duration::from_millis(200));

    let (_, text) = http_get(&server, METRICS).expect("scrape /metrics");
    println!("\nsipflow's /metrics (non-zero samples):");
    for line in text.lines() {
        if line.starts_with("sipflow_") && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    println!("\nThe lab is removed now; `cargo xtask test` runs the checks.");
}
