//! Which processes are the host's SIP servers over TLS: those that hold a
//! socket on a SIPS port (listening or accepted) in the agent's network
//! namespace. Only their SSL calls are read (see [`crate::kernel::tls_probes`]):
//! a uprobe attached to one process sets no breakpoint in any other, so the
//! host's other TLS programs (an HTTPS server, a database client) pay nothing.
//!
//! Found from /proc, as `ss -p` finds a socket's owner: the SIPS sockets'
//! inodes in /proc/self/net/tcp{,6}, then the processes whose file
//! descriptors are those sockets. Followed as they come and go: a restarted
//! server opens new sockets, a worker forked by the server shows among its
//! children (/proc/PID/task/*/children); either way the processes are looked
//! for again.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::Path,
    time::{Duration, Instant},
};

/// A process that holds a SIPS socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipServer {
    pub pid: u32,
    /// Its start time (clock ticks since boot, /proc/PID/stat field 22): a
    /// pid reused by another process is another process.
    pub started: u64,
    /// Its command name, for the log and `sipflow check`.
    pub command: String,
}

/// Even when no new SIPS socket showed, the processes are looked for again
/// this often: a socket handed to another process (SCM_RIGHTS) makes none.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);

/// Finds the SIP servers, and looks through every process's descriptors only
/// when a SIPS socket appeared that was not there before.
pub struct SipServerFinder {
    ports: Vec<u16>,
    known_sockets: HashSet<u64>,
    servers: BTreeMap<u32, SipServer>,
    last_full_scan: Option<Instant>,
    /// Processes whose descriptors could not be read at the last full scan
    /// (another user's, without CAP_SYS_PTRACE), and whether that was said.
    denied: usize,
    denied_said: bool,
    /// The SIP servers' children seen so far: a new one (a worker forked
    /// after the sockets were made, which makes no new socket) is looked for
    /// at once.
    children: HashSet<u32>,
}

impl SipServerFinder {
    pub fn new(tls_ports: &[u16]) -> Self {
        Self {
            ports: tls_ports.to_vec(),
            known_sockets: HashSet::new(),
            servers: BTreeMap::new(),
            last_full_scan: None,
            denied: 0,
            denied_said: false,
            children: HashSet::new(),
        }
    }

    /// The SIP servers now, by pid.
    pub fn scan(&mut self) -> &BTreeMap<u32, SipServer> {
        let sockets = sips_sockets(Path::new("/proc/self/net"), &self.ports);
        let new_socket = sockets.iter().any(|inode| !self.known_sockets.contains(inode));
        let due = self.last_full_scan.is_none_or(|at| at.elapsed() >= FULL_SCAN_EVERY);
        let new_child = self.new_children();
        if new_socket || new_child || due {
            (self.servers, self.denied) = holders(Path::new("/proc"), &sockets);
            self.last_full_scan = Some(Instant::now());
        } else {
            // Only those still running, as the same process.
            self.servers.retain(|pid, server| {
                read_stat(&Path::new("/proc").join(pid.to_string()))
                    .is_some_and(|(started, _)| started == server.started)
            });
        }
        self.known_sockets = sockets;
        &self.servers
    }

    /// Whether a SIP server forked a process not seen before (/proc/PID/task/*/children).
    fn new_children(&mut self) -> bool {
        let mut new = false;
        for pid in self.servers.keys() {
            for child in children(*pid) {
                new |= self.children.insert(child);
            }
        }
        new
    }

    /// Once: how many processes' descriptors could not be read (another
    /// user's, and the agent lacks CAP_SYS_PTRACE): a SIP server among them
    /// would go unread.
    pub fn denied_once(&mut self) -> Option<usize> {
        (self.denied > 0 && !std::mem::replace(&mut self.denied_said, true)).then_some(self.denied)
    }
}

