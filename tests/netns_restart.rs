//! What survives the agent, and what it leaves alone: with --keep-attached
//! the program stays attached and counts while the agent is away; a new agent
//! takes over the pinned maps, the link and the saved bindings; `sipflow
//! detach` removes everything; another program's XDP hook is never taken
//! unasked; and the agent runs with three capabilities instead of root.

use std::{
    net::{SocketAddr, UdpSocket},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use sipflow_tests::{
    netns::{self, Lab, SERVER_IF, SERVER_V4, http_get, metric, sipflow_bin, wait_healthy},
    peers,
};

const METRICS: &str = "http://127.0.0.1:9560/metrics";

fn counted(server: &str, method: &str) -> f64 {
    let (_, text) = http_get(server, METRICS).expect("scrape /metrics");
    metric(&text, "sipflow_requests_total", &[("method", method)]).unwrap_or(0.0)
}

fn stop(agent: &mut std::process::Child) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("wait for sipflow").success(), "sipflow exits 0 on SIGTERM");
}

/// `sipflow ARGS` in the server's network namespace (nsenter: the host's bpffs stays visible).
fn sipflow_in(server: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{server}"))
        .arg(sipflow_bin())
        .args(args)
        .output()
        .expect("run sipflow")
}

fn one_sentence(output: &Output, code: i32, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "exit status; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("sipflow: ")).collect();
    assert_eq!(lines.len(), 1, "one sentence: {stderr}");
    assert!(lines[0].contains(mentions), "{stderr:?} should mention {mentions:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_restart_loses_no_packet_and_no_binding_and_detach_removes_everything() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("restart");
    let (server, client) = (lab.server.clone(), lab.client.clone());
    let timers = ["--flow-timer", "3s", "--grace", "1s", "--sweep-interval", "200ms", "--keep-attached"];
    lab.start_agent(SERVER_IF, &timers);

    // The registrar answers REGISTERs (Flow-Timer 3) and STUN keepalives.
    let stop_registrar = Arc::new(AtomicBool::new(false));
    let registrar = Lab::in_namespace(&server, || UdpSocket::bind((SERVER_V4, 5060)).expect("bind 5060"));
    peers::udp_server(registrar, 3, stop_registrar.clone());
    let sender = Lab::in_namespace(&client, || UdpSocket::bind((netns::CLIENT_V4, 0)).expect("bind"));
    let local: SocketAddr = sender.local_addr().unwrap();
    let target = (SERVER_V4, 5060);
    sender.send_to(&peers::outbound_register("alice", "UDP", local, "a1", "reg-1"), target).unwrap();
    let invite = peers::invite_to("alice", "call-1");
    for _ in 0..10 {
        sender.send_to(&invite, target).unwrap();
    }
    // The client keeps its flow alive with STUN, as an outbound UA over UDP does (RFC 5626 §4.4.2).
    for id in 0..3 {
        sender.send_to(&peers::stun_binding_request(id), target).unwrap();
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(counted(&server, "INVITE"), 10.0);

    stop(&mut lab.spawned()[0]);
    assert!(Lab::link_show(&server, SERVER_IF).contains("xdp"), "still attached after SIGTERM with --keep-attached");
    // Counted while no agent runs.
    for _ in 0..15 {
        sender.send_to(&invite, target).unwrap();
    }
    lab.start_agent(SERVER_IF, &timers);
    assert_eq!(counted(&server, "INVITE"), 25.0, "no packet lost across the restart");
    assert_eq!(counted(&server, "REGISTER"), 1.0);

    // The client falls silent: its flow fails, and the restored binding makes it a 430 case.
    let deadline = Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let (_, body) = http_get(&server, "http://127.0.0.1:9560/flows?state=failed").expect("GET /flows");
        let flows: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if let Some(flow) = flows.as_array().and_then(|a| a.first()).cloned() {
            break flow;
        }
        assert!(Instant::now() < deadline, "the silent flow was not failed: {body}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(failed["reason"], "keepalive_timeout");
    assert_eq!(failed["aor"], "sip:alice@example.com", "the binding survived the restart: {failed}");
    assert_eq!(failed["would_430"], true);

    stop_registrar.store(true, Ordering::Relaxed);
    stop(&mut lab.spawned()[1]);
    let pin_dir = lab.pin_dir().to_string();
    let detached = sipflow_in(&server, &["detach", "-i", SERVER_IF, "--pin-dir", &pin_dir]);
    assert!(detached.status.success(), "{}", String::from_utf8_lossy(&detached.stderr));
    assert!(String::from_utf8_lossy(&detached.stdout).contains("removed sipflow's programs and maps"));
    assert!(!Lab::link_show(&server, SERVER_IF).contains("xdp"), "detach removes the program");
    assert!(!std::path::Path::new(&pin_dir).join(SERVER_IF).exists(), "and the pins");
}

#[test]
fn another_xdp_program_is_never_replaced_unasked() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("owner");
    let server = lab.server.clone();
    lab.start_agent(SERVER_IF, &[]);
    // A second agent with pins of its own finds the first one's program on the hook.
    let other = sipflow_tests::PinDir::new("owner-2");
    let common = ["run", "-i", SERVER_IF, "--listen", "127.0.0.1:9561", "--pin-dir", other.as_str()];
    let refused = sipflow_in(&server, &common);
    one_sentence(&refused, 1, "already has an XDP program: program ");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`sipflow_xdp`"), "names it");
    let replace = sipflow_in(&server, &[&common[..], &["--replace"]].concat());
    one_sentence(&replace, 1, "held by a BPF link");
    assert_eq!(counted(&server, "INVITE"), 0.0, "the first agent still serves");

    // The preflight says the same, and passes on a free interface.
    let check = sipflow_in(&server, &["check", "-i", SERVER_IF]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL  sip0 XDP hook: program"), "{report}");
    // Under its own pin directory, the running agent's program is no failure.
    let own = sipflow_in(&server, &["check", "-i", SERVER_IF, "--pin-dir", lab.pin_dir()]);
    let report = String::from_utf8_lossy(&own.stdout);
    assert!(report.contains("ok    sip0 XDP hook: sipflow's own, program "), "{report}");
    assert!(!report.contains("FAIL  sip0 XDP"), "{report}");
    stop(&mut lab.spawned()[0]);
    let check = sipflow_in(&server, &["check", "-i", SERVER_IF]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}{}", String::from_utf8_lossy(&check.stderr));
    for line in ["ok    privileges", "ok    kernel", "ok    BTF", "ok    BPF filesystem", "ok    sip0 XDP: attaches in"]
    {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
}

/// CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON are enough (docs/operating.md, "Least privilege").
#[test]
fn runs_as_nobody_with_three_capabilities() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("caps");
    let (server, client) = (lab.server.clone(), lab.client.clone());
    // As the systemd unit arranges it (deploy/systemd): the agent's user owns its
    // pin directory and can reach it, here on a BPF filesystem of this test's own,
    // in a mount namespace of its own, so that the host's stays as it is.
    let pins = "/sys/fs/bpf/sipflow";
    let state = format!("/tmp/{server}-caps-registrations.json");
    let net = format!("--net=/var/run/netns/{server}");
    let caps = "+bpf,+net_admin,+perfmon";
    let script = format!(
        "mount -t bpf bpf /sys/fs/bpf -o mode=0755 && install -d -o 65534 -g 65534 {pins} && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps={caps} --ambient-caps={caps} \"$@\""
    );
    let prefix = ["nsenter", &net, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script, "sh"];
    let bin = sipflow_bin();
    let run = [&bin, "run", "-i", SERVER_IF, "--listen", "127.0.0.1:9560", "--pin-dir", pins, "--state-file", &state];
    let agent = lab.spawn_command(&prefix, &run);
    wait_healthy(&server, "http://127.0.0.1:9560/healthz", agent, sipflow_tests::netns::AGENT_START);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).unwrap_or_default();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "runs as nobody:\n{status}");
    let sender = Lab::in_namespace(&client, || UdpSocket::bind((netns::CLIENT_V4, 0)).expect("bind"));
    for _ in 0..5 {
        sender.send_to(&peers::invite_to("bob", "c-2"), (SERVER_V4, 5060)).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(counted(&server, "INVITE"), 5.0);
    let _ = std::fs::remove_file(&state);
}
