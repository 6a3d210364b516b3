//! Issue 13 in namespaces: verdicts an operator can page on. sipflow must not
//! fail a flow, or raise a would-430, on traffic that proves nothing: a forged
//! RST or FIN outside the window (the host drops it, RFC 5961), a busy TLS flow
//! whose payload it cannot read, a scanner's REGISTER that nothing accepted.
//! Next to each, the honest case that must still give its verdict: a real
//! reset or close, a REGISTER challenged with 401 and then accepted.
//!
//! Issue 26 too: a forged SYN (then an RST or FIN one past it) moves no mark,
//! a forged ping the host would not take is not read, and a flood of junk
//! flows cannot evict a registered flow from being judged.
//!
//! Real sockets throughout; forged segments leave a raw socket in the client's
//! namespace with the client's exact 4-tuple, so they reach the server's XDP
//! program the way an off-path attacker's would.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use monitor_common::events::HEAD_MAX;
use serde_json::Value;
use sipflow_tests::{
    forge::{self, Control, RawSender, Sniffer, WireState},
    netns::{CLIENT_IF, CLIENT_V4, Lab, SERVER_IF, SERVER_V4, http_get, output_of},
    peers::{self, TcpServer, connect},
    proc_stats::status_kb,
};

const FLOW_TIMER_S: f64 = 2.0;
const GRACE_S: f64 = 1.0;
/// Short timers, so that a silence verdict, if one were coming, comes within the test.
const AGENT_ARGS: &[&str] = &["--flow-timer", "2s", "--grace", "1s", "--sweep-interval", "200ms"];
/// The Flow-Timer the registrars grant in their 2xx (the same as the agent's default here).
const REGISTRAR_FLOW_TIMER: u32 = 2;
const PING_EVERY: Duration = Duration::from_millis(500);

/// Sets a flag when the test ends, also when it fails: the peers' threads stop.
struct Running(Arc<AtomicBool>);

