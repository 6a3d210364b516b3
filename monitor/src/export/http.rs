//! GET /metrics, GET /flows (?state=failed) and GET /healthz.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::metrics::{FlowMapFill, Metrics};
use crate::{
    clock::boot_time_ns,
    kernel_maps::{FlowTable, KernelCounters},
    liveness::{registrations::FlowId, saved, tracker::Tracker},
    pins::{self, Pins},
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
        pins::programs_attached(&self.pins, self.ifindex, self.egress, crate::attach::tcx_links())
    }
}

/// What the HTTP handlers, the sweep and the event readers share.
pub struct AgentState {
    pub metrics: Mutex<Metrics>,
    pub instances: Vec<Instance>,
    pub tracker: Mutex<Tracker>,
    /// Where the bindings are saved (`--state-file`), and the generation last saved.
    pub state_file: PathBuf,
    pub saved_generation: AtomicU64,
    /// When the bindings were last written, and how long that took.
    pub last_saved: Mutex<Option<(std::time::Instant, std::time::Duration)>>,
    /// The start of the last sweep: every failure before it was reported.
    pub swept_until_ns: AtomicU64,
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

    /// Reads every flow map and decides: one log line per verdict.
    pub fn sweep(&self) {
        let started = std::time::Instant::now();
        let sweep_started_ns = boot_time_ns();
        self.refresh_counters();
        for instance in &self.instances {
            let now = boot_time_ns();
            let mut flows = instance.flows.lock().expect("flows lock");
            let mut live = 0u64;
            let mut tracker = self.tracker.lock().expect("tracker lock");
            let entries = flows.entries().inspect(|_| live += 1);
            let complete = || !flows.walk_was_cut_short();
            let sweep = tracker.sweep_walk(&instance.iface, entries, now, complete);
            if flows.walk_was_cut_short() {
                warn!(iface = instance.iface, "reading the flow map failed midway; this sweep judged part of it");
            }
            for v in &sweep.verdicts {
                // A flow that carried a registration is news; one that did not is
                // usually a call's socket gone quiet, many a second on a busy
                // server: counted in the metrics, logged only at debug level.
                let flow = describe(&v.flow);
                let (reason, aor, delay) =
                    (v.failure.reason.label(), v.aor.as_deref().unwrap_or("-"), format!("{:.1}", v.delay_s));
                if v.aor.is_some() {
                    info!(
                        iface = v.flow.iface,
                        flow,
                        reason,
                        aor,
                        would_430 = v.would_430,
                        delay_s = delay,
                        "flow failed"
                    );
                } else {
                    debug!(iface = v.flow.iface, flow, reason, delay_s = delay, "flow failed");
                }
            }
            for id in &sweep.recovered {
                info!(iface = id.iface, flow = %describe(id), "flow came back");
            }
            for id in &sweep.retracted {
                warn!(
                    iface = id.iface,
                    flow = %describe(id),
                    "verdict retracted: the connection carried data both ways after the RST or FIN it was failed for"
                );
            }
            for key in &sweep.expired {
                flows.remove(key);
            }
            let census = tracker.census();
            let grades = tracker.grades;
            let (retractions, refused) = (tracker.retractions, tracker.registrations.refused);
            drop(tracker);
            let created = instance.counters.read().map(|s| s.stat(monitor_common::counters::KernelStat::FlowsCreated));
            let mut metrics = self.metrics.lock().expect("metrics lock");
            metrics.record_sweep(&sweep);
            metrics.record_census(&census);
            metrics.record_grades(grades);
            metrics.record_registrations(retractions, refused);
            if let Ok(created) = created {
                metrics.record_flow_map(
                    &instance.iface,
                    &FlowMapFill { live, capacity: instance.max_flows.into(), created, removed: flows.removed() },
                );
            }
        }
        self.swept_until_ns.store(sweep_started_ns, Ordering::Relaxed);
        self.save_registrations(false);
        self.metrics.lock().expect("metrics lock").record_sweep_time(started.elapsed().as_secs_f64());
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

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/flows", get(flows))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    state.refresh_counters();
    let body = state.metrics.lock().expect("metrics lock").encode();
    ([("content-type", "text/plain; version=0.0.4")], body)
}

#[derive(Deserialize)]
struct FlowsQuery {
    state: Option<String>,
}

async fn flows(State(state): State<Arc<AgentState>>, Query(query): Query<FlowsQuery>) -> impl IntoResponse {
    let only_failed = match query.state.as_deref() {
        None | Some("all") => false,
        Some("failed") => true,
        Some(other) => {
            let message = format!("unknown state `{other}`; use state=failed or leave it out\n");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    // Listing every flow walks the kernel's maps: off the runtime's thread.
    let view = tokio::task::spawn_blocking(move || {
        let now = boot_time_ns();
        let tables: Vec<_> =
            state.instances.iter().map(|i| (i.iface.as_str(), i.flows.lock().expect("flows lock"))).collect();
        let kernel_flows = tables
            .iter()
            .filter(|_| !only_failed)
            .flat_map(|(iface, table)| table.entries().map(move |(key, flow)| (*iface, key, flow)));
        state.tracker.lock().expect("tracker lock").view(kernel_flows, now, only_failed)
    })
    .await;
    match view {
        Ok(view) => Json(view).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "listing the flows failed\n").into_response(),
    }
}

/// 200 while every program is attached and the maps can be read.
async fn healthz(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    if state.refresh_counters() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a program is detached or the kernel's maps cannot be read\n")
    }
}
