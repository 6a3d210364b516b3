//! Running cargo and the built programs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::command::cargo;

/// Style first (cheap), then every test; the namespace tests need the sipflow binary built.
pub fn test() -> Result<()> {
    cargo(&["fmt", "--all", "--check"]).context("run `cargo fmt --all` to fix the formatting")?;
    // The kernel crate's binary only builds for the BPF target; its library is linted on the host.
    cargo(&["clippy", "--workspace", "--exclude", "monitor-ebpf", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&["clippy", "-p", "monitor-ebpf", "--lib", "--", "-D", "warnings"])?;
    cargo(&["build", "-p", "monitor", "--bins"])?;
    let mut tally = Tally::default();
    // The kernel crate's parsing code also runs on the host.
    cargo_test(&["test", "-p", "monitor-ebpf", "--lib"], &mut tally)?;
    // The default members: everything but the kernel crate's BPF binary.
    cargo_test(&["test"], &mut tally)?;
    // Seconds of each benchmark, so that `cargo xtask bench` keeps working; the
    // figures go to target/bench-smoke and mean nothing.
    if let Err(e) = bench_smoke() {
        println!("tests: {} passed, {} failed", tally.passed, tally.failed + 1);
        return Err(e.context("the benchmark smoke run failed"));
    }
    tally.passed += 1;
    // Half a minute of the soak: load, churn and two restarts of the agent.
    if let Err(e) = soak(30, 100) {
        println!("tests: {} passed, {} failed", tally.passed, tally.failed + 1);
        return Err(e.context("the 30-second soak failed (target/soak/soak.md)"));
    }
    tally.passed += 1;
    // The package, built from the debug binary: every file in it, and its binary runs.
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sipflow");
    if let Err(e) = crate::dist::check(&binary) {
        println!("tests: {} passed, {} failed", tally.passed, tally.failed + 1);
        return Err(e.context("the package check failed"));
    }
    tally.passed += 1;
    // One closing line for all the runs above, so the total is plain.
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

fn bench_smoke() -> Result<()> {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-smoke");
    for (bin, args) in [
        ("sipflow-bench", &["1000"][..]),
        ("sipflow-bench-live", &["2", "100"]),
        ("sipflow-bench-scale", &["2000"]),
        ("sipflow-bench-storm", &["2000"]),
        ("sipflow-bench-verdicts", &["20"]),
        ("sipflow-bench-bindings", &["2000"]),
        ("sipflow-bench-tls", &["1", "200", "1"]),
    ] {
        let mut command = vec!["run", "--quiet", "-p", "sipflow-tests", "--bin", bin, "--"];
        command.extend_from_slice(args);
        let status = Command::new(env!("CARGO"))
            .args(&command)
            .env("SIPFLOW_BENCH_OUT", &out)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run {bin}"))?;
        if !status.success() {
            bail!("{bin} {} failed", args.join(" "));
        }
    }
    println!("bench: the smoke run of every benchmark worked ({})", out.display());
    Ok(())
}

/// `sipflow-soak SECONDS RATE`; fails when one of its checks does.
pub fn soak(seconds: u64, rate: u32) -> Result<()> {
    cargo(&["build", "-p", "monitor", "--bins"])?;
    cargo(&[
        "run",
        "--quiet",
        "-p",
        "sipflow-tests",
        "--bin",
        "sipflow-soak",
        "--",
        &seconds.to_string(),
        &rate.to_string(),
    ])
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Runs cargo test, echoing its output and adding up its `test result:` lines.
fn cargo_test(args: &[&str], tally: &mut Tally) -> Result<()> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("run cargo {}", args.join(" ")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word).map(str::trim))
                    .and_then(|n| n.rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            tally.passed += count("passed");
            tally.failed += count("failed");
        }
    }
    if !child.wait()?.success() {
        println!("tests: {} passed, {} failed", tally.passed, tally.failed.max(1));
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

pub fn bench(repeat: u32, samples: u32, live_seconds: u32, rate: u32, scale_flows: &str) -> Result<()> {
    // The agent as operators run it: a release build (a debug agent spends
    // most of a storm parsing heads unoptimised).
    cargo(&["build", "--release", "-p", "monitor", "--bins"])?;
    let bench = |name: &str, args: &[&str]| {
        let mut all = vec!["run", "--release", "--quiet", "-p", "sipflow-tests", "--bin", name, "--"];
        all.extend_from_slice(args);
        cargo(&all)
    };
    bench("sipflow-bench", &[&repeat.to_string(), &samples.to_string()])?;
    if live_seconds > 0 {
        bench("sipflow-bench-live", &[&live_seconds.to_string(), &rate.to_string()])?;
    }
    let sizes: Vec<&str> = scale_flows.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if !sizes.is_empty() {
        bench("sipflow-bench-scale", &sizes)?;
    }
    // Registration storms: 100 000 REGISTER/200 pairs over one flow, over as many flows, and a capped flood.
    bench("sipflow-bench-storm", &["100000"])?;
    // From an RST or FIN to its verdict; the binding table with a million registrations.
    bench("sipflow-bench-verdicts", &["400"])?;
    bench("sipflow-bench-bindings", &["1000000"])?;
    // What reading SIP inside TLS costs the TLS server, per SSL call.
    bench("sipflow-bench-tls", &["5", "2000"])?;
    Ok(())
}

/// The real-peer lab as a story; `full` for every count and Kamailio's log (`cargo xtask lab`).
pub fn demo(full: bool) -> Result<()> {
    cargo(&["build", "-p", "monitor", "--bins"])?;
    let mut args = vec!["run", "--quiet", "-p", "sipflow-tests", "--bin", "sipflow-demo"];
    if full {
        args.extend(["--", "lab"]);
    }
    cargo(&args)
}
