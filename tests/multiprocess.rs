//! Many processes, one store, every one of them a peer: what one process does is seen and can
//! be finished by any other, and the death (SIGKILL, or a crash point inside a section) or the
//! stop (SIGSTOP) of one of them costs the others nothing but the locks its own unfinished work
//! holds. Every process is real.
//!
//! The tests drive "XA shells" (`tests/shell`: this binary re-executed, making XA and data calls
//! through the C entry points, one command per line), so each test is a deterministic script
//! across processes; a blocking call is sent and its answer read later. Two workloads are this
//! file's own shell commands (see [`extra`]): `work` (the crash rounds' mix of one- and
//! two-phase commits, branches left in doubt for a while, heuristic decisions and savepoints,
//! which keeps the log rolling and reclaiming over small segments) and `transfer` (the torture's
//! two-phase transfers between two stores). A worker prints a line per acknowledgement; the
//! test process keeps the books and checks the store against them.
//!
//! - No process is special: the cross-process XA scenarios (`a_store_outlives_*` to
//!   `processes_open_and_close_in_turn_*`).
//! - A SIGKILLed process: only its threads' associations end (as with `TMFAIL`), promptly, and
//!   only the branches they leave without association are rolled back
//!   (`a_killed_process_*`, `a_killed_waiter_*`).
//! - A process dying at every crash point inside a section, while others work
//!   (`a_process_dying_at_any_crash_point_costs_the_others_nothing`).
//! - Several workers SIGKILLed at random, in turn
//!   (`sigkill_of_any_worker_stops_no_one_and_loses_nothing`).
//! - A stopped process (`a_stopped_process_delays_only_the_keys_it_holds`).
//! - Isolation across processes (`a_read_lock_*`, `readers_upgrading_*`).
//! - Access: directory and file modes (`a_store_directory_*`, `store_files_have_*`).
//! - Forks and settings (`a_forked_child_*`,
//!   `processes_with_other_settings_are_refused`).
//!
//! Timing is never asserted; a few answers have a liveness bound far below the 60 s lock
//! timeout ([`PROMPT`]), which only a lock nobody releases (until the timeout) can exceed.

mod ffi_common;
mod rng;
mod shell;

use ffi_common::{last_error, Rm};
use mmxa::status::*;
use mmxa::xa::*;
use rng::Rng;
use shell::{open_string, say, Shell};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A liveness bound for an answer that must not wait out a 60 s lock timeout (a dead holder's
/// lock is released within about 200 ms; a deadlock is answered at once).
const PROMPT: Duration = Duration::from_secs(20);

/// Serves this file's shell commands in a shell child; returns in the test process.
fn serve() {
    shell::shell_if_child_with(extra);
}

use ffi_common::private_dir;

/// A private temporary directory on a tmpfs where there is one (the crash rounds and the
/// torture sync often: cheap there), else as [`private_dir`].
fn fast_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(shm)
        {
            return d;
        }
    }
    private_dir()
}

/// Spawns `names` shells and opens the store `info` as rmid 1 in each, in that order.
fn open_all(test: &str, info: &str, names: &[&str]) -> Vec<Shell> {
    names
        .iter()
        .map(|n| {
            let mut s = Shell::spawn(test, n);
            s.rc(&format!("open 1 {info}"), XA_OK);
            s
        })
        .collect()
}

// ---- 1. no process is special --------------------------------------------------------------

/// P1 opens, P2 opens, P1 closes and exits: P2 goes on with the store, and P3, which opens it
/// then, prepares the branch P2 left idle and commits it; every process sees the data.
#[test]
fn a_store_outlives_the_process_that_opened_it() {
    const T: &str = "a_store_outlives_the_process_that_opened_it";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("put 1 c from-p1", MMXA_OK);
    p[0].rc("start 1 x1 0", XA_OK);
    p[0].rc("put 1 k1 v1", MMXA_OK);
    p[0].rc(&format!("end 1 x1 {TMSUCCESS}"), XA_OK);
    p[0].rc("prepare 1 x1", XA_OK);
    p[0].rc("close 1", XA_OK);
    assert!(p[0].finish().success());
    // P2 goes on: its reads, writes and completions need nothing of P1.
    assert_eq!(p[1].get(1, "c").as_deref(), Some("from-p1"));
    assert_eq!(p[1].recover(1), vec!["x1".to_string()]);
    p[1].rc(&format!("commit 1 x1 {TMNOFLAGS}"), XA_OK);
    p[1].rc("start 1 x2 0", XA_OK);
    p[1].rc("put 1 k2 v2", MMXA_OK);
    p[1].rc(&format!("end 1 x2 {TMSUCCESS}"), XA_OK);
    let mut p3 = Shell::spawn(T, "p3");
    p3.rc(&format!("open 1 {info}"), XA_OK);
    p3.rc("prepare 1 x2", XA_OK);
    assert_eq!(p3.recover(1), vec!["x2".to_string()]);
    assert_eq!(p[1].recover(1), vec!["x2".to_string()]);
    assert_eq!(p3.get(1, "k2"), None, "prepared, not committed");
    p3.rc(&format!("commit 1 x2 {TMNOFLAGS}"), XA_OK);
    for s in [&mut p[1], &mut p3] {
        assert_eq!(s.get(1, "k1").as_deref(), Some("v1"));
        assert_eq!(s.get(1, "k2").as_deref(), Some("v2"));
        assert!(s.recover(1).is_empty());
    }
}

/// A branch ended (idle) in P1 survives P1's exit — without `xa_close`, as a process that just
/// returns from `main` — and P2 commits it; a branch ended in P1 after `xa_close` of another
/// thread of control likewise.
#[test]
fn an_idle_branch_survives_its_process_exit_and_commits_in_another() {
    const T: &str = "an_idle_branch_survives_its_process_exit_and_commits_in_another";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("start 1 one 0", XA_OK);
    p[0].rc("put 1 k1 one", MMXA_OK);
    p[0].rc(&format!("end 1 one {TMSUCCESS}"), XA_OK);
    p[0].rc("start 1 two 0", XA_OK);
    p[0].rc("put 1 k2 two", MMXA_OK);
    p[0].rc(&format!("end 1 two {TMSUCCESS}"), XA_OK);
    assert!(p[0].finish().success());
    // Still idle, still holding its locks, invisible.
    assert_eq!(p[1].get(1, "k1"), None);
    p[1].rc(&format!("commit 1 one {TMONEPHASE}"), XA_OK);
    p[1].rc("prepare 1 two", XA_OK);
    p[1].rc(&format!("commit 1 two {TMNOFLAGS}"), XA_OK);
    assert_eq!(p[1].get(1, "k1").as_deref(), Some("one"));
    assert_eq!(p[1].get(1, "k2").as_deref(), Some("two"));
    // The locks went with the commits.
    p[1].rc("start 1 three 0", XA_OK);
    p[1].rc("put 1 k1 three", MMXA_OK);
    p[1].rc("put 1 k2 three", MMXA_OK);
    p[1].rc(&format!("end 1 three {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 1 three {TMONEPHASE}"), XA_OK);
}

/// Work in P1, prepare in P2 (what P1 ended), commit in P3; and a rollback of P1's prepared
/// branch from P3.
#[test]
fn a_branch_ended_in_one_process_is_prepared_in_another_and_committed_in_a_third() {
    const T: &str = "a_branch_ended_in_one_process_is_prepared_in_another_and_committed_in_a_third";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    p[0].rc("start 1 x 0", XA_OK);
    p[0].rc("put 1 k v", MMXA_OK);
    p[0].rc("del 1 gone", MMXA_NOTFOUND);
    p[0].rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    p[1].rc("prepare 1 x", XA_OK);
    p[1].rc("prepare 1 x", XAER_PROTO);
    assert_eq!(p[0].get(1, "k"), None, "prepared, not committed");
    p[2].rc(&format!("commit 1 x {TMONEPHASE}"), XAER_PROTO);
    p[2].rc(&format!("commit 1 x {TMNOFLAGS}"), XA_OK);
    for s in p.iter_mut() {
        assert_eq!(s.get(1, "k").as_deref(), Some("v"));
    }
    p[2].rc(&format!("commit 1 x {TMNOFLAGS}"), XAER_NOTA);
    p[0].rc("start 1 y 0", XA_OK);
    p[0].rc("put 1 k w", MMXA_OK);
    p[0].rc(&format!("end 1 y {TMSUCCESS}"), XA_OK);
    p[0].rc("prepare 1 y", XA_OK);
    p[2].rc("rollback 1 y", XA_OK);
    assert_eq!(p[1].get(1, "k").as_deref(), Some("v"));
    p[1].rc("put 1 k after", MMXA_OK);
}

/// `xa_recover` lists an in-doubt branch exactly once in every process, prepared anywhere, and
/// in none once it is committed; a heuristically completed one until `xa_forget`.
#[test]
fn xa_recover_lists_an_in_doubt_branch_once_in_every_process() {
    const T: &str = "xa_recover_lists_an_in_doubt_branch_once_in_every_process";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    for (i, g) in ["a", "b", "c"].iter().enumerate() {
        p[i].rc(&format!("start 1 {g} 0"), XA_OK);
        p[i].rc(&format!("put 1 k{g} {g}"), MMXA_OK);
        p[i].rc(&format!("end 1 {g} {TMSUCCESS}"), XA_OK);
        p[(i + 1) % 3].rc(&format!("prepare 1 {g}"), XA_OK);
    }
    let all: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    for s in p.iter_mut() {
        assert_eq!(s.recover(1), all);
        assert_eq!(s.run("recover 1"), "3 a,b,c", "once each, in XID order");
    }
    p[0].rc("heur 1 b commit", XA_OK);
    p[1].rc(&format!("commit 1 a {TMNOFLAGS}"), XA_OK);
    p[2].rc("rollback 1 c", XA_OK);
    for s in p.iter_mut() {
        assert_eq!(s.recover(1), vec!["b".to_string()]);
    }
    p[2].rc(&format!("commit 1 b {TMNOFLAGS}"), XA_HEURCOM);
    p[1].rc("forget 1 b", XA_OK);
    for s in p.iter_mut() {
        assert!(s.recover(1).is_empty());
        assert_eq!(s.get(1, "ka").as_deref(), Some("a"));
        assert_eq!(s.get(1, "kb").as_deref(), Some("b"));
        assert_eq!(s.get(1, "kc"), None);
    }
}

/// `TMJOIN` from another process: one branch, each sees the other's writes; it cannot be
/// prepared while either is still associated.
#[test]
fn tmjoin_from_another_process_shares_one_branch() {
    const T: &str = "tmjoin_from_another_process_shares_one_branch";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    p[0].rc("start 1 j 0", XA_OK);
    p[0].rc("put 1 ja 1", MMXA_OK);
    p[1].rc("start 1 j 0", XAER_DUPID);
    p[1].rc(&format!("start 1 j {TMJOIN}"), XA_OK);
    p[1].rc("put 1 jb 2", MMXA_OK);
    assert_eq!(p[1].get(1, "ja").as_deref(), Some("1"));
    assert_eq!(p[0].get(1, "jb").as_deref(), Some("2"));
    // One branch, one set of locks: both write the same key without waiting.
    p[0].rc("put 1 jc from-p1", MMXA_OK);
    p[1].rc("put 1 jc from-p2", MMXA_OK);
    assert_eq!(p[2].get(1, "ja"), None);
    p[0].rc(&format!("end 1 j {TMSUCCESS}"), XA_OK);
    p[2].rc("prepare 1 j", XAER_PROTO);
    p[1].rc(&format!("end 1 j {TMSUCCESS}"), XA_OK);
    p[2].rc("prepare 1 j", XA_OK);
    p[2].rc(&format!("commit 1 j {TMNOFLAGS}"), XA_OK);
    assert_eq!(p[0].get(1, "jb").as_deref(), Some("2"));
    assert_eq!(p[2].get(1, "jc").as_deref(), Some("from-p2"));
}

