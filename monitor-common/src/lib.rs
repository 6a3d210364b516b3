//! Types shared by sipflow's kernel programs (monitor-ebpf) and its agent (monitor).
//!
//! Every type here is defined once and read by both sides: the kernel writes
//! counters at the indexes these enums give, the agent reads them back and
//! turns the indexes into metric labels.
#![no_std]

pub mod counters;
pub mod events;
pub mod flow;
pub mod maps;
pub mod ports;
pub mod tcp_sequence;
pub mod tls;
