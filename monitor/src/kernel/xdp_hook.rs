//! Which program, if any, holds an interface's XDP hook: so that sipflow
//! never replaces someone else's program unasked. Read through iproute2
//! (`ip -json link show`), which asks the kernel over rtnetlink; the program's
//! name is there when the caller may read it (CAP_SYS_ADMIN), its id always.

use std::process::Command;

/// A program attached to an interface's XDP hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpProgram {
    pub id: u64,
    pub name: Option<String>,
    /// `native`, `generic` or `offload` (IFLA_XDP_ATTACHED 1, 2, 3).
    pub mode: &'static str,
}

impl XdpProgram {
    /// "program 42 (`xdp_fw`, generic)".
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("program {} (`{name}`, {})", self.id, self.mode),
            None => format!("program {} ({})", self.id, self.mode),
        }
    }
}

/// The XDP program attached to `iface`, if any. An interface `ip` cannot show has none.
pub fn attached(iface: &str) -> Option<XdpProgram> {
    let output = Command::new("ip").args(["-json", "link", "show", "dev", iface]).output().ok()?;
    parse(&String::from_utf8_lossy(&output.stdout))
}

fn parse(json: &str) -> Option<XdpProgram> {
    let links: serde_json::Value = serde_json::from_str(json).ok()?;
    let xdp = links.get(0)?.get("xdp")?;
    // Several modes at once (IFLA_XDP_ATTACHED_MULTI, 4) list each under "attached".
    let entry = match xdp.get("mode").and_then(|m| m.as_u64()) {
        Some(4) => xdp.get("attached")?.get(0)?,
        _ => xdp,
    };
    let mode = match entry.get("mode").and_then(|m| m.as_u64()) {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offload",
        _ => "unknown mode",
    };
    let prog = entry.get("prog")?;
    Some(XdpProgram {
        id: prog.get("id")?.as_u64()?,
        name: prog.get("name").and_then(|n| n.as_str()).map(str::to_string),
        mode,
    })
}

/// Why another program could not be taken off the hook.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("cannot run ip (iproute2)")]
    Ip(#[source] std::io::Error),
    #[error(
        "{program} stays attached ({said}); it is probably held by a BPF link: detach it with the tool that attached it"
    )]
    Stays { program: String, said: String },
}

/// Removes a program attached through netlink (`--replace`). One held by a
/// BPF link cannot be removed this way; the kernel says so and we pass it on.
pub fn remove(iface: &str, program: &XdpProgram) -> Result<(), RemoveError> {
    let hook = match program.mode {
        "native" => "xdpdrv",
        "offload" => "xdpoffload",
        _ => "xdpgeneric",
    };
    let output =
        Command::new("ip").args(["link", "set", "dev", iface, hook, "off"]).output().map_err(RemoveError::Ip)?;
    if output.status.success() && attached(iface).is_none() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(RemoveError::Stays {
        program: program.describe(),
        said: if said.is_empty() { "no error from ip".into() } else { said },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_iproute2_prints() {
        let root = r#"[{"ifindex":2,"ifname":"eth0","xdp":{"mode":1,"prog":{"id":523,"name":"fw","tag":"61","jited":1},"attached":[{"mode":1,"prog":{"id":523}}]}}]"#;
        assert_eq!(parse(root), Some(XdpProgram { id: 523, name: Some("fw".into()), mode: "native" }));
        let unprivileged =
            r#"[{"ifname":"eth0","xdp":{"mode":2,"prog":{"id":527},"attached":[{"mode":2,"prog":{"id":527}}]}}]"#;
        assert_eq!(parse(unprivileged).unwrap().describe(), "program 527 (generic)");
        let multi =
            r#"[{"xdp":{"mode":4,"attached":[{"mode":2,"prog":{"id":9,"name":"a"}},{"mode":1,"prog":{"id":10}}]}}]"#;
        assert_eq!(parse(multi).unwrap().id, 9);
        assert_eq!(parse(r#"[{"ifname":"eth0","flags":[]}]"#), None);
        assert_eq!(parse(""), None);
    }
}
