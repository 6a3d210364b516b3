//! Which program, if any, holds an interface's XDP hook: so that sipflow
//! never replaces someone else's program unasked. Asked of the kernel over
//! rtnetlink (RTM_GETLINK's IFLA_XDP), as `ip link` does; the program's id
//! always, its name from bpf(2) when the caller may read it (CAP_SYS_ADMIN).

use std::{convert::Infallible, io, mem::size_of, os::fd::RawFd};

use aya_obj::generated::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_HW_MODE, XDP_FLAGS_SKB_MODE, nlmsgerr_attrs};
use netlink_packet_core::{
    DefaultNla, ErrorMessage, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST,
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, ParseableParametrized,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkMessageBuffer, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// A program attached to an interface's XDP hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpProgram {
    pub id: u64,
    pub name: Option<String>,
    /// `native`, `generic` or `offload` (IFLA_XDP_ATTACHED 1, 2, 3).
    pub mode: &'static str,
}

impl XdpProgram {
    /// "program 42 (`xdp_fw`, generic)".
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("program {} (`{name}`, {})", self.id, self.mode),
            None => format!("program {} ({})", self.id, self.mode),
        }
    }
}

/// The XDP program attached to `iface`, if any. An interface the kernel cannot show has none.
pub fn attached(iface: &str) -> Option<XdpProgram> {
    query(iface).ok().flatten()
}

/// The program on `iface`'s XDP hook as the kernel reports it; an error when
/// the kernel cannot be asked, or has no such interface.
fn query(iface: &str) -> io::Result<Option<XdpProgram>> {
    let link = exchange(RouteNetlinkMessage::GetLink(by_name(iface, Vec::new())), 0)?
        .ok_or_else(|| invalid("the kernel answered RTM_GETLINK with a bare ACK"))?;
    let xdp = xdp_attributes(&link).ok_or_else(|| invalid("the kernel's link has no readable IFLA_XDP"))?;
    Ok(on_hook(&xdp).map(|(id, mode)| XdpProgram { id: id.into(), name: program_name(id), mode }))
}

/// The IFLA_XDP attributes of an RTM_NEWLINK. Read alone rather than with the
/// whole `LinkMessage`, whose parse fails on any one attribute the crate
/// misreads (0.34 fixed one: short IFLA_STATS64 from kernels before 6.9): an
/// unreadable answer must not pass for a free hook.
fn xdp_attributes(link: &[u8]) -> Option<Vec<LinkXdp>> {
    let attributes = link.get(size_of::<LinkMessageBuffer>()..)?;
    let nla = NlasIterator::new(attributes)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == libc::IFLA_XDP)?;
    match LinkAttribute::parse_with_param(&nla, AddressFamily::Unspec) {
        Ok(LinkAttribute::Xdp(xdp)) => Some(xdp),
        _ => None,
    }
}

/// The id and mode of the program on the hook. With several modes at once
/// (XDP_ATTACHED_MULTI), the first as iproute2 lists them: generic, native, offload.
fn on_hook(xdp: &[LinkXdp]) -> Option<(u32, &'static str)> {
    let attached = xdp.iter().find_map(|nla| match nla {
        LinkXdp::Attached(attached) => Some(*attached),
        _ => None,
    })?;
    let mode = match attached {
        XdpAttached::None => return None,
        XdpAttached::Driver => "native",
        XdpAttached::SocketBuffer => "generic",
        XdpAttached::Hardware => "offload",
        XdpAttached::Multiple => {
            return xdp.iter().filter_map(per_mode).min_by_key(|&(rank, ..)| rank).map(|(_, id, mode)| (id, mode));
        }
        _ => "unknown mode",
    };
    let id = xdp.iter().find_map(|nla| match nla {
        LinkXdp::ProgId(id) => Some(*id),
        _ => None,
    })?;
    Some((id, mode))
}

/// A mode's own program id, ranked in iproute2's order.
fn per_mode(nla: &LinkXdp) -> Option<(u8, u32, &'static str)> {
    match *nla {
        LinkXdp::SkbProgId(id) => Some((0, id, "generic")),
        LinkXdp::DrvProgId(id) => Some((1, id, "native")),
        LinkXdp::HwProgId(id) => Some((2, id, "offload")),
        _ => None,
    }
}

