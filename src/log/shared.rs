//! The log's shared state in the region: the roots it owns, lock-free reads of them, the
//! failure flag and its reason, and the claims (group-commit leader, roller) that one process
//! at a time holds and a survivor takes over when its holder dies.
//!
//! Owns: roots 0 to 15 of the region (the table is in the module doc of `log`, "Shared
//! state"), the failure reason block, and the process-local halves of the claims. Invariants:
//! every root but the high-water mark is written only in sections, journaled (set in a builder
//! section at open); the high-water mark is written only under the mutex too, but never
//! journaled, so that no rollback can lower it below bytes an append wrote; a claim root names
//! a slot whose process is alive, or is stale and may be taken over — for this process's own
//! slot, "alive" is the process-local flag, which is changed only under the mutex, so a thread
//! that holds the mutex sees the root and the flag agree.

use super::{Log, LogError, Media};
use crate::config::SyncMode;
use crate::shm::{self, root, Region, Txn};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `LOGSHM01`: the log's shared state is set up in this region.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"LOGSHM01");

// The roots the log owns (see "Shared state" in the module doc of `log`).
pub(super) const R_MAGIC: usize = 0;
pub(super) const R_SEGMENT_SIZE: usize = 1;
pub(super) const R_SYNC: usize = 2;
pub(super) const R_TAIL_ID: usize = 3;
pub(super) const R_TAIL_BASE: usize = 4;
pub(super) const R_TAIL_SIZE: usize = 5;
pub(super) const R_TAIL_OFF: usize = 6;
pub(super) const R_WRITTEN: usize = 7;
pub(super) const R_DURABLE: usize = 8;
pub(super) const R_FIRST_ID: usize = 9;
pub(super) const R_FIRST_BASE: usize = 10;
pub(super) const R_LEADER: usize = 11;
pub(super) const R_ROLLER: usize = 12;
pub(super) const R_ENDED: usize = 13;
pub(super) const R_HIGH: usize = 14;
pub(super) const R_FAILED: usize = 15;
/// How many roots the log owns, from root 0.
pub const LOG_ROOTS: usize = 16;

/// `R_FAILED` when the log failed but its reason could not be stored.
const FAILED_NO_REASON: u64 = 1;
/// The longest failure reason kept in the region.
const MAX_REASON: usize = 1024;

/// The wait key of the log: woken whenever `durable`, the tail, a claim or the failed flag
/// changes.
pub(super) const WAIT_KEY: u64 = u64::from_le_bytes(*b"mmxa-log");

