//! Layout of the kernel's per-CPU counter arrays and the label each slot exports.
//!
//! The kernel only ever adds one at an index computed here; the agent sums the
//! per-CPU values and names the index with the `LABEL` tables, so the two sides
//! cannot disagree on what a slot means.

/// Which way the packet crossed the monitored interface.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const COUNT: usize = 2;
    pub const ALL: [Self; Self::COUNT] = [Self::Ingress, Self::Egress];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// What a packet was, as `sipflow_packets_total{class}` reports it.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PacketClass {
    SipRequest = 0,
    SipResponse = 1,
    /// CRLFCRLF on a stream (RFC 5626 §4.4.1).
    KeepalivePing = 2,
    /// A lone CRLF on a stream, the answer to a ping.
    KeepalivePong = 3,
    StunRequest = 4,
    StunResponse = 5,
    StunError = 6,
    /// A SYN, FIN or RST without payload on a SIP port, or any segment on a TLS port.
    TcpControl = 7,
    /// An IP fragment other than the first: no transport header to read.
    Fragment = 8,
    /// Truncated or inconsistent: lengths past the end, bad IHL, bad TCP data offset.
    Malformed = 9,
    Other = 10,
}

impl PacketClass {
    pub const COUNT: usize = 11;
    pub const ALL: [Self; Self::COUNT] = [
        Self::SipRequest,
        Self::SipResponse,
        Self::KeepalivePing,
        Self::KeepalivePong,
        Self::StunRequest,
        Self::StunResponse,
        Self::StunError,
        Self::TcpControl,
        Self::Fragment,
        Self::Malformed,
        Self::Other,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::SipRequest => "sip_request",
            Self::SipResponse => "sip_response",
            Self::KeepalivePing => "keepalive_ping",
            Self::KeepalivePong => "keepalive_pong",
            Self::StunRequest => "stun_request",
            Self::StunResponse => "stun_response",
            Self::StunError => "stun_error",
            Self::TcpControl => "tcp_control",
            Self::Fragment => "fragment",
            Self::Malformed => "malformed",
            Self::Other => "other",
        }
    }
}

/// A SIP request method: the 14 of the core RFCs, then every extension token.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Invite = 0,
    Ack = 1,
    Bye = 2,
    Cancel = 3,
    Register = 4,
    Options = 5,
    Prack = 6,
    Subscribe = 7,
    Notify = 8,
    Publish = 9,
    Info = 10,
    Refer = 11,
    Message = 12,
    Update = 13,
    Other = 14,
}

impl Method {
    pub const COUNT: usize = 15;
    /// The standard methods with their tokens (case-sensitive, RFC 3261 §7.1).
    pub const STANDARD: [(Self, &'static [u8]); 14] = [
        (Self::Invite, b"INVITE"),
        (Self::Ack, b"ACK"),
        (Self::Bye, b"BYE"),
        (Self::Cancel, b"CANCEL"),
        (Self::Register, b"REGISTER"),
        (Self::Options, b"OPTIONS"),
        (Self::Prack, b"PRACK"),
        (Self::Subscribe, b"SUBSCRIBE"),
        (Self::Notify, b"NOTIFY"),
        (Self::Publish, b"PUBLISH"),
        (Self::Info, b"INFO"),
        (Self::Refer, b"REFER"),
        (Self::Message, b"MESSAGE"),
        (Self::Update, b"UPDATE"),
    ];

    /// The standard methods as fixed arrays: tables in BPF programs cannot hold
    /// pointers (nothing relocates them), so the kernel matches against these.
    pub const TOKENS: [MethodToken; 14] = {
        let mut out = [MethodToken { method: Self::Other, len: 0, bytes: [0; MAX_STANDARD_METHOD_LEN] }; 14];
        let mut m = 0;
        while m < Self::STANDARD.len() {
            let (method, name) = Self::STANDARD[m];
            let mut bytes = [0; MAX_STANDARD_METHOD_LEN];
            let mut i = 0;
            while i < name.len() {
                bytes[i] = name[i];
                i += 1;
            }
            out[m] = MethodToken { method, len: name.len(), bytes };
            m += 1;
        }
        out
    };

    pub const fn from_index(index: usize) -> Self {
        if index < Self::STANDARD.len() { Self::STANDARD[index].0 } else { Self::Other }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Publish => "PUBLISH",
            Self::Info => "INFO",
            Self::Refer => "REFER",
            Self::Message => "MESSAGE",
            Self::Update => "UPDATE",
            Self::Other => "other",
        }
    }
}

