//! How often the isolation anomalies happen under each isolation level: the same concurrent
//! workloads run once with `isolation=read_committed` (reads take no lock) and once with
//! `isolation=serializable` (the default: shared read locks, strict two-phase locking), and the
//! figures are printed as one Markdown table.
//!
//! Everything goes through the C entry points as a transaction monitor drives them: `xa_open`
//! in every thread, `xa_start`, `mmxa_get` / `mmxa_get_for_update` / `mmxa_put`, `xa_end`,
//! then a one-phase commit (one store) or `xa_prepare` and `xa_commit` on both stores (one XID
//! on two rmids); a transaction that mmxa rolls back (`MMXA_EDEADLOCK`, `MMXA_ELOCKTIMEOUT`) is
//! rolled back and run again under a new XID. The workloads are those of `tests/isolation.rs`,
//! with the same parameters (but 50 write-skew rounds rather than 40), so the figures can be
//! compared with what the tests assert; the threads of a workload start together, once each
//! has opened its stores.
//!
//! - **Lost update**: 4 threads × 150 transactions "read the counter, write it plus one" with
//!   plain reads, again with `mmxa_get_for_update`, and 3 processes × 2 threads × 60 on one
//!   store (this example re-executed as children, while this process keeps the store open).
//!   Lost updates = committed increments − the counter's growth. Each increment yields the
//!   processor between its read and its write (as an application working between them would),
//!   so that transactions overlap however the threads happen to be scheduled: without it, on a
//!   busy 2-core machine a thread often runs all its increments within one time slice, and the
//!   lost updates under `read_committed` ranged from 0 to 445 of 600 from run to run.
//! - **Read skew**: 4 threads move money between 8 accounts of 100 on two stores (4 on each),
//!   80 transfers each, every transfer one global transaction with a branch on each store and
//!   two-phase commit (one whose source holds too little is rolled back, not retried); half of
//!   the movers read with plain reads, half with `mmxa_get_for_update`. An auditor sums every
//!   account in one global transaction, over and over while they run: as long as the committed
//!   total stays 800, an audit that sees another total saw part of a transfer. Under
//!   `read_committed` the plain reads of half the movers also lose updates, so the committed
//!   total itself drifts and nearly every later audit is wrong; the workload is therefore run
//!   again with every mover locking its reads, where the total never changes and a wrong audit
//!   is read skew alone. `lock_timeout_ms=200` on both stores: a deadlock that spans both is
//!   seen by neither store and ends by timeout.
//! - **Write skew**: x = y = 1; two transactions each read both and, if x + y ≥ 2, decrement
//!   one of them (each its own), a barrier making both read before either writes when the level
//!   lets them; 50 rounds. A round is skewed if it ends with x + y < 1. (Under `serializable`
//!   both writes wait for the other's read lock: one is told of the deadlock and retried, and
//!   then reads the other's write.)
//!
//! The stores use `sync=none`: this measures anomalies, not durability, and no figure depends
//! on syncing (a process crash loses nothing with `sync=none`). The random choices of the
//! transfers are fixed; the thread timing is not, so figures vary from run to run.
//!
//! ```text
//! cargo run --release --example anomalies
//! ```

use mmxa::ffi::abi::{XaSwitch, Xid};
use mmxa::ffi::data::{mmxa_get, mmxa_get_for_update, mmxa_last_error, mmxa_put};
use mmxa::ffi::switch::mmxa_switch;
use mmxa::status::{MMXA_EDEADLOCK, MMXA_ELOCKTIMEOUT, MMXA_NOTFOUND, MMXA_OK};
use mmxa::xa::{
    TMFAIL, TMNOFLAGS, TMONEPHASE, TMSUCCESS, XAER_NOTA, XA_OK, XA_RBBASE, XA_RBEND, XA_RDONLY,
    XIDDATASIZE,
};
use std::ffi::{CStr, CString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::raw::{c_char, c_int, c_long};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

/// Set in a child process: the open string of the store its counter threads increment.
const CHILD: &str = "MMXA_ANOMALIES_CHILD";

/// The two isolation levels, in the order of the table's columns.
const LEVELS: [&str; 2] = ["read_committed", "serializable"];

fn switch() -> &'static XaSwitch {
    // SAFETY: `mmxa_switch` is initialised statically and never written, so a shared reference
    // to it is never aliased by a mutable one.
    unsafe { &*std::ptr::addr_of!(mmxa_switch) }
}

