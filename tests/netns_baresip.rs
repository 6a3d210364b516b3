//! baresip, a real UA nobody here wrote (tests/src/baresip.rs), against
//! Kamailio as RFC 5626 registrar granting `Flow-Timer: 3`, with sipflow on the
//! server's interface (`--flow-timer 3s --grace 1s --sweep-interval 200ms`):
//!
//! - idle but healthy, over TCP and over UDP: never flagged, however it keeps
//!   its flow alive (over TCP it pings every 16-20 s, far slower than the
//!   Flow-Timer; over UDP it sends STUN at the Flow-Timer);
//! - killed with SIGKILL: its kernel closes the connection, flagged at once;
//! - behind an access router whose link goes down: silence proves nothing, so
//!   not flagged until a request from the server goes unacknowledged
//!   (`tcp_unacked`), and then before Kamailio's own 430;
//! - over UDP from port 5060 (its default, and most phones'), to a registrar
//!   on 5060: still the client of its flow, its registration bound.
//!
//! Each test prints what baresip sent to keep its flow alive and how sipflow
//! showed the flow over time.

use std::{
    net::UdpSocket,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sipflow_tests::{
    baresip::{self, Baresip},
    kamailio::Kamailio,
    netns::{CLIENT_V4, Lab, PHONE_V4, SERVER_IF, SERVER_V4, http_get, metric},
    ua::Transport,
};

/// The Flow-Timer Kamailio grants, and sipflow's own `--flow-timer`.
const FLOW_TIMER: u32 = 3;
const GRACE_S: u32 = 1;
const AGENT_ARGS: [&str; 6] = ["--flow-timer", "3s", "--grace", "1s", "--sweep-interval", "200ms"];
/// Kamailio closes a TCP connection only after this long without traffic:
/// longer than any test here, so that an idle flow stays open.
const TCP_LIFETIME_S: u32 = 120;
/// The least an idle flow is watched: past Flow-Timer + grace with room to spare.
const MIN_IDLE: Duration = Duration::from_secs((FLOW_TIMER + GRACE_S + 4) as u64);
/// The most: baresip pings TCP every 16-20 s, so this covers its second ping.
const MAX_IDLE: Duration = Duration::from_secs(45);

/// A lab with sipflow on the server's interface and Kamailio as registrar; a
/// phone namespace behind the client when asked. Drops after the UA (declare the UA later).
fn new_lab(tag: &str, with_phone: bool) -> (Lab, Kamailio, Option<String>) {
    let mut lab = Lab::new(tag);
    let phone = with_phone.then(|| lab.add_phone());
    lab.start_agent(SERVER_IF, &AGENT_ARGS);
    let kamailio = Kamailio::start_with_lifetime(&lab.server, SERVER_V4, FLOW_TIMER, TCP_LIFETIME_S);
    (lab, kamailio, phone)
}

fn flows(server: &str) -> Vec<Value> {
    let Some((200, body)) = http_get(server, "http://127.0.0.1:9560/flows") else {
        return Vec::new();
    };
    serde_json::from_str(&body).unwrap_or_default()
}

/// The flow that carries `user`'s binding.
fn flow_of(server: &str, user: &str) -> Option<Value> {
    let prefix = format!("sip:{user}@");
    flows(server).into_iter().find(|f| f["aor"].as_str().is_some_and(|a| a.starts_with(&prefix)))
}

/// Waits until /flows shows the UA's flow with its binding, and checks what it
/// shows of the registration: an RFC 5626 outbound binding, with baresip's instance.
fn registered_flow(server: &str, ua: &Baresip) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    let flow = loop {
        if let Some(f) = flow_of(server, &ua.user).filter(|f| f["bindings"].as_u64().unwrap_or(0) > 0) {
            break f;
        }
        assert!(Instant::now() < deadline, "/flows never showed {}'s binding: {:#?}", ua.user, flows(server));
        thread::sleep(Duration::from_millis(100));
    };
    println!("/flows: {flow}");
    let transport = ua.transport.name().to_lowercase();
    assert_eq!(flow["transport"], transport.as_str(), "{flow}");
    assert_eq!(flow["reg_id"], 1, "baresip registers with reg-id=1: {flow}");
    let instance = flow["instance"].as_str().unwrap_or("");
    assert!(
        !ua.uuid().is_empty() && instance.contains(&ua.uuid()),
        "+sip.instance is baresip's uuid {}: {flow}",
        ua.uuid()
    );
    assert_eq!(flow["routed_by_flow"], true, "an outbound binding is routed by its flow: {flow}");
    assert_eq!(flow["flow_timer"], FLOW_TIMER, "{flow}");
    assert_eq!(flow["flow_timer_from_registrar"], true, "Kamailio's 2xx carries Flow-Timer: {flow}");
    assert_ne!(flow["state"], "failed", "{flow}");
    flow
}

