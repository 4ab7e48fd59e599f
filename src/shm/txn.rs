//! [`Txn`]: a critical section under the region mutex, journaled so that it happens entirely or
//! not at all — even when its process dies at any instruction inside it.
//!
//! Owns: taking the mutex (and repairing after a dead owner), the section's writes, deferred
//! frees, wake-ups, commit and rollback. Invariants: while a `Txn` lives its thread holds the
//! mutex and the journal holds the old bytes of every range the section changed through a
//! journaled write; bytes changed without the journal lie in blocks this section allocated,
//! which a rollback unallocates; at commit the frees are applied (journaled) before the journal
//! is cleared (the commit point), wake-ups are sent, and the mutex is released last — so a
//! process that dies before it has woken its waiters dies holding the mutex, and whoever takes
//! it next wakes every wait word. A builder section (`lock_builder`, region still building)
//! writes without the journal: if it does not commit, the region is marked broken.

use super::crash::{self, Point};
use super::journal::{Journal, Words};
use super::layout::*;
use super::region::{wait_index, Region};
use super::sys::{LockError, Locked};
use super::{Error, Off};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) const JOURNAL: Journal = Journal {
    len_off: JOURNAL_LEN_OFF,
    entries: JOURNAL_OFF,
    cap: JOURNAL_CAP,
};

/// A critical section: the region mutex held by this thread, with an undo journal.
///
/// Dropping it without [`Txn::commit`] (an error path, a panic unwinding through it) rolls every
/// journaled write back and unlocks. Not `Send`: the mutex is released by the thread that took it.
pub struct Txn<'r> {
    pub(super) r: &'r Region,
    pub(super) builder: bool,
    repaired: bool,
    /// The journal overflowed: everything fails, commit rolls back.
    failed: bool,
    done: bool,
    /// Our copy of the journal length.
    jused: u64,
    /// Blocks allocated in this section (payload offset → length), where `init_*` may write.
    #[cfg(debug_assertions)]
    pub(super) fresh: std::collections::BTreeMap<Off, u64>,
    pub(super) frees: Vec<Off>,
    /// Changes of the allocator's figures, written at commit.
    pub(super) stats: [i64; 4],
    wakes: [u64; WAIT_WORDS / 64],
    _not_send: PhantomData<*const ()>,
}

/// Journal words through a region, with a crash point at each restore.
struct Repairing<'a>(&'a Region);

impl Words for Repairing<'_> {
    fn load(&self, off: u64) -> Result<u64, Error> {
        Words::load(self.0, off)
    }
    fn store(&self, off: u64, v: u64) -> Result<(), Error> {
        Words::store(self.0, off, v)
    }
    fn publish(&self, off: u64, v: u64) -> Result<(), Error> {
        Words::publish(self.0, off, v)
    }
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), Error> {
        crash::hit(Point::Repairing);
        Words::copy(self.0, src, dst, len)
    }
    fn journalable(&self, off: u64, len: u64) -> bool {
        self.0.journalable(off, len)
    }
}

