//! One open store: its branches, the XA state machine, the data operations and recovery.
//!
//! Owns: the branch table (states S0–S5 of the XA reference §5.3), each thread of control's
//! associations (T0/T1/T2, §5.2) and recovery scan, the committed index, and the rules that tie
//! them to the log. Invariants:
//! - a branch's state is its phase (working, prepared, heuristic), its associations (active by
//!   ToC, suspended by ToC, suspended-for-migration by nobody) and a rollback-only mark; S is a
//!   projection of these, never stored twice;
//! - every write of a branch is in the log (a PUT/DELETE record with the branch's tag) before it
//!   is in the branch's write set; `XA_OK` from prepare or commit is returned only after the
//!   PREPARE or COMMIT record is durable; committed data enters the index only once durable;
//! - a key written by a branch stays locked until the branch commits or rolls back;
//! - the state lock is never held across a lock wait or a sync.
//!
//! A thread of control (ToC) is an opaque number chosen by the caller, so the state machine can
//! be driven, and tested, without threads.

mod compact;
pub mod flags;
mod recovery;

use crate::config::Config;
use crate::fxhash::FxHashMap;
use crate::lock::{LockError, LockTable, Owner};
use crate::log::{put_value_offset, Appended, Log, LogError, Lsn, Mapped, Media, Record};
use crate::status::*;
use crate::xa::*;
use crate::xid::Xid;
use flags::{EndMode, Scan, StartMode};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

/// A thread of control, as numbered by the caller.
pub type Toc = u64;

/// An XA-level failure: the code to return (`XAER_*`, `XA_RB*`, `XA_HEUR*`) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XaError {
    /// The XA return code.
    pub code: i32,
    /// Human-readable detail.
    pub msg: String,
}

impl XaError {
    /// A new error.
    pub fn new(code: i32, msg: impl Into<String>) -> XaError {
        XaError {
            code,
            msg: msg.into(),
        }
    }
}

/// A data-API failure: an `MMXA_*` code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    /// The `MMXA_*` code.
    pub code: i32,
    /// Human-readable detail.
    pub msg: String,
}

impl DataError {
    /// A new error.
    pub fn new(code: i32, msg: impl Into<String>) -> DataError {
        DataError {
            code,
            msg: msg.into(),
        }
    }
}

/// A snapshot of a store, for operators (`mmxa status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The process hosting the store.
    pub host_pid: u32,
    /// Committed keys, and the log bytes their records take.
    pub live_keys: u64,
    pub live_bytes: u64,
    /// Log segment files and their total size.
    pub segments: u64,
    pub log_bytes: u64,
    /// Lock requests waiting now.
    pub lock_waits: u64,
    /// Every branch the store knows.
    pub branches: Vec<BranchReport>,
}

/// One branch in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchReport {
    pub xid: Xid,
    /// `active`, `idle`, `suspended`, `rollback-only`, `prepared`, `heuristic-commit`,
    /// `heuristic-rollback`, or `busy` (a completion call is in progress).
    pub state: String,
    /// Milliseconds since the branch began, was prepared or completed heuristically (or since
    /// the store was opened, for a branch recovered from the log).
    pub age_ms: u64,
    /// Keys the branch wrote (none left for a completed branch).
    pub keys: u64,
    /// The operator's reason, for a heuristic outcome.
    pub reason: String,
}

/// Where a committed (or branch-private) value lives in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueLoc {
    lsn: Lsn,
    len: u32,
}

/// The committed key-value index, and the log bytes its live entries stand for.
#[derive(Default)]
struct Index {
    map: HashMap<Vec<u8>, ValueLoc>,
    bytes: u64,
}

impl Index {
    /// Log bytes of the PUT record behind an entry.
    fn cost(key: &[u8], loc: &ValueLoc) -> u64 {
        put_value_offset(key.len()) + loc.len as u64
    }

    fn put(&mut self, key: &[u8], loc: ValueLoc) {
        self.bytes += Index::cost(key, &loc);
        if let Some(old) = self.map.get_mut(key) {
            self.bytes -= Index::cost(key, old);
            *old = loc;
        } else {
            self.map.insert(key.to_vec(), loc);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= Index::cost(key, &old);
        }
    }