/// The program's name. bpf(2) tells it only to CAP_SYS_ADMIN; without it the
/// walk below finds nothing. aya 0.14 has no lookup by id: its walk over the
/// loaded programs, in id order, stops at ours.
fn program_name(id: u32) -> Option<String> {
    let program = aya::programs::loaded_programs().filter_map(Result::ok).find(|program| program.id() == id)?;
    let name = std::str::from_utf8(program.name()).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Why another program could not be taken off the hook.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("cannot ask the kernel over rtnetlink")]
    Netlink(#[source] io::Error),
    #[error(
        "{program} stays attached ({said}); it is probably held by a BPF link: detach it with the tool that attached it"
    )]
    Stays { program: String, said: String },
}

/// Removes a program attached through netlink (`--replace`). One held by a
/// BPF link cannot be removed this way; the kernel says so and we pass it on.
pub fn remove(iface: &str, program: &XdpProgram) -> Result<(), RemoveError> {
    let mode = match program.mode {
        "native" => XDP_FLAGS_DRV_MODE,
        "offload" => XDP_FLAGS_HW_MODE,
        _ => XDP_FLAGS_SKB_MODE,
    };
    let said = match set_hook(iface, -1, mode) {
        // Taking off a mode that holds nothing succeeds too: look again.
        Ok(()) if attached(iface).is_none() => return Ok(()),
        Ok(()) => "no error from the kernel".to_string(),
        Err(Failed::Refused(error)) => error.to_string(),
        Err(Failed::Socket(error)) => return Err(RemoveError::Netlink(error)),
    };
    Err(RemoveError::Stays { program: program.describe(), said })
}

/// Puts program `fd` on `iface`'s hook in the mode `flags` names, or, with fd
/// -1, takes that mode's program off (`ip link set dev IFACE xdpgeneric off`).
fn set_hook(iface: &str, fd: RawFd, flags: u32) -> Result<(), Failed> {
    let xdp = LinkAttribute::Xdp(vec![LinkXdp::Fd(fd), LinkXdp::Flags(flags)]);
    exchange(RouteNetlinkMessage::SetLink(by_name(iface, vec![xdp])), NLM_F_ACK).map(drop)
}

/// A link message that names its interface, as `ip link` sends them: there
/// is no index to resolve first, nor one to go stale in between.
fn by_name(iface: &str, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut link = LinkMessage::default();
    link.attributes.push(name_attribute(iface));
    link.attributes.extend(attributes);
    link
}

/// The attribute that names `iface`, chosen as iproute2 does: the kernel finds
/// names and altnames alike, but a name too long for IFLA_IFNAME (IFNAMSIZ) can
/// only be an altname (up to 127 bytes), which must go in IFLA_ALT_IFNAME.
fn name_attribute(iface: &str) -> LinkAttribute {
    if iface.len() < libc::IFNAMSIZ {
        return LinkAttribute::IfName(iface.to_string());
    }
    let mut altname = iface.as_bytes().to_vec();
    altname.push(0);
    LinkAttribute::Other(DefaultNla::new(libc::IFLA_ALT_IFNAME, altname))
}

/// Where a request failed: on our side of the socket, or in the kernel, which refused it.
#[derive(Debug)]
enum Failed {
    Socket(io::Error),
    Refused(io::Error),
}

impl From<Failed> for io::Error {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Socket(error) | Failed::Refused(error) => error,
        }
    }
}

/// Sends one request to the kernel and reads its answer: the message it
/// sends back, or `None` for an ACK.
fn exchange(request: RouteNetlinkMessage, flags: u16) -> Result<Option<Vec<u8>>, Failed> {
    let socket = open().map_err(Failed::Socket)?;
    let mut message = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    message.header.flags = NLM_F_REQUEST | flags;
    message.header.sequence_number = 1;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(Failed::Socket)?;
    // A socket of our own, in no multicast group: its next datagram is the
    // answer, and the answer to a request that is no dump is one message.
    let (datagram, _) = socket.recv_from_full().map_err(Failed::Socket)?;
    let answer = NetlinkMessage::<Raw>::deserialize(&datagram).map_err(|e| Failed::Socket(invalid(e)))?;
    match answer.payload {
        NetlinkPayload::InnerMessage(Raw(payload)) => Ok(Some(payload)),
        NetlinkPayload::Error(error) if error.code.is_none() => Ok(None),
        NetlinkPayload::Error(error) => Err(Failed::Refused(refusal(answer.header.flags, &error))),
        _ => Err(Failed::Socket(invalid(format!(
            "unexpected answer from the kernel (message type {})",
            answer.header.message_type
        )))),
    }
}

