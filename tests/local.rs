//! Local transactions through the real C entry points: `mmxa_txn_begin`/`commit`/`rollback`,
//! `mmxa_txn_commit_and_chain`, `mmxa_txn_promote` and the nested-transaction calls.
//!
//! - atomicity of several operations (commit and rollback), own writes and savepoints inside;
//! - isolation: two local transactions in two threads (lock waits, timeouts and deadlocks that
//!   leave the transaction rollback-only, no lost update under concurrent increments);
//! - crash safety: a child process SIGKILLed during a stream of local transactions leaves each
//!   one whole or absent; a dead child's open local transaction is rolled back by a live peer,
//!   which then gets its locks; a promoted and prepared branch survives SIGKILL and commits;
//! - promotion, refused in each wrong state; chained and nested transactions;
//! - the protocol errors of every new call.

mod ffi_common;

use ffi_common::{begin, check, commit, fresh_xid, last_error, xid, Rm, Worker};
use mmxa::ffi::abi::Xid;
use mmxa::ffi::txn::*;
use mmxa::status::*;
use mmxa::xa::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Distinct rmids: the tests of this binary run in parallel in one process.
static NEXT_RMID: AtomicI32 = AtomicI32::new(1);

fn rm(dir: &Path, extra: &str) -> Rm {
    Rm::new(NEXT_RMID.fetch_add(1, Ordering::Relaxed), dir, extra)
}

fn tempdir() -> tempfile::TempDir {
    ffi_common::private_dir()
}

fn promote(r: &Rm, x: &Xid) -> i32 {
    // SAFETY: a valid XID on our stack for the duration of the call.
    unsafe { mmxa_txn_promote(r.rmid, x) }
}

fn begin_nested(r: &Rm) -> Result<u64, i32> {
    let mut level = 0u64;
    // SAFETY: `level` is a writable u64.
    match unsafe { mmxa_txn_begin_nested(r.rmid, &mut level) } {
        MMXA_OK => Ok(level),
        rc => Err(rc),
    }
}

#[test]
fn several_operations_commit_together_and_durably() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    let other = Worker::new("reader");
    r.open_ok();
    r.put_ok("gone", "old");
    r.put_ok("a", "old");
    {
        let r = r.clone();
        other.run(move || r.open_ok());
    }
    begin(&r);
    r.put_ok("a", "1");
    r.put_ok("b", "2");
    check("delete", r.delete(b"gone"), MMXA_OK);
    // The transaction sees its own writes.
    assert_eq!(r.get_str("a").as_deref(), Some("1"));
    assert_eq!(r.get_str("gone"), None);
    // Nobody else does before the commit (reads outside a transaction read committed data).
    let snapshot = |w: &Worker| {
        let r = r.clone();
        w.run(move || (r.get_str("a"), r.get_str("b"), r.get_str("gone")))
    };
    assert_eq!(
        snapshot(&other),
        (Some("old".into()), None, Some("old".into()))
    );
    commit(&r);
    assert_eq!(snapshot(&other), (Some("1".into()), Some("2".into()), None));
    // Durable: a rebuild from the log (every thread closed) has all of it.
    {
        let r = r.clone();
        other.run(move || r.close_ok());
    }
    r.close_ok();
    r.open_ok();
    assert_eq!(r.get_str("a").as_deref(), Some("1"));
    assert_eq!(r.get_str("b").as_deref(), Some("2"));
    assert_eq!(r.get_str("gone"), None);
    r.close_ok();
}

