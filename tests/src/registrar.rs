//! Registration storms (issue 19): a UDP registrar fast enough to answer tens
//! of thousands of REGISTERs a second, and the clients that send them, over one
//! flow or over one flow each.
//!
//! The registrar answers every REGISTER with 200 OK as an RFC 5626 registrar
//! would (Require: outbound, Flow-Timer), echoing the request's Via, From, To
//! (tagged), Call-ID, CSeq and Contact (with `;expires=600`). The clients number
//! their REGISTERs in the Call-ID (`N.tag@storm`), so that every answer is
//! matched to its REGISTER: what they count is distinct REGISTERs answered 200,
//! however many times one was retransmitted.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns::{CLIENT_IF, Lab};

/// The Expires the registrar grants each contact.
pub const EXPIRES: u32 = 600;
/// Socket buffers for the storm's sockets: a burst must not overflow them.
const BUFFER_BYTES: i32 = 16 << 20;
/// Tries per REGISTER (the first and its retransmissions, as SIP's Timer E would).
const TRIES: usize = 5;

/// Answers every REGISTER arriving on `socket` with a 200 OK until `stop` is
/// set; returns how many answers it sent. A tight recv_from/send_to loop on a
/// thread of its own.
pub fn udp_registrar(socket: UdpSocket, flow_timer: u32, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    force_buffers(&socket, BUFFER_BYTES);
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::with_capacity(2048);
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if ok_200(&buf[..n], flow_timer, &mut out) && socket.send_to(&out, from).is_ok() {
                answered += 1;
            }
        }
        answered
    })
}

/// Writes into `out` the 200 OK for `request`; false when it is no REGISTER.
/// Parses by header lines: a line's name decides whether it is echoed.
pub fn ok_200(request: &[u8], flow_timer: u32, out: &mut Vec<u8>) -> bool {
    if !request.starts_with(b"REGISTER ") {
        return false;
    }
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let head = match request.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &request[..end],
        None => request,
    };
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let name = line[..colon].trim_ascii();
        let is = |long: &str, short: &str| name.eq_ignore_ascii_case(long.as_bytes()) || name == short.as_bytes();
        if is("via", "v") || is("from", "f") || is("call-id", "i") || is("cseq", "") {
            out.extend_from_slice(line);
        } else if is("to", "t") {
            out.extend_from_slice(line);
            if !line.windows(5).any(|w| w.eq_ignore_ascii_case(b";tag=")) {
                out.extend_from_slice(b";tag=registrar");
            }
        } else if is("contact", "m") {
            out.extend_from_slice(line);
            out.extend_from_slice(format!(";expires={EXPIRES}").as_bytes());
        } else {
            continue;
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!("Require: outbound\r\nFlow-Timer: {flow_timer}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    true
}

/// The Call-ID of the storm's REGISTER number `n`.
pub fn call_id(n: usize, tag: &str) -> String {
    format!("{n}.{tag}@storm")
}

/// A REGISTER for `user`@example.com from `local`: an RFC 5626 outbound one
/// (`Supported: outbound`, reg-id=1, `+sip.instance` of `instance`, ;ob) when
/// `instance` is given, else a plain one.
pub fn register(user: &str, local: SocketAddr, call_id: &str, instance: Option<&str>) -> Vec<u8> {
    let contact = match instance {
        Some(instance) => format!("<sip:{user}@{local};ob>;reg-id=1;+sip.instance=\"<urn:uuid:{instance}>\""),
        None => format!("<sip:{user}@{local}>"),
    };
    let supported = if instance.is_some() { "Supported: outbound\r\n" } else { "" };
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=f{user}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         {supported}\
         Contact: {contact}\r\n\
         Expires: {EXPIRES}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An instance UUID numbered `n` (and `salt`, for instances that must differ across runs).
pub fn instance(salt: u64, n: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", salt as u32, n)
}

/// The REGISTER number a 200 OK answers, from its Call-ID (`N.tag@storm`).
pub fn answered_number(response: &[u8]) -> Option<usize> {
    if !response.starts_with(b"SIP/2.0 200 ") {
        return None;
    }
    let at = response.windows(9).position(|w| w.eq_ignore_ascii_case(b"\ncall-id:"))? + 9;
    let rest = response[at..].trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// What a storm's client saw.
#[derive(Clone, Debug)]
pub struct Storm {
    /// REGISTERs sent (distinct; retransmissions not counted).
    pub sent: usize,
    /// Distinct REGISTERs answered 200.
    pub answered: usize,
    pub retransmissions: usize,
    /// Distinct client address:port pairs used.
    pub flows: usize,
    pub first_sent: Instant,
    /// From the first REGISTER to the last answer.
    pub seconds: f64,
}

/// SO_RCVBUFFORCE and SO_SNDBUFFORCE (root): room for a burst.
pub fn force_buffers(socket: &impl AsRawFd, bytes: i32) {
    for option in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: a valid socket and an int-sized option value.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const bytes).cast(),
                size_of::<i32>() as u32,
            );
        }
    }
}

