//! `cargo xtask bench`, verdicts: from a close on the wire to the agent's
//! verdict. N registered outbound TCP clients; then, 10 ms apart, half of them
//! are reset (SO_LINGER 0: an RST) and half closed (a FIN). The agent runs with
//! its default 30 s walk, so every verdict comes from a kernel event. Its own
//! `sipflow_verdict_delay_seconds` histogram (packet timestamp to verdict) gives
//! p50 and p99 by reason, as the upper bound of the bucket they fall in.
//! Writes target/bench/verdicts.{md,json}.
//!
//! Usage: sipflow-bench-verdicts [CLIENTS] (default 400)

use std::{fmt::Write as _, net::TcpListener, thread, time::Duration};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    peers::{self, TcpServer, connect},
};

/// (le, cumulative count) of a histogram's buckets for `reason`.
fn buckets(text: &str, reason: &str) -> Vec<(f64, f64)> {
    let prefix = "sipflow_verdict_delay_seconds_bucket{";
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The smallest bucket bound under which `q` of the observations fall.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.iter().map(|(_, n)| *n).fold(0.0, f64::max);
    buckets.iter().find(|(_, n)| *n >= q * total).map_or(f64::NAN, |(le, _)| *le)
}

fn main() {
    let clients: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    sipflow_tests::interrupt::clean_up_on_signal();
    let mut lab = Lab::new("verdicts");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, &[]);
    let _registrar = TcpServer::start(Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()), 30);
    let mut streams = Vec::new();
    for n in 0..clients {
        let mut stream = connect(&client, 5060);
        let reply = peers::register(&mut stream, &format!("v{n}"));
        assert!(reply.starts_with(b"SIP/2.0 200"), "registered");
        streams.push(stream);
    }
    // Give the agent the bindings (their heads), then close them one by one.
    thread::sleep(Duration::from_secs(1));
    for (n, stream) in streams.into_iter().enumerate() {
        if n % 2 == 0 {
            peers::reset(stream);
        } else {
            peers::finish(&stream);
            thread::sleep(Duration::from_millis(1));
            drop(stream);
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_secs(2));
    let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape");
    let mut md = format!(
        "# Close to verdict\n\n{clients} registered TCP clients, half reset, half closed, 10 ms apart; the agent's walk every 30 s.\n\n\
         | reason | verdicts | p50 ≤ ms | p99 ≤ ms |\n| --- | ---: | ---: | ---: |\n"
    );
    let mut json = Vec::new();
    for reason in ["tcp_reset", "tcp_fin"] {
        let b = buckets(&text, reason);
        let count = metric(&text, "sipflow_verdict_delay_seconds_count", &[("reason", reason)]).unwrap_or(0.0);
        let (p50, p99) = (quantile(&b, 0.5) * 1e3, quantile(&b, 0.99) * 1e3);
        let _ = writeln!(md, "| {reason} | {count} | {p50} | {p99} |");
        json.push(
            serde_json::json!({"reason": reason, "verdicts": count, "p50_ms_at_most": p50, "p99_ms_at_most": p99}),
        );
    }
    let would_430 = metric(&text, "sipflow_flows_would_430", &[("transport", "tcp")]).unwrap_or(0.0);
    let _ = writeln!(md, "\nflows failed that would warrant 430: {would_430} of {clients}");
    print!("{md}");
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(dir.join("verdicts.md"), &md).expect("write verdicts.md");
    std::fs::write(dir.join("verdicts.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write json");
    println!("written to {}/verdicts.{{md,json}}", dir.display());
}
