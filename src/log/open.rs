//! Opening a log: the segment-set checks, the replay, and the decision between a torn tail
//! (cut it) and corruption (refuse), by the rules of "Validity, torn tails and corruption" in
//! the module doc of `log`.
//!
//! Owns: everything that runs before [`Log::open_on`] or [`Log::attach`] returns. Invariants:
//! the open runs single threaded, before anyone else can see the log (its region is still being
//! built); it decides everything before it changes a file, so an open that finds corruption has
//! changed none (stray `*.tmp` files aside), and it deletes or rewrites files only once it has
//! decided that what they hold was never acknowledged (a torn tail, empty later segments) or is
//! no longer needed (segments before the newest CHECKPOINT's claim). Attaching reads the shared
//! tail and changes nothing.

use super::record::{
    decode, is_zero, parse_segment_header, probe, Entry, Kind, MAX_LSN, MAX_SEGMENT_ID, REC_HEADER,
    RH_KIND, SEG_HEADER,
};
use super::shared::{
    give_back, local_region, region_err, sync_code, LOCK_TIMEOUT, MAGIC, R_DURABLE, R_ENDED,
    R_FAILED, R_FIRST_BASE, R_FIRST_ID, R_HIGH, R_LEADER, R_MAGIC, R_ROLLER, R_SEGMENT_SIZE,
    R_SYNC, R_TAIL_BASE, R_TAIL_ID, R_TAIL_OFF, R_TAIL_SIZE, R_WRITTEN,
};
use super::{
    io_err, seg_name, seg_path, write, Log, LogError, Lsn, Mapped, Media, Peer, Record, Seg,
    SegmentFile,
};
use crate::config::SyncMode;
use crate::shm::{root, Region, STATE_BUILDING};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

/// Where the valid log ends, as the replay found it.
struct Scan {
    /// Index of the tail segment.
    last: usize,
    /// Where appending resumes in it; everything from here on is a torn tail.
    off: u64,
    /// The highest CHECKPOINT claim, 1 without any: the first segment still needed.
    first_needed: u64,
}

/// How the records of one segment end.
enum End {
    /// With an invalid record (or none) at this offset.
    Invalid(u64),
    /// With a SEGMENT_END at this offset.
    SegmentEnd(u64),
}

/// Runs `f` over all bytes of `seg`. Only for the single-threaded open scan, when nothing
/// writes to the mapping.
pub(super) fn whole<F: SegmentFile, R>(
    seg: &Seg<F>,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, LogError> {
    seg.file
        .with_bytes(0, seg.file.size() as usize, f)
        .map_err(io_err("read segment"))
}

impl Log {
    /// Opens (or creates) the log in `dir` for this process alone (a process-private region)
    /// and replays every valid record through `visit`, in log order, before returning. A torn
    /// tail is cut; corruption is an error.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        sync: SyncMode,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Log, LogError> {
        Log::open_single(Mapped::new(dir), segment_size, sync, visit)
    }
}

