//! Log lifecycle: reclaiming segments keeps disk use bounded under endless updates, and
//! committed data, prepared branches (with their locks) and heuristic outcomes survive any
//! number of reclaims and reopens.

use mmxa::config::{Config, SyncMode};
use mmxa::error::Outcome;
use mmxa::rm::flags::{EndMode, Scan, StartMode};
use mmxa::rm::Rm;
use mmxa::rm::Vote;
use mmxa::status::MMXA_ELOCKTIMEOUT;
use mmxa::xid::Xid;
use std::path::Path;
use std::time::Duration;

const SEG: u64 = 64 << 10;

fn open(dir: &Path) -> Rm {
    let mut cfg = Config::new(dir);
    cfg.segment_size = SEG;
    cfg.sync = SyncMode::None;
    cfg.lock_timeout = Duration::ZERO;
    Rm::open(cfg).unwrap()
}

fn xid(n: u32) -> Xid {
    Xid::from_parts(9, &n.to_be_bytes(), b"c").unwrap()
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn value(key: u32, round: u32) -> Vec<u8> {
    format!(
        "value-{key}-{round}-{}",
        "x".repeat((key % 7 * 40) as usize)
    )
    .into_bytes()
}

/// Prepared branch P holds "held"; heuristic branch H was committed by an operator.
fn setup_in_doubt(rm: &Rm) {
    rm.start(1, &xid(1), StartMode::New).unwrap();
    rm.put(1, b"held", Some(b"prepared value")).unwrap();
    rm.end(1, &xid(1), EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &xid(1)), Ok(Vote::Prepared));
    rm.start(1, &xid(2), StartMode::New).unwrap();
    rm.put(1, b"heur", Some(b"operator committed")).unwrap();
    rm.end(1, &xid(2), EndMode::Success).unwrap();
    rm.prepare(1, &xid(2)).unwrap();
    rm.heuristic(&xid(2), Outcome::Commit, "operator said so")
        .unwrap();
}

fn check(rm: &Rm, keys: u32, round: u32) {
    for k in 0..keys {
        let got = rm.get(7, format!("key-{k}").as_bytes()).unwrap();
        assert_eq!(got, Some(value(k, round)), "key-{k} after round {round}");
    }
    let mut found = rm
        .recover(
            7,
            Scan {
                start: true,
                end: true,
            },
            10,
        )
        .unwrap();
    found.sort_by_key(|x| x.gtrid().to_vec());
    assert_eq!(found, vec![xid(1), xid(2)]);
    assert_eq!(
        rm.get(7, b"held").unwrap(),
        None,
        "prepared write stays invisible"
    );
    assert_eq!(
        rm.put(7, b"held", Some(b"intruder"))
            .unwrap_err()
            .mmxa_code(),
        MMXA_ELOCKTIMEOUT,
        "the prepared branch still holds its lock"
    );
    assert_eq!(
        rm.get(7, b"heur").unwrap().as_deref(),
        Some(&b"operator committed"[..])
    );
}

#[test]
fn steady_updates_stay_within_bounds_and_survive_reopen() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let keys = 200;
    let mut rm = open(dir.path());
    setup_in_doubt(&rm);
    let mut max_disk = 0;
    for round in 0..60u32 {
        for k in 0..keys {
            let key = format!("key-{k}");
            if k % 2 == 0 {
                rm.put(7, key.as_bytes(), Some(&value(k, round))).unwrap();
            } else {
                let x = xid(1000 + round * keys + k);
                rm.start(3, &x, StartMode::New).unwrap();
                rm.put(3, key.as_bytes(), Some(&value(k, round))).unwrap();
                rm.end(3, &x, EndMode::Success).unwrap();
                assert_eq!(rm.commit(3, &x, true), Ok(()));
            }
        }
        max_disk = max_disk.max(disk_bytes(dir.path()));
        if round % 20 == 19 {
            check(&rm, keys, round);
            drop(rm);
            rm = open(dir.path());
            check(&rm, keys, round);
        }
    }
    // About 40 KiB live; without reclaiming, 60 rounds write several MiB.
    let live: u64 = (0..keys).map(|k| 64 + value(k, 59).len() as u64).sum();
    assert!(
        max_disk <= 2 * live + 5 * SEG,
        "disk use {max_disk} exceeds 2 x live ({live}) + 5 segments"
    );
    assert_eq!(rm.commit(7, &xid(1), false), Ok(()));
    assert_eq!(
        rm.get(7, b"held").unwrap().as_deref(),
        Some(&b"prepared value"[..])
    );
    assert_eq!(rm.forget(7, &xid(2)), Ok(()));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(
        rm.get(7, b"held").unwrap().as_deref(),
        Some(&b"prepared value"[..])
    );
    assert!(rm
        .recover(
            7,
            Scan {
                start: true,
                end: true
            },
            10
        )
        .unwrap()
        .is_empty());
}

