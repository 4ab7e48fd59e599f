//! The XA state tables of the reference (`xa-spec.md` §5.2 association, §5.3 branch states),
//! cell by cell, against the core `mmxa::rm::Rm`, plus the flag-validation rules of §2.3,
//! tightly/loosely coupled threads, lock timeouts and deadlocks.
//!
//! Threads of control are plain numbers (`Toc`), so every cell is a single-threaded call
//! sequence, except the deadlock, lock-wait and concurrent-join tests, which need real
//! threads.
//!
//! Each table test runs every cell of one row (one call, all states) and reports every cell
//! that fails, not just the first. A cell builds a fresh store in a given state, makes the call,
//! checks its code, the associations (T0/T1/T2) it names, any data/lock effects, and then
//! observes the branch's resulting state with follow-up calls (see [`observe`]).
//!
//! Choices of mmxa where the reference is [P] are tested as the README documents them
//! ("Associations and branch states"). Where a cell of §5.3 is ambiguous for mmxa's
//! representation (a suspended association keeps the branch S1; associations, suspended ones
//! included, must end before prepare), the comment on the cell says which reading is tested.

mod rm_common;

use mmxa::config::{Config, SyncMode};
use mmxa::error::Outcome;
use mmxa::rm::flags::{self, EndMode, Entry, StartMode};
use mmxa::rm::{Rm, Toc};
use mmxa::status::*;
use mmxa::xa::*;
use mmxa::xid::Xid;
use rm_common::*;
use std::ops::Deref;
use std::os::raw::c_long;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The thread of control that does the branch's work in every setup.
const A: Toc = 1;
/// A second worker (joins in some setups).
const B: Toc = 2;
/// A thread of control with no association: the "TM" issuing completion calls.
const C: Toc = 3;
/// Observers, used only by [`observe`] and the lock probes.
const OBS: Toc = 900;
const OBS2: Toc = 901;

const K: &[u8] = b"k";
const V: &[u8] = b"v";

/// The branch every table is about.
fn x() -> Xid {
    xid(b"gtrid-x", b"bq-1")
}

/// Another, unrelated branch.
fn y() -> Xid {
    xid(b"gtrid-y", b"bq-1")
}

/// A branch of the same global transaction as [`x`] (loosely coupled).
fn x2() -> Xid {
    xid(b"gtrid-x", b"bq-2")
}

// ---- fixture ---------------------------------------------------------------------------------

struct Fx {
    _dir: TempDir,
    cfg: Config,
    rm: Option<Rm>,
}

impl Fx {
    fn with(sync: SyncMode, lock_timeout: Duration) -> Fx {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        let cfg = config(dir.path(), sync, lock_timeout);
        let rm = Some(open(&cfg));
        Fx { _dir: dir, cfg, rm }
    }

    /// Durable (msync) store with lock timeout 0: a conflicting write fails at once.
    fn new() -> Fx {
        Fx::with(SyncMode::Msync, Duration::ZERO)
    }

    /// Drops the store and opens it again.
    fn reopen(&mut self) {
        self.rm = None;
        self.rm = Some(open(&self.cfg));
    }

    /// A process crash: the store is abandoned without any cleanup (the page cache keeps what
    /// was written; the kernel releases its locks), then opened again, as by a restarted
    /// process.
    fn crash(&mut self) {
        if let Some(rm) = self.rm.take() {
            rm.simulate_crash();
        }
        self.rm = Some(open(&self.cfg));
    }
}

impl Deref for Fx {
    type Target = Rm;
    fn deref(&self) -> &Rm {
        self.rm.as_ref().expect("store open")
    }
}

/// Asserts one step of a setup or a follow-up.
#[track_caller]
fn must(got: i32, want: i32, what: &str) {
    assert_eq!(
        got,
        want,
        "{what}: got {}, want {}",
        xa_name(got),
        xa_name(want)
    );
}

#[track_caller]
fn must_data<T: std::fmt::Debug>(r: Result<T, mmxa::error::Error>, want: i32, what: &str) {
    let got = dcode(&r);
    assert_eq!(
        got,
        want,
        "{what}: got {} ({r:?}), want {}",
        mmxa_name(got),
        mmxa_name(want)
    );
}

/// The committed value of `key`, as a thread with no association reads it.
fn committed(rm: &Rm, key: &[u8]) -> Option<Vec<u8>> {
    rm.get(OBS2, key).expect("get from an unassociated ToC")
}

/// Whether `key` is locked by some branch: a one-operation write of it (lock timeout 0) fails.
/// The probe rewrites the committed value on success, so use it last.
fn locked(rm: &Rm, key: &[u8]) -> bool {
    match rm.put(OBS2, key, Some(b"probe")) {
        Ok(_) => false,
        Err(e) if e.mmxa_code() == MMXA_ELOCKTIMEOUT => true,
        Err(e) => panic!("lock probe: unexpected {e:?}"),
    }
}

// ---- states ----------------------------------------------------------------------------------

/// How a cell's store is prepared. Unless stated, the branch is [`x`], its work was done by
/// ToC [`A`] and wrote `K = V`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// Nothing: X unknown.
    S0,
    /// A is T1 (active).
    S1,
    /// A and B are both T1 (tightly coupled).
    S1Joined,
    /// A is T2 (suspended): still S1 in mmxa (§5.3 note: S1 while any association is T1/T2).
    S1Susp,
    /// A suspended with TMMIGRATE: A is T0, any ToC may resume once; the branch is S1.
    S1Migr,
    /// A is T1; B joined and ended with TMFAIL: rollback-only with an active association.
    S1Doomed,
    /// Idle, with a write.
    S2,
    /// Idle, no write.
    S2Empty,
    /// Prepared.
    S3,
    /// Rollback-only (A ended with TMFAIL), no association.
    S4,
    /// Rollback-only with only a suspended association (A is T2; B joined and failed).
    S4Susp,
    /// Heuristically committed (operator).
    S5Com,
    /// Heuristically rolled back (operator).
    S5Rb,
}

fn build(setup: Setup) -> Fx {
    let fx = Fx::new();
    let rm: &Rm = &fx;
    let x = x();
    let work = |rm: &Rm| {
        must(
            code(rm.start(A, &x, StartMode::New)),
            XA_OK,
            "setup start(A)",
        );
        must_data(rm.put(A, K, Some(V)), MMXA_OK, "setup put(A)");
    };
    match setup {
        Setup::S0 => {}
        Setup::S1 => work(rm),
        Setup::S1Joined => {
            work(rm);
            must(
                code(rm.start(B, &x, StartMode::Join)),
                XA_OK,
                "setup join(B)",
            );
        }
        Setup::S1Susp => {
            work(rm);
            must(
                code(rm.end(A, &x, EndMode::Suspend)),
                XA_OK,
                "setup suspend(A)",
            );
        }
        Setup::S1Migr => {
            work(rm);
            must(
                code(rm.end(A, &x, EndMode::SuspendMigrate)),
                XA_OK,
                "setup suspend|migrate(A)",
            );
        }
        Setup::S1Doomed => {
            work(rm);
            must(
                code(rm.start(B, &x, StartMode::Join)),
                XA_OK,
                "setup join(B)",
            );
            must(
                code(rm.end(B, &x, EndMode::Fail)),
                XA_RBROLLBACK,
                "setup end(B, TMFAIL)",
            );
        }
        Setup::S2 => {
            work(rm);
            must(code(rm.end(A, &x, EndMode::Success)), XA_OK, "setup end(A)");
        }
        Setup::S2Empty => {
            must(
                code(rm.start(A, &x, StartMode::New)),
                XA_OK,
                "setup start(A)",
            );
            must(code(rm.end(A, &x, EndMode::Success)), XA_OK, "setup end(A)");
        }
        Setup::S3 | Setup::S5Com | Setup::S5Rb => {
            work(rm);
            must(code(rm.end(A, &x, EndMode::Success)), XA_OK, "setup end(A)");
            must(code(rm.prepare(C, &x)), XA_OK, "setup prepare");
            let outcome = match setup {
                Setup::S5Com => XA_HEURCOM,
                Setup::S5Rb => XA_HEURRB,
                _ => XA_OK,
            };
            if outcome != XA_OK {
                must(
                    code0(rm.heuristic(
                        &x,
                        Outcome::from_log(outcome).expect("outcome"),
                        "test operator",
                    )),
                    XA_OK,
                    "setup heuristic",
                );
            }
        }
        Setup::S4 => {
            work(rm);
            must(
                code(rm.end(A, &x, EndMode::Fail)),
                XA_RBROLLBACK,
                "setup end(A, TMFAIL)",
            );
        }
        Setup::S4Susp => {
            work(rm);
            must(
                code(rm.end(A, &x, EndMode::Suspend)),
                XA_OK,
                "setup suspend(A)",
            );
            must(
                code(rm.start(B, &x, StartMode::Join)),
                XA_OK,
                "setup join(B)",
            );
            must(
                code(rm.end(B, &x, EndMode::Fail)),
                XA_RBROLLBACK,
                "setup end(B, TMFAIL)",
            );
        }
    }
    fx
}

/// A branch state as observed from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obs {
    S0,
    /// Active or suspended associations, not rollback-only.
    S1,
    S2,
    S3,
    /// Rollback-only, no association; the `XA_RB*` code it reports.
    S4(i32),
    /// Rollback-only while some ToC is still associated (T1: S1 marked, reported at its
    /// `xa_end`; only T2: S4 by the §5.3 projection). Prepare answers `XAER_PROTO` until the
    /// associations end.
    RbAssoc(i32),
    /// Heuristically completed, with its code.
    S5(i32),
}

