//! Reading a per-CPU counter array in batches: BPF_MAP_LOOKUP_BATCH copies
//! thousands of slots, each with every CPU's value, per system call. aya's
//! iterator takes one system call per slot, which the per-peer counters
//! (615 slots per peer) make tens of thousands per read.

use std::{io, os::fd::AsRawFd, os::fd::BorrowedFd};

use crate::kernel::bpf_syscall::{bpf, bpf_cmd, zeroed_attr};

/// Slots asked for per call.
const CHUNK: usize = 4096;

/// Each slot of a per-CPU `u64` array of `entries` slots, summed over the
/// machine's `cpus` possible CPUs. An error when the kernel does not do
/// batches for arrays (before 5.6), or a call fails: the caller reads slot by slot.
pub fn sums(map: BorrowedFd<'_>, entries: usize, cpus: usize) -> io::Result<Vec<u64>> {
    let mut sums = vec![0u64; entries];
    let mut read = 0;
    let mut keys = vec![0u32; CHUNK];
    // A per-CPU value is each CPU's u64 in turn (8-byte slots: no padding).
    let mut values = vec![0u64; CHUNK * cpus];
    let (mut token, mut started) = (0u32, false);
    while read < entries {
        let mut next = 0u32;
        let mut attr = zeroed_attr();
        attr.batch.in_batch = if started { &raw const token as u64 } else { 0 };
        attr.batch.out_batch = &raw mut next as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = CHUNK as u32;
        attr.batch.map_fd = map.as_raw_fd() as u32;
        // SAFETY: attr points at CHUNK keys of the map's key size (u32) and CHUNK
        // values of its value size (cpus u64s), and at the two tokens; all outlive the call.
        let result = unsafe { bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) };
        // SAFETY: `batch` is the member this command reads and writes back.
        let filled = (unsafe { attr.batch.count } as usize).min(CHUNK);
        for (key, slot) in keys.iter().zip(values.chunks_exact(cpus)).take(filled) {
            if let Some(sum) = sums.get_mut(*key as usize) {
                *sum = slot.iter().sum();
            }
        }
        read += filled;
        match result {
            Ok(_) => {}
            // ENOENT: the last slots; this call's are still good.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        if filled == 0 {
            break;
        }
        (token, started) = (next, true);
    }
    if read != entries {
        return Err(io::Error::other(format!("read {read} of {entries} slots")));
    }
    Ok(sums)
}
