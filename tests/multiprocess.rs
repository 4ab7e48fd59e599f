//! Many processes, one store: visibility, locks, completion from another process, and what a
//! SIGKILL of one process does to the others. Every process is real.
//!
//! Each test drives several "XA shells" (`tests/shell`: this binary re-executed, making XA and
//! data calls through the C entry points, one command per line), so each test is a deterministic
//! script across processes. A blocking call is sent and its answer read later.
//!
//! `loop` makes a shell run numbered two-phase transactions on its own keys until killed,
//! printing each acknowledgement; the kill test SIGKILLs such workers (the store's host among
//! them) at random moments and checks the survivors go on and nothing acknowledged is lost.

mod ffi_common;
mod rng;
mod shell;

use ffi_common::Rm;
use mmxa::status::*;
use mmxa::xa::*;
use rng::Rng;
use shell::{open_string, shell_if_child, Shell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

// ---- tests ------------------------------------------------------------------------------

#[test]
fn data_and_locks_are_shared_between_processes() {
    const T: &str = "data_and_locks_are_shared_between_processes";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    // Long waits: a lock that is never released fails the test by timing out.
    let long = open_string(&tmp.path().join("a"), "lock_timeout_ms=60000");
    let short = open_string(&tmp.path().join("b"), "lock_timeout_ms=100");
    let mut p1 = Shell::spawn(T, "p1");
    let mut p2 = Shell::spawn(T, "p2");
    for p in [&mut p1, &mut p2] {
        p.rc(&format!("open 1 {long}"), XA_OK);
        p.rc(&format!("open 2 {short}"), XA_OK);
    }

    // A commit in one process is visible in the other.
    p1.rc("start 1 x1 0", XA_OK);
    p1.rc("put 1 k v1", MMXA_OK);
    p1.rc(&format!("end 1 x1 {TMSUCCESS}"), XA_OK);
    p1.rc(&format!("commit 1 x1 {TMONEPHASE}"), XA_OK);
    assert_eq!(p2.get(1, "k").as_deref(), Some("v1"));

    // An uncommitted write is invisible elsewhere and blocks writers there until it ends.
    p2.rc("start 1 x2 0", XA_OK);
    p2.rc("put 1 k v2", MMXA_OK);
    assert_eq!(p1.get(1, "k").as_deref(), Some("v1"));
    p1.rc("start 1 x3 0", XA_OK);
    p1.send("put 1 k v3");
    p2.rc(&format!("end 1 x2 {TMSUCCESS}"), XA_OK);
    p2.rc("prepare 1 x2", XA_OK);
    p2.rc(&format!("commit 1 x2 {TMNOFLAGS}"), XA_OK);
    assert_eq!(p1.recv(), MMXA_OK.to_string(), "the waiting put");
    assert_eq!(p1.get(1, "k").as_deref(), Some("v3"), "own write");
    assert_eq!(p2.get(1, "k").as_deref(), Some("v2"), "committed so far");
    p1.rc(&format!("end 1 x3 {TMSUCCESS}"), XA_OK);
    p1.rc(&format!("commit 1 x3 {TMONEPHASE}"), XA_OK);
    assert_eq!(p2.get(1, "k").as_deref(), Some("v3"));

    // A deadlock across processes is detected, not waited out: one of the two requests that
    // close the cycle fails at once (which one depends on which arrives second).
    p1.rc("start 1 d1 0", XA_OK);
    p1.rc("put 1 a 1", MMXA_OK);
    p2.rc("start 1 d2 0", XA_OK);
    p2.rc("put 1 b 2", MMXA_OK);
    p1.send("put 1 b 1");
    p2.send("put 1 a 2");
    let (victim, survivor, vx, sx) = loop {
        if let Ok(a) = p1.lines.try_recv() {
            break (&mut p1, &mut p2, "d1", a);
        }
        if let Ok(a) = p2.lines.try_recv() {
            break (&mut p2, &mut p1, "d2", a);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(sx, MMXA_EDEADLOCK.to_string(), "the first answer");
    victim.rc(&format!("end 1 {vx} {TMSUCCESS}"), XA_RBDEADLOCK);
    victim.rc(&format!("rollback 1 {vx}"), XA_OK);
    assert_eq!(
        survivor.recv(),
        MMXA_OK.to_string(),
        "the other gets its lock"
    );
    let sx = if vx == "d1" { "d2" } else { "d1" };
    survivor.rc(&format!("end 1 {sx} {TMSUCCESS}"), XA_OK);
    survivor.rc(&format!("commit 1 {sx} {TMONEPHASE}"), XA_OK);
    assert!(p1.get(1, "a").is_some() && p2.get(1, "b").is_some());

    // The lock timeout applies across processes too.
    p1.rc("start 2 t1 0", XA_OK);
    p1.rc("put 2 k 1", MMXA_OK);
    p2.rc("start 2 t2 0", XA_OK);
    p2.rc("put 2 k 2", MMXA_ELOCKTIMEOUT);
    p2.rc(&format!("end 2 t2 {TMSUCCESS}"), XA_RBTIMEOUT);
    p1.rc(&format!("end 2 t1 {TMSUCCESS}"), XA_OK);
    p1.rc(&format!("commit 2 t1 {TMONEPHASE}"), XA_OK);

    // Settings that differ from the hosting process's are refused.
    let mut p3 = Shell::spawn(T, "p3");
    let other = open_string(&tmp.path().join("a"), "lock_timeout_ms=5");
    p3.rc(&format!("open 1 {other}"), XAER_INVAL);
    for p in [&mut p1, &mut p2] {
        p.rc("close 1", XA_OK);
        p.rc("close 2", XA_OK);
    }
}

#[test]
fn branches_are_completed_joined_and_resumed_from_any_process() {
    const T: &str = "branches_are_completed_joined_and_resumed_from_any_process";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut p: Vec<Shell> = (1..=3).map(|i| Shell::spawn(T, &format!("p{i}"))).collect();
    for s in p.iter_mut() {
        s.rc(&format!("open 1 {info}"), XA_OK);
    }

    // Work in p1, prepare in p2, commit in p3; every process lists the in-doubt branch once.
    p[0].rc("start 1 x 0", XA_OK);
    p[0].rc("put 1 k v", MMXA_OK);
    p[0].rc(&format!("end 1 x {TMSUCCESS}"), XA_OK);
    p[1].rc("prepare 1 x", XA_OK);
    for s in p.iter_mut() {
        assert_eq!(s.recover(1), vec!["x".to_string()]);
    }
    assert_eq!(p[0].get(1, "k"), None, "prepared, not committed");
    p[2].rc(&format!("commit 1 x {TMNOFLAGS}"), XA_OK);
    assert_eq!(p[1].get(1, "k").as_deref(), Some("v"));
    assert!(p[0].recover(1).is_empty());

    // TMJOIN from another process: one branch, each sees the other's writes.
    p[0].rc("start 1 j 0", XA_OK);
    p[0].rc("put 1 ja 1", MMXA_OK);
    p[1].rc(&format!("start 1 j {TMJOIN}"), XA_OK);
    p[1].rc("put 1 jb 2", MMXA_OK);
    assert_eq!(p[1].get(1, "ja").as_deref(), Some("1"));
    p[0].rc(&format!("end 1 j {TMSUCCESS}"), XA_OK);
    p[2].rc("prepare 1 j", XAER_PROTO);
    p[1].rc(&format!("end 1 j {TMSUCCESS}"), XA_OK);
    p[2].rc("prepare 1 j", XA_OK);
    p[2].rc(&format!("commit 1 j {TMNOFLAGS}"), XA_OK);
    assert_eq!(p[0].get(1, "jb").as_deref(), Some("2"));

    // Suspended for migration in p1, resumed in p2, committed in p3.
    p[0].rc("start 1 m 0", XA_OK);
    p[0].rc("put 1 mc 3", MMXA_OK);
    p[0].rc(&format!("end 1 m {}", TMSUSPEND | TMMIGRATE), XA_OK);
    p[1].rc(&format!("start 1 m {TMRESUME}"), XA_OK);
    p[1].rc("put 1 md 4", MMXA_OK);
    p[1].rc(&format!("end 1 m {TMSUCCESS}"), XA_OK);
    p[2].rc(&format!("commit 1 m {TMONEPHASE}"), XA_OK);
    assert_eq!(p[0].get(1, "md").as_deref(), Some("4"));

    // Savepoints work the same from a guest process.
    p[1].rc("start 1 sp 0", XA_OK);
    p[1].rc("put 1 sa 1", MMXA_OK);
    let sp = p[1].run("savepoint 1");
    let id = sp
        .strip_prefix("0 ")
        .expect("savepoint answered MMXA_OK")
        .to_string();
    p[1].rc("put 1 sa 2", MMXA_OK);
    p[1].rc("put 1 sb 2", MMXA_OK);
    p[1].rc(&format!("rollback_to 1 {id}"), MMXA_OK);
    assert_eq!(p[1].get(1, "sa").as_deref(), Some("1"));
    assert_eq!(p[1].get(1, "sb"), None);
    p[1].rc("rollback_to 1 999", MMXA_EINVAL);
    p[1].rc(&format!("end 1 sp {TMSUCCESS}"), XA_OK);
    p[0].rc(&format!("commit 1 sp {TMONEPHASE}"), XA_OK);
    assert_eq!(p[2].get(1, "sa").as_deref(), Some("1"));
    assert_eq!(p[2].get(1, "sb"), None);

    // A plain suspension belongs to its thread of control: another process cannot resume it.
    p[0].rc("start 1 s 0", XA_OK);
    p[0].rc(&format!("end 1 s {TMSUSPEND}"), XA_OK);
    p[1].rc(&format!("start 1 s {TMRESUME}"), XAER_PROTO);
    p[0].rc(&format!("start 1 s {TMRESUME}"), XA_OK);
    p[0].rc(&format!("end 1 s {TMSUCCESS}"), XA_OK);
    p[1].rc("rollback 1 s", XA_OK);
}

/// A store in `dir` (60 s lock waits: a lock never released fails the test), opened by a
/// first process, which hosts it, then by a guest.
fn host_and_guest(test: &str, dir: &std::path::Path) -> (String, Shell, Shell) {
    let info = open_string(dir, "lock_timeout_ms=60000");
    let mut host = Shell::spawn(test, "host");
    let mut guest = Shell::spawn(test, "guest");
    host.rc(&format!("open 1 {info}"), XA_OK);
    guest.rc(&format!("open 1 {info}"), XA_OK);
    (info, host, guest)
}

#[test]
fn a_killed_guest_loses_only_its_unprepared_work() {
    const T: &str = "a_killed_guest_loses_only_its_unprepared_work";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let (info, mut host, mut guest) = host_and_guest(T, tmp.path());
    // The guest leaves a prepared branch, an idle one, a suspended one and an active one
    // holding a key lock another process waits for.
    guest.rc("start 1 pp 0", XA_OK);
    guest.rc("put 1 kp prepared", MMXA_OK);
    guest.rc(&format!("end 1 pp {TMSUCCESS}"), XA_OK);
    guest.rc("prepare 1 pp", XA_OK);
    guest.rc("start 1 idle 0", XA_OK);
    guest.rc("put 1 ki idle", MMXA_OK);
    guest.rc(&format!("end 1 idle {TMSUCCESS}"), XA_OK);
    guest.rc("start 1 susp 0", XA_OK);
    guest.rc("put 1 ks susp", MMXA_OK);
    guest.rc(&format!("end 1 susp {TMSUSPEND}"), XA_OK);
    guest.rc("start 1 act 0", XA_OK);
    guest.rc("put 1 ka act", MMXA_OK);
    host.rc("start 1 w 0", XA_OK);
    host.send("put 1 ka host");
    guest.sigkill();

    // The waiting put gets the lock without waiting out its 60 s timeout.
    assert_eq!(host.recv(), MMXA_OK.to_string(), "the put waiting for ka");
    host.rc("put 1 ks host", MMXA_OK);
    host.rc(&format!("end 1 w {TMSUCCESS}"), XA_OK);
    host.rc(&format!("commit 1 w {TMONEPHASE}"), XA_OK);
    assert_eq!(host.get(1, "ka").as_deref(), Some("host"));
    // The active and suspended branches are gone; the prepared one is in doubt, its write
    // invisible, and the idle one can still be prepared and committed.
    host.rc(&format!("end 1 act {TMSUCCESS}"), XAER_NOTA);
    host.rc("prepare 1 susp", XAER_NOTA);
    assert_eq!(host.recover(1), vec!["pp".to_string()]);
    assert_eq!(host.get(1, "kp"), None);
    host.rc("prepare 1 idle", XA_OK);
    host.rc(&format!("commit 1 idle {TMNOFLAGS}"), XA_OK);
    host.rc(&format!("commit 1 pp {TMNOFLAGS}"), XA_OK);
    assert_eq!(host.get(1, "kp").as_deref(), Some("prepared"));
    assert_eq!(host.get(1, "ki").as_deref(), Some("idle"));

    // A new guest opens as if nothing happened.
    let mut again = Shell::spawn(T, "again");
    again.rc(&format!("open 1 {info}"), XA_OK);
    assert_eq!(again.get(1, "ks").as_deref(), Some("host"));
}

#[test]
fn a_killed_host_hands_the_store_over() {
    const T: &str = "a_killed_host_hands_the_store_over";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut host = Shell::spawn(T, "host");
    let mut g1 = Shell::spawn(T, "g1");
    let mut g2 = Shell::spawn(T, "g2");
    host.rc(&format!("open 1 {info}"), XA_OK);
    g1.rc(&format!("open 1 {info}"), XA_OK);
    g2.rc(&format!("open 1 {info}"), XA_OK);
    host.rc("put 1 c committed", MMXA_OK);
    host.rc("start 1 pp 0", XA_OK);
    host.rc("put 1 kp prepared", MMXA_OK);
    host.rc(&format!("end 1 pp {TMSUCCESS}"), XA_OK);
    host.rc("prepare 1 pp", XA_OK);
    g1.rc("start 1 a1 0", XA_OK);
    g1.rc("put 1 ka g1", MMXA_OK);
    host.sigkill();

    // The guests learn it at their next call, reopen, and one of them hosts the store now.
    g1.rc("put 1 kb g1", MMXA_EIO);
    g1.rc(&format!("end 1 a1 {TMSUCCESS}"), XAER_RMFAIL);
    g1.rc(&format!("open 1 {info}"), XA_OK);
    assert_eq!(g1.get(1, "c").as_deref(), Some("committed"));
    assert_eq!(g1.recover(1), vec!["pp".to_string()]);
    // g1's unprepared branch was rolled back with the host: its XID is free again.
    g1.rc("start 1 a1 0", XA_OK);
    g1.rc("put 1 ka again", MMXA_OK);
    g1.rc(&format!("end 1 a1 {TMSUCCESS}"), XA_OK);
    g1.rc(&format!("commit 1 a1 {TMONEPHASE}"), XA_OK);
    let mut first = g2.run("recover 1");
    if first.starts_with(&XAER_RMFAIL.to_string()) {
        g2.rc(&format!("open 1 {info}"), XA_OK);
        first = g2.run("recover 1");
    }
    assert_eq!(first, "1 pp");
    g2.rc(&format!("commit 1 pp {TMNOFLAGS}"), XA_OK);
    assert_eq!(g1.get(1, "kp").as_deref(), Some("prepared"));
    assert_eq!(g2.get(1, "ka").as_deref(), Some("again"));
}

/// Kills a process by pid (a grandchild the test does not own as a `Child`).
fn kill_pid(pid: &str) {
    let pid: libc::pid_t = pid.parse().expect("a pid");
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn a_forked_child_keeps_nothing_alive() {
    const T: &str = "a_forked_child_keeps_nothing_alive";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let (info, mut host, mut guest) = host_and_guest(T, tmp.path());
    guest.rc("start 1 g 0", XA_OK);
    guest.rc("put 1 kg guest", MMXA_OK);
    // Both fork a child that lingers with copies of their descriptors, then die.
    let c1 = host.run("fork_sleep");
    let c2 = guest.run("fork_sleep");
    guest.sigkill();
    // The host sees the guest die although its child lives: kg's lock is free at once (a
    // lock kept would make this put wait 60 s and fail).
    host.rc("start 1 h 0", XA_OK);
    host.rc("put 1 kg host", MMXA_OK);
    host.rc(&format!("end 1 h {TMSUCCESS}"), XA_OK);
    host.rc(&format!("commit 1 h {TMONEPHASE}"), XA_OK);
    host.sigkill();
    // The host's child holds neither the lock nor the listening socket: a new process hosts.
    let mut next = Shell::spawn(T, "next");
    next.rc(&format!("open 1 {info}"), XA_OK);
    assert_eq!(next.get(1, "kg").as_deref(), Some("host"));
    kill_pid(&c1);
    kill_pid(&c2);
}

/// What the parent saw of one worker's transactions.
#[derive(Default)]
struct Acks {
    prepared: BTreeSet<u64>,
    committed: BTreeSet<u64>,
    lost: BTreeSet<u64>,
    last: Option<u64>,
}

fn note(acks: &mut Acks, line: &str) -> bool {
    let Some((what, n)) = line.split_once(' ') else {
        return false;
    };
    let Ok(n) = n.parse::<u64>() else {
        return false;
    };
    acks.last = Some(n);
    match what {
        "prepared" => acks.prepared.insert(n),
        "committed" => acks.committed.insert(n),
        "lost" => acks.lost.insert(n),
        _ => return false,
    };
    what == "committed"
}

#[test]
fn sigkill_of_any_worker_stops_no_one_and_loses_nothing() {
    const T: &str = "sigkill_of_any_worker_stops_no_one_and_loses_nothing";
    shell_if_child();
    let tmp = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut rng = Rng::new(rng::seed("MMXA_MP_SEED", T));
    const WORKERS: usize = 3;
    const KILLS: usize = 30;
    let mut names = Vec::new();
    let mut acks: BTreeMap<String, Acks> = BTreeMap::new();
    let mut shells: Vec<Shell> = Vec::new();
    let mut generation = 0;
    let spawn = |slot: usize, generation: usize, acks: &mut BTreeMap<String, Acks>| {
        let name = format!("w{slot}g{generation}");
        let mut s = Shell::spawn(T, &name);
        s.rc(&format!("open 1 {info}"), XA_OK);
        s.send(&format!("loop 1 {name}"));
        acks.insert(name.clone(), Acks::default());
        s
    };
    for slot in 0..WORKERS {
        shells.push(spawn(slot, generation, &mut acks));
        names.push(format!("w{slot}g{generation}"));
    }
    for kill in 0..KILLS {
        // Let everybody commit something, then kill one worker a few lines into its work.
        for (s, name) in shells.iter_mut().zip(&names) {
            let a = acks.get_mut(name).unwrap();
            while !note(a, &s.recv()) {}
        }
        let victim = rng.below(WORKERS as u64) as usize;
        let lines = rng.below(4);
        for _ in 0..lines {
            let name = &names[victim];
            note(acks.get_mut(name).unwrap(), &shells[victim].recv());
        }
        shells[victim].sigkill();
        // The survivors keep committing (after reopening, if the victim was the host).
        for (i, (s, name)) in shells.iter_mut().zip(&names).enumerate() {
            if i == victim {
                continue;
            }
            let a = acks.get_mut(name).unwrap();
            let before = a.committed.len();
            while a.committed.len() < before + 2 {
                note(a, &s.recv());
            }
        }
        generation = kill + 1;
        shells[victim] = spawn(victim, generation, &mut acks);
        names[victim] = format!("w{victim}g{generation}");
    }
    for s in shells.iter_mut() {
        s.sigkill();
    }

    // As a new process: resolve what is in doubt (commit it), then check every transaction.
    let rm = Rm::new(9, tmp.path(), "lock_timeout_ms=60000");
    rm.open_ok();
    let mut in_doubt = BTreeSet::new();
    for x in rm.recover_all() {
        let (_, gtrid, _) = ffi_common::xid_key(&x);
        in_doubt.insert(String::from_utf8(gtrid).unwrap());
        ffi_common::check("commit in doubt", rm.commit(&x, TMNOFLAGS), XA_OK);
    }
    let mut total = 0;
    for (name, a) in &acks {
        let last = a.last.map_or(0, |l| l + 1);
        for i in 0..=last {
            let gtrid = format!("{name}-{i}");
            let present: Vec<bool> = (0..4)
                .map(|j| rm.get_str(&format!("{name}-{i}-{j}")).is_some())
                .collect();
            let all = present.iter().all(|&p| p);
            let none = present.iter().all(|&p| !p);
            assert!(all || none, "{gtrid} half applied: {present:?}");
            if a.committed.contains(&i) {
                assert!(all, "acknowledged commit {gtrid} lost");
                total += 1;
            }
            if a.prepared.contains(&i) && !a.committed.contains(&i) && !in_doubt.contains(&gtrid) {
                // Prepared and not in doubt any more: only a commit acknowledged in a line
                // the kill cut off can explain it.
                assert!(all, "prepared {gtrid} neither in doubt nor committed");
            }
        }
    }
    for g in &in_doubt {
        let (name, i) = g.rsplit_once('-').unwrap();
        let i: u64 = i.parse().unwrap();
        let a = &acks[name];
        assert!(
            !a.committed.contains(&i),
            "{g} was acknowledged committed but is in doubt"
        );
    }
    let lost: usize = acks.values().map(|a| a.lost.len()).sum();
    eprintln!(
        "{T}: {KILLS} kills, {total} acknowledged commits checked, {} in doubt resolved, \
         {lost} transactions cut off by the death of the host",
        in_doubt.len()
    );
    rm.close_ok();
}
