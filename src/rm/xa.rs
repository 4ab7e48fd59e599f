//! The work of the XA entry points on a shared store: associations, completion, recovery scans
//! and heuristic decisions.
//!
//! Owns: the transitions of the XA reference's association (§5.2) and branch (§5.3) state
//! tables over the shared branch records, and the order of log records, syncs and lock
//! releases each completion needs: a completion marks the branch busy and appends its record in
//! one section, syncs outside any section, then applies its effect and releases locks in
//! another — so a process that dies between the two leaves a busy branch whose record says how
//! to finish it (`reap.rs`).

use super::branch::{self, TocState};
use super::flags::{EndMode, Scan, StartMode};
use super::layout::*;
use super::{locks, nota, proto, Rm, Sect, Toc};
use crate::crash::crash_point;
use crate::error::{Error, Outcome, Rb, Result, Vote};
use crate::log::{Appended, Media, Record};
use crate::shm::{Off, Txn};
use crate::xid::Xid;

impl<M: Media> Rm<M> {
    // ---- thread-of-control bookkeeping -------------------------------------------------

    /// Ends `toc`'s use of the store (`xa_close`): refused while it is associated with a branch.
    pub fn close_toc(&self, toc: Toc) -> Result<()> {
        let mut tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tocs.get(&toc) {
            if t.active.is_some() || !t.suspended.is_empty() {
                return Err(proto(
                    "xa_close: the thread is still associated with a branch",
                ));
            }
            if t.local.is_some() {
                return Err(proto(
                    "xa_close: the thread has a local transaction open (commit or roll it back \
                     first)",
                ));
            }
        }
        tocs.remove(&toc);
        Ok(())
    }

    /// The branch `toc` is actively associated with (T1), if any.
    pub fn active_branch(&self, toc: Toc) -> Option<Xid> {
        let tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        tocs.get(&toc).and_then(|t| t.active)
    }

    /// Whether `toc` has a local transaction open.
    pub fn in_local_txn(&self, toc: Toc) -> bool {
        let tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        tocs.get(&toc).is_some_and(|t| t.local.is_some())
    }

    /// Whether `toc` is associated (actively or suspended) with any branch.
    pub fn toc_associated(&self, toc: Toc) -> bool {
        let tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        tocs.get(&toc)
            .is_some_and(|t| t.active.is_some() || !t.suspended.is_empty())
    }

