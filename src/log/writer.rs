//! Appending: writing records at the tail (inside the caller's section), rolling to the next
//! segment, group commit across processes, and retiring the oldest segment.
//!
//! Owns: every write to the log after open. Invariants: records are written only under the
//! region mutex and above the tail, payload before header, so a reader never sees a valid
//! header over missing payload; the tail and `written` advance only by journaled sets after
//! the bytes are in place, and the high-water mark is raised (unjournaled) before they are
//! written, so whatever a rolled-back append leaves above the tail is known and is erased
//! durably before anything else is written there; `durable` only grows, and only to a position
//! everything before which has been synced; once a sync (or the erasure of a failed write)
//! fails, no process appends or acknowledges anything more until the log is reopened.

use super::open::whole;
use super::record::{
    checkpoint_payload, encode, is_zero, padded, record_header, segment_header, Fixed, Kind,
    REC_HEADER, SEG_HEADER, VERSION,
};
use super::shared::{
    region_err, Claimed, Role, R_DURABLE, R_ENDED, R_FIRST_BASE, R_FIRST_ID, R_HIGH, R_ROLLER,
    R_TAIL_BASE, R_TAIL_ID, R_TAIL_OFF, R_TAIL_SIZE, R_WRITTEN, WAIT_KEY,
};
use super::SegmentFile;
use super::{io_err, seg_name, seg_path, write, Appended, Log, LogError, Lsn, Media, Record, Seg};
use crate::config::SyncMode;
use crate::crash::crash_point;
use crate::shm::{root, Txn};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// With `sync=none`, writeback of the tail segment is started every this many bytes.
const WRITEBACK: u64 = 1 << 20;

fn new_salt(id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(id);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A root, read in a section.
fn get(t: &Txn<'_>, r: usize) -> Result<u64, LogError> {
    t.get_u64(root(r)).map_err(region_err)
}

/// A root, set in a section (journaled).
fn set(t: &mut Txn<'_>, r: usize, v: u64) -> Result<(), LogError> {
    t.set_u64(root(r), v).map_err(region_err)
}

/// Commits `t`, then returns `r`: for sections that must keep what they did even when the
/// step failed (the publication of a failure).
fn commit_then<T>(t: Txn<'_>, r: Result<T, LogError>) -> Result<T, LogError> {
    let c = t.commit().map_err(region_err);
    let v = r?;
    c?;
    Ok(v)
}

/// Zeroes `[lo, hi)` of a segment.
fn zero<F: SegmentFile>(file: &F, lo: u64, hi: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut at = lo;
    while at < hi {
        let n = (hi - at).min(ZEROS.len() as u64);
        file.write_at(at, &[&ZEROS[..n as usize]])?;
        at += n;
    }
    Ok(())
}

/// A claim held by this thread: released (in a section of its own) when dropped armed, so an
/// error or a panic never leaves it held by a live process.
struct Holding<'a, M: Media> {
    log: &'a Log<M>,
    role: Role,
    armed: bool,
}

impl<M: Media> Drop for Holding<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            self.log.release(self.role);
        }
    }
}

/// The size of segment 1 of a new log, when the configured size is larger.
pub(super) const FIRST_SEGMENT: u64 = 4 << 20;

/// The size of a new segment `id` of a log whose segments are `max` bytes: segment 1 is
/// [`FIRST_SEGMENT`], each later one twice the one before, up to `max` (from segment 5 on, for
/// 64 MiB). A new store then reserves 4 MiB, not `max`; the rolls that grow it are ordinary
/// rolls, so appends and syncs are as for any segment.
pub(super) fn size_of_new(id: u64, max: u64) -> u64 {
    let shift = id.saturating_sub(1).min(32) as u32;
    FIRST_SEGMENT.min(max).saturating_mul(1 << shift).min(max)
}

