//! Crash torture: a two-phase-commit TM in a child process, killed with SIGKILL again and again.
//!
//! The test binary re-executes itself as the child (`--exact <test>`, with the work directory in
//! `MMXA_TORTURE_CHILD`). The child is a small TM over two stores, A (rmid 21) and B (rmid 22),
//! each holding [`ACCOUNTS`] account balances, with `segment_mb=4`. It runs numbered transfers:
//!
//! - cross-store (two-phase): `xa_start` on both, read the two balances with `mmxa_get`, write
//!   the new ones, `xa_end` both, `xa_prepare` A then B, append the gtrid `t<n>` to its decision
//!   file and `fdatasync` it, then `xa_commit` A then B. Some are rolled back after both
//!   prepares instead (no decision is written);
//! - local (one store, `TMONEPHASE`), some of them rolled back instead of committed.
//!
//! Every transfer also writes `tx/<n>` (the transfer's description) in each store it touches
//! and a padding value, so that the log keeps growing and reclaiming (copying the oldest
//! segment forward, CHECKPOINT, delete) runs many times during the run. The child prints each
//! step after it returned (begin, prepared, decided, committed, rolled back, per store), and
//! announces each completion of a prepared branch before calling it: a completion that was
//! called but not acknowledged may have happened or not.
//!
//! The parent kills the child either at a random moment (after a random number of lines plus a
//! random delay, sometimes while the child is still opening and recovering the stores), or at an
//! instrumented point (`MMXA_TORTURE_STOP`): the child stops itself with `SIGSTOP` right after
//! prepare A returned, right after prepare B returned, right after the decision was synced, or
//! between the two commits. After each kill the parent, as a new process for the stores, opens
//! both, checks what `xa_recover` lists against the child's lines, resolves each in-doubt branch
//! from the decision file (commit if its gtrid is there, roll back otherwise), and checks:
//!
//! - every acknowledged commit is present, every acknowledged rollback absent, every
//!   acknowledged prepare (not completed) in doubt, and nothing else in doubt;
//! - a cross-store transfer is in both stores or in neither, and it is there exactly when its
//!   gtrid is in the decision file; a local transfer is only in its store;
//! - every balance equals the initial balance plus the amounts of the transfers present (so a
//!   half-applied transfer, a lost update or a torn value is caught), and the total is unchanged.
//!
//! Pass or fail never depends on timing; a child that prints nothing for [`LINE_TIMEOUT`] is
//! killed and the test fails.
//!
//! Knobs: `MMXA_TORTURE_ITERS` (kill cycles, default [`DEFAULT_ITERS`]) and
//! `MMXA_TORTURE_SEED` (the printed seed; replays the choices, not the thread timing). Long run:
//! `MMXA_TORTURE_ITERS=5000 cargo test --release --test torture -- --nocapture`.

mod ffi_common;
mod rng;

use ffi_common::{check, last_error, xid, xid_key, Rm};
use mmxa::ffi::abi::Xid;
use mmxa::status::MMXA_OK;
use mmxa::xa::*;
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TEST: &str = "transfers_survive_repeated_sigkill";

/// Set in the child: the work directory (stores `a/`, `b/` and the decision file).
const ENV_CHILD: &str = "MMXA_TORTURE_CHILD";
/// Set in the child: the number of its first transfer.
const ENV_FIRST: &str = "MMXA_TORTURE_FIRST";
/// Set in the child: the seed of its choices.
const ENV_CHILD_SEED: &str = "MMXA_TORTURE_CHILD_SEED";
/// Set in the child for an instrumented kill: `<point> <k>` stops at the k-th time at `point`.
const ENV_STOP: &str = "MMXA_TORTURE_STOP";
/// Optional: the number of kill cycles.
const ENV_ITERS: &str = "MMXA_TORTURE_ITERS";
/// Optional: a fixed seed.
const ENV_SEED: &str = "MMXA_TORTURE_SEED";

