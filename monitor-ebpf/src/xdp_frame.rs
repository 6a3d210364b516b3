//! XDP packet memory behind the [`Frame`] accessor.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use monitor_ebpf::frame::{Frame, WINDOW, Window};

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
    fn load_window(&self, offset: usize, len: usize, window: &mut Window) -> bool {
        if len == 0 || len > WINDOW {
            return false;
        }
        // SAFETY: the helper checks offset + len against the packet; the
        // destination holds WINDOW bytes and len <= WINDOW.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                self.0.ctx,
                offset as u32,
                window.as_mut_ptr().cast(),
                len as u32,
            )
        };
        rc == 0
    }
}