impl<M: Media> Log<M> {
    /// The size for a new segment `id` (see [`size_of_new`]).
    pub(super) fn new_size(&self, id: u64) -> u64 {
        size_of_new(id, self.segment_size)
    }

    /// Creates segment `id` durably (see [`Media::create`]): a new salt, a valid header.
    pub(super) fn create_segment(
        media: &M,
        id: u64,
        base: Lsn,
        size: u64,
    ) -> Result<Seg<M::File>, LogError> {
        let salt = new_salt(id);
        let path = seg_path(media.dir(), id);
        let file = media
            .create(
                &seg_name(id),
                size,
                &segment_header(VERSION, id, base, size, salt),
            )
            .map_err(io_err(format!("create {}", path.display())))?;
        Ok(Seg {
            id,
            base,
            salt,
            version: VERSION,
            file,
            path,
        })
    }

    /// Appends a record in the caller's section `t` (not yet durable: see [`Log::sync_to`]).
    /// The record is part of the log once `t` commits; if `t` is rolled back (or its process
    /// dies inside it) the tail goes back and the record with it. If the record does not fit
    /// in the tail segment: [`LogError::NeedRoll`], nothing changed.
    pub fn append(&self, t: &mut Txn<'_>, rec: &Record<'_>) -> Result<Appended, LogError> {
        let mut buf: Fixed = [0; std::mem::size_of::<Fixed>()];
        let (kind, parts) = encode(rec, &mut buf);
        self.append_parts(t, kind, &parts)
    }

    /// Appends a record in a section of its own, rolling the log as needed, and commits it.
    pub fn append_alone(&self, rec: &Record<'_>) -> Result<Appended, LogError> {
        let mut buf: Fixed = [0; std::mem::size_of::<Fixed>()];
        let (kind, parts) = encode(rec, &mut buf);
        self.append_parts_alone(kind, &parts)
    }

    fn append_parts_alone(&self, kind: Kind, parts: &[&[u8]]) -> Result<Appended, LogError> {
        loop {
            let mut t = self.lock()?;
            match self.append_parts(&mut t, kind, parts) {
                Err(LogError::NeedRoll(id)) => {
                    t.rollback();
                    self.roll(id)?;
                }
                // After an error the section holds at most the failure's publication: keep it.
                r => return commit_then(t, r),
            }
        }
    }

