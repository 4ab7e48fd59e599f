//! A dead process's leftovers: ended by whichever peer finds it dead.
//!
//! Owns: what happens to the shared state when a process dies (SIGKILL at any instruction) or a
//! thread of control goes away without `xa_end`. The process's section, if it died in one, was
//! already undone by the region's journal; what remains is ended here, as the XA specification
//! and the log say:
//! - each association of its threads ends as with `xa_end(TMFAIL)`: a working branch becomes
//!   rollback-only, and one left with no association is rolled back and its locks released;
//!   idle, prepared and completed branches are untouched (any process may still finish them);
//! - each lock request its threads were waiting with leaves its queue;
//! - each completion it had in progress (marked busy, its record appended in the same section)
//!   is finished as its record says — prepared, committed, rolled back, completed
//!   heuristically, or a one-operation write committed — once the record is durable; if it is
//!   not yet, the branch stays busy for anyone to finish after a sync (its owner set to 0);
//! - a one-operation write that had not logged anything is dropped.
//!
//! Finishing a completion or a rollback takes work proportional to the branch's size, done in
//! sections of bounded size (`branch::wind_down`): one too big for the reaper's section is left
//! busy with no owner (an orphan, its record's LSN kept), and finished by
//! [`complete_orphans`] in as many later sections as it needs — by this reaper at once, or by
//! any process that finds it.
//!
//! Dead processes are found by the kernel's OFD locks on their slot bytes (`src/shm/slots.rs`):
//! at every open, and by any thread whose lock wait lasts a while (`Rm::reap_if_due`), so a
//! waiter gets a dead holder's lock within about a second.

use super::branch::{self, Wind};
use super::layout::*;
use super::{locks, Rm, Sect};
use crate::error::Rb;
use crate::log::Media;
use crate::shm::{self, Off, Txn};

/// Ends thread `gtoc`'s association with branch `b` as `xa_end(TMFAIL)` would, and rolls the
/// branch back if it is left with no association. No record is logged: an unprepared branch is
/// rolled back at recovery anyway. A rollback too big for this section is left as an orphaned
/// completion, for [`complete_orphans`] (any process) to finish.
pub(super) fn abandon(t: &mut Txn<'_>, b: Off, gtoc: u64) -> Result<(), shm::Error> {
    branch::dissociate(t, b, gtoc)?;
    if branch::phase(t, b)? != PHASE_WORKING || branch::busy(t, b)? != Busy::None {
        return Ok(());
    }
    branch::mark_rollback_only(
        t,
        b,
        Rb::Rollback,
        "a thread of control associated with the branch ended without xa_end",
    )?;
    if !branch::associated(t, b)? {
        roll_back(t, b, 0)?;
    }
    Ok(())
}

/// Rolls back the working branch `b` as a busy completion of process `owner` (slot + 1 and
/// generation; 0: an orphan, which any process finishes) that needs no record: as much of it as
/// this section's budget allows. Returns whether it is done; if not, its owner (or, for an
/// orphan, whoever finds it) finishes it with [`complete`].
pub(super) fn roll_back(t: &mut Txn<'_>, b: Off, owner: u64) -> Result<bool, shm::Error> {
    t.set_u8(b + B_BUSY, Busy::Rollback as u8)?;
    t.set_u64(b + B_BUSY_SLOT, owner)?;
    t.set_u64(b + B_BUSY_LSN, 0)?;
    t.set_u64(b + B_BUSY_AT, 0)?;
    complete(t, b)
}

/// The time the busy completion's record of `b` states (now, if it stated none).
fn logged_at(t: &Txn<'_>, b: Off) -> Result<u64, shm::Error> {
    match t.get_u64(b + B_BUSY_AT)? {
        0 => Ok(now_ns()),
        at => Ok(at),
    }
}

/// Clears the busy mark of `b`.
fn end_busy(t: &mut Txn<'_>, b: Off) -> Result<(), shm::Error> {
    t.set_u8(b + B_BUSY, Busy::None as u8)?;
    t.set_u64(b + B_BUSY_SLOT, 0)?;
    t.set_u64(b + B_BUSY_LSN, 0)?;
    t.set_u64(b + B_BUSY_AT, 0)
}

/// Goes on with the busy completion of `b` (its record, if it needs one, is durable) as far as
/// this section's budget allows ([`branch::STEP_BUDGET`]); returns whether it is done. Every
/// step leaves a state any process can go on from: the branch stays busy, with its record's
/// LSN, until the last step, which ends it as the record says.
pub(super) fn complete(t: &mut Txn<'_>, b: Off) -> Result<bool, shm::Error> {
    match branch::busy(t, b)? {
        Busy::None => Ok(true),
        Busy::Prepare => {
            // The shared locks the prepare's first section had no room to release.
            if !branch::release_reads(t, b)? {
                return Ok(false);
            }
            let at = logged_at(t, b)?;
            end_busy(t, b)?;
            t.set_u8(b + B_PHASE, PHASE_PREPARED)?;
            set_since(t, b, at)?;
            journal(b).clear(t)?;
            savepoints(b).clear(t)?;
            Ok(true)
        }
        Busy::Commit | Busy::Local => {
            if !branch::wind_down(t, b, Wind::Apply)? {
                return Ok(false);
            }
            branch::finish(t, b)?;
            Ok(true)
        }
        Busy::Rollback => {
            if !branch::wind_down(t, b, Wind::Drop)? {
                return Ok(false);
            }
            if !assoc(b).is_empty(t)? {
                // Rolled back under its threads (`xa_rollback` from another one): the record
                // stays, undone, until their last association ends. (A migrated association is
                // no thread's: it goes with the branch.)
                end_busy(t, b)?;
                t.set_u64(b + B_WRITES, 0)?;
                journal(b).clear(t)?;
                savepoints(b).clear(t)?;
            } else {
                branch::finish(t, b)?;
            }
            Ok(true)
        }
        Busy::Heuristic => {
            let how = match outcome_from_u8(t.get_u8(b + B_OUTCOME)?)? {
                crate::error::Outcome::Commit => Wind::Apply,
                _ => Wind::Drop,
            };
            if !branch::wind_down(t, b, how)? {
                return Ok(false);
            }
            let at = logged_at(t, b)?;
            end_busy(t, b)?;
            t.set_u8(b + B_PHASE, PHASE_HEURISTIC)?;
            set_since(t, b, at)?;
            journal(b).clear(t)?;
            savepoints(b).clear(t)?;
            Ok(true)
        }
    }
}

