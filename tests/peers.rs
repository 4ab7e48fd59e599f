//! The shared log across real processes.
//!
//! `a_peer_dies_anywhere_and_the_other_goes_on`: a parent and a child (this test binary
//! re-executed) append to one log at the same time, each through its own mappings of the
//! segment files and its own handle on a region file, with group commit and rolls by both over
//! 16 KiB segments. The child dies:
//! - at a crash point inside an append (its section not committed, the region mutex held), a
//!   roll (the next segment created; SEGMENT_END written; sealed; published) or a group commit
//!   it leads (flushing; flushed, not published), at several of its passes (`MMXA_CRASH_AT`,
//!   see `mmxa::crash`: the child aborts, which for the store is the same as a SIGKILL);
//! - or by SIGKILL at a random moment ([`RANDOM_KILLS`] rounds; `MMXA_PEERS_SEED` replays the
//!   choices, not the timing).
//!
//! The parent must go on: repair the section the child died in, take over its roll or its lead,
//! and append and sync a hundred more records after the death. Then a reopen of the files must
//! replay, without corruption, exactly the records whose appends returned — every one of the
//! parent's, every one the child reported — in the order of their LSNs, with their values
//! intact; so nothing acknowledged (synced) is lost, and nothing of the dead section is kept.

mod rng;

use mmxa::config::SyncMode;
use mmxa::log::{reap_claims, Log, Mapped, Peer, Record};
use mmxa::shm::{LockFile, Opened, Options, Region};
use rng::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const TEST: &str = "a_peer_dies_anywhere_and_the_other_goes_on";
/// Set in the child: the store directory.
const ENV_CHILD: &str = "MMXA_PEERS_CHILD";
/// Set in the child: append until killed.
const ENV_FOREVER: &str = "MMXA_PEERS_FOREVER";
const MARK: &str = "@mmxa-peers@ ";
const SEG: u64 = 16 << 10;
const T: Duration = Duration::from_secs(30);
/// Records the child appends (it syncs every second one) before it says it is done.
const CHILD_RECORDS: u64 = 500;
const CHILD_TAG: u64 = 100;
/// The parent's appending threads, tags 1 and up.
const PARENT_THREADS: u64 = 2;
/// Records each parent thread appends after the child's death.
const AFTER: u64 = 50;
/// The crash points and the passes to die at.
const CASES: &[(&str, &[u64])] = &[
    ("log.appended_in_section", &[1, 7, 40, 150]),
    ("log.roll_created", &[1, 2, 4]),
    ("log.rolled", &[1, 2, 4]),
    ("log.roll_sealed", &[1, 2, 4]),
    ("log.rolled_published", &[1, 2, 4]),
    ("log.leader_flushing", &[1, 5, 30]),
    ("log.leader_flushed", &[1, 5, 30]),
];
const RANDOM_KILLS: usize = 6;

/// The value of record `i` of the appender with `tag`: its length and bytes depend on both.
fn value(tag: u64, i: u64) -> Vec<u8> {
    let len = 40 + ((i * 37 + tag * 11) % 400) as usize;
    (0..len)
        .map(|k| (k as u64).wrapping_mul(31).wrapping_add(i * 7 + tag) as u8)
        .collect()
}

fn record<'a>(tag: u64, key: &'a [u8; 8], value: &'a [u8]) -> Record<'a> {
    Record::Put { tag, key, value }
}

/// One process's handle on the store: its log, with the lock file (which holds its slot) and
/// the region kept alive beside it.
struct Joined {
    log: Log,
    _lock: Arc<LockFile>,
    _region: Arc<Region>,
}

