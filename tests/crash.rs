//! Crash safety with real processes and SIGKILL (style.md practice 14).
//!
//! The test binary re-executes itself as a child (`--exact <test> --nocapture`, with the store
//! directory in `MMXA_CRASH_CHILD`). The child opens the store through the C entry points,
//! keeps background threads busy with unprepared work (active, idle, suspended, migrated and
//! rollback-only branches that are never prepared, plus self-committing local writes), and in
//! its main thread runs numbered transactions, printing an acknowledgement after each `XA_OK`.
//! The parent kills the child with SIGKILL right after reading a chosen acknowledgement, then —
//! as a new process for the store — reopens it and checks the XA promises exactly:
//!
//! - two-phase: `xa_recover` lists exactly the acknowledged prepared XIDs (no more, no fewer,
//!   no duplicates), their writes are invisible and their keys still locked until the parent
//!   commits or rolls them back, and no unprepared write ever becomes visible;
//! - one-phase: every acknowledged commit is there after the kill, nothing is in doubt.
//!
//! Each test repeats the kill cycle on one store, so later rounds recover a log that already
//! went through earlier crashes and recoveries (and reuse the unprepared branches' XIDs).
//! The kill points are random; the seed is printed and can be fixed with `MMXA_CRASH_SEED`.
//! A child that prints nothing for 60 s is killed and the test fails.

mod ffi_common;
mod rng;

use ffi_common::{check, xid, xid_key, Rm};
use mmxa::ffi::abi::Xid;
use mmxa::status::{MMXA_ELOCKTIMEOUT, MMXA_OK};
use mmxa::xa::*;
use rng::Rng;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PREPARE_TEST: &str = "prepared_branches_survive_sigkill";
const ONE_PHASE_TEST: &str = "one_phase_commits_survive_sigkill";

/// Set in the child: the store directory.
const ENV_DIR: &str = "MMXA_CRASH_CHILD";
/// Set in the child: `prepare` or `onephase`.
const ENV_MODE: &str = "MMXA_CRASH_MODE";
/// Set in the child: the number of its first transaction.
const ENV_FIRST: &str = "MMXA_CRASH_FIRST";
/// Optional: a fixed seed for the kill points.
const ENV_SEED: &str = "MMXA_CRASH_SEED";

const CHILD_RMID: i32 = 7;
const ROUNDS: usize = 5;
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts every line the child sends the parent. The child's test harness writes to the same
/// stdout (`test <name> ... ` without a newline, before the test runs), so the parent looks
/// for this marker anywhere in a line.
const MARK: &str = "@mmxa-crash@ ";

const JUNK_THREADS: usize = 3;
/// Branches each junk thread parks at start and never completes, with how they are parked.
const PARKED: [(&str, i64); 4] = [
    ("idle", TMSUCCESS),
    ("susp", TMSUSPEND),
    ("migr", TMSUSPEND | TMMIGRATE),
    ("fail", TMFAIL),
];
const PARKED_KEYS: usize = 8;
const WORK_KEYS: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Each transaction is prepared; the child waits for "go" after each acknowledgement.
    Prepare,
    /// Each transaction commits with `TMONEPHASE`; the child never waits.
    OnePhase,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Prepare => "prepare",
            Mode::OnePhase => "onephase",
        }
    }

    /// The acknowledgement's word.
    fn ack(self) -> &'static str {
        match self {
            Mode::Prepare => "prepared",
            Mode::OnePhase => "committed",
        }
    }
}

/// The XID of the main thread's transaction `i`.
fn main_xid(i: u64) -> Xid {
    xid(0x6d6d_7861, format!("crash-{i}").as_bytes(), b"main")
}

fn key(i: u64) -> String {
    format!("key-{i}")
}

fn val(i: u64) -> String {
    format!("val-{i}")
}

/// Every key a junk thread may write in a branch (none of them may ever become visible).
fn junk_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for t in 0..JUNK_THREADS {
        for (kind, _) in PARKED {
            keys.extend((0..PARKED_KEYS).map(|j| format!("junk-{t}-{kind}-{j}")));
        }
        keys.extend((0..WORK_KEYS).map(|j| format!("junk-{t}-work-{j}")));
    }
    keys
}

// ---- the child --------------------------------------------------------------------------

/// Reports a failure to the parent on stdout and exits (the parent then fails the test).
fn child_fail(msg: &str) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}error: {msg} ({:?})", ffi_common::last_error());
    let _ = out.flush();
    std::process::exit(2)
}

