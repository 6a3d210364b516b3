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
    maps::{BOUND_FLOWS, FLOWS, PACKETS, PEER_REQUESTS, PEER_RESPONSES, REQUESTS, RESPONSES, STATS},
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

/// The kernel's flow maps: `FLOWS`, where every flow starts, and
/// `BOUND_FLOWS`, where the kernel moves a flow its registrar bound a
/// REGISTER to, out of the reach of junk flows. To the agent they are one
/// table: a flow is in one or the other.
pub struct FlowTable {
    unbound: HashMap<MapData, FlowKey, FlowState>,
    bound: HashMap<MapData, FlowKey, FlowState>,
    /// Entries this agent removed: with the kernel's creations and the live
    /// count, they tell how many the LRU evicted.
    removed: u64,
    /// The last walk of the maps ended early (see [`FlowTable::walk_was_cut_short`]).
    cut_short: Cell<bool>,
    /// Entries the last walk met in `FLOWS` and in `BOUND_FLOWS`.
    walked: [Cell<u64>; 2],
}

impl FlowTable {
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        Ok(Self {
            unbound: HashMap::try_from(take(ebpf, FLOWS)?)?,
            bound: HashMap::try_from(take(ebpf, BOUND_FLOWS)?)?,
            removed: 0,
            cut_short: Cell::new(false),
            walked: [Cell::new(0), Cell::new(0)],
        })
    }

    /// Every flow now in the maps, read as they are walked: in batches where
    /// the kernel can (5.6+), else entry by entry. Entries that vanish while
    /// they are read are skipped. `FLOWS` first: a flow the kernel moves to
    /// `BOUND_FLOWS` during the walk is met at least once, never missed.
    pub fn entries(&self) -> Box<dyn Iterator<Item = (FlowKey, FlowState)> + '_> {
        self.cut_short.set(false);
        Box::new(self.walk(&self.unbound, &self.walked[0]).chain(self.walk(&self.bound, &self.walked[1])))
    }

    fn walk<'a>(
        &'a self,
        map: &'a HashMap<MapData, FlowKey, FlowState>,
        walked: &'a Cell<u64>,
    ) -> Box<dyn Iterator<Item = (FlowKey, FlowState)> + 'a> {
        use std::os::fd::AsFd;
        walked.set(0);
        let entries: Box<dyn Iterator<Item = (FlowKey, FlowState)> + 'a> =
            match batch::Batches::open(map.map().fd().as_fd(), &self.cut_short) {
                Ok(batches) => Box::new(batches),
                Err(_) => Box::new(map.iter().filter_map(Result::ok)),
            };
        Box::new(entries.inspect(move |_| walked.set(walked.get() + 1)))
    }

    /// Entries the last whole walk met: in `FLOWS`, and in `BOUND_FLOWS`.
    pub fn walked(&self) -> (u64, u64) {
        (self.walked[0].get(), self.walked[1].get())
    }

    /// Whether the last walk of [`FlowTable::entries`] ended before the maps did.
    pub fn walk_was_cut_short(&self) -> bool {
        self.cut_short.get()
    }

    /// The same, all at once.
    pub fn snapshot(&self) -> Vec<(FlowKey, FlowState)> {
        self.entries().collect()
    }

    /// One flow as it is now, for a flow an event or a deadline names: bound
    /// first, then in `FLOWS` (the kernel may move it between the two lookups,
    /// so bound once more).
    pub fn get(&self, key: &FlowKey) -> Option<FlowState> {
        self.bound.get(key, 0).or_else(|_| self.unbound.get(key, 0)).or_else(|_| self.bound.get(key, 0)).ok()
    }

    /// Whether the kernel moved the flow to `BOUND_FLOWS`.
    pub fn is_bound(&self, key: &FlowKey) -> bool {
        self.bound.get(key, 0).is_ok()
    }

    /// Forgets a flow the agent is done with.
    pub fn remove(&mut self, key: &FlowKey) {
        if self.unbound.remove(key).is_ok() || self.bound.remove(key).is_ok() {
            self.removed += 1;
        }
    }

    pub fn removed(&self) -> u64 {
        self.removed
    }
}
