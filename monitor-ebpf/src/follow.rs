//! Several SIP messages in one TCP segment (RFC 3261 §18.3): after the
//! segment's first message is counted, two programs that tail-call each other
//! walk the rest. `scan` reads one window of a head for the empty line and the
//! Content-Length that together say where the next message starts; `message`
//! counts the message that starts there. Each stays small for the verifier,
//! and the kernel's limit of 33 tail calls bounds the walk.

use core::ptr::{read_volatile, write_volatile};

use monitor_common::counters::{Direction, KernelStat};
use monitor_ebpf::{
    frame::{Frame, WINDOW},
    framing::HeadScan,
    packet::Transport,
    payload::{self, Payload},
};

use crate::{
    flow,
    maps::{Scratch, bump_stat},
    tally::count_message,
};

/// Messages counted in one segment at most; a segment with more is counted
/// under `KernelStat::MessageBoundReached`.
pub const MAX_MESSAGES: u32 = 16;
/// No payload byte lies further into a frame than this (64 KiB of IP datagram
/// behind the headers); a bound the verifier can see.
const MAX_OFFSET: usize = 70_000;

/// Sets up the walk after a segment's first message; false when that was no
/// SIP message, so that there is nothing to follow.
#[inline(always)]
pub fn start(scratch: &mut Scratch, payload: Payload) -> bool {
    if !matches!(payload, Payload::Request(_) | Payload::Response(_)) {
        return false;
    }
    let follow = &mut scratch.follow;
    follow.cursor = scratch.payload_offset;
    follow.end = scratch.payload_offset + scratch.payload_len;
    follow.messages = 1;
    follow.window_at = scratch.payload_offset;
    follow.scan = HeadScan::default();
    true
}

/// Sets up the walk at new data that follows bytes seen before (a
/// retransmission that merges old and new data: `scratch.payload_offset`
/// points past the old): its first message is counted by `message`, as a
/// further message of a segment is.
#[inline(always)]
pub fn start_at_new_data(scratch: &mut Scratch) -> Next {
    let follow = &mut scratch.follow;
    follow.cursor = scratch.payload_offset;
    follow.end = scratch.payload_offset + scratch.payload_len;
    follow.messages = 0;
    // Nothing loaded yet: no payload offset is this one.
    follow.window_at = u32::MAX;
    follow.scan = HeadScan::default();
    Next::Message
}

/// What the walk does next: the slot of `FOLLOW_XDP` / `FOLLOW_TC` to tail-call.
#[derive(Copy, Clone, PartialEq, Eq)]
#[repr(u32)]
pub enum Next {
    /// Scan the head at the cursor (`sipflow_*_scan`).
    Scan = 0,
    /// Count the message whose start line is at the cursor (`sipflow_*_message`).
    Message = 1,
    /// Read the WebSocket frame at the payload's start (`sipflow_*_websocket`).
    Websocket = 2,
    Done = 3,
    /// Done, the segment holding more messages than `MAX_MESSAGES`: counted,
    /// and logged by the caller, which has the context aya-log needs.
    Bound = 4,
}

/// The walk's cursor and end, left in the scratch by the program that
/// tail-called us, or `None` when it is over.
#[inline(always)]
fn resume(scratch: &Scratch) -> Option<(usize, usize)> {
    // SAFETY: plain reads of the scratch slot; volatile so that the verifier
    // sees unknown values, not the ones of one path through the caller.
    let cursor = unsafe { read_volatile(&scratch.follow.cursor) } as usize;
    let end = unsafe { read_volatile(&scratch.follow.end) } as usize;
    if cursor >= end || end > MAX_OFFSET {
        return None;
    }
    Some((cursor, end))
}

/// The `scan` program's step.
#[inline(always)]
pub fn scan(frame: &impl Frame, scratch: Option<&mut Scratch>) -> Next {
    let Some(scratch) = scratch else {
        return Next::Done;
    };
    match resume(scratch) {
        Some((cursor, end)) => scan_head(frame, scratch, cursor, end),
        None => Next::Done,
    }
}

