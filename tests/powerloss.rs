//! Power loss and I/O faults, through the real `Rm` with its log on the simulated disk
//! `mmxa::log::sim::SimDisk`, which keeps live and durable bytes apart.
//!
//! - `power_cut_images_recover_what_was_acknowledged`: a scripted, seeded workload (local writes
//!   and deletes, prepares, two-phase and one-phase commits, rollbacks of prepared and working
//!   branches, read-only prepares, heuristic outcomes and forgets, reclaim steps explicit and
//!   automatic, clean reopens and mid-run power cuts) on 8 KiB segments, with a snapshot before
//!   every durability event and after every operation. Every snapshot is turned into images:
//!   synced bytes only; every in-order prefix of the unsynced writes with the next one torn at
//!   several bytes; each unsynced write alone and all but each one (writes out of order, e.g. a
//!   record header without its payload); subsets of the dirty pages (reordered write-back);
//!   removed files that survive or not. Every image is recovered and must match the model:
//!   - after an operation returned, exactly the acknowledged state;
//!   - during an operation, the state before it or the state after it (a record synced but not
//!     yet acknowledged may be there; a torn record or a write set without its deciding record
//!     never); and once a synced-only image shows the new state, every later one in the same
//!     operation does (durability does not go back);
//!   - "the state" is the committed value of every key, the in-doubt XIDs `xa_recover` lists,
//!     and, after committing every prepared branch, the committed values again (so a prepared
//!     branch's write set is checked too).
//!
//!   Every seventh image is recovered with its own snapshots taken, and each of those
//!   (power lost during recovery) is recovered again: the result must not change.
//!   `MMXA_POWERLOSS_SEED` replays a seed; `MMXA_POWERLOSS_OPS` lengthens the run.
//! - `*_fault_*`: `EIO` and `ENOSPC` on writes, syncs, segment creation, removal and the
//!   directory sync, at each XA call and data call that can meet them: the code returned, that a
//!   failed sync fails the store until it is reopened (never a later success), that other faults
//!   leave it working once they clear, and that a reopen recovers everything acknowledged (an
//!   operation whose outcome the caller was not told may have happened or not).
//! - `full_disk_through_the_c_entry_points`: the same answers to a real full disk (a small
//!   tmpfs; skipped, with a message, where mounting is not permitted), through `mmxa_switch`
//!   and the `mmxa_*` data API as a monitor calls them.

mod ffi_common;
mod rng;

use mmxa::config::{Config, SyncMode};
use mmxa::error::{Error, Outcome, XaOk};
use mmxa::log::put_value_offset;
use mmxa::log::sim::{Cut, Fault, Op, SimDisk, Snapshot};
use mmxa::rm::flags::{EndMode, Scan, StartMode};
use mmxa::rm::Rm;
use mmxa::status::*;
use mmxa::xa::*;
use mmxa::xid::Xid;
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

type SimRm = Rm<SimDisk>;
type Key = Vec<u8>;
type Writes = BTreeMap<Key, Option<Vec<u8>>>;

const SEG: u64 = 8 << 10;
const KEYS: usize = 24;
/// The thread of control of every call.
const TOC: u64 = 1;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn config(segment_size: u64) -> Config {
    let mut cfg = Config::new("/sim");
    cfg.segment_size = segment_size;
    cfg.sync = SyncMode::Msync;
    cfg.lock_timeout = Duration::ZERO;
    cfg
}

fn open(disk: &SimDisk, segment_size: u64) -> Result<SimRm, String> {
    Rm::open_on(config(segment_size), disk.clone())
}

fn xid(g: &[u8]) -> Xid {
    Xid::from_parts(7, g, b"b").expect("valid XID")
}

fn key(i: usize) -> Key {
    format!("k{i:02}").into_bytes()
}

fn code<T: XaOk>(r: Result<T, Error>) -> i32 {
    r.map_or_else(|e| e.xa_code(), |v| v.xa_code())
}

fn dcode<T>(r: &Result<T, Error>) -> i32 {
    match r {
        Ok(_) => MMXA_OK,
        Err(e) => e.mmxa_code(),
    }
}

/// Both names of a code: XA and `MMXA_*` codes share values.
fn name(c: i32) -> String {
    let names: Vec<&str> = [mmxa::xa::code_name(c), mmxa::status::code_name(c)]
        .into_iter()
        .flatten()
        .collect();
    format!("{} ({c})", names.join("/"))
}

#[track_caller]
fn want(got: i32, expected: i32, what: &str) {
    assert_eq!(
        got,
        expected,
        "{what}: got {}, expected {}",
        name(got),
        name(expected)
    );
}

/// What the store must hold: committed values, prepared branches with their writes, and
/// heuristically completed branches (by gtrid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    committed: BTreeMap<Key, Vec<u8>>,
    prepared: BTreeMap<Vec<u8>, Writes>,
    heuristic: BTreeSet<Vec<u8>>,
}

impl Model {
    fn apply(&mut self, writes: &Writes) {
        for (k, v) in writes {
            match v {
                Some(v) => self.committed.insert(k.clone(), v.clone()),
                None => self.committed.remove(k),
            };
        }
    }

    fn locked(&self) -> BTreeSet<Key> {
        self.prepared
            .values()
            .flat_map(|w| w.keys().cloned())
            .collect()
    }

