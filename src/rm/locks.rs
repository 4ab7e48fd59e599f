//! Shared and exclusive key locks in the shared region (strict two-phase locking), held by
//! branch records of any process.
//!
//! Owns: who holds which key in which mode, the queue of requests waiting for a key, granting,
//! releasing, and deadlock detection. Does not own when locks are taken or released (the
//! caller: reads take shared, writes exclusive, `xa_prepare` releases shared ones, the end of a
//! branch all of them), nor the waiting itself (`Rm::acquire` sleeps on the key's wait word).
//!
//! # Rules
//! A lock is held by an owner: a branch record (threads joined to a branch share its locks, in
//! whatever process they run). A key has any number of shared holders or one exclusive holder.
//! Two requests *conflict* when they come from different owners and one of them is exclusive. A
//! request is granted when it conflicts with no holder and with no request queued *ahead* of it:
//! a new request is granted at once only if it conflicts with no holder and nothing queued, else
//! it queues at the back (so readers never starve a waiting writer); an upgrade (exclusive asked
//! by a shared holder) queues at the front, behind earlier upgrades only.
//!
//! # Deadlock detection is exact
//! A waiting request of owner `w` waits for every owner that holds a conflicting lock on its
//! key or has a conflicting request queued ahead of it: exactly the reasons in the grant rule,
//! so these edges are the waits-for graph. Only a request starting to wait adds edges (its own,
//! and for an upgrade at the front, edges from the conflicting requests behind it to its owner),
//! and every such edge touches the new request's owner: a depth-first search from it, before it
//! is queued, finds every new cycle; if there is one the request fails with a deadlock and
//! nothing changes. Grants turn "queued ahead" edges into "holder" edges to the same owner;
//! releases and requests leaving the queue remove edges. The graph is computed from the queues
//! and holders when needed, never stored, so it cannot go stale — across processes too. (The
//! same rules and proof as the in-process table these replaced.)
//!
//! # Gap locks (phantoms)
//! A serializable scan takes a *next-key lock* on every entry it passes — a shared lock that
//! holds the gap before the key too (bit [`NK`] of its shared-holder word) — and a gap-only lock
//! on the first entry past its range (the supremum past the last key): a gap covers the keys
//! between the entry before it and it. Gaps never wait and never make anyone wait, so they add
//! no edge to the waits-for graph. Instead, an entry created inside a gap
//! (`keys::find_or_insert`) hands every holder of that gap a next-key lock on the new entry
//! before anyone can lock it: a writer of a key inside a scanned range then waits for the
//! scanner's shared lock like any writer of a key the scanner read. An entry with gap holders is
//! not removed, so a gap only ever grows (more conservative) when its neighbour goes. A shared
//! lock upgraded to exclusive keeps its gap as a gap-only lock. Gaps are released with shared
//! locks (at `xa_prepare`, and at the end).

use super::keys;
use super::layout::*;

/// Bit 0 of a shared holder's word: the holder holds the gap before the key too (a next-key
/// lock, taken by a serializable scan). Branch records are 16-aligned.
const NK: u64 = 1;
use crate::shm::{Error, Off, Txn};

/// How a key is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Compatible with other shared locks.
    Shared,
    /// Compatible with nothing.
    Exclusive,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Shared => MODE_S,
            Mode::Exclusive => MODE_X,
        }
    }

    fn from_u8(v: u8) -> Result<Mode, Error> {
        match v {
            MODE_S => Ok(Mode::Shared),
            MODE_X => Ok(Mode::Exclusive),
            _ => Err(Error::Corrupt(format!("lock mode {v}"))),
        }
    }
}

/// The shared holders of `k`.
pub fn shared_holders(t: &Txn<'_>, k: Off) -> Result<Vec<Off>, Error> {
    Ok(holder_words(t, k)?.into_iter().map(|w| w & !NK).collect())
}

