//! Loads the kernel programs onto an interface: one instance per interface, so
//! each interface has its own maps and counters, pinned so that they outlive
//! the agent.

use std::{collections::BTreeMap, ffi::CString, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, ProgramArray, lpm_trie::Key, lpm_trie::LpmTrie},
    programs::{
        Program, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc,
        tc::SchedClassifierLink,
        xdp::{XdpLink, XdpLinkId},
    },
};
use monitor_common::{
    counters::{Method, STATUS_CODE_SLOTS},
    maps::{
        BOUND_FLOWS, FLOWS, FOLLOW_TC, FOLLOW_XDP, INGRESS_ONLY, MAX_SIP_PORTS, PEER_REQUESTS, PEER_RESPONSES,
        PEER_SET, PEER_TABLE, PEERS, PORTS, SIP_PORTS, TC_EGRESS_PROGRAM, TC_FOLLOW_PROGRAMS, TRANSACTIONS,
        XDP_FOLLOW_PROGRAMS, XDP_PROGRAM,
    },
    ports::PortKind,
    tls::{SOCK_OFFSETS, SockOffsets},
};
use tracing::{info, warn};

use crate::{
    cli::XdpModeArg,
    failure::Failure,
    kernel::{
        error::{KernelError, at},
        maps::KernelCounters,
        object::EBPF_OBJECT,
        pins::{self, Pins, TC_LINK, XDP_LINK},
        sip_servers::SipServer,
        tls_probes::{self, TlsPlan, TlsProbes},
        xdp_hook,
    },
    peers::Peers,
};

/// The kernel programs, loaded for one interface and attached to it through
/// pinned links (see [`crate::kernel::pins`]): the links outlive this value, and
/// [`Attached::detach`] removes them unless they are to stay.
pub struct Attached {
    pub iface: String,
    pub ifindex: u32,
    /// How XDP runs here: `native`, `generic`, or `taken over` from an earlier agent.
    pub mode: &'static str,
    pub pins: Pins,
    pub egress: bool,
    /// Entries the flow map holds: `--max-flows`, or what the pinned map was made with.
    pub flow_capacity: u32,
    ebpf: Ebpf,
    /// The TLS readers, when SIP inside TLS is read.
    tls: Option<TlsProbes>,
}

/// How to load and attach.
pub struct AttachOptions<'a> {
    pub ports: &'a SipPorts,
    /// `--peer`: the client networks the kernel counts messages by.
    pub peers: &'a Peers,
    pub max_flows: u32,
    pub mode: XdpModeArg,
    /// Where the pins go: `--pin-dir`.
    pub pin_root: &'a Path,
    /// Take the interface's XDP hook from another program (`--replace`).
    pub replace: bool,
    /// Only ingress is seen (`--ingress-only`): which end is the server where both are on SIP ports.
    pub ingress_only: bool,
    /// Every SIP message's head goes to the agent, for the transaction KPIs (`--transactions`).
    pub transactions: bool,
    /// Read SIP inside TLS, from these libraries (`None`: TLS flows at the TCP level only).
    pub tls: Option<&'a TlsPlan>,
}

/// The SIP ports the kernel should treat as SIP, by kind.
pub struct SipPorts {
    pub plain: Vec<u16>,
    pub tls: Vec<u16>,
    /// SIP over WebSocket in clear (`--ws-port`).
    pub ws: Vec<u16>,
}

impl SipPorts {
    /// A port given as two kinds (say `--sip-port 8080 --ws-port 8080`), if any.
    pub fn given_twice(&self) -> Option<u16> {
        let mut seen = std::collections::BTreeSet::new();
        self.plain.iter().chain(&self.tls).chain(&self.ws).copied().find(|port| !seen.insert(*port))
    }
}

pub fn interface_exists(iface: &str) -> bool {
    ifindex(iface).is_some()
}