/// `TMSUSPEND|TMMIGRATE` in P1, `TMRESUME` in P2 (once: the migrated association is taken),
/// commit in P3; a plain `TMSUSPEND` belongs to its thread of control: another process cannot
/// resume it.
#[test]
fn a_branch_suspended_for_migration_is_resumed_in_another_process() {
    const T: &str = "a_branch_suspended_for_migration_is_resumed_in_another_process";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    p[0].rc("start 1 m 0", XA_OK);
    p[0].rc("put 1 mc 3", MMXA_OK);
    p[0].rc(&format!("end 1 m {}", TMSUSPEND | TMMIGRATE), XA_OK);
    p[2].rc(&format!("commit 1 m {TMONEPHASE}"), XAER_PROTO);
    p[1].rc(&format!("start 1 m {TMRESUME}"), XA_OK);
    p[2].rc(&format!("start 1 m {TMRESUME}"), XAER_PROTO);
    p[1].rc("put 1 md 4", MMXA_OK);
    assert_eq!(p[1].get(1, "mc").as_deref(), Some("3"));
    p[1].rc(&format!("end 1 m {TMSUCCESS}"), XA_OK);
    p[2].rc(&format!("commit 1 m {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(1, "md").as_deref(), Some("4"));

    p[0].rc("start 1 s 0", XA_OK);
    p[0].rc(&format!("end 1 s {TMSUSPEND}"), XA_OK);
    p[1].rc(&format!("start 1 s {TMRESUME}"), XAER_PROTO);
    p[0].rc(&format!("start 1 s {TMRESUME}"), XA_OK);
    p[0].rc(&format!("end 1 s {TMSUCCESS}"), XA_OK);
    p[1].rc("rollback 1 s", XA_OK);
}

/// A one-phase commit (or a prepare, or a rollback by the associated thread's process) while
/// another process is still associated with the branch is `XAER_PROTO`, and changes nothing.
#[test]
fn one_phase_commit_while_another_process_is_associated_is_a_protocol_error() {
    const T: &str = "one_phase_commit_while_another_process_is_associated_is_a_protocol_error";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("start 1 x 0", XA_OK);
    p[0].rc("put 1 k v", MMXA_OK);
    p[1].rc(&format!("commit 1 x {TMONEPHASE}"), XAER_PROTO);
    p[1].rc("prepare 1 x", XAER_PROTO);
    p[1].rc(&format!("end 1 x {TMSUCCESS}"), XAER_PROTO);
    p[0].rc("rollback 1 x", XAER_PROTO);
    // Nothing changed: P1 goes on and commits.
    p[0].rc("put 1 k2 v2", MMXA_OK);
    p[0].rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 1 x {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("v"));
    assert_eq!(p[1].get(1, "k2").as_deref(), Some("v2"));
    // Also while a suspended (not migrated) association remains in P1.
    p[0].rc("start 1 y 0", XA_OK);
    p[0].rc("put 1 k3 v3", MMXA_OK);
    p[0].rc(&format!("end 1 y {TMSUSPEND}"), XA_OK);
    p[1].rc(&format!("commit 1 y {TMONEPHASE}"), XAER_PROTO);
    p[0].rc(&format!("start 1 y {TMRESUME}"), XA_OK);
    p[0].rc(&format!("end 1 y {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 1 y {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(1, "k3").as_deref(), Some("v3"));
}

/// A commit in one process is visible at once in every other; uncommitted and prepared writes
/// in none but the writer's branch; deletes likewise; one-operation writes at once.
#[test]
fn a_commit_is_visible_in_every_process_and_uncommitted_writes_in_none() {
    const T: &str = "a_commit_is_visible_in_every_process_and_uncommitted_writes_in_none";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    p[0].rc("put 1 local one-op", MMXA_OK);
    assert_eq!(p[2].get(1, "local").as_deref(), Some("one-op"));
    p[0].rc("start 1 x 0", XA_OK);
    p[0].rc("put 1 k v1", MMXA_OK);
    p[0].rc("del 1 local", MMXA_OK);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("v1"), "own write");
    assert_eq!(p[0].get(1, "local"), None, "own delete");
    for s in p[1..].iter_mut() {
        assert_eq!(s.get(1, "k"), None);
        assert_eq!(s.get(1, "local").as_deref(), Some("one-op"));
    }
    p[0].rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    p[1].rc("prepare 1 x", XA_OK);
    assert_eq!(p[2].get(1, "k"), None, "prepared");
    p[2].rc(&format!("commit 1 x {TMNOFLAGS}"), XA_OK);
    for s in p.iter_mut() {
        assert_eq!(s.get(1, "k").as_deref(), Some("v1"));
        assert_eq!(s.get(1, "local"), None);
    }
}

/// A lock wait across processes: a writer waits for another process's branch and gets the key
/// when that branch commits (seeing its value afterwards) or rolls back.
#[test]
fn a_lock_wait_across_processes_ends_with_the_holders_branch() {
    const T: &str = "a_lock_wait_across_processes_ends_with_the_holders_branch";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("put 1 k v0", MMXA_OK);
    p[1].rc("start 1 h 0", XA_OK);
    p[1].rc("put 1 k v1", MMXA_OK);
    p[0].rc("start 1 w 0", XA_OK);
    p[0].send("put 1 k v2");
    assert_eq!(p[1].get(1, "k").as_deref(), Some("v1"));
    p[1].rc(&format!("end 1 h {TMSUCCESS}"), XA_OK);
    p[1].rc("prepare 1 h", XA_OK);
    p[1].rc(&format!("commit 1 h {TMNOFLAGS}"), XA_OK);
    assert_eq!(
        p[0].recv_within(PROMPT, "the waiting put"),
        MMXA_OK.to_string()
    );
    assert_eq!(p[0].get(1, "k").as_deref(), Some("v2"), "own write");
    assert_eq!(p[1].get(1, "k").as_deref(), Some("v1"), "committed so far");
    p[0].rc(&format!("end 1 w {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 w {TMONEPHASE}"), XA_OK);
    assert_eq!(p[1].get(1, "k").as_deref(), Some("v2"));
    // A rollback releases the lock too.
    p[1].rc("start 1 h2 0", XA_OK);
    p[1].rc("put 1 k v3", MMXA_OK);
    p[0].rc("start 1 w2 0", XA_OK);
    p[0].send("del 1 k");
    p[1].rc(&format!("end 1 h2 {TMSUCCESS}"), XA_OK);
    p[1].rc("rollback 1 h2", XA_OK);
    assert_eq!(
        p[0].recv_within(PROMPT, "the waiting delete"),
        MMXA_OK.to_string()
    );
    p[0].rc(&format!("end 1 w2 {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 w2 {TMONEPHASE}"), XA_OK);
    assert_eq!(p[1].get(1, "k"), None);
}

/// A deadlock across processes is detected, not waited out: the request that closes the cycle
/// (P2's, sent once P1's waits) fails at once with `MMXA_EDEADLOCK`, its branch is
/// rollback-only, and the other request gets its lock once that branch is rolled back.
#[test]
fn a_deadlock_across_processes_fails_one_request_at_once() {
    const T: &str = "a_deadlock_across_processes_fails_one_request_at_once";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("start 1 d1 0", XA_OK);
    p[0].rc("put 1 a 1", MMXA_OK);
    p[1].rc("start 1 d2 0", XA_OK);
    p[1].rc("put 1 b 2", MMXA_OK);
    p[0].send("put 1 b 1");
    p[1].await_waits(1, 1);
    // P2's request closes the cycle: it fails at once (a 60 s wait would fail the bound).
    p[1].send("put 1 a 2");
    assert_eq!(
        p[1].recv_within(PROMPT, "the request closing the cycle"),
        MMXA_EDEADLOCK.to_string()
    );
    p[1].rc("put 1 c 3", MMXA_EROLLBACK);
    p[1].rc(&format!("end 1 d2 {TMSUCCESS}"), XA_RBDEADLOCK);
    p[1].rc("rollback 1 d2", XA_OK);
    assert_eq!(
        p[0].recv_within(PROMPT, "the other request"),
        MMXA_OK.to_string()
    );
    p[0].rc(&format!("end 1 d1 {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 d1 {TMONEPHASE}"), XA_OK);
    assert_eq!(p[1].get(1, "a").as_deref(), Some("1"));
    assert_eq!(p[1].get(1, "b").as_deref(), Some("1"));
}

/// The lock timeout applies across processes: the waiter gets `MMXA_ELOCKTIMEOUT`, its branch
/// is rollback-only, and the holder is unaffected.
#[test]
fn a_lock_wait_across_processes_times_out() {
    const T: &str = "a_lock_wait_across_processes_times_out";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=100");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("start 1 t1 0", XA_OK);
    p[0].rc("put 1 k 1", MMXA_OK);
    p[1].rc("start 1 t2 0", XA_OK);
    p[1].rc("put 1 other 2", MMXA_OK);
    p[1].rc("put 1 k 2", MMXA_ELOCKTIMEOUT);
    p[1].rc("put 1 more 2", MMXA_EROLLBACK);
    p[1].rc(&format!("end 1 t2 {TMSUCCESS}"), XA_RBTIMEOUT);
    p[1].rc("rollback 1 t2", XA_OK);
    p[1].rc("put 1 k 3", MMXA_ELOCKTIMEOUT);
    p[0].rc(&format!("end 1 t1 {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 t1 {TMONEPHASE}"), XA_OK);
    assert_eq!(p[1].get(1, "k").as_deref(), Some("1"));
    assert_eq!(p[1].get(1, "other"), None);
    p[1].rc("put 1 k 3", MMXA_OK);
}

/// Savepoints work the same in every process, on a branch joined across processes.
#[test]
fn savepoints_work_the_same_in_every_process() {
    const T: &str = "savepoints_work_the_same_in_every_process";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2", "p3"]);
    p[1].rc("start 1 sp 0", XA_OK);
    p[1].rc("put 1 sa 1", MMXA_OK);
    let sp = p[1].run("savepoint 1");
    let id = sp
        .strip_prefix("0 ")
        .expect("savepoint answered MMXA_OK")
        .to_string();
    p[1].rc("put 1 sa 2", MMXA_OK);
    p[1].rc(&format!("end 1 sp {TMSUCCESS}"), XA_OK);
    // Another process joins and rolls back to the savepoint set in P2.
    p[0].rc(&format!("start 1 sp {TMJOIN}"), XA_OK);
    p[0].rc("put 1 sb 2", MMXA_OK);
    p[0].rc(&format!("rollback_to 1 {id}"), MMXA_OK);
    assert_eq!(p[0].get(1, "sa").as_deref(), Some("1"));
    assert_eq!(p[0].get(1, "sb"), None);
    p[0].rc("rollback_to 1 999", MMXA_EINVAL);
    p[0].rc(&format!("end 1 sp {TMSUCCESS}"), XA_OK);
    p[2].rc(&format!("commit 1 sp {TMONEPHASE}"), XA_OK);
    assert_eq!(p[2].get(1, "sa").as_deref(), Some("1"));
    assert_eq!(p[2].get(1, "sb"), None);
}

/// The XA state tables across processes that open and close in turn: a branch survives the
/// close of the process that worked in it while any process has the store open; once nobody
/// has, the next opener rebuilds the store from the log — prepared branches survive that,
/// idle ones are rolled back.
#[test]
fn processes_open_and_close_in_turn_and_branches_go_on() {
    const T: &str = "processes_open_and_close_in_turn_and_branches_go_on";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut a = Shell::spawn(T, "a");
    let mut b = Shell::spawn(T, "b");
    a.rc(&format!("open 1 {info}"), XA_OK);
    b.rc(&format!("open 1 {info}"), XA_OK);
    a.rc("start 1 x 0", XA_OK);
    a.rc("put 1 k1 a", MMXA_OK);
    a.rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    // Refused while associated; then closed and gone.
    a.rc("start 1 busy 0", XA_OK);
    a.rc("close 1", XAER_PROTO);
    a.rc(&format!("end 1 busy {TMSUCCESS}"), XA_OK);
    a.rc("close 1", XA_OK);
    a.rc("close 1", XA_OK);
    a.rc("put 1 k v", MMXA_ENOTOPEN);
    assert!(a.finish().success());
    let mut c = Shell::spawn(T, "c");
    c.rc(&format!("open 1 {info}"), XA_OK);
    c.rc(&format!("start 1 x {TMJOIN}"), XA_OK);
    c.rc("put 1 k2 c", MMXA_OK);
    assert_eq!(c.get(1, "k1").as_deref(), Some("a"));
    c.rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    b.rc("rollback 1 busy", XA_OK);
    b.rc("prepare 1 x", XA_OK);
    b.rc("close 1", XA_OK);
    assert!(b.finish().success());
    let mut d = Shell::spawn(T, "d");
    d.rc(&format!("open 1 {info}"), XA_OK);
    assert_eq!(d.recover(1), vec!["x".to_string()]);
    c.rc("close 1", XA_OK);
    assert!(c.finish().success());
    d.rc(&format!("commit 1 x {TMNOFLAGS}"), XA_OK);
    // d leaves a prepared branch and an idle one, and is the last to close.
    d.rc("start 1 y 0", XA_OK);
    d.rc("put 1 ky prepared", MMXA_OK);
    d.rc(&format!("end 1 y {TMSUCCESS}"), XA_OK);
    d.rc("prepare 1 y", XA_OK);
    d.rc("start 1 z 0", XA_OK);
    d.rc("put 1 kz idle", MMXA_OK);
    d.rc(&format!("end 1 z {TMSUCCESS}"), XA_OK);
    d.rc("close 1", XA_OK);
    assert!(d.finish().success());
    // Nobody has the store open: e rebuilds it from the log.
    let mut e = Shell::spawn(T, "e");
    e.rc(&format!("open 1 {info}"), XA_OK);
    assert_eq!(e.get(1, "k1").as_deref(), Some("a"));
    assert_eq!(e.get(1, "k2").as_deref(), Some("c"));
    assert_eq!(e.recover(1), vec!["y".to_string()]);
    e.rc("rollback 1 z", XAER_NOTA);
    e.rc("put 1 kz free", MMXA_OK);
    e.rc(&format!("commit 1 y {TMNOFLAGS}"), XA_OK);
    assert_eq!(e.get(1, "ky").as_deref(), Some("prepared"));
    assert_eq!(e.get(1, "kz").as_deref(), Some("free"));
}

// ---- 2. a killed process -------------------------------------------------------------------

/// A SIGKILLed process loses only its threads' associations: its active branch (holding keys,
/// one of which another process waits for) ends as with `TMFAIL` and, left with no
/// association, is rolled back and its locks released promptly (the waiter, with a 60 s
/// timeout, gets its lock within [`PROMPT`]); so is the branch one of its threads suspended
/// (`TMSUSPEND`: only that thread could have resumed it). Its idle, migrated (suspended with
/// `TMMIGRATE`: by nobody) and prepared branches stay, for other processes to finish. A
/// bystander working throughout never sees an error.
#[test]
fn a_killed_process_loses_only_its_active_associations() {
    const T: &str = "a_killed_process_loses_only_its_active_associations";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["victim", "waiter", "bystander"]);
    let [victim, waiter, by] = &mut p[..] else {
        unreachable!()
    };
    let mut bystander_tx = 0;
    let mut bystander = |by: &mut Shell| {
        bystander_tx += 1;
        let g = format!("by{bystander_tx}");
        by.rc(&format!("start 1 {g} 0"), XA_OK);
        by.rc(&format!("put 1 bk{bystander_tx} {g}"), MMXA_OK);
        by.rc(&format!("end 1 {g} {TMSUCCESS}"), XA_OK);
        by.rc(&format!("prepare 1 {g}"), XA_OK);
        by.rc(&format!("commit 1 {g} {TMNOFLAGS}"), XA_OK);
    };
    bystander(by);
    victim.rc("start 1 pp 0", XA_OK);
    victim.rc("put 1 kp prepared", MMXA_OK);
    victim.rc(&format!("end 1 pp {TMSUCCESS}"), XA_OK);
    victim.rc("prepare 1 pp", XA_OK);
    victim.rc("start 1 idle 0", XA_OK);
    victim.rc("put 1 ki idle", MMXA_OK);
    victim.rc(&format!("end 1 idle {TMSUCCESS}"), XA_OK);
    victim.rc("start 1 mig 0", XA_OK);
    victim.rc("put 1 km migrated", MMXA_OK);
    victim.rc(&format!("end 1 mig {}", TMSUSPEND | TMMIGRATE), XA_OK);
    victim.rc("start 1 susp 0", XA_OK);
    victim.rc("put 1 ks susp", MMXA_OK);
    victim.rc(&format!("end 1 susp {TMSUSPEND}"), XA_OK);
    victim.rc("start 1 act 0", XA_OK);
    victim.rc("put 1 ka act", MMXA_OK);
    victim.rc("getu 1 kr", MMXA_NOTFOUND);
    bystander(by);
    waiter.rc("start 1 w 0", XA_OK);
    waiter.send("put 1 ka waiter");
    victim.sigkill();
    // The waiting put gets the lock without waiting out its 60 s timeout.
    assert_eq!(
        waiter.recv_within(PROMPT, "the put waiting for the dead process's key"),
        MMXA_OK.to_string()
    );
    bystander(by);
    // The suspended branch went too: its keys are free, its XID unknown.
    waiter.rc("put 1 ks waiter", MMXA_OK);
    waiter.rc("put 1 kr waiter", MMXA_OK);
    waiter.rc(&format!("end 1 w {TMSUCCESS}"), XA_OK);
    waiter.rc(&format!("commit 1 w {TMONEPHASE}"), XA_OK);
    for g in ["act", "susp"] {
        waiter.rc(&format!("rollback 1 {g}"), XAER_NOTA);
    }
    // The prepared branch is in doubt, everywhere, its write invisible and locked.
    assert_eq!(waiter.recover(1), vec!["pp".to_string()]);
    assert_eq!(by.recover(1), vec!["pp".to_string()]);
    assert_eq!(waiter.get(1, "kp"), None);
    bystander(by);
    // The idle and migrated branches are finished elsewhere.
    by.rc("prepare 1 idle", XA_OK);
    by.rc(&format!("commit 1 idle {TMNOFLAGS}"), XA_OK);
    waiter.rc(&format!("start 1 mig {TMRESUME}"), XA_OK);
    waiter.rc("put 1 km2 resumed", MMXA_OK);
    waiter.rc(&format!("end 1 mig {TMSUCCESS}"), XA_OK);
    waiter.rc(&format!("commit 1 mig {TMONEPHASE}"), XA_OK);
    by.rc(&format!("commit 1 pp {TMNOFLAGS}"), XA_OK);
    bystander(by);
    let want = [
        ("ka", Some("waiter")),
        ("ks", Some("waiter")),
        ("kr", Some("waiter")),
        ("kp", Some("prepared")),
        ("ki", Some("idle")),
        ("km", Some("migrated")),
        ("km2", Some("resumed")),
    ];
    // A process opening now attaches as if nothing happened.
    let mut again = Shell::spawn(T, "again");
    again.rc(&format!("open 1 {info}"), XA_OK);
    for s in [&mut *waiter, &mut *by, &mut again] {
        for (k, v) in want {
            assert_eq!(s.get(1, k).as_deref(), v, "{k} in {}", s.name);
        }
        assert!(s.recover(1).is_empty());
    }
}

/// A process killed while it waits for a lock leaves the queue: the request queued behind its
/// own gets the key when the holder commits, promptly (not after its 60 s timeout).
#[test]
fn a_killed_waiter_leaves_the_queue() {
    const T: &str = "a_killed_waiter_leaves_the_queue";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["holder", "first", "second"]);
    p[0].rc("start 1 h 0", XA_OK);
    p[0].rc("put 1 k holder", MMXA_OK);
    p[1].rc("start 1 f 0", XA_OK);
    p[1].send("put 1 k first");
    p[2].await_waits(1, 1);
    p[2].rc("start 1 s 0", XA_OK);
    p[2].send("put 1 k second");
    p[0].await_waits(1, 2);
    // The dead process's request is queued ahead of the second one.
    p[1].sigkill();
    p[0].rc(&format!("end 1 h {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 h {TMONEPHASE}"), XA_OK);
    assert_eq!(
        p[2].recv_within(PROMPT, "the put queued behind the dead one"),
        MMXA_OK.to_string()
    );
    p[2].rc(&format!("end 1 s {TMSUCCESS}"), XA_OK);
    p[2].rc(&format!("commit 1 s {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("second"));
    p[0].rc("rollback 1 f", XAER_NOTA);
}

// ---- the workers (shell commands of this file) ---------------------------------------------

/// This file's shell commands: `work RMID NAME STOPFILE MAX` (the crash rounds' workload, see
/// [`work`]), `transfer NAME STOPFILE` (the torture's, see [`transfer`]), `snap RMID NAME...`
/// (the values of every key of those workers, see [`snap`]), `probe RMID GTRID KEY...` (locks
/// every key exclusively in a new branch, then rolls it back: answers `ok`, or the first key
/// that could not be locked), `tsnap RMID NAME:LAST...` (the torture's accounts and
/// markers), `big RMID HOW PREFIX N` and `bigcheck RMID PREFIX N present|absent` (a transaction
/// of N writes and its check, see [`big`]) and `branches RMID` (how many branch records and
/// local transactions the store has: `B L`).
fn extra(w: &[&str], infos: &BTreeMap<i32, String>) -> Option<String> {
    let rmid = |i: usize| -> i32 { w[i].parse().expect("rmid") };
    Some(match w.first().copied()? {
        "work" => {
            let max: u64 = w[4].parse().expect("max");
            work(&shell::rm(rmid(1), infos), w[2], Path::new(w[3]), max)
        }
        "transfer" => transfer(
            &shell::rm(1, infos),
            &shell::rm(2, infos),
            w[1],
            Path::new(w[2]),
        ),
        "snap" => snap(&shell::rm(rmid(1), infos), &w[2..]),
        "probe" => probe(&shell::rm(rmid(1), infos), w[2], &w[3..]),
        "tsnap" => tsnap(&shell::rm(rmid(1), infos), rmid(1), &w[2..]),
        "big" => big(
            &shell::rm(rmid(1), infos),
            w[2],
            w[3],
            w[4].parse().expect("n"),
        ),
        "bigcheck" => bigcheck(
            &shell::rm(rmid(1), infos),
            w[2],
            w[3].parse().expect("n"),
            w[4] == "present",
        ),
        "branches" => match mmxa::registry::call(rmid(1), |rm, _| Ok(rm.status())) {
            Ok(st) => format!("{} {}", st.branches.len(), st.locals.len()),
            Err(e) => format!("{} {}", e.xa_code(), e.message()),
        },
        _ => return None,
    })
}

/// An error of a worker's call, as it prints it.
fn failed(what: &str, got: i32) -> String {
    format!("{what} -> {got} ({})", last_error())
}

fn expect(what: &str, got: i32, want: i32) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(failed(what, got))
    }
}

/// How a crash-round transaction is completed (by its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Locks the store's `counter` for update, increments it, writes two keys of its own;
    /// commits at once (one-phase every third, else two-phase).
    Normal,
    /// Writes one key, is prepared, and left in doubt until [`LIFE`] transactions later.
    Deferred,
    /// Writes one key, is prepared and completed heuristically (commit) at once, and forgotten
    /// [`LIFE`] transactions later.
    Heuristic,
    /// Writes a key, sets a savepoint, writes it again, and is left idle; [`LIFE`]
    /// transactions later it is joined, rolled back to the savepoint and committed in one phase.
    Savepoint,
}

