//! The real-peer lab: Kamailio as an RFC 5626 edge proxy and registrar in the
//! server namespace, sipflow on its interface (XDP + TC egress), tshark
//! capturing the same interface, and UAs that register with outbound:
//!
//! | AOR   | how it registers           | what happens to its flow          |
//! | ---   | ---                        | ---                               |
//! | alice | TCP, CRLF pings            | stays alive                       |
//! | bob   | UDP, STUN keepalives       | stays alive                       |
//! | carol | TCP, a sipp process        | the process is killed (FIN)       |
//! | dave  | TCP, CRLF pings            | the connection is reset (RST)     |
//! | erin  | TCP from the phone network | the phone's link goes down        |
//! | frank | UDP from the phone network | the phone's link goes down        |
//! | gina  | TCP from the phone network | the link goes down and a request for her comes at once: a zombie flow |
//! | gus   | TCP, CRLF pings            | killed (FIN), a request for him in the next 0.1 s, then he registers again over a new connection |
//! | heidi | TCP, a real baresip 1.0    | idle and open: it pings every 16-20 s whatever the Flow-Timer |
//! | tina  | TLS, CRLF pings            | stays alive                       |
//! | tom   | TLS, CRLF pings            | killed (FIN, no close_notify)     |
//! | tara  | TLS, CRLF pings            | the connection is reset (RST)     |
//! | toni  | TLS from the phone network | the phone's link goes down        |
//! | tess  | TLS from the phone network | the link goes down and a request for her comes at once: a zombie flow |
//! | walt  | WebSocket, ping frames     | stays alive                       |
//! | wendy | WebSocket, ping frames     | killed (FIN)                      |
//! | wes   | WebSocket, ping frames     | the connection is reset (RST)     |
//! | wilma | WebSocket from the phone network | the link goes down and a request for her comes at once: a zombie flow |
//! | wade  | secure WebSocket (wss)     | stays alive                       |
//! | wynn  | wss from the phone network | the phone's link goes down        |
//!
//! Kamailio's TLS is OpenSSL's: sipflow reads the REGISTERs, 2xx, pings and
//! pongs inside it from libssl (uprobes), and tshark decrypts the capture
//! with the UAs' key log to referee the counts. Over WebSocket (RFC 7118) the
//! kernel reads the frames (ws: `--ws-port`; wss: from libssl too).
//!
//! Kamailio answers gina's request 430 when its transaction timer (4 s) fires,
//! gus's at once (his connection is gone). Then a caller (sipp) sends an INVITE
//! over UDP and a MESSAGE over TCP to every AOR and to the redirect service,
//! which answers 300 with several Contacts. Kamailio reaches alice, bob and the
//! restarted gus and answers 430 Flow Failed for the others.
//! [`run`] returns what each side saw; the test judges it, the demo tells it.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Child,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    baresip::{self, Baresip},
    kamailio::{Kamailio, TRANSACTION_TIMER_MS, WS_PORT, WSS_PORT},
    netns::{CLIENT_V4, Lab, PHONE_V4, SERVER_IF, SERVER_V4, await_tls_processes, http_get},
    process::signal_group,
    scratch_dir::ScratchDir,
    sipp::{self, Mode},
    tshark::{self, Capture, SipCounts},
    ua::{OutboundUa, Transport},
};

/// The Flow-Timer Kamailio gives in its 2xx to REGISTER (RFC 5626 §4.4).
pub const FLOW_TIMER: u32 = 5;
/// sipflow's grace on top of the Flow-Timer.
pub const GRACE_S: u32 = 1;
/// How often the UAs ping: well within the Flow-Timer, as §4.4.1 asks.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Alive to the end (gus: once registered again).
pub const LIVE: [&str; 6] = ["alice", "bob", RESTARTED, TLS_LIVE, "walt", "wade"];
pub const BROKEN: [&str; 13] =
    ["carol", "dave", "erin", "frank", ZOMBIE, "tom", "tara", "toni", TLS_ZOMBIE, "wendy", "wes", WS_ZOMBIE, "wynn"];
