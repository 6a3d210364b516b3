//! XDP packet memory behind the [`Frame`] accessor.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use monitor_ebpf::frame::Frame;

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
        let rc = unsafe {
            bpf_xdp_load_bytes(
                self.0.ctx,
                offset as u32,
                dst.as_mut_ptr().cast(),
                len as u32,
            )
        };
        rc == 0
    }
}

/// `len` unchanged for 1..=N, in a form whose range the verifier can see.
///
/// The compiler may merge the caller's checks on `len` into arithmetic the
/// verifier cannot follow (it then believes the size may be 0). Re-reading the
/// value opaquely stops the compiler from using what it knew, and the mask
/// shows the verifier a size within [1, N].
#[inline(always)]
pub fn verifier_size<const N: usize>(len: usize) -> usize {
    const { assert!(N.is_power_of_two()) };
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    ((len - 1) & (N - 1)) + 1
}
