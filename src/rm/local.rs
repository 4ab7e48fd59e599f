//! Local transactions, their promotion to XA branches, and nested transactions.
//!
//! Owns: the life of a thread's local transaction — begun, committed (or rolled back) by the
//! thread itself without any TM — and of nested levels inside it or inside a branch. A local
//! transaction is a branch record of kind `KIND_TXN`: no XID (so `xa_recover` never lists it),
//! found by its tag, actively associated with its thread. Everything else is a branch's: its
//! writes are logged under its tag and held as pending writes under its locks, its savepoints
//! and rollback-only mark are the branch's, its commit is a one-phase commit (one synced COMMIT
//! record, then applied), and a dead process's or thread's local transaction is rolled back by
//! the reaper as an abandoned branch. Recovery needs nothing new: a tag without COMMIT is rolled
//! back. Promotion turns the same record into an XA branch (same tag, writes, locks): its
//! PREPARE record will name the XID, as for any branch. A nested level is a savepoint marked
//! [`NESTED`] in the branch's savepoints.

use super::branch;
use super::data::Working;
use super::layout::*;
use super::{proto, Rm, Toc};
use crate::error::{Error, Rb, Result};
use crate::log::{Appended, Media, Record};
use crate::shm::Off;
use crate::xid::Xid;

impl<M: Media> Rm<M> {
    /// Begins a local transaction in `toc`. Refused while one is open or while the thread is
    /// actively associated with a branch.
    pub fn txn_begin(&self, toc: Toc) -> Result<()> {
        let mut tocs = self.tocs()?;
        let ts = tocs.entry(toc).or_default();
        if ts.local.is_some() {
            return Err(proto(
                "mmxa_txn_begin: the thread already has a local transaction open",
            ));
        }
        if ts.active.is_some() {
            return Err(proto(
                "mmxa_txn_begin: the thread is associated with a branch (xa_end first)",
            ));
        }
        let gtoc = self.gtoc(toc);
        let tag = self.shared(|t| {
            let b = branch::create_txn(t)?;
            branch::associate(t, b, gtoc, false)?;
            Ok(branch::tag(t, b)?)
        })?;
        ts.local = Some(tag);
        Ok(())
    }

    /// The tag of `toc`'s local transaction.
    fn local_tag(&self, toc: Toc, what: &str) -> Result<u64> {
        self.tocs()?
            .get(&toc)
            .and_then(|t| t.local)
            .ok_or_else(|| proto(format!("{what}: the thread has no local transaction open")))
    }

