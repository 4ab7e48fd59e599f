//! Smoke tests of the core; the state tables are covered in `tests/state_tables.rs`.

use super::flags::{EndMode, Scan, StartMode};
use super::layout::now_ns;
use super::*;
use crate::config::{Config, SyncMode};
use crate::error::Outcome;
use crate::log::Record;
use crate::status::*;
use crate::xa::*;
use crate::xid::Xid;

/// A private (0700) temporary directory, as a store needs.
fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap()
}

fn xid(n: u8) -> Xid {
    Xid::from_parts(1, &[b'g', n], b"b").unwrap()
}

fn open(dir: &std::path::Path) -> Rm {
    let mut cfg = Config::new(dir);
    cfg.sync = SyncMode::Msync;
    cfg.segment_size = 4 << 20;
    Rm::open(cfg).unwrap()
}

#[test]
fn two_phase_commit_and_recovery() {
    let dir = private_dir();
    let rm = open(dir.path());
    let (a, b) = (xid(1), xid(2));
    assert_eq!(rm.start(1, &a, StartMode::New), Ok(()));
    assert_eq!(rm.put(1, b"k1", Some(b"v1")), Ok(false));
    assert_eq!(rm.get(1, b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        rm.get(2, b"k1").unwrap(),
        None,
        "uncommitted write is private"
    );
    assert_eq!(rm.end(1, &a, EndMode::Success), Ok(()));
    assert_eq!(rm.prepare(2, &a), Ok(Vote::Prepared));
    assert_eq!(rm.start(1, &b, StartMode::New), Ok(()));
    rm.put(1, b"k2", Some(b"v2")).unwrap();
    rm.end(1, &b, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &b), Ok(Vote::Prepared));
    assert_eq!(rm.commit(3, &b, false), Ok(()));
    assert_eq!(rm.get(2, b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    drop(rm);

    let rm = open(dir.path());
    let scan = Scan {
        start: true,
        end: true,
    };
    assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![a]);
    assert_eq!(rm.get(1, b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(rm.get(1, b"k1").unwrap(), None);
    assert_eq!(
        rm.exclusive_holder(b"k1"),
        Some(a),
        "the prepared branch holds its lock"
    );
    assert_eq!(rm.commit(1, &a, false), Ok(()));
    assert_eq!(rm.get(1, b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![]);
    assert_eq!(rm.len(), 2);
}

#[test]
fn unprepared_work_is_rolled_back_at_open_and_xid_reusable() {
    let dir = private_dir();
    let rm = open(dir.path());
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k", Some(b"lost")).unwrap();
    rm.put(7, b"local", Some(b"kept")).unwrap();
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"k").unwrap(), None);
    assert_eq!(rm.get(1, b"local").unwrap().as_deref(), Some(&b"kept"[..]));
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k2", Some(b"new")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.commit(1, &a, true), Ok(()));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"k").unwrap(), None);
    assert_eq!(rm.get(1, b"k2").unwrap().as_deref(), Some(&b"new"[..]));
}

fn read(rm: &Rm, toc: Toc, key: &[u8]) -> Option<String> {
    rm.get(toc, key)
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn savepoints_undo_part_of_a_branch_and_survive_recovery() {
    let dir = private_dir();
    let rm = open(dir.path());
    rm.put(9, b"c", Some(b"committed")).unwrap();
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    assert_eq!(
        rm.savepoint(2).unwrap_err().mmxa_code(),
        MMXA_EINVAL,
        "no branch"
    );
    rm.put(1, b"a", Some(b"1")).unwrap();
    let sp1 = rm.savepoint(1).unwrap();
    rm.put(1, b"a", Some(b"2")).unwrap();
    rm.put(1, b"b", Some(b"new")).unwrap();
    rm.put(1, b"c", None).unwrap();
    let sp2 = rm.savepoint(1).unwrap();
    rm.put(1, b"a", Some(b"3")).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("3"));
    rm.rollback_to_savepoint(1, sp2).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("2"));
    assert_eq!(read(&rm, 1, b"c"), None);
    rm.rollback_to_savepoint(1, sp1).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("1"));
    assert_eq!(
        read(&rm, 1, b"b"),
        None,
        "first written after the savepoint"
    );
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("committed"));
    // sp2 was released by rolling back past it; sp1 stays and can be used again.
    assert_eq!(
        rm.rollback_to_savepoint(1, sp2).unwrap_err().mmxa_code(),
        MMXA_EINVAL
    );
    rm.put(1, b"d", Some(b"after")).unwrap();
    rm.rollback_to_savepoint(1, sp1).unwrap();
    assert_eq!(read(&rm, 1, b"d"), None);
    rm.put(1, b"e", Some(b"kept")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &a), Ok(Vote::Prepared));
    drop(rm);

    // Recovery replays the undo as ordinary writes: the prepared branch is what was left.
    let rm = open(dir.path());
    assert_eq!(rm.commit(1, &a, false), Ok(()));
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("1"));
    assert_eq!(read(&rm, 1, b"b"), None);
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("committed"));
    assert_eq!(read(&rm, 1, b"d"), None);
    assert_eq!(read(&rm, 1, b"e").as_deref(), Some("kept"));

    // A branch whose only writes were undone is read-only at prepare.
    let b = xid(2);
    rm.start(1, &b, StartMode::New).unwrap();
    let sp = rm.savepoint(1).unwrap();
    rm.put(1, b"a", Some(b"x")).unwrap();
    rm.rollback_to_savepoint(1, sp).unwrap();
    rm.end(1, &b, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &b), Ok(Vote::ReadOnly));
    // A joined thread makes the rollback refuse (its writes would race with the undo).
    let c = xid(3);
    rm.start(1, &c, StartMode::New).unwrap();
    let sp = rm.savepoint(1).unwrap();
    rm.start(2, &c, StartMode::Join).unwrap();
    assert_eq!(
        rm.rollback_to_savepoint(1, sp).unwrap_err().mmxa_code(),
        MMXA_EINVAL
    );
    rm.end(2, &c, EndMode::Success).unwrap();
    rm.rollback_to_savepoint(1, sp).unwrap();
    rm.end(1, &c, EndMode::Success).unwrap();
    assert_eq!(rm.rollback(1, &c), Ok(()));
}