/// How many transactions a worker's long-lived branches live: longer than the log between the
/// tail and the oldest segment, so that reclaiming copies and moves them.
const LIFE: u64 = 60;

fn kind(i: u64) -> Kind {
    if i % 7 == 3 {
        Kind::Deferred
    } else if i % 13 == 5 {
        Kind::Heuristic
    } else if i % 20 == 10 {
        Kind::Savepoint
    } else {
        Kind::Normal
    }
}

fn gtrid(name: &str, i: u64) -> String {
    format!("{name}-{i}")
}

/// The number of a worker's transaction from its gtrid.
fn number(g: &str) -> u64 {
    g.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a worker's gtrid: {g}"))
}

fn pad(i: u64) -> String {
    "x".repeat(40 + (i * 37 % 200) as usize)
}

/// The keys transaction `i` of worker `name` writes (the counter aside), with the values it
/// leaves if it commits. The keys of one kind are reused in turn, never by two transactions
/// alive at once.
fn writes(name: &str, i: u64) -> Vec<(String, String)> {
    let g = gtrid(name, i);
    let v = format!("{g}:{}", pad(i));
    match kind(i) {
        Kind::Normal => vec![
            (format!("{name}.a{}", i % 8), v.clone()),
            (format!("{name}.b{}", i % 8), v),
        ],
        Kind::Deferred => vec![(format!("{name}.d{}", (i / 7) % 16), v)],
        Kind::Heuristic => vec![(format!("{name}.h{}", (i / 13) % 8), v)],
        Kind::Savepoint => vec![(format!("{name}.s{}", (i / 20) % 8), first_value(&g, i))],
    }
}

/// What a savepoint transaction writes before its savepoint (and leaves when it commits).
fn first_value(g: &str, i: u64) -> String {
    format!("{g}:first:{}", pad(i))
}

/// Every key a worker may write.
fn keys_of(name: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (c, n) in [("a", 8), ("b", 8), ("d", 16), ("h", 8), ("s", 8)] {
        for k in 0..n {
            v.push(format!("{name}.{c}{k}"));
        }
    }
    v
}

/// The crash rounds' worker: transaction after transaction (see [`Kind`]) until `stop` exists
/// or `max` are done; prints `s I` before transaction I, then `p G` (prepared), `c G`
/// (committed), `h G` (completed heuristically), `f G` (forgotten) and `i G` (left idle) as each
/// call returns. Answers `done I`, or `error ...` at the first call that fails.
fn work(r: &Rm, name: &str, stop: &Path, max: u64) -> String {
    let mut savepoints = BTreeMap::new();
    for i in 0..max {
        if stop.exists() {
            return format!("done {i}");
        }
        say(&format!("s {i}"));
        if let Err(e) = transaction(r, name, i, &mut savepoints) {
            return format!("error {name} {i}: {e}");
        }
    }
    format!("done {max}")
}

fn transaction(
    r: &Rm,
    name: &str,
    i: u64,
    savepoints: &mut BTreeMap<u64, u64>,
) -> Result<(), String> {
    // First the long-lived branch due now.
    if let Some(j) = i.checked_sub(LIFE) {
        let g = gtrid(name, j);
        let x = shell::shell_xid(&g);
        match kind(j) {
            Kind::Normal => {}
            Kind::Deferred => {
                expect("commit deferred", r.commit(&x, TMNOFLAGS), XA_OK)?;
                say(&format!("c {g}"));
            }
            Kind::Heuristic => {
                expect("forget", r.forget(&x), XA_OK)?;
                say(&format!("f {g}"));
            }
            Kind::Savepoint => {
                expect("join", r.start(&x, TMJOIN), XA_OK)?;
                let id = savepoints.remove(&j).expect("a savepoint");
                expect(
                    "rollback_to",
                    mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, id),
                    MMXA_OK,
                )?;
                expect("end joined", r.end(&x, TMSUCCESS), XA_OK)?;
                expect("commit 1PC", r.commit(&x, TMONEPHASE), XA_OK)?;
                say(&format!("c {g}"));
            }
        }
    }
    let g = gtrid(name, i);
    let x = shell::shell_xid(&g);
    expect("start", r.start(&x, TMNOFLAGS), XA_OK)?;
    if kind(i) == Kind::Normal {
        let n: u64 = match r.get_for_update(b"counter") {
            Ok(None) => 0,
            Ok(Some(v)) => String::from_utf8(v).unwrap().parse().unwrap(),
            Err(rc) => return Err(failed("get_for_update counter", rc)),
        };
        expect(
            "put counter",
            r.put(b"counter", (n + 1).to_string().as_bytes()),
            MMXA_OK,
        )?;
    }
    let w = writes(name, i);
    if kind(i) == Kind::Savepoint {
        let (k, v) = &w[0];
        expect("put first", r.put(k.as_bytes(), v.as_bytes()), MMXA_OK)?;
        let mut id = 0u64;
        // SAFETY: a live, writable u64.
        let rc = unsafe { mmxa::ffi::data::mmxa_savepoint(r.rmid, &mut id) };
        expect("savepoint", rc, MMXA_OK)?;
        savepoints.insert(i, id);
        let second = format!("{g}:second");
        expect(
            "put second",
            r.put(k.as_bytes(), second.as_bytes()),
            MMXA_OK,
        )?;
        expect("end", r.end(&x, TMSUCCESS), XA_OK)?;
        say(&format!("i {g}"));
        return Ok(());
    }
    for (k, v) in &w {
        expect("put", r.put(k.as_bytes(), v.as_bytes()), MMXA_OK)?;
    }
    expect("end", r.end(&x, TMSUCCESS), XA_OK)?;
    if kind(i) == Kind::Normal && i % 3 == 0 {
        expect("commit 1PC", r.commit(&x, TMONEPHASE), XA_OK)?;
        say(&format!("c {g}"));
        return Ok(());
    }
    expect("prepare", r.prepare(&x), XA_OK)?;
    say(&format!("p {g}"));
    match kind(i) {
        Kind::Normal => {
            expect("commit", r.commit(&x, TMNOFLAGS), XA_OK)?;
            say(&format!("c {g}"));
        }
        Kind::Heuristic => {
            let outcome = mmxa::error::Outcome::Commit;
            let xid = mmxa::xid::Xid::from_parts(1, g.as_bytes(), b"b").unwrap();
            mmxa::registry::call(r.rmid, |rm, _| rm.heuristic(&xid, outcome, "test"))
                .map_err(|e| format!("heuristic -> {}", e.message()))?;
            say(&format!("h {g}"));
        }
        _ => {}
    }
    Ok(())
}

