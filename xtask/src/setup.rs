//! Installs, idempotently, what sipflow's kernel side and its lab need on a
//! Debian or Ubuntu host (docs/architecture.md, "Building"):
//!
//! - a compiler that can build `core` for the BPF target: a rustup nightly with
//!   rust-src where one is installed, else Debian's rustc-web + rust-web-src,
//!   linked into rustup as the toolchain `bpf-debian`;
//! - bpf-linker (built against Debian's LLVM 22 on the Debian route);
//! - the lab's tools: iproute2, sipp, tshark, Kamailio with its outbound
//!   module as the RFC 5626 edge proxy and registrar, and baresip as a real UA.
//!
//! Every step checks first and does nothing when its result is there.

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::command::run;

#[path = "../../monitor/rust_src.rs"]
mod rust_src;

const LINKED_TOOLCHAIN: &str = "bpf-debian";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian's compiler, standard library source and LLVM for bpf-linker.
const TOOLCHAIN_PACKAGES: &[&str] =
    &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];
/// What the tests and the demo run: namespaces, real SIP peers (baresip-core: the
/// baresip UA and its modules, no GUI), a reference counter; promtool (in
/// `prometheus`) checks the alert rules; nftables makes a lossy link.
const LAB_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "sip-tester",
    "tshark",
    "kamailio",
    "kamailio-outbound-modules",
    "kamailio-tls-modules",
    // websocket.so: the lab's ws and wss listeners (xhttp.so comes with kamailio itself).
    "kamailio-websocket-modules",
    "baresip-core",
    // The lab's TLS: certificates for Kamailio, and the UAs' OpenSSL (the openssl crate links it).
    "openssl",
    "libssl-dev",
    // nft: the lab's lossy link (this kernel has no netem; nftables drops at random instead).
    "nftables",
    "pkg-config",
    "prometheus",
];
/// Keeps apt from starting the daemons it installs (Kamailio, Prometheus): the
/// tests start their own, in namespaces. Debian's invoke-rc.d asks this script.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn setup() -> Result<()> {
    let nightly = toolchain_listed("nightly") && has_rust_src("nightly");
    let mut packages: Vec<&str> = LAB_PACKAGES.to_vec();
    if !nightly {
        packages.extend_from_slice(TOOLCHAIN_PACKAGES);
    }
    apt_install(&packages)?;
    if !nightly && !toolchain_listed(LINKED_TOOLCHAIN) {
        run("rustup", &["toolchain", "link", LINKED_TOOLCHAIN, "/usr"], &[])?;
    }
    if !nightly && !has_rust_src(LINKED_TOOLCHAIN) {
        bail!("the toolchain {LINKED_TOOLCHAIN} has no standard library source; is rust-web-src installed?");
    }
    if !bpf_linker_installed() {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute and a half)");
        let version = format!("={BPF_LINKER_VERSION}");
        if nightly {
            run("cargo", &["install", "bpf-linker", "--locked", "--version", &version], &[])?;
        } else {
            run(
                "cargo",
                &[
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    &version,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ],
                &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
            )?;
        }
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("install these packages with your distribution's tools: {}", missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    run("apt-get", &["update", "-q"], &noninteractive)?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(&missing);
    let ours = !Path::new(POLICY_RC_D).exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(POLICY_RC_D, "#!/bin/sh\n# cargo xtask setup: no daemon starts while it installs\nexit 101\n")?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = run("apt-get", &args, &noninteractive);
    if ours {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    installed
}

fn toolchain_listed(name: &str) -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with(name)))
}

fn has_rust_src(toolchain: &str) -> bool {
    toolchain_listed(toolchain) && rust_src::has_rust_src(toolchain)
}

fn bpf_linker_installed() -> bool {
    Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success())
}
