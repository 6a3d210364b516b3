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
//! waiting for answers are capped (these by count and by the bytes they
//! hold), and so are the contacts a REGISTER binds; what a cap refuses is
//! counted. Bindings are ordered by AOR (a B-tree costs about what a hash
//! table does per entry here): "Contact: *" and a 430's AOR find theirs
//! without a walk of the table.

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
/// What the REGISTERs waiting for their answer may hold at most by default,
/// by [`PendingRegister::heap_bytes`]. An honest REGISTER (a contact or two)
/// costs some 300 bytes, so [`DEFAULT_MAX_PENDING`] of them fit with room to
/// spare; one stuffed with contacts costs up to 3.5 KB even cut to
/// [`MAX_CONTACTS_PER_REGISTER`], and 100 000 of those would be 350 MB.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 << 20;
/// Contacts of one REGISTER kept at most. A UA registers a handful (one per
/// interface or transport); a 1024-byte head can hold 200 tiny ones, each a
/// binding and a copy while it waits. The rest bind nothing and are counted.
pub const MAX_CONTACTS_PER_REGISTER: usize = 32;

const NS_PER_S: u64 = 1_000_000_000;

/// A flow, wherever it was seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub iface: String,
    pub key: FlowKey,
}

/// What identifies a binding: RFC 5626 §6's AOR + instance + reg-id (one
/// flow each), or RFC 3261's AOR + Contact URI. A plain binding's contact may
/// carry a `+sip.instance` without reg-id: kept to be shown, not part of what
/// identifies the binding (its Contact URI does, as for the registrar).
#[derive(Clone)]
pub struct BindingKey {
    /// The AOR, then the instance (outbound) or the Contact URI (plain), then
    /// a plain binding's instance, if any.
    text: Arc<str>,
    aor_len: u16,
    /// The length of the instance (outbound) or the Contact URI (plain).
    second_len: u16,
    /// Present for an outbound binding (RFC 5626 reg-ids start at 1).
    reg_id: Option<NonZeroU32>,
}

impl BindingKey {
    /// An outbound binding; a reg-id of 0 (outside RFC 5626's range) is no outbound binding.
    pub fn outbound(aor: &str, instance: &str, reg_id: u32) -> Option<Self> {
        Some(Self::new(aor, instance, "", Some(NonZeroU32::new(reg_id)?)))
    }

    pub fn plain(aor: &str, contact: &str) -> Self {
        Self::new(aor, contact, "", None)
    }

    /// A plain binding whose contact carries a `+sip.instance` but no reg-id.
    pub fn plain_of_instance(aor: &str, contact: &str, instance: &str) -> Self {
        Self::new(aor, contact, instance, None)
    }

    fn new(aor: &str, second: &str, instance: &str, reg_id: Option<NonZeroU32>) -> Self {
        // Heads are at most HEAD_MAX bytes: each text always fits a u16.
        let (aor, second) = (cut_to_u16(aor), cut_to_u16(second));
        let mut text = String::with_capacity(aor.len() + second.len() + instance.len());
        text.push_str(aor);
        text.push_str(second);
        text.push_str(instance);
        Self { text: text.into(), aor_len: aor.len() as u16, second_len: second.len() as u16, reg_id }
    }

    pub fn aor(&self) -> &str {
        &self.text[..usize::from(self.aor_len)]
    }

    /// The instance (outbound) or the Contact URI (plain).
    fn second(&self) -> &str {
        &self.text[usize::from(self.aor_len)..self.identity_len()]
    }

    /// The AOR and the second text: what identifies the binding, with its reg-id.
    fn identity(&self) -> &str {
        &self.text[..self.identity_len()]
    }

    fn identity_len(&self) -> usize {
        usize::from(self.aor_len) + usize::from(self.second_len)
    }

    /// `+sip.instance` of an outbound binding, or of a plain one's contact.
    pub fn instance(&self) -> Option<&str> {
        match self.reg_id {
            Some(_) => Some(self.second()),
            None => Some(&self.text[self.identity_len()..]).filter(|instance| !instance.is_empty()),
        }
    }

    /// The Contact URI of a plain binding.
    pub fn contact(&self) -> Option<&str> {
        self.reg_id.is_none().then(|| self.second())
    }

    pub fn reg_id(&self) -> Option<u32> {
        self.reg_id.map(NonZeroU32::get)
    }

    pub fn is_outbound(&self) -> bool {
        self.reg_id.is_some()
    }
}

impl PartialEq for BindingKey {
    fn eq(&self, other: &Self) -> bool {
        (self.identity(), self.reg_id) == (other.identity(), other.reg_id)
    }
}

impl Eq for BindingKey {}

impl std::hash::Hash for BindingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.identity(), self.reg_id).hash(state);
    }
}

