//! Appending: writing records at the tail, rolling to the next segment, group commit, and
//! retiring the oldest segment.
//!
//! Owns: every write to the log after open. Invariants: records are written only under the
//! tail lock and above the published end ([`Log::written`]), payload before header, so a
//! reader never sees a valid header over missing payload; `durable` only grows, and only to
//! a position everything before which has been synced; once a sync (or the erasure of a failed
//! write) fails, the log appends and acknowledges nothing more until it is reopened.

use super::record::{
    checkpoint_payload, encode, padded, record_header, segment_header, Fixed, Kind, REC_HEADER,
    SEG_HEADER,
};
use super::SegmentFile;
use super::{
    io_err, lock, read, seg_name, seg_path, write, Appended, Log, LogError, Lsn, Media, Record,
    Seg, Tail,
};
use crate::config::SyncMode;
use crate::crash::crash_point;
use std::io;
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

impl<M: Media> Log<M> {
    pub(super) fn fail(&self, why: String) {
        let mut r = lock(&self.fail_reason);
        if r.is_empty() {
            *r = why;
        }
        drop(r);
        self.failed.store(true, Ordering::Release);
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
            .create(&seg_name(id), size, &segment_header(id, base, size, salt))
            .map_err(io_err(format!("create {}", path.display())))?;
        Ok(Seg {
            id,
            base,
            salt,
            file,
            path,
        })
    }

    /// Appends a record (not yet durable: see [`Log::sync_to`]).
    pub fn append(&self, rec: &Record<'_>) -> Result<Appended, LogError> {
        let mut buf: Fixed = [0; std::mem::size_of::<Fixed>()];
        let (kind, parts) = encode(rec, &mut buf);
        self.append_parts(kind, &parts)
    }

