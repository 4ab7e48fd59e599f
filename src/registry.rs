//! Which `rmid` names which open store in this process, and which threads have it open.
//!
//! Owns: the R0/R1 state of every (thread of control, rmid) pair (XA reference §5.1) and the
//! life of open stores. Invariants: an rmid names at most one store and a store is open under
//! at most one rmid per process (a TM sends the same XID to every RM, so two rmids over one
//! store would collide); a store is open in this process (a peer of the other processes that
//! have it open, see [`crate::rm`]) exactly while some thread has it open; a thread that got
//! `XAER_RMFAIL` is back in R0 and reopens, reaching the store anew if its site failed.
//!
//! Reaching a store (rebuilding it from its log when nobody has it open, or attaching to the
//! shared state) can take long: it runs under that rmid's own site lock only, never under the registry's lock, so it holds up
//! no call and no open of any other rmid, nor calls of threads that already have the rmid open.
//! Opens of one rmid take its site lock in turn, so concurrent first opens end with one site.
//! An rmid is reserved (with its store and settings) from the start of its first `xa_open`, so
//! a concurrent open of the same store under another rmid is refused even before it is reached.
//! Lock order: a site lock, then the registry lock; never the other way round.
//!
//! Threads are numbered through a const-initialised thread-local with no destructor, so the
//! library registers no thread-exit hook and can be unloaded with `dlclose`.
//!
//! An rmid opened through the dynamic-registration switch (`mmxa_switch_dynamic`) also keeps a
//! [`Registrar`] (the monitor's `ax_reg`/`ax_unreg`). A thread is registered (state D1 of the XA
//! reference §5.4) exactly when the state machine has it actively associated with a branch; a
//! data call of any other thread asks the registrar which branch the work belongs to before
//! doing it. Every thread opens a given rmid through the same switch.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fxhash::FxHashMap;
use crate::janitor::Janitor;
use crate::rm::flags::StartMode;
use crate::rm::{self, Rm, Toc};
use crate::xid::Xid;
use once_cell::sync::Lazy;
use std::cell::Cell;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What the transaction monitor answered to a registration request (`ax_reg`, XA reference §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Work in this branch: a new one (`TM_OK`), joined (`TM_JOIN`) or resumed (`TM_RESUME`).
    Branch(Xid, StartMode),
    /// The null XID: the work is outside any global transaction; unregister after it.
    Outside,
}

/// The monitor's side of dynamic registration, as seen by the core: `ax_reg` and `ax_unreg`
/// for the calling thread. The C boundary implements it over the monitor's functions; tests can
/// implement it directly. Its failures are normally [`Error::Register`].
pub trait Registrar: Send + Sync {
    /// `ax_reg(rmid, &xid, TMNOFLAGS)`.
    fn register(&self, rmid: i32) -> Result<Registration>;
    /// `ax_unreg(rmid, TMNOFLAGS)`, after work done under the null XID.
    fn unregister(&self, rmid: i32) -> Result<()>;
}

/// Dynamic registration state of one rmid.
struct Dynamic {
    registrar: Box<dyn Registrar>,
}

/// An rmid's store as open in this process, with its orphan-policy thread.
struct Site {
    rm: Arc<Rm>,
    /// Enforces `orphan_rollback_s`, when set. Declared after `rm`: dropped (joined) first.
    _janitor: Option<Janitor>,
}

impl Site {
    fn failed(&self) -> bool {
        self.rm.failed().is_some()
    }
}

/// How this process reaches an rmid's store; `None` until an open first reaches it. Locked only by opens of that rmid, across reaching the store, and never
/// while the registry's lock is held.
type SiteCell = Arc<Mutex<Option<Site>>>;

