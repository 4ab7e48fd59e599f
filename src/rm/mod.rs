//! One open store, shared by every process that opens it: its branches, the XA state machine,
//! the data operations and recovery.
//!
//! Owns: the rules that tie the shared state to the log. Every process with the store open is a
//! peer: it maps the store's region (`src/shm`, laid out in `layout.rs`: key entries with their
//! committed value, pending write and locks; branch records; the log's tail) and the log's
//! segments, and works on them under the region's robust mutex in journaled sections, so any
//! process may die at any instruction and the others go on. Invariants:
//! - a branch's state is its phase (working, prepared, heuristic), its associations (active or
//!   suspended, by thread of control of any process; suspended for migration, by nobody), a
//!   busy mark (a completion in progress) and a rollback-only mark; S0–S5 of the XA reference
//!   §5.3 is a projection of these, never stored twice;
//! - every write of a branch is in the log (a PUT/DELETE record with the branch's tag) before it
//!   is its key's pending write, in the same section; prepare or commit succeeds only after its
//!   PREPARE or COMMIT record is durable; committed data changes only once durable;
//! - a key written by a branch (or read for update) stays locked exclusively until the branch
//!   commits or rolls back; a key read under `isolation=serializable` stays locked shared until
//!   the branch prepares, commits or rolls back (strict two-phase locking);
//! - no section is held across a lock wait or a sync; a process that dies leaves its section
//!   undone (the journal) and its threads' associations, waits and in-flight completions to the
//!   first peer that finds it dead (`reap.rs`), which ends them as the log says.
//! - no section does work proportional to a transaction's size: ending a branch (applying or
//!   dropping its writes, releasing its locks) and undoing to a savepoint take as many sections
//!   as they need, each within a journal budget, each leaving a state any process can go on
//!   from (a busy completion: its owner, or for an orphan any process, finishes it).
//!
//! A thread of control (ToC) is an opaque number chosen by the caller in this process, so the
//! state machine can be driven, and tested, without threads. The parts: `layout.rs` (the shared
//! layout), `keys.rs` and `locks.rs` (key entries and their locks), `branch.rs` (branch records
//! and a ToC's view), `xa.rs` (the XA entry points' work), `data.rs` (reads, writes,
//! savepoints), `local.rs` (local transactions, their promotion, nested transactions),
//! `reap.rs` (a dead process's leftovers), `report.rs` (what operators see), `compact.rs`
//! (reclaiming log space), `backup.rs` (the backup pin and the store's one path), `recovery.rs`
//! (rebuilding the shared state from the log when no process has the store open, and the
//! logical copy of a log), `flags.rs` (the flag rules of the entry points).

mod backup;
mod branch;
mod compact;
mod data;
pub mod flags;
mod keys;
mod layout;
mod local;
mod locks;
mod order;
mod reap;
mod scan;
pub use scan::{Range, Scan};
mod recovery;
mod report;
mod xa;

use crate::config::{Config, Isolation, SyncMode};
pub use crate::error::Vote;
use crate::error::{Error, Result};
use crate::fxhash::FxHashMap;
use crate::log::{Log, LogError, Mapped, Media, Peer};
use crate::shm::{self, LockFile, Off, Opened, Options, Region, Txn};
use branch::TocState;
use layout::{Busy, B_BUSY_SLOT};
pub use locks::Mode;
pub use recovery::{rewrite_log, Rewritten};
pub use report::{BranchReport, LocalReport, Report};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A thread of control, as numbered by the caller.
pub type Toc = u64;

static NEXT_TOC: AtomicU64 = AtomicU64::new(1);
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// This process's threads of control and what they work in. Every change (through `DerefMut`)
/// bumps `changes`, which can be read without the lock: a cursor that checked its thread's
/// association need not check again while it has not moved.
struct Tocs {
    map: FxHashMap<Toc, TocState>,
    changes: Arc<AtomicU64>,
}

