//! Tests of the log: the on-disk format round trip, segment roll, torn tails versus corruption
//! (decided by the vouch field), crafted records, group commit and a model-based proptest.
//!
//! Damage is done with plain file I/O on the segment files after the `Log` is dropped, the way
//! a crash or a bad disk would leave them. Most of the recovery tests are tables: each case names
//! the damage and the expected outcome.

use super::record::*;
use super::*;
use crate::config::SyncMode;
use crate::xa::{XA_HEURCOM, XA_HEURHAZ, XA_HEURMIX, XA_HEURRB};
use crate::xid::Xid;
use proptest::prelude::*;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A private (0700) temporary directory, as a store needs.
fn private_dir() -> TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap()
}

/// Segment size of most tests: small, so that a few records roll the log.
const SEG: u64 = 64 << 10;
/// A wall-clock time records state (2023-11-14T22:13:20Z, in ns since the Unix epoch).
const AT: u64 = 1_700_000_000_000_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An owned copy of a [`Record`], so replayed records can be kept and compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Put {
        tag: u64,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tag: u64,
        key: Vec<u8>,
    },
    Prepare {
        tag: u64,
        xid: Xid,
        at: Option<u64>,
    },
    Commit {
        tag: u64,
    },
    Rollback {
        tag: u64,
    },
    Heuristic {
        tag: u64,
        outcome: i32,
        xid: Xid,
        reason: Vec<u8>,
        at: Option<u64>,
    },
    Forget {
        tag: u64,
    },
    Move {
        old: u64,
        new: u64,
        xid: Xid,
        at: Option<u64>,
    },
}

impl Rec {
    fn as_record(&self) -> Record<'_> {
        match self {
            Rec::Put { tag, key, value } => Record::Put {
                tag: *tag,
                key,
                value,
            },
            Rec::Delete { tag, key } => Record::Delete { tag: *tag, key },
            Rec::Prepare { tag, xid, at } => Record::Prepare {
                tag: *tag,
                xid: *xid,
                at: *at,
            },
            Rec::Commit { tag } => Record::Commit { tag: *tag },
            Rec::Rollback { tag } => Record::Rollback { tag: *tag },
            Rec::Heuristic {
                tag,
                outcome,
                xid,
                reason,
                at,
            } => Record::Heuristic {
                tag: *tag,
                outcome: *outcome,
                xid: *xid,
                reason,
                at: *at,
            },
            Rec::Forget { tag } => Record::Forget { tag: *tag },
            Rec::Move { old, new, xid, at } => Record::Move {
                old: *old,
                new: *new,
                xid: *xid,
                at: *at,
            },
        }
    }

    fn of(r: &Record<'_>) -> Rec {
        match *r {
            Record::Put { tag, key, value } => Rec::Put {
                tag,
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Record::Delete { tag, key } => Rec::Delete {
                tag,
                key: key.to_vec(),
            },
            Record::Prepare { tag, xid, at } => Rec::Prepare { tag, xid, at },
            Record::Commit { tag } => Rec::Commit { tag },
            Record::Rollback { tag } => Rec::Rollback { tag },
            Record::Heuristic {
                tag,
                outcome,
                xid,
                reason,
                at,
            } => Rec::Heuristic {
                tag,
                outcome,
                xid,
                reason: reason.to_vec(),
                at,
            },
            Record::Forget { tag } => Rec::Forget { tag },
            Record::Move { old, new, xid, at } => Rec::Move { old, new, xid, at },
        }
    }

    /// Payload length as the format defines it.
    fn payload_len(&self) -> usize {
        let xid_len = |x: &Xid| 10 + x.gtrid().len() + x.bqual().len();
        match self {
            Rec::Put { key, value, .. } => 16 + key.len() + value.len(),
            Rec::Delete { key, .. } => 12 + key.len(),
            Rec::Prepare { xid, .. } => 16 + xid_len(xid),
            Rec::Commit { .. } | Rec::Rollback { .. } | Rec::Forget { .. } => 8,
            Rec::Heuristic { xid, reason, .. } => 20 + xid_len(xid) + 4 + reason.len(),
            Rec::Move { xid, .. } => 24 + xid_len(xid),
        }
    }

    /// Bytes the record takes in the log: header, payload, padding to 8.
    fn total(&self) -> u64 {
        ((REC_HEADER + self.payload_len() + 7) & !7) as u64
    }
}

type Replayed = Vec<(Lsn, Rec)>;

/// Opens the log in `dir`, collecting every replayed record.
fn open_log(dir: &Path, size: u64, sync: SyncMode) -> Result<(Log, Replayed), LogError> {
    let mut seen = Vec::new();
    let log = Log::open(dir, size, sync, &mut |lsn, rec| {
        seen.push((lsn, Rec::of(&rec)));
        Ok(())
    })?;
    Ok((log, seen))
}

/// Opens the log with the default test settings; panics on failure.
fn reopen(dir: &Path) -> (Log, Replayed) {
    reopen_with(dir, SEG, SyncMode::Msync)
}

fn reopen_with(dir: &Path, size: u64, sync: SyncMode) -> (Log, Replayed) {
    open_log(dir, size, sync).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// Unwraps a `LogError::Corrupt` from an open, panicking on anything else.
fn expect_corrupt(r: Result<(Log, Replayed), LogError>) -> (PathBuf, u64, String) {
    match r {
        Err(LogError::Corrupt { file, offset, what }) => (file, offset, what),
        Err(e) => panic!("expected LogError::Corrupt, got {e}"),
        Ok((_, seen)) => panic!(
            "expected LogError::Corrupt, but open succeeded and replayed {} records",
            seen.len()
        ),
    }
}

/// Ids of the `log-*.seg` files in `dir`, sorted.
fn seg_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            n.strip_prefix("log-")
                .and_then(|n| n.strip_suffix(".seg"))
                .map(|h| u64::from_str_radix(h, 16).expect("hex id"))
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Names of every file in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every `log-*.seg` file of `dir` with its bytes, by name.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    seg_ids(dir)
        .into_iter()
        .map(|id| {
            (
                seg_name(id),
                std::fs::read(seg_path(dir, id)).expect("read segment"),
            )
        })
        .collect()
}

fn file_bytes(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    b
}

fn put_bytes(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all_at(bytes, off)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn flip_byte(path: &Path, off: u64) {
    let b = file_bytes(path, off, 1)[0];
    put_bytes(path, off, &[b ^ 0xff]);
}

fn zero_bytes(path: &Path, off: u64, len: usize) {
    put_bytes(path, off, &vec![0u8; len]);
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// The file and offset of `lsn`, for a log whose segments are all `SEG` bytes.
fn where_is(dir: &Path, lsn: Lsn) -> (PathBuf, u64) {
    (seg_path(dir, lsn / SEG + 1), lsn % SEG)
}

/// The salt in a segment file's header.
fn salt_of(path: &Path) -> u64 {
    le_u64(&file_bytes(path, 40, 8), 0)
}

/// A temporary directory on tmpfs when there is one: the tests that open a log hundreds of
/// times would otherwise spend their time in `msync`, whose durability they do not test.
fn fast_tempdir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(shm)
        {
            return d;
        }
    }
    private_dir()
}

/// Copies every file of `from` into a fresh temporary directory.
fn copy_dir(from: &Path) -> TempDir {
    let to = fast_tempdir();
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.path().join(e.file_name())).expect("copy");
    }
    to
}

/// Deterministic, never-zero filler bytes (so zeroing any suffix changes them).
fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|j| ((j * 31 + seed * 7) % 251) as u8 + 1)
        .collect()
}

fn key8(i: usize) -> Vec<u8> {
    format!("key{:05}", i % 100_000).into_bytes()
}

fn xid(format_id: i64, gtrid: &[u8], bqual: &[u8]) -> Xid {
    Xid::from_parts(format_id, gtrid, bqual).expect("valid xid")
}

/// The record a script letter stands for; `i` makes it unique.
///
/// | letter | record | total size |
/// |---|---|---|
/// | `s` | COMMIT | 32 |
/// | `r` | ROLLBACK | 32 |
/// | `f` | FORGET | 32 |
/// | `p` | PUT, 3-byte key, 2-byte value (3 padding bytes) | 48 |
/// | `d` | DELETE, 8-byte key (4 padding bytes) | 48 |
/// | `v` | PUT, 8-byte key, 16-byte value (no padding) | 64 |
/// | `x` | PREPARE, 3+3 byte XID (no padding) | 48 |
/// | `h` | HEURISTIC, 2+2 byte XID, 2-byte reason (no padding) | 56 |
/// | `m` | MOVE, 3+3 byte XID (no padding) | 56 |
/// | `b` | PUT, 8-byte key, 3000-byte value (no padding) | 3048 |
fn script_rec(c: char, i: usize) -> Rec {
    let tag = i as u64 + 1;
    match c {
        's' => Rec::Commit { tag },
        'r' => Rec::Rollback { tag },
        'f' => Rec::Forget { tag },
        'p' => Rec::Put {
            tag,
            key: b"abc".to_vec(),
            value: vec![b'0' + (i % 10) as u8, b'!'],
        },
        'd' => Rec::Delete { tag, key: key8(i) },
        'v' => Rec::Put {
            tag,
            key: key8(i),
            value: pattern(i, 16),
        },
        'x' => Rec::Prepare {
            tag,
            xid: xid(i as i64, &pattern(i, 3), &pattern(i + 1, 3)),
            at: Some(AT + i as u64),
        },
        'h' => Rec::Heuristic {
            tag,
            outcome: XA_HEURCOM,
            xid: xid(-(i as i64) - 2, &pattern(i, 2), &pattern(i + 1, 2)),
            reason: pattern(i + 2, 2),
            at: Some(AT + i as u64),
        },
        'b' => Rec::Put {
            tag,
            key: key8(i),
            value: pattern(i, 3000),
        },
        'm' => Rec::Move {
            old: tag,
            new: tag + 1000,
            xid: xid(i as i64, &pattern(i, 3), &pattern(i + 1, 3)),
            at: if i % 2 == 0 {
                Some(AT + i as u64)
            } else {
                None
            },
        },
        _ => panic!("unknown script letter {c:?}"),
    }
}

/// Runs a script on `log`: a letter appends a record (see [`script_rec`]), `S` syncs everything
/// written so far, spaces are ignored. Records are numbered from `first`.
fn run_script(log: &Log, script: &str, first: usize) -> Vec<(Appended, Rec)> {
    let mut out = Vec::new();
    for c in script.chars() {
        match c {
            ' ' => {}
            'S' => log.sync_to(log.written()).expect("sync"),
            _ => {
                let rec = script_rec(c, first + out.len());
                let a = log.append_alone(&rec.as_record()).expect("append");
                assert_eq!(a.end - a.lsn, rec.total(), "size of {rec:?}");
                out.push((a, rec));
            }
        }
    }
    out
}

/// Builds a fresh log in `dir` from a script and closes it. Besides [`run_script`]'s letters,
/// `R` closes and reopens the log (which syncs everything replayed).
fn build(dir: &Path, sync: SyncMode, script: &str) -> Vec<(Appended, Rec)> {
    let mut built = Vec::new();
    for (i, part) in script.split('R').enumerate() {
        let (log, seen) = reopen_with(dir, SEG, sync);
        if i == 0 {
            assert!(seen.is_empty(), "build wants an empty directory");
        } else {
            assert_replay(&seen, &replayed(&built), "reopen in build");
        }
        built.extend(run_script(&log, part, built.len()));
    }
    built
}

fn replayed(built: &[(Appended, Rec)]) -> Replayed {
    built.iter().map(|(a, r)| (a.lsn, r.clone())).collect()
}

/// Asserts the two replays are equal, with a readable message on failure.
fn assert_replay(got: &[(Lsn, Rec)], want: &[(Lsn, Rec)], ctx: &str) {
    if got != want {
        let first_diff = got
            .iter()
            .zip(want.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{ctx}: replayed {} records, expected {}; first difference at index {first_diff}: \
             got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(first_diff).map(|(l, _)| l),
            want.get(first_diff).map(|(l, _)| l),
        );
    }
}

/// The position of the SEGMENT_END record that closes segment `id`, given every record built.
fn segment_end_of(built: &[(Appended, Rec)], id: u64) -> Lsn {
    built
        .iter()
        .filter(|(a, _)| a.lsn / SEG + 1 == id)
        .map(|(a, _)| a.end)
        .max()
        .expect("segment has records")
}

