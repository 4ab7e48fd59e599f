//! Model-based property test of the core XA state machine.
//!
//! Random sequences of XA calls (with random, sometimes invalid, flags), data calls, operator
//! heuristic decisions, `xa_close` of a thread of control and restarts (drop + `Rm::open`) run
//! against `mmxa::rm::Rm` and against [`Model`], an independent reference written from the
//! state tables of the XA reference (`xa-spec.md` §2.3, §4, §5.2, §5.3) and mmxa's documented
//! choices. Every return code and every read is compared.
//!
//! The world is small on purpose so that sequences collide: three XIDs (two share a gtrid:
//! loosely coupled), three threads of control, three keys. The store runs with
//! `isolation=serializable` (reads lock shared until prepare) and a lock timeout of 0, so a write
//! of a key another branch wrote or read, or a read of a key another branch wrote, fails at once
//! (no threads are needed; deadlocks, which need a waiting thread, are covered in
//! `tests/state_tables.rs` and `tests/isolation.rs`).
//!
//! Purely random calls rarely carry a branch far, so most actions let the driver pick the
//! thread of control and XID that make sense (`toc?`, `X?`), and `advance(X, n)` takes a branch
//! one typical step further (start, work, end, prepare, commit, heuristic, forget...). Failure
//! reports list every call as actually made, with the store's answer.

mod rm_common;

use mmxa::config::SyncMode;
use mmxa::error::{Outcome, XaOk};
use mmxa::rm::flags::{self, Entry};
use mmxa::rm::{Rm, Toc};
use mmxa::status::*;
use mmxa::xa::*;
use mmxa::xid::Xid;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rm_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::os::raw::c_long;
use std::time::Duration;

const TOCS: [Toc; 3] = [1, 2, 3];
/// A thread of control the sequences never use: the final audit reads through it.
const AUDIT: Toc = 77;

fn xids() -> [Xid; 3] {
    [
        xid(b"g1", b"b1"),
        xid(b"g1", b"b2"), // same gtrid as the first: a loosely coupled sibling
        xid(b"g2", b"b1"),
    ]
}

