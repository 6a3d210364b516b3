//! The parsing half of sipflow's kernel side, kept free of maps and helpers so
//! that the same code runs in the XDP program and in host unit tests.
//!
//! One module per protocol layer, each with its byte offsets as named
//! constants; [`packet::parse`] walks them, [`payload::classify`] names what
//! the transport payload is.
#![cfg_attr(not(test), no_std)]

pub mod eth;
pub mod frame;
pub mod framing;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod packet;
pub mod payload;
pub mod sip;
pub mod stun;
pub mod tcp;
#[cfg(test)]
mod test_frames;
pub mod udp;
pub mod websocket;
