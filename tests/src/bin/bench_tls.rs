//! `cargo xtask bench`, TLS: what reading SIP inside TLS costs the SIP server,
//! and what it costs a TLS program that has nothing to do with SIP.
//!
//! Three modes, alternating, `ROUNDS` times (2 by default): without sipflow,
//! with sipflow reading no plaintext (`--no-tls-plaintext`: XDP and TC only),
//! and with sipflow reading it (its uprobes on libssl, its tracepoints on every
//! socket call). In each:
//! 1. a SIP server (OpenSSL, its own process, on the SIPS port in the lab's
//!    server namespace) answers MESSAGEs that a client (its own process, in the
//!    client namespace) sends at a fixed rate; the server process's CPU over
//!    the exchanges is measured;
//! 2. right after, while the same agent still runs, a non-SIP TLS program (its
//!    own process, in a network namespace of its own: a client thread and a
//!    server thread on 127.0.0.1:44330) does 32-byte round trips as fast as it
//!    can; its CPU (both threads) and wall time per round trip are measured.
//!
//! In the plaintext mode the kernel's BPF statistics are on (BPF_ENABLE_STATS,
//! held by a file descriptor: off again when it closes, however the bench
//! ends), and every TLS-path program of the agent (sipflow_ssl_*,
//! sipflow_sock_*, sipflow_tls_*) is read for its runs and run time, apart
//! for the SIP exchange and the non-SIP round trips.
//!
//! Writes target/bench/tls.{md,json}.
//!
//! Usage: sipflow-bench-tls [SECONDS] [RATE] [ROUNDS]. The processes it
//! starts are itself again, with a hidden first argument (`--sip-server`,
//! `--sip-client`, `--other-tls`), each under a name of its own (hard links
//! in its scratch directory): to the agent, three programs.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use monitor_common::tls::{
    SOCK_FOLLOW_PROGRAMS, SOCKET_TRACEPOINTS, SSL_FUNCTIONS, SSL_RETURN_PROGRAM, TLS_FOLLOW_PROGRAMS,
};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::{Value, json};
use sipflow_tests::{
    interrupt,
    netns::{Lab, SERVER_IF, SERVER_V4, http_get},
    scratch_dir::ScratchDir,
};

