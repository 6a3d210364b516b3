//! What the agent tells the kernel about each configured SIP port.

/// Value of a `SIP_PORTS` entry.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// SIP in clear text, UDP or TCP (5060 by default).
    Plain = 1,
    /// SIP over TLS (5061 by default): opaque on the wire, tracked at the TCP
    /// level; its plaintext (SIP, or SIP over WebSocket frames) is read from the TLS library.
    Tls = 2,
    /// SIP over WebSocket in clear (RFC 7118, `--ws-port`): frames over TCP.
    Ws = 3,
}

impl PortKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Plain),
            2 => Some(Self::Tls),
            3 => Some(Self::Ws),
            _ => None,
        }
    }
}

pub const DEFAULT_SIP_PORT: u16 = 5060;
pub const DEFAULT_SIPS_PORT: u16 = 5061;