/// The UA over TLS that stays alive.
pub const TLS_LIVE: &str = "tina";
/// The zombie over TLS.
pub const TLS_ZOMBIE: &str = "tess";
/// The zombie over WebSocket.
pub const WS_ZOMBIE: &str = "wilma";
/// Killed and registered again over a new connection at once.
pub const RESTARTED: &str = "gus";
/// The link goes down and a request follows at once: the server's data goes unacknowledged.
pub const ZOMBIE: &str = "gina";
/// A real UA (baresip), idle: never flagged, whatever its keepalives.
pub const REAL_UA: &str = "heidi";
/// Kamailio closes a TCP connection idle this long: longer than baresip's
/// quiet between pings (up to 20 s), so that its connection stays open.
const TCP_LIFETIME_S: u32 = 60;
pub const REDIRECT: &str = "redirect";
const PROXY: &str = "192.0.2.2:5060";
const TLS_PROXY: &str = "192.0.2.2:5061";

/// A verdict as the agent reached it (/flows keeps it: `verdict`).
#[derive(Clone, Debug)]
pub struct Flagged {
    pub reason: String,
    /// As judged then, against the bindings of that moment.
    pub would_430: bool,
    pub transport: String,
    /// The client's side of the flow, and its peer (`--peer`).
    pub remote: String,
    pub peer: String,
    /// Unix time of the verdict.
    pub at: f64,
    /// Seconds from the break to the verdict.
    pub after_break_s: f64,
}

#[derive(Debug)]
pub struct Outcome {
    /// How each broken flow was broken, in order.
    pub breaks: Vec<(&'static str, &'static str)>,
    /// AOR -> sipflow's first verdict on a flow of it.
    pub flagged: BTreeMap<String, Flagged>,
    /// The client side of every flow flagged.
    pub flagged_flows: BTreeSet<String>,
    /// gus's flow before and after he was restarted.
    pub restarted_flows: (String, String),
    /// When gus registered again, in seconds after the break.
    pub restarted_after_s: f64,
    /// Every 430 on the wire: (Unix time, the AOR it was for).
    pub answers_430: Vec<(f64, String)>,
    /// What tshark counted on the server's interface.
    pub tshark: SipCounts,
    /// What sipflow counted there, from /metrics, after the capture stopped
    /// and just before it did.
    pub sipflow: SipCounts,
    pub sipflow_before_stop: SipCounts,
    /// First lines of the requests Kamailio delivered to the live UAs.
    pub delivered: BTreeMap<String, Vec<String>>,
    /// sipp's report on the two rounds of calls.
    pub caller_ok: [bool; 2],
    pub metrics: String,
    pub flows: String,
    pub kamailio_log: String,
    pub real_ua_log: String,
}

impl Outcome {
    /// The flow /flows showed at the end carrying `user`'s binding.
    pub fn flow_of(&self, user: &str) -> Option<serde_json::Value> {
        let flows: Vec<serde_json::Value> = serde_json::from_str(&self.flows).unwrap_or_default();
        let prefix = format!("sip:{user}@");
        flows.into_iter().find(|f| f["aor"].as_str().is_some_and(|a| a.starts_with(&prefix)))
    }
}