/// A branch that wrote long ago and has not prepared does not stop reclaiming: its writes are
/// re-logged under its own tag, then it prepares and commits (or rolls back) as usual.
#[test]
fn a_working_branch_survives_reclaiming_of_its_segment() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let rm = open(dir.path());
    let (long, doomed) = (xid(77), xid(78));
    rm.start(5, &long, StartMode::New).unwrap();
    rm.put(5, b"long-lived", Some(b"early write")).unwrap();
    rm.start(6, &doomed, StartMode::New).unwrap();
    rm.put(6, b"doomed", Some(b"never committed")).unwrap();
    let churn = |from: u32, to: u32| {
        for round in from..to {
            for k in 0..50u32 {
                rm.put(7, format!("k{k}").as_bytes(), Some(&value(k, round)))
                    .unwrap();
            }
        }
    };
    churn(0, 80);
    let first = dir.path().join("log-0000000000000001.seg");
    assert!(
        !first.exists(),
        "segment 1 was reclaimed while the branches still work"
    );
    // Each branch still sees its own write; nobody else does.
    assert_eq!(
        rm.get(5, b"long-lived").unwrap().as_deref(),
        Some(&b"early write"[..])
    );
    assert_eq!(rm.get(7, b"long-lived").unwrap(), None);
    rm.end(5, &long, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(5, &long), Ok(Vote::Prepared));
    rm.end(6, &doomed, EndMode::Success).unwrap();
    churn(80, 120);
    assert_eq!(rm.commit(7, &long, false), Ok(()));
    assert_eq!(rm.rollback(7, &doomed), Ok(()));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(
        rm.get(1, b"long-lived").unwrap().as_deref(),
        Some(&b"early write"[..])
    );
    assert_eq!(rm.get(1, b"doomed").unwrap(), None);
    for k in 0..50u32 {
        assert_eq!(
            rm.get(1, format!("k{k}").as_bytes()).unwrap(),
            Some(value(k, 119))
        );
    }
}

/// A working branch whose writes were re-logged, then a crash: it is rolled back at open like
/// any unprepared branch, and its XID can be used again.
#[test]
fn a_relogged_working_branch_is_rolled_back_by_a_crash() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let rm = open(dir.path());
    let x = xid(88);
    rm.start(5, &x, StartMode::New).unwrap();
    rm.put(5, b"unfinished", Some(b"lost")).unwrap();
    for round in 0..80u32 {
        for k in 0..50u32 {
            rm.put(7, format!("k{k}").as_bytes(), Some(&value(k, round)))
                .unwrap();
        }
    }
    assert!(!dir.path().join("log-0000000000000001.seg").exists());
    rm.simulate_crash();
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"unfinished").unwrap(), None);
    assert_eq!(rm.start(5, &x, StartMode::New), Ok(()));
}

