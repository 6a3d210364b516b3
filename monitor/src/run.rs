//! `sipflow run`: attach, read the kernel's maps, decide, serve; detach on
//! SIGINT or SIGTERM, unless the programs are to stay (--keep-attached).

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use crate::{
    attach::{self, AttachOptions, Attached, SipPorts},
    cli::RunArgs,
    export::{
        http::{AgentState, Instance, router},
        metrics::Metrics,
    },
    failure::Failure,
    head_events::HeadEvents,
    kernel_maps::FlowTable,
    liveness::{registrations::Limits, saved, tracker::Tracker},
    pins, privileges,
};

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    if args.ifaces.is_empty() {
        return Err(Failure::Usage(
            "no interface to monitor; give one with -i IFACE, or as iface = [\"IFACE\"] in the --config file".into(),
        ));
    }
    for iface in &args.ifaces {
        if !attach::interface_exists(iface) {
            return Err(Failure::UnknownInterface(iface.clone()));
        }
    }
    if !privileges::can_load_bpf() {
        return Err(Failure::NotPrivileged);
    }
    if args.pin_dir.starts_with(pins::BPFFS) {
        pins::ensure_bpffs().map_err(|e| Failure::NoBpffs(e.to_string()))?;
    }
    // Bind before attaching, so a busy port fails before anything changes on the host.
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Listen { addr: args.listen, reason: e.to_string() })?;

    let ports = SipPorts { plain: args.plain_ports(), tls: args.tls_ports() };
    let mut attached = Vec::new();
    let mut instances = Vec::new();
    let mut event_sources = Vec::new();
    let options = AttachOptions {
        ports: &ports,
        max_flows: args.max_flows,
        mode: args.xdp_mode,
        pin_root: &args.pin_dir,
        replace: args.replace,
    };
    for iface in &args.ifaces {
        match attach_one(iface, &options, args.sees_egress(), args.keep_attached) {
            Ok((a, instance, events)) => {
                instances.push(instance);
                event_sources.push((iface.clone(), events));
                attached.push(a);
            }
            Err(failure) => {
                // Leave nothing behind that the operator did not ask to keep.
                for a in attached {
                    a.detach(args.keep_attached);
                }
                return Err(failure);
            }
        }
    }
    let limits = Limits {
        max_bindings: args.max_bindings,
        max_pending: args.max_pending_registers,
        all_by_flow: args.all_bindings_by_flow,
    };
    let mut tracker = Tracker::with_limits(args.timers(), args.retention, limits, args.ingress_only);
    match saved::load(&args.state_file) {
        Ok(saved) => {
            if !saved.bindings.is_empty() {
                let bindings = saved.bindings.len();
                info!(file = %args.state_file.display(), bindings, "took over the saved registrations");
                tracker.registrations.restore(saved.bindings);
            }
            // The agent before this one reported the failures up to its last sweep.
            tracker.quiet_before(saved.swept_until_ns);
        }
        Err(e) => {
            warn!(file = %args.state_file.display(), error = %e, "cannot read the saved registrations; starting without")
        }
    }
    let state = Arc::new(AgentState {
        metrics: Mutex::new(Metrics::new()),
        instances,
        saved_generation: AtomicU64::new(tracker.registrations.generation),
        last_saved: Mutex::new(None),
        swept_until_ns: AtomicU64::new(0),
        tracker: Mutex::new(tracker),
        state_file: args.state_file.clone(),
    });

    let mut tasks = Vec::new();
    for (iface, mut events) in event_sources {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            // While a sweep holds the tracker, heads wait here: this runs on the
            // runtime's one thread, which must not block, and the ring buffer
            // must keep being emptied.
            let mut waiting = Vec::new();
            let mut retry = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    batch = events.next_batch() => match batch {
                        Ok(heads) => waiting.extend(heads),
                        Err(e) => {
                            warn!(iface, error = %e, "reading the ring buffer failed; registrations are no longer followed");
                            return;
                        }
                    },
                    _ = retry.tick(), if !waiting.is_empty() => {}
                }
                if let Ok(mut tracker) = state.tracker.try_lock() {
                    for head in waiting.drain(..) {
                        tracker.on_head(&iface, &head);
                    }
                }
            }
        }));
    }
    let sweep_state = state.clone();
    let interval = args.sweep_interval;
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            // A sweep of a large flow map takes a while: off the threads that serve HTTP.
            let state = sweep_state.clone();
            if tokio::task::spawn_blocking(move || state.sweep()).await.is_err() {
                warn!("a sweep failed; verdicts are no longer updated");
                return;
            }
        }
    }));

    info!(listen = %args.listen, "serving /metrics, /flows and /healthz");
    let served = axum::serve(listener, router(state.clone())).with_graceful_shutdown(shutdown_signal()).await;
    for task in tasks {
        task.abort();
    }
    state.save_registrations(true);
    for a in attached {
        a.detach(args.keep_attached);
    }
    served.map_err(|e| Failure::Runtime(format!("the HTTP endpoint failed: {e}")))
}

/// Attaches to one interface and takes its maps; on a failure after the
/// attachment, detaches again (unless the programs are to stay).
fn attach_one(
    iface: &str,
    options: &AttachOptions,
    egress: bool,
    keep: bool,
) -> Result<(Attached, Instance, HeadEvents), Failure> {
    let (mut a, counters) = attach::attach(iface, options)?;
    let mut taken = || {
        if egress {
            a.attach_egress()?;
        } else {
            a.drop_stale_egress();
        }
        let maps_failure = |reason: String| Failure::Load { iface: iface.to_string(), reason };
        let flows = FlowTable::take_from(a.ebpf_mut()).map_err(|e| maps_failure(e.to_string()))?;
        let events = HeadEvents::take_from(a.ebpf_mut()).map_err(maps_failure)?;
        Ok((flows, events))
    };
    match taken() {
        Ok((flows, events)) => {
            let instance = Instance {
                iface: iface.to_string(),
                counters,
                flows: Mutex::new(flows),
                max_flows: a.flow_capacity,
                pins: a.pins.clone(),
                ifindex: a.ifindex,
                egress: a.egress,
            };
            Ok((a, instance, events))
        }
        Err(failure) => {
            a.detach(keep);
            Err(failure)
        }
    }
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = int.recv() => info!("SIGINT: stopping"),
    }
}
