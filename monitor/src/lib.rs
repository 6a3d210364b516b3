//! sipflow's agent: one module per step of a packet's way through it.
//!
//! [`attach`] loads the kernel programs onto interfaces, [`kernel_maps`] reads
//! what they counted, [`export`] serves it over HTTP; [`run`] ties them
//! together for `sipflow run`. [`failure`] turns every way of failing into one
//! plain sentence for the operator.

pub mod attach;
pub mod bpf_syscall;
pub mod check_command;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detach_command;
pub mod ebpf_object;
pub mod engine;
pub mod export;
pub mod failure;
pub mod flows_command;
pub mod head_events;
pub mod kernel_btf;
pub mod kernel_error;
pub mod kernel_log;
pub mod kernel_maps;
pub mod liveness;
pub mod pins;
pub mod privileges;
pub mod run;
pub mod sip_head;
pub mod tls_probes;
pub mod xdp_hook;