    /// A thread of control is gone without `xa_close`: its associations end as with `TMFAIL`,
    /// and each branch left with no association is rolled back and its locks released. Idle,
    /// prepared and completed branches are untouched.
    pub fn abandon_toc(&self, toc: Toc) {
        let mut tocs = self.tocs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ts) = tocs.remove(&toc) else {
            return;
        };
        let gtoc = self.gtoc(toc);
        let xids: Vec<Xid> = ts.active.iter().chain(&ts.suspended).copied().collect();
        let _ = self.appending(|t| {
            for x in &xids {
                if let Some(b) = branch::find(t, x)? {
                    super::reap::abandon(t, b, gtoc)?;
                }
            }
            if let Some(b) = ts
                .local
                .map(|tag| branch::find_txn(t, tag))
                .transpose()?
                .flatten()
            {
                super::reap::abandon(t, b, gtoc)?;
            }
            Ok(())
        });
        // The rollbacks too big for that section.
        let _ = self.finish_orphans(0);
    }

    // ---- xa_start / xa_end -------------------------------------------------------------

    /// `xa_start`.
    pub fn start(&self, toc: Toc, xid: &Xid, mode: StartMode) -> Result<()> {
        let mut tocs = self.tocs()?;
        let ts = tocs.entry(toc).or_default();
        if ts.local.is_some() {
            return Err(Error::Outside(
                "xa_start: the thread has a local transaction open (commit, roll back or \
                 promote it first)"
                    .into(),
            ));
        }
        let gtoc = self.gtoc(toc);
        let resumed = self.shared(|t| {
            let Some(b) = branch::find(t, xid)? else {
                if mode != StartMode::New {
                    return Err(nota(xid).into());
                }
                if ts.active.is_some() {
                    return Err(
                        proto("xa_start: the thread is already associated with a branch").into(),
                    );
                }
                let b = branch::create(t, xid)?;
                branch::associate(t, b, gtoc, false)?;
                return Ok(false);
            };
            if mode == StartMode::New {
                return Err(Error::DuplicateXid(format!("XID {xid} already exists")).into());
            }
            if ts.active.is_some() {
                return Err(
                    proto("xa_start: the thread is already associated with a branch").into(),
                );
            }
            if branch::phase(t, b)? != PHASE_WORKING || branch::busy(t, b)? != Busy::None {
                return Err(proto("xa_start: the branch is prepared or completed").into());
            }
            let mine = branch::association(t, b, gtoc)? == Some(true);
            let migrated = t.get_u64(b + B_MIGRATED)?;
            match mode {
                StartMode::Join if mine => {
                    return Err(proto(
                        "xa_start(TMJOIN): this thread suspended the branch; resume it",
                    )
                    .into())
                }
                StartMode::Resume if !mine && migrated == 0 => {
                    return Err(
                        proto("xa_start(TMRESUME): no suspended association to resume").into(),
                    )
                }
                _ => {}
            }
            if let Some((rb, why)) = branch::doomed(t, b)? {
                return Err(Error::RolledBack(rb, why).into());
            }
            if mode == StartMode::Resume {
                if mine {
                    branch::dissociate(t, b, gtoc)?;
                } else {
                    t.set_u64(b + B_MIGRATED, migrated - 1)?;
                }
            }
            branch::associate(t, b, gtoc, false)?;
            Ok(mine)
        })?;
        if resumed {
            ts.suspended.retain(|x| x != xid);
        }
        ts.active = Some(*xid);
        Ok(())
    }

    /// `xa_end`.
    pub fn end(&self, toc: Toc, xid: &Xid, mode: EndMode) -> Result<()> {
        let mut tocs = self.tocs()?;
        let ts = tocs.entry(toc).or_default();
        let gtoc = self.gtoc(toc);
        let suspend = matches!(mode, EndMode::Suspend | EndMode::SuspendMigrate);
        let doomed = self.appending(|t| {
            let Some(b) = branch::find(t, xid)? else {
                return Err(nota(xid).into());
            };
            let assoc = branch::association(t, b, gtoc)?;
            let (is_active, is_suspended) = (assoc == Some(false), assoc == Some(true));
            if !(is_active || is_suspended && !suspend) {
                return Err(proto("xa_end: the thread is not associated with this branch").into());
            }
            if mode == EndMode::Fail {
                branch::mark_rollback_only(t, b, Rb::Rollback, "xa_end(TMFAIL)")?;
            }
            let doomed = branch::doomed(t, b)?;
            // Leave the association: a rollback answer ends it even for TMSUSPEND.
            branch::dissociate(t, b, gtoc)?;
            if doomed.is_none() {
                match mode {
                    EndMode::Suspend => branch::associate(t, b, gtoc, true)?,
                    EndMode::SuspendMigrate => {
                        let m = t.get_u64(b + B_MIGRATED)?;
                        t.set_u64(b + B_MIGRATED, m + 1)?;
                    }
                    EndMode::Success | EndMode::Fail => {}
                }
            } else if t.get_u8(b + B_UNDONE)? != 0
                && !branch::associated(t, b)?
                && branch::busy(t, b)? == Busy::None
            {
                // (Still being rolled back, it is removed when that ends.)
                branch::finish(t, b)?;
            }
            Ok(doomed)
        })?;
        if ts.active.as_ref() == Some(xid) {
            ts.active = None;
        }
        ts.suspended.retain(|x| x != xid);
        match doomed {
            None => {
                if mode == EndMode::Suspend {
                    ts.suspended.push(*xid);
                }
                Ok(())
            }
            Some((rb, why)) => Err(Error::RolledBack(rb, why)),
        }
    }

    // ---- completion ----------------------------------------------------------------------

    /// Rolls back an unprepared branch that nobody is associated with, in `t` — or, if it is
    /// too big for one section, begins to, and finishes after `t` commits (in this process's
    /// following sections). The ROLLBACK record needs no sync: without a PREPARE or COMMIT the
    /// branch is rolled back at restart anyway.
    pub(super) fn discard(&self, t: &mut Txn<'_>, b: Off) -> Sect<()> {
        let tag = branch::tag(t, b)?;
        if t.get_u64(b + B_WRITES)? > 0 {
            // Best effort (a full disk must not keep the branch's locks): without it, open
            // rolls the tag back like any unprepared branch.
            let _ = self.log.append(t, &Record::Rollback { tag });
        }
        self.roll_back(t, b, tag)
    }

    /// Rolls back the working branch `b` (tag `tag`), its record logged if it needs one, as a
    /// busy completion of this process: what this section has no room for is finished after it
    /// commits ([`Rm::finish_deferred`]).
    pub(super) fn roll_back(&self, t: &mut Txn<'_>, b: Off, tag: u64) -> Sect<()> {
        if !super::reap::roll_back(t, b, self.busy_owner())? {
            self.defer(b, tag);
        }
        Ok(())
    }

    /// Looks up a branch for a completion call: unknown → `XAER_NOTA`, busy → `XAER_PROTO`.
    fn completing(t: &Txn<'_>, xid: &Xid, what: &str) -> Sect<Off> {
        let b = branch::find(t, xid)?.ok_or_else(|| nota(xid))?;
        if branch::busy(t, b)? != Busy::None {
            return Err(proto(format!("{what}: another completion call is in progress")).into());
        }
        Ok(b)
    }

    /// Marks `b` busy with `kind` and appends `rec`, remembering where it ends.
    pub(super) fn begin_completion(
        &self,
        t: &mut Txn<'_>,
        b: Off,
        kind: Busy,
        rec: &Record<'_>,
    ) -> Sect<Appended> {
        let a = self.log.append(t, rec)?;
        let at = match rec {
            Record::Prepare { at, .. } | Record::Heuristic { at, .. } => at.unwrap_or(0),
            _ => 0,
        };
        t.set_u8(b + B_BUSY, kind as u8)?;
        t.set_u64(b + B_BUSY_SLOT, self.busy_owner())?;
        t.set_u64(b + B_BUSY_LSN, a.end)?;
        // A peer that finishes the completion for a dead process dates it as the record does.
        t.set_u64(b + B_BUSY_AT, at)?;
        crash_point("rm.completion_logged");
        Ok(a)
    }

    /// Goes on with the busy completion of the branch `xid` after a sync, if it is still ours
    /// (`tag`): one step of [`Rm::finish_logged`].
    fn finish_step(t: &mut Txn<'_>, xid: &Xid, tag: u64) -> Sect<bool> {
        match Self::after_sync(t, xid, tag)? {
            Some(b) => Ok(super::reap::complete(t, b)?),
            None => Ok(true),
        }
    }

    /// Clears the busy mark after a completion.
    fn end_busy(t: &mut Txn<'_>, b: Off) -> Sect<()> {
        t.set_u8(b + B_BUSY, Busy::None as u8)?;
        t.set_u64(b + B_BUSY_SLOT, 0)?;
        t.set_u64(b + B_BUSY_LSN, 0)?;
        t.set_u64(b + B_BUSY_AT, 0)?;
        Ok(())
    }

    /// The branch `xid` after a sync, still ours (`tag`) and busy.
    fn after_sync(t: &Txn<'_>, xid: &Xid, tag: u64) -> Sect<Option<Off>> {
        Ok(branch::find(t, xid)?.filter(|&b| branch::tag(t, b).is_ok_and(|x| x == tag)))
    }

    /// `xa_prepare`.
    pub fn prepare(&self, _toc: Toc, xid: &Xid) -> Result<Vote> {
        enum First {
            Done(Result<Vote>),
            Logged(Appended, u64, Off),
        }
        // The time the PREPARE record states, and the branch's age counts from.
        let at = now_ns();
        let first = self.appending(|t| {
            let b = Self::completing(t, xid, "xa_prepare")?;
            if branch::phase(t, b)? != PHASE_WORKING {
                return Err(
                    proto("xa_prepare: the branch is already prepared or completed").into(),
                );
            }
            if branch::associated(t, b)? {
                return Err(
                    proto("xa_prepare: the branch still has associations (xa_end first)").into(),
                );
            }
            if let Some((rb, why)) = branch::doomed(t, b)? {
                self.discard(t, b)?;
                return Ok(First::Done(Err(Error::RolledBack(rb, why))));
            }
            if t.get_u64(b + B_WRITES)? == 0 {
                self.discard(t, b)?;
                return Ok(First::Done(Ok(Vote::ReadOnly)));
            }
            let tag = branch::tag(t, b)?;
            // The branch can do no more work: its reads need no lock any more (strict 2PL keeps
            // only the write locks until the outcome). As many as this section has room for
            // go now, the rest once the PREPARE record is durable: the branch is busy from
            // this section on, so it takes no lock after releasing one either way.
            branch::release_reads(t, b)?;
            let rec = Record::Prepare {
                tag,
                xid: *xid,
                at: Some(at),
            };
            let a = self.begin_completion(t, b, Busy::Prepare, &rec)?;
            t.set_u64(b + B_RECORD_LSN, a.lsn)?;
            Ok(First::Logged(a, tag, b))
        });
        let (a, tag, b) = match first {
            Ok(First::Done(r)) => return r,
            Ok(First::Logged(a, tag, b)) => (a, tag, b),
            Err(e @ Error::Failed(_)) => return Err(e),
            Err(e @ (Error::NoSpace(_) | Error::Io(_))) => {
                if matches!(e, Error::NoSpace(_)) {
                    self.after_no_space();
                }
                // Nothing was logged: roll back and give a definite answer.
                let _ = self.appending(|t| {
                    if let Some(b) = branch::find(t, xid)? {
                        if branch::busy(t, b)? == Busy::None && !branch::associated(t, b)? {
                            self.discard(t, b)?;
                        }
                    }
                    Ok(())
                });
                return Err(Error::RolledBack(
                    Rb::Other,
                    format!("xa_prepare failed, rolled back: {e}"),
                ));
            }
            Err(e) => return Err(e),
        };
        match self.log.sync_to(a.end) {
            Ok(()) => {
                // (It states `at`, and its LSN is the branch's record already.)
                self.finish_logged(b, tag, |t| Self::finish_step(t, xid, tag))?;
                self.maybe_compact();
                Ok(Vote::Prepared)
            }
            // The PREPARE record may be durable: only a reopen and xa_recover can tell.
            Err(e) => Err(e.into()),
        }
    }

    /// `xa_commit`.
    pub fn commit(&self, _toc: Toc, xid: &Xid, one_phase: bool) -> Result<()> {
        enum First {
            Done(Result<()>),
            Logged(Appended, u64, Off),
        }
        let first = self.appending(|t| {
            let b = Self::completing(t, xid, "xa_commit")?;
            match (branch::phase(t, b)?, one_phase) {
                (PHASE_HEURISTIC, false) => {
                    let o = outcome_from_u8(t.get_u8(b + B_OUTCOME)?)?;
                    return Ok(First::Done(Err(Error::Heuristic(
                        o,
                        "the branch was completed heuristically".into(),
                    ))));
                }
                (PHASE_PREPARED, false) => {}
                (PHASE_WORKING, true) => {
                    if branch::associated(t, b)? {
                        return Err(proto("xa_commit: the branch still has associations").into());
                    }
                    if let Some((rb, why)) = branch::doomed(t, b)? {
                        self.discard(t, b)?;
                        return Ok(First::Done(Err(Error::RolledBack(rb, why))));
                    }
                    if t.get_u64(b + B_WRITES)? == 0 {
                        self.discard(t, b)?;
                        return Ok(First::Done(Ok(())));
                    }
                }
                (PHASE_WORKING, false) => {
                    return Err(proto("xa_commit: the branch is not prepared (TMONEPHASE?)").into())
                }
                _ => return Err(proto("xa_commit(TMONEPHASE): the branch is prepared").into()),
            }
            let tag = branch::tag(t, b)?;
            let a = self.begin_completion(t, b, Busy::Commit, &Record::Commit { tag })?;
            Ok(First::Logged(a, tag, b))
        });
        let (a, tag, b) = match first {
            Ok(First::Done(r)) => return r,
            Ok(First::Logged(a, tag, b)) => (a, tag, b),
            Err(e @ Error::Failed(_)) => return Err(e),
            Err(e @ (Error::NoSpace(_) | Error::Io(_))) => {
                if matches!(e, Error::NoSpace(_)) {
                    self.after_no_space();
                }
                if one_phase {
                    let undone = self.appending(|t| {
                        if let Some(b) = branch::find(t, xid)? {
                            if branch::busy(t, b)? == Busy::None
                                && branch::phase(t, b)? == PHASE_WORKING
                                && !branch::associated(t, b)?
                            {
                                self.discard(t, b)?;
                            }
                        }
                        Ok(())
                    });
                    if let Err(e2) = undone {
                        // Neither committed nor rolled back: no XA_RB* may claim otherwise.
                        return Err(Error::Failed(format!(
                            "commit failed ({e}) and the branch could not be rolled back \
                             ({e2}); reopen and roll it back"
                        )));
                    }
                    return Err(Error::RolledBack(
                        Rb::Other,
                        format!("commit failed, rolled back: {e}"),
                    ));
                }
                // Still prepared: the TM may try again.
                return Err(Error::Retry(format!("commit could not be logged: {e}")));
            }
            Err(e) => return Err(e),
        };
        crash_point("rm.completion_pending");
        self.log.sync_to(a.end)?;
        self.finish_logged(b, tag, |t| {
            let done = Self::finish_step(t, xid, tag)?;
            crash_point("rm.apply_in_section");
            Ok(done)
        })?;
        self.maybe_compact();
        Ok(())
    }

    /// `xa_rollback`.
    pub fn rollback(&self, toc: Toc, xid: &Xid) -> Result<()> {
        let gtoc = self.gtoc(toc);
        enum First {
            Done(Result<()>),
            Logged(Appended, u64, Off),
        }
        let first = self.appending(|t| {
            let b = Self::completing(t, xid, "xa_rollback")?;
            match branch::phase(t, b)? {
                PHASE_HEURISTIC => {
                    let o = outcome_from_u8(t.get_u8(b + B_OUTCOME)?)?;
                    Ok(First::Done(Err(Error::Heuristic(
                        o,
                        "the branch was completed heuristically".into(),
                    ))))
                }
                PHASE_PREPARED => {
                    // Synced: a lost rollback would bring the branch back, locks and all.
                    let tag = branch::tag(t, b)?;
                    let a = self.begin_completion(t, b, Busy::Rollback, &Record::Rollback { tag })?;
                    Ok(First::Logged(a, tag, b))
                }
                _ => {
                    if branch::association(t, b, gtoc)?.is_some() {
                        return Err(proto(
                            "xa_rollback: the calling thread is associated with the branch (xa_end first)",
                        )
                        .into());
                    }
                    if assoc(b).is_empty(t)? {
                        self.discard(t, b)?;
                        return Ok(First::Done(Ok(())));
                    }
                    // Associated elsewhere: undo now; the associated threads learn it at their
                    // next call, and the branch is forgotten when the last association ends.
                    t.set_u8(b + B_UNDONE, 1)?;
                    t.set_u64(b + B_MIGRATED, 0)?;
                    let tag = branch::tag(t, b)?;
                    if t.get_u64(b + B_WRITES)? > 0 {
                        // Best effort, as in `discard`.
                        let _ = self.log.append(t, &Record::Rollback { tag });
                    }
                    // Its threads' lock waits end (they find their requests gone).
                    for w in waits(b).items(t)? {
                        locks::unqueue(t, w)?;
                    }
                    // The record stays (undone) while they are associated.
                    self.roll_back(t, b, tag)?;
                    Ok(First::Done(Ok(())))
                }
            }
        });
        let (a, tag, b) = match first? {
            First::Done(r) => return r,
            First::Logged(a, tag, b) => (a, tag, b),
        };
        if let Err(e) = self.log.sync_to(a.end) {
            if !matches!(e, crate::log::LogError::Failed(_)) {
                let _ = self.shared(|t| {
                    if let Some(b) = Self::after_sync(t, xid, tag)? {
                        Self::end_busy(t, b)?;
                    }
                    Ok(())
                });
                return Err(Error::Io(format!("rollback could not be logged: {e}")));
            }
            return Err(e.into());
        }
        self.finish_logged(b, tag, |t| Self::finish_step(t, xid, tag))
    }

    /// `xa_forget`.
    pub fn forget(&self, _toc: Toc, xid: &Xid) -> Result<()> {
        self.appending(|t| {
            let b = Self::completing(t, xid, "xa_forget")?;
            if branch::phase(t, b)? != PHASE_HEURISTIC {
                return Err(Error::UnknownXid(format!(
                    "XID {xid} is not a heuristically completed branch"
                ))
                .into());
            }
            let tag = branch::tag(t, b)?;
            self.log.append(t, &Record::Forget { tag })?;
            branch::finish(t, b)?;
            Ok(())
        })
    }

    /// `xa_recover`: up to `cap` in-doubt XIDs (prepared or heuristically completed) from this
    /// thread's scan, which `TMSTARTRSCAN` (re)starts from a snapshot.
    pub fn recover(&self, toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>> {
        let mut tocs = self.tocs()?;
        let ts: &mut TocState = tocs.entry(toc).or_default();
        if scan.start {
            let mut list = self.shared(|t| {
                let mut v = Vec::new();
                for b in BRANCHES.all(t)? {
                    if t.get_u8(b + B_KIND)? == KIND_XA && branch::phase(t, b)? != PHASE_WORKING {
                        v.push(read_xid(t, b)?);
                    }
                }
                Ok(v)
            })?;
            list.sort_by(|a, b| (a.format_id(), a.data()).cmp(&(b.format_id(), b.data())));
            ts.scan = Some((list, 0));
        }
        let Some((list, pos)) = ts.scan.as_mut() else {
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
            ts.scan = None;
        }
        Ok(out)
    }

    /// Completes a prepared branch heuristically (an operator's decision): `Outcome::Commit`
    /// commits it, `Outcome::Rollback` rolls it back. The decision is durable before any lock is
    /// released; the branch stays listed by `xa_recover` until `xa_forget`.
    pub fn heuristic(&self, xid: &Xid, outcome: Outcome, reason: &str) -> Result<()> {
        if !matches!(outcome, Outcome::Commit | Outcome::Rollback) {
            return Err(Error::Invalid(
                "a heuristic decision commits or rolls back".into(),
            ));
        }
        let at = now_ns();
        let (a, tag, b) = self.appending(|t| {
            let b = Self::completing(t, xid, "heuristic")?;
            if branch::phase(t, b)? != PHASE_PREPARED {
                return Err(proto("only a prepared branch can be completed heuristically").into());
            }
            let tag = branch::tag(t, b)?;
            let rec = Record::Heuristic {
                tag,
                outcome: outcome.to_log(),
                xid: *xid,
                reason: reason.as_bytes(),
                at: Some(at),
            };
            let a = self.begin_completion(t, b, Busy::Heuristic, &rec)?;
            // What a peer needs to finish it if this process dies before it does.
            t.set_u8(b + B_OUTCOME, outcome_to_u8(outcome))?;
            set_text(t, b, reason)?;
            t.set_u64(b + B_RECORD_LSN, a.lsn)?;
            Ok((a, tag, b))
        })?;
        if let Err(e) = self.log.sync_to(a.end) {
            let _ = self.shared(|t| {
                if let Some(b) = Self::after_sync(t, xid, tag)? {
                    Self::end_busy(t, b)?;
                }
                Ok(())
            });
            return Err(e.into());
        }
        // (The first section recorded the outcome, reason and record; the record states `at`.)
        self.finish_logged(b, tag, |t| Self::finish_step(t, xid, tag))?;
        // The log holds the decision; the audit line is its human-readable trail.
        let _ = crate::audit::record(
            &self.cfg.dir,
            self.cfg.file_mode(),
            xid,
            outcome.name(),
            reason,
        );
        Ok(())
    }

    /// The orphan policy: rolls back heuristically every branch prepared longer than `age`
    /// ago (counted from the prepare by the wall clock: from the time its PREPARE record states,
    /// so across restarts too; from the last rebuild if the log recorded no time), with a
    /// reason saying so. Returns the branches it rolled back.
    pub fn expire_orphans(&self, age: std::time::Duration) -> Vec<Xid> {
        self.expire_orphans_at(age, now_ns())
    }

    /// [`Rm::expire_orphans`] as if the wall clock read `now` (ns since the Unix epoch).
    pub(crate) fn expire_orphans_at(&self, age: std::time::Duration, now: u64) -> Vec<Xid> {
        let limit = now.saturating_sub(age.as_nanos() as u64);
        let old: Vec<Xid> = self
            .shared(|t| {
                let mut v = Vec::new();
                for b in BRANCHES.all(t)? {
                    if t.get_u8(b + B_KIND)? == KIND_XA
                        && branch::phase(t, b)? == PHASE_PREPARED
                        && branch::busy(t, b)? == Busy::None
                        && t.get_u64(b + B_SINCE)? <= limit
                    {
                        v.push(read_xid(t, b)?);
                    }
                }
                Ok(v)
            })
            .unwrap_or_default();
        let reason = format!(
            "orphan policy: prepared for more than {} s without a decision (orphan_rollback_s)",
            age.as_secs()
        );
        old.into_iter()
            .filter(|x| self.heuristic(x, Outcome::Rollback, &reason).is_ok())
            .collect()
    }
}
