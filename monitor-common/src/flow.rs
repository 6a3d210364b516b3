//! A flow as RFC 5626 §2.1 defines it (a TCP connection, or for UDP the pair of
//! address:port of both peers), keyed so that both directions share one entry:
//! the server side is the one on a configured SIP port.

/// How the flow carries SIP.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlowTransport {
    Udp = 1,
    Tcp = 2,
    /// TCP on a TLS port: payload opaque, tracked from TCP flags and timing.
    Tls = 3,
}

impl FlowTransport {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Udp),
            2 => Some(Self::Tcp),
            3 => Some(Self::Tls),
            _ => None,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    pub const fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

use crate::tcp_sequence::TcpSide;

/// Key of the `FLOWS` map. IPv4 addresses sit in the first four bytes.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub server_addr: [u8; 16],
    pub client_addr: [u8; 16],
    pub server_port: u16,
    pub client_port: u16,
    /// Outer VLAN id, 0 when untagged.
    pub vlan_id: u16,
    /// 4 or 6.
    pub family: u8,
    /// A [`FlowTransport`].
    pub transport: u8,
}

impl FlowKey {
    /// All zeroes, to be filled in.
    pub const UNSET: Self = Self {
        server_addr: [0; 16],
        client_addr: [0; 16],
        server_port: 0,
        client_port: 0,
        vlan_id: 0,
        family: 0,
        transport: 0,
    };
}

/// `FlowState::last_method` before any request was seen.
pub const NO_METHOD: u8 = u8::MAX;

/// Value of the `FLOWS` map: what the kernel saw of a flow. Times are
/// CLOCK_BOOTTIME nanoseconds (`bpf_ktime_get_boot_ns`), 0 for never.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FlowState {
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// The client's last sign of life as RFC 5626 counts it: a SIP message, a ping or a STUN request.
    pub last_client_activity_ns: u64,
    /// Last SIP message in either direction.
    pub last_sip_ns: u64,
    pub last_ping_ns: u64,
    pub last_pong_ns: u64,
    /// The oldest ping not yet followed by a pong, 0 when all were answered.
    pub unanswered_ping_ns: u64,
    pub last_stun_request_ns: u64,
    pub last_stun_response_ns: u64,
    /// The oldest STUN request not yet answered, 0 when all were answered.
    pub unanswered_stun_ns: u64,
    pub last_stun_error_ns: u64,
    pub fin_from_client_ns: u64,
    pub fin_from_server_ns: u64,
    pub rst_ns: u64,
    /// The last REGISTER on the flow: final responses for a transaction's
    /// lifetime after it go to the agent, which pairs them by CSeq.
    pub last_register_ns: u64,
    /// The last payload each side sent in order (not retransmitted, not after a
    /// gap): valid traffic, what shows an RST or FIN verdict was wrong.
    pub last_data_from_client_ns: u64,
    pub last_data_from_server_ns: u64,
    /// Since when data the server sent waits for the client's acknowledgment
    /// (0: all acknowledged): a zombie flow's sign (RFC 5626 §5.3.1 flows
    /// whose client is gone while the connection looks open).
    pub server_unacked_since_ns: u64,
    /// UDP: a request the server sent on the flow, with nothing from the client since (0: none).
    pub server_request_unanswered_ns: u64,
    /// UDP: when the client's host answered the server's waiting request with
    /// an ICMP port unreachable that quotes it (0: never): the UA is gone.
    pub client_unreachable_ns: u64,
    pub packets_from_client: u64,
    pub packets_from_server: u64,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    /// STUN requests since the last response (retransmissions included).
    pub stun_unanswered: u32,
    /// Smoothed round-trip time from the server's data to the client's
    /// acknowledgment, in microseconds (RFC 6298's 1/8 gain; 0: no sample yet).
    pub srtt_us: u32,
    /// The longest gap between two keepalives of the client's (pings, or STUN
    /// requests), in milliseconds: its own cadence, which may be slower than
    /// the Flow-Timer it was granted (baresip pings every 16-20 s whatever it
    /// is told); 0 until two were seen.
    pub keepalive_gap_ms: u32,
    pub last_status: u16,
    /// A `Method` index, or [`NO_METHOD`].
    pub last_method: u8,
    /// Every TCP flag seen on the flow, OR-ed.
    pub tcp_flags: u8,
    /// Each side's TCP sequence space, as the host's stack would check a close against it.
    pub tcp_client: TcpSide,
    pub tcp_server: TcpSide,
    /// The peer table (`maps::PEER_TABLE`) `peer` was looked up in; 0: none yet.
    /// A flow met again under another table looks its peer up again.
    pub peer_table: u32,
    /// The client's peer (`--peer`), 1-based in the agent's order; 0: none named.
    pub peer: u8,
    /// How often the server's stack sent its data again while it waited for
    /// the client's acknowledgment: its own word that nothing came back.
    pub server_retransmissions: u8,
    /// UDP: the length of the last request the server sent on the flow, which
    /// a port unreachable must quote to count (a forger would have to know it).
    pub server_request_udp_len: u16,
    /// Each side's WebSocket framing (RFC 6455 §5.2), on a `--ws-port` or in wss plaintext.
    pub ws_client: WsSide,
    pub ws_server: WsSide,
}

