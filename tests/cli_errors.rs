//! Bad input and missing privileges: one plain sentence, a non-zero exit, no panic.

use std::process::{Command, Output};

use sipflow_tests::{netns::sipflow_bin, require_root};

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
    require_root();
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
fn usage_errors_exit_2() {
    for args in
        [&["run"][..], &["run", "-i", "lo", "--sip-port", "70000"], &["run", "-i", "lo", "--sweep-interval", "soon"]]
    {
        let output = Command::new(sipflow_bin()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
    }
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
