//! The kernel's maps. Their names and slot layouts come from monitor-common.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use monitor_common::{
    counters::{PACKET_SLOTS, REQUEST_SLOTS, RESPONSE_SLOTS},
    maps::MAX_SIP_PORTS,
};
use monitor_ebpf::frame::Window;

/// Packets by direction and class.
#[map]
pub static PACKETS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PACKET_SLOTS, 0);

/// SIP requests by direction and method.
#[map]
pub static REQUESTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REQUEST_SLOTS, 0);

/// SIP responses by direction and status code.
#[map]
pub static RESPONSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(RESPONSE_SLOTS, 0);

/// Ports the agent configured (`--sip-port`), host byte order, to a `PortKind`.
#[map]
pub static SIP_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_SIP_PORTS, 0);

/// Per-CPU working memory for one packet.
pub struct Scratch {
    /// The payload's first bytes: too large for the 512-byte stack.
    pub window: Window,
    /// Where the payload starts and how long it is, passed through map memory on
    /// purpose: values read back from a map are unknown to the verifier, so the
    /// classifier is verified once rather than once per header layout that led to it.
    pub payload_offset: u32,
    pub payload_len: u32,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Adds one to a per-CPU counter; per-CPU slots need no atomics.
#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = counters.get_ptr_mut(index) {
        // SAFETY: a valid per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
