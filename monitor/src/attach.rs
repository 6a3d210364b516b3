//! Loads the kernel programs onto an interface: one instance per interface, so
//! each interface has its own maps and counters.

use std::ffi::CString;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ProgramArray},
    programs::{Program, SchedClassifier, TcAttachType, Xdp, XdpMode, tc, tc::SchedClassifierLinkId, xdp::XdpLinkId},
};
use monitor_common::{
    maps::{
        FLOWS, FOLLOW_TC, FOLLOW_XDP, MAX_SIP_PORTS, SIP_PORTS, TC_EGRESS_PROGRAM, TC_FOLLOW_PROGRAMS,
        XDP_FOLLOW_PROGRAMS, XDP_PROGRAM,
    },
    ports::PortKind,
};
use tracing::{info, warn};

use crate::{cli::XdpModeArg, ebpf_object::EBPF_OBJECT, failure::Failure, kernel_maps::KernelCounters};

/// The kernel programs, attached to one interface. Dropping it detaches them.
pub struct Attached {
    pub iface: String,
    /// `native` or `generic`: how XDP runs on this interface.
    pub mode: &'static str,
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    egress: Option<SchedClassifierLinkId>,
}

/// The SIP ports the kernel should treat as SIP, by kind.
pub struct SipPorts {
    pub plain: Vec<u16>,
    pub tls: Vec<u16>,
}

pub fn interface_exists(iface: &str) -> bool {
    CString::new(iface)
        // SAFETY: a valid NUL-terminated string; the call only reads it.
        .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) } != 0)
        .unwrap_or(false)
}

