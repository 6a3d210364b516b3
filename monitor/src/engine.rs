//! The liveness engine: the one owner of verdicts. Kernel events come in
//! through a channel (message heads; flows whose verdict may change now: a
//! close the host accepted, a wait begun), deadlines fire when a flow's
//! verdict could change with no new packet, and a walk of every flow map
//! reconciles what events may have missed, rarely. Verdicts, log lines,
//! metrics and saved bindings go out; export/ only reads what is kept here.
//!
//! The engine runs on a thread of its own: the lookups and walks are system
//! calls, and an RST's verdict must not wait behind an HTTP request.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
    },
    time::{Duration, Instant},
};

use monitor_common::{
    counters::KernelStat,
    events::FlowEventKind,
    flow::{FlowKey, FlowTransport},
};
use tracing::{debug, info, warn};

use crate::{
    clock::boot_time_ns,
    export::{
        census,
        metrics::{FlowMapFill, LostInputs, Metrics},
    },
    kernel::{
        head_events::{FlowNews, Head},
        maps::{FlowTable, KernelCounters},
        pins::{self, Pins},
    },
    liveness::{
        registrations::FlowId,
        saved,
        tracker::{Sweep, Tracker},
    },
    sip_head,
    transactions::{Kpi, Transactions},
};

/// One attached interface's maps.
pub struct Instance {
    pub iface: String,
    pub counters: KernelCounters,
    pub flows: Mutex<FlowTable>,
    pub max_flows: u32,
    /// Where its links are pinned, to tell whether the programs are still attached.
    pub pins: Pins,
    pub ifindex: u32,
    pub egress: bool,
}

impl Instance {
    pub fn programs_attached(&self) -> Vec<(&'static str, bool)> {
        pins::programs_attached(&self.pins, self.ifindex, self.egress, crate::kernel::attach::tcx_links())
    }
}

/// What the engine keeps and the HTTP handlers read.
pub struct AgentState {
    pub metrics: Mutex<Metrics>,
    pub instances: Vec<Instance>,
    pub tracker: Mutex<Tracker>,
    /// Where the bindings are saved (`--state-file`), and the generation last saved.
    pub state_file: PathBuf,
    pub saved_generation: AtomicU64,
    /// When the bindings were last written, and how long that took.
    pub last_saved: Mutex<Option<(std::time::Instant, std::time::Duration)>>,
    /// The start of the last walk of the maps: every failure before it was reported.
    pub swept_until_ns: AtomicU64,
    /// The engine's thread runs: false once it stopped, and /healthz fails.
    pub engine_alive: AtomicBool,
}

impl AgentState {
    /// Reads every interface's counters into the metrics, and whether each
    /// program is still attached; false when a read failed or a program is gone.
    pub fn refresh_counters(&self) -> bool {
        let mut metrics = self.metrics.lock().expect("metrics lock");
        let mut healthy = true;
        for instance in &self.instances {
            for (program, attached) in instance.programs_attached() {
                metrics.record_attached(&instance.iface, program, attached);
                healthy &= attached;
            }
            match instance.counters.read() {
                Ok(snapshot) => metrics.record(&instance.iface, &snapshot),
                Err(e) => {
                    warn!(iface = instance.iface, error = %e, "reading the kernel's counters failed");
                    healthy = false;
                }
            }
        }
        healthy
    }

    pub fn engine_running(&self) -> bool {
        self.engine_alive.load(Ordering::Relaxed)
    }

    /// Saves the bindings when they changed since they were last saved, at
    /// most every [`SAVE_EVERY`] and never more than a tenth of the time (a
    /// million bindings take seconds to write), or `always` (at exit, with the time up to
    /// which failures were reported). During a registration storm the table
    /// changes with every 2xx: a file rewritten on each change would cost its
    /// whole size per REGISTER.
    pub fn save_registrations(&self, always: bool) {
        let mut last_saved = self.last_saved.lock().expect("save lock");
        if !always && last_saved.is_some_and(|(at, took)| at.elapsed() < SAVE_EVERY.max(took * 10)) {
            return;
        }
        // The table is copied under the lock (its keys are shared, not cloned)
        // and written without it, so heads keep flowing while the file is written.
        let (generation, bindings) = {
            let tracker = self.tracker.lock().expect("tracker lock");
            let generation = tracker.registrations.generation;
            if self.saved_generation.load(Ordering::Relaxed) == generation && !always {
                return;
            }
            let bindings: Vec<_> = tracker.registrations.all().map(|(k, b)| (k.clone(), b)).collect();
            (generation, bindings)
        };
        let swept_until = self.swept_until_ns.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        match saved::save(&self.state_file, bindings.into_iter(), swept_until) {
            Ok(()) => {
                self.saved_generation.store(generation, Ordering::Relaxed);
                *last_saved = Some((std::time::Instant::now(), started.elapsed()));
            }
            Err(e) => {
                warn!(file = %self.state_file.display(), error = %e, "cannot save the registrations; a restart will forget them")
            }
        }
    }
}

