//! `sipflow run`: attach, serve, detach on SIGINT or SIGTERM.

use std::sync::{Arc, Mutex};

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::info;

use crate::{
    attach::{self, SipPorts},
    cli::RunArgs,
    export::{
        http::{AgentState, router},
        metrics::Metrics,
    },
    failure::Failure,
    privileges,
};

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    for iface in &args.ifaces {
        if !attach::interface_exists(iface) {
            return Err(Failure::UnknownInterface(iface.clone()));
        }
    }
    if !privileges::can_load_bpf() {
        return Err(Failure::NotPrivileged);
    }
    // Bind before attaching, so a busy port fails before anything changes on the host.
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Listen {
            addr: args.listen,
            reason: e.to_string(),
        })?;

    let ports = SipPorts {
        plain: args.plain_ports(),
        tls: args.tls_ports(),
    };
    let mut attached = Vec::new();
    let mut counters = Vec::new();
    for iface in &args.ifaces {
        let (a, c) = attach::attach(iface, &ports, args.max_flows, args.xdp_mode)?;
        attached.push(a);
        counters.push((iface.clone(), c));
    }
    let state = Arc::new(AgentState {
        metrics: Mutex::new(Metrics::new()),
        counters,
    });

    let sweep_state = state.clone();
    let interval = args.sweep_interval;
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            sweep_state.refresh();
        }
    });

    info!(listen = %args.listen, "serving /metrics and /healthz");
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    sweep.abort();
    for a in attached {
        a.detach();
    }
    served.map_err(|e| Failure::Runtime(format!("the HTTP endpoint failed: {e}")))
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: detaching"),
        _ = int.recv() => info!("SIGINT: detaching"),
    }
}