/// Observes the state of [`x`] with follow-up calls from fresh ToCs. Destructive: call last.
///
/// - listed by `xa_recover` → S3 or S5; a two-phase commit tells them apart (S3: `XA_OK`,
///   S5: its heuristic code);
/// - else `xa_start(TMJOIN)` from a fresh ToC: `XAER_NOTA` → S0 (confirmed by
///   `xa_start(TMNOFLAGS)` succeeding); `XA_RB*` → rollback-only, and `xa_prepare` then says
///   whether associations remain (`XAER_PROTO`) or not (`XA_RB*`: S4); `XA_OK` → ended again,
///   then `xa_prepare`: `XAER_PROTO` → S1 (other associations), `XA_OK`/`XA_RDONLY` → S2.
fn observe(rm: &Rm) -> Obs {
    let x = x();
    let listed = rm
        .recover(OBS, scan(true, true), 100)
        .expect("recover in observe");
    if listed.contains(&x) {
        return match code(rm.commit(OBS, &x, false)) {
            XA_OK => Obs::S3,
            c @ (XA_HEURCOM | XA_HEURRB | XA_HEURMIX | XA_HEURHAZ) => Obs::S5(c),
            c => panic!("observe: commit of a listed branch gave {}", xa_name(c)),
        };
    }
    match code(rm.start(OBS, &x, StartMode::Join)) {
        XAER_NOTA => {
            must(
                code(rm.start(OBS, &x, StartMode::New)),
                XA_OK,
                "observe: start(TMNOFLAGS) of an unknown XID",
            );
            must(
                code(rm.end(OBS, &x, EndMode::Success)),
                XA_OK,
                "observe end",
            );
            must(code(rm.rollback(OBS, &x)), XA_OK, "observe rollback");
            Obs::S0
        }
        XA_OK => {
            must(
                code(rm.end(OBS, &x, EndMode::Success)),
                XA_OK,
                "observe end",
            );
            match code(rm.prepare(OBS, &x)) {
                XAER_PROTO => Obs::S1,
                XA_OK | XA_RDONLY => Obs::S2,
                c => panic!("observe: prepare of a joinable branch gave {}", xa_name(c)),
            }
        }
        rb @ XA_RBBASE..=XA_RBEND => match code(rm.prepare(OBS, &x)) {
            XAER_PROTO => Obs::RbAssoc(rb),
            c @ XA_RBBASE..=XA_RBEND => {
                assert_eq!(
                    c, rb,
                    "observe: join and prepare disagree on the rollback code"
                );
                Obs::S4(c)
            }
            c => panic!(
                "observe: prepare of a rollback-only branch gave {}",
                xa_name(c)
            ),
        },
        c => panic!("observe: join of an unlisted branch gave {}", xa_name(c)),
    }
}

/// A ToC's association with [`x`] as a cell expects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Te {
    /// Not associated with anything.
    T0,
    /// Active on X.
    T1,
    /// Suspended on X.
    T2,
    /// Associated (T1 or T2) without probing which: for rollback-only branches, where the
    /// probes would end the association.
    Assoc,
}

/// Observes `toc`'s association with X, restoring it afterwards (for branches that are not
/// rollback-only).
fn t_state(rm: &Rm, toc: Toc, x: &Xid) -> Result<Te, String> {
    if !rm.toc_associated(toc) {
        return Ok(Te::T0);
    }
    match code(rm.end(toc, x, EndMode::Suspend)) {
        XA_OK => {
            let c = code(rm.start(toc, x, StartMode::Resume));
            if c != XA_OK {
                return Err(format!("restoring T1 of ToC {toc}: {}", xa_name(c)));
            }
            Ok(Te::T1)
        }
        XAER_PROTO => match code(rm.start(toc, x, StartMode::Resume)) {
            XA_OK => {
                let c = code(rm.end(toc, x, EndMode::Suspend));
                if c != XA_OK {
                    return Err(format!("restoring T2 of ToC {toc}: {}", xa_name(c)));
                }
                Ok(Te::T2)
            }
            c => Err(format!(
                "ToC {toc} is associated, but neither T1 nor T2 on X (resume: {})",
                xa_name(c)
            )),
        },
        c => Err(format!(
            "probing ToC {toc}: end(TMSUSPEND) gave {}",
            xa_name(c)
        )),
    }
}

fn check_t(rm: &Rm, toc: Toc, want: Te) -> Result<(), String> {
    let got = match want {
        Te::Assoc => {
            if rm.toc_associated(toc) {
                Te::Assoc
            } else {
                Te::T0
            }
        }
        _ => t_state(rm, toc, &x())?,
    };
    if got != want {
        return Err(format!("ToC {toc}: association {got:?}, want {want:?}"));
    }
    Ok(())
}

// ---- the table runner --------------------------------------------------------------------

type Check = Box<dyn FnOnce(&mut Fx) -> Result<(), String>>;

struct Table {
    row: &'static str,
    cells: usize,
    failures: Vec<String>,
}

fn none() -> Check {
    Box::new(|_| Ok(()))
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic".into()
    }
}

impl Table {
    fn new(row: &'static str) -> Table {
        Table {
            row,
            cells: 0,
            failures: Vec::new(),
        }
    }

    /// One cell: build `setup`, make the call (returns its code), expect `want`; check each
    /// ToC's association, run `check`, then observe the branch and expect `then`.
    #[allow(clippy::too_many_arguments)]
    fn cell(
        &mut self,
        label: &str,
        setup: Setup,
        call: impl FnOnce(&mut Fx) -> i32,
        want: i32,
        assoc: &[(Toc, Te)],
        check: Check,
        then: Obs,
    ) {
        self.cells += 1;
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let mut fx = build(setup);
            let got = call(&mut fx);
            if got != want {
                return Err(format!("returned {}, want {}", xa_name(got), xa_name(want)));
            }
            for &(toc, te) in assoc {
                check_t(&fx, toc, te)?;
            }
            check(&mut fx)?;
            let obs = observe(&fx);
            if obs != then {
                return Err(format!("resulting state {obs:?}, want {then:?}"));
            }
            Ok(())
        }));
        let err = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(p) => format!("panicked: {}", panic_text(p)),
        };
        self.failures
            .push(format!("[{}] {label} (setup {setup:?}): {err}", self.row));
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} cells failed:\n  {}",
            self.failures.len(),
            self.cells,
            self.failures.join("\n  ")
        );
    }
}

fn is_committed(key: &'static [u8], want: Option<&'static [u8]>) -> Check {
    Box::new(move |fx| {
        let got = committed(fx, key);
        if got.as_deref() != want {
            return Err(format!("committed {key:?} = {got:?}, want {want:?}"));
        }
        Ok(())
    })
}

fn is_locked(key: &'static [u8], want: bool) -> Check {
    Box::new(move |fx| {
        if locked(fx, key) != want {
            return Err(format!(
                "key {key:?} {} locked",
                if want { "is not" } else { "is" }
            ));
        }
        Ok(())
    })
}

fn both(a: Check, b: Check) -> Check {
    Box::new(move |fx| {
        a(fx)?;
        b(fx)
    })
}

/// The S-table setups every row covers, with the state each leaves when nothing changes.
const STATES: [(Setup, Obs); 7] = [
    (Setup::S0, Obs::S0),
    (Setup::S1, Obs::S1),
    (Setup::S2, Obs::S2),
    (Setup::S3, Obs::S3),
    (Setup::S4, Obs::S4(XA_RBROLLBACK)),
    (Setup::S5Com, Obs::S5(XA_HEURCOM)),
    (Setup::S5Rb, Obs::S5(XA_HEURRB)),
];

// ---- §5.3 branch states, row by row ------------------------------------------------------

#[test]
fn s_start_noflags() {
    let mut t = Table::new("xa_start(TMNOFLAGS)");
    for (setup, stays) in STATES {
        let (want, then, ta) = match setup {
            Setup::S0 => (XA_OK, Obs::S1, Te::T1),
            _ => (XAER_DUPID, stays, Te::T0),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.start(C, &x(), StartMode::New)),
            want,
            &[(C, ta)],
            none(),
            then,
        );
    }
    // A reused, forgotten XID starts a fresh branch that sees none of the old one's work.
    t.cell(
        "S0 after commit: reused XID is a fresh branch",
        Setup::S3,
        |f| {
            must(code(f.commit(C, &x(), false)), XA_OK, "commit");
            code(f.start(C, &x(), StartMode::New))
        },
        XA_OK,
        &[(C, Te::T1)],
        Box::new(|f| {
            must(code(f.end(C, &x(), EndMode::Success)), XA_OK, "end");
            must(
                code(f.prepare(C, &x())),
                XA_RDONLY,
                "the fresh branch wrote nothing",
            );
            Ok(())
        }),
        Obs::S0,
    );
    t.finish();
}

#[test]
fn s_start_join() {
    let mut t = Table::new("xa_start(TMJOIN)");
    for (setup, stays) in STATES {
        let (want, then, tc) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, Te::T0),
            Setup::S1 | Setup::S2 => (XA_OK, Obs::S1, Te::T1),
            Setup::S4 => (XA_RBROLLBACK, stays, Te::T0),
            _ => (XAER_PROTO, stays, Te::T0),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.start(C, &x(), StartMode::Join)),
            want,
            &[(C, tc)],
            none(),
            then,
        );
    }
    // Joining a branch marked rollback-only while another ToC is still active: XA_RB*, the
    // joiner is not associated.
    t.cell(
        "S1 rollback-only",
        Setup::S1Doomed,
        |f| code(f.start(C, &x(), StartMode::Join)),
        XA_RBROLLBACK,
        &[(C, Te::T0), (A, Te::Assoc)],
        none(),
        Obs::RbAssoc(XA_RBROLLBACK),
    );
    // Joining the branch of a migrated suspension is a plain join.
    t.cell(
        "S1 suspended for migration",
        Setup::S1Migr,
        |f| code(f.start(C, &x(), StartMode::Join)),
        XA_OK,
        &[(C, Te::T1)],
        none(),
        Obs::S1,
    );
    t.finish();
}