/// The inodes of the TCP sockets whose local port is one of `ports`, from
/// `tcp` and `tcp6` in `net` (a /proc/PID/net).
pub fn sips_sockets(net: &Path, ports: &[u16]) -> HashSet<u64> {
    let mut sockets = HashSet::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(net.join(table)) {
            sockets.extend(text.lines().skip(1).filter_map(|line| socket_on(line, ports)));
        }
    }
    sockets
}

/// `  0: 00000000:13C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 ...`:
/// the inode (field 10) when the local port (after the colon of field 2) is one of `ports`.
fn socket_on(line: &str, ports: &[u16]) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
    if !ports.contains(&port) {
        return None;
    }
    // A socket in TIME_WAIT belongs to no process: its inode is 0.
    let inode: u64 = fields.nth(7)?.parse().ok()?;
    (inode != 0).then_some(inode)
}

/// The processes under `proc` (/proc) with a descriptor on one of
/// `sockets`, and the rest of their server: a SIP server that forks its
/// workers (Kamailio) writes a flow's TLS from whichever worker has a message
/// for it, and reads it in whichever was handed the connection, so every
/// process of the same program descended from the same ancestor of that
/// program counts.
/// Also says how many processes' descriptors could not be read.
pub fn holders(proc: &Path, sockets: &HashSet<u64>) -> (BTreeMap<u32, SipServer>, usize) {
    let mut servers = BTreeMap::new();
    let mut denied = 0;
    if sockets.is_empty() {
        return (servers, denied);
    }
    let own = std::process::id();
    let Ok(entries) = fs::read_dir(proc) else {
        return (servers, denied);
    };
    let mut table = BTreeMap::new();
    let mut holding = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Some(process) = read_process(&entry.path()) else {
            continue;
        };
        match holds_one(&entry.path(), sockets) {
            Ok(true) if pid != own => holding.push(pid),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied += 1,
            _ => {}
        }
        table.insert(pid, process);
    }
    let roots: HashSet<u32> = holding.iter().map(|pid| server_root(&table, *pid)).collect();
    for (pid, process) in &table {
        if *pid != own && roots.contains(&server_root(&table, *pid)) {
            servers.insert(*pid, SipServer { pid: *pid, started: process.started, command: process.command.clone() });
        }
    }
    (servers, denied)
}

/// What the family of a process is told by.
struct Process {
    parent: u32,
    started: u64,
    command: String,
    /// The program it runs (/proc/PID/exe), where it can be read.
    program: Option<std::path::PathBuf>,
}

fn read_process(dir: &Path) -> Option<Process> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (started, command, parent) = parse_stat(&stat)?;
    Some(Process { parent, started, command, program: fs::read_link(dir.join("exe")).ok() })
}

/// The eldest ancestor of `pid` that runs the same program: the server's main process.
fn server_root(table: &BTreeMap<u32, Process>, pid: u32) -> u32 {
    let mut root = pid;
    // Bounded: a pid's ancestry is a chain towards 1, but /proc is read over time.
    for _ in 0..64 {
        let (Some(process), Some(parent)) = (table.get(&root), table.get(&root).and_then(|p| table.get(&p.parent)))
        else {
            break;
        };
        let same = match (&process.program, &parent.program) {
            (Some(a), Some(b)) => a == b,
            _ => process.command == parent.command,
        };
        if !same || process.parent == root {
            break;
        }
        root = process.parent;
    }
    root
}

/// Whether the process at `dir` (/proc/PID) has a descriptor on one of `sockets`.
fn holds_one(dir: &Path, sockets: &HashSet<u64>) -> std::io::Result<bool> {
    // Fails for a process gone meanwhile, and for another user's without CAP_SYS_PTRACE.
    let fds = fs::read_dir(dir.join("fd"))?;
    Ok(fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(target.to_str()?))
            .is_some_and(|inode| sockets.contains(&inode))
    }))
}

