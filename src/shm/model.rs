//! Model checks (loom: every interleaving, exhaustively) of the two protocols whose bugs would
//! only show as rare races:
//!
//! 1. The robust-mutex hand-off with a dying owner and the journal repair. A "process" is a
//!    loom thread whose memory effects stop after a budget of them (its later stores, wakes and
//!    unlock go nowhere), as if it were killed at that instruction; the kernel's part — marking
//!    the mutex owner-dead and waking a waiter — happens when it stops. The journal code is the
//!    real one ([`Journal::record`], [`Journal::rollback`], [`Journal::clear`] over [`Words`]);
//!    the mutex and memory are models. Checked: for every death point of the first owner and
//!    of the next (which may die while repairing), the data afterwards is exactly what the
//!    committed sections wrote, in lock order.
//! 2. The wait/wake protocol, with the real waiter loop ([`wait::wait_until`] over
//!    [`Waitable`]) against model futexes (wait compares and sleeps atomically, like the
//!    kernel's) and a releaser that may die at every step. A lost wake-up shows as a deadlock,
//!    which loom reports. The releaser's side and the repair mirror `Txn::commit` and
//!    `Region::enter`: bump under the mutex, wake before unlock only if the word's sleeper count
//!    says someone sleeps, repair wakes every word.
//!
//! The real primitives (pthread, futex syscalls) cannot run under loom; these models are what
//! the code above them assumes of them.

use super::journal::{Journal, Words};
use super::wait::{self, Waitable};
use super::Error;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::cell::Cell;

/// A robust mutex as the kernel and glibc make it: a dead owner's lock goes to the next
/// locker, who is told. (The flag is what the kernel's `FUTEX_OWNER_DIED` bit says.)
struct RobustMutex {
    owner_died: Mutex<bool>,
}

type Held<'a> = MutexGuard<'a, bool>;

impl RobustMutex {
    fn new() -> RobustMutex {
        RobustMutex {
            owner_died: Mutex::new(false),
        }
    }

    /// Locks; the flag says whether the previous owner died holding it.
    fn lock(&self) -> (Held<'_>, bool) {
        let mut g = self.owner_died.lock().unwrap();
        let died = std::mem::replace(&mut *g, false);
        (g, died)
    }
}

const WORDS: usize = 16;
const JOURNAL: Journal = Journal {
    len_off: 0,
    entries: 8,
    cap: 96,
};
const DATA: u64 = 104;

/// Model memory: the journal (length at 0, entries from 8) and data words from `DATA`.
struct Mem {
    words: Vec<AtomicU64>,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn get(&self, off: u64) -> u64 {
        self.words[(off / 8) as usize].load(Ordering::Relaxed)
    }
}

/// One process's view: effects beyond its budget are lost (it is dead).
struct Proc<'a> {
    mem: &'a Mem,
    budget: Cell<Option<u32>>,
    died: Cell<bool>,
}

impl<'a> Proc<'a> {
    fn new(mem: &'a Mem, budget: Option<u32>) -> Proc<'a> {
        Proc {
            mem,
            budget: Cell::new(budget),
            died: Cell::new(false),
        }
    }

    /// Whether the next effect happens.
    fn effect(&self) -> bool {
        match self.budget.get() {
            None => true,
            Some(0) => {
                self.died.set(true);
                false
            }
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }

    /// Ends the process's hold: unlock if alive, else the kernel marks the owner dead (and
    /// hands the lock on).
    fn leave(&self, mut held: Held<'_>) {
        if !self.effect() {
            *held = true;
        }
    }
}

impl Words for Proc<'_> {
    fn load(&self, off: u64) -> Result<u64, Error> {
        Ok(self.mem.get(off))
    }
    fn store(&self, off: u64, v: u64) -> Result<(), Error> {
        if self.effect() {
            self.mem.words[(off / 8) as usize].store(v, Ordering::Relaxed);
        }
        Ok(())
    }
    fn publish(&self, off: u64, v: u64) -> Result<(), Error> {
        if self.effect() {
            self.mem.words[(off / 8) as usize].store(v, Ordering::Release);
        }
        Ok(())
    }
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), Error> {
        for i in 0..len / 8 {
            let v = self.mem.get(src + 8 * i);
            self.store(dst + 8 * i, v)?;
        }
        Ok(())
    }
    fn journalable(&self, off: u64, len: u64) -> bool {
        off >= DATA && off % 8 == 0 && len % 8 == 0 && off + len <= (WORDS as u64) * 8
    }
}