/// The shared holders' words of `k`: a branch record, bit 0 ([`NK`]) set when it holds the
/// gap before the key too.
fn holder_words(t: &Txn<'_>, k: Off) -> Result<Vec<u64>, Error> {
    let n = s_count(t, k)?;
    let mut v = Vec::with_capacity(n as usize);
    if n >= 1 {
        v.push(t.get_u64(k + K_S1)?);
    }
    if n >= 2 {
        v.push(t.get_u64(k + K_S2)?);
    }
    if n > 2 {
        v.extend(s_more(k).items(t)?);
    }
    if v.len() as u64 != n {
        return Err(Error::Corrupt(format!("key entry {k}: {n} shared holders")));
    }
    Ok(v)
}

/// What `owner` holds on `k`, if anything.
pub fn held(t: &Txn<'_>, k: Off, owner: Off) -> Result<Option<Mode>, Error> {
    if t.get_u64(k + K_XOWNER)? == owner {
        return Ok(Some(Mode::Exclusive));
    }
    Ok(holds_shared(t, k, owner)?.then_some(Mode::Shared))
}

/// Whether `owner` is a shared holder of `k` (without collecting the holders).
fn holds_shared(t: &Txn<'_>, k: Off, owner: Off) -> Result<bool, Error> {
    Ok(shared_word_at(t, k, owner)?.is_some())
}

/// Where a shared holder's word is.
enum Word {
    /// In the entry, at this offset.
    At(Off),
    /// In the more-shared-holders array, at this index.
    More(u64),
}

/// Where `owner`'s shared-holder word of `k` is, and what it holds.
fn shared_word_at(t: &Txn<'_>, k: Off, owner: Off) -> Result<Option<(Word, u64)>, Error> {
    let n = s_count(t, k)?;
    for (i, at) in [(1, k + K_S1), (2, k + K_S2)] {
        if n >= i {
            let w = t.get_u64(at)?;
            if w & !NK == owner {
                return Ok(Some((Word::At(at), w)));
            }
        }
    }
    if n > 2 {
        if let Some(i) = s_more(k).position(t, |o| o & !NK == owner)? {
            return Ok(Some((Word::More(i), s_more(k).get(t, i)?)));
        }
    }
    Ok(None)
}

/// Owners other than `owner` whose locks on `k` conflict with `mode`.
fn conflicting_holders(t: &Txn<'_>, k: Off, owner: Off, mode: Mode) -> Result<Vec<Off>, Error> {
    let mut out = Vec::new();
    let x = t.get_u64(k + K_XOWNER)?;
    if x != 0 && x != owner {
        out.push(x);
    }
    if mode == Mode::Exclusive {
        out.extend(shared_holders(t, k)?.into_iter().filter(|&o| o != owner));
    }
    Ok(out)
}

/// A wait record's owner and mode.
fn request(t: &Txn<'_>, w: Off) -> Result<(Off, Mode), Error> {
    Ok((
        t.get_u64(w + W_OWNER)?,
        Mode::from_u8(t.get_u8(w + W_MODE)?)?,
    ))
}

fn conflict(a: (Off, Mode), b: (Off, Mode)) -> bool {
    a.0 != b.0 && (a.1 == Mode::Exclusive || b.1 == Mode::Exclusive)
}

/// The owners a request `(owner, mode)` at queue position `pos` of `k` waits for.
fn blockers_at(t: &Txn<'_>, k: Off, req: (Off, Mode), pos: u64) -> Result<Vec<Off>, Error> {
    let mut out = conflicting_holders(t, k, req.0, req.1)?;
    let q = queue(k).items(t)?;
    for &w in q.iter().take(pos as usize) {
        let other = request(t, w)?;
        if conflict(req, other) && !out.contains(&other.0) {
            out.push(other.0);
        }
    }
    Ok(out)
}

/// The owners the queued request `w` waits for now.
fn blockers(t: &Txn<'_>, w: Off) -> Result<Vec<Off>, Error> {
    let k = t.get_u64(w + W_KEY)?;
    let pos = queue(k)
        .position(t, |x| x == w)?
        .ok_or_else(|| Error::Corrupt(format!("wait record {w} is not queued")))?;
    blockers_at(t, k, request(t, w)?, pos)
}

