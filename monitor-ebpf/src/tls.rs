//! SIP inside TLS, read where the host's TLS library holds it in clear: the
//! buffer of each SSL_read and SSL_write (uprobes on libssl, attached to the
//! SIP server's processes only; the socket tracepoints, which fire in every
//! process, leave at once in the others: `TLS_PROCESSES`), handed to the
//! same classifier and walker as a TCP segment's payload, and recorded on the
//! flow the XDP and TC programs keep for the connection.
//!
//! Which connection a call is on: the socket the thread reads or writes
//! (the `sock_recv_length` and `sock_send_length` tracepoints, raw: no tracefs
//! needed, and kprobes need not be built in), not the SSL object's fd, whose
//! place inside OpenSSL's structures changes between versions and which a
//! memory BIO does not have at all. Nor the SSL object's address: Kamailio
//! keeps it in shared memory and writes it from whichever process has a
//! message for the flow. A library that reads the socket itself does so
//! inside SSL_read, and writes inside SSL_write. Servers that decrypt from
//! memory (Kamailio's tls module, Python's asyncio) read the socket just
//! before SSL_read and write it just after SSL_write, in the same thread:
//! their read is the thread's last SIPS-socket read. Either way a write's
//! plaintext, there from the call's entry, waits for the thread's next write
//! to a SIPS socket at least as long as its record (a record is longer than
//! what it carries), and is read then: a write needs no return probe. A write
//! that failed never shows: the thread's next SSL call counts it
//! (`socket_unknown`). A thread
//! that read two SIPS sockets before it decrypted either is not guessed at:
//! those reads are counted as `socket_unknown` and read into no flow. Only
//! sockets whose local port is a SIPS port count: the host as the TLS server,
//! so a client on the same host (one of whose flows crosses a monitored
//! interface) is never counted twice.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use monitor_common::{
    counters::{Direction, KernelStat},
    flow::FlowKey,
    tls::{MAX_RECORD_PLAINTEXT, SslOp, tls_process_bit},
};

use monitor_ebpf::frame::MAX_PAYLOAD;

use crate::{
    flow,
    follow::{self, Next},
    maps::{
        LAST_RECV, LastRecv, SSL_CALLS, SslCall, TLS_PROCESSES, TLS_SCRATCH, TLS_SCRATCH_TEMPLATE, TlsScratch,
        bump_stat,
    },
    observe::classify_plaintext,
    sock,
    tally::count_message,
    user_frame::UserFrame,
    websocket_frame,
};

/// `SslCall::keyed`: no socket seen in the call yet; a SIPS port's (`key`
/// holds its flow); another socket's.
const UNKEYED: u8 = 0;
const KEYED: u8 = 1;
const FOREIGN: u8 = 2;

/// An SSL call begins: remember a read's buffer until it returns, a write's
/// until the thread writes its socket.
#[inline(always)]
pub fn ssl_entry(ctx: &ProbeContext, op: SslOp, ex: bool) {
    let Some(buffer) = ctx.arg::<u64>(1) else {
        return;
    };
    let (count_at, waiting_len) = if op == SslOp::Write {
        // `int num` for SSL_write, `size_t num` for SSL_write_ex.
        let requested = ctx.arg::<u64>(2).unwrap_or(0);
        let len = if ex { requested } else { (requested as i32).max(0) as u64 };
        if len == 0 {
            return;
        }
        (0, if len > MAX_PAYLOAD as u64 { MAX_PAYLOAD as u32 } else { len as u32 })
    } else {
        let count_at = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
        if ex && count_at == 0 {
            return;
        }
        (count_at, 0)
    };
    let thread = bpf_get_current_pid_tgid();
    if op == SslOp::Read {
        // Decrypting from memory consumes what the thread read, whatever the call returns.
        consumed(thread);
    }
    // SAFETY: a read of this thread's entry; only this thread writes it.
    if let Some(before) = SSL_CALLS.get_ptr(&thread)
        && unsafe { (*before).waiting } != 0
    {
        // A write never followed by a write to its socket: its plaintext goes unread.
        bump_stat(KernelStat::TlsSocketUnknown);
    }
    let call = SslCall {
        buffer,
        count_at,
        key: FlowKey::UNSET,
        waiting_len,
        op: op as u8,
        keyed: UNKEYED,
        waiting: (op == SslOp::Write) as u8,
        _reserved: 0,
    };
    let _ = SSL_CALLS.insert(&thread, &call, 0);
}