/// Takes the mutex; repairs (the real rollback) after a dead owner.
fn enter<'m>(m: &'m RobustMutex, p: &Proc<'_>) -> Held<'m> {
    let (held, died) = m.lock();
    if died {
        JOURNAL.rollback(p).unwrap();
    }
    held
}

/// A section writing `writes` (journaled, as `Txn::write_u64`), then commit. Returns whether
/// it committed (the journal clear took effect); `log` gets its id at that moment.
fn section(
    m: &RobustMutex,
    p: &Proc<'_>,
    id: u8,
    writes: &[(u64, u64)],
    log: &std::sync::Mutex<Vec<u8>>,
) {
    let held = enter(m, p);
    let mut used = 0;
    for &(off, v) in writes {
        JOURNAL.record(p, &mut used, off, 8).unwrap();
        p.store(off, v).unwrap();
    }
    JOURNAL.clear(p).unwrap();
    if !p.died.get() {
        // Still under the mutex: the log's order is the lock order.
        log.lock().unwrap().push(id);
    }
    p.leave(held);
}

const A_WRITES: [(u64, u64); 3] = [(DATA, 1), (DATA + 8, 1), (DATA, 3)];
const B_WRITES: [(u64, u64); 2] = [(DATA + 8, 2), (DATA + 16, 2)];
/// Effects of A's section: 5 per write (entry off, len, old value, length; the write), the
/// clear, the unlock.
const A_EFFECTS: u32 = 5 * 3 + 2;
/// B may first repair A: up to 3 restores and the length; then 5 per write, clear, unlock.
const B_EFFECTS: u32 = 4 + 5 * 2 + 2;

fn handoff(a_budget: Option<u32>, b_budget: Option<u32>) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let mem = Arc::new(Mem::new());
        let m = Arc::new(RobustMutex::new());
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let spawn = |id: u8, budget: Option<u32>, writes: &'static [(u64, u64)]| {
            let (mem, m, log) = (mem.clone(), m.clone(), log.clone());
            loom::thread::spawn(move || {
                let p = Proc::new(&mem, budget);
                section(&m, &p, id, writes, &log);
            })
        };
        let ta = spawn(b'a', a_budget, &A_WRITES);
        let tb = spawn(b'b', b_budget, &B_WRITES);
        ta.join().unwrap();
        tb.join().unwrap();
        // A survivor takes the mutex (repairing if the last owner died) and looks.
        let p = Proc::new(&mem, None);
        let held = enter(&m, &p);
        let mut want = [0u64; 3];
        for id in log.lock().unwrap().iter() {
            let w: &[(u64, u64)] = if *id == b'a' { &A_WRITES } else { &B_WRITES };
            for &(off, v) in w {
                want[((off - DATA) / 8) as usize] = v;
            }
        }
        let got = [mem.get(DATA), mem.get(DATA + 8), mem.get(DATA + 16)];
        assert_eq!(got, want, "log {:?}", log.lock().unwrap());
        assert_eq!(mem.get(JOURNAL.len_off), 0);
        p.leave(held);
    });
}

#[test]
fn shm_model_dying_owner_handoff_and_repair() {
    // A dies at every step (or never); B lives.
    for a in (0..=A_EFFECTS).map(Some).chain([None]) {
        handoff(a, None);
    }
}

#[test]
fn shm_model_repairer_dies_too() {
    // A dies in the middle of its section; B dies at every step, repair included.
    for a in [Some(3), Some(9), Some(14)] {
        for b in 0..=B_EFFECTS {
            handoff(a, Some(b));
        }
    }
}

