//! Crash points: places inside a section where a test can have this process killed
//! (`SIGKILL`, as real as a crash gets). Compiled to nothing outside unit tests.
//!
//! A test child sets `MMXA_SHM_CRASH=<point>:<n>`: the `n`-th time (from 1) the process reaches
//! `<point>` it kills itself.

/// Where a section can be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // only unit tests name them all
pub(crate) enum Point {
    /// A write is journaled (length published) but the target not yet written.
    Journaled,
    /// A journaled write is done.
    Written,
    /// An allocation is done (its metadata journaled).
    Allocated,
    /// Growth: the file is allocated, the header's size not yet raised.
    Growing,
    /// Growth: the size is raised, this process not yet mapping the new part.
    Grown,
    /// Commit: the deferred frees are applied, the journal not yet cleared.
    Freed,
    /// Commit: the journal is cleared, the mutex still held.
    Committed,
    /// Repair: the first journal entry of a dead owner is being restored.
    Repairing,
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit(_: Point) {}

#[cfg(test)]
pub(crate) fn hit(p: Point) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PLAN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("MMXA_SHM_CRASH").ok()?;
        let (name, n) = v.split_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    if let Some((name, n)) = plan {
        if *name == format!("{p:?}") && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            super::sys::kill_self();
        }
    }
}