/// The proxy's address on another of its ports.
fn proxy_on(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(SERVER_V4.parse().expect("server address"), port)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

/// Builds the lab, runs the story, tears everything down; `say` narrates.
pub fn run(tag: &str, say: &mut dyn FnMut(String)) -> Outcome {
    let work_dir = ScratchDir::new(&format!("sipflow-{tag}-{}", std::process::id()));
    let outcome = run_in(tag, work_dir.path(), say);
    crate::ua::clear_tls_key_log();
    // For a closer look: SIPFLOW_LAB_PCAP=/path keeps the capture.
    if let Some(keep) = std::env::var_os("SIPFLOW_LAB_PCAP") {
        let keep = std::path::PathBuf::from(keep);
        let _ = std::fs::copy(work_dir.path().join("edge.pcap"), &keep);
        let _ = std::fs::copy(work_dir.path().join("edge.keys"), keep.with_extension("keys"));
    }
    outcome
}

fn run_in(tag: &str, work_dir: &std::path::Path, say: &mut dyn FnMut(String)) -> Outcome {
    let mut lab = Lab::new(tag);
    let phone = lab.add_phone();
    let (client, server) = (lab.client.clone(), lab.server.clone());
    say(format!("lab: {client} ({CLIENT_V4}) and {phone} ({PHONE_V4}, behind it) <-> {server} ({SERVER_V4})"));

    let mut capture = Capture::start(&server, SERVER_IF, &work_dir.join("edge.pcap"));
    // Beside the capture, where tshark looks for it (see `tshark::count_sip`).
    crate::ua::set_tls_key_log(&work_dir.join("edge.keys"));
    let grace = format!("{GRACE_S}s");
    // The default walk (30 s): verdicts come from the kernel's events and the
    // agent's deadlines, not from walking the map.
    let (ws, wss) = (WS_PORT.to_string(), WSS_PORT.to_string());
    // The client's network and the phone network behind it, named as an
    // operator names an office LAN and an access network.
    let peers = ["--peer", "office=192.0.2.0/24", "--peer", "phones=198.51.100.0/24"];
    let ports = ["--grace", &grace, "--ws-port", &ws, "--sips-port", "5061", "--sips-port", &wss];
    lab.start_agent(SERVER_IF, &[&ports[..], &peers[..]].concat());
    say(format!("sipflow: XDP + TC egress on {server}/{SERVER_IF}; tshark captures the same interface"));
    let kamailio = Kamailio::start_with_lifetime(&server, SERVER_V4, FLOW_TIMER, TCP_LIFETIME_S);
    // Kamailio holds the SIPS sockets: its TLS is read from the agent's next scan.
    await_tls_processes(&server, 1);
    say(format!(
        "kamailio: edge proxy + registrar on {PROXY} udp/tcp, :5061 tls, :{WS_PORT} ws, :{WSS_PORT} wss; \
         outbound, Flow-Timer {FLOW_TIMER}, transaction timer {} s",
        TRANSACTION_TIMER_MS / 1000
    ));

    let proxy = PROXY.parse().expect("proxy address");
    let sipp_client =
        |port| sipp::Peer { namespace: &client, local_ip: CLIENT_V4, local_port: port, proxy: PROXY, work_dir };
    let mut heidi = Baresip::start(&client, (CLIENT_V4, 5090), SERVER_V4, REAL_UA, Transport::Tcp);
    heidi.await_registered(Duration::from_secs(10));
    say(format!("heidi registers over TCP from a real {} (outbound) -> SIP/2.0 200 OK", baresip::version()));
    let alice = OutboundUa::register(&client, proxy, "alice", Transport::Tcp, KEEPALIVE);
    let bob = OutboundUa::register(&client, proxy, "bob", Transport::Udp, KEEPALIVE);
    let mut carol: Child = sipp_client(5071).registered("carol");
    let dave = OutboundUa::register(&client, proxy, "dave", Transport::Tcp, KEEPALIVE);
    let erin = OutboundUa::register(&phone, proxy, "erin", Transport::Tcp, KEEPALIVE);
    let frank = OutboundUa::register(&phone, proxy, "frank", Transport::Udp, KEEPALIVE);
    let gina = OutboundUa::register(&phone, proxy, ZOMBIE, Transport::Tcp, KEEPALIVE);
    let gus = OutboundUa::register(&client, proxy, RESTARTED, Transport::Tcp, KEEPALIVE);
    let tls_proxy = TLS_PROXY.parse().expect("TLS proxy address");
    let tina = OutboundUa::register(&client, tls_proxy, TLS_LIVE, Transport::Tls, KEEPALIVE);
    let tom = OutboundUa::register(&client, tls_proxy, "tom", Transport::Tls, KEEPALIVE);
    let tara = OutboundUa::register(&client, tls_proxy, "tara", Transport::Tls, KEEPALIVE);
    let toni = OutboundUa::register(&phone, tls_proxy, "toni", Transport::Tls, KEEPALIVE);
    let tess = OutboundUa::register(&phone, tls_proxy, TLS_ZOMBIE, Transport::Tls, KEEPALIVE);
    let (ws_proxy, wss_proxy) = (proxy_on(WS_PORT), proxy_on(WSS_PORT));
    let walt = OutboundUa::register(&client, ws_proxy, "walt", Transport::Ws, KEEPALIVE);
    let wendy = OutboundUa::register(&client, ws_proxy, "wendy", Transport::Ws, KEEPALIVE);
    let wes = OutboundUa::register(&client, ws_proxy, "wes", Transport::Ws, KEEPALIVE);
    let wilma = OutboundUa::register(&phone, ws_proxy, WS_ZOMBIE, Transport::Ws, KEEPALIVE);
    let wade = OutboundUa::register(&client, wss_proxy, "wade", Transport::Wss, KEEPALIVE);
    let wynn = OutboundUa::register(&phone, wss_proxy, "wynn", Transport::Wss, KEEPALIVE);
    for ua in [
        &alice, &bob, &dave, &erin, &frank, &gina, &gus, &tina, &tom, &tara, &toni, &tess, &walt, &wendy, &wes, &wilma,
        &wade, &wynn,
    ] {
        let first = ua.registered.lines().next().unwrap_or("");
        say(format!("{:<5} registers over {} from {} -> {first}", ua.user, ua.transport.name(), ua.local));
    }
    say("carol registers over TCP from a sipp process -> SIP/2.0 200 OK".into());
    // Two rounds of keepalives on every flow: the gap between them is each
    // UA's own pace, which its silence is judged by (a real phone has pinged
    // for hours before its link goes down).
    thread::sleep(2 * KEEPALIVE + Duration::from_millis(500));

    let broken_at = Instant::now();
    signal_group(&carol, libc::SIGKILL);
    let _ = carol.wait();
    crate::interrupt::process_ended(carol.id());
    dave.reset();
    tom.close();
    tara.reset();
    wendy.close();
    wes.reset();
    let gus_before = gus.local.to_string();
    gus.close();
    lab.phone_link_down(&phone);
    let breaks = vec![
        ("carol", "her sipp process is killed (the kernel closes the connection: FIN)"),
        ("dave", "his connection is reset (RST)"),
        ("erin", "the phone's link goes down (TCP: silence)"),
        ("frank", "the phone's link goes down (UDP: silence)"),
        (ZOMBIE, "the phone's link goes down and a MESSAGE for her follows (a zombie flow)"),
        (RESTARTED, "killed (FIN); a MESSAGE for him follows, then he registers again"),
        ("tom", "killed (TLS: FIN, no close_notify)"),
        ("tara", "her TLS connection is reset (RST)"),
        ("toni", "the phone's link goes down (TLS: silence)"),
        (TLS_ZOMBIE, "the phone's link goes down and a MESSAGE for her follows (a zombie TLS flow)"),
        ("wendy", "killed (WebSocket: FIN)"),
        ("wes", "his WebSocket connection is reset (RST)"),
        (WS_ZOMBIE, "the phone's link goes down and a MESSAGE for her follows (a zombie WebSocket flow)"),
        ("wynn", "the phone's link goes down (wss: silence)"),
    ];
    for (aor, how) in &breaks {
        say(format!("{aor:<5} {how}"));
    }

    // sipflow decides: a close at once, a zombie when the server's data goes
    // unacknowledged, a silent flow Flow-Timer + grace after its last keepalive.
    let mut flagged = BTreeMap::new();
    let mut flagged_flows = BTreeSet::new();
    let decide = Duration::from_secs((FLOW_TIMER + GRACE_S + 3) as u64);
    let (gus, restarted_after_s) = thread::scope(|scope| {
        // A request for gina at once: Kamailio writes it into a connection
        // whose other end is gone, and answers 430 when its timer fires.
        scope.spawn(|| {
            thread::sleep(Duration::from_millis(300));
            sipp_client(5073).call_each("message_every_aor.xml", Mode::Tcp, &[ZOMBIE, TLS_ZOMBIE, WS_ZOMBIE])
        });
        // A request for gus before he is back (430 at once), then gus again.
        let restart = scope.spawn(|| {
            thread::sleep(Duration::from_millis(100));
            sipp_client(5074).call_each("message_every_aor.xml", Mode::Tcp, &[RESTARTED]);
            let gus = OutboundUa::restart(&client, proxy, RESTARTED, Transport::Tcp, KEEPALIVE);
            (gus, broken_at.elapsed().as_secs_f64())
        });
        while broken_at.elapsed() < decide {
            poll_failed(&server, broken_at, &mut flagged, &mut flagged_flows);
            thread::sleep(Duration::from_millis(100));
        }
        restart.join().expect("gus restarted")
    });
    say(format!(
        "gus   registers again over TCP from {} {restarted_after_s:.2} s after the kill -> {}",
        gus.local,
        gus.registered.lines().next().unwrap_or("")
    ));
    let restarted_flows = (gus_before, gus.local.to_string());

    // The caller: an INVITE over UDP and a MESSAGE over TCP to every AOR.
    // Not the TLS zombie: what Kamailio writes into a flow whose earlier data
    // waits in TCP's retransmission backoff stays in the socket, never on the
    // wire. sipflow reads TLS where the server writes it and would count those
    // messages; tshark, from the wire, would not (docs/tls-and-websocket.md, "SIP inside TLS").
    let mut aors: Vec<&str> = LIVE.iter().chain(BROKEN.iter()).copied().filter(|a| *a != TLS_ZOMBIE).collect();
    aors.push(REDIRECT);
    say(format!("caller (sipp) sends INVITE over UDP and MESSAGE over TCP to {}", aors.join(", ")));
    let (invites, messages) = thread::scope(|scope| {
        let invites = scope.spawn(|| sipp_client(5070).call_each("invite_every_aor.xml", Mode::Udp, &aors));
        let messages = scope.spawn(|| sipp_client(5072).call_each("message_every_aor.xml", Mode::Tcp, &aors));
        (invites.join().expect("INVITE round"), messages.join().expect("MESSAGE round"))
    });
    // Late verdicts are recorded too: the test checks they came before the 430s.
    poll_failed(&server, broken_at, &mut flagged, &mut flagged_flows);
    thread::sleep(Duration::from_millis(500));
    // sipflow's counts just before the capture stops, and (below) just after:
    // a retransmission can cross the wire while tshark stops, so tshark's
    // counts lie between the two, and equal both when nothing moved.
    let (_, before_stop) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape /metrics");
    capture.stop();

    let (_, metrics) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape /metrics");
    let (_, flows) = http_get(&server, "http://127.0.0.1:9560/flows").expect("GET /flows");
    let delivered = [&alice, &bob, &gus, &tina, &walt, &wade]
        .iter()
        .map(|ua| (ua.user.clone(), ua.delivered.lock().unwrap().clone()))
        .collect();
    drop((toni, tess, wilma, wynn));
    let caller_ok = [invites.status.success(), messages.status.success()];
    for (round, output) in [("INVITE", &invites), ("MESSAGE", &messages)] {
        if !output.status.success() {
            say(format!("sipp's {round} round failed:\n{}", String::from_utf8_lossy(&output.stdout)));
        }
    }
    Outcome {
        breaks,
        flagged,
        flagged_flows,
        restarted_flows,
        restarted_after_s,
        answers_430: tshark::responses(&capture.path, 430),
        tshark: tshark::count_sip(&capture.path),
        sipflow: sipflow_counts(&metrics),
        sipflow_before_stop: sipflow_counts(&before_stop),
        delivered,
        caller_ok,
        metrics,
        flows,
        kamailio_log: kamailio.log_text(),
        real_ua_log: heidi.log_text(),
    }
}

/// Records each flow's verdict as the agent reached it, and each AOR's first.
fn poll_failed(
    server: &str,
    broken_at: Instant,
    flagged: &mut BTreeMap<String, Flagged>,
    flagged_flows: &mut BTreeSet<String>,
) {
    let Some((200, body)) = http_get(server, "http://127.0.0.1:9560/flows?state=failed") else {
        return;
    };
    let (polled_at, since_break) = (now(), broken_at.elapsed().as_secs_f64());
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    for flow in flows {
        let remote = flow["remote"].as_str().unwrap_or("?").to_string();
        flagged_flows.insert(remote.clone());
        let verdict = &flow["verdict"];
        let Some(aor) = verdict["aor"].as_str() else { continue };
        let user = aor.trim_start_matches("sip:").split('@').next().unwrap_or(aor).to_string();
        let ago = verdict["seconds_ago"].as_f64().unwrap_or(0.0);
        flagged.entry(user).or_insert_with(|| Flagged {
            reason: flow["reason"].as_str().unwrap_or("?").to_string(),
            would_430: verdict["would_430"].as_bool().unwrap_or(false),
            transport: flow["transport"].as_str().unwrap_or("?").to_string(),
            peer: flow["peer"].as_str().unwrap_or("?").to_string(),
            remote,
            at: polled_at - ago,
            after_break_s: since_break - ago,
        });
    }
}

/// sipflow's requests by method and responses by code, summed over interfaces.
pub fn sipflow_counts(metrics: &str) -> SipCounts {
    let mut counts = SipCounts::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        if value == 0.0 {
            continue;
        }
        let label = |name: &str| {
            let start = series.find(&format!("{name}=\""))? + name.len() + 2;
            Some(series[start..].split('"').next()?.to_string())
        };
        if series.starts_with("sipflow_requests_total{") {
            *counts.requests.entry(label("method").unwrap_or_default()).or_default() += value as u64;
        } else if series.starts_with("sipflow_responses_total{") {
            let code = label("code").and_then(|c| c.parse().ok()).unwrap_or(0);
            *counts.responses.entry(code).or_default() += value as u64;
        }
    }
    counts
}

