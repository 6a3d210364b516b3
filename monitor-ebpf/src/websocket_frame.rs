//! SIP over WebSocket (RFC 7118): the frames of a `--ws-port` segment, read
//! by a program of its own (`sipflow_*_websocket`, tail-called by the entry
//! program for a segment with data), and of wss plaintext, read by the TLS
//! reader. One SIP message per frame (RFC 7118 §5).
//!
//! A frame may be longer than a segment (a WebRTC SDP is 3-8 KB), so a
//! segment's first byte is a frame head only where the side's last frame
//! ended: each side's `WsSide` keeps where that is, and the bytes of a segment
//! that starts inside a frame are never read as a head (a 0x89 there is no
//! ping). Where a side's framing is not known yet (a flow met mid-stream, or
//! framing lost), only a text or binary frame that carries a SIP message shows
//! where frames start; a ping or pong there is not believed.

use monitor_common::{
    counters::{Direction, KernelStat},
    flow::{FlowState, FlowTransport, WS_FRAMED, WsSide},
    tcp_sequence::after,
};
use monitor_ebpf::{
    frame::{Frame, MAX_HEADER_OFFSET, MAX_PAYLOAD, WINDOW},
    packet::Transport,
    payload::{self, Payload},
    websocket::{self, Opcode},
};

use crate::{
    flow,
    follow::Next,
    maps::{Scratch, bump_stat, flow_state},
    tally::count_message,
};

/// Frame heads followed past the first in one segment or read: a segment of a
/// browser's holds one frame or a few; past this many its framing is lost
/// until the next frame carrying SIP shows it again.
const MAX_HEADS: usize = 4;

/// The `websocket` program's step: the frame's message counted and recorded on its flow.
#[inline(always)]
pub fn read(frame: &impl Frame, scratch: Option<&mut Scratch>, direction: Direction) -> Next {
    let Some(scratch) = scratch else {
        return Next::Done;
    };
    scratch.ws_framed = 0;
    scratch.ws_mask = [0; 4];
    if !take_side(scratch) {
        return Next::Done;
    }
    let payload = classify(frame, scratch);
    let Some(state) = put_side(scratch) else {
        return Next::Done;
    };
    if payload != Payload::Other {
        count_message(payload, direction);
        flow::record_followed(frame, scratch, state, payload, direction);
    }
    Next::Done
}

/// Where, in a segment or read of `len` bytes at stream position `position`,
/// its first frame head is, by what its side's framing says.
#[derive(Copy, Clone, PartialEq, Eq)]
enum HeadAt {
    /// At this many bytes in, where the last frame ended.
    Known(usize),
    /// Framing not known: a head at the start is believed only if its frame carries SIP.
    Unknown,
    /// Inside a frame throughout: no head here.
    Inside,
}

#[inline(always)]
fn head_at(side: &mut WsSide, position: u32, len: usize) -> HeadAt {
    if side.known & WS_FRAMED == 0 {
        return HeadAt::Unknown;
    }
    let next = side.next_head;
    if after(position, next) {
        // Bytes before this were never read (a segment the host dropped, a
        // read not seen): where frames start is lost.
        side.known = 0;
        return HeadAt::Unknown;
    }
    let into = next.wrapping_sub(position) as usize;
    if into < len { HeadAt::Known(into) } else { HeadAt::Inside }
}

/// Copies the framing of the side that sent these bytes into the scratch,
/// for `classify`; false when the flow is not in the maps. Through the
/// scratch rather than a pointer into the map: the map holding the flow
/// may be either of two, and the verifier would walk `classify` once for each.
#[inline(always)]
pub fn take_side(scratch: &mut Scratch) -> bool {
    let Some(state) = flow_state(&scratch.key) else {
        return false;
    };
    // SAFETY: a live map value; see `flow::update` on concurrent writers.
    let state: &FlowState = unsafe { &*state };
    scratch.ws_side = if scratch.from_client != 0 { state.ws_client } else { state.ws_server };
    true
}

