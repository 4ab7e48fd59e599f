//! Unit tests of the primitives, the rollback property test, and crash tests in which a child
//! process (this test binary re-executed) is killed with SIGKILL at instrumented points inside
//! a section (`crash.rs`).

use super::alloc::{blocks, class_len};
use super::layout::*;
use super::sys;
use super::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn anon() -> Region {
    Region::anonymous(DEFAULT_INITIAL_SIZE).unwrap()
}

fn small() -> Region {
    Region::anonymous(HEAP_OFF + 64 * 1024).unwrap()
}

/// What a rollback must restore: the journaled header fields, the heap top, and every block's
/// header and (if allocated) payload. Unallocated bytes, the size, the wait words and the mutex
/// are not part of it.
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    header: Vec<u8>,
    blocks: Vec<(Off, Vec<u8>)>,
}

fn snap_in(t: &Txn<'_>) -> Snap {
    let mut header = vec![0u8; (JOURNALED_END - ROOTS_OFF) as usize];
    t.read_bytes(ROOTS_OFF, &mut header).unwrap();
    let blocks = blocks(t)
        .unwrap()
        .into_iter()
        .map(|(off, allocated, len)| {
            let n = if allocated { len } else { BLOCK_HEADER };
            let mut b = vec![0u8; n as usize];
            t.read_bytes(off - BLOCK_HEADER, &mut b).unwrap();
            (off, b)
        })
        .collect();
    assert_eq!(t.get_u64(JOURNAL_LEN_OFF).unwrap(), 0, "journal empty");
    Snap { header, blocks }
}

fn snap(r: &Region) -> Snap {
    let t = r.lock(T).unwrap();
    let s = snap_in(&t);
    t.check_heap().unwrap();
    t.commit().unwrap();
    s
}

// ---- layout and files ---------------------------------------------------------------------

#[test]
fn shm_layout_of_a_fresh_region() {
    let r = anon();
    let t = r.lock(T).unwrap();
    let mut magic = [0u8; 8];
    t.read_bytes(0, &mut magic).unwrap();
    assert_eq!(magic, MAGIC);
    assert_eq!(t.get_u32(VERSION_OFF).unwrap(), VERSION);
    assert_eq!(t.get_u32(STATE_OFF).unwrap(), STATE_BUILDING);
    assert_eq!(t.get_u64(SIZE_OFF).unwrap(), DEFAULT_INITIAL_SIZE);
    assert_eq!(t.get_u64(MAX_SIZE_OFF).unwrap(), DEFAULT_MAX_SIZE);
    assert_eq!(t.get_u32(SLOT_COUNT_OFF).unwrap(), 1024);
    assert_eq!(t.get_u32(WAIT_COUNT_OFF).unwrap(), 256);
    assert_eq!(t.get_u32(ROOT_COUNT_OFF).unwrap(), 64);
    assert_eq!(t.get_u32(JOURNAL_CAP_OFF).unwrap(), 1 << 20);
    assert_eq!(t.get_u64(HEAP_OFF_OFF).unwrap(), 1_073_152);
    assert_eq!(root(0), 1152);
    assert_eq!(root(63), 1152 + 63 * 8);
    let u = t.usage().unwrap();
    assert_eq!(
        u,
        Usage {
            region_size: DEFAULT_INITIAL_SIZE,
            heap_start: HEAP_OFF,
            top: HEAP_OFF,
            ..Usage::default()
        }
    );
    assert!(!t.repaired());
    t.commit().unwrap();
}

#[test]
fn shm_create_open_publish_and_mode() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("region");
    let r = Region::create(&path, 0o640).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert!(!dir.path().join("region.tmp").exists());
    assert!(matches!(
        Region::open(&path),
        Err(Error::NotReady(STATE_BUILDING))
    ));
    let mut t = r.lock_builder(T).unwrap();
    let b = t.alloc(8).unwrap();
    t.init_u64(b, 42).unwrap();
    t.set_u64(root(0), b).unwrap();
    assert_eq!(t.journal_used(), 0, "a builder journals nothing");
    t.commit().unwrap();
    r.publish(T).unwrap();
    assert!(matches!(r.lock_builder(T), Err(Error::NotBuilding)));
    let o = Region::open(&path).unwrap();
    let t = o.lock(T).unwrap();
    let b = t.get_u64(root(0)).unwrap();
    assert_eq!(t.get_u64(b).unwrap(), 42);
    t.commit().unwrap();
    // A lock-free reader in another handle sees a later write.
    let mut t = r.lock(T).unwrap();
    t.set_u64(b, 43).unwrap();
    t.commit().unwrap();
    assert_eq!(
        o.atomic_u64(b)
            .unwrap()
            .load(std::sync::atomic::Ordering::Acquire),
        43
    );
}

