//! The write-ahead log: mmxa's only durable state.
//!
//! Owns: the on-disk format, appending, group commit, and the scan that recovery replays.
//!
//! Every process with the store open is a peer: it maps the segment files itself, and the
//! log's shared state (where the tail is, what is durable, who is syncing or rolling, whether
//! the log failed) lives in the store's shared region ([`crate::shm`]), in roots 0 to 15 (see
//! "Shared state"). One process opens the log and builds that state ([`Log::open_on`]: the
//! scan and replay below, while nobody else has the store open); the others attach to it
//! ([`Log::attach`], no scan). Any of them appends, rolls, syncs, reclaims and reads. A process
//! that needs no peers uses [`Log::open`] or [`Log::open_single`], which give the log a
//! process-private region of its own.
//!
//! The log is generic over its storage, a [`Media`] (`media.rs`, which states the contract):
//! memory-mapped segment files in production ([`Mapped`], `segment.rs`), statically dispatched
//! so an append is a copy into the mapping; a simulated disk in tests ([`sim`]), which builds
//! power-cut images and injects I/O errors.
//!
//! The format is specified here, once; the code is cut along its seams: `record.rs` holds the
//! bytes (offsets, kinds, encode, decode, the record check; no I/O), `open.rs` the open, the
//! replay and the recovery decisions below, and attaching, `writer.rs` appending, rolling,
//! group commit and retiring segments, `shared.rs` the roots, the claims and the failure flag.
//! This file keeps the [`Log`] itself, its errors, this process's segment mappings and small
//! accessors.
//!
//! # Files
//! A store directory holds `mmxa.lock` (the processes' liveness locks, see `shm`), `mmxa.shm`
//! (the shared state every process with the store open maps, see `shm` and `rm`), `mmxa.audit`
//! (the trail of heuristic decisions, see `audit`; not part of the log) and segment files
//! `log-<id as 16 hex digits>.seg`, numbered consecutively from 1. A segment is created as
//! `*.tmp`, reserved with `posix_fallocate`, given its header, synced and renamed into place,
//! so a segment under its final name always has a valid header. Stray `*.tmp` files are deleted
//! at open. Segments need not have one size (each header states its own): a new segment `n` is
//! 4 MiB times 2^(n-1), at most the configured size, so a new store reserves 4 MiB of disk and
//! its first rolls grow it (4, 8, 16, 32, then 64 MiB by default).
//!
//! # Segment header (64 bytes, little-endian)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MMXASEG1` |
//! | 8 | 4 | format version, 2 (see "Versions") |
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
//! itself; an XID is `formatID` i64, gtrid length u8, bqual length u8, then the bytes; `time`
//! is wall-clock time in nanoseconds since the Unix epoch, UTC, 0 = unknown):
//! | kind | name | payload |
//! |---|---|---|
//! | 1 | PUT | tag u64, key length u32, value length u32, key, value |
//! | 2 | DELETE | tag u64, key length u32, key |
//! | 3 | PREPARE | tag u64, time u64 (of the prepare), XID |
//! | 4 | COMMIT | tag u64 (of a prepared branch, or a one-phase commit) |
//! | 5 | ROLLBACK | tag u64 |
//! | 6 | HEURISTIC | tag u64, time u64 (of the decision), outcome i32 (`XA_HEURCOM`/`XA_HEURRB`/…), XID, reason length u32, reason |
//! | 7 | FORGET | tag u64 |
//! | 8 | SEGMENT_END | empty: the log continues at the start of the next segment |
//! | 9 | MOVE | old tag u64, time u64 (of the branch's prepare, carried over), new tag u64, XID: the prepared branch `old` now lives on as `new`, whose writes were re-logged just before |
//! | 10 | CHECKPOINT | first segment id u64: segments before it are no longer needed |
//!
//! # Reclaiming space
//! Segments are reclaimed oldest first. What is still live in the oldest segment is appended
//! again at the tail (committed values as tag-0 PUTs; a working branch's writes under its tag and
//! its savepoints' values under a new tag then ROLLBACK; a prepared branch's writes under a new tag
//! followed by MOVE; a heuristic outcome as a new HEURISTIC record; MOVE and HEURISTIC keep the
//! time of the prepare or decision they restate), then a CHECKPOINT naming the
//! next segment is appended and synced, and only then is the old file deleted. Replaying a
//! segment that a crash left behind after its CHECKPOINT is harmless (everything live in it is
//! restated later in the log) and open deletes it. The scan keeps the highest CHECKPOINT claim: a
//! log whose first file comes after the claimed first segment has lost a segment (corruption);
//! without any claim the log must start at segment 1. Segment numbers never have gaps, even when
//! a deletion fails: a retired segment leaves the log (the shared first id moves past it) only
//! once its file is deleted and the directory synced (so a failed deletion is retried by the
//! next step, and a retirement that died after the deletion is finished by the next one, for
//! which the missing file is no error), and open deletes dead segments oldest first and the
//! segments after a torn tail newest first. Each process lets go of its mapping of a retired
//! segment once it sees the first id past it and no reader of it is left.
//!
//! # Shared state
//! The log's roots in the region (each a `u64`; `written`, `durable` and the failed flag are
//! read lock-free, the others in sections or as hints):
//! | root | field |
//! |---|---|
//! | 0 | `LOGSHM01`: the log's state is set up (written by [`Log::open_on`]) |
//! | 1 | size of new segments (a peer asking for another cannot attach) |
//! | 2 | sync mode: 0 none, 1 msync, 2 fdatasync (likewise) |
//! | 3 | tail segment: id |
//! | 4 | tail segment: base LSN |
//! | 5 | tail segment: size |
//! | 6 | tail offset: where in the tail segment the next record goes |
//! | 7 | `written`: the LSN just past the last appended record |
//! | 8 | `durable`: everything before it is on stable storage |
//! | 9 | first segment still in the log: id |
//! | 10 | first segment: base LSN |
//! | 11 | group-commit leader: its process slot + 1, 0 = none |
//! | 12 | roller: its process slot + 1, 0 = none |
//! | 13 | ended: the tail segment's id once its SEGMENT_END is written (a roll under way), else 0 |
//! | 14 | high-water mark: the LSN up to which appends may have written above the tail (never journaled) |
//! | 15 | failed: 0, or the offset of a heap block holding the reason (length u64, then UTF-8), or 1 if it could not be stored |
//!
//! Every root but 14 changes only in sections, journaled, so a section that is rolled back (for
//! an error, or because its process died inside it) leaves them as they were. A lock-free
//! reader may see a value of a section not yet committed: [`Log::written`] may be ahead of what
//! stays, which is why a group-commit leader reads what to flush under the mutex; a raised
//! `durable` is always true (it is raised only after the sync it reports).
//!
//! Process-local: the segments this process has mapped (opened from the media when an LSN or
//! the tail needs one, let go of once the first id has moved past them and no reader holds
//! them), and this process's half of each claim (roots 11 and 12): a flag saying one of its
//! threads holds it, changed under the mutex. A claim names a live process's slot, or is taken
//! over: from a dead process (the [`Peer`] liveness test), or stale in this process's own name
//! (flag down: a thread that failed without releasing it). A process that claims the slot of
//! a dead one clears the dead one's claims with [`reap_claims`] as it reaps the slot.
//!
//! A failed sync, seal or erasure fails the log for every process, for good (root 15) — until
//! the region is rebuilt from the files, by a reopen when no process has the store open. A
//! failure met inside a caller's section that the caller then rolls back is remembered by the
//! process and published by its next section on the log.
//!
//! # Appending
//! [`Log::append`] runs inside the caller's section: it reads the tail, writes the record into
//! this process's mapping of the tail segment above the tail (unjournaled: those bytes are
//! nobody's while the mutex is held), payload first and header last, then advances the tail
//! offset and `written` with journaled sets (48 bytes of journal). The record's vouch is the
//! shared `durable`. The record is in the log once the section commits; if the section is
//! rolled back (an error later in it, or its process dies inside it), the tail goes back, and
//! the bytes stay above it — *stale* bytes, a complete and valid record among them.
//!
//! Stale bytes must never become part of what a reopen keeps, and nothing in the format keeps
//! them out by itself: a stale record has its header (written last), a CRC salted with this
//! segment's salt, and a vouch no larger than the tail it was written at. If the next append
//! simply overwrote them, a reopen could find a stale record spliced into the log: after a
//! shorter record that took its place (the scan goes on at the old position of the stale
//! record after it), or after a power cut that kept the page of a later record but not that of
//! the record that overwrote the stale one. So the log keeps track of them: before writing
//! anything above the tail, an append raises the high-water mark (root 14, never journaled, so
//! no rollback lowers it) to the end of what it writes. A high-water mark above the tail means
//! stale bytes, and before anything else is written at the tail (the next append, a roll's
//! SEGMENT_END) they are zeroed and synced, in every sync mode, under the mutex: the bytes
//! above the tail are then durably zero again, as the open rules assume (only a torn tail
//! follows the valid log); a group-commit leader erases them too, and so does
//! [`Log::erase_rolled_back`]. A stale record never makes a reopen report corruption: it
//! vouches for no more than had been synced before it was written, which a reopen finds valid.
//!
//! What remains: between the rollback and the erasure, a crash or power cut may keep the stale
//! record at the very end of the log, and a reopen then replays it, like an append whose caller
//! died before it learned the outcome. A caller that rolls back a section in which it appended,
//! for an error it reports as a definite failure, calls [`Log::erase_rolled_back`] first.
//!
//! # Rolling and sealing
//! A record that does not fit in the tail segment (with room for a SEGMENT_END after it) goes
//! to the next one: [`Log::append`] answers [`LogError::NeedRoll`] naming the full segment `n`,
//! without changing anything; the caller ends its section, calls [`Log::roll`]`(n)` and appends
//! again. One process rolls at a time (the roller claim, root 12). The roll:
//! 1. in a section: nothing to do if the tail has moved past `n` (another thread or process
//!    rolled); waits while a live roller holds the claim; otherwise claims it (taking over
//!    from a roller that died);
//! 2. outside the mutex: creates segment `n+1` durably (as under "Files"), or, if a roll that
//!    died created it, reuses it — if it holds nothing but its header; anything else is
//!    corruption, as the tail never moved to it — after syncing the directory (that roll may
//!    have died before the rename was durable);
//! 3. in a section: erases stale bytes, writes SEGMENT_END at the tail of `n` and marks `n`
//!    ended (root 13), so appends to `n` get NeedRoll from now on (skipped if `n` is marked
//!    ended already: a roller that died did it);
//! 4. outside the mutex: **seals** `n`: syncs every byte of it not yet durable, in every sync
//!    mode (`none` too; there, writeback of each finished MiB of the tail segment is started
//!    as it fills, so the seal has little left to wait for; see [`SegmentFile`]'s
//!    `start_writeback`);
//! 5. in a section: publishes `n+1` as the tail, raises `durable` (which records vouch for) to
//!    its base, clears the mark and the claim, and wakes the waiters.
//!
//! So no byte of a segment reaches the disk before all of the previous segment, and a segment
//! ends with SEGMENT_END only once its successor exists. If the seal fails, the log fails (as
//! after a failed sync). Where a roll can stop (a process crash: the region survives, and the
//! next owner of the mutex undoes an unfinished section; a power cut: the region is rebuilt
//! from the files by the open rules below), with the crash points of `crate::crash`:
//! | stopped | the peers find | a power cut leaves, and open makes of it |
//! |---|---|---|
//! | in section 1 | the claim as it was | nothing changed |
//! | after 1, in 2, or after 2 (`log.roll_created`) | the claim of a dead process: the next roller takes over, replacing a stray `*.tmp` or reusing `n+1` | no SEGMENT_END in `n`, `n+1` missing or empty: a torn tail (if any); an empty `n+1` is deleted |
//! | in section 3 | section 3 undone: `n` not ended; a SEGMENT_END perhaps above the tail, stale (erased before the next write there) | as above |
//! | after 3 (`log.rolled`), in 4 | `n` ended: the taker seals it again, then publishes | `n` ends with SEGMENT_END or with a torn tail, `n+1` is empty: the log ends there; nothing acknowledged is lost (it was synced, or sealed) |
//! | after 4 (`log.roll_sealed`), in 5 | section 5 undone: as after 4 | `n` sealed with its SEGMENT_END, `n+1` empty: the log ends at the start of `n+1` |
//! | after 5 (`log.rolled_published`) | the roll done | as after any roll |
//!
//! # Group commit
//! [`Log::sync_to`]`(lsn)` returns at once if `durable` ≥ `lsn`. If a live leader (root 11) is
//! syncing, it waits (on the log's wait key, re-checking at least every
//! [`crate::shm::RECHECK`]) until `durable` moves or the leader is found dead, then decides
//! again. Without one, it becomes the leader: records itself, ends the section, yields so that
//! runnable threads append first, reads `durable` and `written` in a section (only committed
//! appends count; stale bytes are erased), flushes that range through its own mapping of the
//! tail segment (segments before the tail are sealed, and `durable` is at least the tail's
//! base; `msync` of a shared mapping writes the file's dirty pages whoever dirtied them,
//! `fdatasync` the whole file), then, in a section, publishes the new `durable` — or the
//! failure — clears its claim and wakes the waiters. A panic in the flush is caught and fails
//! the log, so no waiter waits for ever. A leader that dies after its claim, in the flush
//! (`log.leader_flushing`) or after it (`log.leader_flushed`) leaves the claim of a dead
//! process: a waiter takes over and flushes again from the old `durable`; one that dies in the
//! publishing section leaves it undone, which is the same. With `sync=none`, `sync_to` syncs
//! nothing (the rolls still seal).
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
//! header and zeros. A sync that raises the durable LSN covers a prefix of the log (a later
//! segment gets its first byte only after the previous one was sealed), so a record can only be
//! torn if no such sync completed after it was written (the erasure of a failed write or of
//! stale bytes syncs just those bytes, and the pages they share, and raises nothing: what it
//! makes durable early, no record vouches for); unsynced bytes may reach the disk in any order
//! and torn anywhere, but only in the last segment (or, during a roll, in the one being sealed,
//! with the next still empty).
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
//! The version is per segment, in its header; a segment holds records of its own version only.
//! - 1: PREPARE, HEURISTIC and MOVE carry no time (the payloads above without `time`). The seal
//!   changed what a writer leaves behind, not the format: readers accept every version-1 log
//!   (see the last limitation above).
//! - 2 (written now): PREPARE, HEURISTIC and MOVE carry `time` after their first tag; nothing
//!   else changed.
//!
//! This library reads versions 1 and 2 and writes 2. A log written by version 1 opens as it is
//! (its PREPARE, HEURISTIC and MOVE records have an unknown time) and stays readable by older
//! libraries until something is appended: the first append finds the tail segment of an older
//! version, ends it with SEGMENT_END and seals it (a roll, as for a full segment), and goes to a
//! new segment of version 2. From then on a library that reads only version 1 refuses the log at
//! open, before it changes any file: the new segment's header fails its version check, and the
//! open answers [`LogError::Corrupt`] naming that file ("unsupported format version or header
//! length"). This library refuses a segment of a version newer than 2 the same way, saying that a
//! newer mmxa wrote it. A change of format bumps `VERSION` (`record.rs`) and keeps reading
//! the older versions the same way.

