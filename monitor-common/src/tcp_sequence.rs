//! What a TCP segment proves, judged the way the host's own TCP stack would
//! judge it (RFC 9293 §3.10.7.4, RFC 5961 §3 and §4).
//!
//! A monitor that believes every RST or FIN on the wire can be made to call
//! any flow dead by one forged packet, while the host, which checks the
//! sequence number, keeps the connection. So the kernel keeps, per flow and
//! side, the next sequence number the peer expects (its RCV.NXT), and accepts
//! a close only where the host would:
//! - an RST whose sequence number is exactly the next expected one; one that is
//!   merely inside the window gets a challenge ACK from the host, not a close
//!   (RFC 5961 §3.2), and one outside it is dropped;
//! - a FIN at the next expected sequence number (after the data it carries).
//!
//! What the host sends itself (the egress side) is the host's own decision,
//! and believed as it is. A side whose sequence is not known yet (a flow
//! first seen mid-stream, and no segment of that side seen) cannot be checked:
//! its RST or FIN is ignored and counted, a late verdict rather than a false one.
//!
//! Pure logic, no maps: the kernel calls it per segment, the host tests it.

use crate::counters::KernelStat;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// `TcpSide::known` bits.
/// `next_seq` and `high_seq` hold a value.
pub const KNOWN_SEQ: u8 = 1;
/// `ack` holds a value.
pub const KNOWN_ACK: u8 = 2;
/// This side's FIN was accepted.
pub const FIN_ACCEPTED: u8 = 4;
/// `next_seq` was taken from a segment nobody vouched for yet: a SYN, or the
/// first segment of a flow met mid-stream, which anyone who knows the four
/// addresses and ports can forge. Until the host acknowledges it (or, off a
/// tap, the peer acknowledges exactly it), it judges no RST or FIN.
pub const TENTATIVE: u8 = 8;

/// One side of a TCP flow, as the monitor saw it send.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct TcpSide {
    /// One past the last sequence number this side sent in order (SYN and FIN
    /// count one): what its peer expects next. Only in-order data moves it,
    /// and the peer's acknowledgments: a segment after a gap does not, so that
    /// a forged segment far ahead cannot make the real ones look old.
    pub next_seq: u32,
    /// One past the highest sequence number this side was seen to send, in
    /// order or not: an acknowledgment the host did not send itself may move
    /// `next_seq` up to here and no further.
    pub high_seq: u32,
    /// The last acknowledgment number this side sent.
    pub ack: u32,
    /// The last window this side advertised, as written (unscaled).
    pub window: u16,
    /// KNOWN_*, FIN_ACCEPTED and TENTATIVE bits.
    pub known: u8,
    pub _reserved: u8,
}

/// A segment's header fields that matter here.
#[derive(Copy, Clone, Debug)]
pub struct SegmentHead {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub flags: u8,
    pub payload_len: u32,
    /// The host sent it (seen on egress): its own stack's word, believed.
    pub from_host: bool,
    /// The connection was closed (an RST, or a FIN each way, accepted): a SYN
    /// may open a new one on the same addresses and ports.
    pub closed: bool,
}

/// What a segment means for its flow.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Close {
    None,
    /// An RST the host accepts (or sent).
    Reset,
    /// A FIN the host accepts (or sent).
    Fin,
    /// An RST or FIN the host would not act on: counted under this stat.
    Ignored(KernelStat),
}

/// What the host does with a segment's payload, and so what the monitor may read of it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No payload.
    Empty,
    /// New data at the next expected sequence number: the host reads it now.
    /// `skip` bytes at its start were seen before (a retransmission that
    /// merges old and new data): its messages start that far in.
    New { skip: u32 },
    /// Seen before, every byte: a retransmission.
    Old,
    /// After a gap, outside the window, or carried by a segment the host
    /// drops: nothing the host has read, so nothing to read here. Counted under the stat.
    Refused(KernelStat),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    pub payload: Payload,
    /// Valid data the host takes now (the payload is `New`): what retracts an RST or FIN verdict.
    pub in_order: bool,
    pub close: Close,
}

impl Judged {
    const NOTHING: Self = Self { payload: Payload::Empty, in_order: false, close: Close::None };
}