/// Loads the kernel programs (not yet attached) with the SIP ports configured
/// and the flow map sized to `max_flows`.
pub fn load(ports: &SipPorts, max_flows: u32) -> Result<Ebpf, String> {
    if EBPF_OBJECT.is_empty() {
        return Err(Failure::NoKernelObject.to_string());
    }
    let mut ebpf =
        EbpfLoader::new().map_max_entries(FLOWS, max_flows).load(EBPF_OBJECT).map_err(|e| error_chain(&e))?;
    configure_ports(&mut ebpf, ports)?;
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or_else(|| format!("program {XDP_PROGRAM} is missing"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    program.load().map_err(|e| {
        tracing::debug!(log = %error_chain(&e), "the verifier's full answer");
        verifier_reason(&e)
    })?;
    install_followers(&mut ebpf, XDP_FOLLOW_PROGRAMS, FOLLOW_XDP)?;
    Ok(ebpf)
}

/// Loads the programs that walk a TCP segment's further SIP messages and puts
/// them where their entry program tail-calls them, in slot order. Without
/// them, only each segment's first message would be counted.
pub fn install_followers(ebpf: &mut Ebpf, programs: [&str; 2], array: &str) -> Result<(), String> {
    for (slot, name) in programs.into_iter().enumerate() {
        let program = ebpf.program_mut(name).ok_or_else(|| format!("program {name} is missing"))?;
        match program {
            Program::Xdp(p) => p.load(),
            Program::SchedClassifier(p) => p.load(),
            _ => return Err(format!("program {name} has an unexpected type")),
        }
        .map_err(|e| {
            tracing::debug!(log = %error_chain(&e), "the verifier's full answer");
            format!("{name}: {}", verifier_reason(&e))
        })?;
        let fd = program.fd().and_then(|fd| fd.try_clone().map_err(Into::into)).map_err(|e| e.to_string())?;
        let map = ebpf.map_mut(array).ok_or_else(|| format!("map {array} is missing"))?;
        let mut slots = ProgramArray::try_from(map).map_err(|e| e.to_string())?;
        slots.set(slot as u32, &fd, 0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loads, configures and attaches; returns the attachment and its counters.
pub fn attach(
    iface: &str,
    ports: &SipPorts,
    max_flows: u32,
    mode: XdpModeArg,
) -> Result<(Attached, KernelCounters), Failure> {
    if !interface_exists(iface) {
        return Err(Failure::UnknownInterface(iface.to_string()));
    }
    let load_failure = |reason: String| Failure::Load { iface: iface.to_string(), reason };
    let mut ebpf = load(ports, max_flows).map_err(load_failure)?;
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| load_failure(format!("program {XDP_PROGRAM} is missing")))?;
    let (link, used) = match mode {
        XdpModeArg::Native => (attach_mode(program, iface, XdpMode::Driver)?, "native"),
        XdpModeArg::Generic => (attach_mode(program, iface, XdpMode::Skb)?, "generic"),
        XdpModeArg::Auto => match attach_mode(program, iface, XdpMode::Driver) {
            Ok(link) => (link, "native"),
            Err(native) => {
                warn!(iface, error = %native, "native XDP is not available; falling back to generic XDP");
                (attach_mode(program, iface, XdpMode::Skb)?, "generic")
            }
        },
    };
    info!(iface, mode = used, "attached XDP program");
    let counters = KernelCounters::take_from(&mut ebpf).map_err(|e| load_failure(e.to_string()))?;
    Ok((Attached { iface: iface.to_string(), mode: used, ebpf, link: Some(link), egress: None }, counters))
}

fn attach_mode(program: &mut Xdp, iface: &str, mode: XdpMode) -> Result<XdpLinkId, Failure> {
    program.attach(iface, mode).map_err(|e| Failure::Attach {
        iface: iface.to_string(),
        mode: if mode == XdpMode::Driver { "native" } else { "generic" },
        reason: error_chain(&e),
    })
}

fn configure_ports(ebpf: &mut Ebpf, ports: &SipPorts) -> Result<(), String> {
    if ports.plain.len() + ports.tls.len() > MAX_SIP_PORTS as usize {
        return Err(format!("at most {MAX_SIP_PORTS} SIP ports can be monitored"));
    }
    let map = ebpf.map_mut(SIP_PORTS).ok_or("map SIP_PORTS is missing")?;
    let mut map: Array<_, u8> = Array::try_from(map).map_err(|e| e.to_string())?;
    for (list, kind) in [(&ports.plain, PortKind::Plain), (&ports.tls, PortKind::Tls)] {
        for port in list {
            map.set(u32::from(*port), kind as u8, 0).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The verifier's log is long; its last lines say why it refused.
fn verifier_reason(error: &aya::programs::ProgramError) -> String {
    let text = error_chain(error);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" ")
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Attached {
    /// Also attaches the TC egress program, so the host's own responses, pongs,
    /// FINs and RSTs reach the same flows.
    pub fn attach_egress(&mut self) -> Result<(), Failure> {
        let iface = self.iface.clone();
        let failure = |reason: String| Failure::Attach { iface: iface.clone(), mode: "TC egress", reason };
        install_followers(&mut self.ebpf, TC_FOLLOW_PROGRAMS, FOLLOW_TC).map_err(failure)?;
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(TC_EGRESS_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| failure(format!("program {TC_EGRESS_PROGRAM} is missing")))?;
        program.load().map_err(|e| failure(verifier_reason(&e)))?;
        // Kernels before 6.6 attach through the clsact qdisc; it may be there already.
        let _ = tc::qdisc_add_clsact(&self.iface);
        let link = program.attach(&self.iface, TcAttachType::Egress).map_err(|e| failure(error_chain(&e)))?;
        info!(iface = self.iface, "attached TC egress program");
        self.egress = Some(link);
        Ok(())
    }

    /// The loaded instance, for taking its other maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches the programs now, rather than when the value is dropped.
    pub fn detach(mut self) {
        if let (Some(link), Some(program)) = (self.egress.take(), self.ebpf.program_mut(TC_EGRESS_PROGRAM)) {
            let program: Result<&mut SchedClassifier, _> = program.try_into();
            if let Ok(program) = program {
                match program.detach(link) {
                    Ok(()) => info!(iface = self.iface, "detached TC egress program"),
                    Err(e) => warn!(iface = self.iface, error = %e, "detaching TC egress failed"),
                }
            }
        }
        if let (Some(link), Some(program)) = (self.link.take(), self.ebpf.program_mut(XDP_PROGRAM)) {
            let program: Result<&mut Xdp, _> = program.try_into();
            if let Ok(program) = program {
                match program.detach(link) {
                    Ok(()) => info!(iface = self.iface, "detached XDP program"),
                    Err(e) => warn!(iface = self.iface, error = %e, "detaching XDP failed"),
                }
            }
        }
    }
}
