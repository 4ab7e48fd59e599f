//! Ordered range reads through the real C entry points (`mmxa_cursor_open/next/close`).
//!
//! - order, bounds (inclusive, exclusive, open, prefix), reverse, across segment files and
//!   across a rebuild of the shared state from the log; a random model check against a sorted
//!   map;
//! - inside a branch: own writes merged in order, own deletes gone, committed data outside;
//! - phantoms: under `isolation=serializable` a key inserted into (or deleted from) a range a
//!   branch scanned waits for that branch; the scan-count-insert race lets one branch through;
//!   under `read_committed` both go through (the anomaly is allowed there); scans in branches
//!   always count the same number of keys while writers move keys in and out of the range;
//! - the protocol: buffers too small, a cursor used outside its branch, unknown cursors;
//! - a process dying inside a section that links a key into the key order, or at random, leaves
//!   the order whole (repaired from the journal by the processes that go on).

mod ffi_common;
mod rng;
mod shell;

use ffi_common::{begin, check, commit, fresh_xid, last_error, Rm, Worker};
use mmxa::ffi::cursor::*;
use mmxa::ffi::txn::*;
use mmxa::status::*;
use mmxa::xa::*;
use shell::Shell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

static NEXT_RMID: AtomicI32 = AtomicI32::new(1);

fn rm(dir: &Path, extra: &str) -> Rm {
    Rm::new(NEXT_RMID.fetch_add(1, Ordering::Relaxed), dir, extra)
}

fn keys(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn keys_come_in_byte_order_between_any_bounds_and_backwards() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    for k in ["b", "ab", "a", "abc", "ba", "c", "bz", "b\u{7f}"] {
        r.put_ok(k, &format!("v-{k}"));
    }
    check("binary key", r.put(&[0xff, 0x00], b"hi"), MMXA_OK);
    check("binary key", r.put(&[0x00], b"lo"), MMXA_OK);
    let all = r.scan(None, None, 0).expect("scan");
    let mut want: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
    assert_eq!(all.len(), 10);
    assert_eq!(all[0], (vec![0x00], b"lo".to_vec()));
    assert_eq!(all[9], (vec![0xff, 0x00], b"hi".to_vec()));
    for (k, v) in &all[1..9] {
        assert_eq!(v, format!("v-{}", String::from_utf8_lossy(k)).as_bytes());
    }
    let rev = r.scan(None, None, MMXA_SCAN_REVERSE).expect("reverse");
    assert_eq!(rev, all.iter().rev().cloned().collect::<Vec<_>>());

    let s = |lo, hi, f| r.scan_keys(lo, hi, f);
    assert_eq!(s(Some("ab"), Some("b"), 0), keys(&["ab", "abc"]));
    assert_eq!(
        s(Some("ab"), Some("b"), MMXA_SCAN_HI_INCL),
        keys(&["ab", "abc", "b"])
    );
    assert_eq!(s(Some("ab"), Some("b"), MMXA_SCAN_LO_EXCL), keys(&["abc"]));
    assert_eq!(
        s(
            Some("ab"),
            Some("b"),
            MMXA_SCAN_LO_EXCL | MMXA_SCAN_HI_INCL | MMXA_SCAN_REVERSE
        ),
        keys(&["b", "abc"])
    );
    assert_eq!(
        s(Some("aa"), Some("ac"), MMXA_SCAN_REVERSE),
        keys(&["abc", "ab"])
    );
    assert_eq!(s(Some("bb"), Some("d"), 0), keys(&["bz", "b\u{7f}", "c"]));
    assert_eq!(
        s(Some("bb"), Some("d"), MMXA_SCAN_REVERSE),
        keys(&["c", "b\u{7f}", "bz"])
    );
    assert_eq!(
        s(Some("b"), None, MMXA_SCAN_PREFIX),
        keys(&["b", "ba", "bz", "b\u{7f}"])
    );
    assert_eq!(
        s(Some("b"), None, MMXA_SCAN_PREFIX | MMXA_SCAN_REVERSE),
        keys(&["b\u{7f}", "bz", "ba", "b"])
    );
    assert_eq!(s(Some("ab"), None, MMXA_SCAN_PREFIX), keys(&["ab", "abc"]));
    assert_eq!(s(Some("zz"), None, MMXA_SCAN_PREFIX), keys(&[]));
    assert_eq!(s(Some("c"), Some("a"), 0), keys(&[]), "lo after hi: empty");
    assert_eq!(s(Some("c"), Some("a"), MMXA_SCAN_REVERSE), keys(&[]));
    assert_eq!(s(Some("b"), Some("b"), MMXA_SCAN_HI_INCL), keys(&["b"]));
    // A prefix of 0xff bytes runs to the end of the key space.
    let ff = r
        .scan(Some(&[0xff]), None, MMXA_SCAN_PREFIX)
        .expect("prefix 0xff");
    assert_eq!(ff, vec![(vec![0xff, 0x00], b"hi".to_vec())]);
    r.close_ok();
}