/// By AOR first (every key's text starts with it), so that an AOR's bindings are a range.
impl Ord for BindingKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.identity(), self.reg_id).cmp(&(other.identity(), other.reg_id))
    }
}

impl PartialOrd for BindingKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.aor(), self.second())?;
        match (self.reg_id(), self.contact().and(self.instance())) {
            (Some(reg_id), _) => write!(f, " reg-id={reg_id}"),
            (None, Some(instance)) => write!(f, " +sip.instance={instance}"),
            (None, None) => Ok(()),
        }
    }
}

/// `text`, cut to a length a u16 holds.
fn cut_to_u16(text: &str) -> &str {
    &text[..floor_char_boundary(text, usize::from(u16::MAX))]
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
    /// A REGISTER arrived with --max-pending-registers already waiting, or
    /// with the waiting ones' memory at its budget (`Limits::max_pending_bytes`).
    pub pending_full: u64,
    /// A REGISTER carried more than [`MAX_CONTACTS_PER_REGISTER`] contacts:
    /// the first are kept, the rest bind nothing.
    pub too_many_contacts: u64,
    /// A REGISTER or its 2xx was cut before its end: Contact or Expires may be past the cut.
    pub cut_heads: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bindings: u32,
    pub max_pending: u32,
    /// The waiting REGISTERs' estimated heap bytes at most (see [`PendingRegister::heap_bytes`]).
    pub max_pending_bytes: usize,
    /// Every binding is routed by its flow (--all-bindings-by-flow).
    pub all_by_flow: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bindings: DEFAULT_MAX_BINDINGS,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            all_by_flow: false,
        }
    }
}

/// A REGISTER waiting for its final response: its flow, Call-ID and CSeq number.
type PendingId = (FlowRef, Box<str>, u32);

#[derive(Clone, Debug)]
struct PendingRegister {
    at_ns: u64,
    aor: String,
    contacts: Vec<Contact>,
    star: bool,
    expires: Option<u32>,
}

impl PendingRegister {
    /// What it and its id hold, as an estimate of heap bytes: the entry
    /// itself, the Call-ID, the AOR, the contacts and their strings (the
    /// table's own slack, up to twice its entries, is left out).
    fn heap_bytes(&self, id: &PendingId) -> usize {
        let contact_strings: usize =
            self.contacts.iter().map(|c| c.uri.capacity() + c.instance.as_ref().map_or(0, String::capacity)).sum();
        size_of::<(PendingId, Self)>()
            + id.1.len()
            + self.aor.capacity()
            + self.contacts.capacity() * size_of::<Contact>()
            + contact_strings
    }
}

/// The REGISTERs waiting for their final response, and what they hold.
#[derive(Default)]
struct Pending {
    requests: HashMap<PendingId, PendingRegister>,
    /// The sum of their `heap_bytes`.
    bytes: usize,
}

impl Pending {
    /// Whether `request` fits beside those waiting (replacing its own earlier copy, if any).
    fn has_room(&self, id: &PendingId, request: &PendingRegister, limits: &Limits) -> bool {
        let replaced = self.requests.get(id).map(|r| r.heap_bytes(id));
        let entries_after = self.requests.len() + usize::from(replaced.is_none());
        let bytes_after = self.bytes - replaced.unwrap_or(0) + request.heap_bytes(id);
        entries_after <= limits.max_pending as usize && bytes_after <= limits.max_pending_bytes
    }

    fn insert(&mut self, id: PendingId, request: PendingRegister) {
        self.remove(&id);
        self.bytes += request.heap_bytes(&id);
        self.requests.insert(id, request);
    }

    fn remove(&mut self, id: &PendingId) -> Option<PendingRegister> {
        let request = self.requests.remove(id)?;
        self.bytes -= request.heap_bytes(id);
        Some(request)
    }

    /// Forgets those for which `keep` is false.
    fn retain(&mut self, mut keep: impl FnMut(&PendingRegister) -> bool) {
        let bytes = &mut self.bytes;
        self.requests.retain(|id, request| {
            let kept = keep(request);
            if !kept {
                *bytes -= request.heap_bytes(id);
            }
            kept
        });
    }
}