impl Region {
    /// Enters a journaled section, waiting at most `timeout` for the mutex (a stopped process
    /// can hold it: a timeout is [`Error::Timeout`], never a hang). If the previous owner died
    /// inside its section, its journal is rolled back first and [`Txn::repaired`] says so.
    pub fn lock(&self, timeout: Duration) -> Result<Txn<'_>, Error> {
        self.enter(timeout, false)
    }

    /// Enters an unjournaled section, for the one process building a region it created (state
    /// building) before anyone can attach: writes cost no journal, and a section that does not
    /// commit marks the region broken (it must be built again from scratch).
    pub fn lock_builder(&self, timeout: Duration) -> Result<Txn<'_>, Error> {
        self.enter(timeout, true)
    }

    fn enter(&self, timeout: Duration, builder: bool) -> Result<Txn<'_>, Error> {
        self.check_fork()?;
        let how = self
            .map
            .mutex_lock(MUTEX_OFF, timeout)
            .map_err(|e| match e {
                LockError::Timeout => Error::Timeout,
                LockError::NotRecoverable => Error::NotRecoverable,
                LockError::Relock => Error::Relock,
                LockError::Os(e) => Error::Io(e),
            })?;
        // From here `t` owns the mutex: dropping it unlocks.
        let mut t = Txn {
            r: self,
            builder: false,
            repaired: false,
            failed: false,
            done: false,
            jused: 0,
            #[cfg(debug_assertions)]
            fresh: Default::default(),
            frees: Vec::new(),
            stats: [0; 4],
            wakes: [0; WAIT_WORDS / 64],
            _not_send: PhantomData,
        };
        let dead = how == Locked::OwnerDied;
        let used = match self.refresh().and_then(|_| JOURNAL.used(self)) {
            Ok(u) => u,
            Err(e) => return Err(t.abandon(e)),
        };
        if dead || used != 0 {
            // A section never finished: undo it. If the journal cannot be trusted, leave the
            // mutex inconsistent: every process then gets `NotRecoverable` (rebuild).
            if let Err(e) = JOURNAL.rollback(&Repairing(self)) {
                return Err(t.abandon(e));
            }
            if dead {
                if let Err(e) = self.map.mutex_consistent(MUTEX_OFF) {
                    return Err(t.abandon(e.into()));
                }
            }
            // The dead owner may have bumped words it never woke.
            for i in 0..WAIT_WORDS {
                self.wake_index_always(i);
            }
            t.repaired = true;
        }
        if builder && self.state() != STATE_BUILDING {
            return Err(Error::NotBuilding);
        }
        t.builder = builder;
        Ok(t)
    }
}

impl<'r> Txn<'r> {
    /// Unlocks without rollback or consistency (the state could not be trusted) and returns `e`.
    fn abandon(mut self, e: Error) -> Error {
        self.done = true;
        let _ = self.r.map.mutex_unlock(MUTEX_OFF);
        e
    }

    /// Whether the previous owner died inside its section (now rolled back). The layers above
    /// may have repairs of their own to make (e.g. reap that process's slot).
    pub fn repaired(&self) -> bool {
        self.repaired
    }

    /// Whether this is a builder section (unjournaled).
    pub fn is_builder(&self) -> bool {
        self.builder
    }

