//! Branch records in the shared region, and each thread of control's view of them.
//!
//! Owns: creating, finding and removing branch records (XA branches, local transactions —
//! branches with no XID until promoted — and the short-lived records of one-operation writes), their associations with threads of control of any
//! process, their rollback-only mark, winding an ending branch's locks and pending writes
//! down in steps of bounded size ([`wind_down`], [`release_reads`]), and [`TocState`], what a
//! thread of this process is associated with (kept in the process: only its own thread reads
//! it). Invariant: the XA state
//! of a branch (S0–S5 of the XA reference §5.3) is a projection of its phase, associations,
//! busy mark and rollback-only mark, never stored twice; a thread's [`TocState`] agrees with the
//! associations recorded in the branches (both change in one call, under this process's lock
//! of its threads' states and then the region's mutex). Layout: `layout.rs`.

use super::keys;
use super::layout::*;
use super::locks;
use super::Toc;
use crate::error::Rb;
use crate::shm::{Error, Off, Txn};
use crate::xid::Xid;

/// What a thread of control of this process is associated with.
#[derive(Default, Debug)]
pub(super) struct TocState {
    pub active: Option<Xid>,
    /// The tag of the thread's open local transaction (never with `active`).
    pub local: Option<u64>,
    pub suspended: Vec<Xid>,
    pub scan: Option<(Vec<Xid>, usize)>,
}

/// The record of the XA branch `x`, if it exists.
pub fn find(t: &Txn<'_>, x: &Xid) -> Result<Option<Off>, Error> {
    BRANCHES.find(t, hash_xid(x), |b| xid_is(t, b, x))
}

/// A new record for the XA branch `x` (working, unassociated), with a new tag.
pub fn create(t: &mut Txn<'_>, x: &Xid) -> Result<Off, Error> {
    let b = new_record(t, KIND_XA, hash_xid(x))?;
    t.init_u64(b + B_FORMAT, x.format_id() as u64)?;
    t.init_u8(b + B_GLEN, x.gtrid().len() as u8)?;
    t.init_u8(b + B_BLEN, x.bqual().len() as u8)?;
    let n = x.gtrid().len() + x.bqual().len();
    t.init_bytes(b + B_DATA, &x.data()[..n])?;
    BRANCHES.insert(t, hash_xid(x), b)?;
    Ok(b)
}

/// A new record for a one-operation write of process `slot` (+1).
pub fn create_local(t: &mut Txn<'_>, slot: u32) -> Result<Off, Error> {
    let b = new_record(t, KIND_LOCAL, 0)?;
    let tag = t.get_u64(b + B_TAG)?;
    t.init_u64(b + B_HASH, hash_tag(tag))?;
    t.init_u64(b + B_LOCAL_SLOT, slot as u64)?;
    BRANCHES.insert(t, hash_tag(tag), b)?;
    Ok(b)
}

/// A new record for a local transaction (working, unassociated), found by its tag.
pub fn create_txn(t: &mut Txn<'_>) -> Result<Off, Error> {
    let b = new_record(t, KIND_TXN, 0)?;
    let tag = t.get_u64(b + B_TAG)?;
    t.init_u64(b + B_HASH, hash_tag(tag))?;
    BRANCHES.insert(t, hash_tag(tag), b)?;
    Ok(b)
}

/// The record of the local transaction tagged `tag`, if it still is one.
pub fn find_txn(t: &Txn<'_>, tag: u64) -> Result<Option<Off>, Error> {
    BRANCHES.find(t, hash_tag(tag), |b| {
        Ok(t.get_u8(b + B_KIND)? == KIND_TXN && t.get_u64(b + B_TAG)? == tag)
    })
}

/// Makes the local transaction `b` the XA branch `x`: same record, so same tag, writes, locks,
/// savepoints and associations; only its kind, XID and place in the table change.
pub fn promote(t: &mut Txn<'_>, b: Off, x: &Xid) -> Result<(), Error> {
    let old = t.get_u64(b + B_HASH)?;
    if !BRANCHES.remove(t, old, b)? {
        return Err(Error::Corrupt(format!(
            "branch record {b} is not in the table"
        )));
    }
    t.set_u8(b + B_KIND, KIND_XA)?;
    t.set_u64(b + B_FORMAT, x.format_id() as u64)?;
    t.set_u8(b + B_GLEN, x.gtrid().len() as u8)?;
    t.set_u8(b + B_BLEN, x.bqual().len() as u8)?;
    let n = x.gtrid().len() + x.bqual().len();
    t.set_bytes(b + B_DATA, &x.data()[..n])?;
    t.set_u64(b + B_HASH, hash_xid(x))?;
    BRANCHES.insert(t, hash_xid(x), b)
}

