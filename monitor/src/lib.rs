//! sipflow's agent, in the order a packet's news goes through it.
//!
//! - [`kernel`]: loads the kernel programs onto interfaces, pins what must
//!   outlive the agent, and reads what they counted and sent up (maps, ring
//!   buffers, log records).
//! - [`sip_head`]: parses the SIP heads the kernel hands over.
//! - [`peers`]: the operator's names for the networks clients come from.
//! - [`liveness`]: the RFC 5626 model: flows, bindings, verdicts; [`engine`]
//!   drives it on kernel events and deadlines.
//! - [`transactions`]: requests paired with their answers: transaction
//!   times, retransmissions, call outcomes.
//! - [`export`]: Prometheus metrics and the flow API over HTTP.
//! - [`commands`]: `sipflow run`, `flows`, `check` and `detach`, from the
//!   command line ([`cli`], [`config`]); [`failure`] turns every way of
//!   failing into one plain sentence for the operator.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod engine;
pub mod export;
pub mod failure;
pub mod kernel;
pub mod liveness;
pub mod peers;
pub mod privileges;
pub mod sip_head;
pub mod transactions;