/// How often, at most, the bindings are written to --state-file while they change.
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// "tcp 192.0.2.1:40000 -> 192.0.2.2:5060": client first, as packets of the flow start.
pub fn describe(flow: &FlowId) -> String {
    use crate::liveness::tracker::socket_addr;
    let k = &flow.key;
    let transport = monitor_common::flow::FlowTransport::from_u8(k.transport).map_or("?", |t| t.label());
    format!(
        "{transport} {} -> {}",
        socket_addr(k.family, &k.client_addr, k.client_port),
        socket_addr(k.family, &k.server_addr, k.server_port)
    )
}

/// What the kernel's ring buffers bring the engine, per interface (an index into `AgentState::instances`).
pub enum Input {
    Heads(usize, Vec<Head>),
    Flows(usize, Vec<FlowNews>),
}

/// What the queue from the ring readers to the engine may hold at most, in
/// bytes of heads and flow events (see [`input_bytes`]): some 100 000
/// REGISTER heads. A release engine keeps up with a storm of 100 000
/// REGISTERs and their 200s (BENCHMARKS, "Registration storms"), and the
/// lab's storm of 20 000 fits whole even behind a debug engine. Bounded by
/// bytes, not by messages: a reader that keeps up with the kernel sends many
/// small batches. Past the bound, a longer queue would only make every
/// verdict later and the agent larger, so what does not fit is dropped and
/// counted, as the kernel counts what does not fit its ring.
pub const INPUT_QUEUE_BYTES: usize = 64 << 20;

/// What an input holds while it waits for the engine, in bytes.
fn input_bytes(input: &Input) -> usize {
    match input {
        Input::Heads(_, heads) => heads.iter().map(|h| size_of::<Head>() + h.bytes.capacity()).sum(),
        Input::Flows(_, news) => news.len() * size_of::<FlowNews>(),
    }
}

/// The queue from the ring readers to the engine, bounded to `budget_bytes`:
/// the readers' end to make a sender per interface from, and the engine's.
pub fn input_queue(budget_bytes: usize) -> (InputQueue, InputReceiver) {
    let (queue, receiver) = std::sync::mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (InputQueue { queue, queued: queued.clone(), budget_bytes }, InputReceiver { queue: receiver, queued })
}

/// The readers' end of the queue to the engine.
#[derive(Clone)]
pub struct InputQueue {
    queue: Sender<Input>,
    /// Bytes sent and not yet taken by the engine.
    queued: Arc<AtomicUsize>,
    budget_bytes: usize,
}

impl InputQueue {
    /// A sender for one interface's reader, which counts its drops in `lost`.
    pub fn sender(&self, lost: LostInputs) -> InputSender {
        InputSender { queue: self.clone(), lost }
    }
}

/// The engine has stopped: nothing reads the queue any more.
#[derive(Debug, PartialEq, Eq)]
pub struct EngineGone;

/// One interface's reader's end of the queue to the engine. It never waits:
/// a reader that waited would leave the kernel's ring undrained for as long
/// as the engine is behind. What does not fit the queue's budget is dropped
/// and counted as lost, with what the kernel's full rings lose.
pub struct InputSender {
    queue: InputQueue,
    lost: LostInputs,
}

impl InputSender {
    /// Queues `input` for the engine, or drops and counts it when it does not fit.
    pub fn send(&self, input: Input) -> Result<(), EngineGone> {
        let bytes = input_bytes(&input);
        let budget = self.queue.budget_bytes;
        let room = self.queue.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
            queued.checked_add(bytes).filter(|after| *after <= budget)
        });
        if room.is_err() {
            match &input {
                Input::Heads(_, heads) => self.lost.heads.inc_by(heads.len() as u64),
                Input::Flows(_, news) => self.lost.flow_events.inc_by(news.len() as u64),
            }
            return Ok(());
        }
        self.queue.queue.send(input).map_err(|_| EngineGone)
    }
}

/// The engine's end of the queue: what it takes leaves the budget.
pub struct InputReceiver {
    queue: Receiver<Input>,
    queued: Arc<AtomicUsize>,
}