/// `a` comes after `b` in sequence space (RFC 9293 §3.4: modulo 2^32).
#[inline(always)]
pub const fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Updates `sender` (and what `receiver` acknowledged of it) with one segment
/// `sender` sent, and says what the segment proves.
#[inline(always)]
pub fn on_segment(sender: &mut TcpSide, receiver: &TcpSide, segment: &SegmentHead) -> Judged {
    let flags = segment.flags;
    if flags & SYN != 0 {
        return on_syn(sender, segment);
    }
    if acknowledges_unsent(receiver, segment) {
        // The host drops it whole: no mark moves, no close, no payload.
        let mut judged = Judged::NOTHING;
        judged.close = Close::Ignored(KernelStat::AckOfUnsentData);
        if segment.payload_len != 0 || flags & (RST | FIN) == 0 {
            judged.payload = Payload::Refused(KernelStat::AckOfUnsentData);
            judged.close = Close::None;
        }
        if flags & RST != 0 {
            // RST is judged by its sequence number alone (RFC 5961 §3.2), before the ACK.
            judged.close = judge_reset(sender, receiver, segment);
        }
        return judged;
    }
    let mut judged = Judged::NOTHING;
    let start = segment.seq;
    let end = start.wrapping_add(segment.payload_len);
    if segment.from_host && sender.known & KNOWN_SEQ != 0 && after(end, sender.high_seq) {
        // Whatever the host sends, it sent: a pure ACK or a probe after data the
        // monitor missed (its programs detached for a while) says how far it got.
        sender.high_seq = end;
    }
    if sender.known & KNOWN_SEQ == 0 {
        // First sight of this side mid-stream: its segment is the baseline, until vouched for.
        if flags & (RST | FIN) == 0 || segment.from_host {
            sender.next_seq = end;
            sender.high_seq = end;
            sender.known |= KNOWN_SEQ;
            if !segment.from_host {
                sender.known |= TENTATIVE;
            }
            if segment.payload_len != 0 {
                judged.payload = Payload::New { skip: 0 };
                judged.in_order = true;
            }
        }
    } else if segment.payload_len != 0 {
        judged.payload = judge_data(sender, segment);
        judged.in_order = matches!(judged.payload, Payload::New { .. });
    }
    if flags & ACK != 0 {
        sender.ack = segment.ack;
        sender.known |= KNOWN_ACK;
    }
    sender.window = segment.window;

    if flags & RST != 0 {
        judged.close = judge_reset(sender, receiver, segment);
    } else if flags & FIN != 0 {
        judged.close = judge_fin(sender, segment);
    }
    judged
}

/// A SYN takes one sequence number, and its data starts after it. On a
/// connection the host has open it changes nothing: the host answers with a
/// challenge ACK (RFC 5961 §4.2), so a SYN forged with a sequence number of
/// the forger's choosing cannot become the mark its RST is then judged by.
#[inline(always)]
fn on_syn(sender: &mut TcpSide, segment: &SegmentHead) -> Judged {
    let mut judged = Judged::NOTHING;
    let next = segment.seq.wrapping_add(1);
    let open = sender.known & KNOWN_SEQ != 0 && sender.known & TENTATIVE == 0 && !segment.closed;
    if open && !segment.from_host {
        // The same SYN again (a handshake's retransmission) is nothing new either.
        if next != sender.next_seq {
            judged.close = Close::Ignored(KernelStat::SynOnOpenFlow);
        }
        if segment.payload_len != 0 {
            judged.payload = Payload::Refused(KernelStat::SynOnOpenFlow);
        }
        return judged;
    }
    let end = next.wrapping_add(segment.payload_len);
    sender.next_seq = end;
    sender.high_seq = end;
    sender.known = (sender.known & KNOWN_ACK) | KNOWN_SEQ;
    if !segment.from_host {
        sender.known |= TENTATIVE;
    }
    if segment.flags & ACK != 0 {
        sender.ack = segment.ack;
        sender.known |= KNOWN_ACK;
    }
    sender.window = segment.window;
    if segment.payload_len != 0 {
        judged.payload = Payload::New { skip: 0 };
        judged.in_order = true;
    }
    judged
}

/// How far past the highest sequence number seen an acknowledgment may go and
/// still be taken for one of data the monitor missed (its programs detached
/// while the host sent, a keepalive probe one below SND.NXT) rather than of
/// data never sent: far more than a SIP flow sends in such a gap, far less
/// than the 2^31 a forger guessing blindly picks from.
pub const ACK_SLACK: u32 = 1 << 20;