/// An SSL_read returns. True when its plaintext is to be read: the thread's
/// scratch is set up for `first`.
#[inline(always)]
pub fn ssl_return(ctx: &RetProbeContext) -> bool {
    let thread = bpf_get_current_pid_tgid();
    let Some(call) = SSL_CALLS.get_ptr_mut(&thread) else {
        return false;
    };
    // SAFETY: this thread's entry; only this thread writes it.
    let call = unsafe { &mut *call };
    if call.op != SslOp::Read as u8 {
        // A write waiting for its socket (writes have no return probe; one left by another agent).
        return false;
    }
    let rc: i64 = ctx.ret();
    let rc = rc as i32;
    let len = if call.count_at != 0 {
        // SAFETY: the helper checks the user address.
        if rc == 1 { unsafe { bpf_probe_read_user(call.count_at as *const u64) }.unwrap_or(0) } else { 0 }
    } else if rc > 0 {
        rc as u64
    } else {
        0
    };
    if len == 0 || call.keyed == FOREIGN {
        // Nothing read; or the call read a socket that is no SIPS port's: not SIP over TLS to this host.
        let _ = SSL_CALLS.remove(&thread);
        return false;
    }
    // More than a TLS record (16 KiB), which is what one SSL_read returns.
    let len = if len > MAX_PAYLOAD as u64 { MAX_PAYLOAD as u64 } else { len } as u32;
    let buffer = call.buffer;
    let key = if call.keyed == KEYED {
        call.key
    } else {
        let Some(last) = LAST_RECV.get_ptr_mut(&thread) else {
            let _ = SSL_CALLS.remove(&thread);
            return false;
        };
        // SAFETY: this thread's entry; only this thread writes it.
        let last = unsafe { &mut *last };
        if last.ambiguous != 0 {
            // Read from memory after reads of two SIPS sockets: whose, is not known.
            bump_stat(KernelStat::TlsSocketUnknown);
            let _ = SSL_CALLS.remove(&thread);
            return false;
        }
        last.key
    };
    let _ = SSL_CALLS.remove(&thread);
    prepare(thread, &key, buffer, len, Direction::Ingress)
}

/// Whether `thread` (a pid_tgid) is in a process whose SSL calls are read.
/// The socket tracepoints fire for every process on the host: for all but
/// the SIP servers this lookup is all they cost.
#[inline(always)]
fn in_sip_server(thread: u64) -> bool {
    let (word, bit) = tls_process_bit((thread >> 32) as u32);
    TLS_PROCESSES.get(word).is_some_and(|bits| bits & bit != 0)
}