#[test]
fn savepoint_undo_survives_reclaiming_the_segments_it_wrote() {
    let dir = private_dir();
    let rm = open(dir.path());
    rm.put(9, b"c", Some(b"committed")).unwrap();
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"a", Some(b"before")).unwrap();
    let sp = rm.savepoint(1).unwrap();
    let big = vec![7u8; 512 << 10];
    // Enough writes after the savepoint to fill several 4 MiB segments.
    for i in 0..24 {
        rm.put(1, format!("big{i}").as_bytes(), Some(&big)).unwrap();
        rm.put(1, b"c", Some(&big)).unwrap();
    }
    rm.rollback_to_savepoint(1, sp).unwrap();
    // Reclaim what can be: the undo's records must outlive the records they undo.
    let mut reclaimed = 0;
    while rm.compact_step().unwrap() {
        reclaimed += 1;
    }
    assert!(reclaimed >= 2, "only {reclaimed} segments reclaimed");
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &a), Ok(Vote::Prepared));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.commit(1, &a, false), Ok(()));
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("before"));
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("committed"));
    assert_eq!(read(&rm, 1, b"big0"), None);
    assert_eq!(rm.len(), 2);
}

#[test]
fn orphan_policy_rolls_back_old_prepared_branches_with_an_audit_line() {
    let dir = private_dir();
    let rm = open(dir.path());
    let (a, b) = (xid(1), xid(2));
    for x in [&a, &b] {
        rm.start(1, x, StartMode::New).unwrap();
        rm.put(1, x.gtrid(), Some(b"v")).unwrap();
        rm.end(1, x, EndMode::Success).unwrap();
    }
    rm.prepare(1, &a).unwrap();
    assert!(rm
        .expire_orphans(std::time::Duration::from_secs(3600))
        .is_empty());
    assert_eq!(rm.expire_orphans(std::time::Duration::ZERO), vec![a]);
    // Only prepared branches: b is idle.
    let st = rm.status();
    let state = |x: &Xid| {
        st.branches
            .iter()
            .find(|r| r.xid == *x)
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(state(&a), "heuristic-rollback");
    assert_eq!(state(&b), "idle");
    assert!(st.branches[0].reason.contains("orphan policy"));
    assert_eq!(rm.commit(1, &a, false).unwrap_err().xa_code(), XA_HEURRB);
    let audit = crate::audit::tail(dir.path(), 5).unwrap();
    assert_eq!(audit.len(), 1);
    assert!(audit[0].contains(&format!(
        "xid={a} decision=heuristic-rollback reason=orphan policy"
    )));
}

/// A panic that poisons the state lock fails the store for `failed()` as for every call, so
/// nothing reattaches to the broken instance.
#[test]
fn a_poisoned_state_lock_fails_the_store() {
    let dir = private_dir();
    let rm = open(dir.path());
    assert_eq!(rm.failed(), None);
    let panicked = std::thread::scope(|s| s.spawn(|| rm.panic_holding_state()).join());
    assert!(panicked.is_err());
    assert!(matches!(rm.put(1, b"k", Some(b"v")), Err(Error::Failed(_))));
    assert!(rm.failed().is_some(), "failed() agrees with the calls");
}

/// Appends local writes of `key` until the log's tail is at offset `at` of its segment (all
/// segments have `seg` bytes; `at` is 8-aligned and at least 48 bytes past the tail).
fn fill_to(rm: &Rm, key: &[u8], seg: u64, at: u64) {
    let pad = |n: u64| 24 + 16 + key.len() as u64 + n;
    loop {
        let off = rm.log.written() % seg;
        let gap = at - off;
        // One record that ends exactly at `at`, or a smaller one that leaves room for it.
        let n = if pad(0) <= gap && gap < pad(0) + 1024 {
            gap - pad(0)
        } else {
            512
        };
        rm.put(9, key, Some(&vec![b'f'; n as usize])).unwrap();
        if rm.log.written() % seg == at {
            return;
        }
    }
}

/// A prepared branch's copies fill a segment and its MOVE rolls into the next one. Once the
/// copies' segment is reclaimed (the branch moved on, or completed), the MOVE is left without
/// writes before it: replay used to refuse it ("which has no writes") and the store did not
/// open.
#[test]
fn a_move_whose_copies_were_reclaimed_still_opens() {
    for complete in [false, true] {
        const SEG: u64 = 4096;
        let dir = private_dir();
        let mut cfg = Config::new(dir.path());
        cfg.sync = SyncMode::Msync;
        cfg.segment_size = SEG;
        let rm = Rm::open(cfg.clone()).unwrap();
        let p = xid(1);
        rm.start(1, &p, StartMode::New).unwrap();
        rm.put(1, b"p", Some(&[b'p'; 100])).unwrap();
        rm.end(1, &p, EndMode::Success).unwrap();
        assert_eq!(rm.prepare(1, &p), Ok(Vote::Prepared));
        // Segment 1 holds the branch and dead filler; segment 2's tail leaves room for the
        // copy (144 bytes, plus 24 for SEGMENT_END) but not for the MOVE (64) after it.
        while rm.log.disk_usage().0 < 2 {
            rm.put(9, b"f", Some(&[b'f'; 512])).unwrap();
        }
        fill_to(&rm, b"f", SEG, SEG - 24 - 144 - 24);
        assert_eq!(rm.log.disk_usage().0, 2);
        assert!(rm.compact_step().unwrap());
        assert_eq!(rm.log.disk_usage().0, 2, "the MOVE rolled into segment 3");
        if complete {
            assert_eq!(rm.commit(1, &p, false), Ok(()));
        }
        // Reclaims segment 2: the branch moves again (or is gone), segment 3 starts with MOVE.
        assert!(rm.compact_step().unwrap());
        drop(rm);
        let rm = Rm::open(cfg).unwrap_or_else(|e| panic!("complete={complete}: {e}"));
        if complete {
            assert_eq!(rm.get(2, b"p").unwrap(), Some(vec![b'p'; 100]));
        } else {
            assert_eq!(rm.commit(1, &p, false), Ok(()));
            assert_eq!(rm.get(2, b"p").unwrap(), Some(vec![b'p'; 100]));
        }
    }
}

/// A branch still prepared at the end of replay whose writes are nowhere in the log (stated by
/// a PREPARE or a MOVE) is corruption, not an empty branch.
#[test]
fn a_prepared_branch_without_writes_is_corruption() {
    let stated = [
        Record::Prepare {
            tag: 3,
            xid: xid(1),
            at: None,
        },
        Record::Move {
            old: 3,
            new: 4,
            xid: xid(1),
            at: None,
        },
    ];
    for rec in stated {
        let dir = private_dir();
        let log = Log::open(dir.path(), 1 << 20, SyncMode::Msync, &mut |_, _| Ok(())).unwrap();
        let a = log.append_alone(&rec).unwrap();
        log.sync_to(a.end).unwrap();
        drop(log);
        let mut cfg = Config::new(dir.path());
        cfg.segment_size = 1 << 20;
        let err = Rm::open(cfg).err().expect("opened");
        assert!(err.contains("has no writes in the log"), "{rec:?}: {err}");
    }
}

/// A lock waiter gets the lock of a peer that died holding it long before its own lock timeout
/// (60 s): the waiter looks for dead peers while it waits, not only once the wait is over. The
/// peer is another `Rm` of the same store in this process (its own lock-file description, so
/// the kernel drops its slot lock when it is abandoned as if its process had died).
#[test]
fn a_lock_waiter_reaps_a_dead_holder_while_it_waits() {
    use std::sync::mpsc;
    use std::time::Duration;
    let dir = private_dir();
    let mut cfg = Config::new(dir.path());
    cfg.segment_size = 4 << 20;
    cfg.lock_timeout = Duration::from_secs(60);
    let holder = Rm::open(cfg.clone()).unwrap();
    let waiter = Arc::new(Rm::open(cfg).unwrap());
    holder.start(1, &xid(1), StartMode::New).unwrap();
    holder.put(1, b"k", Some(b"holder")).unwrap();
    waiter.start(2, &xid(2), StartMode::New).unwrap();
    let (tx, rx) = mpsc::channel();
    let w = waiter.clone();
    let thread = std::thread::spawn(move || tx.send(w.put(2, b"k", Some(b"waiter"))).unwrap());
    // The request is queued before the holder dies (liveness bound only).
    let queued = std::time::Instant::now();
    while waiter.shared(|t| Ok(t.get_u64(layout::R_WAITS)?)).unwrap() == 0 {
        assert!(
            queued.elapsed() < Duration::from_secs(30),
            "the put never waited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    holder.simulate_crash();
    // A liveness bound far below the lock timeout: the dead holder is reaped within ~200 ms.
    let got = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the waiter still waits for the dead holder's lock");
    assert_eq!(got, Ok(false), "the waiter gets the lock");
    thread.join().unwrap();
    waiter.end(2, &xid(2), EndMode::Success).unwrap();
    waiter.commit(2, &xid(2), true).unwrap();
    assert_eq!(read(&waiter, 3, b"k").as_deref(), Some("waiter"));
}

/// With `shared_group=1` every file the store creates — the lock file, the region, the log's
/// segments (the first at open, later ones at a roll) and the audit trail — has mode 0660
/// exactly, whatever the umask (0600 without; `tests/multiprocess.rs` checks both under umask
/// 000 in a child process).
#[test]
fn a_shared_group_store_creates_every_file_0660() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o770))
        .tempdir()
        .unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.segment_size = 64 << 10;
    cfg.shared_group = true;
    let rm = Rm::open(cfg).unwrap();
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k", Some(b"v")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &a), Ok(Vote::Prepared));
    rm.heuristic(&a, Outcome::Commit, "test").unwrap();
    // A roll creates the next segment.
    let value = vec![7u8; 4000];
    for i in 0..40u32 {
        rm.put(2, &i.to_le_bytes(), Some(&value)).unwrap();
    }
    let mut segments = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
        segments += name.ends_with(".seg") as usize;
        assert_eq!(mode, 0o660, "{name} has mode {mode:03o}");
    }
    assert!(segments >= 2, "{segments} segment(s): no roll");
    assert!(dir.path().join("mmxa.audit").exists());
}

