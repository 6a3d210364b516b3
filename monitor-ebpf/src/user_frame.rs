//! Plaintext in a process's memory (an SSL call's buffer) behind the
//! [`Frame`] accessor, so that it is read by the same classifier and walker
//! as a packet's payload. Nothing is read in place: every byte is copied out
//! with `bpf_probe_read_user`, which fails rather than fault on memory that is
//! not there.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use monitor_ebpf::frame::{Frame, verifier_size};

pub struct UserFrame {
    /// The buffer's address in the calling process.
    pub buffer: u64,
    pub len: usize,
}

impl Frame for UserFrame {
    /// Nothing lies in packet memory: `frame::read` finds every offset out of
    /// bounds, and the payload is reached through `load_bytes` only.
    #[inline(always)]
    fn start(&self) -> usize {
        0
    }

    #[inline(always)]
    fn end(&self) -> usize {
        0
    }

    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load_bytes<const N: usize>(&self, offset: usize, len: usize, dst: &mut [u8; N]) -> bool {
        if len == 0 || len > N || offset + len > self.len {
            return false;
        }
        let len = verifier_size::<N>(len);
        let from = self.buffer.wrapping_add(offset as u64);
        // SAFETY: the helper checks the user address; `dst` holds N >= len bytes.
        let rc = unsafe { bpf_probe_read_user(dst.as_mut_ptr().cast(), len as u32, from as *const _) };
        rc == 0
    }
}
