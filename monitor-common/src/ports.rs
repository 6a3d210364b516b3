//! What the agent tells the kernel about each configured SIP port.

/// Value of a `SIP_PORTS` entry.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// SIP in clear text, UDP or TCP (5060 by default).
    Plain = 1,
    /// SIP over TLS (5061 by default): opaque payload, tracked at the TCP level only.
    Tls = 2,
}

impl PortKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Plain),
            2 => Some(Self::Tls),
            _ => None,
        }
    }
}

pub const DEFAULT_SIP_PORT: u16 = 5060;
pub const DEFAULT_SIPS_PORT: u16 = 5061;
