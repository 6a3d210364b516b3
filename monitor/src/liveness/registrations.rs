//! Bindings as REGISTER and its 2xx establish them (RFC 3261 §10, RFC 5626 §6).
//!
//! Each REGISTER waits, keyed by its flow, Call-ID and CSeq, for the final
//! response on the same flow. Only a 2xx seen on the flow binds: a REGISTER
//! nobody answered (a scanner's, or one the registrar refused) binds nothing,
//! and one challenged with 401/407 binds once, when its retry is accepted.
//! A binding of the same AOR + instance + reg-id on another flow is replaced;
//! Expires 0 removes a binding without any failure.
//!
//! What a registrar keeps for a million phones is kept here too, so it is
//! kept small: both texts of a binding's key in one allocation, the flow it
//! is on as a slot number, its times in seconds. The table and the REGISTERs
//! waiting for answers are capped; what a cap refuses is counted. Bindings
//! are ordered by AOR (a B-tree costs about what a hash table does per entry
//! here): "Contact: *" and a 430's AOR find theirs without a walk of the table.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::{BuildHasher, RandomState},
    num::NonZeroU32,
    sync::Arc,
};

use hashbrown::HashTable;

use monitor_common::{events::REGISTER_TRANSACTION_NS, flow::FlowKey};

use crate::{
    peers::Peers,
    sip_head::{Contact, SipHead, StartLine},
};

/// Default registration lifetime when neither side states one (RFC 3261 §10.2.1.1).
pub const DEFAULT_EXPIRES: u32 = 3600;
/// The longest lifetime a binding gets, whatever a message asks for: a day.
/// Registrars cap theirs lower (Kamailio's max_expires is 3600 by default);
/// an Expires of 2^32-1 from a hostile or broken client must not pin a binding forever.
pub const MAX_EXPIRES: u32 = 86_400;
/// Bindings kept at most by default: a large registrar's.
pub const DEFAULT_MAX_BINDINGS: u32 = 1_000_000;
/// REGISTERs waiting for their answer at most by default: a storm of them
/// within one transaction lifetime.
pub const DEFAULT_MAX_PENDING: u32 = 100_000;

const NS_PER_S: u64 = 1_000_000_000;

/// A flow, wherever it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub iface: String,
    pub key: FlowKey,
}

/// What identifies a binding: RFC 5626 §6's AOR + instance + reg-id (one
/// flow each), or RFC 3261's AOR + Contact URI.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindingKey {
    /// The AOR, then the instance (outbound) or the Contact URI (plain).
    text: Arc<str>,
    aor_len: u16,
    /// Present for an outbound binding (RFC 5626 reg-ids start at 1).
    reg_id: Option<NonZeroU32>,
}

impl BindingKey {
    /// An outbound binding; a reg-id of 0 (outside RFC 5626's range) is no outbound binding.
    pub fn outbound(aor: &str, instance: &str, reg_id: u32) -> Option<Self> {
        Some(Self::new(aor, instance, Some(NonZeroU32::new(reg_id)?)))
    }

    pub fn plain(aor: &str, contact: &str) -> Self {
        Self::new(aor, contact, None)
    }

    fn new(aor: &str, second: &str, reg_id: Option<NonZeroU32>) -> Self {
        // Heads are at most HEAD_MAX bytes: an AOR always fits a u16.
        let aor = &aor[..floor_char_boundary(aor, usize::from(u16::MAX))];
        let mut text = String::with_capacity(aor.len() + second.len());
        text.push_str(aor);
        text.push_str(second);
        Self { text: text.into(), aor_len: aor.len() as u16, reg_id }
    }

    pub fn aor(&self) -> &str {
        &self.text[..usize::from(self.aor_len)]
    }

    /// `+sip.instance` of an outbound binding.
    pub fn instance(&self) -> Option<&str> {
        self.reg_id.map(|_| &self.text[usize::from(self.aor_len)..])
    }

    /// The Contact URI of a plain binding.
    pub fn contact(&self) -> Option<&str> {
        self.reg_id.is_none().then(|| &self.text[usize::from(self.aor_len)..])
    }

