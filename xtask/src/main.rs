//! Developer tasks: `cargo xtask setup | build | test | demo | lab | bench | soak | dist`.
//!
//! xtask depends on nothing of sipflow's own, so it builds on a machine that
//! does not have the eBPF toolchain yet; `setup` is what installs it.

mod command;
mod dist;
mod run;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sipflow's developer tasks")]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// A Debian package in target/dist/: the release binary, its unit, config, rules,
    /// dashboard, manifests, man page and completions.
    Dist,
    /// Install what building and testing need (idempotent; quick when all is there).
    Setup,
    /// Build the release binary, kernel programs embedded: target/release/sipflow.
    Build,
    /// Run every test: unit, kernel (BPF_PROG_TEST_RUN) and namespace tests, plus fmt and clippy. Needs root.
    Test,
    /// The real-peer lab in small, told as a story: Kamailio as RFC 5626 edge proxy, flows that
    /// break, sipflow's verdicts before Kamailio's 430s, counts against tshark. Needs root.
    Demo,
    /// The same lab with every count side by side and Kamailio's script log. Needs root.
    Lab,
    /// sipflow under sipp load with churning flows, restarted twice on the way: no packet lost,
    /// no healthy flow flagged, RSS flat. Writes target/soak/. Needs root.
    Soak {
        /// How long to run (CI runs half a minute).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Calls per second sipp places.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Measure the XDP program's cost per packet class; writes target/bench/. Needs root.
    Bench {
        /// Runs per packet class and sample (BPF_PROG_TEST_RUN repeat).
        #[arg(long, default_value_t = 20_000)]
        repeat: u32,
        /// Samples per packet class: the fastest is given (the host's interruptions left out).
        #[arg(long, default_value_t = 40)]
        samples: u32,
        /// Seconds of live sipp load through the namespace lab (0: skip the live part).
        #[arg(long, default_value_t = 20)]
        live_seconds: u32,
        /// Calls per second sipp places in the live part.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Flow map sizes for the agent-at-scale part, comma-separated (empty: skip it).
        #[arg(long, default_value = "100000,1000000")]
        scale_flows: String,
    },
}

fn main() {
    let task = Xtask::parse().task;
    let result: Result<()> = match task {
        Task::Setup => setup::setup(),
        Task::Dist => setup::setup().and_then(|()| dist::dist()),
        Task::Build => setup::setup().and_then(|()| command::cargo(&["build", "--release", "-p", "monitor"])),
        Task::Test => command::require_root("the tests load BPF programs and create network namespaces")
            .and_then(|()| setup::setup())
            .and_then(|()| run::test()),
        Task::Bench { repeat, samples, live_seconds, rate, scale_flows } => {
            command::require_root("the benchmark loads BPF programs")
                .and_then(|()| setup::setup())
                .and_then(|()| run::bench(repeat, samples, live_seconds, rate, &scale_flows))
        }
        Task::Soak { minutes, rate } => command::require_root("the soak attaches XDP and creates network namespaces")
            .and_then(|()| setup::setup())
            .and_then(|()| run::soak((minutes * 60.0).round() as u64, rate)),
        Task::Demo => command::require_root("the demo attaches XDP and creates network namespaces")
            .and_then(|()| setup::setup())
            .and_then(|()| run::demo(false)),
        Task::Lab => command::require_root("the lab attaches XDP and creates network namespaces")
            .and_then(|()| setup::setup())
            .and_then(|()| run::demo(true)),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
