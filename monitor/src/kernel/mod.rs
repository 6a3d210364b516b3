//! The kernel side, from the agent: the programs' object ([`object`]), loading
//! and attaching them ([`attach`], [`xdp_hook`], [`tls_probes`], [`btf`]),
//! their pins ([`pins`]), and what they report: counters and the flow map
//! ([`maps`]), SIP heads and flow events ([`head_events`]), rare events
//! ([`log`]). [`bpf_syscall`] makes the bpf(2) calls aya has no API for;
//! [`error`] says which step failed and why.

pub mod attach;
pub mod bpf_syscall;
pub mod btf;
pub mod error;
pub mod head_events;
pub mod log;
pub mod maps;
pub mod object;
pub mod pins;
pub mod sip_servers;
pub mod tls_probes;
pub mod xdp_hook;
