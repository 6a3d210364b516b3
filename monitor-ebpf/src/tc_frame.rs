//! Socket-buffer packet memory (TC) behind the [`Frame`] accessor.

use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use monitor_ebpf::frame::{Frame, verifier_size};

/// Bytes made linear before the headers are read directly: two VLAN tags,
/// IPv6 with extension headers, TCP with options.
pub const HEADER_PULL: u32 = 192;

pub struct TcFrame<'a>(pub &'a TcContext);

impl<'a> TcFrame<'a> {
    /// Makes the headers readable in place. Locally built packets may keep
    /// them outside the linear part; pulling copies, it never changes a byte.
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        let len = ctx.len();
        let pull = if len < HEADER_PULL { len } else { HEADER_PULL };
        if ctx.data_end() - ctx.data() < pull as usize {
            let _ = ctx.pull_data(pull);
        }
        Self(ctx)
    }
}

impl Frame for TcFrame<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn end(&self) -> usize {
        self.0.data_end()
    }

    #[inline(always)]
    fn total_len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn load_bytes<const N: usize>(&self, offset: usize, len: usize, dst: &mut [u8; N]) -> bool {
        if len == 0 || len > N {
            return false;
        }
        let len = verifier_size::<N>(len);
        // SAFETY: the helper checks offset + len against the packet, paged parts
        // included; `dst` holds N >= len bytes.
        let rc = unsafe {
            bpf_skb_load_bytes(self.0.skb.skb as *const _, offset as u32, dst.as_mut_ptr().cast(), len as u32)
        };
        rc == 0
    }
}
