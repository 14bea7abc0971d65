//! SIGINT and SIGTERM during a stage that can stop cleanly (`process`'s pipeline): the first
//! signal only raises a flag, which the stage polls to stop, remove its temporary files and
//! exit with 128 + the signal; a second one ends the process at once (default action).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received while armed (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// While alive, SIGINT and SIGTERM raise the flag instead of ending the process.
pub struct Armed(());

impl Armed {
    pub fn new() -> Self {
        for sig in SIGNALS {
            // SAFETY: installs a handler that only stores to an atomic; SA_RESETHAND makes a
            // second signal take the default action.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        Armed(())
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        for sig in SIGNALS {
            // SAFETY: restores the default action.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// The signal received while armed, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGINT` / `SIGTERM` / `signal N`.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}
