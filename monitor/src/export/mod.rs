//! What sipflow shows the outside: Prometheus metrics and the HTTP endpoint.

pub mod census;
pub mod flow_view;
pub mod http;
pub mod metrics;
pub mod transaction_metrics;
