//! Shared and exclusive key locks held by their owners until released (strict two-phase
//! locking).
//!
//! Owns: who holds which key in which mode, who waits for what, lock-wait timeouts, deadlock
//! detection. Does not own: when locks are taken or released (the caller decides: reads take
//! [`Mode::Shared`], writes [`Mode::Exclusive`], `xa_prepare` calls
//! [`LockTable::release_shared`], commit and rollback [`LockTable::release_all`]).
//!
//! # Model
//!
//! A lock is held by an [`Owner`]: a branch's tag, or a unique number for a one-operation
//! transaction. Threads joined to one branch use its owner and so share its locks. A key has
//! either any number of shared holders or exactly one exclusive holder. A request by an owner
//! that already holds a mode at least as strong succeeds at once; a request for exclusive by
//! an owner holding shared is an *upgrade*.
//!
//! # Use
//!
//! * A read inside a branch: [`LockTable::acquire`] with [`Mode::Shared`]; a write: with
//!   [`Mode::Exclusive`] (which upgrades the branch's read lock, if it has one). A failed
//!   acquire leaves the branch rollback-only; its rollback calls `release_all`.
//! * `xa_prepare`: [`LockTable::release_shared`]; commit, rollback and heuristic completion:
//!   [`LockTable::release_all`]; a one-operation transaction: `release_all` once done.
//! * A prepared branch changing its tag: [`LockTable::transfer`]; recovery of prepared
//!   branches: [`LockTable::acquire_now`] in [`Mode::Exclusive`].
//!
//! # Queueing policy
//!
//! Each key has its holders and a queue of waiting requests. Two requests *conflict* when they
//! come from different owners and one of them is exclusive. A request is granted when it
//! conflicts with no lock held on the key and with no request queued *ahead* of it:
//!
//! * a new request goes to the back of the queue, so it is granted at once only if it
//!   conflicts with no holder and with no queued request at all. A stream of new shared
//!   requests therefore queues behind a waiting exclusive request instead of starving it, and
//!   requests are otherwise served first come, first served;
//! * an upgrade goes to the front, behind earlier upgrades only: it waits for the other holders
//!   alone and so takes priority over every new request. (Queued behind a waiting writer, it
//!   would deadlock at once: the writer waits for the upgrader's shared lock.) Two owners
//!   upgrading one key wait for each other's shared lock, so the second to ask gets
//!   [`LockError::Deadlock`] at once and the first goes on once the second's locks are
//!   released.
//!
//! A waiting request is granted by its own thread, which re-checks the rule each time it is
//! woken; whoever changes a key that has waiters (a release, a transfer, a request leaving the
//! queue) wakes all the waiters of the key's stripe, and those of other keys sleep again. Waits
//! end with [`LockError::Timeout`] after the given duration and with [`LockError::Aborted`]
//! when the caller's `aborted` callback says so: it is checked before anything is granted and
//! on every wake-up, and [`LockTable::wake_all`] wakes every waiter.
//!
//! # Deadlock detection is exact
//!
//! The waits-for graph has, for every waiting request of owner `w`, an edge `w → o` for every
//! owner `o` that keeps it from being granted: `o` holds a lock on the key that conflicts with
//! it, or has a conflicting request queued ahead of it. These are exactly the reasons in the
//! grant rule above, so a request with no edges is grantable and one with edges is not.
//!
//! *Every edge is a real wait.* A holder keeps its locks until its branch is done working
//! (prepare releases its shared locks, commit or rollback the rest), and a branch cannot get
//! there while one of its threads waits (XA lets a branch be prepared, committed or rolled back
//! only once no thread works in it; a rollback from elsewhere aborts the waits instead). A conflicting request queued ahead leaves the queue only by being granted — then
//! its owner holds a conflicting lock, the same edge — or by failing. So a cycle can only be
//! broken by a timeout or an abort: it is a deadlock, never a false report.
//!
//! *No cycle goes unseen.* The graph is kept equal to these edges at all times: every change
//! to a key with waiters (a grant, a release, a transfer, a request leaving the queue) brings
//! the edges of all the key's waiters up to date under the key's stripe lock and the graph's
//! lock together. Only two kinds of change can *add* an edge, and both are checked:
//!
//! * a request starting to wait adds its own edges and, for an upgrade placed at the front,
//!   edges from the conflicting requests behind it to its owner. Every new edge touches the
//!   new request's owner, so a new cycle passes through it; before the request is queued the
//!   graph is searched for such a cycle, and if there is one the request fails with
//!   [`LockError::Deadlock`] and nothing is changed (the graph stays acyclic);
//! * nothing else adds one: a request is granted at once only if it conflicts with no queued
//!   request, so its new lock blocks nobody who waits; a queued request that is granted turns
//!   the "queued ahead" edges from the requests behind it into "holder" edges to the same owner
//!   (nobody ahead of it conflicts with it, or it would not be granted); releases and failed
//!   requests only remove edges; [`LockTable::transfer`] renames an owner that does not wait.
//!
//! Edges are between owners, so a branch with several threads waits if any of them waits,
//! which is right: it releases nothing until all of them are done. An owner never waits for
//! itself.
//!
//! # Keys are 128-bit hashes
//!
//! The table never stores a key: it locks a 128-bit SipHash-1-3 of the key's bytes, keyed with
//! a random key per table (so nobody can choose keys that collide). Two requests for the same
//! key always get the same id, so a conflict is never missed; two different keys that collide
//! (chance about n²/2¹²⁹ among n keys locked at once) share one lock, which can only cause a
//! spurious wait — and so a timeout or a deadlock that involves the colliding keys.
//!
//! # Layout and cost
//!
//! * 64 key stripes, chosen by the key id, each a mutex over a map from key id to the key's
//!   holders and queue, with a condition variable its waiters sleep on. Entries exist only
//!   while a key is held or waited for; their holder lists are recycled within the stripe.
//! * 64 owner stripes, chosen by the owner, each a mutex over a map from owner to the list of
//!   its locks (key id and mode granted; an upgrade adds a second entry) and the keys its
//!   threads wait on. [`LockTable::release_all`] and [`LockTable::release_shared`] so run in
//!   time proportional to what the owner holds. Lists are recycled per thread.
//! * The waits-for graph behind its own mutex, touched only when a request must wait or a key
//!   with waiters changes.
//!
//! An uncontended lock takes the key's stripe and then the owner's stripe, allocates nothing
//! once warm, and touches no other shared state. Lock order: a key stripe, then an owner
//! stripe or the graph; never two key stripes, never an owner stripe together with the graph.
//! Everything is keyed by fixed-size values (a 128-bit key id, a 64-bit owner, a 64-bit
//! request id), so moving the table into memory shared between processes means replacing the
//! maps and the variable-length lists (holders, queue, an owner's locks, the graph's edges) with
//! fixed-size records in a shared arena — say grant records (key id, owner, mode) linked per
//! key and per owner — and the mutexes and condition variables with process-shared ones; the
//! rules and their proof stay as they are.
//!
//! # Caller contract
//!
//! * `aborted` must be cheap, must not panic and must not call into the table: it runs under
//!   the table's locks. If it says true before [`LockTable::release_all`] of the owner starts
//!   (the way a rollback from another thread should do it), a concurrent request of that owner
//!   either fails with `Aborted` or has its lock released by that `release_all`, whose call
//!   also wakes the owner's waiting threads.
//! * [`LockTable::release_shared`] and [`LockTable::transfer`] are for a branch that no thread
//!   works in (a prepared one); neither owner of a transfer may be waiting.

use crate::fxhash::{FxHashMap, FxHasher};
use std::cell::Cell;
use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Who holds a lock: a branch's tag, or a unique number for a one-operation transaction.
pub type Owner = u64;