#[derive(Default)]
pub struct Registrations {
    pending: Pending,
    bindings: BTreeMap<BindingKey, Stored>,
    /// How many of them are outbound (RFC 5626): the census reads it often.
    outbound: usize,
    /// The peers bindings are counted by, and the counts: by peer number,
    /// [plain, outbound], kept as bindings come and go, for the census.
    peers: Arc<Peers>,
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
    pub fn set_peers(&mut self, peers: Arc<Peers>) {
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
                let request = PendingRegister {
                    at_ns,
                    aor,
                    contacts: head.contacts.iter().take(MAX_CONTACTS_PER_REGISTER).cloned().collect(),
                    star: head.contact_star,
                    expires: head.expires,
                };
                if !self.pending.has_room(&id, &request, &self.limits) {
                    self.refused.pending_full += 1;
                    return Vec::new();
                }
                if head.contacts.len() > MAX_CONTACTS_PER_REGISTER {
                    self.refused.too_many_contacts += 1;
                }
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
        self.pending.retain(|p| now_ns.saturating_sub(p.at_ns) < REGISTER_TRANSACTION_NS);
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
            .range(BindingKey::plain(aor, "")..)
            .take_while(move |(key, _)| key.identity().starts_with(aor))
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
            let key = binding_key(&request.aor, contact);
            let by_flow = key.is_outbound() || routed_by_flow(contact, response) || self.limits.all_by_flow;
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

/// What identifies the binding a contact makes: its instance and reg-id where
/// it has both (RFC 5626 §6), else its URI (RFC 3261 §10.3), with the
/// instance kept beside it when it has one.
fn binding_key(aor: &str, contact: &Contact) -> BindingKey {
    let outbound = match (&contact.instance, contact.reg_id) {
        (Some(instance), Some(reg_id)) => BindingKey::outbound(aor, instance, reg_id),
        _ => None,
    };
    outbound.unwrap_or_else(|| match &contact.instance {
        Some(instance) => BindingKey::plain_of_instance(aor, &contact.uri, instance),
        None => BindingKey::plain(aor, &contact.uri),
    })
}

/// Whether an edge proxy routes requests for a binding without reg-id by its
/// flow: the UA asked for it with `;ob` in its Contact URI (RFC 5626 §5.3.2),
/// or the registrar said so. A registrar answers `Require: outbound` when it
/// applies outbound to the registration (RFC 5626 §6); Kamailio does so for a
/// contact with `+sip.instance` and no reg-id, routes to it by its flow and
/// answers 430 once that flow is gone. A contact without an instance gives
/// the registrar nothing to route by flow with, whatever the 2xx says.
fn routed_by_flow(contact: &Contact, response: &SipHead) -> bool {
    contact.ob || (contact.instance.is_some() && response.requires_outbound())
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
        r.set_peers(Arc::new(peers));
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

    /// Kamailio answers `Require: outbound` to a contact with +sip.instance and
    /// no reg-id, and routes to it by its flow: that binding warrants 430.
    #[test]
    fn the_registrars_require_outbound_routes_an_instance_without_reg_id_by_flow() {
        let contact = "<sip:alice@192.0.2.1:40000;transport=tcp>;+sip.instance=\"<urn:uuid:7>\"";
        let answered = |require: &str| {
            let mut r = Registrations::default();
            r.on_head(&flow(1), &register("c1", 1, contact, 600), S);
            let mut answer = ok("c1", 1, 25);
            answer.require = vec![require.to_string()];
            answer.contacts.clear();
            let changes = r.on_head(&flow(1), &answer, S);
            assert_eq!(changes.len(), 1, "{changes:?}");
            let on = r.on_flow("eth0", &flow(1).key).unwrap();
            let shown = on.shown.unwrap();
            assert_eq!((shown.instance(), shown.reg_id()), (Some("<urn:uuid:7>"), None), "the instance is kept");
            assert_eq!(shown.contact(), Some("sip:alice@192.0.2.1:40000;transport=tcp"));
            on.by_flow
        };
        assert!(answered("outbound"), "Require: outbound in the 2xx");
        assert!(answered("OUTBOUND"), "option tags ignore case");
        assert!(!answered("path"), "no word from the registrar: routed by its Contact URI");

        // Without an instance the registrar's word routes nothing by flow.
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:alice@192.0.2.1:40000>", 600), S);
        let mut answer = ok("c1", 1, 25);
        answer.contacts.clear();
        r.on_head(&flow(1), &answer, S);
        assert!(!r.on_flow("eth0", &flow(1).key).unwrap().by_flow);
    }

    #[test]
    fn a_plain_bindings_instance_does_not_change_what_identifies_it() {
        let with = BindingKey::plain_of_instance("sip:a@b", "sip:a@192.0.2.1", "<urn:uuid:1>");
        let without = BindingKey::plain("sip:a@b", "sip:a@192.0.2.1");
        assert_eq!(with, without, "the Contact URI identifies a plain binding");
        assert_eq!((with.instance(), without.instance()), (Some("<urn:uuid:1>"), None));
        let outbound = BindingKey::outbound("sip:a@b", "<urn:uuid:1>", 1).unwrap();
        assert_ne!(with, outbound);
        assert_eq!(format!("{with:?}"), "sip:a@b sip:a@192.0.2.1 +sip.instance=<urn:uuid:1>");
    }

    #[test]
    fn an_unanswered_register_binds_nothing_and_is_forgotten() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, "<sip:100@192.0.2.1:5060>", 3600), S);
        r.forget_unanswered(20 * S);
        assert_eq!(r.pending.requests.len(), 1, "still within the transaction's lifetime");
        r.forget_unanswered(40 * S);
        assert!(r.pending.requests.is_empty() && r.is_empty());
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
        let mut r = Registrations::new(Limits { max_bindings: 2, max_pending: 3, ..Limits::default() });
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

