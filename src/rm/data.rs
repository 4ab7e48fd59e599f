//! Reads and writes of the data API, inside a branch or on their own, and savepoints.
//!
//! Owns: what a data call sees and locks. Inside a branch a write locks its key exclusively
//! (waiting up to `lock_timeout_ms`), is appended to the log under the branch's tag and becomes
//! the key's pending write in the same section; a read locks the key shared (serializable) or
//! not at all (read committed), exclusively for update, and sees the branch's own writes. A
//! write outside any branch is a one-operation transaction with a short-lived record of its
//! own, durable before it returns. A failed lock wait makes the branch rollback-only.

use super::branch;
use super::keys::{self, Pending, ValueLoc};
use super::layout::*;
use super::locks::{self, Mode, Try};
use super::{shm_error, Rm, Sect, Toc};
use crate::crash::crash_point;
use crate::error::{Error, Rb, Result};
use crate::fxhash::FxHashMap;
use crate::log::{Media, Record};
use crate::shm::{self, Off, Txn};
use crate::status::{MMXA_MAX_KEY, MMXA_MAX_VALUE};
use crate::xid::Xid;
use std::time::{Duration, Instant};

/// Why a lock was not granted.
enum LockFail {
    Timeout,
    Deadlock,
    Aborted,
}

/// What a thread works in: an XA branch (by XID) or its local transaction (by tag).
#[derive(Clone, Copy)]
pub(super) enum Target {
    Xa(Xid),
    Txn,
}

/// The branch a thread works in: its target and tag (a record found again in each section must
/// still have this tag, or the branch ended meanwhile).
#[derive(Clone, Copy)]
pub(super) struct Working {
    pub target: Target,
    pub tag: u64,
}

impl Working {
    /// The record, if it still exists (whatever its state).
    pub fn find(&self, t: &Txn<'_>) -> std::result::Result<Option<Off>, shm::Error> {
        match &self.target {
            Target::Xa(x) => {
                Ok(branch::find(t, x)?
                    .filter(|&b| branch::tag(t, b).is_ok_and(|tag| tag == self.tag)))
            }
            Target::Txn => branch::find_txn(t, self.tag),
        }
    }
}

/// Notes a write of the branch `.1` when dropped, however the write ended.
struct WrittenOnDrop<'a, M: Media>(&'a Rm<M>, u64);

impl<M: Media> Drop for WrittenOnDrop<'_, M> {
    fn drop(&mut self) {
        self.0.note_write(self.1);
    }
}

impl<M: Media> Rm<M> {
    /// The branch or local transaction `toc` works in, if any (refused if rollback-only).
    pub(super) fn current(&self, toc: Toc) -> Result<Option<Working>> {
        let (xid, local) = match self.tocs()?.get(&toc) {
            Some(t) => (t.active, t.local),
            None => return Ok(None),
        };
        if let Some(tag) = local {
            let w = Working {
                target: Target::Txn,
                tag,
            };
            return self.shared(|t| {
                let b = Self::record_of(t, &w)?;
                Self::usable(t, b)?;
                Ok(Some(w))
            });
        }
        let Some(xid) = xid else {
            return Ok(None);
        };
        self.shared(|t| {
            let b = branch::find(t, &xid)?
                .ok_or_else(|| Error::Internal("associated branch is missing".into()))?;
            Self::usable(t, b)?;
            Ok(Some(Working {
                target: Target::Xa(xid),
                tag: branch::tag(t, b)?,
            }))
        })
    }

    /// Data calls are refused once the branch is rollback-only.
    pub(super) fn usable(t: &Txn<'_>, b: Off) -> Sect<()> {
        match branch::doomed(t, b)? {
            Some((rb, why)) => {
                Err(Error::RolledBack(rb, format!("the branch is rollback-only ({why})")).into())
            }
            None => Ok(()),
        }
    }

    /// The record of branch `w`, if it still exists and is not undone.
    pub(super) fn record_of(t: &Txn<'_>, w: &Working) -> Sect<Off> {
        match w.find(t)? {
            Some(b) if t.get_u8(b + B_UNDONE)? == 0 => Ok(b),
            _ => Err(Error::RolledBack(Rb::Other, "the branch was rolled back".into()).into()),
        }
    }

