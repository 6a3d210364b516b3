//! Heads of the messages the agent parses (REGISTER, its response, 3xx, 430;
//! with `--transactions` every request but ACK and every response), sent through the `EVENTS` ring buffer. A full buffer drops the head and counts it.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use monitor_common::{
    counters::{Direction, KernelStat},
    events::{FlowEvent, FlowEventKind, HEAD_MAX, HeadEvent},
    flow::FlowKey,
    maps::EVENTS_BYTES,
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
    send_flow_event_with(key, kind, now, 0);
}

/// The same, with a round-trip time (`FlowEventKind::Answered`).
#[inline(always)]
pub fn send_flow_event_with(key: &FlowKey, kind: FlowEventKind, now: u64, rtt_us: u32) {
    let Some(mut entry) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        bump_stat(KernelStat::FlowEventsLost);
        return;
    };
    // SAFETY: the reserved entry is ours until submitted; every field is written.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.key = *key;
    event.timestamp_ns = now;
    event.kind = kind as u8;
    event._reserved = [0; 3];
    event.rtt_us = rtt_us;
    let wakeup = match kind {
        FlowEventKind::Closed => BPF_RB_FORCE_WAKEUP,
        FlowEventKind::WaitBegan | FlowEventKind::Answered => BPF_RB_NO_WAKEUP,
    };
    entry.submit(wakeup as u64);
}

/// Who reads a head, which decides whether the agent is woken for it.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum HeadFor {
    /// Registrations or 430 grading: the agent is woken for it (at once where
    /// transaction heads may be queued before it, which the ring's adaptive
    /// wakeup would not count as the reader having caught up).
    Registrations,
    /// Only the transaction KPIs: no wakeup. The agent drains the ring every
    /// `head_events::QUIET_DRAIN` anyway, and a wakeup per SIP message cost
    /// the live path five times its work and the agent forty (BENCHMARKS.md §8).
    Transactions,
    /// A request in a TCP segment seen before (see `flow::judge_segment`): a
    /// resend for the transaction KPIs, marked so.
    Retransmission,
}

/// Sends the head of the message at the scratch's offset.
#[inline(always)]
pub fn send_head(frame: &impl Frame, scratch: &Scratch, direction: Direction, now: u64, reader: HeadFor) {
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
    event.retransmission = (reader == HeadFor::Retransmission) as u8;
    event._reserved = [0; 3];
    let wakeup = match reader {
        HeadFor::Registrations if every_head() => BPF_RB_FORCE_WAKEUP,
        HeadFor::Registrations => 0,
        // Half full between two drains: more SIP than the ring holds in one
        // drain period comes in, and the agent is woken before heads are lost.
        _ if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > EVENTS_BYTES as u64 / 2 => BPF_RB_FORCE_WAKEUP,
        HeadFor::Transactions | HeadFor::Retransmission => BPF_RB_NO_WAKEUP,
    };
    entry.submit(wakeup as u64);
    bump_stat(KernelStat::EventsSent);
}
