//! Isolation: reads and writes of concurrent branches are serializable (strict two-phase
//! locking), through the real C entry points, with real threads and real processes.
//!
//! - Lock semantics, step by step: readers share, readers and writers exclude each other in
//!   both orders, the upgrade deadlock, a timeout on a shared lock, joined and migrated threads
//!   sharing their branch's locks, `XA_RDONLY` and `xa_prepare` releasing read locks, prepared
//!   branches keeping write locks across a crash, `mmxa_get_for_update`, and
//!   `isolation=read_committed` taking no read lock.
//! - The anomalies that unlocked reads allowed, as workloads with retries: lost update (a
//!   counter incremented by 4 threads, and by 3 processes × 2 threads), read skew (transfers
//!   between two stores under one XID, audited by a global transaction reading every account)
//!   and write skew (two branches each reading both of x and y and decrementing one).
//! - A randomized history checker: threads run list-append transactions; every committed
//!   transaction's reads and appends become a dependency graph (write-read, write-write and
//!   read-write edges, as Adya's and Elle's), which must have no cycle.
//!
//! Seeds are printed; `MMXA_ISO_SEED` replays the random choices (not the thread timing).

mod ffi_common;
mod rng;

use ffi_common::{check, last_error, xid, Rm, Worker};
use mmxa::ffi::abi::Xid;
use mmxa::status::*;
use mmxa::xa::*;
use rng::Rng;
use std::collections::{BTreeMap, HashMap};
use std::os::raw::c_long;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

/// Distinct XIDs across the whole test binary.
static NEXT_XID: AtomicU64 = AtomicU64::new(1);

fn fresh_xid(tag: &str) -> Xid {
    let n = NEXT_XID.fetch_add(1, Ordering::Relaxed);
    xid(
        0x150,
        format!("{tag}-{n}-{}", std::process::id()).as_bytes(),
        b"b",
    )
}

/// Distinct rmids: the tests of this binary run in parallel in one process.
static NEXT_RMID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1);

/// A store under a fresh rmid.
fn rm(dir: &Path, extra: &str) -> Rm {
    Rm::new(NEXT_RMID.fetch_add(1, Ordering::Relaxed), dir, extra)
}

/// Starts `x` on `r` in this thread, asserting `XA_OK`.
#[track_caller]
fn start(r: &Rm, x: &Xid, flags: c_long) {
    check("xa_start", r.start(x, flags), XA_OK);
}

#[track_caller]
fn end(r: &Rm, x: &Xid, flags: c_long) {
    check("xa_end", r.end(x, flags), XA_OK);
}

fn num(v: Option<Vec<u8>>) -> i64 {
    v.map_or(0, |v| {
        String::from_utf8(v)
            .expect("UTF-8")
            .parse()
            .expect("a number")
    })
}

fn put_num(r: &Rm, key: &str, v: i64) -> Result<(), i32> {
    match r.put(key.as_bytes(), v.to_string().as_bytes()) {
        MMXA_OK => Ok(()),
        rc => Err(rc),
    }
}

/// Commits `key = value` by itself (outside any branch).
#[track_caller]
fn seed_value(r: &Rm, key: &str, value: &str) {
    r.put_ok(key, value);
}

// ---- lock semantics, step by step --------------------------------------------------------------

#[test]
fn two_readers_never_wait() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (sa, sb) = (s.clone(), s.clone());
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "k", "1");
    });
    b.run(move || sb.open_ok());
    let (xa, xb) = (fresh_xid("r2a"), fresh_xid("r2b"));
    let (sa, sb) = (s.clone(), s.clone());
    a.run(move || {
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(sa.get(b"k"), Ok(Some(b"1".to_vec())));
    });
    // With a zero timeout a conflicting request would fail at once: shared locks don't conflict.
    b.run(move || {
        start(&sb, &xb, TMNOFLAGS);
        assert_eq!(sb.get(b"k"), Ok(Some(b"1".to_vec())));
        assert_eq!(sb.get(b"absent"), Ok(None));
        end(&sb, &xb, TMSUCCESS);
        check("prepare", sb.prepare(&xb), XA_RDONLY);
    });
    let sa = s.clone();
    a.run(move || {
        // The other reader is done: an upgrade succeeds at once.
        assert_eq!(put_num(&sa, "k", 2), Ok(()));
        end(&sa, &xa, TMSUCCESS);
        check("commit", sa.commit(&xa, TMONEPHASE), XA_OK);
        assert_eq!(sa.get_str("k").as_deref(), Some("2"));
    });
}

