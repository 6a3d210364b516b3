//! The flow behind a kernel socket: its addresses and ports, read from
//! `struct sock_common` at the offsets the agent found in the kernel's BTF
//! (`SOCK_OFFSETS`). Only sockets whose local port is a SIPS port count: the
//! host is the TLS server there, and the flow's key is the one the XDP and TC
//! programs build from its packets.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use monitor_common::{
    flow::{FlowKey, FlowTransport},
    ports::PortKind,
    tls::SockOffsets,
};

use crate::maps::SIP_PORTS;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// An IPv4 address as a dual-stack socket holds it: ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Set by the agent at load time; `known` stays 0 where it could not read them.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets =
    SockOffsets { daddr: 0, rcv_saddr: 0, dport: 0, num: 0, family: 0, v6_daddr: 0, v6_rcv_saddr: 0, known: 0 };

/// A field of the socket at `offset`.
#[inline(always)]
fn field<T>(sock: u64, offset: u32) -> Option<T> {
    // SAFETY: the helper checks the kernel address and fails rather than fault.
    unsafe { bpf_probe_read_kernel((sock + offset as u64) as *const T) }.ok()
}

/// Fills `key` with the flow of `sock` when its local port is a SIPS port.
#[inline(always)]
pub fn tls_flow(sock: u64, key: &mut FlowKey) -> bool {
    // SAFETY: a read of a constant the loader may have rewritten; volatile so
    // that the compiler does not fold in the default.
    let offsets = unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) };
    if offsets.known == 0 || sock == 0 {
        return false;
    }
    let Some(local_port) = field::<u16>(sock, offsets.num) else {
        return false;
    };
    if SIP_PORTS.get(u32::from(local_port)).copied() != Some(PortKind::Tls as u8) {
        return false;
    }
    let (Some(family), Some(remote_port)) = (field::<u16>(sock, offsets.family), field::<u16>(sock, offsets.dport))
    else {
        return false;
    };
    key.server_port = local_port;
    key.client_port = u16::from_be(remote_port);
    key.vlan_id = 0;
    key.transport = FlowTransport::Tls as u8;
    match family {
        AF_INET => {
            let (Some(local), Some(remote)) =
                (field::<[u8; 4]>(sock, offsets.rcv_saddr), field::<[u8; 4]>(sock, offsets.daddr))
            else {
                return false;
            };
            key.family = 4;
            key.server_addr = ipv4_in_key(local);
            key.client_addr = ipv4_in_key(remote);
            true
        }
        AF_INET6 => {
            let (Some(local), Some(remote)) =
                (field::<[u8; 16]>(sock, offsets.v6_rcv_saddr), field::<[u8; 16]>(sock, offsets.v6_daddr))
            else {
                return false;
            };
            // A dual-stack socket speaking IPv4: its packets carry IPv4 headers.
            if is_v4_mapped(&remote) {
                key.family = 4;
                key.server_addr = ipv4_in_key([local[12], local[13], local[14], local[15]]);
                key.client_addr = ipv4_in_key([remote[12], remote[13], remote[14], remote[15]]);
            } else {
                key.family = 6;
                key.server_addr = local;
                key.client_addr = remote;
            }
            true
        }
        _ => false,
    }
}

/// Whether `sock` is an IPv4 or IPv6 socket (not a Unix one, a netlink one...).
#[inline(always)]
pub fn is_inet(sock: u64) -> bool {
    // SAFETY: a read of a constant the loader may have rewritten (see `tls_flow`).
    let offsets = unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) };
    offsets.known != 0
        && sock != 0
        && field::<u16>(sock, offsets.family).is_some_and(|family| family == AF_INET || family == AF_INET6)
}

/// IPv4 addresses sit in a key's first four bytes (see `FlowKey`).
#[inline(always)]
fn ipv4_in_key([a, b, c, d]: [u8; 4]) -> [u8; 16] {
    [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline(always)]
fn is_v4_mapped(address: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < V4_MAPPED_PREFIX.len() {
        if address[i] != V4_MAPPED_PREFIX[i] {
            return false;
        }
        i += 1;
    }
    true
}