    /// What recovery must show: committed values, listed gtrids, and committed values once
    /// every prepared branch is committed.
    fn view(&self) -> View {
        let mut resolved = self.clone();
        for w in self.prepared.values() {
            resolved.apply(w);
        }
        View {
            committed: self.committed.clone(),
            in_doubt: self
                .prepared
                .keys()
                .chain(&self.heuristic)
                .cloned()
                .collect(),
            resolved: resolved.committed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    committed: BTreeMap<Key, Vec<u8>>,
    in_doubt: BTreeSet<Vec<u8>>,
    resolved: BTreeMap<Key, Vec<u8>>,
}

/// Keys of the fault tests' stores (the workload uses `key(0..KEYS)`).
const STORE_KEYS: [&[u8]; 9] = [
    b"c1", b"c2", b"pa-k", b"ph-k", b"w-k", b"x-k", b"o-k", b"bp-k", b"fill",
];

fn committed(rm: &SimRm) -> BTreeMap<Key, Vec<u8>> {
    let mut out = BTreeMap::new();
    let keys = (0..KEYS)
        .map(key)
        .chain(STORE_KEYS.iter().map(|k| k.to_vec()));
    for k in keys {
        if let Some(v) = rm.get(99, &k).expect("get") {
            out.insert(k, v);
        }
    }
    out
}

fn in_doubt(rm: &SimRm) -> Result<Vec<Xid>, Error> {
    rm.recover(
        99,
        Scan {
            start: true,
            end: true,
        },
        1000,
    )
}

/// Reads what an opened store holds; `resolve` then commits its prepared branches and
/// forgets its heuristic ones to read the prepared writes too.
fn observe(rm: &SimRm, resolve: bool) -> View {
    let committed_now = committed(rm);
    let listed = in_doubt(rm).expect("xa_recover");
    let in_doubt = listed.iter().map(|x| x.gtrid().to_vec()).collect();
    let mut resolved = BTreeMap::new();
    if resolve {
        for x in &listed {
            match code(rm.commit(99, x, false)) {
                XA_OK => {}
                XA_HEURCOM | XA_HEURRB => want(code(rm.forget(99, x)), XA_OK, "xa_forget"),
                c => panic!("commit of recovered {x}: {}", name(c)),
            }
        }
        resolved = committed(rm);
    }
    View {
        committed: committed_now,
        in_doubt,
        resolved,
    }
}

// ---- power cuts ------------------------------------------------------------------------

/// An operation of the workload: what it was, and the states an image taken while it ran
/// may show (the first before it, the last after it).
struct Step {
    what: String,
    states: Vec<Model>,
}

/// A snapshot and where it was taken: during step `step`, or after it (`exact`).
struct Taken {
    snap: Snapshot,
    step: usize,
    exact: bool,
}

struct Workload {
    rng: Rng,
    disk: SimDisk,
    rm: Option<SimRm>,
    model: Model,
    steps: Vec<Step>,
    taken: Vec<Taken>,
    next_id: u64,
    /// A branch left idle across operations: its gtrid and writes (rolled back by a reopen).
    working: Option<(Vec<u8>, Writes)>,
    versions: u64,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        let disk = SimDisk::new();
        disk.record(true);
        let rm = open(&disk, SEG).expect("open an empty store");
        let mut w = Workload {
            rng: Rng::new(seed),
            disk,
            rm: Some(rm),
            model: Model::default(),
            steps: Vec::new(),
            taken: Vec::new(),
            next_id: 0,
            working: None,
            versions: 0,
        };
        w.collect(None);
        w
    }

    fn rm(&self) -> &SimRm {
        self.rm.as_ref().expect("open")
    }

    /// Moves the disk's snapshots into `taken`: those of step `step`, the last one exact.
    fn collect(&mut self, step: Option<usize>) {
        self.disk.capture("after the step");
        let snaps = self.disk.take_snapshots();
        let n = snaps.len();
        for (i, snap) in snaps.into_iter().enumerate() {
            let step = step.unwrap_or(usize::MAX);
            self.taken.push(Taken {
                snap,
                step,
                exact: i + 1 == n,
            });
        }
    }

    fn value(&mut self, k: &[u8]) -> Vec<u8> {
        self.versions += 1;
        let len = 1 + self.rng.below(300) as usize;
        let head = format!("{}={}:", String::from_utf8_lossy(k), self.versions);
        head.bytes()
            .chain(std::iter::repeat(b'.'))
            .take(len.max(head.len()))
            .collect()
    }

    fn free_keys(&mut self, n: usize) -> Vec<Key> {
        let mut locked = self.model.locked();
        if let Some((_, w)) = &self.working {
            locked.extend(w.keys().cloned());
        }
        let mut free: Vec<Key> = (0..KEYS).map(key).filter(|k| !locked.contains(k)).collect();
        let mut out = Vec::new();
        while out.len() < n && !free.is_empty() {
            let i = self.rng.below(free.len() as u64) as usize;
            out.push(free.swap_remove(i));
        }
        out
    }

    fn gtrid(&mut self, kind: &str) -> Vec<u8> {
        self.next_id += 1;
        format!("{kind}-{}", self.next_id).into_bytes()
    }

    /// Starts a branch and writes 1 to 3 free keys (a delete now and then).
    fn branch(&mut self, g: &[u8]) -> Writes {
        let x = xid(g);
        want(
            code(self.rm().start(TOC, &x, StartMode::New)),
            XA_OK,
            "xa_start",
        );
        let mut writes = Writes::new();
        let n = 1 + self.rng.below(3) as usize;
        for k in self.free_keys(n) {
            let v = if self.rng.below(6) == 0 {
                None
            } else {
                Some(self.value(&k))
            };
            self.rm().put(TOC, &k, v.as_deref()).expect("branch write");
            writes.insert(k, v);
        }
        want(
            code(self.rm().end(TOC, &x, EndMode::Success)),
            XA_OK,
            "xa_end",
        );
        writes
    }

    fn local_write(&mut self) -> bool {
        let Some(k) = self.free_keys(1).pop() else {
            return false;
        };
        let v = if self.rng.below(5) == 0 && self.model.committed.contains_key(&k) {
            None
        } else {
            Some(self.value(&k))
        };
        self.rm().put(TOC, &k, v.as_deref()).expect("local write");
        self.model.apply(&Writes::from([(k, v)]));
        true
    }

    fn pick(&mut self, of: Vec<Vec<u8>>) -> Option<Vec<u8>> {
        if of.is_empty() {
            return None;
        }
        let i = self.rng.below(of.len() as u64) as usize;
        Some(of[i].clone())
    }

    /// Runs one randomly chosen operation; returns what it was, or `None` if it had nothing
    /// to work on. Intermediate states an image may show are pushed to `mid`.
    fn op(&mut self, mid: &mut Vec<Model>) -> Option<String> {
        let prepared: Vec<Vec<u8>> = self.model.prepared.keys().cloned().collect();
        let heuristic: Vec<Vec<u8>> = self.model.heuristic.iter().cloned().collect();
        match self.rng.below(100) {
            0..=24 => self.local_write().then(|| "local write".into()),
            25..=39 => {
                let g = self.gtrid("p");
                let writes = self.branch(&g);
                want(code(self.rm().prepare(TOC, &xid(&g))), XA_OK, "xa_prepare");
                self.model.prepared.insert(g, writes);
                Some("prepare".into())
            }
            40..=54 => {
                let g = self.pick(prepared)?;
                want(
                    code(self.rm().commit(TOC, &xid(&g), false)),
                    XA_OK,
                    "xa_commit",
                );
                let writes = self.model.prepared.remove(&g).expect("prepared");
                self.model.apply(&writes);
                Some("commit".into())
            }
            55..=61 => {
                let g = self.pick(prepared)?;
                want(
                    code(self.rm().rollback(TOC, &xid(&g))),
                    XA_OK,
                    "xa_rollback",
                );
                self.model.prepared.remove(&g);
                Some("rollback prepared".into())
            }
            62..=73 => {
                let g = self.gtrid("o");
                let writes = self.branch(&g);
                want(
                    code(self.rm().commit(TOC, &xid(&g), true)),
                    XA_OK,
                    "xa_commit(1PC)",
                );
                self.model.apply(&writes);
                Some("one-phase commit".into())
            }
            74..=79 => match self.working.take() {
                None => {
                    let g = self.gtrid("w");
                    let writes = self.branch(&g);
                    self.working = Some((g, writes));
                    Some("working branch left idle".into())
                }
                Some((g, writes)) if self.rng.below(2) == 0 => {
                    want(code(self.rm().prepare(TOC, &xid(&g))), XA_OK, "xa_prepare");
                    self.model.prepared.insert(g, writes);
                    Some("prepare of the idle branch".into())
                }
                Some((g, _)) => {
                    want(
                        code(self.rm().rollback(TOC, &xid(&g))),
                        XA_OK,
                        "xa_rollback",
                    );
                    Some("rollback of the idle branch".into())
                }
            },
            80..=81 => {
                let g = self.gtrid("r");
                let x = xid(&g);
                want(
                    code(self.rm().start(TOC, &x, StartMode::New)),
                    XA_OK,
                    "xa_start",
                );
                want(
                    code(self.rm().end(TOC, &x, EndMode::Success)),
                    XA_OK,
                    "xa_end",
                );
                want(
                    code(self.rm().prepare(TOC, &x)),
                    XA_RDONLY,
                    "read-only xa_prepare",
                );
                Some("read-only prepare".into())
            }
            82..=85 => {
                let g = self.pick(prepared)?;
                let outcome = if self.rng.below(2) == 0 {
                    XA_HEURCOM
                } else {
                    XA_HEURRB
                };
                self.rm()
                    .heuristic(
                        &xid(&g),
                        Outcome::from_log(outcome).expect("outcome"),
                        "operator",
                    )
                    .expect("heuristic");
                let writes = self.model.prepared.remove(&g).expect("prepared");
                if outcome == XA_HEURCOM {
                    self.model.apply(&writes);
                }
                self.model.heuristic.insert(g);
                Some("heuristic".into())
            }
            86..=88 => {
                // FORGET is not synced by itself: a synced write follows in the same step.
                let g = self.pick(heuristic)?;
                want(code(self.rm().forget(TOC, &xid(&g))), XA_OK, "xa_forget");
                self.model.heuristic.remove(&g);
                mid.push(self.model.clone());
                self.local_write();
                Some("forget, then a local write".into())
            }
            89..=93 => {
                let step = self.rm().compact_step();
                Some(format!("reclaim step: {step:?}"))
            }
            94..=96 => {
                // Often with unsynced writes in the log, which the reopen replays.
                if self.working.is_none() && self.rng.below(2) == 0 {
                    let g = self.gtrid("w");
                    self.branch(&g);
                }
                self.working = None;
                self.rm = None;
                self.rm = Some(open(&self.disk, SEG).expect("clean reopen"));
                Some("clean reopen".into())
            }
            _ => {
                // Power cut now, keeping a random part of what is unsynced; go on from there.
                let snap = self.disk.snapshot();
                let cut = random_cut(&mut self.rng, &snap);
                self.working = None;
                self.rm = None;
                self.disk = snap.image(&cut, self.rng.below(2) == 0);
                self.disk.record(true);
                self.rm = Some(open(&self.disk, SEG).expect("reopen after a power cut"));
                assert_eq!(observe(self.rm(), false), {
                    let mut v = self.model.view();
                    v.resolved.clear();
                    v
                });
                Some(format!("power cut ({cut:?}) and reopen"))
            }
        }
    }

    fn run(&mut self, ops: usize) {
        while self.steps.len() < ops {
            let before = self.model.clone();
            let mut mid = Vec::new();
            let Some(what) = self.op(&mut mid) else {
                // Nothing to work on: the snapshots (none) belong to no step.
                continue;
            };
            let mut states = vec![before];
            states.extend(mid);
            states.push(self.model.clone());
            self.steps.push(Step { what, states });
            self.collect(Some(self.steps.len() - 1));
        }
    }
}

fn random_cut(rng: &mut Rng, snap: &Snapshot) -> Cut {
    let writes = snap.writes();
    let pages = snap.dirty_pages().len();
    match rng.below(3) {
        1 if !writes.is_empty() => {
            let k = rng.below(writes.len() as u64) as usize;
            Cut::Torn {
                writes: k,
                torn: rng.below(writes[k] as u64) as usize,
            }
        }
        2 if pages > 0 => Cut::Pages((0..pages).filter(|_| rng.below(2) == 0).collect()),
        _ => Cut::Synced,
    }
}

/// The cuts to try at a snapshot: synced only; every in-order prefix of the unsynced writes
/// with the next one torn at a few bytes (inside a record header and around the middle and the
/// end of the write); everything; each write alone and all but each one; and subsets of the
/// dirty pages.
fn cuts(snap: &Snapshot) -> Vec<Cut> {
    let writes = snap.writes();
    let mut out = vec![Cut::Synced];
    for (k, &len) in writes.iter().enumerate() {
        let mut at: BTreeSet<usize> = [1, 4, 8, 9, 16, 23, len / 2, len - 1].into();
        at.retain(|&t| t > 0 && t < len);
        out.extend(at.into_iter().map(|torn| Cut::Torn { writes: k, torn }));
    }
    if !writes.is_empty() {
        out.push(Cut::Torn {
            writes: writes.len(),
            torn: 0,
        });
    }
    if (2..=16).contains(&writes.len()) {
        // Out of order: each write alone, and all but each one.
        for i in 0..writes.len() {
            out.push(Cut::Writes(vec![i]));
            out.push(Cut::Writes((0..writes.len()).filter(|&j| j != i).collect()));
        }
    }
    let pages = snap.dirty_pages().len();
    if (2..=3).contains(&pages) {
        // Every proper, non-empty subset.
        for mask in 1..(1usize << pages) - 1 {
            out.push(Cut::Pages(
                (0..pages).filter(|i| mask & (1 << i) != 0).collect(),
            ));
        }
    } else if pages > 3 {
        for i in 0..pages {
            out.push(Cut::Pages(vec![i]));
            out.push(Cut::Pages((0..pages).filter(|&j| j != i).collect()));
        }
    }
    out
}

#[derive(Default)]
struct Counts {
    snapshots: usize,
    images: usize,
    nested: usize,
    by_cut: BTreeMap<&'static str, usize>,
}

/// Recovers `image`; with `nested`, also every image a power cut during that recovery could
/// leave, which must recover to the same view. Returns the view (with resolution).
fn recover(image: &SimDisk, nested: bool, counts: &mut Counts, ctx: &str) -> View {
    image.record(nested);
    let rm = open(image, SEG).unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
    image.record(false);
    let first = observe(&rm, false);
    if nested {
        for snap in image.take_snapshots() {
            let everything = Cut::Torn {
                writes: snap.writes().len(),
                torn: 0,
            };
            for cut in [Cut::Synced, everything] {
                let again = open(&snap.image(&cut, true), SEG).unwrap_or_else(|e| {
                    panic!(
                        "{ctx}: recovery after a cut during recovery ({}): {e}",
                        snap.what()
                    )
                });
                counts.nested += 1;
                assert_eq!(
                    observe(&again, false),
                    first,
                    "{ctx}: power cut during recovery ({}, {cut:?}) changed the outcome",
                    snap.what()
                );
            }
        }
    }
    observe(&rm, true)
}

#[test]
fn power_cut_images_recover_what_was_acknowledged() {
    let seed = env_u64("MMXA_POWERLOSS_SEED", 0x5eed_d15c);
    let ops = env_u64("MMXA_POWERLOSS_OPS", 300) as usize;
    eprintln!("power_cut_images: seed {seed} (MMXA_POWERLOSS_SEED to replay), {ops} operations");
    let started = Instant::now();
    let mut w = Workload::new(seed);
    w.run(ops);
    let workload_time = started.elapsed();
    let mut counts = Counts::default();
    // Per step: whether a synced-only image already showed the state after it.
    let mut durable_seen: BTreeMap<usize, bool> = BTreeMap::new();
    let taken = std::mem::take(&mut w.taken);
    for (n, t) in taken.iter().enumerate() {
        counts.snapshots += 1;
        let (states, what) = match w.steps.get(t.step) {
            Some(s) if t.exact => (&s.states[s.states.len() - 1..], s.what.as_str()),
            Some(s) => (&s.states[..], s.what.as_str()),
            None => (&[Model::default()][..], "open of the empty store"),
        };
        let views: Vec<View> = states.iter().map(Model::view).collect();
        for (c, cut) in cuts(&t.snap).into_iter().enumerate() {
            for keep_removed in [true, false] {
                if !keep_removed && !t.snap.has_removed() {
                    continue;
                }
                let ctx = format!(
                    "snapshot {n} (step {} \"{what}\", before \"{}\"), cut {cut:?}, removed \
                     files kept: {keep_removed}",
                    t.step,
                    t.snap.what()
                );
                let nested = (counts.images + c) % 7 == 0;
                let got = recover(&t.snap.image(&cut, keep_removed), nested, &mut counts, &ctx);
                counts.images += 1;
                *counts
                    .by_cut
                    .entry(match cut {
                        Cut::Synced => "synced only",
                        Cut::Torn { .. } => "torn prefix",
                        Cut::Writes(_) => "write subset",
                        Cut::Pages(_) => "page subset",
                    })
                    .or_default() += 1;
                let Some(i) = views.iter().position(|v| *v == got) else {
                    panic!(
                        "{ctx}: recovered state matches none allowed\n got: {got:?}\n allowed: \
                         {views:#?}"
                    );
                };
                if cut == Cut::Synced && keep_removed && views.len() > 1 {
                    let seen = durable_seen.entry(t.step).or_default();
                    let newest = i == views.len() - 1 && views[0] != views[i];
                    assert!(
                        !*seen || views[i] == views[views.len() - 1],
                        "{ctx}: a synced-only image lost the new state an earlier one showed"
                    );
                    *seen |= newest;
                }
            }
        }
    }
    let kinds: BTreeMap<&str, usize> = w.steps.iter().fold(BTreeMap::new(), |mut m, s| {
        let k = s.what.split([' ', '(', ':']).next().unwrap_or("");
        *m.entry(k).or_default() += 1;
        m
    });
    eprintln!(
        "power_cut_images: {} steps {kinds:?}; {} snapshots; {} images recovered {:?}, plus {} \
         cut during their own recovery; workload {:.2?}, total {:.2?}",
        w.steps.len(),
        counts.snapshots,
        counts.images,
        counts.by_cut,
        counts.nested,
        workload_time,
        started.elapsed()
    );
    assert!(counts.images > 1000, "too few images: {}", counts.images);
}

// ---- I/O faults ------------------------------------------------------------------------

/// Segment size of the fault tests: large enough that nothing rolls or reclaims by itself.
const FSEG: u64 = 64 << 10;

/// A store on a simulated disk with acknowledged state and its model.
struct Store {
    disk: SimDisk,
    rm: SimRm,
    model: Model,
}

impl Store {
    /// Two committed keys, a prepared branch `pa`, a heuristically committed branch `ph`, and
    /// an idle working branch `w` (its write unsynced) that recovery must roll back.
    fn new() -> Store {
        let disk = SimDisk::new();
        let rm = open(&disk, FSEG).expect("open");
        let mut s = Store {
            disk,
            rm,
            model: Model::default(),
        };
        s.local(b"c1", b"committed one");
        s.local(b"c2", b"committed two");
        s.prepared(b"pa", &[(b"pa-k", b"prepared a")]);
        s.prepared(b"ph", &[(b"ph-k", b"prepared, then heuristic")]);
        s.rm.heuristic(&xid(b"ph"), Outcome::Commit, "operator")
            .unwrap();
        let w = s.model.prepared.remove(b"ph".as_slice()).unwrap();
        s.model.apply(&w);
        s.model.heuristic.insert(b"ph".to_vec());
        s.idle(b"w", &[(b"w-k", b"never prepared")]);
        s
    }

