//! One flow as GET /flows shows it, from the tracker's failed flows and the
//! kernel's flow maps.

use monitor_common::flow::{FlowKey, FlowState};
use serde::Serialize;

use crate::liveness::{
    tracker::{Judged, Tracker, liveness_state, seconds, socket_addr, transport_of},
    verdict::{self, FlowFailure},
};

/// One flow as GET /flows shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FlowView {
    pub iface: String,
    pub transport: &'static str,
    /// The SIP server's side.
    pub local: String,
    /// The client's side.
    pub remote: String,
    /// The client's peer (`--peer`), or `other`.
    pub peer: String,
    pub vlan: u16,
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub seconds_since_last_packet: f64,
    /// The client was seen keeping the flow alive (CRLF pings, STUN): only then
    /// can its silence fail it. A flow in state `no_keepalive` fails only on evidence.
    pub kept_alive: bool,
    /// Since the client's last ping, STUN request or SIP message; null when none was seen.
    pub seconds_since_last_keepalive: Option<f64>,
    /// The keepalive interval in force: the registrar's Flow-Timer, else the default.
    pub flow_timer: u64,
    pub flow_timer_from_registrar: bool,
    /// The interval a keepalive timeout is judged by (s): the Flow-Timer, or the
    /// client's own slower cadence (5/4 of its longest quiet before a keepalive), up to 120 s.
    pub keepalive_interval: u64,
    pub aor: Option<String>,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    /// Bindings on the flow: each made by a 2xx seen on it.
    pub bindings: u32,
    /// An edge proxy routes by this flow (an outbound binding, or --all-bindings-by-flow).
    pub routed_by_flow: bool,
    pub would_430: bool,
    /// A failed flow's verdict as it was reached (null for others): `would_430`
    /// above is as the bindings stand now, this one as they stood then.
    pub verdict: Option<Judged>,
    pub packets_from_client: u64,
    pub packets_from_server: u64,
}

/// The flows as the API shows them, failed ones first, then by address:
/// the failed ones the agent keeps, and with `all`, every other flow of
/// `flows` (the kernel's maps, by interface) too.
pub fn flows<'a>(
    tracker: &Tracker,
    flows: impl IntoIterator<Item = (&'a str, FlowKey, FlowState)>,
    now_ns: u64,
    only_failed: bool,
) -> Vec<FlowView> {
    let mut out: Vec<FlowView> = Vec::new();
    for (iface, key, tracked) in tracker.failed_flows() {
        let mut view = flow_view(tracker, iface, key, &tracked.state, Some(tracked.failure), now_ns);
        view.verdict = Some(Judged {
            seconds_ago: seconds(now_ns.saturating_sub(tracked.judged.at_ns)),
            ..tracked.judged.clone()
        });
        out.push(view);
    }
    if !only_failed {
        for (iface, key, state) in flows {
            if !tracker.is_failed(iface, &key) {
                out.push(flow_view(tracker, iface, &key, &state, None, now_ns));
            }
        }
    }
    out.sort_by(|a, b| (a.state != "failed", &a.iface, &a.remote).cmp(&(b.state != "failed", &b.iface, &b.remote)));
    out
}

fn flow_view(
    tracker: &Tracker,
    iface: &str,
    key: &FlowKey,
    s: &FlowState,
    failure: Option<FlowFailure>,
    now_ns: u64,
) -> FlowView {
    let transport = transport_of(key);
    let bindings = tracker.registrations.on_flow(iface, key);
    let flow_timer = bindings.and_then(|b| b.flow_timer);
    let binding = bindings.and_then(|b| b.shown);
    FlowView {
        iface: iface.to_string(),
        transport: transport.label(),
        local: socket_addr(key.family, &key.server_addr, key.server_port).to_string(),
        remote: socket_addr(key.family, &key.client_addr, key.client_port).to_string(),
        peer: tracker.peer_of(key).to_string(),
        vlan: key.vlan_id,
        state: if failure.is_some() { "failed" } else { liveness_state(s) },
        reason: failure.map(|f| f.reason.label()),
        seconds_since_last_packet: seconds(now_ns.saturating_sub(s.last_seen_ns)),
        kept_alive: verdict::kept_alive(s),
        seconds_since_last_keepalive: (s.last_client_activity_ns != 0)
            .then(|| seconds(now_ns.saturating_sub(s.last_client_activity_ns))),
        flow_timer: tracker.timers().keepalive(transport, flow_timer).as_secs(),
        flow_timer_from_registrar: flow_timer.is_some(),
        // Rounded: a 4 s timer seen as a 3.99 s gap is a 5 s cadence (4.99 s), not 4.
        keepalive_interval: tracker.timers().cadence(transport, flow_timer, s).as_secs_f64().round() as u64,
        aor: binding.map(|k| k.aor().to_string()),
        instance: binding.and_then(|k| k.instance()).map(str::to_string),
        reg_id: binding.and_then(|k| k.reg_id()),
        bindings: bindings.map_or(0, |b| b.count),
        routed_by_flow: bindings.is_some_and(|b| b.by_flow),
        would_430: failure.as_ref().is_some_and(|f| tracker.would_430(iface, key, f)),
        verdict: None,
        packets_from_client: s.packets_from_client,
        packets_from_server: s.packets_from_server,
    }
}
