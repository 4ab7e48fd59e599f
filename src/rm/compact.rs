//! Reclaiming log space: the oldest segment's live content is appended again, then the segment
//! is retired (see "Reclaiming space" in the log module's doc for the durable protocol).
//!
//! Owns: when to reclaim and what counts as live: committed values, and for each branch the log
//! positions it refers to — its pending writes, the values its savepoints would restore, the
//! record stating it (PREPARE, MOVE, HEURISTIC). Invariants: one process reclaims at a time
//! (its slot in a root; a dead reclaimer's claim is void), and none while a live backup pins
//! the log (`backup.rs`: the claim is refused, and a reclaimer stops before its next step); each piece is copied in a section
//! that also points the shared state at the copy, so the state describes the log exactly
//! between pieces and others work meanwhile (new records always go to the tail, never into the
//! oldest segment); a working (unprepared) branch's writes are re-logged under its own tag
//! (later records win at replay, and its next writes come after the copies); values saved for
//! savepoints are re-logged under a tag that is rolled back at once; a prepared branch moves to
//! a new tag (copies, then MOVE, in one section; it keeps its locks: they are held by its
//! record, not its tag); a restated PREPARE (as MOVE) or HEURISTIC keeps the time the branch's
//! record stated (unknown stays unknown); the segment is deleted only after a synced CHECKPOINT, and only once a
//! last look finds nothing left in it. Every step passes the crash points of [`crate::crash`].

use super::branch;
use super::keys::{self, Pending, ValueLoc};
use super::layout::*;
use super::{Rm, Sect};
use crate::crash::crash_point;
use crate::error::Error;
use crate::log::{LogError, Lsn, Media, Record};
use crate::shm::{Cursor, Off, Txn};
use std::ops::Range;
use std::sync::atomic::Ordering;

/// Reclaim while the log is larger than this many times the live data, plus three segments.
const SPACE_FACTOR: u64 = 2;

/// Most segments one caller reclaims in a row.
const MAX_STEPS: usize = 16;

/// Committed keys looked at per section.
const CHUNK: usize = 256;

/// Writes of a branch re-logged in one section at most (each costs about 200 bytes of the
/// section's 1 MiB journal, with room to spare for the rest).
const MAX_RELOG_WRITES: usize = 2000;

impl<M: Media> Rm<M> {
    /// Whether the log holds enough dead space to reclaim its oldest segment.
    fn wants_compaction(&self) -> bool {
        let (count, bytes) = self.log.disk_usage();
        let Ok((live, after)) =
            self.shared(|t| Ok((t.get_u64(R_LIVE_BYTES)?, t.get_u64(R_COMPACT_AFTER)?)))
        else {
            return false;
        };
        count >= 3
            && bytes > SPACE_FACTOR * live + 3 * self.log.segment_size()
            && self.log.written() >= after
    }

    /// Whether the process in `slot` + 1 (a root's value) is known to be dead.
    pub(super) fn slot_dead(&self, slot: u64) -> bool {
        self.lockfile
            .as_ref()
            .is_some_and(|lf| lf.is_dead(slot as u32 - 1).unwrap_or(false))
    }

    /// Whether a live backup in another process pins the log's segments (see `backup.rs`).
    pub(super) fn pinned(&self, t: &Txn<'_>) -> Sect<bool> {
        let pin = t.get_u64(R_BACKUP)?;
        Ok(pin != 0 && pin != self.slot as u64 && !self.slot_dead(pin))
    }

    /// Claims the reclaimer's role for this process (none may hold it but a dead one), unless
    /// a backup pins the log.
    fn claim_compactor(&self) -> bool {
        let me = self.slot as u64;
        self.shared(|t| {
            let cur = t.get_u64(R_COMPACTOR)?;
            let free = (cur == 0 || cur == me || self.slot_dead(cur)) && !self.pinned(t)?;
            if free {
                t.set_u64(R_COMPACTOR, me)?;
            }
            Ok(free)
        })
        .unwrap_or(false)
    }

    fn release_compactor(&self) {
        let me = self.slot as u64;
        let _ = self.shared(|t| {
            if t.get_u64(R_COMPACTOR)? == me {
                t.set_u64(R_COMPACTOR, 0)?;
            }
            Ok(())
        });
    }

