//! Reading the whole flow map in batches: BPF_MAP_LOOKUP_BATCH (Linux 5.6)
//! copies thousands of entries per system call, where iterating costs two
//! system calls per entry (get_next_key, then lookup). aya 0.14 has no batch
//! operations, so this one is made here, on the map's file descriptor.
//!
//! The entries are handed out one batch at a time, so that a sweep of a
//! million flows holds one batch in memory, not the whole map.

use std::{cell::Cell, io, mem::size_of, os::fd::AsRawFd, os::fd::BorrowedFd};

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

/// Every entry of a flow map, read a batch at a time.
pub struct Batches<'a> {
    map: BorrowedFd<'a>,
    /// Set when a batch after the first failed: the walk ended early.
    cut_short: &'a Cell<bool>,
    keys: Vec<FlowKey>,
    values: Vec<FlowState>,
    /// Entries of the current batch, and how many of them were handed out.
    filled: usize,
    taken: usize,
    /// The kernel's resume token for a hash map is a bucket index (u32); a u64 holds it.
    token: u64,
    started: bool,
    finished: bool,
}

impl<'a> Batches<'a> {
    /// Reads the first batch. An error means the kernel does not do batches for
    /// this map (older than 5.6): the caller iterates instead.
    pub fn open(map: BorrowedFd<'a>, cut_short: &'a Cell<bool>) -> io::Result<Self> {
        cut_short.set(false);
        let mut batches = Self {
            map,
            cut_short,
            // SAFETY: both are plain-old-data `#[repr(C)]` types for which all zeroes is valid.
            keys: vec![unsafe { std::mem::zeroed() }; CHUNK],
            values: vec![unsafe { std::mem::zeroed() }; CHUNK],
            filled: 0,
            taken: 0,
            token: 0,
            started: false,
            finished: false,
        };
        batches.fill()?;
        Ok(batches)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut token_out = 0u64;
        let mut attr = BatchAttr {
            in_batch: if self.started { &raw const self.token as u64 } else { 0 },
            out_batch: &raw mut token_out as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: self.map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the map's
        // key and value sizes, and at the two tokens; all outlive the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as libc::c_uint)
        };
        self.started = true;
        self.filled = (attr.count as usize).min(CHUNK);
        self.taken = 0;
        self.token = token_out;
        if rc < 0 {
            let error = io::Error::last_os_error();
            // ENOENT: no more entries; this call's entries are still good.
            if error.raw_os_error() != Some(libc::ENOENT) {
                self.filled = 0;
                self.finished = true;
                return Err(error);
            }
            self.finished = true;
        }
        Ok(())
    }
}

impl Iterator for Batches<'_> {
    type Item = (FlowKey, FlowState);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.taken < self.filled {
                let i = self.taken;
                self.taken += 1;
                return Some((self.keys[i], self.values[i]));
            }
            if self.finished {
                return None;
            }
            // A failure after the first batch ends the walk early; the next one reads again.
            if self.fill().is_err() {
                self.cut_short.set(true);
                return None;
            }
        }
    }
}
