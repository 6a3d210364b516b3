//! Heads of the messages the agent parses (REGISTER, its response, 3xx, 430;
//! with `--transactions` every request but ACK and every response), sent through the `EVENTS` ring buffer. A full buffer drops the head and counts it.

use aya_ebpf::bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use monitor_common::{
    counters::{Direction, KernelStat},
    events::{FlowEvent, FlowEventKind, HEAD_MAX, HeadEvent},
    flow::FlowKey,
};
use monitor_ebpf::frame::Frame;

use crate::maps::{EVENTS, FLOW_EVENTS, Scratch, bump_stat};

/// Set by the agent at load time (`--transactions`): 1 when the head of every
/// request but ACK and of every response goes up, for the transaction KPIs. A
/// head delivered costs about what the rest of the packet's path does
/// (BENCHMARKS.md §8), so only the heads registrations need go up by default.
#[unsafe(no_mangle)]
static TRANSACTIONS: u8 = 0;

/// Whether every SIP message's head goes up (`TRANSACTIONS`).
#[inline(always)]
pub fn every_head() -> bool {
    // SAFETY: a read of a constant the loader may have rewritten; volatile so
    // that the compiler does not fold in the default.
    unsafe { core::ptr::read_volatile(&TRANSACTIONS) != 0 }
}

/// Tells the agent to look at the flow. Sent when a close is accepted or a
/// wait begins, never per packet. A close wakes the agent at once: its verdict
/// is due now. A wait does not: its deadline is a second or more away, the
/// agent drains those events every `head_events::QUIET_DRAIN` anyway, and a
/// wakeup per server response (a wait for its ACK begins with each) cost the
/// sending thread more than the rest of sipflow's work on the packet.
#[inline(always)]
pub fn send_flow_event(key: &FlowKey, kind: FlowEventKind, now: u64) {
    let Some(mut entry) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        bump_stat(KernelStat::FlowEventsLost);
        return;
    };
    // SAFETY: the reserved entry is ours until submitted; every field is written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.key = *key;
    event.timestamp_ns = now;
    event.kind = kind as u8;
    event._reserved = [0; 7];
    let wakeup = match kind {
        FlowEventKind::Closed => BPF_RB_FORCE_WAKEUP,
        FlowEventKind::WaitBegan => BPF_RB_NO_WAKEUP,
    };
    entry.submit(wakeup as u64);
}

/// Sends the head of the message at the scratch's offset. `retransmission`:
/// the TCP segment that holds it was seen before (see `flow::judge_segment`).
#[inline(always)]
pub fn send_head(frame: &impl Frame, scratch: &Scratch, direction: Direction, now: u64, retransmission: bool) {
    // SAFETY: plain reads of the scratch slot (volatile: see `Scratch`).
    let offset = unsafe { core::ptr::read_volatile(&scratch.payload_offset) } as usize;
    let payload_len = unsafe { core::ptr::read_volatile(&scratch.payload_len) } as usize;
    let len = if payload_len < HEAD_MAX { payload_len } else { HEAD_MAX };
    let Some(mut entry) = EVENTS.reserve::<HeadEvent>(0) else {
        bump_stat(KernelStat::EventsLost);
        return;
    };
    // SAFETY: the reserved entry is ours until submitted or discarded; every field
    // but the unused tail of `head` is written before it is submitted.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    if len == 0 || !frame.load_bytes(offset, len, &mut event.head) {
        entry.discard(0);
        return;
    }
    event.key = scratch.key;
    event.timestamp_ns = now;
    event.payload_len = payload_len as u32;
    event.head_len = len as u16;
    event.direction = direction as u8;
    event.from_client = scratch.from_client;
    event.mask = scratch.ws_mask;
    event.retransmission = retransmission as u8;
    event._reserved = [0; 3];
    entry.submit(0);
    bump_stat(KernelStat::EventsSent);
}