const DEFAULT_ITERS: u64 = 300;
const RMIDS: [i32; 2] = [21, 22];
const STORE: [&str; 2] = ["A", "B"];
const ACCOUNTS: usize = 8;
const INITIAL: i64 = 1000;
const FORMAT: i64 = 0x746f_7274;
/// Padding per store and transfer, over a few keys: the log grows fast while the live data stays
/// small, so 4 MiB segments are reclaimed every few dozen transfers.
const PAD_KEYS: u64 = 4;
const PAD_BYTES: usize = 64 << 10;
const DECISIONS: &str = "decisions";
/// lock_timeout_ms=0: a lock left behind by a badly resolved branch fails the child at once.
const EXTRA: &str = "lock_timeout_ms=0";
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts every line the child sends; its test harness writes to the same stdout.
const MARK: &str = "@mmxa-torture@ ";

/// Where the child stops itself for an instrumented kill.
const POINTS: [&str; 4] = ["prepared-A", "prepared-B", "decided", "between-commits"];

// ---- transfers ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transfer {
    /// A's account `a` pays `amount` to B's account `b` (a negative amount flows back).
    Cross { a: usize, b: usize, amount: i64 },
    /// In `store`, account `from` pays `amount` to account `to`.
    Local {
        store: usize,
        from: usize,
        to: usize,
        amount: i64,
    },
}

impl Transfer {
    /// The value of `tx/<n>`: names the transfer, so no other transfer's record matches.
    fn text(&self, n: u64) -> String {
        match *self {
            Transfer::Cross { a, b, amount } => format!("x {n} {a} {b} {amount}"),
            Transfer::Local {
                store,
                from,
                to,
                amount,
            } => format!("l {n} {store} {from} {to} {amount}"),
        }
    }

    fn parse(s: &str) -> Option<(u64, Transfer)> {
        let f: Vec<&str> = s.split(' ').collect();
        let num = |i: usize| -> Option<i64> { f.get(i)?.parse().ok() };
        let idx = |i: usize| -> Option<usize> { f.get(i)?.parse().ok() };
        let n: u64 = f.get(1)?.parse().ok()?;
        let t = match *f.first()? {
            "x" if f.len() == 5 => Transfer::Cross {
                a: idx(2)?,
                b: idx(3)?,
                amount: num(4)?,
            },
            "l" if f.len() == 6 => Transfer::Local {
                store: idx(2)?,
                from: idx(3)?,
                to: idx(4)?,
                amount: num(5)?,
            },
            _ => return None,
        };
        Some((n, t))
    }

    /// `(store, account, change)` for every balance the transfer changes.
    fn deltas(&self) -> [(usize, usize, i64); 2] {
        match *self {
            Transfer::Cross { a, b, amount } => [(0, a, -amount), (1, b, amount)],
            Transfer::Local {
                store,
                from,
                to,
                amount,
            } => [(store, from, -amount), (store, to, amount)],
        }
    }

    /// The stores the transfer writes.
    fn stores(&self) -> Vec<usize> {
        match *self {
            Transfer::Cross { .. } => vec![0, 1],
            Transfer::Local { store, .. } => vec![store],
        }
    }
}

fn gtrid(n: u64) -> String {
    format!("t{n}")
}

/// The XID of transfer `n`'s branch in `store`: one gtrid, one bqual per store.
fn branch_xid(n: u64, store: usize) -> Xid {
    xid(FORMAT, gtrid(n).as_bytes(), STORE[store].as_bytes())
}

fn acct_key(i: usize) -> String {
    format!("acct/{i}")
}

fn tx_key(n: u64) -> String {
    format!("tx/{n}")
}

fn stores(work: &Path) -> [Rm; 2] {
    [
        Rm::new(RMIDS[0], &work.join("a"), EXTRA),
        Rm::new(RMIDS[1], &work.join("b"), EXTRA),
    ]
}

