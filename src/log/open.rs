//! Opening a log: the segment-set checks, the replay, and the decision between a torn tail
//! (cut it) and corruption (refuse), by the rules of "Validity, torn tails and corruption" in
//! the module doc of `log`.
//!
//! Owns: everything that runs before [`Log::open_on`] returns. Invariants: it runs single
//! threaded, before anyone else can see the log; a failed open has changed no file except
//! stray `*.tmp` ones, and it deletes or rewrites files only once it has decided that what they
//! hold was never acknowledged (a torn tail) or is no longer needed (segments before the last
//! CHECKPOINT's claim).

use super::record::{
    decode, is_zero, parse_segment_header, probe, Entry, Kind, MAX_LSN, MAX_SEGMENT_ID, REC_HEADER,
    RH_KIND, SEG_HEADER,
};
use super::{
    io_err, seg_name, seg_path, Log, LogError, Lsn, Mapped, Media, Record, Seg, SegmentFile, Tail,
};
use crate::config::SyncMode;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Runs `f` over all bytes of `seg`. Only for the single-threaded open scan, when nothing
/// writes to the mapping.
fn whole<F: SegmentFile, R>(seg: &Seg<F>, f: impl FnOnce(&[u8]) -> R) -> Result<R, LogError> {
    seg.file
        .with_bytes(0, seg.file.size() as usize, f)
        .map_err(io_err("read segment"))
}

impl Log {
    /// Opens (or creates) the log in `dir` and replays every valid record through `visit`, in
    /// log order, before returning. A torn tail is cut; corruption is an error.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        sync: SyncMode,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Log, LogError> {
        Log::open_on(Mapped::new(dir), segment_size, sync, visit)
    }
}

