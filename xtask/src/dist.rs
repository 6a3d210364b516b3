//! `cargo xtask dist`: a Debian package in target/dist/ with the release
//! binary (its kernel programs embedded), the systemd unit and its files, the
//! Prometheus rules, the Grafana dashboard, the Kubernetes manifests, the man
//! page and the shell completions, all generated or copied from this tree.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::command::output;

const MAINTAINER: &str = "sipflow developers <sipflow@example.invalid>";

/// Builds the release binary and packages it.
pub fn dist() -> Result<()> {
    crate::command::cargo(&["build", "--release", "-p", "monitor"])?;
    let deb = package(&workspace().join("target/release/sipflow"), &workspace().join("target/dist"))?;
    println!("{}", deb.display());
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    fs::create_dir_all(path.parent().expect("a parent"))?;
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Packages `binary` as target/dist/sipflow_VERSION_ARCH.deb in `out`; returns its path.
pub fn package(binary: &Path, out: &Path) -> Result<PathBuf> {
    let deploy = workspace().join("deploy");
    let version_line = String::from_utf8(output(binary, &["--version"])?)?;
    let version = version_line.split_whitespace().nth(1).context("sipflow --version prints no version")?.to_string();
    let arch = String::from_utf8(output(Path::new("dpkg"), &["--print-architecture"])?)?.trim().to_string();
    let name = format!("sipflow_{version}_{arch}");
    let root = out.join(&name);
    let _ = fs::remove_dir_all(&root);

    write(&root.join("usr/bin/sipflow"), &fs::read(binary)?, 0o755)?;
    let copies = [
        ("systemd/sipflow.service", "lib/systemd/system/sipflow.service"),
        ("systemd/sipflow.default", "etc/default/sipflow"),
        ("sipflow.toml", "etc/sipflow/sipflow.toml"),
        ("prometheus/sipflow.rules.yml", "usr/share/sipflow/prometheus/sipflow.rules.yml"),
        ("prometheus/sipflow.rules.test.yml", "usr/share/sipflow/prometheus/sipflow.rules.test.yml"),
        ("prometheus/scrape.yml", "usr/share/sipflow/prometheus/scrape.yml"),
        ("grafana/sipflow-dashboard.json", "usr/share/sipflow/grafana/sipflow-dashboard.json"),
        ("kubernetes/sipflow.yaml", "usr/share/sipflow/kubernetes/sipflow.yaml"),
        ("README.md", "usr/share/doc/sipflow/deploy.md"),
    ];
    for (from, to) in copies {
        write(&root.join(to), &fs::read(deploy.join(from)).with_context(|| format!("read deploy/{from}"))?, 0o644)?;
    }
    write(&root.join("usr/share/doc/sipflow/README.md"), &fs::read(workspace().join("README.md"))?, 0o644)?;
    // The references the README points to, beside it as in the repository.
    for entry in fs::read_dir(workspace().join("docs")).context("read docs/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().context("a file name")?;
            write(&root.join("usr/share/doc/sipflow/docs").join(name), &fs::read(&path)?, 0o644)?;
        }
    }

    // The man pages and the completions, from the clap definitions of this very binary.
    for command in ["", "run", "flows", "check", "detach"] {
        let args: Vec<&str> = ["manpage", command].into_iter().filter(|a| !a.is_empty()).collect();
        let page = if command.is_empty() { "sipflow".to_string() } else { format!("sipflow-{command}") };
        let man = output(binary, &args)?;
        let mut gzip = Command::new("gzip")
            .args(["-9n"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(gzip.stdin.as_mut().expect("stdin"), &man)?;
        let gz = gzip.wait_with_output()?;
        write(&root.join(format!("usr/share/man/man1/{page}.1.gz")), &gz.stdout, 0o644)?;
    }
    for (shell, to) in [
        ("bash", "usr/share/bash-completion/completions/sipflow"),
        ("zsh", "usr/share/zsh/vendor-completions/_sipflow"),
        ("fish", "usr/share/fish/vendor_completions.d/sipflow.fish"),
    ] {
        write(&root.join(to), &output(binary, &["completions", shell])?, 0o644)?;
    }

    let control = format!(
        "Package: sipflow\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
         Depends: iproute2\nSection: net\nPriority: optional\nHomepage: https://example.invalid/sipflow\n\
         Description: passive SIP flow monitor (XDP) with RFC 5626 flow verdicts\n \
         An XDP program classifies SIP, RFC 5626 keepalives and STUN per flow; the agent\n \
         exports Prometheus metrics and the flows an edge proxy would answer 430 for.\n"
    );
    write(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    write(&root.join("DEBIAN/conffiles"), b"/etc/default/sipflow\n/etc/sipflow/sipflow.toml\n", 0o644)?;
    let postinst = "#!/bin/sh\nset -e\n\
        # The unit runs the agent as this user, with three capabilities (deploy/systemd).\n\
        if [ \"$1\" = configure ] && ! getent passwd sipflow >/dev/null; then\n\
        \tadduser --system --group --no-create-home --home /nonexistent --quiet sipflow\n\
        fi\n\
        if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n";
    write(&root.join("DEBIAN/postinst"), postinst.as_bytes(), 0o755)?;
    let prerm = "#!/bin/sh\nset -e\n\
        if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then systemctl stop sipflow || true; fi\n";
    write(&root.join("DEBIAN/prerm"), prerm.as_bytes(), 0o755)?;

    let deb = out.join(format!("{name}.deb"));
    let built = Command::new("dpkg-deb").args(["--root-owner-group", "--build"]).arg(&root).arg(&deb).output()?;
    if !built.status.success() {
        bail!("dpkg-deb failed: {}", String::from_utf8_lossy(&built.stderr));
    }
    Ok(deb)
}

/// The package's checks, for `cargo xtask test`: built from the debug binary,
/// it holds every file, installs nothing, and its binary runs.
pub fn check(binary: &Path) -> Result<()> {
    let out = workspace().join("target/dist-check");
    let deb = package(binary, &out)?;
    let listing =
        String::from_utf8(output(Path::new("dpkg-deb"), &["--contents", deb.to_str().context("UTF-8 path")?])?)?;
    for file in [
        "./usr/bin/sipflow",
        "./lib/systemd/system/sipflow.service",
        "./etc/sipflow/sipflow.toml",
        "./etc/default/sipflow",
        "./usr/share/sipflow/prometheus/sipflow.rules.yml",
        "./usr/share/sipflow/grafana/sipflow-dashboard.json",
        "./usr/share/man/man1/sipflow.1.gz",
        "./usr/share/man/man1/sipflow-run.1.gz",
        "./usr/share/bash-completion/completions/sipflow",
        "./usr/share/doc/sipflow/README.md",
        "./usr/share/doc/sipflow/docs/options.md",
        "./usr/share/doc/sipflow/docs/metrics.md",
    ] {
        if !listing.lines().any(|l| l.ends_with(file)) {
            bail!("the package lacks {file}");
        }
    }
    let unpacked = out.join("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    output(
        Path::new("dpkg-deb"),
        &["-x", deb.to_str().context("UTF-8 path")?, unpacked.to_str().context("UTF-8 path")?],
    )?;
    let version = output(unpacked.join("usr/bin/sipflow"), &["--version"])?;
    if !String::from_utf8_lossy(&version).starts_with("sipflow ") {
        bail!("the packaged binary does not run");
    }
    println!("dist: {} holds the binary, unit, config, rules, dashboard, man page and completions", deb.display());
    Ok(())
}
