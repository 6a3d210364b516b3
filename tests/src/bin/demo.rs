//! `cargo xtask demo` and `cargo xtask lab`: the real-peer lab of
//! tests/src/edge_lab.rs told as a story. Kamailio is the RFC 5626 edge proxy
//! and registrar, sipflow watches its interface, tshark referees the counts.
//! `lab` also prints every count side by side and Kamailio's log.

use std::collections::BTreeSet;

use sipflow_tests::{
    edge_lab::{self, FLOW_TIMER, GRACE_S, REAL_UA, RESTARTED},
    kamailio::TRANSACTION_TIMER_MS,
};

fn main() {
    let full = std::env::args().nth(1).as_deref() == Some("lab");
    sipflow_tests::interrupt::clean_up_on_signal();
    let start = std::time::Instant::now();
    let outcome = edge_lab::run(if full { "lab" } else { "demo" }, &mut |line| println!("{line}"));

    println!("\nsipflow's verdicts (Flow-Timer {FLOW_TIMER} s from Kamailio's 2xx, grace {GRACE_S} s):");
    for (aor, how) in &outcome.breaks {
        match outcome.flagged.get(*aor) {
            Some(f) => println!(
                "  {aor:<5} {} flow failed: {:<17} judged {:.3} s after the break, would warrant 430: {}",
                f.transport, f.reason, f.after_break_s, f.would_430
            ),
            None => println!("  {aor:<5} NOT flagged ({how})"),
        }
    }
    let (_, restarted) = &outcome.restarted_flows;
    println!(
        "  {RESTARTED:<5} registered again {:.2} s after the kill, from {restarted}: {}",
        outcome.restarted_after_s,
        if outcome.flagged_flows.contains(restarted) { "FLAGGED (wrongly)" } else { "alive, never flagged" }
    );
    for aor in edge_lab::LIVE.iter().filter(|a| **a != RESTARTED).chain([&REAL_UA]) {
        let verdict = if outcome.flagged.contains_key(*aor) { "FLAGGED (wrongly)" } else { "alive, never flagged" };
        let state = outcome.flow_of(aor).map(|f| f["state"].as_str().unwrap_or("?").to_string()).unwrap_or_default();
        println!("  {aor:<5} {verdict} (state {state})");
    }

    println!(
        "\nKamailio's 430 Flow Failed answers (transaction timer {} s), and how long sipflow had known:",
        TRANSACTION_TIMER_MS / 1000
    );
    for (at, aor) in &outcome.answers_430 {
        match outcome.flagged.get(aor) {
            Some(f) if f.would_430 && f.at < *at => {
                println!("  430 for {aor:<5} flagged by sipflow {:.3} s before ({})", at - f.at, f.reason)
            }
            _ => println!("  430 for {aor:<5} NOT predicted by sipflow"),
        }
    }

    let codes: BTreeSet<u16> =
        outcome.tshark.responses.keys().chain(outcome.sipflow.responses.keys()).copied().collect();
    let methods: BTreeSet<&String> = outcome.tshark.requests.keys().chain(outcome.sipflow.requests.keys()).collect();
    println!("\nSIP on the interface: sipflow (in the kernel) against tshark (from a capture):");
    for method in methods {
        let (s, t) = (outcome.sipflow.requests.get(method), outcome.tshark.requests.get(method));
        println!("  {method:<9} {:>4} {:>4}{}", s.unwrap_or(&0), t.unwrap_or(&0), mark(s, t));
    }
    for code in codes {
        let (s, t) = (outcome.sipflow.responses.get(&code), outcome.tshark.responses.get(&code));
        println!("  {code:<9} {:>4} {:>4}{}", s.unwrap_or(&0), t.unwrap_or(&0), mark(s, t));
    }
    if outcome.tshark.tcp_retransmissions > 0 {
        println!(
            "  ({} TCP retransmissions on the SIP port: neither counts their messages again)",
            outcome.tshark.tcp_retransmissions
        );
    }

    println!("\nsipflow's /metrics (excerpt):");
    let interesting = [
        "sipflow_flow_failures_total",
        "sipflow_flows_would_430",
        "sipflow_430_sent_total",
        "sipflow_responses_total{code=\"300\"",
        "sipflow_responses_total{code=\"430\"",
        "sipflow_registrations",
        "sipflow_keepalive_rtt_seconds_count",
    ];
    for line in outcome.metrics.lines() {
        if interesting.iter().any(|m| line.starts_with(m)) && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    if full {
        println!("\nKamailio's log, its script lines:");
        for line in outcome.kamailio_log.lines().filter(|l| l.contains("<script>")) {
            println!("  {line}");
        }
    }
    println!(
        "\nDone in {:.0} s; the lab is removed. `cargo xtask test` runs the checks.",
        start.elapsed().as_secs_f64()
    );
}

fn mark(sipflow: Option<&u64>, tshark: Option<&u64>) -> &'static str {
    if sipflow == tshark { "" } else { "  <- differs" }
}
