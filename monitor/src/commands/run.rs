//! `sipflow run`: attach, read the kernel's maps, decide, serve; detach on
//! SIGINT or SIGTERM, unless the programs are to stay (--keep-attached).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

use crate::{
    cli::RunArgs,
    clock::boot_time_ns,
    engine::{self, AgentState, Engine, INPUT_QUEUE_BYTES, Input, Instance},
    export::{
        http::{self, router},
        metrics::Metrics,
    },
    failure::Failure,
    kernel::{
        attach::{self, AttachOptions, Attached, SipPorts},
        error::{KernelError, at},
        head_events::{FlowEvents, HeadEvents, QUIET_DRAIN},
        log::KernelLog,
        maps::{FlowTable, KernelCounters},
        pins,
        sip_servers::SipServerFinder,
        tls_probes::{self, TlsPlan},
    },
    liveness::{
        registrations::{self, Limits},
        saved,
        tracker::Tracker,
    },
    peers::Peers,
    privileges,
};

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let plan = plan(&args)?;
    // Bind before attaching, so a busy port fails before anything changes on the host.
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Listen { addr: args.listen, reason: e.to_string() })?;
    let (attachments, interfaces) = attach_all(&args, &plan)?;
    let (instances, rings): (Vec<_>, Vec<_>) = interfaces.into_iter().map(|i| (i.instance, i.rings)).unzip();
    let state = build_state(&args, plan.peers, instances);
    let mut running = Running::default();
    let engine_inputs = spawn_readers(rings, &state, &mut running);
    if plan.tls.is_some() {
        spawn_sip_server_follower(&plan.ports.tls, &attachments, &state, &mut running);
    }
    let engine_thread = spawn_engine(&args, &state, engine_inputs, &running)?;
    spawn_saver(&state, &mut running);

    info!(listen = %args.listen, "serving /metrics, /flows and /healthz");
    let serving = http::serve(listener, router(state.clone()), shutdown_signal());
    let served = until_something_ends(serving, &mut running.stopped, &mut running.tasks).await;
    running.tasks.abort_all();
    // The readers held the engine's inputs: with them gone, it returns.
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    state.save_registrations(true);
    drop(attachments);
    served
}

/// What the command line asks for, checked before anything changes on the host.
struct Plan {
    ports: SipPorts,
    peers: Peers,
    /// Where SIP inside TLS is read, when it is.
    tls: Option<TlsPlan>,
}

fn plan(args: &RunArgs) -> Result<Plan, Failure> {
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
    if args.transactions && args.ingress_only {
        warn!(
            "--transactions with --ingress-only: only a tap or mirror port shows the answers; \
             on this host's own interface every INVITE would end timed_out"
        );
    }
    let ports = SipPorts { plain: args.plain_ports(), tls: args.tls_ports(), ws: args.ws_ports.clone() };
    if let Some(port) = ports.given_twice() {
        return Err(Failure::Usage(format!(
            "port {port} is given twice among --sip-port, --sips-port and --ws-port (or their defaults); give each port once"
        )));
    }
    let peers = Peers::new(&args.peers).map_err(|e| Failure::Usage(e.to_string()))?;
    if !privileges::can_load_bpf() {
        return Err(Failure::NotPrivileged);
    }
    if args.pin_dir.starts_with(pins::BPFFS) {
        let mounted = pins::ensure_bpffs().map_err(|e| Failure::NoBpffs(e.to_string()))?;
        if mounted && pins::private_mounts() {
            warn!(
                pin_dir = %args.pin_dir.display(),
                "sipflow runs in a mount namespace of its own (as under `ip netns exec`) and mounted the BPF \
                 filesystem there: its pins die with it, and a restart loses flows, counts and attached programs; \
                 enter only the network namespace instead, with `nsenter --net=/run/netns/NAME sipflow run ...`"
            );
        }
    }
    let tls = tls_probes::plan(&ports.tls, &args.tls_libs, args.no_tls_plaintext)?;
    Ok(Plan { ports, peers, tls })
}

