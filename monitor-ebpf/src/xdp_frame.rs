//! XDP packet memory behind the [`Frame`] accessor.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use monitor_ebpf::frame::{Frame, verifier_size};

pub struct XdpFrame<'a>(pub &'a XdpContext);

impl Frame for XdpFrame<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.data()
    }

    #[inline(always)]
    fn end(&self) -> usize {
        self.0.data_end()
    }

    #[inline(always)]
    fn load_bytes<const N: usize>(&self, offset: usize, len: usize, dst: &mut [u8; N]) -> bool {
        if len == 0 || len > N {
            return false;
        }
        let len = verifier_size::<N>(len);
        // SAFETY: the helper checks offset + len against the packet; `dst` holds N >= len bytes.
        let rc = unsafe { bpf_xdp_load_bytes(self.0.ctx, offset as u32, dst.as_mut_ptr().cast(), len as u32) };
        rc == 0
    }
}