/// `WsSide::known`: `next_head` holds where a frame starts.
pub const WS_FRAMED: u8 = 1;

/// Where one side's next WebSocket frame starts. A frame may be longer than a
/// segment (a WebRTC SDP), so the bytes at a segment's start are a frame head
/// only where the last frame ended: elsewhere they are its payload, and a
/// byte 0x89 there is no ping.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct WsSide {
    /// Bytes of plaintext this side sent so far (wss, where there is no TCP
    /// sequence number to place a read by); unused on a `--ws-port`.
    pub position: u32,
    /// The TCP sequence number (ws) or plaintext position (wss) of the next frame head.
    pub next_head: u32,
    /// `WS_FRAMED` once a frame carrying SIP showed where frames start.
    pub known: u8,
    pub _reserved: [u8; 3],
}

impl WsSide {
    pub const UNKNOWN: Self = Self { position: 0, next_head: 0, known: 0, _reserved: [0; 3] };
}

impl FlowState {
    pub const fn new(now_ns: u64) -> Self {
        Self {
            first_seen_ns: now_ns,
            last_seen_ns: now_ns,
            last_client_activity_ns: 0,
            last_sip_ns: 0,
            last_ping_ns: 0,
            last_pong_ns: 0,
            unanswered_ping_ns: 0,
            last_stun_request_ns: 0,
            last_stun_response_ns: 0,
            unanswered_stun_ns: 0,
            last_stun_error_ns: 0,
            fin_from_client_ns: 0,
            fin_from_server_ns: 0,
            rst_ns: 0,
            last_register_ns: 0,
            last_data_from_client_ns: 0,
            last_data_from_server_ns: 0,
            server_unacked_since_ns: 0,
            server_request_unanswered_ns: 0,
            client_unreachable_ns: 0,
            packets_from_client: 0,
            packets_from_server: 0,
            bytes_from_client: 0,
            bytes_from_server: 0,
            stun_unanswered: 0,
            srtt_us: 0,
            keepalive_gap_ms: 0,
            last_status: 0,
            last_method: NO_METHOD,
            tcp_flags: 0,
            tcp_client: TcpSide { next_seq: 0, high_seq: 0, ack: 0, window: 0, known: 0, _reserved: 0 },
            tcp_server: TcpSide { next_seq: 0, high_seq: 0, ack: 0, window: 0, known: 0, _reserved: 0 },
            peer_table: 0,
            peer: 0,
            server_retransmissions: 0,
            server_request_udp_len: 0,
            ws_client: WsSide::UNKNOWN,
            ws_server: WsSide::UNKNOWN,
        }
    }
}

// SAFETY: `FlowKey` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}
// SAFETY: `FlowState` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowState {}
// SAFETY: `WsSide` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for WsSide {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// The kernel and the agent read these bytes alike only while the layout holds.
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(align_of::<FlowKey>(), 2);
        assert_eq!(size_of::<FlowState>(), 24 * 8 + 4 + 4 + 4 + 2 + 1 + 1 + 2 * 16 + 4 + 1 + 1 + 2 + 2 * 12);
        assert_eq!(align_of::<FlowState>(), 8);
    }
}
