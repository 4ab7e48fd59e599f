//! XA threads of control through the real C entry points, with real OS threads.
//!
//! The thread of control is the OS thread (XA reference §7.1): every thread calls `xa_open`
//! itself, R and T states are per thread, branches and rmids are process-wide. Each test uses
//! its own store and its own rmids (tests run in parallel threads of one process, and rmids
//! are process-wide), and drives its threads step by step through [`Worker`]s, so ordering
//! comes from the test, not from sleeps. No test asserts a duration.

mod ffi_common;

use ffi_common::{check, xid, Rm, Worker, STEP_TIMEOUT};
use mmxa::ffi::abi::Xid;
use mmxa::status::*;
use mmxa::xa::*;
use std::sync::mpsc;
use std::time::Duration;

/// The format id of the XIDs these tests hand out.
const FMT: i64 = 0x4d4d_5854;

fn x(gtrid: &str) -> Xid {
    xid(FMT, gtrid.as_bytes(), b"b1")
}

fn is_rb(code: i32) -> bool {
    (XA_RBBASE..=XA_RBEND).contains(&code)
}

/// Opens `rm` in each worker's thread.
fn open_all(rm: &Rm, workers: &[&Worker]) {
    for w in workers {
        let rm = rm.clone();
        w.run(move || rm.open_ok());
    }
}

/// Closes `rm` in each worker's thread.
fn close_all(rm: &Rm, workers: &[&Worker]) {
    for w in workers {
        let rm = rm.clone();
        w.run(move || rm.close_ok());
    }
}

/// Three threads on one XID (`TMJOIN`) are one branch: each sees the others' uncommitted
/// writes, they share locks (a lock timeout of 0 would fail any conflicting write at once),
/// prepare is refused while one is still associated, and a fourth thread that did no work
/// prepares and commits the branch.
#[test]
fn join_from_three_threads_is_one_branch() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(101, dir.path(), "lock_timeout_ms=0");
    let xj = x("join");
    let workers: Vec<Worker> = (0..3).map(|i| Worker::new(&format!("join-{i}"))).collect();
    let tm = Worker::new("join-tm");
    let all: Vec<&Worker> = workers.iter().chain([&tm]).collect();
    open_all(&rm, &all);

    // Thread 0 starts the branch, the others join it.
    for (i, w) in workers.iter().enumerate() {
        let rm = rm.clone();
        let flags = if i == 0 { TMNOFLAGS } else { TMJOIN };
        w.run(move || check("xa_start", rm.start(&xj, flags), XA_OK));
    }
    // Each writes its own key (concurrently) ...
    let pending: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let rm = rm.clone();
            w.submit(move || rm.put_ok(&format!("join-{i}"), &format!("v{i}")))
        })
        .collect();
    pending.into_iter().for_each(|p| p.wait());
    // ... and, after that barrier, reads the others' uncommitted writes.
    let pending: Vec<_> = workers
        .iter()
        .map(|w| {
            let rm = rm.clone();
            w.submit(move || {
                for j in 0..3 {
                    assert_eq!(
                        rm.get_str(&format!("join-{j}")),
                        Some(format!("v{j}")),
                        "a joined thread sees the branch's writes"
                    );
                }
            })
        })
        .collect();
    pending.into_iter().for_each(|p| p.wait());
    // The same key from all three at once, many times: no thread blocks on another.
    let pending: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let rm = rm.clone();
            w.submit(move || {
                for n in 0..200 {
                    rm.put_ok("join-shared", &format!("s{i}-{n}"));
                }
            })
        })
        .collect();
    pending.into_iter().for_each(|p| p.wait());
    let seen: Vec<Option<String>> = workers
        .iter()
        .map(|w| {
            let rm = rm.clone();
            w.run(move || rm.get_str("join-shared"))
        })
        .collect();
    assert!(seen[0].as_deref().is_some_and(|v| v.ends_with("-199")));
    assert!(
        seen.iter().all(|v| *v == seen[0]),
        "all threads see one value: {seen:?}"
    );
    let shared = seen[0].clone().unwrap();

    // Nothing is committed yet: the idle fourth thread sees none of it.
    {
        let rm = rm.clone();
        tm.run(move || {
            assert_eq!(rm.get_str("join-0"), None);
            assert_eq!(rm.get_str("join-shared"), None);
        });
    }
    // Threads 0 and 1 end; thread 2 is still associated, so the branch cannot be prepared.
    for w in &workers[..2] {
        let rm = rm.clone();
        w.run(move || check("xa_end", rm.end(&xj, TMSUCCESS), XA_OK));
    }
    {
        let rm = rm.clone();
        tm.run(move || check("xa_prepare while joined", rm.prepare(&xj), XAER_PROTO));
    }
    {
        let rm = rm.clone();
        workers[2].run(move || check("xa_end", rm.end(&xj, TMSUCCESS), XA_OK));
    }
    {
        let rm = rm.clone();
        tm.run(move || {
            check("xa_prepare", rm.prepare(&xj), XA_OK);
            assert_eq!(rm.recover_keys(), vec![ffi_common::xid_key(&xj)]);
            check("xa_commit", rm.commit(&xj, TMNOFLAGS), XA_OK);
            assert!(rm.recover_keys().is_empty());
        });
    }
    // Committed: visible to every thread.
    for w in &all {
        let rm = rm.clone();
        let shared = shared.clone();
        w.run(move || {
            for j in 0..3 {
                assert_eq!(rm.get_str(&format!("join-{j}")), Some(format!("v{j}")));
            }
            assert_eq!(rm.get_str("join-shared"), Some(shared));
        });
    }
    close_all(&rm, &all);
}