pub fn ifindex(iface: &str) -> Option<u32> {
    let name = CString::new(iface).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Loads the kernel programs (not yet attached) with the SIP ports configured
/// and the flow map sized to `max_flows`, told whether only ingress is seen
/// and whether every SIP message's head goes up. The maps are pinned in `pin_dir`,
/// or taken over from there when an earlier agent pinned them.
pub fn load(
    ports: &SipPorts,
    max_flows: u32,
    pin_dir: &Path,
    (ingress_only, transactions): (bool, bool),
    sock_offsets: SockOffsets,
    peers: &Peers,
) -> Result<Ebpf, KernelError> {
    if EBPF_OBJECT.is_empty() {
        return Err(KernelError::NoKernelObject);
    }
    let ingress_only = u8::from(ingress_only);
    let transactions = u8::from(transactions);
    let table = peers.table_id();
    forget_other_peer_counts(pin_dir, table);
    // Sized for the peers named and `other`: one peer's worth when none is named.
    let named = peers.len() as u32 + 1;
    let mut ebpf = EbpfLoader::new()
        .override_global(INGRESS_ONLY, &ingress_only, true)
        .override_global(TRANSACTIONS, &transactions, true)
        .override_global(SOCK_OFFSETS, &sock_offsets, true)
        .override_global(PEER_TABLE, &table, true)
        .override_global(aya_log::LEVEL, &crate::kernel::log::level(), false)
        .default_map_pin_directory(pin_dir)
        .map_max_entries(FLOWS, max_flows)
        .map_max_entries(BOUND_FLOWS, max_flows)
        .map_max_entries(PEER_REQUESTS, named * Method::COUNT as u32)
        .map_max_entries(PEER_RESPONSES, named * STATUS_CODE_SLOTS as u32)
        .load(EBPF_OBJECT)
        .map_err(at("loading the kernel object"))?;
    configure_ports(&mut ebpf, ports)?;
    configure_peers(&mut ebpf, peers, table)?;
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or_else(|| KernelError::missing_program(XDP_PROGRAM))?
        .try_into()
        .map_err(at(XDP_PROGRAM))?;
    program.load().map_err(KernelError::verifier(XDP_PROGRAM))?;
    install_followers(&mut ebpf, XDP_FOLLOW_PROGRAMS, FOLLOW_XDP)?;
    Ok(ebpf)
}

/// The per-peer counters an earlier agent pinned count for its peer table: a
/// run with other peers (or none) starts them afresh, so that no count is
/// put under another peer's name. Their messages stay in the totals.
fn forget_other_peer_counts(pin_dir: &Path, table: u32) {
    let pinned_for = MapData::from_pin(pin_dir.join(PEER_SET))
        .ok()
        .and_then(|data| Array::<MapData, u32>::try_from(Map::Array(data)).ok())
        .and_then(|set| set.get(&0, 0).ok());
    if pinned_for != Some(table) {
        for name in [PEER_REQUESTS, PEER_RESPONSES, PEER_SET] {
            let _ = std::fs::remove_file(pin_dir.join(name));
        }
    }
}

/// Fills the instance's peer trie (not pinned: it is this agent's table) and
/// notes the table the pinned per-peer counters count for.
fn configure_peers(ebpf: &mut Ebpf, peers: &Peers, table: u32) -> Result<(), KernelError> {
    let mut trie: LpmTrie<_, [u8; 16], u8> =
        ebpf.map_mut(PEERS).ok_or_else(|| KernelError::missing_map(PEERS))?.try_into().map_err(at(PEERS))?;
    for (prefix_len, address, peer) in peers.trie_entries() {
        trie.insert(&Key::new(prefix_len, address), peer, 0).map_err(at(PEERS))?;
    }
    let mut set: Array<_, u32> =
        ebpf.map_mut(PEER_SET).ok_or_else(|| KernelError::missing_map(PEER_SET))?.try_into().map_err(at(PEER_SET))?;
    set.set(0, table, 0).map_err(at(PEER_SET))
}

/// Loads the programs that walk a TCP segment's further SIP messages and puts
/// them where their entry program tail-calls them, in slot order. Without
/// them, only each segment's first message would be counted.
pub fn install_followers<const N: usize>(ebpf: &mut Ebpf, programs: [&str; N], array: &str) -> Result<(), KernelError> {
    for (slot, name) in programs.into_iter().enumerate() {
        let program = ebpf.program_mut(name).ok_or_else(|| KernelError::missing_program(name))?;
        match program {
            Program::Xdp(p) => p.load(),
            Program::SchedClassifier(p) => p.load(),
            Program::UProbe(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            _ => return Err(KernelError::UnexpectedType(name.to_string())),
        }
        .map_err(KernelError::verifier(name))?;
        let fd = program.fd().and_then(|fd| fd.try_clone().map_err(Into::into)).map_err(at(name))?;
        let map = ebpf.map_mut(array).ok_or_else(|| KernelError::missing_map(array))?;
        let mut slots = ProgramArray::try_from(map).map_err(at(array))?;
        slots.set(slot as u32, &fd, 0).map_err(at(format!("{array} slot {slot}")))?;
    }
    Ok(())
}

/// Loads, configures and attaches; returns the attachment and its counters.
pub fn attach(iface: &str, options: &AttachOptions) -> Result<(Attached, KernelCounters), Failure> {
    let ifindex = ifindex(iface).ok_or_else(|| Failure::UnknownInterface(iface.to_string()))?;
    let load_failure = |source: KernelError| Failure::Load { iface: iface.to_string(), source };
    let pins = Pins::new(options.pin_root, iface);
    for old in pins.prepare().map_err(|e| Failure::Pins { path: pins.dir.clone(), reason: e.to_string() })? {
        warn!(iface, pins = %old.display(), "removed the pins of another sipflow version; its flows are forgotten");
    }
    let offsets = options.tls.map(|plan| plan.offsets).unwrap_or_default();
    let watching = (options.ingress_only, options.transactions);
    let mut ebpf =
        load(options.ports, options.max_flows, &pins.dir, watching, offsets, options.peers).map_err(load_failure)?;
    let flow_capacity = flow_capacity(&ebpf).unwrap_or(options.max_flows);
    if flow_capacity != options.max_flows {
        warn!(
            iface,
            pinned = flow_capacity,
            asked = options.max_flows,
            "the pinned flow map keeps its size; `sipflow detach -i {iface}` first to change it"
        );
    }
    // Before XDP is attached: a failure here leaves nothing attached behind.
    let mut tls = None;
    if let Some(plan) = options.tls {
        match tls_probes::attach(&mut ebpf, plan, &pins.dir) {
            Ok(probes) => tls = Some(probes),
            Err(source) if plan.named => return Err(Failure::Tls(source)),
            Err(reason) => {
                warn!(iface, %reason, "SIP inside TLS will not be read; TLS flows are tracked at the TCP level only")
            }
        }
    }
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| load_failure(KernelError::missing_program(XDP_PROGRAM)))?;
    let link_path = pins.link(XDP_LINK);
    // The pin keeps the link; the program need not hold it too.
    let taken = take_over(&link_path, ifindex, "XDP", |link: XdpLink| {
        program.attach_to_link(link).and_then(|id| program.take_link(id)).map(drop)
    });
    let mode = match taken {
        Some(taken) => {
            taken.map_err(|source| Failure::Attach { iface: iface.to_string(), mode: "pinned", source })?;
            "taken over"
        }
        None => {
            refuse_foreign_xdp(iface, options.replace)?;
            let (link, used) = attach_xdp(program, iface, options.mode)?;
            pin_xdp(program, link, &link_path).map_err(|source| Failure::Attach {
                iface: iface.to_string(),
                mode: used,
                source,
            })?;
            used
        }
    };
    info!(iface, mode, pins = %pins.dir.display(), "attached XDP program");
    let counters = KernelCounters::take_from(&mut ebpf, !options.peers.is_empty())
        .map_err(|e| load_failure(at("the counter maps")(e)))?;
    let attached = Attached { iface: iface.to_string(), ifindex, mode, pins, egress: false, flow_capacity, ebpf, tls };
    Ok((attached, counters))
}

/// Whether TC programs attach through TCX links (Linux 6.6), as aya then does.
pub fn tcx_links() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// The size the flow map really has: a pinned one keeps the size it was made with.
fn flow_capacity(ebpf: &Ebpf) -> Option<u32> {
    match ebpf.map(FLOWS)? {
        aya::maps::Map::LruHashMap(data) => data.info().ok().map(|info| info.max_entries()),
        _ => None,
    }
}

/// Moves the link an earlier agent pinned at `path` to this agent's program
/// (BPF_LINK_UPDATE, through `update`): packets are counted throughout.
/// `None` when there is no such link on this interface: a stale pin (the
/// interface was recreated, or the link detached) is removed, to attach afresh.
fn take_over<L>(
    path: &Path,
    ifindex: u32,
    what: &str,
    update: impl FnOnce(L) -> Result<(), ProgramError>,
) -> Option<Result<(), KernelError>>
where
    L: TryFrom<FdLink, Error = LinkError>,
{
    if !path.exists() {
        return None;
    }
    match pins::link_ifindex(path) {
        Ok(index) if index == ifindex => {}
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            return None;
        }
        Err(e) => return Some(Err(at(format!("reading the pinned link {}", path.display()))(e))),
    }
    Some(
        PinnedLink::from_pin(path)
            .map_err(at(format!("opening the pinned {what} link")))
            .and_then(|pinned| L::try_from(FdLink::from(pinned)).map_err(at(format!("the pinned {what} link"))))
            .and_then(|link| update(link).map_err(at(format!("updating the pinned {what} link")))),
    )
}

