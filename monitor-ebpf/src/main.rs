//! sipflow's kernel programs. The entry points are thin: they hand the frame
//! to [`observe`] and let the packet through whatever happens: a monitor never
//! changes traffic. XDP sees what arrives; the TC egress program (`--egress`)
//! sees what the host itself sends: its responses, pongs, FINs and RSTs.
#![no_std]
#![no_main]

mod events;
mod flow;
mod follow;
mod maps;
mod observe;
mod tc_frame;
mod xdp_frame;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use monitor_common::counters::{Direction, KernelStat};

use crate::{
    follow::Next,
    maps::{FOLLOW_TC, FOLLOW_XDP, bump_stat},
};

#[xdp]
pub fn sipflow_xdp(ctx: XdpContext) -> u32 {
    if observe::observe(&xdp_frame::XdpFrame(&ctx), Direction::Ingress) {
        // SAFETY: a tail call into our own walker; it returns only when none is
        // installed (a load that was not the agent's), and then the rest goes uncounted.
        unsafe { FOLLOW_XDP.tail_call(&ctx, Next::Scan as u32) };
    }
    xdp_action::XDP_PASS
}

/// The rest of a TCP segment after its first message (see `follow`).
#[xdp]
pub fn sipflow_xdp_scan(ctx: XdpContext) -> u32 {
    follow_xdp(&ctx, follow::scan(&xdp_frame::XdpFrame(&ctx)));
    xdp_action::XDP_PASS
}

#[xdp]
pub fn sipflow_xdp_message(ctx: XdpContext) -> u32 {
    follow_xdp(&ctx, follow::message(&xdp_frame::XdpFrame(&ctx), Direction::Ingress));
    xdp_action::XDP_PASS
}

/// TC egress. TC_ACT_UNSPEC lets the next program decide, and the packet
/// passes when there is none: the most neutral answer a classifier can give.
#[classifier]
pub fn sipflow_tc_egress(ctx: TcContext) -> i32 {
    if observe::observe(&tc_frame::TcFrame::new(&ctx), Direction::Egress) {
        // SAFETY: as in `sipflow_xdp`.
        unsafe { FOLLOW_TC.tail_call(&ctx, Next::Scan as u32) };
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn sipflow_tc_scan(ctx: TcContext) -> i32 {
    follow_tc(&ctx, follow::scan(&tc_frame::TcFrame(&ctx)));
    TC_ACT_UNSPEC
}

#[classifier]
pub fn sipflow_tc_message(ctx: TcContext) -> i32 {
    follow_tc(&ctx, follow::message(&tc_frame::TcFrame(&ctx), Direction::Egress));
    TC_ACT_UNSPEC
}

/// Hands the packet to the next step of the walk. A tail call from a walker
/// that returns failed at the kernel's limit of 33: the rest of the segment
/// goes unread, and that is counted.
#[inline(always)]
fn follow_xdp(ctx: &XdpContext, next: Next) {
    if next != Next::Done {
        // SAFETY: a tail call into one of our own programs of the same type.
        unsafe { FOLLOW_XDP.tail_call(ctx, next as u32) };
        bump_stat(KernelStat::MessageBoundReached);
    }
}

#[inline(always)]
fn follow_tc(ctx: &TcContext, next: Next) {
    if next != Next::Done {
        // SAFETY: as in `follow_xdp`.
        unsafe { FOLLOW_TC.tail_call(ctx, next as u32) };
        bump_stat(KernelStat::MessageBoundReached);
    }
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
