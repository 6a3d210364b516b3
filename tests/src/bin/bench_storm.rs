//! `cargo xtask bench`, its storm part (issues 19 and 13): REGISTER/200 pairs
//! as fast as a small registrar answers them, with sipflow on the server's veth
//! seeing both directions. Three runs, each a fresh lab and agent
//! (`--sweep-interval 200ms`):
//!
//! - one flow: COUNT outbound REGISTERs (distinct AOR and instance, reg-id=1)
//!   pipelined from one UDP socket, in bursts of 500;
//! - COUNT flows: the same REGISTERs, each from a UDP socket of its own, bound to
//!   its own address:port (192.0.2.10 on, 60 000 ports each), opened, answered
//!   and closed in batches of 1000 sockets (real sockets rather than a raw
//!   socket: the answers must reach a socket, or the host would not accept them);
//! - the issue-13 flood: COUNT plain REGISTERs with random AORs from random
//!   source ports against the same always-200 registrar, the agent run with
//!   `--max-bindings COUNT/2`: the refusals must be exactly COUNT - COUNT/2.
//!
//! For each: pairs answered, bindings bound (`sipflow_registrations`), seconds
//! from the first REGISTER until the bindings settle, the agent's RSS, what it
//! wrote to its state file per second (every version of the file seen by
//! polling it every 200 ms, and /proc/PID/io), and whether /healthz and
//! /metrics answered 200 at every poll (every 200 ms) during the storm. The two
//! many-flow runs size the kernel's flow map for their flows (`--max-flows`,
//! twice COUNT): an operator expecting that many flows would. Writes
//! target/bench/storm.{md,json}; exits 1 when a check fails.
//!
//! Usage: sipflow-bench-storm [COUNT] [RATE]
//!
//! RATE caps the REGISTERs sent per second (default: as fast as the registrar answers).

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    os::unix::fs::MetadataExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    proc_stats::{cpu_seconds, io_field, status_kb},
    registrar::{self, Storm},
};

/// How often /healthz, /metrics and the state file are looked at.
const POLL: Duration = Duration::from_millis(200);
/// How long the bindings may take to settle after the last answer.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// The agent rewrites its state file at most every 5 s: wait this long after
/// settling for the last rewrite.
const LAST_WRITE: Duration = Duration::from_secs(6);
/// The goal: a storm of pairs bound within this.
const GOAL_S: f64 = 10.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    OneFlow,
    ManyFlows,
    Flood,
}

impl Kind {
    fn title(self, count: usize) -> String {
        match self {
            Kind::OneFlow => format!("{count} pairs, one flow"),
            Kind::ManyFlows => format!("{count} pairs, {count} flows"),
            Kind::Flood => format!("flood of {count}, --max-bindings {}", count / 2),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::OneFlow => "one_flow",
            Kind::ManyFlows => "many_flows",
            Kind::Flood => "flood",
        }
    }
}

/// One look at the agent.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    healthz: Option<u16>,
    healthz_ms: f64,
    metrics: Option<u16>,
    metrics_ms: f64,
    /// Bindings, outbound and plain.
    bound: Option<f64>,
    bindings_full: f64,
    /// The agent's last sweep, as /metrics gave it.
    sweep_s: f64,
}

#[derive(Default)]
struct Watched {
    samples: Vec<Sample>,
    /// Each new version of the state file: when it was seen, its size.
    writes: Vec<(Instant, u64)>,
}

fn timed_get(server: &str, url: &str) -> (Option<(u16, String)>, f64) {
    let started = Instant::now();
    let answer = http_get(server, url);
    (answer, started.elapsed().as_secs_f64() * 1000.0)
}