const SIPS_PORT: u16 = 5061;
/// The non-SIP program's port, on its own loopback.
const OTHER_PORT: u16 = 44330;
/// Bytes each way in one of the non-SIP program's round trips.
const OTHER_BYTES: usize = 32;
/// Round trips of the non-SIP program per second of the SIP exchange (about
/// 2 to 5 s of round trips in the full run, 5 s of exchanges).
const OTHER_PER_SECOND: u64 = 12_000;
/// Round trips before the non-SIP program's measure starts (session tickets, caches).
const OTHER_WARM_UP: u64 = 200;
/// How long a mode waits for another sipflow's TLS probes to go before it runs anyway.
const FOREIGN_WAIT: Duration = Duration::from_secs(60);
/// The agent's programs on the TLS path, by the start of their names.
const TLS_PREFIXES: [&str; 3] = ["sipflow_ssl", "sipflow_sock", "sipflow_tls"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--sip-server") => return sip_server(&args[2..]),
        Some("--sip-client") => return sip_client(&args[2..]),
        Some("--other-tls") => return other_tls(&args[2..]),
        _ => {}
    }
    interrupt::clean_up_on_signal();
    let mut args = args.into_iter().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2).max(1);
    let dir = ScratchDir::new(&format!("sipflow-bench-tls-{}", std::process::id()));
    let (cert, key) = sipflow_tests::tls::self_signed(dir.path());
    let exchanges = seconds * rate;
    let round_trips = seconds * OTHER_PER_SECOND;
    let setup = Setup {
        exchanges,
        rate,
        round_trips,
        cert: &cert,
        key: &key,
        sip_server: program_link(dir.path(), "sip-server"),
        sip_client: program_link(dir.path(), "sip-client"),
        other: program_link(dir.path(), "other-tls"),
    };
    let mut runs: Vec<(Mode, Run)> = Vec::new();
    let mut programs: BTreeMap<String, ProgramTotals> = BTreeMap::new();
    let mut foreign = 0;
    for _ in 0..rounds {
        for mode in Mode::ALL {
            let run = run_mode(mode, &setup);
            eprintln!(
                "{}: {exchanges} exchanges in {:.2} s, SIP server CPU {:.1} us per exchange, read by sipflow {}; \
                 non-SIP: {round_trips} round trips, {:.1} us CPU and {:.1} us wall each",
                mode.label(),
                run.sip_wall_s,
                run.server_cpu_s / exchanges as f64 * 1e6,
                run.read_by_sipflow,
                run.other_cpu_s / round_trips as f64 * 1e6,
                run.other_wall_s / round_trips as f64 * 1e6,
            );
            foreign = foreign.max(run.foreign_tls_programs);
            for (name, totals) in &run.programs {
                programs.entry(name.clone()).or_default().add(totals);
            }
            runs.push((mode, run));
        }
    }
    let mean = |mode: Mode, figure: fn(&Run) -> f64| {
        let picked: Vec<f64> = runs.iter().filter(|(m, _)| *m == mode).map(|(_, r)| figure(r)).collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    };
    let cpu: Vec<f64> = Mode::ALL.iter().map(|m| mean(*m, |r| r.server_cpu_s)).collect();
    let other_cpu: Vec<f64> = Mode::ALL.iter().map(|m| mean(*m, |r| r.other_cpu_s)).collect();
    let other_wall: Vec<f64> = Mode::ALL.iter().map(|m| mean(*m, |r| r.other_wall_s)).collect();
    let read: Vec<f64> = Mode::ALL.iter().map(|m| mean(*m, |r| r.read_by_sipflow as f64)).collect();
    let us_per_exchange = |s: f64| s / exchanges as f64 * 1e6;
    let us_per_round_trip = |s: f64| s / round_trips as f64 * 1e6;
    // Each exchange is one SSL_read and one SSL_write in the server.
    let per_call_us = (cpu[2] - cpu[1]) / (2 * exchanges) as f64 * 1e6;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let percent = |a: f64, b: f64| (ratio(a, b) - 1.0) * 100.0;

    let agent = sipflow_tests::netns::sipflow_bin();
    let mut md = String::new();
    let _ = writeln!(md, "# SIP inside TLS: what it costs the SIP server, and a TLS program that is not SIP\n");
    let _ = writeln!(
        md,
        "{exchanges} MESSAGE/200 exchanges at {rate}/s between the lab's namespaces (the SIP server its own \
         process on port {SIPS_PORT}, its client another); right after, with the same agent running, a non-SIP TLS \
         program (its own process: a client and a server thread on 127.0.0.1:{OTHER_PORT}, a network namespace of \
         its own, both threads on one CPU) does {round_trips} round trips of {OTHER_BYTES} bytes as fast as it \
         can. CPU is the process's (user + system, all its threads). Means of {rounds} round(s), the modes \
         alternating. The agent: {agent}.\n"
    );
    let _ = writeln!(
        md,
        "| mode | SIP server CPU per exchange | non-SIP CPU per round trip | non-SIP wall per round trip | SSL reads taken by sipflow |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: |");
    for (i, mode) in Mode::ALL.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.1} us | {:.1} us | {:.1} us | {:.0} |",
            mode.label(),
            us_per_exchange(cpu[i]),
            us_per_round_trip(other_cpu[i]),
            us_per_round_trip(other_wall[i]),
            read[i]
        );
    }
    let _ = writeln!(md, "\n| ratio | value |\n| --- | ---: |");
    for (what, value) in [
        (
            "non-SIP CPU, --no-tls-plaintext vs without sipflow",
            format!("{:+.1} %", percent(other_cpu[1], other_cpu[0])),
        ),
        ("non-SIP CPU, reading TLS vs without sipflow", format!("{:+.1} %", percent(other_cpu[2], other_cpu[0]))),
        ("non-SIP wall, reading TLS vs without sipflow", format!("{:+.1} %", percent(other_wall[2], other_wall[0]))),
        ("SIP server CPU, --no-tls-plaintext vs without sipflow", format!("{:.2}x", ratio(cpu[1], cpu[0]))),
        ("SIP server CPU, reading TLS vs without sipflow", format!("{:.2}x", ratio(cpu[2], cpu[0]))),
    ] {
        let _ = writeln!(md, "| {what} | {value} |");
    }
    let _ = writeln!(
        md,
        "\nThe plaintext's cost per SSL call: {per_call_us:.2} us; the server's CPU {:+.1} % over sipflow without it.",
        percent(cpu[2], cpu[1])
    );
    if foreign > 0 {
        let _ = writeln!(
            md,
            "\n**Note:** {foreign} TLS-path program(s) of another sipflow were loaded during the runs: every mode paid for them too."
        );
    }

    let plaintext_runs = runs.iter().filter(|(m, _)| *m == Mode::Plaintext).count() as f64;
    let all_exchanges = exchanges as f64 * plaintext_runs;
    // The program's warm-up round trips run with the probes too.
    let all_round_trips = (round_trips + OTHER_WARM_UP) as f64 * plaintext_runs;
    let _ = writeln!(
        md,
        "\n## Where the time goes while sipflow reads TLS (bpf_stats, the {} plaintext run(s) summed)\n",
        plaintext_runs
    );
    let _ = writeln!(
        md,
        "The SIP phase's runs are the server's, and its client's where the agent probes every process \
         (both call SSL_read_ex and SSL_write_ex); the non-SIP phase's are per round trip, its {OTHER_WARM_UP} \
         of warm-up included, from a second, untimed run of the program (the timed one runs without bpf_stats, \
         whose own clock reads would be counted against sipflow). The socket tracepoints fire for every socket call on the host. Programs reached by tail call \
         (sipflow_tls_*) count no runs of their own: their time is in their caller's. The run time is the \
         programs' only: a uprobe's trap (breakpoint, single-step) comes on top.\n"
    );
    let _ = writeln!(
        md,
        "| program | runs | ns per run | runs per SIP exchange | ns per run, SIP | runs per non-SIP round trip | \
         ns per run, non-SIP | BPF ns per SIP exchange | BPF ns per non-SIP round trip |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut total = ProgramTotals::default();
    let mut program_json = Vec::new();
    for (name, p) in &programs {
        total.add(p);
        let _ = writeln!(md, "{}", program_row(name, p, all_exchanges, all_round_trips));
        program_json.push(json!({
            "name": name, "runs": p.runs(), "run_ns": p.ns(), "ns_per_run": p.ns_per_run(),
            "runs_sip": p.sip_runs, "run_ns_sip": p.sip_ns, "runs_other": p.other_runs, "run_ns_other": p.other_ns,
            "runs_per_sip_exchange": p.sip_runs as f64 / all_exchanges,
            "runs_per_other_round_trip": p.other_runs as f64 / all_round_trips,
        }));
    }
    let _ = writeln!(md, "{}", program_row("all", &total, all_exchanges, all_round_trips));
    let sip_extra_us = us_per_exchange(cpu[2] - cpu[1]);
    let other_extra_us = us_per_round_trip(other_cpu[2] - other_cpu[1]);
    let _ = writeln!(
        md,
        "\nCPU added by reading TLS (vs --no-tls-plaintext): {sip_extra_us:.1} us per SIP exchange in the server alone \
         (BPF run time in the SIP phase: {:.1} us); {other_extra_us:.1} us per non-SIP round trip (BPF run time: {:.1} us).",
        total.sip_ns as f64 / all_exchanges / 1e3,
        total.other_ns as f64 / all_round_trips / 1e3
    );
    print!("{md}");

    let out = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("tls.md"), &md).expect("write tls.md");
    let json = json!({
        "exchanges": exchanges,
        "rate": rate,
        "rounds": rounds,
        "agent": agent,
        "server_cpu_s_without_sipflow": cpu[0],
        "server_cpu_s_no_plaintext": cpu[1],
        "server_cpu_s_plaintext": cpu[2],
        "per_ssl_call_us": per_call_us,
        "sip_server_cpu_us_per_exchange_without_sipflow": us_per_exchange(cpu[0]),
        "sip_server_cpu_us_per_exchange_no_plaintext": us_per_exchange(cpu[1]),
        "sip_server_cpu_us_per_exchange_plaintext": us_per_exchange(cpu[2]),
        "sip_server_cpu_ratio_no_plaintext": ratio(cpu[1], cpu[0]),
        "sip_server_cpu_ratio_plaintext": ratio(cpu[2], cpu[0]),
        "other_round_trips": round_trips,
        "other_bytes": OTHER_BYTES,
        "other_cpu_us_per_round_trip_without_sipflow": us_per_round_trip(other_cpu[0]),
        "other_cpu_us_per_round_trip_no_plaintext": us_per_round_trip(other_cpu[1]),
        "other_cpu_us_per_round_trip_plaintext": us_per_round_trip(other_cpu[2]),
        "other_wall_us_per_round_trip_without_sipflow": us_per_round_trip(other_wall[0]),
        "other_wall_us_per_round_trip_no_plaintext": us_per_round_trip(other_wall[1]),
        "other_wall_us_per_round_trip_plaintext": us_per_round_trip(other_wall[2]),
        "other_cpu_percent_no_plaintext": percent(other_cpu[1], other_cpu[0]),
        "other_cpu_percent_plaintext": percent(other_cpu[2], other_cpu[0]),
        "ssl_reads_taken_plaintext": read[2],
        "foreign_tls_programs": foreign,
        "tls_programs": program_json,
    });
    std::fs::write(out.join("tls.json"), json.to_string()).expect("write tls.json");
}