    pub fn reg_id(&self) -> Option<u32> {
        self.reg_id.map(NonZeroU32::get)
    }

    pub fn is_outbound(&self) -> bool {
        self.reg_id.is_some()
    }
}

impl fmt::Debug for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.instance(), self.reg_id()) {
            (Some(instance), Some(reg_id)) => write!(f, "{} {instance} reg-id={reg_id}", self.aor()),
            _ => write!(f, "{} {}", self.aor(), self.contact().unwrap_or("")),
        }
    }
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// A binding as it is handed out and saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub flow: FlowId,
    pub expires_at_ns: u64,
    /// Flow-Timer from the registrar's 2xx (RFC 5626 §4.4).
    pub flow_timer: Option<u32>,
    /// An edge proxy routes requests for it by its flow, and so answers 430
    /// when the flow is gone (RFC 5626 §5.3.1): an outbound binding (reg-id and
    /// +sip.instance, or ;ob), or any binding with --all-bindings-by-flow.
    pub by_flow: bool,
}

/// A binding as it is stored.
#[derive(Clone, Copy, Debug)]
struct Stored {
    /// Slot in `Registrations::flows`.
    flow: u32,
    /// CLOCK_BOOTTIME seconds.
    expires_at_s: u32,
    /// 0: none.
    flow_timer: u32,
    by_flow: bool,
}

/// A flow with its interface as an index into `Registrations::ifaces`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowRef {
    iface: u16,
    key: FlowKey,
}

/// What a flow's bindings add up to.
#[derive(Clone, Debug)]
struct FlowEntry {
    id: FlowRef,
    /// Bindings on the flow; 0 for a free slot.
    count: u32,
    by_flow: u32,
    /// The largest Flow-Timer any of its 2xx granted while it had bindings:
    /// the later verdict, where timers differ.
    flow_timer: u32,
    /// The binding the flow is shown with.
    shown: Option<BindingKey>,
    /// Its client's peer (`--peer`), 0 for `other`.
    peer: u8,
}

/// A flow's bindings, as the verdicts need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowBindings<'a> {
    /// The binding the flow is shown with (an AOR, its instance and reg-id).
    pub shown: Option<&'a BindingKey>,
    pub count: u32,
    /// At least one of them is routed by the flow: its failure warrants 430.
    pub by_flow: bool,
    pub flow_timer: Option<u32>,
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

/// What the caps and cut heads kept from binding: counted where the operator sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// A 2xx would have made a binding past --max-bindings.
    pub bindings_full: u64,
    /// A REGISTER arrived with --max-pending-registers already waiting.
    pub pending_full: u64,
    /// A REGISTER or its 2xx was cut before its end: Contact or Expires may be past the cut.
    pub cut_heads: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bindings: u32,
    pub max_pending: u32,
    /// Every binding is routed by its flow (--all-bindings-by-flow).
    pub all_by_flow: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bindings: DEFAULT_MAX_BINDINGS, max_pending: DEFAULT_MAX_PENDING, all_by_flow: false }
    }
}

#[derive(Clone, Debug)]
struct PendingRegister {
    at_ns: u64,
    aor: String,
    contacts: Vec<Contact>,
    star: bool,
    expires: Option<u32>,
}

#[derive(Default)]
pub struct Registrations {
    pending: HashMap<(FlowRef, Box<str>, u32), PendingRegister>,
    bindings: BTreeMap<BindingKey, Stored>,
    /// How many of them are outbound (RFC 5626): the census reads it often.
    outbound: usize,
    /// The peers bindings are counted by, and the counts: by peer number,
    /// [plain, outbound], kept as bindings come and go, for the census.
    peers: Peers,
    by_peer: Vec<[usize; 2]>,
    /// Slots of `flows` by their flow: the index holds only slot numbers,
    /// hashed and compared through the entries they point at.
    flow_slots: HashTable<u32>,
    flow_hasher: RandomState,
    flows: Vec<FlowEntry>,
    free_slots: Vec<u32>,
    ifaces: Vec<String>,
    limits: Limits,
    pub refused: Refused,
    /// Grows with every change to the bindings: they need saving again.
    pub generation: u64,
}

