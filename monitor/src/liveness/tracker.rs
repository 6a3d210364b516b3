//! Every flow's story across sweeps: the kernel's latest state, its verdict,
//! the bindings it carries, and whether an edge proxy would answer 430 for it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use monitor_common::flow::{FlowKey, FlowState, FlowTransport};
use serde::Serialize;

use monitor_common::counters::Direction;

use super::{
    registrations::{Change, FlowId, Limits, Registrations},
    verdict::{self, FlowFailure, Reason, Timers},
};
use crate::{kernel::head_events::Head, peers::Peers, sip_head};

/// The agent's memory of flows is kept to what the kernel's map cannot tell:
/// failed flows (a verdict is reached once, and listed for `retention`), and
/// counts. Healthy flows are judged as the map is walked and not copied, so a
/// sweep of a million flows needs memory for one batch of them, not for all.
pub struct Tracker {
    /// Failed flows per interface, until they come back, leave the kernel's
    /// map, or their retention ends.
    failed: HashMap<String, HashMap<FlowKey, TrackedFlow>>,
    /// Flows not failed at each interface's last sweep, by transport and state label.
    alive: HashMap<String, BTreeMap<(&'static str, &'static str), i64>>,
    pub registrations: Registrations,
    timers: Timers,
    /// How long a failed flow stays listed (and in the kernel's map) after it failed.
    retention: Duration,
    /// Flows whose binding moved elsewhere, and when.
    replaced: HashMap<FlowId, u64>,
    pub grades: Grades,
    /// Sweeps so far: a failed flow not met in its interface's latest sweep has left the map.
    sweeps: u64,
    /// Failures before this time are listed but not reported (see `quiet_before`).
    quiet_before_ns: u64,
    /// Only ingress is seen (a tap): the server side's messages arrive there too.
    ingress_only: bool,
}

#[derive(Clone, Debug)]
pub struct TrackedFlow {
    pub state: FlowState,
    pub failure: FlowFailure,
    /// The sweep that last met it in the kernel's map.
    seen_in: u64,
    /// The verdict as it was reached, against the bindings of that moment.
    pub judged: Judged,
}

/// A verdict as it was reached: the binding may move on afterwards (a UA that
/// re-registers over a new flow), but what was predicted, and when, stays.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Judged {
    /// When the agent reached the verdict (monotonic ns); shown as seconds ago.
    #[serde(skip)]
    pub at_ns: u64,
    pub seconds_ago: f64,
    pub aor: Option<String>,
    pub would_430: bool,
}

/// How the host's own 430s compare with the verdicts before them.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grades {
    /// 430s to an AOR whose flow sipflow had already flagged.
    pub predicted: u64,
    /// 430s that came without a prediction.
    pub missed: u64,
    /// 430s the host received rather than sent: someone else's answer, or
    /// unsolicited datagrams; neither is this host's edge proxy at work.
    pub received: u64,
}

/// A verdict reached in a sweep: one log line and one count each.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub flow: FlowId,
    /// The client's peer (`--peer`), or `other`.
    pub peer: String,
    pub failure: FlowFailure,
    pub aor: Option<String>,
    pub would_430: bool,
    /// Seconds from the failure to the verdict.
    pub delay_s: f64,
}

/// A verdict taken back: one log line and one count each.
#[derive(Clone, Debug, PartialEq)]
pub struct Retraction {
    pub flow: FlowId,
    /// The client's peer (`--peer`), or `other`.
    pub peer: String,
    /// The failure the verdict named.
    pub failure: FlowFailure,
    /// The verdict as it was reached: its AOR and whether it warranted 430.
    pub judged: Judged,
    /// Seconds from the verdict to its retraction.
    pub stood_s: f64,
}

/// What a sweep found, and what the agent should do about it.
#[derive(Default, Debug)]
pub struct Sweep {
    pub verdicts: Vec<Verdict>,
    /// UDP flows that failed and then came back.
    pub recovered: Vec<FlowId>,
    /// TCP flows whose RST, FIN or unacked verdict was wrong: they carried data both ways after it.
    pub retracted: Vec<Retraction>,
    /// Flows past their retention: remove them from the kernel's map.
    pub expired: Vec<FlowKey>,
    /// Healthy flows and when their verdict can next change with no new packet.
    pub deadlines: Vec<(FlowKey, u64)>,
}

/// What `Tracker::look` is given about one flow.
#[derive(Clone, Copy)]
struct Look<'a> {
    iface: &'a str,
    key: FlowKey,
    state: FlowState,
    now_ns: u64,
    this_sweep: u64,
    /// When its binding moved to another flow, if it did.
    replaced_at: Option<u64>,
}