fn program_row(name: &str, p: &ProgramTotals, exchanges: f64, round_trips: f64) -> String {
    let per_run = |ns: u64, runs: u64| if runs == 0 { 0.0 } else { ns as f64 / runs as f64 };
    format!(
        "| {name} | {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
        p.runs(),
        p.ns_per_run(),
        p.sip_runs as f64 / exchanges,
        per_run(p.sip_ns, p.sip_runs),
        p.other_runs as f64 / round_trips,
        per_run(p.other_ns, p.other_runs),
        p.sip_ns as f64 / exchanges,
        p.other_ns as f64 / round_trips
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoSipflow,
    NoPlaintext,
    Plaintext,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::NoSipflow, Mode::NoPlaintext, Mode::Plaintext];

    fn label(self) -> &'static str {
        match self {
            Mode::NoSipflow => "without sipflow",
            Mode::NoPlaintext => "sipflow, --no-tls-plaintext (XDP + TC)",
            Mode::Plaintext => "sipflow reading TLS (+ uprobes, tracepoints)",
        }
    }
}

struct Setup<'a> {
    exchanges: u64,
    rate: u64,
    /// This program under other names (see [`program_link`]).
    sip_server: PathBuf,
    sip_client: PathBuf,
    other: PathBuf,
    round_trips: u64,
    cert: &'a Path,
    key: &'a Path,
}