    fn local(&mut self, k: &[u8], v: &[u8]) {
        want(dcode(&self.rm.put(TOC, k, Some(v))), MMXA_OK, "local write");
        self.model
            .apply(&Writes::from([(k.to_vec(), Some(v.to_vec()))]));
    }

    /// Starts `g`, writes, ends: an idle branch with logged writes.
    fn idle(&mut self, g: &[u8], writes: &[(&[u8], &[u8])]) -> Writes {
        let x = xid(g);
        want(
            code(self.rm.start(TOC, &x, StartMode::New)),
            XA_OK,
            "xa_start",
        );
        for (k, v) in writes {
            want(
                dcode(&self.rm.put(TOC, k, Some(v))),
                MMXA_OK,
                "branch write",
            );
        }
        want(
            code(self.rm.end(TOC, &x, EndMode::Success)),
            XA_OK,
            "xa_end",
        );
        writes
            .iter()
            .map(|(k, v)| (k.to_vec(), Some(v.to_vec())))
            .collect()
    }

    fn prepared(&mut self, g: &[u8], writes: &[(&[u8], &[u8])]) {
        let w = self.idle(g, writes);
        want(code(self.rm.prepare(TOC, &xid(g))), XA_OK, "xa_prepare");
        self.model.prepared.insert(g.to_vec(), w);
    }