/// Sends `count` REGISTERs, made by `make(n, local)`, from one UDP socket in
/// `namespace` to `to`: bursts of `burst`, each followed by a wait for its
/// answers (a REGISTER unanswered after 300 ms is sent again, up to 5 times);
/// with a `rate`, no faster than that many REGISTERs a second.
pub fn one_flow(
    namespace: &str,
    to: SocketAddr,
    count: usize,
    burst: usize,
    rate: Option<u32>,
    make: impl Fn(usize, SocketAddr) -> Vec<u8> + Send + Sync,
) -> Storm {
    Lab::in_namespace(namespace, || {
        let socket = UdpSocket::bind((crate::netns::CLIENT_V4, 0)).expect("bind the storm's socket");
        force_buffers(&socket, BUFFER_BYTES);
        let local = socket.local_addr().expect("local address");
        let messages: Vec<Vec<u8>> = (0..count).map(|n| make(n, local)).collect();
        let answered: Arc<Vec<AtomicBool>> = Arc::new((0..count).map(|_| AtomicBool::new(false)).collect());
        let distinct = Arc::new(AtomicUsize::new(0));
        let (stop, last_answer) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(None)));
        let receiver = {
            let socket = socket.try_clone().expect("clone the socket");
            socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            let (answered, distinct, stop, last_answer) =
                (answered.clone(), distinct.clone(), stop.clone(), last_answer.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else { continue };
                    let Some(i) = answered_number(&buf[..n]).filter(|i| *i < answered.len()) else { continue };
                    if !answered[i].swap(true, Ordering::Relaxed) {
                        distinct.fetch_add(1, Ordering::Relaxed);
                        *last_answer.lock().unwrap() = Some(Instant::now());
                    }
                }
            })
        };
        let first_sent = Instant::now();
        let mut retransmissions = 0;
        for start in (0..count).step_by(burst) {
            pace(first_sent, start, rate);
            let chunk = start..(start + burst).min(count);
            for try_number in 0..TRIES {
                let waiting: Vec<usize> = chunk.clone().filter(|i| !answered[*i].load(Ordering::Relaxed)).collect();
                if waiting.is_empty() {
                    break;
                }
                if try_number > 0 {
                    retransmissions += waiting.len();
                }
                for &i in &waiting {
                    while socket.send_to(&messages[i], to).is_err() {
                        thread::sleep(Duration::from_micros(100));
                    }
                }
                // The answers drain; no progress for 300 ms is a loss.
                let mut seen = distinct.load(Ordering::Relaxed);
                let mut progress = Instant::now();
                while chunk.clone().any(|i| !answered[i].load(Ordering::Relaxed))
                    && progress.elapsed() < Duration::from_millis(300)
                {
                    thread::sleep(Duration::from_micros(200));
                    let now = distinct.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, progress) = (now, Instant::now());
                    }
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        receiver.join().expect("receiver");
        let last = last_answer.lock().unwrap().unwrap_or(first_sent);
        Storm {
            sent: count,
            answered: distinct.load(Ordering::Relaxed),
            retransmissions,
            flows: 1,
            first_sent,
            seconds: last.duration_since(first_sent).as_secs_f64(),
        }
    })
}

