//! Segment files from the fuzz input on a `SimDisk`, opened with `Log::open_on` and
//! `Rm::open_on`, then used a little: never a panic (an error is fine).
//!
//! Most inputs build segments with a correct header CRC and records with correct CRCs under
//! the segment's salt, so the fuzzer spends its time in the scan and replay rather than in the
//! header check; `Raw` files and the `flips` cover damaged bytes.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mmxa::config::{Config, SyncMode};
use mmxa::log::sim::SimDisk;
use mmxa::log::{Log, Media};
use mmxa::rm::flags::Scan;
use mmxa::rm::Rm;
use mmxa::xid::Xid;
use std::time::Duration;

const SEG_HEADER: usize = 64;
const REC_HEADER: usize = 24;
/// Size of the segments the log creates itself: small, so that a fuzzed log fills one.
const NEW_SEGMENT: u64 = 64 << 10;

#[derive(Arbitrary, Debug)]
struct Input {
    sync: Sync,
    files: Vec<File>,
    /// Damage after assembly: (file, offset, xor).
    flips: Vec<(u8, u16, u8)>,
    /// Exercise the store after it opens.
    use_store: bool,
}

#[derive(Arbitrary, Debug)]
enum Sync {
    Msync,
    None,
}

#[derive(Arbitrary, Debug)]
enum File {
    /// Arbitrary bytes under a segment name.
    Raw { id: u8, bytes: Vec<u8> },
    /// A valid header, then records.
    Crafted(Segment),
    /// A stray temporary file (open deletes it).
    Tmp(u8),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    id: Id,
    base: Base,
    salt: u64,
    records: Vec<Rec>,
    /// Extra zeroed space after the records, in 8-byte units.
    room: u8,
}

#[derive(Arbitrary, Debug)]
enum Id {
    /// The one after the previous crafted segment (1 for the first).
    Next,
    Small(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Base {
    /// Where the previous crafted segment ends (0 for the first).
    Follow,
    Any(u64),
}

#[derive(Arbitrary, Debug)]
struct Rec {
    /// Replaces the payload's own kind.
    kind: Option<u8>,
    vouch: Vouch,
    payload: Payload,
    /// A wrong checksum.
    bad_crc: bool,
}

#[derive(Arbitrary, Debug)]
enum Vouch {
    Zero,
    /// The record's own LSN: everything before it was synced.
    Own,
    /// Past the record: vouches for bytes after it.
    Ahead(u16),
    Any(u64),
}

/// A branch tag: mostly from a tiny set so that records refer to each other.
#[derive(Arbitrary, Debug)]
enum Tag {
    Small(u8),
    Any(u64),
}

impl Tag {
    fn get(&self) -> u64 {
        match *self {
            Tag::Small(t) => u64::from(t % 4),
            Tag::Any(t) => t,
        }
    }
}

/// An XID from a few, so that XIDs repeat, or arbitrary lengths and bytes.
#[derive(Arbitrary, Debug)]
enum XidBytes {
    Small(u8),
    Any {
        format: i64,
        g: u8,
        b: u8,
        data: Vec<u8>,
    },
}

impl XidBytes {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            XidBytes::Small(n) => {
                let (g, b) = (1 + n % 3, 1 + (n / 3) % 3);
                out.extend(1i64.to_le_bytes());
                out.extend([g, b]);
                out.extend((0..g + b).map(|i| b'a' + i % 2));
            }
            XidBytes::Any { format, g, b, data } => {
                out.extend(format.to_le_bytes());
                out.extend([*g, *b]);
                out.extend(data);
            }
        }
    }
}

/// Payloads shaped like the documented ones (src/log/mod.rs), or arbitrary bytes.
#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(u8, Vec<u8>),
    Put {
        tag: Tag,
        key: Vec<u8>,
        value: Vec<u8>,
        /// Lies about the lengths.
        lens: Option<(u32, u32)>,
    },
    Delete {
        tag: Tag,
        key: Vec<u8>,
    },
    Prepare(Tag, XidBytes),
    Commit(Tag),
    Rollback(Tag),
    Heuristic {
        tag: Tag,
        outcome: i32,
        xid: XidBytes,
        reason: Vec<u8>,
    },
    Forget(Tag),
    SegmentEnd,
    Move(Tag, Tag, XidBytes),
    Checkpoint(Id),
}

fn le32(n: usize) -> [u8; 4] {
    (n as u32).to_le_bytes()
}

impl Payload {
    /// (kind, payload bytes).
    fn encode(&self, next_id: u64) -> (u8, Vec<u8>) {
        let mut p = Vec::new();
        let kind = match self {
            Payload::Raw(k, b) => {
                p.extend(b);
                *k
            }
            Payload::Put {
                tag,
                key,
                value,
                lens,
            } => {
                p.extend(tag.get().to_le_bytes());
                let (kl, vl) = lens.unwrap_or((key.len() as u32, value.len() as u32));
                p.extend(kl.to_le_bytes());
                p.extend(vl.to_le_bytes());
                p.extend(key);
                p.extend(value);
                1
            }
            Payload::Delete { tag, key } => {
                p.extend(tag.get().to_le_bytes());
                p.extend(le32(key.len()));
                p.extend(key);
                2
            }
            Payload::Prepare(t, x) => {
                p.extend(t.get().to_le_bytes());
                x.encode(&mut p);
                3
            }
            Payload::Commit(t) | Payload::Rollback(t) | Payload::Forget(t) => {
                p.extend(t.get().to_le_bytes());
                match self {
                    Payload::Commit(_) => 4,
                    Payload::Rollback(_) => 5,
                    _ => 7,
                }
            }
            Payload::Heuristic {
                tag,
                outcome,
                xid,
                reason,
            } => {
                p.extend(tag.get().to_le_bytes());
                p.extend(outcome.to_le_bytes());
                xid.encode(&mut p);
                p.extend(le32(reason.len()));
                p.extend(reason);
                6
            }
            Payload::SegmentEnd => 8,
            Payload::Move(a, b, x) => {
                p.extend(a.get().to_le_bytes());
                p.extend(b.get().to_le_bytes());
                x.encode(&mut p);
                9
            }
            Payload::Checkpoint(id) => {
                p.extend(id.get(next_id).to_le_bytes());
                10
            }
        };
        (kind, p)
    }
}

