//! `sipflow check -i IFACE`: the preflight. One line per check, each failure
//! with the fix; exit 0 only when every check passes.

use std::path::{Path, PathBuf};

use aya::{EbpfLoader, programs::Xdp};
use monitor_common::maps::PASS_PROGRAM;

use monitor_common::ports::DEFAULT_SIPS_PORT;

use crate::{
    cli::CheckArgs,
    cli::XdpModeArg,
    failure::Failure,
    kernel::{
        attach,
        btf::{self, Btf},
        object::EBPF_OBJECT,
        pins,
        sip_servers::SipServerFinder,
        tls_probes, xdp_hook,
    },
    privileges,
};

/// The oldest kernel with everything sipflow uses (docs/operating.md, "Kernel requirements").
const MIN_KERNEL: (u8, u8) = (5, 18);
const BTF: &str = "/sys/kernel/btf/vmlinux";

/// One check's outcome: what was found, or what is wrong and how to fix it.
type Outcome = Result<String, Fix>;

/// What is wrong and how to fix it, in one sentence.
#[derive(Debug)]
struct Fix(String);

impl From<&str> for Fix {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

impl From<String> for Fix {
    fn from(text: String) -> Self {
        Self(text)
    }
}

pub fn check(args: &CheckArgs) -> Result<(), Failure> {
    let mut failed = 0;
    let mut report = |what: &str, outcome: Outcome| match outcome {
        Ok(found) => println!("ok    {what}: {found}"),
        Err(Fix(fix)) => {
            failed += 1;
            println!("FAIL  {what}: {fix}");
        }
    };
    let privileged = privileges::can_load_bpf();
    report("privileges", privileges_check(privileged));
    report("kernel", kernel_check());
    report("BTF", btf_check());
    report("SIP inside TLS", tls_check());
    let sips_ports = if args.sips_ports.is_empty() { vec![DEFAULT_SIPS_PORT] } else { args.sips_ports.clone() };
    report("TLS read in", sip_servers_check(&sips_ports));
    let bpffs = bpffs_check();
    let bpffs_ok = bpffs.is_ok();
    report("BPF filesystem", bpffs);
    for iface in &args.ifaces {
        let exists = attach::interface_exists(iface);
        report(
            &format!("interface {iface}"),
            if exists { Ok("exists".into()) } else { Err("no such interface; list them with `ip link`".into()) },
        );
        if !exists {
            continue;
        }
        let other = xdp_hook::attached(iface);
        report(
            &format!("{iface} XDP hook"),
            match &other {
                None => Ok("free".into()),
                Some(program) if is_own(&args.pin_dir, iface, program) => Ok(format!(
                    "sipflow's own, {} (linked under {}: a running agent's, or one left by --keep-attached, which `sipflow run` takes over)",
                    program.describe(),
                    args.pin_dir.display()
                )),
                Some(program) => Err(Fix(format!(
                    "{} is attached; sipflow leaves it alone unless `sipflow run --replace` (if it is sipflow's own, from --keep-attached, `sipflow run` takes it over and `sipflow detach` removes it)",
                    program.describe()
                ))),
            },
        );
        if other.is_none() && privileged && bpffs_ok {
            report(&format!("{iface} XDP"), xdp_check(iface, args.xdp_mode));
        }
    }
    if failed > 0 {
        return Err(Failure::Preflight(failed));
    }
    Ok(())
}

/// Whether the program on `iface`'s hook is linked through a pin under the
/// pin directory, in this version's layout: sipflow's own, which `sipflow
/// run` takes over. (One of an older layout is not taken over: the FAIL line
/// says to `sipflow detach` it.)
fn is_own(pin_dir: &Path, iface: &str, program: &xdp_hook::XdpProgram) -> bool {
    let link = pins::Pins::new(pin_dir, iface).link(pins::XDP_LINK);
    pins::link_program_id(&link).is_ok_and(|id| u64::from(id) == program.id)
}

fn privileges_check(privileged: bool) -> Outcome {
    if privileged {
        Ok("CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)".into())
    } else {
        Err("missing CAP_BPF, CAP_NET_ADMIN or CAP_PERFMON; run it with sudo, or grant those capabilities".into())
    }
}

fn kernel_check() -> Outcome {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    if kernel_at_least(MIN_KERNEL) {
        Ok(format!("Linux {release}"))
    } else {
        Err(Fix(format!(
            "Linux {release} is older than {}.{}, which sipflow needs (bpf_xdp_load_bytes); upgrade the kernel",
            MIN_KERNEL.0, MIN_KERNEL.1
        )))
    }
}

/// The running kernel is this version or newer, as aya reads it (the one
/// reading attach uses too).
fn kernel_at_least((major, minor): (u8, u8)) -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(major, minor, 0))
}