/// `xa_end(TMSUSPEND|TMMIGRATE)` in thread A lets thread B resume the branch and go on working
/// in it; A prepares once B has ended, and a third thread commits.
#[test]
fn suspend_migrate_resumes_in_another_thread() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(102, dir.path(), "lock_timeout_ms=0");
    let xm = x("migrate");
    let (a, b, c) = (Worker::new("A"), Worker::new("B"), Worker::new("C"));
    open_all(&rm, &[&a, &b, &c]);
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start", rm.start(&xm, TMNOFLAGS), XA_OK);
            rm.put_ok("mig-a", "a");
            check(
                "xa_end(TMSUSPEND|TMMIGRATE)",
                rm.end(&xm, TMSUSPEND | TMMIGRATE),
                XA_OK,
            );
            // Suspended, not ended: the branch cannot be prepared yet.
            check("xa_prepare while suspended", rm.prepare(&xm), XAER_PROTO);
            // A is no longer associated: its reads see committed data only, and it may close
            // (B keeps the store open, so the branch lives on).
            assert_eq!(rm.get_str("mig-a"), None);
            rm.close_ok();
        });
    }
    {
        let rm = rm.clone();
        b.run(move || {
            check(
                "xa_start(TMRESUME) elsewhere",
                rm.start(&xm, TMRESUME),
                XA_OK,
            );
            assert_eq!(rm.get_str("mig-a").as_deref(), Some("a"));
            rm.put_ok("mig-b", "b0");
        });
    }
    {
        // The migrated association was resumed once; there is nothing left to resume.
        let rm = rm.clone();
        c.run(move || {
            check("a second TMRESUME", rm.start(&xm, TMRESUME), XAER_PROTO);
            check("1PC while active", rm.commit(&xm, TMONEPHASE), XAER_PROTO);
        });
    }
    {
        let rm = rm.clone();
        b.run(move || {
            assert_eq!(rm.get_str("mig-b").as_deref(), Some("b0"));
            rm.put_ok("mig-b", "b");
            // Still the same branch and its locks: rewriting A's key does not conflict.
            rm.put_ok("mig-a", "a2");
            check("xa_end", rm.end(&xm, TMSUCCESS), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        a.run(move || {
            rm.open_ok();
            check("xa_prepare", rm.prepare(&xm), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        c.run(move || {
            check("xa_commit", rm.commit(&xm, TMNOFLAGS), XA_OK);
            assert_eq!(rm.get_str("mig-a").as_deref(), Some("a2"));
            assert_eq!(rm.get_str("mig-b").as_deref(), Some("b"));
        });
    }
    close_all(&rm, &[&a, &b, &c]);
}

/// A plain `TMSUSPEND` may be resumed only in the thread that suspended: `TMRESUME` elsewhere
/// is `XAER_PROTO` and changes nothing; A then resumes and finishes normally.
#[test]
fn plain_suspend_resumes_only_where_suspended() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(103, dir.path(), "lock_timeout_ms=0");
    let xs = x("suspend");
    let (a, b) = (Worker::new("A"), Worker::new("B"));
    open_all(&rm, &[&a, &b]);
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start", rm.start(&xs, TMNOFLAGS), XA_OK);
            rm.put_ok("sus-a", "a");
            check("xa_end(TMSUSPEND)", rm.end(&xs, TMSUSPEND), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        b.run(move || {
            check(
                "xa_start(TMRESUME) elsewhere",
                rm.start(&xs, TMRESUME),
                XAER_PROTO,
            );
            // B did not get associated: its reads are of committed data, its puts are local.
            assert_eq!(rm.get_str("sus-a"), None);
            check("xa_end in B", rm.end(&xs, TMSUCCESS), XAER_PROTO);
        });
    }
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start(TMRESUME) in A", rm.start(&xs, TMRESUME), XA_OK);
            assert_eq!(rm.get_str("sus-a").as_deref(), Some("a"));
            rm.put_ok("sus-a2", "a2");
            check("xa_end", rm.end(&xs, TMSUCCESS), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        b.run(move || {
            check("xa_commit(TMONEPHASE)", rm.commit(&xs, TMONEPHASE), XA_OK);
            assert_eq!(rm.get_str("sus-a").as_deref(), Some("a"));
            assert_eq!(rm.get_str("sus-a2").as_deref(), Some("a2"));
        });
    }
    close_all(&rm, &[&a, &b]);
}

/// BDB behaviour (XA reference §4.7): another thread may roll back an active branch. Its locks
/// go at once, the associated thread's next data call fails with `MMXA_EROLLBACK`, its `xa_end`
/// answers `XA_RBOTHER`, and then the XID is unknown and can be started afresh.
#[test]
fn rollback_of_active_branch_from_another_thread() {
    let dir = ffi_common::private_dir();
    // lock_timeout_ms=0: a write to a still-locked key would fail at once, not wait.
    let rm = Rm::new(104, dir.path(), "lock_timeout_ms=0");
    let xa = x("rb-active");
    let xc = x("rb-third");
    let (a, b, c, d) = (
        Worker::new("A"),
        Worker::new("B"),
        Worker::new("C"),
        Worker::new("D"),
    );
    open_all(&rm, &[&a, &b, &c, &d]);
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start", rm.start(&xa, TMNOFLAGS), XA_OK);
            rm.put_ok("rb-k", "a");
            check(
                "xa_rollback from the associated thread",
                rm.rollback(&xa),
                XAER_PROTO,
            );
            rm.put_ok("rb-k", "a1");
        });
    }
    {
        let rm = rm.clone();
        b.run(move || check("xa_rollback from another thread", rm.rollback(&xa), XA_OK));
    }
    {
        // A third branch gets the key at once (with a zero lock timeout).
        let rm = rm.clone();
        c.run(move || {
            check("xa_start", rm.start(&xc, TMNOFLAGS), XA_OK);
            rm.put_ok("rb-k", "c");
        });
    }
    {
        // Joining the rolled-back branch: rollback-only.
        let rm = rm.clone();
        d.run(move || {
            let rc = rm.start(&xa, TMJOIN);
            assert!(is_rb(rc), "xa_start(TMJOIN) of a rolled-back branch: {rc}");
            // D did not become associated.
            check("xa_end in D", rm.end(&xa, TMSUCCESS), XAER_PROTO);
        });
    }
    {
        let rm = rm.clone();
        a.run(move || {
            check(
                "mmxa_put after the rollback",
                rm.put(b"rb-k2", b"a"),
                MMXA_EROLLBACK,
            );
            check("xa_end", rm.end(&xa, TMSUCCESS), XA_RBOTHER);
            // Forgotten now.
            check("xa_prepare", rm.prepare(&xa), XAER_NOTA);
            check("xa_commit", rm.commit(&xa, TMNOFLAGS), XAER_NOTA);
            check("xa_rollback", rm.rollback(&xa), XAER_NOTA);
        });
    }
    {
        let rm = rm.clone();
        b.run(move || check("xa_end from B", rm.end(&xa, TMSUCCESS), XAER_NOTA));
    }
    {
        let rm = rm.clone();
        c.run(move || {
            check("xa_end", rm.end(&xc, TMSUCCESS), XA_OK);
            check("xa_commit(TMONEPHASE)", rm.commit(&xc, TMONEPHASE), XA_OK);
            assert_eq!(rm.get_str("rb-k").as_deref(), Some("c"));
            assert_eq!(rm.get_str("rb-k2"), None);
        });
    }
    {
        // The XID starts a fresh branch, which works normally.
        let rm = rm.clone();
        a.run(move || {
            check(
                "xa_start of the reused XID",
                rm.start(&xa, TMNOFLAGS),
                XA_OK,
            );
            assert_eq!(rm.get_str("rb-k").as_deref(), Some("c"));
            rm.put_ok("rb-k3", "again");
            check("xa_end", rm.end(&xa, TMSUCCESS), XA_OK);
            check("xa_prepare", rm.prepare(&xa), XA_OK);
            check("xa_commit", rm.commit(&xa, TMNOFLAGS), XA_OK);
            assert_eq!(rm.get_str("rb-k3").as_deref(), Some("again"));
            assert_eq!(rm.get_str("rb-k").as_deref(), Some("c"));
        });
    }
    close_all(&rm, &[&a, &b, &c, &d]);
}

/// Completion and recovery need no association (XA reference §7.1): a thread that did no work
/// prepares, commits, rolls back, forgets and recovers branches another thread worked on.
/// Recovery scans are per thread and page through a snapshot.
#[test]
fn completion_from_a_thread_other_than_the_worker() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(105, dir.path(), "lock_timeout_ms=0");
    let xs: Vec<Xid> = (0..6).map(|i| x(&format!("done-{i}"))).collect();
    let (w, c) = (Worker::new("worker"), Worker::new("completer"));
    open_all(&rm, &[&w, &c]);
    {
        let rm = rm.clone();
        let xs = xs.clone();
        w.run(move || {
            for (i, xi) in xs.iter().enumerate() {
                check("xa_start", rm.start(xi, TMNOFLAGS), XA_OK);
                if i < 5 {
                    rm.put_ok(&format!("done-{i}"), &format!("v{i}"));
                }
                check("xa_end", rm.end(xi, TMSUCCESS), XA_OK);
            }
        });
    }
    {
        let rm = rm.clone();
        let xs = xs.clone();
        c.run(move || {
            for (i, xi) in xs[..3].iter().enumerate() {
                check(&format!("xa_prepare {i}"), rm.prepare(xi), XA_OK);
            }
            check("xa_prepare 1 again", rm.prepare(&xs[1]), XAER_PROTO);
            check(
                "xa_prepare of a read-only branch",
                rm.prepare(&xs[5]),
                XA_RDONLY,
            );
            let want: Vec<_> = xs[..3].iter().map(ffi_common::xid_key).collect();
            assert_eq!(rm.recover_keys(), want);
            // Start a scan here, two XIDs at a time (the list is in XID order).
            let mut two = [xid(0, b"-", b"-"); 2];
            check(
                "xa_recover start",
                rm.recover_into(&mut two, TMSTARTRSCAN),
                2,
            );
            let got: Vec<_> = two.iter().map(ffi_common::xid_key).collect();
            assert_eq!(got, want[..2]);
        });
    }
    {
        // The worker thread does not share that scan; it commits the XID not yet listed.
        let rm = rm.clone();
        let x2 = xs[2];
        w.run(move || {
            let mut one = [xid(0, b"-", b"-")];
            check(
                "xa_recover without a scan in this thread",
                rm.recover_into(&mut one, TMNOFLAGS),
                XAER_INVAL,
            );
            check(
                "xa_commit 2 from the worker",
                rm.commit(&x2, TMNOFLAGS),
                XA_OK,
            );
        });
    }
    {
        let rm = rm.clone();
        let xs = xs.clone();
        c.run(move || {
            // The scan pages through its snapshot: the resolved XID is still listed once.
            let mut two = [xid(0, b"-", b"-"); 2];
            check("xa_recover next", rm.recover_into(&mut two, TMNOFLAGS), 1);
            assert_eq!(ffi_common::xid_key(&two[0]), ffi_common::xid_key(&xs[2]));
            // Fewer than count: the scan is over.
            check(
                "xa_recover after the scan ended",
                rm.recover_into(&mut two, TMNOFLAGS),
                XAER_INVAL,
            );

            check("xa_commit 0", rm.commit(&xs[0], TMNOFLAGS), XA_OK);
            check("xa_rollback of prepared 1", rm.rollback(&xs[1]), XA_OK);
            check("xa_commit 2 again", rm.commit(&xs[2], TMNOFLAGS), XAER_NOTA);
            check(
                "xa_commit(TMONEPHASE) 3",
                rm.commit(&xs[3], TMONEPHASE),
                XA_OK,
            );
            check("xa_rollback of idle 4", rm.rollback(&xs[4]), XA_OK);
            // Nothing is heuristic: forget knows none of them; all are forgotten.
            for (i, xi) in xs.iter().enumerate() {
                check(&format!("xa_forget {i}"), rm.forget(xi), XAER_NOTA);
                check(
                    &format!("xa_commit {i} again"),
                    rm.commit(xi, TMNOFLAGS),
                    XAER_NOTA,
                );
                check(
                    &format!("xa_rollback {i} again"),
                    rm.rollback(xi),
                    XAER_NOTA,
                );
            }
            assert!(rm.recover_keys().is_empty());
        });
    }
    {
        let rm = rm.clone();
        w.run(move || {
            let want = [Some("v0"), None, Some("v2"), Some("v3"), None, None];
            for (i, v) in want.iter().enumerate() {
                assert_eq!(rm.get_str(&format!("done-{i}")).as_deref(), *v, "done-{i}");
            }
        });
    }
    close_all(&rm, &[&w, &c]);
}