// ---- the child: a two-phase-commit TM -----------------------------------------------------

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{MARK}{line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0); // the parent is gone
    }
}

fn child_fail(msg: &str) -> ! {
    say(&format!(
        "error: {msg} (mmxa_last_error: {:?})",
        last_error()
    ));
    std::process::exit(2)
}

fn want(what: &str, got: i32, expected: i32) {
    if got != expected {
        child_fail(&format!("{what}: got {got}, expected {expected}"));
    }
}

struct Tm {
    rms: [Rm; 2],
    decisions: std::fs::File,
    rng: Rng,
    /// The instrumented point to stop at, and after how many visits.
    stop: Option<(String, u64)>,
    visits: BTreeMap<&'static str, u64>,
}

impl Tm {
    /// Stops the process (the parent kills it) on the chosen visit of `point`.
    fn point(&mut self, point: &'static str, n: u64) {
        let count = self.visits.entry(point).or_insert(0);
        *count += 1;
        if self.stop.as_ref() == Some(&(point.to_string(), *count)) {
            say(&format!("stop {point} {n}"));
            // SAFETY: plain syscall on our own process.
            unsafe { libc::raise(libc::SIGSTOP) };
            child_fail("continued after SIGSTOP");
        }
    }

    fn read(&self, s: usize, key: &str) -> i64 {
        match self.rms[s].get(key.as_bytes()) {
            Ok(Some(v)) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| child_fail(&format!("{key} in {}: bad value", STORE[s]))),
            other => child_fail(&format!("mmxa_get({key}) in {}: {other:?}", STORE[s])),
        }
    }

    fn put(&self, s: usize, key: &str, value: &[u8]) {
        let rc = self.rms[s].put(key.as_bytes(), value);
        want(&format!("mmxa_put({key}) in {}", STORE[s]), rc, MMXA_OK);
    }

    /// Starts the branches of `t`, applies it, writes its record and padding, ends them.
    fn work(&mut self, n: u64, t: &Transfer) {
        for s in t.stores() {
            want(
                "xa_start",
                self.rms[s].start(&branch_xid(n, s), TMNOFLAGS),
                XA_OK,
            );
        }
        for (s, acct, change) in t.deltas() {
            let balance = self.read(s, &acct_key(acct));
            self.put(
                s,
                &acct_key(acct),
                (balance + change).to_string().as_bytes(),
            );
        }
        for s in t.stores() {
            self.put(s, &tx_key(n), t.text(n).as_bytes());
            let fill = b'a' + ((n + s as u64) % 26) as u8;
            self.put(s, &format!("pad/{}", n % PAD_KEYS), &vec![fill; PAD_BYTES]);
        }
        for s in t.stores() {
            want(
                "xa_end",
                self.rms[s].end(&branch_xid(n, s), TMSUCCESS),
                XA_OK,
            );
        }
    }

    fn cross(&mut self, n: u64, t: Transfer, abort: bool) {
        say(&format!("begin {}", t.text(n)));
        self.work(n, &t);
        for (s, point) in POINTS[..2].iter().enumerate() {
            want("xa_prepare", self.rms[s].prepare(&branch_xid(n, s)), XA_OK);
            say(&format!("prepared {n} {s}"));
            self.point(point, n);
        }
        if abort {
            for s in 0..2 {
                say(&format!("completing {n} {s}"));
                want(
                    "xa_rollback",
                    self.rms[s].rollback(&branch_xid(n, s)),
                    XA_OK,
                );
                say(&format!("rolled {n} {s}"));
            }
            return;
        }
        let line = format!("{}\n", gtrid(n));
        if let Err(e) = self
            .decisions
            .write_all(line.as_bytes())
            .and_then(|()| self.decisions.sync_data())
        {
            child_fail(&format!("decision file: {e}"));
        }
        say(&format!("decided {n}"));
        self.point(POINTS[2], n);
        for s in 0..2 {
            say(&format!("completing {n} {s}"));
            let rc = self.rms[s].commit(&branch_xid(n, s), TMNOFLAGS);
            want("xa_commit", rc, XA_OK);
            say(&format!("committed {n} {s}"));
            if s == 0 {
                self.point(POINTS[3], n);
            }
        }
    }

    fn local(&mut self, n: u64, t: Transfer, abort: bool) {
        say(&format!("begin {}", t.text(n)));
        self.work(n, &t);
        let s = t.stores()[0];
        let x = branch_xid(n, s);
        if abort {
            want("xa_rollback", self.rms[s].rollback(&x), XA_OK);
            say(&format!("rolled {n} {s}"));
        } else {
            want(
                "xa_commit(TMONEPHASE)",
                self.rms[s].commit(&x, TMONEPHASE),
                XA_OK,
            );
            say(&format!("committed {n} {s}"));
        }
    }

    fn amount(&mut self) -> i64 {
        let a = self.rng.range(1, 50) as i64;
        if self.rng.range(0, 1) == 0 {
            a
        } else {
            -a
        }
    }
}