fn btf_check() -> Outcome {
    if Path::new(BTF).exists() {
        Ok(BTF.into())
    } else {
        Err(Fix(format!("{BTF} is missing; use a kernel built with CONFIG_DEBUG_INFO_BTF=y")))
    }
}

/// Whether SIP inside TLS can be read here. Never a failure: without it TLS
/// flows are tracked at the TCP level, as before.
fn tls_check() -> Outcome {
    let offsets = Btf::from_file(Path::new(btf::VMLINUX)).and_then(|btf| btf::sock_offsets(&btf));
    let tracepoints = kernel_at_least((6, 4));
    Ok(match (tls_probes::default_library(), offsets, tracepoints) {
        (Some(library), Ok(_), true) => {
            format!("{} probed by default; socket offsets read from BTF", library.display())
        }
        (None, _, _) => format!(
            "no {} known to the dynamic linker: TLS flows are tracked at the TCP level (name a library with --tls-lib)",
            tls_probes::DEFAULT_LIBRARY
        ),
        (_, Err(e), _) => format!("{e}: TLS flows are tracked at the TCP level"),
        (_, _, false) => "the socket tracepoints need Linux 6.4: TLS flows are tracked at the TCP level".into(),
    })
}

/// The processes `sipflow run` would read TLS in, here and now (see
/// `sip_servers`); every other TLS program on the host is left alone.
fn sip_servers_check(ports: &[u16]) -> Outcome {
    let mut finder = SipServerFinder::new(ports);
    let servers = finder.scan();
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    if servers.is_empty() {
        return Ok(format!(
            "no process holds a socket on port {ports} in this network namespace now; a SIP server started \
             later is found within a second"
        ));
    }
    let listed: Vec<String> = servers.values().map(|s| format!("{} ({})", s.command, s.pid)).collect();
    Ok(format!(
        "{} (holding a socket on port {ports}, or forked by the main process of one that does); no other \
         process is probed",
        listed.join(", ")
    ))
}

fn bpffs_check() -> Outcome {
    if pins::is_bpffs(Path::new(pins::BPFFS)) {
        return Ok(format!("mounted at {}", pins::BPFFS));
    }
    match pins::ensure_bpffs() {
        Ok(_) if pins::private_mounts() => Err(Fix(format!(
            "not mounted at {} in this mount namespace (as under `ip netns exec`): a BPF filesystem mounted \
             here dies with the process; run sipflow with `nsenter --net=/run/netns/NAME` instead",
            pins::BPFFS
        ))),
        Ok(_) => Ok(format!("was not mounted; mounted it at {}", pins::BPFFS)),
        Err(e) => Err(Fix(format!(
            "not mounted at {} and cannot be mounted here ({e}); mount it with `mount -t bpf bpf {}`",
            pins::BPFFS,
            pins::BPFFS
        ))),
    }
}

/// Attaches sipflow's do-nothing XDP program for a moment, in the mode asked for.
fn xdp_check(iface: &str, mode: XdpModeArg) -> Outcome {
    let scratch = PathBuf::from(pins::BPFFS).join(format!("sipflow-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
    let outcome = try_attach(iface, mode, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

fn try_attach(iface: &str, mode: XdpModeArg, scratch: &Path) -> Outcome {
    if EBPF_OBJECT.is_empty() {
        return Err(Fix(Failure::NoKernelObject.to_string()));
    }
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(scratch)
        .load(EBPF_OBJECT)
        .map_err(|e| format!("the kernel refused sipflow's maps: {e}"))?;
    let program: &mut Xdp = ebpf
        .program_mut(PASS_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or("the kernel object has no pass program")?;
    program.load().map_err(|e| format!("the kernel refused an XDP program: {e}"))?;
    let mut refused = Vec::new();
    for (xdp_mode, name) in attach::xdp_modes(mode) {
        match program.attach(iface, *xdp_mode) {
            Ok(link) => {
                let _ = program.detach(link);
                let note = if refused.is_empty() { String::new() } else { format!(" ({})", refused.join("; ")) };
                return Ok(format!("attaches in {name} mode{note}"));
            }
            Err(e) => refused.push(format!("{name} mode refused: {e}")),
        }
    }
    Err(Fix(format!("{}; try another --xdp-mode", refused.join("; "))))
}
