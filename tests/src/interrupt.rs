//! Ctrl-C during `cargo xtask demo` or `lab`: the labs register what they
//! create (namespaces, processes), and a signal thread removes all of it before
//! the program exits. Drop does the same on every other way out.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicI32, Ordering},
    },
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

/// Where the signal handler tells the cleanup thread that a signal came.
static WAKE_UP: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let byte = 1u8;
    // SAFETY: write(2) is async-signal-safe; the fd is the pipe's write end.
    unsafe { libc::write(WAKE_UP.load(Ordering::Relaxed), (&raw const byte).cast(), 1) };
}

/// Call first thing in main: on SIGINT, SIGTERM or SIGHUP a thread removes
/// what the labs created and exits with 130. A handler rather than a blocked
/// signal mask, because a mask is inherited by the processes the lab starts
/// (tshark would never see its SIGTERM), while handlers are reset by exec.
pub fn clean_up_on_signal() {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two fds; close-on-exec keeps them from the lab's processes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe");
    WAKE_UP.store(fds[1], Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls write(2).
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let wake_up = fds[0];
    thread::spawn(move || {
        let mut byte = 0u8;
        // SAFETY: a read of one byte from the pipe's read end into a local.
        while unsafe { libc::read(wake_up, (&raw mut byte).cast(), 1) } != 1 {}
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