/// A zeroed record with a fresh tag (not yet in the table).
fn new_record(t: &mut Txn<'_>, kind: u8, hash: u64) -> Result<Off, Error> {
    let tag = t.get_u64(R_NEXT_TAG)?;
    t.set_u64(R_NEXT_TAG, tag + 1)?;
    let b = t.alloc_zeroed(BRANCH_SIZE)?;
    t.init_u64(b + B_HASH, hash)?;
    t.init_u64(b + B_TAG, tag)?;
    t.init_u8(b + B_KIND, kind)?;
    t.init_u64(b + B_SINCE, now_ns())?;
    t.init_u64(b + B_NEXT_SP, 1)?;
    Ok(b)
}

/// Removes a branch record; its locks, waits and pending writes must be gone already.
pub fn remove(t: &mut Txn<'_>, b: Off) -> Result<(), Error> {
    let hash = t.get_u64(b + B_HASH)?;
    if !BRANCHES.remove(t, hash, b)? {
        return Err(Error::Corrupt(format!(
            "branch record {b} is not in the table"
        )));
    }
    for v in [assoc(b), locks(b), waits(b), journal(b), savepoints(b)] {
        v.clear(t)?;
    }
    let text = t.get_u64(b + B_TEXT)?;
    if text != 0 {
        t.free(text)?;
    }
    t.free(b)
}

pub fn tag(t: &Txn<'_>, b: Off) -> Result<u64, Error> {
    t.get_u64(b + B_TAG)
}

pub fn phase(t: &Txn<'_>, b: Off) -> Result<u8, Error> {
    t.get_u8(b + B_PHASE)
}

pub fn busy(t: &Txn<'_>, b: Off) -> Result<Busy, Error> {
    Busy::from_u8(t.get_u8(b + B_BUSY)?)
}

/// Whether any thread of control is associated with the branch (active, suspended, or
/// suspended for migration).
pub fn associated(t: &Txn<'_>, b: Off) -> Result<bool, Error> {
    Ok(!assoc(b).is_empty(t)? || t.get_u64(b + B_MIGRATED)? > 0)
}

/// Why the branch can no longer commit, if it cannot.
pub fn doomed(t: &Txn<'_>, b: Off) -> Result<Option<(Rb, String)>, Error> {
    if t.get_u8(b + B_UNDONE)? != 0 {
        return Ok(Some((
            Rb::Other,
            "the branch was rolled back by another thread".into(),
        )));
    }
    Ok(rb_from_u8(t.get_u8(b + B_RB)?).map(|rb| (rb, text(t, b).unwrap_or_default())))
}

/// Marks a working branch rollback-only, unless it is already.
pub fn mark_rollback_only(t: &mut Txn<'_>, b: Off, rb: Rb, why: &str) -> Result<(), Error> {
    if t.get_u8(b + B_RB)? == 0 {
        t.set_u8(b + B_RB, rb_to_u8(rb))?;
        set_text(t, b, why)?;
    }
    Ok(())
}

/// Whether thread of control `gtoc` is associated with the branch: `Some(true)` suspended,
/// `Some(false)` active.
pub fn association(t: &Txn<'_>, b: Off, gtoc: u64) -> Result<Option<bool>, Error> {
    for a in assoc(b).items(t)? {
        if a & !SUSPENDED == gtoc {
            return Ok(Some(a & SUSPENDED != 0));
        }
    }
    Ok(None)
}

/// Records `gtoc` as actively (or, with `suspended`, suspended) associated.
pub fn associate(t: &mut Txn<'_>, b: Off, gtoc: u64, suspended: bool) -> Result<(), Error> {
    assoc(b).push(t, gtoc | if suspended { SUSPENDED } else { 0 })
}

/// Ends `gtoc`'s association (active or suspended), if any.
pub fn dissociate(t: &mut Txn<'_>, b: Off, gtoc: u64) -> Result<(), Error> {
    let v = assoc(b);
    if let Some(i) = v.position(t, |a| a & !SUSPENDED == gtoc)? {
        v.remove(t, i)?;
    }
    Ok(())
}

/// How many threads are actively associated.
pub fn active_count(t: &Txn<'_>, b: Off) -> Result<usize, Error> {
    Ok(assoc(b)
        .items(t)?
        .iter()
        .filter(|&&a| a & SUSPENDED == 0)
        .count())
}

