//! The message counters: requests by method, responses by exact code; and
//! the same by the flow's named peer, where peers are named.

use monitor_common::{
    counters::{Direction, peer_request_index, peer_response_index, request_index, response_index},
    flow::{FlowKey, FlowState},
};
use monitor_ebpf::payload::Payload;

use crate::{
    maps::{PEER_REQUESTS, PEER_RESPONSES, REQUESTS, RESPONSES, bump},
    peer,
};

#[inline(always)]
pub fn count_message(payload: Payload, direction: Direction) {
    match payload {
        Payload::Request(method) => bump(&REQUESTS, request_index(direction, method)),
        Payload::Response(code) => {
            if let Some(index) = response_index(direction, code) {
                bump(&RESPONSES, index);
            }
        }
        _ => {}
    }
}

/// Counts a message once more by its flow's peer (0: in no named network).
/// Nothing when no peer is named; the peer is looked up when the flow is
/// first met under the table in force, and kept in its state.
#[inline(always)]
pub fn count_for_peer(state: &mut FlowState, key: &FlowKey, payload: Payload) {
    let table = peer::table();
    if table == 0 || !matches!(payload, Payload::Request(_) | Payload::Response(_)) {
        return;
    }
    if state.peer_table != table {
        state.peer = peer::lookup(key);
        state.peer_table = table;
    }
    let peer = state.peer;
    match payload {
        Payload::Request(method) => bump(&PEER_REQUESTS, peer_request_index(peer, method)),
        Payload::Response(code) => {
            if let Some(index) = peer_response_index(peer, code) {
                bump(&PEER_RESPONSES, index);
            }
        }
        _ => {}
    }
}
