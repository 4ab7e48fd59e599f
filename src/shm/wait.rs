//! Waiting for a condition that another process makes true: "sleep until word W changes, then
//! re-check under the mutex".
//!
//! Owns: the waiter's loop ([`wait_until`]), generic over [`Waitable`] so that the model checker
//! (`model.rs`) runs this very code against a model mutex and model futexes; the real instance is
//! [`Region::wait_until`].
//!
//! The protocol (no lost wake-up): a waiter checks its condition and reads the key's wait word
//! under the mutex, releases the mutex, and sleeps only while the word still holds what it read
//! (`FUTEX_WAIT` compares atomically with going to sleep). A releaser changes the condition and
//! bumps the word under the mutex ([`super::Txn::wake`]), and wakes the word's sleepers before it
//! releases the mutex. So a releaser that runs after the waiter's read has bumped the word
//! before the waiter can sleep on the old value, or wakes it once it sleeps; and a releaser that
//! dies before waking dies holding the mutex, whose next owner wakes every word. Words are shared
//! by hashing (256 of them): a wake-up may be for another key, so the waiter re-checks.
//!
//! Each word has a count of its sleepers beside it: a waiter counts itself in under the mutex,
//! when it reads the word, and out when its sleep ends; a releaser skips the wake-up call (a
//! system call) for a word nobody sleeps on. A count read under the mutex includes every waiter
//! that read the word before, so no sleeper is skipped; a waiter that died counted in only costs
//! wake-up calls for nobody.
//!
//! Real waits also sleep at most [`RECHECK`] at a time, then re-check: the condition may be
//! waiting on a process that died without a wake-up (a key held by a dead process is released
//! only when someone reaps it, which the check may do).

use super::region::Region;
use super::txn::Txn;
use super::Error;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest a waiter sleeps before it re-checks its condition anyway.
pub const RECHECK: Duration = Duration::from_millis(200);

/// What the waiter's loop needs.
pub(crate) trait Waitable {
    /// A held mutex (a section).
    type Held;
    /// Takes the mutex (fails with `Timeout` once the deadline has passed and it is busy).
    fn enter(&self) -> Result<Self::Held, Error>;
    /// Commits and releases.
    fn leave(&self, held: Self::Held) -> Result<(), Error>;
    /// The wait word (read while holding the mutex), counting the caller in as its sleeper.
    fn word(&self, held: &Self::Held) -> u32;
    /// Sleeps while the word holds `seen`; `Ok(false)` once the deadline has passed.
    fn sleep(&self, seen: u32) -> Result<bool, Error>;
    /// Counts the caller out of the word's sleepers (after `word`, once it will not sleep).
    fn awake(&self);
}

/// Waits until `check` (run under the mutex) returns `Some`, and returns it with the mutex
/// still held. What `check` writes when it returns `None` is committed before sleeping (e.g.
/// "I am waiting for K" for deadlock detection). After the deadline, `check` runs once more;
/// if it still says `None`, the result is [`Error::Timeout`].
pub(crate) fn wait_until<W: Waitable, T>(
    w: &W,
    mut check: impl FnMut(&mut W::Held) -> Result<Option<T>, Error>,
) -> Result<(W::Held, T), Error> {
    let mut last = false;
    loop {
        let mut held = w.enter()?;
        if let Some(v) = check(&mut held)? {
            return Ok((held, v));
        }
        let seen = w.word(&held);
        let left = w.leave(held);
        if let Err(e) = left {
            w.awake();
            return Err(e);
        }
        if last {
            w.awake();
            return Err(Error::Timeout);
        }
        let slept = w.sleep(seen);
        w.awake();
        last = !slept?;
    }
}

struct RegionWait<'r> {
    r: &'r Region,
    key: u64,
    deadline: Instant,
}

impl<'r> Waitable for RegionWait<'r> {
    type Held = Txn<'r>;

    fn enter(&self) -> Result<Txn<'r>, Error> {
        self.r
            .lock(self.deadline.saturating_duration_since(Instant::now()))
    }

    fn leave(&self, held: Txn<'r>) -> Result<(), Error> {
        held.commit()
    }

    fn word(&self, held: &Txn<'r>) -> u32 {
        self.r.sleepers(self.key).fetch_add(1, Ordering::Relaxed);
        held.wait_word(self.key)
    }

    fn awake(&self) {
        let n = self.r.sleepers(self.key);
        // Never below zero (a count reset by a rebuild while this process slept).
        let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    fn sleep(&self, seen: u32) -> Result<bool, Error> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let off = Region::wait_word_off(self.key);
        self.r.futex_wait(off, seen, Some(left.min(RECHECK)))?;
        Ok(true)
    }
}

impl Region {
    /// Waits, at most `timeout`, until `check` (run in a section) returns `Some`; returns its
    /// value and the section, still open. Sleeps on `key`'s wait word between checks (and
    /// never longer than [`RECHECK`]), so a releaser must call [`Txn::wake`] with the same key
    /// in the section that makes the condition true. When `check` returns `None` its section is
    /// committed before sleeping; when it fails, rolled back.
    pub fn wait_until<T>(
        &self,
        key: u64,
        timeout: Duration,
        check: impl FnMut(&mut Txn<'_>) -> Result<Option<T>, Error>,
    ) -> Result<(Txn<'_>, T), Error> {
        let w = RegionWait {
            r: self,
            key,
            deadline: super::deadline(timeout),
        };
        wait_until(&w, check)
    }
}
