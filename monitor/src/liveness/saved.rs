//! The bindings, saved to a file so that an agent restarted or upgraded goes
//! on judging the flows they were made over: a REGISTER is sent once an hour,
//! and without its binding a failed flow would not be known to warrant 430.
//!
//! Times are CLOCK_BOOTTIME nanoseconds, as the kernel stamps them: the file
//! holds the boot it was written in, and a file from an earlier boot (whose
//! flows are gone anyway) is not read.

use std::{io, path::Path};

use monitor_common::flow::FlowKey;
use serde::{Deserialize, Serialize};

use super::registrations::{Binding, BindingKey, FlowId};

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
    /// `+sip.instance` and `reg-id` of an outbound binding, or the Contact URI of a plain one.
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
    if hex.len() != 2 * size_of::<FlowKey>() {
        return None;
    }
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect::<Option<_>>()?;
    // SAFETY: exactly size_of::<FlowKey>() bytes, and every bit pattern is a valid FlowKey.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowKey>()) })
}

/// Writes the bindings to `path` (through a temporary file and a rename, so
/// that a crash never leaves half a file).
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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("partial");
    // Compact and streamed: a registrar's million bindings are a file of
    // hundreds of MB pretty-printed, and a copy of it in memory.
    let mut out = io::BufWriter::new(std::fs::File::create(&partial)?);
    serde_json::to_writer(&mut out, &file).map_err(io::Error::other)?;
    io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&partial, path)
}

/// What was saved at `path` in this boot; nothing when there is no such file.
pub fn load(path: &Path) -> io::Result<Saved> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
        Err(e) => return Err(e),
    };
    let file: SavedFile = serde_json::from_str(&text).map_err(io::Error::other)?;
    if file.boot_id != boot_id() {
        return Ok(Saved::default());
    }
    let bindings = file
        .bindings
        .into_iter()
        .filter_map(|s| {
            let key = match (s.instance, s.reg_id, s.contact) {
                (Some(instance), Some(reg_id), _) => BindingKey::outbound(&s.aor, &instance, reg_id)?,
                (_, _, Some(contact)) => BindingKey::plain(&s.aor, &contact),
                _ => return None,
            };
            let flow = FlowId { iface: s.iface, key: key_from_hex(&s.flow)? };
            let by_flow = s.by_flow || key.is_outbound();
            Some((key, Binding { flow, expires_at_ns: s.expires_at_ns, flow_timer: s.flow_timer, by_flow }))
        })
        .collect();
    Ok(Saved { bindings, swept_until_ns: file.swept_until_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_round_trip_through_the_file() {
        let key = FlowKey {
            server_addr: [1; 16],
            client_addr: [2; 16],
            server_port: 5060,
            client_port: 40000,
            vlan_id: 7,
            family: 6,
            transport: 1,
        };
        let flow = FlowId { iface: "eth0".into(), key };
        let bindings = vec![
            (
                BindingKey::outbound("sip:a@b", "<urn:uuid:1>", 1).unwrap(),
                Binding { flow: flow.clone(), expires_at_ns: 5, flow_timer: Some(25), by_flow: true },
            ),
            (
                BindingKey::plain("sip:c@d", "sip:c@192.0.2.1"),
                Binding { flow, expires_at_ns: 9, flow_timer: None, by_flow: false },
            ),
        ];
        let path = std::env::temp_dir().join(format!("sipflow-saved-{}.json", std::process::id()));
        save(&path, bindings.iter().map(|(k, b)| (k, b.clone())), 77).unwrap();
        let saved = load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(saved.swept_until_ns, 77);
        let mut back = saved.bindings;
        back.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = bindings;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        assert_eq!(load(&path).unwrap(), Saved::default(), "no file, nothing");
    }
}
