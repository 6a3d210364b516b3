//! Attaches what reads SIP inside TLS (monitor-ebpf's `tls`): uprobes on the
//! TLS library's SSL_read and SSL_write in the SIP server processes only
//! ([`crate::kernel::sip_servers`]), raw tracepoints on every socket read and
//! write (which leave at once in any other process), and the programs that
//! walk the plaintext.
//!
//! A uprobe attached to one process sets its breakpoint in that process's
//! memory only: an HTTPS server or a database client on the same host runs
//! its SSL calls untouched. The links are pinned; with --keep-attached they
//! read on while the agent restarts, and the next agent replaces them.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError},
    programs::{ProgramError, RawTracePoint, UProbe, links::FdLink, uprobe::UProbeScope},
};
use monitor_common::tls::{
    FOLLOW_SOCK, FOLLOW_TLS, MAX_TLS_PROCESSES, SOCK_FOLLOW_PROGRAMS, SOCKET_TRACEPOINTS, SSL_FUNCTIONS,
    SSL_RETURN_PROGRAM, SockOffsets, SslOp, TLS_FOLLOW_PROGRAMS, TLS_PROCESS_WORDS, TLS_PROCESSES, tls_process_bit,
};
use tracing::{info, warn};

use crate::{
    failure::Failure,
    kernel::{
        attach::install_followers,
        btf::{self, Btf},
        error::{KernelError, at, error_chain},
        sip_servers::SipServer,
    },
};

/// The library's name as the dynamic linker knows it: OpenSSL 3.
pub const DEFAULT_LIBRARY: &str = "libssl.so.3";
/// The functions a library must have; the `_ex` forms are probed where they exist.
const REQUIRED: [&str; 2] = ["SSL_read", "SSL_write"];

/// What to probe, decided once for every interface.
#[derive(Clone, Debug)]
pub struct TlsPlan {
    pub libraries: Vec<PathBuf>,
    /// The operator named the libraries (`--tls-lib`): failing to probe one is an error, not a warning.
    pub named: bool,
    pub offsets: SockOffsets,
}

/// The plan for `sipflow run`: `None` when TLS plaintext is off, no SIPS port
/// is monitored, or (with the default library) the host cannot give it, which
/// is then said once in a warning.
pub fn plan(tls_ports: &[u16], named: &[PathBuf], off: bool) -> Result<Option<TlsPlan>, Failure> {
    if off || tls_ports.is_empty() {
        return Ok(None);
    }
    let not_possible = |reason: String| -> Result<Option<TlsPlan>, Failure> {
        if named.is_empty() {
            warn!("SIP inside TLS will not be read ({reason}); TLS flows are tracked at the TCP level only");
            Ok(None)
        } else {
            Err(Failure::Usage(format!("--tls-lib cannot be honoured: {reason}")))
        }
    };
    let offsets = match Btf::from_file(Path::new(btf::VMLINUX)).and_then(|btf| btf::sock_offsets(&btf)) {
        Ok(offsets) => offsets,
        Err(e) => return not_possible(format!("{e}; the kernel needs BTF (CONFIG_DEBUG_INFO_BTF)")),
    };
    let libraries = if named.is_empty() {
        match default_library() {
            Some(path) => vec![path],
            None => return not_possible(format!("the dynamic linker knows no {DEFAULT_LIBRARY}")),
        }
    } else {
        for path in named {
            if !path.is_file() {
                return Err(Failure::Usage(format!(
                    "--tls-lib {}: no such file; name the TLS library's path, e.g. {}",
                    path.display(),
                    default_library().map(|p| p.display().to_string()).unwrap_or_else(|| DEFAULT_LIBRARY.into())
                )));
            }
        }
        named.to_vec()
    };
    Ok(Some(TlsPlan { libraries, named: !named.is_empty(), offsets }))
}