fn child() -> ! {
    let work = PathBuf::from(std::env::var_os(ENV_CHILD).expect("work directory"));
    let env_u64 = |name: &str| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| child_fail(&format!("{name} is not set")))
    };
    let first = env_u64(ENV_FIRST);
    let seed = env_u64(ENV_CHILD_SEED);
    let stop = std::env::var(ENV_STOP).ok().map(|s| {
        let (p, k) = s.split_once(' ').expect("<point> <k>");
        (p.to_string(), k.parse().expect("a visit count"))
    });
    let rms = stores(&work);
    for rm in &rms {
        want("xa_open", rm.open(), XA_OK);
    }
    say("open");
    let decisions = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(work.join(DECISIONS))
        .unwrap_or_else(|e| child_fail(&format!("open the decision file: {e}")));
    let mut tm = Tm {
        rms,
        decisions,
        rng: Rng::new(seed),
        stop,
        visits: BTreeMap::new(),
    };
    for n in first.. {
        let kind = tm.rng.range(0, 99);
        let amount = tm.amount();
        if kind < 70 {
            let t = Transfer::Cross {
                a: tm.rng.range(0, ACCOUNTS as u64 - 1) as usize,
                b: tm.rng.range(0, ACCOUNTS as u64 - 1) as usize,
                amount,
            };
            tm.cross(n, t, kind >= 60);
        } else {
            let from = tm.rng.range(0, ACCOUNTS as u64 - 1) as usize;
            let to = (from + tm.rng.range(1, ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
            let t = Transfer::Local {
                store: tm.rng.range(0, 1) as usize,
                from,
                to,
                amount,
            };
            tm.local(n, t, kind >= 92);
        }
    }
    unreachable!("transfer numbers ran out")
}

// ---- the parent ---------------------------------------------------------------------------

/// What the child reported, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Open,
    Begin(u64, Transfer),
    Prepared(u64, usize),
    /// About to call xa_commit or xa_rollback of a prepared branch.
    Completing(u64, usize),
    Decided(u64),
    Committed(u64, usize),
    Rolled(u64, usize),
    Stop(String, u64),
}

