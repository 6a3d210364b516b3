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
mod peer;
mod sock;
mod tally;
mod tc_frame;
mod tls;
mod user_frame;
mod websocket_frame;
mod xdp_frame;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, raw_tracepoint, uprobe, uretprobe, xdp},
    maps::ProgramArray,
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use monitor_common::{
    counters::{Direction, KernelStat},
    tls::{SslOp, TLS_FIRST_SLOT},
};

use crate::{
    follow::Next,
    maps::{FOLLOW_SOCK, FOLLOW_TC, FOLLOW_TLS, FOLLOW_XDP, bump_stat, packet_scratch},
};

#[xdp]
pub fn sipflow_xdp(ctx: XdpContext) -> u32 {
    let next = observe::observe(&xdp_frame::XdpFrame(&ctx), Direction::Ingress);
    if next != Next::Done {
        // SAFETY: a tail call into our own walker; it returns only when none is
        // installed (a load that was not the agent's), and then the rest goes uncounted.
        unsafe { FOLLOW_XDP.tail_call(&ctx, next as u32) };
    }
    xdp_action::XDP_PASS
}

/// The rest of a TCP segment after its first message (see `follow`).
#[xdp]
pub fn sipflow_xdp_scan(ctx: XdpContext) -> u32 {
    follow(&ctx, &FOLLOW_XDP, follow::scan(&xdp_frame::XdpFrame(&ctx), packet_scratch()));
    xdp_action::XDP_PASS
}

#[xdp]
pub fn sipflow_xdp_message(ctx: XdpContext) -> u32 {
    follow(&ctx, &FOLLOW_XDP, follow::message(&xdp_frame::XdpFrame(&ctx), packet_scratch(), Direction::Ingress));
    xdp_action::XDP_PASS
}

/// A `--ws-port` segment's WebSocket frame (see `websocket_frame`).
#[xdp]
pub fn sipflow_xdp_websocket(ctx: XdpContext) -> u32 {
    let _ = websocket_frame::read(&xdp_frame::XdpFrame(&ctx), packet_scratch(), Direction::Ingress);
    xdp_action::XDP_PASS
}

