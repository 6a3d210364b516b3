//! One flow's verdict from what the kernel saw of it (RFC 5626 §4.4, §5.4).
//!
//! Pure: the time is an argument, so every transition is tested with an
//! injected clock.

use std::time::Duration;

use monitor_common::flow::{FlowState, FlowTransport};
use serde::Serialize;

/// Why a flow is considered failed (docs/verdicts.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An RST in either direction on a stream.
    TcpReset,
    /// A FIN: the connection is closing.
    TcpFin,
    /// A client seen keeping its flow alive (CRLF pings, STUN) fell silent (no
    /// ping, no SIP, no STUN) for the keepalive interval plus grace.
    KeepaliveTimeout,
    /// A ping with no pong within the pong timeout (RFC 5626 §4.4.1), where the server side is seen.
    PongTimeout,
    /// A STUN Binding request unanswered past its retransmissions (RFC 5626 §4.4.2).
    StunTimeout,
    /// A STUN error response to a keepalive.
    StunError,
    /// The same AOR + instance + reg-id registered again over another flow (RFC 5626 §6).
    Replaced,
    /// A zombie TCP flow: the server sent data the client did not acknowledge
    /// within the ack timeout (the larger of `--ack-timeout` and 4 x the flow's
    /// smoothed RTT), as a dead client's would stay. An edge proxy forwarding a
    /// request into it answers 430 only when its transaction timer fires.
    TcpUnacked,
    /// UDP: the server sent a request on the flow and nothing came back from the
    /// client within `--request-timeout`, through its retransmissions (RFC 3261 Timer A/E).
    RequestTimeout,
}

impl Reason {
    pub const ALL: [Self; 9] = [
        Self::TcpReset,
        Self::TcpFin,
        Self::KeepaliveTimeout,
        Self::PongTimeout,
        Self::StunTimeout,
        Self::StunError,
        Self::Replaced,
        Self::TcpUnacked,
        Self::RequestTimeout,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::TcpReset => "tcp_reset",
            Self::TcpFin => "tcp_fin",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::PongTimeout => "pong_timeout",
            Self::StunTimeout => "stun_timeout",
            Self::StunError => "stun_error",
            Self::Replaced => "replaced",
            Self::TcpUnacked => "tcp_unacked",
            Self::RequestTimeout => "request_timeout",
        }
    }
}