fn key(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

fn value(n: u8) -> Vec<u8> {
    // Lengths vary so values are not all the same size in the log.
    let mut v = format!("v{n}").into_bytes();
    v.resize(2 + (n as usize % 7) * 3, b'.');
    v
}

// ---- actions --------------------------------------------------------------------------------

#[derive(Clone)]
enum Act {
    Start {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    End {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    Prepare {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    Commit {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    Rollback {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    Forget {
        toc: usize,
        x: usize,
        flags: c_long,
    },
    Recover {
        toc: usize,
        flags: c_long,
        cap: usize,
    },
    Put {
        toc: usize,
        key: usize,
        val: Option<u8>,
    },
    Get {
        toc: usize,
        key: usize,
    },
    Heuristic {
        x: usize,
        commit: bool,
    },
    Close {
        toc: usize,
    },
    Reopen,
    /// Take branch `x` one typical step further (see [`Model::plan`]); `choice` picks among
    /// the steps that make sense in its state.
    Advance {
        x: usize,
        choice: u8,
    },
}

fn flag_names(f: c_long) -> String {
    if f == TMNOFLAGS {
        return "TMNOFLAGS".into();
    }
    let names = [
        (TMMIGRATE, "TMMIGRATE"),
        (TMJOIN, "TMJOIN"),
        (TMENDRSCAN, "TMENDRSCAN"),
        (TMSTARTRSCAN, "TMSTARTRSCAN"),
        (TMSUSPEND, "TMSUSPEND"),
        (TMSUCCESS, "TMSUCCESS"),
        (TMRESUME, "TMRESUME"),
        (TMNOWAIT, "TMNOWAIT"),
        (TMFAIL, "TMFAIL"),
        (TMONEPHASE, "TMONEPHASE"),
        (TMASYNC, "TMASYNC"),
    ];
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| f & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = names.iter().fold(f, |acc, (bit, _)| acc & !bit);
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out.join("|")
}

/// An XID index of an action: 0..3 names one of [`xids`]; [`SMART`] lets the driver pick, at
/// run time, the XID most likely to make the call meaningful (see [`Model::resolve`]), so that
/// random sequences reach prepared, heuristic, resumed and joined branches often.
const SMART: usize = 3;

struct XRef(usize);

impl fmt::Display for XRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == SMART {
            write!(f, "X?")
        } else {
            write!(f, "X{}", self.0)
        }
    }
}

impl fmt::Debug for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |i: &usize| TOCS.get(*i).map_or("?".to_string(), |t| t.to_string());
        match self {
            Act::Start { toc, x, flags } => {
                write!(
                    f,
                    "start(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::End { toc, x, flags } => {
                write!(
                    f,
                    "end(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::Prepare { toc, x, flags } => {
                write!(
                    f,
                    "prepare(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::Commit { toc, x, flags } => {
                write!(
                    f,
                    "commit(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::Rollback { toc, x, flags } => {
                write!(
                    f,
                    "rollback(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::Forget { toc, x, flags } => {
                write!(
                    f,
                    "forget(toc{}, {}, {})",
                    t(toc),
                    XRef(*x),
                    flag_names(*flags)
                )
            }
            Act::Recover { toc, flags, cap } => {
                write!(
                    f,
                    "recover(toc{}, {}, cap {cap})",
                    t(toc),
                    flag_names(*flags)
                )
            }
            Act::Put { toc, key, val } => match val {
                Some(v) => write!(
                    f,
                    "put(toc{}, k{key}, {:?})",
                    t(toc),
                    String::from_utf8_lossy(&value(*v))
                ),
                None => write!(f, "delete(toc{}, k{key})", t(toc)),
            },
            Act::Get { toc, key } => write!(f, "get(toc{}, k{key})", t(toc)),
            Act::Heuristic { x, commit } => write!(
                f,
                "heuristic({}, {})",
                XRef(*x),
                if *commit { "XA_HEURCOM" } else { "XA_HEURRB" }
            ),
            Act::Close { toc } => write!(f, "close_toc(toc{})", t(toc)),
            Act::Reopen => write!(f, "REOPEN"),
            Act::Advance { x, choice } => write!(f, "advance(X{x}, {choice})"),
        }
    }
}

fn start_flags() -> impl Strategy<Value = c_long> {
    prop_oneof![
        6 => Just(TMNOFLAGS),
        4 => Just(TMJOIN),
        4 => Just(TMRESUME),
        1 => prop_oneof![Just(TMNOWAIT), Just(TMJOIN | TMNOWAIT), Just(TMRESUME | TMNOWAIT)],
        // Invalid: XAER_INVAL / XAER_ASYNC.
        1 => prop_oneof![Just(TMJOIN | TMRESUME), Just(TMASYNC), Just(TMSUCCESS)],
    ]
}

fn end_flags() -> impl Strategy<Value = c_long> {
    prop_oneof![
        8 => Just(TMSUCCESS),
        2 => Just(TMFAIL),
        3 => Just(TMSUSPEND),
        3 => Just(TMSUSPEND | TMMIGRATE),
        1 => prop_oneof![
            Just(TMNOFLAGS),
            Just(TMMIGRATE),
            Just(TMSUCCESS | TMFAIL),
            Just(TMSUCCESS | TMMIGRATE),
            Just(TMSUCCESS | TMASYNC),
        ],
    ]
}

fn commit_flags() -> impl Strategy<Value = c_long> {
    prop_oneof![
        5 => Just(TMNOFLAGS),
        5 => Just(TMONEPHASE),
        1 => prop_oneof![Just(TMNOWAIT), Just(TMONEPHASE | TMNOWAIT)],
        1 => prop_oneof![Just(TMJOIN), Just(TMASYNC | TMONEPHASE)],
    ]
}

fn plain_flags() -> impl Strategy<Value = c_long> {
    prop_oneof![
        12 => Just(TMNOFLAGS),
        1 => prop_oneof![Just(TMASYNC), Just(TMONEPHASE)],
    ]
}

fn recover_flags() -> impl Strategy<Value = c_long> {
    prop_oneof![
        3 => Just(TMSTARTRSCAN),
        3 => Just(TMNOFLAGS),
        2 => Just(TMSTARTRSCAN | TMENDRSCAN),
        1 => Just(TMENDRSCAN),
        1 => Just(TMASYNC),
    ]
}

/// Relative weights of the kinds of action, so different tests stress different areas.
#[derive(Clone, Copy)]
struct Profile {
    start: u32,
    end: u32,
    prepare: u32,
    commit: u32,
    rollback: u32,
    forget: u32,
    recover: u32,
    put: u32,
    get: u32,
    heuristic: u32,
    close: u32,
    reopen: u32,
    advance: u32,
}

/// Everything, in proportions that keep branches alive long enough to complete.
const MIXED: Profile = Profile {
    start: 7,
    end: 6,
    prepare: 3,
    commit: 3,
    rollback: 2,
    forget: 1,
    recover: 2,
    put: 7,
    get: 4,
    heuristic: 1,
    close: 1,
    reopen: 1,
    advance: 16,
};

/// Threads of control joining, suspending, migrating and resuming, with data calls.
const ASSOCIATIONS: Profile = Profile {
    start: 10,
    end: 9,
    prepare: 1,
    commit: 1,
    rollback: 2,
    forget: 1,
    recover: 1,
    put: 8,
    get: 6,
    heuristic: 1,
    close: 2,
    reopen: 1,
    advance: 12,
};

/// Completion, heuristic decisions, recovery scans and restarts.
const RECOVERY: Profile = Profile {
    start: 5,
    end: 5,
    prepare: 5,
    commit: 4,
    rollback: 2,
    forget: 2,
    recover: 5,
    put: 5,
    get: 3,
    heuristic: 3,
    close: 1,
    reopen: 3,
    advance: 20,
};

fn act(p: Profile) -> impl Strategy<Value = Act> {
    // Mostly the driver's pick (SMART_TOC, SMART), so that calls tend to make sense; fixed
    // choices keep the nonsensical ones coming.
    let toc = prop_oneof![1 => 0..TOCS.len(), 2 => Just(SMART_TOC)];
    let x = prop_oneof![1 => 0..3usize, 3 => Just(SMART)];
    let k = 0..3usize;
    prop_oneof![
        p.start => (toc.clone(), x.clone(), start_flags())
            .prop_map(|(toc, x, flags)| Act::Start { toc, x, flags }),
        p.end => (toc.clone(), x.clone(), end_flags())
            .prop_map(|(toc, x, flags)| Act::End { toc, x, flags }),
        p.prepare => (toc.clone(), x.clone(), plain_flags())
            .prop_map(|(toc, x, flags)| Act::Prepare { toc, x, flags }),
        p.commit => (toc.clone(), x.clone(), commit_flags())
            .prop_map(|(toc, x, flags)| Act::Commit { toc, x, flags }),
        p.rollback => (toc.clone(), x.clone(), plain_flags())
            .prop_map(|(toc, x, flags)| Act::Rollback { toc, x, flags }),
        p.forget => (toc.clone(), x.clone(), plain_flags())
            .prop_map(|(toc, x, flags)| Act::Forget { toc, x, flags }),
        p.recover => (toc.clone(), recover_flags(), 0..4usize)
            .prop_map(|(toc, flags, cap)| Act::Recover { toc, flags, cap }),
        p.put => (toc.clone(), k.clone(), prop_oneof![4 => any::<u8>().prop_map(Some), 1 => Just(None)])
            .prop_map(|(toc, key, val)| Act::Put { toc, key, val }),
        p.get => (toc.clone(), k).prop_map(|(toc, key)| Act::Get { toc, key }),
        p.heuristic => (x, any::<bool>()).prop_map(|(x, commit)| Act::Heuristic { x, commit }),
        p.close => toc.prop_map(|toc| Act::Close { toc }),
        p.reopen => Just(Act::Reopen),
        p.advance => (0..3usize, any::<u8>()).prop_map(|(x, choice)| Act::Advance { x, choice }),
    ]
}

// ---- the reference model --------------------------------------------------------------------

/// Flag rules of §2.2/§2.3: `TMASYNC` first (`XAER_ASYNC`, except where the entry point never
/// returns it), then any bit outside the entry point's set or a forbidden combination
/// (`XAER_INVAL`).
mod rules {
    use super::*;

    pub enum Start {
        New,
        Join,
        Resume,
    }

    pub fn start(f: c_long) -> Result<Start, i32> {
        if f & TMASYNC != 0 {
            return Err(XAER_ASYNC);
        }
        if f & !(TMJOIN | TMRESUME | TMNOWAIT) != 0 {
            return Err(XAER_INVAL);
        }
        match (f & TMJOIN != 0, f & TMRESUME != 0) {
            (true, true) => Err(XAER_INVAL),
            (true, false) => Ok(Start::Join),
            (false, true) => Ok(Start::Resume),
            (false, false) => Ok(Start::New),
        }
    }

    #[derive(PartialEq, Eq)]
    pub enum End {
        Success,
        Fail,
        Suspend,
        Migrate,
    }

    pub fn end(f: c_long) -> Result<End, i32> {
        if f & TMASYNC != 0 {
            return Err(XAER_ASYNC);
        }
        if f & !(TMSUSPEND | TMSUCCESS | TMFAIL | TMMIGRATE) != 0 {
            return Err(XAER_INVAL);
        }
        let (s, ok, fail, m) = (
            f & TMSUSPEND != 0,
            f & TMSUCCESS != 0,
            f & TMFAIL != 0,
            f & TMMIGRATE != 0,
        );
        match (s, ok, fail, m) {
            (true, false, false, false) => Ok(End::Suspend),
            (true, false, false, true) => Ok(End::Migrate),
            (false, true, false, false) => Ok(End::Success),
            (false, false, true, false) => Ok(End::Fail),
            _ => Err(XAER_INVAL),
        }
    }

    /// true: `TMONEPHASE`.
    pub fn commit(f: c_long) -> Result<bool, i32> {
        if f & TMASYNC != 0 {
            return Err(XAER_ASYNC);
        }
        if f & !(TMONEPHASE | TMNOWAIT) != 0 {
            return Err(XAER_INVAL);
        }
        Ok(f & TMONEPHASE != 0)
    }

    /// prepare, rollback, forget: `TMASYNC` or nothing.
    pub fn plain(f: c_long) -> Result<(), i32> {
        if f & TMASYNC != 0 {
            return Err(XAER_ASYNC);
        }
        if f != 0 {
            return Err(XAER_INVAL);
        }
        Ok(())
    }

    /// (start, end); xa_recover never answers `XAER_ASYNC`.
    pub fn recover(f: c_long) -> Result<(bool, bool), i32> {
        if f & !(TMSTARTRSCAN | TMENDRSCAN) != 0 {
            return Err(XAER_INVAL);
        }
        Ok((f & TMSTARTRSCAN != 0, f & TMENDRSCAN != 0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// S1, S2 or S4 depending on associations and the rollback-only mark.
    Working,
    /// S3.
    Prepared,
    /// S5, with its heuristic code.
    Heuristic(i32),
}

#[derive(Clone, Debug)]
struct Branch {
    phase: Phase,
    /// ToCs in T1 with this branch.
    active: BTreeSet<Toc>,
    /// ToCs in T2 with this branch (suspended without TMMIGRATE).
    suspended: BTreeSet<Toc>,
    /// Suspensions with TMMIGRATE: T0 everywhere, resumable once by any ToC.
    migrated: usize,
    /// Rollback-only, with the first reason's code.
    rb: Option<i32>,
    /// Rolled back by a ToC that was not associated, while others were.
    undone: bool,
    /// The branch's writes: key → value (None: deleted). Non-empty means "not read-only"; the
    /// keys are locked while the branch is unprepared or prepared.
    writes: BTreeMap<usize, Option<Vec<u8>>>,
    /// Keys the branch read (isolation=serializable): locked shared until it prepares or ends.
    reads: BTreeSet<usize>,
}

impl Branch {
    fn new() -> Branch {
        Branch {
            phase: Phase::Working,
            active: BTreeSet::new(),
            suspended: BTreeSet::new(),
            migrated: 0,
            rb: None,
            undone: false,
            writes: BTreeMap::new(),
            reads: BTreeSet::new(),
        }
    }

    fn associated(&self) -> bool {
        !self.active.is_empty() || !self.suspended.is_empty() || self.migrated > 0
    }

    /// The `XA_RB*` code the branch reports, if it can no longer commit. A rollback from
    /// another ToC (`XA_RBOTHER`) overrides the earlier reasons.
    fn doomed(&self) -> Option<i32> {
        if self.undone {
            Some(XA_RBOTHER)
        } else {
            self.rb
        }
    }
}

/// A ToC index of an action that lets the driver pick (see [`Model::toc`]).
const SMART_TOC: usize = 3;

/// What a [`SMART_TOC`] is wanted for.
#[derive(Clone, Copy)]
enum TocPurpose {
    /// A data call: a ToC with an active association.
    Worker,
    /// `xa_end`: a ToC with an active, else a suspended, association.
    Ender,
    /// `xa_start`: a ToC with no active association.
    Starter,
    /// Completion calls, `xa_close`: a ToC with no association at all.
    Idle,
}

/// What a [`SMART`] XID is wanted for.
#[derive(Clone, Copy)]
enum Purpose {
    StartNew,
    StartJoin,
    StartResume,
    End,
    Prepare,
    Commit { one_phase: bool },
    Rollback,
    Forget,
    Heuristic,
}

#[derive(Default, Debug)]
struct Model {
    branches: BTreeMap<usize, Branch>,
    /// Open recovery scans: the XIDs of the snapshot not yet returned.
    scans: BTreeMap<Toc, BTreeSet<usize>>,
    committed: BTreeMap<usize, Vec<u8>>,
}

type XaResult = Result<i32, i32>;

impl Model {
    fn active_of(&self, toc: Toc) -> Option<usize> {
        let mut it = self
            .branches
            .iter()
            .filter(|(_, b)| b.active.contains(&toc))
            .map(|(x, _)| *x);
        let first = it.next();
        assert!(it.next().is_none(), "model: ToC {toc} is T1 twice");
        first
    }

    fn associated(&self, toc: Toc) -> bool {
        self.branches
            .values()
            .any(|b| b.active.contains(&toc) || b.suspended.contains(&toc))
    }

    /// The branch holding `key`'s lock: one whose write set has it, unprepared or prepared.
    fn holder(&self, key: usize) -> Option<usize> {
        let mut it = self
            .branches
            .iter()
            .filter(|(_, b)| {
                matches!(b.phase, Phase::Working | Phase::Prepared) && b.writes.contains_key(&key)
            })
            .map(|(x, _)| *x);
        let first = it.next();
        assert!(it.next().is_none(), "model: two branches hold k{key}");
        first
    }

    /// Whether a branch other than `x` holds a shared lock on `key` (a read of an unprepared
    /// branch).
    fn read_by_other(&self, key: usize, x: Option<usize>) -> bool {
        self.branches.iter().any(|(y, b)| {
            Some(*y) != x && b.phase == Phase::Working && !b.undone && b.reads.contains(&key)
        })
    }

    /// The ToC an action means: `t` itself, or for [`SMART_TOC`] the first ToC that suits
    /// `purpose`, falling back to the first.
    fn toc(&self, t: usize, purpose: TocPurpose) -> Toc {
        if t != SMART_TOC {
            return TOCS[t];
        }
        let active = |toc: &&Toc| self.active_of(**toc).is_some();
        let picked = match purpose {
            TocPurpose::Worker => TOCS.iter().find(active),
            TocPurpose::Ender => TOCS
                .iter()
                .find(active)
                .or_else(|| TOCS.iter().find(|t| self.associated(**t))),
            TocPurpose::Starter => TOCS.iter().find(|t| !active(t)),
            TocPurpose::Idle => TOCS.iter().find(|t| !self.associated(**t)),
        };
        *picked.unwrap_or(&TOCS[0])
    }

    /// The XID an action means: `x` itself, or for [`SMART`] the first branch (in index order)
    /// in the state that makes `purpose` meaningful, falling back to X0.
    fn resolve(&self, toc: Toc, x: usize, purpose: Purpose) -> usize {
        if x != SMART {
            return x;
        }
        let find = |pred: &dyn Fn(&Branch) -> bool| {
            self.branches.iter().find(|(_, b)| pred(b)).map(|(x, _)| *x)
        };
        let idle = |b: &Branch| b.phase == Phase::Working && !b.associated();
        let in_doubt = |b: &Branch| b.phase != Phase::Working;
        let any = |_: &Branch| true;
        let picked = match purpose {
            Purpose::StartNew => (0..3).find(|x| !self.branches.contains_key(x)),
            Purpose::StartJoin => find(&|b| {
                b.phase == Phase::Working && !b.active.contains(&toc) && !b.suspended.contains(&toc)
            })
            .or_else(|| find(&any)),
            Purpose::StartResume => find(&|b| b.suspended.contains(&toc))
                .or_else(|| find(&|b| b.migrated > 0))
                .or_else(|| find(&any)),
            Purpose::End => self
                .active_of(toc)
                .or_else(|| find(&|b| b.suspended.contains(&toc)))
                .or_else(|| find(&any)),
            Purpose::Prepare => find(&idle).or_else(|| find(&any)),
            Purpose::Commit { one_phase: true } => find(&idle).or_else(|| find(&any)),
            Purpose::Commit { one_phase: false } => find(&in_doubt).or_else(|| find(&any)),
            Purpose::Rollback => find(&idle)
                .or_else(|| find(&in_doubt))
                .or_else(|| find(&any)),
            Purpose::Forget => {
                find(&|b| matches!(b.phase, Phase::Heuristic(_))).or_else(|| find(&any))
            }
            Purpose::Heuristic => find(&|b| b.phase == Phase::Prepared).or_else(|| find(&any)),
        };
        picked.unwrap_or(0)
    }

    /// A typical next step for branch `x` in its current state (what a TM and an AP would do
    /// next), `choice` picking among the sensible ones. Returns an action with fixed ToC/XID.
    fn plan(&self, x: usize, choice: u8) -> Act {
        let c = choice as usize;
        let starter = toc_index(self.toc(SMART_TOC, TocPurpose::Starter));
        let idle = toc_index(self.toc(SMART_TOC, TocPurpose::Idle));
        let pick = |opts: Vec<Act>| opts[c % opts.len()].clone();
        let Some(b) = self.branches.get(&x) else {
            return Act::Start {
                toc: starter,
                x,
                flags: TMNOFLAGS,
            };
        };
        match b.phase {
            Phase::Working if !b.active.is_empty() => {
                let actives: Vec<Toc> = b.active.iter().copied().collect();
                let t = toc_index(actives[c % actives.len()]);
                let (key, val) = ((c / 7) % 3, Some(choice));
                let end = |flags| Act::End { toc: t, x, flags };
                let mut opts = vec![
                    Act::Put { toc: t, key, val },
                    Act::Put { toc: t, key, val },
                    Act::Put { toc: t, key, val },
                    Act::Put {
                        toc: t,
                        key,
                        val: None,
                    },
                    Act::Get { toc: t, key },
                    end(TMSUCCESS),
                    end(TMSUCCESS),
                    end(TMSUCCESS),
                    end(TMSUSPEND),
                    end(TMSUSPEND | TMMIGRATE),
                ];
                if c % 5 == 0 {
                    opts.push(end(TMFAIL));
                }
                // Another ToC joins (tightly coupled), or rolls the branch back from outside.
                if let Some(&j) = TOCS
                    .iter()
                    .find(|&&j| self.active_of(j).is_none() && !b.suspended.contains(&j))
                {
                    opts.push(Act::Start {
                        toc: toc_index(j),
                        x,
                        flags: TMJOIN,
                    });
                }
                if c % 31 == 0 {
                    opts = vec![Act::Rollback {
                        toc: idle,
                        x,
                        flags: TMNOFLAGS,
                    }];
                }
                pick(opts)
            }
            Phase::Working if !b.suspended.is_empty() => {
                let t = toc_index(*b.suspended.iter().next().unwrap());
                pick(vec![
                    Act::Start {
                        toc: t,
                        x,
                        flags: TMRESUME,
                    },
                    Act::Start {
                        toc: t,
                        x,
                        flags: TMRESUME,
                    },
                    Act::End {
                        toc: t,
                        x,
                        flags: TMSUCCESS,
                    },
                ])
            }
            Phase::Working if b.migrated > 0 => Act::Start {
                toc: starter,
                x,
                flags: TMRESUME,
            },
            Phase::Working => pick(vec![
                Act::Prepare {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Prepare {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Commit {
                    toc: idle,
                    x,
                    flags: TMONEPHASE,
                },
                Act::Rollback {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Start {
                    toc: starter,
                    x,
                    flags: TMJOIN,
                },
            ]),
            Phase::Prepared => pick(vec![
                Act::Commit {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Commit {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Rollback {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Heuristic { x, commit: true },
                Act::Heuristic { x, commit: false },
                Act::Recover {
                    toc: idle,
                    flags: TMSTARTRSCAN,
                    cap: 1 + c % 2,
                },
            ]),
            Phase::Heuristic(_) => pick(vec![
                Act::Commit {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Rollback {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Forget {
                    toc: idle,
                    x,
                    flags: TMNOFLAGS,
                },
                Act::Recover {
                    toc: idle,
                    flags: TMNOFLAGS,
                    cap: 1 + c % 2,
                },
            ]),
        }
    }

    fn apply(&mut self, writes: BTreeMap<usize, Option<Vec<u8>>>) {
        for (k, v) in writes {
            match v {
                Some(v) => self.committed.insert(k, v),
                None => self.committed.remove(&k),
            };
        }
    }

    fn start(&mut self, toc: Toc, x: usize, flags: c_long) -> XaResult {
        let mode = rules::start(flags)?;
        let busy = self.active_of(toc).is_some();
        let Some(b) = self.branches.get_mut(&x) else {
            // §4.3: TMJOIN/TMRESUME of an unknown XID → XAER_NOTA.
            if !matches!(mode, rules::Start::New) {
                return Err(XAER_NOTA);
            }
            // One active association per ToC.
            if busy {
                return Err(XAER_PROTO);
            }
            let mut b = Branch::new();
            b.active.insert(toc);
            self.branches.insert(x, b);
            return Ok(XA_OK);
        };
        // §5.2/§5.3: TMNOFLAGS on a known XID → XAER_DUPID, whatever the ToC's state.
        if matches!(mode, rules::Start::New) {
            return Err(XAER_DUPID);
        }
        if busy {
            return Err(XAER_PROTO);
        }
        // Prepared or heuristic: cannot be joined or resumed.
        if b.phase != Phase::Working {
            return Err(XAER_PROTO);
        }
        let mine = b.suspended.contains(&toc);
        match mode {
            // The suspending ToC must resume, not join.
            rules::Start::Join if mine => return Err(XAER_PROTO),
            // Resume needs this ToC's suspension or a migrated one.
            rules::Start::Resume if !mine && b.migrated == 0 => return Err(XAER_PROTO),
            _ => {}
        }
        // A rollback-only branch: XA_RB*, no association (a suspended one stays suspended).
        if let Some(rb) = b.doomed() {
            return Err(rb);
        }
        if let rules::Start::Resume = mode {
            if mine {
                b.suspended.remove(&toc);
            } else {
                b.migrated -= 1;
            }
        }
        b.active.insert(toc);
        Ok(XA_OK)
    }

    fn end(&mut self, toc: Toc, x: usize, flags: c_long) -> XaResult {
        let mode = rules::end(flags)?;
        let Some(b) = self.branches.get_mut(&x) else {
            return Err(XAER_NOTA);
        };
        let suspending = matches!(mode, rules::End::Suspend | rules::End::Migrate);
        let is_active = b.active.contains(&toc);
        let is_suspended = b.suspended.contains(&toc);
        // TMSUCCESS/TMFAIL end an active or this ToC's suspended association; TMSUSPEND
        // needs an active one.
        if !(is_active || is_suspended && !suspending) {
            return Err(XAER_PROTO);
        }
        // [P] TMFAIL always marks the branch rollback-only.
        if mode == rules::End::Fail && b.rb.is_none() {
            b.rb = Some(XA_RBROLLBACK);
        }
        b.active.remove(&toc);
        b.suspended.remove(&toc);
        match b.doomed() {
            // The association ends, even for TMSUSPEND.
            Some(rb) => {
                if b.undone && !b.associated() {
                    self.branches.remove(&x);
                }
                Err(rb)
            }
            None => {
                match mode {
                    rules::End::Suspend => {
                        b.suspended.insert(toc);
                    }
                    rules::End::Migrate => b.migrated += 1,
                    _ => {}
                }
                Ok(XA_OK)
            }
        }
    }

    fn prepare(&mut self, x: usize, flags: c_long) -> XaResult {
        rules::plain(flags)?;
        let Some(b) = self.branches.get(&x) else {
            return Err(XAER_NOTA);
        };
        if b.phase != Phase::Working || b.associated() {
            return Err(XAER_PROTO);
        }
        if let Some(rb) = b.doomed() {
            self.branches.remove(&x);
            return Err(rb);
        }
        if b.writes.is_empty() {
            self.branches.remove(&x);
            return Ok(XA_RDONLY);
        }
        let b = self.branches.get_mut(&x).unwrap();
        b.phase = Phase::Prepared;
        b.reads.clear();
        Ok(XA_OK)
    }

    fn commit(&mut self, x: usize, flags: c_long) -> XaResult {
        let one_phase = rules::commit(flags)?;
        let Some(b) = self.branches.get(&x) else {
            return Err(XAER_NOTA);
        };
        match (b.phase, one_phase) {
            (Phase::Heuristic(h), false) => Err(h),
            (Phase::Prepared, false) => {
                let b = self.branches.remove(&x).unwrap();
                self.apply(b.writes);
                Ok(XA_OK)
            }
            (Phase::Working, true) => {
                if b.associated() {
                    return Err(XAER_PROTO);
                }
                let b = self.branches.remove(&x).unwrap();
                if let Some(rb) = b.doomed() {
                    return Err(rb);
                }
                self.apply(b.writes);
                Ok(XA_OK)
            }
            // 2PC of an unprepared branch; 1PC of a prepared or heuristic one.
            _ => Err(XAER_PROTO),
        }
    }

    fn rollback(&mut self, toc: Toc, x: usize, flags: c_long) -> XaResult {
        rules::plain(flags)?;
        let Some(b) = self.branches.get_mut(&x) else {
            return Err(XAER_NOTA);
        };
        match b.phase {
            Phase::Heuristic(h) => Err(h),
            Phase::Prepared => {
                self.branches.remove(&x);
                Ok(XA_OK)
            }
            Phase::Working => {
                if b.active.contains(&toc) || b.suspended.contains(&toc) {
                    return Err(XAER_PROTO);
                }
                if b.active.is_empty() && b.suspended.is_empty() {
                    self.branches.remove(&x);
                } else {
                    // Undone now; forgotten when the last association ends.
                    b.undone = true;
                    b.migrated = 0;
                    b.writes.clear();
                    b.reads.clear();
                }
                Ok(XA_OK)
            }
        }
    }

    fn forget(&mut self, x: usize, flags: c_long) -> XaResult {
        rules::plain(flags)?;
        match self.branches.get(&x).map(|b| b.phase) {
            Some(Phase::Heuristic(_)) => {
                self.branches.remove(&x);
                Ok(XA_OK)
            }
            _ => Err(XAER_NOTA),
        }
    }

    fn heuristic(&mut self, x: usize, outcome: i32) -> XaResult {
        let Some(b) = self.branches.get_mut(&x) else {
            return Err(XAER_NOTA);
        };
        if b.phase != Phase::Prepared {
            return Err(XAER_PROTO);
        }
        b.phase = Phase::Heuristic(outcome);
        let writes = std::mem::take(&mut b.writes);
        if outcome == XA_HEURCOM {
            self.apply(writes);
        }
        Ok(XA_OK)
    }

    /// `xa_recover`: checks the XIDs the store returned (`got`, as indices) against the scan
    /// and advances it. Returns the expected count or the expected error.
    fn recover(
        &mut self,
        toc: Toc,
        flags: c_long,
        cap: usize,
        got: &[usize],
    ) -> Result<Result<usize, i32>, String> {
        let (start, end) = match rules::recover(flags) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        if start {
            let in_doubt = self
                .branches
                .iter()
                .filter(|(_, b)| b.phase != Phase::Working)
                .map(|(x, _)| *x)
                .collect();
            self.scans.insert(toc, in_doubt);
        }
        let Some(rest) = self.scans.get_mut(&toc) else {
            // No scan: only TMENDRSCAN with count 0 is harmless.
            return Ok(if end && cap == 0 {
                Ok(0)
            } else {
                Err(XAER_INVAL)
            });
        };
        let n = cap.min(rest.len());
        for x in got {
            if !rest.remove(x) {
                return Err(format!(
                    "recover returned X{x}, which is not (or no longer) in the scan"
                ));
            }
        }
        if end || n < cap {
            self.scans.remove(&toc);
        }
        Ok(Ok(n))
    }

    /// `put`: Ok(whether the key existed, as the writer sees it) or an `MMXA_*` code.
    fn put(&mut self, toc: Toc, key: usize, val: Option<Vec<u8>>) -> Result<bool, i32> {
        let holder = self.holder(key);
        let active = self.active_of(toc);
        let read_by_other = self.read_by_other(key, active);
        match active {
            Some(x) => {
                let committed = self.committed.contains_key(&key);
                let b = self.branches.get_mut(&x).unwrap();
                if b.doomed().is_some() {
                    return Err(MMXA_EROLLBACK);
                }
                // Another branch's write or read lock: with a zero timeout the wait fails at
                // once (an upgrade of our own read lock waits for the other readers too).
                if holder.is_some_and(|h| h != x) || read_by_other {
                    b.rb.get_or_insert(XA_RBTIMEOUT);
                    return Err(MMXA_ELOCKTIMEOUT);
                }
                let existed = match b.writes.get(&key) {
                    Some(v) => v.is_some(),
                    None => committed,
                };
                b.writes.insert(key, val);
                Ok(existed)
            }
            None => {
                // A one-operation transaction (also for a ToC whose association is suspended).
                if holder.is_some() || read_by_other {
                    return Err(MMXA_ELOCKTIMEOUT);
                }
                let existed = self.committed.contains_key(&key);
                match val {
                    Some(v) => self.committed.insert(key, v),
                    None => self.committed.remove(&key),
                };
                Ok(existed)
            }
        }
    }

    /// `get`: inside a branch it locks the key shared (isolation=serializable), so another
    /// branch's write lock makes it fail at once with the zero timeout.
    fn get(&mut self, toc: Toc, key: usize) -> Result<Option<Vec<u8>>, i32> {
        if let Some(x) = self.active_of(toc) {
            let holder = self.holder(key);
            let b = self.branches.get_mut(&x).unwrap();
            if b.doomed().is_some() {
                return Err(MMXA_EROLLBACK);
            }
            if let Some(v) = b.writes.get(&key) {
                return Ok(v.clone());
            }
            if holder.is_some_and(|h| h != x) {
                b.rb.get_or_insert(XA_RBTIMEOUT);
                return Err(MMXA_ELOCKTIMEOUT);
            }
            b.reads.insert(key);
        }
        Ok(self.committed.get(&key).cloned())
    }

    fn close(&mut self, toc: Toc) -> XaResult {
        if self.associated(toc) {
            return Err(XAER_PROTO);
        }
        self.scans.remove(&toc);
        Ok(XA_OK)
    }

    /// Restart: unprepared branches are rolled back, S3 (with its locks) and S5 survive,
    /// committed data survives, every ToC starts over (T0, no scan).
    fn reopen(&mut self) {
        self.branches.retain(|_, b| b.phase != Phase::Working);
        for b in self.branches.values() {
            assert!(!b.associated() && b.rb.is_none() && !b.undone);
        }
        self.scans.clear();
    }

    fn in_doubt(&self) -> BTreeSet<usize> {
        self.branches
            .iter()
            .filter(|(_, b)| b.phase != Phase::Working)
            .map(|(x, _)| *x)
            .collect()
    }
}

// ---- the driver -----------------------------------------------------------------------------

fn xa<T: XaOk>(r: Result<T, mmxa::error::Error>) -> XaResult {
    match r {
        Ok(v) => Ok(v.xa_code()),
        Err(e) => Err(e.xa_code()),
    }
}

fn show(r: &XaResult) -> String {
    match r {
        Ok(c) => xa_name(*c),
        Err(c) => xa_name(*c),
    }
}

fn show_data<T: fmt::Debug>(r: &Result<T, i32>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(c) => mmxa_name(*c),
    }
}

fn show_get(r: &Result<Option<Vec<u8>>, i32>) -> String {
    match r {
        Ok(Some(v)) => format!("{:?}", String::from_utf8_lossy(v)),
        Ok(None) => "not found".into(),
        Err(c) => mmxa_name(*c),
    }
}

/// The store and the model side by side, with the calls made so far (for failure reports).
struct Harness {
    _dir: tempfile::TempDir,
    cfg: mmxa::config::Config,
    rm: Option<Rm>,
    m: Model,
    xs: [Xid; 3],
    trace: Vec<String>,
}

fn toc_index(toc: Toc) -> usize {
    TOCS.iter().position(|&t| t == toc).expect("a model ToC")
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .expect("tempdir");
        let cfg = config(dir.path(), SyncMode::None, Duration::ZERO);
        let rm = Some(open(&cfg));
        Harness {
            _dir: dir,
            cfg,
            rm,
            m: Model::default(),
            xs: xids(),
            trace: Vec::new(),
        }
    }

    fn fail(&self, what: String) -> TestCaseError {
        TestCaseError::fail(format!(
            "{what}\ncalls (→ store's answer; `▸` = a step chosen by `advance`):\n  {}",
            self.trace.join("\n  ")
        ))
    }

    /// Records `call → got` and fails unless `got == want`.
    fn compare<T: PartialEq>(
        &mut self,
        call: String,
        got: T,
        want: T,
        show: impl Fn(&T) -> String,
    ) -> Result<(), TestCaseError> {
        self.trace.push(format!("{call} → {}", show(&got)));
        if got != want {
            return Err(self.fail(format!(
                "{call}: store answered {}, model expects {}",
                show(&got),
                show(&want)
            )));
        }
        Ok(())
    }

    fn reopen(&mut self, why: &str) -> Result<(), TestCaseError> {
        drop(self.rm.take());
        self.trace.push(why.to_string());
        match Rm::open(self.cfg.clone()) {
            Ok(rm) => self.rm = Some(rm),
            Err(e) => return Err(self.fail(format!("reopen failed: {e}"))),
        }
        self.m.reopen();
        Ok(())
    }

    fn exec(&mut self, a: &Act) -> Result<(), TestCaseError> {
        let xs = self.xs;
        let m = &mut self.m;
        let r = self.rm.as_ref().expect("open");
        match *a {
            Act::Start { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Starter);
                let purpose = match flags & (TMJOIN | TMRESUME) {
                    TMJOIN => Purpose::StartJoin,
                    TMRESUME => Purpose::StartResume,
                    _ => Purpose::StartNew,
                };
                let x = m.resolve(toc, x, purpose);
                let call = format!(
                    "{:?}",
                    Act::Start {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.start(toc, x, flags);
                let got = match flags::start(flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(mode) => xa(r.start(toc, &xs[x], mode)),
                };
                self.compare(call, got, want, show)
            }
            Act::End { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Ender);
                let x = m.resolve(toc, x, Purpose::End);
                let call = format!(
                    "{:?}",
                    Act::End {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.end(toc, x, flags);
                let got = match flags::end(flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(mode) => xa(r.end(toc, &xs[x], mode)),
                };
                self.compare(call, got, want, show)
            }
            Act::Prepare { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let x = m.resolve(toc, x, Purpose::Prepare);
                let call = format!(
                    "{:?}",
                    Act::Prepare {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.prepare(x, flags);
                let got = match flags::check(Entry::Prepare, flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(()) => xa(r.prepare(toc, &xs[x])),
                };
                self.compare(call, got, want, show)
            }
            Act::Commit { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let one_phase = flags & TMONEPHASE != 0;
                let x = m.resolve(toc, x, Purpose::Commit { one_phase });
                let call = format!(
                    "{:?}",
                    Act::Commit {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.commit(x, flags);
                let got = match flags::commit(flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(one) => xa(r.commit(toc, &xs[x], one)),
                };
                self.compare(call, got, want, show)
            }
            Act::Rollback { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let x = m.resolve(toc, x, Purpose::Rollback);
                let call = format!(
                    "{:?}",
                    Act::Rollback {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.rollback(toc, x, flags);
                let got = match flags::check(Entry::Rollback, flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(()) => xa(r.rollback(toc, &xs[x])),
                };
                self.compare(call, got, want, show)
            }
            Act::Forget { toc, x, flags } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let x = m.resolve(toc, x, Purpose::Forget);
                let call = format!(
                    "{:?}",
                    Act::Forget {
                        toc: toc_index(toc),
                        x,
                        flags
                    }
                );
                let want = m.forget(x, flags);
                let got = match flags::check(Entry::Forget, flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(()) => xa(r.forget(toc, &xs[x])),
                };
                self.compare(call, got, want, show)
            }
            Act::Heuristic { x, commit } => {
                let x = m.resolve(0, x, Purpose::Heuristic);
                let call = format!("{:?}", Act::Heuristic { x, commit });
                let outcome = if commit { XA_HEURCOM } else { XA_HEURRB };
                let want = m.heuristic(x, outcome);
                let got = xa(r.heuristic(
                    &xs[x],
                    Outcome::from_log(outcome).expect("outcome"),
                    "model test",
                ));
                self.compare(call, got, want, show)
            }
            Act::Recover { toc, flags, cap } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let call = format!(
                    "{:?}",
                    Act::Recover {
                        toc: toc_index(toc),
                        flags,
                        cap
                    }
                );
                let got = match flags::recover(flags) {
                    Err(e) => Err(e.xa_code()),
                    Ok(s) => r.recover(toc, s, cap).map_err(|e| e.xa_code()),
                };
                // As indices into the model's XIDs; an XID the model never used is a failure.
                let got: Result<Vec<usize>, i32> = match got {
                    Ok(v) => {
                        let mut out = Vec::new();
                        for x in &v {
                            match xs.iter().position(|y| y == x) {
                                Some(i) => out.push(i),
                                None => return Err(self.fail(format!("{call}: unknown XID {x:?}"))),
                            }
                        }
                        Ok(out)
                    }
                    Err(c) => Err(c),
                };
                let listed = got.clone().unwrap_or_default();
                let distinct: BTreeSet<usize> = listed.iter().copied().collect();
                let want = m.recover(toc, flags, cap, &listed);
                let show_r = |r: &Result<Vec<usize>, i32>| match r {
                    Ok(v) => format!("{} XIDs {v:?}", v.len()),
                    Err(c) => xa_name(*c),
                };
                self.trace.push(format!("{call} → {}", show_r(&got)));
                if distinct.len() != listed.len() {
                    return Err(self.fail(format!("{call}: the same XID twice in one call")));
                }
                let want = match want {
                    Ok(w) => w,
                    Err(e) => return Err(self.fail(format!("{call}: {e}"))),
                };
                let got_n = got.as_ref().map(|v| v.len()).map_err(|c| *c);
                if got_n != want {
                    let show_n = |r: &Result<usize, i32>| match r {
                        Ok(n) => format!("{n} XIDs"),
                        Err(c) => xa_name(*c),
                    };
                    return Err(self.fail(format!(
                        "{call}: store answered {}, model expects {}",
                        show_n(&got_n),
                        show_n(&want)
                    )));
                }
                Ok(())
            }
            Act::Put { toc, key: k, val } => {
                let toc = m.toc(toc, TocPurpose::Worker);
                let call = format!(
                    "{:?}",
                    Act::Put {
                        toc: toc_index(toc),
                        key: k,
                        val
                    }
                );
                let v = val.map(value);
                let want = m.put(toc, k, v.clone());
                let got = r.put(toc, &key(k), v.as_deref()).map_err(|e| e.mmxa_code());
                self.compare(call, got, want, show_data)
            }
            Act::Get { toc, key: k } => {
                let toc = m.toc(toc, TocPurpose::Worker);
                let call = format!(
                    "{:?}",
                    Act::Get {
                        toc: toc_index(toc),
                        key: k
                    }
                );
                let want = m.get(toc, k);
                let got = r.get(toc, &key(k)).map_err(|e| e.mmxa_code());
                self.compare(call, got, want, show_get)
            }
            Act::Close { toc } => {
                let toc = m.toc(toc, TocPurpose::Idle);
                let call = format!(
                    "{:?}",
                    Act::Close {
                        toc: toc_index(toc)
                    }
                );
                let want = m.close(toc);
                let got = xa(r.close_toc(toc));
                self.compare(call, got, want, show)
            }
            Act::Reopen => self.reopen("REOPEN"),
            Act::Advance { x, choice } => {
                let next = m.plan(x, choice);
                self.trace.push(format!("▸ advance(X{x}, {choice})"));
                self.exec(&next)
            }
        }
    }

    /// Through a ToC the sequence never used: committed data and the in-doubt set, now and
    /// after one more restart.
    fn audit(&mut self) -> Result<(), TestCaseError> {
        for round in 0..2 {
            if round == 1 {
                self.reopen("REOPEN (audit)")?;
            }
            let r = self.rm.as_ref().expect("open");
            for k in 0..3 {
                let got = r.get(AUDIT, &key(k)).map_err(|e| e.mmxa_code());
                let want = Ok(self.m.committed.get(&k).cloned());
                if got != want {
                    return Err(self.fail(format!(
                        "audit {round}: k{k} is {}, model {}",
                        show_get(&got),
                        show_get(&want)
                    )));
                }
            }
            let listed: BTreeSet<usize> = match r.recover(AUDIT, scan(true, true), 10) {
                Ok(v) => v
                    .iter()
                    .filter_map(|x| self.xs.iter().position(|y| y == x))
                    .collect(),
                Err(e) => return Err(self.fail(format!("audit {round}: recover: {e:?}"))),
            };
            if listed != self.m.in_doubt() {
                return Err(self.fail(format!(
                    "audit {round}: recover lists {listed:?}, model {:?}",
                    self.m.in_doubt()
                )));
            }
        }
        Ok(())
    }
}

fn run(acts: &[Act]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for a in acts {
        h.exec(a)?;
    }
    h.audit()
}

// 64 cases in all, split over four tests that cargo runs in parallel (each case opens a
// store at least twice, which dominates the run time in debug builds).
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_mixed_a(acts in prop::collection::vec(act(MIXED), 1..=60)) {
        run(&acts)?;
    }

    #[test]
    fn model_mixed_b(acts in prop::collection::vec(act(MIXED), 1..=60)) {
        run(&acts)?;
    }

    #[test]
    fn model_associations(acts in prop::collection::vec(act(ASSOCIATIONS), 1..=60)) {
        run(&acts)?;
    }

    #[test]
    fn model_recovery(acts in prop::collection::vec(act(RECOVERY), 1..=60)) {
        run(&acts)?;
    }
}

/// A few fixed sequences through the same driver, so the model itself is checked on paths the
/// random search may reach rarely.
#[test]
fn model_fixed_sequences() {
    use Act::*;
    let seqs: Vec<Vec<Act>> = vec![
        // Two-phase commit, restart in doubt, commit after restart.
        vec![
            Start {
                toc: 0,
                x: 0,
                flags: TMNOFLAGS,
            },
            Put {
                toc: 0,
                key: 0,
                val: Some(1),
            },
            End {
                toc: 0,
                x: 0,
                flags: TMSUCCESS,
            },
            Prepare {
                toc: 1,
                x: 0,
                flags: TMNOFLAGS,
            },
            Reopen,
            Put {
                toc: 1,
                key: 0,
                val: Some(2),
            },
            Recover {
                toc: 2,
                flags: TMSTARTRSCAN,
                cap: 1,
            },
            Recover {
                toc: 2,
                flags: TMNOFLAGS,
                cap: 1,
            },
            Recover {
                toc: 2,
                flags: TMNOFLAGS,
                cap: 1,
            },
            Commit {
                toc: 2,
                x: 0,
                flags: TMNOFLAGS,
            },
            Get { toc: 1, key: 0 },
        ],
        // Loosely coupled conflict, rollback from elsewhere while joined and suspended.
        vec![
            Start {
                toc: 0,
                x: 0,
                flags: TMNOFLAGS,
            },
            Put {
                toc: 0,
                key: 1,
                val: Some(3),
            },
            Start {
                toc: 1,
                x: 1,
                flags: TMNOFLAGS,
            },
            Put {
                toc: 1,
                key: 1,
                val: Some(4),
            },
            Get { toc: 1, key: 1 },
            End {
                toc: 1,
                x: 1,
                flags: TMSUSPEND,
            },
            Start {
                toc: 2,
                x: 0,
                flags: TMJOIN,
            },
            Get { toc: 2, key: 1 },
            End {
                toc: 2,
                x: 0,
                flags: TMSUSPEND | TMMIGRATE,
            },
            Rollback {
                toc: 2,
                x: 0,
                flags: TMNOFLAGS,
            },
            Get { toc: 0, key: 1 },
            End {
                toc: 0,
                x: 0,
                flags: TMSUCCESS,
            },
            Start {
                toc: 2,
                x: 0,
                flags: TMRESUME,
            },
            Start {
                toc: 1,
                x: 1,
                flags: TMRESUME,
            },
            End {
                toc: 1,
                x: 1,
                flags: TMFAIL,
            },
            Commit {
                toc: 0,
                x: 1,
                flags: TMONEPHASE,
            },
        ],
        // Heuristic outcomes, forget, restart in between.
        vec![
            Start {
                toc: 0,
                x: 2,
                flags: TMNOFLAGS,
            },
            Put {
                toc: 0,
                key: 2,
                val: Some(5),
            },
            Put {
                toc: 0,
                key: 0,
                val: None,
            },
            End {
                toc: 0,
                x: 2,
                flags: TMSUCCESS,
            },
            Prepare {
                toc: 0,
                x: 2,
                flags: TMNOFLAGS,
            },
            Heuristic { x: 2, commit: true },
            Reopen,
            Commit {
                toc: 1,
                x: 2,
                flags: TMNOFLAGS,
            },
            Rollback {
                toc: 1,
                x: 2,
                flags: TMNOFLAGS,
            },
            Commit {
                toc: 1,
                x: 2,
                flags: TMONEPHASE,
            },
            Forget {
                toc: 1,
                x: 2,
                flags: TMNOFLAGS,
            },
            Forget {
                toc: 1,
                x: 2,
                flags: TMNOFLAGS,
            },
            Get { toc: 2, key: 2 },
        ],
    ];
    for s in seqs {
        if let Err(e) = run(&s) {
            panic!("{e}");
        }
    }
}
