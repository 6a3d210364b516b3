//! Reading the whole flow map in batches: BPF_MAP_LOOKUP_BATCH (Linux 5.6)
//! copies thousands of entries per system call, where iterating costs two
//! system calls per entry (get_next_key, then lookup). aya 0.14 has no batch
//! operations, so this one is made here, on the map's file descriptor.
//!
//! The entries are handed out one batch at a time, so that a sweep of a
//! million flows holds one batch in memory, not the whole map.

use std::{cell::Cell, io, os::fd::AsRawFd, os::fd::BorrowedFd};

use monitor_common::flow::{FlowKey, FlowState};

use crate::kernel::bpf_syscall::{bpf, bpf_cmd, zeroed_attr};

/// Entries asked for per call. A hash map hands out whole buckets, so this
/// must exceed the longest bucket; 4096 leaves ample room.
const CHUNK: usize = 4096;

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
            // SAFETY: as for the keys.
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
        let mut attr = zeroed_attr();
        attr.batch.in_batch = if self.started { &raw const self.token as u64 } else { 0 };
        attr.batch.out_batch = &raw mut token_out as u64;
        attr.batch.keys = self.keys.as_mut_ptr() as u64;
        attr.batch.values = self.values.as_mut_ptr() as u64;
        attr.batch.count = CHUNK as u32;
        attr.batch.map_fd = self.map.as_raw_fd() as u32;
        // SAFETY: attr points at buffers of `count` keys and values of the map's
        // key and value sizes, and at the two tokens; all outlive the call.
        let result = unsafe { bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) };
        self.started = true;
        // SAFETY: `batch` is the member this command reads and writes back.
        self.filled = (unsafe { attr.batch.count } as usize).min(CHUNK);
        self.taken = 0;
        self.token = token_out;
        if let Err(error) = result {
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