#[test]
fn s_start_resume() {
    let mut t = Table::new("xa_start(TMRESUME)");
    t.cell(
        "S0",
        Setup::S0,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XAER_NOTA,
        &[(C, Te::T0)],
        none(),
        Obs::S0,
    );
    t.cell(
        "S1, by the suspending ToC",
        Setup::S1Susp,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XA_OK,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, suspended without TMMIGRATE, by another ToC",
        Setup::S1Susp,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XAER_PROTO,
        &[(C, Te::T0), (A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, suspended with TMMIGRATE, by another ToC",
        Setup::S1Migr,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XA_OK,
        &[(C, Te::T1), (A, Te::T0)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, suspended with TMMIGRATE, by the suspending ToC",
        Setup::S1Migr,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XA_OK,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, a migrated suspension resumes only once",
        Setup::S1Migr,
        |f| {
            must(
                code(f.start(C, &x(), StartMode::Resume)),
                XA_OK,
                "first resume",
            );
            code(f.start(B, &x(), StartMode::Resume))
        },
        XAER_PROTO,
        &[(B, Te::T0), (C, Te::T1)],
        none(),
        Obs::S1,
    );
    // mmxa keeps a suspended branch S1 (§5.3 note), so an S2 branch has nothing to resume.
    t.cell(
        "S2: nothing suspended",
        Setup::S2,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XAER_PROTO,
        &[(C, Te::T0)],
        none(),
        Obs::S2,
    );
    for (setup, then) in [
        (Setup::S3, Obs::S3),
        (Setup::S5Com, Obs::S5(XA_HEURCOM)),
        (Setup::S5Rb, Obs::S5(XA_HEURRB)),
    ] {
        t.cell(
            "prepared/heuristic",
            setup,
            |f| code(f.start(C, &x(), StartMode::Resume)),
            XAER_PROTO,
            &[(C, Te::T0)],
            none(),
            then,
        );
    }
    // S4 with this ToC's suspended association: XA_RB*, and the ToC stays T2 (a failed
    // xa_start leaves the association as it was; §5.2).
    t.cell(
        "S4, by the suspending ToC",
        Setup::S4Susp,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XA_RBROLLBACK,
        &[(A, Te::Assoc)],
        Box::new(|f| {
            must(
                code(f.end(A, &x(), EndMode::Success)),
                XA_RBROLLBACK,
                "ending the suspended association",
            );
            Ok(())
        }),
        Obs::S4(XA_RBROLLBACK),
    );
    // S4 with no suspended association: §5.2 (T0, not migrated) → XAER_PROTO.
    t.cell(
        "S4, nothing suspended",
        Setup::S4,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XAER_PROTO,
        &[(C, Te::T0)],
        none(),
        Obs::S4(XA_RBROLLBACK),
    );
    t.finish();
}

/// xa_end(TMSUCCESS) and xa_end(TMFAIL) share most cells.
fn end_row(t: &mut Table, mode: EndMode) {
    let ok_code = if mode == EndMode::Fail {
        XA_RBROLLBACK
    } else {
        XA_OK
    };
    let after_last = if mode == EndMode::Fail {
        Obs::S4(XA_RBROLLBACK)
    } else {
        Obs::S2
    };
    for (setup, stays) in STATES {
        let (want, then) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0),
            Setup::S1 => (ok_code, after_last),
            _ => (XAER_PROTO, stays),
        };
        t.cell(
            "by A (T1 in S1; T0 otherwise)",
            setup,
            move |f| code(f.end(A, &x(), mode)),
            want,
            &[(A, Te::T0)],
            none(),
            then,
        );
    }
    t.cell(
        "S1, by a ToC with no association",
        Setup::S1,
        move |f| code(f.end(C, &x(), mode)),
        XAER_PROTO,
        &[(C, Te::T0), (A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, not the last association",
        Setup::S1Joined,
        move |f| code(f.end(A, &x(), mode)),
        ok_code,
        &[
            (A, Te::T0),
            (
                B,
                if mode == EndMode::Fail {
                    Te::Assoc
                } else {
                    Te::T1
                },
            ),
        ],
        none(),
        if mode == EndMode::Fail {
            Obs::RbAssoc(XA_RBROLLBACK)
        } else {
            Obs::S1
        },
    );
    t.cell(
        "S1, ends the suspended association",
        Setup::S1Susp,
        move |f| code(f.end(A, &x(), mode)),
        ok_code,
        &[(A, Te::T0)],
        none(),
        after_last,
    );
    t.cell(
        "S1, another ToC cannot end a suspended association",
        Setup::S1Susp,
        move |f| code(f.end(C, &x(), mode)),
        XAER_PROTO,
        &[(C, Te::T0), (A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1, a migrated suspension is ended only by resuming it",
        Setup::S1Migr,
        move |f| code(f.end(A, &x(), mode)),
        XAER_PROTO,
        &[(A, Te::T0)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1 rollback-only: the last xa_end reports it",
        Setup::S1Doomed,
        move |f| code(f.end(A, &x(), mode)),
        XA_RBROLLBACK,
        &[(A, Te::T0)],
        none(),
        Obs::S4(XA_RBROLLBACK),
    );
    t.cell(
        "S4, ends the suspended association",
        Setup::S4Susp,
        move |f| code(f.end(A, &x(), mode)),
        XA_RBROLLBACK,
        &[(A, Te::T0)],
        none(),
        Obs::S4(XA_RBROLLBACK),
    );
}

#[test]
fn s_end_success() {
    let mut t = Table::new("xa_end(TMSUCCESS)");
    end_row(&mut t, EndMode::Success);
    t.finish();
}

#[test]
fn s_end_fail() {
    let mut t = Table::new("xa_end(TMFAIL)");
    end_row(&mut t, EndMode::Fail);
    // The branch's work is discarded by the rollback that follows.
    t.cell(
        "S1 → S4, then xa_rollback → S0, work undone, locks released",
        Setup::S1,
        |f| {
            must(
                code(f.end(A, &x(), EndMode::Fail)),
                XA_RBROLLBACK,
                "end(TMFAIL)",
            );
            code(f.rollback(C, &x()))
        },
        XA_OK,
        &[(A, Te::T0)],
        both(is_committed(K, None), is_locked(K, false)),
        Obs::S0,
    );
    t.finish();
}

fn suspend_row(t: &mut Table, mode: EndMode) {
    let (ta, then) = if mode == EndMode::Suspend {
        (Te::T2, Obs::S1)
    } else {
        (Te::T0, Obs::S1)
    };
    for (setup, stays) in STATES {
        let (want, then, ta) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, Te::T0),
            Setup::S1 => (XA_OK, then, ta),
            _ => (XAER_PROTO, stays, Te::T0),
        };
        t.cell(
            "by A",
            setup,
            move |f| code(f.end(A, &x(), mode)),
            want,
            &[(A, ta)],
            none(),
            then,
        );
    }
    t.cell(
        "S1, already suspended",
        Setup::S1Susp,
        move |f| code(f.end(A, &x(), mode)),
        XAER_PROTO,
        &[(A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1 rollback-only: XA_RB* and the association ends",
        Setup::S1Doomed,
        move |f| code(f.end(A, &x(), mode)),
        XA_RBROLLBACK,
        &[(A, Te::T0)],
        none(),
        Obs::S4(XA_RBROLLBACK),
    );
    t.cell(
        "S4 with a suspended association",
        Setup::S4Susp,
        move |f| code(f.end(A, &x(), mode)),
        XAER_PROTO,
        &[(A, Te::Assoc)],
        none(),
        Obs::RbAssoc(XA_RBROLLBACK),
    );
}

#[test]
fn s_end_suspend() {
    let mut t = Table::new("xa_end(TMSUSPEND)");
    suspend_row(&mut t, EndMode::Suspend);
    t.finish();
}

#[test]
fn s_end_suspend_migrate() {
    let mut t = Table::new("xa_end(TMSUSPEND|TMMIGRATE)");
    suspend_row(&mut t, EndMode::SuspendMigrate);
    t.finish();
}

#[test]
fn s_prepare() {
    let mut t = Table::new("xa_prepare");
    for (setup, stays) in STATES {
        let (want, then, check) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, none()),
            Setup::S1 | Setup::S3 | Setup::S5Com | Setup::S5Rb => (XAER_PROTO, stays, none()),
            Setup::S2 => (
                XA_OK,
                Obs::S3,
                both(is_committed(K, None), is_locked(K, true)),
            ),
            Setup::S4 => (
                XA_RBROLLBACK,
                Obs::S0,
                both(is_committed(K, None), is_locked(K, false)),
            ),
            _ => unreachable!(),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.prepare(C, &x())),
            want,
            &[],
            check,
            then,
        );
    }
    t.cell(
        "S2 without writes: XA_RDONLY and forgotten",
        Setup::S2Empty,
        |f| code(f.prepare(C, &x())),
        XA_RDONLY,
        &[],
        Box::new(|f| {
            must(
                code(f.commit(C, &x(), false)),
                XAER_NOTA,
                "commit after XA_RDONLY",
            );
            must(
                code(f.rollback(C, &x())),
                XAER_NOTA,
                "rollback after XA_RDONLY",
            );
            Ok(())
        }),
        Obs::S0,
    );
    for setup in [Setup::S1Susp, Setup::S1Migr, Setup::S1Joined] {
        t.cell(
            "S1 with suspended/other associations",
            setup,
            |f| code(f.prepare(C, &x())),
            XAER_PROTO,
            &[],
            none(),
            Obs::S1,
        );
    }
    t.cell(
        "S1, by the associated ToC itself",
        Setup::S1,
        |f| code(f.prepare(A, &x())),
        XAER_PROTO,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    // §5.3 lists S4 prepare as XA_RB*→S0, but §4.5 requires every association (suspended ones
    // included) to have ended first; mmxa answers XAER_PROTO while one remains.
    t.cell(
        "S4 with a suspended association",
        Setup::S4Susp,
        |f| code(f.prepare(C, &x())),
        XAER_PROTO,
        &[(A, Te::Assoc)],
        none(),
        Obs::RbAssoc(XA_RBROLLBACK),
    );
    t.finish();
}

#[test]
fn s_commit_one_phase() {
    let mut t = Table::new("xa_commit(TMONEPHASE)");
    for (setup, stays) in STATES {
        let (want, then, check) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, none()),
            Setup::S1 | Setup::S3 | Setup::S5Com | Setup::S5Rb => (XAER_PROTO, stays, none()),
            Setup::S2 => (
                XA_OK,
                Obs::S0,
                both(is_committed(K, Some(V)), is_locked(K, false)),
            ),
            Setup::S4 => (
                XA_RBROLLBACK,
                Obs::S0,
                both(is_committed(K, None), is_locked(K, false)),
            ),
            _ => unreachable!(),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.commit(C, &x(), true)),
            want,
            &[],
            check,
            then,
        );
    }
    t.cell(
        "S2 without writes",
        Setup::S2Empty,
        |f| code(f.commit(C, &x(), true)),
        XA_OK,
        &[],
        none(),
        Obs::S0,
    );
    for setup in [Setup::S1Susp, Setup::S1Migr] {
        t.cell(
            "S1 suspended",
            setup,
            |f| code(f.commit(C, &x(), true)),
            XAER_PROTO,
            &[],
            none(),
            Obs::S1,
        );
    }
    t.finish();
}

#[test]
fn s_commit_two_phase() {
    let mut t = Table::new("xa_commit (two-phase)");
    for (setup, stays) in STATES {
        let (want, then, check) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, none()),
            Setup::S3 => (
                XA_OK,
                Obs::S0,
                both(is_committed(K, Some(V)), is_locked(K, false)),
            ),
            Setup::S5Com => (XA_HEURCOM, stays, none()),
            Setup::S5Rb => (XA_HEURRB, stays, none()),
            _ => (XAER_PROTO, stays, none()),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.commit(C, &x(), false)),
            want,
            &[],
            check,
            then,
        );
    }
    t.cell(
        "S5 answers its heuristic code every time",
        Setup::S5Com,
        |f| {
            must(code(f.commit(C, &x(), false)), XA_HEURCOM, "first commit");
            code(f.commit(C, &x(), false))
        },
        XA_HEURCOM,
        &[],
        is_committed(K, Some(V)),
        Obs::S5(XA_HEURCOM),
    );
    t.finish();
}

