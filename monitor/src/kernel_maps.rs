//! Reads what the kernel counted.

use aya::{
    Ebpf,
    maps::{MapData, MapError, PerCpuArray},
};
use monitor_common::maps::{PACKETS, REQUESTS, RESPONSES};

/// The per-CPU counter arrays of one attached instance.
pub struct KernelCounters {
    packets: PerCpuArray<MapData, u64>,
    requests: PerCpuArray<MapData, u64>,
    responses: PerCpuArray<MapData, u64>,
}

/// Per-CPU sums, indexed as monitor_common::counters lays the slots out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub packets: Vec<u64>,
    pub requests: Vec<u64>,
    pub responses: Vec<u64>,
}

impl KernelCounters {
    /// Takes the counter maps out of a loaded instance.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapError> {
        let mut take = |name: &str| -> Result<PerCpuArray<MapData, u64>, MapError> {
            let map = ebpf.take_map(name).ok_or_else(|| MapError::InvalidName {
                name: name.to_string(),
            })?;
            PerCpuArray::try_from(map)
        };
        Ok(Self {
            packets: take(PACKETS)?,
            requests: take(REQUESTS)?,
            responses: take(RESPONSES)?,
        })
    }

    pub fn read(&self) -> Result<CounterSnapshot, MapError> {
        Ok(CounterSnapshot {
            packets: sum_per_cpu(&self.packets)?,
            requests: sum_per_cpu(&self.requests)?,
            responses: sum_per_cpu(&self.responses)?,
        })
    }
}

fn sum_per_cpu(array: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>, MapError> {
    array
        .iter()
        .map(|values| values.map(|v| v.iter().sum()))
        .collect()
}