/// This thread's last error message from mmxa.
fn last_error() -> String {
    // SAFETY: mmxa_last_error never returns NULL and its text is NUL-terminated; it is copied
    // before this thread's next mmxa call.
    unsafe { CStr::from_ptr(mmxa_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Distinct XIDs within the process; the process id keeps those of the children apart.
static NEXT_XID: AtomicU64 = AtomicU64::new(1);

fn fresh_xid(tag: &str) -> Xid {
    let n = NEXT_XID.fetch_add(1, Ordering::Relaxed);
    let gtrid = format!("{tag}-{n}-{}", std::process::id());
    let mut x = Xid {
        formatID: 1,
        gtrid_length: gtrid.len() as c_long,
        bqual_length: 1,
        data: [0; XIDDATASIZE],
    };
    for (d, s) in x.data.iter_mut().zip(gtrid.bytes().chain([b'b'])) {
        *d = s as c_char;
    }
    x
}

/// An XA entry point that takes an XID: `xa_start`, `xa_end`, `xa_prepare`, `xa_commit`, ...
type XaEntry = unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int;

/// Distinct rmids: each workload opens its stores under new ones.
static NEXT_RMID: AtomicI32 = AtomicI32::new(1);

/// One store as a monitor sees it: an rmid and its open string. XA state belongs to the calling
/// thread, so every thread that uses it opens it itself.
#[derive(Clone)]
struct Rm {
    rmid: c_int,
    info: CString,
}

impl Rm {
    /// The store in `dir` at isolation `level`, with `extra` settings.
    fn new(dir: &Path, level: &str, extra: &str) -> Rm {
        let mut info = format!(
            "dir={};sync=none;segment_mb=4;isolation={level}",
            dir.display()
        );
        if !extra.is_empty() {
            info.push(';');
            info.push_str(extra);
        }
        Rm::with_info(&info)
    }

    fn with_info(info: &str) -> Rm {
        Rm {
            rmid: NEXT_RMID.fetch_add(1, Ordering::Relaxed),
            info: CString::new(info).expect("an open string without NUL"),
        }
    }

    fn open(&self) {
        // SAFETY: a NUL-terminated string that outlives the call; xa_open only reads it.
        let rc = unsafe {
            (switch().xa_open_entry)(self.info.as_ptr() as *mut c_char, self.rmid, TMNOFLAGS)
        };
        assert_eq!(rc, XA_OK, "xa_open: {rc}: {}", last_error());
    }

    fn close(&self) {
        // SAFETY: as in `open`.
        let rc = unsafe {
            (switch().xa_close_entry)(self.info.as_ptr() as *mut c_char, self.rmid, TMNOFLAGS)
        };
        assert_eq!(rc, XA_OK, "xa_close: {rc}: {}", last_error());
    }

    /// One XA call on a copy of `x` (the entry points take a mutable XID).
    fn xa(&self, entry: XaEntry, x: &Xid, flags: c_long) -> c_int {
        let mut x = *x;
        // SAFETY: `x` is a valid, writable XID on our stack for the duration of the call.
        unsafe { entry(&mut x, self.rmid, flags) }
    }

    fn start(&self, x: &Xid) {
        let rc = self.xa(switch().xa_start_entry, x, TMNOFLAGS);
        assert_eq!(rc, XA_OK, "xa_start: {rc}: {}", last_error());
    }

    fn end(&self, x: &Xid, flags: c_long) -> i32 {
        self.xa(switch().xa_end_entry, x, flags)
    }

    fn prepare(&self, x: &Xid) -> i32 {
        self.xa(switch().xa_prepare_entry, x, TMNOFLAGS)
    }

    fn commit(&self, x: &Xid, flags: c_long) -> i32 {
        self.xa(switch().xa_commit_entry, x, flags)
    }

    fn rollback(&self, x: &Xid) -> i32 {
        self.xa(switch().xa_rollback_entry, x, TMNOFLAGS)
    }

    /// The number under `key` (0 when absent), read with `mmxa_get`, or with
    /// `mmxa_get_for_update` when `for_update`; `Err` is the `MMXA_*` code of a failed call.
    fn get(&self, key: &str, for_update: bool) -> Result<i64, i32> {
        let call = if for_update {
            mmxa_get_for_update
        } else {
            mmxa_get
        };
        let mut buf = [0u8; 32];
        let mut len = 0usize;
        // SAFETY: `key` is valid for its length, `buf` holds `buf.len()` writable bytes and
        // `len` is writable, all for the duration of the call.
        let rc = unsafe {
            call(
                self.rmid,
                key.as_ptr().cast(),
                key.len(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut len,
            )
        };
        match rc {
            MMXA_OK => Ok(std::str::from_utf8(&buf[..len])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{key}: not a number: {:?}", &buf[..len]))),
            MMXA_NOTFOUND => Ok(0),
            rc => Err(rc),
        }
    }

    /// Writes the number `v` under `key`; `Err` is the `MMXA_*` code of a failed call.
    fn put(&self, key: &str, v: i64) -> Result<(), i32> {
        let v = v.to_string();
        // SAFETY: `key` and `v` are valid for their lengths for the duration of the call.
        let rc = unsafe {
            mmxa_put(
                self.rmid,
                key.as_ptr().cast(),
                key.len(),
                v.as_ptr().cast(),
                v.len(),
            )
        };
        match rc {
            MMXA_OK => Ok(()),
            rc => Err(rc),
        }
    }

    /// `put` outside any branch (a one-operation transaction), which must succeed.
    fn seed(&self, key: &str, v: i64) {
        if let Err(rc) = self.put(key, v) {
            panic!("seeding {key}: {rc}: {}", last_error());
        }
    }
}

/// Why an attempt ended without committing.
enum Abort {
    /// A data call failed with this `MMXA_*` code (the branch is now rollback-only).
    Data(i32),
    /// The body decided to roll back (not retried).
    Voluntary,
}

/// How the attempts of a workload ended.
#[derive(Default)]
struct Tally {
    committed: AtomicUsize,
    /// Attempts rolled back after `MMXA_EDEADLOCK`.
    deadlocks: AtomicUsize,
    /// Attempts rolled back after `MMXA_ELOCKTIMEOUT`.
    timeouts: AtomicUsize,
    /// Every attempt rolled back by mmxa and run again (the two above and any other).
    retries: AtomicUsize,
}

impl Tally {
    fn get(n: &AtomicUsize) -> usize {
        n.load(Ordering::Relaxed)
    }

    /// "retries (deadlocks / timeouts)".
    fn retries(&self) -> String {
        format!(
            "{} ({} / {})",
            Tally::get(&self.retries),
            Tally::get(&self.deadlocks),
            Tally::get(&self.timeouts)
        )
    }
}

/// Runs `body` as one global transaction with a branch on each of `stores` (the same XID on
/// each), committed in one phase on a single store and in two phases on several, and runs it
/// again under a new XID while mmxa rolls it back. Returns the body's value once committed, or
/// `None` when the body gave up by itself ([`Abort::Voluntary`]).
fn transact<T>(
    stores: &[&Rm],
    tag: &str,
    tally: &Tally,
    mut body: impl FnMut() -> Result<T, Abort>,
) -> Option<T> {
    for _ in 0..100_000 {
        let x = fresh_xid(tag);
        for s in stores {
            s.start(&x);
        }
        let result = body();
        match &result {
            Ok(_) | Err(Abort::Voluntary) => {}
            Err(Abort::Data(MMXA_EDEADLOCK)) => {
                tally.deadlocks.fetch_add(1, Ordering::Relaxed);
            }
            Err(Abort::Data(MMXA_ELOCKTIMEOUT)) => {
                tally.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(Abort::Data(rc)) => panic!("{tag}: a data call failed: {rc}: {}", last_error()),
        }
        let ok = result.is_ok();
        let mut all_ended = true;
        for s in stores {
            let rc = s.end(&x, if ok { TMSUCCESS } else { TMFAIL });
            if rc != XA_OK {
                assert!((XA_RBBASE..=XA_RBEND).contains(&rc), "{tag}: xa_end: {rc}");
                all_ended = false;
            }
        }
        let mut prepared = Vec::new();
        let mut committable = ok && all_ended;
        if committable && stores.len() > 1 {
            for s in stores {
                match s.prepare(&x) {
                    XA_OK => prepared.push(*s),
                    XA_RDONLY => {}
                    rc if (XA_RBBASE..=XA_RBEND).contains(&rc) => {
                        committable = false;
                        break;
                    }
                    rc => panic!("{tag}: xa_prepare: {rc}: {}", last_error()),
                }
            }
        }
        if !committable {
            for s in stores {
                let rc = s.rollback(&x);
                assert!(rc == XA_OK || rc == XAER_NOTA, "{tag}: xa_rollback: {rc}");
            }
            if matches!(result, Err(Abort::Voluntary)) {
                return None;
            }
            tally.retries.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if stores.len() == 1 {
            let rc = stores[0].commit(&x, TMONEPHASE);
            assert_eq!(rc, XA_OK, "{tag}: one-phase xa_commit: {}", last_error());
        }
        for s in prepared {
            let rc = s.commit(&x, TMNOFLAGS);
            assert_eq!(rc, XA_OK, "{tag}: xa_commit: {}", last_error());
        }
        tally.committed.fetch_add(1, Ordering::Relaxed);
        return result.ok();
    }
    panic!("{tag}: no attempt committed");
}

/// A data call's failure as an [`Abort`].
fn data<T>(r: Result<T, i32>) -> Result<T, Abort> {
    r.map_err(Abort::Data)
}

/// A 0700 temporary directory (the store refuses directories other users could reach).
fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("a temporary directory")
}

/// Figures of one workload at one level: (figure, value).
type Figures = Vec<(&'static str, String)>;

// ---- lost update ---------------------------------------------------------------------------------

/// `threads` threads of this process each commit `per_thread` increments of `counter` on `s`.
/// They all start at once, after each has opened the store and `gate` has returned.
fn count(
    s: &Rm,
    threads: usize,
    per_thread: usize,
    for_update: bool,
    gate: impl FnOnce(),
) -> Tally {
    let tally = Arc::new(Tally::default());
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (s, tally, start) = (s.clone(), tally.clone(), start.clone());
            thread::spawn(move || {
                s.open();
                start.wait();
                for _ in 0..per_thread {
                    transact(&[&s], &format!("ctr{t}"), &tally, || {
                        let v = data(s.get("counter", for_update))?;
                        // Let the other threads run between the read and the write.
                        thread::yield_now();
                        data(s.put("counter", v + 1))
                    });
                }
                s.close();
            })
        })
        .collect();
    gate();
    start.wait();
    for h in handles {
        h.join().expect("a counter thread");
    }
    Arc::try_unwrap(tally).unwrap_or_else(|_| unreachable!("every thread is done"))
}

fn lost_update_figures(committed: usize, counter: i64, retries: String) -> Figures {
    vec![
        ("committed increments", committed.to_string()),
        ("final counter", counter.to_string()),
        ("lost updates", (committed as i64 - counter).to_string()),
        ("retries (deadlock / timeout)", retries),
    ]
}

/// 4 threads × 150 increments in this process.
fn lost_update_threads(level: &str, for_update: bool) -> Figures {
    let dir = private_dir();
    let s = Rm::new(dir.path(), level, "");
    let tally = count(&s, 4, 150, for_update, || {});
    s.open();
    let counter = s.get("counter", false).expect("a committed read");
    s.close();
    lost_update_figures(Tally::get(&tally.committed), counter, tally.retries())
}

/// 3 child processes × 2 threads × 60 increments, this process keeping the store open.
fn lost_update_processes(level: &str) -> Figures {
    let dir = private_dir();
    let s = Rm::new(dir.path(), level, "");
    s.open();
    let exe = std::env::current_exe().expect("this example's path");
    let info = s.info.to_str().expect("UTF-8").to_owned();
    // Each child says "ready" once its threads have opened the store, and starts on "go", so
    // that the three run at the same time.
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            let mut c = Command::new(&exe)
                .env(CHILD, &info)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a child");
            let mut out = BufReader::new(c.stdout.take().expect("the child's stdout"));
            let mut line = String::new();
            out.read_line(&mut line).expect("the child's first line");
            assert_eq!(line.trim(), "ready", "a child failed to start");
            (c, out)
        })
        .collect();
    for (c, _) in &mut children {
        let mut stdin = c.stdin.take().expect("the child's stdin");
        stdin.write_all(b"go\n").expect("start a child");
    }
    let mut sums = [0usize; 4];
    for (mut c, mut out) in children {
        let mut text = String::new();
        out.read_to_string(&mut text).expect("the child's figures");
        assert!(
            c.wait().expect("a child").success(),
            "a child failed: {text}"
        );
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .unwrap_or_else(|| panic!("no figures from a child: {text}"));
        for (sum, n) in sums.iter_mut().zip(line.split_whitespace()) {
            *sum += n.parse::<usize>().expect("a count");
        }
    }
    let counter = s.get("counter", false).expect("a committed read");
    s.close();
    let retries = format!("{} ({} / {})", sums[1], sums[2], sums[3]);
    lost_update_figures(sums[0], counter, retries)
}

/// A child process: 2 threads × 60 increments on the store of `info`; prints its tally.
fn child(info: &str) {
    let s = Rm::with_info(info);
    let t = count(&s, 2, 60, false, || {
        println!("ready");
        std::io::stdout().flush().expect("stdout");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).expect("stdin");
    });
    println!(
        "child {} {} {} {}",
        Tally::get(&t.committed),
        Tally::get(&t.retries),
        Tally::get(&t.deadlocks),
        Tally::get(&t.timeouts)
    );
}

// ---- read skew -----------------------------------------------------------------------------------

/// xorshift64*, for the transfers' fixed random choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// 4 movers × 80 transfers between 8 accounts of 100 on two stores, audited meanwhile.
/// `all_lock`: every mover reads with `mmxa_get_for_update` (else half of them do).
fn read_skew(level: &str, all_lock: bool) -> Figures {
    let (da, db) = (private_dir(), private_dir());
    let stores = [
        Rm::new(da.path(), level, "lock_timeout_ms=200"),
        Rm::new(db.path(), level, "lock_timeout_ms=200"),
    ];
    let accounts: Vec<(usize, String)> = (0..4)
        .map(|i| (0, format!("a{i}")))
        .chain((0..4).map(|i| (1, format!("b{i}"))))
        .collect();
    for s in &stores {
        s.open();
    }
    for (st, name) in &accounts {
        stores[*st].seed(name, 100);
    }
    let total = 100 * accounts.len() as i64;
    let tally = Arc::new(Tally::default());
    let audit_tally = Arc::new(Tally::default());
    let movers = 4;
    let done = Arc::new(AtomicUsize::new(0));
    // Movers and auditor start together, once each has opened both stores.
    let start = Arc::new(Barrier::new(movers + 1));
    let mut handles = Vec::new();
    for t in 0..movers {
        let (stores, accounts, tally, done, start) = (
            stores.clone(),
            accounts.clone(),
            tally.clone(),
            done.clone(),
            start.clone(),
        );
        let for_update = all_lock || t % 2 == 0;
        handles.push(thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
            for s in &stores {
                s.open();
            }
            start.wait();
            let refs: Vec<&Rm> = stores.iter().collect();
            for _ in 0..80 {
                let from = rng.below(accounts.len() as u64) as usize;
                let mut to = rng.below(accounts.len() as u64 - 1) as usize;
                if to >= from {
                    to += 1;
                }
                let amount = 1 + rng.below(20) as i64;
                let ((fs, fk), (ts, tk)) = (&accounts[from], &accounts[to]);
                let (fs, ts) = (&stores[*fs], &stores[*ts]);
                transact(&refs, &format!("mv{t}"), &tally, || {
                    let f = data(fs.get(fk, for_update))?;
                    if f < amount {
                        return Err(Abort::Voluntary);
                    }
                    let v = data(ts.get(tk, for_update))?;
                    data(fs.put(fk, f - amount))?;
                    data(ts.put(tk, v + amount))
                });
            }
            for s in &stores {
                s.close();
            }
            done.fetch_add(1, Ordering::Release);
        }));
    }
    let (audits, wrong) = {
        let (stores, accounts, tally, done) = (
            stores.clone(),
            accounts.clone(),
            audit_tally.clone(),
            done.clone(),
        );
        thread::spawn(move || {
            for s in &stores {
                s.open();
            }
            start.wait();
            let refs: Vec<&Rm> = stores.iter().collect();
            let (mut audits, mut wrong) = (0usize, 0usize);
            while done.load(Ordering::Acquire) < movers || audits < 20 {
                let seen = transact(&refs, "audit", &tally, || {
                    let mut sum = 0;
                    for (st, name) in &accounts {
                        sum += data(stores[*st].get(name, false))?;
                    }
                    Ok(sum)
                })
                .expect("an audit never gives up");
                audits += 1;
                wrong += usize::from(seen != total);
            }
            for s in &stores {
                s.close();
            }
            (audits, wrong)
        })
        .join()
        .expect("the auditor")
    };
    for h in handles {
        h.join().expect("a mover");
    }
    let final_total: i64 = accounts
        .iter()
        .map(|(st, name)| stores[*st].get(name, false).expect("a committed read"))
        .sum();
    for s in &stores {
        s.close();
    }
    vec![
        (
            "transfers committed (of 320)",
            Tally::get(&tally.committed).to_string(),
        ),
        ("transfer retries (deadlock / timeout)", tally.retries()),
        ("audits", audits.to_string()),
        ("audits that saw a wrong total", wrong.to_string()),
        ("audit retries (deadlock / timeout)", audit_tally.retries()),
        (
            "final total (800 expected)",
            format!(
                "{final_total}{}",
                if final_total == total { "" } else { " (wrong)" }
            ),
        ),
    ]
}