    /// Forgets `toc`'s local transaction (it ended, one way or another).
    fn end_local(&self, toc: Toc) {
        let mut tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ts) = tocs.get_mut(&toc) {
            ts.local = None;
        }
    }

    /// Commits `toc`'s local transaction as a one-phase commit: its COMMIT record is durable
    /// before this returns `Ok`. A rollback-only transaction is rolled back and answers
    /// [`Error::RolledBack`]. Either way (but for a failed store) the thread has no local
    /// transaction open afterwards.
    pub fn txn_commit(&self, toc: Toc) -> Result<()> {
        let tag = self.local_tag(toc, "mmxa_txn_commit")?;
        // The thread's state is not locked across the sync: other threads go on meanwhile.
        let r = self.commit_local(toc, tag);
        self.end_local(toc);
        r
    }

    fn commit_local(&self, toc: Toc, tag: u64) -> Result<()> {
        enum First {
            Done(Result<()>),
            Logged(Appended, Off),
        }
        let gtoc = self.gtoc(toc);
        let first = self.appending(|t| {
            let Some(b) = branch::find_txn(t, tag)? else {
                return Ok(First::Done(Err(Error::RolledBack(
                    Rb::Other,
                    "the local transaction was rolled back".into(),
                ))));
            };
            branch::dissociate(t, b, gtoc)?;
            if let Some((rb, why)) = branch::doomed(t, b)? {
                self.discard(t, b)?;
                return Ok(First::Done(Err(Error::RolledBack(
                    rb,
                    format!("the local transaction was rollback-only ({why}); rolled back"),
                ))));
            }
            if t.get_u64(b + B_WRITES)? == 0 {
                self.discard(t, b)?;
                return Ok(First::Done(Ok(())));
            }
            let a = self.begin_completion(t, b, Busy::Commit, &Record::Commit { tag })?;
            Ok(First::Logged(a, b))
        });
        let (a, b) = match first {
            Ok(First::Done(r)) => return r,
            Ok(First::Logged(a, b)) => (a, b),
            Err(e @ Error::Failed(_)) => return Err(e),
            Err(e) => {
                if matches!(e, Error::NoSpace(_)) {
                    self.after_no_space();
                }
                // Nothing was logged: roll back and give a definite answer.
                if let Err(e2) = self.rollback_local(toc, tag) {
                    return Err(Error::Failed(format!(
                        "commit failed ({e}) and the local transaction could not be rolled \
                         back ({e2}); reopen the store"
                    )));
                }
                return Err(Error::RolledBack(
                    Rb::Other,
                    format!("commit failed, rolled back: {e}"),
                ));
            }
        };
        self.log.sync_to(a.end)?;
        self.finish_logged(b, tag, |t| match branch::find_txn(t, tag)? {
            Some(b) => Ok(super::reap::complete(t, b)?),
            None => Ok(true),
        })?;
        self.maybe_compact();
        Ok(())
    }

    /// Rolls back `toc`'s local transaction; the thread has none open afterwards.
    pub fn txn_rollback(&self, toc: Toc) -> Result<()> {
        let tag = self.local_tag(toc, "mmxa_txn_rollback")?;
        let r = self.rollback_local(toc, tag);
        self.end_local(toc);
        r
    }

    /// Drops the local transaction `tag` of `toc` (no sync: without a COMMIT it is rolled back
    /// at restart anyway).
    fn rollback_local(&self, toc: Toc, tag: u64) -> Result<()> {
        let gtoc = self.gtoc(toc);
        self.appending(|t| {
            if let Some(b) = branch::find_txn(t, tag)? {
                if branch::busy(t, b)? == Busy::None {
                    branch::dissociate(t, b, gtoc)?;
                    self.discard(t, b)?;
                }
            }
            Ok(())
        })
    }

    /// [`Rm::txn_commit`], then [`Rm::txn_begin`] at once if the commit succeeded.
    pub fn txn_commit_and_chain(&self, toc: Toc) -> Result<()> {
        self.txn_commit(toc)?;
        self.txn_begin(toc)
    }

    /// Turns `toc`'s local transaction into the XA branch `xid`, actively associated with the
    /// thread as after `xa_start`, keeping its writes, locks and savepoints. A duplicate XID is
    /// refused and the local transaction stays open; a rollback-only one is rolled back.
    pub fn txn_promote(&self, toc: Toc, xid: &Xid) -> Result<()> {
        let mut tocs = self.tocs()?;
        let ts = tocs.entry(toc).or_default();
        let Some(tag) = ts.local else {
            return Err(proto(
                "mmxa_txn_promote: the thread has no local transaction open",
            ));
        };
        let gtoc = self.gtoc(toc);
        let r = self.appending(|t| {
            let Some(b) = branch::find_txn(t, tag)? else {
                return Ok(Err(Error::RolledBack(
                    Rb::Other,
                    "the local transaction was rolled back".into(),
                )));
            };
            if let Some((rb, why)) = branch::doomed(t, b)? {
                branch::dissociate(t, b, gtoc)?;
                self.discard(t, b)?;
                return Ok(Err(Error::RolledBack(
                    rb,
                    format!("the local transaction was rollback-only ({why}); rolled back"),
                )));
            }
            if branch::find(t, xid)?.is_some() {
                return Err(Error::DuplicateXid(format!(
                    "XID {xid} already exists; the local transaction stays open"
                ))
                .into());
            }
            branch::promote(t, b, xid)?;
            Ok(Ok(()))
        })?;
        ts.local = None;
        if r.is_ok() {
            ts.active = Some(*xid);
        }
        r
    }

    /// The branch or local transaction a nested-transaction call works in.
    fn nesting(&self, toc: Toc, what: &str) -> Result<Working> {
        self.current(toc)?.ok_or_else(|| {
            proto(format!(
                "{what}: the thread has no local transaction open and is not associated with \
                 a branch"
            ))
        })
    }

    /// Begins a nested transaction in the thread's local transaction or branch; returns its
    /// level (1 for the first).
    pub fn txn_begin_nested(&self, toc: Toc) -> Result<u64> {
        let w = self.nesting(toc, "mmxa_txn_begin_nested")?;
        self.shared(|t| {
            let b = Self::record_of(t, &w)?;
            Self::usable(t, b)?;
            let sps = savepoints(b).items(t)?;
            let level = sps.chunks(2).filter(|p| p[0] & NESTED != 0).count() as u64 + 1;
            let id = t.get_u64(b + B_NEXT_SP)?;
            t.set_u64(b + B_NEXT_SP, id + 1)?;
            let len = journal(b).len(t)?;
            savepoints(b).push(t, id | NESTED)?;
            savepoints(b).push(t, len)?;
            Ok(level)
        })
    }

    /// Ends the innermost nested transaction, its writes becoming its parent's. Savepoints set
    /// inside it are released with it.
    pub fn txn_commit_nested(&self, toc: Toc) -> Result<()> {
        let w = self.nesting(toc, "mmxa_txn_commit_nested")?;
        self.shared(|t| {
            let b = Self::record_of(t, &w)?;
            Self::usable(t, b)?;
            let sps = savepoints(b).items(t)?;
            let pos = innermost(&sps, "mmxa_txn_commit_nested")?;
            savepoints(b).truncate(t, 2 * pos as u64)?;
            Ok(())
        })
    }

    /// Undoes the innermost nested transaction's writes and ends it.
    pub fn txn_rollback_nested(&self, toc: Toc) -> Result<()> {
        let w = self.nesting(toc, "mmxa_txn_rollback_nested")?;
        self.undo_to(&w, true, &|sps| innermost(sps, "mmxa_txn_rollback_nested"))
    }
}

/// The index of the innermost nested level among a branch's savepoints.
fn innermost(sps: &[u64], what: &str) -> Result<usize> {
    sps.chunks(2)
        .rposition(|p| p[0] & NESTED != 0)
        .ok_or_else(|| proto(format!("{what}: no nested transaction is open")))
}