/// Sends `count` REGISTERs, each from a UDP socket of its own bound to
/// `source(n)` in `namespace` (a source already bound in the same batch is
/// asked for again), in batches of `batch` sockets: open, send, wait for the
/// answers (300 ms, up to 5 tries), close. Every REGISTER is a flow of its own
/// unless `source` repeats one. With a `rate`, no faster than that many a second.
pub fn many_flows(
    namespace: &str,
    to: SocketAddr,
    count: usize,
    batch: usize,
    rate: Option<u32>,
    mut source: impl FnMut(usize) -> SocketAddr + Send,
    make: impl Fn(usize, SocketAddr) -> Vec<u8> + Send,
) -> Storm {
    Lab::in_namespace(namespace, move || {
        let first_sent = Instant::now();
        let (mut answered, mut retransmissions) = (0, 0);
        let mut last_answer = first_sent;
        let mut flows = std::collections::HashSet::new();
        let mut buf = [0u8; 4096];
        for start in (0..count).step_by(batch) {
            pace(first_sent, start, rate);
            let mut open: Vec<(usize, UdpSocket, Vec<u8>)> = Vec::with_capacity(batch);
            for n in start..(start + batch).min(count) {
                let socket = (0..1000)
                    .find_map(|_| UdpSocket::bind(source(n)).ok())
                    .expect("bind a source address and port for the storm");
                socket.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
                let local = socket.local_addr().expect("local address");
                flows.insert(local);
                let message = make(n, local);
                while socket.send_to(&message, to).is_err() {
                    thread::sleep(Duration::from_micros(100));
                }
                open.push((n, socket, message));
            }
            for (n, socket, message) in &open {
                for try_number in 0..TRIES {
                    if try_number > 0 {
                        retransmissions += 1;
                        let _ = socket.send_to(message, to);
                    }
                    // Skip anything else (a late answer to another try is the same answer).
                    let got = loop {
                        match socket.recv(&mut buf) {
                            Ok(len) if answered_number(&buf[..len]) == Some(*n) => break true,
                            Ok(_) => continue,
                            Err(_) => break false,
                        }
                    };
                    if got {
                        answered += 1;
                        last_answer = Instant::now();
                        break;
                    }
                }
            }
        }
        Storm {
            sent: count,
            answered,
            retransmissions,
            flows: flows.len(),
            first_sent,
            seconds: last_answer.duration_since(first_sent).as_secs_f64(),
        }
    })
}

/// Waits until `sent` REGISTERs are due at `rate` a second since `first_sent`.
fn pace(first_sent: Instant, sent: usize, rate: Option<u32>) {
    if let Some(rate) = rate.filter(|r| *r > 0) {
        let due = first_sent + Duration::from_secs_f64(sent as f64 / f64::from(rate));
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// Adds `count` addresses (192.0.2.10 on) to the client namespace's SIP link, for
/// more client address:port pairs than one address has ports; returns them.
pub fn add_client_addresses(namespace: &str, count: usize) -> Vec<Ipv4Addr> {
    assert!(count <= 200, "192.0.2.10 to 192.0.2.209 at most");
    (0..count)
        .map(|i| {
            let address = Ipv4Addr::new(192, 0, 2, 10 + i as u8);
            let status = Command::new("ip")
                .args(["-n", namespace, "addr", "add", &format!("{address}/24"), "dev", CLIENT_IF])
                .status()
                .expect("run ip");
            assert!(status.success(), "add {address} in {namespace}");
            address
        })
        .collect()
}

/// Source number `n` of `addresses`, ports 1024 to 61023 on each: distinct for every n.
pub fn sequential_source(addresses: &[Ipv4Addr], n: usize) -> SocketAddr {
    const PORTS: usize = 60_000;
    let address = addresses[(n / PORTS) % addresses.len()];
    SocketAddr::V4(SocketAddrV4::new(address, 1024 + (n % PORTS) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_200_echoes_the_register_and_grants_its_contact() {
        let local: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let request = register("u7", local, &call_id(7, "t"), Some(&instance(1, 7)));
        let mut out = Vec::new();
        assert!(ok_200(&request, 30, &mut out));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nTo: <sip:u7@example.com>;tag=registrar\r\n"), "{text}");
        assert!(text.contains("\r\nCall-ID: 7.t@storm\r\n"), "{text}");
        assert!(text.contains("\r\nCSeq: 1 REGISTER\r\n"), "{text}");
        assert!(
            text.contains("reg-id=1;+sip.instance=\"<urn:uuid:00000001-0000-4000-8000-000000000007>\";expires=600\r\n")
        );
        assert!(text.contains("\r\nRequire: outbound\r\nFlow-Timer: 30\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(answered_number(&out), Some(7));
        assert!(!ok_200(b"OPTIONS sip:x SIP/2.0\r\n\r\n", 30, &mut out));
        assert!(request.len() < 1024 && out.len() < 1024, "heads within what the kernel hands over");
    }
}