/// Writes the framing `classify` left in the scratch back into the flow,
/// and gives the flow for what is recorded next.
#[inline(always)]
pub fn put_side(scratch: &Scratch) -> Option<*mut FlowState> {
    let state = flow_state(&scratch.key)?;
    // SAFETY: a live map value; see `flow::update` on concurrent writers.
    let flow: &mut FlowState = unsafe { &mut *state };
    if scratch.from_client != 0 {
        flow.ws_client = scratch.ws_side;
    } else {
        flow.ws_server = scratch.ws_side;
    }
    Some(state)
}

/// Where these bytes start in the side's stream: a `--ws-port` segment by
/// its TCP sequence number, wss plaintext by the bytes of plaintext read
/// before (which this read then adds to).
#[inline(always)]
fn stream_position(scratch: &Scratch, side: &mut WsSide, len: usize) -> u32 {
    if scratch.key.transport == FlowTransport::Tls as u8 {
        let position = side.position;
        side.position = position.wrapping_add(len as u32);
        position
    } else {
        // SAFETY: a plain read of the scratch slot (volatile: see `Scratch`).
        unsafe { core::ptr::read_volatile(&scratch.stream_position) }
    }
}

/// Follows frame heads from the one `at` bytes in to the first that starts
/// past these `len` bytes, and keeps it as the side's next; loses the framing
/// where a head cannot be read whole or there are more than `MAX_HEADS`.
#[inline(always)]
fn follow_heads(
    frame: &impl Frame,
    scratch: &mut Scratch,
    side: &mut WsSide,
    base: usize,
    position: u32,
    at: usize,
    len: usize,
) {
    let mut into = at;
    let mut i = 0;
    while i < MAX_HEADS {
        if into >= len {
            side.next_head = position.wrapping_add(into as u32);
            side.known = WS_FRAMED;
            return;
        }
        let left = len - into;
        let loaded = if left < websocket::MAX_HEAD_LEN { left } else { websocket::MAX_HEAD_LEN };
        if into > MAX_PAYLOAD || !frame.load_bytes(base + into, loaded, &mut scratch.window) {
            break;
        }
        let Some(head) = websocket::frame_head(&scratch.window, loaded) else {
            break;
        };
        let frame_len = head.head_len as u64 + head.payload_len;
        if frame_len > MAX_PAYLOAD as u64 * 16 {
            // Longer than any SIP message sent over WebSocket: no frame of ours.
            break;
        }
        into += frame_len as usize;
        i += 1;
    }
    side.known = 0;
}

/// The WebSocket frame that starts first in the payload (RFC 6455 §5.2, RFC
/// 7118): a ping or pong frame is a keepalive; a text or binary frame's
/// payload is unmasked into the window and classified as the SIP message it
/// carries. Sets `ws_framed` when the payload is WebSocket at all, and keeps
/// where the side's next frame starts.
#[inline(always)]
pub fn classify(frame: &impl Frame, scratch: &mut Scratch) -> Payload {
    // SAFETY: plain reads of fields just written (volatile: see `Scratch`).
    let base = unsafe { core::ptr::read_volatile(&scratch.payload_offset) } as usize;
    let len = unsafe { core::ptr::read_volatile(&scratch.payload_len) } as usize;
    if base > MAX_HEADER_OFFSET || len > MAX_PAYLOAD || len == 0 {
        return Payload::Other;
    }
    let mut side = scratch.ws_side;
    let position = stream_position(scratch, &mut side, len);
    let payload = classify_at(frame, scratch, &mut side, base, position, len);
    scratch.ws_side = side;
    payload
}

#[inline(always)]
fn classify_at(
    frame: &impl Frame,
    scratch: &mut Scratch,
    side: &mut WsSide,
    base: usize,
    position: u32,
    len: usize,
) -> Payload {
    let at = match head_at(side, position, len) {
        HeadAt::Known(at) => at,
        HeadAt::Unknown => 0,
        HeadAt::Inside => {
            scratch.ws_framed = 1;
            bump_stat(KernelStat::WebsocketMidFrame);
            return Payload::Other;
        }
    };
    let known = side.known & WS_FRAMED != 0;
    let payload = frame_at(frame, scratch, base + at, len - at);
    // A frame that carries SIP shows where frames start; so does one whose head
    // and length end exactly where the segment does (a ping frame of its own,
    // a JavaScript UA's CRLF keepalive in a text frame), which the middle of a
    // longer frame matches only by a rare chance.
    let shows_framing = matches!(payload, Payload::Request(_) | Payload::Response(_)) || fills(scratch, at, len);
    if known || (shows_framing && scratch.ws_framed != 0) {
        follow_heads(frame, scratch, side, base, position, at, len);
        payload
    } else if scratch.ws_framed != 0 {
        // A ping, pong or other head where frames are not known to start: not believed.
        Payload::Other
    } else {
        payload
    }
}