/// Where the dynamic linker finds libssl.so.3 for this machine's word size,
/// from its cache (`ldconfig -p`), as a program linked with -lssl would get it.
pub fn default_library() -> Option<PathBuf> {
    let out =
        Command::new("ldconfig").arg("-p").output().or_else(|_| Command::new("/sbin/ldconfig").arg("-p").output());
    let listed = out.ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    from_ld_cache(&listed, cfg!(target_pointer_width = "64"))
}

/// Lines like `\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3`:
/// a 64-bit library says so in its tag, a 32-bit one does not.
fn from_ld_cache(listed: &str, wide: bool) -> Option<PathBuf> {
    listed.lines().find_map(|line| {
        let (name, rest) = line.trim().split_once(' ')?;
        let (tag, path) = rest.split_once(" => ")?;
        let is_wide = tag.contains("64");
        (name == DEFAULT_LIBRARY && is_wide == wide).then(|| PathBuf::from(path.trim()))
    })
}

/// The TLS readers of one interface's instance: the socket tracepoints,
/// attached for the host (their programs leave at once in processes that are
/// no SIP server), and the uprobes, attached to each SIP server process
/// ([`crate::kernel::sip_servers`]) and followed as they come and go. Every
/// link is pinned under `<pins>/tls/`, so that with --keep-attached the next
/// agent reads on without a gap. It takes the uprobes of a process over as
/// they are: a return probe is armed when its call begins, so replacing them
/// would lose the return of a call under way, such as an SSL_read waiting
/// for the next ping.
pub struct TlsProbes {
    libraries: Vec<PathBuf>,
    /// The operator named the libraries (`--tls-lib`): each process is probed in those.
    named: bool,
    /// The SSL functions each library has (the `_ex` forms may be missing).
    functions: Vec<Vec<&'static str>>,
    /// `<pins>/tls`: the uprobe links, `<pid>-<start time>-<library>-<function>-<entry|return>`.
    dir: PathBuf,
    /// Links an earlier agent pinned, not yet taken over or let go: once the
    /// SIP servers have been looked for, those left are let go.
    inherited: Option<BTreeSet<PathBuf>>,
    /// `TLS_PROCESSES`: a bit per SIP server process.
    processes: Array<MapData, u64>,
    probed: BTreeMap<u32, Probed>,
    /// Warned once that [`MAX_TLS_PROCESSES`] were probed and more were not.
    full_warned: bool,
}

/// A process whose SSL calls are read, and the pins of its probes' links.
struct Probed {
    started: u64,
    pins: Vec<PathBuf>,
}