/// How a key is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// For reading: compatible with other shared locks.
    Shared,
    /// For writing: compatible with nothing. Stronger than `Shared` (`Shared < Exclusive`).
    Exclusive,
}

impl Mode {
    /// Whether locks in these modes of two different owners cannot coexist.
    fn conflicts(self, other: Mode) -> bool {
        self == Mode::Exclusive || other == Mode::Exclusive
    }
}

/// Why a lock was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// The key stayed locked for the whole timeout.
    Timeout,
    /// Waiting would deadlock.
    Deadlock,
    /// The waiter's branch was rolled back while it waited.
    Aborted,
}

/// A key as the table knows it: a keyed 128-bit hash of its bytes.
type KeyId = u128;

const KEY_STRIPES: usize = 64;
const OWNER_STRIPES: usize = 64;
/// Emptied holder lists a key stripe keeps for reuse.
const SPARE_HOLDERS: usize = 32;
/// Owner lock lists longer than this are not kept for reuse.
const SPARE_LIST_MAX: usize = 64;

/// SipHash-c-d with 128 bits of output (Aumasson and Bernstein), keyed by `k`.
fn siphash128<const C: usize, const D: usize>(k: [u64; 2], data: &[u8]) -> u128 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    #[inline(always)]
    fn compress<const C: usize>(v: &mut [u64; 4], m: u64) {
        v[3] ^= m;
        for _ in 0..C {
            round(v);
        }
        v[0] ^= m;
    }
    let mut v = [
        0x736f_6d65_7073_6575 ^ k[0],
        0x646f_7261_6e64_6f6d ^ k[1] ^ 0xee,
        0x6c79_6765_6e65_7261 ^ k[0],
        0x7465_6462_7974_6573 ^ k[1],
    ];
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        compress::<C>(&mut v, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    compress::<C>(&mut v, u64::from_le_bytes(last) | (data.len() as u64) << 56);
    v[2] ^= 0xee;
    for _ in 0..D {
        round(&mut v);
    }
    let low = v[0] ^ v[1] ^ v[2] ^ v[3];
    v[1] ^= 0xdd;
    for _ in 0..D {
        round(&mut v);
    }
    let high = v[0] ^ v[1] ^ v[2] ^ v[3];
    (high as u128) << 64 | low as u128
}

/// A request waiting in a key's queue.
#[derive(Debug, Clone, Copy)]
struct Request {
    /// Unique in the table: the request's node in the waits-for graph.
    id: u64,
    owner: Owner,
    mode: Mode,
    /// The owner held the key shared when it asked for exclusive.
    upgrade: bool,
}

/// One key that is held or waited for.
#[derive(Default)]
struct KeyState {
    /// One entry per holding owner: any number `Shared`, or one `Exclusive` alone.
    holders: Vec<(Owner, Mode)>,
    /// Waiting requests in the order they are served: upgrades first, then the others in
    /// arrival order.
    queue: Vec<Request>,
}

impl KeyState {
    /// The mode `owner` holds, if any.
    fn held(&self, owner: Owner) -> Option<Mode> {
        self.holders.iter().find(|h| h.0 == owner).map(|h| h.1)
    }

    /// The owners that keep a request of `owner` for `mode`, with the first `ahead` queued
    /// requests before it, from being granted now: its edges in the waits-for graph. An owner
    /// may come more than once.
    fn blockers(&self, owner: Owner, mode: Mode, ahead: usize) -> impl Iterator<Item = Owner> + '_ {
        let queued = self.queue[..ahead].iter().map(|r| (r.owner, r.mode));
        self.holders
            .iter()
            .copied()
            .chain(queued)
            .filter(move |&(o, m)| o != owner && m.conflicts(mode))
            .map(|(o, _)| o)
    }

    fn blocked(&self, owner: Owner, mode: Mode, ahead: usize) -> bool {
        self.blockers(owner, mode, ahead).next().is_some()
    }

    /// Gives `owner` at least `mode`.
    fn grant(&mut self, owner: Owner, mode: Mode) {
        match self.holders.iter_mut().find(|h| h.0 == owner) {
            Some(h) => h.1 = h.1.max(mode),
            None => self.holders.push((owner, mode)),
        }
    }

    fn position(&self, request: u64) -> usize {
        self.queue
            .iter()
            .position(|r| r.id == request)
            .expect("a waiting request stays queued until its thread removes it")
    }
}

#[derive(Default)]
struct Stripe {
    keys: FxHashMap<KeyId, KeyState>,
    /// Emptied holder lists, for reuse.
    spare: Vec<Vec<(Owner, Mode)>>,
}

impl Stripe {
    fn entry(&mut self, id: KeyId) -> &mut KeyState {
        let spare = &mut self.spare;
        self.keys.entry(id).or_insert_with(|| KeyState {
            holders: spare.pop().unwrap_or_default(),
            queue: Vec::new(),
        })
    }

    fn get(&mut self, id: KeyId) -> &mut KeyState {
        self.keys
            .get_mut(&id)
            .expect("a key with a waiting request has an entry")
    }

    /// Forgets `id` if nobody holds or waits for it.
    fn tidy(&mut self, id: KeyId) {
        if let MapEntry::Occupied(e) = self.keys.entry(id) {
            if e.get().holders.is_empty() && e.get().queue.is_empty() {
                recycle_holders(&mut self.spare, e.remove().holders);
            }
        }
    }
}

/// Keeps an emptied holder list for reuse, if it is small and there are not many already.
fn recycle_holders(spare: &mut Vec<Vec<(Owner, Mode)>>, holders: Vec<(Owner, Mode)>) {
    if spare.len() < SPARE_HOLDERS && holders.capacity() <= 8 {
        spare.push(holders);
    }
}

/// A key stripe: aligned to its own cache lines so that stripes do not share them.
#[repr(align(128))]
#[derive(Default)]
struct KeySlot {
    stripe: Mutex<Stripe>,
    /// Signalled when a key of the stripe that has waiters changes.
    changed: Condvar,
}

/// What the table knows of one owner.
#[derive(Default)]
struct OwnerState {
    /// Every lock granted, as (key, mode granted); an upgrade adds a second entry.
    locks: Vec<(KeyId, Mode)>,
    /// The key of each of the owner's requests that waits now.
    waits: Vec<KeyId>,
}

#[repr(align(128))]
#[derive(Default)]
struct OwnerSlot(Mutex<FxHashMap<Owner, OwnerState>>);

thread_local! {
    /// An emptied owner lock list, for the next owner this thread gives a first lock.
    static SPARE_LIST: Cell<Vec<(KeyId, Mode)>> = const { Cell::new(Vec::new()) };
}

fn new_list() -> Vec<(KeyId, Mode)> {
    SPARE_LIST.try_with(Cell::take).unwrap_or_default()
}

fn recycle_list(mut list: Vec<(KeyId, Mode)>) {
    if list.capacity() <= SPARE_LIST_MAX {
        list.clear();
        let _ = SPARE_LIST.try_with(|s| s.set(list));
    }
}

/// The waits-for graph: for every waiting request, its owner and the owners it waits for.
#[derive(Default)]
struct Graph {
    waits: FxHashMap<u64, (Owner, Vec<Owner>)>,
    /// The waiting requests of each owner that waits.
    by_owner: FxHashMap<Owner, Vec<u64>>,
}

impl Graph {
    /// Sets the edges of the waiting request `r`.
    fn set(&mut self, r: &Request, to: impl Iterator<Item = Owner>) {
        match self.waits.entry(r.id) {
            MapEntry::Occupied(e) => {
                let edges = &mut e.into_mut().1;
                edges.clear();
                edges.extend(to);
            }
            MapEntry::Vacant(e) => {
                e.insert((r.owner, to.collect()));
                self.by_owner.entry(r.owner).or_default().push(r.id);
            }
        }
    }