/// The XDP modes `--xdp-mode` tries, in order, with their names.
pub fn xdp_modes(mode: XdpModeArg) -> &'static [(XdpMode, &'static str)] {
    match mode {
        XdpModeArg::Native => &[(XdpMode::Driver, "native")],
        XdpModeArg::Generic => &[(XdpMode::Skb, "generic")],
        XdpModeArg::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
    }
}

fn attach_xdp(program: &mut Xdp, iface: &str, mode: XdpModeArg) -> Result<(XdpLinkId, &'static str), Failure> {
    let (last, earlier) = xdp_modes(mode).split_last().expect("every --xdp-mode tries a mode");
    for (xdp_mode, name) in earlier {
        match attach_mode(program, iface, *xdp_mode, name) {
            Ok(link) => return Ok((link, name)),
            Err(failure) => {
                warn!(iface, error = %failure, "{name} XDP is not available; falling back to {} XDP", last.1)
            }
        }
    }
    Ok((attach_mode(program, iface, last.0, last.1)?, last.1))
}

/// Pins the new link, so that it outlives this process.
fn pin_xdp(program: &mut Xdp, link: XdpLinkId, path: &Path) -> Result<(), KernelError> {
    let link = program.take_link(link).map_err(at("the XDP link"))?;
    let link = FdLink::try_from(link).map_err(at("the XDP link"))?;
    link.pin(path).map(drop).map_err(at(format!("pinning the XDP link at {}", path.display())))
}