impl Tocs {
    /// An empty map whose changes count in `changes`.
    fn counting(changes: Arc<AtomicU64>) -> Tocs {
        Tocs {
            map: FxHashMap::default(),
            changes,
        }
    }
}

impl std::ops::Deref for Tocs {
    type Target = FxHashMap<Toc, TocState>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Tocs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.changes.fetch_add(1, Ordering::Release);
        &mut self.map
    }
}

/// Rolls in a row after which [`Rm::appending`] gives up: a safety net only (every section
/// appends at most half a fresh segment), set far above the rolls in a row that other threads
/// filling small segments meanwhile can cause (four were seen with eight committers on tiny
/// segments).
const MAX_ROLLS: u32 = 256;

/// Slots of [`Rm::write_epochs`].
const WRITE_EPOCHS: usize = 64;

/// A new number for an open instance.
fn new_instance() -> u64 {
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
}

/// A new thread-of-control number, unique in this process.
pub fn new_toc() -> Toc {
    NEXT_TOC.fetch_add(1, Ordering::Relaxed)
}

/// How long a call waits for the region's mutex: only a process stopped inside a section (a
/// debugger, SIGSTOP) holds it that long; the call then fails instead of hanging.
const MUTEX_WAIT: Duration = Duration::from_secs(30);

/// How long an opening process waits for another one that is rebuilding the store.
const OPEN_WAIT: Duration = Duration::from_secs(60);

/// The store's files: the lock file and the region beside the segments.
const LOCK_FILE: &str = "mmxa.lock";
const REGION_FILE: &str = "mmxa.shm";

/// An open store, its log on the medium `M` (memory-mapped files unless a test says otherwise).
pub struct Rm<M: Media = Mapped> {
    cfg: Config,
    log: Log<M>,
    region: Arc<Region>,
    /// The store's lock file (none for a process-private store on a simulated disk).
    lockfile: Option<Arc<LockFile>>,
    /// This process's slot + 1.
    slot: u32,
    /// This process's slot generation (a slot reused later has another one).
    generation: u64,
    /// This process's threads of control.
    tocs: Mutex<Tocs>,
    /// `tocs`'s change count, readable without its lock (the same counter: see [`Rm::tocs`]).
    toc_changes: Arc<AtomicU64>,
    panicked: AtomicBool,
    /// Lock waits end at once (the store is being shut down under them).
    interrupted: AtomicBool,
    /// When this process last looked for dead peers.
    last_reap: Mutex<Instant>,
    /// A reclaiming step of this process is running.
    compacting: AtomicBool,
    /// Held by a reclaiming step ([`Rm::compact_step`]) while it runs.
    compact_step_lock: Mutex<()>,
    /// Dropped as if the process had died (tests): no cleanup.
    crashed: bool,
    /// This open instance's number, unique in the process (a cursor belongs to one).
    instance: u64,
    /// Bumped by every write of a branch in this process, in the slot of the branch's tag: a
    /// cursor in a branch drops what it read ahead when its slot moved.
    write_epochs: [AtomicU64; WRITE_EPOCHS],
    /// Completions of this process whose record is durable but whose finishing section could
    /// not be entered in time (branch record, tag): finished by this process's next section.
    deferred: Mutex<Vec<(Off, u64)>>,
    has_deferred: AtomicBool,
    /// Held while the deferred completions are finished (taken before the region's mutex).
    finishing: Mutex<()>,
    /// How long a section waits for the mutex ([`MUTEX_WAIT`]; shorter in tests).
    mutex_wait: Duration,
    /// Runs just before a completion's finishing section (tests).
    #[cfg(test)]
    before_finish: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// One step of a section: what to do with it when it does not succeed.
pub(crate) enum Step {
    /// Roll it back, return the error.
    Fail(Error),
    /// Roll it back, let the log move past the full segment it names, and run it again.
    Roll(u64),
}

impl From<Error> for Step {
    fn from(e: Error) -> Step {
        Step::Fail(e)
    }
}

impl From<shm::Error> for Step {
    fn from(e: shm::Error) -> Step {
        Step::Fail(shm_error(e))
    }
}

impl From<LogError> for Step {
    fn from(e: LogError) -> Step {
        match e {
            LogError::NeedRoll(id) => Step::Roll(id),
            e => Step::Fail(e.into()),
        }
    }
}

/// What a section's body returns.
pub(crate) type Sect<T> = std::result::Result<T, Step>;

/// The core error for a failure of the shared region.
pub(crate) fn shm_error(e: shm::Error) -> Error {
    match e {
        shm::Error::Timeout => Error::Io(
            "the store's shared state stayed locked by another process for 30 s (a stopped \
             process?)"
                .into(),
        ),
        shm::Error::RegionFull { .. } => Error::NoSpace(format!("the store's shared state: {e}")),
        shm::Error::JournalFull => Error::Internal(format!("the store's shared state: {e}")),
        shm::Error::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            Error::NoSpace(format!("the store's shared state: {e}"))
        }
        shm::Error::Io(_) => Error::Io(format!("the store's shared state: {e}")),
        e => Error::Failed(format!(
            "the store's shared state: {e}; reopen (if it persists, every process must close \
             the store so that the next opener rebuilds it from the log)"
        )),
    }
}

