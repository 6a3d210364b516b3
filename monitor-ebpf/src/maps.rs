//! The kernel's maps. Their names and slot layouts come from monitor-common.
//!
//! Every map is pinned by name (in the directory the agent
//! gives, see the agent's `pins`), so that it outlives the agent; a change to
//! any of their types must bump `pins::SCHEMA`. SCRATCH too: while a new agent
//! takes over, the old entry program may tail-call the new walkers, and both
//! must read the same scratch slot.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use monitor_common::{
    counters::{KernelStat, PACKET_SLOTS, REQUEST_SLOTS, RESPONSE_SLOTS},
    flow::{FlowKey, FlowState, WsSide},
    maps::{DEFAULT_MAX_FLOWS, EVENTS_BYTES, FLOW_EVENTS_BYTES, MAX_PEER_NETWORKS, PORTS},
    tls::TLS_PROCESS_WORDS,
};
use monitor_ebpf::{frame::Window, framing::HeadScan};

/// Packets by direction and class.
#[map]
pub static PACKETS: PerCpuArray<u64> = PerCpuArray::pinned(PACKET_SLOTS, 0);

/// SIP requests by direction and method.
#[map]
pub static REQUESTS: PerCpuArray<u64> = PerCpuArray::pinned(REQUEST_SLOTS, 0);

/// SIP responses by direction and status code.
#[map]
pub static RESPONSES: PerCpuArray<u64> = PerCpuArray::pinned(RESPONSE_SLOTS, 0);

/// Requests and responses by peer (`--peer`; 0: `other`): sized at load time
/// for the peers named, and started afresh when they change (see the agent's `attach`).
#[map]
pub static PEER_REQUESTS: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);
#[map]
pub static PEER_RESPONSES: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// The peer table the two above count for; only the agent reads it.
#[map]
pub static PEER_SET: Array<u32> = Array::pinned(1, 0);

/// A client network (IPv4 mapped into IPv6) to its peer's number. Not pinned:
/// each loaded instance is given its agent's table before it is attached.
#[map]
pub static PEERS: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_PEER_NETWORKS, BPF_F_NO_PREALLOC);

/// What the kernel counts about itself (`KernelStat`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(KernelStat::COUNT as u32, 0);

/// A `PortKind` per port number (0: not a SIP port), as the agent configured
/// them (`--sip-port`, `--sips-port`). An array, not a hash: every packet looks
/// up both its ports, and an array lookup is a bounds check and an add.
#[map]
pub static SIP_PORTS: Array<u8> = Array::pinned(PORTS, 0);

/// Every flow on a SIP port that is not bound; the least recently used goes when it is full.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::pinned(DEFAULT_MAX_FLOWS, 0);

/// Flows the host's registrar bound a REGISTER to (a 2xx it sent): only
/// such an answer moves a flow here, so junk flows, however many, cannot
/// push a registered phone's flow out of the kernel's sight.
#[map]
pub static BOUND_FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::pinned(DEFAULT_MAX_FLOWS, 0);

/// Slots of `BOUND_HINTS`: a power of two.
pub const BOUND_HINT_SLOTS: u32 = 1 << 20;

/// One byte per slot of a cheap hash of the flow key, set when a flow with
/// that hash is bound: a flow whose slot is clear is not in `BOUND_FLOWS`, and
/// its packet pays for an array read, not for a second hash lookup. Never
/// cleared: a slot set in vain costs a lookup that misses, nothing more.
#[map]
pub static BOUND_HINTS: Array<u8> = Array::pinned(BOUND_HINT_SLOTS, 0);

/// The key folded to a `BOUND_HINTS` slot: its addresses and ports XOR-ed
/// word by word and mixed, a few instructions.
#[inline(always)]
fn hint_slot(key: &FlowKey) -> u32 {
    // SAFETY: FlowKey is 40 bytes of plain integers, readable as ten u32 words.
    let words: &[u32; 10] = unsafe { &*(key as *const FlowKey as *const [u32; 10]) };
    let mut folded = 0u32;
    let mut i = 0;
    while i < 10 {
        folded = (folded ^ words[i]).wrapping_mul(0x9e37_79b1);
        i += 1;
    }
    (folded >> 12) & (BOUND_HINT_SLOTS - 1)
}

