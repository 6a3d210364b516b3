//! A two-host lab: a "client" and a "server" network namespace joined by a veth
//! pair, addressed from the documentation ranges. Everything it creates (the
//! namespaces, their links, the processes it started) goes away when it drops,
//! also when a test fails.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The interface name inside each namespace.
pub const CLIENT_IF: &str = "sip0";
pub const SERVER_IF: &str = "sip0";
/// The phone's link and the client namespace's end of it.
pub const PHONE_IF: &str = "wan0";
pub const ACCESS_IF: &str = "lan0";
pub const CLIENT_V4: &str = "192.0.2.1";
pub const SERVER_V4: &str = "192.0.2.2";
pub const CLIENT_V6: &str = "2001:db8::1";
pub const SERVER_V6: &str = "2001:db8::2";
/// A phone on an access link behind the client namespace (see [`Lab::add_phone`]).
pub const PHONE_V4: &str = "198.51.100.1";
/// The client namespace's address on the phone's access link.
pub const ACCESS_V4: &str = "198.51.100.254";

pub struct Lab {
    pub client: String,
    pub server: String,
    /// Namespaces added after the first two.
    more: Vec<String>,
    children: Vec<Child>,
    /// The agent's pins: removed after the namespaces (fields drop after `drop`).
    pins: crate::PinDir,
}

