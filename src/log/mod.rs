//! The write-ahead log: mmxa's only durable state.
//!
//! Owns: the on-disk format, appending, group commit, and the scan that recovery replays.
//!
//! The log is generic over its storage, a [`Media`] (`media.rs`, which states the contract):
//! memory-mapped segment files in production ([`Mapped`], `segment.rs`), statically dispatched
//! so an append is a copy into the mapping; a simulated disk in tests ([`sim`]), which builds
//! power-cut images and injects I/O errors.
//!
//! The format is specified here, once; the code is cut along its seams: `record.rs` holds the
//! bytes (offsets, kinds, encode, decode, the record check; no I/O), `open.rs` the open, the
//! replay and the recovery decisions below, `writer.rs` appending, rolling, group commit and
//! retiring segments. This file keeps the [`Log`] itself, its errors and small accessors.
//!
//! # Files
//! A store directory holds `mmxa.lock` (an open-file-description lock held by the one process
//! hosting the store), `mmxa.sock` (where that process serves the others, see `share`),
//! `mmxa.audit` (the trail of heuristic decisions, see `audit`; not part of the log) and
//! segment files `log-<id as 16 hex digits>.seg`, numbered consecutively from 1. A
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
//! # Rolling and sealing
//! A record that does not fit in the tail segment (with room for a SEGMENT_END after it) goes to
//! the next one. The roll creates segment `n+1` durably (as under "Files"), then appends
//! SEGMENT_END to segment `n`, then **seals** `n`: syncs every byte of it not yet durable, in
//! every sync mode (`none` too; there, writeback of each finished MiB of the tail segment is
//! started as it fills, so the seal has little left to wait for; see [`SegmentFile`]'s
//! `start_writeback`). Only then does `n+1` receive a record, and the durable LSN,
//! which records vouch for, moves to the start of `n+1`. So no byte of a segment reaches the
//! disk before all of the previous segment, and a segment ends with SEGMENT_END only once its
//! successor exists. If the seal fails, the log fails (as after a failed sync).
//!
//! # Validity, torn tails and corruption
//! A record is valid when its kind is known, its bytes 9..16 are zero, it fits in the segment,
//! and its CRC matches (the scan also wants the room for a SEGMENT_END that every append leaves
//! after a record). The salt makes bytes left from any other segment file fail the CRC. Open
//! checks the segment files, replays the valid records in order up to the first invalid one, at
//! LSN `x` (offset `off` of segment `n`), and decides, before it changes any file:
//!
//! | what open finds | decision |
//! |---|---|
//! | a segment header that is not valid, or whose id or size does not match its file, whose size is not a multiple of 8 or too small for a header and one record header, or whose id or base LSN exceeds 2^62 (no real log gets there) | corruption |
//! | a gap in the segment numbers, or a base LSN that does not follow the previous segment | corruption |
//! | a valid record whose payload does not decode, or that the replay rejects | corruption |
//! | the last segment ends with SEGMENT_END: its successor existed, and is gone | corruption ("segment N is missing") |
//! | the first file is not segment 1 and no CHECKPOINT names it or a later one | corruption ("segments … are missing") |
//! | a CHECKPOINT names a segment after the last one | corruption |
//! | invalid record at `x`, and a later segment holds any byte after its header | corruption: `n` was sealed before that byte was written, whatever the sync mode and the vouches |
//! | invalid record at `x`, and a later valid record of segment `n` vouches for an LSN greater than `x` | corruption: the bytes at `x` had been synced |
//! | invalid record at `x`, otherwise (any later segments are empty: a crash during the roll) | torn tail: zeroed from `off` to the last nonzero byte and synced, the later segments deleted newest first, appending resumes at `x` |
//!
//! Corruption fails the open with [`LogError::Corrupt`] naming the file and offset, and no
//! file is changed (stray `*.tmp` files aside). After a cut, segments before the newest CHECKPOINT's claim are deleted
//! (oldest first) and everything replayed is synced, so that later records vouch for it.
//!
//! # Assumptions about the media
//! Synced bytes read back as written (or fail the CRC). A segment created durably holds its
//! header and zeros. A sync covers a prefix of the log (a later segment gets its first byte only
//! after the previous one was sealed), so a record can only be torn if no sync completed after
//! it was written; unsynced bytes may reach the disk in any order and torn anywhere, but only
//! in the last segment (or, during a roll, in the one being sealed, with the next still empty).
//!
//! Limitations. Within the last segment, damage that nothing later vouches for reads as a torn
//! tail and is cut: corruption of bytes in the last synced batch, and with `sync=none`, where
//! records vouch only for what open synced and what the rolls sealed, any damage in the last
//! segment after its start (or after the open, if later): that is what `sync=none` risks. Damage
//! in any earlier segment is corruption in every mode. A directory without any segment file is
//! a new, empty log, so deleting every segment file goes unnoticed. Logs written before the seal
//! existed have the same format, but a crash during one of their rolls could leave records of
//! segment `n+1` on disk without the end of `n`: such an image is refused as corruption.
//!
//! A write that fails may have written any part of its bytes (a mapped segment cannot fail a
//! write, a simulated or `pwrite`-based one can). A failed record write therefore has its header
//! zeroed and synced before the error is returned, so no record the caller was told failed can
//! come back at a reopen; if that fails too, the log fails like after a failed sync.
//!
//! # Versions
//! 1: this layout. The seal changed what a writer leaves behind, not the format: readers
//! accept every version-1 log (see the last limitation above).

