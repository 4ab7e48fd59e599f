//! Hostile input, with proptest: damaged logs and open strings.
//!
//! **The log decoder and recovery.** A scripted workload through `mmxa::rm::Rm` (local writes
//! and deletes, one- and two-phase commits, rollbacks, branches left prepared, a heuristic
//! commit, reclaim steps, 64 KiB segments) builds a golden store once; it ends with an
//! acknowledged write and then a branch whose writes were appended but never synced (the
//! unsynced tail). A test-side reader of the documented format lists every record, and `S`, the
//! durable position the tail's records vouch for. Each case copies the golden files, damages
//! them, and opens them with `Log::open` and with `Rm::open`:
//!
//! - never a panic: a clean open or an error;
//! - bit flips and overwrites: damage to a segment header, or to the checked bytes of a record
//!   before `S` that a later record vouches for or that a later segment file follows, is
//!   reported as corruption (naming the file and the record's offset); damage only at or after
//!   `S` (or in bytes no record covers) opens, with every acknowledged commit, every in-doubt
//!   branch, none of the unsynced writes, and exactly the undamaged records replayed;
//! - a zeroed range (the log ends early, later files kept) behaves as the first damaged record
//!   says; a log cut short (later files gone) opens to the state after some prefix of the
//!   acknowledged operations, or reports corruption; a shortened or missing segment file (the
//!   last one too) is an error;
//! - segment files of arbitrary bytes, and files with a valid header and records with valid
//!   checksums but arbitrary fields: never a panic.
//!
//! **The open-string parser** (`mmxa::config::parse`): arbitrary bytes never panic; generated
//! valid strings (any key order, both separators, spaces) parse to exactly the generated
//! values; near-valid strings with one defect are errors naming the offending key, item or
//! value (or the byte offset of invalid UTF-8).
//!
//! Case counts: each target has a default sized for a debug build (the file runs in well under
//! a minute); `PROPTEST_CASES=N` sets every target to N. A longer run, e.g.
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz`, takes tens of minutes. Failures
//! are shrunk and printed by proptest; nothing is persisted.

mod rng;

use mmxa::config::{parse, Config, Isolation, SyncMode};
use mmxa::error::Outcome as Heuristic;
use mmxa::log::Log;
use mmxa::rm::flags::{EndMode, Scan, StartMode};
use mmxa::rm::Rm;
use mmxa::rm::Vote;
use mmxa::xa::XA_HEURCOM;
use mmxa::xid::Xid;
use proptest::prelude::*;
use rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Proptest settings: `default` cases unless `PROPTEST_CASES` says otherwise.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- the golden store -----------------------------------------------------------------------

const SEG: u64 = 64 << 10;
const SEG_HEADER: usize = 64;
const REC_HEADER: usize = 24;
/// Bytes of the segment header that its checksum covers (the rest is reserved zero).
const CHECKED_HEADER: usize = 52;
const K_PUT: u8 = 1;
const K_SEGMENT_END: u8 = 8;
const K_CHECKPOINT: u8 = 10;
const TOC: u64 = 1;
const FMT: i64 = 0x6675_7a7a;

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;
type XidKey = (i64, Vec<u8>, Vec<u8>);

/// One record of the golden log, as the test's own reader of the format sees it.
#[derive(Debug, Clone)]
struct Rec {
    file: usize,
    off: u64,
    lsn: u64,
    /// Header plus payload: the bytes the checksum protects.
    checked: u64,
    kind: u8,
    vouch: u64,
}

struct SegFile {
    name: String,
    bytes: Vec<u8>,
    base: u64,
}

struct Golden {
    files: Vec<SegFile>,
    recs: Vec<Rec>,
    /// The durable position the unsynced tail vouches for: everything before it was synced.
    synced: u64,
    /// Committed state after every acknowledged operation; the last one is the final state.
    states: Vec<Kv>,
    in_doubt: BTreeSet<XidKey>,
    /// Every key the workload ever wrote.
    keys: BTreeSet<Vec<u8>>,
    unsynced_keys: Vec<Vec<u8>>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn config(dir: &Path) -> Config {
    let mut cfg = Config::new(dir);
    cfg.segment_size = SEG;
    cfg.sync = SyncMode::Msync;
    cfg.lock_timeout = Duration::ZERO;
    cfg
}

fn xkey(x: &Xid) -> XidKey {
    (x.format_id(), x.gtrid().to_vec(), x.bqual().to_vec())
}

/// Runs the scripted workload in `dir`; returns the committed states, in-doubt XIDs, keys and
/// unsynced keys. The store is dropped without closing, as a crash would leave it.
/// What the workload acknowledged: committed states, in-doubt XIDs, keys, unsynced keys.
type Outcome = (Vec<Kv>, BTreeSet<XidKey>, BTreeSet<Vec<u8>>, Vec<Vec<u8>>);

fn workload(dir: &Path) -> Outcome {
    let rm = Rm::open(config(dir)).expect("open the golden store");
    // A fixed seed: the golden workload is the same in every run.
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut model = Kv::new();
    let mut states = vec![model.clone()];
    let mut keys = BTreeSet::new();
    let mut in_doubt = BTreeSet::new();
    let mut n = 0u64;
    let mut new_xid = |what: &str| {
        n += 1;
        Xid::from_parts(FMT, format!("{what}-{n}").as_bytes(), b"fz").unwrap()
    };
    let value = |rng: &mut Rng, tag: u64| -> Vec<u8> {
        let len = rng.below(2000) as usize;
        (0..len).map(|i| (i as u64 ^ tag) as u8).collect()
    };
    // A branch writing `writes`, ended with success.
    let branch = |x: &Xid, writes: &[(Vec<u8>, Option<Vec<u8>>)]| {
        assert_eq!(rm.start(TOC, x, StartMode::New), Ok(()));
        for (k, v) in writes {
            rm.put(TOC, k, v.as_deref()).expect("branch write");
        }
        assert_eq!(rm.end(TOC, x, EndMode::Success), Ok(()));
    };

    // Two branches stay prepared to the end and one is committed heuristically, early, so
    // that reclaiming moves them.
    for i in 0..2 {
        let x = new_xid("doubt");
        let k = format!("doubt/{i}").into_bytes();
        keys.insert(k.clone());
        branch(&x, &[(k, Some(vec![b'd'; 300]))]);
        assert_eq!(rm.prepare(TOC, &x), Ok(Vote::Prepared));
        in_doubt.insert(xkey(&x));
    }
    let x = new_xid("heur");
    branch(&x, &[(b"heur/0".to_vec(), Some(vec![b'h'; 200]))]);
    assert_eq!(rm.prepare(TOC, &x), Ok(Vote::Prepared));
    rm.heuristic(&x, Heuristic::Commit, "operator")
        .expect("heuristic");
    keys.insert(b"heur/0".to_vec());
    model.insert(b"heur/0".to_vec(), vec![b'h'; 200]);
    in_doubt.insert(xkey(&x));
    states.push(model.clone());

    for op in 0..400u64 {
        let mut writes = Vec::new();
        for _ in 0..=rng.below(3) {
            let k = format!("k/{}", rng.below(40)).into_bytes();
            let v = (rng.below(6) != 0).then(|| value(&mut rng, op));
            if !writes.iter().any(|(w, _): &(Vec<u8>, _)| *w == k) {
                writes.push((k, v));
            }
        }
        for (k, _) in &writes {
            keys.insert(k.clone());
        }
        let apply = |model: &mut Kv, writes: &[(Vec<u8>, Option<Vec<u8>>)]| {
            for (k, v) in writes {
                match v {
                    Some(v) => model.insert(k.clone(), v.clone()),
                    None => model.remove(k),
                };
            }
        };
        match rng.below(100) {
            0..=34 => {
                let (k, v) = &writes[0];
                rm.put(TOC, k, v.as_deref()).expect("local write");
                apply(&mut model, &writes[..1]);
            }
            35..=54 => {
                let x = new_xid("one");
                branch(&x, &writes);
                assert_eq!(rm.commit(TOC, &x, true), Ok(()));
                apply(&mut model, &writes);
            }
            55..=79 => {
                let x = new_xid("two");
                branch(&x, &writes);
                assert_eq!(rm.prepare(TOC, &x), Ok(Vote::Prepared));
                assert_eq!(rm.commit(TOC, &x, false), Ok(()));
                apply(&mut model, &writes);
            }
            80..=89 => {
                let x = new_xid("idle");
                branch(&x, &writes);
                assert_eq!(rm.rollback(TOC, &x), Ok(()));
            }
            _ => {
                let x = new_xid("prb");
                branch(&x, &writes);
                assert_eq!(rm.prepare(TOC, &x), Ok(Vote::Prepared));
                assert_eq!(rm.rollback(TOC, &x), Ok(()));
            }
        }
        if op % 150 == 149 {
            rm.compact_step().expect("reclaim step");
        }
        states.push(model.clone());
    }
    // The last acknowledged operation, then writes that are appended and never synced.
    rm.put(TOC, b"sentinel", Some(b"last")).expect("sentinel");
    keys.insert(b"sentinel".to_vec());
    model.insert(b"sentinel".to_vec(), b"last".to_vec());
    states.push(model);
    let x = new_xid("unsynced");
    assert_eq!(rm.start(TOC, &x, StartMode::New), Ok(()));
    let mut unsynced = Vec::new();
    for i in 0..3 {
        let k = format!("unsynced/{i}").into_bytes();
        rm.put(TOC, &k, Some(&[b'u'; 500])).expect("unsynced write");
        unsynced.push(k);
    }
    drop(rm);
    (states, in_doubt, keys, unsynced)
}

/// Reads the segment files of `dir` with the documented format (no checksum needed: the golden
/// log is undamaged; the zero kind byte ends it).
fn read_golden(dir: &Path) -> (Vec<SegFile>, Vec<Rec>) {
    let mut files: Vec<SegFile> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".seg").then(|| {
                let bytes = std::fs::read(e.path()).unwrap();
                SegFile {
                    name,
                    base: le_u64(&bytes, 24),
                    bytes,
                }
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut recs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let b = &f.bytes;
        let mut off = SEG_HEADER;
        while off + REC_HEADER <= b.len() && b[off + 8] != 0 {
            let len = le_u32(b, off + 4) as usize;
            recs.push(Rec {
                file: i,
                off: off as u64,
                lsn: f.base + off as u64,
                checked: (REC_HEADER + len) as u64,
                kind: b[off + 8],
                vouch: le_u64(b, off + 16),
            });
            if b[off + 8] == K_SEGMENT_END {
                break;
            }
            off += (REC_HEADER + len + 7) & !7;
        }
    }
    (files, recs)
}

/// The key of a PUT record.
fn put_key<'a>(g: &'a [SegFile], r: &Rec) -> Option<&'a [u8]> {
    if r.kind != K_PUT {
        return None;
    }
    let p = &g[r.file].bytes[r.off as usize + REC_HEADER..];
    let kl = le_u32(p, 8) as usize;
    Some(&p[16..16 + kl])
}

fn golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let (states, in_doubt, keys, unsynced_keys) = workload(dir.path());
        let (files, recs) = read_golden(dir.path());
        let synced = recs.last().expect("records").vouch;
        eprintln!(
            "golden log: {} files from {}, {} records, synced up to LSN {synced}",
            files.len(),
            files[0].name,
            recs.len()
        );
        // Independent checks of the premises the oracle rests on.
        let sentinel = recs
            .iter()
            .rfind(|r| put_key(&files, r) == Some(b"sentinel"))
            .expect("the sentinel record");
        let first_unsynced = recs
            .iter()
            .find(|r| put_key(&files, r) == Some(b"unsynced/0"))
            .expect("the unsynced records");
        assert!(
            sentinel.lsn + sentinel.checked <= synced && synced <= first_unsynced.lsn,
            "acknowledged work is durable and the unsynced tail is not"
        );
        assert!(
            recs.iter().any(|r| r.kind == K_CHECKPOINT) && !files[0].name.ends_with("1.seg"),
            "the workload reclaimed segments"
        );
        assert!(files.len() >= 3, "the workload spans several segments");
        // A roll seals its segment: every record of a later file vouches for all earlier ones,
        // and the unsynced tail is in the last file.
        assert!(
            recs.iter()
                .all(|r| r.file == 0 || r.vouch >= files[r.file].base),
            "records vouch for the segments before theirs"
        );
        assert!(
            synced >= files[files.len() - 1].base,
            "the unsynced tail is in the last file"
        );
        Golden {
            files,
            recs,
            synced,
            states,
            in_doubt,
            keys,
            unsynced_keys,
        }
    })
}

// ---- damage and the oracle -------------------------------------------------------------------

/// What opening a damaged copy must give.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Open, with every acknowledged commit and in-doubt branch; records before `upto`
    /// (all, if `None`) replayed.
    Intact { upto: Option<u64> },
    /// Corruption naming this file and offset.
    CorruptAt(String, u64),
    /// Synced records from `upto` on are damaged, and so is everything that vouched for them:
    /// indistinguishable from a torn tail. Opens to the state after a prefix of the operations
    /// (records before `upto` replayed), or reports corruption.
    Unvouched { upto: u64 },
    /// Corruption (where is not predicted exactly).
    Corrupt,
}

/// The oracle for damage that changes bytes in place: `changed` lists `(file, offset)`.
fn expect(changed: &[(usize, usize)]) -> Expect {
    let g = golden();
    if changed.iter().any(|&(_, off)| off < CHECKED_HEADER) {
        return Expect::Corrupt;
    }
    let first = g
        .recs
        .iter()
        .filter(|r| {
            changed
                .iter()
                .any(|&(f, off)| f == r.file && (r.off..r.off + r.checked).contains(&(off as u64)))
        })
        .min_by_key(|r| r.lsn);
    let intact = |q: &Rec| {
        !changed
            .iter()
            .any(|&(f, off)| f == q.file && (q.off..q.off + q.checked).contains(&(off as u64)))
    };
    match first {
        Some(r) if r.lsn < g.synced => {
            // A later segment file is written only after this one was sealed (synced whole).
            let sealed = r.file + 1 < g.files.len();
            let vouched = sealed
                || g.recs
                    .iter()
                    .any(|q| q.lsn > r.lsn && q.vouch > r.lsn && intact(q));
            if vouched {
                Expect::CorruptAt(g.files[r.file].name.clone(), r.off)
            } else {
                Expect::Unvouched { upto: r.lsn }
            }
        }
        Some(r) => Expect::Intact { upto: Some(r.lsn) },
        None => Expect::Intact { upto: None },
    }
}

/// A fresh copy of the golden files with `edit` applied to their bytes.
fn copy_with(edit: &dyn Fn(usize, &mut Vec<u8>)) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    for (i, f) in golden().files.iter().enumerate() {
        let mut bytes = f.bytes.clone();
        edit(i, &mut bytes);
        std::fs::write(dir.path().join(&f.name), bytes).unwrap();
    }
    dir
}

/// `Log::open`, panics caught: the LSNs it replayed, or its error.
fn log_open(dir: &Path) -> Result<Result<Vec<u64>, String>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut seen = Vec::new();
        Log::open(dir, SEG, SyncMode::Msync, &mut |lsn, _| {
            seen.push(lsn);
            Ok(())
        })
        .map(|_| seen)
        .map_err(|e| e.to_string())
    }))
    .map_err(panic_text)
}

/// `Rm::open`, panics caught.
fn rm_open(dir: &Path) -> Result<Result<Rm, String>, String> {
    catch_unwind(AssertUnwindSafe(|| Rm::open(config(dir)))).map_err(panic_text)
}

fn panicked(p: String) -> TestCaseError {
    TestCaseError::fail(format!("panic: {p}"))
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// The committed value of every key the workload wrote.
fn committed(rm: &Rm) -> Kv {
    let g = golden();
    let mut out = Kv::new();
    for k in g.keys.iter().chain(&g.unsynced_keys) {
        match rm.get(99, k) {
            Ok(Some(v)) => {
                out.insert(k.clone(), v);
            }
            Ok(None) => {}
            Err(e) => panic!("get {:?}: {e:?}", String::from_utf8_lossy(k)),
        }
    }
    out
}

fn in_doubt(rm: &Rm) -> BTreeSet<XidKey> {
    let scan = Scan {
        start: true,
        end: true,
    };
    let xids = rm.recover(99, scan, 1000).expect("xa_recover");
    xids.iter().map(xkey).collect()
}

/// Opens a damaged copy both ways and checks the outcome against `want`.
fn check(edit: &dyn Fn(usize, &mut Vec<u8>), want: &Expect) -> Result<(), TestCaseError> {
    let g = golden();
    let d1 = copy_with(edit);
    let replayed = log_open(d1.path()).map_err(panicked)?;
    let d2 = copy_with(edit);
    let rm = rm_open(d2.path()).map_err(panicked)?;
    match want {
        Expect::Intact { upto } => {
            let lsns = replayed.map_err(|e| TestCaseError::fail(format!("Log::open: {e}")))?;
            let want_lsns: Vec<u64> = g
                .recs
                .iter()
                .filter(|r| r.kind != K_SEGMENT_END && r.kind != K_CHECKPOINT)
                .filter(|r| upto.map_or(true, |u| r.lsn < u))
                .map(|r| r.lsn)
                .collect();
            prop_assert_eq!(lsns, want_lsns, "replayed records");
            let rm = rm.map_err(|e| TestCaseError::fail(format!("Rm::open: {e}")))?;
            prop_assert!(
                &committed(&rm) == g.states.last().unwrap(),
                "acknowledged commits lost or unsynced writes visible"
            );
            prop_assert_eq!(&in_doubt(&rm), &g.in_doubt);
        }
        Expect::Unvouched { upto } => {
            match replayed {
                Ok(lsns) => {
                    let want_lsns: Vec<u64> = g
                        .recs
                        .iter()
                        .filter(|r| r.kind != K_SEGMENT_END && r.kind != K_CHECKPOINT)
                        .filter(|r| r.lsn < *upto)
                        .map(|r| r.lsn)
                        .collect();
                    prop_assert_eq!(lsns, want_lsns, "replayed records");
                }
                Err(e) => prop_assert!(e.contains("corrupt"), "Log::open: {}", e),
            }
            match rm {
                Ok(rm) => prop_assert!(
                    g.states.contains(&committed(&rm)),
                    "the state is not that after any prefix of the operations"
                ),
                Err(e) => prop_assert!(e.contains("corrupt"), "Rm::open: {}", e),
            }
        }
        Expect::CorruptAt(file, off) => {
            let located = format!("{file} at offset {off}");
            for (what, r) in [("Log::open", replayed.err()), ("Rm::open", rm.err())] {
                let e = r.ok_or_else(|| TestCaseError::fail(format!("{what} opened")))?;
                prop_assert!(
                    e.contains("corrupt") && e.contains(&located),
                    "{}: {} (expected corruption at {})",
                    what,
                    e,
                    located
                );
            }
        }
        Expect::Corrupt => {
            for (what, r) in [("Log::open", replayed.err()), ("Rm::open", rm.err())] {
                let e = r.ok_or_else(|| TestCaseError::fail(format!("{what} opened")))?;
                prop_assert!(e.contains("corrupt"), "{}: {}", what, e);
            }
        }
    }
    Ok(())
}

/// A position in the golden files: anywhere, inside some record, or in the unsynced tail.
fn position() -> impl Strategy<Value = (usize, usize)> {
    let g = golden();
    let nfiles = g.files.len();
    let anywhere = (0..nfiles, 0..SEG as usize);
    let in_record = (0..g.recs.len(), any::<prop::sample::Index>()).prop_map(|(i, at)| {
        let r = &golden().recs[i];
        (r.file, r.off as usize + at.index(r.checked as usize))
    });
    let tail: Vec<&Rec> = g.recs.iter().filter(|r| r.lsn >= g.synced).collect();
    let ntail = tail.len();
    let in_tail = (0..ntail, any::<prop::sample::Index>()).prop_map(|(i, at)| {
        let g = golden();
        let r = g.recs.iter().filter(|r| r.lsn >= g.synced).nth(i).unwrap();
        (r.file, r.off as usize + at.index(r.checked as usize))
    });
    prop_oneof![2 => anywhere, 3 => in_record, 2 => in_tail]
}

fn overwrite(bytes: &mut [u8], at: usize, with: &[u8]) {
    for (i, b) in with.iter().enumerate() {
        if let Some(x) = bytes.get_mut(at + i) {
            *x = *b;
        }
    }
}

/// The positions where `edit` changes the golden bytes.
fn changes(edit: &dyn Fn(usize, &mut Vec<u8>)) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, f) in golden().files.iter().enumerate() {
        let mut b = f.bytes.clone();
        edit(i, &mut b);
        out.extend(
            b.iter()
                .zip(&f.bytes)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(p, _)| (i, p)),
        );
    }
    out
}

proptest! {
    #![proptest_config(cases(200))]

    /// One to three bit flips.
    #[test]
    fn log_bit_flips(flips in prop::collection::vec((position(), 0..8u8), 1..=3)) {
        let edit = |i: usize, b: &mut Vec<u8>| {
            for &((f, off), bit) in &flips {
                if f == i {
                    b[off] ^= 1 << bit;
                }
            }
        };
        // Two flips of the same bit cancel out: the oracle looks at what really changed.
        let want = expect(&changes(&edit));
        check(&edit, &want)?;
    }
}

proptest! {
    #![proptest_config(cases(120))]

    /// Arbitrary bytes over a short range.
    #[test]
    fn log_overwrites(at in position(), with in prop::collection::vec(any::<u8>(), 1..48)) {
        let edit = |i: usize, b: &mut Vec<u8>| {
            if i == at.0 {
                overwrite(b, at.1, &with);
            }
        };
        let want = expect(&changes(&edit));
        check(&edit, &want)?;
    }

    /// The log ends early: a zeroed range from a position to the end of its file, the later
    /// files kept. Their records vouch for the lost bytes if those were synced.
    #[test]
    fn log_zeroed_to_end_of_file(at in position()) {
        let edit = |i: usize, b: &mut Vec<u8>| {
            if i == at.0 {
                b[at.1..].fill(0);
            }
        };
        let want = expect(&changes(&edit));
        check(&edit, &want)?;
    }
}

proptest! {
    #![proptest_config(cases(80))]

    /// The log cut short: zeroed from a position on and the later files gone. Nothing vouches
    /// for what is lost, so the store opens to the state after a prefix of the acknowledged
    /// operations, or reports corruption (e.g. a CHECKPOINT's claim went with the cut).
    #[test]
    fn log_cut_short(at in position()) {
        let g = golden();
        let dir = copy_with(&|i, b| {
            if i == at.0 {
                b[at.1..].fill(0);
            }
        });
        for f in &g.files[at.0 + 1..] {
            std::fs::remove_file(dir.path().join(&f.name)).unwrap();
        }
        let cut = g.files[at.0].base + at.1 as u64;
        let rm = rm_open(dir.path()).map_err(panicked)?;
        match rm {
            Ok(rm) => {
                let state = committed(&rm);
                if cut >= g.synced {
                    prop_assert!(&state == g.states.last().unwrap(), "acknowledged work lost");
                    prop_assert_eq!(&in_doubt(&rm), &g.in_doubt);
                } else {
                    prop_assert!(
                        g.states.contains(&state),
                        "the state is not that after any prefix of the operations"
                    );
                }
            }
            Err(e) => {
                prop_assert!(cut < g.synced, "the unsynced tail cut: {}", e);
                prop_assert!(e.contains("corrupt"), "{}", e);
            }
        }
    }

    /// A segment file shorter than its header says, or missing: always an error (the last one
    /// too: the one before it ends with SEGMENT_END, written only once the last existed).
    #[test]
    fn log_short_or_missing_file(file in any::<prop::sample::Index>(), len in any::<prop::sample::Index>(), delete in any::<bool>()) {
        let g = golden();
        let f = file.index(g.files.len());
        let dir = copy_with(&|_, _| {});
        let path = dir.path().join(&g.files[f].name);
        if delete {
            std::fs::remove_file(&path).unwrap();
        } else {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len.index(SEG as usize) as u64).unwrap();
        }
        let rm = rm_open(dir.path()).map_err(panicked)?;
        match rm {
            Ok(_) => prop_assert!(false, "opened with {} {}", g.files[f].name, if delete { "deleted" } else { "shortened" }),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }
}

// ---- arbitrary segment files ----------------------------------------------------------------

/// A record with a valid checksum under `salt`: arbitrary kind, vouch and payload.
fn record(salt: u64, kind: u8, vouch: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; REC_HEADER];
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8] = kind;
    h[16..24].copy_from_slice(&vouch.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[4..]);
    c.update(payload);
    h[0..4].copy_from_slice(&c.finalize().to_le_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(payload);
    out.resize((out.len() + 7) & !7, 0);
    out
}

fn header(id: u64, base: u64, size: u64, salt: u64) -> Vec<u8> {
    let mut h = vec![0u8; SEG_HEADER];
    h[0..8].copy_from_slice(b"MMXASEG1");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&(SEG_HEADER as u32).to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&base.to_le_bytes());
    h[32..40].copy_from_slice(&size.to_le_bytes());
    h[40..48].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[0..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Payloads shaped like the real ones (tags, lengths and XIDs at the right places, values from
/// edge sets), or arbitrary bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::MAX), any::<u64>()];
    let len = prop_oneof![0u32..8, Just(u32::MAX), any::<u32>()];
    let bytes = prop::collection::vec(any::<u8>(), 0..24);
    let xid = (
        any::<i64>(),
        0u8..70,
        0u8..70,
        prop::collection::vec(any::<u8>(), 0..140),
    )
        .prop_map(|(f, g, b, d)| {
            let mut v = f.to_le_bytes().to_vec();
            v.extend([g, b]);
            v.extend(d);
            v
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (tag.clone(), len.clone(), len, bytes.clone()).prop_map(|(t, k, v, b)| {
            let mut p = t.to_le_bytes().to_vec();
            p.extend(k.to_le_bytes());
            p.extend(v.to_le_bytes());
            p.extend(b);
            p
        }),
        (tag.clone(), xid.clone()).prop_map(|(t, x)| [t.to_le_bytes().to_vec(), x].concat()),
        (tag.clone(), tag, xid).prop_map(|(a, b, x)| {
            [a.to_le_bytes().to_vec(), b.to_le_bytes().to_vec(), x].concat()
        }),
    ]
}

/// A tag from a small set, so that crafted records refer to each other, or from the edges.
fn tag() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, Just(u64::MAX - 1), Just(u64::MAX), Just(1 << 62)]
}

/// A well-formed XID encoding (from a few, so that XIDs repeat).
fn xid_bytes() -> impl Strategy<Value = Vec<u8>> {
    (prop_oneof![Just(1i64), any::<i64>()], 1u8..=3, 1u8..=3).prop_map(|(f, g, b)| {
        let mut v = f.to_le_bytes().to_vec();
        v.extend([g, b]);
        v.extend((0..g + b).map(|i| b'a' + i % 2));
        v
    })
}

/// A record whose payload decodes: (kind, payload).
fn decodable() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let key = prop::collection::vec(b'a'..b'c', 0..3);
    let le = |v: u64| v.to_le_bytes().to_vec();
    prop_oneof![
        (tag(), key.clone(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(
            move |(t, k, v)| {
                let head = [le(t), (k.len() as u32).to_le_bytes().to_vec()].concat();
                let lens = (v.len() as u32).to_le_bytes().to_vec();
                (1, [head, lens, k, v].concat())
            }
        ),
        (tag(), key).prop_map(move |(t, k)| {
            (
                2,
                [le(t), (k.len() as u32).to_le_bytes().to_vec(), k].concat(),
            )
        }),
        (tag(), xid_bytes()).prop_map(move |(t, x)| (3, [le(t), x].concat())),
        (prop::sample::select(vec![4u8, 5, 7]), tag()).prop_map(move |(k, t)| (k, le(t))),
        (
            tag(),
            any::<i32>(),
            xid_bytes(),
            prop::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(move |(t, o, x, r)| {
                let reason = [(r.len() as u32).to_le_bytes().to_vec(), r].concat();
                (6, [le(t), o.to_le_bytes().to_vec(), x, reason].concat())
            }),
        (tag(), tag(), xid_bytes()).prop_map(move |(a, b, x)| (9, [le(a), le(b), x].concat())),
        prop_oneof![0u64..5, Just(u64::MAX)].prop_map(move |id| (10, le(id))),
        Just((8, Vec::new())),
    ]
}

/// One crafted segment: its id, base, salt, and records (kind, vouch, payload): mostly
/// decodable ones over a tiny key space, so that branches and XIDs collide.
/// A crafted segment: id, base LSN, salt, and records (kind, vouch, payload).
type Crafted = (u64, u64, u64, Vec<(u8, u64, Vec<u8>)>);

fn crafted_segment() -> impl Strategy<Value = Crafted> {
    let vouch = prop_oneof![Just(0u64), any::<u64>()];
    let rec = prop_oneof![
        1 => (any::<u8>(), vouch.clone(), payload()),
        4 => (decodable(), vouch).prop_map(|((k, p), v)| (k, v, p)),
    ];
    (
        prop_oneof![4 => 1u64..4, 1 => Just(u64::MAX - 1), 1 => Just(u64::MAX)],
        prop_oneof![Just(0u64), Just(u64::MAX - 100), any::<u64>()],
        any::<u64>(),
        prop::collection::vec(rec, 0..12),
    )
}

proptest! {
    #![proptest_config(cases(200))]

    /// Files of arbitrary bytes under segment names: never a panic.
    #[test]
    fn arbitrary_segment_files(files in prop::collection::vec((1u64..4, prop::collection::vec(any::<u8>(), 0..300)), 1..=3)) {
        let dir = tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700)).tempdir().unwrap();
        for (id, bytes) in &files {
            std::fs::write(dir.path().join(format!("log-{id:016x}.seg")), bytes).unwrap();
        }
        let _ = log_open(dir.path()).map_err(panicked)?;
        let _ = rm_open(dir.path()).map_err(panicked)?;
    }

    /// Valid headers and checksums over arbitrary fields: never a panic, and what opens can be
    /// read and listed.
    #[test]
    fn crafted_records(segs in prop::collection::vec(crafted_segment(), 1..=2)) {
        let dir = tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700)).tempdir().unwrap();
        for (id, base, salt, recs) in &segs {
            let mut body = Vec::new();
            for (kind, vouch, p) in recs {
                body.extend(record(*salt, *kind, *vouch, p));
            }
            let size = (SEG_HEADER + body.len() + REC_HEADER * 2) as u64;
            let mut bytes = header(*id, *base, size, *salt);
            bytes.extend(body);
            bytes.resize(size as usize, 0);
            std::fs::write(dir.path().join(format!("log-{id:016x}.seg")), bytes).unwrap();
        }
        let copy = tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700)).tempdir().unwrap();
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        let _ = log_open(dir.path()).map_err(panicked)?;
        let rm = rm_open(copy.path()).map_err(panicked)?;
        if let Ok(rm) = rm {
            let listed = catch_unwind(AssertUnwindSafe(|| {
                let _ = rm.get(99, b"k");
                let scan = Scan { start: true, end: true };
                rm.recover(99, scan, 1000).map(|v| v.len())
            }));
            prop_assert!(listed.is_ok(), "a store opened from crafted records panics when used");
        }
    }
}

// ---- the open-string parser -------------------------------------------------------------------

/// A setting of a valid open string, with its expected effect.
#[derive(Debug, Clone)]
enum Setting {
    Dir(String),
    Trace(String),
    Sync(&'static str, SyncMode),
    Timeout(u64),
    Segment(u64),
    Isolation(&'static str, Isolation),
}

impl Setting {
    fn key(&self) -> &'static str {
        match self {
            Setting::Dir(_) => "dir",
            Setting::Trace(_) => "trace",
            Setting::Sync(..) => "sync",
            Setting::Timeout(_) => "lock_timeout_ms",
            Setting::Segment(_) => "segment_mb",
            Setting::Isolation(..) => "isolation",
        }
    }

    fn value(&self) -> String {
        match self {
            Setting::Dir(p) | Setting::Trace(p) => p.clone(),
            Setting::Sync(s, _) | Setting::Isolation(s, _) => s.to_string(),
            Setting::Timeout(n) | Setting::Segment(n) => n.to_string(),
        }
    }
}

/// Paths without separators and without spaces at either end (those are trimmed).
fn path_value() -> impl Strategy<Value = String> {
    "[/a-zA-Z0-9._=é-][/a-zA-Z0-9._= é-]{0,30}[/a-zA-Z0-9._=é-]|[/a-zA-Z0-9._=é-]"
}

/// A valid open string's settings: `dir` and any subset of the others, in any order.
fn settings() -> impl Strategy<Value = Vec<Setting>> {
    let sync = prop_oneof![
        Just(Setting::Sync("msync", SyncMode::Msync)),
        Just(Setting::Sync("fdatasync", SyncMode::Fdatasync)),
        Just(Setting::Sync("none", SyncMode::None)),
    ];
    let isolation = prop_oneof![
        Just(Setting::Isolation("serializable", Isolation::Serializable)),
        Just(Setting::Isolation(
            "read_committed",
            Isolation::ReadCommitted
        )),
    ];
    (
        path_value(),
        prop::option::of(path_value()),
        prop::option::of(sync),
        prop::option::of(prop_oneof![Just(0u64), Just(3_600_000), 0u64..=3_600_000]),
        prop::option::of(prop_oneof![Just(4u64), Just(4096), 4u64..=4096]),
        prop::option::of(isolation),
    )
        .prop_map(|(dir, trace, sync, timeout, seg, isolation)| {
            let mut v = vec![Setting::Dir(dir)];
            v.extend(trace.map(Setting::Trace));
            v.extend(sync);
            v.extend(timeout.map(Setting::Timeout));
            v.extend(seg.map(Setting::Segment));
            v.extend(isolation);
            v
        })
        .prop_shuffle()
}

/// Joins items with random separators and spaces around them.
fn join(items: &[String], seps: &[(u8, u8, u8)]) -> String {
    let mut s = String::new();
    for (i, item) in items.iter().enumerate() {
        let (sep, before, after) = seps.get(i).copied().unwrap_or((0, 0, 0));
        if i > 0 {
            s.push(if sep % 2 == 0 { ';' } else { ',' });
        }
        s.push_str(&" ".repeat(before as usize % 3));
        s.push_str(item);
        s.push_str(&" ".repeat(after as usize % 3));
    }
    s
}

fn separators() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec(any::<(u8, u8, u8)>(), 8)
}

/// One thing wrong with an otherwise valid string, and what the error must name.
#[derive(Debug, Clone)]
enum Defect {
    UnknownKey(String),
    Duplicate(usize),
    NoEquals(usize),
    BadNumber(bool, String),
    OutOfRange(bool, u64),
    BadSync(String),
    EmptyPath(bool),
    NoDir,
    BadUtf8(usize),
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        "[a-z_]{1,12}"
            .prop_filter("not a key", |k| {
                ![
                    "dir",
                    "sync",
                    "lock_timeout_ms",
                    "segment_mb",
                    "trace",
                    "isolation",
                ]
                .contains(&k.as_str())
            })
            .prop_map(Defect::UnknownKey),
        any::<usize>().prop_map(Defect::Duplicate),
        any::<usize>().prop_map(Defect::NoEquals),
        (
            any::<bool>(),
            "-[0-9]{1,4}|[0-9]{0,3}[a-z.][0-9]{1,3}|99999999999999999999999"
        )
            .prop_map(|(t, v)| Defect::BadNumber(t, v)),
        (
            any::<bool>(),
            prop_oneof![Just(0u64), 3_600_001u64..=u64::MAX]
        )
            .prop_map(|(t, n)| {
                // segment_mb's range is 4..=4096; lock_timeout_ms's 0..=3600000.
                Defect::OutOfRange(
                    t,
                    if t {
                        n.max(3_600_001)
                    } else if n == 0 {
                        3
                    } else {
                        n
                    },
                )
            }),
        "[a-zA-Z]{1,10}"
            .prop_filter("not a mode", |s| !["msync", "fdatasync", "none"]
                .contains(&s.as_str()))
            .prop_map(Defect::BadSync),
        any::<bool>().prop_map(Defect::EmptyPath),
        Just(Defect::NoDir),
        any::<usize>().prop_map(Defect::BadUtf8),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn open_string_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let r = catch_unwind(|| parse(&bytes));
        prop_assert!(r.is_ok(), "parse panicked on {:?}", bytes);
        if let Ok(Err(e)) = r {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn open_string_text(s in "[a-z_=;, /0-9é\t]{0,80}") {
        let r = catch_unwind(|| parse(s.as_bytes()));
        prop_assert!(r.is_ok(), "parse panicked on {:?}", s);
        if let Ok(Ok(c)) = r {
            // Whatever parses names a directory and keeps every value in range.
            prop_assert!(!c.dir.as_os_str().is_empty());
            prop_assert!(c.lock_timeout <= Duration::from_millis(3_600_000));
            prop_assert!((4 << 20..=4096 << 20).contains(&c.segment_size));
        }
    }

    #[test]
    fn open_string_valid_round_trips(set in settings(), seps in separators()) {
        let items: Vec<String> = set.iter().map(|s| format!("{}={}", s.key(), s.value())).collect();
        let text = join(&items, &seps);
        let c = parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        let mut want = Config::new("");
        for s in &set {
            match s {
                Setting::Dir(p) => want.dir = PathBuf::from(p),
                Setting::Trace(p) => want.trace = Some(PathBuf::from(p)),
                Setting::Sync(_, m) => want.sync = *m,
                Setting::Timeout(n) => want.lock_timeout = Duration::from_millis(*n),
                Setting::Segment(n) => want.segment_size = n << 20,
                Setting::Isolation(_, i) => want.isolation = *i,
            }
        }
        prop_assert_eq!(c, want, "{:?}", text);
    }

    #[test]
    fn open_string_defects_are_named(set in settings(), seps in separators(), d in defect()) {
        let mut items: Vec<String> =
            set.iter().map(|s| format!("{}={}", s.key(), s.value())).collect();
        let pick = |i: usize| i % items.len();
        let named: String = match &d {
            Defect::UnknownKey(k) => {
                items.push(format!("{k}=1"));
                format!("'{k}'")
            }
            Defect::Duplicate(i) => {
                let again = items[pick(*i)].clone();
                let key = set[pick(*i)].key();
                items.push(again);
                format!("'{key}'")
            }
            Defect::NoEquals(i) => {
                let i = pick(*i);
                items[i] = items[i].replace('=', "");
                format!("'{}'", items[i].trim())
            }
            Defect::BadNumber(timeout, v) => {
                let key = if *timeout { "lock_timeout_ms" } else { "segment_mb" };
                items.retain(|it| !it.starts_with(key));
                items.push(format!("{key}={v}"));
                format!("{key}={}", v.trim())
            }
            Defect::OutOfRange(timeout, n) => {
                let key = if *timeout { "lock_timeout_ms" } else { "segment_mb" };
                items.retain(|it| !it.starts_with(key));
                items.push(format!("{key}={n}"));
                format!("{key}={n}")
            }
            Defect::BadSync(v) => {
                items.retain(|it| !it.starts_with("sync"));
                items.push(format!("sync={v}"));
                format!("sync={v}")
            }
            Defect::EmptyPath(dir) => {
                let key = if *dir { "dir" } else { "trace" };
                items.retain(|it| !it.starts_with(key));
                items.push(format!("{key}="));
                format!("{key}= is empty")
            }
            Defect::NoDir => {
                items.retain(|it| !it.starts_with("dir="));
                "missing dir".to_string()
            }
            Defect::BadUtf8(_) => String::new(),
        };
        let mut bytes = join(&items, &seps).into_bytes();
        let named = if let Defect::BadUtf8(at) = d {
            let at = at % (bytes.len() + 1);
            // Never inside a multi-byte character: the first bad byte is then ours.
            let at = (0..=at).rev().find(|&p| p == bytes.len() || (bytes[p] & 0xc0) != 0x80).unwrap_or(0);
            bytes.insert(at, 0xff);
            format!("offset {at}")
        } else {
            named
        };
        match parse(&bytes) {
            Ok(c) => prop_assert!(false, "{:?} parsed: {:?}", String::from_utf8_lossy(&bytes), c),
            Err(e) => prop_assert!(
                e.contains(&named),
                "{:?}: error {:?} does not name {:?}",
                String::from_utf8_lossy(&bytes),
                e,
                named
            ),
        }
    }
}

// ---- regressions found by the targets above ----------------------------------------------------

/// Writes segment `id` with base LSN `base` holding `recs` (kind, payload) into `dir`.
fn write_crafted(dir: &Path, id: u64, base: u64, recs: &[(u8, Vec<u8>)]) {
    let salt = 7;
    let body: Vec<u8> = recs
        .iter()
        .flat_map(|(k, p)| record(salt, *k, 0, p))
        .collect();
    let size = (SEG_HEADER + body.len() + 4 * REC_HEADER) as u64;
    let mut bytes = header(id, base, size, salt);
    bytes.extend(body);
    bytes.resize(size as usize, 0);
    std::fs::write(dir.join(format!("log-{id:016x}.seg")), bytes).unwrap();
}

fn open_error(dir: &Path) -> String {
    let e = rm_open(dir).expect("Rm::open panicked").err();
    e.expect("Rm::open accepted the log")
}

/// A CHECKPOINT naming a segment after the last one made open treat every segment as dead: it
/// deleted them all, then panicked on the empty list. It is corruption, and the files stay.
#[test]
fn checkpoint_beyond_the_last_segment_is_corruption() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    write_crafted(
        dir.path(),
        1,
        0,
        &[(K_CHECKPOINT, 2u64.to_le_bytes().to_vec())],
    );
    let e = open_error(dir.path());
    assert!(e.contains("CHECKPOINT names segment 2"), "{e}");
    assert!(dir.path().join("log-0000000000000001.seg").exists());
}

/// A segment header with a valid checksum and a base LSN near 2^64 overflowed position
/// arithmetic at open (a panic in debug builds, wrapped positions in release builds).
#[test]
fn base_lsn_near_the_end_of_lsn_space_is_corruption() {
    let dir = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    write_crafted(dir.path(), 2, u64::MAX - 100, &[]);
    write_crafted(dir.path(), 3, 0, &[]);
    let e = open_error(dir.path());
    assert!(e.contains("corrupt") && e.contains("out of range"), "{e}");
}

/// A record with a valid checksum and a branch tag near 2^64 overflowed the next tag at open.
#[test]
fn branch_tag_near_u64_max_is_corruption() {
    let put = [
        &u64::MAX.to_le_bytes()[..],
        &1u32.to_le_bytes(),
        &0u32.to_le_bytes(),
        b"k",
    ]
    .concat();
    let mut heuristic = u64::MAX.to_le_bytes().to_vec();
    heuristic.extend(XA_HEURCOM.to_le_bytes());
    heuristic.extend(1i64.to_le_bytes());
    heuristic.extend([1, 1, b'g', b'b']);
    heuristic.extend(0u32.to_le_bytes());
    for rec in [(K_PUT, put), (6, heuristic)] {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        write_crafted(dir.path(), 1, 0, &[rec]);
        let e = open_error(dir.path());
        assert!(e.contains("corrupt") && e.contains("out of range"), "{e}");
    }
}

/// Writes segment `id` (base LSN 0) of `size` bytes holding `recs` (kind, payload).
fn write_sized(dir: &Path, id: u64, size: u64, recs: &[(u8, Vec<u8>)]) {
    let salt = 7;
    let mut bytes = header(id, 0, size, salt);
    for (k, p) in recs {
        bytes.extend(record(salt, *k, 0, p));
    }
    bytes.resize(size as usize, 0);
    std::fs::write(dir.join(format!("log-{id:016x}.seg")), bytes).unwrap();
}

/// Found by the libFuzzer target `log_open`: a segment too small for a record header (or of a
/// size no log writes) opened, and the first append, unable to write the SEGMENT_END marker to
/// roll to the next segment, failed the log for good. It is corruption.
#[test]
fn segment_without_room_for_a_record_is_corruption() {
    for size in [64, 72, 92] {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        write_sized(dir.path(), 1, size, &[]);
        let e = open_error(dir.path());
        assert!(
            e.contains("corrupt") && e.contains("segment size"),
            "{size}: {e}"
        );
    }
}

/// A record ending less than a record header before its segment's end (every append leaves
/// room for the SEGMENT_END marker) was replayed: the first append then failed the log, or, if
/// the record filled the segment exactly, the next open reported corruption. Such a record is
/// invalid: unvouched, it is a torn tail, cut at open, and the store stays usable.
#[test]
fn record_without_room_for_the_marker_is_a_torn_tail() {
    let put = |k: &[u8]| {
        let p = [
            &0u64.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            k,
            b"v",
        ];
        (K_PUT, p.concat())
    };
    // Two PUT records of 48 bytes each; the second leaves `room` bytes.
    for room in [0, 8, 16] {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let size = (SEG_HEADER + 2 * 48 + room) as u64;
        write_sized(dir.path(), 1, size, &[put(b"a"), put(b"b")]);
        let rm = rm_open(dir.path()).unwrap().expect("open");
        assert_eq!(rm.get(99, b"a").unwrap(), Some(b"v".to_vec()), "{room}");
        assert_eq!(rm.get(99, b"b").unwrap(), None, "{room}");
        rm.put(TOC, b"c", Some(b"w")).expect("a write after open");
        assert_eq!(rm.failed(), None);
        drop(rm);
        let rm = rm_open(dir.path()).unwrap().expect("reopen");
        assert_eq!(rm.get(99, b"c").unwrap(), Some(b"w".to_vec()), "{room}");
    }
}
