//! Every way `sipflow` can fail, each as one sentence that says what is wrong
//! and how to fix it. main() prints it and exits non-zero; nothing panics.

use std::{net::SocketAddr, path::PathBuf};

use crate::kernel::error::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(
        "sipflow needs root or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON to load XDP programs; run it with sudo"
    )]
    NotPrivileged,
    #[error("interface `{0}` does not exist; list the interfaces with `ip link` and pass one with -i")]
    UnknownInterface(String),
    #[error("cannot listen on {addr}: {reason}; choose another address with --listen")]
    Listen { addr: SocketAddr, reason: String },
    #[error(
        "this sipflow binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild it with `cargo build`"
    )]
    NoKernelObject,
    #[error("the kernel refused sipflow's programs on `{iface}`: {source}; run `sipflow check -i {iface}`")]
    Load {
        iface: String,
        #[source]
        source: KernelError,
    },
    #[error("cannot attach XDP to `{iface}` in {mode} mode: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: KernelError,
    },
    #[error("`{iface}` already has an XDP program: {program}; sipflow leaves it alone unless you pass --replace")]
    OtherXdp { iface: String, program: String },
    #[error("cannot pin sipflow's maps and links in {path}: {reason}; check that {path} is on a BPF filesystem")]
    Pins { path: PathBuf, reason: String },
    #[error(
        "the BPF filesystem is not mounted at /sys/fs/bpf and sipflow could not mount it ({0}); mount it with `mount -t bpf bpf /sys/fs/bpf`"
    )]
    NoBpffs(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read SIP inside TLS: {0}; check the --tls-lib paths, or pass --no-tls-plaintext")]
    Tls(#[source] KernelError),
    #[error("{0} check(s) failed; see the lines above")]
    Preflight(usize),
    #[error("reading the kernel's maps failed: {0}")]
    ReadMaps(String),
    #[error("{0}")]
    Runtime(String),
}

impl Failure {
    /// Exit status: 2 for usage errors (as clap uses), 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::UnknownInterface(_) | Self::Listen { .. } | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
