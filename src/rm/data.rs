//! Reads and writes of the data API, inside a branch or on their own, and savepoints.
//!
//! Owns: what a data call sees and locks. A write inside a branch locks its key exclusively
//! (waiting up to `lock_timeout_ms`), is appended to the log under the branch's tag, then enters
//! the branch's write set; a write outside any branch is a one-operation transaction, durable
//! before it returns. A read inside a branch sees the branch's own writes, anyone else committed
//! data. A failed lock wait makes the branch rollback-only.

use super::branch::{Before, Branch, State};
use super::index::ValueLoc;
use super::{Rm, Toc};
use crate::config::Isolation;
use crate::error::{Error, Rb, Result};
use crate::lock::{LockError, Mode, Owner};
use crate::log::{LogError, Media, Record};
use crate::status::{MMXA_MAX_KEY, MMXA_MAX_VALUE};
use crate::xid::Xid;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

impl<M: Media> Rm<M> {
    /// Data calls are refused once the branch is rollback-only.
    fn usable(b: &Branch) -> Result<()> {
        match b.doomed() {
            Some((rb, why)) => Err(Error::RolledBack(
                rb,
                format!("the branch is rollback-only ({why})"),
            )),
            None => Ok(()),
        }
    }

    /// The branch `toc` is actively associated with: its XID, tag and abort flag.
    fn current(&self, toc: Toc) -> Result<Option<(Xid, u64, Arc<AtomicBool>)>> {
        let st = self.state()?;
        let Some(xid) = st.tocs.get(&toc).and_then(|t| t.active) else {
            return Ok(None);
        };
        let b = st
            .branches
            .get(&xid)
            .ok_or_else(|| Error::Internal("associated branch is missing".into()))?;
        Self::usable(b)?;
        Ok(Some((xid, b.tag, b.abort.clone())))
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

    fn lock_key(
        &self,
        owner: Owner,
        key: &[u8],
        mode: Mode,
        abort: &AtomicBool,
    ) -> std::result::Result<(), LockError> {
        self.locks
            .acquire(owner, key, mode, self.cfg.lock_timeout, &|| {
                abort.load(Ordering::Acquire) || self.interrupted.load(Ordering::Acquire)
            })
    }

    /// Locks `key` for the branch `xid` (tag `tag`); a failed wait leaves the branch
    /// rollback-only.
    fn lock_in_branch(
        &self,
        xid: &Xid,
        tag: u64,
        abort: &AtomicBool,
        key: &[u8],
        mode: Mode,
    ) -> Result<()> {
        let Err(e) = self.lock_key(tag, key, mode, abort) else {
            return Ok(());
        };
        let (rb, why) = match e {
            LockError::Timeout => (Rb::Timeout, "lock wait timed out"),
            LockError::Deadlock => (Rb::Deadlock, "deadlock detected"),
            LockError::Aborted => (Rb::Other, "branch rolled back meanwhile"),
        };
        let mut st = self.state()?;
        if let Some(b) = st.branches.get_mut(xid).filter(|b| b.tag == tag) {
            b.rb.get_or_insert((rb, why.into()));
        }
        let msg = format!("{why}; the branch is rollback-only");
        Err(match e {
            LockError::Timeout => Error::LockTimeout(msg),
            LockError::Deadlock => Error::Deadlock(msg),
            LockError::Aborted => Error::RolledBack(rb, msg),
        })
    }

    /// Writes (`Some(value)`) or deletes (`None`) `key`. Returns whether the key existed before
    /// (as seen by the writer).
    pub fn put(&self, toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        Self::check_kv(key, value)?;
        match self.current(toc)? {
            Some((xid, tag, abort)) => self.branch_write(&xid, tag, &abort, key, value),
            None => self.local_write(key, value),
        }
    }

    fn record<'a>(tag: u64, key: &'a [u8], value: Option<&'a [u8]>) -> Record<'a> {
        match value {
            Some(value) => Record::Put { tag, key, value },
            None => Record::Delete { tag, key },
        }
    }

    fn branch_write(
        &self,
        xid: &Xid,
        tag: u64,
        abort: &AtomicBool,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<bool> {
        self.lock_in_branch(xid, tag, abort, key, Mode::Exclusive)?;
        let _q = self.shared();
        let appended = match self.log.append_alone(&Self::record(tag, key, value)) {
            Ok(a) => a,
            Err(e) => {
                drop(_q);
                if matches!(e, LogError::NoSpace(_)) {
                    self.after_no_space();
                }
                return Err(e.into());
            }
        };
        let mut st = self.state()?;
        let Some(b) = st
            .branches
            .get_mut(xid)
            .filter(|b| b.tag == tag && !b.undone)
        else {
            // Rolled back while we wrote: the lock we took must not outlive the branch.
            drop(st);
            self.locks.release_all(tag);
            return Err(Error::RolledBack(
                Rb::Other,
                "the branch was rolled back".into(),
            ));
        };
        let existed = match b.writes.get(key) {
            Some((_, v)) => v.is_some(),
            None => self.index_get(key).is_some(),
        };
        let entry = (appended.lsn, ValueLoc::of_record(appended.lsn, key, value));
        if !b.savepoints.is_empty() {
            b.journal
                .push((key.to_vec(), b.writes.get(key).map(|e| e.1)));
        }
        match b.writes.get_mut(key) {
            // Joined threads may append out of order with this insert: the later record wins,
            // as it will at recovery.
            Some(cur) if cur.0 > appended.lsn => {}
            Some(cur) => *cur = entry,
            None => {
                b.writes.insert(key.to_vec(), entry);
            }
        }
        Ok(existed)
    }

    /// The branch `toc` is actively associated with, for a savepoint call.
    fn savepoint_branch<'a>(
        st: &'a mut State,
        toc: Toc,
        what: &str,
    ) -> Result<(Xid, &'a mut Branch)> {
        let xid = st.tocs.get(&toc).and_then(|t| t.active).ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: the thread is not associated with a branch"
            ))
        })?;
        let b = st
            .branches
            .get_mut(&xid)
            .ok_or_else(|| Error::Internal("associated branch is missing".into()))?;
        Self::usable(b)?;
        Ok((xid, b))
    }

    /// Sets a savepoint in the branch `toc` is associated with; returns its id.
    pub fn savepoint(&self, toc: Toc) -> Result<u64> {
        let mut st = self.state()?;
        let (_, b) = Self::savepoint_branch(&mut st, toc, "mmxa_savepoint")?;
        let id = b.next_savepoint;
        b.next_savepoint += 1;
        b.savepoints.push((id, b.journal.len()));
        Ok(id)
    }

    /// Undoes every write of the branch since savepoint `id`, which stays set (later ones are
    /// released). Keys locked since then stay locked until the branch ends. Refused while
    /// another thread is associated with the branch, whose writes would race with the undo.
    ///
    /// The undo is logged as ordinary writes of the branch, so recovery needs nothing new: a key
    /// written before the savepoint gets that value again; a key first written after it gets
    /// its committed value (or a delete) — a write that changes nothing, because the branch
    /// holds the key's lock until it ends — and leaves the branch's write set.
    pub fn rollback_to_savepoint(&self, toc: Toc, id: u64) -> Result<()> {
        // Appends and their effect in memory, as one step for the compactor.
        let _q = self.shared();
        let mut st = self.state()?;
        let (xid, b) = Self::savepoint_branch(&mut st, toc, "mmxa_rollback_to_savepoint")?;
        let Some(pos) = b.savepoints.iter().position(|&(s, _)| s == id) else {
            return Err(Error::Invalid(format!(
                "no savepoint {id} in this branch (released, or never set)"
            )));
        };
        if b.active.len() > 1 {
            return Err(Error::Invalid(
                "other threads are associated with the branch (joined); end their \
                 associations first"
                    .into(),
            ));
        }
        let mark = b.savepoints[pos].1;
        b.savepoints.truncate(pos + 1);
        // The state each key had at the savepoint: its earliest journal entry after the mark.
        let mut target: BTreeMap<Vec<u8>, Before> = BTreeMap::new();
        for (key, prev) in b.journal.drain(mark..).rev() {
            target.insert(key, prev);
        }
        let tag = b.tag;
        let mut value = Vec::new();
        for (key, prev) in target {
            // What the key must read as: the branch's earlier write, or committed data.
            let loc = match prev {
                Some(loc) => loc,
                None => self.index_get(&key),
            };
            let restated = loc
                .map(|l| {
                    value.clear();
                    self.log.read_into(l.lsn, l.len as usize, &mut value)
                })
                .transpose()
                .and_then(|_| {
                    let v = loc.map(|_| value.as_slice());
                    self.log.append_alone(&Self::record(tag, &key, v))
                });
            let b = st
                .branches
                .get_mut(&xid)
                .ok_or_else(|| Error::Internal("branch vanished".into()))?;
            match restated {
                Ok(a) if prev.is_some() => {
                    b.writes.insert(
                        key.clone(),
                        (
                            a.lsn,
                            ValueLoc::of_record(a.lsn, &key, loc.map(|_| &value[..])),
                        ),
                    );
                }
                Ok(_) => {
                    b.writes.remove(&key);
                }
                Err(e) => {
                    // Log and write set agree up to here, but the branch is not what the
                    // caller asked for any more.
                    b.rb.get_or_insert((Rb::Other, "a rollback to a savepoint failed".into()));
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn local_write(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        let owner = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let never = AtomicBool::new(false);
        let result = self
            .lock_key(owner, key, Mode::Exclusive, &never)
            .map_err(|e| match e {
                LockError::Deadlock => Error::Deadlock("deadlock detected".into()),
                _ => Error::LockTimeout("lock wait timed out".into()),
            });
        let mut no_space = false;
        let result = result.and_then(|()| {
            let existed = self.index_get(key).is_some();
            if value.is_none() && !existed {
                return Ok(false);
            }
            let _q = self.shared();
            let a = self
                .log
                .append_alone(&Self::record(0, key, value))
                .and_then(|a| self.log.sync_to(a.end).map(|()| a))
                .map_err(|e| {
                    no_space = matches!(e, LogError::NoSpace(_));
                    Error::from(e)
                })?;
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            index.set(key, ValueLoc::of_record(a.lsn, key, value));
            Ok(existed)
        });
        self.locks.release_all(owner);
        if no_space {
            self.after_no_space();
        } else if result.is_ok() {
            self.maybe_compact();
        }
        result
    }

    fn index_get(&self, key: &[u8]) -> Option<ValueLoc> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(key)
            .copied()
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
        if let Some((xid, tag, abort)) = &branch {
            let mode = match (for_update, self.cfg.isolation) {
                (true, _) => Some(Mode::Exclusive),
                (false, Isolation::Serializable) => Some(Mode::Shared),
                (false, Isolation::ReadCommitted) => None,
            };
            if let Some(mode) = mode {
                self.lock_in_branch(xid, *tag, abort, key, mode)?;
            }
        }
        // Shared: the compactor must not retire the segment between lookup and read.
        let _q = self.shared();
        let loc = match branch {
            Some((xid, _, _)) => {
                let st = self.state()?;
                match st.branches.get(&xid).and_then(|b| b.writes.get(key)) {
                    Some((_, v)) => *v,
                    None => self.index_get(key),
                }
            }
            None => self.index_get(key),
        };
        let Some(loc) = loc else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(loc.len as usize);
        self.log
            .read_into(loc.lsn, loc.len as usize, &mut out)
            .map_err(|e| Error::Io(e.to_string()))?;
        Ok(Some(out))
    }

    /// Number of committed keys.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether no key is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