/// `ip netns add`, recorded so that an interrupted demo removes it too.
fn add_namespace(name: &str) {
    crate::interrupt::namespace_created(name);
    ip(&["netns", "add", name]);
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip (package iproute2)");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

impl Lab {
    /// Creates the namespaces; `tag` keeps parallel tests apart.
    pub fn new(tag: &str) -> Self {
        crate::require_root();
        let id = std::process::id();
        let lab = Self {
            client: format!("sf-{tag}-{id}-c"),
            server: format!("sf-{tag}-{id}-s"),
            more: Vec::new(),
            children: Vec::new(),
            pins: crate::PinDir::new(tag),
        };
        // From here on, Drop removes whatever was made.
        add_namespace(&lab.client);
        add_namespace(&lab.server);
        let (c, s) = (format!("sfc{id}{}", tag.len()), format!("sfs{id}{}", tag.len()));
        ip(&["link", "add", &c, "netns", &lab.client, "type", "veth", "peer", "name", &s, "netns", &lab.server]);
        for (ns, link, name, v4, v6) in
            [(&lab.client, &c, CLIENT_IF, CLIENT_V4, CLIENT_V6), (&lab.server, &s, SERVER_IF, SERVER_V4, SERVER_V6)]
        {
            ip(&["-n", ns, "link", "set", link, "name", name]);
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", name]);
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", name, "nodad"]);
            ip(&["-n", ns, "link", "set", name, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Adds a "phone" namespace on its own link to the client namespace, which
    /// routes between it and the server as an access router would: the phone's
    /// link can go down while the server's link stays up. Returns its name.
    pub fn add_phone(&mut self) -> String {
        let id = std::process::id();
        let phone = format!("{}-p", self.client.trim_end_matches("-c"));
        add_namespace(&phone);
        self.more.push(phone.clone());
        let (p, a) = (format!("sfp{id}"), format!("sfa{id}"));
        ip(&["link", "add", &p, "netns", &phone, "type", "veth", "peer", "name", &a, "netns", &self.client]);
        ip(&["-n", &phone, "link", "set", &p, "name", PHONE_IF]);
        ip(&["-n", &self.client, "link", "set", &a, "name", ACCESS_IF]);
        ip(&["-n", &phone, "addr", "add", &format!("{PHONE_V4}/24"), "dev", PHONE_IF]);
        ip(&["-n", &self.client, "addr", "add", &format!("{ACCESS_V4}/24"), "dev", ACCESS_IF]);
        for (ns, link) in [(&phone, PHONE_IF), (&self.client, ACCESS_IF)] {
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        ip(&["-n", &phone, "link", "set", "lo", "up"]);
        ip(&["-n", &phone, "route", "add", "default", "via", ACCESS_V4]);
        ip(&["-n", &self.server, "route", "add", "198.51.100.0/24", "via", CLIENT_V4]);
        let forwarding = Command::new("ip")
            .args(["netns", "exec", &self.client, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("sysctl");
        assert!(forwarding.success(), "enable forwarding in {}", self.client);
        phone
    }

    /// Takes the phone's access link down (from the phone's side), as when a
    /// phone loses its network: no FIN, no RST, just silence.
    pub fn phone_link_down(&self, phone: &str) {
        ip(&["-n", phone, "link", "set", PHONE_IF, "down"]);
    }

    /// Starts `program args` inside `namespace`; the lab kills it when it drops.
    pub fn spawn(&mut self, namespace: &str, program: &str, args: &[&str]) -> &mut Child {
        let command = ["ip", "netns", "exec", namespace, program];
        self.spawn_command(&command, args)
    }

    /// Starts `program args` in `namespace`'s network only. Unlike `ip netns
    /// exec`, which mounts a /sys of its own and so hides the host's BPF
    /// filesystem, the program pins where the host (and the next agent) sees it.
    pub fn spawn_in_network(&mut self, namespace: &str, program: &str, args: &[&str]) -> &mut Child {
        let net = format!("--net=/var/run/netns/{namespace}");
        self.spawn_command(&["nsenter", &net, program], args)
    }

    /// Starts `command args` as it is (its first word is the program); the lab kills it when it drops.
    pub fn spawn_command(&mut self, command: &[&str], args: &[&str]) -> &mut Child {
        let (program, leading) = command.split_first().expect("a program");
        let child = Command::new(program)
            .args(leading)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", command.join(" ")));
        crate::interrupt::process_started(child.id());
        let mut child = child;
        drain_output(&mut child);
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    /// Starts `sipflow run ARGS --listen 127.0.0.1:9560` in the server's namespace
    /// and waits until /healthz answers 200. The agent is the first spawned process.
    pub fn start_agent(&mut self, iface: &str, args: &[&str]) {
        let server = self.server.clone();
        let pins = self.pins.as_str().to_string();
        let state = self.state_file();
        let mut full =
            vec!["run", "-i", iface, "--listen", "127.0.0.1:9560", "--pin-dir", &pins, "--state-file", &state];
        full.extend_from_slice(args);
        let agent = self.spawn_in_network(&server, &sipflow_bin(), &full);
        wait_healthy(&server, "http://127.0.0.1:9560/healthz", agent, AGENT_START);
    }

    /// The lab's own directory for the agent's pins (its --pin-dir).
    pub fn pin_dir(&self) -> &str {
        self.pins.as_str()
    }

    /// Where the lab's agent keeps its registrations (its --state-file).
    pub fn state_file(&self) -> String {
        format!("/tmp/{}-registrations.json", self.server)
    }

    /// The processes started with [`Lab::spawn`], in order.
    pub fn spawned(&mut self) -> &mut Vec<Child> {
        &mut self.children
    }

    /// Runs `f` on a thread that has entered `namespace`: sockets it creates stay there.
    pub fn in_namespace<T: Send>(namespace: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/var/run/netns").join(namespace);
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path).expect("namespace file");
                    // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {namespace}");
                    f()
                })
                .join()
                .expect("namespace thread")
        })
    }

    /// `ip -n NS link show IF` output: tells whether an XDP program is attached.
    pub fn link_show(namespace: &str, iface: &str) -> String {
        let out = Command::new("ip").args(["-n", namespace, "link", "show", iface]).output().expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
            crate::interrupt::process_ended(child.id());
        }
        for ns in [&self.client, &self.server].into_iter().chain(&self.more) {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            crate::interrupt::namespace_removed(ns);
        }
        let _ = std::fs::remove_file(self.state_file());
    }
}

/// The last output of each spawned process, by pid: the lab reads its
/// processes' output as it comes, so that a chatty one never blocks on a full pipe.
static OUTPUT: std::sync::Mutex<std::collections::BTreeMap<u32, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
/// What is kept of a process's output.
const OUTPUT_KEPT: usize = 16 * 1024;

fn drain_output(child: &mut Child) {
    let pid = child.id();
    let streams: Vec<Box<dyn std::io::Read + Send>> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                let mut all = OUTPUT.lock().unwrap_or_else(|e| e.into_inner());
                let kept = all.entry(pid).or_default();
                kept.push_str(&line);
                kept.push('\n');
                if kept.len() > OUTPUT_KEPT {
                    let cut = kept.len() - OUTPUT_KEPT;
                    let cut = (cut..kept.len()).find(|i| kept.is_char_boundary(*i)).unwrap_or(kept.len());
                    kept.drain(..cut);
                }
            }
        });
    }
}