/// The interfaces sipflow is attached to. Dropped, whether the agent ends or
/// a step of its start fails, it detaches them all, unless the programs are
/// to stay (--keep-attached); no step detaches on its own.
struct Attachments {
    attached: Arc<Mutex<Vec<Attached>>>,
    keep: bool,
}

impl Drop for Attachments {
    fn drop(&mut self) {
        let attached = match self.attached.lock() {
            Ok(mut attached) => std::mem::take(&mut *attached),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for a in attached {
            a.detach(self.keep);
        }
    }
}

/// One interface attached: what the engine reads of it, and its ring buffers.
struct Interface {
    instance: Instance,
    rings: (String, HeadEvents, FlowEvents),
}

fn attach_all(args: &RunArgs, plan: &Plan) -> Result<(Attachments, Vec<Interface>), Failure> {
    let options = AttachOptions {
        ports: &plan.ports,
        peers: &plan.peers,
        max_flows: args.max_flows,
        mode: args.xdp_mode,
        pin_root: &args.pin_dir,
        replace: args.replace,
        ingress_only: args.ingress_only,
        transactions: args.transactions,
        tls: plan.tls.as_ref(),
    };
    let attachments = Attachments { attached: Arc::default(), keep: args.keep_attached };
    let mut interfaces = Vec::new();
    for iface in &args.ifaces {
        let (attached, counters) = attach::attach(iface, &options)?;
        let mut all = attachments.attached.lock().expect("attachments lock");
        all.push(attached);
        let a = all.last_mut().expect("just pushed");
        interfaces.push(take_maps(a, counters, args.sees_egress())?);
    }
    Ok((attachments, interfaces))
}

/// Attaches the egress program where it is wanted, and takes the maps the
/// agent reads of an attached interface.
fn take_maps(a: &mut Attached, counters: KernelCounters, egress: bool) -> Result<Interface, Failure> {
    if egress {
        a.attach_egress()?;
    } else {
        a.drop_stale_egress();
    }
    let iface = a.iface.clone();
    let maps_failure = |source: KernelError| Failure::Load { iface: iface.clone(), source };
    let flows = FlowTable::take_from(a.ebpf_mut()).map_err(|e| maps_failure(at("the flow map")(e)))?;
    let heads = HeadEvents::take_from(a.ebpf_mut()).map_err(maps_failure)?;
    let news = FlowEvents::take_from(a.ebpf_mut()).map_err(maps_failure)?;
    tokio::spawn(KernelLog::take_from(a.ebpf_mut(), &iface).map_err(maps_failure)?.forward());
    let instance = Instance {
        iface: iface.clone(),
        counters,
        flows: Mutex::new(flows),
        max_flows: a.flow_capacity,
        pins: a.pins.clone(),
        ifindex: a.ifindex,
        egress: a.egress,
    };
    Ok(Interface { instance, rings: (iface, heads, news) })
}

/// The liveness tracker, the metrics and the bindings an agent before this
/// one saved.
fn build_state(args: &RunArgs, peers: Peers, instances: Vec<Instance>) -> Arc<AgentState> {
    let limits = Limits {
        max_bindings: args.max_bindings,
        max_pending: args.max_pending_registers,
        max_pending_bytes: registrations::DEFAULT_MAX_PENDING_BYTES,
        all_by_flow: args.all_bindings_by_flow,
    };
    let mut tracker = Tracker::with_limits(args.timers(), args.retention, limits, args.ingress_only);
    let mut metrics = Metrics::new();
    // One set of peers for the agent, shared by the binding table and the metrics.
    let peers = Arc::new(peers);
    metrics.set_peers(peers.clone());
    tracker.set_peers(peers);
    match saved::load(&args.state_file, boot_time_ns(), args.max_bindings, &args.ifaces) {
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
    Arc::new(AgentState {
        metrics: Mutex::new(metrics),
        instances,
        saved_generation: AtomicU64::new(tracker.registrations.generation),
        last_saved: Mutex::new(None),
        swept_until_ns: AtomicU64::new(0),
        engine_alive: AtomicBool::new(true),
        tracker: Mutex::new(tracker),
        state_file: args.state_file.clone(),
    })
}

/// The agent's tasks. Every one runs for the agent's life: one that ends,
/// however (an error, a panic), ends the agent, so that the service manager
/// restarts it; one that fails says why on `stopped`.
struct Running {
    tasks: tokio::task::JoinSet<()>,
    stopped_tx: tokio::sync::mpsc::UnboundedSender<String>,
    stopped: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Default for Running {
    fn default() -> Self {
        let (stopped_tx, stopped) = tokio::sync::mpsc::unbounded_channel();
        Self { tasks: tokio::task::JoinSet::new(), stopped_tx, stopped }
    }
}

/// The kernel's ring buffers are drained by tasks that only forward: the
/// engine, on its own thread, owns every decision. Returns the engine's end
/// of the queue.
fn spawn_readers(
    rings: Vec<(String, HeadEvents, FlowEvents)>,
    state: &AgentState,
    running: &mut Running,
) -> engine::InputReceiver {
    let (queue, engine_inputs) = engine::input_queue(INPUT_QUEUE_BYTES);
    for (i, (iface, mut heads, mut news)) in rings.into_iter().enumerate() {
        let lost = state.metrics.lock().expect("metrics lock").lost_inputs(&iface);
        let (inputs, stopped_tx) = (queue.sender(lost), running.stopped_tx.clone());
        running.tasks.spawn(async move {
            // One steady period for both rings, whatever wakes the task in between.
            let mut quiet = tokio::time::interval(QUIET_DRAIN);
            quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let failed = loop {
                let batch = tokio::select! {
                    batch = heads.next_batch() => batch.map(|b| vec![Input::Heads(i, b)]),
                    batch = news.next_batch() => batch.map(|b| vec![Input::Flows(i, b)]),
                    _ = quiet.tick() => {
                        let (h, n) = (heads.drain_now(), news.drain_now());
                        let heads = (!h.is_empty()).then_some(Input::Heads(i, h));
                        let flows = (!n.is_empty()).then_some(Input::Flows(i, n));
                        Ok(heads.into_iter().chain(flows).collect())
                    }
                };
                match batch {
                    Ok(batch) => {
                        if batch.into_iter().any(|input| inputs.send(input).is_err()) {
                            return;
                        }
                    }
                    Err(e) => break format!("reading {iface}'s ring buffers failed: {e}"),
                };
            };
            let _ = stopped_tx.send(failed);
        });
    }
    engine_inputs
}

/// SIP inside TLS is read in the SIP server processes only: found now, and
/// followed as they come and go.
fn spawn_sip_server_follower(
    tls_ports: &[u16],
    attachments: &Attachments,
    state: &Arc<AgentState>,
    running: &mut Running,
) {
    let mut finder = SipServerFinder::new(tls_ports);
    follow_sip_servers(&attachments.attached, &mut finder, state);
    let (attached, state) = (attachments.attached.clone(), state.clone());
    running.tasks.spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW_SIP_SERVERS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let finder = Arc::new(Mutex::new(finder));
        loop {
            tick.tick().await;
            let (attached, state, finder) = (attached.clone(), state.clone(), finder.clone());
            let _ = tokio::task::spawn_blocking(move || {
                follow_sip_servers(&attached, &mut finder.lock().expect("finder lock"), &state)
            })
            .await;
        }
    });
}

/// The liveness engine, on a thread of its own.
fn spawn_engine(
    args: &RunArgs,
    state: &Arc<AgentState>,
    inputs: engine::InputReceiver,
    running: &Running,
) -> Result<std::thread::JoinHandle<()>, Failure> {
    let engine = Engine::new(state.clone(), inputs, args.sweep_interval, args.transactions);
    let (engine_state, engine_stopped) = (state.clone(), running.stopped_tx.clone());
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.run()));
            engine_state.engine_alive.store(false, Ordering::Relaxed);
            let why = if ran.is_err() { "the liveness engine failed" } else { "the liveness engine stopped" };
            let _ = engine_stopped.send(why.to_string());
        })
        .map_err(|e| Failure::Runtime(format!("cannot start the liveness engine: {e}")))
}