struct Entry {
    cfg: Config,
    site: SiteCell,
    /// The threads in R1, each with its handle on the store (a failed handle stays until its
    /// thread gets `XAER_RMFAIL`; the thread then reopens through a new site).
    tocs: FxHashMap<Toc, Arc<Rm>>,
    /// `xa_open`s of this rmid under way: the entry (and so its rmid and store) stays reserved
    /// while any runs, even with no thread in R1.
    opening: usize,
    /// The process that opened it, as its fork generation: a child created by `fork` must not
    /// use its parent's store (a counter the fork handler bumps, not `getpid`, which is a
    /// system call on every call of the library).
    fork_gen: u64,
    /// Set when the rmid was opened through the dynamic-registration switch.
    dynamic: Option<Arc<Dynamic>>,
}

impl Entry {
    fn ours(&self) -> bool {
        self.fork_gen == crate::shm::fork_generation()
    }

    fn unused(&self) -> bool {
        self.tocs.is_empty() && self.opening == 0
    }
}

/// Removes `rmid`'s entry if no thread has it open and no open of it is under way. The caller
/// drops what it returns after releasing the registry's lock: dropping a site joins its
/// orphan-policy thread.
#[must_use]
fn remove_if_unused(reg: &mut FxHashMap<i32, Entry>, rmid: i32) -> Option<Entry> {
    reg.get(&rmid)
        .is_some_and(Entry::unused)
        .then(|| reg.remove(&rmid))
        .flatten()
}

static REGISTRY: Lazy<RwLock<FxHashMap<i32, Entry>>> = Lazy::new(Default::default);

thread_local! {
    static TOC: Cell<Toc> = const { Cell::new(0) };
}

/// The calling thread's number.
pub fn toc() -> Toc {
    TOC.with(|t| {
        if t.get() == 0 {
            t.set(rm::new_toc());
        }
        t.get()
    })
}

fn read() -> RwLockReadGuard<'static, FxHashMap<i32, Entry>> {
    REGISTRY.read().unwrap_or_else(|p| p.into_inner())
}

fn write() -> RwLockWriteGuard<'static, FxHashMap<i32, Entry>> {
    REGISTRY.write().unwrap_or_else(|p| p.into_inner())
}

fn switch_name(dynamic: bool) -> &'static str {
    if dynamic {
        "mmxa_switch_dynamic (dynamic registration)"
    } else {
        "mmxa_switch (static registration)"
    }
}

/// `xa_open` for the calling thread, through the static-registration switch.
pub fn open(rmid: i32, cfg: Config) -> Result<()> {
    open_with(rmid, cfg, None)
}

/// `xa_open` for the calling thread, through the dynamic-registration switch: data calls of a
/// thread that is not associated with a branch ask `registrar` first. The rmid must be open
/// through this switch in every thread.
pub fn open_dynamic(rmid: i32, cfg: Config, registrar: Box<dyn Registrar>) -> Result<()> {
    open_with(rmid, cfg, Some(registrar))
}

fn open_with(rmid: i32, mut cfg: Config, registrar: Option<Box<dyn Registrar>>) -> Result<()> {
    cfg.dir = crate::config::prepare_dir(&cfg).map_err(Error::Io)?;
    let toc = toc();
    let Some(mut opening) = reserve(rmid, &cfg, registrar, toc)? else {
        return Ok(());
    };
    let reached = reach(&opening.site, &cfg);
    opening.end(Some((toc, reached?)))
}

