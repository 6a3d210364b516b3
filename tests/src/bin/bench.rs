//! `cargo xtask bench`: the XDP program's cost per packet, by class, through
//! BPF_PROG_TEST_RUN (the kernel's own mean over `repeat` runs), beside a
//! program that only passes. Writes target/bench/test_run.{md,json}.
//!
//! `sipflow-bench REPEAT SAMPLES`: each class is run SAMPLES times, in rounds
//! over all classes, and the fastest mean is given. On a shared VM a run's mean takes in whatever the
//! host did meanwhile (interrupts, steal); the fastest of many short runs is
//! the program's own cost, which is what a before/after comparison needs.

use std::fmt::Write as _;

use monitor_common::maps::{TC_EGRESS_PROGRAM, TC_FOLLOW_PROGRAMS, XDP_FOLLOW_PROGRAMS, XDP_PROGRAM};
use sipflow::peers::{PeerArg, Peers, peer_arg};
use sipflow_tests::{
    kernel::{LoadedXdp, XDP_PASS},
    packets::*,
};

fn main() {
    let repeat: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let samples: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let mut xdp = LoadedXdp::load();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("SIP request (UDP INVITE)", udp4(CLIENT_PORT, SIP_PORT, INVITE)),
        ("SIP response (UDP 430)", udp4(SIP_PORT, CLIENT_PORT, FLOW_FAILED)),
        // UDP: a repeated TCP segment would be a retransmission, whose head is not sent again.
        ("SIP request (UDP REGISTER, head to ring buffer)", udp4(CLIENT_PORT, SIP_PORT, REGISTER)),
        ("keepalive ping (TCP CRLFCRLF)", tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"\r\n\r\n")),
        ("STUN Binding request", udp4(CLIENT_PORT, SIP_PORT, &stun(0x0001))),
        ("non-SIP UDP (port 53)", udp4(CLIENT_PORT, 53, b"not sip")),
        ("TCP ACK on the SIP port", tcp4(CLIENT_PORT, SIP_PORT, Flags::default(), b"")),
        ("IPv6 + QinQ SIP request", udp6_vlan(&[100, 200], CLIENT_PORT, SIP_PORT, INVITE)),
    ];
    // The same messages where 64 peers are named (`--peer`): the client's peer is
    // looked up once per flow, and each message adds one more to its peer's row.
    let peers: Vec<PeerArg> = (0..63)
        .map(|i| peer_arg(&format!("p{i}=10.{i}.0.0/16,2001:db8:{i:x}::/48")))
        .chain([peer_arg("lab=192.0.2.0/24")])
        .collect::<Result<_, _>>()
        .expect("64 peers");
    let named = LoadedXdp::load_with_peers(&Peers::new(&peers).expect("64 peers"));
    // --transactions: every SIP message's head goes to the ring buffer. Run a
    // million times the ring fills and the rest are dropped (and counted), so
    // the price of a head delivered is measured apart below, over fewer runs
    // than the ring holds, each row on a fresh load.
    let transactions = LoadedXdp::load_with_transactions();
    let (verdict, _) = xdp.run_pass_repeat(&cases[0].1, 1);
    assert_eq!(verdict, XDP_PASS);

    // Rows: (name, loaded object, frame); no object is the empty program.
    let mut rows: Vec<(String, Option<&LoadedXdp>, &[u8])> =
        vec![("empty XDP_PASS program".to_string(), None, &cases[0].1[..])];
    rows.extend(cases.iter().map(|(name, frame)| (name.to_string(), Some(&xdp), &frame[..])));
    for (option, loaded) in [(", 64 peers named", &named), (", --transactions", &transactions)] {
        rows.extend(cases[..2].iter().map(|(name, frame)| (format!("{name}{option}"), Some(loaded), &frame[..])));
    }
    // Round after round over every row, so that each row's runs are spread
    // over the whole benchmark rather than bunched where the host was busy.
    let mut fastest = vec![f64::MAX; rows.len()];
    for _ in 0..samples {
        for (row, (name, loaded, frame)) in rows.iter().enumerate() {
            let (verdict, mean) = match loaded {
                Some(loaded) => loaded.run_repeat(frame, repeat),
                None => xdp.run_pass_once_loaded(frame, repeat),
            };
            assert_eq!(verdict, XDP_PASS, "{name}");
            fastest[row] = fastest[row].min(mean.as_nanos() as f64);
        }
    }
    let pass_ns = fastest[0];
    let runs = if samples > 1 { format!(", the fastest of {samples} runs") } else { String::new() };
    let mut md = format!(
        "# XDP cost per packet (BPF_PROG_TEST_RUN, repeat {repeat}{runs})\n\n\
         | packet | ns | x an empty XDP_PASS program |\n| --- | ---: | ---: |\n"
    );
    let mut json = Vec::new();
    for ((name, ..), ns) in rows.iter().zip(&fastest) {
        let _ = writeln!(md, "| {name} | {ns:.0} | {:.1} |", ns / pass_ns.max(1.0));
        json.push(format!(r#"{{"packet":"{name}","ns":{ns}}}"#));
    }
    let delivered_runs = 900;
    type Load = fn() -> LoadedXdp;
    let loads: [(&str, Load); 2] = [("", LoadedXdp::load), (", --transactions", LoadedXdp::load_with_transactions)];
    for (option, load) in loads {
        // Drained between runs, so that every run's heads find room.
        let mut loaded = load();
        let mut ns = f64::MAX;
        for _ in 0..samples {
            let (verdict, mean) = loaded.run_repeat(&cases[0].1, delivered_runs);
            assert_eq!(verdict, XDP_PASS);
            ns = ns.min(mean.as_nanos() as f64);
            let _ = loaded.heads();
        }
        let name = format!("SIP request (UDP INVITE){option}, {delivered_runs} runs, every head delivered");
        let _ = writeln!(md, "| {name} | {ns:.0} | {:.1} |", ns / pass_ns.max(1.0));
        json.push(format!(r#"{{"packet":"{name}","ns":{ns}}}"#));
    }
    // What the agent's read of every counter costs with 64 peers (65 x 615 per-peer slots).
    let timed = |read: &dyn Fn()| {
        let start = std::time::Instant::now();
        for _ in 0..10 {
            read();
        }
        start.elapsed().as_secs_f64() * 100.0
    };
    let batched = timed(&|| drop(named.counters()));
    let one_by_one = timed(&|| drop(named.counters_one_by_one()));
    let _ = writeln!(
        md,
        "\nReading every counter with 64 peers named: {batched:.2} ms in batches, {one_by_one:.2} ms slot by slot."
    );
    json.push(format!(r#"{{"read_counters_64_peers_ms":{{"batched":{batched},"one_by_one":{one_by_one}}}}}"#));
    // A REGISTER run a million times fills the ring buffer: heads beyond it are counted as lost.
    let _ = xdp.heads();
    xdp.run_tc(&cases[0].1);
    let _ = writeln!(md, "\nInstructions the verifier processed (limit 1 000 000):\n");
    let programs = [&[XDP_PROGRAM, TC_EGRESS_PROGRAM][..], &XDP_FOLLOW_PROGRAMS, &TC_FOLLOW_PROGRAMS];
    for program in programs.concat() {
        let count = xdp.verified_instructions(program).map_or("?".to_string(), |n| n.to_string());
        let _ = writeln!(md, "- {program}: {count}");
        json.push(format!(r#"{{"program":"{program}","verified_instructions":"{count}"}}"#));
    }
    print!("{md}");
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("test_run.md"), &md).expect("write markdown");
    std::fs::write(dir.join("test_run.json"), format!("[{}]\n", json.join(","))).expect("write json");
    println!("\nwritten to {}", dir.join("test_run.{md,json}").display());
}
