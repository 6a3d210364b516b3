//! `cargo xtask soak --minutes N`: sipflow under load for a while, restarted
//! twice on the way, in the namespace lab.
//!
//! - sipp's UAC places calls over UDP with a new socket per call (`-t un`), so
//!   flows keep coming and going, to sipp's UAS on the server;
//! - three outbound UAs keep their registered TCP flows alive with CRLF pings
//!   (Flow-Timer 3 s): healthy flows, which must never be flagged;
//! - at a third and at two thirds of the run the agent gets SIGTERM and is
//!   started again (`--keep-attached`: the program counts while it is away).
//!
//! Checked at the end: sipflow counted every INVITE and BYE sipp sent, none
//! twice, across both restarts; no healthy flow was ever flagged; no event was
//! lost; the agent's RSS stayed flat. Writes target/soak/soak.{md,json} and
//! exits non-zero when a check fails.
//!
//! Usage: sipflow-soak [SECONDS] [CALLS_PER_SECOND]

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    edge_lab::sipflow_counts,
    netns::{CLIENT_V4, Lab, SERVER_IF, SERVER_V4, http_get, metric},
    peers::TcpServer,
    proc_stats::status_kb,
    sipp,
    ua::{OutboundUa, Transport},
};

/// A retention of a minute: the failed flows the agent keeps (sipp's call
/// sockets, each failing when it falls quiet) level off within each run, so a
/// flat RSS is measured rather than that set filling up.
const AGENT_ARGS: [&str; 8] =
    ["--keep-attached", "--egress", "--grace", "2s", "--sweep-interval", "500ms", "--retention", "60s"];

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30).max(9);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let calls = seconds * rate;
    sipflow_tests::interrupt::clean_up_on_signal();

    let mut lab = Lab::new("soak");
    let (server, client) = (lab.server.clone(), lab.client.clone());
    lab.start_agent(SERVER_IF, &AGENT_ARGS);
    let _registrar = TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), 3);
    let proxy: SocketAddr = (SERVER_V4.parse::<std::net::IpAddr>().unwrap(), 5060).into();
    let healthy: Vec<OutboundUa> = ["ann", "ben", "cat"]
        .iter()
        .map(|user| OutboundUa::register(&client, proxy, user, Transport::Tcp, Duration::from_secs(1)))
        .collect();
    let healthy_flows: Vec<String> = healthy.iter().map(|ua| ua.local.to_string()).collect();

    let mut uas = sipflow_tests::sipp::answering_calls(&server);
    thread::sleep(Duration::from_millis(500));

    eprintln!("soak: {seconds} s, {calls} calls at {rate}/s, two restarts");
    let uac = Command::new("ip")
        .args(["netns", "exec", &client, "sipp", "-sn", "uac", &format!("{SERVER_V4}:5060"), "-i", CLIENT_V4])
        .args(["-t", "un", "-max_socket", "4096", "-r", &rate.to_string(), "-m", &calls.to_string()])
        .args(["-l", &(rate * 4).to_string()])
        .args(["-nostdin", "-timeout", &format!("{}s", seconds * 2 + 30)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run sipp");
    let uac_pid = uac.id();
    sipflow_tests::interrupt::process_started(uac_pid);

    let started = Instant::now();
    let restarts = [seconds / 3, 2 * seconds / 3];
    let mut done_restarts = 0;
    let mut flaps: Vec<String> = Vec::new();
    // RSS samples of each agent run: (run, kB).
    let mut rss: Vec<(usize, u64)> = Vec::new();
    let mut restart_gaps = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(1));
        let agent = lab.spawned().last().map(|c| c.id());
        if let Some(pid) = agent {
            rss.push((done_restarts, status_kb(pid, "VmRSS")));
        }
        if let Some((_, body)) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed") {
            let failed: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
            // The UAs' TCP flows; sipp's UDP sockets may have the same port numbers.
            let tcp_flagged =
                |remote: &String| failed.iter().any(|f| f["transport"] == "tcp" && f["remote"] == **remote);
            for remote in healthy_flows.iter().filter(|r| tcp_flagged(r)) {
                flaps.push(format!("{remote} flagged at {:.0} s", started.elapsed().as_secs_f64()));
            }
        }
        if done_restarts < restarts.len() && started.elapsed() >= Duration::from_secs(restarts[done_restarts]) {
            let gap = Instant::now();
            let agent = lab.spawned().last_mut().expect("the agent");
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
            let _ = agent.wait();
            thread::sleep(Duration::from_millis(500));
            lab.start_agent(SERVER_IF, &AGENT_ARGS);
            restart_gaps.push(gap.elapsed().as_secs_f64());
            done_restarts += 1;
            eprintln!("soak: restart {done_restarts} took {:.2} s", restart_gaps.last().unwrap());
        }
    }
    let output = uac.wait_with_output().expect("sipp's result");
    sipflow_tests::interrupt::process_ended(uac_pid);
    thread::sleep(Duration::from_millis(1500));
    let sipp_out = String::from_utf8_lossy(&output.stdout);
    if std::env::var_os("SOAK_DEBUG").is_some() {
        eprintln!("{sipp_out}\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let created = sipp::final_statistic(&sipp_out, "Outgoing calls created");
    let successful = sipp::final_statistic(&sipp_out, "Successful call");
    // The message table: "INVITE ---------->  180  0  0" (count, retransmissions, timeouts).
    let retransmissions = sipp::retransmissions(&sipp_out);

    let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape");
    let counts = sipflow_counts(&text);
    let invites = counts.requests.get("INVITE").copied().unwrap_or(0);
    let byes = counts.requests.get("BYE").copied().unwrap_or(0);
    let lost = metric(&text, "sipflow_events_lost_total", &[]).unwrap_or(0.0);
    sipflow_tests::process::stop_group(&mut uas);
    drop(healthy);

    // RSS of the last run: half-way through it, against its end.
    let last: Vec<u64> = rss.iter().filter(|(run, _)| *run == done_restarts).map(|(_, kb)| *kb).collect();
    let settled = last.get(last.len() / 2).copied().unwrap_or(0);
    let end = last.last().copied().unwrap_or(0);
    let peak = rss.iter().map(|(_, kb)| *kb).max().unwrap_or(0);

    let mut failures = Vec::new();
    if invites < created || invites > created + retransmissions {
        failures.push(format!(
            "INVITEs: sipflow counted {invites}, sipp created {created} calls ({retransmissions} retransmissions)"
        ));
    }
    if byes < successful || byes > successful + retransmissions {
        failures.push(format!("BYEs: sipflow counted {byes}, sipp completed {successful} calls"));
    }
    if created == 0 {
        failures.push("sipp created no call".into());
    }
    if !flaps.is_empty() {
        failures.push(format!("healthy flows flagged: {}", flaps.join(", ")));
    }
    if lost > 0.0 {
        failures.push(format!("{lost} events lost"));
    }
    if end > settled + 10 * 1024 {
        failures.push(format!("agent RSS grew from {settled} kB to {end} kB"));
    }

    let mut md = format!(
        "# Soak: {seconds} s at {rate} calls/s, {done_restarts} restarts\n\n| figure | value |\n| --- | ---: |\n"
    );
    let _ = writeln!(md, "| sipp calls created / successful | {created} / {successful} |");
    let _ = writeln!(md, "| sipp retransmissions | {retransmissions} |");
    let _ = writeln!(md, "| sipflow INVITE / BYE counted | {invites} / {byes} |");
    let _ = writeln!(
        md,
        "| restarts (SIGTERM to healthy again, s) | {} |",
        restart_gaps.iter().map(|g| format!("{g:.2}")).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(md, "| healthy flows flagged | {} |", flaps.len());
    let _ = writeln!(md, "| events lost | {lost} |");
    let _ = writeln!(
        md,
        "| agent RSS, last run: half-way / end; peak of all runs (MiB) | {:.1} / {:.1}; {:.1} |",
        settled as f64 / 1024.0,
        end as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let _ = writeln!(md, "| result | {} |", if failures.is_empty() { "pass".to_string() } else { failures.join("; ") });
    print!("{md}");
    let json = serde_json::json!({
        "seconds": seconds, "rate": rate, "restarts": done_restarts, "restart_gaps_s": restart_gaps,
        "sipp_created": created, "sipp_successful": successful, "sipp_retransmissions": retransmissions,
        "sipflow_invites": invites, "sipflow_byes": byes, "healthy_flagged": flaps, "events_lost": lost,
        "rss_settled_kb": settled, "rss_end_kb": end, "rss_peak_kb": peak, "failures": failures,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(&dir).expect("target/soak");
    std::fs::write(dir.join("soak.md"), &md).expect("write soak.md");
    std::fs::write(dir.join("soak.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write soak.json");
    println!("written to {}/soak.{{md,json}}", dir.display());
    if !failures.is_empty() {
        drop(lab);
        std::process::exit(1);
    }
}