/// Journal bytes a section that winds a branch down may use before it stops and commits: work
/// proportional to a transaction's size is done in as many sections as it needs, so that no
/// section outgrows the region's journal (1 MiB, which must also hold the frees a section
/// defers to its commit).
pub const STEP_BUDGET: u64 = 256 << 10;

/// Whether section `t` has used its budget ([`STEP_BUDGET`]).
pub fn spent(t: &Txn<'_>) -> bool {
    t.journal_used() > STEP_BUDGET
}

/// What winding a branch down does with its pending write on each key it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wind {
    /// Makes it committed data (a commit).
    Apply,
    /// Drops it (a rollback).
    Drop,
}

/// Winds the branch down from its last lock back: for each, its pending write on that key is
/// applied or dropped, the lock released and taken off the branch's list, until none is left
/// or the section's budget is spent (see [`STEP_BUDGET`]). Every step leaves a consistent
/// state — each key's pending write goes with its lock — so any process may go on with it in
/// a later section. Returns whether no lock is left.
pub fn wind_down(t: &mut Txn<'_>, b: Off, how: Wind) -> Result<bool, Error> {
    let l = locks(b);
    let len = l.len(t)?;
    let mut n = len;
    let mut writes = 0;
    while n > 0 && !spent(t) {
        let h = l.get(t, n - 1)?;
        if h & EXCL != 0 {
            let k = held_entry(h);
            if let Some(p) = keys::pending(t, k)?.filter(|p| p.owner == b) {
                if how == Wind::Apply {
                    keys::set_committed(t, k, p.value)?;
                }
                keys::set_pending(t, k, None)?;
                writes += 1;
            }
        }
        locks::release_one(t, b, h)?;
        n -= 1;
    }
    if n < len {
        // Written once per section, not per key: the journal keeps every write's old bytes.
        l.truncate(t, n)?;
        let w = t.get_u64(b + B_WRITES)?;
        t.set_u64(b + B_WRITES, w.saturating_sub(writes))?;
    }
    Ok(n == 0)
}

/// Releases the shared and gap locks of `b` and keeps its exclusive ones (`xa_prepare`), until
/// none is left or the section's budget is spent. Returns whether none is left.
pub fn release_reads(t: &mut Txn<'_>, b: Off) -> Result<bool, Error> {
    let l = locks(b);
    let len = l.len(t)?;
    // From the end: the items past `i` are exclusive; a released one is replaced by the last
    // item (exclusive, or itself), so the list shrinks by one each time.
    let (mut i, mut n) = (len, len);
    while i > 0 {
        let h = l.get(t, i - 1)?;
        if h & EXCL != 0 {
            i -= 1;
            continue;
        }
        if spent(t) {
            break;
        }
        locks::release_one(t, b, h)?;
        if i < n {
            let last = l.get(t, n - 1)?;
            l.set(t, i - 1, last)?;
        }
        n -= 1;
        i -= 1;
    }
    if n < len {
        l.truncate(t, n)?;
    }
    Ok(i == 0)
}

/// Ends a branch that is done: releases its locks, takes its waits out of their queues, and
/// removes its record. Its pending writes must have been applied or dropped (its locks wound
/// down, see [`wind_down`], unless there are few).
pub fn finish(t: &mut Txn<'_>, b: Off) -> Result<(), Error> {
    for w in waits(b).items(t)? {
        locks::unqueue(t, w)?;
    }
    locks::release_all(t, b)?;
    remove(t, b)
}

/// The branch's pending writes: (key entry, pending write).
pub fn pending_writes(t: &Txn<'_>, b: Off) -> Result<Vec<(Off, keys::Pending)>, Error> {
    let mut out = Vec::new();
    for h in locks(b).items(t)? {
        let k = held_entry(h);
        if h & EXCL != 0 {
            if let Some(p) = keys::pending(t, k)?.filter(|p| p.owner == b) {
                out.push((k, p));
            }
        }
    }
    Ok(out)
}

/// A thread-of-control id unique across the store's processes: the process's slot + 1 in bits
/// 40–62, the thread's number in bits 0–39.
pub fn global_toc(slot: u32, toc: Toc) -> u64 {
    ((slot as u64) << 40) | (toc & ((1 << 40) - 1))
}

/// The process (slot + 1) of a thread-of-control id.
pub fn toc_slot(gtoc: u64) -> u32 {
    ((gtoc & !SUSPENDED) >> 40) as u32
}