/// Checks `xa_open(rmid)` against what is open in this process and reserves the rmid (and its
/// store) for the open, or answers `None` if the calling thread has it open already.
fn reserve(
    rmid: i32,
    cfg: &Config,
    registrar: Option<Box<dyn Registrar>>,
    toc: Toc,
) -> Result<Option<Opening>> {
    let mut reg = write();
    // State inherited through fork belongs to the parent: forget it in the child.
    reg.retain(|_, e| e.ours());
    if let Some(e) = reg.get_mut(&rmid) {
        if e.cfg.dir != cfg.dir {
            return Err(Error::Invalid(format!(
                "rmid {rmid} already names the store {}",
                e.cfg.dir.display()
            )));
        }
        if e.cfg != *cfg {
            return Err(Error::Invalid(format!(
                "the store {} is open with other settings",
                cfg.dir.display()
            )));
        }
        if e.dynamic.is_some() != registrar.is_some() {
            return Err(Error::Invalid(format!(
                "rmid {rmid} is open through {} in this process; open it through the same \
                 switch in every thread",
                switch_name(e.dynamic.is_some())
            )));
        }
        if e.tocs.get(&toc).is_some_and(|s| s.failed().is_none()) {
            return Ok(None);
        }
        e.opening += 1;
        return Ok(Some(Opening::new(rmid, e.site.clone())));
    }
    if let Some((other, _)) = reg.iter().find(|(_, e)| e.cfg.dir == cfg.dir) {
        return Err(Error::Invalid(format!(
            "the store {} is already open under rmid {other} in this process",
            cfg.dir.display()
        )));
    }
    let site = SiteCell::default();
    reg.insert(
        rmid,
        Entry {
            cfg: cfg.clone(),
            site: site.clone(),
            tocs: FxHashMap::default(),
            opening: 1,
            fork_gen: crate::shm::fork_generation(),
            dynamic: registrar.map(|registrar| Arc::new(Dynamic { registrar })),
        },
    );
    Ok(Some(Opening::new(rmid, site)))
}

/// Reaches the store through `site` for one more thread, holding the site's lock (and no
/// other): attaches to the site, or establishes it if there is none yet or it failed.
fn reach(site: &SiteCell, cfg: &Config) -> Result<Arc<Rm>> {
    let mut site = site.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = site.as_ref().filter(|s| !s.failed()) {
        return Ok(s.rm.clone());
    }
    // Reach the store anew: another peer instance (the failed one goes once its last thread
    // leaves it).
    let rm = Arc::new(Rm::open(cfg.clone()).map_err(|e| match e {
        e if e.contains("other settings") => Error::Invalid(e),
        e => Error::Io(e),
    })?);
    let janitor = match cfg.orphan_rollback {
        Some(age) => Some(
            Janitor::start(rm.clone(), age)
                .map_err(|e| Error::Io(format!("cannot start the orphan policy's thread: {e}")))?,
        ),
        None => None,
    };
    *site = Some(Site {
        rm: rm.clone(),
        _janitor: janitor,
    });
    Ok(rm)
}

/// An `xa_open` under way: keeps its rmid reserved until it ends, even if the open fails or
/// panics.
struct Opening {
    rmid: i32,
    site: SiteCell,
    ended: bool,
}

impl Opening {
    fn new(rmid: i32, site: SiteCell) -> Opening {
        Opening {
            rmid,
            site,
            ended: false,
        }
    }

    /// Ends the open, putting the thread in R1 with `handle` if it reached the store. The
    /// entry is removed if that leaves it unused.
    fn end(&mut self, handle: Option<(Toc, Arc<Rm>)>) -> Result<()> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        // What this releases is dropped after the registry's lock (see `remove_if_unused`).
        let released = {
            let mut reg = write();
            let Some(e) = reg
                .get_mut(&self.rmid)
                .filter(|e| Arc::ptr_eq(&e.site, &self.site))
            else {
                // Everything was closed meanwhile: the library is being unloaded.
                return match handle {
                    Some(_) => Err(Error::Failed("the library is being unloaded".into())),
                    None => Ok(()),
                };
            };
            e.opening -= 1;
            let replaced = handle.and_then(|(toc, h)| e.tocs.insert(toc, h));
            (replaced, remove_if_unused(&mut reg, self.rmid))
        };
        drop(released);
        Ok(())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let _ = self.end(None);
    }
}

/// `xa_close` for the calling thread: no effect in R0; refused while associated.
pub fn close(rmid: i32) -> Result<()> {
    let toc = toc();
    let Some((store, _)) = lookup(rmid, toc) else {
        return Ok(());
    };
    // Not under the registry's lock: closing may wait on the store's shared region.
    if store.failed().is_none() {
        store.close_toc(toc)?;
    }
    drop_toc(rmid, toc, &store);
    Ok(())
}

fn same(a: &Arc<Rm>, b: &Arc<Rm>) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
}