impl Registrations {
    pub fn new(limits: Limits) -> Self {
        Self { limits, by_peer: vec![[0; 2]], ..Self::default() }
    }

    /// Counts bindings by these peers from now on, those there already included.
    pub fn set_peers(&mut self, peers: Peers) {
        self.by_peer = vec![[0; 2]; peers.len() + 1];
        for entry in &mut self.flows {
            entry.peer = peers.id_of_client(&entry.id.key);
        }
        for (key, stored) in &self.bindings {
            let peer = self.flows[stored.flow as usize].peer;
            self.by_peer[usize::from(peer)][usize::from(key.is_outbound())] += 1;
        }
        self.peers = peers;
    }

    /// The peers bindings are counted by.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Bindings by peer number and whether they are outbound.
    pub fn count_by_peer(&self) -> impl Iterator<Item = (u8, bool, usize)> + '_ {
        self.by_peer
            .iter()
            .enumerate()
            .flat_map(|(peer, counts)| [(peer as u8, false, counts[0]), (peer as u8, true, counts[1])])
    }

    /// Feeds one parsed head seen on `flow` at `at_ns`.
    pub fn on_head(&mut self, flow: &FlowId, head: &SipHead, at_ns: u64) -> Vec<Change> {
        let (Some(call_id), Some(cseq)) = (&head.call_id, &head.cseq) else {
            return Vec::new();
        };
        if cseq.method != "REGISTER" {
            return Vec::new();
        }
        let flow_ref = self.flow_ref(flow);
        let id = (flow_ref, Box::<str>::from(call_id.as_str()), cseq.number);
        match &head.start {
            StartLine::Request { method, .. } if method == "REGISTER" => {
                let Some(aor) = head.to_aor.clone() else {
                    return Vec::new();
                };
                if head.truncated {
                    self.refused.cut_heads += 1;
                    return Vec::new();
                }
                if self.pending.len() >= self.limits.max_pending as usize && !self.pending.contains_key(&id) {
                    self.refused.pending_full += 1;
                    return Vec::new();
                }
                let request = PendingRegister {
                    at_ns,
                    aor,
                    contacts: head.contacts.clone(),
                    star: head.contact_star,
                    expires: head.expires,
                };
                self.pending.insert(id, request);
                Vec::new()
            }
            StartLine::Response { code, .. } if *code >= 200 => match self.pending.remove(&id) {
                Some(_) if (200..300).contains(code) && head.truncated => {
                    self.refused.cut_heads += 1;
                    Vec::new()
                }
                Some(request) if (200..300).contains(code) => self.apply(flow_ref, &request, head, at_ns),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// REGISTERs whose transaction is over with no final response seen (RFC 3261 Timer F).
    pub fn forget_unanswered(&mut self, now_ns: u64) {
        self.pending.retain(|_, p| now_ns.saturating_sub(p.at_ns) < REGISTER_TRANSACTION_NS);
    }

    /// Bindings whose time ran out.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Change> {
        let now_s = now_ns / NS_PER_S;
        let expired: Vec<BindingKey> =
            self.bindings.iter().filter(|(_, b)| u64::from(b.expires_at_s) <= now_s).map(|(k, _)| k.clone()).collect();
        if !expired.is_empty() {
            self.generation += 1;
        }
        expired.into_iter().filter_map(|key| self.unbind(&key)).collect()
    }

    /// The bindings on a flow, if it has any.
    pub fn on_flow(&self, iface: &str, key: &FlowKey) -> Option<FlowBindings<'_>> {
        let iface = self.ifaces.iter().position(|i| i == iface)?;
        let slot = self.slot_of(&FlowRef { iface: iface as u16, key: *key })?;
        let entry = &self.flows[slot as usize];
        Some(FlowBindings {
            shown: entry.shown.as_ref(),
            count: entry.count,
            by_flow: entry.by_flow > 0,
            flow_timer: (entry.flow_timer != 0).then_some(entry.flow_timer),
        })
    }

    /// Every flow with bindings.
    pub fn flows(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.flows.iter().filter(|e| e.count > 0).map(|e| self.flow_id(e.id))
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Bindings with reg-id and +sip.instance (RFC 5626).
    pub fn outbound_count(&self) -> usize {
        self.outbound
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Every binding, as it would be saved.
    pub fn all(&self) -> impl Iterator<Item = (&BindingKey, Binding)> + '_ {
        self.bindings.iter().map(|(key, stored)| (key, self.binding(stored)))
    }

    /// The flows `aor`'s bindings are on.
    pub fn flows_of<'a>(&'a self, aor: &'a str) -> impl Iterator<Item = FlowId> + 'a {
        self.of_aor(aor).map(|(_, stored)| self.flow_id(self.flows[stored.flow as usize].id))
    }

    /// `aor`'s bindings: a range of the table, since every key starts with its AOR.
    fn of_aor<'a>(&'a self, aor: &'a str) -> impl Iterator<Item = (&'a BindingKey, &'a Stored)> + 'a {
        self.bindings
            .range(BindingKey::new(aor, "", None)..)
            .take_while(move |(key, _)| key.text.starts_with(aor))
            .filter(move |(key, _)| key.aor() == aor)
    }

    /// Bindings an earlier agent saved (see `saved`), up to the cap.
    pub fn restore(&mut self, bindings: Vec<(BindingKey, Binding)>) {
        for (key, binding) in bindings {
            let flow = self.flow_ref(&binding.flow);
            if self.bindings.len() >= self.limits.max_bindings as usize && !self.bindings.contains_key(&key) {
                self.refused.bindings_full += 1;
                continue;
            }
            let by_flow = binding.by_flow || self.limits.all_by_flow;
            let expires_at_s = u32::try_from(binding.expires_at_ns / NS_PER_S).unwrap_or(u32::MAX);
            self.bind(key, flow, expires_at_s, binding.flow_timer.unwrap_or(0), by_flow);
        }
        self.generation += 1;
    }

    fn flow_ref(&mut self, flow: &FlowId) -> FlowRef {
        let iface = match self.ifaces.iter().position(|i| *i == flow.iface) {
            Some(i) => i,
            None => {
                self.ifaces.push(flow.iface.clone());
                self.ifaces.len() - 1
            }
        };
        FlowRef { iface: iface as u16, key: flow.key }
    }

    fn flow_id(&self, flow: FlowRef) -> FlowId {
        FlowId { iface: self.ifaces[usize::from(flow.iface)].clone(), key: flow.key }
    }

    fn binding(&self, stored: &Stored) -> Binding {
        Binding {
            flow: self.flow_id(self.flows[stored.flow as usize].id),
            expires_at_ns: u64::from(stored.expires_at_s) * NS_PER_S,
            flow_timer: (stored.flow_timer != 0).then_some(stored.flow_timer),
            by_flow: stored.by_flow,
        }
    }

    fn apply(&mut self, flow: FlowRef, request: &PendingRegister, response: &SipHead, at_ns: u64) -> Vec<Change> {
        self.generation += 1;
        let mut changes = Vec::new();
        if request.star {
            // "Contact: *" with Expires 0 removes every binding of the AOR (RFC 3261 §10.2.2).
            let gone: Vec<BindingKey> = self.of_aor(&request.aor).map(|(key, _)| key.clone()).collect();
            changes.extend(gone.iter().filter_map(|key| self.unbind(key)));
            return changes;
        }
        let flow_timer = response.flow_timer.unwrap_or(0);
        for contact in &request.contacts {
            let outbound = match (&contact.instance, contact.reg_id) {
                (Some(instance), Some(reg_id)) => BindingKey::outbound(&request.aor, instance, reg_id),
                _ => None,
            };
            let by_flow = outbound.is_some() || contact.ob || self.limits.all_by_flow;
            let key = outbound.unwrap_or_else(|| BindingKey::plain(&request.aor, &contact.uri));
            let expires = granted_expires(contact, request, response);
            if expires == 0 {
                changes.extend(self.unbind(&key));
                continue;
            }
            if self.bindings.len() >= self.limits.max_bindings as usize && !self.bindings.contains_key(&key) {
                self.refused.bindings_full += 1;
                continue;
            }
            let expires_at_s = u32::try_from(at_ns / NS_PER_S + u64::from(expires)).unwrap_or(u32::MAX);
            let old = self.bind(key.clone(), flow, expires_at_s, flow_timer, by_flow);
            let new = self.flow_id(flow);
            match old {
                Some(old) if old != flow => changes.push(Change::Replaced { key, old: self.flow_id(old), new }),
                Some(_) => {}
                None => changes.push(Change::Bound { key, flow: new }),
            }
        }
        changes
    }

    /// Binds `key` to `flow`; returns the flow it was bound to before.
    fn bind(
        &mut self,
        key: BindingKey,
        flow: FlowRef,
        expires_at_s: u32,
        flow_timer: u32,
        by_flow: bool,
    ) -> Option<FlowRef> {
        let previous = self.bindings.get(&key).map(|s| self.flows[s.flow as usize].id);
        if previous.is_some_and(|p| p != flow) {
            self.unbind(&key);
        }
        let slot = self.slot_for(flow);
        let entry = &mut self.flows[slot as usize];
        entry.flow_timer = entry.flow_timer.max(flow_timer);
        let stored = Stored { flow: slot, expires_at_s, flow_timer, by_flow };
        match self.bindings.insert(key.clone(), stored) {
            Some(before) if before.flow == slot => {
                // The same binding refreshed on the same flow.
                entry.by_flow = entry.by_flow - u32::from(before.by_flow) + u32::from(by_flow);
            }
            _ => {
                entry.count += 1;
                entry.by_flow += u32::from(by_flow);
                self.outbound += usize::from(key.is_outbound());
                if let Some(counts) = self.by_peer.get_mut(usize::from(entry.peer)) {
                    counts[usize::from(key.is_outbound())] += 1;
                }
                if entry.shown.is_none() {
                    entry.shown = Some(key);
                }
            }
        }
        previous
    }

    fn slot_of(&self, flow: &FlowRef) -> Option<u32> {
        let flows = &self.flows;
        self.flow_slots.find(self.flow_hasher.hash_one(flow), |&s| flows[s as usize].id == *flow).copied()
    }

    fn slot_for(&mut self, flow: FlowRef) -> u32 {
        if let Some(slot) = self.slot_of(&flow) {
            return slot;
        }
        let peer = self.peers.id_of_client(&flow.key);
        let entry = FlowEntry { id: flow, count: 0, by_flow: 0, flow_timer: 0, shown: None, peer };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.flows[slot as usize] = entry;
                slot
            }
            None => {
                self.flows.push(entry);
                (self.flows.len() - 1) as u32
            }
        };
        let (flows, hasher) = (&self.flows, &self.flow_hasher);
        self.flow_slots.insert_unique(hasher.hash_one(flow), slot, |&s| hasher.hash_one(flows[s as usize].id));
        slot
    }

    fn unbind(&mut self, key: &BindingKey) -> Option<Change> {
        let stored = self.bindings.remove(key)?;
        self.outbound -= usize::from(key.is_outbound());
        let flow = self.flow_id(self.flows[stored.flow as usize].id);
        let entry = &mut self.flows[stored.flow as usize];
        entry.count -= 1;
        entry.by_flow -= u32::from(stored.by_flow);
        if let Some(counts) = self.by_peer.get_mut(usize::from(entry.peer)) {
            counts[usize::from(key.is_outbound())] -= 1;
        }
        if entry.count == 0 {
            let id = entry.id;
            entry.shown = None;
            let slot = stored.flow;
            if let Ok(found) = self.flow_slots.find_entry(self.flow_hasher.hash_one(id), |&s| s == slot) {
                found.remove();
            }
            self.free_slots.push(stored.flow);
        } else if entry.shown.as_ref() == Some(key) {
            // Rare: the binding the flow was shown with left, others stay.
            let slot = stored.flow;
            let next = self.bindings.iter().find(|(_, s)| s.flow == slot).map(|(k, _)| k.clone());
            self.flows[slot as usize].shown = next;
        }
        Some(Change::Unbound { key: key.clone(), flow })
    }
}

