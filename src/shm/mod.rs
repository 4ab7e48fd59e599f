//! Shared memory for peers: the primitive layer under the shared branch table, key locks and
//! index, where every process with a store open is a peer.
//!
//! Owns: a region — a file mapped `MAP_SHARED` by every process of a store — and what it takes
//! for any of them to die at any instruction while the others repair and go on:
//! - [`Region`] (`region.rs`): create, attach, grow; lock-free atomics and futexes at offsets;
//! - [`Txn`] (`txn.rs`, `journal.rs`): a section under the region's robust mutex whose writes
//!   are undone by the next owner if its process dies inside it;
//! - the allocator (`alloc.rs`): blocks in the region, metadata journaled;
//! - [`LockFile`] (`slots.rs`): process slots, liveness by the kernel's OFD locks, and the
//!   "open" lock that says when the region must be rebuilt from the log;
//! - waiting (`wait.rs`): sleep on a word until a releaser changes it, with no lost wake-up;
//! - collections over sections: [`Table`] (`table.rs`, hashes to record offsets) and
//!   [`Vec64`] (`vec.rs`, growable arrays of words owned by a record).
//!
//! The byte layout of the region is in `layout.rs`; the journal's, the allocator's and the slot
//! table's formats beside their code. Everything in the region is addressed by offset ([`Off`],
//! 0 = null), never by pointer. Only `sys.rs` has `unsafe`.
//!
//! # Rules for the layers above
//! - Every offset and length read from the region is data, not truth: the accessors check it
//!   against the mapped size and answer [`Error::OutOfBounds`] or [`Error::Corrupt`]; nothing
//!   here crashes on any bytes in the file.
//! - Inside a section, change existing memory only with `set_*` (journaled); `init_*` only into
//!   blocks the same section allocated. Memory read lock-free must be written with `set_u32` /
//!   `set_u64` (atomic, release) and read with [`Region::atomic_u64`] (acquire).
//! - A section must be short: the mutex is the whole store's. Chunk long work (the journal holds
//!   [`JOURNAL_CAP`] bytes; more fails with [`Error::JournalFull`], rolled back).
//! - A freed block may be reused by the next section: a lock-free reader of a block must have
//!   its own way to know the block is still what it read (e.g. a version word).
//! - A `Region` must not be used in a child created by `fork`: every call there fails with
//!   [`Error::Forked`]; the child must attach anew.

mod alloc;
mod crash;
mod journal;
pub mod layout;
mod region;
mod slots;
mod sys;
mod table;
mod txn;
mod vec;
mod wait;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use alloc::{Usage, BLOCK_HEADER, CLASSES, MAX_SMALL};
pub use layout::{
    root, DEFAULT_INITIAL_SIZE, DEFAULT_MAX_SIZE, HEAP_OFF, JOURNAL_CAP, ROOTS, SLOTS,
    STATE_BROKEN, STATE_BUILDING, STATE_READY, WAIT_WORDS,
};
pub use region::{wait_index, Options, Region, Wake};
pub use slots::{slot_state, DeadOwner, LockFile, Opened, Slot};
pub use table::{Cursor, Table};
pub use txn::Txn;
pub use vec::Vec64;
pub use wait::RECHECK;

/// How many `fork`s lie between this process and the one that first asked (a counter that a
/// `pthread_atfork` child handler bumps): cheaper than comparing pids on every call.
pub fn fork_generation() -> u64 {
    sys::fork_generation()
}

use std::fmt;
use std::io;

/// An offset in a region (0 = null).
pub type Off = u64;

/// `timeout` from now, saturating (a `Duration::MAX` timeout waits for ever, near enough).
fn deadline(timeout: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 86400))
}

/// What can go wrong with a region.
#[derive(Debug)]
pub enum Error {
    /// The mutex (or, in `open_or_recover`, a recovering process) was not free in time.
    Timeout,
    /// An operating-system call failed.
    Io(io::Error),
    /// An offset and length outside the mapped region, its writable areas, or misaligned.
    OutOfBounds {
        /// Offset.
        off: u64,
        /// Length.
        len: u64,
    },
    /// Bytes in the region are not what they must be (a journal, a block header, a size).
    Corrupt(String),
    /// The section journaled more than [`JOURNAL_CAP`] bytes; it is rolled back.
    JournalFull,
    /// Growth beyond the region's max size.
    RegionFull {
        /// Bytes wanted.
        wanted: u64,
        /// The max size.
        max: u64,
    },
    /// The mutex's owner died and the repair failed: the region must be rebuilt (every
    /// process must close it; the next opener rebuilds from the log).
    NotRecoverable,
    /// This thread already holds the region mutex.
    Relock,
    /// The `Region` was created before a `fork`; this is the child.
    Forked,
    /// Every process slot is taken.
    NoFreeSlot,
    /// The region is not ready to attach (its state: building or broken).
    NotReady(u32),
    /// A builder section on a region that is no longer being built.
    NotBuilding,
    /// The file is not a region this build can use (magic, version, layout).
    Incompatible(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => write!(f, "timed out waiting for the shared region"),
            Error::Io(e) => write!(f, "{e}"),
            Error::OutOfBounds { off, len } => {
                write!(
                    f,
                    "{len} bytes at offset {off} are outside the shared region"
                )
            }
            Error::Corrupt(s) => write!(f, "shared region corrupt: {s}"),
            Error::JournalFull => write!(f, "section too large for the journal (rolled back)"),
            Error::RegionFull { wanted, max } => {
                write!(f, "shared region full: {wanted} bytes wanted, max {max}")
            }
            Error::NotRecoverable => write!(f, "shared region not recoverable: rebuild it"),
            Error::Relock => write!(f, "this thread already holds the shared region's mutex"),
            Error::Forked => write!(f, "shared region used in a child of fork"),
            Error::NoFreeSlot => write!(f, "no free process slot"),
            Error::NotReady(s) => write!(f, "shared region not ready (state {s})"),
            Error::NotBuilding => write!(f, "shared region is no longer being built"),
            Error::Incompatible(s) => write!(f, "not a usable shared region: {s}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            other => io::Error::other(other.to_string()),
        }
    }
}