mod media;
mod open;
mod record;
mod segment;
pub mod sim;
mod store_lock;
mod writer;

use crate::config::SyncMode;
pub use media::{Media, SegmentFile};
pub use record::{put_value_offset, Record};
pub use segment::{lock_exclusive, sync_dir, Mapped};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use store_lock::{try_lock_store, StoreLock};

/// A position in the log.
pub type Lsn = u64;

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
    /// An earlier sync (or the erasure of a failed write) failed: nothing more is appended or
    /// acknowledged until the log is reopened. The only error that fails the log.
    Failed(String),
    /// No disk space for a new segment.
    NoSpace(String),
    /// The record is larger than a segment can hold.
    TooBig(usize),
    /// [`Log::retire_oldest`] of a segment that is not the oldest (or is the tail).
    NotOldest(u64),
    /// A read of a position that is not in the log (any more: its segment was retired).
    Gone(Lsn),
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
            LogError::NotOldest(id) => {
                write!(f, "segment {id} is not the oldest retirable segment")
            }
            LogError::Gone(lsn) => write!(f, "LSN {lsn} is not in the log (any more)"),
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

/// One segment file of the log.
struct Seg<F> {
    id: u64,
    /// LSN of the file's byte 0.
    base: Lsn,
    salt: u64,
    file: F,
    path: PathBuf,
}

/// Where the next record goes.
struct Tail<F> {
    seg: Arc<Seg<F>>,
    off: u64,
}

/// The log of one store, on the medium `M` (memory-mapped files unless a test says otherwise).
pub struct Log<M: Media = Mapped> {
    media: M,
    segment_size: u64,
    sync: SyncMode,
    /// The segment files, oldest first, numbered without a gap.
    segs: RwLock<Vec<Arc<Seg<M::File>>>>,
    tail: Mutex<Tail<M::File>>,
    /// LSN just past the last appended record.
    written: AtomicU64,
    /// Everything before this LSN is on stable storage.
    durable: AtomicU64,
    /// Whether a group-commit leader is syncing; `synced` wakes the others.
    syncing: Mutex<bool>,
    synced: Condvar,
    failed: AtomicBool,
    fail_reason: Mutex<String>,
}

// A poisoned lock only says that a thread panicked while holding it. Nothing these locks guard
// is left half-updated by a panic (each update is one assignment or push, made after the I/O it
// records), and the RM fails the whole store after a panic; so the log takes the guard and
// goes on rather than turning the poison into an error that would misstate what happened.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn seg_name(id: u64) -> String {
    format!("log-{id:016x}.seg")
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(seg_name(id))
}

impl<M: Media> Log<M> {
    /// The LSN just past the last appended record.
    pub fn written(&self) -> Lsn {
        self.written.load(Ordering::Acquire)
    }

    /// Whether an earlier sync failed (the log then refuses all work).
    pub fn failed(&self) -> Option<String> {
        if self.failed.load(Ordering::Acquire) {
            Some(lock(&self.fail_reason).clone())
        } else {
            None
        }
    }

    /// The oldest segment, unless it is the one being appended to: its id and LSN range.
    pub fn oldest(&self) -> Option<(u64, Lsn, Lsn)> {
        let segs = read(&self.segs);
        let s = segs.first().filter(|_| segs.len() > 1)?;
        Some((s.id, s.base, s.base + s.file.size()))
    }

    /// Number of segment files and their total size in bytes.
    pub fn disk_usage(&self) -> (usize, u64) {
        let segs = read(&self.segs);
        (segs.len(), segs.iter().map(|s| s.file.size()).sum())
    }

    /// The configured size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Copies `len` bytes at `lsn` (below [`Log::written`]) into `out`.
    pub fn read_into(&self, lsn: Lsn, len: usize, out: &mut Vec<u8>) -> Result<(), LogError> {
        let seg = {
            let segs = read(&self.segs);
            let i = segs.partition_point(|s| s.base <= lsn);
            match i.checked_sub(1).and_then(|i| segs.get(i)) {
                Some(s) => s.clone(),
                None => return Err(LogError::Gone(lsn)),
            }
        };
        seg.file
            .read_into(lsn - seg.base, len, out)
            .map_err(io_err("read value"))
    }
}

#[cfg(test)]
mod tests;