/// Whether some owner in `from` (transitively) waits for `target`.
fn reaches(t: &Txn<'_>, from: Vec<Off>, target: Off) -> Result<bool, Error> {
    let mut stack = from;
    let mut seen: Vec<Off> = Vec::new();
    while let Some(o) = stack.pop() {
        if o == target {
            return Ok(true);
        }
        if seen.contains(&o) {
            continue;
        }
        seen.push(o);
        for w in waits(o).items(t)? {
            stack.extend(blockers(t, w)?);
        }
    }
    Ok(false)
}

/// The outcome of asking for a lock without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    /// Granted (or already held in this mode or a stronger one).
    Granted,
    /// Waiting would close a cycle.
    Deadlock,
    /// It must wait: queued as this wait record.
    Queued(Off),
    /// It must wait, and may not (`queue` false): nothing changed.
    Busy,
}

/// Asks for `mode` on `k` for `owner`: granted at once, or queued (when `queue`), or refused.
/// `slot` is the asking process's (slot + 1), for its wait record.
pub fn try_lock(
    t: &mut Txn<'_>,
    k: Off,
    owner: Off,
    mode: Mode,
    queue_it: bool,
    slot: u32,
) -> Result<Try, Error> {
    let x = t.get_u64(k + K_XOWNER)?;
    if x == owner {
        return Ok(Try::Granted);
    }
    // The common case, without collecting holders and queue: a shared request on a key nobody
    // holds exclusively and nobody waits for is granted at once (the grant rule, in short).
    if mode == Mode::Shared && x == 0 && queue(k).is_empty(t)? {
        if !holds_shared(t, k, owner)? {
            grant(t, k, owner, Mode::Shared)?;
        }
        return Ok(Try::Granted);
    }
    let have = held(t, k, owner)?;
    if have.is_some_and(|h| h >= mode) {
        return Ok(Try::Granted);
    }
    let upgrade = have == Some(Mode::Shared);
    let q = queue(k).items(t)?;
    // Where the request would queue: an upgrade behind earlier upgrades, anything else last.
    let mut pos = q.len() as u64;
    if upgrade {
        pos = 0;
        for &w in &q {
            if t.get_u8(w + W_UPGRADE)? != 1 {
                break;
            }
            pos += 1;
        }
    }
    let blocked_by = blockers_at(t, k, (owner, mode), pos)?;
    if blocked_by.is_empty() {
        grant(t, k, owner, mode)?;
        return Ok(Try::Granted);
    }
    // Queue it, then look for a cycle: the new edges (its own, and for an upgrade at the
    // front, those of the conflicting requests behind it) all touch `owner`, so a new cycle
    // passes through it. If there is one — or the caller may not wait — take it out again.
    let seq = t.get_u64(R_NEXT_SEQ)?;
    t.set_u64(R_NEXT_SEQ, seq + 1)?;
    let w = t.alloc_zeroed(WAIT_SIZE)?;
    t.init_u64(w + W_OWNER, owner)?;
    t.init_u64(w + W_KEY, k)?;
    t.init_u8(w + W_MODE, mode.to_u8())?;
    t.init_u8(w + W_UPGRADE, upgrade as u8)?;
    t.init_u32(w + W_SLOT, slot)?;
    t.init_u64(w + W_SEQ, seq)?;
    queue(k).insert(t, pos, w)?;
    waits(owner).push(t, w)?;
    let n = t.get_u64(R_WAITS)?;
    t.set_u64(R_WAITS, n + 1)?;
    if reaches(t, blocked_by, owner)? {
        unqueue(t, w)?;
        return Ok(Try::Deadlock);
    }
    if !queue_it {
        unqueue(t, w)?;
        return Ok(Try::Busy);
    }
    Ok(Try::Queued(w))
}

/// Grants the queued request `w` if nothing blocks it any more (and unqueues it).
pub fn try_grant(t: &mut Txn<'_>, w: Off) -> Result<bool, Error> {
    if !blockers(t, w)?.is_empty() {
        return Ok(false);
    }
    let (owner, mode) = request(t, w)?;
    let k = t.get_u64(w + W_KEY)?;
    unqueue(t, w)?;
    grant(t, k, owner, mode)?;
    Ok(true)
}

