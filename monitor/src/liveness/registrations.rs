//! Bindings as REGISTER and its 2xx establish them (RFC 3261 §10, RFC 5626 §6).
//!
//! Each REGISTER waits, keyed by its flow, Call-ID and CSeq, for the final
//! response on the same flow. A 2xx binds its contacts to the flow; a binding
//! of the same AOR + instance + reg-id on another flow is replaced; Expires 0
//! removes a binding without any failure. Where the server's side of the flow is
//! not visible (XDP sees ingress only, and no --egress), a REGISTER is taken as
//! accepted once it has had time to be answered.

use std::{collections::HashMap, time::Duration};

use monitor_common::flow::FlowKey;

use crate::sip_head::{Contact, SipHead, StartLine};

/// Default registration lifetime when neither side states one (RFC 3261 §10.2.1.1).
pub const DEFAULT_EXPIRES: u32 = 3600;

/// A flow, wherever it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub iface: String,
    pub key: FlowKey,
}

/// What identifies a binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindingKey {
    /// RFC 5626 §6: one flow per AOR, instance and reg-id.
    Outbound { aor: String, instance: String, reg_id: u32 },
    /// An RFC 3261 binding: AOR and Contact URI.
    Plain { aor: String, contact: String },
}

impl BindingKey {
    pub fn aor(&self) -> &str {
        match self {
            Self::Outbound { aor, .. } | Self::Plain { aor, .. } => aor,
        }
    }

