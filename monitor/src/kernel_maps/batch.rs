//! Reading the whole flow map in batches: BPF_MAP_LOOKUP_BATCH (Linux 5.6)
//! copies thousands of entries per system call, where iterating costs two
//! system calls per entry (get_next_key, then lookup). aya 0.14 has no batch
//! operations, so this one is made here, on the map's file descriptor.

use std::{io, mem::size_of, os::fd::AsRawFd, os::fd::BorrowedFd};

use monitor_common::flow::{FlowKey, FlowState};

/// `enum bpf_cmd` in include/uapi/linux/bpf.h.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call. A hash map hands out whole buckets, so this
/// must exceed the longest bucket; 4096 leaves ample room.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the map, in batches. An error means the kernel does not do
/// batches for this map (older than 5.6): the caller falls back to iterating.
pub fn lookup_all(map: BorrowedFd<'_>) -> io::Result<Vec<(FlowKey, FlowState)>> {
    // SAFETY: both are plain-old-data `#[repr(C)]` types for which all zeroes is valid.
    let mut keys: Vec<FlowKey> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    let mut values: Vec<FlowState> = vec![unsafe { std::mem::zeroed() }; CHUNK];
    // The kernel's resume token for a hash map is a bucket index (u32); a u64 holds it.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the map's
        // key and value sizes, and at the two tokens; all outlive the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as libc::c_uint)
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(CHUNK);
        out.extend(keys[..got].iter().copied().zip(values[..got].iter().copied()));
        match error {
            None => {}
            // ENOENT: no more entries; this call's entries are already taken.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}