/// A committed branch whose writes were in a reclaimed segment while its PREPARE and COMMIT
/// records are in the next one: replay used to refuse the PREPARE ("no writes") and the store
/// could not be opened.
#[test]
fn completed_branch_straddling_a_reclaimed_segment() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let rm = open(dir.path());
    let filler = vec![b'f'; 1000];
    let second = dir.path().join("log-0000000000000002.seg");
    let x = xid(5);
    rm.start(3, &x, StartMode::New).unwrap();
    rm.put(3, b"straddle", Some(b"v")).unwrap();
    rm.end(3, &x, EndMode::Success).unwrap();
    let mut n = 0u32;
    while !second.exists() {
        rm.put(7, format!("fill{n}").as_bytes(), Some(&filler))
            .unwrap();
        n += 1;
    }
    // The branch's write is in segment 1; its PREPARE and COMMIT go to segment 2.
    assert_eq!(rm.prepare(3, &x), Ok(Vote::Prepared));
    assert_eq!(rm.commit(3, &x, false), Ok(()));
    for k in 0..n {
        rm.put(7, format!("fill{k}").as_bytes(), Some(b"small"))
            .unwrap();
    }
    while rm.compact_step().unwrap() {}
    assert!(!dir.path().join("log-0000000000000001.seg").exists());
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"straddle").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Updates of 50 committed keys until the segment that is the log's tail now has been
/// reclaimed, with everything written before (a working branch is re-logged, never pins it).
fn churn_until_reclaimed(rm: &Rm, dir: &Path, round: &mut u32) {
    let tail = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .max()
        .unwrap();
    let start = *round;
    while dir.join(&tail).exists() {
        for k in 0..50u32 {
            rm.put(7, format!("k{k}").as_bytes(), Some(&value(k, *round)))
                .unwrap();
        }
        *round += 1;
        assert!(*round < start + 1000, "{tail} never reclaimed");
    }
}

fn read(rm: &Rm, toc: u64, key: &[u8]) -> Option<String> {
    rm.get(toc, key)
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// Savepoints of a working branch whose segments are reclaimed while they are set: the values
/// they would restore were re-logged with the branch (they used to be left behind, and the
/// rollback to the savepoint failed with `MMXA_EIO`, "LSN ... is not in the log", leaving the
/// branch rollback-only). Also with a joined thread writing, several reclaims between
/// savepoints, and a crash after the prepare.
#[test]
fn savepoints_survive_reclaiming_the_segments_they_restore() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let rm = open(dir.path());
    let mut round = 0;
    rm.put(7, b"c", Some(b"committed")).unwrap();
    let x = xid(90);
    rm.start(1, &x, StartMode::New).unwrap();
    rm.start(2, &x, StartMode::Join).unwrap();
    rm.put(1, b"a", Some(b"a1")).unwrap();
    rm.put(2, b"j", Some(b"j1")).unwrap();
    let sp1 = rm.savepoint(1).unwrap();
    rm.put(1, b"a", Some(b"a2")).unwrap();
    rm.put(2, b"j", None).unwrap();
    rm.put(2, b"c", Some(b"c2")).unwrap();
    churn_until_reclaimed(&rm, dir.path(), &mut round);
    let sp2 = rm.savepoint(2).unwrap();
    rm.put(1, b"a", Some(b"a3")).unwrap();
    rm.put(2, b"j", Some(b"j3")).unwrap();
    rm.put(2, b"n", Some(b"new")).unwrap();
    for _ in 0..3 {
        churn_until_reclaimed(&rm, dir.path(), &mut round);
    }
    rm.put(1, b"a", Some(b"a4")).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("a4"));
    rm.end(2, &x, EndMode::Success).unwrap();
    rm.rollback_to_savepoint(1, sp2).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("a2"));
    assert_eq!(read(&rm, 1, b"j"), None);
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("c2"));
    assert_eq!(read(&rm, 1, b"n"), None);
    churn_until_reclaimed(&rm, dir.path(), &mut round);
    rm.rollback_to_savepoint(1, sp1).unwrap();
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("a1"));
    assert_eq!(read(&rm, 1, b"j").as_deref(), Some("j1"));
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("committed"));
    rm.end(1, &x, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &x), Ok(Vote::Prepared));
    churn_until_reclaimed(&rm, dir.path(), &mut round);
    // A crash: nothing of the in-memory state survives, the prepared branch does.
    rm.simulate_crash();
    let rm = open(dir.path());
    assert_eq!(rm.commit(1, &x, false), Ok(()));
    assert_eq!(read(&rm, 1, b"a").as_deref(), Some("a1"));
    assert_eq!(read(&rm, 1, b"j").as_deref(), Some("j1"));
    assert_eq!(read(&rm, 1, b"c").as_deref(), Some("committed"));
    assert_eq!(read(&rm, 1, b"n"), None);
    for k in 0..50u32 {
        assert_eq!(
            rm.get(1, format!("k{k}").as_bytes()).unwrap(),
            Some(value(k, round - 1))
        );
    }
}