/// SUBSCRIBE is the longest standard method.
pub const MAX_STANDARD_METHOD_LEN: usize = 9;

/// A standard method's token without pointers, for the kernel.
#[derive(Copy, Clone, Debug)]
pub struct MethodToken {
    pub method: Method,
    pub len: usize,
    pub bytes: [u8; MAX_STANDARD_METHOD_LEN],
}

/// Counts the kernel keeps about itself, so that loss and capacity are visible.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KernelStat {
    /// Entries the kernel added to FLOWS; with the agent's deletions and the
    /// map's size this tells how many the LRU evicted.
    FlowsCreated = 0,
    /// Heads dropped because the ring buffer was full.
    EventsLost = 1,
    /// Heads sent to the agent.
    EventsSent = 2,
    /// TCP segments holding more SIP messages than the kernel follows.
    MessageBoundReached = 3,
    /// First fragments: counted under their own class and under `fragment`, so
    /// that packets counted = packets seen + first fragments, exactly.
    FirstFragments = 4,
    /// An RST inside the window but not at the next expected sequence number:
    /// the host answers it with a challenge ACK, and so does not close (RFC 5961 §3.2).
    RstInWindow = 5,
    /// An RST outside the window: the host drops it.
    RstOutOfWindow = 6,
    /// A FIN not at the next expected sequence number.
    FinOutOfSequence = 7,
    /// An RST or FIN from a side whose sequence numbers were never seen.
    CloseUnverifiable = 8,
    /// Flow events dropped because their ring buffer was full: the agent's
    /// next walk of the map finds those flows, later.
    FlowEventsLost = 9,
    /// SSL reads and writes whose plaintext was read, on a SIPS port's socket.
    TlsCalls = 10,
    /// ... whose flow this interface has not seen (another interface's, or loopback).
    TlsFlowUnseen = 11,
    /// SSL writes never followed by a write to a SIPS socket in the same thread,
    /// and reads from memory after the thread read two SIPS sockets.
    TlsSocketUnknown = 12,
    /// A SYN on a connection already open: the host answers it with a challenge
    /// ACK and keeps the connection (RFC 5961 §4), so it moves no mark.
    SynOnOpenFlow = 13,
    /// A segment acknowledging data the host never sent: the host drops it
    /// (RFC 9293 §3.10.7.4, RFC 5961 §5), and so is its payload.
    AckOfUnsentData = 14,
    /// Payload after a gap in sequence, or outside the window: the host queues
    /// or drops it, and reads it only (if ever) once the gap fills, so its
    /// content says nothing yet; counted and not read.
    PayloadNotInOrder = 15,
    /// A WebSocket port's segment that does not start where a frame can
    /// (RFC 6455 §5.2): the middle of a frame longer than the segments before
    /// it; its bytes are not read as a frame head.
    WebsocketMidFrame = 16,
    /// Flows moved from FLOWS to BOUND_FLOWS: the host's registrar answered a
    /// REGISTER on them with a 2xx.
    FlowsBound = 17,
    /// ICMP port unreachables quoting the request the server is waiting on: the UA is gone.
    PortUnreachable = 18,
    /// ... quoting no such request (none waiting, another checksum, no flow): not believed.
    PortUnreachableUnmatched = 19,
}

