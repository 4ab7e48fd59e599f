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
//! Dead processes are found by the kernel's OFD locks on their slot bytes (`src/shm/slots.rs`):
//! at every open, and by any thread whose lock wait lasts a while (`Rm::reap_if_due`), so a
//! waiter gets a dead holder's lock within about a second.

use super::branch;
use super::layout::*;
use super::{locks, Rm, Sect};
use crate::error::Rb;
use crate::log::Media;
use crate::shm::{self, Off, Txn};

/// Ends thread `gtoc`'s association with branch `b` as `xa_end(TMFAIL)` would, and rolls the
/// branch back if it is left with no association. No record is logged: an unprepared branch is
/// rolled back at recovery anyway.
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
        branch::drop_pending(t, b)?;
        branch::finish(t, b)?;
    }
    Ok(())
}

/// The time the busy completion's record of `b` states (now, if it stated none).
fn logged_at(t: &Txn<'_>, b: Off) -> Result<u64, shm::Error> {
    match t.get_u64(b + B_BUSY_AT)? {
        0 => Ok(now_ns()),
        at => Ok(at),
    }
}

/// Finishes the busy completion of `b` (its record is durable).
pub(super) fn complete(t: &mut Txn<'_>, b: Off) -> Result<(), shm::Error> {
    match branch::busy(t, b)? {
        Busy::None => Ok(()),
        Busy::Prepare => {
            t.set_u8(b + B_BUSY, Busy::None as u8)?;
            t.set_u64(b + B_BUSY_SLOT, 0)?;
            t.set_u64(b + B_BUSY_LSN, 0)?;
            t.set_u8(b + B_PHASE, PHASE_PREPARED)?;
            set_since(t, b, logged_at(t, b)?)?;
            t.set_u64(b + B_BUSY_AT, 0)?;
            journal(b).clear(t)?;
            savepoints(b).clear(t)
        }
        Busy::Commit | Busy::Local => {
            branch::apply_pending(t, b)?;
            branch::finish(t, b)
        }
        Busy::Rollback => {
            branch::drop_pending(t, b)?;
            branch::finish(t, b)
        }
        Busy::Heuristic => {
            let outcome = outcome_from_u8(t.get_u8(b + B_OUTCOME)?)?;
            t.set_u8(b + B_BUSY, Busy::None as u8)?;
            t.set_u64(b + B_BUSY_SLOT, 0)?;
            t.set_u64(b + B_BUSY_LSN, 0)?;
            t.set_u8(b + B_PHASE, PHASE_HEURISTIC)?;
            set_since(t, b, logged_at(t, b)?)?;
            t.set_u64(b + B_BUSY_AT, 0)?;
            if outcome == crate::error::Outcome::Commit {
                branch::apply_pending(t, b)?;
            } else {
                branch::drop_pending(t, b)?;
            }
            locks::release_all(t, b)
        }
    }
}

/// Ends what the dead process `slot` (+1) of `generation` left (see the module doc); its busy
/// completions whose record is durable (`≤ durable`) are finished, the others orphaned.
pub(super) fn reap_slot(
    t: &mut Txn<'_>,
    slot: u32,
    generation: u64,
    durable: u64,
) -> Result<(), shm::Error> {
    let owner = slot as u64 | (generation << 32);
    crate::log::reap_claims(t, slot)?;
    // A backup that died (or ended without unpinning) pins nothing any more.
    if t.get_u64(R_BACKUP)? == slot as u64 {
        t.set_u64(R_BACKUP, 0)?;
    }
    for b in BRANCHES.all(t)? {
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
            if t.get_u64(b + B_BUSY_LSN)? <= durable {
                complete(t, b)?;
                continue;
            }
            t.set_u64(b + B_BUSY_SLOT, 0)?;
        }
        if t.get_u8(b + B_KIND)? == KIND_LOCAL {
            if t.get_u64(b + B_LOCAL_SLOT)? == slot as u64 && branch::busy(t, b)? == Busy::None {
                branch::drop_pending(t, b)?;
                branch::finish(t, b)?;
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
    Ok(())
}

/// Finishes orphaned completions (owner died before its record was durable) whose record is
/// durable now.
fn complete_orphans(t: &mut Txn<'_>, durable: u64) -> Result<(), shm::Error> {
    for b in BRANCHES.all(t)? {
        if branch::busy(t, b)? != Busy::None
            && t.get_u64(b + B_BUSY_SLOT)? == 0
            && t.get_u64(b + B_BUSY_LSN)? <= durable
        {
            complete(t, b)?;
        }
    }
    Ok(())
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
        self.shared(|t| -> Sect<()> {
            for d in lf.dead_slots(t)? {
                reap_slot(t, d.index + 1, d.generation, durable)?;
                crate::crash::crash_point("rm.reap_in_section");
                lf.free_dead_slot(t, &d)?;
            }
            complete_orphans(t, durable)?;
            Ok(())
        })
    }
}