/// TC egress. TC_ACT_UNSPEC lets the next program decide, and the packet
/// passes when there is none: the most neutral answer a classifier can give.
#[classifier]
pub fn sipflow_tc_egress(ctx: TcContext) -> i32 {
    let next = observe::observe(&tc_frame::TcFrame::new(&ctx), Direction::Egress);
    if next != Next::Done {
        // SAFETY: as in `sipflow_xdp`.
        unsafe { FOLLOW_TC.tail_call(&ctx, next as u32) };
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn sipflow_tc_scan(ctx: TcContext) -> i32 {
    follow(&ctx, &FOLLOW_TC, follow::scan(&tc_frame::TcFrame(&ctx), packet_scratch()));
    TC_ACT_UNSPEC
}

#[classifier]
pub fn sipflow_tc_message(ctx: TcContext) -> i32 {
    follow(&ctx, &FOLLOW_TC, follow::message(&tc_frame::TcFrame(&ctx), packet_scratch(), Direction::Egress));
    TC_ACT_UNSPEC
}

#[classifier]
pub fn sipflow_tc_websocket(ctx: TcContext) -> i32 {
    let _ = websocket_frame::read(&tc_frame::TcFrame(&ctx), packet_scratch(), Direction::Egress);
    TC_ACT_UNSPEC
}

/// Hands the packet (or an SSL call's plaintext) to the next step of the
/// walk, among `walkers`: the programs of the caller's own type, as a tail
/// call stays within its type. A tail call from a walker that returns failed
/// at the kernel's limit of 33: the rest goes unread, and that is counted.
#[inline(always)]
fn follow(ctx: &impl EbpfContext, walkers: &ProgramArray, next: Next) {
    match next {
        Next::Done => {}
        Next::Bound => log_bound(ctx, MAX_MESSAGES_BOUND),
        _ => {
            // SAFETY: a tail call into one of our own programs of the same type.
            unsafe { walkers.tail_call(ctx, next as u32) };
            bump_stat(KernelStat::MessageBoundReached);
            log_bound(ctx, TAIL_CALL_BOUND);
        }
    }
}

/// Which bound cut a segment's walk, for the log.
const MAX_MESSAGES_BOUND: u8 = 1;
const TAIL_CALL_BOUND: u8 = 2;

/// A rare event, off the per-packet path: at debug level, which the agent
/// turns on in the kernel only when its own log wants it (`SIPFLOW_LOG`).
#[inline(always)]
fn log_bound(ctx: &impl EbpfContext, bound: u8) {
    if bound == MAX_MESSAGES_BOUND {
        debug!(
            ctx,
            "a TCP segment held more than {} SIP messages; the rest of it goes uncounted",
            follow::MAX_MESSAGES
        );
    } else {
        debug!(ctx, "a TCP segment's walk reached the kernel's bound of tail calls; the rest of it goes uncounted");
    }
}

// SIP inside TLS (see `tls`): uprobes on the TLS library's read and write
// calls, raw tracepoints on the socket calls that tell their socket, and the
// programs that read the plaintext, tail-called as a segment's walkers are.

#[uprobe]
pub fn sipflow_ssl_read(ctx: ProbeContext) -> u32 {
    tls::ssl_entry(&ctx, SslOp::Read, false);
    0
}

#[uprobe]
pub fn sipflow_ssl_read_ex(ctx: ProbeContext) -> u32 {
    tls::ssl_entry(&ctx, SslOp::Read, true);
    0
}

#[uprobe]
pub fn sipflow_ssl_write(ctx: ProbeContext) -> u32 {
    tls::ssl_entry(&ctx, SslOp::Write, false);
    0
}

#[uprobe]
pub fn sipflow_ssl_write_ex(ctx: ProbeContext) -> u32 {
    tls::ssl_entry(&ctx, SslOp::Write, true);
    0
}

#[uretprobe]
pub fn sipflow_ssl_return(ctx: RetProbeContext) -> u32 {
    if tls::ssl_return(&ctx) {
        read_plaintext(&ctx);
    }
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sipflow_sock_recv(ctx: RawTracePointContext) -> i32 {
    tls::sock_recv(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sipflow_sock_send(ctx: RawTracePointContext) -> i32 {
    if tls::sock_send(&ctx) {
        // SAFETY: a tail call into our own program of the same type (raw tracepoint).
        unsafe { FOLLOW_SOCK.tail_call(&ctx, 0) };
    }
    0
}

/// Tail-called only, from `sipflow_sock_send`: the first message of a write
/// whose socket showed after the call (a server encrypting into memory).
/// Never attached.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sipflow_sock_first(_ctx: RawTracePointContext) -> i32 {
    let _ = tls::first();
    0
}

/// Tail-called only, from `sipflow_ssl_return`: of its program type (kprobe,
/// as every uprobe program is), and never attached.
#[uprobe]
pub fn sipflow_tls_first(ctx: ProbeContext) -> u32 {
    follow(&ctx, &FOLLOW_TLS, tls::first());
    0
}

#[uprobe]
pub fn sipflow_tls_scan(ctx: ProbeContext) -> u32 {
    follow(&ctx, &FOLLOW_TLS, tls::scan());
    0
}

#[uprobe]
pub fn sipflow_tls_message(ctx: ProbeContext) -> u32 {
    follow(&ctx, &FOLLOW_TLS, tls::message());
    0
}

/// Hands an SSL call's plaintext, set up in the thread's scratch, to the
/// program that reads its first message.
#[inline(always)]
fn read_plaintext(ctx: &RetProbeContext) {
    // SAFETY: a tail call into our own program of the same type (kprobe).
    unsafe { FOLLOW_TLS.tail_call(ctx, TLS_FIRST_SLOT) };
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
