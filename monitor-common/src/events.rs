//! What the kernel sends the agent through the `EVENTS` ring buffer: the head
//! of every REGISTER, of every response on a flow with a REGISTER pending, and
//! of every 3xx and 430. Everything else stays counters and timestamps.

use crate::flow::FlowKey;

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
    pub head: [u8; HEAD_MAX],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for HeadEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<HeadEvent>(), 40 + 8 + 4 + 2 + 1 + 1 + HEAD_MAX);
        assert_eq!(core::mem::align_of::<HeadEvent>(), 8);
    }
}