/// Opens the store in `dir` as a peer: builds the region from the log if no process has the
/// store open, attaches otherwise.
fn join(dir: &Path) -> Joined {
    let lock = Arc::new(LockFile::open(&dir.join("peers.lock"), 0o600).expect("lock file"));
    let opened = lock
        .open_or_recover(&dir.join("peers.region"), 0o600, Options::default(), T)
        .expect("open the region");
    let (region, fresh) = match opened {
        Opened::Fresh(r) => (Arc::new(r), true),
        Opened::Attached(r) => (Arc::new(r), false),
    };
    // A slot whose owner died is reaped: its claims on the log go.
    let slot = lock
        .claim_slot(&region, T, |t, dead| reap_claims(t, dead.index))
        .expect("claim a slot");
    let l = lock.clone();
    let peer = Peer::new(slot.index, Arc::new(move |s| l.is_dead(s).unwrap_or(false)));
    let log = if fresh {
        let log = Log::open_on(
            Mapped::new(dir),
            SEG,
            SyncMode::Msync,
            region.clone(),
            peer,
            &mut |_, _| Ok(()),
        )
        .expect("open the log");
        lock.finish_recovery(&region, T)
            .expect("publish the region");
        log
    } else {
        Log::attach(Mapped::new(dir), SEG, SyncMode::Msync, region.clone(), peer)
            .expect("attach to the log")
    };
    Joined {
        log,
        _lock: lock,
        _region: region,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

/// The child: attaches, appends [`CHILD_RECORDS`] records, or until it is killed (syncing
/// every second one), and reports each append and each acknowledgement.
fn child(dir: PathBuf) -> ! {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a live struct: no core file for the deaths to come.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
    let j = join(&dir);
    say("ready");
    let n = if std::env::var_os(ENV_FOREVER).is_some() {
        u64::MAX
    } else {
        CHILD_RECORDS
    };
    for i in 0..n {
        let (key, v) = (i.to_le_bytes(), value(CHILD_TAG, i));
        let a = match j.log.append_alone(&record(CHILD_TAG, &key, &v)) {
            Ok(a) => a,
            Err(e) => {
                say(&format!("error append {i}: {e}"));
                std::process::exit(2);
            }
        };
        say(&format!("appended {i} {}", a.lsn));
        if i % 2 == 1 {
            if let Err(e) = j.log.sync_to(a.end) {
                say(&format!("error sync {i}: {e}"));
                std::process::exit(2);
            }
            say(&format!("acked {i}"));
        }
    }
    say("done");
    drop(j);
    std::process::exit(0)
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a round ended for the child.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Died at its crash point.
    AtPoint,
    /// Killed by the parent.
    Killed,
    /// Ran to the end (the crash point was not reached that often).
    Done,
}

/// One round: a fresh store, the parent appending while the child runs and dies (at `point`,
/// or SIGKILLed after `kill_after`), the parent going on, a reopen checked.
fn round(point: Option<(&str, u64)>, kill_after: Option<Duration>, ctx: &str) -> End {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap()
    };
    let parent = join(dir.path());
    // A peer left waiting for ever would hang the test: fail it instead.
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (finished, ctx) = (finished.clone(), ctx.to_string());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !finished.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    eprintln!("{ctx}: the round hangs (a peer waits for ever?)");
                    std::process::exit(3);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ENV_CHILD, dir.path())
        .env_remove(mmxa::crash::ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((p, n)) = point {
        cmd.env(mmxa::crash::ENV, format!("{p}:{n}"));
    }
    if kill_after.is_some() {
        cmd.env(ENV_FOREVER, "1");
    }
    let mut child = ChildGuard(cmd.spawn().expect("spawn the child"));
    let stdout = child.0.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, msg)) = line.split_once(MARK) {
                if tx.send(msg.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let mut lines = Vec::new();
    match rx.recv_timeout(T) {
        Ok(l) if l == "ready" => lines.push(l),
        other => panic!("{ctx}: the child did not attach: {other:?}"),
    }
    let gone = AtomicBool::new(false);
    // What the parent appended: (tag, i) → LSN.
    let appended: Mutex<BTreeMap<(u64, u64), u64>> = Mutex::new(BTreeMap::new());
    let status = std::thread::scope(|s| {
        for t in 1..=PARENT_THREADS {
            let (log, gone, appended) = (&parent.log, &gone, &appended);
            s.spawn(move || {
                let mut after = None;
                let mut i = 0u64;
                loop {
                    if after.is_none() && gone.load(Ordering::SeqCst) {
                        after = Some(i + AFTER);
                    }
                    if after.is_some_and(|a| i >= a) || i > 100_000 {
                        break;
                    }
                    let (key, v) = (i.to_le_bytes(), value(t, i));
                    let a = log
                        .append_alone(&record(t, &key, &v))
                        .unwrap_or_else(|e| panic!("{ctx}: parent append {t}/{i}: {e}"));
                    appended.lock().unwrap().insert((t, i), a.lsn);
                    if i % 3 == 2 {
                        log.sync_to(a.end)
                            .unwrap_or_else(|e| panic!("{ctx}: parent sync {t}/{i}: {e}"));
                        assert!(log.durable() >= a.end);
                    }
                    i += 1;
                }
            });
        }
        let status = match kill_after {
            Some(d) => {
                std::thread::sleep(d);
                // SAFETY: plain syscall; the child is not reaped yet, so the pid is ours.
                unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGKILL) };
                child.0.wait().expect("wait for the child")
            }
            None => {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    if let Some(st) = child.0.try_wait().expect("wait for the child") {
                        break st;
                    }
                    assert!(Instant::now() < deadline, "{ctx}: the child hangs");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        gone.store(true, Ordering::SeqCst);
        status
    });
    lines.extend(rx.iter());
    reader.join().expect("reader thread");
    if let Some(e) = lines.iter().find(|l| l.starts_with("error")) {
        panic!("{ctx}: the child failed: {e}");
    }
    use std::os::unix::process::ExitStatusExt;
    let end = match status.signal() {
        Some(libc::SIGABRT) if point.is_some() => End::AtPoint,
        Some(libc::SIGKILL) if kill_after.is_some() => End::Killed,
        None if status.code() == Some(0) && lines.last().is_some_and(|l| l == "done") => End::Done,
        _ => panic!("{ctx}: the child ended with {status:?}; last lines {:?}", {
            let k = lines.len().saturating_sub(3);
            &lines[k..]
        }),
    };
    finished.store(true, Ordering::SeqCst);
    watchdog.join().expect("watchdog");
    assert!(
        parent.log.failed().is_none(),
        "{ctx}: {:?}",
        parent.log.failed()
    );
    let leads = parent.log.leads();
    drop(parent);
    // What the child reported: i → LSN, in order.
    let mut want: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut reported = 0;
    for l in &lines {
        if let Some(rest) = l.strip_prefix("appended ") {
            let (i, lsn) = rest.split_once(' ').expect("appended i lsn");
            let i: u64 = i.parse().unwrap();
            assert_eq!(i, reported, "{ctx}: the child's appends in order");
            reported += 1;
            want.insert(lsn.parse().unwrap(), (CHILD_TAG, i));
        }
    }
    for (&(t, i), &lsn) in appended.lock().unwrap().iter() {
        assert!(
            want.insert(lsn, (t, i)).is_none(),
            "{ctx}: two appends at {lsn}"
        );
    }
    // The reopen, by a process alone with the files.
    let mut got: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut bad = Vec::new();
    Log::open(dir.path(), SEG, SyncMode::Msync, &mut |lsn, rec| {
        match rec {
            Record::Put { tag, key, value: v } => {
                let i = u64::from_le_bytes(key.try_into().map_err(|_| "key length")?);
                if v != value(tag, i) {
                    bad.push(format!("value of {tag}/{i} at {lsn}"));
                }
                got.insert(lsn, (tag, i));
            }
            other => bad.push(format!("unexpected record {other:?} at {lsn}")),
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    assert!(bad.is_empty(), "{ctx}: {bad:?}");
    if end == End::Killed {
        // Killed between an append's commit and its report: one more record of the child's.
        if let Some((&lsn, &(CHILD_TAG, i))) = got.iter().find(|(l, _)| !want.contains_key(l)) {
            if i == reported {
                want.insert(lsn, (CHILD_TAG, i));
            }
        }
    }
    if got != want {
        let missing: Vec<_> = want.iter().filter(|(l, _)| !got.contains_key(l)).collect();
        let extra: Vec<_> = got.iter().filter(|(l, _)| !want.contains_key(l)).collect();
        panic!(
            "{ctx}: the reopen replays {} records, {} appended; missing {:?}, extra {:?}",
            got.len(),
            want.len(),
            &missing[..missing.len().min(5)],
            &extra[..extra.len().min(5)]
        );
    }
    let acked = lines.iter().filter(|l| l.starts_with("acked")).count();
    eprintln!(
        "{ctx}: {end:?}; child appended {reported} (acked {acked}), parent {} (led {leads} \
         syncs); {} segment(s) rolled",
        appended.lock().unwrap().len(),
        got.keys().last().map_or(0, |l| l / SEG)
    );
    end
}

#[test]
fn a_peer_dies_anywhere_and_the_other_goes_on() {
    if let Some(dir) = std::env::var_os(ENV_CHILD) {
        child(PathBuf::from(dir));
    }
    let started = Instant::now();
    let mut never = Vec::new();
    for &(point, counts) in CASES {
        let mut reached = 0;
        for &n in counts {
            match round(Some((point, n)), None, &format!("{point}:{n}")) {
                End::AtPoint => reached += 1,
                End::Done => break, // a later pass is not reached either
                End::Killed => unreachable!(),
            }
        }
        if reached == 0 {
            never.push(point);
        }
    }
    assert!(
        never.is_empty(),
        "crash points never passed by the child: {never:?}"
    );
    let seed = rng::seed("MMXA_PEERS_SEED", "random kills");
    let mut rng = Rng::new(seed);
    for k in 0..RANDOM_KILLS {
        let ms = rng.range(20, 300);
        let end = round(
            None,
            Some(Duration::from_millis(ms)),
            &format!("SIGKILL after {ms} ms (seed {seed}, round {k})"),
        );
        assert_eq!(end, End::Killed);
    }
    eprintln!(
        "peers: every round survived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
