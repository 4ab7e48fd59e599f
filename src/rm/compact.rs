//! Reclaiming log space: the oldest segment's live content is appended again, then the segment
//! is retired (see "Reclaiming space" in the log module's doc for the durable protocol).
//!
//! Owns: when to reclaim and what counts as live. Invariants: a step runs with every other
//! operation quiesced (no append is between its record and its effect in memory), so the index
//! and the branches' write sets describe the log exactly; a working (unprepared) branch's writes
//! are re-logged under its own tag (later records win at replay, and its next writes come after
//! the copies); prepared branches move to a new tag with their locks; the segment is deleted
//! only after a synced CHECKPOINT.

use super::branch::{Branch, Phase};
use super::index::ValueLoc;
use super::Rm;
use crate::log::{LogError, Lsn, Media, Record};
use std::sync::atomic::Ordering;

/// Reclaim while the log is larger than this many times the live data, plus three segments.
const SPACE_FACTOR: u64 = 2;

/// Most segments one caller reclaims in a row.
const MAX_STEPS: usize = 16;

impl<M: Media> Rm<M> {
    /// Whether the log holds enough dead space to reclaim its oldest segment.
    fn wants_compaction(&self) -> bool {
        let (count, bytes) = self.log.disk_usage();
        let live = self.index.read().unwrap_or_else(|p| p.into_inner()).bytes;
        count >= 3
            && bytes > SPACE_FACTOR * live + 3 * self.log.segment_size()
            && self.log.written() >= self.compact_after.load(Ordering::Relaxed)
    }

    /// Called after work that grows the log, with no lock held: reclaims one segment if the
    /// log has grown well past its live data. One caller at a time does the work; others go on.
    pub(super) fn maybe_compact(&self) {
        if !self.wants_compaction() || self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        // Several steps per turn: other threads skip while one compacts, so one step per
        // trigger could fall behind many committers. Bounded, to bound this caller's delay.
        for _ in 0..MAX_STEPS {
            match self.compact_step() {
                Ok(true) if self.wants_compaction() => {}
                Ok(true) => break,
                // Pinned by a working branch, or failed: try again once the log has grown.
                Ok(false) | Err(_) => {
                    self.compact_after.store(
                        self.log.written() + self.log.segment_size() / 4,
                        Ordering::Relaxed,
                    );
                    break;
                }
            }
        }
        self.compacting.store(false, Ordering::Release);
    }

    /// After an append failed for lack of disk space (with no lock held): reclaiming may free
    /// a segment, so the next attempt can succeed even below the usual threshold.
    pub(super) fn after_no_space(&self) {
        if !self.compacting.swap(true, Ordering::AcqRel) {
            let _ = self.compact_step();
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Reclaims the oldest segment, if nothing pins it. Returns whether it was retired.
    pub fn compact_step(&self) -> Result<bool, LogError> {
        let Some((id, base, end)) = self.log.oldest() else {
            return Ok(false);
        };
        let _quiet = self.quiesce.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.failed().is_some() || self.log.oldest().map(|o| o.0) != Some(id) {
            return Ok(false);
        }
        let in_seg = |lsn: Lsn| (base..end).contains(&lsn);
        let touches =
            |b: &Branch| in_seg(b.record_lsn) || b.writes.values().any(|(l, _)| in_seg(*l));
        // A completion in flight will append under the tag it read: a prepared branch that
        // would move to a new tag waits for it.
        let pinned = st
            .branches
            .values()
            .any(|b| b.busy && b.phase != Phase::Working && touches(b));
        if pinned {
            return Ok(false);
        }
        let mut value = Vec::new();
        let mut copy = |tag: u64,
                        key: &[u8],
                        loc: Option<ValueLoc>|
         -> Result<(Lsn, Option<ValueLoc>), LogError> {
            let rec = match loc {
                Some(loc) => {
                    value.clear();
                    self.log.read_into(loc.lsn, loc.len as usize, &mut value)?;
                    Record::Put {
                        tag,
                        key,
                        value: &value,
                    }
                }
                None => Record::Delete { tag, key },
            };
            let a = self.log.append(&rec)?;
            let loc = ValueLoc::of_record(a.lsn, key, loc.map(|_| &value[..]));
            Ok((a.lsn, loc))
        };
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for (key, loc) in index.map.iter_mut() {
                if in_seg(loc.lsn) {
                    *loc = copy(0, key, Some(*loc))?.1.unwrap_or(*loc);
                }
            }
        }
        for (xid, b) in st.branches.iter_mut() {
            match b.phase {
                Phase::Prepared if touches(b) => {
                    let new = self.next_tag.fetch_add(1, Ordering::Relaxed);
                    // The copies count only once MOVE is logged: until then (say the disk fills
                    // half way) the branch keeps its tag and its original records.
                    let mut moved = b.writes.clone();
                    for (key, entry) in moved.iter_mut() {
                        *entry = copy(new, key, entry.1)?;
                    }
                    let a = self.log.append(&Record::Move {
                        old: b.tag,
                        new,
                        xid: *xid,
                    })?;
                    self.locks.transfer(b.tag, new);
                    b.writes = moved;
                    b.tag = new;
                    b.record_lsn = a.lsn;
                }
                Phase::Working if b.first_lsn.is_some_and(|l| l < end) => {
                    // Same tag: at replay the copies override the originals, and the owner's
                    // later writes come after the copies.
                    let mut first = None;
                    for (key, entry) in b.writes.iter_mut().filter(|(_, e)| in_seg(e.0)) {
                        *entry = copy(b.tag, key, entry.1)?;
                    }
                    for (lsn, _) in b.writes.values() {
                        first = Some(first.map_or(*lsn, |f: Lsn| f.min(*lsn)));
                    }
                    b.first_lsn = first;
                }
                Phase::Heuristic(outcome) if in_seg(b.record_lsn) => {
                    let a = self.log.append(&Record::Heuristic {
                        tag: b.tag,
                        outcome: outcome.to_log(),
                        xid: *xid,
                        reason: b.reason.as_bytes(),
                    })?;
                    b.record_lsn = a.lsn;
                }
                _ => {}
            }
        }
        self.log.retire_oldest(id)?;
        Ok(true)
    }
}
