//! The undo journal: what makes a section all-or-nothing when its process dies inside it.
//!
//! Owns: the journal's format and the three things done to it — [`Journal::record`] before a
//! write, [`Journal::rollback`] by whoever finds the section unfinished, [`Journal::clear`] to
//! commit. The code is generic over [`Words`], so the same functions run on a real region and in
//! the model checker (`model.rs`), whose memory can "die" after any store.
//!
//! # Format
//! The length word (at `len_off`) counts the bytes of entries in use; entries follow each other
//! from `entries`, each 8-byte aligned:
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | target offset in the region |
//! | 8 | 8 | length `n` of the target range, 1 ≤ n ≤ capacity |
//! | 16 | n | the target's bytes before the write, then zero padding to a multiple of 8 |
//!
//! # Protocol (all under the region mutex)
//! Record: write the entry above the length, then publish the new length (release), and only
//! then may the caller write the target. A death before the length store leaves an entry that
//! nobody reads and a target not yet written; after it, the entry covers the write.
//! Rollback: check every entry (in bounds of the length, target journalable), then copy the old
//! bytes back newest first — so a range journaled twice ends with its oldest value — and only
//! then store length 0. Restoring is idempotent, so a repairer that dies half way leaves the
//! journal to the next one, which redoes it all. Commit: store length 0, one store.
//! A journal that fails the checks (garbage) is not applied at all: the caller declares the
//! region unrecoverable rather than write through offsets it cannot trust.

use super::Error;

/// The memory a journal lives in and protects.
pub(crate) trait Words {
    /// The 8-aligned `u64` at `off`.
    fn load(&self, off: u64) -> Result<u64, Error>;
    /// Stores a `u64` at `off` (no ordering needed: the mutex orders the section).
    fn store(&self, off: u64, v: u64) -> Result<(), Error>;
    /// Stores a `u64` at `off` with release ordering.
    fn publish(&self, off: u64, v: u64) -> Result<(), Error>;
    /// Copies `len` bytes from `src` to `dst`.
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), Error>;
    /// Whether a section may write `[off, off+len)` (so a rollback may restore it).
    fn journalable(&self, off: u64, len: u64) -> bool;
}

/// Where a journal is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Journal {
    /// The length word.
    pub len_off: u64,
    /// The first entry.
    pub entries: u64,
    /// Bytes available for entries.
    pub cap: u64,
}

const ENTRY_HEADER: u64 = 16;

fn padded(n: u64) -> u64 {
    (n + 7) & !7
}

impl Journal {
    /// Bytes of entries in use (checked against the capacity).
    pub fn used<W: Words>(&self, w: &W) -> Result<u64, Error> {
        let used = w.load(self.len_off)?;
        if used > self.cap || used % 8 != 0 {
            return Err(Error::Corrupt(format!("journal length {used}")));
        }
        Ok(used)
    }

    /// Journals `[off, off+len)` before the caller writes it. `used` is the caller's copy of the
    /// length (the section's own: nobody else writes the journal while it holds the mutex).
    pub fn record<W: Words>(&self, w: &W, used: &mut u64, off: u64, len: u64) -> Result<(), Error> {
        if len == 0 {
            return Ok(());
        }
        if !w.journalable(off, len) {
            return Err(Error::Corrupt(format!(
                "write of {len} bytes at {off} outside the writable areas"
            )));
        }
        let need = ENTRY_HEADER + padded(len);
        if need > self.cap - *used {
            return Err(Error::JournalFull);
        }
        let at = self.entries + *used;
        w.store(at, off)?;
        w.store(at + 8, len)?;
        w.copy(off, at + ENTRY_HEADER, len)?;
        *used += need;
        w.publish(self.len_off, *used)
    }

    /// Undoes every journaled write, newest first, then empties the journal. Returns how many
    /// entries were undone. Writes nothing if any entry fails its checks.
    pub fn rollback<W: Words>(&self, w: &W) -> Result<usize, Error> {
        let used = self.used(w)?;
        if used == 0 {
            return Ok(0);
        }
        let mut entries = Vec::new();
        let mut pos = 0;
        while pos < used {
            let off = w.load(self.entries + pos)?;
            let len = w.load(self.entries + pos + 8)?;
            if len == 0 || len > self.cap || ENTRY_HEADER + padded(len) > used - pos {
                return Err(Error::Corrupt(format!(
                    "journal entry at {pos}: length {len}"
                )));
            }
            if !w.journalable(off, len) {
                return Err(Error::Corrupt(format!(
                    "journal entry at {pos}: {len} bytes at {off} outside the writable areas"
                )));
            }
            entries.push((pos, off, len));
            pos += ENTRY_HEADER + padded(len);
        }
        for &(pos, off, len) in entries.iter().rev() {
            w.copy(self.entries + pos + ENTRY_HEADER, off, len)?;
        }
        w.publish(self.len_off, 0)?;
        Ok(entries.len())
    }

    /// Commits: the section's writes stay.
    pub fn clear<W: Words>(&self, w: &W) -> Result<(), Error> {
        w.publish(self.len_off, 0)
    }
}
