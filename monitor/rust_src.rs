//! Whether a rustup toolchain has the standard library's source, which the
//! BPF target's `-Z build-std=core` needs. One copy, read by both monitor's
//! build.rs and `cargo xtask setup` (each includes this file as a module).

use std::{path::Path, process::Command};

pub fn has_rust_src(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|sysroot| Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml").exists())
}
