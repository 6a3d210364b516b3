//! Processes the labs start in their own process groups, so that a peer's
//! children (Kamailio's workers, tshark's dumpcap) go with it.

use std::{
    process::Child,
    thread,
    time::{Duration, Instant},
};

/// SIGTERM to the child's process group, then SIGKILL if it has not gone within 3 s.
pub fn stop_group(child: &mut Child) {
    crate::interrupt::process_ended(child.id());
    signal_group(child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // Workers may outlive the main process by a moment.
            signal_group(child, libc::SIGKILL);
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    signal_group(child, libc::SIGKILL);
    let _ = child.wait();
}

/// Sends `signal` to the process group the child leads.
pub fn signal_group(child: &Child, signal: i32) {
    let group = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-group, signal);
    }
}
