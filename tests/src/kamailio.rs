//! Kamailio as the lab's RFC 5626 edge proxy and registrar (tests/lab/kamailio.cfg).

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{process::stop_group, scratch_dir::ScratchDir};

/// The config, in the repository so that it can be read.
pub fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/kamailio.cfg")
}

/// Kamailio's transaction timer (tm's fr_timer, ms): a request unanswered over
/// a flow this long is answered 430. Operators use 4-5 s rather than SIP's 32 s.
pub const TRANSACTION_TIMER_MS: u32 = 4000;

/// SIP over WebSocket (RFC 7118): ws in clear, and wss.
pub const WS_PORT: u16 = 8080;
pub const WSS_PORT: u16 = 8443;

pub struct Kamailio {
    child: Child,
    pub log: PathBuf,
    _rundir: ScratchDir,
}

impl Kamailio {
    /// Starts Kamailio in `namespace` on `addr`:5060, UDP and TCP, `addr`:5061
    /// over TLS (a self-signed certificate), and WebSocket on `WS_PORT` and
    /// `WSS_PORT` (over TLS), giving
    /// registrations `Flow-Timer: flow_timer`; returns once it listens.
    pub fn start(namespace: &str, addr: &str, flow_timer: u32) -> Self {
        Self::start_with_lifetime(namespace, addr, flow_timer, flow_timer + 2)
    }

    /// The same, closing a TCP connection only after `tcp_lifetime` seconds
    /// without traffic: for a UA that pings more slowly than its Flow-Timer
    /// (baresip), or a test that leaves a flow idle and needs it open.
    pub fn start_with_lifetime(namespace: &str, addr: &str, flow_timer: u32, tcp_lifetime: u32) -> Self {
        let rundir = ScratchDir::new(&format!("sipflow-kamailio-{namespace}"));
        let log = rundir.path().join("kamailio.log");
        let (cert, key) = crate::tls::self_signed(rundir.path());
        let config = config_path();
        let output = File::create(&log).expect("kamailio log");
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, "kamailio", "-f"])
            .arg(&config)
            .args(["-DD", "-E", "-Y"])
            .arg(rundir.path())
            .args(["-l", &format!("udp:{addr}:5060"), "-l", &format!("tcp:{addr}:5060")])
            .args(["-l", &format!("tls:{addr}:5061"), "-A", "WITH_TLS"])
            .args(["-l", &format!("tcp:{addr}:{WS_PORT}"), "-l", &format!("tls:{addr}:{WSS_PORT}"), "-A", "WITH_WS"])
            .args(["-A", &format!("TLS_CERT=\"{}\"", cert.display()), "-A", &format!("TLS_KEY=\"{}\"", key.display())])
            .args(["-A", &format!("FLOW_TIMER={flow_timer}"), "-A", &format!("TCP_LIFETIME={tcp_lifetime}")])
            .args(["-A", &format!("FR_TIMER={TRANSACTION_TIMER_MS}")])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log fd"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect("start kamailio (package kamailio)");
        crate::interrupt::process_started(child.id());
        let mut kamailio = Self { child, log, _rundir: rundir };
        kamailio.await_listening(namespace);
        kamailio
    }

    fn await_listening(&mut self, namespace: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kamailio exited with {status}:\n{}", self.log_text());
            }
            let out = Command::new("ip").args(["netns", "exec", namespace, "ss", "-ltn"]).output().expect("ss");
            let listening = String::from_utf8_lossy(&out.stdout).into_owned();
            let ports = [5060, 5061, WS_PORT, WSS_PORT];
            if ports.iter().all(|port| listening.contains(&format!(":{port}"))) {
                // The UDP workers come up with the TCP ones.
                thread::sleep(Duration::from_millis(200));
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("kamailio did not listen on all its ports within 10 s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop_group(&mut self.child);
    }
}