/// The longest a log operation waits for the region mutex before it fails (a stopped process
/// can hold it).
pub(super) const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one wait for a claim sleeps before it starts over (it re-checks the holder's
/// liveness every [`shm::RECHECK`] meanwhile, and waits as long as the holder lives, unless
/// the mutex itself cannot be taken for [`LOCK_TIMEOUT`]).
const WAIT_SLICE: Duration = Duration::from_secs(10);

/// Size of the process-private region a single-process log makes for itself: the header and
/// a little heap (the log allocates only its failure reason).
const LOCAL_REGION: u64 = shm::HEAP_OFF + (64 << 10);

/// Process-private regions of closed single-process logs, kept for the next one: making one
/// costs a megabyte of zeroed memory (the journal's), which tests that open thousands of logs
/// feel. Only regions nobody else holds, still in state building, with no failure reason
/// allocated, made by this process (not inherited through `fork`).
static LOCAL_POOL: Mutex<Vec<(u32, Arc<Region>)>> = Mutex::new(Vec::new());
const LOCAL_POOL_MAX: usize = 4;

/// A process-private region for a single-process log.
pub(super) fn local_region() -> Result<Arc<Region>, LogError> {
    let pid = std::process::id();
    let pooled = super::lock(&LOCAL_POOL).pop();
    if let Some((p, r)) = pooled {
        if p == pid {
            return Ok(r);
        }
    }
    let r = Region::anonymous_with(shm::Options {
        initial_size: LOCAL_REGION,
        max_size: LOCAL_REGION,
    })
    .map_err(region_err)?;
    Ok(Arc::new(r))
}

/// Keeps `region` for the next single-process log if nobody holds it but `region` itself and
/// `others` more (about to be dropped) and it is as good as new (the log's roots are all
/// rewritten at open).
pub(super) fn give_back(region: Arc<Region>, others: usize) {
    let failed = region
        .atomic_u64(root(R_FAILED))
        .map_or(true, |a| a.load(Ordering::Acquire) != 0);
    if Arc::strong_count(&region) == 1 + others
        && Arc::weak_count(&region) == 0
        && region.state() == shm::STATE_BUILDING
        && !failed
    {
        let mut pool = super::lock(&LOCAL_POOL);
        if pool.len() < LOCAL_POOL_MAX {
            pool.push((std::process::id(), region));
        }
    }
}

impl<M: Media> Drop for Log<M> {
    fn drop(&mut self) {
        if self.local && !self.failed_here.load(Ordering::Acquire) {
            // The field, dropped right after this, is the other holder.
            give_back(self.region.clone(), 1);
        }
    }
}

pub(super) fn region_err(e: shm::Error) -> LogError {
    LogError::Io("shared region".into(), io::Error::from(e))
}

pub(super) fn sync_code(s: SyncMode) -> u64 {
    match s {
        SyncMode::None => 0,
        SyncMode::Msync => 1,
        SyncMode::Fdatasync => 2,
    }
}

/// This process among the peers of a store: its slot, and how it tells whether the process
/// holding another slot is gone.
#[derive(Clone)]
pub struct Peer {
    /// This process's slot (see [`crate::shm::LockFile::claim_slot`]); unique among the
    /// processes attached to one region.
    pub slot: u32,
    /// Whether the process holding slot `s` is dead (`true` = dead: its claims may be taken
    /// over). Never asked about this process's own slot. E.g. [`crate::shm::LockFile::is_dead`].
    pub is_dead: Arc<dyn Fn(u32) -> bool + Send + Sync>,
}

impl Peer {
    /// A peer in slot `slot` with the liveness test `is_dead`.
    pub fn new(slot: u32, is_dead: Arc<dyn Fn(u32) -> bool + Send + Sync>) -> Peer {
        Peer { slot, is_dead }
    }

    /// The only process of its region: slot 0, and nobody else ever dies.
    pub fn alone() -> Peer {
        Peer::new(0, Arc::new(|_| false))
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("slot", &self.slot).finish()
    }
}

/// Clears the log's claims (group-commit leader, roller) still held in slot `slot` by a process
/// that died, in the section `t` that reaps the slot: the `reap` of
/// [`crate::shm::LockFile::claim_slot`], before the slot gets a new owner. That owner would
/// otherwise inherit them, and its peers would wait on it (it takes them over itself only when
/// it next syncs or rolls). A roll the dead process left half done is finished by the next
/// roller; a flush it left half done is done again by the next leader.
pub fn reap_claims(t: &mut Txn<'_>, slot: u32) -> Result<(), shm::Error> {
    if t.get_u64(root(R_MAGIC))? != MAGIC {
        return Ok(());
    }
    let held = slot as u64 + 1;
    for r in [R_LEADER, R_ROLLER] {
        if t.get_u64(root(r))? == held {
            t.set_u64(root(r), 0)?;
        }
    }
    t.wake(WAIT_KEY);
    Ok(())
}

/// A claim one process holds at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The group-commit leader (`R_LEADER`).
    Leader,
    /// The roller (`R_ROLLER`).
    Roller,
}

/// What waiting for a claim came to.
pub(super) enum Claimed<T> {
    /// This thread holds the claim (release it with [`Log::release`]).
    Held,
    /// The caller's condition came true first.
    Done(T),
}

