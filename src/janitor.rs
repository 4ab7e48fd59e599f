//! The orphan policy's thread, and the panic boundary of every thread the library starts.
//!
//! Owns: running `orphan_rollback_s` (see [`Rm::expire_orphans`]) every so often while a store
//! is open in this process. Every process with the policy set runs one; they coordinate through
//! the branches themselves (a branch being completed is busy, so two sweeps never decide it
//! twice). A panic in the thread is caught in it and fails the store: nothing unwinds further.

use crate::rm::Rm;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Runs `body` in a thread this library starts. A panic in it is caught here, never unwinding
/// further, and fails the store: it may have left it inconsistent. Answers whether it panicked.
fn boundary(rm: &Rm, body: impl FnOnce()) -> bool {
    let panicked = catch_unwind(AssertUnwindSafe(body)).is_err();
    if panicked {
        rm.fail();
    }
    panicked
}

/// Enforces the orphan policy of a store open in this process: every so often, rolls back heuristically the
/// branches prepared longer than the configured age ([`Rm::expire_orphans`]). Stopped and
/// joined when dropped.
pub struct Janitor {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl Janitor {
    pub fn start(rm: Arc<Rm>, age: std::time::Duration) -> io::Result<Janitor> {
        // Often enough that a branch outlives its age by at most a tenth of it (or a second).
        let period = (age / 10).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        );
        Janitor::every(rm, period, move |rm| {
            rm.expire_orphans(age);
        })
    }

    /// Runs `sweep` every `period` while the store has not failed, until dropped.
    fn every(
        rm: Arc<Rm>,
        period: std::time::Duration,
        mut sweep: impl FnMut(&Rm) + Send + 'static,
    ) -> io::Result<Janitor> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mmxa-orphans".into())
            .spawn(move || {
                let body = || {
                    let (lock, cv) = &*s;
                    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    while !*stopped {
                        stopped = cv
                            .wait_timeout(stopped, period)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        if !*stopped && rm.failed().is_none() {
                            drop(stopped);
                            sweep(&rm);
                            stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                        }
                    }
                };
                boundary(&rm, body);
            })?;
        Ok(Janitor {
            stop,
            thread: Some(thread),
            pid: std::process::id(),
        })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return;
        }
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A panic in the orphan policy's thread ends it without unwinding out of it and fails the
    /// store.
    #[test]
    fn a_panic_in_the_janitor_fails_the_store() {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.segment_size = 4 << 20;
        let rm = Arc::new(Rm::open(cfg).unwrap());
        let (swept, sweeps) = mpsc::channel();
        let mut janitor = Janitor::every(rm.clone(), Duration::from_millis(1), move |_| {
            let _ = swept.send(());
            panic!("a test's panic in the orphan policy");
        })
        .unwrap();
        // Liveness bound only.
        sweeps.recv_timeout(Duration::from_secs(60)).unwrap();
        let thread = janitor.thread.take().expect("the janitor's thread");
        assert!(thread.join().is_ok(), "the panic stayed in the thread");
        assert!(rm.failed().is_some(), "the store failed");
    }
}
