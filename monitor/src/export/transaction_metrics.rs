//! The transaction KPIs (docs/metrics.md, "Transactions and calls"): times, repeats
//! and INVITE outcomes by method and peer, from what `transactions` paired.

use monitor_common::counters::Method;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::{
    peers::Peers,
    transactions::{InviteOutcome, Kpi},
};

/// From a few milliseconds on a LAN to Timer B (32 s), and the minutes an
/// INVITE may ring before its final answer.
const TRANSACTION_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

pub struct TransactionMetrics {
    seconds: HistogramVec,
    retransmissions: IntCounterVec,
    invites: IntCounterVec,
    untracked: IntCounter,
    last_untracked: u64,
}

impl TransactionMetrics {
    pub fn new(registry: &Registry) -> Self {
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "sipflow_transaction_seconds",
                "From a request to its first final response on the same flow, by the request's method and the \
                 client's peer (--peer): REGISTER's is RFC 6076's Registration Request Delay.",
            )
            .buckets(TRANSACTION_BUCKETS.to_vec()),
            &["method", "peer"],
        )
        .expect("valid metric");
        let retransmissions = IntCounterVec::new(
            Opts::new(
                "sipflow_retransmissions_total",
                "Requests sent again: over UDP with the branch, Call-ID and CSeq of one still open; over TCP \
                 in a segment the kernel had seen before.",
            ),
            &["method", "peer"],
        )
        .expect("valid metric");
        let invites = IntCounterVec::new(
            Opts::new(
                "sipflow_invites_total",
                "INVITEs outside a dialog by outcome (answered, redirected, challenged, user_busy, no_answer, \
                 rejected, cancelled, failed, timed_out) and the client's peer: ASR and NER as RFC 6076 §4.5, §4.6.",
            ),
            &["outcome", "peer"],
        )
        .expect("valid metric");
        let untracked = IntCounter::new(
            "sipflow_transactions_untracked_total",
            "Requests not paired with their answers because too many transactions were open at once.",
        )
        .expect("valid metric");
        registry.register(Box::new(seconds.clone())).expect("unique metric");
        registry.register(Box::new(retransmissions.clone())).expect("unique metric");
        registry.register(Box::new(invites.clone())).expect("unique metric");
        registry.register(Box::new(untracked.clone())).expect("unique metric");
        let metrics = Self { seconds, retransmissions, invites, untracked, last_untracked: 0 };
        metrics.start_series(&Peers::default());
        metrics
    }

    /// The series rules and dashboards divide exist from the start for every
    /// peer: each INVITE outcome, and INVITE's and REGISTER's times and repeats.
    pub fn start_series(&self, peers: &Peers) {
        for peer in peers.names() {
            for outcome in InviteOutcome::ALL {
                self.invites.with_label_values(&[outcome.label(), peer]).inc_by(0);
            }
            for method in [Method::Invite, Method::Register] {
                self.seconds.with_label_values(&[method.label(), peer]);
                self.retransmissions.with_label_values(&[method.label(), peer]).inc_by(0);
            }
        }
    }

    pub fn record(&mut self, kpis: &[Kpi], peers: &Peers) {
        for kpi in kpis {
            match kpi {
                Kpi::Answered { method, peer, seconds } => {
                    self.seconds.with_label_values(&[method.label(), peers.name(*peer)]).observe(*seconds);
                }
                Kpi::Retransmission { method, peer } => {
                    self.retransmissions.with_label_values(&[method.label(), peers.name(*peer)]).inc();
                }
                Kpi::Invite { outcome, peer } => {
                    self.invites.with_label_values(&[outcome.label(), peers.name(*peer)]).inc();
                }
            }
        }
    }

    /// The untracked requests' total so far.
    pub fn record_untracked(&mut self, total: u64) {
        self.untracked.inc_by(total.saturating_sub(self.last_untracked));
        self.last_untracked = self.last_untracked.max(total);
    }
}