/// Removes the wait record `w` from its key's queue and its owner's waits, and frees it. The
/// requests behind it may now be grantable: the key's waiters are woken.
pub fn unqueue(t: &mut Txn<'_>, w: Off) -> Result<(), Error> {
    let owner = t.get_u64(w + W_OWNER)?;
    let k = t.get_u64(w + W_KEY)?;
    queue(k).remove_value(t, w)?;
    waits(owner).remove_value(t, w)?;
    let n = t.get_u64(R_WAITS)?;
    t.set_u64(R_WAITS, n.saturating_sub(1))?;
    t.wake(t.get_u64(k + K_HASH)?);
    t.free(w)
}

/// Whether `w` is still a queued request (a reaper may have removed it).
pub fn still_queued(t: &Txn<'_>, owner: Off, w: Off) -> Result<bool, Error> {
    Ok(waits(owner).position(t, |x| x == w)?.is_some())
}

fn grant(t: &mut Txn<'_>, k: Off, owner: Off, mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Exclusive => {
            if held(t, k, owner)? == Some(Mode::Shared) {
                // An upgrade keeps the gap the shared lock held, as a lock of its own.
                let had_gap = remove_shared(t, k, owner)?;
                let l = locks(owner);
                if let Some(i) = l.position(t, |x| x == k)? {
                    l.set(t, i, k | EXCL)?;
                }
                if had_gap {
                    gap_lock(t, k, owner)?;
                }
            } else {
                locks(owner).push(t, k | EXCL)?;
            }
            t.set_u64(k + K_XOWNER, owner)
        }
        Mode::Shared => grant_shared(t, k, owner, 0),
    }
}

/// Adds `owner` (with `nk`: [`NK`] when it takes the gap too) to `k`'s shared holders.
fn grant_shared(t: &mut Txn<'_>, k: Off, owner: Off, nk: u64) -> Result<(), Error> {
    let n = s_count(t, k)?;
    match n {
        0 => t.set_u64(k + K_S1, owner | nk)?,
        1 => t.set_u64(k + K_S2, owner | nk)?,
        _ => s_more(k).push(t, owner | nk)?,
    }
    set_s_count(t, k, n + 1)?;
    locks(owner).push(t, k)
}

