//! sipflow's kernel programs. The entry points are thin: they hand the frame
//! to [`observe`] and let the packet through whatever happens: a monitor never
//! changes traffic. XDP sees what arrives; the TC egress program (`--egress`)
//! sees what the host itself sends: its responses, pongs, FINs and RSTs.
#![no_std]
#![no_main]

mod events;
mod flow;
mod maps;
mod observe;
mod tc_frame;
mod xdp_frame;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use monitor_common::counters::Direction;

#[xdp]
pub fn sipflow_xdp(ctx: XdpContext) -> u32 {
    observe::observe(&xdp_frame::XdpFrame(&ctx), Direction::Ingress);
    xdp_action::XDP_PASS
}

/// TC egress. TC_ACT_UNSPEC lets the next program decide, and the packet
/// passes when there is none: the most neutral answer a classifier can give.
#[classifier]
pub fn sipflow_tc_egress(ctx: TcContext) -> i32 {
    observe::observe(&tc_frame::TcFrame::new(&ctx), Direction::Egress);
    TC_ACT_UNSPEC
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
