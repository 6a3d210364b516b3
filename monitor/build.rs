//! Builds the kernel programs (monitor-ebpf) for the BPF target and leaves the
//! object in OUT_DIR, where src/kernel/object.rs embeds it.
//!
//! The BPF target needs a compiler with the standard library's source (for
//! `-Z build-std=core`) and bpf-linker. Two set-ups are accepted, in order:
//! a rustup nightly with rust-src, or the toolchain `bpf-debian` that
//! `cargo xtask setup` links from Debian's rustc-web + rust-web-src (a stable
//! compiler, so RUSTC_BOOTSTRAP=1 unlocks `-Z`). SIPFLOW_EBPF_TOOLCHAIN names
//! another linked toolchain.

use std::{env, path::Path, process::Command};

use aya_build::{Package, Toolchain};

#[path = "rust_src.rs"]
mod rust_src;
use rust_src::has_rust_src;

const LINKED_TOOLCHAIN: &str = "bpf-debian";
const OBJECT_NAME: &str = "sipflow-ebpf";

fn main() {
    println!("cargo:rerun-if-env-changed=SIPFLOW_EBPF_TOOLCHAIN");
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    if skipped() {
        // clippy and docs runs: an empty object keeps the crate compiling; loading it fails plainly.
        std::fs::write(Path::new(&out_dir).join(OBJECT_NAME), []).expect("write OUT_DIR");
    }
    let toolchain = match choose_toolchain() {
        Ok(toolchain) => toolchain,
        Err(missing) => {
            eprintln!(
                "error: sipflow's kernel programs cannot be built: {missing}; run `cargo xtask setup` once, then build again"
            );
            std::process::exit(1);
        }
    };
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitor-ebpf");
    let root_dir = root_dir.to_str().expect("UTF-8 path");
    let package = Package { name: "monitor-ebpf", root_dir, ..Default::default() };
    // aya-build relays the kernel build's output as cargo warnings: a cold
    // build printed ~150 `warning: monitor@0.1.0: Compiling ...` lines. Quiet,
    // the inner cargo prints only what went wrong (its errors and warnings).
    // SAFETY: build scripts are single-threaded here; the inner cargo inherits it.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    if let Err(err) = aya_build::build_ebpf([package], Toolchain::Custom(&toolchain)) {
        eprintln!("error: building the kernel programs failed: {err:#}");
        std::process::exit(1);
    }
}

fn skipped() -> bool {
    env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The toolchain to build the BPF target with, or what is missing.
fn choose_toolchain() -> Result<String, String> {
    if skipped() {
        return Ok(LINKED_TOOLCHAIN.into());
    }
    if which::which("bpf-linker").is_err() {
        return Err("bpf-linker is not on PATH".into());
    }
    if let Ok(named) = env::var("SIPFLOW_EBPF_TOOLCHAIN") {
        return Ok(named);
    }
    let installed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .map_err(|_| "rustup is not on PATH".to_string())?;
    let has = |name: &str| installed.lines().any(|l| l.starts_with(name));
    if has("nightly") && has_rust_src("nightly") {
        return Ok("nightly".into());
    }
    if has(LINKED_TOOLCHAIN) && has_rust_src(LINKED_TOOLCHAIN) {
        // A stable compiler: let it take -Z build-std. aya-build passes this on to the nested cargo.
        // SAFETY: the build script is single-threaded.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
        return Ok(LINKED_TOOLCHAIN.into());
    }
    Err("no toolchain with the standard library's source (a nightly with rust-src, or the linked `bpf-debian`) was found".into())
}