/// Puts the calling thread back in R0 for `rmid` after `XAER_RMFAIL` from `store`.
fn drop_toc(rmid: i32, toc: Toc, store: &Arc<Rm>) {
    let gone = {
        let mut reg = write();
        if let Some(e) = reg.get_mut(&rmid) {
            if e.tocs.get(&toc).is_some_and(|r| same(r, store)) {
                e.tocs.remove(&toc);
            }
        }
        remove_if_unused(&mut reg, rmid)
    };
    drop(gone);
}

/// A thread's handle on a store, and the rmid's dynamic registration state.
type Handle = (Arc<Rm>, Option<Arc<Dynamic>>);

/// The instance the thread uses for `rmid`, and the rmid's dynamic registration state.
fn lookup(rmid: i32, toc: Toc) -> Option<Handle> {
    let reg = read();
    let e = reg.get(&rmid).filter(|e| e.ours())?;
    let rm = e.tocs.get(&toc)?;
    Some((rm.clone(), e.dynamic.clone()))
}

fn not_open(rmid: i32) -> Error {
    Error::NotOpen(format!(
        "rmid {rmid} is not open in this thread (xa_open first)"
    ))
}

/// Runs an XA call for `rmid` in the calling thread: [`Error::NotOpen`] when not open here,
/// [`Error::Failed`] (and back to R0) when the store has failed.
pub fn call<T>(rmid: i32, f: impl FnOnce(&Rm, Toc) -> Result<T>) -> Result<T> {
    let toc = toc();
    let Some((rm, _)) = lookup(rmid, toc) else {
        return Err(not_open(rmid));
    };
    let result = match rm.failed() {
        Some(why) => Err(Error::Failed(why)),
        None => f(&rm, toc),
    };
    if matches!(&result, Err(Error::Failed(_))) {
        drop_toc(rmid, toc, &rm);
    }
    result
}

/// Runs a data call for `rmid` in the calling thread: [`Error::NotOpen`] when not open here,
/// [`Error::Failed`] when the store has failed.
pub fn data_call<T>(rmid: i32, f: impl FnOnce(&Rm, Toc) -> Result<T>) -> Result<T> {
    let toc = toc();
    let Some((rm, dynamic)) = lookup(rmid, toc) else {
        return Err(not_open(rmid));
    };
    if let Some(why) = rm.failed() {
        return Err(Error::Failed(why));
    }
    match dynamic {
        None => f(&rm, toc),
        Some(d) => registered_call(rmid, toc, &rm, &d, f),
    }
}

/// A data call on a dynamically registered rmid (XA reference §8): a thread that is not
/// registered asks the monitor which branch the work belongs to, and starts, joins or resumes
/// it as `xa_start` would; under the null XID the call works outside any branch and the thread
/// unregisters afterwards.
fn registered_call<T>(
    rmid: i32,
    toc: Toc,
    rm: &Arc<Rm>,
    d: &Dynamic,
    f: impl FnOnce(&Rm, Toc) -> Result<T>,
) -> Result<T> {
    // A thread in a local transaction works in it, outside any global transaction.
    if rm.active_branch(toc).is_some() || rm.in_local_txn(toc) {
        return f(rm, toc);
    }
    match d.registrar.register(rmid)? {
        Registration::Branch(xid, mode) => {
            if let Err(e) = rm.start(toc, &xid, mode) {
                if matches!(e, Error::Failed(_)) {
                    drop_toc(rmid, toc, rm);
                    return Err(e);
                }
                let msg = format!(
                    "ax_reg named XID {xid} ({mode:?}), which cannot be used: {} (xa_start \
                     answers {})",
                    e.message(),
                    e.xa_code()
                );
                return Err(match e {
                    Error::RolledBack(rb, _) => Error::RolledBack(rb, msg),
                    _ => Error::Register(msg),
                });
            }
            f(rm, toc)
        }
        Registration::Outside => {
            let result = f(rm, toc);
            let unreg = d.registrar.unregister(rmid);
            let value = result?;
            unreg.map_err(|e| {
                Error::Register(format!(
                    "the call was done outside any transaction, then {}",
                    e.message()
                ))
            })?;
            Ok(value)
        }
    }
}