/// Loads the plaintext programs into this interface's instance, attaches the
/// socket tracepoints and checks that each library can be probed. Each
/// interface's programs look up its own flow map.
pub fn attach(ebpf: &mut Ebpf, plan: &TlsPlan, pins: &Path) -> Result<TlsProbes, KernelError> {
    install_followers(ebpf, TLS_FOLLOW_PROGRAMS, FOLLOW_TLS)?;
    install_followers(ebpf, SOCK_FOLLOW_PROGRAMS, FOLLOW_SOCK)?;
    for (_, name, _) in SSL_FUNCTIONS {
        let program: &mut UProbe = program(ebpf, name)?;
        program.load().map_err(KernelError::verifier(name))?;
    }
    let ret: &mut UProbe = program(ebpf, SSL_RETURN_PROGRAM)?;
    ret.load().map_err(KernelError::verifier(SSL_RETURN_PROGRAM))?;
    let mut functions = Vec::new();
    for library in &plan.libraries {
        functions.push(probe_check(ebpf, library)?);
    }
    let dir = pins.join(TLS_PIN_DIR);
    std::fs::create_dir_all(&dir).map_err(at(format!("making {}", dir.display())))?;
    let inherited =
        std::fs::read_dir(&dir).map(|entries| entries.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    for (tracepoint, name) in SOCKET_TRACEPOINTS {
        let program: &mut RawTracePoint = program(ebpf, name)?;
        program.load().map_err(KernelError::verifier(name))?;
        let id = program.attach(tracepoint).map_err(at(format!("the tracepoint {tracepoint}")))?;
        let link = FdLink::from(program.take_link(id).map_err(at(name))?);
        // The new link runs before the old one's pin goes: no socket call is missed between.
        let path = pins.join(format!("{tracepoint}_link"));
        let _ = std::fs::remove_file(&path);
        link.pin(&path).map(drop).map_err(at(format!("pinning the {tracepoint} link at {}", path.display())))?;
    }
    let map = ebpf.take_map(TLS_PROCESSES).ok_or_else(|| KernelError::missing_map(TLS_PROCESSES))?;
    let processes = Array::try_from(map).map_err(at(TLS_PROCESSES))?;
    Ok(TlsProbes {
        libraries: plan.libraries.clone(),
        named: plan.named,
        functions,
        dir,
        inherited: Some(inherited),
        processes,
        probed: BTreeMap::new(),
        full_warned: false,
    })
}

/// `<pins>/tls`: the uprobe links, a directory per agent that set them.
const TLS_PIN_DIR: &str = "tls";

impl TlsProbes {
    /// Probes the SIP servers not probed yet and lets go of those gone. The
    /// processes' tgids go into `TLS_PROCESSES` before their probes are set:
    /// a call whose entry fires finds its socket hooks already on.
    pub fn follow(&mut self, ebpf: &mut Ebpf, iface: &str, servers: &BTreeMap<u32, SipServer>) {
        let gone: Vec<u32> = self
            .probed
            .iter()
            .filter(|(pid, probed)| servers.get(pid).is_none_or(|s| s.started != probed.started))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(probed) = self.probed.remove(&pid) {
                probed.pins.iter().for_each(|pin| drop(std::fs::remove_file(pin)));
            }
            let _ = self.note_process(pid, false);
            info!(iface, pid, "no longer reading SIP inside TLS in this process: it holds no SIPS socket now");
        }
        let new: Vec<&SipServer> = servers.values().filter(|s| !self.probed.contains_key(&s.pid)).collect();
        for server in new {
            if self.probed.len() >= MAX_TLS_PROCESSES as usize {
                if !std::mem::replace(&mut self.full_warned, true) {
                    warn!(iface, limit = MAX_TLS_PROCESSES, pid = server.pid, command = %server.command,
                        "more SIP server processes than TLS is read in; this one's plaintext is not read");
                }
                continue;
            }
            if let Err(e) = self.note_process(server.pid, true) {
                warn!(iface, pid = server.pid, error = %e, "cannot note a SIP server process; its TLS is not read");
                continue;
            }
            let pins = self.pin_names(server);
            if let Some(inherited) = self.inherited.as_mut()
                && pins.iter().all(|pin| inherited.contains(pin))
            {
                for pin in &pins {
                    inherited.remove(pin);
                }
                info!(iface, pid = server.pid, command = %server.command,
                    "reading SIP inside TLS in this process (its probes taken over from the agent before)");
                self.probed.insert(server.pid, Probed { started: server.started, pins });
                continue;
            }
            match self.probe_process(ebpf, server, &pins) {
                Ok(()) => {
                    info!(iface, pid = server.pid, command = %server.command, "reading SIP inside TLS in this process");
                    self.probed.insert(server.pid, Probed { started: server.started, pins });
                }
                Err(e) => {
                    // Most often it exited meanwhile; it is looked for again at the next scan.
                    let _ = self.note_process(server.pid, false);
                    warn!(iface, pid = server.pid, command = %server.command, error = %error_chain(&e),
                        "cannot probe a SIP server process's TLS library; its plaintext is not read");
                }
            }
        }
        // An earlier agent's probes of processes that are no SIP servers now, and its notes of them.
        if let Some(inherited) = self.inherited.take() {
            inherited.iter().for_each(|pin| drop(std::fs::remove_file(pin)));
            self.note_only_probed();
        }
    }

    /// Sets or clears `pid`'s bit in `TLS_PROCESSES`; only this agent writes it.
    fn note_process(&mut self, pid: u32, on: bool) -> Result<(), MapError> {
        let (word, bit) = tls_process_bit(pid);
        let bits = self.processes.get(&word, 0)?;
        self.processes.set(word, if on { bits | bit } else { bits & !bit }, 0)
    }

    /// Leaves in `TLS_PROCESSES` only the processes probed now: an agent
    /// before may have noted others.
    fn note_only_probed(&mut self) {
        let mut wanted: BTreeMap<u32, u64> = BTreeMap::new();
        for pid in self.probed.keys() {
            let (word, bit) = tls_process_bit(*pid);
            *wanted.entry(word).or_default() |= bit;
        }
        for word in 0..TLS_PROCESS_WORDS {
            let want = wanted.get(&word).copied().unwrap_or(0);
            if self.processes.get(&word, 0).is_ok_and(|bits| bits != want) {
                let _ = self.processes.set(word, want, 0);
            }
        }
    }

    /// Processes whose SSL calls are read.
    pub fn processes(&self) -> usize {
        self.probed.len()
    }

    /// `server`'s probes, in the order they are set: (library, function,
    /// program, where its link is pinned).
    fn probes(&self, server: &SipServer) -> Vec<(usize, &'static str, &'static str, PathBuf)> {
        let mut probes = Vec::new();
        for (library, functions) in self.functions.iter().enumerate() {
            for &function in functions {
                let Some(&(_, entry, op)) = SSL_FUNCTIONS.iter().find(|(f, ..)| *f == function) else {
                    continue;
                };
                let returns = (op == SslOp::Read).then_some((SSL_RETURN_PROGRAM, "return"));
                for (program, kind) in [(entry, "entry")].into_iter().chain(returns) {
                    let name = format!("{}-{}-{library}-{function}-{kind}", server.pid, server.started);
                    probes.push((library, function, program, self.dir.join(name)));
                }
            }
        }
        probes
    }

    /// Where the links of `server`'s probes are pinned.
    fn pin_names(&self, server: &SipServer) -> Vec<PathBuf> {
        self.probes(server).into_iter().map(|(.., pin)| pin).collect()
    }

    /// Sets the probes on each SSL function (an entry, and a return for
    /// reads), in this process only, and pins their links at `pins` (from
    /// [`Self::pin_names`]).
    fn probe_process(&self, ebpf: &mut Ebpf, server: &SipServer, pins: &[PathBuf]) -> Result<(), KernelError> {
        let Some(pid) = NonZeroU32::new(server.pid) else {
            return Ok(());
        };
        let scope = UProbeScope::OneProcess(pid);
        // The libssl.so.3 the process maps, through its own root: a server in a
        // container, or with a libssl of its own, runs another file than the host's.
        let libraries = match (self.named, &self.libraries[..]) {
            (false, [host]) => vec![mapped_library(server.pid).unwrap_or_else(|| host.clone())],
            _ => self.libraries.clone(),
        };
        let result = (|| {
            for (library, function, name, path) in self.probes(server) {
                let Some(library) = libraries.get(library) else {
                    continue;
                };
                let probe: &mut UProbe = program(ebpf, name)?;
                let id = probe.attach(function, library, scope).map_err(at(format!(
                    "{}: {function} ({name}) in pid {}",
                    library.display(),
                    server.pid
                )))?;
                let link = FdLink::try_from(probe.take_link(id).map_err(at(name))?).map_err(at(name))?;
                // A pin left by an agent before, for a probe not all of whose links were there.
                let _ = std::fs::remove_file(&path);
                link.pin(&path).map(drop).map_err(at(format!("pinning {}", path.display())))?;
            }
            Ok(())
        })();
        if result.is_err() {
            pins.iter().for_each(|pin| drop(std::fs::remove_file(pin)));
        }
        result
    }

    /// Detaches the uprobes and tracepoints by removing their pins, unless
    /// they are to stay (--keep-attached) or a newer agent has taken them over.
    pub fn detach(self, ebpf: &Ebpf, pins: &Path, keep: bool) {
        if keep {
            return;
        }
        for probed in self.probed.values() {
            probed.pins.iter().for_each(|pin| drop(std::fs::remove_file(pin)));
        }
        for (tracepoint, name) in SOCKET_TRACEPOINTS {
            let path = pins.join(format!("{tracepoint}_link"));
            let ours = ebpf.program(name).and_then(|p| p.info().ok()).map(|info| info.id());
            if crate::kernel::pins::link_program_id(&path).ok() == ours {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `/proc/PID/root/...libssl.so.3` when the process maps a file of the
/// default library's name (/proc/PID/maps); not one replaced on disk since.
fn mapped_library(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    mapped_in(&maps).map(|path| PathBuf::from(format!("/proc/{pid}/root{path}")))
}

fn mapped_in(maps: &str) -> Option<&str> {
    // `start-end perms offset dev inode path`: a path holds no spaces unless it is ` (deleted)`.
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let path = fields.nth(5)?;
        (fields.next().is_none() && Path::new(path).file_name().is_some_and(|name| name == DEFAULT_LIBRARY))
            .then_some(path)
    })
}

/// Which SSL functions the library has: probed once in this process (which
/// makes no SSL call), and let go at once. A library without SSL_read or
/// SSL_write cannot be read.
fn probe_check(ebpf: &mut Ebpf, library: &Path) -> Result<Vec<&'static str>, KernelError> {
    let mut found = Vec::new();
    for (function, name, _) in SSL_FUNCTIONS {
        let entry: &mut UProbe = program(ebpf, name)?;
        match entry.attach(function, library, UProbeScope::CallingProcess) {
            Ok(id) => entry.detach(id).map_err(at(format!("{}: {function}", library.display())))?,
            Err(e) if !REQUIRED.contains(&function) && missing_symbol(&e) => continue,
            Err(e) => return Err(at(format!("{}: {function}", library.display()))(e)),
        }
        found.push(function);
    }
    Ok(found)
}

fn missing_symbol(e: &ProgramError) -> bool {
    error_chain(e).contains("unknown symbol")
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or_else(|| KernelError::missing_program(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_s_own_libssl_is_found_in_its_maps() {
        let maps = "7f0000000000-7f0000001000 r--p 00000000 fe:00 123 /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n\
            7f0000002000-7f0000003000 r-xp 00020000 fe:00 456 /opt/app/lib/libssl.so.3\n\
            7f0000004000-7f0000005000 rw-p 00000000 00:00 0 \n";
        assert_eq!(mapped_in(maps), Some("/opt/app/lib/libssl.so.3"));
        let replaced = "7f0000002000-7f0000003000 r-xp 00020000 fe:00 456 /usr/lib/libssl.so.3 (deleted)\n";
        assert_eq!(mapped_in(replaced), None, "the file on disk is another now");
        assert_eq!(mapped_in("7f00-7f01 r-xp 0 fe:00 1 /usr/lib/libssl.so.3.0.1\n"), None);
    }

    #[test]
    fn finds_libssl_3_of_the_right_width() {
        let listed = "1146 libs found in cache `/etc/ld.so.cache'\n\
            \tlibssl.so.3 (libc6) => /usr/lib/i386-linux-gnu/libssl.so.3\n\
            \tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3\n\
            \tlibssl.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so\n";
        assert_eq!(from_ld_cache(listed, true), Some(PathBuf::from("/lib/x86_64-linux-gnu/libssl.so.3")));
        assert_eq!(from_ld_cache(listed, false), Some(PathBuf::from("/usr/lib/i386-linux-gnu/libssl.so.3")));
        assert_eq!(from_ld_cache("\tlibssl.so.1.1 (libc6,x86-64) => /x/libssl.so.1.1\n", true), None);
    }
}