impl<M: Media> Log<M> {
    /// Enters a section of the log's own (the caller holds none).
    pub(super) fn lock(&self) -> Result<Txn<'_>, LogError> {
        self.region.lock(LOCK_TIMEOUT).map_err(region_err)
    }

    /// A root read lock-free (acquire). The roots are in the region's header, always mapped:
    /// this fails only in a child of `fork`, where it reads as 0.
    pub(super) fn load(&self, r: usize) -> u64 {
        self.region
            .atomic_u64(root(r))
            .map(|a| a.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Raises the high-water mark to `lsn`, unjournaled, before bytes up to `lsn` are written
    /// above the tail (under the mutex).
    pub(super) fn raise_high(&self, lsn: u64) -> Result<(), LogError> {
        self.region
            .atomic_u64(root(R_HIGH))
            .map_err(region_err)?
            .fetch_max(lsn, Ordering::AcqRel);
        Ok(())
    }

    /// Sets the high-water mark to `lsn`, unjournaled (under the mutex, once everything above
    /// `lsn` is durably zero).
    pub(super) fn lower_high(&self, lsn: u64) -> Result<(), LogError> {
        self.region
            .atomic_u64(root(R_HIGH))
            .map_err(region_err)?
            .store(lsn, Ordering::Release);
        Ok(())
    }

    fn flag(&self, role: Role) -> &AtomicBool {
        match role {
            Role::Leader => &self.leading,
            Role::Roller => &self.rolling,
        }
    }

    fn claim_root(role: Role) -> u64 {
        root(match role {
            Role::Leader => R_LEADER,
            Role::Roller => R_ROLLER,
        })
    }

    /// Waits until `done` (run in a section) says the claim is not needed, or takes the claim
    /// `role`: free, held by a dead process, or stale (held in this process's name by no
    /// thread). A failed log ends the wait with [`LogError::Failed`].
    pub(super) fn claim<T>(
        &self,
        role: Role,
        mut done: impl FnMut(&Txn<'_>) -> Result<Option<T>, shm::Error>,
    ) -> Result<Claimed<T>, LogError> {
        let at = Self::claim_root(role);
        let flag = self.flag(role);
        // When the check last ran: a wait that cannot even take the mutex for that long fails.
        let checked = std::cell::Cell::new(std::time::Instant::now());
        loop {
            let waited = self.region.wait_until(WAIT_KEY, WAIT_SLICE, |t| {
                checked.set(std::time::Instant::now());
                if let Some(why) = self.failed_in(t)? {
                    return Ok(Some(Err(LogError::Failed(why))));
                }
                if let Some(v) = done(t)? {
                    return Ok(Some(Ok(Claimed::Done(v))));
                }
                let holder = t.get_u64(at)?;
                if holder != 0 {
                    let slot = (holder - 1) as u32;
                    let alive = if slot == self.peer.slot {
                        flag.load(Ordering::Acquire)
                    } else {
                        !(self.peer.is_dead)(slot)
                    };
                    if alive {
                        return Ok(None);
                    }
                }
                t.set_u64(at, self.peer.slot as u64 + 1)?;
                flag.store(true, Ordering::Release);
                Ok(Some(Ok(Claimed::Held)))
            });
            match waited {
                Ok((t, r)) => {
                    // The section may also carry the publication of a local failure.
                    if let Err(e) = t.commit() {
                        flag.store(false, Ordering::Release);
                        return Err(region_err(e));
                    }
                    return r;
                }
                Err(shm::Error::Timeout) if checked.get().elapsed() < LOCK_TIMEOUT => continue,
                Err(e) => return Err(region_err(e)),
            }
        }
    }

    /// Gives the claim `role` up in the section `t` (which the caller commits), waking the
    /// waiters.
    pub(super) fn release_in(&self, t: &mut Txn<'_>, role: Role) -> Result<(), shm::Error> {
        let at = Self::claim_root(role);
        if t.get_u64(at)? == self.peer.slot as u64 + 1 {
            t.set_u64(at, 0)?;
        }
        self.flag(role).store(false, Ordering::Release);
        t.wake(WAIT_KEY);
        Ok(())
    }

    /// Gives the claim `role` up in a section of its own (best effort: if that fails, the claim
    /// is stale and the next claimer of this process takes it over).
    pub(super) fn release(&self, role: Role) {
        match self.lock() {
            Ok(mut t) => {
                if self.release_in(&mut t, role).is_ok() {
                    let _ = t.commit();
                } else {
                    self.flag(role).store(false, Ordering::Release);
                }
            }
            Err(_) => self.flag(role).store(false, Ordering::Release),
        }
    }

    /// Why the log failed, if it did, as the section `t` sees it; publishes a failure only
    /// this process knows of (its section was rolled back) in `t`.
    pub(super) fn failed_in(&self, t: &mut Txn<'_>) -> Result<Option<String>, shm::Error> {
        let off = t.get_u64(root(R_FAILED))?;
        if off == 0 {
            if !self.failed_here.load(Ordering::Acquire) {
                return Ok(None);
            }
            let why = super::lock(&self.fail_reason).clone();
            self.publish_failure(t, &why)?;
            return Ok(Some(why));
        }
        if off == FAILED_NO_REASON {
            return Ok(Some(no_reason()));
        }
        let len = (t.get_u64(off)? as usize).min(MAX_REASON);
        let mut b = vec![0u8; len];
        t.read_bytes(off + 8, &mut b)?;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    }

    /// Fails the log for every process, in the section `t` (and at once for this one, whether
    /// or not `t` commits).
    pub(super) fn fail_in(&self, t: &mut Txn<'_>, why: &str) -> String {
        let why = self.fail_here(why);
        if t.get_u64(root(R_FAILED)).unwrap_or(1) == 0 {
            // Left to the next section of this process if it fails here (see `failed_in`).
            let _ = self.publish_failure(t, &why);
        }
        why
    }

    /// Fails the log for every process, in a section of its own.
    pub(super) fn fail(&self, why: &str) -> String {
        match self.lock() {
            Ok(mut t) => {
                let why = self.fail_in(&mut t, why);
                let _ = t.commit();
                why
            }
            Err(_) => self.fail_here(why),
        }
    }

    /// Records the failure in this process; returns the reason that stands (the first).
    fn fail_here(&self, why: &str) -> String {
        let mut r = super::lock(&self.fail_reason);
        if r.is_empty() {
            *r = why.to_string();
        }
        self.failed_here.store(true, Ordering::Release);
        r.clone()
    }

    fn publish_failure(&self, t: &mut Txn<'_>, why: &str) -> Result<(), shm::Error> {
        let mut b = why.as_bytes();
        if b.len() > MAX_REASON {
            b = &b[..MAX_REASON];
        }
        let stored = t.alloc(8 + b.len() as u64).and_then(|off| {
            t.init_u64(off, b.len() as u64)?;
            t.init_bytes(off + 8, b)?;
            Ok(off)
        });
        t.set_u64(root(R_FAILED), stored.unwrap_or(FAILED_NO_REASON))?;
        t.wake(WAIT_KEY);
        Ok(())
    }

    /// Why the log failed, read lock-free: the shared reason, or this process's own.
    pub(super) fn failure(&self) -> Option<String> {
        let off = match self.region.atomic_u64(root(R_FAILED)) {
            Ok(a) => a.load(Ordering::Acquire),
            Err(e) => return Some(format!("shared region: {e}")),
        };
        match off {
            0 if self.failed_here.load(Ordering::Acquire) => {
                Some(super::lock(&self.fail_reason).clone())
            }
            0 => None,
            FAILED_NO_REASON => Some(no_reason()),
            off => Some(self.read_reason(off).unwrap_or_else(no_reason)),
        }
    }

    /// The reason block at `off`, read word by word (it is written before the root that names
    /// it, and never changed or freed after).
    fn read_reason(&self, off: u64) -> Option<String> {
        let word = |at: u64| {
            self.region
                .atomic_u64(at)
                .ok()
                .map(|a| a.load(Ordering::Acquire))
        };
        let len = (word(off)? as usize).min(MAX_REASON);
        let mut b = Vec::with_capacity(len + 8);
        let mut at = off + 8;
        while b.len() < len {
            b.extend_from_slice(&word(at)?.to_le_bytes());
            at += 8;
        }
        b.truncate(len);
        Some(String::from_utf8_lossy(&b).into_owned())
    }
}

fn no_reason() -> String {
    "the log failed in another process (its reason could not be stored)".into()
}
