//! sipp (package sip-tester) runs the lab's scripted UAs: tests/lab/sipp/*.xml.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A scenario file of the lab.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lab/sipp").join(name)
}

/// sipp's transport mode: one UDP socket, or one TCP connection for all calls.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Udp,
    Tcp,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Udp => "u1",
            Mode::Tcp => "t1",
        }
    }
}

/// Where sipp runs and whom it talks to.
pub struct Peer<'a> {
    pub namespace: &'a str,
    pub local_ip: &'a str,
    pub local_port: u16,
    pub proxy: &'a str,
    pub work_dir: &'a Path,
}

impl Peer<'_> {
    fn command(&self, scenario_name: &str, mode: Mode) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace, "sipp", self.proxy, "-sf"])
            .arg(scenario(scenario_name))
            .args(["-t", mode.flag(), "-i", self.local_ip, "-p", &self.local_port.to_string(), "-nostdin"])
            .current_dir(self.work_dir)
            .stdin(Stdio::null());
        command
    }

    /// One call per AOR user, all at once (`-r 50`), each to a final answer; sipp's output.
    pub fn call_each(&self, scenario_name: &str, mode: Mode, users: &[&str]) -> Output {
        // One file per local port: several callers may run at once.
        let injection = self.work_dir.join(format!("{scenario_name}-{}.csv", self.local_port));
        let mut text = String::from("SEQUENTIAL\n");
        for user in users {
            text.push_str(&format!("{user};\n"));
        }
        std::fs::write(&injection, text).expect("write injection file");
        self.command(scenario_name, mode)
            .arg("-inf")
            .arg(&injection)
            .args(["-m", &users.len().to_string(), "-r", "50", "-timeout", "30s", "-timeout_error"])
            .output()
            .expect("run sipp (package sip-tester)")
    }

    /// A sipp that registers `user` over TCP with outbound and then stays on its
    /// flow; returns once the registrar answered 200, with the process to kill.
    pub fn registered(&self, user: &str) -> Child {
        let messages = self.work_dir.join(format!("{user}-messages.log"));
        let _ = std::fs::remove_file(&messages);
        let mut child = self
            .command("register_outbound.xml", Mode::Tcp)
            .args(["-s", user, "-m", "1", "-trace_msg", "-message_file"])
            .arg(&messages)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start sipp (package sip-tester)");
        crate::interrupt::process_started(child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&messages).is_ok_and(|m| m.contains("SIP/2.0 200")) {
                return child;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sipp registering {user} exited with {status}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sipp registering {user} got no 200 within 5 s");
    }
}

/// sipp's built-in UAS on the server's SIP port (UDP 5060), answering every
/// call, in its own process group; stop it with `process::stop_group`.
pub fn answering_calls(server_namespace: &str) -> Child {
    let uas = Command::new("ip")
        .args(["netns", "exec", server_namespace, "sipp", "-sn", "uas", "-i", crate::netns::SERVER_V4])
        .args(["-p", "5060", "-nostdin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start sipp (package sip-tester)");
    crate::interrupt::process_started(uas.id());
    uas
}

/// The cumulated column of a row of sipp's final statistics
/// ("Successful call | 12 | 345" gives 345); 0 when the row is missing.
pub fn final_statistic(output: &str, row: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains(row))
        .filter_map(|l| l.split('|').nth(2)?.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Retransmissions of every message, from the message table of sipp's final
/// screen ("INVITE ---------->  180  0  0": count, retransmissions, timeouts).
pub fn retransmissions(output: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.contains("---------->") || l.contains("<----------"))
        .filter_map(|l| {
            let after_arrow = l.split_once("----------")?.1.trim_start_matches('>');
            let numbers: Vec<u64> = after_arrow.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            numbers.get(1).copied()
        })
        .sum()
}