/// How long to wait before calling a flow dead.
#[derive(Clone, Debug)]
pub struct Timers {
    /// Keepalive interval on streams when no Flow-Timer was seen (clients ping every 95-120 s).
    pub stream_keepalive: Duration,
    /// Keepalive interval on UDP when no Flow-Timer was seen (clients send STUN every 24-29 s).
    pub udp_keepalive: Duration,
    /// Added to the interval before a silent flow is called dead (RFC 5626 §4.4: "a little more than N").
    pub grace: Duration,
    /// A ping unanswered this long fails the flow (RFC 5626 §4.4.1: 10 s).
    pub pong_timeout: Duration,
    /// A STUN transaction's whole retransmission schedule (RFC 8489 §6.2.1: Rc = 7, RTO = 500 ms, Rm = 16: 39.5 s).
    pub stun_timeout: Duration,
    /// The least time the server's data may wait for the client's acknowledgment;
    /// a flow's own RTT x 4 where that is longer.
    pub ack_timeout: Duration,
    /// How long a request the server sent over UDP may go without a word from the client.
    pub request_timeout: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            stream_keepalive: Duration::from_secs(120),
            udp_keepalive: Duration::from_secs(29),
            grace: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(10),
            stun_timeout: Duration::from_millis(39_500),
            ack_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// The slowest keepalive cadence a client's own quiet can set: RFC 5626's
/// slowest recommended pace (a ping every 120 s on streams). A client quiet for
/// longer once (a network outage) does not push every later verdict out.
pub const MAX_CADENCE: Duration = Duration::from_secs(120);

/// What became of a flow, and when (CLOCK_BOOTTIME ns); the CLI's own
/// `failure::Failure` is what the agent says when it cannot run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FlowFailure {
    pub reason: Reason,
    pub at_ns: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Timers {
    /// The client's keepalive interval as it keeps it. A UA runs its
    /// keepalive timer from its own start, not from the REGISTER, and some
    /// ping less often than the Flow-Timer asks (and are routed to all the
    /// same), so only the gaps between its keepalives tell its pace. Once two
    /// were seen: the Flow-Timer (or the default), or the longest gap seen
    /// where that is longer, up to [`MAX_CADENCE`]; a client picks each
    /// interval between 80 and 100 % of its own (RFC 5626 §4.4.1), so a gap
    /// seen may be the short end, and its interval 5/4 of it (baresip: 16 s
    /// seen once, then 18.8 s). Before that: the Flow-Timer or RFC 5626's
    /// slowest recommended pace (a ping every 120 s), whichever is longer,
    /// whatever `--flow-timer` says, on UDP too (CRLF NAT keepalives come as
    /// slowly as a UA likes): a verdict late in a flow's first cycle rather
    /// than a false one.
    pub fn cadence(&self, transport: FlowTransport, flow_timer: Option<u32>, state: &FlowState) -> Duration {
        let asked = self.keepalive(transport, flow_timer);
        if state.keepalive_gap_ms == 0 {
            return asked.max(MAX_CADENCE);
        }
        let own = Duration::from_millis(u64::from(state.keepalive_gap_ms) * 5 / 4).min(MAX_CADENCE);
        asked.max(own)
    }

    /// How long this flow's server data may wait for an acknowledgment.
    pub fn ack_timeout_for(&self, state: &FlowState) -> Duration {
        self.ack_timeout.max(Duration::from_micros(u64::from(state.srtt_us)) * 4)
    }

    /// The keepalive interval in force: the registrar's Flow-Timer, else the default for the transport.
    pub fn keepalive(&self, transport: FlowTransport, flow_timer: Option<u32>) -> Duration {
        match (flow_timer, transport.is_stream()) {
            (Some(seconds), _) => Duration::from_secs(seconds.into()),
            (None, true) => self.stream_keepalive,
            (None, false) => self.udp_keepalive,
        }
    }
}

/// The client was seen keeping the flow alive (CRLF pings, STUN Binding
/// requests, RFC 5626 §4.4). Only such a flow's silence means anything: many
/// UAs never ping (they re-REGISTER, rely on TCP keepalives, or nothing), and
/// inside TLS no ping can be seen; the Flow-Timer is the registrar's advice,
/// not proof that a silent flow died.
pub fn kept_alive(state: &FlowState) -> bool {
    state.last_ping_ns != 0 || state.last_stun_request_ns != 0
}

/// Valid data went both ways after `at_ns`: a connection that an RST or FIN at
/// `at_ns` had closed could not carry it, so that close was not what it seemed.
pub fn lived_on_after(state: &FlowState, at_ns: u64) -> bool {
    state.last_data_from_client_ns > at_ns && state.last_data_from_server_ns > at_ns
}

/// The flow's failure at `now_ns`, if it has failed; the earliest one when several apply.
///
/// Pong and STUN timeouts need the server's side of the flow to be visible
/// (egress attached, or a tap): without it, a missing answer proves nothing.
/// RST and FIN reach here only as the kernel accepted them (see
/// monitor_common::tcp_sequence): where the host's stack would act on them.
pub fn judge(
    transport: FlowTransport,
    state: &FlowState,
    flow_timer: Option<u32>,
    timers: &Timers,
    now_ns: u64,
) -> Option<FlowFailure> {
    // The earliest failure, kept as they are found: this runs for every flow the agent looks at.
    let mut earliest: Option<FlowFailure> = None;
    ways_to_fail(transport, state, flow_timer, timers, |failure, kind| {
        let happened = kind == Way::Close || now_ns > failure.at_ns;
        if happened && earliest.is_none_or(|f| failure.at_ns < f.at_ns) {
            earliest = Some(failure);
        }
    });
    earliest
}

/// When the flow's verdict can next change with no new packet: its earliest
/// deadline still ahead at `now_ns`. None when only a packet can fail it
/// (a flow that never kept alive and waits for nothing).
pub fn next_deadline(
    transport: FlowTransport,
    state: &FlowState,
    flow_timer: Option<u32>,
    timers: &Timers,
    now_ns: u64,
) -> Option<u64> {
    let mut next: Option<u64> = None;
    ways_to_fail(transport, state, flow_timer, timers, |failure, kind| {
        if kind == Way::Deadline && failure.at_ns >= now_ns && next.is_none_or(|n| failure.at_ns < n) {
            next = Some(failure.at_ns);
        }
    });
    next
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Way {
    /// A packet that failed the flow when it was seen.
    Close,
    /// A wait that fails the flow when its deadline passes with nothing new.
    Deadline,
}

/// Every way the flow fails from what the kernel saw, each with its time:
/// closes at their packet's, waits at their deadline, past or ahead.
fn ways_to_fail(
    transport: FlowTransport,
    state: &FlowState,
    flow_timer: Option<u32>,
    timers: &Timers,
    mut each: impl FnMut(FlowFailure, Way),
) {
    let mut fail = |reason, at_ns: u64, way| each(FlowFailure { reason, at_ns }, way);
    let server_seen = state.packets_from_server > 0;

    if transport.is_stream() {
        if state.rst_ns != 0 && !lived_on_after(state, state.rst_ns) {
            fail(Reason::TcpReset, state.rst_ns, Way::Close);
        }
        let fin = [state.fin_from_client_ns, state.fin_from_server_ns].into_iter().filter(|t| *t != 0).min();
        if let Some(at) = fin.filter(|at| !lived_on_after(state, *at)) {
            fail(Reason::TcpFin, at, Way::Close);
        }
        if server_seen && state.unanswered_ping_ns != 0 {
            fail(Reason::PongTimeout, state.unanswered_ping_ns + ns(timers.pong_timeout), Way::Deadline);
        }
        if state.server_unacked_since_ns != 0 {
            // Evidence a slow but live phone does not give: silence past the
            // longest paging delay, while the server's own stack, too, found
            // nothing came back and sent its data again; without a
            // retransmission seen, twice as long.
            let timeout = timers.ack_timeout_for(state);
            let waited = if state.server_retransmissions == 0 { timeout * 2 } else { timeout };
            let deadline = state.server_unacked_since_ns + ns(waited);
            if !lived_on_after(state, deadline) {
                fail(Reason::TcpUnacked, deadline, Way::Deadline);
            }
        }
    } else {
        let waiting = state.server_request_unanswered_ns;
        if waiting != 0 && state.client_unreachable_ns >= waiting {
            // The client's host said nobody listens: the same verdict, two seconds sooner.
            fail(Reason::RequestTimeout, state.client_unreachable_ns, Way::Close);
        }
        if state.server_request_unanswered_ns != 0 {
            fail(
                Reason::RequestTimeout,
                state.server_request_unanswered_ns + ns(timers.request_timeout),
                Way::Deadline,
            );
        }
        if state.last_stun_error_ns != 0 && state.last_stun_error_ns >= state.last_stun_response_ns {
            fail(Reason::StunError, state.last_stun_error_ns, Way::Close);
        }
        if server_seen && state.unanswered_stun_ns != 0 {
            fail(Reason::StunTimeout, state.unanswered_stun_ns + ns(timers.stun_timeout), Way::Deadline);
        }
    }

    if kept_alive(state) {
        let deadline = state.last_client_activity_ns + ns(timers.cadence(transport, flow_timer, state) + timers.grace);
        fail(Reason::KeepaliveTimeout, deadline, Way::Deadline);
    }
}

/// Whether a failed flow has come back: new client activity on a UDP flow
/// after it failed (a TCP connection never comes back).
pub fn came_back(transport: FlowTransport, state: &FlowState, failure: &FlowFailure) -> bool {
    !transport.is_stream()
        && failure.reason != Reason::Replaced
        && failure.reason != Reason::StunError
        && state.last_client_activity_ns > failure.at_ns
}

/// Whether a verdict on a stream was wrong: after an RST, FIN or
/// unacknowledged data, the connection carried valid data both ways (see
/// [`lived_on_after`]); after a keepalive or pong timeout, the client showed
/// life again (a keepalive, a SIP message) and, for a pong timeout, the
/// server answered it. A retraction is a false alarm, counted as one.
pub fn retracted(transport: FlowTransport, state: &FlowState, failure: &FlowFailure) -> bool {
    if !transport.is_stream() {
        return false;
    }
    match failure.reason {
        Reason::TcpReset | Reason::TcpFin | Reason::TcpUnacked => lived_on_after(state, failure.at_ns),
        Reason::KeepaliveTimeout => closed_at(state).is_none() && state.last_client_activity_ns > failure.at_ns,
        Reason::PongTimeout => {
            closed_at(state).is_none() && state.unanswered_ping_ns == 0 && state.last_pong_ns > failure.at_ns
        }
        _ => false,
    }
}

/// When the connection was closed, by an RST or FIN the host took.
fn closed_at(state: &FlowState) -> Option<u64> {
    [state.rst_ns, state.fin_from_client_ns, state.fin_from_server_ns].into_iter().filter(|t| *t != 0).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn fresh(at: u64) -> FlowState {
        FlowState::new(at)
    }

    fn timers() -> Timers {
        Timers::default()
    }

    /// A client that keeps its flow alive, seen pinging often (its cadence
    /// learnt, and short), last heard from at `at`.
    fn pinging(first: u64, at: u64) -> FlowState {
        let mut s = fresh(first);
        s.last_ping_ns = at;
        s.last_client_activity_ns = at;
        s.keepalive_gap_ms = 1;
        s
    }

    #[test]
    fn a_pinging_stream_stays_alive() {
        let mut s = fresh(S);
        for t in (S..600 * S).step_by(100 * S as usize) {
            s.last_client_activity_ns = t;
            s.last_ping_ns = t;
            assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), t + 50 * S), None);
        }
    }

    #[test]
    fn silence_past_flow_timer_and_grace_is_keepalive_timeout() {
        let s = pinging(S, 2 * S);
        let t = timers();
        // Flow-Timer 25 + grace 10: dead after 37 s, not before.
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(25), &t, 37 * S), None);
        let f = judge(FlowTransport::Tcp, &s, Some(25), &t, 37 * S + 1).unwrap();
        assert_eq!(f, FlowFailure { reason: Reason::KeepaliveTimeout, at_ns: 37 * S });
        // Without Flow-Timer: 120 s on streams, 29 s on UDP.
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &t, 100 * S), None);
        assert!(judge(FlowTransport::Tcp, &s, None, &t, 133 * S).is_some());
        assert_eq!(judge(FlowTransport::Udp, &s, None, &t, 41 * S), None);
        assert_eq!(judge(FlowTransport::Udp, &s, None, &t, 42 * S).unwrap().reason, Reason::KeepaliveTimeout);
    }

    #[test]
    fn a_flow_never_kept_alive_is_never_failed_by_silence() {
        // A UA that registers and never pings (baresip), a scanner's REGISTER, a TLS flow.
        let mut s = fresh(5 * S);
        s.last_client_activity_ns = 6 * S;
        s.last_sip_ns = 6 * S;
        for transport in [FlowTransport::Udp, FlowTransport::Tcp, FlowTransport::Tls] {
            assert_eq!(judge(transport, &s, Some(5), &timers(), 10_000 * S), None);
        }
        assert!(!kept_alive(&s));
        // Once it pings (twice: its pace), its silence counts from its last sign of life.
        s.last_ping_ns = 7 * S;
        s.last_client_activity_ns = 7 * S;
        s.keepalive_gap_ms = 1_000;
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(5), &timers(), 23 * S).unwrap().at_ns, 22 * S);
    }

    #[test]
    fn an_rst_or_fin_followed_by_data_both_ways_is_no_failure() {
        let mut s = fresh(S);
        s.rst_ns = 3 * S;
        s.last_data_from_client_ns = 4 * S;
        assert!(judge(FlowTransport::Tcp, &s, None, &timers(), 5 * S).is_some(), "one way is not enough");
        s.last_data_from_server_ns = 4 * S;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 5 * S), None);
        let failure = FlowFailure { reason: Reason::TcpReset, at_ns: 3 * S };
        assert!(retracted(FlowTransport::Tcp, &s, &failure));
        let mut s = fresh(S);
        s.fin_from_client_ns = 3 * S;
        assert!(!retracted(FlowTransport::Tcp, &s, &FlowFailure { reason: Reason::TcpFin, at_ns: 3 * S }));
        s.last_data_from_client_ns = 5 * S;
        s.last_data_from_server_ns = 5 * S;
        assert!(retracted(FlowTransport::Tcp, &s, &FlowFailure { reason: Reason::TcpFin, at_ns: 3 * S }));
        s.last_client_activity_ns = 5 * S;
        assert!(
            !retracted(FlowTransport::Tcp, &s, &FlowFailure { reason: Reason::KeepaliveTimeout, at_ns: 3 * S }),
            "a closed connection does not come back"
        );
    }

    #[test]
    fn a_stream_that_shows_life_again_leaves_the_failed_state() {
        // Failed for silence, then it pings again: the verdict was a false alarm.
        let mut s = pinging(S, 10 * S);
        let silence = FlowFailure { reason: Reason::KeepaliveTimeout, at_ns: 40 * S };
        assert!(!retracted(FlowTransport::Tcp, &s, &silence));
        s.last_client_activity_ns = 41 * S;
        assert!(retracted(FlowTransport::Tls, &s, &silence));
        // Failed for an unanswered ping, then the pong comes late.
        let mut s = pinging(S, 10 * S);
        s.unanswered_ping_ns = 10 * S;
        let no_pong = FlowFailure { reason: Reason::PongTimeout, at_ns: 20 * S };
        assert!(!retracted(FlowTransport::Tcp, &s, &no_pong));
        s.unanswered_ping_ns = 0;
        s.last_pong_ns = 21 * S;
        assert!(retracted(FlowTransport::Tcp, &s, &no_pong));
        // UDP comes back instead (see `came_back`).
        assert!(!retracted(FlowTransport::Udp, &s, &no_pong));
    }

    #[test]
    fn a_uas_own_keepalive_timer_is_learnt_from_its_pings_not_from_its_register() {
        // Flow-Timer 25, grace 2: a UA that pings every 30 s from its own start,
        // whose first ping lands anywhere in its cycle after the REGISTER.
        let t = Timers { grace: Duration::from_secs(2), ..timers() };
        for first_ping_s in [1, 10, 29] {
            let mut s = fresh(S);
            s.last_register_ns = S;
            let mut last = 0;
            for n in 0..6u64 {
                let at = (1 + first_ping_s + 30 * n) * S;
                // Just before each ping the flow is healthy.
                s.last_client_activity_ns = s.last_client_activity_ns.max(S);
                assert_eq!(
                    judge(FlowTransport::Tcp, &s, Some(25), &t, at - 1),
                    None,
                    "first ping at {first_ping_s} s, ping {n}"
                );
                if last != 0 {
                    s.keepalive_gap_ms = s.keepalive_gap_ms.max(((at - last) / 1_000_000) as u32);
                }
                s.last_ping_ns = at;
                s.last_client_activity_ns = at;
                last = at;
            }
            // Silent after its last ping: failed past its own 30 s x 5/4 and grace.
            let dead = last + 37_500_000_000 + 2 * S;
            assert_eq!(judge(FlowTransport::Tcp, &s, Some(25), &t, dead + 1).unwrap().at_ns, dead);
        }
    }

    #[test]
    fn rst_and_fin_fail_streams_at_once() {
        let mut s = fresh(S);
        s.last_client_activity_ns = 2 * S;
        s.rst_ns = 3 * S;
        assert_eq!(
            judge(FlowTransport::Tcp, &s, None, &timers(), 3 * S),
            Some(FlowFailure { reason: Reason::TcpReset, at_ns: 3 * S })
        );
        let mut s = fresh(S);
        s.fin_from_client_ns = 4 * S;
        assert_eq!(judge(FlowTransport::Tls, &s, None, &timers(), 4 * S).unwrap().reason, Reason::TcpFin);
        let mut s = fresh(S);
        s.fin_from_server_ns = 4 * S;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 4 * S).unwrap().reason, Reason::TcpFin);
    }

    #[test]
    fn the_earliest_failure_wins() {
        let mut s = pinging(S, S);
        s.rst_ns = 200 * S;
        // Silent since 1 s: the keepalive timeout (131 s) came before the RST.
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 201 * S).unwrap().reason, Reason::KeepaliveTimeout);
    }

    #[test]
    fn pong_timeout_needs_the_server_side() {
        let mut s = fresh(S);
        s.last_client_activity_ns = 10 * S;
        s.unanswered_ping_ns = 10 * S;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 30 * S), None, "no server side seen: unknown");
        s.packets_from_server = 3;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 20 * S), None, "10 s not yet over");
        assert_eq!(
            judge(FlowTransport::Tcp, &s, None, &timers(), 20 * S + 1),
            Some(FlowFailure { reason: Reason::PongTimeout, at_ns: 20 * S })
        );
        s.unanswered_ping_ns = 0;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 30 * S), None, "answered");
    }

    #[test]
    fn stun_timeout_and_error_on_udp() {
        let mut s = fresh(S);
        s.last_client_activity_ns = 20 * S;
        s.unanswered_stun_ns = 10 * S;
        s.packets_from_server = 1;
        assert_eq!(judge(FlowTransport::Udp, &s, Some(60), &timers(), 49 * S), None);
        assert_eq!(judge(FlowTransport::Udp, &s, Some(60), &timers(), 50 * S).unwrap().reason, Reason::StunTimeout);

        let mut s = fresh(S);
        s.last_client_activity_ns = 20 * S;
        s.last_stun_error_ns = 21 * S;
        s.last_stun_response_ns = 21 * S;
        assert_eq!(judge(FlowTransport::Udp, &s, None, &timers(), 22 * S).unwrap().reason, Reason::StunError);
        s.last_stun_response_ns = 25 * S;
        assert_eq!(judge(FlowTransport::Udp, &s, None, &timers(), 26 * S), None, "a later success clears it");
    }

    #[test]
    fn udp_comes_back_tcp_does_not() {
        let mut s = fresh(S);
        let failure = FlowFailure { reason: Reason::KeepaliveTimeout, at_ns: 40 * S };
        s.last_client_activity_ns = 50 * S;
        assert!(came_back(FlowTransport::Udp, &s, &failure));
        assert!(!came_back(FlowTransport::Tcp, &s, &failure));
        s.last_client_activity_ns = 30 * S;
        assert!(!came_back(FlowTransport::Udp, &s, &failure));
        let replaced = FlowFailure { reason: Reason::Replaced, at_ns: 40 * S };
        s.last_client_activity_ns = 50 * S;
        assert!(!came_back(FlowTransport::Udp, &s, &replaced));
    }

    #[test]
    fn server_data_unacknowledged_past_the_ack_timeout_is_a_zombie() {
        let mut s = fresh(S);
        s.server_unacked_since_ns = 10 * S;
        s.server_retransmissions = 2;
        // Never kept alive (baresip): silence alone would not fail it; this is evidence.
        // A phone whose radio sleeps acknowledges within 3 s of paging: not failed.
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 12_600_000_000), None, "a phone waking up");
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 13 * S), None, "3 s not yet over");
        assert_eq!(
            judge(FlowTransport::Tcp, &s, None, &timers(), 13 * S + 1),
            Some(FlowFailure { reason: Reason::TcpUnacked, at_ns: 13 * S })
        );
        // Where the server's stack was not seen sending again: twice as long.
        s.server_retransmissions = 0;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 15 * S), None);
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 16 * S + 1).unwrap().at_ns, 16 * S);
        // A slow path: 4 x its 900 ms RTT.
        s.server_retransmissions = 1;
        s.srtt_us = 900_000;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 13_500_000_000), None);
        assert_eq!(judge(FlowTransport::Tls, &s, None, &timers(), 14 * S).unwrap().at_ns, 13_600_000_000);
        // Acknowledged: nothing.
        s.server_unacked_since_ns = 0;
        assert_eq!(judge(FlowTransport::Tcp, &s, None, &timers(), 20 * S), None);
    }

    #[test]
    fn a_udp_request_from_the_server_with_nothing_back_times_out() {
        let mut s = fresh(S);
        s.server_request_unanswered_ns = 5 * S;
        assert_eq!(judge(FlowTransport::Udp, &s, None, &timers(), 7 * S), None);
        assert_eq!(judge(FlowTransport::Udp, &s, None, &timers(), 7 * S + 1).unwrap().reason, Reason::RequestTimeout);
        let failure = FlowFailure { reason: Reason::RequestTimeout, at_ns: 7 * S };
        s.last_client_activity_ns = 8 * S;
        assert!(came_back(FlowTransport::Udp, &s, &failure), "the client spoke again");
    }

    #[test]
    fn a_port_unreachable_quoting_the_request_fails_the_flow_at_once() {
        let mut s = fresh(S);
        s.server_request_unanswered_ns = 5 * S;
        s.client_unreachable_ns = 5_100_000_000;
        assert_eq!(
            judge(FlowTransport::Udp, &s, None, &timers(), 5_100_000_000),
            Some(FlowFailure { reason: Reason::RequestTimeout, at_ns: 5_100_000_000 })
        );
        // One from before this request (the client answered since) says nothing of it.
        s.client_unreachable_ns = 4 * S;
        assert_eq!(judge(FlowTransport::Udp, &s, None, &timers(), 6 * S), None);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_wait_still_ahead() {
        let mut s = pinging(S, 10 * S);
        // Keepalive: Flow-Timer 5 + grace 10 after the last ping.
        assert_eq!(next_deadline(FlowTransport::Tcp, &s, Some(5), &timers(), 11 * S), Some(25 * S));
        // The server's data waiting for an acknowledgment comes first.
        s.server_unacked_since_ns = 12 * S;
        s.server_retransmissions = 1;
        assert_eq!(next_deadline(FlowTransport::Tcp, &s, Some(5), &timers(), 12 * S), Some(15 * S));
        // Past it, the flow has failed and the keepalive one is next.
        assert_eq!(next_deadline(FlowTransport::Tcp, &s, Some(5), &timers(), 16 * S), Some(25 * S));
        // A flow that never kept alive and waits for nothing has no deadline: only a packet can fail it.
        assert_eq!(next_deadline(FlowTransport::Tcp, &fresh(S), None, &timers(), 2 * S), None);
    }

    #[test]
    fn a_client_slower_than_its_flow_timer_is_judged_at_its_own_cadence() {
        // baresip: Flow-Timer 3, but it pings every 16-20 s; its first ping, 19 s after
        // registering, was no gap between two of its pings: the default holds until the second.
        let mut s = pinging(S, 19 * S);
        s.keepalive_gap_ms = 0;
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(3), &timers(), 100 * S), None, "its first cycle");
        s.keepalive_gap_ms = 19_000;
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(3), &timers(), 35 * S), None, "healthy between its pings");
        // 19 s seen may be 80 % of its interval: 23.75 s, then grace 10.
        assert_eq!(
            judge(FlowTransport::Tcp, &s, Some(3), &timers(), 48 * S + 1),
            None,
            "its next interval may be longer"
        );
        let at = 19 * S + 23_750_000_000 + 10 * S;
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(3), &timers(), at + 1).unwrap().at_ns, at);
        // A single long outage does not push verdicts out forever.
        s.keepalive_gap_ms = 3_600_000;
        assert_eq!(judge(FlowTransport::Tcp, &s, Some(3), &timers(), 149 * S + 1).unwrap().at_ns, 149 * S);
    }
}