    /// Called after work that grows the log, outside any section: reclaims one segment if the
    /// log has grown well past its live data. One reclaimer at a time; others go on.
    pub(super) fn maybe_compact(&self) {
        if !self.wants_compaction() || self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.claim_compactor() {
            // Several steps per turn: others skip while one reclaims, so one step per trigger
            // could fall behind many committers. Bounded, to bound this caller's delay.
            for _ in 0..MAX_STEPS {
                // A backup that pinned the log meanwhile waits for this claim to end.
                if self.shared(|t| self.pinned(t)).unwrap_or(true) {
                    break;
                }
                match self.compact_step() {
                    Ok(true) if self.wants_compaction() => {}
                    Ok(true) => break,
                    // Pinned by a branch, or failed: try again once the log has grown.
                    Ok(false) | Err(_) => {
                        let after = self.log.written() + self.log.segment_size() / 4;
                        let _ = self.shared(|t| {
                            t.set_u64(R_COMPACT_AFTER, after)?;
                            Ok(())
                        });
                        break;
                    }
                }
            }
            self.release_compactor();
        }
        self.compacting.store(false, Ordering::Release);
    }

    /// After an append failed for lack of disk space (outside any section): reclaiming may free
    /// a segment, so the next attempt can succeed even below the usual threshold.
    pub(super) fn after_no_space(&self) {
        if !self.compacting.swap(true, Ordering::AcqRel) {
            if self.claim_compactor() {
                let _ = self.compact_step();
                self.release_compactor();
            }
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Reclaims the oldest segment, if nothing pins it. Returns whether it was retired.
    pub fn compact_step(&self) -> std::result::Result<bool, LogError> {
        // One step at a time in this process: two would copy the same values and race to
        // retire the same segment.
        let _one = self
            .compact_step_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some((id, base, end)) = self.log.oldest() else {
            return Ok(false);
        };
        if self.failed().is_some() {
            return Ok(false);
        }
        let seg = base..end;
        let err =
            |e: Error| LogError::Io("reclaiming".into(), std::io::Error::other(e.to_string()));
        // Two passes: the second only confirms that nothing is left in the segment (every new
        // record goes to the tail, so whatever the first pass moved stays moved).
        for _ in 0..2 {
            // Branches first: a completion applying a pending write whose record is in `seg`
            // after the committed values were scanned would leave a committed value in a
            // retired segment. Once the branches are moved (or one pins `seg`, being busy),
            // every pending write left in `seg` is a busy one, which the scan of committed
            // values finds and is pinned by.
            let Some(moved_branches) = self.relog_branches(&seg).map_err(err)? else {
                return Ok(false);
            };
            match self.relog_committed(&seg).map_err(err)? {
                None => return Ok(false),
                Some(0) if moved_branches == 0 => {
                    return match self.log.retire_oldest(id) {
                        // Another process retired it meanwhile (a reclaimer of its own, or one
                        // that took over from a dead one): nothing left to do here.
                        Err(LogError::NotOldest(_))
                            if self.log.oldest().map(|(first, _, _)| first) != Some(id) =>
                        {
                            Ok(false)
                        }
                        r => r.map(|()| true),
                    };
                }
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// Copies every committed value in `seg` to the tail (tag 0), a chunk per section. Returns
    /// how many it copied, or None if a completion in progress pins one of them: its COMMIT (or
    /// one-operation PUT) may be in the log already, ahead of a copy of the old value, which
    /// replay would then apply last.
    fn relog_committed(&self, seg: &Range<Lsn>) -> crate::error::Result<Option<usize>> {
        let mut cursor = Cursor::START;
        let mut copied = 0;
        loop {
            let (n, next) = self.appending(|t| {
                let (chunk, next) = KEYS.scan(t, cursor, CHUNK)?;
                // Log order within a chunk, so a crash point names the same state each run.
                let mut live = Vec::new();
                for k in chunk {
                    let pending = keys::pending(t, k)?;
                    if let Some(p) = pending.filter(|p| seg.contains(&p.record)) {
                        // A completion about to apply a write in `seg` (see `compact_step`).
                        if branch::busy(t, p.owner)? != Busy::None {
                            return Ok((None, None));
                        }
                    }
                    if let Some(loc) = keys::committed(t, k)?.filter(|l| seg.contains(&l.lsn)) {
                        if let Some(p) = pending {
                            if branch::busy(t, p.owner)? != Busy::None {
                                return Ok((None, None));
                            }
                        }
                        live.push((loc.lsn, k));
                    }
                }
                live.sort_unstable();
                let mut buf = Vec::new();
                let (mut logged, mut n) = (0u64, 0);
                for &(_, k) in &live {
                    let key = key_of(t, k)?;
                    let loc = keys::committed(t, k)?;
                    // A section appends at most half the smallest segment: past that, the rest
                    // of this chunk goes in the next section (the copies made are out of `seg`,
                    // so scanning the chunk again finds only the others).
                    let len = loc.map_or(0, |l| l.len as u64) + key.len() as u64;
                    if logged > 0 && logged + len > self.section_log_budget() {
                        return Ok((Some(n), Some(cursor)));
                    }
                    let copy = self.copy(t, 0, &key, loc, &mut buf)?;
                    keys::set_committed(t, k, copy.1)?;
                    crash_point("compact.copied_committed");
                    logged += len;
                    n += 1;
                }
                Ok((Some(n), next))
            })?;
            let Some(n) = n else {
                return Ok(None);
            };
            copied += n;
            match next {
                Some(c) => cursor = c,
                None => return Ok(Some(copied)),
            }
        }
    }

    /// Re-logs what every branch refers to in `seg`, one branch per section, in tag order.
    /// Returns how many branches it touched, or None if a completion in progress pins the
    /// segment (it will append under the tag it read).
    fn relog_branches(&self, seg: &Range<Lsn>) -> crate::error::Result<Option<usize>> {
        let touched: Option<Vec<(u64, Off)>> = self.shared(|t| {
            let mut v = Vec::new();
            for b in BRANCHES.all(t)? {
                if !Self::refers_to(t, b, seg)? {
                    continue;
                }
                if branch::busy(t, b)? != Busy::None {
                    return Ok(None);
                }
                v.push((branch::tag(t, b)?, b));
            }
            v.sort_unstable();
            Ok(Some(v))
        })?;
        let Some(touched) = touched else {
            return Ok(None);
        };
        for &(tag, b) in &touched {
            let done = self.appending(|t| {
                // Still the same branch, still in need, and not busy meanwhile?
                if BRANCHES
                    .find(t, t.get_u64(b + B_HASH)?, |x| Ok(x == b))?
                    .is_none()
                    || branch::tag(t, b)? != tag
                    || !Self::refers_to(t, b, seg)?
                {
                    return Ok(true);
                }
                if branch::busy(t, b)? != Busy::None || self.too_big_to_relog(t, b)? {
                    return Ok(false);
                }
                self.relog_saved(t, b, seg)?;
                match branch::phase(t, b)? {
                    PHASE_WORKING => self.relog_working(t, b, seg)?,
                    PHASE_PREPARED => self.move_prepared(t, b)?,
                    _ => {
                        // Its writes were applied or dropped at the decision: only the record
                        // stating it is left.
                        let xid = read_xid(t, b)?;
                        let outcome = outcome_from_u8(t.get_u8(b + B_OUTCOME)?)?;
                        let reason = text(t, b)?;
                        let a = self.log.append(
                            t,
                            &Record::Heuristic {
                                tag,
                                outcome: outcome.to_log(),
                                xid,
                                reason: reason.as_bytes(),
                                // The decision's time, restated.
                                at: since(t, b)?,
                            },
                        )?;
                        crash_point("compact.restated_heuristic");
                        t.set_u64(b + B_RECORD_LSN, a.lsn)?;
                    }
                }
                Ok(true)
            })?;
            if !done {
                return Ok(None);
            }
        }
        Ok(Some(touched.len()))
    }

    /// Whether branch `b`'s writes are too many, or too big, to re-log in one section (a
    /// prepared branch moves in one section: its copies count only with its MOVE record). Such a
    /// branch pins its segment until it ends, as a completion in progress does.
    fn too_big_to_relog(&self, t: &Txn<'_>, b: Off) -> Sect<bool> {
        let writes = branch::pending_writes(t, b)?;
        let saved = journal(b).items(t)?;
        if writes.len() + saved.len() / 3 > MAX_RELOG_WRITES {
            return Ok(true);
        }
        let mut bytes = 0;
        for (k, p) in &writes {
            bytes += p.value.map_or(0, |v| v.len as u64) + key_len(t, *k)? as u64;
        }
        // Values a rollback to a savepoint may restore: length in bits 8 and up of the flags.
        for e in saved.chunks(3) {
            bytes += e.get(2).map_or(0, |f| f >> 8);
        }
        Ok(bytes > self.section_log_budget())
    }

    /// Whether branch `b` refers to a position in `seg`.
    fn refers_to(t: &Txn<'_>, b: Off, seg: &Range<Lsn>) -> Sect<bool> {
        let phase = branch::phase(t, b)?;
        if phase != PHASE_WORKING && seg.contains(&t.get_u64(b + B_RECORD_LSN)?) {
            return Ok(true);
        }
        for (_, p) in branch::pending_writes(t, b)? {
            if seg.contains(&p.record) {
                return Ok(true);
            }
        }
        for e in journal(b).items(t)?.chunks(3) {
            if e[2] & 2 != 0 && seg.contains(&e[1]) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends `key`'s write (`loc` is its value, None a delete) again under `tag`; returns the
    /// copy's record LSN and value. `buf` is scratch space for the value.
    fn copy(
        &self,
        t: &mut Txn<'_>,
        tag: u64,
        key: &[u8],
        loc: Option<ValueLoc>,
        buf: &mut Vec<u8>,
    ) -> Sect<(Lsn, Option<ValueLoc>)> {
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
        let a = self.log.append(t, &rec)?;
        Ok((
            a.lsn,
            ValueLoc::of_record(a.lsn, key, loc.map(|_| &buf[..])),
        ))
    }

    /// Values saved for rollbacks to savepoints are bytes to keep, not writes: they are
    /// re-logged under a tag of their own, rolled back at once, so replay never counts them.
    fn relog_saved(&self, t: &mut Txn<'_>, b: Off, seg: &Range<Lsn>) -> Sect<()> {
        let j = journal(b);
        let entries = j.items(t)?;
        let mut scratch = None;
        let mut buf = Vec::new();
        for (i, e) in entries.chunks(3).enumerate() {
            let (k, lsn, flags) = (e[0], e[1], e[2]);
            if flags & 2 == 0 || !seg.contains(&lsn) {
                continue;
            }
            let tag = match scratch {
                Some(tag) => tag,
                None => {
                    let tag = t.get_u64(R_NEXT_TAG)?;
                    t.set_u64(R_NEXT_TAG, tag + 1)?;
                    scratch = Some(tag);
                    tag
                }
            };
            let key = key_of(t, k)?;
            let loc = ValueLoc {
                lsn,
                len: (flags >> 8) as u32,
            };
            let (_, copy) = self.copy(t, tag, &key, Some(loc), &mut buf)?;
            if let Some(c) = copy {
                j.set(t, 3 * i as u64 + 1, c.lsn)?;
            }
            crash_point("compact.copied_saved");
        }
        if let Some(tag) = scratch {
            // Unsynced: without it, open rolls the tag back like any unprepared branch.
            self.log.append(t, &Record::Rollback { tag })?;
        }
        Ok(())
    }

    /// A working branch's writes in the segment are re-logged under its own tag: at replay the
    /// copies override the originals, and the owner's later writes come after the copies.
    fn relog_working(&self, t: &mut Txn<'_>, b: Off, seg: &Range<Lsn>) -> Sect<()> {
        let tag = branch::tag(t, b)?;
        let mut buf = Vec::new();
        let mut writes = branch::pending_writes(t, b)?;
        writes.sort_unstable_by_key(|(_, p)| p.record);
        for (k, p) in writes {
            if seg.contains(&p.record) {
                let key = key_of(t, k)?;
                let (record, value) = self.copy(t, tag, &key, p.value, &mut buf)?;
                keys::set_pending(
                    t,
                    k,
                    Some(Pending {
                        owner: b,
                        value,
                        record,
                    }),
                )?;
                crash_point("compact.copied_working");
            }
        }
        Ok(())
    }

    /// A prepared branch moves to a new tag: all its writes are re-logged under it, then MOVE,
    /// in this one section. The copies count only once MOVE is logged: until then (say the disk
    /// fills half way) the branch keeps its tag and its original records.
    fn move_prepared(&self, t: &mut Txn<'_>, b: Off) -> Sect<()> {
        let old = branch::tag(t, b)?;
        let xid = read_xid(t, b)?;
        let new = t.get_u64(R_NEXT_TAG)?;
        t.set_u64(R_NEXT_TAG, new + 1)?;
        let mut buf = Vec::new();
        let mut writes = branch::pending_writes(t, b)?;
        writes.sort_unstable_by_key(|(_, p)| p.record);
        let mut copies = Vec::new();
        for (k, p) in &writes {
            let key = key_of(t, *k)?;
            copies.push(self.copy(t, new, &key, p.value, &mut buf)?);
            crash_point("compact.copied_prepared");
        }
        crash_point("compact.before_move");
        // The prepare's own time, not now's: the branch's age goes on from it.
        let at = since(t, b)?;
        let a = self.log.append(t, &Record::Move { old, new, xid, at })?;
        crash_point("compact.moved");
        t.set_u64(b + B_TAG, new)?;
        t.set_u64(b + B_RECORD_LSN, a.lsn)?;
        for ((k, _), (record, value)) in writes.into_iter().zip(copies) {
            keys::set_pending(
                t,
                k,
                Some(Pending {
                    owner: b,
                    value,
                    record,
                }),
            )?;
        }
        Ok(())
    }
}