/// The bindings are written off the engine's thread: at a million they take seconds.
fn spawn_saver(state: &Arc<AgentState>, running: &mut Running) {
    let (state, stopped_tx) = (state.clone(), running.stopped_tx.clone());
    running.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let state = state.clone();
            if tokio::task::spawn_blocking(move || state.save_registrations(false)).await.is_err() {
                let _ = stopped_tx.send("saving the registrations failed".to_string());
                return;
            }
        }
    });
}

/// How often the SIP server processes are looked for (see `sip_servers`):
/// a new one's first SSL calls may go unread for this long.
const FOLLOW_SIP_SERVERS: Duration = Duration::from_secs(1);

/// Sets each interface's TLS probes on the SIP server processes there are now.
fn follow_sip_servers(attached: &Mutex<Vec<Attached>>, finder: &mut SipServerFinder, state: &AgentState) {
    let servers = finder.scan().clone();
    if let Some(denied) = finder.denied_once() {
        warn!(
            processes = denied,
            "cannot look into other users' processes for the SIP server (sipflow needs CAP_SYS_PTRACE, or root): \
             SIP inside TLS is not read in any of them; TLS flows there are tracked at the TCP level only"
        );
    }
    for a in attached.lock().expect("attachments lock").iter_mut() {
        if let Some(count) = a.follow_sip_servers(&servers) {
            state.metrics.lock().expect("metrics lock").set_tls_processes(&a.iface, count);
        }
    }
}

