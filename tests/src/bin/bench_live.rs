//! `cargo xtask bench`, its live part: sipp drives calls through the namespace
//! lab (a UAC in the client namespace, a UAS on the server's SIP port) while
//! sipflow is attached with --egress and tshark counts SIP on the same
//! interface. With kernel.bpf_stats_enabled=1 the kernel times every run of
//! sipflow's programs; the CPU of tshark (and its dumpcap) and of the agent come
//! from the kernel's accounting. Writes target/bench/live.{md,json}.
//!
//! Usage: sipflow-bench-live [SECONDS] [CALLS_PER_SECOND] [AGENT OPTION...]
//! (say `--transactions`, to see what its heads cost on the live path).

use std::{
    collections::HashSet,
    fmt::Write as _,
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    time::Instant,
};

use sipflow_tests::{
    edge_lab::sipflow_counts,
    netns::{CLIENT_V4, Lab, SERVER_IF, SERVER_V4, http_get, metric},
    proc_stats::cpu_seconds,
};

/// Programs named sipflow_* that were not loaded before: (run time ns, runs).
fn program_stats(before: &HashSet<u32>) -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !before.contains(&p.id()) && p.name_as_str().is_some_and(|n| n.starts_with("sipflow_")))
        .fold((0, 0), |(ns, runs), p| (ns + p.run_time().as_nanos() as u64, runs + p.run_count()))
}

fn sysctl(setting: &str) {
    let ok = Command::new("sysctl").args(["-qw", setting]).status().is_ok_and(|s| s.success());
    assert!(ok, "sysctl -w {setting}");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rate: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let options: Vec<String> = args.collect();
    let calls = seconds * rate;
    sipflow_tests::interrupt::clean_up_on_signal();

    let before: HashSet<u32> = aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).collect();
    let mut lab = Lab::new("live");
    let server = lab.server.clone();
    let mut agent_args = vec!["--egress"];
    agent_args.extend(options.iter().map(String::as_str));
    lab.start_agent(SERVER_IF, &agent_args);
    let agent_pid = lab.spawned()[0].id();
    sysctl("kernel.bpf_stats_enabled=1");

    let mut uas = sipflow_tests::sipp::answering_calls(&server);
    // tshark counting SIP by method and code, as an operator would without sipflow.
    let mut tshark = Command::new("ip")
        .args(["netns", "exec", &server, "tshark", "-q", "-i", SERVER_IF, "-z", "sip,stat"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start tshark");
    sipflow_tests::interrupt::process_started(tshark.id());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let agent_cpu_before = cpu_seconds(agent_pid);
    let (run_ns_before, runs_before) = program_stats(&before);

    eprintln!("live: {calls} calls at {rate}/s through the lab");
    let started = Instant::now();
    let uac = Command::new("ip")
        .args(["netns", "exec", &lab.client, "sipp", "-sn", "uac", &format!("{SERVER_V4}:5060"), "-i", CLIENT_V4])
        .args(["-r", &rate.to_string(), "-m", &calls.to_string(), "-l", &(rate * 4).to_string(), "-nostdin"])
        .args(["-timeout", &format!("{}s", seconds * 3 + 30)])
        .output()
        .expect("run sipp");
    let wall = started.elapsed().as_secs_f64();
    eprintln!("live: sipp done in {wall:.1} s; stopping tshark");
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let (run_ns, runs) = program_stats(&before);
    let (run_ns, runs) = (run_ns - run_ns_before, runs - runs_before);
    let agent_cpu = cpu_seconds(agent_pid) - agent_cpu_before;
    sysctl("kernel.bpf_stats_enabled=0");
    // tshark's CPU, dumpcap's included: wait4 reports a child with its waited-for children.
    // SIGTERM, not SIGINT: see tshark::Capture::stop.
    sipflow_tests::process::signal_group(&tshark, libc::SIGTERM);
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 fills `status` and `usage` for our own child.
    unsafe { libc::wait4(tshark.id() as i32, &mut status, 0, &mut usage) };
    let tshark_cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    let mut tshark_out = String::new();
    if let Some(mut out) = tshark.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut tshark_out);
    }
    let _ = tshark.wait();
    sipflow_tests::interrupt::process_ended(tshark.id());
    sipflow_tests::process::stop_group(&mut uas);

    let (_, metrics) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape");
    let counts = sipflow_counts(&metrics);
    let lost = metric(&metrics, "sipflow_events_lost_total", &[]).unwrap_or(0.0);
    let sipp_out = String::from_utf8_lossy(&uac.stdout);
    let successful = sipflow_tests::sipp::final_statistic(&sipp_out, "Successful call");
    // sipp's statistics screen has no retransmission row: its message table has them.
    let retransmissions = sipflow_tests::sipp::retransmissions(&sipp_out);

    let ns_per_run = if runs > 0 { run_ns as f64 / runs as f64 } else { 0.0 };
    let sipflow_cpu = run_ns as f64 / 1e9 + agent_cpu;
    let ratio = if sipflow_cpu > 0.0 { tshark_cpu / sipflow_cpu } else { 0.0 };
    let invites = counts.requests.get("INVITE").copied().unwrap_or(0);
    let byes = counts.requests.get("BYE").copied().unwrap_or(0);
    let mut md = String::new();
    let with = if options.is_empty() { String::new() } else { format!(", sipflow {}", options.join(" ")) };
    let _ = writeln!(md, "# Live: sipp through the lab, {calls} calls at {rate}/s ({wall:.1} s){with}\n");
    let _ = writeln!(md, "| figure | value |\n| --- | ---: |");
    let _ = writeln!(md, "| program runs (XDP + TC egress) | {runs} |");
    let _ = writeln!(md, "| ns per run (bpf_stats run_time_ns / run_cnt) | {ns_per_run:.0} |");
    let _ = writeln!(md, "| sipflow CPU s (programs + agent) | {:.3} + {agent_cpu:.3} |", run_ns as f64 / 1e9);
    let _ = writeln!(md, "| tshark CPU s (tshark + dumpcap, -z sip,stat) | {tshark_cpu:.3} |");
    let _ = writeln!(md, "| tshark CPU / sipflow CPU | {ratio:.1}x |");
    let _ = writeln!(md, "| sipp successful calls | {successful} of {calls} |");
    let _ = writeln!(md, "| sipp retransmissions | {retransmissions} |");
    let _ = writeln!(md, "| sipflow INVITE / BYE counted | {invites} / {byes} |");
    let _ = writeln!(md, "| events lost | {lost} |");
    print!("{md}");
    let json = serde_json::json!({
        "calls": calls, "rate": rate, "options": options, "wall_s": wall, "program_runs": runs, "ns_per_run": ns_per_run,
        "program_cpu_s": run_ns as f64 / 1e9, "agent_cpu_s": agent_cpu, "tshark_cpu_s": tshark_cpu,
        "tshark_over_sipflow": ratio, "sipp_successful": successful, "sipp_retransmissions": retransmissions,
        "sipflow_invites": invites, "sipflow_byes": byes, "events_lost": lost,
    });
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("live.md"), &md).expect("write live.md");
    std::fs::write(dir.join("live.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write live.json");
    println!("written to {}/live.{{md,json}}", dir.display());
}