mod media;
mod open;
mod record;
mod segment;
mod shared;
pub mod sim;
mod writer;

use crate::config::SyncMode;
use crate::shm::Region;
pub use media::{Media, SegmentFile};
pub use record::{put_value_offset, Record};
pub use segment::{reserve, sync_dir, Mapped};
pub use shared::{reap_claims, Peer, LOG_ROOTS};
use shared::{
    R_DURABLE, R_FIRST_BASE, R_FIRST_ID, R_TAIL_BASE, R_TAIL_ID, R_TAIL_OFF, R_TAIL_SIZE, R_WRITTEN,
};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A position in the log.
pub type Lsn = u64;

/// A log failure.
#[derive(Debug)]
pub enum LogError {
    /// An I/O call failed (or the shared region did: see the message).
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
    /// acknowledged, by any process, until the log is reopened. The only error that fails the
    /// log.
    Failed(String),
    /// No disk space for a new segment.
    NoSpace(String),
    /// The record is larger than a segment can hold.
    TooBig(usize),
    /// [`Log::retire_oldest`] of a segment that is not the oldest (or is the tail).
    NotOldest(u64),
    /// A read of a position that is not in the log (any more: its segment was retired).
    Gone(Lsn),
    /// [`Log::append`]: the record does not fit in the tail segment, this segment id (or the
    /// segment is of an older format version, which takes no new records). Nothing was
    /// changed: end the section, call [`Log::roll`] with the id, and append again.
    NeedRoll(u64),
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
            LogError::NeedRoll(id) => {
                write!(
                    f,
                    "segment {id} is full (or of an older format): roll the log and append again"
                )
            }
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

/// One segment file of the log, as this process maps it.
struct Seg<F> {
    id: u64,
    /// LSN of the file's byte 0.
    base: Lsn,
    salt: u64,
    /// Format version of its header and records.
    version: u32,
    file: F,
    path: PathBuf,
}

/// The log of one store as one process sees it, on the medium `M` (memory-mapped files unless
/// a test says otherwise). Its shared state is in the region (see "Shared state"); this holds
/// the process's own: its mappings and its halves of the claims.
pub struct Log<M: Media = Mapped> {
    media: M,
    segment_size: u64,
    sync: SyncMode,
    region: Arc<Region>,
    peer: Peer,
    /// The segment files this process has mapped, by id (and so by base LSN), without
    /// those before the shared first id once anyone looked; opened when needed.
    segs: RwLock<Vec<Arc<Seg<M::File>>>>,
    /// A thread of this process is the group-commit leader (changed under the region mutex).
    leading: AtomicBool,
    /// A thread of this process is rolling (changed under the region mutex).
    rolling: AtomicBool,
    /// This process failed the log (the shared flag says so too once published).
    failed_here: AtomicBool,
    fail_reason: Mutex<String>,
    /// Flushes this process led (for tests and statistics).
    leads: AtomicU64,
    /// The region is process-private, made by [`Log::open_single`] (kept for the next one).
    local: bool,
}

// A poisoned lock only says that a thread panicked while holding it. Nothing these locks guard
// is left half-updated by a panic (each update is one assignment or insertion), and the RM
// fails the whole store after a panic; so the log takes the guard and goes on rather than
// turning the poison into an error that would misstate what happened.

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

/// The file name of segment `id` in a store directory.
pub fn segment_file_name(id: u64) -> String {
    seg_name(id)
}

/// Where the log stood at one instant, read in one section (see [`Log::point`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The first segment still in the log.
    pub first: u64,
    /// The tail segment's id.
    pub tail: u64,
    /// The tail segment's base LSN.
    pub tail_base: Lsn,
    /// The end of the committed records: the tail (`tail_base` + the tail offset). Every byte
    /// before it belongs to a record whose section committed; the bytes after it in the tail
    /// segment are nobody's.
    pub end: Lsn,
    /// [`Log::written`] as of the same section (at most `end`; below it just after a roll).
    pub written: Lsn,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(seg_name(id))
}

