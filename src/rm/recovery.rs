//! Rebuilding a store from its log at open.
//!
//! Owns: the replay rules. Records are applied in log order: tag-0 writes and committed
//! branches' writes enter the index; a PREPARE without a later COMMIT or ROLLBACK rebuilds a
//! prepared branch (same XID bytes, its write set, its locks taken before the store accepts
//! work); a HEURISTIC without a later FORGET rebuilds a heuristically completed branch; every
//! other branch is rolled back, and a ROLLBACK record is logged for it so that its records can
//! never be attributed to anything later.

use super::{Branch, Phase, Rm, State, ValueLoc};
use crate::config::Config;
use crate::lock::LockTable;
use crate::log::{put_value_offset, Log, Lsn, Record};
use crate::xa::XA_HEURCOM;
use crate::xid::Xid;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, RwLock};

type Writes = BTreeMap<Vec<u8>, (Lsn, Option<ValueLoc>)>;

#[derive(Default)]
struct Replay {
    index: HashMap<Vec<u8>, ValueLoc>,
    pending: HashMap<u64, Writes>,
    prepared: HashMap<u64, Xid>,
    heuristic: HashMap<u64, (Xid, i32)>,
    max_tag: u64,
}

impl Replay {
    fn apply(&mut self, writes: Writes) {
        for (k, (_, v)) in writes {
            match v {
                Some(loc) => self.index.insert(k, loc),
                None => self.index.remove(&k),
            };
        }
    }

    fn visit(&mut self, lsn: Lsn, rec: Record<'_>) -> Result<(), String> {
        let (tag, key, value) = match rec {
            Record::Put { tag, key, value } => (tag, key, Some(value)),
            Record::Delete { tag, key } => (tag, key, None),
            Record::Prepare { tag, xid } => {
                if !self.pending.contains_key(&tag) {
                    return Err(format!("PREPARE of {xid} for a branch with no writes"));
                }
                self.prepared.insert(tag, xid);
                return Ok(());
            }
            Record::Commit { tag } => {
                self.prepared.remove(&tag);
                let writes = self.pending.remove(&tag).unwrap_or_default();
                self.apply(writes);
                return Ok(());
            }
            Record::Rollback { tag } => {
                self.prepared.remove(&tag);
                self.pending.remove(&tag);
                return Ok(());
            }
            Record::Heuristic {
                tag, outcome, xid, ..
            } => {
                self.prepared.remove(&tag);
                let writes = self.pending.remove(&tag).unwrap_or_default();
                if outcome == XA_HEURCOM {
                    self.apply(writes);
                }
                self.heuristic.insert(tag, (xid, outcome));
                return Ok(());
            }
            Record::Forget { tag } => {
                self.heuristic.remove(&tag);
                return Ok(());
            }
        };
        let loc = value.map(|v| ValueLoc {
            lsn: lsn + put_value_offset(key.len()),
            len: v.len() as u32,
        });
        if tag == 0 {
            match loc {
                Some(loc) => self.index.insert(key.to_vec(), loc),
                None => self.index.remove(key),
            };
        } else {
            self.max_tag = self.max_tag.max(tag);
            if self.prepared.contains_key(&tag) {
                return Err(format!("write for branch tag {tag} after its PREPARE"));
            }
            self.pending
                .entry(tag)
                .or_default()
                .insert(key.to_vec(), (lsn, loc));
        }
        Ok(())
    }
}

pub(super) fn open(cfg: Config) -> Result<Rm, String> {
    let mut replay = Replay::default();
    let log = Log::open(&cfg.dir, cfg.segment_size, cfg.sync, &mut |lsn, rec| {
        replay.visit(lsn, rec)
    })
    .map_err(|e| e.to_string())?;

    let locks = LockTable::new();
    let mut state = State::default();
    for (tag, xid) in std::mem::take(&mut replay.prepared) {
        let writes = replay.pending.remove(&tag).unwrap_or_default();
        for key in writes.keys() {
            if !locks.lock_now(tag, key) {
                return Err(format!("two prepared branches hold the same key ({xid})"));
            }
        }
        let mut b = Branch::new(tag, Phase::Prepared);
        b.writes = writes;
        if state.branches.insert(xid, b).is_some() {
            return Err(format!("XID {xid} is prepared twice in the log"));
        }
    }
    for (tag, (xid, outcome)) in std::mem::take(&mut replay.heuristic) {
        if state
            .branches
            .insert(xid, Branch::new(tag, Phase::Heuristic(outcome)))
            .is_some()
        {
            return Err(format!("XID {xid} is in doubt twice in the log"));
        }
    }
    let max_tag = state
        .branches
        .values()
        .map(|b| b.tag)
        .chain([replay.max_tag])
        .max()
        .unwrap_or(0);
    // Branches that never prepared are rolled back, durably, before new work can reuse XIDs.
    let mut last = None;
    let mut abandoned: Vec<u64> = replay.pending.keys().copied().collect();
    abandoned.sort_unstable();
    for tag in abandoned {
        let a = log
            .append(&Record::Rollback { tag })
            .map_err(|e| format!("logging the rollback of an unprepared branch: {e}"))?;
        last = Some(a.end);
    }
    if let Some(end) = last {
        log.sync_to(end).map_err(|e| e.to_string())?;
    }
    Ok(Rm {
        cfg,
        log,
        locks,
        index: RwLock::new(replay.index),
        state: Mutex::new(state),
        next_tag: AtomicU64::new(max_tag + 1),
        panicked: AtomicBool::new(false),
    })
}