#[test]
fn readers_and_writers_exclude_each_other_in_both_orders() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (sa, sb) = (s.clone(), s.clone());
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "k", "1");
    });
    b.run(move || sb.open_ok());

    // A reader first: a writer (in a branch, and on its own) cannot lock the key.
    let (xa, xb) = (fresh_xid("rw-a"), fresh_xid("rw-b"));
    let (sa, sb) = (s.clone(), s.clone());
    a.run(move || {
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(sa.get(b"k"), Ok(Some(b"1".to_vec())));
    });
    b.run(move || {
        check("one-operation put", sb.put(b"k", b"9"), MMXA_ELOCKTIMEOUT);
        start(&sb, &xb, TMNOFLAGS);
        check("put in a branch", sb.put(b"k", b"9"), MMXA_ELOCKTIMEOUT);
        check("xa_end", sb.end(&xb, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&xb), XA_OK);
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        check("prepare", sa.prepare(&xa), XA_RDONLY);
    });

    // A writer first: a reader in a branch cannot read the key (not even its old value); a
    // reader outside any branch reads the committed value without waiting.
    let (xa, xb) = (fresh_xid("wr-a"), fresh_xid("wr-b"));
    let (sa, sb) = (s.clone(), s.clone());
    a.run(move || {
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(put_num(&sa, "k", 5), Ok(()));
    });
    b.run(move || {
        assert_eq!(sb.get_str("k").as_deref(), Some("1"), "committed read");
        start(&sb, &xb, TMNOFLAGS);
        check(
            "get in a branch",
            sb.get(b"k").unwrap_err(),
            MMXA_ELOCKTIMEOUT,
        );
        assert!(last_error().contains("rollback-only"), "{}", last_error());
        check("xa_end", sb.end(&xb, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&xb), XA_OK);
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        check("commit", sa.commit(&xa, TMONEPHASE), XA_OK);
    });
}

#[test]
fn a_waiting_reader_gets_the_value_committed_by_the_writer() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=60000");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (sa, sb) = (s.clone(), s.clone());
    let (xa, xb) = (fresh_xid("wait-a"), fresh_xid("wait-b"));
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "k", "1");
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(put_num(&sa, "k", 2), Ok(()));
    });
    let reader = b.submit(move || {
        sb.open_ok();
        start(&sb, &xb, TMNOFLAGS);
        let v = sb.get(b"k");
        end(&sb, &xb, TMSUCCESS);
        check("prepare", sb.prepare(&xb), XA_RDONLY);
        v
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        check("prepare", sa.prepare(&xa), XA_OK);
        check("commit", sa.commit(&xa, TMNOFLAGS), XA_OK);
    });
    assert_eq!(reader.wait(), Ok(Some(b"2".to_vec())));
}

#[test]
fn two_readers_upgrading_one_key_deadlock_and_one_goes_on() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=60000");
    let workers = [Worker::new("a"), Worker::new("b")];
    let xids = [fresh_xid("up-a"), fresh_xid("up-b")];
    let s0 = s.clone();
    workers[0].run(move || {
        s0.open_ok();
        seed_value(&s0, "k", "10");
    });
    for (w, x) in workers.iter().zip(xids) {
        let s = s.clone();
        w.run(move || {
            s.open();
            start(&s, &x, TMNOFLAGS);
            assert_eq!(num(s.get(b"k").unwrap()), 10);
        });
    }
    // Both upgrade: whichever asks second would wait for the first, which waits for it — a
    // deadlock, reported at once to that one; the other waits until it is rolled back.
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, w) in workers.iter().enumerate() {
        let (s, tx) = (s.clone(), tx.clone());
        w.submit(move || {
            let _ = tx.send((i, put_num(&s, "k", 11 + i as i64), last_error()));
        });
    }
    let (loser, rc, msg) = rx.recv_timeout(ffi_common::STEP_TIMEOUT).unwrap();
    assert_eq!(rc, Err(MMXA_EDEADLOCK), "the first answer: {msg}");
    let (s_l, x_l) = (s.clone(), xids[loser]);
    workers[loser].run(move || {
        check("xa_end", s_l.end(&x_l, TMSUCCESS), XA_RBDEADLOCK);
        check("xa_rollback", s_l.rollback(&x_l), XA_OK);
    });
    let (winner, rc, msg) = rx.recv_timeout(ffi_common::STEP_TIMEOUT).unwrap();
    assert_eq!((winner, rc), (1 - loser, Ok(())), "{msg}");
    let (s_w, x_w) = (s.clone(), xids[winner]);
    workers[winner].run(move || {
        end(&s_w, &x_w, TMSUCCESS);
        check("commit", s_w.commit(&x_w, TMONEPHASE), XA_OK);
        assert_eq!(num(s_w.get(b"k").unwrap()), 11 + winner as i64);
    });
}