impl Running {
    fn new() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    fn stopped(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Accepts on `listener` until `stopped`; each connection gets `handle` on a thread of its own.
fn serve_each(listener: TcpListener, stopped: Arc<AtomicBool>, handle: fn(TcpStream, &AtomicBool)) {
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let stopped = stopped.clone();
                    thread::spawn(move || handle(stream, &stopped));
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
}

/// Reads from `stream` until EOF, `stopped` or an error: returns what came, one read at a time.
fn each_read(mut stream: TcpStream, stopped: &AtomicBool, mut on: impl FnMut(&mut TcpStream, &[u8]) -> bool) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut buf = vec![0u8; 4096];
    while !stopped.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !on(&mut stream, &buf[..n]) {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// GET /flows (with `query`, e.g. "?state=failed") from the agent in `server`.
fn flows(server: &str, query: &str) -> Vec<Value> {
    let (status, body) = http_get(server, &format!("http://127.0.0.1:9560/flows{query}")).expect("GET /flows");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/flows is JSON")
}

/// The flow whose client side (`remote`, from the server's point of view) has port `client_port`.
fn flow_at(flows: &[Value], client_port: u16) -> Option<&Value> {
    flows.iter().find(|f| {
        f["remote"].as_str().and_then(|r| r.parse::<SocketAddr>().ok()).is_some_and(|r| r.port() == client_port)
    })
}

fn metrics(server: &str) -> String {
    http_get(server, "http://127.0.0.1:9560/metrics").expect("GET /metrics").1
}

/// The sum of every sample of `name` that carries all of `labels`, whatever its
/// other labels (the `peer` label, the reasons): 0 when there is none.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let has = |(k, v): &(&str, &str)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\""));
            (series_name == name && labels.iter().all(has)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A CRLFCRLF ping that must get its CRLF pong (RFC 5626 §4.4.1): the connection works.
fn ping(stream: &mut TcpStream) {
    stream.write_all(b"\r\n\r\n").expect("send a ping");
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).expect("a pong: the real connection still works");
    assert_eq!(&pong, b"\r\n");
}

/// An outbound REGISTER (reg-id, +sip.instance) that the registrar must accept.
fn register(stream: &mut TcpStream, user: &str) {
    let reply = peers::register(stream, user);
    assert!(reply.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&reply));
}

fn client_port(stream: &TcpStream) -> u16 {
    stream.local_addr().expect("local addr").port()
}

/// Polls /flows until each stream's flow shows its binding (an AOR), pinging
/// them meanwhile so that none falls silent: only then would a false verdict
/// carry would_430, which is what an operator pages on.
fn wait_for_bindings(server: &str, streams: &mut [&mut TcpStream]) {
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut next_ping = Instant::now();
    loop {
        if Instant::now() >= next_ping {
            streams.iter_mut().for_each(|s| ping(s));
            next_ping += PING_EVERY;
        }
        let all = flows(server, "");
        let bound = |s: &&mut TcpStream| flow_at(&all, client_port(s)).is_some_and(|f| f["aor"].is_string());
        if streams.iter().all(bound) {
            return;
        }
        assert!(Instant::now() < deadline, "registered flows without a binding after 6 s: {all:#?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A registered outbound client pinging every 0.5 s; one segment carrying
/// `control`, forged with its 4-tuple and a sequence number 2^31 away from the
/// next one it sends (outside any window, so the server's TCP drops it); then
/// 3 s of pings that must all get their pong while /flows never calls the flow
/// failed, and the agent counts the segment as ignored.
fn a_forged_segment_fails_nothing(tag: &str, control: Control) {
    let mut lab = Lab::new(tag);
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, AGENT_ARGS);
    let _registrar = TcpServer::start(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        REGISTRAR_FLOW_TIMER,
    );
    let mut stream = connect(&client, 5060);
    let port = client_port(&stream);
    register(&mut stream, "alice");
    wait_for_bindings(&server, &mut [&mut stream]);

    // The client's next sequence number, read off its own interface from one ping.
    let sniffer = Sniffer::open(&client, CLIENT_IF);
    ping(&mut stream);
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("the lab's clients use IPv4"),
    };
    let (from, to): (SocketAddrV4, SocketAddrV4) = (v4(stream.local_addr().unwrap()), v4(stream.peer_addr().unwrap()));
    let wire = sniffer.data_segment(from, to, Duration::from_secs(2)).expect("the client's ping on the wire");
    drop(sniffer);
    let seq = wire.next_seq.wrapping_add(1 << 31);
    forge::send_ipv4(&client, &forge::tcp_control(from, to, seq, wire.ack, wire.window, control));
    let forged_at = Instant::now();

    let mut ignored = 0.0;
    let mut next_ping = Instant::now();
    while forged_at.elapsed() < Duration::from_secs(3) {
        if Instant::now() >= next_ping {
            ping(&mut stream);
            next_ping += PING_EVERY;
        }
        let all = flows(&server, "");
        let flow = flow_at(&all, port).unwrap_or_else(|| panic!("the live flow is listed: {all:#?}"));
        assert_ne!(
            flow["state"],
            "failed",
            "{:.1} s after one forged {control:?} (seq {seq:#x}, 2^31 past the client's next {:#x}), the live, \
             pinging connection is called failed: {flow:#}",
            forged_at.elapsed().as_secs_f64(),
            wire.next_seq,
        );
        ignored = metric_sum(&metrics(&server), "sipflow_tcp_segments_ignored_total", &[]);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ignored >= 1.0,
        "the forged {control:?} is counted in sipflow_tcp_segments_ignored_total (sum over reasons: {ignored})"
    );
    println!("forged {control:?} ignored; sipflow_tcp_segments_ignored_total sums to {ignored}");
}

#[test]
fn a_forged_rst_out_of_window_fails_nothing() {
    sipflow_tests::root_or_skip!();
    a_forged_segment_fails_nothing("rst", Control::Rst);
}

#[test]
fn a_forged_fin_fails_nothing() {
    sipflow_tests::root_or_skip!();
    a_forged_segment_fails_nothing("fin", Control::Fin);
}

#[test]
fn a_real_rst_and_fin_still_fail_the_flow() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("honest");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, AGENT_ARGS);
    let _registrar = TcpServer::start(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        REGISTRAR_FLOW_TIMER,
    );
    let mut killed = connect(&client, 5060);
    let mut closed = connect(&client, 5060);
    let names = BTreeMap::from([(client_port(&killed), "killed"), (client_port(&closed), "closed")]);
    register(&mut killed, "bob");
    register(&mut closed, "carol");
    wait_for_bindings(&server, &mut [&mut killed, &mut closed]);

    // The host's own RST (SO_LINGER 0) and FIN: exactly where its peer expects them.
    peers::reset(killed);
    peers::finish(&closed);
    let closed_at = Instant::now();

    let mut seen: BTreeMap<&str, Value> = BTreeMap::new();
    while closed_at.elapsed() < Duration::from_secs(5) && seen.len() < 2 {
        for f in flows(&server, "?state=failed") {
            let port = f["remote"].as_str().and_then(|r| r.parse::<SocketAddr>().ok()).map(|r| r.port());
            if let Some(name) = port.and_then(|p| names.get(&p)) {
                seen.entry(name).or_insert(f);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    for (name, reason) in [("killed", "tcp_reset"), ("closed", "tcp_fin")] {
        let flow = seen.get(name).unwrap_or_else(|| {
            panic!("no verdict for the {name} client within 5 s: {seen:#?}\nall flows: {:#?}", flows(&server, ""))
        });
        assert_eq!(flow["reason"], reason, "{name}: {flow:#}");
        assert_eq!(flow["would_430"], true, "{name}: a registered outbound flow that failed warrants 430: {flow:#}");
    }
}

/// Discards whatever comes, like a TLS server that never answers a record.
fn discard(stream: TcpStream, stopped: &AtomicBool) {
    each_read(stream, stopped, |_, _| true);
}

#[test]
fn a_busy_tls_flow_is_never_failed_by_silence() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tls");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, AGENT_ARGS);
    // 5061 is sipflow's default TLS port: payload opaque, flow tracked at the TCP level.
    let running = Running::new();
    serve_each(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5061)).unwrap()),
        running.stopped(),
        discard,
    );
    let mut stream = connect(&client, 5061);
    let port = client_port(&stream);

