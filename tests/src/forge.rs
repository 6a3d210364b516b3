//! Forged TCP segments, as someone off the path sends them: a raw socket in the
//! client's namespace writes a whole IPv4 packet with the client's 4-tuple, so
//! it crosses the veth into the server's XDP program like the client's own
//! segments, while the client's TCP never learns of it. [`Sniffer`] reads the
//! client's real sequence numbers off its interface, so that a test places a
//! forged segment exactly where it wants relative to them (far outside the
//! window, say) instead of hoping a random number misses.

use std::{
    ffi::CString,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::netns::Lab;

/// The control flag a forged segment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// RST alone, as a blind reset attack sends it.
    Rst,
    /// FIN with ACK, as a real close sends it.
    Fin,
    /// SYN alone, as if opening the connection anew (RFC 5961 §4: on an open
    /// connection the host answers it with a challenge ACK and changes nothing).
    Syn,
}

/// One direction of a connection as its last data segment showed it on the wire.
#[derive(Clone, Copy, Debug)]
pub struct WireState {
    /// One past that segment's last byte: the sequence number the peer expects next.
    pub next_seq: u32,
    /// What that segment acknowledged of the other direction.
    pub ack: u32,
    /// The window it advertised (unscaled, as written in the header).
    pub window: u16,
}

/// An IPv4 TCP segment `from` → `to` with sequence number `seq` and no payload,
/// carrying `control` (`ack` is used by [`Control::Fin`] only). Checksums are computed.
pub fn tcp_control(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32, window: u16, control: Control) -> Vec<u8> {
    let tcp = PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64).tcp(from.port(), to.port(), seq, window);
    let tcp = match control {
        Control::Rst => tcp.rst(),
        Control::Fin => tcp.fin().ack(ack),
        Control::Syn => tcp.syn(),
    };
    let mut packet = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut packet, &[]).expect("serialize a TCP segment");
    packet
}

/// An IPv4 TCP segment `from` → `to` carrying `payload` (ACK and PSH set,
/// acknowledging `ack`), as a sender's data segment looks. Checksums are computed.
pub fn tcp_data(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32, window: u16, payload: &[u8]) -> Vec<u8> {
    let tcp = PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64)
        .tcp(from.port(), to.port(), seq, window)
        .ack(ack)
        .psh();
    let mut packet = Vec::with_capacity(tcp.size(payload.len()));
    tcp.write(&mut packet, payload).expect("serialize a TCP segment");
    packet
}

/// An IPv4 UDP datagram `from` → `to` carrying `payload`. Checksums are computed.
pub fn udp_datagram(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp = PacketBuilder::ipv4(from.ip().octets(), to.ip().octets(), 64).udp(from.port(), to.port());
    let mut packet = Vec::with_capacity(udp.size(payload.len()));
    udp.write(&mut packet, payload).expect("serialize a UDP datagram");
    packet
}

/// Sends a whole IPv4 `packet` (header included) from a raw socket in
/// `namespace`: IPPROTO_RAW, so the header is ours and the namespace's routing
/// takes it out of the interface towards its destination.
pub fn send_ipv4(namespace: &str, packet: &[u8]) {
    assert!(packet.len() >= 20 && packet[0] >> 4 == 4, "an IPv4 packet");
    if let Err(e) = RawSender::open(namespace).send(packet) {
        panic!("send a forged packet: {e}");
    }
}

/// A raw socket (IPPROTO_RAW) made in one namespace, that keeps sending there
/// whichever thread uses it: for many forged packets, one socket.
pub struct RawSender {
    socket: OwnedFd,
}

impl RawSender {
    pub fn open(namespace: &str) -> Self {
        Lab::in_namespace(namespace, || {
            // SAFETY: plain socket creation; the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket in {namespace}: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor nobody else owns.
            Self { socket: unsafe { OwnedFd::from_raw_fd(fd) } }
        })
    }

    /// Sends a whole IPv4 `packet` (header included) towards its destination.
    pub fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        assert!(packet.len() >= 20 && packet[0] >> 4 == 4, "an IPv4 packet");
        let destination: [u8; 4] = packet[16..20].try_into().expect("four bytes");
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(destination) },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid buffer and a correctly sized IPv4 address.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == packet.len() => Ok(()),
            Ok(n) => Err(std::io::Error::other(format!("sent {n} of {} bytes", packet.len()))),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }
}

/// A capture of the packets, both directions, on one interface of one
/// namespace (AF_PACKET, SOCK_DGRAM: packets without their link header).
pub struct Sniffer {
    socket: OwnedFd,
}

impl Sniffer {
    /// Starts capturing on `iface` in `namespace`; packets sent before this are not seen.
    pub fn open(namespace: &str, iface: &str) -> Self {
        Lab::in_namespace(namespace, || {
            // ETH_P_ALL, not ETH_P_IP: only "all protocols" sockets get a copy of
            // the packets the namespace sends, and the client's own segments are the point.
            let protocol = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket creation; the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(protocol)) };
            assert!(fd >= 0, "packet socket in {namespace}: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor nobody else owns.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = CString::new(iface).expect("an interface name");
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(index, 0, "no {iface} in {namespace}");
            // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
            let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol;
            address.sll_ifindex = index as i32;
            // SAFETY: a valid socket and a correctly sized link-layer address.
            let bound = unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw const address).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(bound, 0, "bind to {iface}: {}", std::io::Error::last_os_error());
            // Short reads, so that a caller's deadline holds.
            let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
            // SAFETY: a valid socket and a correctly sized option value.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            Self { socket }
        })
    }

    /// The first TCP segment with payload from `from` to `to` captured within
    /// `within`: where its direction stands after it. None if none came.
    pub fn data_segment(&self, from: SocketAddrV4, to: SocketAddrV4, within: Duration) -> Option<WireState> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: a valid socket and buffer.
            let n = unsafe { libc::recv(self.socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue };
            let Ok(packet) = SlicedPacket::from_ip(&buf[..n]) else { continue };
            let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&packet.net, &packet.transport) else {
                continue;
            };
            let header = ip.header();
            let matches = header.source() == from.ip().octets()
                && header.destination() == to.ip().octets()
                && tcp.source_port() == from.port()
                && tcp.destination_port() == to.port();
            if matches && !tcp.payload().is_empty() {
                return Some(WireState {
                    next_seq: tcp.sequence_number().wrapping_add(tcp.payload().len() as u32),
                    ack: tcp.acknowledgment_number(),
                    window: tcp.window_size(),
                });
            }
        }
        None
    }
}
