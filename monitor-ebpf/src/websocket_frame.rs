//! SIP over WebSocket (RFC 7118): the frame at a payload's start, read by a
//! program of its own (`sipflow_*_websocket`, tail-called by the entry program
//! for a `--ws-port` segment with data) and by the TLS plaintext reader (wss).
//! One SIP message per frame: no walk for more.

use monitor_common::counters::Direction;
use monitor_ebpf::{
    frame::{Frame, MAX_HEADER_OFFSET, MAX_PAYLOAD, WINDOW},
    packet::Transport,
    payload::{self, Payload},
    websocket::{self, Opcode},
};

use crate::{flow, follow::Next, maps::Scratch, tally::count_message};

/// The `websocket` program's step: the frame's message counted and recorded on its flow.
#[inline(always)]
pub fn read(frame: &impl Frame, scratch: Option<&mut Scratch>, direction: Direction) -> Next {
    let Some(scratch) = scratch else {
        return Next::Done;
    };
    scratch.ws_framed = 0;
    scratch.ws_mask = [0; 4];
    let payload = classify(frame, scratch);
    if payload != Payload::Other {
        count_message(payload, direction);
        flow::update_followed(frame, scratch, payload, direction);
    }
    Next::Done
}

/// The WebSocket frame at the payload's start (RFC 6455 §5.2, RFC 7118): a
/// ping or pong frame is a keepalive; a text or binary frame's payload is
/// unmasked into the window and classified as the SIP message it carries.
/// Sets `ws_framed` when the payload is a frame at all.
#[inline(always)]
pub fn classify(frame: &impl Frame, scratch: &mut Scratch) -> Payload {
    // SAFETY: plain reads of fields just written (volatile: see `Scratch`).
    let offset = unsafe { core::ptr::read_volatile(&scratch.payload_offset) } as usize;
    let payload_len = unsafe { core::ptr::read_volatile(&scratch.payload_len) } as usize;
    if offset > MAX_HEADER_OFFSET || payload_len > MAX_PAYLOAD || payload_len == 0 {
        return Payload::Other;
    }
    let loaded = if payload_len < WINDOW { payload_len } else { WINDOW };
    if !frame.load_bytes(offset, loaded, &mut scratch.window) {
        return Payload::Other;
    }
    let Some(head) = websocket::frame_head(&scratch.window, loaded) else {
        return Payload::Other;
    };
    scratch.ws_framed = 1;
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
    if start > MAX_HEADER_OFFSET + websocket::MAX_HEAD_LEN || message_len > MAX_PAYLOAD || message_len == 0 {
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
