//! `sipflow run --config FILE`: the options of `sipflow run` in a TOML file,
//! each key a long option with `_` for `-` (deploy/sipflow.toml). The file's
//! options are put on the command line before the operator's own, and only
//! where the operator gave none: so flags win, and clap checks every value the
//! same way whether it came from the file or from the command line.

use std::{ffi::OsString, path::Path};

use clap::{ArgAction, CommandFactory};

/// How a key becomes options.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `key = "value"` or `key = 5`: `--key value`.
    Value,
    /// `key = ["a", "b"]`: `--key a --key b`.
    List,
    /// `key = true`: `--key`.
    Flag,
}

/// The options a file may set: every long option of `sipflow run` but
/// `--config` itself, read from the clap definition so that the two never
/// drift apart. Each as (key, clap id, kind).
fn keys() -> Vec<(String, String, Kind)> {
    let cli = crate::cli::Cli::command();
    let Some(run) = cli.find_subcommand("run") else {
        return Vec::new();
    };
    run.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long().filter(|l| !matches!(*l, "config" | "help"))?;
            let kind = match arg.get_action() {
                ArgAction::SetTrue => Kind::Flag,
                ArgAction::Append => Kind::List,
                _ => Kind::Value,
            };
            Some((long.replace('-', "_"), arg.get_id().to_string(), kind))
        })
        .collect()
}

/// What is wrong with a config file, as the one sentence the CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {file}: {source}; check the path given to --config")]
    Unreadable { file: String, source: std::io::Error },
    #[error("the config file {file} is not valid TOML{at}: {what}")]
    NotToml { file: String, at: String, what: String },
    #[error("the config file {file} has an unknown key `{key}`; the keys are {known}")]
    UnknownKey { file: String, key: String, known: String },
    #[error("the config file {file}: `{key}` must be {shape}")]
    WrongShape { file: String, key: String, shape: String },
}

/// The options `text` (the file at `path`) gives, skipping those for which
/// `given(clap id)` says the command line has its own.
pub fn options(path: &Path, text: &str, given: impl Fn(&str) -> bool) -> Result<Vec<OsString>, ConfigError> {
    let file = path.display().to_string();
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let line = e.span().map(|span| text[..span.start].lines().count().max(1));
        let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
        ConfigError::NotToml { file: file.clone(), at, what: what.trim_end_matches('.').to_string() }
    })?;
    let keys = keys();
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some((_, id, kind)) = keys.iter().find(|(k, _, _)| k == key) else {
            let known: Vec<&str> = keys.iter().map(|(k, _, _)| k.as_str()).collect();
            return Err(ConfigError::UnknownKey { file, key: key.clone(), known: known.join(", ") });
        };
        if given(id) {
            continue;
        }
        let option = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            _ => None,
        };
        let wrong =
            |shape: &str| ConfigError::WrongShape { file: file.clone(), key: key.clone(), shape: shape.to_string() };
        match kind {
            Kind::Flag => match value {
                toml::Value::Boolean(true) => out.push(option.into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(wrong("true or false")),
            },
            Kind::Value => {
                let value = scalar(value).ok_or_else(|| wrong("a string or a number"))?;
                out.extend([option.into(), value.into()]);
            }
            Kind::List => {
                let items = value.as_array().ok_or_else(|| wrong(&format!("a list, such as {key} = [...]")))?;
                for item in items {
                    let item = scalar(item).ok_or_else(|| wrong("a list of strings or numbers"))?;
                    out.extend([option.clone().into(), item.into()]);
                }
            }
        }
    }
    Ok(out)
}

