//! Reclaiming log space: the oldest segment's live content is appended again, then the segment
//! is retired (see "Reclaiming space" in the log module's doc for the durable protocol).
//!
//! Owns: when to reclaim and what counts as live: the committed index, and for each branch the
//! positions [`Branch::log_refs`] lists. Invariants: a step runs with every other operation
//! quiesced (no append is between its record and its effect in memory), so the index and the
//! branches describe the log exactly; a working (unprepared) branch's writes are re-logged under
//! its own tag (later records win at replay, and its next writes come after the copies); values
//! saved for savepoints are re-logged under a tag that is rolled back at once; prepared branches
//! move to a new tag with their locks; the segment is deleted only after a synced CHECKPOINT.
//! Every step passes the crash points of [`crate::crash`].

use super::branch::{Branch, LogRef, Phase, WriteEntry};
use super::index::ValueLoc;
use super::Rm;
use crate::crash::crash_point;
use crate::log::{LogError, Lsn, Media, Record};
use crate::xid::Xid;
use std::ops::Range;
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
        let seg = base..end;
        // A completion in flight will append under the tag it read: a prepared branch that
        // would move to a new tag waits for it.
        let pinned = st
            .branches
            .values_mut()
            .any(|b| b.busy && b.phase != Phase::Working && b.refers_to(&seg));
        if pinned {
            return Ok(false);
        }
        // Copies go in log order (committed values by LSN, branches by tag), never in hash
        // order: the same log and calls give the same layout, so a crash point names a state.
        let mut buf = Vec::new();
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            let mut live: Vec<(Vec<u8>, ValueLoc)> = (index.map.iter())
                .filter(|(_, loc)| seg.contains(&loc.lsn))
                .map(|(key, loc)| (key.clone(), *loc))
                .collect();
            live.sort_unstable_by_key(|(_, loc)| loc.lsn);
            for (key, loc) in live {
                let (_, copy) = self.copy(0, &key, Some(loc), &mut buf)?;
                if let (Some(entry), Some(copy)) = (index.map.get_mut(&key), copy) {
                    *entry = copy;
                }
                crash_point("compact.copied_committed");
            }
        }
        let mut touched: Vec<(&Xid, &mut Branch)> = (st.branches.iter_mut())
            .filter_map(|(xid, b)| b.refers_to(&seg).then_some((xid, b)))
            .collect();
        touched.sort_unstable_by_key(|(_, b)| b.tag);
        for (xid, b) in touched {
            self.relog_saved(b, &seg, &mut buf)?;
            match b.phase {
                Phase::Working => self.relog_working(b, &seg, &mut buf)?,
                Phase::Prepared => self.move_prepared(xid, b, &mut buf)?,
                Phase::Heuristic(outcome) => {
                    // Its writes were applied or dropped at the decision: only the record
                    // stating it is left.
                    let a = self.log.append_alone(&Record::Heuristic {
                        tag: b.tag,
                        outcome: outcome.to_log(),
                        xid: *xid,
                        reason: b.reason.as_bytes(),
                    })?;
                    crash_point("compact.restated_heuristic");
                    b.record_lsn = a.lsn;
                }
            }
        }
        self.log.retire_oldest(id)?;
        Ok(true)
    }

    /// Appends `key`'s write (`loc` is its value, None a delete) again under `tag`; returns
    /// the copy's position. `buf` is scratch space for the value.
    fn copy(
        &self,
        tag: u64,
        key: &[u8],
        loc: Option<ValueLoc>,
        buf: &mut Vec<u8>,
    ) -> Result<WriteEntry, LogError> {
        let rec = match loc {
            Some(loc) => {
                buf.clear();
                self.log.read_into(loc.lsn, loc.len as usize, buf)?;
                Record::Put {
                    tag,
                    key,
                    value: buf,
                }
            }
            None => Record::Delete { tag, key },
        };
        let a = self.log.append_alone(&rec)?;
        Ok((
            a.lsn,
            ValueLoc::of_record(a.lsn, key, loc.map(|_| &buf[..])),
        ))
    }

    /// Values saved for rollbacks to savepoints are bytes to keep, not writes: they are
    /// re-logged under a tag of their own, rolled back at once, so replay never counts them.
    fn relog_saved(
        &self,
        b: &mut Branch,
        seg: &Range<Lsn>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let mut scratch = None;
        for r in b.log_refs() {
            if let LogRef::Saved(key, loc) = r {
                if seg.contains(&loc.lsn) {
                    let tag = *scratch
                        .get_or_insert_with(|| self.next_tag.fetch_add(1, Ordering::Relaxed));
                    let (_, copy) = self.copy(tag, key, Some(*loc), buf)?;
                    *loc = copy.unwrap_or(*loc);
                    crash_point("compact.copied_saved");
                }
            }
        }
        if let Some(tag) = scratch {
            // Unsynced: without it, open rolls the tag back like any unprepared branch.
            self.log.append_alone(&Record::Rollback { tag })?;
        }
        Ok(())
    }

    /// A working branch's writes in the segment are re-logged under its own tag: at replay the
    /// copies override the originals, and the owner's later writes come after the copies.
    fn relog_working(
        &self,
        b: &mut Branch,
        seg: &Range<Lsn>,
        buf: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let tag = b.tag;
        for r in b.log_refs() {
            if let LogRef::Write(key, entry) = r {
                if seg.contains(&entry.0) {
                    *entry = self.copy(tag, key, entry.1, buf)?;
                    crash_point("compact.copied_working");
                }
            }
        }
        Ok(())
    }

    /// A prepared branch moves to a new tag, with its locks: all its writes are re-logged under
    /// it, then MOVE. The copies count only once MOVE is logged: until then (say the disk fills
    /// half way) the branch keeps its tag and its original records.
    fn move_prepared(&self, xid: &Xid, b: &mut Branch, buf: &mut Vec<u8>) -> Result<(), LogError> {
        let new = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut copies = Vec::new();
        for r in b.log_refs() {
            if let LogRef::Write(key, entry) = r {
                copies.push(self.copy(new, key, entry.1, buf)?);
                crash_point("compact.copied_prepared");
            }
        }
        crash_point("compact.before_move");
        let a = self.log.append_alone(&Record::Move {
            old: b.tag,
            new,
            xid: *xid,
        })?;
        crash_point("compact.moved");
        self.locks.transfer(b.tag, new);
        b.tag = new;
        let mut copies = copies.into_iter();
        for r in b.log_refs() {
            match r {
                LogRef::Write(_, entry) => *entry = copies.next().expect("a copy per write"),
                LogRef::Stated(lsn) => *lsn = a.lsn,
                // Re-logged already (`relog_saved`), under no branch's tag.
                LogRef::Saved(..) => {}
            }
        }
        Ok(())
    }
}