impl KernelStat {
    pub const COUNT: usize = 20;
    /// SSL calls by what became of their plaintext, with the `result` label of
    /// `sipflow_tls_calls_total`.
    pub const TLS_CALLS: [(Self, &'static str); 3] =
        [(Self::TlsCalls, "read"), (Self::TlsFlowUnseen, "flow_unseen"), (Self::TlsSocketUnknown, "socket_unknown")];
    /// The segments a flow's verdict ignores, with the `reason` label of
    /// `sipflow_tcp_segments_ignored_total`.
    pub const IGNORED_SEGMENTS: [(Self, &'static str); 7] = [
        (Self::RstInWindow, "rst_in_window"),
        (Self::RstOutOfWindow, "rst_out_of_window"),
        (Self::FinOutOfSequence, "fin_out_of_sequence"),
        (Self::CloseUnverifiable, "unknown_sequence"),
        (Self::SynOnOpenFlow, "syn_on_open_flow"),
        (Self::AckOfUnsentData, "ack_of_unsent_data"),
        (Self::PayloadNotInOrder, "payload_not_in_order"),
    ];
}

/// Status codes the response counters hold a slot for (RFC 3261 §7.2: 100-699).
pub const MIN_STATUS_CODE: u16 = 100;
pub const MAX_STATUS_CODE: u16 = 699;
pub const STATUS_CODE_SLOTS: usize = (MAX_STATUS_CODE - MIN_STATUS_CODE + 1) as usize;

pub const PACKET_SLOTS: u32 = (Direction::COUNT * PacketClass::COUNT) as u32;
pub const REQUEST_SLOTS: u32 = (Direction::COUNT * Method::COUNT) as u32;
pub const RESPONSE_SLOTS: u32 = (Direction::COUNT * STATUS_CODE_SLOTS) as u32;

/// Peers `--peer` may name; their counters are sized for those named at load time.
pub const MAX_PEERS: usize = 64;

/// A peer's request counter (peer 0: in no named network), both directions together.
pub const fn peer_request_index(peer: u8, method: Method) -> u32 {
    peer as u32 * Method::COUNT as u32 + method as u32
}

/// A peer's response counter: `None` for a code outside 100-699.
pub const fn peer_response_index(peer: u8, code: u16) -> Option<u32> {
    code_slot(peer as u32, code)
}

pub const fn packet_index(direction: Direction, class: PacketClass) -> u32 {
    direction as u32 * PacketClass::COUNT as u32 + class as u32
}

pub const fn request_index(direction: Direction, method: Method) -> u32 {
    direction as u32 * Method::COUNT as u32 + method as u32
}

/// `None` for a code outside 100-699, which the kernel never classifies as a response.
pub const fn response_index(direction: Direction, code: u16) -> Option<u32> {
    code_slot(direction as u32, code)
}

/// A code's slot in row `row` of a response counter array, 600 codes a row.
const fn code_slot(row: u32, code: u16) -> Option<u32> {
    if code < MIN_STATUS_CODE || code > MAX_STATUS_CODE {
        return None;
    }
    Some(row * STATUS_CODE_SLOTS as u32 + (code - MIN_STATUS_CODE) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_one_index() {
        let mut seen = [false; PACKET_SLOTS as usize];
        for d in Direction::ALL {
            for c in PacketClass::ALL {
                let i = packet_index(d, c) as usize;
                assert!(!seen[i], "slot {i} used twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn method_table_matches_enum() {
        for (i, (m, token)) in Method::STANDARD.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(m.label().as_bytes(), *token);
            assert_eq!(Method::from_index(i), *m);
        }
        assert_eq!(Method::from_index(14), Method::Other);
        for (token, (m, name)) in Method::TOKENS.iter().zip(Method::STANDARD) {
            assert_eq!(token.method, m);
            assert_eq!(&token.bytes[..token.len], name);
        }
    }

    #[test]
    fn response_slots_cover_100_to_699() {
        assert_eq!(response_index(Direction::Ingress, 99), None);
        assert_eq!(response_index(Direction::Ingress, 100), Some(0));
        assert_eq!(response_index(Direction::Ingress, 699), Some(599));
        assert_eq!(response_index(Direction::Egress, 100), Some(600));
        assert_eq!(response_index(Direction::Egress, 700), None);
    }
}
