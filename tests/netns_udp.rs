//! The whole system on a real interface: `sipflow run` attached to the server's
//! veth in a network namespace, real UDP datagrams from the client namespace,
//! /metrics scraped over TCP.

use std::{net::UdpSocket, time::Duration};

use sipflow_tests::netns::{self, Lab, SERVER_IF, SERVER_V4, http_get, metric};

const METRICS: &str = "http://127.0.0.1:9560/metrics";

#[test]
fn udp_sip_is_counted_exactly_and_passed() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("udp");
    let server = lab.server.clone();
    let client = lab.client.clone();
    lab.start_agent(SERVER_IF, &[]);

    // A listener on the server proves the datagrams got through the XDP program.
    let receiver = Lab::in_namespace(&server, || {
        let socket = UdpSocket::bind((SERVER_V4, 5060)).expect("bind 5060");
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        socket
    });
    let sender = Lab::in_namespace(&client, || UdpSocket::bind((netns::CLIENT_V4, 0)).expect("bind"));
    let target = (SERVER_V4, 5060);
    let mut sent_to_sip_port = 0;
    let mut send = |payload: &[u8], n: usize| {
        for _ in 0..n {
            sender.send_to(payload, target).expect("send");
            sent_to_sip_port += 1;
        }
    };
    send(b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: 1@c\r\nContent-Length: 0\r\n\r\n", 20);
    send(b"REGISTER sip:example.com SIP/2.0\r\nCall-ID: 2@c\r\nContent-Length: 0\r\n\r\n", 10);
    send(b"SIP/2.0 430 Flow Failed\r\nCall-ID: 3@c\r\nContent-Length: 0\r\n\r\n", 5);
    send(b"not sip at all", 7);

    let mut received = 0;
    let mut buf = [0u8; 2048];
    while received < sent_to_sip_port {
        match receiver.recv(&mut buf) {
            Ok(_) => received += 1,
            Err(_) => break,
        }
    }
    assert_eq!(received, sent_to_sip_port, "every datagram reaches the server's socket");

    let (status, text) = http_get(&server, METRICS).expect("scrape /metrics");
    assert_eq!(status, 200);
    let packets = |class: &str| {
        metric(&text, "sipflow_packets_total", &[("iface", SERVER_IF), ("direction", "ingress"), ("class", class)])
            .unwrap_or_else(|| panic!("no sample for class {class}:\n{text}"))
    };
    assert_eq!(packets("sip_request"), 30.0);
    assert_eq!(packets("sip_response"), 5.0);
    assert_eq!(packets("malformed"), 0.0);
    assert!(packets("other") >= 7.0, "the non-SIP datagrams count as other");
    assert_eq!(metric(&text, "sipflow_requests_total", &[("method", "INVITE")]), Some(20.0));
    assert_eq!(metric(&text, "sipflow_requests_total", &[("method", "REGISTER")]), Some(10.0));
    assert_eq!(metric(&text, "sipflow_responses_total", &[("code", "430")]), Some(5.0));
    assert_eq!(metric(&text, "sipflow_build_info", &[]), Some(1.0));

    // SIGTERM detaches the program and exits cleanly.
    let agent = lab_agent(&mut lab);
    assert!(Lab::link_show(&server, SERVER_IF).contains("xdp"), "attached while running");
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().expect("wait for sipflow");
    assert!(status.success(), "sipflow exits 0 on SIGTERM, got {status}");
    assert!(!Lab::link_show(&server, SERVER_IF).contains("xdp"), "detached after SIGTERM");
}

fn lab_agent(lab: &mut Lab) -> &mut std::process::Child {
    lab.spawned().first_mut().expect("the agent")
}