/// Another program on the interface's XDP hook is left alone, unless
/// `--replace` says to remove it.
fn refuse_foreign_xdp(iface: &str, replace: bool) -> Result<(), Failure> {
    let Some(mut other) = xdp_hook::attached(iface) else {
        return Ok(());
    };
    // A link whose pin was just removed (an agent stopped a moment ago) is
    // released after an RCU grace period: give sipflow's own program a second to go.
    let mut waited = 0;
    while other.name.as_deref() == Some(XDP_PROGRAM) && waited < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
        match xdp_hook::attached(iface) {
            Some(still) => other = still,
            None => return Ok(()),
        }
    }
    if !replace {
        return Err(Failure::OtherXdp { iface: iface.to_string(), program: other.describe() });
    }
    warn!(iface, program = %other.describe(), "--replace: removing the XDP program attached before");
    xdp_hook::remove(iface, &other).map_err(|e| Failure::Attach {
        iface: iface.to_string(),
        mode: "--replace",
        source: at("--replace")(e),
    })
}

fn attach_mode(program: &mut Xdp, iface: &str, mode: XdpMode, name: &'static str) -> Result<XdpLinkId, Failure> {
    program.attach(iface, mode).map_err(|e| Failure::Attach {
        iface: iface.to_string(),
        mode: name,
        source: at("attaching")(e),
    })
}

fn configure_ports(ebpf: &mut Ebpf, ports: &SipPorts) -> Result<(), KernelError> {
    if ports.plain.len() + ports.tls.len() + ports.ws.len() > MAX_SIP_PORTS as usize {
        return Err(KernelError::TooManyPorts);
    }
    let map = ebpf.map_mut(SIP_PORTS).ok_or_else(|| KernelError::missing_map(SIP_PORTS))?;
    let mut map: Array<_, u8> = Array::try_from(map).map_err(at(SIP_PORTS))?;
    let mut wanted = vec![0u8; PORTS as usize];
    for (list, kind) in [(&ports.plain, PortKind::Plain), (&ports.tls, PortKind::Tls), (&ports.ws, PortKind::Ws)] {
        for port in list {
            wanted[usize::from(*port)] = kind as u8;
        }
    }
    // A pinned map still holds the ports an earlier agent set: clear those no longer wanted.
    let stale: Vec<u32> = map
        .iter()
        .enumerate()
        .filter_map(|(port, kind)| {
            let kind = kind.ok()?;
            (kind != 0 && wanted[port] == 0).then_some(port as u32)
        })
        .collect();
    for port in stale {
        map.set(port, 0, 0).map_err(at(SIP_PORTS))?;
    }
    for (port, kind) in wanted.into_iter().enumerate().filter(|(_, kind)| *kind != 0) {
        map.set(port as u32, kind, 0).map_err(at(SIP_PORTS))?;
    }
    Ok(())
}