#[test]
fn rollback_undoes_every_operation_and_releases_locks() {
    let dir = tempdir();
    let r = rm(dir.path(), "lock_timeout_ms=100");
    r.open_ok();
    r.put_ok("a", "old");
    begin(&r);
    r.put_ok("a", "new");
    r.put_ok("b", "new");
    check("delete", r.delete(b"a"), MMXA_OK);
    check("mmxa_txn_rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("old"));
    assert_eq!(r.get_str("b"), None);
    // Its locks are gone: another thread writes the keys at once (a held lock would time out).
    let w = Worker::new("writer");
    let r2 = r.clone();
    w.run(move || {
        r2.open_ok();
        begin(&r2);
        r2.put_ok("a", "w");
        r2.put_ok("b", "w");
        commit(&r2);
        r2.close_ok();
    });
    assert_eq!(r.get_str("b").as_deref(), Some("w"));
    r.close_ok();
}

#[test]
fn savepoints_work_in_a_local_transaction() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    r.open_ok();
    begin(&r);
    r.put_ok("k", "1");
    let mut sp = 0u64;
    // SAFETY: `sp` is a writable u64.
    check(
        "mmxa_savepoint",
        unsafe { mmxa::ffi::data::mmxa_savepoint(r.rmid, &mut sp) },
        MMXA_OK,
    );
    r.put_ok("k", "2");
    r.put_ok("j", "2");
    check(
        "mmxa_rollback_to_savepoint",
        mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, sp),
        MMXA_OK,
    );
    assert_eq!(r.get_str("k").as_deref(), Some("1"));
    assert_eq!(r.get_str("j"), None);
    commit(&r);
    assert_eq!(r.get_str("k").as_deref(), Some("1"));
    assert_eq!(r.get_str("j"), None);
    r.close_ok();
}

#[test]
fn a_lock_wait_timeout_leaves_the_transaction_rollback_only() {
    let dir = tempdir();
    let r = rm(dir.path(), "lock_timeout_ms=50");
    r.open_ok();
    begin(&r);
    r.put_ok("k", "mine");
    let w = Worker::new("second");
    let r2 = r.clone();
    w.run(move || {
        r2.open_ok();
        begin(&r2);
        r2.put_ok("other", "x");
        // Serializable: even a read waits for the writer, and gives up.
        assert_eq!(r2.get(b"k"), Err(MMXA_ELOCKTIMEOUT));
        // Rollback-only from now on: data calls refused, the commit rolls back.
        assert_eq!(r2.put(b"z", b"z"), MMXA_EROLLBACK);
        check("commit", mmxa_txn_commit(r2.rmid), MMXA_EROLLBACK);
        check("commit again", mmxa_txn_commit(r2.rmid), MMXA_EPROTO);
        r2.close_ok();
    });
    commit(&r);
    assert_eq!(r.get_str("k").as_deref(), Some("mine"));
    assert_eq!(r.get_str("other"), None);
    r.close_ok();
}

#[test]
fn a_deadlock_between_local_transactions_rolls_one_back() {
    let dir = tempdir();
    // A long timeout: the first writer must still be waiting when the second asks.
    let r = rm(dir.path(), "lock_timeout_ms=60000");
    r.open_ok();
    r.put_ok("k", "0");
    let workers: Vec<Worker> = ["a", "b"].iter().map(|n| Worker::new(n)).collect();
    // Both read the key (shared locks), then both write it: whichever asks second closes the
    // cycle, gets MMXA_EDEADLOCK, and its commit rolls it back; the other one then goes on.
    for w in &workers {
        let r = r.clone();
        w.run(move || {
            r.open_ok();
            begin(&r);
            assert_eq!(r.get_str("k").as_deref(), Some("0"));
        });
    }
    let pending: Vec<_> = workers
        .iter()
        .zip(["a", "b"])
        .map(|(w, name)| {
            let r = r.clone();
            w.submit(move || {
                let rc = r.put(b"k", name.as_bytes());
                let outcome = match rc {
                    MMXA_OK => {
                        commit(&r);
                        "committed"
                    }
                    MMXA_EDEADLOCK => {
                        assert_eq!(r.put(b"other", b"x"), MMXA_EROLLBACK);
                        check("commit", mmxa_txn_commit(r.rmid), MMXA_EROLLBACK);
                        "rolled back"
                    }
                    rc => panic!("put: {rc}: {}", last_error()),
                };
                r.close_ok();
                (name, outcome)
            })
        })
        .collect();
    let mut outcomes: Vec<_> = pending.into_iter().map(|p| p.wait()).collect();
    outcomes.sort_by_key(|o| o.1);
    assert_eq!(outcomes[0].1, "committed", "{outcomes:?}");
    assert_eq!(outcomes[1].1, "rolled back", "{outcomes:?}");
    assert_eq!(r.get_str("k").as_deref(), Some(outcomes[0].0));
    assert_eq!(r.get_str("other"), None);
    r.close_ok();
}