// ---- write skew ----------------------------------------------------------------------------------

/// x = y = 1; two threads each read both and, while x + y ≥ 2, decrement their own; 50 rounds.
fn write_skew(level: &str) -> Figures {
    let dir = private_dir();
    let s = Rm::new(dir.path(), level, "");
    let rounds = 50;
    let barrier = Arc::new(Barrier::new(2));
    let tally = Arc::new(Tally::default());
    let skewed = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|who| {
            let (s, barrier, tally, skewed) =
                (s.clone(), barrier.clone(), tally.clone(), skewed.clone());
            thread::spawn(move || {
                s.open();
                let mine = if who == 0 { "x" } else { "y" };
                for _ in 0..rounds {
                    if who == 0 {
                        s.seed("x", 1);
                        s.seed("y", 1);
                    }
                    barrier.wait();
                    let mut first = true;
                    transact(&[&s], &format!("skew{who}"), &tally, || {
                        let x = data(s.get("x", false))?;
                        let y = data(s.get("y", false))?;
                        if first {
                            // Both have read both before either writes, where the level
                            // lets them.
                            first = false;
                            barrier.wait();
                        }
                        if x + y >= 2 {
                            let v = if who == 0 { x } else { y };
                            data(s.put(mine, v - 1))?;
                        }
                        Ok(())
                    });
                    barrier.wait();
                    if who == 0 {
                        let x = s.get("x", false).expect("a committed read");
                        let y = s.get("y", false).expect("a committed read");
                        if x + y < 1 {
                            skewed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                }
                s.close();
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a write-skew thread");
    }
    vec![
        ("rounds", rounds.to_string()),
        (
            "rounds ending with x + y = 0",
            skewed.load(Ordering::Relaxed).to_string(),
        ),
        ("retries (deadlock / timeout)", tally.retries()),
    ]
}

// ---- the table -----------------------------------------------------------------------------------

fn main() {
    if let Ok(info) = std::env::var(CHILD) {
        child(&info);
        return;
    }
    type Workload = (&'static str, Box<dyn Fn(&str) -> Figures>);
    let workloads: Vec<Workload> = vec![
        (
            "lost update, 4 threads × 150",
            Box::new(|l| lost_update_threads(l, false)),
        ),
        (
            "lost update, 4 threads × 150, `mmxa_get_for_update`",
            Box::new(|l| lost_update_threads(l, true)),
        ),
        (
            "lost update, 3 processes × 2 threads × 60",
            Box::new(lost_update_processes),
        ),
        (
            "read skew, 4 movers × 80 (half lock), auditor",
            Box::new(|l| read_skew(l, false)),
        ),
        (
            "read skew, 4 movers × 80 (all lock), auditor",
            Box::new(|l| read_skew(l, true)),
        ),
        ("write skew, 2 threads", Box::new(write_skew)),
    ];
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, run) in &workloads {
        let figures: Vec<Figures> = LEVELS
            .iter()
            .map(|level| {
                let t = Instant::now();
                let f = run(level);
                eprintln!("{name}, {level}: {:.1} s", t.elapsed().as_secs_f64());
                f
            })
            .collect();
        for (i, ((figure, rc), (_, sz))) in figures[0].iter().zip(&figures[1]).enumerate() {
            let name = if i == 0 { *name } else { "" };
            rows.push(format!("| {name} | {figure} | {rc} | {sz} |"));
        }
    }
    println!("| workload | figure | read_committed | serializable |");
    println!("|---|---|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    eprintln!("total: {:.1} s", started.elapsed().as_secs_f64());
}
