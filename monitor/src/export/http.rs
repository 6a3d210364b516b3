//! GET /metrics, GET /flows (?state=failed) and GET /healthz: they read what
//! the engine keeps, and never drive it.

use std::{future::Future, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use serde::Deserialize;

use crate::{clock::boot_time_ns, engine::AgentState, export::flow_view};

/// How long a connection may take to send a request head, and may stay idle
/// between requests: a scraper sends its head at once; a connection that
/// does not is closed rather than kept for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, each connection
/// on a task of its own, held to [`HEADER_READ_TIMEOUT`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it was
                // accepted: the listener itself is fine; try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
    /// Pages of the list (failed flows first, then by interface and client):
    /// skip `offset` flows, return `limit` at most.
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
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
    // Listing every flow walks the kernel's maps and writes MBs of JSON: off
    // the runtime's thread, each lock held only for its own part, so that the
    // engine (which takes them too) waits for one map at most, never for all.
    let body = tokio::task::spawn_blocking(move || {
        let mut kernel_flows = Vec::new();
        if !only_failed {
            for instance in &state.instances {
                let table = instance.flows.lock().expect("flows lock");
                kernel_flows.extend(table.entries().map(|(key, flow)| (instance.iface.as_str(), key, flow)));
            }
        }
        let view =
            flow_view::flows(&state.tracker.lock().expect("tracker lock"), kernel_flows, boot_time_ns(), only_failed);
        let page: Vec<_> = view.iter().skip(query.offset).take(query.limit.unwrap_or(usize::MAX)).collect();
        serde_json::to_vec(&page)
    })
    .await;
    match body {
        Ok(Ok(body)) => ([("content-type", "application/json")], body).into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "listing the flows failed\n").into_response(),
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