#[test]
fn two_local_transactions_in_two_threads_lose_no_update() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    let threads = 4;
    let per_thread = 100;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || {
                r.open_ok();
                let mut retried = 0u64;
                for _ in 0..per_thread {
                    loop {
                        begin(&r);
                        // A plain read: shared locks upgraded by the write deadlock, retried.
                        let v = match r.get(b"counter") {
                            Ok(v) => {
                                v.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
                            }
                            Err(MMXA_EDEADLOCK | MMXA_ELOCKTIMEOUT) => {
                                check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
                                retried += 1;
                                continue;
                            }
                            Err(rc) => panic!("get: {rc}: {}", last_error()),
                        };
                        let n: u64 = v + 1;
                        match r.put(b"counter", n.to_string().as_bytes()) {
                            MMXA_OK => {}
                            MMXA_EDEADLOCK | MMXA_ELOCKTIMEOUT => {
                                // Rollback-only: the commit rolls it back.
                                check("commit", mmxa_txn_commit(r.rmid), MMXA_EROLLBACK);
                                retried += 1;
                                continue;
                            }
                            rc => panic!("put: {rc}: {}", last_error()),
                        }
                        commit(&r);
                        break;
                    }
                }
                r.close_ok();
                retried
            })
        })
        .collect();
    let retried: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    r.open_ok();
    let total = r.get_str("counter").unwrap();
    r.close_ok();
    eprintln!("counter {total}, {retried} retries");
    assert_eq!(total, (threads * per_thread).to_string());
}

#[test]
fn protocol_errors() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    // Not open in this thread.
    check("begin unopened", mmxa_txn_begin(r.rmid), MMXA_ENOTOPEN);
    check("commit unopened", mmxa_txn_commit(r.rmid), MMXA_ENOTOPEN);
    check(
        "rollback unopened",
        mmxa_txn_rollback(r.rmid),
        MMXA_ENOTOPEN,
    );
    check(
        "chain unopened",
        mmxa_txn_commit_and_chain(r.rmid),
        MMXA_ENOTOPEN,
    );
    check("promote unopened", promote(&r, &fresh_xid("u")), XAER_PROTO);
    assert_eq!(begin_nested(&r), Err(MMXA_ENOTOPEN));
    r.open_ok();
    // Nothing open.
    check("commit none", mmxa_txn_commit(r.rmid), MMXA_EPROTO);
    assert!(!last_error().is_empty());
    check("rollback none", mmxa_txn_rollback(r.rmid), MMXA_EPROTO);
    check("chain none", mmxa_txn_commit_and_chain(r.rmid), MMXA_EPROTO);
    check("promote none", promote(&r, &fresh_xid("n")), XAER_PROTO);
    assert_eq!(begin_nested(&r), Err(MMXA_EPROTO));
    check(
        "commit nested none",
        mmxa_txn_commit_nested(r.rmid),
        MMXA_EPROTO,
    );
    check(
        "rollback nested none",
        mmxa_txn_rollback_nested(r.rmid),
        MMXA_EPROTO,
    );
    // Twice.
    begin(&r);
    check("begin twice", mmxa_txn_begin(r.rmid), MMXA_EPROTO);
    // xa_start inside: the thread works outside any global transaction.
    let x = fresh_xid("s");
    check("xa_start in local", r.start(&x, TMNOFLAGS), XAER_OUTSIDE);
    // xa_close is refused while one is open.
    check("xa_close in local", r.close(), XAER_PROTO);
    r.put_ok("k", "v");
    commit(&r);
    // Inside a branch, a local transaction cannot begin.
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    check("begin in branch", mmxa_txn_begin(r.rmid), MMXA_EPROTO);
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_rollback", r.rollback(&x), XA_OK);
    // A local transaction is never listed by xa_recover.
    begin(&r);
    r.put_ok("k", "w");
    assert!(r.recover_all().is_empty());
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    assert_eq!(r.get_str("k").as_deref(), Some("v"));
    r.close_ok();
}