#[test]
fn a_branch_sees_its_own_writes_in_order_and_others_see_committed_data() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    let other = Worker::new("other");
    r.open_ok();
    for k in ["a", "c", "d", "e"] {
        r.put_ok(k, "old");
    }
    {
        let r = r.clone();
        other.run(move || r.open_ok());
    }
    let x = fresh_xid("scan");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    r.put_ok("b", "new");
    r.put_ok("c", "new");
    check("delete", r.delete(b"d"), MMXA_OK);
    r.put_ok("f", "new");
    check("delete", r.delete(b"f"), MMXA_OK);
    let mine = r.scan(None, None, 0).expect("scan in the branch");
    let text: Vec<(String, String)> = mine
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into(),
                String::from_utf8_lossy(v).into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [("a", "old"), ("b", "new"), ("c", "new"), ("e", "old")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(text, want);
    assert_eq!(
        r.scan_keys(None, None, MMXA_SCAN_REVERSE),
        keys(&["e", "c", "b", "a"])
    );
    // Outside the branch: committed data, without waiting for the branch's locks.
    let r2 = r.clone();
    let seen = other.run(move || r2.scan_keys(None, None, 0));
    assert_eq!(seen, keys(&["a", "c", "d", "e"]));
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_commit", r.commit(&x, TMONEPHASE), XA_OK);
    let r2 = r.clone();
    let seen = other.run(move || r2.scan_keys(None, None, 0));
    assert_eq!(seen, keys(&["a", "b", "c", "e"]));
    let r2 = r.clone();
    other.run(move || r2.close_ok());
    r.close_ok();
}

#[test]
fn values_across_segment_files_and_a_rebuild_from_the_log() {
    let dir = ffi_common::private_dir();
    // Small segments: the values live in many files.
    let r = rm(dir.path(), "");
    r.open_ok();
    let mut model = BTreeMap::new();
    let mut g = rng::Rng::new(0x5eed_5ca1);
    for i in 0..3000u64 {
        let k = format!("k{:05}", g.below(100_000));
        let v = vec![b'a' + (i % 26) as u8; 4000 + (i as usize % 5000)];
        check("put", r.put(k.as_bytes(), &v), MMXA_OK);
        model.insert(k.into_bytes(), v);
    }
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count();
    assert!(segments >= 3, "the values span {segments} segment files");
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    assert_eq!(r.scan(None, None, 0).expect("scan"), want);
    // Closed and opened again, the shared state is rebuilt from the log in key order.
    r.close_ok();
    r.open_ok();
    assert_eq!(r.scan(None, None, 0).expect("scan after rebuild"), want);
    let rev: Vec<_> = want.iter().rev().cloned().collect();
    assert_eq!(r.scan(None, None, MMXA_SCAN_REVERSE).expect("reverse"), rev);
    // New keys go between the rebuilt ones.
    r.put_ok("k00000a", "x");
    r.put_ok("k99999z", "y");
    let all = r.scan(None, None, 0).expect("scan");
    assert_eq!(all.len(), want.len() + 2);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    r.close_ok();
}

#[test]
fn random_operations_scan_like_a_sorted_map() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    let seed = std::env::var("MMXA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1234_5678u64);
    eprintln!("seed {seed} (MMXA_TEST_SEED to replay)");
    let mut g = rng::Rng::new(seed);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let key = |g: &mut rng::Rng| -> Vec<u8> {
        let n = g.range(1, 3) as usize;
        (0..n)
            .map(|_| b"abcd\x00\xff"[g.below(6) as usize])
            .collect()
    };
    for step in 0..1500 {
        let in_txn = g.below(4) == 0;
        if in_txn {
            begin(&r);
        }
        let mut txn_model = model.clone();
        for _ in 0..g.range(1, if in_txn { 6 } else { 1 }) {
            let k = key(&mut g);
            match g.below(3) {
                0 => {
                    let v = format!("{step}").into_bytes();
                    check("put", r.put(&k, &v), MMXA_OK);
                    txn_model.insert(k, v);
                }
                1 => {
                    let want = if txn_model.remove(&k).is_some() {
                        MMXA_OK
                    } else {
                        MMXA_NOTFOUND
                    };
                    check("delete", r.delete(&k), want);
                }
                _ => {
                    let (lo, hi) = (key(&mut g), key(&mut g));
                    let flags = g.below(8) as std::os::raw::c_long;
                    let got = r.scan(Some(&lo), Some(&hi), flags).expect("scan");
                    use std::ops::Bound::*;
                    let lo_b = if flags & MMXA_SCAN_LO_EXCL != 0 {
                        Excluded(lo.clone())
                    } else {
                        Included(lo.clone())
                    };
                    let hi_b = if flags & MMXA_SCAN_HI_INCL != 0 {
                        Included(hi.clone())
                    } else {
                        Excluded(hi.clone())
                    };
                    let mut want: Vec<(Vec<u8>, Vec<u8>)> =
                        if lo > hi || (lo == hi && flags & 6 != 4) {
                            Vec::new()
                        } else {
                            txn_model
                                .range((lo_b, hi_b))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        };
                    if flags & MMXA_SCAN_REVERSE != 0 {
                        want.reverse();
                    }
                    assert_eq!(got, want, "step {step}: scan {lo:?}..{hi:?} flags {flags}");
                }
            }
        }
        if in_txn {
            if g.below(3) == 0 {
                check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
            } else {
                commit(&r);
                model = txn_model;
            }
        } else {
            model = txn_model;
        }
        if step % 500 == 499 {
            r.close_ok();
            r.open_ok();
        }
    }
    let all: Vec<_> = model.into_iter().collect();
    assert_eq!(r.scan(None, None, 0).expect("final scan"), all);
    r.close_ok();
}

/// A store with keys "b", "c", "d", "f", "h" and a second thread of control open on it.
fn gap_store(extra: &str) -> (tempfile::TempDir, Rm, Worker) {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), extra);
    r.open_ok();
    for k in ["b", "c", "d", "f", "h"] {
        r.put_ok(k, "0");
    }
    let w = Worker::new("writer");
    let r2 = r.clone();
    w.run(move || r2.open_ok());
    (dir, r, w)
}

