//! What a SIP-port payload is: a SIP message, an RFC 5626 keepalive, or something else.

use monitor_common::counters::Method;

use crate::{
    frame::Window,
    packet::Transport,
    sip::{self, StartLine},
    stun::{self, Stun},
};

pub const PING: &[u8; 4] = b"\r\n\r\n";
pub const PONG: &[u8; 2] = b"\r\n";
/// Leading CRLF pairs skipped before a start line on a stream (RFC 5626 §3.5.1).
pub const MAX_LEADING_CRLF: usize = 8;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Request(Method),
    Response(u16),
    Ping,
    Pong,
    Stun(Stun),
    Other,
}

impl Payload {
    /// As one number: the kind in the upper half, the method, code or STUN type in the lower.
    #[inline(always)]
    pub const fn encode(self) -> u32 {
        match self {
            Self::Other => 0,
            Self::Request(method) => 1 << 16 | method as u32,
            Self::Response(code) => 2 << 16 | code as u32,
            Self::Ping => 3 << 16,
            Self::Pong => 4 << 16,
            Self::Stun(stun) => 5 << 16 | stun as u32,
        }
    }

    #[inline(always)]
    pub const fn decode(value: u32) -> Self {
        let low = value & 0xffff;
        match value >> 16 {
            1 => Self::Request(Method::from_index(low as usize)),
            2 => Self::Response(low as u16),
            3 => Self::Ping,
            4 => Self::Pong,
            5 => match low {
                0 => Self::Stun(Stun::Request),
                1 => Self::Stun(Stun::Success),
                2 => Self::Stun(Stun::Error),
                _ => Self::Stun(Stun::Other),
            },
            _ => Self::Other,
        }
    }
}

/// `loaded` bytes of the window hold the payload's start; `payload_len` is its full size.
/// On a stream, leading CRLFs must already be skipped ([`leading_crlf`]).
#[inline(always)]
pub fn classify(window: &Window, loaded: usize, payload_len: usize, transport: Transport) -> Payload {
    match transport {
        Transport::Udp => {
            if let Some(kind) = stun::classify(window, loaded, payload_len) {
                return Payload::Stun(kind);
            }
            // Many UAs keep their NAT binding with CRLFCRLF over UDP too, where
            // RFC 5626 §4.4.2 would have STUN: a keepalive all the same.
            if payload_len == PING.len() && starts_with(window, PING) {
                return Payload::Ping;
            }
        }
        Transport::Tcp => {
            if payload_len == PING.len() && starts_with(window, PING) {
                return Payload::Ping;
            }
            if payload_len == PONG.len() && starts_with(window, PONG) {
                return Payload::Pong;
            }
        }
    }
    match sip::start_line(window, loaded) {
        StartLine::Request(method) => Payload::Request(method),
        StartLine::Response(code) => Payload::Response(code),
        StartLine::NotSip => Payload::Other,
    }
}

/// Bytes of CRLF pairs before a stream message's start line (RFC 5626 §3.5.1), at most
/// [`MAX_LEADING_CRLF`] pairs. Zero for a bare ping or pong, which are keepalives themselves.
#[inline(always)]
pub fn leading_crlf(window: &Window, loaded: usize, payload_len: usize) -> usize {
    if payload_len == PING.len() || payload_len == PONG.len() {
        return 0;
    }
    let mut pairs = 0;
    while pairs < MAX_LEADING_CRLF {
        let at = pairs * 2;
        if at + 2 >= loaded || window[at] != b'\r' || window[at + 1] != b'\n' {
            break;
        }
        pairs += 1;
    }
    pairs * 2
}

/// Byte by byte: a slice comparison would become a `bcmp` call BPF does not have.
#[inline(always)]
fn starts_with(window: &Window, prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() {
        if window[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::WINDOW;

    fn run(bytes: &[u8], transport: Transport) -> Payload {
        let load = |bytes: &[u8]| {
            let mut w = [0u8; WINDOW];
            let n = bytes.len().min(WINDOW);
            w[..n].copy_from_slice(&bytes[..n]);
            (w, n)
        };
        let (w, n) = load(bytes);
        let skip = if transport == Transport::Tcp { leading_crlf(&w, n, bytes.len()) } else { 0 };
        let (w, n) = load(&bytes[skip..]);
        classify(&w, n, bytes.len() - skip, transport)
    }

    #[test]
    fn encoding_round_trips() {
        let all = [
            Payload::Other,
            Payload::Request(Method::Register),
            Payload::Request(Method::Other),
            Payload::Response(430),
            Payload::Ping,
            Payload::Pong,
            Payload::Stun(Stun::Request),
            Payload::Stun(Stun::Success),
            Payload::Stun(Stun::Error),
            Payload::Stun(Stun::Other),
        ];
        for p in all {
            assert_eq!(Payload::decode(p.encode()), p);
        }
    }

    #[test]
    fn keepalives_on_streams_and_crlf_pings_on_udp() {
        assert_eq!(run(b"\r\n\r\n", Transport::Tcp), Payload::Ping);
        assert_eq!(run(b"\r\n", Transport::Tcp), Payload::Pong);
        assert_eq!(run(b"\r\n\r\n", Transport::Udp), Payload::Ping);
        assert_eq!(run(b"\r\n", Transport::Udp), Payload::Other);
        assert_eq!(run(b"\r\n\r\n\r\n", Transport::Udp), Payload::Other);
    }

    #[test]
    fn leading_crlf_before_a_message() {
        assert_eq!(run(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\n", Transport::Tcp), Payload::Request(Method::Options));
    }
}