    pub fn is_outbound(&self) -> bool {
        matches!(self, Self::Outbound { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub flow: FlowId,
    pub expires_at_ns: u64,
    /// Flow-Timer from the registrar's 2xx (RFC 5626 §4.4).
    pub flow_timer: Option<u32>,
    /// A 2xx was seen; false when the REGISTER was taken as accepted unseen.
    pub confirmed: bool,
}

/// What a head or the passing of time changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Bound {
        key: BindingKey,
        flow: FlowId,
    },
    /// The binding moved: `old` no longer carries it (its flow is `replaced`).
    Replaced {
        key: BindingKey,
        old: FlowId,
        new: FlowId,
    },
    /// Removed by Expires 0 or by expiry: no failure.
    Unbound {
        key: BindingKey,
        flow: FlowId,
    },
}

#[derive(Clone, Debug)]
struct PendingRegister {
    flow: FlowId,
    at_ns: u64,
    aor: String,
    contacts: Vec<Contact>,
    star: bool,
    expires: Option<u32>,
}

#[derive(Default)]
pub struct Registrations {
    pending: HashMap<(FlowId, String, u32), PendingRegister>,
    bindings: HashMap<BindingKey, Binding>,
    /// Grows with every change to the bindings: they need saving again.
    pub generation: u64,
}

/// A REGISTER unanswered for this long is dropped when its flow's server side is visible.
const PENDING_LIMIT: Duration = Duration::from_secs(64);

impl Registrations {
    /// Feeds one parsed head seen on `flow` at `at_ns`.
    pub fn on_head(&mut self, flow: &FlowId, head: &SipHead, at_ns: u64) -> Vec<Change> {
        let (Some(call_id), Some(cseq)) = (&head.call_id, &head.cseq) else {
            return Vec::new();
        };
        if cseq.method != "REGISTER" {
            return Vec::new();
        }
        let id = (flow.clone(), call_id.clone(), cseq.number);
        match &head.start {
            StartLine::Request { method, .. } if method == "REGISTER" => {
                let Some(aor) = head.to_aor.clone() else {
                    return Vec::new();
                };
                self.pending.insert(
                    id,
                    PendingRegister {
                        flow: flow.clone(),
                        at_ns,
                        aor,
                        contacts: head.contacts.clone(),
                        star: head.contact_star,
                        expires: head.expires,
                    },
                );
                Vec::new()
            }
            StartLine::Response { code, .. } if *code >= 200 => match self.pending.remove(&id) {
                Some(request) if (200..300).contains(code) => self.apply(&request, Some(head), at_ns),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// `iface`'s REGISTERs that waited `wait` with no response: accepted where
    /// `server_visible` says the response could not have been seen, forgotten
    /// after a while otherwise.
    pub fn settle_unanswered(
        &mut self,
        now_ns: u64,
        wait: Duration,
        iface: &str,
        server_visible: impl Fn(&FlowId) -> bool,
    ) -> Vec<Change> {
        let wait = wait.as_nanos() as u64;
        let limit = PENDING_LIMIT.as_nanos() as u64;
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.flow.iface == iface && now_ns.saturating_sub(p.at_ns) >= wait)
            .map(|(id, _)| id.clone())
            .collect();
        let mut changes = Vec::new();
        for id in due {
            let request = &self.pending[&id];
            if !server_visible(&request.flow) {
                let request = self.pending.remove(&id).expect("listed above");
                changes.extend(self.apply(&request, None, now_ns));
            } else if now_ns.saturating_sub(request.at_ns) >= limit {
                self.pending.remove(&id);
            }
        }
        changes
    }

    /// Bindings whose time ran out.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Change> {
        let expired: Vec<BindingKey> =
            self.bindings.iter().filter(|(_, b)| b.expires_at_ns <= now_ns).map(|(k, _)| k.clone()).collect();
        if !expired.is_empty() {
            self.generation += 1;
        }
        expired
            .into_iter()
            .filter_map(|key| self.bindings.remove(&key).map(|b| Change::Unbound { key, flow: b.flow }))
            .collect()
    }

    pub fn bindings_on<'a>(&'a self, flow: &'a FlowId) -> impl Iterator<Item = (&'a BindingKey, &'a Binding)> + 'a {
        self.bindings.iter().filter(move |(_, b)| &b.flow == flow)
    }

    /// Flows with a REGISTER still waiting for its answer.
    pub fn unanswered_flows(&self) -> impl Iterator<Item = &FlowId> {
        self.pending.values().map(|p| &p.flow)
    }

    pub fn all(&self) -> impl Iterator<Item = (&BindingKey, &Binding)> {
        self.bindings.iter()
    }

    /// Bindings an earlier agent saved (see `saved`).
    pub fn restore(&mut self, bindings: Vec<(BindingKey, Binding)>) {
        self.bindings.extend(bindings);
        self.generation += 1;
    }

    fn apply(&mut self, request: &PendingRegister, response: Option<&SipHead>, at_ns: u64) -> Vec<Change> {
        self.generation += 1;
        let mut changes = Vec::new();
        let flow_timer = response.and_then(|r| r.flow_timer);
        if request.star {
            // "Contact: *" with Expires 0 removes every binding of the AOR (RFC 3261 §10.2.2).
            let gone: Vec<BindingKey> = self.bindings.keys().filter(|k| k.aor() == request.aor).cloned().collect();
            for key in gone {
                if let Some(b) = self.bindings.remove(&key) {
                    changes.push(Change::Unbound { key, flow: b.flow });
                }
            }
            return changes;
        }
        for contact in &request.contacts {
            let key = match (&contact.instance, contact.reg_id) {
                (Some(instance), Some(reg_id)) => {
                    BindingKey::Outbound { aor: request.aor.clone(), instance: instance.clone(), reg_id }
                }
                _ => BindingKey::Plain { aor: request.aor.clone(), contact: contact.uri.clone() },
            };
            let expires = granted_expires(contact, request, response);
            if expires == 0 {
                if let Some(b) = self.bindings.remove(&key) {
                    changes.push(Change::Unbound { key, flow: b.flow });
                }
                continue;
            }
            let binding = Binding {
                flow: request.flow.clone(),
                expires_at_ns: at_ns + u64::from(expires) * 1_000_000_000,
                flow_timer,
                confirmed: response.is_some(),
            };
            match self.bindings.insert(key.clone(), binding) {
                Some(old) if old.flow != request.flow => {
                    changes.push(Change::Replaced { key, old: old.flow, new: request.flow.clone() })
                }
                Some(_) => {}
                None => changes.push(Change::Bound { key, flow: request.flow.clone() }),
            }
        }
        changes
    }
}

/// The lifetime granted: the registrar's answer for this contact, else the request's.
fn granted_expires(contact: &Contact, request: &PendingRegister, response: Option<&SipHead>) -> u32 {
    let answered = response.and_then(|r| {
        r.contacts
            .iter()
            .find(|c| {
                c.uri == contact.uri
                    || (c.instance.is_some() && c.instance == contact.instance && c.reg_id == contact.reg_id)
            })
            .and_then(|c| c.expires)
            .or(r.expires)
    });
    answered.or(contact.expires).or(request.expires).unwrap_or(DEFAULT_EXPIRES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip_head::parse;

    const S: u64 = 1_000_000_000;

    fn flow(port: u16) -> FlowId {
        FlowId {
            iface: "eth0".into(),
            key: FlowKey {
                server_addr: [0; 16],
                client_addr: [0; 16],
                server_port: 5060,
                client_port: port,
                vlan_id: 0,
                family: 4,
                transport: 2,
            },
        }
    }

    fn register(call_id: &str, cseq: u32, contact: &str, expires: u32) -> SipHead {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nSupported: outbound, path\r\nContact: {contact}\r\nExpires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes()).expect("parse REGISTER")
    }

    fn ok(call_id: &str, cseq: u32, flow_timer: u32) -> SipHead {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK{cseq}\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>;tag=2\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\nRequire: outbound\r\nFlow-Timer: {flow_timer}\r\n\
             Contact: <sip:alice@192.0.2.1:40000;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:1>\";expires=600\r\n\
             Content-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes()).expect("parse 200")
    }

    const OUTBOUND_CONTACT: &str =
        "<sip:alice@192.0.2.1:40000;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"";

    fn outbound_key() -> BindingKey {
        BindingKey::Outbound { aor: "sip:alice@example.com".into(), instance: "<urn:uuid:1>".into(), reg_id: 1 }
    }

    #[test]
    fn a_2xx_binds_with_its_flow_timer_and_expires() {
        let mut r = Registrations::default();
        assert!(r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S).is_empty());
        let changes = r.on_head(&flow(1), &ok("c1", 1, 25), 2 * S);
        assert_eq!(changes, vec![Change::Bound { key: outbound_key(), flow: flow(1) }]);
        let f1 = flow(1);
        let (_, b) = r.bindings_on(&f1).next().unwrap();
        assert_eq!(b.flow_timer, Some(25));
        assert_eq!(b.expires_at_ns, 2 * S + 600 * S, "the registrar's expires param wins");
        assert!(b.confirmed);
    }