/// A completion whose record is durable but whose finishing section cannot be entered (a peer
/// stopped inside a section holds the mutex) is acknowledged, and finished by the process's
/// next call: others see the commit as soon as it is.
#[test]
fn a_durable_commit_is_acknowledged_when_its_finish_must_wait() {
    let dir = private_dir();
    let mut rm = open(dir.path());
    rm.mutex_wait = std::time::Duration::from_millis(100);
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k", Some(b"v")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &a), Ok(Vote::Prepared));

    // A "stopped peer": another thread takes the mutex just before the finish (when the hook
    // asks it to) and keeps it until told to let go.
    let (go_tx, holder) = stopped_peer_at_finish(&rm);
    assert_eq!(
        rm.commit(1, &a, false),
        Ok(()),
        "the COMMIT record is durable"
    );
    assert!(rm.has_deferred.load(Ordering::Acquire), "the finish waits");
    go_tx.send(()).unwrap();
    holder.join().unwrap();

    // The next section finishes it first: the value is committed and the branch gone.
    assert_eq!(rm.get(2, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(!rm.has_deferred.load(Ordering::Acquire));
    assert_eq!(rm.exclusive_holder(b"k"), None, "its lock is released");
    let scan = Scan {
        start: true,
        end: true,
    };
    assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![]);
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// The branch `x` in a status report.
fn branch_report(rm: &Rm, x: &Xid) -> BranchReport {
    rm.status()
        .branches
        .into_iter()
        .find(|b| b.xid == *x)
        .unwrap_or_else(|| panic!("{x} is not in the status"))
}

/// A prepared branch is dated by its prepare and a heuristically completed one by its
/// decision, and the log keeps both times: after a reopen, and after reclaiming has re-logged
/// the branches (MOVE, HEURISTIC) and deleted the segment their first records were in, the
/// store shows the same absolute times.
#[test]
fn prepare_and_decision_times_survive_reopen_and_reclaiming() {
    const SEG: u64 = 4096;
    let dir = private_dir();
    let mut cfg = Config::new(dir.path());
    cfg.sync = SyncMode::Msync;
    cfg.segment_size = SEG;
    let rm = Rm::open(cfg.clone()).unwrap();
    let (p, h) = (xid(1), xid(2));
    let before = now_ns();
    for (x, k) in [(&p, b"p"), (&h, b"h")] {
        rm.start(1, x, StartMode::New).unwrap();
        rm.put(1, k, Some(b"v")).unwrap();
        rm.end(1, x, EndMode::Success).unwrap();
        assert_eq!(rm.prepare(1, x), Ok(Vote::Prepared));
    }
    rm.heuristic(&h, Outcome::Rollback, "ticket 1").unwrap();
    let after = now_ns();
    let (pr, hr) = (branch_report(&rm, &p), branch_report(&rm, &h));
    let prepared = pr.since_ns.expect("the prepare's time");
    let decided = hr.since_ns.expect("the decision's time");
    assert!(before <= prepared && prepared <= decided && decided <= after);
    assert_eq!((pr.age_from, hr.age_from), ("prepare", "decision"));
    let times = |rm: &Rm| {
        (
            branch_report(rm, &p).since_ns,
            branch_report(rm, &h).since_ns,
        )
    };
    drop(rm);
    let rm = Rm::open(cfg.clone()).unwrap();
    assert_eq!(
        times(&rm),
        (Some(prepared), Some(decided)),
        "after a reopen"
    );
    // Move the log on, then reclaim every segment but the tail: segment 1, with the PREPARE
    // and HEURISTIC records, is gone, the branches restated.
    while rm.log.disk_usage().0 < 3 {
        rm.put(9, b"f", Some(&[b'f'; 512])).unwrap();
    }
    let mut steps = 0;
    while rm.compact_step().unwrap() {
        steps += 1;
        assert!(steps < 100, "reclaiming does not end");
    }
    assert!(!seg_path_exists(dir.path(), 1), "segment 1 was reclaimed");
    assert_eq!(
        times(&rm),
        (Some(prepared), Some(decided)),
        "after reclaiming"
    );
    drop(rm);
    let rm = Rm::open(cfg).unwrap();
    assert_eq!(
        times(&rm),
        (Some(prepared), Some(decided)),
        "after reclaiming and a reopen"
    );
    assert_eq!(rm.commit(1, &p, false), Ok(()));
}

fn seg_path_exists(dir: &std::path::Path, id: u64) -> bool {
    dir.join(format!("log-{id:016x}.seg")).exists()
}

/// A log whose PREPARE states a time two hours ago (written here through the log itself, as a
/// process that prepared then and stopped would have left it).
fn store_prepared_long_ago(dir: &std::path::Path, x: &Xid) -> u64 {
    let at = now_ns() - 2 * 3600 * 1_000_000_000;
    let log = Log::open(dir, 4 << 20, SyncMode::Msync, &mut |_, _| Ok(())).unwrap();
    log.append_alone(&Record::Put {
        tag: 3,
        key: b"k",
        value: b"v",
    })
    .unwrap();
    let a = log
        .append_alone(&Record::Prepare {
            tag: 3,
            xid: *x,
            at: Some(at),
        })
        .unwrap();
    log.sync_to(a.end).unwrap();
    at
}

/// After a restart, a branch prepared two hours ago is two hours old (not as old as the
/// restart), and the orphan policy decides from that time: with a one-hour limit it rolls the
/// branch back at once; with injected clocks, not a second before the limit and at once after.
#[test]
fn the_orphan_policy_counts_from_the_prepare_across_a_restart() {
    let dir = private_dir();
    let x = xid(1);
    let at = store_prepared_long_ago(dir.path(), &x);
    let rm = open(dir.path());
    let b = branch_report(&rm, &x);
    assert_eq!((b.since_ns, b.age_from), (Some(at), "prepare"));
    assert!(b.age_ms >= 2 * 3600 * 1000, "age {} ms", b.age_ms);
    let hour = std::time::Duration::from_secs(3600);
    let s = 1_000_000_000;
    // Injected clocks: the decision is the prepare's time plus the age.
    assert_eq!(rm.expire_orphans_at(hour, at + 3600 * s - s), vec![]);
    assert_eq!(rm.expire_orphans_at(3 * hour, now_ns()), vec![]);
    // The real clock: two hours after the prepare, over a one-hour limit.
    assert_eq!(rm.expire_orphans(hour), vec![x]);
    let b = branch_report(&rm, &x);
    assert_eq!(
        (b.state.as_str(), b.age_from),
        ("heuristic-rollback", "decision")
    );
    assert_eq!(
        rm.commit(1, &x, false).map_err(|e| e.xa_code()),
        Err(XA_HEURRB)
    );
}

/// A prepare whose process died after its PREPARE was durable but before it finished is
/// finished by a peer, dated as its record is: the peer shows the same time as a rebuild from
/// the log does, not the time it found the dead process.
#[test]
fn a_prepare_finished_by_a_peer_is_dated_by_its_record() {
    let dir = private_dir();
    let keeper = open(dir.path());
    let mut rm = open(dir.path());
    rm.mutex_wait = std::time::Duration::from_millis(100);
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k", Some(b"v")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    // A "stopped peer" holds the mutex when the prepare would finish: it is deferred.
    let (go_tx, holder) = stopped_peer_at_finish(&rm);
    assert_eq!(rm.prepare(1, &a), Ok(Vote::Prepared));
    assert!(rm.has_deferred.load(Ordering::Acquire), "the finish waits");
    go_tx.send(()).unwrap();
    holder.join().unwrap();
    // The process dies before it finishes the prepare; the next peer to open finishes it.
    rm.simulate_crash();
    let peer = open(dir.path());
    let b = branch_report(&peer, &a);
    assert_eq!((b.state.as_str(), b.age_from), ("prepared", "prepare"));
    let finished = b.since_ns.expect("a time");
    drop(peer);
    drop(keeper);
    let rm = open(dir.path());
    assert_eq!(
        branch_report(&rm, &a).since_ns,
        Some(finished),
        "the time the PREPARE record states"
    );
}

#[test]
fn status_lists_local_transactions_until_they_end_or_are_promoted() {
    let dir = private_dir();
    let rm = open(dir.path());
    rm.txn_begin(1).unwrap();
    rm.put(1, b"k1", Some(b"v")).unwrap();
    rm.txn_begin(2).unwrap();
    let st = rm.status();
    assert!(st.branches.is_empty(), "{st:?}");
    assert_eq!(st.locals.len(), 2, "{st:?}");
    let l = &st.locals[0];
    assert_eq!(l.pid, Some(std::process::id()));
    assert_eq!((l.state.as_str(), l.keys), ("local", 1));
    assert!(l.since_ns > 0 && st.locals[1].keys == 0, "{st:?}");
    assert!(st.locals[0].tag < st.locals[1].tag, "{st:?}");

    rm.txn_rollback(2).unwrap();
    rm.txn_promote(1, &xid(1)).unwrap();
    let st = rm.status();
    assert!(st.locals.is_empty(), "promoted: a branch now: {st:?}");
    assert_eq!(st.branches.len(), 1, "{st:?}");
    assert_eq!(
        (st.branches[0].xid, st.branches[0].state.as_str()),
        (xid(1), "active")
    );
    rm.end(1, &xid(1), EndMode::Success).unwrap();
    rm.rollback(1, &xid(1)).unwrap();
    assert!(rm.status().branches.is_empty() && rm.status().locals.is_empty());
}

/// Branches too big for one section end every other way too: heuristic commit and rollback of
/// prepared branches, a rollback by another thread while the branch is active (its record
/// stays, undone, until the thread's `xa_end`), a nested transaction's rollback, and a thread
/// that goes away with its branch active. Afterwards every key is free: another branch writes
/// them all without waiting (its lock timeout is 0).
#[test]
fn branches_too_big_for_one_section_end_every_way() {
    const N: usize = 6000;
    let dir = private_dir();
    let mut cfg = Config::new(dir.path());
    cfg.segment_size = 4 << 20;
    cfg.lock_timeout = std::time::Duration::ZERO;
    let rm = Rm::open(cfg).unwrap();
    let key = |p: &str, i: usize| format!("{p}{i:05}").into_bytes();
    let write_all = |toc: Toc, p: &str| {
        for i in 0..N {
            rm.put(toc, &key(p, i), Some(b"v")).unwrap();
        }
    };
    let count = |p: &str| {
        (0..N)
            .filter(|&i| rm.get(99, &key(p, i)).unwrap().is_some())
            .count()
    };
    let scan = Scan {
        start: true,
        end: true,
    };
    // Heuristic outcomes.
    for (n, outcome, p) in [(1, Outcome::Commit, "hc"), (2, Outcome::Rollback, "hr")] {
        rm.start(1, &xid(n), StartMode::New).unwrap();
        write_all(1, p);
        rm.end(1, &xid(n), EndMode::Success).unwrap();
        assert_eq!(rm.prepare(1, &xid(n)), Ok(Vote::Prepared));
        rm.heuristic(&xid(n), outcome, "test").unwrap();
        assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![xid(n)]);
        assert_eq!(branch_report(&rm, &xid(n)).state, outcome.name());
        rm.forget(1, &xid(n)).unwrap();
    }
    assert_eq!((count("hc"), count("hr")), (N, 0));
    // Rolled back by another thread while active.
    rm.start(1, &xid(3), StartMode::New).unwrap();
    write_all(1, "ub");
    assert_eq!(rm.rollback(2, &xid(3)), Ok(()));
    assert!(matches!(
        rm.put(1, b"ub-more", Some(b"v")),
        Err(Error::RolledBack(..))
    ));
    assert!(matches!(
        rm.end(1, &xid(3), EndMode::Success),
        Err(Error::RolledBack(..))
    ));
    assert!(matches!(rm.rollback(2, &xid(3)), Err(Error::UnknownXid(_))));
    assert_eq!(count("ub"), 0);
    // A nested transaction rolled back, its parent committed.
    rm.txn_begin(1).unwrap();
    rm.put(1, b"parent", Some(b"v")).unwrap();
    assert_eq!(rm.txn_begin_nested(1), Ok(1));
    write_all(1, "nt");
    rm.txn_rollback_nested(1).unwrap();
    rm.txn_commit(1).unwrap();
    assert_eq!(count("nt"), 0);
    assert!(rm.get(99, b"parent").unwrap().is_some());
    // A thread gone with its branch active.
    rm.start(1, &xid(4), StartMode::New).unwrap();
    write_all(1, "gt");
    rm.abandon_toc(1);
    assert!(matches!(rm.rollback(2, &xid(4)), Err(Error::UnknownXid(_))));
    assert_eq!(count("gt"), 0);
    // Every key free, no branch left.
    rm.start(5, &xid(5), StartMode::New).unwrap();
    for p in ["hc", "hr", "ub", "nt", "gt"] {
        write_all(5, p);
    }
    rm.end(5, &xid(5), EndMode::Success).unwrap();
    assert_eq!(rm.commit(5, &xid(5), true), Ok(()));
    let st = rm.status();
    assert!(st.branches.is_empty() && st.locals.is_empty(), "{st:?}");
    assert_eq!(rm.len(), 5 * N + 1);
}

/// A "stopped peer": a thread that takes the region's mutex just before `rm`'s next finishing
/// section (when the hook asks it to) and keeps it until the returned sender says go.
fn stopped_peer_at_finish(rm: &Rm) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let region = rm.region.clone();
    let (take_tx, take_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        take_rx.recv().unwrap();
        let t = region.lock(std::time::Duration::from_secs(10)).unwrap();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(t);
    });
    *rm.before_finish.lock().unwrap() = Some(Box::new(move || {
        take_tx.send(()).unwrap();
        held_rx.recv().unwrap();
    }));
    (go_tx, holder)
}

