//! Real clients as sipflow meets them in the field, each next to the honest
//! case that must still be caught: a browser's SDP in a WebSocket frame that
//! spans several TCP segments (one starting with 0x89 is no ping, with 0x8a no
//! pong); a phone whose radio wakes on paging and acknowledges 1.4 s late (no
//! zombie), next to a real zombie; UAs that run their keepalive timer from
//! their own start or ping slower than their Flow-Timer, next to one that
//! stops; a contact with +sip.instance and no reg-id that the registrar's
//! `Require: outbound` routes by its flow, next to one it does not.
//!
//! Waits end on the event (a verdict in /flows, a series in /metrics) or at a
//! deadline; a case that must give no verdict is watched past the moment its
//! false verdict would have come.

use std::{
    collections::{BTreeMap, HashMap},
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric},
    packets::ws_frame,
    peers::{self, connect, ok_for, outbound_register, response_to},
};

const FLOWS: &str = "http://127.0.0.1:9560/flows";
const FAILED: &str = "http://127.0.0.1:9560/flows?state=failed";
const METRICS: &str = "http://127.0.0.1:9560/metrics";

// ---------------------------------------------------------------------------
// The agent's view.

fn flows(server: &str, url: &str) -> Vec<Value> {
    let (status, body) = http_get(server, url).expect("GET /flows");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn metrics(server: &str) -> String {
    http_get(server, METRICS).expect("GET /metrics").1
}

/// The client's port of a flow in /flows.
fn client_port(flow: &Value) -> u16 {
    flow["remote"].as_str().expect("remote").parse::<SocketAddr>().expect("address").port()
}

/// The flow whose client is at `port`, among `all`.
fn flow_of(all: &[Value], port: u16) -> Option<Value> {
    all.iter().find(|f| client_port(f) == port).cloned()
}

/// Polls /flows until `done` says so or `deadline` passes; returns the last list.
fn poll_flows(server: &str, url: &str, deadline: Instant, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    loop {
        let all = flows(server, url);
        if done(&all) || Instant::now() >= deadline {
            return all;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the agent shows a binding (an AOR) on each of these clients' flows.
fn await_bindings(server: &str, ports: &[u16]) {
    let all = poll_flows(server, FLOWS, Instant::now() + Duration::from_secs(5), |all| {
        ports.iter().all(|p| flow_of(all, *p).is_some_and(|f| f["aor"].is_string()))
    });
    for port in ports {
        let flow = flow_of(&all, *port);
        assert!(flow.as_ref().is_some_and(|f| f["aor"].is_string()), "no binding shown for :{port}: {all:#?}");
    }
}

/// Every sipflow_ series not zero, for a failure's message.
fn nonzero_series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("sipflow_") && !l.ends_with(" 0")).collect()
}

/// The first verdict seen for a client, and when.
#[derive(Debug, Clone)]
struct Seen {
    reason: String,
    would_430: bool,
    at: Instant,
}

/// Records, per named client port, the first failed flow in `failed`.
fn note_verdicts(failed: &[Value], names: &HashMap<u16, &'static str>, seen: &mut BTreeMap<&'static str, Seen>) {
    for f in failed {
        if let Some(name) = names.get(&client_port(f)) {
            seen.entry(name).or_insert_with(|| Seen {
                reason: f["reason"].as_str().unwrap_or("").to_string(),
                would_430: f["would_430"].as_bool().unwrap_or(false),
                at: Instant::now(),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// A registrar over TCP that keeps its connections, so that the test can send
// a client a request over its flow.

/// Answers REGISTER with `answer_register`, pings with a pong, any other
/// request with 200; keeps a handle on every connection, by the client's port.
struct Registrar {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<HashMap<u16, TcpStream>>>,
}

type Answer = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

impl Registrar {
    fn start(namespace: &str, port: u16, answer_register: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = Lab::in_namespace(namespace, || TcpListener::bind((SERVER_V4, port)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(HashMap::new()));
        let answer: Answer = Arc::new(answer_register);
        {
            let (stop, streams) = (stop.clone(), streams.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, from)) => {
                            stream.set_nonblocking(false).ok();
                            streams.lock().unwrap().insert(from.port(), stream.try_clone().expect("dup"));
                            let (stop, answer) = (stop.clone(), answer.clone());
                            thread::spawn(move || serve_sip(stream, &answer, &stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        Self { stop, streams }
    }

    /// The server's end of the connection from the client at `port`.
    fn stream(&self, port: u16) -> TcpStream {
        self.streams.lock().unwrap().get(&port).expect("a connection from that port").try_clone().expect("dup")
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_sip(mut stream: TcpStream, answer_register: &Answer, stop: &AtomicBool) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        loop {
            if pending.starts_with(b"\r\n\r\n") {
                pending.drain(..4);
                if stream.write_all(b"\r\n").is_err() {
                    return;
                }
                continue;
            }
            let Some(message) = take_message(&mut pending) else { break };
            let reply = if message.starts_with(b"REGISTER ") {
                answer_register(&message)
            } else if message.starts_with(b"SIP/2.0 ") || message.starts_with(b"ACK ") {
                continue;
            } else {
                response_to(&message, "200 OK")
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// One whole SIP message off the front of `pending` (a lone CRLF before it skipped).
fn take_message(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    while pending.starts_with(b"\r\n") && !pending.starts_with(b"\r\n\r\n") {
        pending.drain(..2);
    }
    let head_end = pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (pending.len() >= head_end + body).then(|| pending.drain(..head_end + body).collect())
}

/// A request from the registrar to a registered client over its flow.
fn options_to(user: &str, client: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:{user}@{client};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {SERVER_V4}:5060;branch=z9hG4bK-options-{user}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:registrar@example.com>;tag=r-{user}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: options-{user}@{SERVER_V4}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An outbound TCP client, registered (reg-id, +sip.instance; the 2xx says Require: outbound).
fn registered_client(namespace: &str, port: u16, user: &str) -> TcpStream {
    let mut stream = connect(namespace, port);
    stream.set_nodelay(true).expect("nodelay");
    let reply = peers::register(&mut stream, user);
    assert!(reply.starts_with(b"SIP/2.0 200"), "{user}: {}", String::from_utf8_lossy(&reply));
    stream
}

/// Loads `script` with `nft -f -` inside `namespace`.
fn nft(namespace: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft (package nftables; cargo xtask setup installs it)");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write the ruleset");
    assert!(child.wait().expect("nft").success(), "nft -f - in {namespace}:\n{script}");
}

/// A table of its own that drops every packet the client namespace sends from `port`.
fn drop_from_port(namespace: &str, table: &str, port: u16) {
    nft(
        namespace,
        &format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  tcp sport {port} drop\n }}\n}}\n"
        ),
    );
}

// ---------------------------------------------------------------------------
// SIP over WebSocket (RFC 6455, RFC 7118) by hand: the test decides where a
// frame is split across TCP segments and what each segment starts with.

const WS_PORT: u16 = 8080;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Frames as they come off a stream, from whatever the reads gave.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// The next whole frame's opcode and (unmasked) payload.
    fn take(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (opcode, masked, len7) = (b[0] & 0x0f, b[1] & 0x80 != 0, (b[1] & 0x7f) as usize);
        let (len, mut at) = match len7 {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n, 2),
        };
        let key = if masked {
            if b.len() < at + 4 {
                return None;
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(key) = key {
            payload.iter_mut().enumerate().for_each(|(i, v)| *v ^= key[i % 4]);
        }
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// Reads `stream` (whose reads time out) until a frame is whole or `wait` passes.
    fn next(&mut self, stream: &mut TcpStream, wait: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.take() {
                return Some(frame);
            }
            if Instant::now() >= deadline {
                return None;
            }
            match stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }
}

/// A WebSocket registrar in the server's namespace: the "sip" subprotocol,
/// REGISTER answered 200 (Require: outbound, Flow-Timer), other requests 200,
/// pings ponged. The connection of the user named `mute` goes quiet once
/// registered: it reads nothing more, so that its client's ping stays unanswered.
struct WsServer {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<HashMap<u16, TcpStream>>>,
    /// The first byte of every read the server made, after the handshake.
    read_starts: Arc<Mutex<Vec<u8>>>,
}

impl WsServer {
    fn start(namespace: &str, flow_timer: u32, mute: &'static str) -> Self {
        let listener = Lab::in_namespace(namespace, || TcpListener::bind((SERVER_V4, WS_PORT)).expect("bind"));
        listener.set_nonblocking(true).expect("nonblocking");
        let server = Self {
            stop: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(HashMap::new())),
            read_starts: Arc::new(Mutex::new(Vec::new())),
        };
        let (stop, streams, starts) = (server.stop.clone(), server.streams.clone(), server.read_starts.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, from)) => {
                        stream.set_nonblocking(false).ok();
                        streams.lock().unwrap().insert(from.port(), stream.try_clone().expect("dup"));
                        let (stop, starts) = (stop.clone(), starts.clone());
                        thread::spawn(move || serve_ws(stream, flow_timer, mute, &stop, &starts));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        server
    }

    fn stream(&self, port: u16) -> TcpStream {
        self.streams.lock().unwrap().get(&port).expect("a connection from that port").try_clone().expect("dup")
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads an HTTP head (up to its blank line) off `stream`.
fn http_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(3);
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && Instant::now() < deadline => {}
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn serve_ws(mut stream: TcpStream, flow_timer: u32, mute: &str, stop: &AtomicBool, starts: &Mutex<Vec<u8>>) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).ok();
    stream.set_nodelay(true).ok();
    let Some(request) = http_head(&mut stream) else { return };
    let Some(key) = request.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim().to_string())
    }) else {
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let switching = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    );
    if stream.write_all(switching.as_bytes()).is_err() {
        return;
    }
    let mute_from = format!("From: <sip:{mute}@");
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut muted = false;
    while !stop.load(Ordering::Relaxed) {
        if muted {
            // The connection stays open; nothing is read, so nothing is answered.
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                starts.lock().unwrap().push(buf[0]);
                frames.buf.extend_from_slice(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Some((opcode, payload)) = frames.take() {
            let reply = match opcode {
                PING => ws_frame(PONG, &payload, None),
                CLOSE => return,
                TEXT if payload.starts_with(b"REGISTER ") => {
                    muted = String::from_utf8_lossy(&payload).contains(&mute_from);
                    ws_frame(TEXT, &ok_for(&payload, flow_timer), None)
                }
                TEXT if !payload.starts_with(b"SIP/2.0 ") => ws_frame(TEXT, &response_to(&payload, "200 OK"), None),
                _ => continue,
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// A WebSocket client connection from `namespace` (TCP_NODELAY: each write its own segment).
fn ws_client(namespace: &str) -> TcpStream {
    let mut stream = connect(namespace, WS_PORT);
    stream.set_nodelay(true).expect("nodelay");
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: {SERVER_V4}:{WS_PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).expect("upgrade");
    let head = http_head(&mut stream).expect("an answer to the upgrade");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// The client's masks: any key will do where the test does not choose the bytes.
const SOME_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Sends `message` in one masked text frame and waits for the answer frame.
fn ws_request(stream: &mut TcpStream, frames: &mut Frames, message: &[u8]) -> String {
    stream.write_all(&ws_frame(TEXT, message, Some(SOME_MASK))).expect("send");
    ws_answer(stream, frames)
}

/// Reads frames until a text one (a SIP answer) comes.
fn ws_answer(stream: &mut TcpStream, frames: &mut Frames) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some((TEXT, answer)) = frames.next(stream, Duration::from_millis(500)) {
            return String::from_utf8_lossy(&answer).into_owned();
        }
    }
    panic!("no SIP answer within 3 s");
}

/// A browser's MESSAGE (~5 KB of SDP-like text), as RFC 7118 sends it: one text frame.
fn long_message(user: &str, call_id: &str, line: &str) -> Vec<u8> {
    let body: String =
        (0..64).map(|i| format!("a=candidate:{i} 1 udp 2122260223 192.0.2.1 {} {line}\r\n", 50000 + i)).collect();
    format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=w-{call_id}\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 2 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Where to split `frame` (offsets into it) so that each later segment starts
/// with `first`, `second`: the first such places past each 1000 bytes.
fn splits_at(frame: &[u8], first: u8, second: u8) -> Vec<usize> {
    let mut splits = Vec::new();
    let mut from = 1000;
    while from + 400 < frame.len() {
        let Some(at) = (from..frame.len() - 1).find(|i| frame[*i] == first && frame[*i + 1] == second) else {
            break;
        };
        splits.push(at);
        from = at + 1000;
    }
    splits
}

/// Writes `frame` in pieces split at `splits`, a pause after each: each its own segment.
fn write_in_pieces(stream: &mut TcpStream, frame: &[u8], splits: &[usize]) {
    let mut start = 0;
    for end in splits.iter().copied().chain([frame.len()]) {
        stream.write_all(&frame[start..end]).expect("send a piece");
        start = end;
        thread::sleep(Duration::from_millis(40));
    }
}

// ---------------------------------------------------------------------------
// a) WebSocket frames longer than a segment.

/// A browser's masked text frame of ~5 KB, written so that three later TCP
/// segments start with 0x89 0x80 (a masked empty ping's head, where the old
/// reader looked): the flow gets no ping and no pong_timeout. Next to it, the
/// honest case: a real ping that the server never answers fails pong_timeout
/// (would_430), although the server meanwhile sends that client a long frame
/// whose later segments start with 0x8a 0x0d (a pong's head). Then a real ping
/// on the first flow is answered and counted as its first keepalive.
#[test]
fn websocket_frames_longer_than_a_segment_hold_no_ping_or_pong() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("wsreal");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let ws = WS_PORT.to_string();
    lab.start_agent(SERVER_IF, &["--ws-port", &ws, "--pong-timeout", "2s", "--sweep-interval", "200ms"]);
    let ws_server = WsServer::start(&server, 30, "mute");

    let (mut web, mut web_frames) = (ws_client(&client), Frames::default());
    let (mut mute, mut mute_frames) = (ws_client(&client), Frames::default());
    let port = |s: &TcpStream| s.local_addr().unwrap().port();
    let (web_port, mute_port) = (port(&web), port(&mute));
    for (stream, frames, user) in [(&mut web, &mut web_frames, "web"), (&mut mute, &mut mute_frames, "mute")] {
        let local = stream.local_addr().unwrap();
        let answer = ws_request(stream, frames, &outbound_register(user, "WS", local, user, &format!("{user}-reg")));
        assert!(answer.starts_with("SIP/2.0 200"), "{user}: {answer}");
    }
    await_bindings(&server, &[web_port, mute_port]);
    let names = HashMap::from([(web_port, "web"), (mute_port, "mute")]);

    // The browser's long frame: the mask picked so that, at every split, the
    // masked bytes are 0x89 0x80, a ping's head to whoever reads a head there.
    let message = long_message("web", "long-1@web", "typ host generation 0");
    let head_len = 8; // 0x81, 0xfe, the 16-bit length, the key
    let splits: Vec<usize> = {
        let mut splits = Vec::new();
        let mut from = 1200;
        while from + 600 < message.len() {
            let found = (from..message.len() - 1)
                .find(|p| (head_len + p) % 4 == head_len % 4 && message[*p] == b'a' && message[*p + 1] == b'=');
            let Some(p) = found else { break };
            splits.push(head_len + p);
            from = p + 1200;
        }
        splits
    };
    assert!(splits.len() >= 3, "split points in the message: {splits:?}");
    let mask = [b'a' ^ 0x89, b'=' ^ 0x80, 0x5c, 0x3e];
    let frame = ws_frame(TEXT, &message, Some(mask));
    assert_eq!(frame.len(), head_len + message.len());
    for at in &splits {
        assert_eq!(&frame[*at..*at + 2], &[0x89, 0x80], "split at {at}");
    }
    let reads_before = ws_server.read_starts.lock().unwrap().len();
    write_in_pieces(&mut web, &frame, &splits);
    let long_sent = Instant::now();
    let answer = ws_answer(&mut web, &mut web_frames);
    assert!(answer.starts_with("SIP/2.0 200"), "the long MESSAGE reached the server whole: {answer}");
    let starts: Vec<u8> = ws_server.read_starts.lock().unwrap()[reads_before..].to_vec();
    let ping_heads = starts.iter().filter(|b| **b == 0x89).count();
    println!("the server read the long frame in {} reads; {ping_heads} began with 0x89", starts.len());
    assert!(ping_heads >= 2, "segments that start with 0x89 reached the server: {starts:02x?}");

    // The honest case: a real ping the server never answers, while the server
    // sends that client a long frame whose later segments start with 0x8a 0x0d.
    mute.write_all(&ws_frame(PING, b"", Some(SOME_MASK))).expect("ping");
    let pinged = Instant::now();
    // A request to the client over its flow; the server's frames are not masked,
    // and an Ŋ (0xc5 0x8a) before each CRLF puts 0x8a 0x0d where a segment may start.
    let to_mute = ws_frame(TEXT, &long_message("registrar", "long-2@server", "typ host \u{14a}"), None);
    let mute_splits = splits_at(&to_mute, 0x8a, 0x0d);
    assert!(mute_splits.len() >= 3, "split points at a 0x8a: {mute_splits:?}");
    let mut server_end = ws_server.stream(mute_port);
    server_end.set_nodelay(true).unwrap();
    let mut client_starts = Vec::new();
    let mut start = 0;
    for end in mute_splits.iter().copied().chain([to_mute.len()]) {
        server_end.write_all(&to_mute[start..end]).expect("send a piece");
        start = end;
        // The client reads each piece as it comes: a segment of its own.
        let mut buf = vec![0u8; 8192];
        if let Ok(n @ 1..) = mute.read(&mut buf) {
            client_starts.push(buf[0]);
            mute_frames.buf.extend_from_slice(&buf[..n]);
        }
    }
    println!("the muted client read the server's long frame in reads starting {client_starts:02x?}");
    assert!(client_starts.iter().filter(|b| **b == 0x8a).count() >= 2, "{client_starts:02x?}");

    let mut seen = BTreeMap::new();
    let deadline = pinged + Duration::from_secs(6);
    poll_flows(&server, FAILED, deadline, |failed| {
        note_verdicts(failed, &names, &mut seen);
        seen.contains_key("mute")
    });
    let text = metrics(&server);
    assert!(
        !seen.contains_key("web"),
        "segments inside a long frame read as a ping: {seen:?}\n{:#?}",
        nonzero_series(&text)
    );
    let mute_verdict = seen
        .get("mute")
        .unwrap_or_else(|| panic!("no pong_timeout for an unanswered ping: {seen:?}\n{:#?}", nonzero_series(&text)));
    let waited = mute_verdict.at.duration_since(pinged).as_secs_f64();
    println!(
        "pong_timeout {waited:.2}s after the unanswered ping (--pong-timeout 2s); the long frame's last segment went {:.2}s before it",
        pinged.duration_since(long_sent).as_secs_f64()
    );
    assert_eq!(mute_verdict.reason, "pong_timeout");
    assert!(mute_verdict.would_430, "an outbound binding's flow");
    assert!(waited >= 1.95, "no earlier than --pong-timeout: {waited:.2}s");
    // The long frame's segments came before that ping: a ping read there would be past its timeout too.
    let all = flows(&server, FLOWS);
    let web_flow = flow_of(&all, web_port).expect("the browser's flow listed");
    assert_eq!(web_flow["state"], "no_keepalive", "no ping seen on the browser's flow yet: {web_flow}");
    assert_eq!(metric(&text, "sipflow_keepalive_rtt_seconds_count", &[("transport", "tcp")]), Some(0.0));

    // A real ping on the browser's flow: answered, and its first keepalive.
    web.write_all(&ws_frame(PING, b"web", Some(SOME_MASK))).expect("ping");
    let pong = loop {
        match web_frames.next(&mut web, Duration::from_secs(2)) {
            Some((PONG, payload)) => break payload,
            Some(_) => {}
            None => panic!("no pong"),
        }
    };
    assert_eq!(pong, b"web");
    let all = poll_flows(&server, FLOWS, Instant::now() + Duration::from_secs(3), |all| {
        flow_of(all, web_port).is_some_and(|f| f["state"] == "alive")
    });
    let web_flow = flow_of(&all, web_port).expect("listed");
    assert_eq!(web_flow["state"], "alive", "the real ping counted: {web_flow}");
    let since = web_flow["seconds_since_last_keepalive"].as_f64().expect("a keepalive seen");
    assert!(since < 2.0, "since the real ping: {since}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = metrics(&server);
        if metric(&text, "sipflow_keepalive_rtt_seconds_count", &[("transport", "tcp")]) == Some(1.0)
            || Instant::now() >= deadline
        {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        metric(&text, "sipflow_keepalive_rtt_seconds_count", &[("transport", "tcp")]),
        Some(1.0),
        "one ping answered by its pong, no more: {:#?}",
        nonzero_series(&text)
    );
    assert_eq!(metric(&text, "sipflow_flow_failures_total", &[("reason", "pong_timeout")]), Some(1.0));
    assert_eq!(metric(&text, "sipflow_verdicts_retracted_total", &[("reason", "pong_timeout")]), Some(0.0));
    assert_eq!(flows(&server, FAILED).len(), 1, "only the muted client's flow failed");
}

// ---------------------------------------------------------------------------
// b) A phone that acknowledges late, and a zombie.

/// How late the waking phone's stack acknowledges.
const LATE_ACK: Duration = Duration::from_millis(1400);

/// Two registered outbound TCP clients get an OPTIONS from the registrar.
/// One's acknowledgments are dropped (nftables, in its namespace) for 1.4 s,
/// as a phone's radio waking on paging; then it acknowledges and answers: no
/// tcp_unacked, nothing retracted, through the --ack-timeout (3 s) and past
/// twice that. The other drops everything for good: a zombie, failed
/// tcp_unacked with would_430 within about 4 s.
#[test]
fn a_phone_that_acknowledges_late_is_no_zombie_but_a_zombie_is() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("lateack");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, &["--sweep-interval", "200ms"]);
    let registrar = Registrar::start(&server, 5060, |request| ok_for(request, 30));

    let mut late = registered_client(&client, 5060, "waking");
    let zombie = registered_client(&client, 5060, "zombie");
    let port = |s: &TcpStream| s.local_addr().unwrap().port();
    let (late_port, zombie_port) = (port(&late), port(&zombie));
    await_bindings(&server, &[late_port, zombie_port]);
    let names = HashMap::from([(late_port, "late"), (zombie_port, "zombie")]);

    drop_from_port(&client, "late_ack", late_port);
    drop_from_port(&client, "zombie", zombie_port);
    let sent = Instant::now();
    for (user, port, stream) in [("waking", late_port, &late), ("zombie", zombie_port, &zombie)] {
        let to = stream.local_addr().unwrap();
        registrar.stream(port).write_all(&options_to(user, to)).expect("OPTIONS to the client");
    }

    // The phone wakes: its acknowledgments and its answer go out.
    let mut seen = BTreeMap::new();
    poll_flows(&server, FAILED, sent + LATE_ACK, |failed| {
        note_verdicts(failed, &names, &mut seen);
        false
    });
    nft(&client, "delete table inet late_ack\n");
    let woke = sent.elapsed();
    let mut buf = vec![0u8; 4096];
    let n = late.read(&mut buf).expect("the OPTIONS, held since it came");
    assert!(buf[..n].starts_with(b"OPTIONS "), "{}", String::from_utf8_lossy(&buf[..n]));
    late.write_all(&response_to(&buf[..n], "200 OK")).expect("answer");

    // Watched past --ack-timeout, and past twice it (where no retransmission is seen).
    let until = sent + Duration::from_secs(7);
    poll_flows(&server, FAILED, until, |failed| {
        note_verdicts(failed, &names, &mut seen);
        false
    });
    let text = metrics(&server);
    println!("the waking phone acknowledged {:.2}s after the OPTIONS", woke.as_secs_f64());
    assert!(!seen.contains_key("late"), "a late acknowledgment failed the flow: {seen:?}");
    let zombie_verdict = seen
        .get("zombie")
        .unwrap_or_else(|| panic!("no verdict for the zombie: {seen:?}\n{:#?}", nonzero_series(&text)));
    let waited = zombie_verdict.at.duration_since(sent).as_secs_f64();
    println!("the zombie failed {} {waited:.2}s after the OPTIONS", zombie_verdict.reason);
    assert_eq!(zombie_verdict.reason, "tcp_unacked");
    assert!(zombie_verdict.would_430);
    assert!(waited >= 2.95, "not before --ack-timeout: {waited:.2}s");
    assert!(waited <= 4.5, "the server retransmitted; the verdict is due at 3 s: {waited:.2}s");

    let all = flows(&server, FLOWS);
    let late_flow = flow_of(&all, late_port).expect("the phone's flow listed");
    assert_ne!(late_flow["state"], "failed", "{late_flow}");
    assert_eq!(metric(&text, "sipflow_flow_failures_total", &[("reason", "tcp_unacked")]), Some(1.0), "the zombie's");
    assert_eq!(metric(&text, "sipflow_verdicts_retracted_total", &[("reason", "tcp_unacked")]), Some(0.0));
    assert_eq!(metric(&text, "sipflow_flows_would_430", &[("transport", "tcp")]), Some(1.0));
}

// ---------------------------------------------------------------------------
// c) A UA's own keepalive timer.

const GRACE_S: f64 = 1.0;
/// What the registrar grants.
const FLOW_TIMER_S: u32 = 2;

/// A TCP UA that pings on a timer of its own, started `first` after its REGISTER.
struct Pinger {
    name: &'static str,
    stream: TcpStream,
    every: Duration,
    next: Instant,
    /// Stops after this many pings.
    pings_left: u32,
    last_ping: Option<Instant>,
}

impl Pinger {
    fn new(namespace: &str, name: &'static str, first: Duration, every: Duration, pings: u32) -> Self {
        let stream = registered_client(namespace, 5060, name);
        Self { name, stream, every, next: Instant::now() + first, pings_left: pings, last_ping: None }
    }

    fn ping(&mut self) {
        self.stream.write_all(b"\r\n\r\n").expect("ping");
        let mut pong = [0u8; 2];
        self.stream.read_exact(&mut pong).unwrap_or_else(|e| panic!("{}: no pong: {e}", self.name));
        assert_eq!(&pong, b"\r\n");
        self.last_ping = Some(Instant::now());
    }

    /// Pings if its timer says so.
    fn tick(&mut self, now: Instant) {
        if self.pings_left > 0 && now >= self.next {
            self.ping();
            self.pings_left -= 1;
            self.next += self.every;
        }
    }

    fn port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }
}

/// Flow-Timer 2 s granted, --grace 1s. Three UAs ping every 1.8 s from their
/// own start, their first ping 0.1, 1 and 1.7 s after the REGISTER; two ping
/// every 4 s whatever their Flow-Timer, the first ping 0.3 s and 3.7 s after
/// the REGISTER (0.3 s is no pace: judged by it, the 4 s gap that follows
/// would fail the flow): none is failed over 15 s, and the slow ones are
/// judged by their own cadence (5 s). One that pings every 1.8 s and
/// then stops is failed keepalive_timeout (would_430) once its cadence and
/// the grace have passed; when it pings again the verdict is retracted.
#[test]
fn a_uas_own_keepalive_timer_is_no_failure_but_silence_is() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("cadence");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let grace = format!("{GRACE_S}s");
    lab.start_agent(SERVER_IF, &["--grace", &grace, "--sweep-interval", "200ms"]);
    let _registrar = Registrar::start(&server, 5060, |request| ok_for(request, FLOW_TIMER_S));

    let ms = Duration::from_millis;
    let forever = u32::MAX;
    let mut uas = [
        Pinger::new(&client, "early", ms(100), ms(1800), forever),
        Pinger::new(&client, "midway", ms(1000), ms(1800), forever),
        Pinger::new(&client, "late", ms(1700), ms(1800), forever),
        Pinger::new(&client, "slow", ms(300), ms(4000), forever),
        Pinger::new(&client, "slower", ms(3700), ms(4000), forever),
        Pinger::new(&client, "stopper", ms(500), ms(1800), 4),
    ];
    let names: HashMap<u16, &'static str> = uas.iter().map(|u| (u.port(), u.name)).collect();
    let start = Instant::now();
    await_bindings(&server, &uas.iter().map(Pinger::port).collect::<Vec<_>>());

    let mut seen = BTreeMap::new();
    let mut next_poll = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let now = Instant::now();
        uas.iter_mut().for_each(|u| u.tick(now));
        if now >= next_poll {
            note_verdicts(&flows(&server, FAILED), &names, &mut seen);
            next_poll = now + ms(200);
        }
        thread::sleep(ms(10));
    }
    let all = flows(&server, FLOWS);
    let text = metrics(&server);
    for u in &uas[..5] {
        assert!(!seen.contains_key(u.name), "{} keeps its own timer and was failed: {seen:?}", u.name);
        let flow = flow_of(&all, u.port()).expect("listed");
        println!(
            "{:<7} alive after 15 s: keepalive_interval {} s, flow_timer {} s",
            u.name, flow["keepalive_interval"], flow["flow_timer"]
        );
        assert_eq!(flow["state"], "alive", "{flow}");
        assert_eq!(flow["flow_timer"], FLOW_TIMER_S, "{flow}");
    }
    for slow in &uas[3..5] {
        let flow = flow_of(&all, slow.port()).unwrap();
        assert_eq!(flow["keepalive_interval"], 5, "{} judged by its own 4 s x 5/4: {flow}", slow.name);
    }

    let stopper = &uas[5];
    let verdict = seen.get("stopper").unwrap_or_else(|| {
        panic!("no verdict for the UA that stopped pinging: {seen:?}\n{:#?}", nonzero_series(&text))
    });
    let after = verdict.at.duration_since(stopper.last_ping.expect("it pinged")).as_secs_f64();
    // Its cadence: the Flow-Timer, or its 1.8 s gaps x 5/4 (2.25 s); then the grace.
    let due = 2.25 + GRACE_S;
    println!("stopper: {} {after:.2}s after its last ping (due at {due:.2}s)", verdict.reason);
    assert_eq!(verdict.reason, "keepalive_timeout");
    assert!(verdict.would_430);
    assert!(after >= due - 0.05, "failed early: {after:.2}s");
    assert!(after <= due + 1.5, "failed late: {after:.2}s");

    // It pings again: the verdict was a false alarm, taken back and counted.
    let mut stopper = uas.into_iter().nth(5).unwrap();
    stopper.ping();
    let port = stopper.port();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (text, flow) = loop {
        let text = metrics(&server);
        let flow = flow_of(&flows(&server, FLOWS), port).expect("listed");
        let retracted = metric(&text, "sipflow_verdicts_retracted_total", &[("reason", "keepalive_timeout")]);
        if (retracted == Some(1.0) && flow["state"] == "alive") || Instant::now() >= deadline {
            break (text, flow);
        }
        thread::sleep(ms(100));
    };
    assert_eq!(flow["state"], "alive", "back from the failed state: {flow}");
    assert_eq!(metric(&text, "sipflow_verdicts_retracted_total", &[("reason", "keepalive_timeout")]), Some(1.0));
    assert_eq!(metric(&text, "sipflow_flow_failures_total", &[("reason", "keepalive_timeout")]), Some(1.0));
}

// ---------------------------------------------------------------------------
// d) +sip.instance without reg-id, and the registrar's Require: outbound.

/// A REGISTER whose Contact has +sip.instance but no reg-id and no ;ob (a
/// GRUU UA, RFC 5627, that does not do outbound itself).
fn instance_register(user: &str, local: SocketAddr) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-{user}-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=t-{user}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {user}-reg\r\n\
         CSeq: 1 REGISTER\r\n\
         Supported: path, gruu\r\n\
         Contact: <sip:{user}@{local};transport=tcp>;+sip.instance=\"<urn:uuid:{user}-0001>\"\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Two UAs register a contact with +sip.instance and no reg-id; one registrar
/// answers `Require: outbound` (as Kamailio does: it routes that binding by
/// its flow and answers 430 once the flow is gone), the other does not. Both
/// flows then die (FIN): the first warrants 430, the second does not.
#[test]
fn the_registrars_require_outbound_makes_an_instance_without_reg_id_warrant_430() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("requireob");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, &["--sip-port", "5060", "--sip-port", "5062", "--sweep-interval", "200ms"]);
    // 5060 says Require: outbound; 5062 is the same registrar without it.
    let _outbound = Registrar::start(&server, 5060, |request| ok_for(request, 30));
    let _plain = Registrar::start(&server, 5062, |request| {
        let ok = String::from_utf8(ok_for(request, 30)).expect("text");
        assert!(ok.contains("Require: outbound\r\n"));
        ok.replace("Require: outbound\r\n", "").into_bytes()
    });

    let mut routed = connect(&client, 5060);
    let mut plain = connect(&client, 5062);
    for (stream, user) in [(&mut routed, "gruu"), (&mut plain, "gruu2")] {
        let local = stream.local_addr().unwrap();
        let reply = peers::exchange(stream, &instance_register(user, local));
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("SIP/2.0 200"), "{user}: {reply}");
        assert_eq!(reply.contains("Require: outbound"), user == "gruu", "{reply}");
    }
    let port = |s: &TcpStream| s.local_addr().unwrap().port();
    let (routed_port, plain_port) = (port(&routed), port(&plain));
    await_bindings(&server, &[routed_port, plain_port]);
    let all = flows(&server, FLOWS);
    for (p, by_flow, user) in [(routed_port, true, "gruu"), (plain_port, false, "gruu2")] {
        let flow = flow_of(&all, p).expect("listed");
        assert_eq!(flow["routed_by_flow"], by_flow, "{flow}");
        assert_eq!(flow["instance"], format!("<urn:uuid:{user}-0001>"), "{flow}");
        assert!(flow["reg_id"].is_null(), "{flow}");
    }

    let names = HashMap::from([(routed_port, "routed"), (plain_port, "plain")]);
    peers::finish(&routed);
    peers::finish(&plain);
    let closed = Instant::now();
    let mut seen = BTreeMap::new();
    poll_flows(&server, FAILED, closed + Duration::from_secs(4), |failed| {
        note_verdicts(failed, &names, &mut seen);
        seen.len() == 2
    });
    let text = metrics(&server);
    for (name, would_430) in [("routed", true), ("plain", false)] {
        let verdict =
            seen.get(name).unwrap_or_else(|| panic!("no verdict for {name}: {seen:?}\n{:#?}", nonzero_series(&text)));
        println!(
            "{name}: {} {:.2}s after the FIN, would_430={}",
            verdict.reason,
            verdict.at.duration_since(closed).as_secs_f64(),
            verdict.would_430
        );
        assert_eq!(verdict.reason, "tcp_fin", "{name}");
        assert_eq!(verdict.would_430, would_430, "{name}: routed by its flow only on the registrar's word");
    }
    assert_eq!(metric(&text, "sipflow_flows_would_430", &[("transport", "tcp")]), Some(1.0), "{text}");
}