    // 100 bytes every 0.5 s, past Flow-Timer + grace and 3 s more: the client is never silent.
    let mut noise = fastrand::Rng::new();
    let start = Instant::now();
    let mut next_send = start;
    let mut listed = false;
    while start.elapsed() < Duration::from_secs_f64(FLOW_TIMER_S + GRACE_S + 3.0) {
        if Instant::now() >= next_send {
            stream
                .write_all(&std::iter::repeat_with(|| noise.u8(..)).take(100).collect::<Vec<u8>>())
                .expect("send 100 bytes");
            next_send += PING_EVERY;
        }
        let all = flows(&server, "");
        if let Some(flow) = flow_at(&all, port) {
            listed = true;
            assert_ne!(
                flow["state"],
                "failed",
                "after {:.1} s of 100 bytes every 0.5 s, the TLS flow is called failed: {flow:#}",
                start.elapsed().as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(listed, "the TLS connection was never listed in /flows: {:#?}", flows(&server, ""));
    let all = flows(&server, "");
    let flow = flow_at(&all, port).unwrap_or_else(|| panic!("the TLS flow is still listed: {all:#?}"));
    assert_eq!(flow["transport"], "tls", "{flow:#}");
    assert_ne!(flow["state"], "failed", "{flow:#}");
}

/// What a SIP scanner sends: a REGISTER with a plain Contact (no reg-id, no
/// +sip.instance, no ;ob) and its tell-tale User-Agent.
fn scanner_register(local: SocketAddr) -> Vec<u8> {
    format!(
        "REGISTER sip:{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-scan-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"100\" <sip:100@{SERVER_V4}>;tag=scan\r\n\
         To: \"100\" <sip:100@{SERVER_V4}>\r\n\
         Call-ID: scan-1@{local}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:100@{local}>\r\n\
         Expires: 3600\r\n\
         User-Agent: friendly-scanner\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_scanner_register_binds_nothing() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("scan");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    // The defaults for direction: no --egress, no --ingress-only.
    lab.start_agent(SERVER_IF, AGENT_ARGS);
    // A SIP port that reads and never answers (a bound socket, so no ICMP port unreachable either).
    let running = Running::new();
    let sink = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let stopped = running.stopped();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stopped.load(Ordering::Relaxed) {
            let _ = sink.recv_from(&mut buf);
        }
    });

    let scanner = Lab::in_namespace(&client, || UdpSocket::bind((CLIENT_V4, 0)).unwrap());
    let local = scanner.local_addr().unwrap();
    scanner.send_to(&scanner_register(local), (SERVER_V4, 5060)).unwrap();
    let sent_at = Instant::now();

    // Past Flow-Timer + grace and 3 s more, so that the silent "flow" has had every
    // chance to fail: at no point a binding, a would-430, or a failed flow warranting 430.
    let mut violations: BTreeMap<&str, String> = BTreeMap::new();
    let mut register_seen = false;
    while sent_at.elapsed() < Duration::from_secs_f64(FLOW_TIMER_S + GRACE_S + 3.0) {
        let at = sent_at.elapsed().as_secs_f64();
        let text = metrics(&server);
        register_seen |= metric_sum(&text, "sipflow_requests_total", &[("method", "REGISTER")]) >= 1.0;
        let registrations = metric_sum(&text, "sipflow_registrations", &[]);
        if registrations != 0.0 {
            violations
                .entry("registrations")
                .or_insert(format!("{at:.1} s: sipflow_registrations sums to {registrations}"));
        }
        let would_430 = metric_sum(&text, "sipflow_flows_would_430", &[]);
        if would_430 != 0.0 {
            violations.entry("gauge").or_insert(format!("{at:.1} s: sipflow_flows_would_430 sums to {would_430}"));
        }
        if let Some(flow) = flows(&server, "?state=failed").into_iter().find(|f| f["would_430"] == true) {
            violations.entry("flow").or_insert(format!("{at:.1} s: a failed flow with would_430: {flow}"));
        }
        thread::sleep(Duration::from_millis(250));
    }
    assert!(register_seen, "the agent saw the scanner's REGISTER (sipflow_requests_total{{method=\"REGISTER\"}})");
    assert!(violations.is_empty(), "an unanswered scanner REGISTER bound something:\n{violations:#?}");
}

/// A registrar that challenges: the first REGISTER on a connection gets 401 with
/// a Digest challenge, every later one 200 OK with Flow-Timer; pings get pongs.
fn challenging_registrar(stream: TcpStream, stopped: &AtomicBool) {
    let mut registers = 0;
    each_read(stream, stopped, |stream, data| {
        let reply = if data == b"\r\n\r\n" {
            b"\r\n".to_vec()
        } else if data.starts_with(b"REGISTER ") {
            registers += 1;
            if registers == 1 {
                let challenge = peers::response_to(data, "401 Unauthorized");
                let challenge = String::from_utf8(challenge).expect("UTF-8").replace(
                    "Content-Length: 0\r\n",
                    "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"4e6f6e6365\", algorithm=MD5\r\n\
                     Content-Length: 0\r\n",
                );
                challenge.into_bytes()
            } else {
                peers::ok_for(data, REGISTRAR_FLOW_TIMER)
            }
        } else {
            return true;
        };
        stream.write_all(&reply).is_ok()
    });
}

#[test]
fn a_register_challenged_then_accepted_binds_once() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("chal");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    // --egress: the default under the new contract, and on older agents what makes the 401 and the 200 seen.
    let mut args = AGENT_ARGS.to_vec();
    args.push("--egress");
    lab.start_agent(SERVER_IF, &args);
    let running = Running::new();
    serve_each(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        running.stopped(),
        challenging_registrar,
    );

    // The same REGISTER twice over one connection: same Call-ID, CSeq 1 then 2,
    // the second with its credentials and a new branch, as a UA answers a challenge.
    let mut stream = connect(&client, 5060);
    let local = stream.local_addr().unwrap();
    let first = peers::outbound_register("frank", "TCP", local, "frank", "frank-reg");
    let second = String::from_utf8(first.clone())
        .unwrap()
        .replace("branch=z9hG4bK-frank-reg", "branch=z9hG4bK-frank-reg-2")
        .replace(
            "CSeq: 1 REGISTER\r\n",
            "CSeq: 2 REGISTER\r\nAuthorization: Digest username=\"frank\", realm=\"example.com\", \
             nonce=\"4e6f6e6365\", uri=\"sip:example.com\", response=\"00112233445566778899aabbccddeeff\"\r\n",
        )
        .into_bytes();
    let challenge = peers::exchange(&mut stream, &first);
    assert!(challenge.starts_with(b"SIP/2.0 401"), "{}", String::from_utf8_lossy(&challenge));
    let accepted = peers::exchange(&mut stream, &second);
    assert!(accepted.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&accepted));
    let accepted_at = Instant::now();

