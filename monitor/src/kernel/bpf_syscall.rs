//! The bpf(2) commands aya 0.14 has no API for (reading a map in batches, the
//! interface a pinned link is on), made with the kernel's own types as aya-obj
//! generates them from its headers, so that no offset is counted by hand.

use std::{io, mem::size_of};

pub use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// Runs one bpf(2) command; its non-negative result (a file descriptor for
/// the commands that make one, else 0).
///
/// # Safety
/// Every pointer `attr` carries for `cmd` must point at memory of the size the
/// command reads or writes, valid for the whole call.
pub unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a whole bpf_attr; the caller vouches for what it points at.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut bpf_attr, size_of::<bpf_attr>() as u32)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// A bpf_attr with every field zero, as each command expects of those it does not use.
pub fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integers; all zeroes is valid.
    unsafe { std::mem::zeroed() }
}