/// Polls /healthz, /metrics and the state file every 200 ms until `stop`.
fn watch(server: String, state_file: String, stop: Arc<AtomicBool>, into: Arc<Mutex<Watched>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut version = None;
        while !stop.load(Ordering::Relaxed) {
            let tick = Instant::now();
            let (healthz, healthz_ms) = timed_get(&server, "http://127.0.0.1:9560/healthz");
            let (metrics, metrics_ms) = timed_get(&server, "http://127.0.0.1:9560/metrics");
            let text = metrics.as_ref().filter(|(status, _)| *status == 200).map(|(_, t)| t.as_str());
            let refused = |reason| {
                text.and_then(|t| metric(t, "sipflow_registrations_refused_total", &[("reason", reason)]))
                    .unwrap_or(0.0)
            };
            let sample = Sample {
                at: Instant::now(),
                healthz: healthz.as_ref().map(|(s, _)| *s),
                healthz_ms,
                metrics: metrics.as_ref().map(|(s, _)| *s),
                metrics_ms,
                bound: text.map(bindings),
                bindings_full: refused("bindings_full"),
                sweep_s: text.and_then(|t| metric(t, "sipflow_sweep_seconds", &[])).unwrap_or(0.0),
            };
            let file = std::fs::metadata(&state_file).ok().map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()));
            let mut watched = into.lock().unwrap();
            watched.samples.push(sample);
            if file.is_some() && file != version {
                watched.writes.push((Instant::now(), file.map(|f| f.3).unwrap_or(0)));
                version = file;
            }
            drop(watched);
            thread::sleep(POLL.saturating_sub(tick.elapsed()));
        }
    })
}

/// Bindings of both kinds.
fn bindings(text: &str) -> f64 {
    ["true", "false"].iter().filter_map(|o| metric(text, "sipflow_registrations", &[("outbound", o)])).sum()
}

struct Run {
    kind: Kind,
    storm: Storm,
    answers_sent: u64,
    bound: f64,
    bindings_full: f64,
    refused_other: f64,
    lost: f64,
    /// Flows the kernel's LRU map evicted: their REGISTER's answer may go unseen.
    evicted: f64,
    kernel_registers: f64,
    kernel_oks: f64,
    /// First REGISTER to the first poll showing the settled bindings.
    settle_s: Option<f64>,
    /// First REGISTER to the last poll at which the bindings changed.
    last_change_s: f64,
    rss_idle_kb: u64,
    rss_kb: u64,
    hwm_kb: u64,
    agent_cpu_s: f64,
    state_writes: usize,
    state_bytes: u64,
    /// First REGISTER to the last rewrite seen.
    state_window_s: f64,
    state_final_bytes: u64,
    io_write_bytes: u64,
    polls: usize,
    healthz_ok: usize,
    metrics_ok: usize,
    healthz_max_ms: f64,
    metrics_max_ms: f64,
    /// The slowest sweep any poll saw.
    sweep_max_s: f64,
    failures: Vec<String>,
}

