//! `cargo xtask bench`, its bindings part: what the agent's binding table costs
//! a large registrar. N outbound registrations (distinct AOR, +sip.instance
//! and reg-id, each over a flow of its own, as phones behind NAT have them) go
//! through the agent's own path: the REGISTER head and its 200 parsed, paired
//! and bound. Then the process's resident memory is read, and the table is
//! written the way --state-file is. Writes target/bench/bindings.{md,json}.
//! No root needed: nothing is attached.
//!
//! Usage: sipflow-bench-bindings [N ...] (default 1000000)

use std::{fmt::Write as _, time::Instant};

use monitor_common::flow::{FlowKey, FlowTransport};
use sipflow::{
    liveness::{
        registrations::{FlowId, Limits, Registrations},
        saved,
    },
    sip_head,
};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
        .unwrap_or(0)
}

fn flow(n: u32) -> FlowId {
    let mut client_addr = [0; 16];
    client_addr[..4].copy_from_slice(&[10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    let mut server_addr = [0; 16];
    server_addr[..4].copy_from_slice(&[192, 0, 2, 2]);
    let key = FlowKey {
        server_addr,
        client_addr,
        server_port: 5060,
        client_port: 40000 + (n % 20000) as u16,
        vlan_id: 0,
        family: 4,
        transport: FlowTransport::Tcp as u8,
    };
    FlowId { iface: "eth0".into(), key }
}

/// A phone's REGISTER and the registrar's 200, as they go over the wire.
fn exchange(n: u32) -> (String, String) {
    let contact = format!(
        "<sip:u{n}@10.{}.{}.{}:40000;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-{n:012}>\"",
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8
    );
    let common = format!(
        "Via: SIP/2.0/TCP 10.0.0.1:40000;branch=z9hG4bK{n}\r\nFrom: <sip:u{n}@example.com>;tag=f{n}\r\n\
         Call-ID: reg-{n}@phone\r\nCSeq: 1 REGISTER\r\n"
    );
    let register = format!(
        "REGISTER sip:example.com SIP/2.0\r\n{common}To: <sip:u{n}@example.com>\r\nSupported: outbound, path\r\n\
         Contact: {contact}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\n{common}To: <sip:u{n}@example.com>;tag=r{n}\r\nRequire: outbound\r\nFlow-Timer: 30\r\n\
         Contact: {contact};expires=3600\r\nContent-Length: 0\r\n\r\n"
    );
    (register, ok)
}

fn main() {
    let sizes: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1_000_000] } else { sizes };
    let mut md = String::from(
        "# Bindings: the agent's table at scale\n\n| bindings | RSS growth MiB | bytes per binding | bind µs each | state file MB | write s |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut json = Vec::new();
    for &n in &sizes {
        let limits = Limits { max_bindings: n, ..Limits::default() };
        let before = rss_kb();
        let mut table = Registrations::new(limits);
        let started = Instant::now();
        for i in 0..n {
            let (register, ok) = exchange(i);
            let flow = flow(i);
            let at = 1_000_000_000 + u64::from(i);
            table.on_head(&flow, &sip_head::parse(register.as_bytes()).expect("REGISTER"), at);
            table.on_head(&flow, &sip_head::parse(ok.as_bytes()).expect("200"), at);
        }
        let bind_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        assert_eq!(table.len(), n as usize, "every answered REGISTER bound");
        let grown_kb = rss_kb().saturating_sub(before);
        let path = std::env::temp_dir().join(format!("sipflow-bench-bindings-{}.json", std::process::id()));
        let started = Instant::now();
        saved::save(&path, table.all(), 0).expect("write the state file");
        let write_s = started.elapsed().as_secs_f64();
        let file_mb = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
        let _ = std::fs::remove_file(&path);
        let per_binding = grown_kb as f64 * 1024.0 / f64::from(n);
        println!(
            "{n} bindings: RSS +{:.0} MiB ({per_binding:.0} B each), {bind_us:.1} µs to bind each, state file {file_mb:.0} MB in {write_s:.2} s",
            grown_kb as f64 / 1024.0
        );
        let _ = writeln!(
            md,
            "| {n} | {:.0} | {per_binding:.0} | {bind_us:.1} | {file_mb:.0} | {write_s:.2} |",
            grown_kb as f64 / 1024.0
        );
        json.push(serde_json::json!({
            "bindings": n, "rss_growth_kb": grown_kb, "bytes_per_binding": per_binding,
            "bind_us": bind_us, "state_file_mb": file_mb, "write_s": write_s,
        }));
        drop(table);
    }
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(dir.join("bindings.md"), md).expect("write bindings.md");
    std::fs::write(dir.join("bindings.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write json");
    println!("written to {}/bindings.{{md,json}}", dir.display());
}