impl<M: Media> Log<M> {
    /// The LSN just past the last appended record, read lock-free: it may include an append
    /// whose section is still open (and may yet be rolled back).
    pub fn written(&self) -> Lsn {
        self.load(R_WRITTEN)
    }

    /// Everything before this LSN is on stable storage.
    pub fn durable(&self) -> Lsn {
        self.load(R_DURABLE)
    }

    /// Whether the log failed, in any process (it then refuses all work until reopened).
    pub fn failed(&self) -> Option<String> {
        self.failure()
    }

    /// The region the log's shared state lives in (sections for [`Log::append`] are taken on
    /// it).
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// This process's slot among the peers.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// How many group-commit flushes this process led.
    pub fn leads(&self) -> u64 {
        self.leads.load(Ordering::Relaxed)
    }

    /// The oldest segment, unless it is the one being appended to: its id and LSN range.
    pub fn oldest(&self) -> Option<(u64, Lsn, Lsn)> {
        let first = self.load(R_FIRST_ID);
        if first >= self.load(R_TAIL_ID) {
            return None;
        }
        // Its end is the next one's base (its own file may be deleted already, its retirement
        // unfinished).
        let next = self.seg(first + 1).ok()?;
        Some((first, self.load(R_FIRST_BASE), next.base))
    }