/// What became of a flow looked at.
enum Looked {
    Failed,
    /// Idle, unbound and never kept alive: removed from the kernel's map, not counted.
    Forgotten,
    /// Alive, by (transport, state) label.
    Healthy((&'static str, &'static str)),
}

/// The state of a flow that kept alive is `alive`; of one that never did, this.
pub const NO_KEEPALIVE: &str = "no_keepalive";

/// A flow not failed: `alive` when its client keeps it alive, else `no_keepalive`.
pub(crate) fn liveness_state(state: &FlowState) -> &'static str {
    if verdict::kept_alive(state) { "alive" } else { NO_KEEPALIVE }
}

pub(crate) fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub fn socket_addr(family: u8, addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == 4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    };
    SocketAddr::new(ip, port)
}

pub(crate) fn transport_of(key: &FlowKey) -> FlowTransport {
    FlowTransport::from_u8(key.transport).unwrap_or(FlowTransport::Udp)
}

impl Tracker {
    pub fn new(timers: Timers, retention: Duration) -> Self {
        Self::with_limits(timers, retention, Limits::default(), false)
    }

    pub fn with_limits(timers: Timers, retention: Duration, limits: Limits, ingress_only: bool) -> Self {
        Self {
            failed: HashMap::new(),
            alive: HashMap::new(),
            registrations: Registrations::new(limits),
            timers,
            retention,
            replaced: HashMap::new(),
            grades: Grades::default(),
            sweeps: 0,
            quiet_before_ns: 0,
            ingress_only,
        }
    }

    /// The failed flows the agent keeps, by interface.
    pub fn failed_flows(&self) -> impl Iterator<Item = (&str, &FlowKey, &TrackedFlow)> {
        self.failed
            .iter()
            .flat_map(|(iface, flows)| flows.iter().map(move |(key, tracked)| (iface.as_str(), key, tracked)))
    }

    pub fn is_failed(&self, iface: &str, key: &FlowKey) -> bool {
        self.failed.get(iface).is_some_and(|f| f.contains_key(key))
    }