/// A record with a valid CRC over `salt`, exactly as `write_record` lays it out.
fn craft_record(salt: u64, kind: u8, payload: &[u8], vouch: Lsn, reserved: u8) -> Vec<u8> {
    let mut h = [0u8; REC_HEADER];
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8] = kind;
    h[12] = reserved;
    h[16..24].copy_from_slice(&vouch.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[4..REC_HEADER]);
    c.update(payload);
    h[0..4].copy_from_slice(&c.finalize().to_le_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(payload);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

/// An XID as a payload encodes it, with the lengths given verbatim (so they may be invalid).
fn xid_payload(format_id: i64, glen: u8, blen: u8, data: &[u8]) -> Vec<u8> {
    let mut p = format_id.to_le_bytes().to_vec();
    p.push(glen);
    p.push(blen);
    p.extend_from_slice(data);
    p
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Asserts that `dir` holds a well-formed segment `id` with the given base and size.
fn assert_segment_header(dir: &Path, id: u64, base: Lsn, size: u64) {
    let path = seg_path(dir, id);
    let h = file_bytes(&path, 0, SEG_HEADER as usize);
    assert_eq!(&h[0..8], MAGIC, "{}", path.display());
    assert_eq!(le_u32(&h, 8), VERSION, "version");
    assert_eq!(le_u32(&h, 12), 64, "header length");
    assert_eq!(le_u64(&h, 16), id, "id");
    assert_eq!(le_u64(&h, 24), base, "base");
    assert_eq!(le_u64(&h, 32), size, "size");
    assert_eq!(le_u32(&h, 48), crc32fast::hash(&h[0..48]), "header crc");
    assert!(h[52..64].iter().all(|&b| b == 0), "reserved header bytes");
    assert_eq!(file_len(&path), size, "file length");
}

/// Runs every case of a table, even after one fails, then fails naming every failed case (each
/// failure's own message is printed by the panic hook).
fn table<C>(cases: Vec<C>, name: impl Fn(&C) -> String, run: impl Fn(C)) {
    let total = cases.len();
    let mut failed = Vec::new();
    for case in cases {
        let n = name(&case);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(case))).is_err() {
            failed.push(n);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed: {failed:#?}",
        failed.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------------------------

fn every_kind() -> Vec<Rec> {
    let max_g: Vec<u8> = (0..64).map(|i| i as u8).collect();
    let max_b: Vec<u8> = (0..64).map(|i| 200 - i as u8).collect();
    vec![
        Rec::Put {
            tag: 0,
            key: b"k".to_vec(),
            value: Vec::new(),
        },
        Rec::Put {
            tag: 1,
            key: Vec::new(),
            value: b"value with an empty key".to_vec(),
        },
        Rec::Put {
            tag: 2,
            key: b"big".to_vec(),
            value: pattern(9, 1 << 20),
        },
        Rec::Put {
            tag: u64::MAX,
            key: pattern(3, 255),
            value: pattern(4, 7),
        },
        Rec::Delete {
            tag: 0,
            key: b"k".to_vec(),
        },
        Rec::Delete {
            tag: 3,
            key: Vec::new(),
        },
        Rec::Prepare {
            tag: 4,
            xid: xid(0, b"g", b"b"),
            at: None,
        },
        Rec::Prepare {
            tag: 5,
            xid: xid(-2, &max_g, &max_b),
            at: Some(AT),
        },
        Rec::Prepare {
            tag: 6,
            xid: xid(i64::MIN, &max_g, b"q"),
            at: None,
        },
        Rec::Prepare {
            tag: 7,
            xid: xid(i64::MAX, b"gtrid", &max_b),
            at: Some(AT),
        },
        Rec::Prepare {
            tag: 8,
            xid: xid(0x1234_5678_9abc_def0, &[0; 13], &[0xff; 27]),
            at: None,
        },
        Rec::Commit { tag: 4 },
        Rec::Commit { tag: 0 },
        Rec::Rollback { tag: 6 },
        Rec::Heuristic {
            tag: 5,
            outcome: XA_HEURCOM,
            xid: xid(-2, &max_g, &max_b),
            reason: b"operator forced commit".to_vec(),
            at: Some(AT),
        },
        Rec::Heuristic {
            tag: 7,
            outcome: XA_HEURRB,
            xid: xid(i64::MAX, b"gtrid", &max_b),
            reason: Vec::new(),
            at: None,
        },
        Rec::Heuristic {
            tag: 8,
            outcome: XA_HEURMIX,
            xid: xid(1, b"a", b"b"),
            reason: pattern(1, 1000),
            at: Some(AT),
        },
        Rec::Heuristic {
            tag: 9,
            outcome: XA_HEURHAZ,
            xid: xid(-7, b"hazard", b"x"),
            reason: b"?".to_vec(),
            at: None,
        },
        Rec::Forget { tag: 5 },
        Rec::Forget { tag: u64::MAX },
    ]
}

fn check_put_values(log: &Log, recs: &[(Lsn, Rec)], ctx: &str) {
    for (lsn, rec) in recs {
        if let Rec::Put { key, value, .. } = rec {
            let mut out = b"prefix".to_vec();
            log.read_into(lsn + put_value_offset(key.len()), value.len(), &mut out)
                .unwrap_or_else(|e| panic!("{ctx}: read_into at {lsn}: {e}"));
            assert_eq!(&out[..6], b"prefix", "{ctx}: read_into appends");
            assert!(out[6..] == value[..], "{ctx}: value of the PUT at {lsn}");
        }
    }
}

#[test]
fn round_trip_every_kind() {
    // The 1 MiB value needs a bigger segment than the other tests use.
    const SIZE: u64 = 4 << 20;
    for sync in [SyncMode::Msync, SyncMode::Fdatasync, SyncMode::None] {
        let ctx = format!("sync={sync:?}");
        let dir = private_dir();
        let recs = every_kind();
        let mut want = Vec::new();
        {
            let (log, seen) = reopen_with(dir.path(), SIZE, sync);
            assert!(seen.is_empty());
            assert_eq!(
                log.written(),
                SEG_HEADER,
                "{ctx}: a new log starts after the header"
            );
            assert!(log.failed().is_none());
            let mut expect_lsn = log.written();
            for rec in &recs {
                let a = log.append_alone(&rec.as_record()).expect("append");
                assert_eq!(a.lsn, expect_lsn, "{ctx}: records are contiguous");
                assert_eq!(a.lsn % 8, 0, "{ctx}: records are 8-byte aligned");
                assert_eq!(a.end - a.lsn, rec.total(), "{ctx}: size of {rec:?}");
                assert_eq!(log.written(), a.end);
                expect_lsn = a.end;
                want.push((a.lsn, rec.clone()));
            }
            log.sync_to(log.written()).expect("sync");
            assert!(log.durable() >= log.written() || sync == SyncMode::None);
            // Values are readable before the log is closed, too.
            check_put_values(&log, &want, &ctx);
        }
        let (log, seen) = reopen_with(dir.path(), SIZE, sync);
        assert_replay(&seen, &want, &ctx);
        assert_eq!(
            log.written(),
            want.last().map(|(l, r)| l + r.total()).unwrap()
        );
        check_put_values(&log, &seen, &ctx);
        assert_eq!(
            seg_ids(dir.path()),
            vec![1],
            "{ctx}: everything fits in segment 1"
        );
        assert_segment_header(dir.path(), 1, 0, SIZE);
        drop(log);
        // Opening again without changes replays the same and changes nothing.
        let (log2, seen2) = reopen_with(dir.path(), SIZE, sync);
        assert_replay(&seen2, &want, &ctx);
        assert_eq!(
            log2.written(),
            want.last().map(|(l, r)| l + r.total()).unwrap()
        );
        assert_eq!(seg_ids(dir.path()), vec![1]);
    }
}

#[test]
fn unsynced_appends_survive_a_clean_close() {
    // Without a crash, bytes written through the mapping are in the page cache: a reopen sees
    // them even though no sync covered them.
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "svxhpdrf");
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&built), "unsynced");
}

#[test]
fn appends_continue_after_reopen() {
    let dir = private_dir();
    let mut built = build(dir.path(), SyncMode::Msync, "svS");
    for round in 0..3 {
        let (log, seen) = reopen(dir.path());
        assert_replay(&seen, &replayed(&built), &format!("round {round}"));
        assert_eq!(log.written(), built.last().unwrap().0.end);
        let more = run_script(&log, "xpS", built.len());
        assert_eq!(
            more[0].0.lsn,
            built.last().unwrap().0.end,
            "appends resume at the end"
        );
        built.extend(more);
    }
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&built), "final");
}

#[test]
fn visitor_error_is_reported_at_the_record() {
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "sssS");
    let bad = built[1].0.lsn;
    let mut calls = 0;
    let r = Log::open(dir.path(), SEG, SyncMode::Msync, &mut |lsn, _| {
        calls += 1;
        if lsn == bad {
            Err("rejected by the visitor".into())
        } else {
            Ok(())
        }
    });
    match r {
        Err(LogError::Corrupt { file, offset, what }) => {
            assert_eq!(file, seg_path(dir.path(), 1));
            assert_eq!(offset, bad);
            assert!(what.contains("rejected by the visitor"), "{what}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, open succeeded"),
    }
    assert_eq!(calls, 2, "replay stops at the rejected record");
}

#[test]
fn open_of_a_missing_directory_is_an_io_error() {
    let dir = private_dir();
    match open_log(&dir.path().join("nope"), SEG, SyncMode::Msync) {
        Err(LogError::Io(..)) => {}
        Err(e) => panic!("expected Io, got {e}"),
        Ok(_) => panic!("expected Io, open succeeded"),
    }
}

#[test]
fn sync_to_a_durable_lsn_returns_at_once() {
    let dir = private_dir();
    let (log, _) = reopen(dir.path());
    log.sync_to(0).expect("nothing to do");
    log.sync_to(log.written())
        .expect("open made everything durable");
    let a = log.append_alone(&Record::Commit { tag: 1 }).unwrap();
    log.sync_to(a.end).unwrap();
    assert!(log.durable() >= a.end);
    log.sync_to(a.lsn).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Segment roll
// ---------------------------------------------------------------------------------------------

#[test]
fn segment_roll_spans_several_segments() {
    let dir = private_dir();
    let script: String = (0..100)
        .map(|i| if i % 10 == 9 { "bS" } else { "b" })
        .collect();
    let built = build(dir.path(), SyncMode::Msync, &script);
    let ids = seg_ids(dir.path());
    let last = built.last().unwrap().0.lsn / SEG + 1;
    assert!(last >= 4, "100 x 3 KiB span at least 4 segments of 64 KiB");
    assert_eq!(
        ids,
        (1..=last).collect::<Vec<_>>(),
        "consecutive segment files"
    );
    for &id in &ids {
        assert_segment_header(dir.path(), id, (id - 1) * SEG, SEG);
    }
    // Each record lies inside one segment, after its header, leaving room for SEGMENT_END.
    for w in built.windows(2) {
        let (a, b) = (w[0].0, w[1].0);
        assert!(a.lsn % SEG >= SEG_HEADER);
        assert!(
            a.end % SEG + REC_HEADER as u64 <= SEG,
            "room for SEGMENT_END"
        );
        if a.lsn / SEG == b.lsn / SEG {
            assert_eq!(b.lsn, a.end);
        } else {
            // A roll: the next record opens the next segment.
            assert_eq!(b.lsn, (a.lsn / SEG + 1) * SEG + SEG_HEADER);
            // The SEGMENT_END marker is where the segment's last record ended.
            let (path, off) = where_is(dir.path(), a.end);
            let h = file_bytes(&path, off, REC_HEADER);
            assert_eq!(h[8], Kind::SegmentEnd as u8, "SEGMENT_END at {}", a.end);
            assert_eq!(le_u32(&h, 4), 0, "SEGMENT_END is empty");
        }
    }
    let (log, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&built), "after roll");
    check_put_values(&log, &seen, "after roll");
    assert_eq!(seg_ids(dir.path()), ids, "reopen creates no segment");
    // Appending after the reopen continues in the last segment and rolls on.
    let more = run_script(&log, &"b".repeat(30), built.len());
    drop(log);
    let mut all = replayed(&built);
    all.extend(replayed(&more));
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &all, "after more rolls");
    let ids = seg_ids(dir.path());
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

#[test]
fn too_big_record_is_refused_and_nothing_is_written() {
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "svS");
    let (log, _) = reopen(dir.path());
    let before = log.written();
    // The largest PUT with a 1-byte key: total + SEGMENT_END + segment header == SEG.
    let max_value = (SEG - SEG_HEADER - REC_HEADER as u64) as usize - REC_HEADER - 16 - 1;
    let whole = vec![7u8; SEG as usize];
    let too_big_value = &whole[..max_value + 1];
    let cases: Vec<(&str, Record<'_>, usize)> = vec![
        (
            "PUT one byte over",
            Record::Put {
                tag: 1,
                key: b"k",
                value: too_big_value,
            },
            16 + 1 + max_value + 1,
        ),
        (
            "PUT of a whole segment",
            Record::Put {
                tag: 1,
                key: b"k",
                value: &whole[..SEG as usize - 17],
            },
            SEG as usize,
        ),
        (
            "DELETE with a huge key",
            Record::Delete {
                tag: 1,
                key: &whole,
            },
            12 + whole.len(),
        ),
        (
            "HEURISTIC with a huge reason",
            Record::Heuristic {
                tag: 1,
                outcome: XA_HEURHAZ,
                xid: xid(1, b"g", b"b"),
                reason: &whole,
                at: None,
            },
            8 + 8 + 4 + 12 + 4 + whole.len(),
        ),
    ];
    for (name, rec, len) in &cases {
        match log.append_alone(rec) {
            Err(LogError::TooBig(n)) => assert_eq!(n, *len, "{name}"),
            Err(e) => panic!("{name}: expected TooBig, got {e}"),
            Ok(a) => panic!("{name}: expected TooBig, appended at {}", a.lsn),
        }
        assert_eq!(log.written(), before, "{name}: nothing appended");
        assert!(
            log.failed().is_none(),
            "{name}: TooBig does not fail the log"
        );
    }
    assert_eq!(
        seg_ids(dir.path()),
        vec![1],
        "no segment rolled for a refused record"
    );
    let (path, off) = where_is(dir.path(), before);
    assert!(
        file_bytes(&path, off, (SEG - off) as usize)
            .iter()
            .all(|&b| b == 0),
        "nothing written past the tail"
    );
    // The largest record that fits does fit: it rolls into a fresh segment and fills it.
    let max = Rec::Put {
        tag: 9,
        key: b"k".to_vec(),
        value: pattern(5, max_value),
    };
    let a = log
        .append_alone(&max.as_record())
        .expect("the largest record fits");
    assert_eq!(a.lsn, SEG + SEG_HEADER, "rolled into segment 2");
    assert_eq!(
        a.end,
        2 * SEG - REC_HEADER as u64,
        "only SEGMENT_END fits after it"
    );
    // The next record rolls again; SEGMENT_END takes the last 24 bytes of segment 2.
    let c = Rec::Commit { tag: 9 };
    let b = log
        .append_alone(&c.as_record())
        .expect("append after the largest");
    assert_eq!(b.lsn, 2 * SEG + SEG_HEADER);
    log.sync_to(b.end).unwrap();
    drop(log);
    let mut want = replayed(&built);
    want.push((a.lsn, max));
    want.push((b.lsn, c));
    let (log, seen) = reopen(dir.path());
    assert_replay(&seen, &want, "after the largest record");
    check_put_values(&log, &seen, "largest");
    assert_eq!(seg_ids(dir.path()), vec![1, 2, 3]);
}

#[test]
fn segment_size_may_change_between_opens() {
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, &"b".repeat(25));
    assert_eq!(seg_ids(dir.path()), vec![1, 2]);
    let (log, seen) = reopen_with(dir.path(), 2 * SEG, SyncMode::Msync);
    assert_replay(&seen, &replayed(&built), "bigger segments");
    let more = run_script(&log, &"b".repeat(25), built.len());
    drop(log);
    // Segment 3 (if any) has the new size and follows segment 2.
    assert_eq!(seg_ids(dir.path()), vec![1, 2, 3]);
    assert_segment_header(dir.path(), 3, 2 * SEG, 2 * SEG);
    let mut all = replayed(&built);
    all.extend(replayed(&more));
    let (_, seen) = reopen_with(dir.path(), SEG, SyncMode::Msync);
    assert_replay(&seen, &all, "mixed segment sizes");
}

// ---------------------------------------------------------------------------------------------
// 3. Torn tail: every byte of the last record
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Tear {
    /// The byte is flipped.
    Flip,
    /// The byte and everything after it in the record are zero (the write stopped there).
    ZeroFrom,
}

/// Offsets of `total` bytes to damage: all of them for small records, the header and a sample
/// of the payload for big ones.
fn offsets_to_tear(total: u64) -> Vec<u64> {
    if total <= 128 {
        (0..total).collect()
    } else {
        let mut v: Vec<u64> = (0..REC_HEADER as u64 + 8).collect();
        v.extend((REC_HEADER as u64 + 8..total).step_by(61));
        v.push(total - 1);
        v
    }
}