/// The last lines a spawned process wrote (stdout and stderr).
pub fn output_of(pid: u32) -> String {
    OUTPUT.lock().unwrap_or_else(|e| e.into_inner()).get(&pid).cloned().unwrap_or_default()
}

/// HTTP GET over TCP from inside `namespace`; returns the status and the body.
pub fn http_get(namespace: &str, url: &str) -> Option<(u16, String)> {
    let url = url.to_string();
    Lab::in_namespace(namespace, move || {
        let config = ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let mut response = agent.get(&url).call().ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().ok()?;
        Some((status, body))
    })
}

/// Polls `url` until it answers 200, the deadline passes, or `child` exits.
/// How long an agent may take to be healthy: the kernel verifies its
/// programs (some 3 million instructions, 10 s on an idle 2-core VM, more
/// beside Kamailio, tshark and the other tests); the wait ends when it is.
pub const AGENT_START: Duration = Duration::from_secs(90);

pub fn wait_healthy(namespace: &str, url: &str, child: &mut Child, deadline: Duration) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some((200, _)) = http_get(namespace, url) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The drain threads may still be reading the last lines.
            thread::sleep(Duration::from_millis(100));
            panic!("sipflow exited with {status} before it was healthy: {}", output_of(child.id()));
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer 200 within {deadline:?}");
}

/// Waits until the agent in `namespace` (on the lab's port 9560) reads SIP
/// inside TLS in at least `processes` processes (`sipflow_tls_processes`): a
/// SIP server started after the agent is found at its next scan of the
/// host's processes, within a second, and its first SSL calls before that
/// go unread. Panics after 10 s.
pub fn await_tls_processes(namespace: &str, processes: usize) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some((_, text)) = http_get(namespace, "http://127.0.0.1:9560/metrics") {
            let read = text
                .lines()
                .filter(|l| l.starts_with("sipflow_tls_processes{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            if read >= processes as f64 {
                return;
            }
            last = text;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let series: Vec<&str> = last.lines().filter(|l| l.starts_with("sipflow_tls_processes")).collect();
    panic!("the agent reads TLS in fewer than {processes} processes after 10 s: {series:?}");
}

/// The `sipflow` binary next to the test executable (target/<profile>/sipflow), or $SIPFLOW_BIN.
pub fn sipflow_bin() -> String {
    if let Ok(path) = std::env::var("SIPFLOW_BIN") {
        return path;
    }
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps, the demo from target/<profile>.
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("profile dir");
    }
    let path = dir.join("sipflow");
    assert!(path.exists(), "{} is missing: build it first (cargo xtask test does)", path.display());
    path.to_string_lossy().into_owned()
}

/// The value of one sample in a Prometheus text exposition, matched on every given label.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let pairs: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('=').map(|(k, v)| (k, v.trim_matches('"'))))
            .collect();
        labels.iter().all(|want| pairs.contains(want)).then(|| value.parse().ok())?
    })
}