fn parse_event(line: &str) -> Option<Event> {
    let (_, msg) = line.split_once(MARK)?;
    let (word, rest) = msg.split_once(' ').unwrap_or((msg, ""));
    let nums: Vec<u64> = rest.split(' ').filter_map(|w| w.parse().ok()).collect();
    let bad = || -> ! { panic!("unexpected line from the child: {msg}") };
    let branch = || -> (u64, usize) {
        match nums[..] {
            [n, s] if s < 2 => (n, s as usize),
            _ => bad(),
        }
    };
    Some(match word {
        "open" => Event::Open,
        "begin" => {
            let (n, t) = Transfer::parse(rest).unwrap_or_else(|| bad());
            Event::Begin(n, t)
        }
        "prepared" => {
            let (n, s) = branch();
            Event::Prepared(n, s)
        }
        "completing" => {
            let (n, s) = branch();
            Event::Completing(n, s)
        }
        "committed" => {
            let (n, s) = branch();
            Event::Committed(n, s)
        }
        "rolled" => {
            let (n, s) = branch();
            Event::Rolled(n, s)
        }
        "decided" => Event::Decided(*nums.first().unwrap_or_else(|| bad())),
        "stop" => {
            let (p, n) = rest.split_once(' ').unwrap_or_else(|| bad());
            Event::Stop(p.to_string(), n.parse().unwrap_or_else(|_| bad()))
        }
        "error" => panic!("the child failed: {rest}"),
        _ => bad(),
    })
}

/// How a cycle ends the child.
#[derive(Debug, Clone)]
enum Kill {
    /// After `lines` lines (0: at once) and `delay_us` more.
    Random { lines: usize, delay_us: u64 },
    /// When the child stops itself at the `k`-th visit of `point`.
    At { point: &'static str, k: u64 },
}

/// A child that is SIGKILLed and reaped if the test fails while it runs.
struct ChildGuard(Child);

impl ChildGuard {
    fn sigkill(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is still ours.
        let rc = unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        self.0.wait().expect("wait for the killed child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: as in `sigkill`; try_wait said it is not reaped.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// Runs one child from transfer `first`, kills it as `kill` says, returns everything it said.
fn run_child(work: &Path, first: u64, seed: u64, kill: &Kill) -> Vec<Event> {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, work)
        .env(ENV_FIRST, first.to_string())
        .env(ENV_CHILD_SEED, seed.to_string())
        .env_remove(ENV_STOP)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Kill::At { point, k } = kill {
        cmd.env(ENV_STOP, format!("{point} {k}"));
    }
    let mut child = ChildGuard(cmd.spawn().expect("spawn the child"));
    let stdout = child.0.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut events = Vec::new();
    let next_event = |events: &mut Vec<Event>, child: &mut ChildGuard| loop {
        match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => {
                if let Some(e) = parse_event(&line) {
                    events.push(e);
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let status = child.sigkill();
                panic!("no line from the child within {LINE_TIMEOUT:?}; killed ({status})");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait();
                panic!("the child exited on its own: {status:?}; it said {events:?}");
            }
        }
    };
    match kill {
        Kill::Random { lines, delay_us } => {
            while events.len() < *lines {
                next_event(&mut events, &mut child);
            }
            std::thread::sleep(Duration::from_micros(*delay_us));
        }
        Kill::At { .. } => loop {
            next_event(&mut events, &mut child);
            if matches!(events.last(), Some(Event::Stop(..))) {
                break;
            }
        },
    }
    let status = child.sigkill();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child died by SIGKILL"
    );
    for line in rx.iter() {
        events.extend(parse_event(&line));
    }
    reader.join().expect("reader thread");
    events
}

/// The TM's own recovery of its decision file: a torn last line (no newline) is no decision,
/// and is cut so that the next child's lines start clean.
fn read_decisions(work: &Path) -> BTreeSet<u64> {
    let path = work.join(DECISIONS);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if whole < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open the decision file");
        f.set_len(whole as u64).expect("cut the torn decision");
        f.sync_all().expect("sync the decision file");
        bytes.truncate(whole);
    }
    let text = String::from_utf8(bytes).expect("decision file is text");
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let n: u64 = line
            .strip_prefix('t')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad decision line {line:?}"));
        assert!(out.insert(n), "transfer {n} decided twice");
    }
    out
}

/// What the parent knows for sure: the transfers present after every resolution so far.
struct Bank {
    balances: [[i64; ACCOUNTS]; 2],
    /// Every transfer begun so far, and whether it is present.
    transfers: BTreeMap<u64, (Transfer, bool)>,
}

