//! A branch of a global transaction as the RM keeps it, and each thread of control's view.
//!
//! Owns: [`Branch`] (phase, associations, rollback-only mark, write set, savepoints),
//! [`TocState`] (a thread of control's active and suspended associations and recovery scan) and
//! [`State`], the table of both that the RM guards with one mutex. Invariants: the XA state of a
//! branch (S0–S5 of the XA reference §5.3) is a projection of its phase, associations and marks,
//! never stored twice; every log position a branch holds is listed by [`Branch::log_refs`],
//! which is what reclaiming re-logs or remaps, so each stays in the log while the branch lives.

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

/// A key's state in a branch before a write, journaled for a rollback to a savepoint: `None`
/// if the branch had not written it (it reads committed data), else the value the branch had
/// written (None: deleted).
pub(super) type Before = Option<Option<ValueLoc>>;

/// A log position a branch references, as reclaiming sees it (see [`Branch::log_refs`]).
pub(super) enum LogRef<'a> {
    /// The branch's latest write of a key: a PUT or DELETE record under its tag, which replay
    /// must find until the branch ends.
    Write(&'a [u8], &'a mut WriteEntry),
    /// A value of a key saved for a rollback to a savepoint: only its bytes must stay readable.
    Saved(&'a [u8], &'a mut ValueLoc),
    /// The record that states a prepared or heuristic branch (PREPARE, MOVE, HEURISTIC).
    Stated(&'a mut Lsn),
}

impl LogRef<'_> {
    /// Where in the log the reference points (a record, or a value inside one).
    pub fn lsn(&self) -> Lsn {
        match self {
            LogRef::Write(_, e) => e.0,
            LogRef::Saved(_, loc) => loc.lsn,
            LogRef::Stated(lsn) => **lsn,
        }
    }
}

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
    /// LSN of the record that states a prepared or heuristic branch (PREPARE, MOVE, HEURISTIC).
    pub record_lsn: Lsn,
    /// The operator's reason, for a heuristically completed branch.
    pub reason: String,
    pub abort: Arc<AtomicBool>,
    /// When the branch began, was prepared, or was completed heuristically (for a branch
    /// recovered from the log: when the store was opened).
    pub since: Instant,
    /// Savepoints: (id, journal length when set). While any exists, every write journals the
    /// key's previous state in the branch ([`Before`]), so a rollback to a savepoint can restore
    /// it.
    pub savepoints: Vec<(u64, usize)>,
    pub journal: Vec<(Vec<u8>, Before)>,
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
            record_lsn: 0,
            reason: String::new(),
            abort: Arc::new(AtomicBool::new(false)),
            since: Instant::now(),
            savepoints: Vec::new(),
            journal: Vec::new(),
            next_savepoint: 1,
        }
    }

    /// Every log position the branch references: what reclaiming must re-log or remap before
    /// the segment holding it is deleted. Every field is named below, so a new one cannot be
    /// added without deciding whether it points into the log.
    pub fn log_refs(&mut self) -> impl Iterator<Item = LogRef<'_>> {
        let Branch {
            tag: _,
            phase,
            busy: _,
            active: _,
            suspended: _,
            migrated: _,
            rb: _,
            undone: _,
            writes,
            record_lsn,
            reason: _,
            abort: _,
            since: _,
            savepoints: _, // journal positions, not log positions
            journal,
            next_savepoint: _,
        } = self;
        let stated = (*phase != Phase::Working).then_some(LogRef::Stated(record_lsn));
        let saved = journal.iter_mut().filter_map(|(key, before)| match before {
            Some(Some(loc)) => Some(LogRef::Saved(key, loc)),
            _ => None,
        });
        writes
            .iter_mut()
            .map(|(key, e)| LogRef::Write(key, e))
            .chain(saved)
            .chain(stated)
    }

    /// Whether any position the branch references is in `range`.
    pub fn refers_to(&mut self, range: &std::ops::Range<Lsn>) -> bool {
        self.log_refs().any(|r| range.contains(&r.lsn()))
    }

    /// Drops the write set and the savepoints (the branch ended, or its writes were applied).
    pub fn take_writes(&mut self) -> Writes {
        self.savepoints.clear();
        self.journal.clear();
        std::mem::take(&mut self.writes)
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