    fn remove(&mut self, request: u64) {
        let Some((owner, _)) = self.waits.remove(&request) else {
            return;
        };
        if let MapEntry::Occupied(mut e) = self.by_owner.entry(owner) {
            e.get_mut().retain(|&r| r != request);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The owners `owner` waits for.
    fn successors(&self, owner: Owner) -> impl Iterator<Item = Owner> + '_ {
        self.by_owner
            .get(&owner)
            .into_iter()
            .flatten()
            .flat_map(|r| self.waits[r].1.iter().copied())
    }

    /// Whether adding edges `owner → out` and `into → owner` to the graph, which has no cycle,
    /// would make one. Any new cycle passes through `owner`.
    fn closes_cycle(&self, owner: Owner, out: &[Owner], into: &[Owner]) -> bool {
        let mut stack: Vec<Owner> = out.iter().copied().chain(self.successors(owner)).collect();
        let mut seen: HashSet<Owner, BuildHasherDefault<FxHasher>> = HashSet::default();
        while let Some(o) = stack.pop() {
            if o == owner || into.contains(&o) {
                return true;
            }
            if seen.insert(o) {
                stack.extend(self.successors(o));
            }
        }
        false
    }

    /// Brings the edges of every request waiting on key `k` up to date.
    fn sync(&mut self, k: &KeyState) {
        for (i, r) in k.queue.iter().enumerate() {
            self.set(r, k.blockers(r.owner, r.mode, i));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under these locks can come only from a failed allocation or from a caller's
    // `aborted` callback, which runs before its critical section changes anything: the state
    // is consistent and a poisoned lock still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lock table of one store.
pub struct LockTable {
    /// The SipHash key for key ids.
    seed: [u64; 2],
    keys: Box<[KeySlot]>,
    owners: Box<[OwnerSlot]>,
    graph: Mutex<Graph>,
    next_request: AtomicU64,
}

impl Default for LockTable {
    fn default() -> LockTable {
        LockTable::new()
    }
}

impl LockTable {
    /// An empty table.
    pub fn new() -> LockTable {
        let random = RandomState::new();
        LockTable {
            seed: [random.hash_one(1u8), random.hash_one(2u8)],
            keys: (0..KEY_STRIPES).map(|_| KeySlot::default()).collect(),
            owners: (0..OWNER_STRIPES).map(|_| OwnerSlot::default()).collect(),
            graph: Mutex::default(),
            next_request: AtomicU64::new(0),
        }
    }

    fn key_id(&self, key: &[u8]) -> KeyId {
        siphash128::<1, 3>(self.seed, key)
    }

    fn key_slot(&self, id: KeyId) -> &KeySlot {
        &self.keys[(id >> 64) as usize % KEY_STRIPES]
    }

    fn owner_slot(&self, owner: Owner) -> &Mutex<FxHashMap<Owner, OwnerState>> {
        let mixed = owner.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.owners[(mixed >> 32) as usize % OWNER_STRIPES].0
    }

    /// Locks `key` in `mode` for `owner`, waiting up to `timeout` (see the module doc for the
    /// queueing policy). Succeeds at once if the owner already holds the key in `mode` or a
    /// stronger one. Fails with `Deadlock` at once if waiting would close a cycle, with
    /// `Timeout` if the lock is not granted in time, with `Aborted` as soon as `aborted` says
    /// true (checked before granting and on every wake-up).
    pub fn acquire(
        &self,
        owner: Owner,
        key: &[u8],
        mode: Mode,
        timeout: Duration,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(), LockError> {
        let id = self.key_id(key);
        let slot = self.key_slot(id);
        let mut s = lock(&slot.stripe);
        let k = s.entry(id);
        let held = k.held(owner);
        if held >= Some(mode) {
            return if aborted() {
                Err(LockError::Aborted)
            } else {
                Ok(())
            };
        }
        if !k.blocked(owner, mode, k.queue.len()) {
            let result = self.grant(k, id, owner, mode, false, aborted);
            if result.is_err() {
                s.tidy(id);
            }
            return result;
        }
        self.wait(s, slot, id, owner, mode, held.is_some(), timeout, aborted)
    }

    /// Locks `key` in `mode` for `owner` only if that needs no wait (as [`LockTable::acquire`]
    /// with a zero timeout would grant it); used at recovery for prepared branches.
    pub fn acquire_now(&self, owner: Owner, key: &[u8], mode: Mode) -> bool {
        let id = self.key_id(key);
        let mut s = lock(&self.key_slot(id).stripe);
        let k = s.entry(id);
        if k.held(owner) >= Some(mode) {
            return true;
        }
        let granted = !k.blocked(owner, mode, k.queue.len())
            && self.grant(k, id, owner, mode, false, &|| false).is_ok();
        if !granted {
            s.tidy(id);
        }
        granted
    }

    /// Grants `mode` on key `id` (state `k`, under its stripe lock) to `owner` and lists it
    /// with the owner, unless `aborted` says true under the owner's lock: so a grant either
    /// precedes a `release_all` of the owner (which then releases it) or sees the abort that
    /// came before that `release_all`. `waited`: the owner's wait on `id` ends here.
    fn grant(
        &self,
        k: &mut KeyState,
        id: KeyId,
        owner: Owner,
        mode: Mode,
        waited: bool,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(), LockError> {
        let mut owners = lock(self.owner_slot(owner));
        let aborted = aborted();
        let st = owners.entry(owner).or_insert_with(|| OwnerState {
            locks: new_list(),
            waits: Vec::new(),
        });
        if waited {
            if let Some(i) = st.waits.iter().position(|&w| w == id) {
                st.waits.swap_remove(i);
            }
        }
        if aborted {
            if st.locks.is_empty() && st.waits.is_empty() {
                let st = owners.remove(&owner).expect("just found");
                recycle_list(st.locks);
            }
            return Err(LockError::Aborted);
        }
        if k.held(owner) < Some(mode) {
            k.grant(owner, mode);
            st.locks.push((id, mode));
        }
        Ok(())
    }

    /// The slow path of [`LockTable::acquire`]: the request conflicts with a holder or a
    /// queued request of another owner.
    #[allow(clippy::too_many_arguments)]
    fn wait(
        &self,
        mut s: MutexGuard<'_, Stripe>,
        slot: &KeySlot,
        id: KeyId,
        owner: Owner,
        mode: Mode,
        upgrade: bool,
        timeout: Duration,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(), LockError> {
        // Tell the owner's `release_all` where this thread waits, so that it wakes it; the
        // abort check under the owner's lock makes sure that no such call is missed.
        {
            let mut owners = lock(self.owner_slot(owner));
            if aborted() {
                drop(owners);
                s.tidy(id);
                return Err(LockError::Aborted);
            }
            owners
                .entry(owner)
                .or_insert_with(|| OwnerState {
                    locks: new_list(),
                    waits: Vec::new(),
                })
                .waits
                .push(id);
        }
        let k = s.get(id);
        let at = match upgrade {
            true => k.queue.iter().take_while(|r| r.upgrade).count(),
            false => k.queue.len(),
        };
        let request = Request {
            id: self.next_request.fetch_add(1, Ordering::Relaxed),
            owner,
            mode,
            upgrade,
        };
        {
            let mut g = lock(&self.graph);
            let out: Vec<Owner> = k.blockers(owner, mode, at).collect();
            let into: Vec<Owner> = k.queue[at..]
                .iter()
                .filter(|r| r.owner != owner && r.mode.conflicts(mode))
                .map(|r| r.owner)
                .collect();
            let refused = if g.closes_cycle(owner, &out, &into) {
                Some(LockError::Deadlock)
            } else if timeout.is_zero() {
                Some(LockError::Timeout)
            } else {
                None
            };
            if let Some(e) = refused {
                drop(g);
                self.end_wait(owner, id);
                s.tidy(id);
                return Err(e);
            }
            k.queue.insert(at, request);
            g.sync(k);
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let k = s.get(id);
            let at = k.position(request.id);
            if k.held(owner) >= Some(mode) || !k.blocked(owner, mode, at) {
                return self.finish(&mut s, slot, id, request, Ok(()), aborted);
            }
            s = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return self.finish(
                            &mut s,
                            slot,
                            id,
                            request,
                            Err(LockError::Timeout),
                            aborted,
                        );
                    }
                    slot.changed
                        .wait_timeout(s, left)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0)
                }
                None => slot.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
            };
            if aborted() {
                return self.finish(&mut s, slot, id, request, Err(LockError::Aborted), aborted);
            }
        }
    }

    /// Takes the waiting `request` on key `id` out of the queue and ends its wait with
    /// `outcome`: `Ok` grants it (unless `aborted` says true meanwhile).
    fn finish(
        &self,
        s: &mut Stripe,
        slot: &KeySlot,
        id: KeyId,
        request: Request,
        outcome: Result<(), LockError>,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(), LockError> {
        let k = s.get(id);
        let at = k.position(request.id);
        k.queue.remove(at);
        let result = match outcome {
            Ok(()) => self.grant(k, id, request.owner, request.mode, true, aborted),
            Err(e) => {
                self.end_wait(request.owner, id);
                Err(e)
            }
        };
        {
            let mut g = lock(&self.graph);
            g.remove(request.id);
            g.sync(k);
        }
        if !k.queue.is_empty() {
            // A failed request may have held up those behind it; a granted one may be what
            // another thread of its owner waits for.
            slot.changed.notify_all();
        }
        s.tidy(id);
        result
    }

    /// Forgets that `owner` waits on `id` (once).
    fn end_wait(&self, owner: Owner, id: KeyId) {
        let mut owners = lock(self.owner_slot(owner));
        if let MapEntry::Occupied(mut e) = owners.entry(owner) {
            let st = e.get_mut();
            if let Some(i) = st.waits.iter().position(|&w| w == id) {
                st.waits.swap_remove(i);
            }
            if st.locks.is_empty() && st.waits.is_empty() {
                recycle_list(e.remove().locks);
            }
        }
    }

    /// Releases `owner`'s lock on `id` (only if shared, with `shared_only`) and wakes the
    /// key's waiters if it has any.
    fn release_key(&self, owner: Owner, id: KeyId, shared_only: bool) {
        let slot = self.key_slot(id);
        let mut s = lock(&slot.stripe);
        let s = &mut *s;
        let MapEntry::Occupied(mut e) = s.keys.entry(id) else {
            return;
        };
        let k = e.get_mut();
        let Some(i) = k.holders.iter().position(|h| h.0 == owner) else {
            return;
        };
        if shared_only && k.holders[i].1 == Mode::Exclusive {
            return;
        }
        k.holders.swap_remove(i);
        if !k.queue.is_empty() {
            lock(&self.graph).sync(k);
            slot.changed.notify_all();
        } else if k.holders.is_empty() {
            recycle_holders(&mut s.spare, e.remove().holders);
        }
    }

    /// Releases every lock of `owner`, and wakes the owner's own waiting threads so that they
    /// see their `aborted` (a rollback from another thread).
    pub fn release_all(&self, owner: Owner) {
        let (locks, waits) = {
            let mut owners = lock(self.owner_slot(owner));
            let MapEntry::Occupied(mut e) = owners.entry(owner) else {
                return;
            };
            if e.get().waits.is_empty() {
                let st = e.remove();
                (st.locks, st.waits)
            } else {
                let st = e.get_mut();
                (std::mem::take(&mut st.locks), st.waits.clone())
            }
        };
        for &(id, _) in &locks {
            self.release_key(owner, id, false);
        }
        recycle_list(locks);
        for id in waits {
            let slot = self.key_slot(id);
            // Under the stripe lock: the waiter is then asleep or has yet to check `aborted`.
            let _s = lock(&slot.stripe);
            slot.changed.notify_all();
        }
    }

    /// Releases the shared locks of `owner` and keeps its exclusive ones (at `xa_prepare`:
    /// the branch reads no more).
    pub fn release_shared(&self, owner: Owner) {
        let mut shared = Vec::new();
        {
            let mut owners = lock(self.owner_slot(owner));
            let MapEntry::Occupied(mut e) = owners.entry(owner) else {
                return;
            };
            let st = e.get_mut();
            st.locks.retain(|&(id, mode)| {
                if mode == Mode::Shared {
                    shared.push(id);
                }
                mode == Mode::Exclusive
            });
            if st.locks.is_empty() && st.waits.is_empty() {
                recycle_list(e.remove().locks);
            }
        }
        // A key upgraded to exclusive has a shared entry too: `release_key` keeps its lock.
        for id in shared {
            self.release_key(owner, id, true);
        }
    }

    /// Hands every lock of `from` to `to` (a prepared branch that changes its tag): no key is
    /// unlocked meanwhile. Neither owner may be waiting.
    pub fn transfer(&self, from: Owner, to: Owner) {
        if from == to {
            return;
        }
        let locks = {
            let mut owners = lock(self.owner_slot(from));
            let MapEntry::Occupied(mut e) = owners.entry(from) else {
                return;
            };
            debug_assert!(e.get().waits.is_empty(), "transfer of a waiting owner");
            if e.get().waits.is_empty() {
                e.remove().locks
            } else {
                std::mem::take(&mut e.get_mut().locks)
            }
        };
        for &(id, _) in &locks {
            let slot = self.key_slot(id);
            let mut s = lock(&slot.stripe);
            let Some(k) = s.keys.get_mut(&id) else {
                continue;
            };
            if let Some(i) = k.holders.iter().position(|h| h.0 == from) {
                let (_, mode) = k.holders.swap_remove(i);
                k.grant(to, mode);
                if !k.queue.is_empty() {
                    lock(&self.graph).sync(k);
                }
            }
        }
        let mut owners = lock(self.owner_slot(to));
        match owners.entry(to) {
            MapEntry::Occupied(mut e) => e.get_mut().locks.extend(locks),
            MapEntry::Vacant(e) => {
                e.insert(OwnerState {
                    locks,
                    waits: Vec::new(),
                });
            }
        }
    }

    /// How many lock requests are waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.graph).waits.len()
    }

    /// Wakes all waiters so they re-check their abort condition.
    pub fn wake_all(&self) {
        for slot in self.keys.iter() {
            let _s = lock(&slot.stripe);
            slot.changed.notify_all();
        }
    }

    /// The owners holding `key`, with their modes, by owner.
    pub fn holders(&self, key: &[u8]) -> Vec<(Owner, Mode)> {
        let id = self.key_id(key);
        let s = lock(&self.key_slot(id).stripe);
        let mut holders = s
            .keys
            .get(&id)
            .map(|k| k.holders.clone())
            .unwrap_or_default();
        holders.sort_unstable();
        holders
    }

    /// The exclusive holder of `key`, if any.
    pub fn holder(&self, key: &[u8]) -> Option<Owner> {
        self.holders(key)
            .into_iter()
            .find(|h| h.1 == Mode::Exclusive)
            .map(|h| h.0)
    }

    /// Whether the table knows of no key, owner or wait at all.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.keys.iter().all(|s| lock(&s.stripe).keys.is_empty())
            && self.owners.iter().all(|o| lock(&o.0).is_empty())
            && lock(&self.graph).waits.is_empty()
            && lock(&self.graph).by_owner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};

    const NEVER: &dyn Fn() -> bool = &|| false;
    const LONG: Duration = Duration::from_secs(30);
    const ZERO: Duration = Duration::ZERO;
    use Mode::{Exclusive as X, Shared as S};

    /// Waits until `n` requests wait in `t`.
    fn until_waiting(t: &LockTable, n: usize) {
        let start = Instant::now();
        while t.waiting() != n {
            assert!(start.elapsed() < LONG, "never {n} waiting");
            thread::yield_now();
        }
    }

    /// Starts a thread asking `key` in `mode` for `owner` (30 s timeout) and waits until it
    /// waits (`waiting` is then `n`).
    fn waiter(
        t: &Arc<LockTable>,
        owner: Owner,
        key: &'static [u8],
        mode: Mode,
        n: usize,
    ) -> JoinHandle<Result<(), LockError>> {
        let t2 = t.clone();
        let h = thread::spawn(move || t2.acquire(owner, key, mode, LONG, NEVER));
        until_waiting(t, n);
        h
    }

    /// Lets a waiter that should stay blocked run a little, and checks that it did.
    fn still_blocked(h: &JoinHandle<Result<(), LockError>>) {
        thread::sleep(Duration::from_millis(30));
        assert!(!h.is_finished());
    }

    #[test]
    fn siphash_reference_vectors() {
        // SipHash-2-4-128 of 0, 1, 2, ... with key 0, 1, ... 15 (the reference vectors).
        let k = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let input: Vec<u8> = (0..64).collect();
        let want: [(usize, [u8; 16]); 5] = [
            (
                0,
                [
                    0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7,
                    0x55, 0x02, 0x93,
                ],
            ),
            (
                1,
                [
                    0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b,
                    0x22, 0xfc, 0x45,
                ],
            ),
            (
                8,
                [
                    0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3,
                    0x14, 0x97, 0xb4,
                ],
            ),
            (
                15,
                [
                    0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97,
                    0xcf, 0xc3, 0xd9,
                ],
            ),
            (
                63,
                [
                    0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97,
                    0x3f, 0xbd, 0x7c,
                ],
            ),
        ];
        for (len, bytes) in want {
            assert_eq!(
                siphash128::<2, 4>(k, &input[..len]).to_le_bytes(),
                bytes,
                "{len}"
            );
        }
        let t = LockTable::new();
        assert_eq!(t.key_id(b"k"), t.key_id(b"k"));
        assert_ne!(t.key_id(b"k"), t.key_id(b"k\0"));
    }

    #[test]
    fn shared_locks_are_compatible() {
        let t = LockTable::new();
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"k", S, ZERO, NEVER).unwrap();
        assert_eq!(t.holders(b"k"), vec![(1, S), (2, S)]);
        assert_eq!(t.holder(b"k"), None);
        t.release_all(1);
        assert_eq!(t.holders(b"k"), vec![(2, S)]);
        t.release_all(2);
        assert_eq!(t.holders(b"k"), vec![]);
    }

    #[test]
    fn reader_blocks_writer() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        assert_eq!(t.acquire(2, b"k", X, ZERO, NEVER), Err(LockError::Timeout));
        let w = waiter(&t, 2, b"k", X, 1);
        still_blocked(&w);
        t.release_all(1);
        assert_eq!(w.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(2, X)]);
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn writer_blocks_reader() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        assert_eq!(t.acquire(2, b"k", S, ZERO, NEVER), Err(LockError::Timeout));
        let r = waiter(&t, 2, b"k", S, 1);
        still_blocked(&r);
        t.release_all(1);
        assert_eq!(r.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(2, S)]);
    }

    #[test]
    fn reentrant() {
        let t = LockTable::new();
        t.acquire(1, b"x", X, ZERO, NEVER).unwrap();
        t.acquire(1, b"x", S, ZERO, NEVER).unwrap();
        t.acquire(1, b"x", X, ZERO, NEVER).unwrap();
        assert_eq!(t.holders(b"x"), vec![(1, X)]);
        t.acquire(1, b"s", S, ZERO, NEVER).unwrap();
        t.acquire(1, b"s", S, ZERO, NEVER).unwrap();
        assert_eq!(t.holders(b"s"), vec![(1, S)]);
        assert!(t.acquire_now(1, b"x", S));
        assert!(t.acquire_now(1, b"x", Mode::Exclusive));
        // Once aborted, even a lock the owner holds is refused.
        assert_eq!(
            t.acquire(1, b"x", S, ZERO, &|| true),
            Err(LockError::Aborted)
        );
        t.release_all(1);
        assert_eq!(t.holders(b"x"), vec![]);
        assert_eq!(t.holders(b"s"), vec![]);
    }

    #[test]
    fn lock_now_never_waits() {
        let t = LockTable::new();
        assert!(t.acquire_now(1, b"k", S));
        assert!(t.acquire_now(2, b"k", S));
        assert!(!t.acquire_now(3, b"k", X));
        assert!(!t.acquire_now(1, b"k", X));
        t.release_all(2);
        assert!(t.acquire_now(1, b"k", X));
        assert!(!t.acquire_now(3, b"k", Mode::Exclusive));
        assert!(t.acquire_now(3, b"j", Mode::Exclusive));
        assert_eq!(t.holder(b"k"), Some(1));
        assert_eq!(t.holder(b"j"), Some(3));
    }

    #[test]
    fn upgrade_alone() {
        let t = LockTable::new();
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
        assert_eq!(t.acquire(2, b"k", S, ZERO, NEVER), Err(LockError::Timeout));
        // The upgrade's second list entry does no harm.
        t.release_shared(1);
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
        t.release_all(1);
        assert_eq!(t.holders(b"k"), vec![]);
    }

    #[test]
    fn upgrade_waits_for_the_other_reader() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"k", S, ZERO, NEVER).unwrap();
        let u = waiter(&t, 1, b"k", X, 1);
        still_blocked(&u);
        t.release_all(2);
        assert_eq!(u.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
    }

    #[test]
    fn two_upgrades_deadlock_at_once() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"k", S, ZERO, NEVER).unwrap();
        let first = waiter(&t, 1, b"k", X, 1);
        let start = Instant::now();
        assert_eq!(t.acquire(2, b"k", X, LONG, NEVER), Err(LockError::Deadlock));
        assert!(start.elapsed() < Duration::from_secs(5));
        still_blocked(&first);
        // The failed owner's branch rolls back.
        t.release_all(2);
        assert_eq!(first.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn upgrade_goes_ahead_of_waiting_writers() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"k", S, ZERO, NEVER).unwrap();
        let w = waiter(&t, 3, b"k", X, 1);
        // Behind 3 it would deadlock (3 waits for 1's shared lock); ahead it waits for 2 only.
        let u = waiter(&t, 1, b"k", X, 2);
        t.release_all(2);
        assert_eq!(u.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
        still_blocked(&w);
        t.release_all(1);
        assert_eq!(w.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(3, X)]);
    }

    #[test]
    fn two_key_deadlock_with_mixed_modes() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"a", X, ZERO, NEVER).unwrap();
        t.acquire(2, b"b", S, ZERO, NEVER).unwrap();
        // 1 waits for 2's shared lock on b ...
        let w = waiter(&t, 1, b"b", X, 1);
        // ... so 2 reading a, which 1 writes, closes the cycle.
        assert_eq!(t.acquire(2, b"a", S, LONG, NEVER), Err(LockError::Deadlock));
        // Reading b again is no wait at all.
        t.acquire(2, b"b", S, ZERO, NEVER).unwrap();
        t.release_all(2);
        assert_eq!(w.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"b"), vec![(1, X)]);
    }

    #[test]
    fn deadlock_through_a_queued_request() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"a", S, ZERO, NEVER).unwrap();
        t.acquire(3, b"c", X, ZERO, NEVER).unwrap();
        // 2 waits for 1's shared lock on a; 3's read of a, compatible with 1's lock, waits
        // behind 2's queued write.
        let w2 = waiter(&t, 2, b"a", X, 1);
        let w3 = waiter(&t, 3, b"a", S, 2);
        // 1 waiting for 3 would close 1 → 3 → 2 → 1.
        assert_eq!(t.acquire(1, b"c", S, LONG, NEVER), Err(LockError::Deadlock));
        t.release_all(1);
        assert_eq!(w2.join().unwrap(), Ok(()));
        still_blocked(&w3);
        t.release_all(2);
        assert_eq!(w3.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"a"), vec![(3, S)]);
    }

    #[test]
    fn no_deadlock_reported_falsely() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"a", X, ZERO, NEVER).unwrap();
        t.acquire(2, b"b", X, ZERO, NEVER).unwrap();
        // A wait that ended (timeout, abort) leaves no edge behind.
        assert_eq!(
            t.acquire(2, b"a", S, Duration::from_millis(10), NEVER),
            Err(LockError::Timeout)
        );
        assert_eq!(
            t.acquire(2, b"a", S, ZERO, &|| true),
            Err(LockError::Aborted)
        );
        assert_eq!(t.acquire(1, b"b", S, ZERO, NEVER), Err(LockError::Timeout));
        // A released lock leaves no edge behind either: 3 waits for 1 and 2 on c ...
        t.acquire(1, b"c", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"c", S, ZERO, NEVER).unwrap();
        let w3 = waiter(&t, 3, b"c", X, 1);
        t.release_shared(2);
        // ... 2 waiting for 3 closes no cycle once 2 released c.
        let w2 = {
            t.acquire(3, b"d", X, ZERO, NEVER).unwrap();
            waiter(&t, 2, b"d", S, 2)
        };
        // Readers of a key that only readers hold never wait for each other.
        t.acquire(4, b"e", S, ZERO, NEVER).unwrap();
        t.acquire(5, b"e", S, ZERO, NEVER).unwrap();
        t.release_all(1);
        assert_eq!(w3.join().unwrap(), Ok(()));
        t.release_all(3);
        assert_eq!(w2.join().unwrap(), Ok(()));
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn timeout_on_a_shared_request() {
        let t = LockTable::new();
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        let start = Instant::now();
        let wait = Duration::from_millis(50);
        assert_eq!(t.acquire(2, b"k", S, wait, NEVER), Err(LockError::Timeout));
        assert!(start.elapsed() >= wait);
        assert_eq!(t.waiting(), 0);
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
    }

    #[test]
    fn release_shared_keeps_exclusive_locks() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"read", S, ZERO, NEVER).unwrap();
        t.acquire(1, b"written", X, ZERO, NEVER).unwrap();
        let on_read = waiter(&t, 2, b"read", X, 1);
        let on_written = waiter(&t, 3, b"written", X, 2);
        t.release_shared(1);
        assert_eq!(on_read.join().unwrap(), Ok(()));
        still_blocked(&on_written);
        assert_eq!(t.holders(b"written"), vec![(1, X)]);
        assert_eq!(t.waiting(), 1);
        t.release_all(1);
        assert_eq!(on_written.join().unwrap(), Ok(()));
    }

    #[test]
    fn transfer_hands_over_every_lock() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"a", X, ZERO, NEVER).unwrap();
        t.acquire(1, b"b", S, ZERO, NEVER).unwrap();
        t.acquire(2, b"c", X, ZERO, NEVER).unwrap();
        let w = waiter(&t, 2, b"a", X, 1);
        t.transfer(1, 9);
        assert_eq!(t.holders(b"a"), vec![(9, X)]);
        assert_eq!(t.holders(b"b"), vec![(9, S)]);
        // 2 now waits for 9, not for 1.
        assert_eq!(t.acquire(9, b"c", S, LONG, NEVER), Err(LockError::Deadlock));
        assert_eq!(t.acquire(1, b"c", S, ZERO, NEVER), Err(LockError::Timeout));
        t.release_all(1);
        still_blocked(&w);
        t.release_all(9);
        assert_eq!(w.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"b"), vec![]);
    }

    #[test]
    fn new_readers_do_not_starve_a_writer() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        let w = waiter(&t, 2, b"k", X, 1);
        // The key is only read, but a reader arriving now would keep the writer waiting.
        assert_eq!(t.acquire(3, b"k", S, ZERO, NEVER), Err(LockError::Timeout));
        let r = waiter(&t, 3, b"k", S, 2);
        // The holder may still read again.
        t.acquire(1, b"k", S, ZERO, NEVER).unwrap();
        t.release_all(1);
        assert_eq!(w.join().unwrap(), Ok(()));
        still_blocked(&r);
        t.release_all(2);
        assert_eq!(r.join().unwrap(), Ok(()));
    }

    #[test]
    fn threads_of_one_owner_share_its_locks() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        let a = waiter(&t, 2, b"k", X, 1);
        let b = waiter(&t, 2, b"k", S, 2);
        t.release_all(1);
        assert_eq!(a.join().unwrap(), Ok(()));
        assert_eq!(b.join().unwrap(), Ok(()));
        assert_eq!(t.holders(b"k"), vec![(2, X)]);
        t.release_all(2);
        assert_eq!(t.holders(b"k"), vec![]);
    }

    #[test]
    fn abort_ends_a_wait() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let (t2, f2) = (t.clone(), flag.clone());
        let w = thread::spawn(move || t2.acquire(2, b"k", S, LONG, &|| f2.load(Ordering::SeqCst)));
        until_waiting(&t, 1);
        flag.store(true, Ordering::SeqCst);
        t.wake_all();
        assert_eq!(w.join().unwrap(), Err(LockError::Aborted));
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn release_all_wakes_the_owners_own_waiters() {
        let t = Arc::new(LockTable::new());
        t.acquire(1, b"k", X, ZERO, NEVER).unwrap();
        t.acquire(2, b"j", X, ZERO, NEVER).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let (t2, f2) = (t.clone(), flag.clone());
        let w = thread::spawn(move || t2.acquire(2, b"k", X, LONG, &|| f2.load(Ordering::SeqCst)));
        until_waiting(&t, 1);
        // A rollback from elsewhere: the abort first, then the release.
        flag.store(true, Ordering::SeqCst);
        t.release_all(2);
        assert_eq!(w.join().unwrap(), Err(LockError::Aborted));
        assert_eq!(t.holders(b"j"), vec![]);
        assert_eq!(t.holders(b"k"), vec![(1, X)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(Owner, u8, Mode),
        AcquireNow(Owner, u8, Mode),
        ReleaseAll(Owner),
        ReleaseShared(Owner),
        Transfer(Owner, Owner),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let owner = 0u64..4;
        let key = 0u8..3;
        let mode = prop_oneof![Just(S), Just(X)];
        prop_oneof![
            6 => (owner.clone(), key.clone(), mode.clone()).prop_map(|(o, k, m)| Op::Acquire(o, k, m)),
            2 => (owner.clone(), key, mode).prop_map(|(o, k, m)| Op::AcquireNow(o, k, m)),
            2 => owner.clone().prop_map(Op::ReleaseAll),
            1 => owner.clone().prop_map(Op::ReleaseShared),
            1 => (owner.clone(), owner).prop_map(|(f, t)| Op::Transfer(f, t)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            // No regression files: this module owns only src/lock.rs.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Without waits (zero timeouts, one thread), the table agrees with a plain map of
        /// holders, and forgets everything once every owner released.
        #[test]
        fn model_of_grants_and_releases(ops in proptest::collection::vec(op_strategy(), 1..80)) {
            let t = LockTable::new();
            let mut model: BTreeMap<u8, BTreeMap<Owner, Mode>> = BTreeMap::new();
            let grantable = |model: &BTreeMap<u8, BTreeMap<Owner, Mode>>, o: Owner, k: u8, m: Mode| {
                !model.get(&k).is_some_and(|h| h.iter().any(|(&h, &hm)| h != o && hm.conflicts(m)))
            };
            for op in ops {
                match op {
                    Op::Acquire(o, k, m) | Op::AcquireNow(o, k, m) => {
                        let ok = grantable(&model, o, k, m);
                        if ok {
                            let held = model.entry(k).or_default().entry(o).or_insert(m);
                            *held = (*held).max(m);
                        }
                        if let Op::Acquire(..) = op {
                            let want = if ok { Ok(()) } else { Err(LockError::Timeout) };
                            prop_assert_eq!(t.acquire(o, &[k], m, ZERO, NEVER), want);
                        } else {
                            prop_assert_eq!(t.acquire_now(o, &[k], m), ok);
                        }
                    }
                    Op::ReleaseAll(o) => {
                        t.release_all(o);
                        for h in model.values_mut() {
                            h.remove(&o);
                        }
                    }
                    Op::ReleaseShared(o) => {
                        t.release_shared(o);
                        for h in model.values_mut() {
                            if h.get(&o) == Some(&S) {
                                h.remove(&o);
                            }
                        }
                    }
                    Op::Transfer(from, to) => {
                        t.transfer(from, to);
                        for h in model.values_mut() {
                            if let Some(m) = h.remove(&from) {
                                let held = h.entry(to).or_insert(m);
                                *held = (*held).max(m);
                            }
                        }
                    }
                }
                for k in 0..3u8 {
                    let want: Vec<(Owner, Mode)> = model
                        .get(&k)
                        .map(|h| h.iter().map(|(&o, &m)| (o, m)).collect())
                        .unwrap_or_default();
                    prop_assert_eq!(t.holders(&[k]), want);
                }
            }
            for o in 0..4 {
                t.release_all(o);
            }
            prop_assert!(t.is_empty());
        }
    }

    /// As above with branches of two threads each (joined threads share their owner's locks
    /// and waits): the table's view stays compatible, and long waits never time out.
    #[test]
    fn random_two_thread_branches() {
        const BRANCHES: u64 = 2;
        const KEYS: u8 = 3;
        const TRANSACTIONS: u64 = 150;
        let t = Arc::new(LockTable::new());
        let outcomes = Arc::new(Mutex::new([0u64; 2]));
        let branches: Vec<_> = (0..BRANCHES)
            .map(|n| {
                let (t, outcomes) = (t.clone(), outcomes.clone());
                thread::spawn(move || {
                    for tx in 0..TRANSACTIONS {
                        let owner = n << 32 | tx;
                        thread::scope(|scope| {
                            for part in 0..2u64 {
                                let (t, outcomes) = (&t, &outcomes);
                                scope.spawn(move || {
                                    let mut rng = Rng(0x51_7cc1 + (owner << 1 | part));
                                    for _ in 0..1 + rng.below(3) {
                                        let k = [rng.below(KEYS as u64) as u8];
                                        let mode = if rng.below(2) == 0 { S } else { X };
                                        match t.acquire(owner, &k, mode, LONG, NEVER) {
                                            Ok(()) => {
                                                let holders = t.holders(&k);
                                                assert!(holders
                                                    .iter()
                                                    .any(|h| h.0 == owner && h.1 >= mode));
                                                if holders.iter().any(|h| h.1 == X) {
                                                    assert_eq!(holders.len(), 1, "{holders:?}");
                                                }
                                                lock(outcomes)[0] += 1;
                                                thread::yield_now();
                                            }
                                            Err(LockError::Deadlock) => {
                                                lock(outcomes)[1] += 1;
                                                break;
                                            }
                                            Err(e) => panic!("{e:?}"),
                                        }
                                    }
                                });
                            }
                        });
                        t.release_all(owner);
                    }
                })
            })
            .collect();
        for h in branches {
            h.join().unwrap();
        }
        eprintln!("granted, deadlocks: {:?}", lock(&outcomes));
        assert!(t.is_empty());
    }

    /// A rollback from another thread (abort, then `release_all`) while the owner's thread
    /// keeps locking: no lock of the owner survives, and a waiting thread is woken.
    #[test]
    fn abort_then_release_all_leaves_nothing_behind() {
        let t = Arc::new(LockTable::new());
        for round in 0..100u64 {
            let owner = 100 + round;
            // Key 7 is held by someone else: the owner's thread sometimes waits on it.
            t.acquire(1, &[7], X, ZERO, NEVER).unwrap();
            let flag = Arc::new(AtomicBool::new(false));
            let (t2, f2) = (t.clone(), flag.clone());
            let worker = thread::spawn(move || {
                let aborted = || f2.load(Ordering::SeqCst);
                for k in (0..8u8).cycle() {
                    let mode = if k % 2 == 0 { S } else { X };
                    match t2.acquire(owner, &[k], mode, LONG, &aborted) {
                        Ok(()) => {}
                        Err(e) => return e,
                    }
                }
                unreachable!()
            });
            thread::sleep(Duration::from_micros(round * 20));
            flag.store(true, Ordering::SeqCst);
            t.release_all(owner);
            assert_eq!(worker.join().unwrap(), LockError::Aborted);
            t.release_all(1);
            assert!(t.is_empty(), "round {round}");
        }
    }

    /// The lock table before shared locks, for the benchmark below.
    mod old {
        use super::super::{LockError, Owner};
        use std::collections::HashMap;
        use std::sync::{Condvar, Mutex};
        use std::time::Duration;

        #[derive(Default)]
        struct Table {
            holder: HashMap<Vec<u8>, Owner>,
            held: HashMap<Owner, Vec<Vec<u8>>>,
            waits: Vec<(Owner, Owner)>,
        }

        #[derive(Default)]
        pub struct LockTable {
            table: Mutex<Table>,
            changed: Condvar,
        }

        impl LockTable {
            /// The old `lock` without its wait (the benchmark never conflicts).
            pub fn lock(
                &self,
                owner: Owner,
                key: &[u8],
                _timeout: Duration,
                aborted: &dyn Fn() -> bool,
            ) -> Result<(), LockError> {
                let mut t = self.table.lock().unwrap();
                if aborted() {
                    return Err(LockError::Aborted);
                }
                match t.holder.get(key) {
                    None => {
                        t.holder.insert(key.to_vec(), owner);
                        t.held.entry(owner).or_default().push(key.to_vec());
                        Ok(())
                    }
                    Some(&h) if h == owner => Ok(()),
                    Some(_) => Err(LockError::Timeout),
                }
            }

            pub fn release_all(&self, owner: Owner) {
                let mut t = self.table.lock().unwrap();
                if let Some(keys) = t.held.remove(&owner) {
                    for k in keys {
                        t.holder.remove(&k);
                    }
                }
                assert!(t.waits.is_empty());
                drop(t);
                self.changed.notify_all();
            }
        }
    }

    /// Lock + release cost, old table against new: run by hand with
    /// `cargo test --release --lib lock::tests::bench -- --ignored --nocapture`.
    /// Each figure is the best of 5 runs (the machine is shared), in nanoseconds per lock
    /// (wall clock over all threads / locks taken), a lock + its share of one release_all.
    #[test]
    #[ignore]
    fn bench_lock_release() {
        const OPS: u64 = 400_000;
        const KEYS: u64 = 4096;
        type Lock = Arc<dyn Fn(Owner, &[u8]) + Send + Sync>;
        type Release = Arc<dyn Fn(Owner) + Send + Sync>;
        /// Keys as a store's: 20 bytes, distinct per thread.
        fn keys(thread: u64) -> Vec<Vec<u8>> {
            (0..KEYS)
                .map(|i| format!("user:{thread:02}:{i:012}").into_bytes())
                .collect()
        }
        fn run(threads: u64, per_owner: u64, lock: &Lock, release: &Release) -> f64 {
            let sets: Vec<_> = (0..threads).map(keys).collect();
            let start = Instant::now();
            thread::scope(|scope| {
                for (n, keys) in sets.iter().enumerate() {
                    let (lock, release) = (lock.clone(), release.clone());
                    scope.spawn(move || {
                        let mut owner = (n as u64) << 40;
                        let mut i = 0;
                        while i < OPS / threads {
                            for _ in 0..per_owner {
                                lock(owner, &keys[(i % KEYS) as usize]);
                                i += 1;
                            }
                            release(owner);
                            owner += 1;
                        }
                    });
                }
            });
            start.elapsed().as_nanos() as f64 / OPS as f64
        }
        let old = Arc::new(old::LockTable::default());
        let new = Arc::new(LockTable::new());
        let tables: Vec<(&str, Lock, Release)> = vec![
            (
                "old X",
                {
                    let t = old.clone();
                    Arc::new(move |o, k| t.lock(o, k, LONG, NEVER).unwrap())
                },
                {
                    let t = old.clone();
                    Arc::new(move |o| t.release_all(o))
                },
            ),
            (
                "new X",
                {
                    let t = new.clone();
                    Arc::new(move |o, k| t.acquire(o, k, X, LONG, NEVER).unwrap())
                },
                {
                    let t = new.clone();
                    Arc::new(move |o| t.release_all(o))
                },
            ),
            (
                "new S",
                {
                    let t = new.clone();
                    Arc::new(move |o, k| t.acquire(o, k, S, LONG, NEVER).unwrap())
                },
                {
                    let t = new.clone();
                    Arc::new(move |o| t.release_all(o))
                },
            ),
        ];
        for (threads, per_owner) in [(1, 1), (1, 8), (8, 1), (8, 8)] {
            let mut best = vec![f64::MAX; tables.len()];
            for _ in 0..5 {
                for (b, (_, lock, release)) in best.iter_mut().zip(&tables) {
                    *b = b.min(run(threads, per_owner, lock, release));
                }
            }
            let row: Vec<String> = tables
                .iter()
                .zip(&best)
                .map(|((name, ..), ns)| format!("{name} {ns:6.1}"))
                .collect();
            eprintln!(
                "{threads} thread(s), {per_owner} lock(s) per owner: {}",
                row.join(", ")
            );
        }
        let keys = keys(0);
        let start = Instant::now();
        let mut x = 0u128;
        for i in 0..OPS {
            x ^= new.key_id(&keys[(i % KEYS) as usize]);
        }
        let ns = start.elapsed().as_nanos() as f64 / OPS as f64;
        eprintln!("SipHash-1-3-128 of a 20-byte key: {ns:.1} ns ({})", x & 1);
    }

    /// A tiny xorshift64* generator.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
        }
    }

    /// Threads run transactions taking random locks on a few keys. Checked at every grant:
    /// no exclusive lock coexists with another (by the table's view and by counters the test
    /// keeps itself). Long waits must never time out: a deadlock is detected at once, and a
    /// lost wake-up would show as a timeout.
    #[test]
    fn random_transactions_keep_the_invariants() {
        const THREADS: u64 = 4;
        const KEYS: usize = 4;
        const TRANSACTIONS: u64 = 300;
        let t = Arc::new(LockTable::new());
        // Per key: readers in, writers in (as the test sees them).
        let inside: Arc<Vec<(AtomicUsize, AtomicUsize)>> =
            Arc::new((0..KEYS).map(|_| Default::default()).collect());
        let keys: Vec<[u8; 1]> = (0..KEYS as u8).map(|k| [k]).collect();
        let threads: Vec<_> = (0..THREADS)
            .map(|n| {
                let (t, inside, keys) = (t.clone(), inside.clone(), keys.clone());
                thread::spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 + n);
                    let (mut granted, mut deadlocks, mut timeouts) = (0, 0, 0);
                    for tx in 0..TRANSACTIONS {
                        let owner = n << 32 | tx;
                        // The mode this transaction counted itself in, per key.
                        let mut mine: Vec<Option<Mode>> = vec![None; KEYS];
                        for _ in 0..1 + rng.below(4) {
                            let k = rng.below(KEYS as u64) as usize;
                            let mode = if rng.below(2) == 0 { S } else { X };
                            let short = rng.below(5) == 0;
                            let timeout = match short {
                                true => Duration::from_micros(rng.below(2000)),
                                false => LONG,
                            };
                            match t.acquire(owner, &keys[k], mode, timeout, NEVER) {
                                Ok(()) => {
                                    granted += 1;
                                    let holders = t.holders(&keys[k]);
                                    let me = holders.iter().find(|h| h.0 == owner);
                                    assert!(me.is_some_and(|h| h.1 >= mode));
                                    if holders.iter().any(|h| h.1 == X) {
                                        assert_eq!(holders.len(), 1, "{holders:?}");
                                    }
                                    let (readers, writers) = &inside[k];
                                    match (mine[k], mode) {
                                        (None, S) => {
                                            readers.fetch_add(1, Ordering::SeqCst);
                                        }
                                        (None, X) | (Some(S), X) => {
                                            if mine[k] == Some(S) {
                                                readers.fetch_sub(1, Ordering::SeqCst);
                                            }
                                            writers.fetch_add(1, Ordering::SeqCst);
                                        }
                                        _ => {}
                                    }
                                    mine[k] = mine[k].max(Some(mode));
                                    let w = writers.load(Ordering::SeqCst);
                                    let r = readers.load(Ordering::SeqCst);
                                    assert!(
                                        w == 0 || (w == 1 && r == 0),
                                        "{r} readers, {w} writers"
                                    );
                                    thread::yield_now();
                                }
                                Err(LockError::Deadlock) => {
                                    deadlocks += 1;
                                    break;
                                }
                                Err(LockError::Timeout) => {
                                    assert!(short, "a long wait timed out");
                                    timeouts += 1;
                                    break;
                                }
                                Err(LockError::Aborted) => unreachable!(),
                            }
                        }
                        for (k, m) in mine.iter().enumerate() {
                            match m {
                                Some(S) => inside[k].0.fetch_sub(1, Ordering::SeqCst),
                                Some(X) => inside[k].1.fetch_sub(1, Ordering::SeqCst),
                                None => 0,
                            };
                        }
                        if rng.below(4) == 0 {
                            t.release_shared(owner);
                        }
                        t.release_all(owner);
                    }
                    (granted, deadlocks, timeouts)
                })
            })
            .collect();
        let mut totals = (0, 0, 0);
        for h in threads {
            let (g, d, o) = h.join().unwrap();
            totals = (totals.0 + g, totals.1 + d, totals.2 + o);
        }
        eprintln!(
            "granted {}, deadlocks {}, timeouts {}",
            totals.0, totals.1, totals.2
        );
        assert!(totals.0 > 0);
        assert_eq!(t.waiting(), 0);
        assert!(t.is_empty());
    }
}