#[test]
fn s_rollback() {
    let mut t = Table::new("xa_rollback");
    for (setup, stays) in STATES {
        let (want, then, check) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, none()),
            // S1 from a ToC that is not associated: undone at once, forgotten when the last
            // association ends.
            Setup::S1 => (
                XA_OK,
                Obs::RbAssoc(XA_RBOTHER),
                both(is_committed(K, None), is_locked(K, false)),
            ),
            Setup::S2 | Setup::S3 | Setup::S4 => (
                XA_OK,
                Obs::S0,
                both(is_committed(K, None), is_locked(K, false)),
            ),
            Setup::S5Com => (XA_HEURCOM, stays, is_committed(K, Some(V))),
            Setup::S5Rb => (XA_HEURRB, stays, is_committed(K, None)),
            _ => unreachable!(),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.rollback(C, &x())),
            want,
            &[],
            check,
            then,
        );
    }
    t.cell(
        "S1 from the associated ToC",
        Setup::S1,
        |f| code(f.rollback(A, &x())),
        XAER_PROTO,
        &[(A, Te::T1)],
        is_locked(K, true),
        Obs::S1,
    );
    t.cell(
        "S1 from the suspended ToC",
        Setup::S1Susp,
        |f| code(f.rollback(A, &x())),
        XAER_PROTO,
        &[(A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "S1 from another ToC: associated ToCs learn it, then S0",
        Setup::S1,
        |f| code(f.rollback(C, &x())),
        XA_OK,
        &[(A, Te::Assoc)],
        Box::new(|f| {
            must_data(
                f.put(A, b"k2", Some(b"w")),
                MMXA_EROLLBACK,
                "put after rollback",
            );
            must_data(f.get(A, K), MMXA_EROLLBACK, "get after rollback");
            must(code(f.end(A, &x(), EndMode::Success)), XA_RBOTHER, "end(A)");
            must(
                code(f.rollback(C, &x())),
                XAER_NOTA,
                "forgotten after the last end",
            );
            Ok(())
        }),
        Obs::S0,
    );
    t.cell(
        "S1 suspended, from another ToC",
        Setup::S1Susp,
        |f| code(f.rollback(C, &x())),
        XA_OK,
        &[(A, Te::Assoc)],
        Box::new(|f| {
            must(
                code(f.start(A, &x(), StartMode::Resume)),
                XA_RBOTHER,
                "resume",
            );
            must(code(f.end(A, &x(), EndMode::Success)), XA_RBOTHER, "end(A)");
            Ok(())
        }),
        Obs::S0,
    );
    t.cell(
        "S1 suspended for migration, from another ToC",
        Setup::S1Migr,
        |f| code(f.rollback(C, &x())),
        XA_OK,
        &[],
        is_locked(K, false),
        Obs::S0,
    );
    t.cell(
        "S4 with a suspended association, from another ToC",
        Setup::S4Susp,
        |f| code(f.rollback(C, &x())),
        XA_OK,
        &[(A, Te::Assoc)],
        Box::new(|f| {
            if locked(f, K) {
                return Err("key still locked after rollback".into());
            }
            let c = code(f.end(A, &x(), EndMode::Success));
            if !(XA_RBBASE..=XA_RBEND).contains(&c) {
                return Err(format!("end(A) after rollback: {}", xa_name(c)));
            }
            Ok(())
        }),
        Obs::S0,
    );
    t.finish();
}

#[test]
fn s_forget() {
    let mut t = Table::new("xa_forget");
    for (setup, stays) in STATES {
        let (want, then) = match setup {
            Setup::S5Com | Setup::S5Rb => (XA_OK, Obs::S0),
            _ => (XAER_NOTA, stays),
        };
        t.cell(
            "from an unassociated ToC",
            setup,
            |f| code(f.forget(C, &x())),
            want,
            &[],
            none(),
            then,
        );
    }
    t.cell(
        "S5 twice",
        Setup::S5Rb,
        |f| {
            must(code(f.forget(C, &x())), XA_OK, "first forget");
            code(f.forget(C, &x()))
        },
        XAER_NOTA,
        &[],
        none(),
        Obs::S0,
    );
    t.finish();
}

#[test]
fn s_recover() {
    let mut t = Table::new("xa_recover");
    let all = [
        (Setup::S0, Obs::S0),
        (Setup::S1, Obs::S1),
        (Setup::S1Susp, Obs::S1),
        (Setup::S1Migr, Obs::S1),
        (Setup::S2, Obs::S2),
        (Setup::S2Empty, Obs::S2),
        (Setup::S3, Obs::S3),
        (Setup::S4, Obs::S4(XA_RBROLLBACK)),
        (Setup::S5Com, Obs::S5(XA_HEURCOM)),
        (Setup::S5Rb, Obs::S5(XA_HEURRB)),
    ];
    for (setup, stays) in all {
        let listed = matches!(setup, Setup::S3 | Setup::S5Com | Setup::S5Rb);
        t.cell(
            "listed iff S3 or S5 (code = times listed)",
            setup,
            |f| {
                let l = f.recover(C, scan(true, true), 10).expect("recover");
                l.iter().filter(|&&e| e == x()).count() as i32
            },
            listed as i32,
            &[],
            none(),
            stays,
        );
    }
    t.finish();
}

#[test]
fn s_heuristic_decision() {
    let mut t = Table::new("operator heuristic decision");
    for (setup, stays) in STATES {
        let (want, then, check) = match setup {
            Setup::S0 => (XAER_NOTA, Obs::S0, none()),
            Setup::S3 => (
                XA_OK,
                Obs::S5(XA_HEURCOM),
                both(is_committed(K, Some(V)), is_locked(K, false)),
            ),
            _ => (XAER_PROTO, stays, none()),
        };
        t.cell(
            "heuristic commit",
            setup,
            |f| code0(f.heuristic(&x(), Outcome::Commit, "test")),
            want,
            &[],
            check,
            then,
        );
    }
    t.cell(
        "S3 heuristic rollback: work undone, locks released",
        Setup::S3,
        |f| code0(f.heuristic(&x(), Outcome::Rollback, "test")),
        XA_OK,
        &[],
        both(is_committed(K, None), is_locked(K, false)),
        Obs::S5(XA_HEURRB),
    );
    t.cell(
        "only HEURCOM and HEURRB are decisions",
        Setup::S3,
        |f| code0(f.heuristic(&x(), Outcome::Mixed, "test")),
        XAER_INVAL,
        &[],
        is_locked(K, true),
        Obs::S3,
    );
    t.cell(
        "S5 survives a restart (the decision is logged)",
        Setup::S3,
        |f| {
            must(
                code0(f.heuristic(&x(), Outcome::Commit, "test")),
                XA_OK,
                "heuristic",
            );
            f.reopen();
            XA_OK
        },
        XA_OK,
        &[],
        both(is_committed(K, Some(V)), is_locked(K, false)),
        Obs::S5(XA_HEURCOM),
    );
    t.finish();
}

#[test]
fn s_rm_internal_rollback_only() {
    let mut t = Table::new("RM-internal: lock timeout");
    // S1: the branch is marked, reported at xa_end; its work is kept until rolled back.
    t.cell(
        "S1 timeout victim, reported by xa_end",
        Setup::S3,
        |f| {
            // X (prepared) holds K; Y, active in ToC B, asks for it.
            must(code(f.start(B, &y(), StartMode::New)), XA_OK, "start Y");
            must_data(f.put(B, b"ky", Some(b"1")), MMXA_OK, "put ky");
            must_data(f.put(B, K, Some(b"2")), MMXA_ELOCKTIMEOUT, "put K");
            must_data(
                f.put(B, b"kz", Some(b"3")),
                MMXA_EROLLBACK,
                "put after timeout",
            );
            code(f.end(B, &y(), EndMode::Success))
        },
        XA_RBTIMEOUT,
        &[(B, Te::T0)],
        Box::new(|f| {
            must(code(f.prepare(C, &y())), XA_RBTIMEOUT, "prepare Y");
            must(code(f.rollback(C, &y())), XAER_NOTA, "Y gone");
            if committed(f, b"ky").is_some() {
                return Err("Y's write was committed".into());
            }
            Ok(())
        }),
        // S3 is never a victim: X is still prepared.
        Obs::S3,
    );
    t.finish();
}

#[test]
fn s_crash_restart() {
    let mut t = Table::new("crash + restart");
    let all = [
        (Setup::S1, Obs::S0, Some(false)),
        (Setup::S1Susp, Obs::S0, Some(false)),
        (Setup::S1Migr, Obs::S0, Some(false)),
        (Setup::S1Joined, Obs::S0, Some(false)),
        (Setup::S2, Obs::S0, Some(false)),
        (Setup::S2Empty, Obs::S0, None),
        (Setup::S3, Obs::S3, Some(true)),
        (Setup::S4, Obs::S0, Some(false)),
        (Setup::S4Susp, Obs::S0, Some(false)),
        (Setup::S5Com, Obs::S5(XA_HEURCOM), Some(false)),
        (Setup::S5Rb, Obs::S5(XA_HEURRB), Some(false)),
    ];
    for (setup, then, lock) in all {
        let value = if setup == Setup::S5Com { Some(V) } else { None };
        let check: Check = Box::new(move |f| {
            for toc in [A, B, C] {
                if f.toc_associated(toc) {
                    return Err(format!("ToC {toc} still associated after restart"));
                }
            }
            is_committed(K, value)(f)?;
            if then == Obs::S0 {
                must(
                    code(f.rollback(C, &x())),
                    XAER_NOTA,
                    "rollback after restart",
                );
                must(code(f.prepare(C, &x())), XAER_NOTA, "prepare after restart");
            }
            if lock == Some(true) {
                // Another branch's write of the prepared key times out.
                must(code(f.start(B, &y(), StartMode::New)), XA_OK, "start Y");
                must_data(f.put(B, K, Some(b"y")), MMXA_ELOCKTIMEOUT, "put K from Y");
                must(
                    code(f.end(B, &y(), EndMode::Success)),
                    XA_RBTIMEOUT,
                    "end Y",
                );
                must(code(f.rollback(C, &y())), XA_OK, "rollback Y");
            }
            if lock.is_some() && locked(f, K) != (lock == Some(true)) {
                return Err(format!("after restart, K locked should be {lock:?}"));
            }
            Ok(())
        });
        t.cell(
            "crash (no destructors) + Rm::open",
            setup,
            |f| {
                f.crash();
                XA_OK
            },
            XA_OK,
            &[],
            check,
            then,
        );
    }
    // A prepared branch survives several restarts, clean or not, and commits afterwards.
    t.cell(
        "S3 committed after a drop and a crash",
        Setup::S3,
        |f| {
            f.reopen();
            f.crash();
            code(f.commit(C, &x(), false))
        },
        XA_OK,
        &[],
        both(is_committed(K, Some(V)), is_locked(K, false)),
        Obs::S0,
    );
    t.finish();
}

// ---- §5.2 association of a ToC with a branch ---------------------------------------------

#[test]
fn t_start() {
    let mut t = Table::new("§5.2 xa_start");
    // TMNOFLAGS
    t.cell(
        "T0 → T1",
        Setup::S0,
        |f| code(f.start(A, &x(), StartMode::New)),
        XA_OK,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMNOFLAGS in T1 (same XID): XAER_DUPID",
        Setup::S1,
        |f| code(f.start(A, &x(), StartMode::New)),
        XAER_DUPID,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMNOFLAGS in T2 (same XID): XAER_DUPID",
        Setup::S1Susp,
        |f| code(f.start(A, &x(), StartMode::New)),
        XAER_DUPID,
        &[(A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMNOFLAGS for another branch while T1: XAER_PROTO",
        Setup::S1,
        |f| code(f.start(A, &y(), StartMode::New)),
        XAER_PROTO,
        &[(A, Te::T1)],
        Box::new(|f| {
            must(code(f.prepare(C, &y())), XAER_NOTA, "Y was not created");
            Ok(())
        }),
        Obs::S1,
    );
    t.cell(
        "TMNOFLAGS for another branch while T2: allowed",
        Setup::S1Susp,
        |f| code(f.start(A, &y(), StartMode::New)),
        XA_OK,
        &[],
        Box::new(|f| {
            must_data(f.put(A, b"ky", Some(b"y")), MMXA_OK, "work on Y");
            must(code(f.end(A, &y(), EndMode::Success)), XA_OK, "end Y");
            must(code(f.start(A, &x(), StartMode::Resume)), XA_OK, "resume X");
            // Y's write is its own until it commits (X, another branch, would wait for Y's
            // lock to read it): a reader outside any branch does not see it.
            must_data(f.get(C, b"ky"), MMXA_OK, "get outside any branch");
            if f.get(C, b"ky").unwrap().is_some() {
                return Err("Y's uncommitted write is visible".into());
            }
            must(
                code(f.end(A, &x(), EndMode::Suspend)),
                XA_OK,
                "suspend X again",
            );
            must(code(f.commit(C, &y(), true)), XA_OK, "commit Y");
            Ok(())
        }),
        Obs::S1,
    );
    // TMJOIN
    t.cell(
        "TMJOIN in T0 → T1",
        Setup::S1,
        |f| code(f.start(C, &x(), StartMode::Join)),
        XA_OK,
        &[(C, Te::T1), (A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMJOIN in T1: XAER_PROTO",
        Setup::S1,
        |f| code(f.start(A, &x(), StartMode::Join)),
        XAER_PROTO,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMJOIN in T2 (the suspending ToC must resume): XAER_PROTO",
        Setup::S1Susp,
        |f| code(f.start(A, &x(), StartMode::Join)),
        XAER_PROTO,
        &[(A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMJOIN of another branch while T1: XAER_PROTO",
        Setup::S1,
        |f| {
            must(
                code(f.start(B, &y(), StartMode::New)),
                XA_OK,
                "start Y in B",
            );
            must(code(f.end(B, &y(), EndMode::Success)), XA_OK, "end Y in B");
            code(f.start(A, &y(), StartMode::Join))
        },
        XAER_PROTO,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMJOIN returning XA_RB* leaves the ToC T0",
        Setup::S4,
        |f| code(f.start(C, &x(), StartMode::Join)),
        XA_RBROLLBACK,
        &[(C, Te::T0)],
        none(),
        Obs::S4(XA_RBROLLBACK),
    );
    // TMRESUME
    t.cell(
        "TMRESUME in T0, not migrated: XAER_PROTO",
        Setup::S1Susp,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XAER_PROTO,
        &[(C, Te::T0), (A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMRESUME in T0, migrated: → T1",
        Setup::S1Migr,
        |f| code(f.start(C, &x(), StartMode::Resume)),
        XA_OK,
        &[(C, Te::T1)],
        Box::new(|f| {
            // The resumed association carries the branch's work.
            if f.get(C, K).unwrap().as_deref() != Some(V) {
                return Err("the migrated association does not see the branch's write".into());
            }
            Ok(())
        }),
        Obs::S1,
    );
    t.cell(
        "TMRESUME in T1: XAER_PROTO",
        Setup::S1,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XAER_PROTO,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "TMRESUME in T2 → T1",
        Setup::S1Susp,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XA_OK,
        &[(A, Te::T1)],
        Box::new(|f| {
            if f.get(A, K).unwrap().as_deref() != Some(V) {
                return Err("the resumed association does not see the branch's write".into());
            }
            Ok(())
        }),
        Obs::S1,
    );
    t.cell(
        "TMRESUME in T2 returning XA_RB*: stays T2",
        Setup::S4Susp,
        |f| code(f.start(A, &x(), StartMode::Resume)),
        XA_RBROLLBACK,
        &[(A, Te::Assoc)],
        Box::new(|f| {
            must(
                code(f.end(A, &x(), EndMode::Suspend)),
                XAER_PROTO,
                "still T2, not T1",
            );
            must(
                code(f.end(A, &x(), EndMode::Success)),
                XA_RBROLLBACK,
                "T2 → T0",
            );
            check_t(f, A, Te::T0)
        }),
        Obs::S4(XA_RBROLLBACK),
    );
    t.finish();
}

#[test]
fn t_end() {
    let mut t = Table::new("§5.2 xa_end");
    for mode in [
        EndMode::Success,
        EndMode::Fail,
        EndMode::Suspend,
        EndMode::SuspendMigrate,
    ] {
        t.cell(
            "in T0: XAER_PROTO",
            Setup::S1,
            move |f| code(f.end(C, &x(), mode)),
            XAER_PROTO,
            &[(C, Te::T0), (A, Te::T1)],
            none(),
            Obs::S1,
        );
        let (want, ta, then) = match mode {
            EndMode::Success => (XA_OK, Te::T0, Obs::S2),
            EndMode::Fail => (XA_RBROLLBACK, Te::T0, Obs::S4(XA_RBROLLBACK)),
            EndMode::Suspend => (XA_OK, Te::T2, Obs::S1),
            EndMode::SuspendMigrate => (XA_OK, Te::T0, Obs::S1),
        };
        t.cell(
            "in T1",
            Setup::S1,
            move |f| code(f.end(A, &x(), mode)),
            want,
            &[(A, ta)],
            none(),
            then,
        );
        let (want, ta, then) = match mode {
            EndMode::Success => (XA_OK, Te::T0, Obs::S2),
            EndMode::Fail => (XA_RBROLLBACK, Te::T0, Obs::S4(XA_RBROLLBACK)),
            _ => (XAER_PROTO, Te::T2, Obs::S1),
        };
        t.cell(
            "in T2",
            Setup::S1Susp,
            move |f| code(f.end(A, &x(), mode)),
            want,
            &[(A, ta)],
            none(),
            then,
        );
        t.cell(
            "in T1, rollback-only: XA_RB* and T0",
            Setup::S1Doomed,
            move |f| code(f.end(A, &x(), mode)),
            XA_RBROLLBACK,
            &[(A, Te::T0)],
            none(),
            Obs::S4(XA_RBROLLBACK),
        );
    }
    t.finish();
}

#[test]
fn t_close() {
    let mut t = Table::new("§5.2 xa_close");
    t.cell(
        "T0: allowed",
        Setup::S1,
        |f| code0(f.close_toc(C)),
        XA_OK,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "T1: XAER_PROTO",
        Setup::S1,
        |f| code0(f.close_toc(A)),
        XAER_PROTO,
        &[(A, Te::T1)],
        none(),
        Obs::S1,
    );
    t.cell(
        "T2: XAER_PROTO",
        Setup::S1Susp,
        |f| code0(f.close_toc(A)),
        XAER_PROTO,
        &[(A, Te::T2)],
        none(),
        Obs::S1,
    );
    t.cell(
        "T0 after TMSUSPEND|TMMIGRATE: allowed, still resumable elsewhere",
        Setup::S1Migr,
        |f| code0(f.close_toc(A)),
        XA_OK,
        &[(A, Te::T0)],
        Box::new(|f| {
            must(
                code(f.start(C, &x(), StartMode::Resume)),
                XA_OK,
                "resume in C",
            );
            must(code(f.end(C, &x(), EndMode::Success)), XA_OK, "end in C");
            Ok(())
        }),
        Obs::S2,
    );
    t.cell(
        "closing drops the ToC's recovery scan",
        Setup::S3,
        |f| {
            let l = f.recover(C, scan(true, false), 0).expect("start scan");
            must(l.len() as i32, 0, "cap 0");
            must(code0(f.close_toc(C)), XA_OK, "close");
            match f.recover(C, scan(false, false), 10) {
                Ok(v) => v.len() as i32,
                Err(e) => e.xa_code(),
            }
        },
        XAER_INVAL,
        &[],
        none(),
        Obs::S3,
    );
    t.finish();
}

// ---- tightly and loosely coupled threads --------------------------------------------------

#[test]
fn tightly_coupled_join_shares_writes_and_locks() {
    let fx = Fx::new();
    let x = x();
    must(code(fx.start(A, &x, StartMode::New)), XA_OK, "start A");
    must_data(fx.put(A, b"k1", Some(b"a")), MMXA_OK, "A writes k1");
    must(code(fx.start(B, &x, StartMode::Join)), XA_OK, "join B");
    assert_eq!(
        fx.get(B, b"k1").unwrap().as_deref(),
        Some(&b"a"[..]),
        "B sees A's write"
    );
    // B rewrites A's key: same branch, same lock, no conflict even with timeout 0.
    assert_eq!(fx.put(B, b"k1", Some(b"b")), Ok(true), "B overwrites k1");
    must_data(fx.put(B, b"k2", Some(b"b2")), MMXA_OK, "B writes k2");
    assert_eq!(
        fx.get(A, b"k1").unwrap().as_deref(),
        Some(&b"b"[..]),
        "A sees B's write"
    );
    assert_eq!(fx.put(A, b"k2", None), Ok(true), "A deletes B's k2");
    assert_eq!(fx.get(B, b"k2").unwrap(), None, "B sees A's delete");
    // Others see neither, and cannot write the branch's keys.
    assert_eq!(committed(&fx, b"k1"), None);
    assert!(locked(&fx, b"k1"));
    assert!(locked(&fx, b"k2"));
    must(code(fx.end(A, &x, EndMode::Success)), XA_OK, "end A");
    must(
        code(fx.prepare(C, &x)),
        XAER_PROTO,
        "still S1 while B is associated",
    );
    must(
        code(fx.commit(C, &x, true)),
        XAER_PROTO,
        "1PC while B is associated",
    );
    must_data(fx.put(B, b"k3", Some(b"c")), MMXA_OK, "B keeps working");
    must(code(fx.end(B, &x, EndMode::Success)), XA_OK, "end B");
    must(code(fx.prepare(C, &x)), XA_OK, "prepare after both ended");
    must(code(fx.commit(C, &x, false)), XA_OK, "commit");
    assert_eq!(committed(&fx, b"k1").as_deref(), Some(&b"b"[..]));
    assert_eq!(committed(&fx, b"k2"), None);
    assert_eq!(committed(&fx, b"k3").as_deref(), Some(&b"c"[..]));
}

#[test]
fn tightly_coupled_rollback_only_reaches_every_thread() {
    let fx = Fx::new();
    let x = x();
    must(code(fx.start(A, &x, StartMode::New)), XA_OK, "start A");
    must(code(fx.start(B, &x, StartMode::Join)), XA_OK, "join B");
    must(code(fx.end(A, &x, EndMode::Fail)), XA_RBROLLBACK, "A fails");
    must_data(fx.put(B, b"k", Some(b"v")), MMXA_EROLLBACK, "B's data call");
    must(
        code(fx.start(C, &x, StartMode::Join)),
        XA_RBROLLBACK,
        "join C",
    );
    must(
        code(fx.end(B, &x, EndMode::Success)),
        XA_RBROLLBACK,
        "B's end",
    );
    must(code(fx.rollback(C, &x)), XA_OK, "rollback S4");
    must(code(fx.rollback(C, &x)), XAER_NOTA, "gone");
}

#[test]
fn loosely_coupled_branches_conflict() {
    let fx = Fx::new();
    let (x1, x2) = (x(), x2());
    assert_eq!(x1.gtrid(), x2.gtrid());
    must(code(fx.start(A, &x1, StartMode::New)), XA_OK, "start x1");
    must(
        code(fx.start(B, &x2, StartMode::New)),
        XA_OK,
        "start x2 (same gtrid)",
    );
    must_data(fx.put(A, b"k", Some(b"1")), MMXA_OK, "x1 writes k");
    // Loosely coupled branches share no locks: x2 can neither read nor write x1's key.
    must_data(fx.get(B, b"k"), MMXA_ELOCKTIMEOUT, "x2 reads k");
    must_data(fx.put(B, b"k", Some(b"2")), MMXA_EROLLBACK, "x2 writes k");
    must(
        code(fx.end(B, &x2, EndMode::Success)),
        XA_RBTIMEOUT,
        "end x2",
    );
    must(code(fx.end(A, &x1, EndMode::Success)), XA_OK, "end x1");
    must(code(fx.prepare(C, &x1)), XA_OK, "prepare x1");
    must(code(fx.prepare(C, &x2)), XA_RBTIMEOUT, "prepare x2");
    must(code(fx.commit(C, &x1, false)), XA_OK, "commit x1");
    assert_eq!(committed(&fx, b"k").as_deref(), Some(&b"1"[..]));
}

// ---- lock timeout ----------------------------------------------------------------------------

/// Branch X (ToC A) holds K; branch Y (ToC B) times out on it.
fn timeout_victim(fx: &Fx) {
    must(code(fx.start(A, &x(), StartMode::New)), XA_OK, "start X");
    must_data(fx.put(A, K, Some(b"x")), MMXA_OK, "X writes K");
    must(code(fx.start(B, &y(), StartMode::New)), XA_OK, "start Y");
    must_data(fx.put(B, b"ky", Some(b"y")), MMXA_OK, "Y writes ky");
    must_data(fx.put(B, K, Some(b"y")), MMXA_ELOCKTIMEOUT, "Y writes K");
    must_data(
        fx.put(B, b"other", Some(b"y")),
        MMXA_EROLLBACK,
        "Y's next write",
    );
    must_data(fx.get(B, b"ky"), MMXA_EROLLBACK, "Y's next read");
}

#[test]
fn lock_timeout_waits_then_fails() {
    let fx = Fx::with(SyncMode::None, Duration::from_millis(150));
    must(code(fx.start(A, &x(), StartMode::New)), XA_OK, "start X");
    must_data(fx.put(A, K, Some(b"x")), MMXA_OK, "X writes K");
    must(code(fx.start(B, &y(), StartMode::New)), XA_OK, "start Y");
    let t0 = Instant::now();
    must_data(fx.put(B, K, Some(b"y")), MMXA_ELOCKTIMEOUT, "Y writes K");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(140),
        "waited only {waited:?}"
    );
    // No upper bound: how much longer a loaded machine takes is not behaviour.
    // A one-operation write outside any branch times out the same way.
    let t0 = Instant::now();
    must_data(
        fx.put(C, K, Some(b"c")),
        MMXA_ELOCKTIMEOUT,
        "local write of K",
    );
    assert!(t0.elapsed() >= Duration::from_millis(140));
    must(
        code(fx.end(B, &y(), EndMode::Success)),
        XA_RBTIMEOUT,
        "end Y",
    );
}

#[test]
fn lock_timeout_reported_by_end_prepare_commit_and_start() {
    // xa_end(TMSUCCESS), then xa_prepare.
    let fx = Fx::new();
    timeout_victim(&fx);
    must(code(fx.end(B, &y(), EndMode::Success)), XA_RBTIMEOUT, "end");
    must(code(fx.prepare(C, &y())), XA_RBTIMEOUT, "prepare");
    must(
        code(fx.prepare(C, &y())),
        XAER_NOTA,
        "rolled back and forgotten",
    );
    assert!(!locked(&fx, b"ky"), "Y's locks released");

    // xa_end(TMFAIL) of a branch already marked keeps the first reason; then 1PC.
    let fx = Fx::new();
    timeout_victim(&fx);
    must(
        code(fx.end(B, &y(), EndMode::Fail)),
        XA_RBTIMEOUT,
        "end(TMFAIL)",
    );
    must(
        code(fx.commit(C, &y(), true)),
        XA_RBTIMEOUT,
        "commit(TMONEPHASE)",
    );
    must(code(fx.commit(C, &y(), true)), XAER_NOTA, "gone");

    // xa_end(TMSUSPEND): XA_RB*, association ended; xa_start(TMJOIN) does not associate.
    let fx = Fx::new();
    timeout_victim(&fx);
    must(
        code(fx.end(B, &y(), EndMode::Suspend)),
        XA_RBTIMEOUT,
        "suspend",
    );
    assert!(!fx.toc_associated(B), "association ended");
    must(
        code(fx.start(C, &y(), StartMode::Join)),
        XA_RBTIMEOUT,
        "join",
    );
    assert!(!fx.toc_associated(C), "join did not associate");
    must(code(fx.rollback(C, &y())), XA_OK, "rollback S4");

    // xa_start(TMRESUME) of a suspended association in a branch marked meanwhile.
    let fx = Fx::new();
    must(code(fx.start(A, &x(), StartMode::New)), XA_OK, "start X");
    must_data(fx.put(A, K, Some(b"x")), MMXA_OK, "X writes K");
    must(
        code(fx.start(B, &y(), StartMode::New)),
        XA_OK,
        "start Y in B",
    );
    must(
        code(fx.end(B, &y(), EndMode::Suspend)),
        XA_OK,
        "suspend Y in B",
    );
    must(
        code(fx.start(C, &y(), StartMode::Join)),
        XA_OK,
        "join Y in C",
    );
    must_data(fx.put(C, K, Some(b"y")), MMXA_ELOCKTIMEOUT, "Y writes K");
    must(
        code(fx.start(B, &y(), StartMode::Resume)),
        XA_RBTIMEOUT,
        "resume",
    );
    must(
        code(fx.end(C, &y(), EndMode::Success)),
        XA_RBTIMEOUT,
        "end C",
    );
    must(code(fx.prepare(OBS, &y())), XAER_PROTO, "B still suspended");
    must(
        code(fx.end(B, &y(), EndMode::Success)),
        XA_RBTIMEOUT,
        "end B (T2)",
    );
    must(code(fx.rollback(C, &y())), XA_OK, "rollback");
    // The holder is unaffected.
    must(code(fx.end(A, &x(), EndMode::Success)), XA_OK, "end X");
    must(code(fx.commit(C, &x(), true)), XA_OK, "commit X");
    assert_eq!(committed(&fx, K).as_deref(), Some(&b"x"[..]));
}

// ---- deadlock ------------------------------------------------------------------------------

/// X (ToC A) holds k1, Y (ToC B) holds k2; A, in a spawned thread, waits for k2 with a long
/// timeout; then B asks for k1, which closes the cycle: B gets `MMXA_EDEADLOCK` at once.
/// Then `victim` reports the deadlock through some XA call and must roll Y back; after that A's
/// wait succeeds. Retried with longer head starts if the spawned thread had not started
/// waiting yet (then A, not B, would be the victim).
fn deadlock(victim: impl Fn(&Rm)) {
    deadlock_with(|_| {}, victim)
}

/// [`deadlock`], with `setup` run on the store once Y holds k2 (before the deadlock).
fn deadlock_with(setup: impl Fn(&Rm), victim: impl Fn(&Rm)) {
    for attempt in 0..6u32 {
        let fx = Fx::with(SyncMode::None, Duration::from_secs(30));
        let rm: &Rm = &fx;
        let (x, y) = (x(), y());
        must(code(rm.start(A, &x, StartMode::New)), XA_OK, "start X");
        must_data(rm.put(A, b"k1", Some(b"x")), MMXA_OK, "X locks k1");
        must(code(rm.start(B, &y, StartMode::New)), XA_OK, "start Y");
        must_data(rm.put(B, b"k2", Some(b"y")), MMXA_OK, "Y locks k2");
        setup(rm);
        let outcome = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let waiter = s.spawn(move || {
                tx.send(()).unwrap();
                let r = rm.put(A, b"k2", Some(b"x"));
                if r.is_err() {
                    // A was the victim: give up X so that B's wait ends.
                    let _ = rm.end(A, &x, EndMode::Success);
                    let _ = rm.rollback(C, &x);
                }
                r
            });
            rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(100 << attempt));
            let t0 = Instant::now();
            let r = rm.put(B, b"k1", Some(b"y"));
            let waited = t0.elapsed();
            if dcode(&r) == MMXA_EDEADLOCK {
                assert!(
                    waited < Duration::from_secs(5),
                    "deadlock found after {waited:?}"
                );
                victim(rm);
                let w = waiter.join().unwrap();
                must_data(w, MMXA_OK, "A's wait ends once Y is rolled back");
                true
            } else {
                let w = waiter.join().unwrap();
                assert_eq!(
                    dcode(&w),
                    MMXA_EDEADLOCK,
                    "one of the two must be the victim"
                );
                false
            }
        });
        if outcome {
            must(code(rm.end(A, &x, EndMode::Success)), XA_OK, "end X");
            must(code(rm.commit(C, &x, true)), XA_OK, "commit X");
            assert_eq!(committed(rm, b"k1").as_deref(), Some(&b"x"[..]));
            assert_eq!(committed(rm, b"k2").as_deref(), Some(&b"x"[..]));
            return;
        }
    }
    panic!("the waiting thread never started waiting before the second request");
}

#[test]
fn deadlock_reported_by_end_then_rollback() {
    deadlock(|rm| {
        must_data(
            rm.put(B, b"k3", Some(b"y")),
            MMXA_EROLLBACK,
            "Y's next write",
        );
        must(
            code(rm.end(B, &y(), EndMode::Success)),
            XA_RBDEADLOCK,
            "end Y",
        );
        must(code(rm.rollback(C, &y())), XA_OK, "rollback Y");
    });
}

#[test]
fn deadlock_reported_by_join_and_prepare() {
    deadlock(|rm| {
        must(
            code(rm.start(C, &y(), StartMode::Join)),
            XA_RBDEADLOCK,
            "join Y",
        );
        must(
            code(rm.end(B, &y(), EndMode::Fail)),
            XA_RBDEADLOCK,
            "end(TMFAIL) Y",
        );
        must(code(rm.prepare(C, &y())), XA_RBDEADLOCK, "prepare Y");
    });
}

#[test]
fn deadlock_reported_by_resume_and_commit_one_phase() {
    deadlock(|rm| {
        must(
            code(rm.end(B, &y(), EndMode::Suspend)),
            XA_RBDEADLOCK,
            "suspend Y",
        );
        must(
            code(rm.start(B, &y(), StartMode::Resume)),
            XAER_PROTO,
            "nothing suspended",
        );
        must(
            code(rm.commit(C, &y(), true)),
            XA_RBDEADLOCK,
            "commit(TMONEPHASE) Y",
        );
    });
}

#[test]
fn deadlock_reported_by_resume_of_a_suspended_association() {
    deadlock_with(
        |rm| {
            // C joins Y and suspends before B's request closes the cycle.
            must(
                code(rm.start(C, &y(), StartMode::Join)),
                XA_OK,
                "join Y in C",
            );
            must(
                code(rm.end(C, &y(), EndMode::Suspend)),
                XA_OK,
                "suspend Y in C",
            );
        },
        |rm| {
            must(
                code(rm.start(C, &y(), StartMode::Resume)),
                XA_RBDEADLOCK,
                "resume Y in C",
            );
            assert!(rm.toc_associated(C), "a refused resume leaves C suspended");
            must(
                code(rm.end(C, &y(), EndMode::Success)),
                XA_RBDEADLOCK,
                "end C (T2)",
            );
            must(
                code(rm.end(B, &y(), EndMode::Success)),
                XA_RBDEADLOCK,
                "end B",
            );
            must(code(rm.rollback(OBS, &y())), XA_OK, "rollback S4");
        },
    );
}

#[test]
fn deadlock_victim_rolled_back_by_another_toc() {
    deadlock(|rm| {
        must(
            code(rm.start(C, &y(), StartMode::Resume)),
            XAER_PROTO,
            "C never suspended Y",
        );
        must(
            code(rm.rollback(B, &y())),
            XAER_PROTO,
            "rollback from the associated ToC",
        );
        must(
            code(rm.rollback(C, &y())),
            XA_OK,
            "rollback from another ToC",
        );
        must(
            code(rm.end(B, &y(), EndMode::Success)),
            XA_RBOTHER,
            "end after rollback",
        );
        must(code(rm.rollback(C, &y())), XAER_NOTA, "forgotten");
    });
}

#[test]
fn rollback_from_outside_ends_a_lock_wait() {
    let fx = Fx::with(SyncMode::None, Duration::from_secs(30));
    let rm: &Rm = &fx;
    must(code(rm.start(A, &x(), StartMode::New)), XA_OK, "start X");
    must_data(rm.put(A, K, Some(b"x")), MMXA_OK, "X locks K");
    must(code(rm.start(B, &y(), StartMode::New)), XA_OK, "start Y");
    must_data(rm.put(B, b"ky", Some(b"y")), MMXA_OK, "Y locks ky");
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let waiter = s.spawn(move || {
            tx.send(()).unwrap();
            let t0 = Instant::now();
            (rm.put(B, K, Some(b"y")), t0.elapsed())
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // The TM gives up on Y from another thread of control while B waits for K.
        must(code(rm.rollback(C, &y())), XA_OK, "rollback Y from C");
        let (r, waited) = waiter.join().unwrap();
        must_data(r, MMXA_EROLLBACK, "B's wait");
        assert!(
            waited < Duration::from_secs(10),
            "the wait ended only after {waited:?}"
        );
    });
    assert!(!locked(rm, b"ky"), "Y's locks are released");
    must(
        code(rm.end(B, &y(), EndMode::Success)),
        XA_RBOTHER,
        "B's end",
    );
    must(code(rm.rollback(C, &y())), XAER_NOTA, "Y forgotten");
    // X is untouched.
    must(code(rm.end(A, &x(), EndMode::Success)), XA_OK, "end X");
    must(code(rm.commit(C, &x(), true)), XA_OK, "commit X");
    assert_eq!(committed(rm, K).as_deref(), Some(&b"x"[..]));
}

#[test]
fn tightly_coupled_threads_write_concurrently() {
    // Lock timeout 0: any self-conflict between the joined threads would fail at once.
    let fx = Fx::with(SyncMode::None, Duration::ZERO);
    let rm: &Rm = &fx;
    let x = x();
    must(code(rm.start(A, &x, StartMode::New)), XA_OK, "start A");
    must(code(rm.start(B, &x, StartMode::Join)), XA_OK, "join B");
    std::thread::scope(|s| {
        for (toc, tag) in [(A, b'a'), (B, b'b')] {
            s.spawn(move || {
                for i in 0..200u32 {
                    let own = format!("{}-{i}", tag as char);
                    must_data(
                        rm.put(toc, own.as_bytes(), Some(&i.to_le_bytes())),
                        MMXA_OK,
                        "own key",
                    );
                    must_data(rm.put(toc, b"shared", Some(&[tag])), MMXA_OK, "shared key");
                    assert!(rm.get(toc, b"shared").unwrap().is_some());
                }
            });
        }
    });
    let seen_a = rm.get(A, b"shared").unwrap();
    assert_eq!(
        seen_a,
        rm.get(B, b"shared").unwrap(),
        "one branch, one value"
    );
    assert!(rm.get(A, b"b-199").unwrap().is_some(), "A sees B's writes");
    must(code(rm.end(A, &x, EndMode::Success)), XA_OK, "end A");
    must(code(rm.end(B, &x, EndMode::Success)), XA_OK, "end B");
    must(code(rm.prepare(C, &x)), XA_OK, "prepare");
    let mut fx = fx;
    fx.crash();
    must(code(fx.commit(C, &x, false)), XA_OK, "commit after a crash");
    assert_eq!(
        committed(&fx, b"shared"),
        seen_a,
        "the value the branch saw is committed"
    );
    for tag in ['a', 'b'] {
        for i in 0..200u32 {
            let k = format!("{tag}-{i}");
            assert_eq!(
                committed(&fx, k.as_bytes()).as_deref(),
                Some(&i.to_le_bytes()[..]),
                "{k}"
            );
        }
    }
}

// ---- xa_rollback of an active branch, migration and recovery scans ------------------------

#[test]
fn rollback_of_active_branch_with_several_associations() {
    let fx = Fx::new();
    let x = x();
    must(code(fx.start(A, &x, StartMode::New)), XA_OK, "start A");
    must_data(fx.put(A, K, Some(V)), MMXA_OK, "A writes");
    must(code(fx.start(B, &x, StartMode::Join)), XA_OK, "join B");
    must(code(fx.end(B, &x, EndMode::Suspend)), XA_OK, "B suspends");
    must(code(fx.rollback(C, &x)), XA_OK, "rollback from C");
    assert!(!locked(&fx, K), "locks released at once");
    must_data(fx.get(A, K), MMXA_EROLLBACK, "A's read");
    must(
        code(fx.start(C, &x, StartMode::New)),
        XAER_DUPID,
        "still known",
    );
    must(code(fx.end(A, &x, EndMode::Success)), XA_RBOTHER, "A's end");
    must(
        code(fx.start(C, &x, StartMode::New)),
        XAER_DUPID,
        "B still suspended",
    );
    must(code0(fx.close_toc(B)), XAER_PROTO, "B is T2");
    must(code(fx.end(B, &x, EndMode::Success)), XA_RBOTHER, "B's end");
    must(
        code(fx.rollback(C, &x)),
        XAER_NOTA,
        "forgotten after the last association",
    );
    must(code0(fx.close_toc(B)), XA_OK, "B is T0");
    must(
        code(fx.start(C, &x, StartMode::New)),
        XA_OK,
        "the XID is reusable",
    );
}

#[test]
fn recover_scan_semantics() {
    let fx = Fx::new();
    let mut prepared = Vec::new();
    for i in 0..3u8 {
        let xi = xid(b"scan", &[b'a' + i]);
        must(code(fx.start(A, &xi, StartMode::New)), XA_OK, "start");
        must_data(fx.put(A, &[b'k', i], Some(V)), MMXA_OK, "put");
        must(code(fx.end(A, &xi, EndMode::Success)), XA_OK, "end");
        must(code(fx.prepare(C, &xi)), XA_OK, "prepare");
        prepared.push(xi);
    }
    // Not listed: S1, S2, S4.
    for (i, setup_end) in [EndMode::Suspend, EndMode::Success, EndMode::Fail]
        .into_iter()
        .enumerate()
    {
        let xi = xid(b"other", &[b'a' + i as u8]);
        must(code(fx.start(B, &xi, StartMode::New)), XA_OK, "start");
        must_data(fx.put(B, &[b'o', i as u8], Some(V)), MMXA_OK, "put");
        let _ = fx.end(B, &xi, setup_end);
    }
    let inval =
        |r: Result<Vec<Xid>, mmxa::error::Error>| r.map(|v| v.len()).map_err(|e| e.xa_code());
    let sorted = |mut v: Vec<Xid>| {
        v.sort_by_key(|x| x.data().to_vec());
        v
    };
    // No scan open.
    assert_eq!(
        inval(fx.recover(C, scan(false, false), 10)),
        Err(XAER_INVAL)
    );
    assert_eq!(inval(fx.recover(C, scan(false, true), 10)), Err(XAER_INVAL));
    assert_eq!(inval(fx.recover(C, scan(false, true), 0)), Ok(0));
    // One call does it all.
    let all = fx.recover(C, scan(true, true), 10).unwrap();
    assert_eq!(sorted(all), prepared);
    assert_eq!(
        inval(fx.recover(C, scan(false, false), 10)),
        Err(XAER_INVAL)
    );
    // Paging: 2, then 1 < 2 ends the scan.
    let p1 = fx.recover(C, scan(true, false), 2).unwrap();
    assert_eq!(p1.len(), 2);
    let p2 = fx.recover(C, scan(false, false), 2).unwrap();
    assert_eq!(p2.len(), 1);
    assert_eq!(sorted([p1, p2].concat()), prepared, "each once");
    assert_eq!(
        inval(fx.recover(C, scan(false, false), 2)),
        Err(XAER_INVAL),
        "ended"
    );
    // Exactly cap: the scan stays open and the next call returns 0 (< cap) and ends it.
    assert_eq!(fx.recover(C, scan(true, false), 3).unwrap().len(), 3);
    assert_eq!(inval(fx.recover(C, scan(false, false), 3)), Ok(0));
    assert_eq!(inval(fx.recover(C, scan(false, false), 3)), Err(XAER_INVAL));
    // TMENDRSCAN ends even a full page; cap 0 with TMSTARTRSCAN leaves the scan open.
    assert_eq!(inval(fx.recover(C, scan(true, true), 1)), Ok(1));
    assert_eq!(inval(fx.recover(C, scan(false, false), 1)), Err(XAER_INVAL));
    assert_eq!(inval(fx.recover(C, scan(true, false), 0)), Ok(0));
    assert_eq!(inval(fx.recover(C, scan(false, false), 10)), Ok(3));
    // TMSTARTRSCAN restarts an open scan.
    assert_eq!(inval(fx.recover(C, scan(true, false), 2)), Ok(2));
    assert_eq!(inval(fx.recover(C, scan(true, false), 2)), Ok(2));
    assert_eq!(inval(fx.recover(C, scan(false, false), 2)), Ok(1));
    // Scans are per ToC.
    assert_eq!(inval(fx.recover(C, scan(true, false), 1)), Ok(1));
    assert_eq!(inval(fx.recover(B, scan(false, false), 1)), Err(XAER_INVAL));
    assert_eq!(inval(fx.recover(C, scan(false, false), 1)), Ok(1));
    // A snapshot: branches resolved during the scan are still listed once, new ones are not.
    let first = fx.recover(C, scan(true, false), 1).unwrap();
    let rest: Vec<Xid> = prepared
        .iter()
        .filter(|x| !first.contains(x))
        .copied()
        .collect();
    must(
        code(fx.commit(OBS, &rest[0], false)),
        XA_OK,
        "resolve during the scan",
    );
    let late = xid(b"late", b"a");
    must(
        code(fx.start(A, &late, StartMode::New)),
        XA_OK,
        "start late",
    );
    must_data(fx.put(A, b"late", Some(V)), MMXA_OK, "put late");
    must(code(fx.end(A, &late, EndMode::Success)), XA_OK, "end late");
    must(code(fx.prepare(C, &late)), XA_OK, "prepare late");
    let second = fx.recover(C, scan(false, false), 10).unwrap();
    assert_eq!(sorted([first, second.clone()].concat()), prepared);
    assert!(!second.contains(&late));
    must(
        code(fx.commit(OBS, &rest[0], false)),
        XAER_NOTA,
        "resolved one is gone",
    );
    // A new scan sees the current set, heuristic branches included.
    must(
        code0(fx.heuristic(&late, Outcome::Rollback, "test")),
        XA_OK,
        "heuristic",
    );
    let now = fx.recover(C, scan(true, true), 10).unwrap();
    assert_eq!(now.len(), 3);
    assert!(now.contains(&late));
    assert!(!now.contains(&rest[0]));
}

// ---- §2.3 flag validation -------------------------------------------------------------------

const ALL_FLAGS: [c_long; 16] = [
    TMREGISTER,
    TMNOMIGRATE,
    TMUSEASYNC,
    TMMIGRATE,
    TMJOIN,
    TMMULTIPLE,
    TMENDRSCAN,
    TMSTARTRSCAN,
    TMSUSPEND,
    TMSUCCESS,
    TMRESUME,
    TMNOWAIT,
    TMFAIL,
    TMONEPHASE,
    TMASYNC,
    1 << 40,
];

fn fcode<T>(r: Result<T, mmxa::error::Error>) -> i32 {
    r.err().map_or(XA_OK, |e| e.xa_code())
}

#[test]
fn flags_accepted_sets_per_entry_point() {
    // §2.2: the flags each entry point accepts (TMASYNC handled by rule 1).
    let table: [(Entry, c_long); 10] = [
        (Entry::Open, 0),
        (Entry::Close, 0),
        (Entry::Start, TMJOIN | TMRESUME | TMNOWAIT),
        (Entry::End, TMSUSPEND | TMSUCCESS | TMFAIL | TMMIGRATE),
        (Entry::Rollback, 0),
        (Entry::Prepare, 0),
        (Entry::Commit, TMONEPHASE | TMNOWAIT),
        (Entry::Recover, TMSTARTRSCAN | TMENDRSCAN),
        (Entry::Forget, 0),
        (Entry::Complete, TMMULTIPLE | TMNOWAIT),
    ];
    let mut failures = Vec::new();
    for (entry, accepted) in table {
        let async_allowed = !matches!(entry, Entry::Recover | Entry::Complete);
        let mut cases: Vec<c_long> = vec![TMNOFLAGS];
        cases.extend(ALL_FLAGS);
        cases.extend(ALL_FLAGS.iter().map(|f| f | TMASYNC));
        for flags in cases {
            let want = if async_allowed && flags & TMASYNC != 0 {
                // Rule 1 (and rule 4: TMASYNC is checked before any other bit).
                XAER_ASYNC
            } else if flags & !accepted != 0 {
                XAER_INVAL
            } else {
                XA_OK
            };
            let got = fcode(flags::check(entry, flags));
            if got != want {
                failures.push(format!(
                    "{entry:?} flags {flags:#x}: {} want {}",
                    xa_name(got),
                    xa_name(want)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn flags_start() {
    assert_eq!(flags::start(TMNOFLAGS).unwrap(), StartMode::New);
    assert_eq!(flags::start(TMJOIN).unwrap(), StartMode::Join);
    assert_eq!(flags::start(TMRESUME).unwrap(), StartMode::Resume);
    // TMNOWAIT is accepted (mmxa never blocks in xa_start).
    assert_eq!(flags::start(TMNOWAIT).unwrap(), StartMode::New);
    assert_eq!(flags::start(TMJOIN | TMNOWAIT).unwrap(), StartMode::Join);
    assert_eq!(
        flags::start(TMRESUME | TMNOWAIT).unwrap(),
        StartMode::Resume
    );
    assert_eq!(fcode(flags::start(TMJOIN | TMRESUME)), XAER_INVAL);
    assert_eq!(fcode(flags::start(TMJOIN | TMRESUME | TMASYNC)), XAER_ASYNC);
    assert_eq!(fcode(flags::start(TMASYNC)), XAER_ASYNC);
    for bad in [
        TMSUCCESS,
        TMSUSPEND,
        TMMIGRATE,
        TMONEPHASE,
        TMREGISTER,
        1 << 40,
        !TMASYNC,
    ] {
        assert_eq!(fcode(flags::start(bad)), XAER_INVAL, "{bad:#x}");
    }
    // A TMASYNC sign-extended from an int: XAER_ASYNC or XAER_INVAL are both acceptable.
    let c = fcode(flags::start(0xFFFF_FFFF_8000_0000_u64 as c_long));
    assert!(c == XAER_ASYNC || c == XAER_INVAL, "{}", xa_name(c));
}

#[test]
fn flags_end() {
    assert_eq!(flags::end(TMSUCCESS).unwrap(), EndMode::Success);
    assert_eq!(flags::end(TMFAIL).unwrap(), EndMode::Fail);
    assert_eq!(flags::end(TMSUSPEND).unwrap(), EndMode::Suspend);
    assert_eq!(
        flags::end(TMSUSPEND | TMMIGRATE).unwrap(),
        EndMode::SuspendMigrate
    );
    for bad in [
        TMNOFLAGS,
        TMMIGRATE,
        TMSUCCESS | TMFAIL,
        TMSUCCESS | TMSUSPEND,
        TMFAIL | TMSUSPEND,
        TMSUCCESS | TMFAIL | TMSUSPEND,
        TMSUCCESS | TMMIGRATE,
        TMFAIL | TMMIGRATE,
        TMSUCCESS | TMJOIN,
        TMSUSPEND | TMRESUME,
        TMSUCCESS | (1 << 40),
    ] {
        assert_eq!(fcode(flags::end(bad)), XAER_INVAL, "{bad:#x}");
    }
    for bad in [
        TMASYNC,
        TMASYNC | TMSUCCESS,
        TMASYNC | TMNOFLAGS,
        TMASYNC | TMMIGRATE,
    ] {
        assert_eq!(fcode(flags::end(bad)), XAER_ASYNC, "{bad:#x}");
    }
}

#[test]
fn flags_commit_and_recover() {
    assert!(!flags::commit(TMNOFLAGS).unwrap());
    assert!(flags::commit(TMONEPHASE).unwrap());
    assert!(!flags::commit(TMNOWAIT).unwrap());
    assert!(flags::commit(TMONEPHASE | TMNOWAIT).unwrap());
    assert_eq!(fcode(flags::commit(TMASYNC)), XAER_ASYNC);
    assert_eq!(fcode(flags::commit(TMASYNC | TMONEPHASE)), XAER_ASYNC);
    for bad in [TMJOIN, TMSUCCESS, TMRESUME, TMSTARTRSCAN, 1 << 40] {
        assert_eq!(fcode(flags::commit(bad)), XAER_INVAL, "{bad:#x}");
    }
    let s = flags::recover(TMNOFLAGS).unwrap();
    assert!(!s.start && !s.end);
    let s = flags::recover(TMSTARTRSCAN).unwrap();
    assert!(s.start && !s.end);
    let s = flags::recover(TMENDRSCAN).unwrap();
    assert!(!s.start && s.end);
    let s = flags::recover(TMSTARTRSCAN | TMENDRSCAN).unwrap();
    assert!(s.start && s.end);
    // No XAER_ASYNC from xa_recover (§3.2): TMASYNC is just an invalid flag there.
    assert_eq!(fcode(flags::recover(TMASYNC)), XAER_INVAL);
    for bad in [TMJOIN, TMSUCCESS, TMONEPHASE, TMNOWAIT, 1 << 40] {
        assert_eq!(fcode(flags::recover(bad)), XAER_INVAL, "{bad:#x}");
    }
}