/// Two branches in two threads: B's write waits for A's lock and succeeds once A commits; B's
/// value wins after B commits. (A commits after a short pause so that B is probably waiting;
/// the test is correct whether or not it is.)
#[test]
fn lock_conflict_waits_for_the_holder_to_commit() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(106, dir.path(), "lock_timeout_ms=60000");
    let (xa, xb) = (x("wait-a"), x("wait-b"));
    let (a, b) = (Worker::new("A"), Worker::new("B"));
    open_all(&rm, &[&a, &b]);
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start", rm.start(&xa, TMNOFLAGS), XA_OK);
            rm.put_ok("wait-k", "a");
        });
    }
    {
        let rm = rm.clone();
        b.run(move || check("xa_start", rm.start(&xb, TMNOFLAGS), XA_OK));
    }
    let blocked = {
        let rm = rm.clone();
        b.submit(move || rm.put(b"wait-k", b"b"))
    };
    std::thread::sleep(Duration::from_millis(50));
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_end", rm.end(&xa, TMSUCCESS), XA_OK);
            check("xa_prepare", rm.prepare(&xa), XA_OK);
            check("xa_commit", rm.commit(&xa, TMNOFLAGS), XA_OK);
        });
    }
    check("B's blocked mmxa_put", blocked.wait(), MMXA_OK);
    {
        let rm = rm.clone();
        a.run(move || assert_eq!(rm.get_str("wait-k").as_deref(), Some("a")));
    }
    {
        let rm = rm.clone();
        b.run(move || {
            assert_eq!(rm.get_str("wait-k").as_deref(), Some("b"));
            check("xa_end", rm.end(&xb, TMSUCCESS), XA_OK);
            check("xa_prepare", rm.prepare(&xb), XA_OK);
            check("xa_commit", rm.commit(&xb, TMNOFLAGS), XA_OK);
        });
    }
    for w in [&a, &b] {
        let rm = rm.clone();
        w.run(move || assert_eq!(rm.get_str("wait-k").as_deref(), Some("b")));
    }
    close_all(&rm, &[&a, &b]);
}