#[test]
fn a_shared_lock_wait_times_out() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=100");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (sa, sb) = (s.clone(), s.clone());
    let (xa, xb) = (fresh_xid("to-a"), fresh_xid("to-b"));
    a.run(move || {
        sa.open_ok();
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(put_num(&sa, "k", 1), Ok(()));
    });
    b.run(move || {
        sb.open_ok();
        start(&sb, &xb, TMNOFLAGS);
        check("get", sb.get(b"k").unwrap_err(), MMXA_ELOCKTIMEOUT);
        check("get again", sb.get(b"other").unwrap_err(), MMXA_EROLLBACK);
        check("xa_end", sb.end(&xb, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&xb), XA_OK);
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        check("rollback", sa.rollback(&xa), XA_OK);
    });
}

#[test]
fn joined_and_migrated_threads_share_their_branch_locks() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0");
    let (a, b, c) = (Worker::new("a"), Worker::new("b"), Worker::new("c"));
    let x = fresh_xid("join");
    for w in [&a, &b, &c] {
        let s = s.clone();
        w.run(move || s.open_ok());
    }
    let sa = s.clone();
    a.run(move || {
        seed_value(&sa, "k", "1");
        start(&sa, &x, TMNOFLAGS);
        assert_eq!(num(sa.get(b"k").unwrap()), 1);
    });
    // b joins the branch: its write upgrades the branch's own read lock without waiting.
    let sb = s.clone();
    b.run(move || {
        start(&sb, &x, TMJOIN);
        assert_eq!(put_num(&sb, "k", 2), Ok(()));
        end(&sb, &x, TMSUSPEND | TMMIGRATE);
    });
    let sa = s.clone();
    a.run(move || end(&sa, &x, TMSUCCESS));
    // c resumes the migrated association: it reads and writes under the same locks.
    let sc = s.clone();
    c.run(move || {
        start(&sc, &x, TMRESUME);
        assert_eq!(num(sc.get(b"k").unwrap()), 2);
        assert_eq!(put_num(&sc, "k", 3), Ok(()));
        end(&sc, &x, TMSUCCESS);
    });
    // Another branch still cannot touch the key.
    let y = fresh_xid("outsider");
    let sb = s.clone();
    b.run(move || {
        start(&sb, &y, TMNOFLAGS);
        check("outsider get", sb.get(b"k").unwrap_err(), MMXA_ELOCKTIMEOUT);
        check("xa_end", sb.end(&y, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&y), XA_OK);
        check("prepare", sb.prepare(&x), XA_OK);
        check("commit", sb.commit(&x, TMNOFLAGS), XA_OK);
        assert_eq!(sb.get_str("k").as_deref(), Some("3"));
    });
}

#[test]
fn prepare_releases_read_locks_and_keeps_write_locks_across_a_crash() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let x = fresh_xid("prep");
    let sa = s.clone();
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "read", "r");
        seed_value(&sa, "written", "w");
        start(&sa, &x, TMNOFLAGS);
        assert_eq!(sa.get(b"read"), Ok(Some(b"r".to_vec())));
        assert_eq!(sa.get(b"missing"), Ok(None));
        assert_eq!(sa.put(b"written", b"w2"), MMXA_OK);
        end(&sa, &x, TMSUCCESS);
    });
    let sb = s.clone();
    b.run(move || {
        sb.open_ok();
        // Before prepare the read lock keeps writers out, also of the absent key.
        check("put read", sb.put(b"read", b"!"), MMXA_ELOCKTIMEOUT);
        check("put missing", sb.put(b"missing", b"!"), MMXA_ELOCKTIMEOUT);
    });
    let sa = s.clone();
    a.run(move || check("prepare", sa.prepare(&x), XA_OK));
    let sb = s.clone();
    b.run(move || {
        check("put read after prepare", sb.put(b"read", b"r2"), MMXA_OK);
        check(
            "put missing after prepare",
            sb.put(b"missing", b"m"),
            MMXA_OK,
        );
        check("put written", sb.put(b"written", b"!"), MMXA_ELOCKTIMEOUT);
        sb.close_ok();
    });
    let sa = s.clone();
    a.run(move || sa.close_ok());
    // Every thread closed: the store closes. Reopened, the prepared branch holds its write lock.
    let y = fresh_xid("after-crash");
    let sb = s.clone();
    b.run(move || {
        sb.open_ok();
        let keys = sb.recover_keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        start(&sb, &y, TMNOFLAGS);
        check(
            "get written",
            sb.get(b"written").unwrap_err(),
            MMXA_ELOCKTIMEOUT,
        );
        check("xa_end", sb.end(&y, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&y), XA_OK);
        check("commit", sb.commit(&x, TMNOFLAGS), XA_OK);
        assert_eq!(sb.get_str("written").as_deref(), Some("w2"));
        assert_eq!(sb.get_str("read").as_deref(), Some("r2"));
        sb.close_ok();
    });
}