/// Ends what the dead process `slot` (+1) of `generation` left (see the module doc); its busy
/// completions whose record is durable (`≤ durable`) are finished, or, those too big for this
/// section, orphaned with their record's LSN for [`complete_orphans`] to finish; the others are
/// orphaned until their record is durable.
/// Works through the branches in turn as far as the section's budget allows
/// ([`branch::STEP_BUDGET`]) and returns whether it got through all of them: every step is
/// idempotent (what was ended is not met again), so a later section goes on where this one
/// stopped, and the dead slot is freed only once nothing is left.
pub(super) fn reap_slot(
    t: &mut Txn<'_>,
    slot: u32,
    generation: u64,
    durable: u64,
) -> Result<bool, shm::Error> {
    let owner = slot as u64 | (generation << 32);
    crate::log::reap_claims(t, slot)?;
    // A backup that died (or ended without unpinning) pins nothing any more.
    if t.get_u64(R_BACKUP)? == slot as u64 {
        t.set_u64(R_BACKUP, 0)?;
    }
    for b in BRANCHES.all(t)? {
        if branch::spent(t) {
            return Ok(false);
        }
        // The record may be gone already (finished by an earlier branch's cleanup).
        if BRANCHES
            .find(t, t.get_u64(b + B_HASH)?, |x| Ok(x == b))?
            .is_none()
        {
            continue;
        }
        for w in waits(b).items(t)? {
            if t.get_u32(w + W_SLOT)? == slot {
                locks::unqueue(t, w)?;
            }
        }
        if t.get_u64(b + B_BUSY_SLOT)? == owner {
            if t.get_u64(b + B_BUSY_LSN)? <= durable && complete(t, b)? {
                continue;
            }
            t.set_u64(b + B_BUSY_SLOT, 0)?;
        }
        if t.get_u8(b + B_KIND)? == KIND_LOCAL {
            if t.get_u64(b + B_LOCAL_SLOT)? == slot as u64 && branch::busy(t, b)? == Busy::None {
                roll_back(t, b, 0)?;
            }
            continue;
        }
        for a in assoc(b).items(t)? {
            if branch::toc_slot(a) == slot {
                abandon(t, b, a & !SUSPENDED)?;
                if BRANCHES
                    .find(t, t.get_u64(b + B_HASH)?, |x| Ok(x == b))?
                    .is_none()
                {
                    break;
                }
            }
        }
    }
    Ok(true)
}

/// Goes on with orphaned completions (their owner died, or they need no owner) whose record is
/// durable, as far as this section's budget allows. Returns whether none is left to do.
pub(super) fn complete_orphans(t: &mut Txn<'_>, durable: u64) -> Result<bool, shm::Error> {
    for b in BRANCHES.all(t)? {
        if branch::busy(t, b)? != Busy::None
            && t.get_u64(b + B_BUSY_SLOT)? == 0
            && t.get_u64(b + B_BUSY_LSN)? <= durable
            && !complete(t, b)?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

impl<M: Media> Rm<M> {
    /// Ends the leftovers of every dead peer (and of completions they orphaned). Syncs the log
    /// first, so the completions they had in progress are durable and can be finished.
    pub(super) fn reap_dead(&self) -> crate::error::Result<()> {
        let Some(lf) = &self.lockfile else {
            return Ok(());
        };
        let work = self.shared(|t| {
            let dead = lf.dead_slots(t)?;
            let orphans = BRANCHES.all(t)?.into_iter().any(|b| {
                branch::busy(t, b).is_ok_and(|k| k != Busy::None)
                    && t.get_u64(b + B_BUSY_SLOT).is_ok_and(|o| o == 0)
            });
            Ok(!dead.is_empty() || orphans)
        })?;
        if !work {
            return Ok(());
        }
        let written = self.log.written();
        self.log.sync_to(written)?;
        let durable = written;
        let done = self.in_steps(|t| -> Sect<bool> {
            for d in lf.dead_slots(t)? {
                if !reap_slot(t, d.index + 1, d.generation, durable)? {
                    return Ok(false);
                }
                crate::crash::crash_point("rm.reap_in_section");
                lf.free_dead_slot(t, &d)?;
            }
            Ok(true)
        })?;
        if !done {
            return Err(super::shm_error(shm::Error::Timeout));
        }
        self.finish_orphans(durable)
    }

    /// Finishes the orphaned completions whose record is durable (`≤ durable`), in as many
    /// sections as they need.
    pub(super) fn finish_orphans(&self, durable: u64) -> crate::error::Result<()> {
        self.in_steps(|t| Ok(complete_orphans(t, durable)?))?;
        Ok(())
    }
}
