//! Every test of sipflow that needs the kernel or the real programs, one
//! module per feature (`cargo test --test suite netns_tls::` runs one).
//!
//! - `kernel_*`: the kernel programs on crafted packets through
//!   BPF_PROG_TEST_RUN, no namespaces.
//! - `netns_*`: the `sipflow` binary on veths in network namespaces, with
//!   real peers and real sockets.
//! - `cli_errors`, `deploy`: the command line's errors, and the operations kit.
//!
//! Each test builds what it uses (a lab's namespaces are named by its tag and
//! the process id, pins and scratch directories by a counter too), so tests
//! of different modules run side by side as those of one module do.

mod cli_errors;
mod deploy;
mod kernel_classify;
mod kernel_flows;
mod kernel_robustness;
mod kernel_tcp_trust;
mod kernel_transactions;
mod netns_api;
mod netns_baresip;
mod netns_egress;
mod netns_kamailio;
mod netns_kernel_log;
mod netns_liveness;
mod netns_real_clients;
mod netns_restart;
mod netns_storm;
mod netns_tap;
mod netns_tls;
mod netns_transactions;
mod netns_trust;
mod netns_udp;