#[test]
fn commit_and_chain_begins_the_next_transaction() {
    let dir = tempdir();
    let r = rm(dir.path(), "lock_timeout_ms=50");
    r.open_ok();
    begin(&r);
    r.put_ok("a", "1");
    check("chain", mmxa_txn_commit_and_chain(r.rmid), MMXA_OK);
    // The next one is open: a second begin is refused, its writes roll back.
    check("begin", mmxa_txn_begin(r.rmid), MMXA_EPROTO);
    r.put_ok("b", "2");
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("1"));
    assert_eq!(r.get_str("b"), None);
    // A rollback-only one: the chained commit rolls back and opens nothing.
    let w = Worker::new("holder");
    let r2 = r.clone();
    w.run(move || {
        r2.open_ok();
        begin(&r2);
        r2.put_ok("held", "x");
    });
    begin(&r);
    r.put_ok("c", "3");
    assert_eq!(r.put(b"held", b"y"), MMXA_ELOCKTIMEOUT);
    check("chain", mmxa_txn_commit_and_chain(r.rmid), MMXA_EROLLBACK);
    check("commit", mmxa_txn_commit(r.rmid), MMXA_EPROTO);
    assert_eq!(r.get_str("c"), None);
    let r2 = r.clone();
    w.run(move || {
        commit(&r2);
        r2.close_ok();
    });
    r.close_ok();
}

#[test]
fn nested_transactions_in_a_local_transaction() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    r.open_ok();
    begin(&r);
    r.put_ok("a", "1");
    assert_eq!(begin_nested(&r), Ok(1));
    r.put_ok("a", "2");
    r.put_ok("b", "2");
    assert_eq!(begin_nested(&r), Ok(2));
    r.put_ok("c", "3");
    r.put_ok("a", "3");
    check("rollback nested", mmxa_txn_rollback_nested(r.rmid), MMXA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("2"));
    assert_eq!(r.get_str("c"), None);
    // Level 2 is gone; level 1 is still open.
    assert_eq!(begin_nested(&r), Ok(2));
    r.put_ok("d", "4");
    check("commit nested", mmxa_txn_commit_nested(r.rmid), MMXA_OK);
    check("commit nested", mmxa_txn_commit_nested(r.rmid), MMXA_OK);
    check("no level left", mmxa_txn_commit_nested(r.rmid), MMXA_EPROTO);
    assert_eq!(begin_nested(&r), Ok(1));
    r.put_ok("a", "9");
    check("rollback nested", mmxa_txn_rollback_nested(r.rmid), MMXA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("2"));
    // A savepoint set before a nested level: rolling back to it ends the level too.
    let mut sp = 0u64;
    // SAFETY: `sp` is a writable u64.
    check(
        "savepoint",
        unsafe { mmxa::ffi::data::mmxa_savepoint(r.rmid, &mut sp) },
        MMXA_OK,
    );
    assert_eq!(begin_nested(&r), Ok(1));
    r.put_ok("e", "5");
    check(
        "rollback to savepoint",
        mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, sp),
        MMXA_OK,
    );
    check("level ended", mmxa_txn_rollback_nested(r.rmid), MMXA_EPROTO);
    // A nested level is not a savepoint a caller can name.
    assert_eq!(begin_nested(&r), Ok(1));
    check(
        "nested id as savepoint",
        mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, (sp + 1) | 1 << 63),
        MMXA_EINVAL,
    );
    commit(&r);
    // The outer commit commits open nested levels' writes with it.
    assert_eq!(r.get_str("a").as_deref(), Some("2"));
    assert_eq!(r.get_str("b").as_deref(), Some("2"));
    assert_eq!(r.get_str("c"), None);
    assert_eq!(r.get_str("d").as_deref(), Some("4"));
    assert_eq!(r.get_str("e"), None);
    // Outside any transaction nothing nests.
    assert_eq!(begin_nested(&r), Err(MMXA_EPROTO));
    r.close_ok();
}

