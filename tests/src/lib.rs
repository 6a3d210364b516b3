//! Helpers for sipflow's root-only tests: crafted packets, the kernel program
//! under BPF_PROG_TEST_RUN, and network-namespace labs that clean up after themselves.

pub mod edge_lab;
pub mod interrupt;
pub mod kamailio;
pub mod kernel;
pub mod netns;
pub mod packets;
pub mod peers;
pub mod process;
pub mod scratch_dir;
pub mod sipp;
pub mod tshark;
pub mod ua;

/// Tests here load BPF programs and create namespaces: they need root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests load BPF programs and create network namespaces: run them as root (cargo xtask test does)"
    );
}