    /// Local writes until the tail segment has exactly `leave` bytes after its last record
    /// (8-aligned, at least 24, the room a SEGMENT_END needs).
    fn fill_to(&mut self, leave: u64) {
        let record = |t: u64| vec![b'f'; (t - put_value_offset(4)) as usize];
        for _ in 0..100 {
            let room = self.disk.room();
            let d = room.saturating_sub(leave);
            let t = match d {
                0 if room == leave => return,
                96.. => d - 48,
                48..=95 => d,
                // Cannot leave exactly `leave` here: fill the segment so the next one is used.
                _ => room.max(48),
            };
            self.local(b"fill", &record(t));
        }
        panic!("could not fill the segment to {leave} bytes");
    }

    /// The store after a power cut now (synced bytes only) and after a clean close (every
    /// written byte): each must recover to one of `allowed`.
    fn check_recovery(&self, allowed: &[&Model], ctx: &str) {
        let snap = self.disk.snapshot();
        let views: Vec<View> = allowed.iter().map(|m| m.view()).collect();
        let everything = Cut::Torn {
            writes: snap.writes().len(),
            torn: 0,
        };
        for (cut, keep_removed, what) in [
            (Cut::Synced, true, "power cut"),
            (everything, false, "clean close"),
        ] {
            let rm = open(&snap.image(&cut, keep_removed), FSEG)
                .unwrap_or_else(|e| panic!("{ctx}: reopen after a {what}: {e}"));
            let got = observe(&rm, true);
            assert!(
                views.contains(&got),
                "{ctx}: after a {what} the store recovered to none of the allowed states\n got: \
                 {got:?}\n allowed: {views:#?}"
            );
        }
    }