#[test]
fn nested_transactions_in_a_branch() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    r.open_ok();
    let x = fresh_xid("nest");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    r.put_ok("a", "1");
    assert_eq!(begin_nested(&r), Ok(1));
    r.put_ok("a", "2");
    r.put_ok("b", "2");
    check("rollback nested", mmxa_txn_rollback_nested(r.rmid), MMXA_OK);
    assert_eq!(begin_nested(&r), Ok(1));
    r.put_ok("c", "3");
    check("commit nested", mmxa_txn_commit_nested(r.rmid), MMXA_OK);
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_commit", r.commit(&x, TMONEPHASE), XA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("1"));
    assert_eq!(r.get_str("b"), None);
    assert_eq!(r.get_str("c").as_deref(), Some("3"));
    r.close_ok();
}

#[test]
fn a_promoted_transaction_is_an_ordinary_branch() {
    let dir = tempdir();
    let r = rm(dir.path(), "");
    r.open_ok();
    begin(&r);
    r.put_ok("a", "local");
    let x = fresh_xid("p");
    check("promote", promote(&r, &x), XA_OK);
    // Associated as after xa_start: more work, then the usual two phases.
    r.put_ok("b", "global");
    check("begin after promote", mmxa_txn_begin(r.rmid), MMXA_EPROTO);
    check("commit after promote", mmxa_txn_commit(r.rmid), MMXA_EPROTO);
    check("promote again", promote(&r, &fresh_xid("q")), XAER_PROTO);
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_prepare", r.prepare(&x), XA_OK);
    assert_eq!(r.recover_all().len(), 1);
    assert_eq!(r.get_str("a"), None);
    check("xa_commit", r.commit(&x, TMNOFLAGS), XA_OK);
    assert_eq!(r.get_str("a").as_deref(), Some("local"));
    assert_eq!(r.get_str("b").as_deref(), Some("global"));
    r.close_ok();
}

#[test]
fn promotion_is_refused_in_each_wrong_state() {
    let dir = tempdir();
    let r = rm(dir.path(), "lock_timeout_ms=50");
    r.open_ok();
    // NULL, the null XID, bad lengths: XAER_INVAL, the transaction stays open.
    begin(&r);
    r.put_ok("k", "1");
    // SAFETY: NULL is allowed and refused.
    check(
        "NULL xid",
        unsafe { mmxa_txn_promote(r.rmid, std::ptr::null()) },
        XAER_INVAL,
    );
    check("null XID", promote(&r, &xid(-1, b"g", b"b")), XAER_INVAL);
    let mut bad = fresh_xid("bad");
    bad.gtrid_length = 65;
    check("gtrid 65", promote(&r, &bad), XAER_INVAL);
    bad.gtrid_length = 0;
    check("gtrid 0", promote(&r, &bad), XAER_INVAL);
    // A duplicate XID: XAER_DUPID, and the transaction stays open.
    let taken = fresh_xid("taken");
    let w = Worker::new("other");
    {
        let (r2, taken) = (r.clone(), taken);
        w.run(move || {
            r2.open_ok();
            check("xa_start", r2.start(&taken, TMNOFLAGS), XA_OK);
            check("xa_end", r2.end(&taken, TMSUCCESS), XA_OK);
        });
    }
    check("duplicate", promote(&r, &taken), XAER_DUPID);
    r.put_ok("k2", "2");
    commit(&r);
    assert_eq!(r.get_str("k").as_deref(), Some("1"));
    assert_eq!(r.get_str("k2").as_deref(), Some("2"));
    // Rollback-only (a lock wait timed out): an XA_RB* code, and it is rolled back.
    {
        let r2 = r.clone();
        w.run(move || {
            begin(&r2);
            r2.put_ok("held", "x");
        });
    }
    begin(&r);
    r.put_ok("k", "lost");
    assert_eq!(r.put(b"held", b"y"), MMXA_ELOCKTIMEOUT);
    let x = fresh_xid("rb");
    check("rollback-only", promote(&r, &x), XA_RBTIMEOUT);
    check("gone", mmxa_txn_commit(r.rmid), MMXA_EPROTO);
    check("no such branch", r.end(&x, TMSUCCESS), XAER_NOTA);
    assert_eq!(r.get_str("k").as_deref(), Some("1"));
    {
        let (r2, taken) = (r.clone(), taken);
        w.run(move || {
            commit(&r2);
            check("xa_rollback", r2.rollback(&taken), XA_OK);
            r2.close_ok();
        });
    }
    r.close_ok();
}