    // Until the binding shows, then 2.5 s more (past the agent's 2 s settling of
    // unanswered REGISTERs), pinging: the count never goes past one and ends at one.
    let mut most = 0.0f64;
    let mut bound_at: Option<Instant> = None;
    let mut next_ping = Instant::now();
    let text = loop {
        if Instant::now() >= next_ping {
            ping(&mut stream);
            next_ping += PING_EVERY;
        }
        let text = metrics(&server);
        let outbound = metric_sum(&text, "sipflow_registrations", &[("outbound", "true")]);
        most = most.max(outbound);
        if outbound >= 1.0 && bound_at.is_none() {
            bound_at = Some(Instant::now());
        }
        if bound_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(2500))
            || accepted_at.elapsed() >= Duration::from_secs(10)
        {
            break text;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let ending = metric_sum(&text, "sipflow_registrations", &[("outbound", "true")]);
    let registrations: Vec<&str> = text.lines().filter(|l| l.starts_with("sipflow_registrations")).collect();
    assert!(bound_at.is_some(), "no binding within 10 s of the 200: {registrations:?}");
    assert!(most <= 1.0, "401 then 200 bound more than once (at most {most}): {registrations:?}");
    assert_eq!(ending, 1.0, "{registrations:?}");
    assert_eq!(metric_sum(&text, "sipflow_registrations", &[("outbound", "false")]), 0.0, "{registrations:?}");
    println!("401 then 200: sipflow_registrations{{outbound=\"true\"}} = {ending}");
}

/// The IPv4 ends of a lab connection, as the client sends: (client, server).
fn ends(stream: &TcpStream) -> (SocketAddrV4, SocketAddrV4) {
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("the lab's clients use IPv4"),
    };
    (v4(stream.local_addr().expect("local addr")), v4(stream.peer_addr().expect("peer addr")))
}

/// One ping on `stream`, and where the client's direction stands after it, read off its own interface.
fn ping_on_the_wire(client: &str, stream: &mut TcpStream) -> WireState {
    let sniffer = Sniffer::open(client, CLIENT_IF);
    ping(stream);
    let (from, to) = ends(stream);
    sniffer.data_segment(from, to, Duration::from_secs(2)).expect("the client's ping on the wire")
}