/// After a panic inside an XA call: the instance the thread uses may be inconsistent, so it
/// fails until reopened.
pub fn fail_after_panic(rmid: i32) {
    let _ = std::panic::catch_unwind(|| {
        if let Some((rm, _)) = lookup(rmid, toc()) {
            rm.fail();
        }
    });
}

/// Closes every store of this library copy: releases their locks, mappings and files. Runs
/// when the library is unloaded (`dlclose`, or process exit), so a copy loaded later — after a
/// `dlclose` without `xa_close`, as some monitors do — can open the stores again. Calls still in
/// flight keep their instance alive through its `Arc`.
pub fn unload() {
    let entries = std::mem::take(&mut *write());
    drop(entries);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn cfg(dir: &std::path::Path) -> Config {
        let mut cfg = Config::new(dir);
        cfg.segment_size = 4 << 20;
        cfg
    }

    /// Runs `f(i)` in `n` threads that start it together; returns their results in order.
    fn together<T: Send + 'static>(
        n: usize,
        f: impl Fn(usize, &Barrier) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let (f, barrier) = (Arc::new(f), Arc::new(Barrier::new(n)));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (f.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    f(i, &barrier)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Threads opening one rmid at once end with one site: all of them use the one instance
    /// this process hosts.
    #[test]
    fn concurrent_opens_of_one_rmid_end_with_one_site() {
        const RMID: i32 = 9101;
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let c = cfg(dir.path());
        let handles = together(6, move |_, all_open| {
            open(RMID, c.clone()).unwrap();
            let (store, _) = lookup(RMID, toc()).unwrap();
            all_open.wait();
            close(RMID).unwrap();
            Arc::as_ptr(&store) as *const () as usize
        });
        assert!(handles.iter().all(|&h| h == handles[0]), "{handles:?}");
        assert!(!read().contains_key(&RMID), "closed by every thread");
    }

    /// A panic that poisoned a store's state in this process fails it for the registry too: a call
    /// answers `XAER_RMFAIL` (back to R0), and the reopen reaches a new instance instead of
    /// reattaching to the broken one (which another thread still has open).
    #[test]
    fn a_store_poisoned_by_a_panic_is_reached_anew() {
        const RMID: i32 = 9104;
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let c = cfg(dir.path());
        let (opened, done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let other = {
            let (c, opened, done) = (c.clone(), opened.clone(), done.clone());
            std::thread::spawn(move || {
                open(RMID, c).unwrap();
                opened.wait();
                done.wait();
                close(RMID)
            })
        };
        open(RMID, c.clone()).unwrap();
        opened.wait();
        let (broken, _) = lookup(RMID, toc()).unwrap();
        let rm = broken.clone();
        assert!(std::thread::spawn(move || rm.panic_holding_state())
            .join()
            .is_err());
        let active = call(RMID, |s, t| {
            s.start(t, &Xid::from_parts(1, b"g", b"b").unwrap(), StartMode::New)
        });
        assert!(matches!(active, Err(Error::Failed(_))), "{active:?}");
        open(RMID, c).unwrap();
        let (store, _) = lookup(RMID, toc()).unwrap();
        assert!(!same(&store, &broken), "a new instance");
        assert_eq!(
            data_call(RMID, |s, t| s.put(t, b"k", Some(b"v"))),
            Ok(false)
        );
        close(RMID).unwrap();
        done.wait();
        other.join().unwrap().unwrap();
    }

    /// One store opened under two rmids at once: exactly one of the opens succeeds.
    #[test]
    fn one_store_under_two_rmids_at_once_is_refused_once() {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let c = cfg(dir.path());
        let opened = together(2, move |i, tried| {
            let rmid = 9102 + i as i32;
            let r = open(rmid, c.clone());
            tried.wait();
            if r.is_ok() {
                close(rmid).unwrap();
            }
            r.map_err(|e| e.message().to_string())
        });
        let ok = opened.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{opened:?}");
        let refused = opened.iter().find_map(|r| r.clone().err()).unwrap();
        assert!(refused.contains("already open under rmid"), "{refused}");
    }
}