/// The 430s whose AOR sipflow had not flagged (as would_430) before the 430 went out.
pub fn unpredicted_430s(outcome: &Outcome) -> Vec<String> {
    outcome
        .answers_430
        .iter()
        .filter(|(at, aor)| !outcome.flagged.get(aor).is_some_and(|f| f.would_430 && f.at < *at))
        .map(|(at, aor)| format!("{aor} at {at:.3}: flagged {:?}", outcome.flagged.get(aor)))
        .collect()
}

/// Each 430 sipflow predicted: (AOR, seconds between the verdict and the 430).
pub fn leads_over_430(outcome: &Outcome) -> Vec<(String, f64)> {
    outcome
        .answers_430
        .iter()
        .filter_map(|(at, aor)| {
            let flagged = outcome.flagged.get(aor).filter(|f| f.would_430 && f.at < *at)?;
            Some((aor.clone(), at - flagged.at))
        })
        .collect()
}

/// Where sipflow's count of a method or code leaves the bounds tshark's sets:
/// at least what it had counted before the capture stopped, at most what it
/// counted after. Empty when every count is within them.
pub fn counts_outside_capture(outcome: &Outcome) -> Vec<String> {
    fn check<K: Ord + Clone + std::fmt::Debug>(
        what: &str,
        before: &BTreeMap<K, u64>,
        tshark: &BTreeMap<K, u64>,
        after: &BTreeMap<K, u64>,
        out: &mut Vec<String>,
    ) {
        let keys: BTreeSet<&K> = before.keys().chain(tshark.keys()).chain(after.keys()).collect();
        for key in keys {
            let get = |m: &BTreeMap<K, u64>| m.get(key).copied().unwrap_or(0);
            let (b, t, a) = (get(before), get(tshark), get(after));
            if !(b <= t && t <= a) {
                out.push(format!("{what} {key:?}: sipflow {b} before the capture stopped, {a} after; tshark {t}"));
            }
        }
    }
    let (before, after) = (&outcome.sipflow_before_stop, &outcome.sipflow);
    let mut out = Vec::new();
    check("requests", &before.requests, &outcome.tshark.requests, &after.requests, &mut out);
    check("responses", &before.responses, &outcome.tshark.responses, &after.responses, &mut out);
    out
}
