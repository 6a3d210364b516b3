//! What the kernel sends the agent through the `EVENTS` ring buffer: the head
//! of every REGISTER, of every final response on a flow within a REGISTER
//! transaction's lifetime, and of every 3xx and 430; with `--transactions`,
//! of every request but ACK and every response, which the agent pairs into
//! transactions. Everything else stays counters and timestamps.

use crate::flow::FlowKey;

/// How long after a REGISTER its final response can come: RFC 3261's Timer F
/// (64 x T1 = 32 s), after which the client gives the transaction up.
pub const REGISTER_TRANSACTION_NS: u64 = 32_000_000_000;

/// Bytes of a message's head carried by an event.
pub const HEAD_MAX: usize = 1024;

#[repr(C)]
#[derive(Copy, Clone)]
pub struct HeadEvent {
    pub key: FlowKey,
    /// CLOCK_BOOTTIME nanoseconds.
    pub timestamp_ns: u64,
    /// Payload bytes from the message's start to the end of the packet.
    pub payload_len: u32,
    /// Valid bytes in `head`.
    pub head_len: u16,
    /// A `counters::Direction`.
    pub direction: u8,
    /// 1 when the client sent it, 0 when the server did.
    pub from_client: u8,
    /// A WebSocket client's masking key (RFC 6455 §5.3): `head` is as on the
    /// wire, and byte i unmasks with key byte i mod 4. Zeroes for all else.
    pub mask: [u8; 4],
    /// 1 when the TCP segment that carried it had been seen before: a
    /// request sent again, counted as a retransmission and not paired again.
    pub retransmission: u8,
    pub _reserved: [u8; 3],
    pub head: [u8; HEAD_MAX],
}

// SAFETY: `HeadEvent` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for HeadEvent {}

/// Why the kernel asks the agent to look at a flow now rather than at its
/// next walk of the map: events, not sweeps.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlowEventKind {
    /// An RST or FIN the host's stack acts on (or sent): a verdict now.
    Closed = 1,
    /// A wait began whose end is a verdict unless something comes: the
    /// server's data unacknowledged, a ping without pong, a STUN request or a
    /// request of the server's unanswered; or the client's first keepalive,
    /// from which on its silence counts.
    WaitBegan = 2,
    /// A pong answered the client's ping: one round-trip sample, nothing to judge.
    Answered = 3,
}

impl FlowEventKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Closed),
            2 => Some(Self::WaitBegan),
            3 => Some(Self::Answered),
            _ => None,
        }
    }
}

/// A flow to look at, through the `FLOW_EVENTS` ring buffer.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// CLOCK_BOOTTIME nanoseconds of the packet.
    pub timestamp_ns: u64,
    /// A `FlowEventKind`.
    pub kind: u8,
    pub _reserved: [u8; 3],
    /// `Answered`: microseconds from the ping to its pong; 0 otherwise.
    pub rtt_us: u32,
}

// SAFETY: `FlowEvent` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<HeadEvent>(), 40 + 8 + 4 + 2 + 1 + 1 + 4 + 1 + 3 + HEAD_MAX);
        assert_eq!(core::mem::align_of::<HeadEvent>(), 8);
        assert_eq!(core::mem::size_of::<FlowEvent>(), 40 + 8 + 8);
    }
}
