//! Drains the kernel's `EVENTS` ring buffer: the heads of REGISTERs, their
//! responses, 3xx and 430, each with its flow and time.

use aya::{
    Ebpf,
    maps::{MapData, MapError, RingBuf},
};
use monitor_common::{
    counters::Direction,
    events::{HEAD_MAX, HeadEvent},
    flow::FlowKey,
    maps::EVENTS,
};
use tokio::io::unix::AsyncFd;

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
}

impl Head {
    /// Decodes a ring buffer record; `None` for a record of the wrong size.
    pub fn decode(record: &[u8]) -> Option<Self> {
        if record.len() < size_of::<HeadEvent>() {
            return None;
        }
        // SAFETY: the length is checked; HeadEvent is plain data, read unaligned.
        let event: HeadEvent = unsafe { record.as_ptr().cast::<HeadEvent>().read_unaligned() };
        let len = usize::from(event.head_len).min(HEAD_MAX);
        Some(Self {
            key: event.key,
            timestamp_ns: event.timestamp_ns,
            direction: if event.direction == Direction::Egress as u8 { Direction::Egress } else { Direction::Ingress },
            from_client: event.from_client != 0,
            bytes: event.head[..len].to_vec(),
            cut: event.payload_len as usize > len,
        })
    }
}

/// The ring buffer, pollable from tokio.
pub struct HeadEvents {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl HeadEvents {
    /// Takes the ring buffer out of a loaded instance; needs a tokio runtime.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, String> {
        let map = ebpf.take_map(EVENTS).ok_or("map EVENTS is missing")?;
        let ring = RingBuf::try_from(map).map_err(|e: MapError| e.to_string())?;
        // SAFETY: the RingBuf owns its map's fd and keeps it open while the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| format!("cannot poll the ring buffer: {e}"))?;
        Ok(Self { ring })
    }

    /// Waits until heads are there, then returns all of them.
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<Head>> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let heads = drain(guard.get_inner_mut());
            guard.clear_ready();
            if !heads.is_empty() {
                return Ok(heads);
            }
        }
    }
}

/// Whatever heads are in `ring` now, without waiting.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<Head> {
    let mut heads = Vec::new();
    while let Some(record) = ring.next() {
        if let Some(head) = Head::decode(&record) {
            heads.push(head);
        }
    }
    heads
}