#[test]
fn get_for_update_locks_exclusively_in_a_branch_only() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (xa, xb) = (fresh_xid("gfu-a"), fresh_xid("gfu-b"));
    let sa = s.clone();
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "k", "7");
        // Outside a branch: a plain committed read, no lock left behind.
        assert_eq!(sa.get_for_update(b"k"), Ok(Some(b"7".to_vec())));
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(sa.get_for_update(b"k"), Ok(Some(b"7".to_vec())));
    });
    let sb = s.clone();
    b.run(move || {
        sb.open_ok();
        start(&sb, &xb, TMNOFLAGS);
        check("shared read", sb.get(b"k").unwrap_err(), MMXA_ELOCKTIMEOUT);
        check("xa_end", sb.end(&xb, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&xb), XA_OK);
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        // Only a lock was taken: the branch is read-only, and releases it.
        check("prepare", sa.prepare(&xa), XA_RDONLY);
    });
    let sb = s.clone();
    b.run(move || check("put", sb.put(b"k", b"8"), MMXA_OK));
}

#[test]
fn read_committed_reads_take_no_lock() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "lock_timeout_ms=0;isolation=read_committed");
    let (a, b) = (Worker::new("a"), Worker::new("b"));
    let (xa, xb) = (fresh_xid("rc-a"), fresh_xid("rc-b"));
    let sa = s.clone();
    a.run(move || {
        sa.open_ok();
        seed_value(&sa, "k", "1");
        start(&sa, &xa, TMNOFLAGS);
        assert_eq!(put_num(&sa, "k", 2), Ok(()));
    });
    let sb = s.clone();
    b.run(move || {
        sb.open_ok();
        start(&sb, &xb, TMNOFLAGS);
        // The uncommitted write is not seen, and the read does not wait for it.
        assert_eq!(sb.get(b"k"), Ok(Some(b"1".to_vec())));
        // A locking read still locks.
        check(
            "for update",
            sb.get_for_update(b"k").unwrap_err(),
            MMXA_ELOCKTIMEOUT,
        );
        check("xa_end", sb.end(&xb, TMSUCCESS), XA_RBTIMEOUT);
        check("xa_rollback", sb.rollback(&xb), XA_OK);
    });
    let sa = s.clone();
    a.run(move || {
        end(&sa, &xa, TMSUCCESS);
        check("commit", sa.commit(&xa, TMONEPHASE), XA_OK);
    });
}

// ---- global transactions with retries ------------------------------------------------------------

/// Why an attempt was given up.
#[derive(Debug)]
enum Abort {
    /// A data call failed with this `MMXA_*` code (the branch is rollback-only).
    Data(i32),
    /// The body decided to roll back.
    Voluntary,
}

/// The outcome counts of a workload.
#[derive(Default, Debug)]
struct Tally {
    committed: AtomicUsize,
    retried: AtomicUsize,
    deadlocks: AtomicUsize,
}