#[derive(Default, Debug)]
struct Stats {
    random_kills: u64,
    point_kills: BTreeMap<&'static str, u64>,
    begun: u64,
    cross_present: u64,
    local_present: u64,
    absent: u64,
    in_doubt_committed: u64,
    in_doubt_rolled_back: u64,
    /// Highest first-segment id seen per store: how many segments reclaiming retired.
    first_segment: [u64; 2],
}

fn get(rm: &Rm, key: &str) -> Option<String> {
    rm.get_str(key)
}

/// The id of the oldest segment file of the store in `dir`.
fn first_segment(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read store directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let hex = name.strip_prefix("log-")?.strip_suffix(".seg")?;
            u64::from_str_radix(hex, 16).ok()
        })
        .min()
        .expect("a segment file")
}

impl Bank {
    /// Checks every balance against the transfers present, and the total.
    fn check_balances(&self, rms: &[Rm; 2], cycle: u64) {
        let mut total = 0;
        for (s, rm) in rms.iter().enumerate() {
            for i in 0..ACCOUNTS {
                let got: i64 = get(rm, &acct_key(i))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("cycle {cycle}: {} {} unreadable", STORE[s], i));
                assert_eq!(
                    got, self.balances[s][i],
                    "cycle {cycle}: balance of {} account {i} does not match the transfers \
                     present (a transfer is half-applied or an update was lost)",
                    STORE[s]
                );
                total += got;
            }
        }
        assert_eq!(
            total,
            2 * ACCOUNTS as i64 * INITIAL,
            "cycle {cycle}: money changed"
        );
    }

    /// Checks every transfer's record in both stores (all of them, not only the last child's).
    fn check_all_records(&self, rms: &[Rm; 2], cycle: u64) {
        for (&n, &(t, present)) in &self.transfers {
            for (s, rm) in rms.iter().enumerate() {
                let want = (present && t.stores().contains(&s)).then(|| t.text(n));
                assert_eq!(
                    get(rm, &tx_key(n)),
                    want,
                    "cycle {cycle}: record of transfer {n} in {}",
                    STORE[s]
                );
            }
        }
    }
}