/// `key=value` for every key of the workers `names` and the counter (`key=-` if absent), `;`
/// between them.
fn snap(r: &Rm, names: &[&str]) -> String {
    let mut keys: Vec<String> = names.iter().flat_map(|n| keys_of(n)).collect();
    keys.push("counter".into());
    let mut out = Vec::new();
    for k in keys {
        match r.get(k.as_bytes()) {
            Ok(Some(v)) => out.push(format!("{k}={}", String::from_utf8_lossy(&v))),
            Ok(None) => out.push(format!("{k}=-")),
            Err(rc) => return format!("error get {k}: {}", failed("get", rc)),
        }
    }
    out.join(";")
}

fn parse_snap(s: &str) -> BTreeMap<String, Option<String>> {
    assert!(!s.starts_with("error"), "{s}");
    s.split(';')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), (v != "-").then(|| v.to_string()))
        })
        .collect()
}

fn probe(r: &Rm, g: &str, keys: &[&str]) -> String {
    let x = shell::shell_xid(g);
    if let Err(e) = expect("start probe", r.start(&x, TMNOFLAGS), XA_OK) {
        return e;
    }
    let mut answer = "ok".to_string();
    for k in keys {
        if let Err(rc) = r.get_for_update(k.as_bytes()) {
            answer = format!("{k}: {}", failed("get_for_update", rc));
            break;
        }
    }
    let _ = r.end(&x, TMSUCCESS);
    let _ = r.rollback(&x);
    answer
}

/// The key `i` of a big transaction's keys `prefix`, and its value.
fn big_kv(prefix: &str, i: usize) -> (String, String) {
    (format!("{prefix}{i:06}"), format!("v{i}"))
}

/// A transaction writing `n` keys (see [`big_kv`]), ended as `how` says: `local` (a local
/// transaction, committed), `localrb` (one rolled back), `xa` (a branch, `xa_end`, prepared
/// and committed: its gtrid is `prefix`), `hold` (a branch left active) or `scanprep` (a
/// branch that scans every key of the store, serializable, writes only its first key, and is
/// prepared).
fn big(r: &Rm, how: &str, prefix: &str, n: usize) -> String {
    let x = shell::shell_xid(prefix);
    if how == "scanprep" {
        let (k, v) = big_kv(prefix, 0);
        let r = expect("start", r.start(&x, TMNOFLAGS), XA_OK)
            .and_then(|_| r.scan(None, None, 0).map_err(|rc| failed("scan", rc)))
            .and_then(|_| expect("put", r.put(k.as_bytes(), v.as_bytes()), MMXA_OK))
            .and_then(|_| expect("end", r.end(&x, TMSUCCESS), XA_OK))
            .and_then(|_| expect("prepare", r.prepare(&x), XA_OK));
        return r.map_or_else(|e| e, |_| "ok".into());
    }
    let local = how.starts_with("local");
    let begun = if local {
        mmxa::ffi::txn::mmxa_txn_begin(r.rmid)
    } else {
        r.start(&x, TMNOFLAGS)
    };
    if let Err(e) = expect("begin", begun, 0) {
        return e;
    }
    for i in 0..n {
        let (k, v) = big_kv(prefix, i);
        if let Err(e) = expect("put", r.put(k.as_bytes(), v.as_bytes()), MMXA_OK) {
            return e;
        }
    }
    let ended = match how {
        "local" => expect("commit", mmxa::ffi::txn::mmxa_txn_commit(r.rmid), MMXA_OK),
        "localrb" => expect(
            "rollback",
            mmxa::ffi::txn::mmxa_txn_rollback(r.rmid),
            MMXA_OK,
        ),
        "xa" => expect("end", r.end(&x, TMSUCCESS), XA_OK)
            .and_then(|_| expect("prepare", r.prepare(&x), XA_OK))
            .and_then(|_| expect("commit", r.commit(&x, TMNOFLAGS), XA_OK)),
        "hold" => Ok(()),
        // Its write is the one key of its own; it reads every key first.
        "scanprep" => Ok(()),
        _ => panic!("big: {how}?"),
    };
    match ended {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

/// Checks the keys of [`big`]: each locked for update in a new branch (so a lock left would
/// hold the answer up) and read as written (`present`) or absent, and a prefix scan counts
/// them; answers `ok` or what differs.
fn bigcheck(r: &Rm, prefix: &str, n: usize, present: bool) -> String {
    let x = shell::shell_xid(&format!("{prefix}check"));
    if let Err(e) = expect("start", r.start(&x, TMNOFLAGS), XA_OK) {
        return e;
    }
    let mut answer = "ok".to_string();
    for i in 0..n {
        let (k, v) = big_kv(prefix, i);
        match r.get_for_update(k.as_bytes()) {
            Ok(got) if got == present.then(|| v.into_bytes()) => {}
            Ok(got) => {
                answer = format!(
                    "{k} = {:?}",
                    got.map(|g| String::from_utf8_lossy(&g).into_owned())
                );
                break;
            }
            Err(rc) => {
                answer = format!("{k}: {}", failed("get_for_update", rc));
                break;
            }
        }
    }
    let _ = r.end(&x, TMSUCCESS);
    let _ = r.rollback(&x);
    if answer == "ok" {
        match r.scan(Some(prefix.as_bytes()), None, MMXA_SCAN_PREFIX) {
            Ok(all) if all.len() == if present { n } else { 0 } => {}
            Ok(all) => answer = format!("a scan counts {} keys", all.len()),
            Err(rc) => answer = failed("scan", rc),
        }
    }
    answer
}

/// Keys of the transactions too big for one section in [`a_process_dying_in_the_middle_of_a_big_transaction_leaves_it_to_a_peer`] and in the crash round of `rm.finish_step`.
const BIG: usize = 5000;

/// A process that dies between two sections of a big transaction's end — a local commit, a
/// two-phase commit, a rollback, a prepare releasing the read locks of a scan of 10,000 keys:
/// its outcome decided — or with a big branch still active, leaves the rest to a peer: the
/// peer, waiting for the first lock still held, finds the dead process and finishes it,
/// promptly (within [`PROMPT`], though its lock timeout is 60 s); then every write of the
/// committed ones is there, none of the others, no lock is left and no branch record (the
/// prepared branch, in doubt, commits in the peer).
#[test]
fn a_process_dying_in_the_middle_of_a_big_transaction_leaves_it_to_a_peer() {
    const T: &str = "a_process_dying_in_the_middle_of_a_big_transaction_leaves_it_to_a_peer";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut peer = Shell::spawn(T, "peer");
    peer.rc(&format!("open 1 {info}"), XA_OK);
    // (How it ends, the pass of `rm.finish_step` to die at (None: SIGKILLed once it answers),
    // whether its writes stay.)
    let cases = [
        ("local", Some(2), true),
        ("xa", Some(1), true),
        ("localrb", Some(1), false),
        ("hold", None, false),
    ];
    for (how, pass, committed) in cases {
        let prefix = format!("{how}.");
        let armed = pass.map(|n| format!("rm.finish_step:{n}"));
        let env: Vec<(&str, &str)> = armed
            .iter()
            .map(|a| (mmxa::crash::ENV, a.as_str()))
            .collect();
        let mut v = Shell::spawn_env(T, &format!("v-{how}"), &env);
        v.rc(&format!("open 1 {info}"), XA_OK);
        v.send(&format!("big 1 {how} {prefix} {BIG}"));
        if pass.is_some() {
            assert_eq!(
                v.recv_or_exit(),
                None,
                "{how}: v did not die at its crash point"
            );
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                v.child.wait().unwrap().signal(),
                Some(libc::SIGABRT),
                "{how}"
            );
        } else {
            assert_eq!(v.recv(), "ok", "{how}");
            v.sigkill();
        }
        let started = Instant::now();
        let present = if committed { "present" } else { "absent" };
        assert_eq!(
            peer.run(&format!("bigcheck 1 {prefix} {BIG} {present}")),
            "ok",
            "{how}"
        );
        assert!(
            started.elapsed() < PROMPT,
            "{how}: the peer waited {:?} for the dead process's locks",
            started.elapsed()
        );
        assert_eq!(
            peer.run("branches 1"),
            "0 0",
            "{how}: a branch record is left"
        );
        if how != "localrb" && how != "local" {
            peer.rc(&format!("rollback 1 {}", prefix), XAER_NOTA);
        }
    }
    // A prepare that releases the next-key locks of a scan of every key (some 10,000) dies
    // half way through releasing them: the branch is prepared, its reads released (a
    // peer locks the keys read), and it commits in the peer.
    let armed = [(mmxa::crash::ENV, "rm.finish_step:1")];
    let mut v = Shell::spawn_env(T, "v-scanprep", &armed);
    v.rc(&format!("open 1 {info}"), XA_OK);
    v.send("big 1 scanprep scanprep. 1");
    assert_eq!(
        v.recv_or_exit(),
        None,
        "scanprep: v did not die at its crash point"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        v.child.wait().unwrap().signal(),
        Some(libc::SIGABRT),
        "scanprep"
    );
    let started = Instant::now();
    assert_eq!(peer.run(&format!("bigcheck 1 local. {BIG} present")), "ok");
    assert!(
        started.elapsed() < PROMPT,
        "the peer waited for a read lock"
    );
    assert_eq!(peer.recover(1), vec!["scanprep.".to_string()]);
    assert_eq!(
        peer.get(1, "scanprep.000000"),
        None,
        "prepared, not committed"
    );
    peer.rc(&format!("commit 1 scanprep. {TMNOFLAGS}"), XA_OK);
    assert_eq!(peer.get(1, "scanprep.000000").as_deref(), Some("v0"));
    assert_eq!(
        peer.run("branches 1"),
        "0 0",
        "scanprep: a branch record is left"
    );
    // And the same after a rebuild from the log.
    peer.rc("close 1", XA_OK);
    peer.rc(&format!("open 1 {info}"), XA_OK);
    for (how, _, committed) in cases {
        let present = if committed { "present" } else { "absent" };
        assert_eq!(
            peer.run(&format!("bigcheck 1 {how}. {BIG} {present}")),
            "ok",
            "{how}, rebuilt"
        );
    }
}

// ---- 3. a process dying inside a section (crash points) ------------------------------------

/// What the test process saw of one worker: its acknowledgements, by transaction number.
#[derive(Debug, Default)]
struct Books {
    name: String,
    /// The last transaction begun.
    started: Option<u64>,
    prepared: BTreeSet<u64>,
    committed: BTreeSet<u64>,
    heuristic: BTreeSet<u64>,
    forgotten: BTreeSet<u64>,
    idle: BTreeSet<u64>,
    /// The worker's last line (`done I` or `error ...`), once it ended.
    end: Option<String>,
}

impl Books {
    fn new(name: &str) -> Books {
        Books {
            name: name.into(),
            ..Books::default()
        }
    }

    fn note(&mut self, line: &str) {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        let set = match tag {
            "s" => {
                self.started = Some(rest.parse().expect("s I"));
                return;
            }
            "done" | "error" => {
                self.end = Some(line.to_string());
                return;
            }
            "p" => &mut self.prepared,
            "c" => &mut self.committed,
            "h" => &mut self.heuristic,
            "f" => &mut self.forgotten,
            "i" => &mut self.idle,
            _ => panic!("worker {}: unexpected line {line:?}", self.name),
        };
        set.insert(number(rest));
    }
}

/// A worker shell and its books.
struct Worker {
    shell: Shell,
    books: Books,
}

impl Worker {
    fn spawn(test: &str, name: &str, env: &[(&str, &str)]) -> Worker {
        Worker {
            shell: Shell::spawn_env(test, name, env),
            books: Books::new(name),
        }
    }

    fn fail_on_error(&self) {
        if let Some(e) = self.books.end.as_deref().filter(|e| e.starts_with("error")) {
            panic!("worker {} failed: {e}", self.books.name);
        }
    }

    /// Notes the lines printed so far.
    fn pump(&mut self) {
        while let Ok(l) = self.shell.lines.try_recv() {
            self.books.note(&l);
        }
        self.fail_on_error();
    }

    /// Notes lines until `n` more commits are acknowledged.
    fn await_commits(&mut self, n: usize) {
        let want = self.books.committed.len() + n;
        while self.books.committed.len() < want {
            let l = self.shell.recv();
            self.books.note(&l);
            self.fail_on_error();
            assert!(self.books.end.is_none(), "{} ended", self.books.name);
        }
    }

    /// Stops a running worker at the end of its transaction (creating `stop`).
    fn stop(&mut self, stop: &Path) {
        std::fs::write(stop, b"").unwrap();
        while self.books.end.is_none() {
            let l = self.shell.recv();
            self.books.note(&l);
        }
        self.fail_on_error();
    }
}

/// What the test process (as the transaction manager) decided, or knows, of a dead worker's
/// unfinished transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Committed (by the TM, or by the reaper finishing the dead process's commit).
    Committed,
    /// Rolled back.
    RolledBack,
    /// Committed or rolled back: the dead process's commit may have happened.
    Uncertain,
    /// In doubt: prepared, or completed heuristically (commit) by the reaper.
    InDoubt,
}

