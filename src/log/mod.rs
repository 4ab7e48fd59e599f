//! The write-ahead log: mmxa's only durable state.
//!
//! Owns: the on-disk format, appending, group commit, and the scan that recovery replays.
//!
//! The log is generic over its storage, a [`Media`] (`media.rs`, which states the contract):
//! memory-mapped segment files in production ([`Mapped`], `segment.rs`), statically dispatched
//! so an append is a copy into the mapping; a simulated disk in tests ([`sim`]), which builds
//! power-cut images and injects I/O errors.
//!
//! # Files
//! A store directory holds `mmxa.lock` (an open-file-description lock held by the one process
//! hosting the store), `mmxa.sock` (where that process serves the others, see `share`),
//! `mmxa.audit` (the trail of heuristic decisions, see `audit`; not part of the log) and segment files `log-<id as 16 hex digits>.seg`, numbered consecutively from 1. A
//! segment is created as `*.tmp`, reserved with `posix_fallocate`, given its header, synced and
//! renamed into place, so a segment under its final name always has a valid header. Stray `*.tmp`
//! files are deleted at open.
//!
//! # Segment header (64 bytes, little-endian)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MMXASEG1` |
//! | 8 | 4 | format version, 1 |
//! | 12 | 4 | header length, 64 |
//! | 16 | 8 | segment id (matches the file name) |
//! | 24 | 8 | base LSN: the log position of byte 0 of this segment |
//! | 32 | 8 | segment size in bytes |
//! | 40 | 8 | salt: random, new for every segment file |
//! | 48 | 4 | CRC-32 of bytes 0..48 |
//! | 52 | 12 | zero |
//!
//! The base LSN of segment `n+1` is `base(n) + size(n)`. An LSN (log sequence number) is a
//! byte position in this endless, concatenated log.
//!
//! # Records (from offset 64, each 8-byte aligned)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | CRC-32 over the segment salt (8 bytes LE), bytes 4..24 of this header, and the payload |
//! | 4 | 4 | payload length |
//! | 8 | 1 | kind (0 is invalid, so zeroed space never parses) |
//! | 9 | 7 | zero |
//! | 16 | 8 | vouch: the durable LSN when this record was appended |
//! | 24 | len | payload, then zero padding to a multiple of 8 |
//!
//! Payloads (`tag` is a branch's log-local number; tag 0 marks an operation that commits by
//! itself; an XID is `formatID` i64, gtrid length u8, bqual length u8, then the bytes):
//! | kind | name | payload |
//! |---|---|---|
//! | 1 | PUT | tag u64, key length u32, value length u32, key, value |
//! | 2 | DELETE | tag u64, key length u32, key |
//! | 3 | PREPARE | tag u64, XID |
//! | 4 | COMMIT | tag u64 (of a prepared branch, or a one-phase commit) |
//! | 5 | ROLLBACK | tag u64 |
//! | 6 | HEURISTIC | tag u64, outcome i32 (`XA_HEURCOM`/`XA_HEURRB`/…), XID, reason length u32, reason |
//! | 7 | FORGET | tag u64 |
//! | 8 | SEGMENT_END | empty: the log continues at the start of the next segment |
//! | 9 | MOVE | old tag u64, new tag u64, XID: the prepared branch `old` now lives on as `new`, whose writes were re-logged just before |
//! | 10 | CHECKPOINT | first segment id u64: segments before it are no longer needed |
//!
//! # Reclaiming space
//! Segments are reclaimed oldest first. What is still live in the oldest segment is appended
//! again at the tail (committed values as tag-0 PUTs; a working branch's writes under its tag and
//! its savepoints' values under a new tag then ROLLBACK; a prepared branch's writes under a new tag
//! followed by MOVE; a heuristic outcome as a new HEURISTIC record), then a CHECKPOINT naming the
//! next segment is appended and synced, and only then is the old file deleted. Replaying a
//! segment that a crash left behind after its CHECKPOINT is harmless (everything live in it is
//! restated later in the log) and open deletes it. The scan keeps the highest CHECKPOINT claim: a
//! log whose first file comes after the claimed first segment has lost a segment (corruption);
//! without any claim the log must start at segment 1. Segment numbers never have gaps, even when
//! a deletion fails: a retired segment leaves the log's list only once its file is deleted (so a
//! failed deletion is retried by the next step), and open deletes dead segments oldest first
//! and the segments after a torn tail newest first.
//!
//! # Validity, torn tails and corruption
//! A record is valid when its kind is known, it fits in the segment, and its CRC matches (the
//! scan also wants the room for a SEGMENT_END that every append leaves after a record). The
//! salt makes bytes left from any other segment file fail the CRC. The scan replays valid
//! records in order and stops at the first invalid one, at LSN `x`. Then it looks at every
//! later position of the log for a valid record: if one vouches for a durable LSN greater than
//! `x`, the bytes at `x` had been synced — that is corruption of acknowledged data, and opening
//! fails naming the file and offset. Otherwise everything from `x` on was never acknowledged
//! (a torn or unfinished write): it is cut, zeroed and synced, later segments are deleted, and
//! appending resumes at `x`. A valid record whose payload does not decode is corruption too, and
//! so is a segment header whose id or base LSN exceeds 2^62 (no real log gets there), or whose
//! size is not a multiple of 8 or too small for a header and one record header.
//!
//! # Assumptions about the media
//! Synced bytes read back as written (or fail the CRC). A sync covers a prefix of the log, so a
//! record can only be torn if no sync completed after it was written; unsynced bytes may reach
//! the disk in any order and torn anywhere. Limitation: corruption of bytes in the last synced
//! batch, with no later record vouching for them, reads as a torn tail. With `sync=none`
//! nothing is vouched for and any invalid record is treated as the tail.
//!
//! A write that fails may have written any part of its bytes (a mapped segment cannot fail a
//! write, a simulated or `pwrite`-based one can). A failed record write therefore has its header
//! zeroed and synced before the error is returned, so no record the caller was told failed can
//! come back at a reopen; if that fails too, the log fails like after a failed sync.
//!
//! # Versions
//! 1: this layout.

