//! The operations kit (deploy/) against the real tools: promtool checks and
//! unit-tests the alert rules, systemd-analyze verifies the unit, every metric
//! the rules and the dashboard query is one a running agent exports, and the
//! completions and man pages come out of the binary.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use sipflow_tests::netns::{Lab, SERVER_IF, http_get, sipflow_bin};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} (cargo xtask setup installs it): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{program} {}:\n{text}", args.join(" "));
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy("prometheus");
    let checked = run("promtool", &["check", "rules", "sipflow.rules.yml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run("promtool", &["test", "rules", "sipflow.rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    run("promtool", &["check", "config", "scrape.yml"], &dir);
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    }
    // The unit as installed, with this build's binary where /usr/bin/sipflow would be.
    let unit = std::fs::read_to_string(deploy("systemd/sipflow.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/sipflow run "), "the unit runs sipflow");
    let dir = std::env::temp_dir().join(format!("sipflow-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sipflow.service"), unit.replace("/usr/bin/sipflow", &sipflow_bin())).unwrap();
    let verified =
        Command::new("systemd-analyze").args(["verify", "sipflow.service"]).current_dir(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// Metric names in `text`: every `sipflow_...` word.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sipflow_") {
        let word: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("deploy");
    let server = lab.server.clone();
    // The example config file, with the lab's interface and port given as flags (which win).
    let config = deploy("sipflow.toml");
    lab.start_agent(SERVER_IF, &["--config", config.to_str().unwrap(), "--egress"]);
    // After the first walk, which sets the flow map's gauges and then the flow census.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let exposition = loop {
        let (_, text) = http_get(&server, "http://127.0.0.1:9560/metrics").expect("scrape");
        let walked = text.contains("sipflow_map_entries{") && text.contains("sipflow_flows_would_430{");
        if walked || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for file in ["prometheus/sipflow.rules.yml", "grafana/sipflow-dashboard.json"] {
        let queried = names_in(&std::fs::read_to_string(deploy(file)).unwrap());
        assert!(!queried.is_empty(), "{file} queries sipflow's metrics");
        for name in &queried {
            // A histogram is exported as NAME_bucket, NAME_sum and NAME_count.
            let histogram = exported.contains(&format!("{name}_bucket"));
            assert!(
                exported.contains(name) || histogram,
                "{file} queries {name}, which /metrics does not export:\n{exposition}"
            );
        }
    }
    assert!(exposition.contains("sipflow_program_attached{iface=\"sip0\",program=\"tc_egress\"} 1"), "{exposition}");
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    let out = |args: &[&str]| {
        let output = Command::new(sipflow_bin()).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = out(&["completions", shell]);
        assert!(script.contains("--keep-attached") && script.contains("detach"), "{shell} completes every option");
    }
    let page = out(&["manpage", "run"]);
    assert!(page.contains(".TH sipflow-run 1") && page.contains("pin\\-dir"), "{page}");
}

/// The DaemonSet's config file (in its ConfigMap) is one `sipflow run` reads,
/// and every option its container passes is one `sipflow run` has.
#[test]
fn the_kubernetes_manifest_configures_a_real_run() {
    let manifest = std::fs::read_to_string(deploy("kubernetes/sipflow.yaml")).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    let start = lines.iter().position(|l| l.trim() == "sipflow.toml: |").expect("the ConfigMap's sipflow.toml");
    let indent = lines[start + 1].len() - lines[start + 1].trim_start().len();
    let toml: String = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect();
    let path = std::env::temp_dir().join(format!("sipflow-k8s-{}.toml", std::process::id()));
    std::fs::write(&path, &toml).unwrap();
    // Parsed and checked by clap; only the interface, given here, does not exist.
    let output = Command::new(sipflow_bin())
        .args(["run", "--config", path.to_str().unwrap(), "-i", "no-such-if9"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interface `no-such-if9` does not exist"), "the ConfigMap's file:\n{toml}\n{stderr}");

    let help = Command::new(sipflow_bin()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let options =
        manifest.split_whitespace().map(|w| w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')));
    for option in options.filter(|w| w.starts_with("--") && w[2..].starts_with(|c: char| c.is_ascii_lowercase())) {
        assert!(help.contains(option), "the manifest passes {option}, which `sipflow run` does not have");
    }
}

/// docs/architecture.md names every test module there is (they drifted once:
/// the list named 11 of 20).
#[test]
fn the_docs_name_every_test_module() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = std::fs::read_to_string(dir.join("suite.rs")).unwrap();
    let docs = std::fs::read_to_string(dir.join("../docs/architecture.md")).unwrap();
    let modules: Vec<&str> = suite.lines().filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';')).collect();
    assert!(modules.len() >= 20, "suite.rs's modules: {modules:?}");
    for module in modules {
        assert!(docs.contains(module), "docs/architecture.md does not name the test module {module}");
    }
}