/// A lock wait that times out makes the waiter's branch rollback-only: `MMXA_ELOCKTIMEOUT`,
/// then `MMXA_EROLLBACK` for further work, `XA_RBTIMEOUT` from `xa_end` and `xa_prepare`.
#[test]
fn lock_timeout_makes_the_branch_rollback_only() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(107, dir.path(), "lock_timeout_ms=50");
    let (xa, xb) = (x("timeout-a"), x("timeout-b"));
    let (a, b) = (Worker::new("A"), Worker::new("B"));
    open_all(&rm, &[&a, &b]);
    {
        let rm = rm.clone();
        a.run(move || {
            check("xa_start", rm.start(&xa, TMNOFLAGS), XA_OK);
            rm.put_ok("to-k", "a");
        });
    }
    {
        let rm = rm.clone();
        b.run(move || {
            check("xa_start", rm.start(&xb, TMNOFLAGS), XA_OK);
            rm.put_ok("to-other", "b");
            check(
                "mmxa_put on A's key",
                rm.put(b"to-k", b"b"),
                MMXA_ELOCKTIMEOUT,
            );
            check(
                "mmxa_put afterwards",
                rm.put(b"to-more", b"b"),
                MMXA_EROLLBACK,
            );
            // A suspend gets the rollback answer too, and ends the association.
            check("xa_end(TMSUSPEND)", rm.end(&xb, TMSUSPEND), XA_RBTIMEOUT);
            check("xa_start(TMRESUME)", rm.start(&xb, TMRESUME), XAER_PROTO);
            check("xa_end again", rm.end(&xb, TMSUCCESS), XAER_PROTO);
            // Not associated any more: this thread may close and reopen.
            rm.close_ok();
            rm.open_ok();
        });
    }
    {
        // Completion from A's thread: prepare of the rollback-only branch rolls it back.
        let rm = rm.clone();
        a.run(move || {
            check("xa_end", rm.end(&xa, TMSUCCESS), XA_OK);
            check("xa_prepare of B", rm.prepare(&xb), XA_RBTIMEOUT);
            check("xa_rollback of B", rm.rollback(&xb), XAER_NOTA);
            check("xa_commit(TMONEPHASE)", rm.commit(&xa, TMONEPHASE), XA_OK);
            assert_eq!(rm.get_str("to-k").as_deref(), Some("a"));
            assert_eq!(rm.get_str("to-other"), None);
            assert_eq!(rm.get_str("to-more"), None);
        });
    }
    close_all(&rm, &[&a, &b]);
}