    /// Reopens the store on its disk (after a failure, as `xa_open` again does).
    fn reopen(&mut self) {
        self.rm = open(&self.disk, FSEG).expect("reopen");
    }
}

/// An XA or data call under test, set up so that it writes a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `xa_prepare` of a new branch.
    Prepare,
    /// `xa_commit` of the prepared branch `pa`.
    Commit,
    /// `xa_commit(TMONEPHASE)` of a new branch.
    OnePhase,
    /// `xa_rollback` of the prepared branch `pa`.
    RollbackPrepared,
    /// `Rm::heuristic(XA_HEURCOM)` of `pa`.
    Heuristic,
    /// `mmxa_put` outside any branch.
    LocalPut,
    /// `mmxa_delete` outside any branch.
    LocalDelete,
    /// `mmxa_put` in an active branch (not synced).
    BranchPut,
}

const CALLS: [Call; 8] = [
    Call::Prepare,
    Call::Commit,
    Call::OnePhase,
    Call::RollbackPrepared,
    Call::Heuristic,
    Call::LocalPut,
    Call::LocalDelete,
    Call::BranchPut,
];

/// Sets `call` up, runs `arm`, makes the call. Returns its code (`MMXA_*` for data calls) and
/// the model had it succeeded.
fn make_call(s: &mut Store, call: Call, arm: impl FnOnce(&SimDisk)) -> (i32, Model) {
    let mut after = s.model.clone();
    let pa = xid(b"pa");
    let c = match call {
        Call::Prepare => {
            let w = s.idle(b"x", &[(b"x-k", b"prepared under a fault")]);
            after.prepared.insert(b"x".to_vec(), w);
            arm(&s.disk);
            code(s.rm.prepare(TOC, &xid(b"x")))
        }
        Call::Commit | Call::Heuristic => {
            let w = after.prepared.remove(b"pa".as_slice()).unwrap();
            after.apply(&w);
            arm(&s.disk);
            if call == Call::Commit {
                code(s.rm.commit(TOC, &pa, false))
            } else {
                after.heuristic.insert(b"pa".to_vec());
                match s.rm.heuristic(&pa, Outcome::Commit, "operator") {
                    Ok(()) => XA_OK,
                    Err(e) => e.xa_code(),
                }
            }
        }
        Call::OnePhase => {
            let w = s.idle(b"o", &[(b"o-k", b"one-phase under a fault")]);
            after.apply(&w);
            arm(&s.disk);
            code(s.rm.commit(TOC, &xid(b"o"), true))
        }
        Call::RollbackPrepared => {
            after.prepared.remove(b"pa".as_slice());
            arm(&s.disk);
            code(s.rm.rollback(TOC, &pa))
        }
        Call::LocalPut | Call::LocalDelete => {
            let (k, v): (&[u8], _) = match call {
                Call::LocalPut => (b"c1", Some(b"new value".as_slice())),
                _ => (b"c2", None),
            };
            after.apply(&Writes::from([(k.to_vec(), v.map(<[u8]>::to_vec))]));
            arm(&s.disk);
            dcode(&s.rm.put(TOC, k, v))
        }
        Call::BranchPut => {
            // The branch stays active; its write never changes the recovered state.
            want(
                code(s.rm.start(TOC, &xid(b"bp"), StartMode::New)),
                XA_OK,
                "xa_start",
            );
            arm(&s.disk);
            dcode(&s.rm.put(TOC, b"bp-k", Some(b"branch write under a fault")))
        }
    };
    (c, after)
}

/// Asserts that every kind of call fails with `XAER_RMFAIL` (`MMXA_EIO` for data calls).
#[track_caller]
fn assert_failed_for_good(rm: &SimRm, ctx: &str) {
    assert!(
        rm.failed().is_some(),
        "{ctx}: the store is not marked failed"
    );
    let x = xid(b"later");
    let xa = [
        ("xa_start", code(rm.start(TOC + 1, &x, StartMode::New))),
        ("xa_prepare", code(rm.prepare(TOC, &xid(b"x")))),
        ("xa_commit", code(rm.commit(TOC, &xid(b"pa"), false))),
        ("xa_rollback", code(rm.rollback(TOC, &xid(b"pa")))),
        ("xa_forget", code(rm.forget(TOC, &xid(b"ph")))),
        (
            "xa_recover",
            in_doubt(rm).map_or_else(|e| e.xa_code(), |_| XA_OK),
        ),
    ];
    for (what, c) in xa {
        want(
            c,
            XAER_RMFAIL,
            &format!("{ctx}: {what} after the failed sync"),
        );
    }
    let data = [
        ("mmxa_put", dcode(&rm.put(TOC + 1, b"c1", Some(b"x")))),
        ("mmxa_delete", dcode(&rm.put(TOC + 1, b"c1", None))),
        ("mmxa_get", dcode(&rm.get(TOC + 1, b"c1"))),
    ];
    for (what, c) in data {
        want(c, MMXA_EIO, &format!("{ctx}: {what} after the failed sync"));
    }
    assert!(
        !matches!(rm.compact_step(), Ok(true)),
        "{ctx}: a reclaim step after the failed sync"
    );
}