/// How a transaction's writes stand in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Applied,
    /// Prepared and in doubt: not applied (until resolved).
    Pending,
    /// Applied or not.
    Maybe,
    Not,
}

/// The state of the store the books and the fates say, for checking.
struct Expect<'a> {
    books: Vec<&'a Books>,
    fates: &'a BTreeMap<String, Fate>,
    /// In-doubt branches the TM ended (a dead worker's deferred commit, or forget).
    ended: &'a BTreeSet<String>,
}

impl Expect<'_> {
    /// Transaction `i` of `b`; `resolved`: every in-doubt branch was committed since.
    fn st(&self, b: &Books, i: u64, resolved: bool) -> St {
        let pending = if resolved { St::Applied } else { St::Pending };
        match self.fates.get(&gtrid(&b.name, i)) {
            Some(Fate::Committed) => return St::Applied,
            Some(Fate::RolledBack) => return St::Not,
            Some(Fate::Uncertain) => return St::Maybe,
            Some(Fate::InDoubt) => return if resolved { St::Applied } else { St::Maybe },
            None => {}
        }
        match kind(i) {
            Kind::Normal | Kind::Savepoint if b.committed.contains(&i) => St::Applied,
            Kind::Deferred if b.committed.contains(&i) => St::Applied,
            Kind::Deferred if b.prepared.contains(&i) => pending,
            Kind::Heuristic if b.heuristic.contains(&i) => St::Applied,
            _ => St::Not,
        }
    }

    /// The branches `xa_recover` must list, sorted.
    fn in_doubt(&self) -> Vec<String> {
        let mut v = Vec::new();
        for b in &self.books {
            for &i in &b.prepared {
                let g = gtrid(&b.name, i);
                let listed = match kind(i) {
                    Kind::Deferred => !b.committed.contains(&i),
                    Kind::Heuristic => !b.forgotten.contains(&i),
                    _ => false,
                } || self.fates.get(&g) == Some(&Fate::InDoubt);
                if listed && !self.ended.contains(&g) {
                    v.push(g);
                }
            }
        }
        v.sort();
        v
    }

    /// Keys some branch may still hold a lock on (prepared, or idle savepoint branches).
    fn held(&self) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        for b in &self.books {
            let Some(last) = b.started else { continue };
            for i in 0..=last {
                let g = gtrid(&b.name, i);
                let idle = kind(i) == Kind::Savepoint
                    && b.idle.contains(&i)
                    && !b.committed.contains(&i)
                    && !self.fates.contains_key(&g);
                if idle
                    || self.in_doubt().contains(&g)
                    || self.fates.get(&g) == Some(&Fate::InDoubt)
                {
                    held.extend(writes(&b.name, i).into_iter().map(|(k, _)| k));
                }
            }
        }
        held
    }

    /// Checks a snapshot ([`snap`]) against the books: every acknowledged commit is there
    /// (or overwritten by a later one), nothing of a rolled-back or in-doubt branch is, a
    /// transaction whose outcome is uncertain is there entirely or not at all, and the counter
    /// counts the committed increments.
    fn check(&self, snap: &BTreeMap<String, Option<String>>, resolved: bool, ctx: &str) {
        let mut counter = 0u64;
        for b in &self.books {
            let Some(last) = b.started else { continue };
            let mut writers: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
            for i in 0..=last {
                for (k, v) in writes(&b.name, i) {
                    writers.entry(k).or_default().push((i, v));
                }
                let st = self.st(b, i, resolved);
                let shown: Vec<bool> = writes(&b.name, i)
                    .iter()
                    .map(|(k, v)| snap[k].as_deref() == Some(v.as_str()))
                    .collect();
                if st == St::Maybe && shown.iter().any(|&s| s != shown[0]) {
                    panic!("{ctx}: {} half applied: {shown:?}", gtrid(&b.name, i));
                }
                if kind(i) == Kind::Normal && (st == St::Applied || st == St::Maybe && shown[0]) {
                    counter += 1;
                }
            }
            for k in keys_of(&b.name) {
                let mut allowed: Vec<Option<&str>> = vec![None];
                for (i, v) in writers.get(&k).into_iter().flatten() {
                    match self.st(b, *i, resolved) {
                        St::Applied => allowed = vec![Some(v)],
                        St::Maybe => allowed.push(Some(v)),
                        St::Pending | St::Not => {}
                    }
                }
                let got = snap[&k].as_deref();
                assert!(
                    allowed.contains(&got),
                    "{ctx}: {k} = {:?}, expected one of {:?}",
                    got.map(|g| &g[..g.len().min(24)]),
                    allowed
                        .iter()
                        .map(|a| a.map(|g| &g[..g.len().min(24)]))
                        .collect::<Vec<_>>()
                );
            }
        }
        let got: u64 = snap["counter"].as_deref().map_or(0, |c| c.parse().unwrap());
        assert_eq!(got, counter, "{ctx}: the counter");
    }
}

/// The segment size of the crash rounds: small, so that the log rolls and reclaims often.
const ROUND_SEGMENT_KIB: u64 = 8;

/// The crash points of `mmxa::crash::POINTS` and the passes to die at; the round of
/// `rm.reap_in_section` dies reaping that many dead processes at its open, the round of
/// `rm.finish_step` in the middle of a commit of [`BIG`] keys, before its work.
const CRASH_CASES: &[(&str, &[u64])] = &[
    ("rm.lock_in_section", &[1, 2, 40, 300]),
    ("rm.write_in_section", &[1, 3, 30, 250]),
    ("rm.completion_logged", &[1, 2, 12, 100]),
    ("rm.completion_pending", &[1, 2, 9, 80]),
    ("rm.apply_in_section", &[1, 2, 9, 80]),
    ("rm.reap_in_section", &[1, 2, 3]),
    ("rm.finish_step", &[1, 3]),
    ("log.appended_in_section", &[1, 2, 70, 600]),
    ("log.roll_created", &[1, 2, 3, 8]),
    ("log.rolled", &[1, 2, 3, 8]),
    ("log.roll_sealed", &[1, 2, 3, 8]),
    ("log.rolled_published", &[1, 2, 3, 8]),
    ("log.leader_flushing", &[1, 2, 10, 100]),
    ("log.leader_flushed", &[1, 2, 10, 100]),
    ("compact.copied_committed", &[1, 5, 40]),
    ("compact.copied_saved", &[1, 2, 3]),
    ("compact.copied_working", &[1, 2, 3]),
    ("compact.copied_prepared", &[1, 2, 6]),
    ("compact.before_move", &[1, 2, 6]),
    ("compact.moved", &[1, 2, 6]),
    ("compact.restated_heuristic", &[1, 2, 3]),
    ("retire.checkpoint_appended", &[1, 2, 6]),
    ("retire.checkpoint_synced", &[1, 2, 6]),
    ("retire.deleted", &[1, 2, 6]),
    ("retire.dir_synced", &[1, 2, 6]),
];

/// Transactions the dying worker runs at most (a crash point not passed by then is reported).
const ROUND_MAX: u64 = 500;

/// Totals over the rounds.
#[derive(Default)]
struct RoundFigures {
    rounds: usize,
    acked_commits: usize,
    in_doubt: usize,
}

/// One round: a worker `s` (and a TM shell) working while a worker `v` dies at the `n`-th pass
/// of `point`; then the TM ends the dead worker's unfinished transactions, `s` goes on, and the
/// store is checked by the live processes, then by a process that rebuilds it. Answers whether
/// `v` reached the point.
fn crash_round(test: &str, point: &str, n: u64, figures: &mut RoundFigures) -> bool {
    let ctx = format!("{point}:{n}");
    let tmp = fast_dir();
    let dir = tmp.path().join("store");
    let info = open_string(&dir, "lock_timeout_ms=60000");
    let openk = format!("openk 1 {ROUND_SEGMENT_KIB} {info}");
    let stop = |w: &str| tmp.path().join(format!("stop-{w}"));
    let mut s = Worker::spawn(test, "s", &[]);
    s.shell.rc(&openk, XA_OK);
    let mut tm = Shell::spawn(test, "tm");
    tm.rc(&openk, XA_OK);
    // For the reaper's point: dead processes for `v` to reap at its open.
    let reaping = point == "rm.reap_in_section";
    let mut zs: Vec<Shell> = (0..if reaping { n } else { 0 })
        .map(|k| {
            let mut z = Shell::spawn(test, &format!("z{k}"));
            z.rc(&openk, XA_OK);
            z.rc(&format!("start 1 z{k} 0"), XA_OK);
            z.rc(&format!("put 1 z.{k} dead"), MMXA_OK);
            z
        })
        .collect();
    // All open before any dies (an open reaps the dead it finds).
    let dead: Vec<String> = zs
        .iter_mut()
        .map(|z| {
            z.sigkill();
            z.name.clone()
        })
        .collect();
    let armed = format!("{point}:{n}");
    let mut v = Worker::spawn(test, "v", &[(mmxa::crash::ENV, &armed)]);
    v.shell.send(&openk);
    let opened = v.shell.recv_or_exit();
    // For the finishing point: a commit too big for one section, that v dies in.
    let finishing = point == "rm.finish_step";
    if let Some(a) = &opened {
        assert_eq!(a, &XA_OK.to_string(), "{ctx}: v's open");
        if finishing {
            v.shell.send(&format!("big 1 local big.v. {BIG}"));
        } else {
            v.shell
                .send(&format!("work 1 v {} {ROUND_MAX}", stop("v").display()));
        }
    }
    s.shell
        .send(&format!("work 1 s {} 1000000", stop("s").display()));
    // Until v dies (or ends without reaching the point).
    let started = Instant::now();
    let died = opened.is_none()
        || loop {
            s.pump();
            match v.shell.lines.recv_timeout(Duration::from_millis(5)) {
                // The big commit ended without passing the point that many times.
                Ok(l) if finishing => {
                    assert_eq!(l, "ok", "{ctx}: v's big commit");
                    break false;
                }
                Ok(l) => v.books.note(&l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break true,
                Err(_) => {}
            }
            v.fail_on_error();
            if v.books.end.is_some() {
                break false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{ctx}: v neither dies nor ends"
            );
        };
    let mut fates = BTreeMap::new();
    let mut ended = BTreeSet::new();
    if died {
        for l in v.shell.rest() {
            v.books.note(&l);
        }
        v.fail_on_error();
        let status = v.shell.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "{ctx}: v ended with {status:?}, not at its crash point"
        );
        // As the TM: find the dead (closing and opening again reaps them), end what v left.
        tm.rc("close 1", XA_OK);
        tm.rc(&openk, XA_OK);
        for z in &dead {
            tm.rc(&format!("rollback 1 {z}"), XAER_NOTA);
        }
        tm_ends(&mut tm, &v.books, &mut fates, &mut ended, &ctx);
    }
    // The survivor goes on (and never failed).
    s.await_commits(20);
    s.stop(&stop("s"));
    let mut live = vec![&mut s.shell, &mut tm];
    if !died {
        live.push(&mut v.shell);
    }
    let expect = Expect {
        books: vec![&s.books, &v.books],
        fates: &fates,
        ended: &ended,
    };
    let in_doubt = expect.in_doubt();
    let names = "s v";
    let seen = parse_snap(&live[0].run(&format!("snap 1 {names}")));
    expect.check(&seen, false, &format!("{ctx}, live"));
    if finishing {
        // A peer finished what v left of its big commit.
        assert_eq!(
            live[1].run(&format!("bigcheck 1 big.v. {BIG} present")),
            "ok",
            "{ctx}: the big commit, live"
        );
    }
    for p in live.iter_mut() {
        assert_eq!(p.recover(1), in_doubt, "{ctx}: xa_recover in {}", p.name);
        assert_eq!(
            parse_snap(&p.run(&format!("snap 1 {names}"))),
            seen,
            "{ctx}: what {} sees",
            p.name
        );
    }
    // Every lock not held by a branch in doubt or idle is free.
    let held = expect.held();
    let free: Vec<String> = keys_of("s")
        .into_iter()
        .chain(keys_of("v"))
        .chain(["counter".to_string()])
        .filter(|k| !held.contains(k))
        .collect();
    assert_eq!(
        live[1].run(&format!("probe 1 probe {}", free.join(" "))),
        "ok",
        "{ctx}: a lock left"
    );
    for p in live.iter_mut() {
        p.rc("close 1", XA_OK);
        assert!(p.finish().success());
    }
    // Nobody has the store open: a process with other settings rebuilds it from the log, and
    // must find what the live processes saw.
    let rebuilt = open_string(&dir, "lock_timeout_ms=59999");
    let mut r = Shell::spawn(test, "rebuilt");
    r.rc(&format!("openk 1 {ROUND_SEGMENT_KIB} {rebuilt}"), XA_OK);
    assert_eq!(
        r.recover(1),
        in_doubt,
        "{ctx}: xa_recover after the rebuild"
    );
    assert_eq!(
        parse_snap(&r.run(&format!("snap 1 {names}"))),
        seen,
        "{ctx}: the rebuilt store"
    );
    for g in &in_doubt {
        let got = r.run(&format!("commit 1 {g} {TMNOFLAGS}"));
        match got.as_str() {
            "0" => {}
            "7" => r.rc(&format!("forget 1 {g}"), XA_OK), // XA_HEURCOM
            _ => panic!("{ctx}: commit {g} -> {got}"),
        }
    }
    let resolved = parse_snap(&r.run(&format!("snap 1 {names}")));
    expect.check(&resolved, true, &format!("{ctx}, resolved"));
    if finishing {
        // Its COMMIT record was durable: every write is there, its locks are free.
        assert_eq!(
            r.run(&format!("bigcheck 1 big.v. {BIG} present")),
            "ok",
            "{ctx}: the big commit"
        );
    }
    assert!(r.recover(1).is_empty());
    let all: Vec<String> = keys_of("s")
        .into_iter()
        .chain(keys_of("v"))
        .chain(["counter".to_string()])
        .collect();
    assert_eq!(r.run(&format!("probe 1 probe {}", all.join(" "))), "ok");
    r.rc("close 1", XA_OK);
    figures.rounds += 1;
    figures.acked_commits += s.books.committed.len() + v.books.committed.len();
    figures.in_doubt += in_doubt.len();
    eprintln!(
        "{ctx}: {}; s {} commits, v {} (of {} begun); {} in doubt",
        if died { "died there" } else { "not reached" },
        s.books.committed.len(),
        v.books.committed.len(),
        v.books.started.map_or(0, |l| l + 1),
        in_doubt.len()
    );
    died
}