fn measure(kind: Kind, count: usize, rate: Option<u32>) -> Run {
    let mut lab = Lab::new("storm");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let mut args = vec!["--sweep-interval".to_string(), "200ms".to_string()];
    if kind != Kind::OneFlow {
        args.extend(["--max-flows".to_string(), (2 * count).max(65_536).to_string()]);
    }
    if kind == Kind::Flood {
        args.extend(["--max-bindings".to_string(), (count / 2).to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_agent(SERVER_IF, &args);
    let agent = lab.spawned()[0].id();

    let stop_registrar = Arc::new(AtomicBool::new(false));
    let socket = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).expect("bind 5060"));
    let answering = registrar::udp_registrar(socket, 30, stop_registrar.clone());
    let to: SocketAddr = format!("{SERVER_V4}:5060").parse().unwrap();
    let salt = u64::from(std::process::id()) << 8 | kind as u64;
    let addresses = match kind {
        Kind::OneFlow => Vec::new(),
        Kind::ManyFlows => registrar::add_client_addresses(&client, count.div_ceil(60_000)),
        Kind::Flood => registrar::add_client_addresses(&client, count.div_ceil(60_000) + 1),
    };
    thread::sleep(Duration::from_millis(500));

    let rss_idle_kb = status_kb(agent, "VmRSS");
    let (cpu_before, io_before) = (cpu_seconds(agent), io_field(agent, "write_bytes"));
    let watched = Arc::new(Mutex::new(Watched::default()));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch(server.clone(), lab.state_file(), stop_watch.clone(), watched.clone());

    eprintln!("storm: {}", kind.title(count));
    let outbound = |n: usize, local: SocketAddr, tag: &str| {
        let instance = registrar::instance(salt, n);
        registrar::register(&format!("u{n}"), local, &registrar::call_id(n, tag), Some(&instance))
    };
    let storm = match kind {
        Kind::OneFlow => registrar::one_flow(&client, to, count, 500, rate, |n, local| outbound(n, local, "one")),
        Kind::ManyFlows => registrar::many_flows(
            &client,
            to,
            count,
            1000,
            rate,
            |n| registrar::sequential_source(&addresses, n),
            |n, local| outbound(n, local, "many"),
        ),
        Kind::Flood => {
            let mut rng = fastrand::Rng::new();
            let mut seen = HashSet::new();
            let aors: Vec<String> = std::iter::from_fn(|| Some(format!("r{:016x}", rng.u64(..))))
                .filter(|aor| seen.insert(aor.clone()))
                .take(count)
                .collect();
            let mut ports = fastrand::Rng::new();
            registrar::many_flows(
                &client,
                to,
                count,
                1000,
                rate,
                move |_| {
                    let address = addresses[ports.usize(..addresses.len())];
                    SocketAddr::V4(SocketAddrV4::new(address, ports.u16(1024..)))
                },
                move |n, local| registrar::register(&aors[n], local, &registrar::call_id(n, "flood"), None),
            )
        }
    };
    eprintln!(
        "storm: {} of {} answered over {} flows in {:.2} s ({} retransmissions)",
        storm.answered, storm.sent, storm.flows, storm.seconds, storm.retransmissions
    );

    // Settled: every answered REGISTER bound, or (the flood) the cap full and the rest refused.
    let answered = storm.answered as f64;
    let settled = |s: &Sample| match kind {
        Kind::Flood => s.bound == Some((count / 2) as f64) && s.bindings_full == answered - (count / 2) as f64,
        _ => s.bound == Some(answered),
    };
    let since_storm = Instant::now();
    while since_storm.elapsed() < SETTLE_LIMIT && !watched.lock().unwrap().samples.last().is_some_and(settled) {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(LAST_WRITE);
    stop_watch.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");

    let rss_kb = status_kb(agent, "VmRSS");
    let hwm_kb = status_kb(agent, "VmHWM");
    let agent_cpu_s = cpu_seconds(agent) - cpu_before;
    let io_write_bytes = io_field(agent, "write_bytes").saturating_sub(io_before);
    let text = http_get(&server, "http://127.0.0.1:9560/metrics").map(|(_, t)| t).unwrap_or_default();
    stop_registrar.store(true, Ordering::Relaxed);
    let answers_sent = answering.join().expect("registrar");
    let state_final_bytes = std::fs::metadata(lab.state_file()).map(|m| m.len()).unwrap_or(0);
    drop(lab);

    let watched = std::mem::take(&mut *watched.lock().unwrap());
    let since_first = |at: Instant| at.saturating_duration_since(storm.first_sent).as_secs_f64();
    let settle_s = watched.samples.iter().find(|s| settled(s)).map(|s| since_first(s.at));
    let last_change_s =
        watched.samples.windows(2).rfind(|w| w[0].bound != w[1].bound).map(|w| since_first(w[1].at)).unwrap_or(0.0);
    let writes: Vec<&(Instant, u64)> = watched.writes.iter().filter(|(at, _)| *at >= storm.first_sent).collect();
    let samples = &watched.samples;
    let max = |f: fn(&Sample) -> f64| samples.iter().map(f).fold(0.0, f64::max);

    let mut run = Run {
        kind,
        answers_sent,
        bound: bindings(&text),
        bindings_full: metric(&text, "sipflow_registrations_refused_total", &[("reason", "bindings_full")])
            .unwrap_or(f64::NAN),
        refused_other: ["pending_full", "cut_head", "too_many_contacts"]
            .iter()
            .map(|r| metric(&text, "sipflow_registrations_refused_total", &[("reason", r)]).unwrap_or(f64::NAN))
            .sum(),
        lost: metric(&text, "sipflow_events_lost_total", &[]).unwrap_or(f64::NAN),
        evicted: sum_of(&text, "sipflow_flow_evictions_total"),
        kernel_registers: metric(&text, "sipflow_requests_total", &[("method", "REGISTER")]).unwrap_or(0.0),
        kernel_oks: metric(&text, "sipflow_responses_total", &[("code", "200")]).unwrap_or(0.0),
        settle_s,
        last_change_s,
        rss_idle_kb,
        rss_kb,
        hwm_kb,
        agent_cpu_s,
        state_writes: writes.len(),
        state_bytes: writes.iter().map(|(_, size)| size).sum(),
        state_window_s: writes.last().map(|(at, _)| since_first(*at)).unwrap_or(0.0),
        state_final_bytes,
        io_write_bytes,
        polls: samples.len(),
        healthz_ok: samples.iter().filter(|s| s.healthz == Some(200)).count(),
        metrics_ok: samples.iter().filter(|s| s.metrics == Some(200)).count(),
        healthz_max_ms: max(|s| s.healthz_ms),
        metrics_max_ms: max(|s| s.metrics_ms),
        sweep_max_s: max(|s| s.sweep_s),
        failures: Vec::new(),
        storm,
    };
    run.failures = check(&run, count);
    eprintln!("storm: {}: {}", kind.title(count), if run.failures.is_empty() { "pass" } else { "FAIL" });
    run
}

fn check(r: &Run, count: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if r.storm.answered != r.storm.sent {
        failures.push(format!("{} of {} REGISTERs answered", r.storm.answered, r.storm.sent));
    }
    match r.kind {
        Kind::Flood => {
            let cap = (count / 2) as f64;
            if r.bound != cap {
                failures.push(format!("{} bindings, not the cap {cap}", r.bound));
            }
            if r.bindings_full != (count - count / 2) as f64 {
                failures.push(format!("bindings_full {} (expected {})", r.bindings_full, count - count / 2));
            }
        }
        _ => {
            if r.bound != r.storm.answered as f64 {
                failures.push(format!("{} bindings for {} REGISTERs answered 200", r.bound, r.storm.answered));
            }
            if r.bindings_full != 0.0 {
                failures.push(format!("bindings_full {}", r.bindings_full));
            }
        }
    }
    if r.refused_other != 0.0 {
        failures.push(format!("pending_full + cut_head {}", r.refused_other));
    }
    if r.lost != 0.0 {
        failures.push(format!("{} events lost", r.lost));
    }
    if r.healthz_ok != r.polls || r.metrics_ok != r.polls {
        failures.push(format!("/healthz 200 {}/{}, /metrics 200 {}/{}", r.healthz_ok, r.polls, r.metrics_ok, r.polls));
    }
    failures
}

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let count: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000).max(2);
    let rate: Option<u32> = std::env::args().nth(2).and_then(|a| a.parse().ok());
    sipflow_tests::interrupt::clean_up_on_signal();
    let runs: Vec<Run> =
        [Kind::OneFlow, Kind::ManyFlows, Kind::Flood].into_iter().map(|k| measure(k, count, rate)).collect();

    let pace = rate.map(|r| format!(", at most {r} a second")).unwrap_or_default();
    let mut md = format!("# Registration storms: {count} REGISTER/200 pairs{pace}\n\n| figure |");
    for r in &runs {
        let _ = write!(md, " {} |", r.kind.title(count));
    }
    md.push_str("\n| --- |");
    md.push_str(&" ---: |".repeat(runs.len()));
    md.push('\n');
    let mut row = |figure: &str, value: &dyn Fn(&Run) -> String| {
        let _ = write!(md, "| {figure} |");
        for r in &runs {
            let _ = write!(md, " {} |", value(r));
        }
        md.push('\n');
    };
    row("client flows", &|r| r.storm.flows.to_string());
    row("REGISTERs sent / answered 200 (retransmitted)", &|r| {
        format!("{} / {} ({})", r.storm.sent, r.storm.answered, r.storm.retransmissions)
    });
    row("registrar answers sent", &|r| r.answers_sent.to_string());
    row("first REGISTER to last answer, s (pairs/s)", &|r| {
        format!("{:.2} ({:.0})", r.storm.seconds, r.storm.answered as f64 / r.storm.seconds.max(1e-9))
    });
    row("sipflow counted REGISTER / 200", &|r| format!("{} / {}", r.kernel_registers, r.kernel_oks));
    row("bindings bound (sipflow_registrations)", &|r| r.bound.to_string());
    row("refused: bindings_full / pending_full + cut_head", &|r| format!("{} / {}", r.bindings_full, r.refused_other));
    row("events lost", &|r| r.lost.to_string());
    row("flows evicted (sipflow_flow_evictions_total)", &|r| r.evicted.to_string());
    row("first REGISTER to bindings settled, s", &|r| match r.settle_s {
        Some(s) => format!("{s:.2}{}", if s <= GOAL_S { "" } else { " (over 10 s)" }),
        None => format!("not settled; last change at {:.2}", r.last_change_s),
    });
    row("agent RSS idle / after, MiB (peak)", &|r| {
        format!(
            "{:.1} / {:.1} ({:.1})",
            r.rss_idle_kb as f64 / 1024.0,
            r.rss_kb as f64 / 1024.0,
            r.hwm_kb as f64 / 1024.0
        )
    });
    row("RSS growth per binding, bytes", &|r| {
        format!("{:.0}", (r.rss_kb.saturating_sub(r.rss_idle_kb) * 1024) as f64 / r.bound.max(1.0))
    });
    row("agent CPU during the run, s", &|r| format!("{:.2}", r.agent_cpu_s));
    row("slowest sweep (sipflow_sweep_seconds), s", &|r| format!("{:.3}", r.sweep_max_s));
    row("state file: rewrites, MiB written", &|r| format!("{}, {:.1}", r.state_writes, r.state_bytes as f64 / MIB));
    row("state file MiB/s (first REGISTER to last rewrite, s)", &|r| {
        format!("{:.2} ({:.1})", r.state_bytes as f64 / MIB / r.state_window_s.max(1e-9), r.state_window_s)
    });
    row("state file at the end, MiB", &|r| format!("{:.1}", r.state_final_bytes as f64 / MIB));
    row("agent write_bytes (/proc/PID/io), MiB", &|r| format!("{:.1}", r.io_write_bytes as f64 / MIB));
    row("/healthz 200: polls (slowest ms)", &|r| format!("{}/{} ({:.0})", r.healthz_ok, r.polls, r.healthz_max_ms));
    row("/metrics 200: polls (slowest ms)", &|r| format!("{}/{} ({:.0})", r.metrics_ok, r.polls, r.metrics_max_ms));
    row("result", &|r| if r.failures.is_empty() { "pass".to_string() } else { r.failures.join("; ") });
    md.push_str(
        "\nSettled: every REGISTER answered 200 is a binding (the flood: the cap full, the rest refused), \
         at the first 200 ms poll of /metrics that shows it. State file: each version seen by polling it every \
         200 ms, its size counted once.\n",
    );
    print!("{md}");

    let json: Vec<_> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "run": r.kind.name(), "count": count, "rate": rate, "flows": r.storm.flows, "sent": r.storm.sent,
                "answered": r.storm.answered, "retransmissions": r.storm.retransmissions,
                "registrar_answers": r.answers_sent, "send_s": r.storm.seconds,
                "kernel_registers": r.kernel_registers, "kernel_200s": r.kernel_oks, "bound": r.bound,
                "refused_bindings_full": r.bindings_full, "refused_other": r.refused_other, "events_lost": r.lost, "flows_evicted": r.evicted,
                "settle_s": r.settle_s, "last_change_s": r.last_change_s,
                "agent_rss_idle_kb": r.rss_idle_kb, "agent_rss_kb": r.rss_kb, "agent_rss_peak_kb": r.hwm_kb,
                "agent_cpu_s": r.agent_cpu_s, "state_writes": r.state_writes, "state_bytes": r.state_bytes,
                "state_window_s": r.state_window_s, "state_final_bytes": r.state_final_bytes,
                "agent_write_bytes": r.io_write_bytes, "polls": r.polls, "healthz_ok": r.healthz_ok,
                "metrics_ok": r.metrics_ok, "healthz_max_ms": r.healthz_max_ms, "metrics_max_ms": r.metrics_max_ms, "sweep_max_s": r.sweep_max_s,
                "failures": r.failures,
            })
        })
        .collect();
    let dir = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("storm.md"), &md).expect("write storm.md");
    std::fs::write(dir.join("storm.json"), serde_json::to_string_pretty(&json).unwrap()).expect("write storm.json");
    println!("written to {}/storm.{{md,json}}", dir.display());
    if runs.iter().any(|r| !r.failures.is_empty()) {
        std::process::exit(1);
    }
}

/// A metric summed over all its series (every interface).
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