/// A write a probe tries.
#[derive(Clone, Copy)]
enum Write {
    Put(&'static str),
    Delete(&'static str),
}
use Write::*;

/// Asserts what each write answers in a local transaction of the worker's thread.
#[track_caller]
fn expect_probes(w: &Worker, r: &Rm, cases: &[(Write, i32, &str)]) {
    for &(write, want, why) in cases {
        let got = match write {
            Put(k) => probe(w, r, k, false),
            Delete(k) => probe(w, r, k, true),
        };
        assert_eq!(got, want, "{why}");
    }
}

/// What a write of `key` in a local transaction of the worker's thread answers (it then rolls
/// back, so every probe starts from the same data).
fn probe(w: &Worker, r: &Rm, key: &'static str, delete: bool) -> i32 {
    let r = r.clone();
    w.run(move || {
        begin(&r);
        let rc = if delete {
            r.delete(key.as_bytes())
        } else {
            r.put(key.as_bytes(), b"x")
        };
        let _ = mmxa_txn_rollback(r.rmid);
        rc
    })
}

#[test]
fn under_serializable_a_scanned_range_takes_no_phantom_until_the_scanner_prepares() {
    // lock_timeout_ms bounds every blocked write: a write the scan protects against times out.
    let (_dir, r, w) = gap_store("lock_timeout_ms=200");
    let x = fresh_xid("scan");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    assert_eq!(r.scan_keys(Some("c"), Some("e"), 0), keys(&["c", "d"]));
    expect_probes(
        &w,
        &r,
        &[
            // Inside the range, an insert, a delete and an update wait (and time out).
            (Put("cc"), MMXA_ELOCKTIMEOUT, "insert into the range"),
            (Put("dz"), MMXA_ELOCKTIMEOUT, "insert up to the bound"),
            (Delete("c"), MMXA_ELOCKTIMEOUT, "delete from the range"),
            (Put("d"), MMXA_ELOCKTIMEOUT, "update in the range"),
            // Next-key locking: the gap before the first key and the gap up to the key after
            // the range are locked whole (so "e" waits too, past the bound); keys beyond go on.
            (Put("bz"), MMXA_ELOCKTIMEOUT, "gap before the first key"),
            (Put("e"), MMXA_ELOCKTIMEOUT, "gap up to the next key"),
            (Put("f"), MMXA_OK, "the key after the range: gap only"),
            (Put("g"), MMXA_OK, "beyond the next key"),
            (Put("a"), MMXA_OK, "before the gap"),
            (Delete("b"), MMXA_OK, "the key before the range"),
        ],
    );
    // A reader that creates an entry for an absent key in the range splits the gap: the
    // scanner keeps it covered.
    let r2 = r.clone();
    assert_eq!(
        w.run(move || {
            begin(&r2);
            let got = r2.get(b"cz");
            let _ = mmxa_txn_rollback(r2.rmid);
            got
        }),
        Ok(None)
    );
    expect_probes(
        &w,
        &r,
        &[(Put("cz"), MMXA_ELOCKTIMEOUT, "after the gap was split")],
    );
    // The scanner sees the same range again.
    assert_eq!(r.scan_keys(Some("c"), Some("e"), 0), keys(&["c", "d"]));
    // It writes a key it scanned: the gap before that key stays locked.
    r.put_ok("d", "1");
    expect_probes(
        &w,
        &r,
        &[(Put("czz"), MMXA_ELOCKTIMEOUT, "gap of an upgraded key")],
    );
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    // Prepare releases the shared and gap locks, and keeps the exclusive one.
    check("xa_prepare", r.prepare(&x), XA_OK);
    expect_probes(
        &w,
        &r,
        &[
            (Put("cc"), MMXA_OK, "inside, after the prepare"),
            (
                Put("czz"),
                MMXA_OK,
                "the upgraded key's gap, after the prepare",
            ),
            (Put("e"), MMXA_OK, "up to the next key, after the prepare"),
            (Put("d"), MMXA_ELOCKTIMEOUT, "written, prepared"),
        ],
    );
    check("xa_commit", r.commit(&x, TMNOFLAGS), XA_OK);
    r.close_ok();
}

#[test]
fn a_reverse_scan_and_a_scan_to_the_end_lock_their_gaps_too() {
    let (_dir, r, w) = gap_store("lock_timeout_ms=200");
    begin(&r);
    assert_eq!(
        r.scan_keys(Some("c"), Some("e"), MMXA_SCAN_REVERSE),
        keys(&["d", "c"])
    );
    expect_probes(
        &w,
        &r,
        &[
            (Put("cc"), MMXA_ELOCKTIMEOUT, "inside"),
            (Put("e"), MMXA_ELOCKTIMEOUT, "up to the next key"),
            (Put("g"), MMXA_OK, "beyond"),
        ],
    );
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    // A scan to the end locks the gap after the last key.
    begin(&r);
    assert_eq!(r.scan_keys(Some("g"), None, 0), keys(&["h"]));
    expect_probes(
        &w,
        &r,
        &[
            (Put("z"), MMXA_ELOCKTIMEOUT, "past the last key"),
            (Put("a"), MMXA_OK, "before the range"),
        ],
    );
    check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
    begin(&r);
    assert_eq!(
        r.scan_keys(None, Some("b"), MMXA_SCAN_HI_INCL | MMXA_SCAN_REVERSE),
        keys(&["b"])
    );
    expect_probes(
        &w,
        &r,
        &[(Put("a"), MMXA_ELOCKTIMEOUT, "before the first key")],
    );
    check("commit", mmxa_txn_commit(r.rmid), MMXA_OK);
    assert_eq!(probe(&w, &r, "a", false), MMXA_OK, "released at the end");
    r.close_ok();
}

#[test]
fn under_read_committed_a_scan_locks_nothing() {
    let (_dir, r, w) = gap_store("isolation=read_committed;lock_timeout_ms=200");
    begin(&r);
    assert_eq!(r.scan_keys(Some("c"), Some("e"), 0), keys(&["c", "d"]));
    assert_eq!(probe(&w, &r, "cc", false), MMXA_OK);
    assert_eq!(probe(&w, &r, "c", true), MMXA_OK);
    let r2 = r.clone();
    w.run(move || r2.put_ok("cc", "phantom"));
    // The phantom appears in the same transaction's next scan: allowed at this level.
    assert_eq!(
        r.scan_keys(Some("c"), Some("e"), 0),
        keys(&["c", "cc", "d"])
    );
    commit(&r);
    r.close_ok();
}

/// Two transactions each count the keys under a prefix and, seeing none, insert one: the
/// scan-count-insert race. Returns how many of them committed.
fn count_then_insert_race(extra: &str) -> (usize, Vec<String>) {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), extra);
    r.open_ok();
    r.put_ok("other", "x");
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<Worker> = ["a", "b"].iter().map(|n| Worker::new(n)).collect();
    let pending: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let (r, barrier) = (r.clone(), barrier.clone());
            w.submit(move || {
                r.open_ok();
                begin(&r);
                let n = r.scan_keys(Some("slot/"), None, MMXA_SCAN_PREFIX).len();
                barrier.wait();
                let mut ok = n == 0;
                if ok {
                    let rc = r.put(format!("slot/{i}").as_bytes(), b"taken");
                    ok = rc == MMXA_OK;
                    if !ok {
                        assert!(
                            rc == MMXA_EDEADLOCK || rc == MMXA_ELOCKTIMEOUT,
                            "insert: {rc} ({})",
                            last_error()
                        );
                    }
                }
                let committed = ok && mmxa_txn_commit(r.rmid) == MMXA_OK;
                if !committed {
                    let _ = mmxa_txn_rollback(r.rmid);
                }
                r.close_ok();
                committed
            })
        })
        .collect();
    let committed = pending
        .into_iter()
        .filter(|_| true)
        .map(|p| p.wait())
        .filter(|&c| c)
        .count();
    let slots = r.scan_keys(Some("slot/"), None, MMXA_SCAN_PREFIX);
    r.close_ok();
    (committed, slots)
}