/// As the TM, after the death of the worker `v`: ends what it left unfinished — commits what
/// it had decided to commit, rolls back the rest (its idle branches too) — and notes the fates.
fn tm_ends(
    tm: &mut Shell,
    v: &Books,
    fates: &mut BTreeMap<String, Fate>,
    ended: &mut BTreeSet<String>,
    ctx: &str,
) {
    let Some(i) = v.started else { return };
    // Answers: done now, or already done by the reaper (finishing the dead process's call).
    let mut call = |cmd: String| {
        let got = tm.run(&cmd);
        assert!(
            got == XA_OK.to_string() || got == XAER_NOTA.to_string(),
            "{ctx}: TM {cmd} -> {got}"
        );
    };
    let mut rolled_back = BTreeSet::new();
    if let Some(j) = i.checked_sub(LIFE) {
        let g = gtrid(&v.name, j);
        match kind(j) {
            Kind::Deferred if !v.committed.contains(&j) => {
                call(format!("commit 1 {g} {TMNOFLAGS}"));
                fates.insert(g.clone(), Fate::Committed);
                ended.insert(g);
            }
            Kind::Heuristic if !v.forgotten.contains(&j) => {
                call(format!("forget 1 {g}"));
                ended.insert(g);
            }
            Kind::Savepoint if !v.committed.contains(&j) => {
                call(format!("rollback 1 {g}"));
                fates.insert(g, Fate::Uncertain);
                rolled_back.insert(j);
            }
            _ => {}
        }
    }
    let g = gtrid(&v.name, i);
    match kind(i) {
        Kind::Normal if !v.committed.contains(&i) => {
            if v.prepared.contains(&i) {
                call(format!("commit 1 {g} {TMNOFLAGS}"));
                fates.insert(g, Fate::Committed);
            } else {
                call(format!("rollback 1 {g}"));
                // A one-phase commit may have been logged before the death.
                let fate = if i % 3 == 0 {
                    Fate::Uncertain
                } else {
                    Fate::RolledBack
                };
                fates.insert(g, fate);
            }
        }
        Kind::Deferred if !v.prepared.contains(&i) => {
            call(format!("rollback 1 {g}"));
            fates.insert(g, Fate::RolledBack);
        }
        Kind::Heuristic if !v.heuristic.contains(&i) => {
            if v.prepared.contains(&i) {
                fates.insert(g, Fate::InDoubt);
            } else {
                call(format!("rollback 1 {g}"));
                fates.insert(g, Fate::RolledBack);
            }
        }
        Kind::Savepoint if !v.idle.contains(&i) => {
            call(format!("rollback 1 {g}"));
            fates.insert(g, Fate::RolledBack);
        }
        _ => {}
    }
    // Its idle branches, finished by another process.
    for &j in &v.idle {
        if !v.committed.contains(&j) && !rolled_back.contains(&j) {
            let g = gtrid(&v.name, j);
            tm.rc(&format!("rollback 1 {g}"), XA_OK);
            fates.insert(g, Fate::RolledBack);
        }
    }
}

/// A worker dies at every crash point inside a section (`mmxa::crash::POINTS`: locking,
/// writing, completing, applying, reaping, appending, rolling, group commit, reclaiming,
/// retiring), at a few passes each, while another worker and a TM shell work on: none of their
/// calls fails; the TM ends what the dead one left; then every acknowledged commit is there,
/// nothing is half applied, every lock is free but those of branches in doubt or idle,
/// `xa_recover` lists exactly the branches in doubt in every process, and a process that
/// rebuilds the store from the log after everyone closed finds the same.
#[test]
fn a_process_dying_at_any_crash_point_costs_the_others_nothing() {
    const T: &str = "a_process_dying_at_any_crash_point_costs_the_others_nothing";
    serve();
    let listed: BTreeSet<&str> = CRASH_CASES.iter().map(|(p, _)| *p).collect();
    let all: BTreeSet<&str> = mmxa::crash::POINTS.iter().copied().collect();
    assert_eq!(listed, all, "every crash point has its rounds");
    let started = Instant::now();
    let mut figures = RoundFigures::default();
    let mut never = Vec::new();
    for &(point, counts) in CRASH_CASES {
        let reached = counts
            .iter()
            .filter(|&&n| crash_round(T, point, n, &mut figures))
            .count();
        if reached == 0 {
            never.push(point);
        }
    }
    assert!(never.is_empty(), "crash points never reached: {never:?}");
    eprintln!(
        "{T}: {} rounds, {} acknowledged commits checked, {} branches in doubt resolved, in \
         {:.1} s",
        figures.rounds,
        figures.acked_commits,
        figures.in_doubt,
        started.elapsed().as_secs_f64()
    );
}

// ---- 4. workers SIGKILLed at random --------------------------------------------------------

/// Accounts per store.
const ACCOUNTS: u64 = 8;
/// Every account's balance at the start.
const INITIAL: i64 = 1000;

/// A transfer: between two accounts of store A (rmid 1, one-phase), or from an account of A
/// to one of B (rmid 2, two-phase across both).
struct Transfer {
    single: bool,
    from: u64,
    to: u64,
    amount: i64,
}

