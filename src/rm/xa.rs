//! The work of the XA entry points on one store: associations, completion, recovery scans and
//! heuristic decisions.
//!
//! Owns: the transitions of the XA reference's association (§5.2) and branch (§5.3) state
//! tables, and the order of log records and lock releases each completion needs (a PREPARE or
//! COMMIT record is durable before the call succeeds; locks are released only after the record
//! that ends the branch is written).

use super::branch::{Branch, Phase, State, Writes};
use super::flags::{EndMode, Scan, StartMode};
use super::{nota, proto, Rm, Toc};
use crate::error::{Error, Outcome, Rb, Result, Vote};
use crate::log::{LogError, Media, Record};
use crate::xid::Xid;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl<M: Media> Rm<M> {
    // ---- thread-of-control bookkeeping -------------------------------------------------

    /// Ends `toc`'s use of the store (`xa_close`): refused while it is associated with a branch.
    pub fn close_toc(&self, toc: Toc) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = st.tocs.get(&toc) {
            if t.active.is_some() || !t.suspended.is_empty() {
                return Err(proto(
                    "xa_close: the thread is still associated with a branch",
                ));
            }
        }
        st.tocs.remove(&toc);
        Ok(())
    }

    /// A thread of control is gone without `xa_close` (its process died or hung up): its
    /// associations end as with `TMFAIL`, and each branch left with no association is rolled
    /// back and its locks released. Idle, prepared and completed branches are untouched.
    pub fn abandon_toc(&self, toc: Toc) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        let Some(t) = st.tocs.remove(&toc) else {
            return;
        };
        for xid in t.active.iter().chain(&t.suspended) {
            let Some(b) = st.branches.get_mut(xid) else {
                continue;
            };
            b.active.retain(|&x| x != toc);
            b.suspended.retain(|&x| x != toc);
            if b.phase != Phase::Working || b.busy {
                continue;
            }
            b.rb.get_or_insert((
                Rb::Rollback,
                "a thread of control associated with the branch ended without xa_end".into(),
            ));
            b.abort.store(true, Ordering::Release);
            if !b.associated() {
                if b.undone {
                    st.branches.remove(xid);
                } else {
                    self.discard(st, xid);
                }
            }
        }
    }

    /// The branch `toc` is actively associated with (T1), if any.
    pub fn active_branch(&self, toc: Toc) -> Option<Xid> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.tocs.get(&toc).and_then(|t| t.active)
    }

    /// Whether `toc` is associated (actively or suspended) with any branch.
    pub fn toc_associated(&self, toc: Toc) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.tocs
            .get(&toc)
            .is_some_and(|t| t.active.is_some() || !t.suspended.is_empty())
    }

    // ---- xa_start / xa_end -------------------------------------------------------------

    /// `xa_start`.
    pub fn start(&self, toc: Toc, xid: &Xid, mode: StartMode) -> Result<()> {
        let mut guard = self.state()?;
        let st = &mut *guard;
        let t = st.tocs.entry(toc).or_default();
        let Some(b) = st.branches.get_mut(xid) else {
            if mode != StartMode::New {
                return Err(nota(xid));
            }
            if t.active.is_some() {
                return Err(proto(
                    "xa_start: the thread is already associated with a branch",
                ));
            }
            let mut b = Branch::new(
                self.next_tag.fetch_add(1, Ordering::Relaxed),
                Phase::Working,
            );
            b.active.push(toc);
            st.branches.insert(*xid, b);
            t.active = Some(*xid);
            return Ok(());
        };
        if mode == StartMode::New {
            return Err(Error::DuplicateXid(format!("XID {xid} already exists")));
        }
        if t.active.is_some() {
            return Err(proto(
                "xa_start: the thread is already associated with a branch",
            ));
        }
        if b.phase != Phase::Working || b.busy {
            return Err(proto("xa_start: the branch is prepared or completed"));
        }
        let mine = b.suspended.contains(&toc);
        match mode {
            StartMode::Join if mine => {
                return Err(proto(
                    "xa_start(TMJOIN): this thread suspended the branch; resume it",
                ))
            }
            StartMode::Resume if !mine && b.migrated == 0 => {
                return Err(proto(
                    "xa_start(TMRESUME): no suspended association to resume",
                ))
            }
            _ => {}
        }
        if let Some((code, why)) = b.doomed() {
            return Err(Error::RolledBack(code, why));
        }
        if mode == StartMode::Resume {
            if mine {
                b.suspended.retain(|&x| x != toc);
                t.suspended.retain(|x| x != xid);
            } else {
                b.migrated -= 1;
            }
        }
        b.active.push(toc);
        t.active = Some(*xid);
        Ok(())
    }

    /// `xa_end`.
    pub fn end(&self, toc: Toc, xid: &Xid, mode: EndMode) -> Result<()> {
        let mut guard = self.state()?;
        let st = &mut *guard;
        let Some(b) = st.branches.get_mut(xid) else {
            return Err(nota(xid));
        };
        let t = st.tocs.entry(toc).or_default();
        let is_active = b.active.contains(&toc);
        let is_suspended = b.suspended.contains(&toc);
        let suspend = matches!(mode, EndMode::Suspend | EndMode::SuspendMigrate);
        if !(is_active || is_suspended && !suspend) {
            return Err(proto(
                "xa_end: the thread is not associated with this branch",
            ));
        }
        if mode == EndMode::Fail && b.rb.is_none() {
            b.rb = Some((Rb::Rollback, "xa_end(TMFAIL)".into()));
        }
        let doomed = b.doomed();
        // Leave the association: a rollback answer ends it even for TMSUSPEND.
        b.active.retain(|&x| x != toc);
        b.suspended.retain(|&x| x != toc);
        if t.active.as_ref() == Some(xid) {
            t.active = None;
        }
        t.suspended.retain(|x| x != xid);
        if doomed.is_none() {
            match mode {
                EndMode::Suspend => {
                    b.suspended.push(toc);
                    t.suspended.push(*xid);
                }
                EndMode::SuspendMigrate => b.migrated += 1,
                EndMode::Success | EndMode::Fail => {}
            }
        }
        match doomed {
            None => Ok(()),
            Some((code, why)) => {
                if b.undone && !b.associated() {
                    st.branches.remove(xid);
                }
                Err(Error::RolledBack(code, why))
            }
        }
    }

    // ---- completion ----------------------------------------------------------------------

    /// Rolls back an unprepared branch that nobody is associated with, under the state lock.
    /// The ROLLBACK record needs no sync: without a PREPARE or COMMIT the branch is rolled
    /// back at restart anyway.
    fn discard(&self, st: &mut State, xid: &Xid) {
        if let Some(b) = st.branches.remove(xid) {
            if !b.writes.is_empty() {
                let _ = self.log.append_alone(&Record::Rollback { tag: b.tag });
            }
            self.locks.release_all(b.tag);
        }
    }

    /// Looks up a branch for a completion call: unknown → `XAER_NOTA`, busy → `XAER_PROTO`.
    fn completing<'a>(st: &'a mut State, xid: &Xid, what: &str) -> Result<&'a mut Branch> {
        let b = st.branches.get_mut(xid).ok_or_else(|| nota(xid))?;
        if b.busy {
            return Err(proto(format!(
                "{what}: another completion call is in progress"
            )));
        }
        Ok(b)
    }

    /// `xa_prepare`.
    pub fn prepare(&self, _toc: Toc, xid: &Xid) -> Result<Vote> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_prepare")?;
        match b.phase {
            Phase::Working => {}
            _ => {
                return Err(proto(
                    "xa_prepare: the branch is already prepared or completed",
                ))
            }
        }
        if b.associated() {
            return Err(proto(
                "xa_prepare: the branch still has associations (xa_end first)",
            ));
        }
        if let Some((code, why)) = b.doomed() {
            self.discard(&mut st, xid);
            return Err(Error::RolledBack(code, why));
        }
        if b.writes.is_empty() {
            self.discard(&mut st, xid);
            return Ok(Vote::ReadOnly);
        }
        b.busy = true;
        let tag = b.tag;
        drop(st);
        // The branch can do no more work: its reads need no lock any more (strict 2PL keeps
        // only the write locks until the outcome).
        self.locks.release_shared(tag);
        let q = self.shared();
        let result = self.log_durably(&Record::Prepare { tag, xid: *xid });
        let mut st = self.relock();
        match result {
            Ok(a) => {
                if let Some(b) = st.branches.get_mut(xid) {
                    b.busy = false;
                    b.phase = Phase::Prepared;
                    b.since = Instant::now();
                    b.record_lsn = a.lsn;
                    // Savepoints end with the working phase; their saved values pin nothing.
                    b.savepoints.clear();
                    b.journal.clear();
                }
                drop((st, q));
                self.maybe_compact();
                Ok(Vote::Prepared)
            }
            // The PREPARE record may be durable: only a reopen and xa_recover can tell.
            Err(e @ LogError::Failed(_)) => Err(e.into()),
            Err(e) => {
                // Nothing durable says prepared: roll back and give a definite answer.
                self.discard(&mut st, xid);
                Err(Error::RolledBack(
                    Rb::Other,
                    format!("xa_prepare failed, rolled back: {e}"),
                ))
            }
        }
    }

    /// `xa_commit`.
    pub fn commit(&self, _toc: Toc, xid: &Xid, one_phase: bool) -> Result<()> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_commit")?;
        match (b.phase, one_phase) {
            (Phase::Heuristic(code), false) => {
                return Err(Error::Heuristic(
                    code,
                    "the branch was completed heuristically".into(),
                ))
            }
            (Phase::Prepared, false) => {}
            (Phase::Working, true) => {
                if b.associated() {
                    return Err(proto("xa_commit: the branch still has associations"));
                }
                if let Some((code, why)) = b.doomed() {
                    self.discard(&mut st, xid);
                    return Err(Error::RolledBack(code, why));
                }
                if b.writes.is_empty() {
                    self.discard(&mut st, xid);
                    return Ok(());
                }
            }
            (Phase::Working, false) => {
                return Err(proto("xa_commit: the branch is not prepared (TMONEPHASE?)"))
            }
            (_, true) => return Err(proto("xa_commit(TMONEPHASE): the branch is prepared")),
        }
        b.busy = true;
        let tag = b.tag;
        drop(st);
        let q = self.shared();
        let result = self.log_durably(&Record::Commit { tag });
        let mut st = self.relock();
        match result {
            Ok(_) => {
                if let Some(b) = st.branches.remove(xid) {
                    self.apply(&b.writes);
                    self.locks.release_all(b.tag);
                }
                drop((st, q));
                self.maybe_compact();
                Ok(())
            }
            Err(e @ LogError::Failed(_)) => Err(e.into()),
            Err(e) if one_phase => {
                self.discard(&mut st, xid);
                Err(Error::RolledBack(
                    Rb::Other,
                    format!("commit failed, rolled back: {e}"),
                ))
            }
            Err(e) => {
                // Still prepared: the TM may try again.
                if let Some(b) = st.branches.get_mut(xid) {
                    b.busy = false;
                }
                drop((st, q));
                if matches!(e, LogError::NoSpace(_)) {
                    self.after_no_space();
                }
                Err(Error::Retry(format!("commit could not be logged: {e}")))
            }
        }
    }

    /// `xa_rollback`.
    pub fn rollback(&self, toc: Toc, xid: &Xid) -> Result<()> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_rollback")?;
        match b.phase {
            Phase::Heuristic(code) => Err(Error::Heuristic(
                code,
                "the branch was completed heuristically".into(),
            )),
            Phase::Prepared => {
                b.busy = true;
                let tag = b.tag;
                drop(st);
                // Synced: a lost rollback would bring the branch back, locks and all.
                let _q = self.shared();
                let result = self.log_durably(&Record::Rollback { tag });
                let mut st = self.relock();
                match result {
                    Ok(_) => {
                        st.branches.remove(xid);
                        self.locks.release_all(tag);
                        Ok(())
                    }
                    Err(e @ LogError::Failed(_)) => Err(e.into()),
                    Err(e) => {
                        if let Some(b) = st.branches.get_mut(xid) {
                            b.busy = false;
                        }
                        Err(Error::Io(format!("rollback could not be logged: {e}")))
                    }
                }
            }
            Phase::Working => {
                if b.active.contains(&toc) || b.suspended.contains(&toc) {
                    return Err(proto(
                        "xa_rollback: the calling thread is associated with the branch (xa_end first)",
                    ));
                }
                if b.active.is_empty() && b.suspended.is_empty() {
                    self.discard(&mut st, xid);
                    return Ok(());
                }
                // Associated elsewhere: undo now; the associated threads learn it at their next
                // call, and the branch is forgotten when the last association ends.
                b.undone = true;
                b.migrated = 0;
                b.abort.store(true, Ordering::Release);
                let tag = b.tag;
                if !b.take_writes().is_empty() {
                    let _ = self.log.append_alone(&Record::Rollback { tag });
                }
                self.locks.release_all(tag);
                Ok(())
            }
        }
    }

    /// `xa_forget`.
    pub fn forget(&self, _toc: Toc, xid: &Xid) -> Result<()> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_forget")?;
        let Phase::Heuristic(_) = b.phase else {
            return Err(Error::UnknownXid(format!(
                "XID {xid} is not a heuristically completed branch"
            )));
        };
        let tag = b.tag;
        self.log.append_alone(&Record::Forget { tag })?;
        st.branches.remove(xid);
        Ok(())
    }

    /// `xa_recover`: up to `cap` in-doubt XIDs (prepared or heuristically completed) from this
    /// thread's scan, which `TMSTARTRSCAN` (re)starts from a snapshot.
    pub fn recover(&self, toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>> {
        let mut guard = self.state()?;
        let st = &mut *guard;
        let t = st.tocs.entry(toc).or_default();
        if scan.start {
            let mut list: Vec<Xid> = st
                .branches
                .iter()
                .filter(|(_, b)| b.phase != Phase::Working)
                .map(|(x, _)| *x)
                .collect();
            list.sort_by(|a, b| (a.format_id(), a.data()).cmp(&(b.format_id(), b.data())));
            t.scan = Some((list, 0));
        }
        let Some((list, pos)) = t.scan.as_mut() else {
            if scan.end && cap == 0 {
                return Ok(Vec::new());
            }
            return Err(Error::Invalid(
                "xa_recover: no scan is open (TMSTARTRSCAN first)".into(),
            ));
        };
        let n = cap.min(list.len() - *pos);
        let out = list[*pos..*pos + n].to_vec();
        *pos += n;
        if scan.end || n < cap {
            t.scan = None;
        }
        Ok(out)
    }

    /// Completes a prepared branch heuristically (an operator's decision): `XA_HEURCOM` commits
    /// it, `XA_HEURRB` rolls it back. The decision is durable before any lock is released; the
    /// branch stays listed by `xa_recover` until `xa_forget`.
    pub fn heuristic(&self, xid: &Xid, outcome: Outcome, reason: &str) -> Result<()> {
        if !matches!(outcome, Outcome::Commit | Outcome::Rollback) {
            return Err(Error::Invalid(
                "a heuristic decision commits or rolls back".into(),
            ));
        }
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "heuristic")?;
        if b.phase != Phase::Prepared {
            return Err(proto(
                "only a prepared branch can be completed heuristically",
            ));
        }
        b.busy = true;
        let tag = b.tag;
        drop(st);
        let rec = Record::Heuristic {
            tag,
            outcome: outcome.to_log(),
            xid: *xid,
            reason: reason.as_bytes(),
        };
        let _q = self.shared();
        let result = self.log_durably(&rec);
        let mut st = self.relock();
        let b = st.branches.get_mut(xid).ok_or_else(|| nota(xid))?;
        b.busy = false;
        let a = result?;
        b.phase = Phase::Heuristic(outcome);
        b.since = Instant::now();
        b.record_lsn = a.lsn;
        b.reason = reason.to_string();
        let writes = b.take_writes();
        if outcome == Outcome::Commit {
            self.apply(&writes);
        }
        self.locks.release_all(tag);
        drop(st);
        // The log holds the decision; the audit line is its human-readable trail.
        let _ = crate::audit::record(&self.cfg.dir, xid, outcome.name(), reason);
        Ok(())
    }

    /// The orphan policy: rolls back heuristically every branch prepared longer than `age`
    /// ago (by this instance's clock: a branch recovered at open counts from the open), with a
    /// reason saying so. Returns the branches it rolled back.
    pub fn expire_orphans(&self, age: std::time::Duration) -> Vec<Xid> {
        let old: Vec<Xid> = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.branches
                .iter()
                .filter(|(_, b)| b.phase == Phase::Prepared && !b.busy && b.since.elapsed() >= age)
                .map(|(x, _)| *x)
                .collect()
        };
        let reason = format!(
            "orphan policy: prepared for more than {} s without a decision (orphan_rollback_s)",
            age.as_secs()
        );
        old.into_iter()
            .filter(|x| self.heuristic(x, Outcome::Rollback, &reason).is_ok())
            .collect()
    }

    fn apply(&self, writes: &Writes) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (k, (_, v)) in writes {
            index.set(k, *v);
        }
    }
}
