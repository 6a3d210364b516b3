//! SIP inside TLS from a server whose OpenSSL reads its own socket (SSL_read_ex
//! and SSL_write_ex, the socket calls inside them; Kamailio's memory BIO is the
//! Kamailio lab's case): the binding, the Flow-Timer and the pings come from
//! the plaintext, and a UA that falls silent fails keepalive_timeout. The UA's
//! own OpenSSL, a TLS client in the same process, is probed too and must not
//! be counted; with --no-tls-plaintext nothing inside TLS is read.

use std::{net::TcpListener, thread, time::Duration, time::Instant};

use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get, metric, sipflow_bin},
    peers::TcpServer,
    scratch_dir::ScratchDir,
    tls::self_signed,
    ua::{OutboundUa, Transport},
};

const FLOW_TIMER: u32 = 3;

fn tls_registrar(lab: &Lab, dir: &ScratchDir) -> TcpServer {
    let (cert, key) = self_signed(dir.path());
    let listener = Lab::in_namespace(&lab.server, || TcpListener::bind((SERVER_V4, 5061)).expect("bind 5061"));
    TcpServer::start_tls(listener, FLOW_TIMER, &cert, &key)
}

fn tls_flow(server: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(server, "http://127.0.0.1:9560/flows")?;
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
    flows.into_iter().find(|f| f["transport"] == "tls")
}

#[test]
fn a_silent_ua_over_tls_fails_by_its_flow_timer() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsS");
    let dir = ScratchDir::new("sipflow-netns-tls");
    lab.start_agent(SERVER_IF, &["--grace", "1s"]);
    let registrar = tls_registrar(&lab, &dir);
    let ua = OutboundUa::register(&lab.client, registrar.addr, "alice", Transport::Tls, Duration::from_secs(1));
    thread::sleep(Duration::from_millis(2500));

    let flow = tls_flow(&lab.server).expect("the TLS flow in /flows");
    assert_eq!(flow["aor"], "sip:alice@example.com", "{flow}");
    assert_eq!(flow["flow_timer"], FLOW_TIMER, "{flow}");
    assert_eq!(flow["flow_timer_from_registrar"], true, "{flow}");
    assert_eq!(flow["kept_alive"], true, "pings read inside TLS: {flow}");
    assert_eq!(flow["state"], "alive", "{flow}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    // Once each: the server's SSL_read_ex and SSL_write_ex, not the UA's own calls.
    assert_eq!(metric(&metrics, "sipflow_requests_total", &[("method", "REGISTER")]), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "sipflow_responses_total", &[("code", "200")]), Some(1.0), "{metrics}");
    let read = metric(&metrics, "sipflow_tls_calls_total", &[("result", "read")]).unwrap_or(0.0);
    assert!(read >= 4.0, "REGISTER, 200, pings and pongs read: {read}\n{metrics}");

    // Silent from now on: Flow-Timer (3 s) + grace (1 s) after its last ping.
    ua.freeze();
    let frozen = Instant::now();
    let failed = loop {
        let flow = tls_flow(&lab.server).expect("the TLS flow");
        if flow["state"] == "failed" {
            break flow;
        }
        assert!(frozen.elapsed() < Duration::from_secs(10), "not failed 10 s after falling silent: {flow}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["reason"], "keepalive_timeout", "{failed}");
    assert_eq!(failed["would_430"], true, "{failed}");
}

#[test]
fn without_tls_plaintext_nothing_inside_tls_is_read() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsN");
    let dir = ScratchDir::new("sipflow-netns-tls-off");
    lab.start_agent(SERVER_IF, &["--no-tls-plaintext"]);
    let registrar = tls_registrar(&lab, &dir);
    let _ua = OutboundUa::register(&lab.client, registrar.addr, "alice", Transport::Tls, Duration::from_secs(1));
    thread::sleep(Duration::from_millis(1500));
    let flow = tls_flow(&lab.server).expect("the TLS flow, tracked at the TCP level");
    assert!(flow["aor"].is_null(), "{flow}");
    assert_eq!(flow["state"], "no_keepalive", "{flow}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    assert_eq!(metric(&metrics, "sipflow_requests_total", &[("method", "REGISTER")]), Some(0.0), "{metrics}");
}

/// A --tls-lib that is no TLS library: one sentence, a non-zero exit, and
/// nothing left attached to the interface.
#[test]
fn a_named_library_that_cannot_be_probed_fails_plainly() {
    sipflow_tests::root_or_skip!();
    let lab = Lab::new("tlsB");
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.server, &sipflow_bin(), "run", "-i", SERVER_IF, "--listen", "127.0.0.1:9561"])
        .args(["--pin-dir", lab.pin_dir(), "--state-file", &lab.state_file(), "--tls-lib", "/etc/hostname"])
        .output()
        .expect("run sipflow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("sipflow: cannot read SIP inside TLS: /etc/hostname"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!Lab::link_show(&lab.server, SERVER_IF).contains("xdp"), "XDP left attached");
}