/// The lifetime granted: the registrar's answer for this contact, else the
/// request's, never more than [`MAX_EXPIRES`].
fn granted_expires(contact: &Contact, request: &PendingRegister, response: &SipHead) -> u32 {
    let answered = response
        .contacts
        .iter()
        .find(|c| {
            c.uri == contact.uri
                || (c.instance.is_some() && c.instance == contact.instance && c.reg_id == contact.reg_id)
        })
        .and_then(|c| c.expires)
        .or(response.expires);
    answered.or(contact.expires).or(request.expires).unwrap_or(DEFAULT_EXPIRES).min(MAX_EXPIRES)
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

    fn answer(code: u16, reason: &str, call_id: &str, cseq: u32) -> SipHead {
        let mut head = ok(call_id, cseq, 25);
        head.start = StartLine::Response { code, reason: reason.into() };
        head
    }

    const OUTBOUND_CONTACT: &str =
        "<sip:alice@192.0.2.1:40000;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"";

    fn outbound_key() -> BindingKey {
        BindingKey::outbound("sip:alice@example.com", "<urn:uuid:1>", 1).unwrap()
    }

    fn bindings_on(r: &Registrations, f: &FlowId) -> u32 {
        r.on_flow(&f.iface, &f.key).map_or(0, |b| b.count)
    }

    #[test]
    fn a_2xx_binds_with_its_flow_timer_and_expires() {
        let mut r = Registrations::default();
        assert!(r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S).is_empty());
        let changes = r.on_head(&flow(1), &ok("c1", 1, 25), 2 * S);
        assert_eq!(changes, vec![Change::Bound { key: outbound_key(), flow: flow(1) }]);
        let f = flow(1);
        let on = r.on_flow(&f.iface, &f.key).unwrap();
        assert_eq!((on.count, on.by_flow, on.flow_timer), (1, true, Some(25)));
        assert_eq!(on.shown.unwrap().instance(), Some("<urn:uuid:1>"));
        let (_, b) = r.all().next().unwrap();
        assert_eq!(b.expires_at_ns, 2 * S + 600 * S, "the registrar's expires param wins");
    }

    #[test]
    fn an_aors_bindings_are_found_by_its_aor_alone_and_outbound_ones_counted() {
        let mut r = Registrations::default();
        // AORs that share a prefix, one of them with the other's first letters.
        for (port, aor) in [(1, "sip:al@example.com"), (2, "sip:al@example.co"), (3, "sip:alice@example.com")] {
            let (outbound, plain) = (r.flow_ref(&flow(port)), r.flow_ref(&flow(port + 10)));
            r.bind(BindingKey::outbound(aor, "<urn:uuid:1>", 1).unwrap(), outbound, 100, 0, true);
            r.bind(BindingKey::plain(aor, &format!("sip:x@192.0.2.1:{port}")), plain, 100, 0, false);
        }
        let ports = |r: &Registrations, aor: &str| {
            let mut p: Vec<u16> = r.flows_of(aor).map(|f| f.key.client_port).collect();
            p.sort();
            p
        };
        assert_eq!(ports(&r, "sip:al@example.co"), vec![2, 12]);
        assert_eq!(ports(&r, "sip:al@example.com"), vec![1, 11]);
        assert_eq!(ports(&r, "sip:bob@example.com"), Vec::<u16>::new());
        assert_eq!((r.len(), r.outbound_count()), (6, 3));
        r.unbind(&BindingKey::outbound("sip:al@example.co", "<urn:uuid:1>", 1).unwrap());
        assert_eq!((r.len(), r.outbound_count()), (5, 2));
    }

    /// Bindings by peer are counted as they come, go and move, so that the
    /// census need not walk them; peers named later count those already there.
    #[test]
    fn bindings_are_counted_by_their_flows_peer_as_they_come_and_go() {
        let arg = |text: &str| crate::peers::peer_arg(text).unwrap();
        let peers = Peers::new(&[arg("zero=0.0.0.0/32"), arg("ten=10.0.0.1")]).unwrap();
        let from = |port: u16, ten: bool| {
            let mut f = flow(port);
            if ten {
                f.key.client_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
            }
            f
        };
        let mut r = Registrations::new(Limits::default());
        let plain = |n: u16| BindingKey::plain("sip:a@example.com", &format!("sip:a@192.0.2.1:{n}"));
        let (on_zero, on_ten) = (r.flow_ref(&from(1, false)), r.flow_ref(&from(2, true)));
        r.bind(plain(1), on_zero, 100, 0, false);
        r.set_peers(peers);
        let counts = |r: &Registrations| r.count_by_peer().filter(|c| c.2 > 0).collect::<Vec<_>>();
        assert_eq!(counts(&r), [(1, false, 1)], "counted when the peers were named");
        r.bind(outbound_key(), on_ten, 100, 0, true);
        r.bind(plain(2), on_ten, 100, 0, false);
        assert_eq!(counts(&r), [(1, false, 1), (2, false, 1), (2, true, 1)]);
        // The outbound binding moves to the other peer's flow; a plain one goes.
        r.bind(outbound_key(), on_zero, 100, 0, true);
        r.unbind(&plain(2));
        assert_eq!(counts(&r), [(1, false, 1), (1, true, 1)]);
    }

    #[test]
    fn the_same_instance_and_reg_id_on_another_flow_replaces() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &ok("c1", 1, 25), S);
        r.on_head(&flow(2), &register("c1", 2, OUTBOUND_CONTACT, 3600), 5 * S);
        let changes = r.on_head(&flow(2), &ok("c1", 2, 25), 5 * S);
        assert_eq!(changes, vec![Change::Replaced { key: outbound_key(), old: flow(1), new: flow(2) }]);
        assert_eq!(bindings_on(&r, &flow(1)), 0);
        assert_eq!(bindings_on(&r, &flow(2)), 1);
    }

    #[test]
    fn a_response_on_another_flow_or_to_another_cseq_pairs_with_nothing() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        assert!(r.on_head(&flow(2), &ok("c1", 1, 25), S).is_empty());
        assert!(r.on_head(&flow(1), &ok("c1", 7, 25), S).is_empty());
        assert!(r.on_head(&flow(1), &ok("other", 1, 25), S).is_empty());
        assert!(r.is_empty());
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
        assert!(r.on_flow("eth0", &flow(1).key).is_none());

        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        assert!(r.on_head(&flow(1), &answer(401, "Unauthorized", "c1", 1), S).is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn challenged_then_accepted_binds_once() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &answer(407, "Proxy Authentication Required", "c1", 1), S);
        r.on_head(&flow(1), &register("c1", 2, OUTBOUND_CONTACT, 3600), 2 * S);
        let changes = r.on_head(&flow(1), &ok("c1", 2, 25), 2 * S);
        assert_eq!(changes, vec![Change::Bound { key: outbound_key(), flow: flow(1) }]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn plain_contacts_are_not_routed_by_flow_unless_told() {
        let plain = "<sip:alice@192.0.2.1:40000>";
        let key = BindingKey::plain("sip:alice@example.com", "sip:alice@192.0.2.1:40000");
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, plain, 300), S);
        let mut answer = ok("c1", 1, 25);
        answer.contacts.clear();
        answer.expires = None;
        assert_eq!(r.on_head(&flow(1), &answer, S), vec![Change::Bound { key: key.clone(), flow: flow(1) }]);
        assert!(!r.on_flow("eth0", &flow(1).key).unwrap().by_flow);
        assert_eq!(r.all().next().unwrap().1.expires_at_ns, S + 300 * S);

        r.on_head(&flow(1), &register("c1", 2, "*", 0), 2 * S);
        let mut star = ok("c1", 2, 25);
        star.contacts.clear();
        assert_eq!(r.on_head(&flow(1), &star, 2 * S), vec![Change::Unbound { key, flow: flow(1) }]);

        let mut r = Registrations::new(Limits { all_by_flow: true, ..Limits::default() });
        r.on_head(&flow(1), &register("c1", 1, plain, 300), S);
        r.on_head(&flow(1), &answer, S);
        assert!(r.on_flow("eth0", &flow(1).key).unwrap().by_flow);

        // `;ob` in the Contact URI: routed by its flow without reg-id.
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:alice@192.0.2.1:40000;ob>", 300), S);
        r.on_head(&flow(1), &answer, S);
        assert!(r.on_flow("eth0", &flow(1).key).unwrap().by_flow);
    }

    #[test]
    fn an_unanswered_register_binds_nothing_and_is_forgotten() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:100@192.0.2.1:5060>", 3600), S);
        r.forget_unanswered(20 * S);
        assert_eq!(r.pending.len(), 1, "still within the transaction's lifetime");
        r.forget_unanswered(40 * S);
        assert!(r.pending.is_empty() && r.is_empty());
    }

    #[test]
    fn cut_heads_bind_nothing_and_are_counted() {
        let mut r = Registrations::default();
        let mut cut = register("c1", 1, OUTBOUND_CONTACT, 0);
        cut.truncated = true;
        r.on_head(&flow(1), &cut, S);
        assert!(r.on_head(&flow(1), &ok("c1", 1, 25), S).is_empty(), "no REGISTER was taken");
        r.on_head(&flow(1), &register("c1", 2, OUTBOUND_CONTACT, 3600), S);
        let mut cut_answer = ok("c1", 2, 25);
        cut_answer.truncated = true;
        assert!(r.on_head(&flow(1), &cut_answer, S).is_empty());
        assert_eq!(r.refused.cut_heads, 2);
        assert!(r.is_empty());
    }

    #[test]
    fn caps_refuse_and_count() {
        let mut r = Registrations::new(Limits { max_bindings: 2, max_pending: 3, all_by_flow: false });
        for n in 0..5u16 {
            let contact = format!("<sip:u{n}@192.0.2.1:{}>", 40000 + n);
            r.on_head(&flow(n), &register(&format!("c{n}"), 1, &contact, 60), S);
        }
        assert_eq!(r.refused.pending_full, 2);
        for n in 0..3u16 {
            let mut answer = ok(&format!("c{n}"), 1, 25);
            answer.contacts.clear();
            r.on_head(&flow(n), &answer, S);
        }
        assert_eq!((r.len(), r.refused.bindings_full), (2, 1));
    }

    #[test]
    fn expires_are_clamped() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:a@192.0.2.1>", u32::MAX), S);
        let mut answer = ok("c1", 1, 25);
        answer.contacts.clear();
        r.on_head(&flow(1), &answer, S);
        assert_eq!(r.all().next().unwrap().1.expires_at_ns, S + u64::from(MAX_EXPIRES) * S);
    }

    #[test]
    fn bindings_expire() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        r.on_head(&flow(1), &ok("c1", 1, 25), S);
        assert!(r.expire(600 * S).is_empty());
        assert_eq!(r.expire(601 * S), vec![Change::Unbound { key: outbound_key(), flow: flow(1) }]);
        assert!(r.on_flow("eth0", &flow(1).key).is_none());
    }

    #[test]
    fn a_flow_shown_by_a_binding_that_left_is_shown_by_another() {
        let mut r = Registrations::default();
        let plain = |n: u32| format!("<sip:u{n}@192.0.2.1:4000{n}>");
        for n in 1..=2 {
            r.on_head(&flow(1), &register(&format!("c{n}"), 1, &plain(n), 60), S);
            let mut answer = ok(&format!("c{n}"), 1, 25);
            answer.contacts.clear();
            r.on_head(&flow(1), &answer, S);
        }
        let first = r.on_flow("eth0", &flow(1).key).unwrap().shown.unwrap().clone();
        r.unbind(&first);
        let on = r.on_flow("eth0", &flow(1).key).unwrap();
        assert_eq!(on.count, 1);
        assert_ne!(on.shown, Some(&first));
        assert!(on.shown.is_some());
    }
}
