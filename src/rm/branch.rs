//! A branch of a global transaction as the RM keeps it, and each thread of control's view.
//!
//! Owns: [`Branch`] (phase, associations, rollback-only mark, write set, savepoints),
//! [`TocState`] (a thread of control's active and suspended associations and recovery scan) and
//! [`State`], the table of both that the RM guards with one mutex. Invariant: the XA state of a
//! branch (S0–S5 of the XA reference §5.3) is a projection of its phase, associations and marks,
//! never stored twice.

use super::index::ValueLoc;
use super::Toc;
use crate::error::{Outcome, Rb};
use crate::fxhash::FxHashMap;
use crate::log::Lsn;
use crate::xid::Xid;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Working,
    Prepared,
    Heuristic(Outcome),
}

/// A branch's latest write of a key: the LSN of its record and the value (None: deleted).
pub(super) type WriteEntry = (Lsn, Option<ValueLoc>);

/// A branch's write set: the latest write per key.
pub(super) type Writes = BTreeMap<Vec<u8>, WriteEntry>;

pub(super) struct Branch {
    pub tag: u64,
    pub phase: Phase,
    /// A completion call (prepare, commit, rollback) is syncing; other calls see `XAER_PROTO`.
    pub busy: bool,
    pub active: Vec<Toc>,
    pub suspended: Vec<Toc>,
    pub migrated: usize,
    /// Rollback-only: the reason code and why.
    pub rb: Option<(Rb, String)>,
    /// Rolled back by another ToC while associated: forgotten when the last association ends.
    pub undone: bool,
    /// Latest write per key.
    pub writes: Writes,
    /// LSN of the first write record of a working branch: its segment cannot be reclaimed yet.
    pub first_lsn: Option<Lsn>,
    /// LSN of the record that states a prepared or heuristic branch (PREPARE, MOVE, HEURISTIC).
    pub record_lsn: Lsn,
    /// The operator's reason, for a heuristically completed branch.
    pub reason: String,
    pub abort: Arc<AtomicBool>,
    /// When the branch began, was prepared, or was completed heuristically (for a branch
    /// recovered from the log: when the store was opened).
    pub since: Instant,
    /// Savepoints: (id, journal length when set). While any exists, every write journals the
    /// key's previous entry in `writes`, so a rollback to a savepoint can restore it.
    pub savepoints: Vec<(u64, usize)>,
    pub journal: Vec<(Vec<u8>, Option<WriteEntry>)>,
    pub next_savepoint: u64,
}

impl Branch {
    pub fn new(tag: u64, phase: Phase) -> Branch {
        Branch {
            tag,
            phase,
            busy: false,
            active: Vec::new(),
            suspended: Vec::new(),
            migrated: 0,
            rb: None,
            undone: false,
            writes: BTreeMap::new(),
            first_lsn: None,
            record_lsn: 0,
            reason: String::new(),
            abort: Arc::new(AtomicBool::new(false)),
            since: Instant::now(),
            savepoints: Vec::new(),
            journal: Vec::new(),
            next_savepoint: 1,
        }
    }

    pub fn associated(&self) -> bool {
        !self.active.is_empty() || !self.suspended.is_empty() || self.migrated > 0
    }

    /// Why the branch can no longer commit, if it cannot.
    pub fn doomed(&self) -> Option<(Rb, String)> {
        if self.undone {
            return Some((
                Rb::Other,
                "the branch was rolled back by another thread".into(),
            ));
        }
        self.rb.clone()
    }
}

#[derive(Default)]
pub(super) struct TocState {
    pub active: Option<Xid>,
    pub suspended: Vec<Xid>,
    pub scan: Option<(Vec<Xid>, usize)>,
}

#[derive(Default)]
pub(super) struct State {
    pub branches: FxHashMap<Xid, Branch>,
    pub tocs: FxHashMap<Toc, TocState>,
}