#[test]
fn torn_last_record_is_cut_at_every_byte() {
    // (what the case is, script; the last record is the one torn)
    let fill = |n: usize| "b".repeat(n);
    let cases: Vec<(&str, String)> = vec![
        ("PUT, nothing synced since open", "ssssv".into()),
        (
            "PUT, everything before it synced (it vouches for itself)",
            "ssssSv".into(),
        ),
        ("PREPARE after several syncs", "sSpSdSx".into()),
        (
            "HEURISTIC in segment 2, after a roll",
            format!("sS{}Sh", fill(22)),
        ),
        (
            "big PUT that rolled into segment 2",
            format!("s{}Sb", fill(21)),
        ),
        ("first record after open of an empty log", "v".into()),
    ];
    for (name, script) in &cases {
        let template = fast_tempdir();
        let built = build(template.path(), SyncMode::Msync, script);
        let n = built.len();
        let (last, last_rec) = built[n - 1].clone();
        assert_eq!(
            last_rec.payload_len() % 8,
            0,
            "{name}: the torn record must have no padding (padding is not checksummed)"
        );
        let keep = replayed(&built[..n - 1]);
        let lpath = where_is(template.path(), last.lsn).0;
        let last_seg = last.lsn / SEG + 1;
        let total = last.end - last.lsn;
        for at in offsets_to_tear(total) {
            for tear in [Tear::Flip, Tear::ZeroFrom] {
                let ctx = format!("{name}: {tear:?} at byte {at} of the last record");
                let dir = copy_dir(template.path());
                let (path, off) = where_is(dir.path(), last.lsn);
                assert_eq!(path.file_name(), lpath.file_name());
                match tear {
                    Tear::Flip => flip_byte(&path, off + at),
                    Tear::ZeroFrom => zero_bytes(&path, off + at, (total - at) as usize),
                }
                let (log, seen) = open_log(dir.path(), SEG, SyncMode::Msync)
                    .unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
                assert_replay(&seen, &keep, &ctx);
                assert_eq!(log.written(), last.lsn, "{ctx}: appends resume at the cut");
                assert_eq!(
                    seg_ids(dir.path()),
                    (1..=last_seg).collect::<Vec<_>>(),
                    "{ctx}: segments"
                );
                assert!(
                    file_bytes(&path, off, (SEG - off) as usize)
                        .iter()
                        .all(|&b| b == 0),
                    "{ctx}: the torn region is zeroed"
                );
                // New appends take the torn record's place; no stale record reappears.
                let more = run_script(&log, "vs", 1000);
                assert_eq!(more[0].0.lsn, last.lsn, "{ctx}");
                drop(log);
                let mut want = keep.clone();
                want.extend(replayed(&more));
                let (_, seen) = open_log(dir.path(), SEG, SyncMode::Msync)
                    .unwrap_or_else(|e| panic!("{ctx}: second open failed: {e}"));
                assert_replay(&seen, &want, &format!("{ctx}, after appending"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3/4. Damage table: torn tail or corruption, decided by the vouch field
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Flip byte `at` of record `rec`.
    Flip { rec: usize, at: u64 },
    /// Zero all of record `rec`.
    ZeroRecord { rec: usize },
    /// Flip a byte of the SEGMENT_END that closes segment `seg`.
    FlipSegmentEnd { seg: u64 },
    /// Zero the SEGMENT_END that closes segment `seg`.
    ZeroSegmentEnd { seg: u64 },
    /// A crash during the roll out of record `rec`'s segment (before the seal completed, so
    /// nothing was written to a later segment): zero `rec` and the rest of its segment, and
    /// everything after the header in every later segment.
    CrashInRoll { rec: usize },
    /// As [`Damage::CrashInRoll`], losing only the SEGMENT_END that closes segment `seg`.
    CrashInRollAtSegmentEnd { seg: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// Open fails with Corrupt naming record `rec`'s file and offset.
    CorruptAtRecord(usize),
    /// Open fails with Corrupt naming the SEGMENT_END that closes segment `seg`.
    CorruptAtSegmentEnd(u64),
    /// Open succeeds, replays the first `keep` records and cuts the rest; `segs` segments
    /// remain.
    Torn { keep: usize, segs: u64 },
    /// The damage is harmless: everything is replayed.
    Intact,
}

struct DamageCase {
    name: &'static str,
    sync: SyncMode,
    /// The sync mode of the open that finds the damage (usually `sync`).
    open: SyncMode,
    script: String,
    damage: Damage,
    outcome: Outcome,
}

fn damage_cases() -> Vec<DamageCase> {
    use Damage::*;
    use Outcome::*;
    let fill = "b".repeat(22); // after "s", the 22nd 'b' rolls into segment 2
    let case = |name, sync, script: &str, damage, outcome| DamageCase {
        name,
        sync,
        open: sync,
        script: script.to_string(),
        damage,
        outcome,
    };
    vec![
        case(
            "payload byte of a synced record vouched for by a later one",
            SyncMode::Msync,
            "svvsSs",
            Flip { rec: 2, at: 30 },
            CorruptAtRecord(2),
        ),
        case(
            "CRC field of the first record, vouched for",
            SyncMode::Msync,
            "sssSs",
            Flip { rec: 0, at: 0 },
            CorruptAtRecord(0),
        ),
        case(
            "length field of a synced record",
            SyncMode::Msync,
            "sssSs",
            Flip { rec: 1, at: 4 },
            CorruptAtRecord(1),
        ),
        case(
            "kind byte of a synced record",
            SyncMode::Msync,
            "sssSs",
            Flip { rec: 1, at: 8 },
            CorruptAtRecord(1),
        ),
        case(
            "reserved zero byte of a synced record",
            SyncMode::Msync,
            "sssSs",
            Flip { rec: 1, at: 12 },
            CorruptAtRecord(1),
        ),
        case(
            "vouch field of a synced record",
            SyncMode::Msync,
            "sSsSsSs",
            Flip { rec: 1, at: 20 },
            CorruptAtRecord(1),
        ),
        case(
            "whole synced record zeroed",
            SyncMode::Msync,
            "sxhSs",
            ZeroRecord { rec: 1 },
            CorruptAtRecord(1),
        ),
        case(
            "last record of the synced batch, vouched for by the next",
            SyncMode::Msync,
            "sssSs",
            Flip { rec: 2, at: 27 },
            CorruptAtRecord(2),
        ),
        case(
            "vouched for by records several syncs later",
            SyncMode::Msync,
            "ssSssSssSs",
            Flip { rec: 0, at: 26 },
            CorruptAtRecord(0),
        ),
        case(
            "synced batch with nothing after it reads as torn (documented limitation)",
            SyncMode::Msync,
            "sssS",
            Flip { rec: 1, at: 26 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "unsynced middle record: later records vouch only for earlier ones",
            SyncMode::Msync,
            "sSsss",
            Flip { rec: 2, at: 26 },
            Torn { keep: 2, segs: 1 },
        ),
        case(
            "unsynced record followed by a sync-less tail zeroed",
            SyncMode::Msync,
            "sSvvv",
            ZeroRecord { rec: 1 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "record in segment 1 vouched for by a record in segment 2",
            SyncMode::Msync,
            &format!("svs{fill}Ss"),
            Flip { rec: 1, at: 40 },
            CorruptAtRecord(1),
        ),
        case(
            "synced record in segment 2 vouched for by a later one",
            SyncMode::Msync,
            &format!("s{fill}vvSs"),
            Flip { rec: 23, at: 30 },
            CorruptAtRecord(23),
        ),
        case(
            "SEGMENT_END vouched for by a record in the next segment",
            SyncMode::Msync,
            &format!("s{fill}Ss"),
            FlipSegmentEnd { seg: 1 },
            CorruptAtSegmentEnd(1),
        ),
        case(
            "SEGMENT_END zeroed, vouched for",
            SyncMode::Msync,
            &format!("s{fill}Ss"),
            ZeroSegmentEnd { seg: 1 },
            CorruptAtSegmentEnd(1),
        ),
        case(
            "SEGMENT_END zeroed, a record in segment 2 after it (the roll synced the SEGMENT_END)",
            SyncMode::Msync,
            &format!("sS{fill}s"),
            ZeroSegmentEnd { seg: 1 },
            CorruptAtSegmentEnd(1),
        ),
        case(
            "SEGMENT_END flipped, synced by nothing but the roll",
            SyncMode::Msync,
            &format!("s{fill}"),
            FlipSegmentEnd { seg: 1 },
            CorruptAtSegmentEnd(1),
        ),
        case(
            "crash during the roll: SEGMENT_END lost, segment 2 empty: the roll is undone",
            SyncMode::Msync,
            &format!("sS{fill}"),
            CrashInRollAtSegmentEnd { seg: 1 },
            Torn { keep: 22, segs: 1 },
        ),
        case(
            "first record of segment 2 never synced",
            SyncMode::Msync,
            &format!("s{fill}s"),
            Flip { rec: 22, at: 3 },
            Torn { keep: 22, segs: 2 },
        ),
        case(
            "record in segment 1 synced by no sync_to but by the roll's seal, records after it",
            SyncMode::Msync,
            &format!("sSv{fill}ss"),
            Flip { rec: 1, at: 30 },
            CorruptAtRecord(1),
        ),
        case(
            "crash during the roll: unsynced records of segment 1 lost, segment 2 empty",
            SyncMode::Msync,
            &format!("sSv{fill}"),
            CrashInRoll { rec: 1 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "sync=none: a record in segment 1 damaged, whole segments after it",
            SyncMode::None,
            &format!("s{fill}{fill}vv"),
            Flip { rec: 3, at: 30 },
            CorruptAtRecord(3),
        ),
        DamageCase {
            open: SyncMode::Msync,
            ..case(
                "sync=none: a record in segment 1 damaged, opened with sync=msync",
                SyncMode::None,
                &format!("s{fill}{fill}vv"),
                Flip { rec: 3, at: 30 },
                CorruptAtRecord(3),
            )
        },
        case(
            "sync=none: the first record of the log damaged, whole segments after it",
            SyncMode::None,
            &format!("s{fill}{fill}"),
            Flip { rec: 0, at: 5 },
            CorruptAtRecord(0),
        ),
        case(
            "sync=none: the SEGMENT_END of segment 1 damaged, a record after it",
            SyncMode::None,
            &format!("s{fill}v"),
            FlipSegmentEnd { seg: 1 },
            CorruptAtSegmentEnd(1),
        ),
        case(
            "sync=none: damage in segment 2, segment 3 after it",
            SyncMode::None,
            &format!("s{fill}{fill}v"),
            Flip { rec: 30, at: 100 },
            CorruptAtRecord(30),
        ),
        case(
            "sync=none: crash during the roll, everything of segment 1 but its first record lost",
            SyncMode::None,
            &format!("s{fill}"),
            CrashInRoll { rec: 1 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "sync=none: damage in the last segment reads as a torn tail (what sync=none risks)",
            SyncMode::None,
            &format!("s{fill}vvvv"),
            Flip { rec: 24, at: 30 },
            Torn { keep: 24, segs: 2 },
        ),
        case(
            "fdatasync: unvouched record in segment 1, a record in segment 2 after it",
            SyncMode::Fdatasync,
            &format!("s{fill}s"),
            Flip { rec: 1, at: 30 },
            CorruptAtRecord(1),
        ),
        case(
            "record before a reopen, vouched for by a record appended after it",
            SyncMode::Msync,
            "svRs",
            Flip { rec: 1, at: 30 },
            CorruptAtRecord(1),
        ),
        case(
            "last record before a reopen, vouched for after it (open synced it)",
            SyncMode::Msync,
            "ssRs",
            Flip { rec: 1, at: 26 },
            CorruptAtRecord(1),
        ),
        case(
            "record before a reopen, nothing appended after it: torn",
            SyncMode::Msync,
            "ssR",
            Flip { rec: 1, at: 26 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "record appended after a reopen, not synced: torn",
            SyncMode::Msync,
            "ssRss",
            Flip { rec: 2, at: 26 },
            Torn { keep: 2, segs: 1 },
        ),
        case(
            "sync=none: what open replayed is vouched for after it",
            SyncMode::None,
            "ssRs",
            Flip { rec: 0, at: 26 },
            CorruptAtRecord(0),
        ),
        case(
            "record in segment 1 vouched for after a reopen in segment 2",
            SyncMode::Msync,
            &format!("s{fill}Rs"),
            Flip { rec: 3, at: 40 },
            CorruptAtRecord(3),
        ),
        case(
            "sync=none vouches for nothing written since open",
            SyncMode::None,
            "sssSs",
            Flip { rec: 1, at: 26 },
            Torn { keep: 1, segs: 1 },
        ),
        case(
            "fdatasync vouches like msync",
            SyncMode::Fdatasync,
            "sssSs",
            Flip { rec: 1, at: 26 },
            CorruptAtRecord(1),
        ),
        case(
            "fdatasync, across a roll",
            SyncMode::Fdatasync,
            &format!("sv{fill}Ss"),
            Flip { rec: 1, at: 44 },
            CorruptAtRecord(1),
        ),
        case(
            "padding bytes are not checksummed: a flipped padding byte is harmless",
            SyncMode::Msync,
            "spsSs",
            Flip {
                rec: 1,
                at: 24 + 21,
            },
            Intact,
        ),
    ]
}

#[test]
fn damage_table() {
    table(
        damage_cases(),
        |c| c.name.to_string(),
        |case| {
            let ctx = case.name;
            let dir = private_dir();
            let built = build(dir.path(), case.sync, &case.script);
            let target = match case.damage {
                Damage::Flip { rec, at } => {
                    let (path, off) = where_is(dir.path(), built[rec].0.lsn);
                    flip_byte(&path, off + at);
                    built[rec].0.lsn
                }
                Damage::ZeroRecord { rec } => {
                    let (a, _) = built[rec];
                    let (path, off) = where_is(dir.path(), a.lsn);
                    zero_bytes(&path, off, (a.end - a.lsn) as usize);
                    a.lsn
                }
                Damage::FlipSegmentEnd { seg } => {
                    let lsn = segment_end_of(&built, seg);
                    let (path, off) = where_is(dir.path(), lsn);
                    assert_eq!(
                        file_bytes(&path, off + 8, 1)[0],
                        Kind::SegmentEnd as u8,
                        "{ctx}"
                    );
                    flip_byte(&path, off + 2);
                    lsn
                }
                Damage::ZeroSegmentEnd { seg } => {
                    let lsn = segment_end_of(&built, seg);
                    let (path, off) = where_is(dir.path(), lsn);
                    assert_eq!(
                        file_bytes(&path, off + 8, 1)[0],
                        Kind::SegmentEnd as u8,
                        "{ctx}"
                    );
                    zero_bytes(&path, off, REC_HEADER);
                    lsn
                }
                Damage::CrashInRoll { .. } | Damage::CrashInRollAtSegmentEnd { .. } => {
                    let lsn = match case.damage {
                        Damage::CrashInRoll { rec } => built[rec].0.lsn,
                        Damage::CrashInRollAtSegmentEnd { seg } => segment_end_of(&built, seg),
                        _ => unreachable!(),
                    };
                    let (path, off) = where_is(dir.path(), lsn);
                    zero_bytes(&path, off, (SEG - off) as usize);
                    for id in seg_ids(dir.path())
                        .into_iter()
                        .filter(|&id| id > lsn / SEG + 1)
                    {
                        zero_bytes(
                            &seg_path(dir.path(), id),
                            SEG_HEADER,
                            (SEG - SEG_HEADER) as usize,
                        );
                    }
                    lsn
                }
            };
            let before = segment_files(dir.path());
            let result = open_log(dir.path(), SEG, case.open);
            match case.outcome {
                Outcome::CorruptAtRecord(_) | Outcome::CorruptAtSegmentEnd(_) => {
                    let named = match case.outcome {
                        Outcome::CorruptAtRecord(rec) => built[rec].0.lsn,
                        Outcome::CorruptAtSegmentEnd(seg) => segment_end_of(&built, seg),
                        _ => unreachable!(),
                    };
                    let (file, offset, what) = match result {
                        Err(LogError::Corrupt { file, offset, what }) => (file, offset, what),
                        Err(e) => panic!("{ctx}: expected Corrupt, got {e}"),
                        Ok((_, seen)) => panic!(
                            "{ctx}: expected Corrupt, open replayed {} of {} records",
                            seen.len(),
                            built.len()
                        ),
                    };
                    let (want_file, want_off) = where_is(dir.path(), named);
                    assert_eq!(file, want_file, "{ctx}: file ({what})");
                    assert_eq!(offset, want_off, "{ctx}: offset ({what})");
                    // Nothing was cut or deleted by the failed open.
                    let last = built.last().unwrap().0.lsn / SEG + 1;
                    assert_eq!(seg_ids(dir.path()), (1..=last).collect::<Vec<_>>(), "{ctx}");
                    assert!(segment_files(dir.path()) == before, "{ctx}: a file changed");
                    let again = expect_corrupt(open_log(dir.path(), SEG, case.open));
                    assert_eq!((again.0, again.1), (want_file, want_off), "{ctx}: stable");
                }
                Outcome::Torn { keep, segs } => {
                    let (log, seen) = result.unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
                    assert_replay(&seen, &replayed(&built[..keep]), ctx);
                    assert_eq!(log.written(), target, "{ctx}: appends resume at the damage");
                    assert_eq!(seg_ids(dir.path()), (1..=segs).collect::<Vec<_>>(), "{ctx}");
                    let (path, off) = where_is(dir.path(), target);
                    assert!(
                        file_bytes(&path, off, (SEG - off) as usize)
                            .iter()
                            .all(|&b| b == 0),
                        "{ctx}: everything from the damage on is zeroed"
                    );
                    let more = run_script(&log, "vSs", 1000);
                    drop(log);
                    let mut want = replayed(&built[..keep]);
                    want.extend(replayed(&more));
                    let (_, seen) = reopen_with(dir.path(), SEG, case.open);
                    assert_replay(&seen, &want, &format!("{ctx}, after appending"));
                }
                Outcome::Intact => {
                    let (_, seen) = result.unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
                    assert_replay(&seen, &replayed(&built), ctx);
                }
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Crafted records: valid checksum, bad content; and the vouch scan
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Crafted {
    /// Open fails with Corrupt at the crafted record.
    Corrupt,
    /// The crafted record is invalid and nothing vouches for it: cut as a torn tail.
    Torn,
    /// The crafted record is well formed and replayed.
    Replayed,
}

struct CraftCase {
    name: &'static str,
    kind: u8,
    payload: Vec<u8>,
    /// Salt to checksum with: `None` is the segment's own.
    salt: Option<u64>,
    /// Value of header byte 12 (one of the bytes that must be zero).
    reserved: u8,
    outcome: Crafted,
}

fn craft_cases() -> Vec<CraftCase> {
    let tag = 77u64.to_le_bytes();
    let good_xid = xid_payload(5, 2, 3, b"ggbbb");
    // PREPARE, HEURISTIC and MOVE carry a time after their tag (version 2).
    let time = AT.to_le_bytes();
    let c = |name, kind, payload: Vec<u8>, outcome| CraftCase {
        name,
        kind,
        payload,
        salt: None,
        reserved: 0,
        outcome,
    };
    use Crafted::*;
    vec![
        // Sanity: the crafting matches write_record, or the other cases prove nothing.
        c(
            "well-formed COMMIT",
            Kind::Commit as u8,
            tag.to_vec(),
            Replayed,
        ),
        c(
            "well-formed PUT",
            Kind::Put as u8,
            cat(&[&tag, &3u32.to_le_bytes(), &2u32.to_le_bytes(), b"keyvv"]),
            Replayed,
        ),
        c(
            "well-formed HEURISTIC",
            Kind::Heuristic as u8,
            cat(&[
                &tag,
                &time,
                &XA_HEURRB.to_le_bytes(),
                &good_xid,
                &2u32.to_le_bytes(),
                b"ok",
            ]),
            Replayed,
        ),
        // Valid checksum, payload that does not decode: corruption.
        c(
            "COMMIT with 16-byte payload",
            Kind::Commit as u8,
            [tag, tag].concat(),
            Corrupt,
        ),
        c(
            "COMMIT with empty payload",
            Kind::Commit as u8,
            Vec::new(),
            Corrupt,
        ),
        c(
            "ROLLBACK with 7-byte payload",
            Kind::Rollback as u8,
            tag[..7].to_vec(),
            Corrupt,
        ),
        c(
            "FORGET with 9-byte payload",
            Kind::Forget as u8,
            cat(&[&tag, b"x"]),
            Corrupt,
        ),
        c(
            "PUT shorter than its fixed part",
            Kind::Put as u8,
            tag.to_vec(),
            Corrupt,
        ),
        c(
            "PUT whose key length runs past the payload",
            Kind::Put as u8,
            cat(&[&tag, &9u32.to_le_bytes(), &2u32.to_le_bytes(), b"keyvv"]),
            Corrupt,
        ),
        c(
            "PUT with a byte after its value",
            Kind::Put as u8,
            cat(&[&tag, &3u32.to_le_bytes(), &2u32.to_le_bytes(), b"keyvvX"]),
            Corrupt,
        ),
        c(
            "PUT with huge lengths",
            Kind::Put as u8,
            cat(&[&tag, &u32::MAX.to_le_bytes(), &u32::MAX.to_le_bytes()]),
            Corrupt,
        ),
        c(
            "DELETE whose key length does not match",
            Kind::Delete as u8,
            cat(&[&tag, &4u32.to_le_bytes(), b"key"]),
            Corrupt,
        ),
        c(
            "DELETE shorter than its fixed part",
            Kind::Delete as u8,
            cat(&[&tag, b"k"]),
            Corrupt,
        ),
        c(
            "PREPARE with gtrid length 0",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &xid_payload(1, 0, 3, b"bbb")]),
            Corrupt,
        ),
        c(
            "PREPARE with bqual length 0",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &xid_payload(1, 3, 0, b"ggg")]),
            Corrupt,
        ),
        c(
            "PREPARE with gtrid length 65",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &xid_payload(1, 65, 1, &[1; 66])]),
            Corrupt,
        ),
        c(
            "PREPARE of the null XID (formatID -1)",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &xid_payload(-1, 2, 3, b"ggbbb")]),
            Corrupt,
        ),
        c(
            "PREPARE with XID data cut short",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &xid_payload(1, 2, 3, b"ggbb")]),
            Corrupt,
        ),
        c(
            "PREPARE with a trailing byte",
            Kind::Prepare as u8,
            cat(&[&tag, &time, &good_xid, b"!"]),
            Corrupt,
        ),
        c(
            "PREPARE without an XID",
            Kind::Prepare as u8,
            cat(&[&tag, &time]),
            Corrupt,
        ),
        c(
            "PREPARE without its time",
            Kind::Prepare as u8,
            tag.to_vec(),
            Corrupt,
        ),
        c(
            "HEURISTIC whose reason length does not match",
            Kind::Heuristic as u8,
            cat(&[
                &tag,
                &time,
                &XA_HEURCOM.to_le_bytes(),
                &good_xid,
                &3u32.to_le_bytes(),
                b"ok",
            ]),
            Corrupt,
        ),
        c(
            "HEURISTIC without a reason length",
            Kind::Heuristic as u8,
            cat(&[&tag, &time, &XA_HEURCOM.to_le_bytes(), &good_xid]),
            Corrupt,
        ),
        c(
            "HEURISTIC of the null XID",
            Kind::Heuristic as u8,
            cat(&[
                &tag,
                &time,
                &XA_HEURCOM.to_le_bytes(),
                &xid_payload(-1, 2, 3, b"ggbbb"),
                &0u32.to_le_bytes(),
            ]),
            Corrupt,
        ),
        // Invalid records (kind unknown, reserved bytes, other salt) are simply not records:
        // with nothing vouching for them they are a torn tail.
        c("kind 0 with a valid checksum", 0, tag.to_vec(), Torn),
        c("kind 11 with a valid checksum", 11, tag.to_vec(), Torn),
        c("kind 255 with a valid checksum", 255, tag.to_vec(), Torn),
        CraftCase {
            reserved: 1,
            ..c(
                "nonzero reserved byte with a valid checksum",
                Kind::Commit as u8,
                tag.to_vec(),
                Torn,
            )
        },
        CraftCase {
            salt: Some(0),
            ..c(
                "COMMIT checksummed with another salt",
                Kind::Commit as u8,
                tag.to_vec(),
                Torn,
            )
        },
    ]
}

#[test]
fn crafted_record_table() {
    table(
        craft_cases(),
        |c| c.name.to_string(),
        |case| {
            let ctx = case.name;
            let dir = private_dir();
            let built = build(dir.path(), SyncMode::Msync, "svsSs");
            let tail = built.last().unwrap().0.end;
            let (path, off) = where_is(dir.path(), tail);
            let salt = case.salt.unwrap_or_else(|| salt_of(&path));
            let bytes = craft_record(salt, case.kind, &case.payload, 0, case.reserved);
            put_bytes(&path, off, &bytes);
            let result = open_log(dir.path(), SEG, SyncMode::Msync);
            match case.outcome {
                Crafted::Corrupt => {
                    let (file, offset, what) = match result {
                        Err(LogError::Corrupt { file, offset, what }) => (file, offset, what),
                        Err(e) => panic!("{ctx}: expected Corrupt, got {e}"),
                        Ok((_, seen)) => {
                            panic!("{ctx}: expected Corrupt, open replayed {}", seen.len())
                        }
                    };
                    assert_eq!((file, offset), (path.clone(), off), "{ctx}: {what}");
                }
                Crafted::Torn => {
                    let (log, seen) = result.unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
                    assert_replay(&seen, &replayed(&built), ctx);
                    assert_eq!(log.written(), tail, "{ctx}");
                    assert!(
                        file_bytes(&path, off, bytes.len()).iter().all(|&b| b == 0),
                        "{ctx}: zeroed"
                    );
                }
                Crafted::Replayed => {
                    let (log, seen) = result.unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
                    assert_eq!(seen.len(), built.len() + 1, "{ctx}");
                    assert_replay(&seen[..built.len()], &replayed(&built), ctx);
                    assert_eq!(seen[built.len()].0, tail, "{ctx}");
                    let rec = seen[built.len()].1.as_record();
                    let kind = Kind::try_from(case.kind).expect("a kind");
                    assert_eq!(
                        decode(kind, VERSION, &case.payload),
                        Some(Entry::Record(rec)),
                        "{ctx}"
                    );
                    assert_eq!(log.written(), tail + bytes.len() as u64, "{ctx}");
                }
            }
        },
    );
}

/// Record kinds are one list, [`Kind`]: the record check accepts exactly the bytes that convert
/// to a kind, every kind decodes (so none can be known to the check and cut as a torn tail by
/// the replay), and the replay of a well-formed record of each kind keeps it.
#[test]
fn every_kind_byte_is_known_to_probe_and_decode_alike() {
    let salt = 0x5eed;
    let tag = 3u64.to_le_bytes();
    let time = AT.to_le_bytes();
    // A well-formed payload of each kind; no wildcard, so a new kind must be added here.
    let example = |k: Kind| -> Vec<u8> {
        match k {
            Kind::Put => cat(&[&tag, &1u32.to_le_bytes(), &1u32.to_le_bytes(), b"kv"]),
            Kind::Delete => cat(&[&tag, &1u32.to_le_bytes(), b"k"]),
            Kind::Prepare => cat(&[&tag, &time, &xid_payload(5, 1, 1, b"gb")]),
            Kind::Commit | Kind::Rollback | Kind::Forget => tag.to_vec(),
            Kind::Heuristic => cat(&[
                &tag,
                &time,
                &XA_HEURCOM.to_le_bytes(),
                &xid_payload(5, 1, 1, b"gb"),
                &0u32.to_le_bytes(),
            ]),
            Kind::SegmentEnd => Vec::new(),
            Kind::Move => cat(&[
                &tag,
                &time,
                &4u64.to_le_bytes(),
                &xid_payload(5, 1, 1, b"gb"),
            ]),
            Kind::Checkpoint => 2u64.to_le_bytes().to_vec(),
        }
    };
    let mut kinds = Vec::new();
    for b in 0..=u8::MAX {
        let known = Kind::try_from(b);
        let payload = known.map(example).unwrap_or_else(|_| tag.to_vec());
        let bytes = craft_record(salt, b, &payload, 0, 0);
        let probed = probe(&bytes, salt, 0).map(|h| h.kind);
        assert_eq!(probed, known.ok(), "kind byte {b}");
        if let Ok(k) = known {
            assert_eq!(k as u8, b, "{k:?} converts back to its byte");
            assert!(
                decode(k, VERSION, &payload).is_some(),
                "{k:?}: a well-formed payload decodes"
            );
            kinds.push(k);
        }
    }
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    assert!(Kind::try_from(0).is_err(), "zeroed space is no record");
    // Appended records of every kind but the log's own (SEGMENT_END, CHECKPOINT) replay as
    // they were written.
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "pdxsrhfm");
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&built), "every kind");
}

/// The scan after an invalid record: a later valid record vouching for a greater LSN makes it
/// corruption; vouching for exactly its LSN or less does not.
#[test]
fn vouch_scan_table() {
    /// Where the well-formed record goes: `After(n)` bytes past the invalid position, or `At`
    /// an absolute offset of the segment file.
    #[derive(Clone, Copy)]
    enum Place {
        After(u64),
        At(u64),
    }
    use Place::*;
    // (name, vouch relative to the invalid position x, where the valid record is, whether
    // that makes it corruption)
    let cases: &[(&str, i64, Place, bool)] = &[
        ("later record vouches for x+8", 8, After(32), true),
        ("later record vouches for x+1", 1, After(32), true),
        ("later record vouches for exactly x", 0, After(32), false),
        ("later record vouches for less than x", -8, After(32), false),
        ("later record vouches for 0", -(1 << 40), After(32), false),
        (
            "later record far away vouches beyond x",
            8,
            After(40_000),
            true,
        ),
        (
            "later record right after 8 garbage bytes",
            8,
            After(8),
            true,
        ),
        (
            "later record at a page boundary after zero pages",
            8,
            At(8 * 4096),
            true,
        ),
        (
            "later record straddling a page boundary",
            8,
            At(8 * 4096 - 8),
            true,
        ),
        (
            "later record 16 bytes before a page boundary",
            8,
            At(8 * 4096 - 16),
            true,
        ),
        (
            "later record in the last bytes of the segment",
            8,
            At(SEG - 32),
            true,
        ),
        (
            "stale record at the segment's end, vouching for x",
            0,
            At(SEG - 32),
            false,
        ),
    ];
    table(
        cases.to_vec(),
        |c| c.0.to_string(),
        |(name, rel, place, corrupt)| {
            let dir = private_dir();
            let built = build(dir.path(), SyncMode::Msync, "svsSs");
            let x = built.last().unwrap().0.end;
            let (path, off) = where_is(dir.path(), x);
            // Garbage at x (not a record), then a well-formed COMMIT further on.
            put_bytes(&path, off, &[0xee; 8]);
            let vouch = (x as i64 + rel).max(0) as u64;
            let rec = craft_record(
                salt_of(&path),
                Kind::Commit as u8,
                &9u64.to_le_bytes(),
                vouch,
                0,
            );
            let at = match place {
                After(n) => off + n,
                At(a) => a,
            };
            put_bytes(&path, at, &rec);
            let result = open_log(dir.path(), SEG, SyncMode::Msync);
            if corrupt {
                let (file, offset, what) = expect_corrupt(result);
                assert_eq!((file, offset), (path.clone(), off), "{name}: {what}");
            } else {
                let (log, seen) = result.unwrap_or_else(|e| panic!("{name}: open failed: {e}"));
                assert_replay(&seen, &replayed(&built), name);
                assert_eq!(log.written(), x, "{name}");
                assert!(
                    file_bytes(&path, off, (SEG - off) as usize)
                        .iter()
                        .all(|&b| b == 0),
                    "{name}: garbage and the stale record are zeroed"
                );
                drop(log);
                let (_, seen) = reopen(dir.path());
                assert_replay(&seen, &replayed(&built), &format!("{name}, again"));
            }
        },
    );
}

/// An invalid record in a segment that a later segment follows: the later one is written only
/// after the roll sealed this one, so anything in it makes the invalid record corruption,
/// whatever it vouches for; only an empty later segment (a crash during the roll) leaves a
/// torn tail.
#[test]
fn invalid_record_in_a_sealed_segment_table() {
    let template = private_dir();
    let built = build(
        template.path(),
        SyncMode::Msync,
        &format!("s{}s", "b".repeat(22)),
    );
    assert_eq!(seg_ids(template.path()), vec![1, 2]);
    let (p2, _) = where_is(template.path(), SEG);
    // Records in segment 2 vouch for all of segment 1: the roll advanced the durable LSN.
    for (a, _) in &built[22..] {
        let (_, off) = where_is(template.path(), a.lsn);
        assert!(
            le_u64(&file_bytes(&p2, off + 16, 8), 0) >= SEG,
            "vouch at {}",
            a.lsn
        );
    }
    // What segment 2 holds after its header, and whether that makes it corruption.
    type Fill = fn(salt: u64) -> Vec<u8>;
    let cases: Vec<(&str, Fill, bool)> = vec![
        ("its records, as written", |_| Vec::new(), true),
        (
            "a record vouching for nothing (as written before the seal)",
            |salt| craft_record(salt, Kind::Commit as u8, &1u64.to_le_bytes(), 0, 0),
            true,
        ),
        ("bytes that are no record", |_| vec![0xee; 8], true),
        ("nothing: a crash during the roll", |_| vec![0; 8], false),
    ];
    table(
        cases,
        |c| c.0.to_string(),
        |(name, fill, corrupt)| {
            let dir = copy_dir(template.path());
            let d = dir.path();
            let x = built[5].0.lsn;
            let (p1, o1) = where_is(d, x);
            flip_byte(&p1, o1 + 30);
            let p2 = seg_path(d, 2);
            let bytes = fill(salt_of(&p2));
            if !bytes.is_empty() {
                zero_bytes(&p2, SEG_HEADER, (SEG - SEG_HEADER) as usize);
                put_bytes(&p2, SEG_HEADER + 64, &bytes);
            }
            let before = segment_files(d);
            let result = open_log(d, SEG, SyncMode::Msync);
            if corrupt {
                let (file, offset, what) = expect_corrupt(result);
                assert_eq!((file, offset), (p1, o1), "{name}: {what}");
                assert!(segment_files(d) == before, "{name}: a file changed");
            } else {
                let (log, seen) = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_replay(&seen, &replayed(&built[..5]), name);
                assert_eq!(log.written(), x, "{name}");
                assert_eq!(
                    seg_ids(d),
                    vec![1],
                    "{name}: the empty segment 2 is deleted"
                );
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Segment files: headers, names, gaps
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum SegDamage {
    /// Flip byte `at` of segment `seg`'s header.
    FlipHeader { seg: u64, at: u64 },
    /// Rewrite segment `seg`'s header with a valid CRC but one field changed.
    Rewrite { seg: u64, field: Field },
    /// Delete segment `seg`.
    Delete { seg: u64 },
    /// Rename segment `seg` to the name of `to`.
    Rename { seg: u64, to: u64 },
    /// Set segment `seg`'s file length.
    SetLen { seg: u64, len: u64 },
}

#[derive(Clone, Copy, Debug)]
enum Field {
    Version(u32),
    HeaderLen(u32),
    Id(u64),
    Base(u64),
    Size(u64),
}

/// `Some((seg, offset))`: Corrupt naming that segment file; `None`: Corrupt naming any file.
type SegOutcome = Option<(u64, u64)>;

#[test]
fn segment_file_table() {
    use Field::*;
    use SegDamage::*;
    let cases: &[(&str, SegDamage, SegOutcome)] = &[
        ("bad magic", FlipHeader { seg: 2, at: 0 }, Some((2, 0))),
        (
            "last magic byte",
            FlipHeader { seg: 1, at: 7 },
            Some((1, 0)),
        ),
        (
            "header CRC mismatch (base flipped)",
            FlipHeader { seg: 2, at: 25 },
            Some((2, 0)),
        ),
        (
            "header CRC mismatch (id flipped)",
            FlipHeader { seg: 3, at: 16 },
            Some((3, 0)),
        ),
        (
            "header CRC mismatch (salt flipped)",
            FlipHeader { seg: 1, at: 44 },
            Some((1, 0)),
        ),
        (
            "header CRC field flipped",
            FlipHeader { seg: 2, at: 49 },
            Some((2, 0)),
        ),
        (
            "a newer format version",
            Rewrite {
                seg: 2,
                field: Version(VERSION + 1),
            },
            Some((2, 0)),
        ),
        (
            "id differs from the file name",
            Rewrite {
                seg: 2,
                field: Id(7),
            },
            Some((2, 0)),
        ),
        (
            "id of the previous segment",
            Rewrite {
                seg: 2,
                field: Id(1),
            },
            Some((2, 0)),
        ),
        (
            "size differs from the file",
            Rewrite {
                seg: 1,
                field: Size(SEG * 2),
            },
            Some((1, 0)),
        ),
        (
            "base does not follow",
            Rewrite {
                seg: 3,
                field: Base(2 * SEG + 8),
            },
            Some((3, 0)),
        ),
        (
            "base of segment 2 is 0",
            Rewrite {
                seg: 2,
                field: Base(0),
            },
            Some((2, 0)),
        ),
        (
            "base of segment 1 is not 0",
            Rewrite {
                seg: 1,
                field: Base(8),
            },
            Some((1, 0)),
        ),
        ("missing middle segment", Delete { seg: 2 }, Some((3, 0))),
        (
            "segment renamed past a gap",
            Rename { seg: 3, to: 4 },
            Some((4, 0)),
        ),
        ("segment renamed over a gap", Rename { seg: 2, to: 5 }, None),
        (
            "file shorter than a header",
            SetLen { seg: 2, len: 10 },
            Some((2, 0)),
        ),
        (
            "file truncated",
            SetLen {
                seg: 2,
                len: SEG / 2,
            },
            Some((2, 0)),
        ),
        (
            "file extended",
            SetLen {
                seg: 3,
                len: SEG + 4096,
            },
            Some((3, 0)),
        ),
        (
            "empty segment file",
            SetLen { seg: 2, len: 0 },
            Some((2, 0)),
        ),
        (
            "header length field",
            Rewrite {
                seg: 1,
                field: HeaderLen(32),
            },
            Some((1, 0)),
        ),
        // Segments are numbered from 1 and never removed, so a log without segment 1 has lost
        // acknowledged data.
        ("missing first segment", Delete { seg: 1 }, None),
    ];
    let template = private_dir();
    let built = build(template.path(), SyncMode::Msync, &"bS".repeat(50));
    assert_eq!(seg_ids(template.path()), vec![1, 2, 3]);
    table(
        cases.to_vec(),
        |c| c.0.to_string(),
        |(name, damage, outcome)| {
            let dir = copy_dir(template.path());
            let d = dir.path();
            match damage {
                FlipHeader { seg, at } => flip_byte(&seg_path(d, seg), at),
                Rewrite { seg, field } => {
                    let path = seg_path(d, seg);
                    let mut h = file_bytes(&path, 0, SEG_HEADER as usize);
                    match field {
                        Version(v) => h[8..12].copy_from_slice(&v.to_le_bytes()),
                        HeaderLen(v) => h[12..16].copy_from_slice(&v.to_le_bytes()),
                        Id(v) => h[16..24].copy_from_slice(&v.to_le_bytes()),
                        Base(v) => h[24..32].copy_from_slice(&v.to_le_bytes()),
                        Size(v) => h[32..40].copy_from_slice(&v.to_le_bytes()),
                    }
                    let crc = crc32fast::hash(&h[0..48]);
                    h[48..52].copy_from_slice(&crc.to_le_bytes());
                    put_bytes(&path, 0, &h);
                }
                Delete { seg } => std::fs::remove_file(seg_path(d, seg)).unwrap(),
                Rename { seg, to } => std::fs::rename(seg_path(d, seg), seg_path(d, to)).unwrap(),
                SetLen { seg, len } => OpenOptions::new()
                    .write(true)
                    .open(seg_path(d, seg))
                    .unwrap()
                    .set_len(len)
                    .unwrap(),
            }
            let names_before = file_names(d);
            let result = open_log(d, SEG, SyncMode::Msync);
            let (file, offset, what) = match result {
                Err(LogError::Corrupt { file, offset, what }) => (file, offset, what),
                Err(e) => panic!("{name}: expected Corrupt, got {e}"),
                Ok((_, seen)) => panic!(
                    "{name}: expected Corrupt, open replayed {} of {} records",
                    seen.len(),
                    built.len()
                ),
            };
            if let Some((seg, off)) = outcome {
                assert_eq!((file, offset), (seg_path(d, seg), off), "{name}: {what}");
            }
            assert_eq!(
                file_names(d),
                names_before,
                "{name}: a failed open changes no file"
            );
        },
    );
}

/// Retiring a segment that is not the oldest, or reading a position no longer in the log, is
/// an error of the request: the log goes on, and the error says what is wrong instead of
/// "the log failed earlier and must be reopened" (which the RM answers with `XAER_RMFAIL`).
#[test]
fn request_errors_do_not_read_as_a_failed_log() {
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, &"bS".repeat(50));
    assert_eq!(seg_ids(dir.path()), vec![1, 2, 3]);
    let (log, _) = reopen(dir.path());
    for id in [0, 2, 3, 9] {
        let e = log.retire_oldest(id).expect_err("not the oldest");
        assert!(matches!(e, LogError::NotOldest(n) if n == id), "{e:?}");
        let msg = e.to_string();
        assert!(
            !msg.contains("reopen") && msg.contains("not the oldest"),
            "{msg}"
        );
    }
    log.retire_oldest(1).expect("retire segment 1");
    let gone = built[0].0.lsn;
    let mut out = Vec::new();
    let e = log
        .read_into(gone, 8, &mut out)
        .expect_err("segment 1 is gone");
    assert!(matches!(e, LogError::Gone(l) if l == gone), "{e:?}");
    let msg = e.to_string();
    assert!(
        !msg.contains("reopen") && msg.contains(&format!("LSN {gone}")),
        "{msg}"
    );
    assert!(log.failed().is_none());
    let more = run_script(&log, "vS", 100);
    drop(log);
    let (_, seen) = reopen(dir.path());
    assert_eq!(seen.last().map(|(l, _)| *l), Some(more[0].0.lsn));
}

// ---------------------------------------------------------------------------------------------
// 5. Directory housekeeping
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_directory_gets_segment_one() {
    let dir = private_dir();
    let (log, seen) = reopen(dir.path());
    assert!(seen.is_empty());
    assert_eq!(log.written(), SEG_HEADER);
    assert_eq!(file_names(dir.path()), vec!["log-0000000000000001.seg"]);
    assert_segment_header(dir.path(), 1, 0, SEG);
    assert!(
        file_bytes(
            &seg_path(dir.path(), 1),
            SEG_HEADER,
            (SEG - SEG_HEADER) as usize
        )
        .iter()
        .all(|&b| b == 0),
        "a new segment is zero after its header"
    );
    drop(log);
    // Reopening the empty log changes nothing; a second segment file gets a new salt.
    let salt1 = salt_of(&seg_path(dir.path(), 1));
    let (log, seen) = reopen(dir.path());
    assert!(seen.is_empty());
    assert_eq!(log.written(), SEG_HEADER);
    assert_eq!(seg_ids(dir.path()), vec![1]);
    assert_eq!(salt_of(&seg_path(dir.path(), 1)), salt1);
    run_script(&log, &"b".repeat(22), 0);
    assert_eq!(seg_ids(dir.path()), vec![1, 2]);
    assert_ne!(
        salt_of(&seg_path(dir.path(), 2)),
        salt1,
        "salt is new per segment"
    );
}

#[test]
fn stray_tmp_files_are_deleted_at_open() {
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "svS");
    let d = dir.path();
    // A segment creation that crashed before its rename, plus other junk of that shape.
    std::fs::write(d.join("log-0000000000000002.tmp"), vec![0xab; 4096]).unwrap();
    std::fs::write(d.join("log-garbage.tmp"), b"x").unwrap();
    std::fs::write(d.join("log-.tmp"), b"").unwrap();
    // Not ours: left alone.
    std::fs::write(d.join("mmxa.lock"), b"").unwrap();
    std::fs::write(d.join("notes.tmp"), b"keep").unwrap();
    std::fs::write(d.join("log-0000000000000009.seg.bak"), b"keep").unwrap();
    let (log, seen) = reopen(d);
    assert_replay(&seen, &replayed(&built), "stray tmp");
    assert_eq!(
        file_names(d),
        vec![
            "log-0000000000000001.seg",
            "log-0000000000000009.seg.bak",
            "mmxa.lock",
            "notes.tmp"
        ]
    );
    // The next roll creates segment 2 normally.
    let more = run_script(&log, &"b".repeat(22), 100);
    drop(log);
    assert_eq!(seg_ids(d), vec![1, 2]);
    let mut want = replayed(&built);
    want.extend(replayed(&more));
    let (_, seen) = reopen(d);
    assert_replay(&seen, &want, "after roll");
}

#[test]
fn stray_tmp_for_a_future_segment_does_not_break_rolls() {
    // A crash left log-2.tmp; the roll after reopen creates log-2.seg over the same name.
    let dir = private_dir();
    let built = build(dir.path(), SyncMode::Msync, "s");
    std::fs::write(dir.path().join("log-0000000000000002.tmp"), b"junk").unwrap();
    let (log, _) = reopen(dir.path());
    let more = run_script(&log, &"b".repeat(30), 1);
    drop(log);
    let mut want = replayed(&built);
    want.extend(replayed(&more));
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &want, "roll after stray tmp");
    assert!(file_names(dir.path()).iter().all(|n| !n.ends_with(".tmp")));
}

// ---------------------------------------------------------------------------------------------
// 6. SEGMENT_END as the last record, next segment missing
// ---------------------------------------------------------------------------------------------

/// A segment ends with SEGMENT_END only once its successor was created durably (the roll
/// creates it first): a last segment ending so, with no next file, has lost its successor.
#[test]
fn segment_end_with_next_segment_missing() {
    let dir = private_dir();
    let d = dir.path();
    // The 22nd 'b' rolls into segment 2; it is lost with the file.
    let built = build(d, SyncMode::Msync, &format!("s{}", "b".repeat(22)));
    assert_eq!(built.last().unwrap().0.lsn, SEG + SEG_HEADER);
    std::fs::remove_file(seg_path(d, 2)).unwrap();
    let before = segment_files(d);
    for sync in [SyncMode::Msync, SyncMode::None] {
        let (file, offset, what) = expect_corrupt(open_log(d, SEG, sync));
        let end = segment_end_of(&built, 1);
        assert_eq!((file, offset), where_is(d, end), "{what}");
        assert!(what.contains("segment 2 is missing"), "{what}");
        assert!(segment_files(d) == before, "a failed open changes no file");
    }
}

/// The first segment file a log holds must be segment 1 or the one its newest CHECKPOINT
/// names; the claims are read from the files that are there, so each way of losing the
/// oldest file, claims or not, must be reported. Nothing is changed by the failed open.
#[test]
fn missing_oldest_segment_table() {
    /// Appends 3 KiB records until the tail is in segment `id`.
    fn fill_to(log: &Log, id: u64) {
        while log.written() / SEG + 1 < id {
            run_script(log, "b", 0);
        }
    }
    /// Builds the log by `steps` (fill to segment n, or retire the oldest), then closes it.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        FillTo(u64),
        Retire,
    }
    use Step::*;
    struct Case {
        name: &'static str,
        steps: &'static [Step],
        /// Segments present after the steps.
        segs: &'static [u64],
        delete: &'static [u64],
        /// Garbage after the last record: a torn tail, which a failed open must not cut.
        torn: bool,
        /// `Some((segment file named, text))`: Corrupt; `None`: opens.
        corrupt: Option<(u64, &'static str)>,
        /// The first record replayed when it opens is in this segment.
        opens_from: u64,
    }
    let case = |name, steps, segs, delete, corrupt| Case {
        name,
        steps,
        segs,
        delete,
        torn: false,
        corrupt,
        opens_from: 0,
    };
    let cases = vec![
        case(
            "no CHECKPOINT: segment 1 deleted",
            &[FillTo(3)],
            &[1, 2, 3],
            &[1],
            Some((2, "segment 1 is missing")),
        ),
        case(
            "no CHECKPOINT: segments 1 and 2 deleted",
            &[FillTo(3)],
            &[1, 2, 3],
            &[1, 2],
            Some((3, "segments 1 to 2 are missing")),
        ),
        Case {
            torn: true,
            ..case(
                "no CHECKPOINT: segment 1 deleted, the tail torn (reported before anything is cut)",
                &[FillTo(3)],
                &[1, 2, 3],
                &[1],
                Some((2, "segment 1 is missing")),
            )
        },
        case(
            "the newest CHECKPOINT, in a later segment, names the deleted one",
            &[FillTo(3), Retire],
            &[2, 3],
            &[2],
            Some((3, "segment 2 is missing")),
        ),
        case(
            "the newest CHECKPOINT lives in the deleted segment itself",
            &[FillTo(2), Retire, FillTo(4)],
            &[2, 3, 4],
            &[2],
            Some((3, "segments 1 to 2 are missing")),
        ),
        Case {
            torn: true,
            ..case(
                "the newest CHECKPOINT lives in the deleted segment, the tail torn",
                &[FillTo(2), Retire, FillTo(4)],
                &[2, 3, 4],
                &[2],
                Some((3, "segments 1 to 2 are missing")),
            )
        },
        case(
            "every CHECKPOINT lived in deleted segments (two retirements)",
            &[FillTo(2), Retire, FillTo(3), Retire, FillTo(5)],
            &[3, 4, 5],
            &[3],
            Some((4, "segments 1 to 3 are missing")),
        ),
        case(
            "every segment deleted: an empty directory is a new log (the one case not caught)",
            &[FillTo(3), Retire],
            &[2, 3],
            &[2, 3],
            None,
        ),
        Case {
            opens_from: 3,
            ..case(
                "a segment a CHECKPOINT retired, deleted: nothing is missing",
                &[FillTo(2), Retire, FillTo(3), Retire, FillTo(4)],
                &[3, 4],
                &[],
                None,
            )
        },
    ];
    table(
        cases,
        |c| c.name.to_string(),
        |c| {
            let dir = private_dir();
            let d = dir.path();
            let (log, _) = reopen(d);
            for step in c.steps {
                match step {
                    FillTo(id) => fill_to(&log, *id),
                    Retire => {
                        let (id, _, _) = log.oldest().expect("a segment to retire");
                        log.retire_oldest(id).expect("retire");
                    }
                }
            }
            log.sync_to(log.written()).unwrap();
            let end = log.written();
            drop(log);
            if c.torn {
                let (path, off) = where_is(d, end);
                put_bytes(&path, off, &[0xee; 8]);
            }
            assert_eq!(seg_ids(d), c.segs, "{}: before the deletion", c.name);
            for id in c.delete {
                std::fs::remove_file(seg_path(d, *id)).unwrap();
            }
            let before = segment_files(d);
            let result = open_log(d, SEG, SyncMode::Msync);
            match c.corrupt {
                Some((seg, text)) => {
                    let (file, offset, what) = expect_corrupt(result);
                    assert_eq!(file, seg_path(d, seg), "{}: {what}", c.name);
                    assert_eq!(offset, 0, "{}: {what}", c.name);
                    assert!(what.contains(text), "{}: {what}", c.name);
                    assert!(segment_files(d) == before, "{}: a file changed", c.name);
                }
                None if c.delete.len() == c.segs.len() => {
                    // Every file gone: the directory is a new, empty log (see "Assumptions").
                    let (log, seen) = result.unwrap_or_else(|e| panic!("{}: {e}", c.name));
                    assert!(seen.is_empty() && log.written() == SEG_HEADER, "{}", c.name);
                }
                None => {
                    let (_, seen) = result.unwrap_or_else(|e| panic!("{}: {e}", c.name));
                    let first = seen.first().map(|(l, _)| l / SEG + 1);
                    assert_eq!(first, Some(c.opens_from), "{}", c.name);
                }
            }
        },
    );
}

#[test]
fn segment_end_then_empty_next_segment() {
    // The roll completed (segment 2 exists, SEGMENT_END written) but the first record of
    // segment 2 never reached the disk.
    let dir = private_dir();
    let d = dir.path();
    let built = build(d, SyncMode::Msync, &format!("s{}", "b".repeat(22)));
    let (p, o) = where_is(d, built[22].0.lsn);
    zero_bytes(&p, o, 3048);
    let (log, seen) = reopen(d);
    assert_replay(&seen, &replayed(&built[..22]), "empty segment 2");
    assert_eq!(seg_ids(d), vec![1, 2]);
    assert_eq!(log.written(), SEG + SEG_HEADER);
}

/// The images a power cut at `snap` can leave: synced bytes only; every prefix of the unsynced
/// writes with the next one torn inside a record header and in its middle; each of the first
/// writes alone and all but it; each of the first dirty pages alone and all but it.
fn power_cut_images(snap: &sim::Snapshot) -> Vec<sim::Cut> {
    use sim::Cut;
    let writes = snap.writes();
    let mut out = vec![Cut::Synced];
    for (k, &len) in writes.iter().enumerate() {
        for torn in [9, len / 2] {
            if torn > 0 && torn < len {
                out.push(Cut::Torn { writes: k, torn });
            }
        }
    }
    out.push(Cut::Torn {
        writes: writes.len(),
        torn: 0,
    });
    let n = writes.len();
    for i in 0..n.min(8) {
        out.push(Cut::Writes(vec![i]));
        out.push(Cut::Writes((0..n).filter(|&j| j != i).collect()));
    }
    let pages = snap.dirty_pages().len();
    for i in 0..pages.min(8) {
        out.push(Cut::Pages(vec![i]));
        out.push(Cut::Pages((0..pages).filter(|&j| j != i).collect()));
    }
    out
}

/// Power cuts across segment rolls, with and without syncs: each image a cut can leave opens,
/// never as corruption (a roll seals the segment before the next receives anything, so no
/// image holds a later segment's bytes without all of the earlier ones), to a prefix of what
/// was appended that holds everything a sync or a roll's seal made durable before the cut.
#[test]
fn power_cuts_across_rolls_recover_a_prefix() {
    const SIZE: u64 = 8 << 10;
    // `fdatasync` seals and syncs like `msync` on the simulated disk: not repeated here.
    for sync in [SyncMode::None, SyncMode::Msync] {
        let disk = sim::SimDisk::new();
        let log = Log::open_single(disk.clone(), SIZE, sync, &mut |_, _| Ok(())).unwrap();
        disk.record(true);
        let mut appended: Vec<(Lsn, Rec)> = Vec::new();
        // (snapshots taken so far, records durable from then on)
        let mut durable_from: Vec<(usize, usize)> = Vec::new();
        for i in 0..100 {
            let rec = match script_rec(['v', 'x', 'p', 'h', 's'][i % 5], i) {
                Rec::Put { tag, key, .. } => Rec::Put {
                    tag,
                    key,
                    value: pattern(i, if i % 7 == 0 { 1500 } else { 300 }),
                },
                r => r,
            };
            let a = log.append_alone(&rec.as_record()).expect("append");
            if appended
                .last()
                .is_some_and(|(l, _)| l / SIZE != a.lsn / SIZE)
            {
                // The roll sealed everything before this record.
                durable_from.push((disk.snapshot_count(), appended.len()));
            }
            appended.push((a.lsn, rec));
            if i % 4 == 3 {
                log.sync_to(a.end).unwrap();
                if sync != SyncMode::None {
                    durable_from.push((disk.snapshot_count(), appended.len()));
                }
            }
            if i % 3 == 0 {
                disk.capture(&format!("after append {i}"));
            }
        }
        disk.record(false);
        drop(log);
        assert!(
            seg_ids_of(&disk) >= 4,
            "{sync:?}: the test rolls several times: {:?}",
            disk.names()
        );
        let (mut images, mut corrupt) = (0, Vec::new());
        for (k, snap) in disk.take_snapshots().iter().enumerate() {
            let durable = durable_from
                .iter()
                .filter(|(at, _)| *at <= k)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            for cut in power_cut_images(snap) {
                let ctx = format!("{sync:?}, snapshot {k} ({}), {cut:?}", snap.what());
                let mut seen = Vec::new();
                match Log::open_single(snap.image(&cut, true), SIZE, sync, &mut |l, r| {
                    seen.push((l, Rec::of(&r)));
                    Ok(())
                }) {
                    Ok(_) => {
                        assert!(seen.len() >= durable, "{ctx}: {} < {durable}", seen.len());
                        assert_replay(&seen, &appended[..seen.len()], &ctx);
                    }
                    Err(e) => corrupt.push(format!("{ctx}: {e}")),
                }
                images += 1;
            }
        }
        assert!(
            corrupt.is_empty(),
            "{} of {images} images refused: {corrupt:#?}",
            corrupt.len()
        );
        assert!(images > 1000, "{sync:?}: {images} images");
    }
}

/// Number of segment files on a simulated disk.
fn seg_ids_of(disk: &sim::SimDisk) -> usize {
    disk.names().iter().filter(|n| n.ends_with(".seg")).count()
}

// ---------------------------------------------------------------------------------------------
// 7. Group commit
// ---------------------------------------------------------------------------------------------

/// `threads` threads (thread `t` on `logs[t % logs.len()]`) each append `each` puts and sync
/// every one, checking it durable; returns every append with its record. Thread `t` tags its
/// puts `tag0 + t`, values of `i % len_mod` bytes.
fn puts_from_threads(
    logs: &[&Log],
    threads: usize,
    each: usize,
    tag0: u64,
    len_mod: usize,
) -> Vec<(Appended, Rec)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = logs[t % logs.len()];
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(each);
                    for i in 0..each {
                        let rec = Rec::Put {
                            tag: tag0 + t as u64,
                            key: (i as u32).to_le_bytes().to_vec(),
                            value: pattern(t * each + i, i % len_mod),
                        };
                        let a = log.append_alone(&rec.as_record()).expect("append");
                        log.sync_to(a.end).expect("sync_to");
                        assert!(log.durable() >= a.end);
                        mine.push((a, rec));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    })
}

#[test]
fn group_commit_from_many_threads() {
    const THREADS: usize = 8;
    const EACH: usize = 200;
    // Small segments so that rolls happen while other threads sync.
    const SIZE: u64 = 16 << 10;
    let dir = private_dir();
    let (log, _) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
    let mut all = puts_from_threads(&[&log], THREADS, EACH, 1, 64);
    assert!(log.failed().is_none());
    assert!(log.durable() >= log.written());
    assert_eq!(all.len(), THREADS * EACH);
    all.sort_by_key(|(a, _)| a.lsn);
    for w in all.windows(2) {
        assert!(w[0].0.end <= w[1].0.lsn, "appends do not overlap");
    }
    drop(log);
    let (log, seen) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
    assert_replay(&seen, &replayed(&all), "group commit");
    check_put_values(&log, &seen, "group commit");
    // Each thread's records are in its program order.
    for t in 0..THREADS as u64 {
        let keys: Vec<u32> = seen
            .iter()
            .filter_map(|(_, r)| match r {
                Rec::Put { tag, key, .. } if *tag == t + 1 => {
                    Some(u32::from_le_bytes(key[..].try_into().unwrap()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(keys, (0..EACH as u32).collect::<Vec<_>>(), "thread {t}");
    }
    let ids = seg_ids(dir.path());
    assert!(ids.len() > 2, "the test should have rolled segments");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// 8. Model-based proptest
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Append(Rec),
    Sync,
    Reopen,
}

fn xid_strategy() -> impl Strategy<Value = Xid> {
    (
        any::<i64>().prop_filter("not the null XID", |f| *f != -1),
        proptest::collection::vec(any::<u8>(), 1..=64),
        proptest::collection::vec(any::<u8>(), 1..=64),
    )
        .prop_map(|(f, g, b)| xid(f, &g, &b))
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    let bytes = |max: usize| proptest::collection::vec(any::<u8>(), 0..=max);
    let tag = prop_oneof![Just(0u64), 1u64..16, any::<u64>()];
    prop_oneof![
        4 => (tag.clone(), bytes(64), bytes(4096))
            .prop_map(|(tag, key, value)| Rec::Put { tag, key, value }),
        2 => (tag.clone(), bytes(64)).prop_map(|(tag, key)| Rec::Delete { tag, key }),
        1 => (tag.clone(), xid_strategy(), proptest::option::of(1u64..))
            .prop_map(|(tag, xid, at)| Rec::Prepare { tag, xid, at }),
        1 => tag.clone().prop_map(|tag| Rec::Commit { tag }),
        1 => tag.clone().prop_map(|tag| Rec::Rollback { tag }),
        1 => (tag.clone(), any::<i32>(), xid_strategy(), bytes(300), proptest::option::of(1u64..)).prop_map(
            |(tag, outcome, xid, reason, at)| Rec::Heuristic {
                tag,
                outcome,
                xid,
                reason,
                at
            }
        ),
        1 => tag.prop_map(|tag| Rec::Forget { tag }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => rec_strategy().prop_map(Op::Append),
        3 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        // No regression files: this module owns only src/log/tests.rs.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn model_replays_what_was_appended(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        const SIZE: u64 = 16 << 10;
        let dir = fast_tempdir();
        let mut model: Replayed = Vec::new();
        let (mut log, seen) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
        prop_assert!(seen.is_empty());
        for op in ops {
            match op {
                Op::Append(rec) => {
                    let before = log.written();
                    let a = log.append_alone(&rec.as_record()).expect("append");
                    prop_assert!(a.lsn >= before);
                    prop_assert_eq!(a.end - a.lsn, rec.total());
                    prop_assert_eq!(log.written(), a.end);
                    model.push((a.lsn, rec));
                }
                Op::Sync => {
                    log.sync_to(log.written()).expect("sync");
                    prop_assert!(log.durable() >= log.written());
                }
                Op::Reopen => {
                    let written = log.written();
                    drop(log);
                    let (l, seen) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
                    prop_assert_eq!(&seen, &model);
                    prop_assert_eq!(l.written(), written);
                    log = l;
                }
            }
        }
        drop(log);
        let (log, seen) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
        prop_assert_eq!(&seen, &model);
        check_put_values(&log, &seen, "proptest");
        let ids = seg_ids(dir.path());
        prop_assert_eq!(ids.clone(), (1..=ids.len() as u64).collect::<Vec<_>>());
    }
}

/// `sync_to` past the written end used to flush an empty range forever; it is an error now.
#[test]
fn sync_beyond_the_end_is_an_error_not_a_spin() {
    let dir = private_dir();
    let log = Log::open(dir.path(), 64 << 10, SyncMode::Msync, &mut |_, _| Ok(())).unwrap();
    let a = log.append_alone(&Record::Commit { tag: 1 }).unwrap();
    assert!(matches!(log.sync_to(a.end + 8), Err(LogError::Io(..))));
    assert!(log.failed().is_none());
    log.sync_to(a.end).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 9. Peers: several processes on one log
// ---------------------------------------------------------------------------------------------

use crate::shm::{self, Txn};
use shared::{R_ENDED, R_LEADER, R_ROLLER, R_TAIL_ID, R_TAIL_OFF, R_WRITTEN};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// A peer in `slot` that finds every other alive.
fn peer(slot: u32) -> Peer {
    Peer::new(slot, Arc::new(|_| false))
}

/// A peer in `slot` that finds the slots whose flag is set dead.
fn peer_seeing(slot: u32, dead: Arc<Vec<AtomicBool>>) -> Peer {
    Peer::new(
        slot,
        Arc::new(move |s| {
            dead.get(s as usize)
                .is_some_and(|d| d.load(Ordering::SeqCst))
        }),
    )
}

/// Two "processes" on the log in `dir`, each with its own handle on a region file (in
/// `regions`) and its own mappings of the segments: the first opens the log, the second
/// attaches. Returns them and what the open replayed.
fn two_peers(dir: &Path, regions: &Path, size: u64, sync: SyncMode) -> (Log, Log, Replayed) {
    two_peers_seeing(dir, regions, size, sync, peer(0), peer(1))
}

fn two_peers_seeing(
    dir: &Path,
    regions: &Path,
    size: u64,
    sync: SyncMode,
    pa: Peer,
    pb: Peer,
) -> (Log, Log, Replayed) {
    let path = regions.join("region");
    let ra = Arc::new(shm::Region::create(&path, 0o600).expect("create region"));
    let mut seen = Vec::new();
    let a = Log::open_on(
        Mapped::new(dir),
        size,
        sync,
        ra.clone(),
        pa,
        &mut |lsn, rec| {
            seen.push((lsn, Rec::of(&rec)));
            Ok(())
        },
    )
    .expect("open_on");
    ra.publish(T).expect("publish");
    let rb = Arc::new(shm::Region::open(&path).expect("open region"));
    let b = Log::attach(Mapped::new(dir), size, sync, rb, pb).expect("attach");
    (a, b, seen)
}

/// Appends `rec` in a section of `log`'s region that is then rolled back (rolling the log
/// first if it must).
fn append_rolled_back<M: Media>(log: &Log<M>, rec: &Rec) -> Appended {
    loop {
        let mut t = log.region().lock(T).expect("lock");
        match log.append(&mut t, &rec.as_record()) {
            Ok(a) => {
                t.rollback();
                return a;
            }
            Err(LogError::NeedRoll(id)) => {
                drop(t);
                log.roll(id).expect("roll");
            }
            Err(e) => panic!("append: {e}"),
        }
    }
}

fn root_in(t: &Txn<'_>, r: usize) -> u64 {
    t.get_u64(shm::root(r)).unwrap()
}

#[test]
fn peers_interleave_appends_and_a_reopen_replays_both_in_order() {
    let (dir, regions) = (private_dir(), private_dir());
    let (a, b, seen) = two_peers(dir.path(), regions.path(), SEG, SyncMode::Msync);
    assert!(seen.is_empty());
    let mut all: Vec<(Appended, Rec)> = Vec::new();
    // 'b' records roll the 64 KiB segments now and then: rolls by either peer.
    let script = "vbpvsbbxhvbdbbvpbbsvbbbvhbbbxvbbbbbbbbsbbbvbbbbbbbbbbpbbbbbbhbbbbbbb";
    for (i, c) in script.chars().enumerate() {
        let (me, other) = if i % 3 == 1 { (&b, &a) } else { (&a, &b) };
        let rec = script_rec(c, i);
        let x = me.append_alone(&rec.as_record()).expect("append");
        assert_eq!(x.end - x.lsn, rec.total());
        assert_eq!(other.written(), x.end, "the other peer sees the new tail");
        if let Some((prev, _)) = all.last() {
            assert!(x.lsn >= prev.end, "appends follow each other");
        }
        if i % 5 == 4 {
            other.sync_to(x.end).expect("sync by the other peer");
            assert!(me.durable() >= x.end);
        }
        all.push((x, rec));
    }
    let segs = seg_ids(dir.path());
    assert!(segs.len() >= 3, "the script rolls: {segs:?}");
    assert_eq!(a.disk_usage(), b.disk_usage());
    // Each reads what the other wrote, through its own mappings.
    let recs = replayed(&all);
    for (name, log) in [("a", &a), ("b", &b)] {
        for (lsn, rec) in &recs {
            if let Rec::Put { key, value, .. } = rec {
                let mut out = Vec::new();
                log.read_into(lsn + put_value_offset(key.len()), value.len(), &mut out)
                    .unwrap_or_else(|e| panic!("{name}: read at {lsn}: {e}"));
                assert!(out == *value, "{name}: value at {lsn}");
            }
        }
    }
    drop((a, b));
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &recs, "both peers' records, in order");
}

#[test]
fn group_commit_with_leaders_in_both_peers() {
    const THREADS: usize = 3;
    const EACH: usize = 150;
    const SIZE: u64 = 16 << 10;
    let (dir, regions) = (private_dir(), private_dir());
    let (a, b, _) = two_peers(dir.path(), regions.path(), SIZE, SyncMode::Msync);
    // Each peer leads at least once, alone.
    for (i, log) in [&a, &b].into_iter().enumerate() {
        let before = log.leads();
        let x = log.append_alone(&Record::Commit { tag: i as u64 }).unwrap();
        log.sync_to(x.end).unwrap();
        assert_eq!(log.leads(), before + 1, "peer {i} led its own sync");
    }
    let mut all = puts_from_threads(&[&a, &b], 2 * THREADS, EACH, 10, 97);
    eprintln!("leads: a {}, b {}", a.leads(), b.leads());
    assert!(a.leads() > 1 && b.leads() > 1);
    assert!(a.failed().is_none() && b.failed().is_none());
    assert!(a.durable() >= a.written());
    all.sort_by_key(|(x, _)| x.lsn);
    for w in all.windows(2) {
        assert!(w[0].0.end <= w[1].0.lsn, "appends do not overlap");
    }
    drop((a, b));
    let (log, seen) = reopen_with(dir.path(), SIZE, SyncMode::Msync);
    let seen: Replayed = seen
        .into_iter()
        .filter(|(_, r)| !matches!(r, Rec::Commit { .. }))
        .collect();
    assert_replay(&seen, &replayed(&all), "group commit across peers");
    check_put_values(&log, &seen, "group commit across peers");
    let ids = seg_ids(dir.path());
    assert!(
        ids.len() > 3,
        "the test should have rolled segments: {ids:?}"
    );
}

#[test]
fn a_roll_by_one_peer_is_seen_by_the_other() {
    let (dir, regions) = (private_dir(), private_dir());
    let (a, b, _) = two_peers(dir.path(), regions.path(), SEG, SyncMode::Msync);
    // Fill segment 1 in sections of `a` until a record no longer fits.
    let big = script_rec('b', 0);
    let mut all = Vec::new();
    let full = loop {
        let mut t = a.region().lock(T).unwrap();
        match a.append(&mut t, &big.as_record()) {
            Ok(x) => {
                t.commit().unwrap();
                all.push((x, big.clone()));
            }
            Err(LogError::NeedRoll(id)) => break id,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(full, 1);
    // NeedRoll changed nothing.
    let written = a.written();
    assert_eq!(b.written(), written);
    assert_eq!(b.disk_usage().0, 1);
    // `b` rolls; `a`, late, finds it done and rolls nothing more.
    b.roll(full).unwrap();
    assert_eq!(a.disk_usage().0, 2, "a sees the new tail");
    assert_eq!(a.durable(), SEG, "the roll sealed segment 1");
    a.roll(full).unwrap();
    assert_eq!(seg_ids(dir.path()), vec![1, 2], "no second roll");
    assert_eq!(a.oldest(), Some((1, 0, SEG)));
    assert_eq!(b.oldest(), Some((1, 0, SEG)));
    // `a` appends into segment 2, which it maps now; `b` reads it.
    let x = a.append_alone(&big.as_record()).unwrap();
    assert_eq!(x.lsn, SEG + SEG_HEADER);
    all.push((x, big.clone()));
    check_put_values(&b, &replayed(&all), "b reads a's records");
    // Retiring segment 1 by `a` is seen by `b`, whose mapping of it goes.
    let y = b.append_alone(&Record::Commit { tag: 77 }).unwrap();
    all.push((y, Rec::Commit { tag: 77 }));
    a.retire_oldest(1).unwrap();
    assert_eq!(seg_ids(dir.path()), vec![2]);
    assert_eq!(b.oldest(), None);
    assert_eq!(b.disk_usage(), (1, SEG));
    let mut out = Vec::new();
    assert!(matches!(
        b.read_into(SEG_HEADER, 8, &mut out),
        Err(LogError::Gone(l)) if l == SEG_HEADER
    ));
    assert!(
        read(&b.segs).iter().all(|s| s.id >= 2),
        "b let go of segment 1"
    );
    drop((a, b));
    let (_, seen) = reopen(dir.path());
    // The replay starts in segment 2, with the CHECKPOINT skipped.
    let want: Replayed = replayed(&all)
        .into_iter()
        .filter(|(l, _)| *l >= SEG)
        .collect();
    assert_replay(&seen, &want, "after the roll and the retirement");
}

#[test]
fn a_rolled_back_append_is_gone_and_its_place_taken() {
    let (dir, regions) = (private_dir(), private_dir());
    let (a, b, _) = two_peers(dir.path(), regions.path(), SEG, SyncMode::Msync);
    let mut all = run_script(&a, "vS", 0);
    let before = a.written();
    // A long record, then another, in one section of `a`, rolled back.
    let (long, next) = (script_rec('b', 10), script_rec('v', 11));
    let stale = {
        let mut t = a.region().lock(T).unwrap();
        let x = a.append(&mut t, &long.as_record()).unwrap();
        let y = a.append(&mut t, &next.as_record()).unwrap();
        assert_eq!(root_in(&t, R_WRITTEN), y.end);
        t.rollback();
        (x, y)
    };
    assert_eq!(a.written(), before, "the tail went back");
    assert_eq!(b.written(), before);
    // `b` takes the place with a record as long as the first stale one: without the erasure,
    // the scan would find the second stale record right after it.
    let same = Rec::Put {
        tag: 5,
        key: key8(5),
        value: pattern(99, 3000),
    };
    let x = b.append_alone(&same.as_record()).unwrap();
    assert_eq!((x.lsn, x.end), (stale.0.lsn, stale.0.end), "same place");
    all.push((x, same));
    let view = |ctx: &str| {
        let mut seen = Vec::new();
        Log::open_single(
            Mapped::private(dir.path()),
            SEG,
            SyncMode::None,
            &mut |l, r| {
                seen.push((l, Rec::of(&r)));
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_replay(&seen, &replayed(&all), ctx);
    };
    view("the stale record after the one that took the place of another");
    all.extend(run_script(&b, "p", 20));
    // A rolled-back section without a later append: erased on request.
    let last = script_rec('x', 30);
    let z = append_rolled_back(&b, &last);
    assert_eq!(z.lsn, all.last().unwrap().0.end);
    b.erase_rolled_back().unwrap();
    let mut out = Vec::new();
    let seg = a.seg_at(z.lsn - 1).unwrap();
    seg.file
        .read_into(z.lsn - seg.base, (z.end - z.lsn) as usize, &mut out)
        .unwrap();
    assert!(out.iter().all(|&c| c == 0), "erased");
    drop((a, b));
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&all), "only committed records");
}

/// Rolls back sections between committed appends (the record committed in the place of a
/// rolled-back one is as long as it, so that without the erasure the scan would go on at the
/// stale record after it),
/// with syncs and rolls, and cuts the power at every durability event: every image opens
/// without corruption, to a prefix of the committed records holding everything synced,
/// followed at most by stale records appended right there (a crash before their erasure, as if
/// their caller died before it learned the outcome), never by one rolled back before a
/// committed record it would follow.
#[test]
fn power_cuts_never_splice_rolled_back_records_in() {
    const SIZE: u64 = 8 << 10;
    let disk = sim::SimDisk::new();
    let log = Log::open_single(disk.clone(), SIZE, SyncMode::Msync, &mut |_, _| Ok(())).unwrap();
    disk.record(true);
    let mut committed: Vec<(Lsn, Rec)> = Vec::new();
    // Rolled-back records, with the number of committed records when they were appended.
    let mut stale: Vec<(Lsn, Rec, usize)> = Vec::new();
    let mut durable_from: Vec<(usize, usize)> = Vec::new();
    let letters = ['v', 'b', 'p', 'h', 's', 'x'];
    for i in 0..120 {
        let rec = match script_rec(letters[i % letters.len()], i) {
            Rec::Put { tag, key, .. } => Rec::Put {
                tag,
                key,
                value: pattern(i, [16, 300, 1200, 40][i % 4]),
            },
            r => r,
        };
        if i % 3 == 1 {
            // Another record as long as this one, and one more, rolled back; then this one.
            let other = match &rec {
                Rec::Put { tag, key, value } => Rec::Put {
                    tag: tag + 5000,
                    key: key.clone(),
                    value: pattern(i + 5000, value.len()),
                },
                Rec::Commit { tag } => Rec::Commit { tag: tag + 5000 },
                Rec::Prepare { tag, xid, at } => Rec::Prepare {
                    tag: tag + 5000,
                    xid: *xid,
                    at: *at,
                },
                Rec::Heuristic {
                    tag,
                    outcome,
                    xid,
                    reason,
                    at,
                } => Rec::Heuristic {
                    tag: tag + 5000,
                    outcome: *outcome,
                    xid: *xid,
                    reason: reason.clone(),
                    at: *at,
                },
                r => panic!("no other record like {r:?}"),
            };
            assert_eq!(other.total(), rec.total());
            let more = script_rec(['v', 'x', 's'][i % 3], 1000 + i);
            loop {
                let mut t = log.region().lock(T).unwrap();
                let x = match log.append(&mut t, &other.as_record()) {
                    Err(LogError::NeedRoll(id)) => {
                        drop(t);
                        log.roll(id).unwrap();
                        continue;
                    }
                    r => r.unwrap(),
                };
                stale.push((x.lsn, other.clone(), committed.len()));
                if let Ok(y) = log.append(&mut t, &more.as_record()) {
                    stale.push((y.lsn, more.clone(), committed.len()));
                }
                t.rollback();
                break;
            }
        }
        let x = log.append_alone(&rec.as_record()).expect("append");
        if committed
            .last()
            .is_some_and(|(l, _)| l / SIZE != x.lsn / SIZE)
        {
            durable_from.push((disk.snapshot_count(), committed.len()));
        }
        committed.push((x.lsn, rec));
        if i % 4 == 3 {
            log.sync_to(x.end).unwrap();
            durable_from.push((disk.snapshot_count(), committed.len()));
        }
    }
    disk.record(false);
    drop(log);
    assert!(seg_ids_of(&disk) >= 4, "{:?}", disk.names());
    let (mut images, mut bad) = (0, Vec::new());
    for (k, snap) in disk.take_snapshots().iter().enumerate() {
        let durable = durable_from
            .iter()
            .filter(|(at, _)| *at <= k)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        for cut in power_cut_images(snap) {
            let ctx = format!("snapshot {k} ({}), {cut:?}", snap.what());
            let mut seen = Vec::new();
            match Log::open_single(
                snap.image(&cut, true),
                SIZE,
                SyncMode::Msync,
                &mut |l, r| {
                    seen.push((l, Rec::of(&r)));
                    Ok(())
                },
            ) {
                Ok(_) => {
                    let n = seen
                        .iter()
                        .zip(&committed)
                        .take_while(|(s, c)| s == c)
                        .count();
                    // The replay is the first `m` committed records, then records rolled
                    // back when there were `m` (a retry may be the same record at the same
                    // place as a stale one: try every `m`).
                    let stale_after = |m: usize| {
                        seen[m..].iter().all(|(l, r)| {
                            stale
                                .iter()
                                .any(|(sl, sr, base)| sl == l && sr == r && *base == m)
                        })
                    };
                    match (0..=n).rev().find(|&m| stale_after(m)) {
                        Some(m) if m >= durable => {}
                        Some(m) => {
                            bad.push(format!("{ctx}: {m} committed records < {durable} synced"))
                        }
                        None => bad.push(format!(
                            "{ctx}: after {n} committed records, records not appended (and \
                             rolled back) there: {:?}",
                            seen[n..].iter().map(|s| s.0).collect::<Vec<_>>()
                        )),
                    }
                }
                Err(e) => bad.push(format!("{ctx}: {e}")),
            }
            images += 1;
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {images} images: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(images > 500, "{images} images");
}

#[test]
fn a_dead_leader_is_taken_over() {
    let (dir, regions) = (private_dir(), private_dir());
    let dead: Arc<Vec<AtomicBool>> = Arc::new((0..4).map(|_| AtomicBool::new(false)).collect());
    let (a, b, _) = two_peers_seeing(
        dir.path(),
        regions.path(),
        SEG,
        SyncMode::Msync,
        peer_seeing(0, dead.clone()),
        peer(1),
    );
    let x = a.append_alone(&script_rec('v', 0).as_record()).unwrap();
    // `b` claims the lead and "dies" before it flushes.
    {
        let mut t = b.region().lock(T).unwrap();
        t.set_u64(shm::root(R_LEADER), 2).unwrap();
        t.commit().unwrap();
    }
    let d = dead.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        d[1].store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    a.sync_to(x.end).expect("sync after taking over");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "waited while b lived"
    );
    assert!(a.durable() >= x.end);
    killer.join().unwrap();
    let t = a.region().lock(T).unwrap();
    assert_eq!(root_in(&t, R_LEADER), 0, "the claim is released");
    drop(t);
    // A stale claim in this process's own name (no thread of it leads) is taken over at once.
    {
        let mut t = a.region().lock(T).unwrap();
        t.set_u64(shm::root(R_LEADER), 1).unwrap();
        t.commit().unwrap();
    }
    let y = a.append_alone(&script_rec('v', 1).as_record()).unwrap();
    a.sync_to(y.end).expect("stale own claim");
    assert!(a.failed().is_none() && b.failed().is_none());
}

#[test]
fn a_roll_that_died_is_finished_by_another_peer() {
    let (dir, regions) = (private_dir(), private_dir());
    let dead: Arc<Vec<AtomicBool>> = Arc::new((0..4).map(|_| AtomicBool::new(true)).collect());
    let (a, b, _) = two_peers_seeing(
        dir.path(),
        regions.path(),
        SEG,
        SyncMode::Msync,
        peer_seeing(0, dead.clone()),
        peer(1),
    );
    let mut all = run_script(&a, &format!("v{}", "b".repeat(21)), 0);
    let full = {
        let t = a.region().lock(T).unwrap();
        root_in(&t, R_TAIL_ID)
    };
    // `b` "died" in its roll after creating segment 2 (its claim is left, segment 2 holds
    // only its header).
    let seg1 = a.seg(full).unwrap();
    let created = Log::<Mapped>::create_segment(&b.media, full + 1, seg1.base + SEG, SEG).unwrap();
    {
        let mut t = b.region().lock(T).unwrap();
        t.set_u64(shm::root(R_ROLLER), 2).unwrap();
        t.commit().unwrap();
    }
    // `a` needs the roll: takes over, reuses segment 2.
    let x = a.append_alone(&script_rec('b', 50).as_record()).unwrap();
    all.push((x, script_rec('b', 50)));
    assert_eq!(x.lsn, SEG + SEG_HEADER, "in segment 2");
    assert_eq!(a.seg(2).unwrap().salt, created.salt, "the same file");
    {
        let t = a.region().lock(T).unwrap();
        assert_eq!(root_in(&t, R_ROLLER), 0);
        assert_eq!(root_in(&t, R_ENDED), 0);
    }
    // A segment after the tail holding data is corruption: the tail never moved to it.
    let mut rest = run_script(&a, &"b".repeat(20), 60);
    let tail = a.seg(2).unwrap();
    let at = a.written() - tail.base;
    let room = SEG - at;
    assert!(room < 3048 + REC_HEADER as u64, "segment 2 is full");
    let third = Log::<Mapped>::create_segment(&b.media, 3, 2 * SEG, SEG).unwrap();
    third.file.write_at(SEG_HEADER, &[b"junk"]).unwrap();
    drop(third);
    match a.append_alone(&script_rec('b', 90).as_record()) {
        Err(LogError::Corrupt { what, .. }) => assert!(what.contains("holding data"), "{what}"),
        r => panic!("expected corruption, got {r:?}"),
    }
    assert!(a.failed().is_none(), "a refused roll fails nothing");
    all.append(&mut rest);
    {
        let t = a.region().lock(T).unwrap();
        assert_eq!(
            root_in(&t, R_ROLLER),
            0,
            "the refused roll let its claim go"
        );
        assert_eq!(root_in(&t, R_TAIL_OFF), at);
    }
    drop((a, b));
    std::fs::remove_file(seg_path(dir.path(), 3)).unwrap();
    let (_, seen) = reopen(dir.path());
    assert_replay(&seen, &replayed(&all), "after the roll taken over");
}

/// A medium whose syncs panic while a flag is set.
struct Panicky {
    disk: sim::SimDisk,
    panic: Arc<AtomicBool>,
}

struct PanickyFile {
    file: sim::SimFile,
    panic: Arc<AtomicBool>,
}

impl Media for Panicky {
    type File = PanickyFile;
    fn dir(&self) -> &Path {
        self.disk.dir()
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.disk.list()
    }
    fn create(&self, name: &str, size: u64, header: &[u8]) -> io::Result<PanickyFile> {
        let file = self.disk.create(name, size, header)?;
        Ok(PanickyFile {
            file,
            panic: self.panic.clone(),
        })
    }
    fn open(&self, name: &str) -> io::Result<PanickyFile> {
        let file = self.disk.open(name)?;
        Ok(PanickyFile {
            file,
            panic: self.panic.clone(),
        })
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.disk.remove(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.disk.sync_dir()
    }
}

impl SegmentFile for PanickyFile {
    fn size(&self) -> u64 {
        self.file.size()
    }
    fn write_at(&self, off: u64, parts: &[&[u8]]) -> io::Result<()> {
        self.file.write_at(off, parts)
    }
    fn read_into(&self, off: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        self.file.read_into(off, len, out)
    }
    fn with_bytes<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        self.file.with_bytes(off, len, f)
    }
    fn sync_range(&self, off: u64, len: usize) -> io::Result<()> {
        assert!(
            !self.panic.load(Ordering::SeqCst),
            "a test's panic in a sync"
        );
        self.file.sync_range(off, len)
    }
    fn sync_all(&self) -> io::Result<()> {
        assert!(
            !self.panic.load(Ordering::SeqCst),
            "a test's panic in a sync"
        );
        self.file.sync_all()
    }
}

/// A failed sync fails the log for every peer; a panic in the leader's flush too, and its
/// waiters are not left waiting.
#[test]
fn a_failure_is_every_peers() {
    for panics in [false, true] {
        let disk = sim::SimDisk::new();
        let flag = Arc::new(AtomicBool::new(false));
        let media = || Panicky {
            disk: disk.clone(),
            panic: flag.clone(),
        };
        let region = Arc::new(shm::Region::anonymous(shm::DEFAULT_INITIAL_SIZE).unwrap());
        let a = Log::open_on(
            media(),
            SEG,
            SyncMode::Msync,
            region.clone(),
            peer(0),
            &mut |_, _| Ok(()),
        )
        .unwrap();
        let b = Log::attach(media(), SEG, SyncMode::Msync, region, peer(1)).unwrap();
        let x = a.append_alone(&script_rec('v', 0).as_record()).unwrap();
        let y = b.append_alone(&script_rec('v', 1).as_record()).unwrap();
        if panics {
            flag.store(true, Ordering::SeqCst);
        } else {
            disk.inject(sim::Fault::once(sim::Op::Sync, libc::EIO));
        }
        // Followers in `b` wait while `a` leads (and fails).
        std::thread::scope(|s| {
            let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| b.sync_to(y.end))).collect();
            let led = a.sync_to(x.end);
            assert!(matches!(led, Err(LogError::Failed(_))), "{led:?}");
            for w in waiters {
                let r = w.join().expect("waiter");
                assert!(matches!(r, Err(LogError::Failed(_))), "{r:?}");
            }
        });
        flag.store(false, Ordering::SeqCst);
        let why = b.failed().expect("b sees the failure");
        assert_eq!(a.failed().as_deref(), Some(why.as_str()));
        assert!(
            why.contains(if panics { "panic" } else { "sync failed" }),
            "{why}"
        );
        assert!(matches!(
            b.append_alone(&Record::Commit { tag: 1 }),
            Err(LogError::Failed(_))
        ));
        assert!(matches!(b.sync_to(y.end), Err(LogError::Failed(_))));
    }
}

#[test]
fn attach_and_open_on_refuse_the_wrong_region_or_configuration() {
    let (dir, regions) = (private_dir(), private_dir());
    let (a, _b, _) = two_peers(dir.path(), regions.path(), SEG, SyncMode::Msync);
    for (size, sync) in [(2 * SEG, SyncMode::Msync), (SEG, SyncMode::None)] {
        let r = Arc::new(shm::Region::open(&regions.path().join("region")).unwrap());
        let e = Log::attach(Mapped::new(dir.path()), size, sync, r, peer(2))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("segment size"), "{e}");
    }
    // Opening (scanning) a log whose region is published would cut the peers' latest
    // appends as a torn tail: refused before any file is looked at.
    let r = Arc::new(shm::Region::open(&regions.path().join("region")).unwrap());
    let before = segment_files(dir.path());
    let e = Log::open_on(
        Mapped::new(dir.path()),
        SEG,
        SyncMode::Msync,
        r,
        peer(2),
        &mut |_, _| Ok(()),
    )
    .err()
    .expect("refused");
    assert!(e.to_string().contains("not being built"), "{e}");
    assert_eq!(segment_files(dir.path()), before);
    drop(a);
    let empty = Arc::new(shm::Region::anonymous(shm::DEFAULT_INITIAL_SIZE).unwrap());
    let e = Log::attach(
        Mapped::new(dir.path()),
        SEG,
        SyncMode::Msync,
        empty,
        peer(0),
    )
    .err()
    .expect("no log");
    assert!(e.to_string().contains("holds no log"), "{e}");
}

/// A log of format version 1 (no times in PREPARE, HEURISTIC and MOVE) is built here byte by
/// byte, as the version-1 writer laid it out. It opens as it is, its timed records with an
/// unknown time; the first append ends its tail segment and goes to a new segment of the
/// current version, with its time; both replay after a reopen. A segment of a newer version is
/// refused, naming the file and saying why, and nothing is changed.
#[test]
fn a_version_1_log_opens_and_moves_on_to_the_current_version() {
    let dir = private_dir();
    let salt = 0x0123_4567_89ab_cdef;
    let path = seg_path(dir.path(), 1);
    let mut seg = vec![0u8; SEG as usize];
    seg[..SEG_HEADER as usize].copy_from_slice(&segment_header(1, 1, 0, SEG, salt));
    let tag = |t: u64| t.to_le_bytes();
    let x = xid(7, b"g1", b"b1");
    let xp = xid_payload(7, 2, 2, b"g1b1");
    // Version-1 payloads: no time after the tag.
    let v1: Vec<(Kind, Vec<u8>, Rec)> = vec![
        (
            Kind::Put,
            cat(&[&tag(3), &1u32.to_le_bytes(), &1u32.to_le_bytes(), b"kv"]),
            Rec::Put {
                tag: 3,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        ),
        (
            Kind::Prepare,
            cat(&[&tag(3), &xp]),
            Rec::Prepare {
                tag: 3,
                xid: x,
                at: None,
            },
        ),
        (
            Kind::Move,
            cat(&[&tag(3), &tag(4), &xp]),
            Rec::Move {
                old: 3,
                new: 4,
                xid: x,
                at: None,
            },
        ),
        (
            Kind::Heuristic,
            cat(&[
                &tag(4),
                &XA_HEURRB.to_le_bytes(),
                &xp,
                &2u32.to_le_bytes(),
                b"ok",
            ]),
            Rec::Heuristic {
                tag: 4,
                outcome: XA_HEURRB,
                xid: x,
                reason: b"ok".to_vec(),
                at: None,
            },
        ),
    ];
    let mut off = SEG_HEADER as usize;
    let mut want = Vec::new();
    for (kind, payload, rec) in &v1 {
        let bytes = craft_record(salt, *kind as u8, payload, 0, 0);
        seg[off..off + bytes.len()].copy_from_slice(&bytes);
        want.push((off as Lsn, rec.clone()));
        off += bytes.len();
    }
    std::fs::write(&path, &seg).unwrap();
    let end = off as Lsn;

    let (log, seen) = reopen(dir.path());
    assert_replay(&seen, &want, "version-1 log");
    assert_eq!(
        seg_ids(dir.path()),
        vec![1],
        "opening alone changes nothing"
    );
    assert_eq!(log.written(), end);
    // The first append rolls away from the version-1 segment.
    let new = Rec::Prepare {
        tag: 9,
        xid: xid(8, b"g", b"b"),
        at: Some(AT),
    };
    let a = log.append_alone(&new.as_record()).unwrap();
    log.sync_to(a.end).unwrap();
    assert_eq!(seg_ids(dir.path()), vec![1, 2]);
    assert_segment_header(dir.path(), 2, SEG, SEG);
    assert_eq!(
        a.lsn,
        SEG + SEG_HEADER,
        "the record is the new segment's first"
    );
    assert_eq!(
        le_u32(&file_bytes(&path, 8, 4), 0),
        1,
        "the old segment keeps its version"
    );
    drop(log);
    let (log, seen) = reopen(dir.path());
    want.push((a.lsn, new));
    assert_replay(&seen, &want, "after the roll");
    drop(log);

    // A segment of a newer version than this library writes: refused, nothing changed.
    let seg2 = seg_path(dir.path(), 2);
    let mut h = file_bytes(&seg2, 0, SEG_HEADER as usize);
    h[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let crc = crc32fast::hash(&h[..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    put_bytes(&seg2, 0, &h);
    let before = segment_files(dir.path());
    let (file, offset, what) = expect_corrupt(open_log(dir.path(), SEG, SyncMode::Msync));
    assert_eq!((file, offset), (seg2, 0));
    assert!(
        what.contains(&format!("log format version {}", VERSION + 1)) && what.contains("newer"),
        "{what}"
    );
    assert_eq!(segment_files(dir.path()), before);
}
