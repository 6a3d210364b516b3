//! baresip as a real user agent in the lab: Debian's `baresip-core` (1.0), a
//! widely used UA that nobody here wrote, registering with RFC 5626 outbound
//! (`sipnat=outbound`: `+sip.instance`, `reg-id=1`, `Supported: outbound`).
//!
//! It runs headless from a config directory of its own: no UI module, no audio
//! device (`none` for player, source and alert), only the modules it needs:
//! `uuid` (the instance id; it must load before `account`, or outbound is
//! refused for want of a UUID), `g711` (a codec) and `account` (reads the
//! `accounts` file). stdin is null; it runs until signalled, or `-t` seconds.
//!
//! What baresip 1.0 (libre 1.0) does for keepalives, seen on the wire against
//! Kamailio granting `Flow-Timer: 3`:
//! - over TCP, CRLFCRLF pings at 80-100 % of max(Flow-Timer, 20 s): libre
//!   never pings a TCP flow more often than every 16-20 s, whatever the
//!   registrar asks; nothing at all for the first 16 s;
//! - over UDP, STUN Binding requests at 80-100 % of the Flow-Timer (every
//!   2.4-3 s here), the first one right after the 200 to its REGISTER.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    process::{signal_group, stop_group},
    scratch_dir::ScratchDir,
    ua::Transport,
};

/// Where Debian puts baresip's modules.
pub const MODULE_DIR: &str = "/usr/lib/baresip/modules";
/// An orphaned baresip (its test killed outright) ends by itself after this.
const LIFETIME_S: u32 = 600;

pub struct Baresip {
    child: Child,
    pub user: String,
    pub transport: Transport,
    /// The address:port it listens on (its SIP socket, the flow's client side over UDP).
    pub local: String,
    dir: ScratchDir,
}

/// baresip's `config`: listen on `local_ip`:`local_port`, no UI, no audio device, three modules.
pub fn config(local_ip: &str, local_port: u16) -> String {
    format!(
        "poll_method\t\tepoll\n\
         sip_listen\t\t{local_ip}:{local_port}\n\
         audio_player\t\tnone\n\
         audio_source\t\tnone\n\
         audio_alert\t\tnone\n\
         module_path\t\t{MODULE_DIR}\n\
         module\t\t\tuuid.so\n\
         module\t\t\tg711.so\n\
         module_app\t\taccount.so\n"
    )
}

/// baresip's `accounts`: `user` at the registrar, outbound over `transport`, re-registering every 60 s.
pub fn account(user: &str, registrar_ip: &str, transport: Transport) -> String {
    let t = transport.name().to_lowercase();
    format!(
        "<sip:{user}@{registrar_ip};transport={t}>;outbound=\"sip:{registrar_ip};transport={t}\";sipnat=outbound;regint=60\n"
    )
}

/// baresip's name and version as `baresip -h` prints them, e.g. `baresip v1.0.0`.
pub fn version() -> String {
    let out = Command::new("baresip").arg("-h").output().expect("run baresip (package baresip-core)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("baresip v")).unwrap_or("baresip (version unknown)");
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

impl Baresip {
    /// Starts baresip in `namespace`, listening on `local_ip`:`local_port`, to
    /// register `user` with the registrar at `registrar_ip`:5060 over `transport`.
    /// Over UDP the listening socket is the flow's client side; over TCP baresip
    /// connects from an ephemeral port.
    pub fn start(
        namespace: &str,
        (local_ip, local_port): (&str, u16),
        registrar_ip: &str,
        user: &str,
        transport: Transport,
    ) -> Self {
        let dir = ScratchDir::new(&format!("sipflow-baresip-{namespace}-{user}"));
        std::fs::write(dir.path().join("config"), config(local_ip, local_port)).expect("write baresip config");
        std::fs::write(dir.path().join("accounts"), account(user, registrar_ip, transport))
            .expect("write baresip accounts");
        let log = File::create(dir.path().join("baresip.log")).expect("baresip log");
        // `ip netns exec` execs baresip itself: the child is baresip, leading its own group.
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, "baresip", "-f"])
            .arg(dir.path())
            .args(["-t", &LIFETIME_S.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start baresip (package baresip-core)");
        crate::interrupt::process_started(child.id());
        Self { child, user: user.to_string(), transport, local: format!("{local_ip}:{local_port}"), dir }
    }

    /// Waits until baresip logs the registrar's 200 to its REGISTER; returns that line.
    /// Panics with its log if it exits, is refused, or is not registered within `within`.
    pub fn await_registered(&mut self, within: Duration) -> String {
        let want = format!("{{1/{}/v4}} 200", self.transport.name());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("baresip exited with {status} before it registered:\n{}", self.log_text());
            }
            let log = self.log_text();
            if let Some(line) = log.lines().find(|l| l.contains(&want)) {
                return line.to_string();
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "baresip did not register {} over {} within {within:?}:\n{}",
            self.user,
            self.transport.name(),
            self.log_text()
        );
    }

    /// kill -9: no unregistration, no goodbye; the kernel closes its sockets.
    pub fn kill(&mut self) {
        signal_group(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
        crate::interrupt::process_ended(self.child.id());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `+sip.instance` UUID, as the uuid module generated it into the config directory.
    pub fn uuid(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("uuid")).unwrap_or_default().trim().to_string()
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("baresip.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        // One already killed and reaped: its pid may be another process's by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            crate::interrupt::process_ended(self.child.id());
            return;
        }
        stop_group(&mut self.child);
    }
}
