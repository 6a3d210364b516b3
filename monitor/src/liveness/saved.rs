//! The bindings, saved to a file so that an agent restarted or upgraded goes
//! on judging the flows they were made over: a REGISTER is sent once an hour,
//! and without its binding a failed flow would not be known to warrant 430.
//!
//! Times are CLOCK_BOOTTIME nanoseconds, as the kernel stamps them: the file
//! holds the boot it was written in, and a file from an earlier boot (whose
//! flows are gone anyway) is not read.

use std::{
    io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use monitor_common::flow::FlowKey;
use serde::{Deserialize, Serialize};

use super::registrations::{Binding, BindingKey, FlowId, MAX_EXPIRES};

const NS_PER_S: u64 = 1_000_000_000;

#[derive(Serialize, Deserialize)]
struct SavedFile {
    boot_id: String,
    /// The agent had reported every failure up to this time (its last sweep).
    #[serde(default)]
    swept_until_ns: u64,
    bindings: Vec<SavedBinding>,
}

/// What an agent leaves for the next one.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    pub bindings: Vec<(BindingKey, Binding)>,
    pub swept_until_ns: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedBinding {
    aor: String,
    /// `+sip.instance` and `reg-id` of an outbound binding, or the Contact URI
    /// of a plain one (with the instance its contact carried, if any).
    instance: Option<String>,
    reg_id: Option<u32>,
    contact: Option<String>,
    iface: String,
    /// The flow key's bytes, hex: the kernel's own layout.
    flow: String,
    expires_at_ns: u64,
    flow_timer: Option<u32>,
    /// Routed by its flow (see `Binding::by_flow`); older files lack it.
    #[serde(default)]
    by_flow: bool,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

fn key_to_hex(key: &FlowKey) -> String {
    // SAFETY: FlowKey is a `#[repr(C)]` plain-old-data type without padding holes
    // the kernel would not also hash; its bytes are its identity in the map.
    let bytes = unsafe { std::slice::from_raw_parts((key as *const FlowKey).cast::<u8>(), size_of::<FlowKey>()) };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_from_hex(hex: &str) -> Option<FlowKey> {
    if !hex.is_ascii() || hex.len() != 2 * size_of::<FlowKey>() {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect::<Option<_>>()?;
    // SAFETY: exactly size_of::<FlowKey>() bytes, and every bit pattern is a valid FlowKey.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowKey>()) })
}

/// Bytes a saved binding may take on average, at most: a file larger than
/// this many per binding the agent may keep is not read.
const MOST_BYTES_PER_BINDING: u64 = 4096;

/// Writes the bindings to `path`: into a temporary file of its own (created
/// anew, never through a link, readable by root alone), synced, then renamed
/// over `path`, so that a crash never leaves half a file.
pub fn save<K: std::borrow::Borrow<BindingKey>>(
    path: &Path,
    bindings: impl Iterator<Item = (K, Binding)>,
    swept_until_ns: u64,
) -> io::Result<()> {
    let bindings = bindings
        .map(|(key, b)| {
            let key: &BindingKey = key.borrow();
            SavedBinding {
                aor: key.aor().to_string(),
                instance: key.instance().map(str::to_string),
                reg_id: key.reg_id(),
                contact: key.contact().map(str::to_string),
                iface: b.flow.iface,
                flow: key_to_hex(&b.flow.key),
                expires_at_ns: b.expires_at_ns,
                flow_timer: b.flow_timer,
                by_flow: b.by_flow,
            }
        })
        .collect();
    let file = SavedFile { boot_id: boot_id(), swept_until_ns, bindings };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let temporary = temporary_path(path);
    let written = (|| {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)?;
        // Compact and streamed: a registrar's million bindings are a file of
        // hundreds of MB pretty-printed, and a copy of it in memory.
        let mut out = io::BufWriter::new(created);
        serde_json::to_writer(&mut out, &file).map_err(io::Error::other)?;
        io::Write::flush(&mut out)?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    // The rename itself survives a crash once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// `.NAME.PID.N.tmp` beside `path`: no other writer, and no link planted in
/// advance, has that name (create_new refuses an existing one).
fn temporary_path(path: &Path) -> std::path::PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or_else(|| "registrations".into(), |n| n.to_string_lossy());
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Why a state file was not taken over.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read it: {0}")]
    Read(#[from] io::Error),
    #[error("it is not a regular file (a link or a directory); it was left alone")]
    NotAFile,
    #[error("it is {size} bytes, more than {limit} for --max-bindings; it was left alone")]
    TooLarge { size: u64, limit: u64 },
    #[error("it is not a sipflow state file ({reason}); moved aside to {moved}")]
    Corrupt { reason: String, moved: String },
}

/// What was saved at `path` in this boot; nothing when there is no such file.
/// The file is read as untrusted: never through a link, no larger than
/// `max_bindings` can justify, a corrupt one moved aside; times are bounded by
/// `now_ns` (no binding outlives a day from now, no later sweep than now) and
/// bindings of interfaces not in `ifaces` are dropped.
pub fn load(path: &Path, now_ns: u64, max_bindings: u32, ifaces: &[String]) -> Result<Saved, LoadError> {
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(LoadError::NotAFile),
        Err(e) => return Err(e.into()),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(LoadError::NotAFile);
    }
    let limit = u64::from(max_bindings).saturating_mul(MOST_BYTES_PER_BINDING).max(1 << 20);
    if metadata.len() > limit {
        return Err(LoadError::TooLarge { size: metadata.len(), limit });
    }
    let file: SavedFile = match serde_json::from_reader(io::BufReader::new(file)) {
        Ok(file) => file,
        Err(e) => {
            let moved = path.with_extension("corrupt");
            std::fs::rename(path, &moved)?;
            return Err(LoadError::Corrupt { reason: e.to_string(), moved: moved.display().to_string() });
        }
    };
    if file.boot_id != boot_id() {
        return Ok(Saved::default());
    }
    let latest_expiry_ns = now_ns.saturating_add(u64::from(MAX_EXPIRES) * NS_PER_S);
    let bindings = file
        .bindings
        .into_iter()
        .filter(|s| ifaces.contains(&s.iface))
        .filter_map(|s| {
            let key = match (s.instance, s.reg_id, s.contact) {
                (Some(instance), Some(reg_id), _) => BindingKey::outbound(&s.aor, &instance, reg_id)?,
                (Some(instance), None, Some(contact)) => BindingKey::plain_of_instance(&s.aor, &contact, &instance),
                (None, _, Some(contact)) => BindingKey::plain(&s.aor, &contact),
                _ => return None,
            };
            let flow = FlowId { iface: s.iface, key: key_from_hex(&s.flow)? };
            let by_flow = s.by_flow || key.is_outbound();
            let expires_at_ns = s.expires_at_ns.min(latest_expiry_ns);
            Some((key, Binding { flow, expires_at_ns, flow_timer: s.flow_timer, by_flow }))
        })
        .take(max_bindings as usize)
        .collect();
    Ok(Saved { bindings, swept_until_ns: file.swept_until_ns.min(now_ns) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// CLOCK_BOOTTIME of the tests: an hour after boot.
    const NOW: u64 = 3600 * NS_PER_S;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sipflow-saved-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn flow_key(vlan_id: u16, family: u8) -> FlowKey {
        FlowKey {
            server_addr: [1; 16],
            client_addr: [2; 16],
            server_port: 5060,
            client_port: 40000,
            vlan_id,
            family,
            transport: 1,
        }
    }

    fn one_binding(iface: &str, expires_at_ns: u64) -> Vec<(BindingKey, Binding)> {
        let flow = FlowId { iface: iface.into(), key: flow_key(0, 4) };
        let binding = Binding { flow, expires_at_ns, flow_timer: None, by_flow: true };
        vec![(BindingKey::outbound("sip:a@b", "<urn:uuid:1>", 1).unwrap(), binding)]
    }

    fn write_text(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_file_is_root_s_alone_and_written_over_a_link_not_through_it() {
        let dir = scratch("mode");
        let (path, victim) = (dir.join("registrations.json"), dir.join("victim"));
        write_text(&victim, "keep me");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        save(&path, one_binding("eth0", NOW).into_iter(), 0).unwrap();
        let (kept, meta) = (std::fs::read_to_string(&victim).unwrap(), std::fs::symlink_metadata(&path).unwrap());
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(kept, "keep me");
        assert!(meta.file_type().is_file(), "the link was replaced by the file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(leftovers, 2, "no temporary file left behind");
    }

    #[test]
    fn a_link_is_not_read_and_a_corrupt_file_is_moved_aside() {
        let dir = scratch("hostile");
        let path = dir.join("registrations.json");
        save(&dir.join("real.json"), one_binding("eth0", NOW).into_iter(), 0).unwrap();
        std::os::unix::fs::symlink(dir.join("real.json"), &path).unwrap();
        let through_link = load(&path, NOW, 10, &["eth0".into()]);
        std::fs::remove_file(&path).unwrap();
        write_text(&path, "{\"boot_id\": 7");
        let corrupt = load(&path, NOW, 10, &["eth0".into()]);
        let (moved, left) = (dir.join("registrations.corrupt").exists(), path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(through_link, Err(LoadError::NotAFile)), "{through_link:?}");
        assert!(matches!(corrupt, Err(LoadError::Corrupt { .. })), "{corrupt:?}");
        assert_eq!((moved, left), (true, false));
    }

    #[test]
    fn times_are_bounded_by_now_and_foreign_interfaces_dropped() {
        let dir = scratch("bounds");
        let path = dir.join("registrations.json");
        let mut bindings = one_binding("eth0", u64::MAX);
        bindings.extend(one_binding("other0", NOW));
        save(&path, bindings.into_iter(), u64::MAX).unwrap();
        let saved = load(&path, NOW, 10, &["eth0".into()]).unwrap();
        // Non-ASCII where the flow's hex goes: the binding is dropped, nothing panics.
        let text = std::fs::read_to_string(&path).unwrap();
        let hex = key_to_hex(&one_binding("eth0", 0)[0].1.flow.key);
        let odd = format!("a{}a", "\u{e9}".repeat(hex.len() / 2 - 1));
        write_text(&path, &text.replace(&hex, &odd));
        let odd_flow = load(&path, NOW, 10, &["eth0".into()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(saved.swept_until_ns, NOW, "a sweep later than now would silence verdicts");
        assert_eq!(saved.bindings.len(), 1, "only the monitored interface's");
        assert_eq!(saved.bindings[0].1.expires_at_ns, NOW + u64::from(MAX_EXPIRES) * NS_PER_S);
        assert_eq!(odd_flow.bindings.len(), 0);
    }

    /// Random mutations of a real file: each is taken, refused or moved aside, never a panic.
    #[test]
    fn random_state_files_never_panic() {
        let dir = scratch("fuzz");
        let path = dir.join("registrations.json");
        let mut bindings = one_binding("eth0", NOW);
        bindings.extend(one_binding("eth1", NOW * 2));
        save(&path, bindings.into_iter(), NOW / 2).unwrap();
        let original = std::fs::read(&path).unwrap();
        let alphabet = "{}[]\":,0123456789abcdef-e.\u{e9}\u{0} ntrul".as_bytes();
        let mut rng = fastrand::Rng::with_seed(0x5a7e_f11e_0000_0001);
        for _ in 0..2_000 {
            let mut text = original.clone();
            for _ in 0..1 + rng.usize(..6) {
                let (at, byte) = (rng.usize(..text.len()), alphabet[rng.usize(..alphabet.len())]);
                match rng.usize(..3) {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            std::fs::write(&path, &text).unwrap();
            if let Ok(saved) = load(&path, NOW, 4, &["eth0".into(), "eth1".into()]) {
                assert!(saved.swept_until_ns <= NOW && saved.bindings.len() <= 4);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bindings_round_trip_through_the_file() {
        let flow = FlowId { iface: "eth0".into(), key: flow_key(7, 6) };
        let bindings = vec![
            (
                BindingKey::outbound("sip:a@b", "<urn:uuid:1>", 1).unwrap(),
                Binding { flow: flow.clone(), expires_at_ns: 5, flow_timer: Some(25), by_flow: true },
            ),
            (
                BindingKey::plain("sip:c@d", "sip:c@192.0.2.1"),
                Binding { flow: flow.clone(), expires_at_ns: 9, flow_timer: None, by_flow: false },
            ),
            (
                BindingKey::plain_of_instance("sip:e@d", "sip:e@192.0.2.1", "<urn:uuid:2>"),
                Binding { flow, expires_at_ns: 9, flow_timer: None, by_flow: true },
            ),
        ];
        let path = std::env::temp_dir().join(format!("sipflow-saved-{}.json", std::process::id()));
        save(&path, bindings.iter().map(|(k, b)| (k, b.clone())), 77).unwrap();
        let saved = load(&path, NOW, 10, &["eth0".into()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(saved.swept_until_ns, 77);
        let mut back = saved.bindings;
        back.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = bindings;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        let instances = |keys: &[(BindingKey, Binding)]| {
            keys.iter().map(|(k, _)| k.instance().map(str::to_string)).collect::<Vec<_>>()
        };
        assert_eq!(instances(&back), instances(&want), "a plain binding's instance too");
        assert_eq!(load(&path, NOW, 10, &["eth0".into()]).unwrap(), Saved::default(), "no file, nothing");
    }
}