    /// Flows not failed at the last sweep, by (transport, state) label, summed over interfaces.
    pub fn alive_counts(&self) -> impl Iterator<Item = (&(&'static str, &'static str), &i64)> {
        self.alive.values().flatten()
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// The peer of a flow's client.
    pub fn peer_of(&self, key: &FlowKey) -> &str {
        self.peers().of_client(key)
    }

    /// The operator's names for client networks (`--peer`), for the
    /// verdicts, the census and the bindings' counts alike: the binding
    /// table keeps them, as it counts by them. One `Peers` for the whole
    /// agent, shared, never changed after start.
    pub fn set_peers(&mut self, peers: Arc<Peers>) {
        self.registrations.set_peers(peers);
    }

    pub fn peers(&self) -> &Peers {
        self.registrations.peers()
    }

    /// Feeds a message head from the kernel. Heads that don't parse are ignored.
    /// Returns the flows whose binding moved away: they fail now (`replaced`).
    pub fn on_head(&mut self, iface: &str, head: &Head) -> Vec<FlowId> {
        let Ok(parsed) = sip_head::parse(&head.bytes) else {
            return Vec::new();
        };
        self.on_parsed_head(iface, head, &parsed)
    }

    /// The same, with the head parsed already.
    pub fn on_parsed_head(&mut self, iface: &str, head: &Head, parsed: &sip_head::SipHead) -> Vec<FlowId> {
        let flow = FlowId { iface: iface.to_string(), key: head.key };
        if parsed.status_code() == Some(430) {
            // The host's own answers leave on egress; off a tap they arrive from its side.
            let sent = if self.ingress_only { !head.from_client } else { head.direction == Direction::Egress };
            if sent {
                self.grade_430(parsed, head.timestamp_ns);
            } else {
                self.grades.received += 1;
            }
        }
        // A REGISTER comes from the client, its answer from the server: a client
        // cannot bind itself by sending a 200 of its own.
        let from_its_side = head.from_client == parsed.status_code().is_none();
        if !from_its_side {
            return Vec::new();
        }
        let changes = self.registrations.on_head(&flow, parsed, head.timestamp_ns);
        self.note(changes, head.timestamp_ns)
    }

    /// Failures that happened before `now_ns` (the agent's start) were reported
    /// by the agent before it: a new one lists them without reporting them again.
    pub fn quiet_before(&mut self, now_ns: u64) {
        self.quiet_before_ns = now_ns;
    }

    fn failure_of(&self, flow: &FlowId) -> Option<FlowFailure> {
        self.failed.get(&flow.iface)?.get(&flow.key).map(|f| f.failure)
    }

    /// This host answered 430 (RFC 5626 §5.3.1) for the AOR in its To header:
    /// predicted when a flow carrying that AOR had been flagged before.
    fn grade_430(&mut self, answer: &sip_head::SipHead, at_ns: u64) {
        let predicted = answer.to_aor.as_deref().is_some_and(|aor| {
            self.registrations
                .flows_of(aor)
                .any(|flow| self.failure_of(&flow).is_some_and(|failure| failure.at_ns <= at_ns))
        });
        if predicted {
            self.grades.predicted += 1;
        } else {
            self.grades.missed += 1;
        }
    }

    /// Records when bindings moved away from their flows; returns those flows.
    fn note(&mut self, changes: Vec<Change>, at_ns: u64) -> Vec<FlowId> {
        let mut moved = Vec::new();
        for change in changes {
            if let Change::Replaced { old, .. } = change {
                self.replaced.entry(old.clone()).or_insert(at_ns);
                moved.push(old);
            }
        }
        moved
    }

    /// Whether a failed flow would warrant 430: it still carries a binding, seen
    /// made by its 2xx and not moved elsewhere, that an edge proxy routes by
    /// this flow (RFC 5626 §5.3.1).
    pub fn would_430(&self, iface: &str, key: &FlowKey, failure: &FlowFailure) -> bool {
        failure.reason != Reason::Replaced && self.registrations.on_flow(iface, key).is_some_and(|b| b.by_flow)
    }

    fn aor_of(&self, iface: &str, key: &FlowKey) -> Option<String> {
        Some(self.registrations.on_flow(iface, key)?.shown?.aor().to_string())
    }

    /// Walks the kernel's view of `iface`'s flows at `now_ns` and decides.
    pub fn sweep(&mut self, iface: &str, flows: impl IntoIterator<Item = (FlowKey, FlowState)>, now_ns: u64) -> Sweep {
        self.sweep_walk(iface, flows, now_ns, || true)
    }

    /// The same, where `complete` tells after the walk whether it met every
    /// flow of the map: after a walk cut short, flows it did not meet are not
    /// taken for gone, and unanswered REGISTERs wait for the next sweep.
    pub fn sweep_walk(
        &mut self,
        iface: &str,
        flows: impl IntoIterator<Item = (FlowKey, FlowState)>,
        now_ns: u64,
        complete: impl FnOnce() -> bool,
    ) -> Sweep {
        self.sweeps += 1;
        let this_sweep = self.sweeps;
        let replaced: HashMap<FlowKey, u64> =
            self.replaced.iter().filter(|(id, _)| id.iface == iface).map(|(id, at)| (id.key, *at)).collect();
        let mut sweep = Sweep::default();
        let mut alive: BTreeMap<(&'static str, &'static str), i64> = BTreeMap::new();
        let mut failed = self.failed.remove(iface).unwrap_or_default();
        for (key, state) in flows {
            let replaced_at = replaced.get(&key).copied();
            let look = Look { iface, key, state, now_ns, this_sweep, replaced_at };
            match self.look(&mut failed, &look, &mut sweep) {
                Looked::Failed | Looked::Forgotten => {}
                Looked::Healthy(labels) => *alive.entry(labels).or_default() += 1,
            }
        }
        // Failed flows stay listed for their retention, whether or not the
        // kernel still has them (a flood of junk flows may have evicted
        // them: the verdict stands); past it they leave the story and the kernel's map.
        let retention = self.retention.as_nanos() as u64;
        let complete = complete();
        failed.retain(|key, tracked| {
            // After a walk cut short, a flow not met may still be in the map: expire it next time.
            let keep = now_ns.saturating_sub(tracked.failure.at_ns) <= retention
                || (!complete && tracked.seen_in != this_sweep);
            if !keep {
                self.replaced.remove(&FlowId { iface: iface.to_string(), key: *key });
                if tracked.seen_in == this_sweep {
                    sweep.expired.push(*key);
                }
            }
            keep
        });
        self.failed.insert(iface.to_string(), failed);
        self.alive.insert(iface.to_string(), alive);

        self.registrations.forget_unanswered(now_ns);
        self.registrations.expire(now_ns);
        sweep
    }

    /// Looks at one flow now, as an event or a deadline asks: the same rules
    /// as a sweep, for one map entry (`None`: it left the map).
    pub fn look_at(&mut self, iface: &str, key: FlowKey, state: Option<FlowState>, now_ns: u64) -> Sweep {
        let mut sweep = Sweep::default();
        let Some(state) = state else {
            return sweep;
        };
        let replaced_at = self.replaced.get(&FlowId { iface: iface.to_string(), key }).copied();
        let mut failed = self.failed.remove(iface).unwrap_or_default();
        let look = Look { iface, key, state, now_ns, this_sweep: self.sweeps, replaced_at };
        self.look(&mut failed, &look, &mut sweep);
        self.failed.insert(iface.to_string(), failed);
        sweep
    }

    /// One flow's verdict, recovery or retraction, and its next deadline.
    fn look(&mut self, failed: &mut HashMap<FlowKey, TrackedFlow>, look: &Look<'_>, sweep: &mut Sweep) -> Looked {
        let Look { iface, key, state, now_ns, this_sweep, replaced_at } = *look;
        let transport = transport_of(&key);
        if let Some(tracked) = failed.get_mut(&key) {
            tracked.state = state;
            tracked.seen_in = this_sweep;
            let came_back = verdict::came_back(transport, &state, &tracked.failure);
            let retracted = verdict::retracted(transport, &state, &tracked.failure);
            if !(came_back || retracted) {
                return Looked::Failed;
            }
            let tracked = failed.remove(&key).expect("the failed flow found above");
            let id = FlowId { iface: iface.to_string(), key };
            self.replaced.remove(&id);
            if retracted {
                sweep.retracted.push(Retraction {
                    peer: self.peer_of(&key).to_string(),
                    stood_s: seconds(now_ns.saturating_sub(tracked.judged.at_ns)),
                    failure: tracked.failure,
                    judged: tracked.judged,
                    flow: id,
                });
            } else {
                sweep.recovered.push(id);
            }
        }
        let bindings = self.registrations.on_flow(iface, &key);
        let flow_timer = bindings.and_then(|b| b.flow_timer);
        let judged = verdict::judge(transport, &state, flow_timer, &self.timers, now_ns);
        let replaced = replaced_at.map(|at_ns| FlowFailure { reason: Reason::Replaced, at_ns });
        if let Some(failure) = [judged, replaced].into_iter().flatten().min_by_key(|f| f.at_ns) {
            let (aor, would_430) = (self.aor_of(iface, &key), self.would_430(iface, &key, &failure));
            let judged = Judged { at_ns: now_ns, seconds_ago: 0.0, aor: aor.clone(), would_430 };
            failed.insert(key, TrackedFlow { state, failure, seen_in: this_sweep, judged });
            if failure.at_ns >= self.quiet_before_ns {
                sweep.verdicts.push(Verdict {
                    peer: self.peer_of(&key).to_string(),
                    aor,
                    would_430,
                    delay_s: seconds(now_ns.saturating_sub(failure.at_ns)),
                    failure,
                    flow: FlowId { iface: iface.to_string(), key },
                });
            }
            return Looked::Failed;
        }
        // A flow that never kept alive and carries no binding is forgotten
        // once it has been idle past any verdict's reach: a call's socket.
        let idle_ns = now_ns.saturating_sub(state.last_seen_ns);
        let reach = self.timers.keepalive(transport, flow_timer) + self.timers.grace + self.retention;
        if !verdict::kept_alive(&state) && bindings.is_none() && idle_ns > reach.as_nanos() as u64 {
            sweep.expired.push(key);
            return Looked::Forgotten;
        }
        if let Some(at) = verdict::next_deadline(transport, &state, flow_timer, &self.timers, now_ns) {
            sweep.deadlines.push((key, at));
        }
        Looked::Healthy((transport.label(), liveness_state(&state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::{census, flow_view},
        peers::OTHER,
    };
    use monitor_common::counters::Direction;

    const S: u64 = 1_000_000_000;

    fn key(client_port: u16, transport: FlowTransport) -> FlowKey {
        let mut server_addr = [0; 16];
        server_addr[..4].copy_from_slice(&[192, 0, 2, 2]);
        let mut client_addr = [0; 16];
        client_addr[..4].copy_from_slice(&[192, 0, 2, 1]);
        FlowKey {
            server_addr,
            client_addr,
            server_port: 5060,
            client_port,
            vlan_id: 0,
            family: 4,
            transport: transport as u8,
        }
    }

    fn head(key: FlowKey, at: u64, text: &str) -> Head {
        Head {
            key,
            timestamp_ns: at,
            direction: Direction::Ingress,
            // Requests come from the client, responses from the server.
            from_client: !text.starts_with("SIP/2.0 "),
            bytes: text.as_bytes().to_vec(),
            cut: false,
            retransmission: false,
        }
    }

    fn register(cseq: u32) -> String {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nTo: <sip:alice@example.com>\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nSupported: outbound\r\n\
             Contact: <sip:alice@192.0.2.1;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:a>\"\r\nExpires: 600\r\n\r\n"
        )
    }

    fn ok(cseq: u32, flow_timer: u32) -> String {
        format!(
            "SIP/2.0 200 OK\r\nTo: <sip:alice@example.com>;tag=b\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nRequire: outbound\r\nFlow-Timer: {flow_timer}\r\n\
             Contact: <sip:alice@192.0.2.1;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:a>\";expires=600\r\n\r\n"
        )
    }

    /// A client that keeps its flow alive, last heard from at `at`.
    /// A client seen pinging (twice at least: its pace known), last at `at`.
    fn alive_at(at: u64) -> FlowState {
        let mut s = FlowState::new(at);
        s.last_client_activity_ns = at;
        s.last_ping_ns = at;
        s.keepalive_gap_ms = 1_000;
        s.packets_from_client = 1;
        s.packets_from_server = 1;
        s
    }

    fn tracker() -> Tracker {
        Tracker::new(Timers::default(), Duration::from_secs(300))
    }

    #[test]
    fn a_registered_flow_that_falls_silent_would_warrant_430() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.on_head("eth0", &head(k, S, &register(1)));
        t.on_head("eth0", &head(k, S, &ok(1, 5)));
        assert!(t.sweep("eth0", vec![(k, alive_at(S))], 2 * S).verdicts.is_empty());
        // Flow-Timer 5 + grace 10: failed at 16 s, seen by the sweep at 17 s.
        let sweep = t.sweep("eth0", vec![(k, alive_at(S))], 17 * S);
        assert_eq!(sweep.verdicts.len(), 1);
        let v = &sweep.verdicts[0];
        assert_eq!(v.failure, FlowFailure { reason: Reason::KeepaliveTimeout, at_ns: 16 * S });
        assert!(v.would_430);
        assert_eq!(v.aor.as_deref(), Some("sip:alice@example.com"));
        assert_eq!(v.delay_s, 1.0);
        let census = census::of(&t);
        assert_eq!(census.would_430[&("tcp", OTHER.to_string())], 1);
        assert_eq!(census.flows[&("tcp", "failed")], 1);
        assert_eq!(census.registrations[&(true, OTHER.to_string())], 1);
        let view = flow_view::flows(&t, [], 17 * S, true);
        assert_eq!(view.len(), 1);
        assert_eq!((view[0].reason, view[0].would_430, view[0].flow_timer), (Some("keepalive_timeout"), true, 5));
        assert_eq!(view[0].reg_id, Some(1));
        assert_eq!(view[0].instance.as_deref(), Some("<urn:uuid:a>"));
        assert_eq!(view[0].remote, "192.0.2.1:40000");
        // A verdict is reached once.
        assert!(t.sweep("eth0", vec![(k, alive_at(S))], 18 * S).verdicts.is_empty());
    }

    #[test]
    fn verdicts_430s_and_bindings_carry_the_clients_peer() {
        let mut t = tracker();
        let arg = |text: &str| crate::peers::peer_arg(text).unwrap();
        t.set_peers(Arc::new(Peers::new(&[arg("carrier=192.0.2.0/24"), arg("pbx=192.0.2.1")]).unwrap()));
        let pbx = key(40000, FlowTransport::Tcp);
        let mut carrier = key(40001, FlowTransport::Tcp);
        carrier.client_addr[3] = 9;
        let mut elsewhere = key(40002, FlowTransport::Tcp);
        elsewhere.client_addr[..4].copy_from_slice(&[203, 0, 113, 5]);
        for (k, user) in [(pbx, "paul"), (carrier, "carl"), (elsewhere, "olga")] {
            t.on_head("eth0", &head(k, S, &register(1).replace("alice", user)));
            t.on_head("eth0", &head(k, S, &ok(1, 5).replace("alice", user)));
        }
        let census = census::of(&t);
        for peer in ["pbx", "carrier", OTHER] {
            assert_eq!(census.registrations[&(true, peer.to_string())], 1, "{peer}");
        }
        let flows = vec![(pbx, alive_at(S)), (carrier, alive_at(S)), (elsewhere, alive_at(S))];
        let sweep = t.sweep("eth0", flows, 17 * S);
        let mut peers: Vec<&str> = sweep.verdicts.iter().map(|v| v.peer.as_str()).collect();
        peers.sort_unstable();
        assert_eq!(peers, ["carrier", "other", "pbx"], "the longest network wins for 192.0.2.1");
        let census = census::of(&t);
        for peer in ["pbx", "carrier", OTHER] {
            assert_eq!(census.would_430[&("tcp", peer.to_string())], 1, "{peer}");
            assert_eq!(census.would_430[&("udp", peer.to_string())], 0, "every peer's series exists");
        }
        let view = flow_view::flows(&t, [], 17 * S, true);
        let shown: Vec<(&str, &str)> = view.iter().map(|v| (v.remote.as_str(), v.peer.as_str())).collect();
        assert!(shown.contains(&("192.0.2.1:40000", "pbx")) && shown.contains(&("203.0.113.5:40002", "other")));
    }

    #[test]
    fn an_unregistered_flow_fails_without_430() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Udp);
        let sweep = t.sweep("eth0", vec![(k, alive_at(S))], 41 * S);
        assert_eq!(sweep.verdicts.len(), 1);
        assert!(!sweep.verdicts[0].would_430);
    }