/// A deadlock between two threads: exactly one write fails at once with `MMXA_EDEADLOCK`; that
/// branch's `xa_end` answers `XA_RBDEADLOCK`, and once it is rolled back the other write goes
/// through. Which thread is the victim depends on the order the requests reach the lock table.
#[test]
fn deadlock_between_two_threads() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(108, dir.path(), "lock_timeout_ms=60000");
    let xids = [x("dl-a"), x("dl-b")];
    let workers = [Worker::new("A"), Worker::new("B")];
    open_all(&rm, &[&workers[0], &workers[1]]);
    let keys = ["dl-0", "dl-1"];
    for i in 0..2 {
        let rm = rm.clone();
        let (xi, key) = (xids[i], keys[i]);
        workers[i].run(move || {
            check("xa_start", rm.start(&xi, TMNOFLAGS), XA_OK);
            rm.put_ok(key, &format!("{i}"));
        });
    }
    // Each now wants the other's key.
    let (tx, rx) = mpsc::channel();
    let pending: Vec<_> = (0..2)
        .map(|i| {
            let rm = rm.clone();
            let tx = tx.clone();
            let key = keys[1 - i];
            workers[i].submit(move || {
                let rc = rm.put(key.as_bytes(), format!("{i}").as_bytes());
                tx.send((i, rc)).unwrap();
            })
        })
        .collect();
    let (victim, rc) = rx.recv_timeout(STEP_TIMEOUT).expect("one write returns");
    check("the first write to return", rc, MMXA_EDEADLOCK);
    let survivor = 1 - victim;
    assert!(
        rx.try_recv().is_err(),
        "the survivor still waits for the victim's lock"
    );
    {
        let rm = rm.clone();
        let xv = xids[victim];
        workers[victim].run(move || {
            check(
                "mmxa_put after the deadlock",
                rm.put(b"dl-x", b"v"),
                MMXA_EROLLBACK,
            );
            check(
                "xa_end of the victim",
                rm.end(&xv, TMSUCCESS),
                XA_RBDEADLOCK,
            );
            let rc = rm.rollback(&xv);
            assert!(rc == XA_OK || is_rb(rc), "xa_rollback of the victim: {rc}");
        });
    }
    let (who, rc) = rx
        .recv_timeout(STEP_TIMEOUT)
        .expect("the survivor proceeds");
    assert_eq!(who, survivor);
    check("the survivor's write", rc, MMXA_OK);
    pending.into_iter().for_each(|p| p.wait());
    {
        let rm = rm.clone();
        let xs = xids[survivor];
        workers[survivor].run(move || {
            check("xa_end", rm.end(&xs, TMSUCCESS), XA_OK);
            check("xa_prepare", rm.prepare(&xs), XA_OK);
            check("xa_commit", rm.commit(&xs, TMNOFLAGS), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        workers[victim].run(move || {
            for key in keys {
                assert_eq!(rm.get_str(key), Some(format!("{survivor}")));
            }
            assert_eq!(rm.get_str("dl-x"), None);
        });
    }
    close_all(&rm, &[&workers[0], &workers[1]]);
}

/// Two stores in one process under two rmids get the same XID (as LIXA hands every RM of a
/// transaction the same XID) and keep two independent branches. One store cannot be opened
/// under a second rmid, and one rmid cannot name a second store.
#[test]
fn two_stores_under_two_rmids_with_the_same_xid() {
    let (d1, d2, d3) = (
        ffi_common::private_dir(),
        ffi_common::private_dir(),
        ffi_common::private_dir(),
    );
    let r1 = Rm::new(109, d1.path(), "lock_timeout_ms=0");
    let r2 = Rm::new(110, d2.path(), "lock_timeout_ms=0");
    let xs = x("lixa-style");
    let (t, u) = (Worker::new("T"), Worker::new("U"));
    {
        let (r1, r2) = (r1.clone(), r2.clone());
        t.run(move || {
            r1.open_ok();
            r2.open_ok();
            check("xa_start on rmid 109", r1.start(&xs, TMNOFLAGS), XA_OK);
            check("xa_start on rmid 110", r2.start(&xs, TMNOFLAGS), XA_OK);
            r1.put_ok("same", "one");
            r2.put_ok("same", "two");
            assert_eq!(r1.get_str("same").as_deref(), Some("one"));
            assert_eq!(r2.get_str("same").as_deref(), Some("two"));
            check("xa_end 109", r1.end(&xs, TMSUCCESS), XA_OK);
            check("xa_end 110", r2.end(&xs, TMSUCCESS), XA_OK);
            check("xa_prepare 109", r1.prepare(&xs), XA_OK);
            check("xa_prepare 110", r2.prepare(&xs), XA_OK);
        });
    }
    {
        let (r1, r2) = (r1.clone(), r2.clone());
        let (p1, p3) = (d1.path().to_owned(), d3.path().to_owned());
        u.run(move || {
            // Same store under another rmid; same rmid over another store.
            check(
                "xa_open of store 1 under rmid 111",
                Rm::new(111, &p1, "lock_timeout_ms=0").open(),
                XAER_INVAL,
            );
            check(
                "xa_open of rmid 109 over store 3",
                Rm::new(109, &p3, "lock_timeout_ms=0").open(),
                XAER_INVAL,
            );
            // Neither refusal opened anything in this thread.
            let mut buf = [xid(0, b"-", b"-")];
            check(
                "xa_recover on rmid 109 in R0",
                r1.recover_into(&mut buf, TMSTARTRSCAN),
                XAER_PROTO,
            );
            r1.open_ok();
            r2.open_ok();
            let want = vec![ffi_common::xid_key(&xs)];
            assert_eq!(r1.recover_keys(), want);
            assert_eq!(r2.recover_keys(), want);
            check("xa_commit 109", r1.commit(&xs, TMNOFLAGS), XA_OK);
            assert!(r1.recover_keys().is_empty());
            assert_eq!(r2.recover_keys(), want, "store 2 is independent");
            check("xa_rollback 110", r2.rollback(&xs), XA_OK);
            assert_eq!(r1.get_str("same").as_deref(), Some("one"));
            assert_eq!(r2.get_str("same"), None);
        });
    }
    {
        let (r1, r2) = (r1.clone(), r2.clone());
        let (p1, p3) = (d1.path().to_owned(), d3.path().to_owned());
        t.run(move || {
            check(
                "xa_open of store 1 under rmid 111",
                Rm::new(111, &p1, "lock_timeout_ms=0").open(),
                XAER_INVAL,
            );
            check(
                "xa_open of rmid 110 over store 3",
                Rm::new(110, &p3, "lock_timeout_ms=0").open(),
                XAER_INVAL,
            );
            r1.close_ok();
            r2.close_ok();
        });
    }
    close_all(&r1, &[&u]);
    close_all(&r2, &[&u]);
}

/// R and T states per thread (XA reference §5.1, §5.2): `xa_open` twice is one open,
/// `xa_close` in R0 is a no-op, `xa_close` while associated (active or suspended) is
/// `XAER_PROTO`, and closing one thread leaves the others' use of the store alone.
#[test]
fn open_and_close_rules_per_thread() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(112, dir.path(), "lock_timeout_ms=0");
    let xo = x("open-close");
    let (t, u) = (Worker::new("T"), Worker::new("U"));
    {
        let rm = rm.clone();
        let dir_path = dir.path().to_owned();
        t.run(move || {
            rm.close_ok(); // R0, never opened anywhere
            rm.open_ok();
            rm.open_ok(); // already R1: no effect
            let mut other = rm.clone();
            other.info = ffi_common::info(&dir_path, "lock_timeout_ms=5");
            check("xa_open with other settings", other.open(), XAER_INVAL);
            check("xa_start", rm.start(&xo, TMNOFLAGS), XA_OK);
            rm.put_ok("oc-k", "t");
            check("xa_close while active", rm.close(), XAER_PROTO);
            check("xa_end(TMSUSPEND)", rm.end(&xo, TMSUSPEND), XA_OK);
            check("xa_close while suspended", rm.close(), XAER_PROTO);
            check("xa_start(TMRESUME)", rm.start(&xo, TMRESUME), XA_OK);
            check("xa_end", rm.end(&xo, TMSUCCESS), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        u.run(move || {
            rm.close_ok(); // R0 in this thread while T has the store open
            check("xa_prepare in R0", rm.prepare(&xo), XAER_PROTO);
            check("mmxa_put in R0", rm.put(b"oc-u", b"u"), MMXA_ENOTOPEN);
            rm.open_ok();
            check("xa_prepare", rm.prepare(&xo), XA_OK);
        });
    }
    {
        let rm = rm.clone();
        t.run(move || {
            rm.close_ok(); // one close after two opens: back to R0
            check(
                "xa_start in R0",
                rm.start(&x("after-close"), TMNOFLAGS),
                XAER_PROTO,
            );
            check("xa_commit in R0", rm.commit(&xo, TMNOFLAGS), XAER_PROTO);
            check(
                "mmxa_get in R0",
                rm.get(b"oc-k").unwrap_err(),
                MMXA_ENOTOPEN,
            );
            rm.close_ok(); // and a close in R0 is still fine
        });
    }
    {
        // U's use of the store was not affected by T's close.
        let rm = rm.clone();
        u.run(move || {
            check("xa_commit", rm.commit(&xo, TMNOFLAGS), XA_OK);
            assert_eq!(rm.get_str("oc-k").as_deref(), Some("t"));
            rm.close_ok();
        });
    }
}

/// Open → close → open in a loop (Enduro/X reconnects this way): every close of the last
/// thread shuts the store and every open recovers it; committed data and a prepared branch
/// survive all 50 cycles.
#[test]
fn open_close_open_loop() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(113, dir.path(), "lock_timeout_ms=0");
    let xp = x("loop-prepared");
    let t = Worker::new("T");
    let rm2 = rm.clone();
    t.run(move || {
        let rm = rm2;
        rm.open_ok();
        check("xa_start", rm.start(&xp, TMNOFLAGS), XA_OK);
        rm.put_ok("loop-prepared", "p");
        check("xa_end", rm.end(&xp, TMSUCCESS), XA_OK);
        check("xa_prepare", rm.prepare(&xp), XA_OK);
        rm.close_ok();
        let want = vec![ffi_common::xid_key(&xp)];
        for i in 0..50 {
            rm.open_ok();
            assert_eq!(rm.recover_keys(), want, "cycle {i}");
            if i > 0 {
                let prev = format!("loop-{}", i - 1);
                assert_eq!(rm.get_str(&prev), Some(format!("v{}", i - 1)));
            }
            rm.put_ok(&format!("loop-{i}"), &format!("v{i}"));
            rm.close_ok();
        }
        rm.open_ok();
        for i in 0..50 {
            assert_eq!(rm.get_str(&format!("loop-{i}")), Some(format!("v{i}")));
        }
        assert_eq!(rm.get_str("loop-prepared"), None);
        check("xa_commit", rm.commit(&xp, TMNOFLAGS), XA_OK);
        assert_eq!(rm.get_str("loop-prepared").as_deref(), Some("p"));
        rm.close_ok();
        rm.open_ok();
        assert!(rm.recover_keys().is_empty());
        assert_eq!(rm.get_str("loop-prepared").as_deref(), Some("p"));
        rm.close_ok();
    });
    drop(rm);
}

/// A branch rolled back by another thread while its thread waits for a lock: the wait ends
/// with `MMXA_EROLLBACK` (not a timeout: the lock timeout is an hour) and `xa_end` answers
/// `XA_RBOTHER`; the holder of the lock is not disturbed.
#[test]
fn rollback_from_another_thread_ends_a_lock_wait() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(114, dir.path(), "lock_timeout_ms=3600000");
    let (xh, xw) = (x("wait-holder"), x("wait-victim"));
    let (h, v, tm) = (
        Worker::new("holder"),
        Worker::new("waiter"),
        Worker::new("tm"),
    );
    open_all(&rm, &[&h, &v, &tm]);
    {
        let rm = rm.clone();
        h.run(move || {
            check("xa_start", rm.start(&xh, TMNOFLAGS), XA_OK);
            rm.put_ok("rbw-k", "h");
        });
    }
    {
        let rm = rm.clone();
        v.run(move || {
            check("xa_start", rm.start(&xw, TMNOFLAGS), XA_OK);
            rm.put_ok("rbw-mine", "w");
        });
    }
    // The rollback may come before or during the wait: either way the put fails the same way.
    let waiting = {
        let rm = rm.clone();
        v.submit(move || rm.put(b"rbw-k", b"w"))
    };
    std::thread::sleep(Duration::from_millis(50));
    {
        let rm = rm.clone();
        tm.run(move || check("xa_rollback of the waiting branch", rm.rollback(&xw), XA_OK));
    }
    check("the waiter's mmxa_put", waiting.wait(), MMXA_EROLLBACK);
    {
        let rm = rm.clone();
        v.run(move || {
            check("xa_end", rm.end(&xw, TMSUCCESS), XA_RBOTHER);
            check("xa_rollback afterwards", rm.rollback(&xw), XAER_NOTA);
        });
    }
    {
        let rm = rm.clone();
        h.run(move || {
            rm.put_ok("rbw-mine", "h"); // the waiter's lock on it is gone
            check("xa_end", rm.end(&xh, TMSUCCESS), XA_OK);
            check("xa_commit(TMONEPHASE)", rm.commit(&xh, TMONEPHASE), XA_OK);
            assert_eq!(rm.get_str("rbw-k").as_deref(), Some("h"));
            assert_eq!(rm.get_str("rbw-mine").as_deref(), Some("h"));
        });
    }
    close_all(&rm, &[&h, &v, &tm]);
}

/// Tightly coupled threads share the branch's fate (XA reference §7.3): when one joined
/// thread's lock wait times out, the branch is rollback-only for all of them — the other
/// thread's next write fails, every `xa_end` answers `XA_RBTIMEOUT`, a late join is refused
/// with `XA_RBTIMEOUT`, and prepare rolls the branch back.
#[test]
fn rollback_only_reaches_every_joined_thread() {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(115, dir.path(), "lock_timeout_ms=50");
    let (xj, xo) = (x("joined-rb"), x("joined-other"));
    let (t1, t2, t3, o) = (
        Worker::new("T1"),
        Worker::new("T2"),
        Worker::new("T3"),
        Worker::new("other"),
    );
    open_all(&rm, &[&t1, &t2, &t3, &o]);
    {
        let rm = rm.clone();
        o.run(move || {
            check("xa_start", rm.start(&xo, TMNOFLAGS), XA_OK);
            rm.put_ok("jrb-k", "o");
        });
    }
    for (w, flags) in [(&t1, TMNOFLAGS), (&t2, TMJOIN)] {
        let rm = rm.clone();
        w.run(move || {
            check("xa_start", rm.start(&xj, flags), XA_OK);
            rm.put_ok("jrb-shared", "j");
        });
    }
    {
        let rm = rm.clone();
        t1.run(move || check("mmxa_put", rm.put(b"jrb-k", b"t1"), MMXA_ELOCKTIMEOUT));
    }
    {
        let rm = rm.clone();
        t2.run(move || {
            check(
                "mmxa_put in the other joined thread",
                rm.put(b"jrb-x", b"t2"),
                MMXA_EROLLBACK,
            );
            check("xa_end in T2", rm.end(&xj, TMSUCCESS), XA_RBTIMEOUT);
        });
    }
    {
        let rm = rm.clone();
        t3.run(move || check("late TMJOIN", rm.start(&xj, TMJOIN), XA_RBTIMEOUT));
    }
    {
        let rm = rm.clone();
        t1.run(move || check("xa_end in T1", rm.end(&xj, TMSUCCESS), XA_RBTIMEOUT));
    }
    {
        let rm = rm.clone();
        t3.run(move || {
            check("xa_prepare", rm.prepare(&xj), XA_RBTIMEOUT);
            check("xa_rollback afterwards", rm.rollback(&xj), XAER_NOTA);
            assert_eq!(rm.get_str("jrb-shared"), None);
        });
    }
    {
        let rm = rm.clone();
        o.run(move || {
            rm.put_ok("jrb-shared", "o"); // the rolled-back branch's lock is gone
            check("xa_end", rm.end(&xo, TMSUCCESS), XA_OK);
            check("xa_commit(TMONEPHASE)", rm.commit(&xo, TMONEPHASE), XA_OK);
            assert_eq!(rm.get_str("jrb-k").as_deref(), Some("o"));
            assert_eq!(rm.get_str("jrb-shared").as_deref(), Some("o"));
        });
    }
    close_all(&rm, &[&t1, &t2, &t3, &o]);
}

/// Reaching one store never holds up another: while one thread's `xa_open` of store A waits for
/// another process rebuilding A (this test plays it: it holds A's "open" lock exclusively and
/// never finishes), another thread's data call on store B and its `xa_open` of store C complete.
/// When the rebuilding process goes away, A's open goes on and rebuilds A itself. Asserted by the order of completions; the bound on the wait for B is
/// only there so that a regression fails instead of hanging.
#[test]
fn a_stuck_open_holds_up_no_other_store() {
    use std::sync::{Arc, Mutex};
    let (da, db, dc) = (
        ffi_common::private_dir(),
        ffi_common::private_dir(),
        ffi_common::private_dir(),
    );
    let ra = Rm::new(116, da.path(), "lock_timeout_ms=0");
    let rb = Rm::new(117, db.path(), "lock_timeout_ms=0");
    let rc = Rm::new(118, dc.path(), "lock_timeout_ms=0");
    let (a, b) = (Worker::new("stuck-a"), Worker::new("stuck-b"));
    {
        let rb = rb.clone();
        b.run(move || rb.open_ok());
    }

    // A process rebuilding A (this test plays it): it holds A's "open" lock exclusively, so
    // A's open waits for it to finish.
    let dir_a = std::fs::canonicalize(da.path()).unwrap();
    let lockfile = mmxa::shm::LockFile::open(&dir_a.join("mmxa.lock"), 0o600).unwrap();
    let rebuilding = lockfile
        .open_or_recover(
            &dir_a.join("mmxa.shm"),
            0o600,
            mmxa::shm::Options::default(),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(matches!(rebuilding, mmxa::shm::Opened::Fresh(_)));
    let order = Arc::new(Mutex::new(Vec::new()));
    let opened_a = {
        let (ra, order) = (ra.clone(), order.clone());
        a.submit(move || {
            let rc = ra.open();
            order.lock().unwrap().push("A opened");
            (rc, ffi_common::last_error())
        })
    };
    // Give A's open a moment to start waiting (if it has not, the test proves less, never
    // more).
    std::thread::sleep(Duration::from_millis(200));

    let (done_tx, done_rx) = mpsc::channel();
    {
        let (rb, rc, order) = (rb.clone(), rc.clone(), order.clone());
        b.submit(move || {
            check("mmxa_put on B", rb.put(b"k", b"b"), MMXA_OK);
            order.lock().unwrap().push("B written");
            check("xa_open of C", rc.open(), XA_OK);
            check("mmxa_put on C", rc.put(b"k", b"c"), MMXA_OK);
            order.lock().unwrap().push("C opened and written");
            let _ = done_tx.send(());
        });
    }
    // Liveness bound only: before the fix, B's call waits until A's open ends.
    let b_done = done_rx.recv_timeout(Duration::from_secs(30)).is_ok();

    // The rebuilding process goes away without finishing; A's open rebuilds A itself.
    drop(rebuilding);
    drop(lockfile);
    let (open_a, why) = opened_a.wait();
    if !b_done {
        done_rx
            .recv_timeout(STEP_TIMEOUT)
            .expect("the calls on B and C end");
    }
    assert_eq!(
        *order.lock().unwrap(),
        ["B written", "C opened and written", "A opened"],
        "calls on other stores complete while A's open is stuck"
    );
    assert_eq!(open_a, XA_OK, "xa_open of A: {why}");
    {
        let ra = ra.clone();
        a.run(move || {
            ra.put_ok("k", "a");
            assert_eq!(ra.get_str("k").as_deref(), Some("a"));
            ra.close_ok();
        });
    }
    {
        let (rb, rc) = (rb.clone(), rc.clone());
        b.run(move || {
            assert_eq!(rb.get_str("k").as_deref(), Some("b"));
            assert_eq!(rc.get_str("k").as_deref(), Some("c"));
            rb.close_ok();
            rc.close_ok();
        });
    }
}
