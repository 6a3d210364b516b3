//! GET /metrics, GET /flows (?state=failed) and GET /healthz: they read what
//! the engine keeps, and never drive it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde::Deserialize;

use crate::{clock::boot_time_ns, engine::AgentState};

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

/// 200 while the engine runs, every program is attached and the maps can be read.
async fn healthz(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    if !state.engine_running() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the liveness engine stopped: verdicts are no longer made\n");
    }
    if state.refresh_counters() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a program is detached or the kernel's maps cannot be read\n")
    }
}