mod media;
mod segment;
pub mod sim;
mod store_lock;

use crate::config::SyncMode;
use crate::crash::crash_point;
use crate::xid::Xid;
pub use media::{Media, SegmentFile};
pub use segment::{lock_exclusive, sync_dir, Mapped};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
pub use store_lock::{try_lock_store, StoreLock};

/// A position in the log.
pub type Lsn = u64;

const MAGIC: &[u8; 8] = b"MMXASEG1";
const VERSION: u32 = 1;
const SEG_HEADER: u64 = 64;
/// Highest segment id and LSN a valid log can hold (2^62: far beyond any real log).
const MAX_SEGMENT_ID: u64 = 1 << 62;
const MAX_LSN: u64 = 1 << 62;
const REC_HEADER: usize = 24;

const K_PUT: u8 = 1;
const K_DELETE: u8 = 2;
const K_PREPARE: u8 = 3;
const K_COMMIT: u8 = 4;
const K_ROLLBACK: u8 = 5;
const K_HEURISTIC: u8 = 6;
const K_FORGET: u8 = 7;
const K_SEGMENT_END: u8 = 8;
const K_MOVE: u8 = 9;
const K_CHECKPOINT: u8 = 10;

/// Offset of a PUT's value bytes from the start of its record.
pub fn put_value_offset(key_len: usize) -> u64 {
    (REC_HEADER + 16 + key_len) as u64
}