fn child_check(what: &str, got: i32, want: &[i32]) {
    if !want.contains(&got) {
        child_fail(&format!("{what}: got {got}, expected one of {want:?}"));
    }
}

fn child_put(rm: &Rm, key: &str, value: &str) {
    child_check(
        &format!("mmxa_put({key:?})"),
        rm.put(key.as_bytes(), value.as_bytes()),
        &[MMXA_OK],
    );
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{MARK}{line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0); // the parent is gone
    }
}

/// Batches of junk work done by all junk threads so far (the main thread paces itself by it,
/// so that unprepared work is really interleaved with, and in progress at, every kill).
static JUNK_BATCHES: AtomicU64 = AtomicU64::new(0);

/// Waits until the junk threads have done `n` more batches since `*seen`.
fn wait_for_junk(seen: &mut u64, n: u64) {
    let deadline = Instant::now() + LINE_TIMEOUT;
    while JUNK_BATCHES.load(Ordering::Acquire) < *seen + n {
        if Instant::now() > deadline {
            child_fail("the junk threads made no progress");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    *seen = JUNK_BATCHES.load(Ordering::Acquire);
}

/// Endless work that is never prepared: parked branches, then branch after branch of writes
/// that end in a rollback, with a self-committing local write now and then.
fn junk(rm: Rm, t: usize) {
    child_check("junk xa_open", rm.open(), &[XA_OK]);
    let jx = |kind: &str, n: u64| xid(0x6a75_6e6b, format!("junk-{t}-{kind}-{n}").as_bytes(), b"j");
    for (kind, end_flags) in PARKED {
        let x = jx(kind, 0);
        child_check("junk xa_start", rm.start(&x, TMNOFLAGS), &[XA_OK]);
        for j in 0..PARKED_KEYS {
            child_put(&rm, &format!("junk-{t}-{kind}-{j}"), kind);
        }
        let want = if end_flags == TMFAIL {
            XA_RBROLLBACK
        } else {
            XA_OK
        };
        child_check("junk xa_end", rm.end(&x, end_flags), &[want]);
    }
    for n in 0u64.. {
        let x = jx("work", n);
        child_check("junk xa_start", rm.start(&x, TMNOFLAGS), &[XA_OK]);
        for batch in 0..20 {
            for j in 0..10 {
                let k = format!("junk-{t}-work-{}", (batch * 10 + j) % WORK_KEYS);
                child_put(&rm, &k, &format!("junk-{n}"));
            }
            child_put(&rm, &format!("local-{t}"), &format!("{n}-{batch}"));
            JUNK_BATCHES.fetch_add(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(1));
        }
        if n % 2 == 0 {
            child_check("junk xa_end", rm.end(&x, TMSUCCESS), &[XA_OK]);
        } else {
            child_check("junk xa_end(TMFAIL)", rm.end(&x, TMFAIL), &[XA_RBROLLBACK]);
        }
        let rc = rm.rollback(&x);
        child_check("junk xa_rollback", rc, &[XA_OK, XA_RBROLLBACK]);
    }
}

fn child(mode: Mode) -> ! {
    let dir = PathBuf::from(std::env::var_os(ENV_DIR).expect("store directory"));
    let first: u64 = std::env::var(ENV_FIRST)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| child_fail("MMXA_CRASH_FIRST is not set"));
    let rm = Rm::new(CHILD_RMID, &dir, "");
    child_check("xa_open", rm.open(), &[XA_OK]);
    for t in 0..JUNK_THREADS {
        let rm = rm.clone();
        std::thread::spawn(move || junk(rm, t));
    }
    let stdin = std::io::stdin();
    let mut seen = 0;
    for i in first.. {
        wait_for_junk(&mut seen, 2 * JUNK_THREADS as u64);
        let x = main_xid(i);
        child_check("xa_start", rm.start(&x, TMNOFLAGS), &[XA_OK]);
        child_put(&rm, &key(i), &val(i));
        child_check("xa_end", rm.end(&x, TMSUCCESS), &[XA_OK]);
        match mode {
            Mode::Prepare => {
                child_check("xa_prepare", rm.prepare(&x), &[XA_OK]);
                say(&format!("prepared {i}"));
                let mut line = String::new();
                match stdin.lock().read_line(&mut line) {
                    Ok(0) | Err(_) => std::process::exit(0), // the parent is gone
                    Ok(_) if line.trim() == "go" => {}
                    Ok(_) => child_fail(&format!("unexpected input {line:?}")),
                }
            }
            Mode::OnePhase => {
                child_check("xa_commit(TMONEPHASE)", rm.commit(&x, TMONEPHASE), &[XA_OK]);
                say(&format!("committed {i}"));
            }
        }
    }
    unreachable!("transaction numbers ran out")
}

/// In a child process for `mode`, runs the child and never returns. Returns whether this is a
/// child process at all (a child for the other mode must not run the parent's rounds).
fn maybe_child(mode: Mode) -> bool {
    if std::env::var_os(ENV_DIR).is_none() {
        return false;
    }
    if std::env::var(ENV_MODE).as_deref() == Ok(mode.name()) {
        child(mode)
    }
    true
}

// ---- the parent -------------------------------------------------------------------------

/// A child process that is SIGKILLed and reaped if the test fails while it runs.
struct ChildGuard(Child);

impl ChildGuard {
    fn pid(&self) -> libc::pid_t {
        self.0.id() as libc::pid_t
    }

    /// SIGKILL (not `Child::kill`, to name the signal) and reap; returns the wait status.
    fn sigkill(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        self.0.wait().expect("wait for the killed child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: as in `sigkill`; try_wait said it is still running, so not reaped.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// Runs one child from transaction `first`, kills it with SIGKILL right after its `target`-th
/// acknowledgement, and returns every acknowledged transaction number (in the one-phase mode
/// also those whose lines were already in the pipe when the child died).
fn run_child(mode: Mode, test: &str, dir: &Path, first: u64, target: usize) -> Vec<u64> {
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir)
            .env(ENV_MODE, mode.name())
            .env(ENV_FIRST, first.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child"),
    );
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut stdin = child.0.stdin.take().expect("child stdin");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Text that is not ours (the child's test harness talks too) is ignored.
    let parse = |line: &str, next: u64| -> Option<u64> {
        let (_, msg) = line.split_once(MARK)?;
        let (word, number) = msg.split_once(' ').unwrap_or((msg, ""));
        if word != mode.ack() {
            panic!("the child failed: {msg}");
        }
        let i: u64 = number.trim().parse().expect("a transaction number");
        assert_eq!(i, next, "acknowledgements arrive in order");
        Some(i)
    };

    let mut acked = Vec::new();
    loop {
        let line = match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let status = child.sigkill();
                panic!("no line from the child within {LINE_TIMEOUT:?}; killed ({status})");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait();
                panic!("the child exited before its acknowledgements: {status:?}");
            }
        };
        let Some(i) = parse(&line, first + acked.len() as u64) else {
            continue;
        };
        acked.push(i);
        if acked.len() == target {
            break;
        }
        if mode == Mode::Prepare {
            writeln!(stdin, "go")
                .and_then(|()| stdin.flush())
                .expect("write go");
        }
    }
    let status = child.sigkill();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child died by SIGKILL"
    );
    drop(stdin);
    // Whatever the child printed before it died.
    for line in rx.iter() {
        if let Some(i) = parse(&line, first + acked.len() as u64) {
            assert_eq!(
                mode,
                Mode::OnePhase,
                "a prepare was acknowledged after the last go: {i}"
            );
            acked.push(i);
        }
    }
    reader.join().expect("reader thread");
    acked
}

/// Checks what must hold after every reopen, whatever the mode.
fn check_common(rm: &Rm, committed: &BTreeSet<u64>, absent: &BTreeSet<u64>, next: u64) {
    for k in junk_keys() {
        assert_eq!(rm.get_str(&k), None, "unprepared write {k} is visible");
    }
    for &i in committed {
        assert_eq!(
            rm.get_str(&key(i)),
            Some(val(i)),
            "committed {} lost",
            key(i)
        );
    }
    for &i in absent {
        assert_eq!(rm.get_str(&key(i)), None, "rolled back {} visible", key(i));
    }
    for i in next..next + 3 {
        assert_eq!(
            rm.get_str(&key(i)),
            None,
            "never acknowledged {} visible",
            key(i)
        );
    }
}

fn in_doubt_keys(set: &BTreeSet<u64>) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = set.iter().map(|&i| xid_key(&main_xid(i))).collect();
    v.sort();
    v
}