    /// Number of segment files and their total size in bytes, from the shared tail and first
    /// segment (read lock-free: approximate while a roll or a retirement is published).
    pub fn disk_usage(&self) -> (usize, u64) {
        let (first, first_base) = (self.load(R_FIRST_ID), self.load(R_FIRST_BASE));
        let (tail, tail_end) = (
            self.load(R_TAIL_ID),
            self.load(R_TAIL_BASE) + self.load(R_TAIL_SIZE),
        );
        (
            (tail + 1).saturating_sub(first) as usize,
            tail_end.saturating_sub(first_base),
        )
    }

    /// The tail segment's file and the offset in it where the next record goes (read
    /// lock-free, as [`Log::disk_usage`]).
    pub fn tail_position(&self) -> (PathBuf, u64) {
        (
            seg_path(self.media.dir(), self.load(R_TAIL_ID)),
            self.load(R_TAIL_OFF),
        )
    }

    /// The log's first segment, tail and end of committed records, in one section (so no
    /// append still open counts).
    pub fn point(&self) -> Result<Point, LogError> {
        let t = self.lock()?;
        let get = |r: usize| t.get_u64(crate::shm::root(r)).map_err(shared::region_err);
        let p = Point {
            first: get(R_FIRST_ID)?,
            tail: get(R_TAIL_ID)?,
            tail_base: get(R_TAIL_BASE)?,
            end: get(R_TAIL_BASE)? + get(shared::R_TAIL_OFF)?,
            written: get(R_WRITTEN)?,
        };
        t.commit().map_err(shared::region_err)?;
        Ok(p)
    }