impl InputReceiver {
    fn recv_timeout(&self, timeout: Duration) -> Result<Input, RecvTimeoutError> {
        let input = self.queue.recv_timeout(timeout)?;
        self.queued.fetch_sub(input_bytes(&input), Ordering::Relaxed);
        Ok(input)
    }

    fn try_recv(&self) -> Option<Input> {
        let input = self.queue.try_recv().ok()?;
        self.queued.fetch_sub(input_bytes(&input), Ordering::Relaxed);
        Some(input)
    }
}

/// A deadline is checked this long after it passes: a verdict needs the
/// deadline strictly behind it.
const DEADLINE_SLACK_NS: u64 = 1_000_000;

/// When each flow is next looked at, earliest first.
#[derive(Default)]
struct Deadlines {
    due: BTreeMap<(u64, u64), (usize, FlowKey)>,
    at: HashMap<(usize, FlowKey), u64>,
    next_id: u64,
}

impl Deadlines {
    /// Looks at the flow at `at_ns`, unless it is to be looked at earlier already
    /// (that look schedules the next one).
    fn schedule(&mut self, iface: usize, key: FlowKey, at_ns: u64) {
        let at_ns = at_ns.saturating_add(DEADLINE_SLACK_NS);
        match self.at.get(&(iface, key)) {
            Some(&scheduled) if scheduled <= at_ns => {}
            _ => {
                self.at.insert((iface, key), at_ns);
                self.next_id += 1;
                self.due.insert((at_ns, self.next_id), (iface, key));
            }
        }
    }

    /// The flows whose time has come, each once.
    fn take_due(&mut self, now_ns: u64) -> Vec<(usize, FlowKey)> {
        let mut out = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            let (at_ns, _) = *entry.key();
            if at_ns > now_ns {
                break;
            }
            let flow = entry.remove();
            // Entries superseded by an earlier schedule are skipped.
            if self.at.get(&flow) == Some(&at_ns) {
                self.at.remove(&flow);
                out.push(flow);
            }
        }
        out
    }

    fn next(&self) -> Option<u64> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    fn len(&self) -> usize {
        self.at.len()
    }
}

pub struct Engine {
    state: Arc<AgentState>,
    inputs: InputReceiver,
    deadlines: Deadlines,
    /// How often every flow map is walked to reconcile (--sweep-interval).
    reconcile_every: Duration,
    /// Requests waiting for their answers, on every interface (`--transactions`;
    /// without it the kernel sends only the heads registrations need).
    transactions: Option<Transactions>,
}

impl Engine {
    pub fn new(state: Arc<AgentState>, inputs: InputReceiver, reconcile_every: Duration, transactions: bool) -> Self {
        let transactions = transactions.then(Transactions::default);
        Self { state, inputs, deadlines: Deadlines::default(), reconcile_every, transactions }
    }

