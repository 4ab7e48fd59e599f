//! Descriptors that a child created by `fork` (without `exec`) must not keep.
//!
//! Owns: a fixed table of the descriptors whose copies in a child would keep a store's state
//! alive after this process dies — the store's lock file, whose byte locks say which processes
//! are alive (a child's copy would keep a dead process's slot looking alive, so its branches
//! would never be reaped). The C boundary installs a fork handler that points every descriptor
//! in the table at `/dev/null` in the child, so the child's copies refer to nothing. Invariant: a
//! descriptor is in the table only while it is open (it leaves the table before it is closed),
//! and the table is read with atomic loads only, as a fork handler must. Best effort beyond
//! [`SLOTS`] descriptors.

use std::ops::Deref;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// How many descriptors the table holds.
pub const SLOTS: usize = 1024;
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

fn register(fd: RawFd) {
    for slot in &FDS {
        if slot
            .compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister(fd: RawFd) {
    for slot in &FDS {
        if slot
            .compare_exchange(fd, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// Calls `f` with every descriptor in the table. Atomic loads only: callable in a fork handler.
pub fn for_each(mut f: impl FnMut(RawFd)) {
    for slot in &FDS {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            f(fd);
        }
    }
}

/// An open descriptor (file, socket) listed in the table while it lives.
pub struct NoInherit<T: AsRawFd>(T);

impl<T: AsRawFd> NoInherit<T> {
    pub fn new(inner: T) -> NoInherit<T> {
        register(inner.as_raw_fd());
        NoInherit(inner)
    }
}

impl<T: AsRawFd> Deref for NoInherit<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: AsRawFd> Drop for NoInherit<T> {
    fn drop(&mut self) {
        // Out of the table before the descriptor is closed (when `self.0` drops).
        unregister(self.0.as_raw_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_exactly_while_alive() {
        let listed = |fd: RawFd| {
            let mut seen = false;
            for_each(|f| seen |= f == fd);
            seen
        };
        let f = NoInherit::new(std::fs::File::open("/dev/null").unwrap());
        let fd = f.as_raw_fd();
        assert!(listed(fd));
        drop(f);
        assert!(!listed(fd));
    }
}