/// What the interface carried to keep flows alive, from /metrics: in these labs the UA's flow is the only one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Keepalives {
    /// CRLFCRLF from the client.
    pings: u64,
    /// CRLF from the server.
    pongs: u64,
    stun_requests: u64,
    stun_responses: u64,
}

impl Keepalives {
    fn read(server: &str) -> Option<Self> {
        let Some((200, text)) = http_get(server, "http://127.0.0.1:9560/metrics") else {
            return None;
        };
        let count = |direction, class| {
            metric(&text, "sipflow_packets_total", &[("direction", direction), ("class", class)]).unwrap_or(0.0) as u64
        };
        Some(Self {
            pings: count("ingress", "keepalive_ping"),
            pongs: count("egress", "keepalive_pong"),
            stun_requests: count("ingress", "stun_request"),
            stun_responses: count("egress", "stun_response"),
        })
    }

    /// Keepalives the client sent.
    fn sent_by_client(&self) -> u64 {
        self.pings + self.stun_requests
    }

    fn describe(&self) -> String {
        format!(
            "{} CRLF pings and {} STUN Binding requests from baresip; {} pongs and {} STUN responses from Kamailio",
            self.pings, self.stun_requests, self.pongs, self.stun_responses
        )
    }
}

/// How /flows showed one flow over time, and the client's keepalives, both
/// in seconds since `start`.
struct Timeline {
    start: Instant,
    /// Each change of the flow's state: (seconds, "state[ reason would_430=..]").
    states: Vec<(f64, String)>,
    /// The first poll that showed it failed: (seconds, the flow).
    failed: Option<(f64, Value)>,
    /// When each of the client's keepalives was first counted.
    keepalive_at: Vec<f64>,
    keepalives: Keepalives,
}