    fn append_parts(
        &self,
        t: &mut Txn<'_>,
        kind: Kind,
        parts: &[&[u8]],
    ) -> Result<Appended, LogError> {
        if let Some(why) = self.failed_in(t).map_err(region_err)? {
            return Err(LogError::Failed(why));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = padded(len);
        // Room for this record and a SEGMENT_END marker after it.
        if total + REC_HEADER as u64 + SEG_HEADER > self.segment_size || len > u32::MAX as usize {
            return Err(LogError::TooBig(len));
        }
        let id = get(t, R_TAIL_ID)?;
        let at = get(t, R_TAIL_OFF)?;
        let seg = self.seg(id)?;
        // A segment of an older format (the tail of a log written by an older version) takes
        // no new record: the roll ends it and the record goes to a segment of this version.
        if get(t, R_ENDED)? == id
            || at + total + REC_HEADER as u64 > seg.file.size()
            || seg.version != VERSION
        {
            return Err(LogError::NeedRoll(id));
        }
        self.erase_stale(t, &seg, at)?;
        let end = at + total;
        self.raise_high(seg.base + end)?;
        let vouch = get(t, R_DURABLE)?;
        self.write_record(t, &seg, at, kind, parts, vouch)?;
        set(t, R_TAIL_OFF, end)?;
        set(t, R_WRITTEN, seg.base + end)?;
        if self.sync == SyncMode::None {
            // Nothing syncs this segment before the roll seals it: start writing back each
            // finished chunk now, so that the seal finds little left to write. Best effort.
            let (from, to) = (at / WRITEBACK * WRITEBACK, end / WRITEBACK * WRITEBACK);
            if to > from {
                let _ = seg.file.start_writeback(from, (to - from) as usize);
            }
        }
        crash_point("log.appended_in_section");
        Ok(Appended {
            lsn: seg.base + at,
            end: seg.base + end,
        })
    }

    /// Erases, durably, whatever rolled-back appends left above the tail (`at` in `seg`): the
    /// bytes from there up to the high-water mark. Under the mutex, before anything is written
    /// at the tail. Nothing to do unless a section that appended was rolled back.
    fn erase_stale(&self, t: &mut Txn<'_>, seg: &Seg<M::File>, at: u64) -> Result<(), LogError> {
        let tail = seg.base + at;
        let high = self.load(R_HIGH);
        if high <= tail {
            return Ok(());
        }
        let hi = (high - seg.base).min(seg.file.size());
        // In every sync mode, like the seal: these bytes may be on disk already.
        let erased = zero(&seg.file, at, hi).and_then(|()| match self.sync {
            SyncMode::Fdatasync => seg.file.sync_all(),
            SyncMode::Msync | SyncMode::None => seg.file.sync_range(at, (hi - at) as usize),
        });
        if let Err(e) = erased {
            let why = self.fail_in(
                t,
                &format!(
                    "erasing what a rolled-back append left above the tail of segment {} \
                     failed: {e}",
                    seg.id
                ),
            );
            return Err(LogError::Failed(why));
        }
        self.lower_high(tail)
    }

    fn write_record(
        &self,
        t: &mut Txn<'_>,
        seg: &Seg<M::File>,
        at: u64,
        kind: Kind,
        parts: &[&[u8]],
        vouch: Lsn,
    ) -> Result<(), LogError> {
        let h = record_header(seg.salt, kind, vouch, parts);
        // Payload first, header last: a reader of the mapping never sees a valid header over
        // missing payload bytes.
        let result = seg
            .file
            .write_at(at + REC_HEADER as u64, parts)
            .and_then(|()| seg.file.write_at(at, &[&h]));
        if let Err(e) = result {
            // A failed write may still have left a valid record above the tail, which a reopen
            // would replay although the caller is told it failed: erase its header durably, or
            // fail the log (the caller then learns the outcome only after a reopen).
            let erased =
                seg.file
                    .write_at(at, &[&[0u8; REC_HEADER]])
                    .and_then(|()| match self.sync {
                        SyncMode::Msync => seg.file.sync_range(at, REC_HEADER),
                        SyncMode::Fdatasync => seg.file.sync_all(),
                        SyncMode::None => Ok(()),
                    });
            if let Err(e2) = erased {
                let why = format!("a failed record write ({e}) could not be erased: {e2}");
                return Err(LogError::Failed(self.fail_in(t, &why)));
            }
            return Err(io_err("write record")(e));
        }
        Ok(())
    }

    /// Ends segment `full` (the id a [`LogError::NeedRoll`] named) and starts the next one,
    /// unless another thread or process did already. One roller at a time (a claim in the
    /// region; a dead roller's roll is finished by the next): creates the next segment durably
    /// (or reuses the one a dead roller created, if it holds nothing but its header), writes
    /// SEGMENT_END into `full`, and seals `full` (syncs all of it not yet durable) before the
    /// new tail is published and anything can be written to it, in every sync mode. So no
    /// byte of a segment reaches the disk before all of the previous one, which is what lets
    /// open tell damage followed by whole segments from a torn tail.
    pub fn roll(&self, full: u64) -> Result<(), LogError> {
        let claimed = self.claim(Role::Roller, |t| {
            Ok((t.get_u64(root(R_TAIL_ID))? != full).then_some(()))
        })?;
        if let Claimed::Done(()) = claimed {
            return Ok(());
        }
        let mut held = Holding {
            log: self,
            role: Role::Roller,
            armed: true,
        };
        self.roll_held(full)?;
        held.armed = false;
        crash_point("log.rolled_published");
        Ok(())
    }

    fn roll_held(&self, full: u64) -> Result<(), LogError> {
        let lost = || {
            LogError::Io(
                format!("roll of segment {full}"),
                io::Error::other("the shared tail moved under the roller's claim"),
            )
        };
        let cur = self.seg(full)?;
        let next_base = cur.base + cur.file.size();
        let next = Arc::new(self.next_segment(full + 1, next_base)?);
        crash_point("log.roll_created");
        // End `full` (unless a roller that died did already).
        let (from, end) = {
            let mut t = self.lock()?;
            let r = (|| {
                if get(&t, R_TAIL_ID)? != full {
                    return Err(lost());
                }
                let at = get(&t, R_TAIL_OFF)?;
                if get(&t, R_ENDED)? != full {
                    self.erase_stale(&mut t, &cur, at)?;
                    self.raise_high(cur.base + at + REC_HEADER as u64)?;
                    let vouch = get(&t, R_DURABLE)?;
                    self.write_record(&mut t, &cur, at, Kind::SegmentEnd, &[], vouch)?;
                    set(&mut t, R_ENDED, full)?;
                }
                let end = at + REC_HEADER as u64;
                let durable = get(&t, R_DURABLE)?;
                Ok((durable.clamp(cur.base, cur.base + end) - cur.base, end))
            })();
            commit_then(t, r)?
        };
        crash_point("log.rolled");
        let sealed = match self.sync {
            SyncMode::Fdatasync => cur.file.sync_all(),
            SyncMode::Msync | SyncMode::None => cur.file.sync_range(from, (end - from) as usize),
        };
        if let Err(e) = sealed {
            // Part of the segment may not be durable: the next one must not receive a record.
            let why = self.fail(&format!("sealing segment {full} failed: {e}"));
            return Err(LogError::Failed(why));
        }
        crash_point("log.roll_sealed");
        // Publish: everything before the next segment is durable now (earlier segments were
        // sealed or synced at open), so its records vouch for all of this one.
        let mut t = self.lock()?;
        let me = self.peer.slot as u64 + 1;
        if get(&t, R_TAIL_ID)? != full || get(&t, R_ENDED)? != full || get(&t, R_ROLLER)? != me {
            return Err(lost());
        }
        set(&mut t, R_TAIL_ID, next.id)?;
        set(&mut t, R_TAIL_BASE, next.base)?;
        set(&mut t, R_TAIL_SIZE, next.file.size())?;
        set(&mut t, R_TAIL_OFF, SEG_HEADER)?;
        set(&mut t, R_ENDED, 0)?;
        if get(&t, R_DURABLE)? < next_base {
            set(&mut t, R_DURABLE, next_base)?;
        }
        self.release_in(&mut t, Role::Roller).map_err(region_err)?;
        t.commit().map_err(region_err)?;
        let mut segs = write(&self.segs);
        if let Err(i) = segs.binary_search_by_key(&next.id, |s| s.id) {
            segs.insert(i, next);
        }
        Ok(())
    }

    /// Segment `id` at `base`, for a roll: created, or, if a roll that died created it
    /// already, reused — if it holds nothing but its header (anything else is corruption: the
    /// tail never moved to it) — after a directory sync, as its creation may not be durable.
    fn next_segment(&self, id: u64, base: Lsn) -> Result<Seg<M::File>, LogError> {
        let seg = match Self::open_segment(&self.media, id) {
            Err(LogError::Io(_, e)) if e.kind() == io::ErrorKind::NotFound => {
                return Self::create_segment(&self.media, id, base, self.new_size(id));
            }
            r => r?,
        };
        let corrupt = |what: String| LogError::Corrupt {
            file: seg.path.clone(),
            offset: 0,
            what,
        };
        if seg.base != base {
            return Err(corrupt(format!(
                "a roll found segment {id} with base LSN {}, not {base}",
                seg.base
            )));
        }
        let size = seg.file.size();
        if !whole(&seg, |b| is_zero(&b[SEG_HEADER as usize..], size as usize))? {
            return Err(corrupt(format!(
                "a roll found segment {id} holding data, while the log's tail is segment {}",
                id - 1
            )));
        }
        self.media.sync_dir().map_err(io_err("sync directory"))?;
        Ok(seg)
    }

    /// Returns once everything up to `lsn` is on stable storage. Never inside a section.
    /// Concurrent callers, in any process, share one sync: a single leader flushes for
    /// everyone waiting; if it dies, a waiter takes over. A failed sync fails the log for good,
    /// for every process.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), LogError> {
        if self.sync == SyncMode::None {
            return match self.failed() {
                Some(why) => Err(LogError::Failed(why)),
                None => Ok(()),
            };
        }
        if lsn > self.written() {
            // Nothing can ever make it durable: a caller bug, never a wait.
            return Err(beyond(lsn, self.written()));
        }
        loop {
            if let Some(why) = self.failed() {
                return Err(LogError::Failed(why));
            }
            if self.durable() >= lsn {
                return Ok(());
            }
            let claimed = self.claim(Role::Leader, |t| {
                Ok((t.get_u64(root(R_DURABLE))? >= lsn).then_some(()))
            })?;
            if let Claimed::Done(()) = claimed {
                continue;
            }
            let mut held = Holding {
                log: self,
                role: Role::Leader,
                armed: true,
            };
            self.lead(lsn)?;
            held.armed = false;
        }
    }

