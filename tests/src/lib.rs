//! Helpers for sipflow's root-only tests: crafted packets, the kernel program
//! under BPF_PROG_TEST_RUN, and network-namespace labs that clean up after themselves.

pub mod baresip;
pub mod edge_lab;
pub mod forge;
pub mod interrupt;
pub mod kamailio;
pub mod kernel;
pub mod many_clients;
pub mod memory_tls;
pub mod netns;
pub mod packets;
pub mod peers;
pub mod proc_stats;
pub mod process;
pub mod registrar;
pub mod scratch_dir;
pub mod sipp;
pub mod tls;
pub mod tshark;
pub mod ua;

/// Returns from the test at once unless it runs as root: tests that load BPF
/// programs or create network namespaces start with it, so that a plain
/// `cargo test` as another user skips them, saying so once, instead of failing.
#[macro_export]
macro_rules! root_or_skip {
    () => {
        if !$crate::as_root() {
            return;
        }
    };
}

/// Whether this process runs as root. As root, the BPF filesystem is made
/// sure of, as a booted host has it (systemd mounts it), so that no test's
/// agent mounts it first and warns; otherwise one line says what is skipped.
pub fn as_root() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    ONCE.call_once(|| {
        if root {
            sipflow::kernel::pins::ensure_bpffs().expect("mount the BPF filesystem at /sys/fs/bpf");
        } else {
            use std::io::Write;
            // Past the test harness's capture, which keeps what passing tests print.
            let _ = writeln!(
                std::io::stderr(),
                "sipflow-tests: not root, so the tests that load BPF programs or create network namespaces are skipped; run `sudo cargo xtask test`"
            );
        }
    });
    root
}

/// For the lab's own helpers: a test that reaches them without
/// [`root_or_skip!`] fails with a plain message rather than an EPERM.
pub fn require_root() {
    assert!(
        as_root(),
        "these tests load BPF programs and create network namespaces: run them as root (cargo xtask test does)"
    );
}

/// A directory of its own on the BPF filesystem for one test's pins, removed
/// when it drops: tests run in parallel and must not share maps.
pub struct PinDir(pub std::path::PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        require_root();
        sipflow::kernel::pins::ensure_bpffs().expect("mount the BPF filesystem");
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::path::Path::new(sipflow::kernel::pins::BPFFS)
            .join("sipflow-tests")
            .join(format!("{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("make a pin directory");
        interrupt::directory_created(&path);
        Self(path)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = sipflow::kernel::pins::remove_tree(&self.0);
        interrupt::directory_removed(&self.0);
    }
}

/// Where the benchmarks write: target/bench, or $SIPFLOW_BENCH_OUT (the smoke
/// run of `cargo xtask test` keeps its figures away from the real ones).
pub fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("SIPFLOW_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"))
}