/// A failed sync (`EIO`, or `ENOSPC` as some file systems report) at each call that syncs:
/// `XAER_RMFAIL` (`MMXA_EIO`), the store fails for good — also once the disk works again, so
/// a retry never succeeds — and a reopen recovers every acknowledged state, the failed call
/// having happened or not.
#[test]
fn sync_fault_fails_the_store_until_reopened() {
    let mut injected = 0;
    for errno in [libc::EIO, libc::ENOSPC] {
        for call in CALLS.into_iter().filter(|&c| c != Call::BranchPut) {
            let ctx = format!("{call:?} with sync failing ({})", io_name(errno));
            let mut s = Store::new();
            let before = s.model.clone();
            let (c, after) = make_call(&mut s, call, |d| d.inject(Fault::once(Op::Sync, errno)));
            injected += s.disk.injected();
            let expected = match call {
                Call::LocalPut | Call::LocalDelete => MMXA_EIO,
                _ => XAER_RMFAIL,
            };
            want(c, expected, &ctx);
            assert_failed_for_good(&s.rm, &ctx);
            s.check_recovery(&[&before, &after], &ctx);
            s.reopen();
            let now = observe(&s.rm, false);
            assert!(
                [&before, &after].iter().any(|m| {
                    let mut v = m.view();
                    v.resolved.clear();
                    v == now
                }),
                "{ctx}: reopened store: {now:?}"
            );
            want(dcode(&s.rm.put(TOC, b"c1", Some(b"after"))), MMXA_OK, &ctx);
        }
    }
    eprintln!("sync faults: {injected} injected");
}

fn io_name(errno: i32) -> &'static str {
    match errno {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        _ => "errno",
    }
}

/// A failed record write at each call: a definite answer (`XA_RBOTHER` for a prepare or a
/// one-phase commit, which are rolled back; `XA_RETRY` for a commit and `XAER_RMERR` for a
/// rollback or heuristic decision, which leave the branch prepared; `MMXA_EIO` or
/// `MMXA_ENOSPC` for a write), the store goes on working, the call succeeds when retried, and
/// any reopen recovers exactly what the answers said. The write fails on the payload or on
/// the header, writing nothing or all but its last byte.
#[test]
fn write_fault_gives_a_definite_answer() {
    let mut injected = 0;
    let mut cases = 0;
    for errno in [libc::EIO, libc::ENOSPC] {
        for call in CALLS {
            for (skip, partial) in [(0, false), (0, true), (1, false), (1, true)] {
                let ctx = format!(
                    "{call:?} with write {} failing ({}{})",
                    ["payload", "header"][skip as usize],
                    io_name(errno),
                    if partial { ", partly written" } else { "" }
                );
                let mut s = Store::new();
                let fault = Fault {
                    op: Op::Write,
                    errno,
                    skip,
                    count: 1,
                    partial,
                };
                let (c, after) = make_call(&mut s, call, |d| d.inject(fault));
                injected += s.disk.injected();
                cases += 1;
                let data = if errno == libc::ENOSPC {
                    MMXA_ENOSPC
                } else {
                    MMXA_EIO
                };
                let expected = match call {
                    Call::Prepare | Call::OnePhase => XA_RBOTHER,
                    Call::Commit => XA_RETRY,
                    Call::RollbackPrepared | Call::Heuristic => XAER_RMERR,
                    Call::LocalPut | Call::LocalDelete | Call::BranchPut => data,
                };
                want(c, expected, &ctx);
                assert_eq!(s.rm.failed(), None, "{ctx}: the store must go on");
                // Exactly the state the answer stated, however the store stops now.
                s.check_recovery(&[&s.model], &ctx);
                // Retried, the call works.
                let retried = match call {
                    Call::Commit => code(s.rm.commit(TOC, &xid(b"pa"), false)),
                    Call::RollbackPrepared => code(s.rm.rollback(TOC, &xid(b"pa"))),
                    Call::Heuristic => {
                        s.rm.heuristic(&xid(b"pa"), Outcome::Commit, "operator")
                            .map_or_else(|e| e.xa_code(), |()| XA_OK)
                    }
                    Call::Prepare => code(s.rm.commit(TOC, &xid(b"x"), false)),
                    Call::OnePhase => code(s.rm.commit(TOC, &xid(b"o"), true)),
                    Call::LocalPut | Call::LocalDelete => {
                        dcode(&s.rm.put(TOC, b"c1", Some(b"new value")))
                    }
                    Call::BranchPut => dcode(&s.rm.put(TOC, b"bp-k", Some(b"again"))),
                };
                let retried_want = match call {
                    // The branch was rolled back: it is gone.
                    Call::Prepare | Call::OnePhase => XAER_NOTA,
                    Call::LocalPut | Call::LocalDelete | Call::BranchPut => MMXA_OK,
                    _ => XA_OK,
                };
                want(retried, retried_want, &format!("{ctx}: retried"));
                match call {
                    Call::Prepare | Call::OnePhase => {}
                    Call::LocalPut | Call::LocalDelete => {
                        s.model.apply(&Writes::from([(
                            b"c1".to_vec(),
                            Some(b"new value".to_vec()),
                        )]));
                    }
                    Call::BranchPut => {}
                    _ => s.model = after.clone(),
                }
                s.check_recovery(&[&s.model], &format!("{ctx}: after the retry"));
            }
        }
    }
    eprintln!("write faults: {cases} cases, {injected} injected");
}

/// Regression: a record write that failed after writing all of the header but its last byte
/// left a valid COMMIT record above the log's tail (the byte it missed, the top of the vouch,
/// is zero anyway). `xa_commit` answered `XA_RETRY` and kept the branch prepared, yet a reopen
/// replayed the record and committed it. The log now erases the header of a failed write
/// durably; if it cannot, it fails, and the answer is `XAER_RMFAIL` (outcome unknown).
#[test]
fn failed_commit_write_leaves_no_commit_record() {
    let header_short_by_one = Fault {
        op: Op::Write,
        errno: libc::EIO,
        skip: 1,
        count: 1,
        partial: true,
    };
    let mut s = Store::new();
    let (c, _) = make_call(&mut s, Call::Commit, |d| d.inject(header_short_by_one));
    want(c, XA_RETRY, "xa_commit with its header write failing");
    s.check_recovery(&[&s.model], "the branch must stay prepared");

    // The erasure fails too: the store fails, and either outcome may come back.
    let mut s = Store::new();
    let before = s.model.clone();
    let (c, after) = make_call(&mut s, Call::Commit, |d| {
        d.inject(Fault {
            count: 2,
            ..header_short_by_one
        })
    });
    want(
        c,
        XAER_RMFAIL,
        "xa_commit with its header write and its erasure failing",
    );
    assert_failed_for_good(&s.rm, "after a write that could not be erased");
    s.check_recovery(&[&before, &after], "a record that could not be erased");
}