struct Run {
    sip_wall_s: f64,
    server_cpu_s: f64,
    /// `sipflow_tls_calls_total{result="read"}`: the plaintext was taken (0 without sipflow).
    read_by_sipflow: u64,
    other_cpu_s: f64,
    other_wall_s: f64,
    /// The agent's TLS-path programs (plaintext mode only), by name.
    programs: BTreeMap<String, ProgramTotals>,
    /// TLS-path programs loaded by someone else (another agent) during the run.
    foreign_tls_programs: usize,
}

/// A program's runs and run time, in the SIP phase and in the non-SIP phase.
#[derive(Default, Clone)]
struct ProgramTotals {
    sip_runs: u64,
    sip_ns: u64,
    other_runs: u64,
    other_ns: u64,
}

impl ProgramTotals {
    fn add(&mut self, o: &ProgramTotals) {
        self.sip_runs += o.sip_runs;
        self.sip_ns += o.sip_ns;
        self.other_runs += o.other_runs;
        self.other_ns += o.other_ns;
    }

    fn runs(&self) -> u64 {
        self.sip_runs + self.other_runs
    }

    fn ns(&self) -> u64 {
        self.sip_ns + self.other_ns
    }

    fn ns_per_run(&self) -> f64 {
        if self.runs() == 0 { 0.0 } else { self.ns() as f64 / self.runs() as f64 }
    }
}

