//! Attaches what reads SIP inside TLS (monitor-ebpf's `tls`): uprobes on the
//! TLS library's SSL_read and SSL_write, raw tracepoints on every socket read
//! and write, and the programs that walk the plaintext.
//!
//! A uprobe is set on the library's file, so it fires in every process that
//! maps the file: a SIP server started or restarted after sipflow is covered
//! as it starts. The probes go when the agent exits; a restart loses the
//! plaintext of the moments between, while the XDP and TC programs, pinned,
//! go on tracking the flows themselves.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Ebpf,
    programs::{ProgramError, RawTracePoint, UProbe, uprobe::UProbeScope},
};
use monitor_common::tls::{
    FOLLOW_TLS, SOCKET_TRACEPOINTS, SSL_FUNCTIONS, SSL_RETURN_PROGRAM, SockOffsets, TLS_FOLLOW_PROGRAMS,
};
use tracing::{info, warn};

use crate::{
    failure::Failure,
    kernel::{
        attach::install_followers,
        btf::{self, Btf},
        error::{KernelError, at, error_chain},
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

/// Loads the plaintext programs into this interface's instance and attaches
/// them. Each interface's programs look up its own flow map.
pub fn attach(ebpf: &mut Ebpf, plan: &TlsPlan) -> Result<(), KernelError> {
    install_followers(ebpf, TLS_FOLLOW_PROGRAMS, FOLLOW_TLS)?;
    for (tracepoint, name) in SOCKET_TRACEPOINTS {
        let program: &mut RawTracePoint = program(ebpf, name)?;
        program.load().map_err(KernelError::verifier(name))?;
        program.attach(tracepoint).map_err(at(format!("the tracepoint {tracepoint}")))?;
    }
    for (_, name) in SSL_FUNCTIONS {
        let program: &mut UProbe = program(ebpf, name)?;
        program.load().map_err(KernelError::verifier(name))?;
    }
    let ret: &mut UProbe = program(ebpf, SSL_RETURN_PROGRAM)?;
    ret.load().map_err(KernelError::verifier(SSL_RETURN_PROGRAM))?;
    for library in &plan.libraries {
        let probed = probe_library(ebpf, library)?;
        info!(library = %library.display(), functions = %probed.join(" "), "reading SIP inside TLS");
    }
    Ok(())
}

/// Sets the entry and return probes on each SSL function the library has.
fn probe_library(ebpf: &mut Ebpf, library: &Path) -> Result<Vec<&'static str>, KernelError> {
    let mut probed = Vec::new();
    for (function, name) in SSL_FUNCTIONS {
        let entry: &mut UProbe = program(ebpf, name)?;
        match entry.attach(function, library, UProbeScope::AllProcesses) {
            Ok(_) => {}
            Err(e) if !REQUIRED.contains(&function) && missing_symbol(&e) => continue,
            Err(e) => return Err(at(format!("{}: {function}", library.display()))(e)),
        }
        let ret: &mut UProbe = program(ebpf, SSL_RETURN_PROGRAM)?;
        ret.attach(function, library, UProbeScope::AllProcesses)
            .map_err(at(format!("{}: the return of {function}", library.display())))?;
        probed.push(function);
    }
    Ok(probed)
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