/// An acknowledgment of data the receiver never sent (past its highest
/// sequence number seen, and `ACK_SLACK`): the host drops such a segment
/// (RFC 9293 §3.10.7.4). Only where the receiver's sequence is vouched for:
/// the host's own side, as seen leaving it, always is.
#[inline(always)]
fn acknowledges_unsent(receiver: &TcpSide, segment: &SegmentHead) -> bool {
    segment.flags & ACK != 0
        && !segment.from_host
        && receiver.known & KNOWN_SEQ != 0
        && receiver.known & TENTATIVE == 0
        && after(segment.ack, receiver.high_seq.wrapping_add(ACK_SLACK))
}

/// Data from a side whose sequence is known: new at the next expected
/// number (maybe after bytes seen before), old, or not in order.
#[inline(always)]
fn judge_data(sender: &mut TcpSide, segment: &SegmentHead) -> Payload {
    let start = segment.seq;
    let end = start.wrapping_add(segment.payload_len);
    if after(end, sender.high_seq) {
        sender.high_seq = end;
    }
    if !after(end, sender.next_seq) {
        return Payload::Old;
    }
    if after(start, sender.next_seq) {
        // A gap before it: the host keeps it (in the window) or drops it
        // (outside); either way nothing of it is read before the gap fills.
        return Payload::Refused(KernelStat::PayloadNotInOrder);
    }
    let skip = sender.next_seq.wrapping_sub(start);
    sender.next_seq = end;
    Payload::New { skip }
}

/// The peer acknowledged `ack` of `side`'s data: what it received in order.
/// From the host itself that is its RCV.NXT, believed, and it vouches for a
/// tentative mark (even one ahead of it: a forged baseline); from the other
/// side only as far as `side` was seen to send, and it vouches for the mark
/// where it acknowledges exactly that (off a tap, no word is the host's).
#[inline(always)]
pub fn on_acknowledged(side: &mut TcpSide, ack: u32, from_host: bool) {
    if side.known & KNOWN_SEQ == 0 {
        if from_host {
            side.next_seq = ack;
            side.high_seq = ack;
            side.known |= KNOWN_SEQ;
        }
        return;
    }
    if side.known & TENTATIVE != 0 {
        if from_host {
            side.next_seq = ack;
            if after(ack, side.high_seq) {
                side.high_seq = ack;
            }
            side.known &= !TENTATIVE;
        } else if ack == side.next_seq {
            side.known &= !TENTATIVE;
        }
        return;
    }
    if after(ack, side.next_seq) && (from_host || !after(ack, side.high_seq)) {
        side.next_seq = ack;
        if after(ack, side.high_seq) {
            side.high_seq = ack;
        }
    }
}

#[inline(always)]
fn judge_reset(sender: &TcpSide, receiver: &TcpSide, segment: &SegmentHead) -> Close {
    if segment.from_host {
        return Close::Reset;
    }
    if sender.known & KNOWN_SEQ == 0 || sender.known & TENTATIVE != 0 {
        // A connection refused: the RST answers the host's SYN, and acknowledges it exactly.
        let answers_syn =
            segment.flags & ACK != 0 && receiver.known & KNOWN_SEQ != 0 && segment.ack == receiver.next_seq;
        return if answers_syn { Close::Reset } else { Close::Ignored(KernelStat::CloseUnverifiable) };
    }
    let expected = sender.next_seq;
    // After the sender's FIN the host also takes RCV.NXT - 1 (Linux's tcp_reset_check).
    if segment.seq == expected || (sender.known & FIN_ACCEPTED != 0 && segment.seq == expected.wrapping_sub(1)) {
        return Close::Reset;
    }
    // The receiver's window, unscaled: a lower bound of the real one.
    let offset = segment.seq.wrapping_sub(expected);
    if offset < u32::from(receiver.window).max(1) {
        Close::Ignored(KernelStat::RstInWindow)
    } else {
        Close::Ignored(KernelStat::RstOutOfWindow)
    }
}