/// Polls /flows?state=failed until the flow whose client is `remote` is in it, or `within` passes.
fn wait_for_verdict(server: &str, remote: SocketAddrV4, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let failed = flows(server, "?state=failed");
        if let Some(flow) = flow_of(&failed, remote) {
            return Some(flow.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The flow whose client side is exactly `remote`.
fn flow_of(flows: &[Value], remote: SocketAddrV4) -> Option<&Value> {
    flows.iter().find(|f| f["remote"].as_str().and_then(|r| r.parse::<SocketAddr>().ok()) == Some(remote.into()))
}

/// A sequence number at least 2^24 away from `next` either way: nowhere near any window.
fn far_from(next: u32, rng: &mut fastrand::Rng) -> u32 {
    loop {
        let x = rng.u32(..);
        if x.wrapping_sub(next) >= 1 << 24 && next.wrapping_sub(x) >= 1 << 24 {
            return x;
        }
    }
}

/// A registered outbound client pinging every 0.5 s; a SYN forged with its
/// 4-tuple and a random sequence number X (the host answers a challenge ACK
/// and changes nothing, RFC 5961 §4), then `control` at X+1, which only a
/// mark taken from that SYN would accept; 3 s of pings, each with its pong,
/// while /flows never calls the flow failed. Then the client's own close,
/// which must still give its verdict, with would_430: the SYN moved nothing.
fn a_forged_syn_then_close_fails_nothing(tag: &str, control: Control) {
    let mut lab = Lab::new(tag);
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, AGENT_ARGS);
    let _registrar = TcpServer::start(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        REGISTRAR_FLOW_TIMER,
    );
    let mut stream = connect(&client, 5060);
    let (from, to) = ends(&stream);
    register(&mut stream, "ivan");
    wait_for_bindings(&server, &mut [&mut stream]);

    let wire = ping_on_the_wire(&client, &mut stream);
    let x = far_from(wire.next_seq, &mut fastrand::Rng::new());
    let raw = RawSender::open(&client);
    for packet in [
        forge::tcp_control(from, to, x, wire.ack, wire.window, Control::Syn),
        forge::tcp_control(from, to, x.wrapping_add(1), wire.ack, wire.window, control),
    ] {
        raw.send(&packet).expect("send a forged segment");
    }
    let forged_at = Instant::now();

    let mut next_ping = Instant::now();
    while forged_at.elapsed() < Duration::from_secs(3) {
        if Instant::now() >= next_ping {
            ping(&mut stream);
            next_ping += PING_EVERY;
        }
        let all = flows(&server, "");
        let flow = flow_of(&all, from).unwrap_or_else(|| panic!("the live flow is listed: {all:#?}"));
        assert_ne!(
            flow["state"],
            "failed",
            "{:.1} s after a forged SYN at {x:#x} and a {control:?} at {:#x} (the client's next is {:#x}), the live, \
             pinging connection is called failed: {flow:#}",
            forged_at.elapsed().as_secs_f64(),
            x.wrapping_add(1),
            wire.next_seq,
        );
        thread::sleep(Duration::from_millis(100));
    }
    let text = metrics(&server);
    let syn = metric_sum(&text, "sipflow_tcp_segments_ignored_total", &[("reason", "syn_on_open_flow")]);
    let ignored = metric_sum(&text, "sipflow_tcp_segments_ignored_total", &[]);
    assert!(syn >= 1.0, "the forged SYN is counted as syn_on_open_flow: {syn} (all ignored segments: {ignored})");
    assert!(ignored >= 2.0, "the forged SYN and {control:?} are both ignored: {ignored}");

    // The honest close, at the real mark.
    let reason = match control {
        Control::Rst => {
            peers::reset(stream);
            "tcp_reset"
        }
        _ => {
            peers::finish(&stream);
            "tcp_fin"
        }
    };
    let flow = wait_for_verdict(&server, from, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no verdict within 5 s of the client's own {reason}: {:#?}", flows(&server, "")));
    assert_eq!(flow["reason"], reason, "{flow:#}");
    assert_eq!(flow["would_430"], true, "a registered outbound flow that failed warrants 430: {flow:#}");
    println!("forged SYN at {x:#x} then {control:?}: ignored (syn_on_open_flow {syn}); the real close: {reason}");
}

#[test]
fn a_forged_syn_then_rst_fails_nothing_and_the_real_rst_still_does() {
    sipflow_tests::root_or_skip!();
    a_forged_syn_then_close_fails_nothing("synrst", Control::Rst);
}

#[test]
fn a_forged_syn_then_fin_fails_nothing_and_the_real_fin_still_does() {
    sipflow_tests::root_or_skip!();
    a_forged_syn_then_close_fails_nothing("synfin", Control::Fin);
}

/// The registrar of [`a_forged_ping_the_host_would_not_take_is_not_read`]:
/// 200 OK with Flow-Timer to a REGISTER, a pong to each ping, until an
/// OPTIONS with `X-Test: stop-pongs` (answered 200) mutes the pongs on its
/// connection: a server whose pongs stop, the honest pong timeout.
fn muting_registrar(stream: TcpStream, stopped: &AtomicBool) {
    let mut pongs = true;
    each_read(stream, stopped, |stream, data| {
        let reply = if data == b"\r\n\r\n" {
            if !pongs {
                return true;
            }
            b"\r\n".to_vec()
        } else if data.starts_with(b"REGISTER ") {
            peers::ok_for(data, REGISTRAR_FLOW_TIMER)
        } else if data.starts_with(b"OPTIONS ") {
            pongs &= !String::from_utf8_lossy(data).contains("\r\nX-Test: stop-pongs\r\n");
            peers::response_to(data, "200 OK")
        } else {
            return true;
        };
        stream.write_all(&reply).is_ok()
    });
}

/// An OPTIONS that tells [`muting_registrar`] to answer no more pings on this connection.
fn stop_pongs(stream: &mut TcpStream) {
    let local = stream.local_addr().expect("local addr");
    let options = format!(
        "OPTIONS sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-mute\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:judy@example.com>;tag=mute\r\n\
         To: <sip:example.com>\r\n\
         Call-ID: mute@{local}\r\n\
         CSeq: 2 OPTIONS\r\n\
         X-Test: stop-pongs\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let reply = peers::exchange(stream, options.as_bytes());
    assert!(reply.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&reply));
}

/// Where a forged segment goes, given where the client's direction stands: its (seq, ack).
type Placement = fn(WireState) -> (u32, u32);

/// Two registered outbound clients; with --pong-timeout 1s. The healthy one
/// pings, and right after each of two real pings a CRLFCRLF is forged with its
/// 4-tuple that its server's TCP does not take: 2^28 past the client's next
/// sequence number (outside the window), then at exactly that number but
/// acknowledging 2^28 bytes the server never sent. Read as a ping, either
/// would get no pong and fail the flow pong_timeout 1 s later, well before
/// the next real ping 2 s on: /flows never shows it failed, and no verdict
/// is retracted. The honest case next to it: the other client's server stops
/// answering pings, and its one unanswered ping fails it pong_timeout, would_430.
#[test]
fn a_forged_ping_the_host_would_not_take_is_not_read() {
    sipflow_tests::root_or_skip!();
    const OBSERVE: Duration = Duration::from_secs(2);
    let mut lab = Lab::new("oow");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let mut args = AGENT_ARGS.to_vec();
    args.extend(["--pong-timeout", "1s"]);
    lab.start_agent(SERVER_IF, &args);
    let running = Running::new();
    serve_each(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        running.stopped(),
        muting_registrar,
    );
    let mut healthy = connect(&client, 5060);
    let mut muted = connect(&client, 5060);
    let (from, to) = ends(&healthy);
    let muted_end = ends(&muted).0;
    register(&mut healthy, "judy");
    register(&mut muted, "ken");
    wait_for_bindings(&server, &mut [&mut healthy, &mut muted]);

    // The honest case: pongs stop, one more ping goes unanswered.
    stop_pongs(&mut muted);
    muted.write_all(b"\r\n\r\n").expect("send a ping");
    let muted_at = Instant::now();
    let mut muted_verdict: Option<(f64, Value)> = None;

    let raw = RawSender::open(&client);
    let forgeries: [(&str, Placement); 2] = [
        ("outside the window", |w| (w.next_seq.wrapping_add(1 << 28), w.ack)),
        ("acknowledging unsent data", |w| (w.next_seq, w.ack.wrapping_add(1 << 28))),
    ];
    for (what, place) in forgeries {
        let wire = ping_on_the_wire(&client, &mut healthy);
        let (seq, ack) = place(wire);
        raw.send(&forge::tcp_data(from, to, seq, ack, wire.window, b"\r\n\r\n")).expect("send a forged ping");
        let forged_at = Instant::now();
        while forged_at.elapsed() < OBSERVE {
            let failed = flows(&server, "?state=failed");
            if let Some(flow) = flow_of(&failed, from) {
                panic!(
                    "{:.1} s after a ping forged {what} (seq {seq:#x}, ack {ack:#x}; the client's next {:#x}, \
                     its ack {:#x}), the live connection, every real ping answered, is called failed: {flow:#}",
                    forged_at.elapsed().as_secs_f64(),
                    wire.next_seq,
                    wire.ack
                );
            }
            if muted_verdict.is_none() {
                muted_verdict = flow_of(&failed, muted_end).map(|f| (muted_at.elapsed().as_secs_f64(), f.clone()));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    // The last real ping, so that a verdict retracted by it would show.
    ping(&mut healthy);

    let (at, flow) = muted_verdict
        .map(|(at, flow)| (format!("{at:.1} s"), flow))
        .or_else(|| wait_for_verdict(&server, muted_end, Duration::from_secs(3)).map(|f| ("late".into(), f)))
        .unwrap_or_else(|| panic!("the unanswered ping gave no verdict: {:#?}", flows(&server, "")));
    assert_eq!(flow["reason"], "pong_timeout", "the unanswered ping ({at}): {flow:#}");
    assert_eq!(flow["would_430"], true, "{flow:#}");

    let text = metrics(&server);
    let count = |reason| metric_sum(&text, "sipflow_tcp_segments_ignored_total", &[("reason", reason)]);
    let (not_in_order, unsent) = (count("payload_not_in_order"), count("ack_of_unsent_data"));
    assert!(not_in_order >= 1.0, "the ping outside the window is counted payload_not_in_order: {not_in_order}");
    assert!(unsent >= 1.0, "the ping acknowledging unsent data is counted ack_of_unsent_data: {unsent}");
    let retracted = metric_sum(&text, "sipflow_verdicts_retracted_total", &[]);
    assert_eq!(retracted, 0.0, "a verdict was made and taken back: a forged ping was read");
    let all = flows(&server, "");
    let flow = flow_of(&all, from).unwrap_or_else(|| panic!("the healthy flow is listed: {all:#?}"));
    assert_ne!(flow["state"], "failed", "{flow:#}");
    println!(
        "forged pings not read (payload_not_in_order {not_in_order}, ack_of_unsent_data {unsent}); \
         the muted flow: pong_timeout at {at}"
    );
}

/// How many one-byte datagrams the flood sends, each from an address:port of its own.
const FLOOD: u32 = 150_000;
/// The Flow-Timer of the flood test: long enough for the whole flood to land inside it.
const FLOOD_FLOW_TIMER: u32 = 10;

/// Sends [`FLOOD`] one-byte UDP datagrams from `namespace` to the server's
/// port 5060, each from another source (ports 1024-60999 of 192.0.2.10, .11,
/// .12: lab addresses nobody holds, so nothing answers them). Returns how
/// many failed to send and how long it took.
fn flood(namespace: &str) -> (u32, Duration) {
    const PORTS: u32 = 60_000;
    let raw = RawSender::open(namespace);
    let to: SocketAddrV4 = format!("{SERVER_V4}:5060").parse().expect("an address");
    let start = Instant::now();
    let mut failed = 0;
    for i in 0..FLOOD {
        let host = u8::try_from(10 + i / PORTS).expect("a few hosts");
        let port = u16::try_from(1024 + i % PORTS).expect("a port");
        let from = SocketAddrV4::new([192, 0, 2, host].into(), port);
        if raw.send(&forge::udp_datagram(from, to, b"x")).is_err() {
            failed += 1;
        }
    }
    (failed, start.elapsed())
}

/// Issue 26.3: 150 000 junk flows (one-byte datagrams to 5060, each from a
/// port of its own) against the agent's default --max-flows of 65 536 evict
/// unbound flows only. A registered outbound client that falls silent after
/// three pings is still judged: keepalive_timeout with would_430, within a
/// few seconds past its Flow-Timer + grace; another that keeps pinging through
/// the flood is never failed; the evictions are counted.
#[test]
fn a_flood_of_junk_flows_cannot_evict_a_registered_flow() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("flood");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    // The default --max-flows; a sweep each second (a walk of 65 536 flows), which counts evictions.
    lab.start_agent(SERVER_IF, &["--flow-timer", "10s", "--grace", "1s", "--sweep-interval", "1s"]);
    let _registrar = TcpServer::start(
        Lab::in_namespace(&server, || TcpListener::bind((SERVER_V4, 5060)).unwrap()),
        FLOOD_FLOW_TIMER,
    );
    // A bound UDP port that never reads: no ICMP port unreachable answers the flood.
    let _sink = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).unwrap());
    let mut silent = connect(&client, 5060);
    let mut pinger = connect(&client, 5060);
    // The flood may delay a pong past connect's 0.5 s; it never loses one.
    pinger.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    let (silent_end, pinger_end) = (ends(&silent).0, ends(&pinger).0);
    register(&mut silent, "liam");
    register(&mut pinger, "mia");
    wait_for_bindings(&server, &mut [&mut silent, &mut pinger]);
    // At least two more pings each, so that the silent one's cadence is learnt from a gap.
    for _ in 0..2 {
        thread::sleep(PING_EVERY);
        ping(&mut silent);
        ping(&mut pinger);
    }
    // From here on the connection stays open, and quiet.
    let silent_since = Instant::now();

    let mut flooding = Some({
        let client = client.clone();
        thread::spawn(move || flood(&client))
    });
    let due = Duration::from_secs(u64::from(FLOOD_FLOW_TIMER)) + Duration::from_secs(1);
    let mut flood_result: Option<(u32, Duration, Duration)> = None;
    let mut next_ping = Instant::now();
    let verdict = loop {
        if Instant::now() >= next_ping {
            ping(&mut pinger);
            next_ping += PING_EVERY;
        }
        if flooding.as_ref().is_some_and(|f| f.is_finished()) {
            let (failed, took) = flooding.take().expect("running").join().expect("the flood");
            flood_result = Some((failed, took, silent_since.elapsed()));
        }
        let failed = flows(&server, "?state=failed");
        if let Some(flow) = flow_of(&failed, pinger_end) {
            panic!("the client pinging through the flood is called failed: {flow:#}");
        }
        if let Some(flow) = flow_of(&failed, silent_end) {
            break flow.clone();
        }
        assert!(
            silent_since.elapsed() < due + Duration::from_secs(5),
            "no verdict on the silent registered flow {:.1} s after its last ping (Flow-Timer + grace: {due:?}); \
             flood: {flood_result:?}\nfailed flows: {failed:#?}\nmetrics:\n{}",
            silent_since.elapsed().as_secs_f64(),
            metrics(&server)
                .lines()
                .filter(|l| l.starts_with("sipflow_map") || l.contains("evictions"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        thread::sleep(Duration::from_millis(200));
    };
    let judged_after = silent_since.elapsed();
    let (failed_sends, took, done_after) = match flood_result {
        Some(r) => r,
        None => {
            let (failed, took) = flooding.take().expect("running").join().expect("the flood");
            (failed, took, silent_since.elapsed())
        }
    };
    assert_eq!(verdict["reason"], "keepalive_timeout", "{verdict:#}");
    assert_eq!(verdict["would_430"], true, "a registered outbound flow that failed warrants 430: {verdict:#}");
    assert!(
        judged_after + Duration::from_secs(1) >= due,
        "judged silent {:.1} s after its last ping, before its Flow-Timer + grace ({due:?}): {verdict:#}",
        judged_after.as_secs_f64()
    );
    assert!(
        done_after < due,
        "the flood ended {:.1} s after the last ping, past Flow-Timer + grace: it proves nothing about the verdict",
        done_after.as_secs_f64()
    );
    assert_eq!(failed_sends, 0, "datagrams the raw socket refused");

    // The evictions, counted after a whole walk of the maps.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = metrics(&server);
        if metric_sum(&text, "sipflow_flow_evictions_total", &[]) > 0.0 || Instant::now() >= deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let evictions = metric_sum(&text, "sipflow_flow_evictions_total", &[]);
    let unbound = metric_sum(&text, "sipflow_map_entries", &[("map", "flows")]);
    let bound = metric_sum(&text, "sipflow_map_entries", &[("map", "bound_flows")]);
    let ingress = metric_sum(&text, "sipflow_packets_total", &[("direction", "ingress")]);
    assert!(evictions > 0.0, "sipflow_flow_evictions_total after {FLOOD} junk flows: {evictions}");
    assert!(bound >= 2.0, "the two registered flows in bound_flows: {bound}");
    println!(
        "flood of {FLOOD} in {:.1} s (done {:.1} s after the last ping); verdict keepalive_timeout at {:.1} s \
         (Flow-Timer + grace {due:?}); evictions {evictions}, flows {unbound}, bound_flows {bound}, ingress packets {ingress}",
        took.as_secs_f64(),
        done_after.as_secs_f64(),
        judged_after.as_secs_f64()
    );
}

/// Issue 26: what the agent's resident memory may reach under the flood of
/// [`a_contact_stuffed_register_flood_keeps_the_agent_under_its_memory_bound`].
/// The DaemonSet's memory limit is 256 Mi. What the flood can make the agent
/// hold is capped twice: 64 MiB of heads queued for its engine, 64 MiB of
/// waiting REGISTERs (by its estimate; the heap holds somewhat more), on top
/// of some 40 MiB at rest. A debug agent measured 179-180 MiB with both caps
/// reached at once: 200 MiB is that with some room, and the limit's 56 Mi
/// beyond it are for what the estimates leave out.
const FLOOD_RSS_BOUND_KB: u64 = 200 * 1024;
/// REGISTERs in the contact-stuffed flood, each with a Call-ID of its own.
const STUFFED_REGISTERS: u32 = 100_000;
/// Their rate: what the kernel's 4 MiB ring still passes (at the full speed
/// of one socket, some 100 000 a second, it loses nearly all), faster than a
/// debug engine parses 40 Contacts a head, so its queue fills too: 5 s.
const STUFFED_PER_SECOND: u32 = 20_000;
/// One tiny Contact: the most of them a head can hold.
const TINY_CONTACT: &str = "Contact: <sip:a@b>\r\n";

/// REGISTER number `n` from `local`, of about `len` bytes: as many tiny
/// Contacts as fit. Under [`HEAD_MAX`] it reaches the agent whole; past it,
/// the kernel hands up its first HEAD_MAX bytes, a cut head.
fn stuffed_register(local: SocketAddr, n: u32, len: usize) -> Vec<u8> {
    let mut message = format!(
        "REGISTER sip:{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{n}\r\n\
         From: <sip:u@{SERVER_V4}>;tag={n}\r\n\
         To: <sip:u@{SERVER_V4}>\r\n\
         Call-ID: {n}@stuffed\r\n\
         CSeq: 1 REGISTER\r\n\
         Content-Length: 0\r\n"
    );
    while message.len() + TINY_CONTACT.len() + 2 <= len {
        message.push_str(TINY_CONTACT);
    }
    message.push_str("\r\n");
    message.into_bytes()
}

/// Sends the flood from `socket`, [`STUFFED_PER_SECOND`] in bursts of 50:
/// nine in ten of 1000-1024 bytes (38-40 Contacts, past the 32 kept), the
/// tenth of 1100-1399 (a cut head). Returns how many failed to send, how
/// many were past HEAD_MAX, the bytes sent and how long it took.
fn stuffed_flood(socket: &UdpSocket) -> (u32, u32, usize, Duration) {
    let local = socket.local_addr().expect("local addr");
    let start = Instant::now();
    let (mut failed, mut cut, mut bytes) = (0, 0, 0);
    for n in 0..STUFFED_REGISTERS {
        if n % 50 == 0 {
            let due = Duration::from_secs_f64(f64::from(n) / f64::from(STUFFED_PER_SECOND));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
        let len = if n % 10 == 9 { 1100 + n as usize % 300 } else { 1000 + n as usize % 25 };
        let message = stuffed_register(local, n, len);
        cut += u32::from(message.len() > HEAD_MAX);
        bytes += message.len();
        failed += u32::from(socket.send_to(&message, (SERVER_V4, 5060)).is_err());
    }
    (failed, cut, bytes, start.elapsed())
}

/// Issue 26: 100 000 REGISTERs of 1000-1400 bytes stuffed with tiny
/// Contacts, over UDP from one client socket to the server's 5060, where
/// nothing answers: each would wait its 32 s transaction lifetime. The agent,
/// with its defaults, stays under [`FLOOD_RSS_BOUND_KB`] (VmRSS sampled every
/// 200 ms from the flood's start until 5 s after its engine has accounted for
/// every REGISTER, and its VmHWM), answers /healthz 200 throughout, and
/// counts each REGISTER as lost, cut, refused for want of room, or kept with
/// too many contacts.
#[test]
fn a_contact_stuffed_register_flood_keeps_the_agent_under_its_memory_bound() {
    sipflow_tests::root_or_skip!();
    const SAMPLE_EVERY: Duration = Duration::from_millis(200);
    const AFTER: Duration = Duration::from_secs(5);
    /// From the flood's start; the REGISTERs kept begin to expire at 32 s.
    const WITHIN: Duration = Duration::from_secs(55);
    let mut lab = Lab::new("stuffed");
    let (client, server) = (lab.client.clone(), lab.server.clone());
    lab.start_agent(SERVER_IF, &[]);
    let agent = lab.spawned()[0].id();
    let comm = std::fs::read_to_string(format!("/proc/{agent}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "sipflow", "pid {agent} is the agent");
    // A bound UDP port that never reads: nothing answers, no ICMP port unreachable either.
    let _sink = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).unwrap());
    let socket = Lab::in_namespace(&client, || UdpSocket::bind((CLIENT_V4, 0)).unwrap());
    let at_rest_kb = status_kb(agent, "VmRSS");

    let running = Running::new();
    let sampler = {
        let stopped = running.stopped();
        thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                samples.push((start.elapsed(), status_kb(agent, "VmRSS")));
                thread::sleep(SAMPLE_EVERY);
            }
            samples
        })
    };
    let start = Instant::now();
    let mut flooding = Some(thread::spawn(move || stuffed_flood(&socket)));

    // Each second: /healthz, and whether the engine has accounted for every
    // REGISTER the kernel saw (its counters move only when it has caught up).
    let accounted = |text: &str| {
        let refused = metric_sum(text, "sipflow_registrations_refused_total", &[]);
        let lost = metric_sum(text, "sipflow_events_lost_total", &[]);
        let seen = metric_sum(text, "sipflow_requests_total", &[("method", "REGISTER")]);
        seen == f64::from(STUFFED_REGISTERS) && refused + lost == seen
    };
    let mut unhealthy = Vec::new();
    let (mut flood, mut caught_up) = (None, None);
    while caught_up.is_none_or(|at: Instant| at.elapsed() < AFTER) {
        if start.elapsed() >= WITHIN {
            break;
        }
        match http_get(&server, "http://127.0.0.1:9560/healthz") {
            Some((200, _)) => {}
            other => unhealthy.push(format!("{:.1} s: {other:?}", start.elapsed().as_secs_f64())),
        }
        if flooding.as_ref().is_some_and(|f| f.is_finished()) {
            flood = Some(flooding.take().expect("running").join().expect("the flood"));
        }
        if flood.is_some() && caught_up.is_none() && accounted(&metrics(&server)) {
            caught_up = Some(Instant::now());
        }
        if let Ok(Some(status)) = lab.spawned()[0].try_wait() {
            panic!("the agent exited with {status} under the flood: {}", output_of(agent));
        }
        thread::sleep(Duration::from_secs(1));
    }
    drop(running);
    let samples = sampler.join().expect("the sampler");
    let (failed_sends, cut_sent, bytes_sent, took) = flood.expect("the flood ends within the test");
    let caught_up_at = caught_up.map(|at| at.duration_since(start));
    let hwm_kb = status_kb(agent, "VmHWM");
    let final_kb = status_kb(agent, "VmRSS");
    let (peak_at, peak_kb) = samples
        .iter()
        .copied()
        // The first sample at the peak: when it was reached.
        .max_by_key(|(at, kb)| (*kb, std::cmp::Reverse(*at)))
        .unwrap_or_default();

    let text = metrics(&server);
    let refused = |reason| metric_sum(&text, "sipflow_registrations_refused_total", &[("reason", reason)]);
    let (too_many, pending_full, cut_head) =
        (refused("too_many_contacts"), refused("pending_full"), refused("cut_head"));
    let lost = metric_sum(&text, "sipflow_events_lost_total", &[]);
    let seen = metric_sum(&text, "sipflow_requests_total", &[("method", "REGISTER")]);
    let report = format!(
        "{STUFFED_REGISTERS} REGISTERs ({cut_sent} past HEAD_MAX, {} MB) in {:.1} s, {failed_sends} sends failed; \
         the engine caught up at {caught_up_at:.1?}; RSS at rest {} MiB, sampled peak {} MiB at {:.1} s \
         ({} samples), VmHWM {} MiB, at the end {} MiB (bound {} MiB); REGISTERs seen by the kernel {seen}, \
         heads lost {lost}; refused too_many_contacts {too_many}, pending_full {pending_full}, cut_head {cut_head}",
        bytes_sent / 1_000_000,
        took.as_secs_f64(),
        at_rest_kb / 1024,
        peak_kb / 1024,
        peak_at.as_secs_f64(),
        samples.len(),
        hwm_kb / 1024,
        final_kb / 1024,
        FLOOD_RSS_BOUND_KB / 1024,
    );
    println!("{report}");
    assert_eq!(failed_sends, 0, "{report}");
    assert!(unhealthy.is_empty(), "/healthz did not answer 200: {unhealthy:?}\n{report}");
    assert!(peak_kb.max(hwm_kb) < FLOOD_RSS_BOUND_KB, "the agent's RSS past its bound: {report}");
    assert!(caught_up.is_some(), "the engine did not account for every REGISTER within {WITHIN:?}: {report}");
    assert!(too_many > 0.0 && pending_full > 0.0, "stuffed REGISTERs kept and refused are counted: {report}");
}
