//! Rebuilding a store from its log at open.
//!
//! Owns: the replay rules. Records are applied in log order: tag-0 writes and committed
//! branches' writes enter the index; a PREPARE without a later COMMIT or ROLLBACK rebuilds a
//! prepared branch (same XID bytes, its write set, its locks taken before the store accepts
//! work); a HEURISTIC without a later FORGET rebuilds a heuristically completed branch; every
//! other branch is rolled back, and a ROLLBACK record is logged for it so that its records can
//! never be attributed to anything later. A MOVE hands a prepared branch to the tag its writes
//! were re-logged under when its old segment was reclaimed; a repeated HEURISTIC restates an
//! outcome whose first record was reclaimed. A PREPARE or MOVE may outlive the writes before it
//! (they ended a segment that was reclaimed once the branch moved on or completed): only a
//! branch still prepared at the end of the log must have writes.

use super::branch::{Branch, Phase, State, Writes};
use super::index::{Index, ValueLoc};
use super::Rm;
use crate::config::Config;
use crate::error::Outcome;
use crate::lock::{LockTable, Mode};
use crate::log::{Log, Lsn, Media, Record};
use crate::xid::Xid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, RwLock};

/// The highest branch tag a valid log holds.
const MAX_TAG: u64 = 1 << 62;

/// An in-doubt branch as the log states it: XID and the LSN of the stating record.
type Stated = (Xid, Lsn);

#[derive(Default)]
struct Replay {
    index: Index,
    pending: HashMap<u64, Writes>,
    prepared: HashMap<u64, Stated>,
    heuristic: HashMap<u64, (Stated, Outcome, String)>,
    max_tag: u64,
}

impl Replay {
    fn apply(&mut self, writes: Writes) {
        for (k, (_, v)) in writes {
            self.index.set(&k, v);
        }
    }

    /// Tags are handed out from 1 upwards, so none gets near [`MAX_TAG`]; a larger one is
    /// corruption (and would overflow the next tag).
    fn note_tag(&mut self, tag: u64) -> Result<(), String> {
        if tag > MAX_TAG {
            return Err(format!("branch tag {tag} out of range"));
        }
        self.max_tag = self.max_tag.max(tag);
        Ok(())
    }

    fn visit(&mut self, lsn: Lsn, rec: Record<'_>) -> Result<(), String> {
        let (tag, key, value) = match rec {
            Record::Put { tag, key, value } => (tag, key, Some(value)),
            Record::Delete { tag, key } => (tag, key, None),
            Record::Prepare { tag, xid } => {
                // Its writes may be in a reclaimed segment if the branch completed later; a
                // branch still prepared at the end must have writes (checked in `open`).
                self.pending.entry(tag).or_default();
                self.note_tag(tag)?;
                self.prepared.insert(tag, (xid, lsn));
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
                tag,
                outcome,
                xid,
                reason,
            } => {
                self.note_tag(tag)?;
                let outcome = Outcome::from_log(outcome)
                    .ok_or_else(|| format!("unknown heuristic outcome {outcome}"))?;
                self.prepared.remove(&tag);
                let writes = self.pending.remove(&tag).unwrap_or_default();
                if outcome == Outcome::Commit {
                    self.apply(writes);
                }
                let reason = String::from_utf8_lossy(reason).into_owned();
                self.heuristic.insert(tag, ((xid, lsn), outcome, reason));
                return Ok(());
            }
            Record::Forget { tag } => {
                self.heuristic.remove(&tag);
                return Ok(());
            }
            Record::Move { old, new, xid } => {
                // The prepared branch's writes were re-logged under `new` just before, but
                // maybe in an earlier segment, reclaimed since (the branch moved on or
                // completed): as for PREPARE, a branch still prepared at the end must have
                // writes.
                self.prepared.remove(&old);
                self.pending.remove(&old);
                self.note_tag(new)?;
                self.pending.entry(new).or_default();
                self.prepared.insert(new, (xid, lsn));
                return Ok(());
            }
        };
        let loc = ValueLoc::of_record(lsn, key, value);
        if tag == 0 {
            self.index.set(key, loc);
        } else {
            self.note_tag(tag)?;
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

pub(super) fn open<M: Media>(cfg: Config, media: M) -> Result<Rm<M>, String> {
    let mut replay = Replay::default();
    let log = Log::open_single(media, cfg.segment_size, cfg.sync, &mut |lsn, rec| {
        replay.visit(lsn, rec)
    })
    .map_err(|e| e.to_string())?;

    let locks = LockTable::new();
    let mut state = State::default();
    for (tag, (xid, lsn)) in std::mem::take(&mut replay.prepared) {
        let writes = replay.pending.remove(&tag).unwrap_or_default();
        if writes.is_empty() {
            return Err(format!(
                "prepared branch {xid} has no writes in the log (a segment was lost)"
            ));
        }
        for key in writes.keys() {
            if !locks.acquire_now(tag, key, Mode::Exclusive) {
                return Err(format!("two prepared branches hold the same key ({xid})"));
            }
        }
        let mut b = Branch::new(tag, Phase::Prepared);
        b.writes = writes;
        b.record_lsn = lsn;
        if state.branches.insert(xid, b).is_some() {
            return Err(format!("XID {xid} is prepared twice in the log"));
        }
    }
    for (tag, ((xid, lsn), outcome, reason)) in std::mem::take(&mut replay.heuristic) {
        let mut b = Branch::new(tag, Phase::Heuristic(outcome));
        b.record_lsn = lsn;
        b.reason = reason;
        if state.branches.insert(xid, b).is_some() {
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
            .append_alone(&Record::Rollback { tag })
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
        quiesce: RwLock::new(()),
        compacting: AtomicBool::new(false),
        compact_after: AtomicU64::new(0),
        state: Mutex::new(state),
        next_tag: AtomicU64::new(max_tag + 1),
        panicked: AtomicBool::new(false),
        interrupted: AtomicBool::new(false),
        lock: None,
    })
}