/// Runs `body` as one global transaction over `stores` (one branch per store, the same XID on
/// each, as LIXA sends it), committing with two phases (or one, for a single store), and retries
/// with a new XID while mmxa rolls it back. Returns the body's value once committed, or `None`
/// if the body gave up by itself ([`Abort::Voluntary`]: rolled back, not retried).
fn transact<T>(
    stores: &[&Rm],
    tag: &str,
    tally: &Tally,
    mut body: impl FnMut() -> Result<T, Abort>,
) -> Option<T> {
    for attempt in 0.. {
        assert!(attempt < 10_000, "{tag}: no attempt commits");
        let x = fresh_xid(tag);
        for s in stores {
            start(s, &x, TMNOFLAGS);
        }
        let result = body();
        let ok = result.is_ok();
        match &result {
            Err(Abort::Data(MMXA_EDEADLOCK)) => {
                tally.deadlocks.fetch_add(1, Ordering::Relaxed);
            }
            Err(Abort::Data(MMXA_ELOCKTIMEOUT | MMXA_EROLLBACK))
            | Err(Abort::Voluntary)
            | Ok(_) => {}
            Err(Abort::Data(rc)) => panic!("{tag}: data call failed with {rc}: {}", last_error()),
        }
        let mut all_ended = true;
        for s in stores {
            let rc = s.end(&x, if ok { TMSUCCESS } else { TMFAIL });
            if rc != XA_OK {
                assert!((XA_RBBASE..=XA_RBEND).contains(&rc), "{tag}: xa_end: {rc}");
                all_ended = false;
            }
        }
        if !ok || !all_ended {
            for s in stores {
                let rc = s.rollback(&x);
                assert!(rc == XA_OK || rc == XAER_NOTA, "{tag}: xa_rollback: {rc}");
            }
            if matches!(result, Err(Abort::Voluntary)) {
                return None;
            }
            tally.retried.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if stores.len() == 1 {
            check("1PC commit", stores[0].commit(&x, TMONEPHASE), XA_OK);
        } else {
            let mut prepared = Vec::new();
            for s in stores {
                match s.prepare(&x) {
                    XA_OK => prepared.push(*s),
                    XA_RDONLY => {}
                    rc => panic!("{tag}: xa_prepare: {rc}: {}", last_error()),
                }
            }
            for s in prepared {
                check("2PC commit", s.commit(&x, TMNOFLAGS), XA_OK);
            }
        }
        tally.committed.fetch_add(1, Ordering::Relaxed);
        return result.ok();
    }
    unreachable!()
}

/// A data call's answer as an [`Abort`] on failure.
fn data<T>(r: Result<T, i32>) -> Result<T, Abort> {
    r.map_err(Abort::Data)
}

fn read(s: &Rm, key: &str, for_update: bool) -> Result<i64, Abort> {
    let v = if for_update {
        s.get_for_update(key.as_bytes())
    } else {
        s.get(key.as_bytes())
    };
    data(v).map(num)
}

// ---- lost update -----------------------------------------------------------------------------------

/// `threads` threads each commit `per_thread` increments of one counter (read it, write it plus
/// one), with plain reads (shared locks upgraded by the write: deadlocks, retried) or locking
/// reads. Returns the counter and the number of committed increments.
fn counter_workload(
    dir: &Path,
    threads: usize,
    per_thread: usize,
    for_update: bool,
) -> (i64, Tally) {
    let s = rm(dir, "");
    let tally = Arc::new(Tally::default());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (s, tally) = (s.clone(), tally.clone());
            thread::spawn(move || {
                s.open_ok();
                for _ in 0..per_thread {
                    transact(&[&s], &format!("ctr{t}"), &tally, || {
                        let v = read(&s, "counter", for_update)?;
                        data(put_num(&s, "counter", v + 1))
                    });
                }
                s.close_ok();
            })
        })
        .collect();
    for h in handles {
        h.join().expect("counter thread");
    }
    s.open_ok();
    let v = num(s.get(b"counter").unwrap());
    s.close_ok();
    (v, Arc::try_unwrap(tally).expect("threads done"))
}

#[test]
fn no_lost_update_with_shared_reads_upgraded() {
    let dir = ffi_common::private_dir();
    let (v, t) = counter_workload(dir.path(), 4, 150, false);
    eprintln!("lost update, plain reads: counter {v}, {t:?}");
    assert_eq!(v, 600);
    assert_eq!(t.committed.load(Ordering::Relaxed), 600);
}

#[test]
fn no_lost_update_with_locking_reads() {
    let dir = ffi_common::private_dir();
    let (v, t) = counter_workload(dir.path(), 4, 150, true);
    eprintln!("lost update, locking reads: counter {v}, {t:?}");
    assert_eq!(v, 600);
    assert_eq!(
        t.deadlocks.load(Ordering::Relaxed),
        0,
        "locking reads never upgrade"
    );
}

/// The counter workload of one child process: `MMXA_ISO_CHILD=dir` runs 2 threads × 60
/// increments and prints how many committed.
const ENV_CHILD: &str = "MMXA_ISO_CHILD";

#[test]
fn no_lost_update_across_processes() {
    if let Ok(dir) = std::env::var(ENV_CHILD) {
        let (_, t) = counter_workload(Path::new(&dir), 2, 60, false);
        println!("committed {}", t.committed.load(Ordering::Relaxed));
        return;
    }
    let dir = ffi_common::private_dir();
    // This process keeps the store open throughout, so the children are peers of one store
    // that outlives each of them.
    let s = rm(dir.path(), "");
    s.open_ok();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "no_lost_update_across_processes", "--nocapture"])
                .env(ENV_CHILD, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut committed = 0;
    for c in children {
        let out = c.wait_with_output().expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {text}");
        let n: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("committed "))
            .unwrap_or_else(|| panic!("no count in: {text}"))
            .trim()
            .parse()
            .unwrap();
        committed += n;
    }
    assert_eq!(committed, 360);
    assert_eq!(num(s.get(b"counter").unwrap()), 360);
    s.close_ok();
}