    /// The leader's flush: of everything appended and committed up to now, then published.
    fn lead(&self, lsn: Lsn) -> Result<(), LogError> {
        self.leads.fetch_add(1, Ordering::Relaxed);
        // Let runnable threads append first, so this sync covers more of them; with no other
        // runnable thread this returns at once.
        std::thread::yield_now();
        // What to flush, read under the mutex so that only committed appends count. Segments
        // before the tail are sealed, and `durable` is at least the tail's base: the range is
        // in the tail segment.
        let (seg, from, to) = {
            let mut t = self.lock()?;
            let r = (|| {
                let id = get(&t, R_TAIL_ID)?;
                let seg = self.seg(id)?;
                if get(&t, R_ENDED)? != id {
                    // Shortens the time a rolled-back append can come back after a crash.
                    let at = get(&t, R_TAIL_OFF)?;
                    self.erase_stale(&mut t, &seg, at)?;
                }
                Ok((seg, get(&t, R_DURABLE)?, get(&t, R_WRITTEN)?))
            })();
            commit_then(t, r)?
        };
        if lsn > to {
            return Err(beyond(lsn, to));
        }
        crash_point("log.leader_flushing");
        let flushed = catch_unwind(AssertUnwindSafe(|| self.flush(&seg, from, to)));
        crash_point("log.leader_flushed");
        let mut t = self.lock()?;
        let r = (|| {
            let failure = match flushed {
                // A roll may have sealed beyond `to` meanwhile: `durable` never goes back.
                Ok(Ok(())) => {
                    if get(&t, R_DURABLE)? < to {
                        set(&mut t, R_DURABLE, to)?;
                    }
                    None
                }
                Ok(Err(e)) => Some(format!("sync failed: {e}")),
                Err(_) => Some("a panic while syncing the log".to_string()),
            };
            if let Some(why) = failure {
                self.fail_in(&mut t, &why);
            }
            self.release_in(&mut t, Role::Leader).map_err(region_err)
        })();
        commit_then(t, r)
    }