fn proto(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

fn nota(xid: &crate::xid::Xid) -> Error {
    Error::UnknownXid(format!("XID {xid} is not known"))
}

fn open_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Rm {
    /// Opens the store described by `cfg`. If no other process has it open, its shared state is
    /// rebuilt from the log: committed data, prepared branches (with their locks) and
    /// heuristically completed branches; every other branch is rolled back and its rollback
    /// logged. Otherwise this process attaches to the shared state the others use (no replay).
    pub fn open(cfg: Config) -> std::result::Result<Rm, String> {
        Rm::open_as(cfg, false)
    }

    /// [`Rm::open`] for an operator's tool: the store's own settings are used, whatever `cfg`
    /// says about them.
    pub fn open_admin(cfg: Config) -> std::result::Result<Rm, String> {
        Rm::open_as(cfg, true)
    }

    fn open_as(mut cfg: Config, admin: bool) -> std::result::Result<Rm, String> {
        crate::config::check_access(&cfg)?;
        // The same store must have one name for all its processes (see `backup.rs`).
        let canonical = std::fs::canonicalize(&cfg.dir).unwrap_or_else(|_| cfg.dir.clone());
        let mode = cfg.file_mode();
        let lockfile = Arc::new(LockFile::open(&cfg.dir.join(LOCK_FILE), mode).map_err(open_err)?);
        let region_path = cfg.dir.join(REGION_FILE);
        let opened = lockfile
            .open_or_recover(&region_path, mode, Options::default(), OPEN_WAIT)
            .map_err(|e| match e {
                shm::Error::Timeout => format!(
                    "the store {} is being opened by another process that does not finish (for \
                     {} s)",
                    cfg.dir.display(),
                    OPEN_WAIT.as_secs()
                ),
                e => format!("cannot open the store's shared state: {e}"),
            })?;
        match opened {
            Opened::Fresh(region) => {
                let region = Arc::new(region);
                let slot = lockfile
                    .claim_slot(&region, MUTEX_WAIT, |_, _| Ok(()))
                    .map_err(open_err)?;
                let media = Mapped::with_mode(&cfg.dir, cfg.file_mode());
                let rm = recovery::build(
                    cfg,
                    media,
                    region,
                    Some(lockfile.clone()),
                    slot.index + 1,
                    slot.generation,
                )?;
                rm.shared(|t| Ok(backup::record_path(t, &canonical)))
                    .map_err(|e| e.to_string())??;
                lockfile
                    .finish_recovery(&rm.region, MUTEX_WAIT)
                    .map_err(open_err)?;
                Ok(rm)
            }
            Opened::Attached(region) => {
                let region = Arc::new(region);
                let recorded = (|| {
                    let t = region.lock(MUTEX_WAIT).map_err(|e| e.to_string())?;
                    let p = backup::recorded_path(&t)?;
                    t.commit().map_err(|e| e.to_string())?;
                    Ok::<_, String>(p)
                })()?;
                if let Some(first) = recorded.filter(|p| Path::new(p) != canonical.as_path()) {
                    return Err(format!(
                        "the store {first} is open in another process under that path, and this \
                         process opened it as {} (the same directory reached by another path: \
                         a bind mount, or a second mount of its file system); every process \
                         must open a store under one path: use {first}",
                        canonical.display()
                    ));
                }
                let stored = recovery::stored_settings(&region).map_err(|e| e.to_string())?;
                if admin {
                    recovery::adopt_settings(&mut cfg, stored);
                } else if stored != recovery::fingerprint(&cfg) {
                    return Err(format!(
                        "the store {} is open in another process with other settings (sync, \
                         lock_timeout_ms, segment_mb, orphan_rollback_s, isolation must match)",
                        cfg.dir.display()
                    ));
                }
                Rm::attach(cfg, region, lockfile)
            }
        }
    }
    /// Joins a store whose shared state another process built.
    fn attach(
        cfg: Config,
        region: Arc<Region>,
        lockfile: Arc<LockFile>,
    ) -> std::result::Result<Rm, String> {
        // Attached first as slot 0 (to find dead peers and sync for them), then again as the
        // slot this process takes.
        let peer = Rm::<Mapped>::peer(Some(&lockfile), 0);
        let media = Mapped::with_mode(&cfg.dir, cfg.file_mode());
        let log = Log::attach(media, cfg.segment_size, cfg.sync, region.clone(), peer)
            .map_err(|e| e.to_string())?;
        let changes = Arc::new(AtomicU64::new(0));
        let mut rm = Rm {
            cfg,
            log,
            region,
            lockfile: Some(lockfile.clone()),
            slot: 0,
            generation: 0,
            tocs: Mutex::new(Tocs::counting(changes.clone())),
            toc_changes: changes,
            panicked: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            last_reap: Mutex::new(Instant::now()),
            compacting: AtomicBool::new(false),
            compact_step_lock: Mutex::new(()),
            crashed: false,
            instance: new_instance(),
            write_epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            deferred: Mutex::new(Vec::new()),
            has_deferred: AtomicBool::new(false),
            finishing: Mutex::new(()),
            mutex_wait: MUTEX_WAIT,
            #[cfg(test)]
            before_finish: Mutex::new(None),
        };
        // Dead peers' leftovers first (with the syncs their in-flight completions need), so the
        // slot this process takes is clean.
        let mut attempts = 0;
        let slot = loop {
            rm.reap_dead().map_err(|e| e.to_string())?;
            let claimed = lockfile.claim_slot(&rm.region, MUTEX_WAIT, |t, dead| {
                // A slot whose dead owner left more than this section can end is not taken:
                // `reap_dead` ends it in steps, and the claim is tried again.
                match reap::reap_slot(t, dead.index + 1, dead.generation, rm.log.durable())? {
                    true => Ok(()),
                    false => Err(shm::Error::Io(std::io::Error::other(
                        "a dead process left more work than one section can end",
                    ))),
                }
            });
            attempts += 1;
            match claimed {
                Err(shm::Error::Io(_)) if attempts < 5 => continue,
                r => break r.map_err(open_err)?,
            }
        };
        rm.slot = slot.index + 1;
        rm.generation = slot.generation;
        // What the reaping in `claim_slot` orphaned (too big for its section).
        rm.finish_orphans(rm.log.durable())
            .map_err(|e| e.to_string())?;
        let peer = Rm::<Mapped>::peer(Some(&lockfile), rm.slot);
        let media = Mapped::with_mode(&rm.cfg.dir, rm.cfg.file_mode());
        rm.log = Log::attach(
            media,
            rm.cfg.segment_size,
            rm.cfg.sync,
            rm.region.clone(),
            peer,
        )
        .map_err(|e| e.to_string())?;
        Ok(rm)
    }
}

impl<M: Media> Rm<M> {
    /// [`Rm::open`] with the log on `media` and the shared state in this process's memory: a
    /// store no other process can reach (tests, the simulated disk). `cfg.dir` is only a name.
    pub fn open_on(cfg: Config, media: M) -> std::result::Result<Rm<M>, String> {
        let region = Region::anonymous(shm::DEFAULT_INITIAL_SIZE)
            .map_err(|e| format!("cannot create the shared state: {e}"))?;
        recovery::build(cfg, media, Arc::new(region), None, 1, 1)
    }

    /// The log's view of this process: its slot, and how to tell a dead peer.
    fn peer(lockfile: Option<&Arc<LockFile>>, slot: u32) -> Peer {
        match lockfile {
            Some(lf) => {
                let lf = lf.clone();
                Peer::new(
                    slot,
                    Arc::new(move |s: u32| s > 0 && lf.is_dead(s - 1).unwrap_or(false)),
                )
            }
            None => Peer::new(slot, Arc::new(|_| false)),
        }
    }

    /// Ends every lock wait now and refuses new ones: the store is being shut down while other
    /// threads may still be in it.
    pub fn interrupt_waits(&self) {
        self.interrupted.store(true, Ordering::Release);
        for k in 0..shm::WAIT_WORDS as u64 {
            let _ = self.region.futex_wake(Region::wait_word_off(k), u32::MAX);
        }
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
        if self.tocs.is_poisoned() {
            return Some("internal state lock poisoned; reopen".into());
        }
        self.log.failed()
    }

    /// Marks the store unusable until reopened.
    pub fn fail(&self) {
        self.panicked.store(true, Ordering::Release);
    }

    /// This process's threads of control.
    fn tocs(&self) -> Result<MutexGuard<'_, Tocs>> {
        if let Some(why) = self.failed() {
            return Err(Error::Failed(why));
        }
        self.tocs
            .lock()
            .map_err(|_| Error::Failed("internal state lock poisoned; reopen".into()))
    }

    /// A section on the shared state, unless the store failed.
    fn section(&self) -> Result<Txn<'_>> {
        if let Some(why) = self.failed() {
            return Err(Error::Failed(why));
        }
        if self.has_deferred.load(Ordering::Acquire) {
            self.finish_deferred()?;
        }
        self.region.lock(self.mutex_wait).map_err(shm_error)
    }

    /// Finishes the busy completion of branch `b` (tag `tag`), whose record is durable, with
    /// `f` in as many sections as it needs (`f` says when it is done). When the mutex cannot be
    /// had in time (a peer stopped inside a section) the outcome is decided and durable all the
    /// same: the rest is left to this process's next section (or to whoever reaps it) and the
    /// caller may acknowledge the outcome.
    fn finish_logged(
        &self,
        b: Off,
        tag: u64,
        f: impl FnMut(&mut Txn<'_>) -> Sect<bool>,
    ) -> Result<()> {
        if let Some(why) = self.failed() {
            return Err(Error::Failed(why));
        }
        if self.has_deferred.load(Ordering::Acquire) {
            let _ = self.finish_deferred();
        }
        #[cfg(test)]
        if let Some(f) = self.before_finish.lock().unwrap().take() {
            f();
        }
        if !self.in_steps(f)? {
            self.defer(b, tag);
        }
        Ok(())
    }

    /// Runs `step` in sections, each committed, until it says it is done; a process that dies
    /// between two leaves a consistent state for a peer to go on from. `Ok(false)`: the mutex
    /// could not be had in time.
    fn in_steps(&self, mut step: impl FnMut(&mut Txn<'_>) -> Sect<bool>) -> Result<bool> {
        let mut first = true;
        loop {
            if !first {
                crate::crash::crash_point("rm.finish_step");
            }
            first = false;
            let mut t = match self.region.lock(self.mutex_wait) {
                Ok(t) => t,
                Err(shm::Error::Timeout) => return Ok(false),
                Err(e) => return Err(shm_error(e)),
            };
            match step(&mut t) {
                Ok(done) => {
                    t.commit().map_err(shm_error)?;
                    if done {
                        return Ok(true);
                    }
                }
                Err(Step::Roll(_)) => {
                    return Err(Error::Internal("a finishing section rolled".into()))
                }
                Err(Step::Fail(e)) => return Err(e),
            }
        }
    }

    /// Leaves the busy completion of `b` (tag `tag`), whose record (if it needs one) is
    /// durable, to this process's next section.
    fn defer(&self, b: Off, tag: u64) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((b, tag));
        self.has_deferred.store(true, Ordering::Release);
    }

    /// Finishes the completions [`Rm::finish_logged`] deferred, and the rollbacks too big for
    /// the section that began them.
    fn finish_deferred(&self) -> Result<()> {
        // Held throughout, so a thread that gets past it finds its own deferred work done; the
        // list's own lock is taken only briefly (sections push to it).
        let _finishing = self.finishing.lock().unwrap_or_else(|p| p.into_inner());
        let list = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        self.has_deferred.store(false, Ordering::Release);
        let owner = self.busy_owner();
        let mut left = Vec::new();
        let mut failure = None;
        for (b, tag) in list {
            if failure.is_some() || left.contains(&(b, tag)) {
                left.push((b, tag));
                continue;
            }
            let r = self.in_steps(|t| {
                // Still ours and busy: nobody else finishes a live process's completion.
                if branch::tag(t, b).is_ok_and(|x| x == tag)
                    && branch::busy(t, b).is_ok_and(|k| k != Busy::None)
                    && t.get_u64(b + B_BUSY_SLOT).is_ok_and(|o| o == owner)
                {
                    return Ok(reap::complete(t, b)?);
                }
                Ok(true)
            });
            match r {
                Ok(true) => {}
                Ok(false) => {
                    failure = Some(shm_error(shm::Error::Timeout));
                    left.push((b, tag));
                }
                Err(e) => {
                    failure = Some(e);
                    left.push((b, tag));
                }
            }
        }
        if !left.is_empty() {
            self.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(left);
            self.has_deferred.store(true, Ordering::Release);
        }
        failure.map_or(Ok(()), Err)
    }

    /// After a committed section: finishes what it left to finish (a big rollback).
    fn after_section(&self) {
        if self.has_deferred.load(Ordering::Acquire) {
            let _ = self.finish_deferred();
        }
    }

    /// Runs `f` in a section and commits it; when the log needs a new segment, the section is
    /// rolled back, the log rolls, and `f` runs again (so `f` must only change shared state).
    fn appending<T>(&self, mut f: impl FnMut(&mut Txn<'_>) -> Sect<T>) -> Result<T> {
        let mut rolls = 0;
        loop {
            let mut t = self.section()?;
            match f(&mut t) {
                Ok(v) => {
                    t.commit().map_err(shm_error)?;
                    self.after_section();
                    return Ok(v);
                }
                Err(Step::Roll(full)) => {
                    drop(t);
                    // A section appends at most half a segment (`section_log_budget`), so a fresh
                    // one holds it; rolls in a row (others filling the new segments meanwhile)
                    // are possible, but a bounded number: past that, an error, not a roll for
                    // ever.
                    rolls += 1;
                    if rolls > MAX_ROLLS {
                        return Err(Error::Internal(format!(
                            "a section's records did not fit in {MAX_ROLLS} fresh log segments"
                        )));
                    }
                    self.log.roll(full)?;
                }
                Err(Step::Fail(e)) => return Err(e),
            }
        }
    }

    /// Log bytes a section that appends many records appends at most (besides its first
    /// record): half the smallest segment, so that any fresh segment holds what it appends.
    fn section_log_budget(&self) -> u64 {
        self.log.smallest_segment() / 2
    }

    /// Runs `f` in a section that does not append, and commits it.
    fn shared<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Sect<T>) -> Result<T> {
        let mut t = self.section()?;
        match f(&mut t) {
            Ok(v) => {
                t.commit().map_err(shm_error)?;
                self.after_section();
                Ok(v)
            }
            Err(Step::Roll(_)) => Err(Error::Internal(
                "a section that appends nothing rolled".into(),
            )),
            Err(Step::Fail(e)) => Err(e),
        }
    }

    /// This process's id for thread of control `toc`.
    fn gtoc(&self, toc: Toc) -> u64 {
        branch::global_toc(self.slot, toc)
    }

    /// This process as the owner of a busy completion: slot + 1 and generation.
    fn busy_owner(&self) -> u64 {
        self.slot as u64 | (self.generation << 32)
    }

    /// Whether the settings make reads lock.
    fn serializable(&self) -> bool {
        self.cfg.isolation == Isolation::Serializable
    }

    /// Looks for dead peers now and then (every time a wait has lasted a while, at open): their
    /// leftovers are ended as the log says (`reap.rs`).
    fn reap_if_due(&self) {
        let due = {
            let mut last = self.last_reap.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= shm::RECHECK {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            let _ = self.reap_dead();
        }
    }

    /// The sync mode.
    pub fn sync_mode(&self) -> SyncMode {
        self.cfg.sync
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
}

impl<M: Media> Rm<M> {
    /// Abandons this instance as if its process had died at this instant: its files and
    /// mapping are closed (the kernel releases its locks) and nothing is cleaned up; its
    /// threads' associations and its slot are left for a peer, or a rebuild, to find. For
    /// crash tests in one process.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.crashed = true;
    }
}

impl<M: Media> Drop for Rm<M> {
    fn drop(&mut self) {
        if self.crashed {
            return;
        }
        if let Some(lf) = &self.lockfile {
            // Our threads' associations end as if this process died (a thread still associated
            // at close is a monitor that never called xa_end); idle, prepared and completed
            // branches stay, for any process to finish.
            if self.slot > 0 {
                let durable = self.log.durable();
                let (slot, generation) = (self.slot, self.generation);
                let _ = self.in_steps(|t| Ok(reap::reap_slot(t, slot, generation, durable)?));
                // What was too big for that section (orphaned): finished now.
                let _ = self.finish_orphans(durable);
            }
            let _ = lf.release_slot(&self.region, MUTEX_WAIT);
            let _ = lf.close_store();
        }
    }
}

#[cfg(test)]
impl Rm {
    /// The XA branch holding `key` exclusively, if any.
    pub(crate) fn exclusive_holder(&self, key: &[u8]) -> Option<crate::xid::Xid> {
        self.shared(|t| {
            let Some(k) = keys::find(t, key)? else {
                return Ok(None);
            };
            let b = t.get_u64(k + layout::K_XOWNER)?;
            if b == 0 || t.get_u8(b + layout::B_KIND)? != layout::KIND_XA {
                return Ok(None);
            }
            Ok(Some(layout::read_xid(t, b)?))
        })
        .unwrap()
    }

    /// Panics while holding this process's state lock (poisoning it), as a bug would.
    pub(crate) fn panic_holding_state(&self) {
        let _tocs = self.tocs.lock().unwrap();
        panic!("a test's panic while holding the state lock");
    }
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Error {
        match e {
            LogError::Failed(_) => Error::Failed(e.to_string()),
            LogError::NoSpace(_) => Error::NoSpace(e.to_string()),
            LogError::TooBig(_) => Error::TooBig(e.to_string()),
            LogError::NeedRoll(_) => Error::Internal(e.to_string()),
            LogError::Io(..)
            | LogError::Corrupt { .. }
            | LogError::NotOldest(_)
            | LogError::Gone(_) => Error::Io(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