    #[test]
    fn the_same_instance_and_reg_id_on_another_flow_replaces() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &ok("c1", 1, 25), S);
        r.on_head(&flow(2), &register("c1", 2, OUTBOUND_CONTACT, 3600), 5 * S);
        let changes = r.on_head(&flow(2), &ok("c1", 2, 25), 5 * S);
        assert_eq!(changes, vec![Change::Replaced { key: outbound_key(), old: flow(1), new: flow(2) }]);
        assert_eq!(r.bindings_on(&flow(1)).count(), 0);
    }

    #[test]
    fn a_response_on_another_flow_or_to_another_cseq_pairs_with_nothing() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        assert!(r.on_head(&flow(2), &ok("c1", 1, 25), S).is_empty());
        assert!(r.on_head(&flow(1), &ok("c1", 7, 25), S).is_empty());
        assert!(r.on_head(&flow(1), &ok("other", 1, 25), S).is_empty());
        assert_eq!(r.all().count(), 0);
    }

    #[test]
    fn expires_zero_unbinds_without_failure_and_challenges_bind_nothing() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &ok("c1", 1, 25), S);
        r.on_head(&flow(1), &register("c1", 2, OUTBOUND_CONTACT, 0), 2 * S);
        let mut zero = ok("c1", 2, 25);
        zero.contacts.clear();
        zero.expires = Some(0);
        assert_eq!(r.on_head(&flow(1), &zero, 2 * S), vec![Change::Unbound { key: outbound_key(), flow: flow(1) }]);

        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        let mut challenge = ok("c1", 1, 25);
        challenge.start = StartLine::Response { code: 401, reason: "Unauthorized".into() };
        assert!(r.on_head(&flow(1), &challenge, S).is_empty());
        assert_eq!(r.all().count(), 0);
    }

    #[test]
    fn plain_contacts_and_star() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:alice@192.0.2.1:40000>", 300), S);
        let mut answer = ok("c1", 1, 25);
        answer.contacts.clear();
        answer.expires = None;
        let changes = r.on_head(&flow(1), &answer, S);
        let key =
            BindingKey::Plain { aor: "sip:alice@example.com".into(), contact: "sip:alice@192.0.2.1:40000".into() };
        assert_eq!(changes, vec![Change::Bound { key: key.clone(), flow: flow(1) }]);
        assert_eq!(r.bindings_on(&flow(1)).next().unwrap().1.expires_at_ns, S + 300 * S);

        r.on_head(&flow(1), &register("c1", 2, "*", 0), 2 * S);
        assert_eq!(r.on_head(&flow(1), &answer_to(2), 2 * S), vec![Change::Unbound { key, flow: flow(1) }]);
    }

    fn answer_to(cseq: u32) -> SipHead {
        let mut a = ok("c1", cseq, 25);
        a.contacts.clear();
        a
    }

    #[test]
    fn unanswered_registers_are_taken_as_accepted_only_when_answers_are_invisible() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 120), S);
        r.on_head(&flow(2), &register("c2", 1, "<sip:bob@192.0.2.1:40001>", 120), S);
        assert!(r.settle_unanswered(2 * S, Duration::from_secs(2), "eth0", |_| false).is_empty(), "not yet");
        let changes = r.settle_unanswered(3 * S, Duration::from_secs(2), "eth0", |f| f == &flow(2));
        assert_eq!(changes, vec![Change::Bound { key: outbound_key(), flow: flow(1) }]);
        let f1 = flow(1);
        let (_, b) = r.bindings_on(&f1).next().unwrap();
        assert!(!b.confirmed);
        assert_eq!((b.flow_timer, b.expires_at_ns), (None, 3 * S + 120 * S));
        assert_eq!(r.bindings_on(&flow(2)).count(), 0, "its answer was visible and never came");
    }

    #[test]
    fn bindings_expire() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &ok("c1", 1, 25), S);
        assert!(r.expire(600 * S).is_empty());
        assert_eq!(r.expire(601 * S), vec![Change::Unbound { key: outbound_key(), flow: flow(1) }]);
    }
}