    /// Runs until every input's sender is gone (the agent stops).
    pub fn run(mut self) {
        let mut next_reconcile = Instant::now();
        loop {
            if Instant::now() >= next_reconcile {
                self.reconcile();
                next_reconcile = Instant::now() + self.reconcile_every;
            }
            self.look_at_due();
            let until_reconcile = next_reconcile.saturating_duration_since(Instant::now());
            let next_due = match (self.deadlines.next(), self.transactions.as_ref().and_then(Transactions::next_due)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let until_deadline =
                next_due.map_or(until_reconcile, |at| Duration::from_nanos(at.saturating_sub(boot_time_ns())));
            match self.inputs.recv_timeout(until_reconcile.min(until_deadline)) {
                Ok(input) => {
                    self.take(input);
                    // Whatever else is queued, before the gauges are updated once.
                    while let Some(input) = self.inputs.try_recv() {
                        self.take(input);
                    }
                    self.record_census();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Heads(i, heads) => {
                let iface = self.state.instances[i].iface.clone();
                let mut kpis = Vec::new();
                let moved: Vec<FlowId> = {
                    let mut tracker = self.state.tracker.lock().expect("tracker lock");
                    let mut moved = Vec::new();
                    for head in &heads {
                        let Ok(parsed) = sip_head::parse(&head.bytes) else {
                            continue;
                        };
                        if let Some(transactions) = &mut self.transactions {
                            let peer = tracker.peers().id_of_client(&head.key);
                            kpis.extend(transactions.on_head(i, head, &parsed, peer));
                        }
                        // A request sent again binds nothing new.
                        if !head.retransmission {
                            moved.extend(tracker.on_parsed_head(&iface, head, &parsed));
                        }
                    }
                    moved
                };
                self.record_transactions(&kpis);
                // A binding that moved fails its old flow now, against the bindings as they are.
                for old in moved {
                    self.look(i, old.key);
                }
            }
            Input::Flows(i, news) => {
                for n in news {
                    match n.kind {
                        FlowEventKind::Closed | FlowEventKind::WaitBegan => self.look(i, n.key),
                        FlowEventKind::Answered => {
                            let transport = FlowTransport::from_u8(n.key.transport).map_or("tcp", FlowTransport::label);
                            self.state.metrics.lock().expect("metrics lock").record_rtt(transport, n.rtt_us);
                        }
                    }
                }
            }
        }
    }

    /// Counts what the heads told about transactions.
    fn record_transactions(&self, kpis: &[Kpi]) {
        let Some(transactions) = &self.transactions else {
            return;
        };
        let untracked = transactions.untracked;
        self.state.metrics.lock().expect("metrics lock").record_transactions(kpis, untracked);
    }

    fn look_at_due(&mut self) {
        let timed_out = self.transactions.as_mut().map(|t| t.expire(boot_time_ns())).unwrap_or_default();
        if !timed_out.is_empty() {
            self.record_transactions(&timed_out);
        }
        let due = self.deadlines.take_due(boot_time_ns());
        if due.is_empty() {
            return;
        }
        for (i, key) in due {
            self.look(i, key);
        }
        // A verdict reached at its deadline shows in the gauges at once, not at the next input.
        self.record_census();
    }

    /// Looks at one flow as it is in the kernel's map now.
    fn look(&mut self, i: usize, key: FlowKey) {
        let instance = &self.state.instances[i];
        let state = instance.flows.lock().expect("flows lock").get(&key);
        let sweep =
            self.state.tracker.lock().expect("tracker lock").look_at(&instance.iface, key, state, boot_time_ns());
        self.publish(i, &sweep);
    }

    /// Walks every flow map: judges what no event or deadline reached, and
    /// schedules every flow's next deadline.
    fn reconcile(&mut self) {
        let started = Instant::now();
        let walk_started_ns = boot_time_ns();
        self.state.refresh_counters();
        let state = self.state.clone();
        for (i, instance) in state.instances.iter().enumerate() {
            let now = boot_time_ns();
            // Read before the walk: a flow made during it may be met, never missed, so
            // that what was made and is not met was removed or evicted.
            let created = instance.counters.stat(KernelStat::FlowsCreated);
            let (sweep, walked, removed, complete) = {
                let flows = instance.flows.lock().expect("flows lock");
                let mut tracker = self.state.tracker.lock().expect("tracker lock");
                let complete = || !flows.walk_was_cut_short();
                let sweep = tracker.sweep_walk(&instance.iface, flows.entries(), now, complete);
                if flows.walk_was_cut_short() {
                    warn!(iface = instance.iface, "reading the flow map failed midway; this walk judged part of it");
                }
                (sweep, flows.walked(), flows.removed(), !flows.walk_was_cut_short())
            };
            self.publish(i, &sweep);
            if let Ok(created) = created {
                let fill = FlowMapFill {
                    unbound: walked.0,
                    bound: walked.1,
                    capacity: instance.max_flows.into(),
                    created,
                    removed: removed + sweep.expired.len() as u64,
                };
                let mut metrics = self.state.metrics.lock().expect("metrics lock");
                metrics.record_flow_map(&instance.iface, &fill, complete);
            }
        }
        self.state.swept_until_ns.store(walk_started_ns, Ordering::Relaxed);
        self.record_census();
        let mut metrics = self.state.metrics.lock().expect("metrics lock");
        metrics.record_sweep_time(started.elapsed().as_secs_f64());
        metrics.record_deadlines(self.deadlines.len());
    }

    /// What a look or a walk found: one log line per verdict, the counts, the
    /// flows to forget, the next deadlines.
    fn publish(&mut self, i: usize, sweep: &Sweep) {
        log_verdicts(sweep);
        if !sweep.expired.is_empty() {
            let mut flows = self.state.instances[i].flows.lock().expect("flows lock");
            for key in &sweep.expired {
                flows.remove(key);
            }
        }
        for (key, at) in &sweep.deadlines {
            self.deadlines.schedule(i, *key, *at);
        }
        self.state.metrics.lock().expect("metrics lock").record_sweep(sweep);
    }

    /// The gauges and counters the tracker keeps, into the metrics.
    fn record_census(&self) {
        let (census, grades, refused) = {
            let tracker = self.state.tracker.lock().expect("tracker lock");
            (census::of(&tracker), tracker.grades, tracker.registrations.refused)
        };
        let mut metrics = self.state.metrics.lock().expect("metrics lock");
        metrics.record_census(&census);
        metrics.record_grades(grades);
        metrics.record_refused(refused);
    }
}

fn log_verdicts(sweep: &Sweep) {
    for v in &sweep.verdicts {
        // A flow that carried a registration is news; one that did not is
        // usually a call's socket gone quiet, many a second on a busy
        // server: counted in the metrics, logged only at debug level.
        let flow = describe(&v.flow);
        let (reason, aor, delay) =
            (v.failure.reason.label(), v.aor.as_deref().unwrap_or("-"), format!("{:.3}", v.delay_s));
        if v.aor.is_some() {
            info!(iface = v.flow.iface, flow, reason, aor, would_430 = v.would_430, delay_s = delay, "flow failed");
        } else {
            debug!(iface = v.flow.iface, flow, reason, delay_s = delay, "flow failed");
        }
    }
    for id in &sweep.recovered {
        info!(iface = id.iface, flow = %describe(id), "flow came back");
    }
    for r in &sweep.retracted {
        // Rare, and a verdict already logged, counted and maybe alerted on was
        // wrong: what was taken back, and for how long it was believed.
        let (reason, aor, stood_s) =
            (r.failure.reason.label(), r.judged.aor.as_deref().unwrap_or("-"), format!("{:.3}", r.stood_s));
        warn!(
            iface = r.flow.iface,
            flow = %describe(&r.flow),
            reason,
            aor,
            would_430 = r.judged.would_430,
            stood_s,
            "verdict retracted: the connection carried data both ways after what failed it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::counters::Direction;

    const KEY: FlowKey = FlowKey {
        server_addr: [0; 16],
        client_addr: [0; 16],
        server_port: 5060,
        client_port: 40000,
        vlan_id: 0,
        family: 4,
        transport: 1,
    };

    fn heads(n: usize) -> Vec<Head> {
        let head = Head {
            key: KEY,
            timestamp_ns: 1,
            direction: Direction::Ingress,
            from_client: true,
            bytes: b"OPTIONS sip:a@b SIP/2.0\r\n\r\n".to_vec(),
            cut: false,
            retransmission: false,
        };
        vec![head; n]
    }

    fn lengths(queue: &InputReceiver) -> Vec<usize> {
        std::iter::from_fn(|| queue.try_recv())
            .map(|input| match input {
                Input::Heads(_, h) => h.len(),
                Input::Flows(_, n) => n.len(),
            })
            .collect()
    }

    /// The queue holds what its budget allows; what does not fit is dropped
    /// at once, never waited for, and counted by interface; what the engine
    /// takes makes room again.
    #[test]
    fn a_full_queue_to_the_engine_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let one_head = input_bytes(&Input::Heads(0, heads(1)));
        let (queue, engine) = input_queue(10 * one_head);
        let sender = queue.sender(metrics.lost_inputs("eth0"));
        for batch in [4, 5, 2] {
            assert_eq!(sender.send(Input::Heads(0, heads(batch))), Ok(()));
        }
        let flow = FlowNews { key: KEY, timestamp_ns: 1, kind: FlowEventKind::Closed, rtt_us: 0 };
        sender.send(Input::Flows(0, vec![flow; 3])).unwrap();
        assert_eq!(
            engine.queued.load(Ordering::Relaxed),
            9 * one_head,
            "the last two heads did not fit, nor the flows"
        );
        let text = metrics.encode();
        assert!(text.contains(r#"sipflow_events_lost_total{iface="eth0"} 2"#), "{text}");
        assert!(text.contains(r#"sipflow_flow_events_lost_total{iface="eth0"} 3"#), "{text}");
        assert_eq!(lengths(&engine), [4, 5]);
        assert_eq!(engine.queued.load(Ordering::Relaxed), 0, "taken, the budget is free again");
        sender.send(Input::Flows(0, vec![flow; 3])).unwrap();
        sender.send(Input::Heads(0, heads(10))).unwrap();
        assert_eq!(lengths(&engine), [3], "flow events count against the same budget");
        assert!(metrics.encode().contains(r#"sipflow_events_lost_total{iface="eth0"} 12"#));
        drop(engine);
        assert_eq!(sender.send(Input::Heads(0, heads(1))), Err(EngineGone));
    }

    #[test]
    fn the_default_budget_holds_a_storms_backlog_and_no_more() {
        let register = vec![0u8; 600];
        let head = Head { bytes: register, ..heads(1).remove(0) };
        let per_head = input_bytes(&Input::Heads(0, vec![head]));
        let held = INPUT_QUEUE_BYTES / per_head;
        assert!((50_000..200_000).contains(&held), "{held} REGISTER heads of 600 bytes");
    }
}
