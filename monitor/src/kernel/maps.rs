//! Reads what the kernel counted and tracked.

mod batch;
mod per_cpu_batch;

use std::cell::Cell;

use aya::{
    Ebpf,
    maps::{HashMap, IterableMap, Map, MapData, MapError, PerCpuArray},
};
use monitor_common::{
    counters::KernelStat,
    flow::{FlowKey, FlowState},
    maps::{FLOWS, PACKETS, PEER_REQUESTS, PEER_RESPONSES, REQUESTS, RESPONSES, STATS},
};

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map, MapError> {
    ebpf.take_map(name).ok_or_else(|| MapError::InvalidName { name: name.to_string() })
}

/// The per-CPU counter arrays of one attached instance.
pub struct KernelCounters {
    packets: PerCpuArray<MapData, u64>,
    requests: PerCpuArray<MapData, u64>,
    responses: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// Where peers are named: requests and responses by peer.
    peer_requests: Option<PerCpuArray<MapData, u64>>,
    peer_responses: Option<PerCpuArray<MapData, u64>>,
}

/// Per-CPU sums, indexed as monitor_common::counters lays the slots out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub packets: Vec<u64>,
    pub requests: Vec<u64>,
    pub responses: Vec<u64>,
    /// Indexed by `KernelStat`.
    pub stats: Vec<u64>,
    /// By `counters::peer_request_index` and `peer_response_index`; empty
    /// where no peer is named.
    pub peer_requests: Vec<u64>,
    pub peer_responses: Vec<u64>,
}

impl CounterSnapshot {
    pub fn stat(&self, stat: KernelStat) -> u64 {
        self.stats.get(stat as usize).copied().unwrap_or(0)
    }
}

impl KernelCounters {
    /// Takes the counter maps out of a loaded instance; the per-peer ones
    /// only where peers are named (`peers_named`).
    pub fn take_from(ebpf: &mut Ebpf, peers_named: bool) -> Result<Self, MapError> {
        let mut array = |name: &str| PerCpuArray::try_from(take(ebpf, name)?);
        Ok(Self {
            packets: array(PACKETS)?,
            requests: array(REQUESTS)?,
            responses: array(RESPONSES)?,
            stats: array(STATS)?,
            peer_requests: if peers_named { Some(array(PEER_REQUESTS)?) } else { None },
            peer_responses: if peers_named { Some(array(PEER_RESPONSES)?) } else { None },
        })
    }

    /// One of the kernel's own counts, without reading the message counters.
    pub fn stat(&self, stat: KernelStat) -> Result<u64, MapError> {
        Ok(self.stats.get(&(stat as u32), 0)?.iter().sum())
    }

    /// Every counter, each as [`sum_per_cpu_one_by_one`] would read it (for tests).
    pub fn read_one_by_one(&self) -> Result<CounterSnapshot, MapError> {
        let peer = |array: &Option<PerCpuArray<MapData, u64>>| {
            array.as_ref().map(sum_per_cpu_one_by_one).transpose().map(Option::unwrap_or_default)
        };
        Ok(CounterSnapshot {
            packets: sum_per_cpu_one_by_one(&self.packets)?,
            requests: sum_per_cpu_one_by_one(&self.requests)?,
            responses: sum_per_cpu_one_by_one(&self.responses)?,
            stats: sum_per_cpu_one_by_one(&self.stats)?,
            peer_requests: peer(&self.peer_requests)?,
            peer_responses: peer(&self.peer_responses)?,
        })
    }

    pub fn read(&self) -> Result<CounterSnapshot, MapError> {
        Ok(CounterSnapshot {
            packets: sum_per_cpu(&self.packets)?,
            requests: sum_per_cpu(&self.requests)?,
            responses: sum_per_cpu(&self.responses)?,
            stats: sum_per_cpu(&self.stats)?,
            peer_requests: self.peer_requests.as_ref().map(sum_per_cpu).transpose()?.unwrap_or_default(),
            peer_responses: self.peer_responses.as_ref().map(sum_per_cpu).transpose()?.unwrap_or_default(),
        })
    }
}

/// Each slot summed over the CPUs: in batches where the kernel can (5.6+),
/// else slot by slot.
fn sum_per_cpu(array: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>, MapError> {
    use std::os::fd::AsFd;
    if let Ok(cpus) = aya::util::nr_cpus()
        && let Ok(sums) = per_cpu_batch::sums(array.map().fd().as_fd(), array.len() as usize, cpus)
    {
        return Ok(sums);
    }
    sum_per_cpu_one_by_one(array)
}

/// Slot by slot, as aya reads them: what the batches are checked against.
pub fn sum_per_cpu_one_by_one(array: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>, MapError> {
    array.iter().map(|values| values.map(|v| v.iter().sum())).collect()
}

/// The kernel's `FLOWS` map.
pub struct FlowTable {
    map: HashMap<MapData, FlowKey, FlowState>,
    /// Entries this agent removed: with the kernel's creations and the live
    /// count, they tell how many the LRU evicted.
    removed: u64,
    /// The last walk of the map ended early (see [`FlowTable::walk_was_cut_short`]).
    cut_short: Cell<bool>,
}

impl FlowTable {
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        Ok(Self { map: HashMap::try_from(take(ebpf, FLOWS)?)?, removed: 0, cut_short: Cell::new(false) })
    }

    /// Every flow now in the map, read as it is walked: in batches where the
    /// kernel can (5.6+), else entry by entry. Entries that vanish while it is
    /// read are skipped.
    pub fn entries(&self) -> Box<dyn Iterator<Item = (FlowKey, FlowState)> + '_> {
        use std::os::fd::AsFd;
        match batch::Batches::open(self.map.map().fd().as_fd(), &self.cut_short) {
            Ok(batches) => Box::new(batches),
            Err(_) => Box::new(self.map.iter().filter_map(Result::ok)),
        }
    }

    /// Whether the last walk of [`FlowTable::entries`] ended before the map did.
    pub fn walk_was_cut_short(&self) -> bool {
        self.cut_short.get()
    }

    /// The same, all at once.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowState)> {
        self.entries().collect()
    }

    /// One flow as it is now: a single lookup, for a flow an event or a deadline names.
    pub fn get(&self, key: &FlowKey) -> Option<FlowState> {
        self.map.get(key, 0).ok()
    }

    /// Forgets a flow the agent is done with.
    pub fn remove(&mut self, key: &FlowKey) {
        if self.map.remove(key).is_ok() {
            self.removed += 1;
        }
    }

    pub fn removed(&self) -> u64 {
        self.removed
    }
}