impl Timeline {
    fn new(start: Instant) -> Self {
        Self { start, states: Vec::new(), failed: None, keepalive_at: Vec::new(), keepalives: Keepalives::default() }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// One poll of /flows and /metrics.
    fn poll(&mut self, server: &str, user: &str) {
        let now = self.elapsed();
        if let Some(counts) = Keepalives::read(server) {
            for _ in self.keepalives.sent_by_client()..counts.sent_by_client() {
                self.keepalive_at.push(now);
            }
            self.keepalives = counts;
        }
        let Some(flow) = flow_of(server, user) else { return };
        let state = flow["state"].as_str().unwrap_or("?").to_string();
        let shown = match flow["reason"].as_str() {
            Some(reason) => format!("{state} {reason} would_430={}", flow["would_430"]),
            None => state.clone(),
        };
        if self.states.last().is_none_or(|(_, s)| *s != shown) {
            self.states.push((now, shown));
        }
        if state == "failed" && self.failed.is_none() {
            self.failed = Some((now, flow));
        }
    }

    fn describe(&self) -> String {
        let states: Vec<String> = self.states.iter().map(|(t, s)| format!("{t:.1} s {s}")).collect();
        let at: Vec<String> = self.keepalive_at.iter().map(|t| format!("{t:.1}")).collect();
        format!(
            "  flow states: {}\n  keepalives from baresip at (s): [{}]\n  over all: {}",
            states.join("; "),
            at.join(", "),
            self.keepalives.describe()
        )
    }
}

/// Registers baresip over `transport` from `local_port`, leaves it idle, and checks sipflow never flags its flow.
fn idle_baresip_is_never_flagged(tag: &str, user: &str, transport: Transport, local_port: u16) {
    let (lab, _kamailio, _) = new_lab(tag, false);
    let server = lab.server.clone();
    let mut ua = Baresip::start(&lab.client, (CLIENT_V4, local_port), SERVER_V4, user, transport);
    let registered = ua.await_registered(Duration::from_secs(10));
    let start = Instant::now();
    println!(
        "{} over {}, listening on {}; in {}:",
        baresip::version(),
        transport.name(),
        ua.local,
        ua.config_dir().display()
    );
    let indent = |text: String| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
    println!(
        "  config\n{}  accounts\n{}",
        indent(baresip::config(CLIENT_V4, local_port)),
        indent(baresip::account(user, SERVER_V4, transport))
    );
    println!("  {registered}");
    registered_flow(&server, &ua);

    // Idle: past Flow-Timer + grace, and on until the client's second
    // keepalive is Flow-Timer + grace + 1 s old (a sipflow that expected the
    // next keepalive within the Flow-Timer would have flagged it by then).
    let mut timeline = Timeline::new(start);
    let window = FLOW_TIMER as f64 + GRACE_S as f64 + 1.0;
    loop {
        timeline.poll(&server, user);
        let t = timeline.elapsed();
        let seen_two = timeline.keepalive_at.get(1).is_some_and(|second| t >= second + window);
        if (start.elapsed() >= MIN_IDLE && seen_two) || start.elapsed() >= MAX_IDLE {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let idle = timeline.elapsed();
    println!("baresip over {} idle for {idle:.1} s:\n{}", transport.name(), timeline.describe());
    let last = flow_of(&server, user);
    println!("  last /flows: {}", last.as_ref().map(Value::to_string).unwrap_or_default());

    assert!(
        timeline.failed.is_none(),
        "baresip over {}, idle and healthy, was flagged: at {:.1} s after registering: {}\n{}",
        transport.name(),
        timeline.failed.as_ref().map(|(t, _)| *t).unwrap_or(0.0),
        timeline.failed.as_ref().map(|(_, f)| f.to_string()).unwrap_or_default(),
        timeline.describe(),
    );
    let state = last.as_ref().and_then(|f| f["state"].as_str().map(str::to_string)).unwrap_or_default();
    assert!(state == "alive" || state == "no_keepalive", "an unflagged flow is alive or no_keepalive: {last:?}");
}

#[test]
fn an_idle_baresip_over_tcp_is_never_flagged() {
    sipflow_tests::root_or_skip!();
    idle_baresip_is_never_flagged("bsT", "alice", Transport::Tcp, 5060);
}

#[test]
fn an_idle_baresip_over_udp_is_never_flagged() {
    sipflow_tests::root_or_skip!();
    // Off port 5060: see the next test for a UA on 5060 over UDP.
    idle_baresip_is_never_flagged("bsUd", "bob", Transport::Udp, 5062);
}

/// baresip's own default, and most phones': UDP from port 5060 to a registrar
/// on 5060. Both ends are on a SIP port, and the client's address sorts lower
/// than the server's: the registrar's host must still be the server side, or
/// the REGISTER and its 200 bind nothing and the flow can never warrant 430.
#[test]
fn a_baresip_on_udp_port_5060_is_the_client_of_its_flow() {
    sipflow_tests::root_or_skip!();
    let (lab, _kamailio, _) = new_lab("bsU5060", false);
    let server = lab.server.clone();
    let mut ua = Baresip::start(&lab.client, (CLIENT_V4, 5060), SERVER_V4, "frank", Transport::Udp);
    println!("{}", ua.await_registered(Duration::from_secs(10)));
    thread::sleep(Duration::from_secs(1));
    let all = flows(&server);
    println!("/flows: {}", Value::Array(all.clone()));
    let flow = all.iter().find(|f| f["transport"] == "udp").unwrap_or_else(|| panic!("no UDP flow: {all:#?}"));
    assert_eq!(
        (flow["local"].as_str().unwrap_or(""), flow["remote"].as_str().unwrap_or("")),
        (format!("{SERVER_V4}:5060").as_str(), ua.local.as_str()),
        "the registrar's side is the server's, baresip's the client's: {flow}"
    );
    registered_flow(&server, &ua);
}

#[test]
fn a_killed_baresip_is_flagged_at_once() {
    sipflow_tests::root_or_skip!();
    let (lab, _kamailio, _) = new_lab("bsKil", false);
    let server = lab.server.clone();
    let mut ua = Baresip::start(&lab.client, (CLIENT_V4, 5060), SERVER_V4, "carol", Transport::Tcp);
    println!("{}", ua.await_registered(Duration::from_secs(10)));
    registered_flow(&server, &ua);
    thread::sleep(Duration::from_secs(1));

    let killed_at = Instant::now();
    ua.kill();
    println!("baresip (pid {}) killed with SIGKILL", ua.pid());
    let mut timeline = Timeline::new(killed_at);
    while timeline.failed.is_none() && killed_at.elapsed() < Duration::from_secs(5) {
        timeline.poll(&server, "carol");
        thread::sleep(Duration::from_millis(100));
    }
    println!("after the kill:\n{}", timeline.describe());
    let (after, flow) = timeline.failed.clone().unwrap_or_else(|| {
        panic!("a killed baresip's flow was never flagged within 5 s:\n{}\n{:#?}", timeline.describe(), flows(&server))
    });
    let reason = flow["reason"].as_str().unwrap_or("");
    println!("flagged {after:.2} s after the kill: {reason} would_430={}", flow["would_430"]);
    assert!(reason == "tcp_fin" || reason == "tcp_reset", "the kernel closed the connection with a FIN or RST: {flow}");
    assert_eq!(flow["would_430"], true, "its outbound binding would warrant 430: {flow}");
    assert!(after <= 2.0, "flagged {after:.2} s after the kill, not within 2 s: {flow}");
}

#[test]
fn a_baresip_whose_link_went_down_is_flagged_when_a_request_goes_unanswered() {
    sipflow_tests::root_or_skip!();
    let (lab, kamailio, phone) = new_lab("bsDown", true);
    let (client, server) = (lab.client.clone(), lab.server.clone());
    let phone = phone.expect("a phone namespace");
    let mut ua = Baresip::start(&phone, (PHONE_V4, 5060), SERVER_V4, "erin", Transport::Tcp);
    println!("{}", ua.await_registered(Duration::from_secs(10)));
    let flow = registered_flow(&server, &ua);
    assert!(flow["remote"].as_str().unwrap_or("").starts_with(PHONE_V4), "from the phone network: {flow}");
    thread::sleep(Duration::from_secs(1));

    // The phone's link goes down: no FIN, no RST. baresip has not pinged (it
    // would only after 16 s), so its silence proves nothing.
    let down_at = Instant::now();
    lab.phone_link_down(&phone);
    let mut timeline = Timeline::new(down_at);
    let quiet = Duration::from_secs((FLOW_TIMER + GRACE_S + 2) as u64);
    while down_at.elapsed() < quiet {
        timeline.poll(&server, "erin");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        timeline.failed.is_none(),
        "flagged before any request was sent to it, from silence alone:\n{}",
        timeline.describe()
    );

    // A MESSAGE to erin through Kamailio, which forwards it over her flow.
    let caller = Lab::in_namespace(&client, || UdpSocket::bind((CLIENT_V4, 0)).expect("caller socket"));
    let message = message_to("erin", &caller.local_addr().expect("caller address").to_string());
    caller.send_to(&message, (SERVER_V4, 5060)).expect("send MESSAGE");
    let sent = timeline.elapsed();
    let answers = thread::spawn(move || answers(caller, Duration::from_secs(8)));
    let sent_at = Instant::now();
    while timeline.failed.is_none() && sent_at.elapsed() < Duration::from_secs(6) {
        timeline.poll(&server, "erin");
        thread::sleep(Duration::from_millis(100));
    }
    let answers: Vec<(f64, String)> = answers
        .join()
        .expect("caller thread")
        .into_iter()
        .map(|(at, line)| (at.duration_since(down_at).as_secs_f64(), line))
        .collect();
    println!("link down at 0.0 s; MESSAGE to erin sent through Kamailio at {sent:.1} s");
    println!("{}", timeline.describe());
    println!("  answers to the caller (s since link down): {answers:?}");
    let context = || {
        format!(
            "{}\nanswers {answers:?}\nkamailio log (tail):\n{}",
            timeline.describe(),
            tail(&kamailio.log_text(), 20)
        )
    };

    let (at, flow) = timeline
        .failed
        .clone()
        .unwrap_or_else(|| panic!("not flagged within 6 s of a request over the dead flow\n{}", context()));
    let after = at - sent;
    println!("flagged {after:.2} s after the request: {flow}");
    assert!(at >= sent, "flagged at {at:.1} s, before the request at {sent:.1} s: {flow}\n{}", context());
    assert_eq!(flow["reason"], "tcp_unacked", "the server's request went unacknowledged: {flow}\n{}", context());
    assert_eq!(flow["would_430"], true, "{flow}");
    // --ack-timeout's 3 s (a phone's radio waking on paging), and the lab's polling.
    assert!(after <= 3.5, "flagged {after:.2} s after the request, not within 3.5 s\n{}", context());
    if let Some((at_430, _)) = answers.iter().find(|(_, line)| line.starts_with("SIP/2.0 430")) {
        assert!(at < *at_430, "flagged at {at:.2} s, after Kamailio's 430 at {at_430:.2} s\n{}", context());
        println!("flagged {:.2} s before Kamailio's 430", at_430 - at);
    }
}

/// A MESSAGE to `user`'s AOR from a caller at `from` (address:port), over UDP.
fn message_to(user: &str, from: &str) -> Vec<u8> {
    let body = "are you there?";
    format!(
        "MESSAGE sip:{user}@{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-bs-{user}-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{CLIENT_V4}>;tag=bs-caller\r\n\
         To: <sip:{user}@{SERVER_V4}>\r\n\
         Call-ID: bs-{user}-1@{CLIENT_V4}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The first lines of what comes back to `socket` for `within`, each with when it came.
fn answers(socket: UdpSocket, within: Duration) -> Vec<(Instant, String)> {
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            got.push((Instant::now(), text.lines().next().unwrap_or("").to_string()));
        }
    }
    got
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