/// A next-key lock on `k` for `owner` in one step, in the common case: nobody holds `k`
/// exclusively or waits for it, and `owner` does not hold it yet. False (nothing changed) in
/// any other case: then [`try_lock`] and [`lock_gap_of_held`].
pub fn try_next_key(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<bool, Error> {
    if t.get_u64(k + K_XOWNER)? != 0 || !queue(k).is_empty(t)? || holds_shared(t, k, owner)? {
        return Ok(false);
    }
    grant_shared(t, k, owner, NK)?;
    Ok(true)
}

/// Gives `owner`, which holds `k` (shared or exclusive), the gap before `k` too: a next-key
/// lock. A shared holder marks its holder word; an exclusive holder takes a gap lock.
pub fn lock_gap_of_held(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<(), Error> {
    match shared_word_at(t, k, owner)? {
        Some((_, w)) if w & NK != 0 => Ok(()),
        Some((Word::At(at), w)) => t.set_u64(at, w | NK),
        Some((Word::More(i), w)) => s_more(k).set(t, i, w | NK),
        None => gap_lock(t, k, owner),
    }
}

/// The gap holders of `k`: its shared holders that hold the gap too, and its gap-only holders.
pub fn gap_holders(t: &Txn<'_>, k: Off) -> Result<Vec<Off>, Error> {
    let mut v: Vec<Off> = holder_words(t, k)?
        .into_iter()
        .filter(|w| w & NK != 0)
        .map(|w| w & !NK)
        .collect();
    let first = t.get_u64(k + K_G1)?;
    if first != 0 {
        v.push(first);
        v.extend(g_more(k).items(t)?);
    }
    Ok(v)
}

/// Gives `owner` a gap lock on `k` (granted at once: gap locks conflict with nothing).
pub fn gap_lock(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<(), Error> {
    let first = t.get_u64(k + K_G1)?;
    if first == owner {
        return Ok(());
    }
    if first == 0 {
        t.set_u64(k + K_G1, owner)?;
    } else {
        if g_more(k).position(t, |o| o == owner)?.is_some() {
            return Ok(());
        }
        g_more(k).push(t, owner)?;
    }
    locks(owner).push(t, k | GAP)
}

/// Takes `owner` out of `k`'s gap holders.
fn remove_gap(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<(), Error> {
    let more = g_more(k);
    if t.get_u64(k + K_G1)? == owner {
        let rest = more.items(t)?;
        t.set_u64(k + K_G1, rest.first().copied().unwrap_or(0))?;
        if !rest.is_empty() {
            more.remove(t, 0)?;
        }
        return Ok(());
    }
    more.remove_value(t, owner)?;
    Ok(())
}

/// A new entry `k` was created in the gap before `after`: every holder of that gap gets a shared
/// lock and a gap lock on `k` (nobody else holds or waits for `k` yet).
pub fn inherit_gap(t: &mut Txn<'_>, after: Off, k: Off) -> Result<(), Error> {
    for o in gap_holders(t, after)? {
        if !holds_shared(t, k, o)? {
            grant_shared(t, k, o, NK)?;
        }
    }
    Ok(())
}

/// Takes `owner` out of `k`'s shared holders; returns whether it held the gap too.
fn remove_shared(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<bool, Error> {
    // The common cases without collecting holders: the only one, or one of the inline two.
    let (s1, s2) = (t.get_u64(k + K_S1)?, t.get_u64(k + K_S2)?);
    match s_count(t, k)? {
        1 if s1 & !NK == owner => {
            t.set_u64(k + K_S1, 0)?;
            set_s_count(t, k, 0)?;
            return Ok(s1 & NK != 0);
        }
        2 if s2 & !NK == owner => {
            t.set_u64(k + K_S2, 0)?;
            set_s_count(t, k, 1)?;
            return Ok(s2 & NK != 0);
        }
        2 if s1 & !NK == owner => {
            t.set_u64(k + K_S1, s2)?;
            t.set_u64(k + K_S2, 0)?;
            set_s_count(t, k, 1)?;
            return Ok(s1 & NK != 0);
        }
        _ => {}
    }
    let mut all = holder_words(t, k)?;
    let Some(i) = all.iter().position(|&o| o & !NK == owner) else {
        return Ok(false);
    };
    let had_gap = all.remove(i) & NK != 0;
    let more = s_more(k);
    t.set_u64(k + K_S1, all.first().copied().unwrap_or(0))?;
    t.set_u64(k + K_S2, all.get(1).copied().unwrap_or(0))?;
    more.clear(t)?;
    for &o in all.iter().skip(2) {
        more.push(t, o)?;
    }
    set_s_count(t, k, all.len() as u64)?;
    Ok(had_gap)
}

/// Releases one lock (`held` as in the owner's list: key entry, bit 0 exclusive) and wakes the
/// key's waiters; removes the entry if nothing needs it any more.
pub(super) fn release_one(t: &mut Txn<'_>, owner: Off, held: u64) -> Result<(), Error> {
    let k = held_entry(held);
    if held & GAP != 0 {
        remove_gap(t, k, owner)?;
    } else if held & EXCL != 0 {
        if t.get_u64(k + K_XOWNER)? == owner {
            t.set_u64(k + K_XOWNER, 0)?;
        }
    } else {
        remove_shared(t, k, owner)?;
    }
    t.wake(t.get_u64(k + K_HASH)?);
    keys::maybe_remove(t, k)
}

/// Releases every lock of `owner` (its pending writes must be applied or dropped first).
pub fn release_all(t: &mut Txn<'_>, owner: Off) -> Result<(), Error> {
    for h in locks(owner).items(t)? {
        release_one(t, owner, h)?;
    }
    locks(owner).clear(t)
}

/// Takes the exclusive lock of `k` for `owner` if nobody holds it (recovery of prepared
/// branches: nothing waits yet).
pub fn lock_now(t: &mut Txn<'_>, k: Off, owner: Off) -> Result<bool, Error> {
    match try_lock(t, k, owner, Mode::Exclusive, false, 0)? {
        Try::Granted => Ok(true),
        _ => Ok(false),
    }
}
