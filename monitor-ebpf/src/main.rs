//! sipflow's kernel programs. The XDP entry point is thin: it hands the frame
//! to [`observe`] and passes the packet whatever happens: a monitor never
//! changes traffic.
#![no_std]
#![no_main]

mod events;
mod flow;
mod maps;
mod observe;
mod xdp_frame;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use monitor_common::counters::Direction;

#[xdp]
pub fn sipflow_xdp(ctx: XdpContext) -> u32 {
    observe::observe(&xdp_frame::XdpFrame(&ctx), Direction::Ingress);
    xdp_action::XDP_PASS
}

/// Does nothing but pass: the benchmark's yardstick, so that per-packet
/// figures can be compared across machines as a ratio. Never attached.
#[xdp]
pub fn sipflow_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