impl Id {
    fn get(&self, next: u64) -> u64 {
        match *self {
            Id::Next => next,
            Id::Small(n) => u64::from(n % 6),
            Id::Any(n) => n,
        }
    }
}

/// A record with a valid checksum under `salt` (unless `bad_crc`), padded to 8 bytes.
fn record(salt: u64, kind: u8, vouch: u64, payload: &[u8], bad_crc: bool) -> Vec<u8> {
    let mut h = [0u8; REC_HEADER];
    h[4..8].copy_from_slice(&le32(payload.len()));
    h[8] = kind;
    h[16..24].copy_from_slice(&vouch.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[4..]);
    c.update(payload);
    h[0..4].copy_from_slice(&(c.finalize() ^ u32::from(bad_crc)).to_le_bytes());
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

fn seg_name(id: u64) -> String {
    format!("log-{id:016x}.seg")
}

/// The files the input describes: (name, bytes).
fn assemble(input: &Input) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Where the next crafted segment follows: (id, base LSN).
    let (mut next_id, mut next_base) = (1u64, 0u64);
    for f in input.files.iter().take(4) {
        match f {
            File::Raw { id, bytes } => out.push((seg_name(u64::from(id % 6)), bytes.clone())),
            File::Tmp(id) => out.push((format!("log-{:016x}.tmp", id % 6), vec![0; 8])),
            File::Crafted(s) => {
                let id = s.id.get(next_id);
                let base = match s.base {
                    Base::Follow => next_base,
                    Base::Any(b) => b,
                };
                let mut body = Vec::new();
                for r in s.records.iter().take(32) {
                    let lsn = base.wrapping_add((SEG_HEADER + body.len()) as u64);
                    let vouch = match r.vouch {
                        Vouch::Zero => 0,
                        Vouch::Own => lsn,
                        Vouch::Ahead(n) => lsn.wrapping_add(u64::from(n)),
                        Vouch::Any(v) => v,
                    };
                    let (kind, p) = r.payload.encode(id.wrapping_add(1));
                    body.extend(record(s.salt, r.kind.unwrap_or(kind), vouch, &p, r.bad_crc));
                }
                let size = (SEG_HEADER + body.len() + 8 * usize::from(s.room)) as u64;
                let mut bytes = header(id, base, size, s.salt);
                bytes.extend(body);
                bytes.resize(size as usize, 0);
                out.push((seg_name(id), bytes));
                next_id = id.wrapping_add(1);
                next_base = base.wrapping_add(size);
            }
        }
    }
    for &(file, off, xor) in &input.flips {
        if out.is_empty() {
            break;
        }
        let n = out.len();
        let bytes = &mut out[usize::from(file) % n].1;
        if let Some(b) = bytes.get_mut(usize::from(off)) {
            *b ^= xor;
        }
    }
    out
}

/// A fresh disk holding `files` (a later file of the same name replaces an earlier one).
fn disk(files: &[(String, Vec<u8>)]) -> SimDisk {
    let d = SimDisk::new();
    for (name, bytes) in files {
        let _ = d.remove(name);
        d.create(name, bytes.len() as u64, bytes)
            .expect("create on the simulated disk");
    }
    d
}

fuzz_target!(|input: Input| {
    let files = assemble(&input);
    let sync = match input.sync {
        Sync::Msync => SyncMode::Msync,
        Sync::None => SyncMode::None,
    };
    let _ = Log::open_on(disk(&files), NEW_SEGMENT, sync, &mut |_, _| Ok(()));

    let mut cfg = Config::new("/sim");
    cfg.segment_size = NEW_SEGMENT;
    cfg.sync = sync;
    cfg.lock_timeout = Duration::ZERO;
    // The disk injects no faults: the log must never fail (only refuse a damaged log).
    let rm = match Rm::open_on(cfg, disk(&files)) {
        Ok(rm) => rm,
        Err(e) => {
            assert!(!e.contains("log failed"), "{e}");
            return;
        }
    };
    // What opened must be usable: read, list, resolve the in-doubt branches, write, reclaim.
    let _ = rm.status();
    for k in [&b""[..], b"a", b"b", b"ab"] {
        let _ = rm.get(99, k);
    }
    let scan = Scan {
        start: true,
        end: true,
    };
    let in_doubt = rm.recover(99, scan, 1000).unwrap_or_default();
    if !input.use_store {
        return;
    }
    for (i, x) in in_doubt.iter().enumerate() {
        let _ = match i % 3 {
            0 => rm.commit(99, x, false),
            1 => rm.rollback(99, x),
            _ => rm.forget(99, x),
        };
        let _ = rm.forget(99, x);
    }
    let _ = rm.put(99, b"a", Some(b"fuzz"));
    let _ = rm.put(99, b"b", None);
    let x = Xid::from_parts(1, b"ab", b"a").expect("a valid XID");
    let _ = rm.heuristic(&x, mmxa::error::Outcome::Commit, "fuzz");
    for _ in 0..3 {
        if !matches!(rm.compact_step(), Ok(true)) {
            break;
        }
    }
    let _ = rm.get(99, b"a");
    assert_eq!(rm.failed(), None);
});