// ---- read skew: transfers between two stores, audited -------------------------------------------

#[test]
fn audits_of_transfers_across_two_stores_always_see_the_total() {
    let seed = rng::seed("MMXA_ISO_SEED", "transfers");
    let (da, db) = (ffi_common::private_dir(), ffi_common::private_dir());
    // A deadlock that spans both stores is seen by neither store's detector (each knows only
    // its own locks, as in every XA RM): the lock timeout resolves it, so keep it short.
    let (a, b) = (
        rm(da.path(), "lock_timeout_ms=200"),
        rm(db.path(), "lock_timeout_ms=200"),
    );
    let accounts: Vec<(usize, String)> = (0..4)
        .map(|i| (0, format!("a{i}")))
        .chain((0..4).map(|i| (1, format!("b{i}"))))
        .collect();
    let stores = [a.clone(), b.clone()];
    let setup = Worker::new("setup");
    {
        let (stores, accounts) = (stores.clone(), accounts.clone());
        setup.run(move || {
            for s in &stores {
                s.open_ok();
            }
            for (st, name) in &accounts {
                seed_value(&stores[*st], name, "100");
            }
        });
    }
    let total: i64 = 100 * accounts.len() as i64;
    let tally = Arc::new(Tally::default());
    let audits = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let movers = 4;
    let mut handles = Vec::new();
    for t in 0..movers {
        let (stores, accounts, tally, done) = (
            stores.clone(),
            accounts.clone(),
            tally.clone(),
            done.clone(),
        );
        let mut rng = Rng::new(seed.wrapping_add(t as u64));
        handles.push(thread::spawn(move || {
            for s in &stores {
                s.open_ok();
            }
            let refs: Vec<&Rm> = stores.iter().collect();
            for _ in 0..80 {
                let from = rng.below(accounts.len() as u64) as usize;
                let mut to = rng.below(accounts.len() as u64 - 1) as usize;
                if to >= from {
                    to += 1;
                }
                let amount = rng.range(1, 20) as i64;
                // Half the movers read with plain (shared) reads and upgrade; half lock at once.
                let for_update = t % 2 == 0;
                transact(&refs, &format!("mv{t}"), &tally, || {
                    let (fs, fk) = (&stores[accounts[from].0], &accounts[from].1);
                    let (ts, tk) = (&stores[accounts[to].0], &accounts[to].1);
                    let f = read(fs, fk, for_update)?;
                    if f < amount {
                        return Err(Abort::Voluntary);
                    }
                    let v = read(ts, tk, for_update)?;
                    data(put_num(fs, fk, f - amount))?;
                    data(put_num(ts, tk, v + amount))
                });
            }
            for s in &stores {
                s.close_ok();
            }
            done.fetch_add(1, Ordering::Release);
        }));
    }
    {
        let (stores, accounts, tally, audits, done) = (
            stores.clone(),
            accounts.clone(),
            tally.clone(),
            audits.clone(),
            done.clone(),
        );
        handles.push(thread::spawn(move || {
            for s in &stores {
                s.open_ok();
            }
            let refs: Vec<&Rm> = stores.iter().collect();
            while done.load(Ordering::Acquire) < movers || audits.load(Ordering::Relaxed) < 20 {
                let seen = transact(&refs, "audit", &tally, || {
                    let mut sum = 0;
                    for (st, name) in &accounts {
                        sum += read(&stores[*st], name, false)?;
                    }
                    Ok(sum)
                })
                .expect("an audit never gives up");
                assert_eq!(seen, total, "an audit saw a total that never was committed");
                audits.fetch_add(1, Ordering::Relaxed);
            }
            for s in &stores {
                s.close_ok();
            }
        }));
    }
    for h in handles {
        h.join().expect("worker");
    }
    let final_total: i64 = setup.run(move || {
        accounts
            .iter()
            .map(|(st, name)| num(stores[*st].get(name.as_bytes()).unwrap()))
            .sum()
    });
    eprintln!(
        "transfers: {} audits, {:?}",
        audits.load(Ordering::Relaxed),
        tally
    );
    assert_eq!(final_total, total);
}

// ---- write skew ----------------------------------------------------------------------------------

