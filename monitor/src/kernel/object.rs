//! The kernel programs, built by build.rs and embedded in the binary.

/// The ELF object of monitor-ebpf (empty in an `AYA_BUILD_SKIP=1` build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipflow-ebpf"));