/// Marks the flow as perhaps bound (see `BOUND_HINTS`).
#[inline(always)]
pub fn hint_bound(key: &FlowKey) {
    if let Some(slot) = BOUND_HINTS.get_ptr_mut(hint_slot(key)) {
        // SAFETY: a valid array slot; a byte written whole.
        unsafe { *slot = 1 };
    }
}

/// A flow's state, wherever it is: in `BOUND_FLOWS` where its hint says it
/// may be, else in `FLOWS`.
#[inline(always)]
pub fn flow_state(key: &FlowKey) -> Option<*mut FlowState> {
    let maybe_bound = BOUND_HINTS.get(hint_slot(key)).is_some_and(|hint| *hint != 0);
    if maybe_bound && let Some(state) = BOUND_FLOWS.get_ptr_mut(key) {
        return Some(state);
    }
    FLOWS.get_ptr_mut(key)
}

/// Heads of REGISTERs, their responses, 3xx and 430, for the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// The moments a flow's verdict may change (`events::FlowEvent`).
#[map]
pub static FLOW_EVENTS: RingBuf = RingBuf::pinned(FLOW_EVENTS_BYTES, 0);

/// Per-CPU working memory for one packet.
pub struct Scratch {
    /// The payload's first bytes: too large for the 512-byte stack.
    pub window: Window,
    /// Where the payload starts and how long it is, passed through map memory on
    /// purpose: values read back from a map are unknown to the verifier, so the
    /// classifier is verified once rather than once per header layout that led to it.
    pub payload_offset: u32,
    pub payload_len: u32,
    /// The flow this packet belongs to, built before classification for the same reason.
    pub key: FlowKey,
    /// 1 when the client sent the packet.
    pub from_client: u8,
    pub tcp_flags: u8,
    /// The TCP header's sequence and acknowledgment numbers and window (0 for UDP).
    pub tcp_sequence: u32,
    pub tcp_acknowledgment: u32,
    pub tcp_window: u16,
    /// The TCP segment's whole payload (the classifier narrows `payload_len` to a message).
    pub tcp_payload_len: u32,
    /// The TCP sequence number of the byte at `payload_offset` once the flow
    /// took the segment: where a WebSocket port's frames are placed.
    pub stream_position: u32,
    /// Frame length, for the flow's byte counts.
    pub frame_len: u32,
    /// The UDP length as written (0 for TCP): which request the server sent.
    pub udp_len: u16,
    /// The classifier's answer (`Payload::encode`), read back opaquely so the flow
    /// update is verified once per kind of payload, not once per method or code.
    pub payload: u32,
    /// A new flow's first state, built here rather than on the stack.
    pub new_flow: FlowState,
    /// 1 when the payload was a WebSocket frame (RFC 7118): one message, not
    /// walked for more; `ws_mask` is its masking key (zeroes: unmasked).
    pub ws_framed: u8,
    pub ws_mask: [u8; 4],
    /// The sending side's WebSocket framing while its bytes are read (see
    /// `websocket_frame::take_side`).
    pub ws_side: WsSide,
    /// The last frame head read: its length and its payload's (0: none read).
    pub ws_head_len: u32,
    pub ws_payload_len: u64,
    /// The walk through a TCP segment that holds more than one message.
    pub follow: Follow,
}

/// Where the walk through a segment's messages stands between tail calls.
pub struct Follow {
    /// Frame offset of the next byte to read, and one past the segment's payload.
    pub cursor: u32,
    pub end: u32,
    /// Messages of this segment counted so far.
    pub messages: u32,
    /// The frame offset whose bytes `Scratch::window` holds now: a step that
    /// would load the window at that offset again finds it loaded already
    /// (the entry program leaves the first message's start there).
    pub window_at: u32,
    /// Bytes of the window up to the end of the head, 0 when it is not in the
    /// window: written by the scan loop and read back opaquely, so that what
    /// follows the loop is verified once, not once per place it could stop.
    pub head_end: u32,
    pub scan: HeadScan,
}

/// The programs that walk a segment's further messages or read its WebSocket frame, by `follow::Next`:
/// one array per program type, as a tail call stays within its type.
#[map]
pub static FOLLOW_XDP: ProgramArray = ProgramArray::pinned(3, 0);
#[map]
pub static FOLLOW_TC: ProgramArray = ProgramArray::pinned(3, 0);

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::pinned(1, 0);

