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
    /// KNOWN_* and FIN_ACCEPTED bits.
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

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// The payload was not seen before: its messages are counted and recorded.
    pub new_data: bool,
    /// The payload starts at or before the next expected sequence number: the
    /// flow carried valid data (what retracts an RST or FIN verdict).
    pub in_order: bool,
    pub close: Close,
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
    let mut judged = Judged { new_data: false, in_order: false, close: Close::None };
    if flags & SYN != 0 {
        // The SYN takes one sequence number; the data after it starts here.
        let next = segment.seq.wrapping_add(1);
        sender.next_seq = next;
        sender.high_seq = next;
        sender.known |= KNOWN_SEQ;
        let end = next.wrapping_add(segment.payload_len);
        if segment.payload_len != 0 {
            sender.next_seq = end;
            sender.high_seq = end;
            judged.new_data = true;
            judged.in_order = true;
        }
    } else {
        let start = segment.seq;
        let end = start.wrapping_add(segment.payload_len);
        if sender.known & KNOWN_SEQ == 0 {
            // First sight of this side mid-stream: its segment is the baseline.
            if flags & (RST | FIN) == 0 || segment.from_host {
                sender.next_seq = end;
                sender.high_seq = end;
                sender.known |= KNOWN_SEQ;
                judged.new_data = segment.payload_len != 0;
                judged.in_order = judged.new_data;
            }
        } else if segment.payload_len != 0 {
            if after(end, sender.next_seq) {
                judged.new_data = true;
                if !after(start, sender.next_seq) {
                    sender.next_seq = end;
                    judged.in_order = true;
                }
            }
            if after(end, sender.high_seq) {
                sender.high_seq = end;
            }
        }
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

/// The peer acknowledged `ack` of `side`'s data: what it received in order.
/// From the host itself that is its RCV.NXT, believed; from the other side
/// only as far as `side` was seen to send.
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
    if sender.known & KNOWN_SEQ == 0 {
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
        sender.known |= KNOWN_SEQ | FIN_ACCEPTED;
        return Close::Fin;
    }
    if sender.known & KNOWN_SEQ == 0 {
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
        SegmentHead { seq, ack: 7, window: 1000, flags: flags | ACK, payload_len, from_host: false }
    }

    fn established(next: u32) -> (TcpSide, TcpSide) {
        let mut client = TcpSide::default();
        let mut server = TcpSide::default();
        on_segment(&mut client, &server, &seg(next.wrapping_sub(1), SYN, 0));
        on_segment(&mut server, &client, &SegmentHead { from_host: true, ..seg(500, SYN, 0) });
        server.window = 1000;
        (client, server)
    }

    #[test]
    fn data_moves_the_mark_in_order_only() {
        let (mut c, s) = established(100);
        let j = on_segment(&mut c, &s, &seg(100, 0, 10));
        assert_eq!((j.new_data, j.in_order, c.next_seq), (true, true, 110));
        // The same segment again: a retransmission.
        assert!(!on_segment(&mut c, &s, &seg(100, 0, 10)).new_data);
        // A segment far ahead (forged, or out of order) is data but moves nothing.
        let j = on_segment(&mut c, &s, &seg(1_000_000, 0, 10));
        assert_eq!((j.new_data, j.in_order, c.next_seq), (true, false, 110));
        // So the real next segment is still new.
        assert!(on_segment(&mut c, &s, &seg(110, 0, 4)).new_data);
        assert_eq!(c.next_seq, 114);
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
        assert!(j.new_data && j.in_order);
        assert_eq!(c.next_seq, 5);
        assert_eq!(on_segment(&mut c, &s, &seg(5, RST, 0)).close, Close::Reset);
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<TcpSide>(), 16);
    }
}