/// Waits until serving ends (a signal: Ok), or a task says it failed or
/// ends at all (Err: the agent exits non-zero, and systemd restarts it).
async fn until_something_ends(
    serving: impl Future<Output = ()>,
    stopped: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), Failure> {
    let restart = |why: &str| Failure::Runtime(format!("{why}; exiting so that the service manager restarts sipflow"));
    tokio::select! {
        () = serving => Ok(()),
        Some(why) = stopped.recv() => Err(restart(&why)),
        Some(ended) = tasks.join_next() => {
            Err(restart(if ended.is_err() { "a task of the agent failed" } else { "a task of the agent ended" }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `until_something_ends` with `serving`, after `spawn` put the agent's tasks in place.
    fn ends_with(serving: impl Future<Output = ()>, spawn: fn(&mut tokio::task::JoinSet<()>)) -> Result<(), Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (_keep, mut stopped) = tokio::sync::mpsc::unbounded_channel::<String>();
            let mut tasks = tokio::task::JoinSet::new();
            spawn(&mut tasks);
            until_something_ends(serving, &mut stopped, &mut tasks).await
        })
    }

    #[test]
    fn a_task_that_panics_or_ends_ends_the_agent() {
        let failed = ends_with(std::future::pending(), |tasks| {
            tasks.spawn(std::future::pending());
            tasks.spawn(async { panic!("a reader failed") });
        });
        assert!(matches!(&failed, Err(Failure::Runtime(why)) if why.contains("failed")), "{failed:?}");
        let ended = ends_with(std::future::pending(), |tasks| {
            tasks.spawn(async {});
        });
        assert!(matches!(&ended, Err(Failure::Runtime(why)) if why.contains("ended")), "{ended:?}");
    }

    #[test]
    fn a_signal_ends_it_well() {
        let served = ends_with(async {}, |tasks| {
            tasks.spawn(std::future::pending());
        });
        assert!(served.is_ok(), "{served:?}");
    }
}
