//! The Prometheus metrics (docs/metrics.md), fed from kernel counter snapshots.
//!
//! The kernel's counters are cumulative; each snapshot adds its growth since
//! the previous one to the exported counters, so several interfaces sum up
//! and a counter never goes backwards.

use std::{collections::HashMap, sync::Arc};

use monitor_common::counters::{
    Direction, KernelStat, MIN_STATUS_CODE, Method, PacketClass, STATUS_CODE_SLOTS, packet_index,
};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::{
    export::{census::Census, transaction_metrics::TransactionMetrics},
    kernel::maps::CounterSnapshot,
    liveness::{
        registrations::Refused,
        tracker::{Grades, Sweep},
        verdict::Reason,
    },
    peers::{OTHER, Peers},
    transactions::Kpi,
};

pub struct Metrics {
    registry: Registry,
    /// `--peer`: the names the kernel's per-peer counters are numbered by.
    peers: Arc<Peers>,
    packets: IntCounterVec,
    requests: IntCounterVec,
    responses: IntCounterVec,
    events_lost: IntCounterVec,
    flow_events_lost: IntCounterVec,
    evictions: IntCounterVec,
    flows: IntGaugeVec,
    failures: IntCounterVec,
    rtt: HistogramVec,
    answers_430: IntCounterVec,
    received_430: IntCounter,
    last_grades: Grades,
    segments_ignored: IntCounterVec,
    tls_calls: IntCounterVec,
    retracted: IntCounterVec,
    refused: IntCounterVec,
    last_refused: Refused,
    would_430: IntGaugeVec,
    registrations: IntGaugeVec,
    map_entries: IntGaugeVec,
    map_capacity: IntGaugeVec,
    sweep_seconds: Gauge,
    deadlines: prometheus::IntGauge,
    verdict_delay: HistogramVec,
    program_attached: IntGaugeVec,
    tls_processes: IntGaugeVec,
    transactions: TransactionMetrics,
    /// The last snapshot seen per interface.
    last: HashMap<String, CounterSnapshot>,
    /// Evictions already exported, per interface.
    last_evicted: HashMap<String, u64>,
    /// Flows gone from the maps when this agent first walked them, per interface.
    eviction_base: HashMap<String, u64>,
}

/// One interface's counts of what was lost on the way to the engine, to be
/// counted from the ring readers without the metrics lock.
#[derive(Clone)]
pub struct LostInputs {
    /// In sipflow_events_lost_total.
    pub heads: IntCounter,
    /// In sipflow_flow_events_lost_total.
    pub flow_events: IntCounter,
}

/// How full an interface's flow map is, as the sweep saw it.
pub struct FlowMapFill {
    /// Entries a walk met in `FLOWS` and in `BOUND_FLOWS`.
    pub unbound: u64,
    pub bound: u64,
    /// Entries each of the two maps holds at most.
    pub capacity: u64,
    /// Flows the kernel created, and the agent removed, since load.
    pub created: u64,
    pub removed: u64,
}

/// `reason` labels of sipflow_registrations_refused_total.
const REFUSED_REASONS: [&str; 4] = ["bindings_full", "pending_full", "cut_head", "too_many_contacts"];

