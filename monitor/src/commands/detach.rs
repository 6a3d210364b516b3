//! `sipflow detach -i IFACE`: removes what sipflow pinned for the interface,
//! the links (so its programs detach) and the maps with their flows and counts.

use crate::{cli::DetachArgs, failure::Failure, kernel::pins::Pins, privileges};

pub fn detach(args: &DetachArgs) -> Result<(), Failure> {
    if !privileges::can_load_bpf() {
        return Err(Failure::NotPrivileged);
    }
    for iface in &args.ifaces {
        let pins = Pins::new(&args.pin_dir, iface);
        match pins.remove_all() {
            Ok(true) => println!("{iface}: removed sipflow's programs and maps ({})", pins.iface_dir.display()),
            Ok(false) => println!("{iface}: nothing of sipflow's is pinned in {}", pins.iface_dir.display()),
            Err(e) => return Err(Failure::Pins { path: pins.iface_dir, reason: e.to_string() }),
        }
    }
    Ok(())
}
