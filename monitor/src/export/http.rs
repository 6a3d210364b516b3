//! GET /metrics and GET /healthz.

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tracing::warn;

use super::metrics::Metrics;
use crate::kernel_maps::KernelCounters;

/// What the HTTP handlers and the sweep share.
pub struct AgentState {
    pub metrics: Mutex<Metrics>,
    /// Counters per attached interface.
    pub counters: Vec<(String, KernelCounters)>,
}

impl AgentState {
    /// Reads every interface's counters into the metrics; false when a read failed.
    pub fn refresh(&self) -> bool {
        let mut metrics = self.metrics.lock().expect("metrics lock");
        let mut healthy = true;
        for (iface, counters) in &self.counters {
            match counters.read() {
                Ok(snapshot) => metrics.record(iface, &snapshot),
                Err(e) => {
                    warn!(iface, error = %e, "reading the kernel's counters failed");
                    healthy = false;
                }
            }
        }
        healthy
    }
}

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    state.refresh();
    let body = state.metrics.lock().expect("metrics lock").encode();
    ([("content-type", "text/plain; version=0.0.4")], body)
}

/// 200 while the programs are attached (they are, as long as the agent runs) and the maps read.
async fn healthz(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    if state.refresh() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the kernel's maps cannot be read\n",
        )
    }
}