#[test]
fn shm_garbage_files_are_refused_without_crashing() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("region");
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for len in [0usize, 10, 4096, HEAP_OFF as usize + 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert!(Region::open(&path).is_err(), "{len} random bytes");
    }
    // A real region with each identity field broken in turn.
    let r = Region::create(&path, 0o600).unwrap();
    r.publish(T).unwrap();
    drop(r);
    let good = std::fs::read(&path).unwrap();
    for (off, val) in [
        (0usize, 0u64),
        (8, 2),
        (12, 1),
        (16, 1 << 50),
        (16, 4097),
        (24, 1 << 60),
        (32, 1000),
        (48, 0),
    ] {
        let mut bad = good.clone();
        bad[off..off + 8].copy_from_slice(&val.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(Region::open(&path).is_err(), "field at {off} = {val}");
    }
    // A garbage mutex is refused too.
    let mut bad = good.clone();
    bad[(MUTEX_OFF + 16) as usize] = 0x7f;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(Region::open(&path), Err(Error::Incompatible(_))));
    std::fs::write(&path, &good).unwrap();
    assert!(Region::open(&path).is_ok());
}

#[test]
fn shm_garbage_journal_and_heap_are_errors() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let b = t.alloc(32).unwrap();
    t.commit().unwrap();
    // A journal length that overflows its capacity.
    r.map
        .u64_at(JOURNAL_LEN_OFF)
        .unwrap()
        .store(JOURNAL_CAP + 8, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(r.lock(T), Err(Error::Corrupt(_))));
    // An entry that points at the mutex.
    r.map
        .u64_at(JOURNAL_LEN_OFF)
        .unwrap()
        .store(24, std::sync::atomic::Ordering::Relaxed);
    r.map
        .u64_at(JOURNAL_OFF)
        .unwrap()
        .store(MUTEX_OFF, std::sync::atomic::Ordering::Relaxed);
    r.map
        .u64_at(JOURNAL_OFF + 8)
        .unwrap()
        .store(8, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(r.lock(T), Err(Error::Corrupt(_))));
    // A valid entry is rolled back even though the mutex was unlocked cleanly.
    r.map
        .u64_at(JOURNAL_OFF)
        .unwrap()
        .store(root(7), std::sync::atomic::Ordering::Relaxed);
    r.map
        .u64_at(JOURNAL_OFF + 16)
        .unwrap()
        .store(77, std::sync::atomic::Ordering::Relaxed);
    let t = r.lock(T).unwrap();
    assert!(t.repaired());
    assert_eq!(t.get_u64(root(7)).unwrap(), 77);
    // Garbage block headers and offsets.
    let mut t = t;
    for off in [0, 8, HEAP_OFF, b + 1, b + 16, 1 << 40, u64::MAX - 7] {
        assert!(t.free(off).is_err(), "free({off})");
        assert!(t.block_len(off).is_err(), "block_len({off})");
    }
    t.commit().unwrap();
}

// ---- sections ------------------------------------------------------------------------------

#[test]
fn shm_rollback_restores_exact_bytes() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let b = t.alloc(100).unwrap();
    t.init_bytes(b, &[5u8; 100]).unwrap();
    t.set_u64(root(0), b).unwrap();
    t.commit().unwrap();
    let before = snap(&r);
    let mut t = r.lock(T).unwrap();
    t.set_u64(root(0), 1).unwrap();
    t.set_u32(root(1), 2).unwrap();
    t.set_u8(root(1) + 5, 3).unwrap();
    t.set_bytes(b + 3, &[9u8; 77]).unwrap();
    t.set_bytes(b + 3, &[8u8; 7]).unwrap(); // twice: the oldest value wins
    t.set_u64(root(0), 2).unwrap();
    let c = t.alloc(5000).unwrap();
    t.init_u64(c, 1).unwrap();
    t.free(b).unwrap();
    assert_eq!(t.get_u8(b + 3).unwrap(), 8);
    drop(t);
    assert_eq!(snap(&r), before);
    // Explicit rollback is the same.
    let mut t = r.lock(T).unwrap();
    t.set_u64(root(0), 9).unwrap();
    t.rollback();
    assert_eq!(snap(&r), before);
    // And commit keeps.
    let mut t = r.lock(T).unwrap();
    t.set_u64(root(2), 9).unwrap();
    t.commit().unwrap();
    assert_eq!(r.lock(T).unwrap().get_u64(root(2)).unwrap(), 9);
}

