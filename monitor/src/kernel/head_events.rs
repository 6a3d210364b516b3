//! Drains the kernel's ring buffers: `EVENTS`, the heads of every request but
//! ACK and of every response, each with its flow and time; and `FLOW_EVENTS`,
//! the flows whose verdict may change now (a close accepted, a wait begun).

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use monitor_common::{
    counters::Direction,
    events::{FlowEvent, FlowEventKind, HEAD_MAX, HeadEvent},
    flow::FlowKey,
    maps::{EVENTS, FLOW_EVENTS},
};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::kernel::error::{KernelError, at};

/// One head, copied out of the ring buffer.
#[derive(Clone, Debug)]
pub struct Head {
    pub key: FlowKey,
    /// CLOCK_BOOTTIME nanoseconds.
    pub timestamp_ns: u64,
    pub direction: Direction,
    pub from_client: bool,
    /// The message's bytes, up to `HEAD_MAX`.
    pub bytes: Vec<u8>,
    /// The message ran past what was copied.
    pub cut: bool,
    /// Its TCP segment had been seen before: a request sent again.
    pub retransmission: bool,
}

impl Head {
    /// Decodes a ring buffer record; `None` for a record of the wrong size.
    pub fn decode(record: &[u8]) -> Option<Self> {
        let event: HeadEvent = read_record(record)?;
        let len = usize::from(event.head_len).min(HEAD_MAX);
        Some(Self {
            key: event.key,
            timestamp_ns: event.timestamp_ns,
            direction: if event.direction == Direction::Egress as u8 { Direction::Egress } else { Direction::Ingress },
            from_client: event.from_client != 0,
            // A WebSocket client's frame is masked on the wire; all else has a key of zeroes.
            bytes: event.head[..len].iter().enumerate().map(|(i, b)| b ^ event.mask[i % 4]).collect(),
            cut: event.payload_len as usize > len,
            retransmission: event.retransmission != 0,
        })
    }
}

/// A flow the kernel asks the agent to look at now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowNews {
    pub key: FlowKey,
    pub timestamp_ns: u64,
    pub kind: FlowEventKind,
    /// `Answered`: microseconds from the ping to its pong.
    pub rtt_us: u32,
}

impl FlowNews {
    pub fn decode(record: &[u8]) -> Option<Self> {
        let event: FlowEvent = read_record(record)?;
        Some(Self {
            key: event.key,
            timestamp_ns: event.timestamp_ns,
            kind: FlowEventKind::from_u8(event.kind)?,
            rtt_us: event.rtt_us,
        })
    }
}

fn read_record<T: aya::Pod>(record: &[u8]) -> Option<T> {
    if record.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked; T is plain data, read unaligned.
    Some(unsafe { record.as_ptr().cast::<T>().read_unaligned() })
}

/// How often the rings are looked at for what the kernel submits without a
/// wakeup. On the flow events ring, the waits: a wait's deadline is taken from
/// the event's own timestamp and lies a second or more after it by default
/// (`--ack-timeout`, the pong and STUN timeouts), so verdicts come no later for
/// it; only a timeout set below this period can see its verdict up to that
/// much late. On the heads ring, the heads only `--transactions` reads: their
/// times are the kernel's stamps, so a KPI waits at most this long and is not
/// skewed (the kernel wakes the agent early when the ring is half full).
pub const QUIET_DRAIN: Duration = Duration::from_millis(100);

/// One of the kernel's ring buffers, pollable from tokio.
pub struct Ring<T> {
    ring: AsyncFd<RingBuf<MapData>>,
    decode: fn(&[u8]) -> Option<T>,
}

/// The heads ring.
pub type HeadEvents = Ring<Head>;
/// The flow events ring.
pub type FlowEvents = Ring<FlowNews>;

impl Ring<Head> {
    /// Takes the heads ring out of a loaded instance; needs a tokio runtime.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        Ring::take(ebpf, EVENTS, Head::decode)
    }
}

impl Ring<FlowNews> {
    /// Takes the flow events ring out of a loaded instance; needs a tokio runtime.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, KernelError> {
        Ring::take(ebpf, FLOW_EVENTS, FlowNews::decode)
    }
}

impl<T> Ring<T> {
    fn take(ebpf: &mut Ebpf, name: &str, decode: fn(&[u8]) -> Option<T>) -> Result<Self, KernelError> {
        let map = ebpf.take_map(name).ok_or_else(|| KernelError::missing_map(name))?;
        let ring = RingBuf::try_from(map).map_err(at(name))?;
        // SAFETY: the RingBuf owns its map's fd and keeps it open while the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(at(format!("polling the ring buffer {name}")))?;
        Ok(Self { ring, decode })
    }

    /// Waits until the kernel wakes the reader, then returns what is there.
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<T>> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let records = drain_with(guard.get_inner_mut(), self.decode);
            guard.clear_ready();
            if !records.is_empty() {
                return Ok(records);
            }
        }
    }

    /// Whatever records are there now, without waiting: those the kernel
    /// submitted without waking the reader (see the kernel's `send_flow_event`
    /// and `send_head`), read every [`QUIET_DRAIN`].
    pub fn drain_now(&mut self) -> Vec<T> {
        drain_with(self.ring.get_mut(), self.decode)
    }
}

/// Whatever heads are in `ring` now, without waiting.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<Head> {
    drain_with(ring, Head::decode)
}

/// Whatever records are in `ring` now, decoded, without waiting.
pub fn drain_with<T>(ring: &mut RingBuf<MapData>, decode: fn(&[u8]) -> Option<T>) -> Vec<T> {
    let mut records = Vec::new();
    while let Some(record) = ring.next() {
        if let Some(decoded) = decode(&record) {
            records.push(decoded);
        }
    }
    records
}
