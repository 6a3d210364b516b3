//! `cargo xtask bench`, its scale part: the agent with its flow map filled to
//! 100 000 and 1 000 000 flows. Frames from as many UDP clients are written on
//! the client's veth (AF_PACKET), so the real XDP program creates the flows;
//! then the agent's own `sipflow_sweep_seconds` (one reconciling walk), its
//! resident memory, the map's locked memory, and the agent's CPU in steady
//! state (a minute with the map full, the default --sweep-interval of 30 s) are
//! read. Writes target/bench/scale.{md,json}.
//!
//! Usage: sipflow-bench-scale [FLOWS ...]

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use sipflow_tests::{
    many_clients,
    netns::{Lab, SERVER_IF, http_get, metric},
    proc_stats::{cpu_seconds, status_kb},
};

/// Locked memory of the process's LRU hash maps (map_type 9): the flow map.
fn flow_map_bytes(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .filter(|info| info.lines().any(|l| l.split_whitespace().eq(["map_type:", "9"])))
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok()))
        .sum()
}

struct Row {
    flows: u32,
    /// Agent CPU in steady state, percent of one core.
    cpu_percent: f64,
    cpu_window_s: f64,
    in_map: f64,
    send_s: f64,
    sweep_s: f64,
    rss_mib: f64,
    map_mib: f64,
}

fn measure(flows: u32) -> Row {
    let mut lab = Lab::new("scale");
    let server = lab.server.clone();
    // Room for every flow: an LRU map starts evicting a little before it is full.
    let capacity = (flows + flows / 4).to_string();
    lab.start_agent(SERVER_IF, &["--max-flows", &capacity, "--sweep-interval", "30s"]);
    let agent = lab.spawned()[0].id();
    let idle_rss = status_kb(agent, "VmRSS");
    let send_s = many_clients::send_from_clients(&lab.client.clone(), flows);

    let entries = |text: &str| metric(text, "sipflow_map_entries", &[("map", "flows")]).unwrap_or(0.0);
    // The gauge follows the reconciling walk: up to one --sweep-interval behind.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = http_get(&server, "http://127.0.0.1:9560/metrics").map(|(_, t)| t).unwrap_or_default();
        if entries(&text) >= f64::from(flows) * 0.99 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Steady state: the map full, nothing new; a minute at scale (its walks included).
    let window = Duration::from_secs(if flows >= 100_000 { 60 } else { 5 });
    let cpu_before = cpu_seconds(agent);
    std::thread::sleep(window);
    let cpu_percent = (cpu_seconds(agent) - cpu_before) / window.as_secs_f64() * 100.0;
    let text = http_get(&server, "http://127.0.0.1:9560/metrics").map(|(_, t)| t).unwrap_or(text);
    let sweep_s = metric(&text, "sipflow_sweep_seconds", &[]).unwrap_or(f64::NAN);
    let rss = status_kb(agent, "VmRSS");
    eprintln!("scale: {flows} flows; agent RSS idle {idle_rss} kB, full {rss} kB");
    Row {
        flows,
        cpu_percent,
        cpu_window_s: window.as_secs_f64(),
        in_map: entries(&text),
        send_s,
        sweep_s,
        rss_mib: rss as f64 / 1024.0,
        map_mib: flow_map_bytes(agent) as f64 / (1024.0 * 1024.0),
    }
}

fn main() {
    let sizes: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100_000, 1_000_000] } else { sizes };
    sipflow_tests::interrupt::clean_up_on_signal();
    let rows: Vec<Row> = sizes.into_iter().map(measure).collect();

    let mut md = String::from("# The agent at scale\n\n");
    md.push_str(
        "| flows sent | flows in the map | send s | one walk s | agent CPU % of a core (window s) | agent RSS MiB | flow map MiB |\n",
    );
    md.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.3} | {:.1} ({:.0}) | {:.1} | {:.1} |",
            r.flows, r.in_map, r.send_s, r.sweep_s, r.cpu_percent, r.cpu_window_s, r.rss_mib, r.map_mib
        );
    }
    print!("{md}");
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({"flows": r.flows, "in_map": r.in_map, "send_s": r.send_s, "sweep_s": r.sweep_s,
                               "cpu_percent": r.cpu_percent, "cpu_window_s": r.cpu_window_s,
                               "agent_rss_mib": r.rss_mib, "flow_map_mib": r.map_mib})
        })
        .collect();
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("scale.md"), &md).expect("write scale.md");
    std::fs::write(dir.join("scale.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write scale.json");
    println!("written to {}/scale.{{md,json}}", dir.display());
}