    /// Flushes `[from, to)` of `seg` through this process's mapping (`msync` of a shared
    /// mapping writes the file's dirty pages, whoever dirtied them; `fdatasync` the file).
    fn flush(&self, seg: &Seg<M::File>, from: Lsn, to: Lsn) -> io::Result<()> {
        let lo = from.max(seg.base);
        let hi = to.min(seg.base + seg.file.size());
        if hi <= lo {
            return Ok(());
        }
        match self.sync {
            SyncMode::Fdatasync => seg.file.sync_all(),
            SyncMode::Msync | SyncMode::None => {
                seg.file.sync_range(lo - seg.base, (hi - lo) as usize)
            }
        }
    }

    /// Syncs `[from, to)` of `segs`: at open, to make vouches truthful.
    pub(super) fn flush_segs(
        &self,
        segs: &[Arc<Seg<M::File>>],
        from: Lsn,
        to: Lsn,
    ) -> io::Result<()> {
        for s in segs
            .iter()
            .filter(|s| s.base < to && s.base + s.file.size() > from)
        {
            let lo = from.max(s.base) - s.base;
            let hi = to.min(s.base + s.file.size()) - s.base;
            match self.sync {
                SyncMode::Fdatasync => s.file.sync_all()?,
                // `none` still syncs here: this runs only at open, to make vouches truthful.
                SyncMode::Msync | SyncMode::None => s.file.sync_range(lo, (hi - lo) as usize)?,
            }
        }
        Ok(())
    }

