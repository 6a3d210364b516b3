//! The command line (docs/options.md).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use monitor_common::ports::{DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT};

#[derive(Parser, Debug)]
#[command(
    name = "sipflow",
    version,
    about = "Passive SIP flow monitor: XDP classifies SIP, RFC 5626 keepalives and STUN per flow; \
             the agent exports Prometheus metrics and the flows an edge proxy would answer 430 for.",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to interfaces and serve /metrics, /flows and /healthz until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Ask the running agent for its flows and print them as a table (or JSON).
    Flows(FlowsArgs),
    /// Check that sipflow can run here: privileges, kernel, BTF, BPF filesystem,
    /// interface, XDP. One line per check; exit 0 only when all pass.
    Check(CheckArgs),
    /// Remove everything sipflow left on interfaces: the programs it keeps
    /// attached (--keep-attached) and the pinned maps with their flows and counts.
    Detach(DetachArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sipflow manpage run | man -l -`.
    Manpage {
        /// The subcommand whose page to print (sipflow-run(1), ...); none for sipflow(1).
        command: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Interface to check (repeat for several).
    #[arg(short = 'i', long = "iface", value_name = "IFACE", required = true, value_parser = iface_name)]
    pub ifaces: Vec<String>,

    /// XDP mode to try, as `sipflow run --xdp-mode`.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// SIPS ports, as `sipflow run --sips-port` (default 5061): the processes
    /// holding a socket on one are those whose TLS `sipflow run` reads.
    #[arg(long = "sips-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub sips_ports: Vec<u16>,

    /// Where sipflow pins its programs, maps and links: a program on the hook
    /// linked from here is sipflow's own, not a failure.
    #[arg(long, value_name = "DIR", default_value = crate::kernel::pins::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct DetachArgs {
    /// Interface to clear (repeat for several).
    #[arg(short = 'i', long = "iface", value_name = "IFACE", required = true, value_parser = iface_name)]
    pub ifaces: Vec<String>,

    /// Where the agent pinned them (its --pin-dir).
    #[arg(long, value_name = "DIR", default_value = crate::kernel::pins::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct FlowsArgs {
    /// Only the flows in this state.
    #[arg(long, value_enum)]
    pub state: Option<FlowStateArg>,

    /// Print the agent's JSON as it is, rather than a table.
    #[arg(long)]
    pub json: bool,

    /// Where the agent listens (its --listen).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9560")]
    pub agent: SocketAddr,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStateArg {
    Failed,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Interface to monitor (repeat for several). XDP sees the packets that arrive
    /// on it. Required, here or as `iface` in the --config file.
    #[arg(short = 'i', long = "iface", value_name = "IFACE", value_parser = iface_name)]
    pub ifaces: Vec<String>,

    /// A TOML file with any of these options, keys spelled with `_` for `-`
    /// (deploy/sipflow.toml is an example). Options on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// SIP port in clear text, UDP and TCP (repeatable). Default: 5060.
    #[arg(long = "sip-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub sip_ports: Vec<u16>,

    /// SIP over TLS port (repeatable). Default: 5061. Its flows are tracked at
    /// the TCP level, and their SIP is read in clear from the host's TLS
    /// library where the host is the TLS server (see --tls-lib).
    #[arg(long = "sips-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub sips_ports: Vec<u16>,

    /// SIP over WebSocket in clear (RFC 7118) on this port (repeatable; none by
    /// default): SIP read from the frames, WebSocket pings and CRLF keepalives
    /// both count. For secure WebSocket (wss), give its port with --sips-port:
    /// the frames are then read from the TLS library.
    #[arg(long = "ws-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ws_ports: Vec<u16>,

    /// TLS library whose SSL_read and SSL_write (OpenSSL's API, and their _ex
    /// forms) are probed for the SIP in TLS flows, in every process that maps
    /// it, started before sipflow or after (repeatable). Default: libssl.so.3
    /// as the dynamic linker finds it. A server linked statically is covered
    /// by naming its own binary here, when it has a symbol table.
    #[arg(long = "tls-lib", value_name = "PATH")]
    pub tls_libs: Vec<PathBuf>,

    /// Name the clients of a network, for figures by peer: NAME=CIDR[,CIDR...]
    /// (repeatable; a name given again adds networks; at most 64 names;
    /// IPv4 and IPv6). A flow's peer is its client's longest matching network;
    /// clients in none are `other`. Names: letters, digits, `_`, `-`, `.`.
    #[arg(long = "peer", value_name = "NAME=CIDR", value_parser = crate::peers::peer_arg)]
    pub peers: Vec<crate::peers::PeerArg>,

    /// Pair every request with its answer, for sipflow_transaction_seconds,
    /// sipflow_retransmissions_total and sipflow_invites_total: the kernel
    /// then hands the agent the head of every SIP message, not only those
    /// registrations need, and the agent drains them every 100 ms (a copy
    /// per message in the kernel, about 1 % of a core for the agent at 500
    /// calls/s; BENCHMARKS.md §8). Times need both directions (not with
    /// --ingress-only on a host's own interface).
    #[arg(long)]
    pub transactions: bool,

    /// Read no TLS plaintext: TLS flows are then tracked at the TCP level only,
    /// with no binding and no would_430.
    #[arg(long, conflicts_with = "tls_libs")]
    pub no_tls_plaintext: bool,

    /// Accepted for older command lines and config files: both directions are
    /// watched by default now (see --ingress-only).
    #[arg(long, conflicts_with = "ingress_only")]
    pub egress: bool,

    /// Watch only what arrives, for a tap or mirror port where both directions
    /// arrive on ingress. By default a TC egress program also sees what the host
    /// sends: the 2xx that makes a binding, pongs, and its own FINs and RSTs.
    /// A binding exists only where its 2xx was seen, so on a host's own
    /// interface this option leaves no binding and no would_430.
    #[arg(long)]
    pub ingress_only: bool,

    /// Every binding is routed by its flow: an edge proxy that mints flow tokens
    /// for all registrations (Kamailio's outbound with its force flag, behind
    /// NAT) answers 430 for plain bindings too. By default only RFC 5626
    /// outbound bindings (reg-id and +sip.instance, or ;ob, or +sip.instance
    /// answered `Require: outbound`) would warrant 430.
    #[arg(long)]
    pub all_bindings_by_flow: bool,

    /// Most bindings (AOR + instance + reg-id, or AOR + Contact) kept; a 2xx
    /// that would bind more is counted and binds nothing.
    #[arg(long, value_name = "N", default_value_t = crate::liveness::registrations::DEFAULT_MAX_BINDINGS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_bindings: u32,

    /// Most REGISTERs kept waiting for their answer; more are counted and dropped.
    #[arg(long, value_name = "N", default_value_t = crate::liveness::registrations::DEFAULT_MAX_PENDING,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_pending_registers: u32,

    /// How to attach XDP: `native` (in the driver), `generic` (in the stack), or `auto`
    /// (native, falling back to generic with a warning).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// Address for the HTTP endpoint (/metrics, /flows, /healthz). Exposing it beyond
    /// loopback is your explicit choice.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9560")]
    pub listen: SocketAddr,

    /// Most flows the kernel tracks at once (its LRU map's size); the least
    /// recently used flow makes room for a new one, and that is counted.
    #[arg(long, value_name = "N", default_value_t = monitor_common::maps::DEFAULT_MAX_FLOWS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_flows: u32,

    /// Log lines as human-readable text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Keepalive interval assumed when the registrar sent no Flow-Timer (RFC 5626
    /// §4.4). Default: 120s on TCP and TLS, 29s on UDP.
    #[arg(long, value_name = "DURATION", value_parser = keepalive_interval)]
    pub flow_timer: Option<Duration>,

    /// Time added to the keepalive interval before a silent flow is called failed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = grace)]
    pub grace: Duration,

    /// A ping with no pong for this long fails the flow (needs the server's side, seen unless --ingress-only off a tap).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = timeout)]
    pub pong_timeout: Duration,

    /// The least time data the server sent on a TCP flow may go unacknowledged
    /// before the flow is failed as a zombie (tcp_unacked); the flow's own
    /// smoothed RTT x 4 where that is longer. The default covers a phone
    /// whose radio sleeps: LTE and 5G wake from idle on paging within 2.56 s
    /// of DRX plus set-up, and acknowledge late but alive.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = timeout)]
    pub ack_timeout: Duration,

    /// How long a request the server sent over a UDP flow may go without
    /// anything from the client before the flow fails (request_timeout).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = timeout)]
    pub request_timeout: Duration,

    /// How long a failed flow stays listed in /flows after it failed.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = retention)]
    pub retention: Duration,

    /// How often every flow map is walked whole, to reconcile what events may
    /// have missed (a full ring buffer, an eviction) and to refresh the flow
    /// gauges. Verdicts do not wait for it: closes come as kernel events, and
    /// timeouts as deadlines the agent keeps per flow.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = walk_interval)]
    pub sweep_interval: Duration,

    /// Where the maps and links are pinned (a directory on the BPF filesystem),
    /// one subdirectory per interface. A restarted agent takes them over.
    #[arg(long, value_name = "DIR", default_value = crate::kernel::pins::DEFAULT_ROOT)]
    pub pin_dir: PathBuf,

    /// On SIGINT or SIGTERM, leave the programs attached and counting, so that
    /// a restart or an upgrade loses no packet; `sipflow detach` removes them.
    #[arg(long)]
    pub keep_attached: bool,

    /// Remove another program already attached to an interface's XDP hook.
    /// Without it, sipflow refuses and names that program.
    #[arg(long)]
    pub replace: bool,

    /// Where the registrations (bindings) are saved, so that verdicts go on
    /// after a restart.
    #[arg(long, value_name = "FILE", default_value = "/var/lib/sipflow/registrations.json")]
    pub state_file: PathBuf,
}

impl RunArgs {
    /// The liveness timers these options give.
    pub fn timers(&self) -> crate::liveness::verdict::Timers {
        let defaults = crate::liveness::verdict::Timers::default();
        crate::liveness::verdict::Timers {
            stream_keepalive: self.flow_timer.unwrap_or(defaults.stream_keepalive),
            udp_keepalive: self.flow_timer.unwrap_or(defaults.udp_keepalive),
            grace: self.grace,
            pong_timeout: self.pong_timeout,
            ack_timeout: self.ack_timeout,
            request_timeout: self.request_timeout,
            ..defaults
        }
    }

    /// Whether the TC egress program is attached.
    pub fn sees_egress(&self) -> bool {
        !self.ingress_only
    }

    /// Clear-text SIP ports, with the default when none was given.
    pub fn plain_ports(&self) -> Vec<u16> {
        if self.sip_ports.is_empty() { vec![DEFAULT_SIP_PORT] } else { self.sip_ports.clone() }
    }

    /// TLS SIP ports, with the default when none was given.
    pub fn tls_ports(&self) -> Vec<u16> {
        if self.sips_ports.is_empty() { vec![DEFAULT_SIPS_PORT] } else { self.sips_ports.clone() }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A value clap refuses, in the sentence it prints.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("`{0}` is not a duration; write it like 30s, 500ms or 2m")]
    NotADuration(String),
    #[error("`{0}` is longer than any timer here can be")]
    TooLong(String),
    #[error("`{0}` has an unknown unit; use ms, s, m, h or d")]
    UnknownUnit(String),
    #[error("`{text}` is out of range; give between {least} and {most}")]
    OutOfRange { text: String, least: String, most: String },
    #[error("`{0}` is not a peer; write it like carrier-a=192.0.2.0/24,2001:db8::/32")]
    Peer(String),
    #[error("`{0}` is not a peer name: 1 to 32 letters, digits, '_', '-' or '.', and not `other`")]
    PeerName(String),
    #[error("`{0}` is not a network; write it in CIDR notation, like 192.0.2.0/24 or 2001:db8::/32")]
    Network(String),
    #[error("`{0}` is not an interface name: 1 to 15 bytes, no '/', ':' or spaces, not . or ..")]
    InterfaceName(String),
}

/// A duration as humantime reads it (`90s`, `500ms`, `2m`, `1h 30m`, `7d`),
/// or a bare number of seconds, as the config files of earlier versions hold.
pub fn parse_duration(text: &str) -> Result<Duration, OptionError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { .. } => OptionError::UnknownUnit(text.into()),
        humantime::DurationError::NumberOverflow => OptionError::TooLong(text.into()),
        _ => OptionError::NotADuration(text.into()),
    })
}

/// An interface name as Linux accepts one (dev_valid_name): 1 to 15 bytes,
/// not `.` or `..`, no `/`, `:` or white space. Names become directories
/// under --pin-dir, so nothing else may reach a path.
pub fn iface_name(text: &str) -> Result<String, OptionError> {
    let valid = (1..=15).contains(&text.len())
        && text != "."
        && text != ".."
        && !text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid { Ok(text.to_string()) } else { Err(OptionError::InterfaceName(text.into())) }
}

const MILLISECOND: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A duration between `least` and `most`: every timer has bounds, so that no
/// deadline computed from them can overflow, and none can spin the agent.
fn bounded(text: &str, least: Duration, most: Duration) -> Result<Duration, OptionError> {
    let duration = parse_duration(text)?;
    if duration < least || duration > most {
        return Err(OptionError::OutOfRange { text: text.into(), least: spelled(least), most: spelled(most) });
    }
    Ok(duration)
}

fn spelled(duration: Duration) -> String {
    match duration.as_secs() {
        0 => format!("{}ms", duration.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

/// --flow-timer: RFC 5626 §4.4 intervals are seconds to minutes.
fn keepalive_interval(text: &str) -> Result<Duration, OptionError> {
    bounded(text, Duration::from_secs(1), DAY)
}

fn grace(text: &str) -> Result<Duration, OptionError> {
    bounded(text, Duration::ZERO, DAY)
}

/// --pong-timeout, --ack-timeout, --request-timeout.
fn timeout(text: &str) -> Result<Duration, OptionError> {
    bounded(text, MILLISECOND, HOUR)
}

fn retention(text: &str) -> Result<Duration, OptionError> {
    bounded(text, Duration::from_secs(1), 7 * DAY)
}

/// --sweep-interval: a walk takes up to a second at a million flows; walking
/// more often than every 100 ms would keep a core busy for nothing.
fn walk_interval(text: &str) -> Result<Duration, OptionError> {
    bounded(text, Duration::from_millis(100), HOUR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// docs/options.md lists every option and command clap defines, and no other.
    #[test]
    fn docs_options_lists_every_option_and_command() {
        let docs = include_str!("../../docs/options.md");
        let rows: Vec<&str> = docs.lines().filter(|line| line.starts_with("| `")).collect();
        let first_cell = |row: &str| row.split('|').nth(1).unwrap_or_default().to_string();
        let longs = |command: &clap::Command| -> Vec<String> {
            command.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect()
        };
        let cli = Cli::command();
        // `sipflow run`: one row per option, named first.
        let run = cli.find_subcommand("run").expect("run");
        let documented: Vec<String> =
            rows.iter().map(|row| first_cell(row)).filter(|cell| cell.trim_start().starts_with("`-")).collect();
        for long in longs(run) {
            assert!(
                documented.iter().any(|cell| cell.contains(&format!("{long} ")) || cell.contains(&format!("{long}`"))),
                "docs/options.md has no row for `sipflow run {long}`"
            );
        }
        for cell in &documented {
            let named = cell.split(['`', ' ', ',']).find(|w| w.starts_with("--")).expect("a long option");
            assert!(
                longs(run).iter().any(|l| l == named),
                "docs/options.md lists {named}, which `sipflow run` does not have"
            );
        }
        // The other commands: a row each, naming each of its options.
        for command in cli.get_subcommands().filter(|c| c.get_name() != "run" && c.get_name() != "help") {
            let name = format!("`sipflow {}", command.get_name());
            let row = rows.iter().find(|row| first_cell(row).trim_start().starts_with(&name));
            let row = row.unwrap_or_else(|| panic!("docs/options.md has no row for {name}`"));
            for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
                let long = format!("--{}", arg.get_long().unwrap_or_default());
                let short = arg.get_short().map(|c| format!("-{c} "));
                let cell = first_cell(row);
                assert!(
                    cell.contains(&long) || short.is_some_and(|s| cell.contains(&s)),
                    "docs/options.md's row for {name}` does not name {long}"
                );
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3 fortnights"), Err(OptionError::UnknownUnit("3 fortnights".into())));
        assert!(parse_duration("307445734561825861m").is_err(), "minutes past u64 seconds");
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn interface_names_are_what_linux_accepts() {
        for good in ["eth0", "sip0", "enp0s31f6", "veth-abcdefghij", "a"] {
            assert_eq!(iface_name(good), Ok(good.to_string()));
        }
        for bad in ["", ".", "..", "/", "../x", "a/b", "eth0:1", "eth 0", "sixteen-bytes-ab"] {
            assert!(iface_name(bad).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["sipflow", "detach", "-i", ".."]).is_err());
    }

    #[test]
    fn every_timer_is_bounded() {
        let run = |args: &[&str]| {
            let mut full = vec!["sipflow", "run", "-i", "eth0"];
            full.extend_from_slice(args);
            Cli::try_parse_from(full).map(|_| ()).map_err(|e| e.kind())
        };
        assert_eq!(run(&["--sweep-interval", "0"]), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(run(&["--grace", "18446744073709551615s"]), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(run(&["--retention", "307445734561825861m"]), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(run(&["--flow-timer", "0s"]), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(run(&["--ack-timeout", "2h"]), Err(clap::error::ErrorKind::ValueValidation));
        // humantime reads weeks and days; the bounds still refuse them where they are too long.
        assert!(run(&["--grace", "3 weeks"]).is_err(), "past a day");
        assert!(run(&["--retention", "8d"]).is_err(), "past 168h");
        assert_eq!(run(&["--retention", "7d"]), Ok(()));
        assert_eq!(run(&["--sweep-interval", "200ms", "--grace", "0s", "--retention", "168h"]), Ok(()));
    }

    #[test]
    fn port_defaults_and_zero() {
        let cli = Cli::try_parse_from(["sipflow", "run", "-i", "eth0"]).unwrap();
        let Command::Run(run) = cli.command else { panic!("run") };
        let run = *run;
        assert_eq!(run.plain_ports(), vec![5060]);
        assert_eq!(run.tls_ports(), vec![5061]);
        assert!(Cli::try_parse_from(["sipflow", "run", "-i", "eth0", "--sip-port", "0"]).is_err());
    }
}