/// Shared state of the wait/wake model.
struct WaitWorld {
    m: RobustMutex,
    mem: Mem,
    word: AtomicU32,
    sleepers: AtomicU32,
    futex: Mutex<()>,
    cv: Condvar,
}

impl WaitWorld {
    /// FUTEX_WAIT: sleeps only if the word still holds `seen`, atomically with going to sleep.
    fn futex_wait(&self, seen: u32) {
        let g = self.futex.lock().unwrap();
        if self.word.load(Ordering::Acquire) == seen {
            drop(self.cv.wait(g).unwrap());
        }
    }

    fn futex_wake(&self) {
        let _g = self.futex.lock().unwrap();
        self.cv.notify_all();
    }

    /// `Region::enter`: lock, and after a dead owner roll back and wake every word.
    fn enter(&self, p: &Proc<'_>) -> Held<'_> {
        let (held, died) = self.m.lock();
        if died {
            JOURNAL.rollback(p).unwrap();
            self.futex_wake();
        }
        held
    }
}

struct Waiter<'a> {
    w: &'a WaitWorld,
    p: Proc<'a>,
}

impl<'a> Waitable for Waiter<'a> {
    type Held = Held<'a>;
    fn enter(&self) -> Result<Held<'a>, Error> {
        Ok(self.w.enter(&self.p))
    }
    fn leave(&self, held: Held<'a>) -> Result<(), Error> {
        self.p.leave(held);
        Ok(())
    }
    fn word(&self, _: &Held<'a>) -> u32 {
        self.w.sleepers.fetch_add(1, Ordering::Relaxed);
        self.w.word.load(Ordering::Acquire)
    }
    fn sleep(&self, seen: u32) -> Result<bool, Error> {
        self.w.futex_wait(seen);
        Ok(true)
    }
    fn awake(&self) {
        self.w.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}

const FLAG: u64 = DATA;

/// A releaser: sets the flag (unless set) journaled, bumps the word, commits, wakes, unlocks —
/// in `Txn::commit`'s order. Each step is an effect a death can cut.
fn release(w: &WaitWorld, p: &Proc<'_>) {
    let held = w.enter(p);
    if w.mem.get(FLAG) == 0 {
        let mut used = 0;
        JOURNAL.record(p, &mut used, FLAG, 8).unwrap();
        p.store(FLAG, 1).unwrap();
        if p.effect() {
            w.word.fetch_add(1, Ordering::Release);
        }
        JOURNAL.clear(p).unwrap();
        if p.effect() && w.sleepers.load(Ordering::Relaxed) != 0 {
            w.futex_wake();
        }
    }
    p.leave(held);
}

/// Effects of a releaser: 4 (record) + 1 (flag) + bump + clear + wake + unlock.
const R_EFFECTS: u32 = 9;

#[test]
fn shm_model_no_lost_wake_up() {
    // One releaser that may die at every step, then one that lives: the waiter must see the
    // flag (a deadlock — the waiter asleep forever — fails the model).
    for r1 in (0..=R_EFFECTS).map(Some).chain([None]) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let world = Arc::new(WaitWorld {
                m: RobustMutex::new(),
                mem: Mem::new(),
                word: AtomicU32::new(0),
                sleepers: AtomicU32::new(0),
                futex: Mutex::new(()),
                cv: Condvar::new(),
            });
            let w1 = world.clone();
            let waiter = loom::thread::spawn(move || {
                let me = Waiter {
                    w: &w1,
                    p: Proc::new(&w1.mem, None),
                };
                let (held, v) =
                    wait::wait_until(&me, |_| Ok((w1.mem.get(FLAG) == 1).then_some(1))).unwrap();
                me.leave(held).unwrap();
                v
            });
            let w2 = world.clone();
            let dying = loom::thread::spawn(move || release(&w2, &Proc::new(&w2.mem, r1)));
            let w3 = world.clone();
            let second = loom::thread::spawn(move || release(&w3, &Proc::new(&w3.mem, None)));
            dying.join().unwrap();
            second.join().unwrap();
            assert_eq!(waiter.join().unwrap(), 1);
        });
    }
}