#[test]
fn no_write_skew() {
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "");
    let rounds = 40;
    let barrier = Arc::new(Barrier::new(2));
    let tally = Arc::new(Tally::default());
    let setup = Worker::new("setup");
    {
        let s = s.clone();
        setup.run(move || s.open_ok());
    }
    let mut handles = Vec::new();
    for who in 0..2 {
        let (s, barrier, tally) = (s.clone(), barrier.clone(), tally.clone());
        handles.push(thread::spawn(move || {
            s.open_ok();
            let mine = if who == 0 { "x" } else { "y" };
            for round in 0..rounds {
                if who == 0 {
                    seed_value(&s, "x", "1");
                    seed_value(&s, "y", "1");
                }
                barrier.wait();
                let mut first = true;
                transact(&[&s], &format!("skew{who}"), &tally, || {
                    let x = read(&s, "x", false)?;
                    let y = read(&s, "y", false)?;
                    if first {
                        // Both have read both before either writes: the classic interleaving.
                        first = false;
                        barrier.wait();
                    }
                    if x + y >= 2 {
                        let v = if who == 0 { x } else { y };
                        data(put_num(&s, mine, v - 1))?;
                    }
                    Ok(())
                });
                barrier.wait();
                if who == 0 {
                    let x = num(s.get(b"x").unwrap());
                    let y = num(s.get(b"y").unwrap());
                    assert!(x + y >= 1, "round {round}: write skew, x + y = {}", x + y);
                }
                barrier.wait();
            }
            s.close_ok();
        }));
    }
    for h in handles {
        h.join().expect("skew thread");
    }
    eprintln!("write skew: {rounds} rounds, {tally:?}");
}

// ---- a serializability checker over random list-append histories ---------------------------------

/// One operation of a committed transaction, as it was observed.
#[derive(Debug, Clone)]
enum Obs {
    /// Read `key`, saw this list.
    Read(usize, Vec<u64>),
    /// Appended `elem` to `key` (having read the list before it).
    Append(usize, u64),
}

fn decode_list(v: Option<Vec<u8>>) -> Vec<u64> {
    let Some(v) = v else {
        return Vec::new();
    };
    let s = String::from_utf8(v).expect("UTF-8 list");
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|e| e.parse().expect("element")).collect()
}