    /// The region.
    pub fn region(&self) -> &'r Region {
        self.r
    }

    /// Bytes of journal this section has used.
    pub fn journal_used(&self) -> u64 {
        self.jused
    }

    pub(super) fn usable(&self) -> Result<(), Error> {
        if self.failed {
            return Err(Error::JournalFull);
        }
        Ok(())
    }

    /// The `u64` at `off` (8-aligned, anywhere in the region).
    pub fn get_u64(&self, off: Off) -> Result<u64, Error> {
        let a = self
            .r
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        Ok(a.load(Ordering::Relaxed))
    }

    /// The `u32` at `off` (4-aligned).
    pub fn get_u32(&self, off: Off) -> Result<u32, Error> {
        let a = self
            .r
            .map
            .u32_at(off)
            .ok_or(Error::OutOfBounds { off, len: 4 })?;
        Ok(a.load(Ordering::Relaxed))
    }

    /// The byte at `off`.
    pub fn get_u8(&self, off: Off) -> Result<u8, Error> {
        let a = self
            .r
            .map
            .u8_at(off)
            .ok_or(Error::OutOfBounds { off, len: 1 })?;
        Ok(a.load(Ordering::Relaxed))
    }

    /// Copies the bytes at `off` into `buf`.
    pub fn read_bytes(&self, off: Off, buf: &mut [u8]) -> Result<(), Error> {
        if self.r.map.read(off, buf) {
            Ok(())
        } else {
            Err(Error::OutOfBounds {
                off,
                len: buf.len() as u64,
            })
        }
    }

    /// Calls `f` with the `len` bytes at `off`, in place. Only for data that nothing writes
    /// lock-free (atomics): written by sections only, which cannot run while `f` does.
    pub fn with_bytes<R>(
        &self,
        off: Off,
        len: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, Error> {
        let s = self
            .r
            .map
            .slice(off, len)
            .ok_or(Error::OutOfBounds { off, len })?;
        Ok(f(s))
    }

    fn user(off: Off, len: u64) -> Result<(), Error> {
        if Region::user_range(off, len) {
            Ok(())
        } else {
            Err(Error::OutOfBounds { off, len })
        }
    }

    /// Journals `[off, off+len)` (checked in bounds and writable) unless this is a builder.
    fn journal(&mut self, off: Off, len: u64) -> Result<(), Error> {
        if self.builder {
            return if self.r.journalable(off, len) {
                Ok(())
            } else {
                Err(Error::OutOfBounds { off, len })
            };
        }
        match JOURNAL.record(self.r, &mut self.jused, off, len) {
            Err(Error::JournalFull) => {
                self.failed = true;
                Err(Error::JournalFull)
            }
            r => r,
        }
    }

    /// Journaled store of a `u64` anywhere writable (the allocator and slots use it too).
    pub(super) fn write_u64(&mut self, off: Off, v: u64) -> Result<(), Error> {
        self.usable()?;
        let a = self
            .r
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        self.journal(off, 8)?;
        crash::hit(Point::Journaled);
        a.store(v, Ordering::Release);
        crash::hit(Point::Written);
        Ok(())
    }

    pub(super) fn write_u32(&mut self, off: Off, v: u32) -> Result<(), Error> {
        self.usable()?;
        let a = self
            .r
            .map
            .u32_at(off)
            .ok_or(Error::OutOfBounds { off, len: 4 })?;
        self.journal(off, 4)?;
        crash::hit(Point::Journaled);
        a.store(v, Ordering::Release);
        crash::hit(Point::Written);
        Ok(())
    }

    /// Sets the `u64` at `off` (8-aligned, in the roots or the heap), journaled. The store has
    /// release ordering, so a lock-free reader that loads it with acquire sees what the section
    /// wrote before it.
    pub fn set_u64(&mut self, off: Off, v: u64) -> Result<(), Error> {
        Txn::user(off, 8)?;
        self.write_u64(off, v)
    }

    /// Sets the `u32` at `off` (4-aligned, in the roots or the heap), journaled.
    pub fn set_u32(&mut self, off: Off, v: u32) -> Result<(), Error> {
        Txn::user(off, 4)?;
        self.write_u32(off, v)
    }

    /// Sets the byte at `off` (in the roots or the heap), journaled.
    pub fn set_u8(&mut self, off: Off, v: u8) -> Result<(), Error> {
        Txn::user(off, 1)?;
        self.usable()?;
        let a = self
            .r
            .map
            .u8_at(off)
            .ok_or(Error::OutOfBounds { off, len: 1 })?;
        self.journal(off, 1)?;
        crash::hit(Point::Journaled);
        a.store(v, Ordering::Release);
        crash::hit(Point::Written);
        Ok(())
    }

    /// Copies `data` to `off` (in the roots or the heap), journaled (as one entry: a range
    /// longer than the journal's capacity fails with [`Error::JournalFull`]).
    pub fn set_bytes(&mut self, off: Off, data: &[u8]) -> Result<(), Error> {
        let len = data.len() as u64;
        Txn::user(off, len)?;
        self.usable()?;
        if self.r.map.slice(off, len).is_none() {
            return Err(Error::OutOfBounds { off, len });
        }
        self.journal(off, len)?;
        crash::hit(Point::Journaled);
        self.r.map.write(off, data);
        crash::hit(Point::Written);
        Ok(())
    }

    /// Debug builds: panics unless `[off, off+len)` lies in a block allocated by this section.
    fn check_fresh(&self, off: Off, len: u64) -> Result<(), Error> {
        #[cfg(not(debug_assertions))]
        let _ = (off, len);
        self.usable()?;
        #[cfg(debug_assertions)]
        {
            let inside = self
                .fresh
                .range(..=off)
                .next_back()
                .is_some_and(|(&b, &l)| off.checked_add(len).is_some_and(|e| e <= b + l));
            assert!(
                inside,
                "init of {len} bytes at {off}: not in a block allocated by this section"
            );
        }
        Ok(())
    }

    /// Stores a `u64` into a block this section allocated (unjournaled: a rollback frees it).
    pub fn init_u64(&mut self, off: Off, v: u64) -> Result<(), Error> {
        self.check_fresh(off, 8)?;
        let a = self
            .r
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        a.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a `u32` into a block this section allocated.
    pub fn init_u32(&mut self, off: Off, v: u32) -> Result<(), Error> {
        self.check_fresh(off, 4)?;
        let a = self
            .r
            .map
            .u32_at(off)
            .ok_or(Error::OutOfBounds { off, len: 4 })?;
        a.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a byte into a block this section allocated.
    pub fn init_u8(&mut self, off: Off, v: u8) -> Result<(), Error> {
        self.check_fresh(off, 1)?;
        let a = self
            .r
            .map
            .u8_at(off)
            .ok_or(Error::OutOfBounds { off, len: 1 })?;
        a.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Copies `data` into a block this section allocated.
    pub fn init_bytes(&mut self, off: Off, data: &[u8]) -> Result<(), Error> {
        self.check_fresh(off, data.len() as u64)?;
        if self.r.map.write(off, data) {
            Ok(())
        } else {
            Err(Error::OutOfBounds {
                off,
                len: data.len() as u64,
            })
        }
    }

    /// Wakes, at commit, every waiter on `key`'s wait word: bumps the word now (never
    /// journaled: a bump that outlives a rollback is only a spurious wake-up).
    pub fn wake(&mut self, key: u64) {
        let i = wait_index(key);
        self.r.hdr32(wait_word(i)).fetch_add(1, Ordering::Release);
        self.wakes[i / 64] |= 1 << (i % 64);
    }

    /// The current value of `key`'s wait word (read under the mutex: see `wait`).
    pub fn wait_word(&self, key: u64) -> u32 {
        self.r
            .hdr32(wait_word(wait_index(key)))
            .load(Ordering::Acquire)
    }

    /// Ends the section keeping its writes: applies the deferred frees, clears the journal (the
    /// commit point), wakes the waiters asked for, unlocks. An error (the journal overflowed)
    /// means the section was rolled back.
    pub fn commit(mut self) -> Result<(), Error> {
        self.usable()?;
        let frees = std::mem::take(&mut self.frees);
        for off in frees {
            super::alloc::release(&mut self, off)?;
        }
        super::alloc::settle(&mut self)?;
        crash::hit(Point::Freed);
        if !self.builder {
            JOURNAL.clear(self.r)?;
        }
        crash::hit(Point::Committed);
        self.done = true;
        for (w, bits) in self.wakes.iter().enumerate() {
            let mut b = *bits;
            while b != 0 {
                let i = w * 64 + b.trailing_zeros() as usize;
                b &= b - 1;
                self.r.wake_index(i);
            }
        }
        self.r.map.mutex_unlock(MUTEX_OFF)?;
        Ok(())
    }

    /// Ends the section undoing its writes (the same as dropping it).
    pub fn rollback(self) {}
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.builder {
            self.r.set_state(STATE_BROKEN);
        } else if JOURNAL.rollback(self.r).is_err() {
            // Our own journal fails its checks: someone wrote over it. Leave it for the next
            // owner to refuse; nothing better to do here.
        }
        let _ = self.r.map.mutex_unlock(MUTEX_OFF);
    }
}