    /// Checks a key and value against the size limits.
    pub(crate) fn check_kv(key: &[u8], value: Option<&[u8]>) -> Result<()> {
        if key.is_empty() {
            return Err(Error::Invalid("key is empty".into()));
        }
        if key.len() > MMXA_MAX_KEY {
            return Err(Error::TooBig(format!(
                "key of {} bytes exceeds {MMXA_MAX_KEY}",
                key.len()
            )));
        }
        if let Some(v) = value {
            if v.len() > MMXA_MAX_VALUE {
                return Err(Error::TooBig(format!(
                    "value of {} bytes exceeds {MMXA_MAX_VALUE}",
                    v.len()
                )));
            }
        }
        Ok(())
    }

    /// Locks `key` in `mode` for the owner `find` names (found again in every section),
    /// waiting up to the lock timeout. `aborted` says, in a section, whether the owner's branch
    /// was rolled back meanwhile.
    fn lock_key(
        &self,
        key: &[u8],
        mode: Mode,
        find: &dyn Fn(&Txn<'_>) -> Sect<Off>,
    ) -> Result<std::result::Result<(), LockFail>> {
        let hash = hash_bytes(key);
        let slot = self.slot;
        let first = self.shared(|t| {
            let owner = find(t)?;
            let k = keys::find_or_insert(t, key)?;
            let queue_it = !self.cfg.lock_timeout.is_zero();
            let r = locks::try_lock(t, k, owner, mode, queue_it, slot)?;
            crash_point("rm.lock_in_section");
            if !matches!(r, Try::Granted | Try::Queued(_)) {
                keys::maybe_remove(t, k)?;
            }
            Ok(r)
        })?;
        let w = match first {
            Try::Granted => return Ok(Ok(())),
            Try::Deadlock => return Ok(Err(LockFail::Deadlock)),
            Try::Busy => return Ok(Err(LockFail::Timeout)),
            Try::Queued(w) => w,
        };
        let check = |t: &mut Txn<'_>| {
            if self.interrupted.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(Some(Err(LockFail::Aborted)));
            }
            let owner = match find(t) {
                Ok(o) => o,
                Err(_) => return Ok(Some(Err(LockFail::Aborted))),
            };
            if !locks::still_queued(t, owner, w)? {
                // A reaper took it out: the owner's process is gone, or the branch ended.
                return Ok(Some(Err(LockFail::Aborted)));
            }
            if locks::try_grant(t, w)? {
                return Ok(Some(Ok(())));
            }
            Ok(None)
        };
        let waited = self.wait_reaping(hash, check);
        match waited {
            Ok((t, r)) => {
                t.commit().map_err(shm_error)?;
                if r.is_err() {
                    self.withdraw(w, find)?;
                }
                Ok(r)
            }
            Err(shm::Error::Timeout) => {
                self.withdraw(w, find)?;
                Ok(Err(LockFail::Timeout))
            }
            Err(e) => {
                let _ = self.withdraw(w, find);
                Err(shm_error(e))
            }
        }
    }

    /// [`crate::shm::Region::wait_until`] for a lock, up to the lock timeout, in slices of
    /// [`shm::RECHECK`]: between them (outside any section) this process looks for dead peers,
    /// whose locks only a reaper releases, so a waiter gets a dead holder's lock within about
    /// a slice rather than at its timeout.
    fn wait_reaping<T>(
        &self,
        hash: u64,
        mut check: impl FnMut(&mut Txn<'_>) -> std::result::Result<Option<T>, shm::Error>,
    ) -> std::result::Result<(Txn<'_>, T), shm::Error> {
        let deadline = Instant::now().checked_add(self.cfg.lock_timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let slice = left.min(shm::RECHECK);
            match self.region.wait_until(hash, slice, &mut check) {
                Err(shm::Error::Timeout) if slice < left => self.reap_if_due(),
                r => return r,
            }
        }
    }

    /// Takes a request that will not be granted out of its queue (if still there).
    fn withdraw(&self, w: Off, find: &dyn Fn(&Txn<'_>) -> Sect<Off>) -> Result<()> {
        self.shared(|t| {
            let owner = match find(t) {
                Ok(o) => o,
                Err(_) => {
                    // The branch is gone, and its waits with it.
                    return Ok(());
                }
            };
            if locks::still_queued(t, owner, w)? {
                let k = t.get_u64(w + W_KEY)?;
                locks::unqueue(t, w)?;
                keys::maybe_remove(t, k)?;
            }
            Ok(())
        })
    }

    /// Locks `key` for the branch `w`; a failed wait leaves the branch rollback-only.
    pub(super) fn lock_in_branch(&self, w: &Working, key: &[u8], mode: Mode) -> Result<()> {
        let find = |t: &Txn<'_>| -> Sect<Off> {
            let b = Self::record_of(t, w)?;
            if t.get_u8(b + B_UNDONE)? != 0 {
                return Err(Error::RolledBack(Rb::Other, "rolled back".into()).into());
            }
            Ok(b)
        };
        let Err(fail) = self.lock_key(key, mode, &find)? else {
            return Ok(());
        };
        let (rb, why) = match fail {
            LockFail::Timeout => (Rb::Timeout, "lock wait timed out"),
            LockFail::Deadlock => (Rb::Deadlock, "deadlock detected"),
            LockFail::Aborted => (Rb::Other, "branch rolled back meanwhile"),
        };
        self.shared(|t| {
            if let Some(b) = w.find(t)? {
                branch::mark_rollback_only(t, b, rb, why)?;
            }
            Ok(())
        })?;
        let msg = format!("{why}; the branch is rollback-only");
        Err(match fail {
            LockFail::Timeout => Error::LockTimeout(msg),
            LockFail::Deadlock => Error::Deadlock(msg),
            LockFail::Aborted => Error::RolledBack(rb, msg),
        })
    }

    /// Writes (`Some(value)`) or deletes (`None`) `key`. Returns whether the key existed before
    /// (as seen by the writer).
    pub fn put(&self, toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        Self::check_kv(key, value)?;
        match self.current(toc)? {
            Some(w) => self.branch_write(&w, key, value),
            None => self.local_write(key, value),
        }
    }

    fn record<'a>(tag: u64, key: &'a [u8], value: Option<&'a [u8]>) -> Record<'a> {
        match value {
            Some(value) => Record::Put { tag, key, value },
            None => Record::Delete { tag, key },
        }
    }

    /// Makes a write of the branch `b` to the key entry `k` its pending write, journaling the
    /// previous one for savepoints.
    fn set_branch_write(
        t: &mut Txn<'_>,
        b: Off,
        k: Off,
        value: Option<ValueLoc>,
        record: u64,
    ) -> Sect<()> {
        let prev = keys::pending(t, k)?.filter(|p| p.owner == b);
        if !savepoints(b).is_empty(t)? {
            let j = journal(b);
            j.push(t, k)?;
            match prev {
                Some(p) => {
                    j.push(t, p.value.map_or(0, |v| v.lsn))?;
                    j.push(
                        t,
                        1 | (p.value.map_or(0, |v| v.len as u64) << 8)
                            | ((p.value.is_some() as u64) << 1),
                    )?;
                }
                None => {
                    j.push(t, 0)?;
                    j.push(t, 0)?;
                }
            }
        }
        if prev.is_none() {
            let n = t.get_u64(b + B_WRITES)?;
            t.set_u64(b + B_WRITES, n + 1)?;
        }
        keys::set_pending(
            t,
            k,
            Some(Pending {
                owner: b,
                value,
                record,
            }),
        )?;
        Ok(())
    }

    fn branch_write(&self, w: &Working, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        self.lock_in_branch(w, key, Mode::Exclusive)?;
        // The branch's cursors read again after this write (see `scan.rs`).
        let _written = WrittenOnDrop(self, w.tag);
        let r = self.appending(|t| {
            let b = Self::record_of(t, w)?;
            let k = keys::find(t, key)?
                .ok_or_else(|| Error::Internal("a locked key has no entry".into()))?;
            let existed = keys::visible(t, k, Some(b))?.is_some();
            let a = self.log.append(t, &Self::record(w.tag, key, value))?;
            Self::set_branch_write(t, b, k, ValueLoc::of_record(a.lsn, key, value), a.lsn)?;
            crash_point("rm.write_in_section");
            Ok(existed)
        });
        if matches!(r, Err(Error::NoSpace(_))) {
            self.after_no_space();
        }
        r
    }

    /// Sets a savepoint in the branch `toc` is associated with; returns its id.
    pub fn savepoint(&self, toc: Toc) -> Result<u64> {
        let w = self.savepoint_branch(toc, "mmxa_savepoint")?;
        self.shared(|t| {
            let b = Self::record_of(t, &w)?;
            Self::usable(t, b)?;
            let id = t.get_u64(b + B_NEXT_SP)?;
            t.set_u64(b + B_NEXT_SP, id + 1)?;
            let len = journal(b).len(t)?;
            savepoints(b).push(t, id)?;
            savepoints(b).push(t, len)?;
            Ok(id)
        })
    }

    fn savepoint_branch(&self, toc: Toc, what: &str) -> Result<Working> {
        self.current(toc)?.ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: the thread is not associated with a branch and has no local \
                 transaction open"
            ))
        })
    }

    /// Undoes every write of the branch since savepoint `id`, which stays set (later ones are
    /// released). Keys locked since then stay locked until the branch ends. Refused while
    /// another thread is associated with the branch, whose writes would race with the undo.
    ///
    /// The undo is logged as ordinary writes of the branch, so recovery needs nothing new: a key
    /// written before the savepoint gets that value again; a key first written after it gets
    /// its committed value (or a delete) — a write that changes nothing, because the branch
    /// holds the key's lock until it ends — and stops being one of its writes.
    pub fn rollback_to_savepoint(&self, toc: Toc, id: u64) -> Result<()> {
        let w = self.savepoint_branch(toc, "mmxa_rollback_to_savepoint")?;
        self.undo_to(&w, false, &|sps| {
            sps.chunks(2)
                .position(|p| p[0] == id && id & NESTED == 0)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "no savepoint {id} in this branch (released, or never set)"
                    ))
                })
        })
    }

    /// Undoes the writes of branch `w` since the savepoint `pick` finds (by its index among
    /// the set ones); with `release` that savepoint goes too, else it stays set.
    ///
    /// The keys to undo are found again from the branch's savepoint journal in each section
    /// and undone in order, as many per section as its budget allows ([`branch::spent`]); the
    /// journal and the savepoints are cut back in the last one. A failure once part of the undo
    /// is done (or a change of the branch by another thread meanwhile) leaves the branch
    /// rollback-only.
    pub(super) fn undo_to(
        &self,
        w: &Working,
        release: bool,
        pick: &dyn Fn(&[u64]) -> Result<usize>,
    ) -> Result<()> {
        let w = *w;
        // The branch's cursors read again after this undo (see `scan.rs`).
        let _written = WrittenOnDrop(self, w.tag);
        // Keys undone so far, and the journal and savepoint lengths they were found with.
        let mut done = 0usize;
        let mut seen: Option<(u64, u64)> = None;
        let r = loop {
            let step = self.appending(|t| {
                let b = Self::record_of(t, &w)?;
                Self::usable(t, b)?;
                if branch::active_count(t, b)? > 1 {
                    return Err(Error::Invalid(
                        "other threads are associated with the branch (joined); end their \
                         associations first"
                            .into(),
                    )
                    .into());
                }
                let sps = savepoints(b).items(t)?;
                let entries = journal(b).items(t)?;
                let lens = (entries.len() as u64, sps.len() as u64);
                if seen.is_some_and(|s| s != lens) {
                    return Err(Error::Internal(
                        "the branch changed during a rollback to a savepoint".into(),
                    )
                    .into());
                }
                let pos = pick(&sps)?;
                let mark = (sps[2 * pos + 1] as usize).min(entries.len());
                let target = undo_targets(&entries[mark..]);
                let mut i = done;
                let mut value = Vec::new();
                let mut logged = 0u64;
                while i < target.len() && !branch::spent(t) {
                    let (k, prev) = target[i];
                    // What the restoring record will take in the log, roughly: a section stops
                    // before its records would outgrow a fresh segment.
                    let len = match prev {
                        Some(loc) => loc,
                        None => keys::committed(t, k)?,
                    }
                    .map_or(0, |l| l.len as u64)
                        + key_len(t, k)? as u64;
                    if logged > 0 && logged + len > self.section_log_budget() {
                        break;
                    }
                    self.undo_one(t, &w, b, k, prev, &mut value)?;
                    logged += len;
                    i += 1;
                }
                if i == target.len() {
                    let keep = if release { 2 * pos } else { 2 * pos + 2 };
                    savepoints(b).truncate(t, keep as u64)?;
                    journal(b).truncate(t, mark as u64)?;
                }
                Ok((i, target.len(), lens))
            });
            match step {
                Ok((i, n, lens)) if i < n => {
                    done = i;
                    seen = Some(lens);
                }
                Ok(_) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = &r {
            // Part of the undo is done, or the log failed it: the branch is not what the caller
            // asked for any more.
            if done > 0 || matches!(e, Error::NoSpace(_) | Error::Io(_)) {
                let why = format!("a rollback to a savepoint failed: {e}");
                let _ = self.shared(|t| {
                    if let Ok(b) = Self::record_of(t, &w) {
                        branch::mark_rollback_only(t, b, Rb::Other, &why)?;
                    }
                    Ok(())
                });
            }
        }
        r
    }

    /// Undoes the branch's writes to `k` since a savepoint: `prev` is what the key held for
    /// the branch then (`Some(loc)`: its own earlier write; None: none, so committed data). The
    /// undo is logged as a write of the branch.
    fn undo_one(
        &self,
        t: &mut Txn<'_>,
        w: &Working,
        b: Off,
        k: Off,
        prev: Option<Option<ValueLoc>>,
        value: &mut Vec<u8>,
    ) -> Sect<()> {
        let key = key_of(t, k)?;
        // What the key must read as: the branch's earlier write, or committed data.
        let loc = match prev {
            Some(loc) => loc,
            None => keys::committed(t, k)?,
        };
        value.clear();
        if let Some(l) = loc {
            self.log.read_into(l.lsn, l.len as usize, value)?;
        }
        let v = loc.map(|_| value.as_slice());
        let a = self.log.append(t, &Self::record(w.tag, &key, v))?;
        match prev {
            Some(_) => keys::set_pending(
                t,
                k,
                Some(Pending {
                    owner: b,
                    value: ValueLoc::of_record(a.lsn, &key, v),
                    record: a.lsn,
                }),
            )?,
            None => {
                keys::set_pending(t, k, None)?;
                let n = t.get_u64(b + B_WRITES)?;
                t.set_u64(b + B_WRITES, n.saturating_sub(1))?;
            }
        }
        Ok(())
    }

    fn local_write(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        let slot = self.slot;
        let (b, tag) = self.shared(|t| {
            let b = branch::create_local(t, slot)?;
            Ok((b, branch::tag(t, b)?))
        })?;
        let find = |t: &Txn<'_>| -> Sect<Off> {
            match BRANCHES.find(t, hash_tag(tag), |x| Ok(x == b))? {
                Some(b) => Ok(b),
                None => Err(Error::Internal("the write's record is gone".into()).into()),
            }
        };
        let result = match self.lock_key(key, Mode::Exclusive, &find) {
            Err(e) => Err(e),
            Ok(Err(LockFail::Deadlock)) => Err(Error::Deadlock("deadlock detected".into())),
            Ok(Err(_)) => Err(Error::LockTimeout("lock wait timed out".into())),
            Ok(Ok(())) => self.local_commit(b, tag, key, value, &find),
        };
        // Whatever happened, the record and its lock go (the commit already did it), unless a
        // durable write waits for its finish (`finish_logged`).
        let _ = self.shared(|t| {
            if let Ok(b) = find(t) {
                if branch::busy(t, b)? == Busy::None {
                    self.roll_back(t, b, tag)?;
                }
            }
            Ok(())
        });
        match &result {
            Err(Error::NoSpace(_)) => self.after_no_space(),
            Ok(_) => self.maybe_compact(),
            _ => {}
        }
        result
    }

    /// Logs a one-operation write as committed by itself, syncs it, then makes it committed.
    fn local_commit(
        &self,
        b: Off,
        tag: u64,
        key: &[u8],
        value: Option<&[u8]>,
        find: &dyn Fn(&Txn<'_>) -> Sect<Off>,
    ) -> Result<bool> {
        let first = self.appending(|t| {
            let b = find(t)?;
            let k = keys::find(t, key)?
                .ok_or_else(|| Error::Internal("a locked key has no entry".into()))?;
            let existed = keys::committed(t, k)?.is_some();
            if value.is_none() && !existed {
                return Ok((existed, None));
            }
            let a = self.log.append(t, &Self::record(0, key, value))?;
            Self::set_branch_write(t, b, k, ValueLoc::of_record(a.lsn, key, value), a.lsn)?;
            t.set_u8(b + B_BUSY, Busy::Local as u8)?;
            t.set_u64(b + B_BUSY_SLOT, self.busy_owner())?;
            t.set_u64(b + B_BUSY_LSN, a.end)?;
            Ok((existed, Some(a)))
        })?;
        let (existed, Some(a)) = first else {
            return Ok(false);
        };
        self.log.sync_to(a.end)?;
        self.finish_logged(b, tag, |t| {
            let b = find(t)?;
            Ok(super::reap::complete(t, b)?)
        })?;
        Ok(existed)
    }

    /// Reads `key`: a thread associated with a branch sees the branch's own writes, everyone
    /// else committed data. Inside a branch under `isolation=serializable` the read takes a
    /// shared lock on the key (whether it exists or not), held until the branch ends or
    /// prepares; under `read_committed` it takes none.
    pub fn get(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(toc, key, false)
    }

    /// [`Rm::get`] that locks the key exclusively inside a branch, in any isolation level (as
    /// `SELECT … FOR UPDATE`), so a read-modify-write takes the right lock at once instead of
    /// upgrading a shared one. Outside a branch it is a plain read of committed data.
    pub fn get_for_update(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(toc, key, true)
    }

    fn read(&self, toc: Toc, key: &[u8], for_update: bool) -> Result<Option<Vec<u8>>> {
        Self::check_kv(key, None)?;
        let branch = self.current(toc)?;
        if let Some(w) = &branch {
            let mode = match (for_update, self.serializable()) {
                (true, _) => Some(Mode::Exclusive),
                (false, true) => Some(Mode::Shared),
                (false, false) => None,
            };
            if let Some(mode) = mode {
                self.lock_in_branch(w, key, mode)?;
            }
        }
        // The value's bytes are read outside the section: a reclaim may retire its segment
        // meanwhile (the value then lives on, copied), and `value_at` looks again.
        let loc = self.shared(|t| Self::visible_now(t, key, branch.as_ref()))?;
        match loc {
            Some(l) => self.value_at(key, l, branch.as_ref()),
            None => Ok(None),
        }
    }

    /// Number of committed keys.
    pub fn len(&self) -> usize {
        self.shared(|t| Ok(t.get_u64(R_LIVE_KEYS)? as usize))
            .unwrap_or(0)
    }

    /// Whether no key is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state each key written since a savepoint had then, from the savepoint journal's entries
/// after it (3 words each: key entry, value LSN, flags): its earliest entry's, in the order the
/// keys were first written since (the same order every time it is computed).
fn undo_targets(entries: &[u64]) -> Vec<(Off, Option<Option<ValueLoc>>)> {
    let mut target: Vec<(Off, Option<Option<ValueLoc>>)> = Vec::new();
    let mut at: FxHashMap<Off, usize> = FxHashMap::default();
    for e in entries.chunks_exact(3) {
        let (k, lsn, flags) = (e[0], e[1], e[2]);
        if at.contains_key(&k) {
            continue;
        }
        let prev = (flags & 1 != 0).then(|| {
            (flags & 2 != 0).then_some(ValueLoc {
                lsn,
                len: (flags >> 8) as u32,
            })
        });
        at.insert(k, target.len());
        target.push((k, prev));
    }
    target
}
