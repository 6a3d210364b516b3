//! Bad input and missing privileges: one plain sentence, a non-zero exit, no panic.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Output},
};

use sipflow_tests::netns::sipflow_bin;

fn assert_one_sentence(output: &Output, code: i32, mentions: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "exit status; stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(mentions), "{stderr:?} should mention {mentions:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn unknown_interface() {
    let output = Command::new(sipflow_bin()).args(["run", "-i", "no-such-if0"]).output().unwrap();
    assert_one_sentence(&output, 2, "interface `no-such-if0` does not exist");
}

#[test]
fn not_privileged() {
    sipflow_tests::root_or_skip!();
    // Drop to nobody with no capabilities at all, as an operator who forgot sudo.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .arg(sipflow_bin())
        .args(["run", "-i", "lo"])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_sentence(&output, 1, "run it with sudo");
}

#[test]
fn usage_errors_exit_2_with_one_sentence() {
    let cases: [(&[&str], &str); 10] = [
        (&["run"], "no interface to monitor"),
        (&["run", "-i", "lo", "--ws-port", "5060"], "port 5060 is given twice"),
        (&["run", "-i", "lo", "--sip-port", "70000"], "--sip-port"),
        (&["run", "-i", "lo", "--sip-port", "0"], "--sip-port"),
        (&["run", "-i", "lo", "--sweep-interval", "soon"], "write it like 30s, 500ms or 2m"),
        (&["run", "-i", "lo", "--grace", "3 weeks"], "--grace"),
        (&["run", "-i", "lo", "--xdp-mode", "turbo"], "--xdp-mode"),
        (&["run", "-i", "lo", "--peer", "carrier"], "write it like carrier-a=192.0.2.0/24"),
        (&["run", "-i", "lo", "--peer", "a=10.0.0.0/33"], "is not a network"),
        (&["run", "-i", "lo", "--peer", "a=10.0.0.0/8", "--peer", "b=10.0.0.0/8"], "give each network to one peer"),
    ];
    for (args, mentions) in cases {
        let output = Command::new(sipflow_bin()).args(args).output().unwrap();
        assert_one_sentence(&output, 2, mentions);
    }
}

/// A config file: its values are checked like flags, and it is named when it is wrong.
#[test]
fn config_file_errors() {
    let dir = std::env::temp_dir().join(format!("sipflow-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let cases = [
        (file("syntax.toml", "iface = [\n"), "is not valid TOML at line"),
        (file("unknown.toml", "interface = [\"lo\"]\n"), "unknown key `interface`"),
        (file("duration.toml", "iface = [\"lo\"]\ngrace = \"soon\"\n"), "--grace"),
        (file("iface.toml", "iface = [\"no-such-if0\"]\n"), "interface `no-such-if0` does not exist"),
        (dir.join("missing.toml").to_str().unwrap().to_string(), "cannot read the config file"),
    ];
    for (path, mentions) in &cases {
        let output = Command::new(sipflow_bin()).args(["run", "--config", path]).output().unwrap();
        assert_one_sentence(&output, 2, mentions);
    }
    // A flag wins over the file: the file's interface is never looked at.
    let output =
        Command::new(sipflow_bin()).args(["run", "--config", &cases[3].0, "-i", "no-such-if1"]).output().unwrap();
    assert_one_sentence(&output, 2, "interface `no-such-if1` does not exist");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listen_port_in_use() {
    sipflow_tests::root_or_skip!();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let output = Command::new(sipflow_bin()).args(["run", "-i", "lo", "--listen", &addr]).output().unwrap();
    assert_one_sentence(&output, 2, &format!("cannot listen on {addr}"));
}

/// Without CAP_SYS_ADMIN sipflow cannot mount the BPF filesystem itself: in a
/// mount namespace of its own, with /sys/fs/bpf unmounted, it says so. In a
/// network namespace of its own too, so that nothing touches the host's `lo`.
#[test]
fn no_bpf_filesystem() {
    sipflow_tests::root_or_skip!();
    let caps = "+bpf,+net_admin,+perfmon";
    let script = format!(
        "while umount /sys/fs/bpf 2>/dev/null; do :; done; ip link set lo up; \
         exec setpriv --inh-caps=-all,{caps} --ambient-caps={caps} --bounding-set=-all,{caps} \"$@\""
    );
    let mut agent = Command::new("timeout");
    agent.args(["20", "unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", &script, "sh"]);
    let output = agent
        .args([&sipflow_bin(), "run", "-i", "lo", "--listen", "127.0.0.1:0"])
        .output()
        .expect("unshare (util-linux)");
    assert_one_sentence(&output, 1, "mount it with `mount -t bpf bpf /sys/fs/bpf`");
}

/// No BTF: the preflight names it and the fix, and fails.
#[test]
fn no_btf_fails_the_preflight() {
    sipflow_tests::root_or_skip!();
    // An empty directory over /sys/kernel/btf hides the kernel's BTF from this process alone.
    let script = "mount -t tmpfs none /sys/kernel/btf && ip link set lo up && exec \"$@\"";
    let output = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh", &sipflow_bin(), "check"])
        .args(["-i", "lo"])
        .output()
        .expect("unshare (util-linux)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report
            .contains("FAIL  BTF: /sys/kernel/btf/vmlinux is missing; use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
        "{report}"
    );
    assert_one_sentence(&output, 1, "check(s) failed");
}

#[test]
fn help_and_version() {
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let output = Command::new(sipflow_bin()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(!output.stdout.is_empty());
    }
    let help = Command::new(sipflow_bin()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in ["--iface", "--sip-port", "--xdp-mode", "--listen", "--log-format"] {
        assert!(help.contains(option), "run --help explains {option}");
    }
}

#[test]
fn flows_without_an_agent() {
    let output = Command::new(sipflow_bin()).args(["flows", "--agent", "127.0.0.1:1"]).output().unwrap();
    assert_one_sentence(&output, 1, "cannot reach the agent at 127.0.0.1:1");
}

/// As under `ip netns exec`: a mount namespace of its own, where the agent
/// mounts the BPF filesystem itself. Its pins would die with it; it runs, and
/// says so once, naming `nsenter --net`. (`check` fails on the same ground.)
#[test]
fn a_private_mount_namespace_is_named() {
    sipflow_tests::root_or_skip!();
    let state = format!("/tmp/sipflow-private-mounts-{}.json", std::process::id());
    let script = "while umount /sys/fs/bpf 2>/dev/null; do :; done; ip link set lo up; exec \"$@\"";
    let mut agent = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .args([&sipflow_bin(), "run", "-i", "lo", "--listen", "127.0.0.1:0", "--state-file", &state])
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("unshare (util-linux)");
    // Stopped once it serves (loading takes longer on a busy machine), or after a minute at most.
    let lines = std::io::BufRead::lines(std::io::BufReader::new(agent.stderr.take().expect("stderr")));
    let (sender, serving) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in lines.map_while(Result::ok) {
            if line.contains("serving /metrics") {
                let _ = sender.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let _ = serving.recv_timeout(std::time::Duration::from_secs(60));
    sipflow_tests::process::signal_group(&agent, libc::SIGINT);
    let _ = agent.wait();
    let stderr = reader.join().expect("stderr reader");
    let _ = std::fs::remove_file(&state);
    assert_eq!(stderr.matches("nsenter --net=/run/netns/NAME").count(), 1, "{stderr}");
    assert!(stderr.contains("serving /metrics"), "it runs all the same: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Interface names become directories under --pin-dir: `..` or `/` never reach one.
#[test]
fn interface_names_that_are_paths_are_refused() {
    let dir = std::env::temp_dir().join(format!("sipflow-iface-names-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("pins")).unwrap();
    std::fs::write(dir.join("keep"), b"mine").unwrap();
    for name in ["..", "/", "../..", "sixteen-bytes-ab", "eth0:1"] {
        let pins = dir.join("pins");
        let output = Command::new(sipflow_bin()).args(["detach", "-i", name, "--pin-dir"]).arg(&pins).output().unwrap();
        assert_one_sentence(&output, 2, "is not an interface name");
    }
    let kept = std::fs::read(dir.join("keep"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(kept.unwrap(), b"mine");
}

/// Every timer is bounded: no zero walk interval, no grace that overflows a
/// deadline. (An agent that took them would run: in a network namespace of
/// its own, with pins of its own, for 10 s at most.)
#[test]
fn unbounded_durations_are_refused() {
    sipflow_tests::root_or_skip!();
    let pins = format!("/sys/fs/bpf/sipflow-tests/unbounded-{}", std::process::id());
    let state = format!("/tmp/sipflow-unbounded-{}.json", std::process::id());
    for (option, value) in [
        ("--sweep-interval", "0"),
        ("--grace", "18446744073709551615s"),
        ("--retention", "307445734561825861m"),
        ("--flow-timer", "0"),
    ] {
        let output = Command::new("timeout")
            .args(["-s", "KILL", "10", "unshare", "--net", &sipflow_bin(), "run", "-i", "lo", option, value])
            .args(["--pin-dir", &pins, "--state-file", &state, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&pins);
        let _ = std::fs::remove_file(&state);
        assert_one_sentence(&output, 2, option);
    }
}