#[test]
fn the_scan_count_insert_race_lets_one_through_under_serializable_only() {
    let (committed, slots) = count_then_insert_race("lock_timeout_ms=10000");
    assert_eq!(committed, 1, "one of the two commits, the other fails");
    assert_eq!(slots.len(), 1, "{slots:?}");
    let (committed, slots) = count_then_insert_race("isolation=read_committed");
    assert_eq!(committed, 2, "read committed lets both through");
    assert_eq!(slots.len(), 2, "the anomaly: {slots:?}");
}

#[test]
fn scans_in_branches_always_count_the_same_while_writers_move_keys() {
    const KEYS: usize = 20;
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "lock_timeout_ms=10000");
    r.open_ok();
    for i in 0..KEYS {
        r.put_ok(&format!("m/{:04}", i * 50), "0");
    }
    r.put_ok("m0", "after the range");
    r.put_ok("l", "before the range");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let scans = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (r, stop, moves) = (r.clone(), stop.clone(), moves.clone());
        threads.push(std::thread::spawn(move || {
            r.open_ok();
            let mut g = rng::Rng::new(0xabc + t);
            while !stop.load(Ordering::Relaxed) {
                // Move one key of the range elsewhere in it: delete it, insert another.
                begin(&r);
                let all = match r.scan(Some(b"m/"), None, MMXA_SCAN_PREFIX) {
                    Ok(v) => v,
                    Err(_) => {
                        let _ = mmxa_txn_rollback(r.rmid);
                        continue;
                    }
                };
                let from = all[g.below(all.len() as u64) as usize].0.clone();
                let to = format!("m/{:04}", g.below(1000)).into_bytes();
                let ok = all.iter().all(|(k, _)| *k != to)
                    && r.delete(&from) == MMXA_OK
                    && r.put(&to, b"1") == MMXA_OK
                    && mmxa_txn_commit(r.rmid) == MMXA_OK;
                if ok {
                    moves.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = mmxa_txn_rollback(r.rmid);
                }
            }
            r.close_ok();
        }));
    }
    for t in 0..2u64 {
        let (r, stop, scans) = (r.clone(), stop.clone(), scans.clone());
        threads.push(std::thread::spawn(move || {
            r.open_ok();
            let mut n = 0;
            while n < 150 {
                begin(&r);
                let flags = if t == 0 { 0 } else { MMXA_SCAN_REVERSE };
                match r.scan(Some(b"m/"), None, flags | MMXA_SCAN_PREFIX) {
                    Ok(v) => {
                        assert_eq!(v.len(), KEYS, "a scan counted {} keys", v.len());
                        assert!(v.iter().all(|(k, _)| k.starts_with(b"m/")));
                        if mmxa_txn_commit(r.rmid) == MMXA_OK {
                            n += 1;
                            scans.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(rc) => {
                        assert!(
                            rc == MMXA_EDEADLOCK || rc == MMXA_ELOCKTIMEOUT,
                            "scan: {rc}"
                        );
                        let _ = mmxa_txn_rollback(r.rmid);
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            r.close_ok();
        }));
    }
    for t in threads {
        t.join().expect("thread");
    }
    eprintln!(
        "{} scans, {} moves",
        scans.load(Ordering::Relaxed),
        moves.load(Ordering::Relaxed)
    );
    assert_eq!(r.scan_keys(Some("m/"), None, MMXA_SCAN_PREFIX).len(), KEYS);
    r.close_ok();
}

#[test]
fn a_cursor_works_only_in_its_branch_and_buffers_too_small_keep_the_entry() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    let other = Worker::new("other");
    r.open_ok();
    r.put_ok("a", "1");
    r.put_ok("b", "22");
    {
        let r = r.clone();
        other.run(move || r.open_ok());
    }
    let x = fresh_xid("scan");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    let mut c = 0u64;
    // SAFETY: NULL bounds with length 0; `c` is writable.
    let rc =
        unsafe { mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    assert_ne!(c, 0);
    let next = |c: u64, kcap: usize, vcap: usize| -> (i32, usize, usize, Vec<u8>) {
        let (mut k, mut v) = (vec![0u8; kcap], vec![0u8; vcap]);
        let (mut kl, mut vl) = (0usize, 0usize);
        // SAFETY: the buffers hold their capacities; the lengths are writable.
        let rc = unsafe {
            mmxa_cursor_next(
                c,
                k.as_mut_ptr().cast(),
                kcap,
                &mut kl,
                v.as_mut_ptr().cast(),
                vcap,
                &mut vl,
            )
        };
        (rc, kl, vl, k)
    };
    let (rc, kl, vl, _) = next(c, 1, 1);
    assert_eq!((rc, kl, vl), (MMXA_OK, 1, 1));
    let (rc, kl, vl, _) = next(c, 1, 1);
    assert_eq!((rc, kl, vl), (MMXA_EBUFSIZE, 1, 2), "value too small");
    let (rc, kl, vl, _) = next(c, 0, 8);
    assert_eq!(
        (rc, kl, vl),
        (MMXA_EBUFSIZE, 1, 2),
        "key too small; still the same entry"
    );
    // Another thread is not in the branch.
    let got = other.run(move || next(c, 8, 8).0);
    assert_eq!(got, MMXA_EPROTO);
    let (rc, kl, vl, k) = next(c, 8, 8);
    assert_eq!((rc, kl, vl, &k[..1]), (MMXA_OK, 1, 2, &b"b"[..]));
    assert_eq!(next(c, 8, 8).0, MMXA_NOTFOUND);
    // Once the thread has ended its association, the cursor may not read in the branch.
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    assert_eq!(next(c, 8, 8).0, MMXA_EPROTO, "{}", last_error());
    check("close", mmxa_cursor_close(c), MMXA_OK);
    check("close again", mmxa_cursor_close(c), MMXA_EINVAL);
    assert_eq!(next(c, 8, 8).0, MMXA_EINVAL);
    assert_eq!(next(0, 8, 8).0, MMXA_EINVAL);
    check("xa_commit", r.commit(&x, TMONEPHASE), XA_OK);
    // A cursor over committed data serves any thread that has the store open.
    // SAFETY: as above.
    let rc =
        unsafe { mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    assert_eq!(next(c, 8, 8).0, MMXA_OK);
    assert_eq!(other.run(move || next(c, 8, 8)).3[..1], b"b"[..]);
    check("close", mmxa_cursor_close(c), MMXA_OK);
    // A cursor opened in a local transaction reads on after it is promoted.
    begin(&r);
    r.put_ok("c", "3");
    // SAFETY: as above.
    let rc =
        unsafe { mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    assert_eq!(next(c, 8, 8).0, MMXA_OK);
    let y = fresh_xid("scan");
    // SAFETY: a valid XID on our stack.
    check("promote", unsafe { mmxa_txn_promote(r.rmid, &y) }, XA_OK);
    let (rc, _, _, k) = next(c, 8, 8);
    assert_eq!((rc, &k[..1]), (MMXA_OK, &b"b"[..]));
    let (rc, _, _, k) = next(c, 8, 8);
    assert_eq!((rc, &k[..1]), (MMXA_OK, &b"c"[..]), "its own write");
    check("close", mmxa_cursor_close(c), MMXA_OK);
    check("xa_end", r.end(&y, TMSUCCESS), XA_OK);
    check("xa_commit", r.commit(&y, TMONEPHASE), XA_OK);
    let r2 = r.clone();
    other.run(move || r2.close_ok());
    r.close_ok();
    // A closed store: the cursor's rmid is not open.
    r.open_ok();
    // SAFETY: as above.
    let rc =
        unsafe { mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    r.close_ok();
    assert_eq!(next(c, 8, 8).0, MMXA_ENOTOPEN);
    check("close", mmxa_cursor_close(c), MMXA_OK);
}

#[test]
fn bad_arguments_are_refused_without_harm() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    r.put_ok("a", "1");
    let mut c = 0u64;
    let k = b"k";
    // SAFETY: every pointer is NULL or valid for its length; `c` is writable.
    unsafe {
        let null = std::ptr::null();
        assert_eq!(
            mmxa_cursor_open(r.rmid, null, 0, null, 0, 0, std::ptr::null_mut()),
            MMXA_EINVAL
        );
        assert_eq!(
            mmxa_cursor_open(r.rmid, null, 3, null, 0, 0, &mut c),
            MMXA_EINVAL
        );
        assert_eq!(
            mmxa_cursor_open(r.rmid, null, 0, null, 3, 0, &mut c),
            MMXA_EINVAL
        );
        assert_eq!(
            mmxa_cursor_open(r.rmid, null, 0, null, 0, 0x100, &mut c),
            MMXA_EINVAL
        );
        assert_eq!(
            mmxa_cursor_open(
                r.rmid,
                k.as_ptr().cast(),
                1,
                k.as_ptr().cast(),
                1,
                MMXA_SCAN_PREFIX,
                &mut c
            ),
            MMXA_EINVAL
        );
        let big = vec![b'x'; MMXA_MAX_KEY + 1];
        assert_eq!(
            mmxa_cursor_open(r.rmid, big.as_ptr().cast(), big.len(), null, 0, 0, &mut c),
            MMXA_ETOOBIG
        );
        assert_eq!(
            mmxa_cursor_open(r.rmid + 1000, null, 0, null, 0, 0, &mut c),
            MMXA_ENOTOPEN
        );
        assert_eq!(c, 0, "nothing written on an error");
        assert_eq!(
            mmxa_cursor_open(r.rmid, null, 0, null, 0, 0, &mut c),
            MMXA_OK
        );
        let mut n = 0usize;
        let mut buf = [0u8; 8];
        assert_eq!(
            mmxa_cursor_next(
                c,
                buf.as_mut_ptr().cast(),
                8,
                std::ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                8,
                &mut n
            ),
            MMXA_EINVAL
        );
        assert_eq!(
            mmxa_cursor_next(
                c,
                std::ptr::null_mut(),
                8,
                &mut n,
                buf.as_mut_ptr().cast(),
                8,
                &mut n
            ),
            MMXA_EINVAL
        );
        let (mut kl, mut vl) = (0usize, 0usize);
        assert_eq!(
            mmxa_cursor_next(
                c,
                buf.as_mut_ptr().cast(),
                8,
                &mut kl,
                buf.as_mut_ptr().cast(),
                8,
                &mut vl
            ),
            MMXA_OK,
            "the entry survived the refused calls"
        );
        assert_eq!((kl, vl), (1, 1));
        assert_eq!(mmxa_cursor_close(c), MMXA_OK);
    }
    r.close_ok();
}

#[test]
fn a_thousand_open_cursors_and_a_long_range_in_one_branch() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    begin(&r);
    for i in 0..3000 {
        r.put_ok(&format!("k{i:05}"), "v");
    }
    commit(&r);
    // Many batches of locks in one branch.
    begin(&r);
    assert_eq!(r.scan_keys(None, None, 0).len(), 3000);
    assert_eq!(r.scan_keys(None, None, MMXA_SCAN_REVERSE).len(), 3000);
    commit(&r);
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let mut c = 0u64;
        // SAFETY: NULL bounds with length 0; `c` is writable.
        let rc = unsafe {
            mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c)
        };
        check("open", rc, MMXA_OK);
        ids.push(c);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "distinct cursor numbers");
    for c in ids {
        check("close", mmxa_cursor_close(c), MMXA_OK);
    }
    r.close_ok();
}

/// A serializable scan locks every key it passes and the gap before it: a branch that scanned
/// 100,000 keys holds 100,000 next-key locks, all released at its commit; a branch's prepare
/// releases those of its reads (a scanned key is writable at once) and keeps its write's
/// (until the commit) — however many there are. Each, in a local transaction and in an XA
/// branch.
#[test]
fn branches_that_scanned_a_hundred_thousand_keys_prepare_and_commit() {
    const N: usize = 100_000;
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "isolation=serializable;lock_timeout_ms=200");
    r.open_ok();
    let w = Worker::new("writer");
    let r2 = r.clone();
    w.run(move || r2.open_ok());
    begin(&r);
    for i in 0..N {
        r.put_ok(&format!("k{i:06}"), "0");
    }
    commit(&r);
    // A local transaction: scan, write, commit.
    begin(&r);
    assert_eq!(r.scan(None, None, 0).expect("scan").len(), N);
    assert_eq!(
        probe(&w, &r, "k000007", false),
        MMXA_ELOCKTIMEOUT,
        "scanned"
    );
    r.put_ok("k000000", "1");
    commit(&r);
    assert_eq!(
        probe(&w, &r, "k000007", false),
        MMXA_OK,
        "released at the commit"
    );
    assert_eq!(probe(&w, &r, "k000000x", false), MMXA_OK, "a gap, released");
    // An XA branch: scan, write, prepare, commit.
    let x = fresh_xid("scan");
    check("xa_start", r.start(&x, TMNOFLAGS), XA_OK);
    assert_eq!(
        r.scan(None, None, MMXA_SCAN_REVERSE).expect("scan").len(),
        N
    );
    r.put_ok("k050000", "2");
    check("xa_end", r.end(&x, TMSUCCESS), XA_OK);
    check("xa_prepare", r.prepare(&x), XA_OK);
    assert_eq!(
        probe(&w, &r, "k000007", false),
        MMXA_OK,
        "a read, released at prepare"
    );
    assert_eq!(
        probe(&w, &r, "k099999x", false),
        MMXA_OK,
        "a gap, released at prepare"
    );
    assert_eq!(
        probe(&w, &r, "k050000", false),
        MMXA_ELOCKTIMEOUT,
        "the write stays locked"
    );
    check("xa_commit", r.commit(&x, TMNOFLAGS), XA_OK);
    assert_eq!(
        probe(&w, &r, "k050000", false),
        MMXA_OK,
        "released at the commit"
    );
    // A read-only branch that scanned it all: its prepare answers XA_RDONLY, releasing all.
    let y = fresh_xid("scan");
    check("xa_start", r.start(&y, TMNOFLAGS), XA_OK);
    assert_eq!(r.scan(None, None, 0).expect("scan").len(), N);
    check("xa_end", r.end(&y, TMSUCCESS), XA_OK);
    check("xa_prepare", r.prepare(&y), XA_RDONLY);
    assert_eq!(probe(&w, &r, "k000007", false), MMXA_OK);
    let got = r.scan(None, None, 0).expect("scan");
    assert_eq!(got.len(), N);
    assert_eq!(got[0], (b"k000000".to_vec(), b"1".to_vec()));
    assert_eq!(got[50_000], (b"k050000".to_vec(), b"2".to_vec()));
    r.close_ok();
}

/// The key order seen by `r` after a crash: forwards it is strictly increasing and is the
/// reverse scan reversed, every key reads back the same by a point read, and the keys are
/// `want` (give or take `either`, a key whose write was in flight).
fn check_order(r: &Rm, want: &BTreeSet<String>, either: Option<&str>, ctx: &str) {
    let fwd = r.scan(None, None, 0).expect("scan");
    let mut rev = r.scan(None, None, MMXA_SCAN_REVERSE).expect("reverse scan");
    rev.reverse();
    assert_eq!(fwd, rev, "{ctx}: forwards and backwards differ");
    assert!(
        fwd.windows(2).all(|w| w[0].0 < w[1].0),
        "{ctx}: not in order"
    );
    for (k, v) in &fwd {
        assert_eq!(r.get(k), Ok(Some(v.clone())), "{ctx}: point read of {k:?}");
    }
    let got: BTreeSet<String> = fwd
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .filter(|k| Some(k.as_str()) != either)
        .collect();
    let want: BTreeSet<String> = want
        .iter()
        .filter(|k| Some(k.as_str()) != either)
        .cloned()
        .collect();
    assert_eq!(got, want, "{ctx}: keys");
}

/// A process that inserts and deletes keys (so entries are linked into and out of the key
/// order) dies: at a crash point inside the section that links a new key (its 1st, 2nd, 9th,
/// 40th pass), or by SIGKILL at a random moment. The store stays open in the test process
/// meanwhile, so the next section repairs the shared state from the journal rather than
/// rebuilding it; the key order must be whole and hold exactly the acknowledged writes.
#[test]
fn a_process_dying_while_it_changes_the_key_order_leaves_it_whole() {
    const T: &str = "a_process_dying_while_it_changes_the_key_order_leaves_it_whole";
    shell::shell_if_child();
    let seed = std::env::var("MMXA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0dd_5eed_u64);
    eprintln!("seed {seed} (MMXA_TEST_SEED to replay)");
    let mut g = rng::Rng::new(seed);
    let cases: Vec<Option<u64>> = [Some(1), Some(2), Some(9), Some(40)]
        .into_iter()
        .chain(std::iter::repeat_n(None, 12))
        .collect();
    let (mut killed_at_point, mut acked) = (0, 0);
    for (round, case) in cases.into_iter().enumerate() {
        let dir = ffi_common::private_dir();
        let info = shell::open_string(dir.path(), "");
        let r = Rm {
            rmid: NEXT_RMID.fetch_add(1, Ordering::Relaxed),
            info: info.clone(),
        };
        r.open_ok();
        let mut present = BTreeSet::new();
        for i in (0..200).step_by(2) {
            let k = format!("k{:06}", i * 5000);
            r.put_ok(&k, "base");
            present.insert(k);
        }
        // Two inserts of fresh keys for every delete of a present one.
        let mut model = present.clone();
        let ops: Vec<(bool, String)> = (0..300)
            .map(|j| {
                if j % 3 == 2 && !model.is_empty() {
                    let v: Vec<&String> = model.iter().collect();
                    let k = v[g.below(v.len() as u64) as usize].clone();
                    model.remove(&k);
                    (false, k)
                } else {
                    let k = format!("k{:06}x", g.below(1_000_000));
                    model.insert(k.clone());
                    (true, k)
                }
            })
            .collect();
        let env = case.map(|n| format!("rm.lock_in_section:{n}"));
        let env: Vec<(&str, &str)> = env.iter().map(|v| (mmxa::crash::ENV, v.as_str())).collect();
        let mut child = Shell::spawn_env(T, "churn", &env);
        child.rc(&format!("open 1 {info}"), XA_OK);
        let cmd = |(insert, k): &(bool, String)| {
            if *insert {
                format!("put 1 {k} v")
            } else {
                format!("del 1 {k}")
            }
        };
        let mut answers = Vec::new();
        if case.is_some() {
            for op in &ops {
                child.send(&cmd(op));
                match child.recv_or_exit() {
                    Some(a) => answers.push(a),
                    None => break,
                }
            }
            assert!(
                answers.len() < ops.len(),
                "round {round}: the crash point was reached"
            );
            killed_at_point += 1;
        } else {
            for op in &ops {
                child.send(&cmd(op));
            }
            std::thread::sleep(Duration::from_millis(g.range(1, 40)));
            child.sigkill();
            answers = child.rest();
        }
        let _ = child.finish();
        // Every answered write is in the store; the one in flight may or may not be.
        let mut want = present.clone();
        for ((insert, k), a) in ops.iter().zip(&answers) {
            let rc: i32 = a.parse().unwrap_or(i32::MIN);
            if *insert {
                assert_eq!(rc, MMXA_OK, "round {round}: put {k}");
                want.insert(k.clone());
            } else {
                assert!(
                    rc == MMXA_OK || rc == MMXA_NOTFOUND,
                    "round {round}: del {k}: {rc}"
                );
                want.remove(k);
            }
        }
        acked += answers.len();
        let either = ops.get(answers.len()).map(|(_, k)| k.as_str());
        if let Some(k) = either {
            // The dead process may hold that key with a logged write; a lock on it waits until
            // the reaper finished or dropped that write, so the key stays as it is from here.
            begin(&r);
            assert!(r.get_for_update(k.as_bytes()).is_ok(), "{}", last_error());
            check("rollback", mmxa_txn_rollback(r.rmid), MMXA_OK);
        }
        let ctx = format!("round {round} ({case:?}), {} answered", answers.len());
        check_order(&r, &want, either, &ctx);
        // The repaired order takes more changes.
        let mut want: BTreeSet<String> = r.scan_keys(None, None, 0).into_iter().collect();
        for _ in 0..40 {
            let k = format!("k{:06}y", g.below(1_000_000));
            r.put_ok(&k, "after");
            want.insert(k);
        }
        for k in want.iter().step_by(3).cloned().collect::<Vec<_>>() {
            check("delete", r.delete(k.as_bytes()), MMXA_OK);
            want.remove(&k);
        }
        check_order(&r, &want, None, &format!("{ctx}, then more changes"));
        r.close_ok();
    }
    eprintln!("{killed_at_point} deaths at the crash point, {acked} acknowledged writes checked");
}

#[test]
fn a_cursor_in_a_transaction_sees_the_writes_made_while_it_reads() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    for k in ["a", "c", "e", "g"] {
        r.put_ok(k, "old");
    }
    begin(&r);
    let mut c = 0u64;
    // SAFETY: NULL bounds with length 0; `c` is writable.
    let rc =
        unsafe { mmxa_cursor_open(r.rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    let next = |c: u64| -> Option<(String, String)> {
        let (mut k, mut v) = ([0u8; 16], [0u8; 16]);
        let (mut kl, mut vl) = (0usize, 0usize);
        // SAFETY: the buffers hold 16 writable bytes each; the lengths are writable.
        let rc = unsafe {
            mmxa_cursor_next(
                c,
                k.as_mut_ptr().cast(),
                16,
                &mut kl,
                v.as_mut_ptr().cast(),
                16,
                &mut vl,
            )
        };
        match rc {
            MMXA_OK => Some((
                String::from_utf8_lossy(&k[..kl]).into(),
                String::from_utf8_lossy(&v[..vl]).into(),
            )),
            MMXA_NOTFOUND => None,
            other => panic!("mmxa_cursor_next: {other} ({})", last_error()),
        }
    };
    let kv = |k: &str, v: &str| Some((k.to_string(), v.to_string()));
    assert_eq!(next(c), kv("a", "old"));
    // Ahead of the cursor: an update, an insert, a delete; behind it: an insert.
    r.put_ok("c", "mine");
    r.put_ok("b", "new");
    check("delete", r.delete(b"e"), MMXA_OK);
    r.put_ok("0", "behind");
    assert_eq!(next(c), kv("b", "new"));
    assert_eq!(next(c), kv("c", "mine"));
    // A write of the entry just handed out, and a savepoint rollback, while reading.
    r.put_ok("c", "again");
    let mut sp = 0u64;
    // SAFETY: `sp` is writable.
    check(
        "savepoint",
        unsafe { mmxa::ffi::data::mmxa_savepoint(r.rmid, &mut sp) },
        MMXA_OK,
    );
    r.put_ok("f", "undone");
    check(
        "rollback to savepoint",
        mmxa::ffi::data::mmxa_rollback_to_savepoint(r.rmid, sp),
        MMXA_OK,
    );
    assert_eq!(next(c), kv("g", "old"));
    assert_eq!(next(c), None);
    check("close", mmxa_cursor_close(c), MMXA_OK);
    commit(&r);
    r.close_ok();
}

#[test]
fn a_cursor_reads_only_the_store_it_was_opened_on() {
    let (one, two) = (ffi_common::private_dir(), ffi_common::private_dir());
    let rmid = NEXT_RMID.fetch_add(1, Ordering::Relaxed);
    let a = Rm::new(rmid, one.path(), "");
    let b = Rm::new(rmid, two.path(), "");
    a.open_ok();
    for i in 0..200 {
        a.put_ok(&format!("x{i:03}"), "a");
    }
    let mut c = 0u64;
    // SAFETY: NULL bounds with length 0; `c` is writable.
    let rc = unsafe { mmxa_cursor_open(rmid, std::ptr::null(), 0, std::ptr::null(), 0, 0, &mut c) };
    check("mmxa_cursor_open", rc, MMXA_OK);
    let next = |c: u64| -> i32 {
        let (mut k, mut v) = ([0u8; 16], [0u8; 16]);
        let (mut kl, mut vl) = (0usize, 0usize);
        // SAFETY: the buffers hold 16 writable bytes each; the lengths are writable.
        unsafe {
            mmxa_cursor_next(
                c,
                k.as_mut_ptr().cast(),
                16,
                &mut kl,
                v.as_mut_ptr().cast(),
                16,
                &mut vl,
            )
        }
    };
    assert_eq!(next(c), MMXA_OK);
    a.close_ok();
    assert_eq!(next(c), MMXA_ENOTOPEN);
    // The same rmid, another store: the cursor was the first store's.
    b.open_ok();
    for i in 0..200 {
        b.put_ok(&format!("y{i:03}"), "b");
    }
    assert_eq!(next(c), MMXA_EINVAL, "{}", last_error());
    b.close_ok();
    // The same store opened again is another instance too.
    a.open_ok();
    assert_eq!(next(c), MMXA_EINVAL);
    check("close", mmxa_cursor_close(c), MMXA_OK);
    check("close 0", mmxa_cursor_close(0), MMXA_OK);
    a.close_ok();
}

#[test]
fn large_values_read_in_order_in_bounded_batches() {
    let dir = ffi_common::private_dir();
    let r = rm(dir.path(), "");
    r.open_ok();
    let value = |i: usize| vec![b'a' + (i % 26) as u8; MMXA_MAX_VALUE - i];
    for i in 0..40 {
        check(
            "put",
            r.put(format!("big{i:02}").as_bytes(), &value(i)),
            MMXA_OK,
        );
    }
    let all = r.scan(Some(b"big"), None, MMXA_SCAN_PREFIX).expect("scan");
    assert_eq!(all.len(), 40);
    for (i, (k, v)) in all.iter().enumerate() {
        assert_eq!(k, format!("big{i:02}").as_bytes());
        assert!(*v == value(i), "value of {i}");
    }
    r.close_ok();
}
