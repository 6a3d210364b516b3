//! Names of the kernel's maps and programs, as the agent looks them up.

/// XDP program attached to every monitored interface.
pub const XDP_PROGRAM: &str = "sipflow_xdp";

/// TC egress program (`--egress`).
pub const TC_EGRESS_PROGRAM: &str = "sipflow_tc_egress";

/// The programs that walk a TCP segment holding several SIP messages, and the
/// one that reads a WebSocket frame, tail-called through the program arrays
/// `FOLLOW_XDP` and `FOLLOW_TC`, in their slot order: the head scanner (0),
/// the message counter (1), the WebSocket frame reader (2).
pub const XDP_FOLLOW_PROGRAMS: [&str; 3] = ["sipflow_xdp_scan", "sipflow_xdp_message", "sipflow_xdp_websocket"];
pub const TC_FOLLOW_PROGRAMS: [&str; 3] = ["sipflow_tc_scan", "sipflow_tc_message", "sipflow_tc_websocket"];
pub const FOLLOW_XDP: &str = "FOLLOW_XDP";
pub const FOLLOW_TC: &str = "FOLLOW_TC";

/// The kernel's global `u8`, 1 when only ingress is seen (`--ingress-only`).
pub const INGRESS_ONLY: &str = "INGRESS_ONLY";

/// The kernel's global `u8`, 1 when every SIP message's head goes to the
/// agent for the transaction KPIs (`--transactions`).
pub const TRANSACTIONS: &str = "TRANSACTIONS";

/// An XDP program that only passes: the benchmark's yardstick.
pub const PASS_PROGRAM: &str = "sipflow_pass";

/// `PerCpuArray<u64>` indexed by [`crate::counters::packet_index`].
pub const PACKETS: &str = "PACKETS";
/// `PerCpuArray<u64>` indexed by [`crate::counters::request_index`].
pub const REQUESTS: &str = "REQUESTS";
/// `PerCpuArray<u64>` indexed by [`crate::counters::response_index`].
pub const RESPONSES: &str = "RESPONSES";
/// `Array<u8>` indexed by port number: its [`crate::ports::PortKind`], 0 when not a SIP port.
pub const SIP_PORTS: &str = "SIP_PORTS";
/// Entries of `SIP_PORTS`: every port number.
pub const PORTS: u32 = 65536;

/// Most ports `--sip-port` may configure; the map is sized for it.
pub const MAX_SIP_PORTS: u32 = 64;

/// `LruHashMap<FlowKey, FlowState>`: one entry per flow on a SIP port not
/// (yet) bound: anyone can make such flows, by the hundred thousand.
pub const FLOWS: &str = "FLOWS";
/// `LruHashMap<FlowKey, FlowState>`: flows over which the host's registrar
/// answered a REGISTER with a 2xx, moved here from `FLOWS` by the kernel, so
/// that a flood of junk flows cannot push them out. Same value as `FLOWS`.
pub const BOUND_FLOWS: &str = "BOUND_FLOWS";
/// Default size of `FLOWS` and of `BOUND_FLOWS` (`--max-flows` changes both at load time).
pub const DEFAULT_MAX_FLOWS: u32 = 65536;
/// `RingBuf` of `events::HeadEvent`.
pub const EVENTS: &str = "EVENTS";
/// Size of `EVENTS` in bytes: about four thousand heads in flight, so that a
/// registration storm's burst waits here while the agent drains it.
pub const EVENTS_BYTES: u32 = 1 << 22;
/// `RingBuf` of `events::FlowEvent`: the moments a flow's verdict may change.
pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
/// Size of `FLOW_EVENTS` in bytes: thousands of events in flight.
pub const FLOW_EVENTS_BYTES: u32 = 1 << 18;
/// The kernel's global `u32` naming the peer table in force (`--peer`): 0
/// when no peer is named, so that the per-message path does nothing more.
pub const PEER_TABLE: &str = "PEER_TABLE";
/// `LpmTrie<[u8; 16], u8>`: a client network (IPv4 mapped into IPv6) to its peer's number.
pub const PEERS: &str = "PEERS";
/// Networks `--peer` may name in all.
pub const MAX_PEER_NETWORKS: u32 = 4096;
/// `PerCpuArray<u64>` indexed by [`crate::counters::peer_request_index`]:
/// requests by peer (0: `other`) and method, both directions together; only
/// counted where peers are named.
pub const PEER_REQUESTS: &str = "PEER_REQUESTS";
/// `PerCpuArray<u64>` indexed by [`crate::counters::peer_response_index`].
pub const PEER_RESPONSES: &str = "PEER_RESPONSES";
/// `Array<u32>` of one entry: the peer table the pinned per-peer counters
/// count for, so that a run with other peers starts them afresh. Only the agent reads it.
pub const PEER_SET: &str = "PEER_SET";
/// `PerCpuArray<u64>` indexed by `counters::KernelStat`.
pub const STATS: &str = "STATS";