    /// A 1024-byte REGISTER with as many tiny contacts as fit.
    fn stuffed_register(call_id: &str) -> SipHead {
        let start =
            format!("REGISTER sip:e SIP/2.0\r\nTo: <sip:a@e>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: ");
        let contacts = vec!["a:b"; (1020 - start.len()) / 4].join(",");
        let head = parse(format!("{start}{contacts}\r\n\r\n").as_bytes()).expect("parse stuffed REGISTER");
        assert!(head.contacts.len() > 200, "{} contacts", head.contacts.len());
        head
    }

    #[test]
    fn a_flood_of_contact_stuffed_registers_stays_within_the_byte_budget() {
        let budget = 1 << 20;
        let limits = Limits { max_pending_bytes: budget, ..Limits::default() };
        let mut r = Registrations::new(limits);
        // An honest UA's REGISTER, waiting when the flood comes.
        r.on_head(&flow(1), &register("honest", 1, OUTBOUND_CONTACT, 3600), S);
        for n in 0..10_000 {
            r.on_head(&flow(2), &stuffed_register(&format!("flood-{n}")), S);
        }
        assert!(r.pending.bytes <= budget, "{} bytes waiting", r.pending.bytes);
        let kept = r.pending.requests.len() as u64 - 1;
        assert!(kept > 100, "the budget holds {kept} of them");
        assert_eq!(r.refused.pending_full, 10_000 - kept);
        assert_eq!(r.refused.too_many_contacts, kept, "each kept one lost contacts, counted once");
        // Each one kept holds its first contacts only.
        let most = r.pending.requests.values().map(|p| p.contacts.len()).max();
        assert_eq!(most, Some(MAX_CONTACTS_PER_REGISTER));
        // The estimate is what the table tracks, kept as entries come and go.
        let sum: usize = r.pending.requests.iter().map(|(id, p)| p.heap_bytes(id)).sum();
        assert_eq!(sum, r.pending.bytes);

        assert_eq!(r.on_head(&flow(1), &ok("honest", 1, 25), 2 * S).len(), 1, "the honest one binds");
        r.forget_unanswered(40 * S);
        assert_eq!((r.pending.requests.len(), r.pending.bytes), (0, 0), "the flood is forgotten with its bytes");
        r.on_head(&flow(3), &register("late", 1, "<sip:late@192.0.2.3:5060>", 3600), 41 * S);
        let mut answer = ok("late", 1, 25);
        answer.contacts.clear();
        let bound = r.on_head(&flow(3), &answer, 41 * S);
        assert!(matches!(bound[..], [Change::Bound { .. }]), "after the flood, REGISTERs bind again: {bound:?}");
    }

    #[test]
    fn the_default_byte_budget_holds_the_default_count_of_honest_registers() {
        let mut r = Registrations::default();
        r.on_head(&flow(1), &register("c1", 1, OUTBOUND_CONTACT, 3600), S);
        let honest = r.pending.bytes;
        assert!(honest * DEFAULT_MAX_PENDING as usize <= DEFAULT_MAX_PENDING_BYTES, "{honest} bytes each");
        let mut r = Registrations::default();
        r.on_head(&flow(1), &stuffed_register("c1"), S);
        let stuffed = r.pending.bytes;
        assert!(stuffed * DEFAULT_MAX_PENDING as usize > DEFAULT_MAX_PENDING_BYTES, "{stuffed} bytes each");
    }

    #[test]
    fn contacts_past_the_cap_bind_nothing_and_are_counted() {
        let mut r = Registrations::default();
        let contacts: Vec<String> = (0..40).map(|n| format!("<sip:u@192.0.2.1:{}>", 40000 + n)).collect();
        r.on_head(&flow(1), &register("c1", 1, &contacts.join(", "), 600), S);
        let mut answer = ok("c1", 1, 25);
        answer.contacts.clear();
        assert_eq!(r.on_head(&flow(1), &answer, S).len(), MAX_CONTACTS_PER_REGISTER);
        assert_eq!((r.len(), r.refused.too_many_contacts), (MAX_CONTACTS_PER_REGISTER, 1));
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