/// One mode: a lab (and its agent), the SIP exchange, then the non-SIP program.
fn run_mode(mode: Mode, setup: &Setup) -> Run {
    wait_for_foreign_tls_programs();
    let mut lab = Lab::new("btls");
    match mode {
        Mode::NoSipflow => {}
        Mode::NoPlaintext => lab.start_agent(SERVER_IF, &["--no-tls-plaintext"]),
        Mode::Plaintext => lab.start_agent(SERVER_IF, &[]),
    }
    let agent = (mode != Mode::NoSipflow).then(|| lab.spawned()[0].id());
    // The agent's programs, as it holds them now (it may load more later).
    let mine = || agent.map(agent_program_ids).unwrap_or_default();
    // Stats on for the plaintext mode only: off again when the fd closes.
    let stats: Option<OwnedFd> = (mode == Mode::Plaintext)
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS (run time)"));
    let before = tls_program_stats(&mine());
    let mut foreign = foreign_tls_programs(&mine());

    let (cert, key) = (setup.cert.to_str().expect("UTF-8 path"), setup.key.to_str().expect("UTF-8 path"));
    let exchanges = setup.exchanges.to_string();
    let rate = setup.rate.to_string();
    let mut server = Kid::spawn(
        &mut in_network(&lab.server, &setup.sip_server, &["--sip-server", cert, key, &exchanges]),
        "the SIP server",
    );
    server.line();
    if mode == Mode::Plaintext {
        await_tls_process(&lab.server);
    }
    let client = Kid::spawn(
        &mut in_network(&lab.client, &setup.sip_client, &["--sip-client", &exchanges, &rate]),
        "the SIP client",
    );
    let sip_wall_s = number(&client.report(), "wall_s");
    let server_cpu_s = number(&server.report(), "cpu_s");
    let after_sip = tls_program_stats(&mine());
    foreign = foreign.max(foreign_tls_programs(&mine()));
    // The stats' own cost (two clock reads per program run) is not sipflow's:
    // the non-SIP program is timed without them, and run once more with them
    // for the table of where the time goes.
    drop(stats);

    let run_other = || {
        let other = Kid::spawn(
            Command::new(&setup.other).args(["--other-tls", cert, key, &setup.round_trips.to_string()]),
            "the non-SIP TLS program",
        );
        other.report()
    };
    let other = run_other();
    let (other_cpu_s, other_wall_s) = (number(&other, "cpu_s"), number(&other, "wall_s"));
    foreign = foreign.max(foreign_tls_programs(&mine()));

    let mut programs = BTreeMap::new();
    if mode == Mode::Plaintext {
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS (run time)");
        let before_other = tls_program_stats(&mine());
        run_other();
        let after_other = tls_program_stats(&mine());
        drop(stats);
        for (name, (runs, ns)) in &after_other {
            let (r0, n0) = before.get(name).copied().unwrap_or_default();
            let (r1, n1) = after_sip.get(name).copied().unwrap_or_default();
            let (r2, n2) = before_other.get(name).copied().unwrap_or_default();
            programs.insert(
                name.clone(),
                ProgramTotals {
                    sip_runs: r1.saturating_sub(r0),
                    sip_ns: n1.saturating_sub(n0),
                    other_runs: runs.saturating_sub(r2),
                    other_ns: ns.saturating_sub(n2),
                },
            );
        }
    }
    let read_by_sipflow = if mode == Mode::NoSipflow { 0 } else { tls_calls_read(&lab.server) };
    Run {
        sip_wall_s,
        server_cpu_s,
        read_by_sipflow,
        other_cpu_s,
        other_wall_s,
        programs,
        foreign_tls_programs: foreign,
    }
}