// ---- child processes ---------------------------------------------------------------------------

/// The child's store directory; its presence makes a test binary a child.
const ENV_DIR: &str = "MMXA_LOCAL_CHILD_DIR";
/// What the child does: `stream`, `hold`, `prepare`.
const ENV_MODE: &str = "MMXA_LOCAL_CHILD_MODE";
/// The first transaction number of a `stream` child.
const ENV_FIRST: &str = "MMXA_LOCAL_CHILD_FIRST";
/// Lines of ours carry this mark (the test harness prints too).
const MARK: &str = "@@local ";
/// Keys per streamed transaction.
const KEYS_PER_TXN: u64 = 4;
/// The settings of the `hold` test: a long lock timeout, so the parent's lock comes from the
/// reaper (within about a second), not from a timeout.
const HOLD_SETTINGS: &str = "lock_timeout_ms=30000";
/// How long the parent waits for a line from the child; only a failing test waits that long.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

fn child_check(what: &str, got: i32, want: i32) {
    if got != want {
        say(&format!("FAIL {what}: {got} ({})", last_error()));
        std::process::exit(1);
    }
}

fn stream_key(i: u64, j: u64) -> String {
    format!("t{i}-{j}")
}

/// The child: `stream` commits local transactions of [`KEYS_PER_TXN`] keys each (numbered from
/// `first`) and acknowledges each; `hold` writes a key in a local transaction and waits; `prepare`
/// promotes a local transaction, prepares it and waits.
fn child() -> ! {
    let dir = PathBuf::from(std::env::var_os(ENV_DIR).unwrap());
    let mode = std::env::var(ENV_MODE).unwrap();
    // The parent's settings: peers of one store must agree on them.
    let r = Rm::new(1, &dir, if mode == "hold" { HOLD_SETTINGS } else { "" });
    child_check("xa_open", r.open(), XA_OK);
    match mode.as_str() {
        "stream" => {
            let first: u64 = std::env::var(ENV_FIRST).unwrap().parse().unwrap();
            for i in first.. {
                child_check("begin", mmxa_txn_begin(r.rmid), MMXA_OK);
                for j in 0..KEYS_PER_TXN {
                    let k = stream_key(i, j);
                    child_check("put", r.put(k.as_bytes(), b"v"), MMXA_OK);
                }
                child_check("commit", mmxa_txn_commit(r.rmid), MMXA_OK);
                say(&format!("committed {i}"));
            }
            unreachable!()
        }
        "hold" => {
            child_check("begin", mmxa_txn_begin(r.rmid), MMXA_OK);
            child_check("put", r.put(b"held", b"child"), MMXA_OK);
            child_check("put", r.put(b"other", b"child"), MMXA_OK);
            say("holding");
        }
        "prepare" => {
            child_check("begin", mmxa_txn_begin(r.rmid), MMXA_OK);
            child_check("put", r.put(b"p1", b"local"), MMXA_OK);
            let x = xid(0x10c, b"promoted", b"b");
            // SAFETY: a valid XID on our stack.
            child_check("promote", unsafe { mmxa_txn_promote(r.rmid, &x) }, XA_OK);
            child_check("put", r.put(b"p2", b"global"), MMXA_OK);
            child_check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
            child_check("xa_prepare", r.prepare(&x), XA_OK);
            say("prepared");
        }
        m => panic!("unknown mode {m}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child process, SIGKILLed and reaped if the test fails while it runs.
struct ChildGuard(Child);

impl ChildGuard {
    fn sigkill(&mut self) {
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let status = self.0.wait().expect("wait for the killed child");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child died by SIGKILL"
        );
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: as in `sigkill`; still running, so not reaped.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// Starts a child of `test` in `mode`; returns it and its lines of ours.
fn spawn(test: &str, dir: &Path, mode: &str, first: u64) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir)
            .env(ENV_MODE, mode)
            .env(ENV_FIRST, first.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness's "test NAME ... " may precede the first line on the same line.
            if let Some((_, msg)) = line.split_once(MARK) {
                if tx.send(msg.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

fn next_line(rx: &mpsc::Receiver<String>) -> String {
    let line = rx
        .recv_timeout(LINE_TIMEOUT)
        .expect("a line from the child");
    assert!(!line.starts_with("FAIL"), "the child failed: {line}");
    line
}

#[test]
fn local_transactions_are_atomic_across_sigkill() {
    if std::env::var_os(ENV_DIR).is_some() {
        child();
    }
    let dir = tempdir();
    let r = rm(dir.path(), "");
    let mut first = 0;
    for round in 0..3u64 {
        let (mut child, rx) = spawn(
            "local_transactions_are_atomic_across_sigkill",
            dir.path(),
            "stream",
            first,
        );
        // Killed while it is in the middle of later transactions.
        let target = 5 + 7 * round;
        let mut acked = 0;
        while acked < target {
            let line = next_line(&rx);
            assert_eq!(line, format!("committed {}", first + acked));
            acked += 1;
        }
        child.sigkill();
        // Lines already in the pipe count as acknowledged too.
        // (The reader thread ends at the pipe's end, now that the child is dead.)
        while let Ok(line) = rx.recv_timeout(LINE_TIMEOUT) {
            assert_eq!(line, format!("committed {}", first + acked));
            acked += 1;
        }
        r.open_ok();
        let mut i = first;
        loop {
            let present: Vec<bool> = (0..KEYS_PER_TXN)
                .map(|j| r.get_str(&stream_key(i, j)).is_some())
                .collect();
            assert!(
                present.iter().all(|&p| p) || present.iter().all(|&p| !p),
                "transaction {i} is partly there: {present:?}"
            );
            if !present[0] {
                assert!(
                    i >= first + acked,
                    "acknowledged transaction {i} is missing"
                );
                break;
            }
            i += 1;
        }
        // Nothing after the first absent one either.
        for j in 0..KEYS_PER_TXN {
            assert_eq!(r.get_str(&stream_key(i + 1, j)), None);
        }
        r.close_ok();
        first = i + 1;
    }
}

#[test]
fn a_dead_process_local_transaction_is_rolled_back_by_a_peer() {
    if std::env::var_os(ENV_DIR).is_some() {
        child();
    }
    let dir = tempdir();
    let r = rm(dir.path(), HOLD_SETTINGS);
    r.open_ok();
    r.put_ok("other", "before");
    let (mut child, rx) = spawn(
        "a_dead_process_local_transaction_is_rolled_back_by_a_peer",
        dir.path(),
        "hold",
        0,
    );
    assert_eq!(next_line(&rx), "holding");
    child.sigkill();
    begin(&r);
    // Waits for the dead child's lock until a reaper rolls its transaction back.
    assert_eq!(r.get_str("held"), None);
    r.put_ok("held", "parent");
    commit(&r);
    assert_eq!(r.get_str("other").as_deref(), Some("before"));
    assert_eq!(r.get_str("held").as_deref(), Some("parent"));
    r.close_ok();
}

#[test]
fn a_promoted_prepared_branch_survives_sigkill() {
    if std::env::var_os(ENV_DIR).is_some() {
        child();
    }
    let dir = tempdir();
    let r = rm(dir.path(), "lock_timeout_ms=50");
    let (mut child, rx) = spawn(
        "a_promoted_prepared_branch_survives_sigkill",
        dir.path(),
        "prepare",
        0,
    );
    assert_eq!(next_line(&rx), "prepared");
    child.sigkill();
    r.open_ok();
    let x = xid(0x10c, b"promoted", b"b");
    assert_eq!(r.recover_all().len(), 1);
    assert_eq!(
        ffi_common::xid_key(&r.recover_all()[0]),
        ffi_common::xid_key(&x)
    );
    // Still locked: a local transaction's write waits and times out.
    begin(&r);
    assert_eq!(r.put(b"p1", b"parent"), MMXA_ELOCKTIMEOUT);
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    check("xa_commit", r.commit(&x, TMNOFLAGS), XA_OK);
    assert_eq!(r.get_str("p1").as_deref(), Some("local"));
    assert_eq!(r.get_str("p2").as_deref(), Some("global"));
    assert!(r.recover_all().is_empty());
    r.close_ok();
}

/// A transaction's size is not bounded by the shared state's journal: commits and rollbacks of
/// 20,000 writes, as a local transaction and as a two-phase XA branch, and a rollback to a
/// savepoint that undoes 20,000 writes.
#[test]
fn transactions_of_many_writes_commit_and_roll_back() {
    const N: usize = 20_000;
    let dir = tempdir();
    let r = rm(dir.path(), "");
    r.open_ok();
    let put_all = |r: &Rm, tag: &str| {
        for i in 0..N {
            check(
                "put",
                r.put(format!("{tag}{i:06}").as_bytes(), b"v"),
                MMXA_OK,
            );
        }
    };
    begin(&r);
    put_all(&r, "a");
    commit(&r);
    begin(&r);
    put_all(&r, "b");
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    let x = fresh_xid("big");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    let mut sp = 0u64;
    // SAFETY: `sp` is writable.
    check(
        "savepoint",
        unsafe { mmxa::ffi::data::mmxa_savepoint(r.rmid, &mut sp) },
        MMXA_OK,
    );
    put_all(&r, "c");
    check(
        "rollback to savepoint",
        mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, sp),
        MMXA_OK,
    );
    put_all(&r, "d");
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_prepare", r.prepare(&x), XA_OK);
    check("xa_commit", r.commit(&x, TMNOFLAGS), XA_OK);
    let y = fresh_xid("big");
    check("xa_start", r.start(&y, TMNOFLAGS), XA_OK);
    for i in 0..N {
        check("delete", r.delete(format!("a{i:06}").as_bytes()), MMXA_OK);
    }
    check("xa_end", r.end(&y, TMSUCCESS), XA_OK);
    check("xa_prepare", r.prepare(&y), XA_OK);
    check("xa_rollback", r.rollback(&y), XA_OK);
    let count = |p: &str| {
        r.scan(Some(p.as_bytes()), None, mmxa::status::MMXA_SCAN_PREFIX)
            .expect("scan")
            .len()
    };
    assert_eq!(
        (count("a"), count("b"), count("c"), count("d")),
        (N, 0, 0, N)
    );
    // And after a rebuild from the log.
    r.close_ok();
    r.open_ok();
    assert_eq!(
        (count("a"), count("b"), count("c"), count("d")),
        (N, 0, 0, N)
    );
    r.close_ok();
}
