//! tshark as the referee: it captures the monitored interface while a lab runs,
//! then counts the SIP messages in the capture by method and status code.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use monitor_common::counters::Method;

use crate::process::{signal_group, stop_group};

/// The SIP of a capture, as tshark dissects it. ICMP errors quote SIP that
/// tshark would count again (an ICMP error quotes the datagram it answers), so they are left out.
const SIP_FILTER: &str = "sip && !icmp && !icmpv6";

pub struct Capture {
    child: Option<Child>,
    pub path: PathBuf,
}

impl Capture {
    /// Starts capturing on `iface` in `namespace` into `path`; returns once tshark captures.
    pub fn start(namespace: &str, iface: &str, path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace, "tshark", "-q", "-i", iface, "-w"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start tshark (package tshark)");
        crate::interrupt::process_started(child.id());
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready, started) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = ready.send(());
                }
            }
        });
        let capture = Self { child: Some(child), path: path.to_path_buf() };
        started.recv_timeout(Duration::from_secs(10)).expect("tshark did not start capturing within 10 s");
        capture
    }

    /// Stops the capture and waits until the file is complete.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: tshark and dumpcap finish the file and exit. Not SIGINT: a
            // program started in the background by a non-interactive shell ignores it.
            signal_group(&child, libc::SIGTERM);
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            stop_group(&mut child);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIP messages in a capture, as tshark counts them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SipCounts {
    pub requests: BTreeMap<String, u64>,
    pub responses: BTreeMap<u16, u64>,
    /// Messages by transport ("udp", "tcp"), for the record.
    pub by_transport: BTreeMap<String, u64>,
    /// TCP segments on the SIP port that repeated earlier ones.
    pub tcp_retransmissions: u64,
}

/// tshark reads each TCP segment on its own, as sipflow's kernel side does: a
/// message counts in the segment that holds its start line. Retransmitted
/// segments it recognises and does not count again; neither does sipflow.
const PER_SEGMENT: &str = "tcp.desegment_tcp_streams:FALSE";

/// One frame's SIP fields; a TCP segment may hold several messages, so each field
/// holds as many comma-separated values.
fn fields(capture: &Path, filter: &str, names: &[&str]) -> Vec<Vec<String>> {
    fields_with(capture, filter, names, true)
}

/// The same; `per_segment` false lets tshark reassemble TCP streams, which its
/// WebSocket dissector needs (it follows the HTTP upgrade). A WebSocket frame
/// carries one message (RFC 7118), so that counts as sipflow does.
fn fields_with(capture: &Path, filter: &str, names: &[&str], per_segment: bool) -> Vec<Vec<String>> {
    let mut command = Command::new("tshark");
    let keys = capture.with_extension("keys");
    if keys.is_file() {
        command.arg("-o").arg(format!("tls.keylog_file:{}", keys.display()));
    }
    // The lab's wss listener: HTTP (then WebSocket) inside TLS.
    command.args(["-d", "tls.port==8443,http"]);
    if per_segment {
        command.args(["-o", PER_SEGMENT]);
    }
    command.arg("-r").arg(capture).args(["-Y", filter, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]);
    for name in names {
        command.args(["-e", name]);
    }
    let out = command.output().expect("run tshark -r");
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

fn values(field: Option<&String>) -> impl Iterator<Item = &str> {
    field.map(String::as_str).unwrap_or("").split(',').filter(|v| !v.is_empty())
}

/// Counts requests by method (the 14 standard ones, else "other") and responses
/// by code. SIP over TLS is counted where the capture's key log (the same path
/// with the extension `keys`, NSS format) decrypts it; SIP over WebSocket
/// (which tshark dissects only in reassembled streams) in a pass of its own.
pub fn count_sip(capture: &Path) -> SipCounts {
    let mut counts = SipCounts::default();
    let retransmitted = "tcp.port == 5060 && tcp.len > 0 && tcp.analysis.retransmission";
    counts.tcp_retransmissions = fields(capture, retransmitted, &["frame.number"]).len() as u64;
    let names = ["sip.Method", "sip.Status-Code", "udp.srcport", "tls.record.content_type"];
    let mut rows = fields(capture, SIP_FILTER, &names);
    rows.extend(fields_with(capture, &format!("{SIP_FILTER} && websocket"), &names, false));
    for row in rows {
        let transport = match (row.get(2).is_some_and(|v| !v.is_empty()), row.get(3).is_some_and(|v| !v.is_empty())) {
            (true, _) => "udp",
            (false, true) => "tls",
            (false, false) => "tcp",
        };
        for method in values(row.first()) {
            let known = Method::STANDARD.iter().any(|(_, name)| *name == method.as_bytes());
            *counts.requests.entry(if known { method.to_string() } else { "other".into() }).or_default() += 1;
            *counts.by_transport.entry(transport.into()).or_default() += 1;
        }
        for code in values(row.get(1)) {
            *counts.responses.entry(code.parse().expect("status code")).or_default() += 1;
            *counts.by_transport.entry(transport.into()).or_default() += 1;
        }
    }
    counts
}

/// Every response with `code` in the capture: (capture time as Unix seconds, To user).
pub fn responses(capture: &Path, code: u16) -> Vec<(f64, String)> {
    fields(capture, &format!("{SIP_FILTER} && sip.Status-Code == {code}"), &["frame.time_epoch", "sip.to.user"])
        .into_iter()
        .filter_map(|row| Some((row.first()?.parse().ok()?, row.get(1)?.split(',').next()?.to_string())))
        .collect()
}

/// One UDP SIP message of a capture, as tshark's transaction tracking sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transacted {
    pub frame: u64,
    pub source: String,
    pub destination: String,
    /// The request's method, or the response's status code.
    pub method: Option<String>,
    pub code: Option<u16>,
    /// The `CSeq` method.
    pub cseq_method: String,
    /// tshark took it for a resend of an earlier frame (same Call-ID, `CSeq`
    /// and direction; tshark does not compare branches).
    pub resend: bool,
    /// The frame tshark took it for a resend of.
    pub resend_of: Option<u64>,
    /// The top Via's branch.
    pub branch: String,
    /// On a response: milliseconds since its request (tshark's sip.response-time).
    pub response_ms: Option<u64>,
}

/// Every UDP SIP message of a capture with its transaction fields.
pub fn transacted(capture: &Path) -> Vec<Transacted> {
    let names = [
        "ip.src",
        "ip.dst",
        "sip.Method",
        "sip.Status-Code",
        "sip.CSeq.method",
        "sip.resend",
        "sip.response-time",
        "frame.number",
        "sip.resend-original",
        "sip.Via.branch",
    ];
    fields(capture, &format!("{SIP_FILTER} && udp"), &names)
        .into_iter()
        .map(|row| {
            let text = |i: usize| row.get(i).filter(|v| !v.is_empty()).cloned();
            Transacted {
                source: text(0).unwrap_or_default(),
                destination: text(1).unwrap_or_default(),
                method: text(2),
                code: text(3).and_then(|c| c.parse().ok()),
                cseq_method: text(4).unwrap_or_default(),
                resend: text(5).is_some_and(|r| r == "1" || r == "True"),
                response_ms: text(6).and_then(|ms| ms.parse().ok()),
                frame: text(7).and_then(|n| n.parse().ok()).unwrap_or_default(),
                resend_of: text(8).and_then(|n| n.parse().ok()),
                branch: text(9).and_then(|b| b.split(',').next().map(str::to_string)).unwrap_or_default(),
            }
        })
        .collect()
}
