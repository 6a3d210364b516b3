//! The counts the liveness gauges export (`sipflow_flows`,
//! `sipflow_would_430_flows`, `sipflow_registrations`): every series of the
//! bounded label sets, zero where nothing is counted.

use std::collections::BTreeMap;

use monitor_common::flow::FlowTransport;

use crate::{
    liveness::tracker::{NO_KEEPALIVE, Tracker, transport_of},
    peers::OTHER,
};

/// The counts the gauges export.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Census {
    /// (transport, state) -> flows
    pub flows: BTreeMap<(&'static str, &'static str), i64>,
    /// (transport, peer) -> failed flows that would warrant 430
    pub would_430: BTreeMap<(&'static str, String), i64>,
    /// (outbound?, peer) -> bindings
    pub registrations: BTreeMap<(bool, String), i64>,
}

pub fn of(tracker: &Tracker) -> Census {
    let mut census = Census::default();
    for transport in [FlowTransport::Udp, FlowTransport::Tcp, FlowTransport::Tls] {
        for state in ["alive", NO_KEEPALIVE, "failed"] {
            census.flows.insert((transport.label(), state), 0);
        }
        for peer in tracker.peers().names() {
            census.would_430.insert((transport.label(), peer.to_string()), 0);
        }
    }
    for (labels, n) in tracker.alive_counts() {
        *census.flows.entry(*labels).or_default() += n;
    }
    for (iface, key, tracked) in tracker.failed_flows() {
        let transport = transport_of(key).label();
        *census.flows.entry((transport, "failed")).or_default() += 1;
        if tracker.would_430(iface, key, &tracked.failure) {
            *census.would_430.entry((transport, tracker.peer_of(key).to_string())).or_default() += 1;
        }
    }
    for peer in tracker.peers().names() {
        for outbound in [true, false] {
            census.registrations.insert((outbound, peer.to_string()), 0);
        }
    }
    if tracker.peers().is_empty() {
        let outbound = tracker.registrations.outbound_count() as i64;
        census.registrations.insert((true, OTHER.into()), outbound);
        census.registrations.insert((false, OTHER.into()), tracker.registrations.len() as i64 - outbound);
    } else {
        for (peer, outbound, n) in tracker.registrations.count_by_peer() {
            census.registrations.insert((outbound, tracker.peers().name(peer).to_string()), n as i64);
        }
    }
    census
}