    fn set(&mut self, key: &[u8], loc: Option<ValueLoc>) {
        match loc {
            Some(loc) => self.put(key, loc),
            None => self.remove(key),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Working,
    Prepared,
    Heuristic(i32),
}

struct Branch {
    tag: u64,
    phase: Phase,
    /// A completion call (prepare, commit, rollback) is syncing; other calls see `XAER_PROTO`.
    busy: bool,
    active: Vec<Toc>,
    suspended: Vec<Toc>,
    migrated: usize,
    /// Rollback-only: the `XA_RB*` code and why.
    rb: Option<(i32, String)>,
    /// Rolled back by another ToC while associated: forgotten when the last association ends.
    undone: bool,
    /// Latest write per key: the LSN of its record and the value (None: deleted).
    writes: BTreeMap<Vec<u8>, (Lsn, Option<ValueLoc>)>,
    /// LSN of the first write record of a working branch: its segment cannot be reclaimed yet.
    first_lsn: Option<Lsn>,
    /// LSN of the record that states a prepared or heuristic branch (PREPARE, MOVE, HEURISTIC).
    record_lsn: Lsn,
    /// The operator's reason, for a heuristically completed branch.
    reason: String,
    abort: Arc<AtomicBool>,
    /// When the branch began, was prepared, or was completed heuristically (for a branch
    /// recovered from the log: when the store was opened).
    since: Instant,
    /// Savepoints: (id, journal length when set). While any exists, every write journals the
    /// key's previous entry in `writes`, so a rollback to a savepoint can restore it.
    savepoints: Vec<(u64, usize)>,
    journal: Vec<(Vec<u8>, Option<WriteEntry>)>,
    next_savepoint: u64,
}

/// A branch's latest write of a key: the LSN of its record and the value (None: deleted).
type WriteEntry = (Lsn, Option<ValueLoc>);

impl Branch {
    fn new(tag: u64, phase: Phase) -> Branch {
        Branch {
            tag,
            phase,
            busy: false,
            active: Vec::new(),
            suspended: Vec::new(),
            migrated: 0,
            rb: None,
            undone: false,
            writes: BTreeMap::new(),
            first_lsn: None,
            record_lsn: 0,
            reason: String::new(),
            abort: Arc::new(AtomicBool::new(false)),
            since: Instant::now(),
            savepoints: Vec::new(),
            journal: Vec::new(),
            next_savepoint: 1,
        }
    }

    fn associated(&self) -> bool {
        !self.active.is_empty() || !self.suspended.is_empty() || self.migrated > 0
    }

    /// The rollback code to report, if the branch can no longer commit.
    fn doomed(&self) -> Option<(i32, String)> {
        if self.undone {
            return Some((
                XA_RBOTHER,
                "the branch was rolled back by another thread".into(),
            ));
        }
        self.rb.clone()
    }
}

#[derive(Default)]
struct TocState {
    active: Option<Xid>,
    suspended: Vec<Xid>,
    scan: Option<(Vec<Xid>, usize)>,
}

#[derive(Default)]
struct State {
    branches: FxHashMap<Xid, Branch>,
    tocs: FxHashMap<Toc, TocState>,
}

/// An open store, its log on the medium `M` (memory-mapped files unless a test says otherwise).
pub struct Rm<M: Media = Mapped> {
    cfg: Config,
    log: Log<M>,
    locks: LockTable,
    index: RwLock<Index>,
    /// Held shared by every operation from its append until its effect is in memory (and by
    /// readers), exclusively by the compactor, which so sees log and memory agree.
    quiesce: RwLock<()>,
    /// A compaction step is running.
    compacting: AtomicBool,
    /// Do not try to compact again before the log reaches this LSN (after a step found the
    /// oldest segment still needed).
    compact_after: AtomicU64,
    state: Mutex<State>,
    next_tag: AtomicU64,
    panicked: AtomicBool,
    /// Lock waits end at once (the store is being shut down under them).
    interrupted: AtomicBool,
    /// The store's lock (see [`crate::share`]), released when the last user of the store is
    /// gone. Declared last: it is dropped after everything that writes the store.
    lock: Option<crate::share::StoreLock>,
}

fn proto(msg: impl Into<String>) -> XaError {
    XaError::new(XAER_PROTO, msg)
}

fn nota(xid: &Xid) -> XaError {
    XaError::new(XAER_NOTA, format!("XID {xid} is not known"))
}

impl Rm {
    /// Opens the store described by `cfg`, replaying its log: committed data, prepared branches
    /// (with their locks) and heuristically completed branches are rebuilt; every other branch
    /// is rolled back and its rollback logged.
    pub fn open(cfg: Config) -> Result<Rm, String> {
        let media = Mapped::new(&cfg.dir);
        recovery::open(cfg, media)
    }

    /// [`Rm::open`] for the holder of the store's lock, which the store keeps until dropped.
    pub fn open_locked(cfg: Config, lock: crate::share::StoreLock) -> Result<Rm, String> {
        let mut rm = Rm::open(cfg)?;
        rm.lock = Some(lock);
        Ok(rm)
    }
}

impl<M: Media> Rm<M> {
    /// [`Rm::open`] with the log on `media` (`cfg.dir` is then only a name).
    pub fn open_on(cfg: Config, media: M) -> Result<Rm<M>, String> {
        recovery::open(cfg, media)
    }

    /// The store's lock, if this instance holds it.
    pub fn store_lock(&self) -> Option<crate::share::StoreLock> {
        self.lock.clone()
    }

    /// Ends every lock wait now and refuses new ones: the store is being shut down while other
    /// threads may still be in it.
    pub fn interrupt_waits(&self) {
        self.interrupted.store(true, Ordering::Release);
        self.locks.wake_all();
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Why the store is unusable, if it is (a failed sync, or a panic inside mmxa).
    pub fn failed(&self) -> Option<String> {
        if self.panicked.load(Ordering::Acquire) {
            return Some("an internal error (panic) occurred; reopen the store".into());
        }
        self.log.failed()
    }

    /// Marks the store unusable until reopened.
    pub fn fail(&self) {
        self.panicked.store(true, Ordering::Release);
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, XaError> {
        if let Some(why) = self.failed() {
            return Err(XaError::new(XAER_RMFAIL, why));
        }
        self.state
            .lock()
            .map_err(|_| XaError::new(XAER_RMFAIL, "internal state lock poisoned; reopen"))
    }

    fn log_error(&self, e: LogError) -> XaError {
        match e {
            LogError::Failed(_) => XaError::new(XAER_RMFAIL, e.to_string()),
            LogError::Io(..)
            | LogError::Corrupt { .. }
            | LogError::NoSpace(_)
            | LogError::TooBig(_)
            | LogError::NotOldest(_)
            | LogError::Gone(_) => XaError::new(XAER_RMERR, e.to_string()),
        }
    }

    // ---- thread-of-control bookkeeping -------------------------------------------------

    /// Ends `toc`'s use of the store (`xa_close`): refused while it is associated with a branch.
    pub fn close_toc(&self, toc: Toc) -> Result<(), XaError> {
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
                XA_RBROLLBACK,
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
    pub fn start(&self, toc: Toc, xid: &Xid, mode: StartMode) -> Result<i32, XaError> {
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
            return Ok(XA_OK);
        };
        if mode == StartMode::New {
            return Err(XaError::new(
                XAER_DUPID,
                format!("XID {xid} already exists"),
            ));
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
            return Err(XaError::new(code, why));
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
        Ok(XA_OK)
    }

    /// `xa_end`.
    pub fn end(&self, toc: Toc, xid: &Xid, mode: EndMode) -> Result<i32, XaError> {
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
            b.rb = Some((XA_RBROLLBACK, "xa_end(TMFAIL)".into()));
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
            None => Ok(XA_OK),
            Some((code, why)) => {
                if b.undone && !b.associated() {
                    st.branches.remove(xid);
                }
                Err(XaError::new(code, why))
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
                let _ = self.log.append(&Record::Rollback { tag: b.tag });
            }
            self.locks.release_all(b.tag);
        }
    }

    /// Looks up a branch for a completion call: unknown → `XAER_NOTA`, busy → `XAER_PROTO`.
    fn completing<'a>(st: &'a mut State, xid: &Xid, what: &str) -> Result<&'a mut Branch, XaError> {
        let b = st.branches.get_mut(xid).ok_or_else(|| nota(xid))?;
        if b.busy {
            return Err(proto(format!(
                "{what}: another completion call is in progress"
            )));
        }
        Ok(b)
    }

    /// Appends `rec` and waits until it is durable, with the state lock released.
    fn log_durably(&self, rec: &Record<'_>) -> Result<Appended, LogError> {
        let a = self.log.append(rec)?;
        self.log.sync_to(a.end)?;
        Ok(a)
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.quiesce.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-takes the state lock after a sync, even if the store failed meanwhile.
    fn relock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `xa_prepare`.
    pub fn prepare(&self, _toc: Toc, xid: &Xid) -> Result<i32, XaError> {
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
            return Err(XaError::new(code, why));
        }
        if b.writes.is_empty() {
            self.discard(&mut st, xid);
            return Ok(XA_RDONLY);
        }
        b.busy = true;
        let tag = b.tag;
        drop(st);
        let q = self.shared();
        let result = self.log_durably(&Record::Prepare { tag, xid: *xid });
        let mut st = self.relock();
        match result {
            Ok(a) => {
                if let Some(b) = st.branches.get_mut(xid) {
                    b.busy = false;
                    b.phase = Phase::Prepared;
                    b.since = Instant::now();
                    b.first_lsn = None;
                    b.record_lsn = a.lsn;
                }
                drop((st, q));
                self.maybe_compact();
                Ok(XA_OK)
            }
            // The PREPARE record may be durable: only a reopen and xa_recover can tell.
            Err(e @ LogError::Failed(_)) => Err(self.log_error(e)),
            Err(e) => {
                // Nothing durable says prepared: roll back and give a definite answer.
                self.discard(&mut st, xid);
                Err(XaError::new(
                    XA_RBOTHER,
                    format!("xa_prepare failed, rolled back: {e}"),
                ))
            }
        }
    }

    /// `xa_commit`.
    pub fn commit(&self, _toc: Toc, xid: &Xid, one_phase: bool) -> Result<i32, XaError> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_commit")?;
        match (b.phase, one_phase) {
            (Phase::Heuristic(code), false) => {
                return Err(XaError::new(code, "the branch was completed heuristically"))
            }
            (Phase::Prepared, false) => {}
            (Phase::Working, true) => {
                if b.associated() {
                    return Err(proto("xa_commit: the branch still has associations"));
                }
                if let Some((code, why)) = b.doomed() {
                    self.discard(&mut st, xid);
                    return Err(XaError::new(code, why));
                }
                if b.writes.is_empty() {
                    self.discard(&mut st, xid);
                    return Ok(XA_OK);
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
                Ok(XA_OK)
            }
            Err(e @ LogError::Failed(_)) => Err(self.log_error(e)),
            Err(e) if one_phase => {
                self.discard(&mut st, xid);
                Err(XaError::new(
                    XA_RBOTHER,
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
                Err(XaError::new(
                    XA_RETRY,
                    format!("commit could not be logged: {e}"),
                ))
            }
        }
    }

    /// `xa_rollback`.
    pub fn rollback(&self, toc: Toc, xid: &Xid) -> Result<i32, XaError> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_rollback")?;
        match b.phase {
            Phase::Heuristic(code) => {
                Err(XaError::new(code, "the branch was completed heuristically"))
            }
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
                        Ok(XA_OK)
                    }
                    Err(e @ LogError::Failed(_)) => Err(self.log_error(e)),
                    Err(e) => {
                        if let Some(b) = st.branches.get_mut(xid) {
                            b.busy = false;
                        }
                        Err(XaError::new(
                            XAER_RMERR,
                            format!("rollback could not be logged: {e}"),
                        ))
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
                    return Ok(XA_OK);
                }
                // Associated elsewhere: undo now; the associated threads learn it at their next
                // call, and the branch is forgotten when the last association ends.
                b.undone = true;
                b.migrated = 0;
                b.abort.store(true, Ordering::Release);
                let tag = b.tag;
                if !std::mem::take(&mut b.writes).is_empty() {
                    let _ = self.log.append(&Record::Rollback { tag });
                }
                self.locks.release_all(tag);
                Ok(XA_OK)
            }
        }
    }

    /// `xa_forget`.
    pub fn forget(&self, _toc: Toc, xid: &Xid) -> Result<i32, XaError> {
        let mut st = self.state()?;
        let b = Self::completing(&mut st, xid, "xa_forget")?;
        let Phase::Heuristic(_) = b.phase else {
            return Err(XaError::new(
                XAER_NOTA,
                format!("XID {xid} is not a heuristically completed branch"),
            ));
        };
        let tag = b.tag;
        self.log
            .append(&Record::Forget { tag })
            .map_err(|e| self.log_error(e))?;
        st.branches.remove(xid);
        Ok(XA_OK)
    }

    /// `xa_recover`: up to `cap` in-doubt XIDs (prepared or heuristically completed) from this
    /// thread's scan, which `TMSTARTRSCAN` (re)starts from a snapshot.
    pub fn recover(&self, toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>, XaError> {
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
            return Err(XaError::new(
                XAER_INVAL,
                "xa_recover: no scan is open (TMSTARTRSCAN first)",
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
    pub fn heuristic(&self, xid: &Xid, outcome: i32, reason: &str) -> Result<(), XaError> {
        if outcome != XA_HEURCOM && outcome != XA_HEURRB {
            return Err(XaError::new(
                XAER_INVAL,
                "outcome must be XA_HEURCOM or XA_HEURRB",
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
            outcome,
            xid: *xid,
            reason: reason.as_bytes(),
        };
        let _q = self.shared();
        let result = self.log_durably(&rec);
        let mut st = self.relock();
        let b = st.branches.get_mut(xid).ok_or_else(|| nota(xid))?;
        b.busy = false;
        let a = result.map_err(|e| self.log_error(e))?;
        b.phase = Phase::Heuristic(outcome);
        b.since = Instant::now();
        b.record_lsn = a.lsn;
        b.reason = reason.to_string();
        let writes = std::mem::take(&mut b.writes);
        if outcome == XA_HEURCOM {
            self.apply(&writes);
        }
        self.locks.release_all(tag);
        drop(st);
        // The log holds the decision; the audit line is its human-readable trail.
        let decision = if outcome == XA_HEURCOM {
            "heuristic-commit"
        } else {
            "heuristic-rollback"
        };
        let _ = crate::audit::record(&self.cfg.dir, xid, decision, reason);
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
            .filter(|x| self.heuristic(x, XA_HEURRB, &reason).is_ok())
            .collect()
    }

    fn apply(&self, writes: &BTreeMap<Vec<u8>, (Lsn, Option<ValueLoc>)>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (k, (_, v)) in writes {
            index.set(k, *v);
        }
    }

    // ---- data operations ---------------------------------------------------------------

    fn data_state(&self) -> Result<MutexGuard<'_, State>, DataError> {
        self.state().map_err(|e| DataError::new(MMXA_EIO, e.msg))
    }

    /// Data calls are refused once the branch is rollback-only.
    fn usable(b: &Branch) -> Result<(), DataError> {
        match b.doomed() {
            Some((code, why)) => Err(DataError::new(
                MMXA_EROLLBACK,
                format!("the branch is rollback-only ({why}; xa_end answers {code})"),
            )),
            None => Ok(()),
        }
    }

    /// The branch `toc` is actively associated with: its XID, tag and abort flag.
    fn current(&self, toc: Toc) -> Result<Option<(Xid, u64, Arc<AtomicBool>)>, DataError> {
        let st = self.data_state()?;
        let Some(xid) = st.tocs.get(&toc).and_then(|t| t.active) else {
            return Ok(None);
        };
        let b = st
            .branches
            .get(&xid)
            .ok_or_else(|| DataError::new(MMXA_EINTERNAL, "associated branch is missing"))?;
        Self::usable(b)?;
        Ok(Some((xid, b.tag, b.abort.clone())))
    }

    /// Checks a key and value against the size limits.
    pub(crate) fn check_kv(key: &[u8], value: Option<&[u8]>) -> Result<(), DataError> {
        if key.is_empty() {
            return Err(DataError::new(MMXA_EINVAL, "key is empty"));
        }
        if key.len() > MMXA_MAX_KEY {
            return Err(DataError::new(
                MMXA_ETOOBIG,
                format!("key of {} bytes exceeds {MMXA_MAX_KEY}", key.len()),
            ));
        }
        if let Some(v) = value {
            if v.len() > MMXA_MAX_VALUE {
                return Err(DataError::new(
                    MMXA_ETOOBIG,
                    format!("value of {} bytes exceeds {MMXA_MAX_VALUE}", v.len()),
                ));
            }
        }
        Ok(())
    }

    fn data_log_error(e: LogError) -> DataError {
        match e {
            LogError::NoSpace(_) => DataError::new(MMXA_ENOSPC, e.to_string()),
            LogError::TooBig(_) => DataError::new(MMXA_ETOOBIG, e.to_string()),
            LogError::Io(..)
            | LogError::Corrupt { .. }
            | LogError::Failed(_)
            | LogError::NotOldest(_)
            | LogError::Gone(_) => DataError::new(MMXA_EIO, e.to_string()),
        }
    }

    fn lock_key(&self, owner: Owner, key: &[u8], abort: &AtomicBool) -> Result<(), LockError> {
        self.locks.lock(owner, key, self.cfg.lock_timeout, &|| {
            abort.load(Ordering::Acquire) || self.interrupted.load(Ordering::Acquire)
        })
    }

    /// Writes (`Some(value)`) or deletes (`None`) `key`. Returns whether the key existed before
    /// (as seen by the writer).
    pub fn put(&self, toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool, DataError> {
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

    fn loc(lsn: Lsn, key: &[u8], value: Option<&[u8]>) -> Option<ValueLoc> {
        value.map(|v| ValueLoc {
            lsn: lsn + put_value_offset(key.len()),
            len: v.len() as u32,
        })
    }

    fn branch_write(
        &self,
        xid: &Xid,
        tag: u64,
        abort: &AtomicBool,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<bool, DataError> {
        if let Err(e) = self.lock_key(tag, key, abort) {
            let (rb, code, why) = match e {
                LockError::Timeout => (XA_RBTIMEOUT, MMXA_ELOCKTIMEOUT, "lock wait timed out"),
                LockError::Deadlock => (XA_RBDEADLOCK, MMXA_EDEADLOCK, "deadlock detected"),
                LockError::Aborted => (XA_RBOTHER, MMXA_EROLLBACK, "branch rolled back meanwhile"),
            };
            let mut st = self.data_state()?;
            if let Some(b) = st.branches.get_mut(xid).filter(|b| b.tag == tag) {
                b.rb.get_or_insert((rb, why.into()));
            }
            return Err(DataError::new(
                code,
                format!("{why}; the branch is rollback-only"),
            ));
        }
        let _q = self.shared();
        let appended = match self.log.append(&Self::record(tag, key, value)) {
            Ok(a) => a,
            Err(e) => {
                drop(_q);
                if matches!(e, LogError::NoSpace(_)) {
                    self.after_no_space();
                }
                return Err(Self::data_log_error(e));
            }
        };
        let mut st = self.data_state()?;
        let Some(b) = st
            .branches
            .get_mut(xid)
            .filter(|b| b.tag == tag && !b.undone)
        else {
            // Rolled back while we wrote: the lock we took must not outlive the branch.
            drop(st);
            self.locks.release_all(tag);
            return Err(DataError::new(MMXA_EROLLBACK, "the branch was rolled back"));
        };
        let existed = match b.writes.get(key) {
            Some((_, v)) => v.is_some(),
            None => self.index_get(key).is_some(),
        };
        let entry = (appended.lsn, Self::loc(appended.lsn, key, value));
        b.first_lsn = Some(b.first_lsn.map_or(appended.lsn, |f| f.min(appended.lsn)));
        if !b.savepoints.is_empty() {
            b.journal.push((key.to_vec(), b.writes.get(key).copied()));
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
    ) -> Result<(Xid, &'a mut Branch), DataError> {
        let xid = st.tocs.get(&toc).and_then(|t| t.active).ok_or_else(|| {
            DataError::new(
                MMXA_EINVAL,
                format!("{what}: the thread is not associated with a branch"),
            )
        })?;
        let b = st
            .branches
            .get_mut(&xid)
            .ok_or_else(|| DataError::new(MMXA_EINTERNAL, "associated branch is missing"))?;
        Self::usable(b)?;
        Ok((xid, b))
    }

    /// Sets a savepoint in the branch `toc` is associated with; returns its id.
    pub fn savepoint(&self, toc: Toc) -> Result<u64, DataError> {
        let mut st = self.data_state()?;
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
    pub fn rollback_to_savepoint(&self, toc: Toc, id: u64) -> Result<(), DataError> {
        // Appends and their effect in memory, as one step for the compactor.
        let _q = self.shared();
        let mut st = self.data_state()?;
        let (xid, b) = Self::savepoint_branch(&mut st, toc, "mmxa_rollback_to_savepoint")?;
        let Some(pos) = b.savepoints.iter().position(|&(s, _)| s == id) else {
            return Err(DataError::new(
                MMXA_EINVAL,
                format!("no savepoint {id} in this branch (released, or never set)"),
            ));
        };
        if b.active.len() > 1 {
            return Err(DataError::new(
                MMXA_EINVAL,
                "other threads are associated with the branch (joined); end their \
                 associations first",
            ));
        }
        let mark = b.savepoints[pos].1;
        b.savepoints.truncate(pos + 1);
        // The state each key had at the savepoint: its earliest journal entry after the mark.
        let mut target: BTreeMap<Vec<u8>, Option<WriteEntry>> = BTreeMap::new();
        for (key, prev) in b.journal.drain(mark..).rev() {
            target.insert(key, prev);
        }
        let tag = b.tag;
        let mut value = Vec::new();
        for (key, prev) in target {
            // What the key must read as: the branch's earlier write, or committed data.
            let loc = match prev {
                Some((_, loc)) => loc,
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
                    self.log.append(&Self::record(tag, &key, v))
                });
            let b = st
                .branches
                .get_mut(&xid)
                .ok_or_else(|| DataError::new(MMXA_EINTERNAL, "branch vanished"))?;
            match restated {
                Ok(a) if prev.is_some() => {
                    b.writes.insert(
                        key.clone(),
                        (a.lsn, Self::loc(a.lsn, &key, loc.map(|_| &value[..]))),
                    );
                }
                Ok(_) => {
                    b.writes.remove(&key);
                }
                Err(e) => {
                    // Log and write set agree up to here, but the branch is not what the
                    // caller asked for any more.
                    b.rb.get_or_insert((XA_RBOTHER, "a rollback to a savepoint failed".into()));
                    return Err(Self::data_log_error(e));
                }
            }
        }
        Ok(())
    }

    fn local_write(&self, key: &[u8], value: Option<&[u8]>) -> Result<bool, DataError> {
        let owner = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let never = AtomicBool::new(false);
        let result = self.lock_key(owner, key, &never).map_err(|e| match e {
            LockError::Deadlock => DataError::new(MMXA_EDEADLOCK, "deadlock detected"),
            _ => DataError::new(MMXA_ELOCKTIMEOUT, "lock wait timed out"),
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
                .append(&Self::record(0, key, value))
                .and_then(|a| self.log.sync_to(a.end).map(|()| a))
                .map_err(|e| {
                    no_space = matches!(e, LogError::NoSpace(_));
                    Self::data_log_error(e)
                })?;
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            index.set(key, Self::loc(a.lsn, key, value));
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
    /// else committed data.
    pub fn get(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>, DataError> {
        Self::check_kv(key, None)?;
        // Shared: the compactor must not retire the segment between lookup and read.
        let _q = self.shared();
        let loc = match self.current(toc)? {
            Some((xid, _, _)) => {
                let st = self.data_state()?;
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
            .map_err(|e| DataError::new(MMXA_EIO, e.to_string()))?;
        Ok(Some(out))
    }

    /// A snapshot for operators.
    pub fn status(&self) -> Report {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut branches: Vec<BranchReport> = st
            .branches
            .iter()
            .map(|(xid, b)| {
                let state = match b.phase {
                    _ if b.busy => "busy",
                    Phase::Prepared => "prepared",
                    Phase::Heuristic(XA_HEURCOM) => "heuristic-commit",
                    Phase::Heuristic(_) => "heuristic-rollback",
                    Phase::Working if b.doomed().is_some() => "rollback-only",
                    Phase::Working if !b.active.is_empty() => "active",
                    Phase::Working if b.associated() => "suspended",
                    Phase::Working => "idle",
                };
                BranchReport {
                    xid: *xid,
                    state: state.into(),
                    age_ms: b.since.elapsed().as_millis() as u64,
                    keys: b.writes.len() as u64,
                    reason: b.reason.clone(),
                }
            })
            .collect();
        drop(st);
        branches.sort_by(|a, b| {
            (a.xid.format_id(), a.xid.data()).cmp(&(b.xid.format_id(), b.xid.data()))
        });
        let (live_keys, live_bytes) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            (index.map.len() as u64, index.bytes)
        };
        let (segments, log_bytes) = self.log.disk_usage();
        Report {
            host_pid: std::process::id(),
            live_keys,
            live_bytes,
            segments: segments as u64,
            log_bytes,
            lock_waits: self.locks.waiting() as u64,
            branches,
        }
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

#[cfg(test)]
mod tests;
