//! SIP transactions as one hop's wire shows them (RFC 3261 §17): a request
//! paired with its first final response on the same flow, for transaction
//! times (RFC 6076 §4.3 RRD for REGISTER; INVITE to its final response),
//! retransmissions and call outcomes.
//!
//! Kept here, from the heads the kernel sends, and not in a kernel map: the
//! kernel reads a message's first line, but pairing needs the top Via's
//! branch, the Call-ID and `CSeq`, which lie anywhere in a head of hundreds of
//! bytes. Scanning for them byte by byte in XDP would cost more per SIP
//! packet than all of sipflow's kernel work does now; copying the head to the
//! ring buffer costs what the REGISTER path always paid (BENCHMARKS.md §8).
//!
//! What the wire proves: a response answers a request only when it comes
//! from the other end of the same flow with the same branch, Call-ID and
//! `CSeq` (number and method), the way a client transaction matches it
//! (§17.1.3). A response nobody asked for, one sent back by the requester's
//! own side, or one for another flow pairs with nothing; a repeated final
//! response adds no second sample. Identities are kept as keyed hashes
//! (SipHash with this process's random keys): a stranger cannot make two
//! transactions collide.

mod outcome;

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{BuildHasher, RandomState},
};

use monitor_common::{counters::Method, flow::FlowKey, flow::FlowTransport};

pub use outcome::InviteOutcome;

use crate::{
    kernel::head_events::Head,
    sip_head::{SipHead, StartLine},
};

/// RFC 3261's Timer B and Timer F (64 x T1): a client gives up a request
/// unanswered this long after sending it, and stops retransmitting it.
pub const TIMER_B_NS: u64 = 32_000_000_000;
/// RFC 3261 §16.6's Timer C (more than 3 minutes): once an INVITE has a
/// provisional answer its client stops Timer B (§17.1.1.2), and a proxy
/// waits this long for the final answer, restarting it on each provisional
/// other than 100 (§16.7), before it cancels; plus Timer B for the 487.
pub const RINGING_NS: u64 = 180_000_000_000 + TIMER_B_NS;
/// How late a head may reach the engine: heads only the KPIs read are
/// drained every `QUIET_DRAIN` (100 ms), later behind a busy engine. A
/// deadline is judged this much after it passed, so that an answer stamped
/// just before it still counts.
pub const HEADS_LATE_NS: u64 = 1_000_000_000;
/// Open transactions kept at most: a flood of requests nobody answers costs
/// bounded memory, and what does not fit is counted, not paired.
pub const MAX_OPEN: usize = 1 << 18;
/// Answered UDP transactions kept at most, apart, to recognise resends: a
/// busy UDP trunk's answered requests (32 s of them) do not crowd out new
/// ones; past this an answered one is forgotten at once, and a resend of it
/// after its answer would be taken for a new request.
pub const MAX_ANSWERED_KEPT: usize = 1 << 18;

/// What a head told about transactions, for the metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Kpi {
    /// A request's first final response came `seconds` after the request.
    Answered { method: Method, peer: u8, seconds: f64 },
    /// A request was sent again.
    Retransmission { method: Method, peer: u8 },
    /// An INVITE that set up a session (no To tag) ended so.
    Invite { outcome: InviteOutcome, peer: u8 },
}

#[derive(Clone, Copy, Debug)]
struct Transaction {
    method: Method,
    peer: u8,
    opened_ns: u64,
    answered: bool,
    /// An INVITE outside a dialog: its outcome is a call's (a re-INVITE's is not).
    initial: bool,
    /// When it is forgotten: an unanswered INVITE then timed out.
    until_ns: u64,
    /// The time its one live entry in the queue has; a later `until_ns` is
    /// queued when that entry comes up.
    queued_ns: u64,
    /// Over UDP an answered request is kept until its sender would stop
    /// resending it, to recognise a resend whose answer was lost.
    unreliable: bool,
}

/// The transactions open on every flow.
#[derive(Default)]
pub struct Transactions {
    open: HashMap<u64, Transaction>,
    /// One live entry per transaction, at its `queued_ns`; entries of
    /// transactions since forgotten or brought forward are skipped, and the
    /// queue is rebuilt when they outnumber the live ones.
    due: BinaryHeap<Reverse<(u64, u64)>>,
    hasher: RandomState,
    /// Requests not paired because `MAX_OPEN` transactions were open.
    pub untracked: u64,
    /// Answered UDP transactions kept for their resends (within `open`).
    answered_kept: usize,
}

impl Transactions {
    /// Takes one head: a request opens a transaction or repeats one, a final
    /// response closes the one it answers. `instance` tells interfaces apart,
    /// `peer` is the flow's client's peer.
    pub fn on_head(&mut self, instance: usize, head: &Head, parsed: &SipHead, peer: u8) -> Vec<Kpi> {
        let Some(cseq) = &parsed.cseq else {
            return Vec::new();
        };
        let method = method_of(&cseq.method);
        match &parsed.start {
            StartLine::Request { method: line_method, .. } => {
                if *line_method != cseq.method || method == Method::Ack {
                    return Vec::new();
                }
                if head.retransmission {
                    // TCP: the kernel saw this segment before.
                    return vec![Kpi::Retransmission { method, peer }];
                }
                let Some(id) = self.id(instance, &head.key, head.from_client, parsed) else {
                    return Vec::new();
                };
                let initial = method == Method::Invite && !parsed.to_tagged;
                self.on_request(id, method, peer, initial, head)
            }
            StartLine::Response { code, .. } => {
                // Its request came from the other end of the flow.
                let Some(id) = self.id(instance, &head.key, !head.from_client, parsed) else {
                    return Vec::new();
                };
                self.on_response(id, *code, head.timestamp_ns)
            }
        }
    }