/// The segment files of `dir`: (id, size), oldest first.
fn seg_sizes(dir: &Path) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("log-")?.strip_suffix(".seg")?;
            Some((
                u64::from_str_radix(id, 16).ok()?,
                e.metadata().unwrap().len(),
            ))
        })
        .collect();
    v.sort_unstable();
    v
}

/// A store configured for segments larger than 4 MiB starts with a 4 MiB segment, and each
/// roll doubles the next one up to the configured size. Such a log replays across reopens,
/// and reclaiming retires its small first segments like any other, with disk use bounded.
#[test]
fn segments_start_small_grow_and_are_reclaimed() {
    const BIG: u64 = 8 << 20;
    const FIRST: u64 = 4 << 20;
    // tmpfs when there is one: each roll syncs a whole segment, whose durability this does not
    // test.
    let mut b = tempfile::Builder::new();
    b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let dir = if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").or_else(|_| b.tempdir())
    } else {
        b.tempdir()
    }
    .unwrap();
    let dir = dir.path();
    let open = || {
        let mut cfg = Config::new(dir);
        cfg.segment_size = BIG;
        cfg.sync = SyncMode::None;
        cfg.lock_timeout = Duration::ZERO;
        Rm::open(cfg).unwrap()
    };
    let keys = 40u32;
    let val = |k: u32, round: u32| {
        let mut v = value(k, round);
        v.resize(30 << 10, b'.');
        v
    };
    let write_round = |rm: &Rm, round: u32| {
        for k in 0..keys {
            rm.put(7, format!("key-{k}").as_bytes(), Some(&val(k, round)))
                .unwrap();
        }
    };
    let check = |rm: &Rm, round: u32| {
        for k in 0..keys {
            let got = rm.get(7, format!("key-{k}").as_bytes()).unwrap();
            assert!(got == Some(val(k, round)), "key-{k} after round {round}");
        }
    };

    let mut rm = open();
    assert_eq!(seg_sizes(dir), vec![(1, FIRST)], "a new store");
    let mut round = 0;
    while seg_sizes(dir).last().unwrap().0 < 3 {
        write_round(&rm, round);
        round += 1;
    }
    assert_eq!(seg_sizes(dir), vec![(1, FIRST), (2, BIG), (3, BIG)]);
    check(&rm, round - 1);
    drop(rm);
    rm = open();
    check(&rm, round - 1);

    // Until segment 1 is reclaimed.
    let live = u64::from(keys) * (30 << 10);
    let mut max_disk = 0;
    while seg_sizes(dir)[0].0 == 1 {
        assert!(
            round < 2000,
            "segment 1 never reclaimed: {:?}",
            seg_sizes(dir)
        );
        write_round(&rm, round);
        round += 1;
        max_disk = max_disk.max(disk_bytes(dir));
    }
    check(&rm, round - 1);
    drop(rm);
    rm = open();
    check(&rm, round - 1);
    let sizes = seg_sizes(dir);
    assert!(
        sizes
            .iter()
            .all(|&(id, size)| size == if id == 1 { FIRST } else { BIG }),
        "{sizes:?}"
    );
    assert!(
        max_disk <= 2 * live + 5 * BIG,
        "disk use {max_disk} exceeds 2 x live ({live}) + 5 segments"
    );
    write_round(&rm, round);
    check(&rm, round);
}