/// `sock_recv_length(sk, ret, flags)`: a thread read `ret` bytes from a socket.
#[inline(always)]
pub fn sock_recv(ctx: &RawTracePointContext) {
    let thread = bpf_get_current_pid_tgid();
    if !in_sip_server(thread) {
        return;
    }
    let sock: u64 = ctx.arg(0);
    let read: i64 = ctx.arg(1);
    if read as i32 <= 0 {
        return;
    }
    let mut key = FlowKey::UNSET;
    let on_sips = sock::tls_flow(sock, &mut key);
    let mut inside_read = false;
    if let Some(call) = SSL_CALLS.get_ptr_mut(&thread) {
        // SAFETY: this thread's entry; only this thread writes it.
        let call = unsafe { &mut *call };
        if call.op == SslOp::Read as u8 {
            call.key = key;
            call.keyed = if on_sips { KEYED } else { FOREIGN };
            inside_read = true;
        }
    }
    if on_sips {
        // A read inside SSL_read (the library reads its own socket) is consumed
        // by that call, and names its connection itself.
        // SAFETY: this thread's entry; only this thread writes it.
        let ambiguous = !inside_read
            && LAST_RECV
                .get_ptr(&thread)
                .is_some_and(|last| unsafe { (*last).unread != 0 && ((*last).key != key || (*last).ambiguous != 0) });
        let unread = !inside_read as u8;
        let last = LastRecv { key, unread, ambiguous: ambiguous as u8, _reserved: [0; 6] };
        let _ = LAST_RECV.insert(&thread, &last, 0);
    } else if LAST_RECV.get_ptr(&thread).is_some() {
        // Another socket: the thread's next SSL_read is not on the SIPS one it read before.
        let _ = LAST_RECV.remove(&thread);
    }
}

/// `sock_send_length(sk, ret, flags)`: a thread wrote `ret` bytes to a
/// socket. True when it was the socket of a write that waited for it: the
/// thread's scratch is set up for `first`, which the caller tail-calls.
#[inline(always)]
pub fn sock_send(ctx: &RawTracePointContext) -> bool {
    let thread = bpf_get_current_pid_tgid();
    if !in_sip_server(thread) {
        return false;
    }
    let sock: u64 = ctx.arg(0);
    let sent: i64 = ctx.arg(1);
    let sent = sent as i32;
    if sent <= 0 {
        // Nothing went out: a record not written is written again later.
        return false;
    }
    let last = LAST_RECV.get_ptr_mut(&thread);
    // SAFETY: this thread's entry; only this thread writes it.
    let call = SSL_CALLS.get_ptr_mut(&thread).filter(|call| unsafe { (**call).waiting } != 0);
    // Most writes are by threads that read no SIPS socket and wait to write
    // none: two lookups, and done. The others learn the socket's flow once.
    if last.is_none() && call.is_none() {
        return false;
    }
    let mut key = FlowKey::UNSET;
    let on_sips = sock::tls_flow(sock, &mut key);
    // A server that writes to the SIPS socket it read (a handshake's reply, an
    // answer) has taken in what it read.
    if let Some(last) = last
        && on_sips
    {
        // SAFETY: this thread's entry; only this thread writes it.
        let last = unsafe { &mut *last };
        if last.key == key {
            last.unread = 0;
        }
    }
    // A write waiting for its record (an SSL call's entry put it there; a
    // read under way waits for nothing: what it writes, a handshake's reply
    // or a key update, carries no SIP).
    let Some(call) = call else {
        return false;
    };
    // SAFETY: this thread's entry; only this thread writes it.
    let call = unsafe { &mut *call };
    let (buffer, len) = (call.buffer, call.waiting_len);
    // A record is longer than the plaintext it carries (up to 16 KiB of it):
    // a shorter write is another record first (the rest of one, a session
    // ticket, an alert), and the plaintext waits on.
    let carried = if len < MAX_RECORD_PLAINTEXT { len } else { MAX_RECORD_PLAINTEXT };
    if (sent as u32) < carried {
        return false;
    }
    if !on_sips {
        if sock::is_inet(sock) {
            // As long as its record, to an IP socket on another port: TLS
            // there (the host as a TLS client), not SIP over TLS to this host.
            let _ = SSL_CALLS.remove(&thread);
        }
        // Another kind of socket (a log, a pipe): the record is yet to be written.
        return false;
    }
    let _ = SSL_CALLS.remove(&thread);
    // Its first message is read by a program of the tracepoint's own type
    // (the walkers are uprobe programs, no tail call's target from here);
    // verified apart, it keeps this one small. A server writes one message at a time.
    prepare(thread, &key, buffer, len, Direction::Egress)
}