/// Transfer `i` of worker `name` (the same in the worker and in the test process).
fn transfer_of(name: &str, i: u64) -> Transfer {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut r = Rng::new(h ^ (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let single = r.chance(25);
    let from = r.below(ACCOUNTS);
    let mut to = r.below(ACCOUNTS);
    if single && to == from {
        to = (from + 1) % ACCOUNTS;
    }
    Transfer {
        single,
        from,
        to,
        amount: r.range(1, 50) as i64,
    }
}

fn account(k: u64) -> String {
    format!("acct{k}")
}

/// Locks an account for update and reads its balance.
fn balance(r: &Rm, k: u64) -> Result<i64, String> {
    match r.get_for_update(account(k).as_bytes()) {
        Ok(Some(v)) => Ok(String::from_utf8(v).unwrap().parse().unwrap()),
        Ok(None) => Err(format!("no {}", account(k))),
        Err(rc) => Err(failed("get_for_update", rc)),
    }
}

fn set_balance(r: &Rm, k: u64, v: i64) -> Result<(), String> {
    expect(
        "put balance",
        r.put(account(k).as_bytes(), v.to_string().as_bytes()),
        MMXA_OK,
    )
}

/// The torture's worker: transfer after transfer (see [`transfer_of`]) until `stop` exists;
/// each writes a marker `m.G` in every store it changes. Locks are taken in one order (A
/// before B, lower account first), so no transfer deadlocks. Prints `s I`, `p G` once both
/// branches are prepared (the decision to commit), `c G` once committed; answers `done I` or
/// `error ...`.
fn transfer(a: &Rm, b: &Rm, name: &str, stop: &Path) -> String {
    for i in 0u64.. {
        if stop.exists() {
            return format!("done {i}");
        }
        say(&format!("s {i}"));
        if let Err(e) = one_transfer(a, b, name, i) {
            return format!("error {name} {i}: {e}");
        }
    }
    unreachable!()
}

fn one_transfer(a: &Rm, b: &Rm, name: &str, i: u64) -> Result<(), String> {
    let t = transfer_of(name, i);
    let g = gtrid(name, i);
    let x = shell::shell_xid(&g);
    let marker = format!("m.{g}");
    let amount = t.amount.to_string();
    expect("start A", a.start(&x, TMNOFLAGS), XA_OK)?;
    if t.single {
        let (lo, hi) = (t.from.min(t.to), t.from.max(t.to));
        let mut bal = BTreeMap::new();
        bal.insert(lo, balance(a, lo)?);
        bal.insert(hi, balance(a, hi)?);
        *bal.get_mut(&t.from).unwrap() -= t.amount;
        *bal.get_mut(&t.to).unwrap() += t.amount;
        for (k, v) in bal {
            set_balance(a, k, v)?;
        }
        expect(
            "marker",
            a.put(marker.as_bytes(), amount.as_bytes()),
            MMXA_OK,
        )?;
        expect("end A", a.end(&x, TMSUCCESS), XA_OK)?;
        expect("commit 1PC", a.commit(&x, TMONEPHASE), XA_OK)?;
        say(&format!("c {g}"));
        return Ok(());
    }
    expect("start B", b.start(&x, TMNOFLAGS), XA_OK)?;
    let from = balance(a, t.from)? - t.amount;
    let to = balance(b, t.to)? + t.amount;
    set_balance(a, t.from, from)?;
    set_balance(b, t.to, to)?;
    expect(
        "marker A",
        a.put(marker.as_bytes(), amount.as_bytes()),
        MMXA_OK,
    )?;
    expect(
        "marker B",
        b.put(marker.as_bytes(), amount.as_bytes()),
        MMXA_OK,
    )?;
    expect("end A", a.end(&x, TMSUCCESS), XA_OK)?;
    expect("end B", b.end(&x, TMSUCCESS), XA_OK)?;
    expect("prepare A", a.prepare(&x), XA_OK)?;
    expect("prepare B", b.prepare(&x), XA_OK)?;
    say(&format!("p {g}"));
    expect("commit A", a.commit(&x, TMNOFLAGS), XA_OK)?;
    expect("commit B", b.commit(&x, TMNOFLAGS), XA_OK)?;
    say(&format!("c {g}"));
    Ok(())
}

/// The balances of a store's accounts, then for each `NAME:LAST` which of the worker's
/// transfers 0..=LAST left a marker: `v0,v1,...;NAME=0110...;...`.
fn tsnap(r: &Rm, _rmid: i32, workers: &[&str]) -> String {
    let mut parts = Vec::new();
    let mut bal = Vec::new();
    for k in 0..ACCOUNTS {
        match r.get(account(k).as_bytes()) {
            Ok(Some(v)) => bal.push(String::from_utf8(v).unwrap()),
            other => return format!("error {}: {other:?}", account(k)),
        }
    }
    parts.push(bal.join(","));
    for w in workers {
        let (name, last) = w.split_once(':').expect("NAME:LAST");
        let last: u64 = last.parse().expect("LAST");
        let mut bits = String::new();
        for i in 0..=last {
            match r.get(format!("m.{}", gtrid(name, i)).as_bytes()) {
                Ok(Some(_)) => bits.push('1'),
                Ok(None) => bits.push('0'),
                Err(rc) => return format!("error marker: {}", failed("get", rc)),
            }
        }
        parts.push(format!("{name}={bits}"));
    }
    parts.join(";")
}

/// A store's balances and markers, from [`tsnap`].
#[derive(Debug, PartialEq, Eq)]
struct Accounts {
    balances: Vec<i64>,
    markers: BTreeMap<String, Vec<bool>>,
}

fn accounts(shell: &mut Shell, rmid: i32, books: &[&Books]) -> Accounts {
    let args: Vec<String> = books
        .iter()
        .filter_map(|b| b.started.map(|l| format!("{}:{l}", b.name)))
        .collect();
    let got = shell.run(&format!("tsnap {rmid} {}", args.join(" ")));
    assert!(!got.starts_with("error"), "tsnap: {got}");
    let mut parts = got.split(';');
    let balances = parts
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let markers = parts
        .map(|p| {
            let (name, bits) = p.split_once('=').unwrap();
            (name.to_string(), bits.chars().map(|c| c == '1').collect())
        })
        .collect();
    Accounts { balances, markers }
}

/// Several workers transfer money between the accounts of two stores (two-phase across
/// both, one-phase within one), and one of them — each in turn, in a random order — is
/// SIGKILLed at a random moment every round and replaced by a new process. The test process
/// acts as their TM: after each death it ends the dead worker's transfer (commit if both
/// branches were prepared, else roll back; from its own shell, which reopens the stores to
/// reap the dead). The survivors never see an error (a lock wait of theirs on the dead
/// worker's keys ends well within the 60 s timeout). At the end: nothing in doubt, every
/// acknowledged transfer present in both stores, none half applied, every balance exactly
/// the initial one plus the transfers whose markers are present, money conserved; and a
/// rebuild from the logs after everyone closed finds the same. It kills for about 30 s
/// (`MMXA_MP_SECS` to change: e.g. 3600 for a long run) or `MMXA_MP_KILLS` times;
/// `MMXA_MP_SEED` replays the choices (not the timing).
#[test]
fn sigkill_of_any_worker_stops_no_one_and_loses_nothing() {
    const T: &str = "sigkill_of_any_worker_stops_no_one_and_loses_nothing";
    serve();
    const WORKERS: usize = 4;
    let env = |v: &str| std::env::var(v).ok().and_then(|v| v.parse::<u64>().ok());
    let kills = env("MMXA_MP_KILLS");
    let budget = Duration::from_secs(env("MMXA_MP_SECS").unwrap_or(30));
    let mut rng = Rng::new(rng::seed("MMXA_MP_SEED", T));
    let started = Instant::now();
    let tmp = fast_dir();
    let ia = open_string(&tmp.path().join("a"), "lock_timeout_ms=60000");
    let ib = open_string(&tmp.path().join("b"), "lock_timeout_ms=60000");
    let stop = |name: &str| tmp.path().join(format!("stop-{name}"));
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("open 1 {ia}"), XA_OK);
    tm.rc(&format!("open 2 {ib}"), XA_OK);
    for k in 0..ACCOUNTS {
        for rmid in [1, 2] {
            tm.rc(&format!("put {rmid} {} {INITIAL}", account(k)), MMXA_OK);
        }
    }
    let spawn = |name: &str| {
        let mut w = Worker::spawn(T, name, &[]);
        w.shell.rc(&format!("open 1 {ia}"), XA_OK);
        w.shell.rc(&format!("open 2 {ib}"), XA_OK);
        w.shell
            .send(&format!("transfer {name} {}", stop(name).display()));
        w
    };
    let mut workers: Vec<Worker> = (0..WORKERS).map(|s| spawn(&format!("w{s}g0"))).collect();
    let mut done: Vec<Books> = Vec::new();
    let mut fates: BTreeMap<String, Fate> = BTreeMap::new();
    let mut order: Vec<usize> = Vec::new();
    let mut kill = 0;
    loop {
        // A fixed number of kills, or rounds (one death of each worker) until the budget is
        // spent, two at least.
        let more = match kills {
            Some(n) => kill < n as usize,
            None => kill % WORKERS != 0 || kill < 2 * WORKERS || started.elapsed() < budget,
        };
        if !more {
            break;
        }
        // Everybody has committed something since the last death.
        for w in workers.iter_mut() {
            w.await_commits(1);
        }
        if kill % WORKERS == 0 {
            order = (0..WORKERS).collect();
            for i in (1..WORKERS).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let slot = order[kill % WORKERS];
        let v = &mut workers[slot];
        if rng.chance(50) {
            for _ in 0..rng.below(8) {
                let l = v.shell.recv();
                v.books.note(&l);
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
        }
        v.shell.sigkill();
        for l in v.shell.rest() {
            v.books.note(&l);
        }
        v.fail_on_error();
        // As the TM: reap (reopening), then end the dead worker's transfer.
        for (rmid, info) in [(1, &ia), (2, &ib)] {
            tm.rc(&format!("close {rmid}"), XA_OK);
            tm.rc(&format!("open {rmid} {info}"), XA_OK);
        }
        if let Some(i) = v.books.started.filter(|i| !v.books.committed.contains(i)) {
            let g = gtrid(&v.books.name, i);
            let t = transfer_of(&v.books.name, i);
            let rmids: &[i32] = if t.single { &[1] } else { &[1, 2] };
            let decided = v.books.prepared.contains(&i);
            for rmid in rmids {
                let cmd = if decided {
                    format!("commit {rmid} {g} {TMNOFLAGS}")
                } else {
                    format!("rollback {rmid} {g}")
                };
                let got = tm.run(&cmd);
                assert!(
                    got == XA_OK.to_string() || got == XAER_NOTA.to_string(),
                    "TM {cmd} -> {got}"
                );
            }
            let fate = match (decided, t.single) {
                (true, _) => Fate::Committed,
                // The one-phase commit may have been logged before the death.
                (false, true) => Fate::Uncertain,
                (false, false) => Fate::RolledBack,
            };
            fates.insert(g, fate);
        }
        let name = format!("w{slot}g{}", kill + 1);
        let old = std::mem::replace(&mut workers[slot], spawn(&name));
        done.push(old.books);
        kill += 1;
    }
    for mut w in workers {
        w.stop(&stop(&w.books.name));
        w.shell.rc("close 1", XA_OK);
        w.shell.rc("close 2", XA_OK);
        assert!(w.shell.finish().success());
        done.push(w.books);
    }
    let books: Vec<&Books> = done.iter().collect();
    for rmid in [1, 2] {
        assert_eq!(
            tm.run(&format!("recover {rmid}")),
            "0 ",
            "in doubt at the end"
        );
    }
    let a = accounts(&mut tm, 1, &books);
    let b = accounts(&mut tm, 2, &books);
    let mut want = [
        vec![INITIAL; ACCOUNTS as usize],
        vec![INITIAL; ACCOUNTS as usize],
    ];
    let mut acked = 0;
    for bk in &books {
        let Some(last) = bk.started else { continue };
        for i in 0..=last {
            let g = gtrid(&bk.name, i);
            let t = transfer_of(&bk.name, i);
            let in_a = a.markers[&bk.name][i as usize];
            let in_b = b.markers[&bk.name][i as usize];
            if t.single {
                assert!(!in_b, "{g}: a marker in B");
            } else {
                assert_eq!(in_a, in_b, "{g} half applied");
            }
            let committed = bk.committed.contains(&i);
            acked += committed as usize;
            match fates.get(&g) {
                _ if committed => assert!(in_a, "acknowledged {g} lost"),
                Some(Fate::Committed) => assert!(in_a, "{g}: decided to commit, lost"),
                Some(Fate::RolledBack) => assert!(!in_a, "{g}: rolled back, present"),
                Some(Fate::Uncertain) => {}
                _ => panic!("{g}: neither acknowledged nor ended by the TM"),
            }
            if in_a {
                want[0][t.from as usize] -= t.amount;
                want[if t.single { 0 } else { 1 }][t.to as usize] += t.amount;
            }
        }
    }
    assert_eq!(a.balances, want[0], "store A's balances");
    assert_eq!(b.balances, want[1], "store B's balances");
    let total: i64 = a.balances.iter().chain(&b.balances).sum();
    assert_eq!(total, 2 * ACCOUNTS as i64 * INITIAL, "money conserved");
    // Everyone gone: a rebuild from the logs (other settings prove nobody has them open)
    // finds the same.
    assert!(tm.finish().success());
    let mut r = Shell::spawn(T, "rebuilt");
    for (rmid, d) in [(1, "a"), (2, "b")] {
        let other = open_string(&tmp.path().join(d), "lock_timeout_ms=59999");
        r.rc(&format!("open {rmid} {other}"), XA_OK);
        assert_eq!(r.run(&format!("recover {rmid}")), "0 ");
    }
    assert_eq!(accounts(&mut r, 1, &books), a, "store A rebuilt");
    assert_eq!(accounts(&mut r, 2, &books), b, "store B rebuilt");
    let uncertain = fates.values().filter(|f| **f == Fate::Uncertain).count();
    eprintln!(
        "{T}: {WORKERS} workers, {kill} kills, {acked} acknowledged transfers checked ({} \
         transfers begun, {} ended by the TM, {uncertain} of them uncertain), in {:.1} s",
        books
            .iter()
            .map(|b| b.started.map_or(0, |l| l + 1))
            .sum::<u64>(),
        fates.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---- 5. a stopped process ------------------------------------------------------------------

/// A process stopped (SIGSTOP) while it holds a key lock, outside any section: others time out
/// on that key only (`MMXA_ELOCKTIMEOUT`, 300 ms timeout), work on other keys goes on, a new
/// process opens the store (a stopped process is not a dead one: nothing of it is reaped), and
/// after SIGCONT the stopped process goes on where it was.
#[test]
fn a_stopped_process_delays_only_the_keys_it_holds() {
    const T: &str = "a_stopped_process_delays_only_the_keys_it_holds";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=300");
    let mut p = open_all(T, &info, &["stopped", "other"]);
    p[1].rc("put 1 k before", MMXA_OK);
    p[0].rc("start 1 x 0", XA_OK);
    p[0].rc("put 1 k stopped", MMXA_OK);
    p[0].rc("start 1 y 0", XAER_PROTO);
    p[0].signal(libc::SIGSTOP);
    // The key it holds: a timeout, the branch rollback-only.
    p[1].rc("start 1 a 0", XA_OK);
    p[1].rc("put 1 other1 a", MMXA_OK);
    p[1].rc("put 1 k a", MMXA_ELOCKTIMEOUT);
    p[1].rc(&format!("end 1 a {TMSUCCESS}"), XA_RBTIMEOUT);
    p[1].rc("rollback 1 a", XA_OK);
    // Reads of committed data and work on other keys go on.
    assert_eq!(p[1].get(1, "k").as_deref(), Some("before"));
    p[1].rc("start 1 b 0", XA_OK);
    p[1].rc("put 1 other2 b", MMXA_OK);
    p[1].rc(&format!("end 1 b {TMSUCCESS}"), XA_OK);
    p[1].rc("prepare 1 b", XA_OK);
    p[1].rc(&format!("commit 1 b {TMNOFLAGS}"), XA_OK);
    let mut late = Shell::spawn(T, "late");
    late.rc(&format!("open 1 {info}"), XA_OK);
    late.rc("put 1 other3 late", MMXA_OK);
    late.rc("put 1 k late", MMXA_ELOCKTIMEOUT);
    assert_eq!(late.get(1, "other2").as_deref(), Some("b"));
    p[0].signal(libc::SIGCONT);
    // It goes on: its branch and its lock are as it left them.
    p[0].rc("put 1 k2 stopped", MMXA_OK);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("stopped"));
    p[0].rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 x {TMONEPHASE}"), XA_OK);
    p[1].rc("put 1 k after", MMXA_OK);
    assert_eq!(late.get(1, "k").as_deref(), Some("after"));
    assert_eq!(late.get(1, "k2").as_deref(), Some("stopped"));
}

// ---- 6. isolation across processes ---------------------------------------------------------

/// A read in a branch (serializable: a shared lock) in one process blocks a writer in another
/// until the reader's branch ends, and a write blocks a reader likewise: with a short timeout
/// the blocked request times out, with a long one it goes on when the other branch ends (the
/// reader then sees the value committed).
/// A process that dies with thousands of branches (each suspended, each holding a key) is
/// reaped in as many sections as that takes: a peer waiting for one of its keys gets it, every
/// branch is rolled back, and a process opening afterwards claims a slot as usual.
#[test]
fn a_process_dying_with_thousands_of_branches_is_reaped_in_steps() {
    const T: &str = "a_process_dying_with_thousands_of_branches_is_reaped_in_steps";
    const N: usize = 3000;
    serve();
    let tmp = fast_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000;sync=none");
    let mut p = open_all(T, &info, &["many", "peer"]);
    for i in 0..N {
        p[0].rc(&format!("start 1 m{i} 0"), XA_OK);
        p[0].rc(&format!("put 1 k{i} v"), MMXA_OK);
        p[0].rc(&format!("end 1 m{i} {TMSUSPEND}"), XA_OK);
    }
    p[1].send(&format!("put 1 k{} peer", N - 1));
    p[0].await_waits(1, 1);
    p[0].sigkill();
    assert_eq!(
        p[1].recv_within(PROMPT, "the write waiting for the dead process's key"),
        MMXA_OK.to_string()
    );
    assert!(p[1].recover(1).is_empty(), "every branch was rolled back");
    assert_eq!(p[1].get(1, "k0"), None);
    assert_eq!(p[1].get(1, &format!("k{}", N - 1)).as_deref(), Some("peer"));
    let mut later = Shell::spawn(T, "later");
    later.rc(&format!("open 1 {info}"), XA_OK);
    later.rc("put 1 k0 later", MMXA_OK);
}

/// A range scanned in one process (serializable) takes no phantom from another until the
/// scanner prepares; a scanner killed with its gap locks loses them to the reaper.
#[test]
fn a_range_scanned_in_one_process_takes_no_phantom_from_another() {
    const T: &str = "a_range_scanned_in_one_process_takes_no_phantom_from_another";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["scanner", "writer"]);
    for k in ["b", "d", "f"] {
        p[0].rc(&format!("put 1 {k} 0"), MMXA_OK);
    }
    p[0].rc("start 1 s 0", XA_OK);
    assert_eq!(p[0].run("scan 1 b e 0"), "0 b,d");
    p[1].rc("start 1 w 0", XA_OK);
    p[1].send("put 1 c phantom");
    p[0].await_waits(1, 1);
    assert_eq!(
        p[0].run("scan 1 b e 0"),
        "0 b,d",
        "no phantom in the same branch"
    );
    p[0].rc(&format!("end 1 s {TMSUCCESS}"), XA_OK);
    p[0].rc("prepare 1 s", XA_RDONLY);
    assert_eq!(
        p[1].recv_within(PROMPT, "the insert waiting for the scan"),
        MMXA_OK.to_string()
    );
    p[1].rc(&format!("end 1 w {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 1 w {TMONEPHASE}"), XA_OK);
    // A scanner that dies holding its locks: the insert goes on once it is reaped.
    p[0].rc("txn_begin 1", MMXA_OK);
    assert_eq!(
        p[0].run("scan 1 - - 8"),
        "0 b,c,d,f",
        "prefix of nothing: every key"
    );
    p[1].send("put 1 e late");
    p[0].await_waits(1, 1);
    p[0].sigkill();
    assert_eq!(
        p[1].recv_within(PROMPT, "the insert after the scanner died"),
        MMXA_OK.to_string()
    );
    assert_eq!(p[1].run("scan 1 - - 1"), "0 f,e,d,c,b");
}

#[test]
fn a_read_lock_in_one_process_blocks_a_writer_in_another() {
    const T: &str = "a_read_lock_in_one_process_blocks_a_writer_in_another";
    serve();
    let tmp = private_dir();
    let long = open_string(&tmp.path().join("long"), "lock_timeout_ms=60000");
    let short = open_string(&tmp.path().join("short"), "lock_timeout_ms=100");
    let mut p: Vec<Shell> = ["reader", "writer"]
        .iter()
        .map(|n| {
            let mut s = Shell::spawn(T, n);
            s.rc(&format!("open 1 {long}"), XA_OK);
            s.rc(&format!("open 2 {short}"), XA_OK);
            s
        })
        .collect();
    for rmid in [1, 2] {
        p[0].rc(&format!("put {rmid} k v0"), MMXA_OK);
    }
    // Read, then write.
    p[0].rc("start 2 r 0", XA_OK);
    assert_eq!(p[0].get(2, "k").as_deref(), Some("v0"));
    p[1].rc("start 2 w 0", XA_OK);
    p[1].rc("put 2 k v1", MMXA_ELOCKTIMEOUT);
    p[1].rc(&format!("end 2 w {TMSUCCESS}"), XA_RBTIMEOUT);
    p[1].rc("rollback 2 w", XA_OK);
    p[0].rc(&format!("end 2 r {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 2 r {TMONEPHASE}"), XA_OK);
    p[0].rc("start 1 r 0", XA_OK);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("v0"));
    p[1].rc("start 1 w 0", XA_OK);
    p[1].send("put 1 k v1");
    p[0].await_waits(1, 1);
    assert_eq!(p[0].get(1, "k").as_deref(), Some("v0"), "a repeatable read");
    p[0].rc(&format!("end 1 r {TMSUCCESS}"), XA_OK);
    p[0].rc("prepare 1 r", XA_RDONLY);
    assert_eq!(
        p[1].recv_within(PROMPT, "the write waiting for the read lock"),
        MMXA_OK.to_string()
    );
    // Write, then read.
    p[0].rc("start 2 r2 0", XA_OK);
    p[1].rc("start 2 w2 0", XA_OK);
    p[1].rc("put 2 k v2", MMXA_OK);
    p[0].rc("get 2 k", MMXA_ELOCKTIMEOUT);
    p[0].rc(&format!("end 2 r2 {TMSUCCESS}"), XA_RBTIMEOUT);
    p[0].rc("rollback 2 r2", XA_OK);
    p[0].rc("start 1 r2 0", XA_OK);
    p[0].send("get 1 k");
    p[1].await_waits(1, 1);
    p[1].rc(&format!("end 1 w {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 1 w {TMONEPHASE}"), XA_OK);
    assert_eq!(
        p[0].recv_within(PROMPT, "the read waiting for the write lock"),
        "0 v1"
    );
    p[0].rc(&format!("end 1 r2 {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 r2 {TMONEPHASE}"), XA_OK);
    p[1].rc(&format!("end 2 w2 {TMSUCCESS}"), XA_OK);
    p[1].rc(&format!("commit 2 w2 {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(2, "k").as_deref(), Some("v2"));
}

/// Two processes read one key in their branches (shared locks), then both write it: the
/// second upgrade closes a cycle and fails at once with `MMXA_EDEADLOCK`; the first gets its
/// exclusive lock once the loser rolls back, and its write is the one committed.
#[test]
fn readers_upgrading_in_two_processes_deadlock_and_one_goes_on() {
    const T: &str = "readers_upgrading_in_two_processes_deadlock_and_one_goes_on";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("put 1 n 10", MMXA_OK);
    p[0].rc("start 1 u1 0", XA_OK);
    p[1].rc("start 1 u2 0", XA_OK);
    assert_eq!(p[0].get(1, "n").as_deref(), Some("10"));
    assert_eq!(p[1].get(1, "n").as_deref(), Some("10"));
    p[0].send("put 1 n 11");
    p[1].await_waits(1, 1);
    p[1].send("put 1 n 12");
    assert_eq!(
        p[1].recv_within(PROMPT, "the second upgrade"),
        MMXA_EDEADLOCK.to_string()
    );
    p[1].rc(&format!("end 1 u2 {TMSUCCESS}"), XA_RBDEADLOCK);
    p[1].rc("rollback 1 u2", XA_OK);
    assert_eq!(
        p[0].recv_within(PROMPT, "the first upgrade"),
        MMXA_OK.to_string()
    );
    p[0].rc(&format!("end 1 u1 {TMSUCCESS}"), XA_OK);
    p[0].rc("prepare 1 u1", XA_OK);
    p[1].rc(&format!("commit 1 u1 {TMNOFLAGS}"), XA_OK);
    assert_eq!(p[1].get(1, "n").as_deref(), Some("11"));
}

// ---- 7. access -----------------------------------------------------------------------------

/// Opens `dir` with `extra` settings in `shell` and answers the code and mmxa's message.
fn open_answer(shell: &mut Shell, dir: &Path, extra: &str) -> (i32, String) {
    let got = shell.run(&format!("open 1 {}", open_string(dir, extra)));
    let code: i32 = got.parse().expect("an XA code");
    let msg = if code == XA_OK {
        shell.rc("close 1", XA_OK);
        String::new()
    } else {
        shell.run("lasterr")
    };
    (code, msg)
}

/// A store directory other users can reach (0755; 0770 without `shared_group=1`; 0775 even
/// with it) is refused at `xa_open` with `XAER_RMERR` and a message naming its mode and the
/// remedy; 0700, and 0770 with `shared_group=1`, are accepted.
#[test]
fn a_store_directory_others_can_reach_is_refused() {
    const T: &str = "a_store_directory_others_can_reach_is_refused";
    serve();
    let tmp = private_dir();
    let mut p = Shell::spawn(T, "p");
    let cases: &[(u32, &str, bool, &[&str])] = &[
        (
            0o755,
            "",
            false,
            &["mode 755", "chmod 700", "shared_group=1"],
        ),
        (
            0o770,
            "",
            false,
            &["mode 770", "chmod 700", "shared_group=1"],
        ),
        (0o707, "", false, &["mode 707"]),
        (0o775, "shared_group=1", false, &["mode 775", "chmod 770"]),
        (0o700, "", true, &[]),
        (0o770, "shared_group=1", true, &[]),
        (0o750, "shared_group=1", true, &[]),
    ];
    for (i, &(mode, extra, accepted, words)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("s{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, msg) = open_answer(&mut p, &dir, extra);
        let what = format!("a {mode:03o} directory with {extra:?}");
        if accepted {
            assert_eq!(code, XA_OK, "{what}: {msg}");
        } else {
            assert_eq!(code, XAER_RMERR, "{what}: {msg}");
            for w in words {
                assert!(msg.contains(w), "{what}: {msg:?} does not say {w:?}");
            }
            assert!(
                std::fs::read_dir(&dir).unwrap().next().is_none(),
                "{what}: refused, yet files were created"
            );
        }
    }
}

/// Every file a store creates — `mmxa.lock`, `mmxa.shm`, the segments `log-*.seg` (the first,
/// and one from a roll), `mmxa.audit` — has mode 0600, or 0660 with `shared_group=1`, even in
/// a process whose umask is 000 (and a missing directory is created 0700, or 0770).
#[test]
fn store_files_have_the_store_mode_whatever_the_umask() {
    const T: &str = "store_files_have_the_store_mode_whatever_the_umask";
    serve();
    let tmp = private_dir();
    for (shared, file_mode, dir_mode) in [(false, 0o600, 0o700), (true, 0o660, 0o770)] {
        let dir = tmp.path().join(format!("store-{shared}"));
        let info = open_string(&dir, &format!("shared_group={}", shared as u8));
        let mut p = Shell::spawn(T, "umask0");
        p.run("umask 0");
        p.rc(&format!("openk 1 64 {info}"), XA_OK);
        p.rc("start 1 x 0", XA_OK);
        p.rc("put 1 k v", MMXA_OK);
        p.rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
        p.rc("prepare 1 x", XA_OK);
        p.rc("heur 1 x rollback", XA_OK);
        // Enough to roll to a second segment of 64 KiB.
        let big = "v".repeat(3000);
        for i in 0..40 {
            p.rc(&format!("put 1 big{i} {big}"), MMXA_OK);
        }
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), dir_mode, "the directory, shared_group={shared}");
        let mut names = BTreeSet::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert_eq!(
                mode(&e.path()),
                file_mode,
                "{name}, shared_group={shared}, umask 000"
            );
            names.insert(if name.ends_with(".seg") {
                "log-*.seg".to_string()
            } else {
                name
            });
        }
        let segments = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count();
        assert!(segments >= 2, "no roll: {segments} segment(s)");
        for f in ["mmxa.lock", "mmxa.shm", "log-*.seg", "mmxa.audit"] {
            assert!(names.contains(f), "{f} missing from {names:?}");
        }
        p.rc("forget 1 x", XA_OK);
        p.rc("close 1", XA_OK);
    }
}

// ---- 8. forks and settings ---------------------------------------------------------------

/// Kills a process by pid (a grandchild the test does not own as a `Child`).
fn kill_pid(pid: &str) {
    let pid: libc::pid_t = pid.parse().expect("a pid");
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A child created by `fork` without `exec` keeps nothing of its parent's store alive: when
/// the parent dies, its lock is released promptly although the child lingers with copies of
/// its descriptors; and once every process that opened the store is dead, the next opener
/// rebuilds it (it may even use other settings, and the idle branch a dead process left is
/// gone) although both children still live.
#[test]
fn a_forked_child_keeps_nothing_alive() {
    const T: &str = "a_forked_child_keeps_nothing_alive";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["p1", "p2"]);
    p[0].rc("start 1 i 0", XA_OK);
    p[0].rc("put 1 ki p1", MMXA_OK);
    p[0].rc(&format!("end 1 i {TMSUCCESS}"), XA_OK);
    p[1].rc("start 1 g 0", XA_OK);
    p[1].rc("put 1 kg p2", MMXA_OK);
    let c1 = p[0].run("fork_sleep");
    let c2 = p[1].run("fork_sleep");
    p[1].sigkill();
    p[0].rc("start 1 h 0", XA_OK);
    p[0].send("put 1 kg p1");
    assert_eq!(
        p[0].recv_within(PROMPT, "the put of the dead process's key"),
        MMXA_OK.to_string()
    );
    p[0].rc(&format!("end 1 h {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 h {TMONEPHASE}"), XA_OK);
    p[0].sigkill();
    // Only the forked children live: other settings are accepted, as by a rebuild.
    let mut next = Shell::spawn(T, "next");
    let other = open_string(tmp.path(), "lock_timeout_ms=59999");
    next.rc(&format!("open 1 {other}"), XA_OK);
    next.rc("rollback 1 i", XAER_NOTA);
    assert_eq!(next.get(1, "ki"), None);
    assert_eq!(next.get(1, "kg").as_deref(), Some("p1"));
    kill_pid(&c1);
    kill_pid(&c2);
}

/// A child created by `fork` without `exec` cannot use its parent's store: its calls answer
/// `XAER_PROTO` (data calls: not open) until it opens the store itself, as a peer of its own;
/// the parent goes on.
#[test]
fn a_forked_child_must_open_the_store_itself() {
    const T: &str = "a_forked_child_must_open_the_store_itself";
    serve();
    let tmp = private_dir();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p = open_all(T, &info, &["parent"]);
    p[0].rc("put 1 k parent", MMXA_OK);
    let got = p[0].run(&format!(
        "fork_run start 1 c 0 | put 1 k child | open 1 {info} | start 1 c 0 | put 1 k child | \
         end 1 c {TMSUCCESS} | commit 1 c {TMONEPHASE} | close 1"
    ));
    let answers: Vec<&str> = got.split('|').collect();
    assert_eq!(answers.len(), 8, "{got}");
    assert_eq!(
        answers[0],
        XAER_PROTO.to_string(),
        "xa_start before xa_open: {got}"
    );
    assert_ne!(
        answers[1],
        MMXA_OK.to_string(),
        "a put before xa_open: {got}"
    );
    assert!(
        answers[2..]
            .iter()
            .all(|a| *a == XA_OK.to_string() || *a == MMXA_OK.to_string()),
        "after its own xa_open: {got}"
    );
    assert_eq!(p[0].get(1, "k").as_deref(), Some("child"));
    p[0].rc("put 1 k parent2", MMXA_OK);
    p[0].rc("close 1", XA_OK);
}

/// While a process has the store open, another that asks for other settings — `sync`,
/// `lock_timeout_ms`, `segment_mb`, `orphan_rollback_s`, `isolation` — is refused with
/// `XAER_INVAL` and a message saying so; the same settings are accepted; once nobody has it
/// open, any settings are.
#[test]
fn processes_with_other_settings_are_refused() {
    const T: &str = "processes_with_other_settings_are_refused";
    serve();
    let tmp = private_dir();
    let base = "lock_timeout_ms=60000;segment_mb=4";
    let info = |extra: &str| format!("dir={};{extra}", tmp.path().display());
    let mut first = Shell::spawn(T, "first");
    first.rc(&format!("open 1 {}", info(base)), XA_OK);
    let mut other = Shell::spawn(T, "other");
    for variant in [
        "sync=none;lock_timeout_ms=60000;segment_mb=4",
        "sync=fdatasync;lock_timeout_ms=60000;segment_mb=4",
        "lock_timeout_ms=5;segment_mb=4",
        "lock_timeout_ms=60000;segment_mb=8",
        "lock_timeout_ms=60000;segment_mb=4;orphan_rollback_s=100",
        "lock_timeout_ms=60000;segment_mb=4;isolation=read_committed",
    ] {
        other.rc(&format!("open 1 {}", info(variant)), XAER_INVAL);
        let msg = other.run("lasterr");
        assert!(msg.contains("other settings"), "{variant}: {msg}");
    }
    other.rc(
        &format!(
            "open 1 {}",
            info("sync=msync;isolation=serializable;lock_timeout_ms=60000;segment_mb=4")
        ),
        XA_OK,
    );
    other.rc("put 1 k v", MMXA_OK);
    other.rc("close 1", XA_OK);
    first.rc("close 1", XA_OK);
    assert!(first.finish().success());
    other.rc(
        &format!(
            "open 1 {}",
            info("lock_timeout_ms=5;isolation=read_committed")
        ),
        XA_OK,
    );
    assert_eq!(other.get(1, "k").as_deref(), Some("v"));
}