#[test]
fn shm_panic_unwinding_through_a_section_rolls_it_back() {
    let r = anon();
    let before = snap(&r);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = r.lock(T).unwrap();
        t.set_u64(root(3), 3).unwrap();
        t.alloc(64).unwrap();
        panic!("boom");
    }));
    assert!(res.is_err());
    let t = r.lock(T).unwrap();
    assert!(!t.repaired());
    drop(t);
    assert_eq!(snap(&r), before);
}

#[test]
fn shm_writes_outside_user_areas_are_refused() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    for (off, len) in [
        (0u64, 8u64),
        (MUTEX_OFF, 8),
        (WAIT_OFF, 8),
        (ALLOC_OFF, 8),
        (SLOTS_OFF, 8),
        (JOURNAL_LEN_OFF, 8),
        (JOURNAL_OFF, 8),
        (ALLOC_OFF - 4, 8),
        (r.size(), 8),
        (u64::MAX - 3, 8),
    ] {
        assert!(t.set_u64(off, 1).is_err(), "set_u64({off})");
        assert!(
            t.set_bytes(off, &vec![0; len as usize]).is_err(),
            "set_bytes({off})"
        );
        assert!(r.atomic_u64(off).is_err(), "atomic_u64({off})");
    }
    assert!(t.set_u64(root(0) + 4, 1).is_err(), "misaligned");
    assert!(t.get_u64(r.size()).is_err());
    assert!(t.get_u64(u64::MAX - 7).is_err());
    assert!(t.with_bytes(r.size() - 4, 8, |_| ()).is_err());
    assert_eq!(t.journal_used(), 0, "nothing was journaled");
    t.commit().unwrap();
}

#[test]
fn shm_journal_overflow_fails_cleanly() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let big = t.alloc(600 * 1024).unwrap();
    t.commit().unwrap();
    let before = snap(&r);
    let mut t = r.lock(T).unwrap();
    t.set_u64(root(0), 5).unwrap();
    t.set_bytes(big, &[1u8; 600 * 1024]).unwrap();
    assert!(matches!(
        t.set_bytes(big, &[2u8; 600 * 1024]),
        Err(Error::JournalFull)
    ));
    assert!(
        matches!(t.set_u64(root(1), 1), Err(Error::JournalFull)),
        "poisoned"
    );
    assert!(matches!(t.commit(), Err(Error::JournalFull)));
    assert_eq!(snap(&r), before);
    // A single range larger than the journal.
    let mut t = r.lock(T).unwrap();
    let huge = vec![3u8; (JOURNAL_CAP + 1) as usize];
    let b = t.alloc(huge.len() as u64).unwrap();
    t.init_bytes(b, &huge).unwrap(); // unjournaled: fine
    t.commit().unwrap();
    let mut t = r.lock(T).unwrap();
    assert!(matches!(t.set_bytes(b, &huge), Err(Error::JournalFull)));
}

#[test]
fn shm_builder_section_that_does_not_commit_breaks_the_region() {
    let r = anon();
    let mut t = r.lock_builder(T).unwrap();
    t.set_u64(root(0), 1).unwrap();
    drop(t);
    assert_eq!(r.state(), STATE_BROKEN);
    assert!(matches!(r.publish(T), Err(Error::NotReady(STATE_BROKEN))));
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "not in a block allocated by this section")]
fn shm_init_outside_fresh_blocks_panics_in_debug_builds() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let b = t.alloc(16).unwrap();
    t.commit().unwrap();
    let mut t = r.lock(T).unwrap();
    let _ = t.init_u64(b, 1);
}