/// Kill rounds for two-phase transactions. Of each round's acknowledged prepares, the first is
/// rolled back (if there are two or more), the last is carried prepared into the next round's
/// crash (except in the final round), and the rest are committed.
fn two_phase_rounds(rmid: i32) {
    let dir = ffi_common::private_dir();
    // lock_timeout_ms=0: a write to a key a prepared branch holds fails at once.
    let rm = Rm::new(rmid, dir.path(), "lock_timeout_ms=0");
    let mut rng = Rng::new(rng::seed(ENV_SEED, "crash test"));
    let (mut committed, mut absent, mut carried) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let target = rng.range(1, 8) as usize;
        let acked = run_child(Mode::Prepare, PREPARE_TEST, dir.path(), next, target);
        assert_eq!(acked.len(), target);
        next += acked.len() as u64;
        let in_doubt: BTreeSet<u64> = carried.iter().chain(&acked).copied().collect();

        rm.open_ok();
        assert_eq!(
            rm.recover_keys(),
            in_doubt_keys(&in_doubt),
            "round {round}: xa_recover lists exactly the acknowledged prepares"
        );
        check_common(&rm, &committed, &absent, next);
        for &i in &in_doubt {
            assert_eq!(rm.get_str(&key(i)), None, "prepared {} is visible", key(i));
        }
        // The prepared branches' locks were rebuilt: a new branch cannot take their keys.
        let probe = xid(0x7072_6f62, format!("probe-{round}").as_bytes(), b"p");
        let first_in_doubt = *in_doubt.iter().next().unwrap();
        check("probe xa_start", rm.start(&probe, TMNOFLAGS), XA_OK);
        check(
            "write to a prepared branch's key",
            rm.put(key(first_in_doubt).as_bytes(), b"probe"),
            MMXA_ELOCKTIMEOUT,
        );
        check("probe xa_end", rm.end(&probe, TMSUCCESS), XA_RBTIMEOUT);
        let rc = rm.rollback(&probe);
        assert!(
            rc == XA_OK || (XA_RBBASE..=XA_RBEND).contains(&rc),
            "probe xa_rollback: {rc}"
        );

        for i in std::mem::take(&mut carried) {
            check(
                &format!("xa_commit carried {i}"),
                rm.commit(&main_xid(i), TMNOFLAGS),
                XA_OK,
            );
            committed.insert(i);
        }
        let last_round = round + 1 == ROUNDS;
        for (pos, &i) in acked.iter().enumerate() {
            let x = main_xid(i);
            if acked.len() >= 2 && pos == 0 {
                check(&format!("xa_rollback {i}"), rm.rollback(&x), XA_OK);
                absent.insert(i);
            } else if acked.len() >= 2 && pos + 1 == acked.len() && !last_round {
                carried.insert(i);
            } else {
                check(&format!("xa_commit {i}"), rm.commit(&x, TMNOFLAGS), XA_OK);
                committed.insert(i);
            }
        }
        assert_eq!(rm.recover_keys(), in_doubt_keys(&carried));
        check_common(&rm, &committed, &absent, next);
        rm.close_ok();
    }
    // A clean reopen at the end: everything resolved, nothing in doubt.
    rm.open_ok();
    assert!(rm.recover_keys().is_empty());
    check_common(&rm, &committed, &absent, next);
    rm.close_ok();
}