/// The verifier's log is long; its last lines say why it refused.
impl Attached {
    /// Also attaches the TC egress program, so the host's own responses, pongs,
    /// FINs and RSTs reach the same flows. Its link is pinned like XDP's.
    pub fn attach_egress(&mut self) -> Result<(), Failure> {
        let iface = self.iface.clone();
        let failure = |source: KernelError| Failure::Attach { iface: iface.clone(), mode: "TC egress", source };
        install_followers(&mut self.ebpf, TC_FOLLOW_PROGRAMS, FOLLOW_TC).map_err(failure)?;
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(TC_EGRESS_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| failure(KernelError::missing_program(TC_EGRESS_PROGRAM)))?;
        program.load().map_err(|e| failure(KernelError::verifier(TC_EGRESS_PROGRAM)(e)))?;
        let path = self.pins.link(TC_LINK);
        let taken = take_over(&path, self.ifindex, "TC", |link: SchedClassifierLink| {
            program.attach_to_link(link).and_then(|id| program.take_link(id)).map(drop)
        });
        let taken = match taken {
            Some(result) => result.map(|()| true).map_err(failure)?,
            None => false,
        };
        if !taken {
            // Kernels before 6.6 attach through the clsact qdisc; it may be there already.
            let _ = tc::qdisc_add_clsact(&self.iface);
            let id = program.attach(&self.iface, TcAttachType::Egress).map_err(|e| failure(at("attaching")(e)))?;
            if tcx_links() {
                // A TCX link is pinned, like XDP's.
                let link = program.take_link(id).map_err(|e| failure(at("the TC link")(e)))?;
                let link = FdLink::try_from(link).map_err(|e| failure(at("the TC link")(e)))?;
                link.pin(&path).map(drop).map_err(|e| failure(at(format!("pinning at {}", path.display()))(e)))?;
            } else {
                // An older kernel's tc filter is no BPF link: the program keeps it,
                // and it goes when the agent does (aya detaches it on drop).
                warn!(
                    iface = self.iface,
                    "TC egress is a tc filter on this kernel (before 6.6): it detaches with the agent"
                );
            }
        }
        info!(iface = self.iface, taken_over = taken, "attached TC egress program");
        self.egress = true;
        Ok(())
    }

    /// The TC egress link an earlier agent pinned, when this one runs without
    /// --egress: removing the pin detaches it.
    pub fn drop_stale_egress(&self) {
        let path = self.pins.link(TC_LINK);
        if !self.egress && path.exists() && std::fs::remove_file(&path).is_ok() {
            info!(iface = self.iface, "detached the TC egress program of an earlier run (no --egress now)");
        }
    }

    /// Reads SIP inside TLS in these SIP server processes, and no others
    /// (see `tls_probes`); returns how many are read. Nothing when TLS is not read.
    pub fn follow_sip_servers(&mut self, servers: &BTreeMap<u32, SipServer>) -> Option<usize> {
        let tls = self.tls.as_mut()?;
        tls.follow(&mut self.ebpf, &self.iface, servers);
        Some(tls.processes())
    }

    /// The loaded instance, for taking its other maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches the programs by removing their links' pins, or with `keep`
    /// leaves them attached and counting for the next agent to take over.
    /// The maps stay pinned either way: `sipflow detach` removes those.
    pub fn detach(mut self, keep: bool) {
        if let Some(tls) = self.tls.take() {
            // A newer agent that took the XDP link over took the TLS probes over too.
            let ours = self.ebpf.program(XDP_PROGRAM).and_then(|p| p.info().ok()).map(|info| info.id());
            let taken_over = pins::link_program_id(&self.pins.link(XDP_LINK)).ok() != ours;
            tls.detach(&self.ebpf, &self.pins.dir, keep || taken_over);
        }
        if keep {
            info!(iface = self.iface, pins = %self.pins.dir.display(), "the programs stay attached and counting (--keep-attached)");
            return;
        }
        for (name, what, program) in [(XDP_LINK, "XDP", XDP_PROGRAM), (TC_LINK, "TC egress", TC_EGRESS_PROGRAM)] {
            let path = self.pins.link(name);
            // A newer agent may have taken the link over already: its program is not ours to detach.
            let ours = self.ebpf.program(program).and_then(|p| p.info().ok()).map(|info| info.id());
            if pins::link_program_id(&path).ok() != ours {
                continue;
            }
            if path.exists() {
                match std::fs::remove_file(&path) {
                    Ok(()) => info!(iface = self.iface, "detached {what} program"),
                    Err(e) => warn!(iface = self.iface, error = %e, "detaching {what} failed"),
                }
            }
        }
    }
}
