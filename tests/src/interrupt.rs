//! Ctrl-C during `cargo xtask demo` or `lab`: the labs register what they
//! create (namespaces, processes), and a signal thread removes all of it before
//! the program exits. Drop does the same on every other way out.

use std::{
    mem::MaybeUninit,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
};

#[derive(Default)]
struct Created {
    namespaces: Vec<String>,
    processes: Vec<u32>,
    directories: Vec<PathBuf>,
}

static CREATED: Mutex<Created> =
    Mutex::new(Created { namespaces: Vec::new(), processes: Vec::new(), directories: Vec::new() });

pub fn directory_created(path: &Path) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).directories.push(path.to_path_buf());
}

pub fn directory_removed(path: &Path) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).directories.retain(|p| p != path);
}

pub fn namespace_created(name: &str) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).namespaces.push(name.to_string());
}

pub fn namespace_removed(name: &str) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).namespaces.retain(|n| n != name);
}

pub fn process_started(pid: u32) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).processes.push(pid);
}

pub fn process_ended(pid: u32) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).processes.retain(|p| *p != pid);
}

/// Call first thing in main: SIGINT, SIGTERM and SIGHUP are then taken by a
/// thread that removes what the labs created and exits with 130. Processes
/// started later get the default signal mask back (std resets it on spawn).
pub fn clean_up_on_signal() {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; the rest only read it.
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: a valid, initialised set and an out parameter.
        unsafe { libc::sigwait(&set, &mut signal) };
        let created = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in created.processes {
            // SAFETY: kill(2) on a process (and the group it may lead) this program started.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        for namespace in created.namespaces {
            let _ = std::process::Command::new("ip").args(["netns", "del", &namespace]).status();
        }
        for directory in created.directories {
            let _ = std::fs::remove_dir_all(directory);
        }
        eprintln!("\ninterrupted: the lab's namespaces and processes are removed");
        std::process::exit(130);
    });
}