#[test]
fn shm_relock_timeout_and_fork_are_errors() {
    static R: OnceLock<Region> = OnceLock::new();
    let r = R.get_or_init(anon);
    let t = r.lock(T).unwrap();
    assert!(matches!(r.lock(T), Err(Error::Relock)));
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            assert!(matches!(
                r.lock(Duration::from_millis(30)),
                Err(Error::Timeout)
            ));
            assert!(start.elapsed() >= Duration::from_millis(25));
            assert!(matches!(r.lock(Duration::ZERO), Err(Error::Timeout)));
        });
    });
    drop(t);
    fn child() -> i32 {
        let r = R.get().expect("set");
        match (r.lock(Duration::from_millis(1)), r.atomic_u64(root(0))) {
            (Err(Error::Forked), Err(Error::Forked)) => 0,
            _ => 1,
        }
    }
    assert_eq!(sys::in_forked_child(child).unwrap(), 0);
    assert!(r.lock(T).is_ok(), "the parent goes on");
}

#[test]
fn shm_a_thread_that_dies_holding_the_mutex_is_repaired() {
    let r = anon();
    let before = snap(&r);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut t = r.lock(T).unwrap();
            t.set_u64(root(0), 1).unwrap();
            let b = t.alloc(64).unwrap();
            t.set_u64(root(1), b).unwrap();
            std::mem::forget(t); // the thread ends holding the mutex: the kernel marks it
        });
    });
    let t = r.lock(T).unwrap();
    assert!(t.repaired());
    drop(t);
    assert_eq!(snap(&r), before);
}

/// A waiter whose wake-up is lost (the unlock woke a waiter that was killed before it could
/// take the mutex, and a third thread took it meanwhile) gets the mutex within a slice of
/// its sleep, not at its timeout. The lost wake-up is made by hand: the holder frees the word
/// without waking anyone.
#[test]
fn shm_a_lost_mutex_wake_up_costs_a_slice_not_the_timeout() {
    use std::sync::atomic::Ordering;
    let r = &anon();
    let word = move || r.map.u32_at(MUTEX_OFF).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let t = r.lock(T).unwrap();
            held_tx.send(()).unwrap();
            free_rx.recv().unwrap();
            std::mem::forget(t);
            word().store(0, Ordering::Release);
        });
        held_rx.recv().unwrap();
        let waiter = s.spawn(|| r.lock(Duration::from_secs(120)).map(|t| t.commit()));
        // The waiter sleeps on the word (it has set the waiters flag).
        let asleep = Instant::now();
        while word().load(Ordering::Acquire) & 0x8000_0000 == 0 {
            assert!(asleep.elapsed() < T, "the waiter never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        let freed = Instant::now();
        free_tx.send(()).unwrap();
        while !waiter.is_finished() {
            // A liveness bound far below the waiter's 120 s timeout.
            assert!(
                freed.elapsed() < Duration::from_secs(60),
                "the waiter sleeps on a free mutex"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(waiter.join().unwrap(), Ok(Ok(()))));
    });
}