/// The processes `pid`'s threads forked that still run.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// `socket:[12345]`: a descriptor's link when it is a socket.
fn socket_inode(target: &str) -> Option<u64> {
    target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// A process's start time and command, from /proc/PID/stat; the command is
/// in parentheses and may hold spaces and parentheses itself.
fn read_stat(dir: &Path) -> Option<(u64, String)> {
    parse_stat(&fs::read_to_string(dir.join("stat")).ok()?).map(|(started, command, _)| (started, command))
}

/// (start time, command, parent pid).
fn parse_stat(stat: &str) -> Option<(u64, String, u32)> {
    let (head, rest) = stat.rsplit_once(") ")?;
    let command = head.split_once(" (")?.1.to_string();
    // `rest` starts at field 3 (state); the parent is field 4, the start time field 22.
    let mut fields = rest.split_whitespace();
    let parent = fields.nth(4 - 3)?.parse().ok()?;
    let started = fields.nth(22 - 5)?.parse().ok()?;
    Some((started, command, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sips_port_socket_is_found_by_its_local_port() {
        let listening = "   0: 00000000:13C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let established = "   1: 0200000A:13C5 0100000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1";
        let other = "   2: 0200000A:01BB 0100000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1";
        let time_wait = "   3: 0200000A:13C5 0100000A:D432 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000";
        assert_eq!(socket_on(listening, &[5061]), Some(4242));
        assert_eq!(socket_on(established, &[5061]), Some(4343));
        assert_eq!(socket_on(other, &[5061]), None);
        assert_eq!(socket_on(time_wait, &[5061]), None);
        let v6 = "   0: 00000000000000000000000000000000:13C5 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        assert_eq!(socket_on(v6, &[5061]), Some(777));
    }

    #[test]
    fn a_commands_name_may_hold_spaces_and_parentheses() {
        let stat =
            "1234 (kam (tls) 1) S 1 1234 1234 0 -1 4194624 3 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((98765, "kam (tls) 1".to_string(), 1)));
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("pipe:[99]"), None);
    }

    #[test]
    fn this_process_is_found_holding_a_socket_on_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sockets = sips_sockets(Path::new("/proc/self/net"), &[port]);
        assert_eq!(sockets.len(), 1, "the listening socket");
        // Found in /proc/self's own descriptors (the scan leaves the agent's own pid out).
        assert!(holds_one(Path::new("/proc/self"), &sockets).unwrap());
        assert!(!holds_one(Path::new("/proc/self"), &HashSet::from([1])).unwrap());
    }

    #[test]
    fn a_servers_forked_workers_are_its_own_and_another_program_is_not() {
        let process = |parent: u32, program: &str| Process {
            parent,
            started: 1,
            command: program.to_string(),
            program: Some(program.into()),
        };
        let table = BTreeMap::from([
            (1, process(0, "/sbin/init")),
            (10, process(1, "/usr/sbin/kamailio")),
            (11, process(10, "/usr/sbin/kamailio")),
            (12, process(11, "/usr/sbin/kamailio")),
            (13, process(10, "/usr/bin/sh")),
            (20, process(1, "/usr/sbin/kamailio")),
            (30, process(29, "/tests/netns_tls")),
            (29, process(1, "/usr/bin/cargo")),
        ]);
        assert_eq!(server_root(&table, 12), 10, "a worker's worker");
        assert_eq!(server_root(&table, 11), 10);
        assert_eq!(server_root(&table, 13), 13, "a shell it started is no SIP server");
        assert_eq!(server_root(&table, 20), 20, "another Kamailio is another server");
        assert_eq!(server_root(&table, 30), 30);
        assert_eq!(server_root(&table, 99), 99, "gone meanwhile");
    }

    #[test]
    fn a_child_of_a_server_is_seen() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let own = std::process::id();
        assert!(children(own).contains(&child.id()), "{:?}", children(own));
        let mut finder = SipServerFinder::new(&[1]);
        finder.servers.insert(own, SipServer { pid: own, started: 0, command: "test".into() });
        assert!(finder.new_children(), "a new child");
        assert!(!finder.new_children(), "seen already");
        let _ = child.kill();
        let _ = child.wait();
    }
}