#[inline(always)]
fn judge_fin(sender: &mut TcpSide, segment: &SegmentHead) -> Close {
    let fin_seq = segment.seq.wrapping_add(segment.payload_len);
    if segment.from_host {
        sender.next_seq = fin_seq.wrapping_add(1);
        if after(sender.next_seq, sender.high_seq) {
            sender.high_seq = sender.next_seq;
        }
        sender.known |= KNOWN_SEQ | FIN_ACCEPTED;
        return Close::Fin;
    }
    if sender.known & KNOWN_SEQ == 0 || sender.known & TENTATIVE != 0 {
        return Close::Ignored(KernelStat::CloseUnverifiable);
    }
    // The data before the FIN moved next_seq to the FIN's own number, when in order.
    if fin_seq == sender.next_seq {
        sender.next_seq = fin_seq.wrapping_add(1);
        sender.high_seq = sender.next_seq;
        sender.known |= FIN_ACCEPTED;
        return Close::Fin;
    }
    if sender.known & FIN_ACCEPTED != 0 && fin_seq.wrapping_add(1) == sender.next_seq {
        // The same FIN again: nothing new.
        return Close::None;
    }
    Close::Ignored(KernelStat::FinOutOfSequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, flags: u8, payload_len: u32) -> SegmentHead {
        SegmentHead { seq, ack: 501, window: 1000, flags: flags | ACK, payload_len, from_host: false, closed: false }
    }

    /// A client connected to the host: its SYN, the host's SYN-ACK vouching for it.
    fn established(next: u32) -> (TcpSide, TcpSide) {
        let mut client = TcpSide::default();
        let mut server = TcpSide::default();
        on_segment(&mut client, &server, &SegmentHead { flags: SYN, ..seg(next.wrapping_sub(1), 0, 0) });
        on_segment(&mut server, &client, &SegmentHead { from_host: true, ..seg(500, SYN, 0) });
        on_acknowledged(&mut client, next, true);
        server.window = 1000;
        (client, server)
    }

    fn new(skip: u32) -> Payload {
        Payload::New { skip }
    }

    #[test]
    fn data_moves_the_mark_in_order_only() {
        let (mut c, s) = established(100);
        let j = on_segment(&mut c, &s, &seg(100, 0, 10));
        assert_eq!((j.payload, j.in_order, c.next_seq), (new(0), true, 110));
        // The same segment again: a retransmission.
        assert_eq!(on_segment(&mut c, &s, &seg(100, 0, 10)).payload, Payload::Old);
        // A segment far ahead (forged, or out of order) is not read, and moves nothing.
        let j = on_segment(&mut c, &s, &seg(1_000_000, 0, 10));
        assert_eq!((j.payload, j.in_order, c.next_seq), (Payload::Refused(KernelStat::PayloadNotInOrder), false, 110));
        // So the real next segment is still new.
        assert_eq!(on_segment(&mut c, &s, &seg(110, 0, 4)).payload, new(0));
        assert_eq!(c.next_seq, 114);
    }

    #[test]
    fn a_retransmission_that_merges_old_and_new_data_is_read_from_the_new() {
        let (mut c, s) = established(100);
        on_segment(&mut c, &s, &seg(100, 0, 10));
        let j = on_segment(&mut c, &s, &seg(100, 0, 30));
        assert_eq!((j.payload, c.next_seq), (new(10), 130));
    }

    #[test]
    fn rst_at_the_next_sequence_closes_others_are_ignored() {
        let (mut c, s) = established(100);
        on_segment(&mut c, &s, &seg(100, 0, 10));
        assert_eq!(on_segment(&mut c.clone(), &s, &seg(110, RST, 0)).close, Close::Reset);
        assert_eq!(on_segment(&mut c.clone(), &s, &seg(111, RST, 0)).close, Close::Ignored(KernelStat::RstInWindow));
        assert_eq!(on_segment(&mut c.clone(), &s, &seg(109, RST, 0)).close, Close::Ignored(KernelStat::RstOutOfWindow));
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(110 + 5_000_000, RST, 0)).close,
            Close::Ignored(KernelStat::RstOutOfWindow)
        );
    }

    #[test]
    fn fin_at_the_next_sequence_closes_others_are_ignored() {
        let (mut c, s) = established(100);
        assert_eq!(on_segment(&mut c.clone(), &s, &seg(100, FIN, 0)).close, Close::Fin);
        // With data before it: the FIN sits after the data.
        assert_eq!(on_segment(&mut c.clone(), &s, &seg(100, FIN, 10)).close, Close::Fin);
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(150, FIN, 0)).close,
            Close::Ignored(KernelStat::FinOutOfSequence)
        );
        // Accepted once; the same FIN again is nothing new, an RST after it may use RCV.NXT - 1.
        assert_eq!(on_segment(&mut c, &s, &seg(100, FIN, 0)).close, Close::Fin);
        assert_eq!(on_segment(&mut c, &s, &seg(100, FIN, 0)).close, Close::None);
        assert_eq!(on_segment(&mut c, &s, &seg(100, RST, 0)).close, Close::Reset);
    }

    #[test]
    fn a_forged_syn_on_an_open_connection_moves_no_mark() {
        let (mut c, s) = established(100);
        on_segment(&mut c, &s, &seg(100, 0, 10));
        let before = c;
        let forged = SegmentHead { flags: SYN, ..seg(0x4242_0000, 0, 0) };
        assert_eq!(on_segment(&mut c, &s, &forged).close, Close::Ignored(KernelStat::SynOnOpenFlow));
        assert_eq!(c, before);
        // Its RST and FIN|ACK one past it are judged against the real mark.
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x4242_0001, RST, 0)).close,
            Close::Ignored(KernelStat::RstOutOfWindow)
        );
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x4242_0001, FIN, 0)).close,
            Close::Ignored(KernelStat::FinOutOfSequence)
        );
        // The handshake's own SYN sent again is nothing at all.
        let again = SegmentHead { flags: SYN, ..seg(99, 0, 0) };
        let (mut fresh, s) = established(100);
        assert_eq!(on_segment(&mut fresh, &s, &again).close, Close::None);
        // After the connection closed, a SYN opens a new one on the same ports.
        let reopened = SegmentHead { closed: true, ..forged };
        on_segment(&mut c, &s, &reopened);
        assert_eq!((c.next_seq, c.known & TENTATIVE), (0x4242_0001, TENTATIVE));
    }

    #[test]
    fn a_mark_nobody_vouched_for_judges_no_close_until_the_host_acknowledges_it() {
        // A flow met mid-stream (or evicted and met again): a forged segment is its first.
        let mut c = TcpSide::default();
        let mut s = TcpSide::default();
        let forged = seg(0x7000_0000, 0, 4);
        assert_eq!(on_segment(&mut c, &s, &forged).payload, new(0));
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x7000_0004, RST, 0)).close,
            Close::Ignored(KernelStat::CloseUnverifiable)
        );
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x7000_0004, FIN, 0)).close,
            Close::Ignored(KernelStat::CloseUnverifiable)
        );
        // A forged SYN does not vouch either.
        on_segment(&mut c, &s, &SegmentHead { flags: SYN, ..seg(0x7100_0000, 0, 0) });
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x7100_0001, RST, 0)).close,
            Close::Ignored(KernelStat::CloseUnverifiable)
        );
        // The host's acknowledgment is its RCV.NXT: the real mark, even behind the forged one.
        on_segment(&mut s, &c, &SegmentHead { from_host: true, ack: 5000, ..seg(800, 0, 0) });
        on_acknowledged(&mut c, 5000, true);
        assert_eq!((c.next_seq, c.known & TENTATIVE), (5000, 0));
        assert_eq!(
            on_segment(&mut c.clone(), &s, &seg(0x7100_0001, RST, 0)).close,
            Close::Ignored(KernelStat::RstOutOfWindow)
        );
        assert_eq!(on_segment(&mut c, &s, &seg(5000, RST, 0)).close, Close::Reset);
    }

    #[test]
    fn off_a_tap_the_peer_acknowledging_exactly_the_mark_vouches_for_it() {
        let mut c = TcpSide::default();
        on_segment(&mut c, &TcpSide::default(), &seg(100, 0, 10));
        on_acknowledged(&mut c, 200, false);
        assert_eq!(c.known & TENTATIVE, TENTATIVE, "an acknowledgment of something else vouches for nothing");
        on_acknowledged(&mut c, 110, false);
        assert_eq!((c.next_seq, c.known & TENTATIVE), (110, 0));
    }

    #[test]
    fn a_segment_acknowledging_unsent_data_is_dropped_whole() {
        let (mut c, s) = established(100);
        // The host sent up to 501; a ping acknowledging far past it is no segment the host takes.
        let ping = SegmentHead { ack: 501 + ACK_SLACK + 1, ..seg(100, 0, 4) };
        let j = on_segment(&mut c, &s, &ping);
        assert_eq!((j.payload, c.next_seq), (Payload::Refused(KernelStat::AckOfUnsentData), 100));
        let fin = SegmentHead { ack: 501 + ACK_SLACK + 1, ..seg(100, FIN, 0) };
        assert_eq!(on_segment(&mut c, &s, &fin).close, Close::Ignored(KernelStat::AckOfUnsentData));
        // The same ping acknowledging what was sent is read, and so is one acknowledging
        // data the monitor may have missed (within the slack).
        let missed = SegmentHead { ack: 9000, ..seg(100, 0, 4) };
        assert_eq!(on_segment(&mut c, &s, &missed).payload, new(0));
    }

    #[test]
    fn whatever_the_host_sends_moves_its_highest_sequence_number() {
        let (mut c, mut s) = established(100);
        // The host closes: its FIN takes a number, and the client's FIN-ACK acknowledges it.
        on_segment(&mut s, &c, &SegmentHead { from_host: true, ..seg(501, FIN, 0) });
        assert_eq!(s.high_seq, 502);
        assert_eq!(on_segment(&mut c, &s, &SegmentHead { ack: 502, ..seg(100, FIN, 0) }).close, Close::Fin);
        // A pure ACK of the host's, after data the monitor did not see, says where it got.
        let (_, mut s) = established(100);
        on_segment(&mut s, &c, &SegmentHead { from_host: true, ..seg(4_000_000, 0, 0) });
        assert_eq!(s.high_seq, 4_000_000);
    }

    #[test]
    fn a_side_never_seen_cannot_close_unless_it_refuses_a_syn() {
        let mut c = TcpSide::default();
        let s = TcpSide::default();
        assert_eq!(on_segment(&mut c, &s, &seg(5, RST, 0)).close, Close::Ignored(KernelStat::CloseUnverifiable));
        assert_eq!(on_segment(&mut c, &s, &seg(5, FIN, 0)).close, Close::Ignored(KernelStat::CloseUnverifiable));
        assert_eq!(c.known & KNOWN_SEQ, 0, "an unverifiable segment is no baseline");
        // The host connected out (its SYN seen on egress); the peer refuses it.
        let mut host = TcpSide::default();
        on_segment(&mut host, &c, &SegmentHead { from_host: true, ..seg(900, SYN, 0) });
        let refusal = SegmentHead { ack: 901, ..seg(0, RST, 0) };
        assert_eq!(on_segment(&mut c, &host, &refusal).close, Close::Reset);
    }

    #[test]
    fn the_hosts_own_rst_and_fin_are_believed() {
        let mut host = TcpSide::default();
        let c = TcpSide::default();
        let own = |flags| SegmentHead { from_host: true, ..seg(12345, flags, 0) };
        assert_eq!(on_segment(&mut host.clone(), &c, &own(RST)).close, Close::Reset);
        assert_eq!(on_segment(&mut host, &c, &own(FIN)).close, Close::Fin);
    }

    #[test]
    fn acknowledgments_move_the_mark_the_hosts_fully_others_within_what_was_sent() {
        let (mut c, s) = established(100);
        // Data the monitor saw out of order (a gap before it).
        on_segment(&mut c, &s, &seg(120, 0, 10));
        assert_eq!((c.next_seq, c.high_seq), (100, 130));
        // The other side acknowledging beyond what was sent moves nothing.
        on_acknowledged(&mut c, 200, false);
        assert_eq!(c.next_seq, 100);
        on_acknowledged(&mut c, 130, false);
        assert_eq!(c.next_seq, 130);
        // The host's own acknowledgment is its RCV.NXT.
        on_acknowledged(&mut c, 140, true);
        assert_eq!(c.next_seq, 140);
        // Never backwards.
        on_acknowledged(&mut c, 120, true);
        assert_eq!(c.next_seq, 140);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (mut c, s) = established(u32::MAX - 4);
        let j = on_segment(&mut c, &s, &seg(u32::MAX - 4, 0, 10));
        assert!(j.in_order);
        assert_eq!(c.next_seq, 5);
        assert_eq!(on_segment(&mut c, &s, &seg(5, RST, 0)).close, Close::Reset);
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<TcpSide>(), 16);
    }
}