/// Buckets of the latency histograms, 100 us to 10 s.
const SECONDS_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Registers `metric` in `registry` and hands it back: each family is made
/// and registered in one place.
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let options = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    registered(registry, HistogramVec::new(options, labels).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let build_info =
            gauge_vec(&r, "sipflow_build_info", "Always 1; labels tell which sipflow is running.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Self {
            packets: counter_vec(
                &r,
                "sipflow_packets_total",
                "Packets seen on monitored interfaces, by class.",
                &["iface", "direction", "class"],
            ),
            requests: counter_vec(
                &r,
                "sipflow_requests_total",
                "SIP requests seen, by method and the client's peer (--peer).",
                &["method", "peer"],
            ),
            responses: counter_vec(
                &r,
                "sipflow_responses_total",
                "SIP responses seen, by exact status code and the client's peer (--peer).",
                &["code", "peer"],
            ),
            events_lost: counter_vec(
                &r,
                "sipflow_events_lost_total",
                "Message heads dropped on their way to the agent's engine: the kernel's ring buffer to the agent \
                 was full, or the agent's queue from that ring to its engine was.",
                &["iface"],
            ),
            flow_events_lost: counter_vec(
                &r,
                "sipflow_flow_events_lost_total",
                "Flow events (a close, a wait begun) dropped because their ring buffer, or the agent's queue from \
                 it to its engine, was full: those flows are judged at the next walk of the map instead, later.",
                &["iface"],
            ),
            evictions: counter_vec(
                &r,
                "sipflow_flow_evictions_total",
                "Flows the kernel's LRU map evicted to make room (raise --max-flows if this grows).",
                &["iface"],
            ),
            map_entries: gauge_vec(&r, "sipflow_map_entries", "Entries in a kernel map.", &["iface", "map"]),
            map_capacity: gauge_vec(&r, "sipflow_map_capacity", "Size of a kernel map.", &["iface", "map"]),
            flows: gauge_vec(
                &r,
                "sipflow_flows",
                "Flows the agent tracks, by transport and state.",
                &["transport", "state"],
            ),
            failures: counter_vec(
                &r,
                "sipflow_flow_failures_total",
                "Flows that failed in the sense of RFC 5626, by reason and the client's peer (--peer).",
                &["reason", "peer"],
            ),
            would_430: gauge_vec(
                &r,
                "sipflow_flows_would_430",
                "Failed flows that still carry a registration: an edge proxy would answer 430 Flow Failed over them.",
                &["transport", "peer"],
            ),
            registrations: gauge_vec(
                &r,
                "sipflow_registrations",
                "Bindings seen in REGISTERs, by whether they use RFC 5626 outbound (reg-id and +sip.instance), \
                 and their flow's peer (--peer).",
                &["outbound", "peer"],
            ),
            rtt: histogram_vec(
                &r,
                "sipflow_keepalive_rtt_seconds",
                "Ping to pong on stream flows (RFC 5626 §4.4.1), where both directions are seen.",
                &SECONDS_BUCKETS,
                &["transport"],
            ),
            answers_430: counter_vec(
                &r,
                "sipflow_430_sent_total",
                "430 Flow Failed answers this host sent, by whether sipflow had flagged the callee's flow before.",
                &["predicted"],
            ),
            received_430: registered(
                &r,
                IntCounter::new(
                    "sipflow_430_received_total",
                    "430 Flow Failed responses that arrived at this host rather than left it: not its edge proxy's \
                     answers.",
                )
                .expect("valid metric"),
            ),
            last_grades: Grades::default(),
            segments_ignored: counter_vec(
                &r,
                "sipflow_tcp_segments_ignored_total",
                "RSTs and FINs the host's own TCP stack would not act on (RFC 5961), so no verdict was made of \
                 them: in the window but not at the next sequence number, outside it, or from a side never seen.",
                &["iface", "reason"],
            ),
            tls_calls: counter_vec(
                &r,
                "sipflow_tls_calls_total",
                "SSL reads and writes on a SIPS port's sockets, by what became of their plaintext: read into the \
                 flow's state (result=read); on a flow this interface has not seen (flow_unseen); or a write \
                 whose socket never showed in its thread, or a read after its thread read two SIPS sockets \
                 (socket_unknown).",
                &["iface", "result"],
            ),
            retracted: counter_vec(
                &r,
                "sipflow_verdicts_retracted_total",
                "Verdicts taken back (RST, FIN, unacknowledged data): the connection carried valid data both ways \
                 after them; by the verdict's reason and the client's peer (--peer).",
                &["reason", "peer"],
            ),
            refused: counter_vec(
                &r,
                "sipflow_registrations_refused_total",
                "REGISTERs and 2xx that made no binding: the binding table or the REGISTERs waiting for answers \
                 were full (--max-bindings, --max-pending-registers, or the waiting ones' memory budget), the \
                 head was cut before its end, or a REGISTER carried more contacts than are kept (the rest bind \
                 nothing).",
                &["reason"],
            ),
            last_refused: Refused::default(),
            sweep_seconds: registered(
                &r,
                Gauge::new(
                    "sipflow_sweep_seconds",
                    "How long the last sweep took: reading every interface's flow map and deciding verdicts.",
                )
                .expect("valid metric"),
            ),
            deadlines: registered(
                &r,
                prometheus::IntGauge::new(
                    "sipflow_deadlines",
                    "Flows the engine will look at when a deadline of theirs passes (keepalive, pong, ack, request).",
                )
                .expect("valid metric"),
            ),
            verdict_delay: histogram_vec(
                &r,
                "sipflow_verdict_delay_seconds",
                "From the packet (or the deadline) that failed a flow to the agent's verdict, by reason.",
                &[&SECONDS_BUCKETS[..], &[30.0]].concat(),
                &["reason"],
            ),
            program_attached: gauge_vec(
                &r,
                "sipflow_program_attached",
                "1 while the program is attached to the interface, else 0.",
                &["iface", "program"],
            ),
            tls_processes: gauge_vec(
                &r,
                "sipflow_tls_processes",
                "Processes whose SSL calls are read for SIP inside TLS: those holding a socket on a SIPS port (the \
                 SIP server and the workers it forked). No other process on the host is probed.",
                &["iface"],
            ),
            transactions: TransactionMetrics::new(&r),
            last_evicted: HashMap::new(),
            eviction_base: HashMap::new(),
            last: HashMap::new(),
            peers: Arc::default(),
            registry: r,
        };
        // Series that alerts and dashboards name exist from the start.
        for predicted in ["true", "false"] {
            metrics.answers_430.with_label_values(&[predicted]).inc_by(0);
        }
        for reason in REFUSED_REASONS {
            metrics.refused.with_label_values(&[reason]).inc_by(0);
        }
        // Pings and pongs are stream keepalives.
        for transport in ["tcp", "tls"] {
            metrics.rtt.with_label_values(&[transport]);
        }
        metrics.start_peer_series(OTHER);
        metrics
    }

    /// Every series with a `peer` label that alerts and dashboards name, at
    /// zero, for `peer`: every method, the two codes this product is about
    /// (300 and 430), every failure reason.
    fn start_peer_series(&self, peer: &str) {
        for method in (0..Method::COUNT).map(Method::from_index) {
            self.requests.with_label_values(&[method.label(), peer]).inc_by(0);
        }
        for code in ["300", "430"] {
            self.responses.with_label_values(&[code, peer]).inc_by(0);
        }
        for reason in Reason::ALL {
            self.failures.with_label_values(&[reason.label(), peer]).inc_by(0);
            self.retracted.with_label_values(&[reason.label(), peer]).inc_by(0);
        }
    }

    /// The peers `--peer` named: every series that has a `peer` label exists
    /// for each of them from the start.
    pub fn set_peers(&mut self, peers: Arc<Peers>) {
        for peer in peers.names() {
            self.start_peer_series(peer);
        }
        self.transactions.start_series(&peers);
        self.peers = peers;
    }

    /// The counters an interface's ring reader adds its drops to.
    pub fn lost_inputs(&self, iface: &str) -> LostInputs {
        LostInputs {
            heads: self.events_lost.with_label_values(&[iface]),
            flow_events: self.flow_events_lost.with_label_values(&[iface]),
        }
    }

    /// Counts what paired requests and answers told (see `transactions`), and
    /// the requests left unpaired so far.
    pub fn record_transactions(&mut self, kpis: &[Kpi], untracked: u64) {
        self.transactions.record(kpis, &self.peers);
        self.transactions.record_untracked(untracked);
    }

    /// Whether `program` (`xdp` or `tc_egress`) is attached to `iface`.
    pub fn record_attached(&mut self, iface: &str, program: &str, attached: bool) {
        self.program_attached.with_label_values(&[iface, program]).set(i64::from(attached));
    }

    /// How many processes this interface's TLS probes read (see `tls_probes`).
    pub fn set_tls_processes(&self, iface: &str, count: usize) {
        self.tls_processes.with_label_values(&[iface]).set(count as i64);
    }

    /// Flows waiting for a deadline of theirs.
    pub fn record_deadlines(&mut self, flows: usize) {
        self.deadlines.set(flows as i64);
    }

    /// How long the last sweep took, in seconds.
    pub fn record_sweep_time(&mut self, seconds: f64) {
        self.sweep_seconds.set(seconds);
    }

    /// Adds what the kernel counted on `iface` since the previous snapshot.
    pub fn record(&mut self, iface: &str, now: &CounterSnapshot) {
        let last = self.last.entry(iface.to_string()).or_default();
        let growth = |values: &[u64], before: &[u64], i: usize| {
            values.get(i).copied().unwrap_or(0).saturating_sub(before.get(i).copied().unwrap_or(0))
        };
        for direction in Direction::ALL {
            for class in PacketClass::ALL {
                let i = packet_index(direction, class) as usize;
                self.packets.with_label_values(&[iface, direction.label(), class.label()]).inc_by(growth(
                    &now.packets,
                    &last.packets,
                    i,
                ));
            }
        }
        // Where peers are named the kernel counts messages by peer too, `other` included.
        let by_peer = !now.peer_requests.is_empty();
        let (requests, last_requests) =
            if by_peer { (&now.peer_requests, &last.peer_requests) } else { (&now.requests, &last.requests) };
        for i in 0..requests.len() {
            let method = Method::from_index(i % Method::COUNT);
            let peer = if by_peer { self.peers.name((i / Method::COUNT) as u8) } else { OTHER };
            self.requests.with_label_values(&[method.label(), peer]).inc_by(growth(requests, last_requests, i));
        }
        let (responses, last_responses) =
            if by_peer { (&now.peer_responses, &last.peer_responses) } else { (&now.responses, &last.responses) };
        for i in 0..responses.len() {
            let added = growth(responses, last_responses, i);
            if added > 0 {
                let code = MIN_STATUS_CODE as usize + i % STATUS_CODE_SLOTS;
                let peer = if by_peer { self.peers.name((i / STATUS_CODE_SLOTS) as u8) } else { OTHER };
                self.responses.with_label_values(&[&code.to_string(), peer]).inc_by(added);
            }
        }
        let lost = KernelStat::EventsLost as usize;
        self.events_lost.with_label_values(&[iface]).inc_by(growth(&now.stats, &last.stats, lost));
        let flow_lost = KernelStat::FlowEventsLost as usize;
        self.flow_events_lost.with_label_values(&[iface]).inc_by(growth(&now.stats, &last.stats, flow_lost));
        for (stat, reason) in KernelStat::IGNORED_SEGMENTS {
            let added = growth(&now.stats, &last.stats, stat as usize);
            self.segments_ignored.with_label_values(&[iface, reason]).inc_by(added);
        }
        for (stat, result) in KernelStat::TLS_CALLS {
            let added = growth(&now.stats, &last.stats, stat as usize);
            self.tls_calls.with_label_values(&[iface, result]).inc_by(added);
        }
        *last = now.clone();
    }

    /// Exports the flow maps' fill and the evictions it implies: whatever the
    /// kernel created that is neither in the maps nor removed by this agent,
    /// beyond what was so when this agent first walked them (an earlier
    /// agent's removals are not known here). After every whole walk, full or
    /// not: an LRU map evicts before it is full, where a CPU's free list runs dry.
    pub fn record_flow_map(&mut self, iface: &str, fill: &FlowMapFill, complete: bool) {
        self.map_entries.with_label_values(&[iface, "flows"]).set(fill.unbound as i64);
        self.map_entries.with_label_values(&[iface, "bound_flows"]).set(fill.bound as i64);
        self.map_capacity.with_label_values(&[iface, "flows"]).set(fill.capacity as i64);
        self.map_capacity.with_label_values(&[iface, "bound_flows"]).set(fill.capacity as i64);
        let evictions = self.evictions.with_label_values(&[iface]);
        evictions.inc_by(0);
        if !complete {
            return;
        }
        let gone = fill.created.saturating_sub(fill.removed + fill.unbound + fill.bound);
        let base = *self.eviction_base.entry(iface.to_string()).or_insert(gone);
        let evicted = gone.saturating_sub(base);
        let exported = self.last_evicted.entry(iface.to_string()).or_default();
        // The maps are read while packets arrive: only ever count up.
        if evicted > *exported {
            evictions.inc_by(evicted - *exported);
            *exported = evicted;
        }
    }

    /// Counts a sweep's verdicts, retractions and RTT samples.
    pub fn record_sweep(&mut self, sweep: &Sweep) {
        for v in &sweep.verdicts {
            self.failures.with_label_values(&[v.failure.reason.label(), &v.peer]).inc();
            self.verdict_delay.with_label_values(&[v.failure.reason.label()]).observe(v.delay_s);
        }
        for r in &sweep.retracted {
            self.retracted.with_label_values(&[r.failure.reason.label(), &r.peer]).inc();
        }
    }

    /// One ping answered by its pong, `rtt_us` after it (from the kernel's event for it).
    pub fn record_rtt(&self, transport: &str, rtt_us: u32) {
        self.rtt.with_label_values(&[transport]).observe(f64::from(rtt_us) / 1e6);
    }

    /// Adds the 430s graded since the last call.
    pub fn record_grades(&mut self, grades: Grades) {
        let last = self.last_grades;
        self.answers_430.with_label_values(&["true"]).inc_by(grades.predicted.saturating_sub(last.predicted));
        self.answers_430.with_label_values(&["false"]).inc_by(grades.missed.saturating_sub(last.missed));
        self.received_430.inc_by(grades.received.saturating_sub(last.received));
        self.last_grades = grades;
    }

    /// Adds the registrations refused since the last call.
    pub fn record_refused(&mut self, refused: Refused) {
        let last = self.last_refused;
        for (reason, now, before) in [
            (REFUSED_REASONS[0], refused.bindings_full, last.bindings_full),
            (REFUSED_REASONS[1], refused.pending_full, last.pending_full),
            (REFUSED_REASONS[2], refused.cut_heads, last.cut_heads),
            (REFUSED_REASONS[3], refused.too_many_contacts, last.too_many_contacts),
        ] {
            self.refused.with_label_values(&[reason]).inc_by(now.saturating_sub(before));
        }
        self.last_refused = refused;
    }

    /// Sets the flow, 430 and registration gauges from the tracker's census.
    pub fn record_census(&mut self, census: &Census) {
        for ((transport, state), n) in &census.flows {
            self.flows.with_label_values(&[transport, state]).set(*n);
        }
        for ((transport, peer), n) in &census.would_430 {
            self.would_430.with_label_values(&[transport, peer.as_str()]).set(*n);
        }
        for ((outbound, peer), n) in &census.registrations {
            self.registrations.with_label_values(&[if *outbound { "true" } else { "false" }, peer.as_str()]).set(*n);
        }
    }

    /// The Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::counters::{PACKET_SLOTS, REQUEST_SLOTS, RESPONSE_SLOTS, request_index, response_index};

    fn snapshot() -> CounterSnapshot {
        CounterSnapshot {
            packets: vec![0; PACKET_SLOTS as usize],
            requests: vec![0; REQUEST_SLOTS as usize],
            responses: vec![0; RESPONSE_SLOTS as usize],
            stats: vec![0; KernelStat::COUNT],
            peer_requests: Vec::new(),
            peer_responses: Vec::new(),
        }
    }

    #[test]
    fn where_peers_are_named_messages_are_exported_by_peer() {
        use monitor_common::counters::{peer_request_index, peer_response_index};
        let mut metrics = Metrics::new();
        let arg = |text: &str| crate::peers::peer_arg(text).unwrap();
        metrics.set_peers(Arc::new(Peers::new(&[arg("carrier=192.0.2.0/24"), arg("pbx=198.51.100.7")]).unwrap()));
        let mut s = snapshot();
        s.peer_requests = vec![0; 3 * Method::COUNT];
        s.peer_responses = vec![0; 3 * STATUS_CODE_SLOTS];
        s.requests[request_index(Direction::Ingress, Method::Invite) as usize] = 7;
        s.peer_requests[peer_request_index(1, Method::Invite) as usize] = 4;
        s.peer_requests[peer_request_index(0, Method::Invite) as usize] = 3;
        s.peer_responses[peer_response_index(2, 486).unwrap() as usize] = 2;
        metrics.record("eth0", &s);
        let text = metrics.encode();
        for series in [
            r#"sipflow_requests_total{method="INVITE",peer="carrier"} 4"#,
            r#"sipflow_requests_total{method="INVITE",peer="other"} 3"#,
            r#"sipflow_requests_total{method="INVITE",peer="pbx"} 0"#,
            r#"sipflow_responses_total{code="486",peer="pbx"} 2"#,
            r#"sipflow_responses_total{code="430",peer="carrier"} 0"#,
            r#"sipflow_flow_failures_total{peer="pbx",reason="tcp_reset"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[test]
    fn retractions_are_counted_by_reason_and_peer_from_zero() {
        use crate::liveness::{
            registrations::FlowId,
            tracker::{Judged, Retraction},
            verdict::FlowFailure,
        };
        let mut metrics = Metrics::new();
        metrics.set_peers(Arc::new(Peers::new(&[crate::peers::peer_arg("carrier=192.0.2.0/24").unwrap()]).unwrap()));
        let key = monitor_common::flow::FlowKey {
            server_addr: [0; 16],
            client_addr: [0; 16],
            server_port: 5060,
            client_port: 40000,
            vlan_id: 0,
            family: 4,
            transport: 2,
        };
        let retraction = Retraction {
            flow: FlowId { iface: "eth0".into(), key },
            peer: "carrier".into(),
            failure: FlowFailure { reason: Reason::TcpFin, at_ns: 1 },
            judged: Judged { at_ns: 2, seconds_ago: 0.0, aor: None, would_430: false },
            stood_s: 1.5,
        };
        metrics.record_sweep(&Sweep { retracted: vec![retraction.clone(), retraction], ..Sweep::default() });
        let text = metrics.encode();
        for series in [
            r#"sipflow_verdicts_retracted_total{peer="carrier",reason="tcp_fin"} 2"#,
            r#"sipflow_verdicts_retracted_total{peer="carrier",reason="tcp_reset"} 0"#,
            r#"sipflow_verdicts_retracted_total{peer="other",reason="tcp_unacked"} 0"#,
            r#"sipflow_verdicts_retracted_total{peer="other",reason="keepalive_timeout"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }

    #[test]
    fn growth_is_added_and_labels_are_bounded() {
        let mut metrics = Metrics::new();
        let mut s = snapshot();
        s.packets[packet_index(Direction::Ingress, PacketClass::SipRequest) as usize] = 3;
        s.requests[request_index(Direction::Ingress, Method::Register) as usize] = 3;
        s.responses[response_index(Direction::Ingress, 430).unwrap() as usize] = 2;
        metrics.record("eth0", &s);
        metrics.record("eth0", &s);
        s.responses[response_index(Direction::Egress, 430).unwrap() as usize] = 1;
        metrics.record("eth0", &s);
        let text = metrics.encode();
        assert!(
            text.contains(r#"sipflow_packets_total{class="sip_request",direction="ingress",iface="eth0"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"sipflow_requests_total{method="REGISTER",peer="other"} 3"#), "{text}");
        assert!(text.contains(r#"sipflow_responses_total{code="430",peer="other"} 3"#), "{text}");
        assert!(
            text.contains(r#"sipflow_responses_total{code="300",peer="other"} 0"#),
            "300 and 430 exist from the start"
        );
        assert!(!text.contains(r#"code="200""#), "other codes only once seen");
        assert!(text.contains(r#"sipflow_build_info{version=""#));
    }

    #[test]
    fn evictions_are_what_the_kernel_created_minus_what_is_accounted_for() {
        let mut metrics = Metrics::new();
        let fill = |unbound, bound, created, removed| FlowMapFill { unbound, bound, capacity: 16, created, removed };
        // What was gone before this agent's first walk is an earlier agent's story.
        metrics.record_flow_map("eth0", &fill(16, 0, 100, 0), true);
        metrics.record_flow_map("eth0", &fill(15, 0, 100, 1), true);
        metrics.record_flow_map("eth0", &fill(16, 0, 110, 4), true);
        // Counted once the maps have emptied again too, not only while full.
        metrics.record_flow_map("eth0", &fill(2, 0, 120, 4), true);
        // A walk cut short says nothing of evictions.
        metrics.record_flow_map("eth0", &fill(1, 0, 200, 4), false);
        metrics.record_flow_map("eth0", &fill(1, 1, 125, 4), true);
        let text = metrics.encode();
        assert!(text.contains(r#"sipflow_flow_evictions_total{iface="eth0"} 35"#), "{text}");
        assert!(text.contains(r#"sipflow_map_entries{iface="eth0",map="flows"} 1"#), "{text}");
        assert!(text.contains(r#"sipflow_map_entries{iface="eth0",map="bound_flows"} 1"#), "{text}");
        assert!(text.contains(r#"sipflow_map_capacity{iface="eth0",map="flows"} 16"#), "{text}");
    }

    /// `sipflow_...` names quoted in `text` (string literals in code, code spans in docs).
    fn quoted_names(text: &str, quote: char) -> std::collections::BTreeSet<String> {
        text.split(quote)
            .skip(1)
            .step_by(2)
            .filter(|word| word.starts_with("sipflow_") && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn docs_metrics_lists_every_metric_and_no_other() {
        let defined: std::collections::BTreeSet<String> =
            [include_str!("metrics.rs"), include_str!("transaction_metrics.rs")]
                .iter()
                .flat_map(|source| quoted_names(source, '"'))
                .filter(|name| !name.starts_with("sipflow_tests"))
                .collect();
        let docs = include_str!("../../../docs/metrics.md");
        // The table: its rows' first cells.
        let table: String = docs
            .lines()
            .filter(|line| line.starts_with("| `sipflow_"))
            .map(|line| line.split('|').nth(1).unwrap_or_default())
            .collect();
        let listed = quoted_names(&table, '`');
        let missing: Vec<_> = defined.difference(&listed).collect();
        assert!(missing.is_empty(), "docs/metrics.md's table lacks {missing:?}");
        let unknown: Vec<_> = listed.difference(&defined).collect();
        assert!(unknown.is_empty(), "docs/metrics.md's table lists {unknown:?}, which no code defines");
    }
}
