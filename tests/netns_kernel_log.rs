//! The kernel's rare events reach the agent's log (aya-log, target
//! `sipflow::kernel`): a TCP segment holding more SIP messages than the
//! kernel walks is logged when the operator's log asks for the kernel's debug
//! records.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::netns::{Lab, SERVER_IF, SERVER_V4, output_of, sipflow_bin, wait_healthy};

#[test]
fn a_walk_cut_at_its_bound_is_logged() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("klog");
    let (server, client) = (lab.server.clone(), lab.client.clone());
    let (pins, state) = (lab.pin_dir().to_string(), lab.state_file());
    let bin = sipflow_bin();
    let agent = lab.spawn_in_network(
        &server,
        "env",
        &[
            "SIPFLOW_LOG=info,sipflow::kernel=debug",
            &bin,
            "run",
            "-i",
            SERVER_IF,
            "--listen",
            "127.0.0.1:9560",
            "--pin-dir",
            &pins,
            "--state-file",
            &state,
        ],
    );
    let pid = agent.id();
    wait_healthy(&server, "http://127.0.0.1:9560/healthz", agent, sipflow_tests::netns::AGENT_START);

    let listener = Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).expect("bind 5060"));
    thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 65536];
            while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    });
    let mut stream = Lab::in_namespace(&client, || TcpStream::connect((SERVER_V4, 5060)).expect("connect"));
    // Twenty requests in one segment: the kernel walks sixteen.
    let requests: Vec<u8> = (0..20)
        .flat_map(|i| format!("OPTIONS sip:a@b SIP/2.0\r\nCSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n").into_bytes())
        .collect();
    stream.write_all(&requests).expect("send");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = output_of(pid);
        if let Some(line) =
            log.lines().find(|l| l.contains("sipflow::kernel") && l.contains("held more than 16 SIP messages"))
        {
            eprintln!("{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no kernel log line within 5 s:\n{log}");
        thread::sleep(Duration::from_millis(100));
    }
}