#[test]
fn shm_wait_until_is_woken_by_a_release() {
    let r = anon();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let (t, v) = r
                .wait_until(7, Duration::from_secs(60), |t| {
                    let v = t.get_u64(root(5))?;
                    Ok((v != 0).then_some(v))
                })
                .unwrap();
            t.commit().unwrap();
            v
        });
        std::thread::sleep(Duration::from_millis(20));
        let mut t = r.lock(T).unwrap();
        t.set_u64(root(5), 55).unwrap();
        t.wake(7);
        t.commit().unwrap();
        assert_eq!(waiter.join().unwrap(), 55);
    });
    // Nothing comes: a timeout after one last check.
    let start = Instant::now();
    let res = r.wait_until(8, Duration::from_millis(30), |t| {
        Ok((t.get_u64(root(6))? != 0).then_some(()))
    });
    assert!(matches!(res, Err(Error::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn shm_futex_on_user_words() {
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let b = t.alloc_zeroed(8).unwrap();
    t.commit().unwrap();
    assert_eq!(
        r.futex_wait(b, 1, Some(Duration::from_millis(1))).unwrap(),
        Wake::Woken,
        "the word is 0, not 1"
    );
    assert_eq!(
        r.futex_wait(b, 0, Some(Duration::from_millis(5))).unwrap(),
        Wake::TimedOut
    );
    assert_eq!(r.futex_wake(b, 1).unwrap(), 0);
    assert!(r.futex_wait(MUTEX_OFF, 0, None).is_err());
    assert!(r.futex_wait(b + 2, 0, None).is_err());
    assert!(r.futex_wait(u64::MAX - 1, 0, None).is_err());
    assert!(r.futex_wake(u64::MAX - 3, 1).is_err());
    assert_eq!(r.futex_wake(Region::wait_word_off(5), 1).unwrap(), 0);
}

// ---- allocator -----------------------------------------------------------------------------

#[test]
fn shm_allocator_sizes_reuse_and_deferred_free() {
    assert_eq!(class_len(0), 32);
    assert_eq!(class_len(16), 32);
    assert_eq!(class_len(17), 48);
    assert_eq!(class_len(100), 16 + 112);
    assert_eq!(class_len(256), 16 + 256);
    assert_eq!(class_len(257), 16 + 384);
    assert_eq!(class_len(385), 16 + 512);
    assert_eq!(class_len(600), 16 + 768);
    assert_eq!(class_len(1000), 16 + 1024);
    assert_eq!(class_len(1025), 16 + 1536);
    assert_eq!(class_len(MAX_SMALL), 16 + MAX_SMALL);
    assert_eq!(class_len(MAX_SMALL + 1), MAX_SMALL + 4096);
    let r = anon();
    let mut t = r.lock(T).unwrap();
    let a = t.alloc(20).unwrap();
    assert_eq!(a % 16, 0);
    assert_eq!(t.block_len(a).unwrap(), 32);
    let big = t.alloc(3 << 20).unwrap();
    assert_eq!(t.block_len(big).unwrap(), (3 << 20) + 4096 - 16);
    t.free(a).unwrap();
    assert!(
        matches!(t.free(a), Err(Error::Corrupt(_))),
        "twice in a section"
    );
    let b = t.alloc(20).unwrap();
    assert_ne!(a, b, "a block freed in a section is not reused by it");
    assert_eq!(t.block_len(a).unwrap(), 32, "still allocated until commit");
    t.free(big).unwrap();
    t.commit().unwrap();
    let mut t = r.lock(T).unwrap();
    assert!(matches!(t.free(a), Err(Error::Corrupt(_))), "already free");
    let u = t.check_heap().unwrap();
    assert_eq!(u.free_blocks, 2);
    assert_eq!(u.allocated_blocks, 1);
    assert_eq!(t.alloc(32).unwrap(), a, "reused from its class");
    assert_eq!(
        t.alloc((3 << 20) - 100).unwrap(),
        big,
        "large reused (within 2x)"
    );
    let c = t.alloc(100).unwrap();
    t.free(c).unwrap();
    t.free(b).unwrap();
    t.commit().unwrap();
    let t = r.lock(T).unwrap();
    let u = t.check_heap().unwrap();
    assert_eq!((u.allocated_blocks, u.free_blocks), (2, 2));
    assert_eq!(
        u.allocated_bytes,
        48 + (3 << 20) + 4096,
        "block lengths include headers"
    );
    assert_eq!(u.free_bytes, 48 + 128);
}

#[test]
fn shm_growth_across_the_mapping_boundary() {
    let r = Region::anonymous_with(Options {
        initial_size: HEAP_OFF + 4096,
        max_size: HEAP_OFF + (16 << 20),
    })
    .unwrap();
    let first = r.size();
    let mut offs = Vec::new();
    let mut t = r.lock(T).unwrap();
    for i in 0..100u64 {
        let b = t.alloc(40 * 1024).unwrap();
        t.init_u64(b, i).unwrap();
        t.init_u64(b + 40 * 1024 - 8, !i).unwrap();
        offs.push(b);
    }
    t.commit().unwrap();
    assert!(r.size() > first && r.size() <= r.max_size());
    assert_eq!(r.mapped(), r.size());
    let t = r.lock(T).unwrap();
    for (i, &b) in offs.iter().enumerate() {
        assert_eq!(t.get_u64(b).unwrap(), i as u64);
        assert_eq!(t.get_u64(b + 40 * 1024 - 8).unwrap(), !(i as u64));
    }
    t.check_heap().unwrap();
    drop(t);
    // Past the max: an error, and the section is intact.
    let mut t = r.lock(T).unwrap();
    let b = t.alloc(8).unwrap();
    assert!(matches!(t.alloc(32 << 20), Err(Error::RegionFull { .. })));
    t.init_u64(b, 1).unwrap();
    t.commit().unwrap();
    r.lock(T).unwrap().check_heap().unwrap();
}

// ---- the property test ---------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u64),
    SetU32(usize, u32),
    SetU8(usize, u8),
    SetBytes(usize, u8, u8),
    Alloc(u32),
    AllocLarge(u8),
    Free(usize),
    Init(usize, u64),
    Wake(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Op::Set(i, v)),
        (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Op::SetU32(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Op::SetU8(i, v)),
        (any::<usize>(), 1..64u8, any::<u8>()).prop_map(|(i, n, v)| Op::SetBytes(i, n, v)),
        (0..5000u32).prop_map(Op::Alloc),
        (1..4u8).prop_map(Op::AllocLarge),
        any::<usize>().prop_map(Op::Free),
        (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Op::Init(i, v)),
        any::<u64>().prop_map(Op::Wake),
    ]
}

/// Where a section may write: roots and the first 64 bytes of the blocks it knows.
fn targets(live: &[Off]) -> Vec<Off> {
    let mut t: Vec<Off> = (0..8).map(root).collect();
    t.extend(live.iter().flat_map(|&b| [b, b + 8]));
    t
}

/// Runs the first `n` of `ops` in `t`; `live` are the blocks allocated before (and not freed).
fn run(t: &mut Txn<'_>, ops: &[Op], live: &mut Vec<Off>) {
    let mut fresh: Vec<Off> = Vec::new();
    for op in ops {
        let tg = targets(live);
        match *op {
            Op::Set(i, v) => t.set_u64(tg[i % tg.len()], v).unwrap(),
            Op::SetU32(i, v) => t.set_u32(tg[i % tg.len()] + 4, v).unwrap(),
            Op::SetU8(i, v) => t.set_u8(tg[i % tg.len()] + 3, v).unwrap(),
            Op::SetBytes(i, n, v) => {
                let at = tg[i % tg.len()];
                let n = n.min(8);
                t.set_bytes(at, &vec![v; n as usize]).unwrap()
            }
            Op::Alloc(n) => {
                let b = t.alloc(n as u64 + 16).unwrap();
                t.init_u64(b, n as u64).unwrap();
                fresh.push(b);
                live.push(b);
            }
            Op::AllocLarge(p) => {
                let b = t.alloc(p as u64 * (1 << 20) + 100).unwrap();
                t.init_bytes(b, &[p; 64]).unwrap();
                fresh.push(b);
                live.push(b);
            }
            Op::Free(i) => {
                if !live.is_empty() {
                    let b = live.swap_remove(i % live.len());
                    t.free(b).unwrap();
                }
            }
            Op::Init(i, v) => {
                if !fresh.is_empty() {
                    let b = fresh[i % fresh.len()];
                    if live.contains(&b) {
                        t.init_u64(b + 8, v).unwrap();
                    }
                }
            }
            Op::Wake(k) => t.wake(k),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any prefix of a section, then a crash — a drop, or the thread ending with the mutex
    /// held (the kernel marks it owner-dead, as for a killed process) — leaves the region as it
    /// was before the section; the whole section committed leaves a consistent heap.
    #[test]
    fn shm_any_crash_point_rolls_back(
        setup in proptest::collection::vec(op(), 0..24),
        section in proptest::collection::vec(op(), 0..24),
    ) {
        let r = small();
        let mut live = Vec::new();
        let mut t = r.lock(T).unwrap();
        run(&mut t, &setup, &mut live);
        t.commit().unwrap();
        let before = snap(&r);
        for n in 0..=section.len() {
            for die in [false, true] {
                let mut l = live.clone();
                if die {
                    std::thread::scope(|s| {
                        s.spawn(|| {
                            let mut t = r.lock(T).unwrap();
                            run(&mut t, &section[..n], &mut l);
                            std::mem::forget(t);
                        });
                    });
                    let t = r.lock(T).unwrap();
                    prop_assert!(t.repaired());
                } else {
                    let mut t = r.lock(T).unwrap();
                    run(&mut t, &section[..n], &mut l);
                    drop(t);
                }
                prop_assert_eq!(&snap(&r), &before, "after {} of {} steps", n, section.len());
            }
        }
        let mut t = r.lock(T).unwrap();
        run(&mut t, &section, &mut live);
        t.commit().unwrap();
        let t = r.lock(T).unwrap();
        t.check_heap().unwrap();
        for &b in &live {
            prop_assert!(t.block_len(b).is_ok());
        }
    }
}

// ---- real processes killed inside a section -------------------------------------------------

const ENV_CHILD: &str = "MMXA_SHM_CHILD";

/// The section the crash children run (and die in), on a region prepared by `prepare`.
fn crash_section(r: &Region) -> Result<(), Error> {
    let mut t = r.lock(T)?;
    let x = t.get_u64(root(0))?;
    t.set_u64(root(1), 111)?;
    t.set_bytes(x, &[0xaa; 64])?;
    let y = t.alloc(100)?;
    t.init_bytes(y, &[0xbb; 100])?;
    t.set_u64(root(2), y)?;
    t.free(x)?;
    t.set_u64(root(0), 0)?;
    // Past the initial size: the region grows.
    let big = t.alloc(4 << 20)?;
    t.init_u64(big, 7)?;
    t.set_u64(root(3), big)?;
    t.commit()
}

fn prepare(path: &Path) -> Region {
    let r = Region::create_with(
        path,
        0o600,
        Options {
            initial_size: HEAP_OFF + (1 << 20),
            max_size: 1 << 30,
        },
    )
    .unwrap();
    let mut t = r.lock(T).unwrap();
    let x = t.alloc(64).unwrap();
    t.init_bytes(x, &[0x11; 64]).unwrap();
    t.set_u64(root(0), x).unwrap();
    t.commit().unwrap();
    r.publish(T).unwrap();
    r
}

/// Not a test by itself: the child's side of the crash tests (does nothing unless re-executed).
#[test]
fn shm_crash_child() {
    let Ok(path) = std::env::var(ENV_CHILD) else {
        return;
    };
    let r = Region::open(Path::new(&path)).unwrap();
    let code = match std::env::var("MMXA_SHM_ROLE").as_deref() {
        Ok("repair") => {
            let t = r.lock(T).unwrap();
            t.commit().unwrap();
            4
        }
        _ => {
            crash_section(&r).unwrap();
            3
        }
    };
    // Reaching here means the crash point was never hit.
    std::process::exit(code);
}

fn run_child(path: &Path, crash: &str, role: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shm::tests::shm_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, path)
        .env("MMXA_SHM_CRASH", crash)
        .env("MMXA_SHM_ROLE", role)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{crash}: {status}");
}

#[test]
fn shm_sigkill_at_each_point_inside_a_section() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    for crash in [
        "Journaled:1",
        "Written:1",
        "Journaled:2",
        "Written:2",
        "Allocated:1",
        "Written:6",
        "Growing:1",
        "Grown:1",
        "Allocated:2",
        "Freed:1",
        "Committed:1",
    ] {
        let path = dir.path().join(crash.replace(':', "-"));
        let r = prepare(&path);
        let before = snap(&r);
        let size_before = r.size();
        run_child(&path, crash, "section");
        let t = r.lock(T).unwrap();
        assert!(t.repaired(), "{crash}");
        t.check_heap().unwrap();
        if crash == "Committed:1" {
            // Died after the commit point: the section happened.
            assert_eq!(t.get_u64(root(1)).unwrap(), 111);
            assert_eq!(t.get_u64(root(0)).unwrap(), 0);
            let big = t.get_u64(root(3)).unwrap();
            assert_eq!(t.get_u64(big).unwrap(), 7);
            assert_eq!(t.usage().unwrap().free_blocks, 1);
            drop(t);
        } else {
            drop(t);
            assert_eq!(snap(&r), before, "{crash}");
            if crash.starts_with("Grow") || crash == "Allocated:2" || crash == "Freed:1" {
                // Growth is kept (harmless): the top went back down.
                assert!(r.size() > size_before || crash == "Growing:1", "{crash}");
            }
            // The parent can run the same section to the end.
            crash_section(&r).unwrap();
            r.lock(T).unwrap().check_heap().unwrap();
        }
    }
}

#[test]
fn shm_sigkill_of_the_repairer_is_repaired_again() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("r");
    let r = prepare(&path);
    let before = snap(&r);
    run_child(&path, "Written:6", "section");
    for n in [1, 3, 5] {
        // Each repairer dies after restoring n-1 entries; the next one starts over.
        run_child(&path, &format!("Repairing:{n}"), "repair");
    }
    let t = r.lock(T).unwrap();
    assert!(t.repaired());
    drop(t);
    assert_eq!(snap(&r), before);
}

#[test]
fn shm_handles_are_shared_between_threads_and_timeouts_saturate() {
    fn shared<T: Send + Sync>() {}
    shared::<Region>();
    shared::<LockFile>();
    let r = anon();
    r.lock(Duration::MAX).unwrap().commit().unwrap();
    let (t, ()) = r.wait_until(1, Duration::MAX, |_| Ok(Some(()))).unwrap();
    t.commit().unwrap();
}

#[test]
fn shm_lock_file_mode_is_exact_and_kept() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let path = dir.path().join("mmxa.lock");
    let a = LockFile::open(&path, 0o666).unwrap();
    let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(), 0o666, "whatever the umask");
    let b = LockFile::open(&path, 0o600).unwrap();
    assert_eq!(mode(), 0o666, "an existing file keeps its mode");
    // Two descriptions of one file: each is like another process.
    let r = anon();
    let sa = a.claim_slot(&r, T, |_, _| Ok(())).unwrap();
    let sb = b.claim_slot(&r, T, |_, _| Ok(())).unwrap();
    assert_eq!((sa.index, sb.index), (0, 1));
    assert!(a.claim_slot(&r, T, |_, _| Ok(())).is_err(), "one slot each");
    assert!(!a.is_dead(1).unwrap() && !b.is_dead(0).unwrap());
    drop(b); // closing the file drops its locks, like a death
    assert!(a.is_dead(1).unwrap());
    let t = r.lock(T).unwrap();
    let dead = a.dead_slots(&t).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].index, dead[0].pid), (1, std::process::id()));
    assert_eq!(slot_state(&t, 1).unwrap(), (std::process::id(), true, 1));
    let mut t = t;
    a.free_dead_slot(&mut t, &dead[0]).unwrap();
    t.commit().unwrap();
    let t = r.lock(T).unwrap();
    assert!(a.dead_slots(&t).unwrap().is_empty());
    drop(t);
    a.release_slot(&r, T).unwrap();
    assert_eq!(
        slot_state(&r.lock(T).unwrap(), 0).unwrap(),
        (std::process::id(), false, 1)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Garbage in the allocator's state, the slot table and the heap: every call answers
    /// (`Ok` or `Err`), none panics or faults.
    #[test]
    fn shm_garbage_in_the_region_is_never_a_crash(
        scribbles in proptest::collection::vec((0..8u8, any::<u64>(), any::<u64>()), 1..40),
        calls in proptest::collection::vec((0..6u8, any::<u64>()), 1..40),
    ) {
        let r = small();
        let mut t = r.lock(T).unwrap();
        let mut offs = Vec::new();
        for n in [16u64, 100, 5000, 3 << 20] {
            let b = t.alloc(n).unwrap();
            offs.push(b);
        }
        t.free(offs[1]).unwrap();
        t.commit().unwrap();
        let heap_top = r.lock(T).unwrap().usage().unwrap().top;
        for (kind, at, v) in scribbles {
            let off = match kind {
                0..=2 => ALLOC_OFF + (at % (ALLOC_AREA / 8)) * 8,
                3 => SLOTS_OFF + (at % (SLOTS as u64 * 2)) * 8,
                _ => (HEAP_OFF + at % (heap_top - HEAP_OFF)) & !7,
            };
            // A plausible value half the time: an offset near the heap, a small count.
            let v = match v % 4 {
                0 => HEAP_OFF + (v >> 8) % (heap_top - HEAP_OFF + 4096),
                1 => v % 64,
                _ => v,
            };
            r.map.u64_at(off).unwrap().store(v, std::sync::atomic::Ordering::Relaxed);
        }
        let lf_dir = tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700)).tempdir().unwrap();
        let lf = LockFile::open(&lf_dir.path().join("l"), 0o600).unwrap();
        for (call, x) in calls {
            let Ok(mut t) = r.lock(T) else { continue };
            let _ = match call {
                0 => t.alloc(x % (4 << 20)).map(drop),
                1 => t.free(offs[(x % 4) as usize]).map(drop),
                2 => t.free(x % (heap_top + 4096)).map(drop),
                3 => t.check_heap().map(drop),
                4 => lf.dead_slots(&t).map(drop),
                _ => t.block_len(x % (heap_top + 4096)).map(drop),
            };
            if x % 2 == 0 {
                let _ = t.commit();
            }
        }
    }
}