    /// Erases, durably, what appends of rolled-back sections left above the tail (normally the
    /// next append does). For a caller that rolled back a section in which it appended, for an
    /// error it reports as a failure: after this, no crash can bring the record back.
    pub fn erase_rolled_back(&self) -> Result<(), LogError> {
        let mut t = self.lock()?;
        let r = (|| {
            let id = get(&t, R_TAIL_ID)?;
            if get(&t, R_ENDED)? == id {
                return Ok(()); // a roll is under way: its SEGMENT_END lies above the tail
            }
            let seg = self.seg(id)?;
            let at = get(&t, R_TAIL_OFF)?;
            self.erase_stale(&mut t, &seg, at)
        })();
        commit_then(t, r)
    }

    /// Retires the oldest segment `id` once everything live in it has been appended again: a
    /// CHECKPOINT naming the next segment is made durable, then the file is deleted, then the
    /// shared first id moves past it. Readers still holding the segment keep its mapping until
    /// they finish.
    pub fn retire_oldest(&self, id: u64) -> Result<(), LogError> {
        if self.oldest().map(|(first, _, _)| first) != Some(id) {
            return Err(LogError::NotOldest(id));
        }
        let a = self.append_parts_alone(Kind::Checkpoint, &[&checkpoint_payload(id + 1)])?;
        crash_point("retire.checkpoint_appended");
        self.sync_to(a.end)?;
        crash_point("retire.checkpoint_synced");
        // Unlisted only once deleted: if the deletion fails, the segment stays the oldest and
        // the next step retires it again. Deleting a later one first would leave a gap in the
        // segment numbers, which open takes for a lost segment. Already gone: a retirement (in
        // any process) that died after deleting it.
        match self.media.remove(&seg_name(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove reclaimed segment")(e));
            }
            _ => {}
        }
        crash_point("retire.deleted");
        self.media.sync_dir().map_err(io_err("sync directory"))?;
        let next = self.seg(id + 1)?;
        let mut t = self.lock()?;
        if get(&t, R_FIRST_ID)? == id {
            set(&mut t, R_FIRST_ID, id + 1)?;
            set(&mut t, R_FIRST_BASE, next.base)?;
            t.wake(WAIT_KEY);
        }
        t.commit().map_err(region_err)?;
        self.prune(id + 1);
        crash_point("retire.dir_synced");
        Ok(())
    }
}

fn beyond(lsn: Lsn, end: Lsn) -> LogError {
    LogError::Io(
        format!("sync to LSN {lsn} beyond the log's end {end}"),
        io::Error::from(io::ErrorKind::InvalidInput),
    )
}