/// Kill rounds for one-phase commits: every acknowledged commit survives; the one commit that
/// may have been in flight at the kill is either complete or absent; nothing is in doubt.
fn one_phase_rounds(rmid: i32) {
    let dir = ffi_common::private_dir();
    let rm = Rm::new(rmid, dir.path(), "lock_timeout_ms=0");
    let mut rng = Rng::new(rng::seed(ENV_SEED, "crash test"));
    let (mut committed, mut absent) = (BTreeSet::new(), BTreeSet::new());
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let target = rng.range(1, 20) as usize;
        let acked = run_child(Mode::OnePhase, ONE_PHASE_TEST, dir.path(), next, target);
        assert!(acked.len() >= target);
        committed.extend(acked.iter().copied());
        let in_flight = next + acked.len() as u64;

        rm.open_ok();
        assert!(
            rm.recover_keys().is_empty(),
            "round {round}: one-phase commits are never in doubt"
        );
        match rm.get_str(&key(in_flight)) {
            None => absent.insert(in_flight),
            Some(v) => {
                assert_eq!(v, val(in_flight), "in-flight commit {in_flight} is torn");
                committed.insert(in_flight)
            }
        };
        next = in_flight + 1;
        check_common(&rm, &committed, &absent, next);
        rm.close_ok();
    }
    rm.open_ok();
    assert!(rm.recover_keys().is_empty());
    check_common(&rm, &committed, &absent, next);
    rm.close_ok();
}

#[test]
fn prepared_branches_survive_sigkill() {
    if !maybe_child(Mode::Prepare) {
        two_phase_rounds(301);
    }
}

#[test]
fn one_phase_commits_survive_sigkill() {
    if !maybe_child(Mode::OnePhase) {
        one_phase_rounds(302);
    }
}