fn encode_list(l: &[u64]) -> String {
    l.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Builds the dependency graph of `txns` (their observations) against the final lists and
/// returns a cycle, if there is one. Also fails on any observation no serial order can explain
/// (a read of a list that is not a prefix of the final one, an append lost or repeated).
fn find_cycle(
    txns: &[Vec<Obs>],
    finals: &BTreeMap<usize, Vec<u64>>,
) -> Result<Option<Vec<usize>>, String> {
    let mut writer: HashMap<u64, usize> = HashMap::new();
    for (t, ops) in txns.iter().enumerate() {
        for op in ops {
            if let Obs::Append(_, e) = op {
                writer.insert(*e, t);
            }
        }
    }
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); txns.len()];
    let mut add = |from: usize, to: usize| {
        if from != to && !edges[from].contains(&to) {
            edges[from].push(to);
        }
    };
    for (key, list) in finals {
        let mut seen = std::collections::HashSet::new();
        for (i, e) in list.iter().enumerate() {
            if !seen.insert(*e) {
                return Err(format!("k{key}: element {e} appended twice"));
            }
            let w = *writer.get(e).ok_or_else(|| {
                format!("k{key}: element {e} written by no committed transaction")
            })?;
            if i > 0 {
                add(writer[&list[i - 1]], w); // ww
            }
        }
    }
    for (t, ops) in txns.iter().enumerate() {
        for op in ops {
            match op {
                Obs::Read(key, seen) => {
                    let list = finals.get(key).map(Vec::as_slice).unwrap_or(&[]);
                    if !list.starts_with(seen) {
                        return Err(format!(
                            "T{t} read k{key} = {seen:?}, not a version of {list:?}"
                        ));
                    }
                    if let Some(last) = seen.last() {
                        add(writer[last], t); // wr
                    }
                    if let Some(next) = list.get(seen.len()) {
                        add(t, writer[next]); // rw (anti-dependency)
                    }
                }
                Obs::Append(key, e) => {
                    let list = finals.get(key).map(Vec::as_slice).unwrap_or(&[]);
                    if !list.contains(e) {
                        return Err(format!("T{t}'s append {e} to k{key} was lost"));
                    }
                }
            }
        }
    }
    // Depth-first search for a cycle.
    let mut state = vec![0u8; txns.len()];
    let mut stack_path = Vec::new();
    fn dfs(
        n: usize,
        edges: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[n] = 1;
        path.push(n);
        for &m in &edges[n] {
            if state[m] == 1 {
                let at = path.iter().position(|&p| p == m).expect("on path");
                return Some(path[at..].to_vec());
            }
            if state[m] == 0 {
                if let Some(c) = dfs(m, edges, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state[n] = 2;
        None
    }
    for n in 0..txns.len() {
        if state[n] == 0 {
            if let Some(c) = dfs(n, &edges, &mut state, &mut stack_path) {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

#[test]
fn the_checker_finds_a_lost_update_and_a_write_skew_cycle() {
    // T0 and T1 both read k0 = [] and append: one append is lost.
    let txns = vec![
        vec![Obs::Read(0, vec![]), Obs::Append(0, 1)],
        vec![Obs::Read(0, vec![]), Obs::Append(0, 2)],
    ];
    let finals = BTreeMap::from([(0, vec![2])]);
    assert!(find_cycle(&txns, &finals).unwrap_err().contains("lost"));
    // Write skew: T0 reads k1 = [] and appends to k0; T1 reads k0 = [] and appends to k1.
    let txns = vec![
        vec![Obs::Read(1, vec![]), Obs::Append(0, 1)],
        vec![Obs::Read(0, vec![]), Obs::Append(1, 2)],
    ];
    let finals = BTreeMap::from([(0, vec![1]), (1, vec![2])]);
    assert!(find_cycle(&txns, &finals).unwrap().is_some());
    // A serial history has no cycle.
    let txns = vec![
        vec![Obs::Read(1, vec![]), Obs::Append(0, 1)],
        vec![Obs::Read(0, vec![1]), Obs::Append(1, 2)],
    ];
    assert_eq!(find_cycle(&txns, &finals).unwrap(), None);
}

#[test]
fn random_list_append_histories_are_serializable() {
    let seed = rng::seed("MMXA_ISO_SEED", "list-append histories");
    const KEYS: usize = 4;
    const THREADS: usize = 4;
    const TXNS: usize = 60;
    let dir = ffi_common::private_dir();
    let s = rm(dir.path(), "");
    let history: Arc<std::sync::Mutex<Vec<Vec<Obs>>>> = Arc::default();
    let tally = Arc::new(Tally::default());
    let next_elem = Arc::new(AtomicU64::new(1));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, history, tally, next_elem) =
                (s.clone(), history.clone(), tally.clone(), next_elem.clone());
            let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(t as u64));
            thread::spawn(move || {
                s.open_ok();
                for _ in 0..TXNS {
                    // The plan: 1 to 4 operations on random keys; reads plain or locking.
                    let plan: Vec<(bool, usize, bool)> = (0..rng.range(1, 4))
                        .map(|_| {
                            (
                                rng.chance(50),
                                rng.below(KEYS as u64) as usize,
                                rng.chance(30),
                            )
                        })
                        .collect();
                    let obs = transact(&[&s], &format!("la{t}"), &tally, || {
                        let mut obs = Vec::new();
                        for &(append, key, for_update) in &plan {
                            let k = format!("k{key}");
                            let v = if for_update || append {
                                s.get_for_update(k.as_bytes())
                            } else {
                                s.get(k.as_bytes())
                            };
                            let mut list = decode_list(data(v)?);
                            if append {
                                let e = next_elem.fetch_add(1, Ordering::Relaxed);
                                list.push(e);
                                let rc = s.put(k.as_bytes(), encode_list(&list).as_bytes());
                                if rc != MMXA_OK {
                                    return Err(Abort::Data(rc));
                                }
                                obs.push(Obs::Append(key, e));
                            } else {
                                obs.push(Obs::Read(key, list));
                            }
                        }
                        Ok(obs)
                    })
                    .expect("a list-append never gives up");
                    history.lock().unwrap().push(obs);
                }
                s.close_ok();
            })
        })
        .collect();
    for h in handles {
        h.join().expect("list-append thread");
    }
    let finals: BTreeMap<usize, Vec<u64>> = Worker::new("final").run({
        let s = s.clone();
        move || {
            s.open_ok();
            (0..KEYS)
                .map(|k| (k, decode_list(s.get(format!("k{k}").as_bytes()).unwrap())))
                .collect()
        }
    });
    let txns = history.lock().unwrap().clone();
    eprintln!(
        "list-append: {} committed transactions, {:?}",
        txns.len(),
        tally
    );
    match find_cycle(&txns, &finals) {
        Ok(None) => {}
        Ok(Some(cycle)) => panic!(
            "not serializable: cycle {:?}: {:?}",
            cycle,
            cycle.iter().map(|&t| &txns[t]).collect::<Vec<_>>()
        ),
        Err(e) => panic!("not serializable: {e}"),
    }
}
