//! One open store: its branches, the XA state machine, the data operations and recovery.
//!
//! Owns: the branch table (states S0–S5 of the XA reference §5.3), each thread of control's
//! associations (T0/T1/T2, §5.2) and recovery scan, the committed index, and the rules that tie
//! them to the log. Invariants:
//! - a branch's state is its phase (working, prepared, heuristic), its associations (active by
//!   ToC, suspended by ToC, suspended-for-migration by nobody) and a rollback-only mark; S is a
//!   projection of these, never stored twice;
//! - every write of a branch is in the log (a PUT/DELETE record with the branch's tag) before it
//!   is in the branch's write set; prepare or commit succeeds only after the PREPARE or COMMIT
//!   record is durable; committed data enters the index only once durable;
//! - a key written by a branch (or read for update) stays locked exclusively until the branch
//!   commits or rolls back; a key read under `isolation=serializable` stays locked shared until
//!   the branch prepares, commits or rolls back (strict two-phase locking);
//! - the state lock is never held across a lock wait or a sync.
//!
//! A thread of control (ToC) is an opaque number chosen by the caller, so the state machine can
//! be driven, and tested, without threads. The parts: `branch` (a branch and a ToC's view),
//! `index` (committed data), `xa` (the XA entry points' work), `data` (reads, writes,
//! savepoints), `report` (what operators see), `compact` (reclaiming log space), `recovery`
//! (rebuilding all of it from the log at open), `flags` (the flag rules of the entry points).

mod branch;
mod compact;
mod data;
pub mod flags;
mod index;
mod recovery;
mod report;
mod xa;

use crate::config::Config;
pub use crate::error::Vote;
use crate::error::{Error, Result};
use crate::lock::LockTable;
use crate::log::{Appended, Log, LogError, Mapped, Media, Record, StoreLock};
use crate::xid::Xid;
use branch::State;
use index::Index;
pub use report::{BranchReport, Report};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// A thread of control, as numbered by the caller.
pub type Toc = u64;

static NEXT_TOC: AtomicU64 = AtomicU64::new(1);

/// A new thread-of-control number, unique in this process.
pub fn new_toc() -> Toc {
    NEXT_TOC.fetch_add(1, Ordering::Relaxed)
}

/// An open store, its log on the medium `M` (memory-mapped files unless a test says otherwise).
pub struct Rm<M: Media = Mapped> {
    cfg: Config,
    log: Log<M>,
    locks: LockTable,
    index: RwLock<Index>,
    /// Held shared by every operation from its append until its effect is in memory (and by
    /// readers), exclusively by the compactor, which so sees log and memory agree.
    quiesce: RwLock<()>,
    /// A compaction step is running.
    compacting: AtomicBool,
    /// Do not try to compact again before the log reaches this LSN (after a step found the
    /// oldest segment still needed).
    compact_after: AtomicU64,
    state: Mutex<State>,
    next_tag: AtomicU64,
    panicked: AtomicBool,
    /// Lock waits end at once (the store is being shut down under them).
    interrupted: AtomicBool,
    /// The store's lock, released when the last user of the store is gone. Declared last: it
    /// is dropped after everything that writes the store.
    lock: Option<StoreLock>,
}

fn proto(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

fn nota(xid: &Xid) -> Error {
    Error::UnknownXid(format!("XID {xid} is not known"))
}

impl Rm {
    /// Opens the store described by `cfg`, replaying its log: committed data, prepared branches
    /// (with their locks) and heuristically completed branches are rebuilt; every other branch
    /// is rolled back and its rollback logged.
    pub fn open(cfg: Config) -> std::result::Result<Rm, String> {
        let media = Mapped::new(&cfg.dir);
        recovery::open(cfg, media)
    }

    /// [`Rm::open`] for the holder of the store's lock, which the store keeps until dropped.
    pub fn open_locked(cfg: Config, lock: StoreLock) -> std::result::Result<Rm, String> {
        let mut rm = Rm::open(cfg)?;
        rm.lock = Some(lock);
        Ok(rm)
    }
}

impl<M: Media> Rm<M> {
    /// [`Rm::open`] with the log on `media` (`cfg.dir` is then only a name).
    pub fn open_on(cfg: Config, media: M) -> std::result::Result<Rm<M>, String> {
        recovery::open(cfg, media)
    }

    /// The store's lock, if this instance holds it.
    pub fn store_lock(&self) -> Option<StoreLock> {
        self.lock.clone()
    }

    /// Ends every lock wait now and refuses new ones: the store is being shut down while other
    /// threads may still be in it.
    pub fn interrupt_waits(&self) {
        self.interrupted.store(true, Ordering::Release);
        self.locks.wake_all();
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Why the store is unusable, if it is (a failed sync, or a panic inside mmxa). A panic
    /// that left the state lock poisoned counts, as [`Rm::state`] refuses it too: the registry
    /// then reaches the store anew instead of reattaching to this instance.
    pub fn failed(&self) -> Option<String> {
        if self.panicked.load(Ordering::Acquire) || self.state.is_poisoned() {
            return Some("an internal error (panic) occurred; reopen the store".into());
        }
        self.log.failed()
    }

    /// Marks the store unusable until reopened.
    pub fn fail(&self) {
        self.panicked.store(true, Ordering::Release);
    }

    /// The branch table, unless the store failed.
    fn state(&self) -> Result<MutexGuard<'_, State>> {
        if let Some(why) = self.failed() {
            return Err(Error::Failed(why));
        }
        self.state
            .lock()
            .map_err(|_| Error::Failed("internal state lock poisoned; reopen".into()))
    }

    /// Panics holding the state lock, as a bug in the state machine would (tests only).
    #[cfg(test)]
    pub(crate) fn panic_holding_state(&self) {
        let _st = self.state.lock();
        panic!("a test's panic holding the state lock");
    }

    /// Re-takes the state lock after a sync, even if the store failed meanwhile.
    fn relock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Held from an append until its effect is in memory (see `quiesce`).
    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.quiesce.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `rec` and waits until it is durable, with the state lock released.
    fn log_durably(&self, rec: &Record<'_>) -> std::result::Result<Appended, LogError> {
        let a = self.log.append_alone(rec)?;
        self.log.sync_to(a.end)?;
        Ok(a)
    }
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Error {
        match e {
            LogError::Failed(_) => Error::Failed(e.to_string()),
            LogError::NoSpace(_) => Error::NoSpace(e.to_string()),
            LogError::TooBig(_) => Error::TooBig(e.to_string()),
            LogError::Io(..)
            | LogError::Corrupt { .. }
            | LogError::NotOldest(_)
            | LogError::Gone(_)
            | LogError::NeedRoll(_) => Error::Io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