/// This CPU's scratch slot, for the packet being read.
#[inline(always)]
pub fn packet_scratch() -> Option<&'static mut Scratch> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; a packet's programs run to the end on one CPU,
    // and the next packet starts afresh.
    Some(unsafe { &mut *scratch })
}

// The TLS plaintext path (see `tls`). Its maps are pinned like the rest:
// with --keep-attached the probes' links stay pinned too, and while a new
// agent takes over, the old agent's probes and the new one's may run on the
// same call; sharing the maps, they read it once (the first return takes the
// call's entry, the second finds none).

/// Threads (by pid_tgid) at most in an SSL call at once.
const TLS_THREADS: u32 = 16384;

/// An SSL_read under way in a thread, from its entry to its return; or an
/// SSL_write, from its entry until the thread writes the record to its socket
/// (inside the call, or just after it for a server encrypting into memory).
pub struct SslCall {
    /// The caller's plaintext buffer.
    pub buffer: u64,
    /// `SSL_read_ex`: where the count is written (0 for the others).
    pub count_at: u64,
    /// A read's flow, once a socket read in the call has shown it.
    pub key: FlowKey,
    /// A write's plaintext bytes, which wait for its socket.
    pub waiting_len: u32,
    /// A `monitor_common::tls::SslOp`.
    pub op: u8,
    /// Whether a socket was read in the call, and whose (see `tls`).
    pub keyed: u8,
    /// 1 for a write: its plaintext waits for the thread's next socket write.
    pub waiting: u8,
    pub _reserved: u8,
}

#[map]
pub static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::pinned(TLS_THREADS, 0);

/// The SIPS-port socket a thread last read from: the flow of its next
/// SSL_read when the library decrypts from memory (Kamailio, Python's asyncio).
#[repr(C)]
#[derive(Copy, Clone)]
pub struct LastRecv {
    pub key: FlowKey,
    /// No SSL_read since this read: its bytes may still wait to be decrypted.
    pub unread: u8,
    /// The thread read another SIPS socket while one's bytes were unread (a
    /// server that reads every ready connection before it decrypts any): which
    /// connection its next plaintext comes from cannot be told, and a guess
    /// would put one client's ping or REGISTER on another's flow.
    pub ambiguous: u8,
    pub _reserved: [u8; 6],
}

#[map]
pub static LAST_RECV: LruHashMap<u64, LastRecv> = LruHashMap::pinned(TLS_THREADS, 0);

/// Working memory for reading one SSL call's plaintext, per thread: a probe
/// may be preempted, so a per-CPU slot could be another thread's meanwhile.
pub struct TlsScratch {
    pub scratch: Scratch,
    /// The plaintext in the process's memory, and a `Direction` (read: ingress).
    pub buffer: u64,
    pub direction: u32,
}

/// Threads reading plaintext at once; most calls are on other sockets and need none.
#[map]
pub static TLS_SCRATCH: LruHashMap<u64, TlsScratch> = LruHashMap::pinned(4096, 0);

/// All zeroes: what a thread's `TLS_SCRATCH` entry is made from (it is too
/// large for the stack). Never written.
#[map]
pub static TLS_SCRATCH_TEMPLATE: PerCpuArray<TlsScratch> = PerCpuArray::pinned(1, 0);

/// The programs that read plaintext, by `monitor_common::tls::TLS_FOLLOW_PROGRAMS`.
#[map]
pub static FOLLOW_TLS: ProgramArray = ProgramArray::pinned(3, 0);

/// `sipflow_sock_first`, by `monitor_common::tls::SOCK_FOLLOW_PROGRAMS`.
#[map]
pub static FOLLOW_SOCK: ProgramArray = ProgramArray::pinned(1, 0);

/// The processes (a bit per tgid, `monitor_common::tls::tls_process_bit`)
/// whose SSL calls are read: those the agent found holding a socket on a SIPS
/// port (see the agent's `sip_servers`). The uprobes are attached to these
/// processes only; the socket tracepoints fire for every process on the
/// host, and leave at this lookup for all others.
#[map]
pub static TLS_PROCESSES: Array<u64> = Array::pinned(TLS_PROCESS_WORDS, 0);

/// Adds one to a per-CPU counter; per-CPU slots need no atomics.
#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = counters.get_ptr_mut(index) {
        // SAFETY: a valid per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn bump_stat(stat: KernelStat) {
    bump(&STATS, stat as u32);
}