/// This program under another name in `dir` (a hard link, else a copy),
/// for one of the processes it starts. The agent reads TLS in the processes
/// on a SIPS port and in the rest of their program's family (the processes of
/// the same executable descended from its eldest such ancestor, as a SIP
/// server's forked workers are): started as this very file, the client and
/// the non-SIP program would be the server's family, since the bench is.
fn program_link(dir: &Path, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    if std::fs::hard_link(&exe, &link).is_err() {
        std::fs::copy(&exe, &link).unwrap_or_else(|e| panic!("copy {} to {}: {e}", exe.display(), link.display()));
    }
    link
}

/// `program args` in `namespace`'s network (nsenter execs it: the pid is its own).
fn in_network(namespace: &str, program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/var/run/netns/{namespace}")).arg(program).args(args);
    command
}

/// A process this bench started (itself again, with a hidden argument): killed if dropped unwaited.
struct Kid {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    what: &'static str,
}

impl Kid {
    fn spawn(command: &mut Command, what: &'static str) -> Self {
        let child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        interrupt::process_started(child.id());
        let mut child = child;
        let stdout = child.stdout.take().map(BufReader::new);
        Self { child: Some(child), stdout, what }
    }

    /// Waits for its next line on stdout.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.stdout.as_mut().map(|s| s.read_line(&mut line));
        assert!(matches!(read, Some(Ok(n)) if n > 0), "{} ended early", self.what);
        line
    }

    /// Waits for it to end; its last line on stdout is its report, in JSON.
    fn report(mut self) -> Value {
        let mut child = self.child.take().expect("a child");
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let status = child.wait().expect("wait");
        interrupt::process_ended(child.id());
        assert!(status.success(), "{} failed ({status})", self.what);
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{}'s report {last:?}: {e}", self.what))
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            interrupt::process_ended(child.id());
        }
    }
}

fn number(report: &Value, key: &str) -> f64 {
    report[key].as_f64().unwrap_or_else(|| panic!("no {key} in {report}"))
}

/// The ids of the BPF programs the agent holds (its fds, its links' programs).
fn agent_program_ids(pid: u32) -> HashSet<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return HashSet::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok()))
        .collect()
}

fn is_tls_path(name: &str) -> bool {
    TLS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The agent's TLS-path programs by full name: (runs, run time ns).
///
/// The kernel keeps 15 bytes of a name, and sipflow_ssl_read and
/// sipflow_ssl_read_ex (write, write_ex) share them. The agent loads its TLS
/// programs in a known order (the tail-called ones, the tracepoints, the SSL
/// entries in `SSL_FUNCTIONS` order, the return), and ids grow with loading:
/// programs with one kernel name take that order's full names by id.
fn tls_program_stats(mine: &HashSet<u32>) -> BTreeMap<String, (u64, u64)> {
    let mut loaded: Vec<(u32, String, u64, u64)> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| mine.contains(&p.id()))
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            is_tls_path(&name).then(|| (p.id(), name, p.run_count(), p.run_time().as_nanos() as u64))
        })
        .collect();
    loaded.sort_by_key(|p| p.0);
    let mut order: Vec<&str> = TLS_FOLLOW_PROGRAMS.to_vec();
    order.extend(SOCK_FOLLOW_PROGRAMS);
    order.extend(SOCKET_TRACEPOINTS.iter().map(|(_, n)| *n));
    order.extend(SSL_FUNCTIONS.iter().map(|(_, n, _)| *n));
    order.push(SSL_RETURN_PROGRAM);
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeMap::new();
    for (id, kernel_name, runs, ns) in loaded {
        let index = taken.entry(kernel_name.clone()).or_default();
        let full = order
            .iter()
            .filter(|n| {
                n.starts_with(kernel_name.as_str()) && (kernel_name.len() >= 15 || n.len() == kernel_name.len())
            })
            .nth(*index)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("{kernel_name}#{id}"));
        *index += 1;
        let entry: &mut (u64, u64) = out.entry(full).or_default();
        entry.0 += runs;
        entry.1 += ns;
    }
    out
}

