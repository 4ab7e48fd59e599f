//! `mmxa backup` and high availability: copies of idle stores and of stores a TM process keeps
//! committing and preparing on (with log space reclaimed meanwhile), `--verify` on good and
//! damaged copies, a copy rewritten with another segment size, refusals; a crash image of a
//! live store opened from another path by another process; a second open of a store under a
//! bind mount refused.
//!
//! The load is an XA shell (`tests/shell`) running the command `load` added here: transfers
//! between ten accounts (2PC, each also writing a marker key of its own and a padding value that
//! makes the log grow), and every seventh transaction a branch left prepared; each
//! acknowledgement is appended to a file before the next transaction starts.

mod ffi_common;
mod shell;

use mmxa::config::Config;
use mmxa::rm::Rm;
use mmxa::xa::*;
use shell::{open_string, shell_if_child_with, shell_xid, Shell};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ACCOUNTS: usize = 10;
const START_BALANCE: i64 = 100;
/// A liveness bound for waits on the worker.
const PATIENCE: Duration = Duration::from_secs(120);

/// The shell command `load RMID ACKS STOP`: runs transactions until the file STOP exists.
fn load_command(words: &[&str], infos: &BTreeMap<i32, String>) -> Option<String> {
    if words.first() != Some(&"load") {
        return None;
    }
    let rmid: i32 = words[1].parse().unwrap();
    let (acks, stop) = (Path::new(words[2]), Path::new(words[3]));
    let r = shell::rm(rmid, infos);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(acks)
        .unwrap();
    let pad = "p".repeat(300);
    let mut i = 0u64;
    let mut failures = 0u64;
    while !stop.exists() {
        i += 1;
        if i % 7 == 0 {
            let x = shell_xid(&format!("p{i}"));
            let ok = r.start(&x, TMNOFLAGS) == XA_OK
                && r.put(format!("pk{i}").as_bytes(), b"v") == 0
                && r.end(&x, TMSUCCESS) == XA_OK
                && r.prepare(&x) == XA_OK;
            if ok {
                writeln!(out, "P p{i}").unwrap();
            } else {
                failures += 1;
                r.rollback(&x);
            }
            continue;
        }
        let x = shell_xid(&format!("t{i}"));
        let a = (i as usize) % ACCOUNTS;
        let b = (a + 1 + (i as usize / ACCOUNTS) % (ACCOUNTS - 1)) % ACCOUNTS;
        let bal = |k: usize| -> Option<i64> {
            let v = r.get_for_update(format!("a{k}").as_bytes()).ok()??;
            String::from_utf8(v).ok()?.parse().ok()
        };
        let mut ok = r.start(&x, TMNOFLAGS) == XA_OK;
        if ok {
            ok = match (bal(a), bal(b)) {
                (Some(va), Some(vb)) => {
                    r.put(format!("a{a}").as_bytes(), (va - 1).to_string().as_bytes()) == 0
                        && r.put(format!("a{b}").as_bytes(), (vb + 1).to_string().as_bytes()) == 0
                        && r.put(format!("m{i}").as_bytes(), b"1") == 0
                        && r.put(b"pad", pad.as_bytes()) == 0
                }
                _ => false,
            } && r.end(&x, TMSUCCESS) == XA_OK
                && r.prepare(&x) == XA_OK
                && r.commit(&x, TMNOFLAGS) == XA_OK;
        }
        if ok {
            writeln!(out, "C t{i}").unwrap();
        } else {
            failures += 1;
            r.end(&x, TMFAIL);
            r.rollback(&x);
        }
    }
    Some(format!("{i} {failures}"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

fn mmxa(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mmxa")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = mmxa(args, &[]);
    assert_eq!(o.status.code(), Some(0), "mmxa {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[track_caller]
fn fails(args: &[&str], code: i32) -> String {
    let o = mmxa(args, &[]);
    assert_eq!(o.status.code(), Some(code), "mmxa {args:?}: {}", text(&o));
    text(&o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store as the test sees it: chosen keys' committed values, and every in-doubt branch
/// (gtrid, state, reason).
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    values: BTreeMap<String, Option<String>>,
    branches: BTreeSet<(String, String, String)>,
}

/// Opens the store in `dir` in this process (another process than the one that wrote it) and
/// reads `keys` and its branches.
fn contents(dir: &Path, keys: &[String]) -> Contents {
    let rm = Rm::open(Config::new(dir)).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
    let values = keys
        .iter()
        .map(|k| {
            let v = rm.get(mmxa::rm::new_toc(), k.as_bytes()).unwrap();
            (k.clone(), v.map(|v| String::from_utf8(v).unwrap()))
        })
        .collect();
    let branches = rm
        .status()
        .branches
        .into_iter()
        .map(|b| {
            (
                String::from_utf8_lossy(b.xid.gtrid()).into_owned(),
                b.state,
                b.reason,
            )
        })
        .collect();
    Contents { values, branches }
}

/// The acknowledgements so far: committed transfers and prepared branches (by gtrid).
fn acks(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut c, mut p) = (Vec::new(), Vec::new());
    // The last line may be half written.
    for l in text.lines().filter(|l| l.len() > 2) {
        match l.split_once(' ') {
            Some(("C", g)) => c.push(g.to_string()),
            Some(("P", g)) => p.push(g.to_string()),
            _ => {}
        }
    }
    (c, p)
}

/// Checks a store holding the worker's transactions: every acknowledged commit and prepare is
/// there, the accounts hold the total (nothing half applied), and every committed transfer
/// is complete.
fn check_against_acks(dir: &Path, committed: &[String], prepared: &[String]) {
    let rm = Rm::open(Config::new(dir)).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
    let get = |k: &str| {
        rm.get(mmxa::rm::new_toc(), k.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    };
    let total: i64 = (0..ACCOUNTS)
        .map(|k| get(&format!("a{k}")).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        total,
        START_BALANCE * ACCOUNTS as i64,
        "{}: a transfer is half applied",
        dir.display()
    );
    for g in committed {
        let marker = format!("m{}", &g[1..]);
        assert_eq!(
            get(&marker).as_deref(),
            Some("1"),
            "{}: acknowledged commit {g} is missing",
            dir.display()
        );
    }
    let in_doubt: BTreeSet<String> = rm
        .status()
        .branches
        .iter()
        .filter(|b| b.state == "prepared")
        .map(|b| String::from_utf8_lossy(b.xid.gtrid()).into_owned())
        .collect();
    for g in prepared {
        assert!(
            in_doubt.contains(g),
            "{}: acknowledged prepare {g} is missing",
            dir.display()
        );
    }
}

/// Starts a TM shell on a store in `dir` with segments of `kib` KiB and the ten accounts.
fn start_tm(test: &str, dir: &Path, kib: u64) -> Shell {
    let mut tm = Shell::spawn(test, "tm");
    tm.rc(&format!("openk 1 {kib} {}", open_string(dir, "")), XA_OK);
    for k in 0..ACCOUNTS {
        tm.rc(&format!("put 1 a{k} {START_BALANCE}"), 0);
    }
    tm
}

fn wait_for_acks(path: &Path, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while acks(path).0.len() < n {
        assert!(Instant::now() < deadline, "the worker does not commit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn seg_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("log-{id:016x}.seg"))
}

/// The branches and keys of a store with committed data, prepared branches and heuristic
/// outcomes, written by a TM shell that then closes it. Returns the keys to compare.
fn make_idle_store(test: &str, dir: &Path, kib: u64) -> Vec<String> {
    let mut tm = Shell::spawn(test, "tm");
    tm.rc(&format!("openk 1 {kib} {}", open_string(dir, "")), XA_OK);
    let mut keys = Vec::new();
    for i in 0..40 {
        tm.rc(&format!("put 1 c{i} value-{i}-{}", "x".repeat(i * 40)), 0);
        keys.push(format!("c{i}"));
    }
    tm.rc("del 1 c3", 0);
    for g in ["prep1", "prep2", "hcom", "hrb"] {
        tm.rc(&format!("start 1 {g} 0"), XA_OK);
        tm.rc(&format!("put 1 k-{g} {g}"), 0);
        if g == "prep1" {
            tm.rc("del 1 c5", 0);
        }
        tm.rc(&format!("end 1 {g} {TMSUCCESS}"), XA_OK);
        tm.rc(&format!("prepare 1 {g}"), XA_OK);
        keys.push(format!("k-{g}"));
    }
    tm.rc("heur 1 hcom commit", XA_OK);
    tm.rc("heur 1 hrb rollback", XA_OK);
    // An unfinished branch: rolled back by recovery, in the source and in the copy alike.
    tm.rc("start 1 open 0", XA_OK);
    tm.rc("put 1 k-open x", 0);
    keys.push("k-open".into());
    assert!(tm.finish().success());
    keys
}

#[test]
fn backup_of_an_idle_store_holds_its_keys_in_doubt_branches_and_heuristic_outcomes() {
    const T: &str =
        "backup_of_an_idle_store_holds_its_keys_in_doubt_branches_and_heuristic_outcomes";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let keys = make_idle_store(T, &src, 16);
    let orig = contents(&src, &keys);
    let dest = tmp.path().join("copy");

    let out = ok(&["backup", s(&src), s(&dest)]);
    assert!(out.contains("40 key(s), 4 in-doubt branch(es)"), "{out}");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let names: BTreeSet<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.contains("mmxa.shm") && !names.contains("mmxa.lock"),
        "{names:?}"
    );
    assert!(names.contains("mmxa.audit"), "{names:?}");
    // Nothing left beside it.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    let copy = contents(&dest, &keys);
    assert_eq!(copy, orig);
    assert!(copy.values["c5"].is_some(), "prep1's delete is pending");
    assert_eq!(copy.values["c3"], None);
    assert_eq!(copy.values["k-hcom"].as_deref(), Some("hcom"));
    assert_eq!(copy.values["k-open"], None);
    let states: Vec<&str> = copy.branches.iter().map(|b| b.1.as_str()).collect();
    assert_eq!(
        states,
        [
            "heuristic-commit",
            "heuristic-rollback",
            "prepared",
            "prepared"
        ]
    );
    assert_eq!(
        ok(&["recover", s(&dest)]),
        ok(&["recover", s(&src)]),
        "the same in-doubt XIDs"
    );
    // The source is unchanged and whole.
    assert!(ok(&["verify", s(&src)]).contains(": ok:"));
    assert_eq!(contents(&src, &keys), orig);

    // An empty directory is a destination too.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&["backup", s(&src), s(&empty)]);
    assert_eq!(contents(&empty, &keys), orig);

    // Refusals: a destination that is not empty, a missing store, a bad setting.
    let err = fails(&["backup", s(&src), s(&dest)], 2);
    assert!(err.contains("not empty") && err.contains(s(&dest)), "{err}");
    let err = fails(&["backup", s(&tmp.path().join("nothing")), "/tmp/x"], 3);
    assert!(err.contains("nothing"), "{err}");
    let err = fails(
        &["backup", s(&src), s(&tmp.path().join("c2")), "segment_mb=1"],
        2,
    );
    assert!(err.contains("segment_mb"), "{err}");
    assert!(!tmp.path().join("c2").exists());
}

#[test]
fn backup_while_a_tm_commits_and_prepares_with_reclaiming_keeps_every_acknowledged_branch() {
    const T: &str =
        "backup_while_a_tm_commits_and_prepares_with_reclaiming_keeps_every_acknowledged_branch";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let (ackf, stop) = (tmp.path().join("acks"), tmp.path().join("stop"));
    // 32 KiB segments: the log is reclaimed every few dozen transactions.
    let mut tm = start_tm(T, &src, 32);
    tm.send(&format!("load 1 {} {}", s(&ackf), s(&stop)));
    wait_for_acks(&ackf, 50);
    let mut checked = 0;
    for round in 0..3 {
        let (committed, prepared) = acks(&ackf);
        let dest = tmp.path().join(format!("copy{round}"));
        // A pause after each segment copied leaves the worker time to fill and reclaim
        // segments while the copy is under way.
        let o = mmxa(
            &["backup", "--verify", s(&src), s(&dest)],
            &[("MMXA_BACKUP_PAUSE_MS", "150")],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        check_against_acks(&dest, &committed, &prepared);
        checked += committed.len() + prepared.len();
        wait_for_acks(&ackf, committed.len() + 40);
    }
    // Segments were reclaimed in the source meanwhile.
    let deadline = Instant::now() + PATIENCE;
    while seg_file(&src, 1).exists() {
        assert!(Instant::now() < deadline, "nothing was reclaimed");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&stop, "").unwrap();
    let done = tm.recv();
    assert!(tm.finish().success());
    let (committed, prepared) = acks(&ackf);
    eprintln!(
        "worker: {done} (transactions, failures); {} commits and {} prepares acknowledged, \
         {checked} checked in copies",
        committed.len(),
        prepared.len()
    );
    assert!(ok(&["verify", s(&src)]).contains(": ok:"));
    check_against_acks(&src, &committed, &prepared);
}

#[test]
fn backup_verify_says_ok_on_a_good_copy_and_reports_a_damaged_one() {
    const T: &str = "backup_verify_says_ok_on_a_good_copy_and_reports_a_damaged_one";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("openk 1 16 {}", open_string(&src, "")), XA_OK);
    for i in 0..200 {
        tm.rc(&format!("put 1 key{i} {}", "v".repeat(200)), 0);
    }
    tm.rc("start 1 pv 0", XA_OK);
    tm.rc("put 1 kpv 1", 0);
    tm.rc(&format!("end 1 pv {TMSUCCESS}"), XA_OK);
    tm.rc("prepare 1 pv", XA_OK);
    assert!(seg_file(&src, 3).exists(), "several segments");

    let good = tmp.path().join("good");
    let out = ok(&["backup", "--verify", s(&src), s(&good)]);
    assert!(out.contains("verify: ok:"), "{out}");
    assert!(
        out.contains("200 key(s) and 1 in-doubt branch(es):\n  1.7076.62\n"),
        "{out}"
    );

    // Damage in the first segment (sealed: later segments hold records), as a disk might.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_file(&src, 1))
        .unwrap();
    f.write_all_at(&[0xff; 4], 200).unwrap();
    let bad = tmp.path().join("bad");
    let err = fails(&["backup", "--verify", s(&src), s(&bad)], 4);
    assert!(
        err.contains("damaged") && err.contains("log-0000000000000001.seg at offset"),
        "{err}"
    );
    assert!(
        err.contains(s(&seg_file(&src, 1))),
        "names the source's file: {err}"
    );
    assert!(!bad.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no half copy left: {left:?}");
    // The good copy still verifies with the tool's own verify.
    assert!(ok(&["verify", s(&good)]).contains(": ok:"));
    tm.rc("close 1", XA_OK);
}

#[test]
fn backup_with_another_segment_size_holds_the_same_data() {
    const T: &str = "backup_with_another_segment_size_holds_the_same_data";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let keys = make_idle_store(T, &src, 16);
    assert!(seg_file(&src, 2).exists(), "several 16 KiB segments");
    let dest = tmp.path().join("copy");
    let out = ok(&["backup", "--verify", s(&src), s(&dest), "segment_mb=4"]);
    assert!(out.contains("rewritten with 4 MiB segments"), "{out}");
    assert!(out.contains("verify: ok:"), "{out}");
    let segs: Vec<u64> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(segs, [4 << 20], "one 4 MiB segment");
    assert_eq!(contents(&dest, &keys), contents(&src, &keys));
    // A copy of the copy with the size it has already: a byte copy, the same data.
    let back = tmp.path().join("back");
    let out = ok(&["backup", s(&dest), s(&back), "segment_mb=4"]);
    assert!(!out.contains("rewritten"), "{out}");
    assert_eq!(contents(&back, &keys), contents(&src, &keys));
}

/// A crash image of a live store (its files copied while the writer is stopped at an
/// arbitrary instruction), opened from another path by another process: nothing acknowledged
/// is lost. What a standby sees after a failover on replicated storage.
#[test]
fn ha_a_crash_image_of_a_live_store_opens_elsewhere_with_nothing_acknowledged_lost() {
    const T: &str =
        "ha_a_crash_image_of_a_live_store_opens_elsewhere_with_nothing_acknowledged_lost";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let (ackf, stop) = (tmp.path().join("acks"), tmp.path().join("stop"));
    let mut tm = start_tm(T, &src, 32);
    tm.send(&format!("load 1 {} {}", s(&ackf), s(&stop)));
    for round in 0..3 {
        wait_for_acks(&ackf, 40 * (round + 1));
        tm.signal(libc::SIGSTOP);
        let (committed, prepared) = acks(&ackf);
        let image = tmp.path().join(format!("standby{round}")).join("store");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o700)).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("log-") {
                std::fs::copy(e.path(), image.join(&name)).unwrap();
            }
        }
        tm.signal(libc::SIGCONT);
        check_against_acks(&image, &committed, &prepared);
    }
    std::fs::write(&stop, "").unwrap();
    tm.recv();
    assert!(tm.finish().success());
}

/// Runs `mount ARGS`; false (with a note saying `what` is skipped) where this machine does not
/// let the test mount.
fn mount(args: &[&str], what: &str) -> bool {
    match Command::new("mount").args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "NOTE: skipping {what}: mount failed ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("NOTE: skipping {what}: cannot run mount: {e}");
            false
        }
    }
}

/// Unmounts a bind mount when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn ha_a_second_open_under_another_path_is_refused_naming_both() {
    const T: &str = "ha_a_second_open_under_another_path_is_refused_naming_both";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let other = tmp.path().join("other");
    std::fs::create_dir(&src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(&other).unwrap();
    if !mount(&["--bind", s(&src), s(&other)], "the bind-mount refusal") {
        return;
    }
    let _guard = Mounted(other.clone());
    let mut a = Shell::spawn(T, "a");
    a.rc(&format!("open 1 {}", open_string(&src, "")), XA_OK);
    a.rc("put 1 k v", 0);

    let mut b = Shell::spawn(T, "b");
    b.rc(&format!("open 1 {}", open_string(&other, "")), XAER_RMERR);
    let why = b.run("lasterr");
    assert!(
        why.contains(s(&src)) && why.contains(s(&other)),
        "names both paths: {why}"
    );
    let err = fails(&["status", s(&other)], 3);
    assert!(err.contains(s(&src)) && err.contains(s(&other)), "{err}");
    // Under the first path, a second process is welcome.
    b.rc(&format!("open 1 {}", open_string(&src, "")), XA_OK);
    assert_eq!(b.get(1, "k").as_deref(), Some("v"));
    b.rc("close 1", XA_OK);
    a.rc("close 1", XA_OK);
    assert!(a.finish().success() && b.finish().success());
    // Once nobody has it open, the store opens under either path.
    let out = ok(&["get", s(&other), "k"]);
    assert_eq!(out, "v\n");
}

/// The backup pin: while a live peer holds it, no process reclaims a segment, however much
/// dead space the log holds; released (or its holder gone), reclaiming resumes.
#[test]
fn the_backup_pin_stops_reclaiming_until_it_is_released() {
    let tmp = tempdir();
    let mut cfg = Config::new(tmp.path());
    cfg.segment_size = 16 << 10;
    cfg.sync = mmxa::config::SyncMode::None;
    let writer = Rm::open(cfg.clone()).unwrap();
    let copier = Rm::open(cfg).unwrap();
    let value = vec![7u8; 500];
    let churn = |n: usize| {
        for i in 0..n {
            writer
                .put(1, format!("k{}", i % 4).as_bytes(), Some(&value))
                .unwrap();
        }
    };
    churn(400);
    assert!(
        !seg_file(tmp.path(), 1).exists(),
        "reclaiming runs unpinned"
    );
    let point = copier.pin_for_backup().unwrap();
    assert!(seg_file(tmp.path(), point.first).exists());
    let err = writer.pin_for_backup().unwrap_err().to_string();
    assert!(
        err.contains("another backup"),
        "one backup at a time: {err}"
    );
    churn(800);
    for id in point.first..=point.tail {
        assert!(
            seg_file(tmp.path(), id).exists(),
            "segment {id} was reclaimed under the pin"
        );
    }
    copier.unpin_backup();
    churn(400);
    assert!(
        !seg_file(tmp.path(), point.first).exists(),
        "reclaiming resumes once unpinned"
    );
    // A holder that closes the store without unpinning releases it too.
    let point = copier.pin_for_backup().unwrap();
    drop(copier);
    churn(400);
    assert!(!seg_file(tmp.path(), point.first).exists());
}

#[test]
fn backup_into_a_full_disk_fails_clearly_and_leaves_no_half_copy() {
    const T: &str = "backup_into_a_full_disk_fails_clearly_and_leaves_no_half_copy";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    // 4 MiB segments do not fit in 1 MiB.
    if !mount(
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs", s(&small)],
        "the full-disk backup",
    ) {
        return;
    }
    let _guard = Mounted(small.clone());
    make_idle_store(T, &src, 4 << 10);
    let dest = small.join("copy");
    let err = fails(&["backup", s(&src), s(&dest)], 3);
    assert!(err.contains("No space left on device"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "no half copy: {left:?}");
    assert!(ok(&["verify", s(&src)]).contains(": ok:"));
}

/// A backup killed half way: nothing appears under DEST, and its pin dies with it (reclaiming
/// resumes while the TM keeps committing).
#[test]
fn a_killed_backup_leaves_no_copy_and_no_pin() {
    const T: &str = "a_killed_backup_leaves_no_copy_and_no_pin";
    shell_if_child_with(load_command);
    let tmp = tempdir();
    let src = tmp.path().join("store");
    let (ackf, stop) = (tmp.path().join("acks"), tmp.path().join("stop"));
    let mut tm = start_tm(T, &src, 32);
    tm.send(&format!("load 1 {} {}", s(&ackf), s(&stop)));
    wait_for_acks(&ackf, 50);
    let dest = tmp.path().join("copy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(["backup", s(&src), s(&dest)])
        .env("MMXA_BACKUP_PAUSE_MS", "60000")
        .spawn()
        .unwrap();
    let partial = tmp.path().join(format!(".copy.partial-{}", child.id()));
    // Pinned and copying: the first segment copied names the pinned one.
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        let names: Vec<String> = std::fs::read_dir(&partial)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(n) = names.iter().find(|n| n.ends_with(".seg")) {
            break u64::from_str_radix(&n[4..20], 16).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the backup does not start copying"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let acked = acks(&ackf).0.len();
    wait_for_acks(&ackf, acked + 200);
    assert!(
        seg_file(&src, first).exists(),
        "segment {first} reclaimed under the pin"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while seg_file(&src, first).exists() {
        assert!(Instant::now() < deadline, "reclaiming does not resume");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dest.exists());
    std::fs::write(&stop, "").unwrap();
    tm.recv();
    assert!(tm.finish().success());
    let (committed, prepared) = acks(&ackf);
    check_against_acks(&src, &committed, &prepared);
}