/// Segment creation fails (`ENOSPC` from `posix_fallocate`, or `EIO`) while every append needs
/// a new segment: the README's answers (`MMXA_ENOSPC`/`MMXA_EIO`, `XA_RBOTHER` for a prepare
/// or a one-phase commit, `XA_RETRY` for a commit, which keeps the branch prepared with its
/// locks, `XAER_RMERR` for a rollback of a prepared branch), reads and `xa_recover` go on, and
/// once creation works again everything succeeds without a reopen; any reopen recovers exactly
/// what was answered.
#[test]
fn segment_creation_fault_then_recovery_without_reopen() {
    for errno in [libc::ENOSPC, libc::EIO] {
        let ctx = io_name(errno);
        let data = if errno == libc::ENOSPC {
            MMXA_ENOSPC
        } else {
            MMXA_EIO
        };
        let mut s = Store::new();
        s.prepared(b"pb", &[(b"x-k", b"prepared b")]);
        let b1 = s.idle(b"b1", &[(b"o-k", b"idle, prepared when full")]);
        let b2 = s.idle(b"b2", &[(b"bp-k", b"idle, one-phase when full")]);
        s.fill_to(32);
        s.disk.inject(Fault::always(Op::Create, errno));
        let calls = [
            (
                "local write",
                dcode(&s.rm.put(TOC, b"c1", Some(b"no room"))),
                data,
            ),
            ("local delete", dcode(&s.rm.put(TOC, b"c2", None)), data),
            (
                "xa_prepare",
                code(s.rm.prepare(TOC, &xid(b"b1"))),
                XA_RBOTHER,
            ),
            (
                "xa_commit(TMONEPHASE)",
                code(s.rm.commit(TOC, &xid(b"b2"), true)),
                XA_RBOTHER,
            ),
            (
                "xa_commit",
                code(s.rm.commit(TOC, &xid(b"pa"), false)),
                XA_RETRY,
            ),
            (
                "xa_rollback",
                code(s.rm.rollback(TOC, &xid(b"pb"))),
                XAER_RMERR,
            ),
        ];
        for (what, got, expected) in calls {
            want(
                got,
                expected,
                &format!("{ctx}: {what} when no segment can be created"),
            );
        }
        drop((b1, b2));
        assert_eq!(s.rm.failed(), None, "{ctx}: the store must go on");
        // Reads, xa_recover, and the locks of the branches still prepared.
        assert_eq!(s.rm.get(TOC, b"c1"), Ok(Some(b"committed one".to_vec())));
        assert_eq!(
            observe(&s.rm, false).in_doubt,
            [b"pa".to_vec(), b"pb".to_vec(), b"ph".to_vec()].into()
        );
        want(
            dcode(&s.rm.put(TOC, b"pa-k", Some(b"locked"))),
            MMXA_ELOCKTIMEOUT,
            &format!("{ctx}: a write to a key of the prepared branch"),
        );
        s.check_recovery(&[&s.model], ctx);
        let calls_made = s.disk.calls(Op::Create);
        s.disk.clear_faults();
        want(code(s.rm.commit(TOC, &xid(b"pa"), false)), XA_OK, ctx);
        want(code(s.rm.rollback(TOC, &xid(b"pb"))), XA_OK, ctx);
        let w = s.model.prepared.remove(b"pa".as_slice()).unwrap();
        s.model.apply(&w);
        s.model.prepared.remove(b"pb".as_slice());
        s.local(b"c1", b"room again");
        assert!(
            s.disk.calls(Op::Create) > calls_made,
            "{ctx}: a segment was created"
        );
        s.check_recovery(&[&s.model], &format!("{ctx}: after space came back"));
    }
}

/// Faults while a store opens (mapping a segment, cutting a torn tail, deleting the segment
/// after it, syncing): the open fails (`xa_open` answers `XAER_RMERR`) and, once the fault
/// clears, the next open recovers exactly the acknowledged state.
#[test]
fn open_fault_fails_the_open_then_recovers() {
    // A store whose tail is torn, with a newer (empty) segment to delete at open: two big
    // branch writes rolled the log twice, and the power cut came during the second roll, after
    // the new segment was created and before the one holding the first write was sealed; it
    // kept 12 bytes of that unsynced write.
    let mut s = Store::new();
    s.fill_to(32);
    want(
        code(s.rm.start(TOC, &xid(b"t"), StartMode::New)),
        XA_OK,
        "xa_start",
    );
    let segments = s.disk.names().len();
    s.disk.record(true);
    for k in [b"x-k", b"o-k"] {
        let big = vec![b't'; 40 << 10];
        want(
            dcode(&s.rm.put(TOC, k, Some(&big))),
            MMXA_OK,
            "branch write",
        );
    }
    s.disk.record(false);
    assert_eq!(s.disk.names().len(), segments + 2, "segments");
    let snap = s
        .disk
        .take_snapshots()
        .into_iter()
        .rfind(|t| t.what().starts_with("sync"))
        .expect("the second roll's seal");
    assert!(snap.writes()[0] > 40 << 10, "{:?}", snap.writes());
    let model = s.model.clone();
    let at = |op, skip| Fault {
        skip,
        ..Fault::once(op, libc::EIO)
    };
    let cases = [
        (at(Op::Open, 0), "map a segment"),
        (at(Op::Write, 0), "zero the torn tail"),
        (at(Op::Sync, 0), "sync the cut tail"),
        (at(Op::Remove, 0), "delete the segment after the tail"),
        (at(Op::SyncDir, 0), "sync the directory"),
        (at(Op::Sync, 1), "sync the log at open"),
        (
            at(Op::Write, 1),
            "log the rollback of the unprepared branch",
        ),
        (
            at(Op::Sync, 2),
            "sync the rollback of the unprepared branch",
        ),
    ];
    for (fault, what) in cases {
        let image = snap.image(
            &Cut::Torn {
                writes: 0,
                torn: 12,
            },
            true,
        );
        image.inject(fault);
        let failed = open(&image, FSEG);
        assert!(failed.is_err(), "open with a failure to {what}: no error");
        assert_eq!(image.injected(), 1, "{what}: the fault was not reached");
        image.clear_faults();
        let rm = open(&image, FSEG).unwrap_or_else(|e| panic!("reopen after {what}: {e}"));
        assert_eq!(observe(&rm, true), model.view(), "{what}");
    }
    // An empty store whose first segment cannot be created.
    let disk = SimDisk::new();
    disk.inject(Fault::once(Op::Create, libc::ENOSPC));
    assert!(
        open(&disk, FSEG).is_err(),
        "open of an empty store on a full disk"
    );
    open(&disk, FSEG).expect("open once there is room");
}