/// TLS-path programs loaded that are not the lab's agent's (another agent's
/// probes would tax every mode's SSL calls).
fn foreign_tls_programs(mine: &HashSet<u32>) -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !mine.contains(&p.id()) && p.name_as_str().is_some_and(is_tls_path))
        .count()
}

/// Another sipflow's TLS probes (a test running beside) tax every SSL call
/// on the host, in every mode: waits a while for them to go.
fn wait_for_foreign_tls_programs() {
    let deadline = Instant::now() + FOREIGN_WAIT;
    let mut said = false;
    while foreign_tls_programs(&HashSet::new()) > 0 && Instant::now() < deadline {
        if !said {
            eprintln!(
                "TLS-path programs of another sipflow (or of the last lab's agent, going) are loaded: \
                 waiting up to {FOREIGN_WAIT:?} for them to go"
            );
            said = true;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// An agent that reads TLS only in the processes it found on a SIPS port
/// (`sipflow_tls_processes`) finds a new server at its next scan: waits (10 s
/// at most) until it has, so that no exchange goes unread. An agent without
/// the metric probes every process from the start.
fn await_tls_process(server: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some((_, metrics)) = http_get(server, "http://127.0.0.1:9560/metrics") else { break };
        let series: Vec<f64> = metrics
            .lines()
            .filter(|l| l.starts_with("sipflow_tls_processes{") || l.starts_with("sipflow_tls_processes "))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if series.is_empty() || series.iter().sum::<f64>() >= 1.0 {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the agent reads TLS in no process after 10 s: the first exchanges may go unread");
}

fn tls_calls_read(server: &str) -> u64 {
    let (_, metrics) = http_get(server, "http://127.0.0.1:9560/metrics").expect("scrape");
    metrics
        .lines()
        .find(|l| l.starts_with("sipflow_tls_calls_total{") && l.contains("result=\"read\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// CPU seconds (user + system) of this whole process, all its threads.
fn process_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn sips_address() -> SocketAddr {
    format!("{SERVER_V4}:{SIPS_PORT}").parse().expect("an address")
}

/// `--sip-server CERT KEY EXCHANGES`, in the server's namespace: answers
/// EXCHANGES MESSAGEs on one TLS connection; reports its CPU over them.
fn sip_server(args: &[String]) {
    let [cert, key, exchanges] = args else { panic!("--sip-server CERT KEY EXCHANGES") };
    let exchanges: u64 = exchanges.parse().expect("EXCHANGES");
    let listener = TcpListener::bind(sips_address()).expect("bind the SIPS port");
    let acceptor = sipflow_tests::tls::acceptor(Path::new(cert), Path::new(key));
    println!("{}", json!({ "listening": SIPS_PORT }));
    let (stream, _) = listener.accept().expect("accept");
    let mut tls = acceptor.accept(stream).expect("TLS accept");
    let start = process_cpu();
    let mut buf = vec![0u8; 4096];
    for _ in 0..exchanges {
        let n = read_message(&mut tls, &mut buf);
        assert!(n > 0, "the client went away");
        tls.write_all(OK).expect("write 200");
    }
    let cpu_s = process_cpu() - start;
    println!("{}", json!({ "cpu_s": cpu_s }));
}

/// `--sip-client EXCHANGES RATE`, in the client's namespace: sends EXCHANGES
/// MESSAGEs at RATE per second, each after the last one's 200.
fn sip_client(args: &[String]) {
    let [exchanges, rate] = args else { panic!("--sip-client EXCHANGES RATE") };
    let (exchanges, rate): (u64, u64) = (exchanges.parse().expect("EXCHANGES"), rate.parse().expect("RATE"));
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("TLS context");
    connector.set_verify(SslVerifyMode::NONE);
    let connector = connector.build();
    let stream = connect_with_retries(sips_address());
    let mut tls = connector.configure().unwrap().verify_hostname(false).connect("proxy", stream).expect("handshake");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    for i in 0..exchanges {
        let due = started + Duration::from_micros(i * 1_000_000 / rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        tls.write_all(MESSAGE).expect("write MESSAGE");
        assert!(read_message(&mut tls, &mut buf) > 0, "the server went away");
    }
    println!("{}", json!({ "wall_s": started.elapsed().as_secs_f64() }));
}

/// The server may not listen yet: it is another process.
fn connect_with_retries(address: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(address) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() > deadline => panic!("connect {address}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `--other-tls CERT KEY ROUND_TRIPS`: a TLS program with nothing of SIP, in a
/// network namespace of its own: a server thread echoes 32-byte records back
/// to a client thread over loopback, as fast as they go; reports the
/// process's CPU (both threads) and the wall time over ROUND_TRIPS.
fn other_tls(args: &[String]) {
    let [cert, key, round_trips] = args else { panic!("--other-tls CERT KEY ROUND_TRIPS") };
    let round_trips: u64 = round_trips.parse().expect("ROUND_TRIPS");
    // SAFETY: unshare(2) on this process, single-threaded yet.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare the network namespace");
    let on_cpu = pin_to_one_cpu();
    let lo = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip (package iproute2)");
    assert!(lo.success(), "ip link set lo up");
    let address: SocketAddr = format!("127.0.0.1:{OTHER_PORT}").parse().expect("an address");
    let listener = TcpListener::bind(address).expect("bind the non-SIP port");
    let acceptor = sipflow_tests::tls::acceptor(Path::new(cert), Path::new(key));
    let total = OTHER_WARM_UP + round_trips;
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut tls = acceptor.accept(stream).expect("TLS accept");
        let mut buf = [0u8; OTHER_BYTES];
        for _ in 0..total {
            tls.read_exact(&mut buf).expect("read a record");
            tls.write_all(&buf).expect("write it back");
        }
    });
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("TLS context");
    connector.set_verify(SslVerifyMode::NONE);
    let connector = connector.build();
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut tls = connector.configure().unwrap().verify_hostname(false).connect("other", stream).expect("handshake");
    let out = [7u8; OTHER_BYTES];
    let mut back = [0u8; OTHER_BYTES];
    let mut round_trip = |tls: &mut openssl::ssl::SslStream<TcpStream>| {
        tls.write_all(&out).expect("write a record");
        tls.read_exact(&mut back).expect("read the echo");
    };
    for _ in 0..OTHER_WARM_UP {
        round_trip(&mut tls);
    }
    let (cpu, started) = (process_cpu(), Instant::now());
    for _ in 0..round_trips {
        round_trip(&mut tls);
    }
    let (cpu_s, wall_s) = (process_cpu() - cpu, started.elapsed().as_secs_f64());
    server.join().expect("the echo thread");
    println!("{}", json!({ "cpu_s": cpu_s, "wall_s": wall_s, "cpu": on_cpu }));
}

/// Keeps this thread, and the threads it starts, on one CPU (the last it may
/// use): a ping-pong between two threads on two CPUs of a VM costs a wake-up
/// from idle each way, and the scheduler chooses one or the other placement
/// from run to run (20 or 70 us per round trip here); on one CPU it is the same each time.
fn pin_to_one_cpu() -> usize {
    // SAFETY: an all-zero cpu_set_t is an empty set; the calls fill or read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set), 0, "sched_getaffinity");
        let cpu = (0..libc::CPU_SETSIZE as usize).rev().find(|c| libc::CPU_ISSET(*c, &set)).expect("a CPU");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one), 0, "sched_setaffinity");
        cpu
    }
}

/// Reads one head-only message (up to its empty line).
fn read_message(stream: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut have = 0;
    while !buf[..have].ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => have += n,
        }
    }
    have
}

const MESSAGE: &[u8] = b"MESSAGE sip:alice@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:40000;branch=z9hG4bK-bench\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: bench-tls@192.0.2.1\r\n\
CSeq: 1 MESSAGE\r\n\
Contact: <sip:bob@192.0.2.1:40000;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TLS 192.0.2.1:40000;branch=z9hG4bK-bench\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: <sip:alice@example.com>;tag=a1\r\n\
Call-ID: bench-tls@192.0.2.1\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n";