/// The command line `args` (`sipflow run ...`) with the options of the file
/// at `path` inserted after `run`.
pub fn merge(path: &Path, args: Vec<OsString>, given: impl Fn(&str) -> bool) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Unreadable { file: path.display().to_string(), source })?;
    let from_file = options(path, &text, given)?;
    let run = args.iter().position(|a| a == "run").map_or(args.len(), |i| i + 1);
    let mut merged = args[..run].to_vec();
    merged.extend(from_file);
    merged.extend_from_slice(&args[run..]);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(text: &str, given: &[&str]) -> Result<Vec<String>, String> {
        options(Path::new("f.toml"), text, |id| given.contains(&id))
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_become_options() {
        let text = "iface = [\"eth0\", \"eth1\"]\nsip_port = [5060, 5080]\negress = true\nreplace = false\ngrace = \"5s\"\nmax_flows = 1000\n";
        assert_eq!(
            opts(text, &[]).unwrap(),
            [
                "--egress",
                "--grace",
                "5s",
                "--iface",
                "eth0",
                "--iface",
                "eth1",
                "--max-flows",
                "1000",
                "--sip-port",
                "5060",
                "--sip-port",
                "5080"
            ]
        );
    }

    #[test]
    fn flags_on_the_command_line_win() {
        assert_eq!(opts("iface = [\"eth0\"]\ngrace = \"5s\"\n", &["ifaces"]).unwrap(), ["--grace", "5s"]);
    }

    #[test]
    fn bad_files_get_one_sentence() {
        let unknown = opts("ifaces = [\"eth0\"]\n", &[]).unwrap_err();
        assert!(unknown.contains("unknown key `ifaces`") && unknown.contains("iface, sip_port"), "{unknown}");
        assert!(opts("iface = \"eth0\"\n", &[]).unwrap_err().contains("`iface` must be a list"));
        assert!(opts("egress = \"yes\"\n", &[]).unwrap_err().contains("true or false"));
        let syntax = opts("iface = [\n", &[]).unwrap_err();
        assert!(
            syntax.starts_with("the config file f.toml is not valid TOML at line 1") && !syntax.contains('\n'),
            "{syntax}"
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = include_str!("../../deploy/sipflow.toml");
        let merged = opts(example, &[]).unwrap();
        assert!(merged.windows(2).any(|w| w == ["--iface", "eth0"]), "{merged:?}");
    }

    /// A fixed number of random and mutated config files and command lines:
    /// each is accepted or refused with a message, never a panic.
    #[test]
    fn random_files_and_command_lines_never_panic() {
        use clap::Parser;
        let mut rng = fastrand::Rng::with_seed(0x5eed_0c0f_f1e5);
        let mut next = move || rng.u64(..);
        let words = [
            "run",
            "flows",
            "check",
            "detach",
            "-i",
            "--iface",
            "eth0",
            "--sip-port",
            "5060",
            "0",
            "70000",
            "--grace",
            "10s",
            "soon",
            "--listen",
            "1.2.3.4:9",
            "[::1]:9560",
            "--config",
            "--xdp-mode",
            "auto",
            "native",
            "--egress",
            "--max-flows",
            "16777217",
            "-1",
            "--",
            "=",
            "",
            "\u{0}",
            "--flow-timer",
            "5m",
            "99999999999h",
        ];
        for _ in 0..20_000 {
            let n = (next() % 8) as usize;
            let mut argv = vec!["sipflow".to_string()];
            argv.extend((0..n).map(|_| words[(next() % words.len() as u64) as usize].to_string()));
            let _ = crate::cli::Cli::try_parse_from(&argv);
        }
        let example = include_str!("../../deploy/sipflow.toml").as_bytes().to_vec();
        let alphabet = b"[]=\"'#\n :,.0123456789abcdefiltuxyz_-{}\\";
        for _ in 0..20_000 {
            let mut text = example.clone();
            for _ in 0..1 + next() % 6 {
                let at = (next() % text.len() as u64) as usize;
                let byte = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            let text = String::from_utf8_lossy(&text);
            if let Err(error) = options(Path::new("f.toml"), &text, |_| false) {
                let sentence = error.to_string();
                assert!(!sentence.contains('\n'), "one line: {sentence}");
            }
        }
    }

    #[test]
    fn file_options_go_after_run() {
        let dir = std::env::temp_dir().join(format!("sipflow-config-{}", std::process::id()));
        std::fs::write(&dir, "grace = \"3s\"\n").unwrap();
        let args: Vec<OsString> = ["sipflow", "run", "-i", "lo"].iter().map(Into::into).collect();
        let merged = merge(&dir, args, |_| false).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(merged, ["sipflow", "run", "--grace", "3s", "-i", "lo"]);
    }
}
