//! A flow's peer (`--peer`): the longest named network that holds its
//! client's address. Looked up once per flow and peer table, when the flow's
//! first message is counted under that table, never per packet.

use aya_ebpf::maps::lpm_trie::Key;
use monitor_common::flow::FlowKey;

use crate::maps::PEERS;

/// Set by the agent at load time: which peer table is in force, 0 when no
/// peer is named (and nothing here runs).
#[unsafe(no_mangle)]
static PEER_TABLE: u32 = 0;

/// IPv4 addresses sit in the trie as IPv4-mapped IPv6 (::ffff:a.b.c.d).
const MAPPED_PREFIX: usize = 10;
const FULL_PREFIX_LEN: u32 = 128;

/// The peer table in force.
#[inline(always)]
pub fn table() -> u32 {
    // SAFETY: a read of a constant the loader may have rewritten; volatile so
    // that the compiler does not fold in the default.
    unsafe { core::ptr::read_volatile(&PEER_TABLE) }
}

/// The number of the peer `key`'s client belongs to: 0 when in no named network.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> u8 {
    let mut address = key.client_addr;
    if key.family == 4 {
        let v4 = [address[0], address[1], address[2], address[3]];
        address = [0; 16];
        address[MAPPED_PREFIX] = 0xff;
        address[MAPPED_PREFIX + 1] = 0xff;
        address[MAPPED_PREFIX + 2..].copy_from_slice(&v4);
    }
    PEERS.get(Key::new(FULL_PREFIX_LEN, address)).copied().unwrap_or(0)
}