impl<M: Media> Log<M> {
    /// [`Log::open`] on the medium `media`.
    pub fn open_on(
        media: M,
        segment_size: u64,
        sync: SyncMode,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Log<M>, LogError> {
        let mut ids = Vec::new();
        let names = media
            .list()
            .map_err(io_err(format!("read {}", media.dir().display())))?;
        for name in names {
            if name.starts_with("log-") && name.ends_with(".tmp") {
                media
                    .remove(&name)
                    .map_err(io_err("remove stray segment"))?;
            } else if let Some(hex) = name
                .strip_prefix("log-")
                .and_then(|n| n.strip_suffix(".seg"))
            {
                if let Ok(id) = u64::from_str_radix(hex, 16) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        let mut segs: Vec<Arc<Seg<M::File>>> = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let seg = Self::open_segment(&media, id)?;
            let corrupt = |what: String| LogError::Corrupt {
                file: seg.path.clone(),
                offset: 0,
                what,
            };
            if id == 1 && seg.base != 0 {
                return Err(corrupt("segment 1 does not start at LSN 0".into()));
            }
            if i > 0 {
                let prev = &segs[i - 1];
                if id != prev.id + 1 {
                    return Err(corrupt(format!("segment {} is missing", prev.id + 1)));
                }
                if seg.base != prev.base + prev.file.size() {
                    return Err(corrupt(
                        "base LSN does not follow the previous segment".into(),
                    ));
                }
            }
            segs.push(Arc::new(seg));
        }
        let first = match segs.first() {
            Some(s) => s.clone(),
            None => Arc::new(Self::create_segment(&media, 1, 0, segment_size)?),
        };
        let mut log = Log {
            media,
            segment_size,
            sync,
            segs: RwLock::new(Vec::new()),
            tail: Mutex::new(Tail {
                seg: first,
                off: SEG_HEADER,
            }),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: Mutex::new(false),
            synced: Condvar::new(),
            failed: AtomicBool::new(false),
            fail_reason: Mutex::new(String::new()),
        };
        if segs.is_empty() {
            segs.push(log.tail.get_mut().expect("fresh mutex").seg.clone());
        }
        let mut first_needed = 1;
        let (mut last, mut off) = log.replay(&segs, &mut first_needed, visit)?;
        segs.truncate(last + 1);
        if segs[0].id > first_needed {
            return Err(LogError::Corrupt {
                file: segs[0].path.clone(),
                offset: 0,
                what: format!("segments {first_needed} to {} are missing", segs[0].id - 1),
            });
        }
        // A CHECKPOINT is appended in or after the segment it names: a claim beyond the last
        // segment is corruption, and would otherwise delete every segment as dead.
        if first_needed > segs[last].id {
            return Err(LogError::Corrupt {
                file: segs[last].path.clone(),
                offset: 0,
                what: format!("a CHECKPOINT names segment {first_needed}, after the last one"),
            });
        }
        // Segments a crash left behind after their CHECKPOINT: dead, delete them now.
        let dead = segs.iter().take_while(|s| s.id < first_needed).count();
        if dead > 0 {
            for s in &segs[..dead] {
                log.media
                    .remove(&seg_name(s.id))
                    .map_err(io_err("remove reclaimed segment"))?;
            }
            log.media.sync_dir().map_err(io_err("sync directory"))?;
            segs.drain(..dead);
            last -= dead;
        }
        let mut seg = segs[last].clone();
        if off == seg.file.size() {
            let next = Self::create_segment(&log.media, seg.id + 1, seg.base + off, segment_size)?;
            seg = Arc::new(next);
            segs.push(seg.clone());
            off = SEG_HEADER;
        }
        let end = seg.base + off;
        // Everything replayed is synced now, so later records may vouch for it truthfully.
        log.flush_segs(&segs, segs[0].base, end)
            .map_err(io_err("sync log at open"))?;
        *log.segs.get_mut().expect("fresh lock") = segs;
        *log.tail.get_mut().expect("fresh mutex") = Tail { seg, off };
        log.written = AtomicU64::new(end);
        log.durable = AtomicU64::new(end);
        Ok(log)
    }

    fn open_segment(media: &M, id: u64) -> Result<Seg<M::File>, LogError> {
        let path = seg_path(media.dir(), id);
        let file = media
            .open(&seg_name(id))
            .map_err(io_err(format!("open {}", path.display())))?;
        let corrupt = |what: &str| LogError::Corrupt {
            file: path.clone(),
            offset: 0,
            what: what.to_string(),
        };
        let mut h = Vec::new();
        file.read_into(0, SEG_HEADER as usize, &mut h)
            .map_err(|_| corrupt("file shorter than a segment header"))?;
        let h = parse_segment_header(&h).map_err(corrupt)?;
        if h.id != id || h.size != file.size() {
            return Err(corrupt("segment id or size does not match the file"));
        }
        // The log writes only such segments; any other could not take a SEGMENT_END marker.
        if h.size % 8 != 0 || h.size < SEG_HEADER + REC_HEADER as u64 {
            return Err(corrupt("segment size too small or not a multiple of 8"));
        }
        // No real log gets near these bounds; they keep id and LSN arithmetic from overflowing.
        if id > MAX_SEGMENT_ID || h.base > MAX_LSN.saturating_sub(h.size) {
            return Err(corrupt("segment id or base LSN out of range"));
        }
        Ok(Seg {
            id,
            base: h.base,
            salt: h.salt,
            file,
            path,
        })
    }

    /// Replays `segs`; returns the index of the tail segment and the append offset in it
    /// (the segment's size when it ended with SEGMENT_END and no next segment exists).
    /// Raises `first_needed` to the highest CHECKPOINT claim seen.
    fn replay(
        &self,
        segs: &[Arc<Seg<M::File>>],
        first_needed: &mut u64,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<(usize, u64), LogError> {
        for (i, seg) in segs.iter().enumerate() {
            let end = whole(seg, |bytes| -> Result<Option<u64>, LogError> {
                let mut off = SEG_HEADER;
                loop {
                    let Some(h) = probe(bytes, seg.salt, off) else {
                        return Ok(Some(off));
                    };
                    // Every append leaves room for a SEGMENT_END after its record (or the log
                    // could not roll on): a record without it ends the valid log like a bad
                    // one. The search for vouching records still counts it.
                    if h.kind != Kind::SegmentEnd
                        && off + h.total + REC_HEADER as u64 > bytes.len() as u64
                    {
                        return Ok(Some(off));
                    }
                    let at = (off as usize) + REC_HEADER;
                    let corrupt = |what: String| LogError::Corrupt {
                        file: seg.path.clone(),
                        offset: off,
                        what,
                    };
                    let entry = decode(h.kind, &bytes[at..at + h.len]).ok_or_else(|| {
                        corrupt("record with a valid checksum does not decode".into())
                    })?;
                    match entry {
                        Entry::Record(rec) => visit(seg.base + off, rec).map_err(corrupt)?,
                        Entry::Checkpoint(claim) => *first_needed = (*first_needed).max(claim),
                        Entry::SegmentEnd => return Ok(None),
                    }
                    off += h.total;
                }
            })??;
            match end {
                Some(off) => {
                    self.cut_tail(segs, i, off)?;
                    return Ok((i, off));
                }
                None if i + 1 == segs.len() => return Ok((i, seg.file.size())),
                None => {}
            }
        }
        // `open_on` creates segment 1 in an empty directory before it replays.
        Err(LogError::Io(
            "replay".into(),
            io::Error::other("no segment to replay"),
        ))
    }

    /// Decides whether the invalid bytes at `segs[i]`+`off` are a torn tail (cut them) or
    /// corruption of synced data (a later record vouches for them).
    fn cut_tail(&self, segs: &[Arc<Seg<M::File>>], i: usize, off: u64) -> Result<(), LogError> {
        let x = segs[i].base + off;
        for (j, seg) in segs.iter().enumerate().skip(i) {
            let from = if j == i { off + 8 } else { SEG_HEADER };
            let vouched = whole(seg, |bytes| {
                let mut pos = from as usize;
                while pos + REC_HEADER <= bytes.len() {
                    // Skip zeroed space a page at a time: usually all that follows the tail.
                    if pos % 4096 == 0 && is_zero(&bytes[pos..], 4096) {
                        pos += 4096;
                        continue;
                    }
                    if bytes[pos + RH_KIND] != 0 {
                        if let Some(h) = probe(bytes, seg.salt, pos as u64) {
                            if h.vouch > x {
                                return Some((pos as u64, h.vouch));
                            }
                        }
                    }
                    pos += 8;
                }
                None
            })?;
            if let Some((pos, vouch)) = vouched {
                return Err(LogError::Corrupt {
                    file: segs[i].path.clone(),
                    offset: off,
                    what: format!(
                        "invalid record before synced data (the record at LSN {} vouches for \
                         LSN {vouch})",
                        seg.base + pos
                    ),
                });
            }
        }
        // A torn tail: zero it durably, then drop the segments after it.
        let seg = &segs[i];
        let last = whole(seg, |bytes| {
            let tail = &bytes[off as usize..];
            let mut end = tail.len();
            while end > 0 {
                let from = end.saturating_sub(4096);
                if !is_zero(&tail[from..], end - from) {
                    return tail[from..end]
                        .iter()
                        .rposition(|&c| c != 0)
                        .map(|p| off + (from + p) as u64 + 1);
                }
                end = from;
            }
            None
        })?;
        if let Some(last) = last {
            const ZEROS: [u8; 4096] = [0; 4096];
            let mut at = off;
            while at < last {
                let n = (last - at).min(ZEROS.len() as u64);
                seg.file
                    .write_at(at, &[&ZEROS[..n as usize]])
                    .map_err(io_err("zero torn tail"))?;
                at += n;
            }
            let len = (last - off) as usize;
            seg.file
                .sync_range(off, len)
                .map_err(io_err("sync torn tail"))?;
        }
        // Newest first: a failure then leaves the remaining segments numbered without a gap.
        for later in segs[i + 1..].iter().rev() {
            self.media
                .remove(&seg_name(later.id))
                .map_err(io_err("remove torn segment"))?;
        }
        if i + 1 < segs.len() {
            self.media.sync_dir().map_err(io_err("sync directory"))?;
        }
        Ok(())
    }
}