/// Faults in a reclaim step: a failed CHECKPOINT sync fails the store (also when the step ran
/// inside a write that had already been acknowledged); a failed copy, removal or directory
/// sync leaves it working. Either way a reopen recovers exactly the acknowledged state.
#[test]
fn reclaim_fault_keeps_acknowledged_state() {
    for (fault, fails_store, what) in [
        (Fault::once(Op::Sync, libc::EIO), true, "CHECKPOINT sync"),
        (Fault::once(Op::Write, libc::ENOSPC), false, "copy"),
        (
            Fault::once(Op::Remove, libc::EIO),
            false,
            "removal of the old segment",
        ),
        (Fault::once(Op::SyncDir, libc::EIO), false, "directory sync"),
    ] {
        let mut s = Store::new();
        // Garbage: a few segments of overwrites of one key, so the first one can be reclaimed.
        for i in 0..3 * FSEG / 1024 {
            s.local(b"fill", &vec![b'a' + (i % 26) as u8; 900]);
        }
        s.disk.inject(fault);
        let step = s.rm.compact_step();
        assert!(step.is_err(), "{what}: the step must fail, got {step:?}");
        assert_eq!(s.disk.injected(), 1, "{what}: the fault was not reached");
        assert_eq!(
            s.rm.failed().is_some(),
            fails_store,
            "{what}: {:?}",
            s.rm.failed()
        );
        s.check_recovery(&[&s.model], what);
        if fails_store {
            assert_failed_for_good(&s.rm, what);
            s.reopen();
        }
        // The store works, and reclaims, once the fault is gone.
        s.local(b"c1", b"after the failed reclaim");
        assert_eq!(
            s.rm.compact_step().map_err(|e| e.to_string()),
            Ok(true),
            "{what}"
        );
        s.check_recovery(&[&s.model], &format!("{what}, then a reclaim"));
    }

    // The reclaim a local write starts after its own sync: the write was acknowledged, the
    // store fails at the CHECKPOINT sync, and every later call is refused. A first run finds
    // which sync that is (the simulated disk is deterministic).
    let value = |i: u64| vec![b'a' + (i % 26) as u8; 900];
    let mut dry = Store::new();
    let base = dry.disk.calls(Op::Sync);
    let mut writes = 0;
    while dry.disk.calls(Op::Remove) == 0 {
        assert!(writes < 1000, "no reclaim started");
        dry.local(b"fill", &value(writes));
        writes += 1;
    }
    let checkpoint_sync = dry.disk.calls(Op::Sync) - base - 1;
    let mut s = Store::new();
    s.disk.inject(Fault {
        skip: checkpoint_sync,
        ..Fault::once(Op::Sync, libc::EIO)
    });
    for i in 0..writes {
        s.local(b"fill", &value(i));
    }
    assert_eq!(s.disk.injected(), 1);
    s.check_recovery(&[&s.model], "a reclaim inside a write failed");
}

/// A real full disk through the C entry points: a 9 MiB tmpfs holds the first 4 MiB segment,
/// a filler file takes the room for a second one, and the segment is filled until not even a
/// ROLLBACK record (32 bytes, the smallest) fits.
#[test]
fn full_disk_through_the_c_entry_points() {
    use ffi_common::{check, xid as cxid, Rm as CRm};
    use std::io::Write;
    let tmp = ffi_common::private_dir();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=11m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("full_disk_through_the_c_entry_points: skipped: cannot mount a tmpfs");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(&mnt);
    let rm = CRm::new(41, &mnt.join("store"), "lock_timeout_ms=0");
    rm.open_ok();
    let x = |g: &str| cxid(7, g.as_bytes(), b"b");
    let branch = |g: &str| {
        check("xa_start", rm.start(&x(g), TMNOFLAGS), XA_OK);
        rm.put_ok(&format!("{g}-k"), g);
        check("xa_end", rm.end(&x(g), TMSUCCESS), XA_OK);
    };
    let mut prepared: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    prepared.push("pa".into());
    for g in &prepared {
        branch(g);
        check("xa_prepare", rm.prepare(&x(g)), XA_OK);
    }
    branch("b1");
    branch("b2");
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while filler.write_all(&chunk).is_ok() {}
    let mut acked = Vec::new();
    for size in [1000, 100, 1] {
        loop {
            let k = format!("fill-{:05}", acked.len());
            match rm.put(k.as_bytes(), &vec![b'f'; size]) {
                MMXA_OK => acked.push((k, size)),
                c => {
                    check("mmxa_put on a full disk", c, MMXA_ENOSPC);
                    break;
                }
            }
        }
    }
    // Rollbacks of prepared branches until not even that record fits.
    let full = loop {
        let g = prepared.remove(0);
        match rm.rollback(&x(&g)) {
            XA_OK => {}
            c => {
                check(
                    "xa_rollback of a prepared branch on a full disk",
                    c,
                    XAER_RMERR,
                );
                break g;
            }
        }
    };
    check(
        "mmxa_put on a full disk",
        rm.put(b"one-more", b"x"),
        MMXA_ENOSPC,
    );
    check(
        "mmxa_delete on a full disk",
        rm.delete(b"fill-00000"),
        MMXA_ENOSPC,
    );
    check(
        "xa_prepare on a full disk",
        rm.prepare(&x("b1")),
        XA_RBOTHER,
    );
    check(
        "xa_commit(TMONEPHASE) on a full disk",
        rm.commit(&x("b2"), TMONEPHASE),
        XA_RBOTHER,
    );
    check(
        "xa_commit on a full disk",
        rm.commit(&x("pa"), TMNOFLAGS),
        XA_RETRY,
    );
    assert_eq!(rm.get_str("fill-00000").map(|v| v.len()), Some(1000));
    assert!(rm
        .recover_keys()
        .contains(&(7, b"pa".to_vec(), b"b".to_vec())));
    // Room again: the same store goes on, no reopen.
    drop(filler);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    check(
        "xa_commit once there is room",
        rm.commit(&x("pa"), TMNOFLAGS),
        XA_OK,
    );
    check(
        "xa_rollback once there is room",
        rm.rollback(&x(&full)),
        XA_OK,
    );
    rm.put_ok("after", "room again");
    rm.close_ok();
    rm.open_ok();
    assert_eq!(rm.get_str("pa-k").as_deref(), Some("pa"));
    assert_eq!(rm.get_str("after").as_deref(), Some("room again"));
    for g in ["b1", "b2", "r0"] {
        assert_eq!(rm.get_str(&format!("{g}-k")), None, "{g}");
    }
    for (k, size) in &acked {
        assert_eq!(rm.get_str(k).map(|v| v.len()), Some(*size), "{k}");
    }
    let left: Vec<_> = prepared
        .iter()
        .filter(|g| *g != "pa")
        .map(|g| (7, g.as_bytes().to_vec(), b"b".to_vec()))
        .collect();
    assert_eq!(rm.recover_keys(), left, "still prepared");
    rm.close_ok();
}