    fn on_request(&mut self, id: u64, method: Method, peer: u8, initial: bool, head: &Head) -> Vec<Kpi> {
        if self.open.contains_key(&id) {
            return vec![Kpi::Retransmission { method, peer }];
        }
        if self.open.len() - self.answered_kept >= MAX_OPEN {
            self.untracked += 1;
            return Vec::new();
        }
        let at = head.timestamp_ns;
        let until = at + TIMER_B_NS;
        let unreliable = head.key.transport == FlowTransport::Udp as u8;
        let transaction = Transaction {
            method,
            peer,
            opened_ns: at,
            answered: false,
            initial,
            until_ns: until,
            queued_ns: until,
            unreliable,
        };
        self.open.insert(id, transaction);
        self.due.push(Reverse((until, id)));
        self.compact();
        Vec::new()
    }

    fn on_response(&mut self, id: u64, code: u16, at: u64) -> Vec<Kpi> {
        let Some(transaction) = self.open.get_mut(&id) else {
            return Vec::new();
        };
        if transaction.answered {
            return Vec::new();
        }
        if code < 200 {
            // The INVITE's client stops Timer B; a proxy's Timer C runs, restarted
            // by each provisional but 100. Queued when its entry comes up.
            if transaction.method == Method::Invite {
                transaction.until_ns = transaction.until_ns.max(at + RINGING_NS);
            }
            return Vec::new();
        }
        transaction.answered = true;
        let (method, peer, initial) = (transaction.method, transaction.peer, transaction.initial);
        let seconds = at.saturating_sub(transaction.opened_ns) as f64 / 1e9;
        let mut kpis = vec![Kpi::Answered { method, peer, seconds }];
        if initial {
            kpis.push(Kpi::Invite { outcome: InviteOutcome::of_final(code), peer });
        }
        if !transaction.unreliable || self.answered_kept >= MAX_ANSWERED_KEPT {
            // No resend is to come over a reliable transport (§17.1.1.2).
            self.open.remove(&id);
        } else {
            self.answered_kept += 1;
            // A resend comes at the latest at Timer B or F after the first sending;
            // the minutes a call may have rung are over.
            transaction.until_ns = (transaction.opened_ns + TIMER_B_NS).max(at);
            if transaction.until_ns < transaction.queued_ns {
                transaction.queued_ns = transaction.until_ns;
                self.due.push(Reverse((transaction.until_ns, id)));
            }
        }
        kpis
    }

    /// Forgets what was due `HEADS_LATE_NS` before `now_ns`: an INVITE that
    /// set up a session and had no final answer by then timed out.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Kpi> {
        let judged_until = now_ns.saturating_sub(HEADS_LATE_NS);
        let mut kpis = Vec::new();
        while let Some(Reverse((queued, id))) = self.due.peek().copied() {
            if queued > judged_until {
                break;
            }
            self.due.pop();
            let Some(transaction) = self.open.get_mut(&id) else {
                continue;
            };
            if transaction.queued_ns != queued {
                continue;
            }
            if transaction.until_ns > queued {
                // Extended since it was queued: queued again, once.
                transaction.queued_ns = transaction.until_ns;
                self.due.push(Reverse((transaction.until_ns, id)));
                continue;
            }
            if !transaction.answered && transaction.initial {
                kpis.push(Kpi::Invite { outcome: InviteOutcome::TimedOut, peer: transaction.peer });
            }
            if transaction.answered {
                self.answered_kept -= 1;
            }
            self.open.remove(&id);
        }
        kpis
    }

    /// When `expire` next has something to do.
    pub fn next_due(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((queued, _))| queued + HEADS_LATE_NS)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Drops the queue's dead entries (transactions answered over TCP, or
    /// brought forward) once they outnumber the live ones.
    fn compact(&mut self) {
        if self.due.len() > 2 * self.open.len() + 4096 {
            self.due = self.open.iter().map(|(id, t)| Reverse((t.queued_ns, *id))).collect();
        }
    }

    /// The transaction's identity (RFC 3261 §17.1.3, §17.2.3): the flow, which
    /// end sent the request, the top Via's branch, Call-ID and `CSeq`. Over UDP
    /// without the client's port: a UA that sends from one port and is
    /// answered at its Via's (§18.2.2) has its answers on another flow.
    fn id(&self, instance: usize, key: &FlowKey, client_sent: bool, parsed: &SipHead) -> Option<u64> {
        let (call_id, cseq) = (parsed.call_id.as_deref()?, parsed.cseq.as_ref()?);
        let branch = parsed.top_via_branch.as_deref();
        let mut key = *key;
        if key.transport == FlowTransport::Udp as u8 {
            key.client_port = 0;
        }
        Some(self.hasher.hash_one((instance, key, client_sent, call_id, cseq.number, cseq.method.as_str(), branch)))
    }
}

/// The method a `CSeq` names, as the counters label it.
fn method_of(token: &str) -> Method {
    Method::STANDARD.iter().find(|(_, name)| *name == token.as_bytes()).map_or(Method::Other, |(m, _)| *m)
}

#[cfg(test)]
mod tests;
