//! Running a program, and failing with its name when it fails: the one way
//! xtask runs cargo, apt, rustup and the built binaries.

use std::{ffi::OsStr, process::Command};

use anyhow::{Context, Result, bail};

/// Runs `program args` with `env` added, its output passed through.
pub fn run(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let name = program.as_ref().to_string_lossy().into_owned();
    let status =
        Command::new(&program).args(args).envs(env.iter().copied()).status().with_context(|| format!("run {name}"))?;
    if !status.success() {
        bail!("{name} {} failed", args.join(" "));
    }
    Ok(())
}

/// Runs `program args` and returns what it printed.
pub fn output(program: impl AsRef<OsStr>, args: &[&str]) -> Result<Vec<u8>> {
    let name = program.as_ref().to_string_lossy().into_owned();
    let out = Command::new(&program).args(args).output().with_context(|| format!("run {name}"))?;
    if !out.status.success() {
        bail!("{name} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// The cargo that runs xtask.
pub fn cargo(args: &[&str]) -> Result<()> {
    run(env!("CARGO"), args, &[]).with_context(|| format!("cargo {} failed", args.join(" ")))
}

pub fn require_root(why: &str) -> Result<()> {
    let uid = output("id", &["-u"])?;
    if String::from_utf8_lossy(&uid).trim() != "0" {
        bail!("run this as root ({why}), e.g. `sudo -E cargo xtask ...`");
    }
    Ok(())
}