    #[test]
    fn re_registering_over_a_new_flow_replaces_the_old_one() {
        let mut t = tracker();
        let (old, new) = (key(40000, FlowTransport::Tcp), key(40001, FlowTransport::Tcp));
        t.on_head("eth0", &head(old, S, &register(1)));
        t.on_head("eth0", &head(old, S, &ok(1, 60)));
        t.on_head("eth0", &head(new, 3 * S, &register(2)));
        t.on_head("eth0", &head(new, 3 * S, &ok(2, 60)));
        let sweep = t.sweep("eth0", vec![(old, alive_at(S)), (new, alive_at(3 * S))], 4 * S);
        assert_eq!(sweep.verdicts.len(), 1);
        assert_eq!(sweep.verdicts[0].flow.key, old);
        assert_eq!(sweep.verdicts[0].failure.reason, Reason::Replaced);
        assert!(!sweep.verdicts[0].would_430, "the binding lives on the new flow");
    }

    #[test]
    fn udp_comes_back_and_failed_flows_expire_after_retention() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Udp);
        assert_eq!(t.sweep("eth0", vec![(k, alive_at(S))], 41 * S).verdicts.len(), 1);
        let sweep = t.sweep("eth0", vec![(k, alive_at(50 * S))], 50 * S);
        assert_eq!(sweep.recovered.len(), 1);
        assert_eq!(census::of(&t).flows[&("udp", "alive")], 1);
        assert_eq!(t.sweep("eth0", vec![(k, alive_at(50 * S))], 90 * S).verdicts.len(), 1);
        let sweep = t.sweep("eth0", vec![(k, alive_at(50 * S))], 90 * S + 301 * S);
        assert_eq!(sweep.expired, vec![k]);
        assert!(flow_view::flows(&t, [], 400 * S, false).is_empty());
    }

    #[test]
    fn a_client_cannot_bind_itself_with_a_200_of_its_own() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.on_head("eth0", &head(k, S, &register(1)));
        t.on_head("eth0", &Head { from_client: true, ..head(k, S, &ok(1, 5)) });
        assert_eq!(census::of(&t).registrations[&(true, OTHER.to_string())], 0);
    }

    #[test]
    fn failures_from_before_the_agent_started_are_listed_not_reported_again() {
        let mut t = tracker();
        t.quiet_before(100 * S);
        let k = key(40000, FlowTransport::Udp);
        assert!(t.sweep("eth0", vec![(k, alive_at(S))], 101 * S).verdicts.is_empty());
        assert_eq!(flow_view::flows(&t, [], 101 * S, true).len(), 1);
    }

    #[test]
    fn the_hosts_own_430s_are_graded_against_earlier_verdicts() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.on_head("eth0", &head(k, S, &register(1)));
        t.on_head("eth0", &head(k, S, &ok(1, 5)));
        let caller = key(40001, FlowTransport::Tcp);
        let answer =
            "SIP/2.0 430 Flow Failed\r\nTo: <sip:alice@example.com>;tag=x\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let egress = |at| Head { direction: Direction::Egress, from_client: false, ..head(caller, at, answer) };
        // Before the verdict: a miss.
        t.on_head("eth0", &egress(2 * S));
        t.sweep("eth0", vec![(k, alive_at(S))], 17 * S);
        // After it: predicted.
        t.on_head("eth0", &egress(18 * S));
        // A 430 that arrives at the host is not the host's edge proxy answering.
        let arriving = Head { direction: Direction::Ingress, from_client: false, ..head(caller, 19 * S, answer) };
        t.on_head("eth0", &arriving);
        assert_eq!(t.grades, Grades { predicted: 1, missed: 1, received: 1 });
    }

    #[test]
    fn failed_flows_gone_from_the_kernel_stay_listed_for_their_retention() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.sweep("eth0", vec![(k, alive_at(S))], 200 * S);
        t.sweep("eth1", vec![], 200 * S);
        assert_eq!(flow_view::flows(&t, [], 200 * S, true).len(), 1, "another interface's sweep keeps it");
        // Evicted from the kernel's map (a flood of junk flows): the verdict stands.
        t.sweep("eth0", vec![], 201 * S);
        assert_eq!(flow_view::flows(&t, [], 201 * S, true).len(), 1);
        assert_eq!(census::of(&t).flows[&("tcp", "failed")], 1);
        let retention_s = t.retention.as_secs();
        let failed_at = t.failed["eth0"][&k].failure.at_ns;
        let after = failed_at + (retention_s + 1) * S;
        assert!(after > 201 * S);
        let sweep = t.sweep("eth0", vec![], after);
        assert!(flow_view::flows(&t, [], after, true).is_empty());
        assert!(sweep.expired.is_empty(), "nothing to remove from the kernel: it is gone");
        assert_eq!(census::of(&t).flows[&("tcp", "failed")], 0);
    }

    #[test]
    fn a_walk_cut_short_takes_no_failed_flow_for_gone() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.sweep("eth0", vec![(k, alive_at(S))], 200 * S);
        t.sweep_walk("eth0", vec![], 201 * S, || false);
        assert_eq!(flow_view::flows(&t, [], 201 * S, true).len(), 1, "kept");
        let late = 200 * S + t.retention.as_nanos() as u64 + S;
        t.sweep_walk("eth0", vec![], late, || false);
        assert_eq!(flow_view::flows(&t, [], late, true).len(), 1, "past its retention, but perhaps still in the map");
        t.sweep_walk("eth0", vec![], late, || true);
        assert!(flow_view::flows(&t, [], late, true).is_empty(), "gone after a whole walk");
    }

    #[test]
    fn healthy_flows_are_counted_and_listed_from_the_kernel_not_kept() {
        let mut t = tracker();
        let flows: Vec<_> = (0..1000).map(|p| (key(40000 + p, FlowTransport::Udp), alive_at(S))).collect();
        assert!(t.sweep("eth0", flows.clone(), 2 * S).verdicts.is_empty());
        assert_eq!(census::of(&t).flows[&("udp", "alive")], 1000);
        assert!(flow_view::flows(&t, [], 2 * S, true).is_empty());
        let all = flow_view::flows(&t, flows.iter().map(|(k, s)| ("eth0", *k, *s)), 2 * S, false);
        assert_eq!(all.len(), 1000);
        assert!(all.iter().all(|f| f.state == "alive"));
    }

    fn plain_register(cseq: u32) -> String {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nTo: <sip:100@example.com>\r\nFrom: <sip:100@example.com>;tag=a\r\n\
             Call-ID: scan-1\r\nCSeq: {cseq} REGISTER\r\nUser-Agent: friendly-scanner\r\n\
             Contact: <sip:100@192.0.2.1:5060>\r\nExpires: 3600\r\n\r\n"
        )
    }

    #[test]
    fn a_scanners_register_that_nobody_answers_binds_nothing_and_fails_nothing() {
        let mut t = tracker();
        let k = key(5060, FlowTransport::Udp);
        t.on_head("eth0", &head(k, S, &plain_register(1)));
        let mut s = FlowState::new(S);
        s.last_client_activity_ns = S;
        s.packets_from_client = 1;
        for now in [3 * S, 45 * S, 400 * S] {
            assert!(t.sweep("eth0", vec![(k, s)], now).verdicts.is_empty(), "at {now}");
        }
        assert_eq!(census::of(&t).registrations[&(false, OTHER.to_string())], 0);
        assert_eq!(census::of(&t).would_430[&("udp", OTHER.to_string())], 0);
    }

    #[test]
    fn a_flow_that_never_kept_alive_is_listed_as_such_and_forgotten_when_idle() {
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tls);
        let mut s = FlowState::new(S);
        s.last_client_activity_ns = S;
        assert!(t.sweep("eth0", vec![(k, s)], 200 * S).verdicts.is_empty());
        assert_eq!(census::of(&t).flows[&("tls", NO_KEEPALIVE)], 1);
        let view = flow_view::flows(&t, [("eth0", k, s)], 200 * S, false);
        assert_eq!((view[0].state, view[0].kept_alive), (NO_KEEPALIVE, false));
        // Idle past the keepalive interval, grace and retention: gone from the kernel's map, no verdict.
        let sweep = t.sweep("eth0", vec![(k, s)], 1000 * S);
        assert!(sweep.verdicts.is_empty());
        assert_eq!(sweep.expired, vec![k]);
    }

    #[test]
    fn only_bindings_routed_by_flow_would_warrant_430() {
        let plain_ok = "SIP/2.0 200 OK\r\nTo: <sip:100@example.com>;tag=b\r\nCall-ID: scan-1\r\nCSeq: 1 REGISTER\r\n\
                        Flow-Timer: 5\r\nContact: <sip:100@192.0.2.1:5060>;expires=600\r\n\r\n";
        for (all_by_flow, want) in [(false, false), (true, true)] {
            let limits = Limits { all_by_flow, ..Limits::default() };
            let mut t = Tracker::with_limits(Timers::default(), Duration::from_secs(300), limits, false);
            let k = key(40000, FlowTransport::Tcp);
            t.on_head("eth0", &head(k, S, &plain_register(1)));
            t.on_head("eth0", &head(k, S, plain_ok));
            let sweep = t.sweep("eth0", vec![(k, alive_at(S))], 17 * S);
            assert_eq!(sweep.verdicts.len(), 1);
            assert_eq!(sweep.verdicts[0].aor.as_deref(), Some("sip:100@example.com"), "reported all the same");
            assert_eq!(sweep.verdicts[0].would_430, want, "--all-bindings-by-flow {all_by_flow}");
        }
    }

    /// A UA with +sip.instance and no reg-id, answered `Require: outbound` by
    /// the registrar (Kamailio): routed by its flow, so its failure warrants
    /// 430, and listed with its instance.
    #[test]
    fn an_instance_the_registrar_requires_outbound_for_would_warrant_430() {
        let register = "REGISTER sip:example.com SIP/2.0\r\nTo: <sip:alice@example.com>\r\n\
                        From: <sip:alice@example.com>;tag=a\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\
                        Supported: outbound\r\nContact: <sip:alice@192.0.2.1;transport=tcp>;\
                        +sip.instance=\"<urn:uuid:a>\"\r\nExpires: 600\r\n\r\n";
        let ok = "SIP/2.0 200 OK\r\nTo: <sip:alice@example.com>;tag=b\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
                  Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nRequire: outbound\r\nFlow-Timer: 5\r\n\
                  Contact: <sip:alice@192.0.2.1;transport=tcp>;+sip.instance=\"<urn:uuid:a>\";expires=600\r\n\r\n";
        let mut t = tracker();
        let k = key(40000, FlowTransport::Tcp);
        t.on_head("eth0", &head(k, S, register));
        t.on_head("eth0", &head(k, S, ok));
        let sweep = t.sweep("eth0", vec![(k, alive_at(S))], 17 * S);
        assert_eq!(sweep.verdicts.len(), 1);
        assert!(sweep.verdicts[0].would_430, "routed by its flow, as the registrar required");
        assert_eq!(census::of(&t).would_430[&("tcp", OTHER.to_string())], 1);
        let view = flow_view::flows(&t, [], 17 * S, true);
        assert_eq!((view[0].instance.as_deref(), view[0].reg_id), (Some("<urn:uuid:a>"), None));
        assert!(view[0].routed_by_flow && view[0].would_430);
    }

    #[test]
    fn an_rst_verdict_followed_by_data_both_ways_is_retracted() {
        let mut t = tracker();
        t.set_peers(Arc::new(Peers::new(&[crate::peers::peer_arg("carrier=192.0.2.0/24").unwrap()]).unwrap()));
        let k = key(40000, FlowTransport::Tcp);
        t.on_head("eth0", &head(k, S, &register(1)));
        t.on_head("eth0", &head(k, S, &ok(1, 60)));
        let mut s = alive_at(S);
        s.rst_ns = 2 * S;
        assert_eq!(t.sweep("eth0", vec![(k, s)], 3 * S).verdicts.len(), 1);
        s.last_data_from_client_ns = 4 * S;
        s.last_data_from_server_ns = 4 * S;
        let sweep = t.sweep("eth0", vec![(k, s)], 5 * S);
        assert_eq!(sweep.retracted.len(), 1);
        let r = &sweep.retracted[0];
        assert_eq!((r.flow.key, r.peer.as_str()), (k, "carrier"));
        assert_eq!(r.failure, FlowFailure { reason: Reason::TcpReset, at_ns: 2 * S });
        assert_eq!((r.judged.aor.as_deref(), r.judged.would_430), (Some("sip:alice@example.com"), true));
        assert_eq!(r.stood_s, 2.0, "judged at 3 s, taken back at 5 s");
        assert!(flow_view::flows(&t, [], 5 * S, true).is_empty());
        assert!(t.sweep("eth0", vec![(k, s)], 6 * S).verdicts.is_empty(), "not judged again");
    }
}