/// The frame read at `at` ends exactly where these `len` bytes do (`frame_at`
/// leaves its head length and payload length in the scratch).
#[inline(always)]
fn fills(scratch: &Scratch, at: usize, len: usize) -> bool {
    // SAFETY: plain reads of the scratch slot (volatile: see `Scratch`).
    let (head_len, frame_payload) = unsafe {
        (core::ptr::read_volatile(&scratch.ws_head_len) as u64, core::ptr::read_volatile(&scratch.ws_payload_len))
    };
    head_len != 0 && (at as u64) + head_len + frame_payload == len as u64
}

/// The frame whose head is `offset` bytes into the frame (`len` bytes left).
#[inline(always)]
fn frame_at(frame: &impl Frame, scratch: &mut Scratch, offset: usize, payload_len: usize) -> Payload {
    if offset > MAX_PAYLOAD + MAX_HEADER_OFFSET || payload_len == 0 {
        return Payload::Other;
    }
    let loaded = if payload_len < WINDOW { payload_len } else { WINDOW };
    if !frame.load_bytes(offset, loaded, &mut scratch.window) {
        return Payload::Other;
    }
    scratch.ws_head_len = 0;
    let Some(head) = websocket::frame_head(&scratch.window, loaded) else {
        return Payload::Other;
    };
    scratch.ws_framed = 1;
    scratch.ws_head_len = head.head_len as u32;
    scratch.ws_payload_len = head.payload_len;
    match head.opcode {
        Opcode::Ping => return Payload::Ping,
        Opcode::Pong => return Payload::Pong,
        Opcode::Text | Opcode::Binary => {}
        // A later fragment, or the close: no message starts here.
        Opcode::Continuation | Opcode::Close => return Payload::Other,
    }
    if head.head_len >= payload_len {
        return Payload::Other;
    }
    let left = payload_len - head.head_len;
    let message_len = if (left as u64) < head.payload_len { left } else { head.payload_len as usize };
    // Through map memory and read back opaquely (see `Scratch`): what follows is
    // verified once, not once per head length and masked or not.
    // SAFETY: plain writes and reads of the scratch slot.
    let (start, message_len, mask) = unsafe {
        core::ptr::write_volatile(&mut scratch.payload_offset, (offset + head.head_len) as u32);
        core::ptr::write_volatile(&mut scratch.payload_len, message_len as u32);
        core::ptr::write_volatile(&mut scratch.ws_mask, head.mask);
        (
            core::ptr::read_volatile(&scratch.payload_offset) as usize,
            core::ptr::read_volatile(&scratch.payload_len) as usize,
            core::ptr::read_volatile(&scratch.ws_mask),
        )
    };
    if start > MAX_PAYLOAD + MAX_HEADER_OFFSET + websocket::MAX_HEAD_LEN
        || message_len > MAX_PAYLOAD
        || message_len == 0
    {
        return Payload::Other;
    }
    let loaded = if message_len < WINDOW { message_len } else { WINDOW };
    if !frame.load_bytes(start, loaded, &mut scratch.window) {
        return Payload::Other;
    }
    websocket::unmask(&mut scratch.window, loaded, mask);
    let payload = payload::classify(&scratch.window, loaded, message_len, Transport::Tcp);
    // SAFETY: as above: the flow update after it is verified once per kind of payload.
    unsafe {
        core::ptr::write_volatile(&mut scratch.payload, payload.encode());
        Payload::decode(core::ptr::read_volatile(&scratch.payload))
    }
}