    fn append_parts(&self, kind: Kind, parts: &[&[u8]]) -> Result<Appended, LogError> {
        if let Some(why) = self.failed() {
            return Err(LogError::Failed(why));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = padded(len);
        // Room for this record and a SEGMENT_END marker after it.
        if total + REC_HEADER as u64 + SEG_HEADER > self.segment_size || len > u32::MAX as usize {
            return Err(LogError::TooBig(len));
        }
        let mut tail = lock(&self.tail);
        if tail.off + total + REC_HEADER as u64 > tail.seg.file.size() {
            self.roll(&mut tail)?;
        }
        let at = tail.off;
        self.write_record(&tail.seg, at, kind, parts)?;
        tail.off += total;
        if self.sync == SyncMode::None {
            // Nothing syncs this segment before the roll seals it: start writing back each
            // finished chunk now, so that the seal finds little left to write. Best effort.
            let (from, to) = (at / WRITEBACK * WRITEBACK, tail.off / WRITEBACK * WRITEBACK);
            if to > from {
                let _ = tail.seg.file.start_writeback(from, (to - from) as usize);
            }
        }
        let lsn = tail.seg.base + at;
        let end = tail.seg.base + tail.off;
        self.written.store(end, Ordering::Release);
        Ok(Appended { lsn, end })
    }

    fn write_record(
        &self,
        seg: &Seg<M::File>,
        at: u64,
        kind: Kind,
        parts: &[&[u8]],
    ) -> Result<(), LogError> {
        let vouch = self.durable.load(Ordering::Acquire);
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
                self.fail(why.clone());
                return Err(LogError::Failed(why));
            }
            return Err(io_err("write record")(e));
        }
        Ok(())
    }

    /// Ends the tail segment and starts the next one: creates the next segment durably,
    /// writes SEGMENT_END, and seals the segment (syncs all of it not yet durable) before
    /// anything can be written to the next one, in every sync mode. So no byte of a segment
    /// reaches the disk before all of the previous one, which is what lets open tell damage
    /// followed by whole segments from a torn tail.
    fn roll(&self, tail: &mut Tail<M::File>) -> Result<(), LogError> {
        let cur = tail.seg.clone();
        let next_base = cur.base + cur.file.size();
        let next = Arc::new(Self::create_segment(
            &self.media,
            cur.id + 1,
            next_base,
            self.segment_size,
        )?);
        self.write_record(&cur, tail.off, Kind::SegmentEnd, &[])?;
        crash_point("log.rolled");
        let end = tail.off + REC_HEADER as u64;
        let from = self
            .durable
            .load(Ordering::Acquire)
            .clamp(cur.base, cur.base + end)
            - cur.base;
        let sealed = match self.sync {
            SyncMode::Fdatasync => cur.file.sync_all(),
            SyncMode::Msync | SyncMode::None => cur.file.sync_range(from, (end - from) as usize),
        };
        if let Err(e) = sealed {
            // Part of the segment may not be durable: the next one must not receive a record.
            let why = format!("sealing segment {} failed: {e}", cur.id);
            self.fail(why.clone());
            return Err(LogError::Failed(why));
        }
        // Everything before the next segment is durable now (earlier segments were sealed or
        // synced at open), so its records vouch for all of this one.
        self.durable.fetch_max(next_base, Ordering::AcqRel);
        write(&self.segs).push(next.clone());
        *tail = Tail {
            seg: next,
            off: SEG_HEADER,
        };
        Ok(())
    }

    /// Returns once everything up to `lsn` is on stable storage. Concurrent callers share one
    /// sync: a single leader flushes for everyone waiting. A failed sync fails the log for good.
    pub fn sync_to(&self, lsn: Lsn) -> Result<(), LogError> {
        if self.sync == SyncMode::None {
            return match self.failed() {
                Some(why) => Err(LogError::Failed(why)),
                None => Ok(()),
            };
        }
        if lsn > self.written() {
            // Nothing can ever make it durable: a caller bug, never a wait.
            return Err(LogError::Io(
                format!("sync to LSN {lsn} beyond the log's end {}", self.written()),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        let mut syncing = lock(&self.syncing);
        loop {
            if let Some(why) = self.failed() {
                return Err(LogError::Failed(why));
            }
            if self.durable.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if *syncing {
                syncing = self.synced.wait(syncing).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            *syncing = true;
            drop(syncing);
            // Let runnable threads append first, so this sync covers more of them; with no
            // other runnable thread this returns at once.
            std::thread::yield_now();
            let from = self.durable.load(Ordering::Acquire);
            let to = self.written();
            let result = self.flush(from, to);
            syncing = lock(&self.syncing);
            *syncing = false;
            match result {
                // A roll may have sealed beyond `to` meanwhile: `durable` never goes back.
                Ok(()) => {
                    self.durable.fetch_max(to, Ordering::AcqRel);
                }
                Err(e) => self.fail(format!("sync failed: {e}")),
            }
            self.synced.notify_all();
        }
    }

    fn flush(&self, from: Lsn, to: Lsn) -> io::Result<()> {
        let segs: Vec<Arc<Seg<M::File>>> = {
            read(&self.segs)
                .iter()
                .filter(|s| s.base < to && s.base + s.file.size() > from)
                .cloned()
                .collect()
        };
        self.flush_segs(&segs, from, to)
    }

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

    /// Retires the oldest segment `id` once everything live in it has been appended again: a
    /// CHECKPOINT naming the next segment is made durable, then the file is deleted. Readers
    /// still holding the segment keep its mapping until they finish.
    pub fn retire_oldest(&self, id: u64) -> Result<(), LogError> {
        if self.oldest().map(|(first, _, _)| first) != Some(id) {
            return Err(LogError::NotOldest(id));
        }
        let a = self.append_parts(Kind::Checkpoint, &[&checkpoint_payload(id + 1)])?;
        crash_point("retire.checkpoint_appended");
        self.sync_to(a.end)?;
        crash_point("retire.checkpoint_synced");
        // Unlisted only once deleted: if the deletion fails, the segment stays the oldest and
        // the next step retires it again. Deleting a later one first would leave a gap in the
        // segment numbers, which open takes for a lost segment.
        self.media
            .remove(&seg_name(id))
            .map_err(io_err("remove reclaimed segment"))?;
        crash_point("retire.deleted");
        write(&self.segs).remove(0);
        self.media.sync_dir().map_err(io_err("sync directory"))?;
        crash_point("retire.dir_synced");
        Ok(())
    }
}