/// What the thread read from a SIPS socket has been taken in (see `LastRecv`).
#[inline(always)]
fn consumed(thread: u64) {
    if let Some(last) = LAST_RECV.get_ptr_mut(&thread) {
        // SAFETY: this thread's entry; only this thread writes it.
        unsafe { (*last).unread = 0 };
    }
}

/// Sets up the thread's scratch to read `len` bytes of plaintext at `buffer`
/// as a message on `key`'s flow.
#[inline(always)]
fn prepare(thread: u64, key: &FlowKey, buffer: u64, len: u32, direction: Direction) -> bool {
    let Some(tls) = thread_scratch_or_new(thread) else {
        return false;
    };
    let scratch = &mut tls.scratch;
    scratch.key = *key;
    // Read by the host as the TLS server: the client sent it.
    scratch.from_client = (direction == Direction::Ingress) as u8;
    scratch.tcp_flags = 0;
    scratch.payload_offset = 0;
    scratch.payload_len = len;
    scratch.tcp_payload_len = len;
    scratch.frame_len = len;
    tls.buffer = buffer;
    tls.direction = direction as u32;
    true
}

#[inline(always)]
fn thread_scratch_or_new(thread: u64) -> Option<&'static mut TlsScratch> {
    if TLS_SCRATCH.get_ptr_mut(&thread).is_none() {
        let template = TLS_SCRATCH_TEMPLATE.get_ptr(0)?;
        // SAFETY: a map value that is never written.
        let _ = TLS_SCRATCH.insert(&thread, unsafe { &*template }, 0);
    }
    let tls = TLS_SCRATCH.get_ptr_mut(&thread)?;
    // SAFETY: this thread's entry; only this thread uses it.
    Some(unsafe { &mut *tls })
}

/// The scratch `prepare` left for this thread, and the plaintext as a frame.
#[inline(always)]
fn resume() -> Option<(&'static mut TlsScratch, UserFrame, Direction)> {
    let tls = TLS_SCRATCH.get_ptr_mut(&bpf_get_current_pid_tgid())?;
    // SAFETY: this thread's entry; only this thread uses it.
    let tls = unsafe { &mut *tls };
    // SAFETY: plain reads of map memory (volatile: see `Scratch`).
    let len = unsafe { core::ptr::read_volatile(&tls.scratch.frame_len) } as usize;
    let frame = UserFrame { buffer: tls.buffer, len };
    let direction = if tls.direction == Direction::Egress as u32 { Direction::Egress } else { Direction::Ingress };
    Some((tls, frame, direction))
}

/// The `first` program's step: the call's first message, as `observe` takes
/// a segment's; the rest is walked as a segment's is.
#[inline(always)]
pub fn first() -> Next {
    let Some((tls, frame, direction)) = resume() else {
        return Next::Done;
    };
    let scratch = &mut tls.scratch;
    if !websocket_frame::take_side(scratch) {
        bump_stat(KernelStat::TlsFlowUnseen);
        return Next::Done;
    }
    let payload = classify_plaintext(&frame, scratch);
    let Some(state) = websocket_frame::put_side(scratch) else {
        bump_stat(KernelStat::TlsFlowUnseen);
        return Next::Done;
    };
    flow::record_followed(&frame, scratch, state, payload, direction);
    bump_stat(KernelStat::TlsCalls);
    count_message(payload, direction);
    // A WebSocket frame carries one message (RFC 7118 §5).
    if scratch.ws_framed == 0 && follow::start(scratch, payload) { Next::Scan } else { Next::Done }
}

#[inline(always)]
pub fn scan() -> Next {
    match resume() {
        Some((tls, frame, _)) => follow::scan(&frame, Some(&mut tls.scratch)),
        None => Next::Done,
    }
}

#[inline(always)]
pub fn message() -> Next {
    match resume() {
        Some((tls, frame, direction)) => follow::message(&frame, Some(&mut tls.scratch), direction),
        None => Next::Done,
    }
}