impl<M: Media> Log<M> {
    /// [`Log::open`] on the medium `media`: [`Log::open_on`] with a process-private region
    /// of its own and [`Peer::alone`].
    pub fn open_single(
        media: M,
        segment_size: u64,
        sync: SyncMode,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Log<M>, LogError> {
        let region = local_region()?;
        match Log::open_on(
            media,
            segment_size,
            sync,
            region.clone(),
            Peer::alone(),
            visit,
        ) {
            Ok(mut log) => {
                log.local = true;
                Ok(log)
            }
            Err(e) => {
                give_back(region, 0);
                Err(e)
            }
        }
    }

    /// Opens (or creates) the log on `media` for the process that builds the store's region
    /// (state building: nobody else has the store open), replays every valid record through
    /// `visit`, in log order, cutting a torn tail and refusing corruption, then writes the
    /// shared tail into `region` (roots 0 to 15, in a builder section). Other processes then
    /// [`Log::attach`]. A region not in state building is refused before any file is read.
    pub fn open_on(
        media: M,
        segment_size: u64,
        sync: SyncMode,
        region: Arc<Region>,
        peer: Peer,
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Log<M>, LogError> {
        // Before any file is looked at: the scan cuts what it takes for a torn tail, which in a
        // log that peers have open is their latest appends.
        if region.state() != STATE_BUILDING {
            return Err(LogError::Io(
                "open the log".into(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the region is not being built (others may have the store open): attach \
                     to it with Log::attach",
                ),
            ));
        }
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
        if segs.is_empty() {
            let size = super::writer::size_of_new(1, segment_size);
            segs.push(Arc::new(Self::create_segment(&media, 1, 0, size)?));
        }
        let log = Log::new(media, segment_size, sync, region, peer);
        // Decide first: everything that makes the log corrupt is found before any file is
        // changed. Only then is a torn tail cut and are dead segments deleted.
        let Scan {
            last,
            off,
            first_needed,
        } = log.replay(&segs, visit)?;
        let first = segs[0].id;
        if first > first_needed {
            let missing = if first - 1 == first_needed {
                format!("segment {first_needed} is missing")
            } else {
                format!("segments {first_needed} to {} are missing", first - 1)
            };
            let claim = match first_needed {
                1 => "no CHECKPOINT names a later one".to_string(),
                n => format!("the newest CHECKPOINT names segment {n}"),
            };
            return Err(LogError::Corrupt {
                file: segs[0].path.clone(),
                offset: 0,
                what: format!("{missing} (a log starts at segment 1, and {claim})"),
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
        log.cut_tail(&segs, last, off)?;
        segs.truncate(last + 1);
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
        }
        let tail = segs[segs.len() - 1].clone();
        let end = tail.base + off;
        // Everything replayed is synced now, so later records may vouch for it truthfully.
        log.flush_segs(&segs, segs[0].base, end)
            .map_err(io_err("sync log at open"))?;
        // Publish the tail to the region. Nothing lies above it: the cut zeroed the torn tail.
        let mut t = log.region.lock_builder(LOCK_TIMEOUT).map_err(region_err)?;
        let roots = [
            (R_SEGMENT_SIZE, segment_size),
            (R_SYNC, sync_code(sync)),
            (R_TAIL_ID, tail.id),
            (R_TAIL_BASE, tail.base),
            (R_TAIL_SIZE, tail.file.size()),
            (R_TAIL_OFF, off),
            (R_WRITTEN, end),
            (R_DURABLE, end),
            (R_FIRST_ID, segs[0].id),
            (R_FIRST_BASE, segs[0].base),
            (R_LEADER, 0),
            (R_ROLLER, 0),
            (R_ENDED, 0),
            (R_HIGH, end),
            (R_FAILED, 0),
            (R_MAGIC, MAGIC),
        ];
        for (r, v) in roots {
            t.set_u64(root(r), v).map_err(region_err)?;
        }
        t.commit().map_err(region_err)?;
        *write(&log.segs) = segs;
        Ok(log)
    }

    /// Joins the log another process opened (with [`Log::open_on`]) into `region`: reads the
    /// shared tail, no scan. `segment_size` and `sync` must be the log's.
    pub fn attach(
        media: M,
        segment_size: u64,
        sync: SyncMode,
        region: Arc<Region>,
        peer: Peer,
    ) -> Result<Log<M>, LogError> {
        let (tail, base, size) = {
            let t = region.lock(LOCK_TIMEOUT).map_err(region_err)?;
            let get = |r| t.get_u64(root(r)).map_err(region_err);
            if get(R_MAGIC)? != MAGIC {
                return Err(LogError::Io(
                    "attach to the log".into(),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the region holds no log (open it with Log::open_on first)",
                    ),
                ));
            }
            let (size, mode) = (get(R_SEGMENT_SIZE)?, get(R_SYNC)?);
            if size != segment_size || mode != sync_code(sync) {
                return Err(LogError::Io(
                    "attach to the log".into(),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "the log has segment size {size} and sync mode {mode}, this \
                             process asks for {segment_size} and {}",
                            sync_code(sync)
                        ),
                    ),
                ));
            }
            (get(R_TAIL_ID)?, get(R_TAIL_BASE)?, get(R_TAIL_SIZE)?)
        };
        let log = Log::new(media, segment_size, sync, region, peer);
        let seg = log.seg(tail)?;
        if seg.base != base || seg.file.size() != size {
            return Err(LogError::Corrupt {
                file: seg.path.clone(),
                offset: 0,
                what: format!(
                    "the shared tail says base LSN {base} and size {size}, the segment header \
                     {} and {}",
                    seg.base,
                    seg.file.size()
                ),
            });
        }
        Ok(log)
    }

    fn new(media: M, segment_size: u64, sync: SyncMode, region: Arc<Region>, peer: Peer) -> Log<M> {
        Log {
            media,
            segment_size,
            sync,
            region,
            peer,
            segs: RwLock::new(Vec::new()),
            leading: AtomicBool::new(false),
            rolling: AtomicBool::new(false),
            failed_here: AtomicBool::new(false),
            fail_reason: Mutex::new(String::new()),
            leads: AtomicU64::new(0),
            local: false,
        }
    }

    pub(super) fn open_segment(media: &M, id: u64) -> Result<Seg<M::File>, LogError> {
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
        let h = parse_segment_header(&h).map_err(|what| corrupt(&what))?;
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
            version: h.version,
            file,
            path,
        })
    }

    /// Replays `segs` and finds where the valid log ends; an error if what follows that end
    /// is corruption rather than a torn tail. Changes no file.
    fn replay(
        &self,
        segs: &[Arc<Seg<M::File>>],
        visit: &mut dyn FnMut(Lsn, Record<'_>) -> Result<(), String>,
    ) -> Result<Scan, LogError> {
        let mut first_needed = 1;
        for (i, seg) in segs.iter().enumerate() {
            let end = whole(seg, |bytes| -> Result<End, LogError> {
                let mut off = SEG_HEADER;
                loop {
                    let Some(h) = probe(bytes, seg.salt, off) else {
                        return Ok(End::Invalid(off));
                    };
                    // Every append leaves room for a SEGMENT_END after its record (or the log
                    // could not roll on): a record without it ends the valid log like a bad
                    // one. The search for vouching records still counts it.
                    if h.kind != Kind::SegmentEnd
                        && off + h.total + REC_HEADER as u64 > bytes.len() as u64
                    {
                        return Ok(End::Invalid(off));
                    }
                    let at = (off as usize) + REC_HEADER;
                    let corrupt = |what: String| LogError::Corrupt {
                        file: seg.path.clone(),
                        offset: off,
                        what,
                    };
                    let entry =
                        decode(h.kind, seg.version, &bytes[at..at + h.len]).ok_or_else(|| {
                            corrupt("record with a valid checksum does not decode".into())
                        })?;
                    match entry {
                        Entry::Record(rec) => visit(seg.base + off, rec).map_err(corrupt)?,
                        Entry::Checkpoint(claim) => first_needed = first_needed.max(claim),
                        Entry::SegmentEnd => return Ok(End::SegmentEnd(off)),
                    }
                    off += h.total;
                }
            })??;
            match end {
                End::Invalid(off) => {
                    self.check_tail(segs, i, off)?;
                    return Ok(Scan {
                        last: i,
                        off,
                        first_needed,
                    });
                }
                // The roll writes SEGMENT_END only once the next segment exists durably.
                End::SegmentEnd(off) if i + 1 == segs.len() => {
                    return Err(LogError::Corrupt {
                        file: seg.path.clone(),
                        offset: off,
                        what: format!(
                            "segment {} is missing (this segment ends with SEGMENT_END, \
                             written only after the next segment was created)",
                            seg.id + 1
                        ),
                    });
                }
                End::SegmentEnd(_) => {}
            }
        }
        // `open_on` creates segment 1 in an empty directory before it replays.
        Err(LogError::Io(
            "replay".into(),
            io::Error::other("no segment to replay"),
        ))
    }

    /// Decides whether the invalid bytes at `segs[i]`+`off` (LSN `x`) are a torn tail or
    /// corruption: corruption when a later record of the segment vouches for a durable LSN
    /// beyond `x`, or when any later segment holds a byte after its header (it is written only
    /// once this segment has been sealed durably).
    fn check_tail(&self, segs: &[Arc<Seg<M::File>>], i: usize, off: u64) -> Result<(), LogError> {
        let seg = &segs[i];
        let x = seg.base + off;
        let corrupt = |what: String| LogError::Corrupt {
            file: seg.path.clone(),
            offset: off,
            what,
        };
        let vouched = whole(seg, |bytes| {
            let mut pos = off as usize + 8;
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
            return Err(corrupt(format!(
                "invalid record before synced data (the record at LSN {} vouches for LSN \
                 {vouch})",
                seg.base + pos
            )));
        }
        for later in &segs[i + 1..] {
            let data = whole(later, |bytes| {
                let body = &bytes[SEG_HEADER as usize..];
                body.chunks(4096)
                    .position(|page| !is_zero(page, page.len()))
                    .map(|p| SEG_HEADER + p as u64 * 4096)
            })?;
            if let Some(page) = data {
                return Err(corrupt(format!(
                    "invalid record in a sealed segment: segment {} after it holds data (from \
                     offset {page} on), written only after this segment was synced whole",
                    later.id
                )));
            }
        }
        Ok(())
    }

    /// Cuts the torn tail from `segs[i]`+`off` on: zeroes it durably, then deletes the
    /// segments after it (empty, as [`Log::check_tail`] found).
    fn cut_tail(&self, segs: &[Arc<Seg<M::File>>], i: usize, off: u64) -> Result<(), LogError> {
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