/// After a kill: opens both stores, checks the in-doubt branches against the child's lines,
/// resolves them from the decision file, and checks the invariants.
fn recover_and_check(
    work: &Path,
    rms: &[Rm; 2],
    events: &[Event],
    bank: &mut Bank,
    stats: &mut Stats,
    cycle: u64,
) {
    let decided = read_decisions(work);
    let mut begun: BTreeMap<u64, Transfer> = BTreeMap::new();
    let mut prepared = BTreeSet::new();
    let mut completed = BTreeSet::new();
    let mut completing = BTreeSet::new();
    let mut committed = BTreeSet::new();
    let mut rolled = BTreeSet::new();
    for e in events {
        match e {
            Event::Begin(n, t) => {
                assert!(
                    !bank.transfers.contains_key(n) && begun.insert(*n, *t).is_none(),
                    "cycle {cycle}: transfer {n} begun twice"
                );
            }
            Event::Prepared(n, s) => {
                prepared.insert((*n, *s));
            }
            Event::Completing(n, s) => {
                completing.insert((*n, *s));
            }
            Event::Committed(n, s) => {
                committed.insert((*n, *s));
                completed.insert((*n, *s));
            }
            Event::Rolled(n, s) => {
                rolled.insert((*n, *s));
                completed.insert((*n, *s));
            }
            Event::Decided(n) => assert!(
                decided.contains(n),
                "cycle {cycle}: acknowledged decision {n} missing from the decision file"
            ),
            Event::Open | Event::Stop(..) => {}
        }
    }
    for rm in rms {
        rm.open_ok();
    }

    // Before resolving: the stores agree with every acknowledgement.
    let mut in_doubt: [BTreeSet<u64>; 2] = Default::default();
    for (s, rm) in rms.iter().enumerate() {
        for x in rm.recover_all() {
            let (format, g, b) = xid_key(&x);
            let n: u64 = std::str::from_utf8(&g)
                .ok()
                .and_then(|g| g.strip_prefix('t'))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cycle {cycle}: foreign XID in doubt: {g:?}"));
            assert_eq!((format, b.as_slice()), (FORMAT, STORE[s].as_bytes()));
            assert!(
                in_doubt[s].insert(n),
                "cycle {cycle}: {n} listed twice by xa_recover"
            );
            assert!(
                matches!(begun.get(&n), Some(Transfer::Cross { .. })),
                "cycle {cycle}: {} lists {n} in doubt, which this child never ran as a \
                 two-phase transfer",
                STORE[s]
            );
            assert!(
                !completed.contains(&(n, s)),
                "cycle {cycle}: {n} in doubt in {} after its completion was acknowledged",
                STORE[s]
            );
            assert_eq!(
                get(rm, &tx_key(n)),
                None,
                "cycle {cycle}: in-doubt {n} is visible in {}",
                STORE[s]
            );
        }
    }
    // A completion that was called but not acknowledged may have happened or not.
    for &(n, s) in &prepared {
        if !completing.contains(&(n, s)) {
            assert!(
                in_doubt[s].contains(&n),
                "cycle {cycle}: acknowledged prepare of {n} in {} is not in doubt",
                STORE[s]
            );
        }
    }
    for &(n, s) in &committed {
        assert_eq!(
            get(&rms[s], &tx_key(n)),
            Some(begun[&n].text(n)),
            "cycle {cycle}: acknowledged commit of {n} in {} lost",
            STORE[s]
        );
    }
    for &(n, s) in &rolled {
        assert_eq!(
            get(&rms[s], &tx_key(n)),
            None,
            "cycle {cycle}: acknowledged rollback of {n} in {} is visible",
            STORE[s]
        );
    }

    // Resolve, as the TM's recovery does: the decision file is the truth.
    for (s, rm) in rms.iter().enumerate() {
        for &n in &in_doubt[s] {
            let x = branch_xid(n, s);
            if decided.contains(&n) {
                check(
                    &format!("xa_commit in-doubt {n}"),
                    rm.commit(&x, TMNOFLAGS),
                    XA_OK,
                );
                stats.in_doubt_committed += 1;
            } else {
                check(&format!("xa_rollback in-doubt {n}"), rm.rollback(&x), XA_OK);
                stats.in_doubt_rolled_back += 1;
            }
        }
        assert!(rm.recover_all().is_empty(), "cycle {cycle}: still in doubt");
    }

    // Atomicity: every transfer of this child is wholly there or wholly absent.
    for (&n, &t) in &begun {
        let here: Vec<Option<String>> = rms.iter().map(|rm| get(rm, &tx_key(n))).collect();
        let text = t.text(n);
        for (s, v) in here.iter().enumerate() {
            if let Some(v) = v {
                assert_eq!(v, &text, "cycle {cycle}: record of {n} in {}", STORE[s]);
            }
        }
        let present = match t {
            Transfer::Cross { .. } => {
                assert_eq!(
                    here[0].is_some(),
                    here[1].is_some(),
                    "cycle {cycle}: cross-store transfer {n} is half-applied"
                );
                assert_eq!(
                    here[0].is_some(),
                    decided.contains(&n),
                    "cycle {cycle}: transfer {n} present {} but decided {}",
                    here[0].is_some(),
                    decided.contains(&n)
                );
                here[0].is_some()
            }
            Transfer::Local { store, .. } => {
                assert!(
                    here[1 - store].is_none(),
                    "cycle {cycle}: local transfer {n} in the wrong store"
                );
                here[store].is_some()
            }
        };
        if committed.contains(&(n, t.stores()[0])) {
            assert!(present, "cycle {cycle}: acknowledged transfer {n} lost");
        }
        if rolled.contains(&(n, t.stores()[0])) {
            assert!(!present, "cycle {cycle}: rolled-back transfer {n} present");
        }
        if present {
            for (s, acct, change) in t.deltas() {
                bank.balances[s][acct] += change;
            }
            match t {
                Transfer::Cross { .. } => stats.cross_present += 1,
                Transfer::Local { .. } => stats.local_present += 1,
            }
        } else {
            stats.absent += 1;
        }
        bank.transfers.insert(n, (t, present));
        stats.begun += 1;
    }
    for rm in rms {
        let next = bank.transfers.keys().next_back().map_or(0, |n| n + 1);
        assert_eq!(
            get(rm, &tx_key(next)),
            None,
            "cycle {cycle}: a record from nowhere"
        );
    }
    bank.check_balances(rms, cycle);
    if cycle % 50 == 49 {
        bank.check_all_records(rms, cycle);
    }
    for rm in rms {
        rm.close_ok();
    }
    for (s, dir) in ["a", "b"].iter().enumerate() {
        stats.first_segment[s] = stats.first_segment[s].max(first_segment(&work.join(dir)));
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
fn transfers_survive_repeated_sigkill() {
    if std::env::var_os(ENV_CHILD).is_some() {
        child();
    }
    let iters = env_u64(ENV_ITERS).unwrap_or(DEFAULT_ITERS);
    let seed = env_u64(ENV_SEED).unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        t ^ (u64::from(std::process::id()) << 32)
    });
    eprintln!("torture: {ENV_SEED}={seed} {ENV_ITERS}={iters}");
    let mut rng = Rng::new(seed);
    let work = ffi_common::private_dir();
    let rms = stores(work.path());
    for rm in &rms {
        rm.open_ok();
        for i in 0..ACCOUNTS {
            rm.put_ok(&acct_key(i), &INITIAL.to_string());
        }
        rm.close_ok();
    }
    let mut bank = Bank {
        balances: [[INITIAL; ACCOUNTS]; 2],
        transfers: BTreeMap::new(),
    };
    let mut stats = Stats::default();
    let started = Instant::now();
    for cycle in 0..iters {
        let kill = if rng.range(0, 1) == 0 {
            stats.random_kills += 1;
            // Now and then at once, so the child dies while opening and recovering.
            let lines = match rng.range(0, 9) {
                0 => 0,
                _ => rng.range(1, 120) as usize,
            };
            Kill::Random {
                lines,
                delay_us: rng.range(0, 3000),
            }
        } else {
            let point = POINTS[rng.range(0, POINTS.len() as u64 - 1) as usize];
            *stats.point_kills.entry(point).or_insert(0) += 1;
            Kill::At {
                point,
                k: rng.range(1, 4),
            }
        };
        let first = bank.transfers.keys().next_back().map_or(0, |n| n + 1);
        let events = run_child(work.path(), first, rng.next(), &kill);
        if let Kill::At { point, .. } = &kill {
            assert!(
                matches!(events.last(), Some(Event::Stop(p, _)) if p == point),
                "cycle {cycle}: the child did not stop at {point}"
            );
        }
        recover_and_check(work.path(), &rms, &events, &mut bank, &mut stats, cycle);
    }
    // A last look at everything, after one more clean reopen.
    for rm in &rms {
        rm.open_ok();
        assert!(rm.recover_all().is_empty());
    }
    bank.check_balances(&rms, iters);
    bank.check_all_records(&rms, iters);
    for rm in &rms {
        rm.close_ok();
    }
    eprintln!(
        "torture: {iters} kill cycles in {:.1?}: {stats:?}",
        started.elapsed()
    );
    if iters >= DEFAULT_ITERS {
        // The run is meant to kill the child while reclaiming is going on; check it ran.
        for (s, first) in stats.first_segment.iter().enumerate() {
            assert!(
                *first > 1,
                "store {} never reclaimed a segment: the run did not test reclaiming",
                STORE[s]
            );
        }
    }
}