/// A decoded log record, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A write of `key` (tag 0: committed by itself).
    Put {
        /// Branch tag.
        tag: u64,
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
    },
    /// A delete of `key` (tag 0: committed by itself).
    Delete {
        /// Branch tag.
        tag: u64,
        /// Key bytes.
        key: &'a [u8],
    },
    /// The branch is prepared.
    Prepare {
        /// Branch tag.
        tag: u64,
        /// The branch's XID.
        xid: Xid,
    },
    /// The branch is committed.
    Commit {
        /// Branch tag.
        tag: u64,
    },
    /// The branch is rolled back.
    Rollback {
        /// Branch tag.
        tag: u64,
    },
    /// A prepared branch was completed heuristically.
    Heuristic {
        /// Branch tag.
        tag: u64,
        /// `XA_HEURCOM`, `XA_HEURRB`, `XA_HEURMIX` or `XA_HEURHAZ`.
        outcome: i32,
        /// The branch's XID.
        xid: Xid,
        /// Why (operator text).
        reason: &'a [u8],
    },
    /// A heuristically completed branch is forgotten.
    Forget {
        /// Branch tag.
        tag: u64,
    },
    /// A prepared branch's state moves to a new tag (its writes were re-logged under it).
    Move {
        /// The tag that is gone.
        old: u64,
        /// The tag that holds the prepared branch now.
        new: u64,
        /// The branch's XID.
        xid: Xid,
    },
}

