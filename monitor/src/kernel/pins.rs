//! What outlives the agent, in the BPF filesystem: per interface, the maps
//! (flows, counters, the ring buffer) and the links that keep the programs
//! attached. A restarted agent takes them over, so flow state and counts
//! survive it, and with `--keep-attached` packets are counted while it is away.
//!
//! Layout: `<root>/<iface>/v<SCHEMA>/` holds the maps by name, `xdp_link` and
//! `tc_link`. aya reuses a pinned map without checking its layout, so every
//! change to a map's key, value or size changes [`SCHEMA`], and the pins of an
//! older schema are removed rather than reused.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::kernel::bpf_syscall::{bpf, bpf_cmd, bpf_link_info, bpf_link_type, zeroed_attr};

/// The layout of the pinned maps; bump it with any change to their types.
pub const SCHEMA: u32 = 11;
/// Where the BPF filesystem is mounted, and where sipflow pins by default.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/sipflow";
/// `BPF_FS_MAGIC` of statfs(2).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub const XDP_LINK: &str = "xdp_link";
pub const TC_LINK: &str = "tc_link";

/// One interface's pins.
#[derive(Clone, Debug)]
pub struct Pins {
    /// `<root>/<iface>`: everything sipflow pinned for the interface.
    pub iface_dir: PathBuf,
    /// `<root>/<iface>/v<SCHEMA>`: this schema's maps and links.
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(root: &Path, iface: &str) -> Self {
        let iface_dir = root.join(iface);
        Self { dir: iface_dir.join(format!("v{SCHEMA}")), iface_dir }
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes the directory, after removing the pins of other schemas: their
    /// links go, so their programs detach.
    pub fn prepare(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.iface_dir) {
            for entry in entries.flatten() {
                if entry.path() != self.dir {
                    remove_tree(&entry.path())?;
                    removed.push(entry.path());
                }
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        Ok(removed)
    }

    /// Removes every pin of the interface: the links (so the programs
    /// detach, once no process holds them) and the maps. False when there was nothing.
    pub fn remove_all(&self) -> io::Result<bool> {
        if std::fs::symlink_metadata(&self.iface_dir).is_err() {
            return Ok(false);
        }
        remove_tree(&self.iface_dir)?;
        Ok(true)
    }
}

/// Whether each program is still attached to the interface, as
/// (`xdp` | `tc_egress`, attached): an interface can go away, and a link can
/// be detached from outside (bpftool link detach).
/// Before Linux 6.6 TC egress is a tc filter, not a pinned link
/// (`tc_pinned` false): it is attached while the agent runs.
pub fn programs_attached(pins: &Pins, ifindex: u32, egress: bool, tc_pinned: bool) -> Vec<(&'static str, bool)> {
    let on_interface = |name: &str| link_ifindex(&pins.link(name)).is_ok_and(|index| index == ifindex);
    let mut out = vec![("xdp", on_interface(XDP_LINK))];
    if egress {
        out.push(("tc_egress", !tc_pinned || on_interface(TC_LINK)));
    }
    out
}

/// bpffs holds no regular files: unlink each pin, then the directories. A
/// symbolic link is unlinked, never followed: what it points at stays.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path)?.file_type().is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Whether `path` lies on a mounted BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: an all-zero statfs is valid; statfs(2) fills it.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs to fill.
    unsafe { libc::statfs(c.as_ptr(), &mut fs) == 0 && fs.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts the BPF filesystem at /sys/fs/bpf where it is not mounted yet, as
/// systemd and most distributions do at boot. Needs CAP_SYS_ADMIN. True when
/// it mounted one.
pub fn ensure_bpffs() -> io::Result<bool> {
    // Threads of one process (tests) must not each mount one over the other.
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let at = Path::new(BPFFS);
    if is_bpffs(at) {
        return Ok(false);
    }
    let (source, target, kind, options) = (c"bpf", c"/sys/fs/bpf", c"bpf", c"mode=0700");
    // SAFETY: NUL-terminated strings; mount(2) only reads them.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), kind.as_ptr(), 0, options.as_ptr().cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Whether this process sees mounts of its own, apart from the host's (PID
/// 1's): `ip netns exec` gives the command a private mount namespace with a
/// /sys of its own, so a BPF filesystem mounted there, and every pin in it,
/// dies with the process. Unknown (no /proc/1 to compare with) counts as private.
pub fn private_mounts() -> bool {
    use std::os::unix::fs::MetadataExt;
    let namespace = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| (m.dev(), m.ino()));
    match (namespace("self"), namespace("1")) {
        (Ok(own), Ok(host)) => own != host,
        _ => true,
    }
}

/// Opens a pinned object (BPF_OBJ_GET).
fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    // SAFETY: attr holds a pointer to a NUL-terminated path that outlives the call.
    let fd = unsafe { bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)? };
    // SAFETY: a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The interface a pinned XDP or TCX link is attached to: 0 when the link no
/// longer is (its interface went away, or someone detached it).
pub fn link_ifindex(path: &Path) -> io::Result<u32> {
    let info = link_info(path)?;
    match info.type_ {
        // SAFETY: the union member read is the one the link's type says the kernel filled.
        t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => Ok(unsafe { info.__bindgen_anon_1.xdp.ifindex }),
        // SAFETY: as above.
        t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => Ok(unsafe { info.__bindgen_anon_1.tcx.ifindex }),
        other => Err(io::Error::other(format!("{} is a link of type {other}, not XDP or TCX", path.display()))),
    }
}

/// The program a pinned link runs now.
pub fn link_program_id(path: &Path) -> io::Result<u32> {
    Ok(link_info(path)?.prog_id)
}

/// What the kernel says of a pinned link (BPF_OBJ_GET_INFO_BY_FD).
fn link_info(path: &Path) -> io::Result<bpf_link_info> {
    let link = open_pinned(path)?;
    // SAFETY: bpf_link_info is plain integers and unions of them; all zeroes is valid.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = link.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_link_info>() as u32;
    attr.info.info = &raw mut info as u64;
    // SAFETY: attr points at `info`, info_len bytes that outlive the call.
    unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_versioned_per_interface() {
        let pins = Pins::new(Path::new("/sys/fs/bpf/sipflow"), "eth0");
        assert_eq!(pins.iface_dir, Path::new("/sys/fs/bpf/sipflow/eth0"));
        assert_eq!(pins.dir, Path::new(&format!("/sys/fs/bpf/sipflow/eth0/v{SCHEMA}")));
        assert_eq!(pins.link(XDP_LINK), pins.dir.join("xdp_link"));
    }

    #[test]
    fn removal_unlinks_a_symbolic_link_and_leaves_what_it_points_at() {
        let base = std::env::temp_dir().join(format!("sipflow-pins-test-{}", std::process::id()));
        let (root, victim) = (base.join("pins"), base.join("victim"));
        std::fs::create_dir_all(victim.join("deeper")).unwrap();
        std::fs::write(victim.join("deeper/keep"), b"mine").unwrap();
        std::fs::create_dir_all(&root).unwrap();
        // An interface directory that is a link out of the pin directory, and a
        // link inside a real one.
        std::os::unix::fs::symlink(&victim, root.join("eth0")).unwrap();
        std::fs::create_dir_all(root.join("eth1/v4")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("eth1/v4/flows")).unwrap();
        assert!(Pins::new(&root, "eth0").remove_all().unwrap());
        assert!(Pins::new(&root, "eth1").remove_all().unwrap());
        let kept = std::fs::read(victim.join("deeper/keep"));
        let gone = (root.join("eth0").symlink_metadata().is_err(), root.join("eth1").exists());
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(kept.unwrap(), b"mine");
        assert_eq!(gone, (true, false));
    }

    #[test]
    fn a_regular_directory_is_not_bpffs() {
        assert!(!is_bpffs(Path::new("/tmp")));
    }
}