fn open_small(dir: &std::path::Path, segment_size: u64) -> Rm {
    let mut cfg = Config::new(dir);
    cfg.sync = SyncMode::None;
    cfg.segment_size = segment_size;
    Rm::open(cfg).unwrap()
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

/// A rollback to a savepoint restores more bytes than a segment holds (ten values of ~1 MiB,
/// 4 MiB segments): its records are logged over several sections, each fitting a fresh
/// segment (before, the one section rolled to a new segment for ever).
#[test]
fn a_savepoint_rollback_bigger_than_a_segment_is_logged_in_pieces() {
    let dir = private_dir();
    let rm = open_small(dir.path(), 4 << 20);
    let value = |i: u8, v: u8| vec![b'a' + i + v; MMXA_MAX_VALUE - 64 * i as usize];
    for i in 0..10u8 {
        rm.put(1, &[b'k', i], Some(&value(i, 0))).unwrap();
    }
    rm.txn_begin(1).unwrap();
    let sp = rm.savepoint(1).unwrap();
    for i in 0..10u8 {
        rm.put(1, &[b'k', i], Some(&value(i, 10))).unwrap();
    }
    rm.rollback_to_savepoint(1, sp).unwrap();
    for i in 0..10u8 {
        assert!(
            rm.get(1, &[b'k', i]).unwrap() == Some(value(i, 0)),
            "key {i}"
        );
    }
    rm.txn_commit(1).unwrap();
    assert!(
        segment_files(dir.path()) < 12,
        "{} segments",
        segment_files(dir.path())
    );
    drop(rm);
    let rm = open_small(dir.path(), 4 << 20);
    for i in 0..10u8 {
        assert!(
            rm.get(1, &[b'k', i]).unwrap() == Some(value(i, 0)),
            "key {i} after reopen"
        );
    }
}

/// A prepared branch whose writes are too many (or too big) to move in one section pins its
/// segment until it ends: reclaiming skips it instead of failing or rolling new segments for
/// ever (20,000 writes on 1 MiB segments made thousands of segment files before); once the
/// branch commits, reclaiming goes on.
#[test]
fn a_prepared_branch_too_big_to_move_pins_its_segment_until_it_ends() {
    let dir = private_dir();
    let rm = open_small(dir.path(), 1 << 20);
    let x = xid(7);
    rm.start(1, &x, StartMode::New).unwrap();
    for i in 0..20_000u32 {
        rm.put(1, format!("p{i:06}").as_bytes(), Some(&[b'v'; 20]))
            .unwrap();
    }
    rm.end(1, &x, EndMode::Success).unwrap();
    assert!(rm.prepare(1, &x).is_ok());
    for i in 0..30_000u32 {
        rm.put(
            2,
            format!("o{:04}", i % 1000).as_bytes(),
            Some(&[b'w'; 200]),
        )
        .unwrap();
    }
    let pinned = segment_files(dir.path());
    assert!(
        pinned < 40,
        "{pinned} segments while the branch is prepared"
    );
    assert!(
        matches!(rm.compact_step(), Ok(false)),
        "the branch pins the oldest segment"
    );
    assert_eq!(rm.commit(1, &x, false), Ok(()));
    for i in 0..30_000u32 {
        rm.put(
            2,
            format!("o{:04}", i % 1000).as_bytes(),
            Some(&[b'w'; 200]),
        )
        .unwrap();
    }
    let after = segment_files(dir.path());
    assert!(
        after < pinned,
        "reclaiming went on: {after} segments, {pinned} before"
    );
    assert_eq!(
        rm.get(1, b"p019999").unwrap().as_deref(),
        Some(&[b'v'; 20][..])
    );
}