/// A log failure.
#[derive(Debug)]
pub enum LogError {
    /// An I/O call failed.
    Io(String, io::Error),
    /// Synced bytes do not read back as written.
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Offset in that file.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// An earlier sync failed: nothing more is appended or acknowledged until reopened.
    Failed(String),
    /// No disk space for a new segment.
    NoSpace(String),
    /// The record is larger than a segment can hold.
    TooBig(usize),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io(what, e) => write!(f, "{what}: {e}"),
            LogError::Corrupt { file, offset, what } => {
                write!(
                    f,
                    "log corrupt in {} at offset {offset}: {what}",
                    file.display()
                )
            }
            LogError::Failed(why) => {
                write!(f, "the log failed earlier and must be reopened: {why}")
            }
            LogError::NoSpace(what) => write!(f, "no space for the log: {what}"),
            LogError::TooBig(n) => write!(f, "record of {n} bytes does not fit in a segment"),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LogError {
    let what = what.into();
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            LogError::NoSpace(format!("{what}: {e}"))
        } else {
            LogError::Io(what, e)
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// LSN of the record's first byte.
    pub lsn: Lsn,
    /// LSN just past the record: what must be durable for it to be.
    pub end: Lsn,
}

struct Seg<F> {
    id: u64,
    base: Lsn,
    salt: u64,
    file: F,
    path: PathBuf,
}

struct Tail<F> {
    seg: Arc<Seg<F>>,
    off: u64,
}

/// The log of one store, on the medium `M` (memory-mapped files unless a test says otherwise).
pub struct Log<M: Media = Mapped> {
    media: M,
    segment_size: u64,
    sync: SyncMode,
    segs: RwLock<Vec<Arc<Seg<M::File>>>>,
    tail: Mutex<Tail<M::File>>,
    written: AtomicU64,
    durable: AtomicU64,
    syncing: Mutex<bool>,
    synced: Condvar,
    failed: AtomicBool,
    fail_reason: Mutex<String>,
}

fn seg_name(id: u64) -> String {
    format!("log-{id:016x}.seg")
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(seg_name(id))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

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

fn segment_header(id: u64, base: Lsn, size: u64, salt: u64) -> [u8; SEG_HEADER as usize] {
    let mut h = [0u8; SEG_HEADER as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEG_HEADER as u32).to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&base.to_le_bytes());
    h[32..40].copy_from_slice(&size.to_le_bytes());
    h[40..48].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[0..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

fn xid_bytes(xid: &Xid) -> ([u8; 10], &[u8]) {
    let mut head = [0u8; 10];
    head[0..8].copy_from_slice(&xid.format_id().to_le_bytes());
    head[8] = xid.gtrid().len() as u8;
    head[9] = xid.bqual().len() as u8;
    let n = xid.gtrid().len() + xid.bqual().len();
    (head, &xid.data()[..n])
}

/// Decodes a record payload; `None` when it is malformed.
fn decode(kind: u8, p: &[u8]) -> Option<Record<'_>> {
    let tag = || p.get(0..8).map(|b| le_u64(b, 0));
    let xid_at = |at: usize| -> Option<(Xid, usize)> {
        let head = p.get(at..at + 10)?;
        let (g, b) = (head[8] as usize, head[9] as usize);
        let data = p.get(at + 10..at + 10 + g + b)?;
        let xid = Xid::new(le_u64(head, 0) as i64, g as i64, b as i64, data).ok()?;
        Some((xid, at + 10 + g + b))
    };
    let rec = match kind {
        K_PUT => {
            let kl = le_u32(p.get(8..12)?, 0) as usize;
            let vl = le_u32(p.get(12..16)?, 0) as usize;
            if p.len() != 16 + kl + vl {
                return None;
            }
            Record::Put {
                tag: tag()?,
                key: &p[16..16 + kl],
                value: &p[16 + kl..],
            }
        }
        K_DELETE => {
            let kl = le_u32(p.get(8..12)?, 0) as usize;
            if p.len() != 12 + kl {
                return None;
            }
            Record::Delete {
                tag: tag()?,
                key: &p[12..],
            }
        }
        K_PREPARE => {
            let (xid, end) = xid_at(8)?;
            if end != p.len() {
                return None;
            }
            Record::Prepare { tag: tag()?, xid }
        }
        K_COMMIT | K_ROLLBACK | K_FORGET => {
            if p.len() != 8 {
                return None;
            }
            let tag = tag()?;
            match kind {
                K_COMMIT => Record::Commit { tag },
                K_ROLLBACK => Record::Rollback { tag },
                _ => Record::Forget { tag },
            }
        }
        K_MOVE => {
            let (xid, end) = xid_at(16)?;
            if end != p.len() {
                return None;
            }
            Record::Move {
                old: tag()?,
                new: le_u64(p.get(8..16)?, 0),
                xid,
            }
        }
        K_HEURISTIC => {
            let outcome = le_u32(p.get(8..12)?, 0) as i32;
            let (xid, at) = xid_at(12)?;
            let rl = le_u32(p.get(at..at + 4)?, 0) as usize;
            if p.len() != at + 4 + rl {
                return None;
            }
            Record::Heuristic {
                tag: tag()?,
                outcome,
                xid,
                reason: &p[at + 4..],
            }
        }
        _ => return None,
    };
    Some(rec)
}

/// A header that passed the checks, with its payload length and total (padded) size.
struct Header {
    kind: u8,
    len: usize,
    total: u64,
    vouch: Lsn,
}

/// Checks the record at `off` of a segment's bytes `seg`: known kind, fits, CRC matches.
fn probe(seg: &[u8], salt: u64, off: u64) -> Option<Header> {
    let at = usize::try_from(off).ok()?;
    let h = seg.get(at..at.checked_add(REC_HEADER)?)?;
    let kind = h[8];
    if !(K_PUT..=K_CHECKPOINT).contains(&kind) || h[9..16].iter().any(|&b| b != 0) {
        return None;
    }
    let len = le_u32(h, 4) as usize;
    let total = (REC_HEADER + len + 7) & !7;
    let payload = seg.get(at + REC_HEADER..at + REC_HEADER + len)?;
    if at + total > seg.len() {
        return None;
    }
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[4..REC_HEADER]);
    c.update(payload);
    if c.finalize() != le_u32(h, 0) {
        return None;
    }
    Some(Header {
        kind,
        len,
        total: total as u64,
        vouch: le_u64(h, 16),
    })
}

/// Whether the first `n` bytes of `b` (or all of `b`, if shorter) are zero; word-wise for speed.
fn is_zero(b: &[u8], n: usize) -> bool {
    let b = &b[..n.min(b.len())];
    let words = b.chunks_exact(8);
    let rest = words.remainder();
    words.fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
    }) == 0
        && rest.iter().all(|&c| c == 0)
}

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
        if &h[0..8] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if crc32fast::hash(&h[0..48]) != le_u32(&h, 48) {
            return Err(corrupt("segment header checksum mismatch"));
        }
        if le_u32(&h, 8) != VERSION || le_u32(&h, 12) != SEG_HEADER as u32 {
            return Err(corrupt("unsupported format version or header length"));
        }
        if le_u64(&h, 16) != id || le_u64(&h, 32) != file.size() {
            return Err(corrupt("segment id or size does not match the file"));
        }
        // The log writes only such segments; any other could not take a SEGMENT_END marker.
        if file.size() % 8 != 0 || file.size() < SEG_HEADER + REC_HEADER as u64 {
            return Err(corrupt("segment size too small or not a multiple of 8"));
        }
        // No real log gets near these bounds; they keep id and LSN arithmetic from overflowing.
        if id > MAX_SEGMENT_ID || le_u64(&h, 24) > MAX_LSN.saturating_sub(file.size()) {
            return Err(corrupt("segment id or base LSN out of range"));
        }
        Ok(Seg {
            id,
            base: le_u64(&h, 24),
            salt: le_u64(&h, 40),
            file,
            path,
        })
    }

    fn create_segment(media: &M, id: u64, base: Lsn, size: u64) -> Result<Seg<M::File>, LogError> {
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
                    if h.kind == K_SEGMENT_END {
                        return Ok(None);
                    }
                    // Every append leaves room for a SEGMENT_END after its record (or the log
                    // could not roll on): a record without it ends the valid log like a bad
                    // one. The search for vouching records still counts it.
                    if off + h.total + REC_HEADER as u64 > bytes.len() as u64 {
                        return Ok(Some(off));
                    }
                    let at = (off as usize) + REC_HEADER;
                    let corrupt = |what: String| LogError::Corrupt {
                        file: seg.path.clone(),
                        offset: off,
                        what,
                    };
                    let payload = &bytes[at..at + h.len];
                    let undecodable =
                        || corrupt("record with a valid checksum does not decode".into());
                    if h.kind == K_CHECKPOINT {
                        if payload.len() != 8 {
                            return Err(undecodable());
                        }
                        *first_needed = (*first_needed).max(le_u64(payload, 0));
                    } else {
                        let rec = decode(h.kind, payload).ok_or_else(undecodable)?;
                        visit(seg.base + off, rec).map_err(corrupt)?;
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
        Err(LogError::Failed("the log has no segment".into()))
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
                    if bytes[pos + 8] != 0 {
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

    /// The LSN just past the last appended record.
    pub fn written(&self) -> Lsn {
        self.written.load(Ordering::Acquire)
    }

    /// Whether an earlier sync failed (the log then refuses all work).
    pub fn failed(&self) -> Option<String> {
        if self.failed.load(Ordering::Acquire) {
            Some(
                self.fail_reason
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default(),
            )
        } else {
            None
        }
    }

    fn fail(&self, why: String) {
        if let Ok(mut r) = self.fail_reason.lock() {
            if r.is_empty() {
                *r = why;
            }
        }
        self.failed.store(true, Ordering::Release);
    }

    /// Appends a record (not yet durable: see [`Log::sync_to`]).
    pub fn append(&self, rec: &Record<'_>) -> Result<Appended, LogError> {
        let mut fixed = [0u8; 32];
        let (kind, parts): (u8, [&[u8]; 4]) = match rec {
            Record::Put { tag, key, value } => {
                fixed[0..8].copy_from_slice(&tag.to_le_bytes());
                fixed[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
                fixed[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
                (K_PUT, [&fixed[..16], key, value, &[]])
            }
            Record::Delete { tag, key } => {
                fixed[0..8].copy_from_slice(&tag.to_le_bytes());
                fixed[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
                (K_DELETE, [&fixed[..12], key, &[], &[]])
            }
            Record::Commit { tag } | Record::Rollback { tag } | Record::Forget { tag } => {
                fixed[0..8].copy_from_slice(&tag.to_le_bytes());
                let kind = match rec {
                    Record::Commit { .. } => K_COMMIT,
                    Record::Rollback { .. } => K_ROLLBACK,
                    _ => K_FORGET,
                };
                (kind, [&fixed[..8], &[], &[], &[]])
            }
            Record::Prepare { tag, xid } => {
                let (head, data) = xid_bytes(xid);
                fixed[0..8].copy_from_slice(&tag.to_le_bytes());
                fixed[8..18].copy_from_slice(&head);
                (K_PREPARE, [&fixed[..18], data, &[], &[]])
            }
            Record::Move { old, new, xid } => {
                let (head, data) = xid_bytes(xid);
                fixed[0..8].copy_from_slice(&old.to_le_bytes());
                fixed[8..16].copy_from_slice(&new.to_le_bytes());
                fixed[16..26].copy_from_slice(&head);
                (K_MOVE, [&fixed[..26], data, &[], &[]])
            }
            Record::Heuristic {
                tag,
                outcome,
                xid,
                reason,
            } => return self.append_heuristic(*tag, *outcome, xid, reason),
        };
        self.append_parts(kind, &parts)
    }

    fn append_heuristic(
        &self,
        tag: u64,
        outcome: i32,
        xid: &Xid,
        reason: &[u8],
    ) -> Result<Appended, LogError> {
        let (head, data) = xid_bytes(xid);
        let mut buf = Vec::with_capacity(26 + data.len() + reason.len());
        buf.extend_from_slice(&tag.to_le_bytes());
        buf.extend_from_slice(&outcome.to_le_bytes());
        buf.extend_from_slice(&head);
        buf.extend_from_slice(data);
        buf.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        buf.extend_from_slice(reason);
        self.append_parts(K_HEURISTIC, &[&buf])
    }

    fn append_parts(&self, kind: u8, parts: &[&[u8]]) -> Result<Appended, LogError> {
        if let Some(why) = self.failed() {
            return Err(LogError::Failed(why));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let total = ((REC_HEADER + len + 7) & !7) as u64;
        // Room for this record and a SEGMENT_END marker after it.
        if total + REC_HEADER as u64 + SEG_HEADER > self.segment_size || len > u32::MAX as usize {
            return Err(LogError::TooBig(len));
        }
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| LogError::Failed("poisoned lock".into()))?;
        if tail.off + total + REC_HEADER as u64 > tail.seg.file.size() {
            self.roll(&mut tail)?;
        }
        let at = tail.off;
        self.write_record(&tail.seg, at, kind, parts)?;
        tail.off += total;
        let lsn = tail.seg.base + at;
        let end = tail.seg.base + tail.off;
        self.written.store(end, Ordering::Release);
        Ok(Appended { lsn, end })
    }

    fn write_record(
        &self,
        seg: &Seg<M::File>,
        at: u64,
        kind: u8,
        parts: &[&[u8]],
    ) -> Result<(), LogError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut h = [0u8; REC_HEADER];
        h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        h[8] = kind;
        h[16..24].copy_from_slice(&self.durable.load(Ordering::Acquire).to_le_bytes());
        let mut c = crc32fast::Hasher::new();
        c.update(&seg.salt.to_le_bytes());
        c.update(&h[4..]);
        for p in parts {
            c.update(p);
        }
        h[0..4].copy_from_slice(&c.finalize().to_le_bytes());
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

    /// Ends the tail segment and starts the next one.
    fn roll(&self, tail: &mut Tail<M::File>) -> Result<(), LogError> {
        let cur = tail.seg.clone();
        let next = Arc::new(Self::create_segment(
            &self.media,
            cur.id + 1,
            cur.base + cur.file.size(),
            self.segment_size,
        )?);
        self.write_record(&cur, tail.off, K_SEGMENT_END, &[])?;
        crash_point("log.rolled");
        self.segs
            .write()
            .map_err(|_| LogError::Failed("poisoned lock".into()))?
            .push(next.clone());
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
        let lock_err = |_| LogError::Failed("poisoned lock".into());
        let mut syncing = self.syncing.lock().map_err(lock_err)?;
        loop {
            if let Some(why) = self.failed() {
                return Err(LogError::Failed(why));
            }
            if self.durable.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if *syncing {
                syncing = self.synced.wait(syncing).map_err(lock_err)?;
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
            syncing = self.syncing.lock().map_err(lock_err)?;
            *syncing = false;
            match result {
                Ok(()) => self.durable.store(to, Ordering::Release),
                Err(e) => self.fail(format!("sync failed: {e}")),
            }
            self.synced.notify_all();
        }
    }

    fn flush(&self, from: Lsn, to: Lsn) -> io::Result<()> {
        let segs: Vec<Arc<Seg<M::File>>> = {
            let all = self
                .segs
                .read()
                .map_err(|_| io::Error::other("poisoned lock"))?;
            all.iter()
                .filter(|s| s.base < to && s.base + s.file.size() > from)
                .cloned()
                .collect()
        };
        self.flush_segs(&segs, from, to)
    }

    fn flush_segs(&self, segs: &[Arc<Seg<M::File>>], from: Lsn, to: Lsn) -> io::Result<()> {
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

    /// The oldest segment, unless it is the one being appended to: its id and LSN range.
    pub fn oldest(&self) -> Option<(u64, Lsn, Lsn)> {
        let segs = self.segs.read().ok()?;
        let s = segs.first().filter(|_| segs.len() > 1)?;
        Some((s.id, s.base, s.base + s.file.size()))
    }

    /// Number of segment files and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = self.segs.read().unwrap_or_else(|p| p.into_inner());
        (segs.len(), segs.iter().map(|s| s.file.size()).sum())
    }

    /// The configured size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Retires the oldest segment `id` once everything live in it has been appended again: a
    /// CHECKPOINT naming the next segment is made durable, then the file is deleted. Readers
    /// still holding the segment keep its mapping until they finish.
    pub fn retire_oldest(&self, id: u64) -> Result<(), LogError> {
        if self.oldest().map(|(first, _, _)| first) != Some(id) {
            return Err(LogError::Failed(format!("segment {id} is not the oldest")));
        }
        let next = (id + 1).to_le_bytes();
        let a = self.append_parts(K_CHECKPOINT, &[&next])?;
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
        self.segs
            .write()
            .map_err(|_| LogError::Failed("poisoned lock".into()))?
            .remove(0);
        self.media.sync_dir().map_err(io_err("sync directory"))?;
        crash_point("retire.dir_synced");
        Ok(())
    }

    /// Copies `len` bytes at `lsn` (below [`Log::written`]) into `out`.
    pub fn read_into(&self, lsn: Lsn, len: usize, out: &mut Vec<u8>) -> Result<(), LogError> {
        let seg = {
            let segs = self
                .segs
                .read()
                .map_err(|_| LogError::Failed("poisoned lock".into()))?;
            let i = segs.partition_point(|s| s.base <= lsn);
            match i.checked_sub(1).and_then(|i| segs.get(i)) {
                Some(s) => s.clone(),
                None => return Err(LogError::Failed(format!("LSN {lsn} is not in the log"))),
            }
        };
        seg.file
            .read_into(lsn - seg.base, len, out)
            .map_err(io_err("read value"))
    }
}

#[cfg(test)]
mod tests;