/// The `message` program's step.
#[inline(always)]
pub fn message(frame: &impl Frame, scratch: Option<&mut Scratch>, direction: Direction) -> Next {
    let Some(scratch) = scratch else {
        return Next::Done;
    };
    match resume(scratch) {
        Some((cursor, end)) => message_at_cursor(frame, scratch, cursor, end, direction),
        None => Next::Done,
    }
}

/// Counts the message whose start line is at the cursor; a stream may put
/// CRLFs between messages (RFC 5626 §3.5.1), which are stepped over first.
#[inline(always)]
fn message_at_cursor(
    frame: &impl Frame,
    scratch: &mut Scratch,
    cursor: usize,
    end: usize,
    direction: Direction,
) -> Next {
    let left = end - cursor;
    let loaded = if left < WINDOW { left } else { WINDOW };
    if !window_at(frame, scratch, cursor, loaded) {
        return Next::Done;
    }
    let skip = payload::leading_crlf(&scratch.window, loaded, left);
    if skip > 0 {
        scratch.follow.cursor = (cursor + skip) as u32;
        return Next::Message;
    }
    // A keepalive that ends the segment (after a message, or the new bytes of
    // a retransmission that merged old and new) is one too.
    let payload = match payload::classify(&scratch.window, loaded, left, Transport::Tcp) {
        Payload::Request(method) => Payload::Request(method),
        Payload::Response(code) => Payload::Response(code),
        keepalive @ (Payload::Ping | Payload::Pong) => {
            count_message(keepalive, direction);
            flow::update_followed(frame, scratch, keepalive, direction);
            return Next::Done;
        }
        // Not where a message should start: the framing is lost, stop here.
        _ => return Next::Done,
    };
    scratch.follow.messages += 1;
    count_message(payload, direction);
    scratch.payload_offset = cursor as u32;
    scratch.payload_len = left as u32;
    flow::update_followed(frame, scratch, payload, direction);
    Next::Scan
}

/// Scans one window of the current head. At its end, moves the cursor past
/// the body to the next message.
#[inline(always)]
fn scan_head(frame: &impl Frame, scratch: &mut Scratch, cursor: usize, end: usize) -> Next {
    let left = end - cursor;
    let loaded = if left < WINDOW { left } else { WINDOW };
    if !window_at(frame, scratch, cursor, loaded) {
        return Next::Done;
    }
    scratch.follow.head_end = 0;
    let mut i = 0;
    while i < WINDOW && i < loaded {
        if scratch.follow.scan.step(scratch.window[i]) {
            // SAFETY: a plain write to the scratch slot (see `Follow::head_end`).
            unsafe { write_volatile(&mut scratch.follow.head_end, (i + 1) as u32) };
            break;
        }
        i += 1;
    }
    // SAFETY: plain reads of the scratch slot, opaque on purpose (see `Follow::head_end`).
    let head_end = unsafe { read_volatile(&scratch.follow.head_end) } as usize;
    let body = unsafe { read_volatile(&scratch.follow.scan.content_length) } as usize;
    if head_end == 0 {
        scratch.follow.cursor = (cursor + loaded) as u32;
        return if cursor + loaded < end { Next::Scan } else { Next::Done };
    }
    let next = cursor + head_end + body;
    if next >= end {
        // The segment ends inside this message (or with it).
        return Next::Done;
    }
    if scratch.follow.messages >= MAX_MESSAGES {
        bump_stat(KernelStat::MessageBoundReached);
        return Next::Bound;
    }
    scratch.follow.cursor = next as u32;
    scratch.follow.scan = HeadScan::default();
    Next::Message
}

/// Makes the window hold the `loaded` bytes at `cursor`, loading them only
/// when it holds another offset's. Within one walk the bytes at an offset are
/// always the same count, `min(end - cursor, WINDOW)`.
#[inline(always)]
fn window_at(frame: &impl Frame, scratch: &mut Scratch, cursor: usize, loaded: usize) -> bool {
    // SAFETY: a plain read of the scratch slot (volatile: see `resume`).
    if unsafe { read_volatile(&scratch.follow.window_at) } as usize == cursor {
        return true;
    }
    if !frame.load_bytes(cursor, loaded, &mut scratch.window) {
        return false;
    }
    scratch.follow.window_at = cursor as u32;
    true
}