/// A route netlink socket that talks to the kernel alone.
fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    // Best effort, since errors keep their errno without: a refusal then
    // carries the kernel's reason (extended ACK), after our request's header
    // alone rather than the whole request (capped ACK).
    socket.set_ext_ack(true).ok();
    socket.set_cap_ack(true).ok();
    Ok(socket)
}

/// An answer's payload as sent, so that `xdp_attributes` parses only what it reads.
struct Raw(Vec<u8>);

impl NetlinkDeserializable for Raw {
    type Error = Infallible;

    fn deserialize(_: &NetlinkHeader, payload: &[u8]) -> Result<Self, Infallible> {
        Ok(Self(payload.to_vec()))
    }
}

/// The kernel's refusal: its errno, and the reason it gave if it gave one.
fn refusal(flags: u16, error: &ErrorMessage) -> io::Error {
    let errno = error.to_io();
    match ext_ack_reason(flags, &error.header) {
        Some(reason) => io::Error::new(errno.kind(), format!("{errno}: {reason}")),
        None => errno,
    }
}

/// NLMSGERR_ATTR_MSG of an NLMSG_ERROR whose `flags` are `flags`. What
/// follows its errno (`after_errno`) is our request, or its header alone when
/// capped, then the attributes when NLM_F_ACK_TLVS says there are some.
fn ext_ack_reason(flags: u16, after_errno: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        size_of::<libc::nlmsghdr>()
    } else {
        u32::from_ne_bytes(after_errno.get(..4)?.try_into().ok()?) as usize
    };
    let attributes = after_errno.get(echoed.next_multiple_of(4)..)?;
    let message = NlasIterator::new(attributes)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == nlmsgerr_attrs::NLMSGERR_ATTR_MSG as u16)?;
    let reason = String::from_utf8_lossy(message.value()).trim_end_matches('\0').trim().to_string();
    (!reason.is_empty()).then_some(reason)
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_program_on_the_hook() {
        use LinkXdp::*;
        let native = [Attached(XdpAttached::Driver), DrvProgId(523), ProgId(523)];
        assert_eq!(on_hook(&native), Some((523, "native")));
        let generic = [Attached(XdpAttached::SocketBuffer), SkbProgId(527), ProgId(527)];
        assert_eq!(on_hook(&generic), Some((527, "generic")));
        assert_eq!(on_hook(&[Attached(XdpAttached::None)]), None);
        assert_eq!(on_hook(&[]), None);
        // The kernel sends the modes' ids in this order, and no IFLA_XDP_PROG_ID, for MULTI.
        let multi = [DrvProgId(10), HwProgId(11), Attached(XdpAttached::Multiple)];
        assert_eq!(on_hook(&multi), Some((10, "native")));
        let multi = [HwProgId(11), SkbProgId(9), Attached(XdpAttached::Multiple)];
        assert_eq!(on_hook(&multi), Some((9, "generic")));
        assert_eq!(on_hook(&[Attached(XdpAttached::Other(9)), ProgId(3)]), Some((3, "unknown mode")));
    }

    #[test]
    fn reads_the_kernels_reason() {
        let reason = b"Can't replace active BPF XDP link\0";
        let mut after_errno = vec![0u8; 16]; // our request's header, capped
        after_errno.extend(((4 + reason.len()) as u16).to_ne_bytes());
        after_errno.extend((nlmsgerr_attrs::NLMSGERR_ATTR_MSG as u16).to_ne_bytes());
        after_errno.extend(reason);
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        assert_eq!(ext_ack_reason(flags, &after_errno).as_deref(), Some("Can't replace active BPF XDP link"));
        assert_eq!(ext_ack_reason(NLM_F_CAPPED, &after_errno), None);
        assert_eq!(ext_ack_reason(flags, &after_errno[..10]), None);
    }
}