    /// The configured size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The smallest a new segment can be (the first ones of a log are smaller than the
    /// configured size): what one section may append, with room to spare, is half of it.
    pub fn smallest_segment(&self) -> u64 {
        writer::FIRST_SEGMENT.min(self.segment_size)
    }

    /// Copies `len` bytes at `lsn` (below [`Log::written`], in a committed record) into
    /// `out`. No section: those bytes never change. An LSN whose segment was retired is
    /// [`LogError::Gone`].
    pub fn read_into(&self, lsn: Lsn, len: usize, out: &mut Vec<u8>) -> Result<(), LogError> {
        let seg = self.seg_at(lsn)?;
        seg.file
            .read_into(lsn - seg.base, len, out)
            .map_err(io_err("read value"))
    }

    /// Starts loading the first bytes of the `len` bytes at `lsn` into the processor's caches (a
    /// hint: a value about to be read).
    pub fn prefetch(&self, lsn: Lsn, len: usize) {
        if let Ok(seg) = self.seg_at(lsn) {
            seg.file.prefetch(lsn - seg.base, len);
        }
    }

    /// The segment `id`, mapped: from this process's cache, or opened from the media (and
    /// cached). A segment before the shared first id is [`LogError::Gone`] (its file is or
    /// will soon be deleted); the cache lets go of such segments here.
    fn seg(&self, id: u64) -> Result<Arc<Seg<M::File>>, LogError> {
        let first = self.load(R_FIRST_ID);
        if id >= first {
            let segs = read(&self.segs);
            if segs.first().map_or(true, |s| s.id >= first) {
                if let Ok(i) = segs.binary_search_by_key(&id, |s| s.id) {
                    return Ok(segs[i].clone());
                }
            }
        }
        self.prune(first);
        if id < first {
            return Err(LogError::Gone(0));
        }
        let seg = Arc::new(Self::open_segment(&self.media, id)?);
        let mut segs = write(&self.segs);
        match segs.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => Ok(segs[i].clone()),
            Err(i) => {
                segs.insert(i, seg.clone());
                Ok(seg)
            }
        }
    }

    /// Drops this process's mappings of segments before `first` (readers holding one keep it
    /// until they finish).
    fn prune(&self, first: u64) {
        if read(&self.segs).first().is_some_and(|s| s.id < first) {
            write(&self.segs).retain(|s| s.id >= first);
        }
    }

    /// The segment holding `lsn`.
    fn seg_at(&self, lsn: Lsn) -> Result<Arc<Seg<M::File>>, LogError> {
        let first = self.load(R_FIRST_ID);
        {
            let segs = read(&self.segs);
            let i = segs.partition_point(|s| s.base <= lsn);
            if let Some(s) = i.checked_sub(1).map(|i| &segs[i]) {
                if lsn < s.base + s.file.size() && s.id >= first {
                    return Ok(s.clone());
                }
            }
        }
        // Not mapped here yet: search from the tail down (segment ids and bases grow
        // together), guessing from the sizes.
        let gone = |e: LogError| match e {
            LogError::Gone(_) => LogError::Gone(lsn),
            LogError::Io(_, e) if e.kind() == io::ErrorKind::NotFound => LogError::Gone(lsn),
            e => e,
        };
        let tail = self.load(R_TAIL_ID);
        let mut id = tail;
        let mut steps = 0u64;
        loop {
            if id < first || id > tail || steps > 1 << 20 {
                return Err(LogError::Gone(lsn));
            }
            steps += 1;
            let s = self.seg(id).map_err(gone)?;
            let size = s.file.size();
            if lsn < s.base {
                id -= (s.base - lsn).div_ceil(size).min(id);
            } else if lsn >= s.base + size {
                id += 1;
            } else {
                return Ok(s);
            }
        }
    }
}

#[cfg(test)]
mod tests;
