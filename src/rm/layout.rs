//! The store's shared state: what lives in the region every process maps, byte by byte.
//!
//! Owns: the roots the RM keeps in the region, and the layout of its three kinds of records —
//! key entries, branch records and wait records — with the accessors that read and write their
//! fields inside a section. Everything here is in the region of `src/shm` (a file `mmxa.shm` in
//! the store's directory, mapped `MAP_SHARED` by every process with the store open); every
//! change is made in a journaled section, so a process that dies half way through one leaves
//! nothing half done. The log's shared tail is in roots 0–15 (see `src/log`).
//! Any change to the layout below bumps the region's format version (`shm::layout::VERSION`),
//! so that processes of different layouts never share a region.
//!
//! # Roots
//! | root | what |
//! |---|---|
//! | 16 | settings every process must share: sync mode and isolation (see `fingerprint`) |
//! | 17 | lock timeout (ms) |
//! | 18 | segment size (bytes) |
//! | 19 | orphan age (s, 0 = off) |
//! | 20 | the key table ([`Table`] header offset) |
//! | 21 | the branch table |
//! | 22 | the next branch tag |
//! | 23 | live keys (committed) |
//! | 24 | live bytes (log bytes of the committed keys' PUT records) |
//! | 25 | lock requests waiting now |
//! | 26 | the reclaiming process (slot + 1; 0 = none) |
//! | 27 | do not reclaim again before the log reaches this LSN |
//! | 28 | when the region was built (ns since the Unix epoch) |
//! | 29 | the next wait-request sequence number |
//! | 30 | the backup pin: slot + 1 of the process copying the log (0 = none); no segment is reclaimed while it lives |
//! | 31 | the store's path as its builder opened it (canonical): heap block offset (0 = unknown) |
//! | 32 | its length in bytes |
//! | 33 | key order: the head of the skip list ([`MAX_LEVEL`](super::order::MAX_LEVEL) next-entry words) |
//! | 34 | key order: the supremum, a key entry after every key (in no table or list; holds the gap locks of the end) |
//! | 35 | key order: entries removed so far (a cursor's kept entry is valid while this stays) |
//!
//! # Key entry (one per key that is committed, written by a branch, locked or waited for; all in key order too)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | hash of the key (the table's) |
//! | 8 | 8 | committed value: LSN of its bytes (0 = the key is absent) |
//! | 16 | 4 | committed value's length |
//! | 20 | 2 | key length |
//! | 22 | 2 | shared holders (how many of the words at 64, 72 and the array at 80 are used) |
//! | 24 | 8 | exclusive holder (branch record; 0 = none) |
//! | 32 | 8 | pending write's branch (0 = none; always the exclusive holder) |
//! | 40 | 8 | pending value: LSN of its bytes (0 = a delete) |
//! | 48 | 4 | pending value's length |
//! | 52 | 1 | height of its tower in the key order (1–24) |
//! | 53 | 3 | zero |
//! | 56 | 8 | pending write's record LSN |
//! | 64 | 8 | shared holder 1 (a branch record; bit 0 set when it holds the gap before the key too: a next-key lock) |
//! | 72 | 8 | shared holder 2 (the same) |
//! | 80 | 8 | more shared holders ([`Vec64`]) |
//! | 88 | 8 | queue of waiting requests, in grant order ([`Vec64`] of wait records) |
//! | 96 | 8 | gap-only holder 1: a branch holding the gap before this key but not the key (0 = none) |
//! | 104 | 8 | more gap-only holders ([`Vec64`]) |
//! | 112 | n | key bytes |
//! | 112 + n, 8-aligned | 8 | the entry before it in key order (0 = first) |
//! | then | 8 × height | the next entry at each level (0 = last) |
//!
//! An entry is removed as soon as it is not committed, has no pending write, no holder, no gap
//! holder and no queue. Lock owners are branch records, by offset: a record outlives its locks.
//! A gap lock on an entry covers the keys between the entry before it and it; a new entry
//! created in that gap gives every gap holder a shared lock and the gap on it (see
//! `locks.rs`).
//!
//! # Branch record (an XA branch, a local transaction, or a one-operation write)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | hash (of the XID; of the tag for a local transaction or a one-operation write) |
//! | 8 | 8 | tag: the branch's number in the log |
//! | 16 | 1 | kind: 1 XA branch, 2 one-operation write, 3 local transaction (no XID until promoted, when it becomes kind 1) |
//! | 17 | 1 | phase: 0 working, 1 prepared, 2 completed heuristically |
//! | 18 | 1 | heuristic outcome (`Outcome` as 1–4) |
//! | 19 | 1 | rollback-only reason (`Rb` as 1–4; 0 = none) |
//! | 20 | 1 | undone: rolled back by another thread while associated |
//! | 21 | 1 | busy: the completion in progress (see [`Busy`]) |
//! | 22 | 1 | since unknown: 1 if `since` (48) is when the region was built, the log having recorded no time for the prepare or decision (a version-1 log) |
//! | 23 | 1 | zero |
//! | 24 | 8 | the busy completion's process: slot + 1, and its generation in bits 32–63 |
//! | 32 | 8 | the record the busy completion appended (LSN; 0 = not yet) |
//! | 40 | 8 | LSN of the record stating a prepared or heuristic branch (PREPARE, MOVE, HEURISTIC) |
//! | 48 | 8 | since: when it began, was prepared or completed heuristically (ns since the Unix epoch; for a branch rebuilt from the log, the time its PREPARE, MOVE or HEURISTIC record states) |
//! | 56 | 8 | associations ([`Vec64`] of thread-of-control ids; bit 63 = suspended) |
//! | 64 | 8 | locks held ([`Vec64`] of key entries; bit 0 = exclusive, bit 1 = a gap lock) |
//! | 72 | 8 | requests waiting now ([`Vec64`] of wait records) |
//! | 80 | 8 | savepoint journal ([`Vec64`], 3 words an entry: key entry, value LSN, length and flags) |
//! | 88 | 8 | savepoints ([`Vec64`], 2 words each: id, journal length when set; id bit 63 = a nested transaction's level) |
//! | 96 | 8 | next savepoint id |
//! | 104 | 8 | keys with a pending write |
//! | 112 | 8 | text block: the operator's reason (heuristic) or why rollback-only |
//! | 120 | 8 | its length |
//! | 128 | 8 | process of a one-operation write (slot + 1) |
//! | 136 | 8 | formatID |
//! | 144 | 1 | gtrid length |
//! | 145 | 1 | bqual length |
//! | 146 | 6 | zero |
//! | 152 | 128 | XID data |
//! | 280 | 8 | suspended-for-migration associations |
//! | 288 | 8 | the time the busy completion's record states (ns since the Unix epoch): `since` once it is done |
//!
//! A thread-of-control id is the process's slot + 1 in bits 40–62 and the thread's number in
//! that process in bits 0–39, so a dead process's associations can be found.
//!
//! # Wait record (one per thread waiting for a key lock)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | owner (branch record) |
//! | 8 | 8 | key entry |
//! | 16 | 1 | mode: 1 shared, 2 exclusive |
//! | 17 | 1 | 1 if an upgrade (the owner holds the key shared) |
//! | 18 | 2 | zero |
//! | 20 | 4 | the waiting thread's process (slot + 1) |
//! | 24 | 8 | sequence number |

use crate::error::{Outcome, Rb};
use crate::shm::{root, Error, Off, Table, Txn, Vec64};
use crate::xid::Xid;

pub const R_FP_SYNC: Off = root(16);
pub const R_FP_TIMEOUT: Off = root(17);
pub const R_FP_SEGMENT: Off = root(18);
pub const R_FP_ORPHAN: Off = root(19);
pub const R_KEYS: Off = root(20);
pub const R_BRANCHES: Off = root(21);
pub const R_NEXT_TAG: Off = root(22);
pub const R_LIVE_KEYS: Off = root(23);
pub const R_LIVE_BYTES: Off = root(24);
pub const R_WAITS: Off = root(25);
pub const R_COMPACTOR: Off = root(26);
pub const R_COMPACT_AFTER: Off = root(27);
pub const R_BUILT_NS: Off = root(28);
pub const R_NEXT_SEQ: Off = root(29);
pub const R_BACKUP: Off = root(30);
pub const R_PATH: Off = root(31);
pub const R_PATH_LEN: Off = root(32);
pub const R_ORDER: Off = root(33);
pub const R_SUPREMUM: Off = root(34);
pub const R_ORDER_GEN: Off = root(35);

/// The key table.
pub const KEYS: Table = Table::at(R_KEYS);
/// The branch table.
pub const BRANCHES: Table = Table::at(R_BRANCHES);

// ---- key entries ---------------------------------------------------------------------------

pub const K_HASH: u64 = 0;
pub const K_VAL: u64 = 8;
pub const K_VLEN: u64 = 16;
pub const K_KLEN: u64 = 20;
pub const K_XOWNER: u64 = 24;
pub const K_POWNER: u64 = 32;
pub const K_PVAL: u64 = 40;
pub const K_PLEN: u64 = 48;
pub const K_PREC: u64 = 56;
pub const K_S1: u64 = 64;
pub const K_S2: u64 = 72;
pub const K_SMORE: u64 = 80;
pub const K_QUEUE: u64 = 88;
pub const K_HEIGHT: u64 = 52;
pub const K_G1: u64 = 96;
pub const K_GMORE: u64 = 104;
pub const K_KEY: u64 = 112;

/// The supremum's wait word (it has no key to hash).
pub const SUPREMUM_HASH: u64 = 0x5afe_0fe1_1d5a_fe00;

// ---- branch records ------------------------------------------------------------------------

pub const B_HASH: u64 = 0;
pub const B_TAG: u64 = 8;
pub const B_KIND: u64 = 16;
pub const B_PHASE: u64 = 17;
pub const B_OUTCOME: u64 = 18;
pub const B_RB: u64 = 19;
pub const B_UNDONE: u64 = 20;
pub const B_BUSY: u64 = 21;
pub const B_SINCE_UNKNOWN: u64 = 22;
pub const B_BUSY_SLOT: u64 = 24;
pub const B_BUSY_LSN: u64 = 32;
pub const B_RECORD_LSN: u64 = 40;
pub const B_SINCE: u64 = 48;
pub const B_ASSOC: u64 = 56;
pub const B_LOCKS: u64 = 64;
pub const B_WAITS: u64 = 72;
pub const B_JOURNAL: u64 = 80;
pub const B_SAVEPOINTS: u64 = 88;
pub const B_NEXT_SP: u64 = 96;
pub const B_WRITES: u64 = 104;
pub const B_TEXT: u64 = 112;
pub const B_TEXT_LEN: u64 = 120;
pub const B_LOCAL_SLOT: u64 = 128;
pub const B_FORMAT: u64 = 136;
pub const B_GLEN: u64 = 144;
pub const B_BLEN: u64 = 145;
pub const B_DATA: u64 = 152;
pub const B_MIGRATED: u64 = 280;
pub const B_BUSY_AT: u64 = 288;
pub const BRANCH_SIZE: u64 = 296;

pub const KIND_XA: u8 = 1;
pub const KIND_LOCAL: u8 = 2;
pub const KIND_TXN: u8 = 3;

pub const PHASE_WORKING: u8 = 0;
pub const PHASE_PREPARED: u8 = 1;
pub const PHASE_HEURISTIC: u8 = 2;

/// Bit 63 of a savepoint's id: the savepoint begins a nested transaction.
pub const NESTED: u64 = 1 << 63;
/// Bit 63 of an association: suspended (else active).
pub const SUSPENDED: u64 = 1 << 63;
/// Bit 0 of a held lock: exclusive (key entries are 16-aligned).
pub const EXCL: u64 = 1;
/// Bit 1 of a held lock: a gap lock (on the keys before the entry).
pub const GAP: u64 = 2;

/// The key entry of a held lock.
pub fn held_entry(h: u64) -> Off {
    h & !(EXCL | GAP)
}

// ---- wait records ----------------------------------------------------------------------------

pub const W_OWNER: u64 = 0;
pub const W_KEY: u64 = 8;
pub const W_MODE: u64 = 16;
pub const W_UPGRADE: u64 = 17;
pub const W_SLOT: u64 = 20;
pub const W_SEQ: u64 = 24;
pub const WAIT_SIZE: u64 = 32;

pub const MODE_S: u8 = 1;
pub const MODE_X: u8 = 2;

/// A completion in progress on a branch, and what its death leaves to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    None = 0,
    Prepare = 1,
    Commit = 2,
    Rollback = 3,
    Heuristic = 4,
    Local = 5,
}

impl Busy {
    pub fn from_u8(v: u8) -> Result<Busy, Error> {
        Ok(match v {
            0 => Busy::None,
            1 => Busy::Prepare,
            2 => Busy::Commit,
            3 => Busy::Rollback,
            4 => Busy::Heuristic,
            5 => Busy::Local,
            _ => return Err(Error::Corrupt(format!("busy kind {v}"))),
        })
    }
}

pub fn rb_to_u8(rb: Rb) -> u8 {
    match rb {
        Rb::Rollback => 1,
        Rb::Deadlock => 2,
        Rb::Timeout => 3,
        Rb::Other => 4,
    }
}

pub fn rb_from_u8(v: u8) -> Option<Rb> {
    Some(match v {
        1 => Rb::Rollback,
        2 => Rb::Deadlock,
        3 => Rb::Timeout,
        4 => Rb::Other,
        _ => return None,
    })
}

pub fn outcome_to_u8(o: Outcome) -> u8 {
    match o {
        Outcome::Commit => 1,
        Outcome::Rollback => 2,
        Outcome::Mixed => 3,
        Outcome::Hazard => 4,
    }
}

pub fn outcome_from_u8(v: u8) -> Result<Outcome, Error> {
    Ok(match v {
        1 => Outcome::Commit,
        2 => Outcome::Rollback,
        3 => Outcome::Mixed,
        4 => Outcome::Hazard,
        _ => return Err(Error::Corrupt(format!("heuristic outcome {v}"))),
    })
}

/// A 64-bit hash of bytes (FNV-1a folded with a multiply: keys are chosen by applications, and
/// the table only needs them spread; equality is always checked on the bytes).
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    h ^= b.len() as u64;
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The hash of an XID (its identity: formatID, gtrid and bqual).
pub fn hash_xid(x: &Xid) -> u64 {
    let n = x.gtrid().len() + x.bqual().len();
    hash_bytes(&x.data()[..n])
        ^ (x.format_id() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ ((x.gtrid().len() as u64) << 8)
}

/// The hash of a one-operation write's tag.
pub fn hash_tag(tag: u64) -> u64 {
    hash_bytes(&tag.to_le_bytes()) ^ 0x5bd1_e995
}

/// Reads the XID of a branch record.
pub fn read_xid(t: &Txn<'_>, b: Off) -> Result<Xid, Error> {
    let format = t.get_u64(b + B_FORMAT)? as i64;
    let g = t.get_u8(b + B_GLEN)? as i64;
    let q = t.get_u8(b + B_BLEN)? as i64;
    let mut data = [0u8; 128];
    t.read_bytes(b + B_DATA, &mut data)?;
    Xid::new(format, g, q, &data).map_err(|e| Error::Corrupt(format!("branch XID: {e}")))
}

/// Whether the branch record `b` is for `x`.
pub fn xid_is(t: &Txn<'_>, b: Off, x: &Xid) -> Result<bool, Error> {
    if t.get_u8(b + B_KIND)? != KIND_XA
        || t.get_u64(b + B_FORMAT)? as i64 != x.format_id()
        || t.get_u8(b + B_GLEN)? as usize != x.gtrid().len()
        || t.get_u8(b + B_BLEN)? as usize != x.bqual().len()
    {
        return Ok(false);
    }
    let n = x.gtrid().len() + x.bqual().len();
    t.with_bytes(b + B_DATA, n as u64, |d| d == &x.data()[..n])
}

/// Whether the key entry `k` is for `key`.
pub fn key_is(t: &Txn<'_>, k: Off, key: &[u8]) -> Result<bool, Error> {
    if t.get_u32(k + K_KLEN)? as u16 as usize != key.len() {
        return Ok(false);
    }
    t.with_bytes(k + K_KEY, key.len() as u64, |d| d == key)
}

/// The key bytes of entry `k`.
pub fn key_of(t: &Txn<'_>, k: Off) -> Result<Vec<u8>, Error> {
    let n = key_len(t, k)?;
    let mut key = vec![0u8; n];
    t.read_bytes(k + K_KEY, &mut key)?;
    Ok(key)
}

pub fn key_len(t: &Txn<'_>, k: Off) -> Result<usize, Error> {
    Ok((t.get_u32(k + K_KLEN)? & 0xffff) as usize)
}

pub fn s_count(t: &Txn<'_>, k: Off) -> Result<u64, Error> {
    Ok((t.get_u32(k + K_KLEN)? >> 16) as u64)
}

pub fn set_s_count(t: &mut Txn<'_>, k: Off, n: u64) -> Result<(), Error> {
    let klen = t.get_u32(k + K_KLEN)? & 0xffff;
    let n = u32::try_from(n)
        .ok()
        .filter(|&n| n <= 0xffff)
        .ok_or_else(|| Error::Corrupt("more than 65535 shared holders of one key".into()))?;
    t.set_u32(k + K_KLEN, klen | (n << 16))
}

/// The more-shared-holders array of a key entry.
pub fn s_more(k: Off) -> Vec64 {
    Vec64::at(k + K_SMORE)
}

/// The more-gap-holders array of a key entry.
pub fn g_more(k: Off) -> Vec64 {
    Vec64::at(k + K_GMORE)
}

/// The queue of a key entry.
pub fn queue(k: Off) -> Vec64 {
    Vec64::at(k + K_QUEUE)
}

pub fn assoc(b: Off) -> Vec64 {
    Vec64::at(b + B_ASSOC)
}

pub fn locks(b: Off) -> Vec64 {
    Vec64::at(b + B_LOCKS)
}

pub fn waits(b: Off) -> Vec64 {
    Vec64::at(b + B_WAITS)
}

pub fn journal(b: Off) -> Vec64 {
    Vec64::at(b + B_JOURNAL)
}

pub fn savepoints(b: Off) -> Vec64 {
    Vec64::at(b + B_SAVEPOINTS)
}

/// Wall-clock time now, in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sets when the branch's current phase began (`at`, ns since the Unix epoch), known.
pub fn set_since(t: &mut Txn<'_>, b: Off, at: u64) -> Result<(), Error> {
    t.set_u64(b + B_SINCE, at)?;
    t.set_u8(b + B_SINCE_UNKNOWN, 0)
}

/// When the branch's current phase began, or `None` if the log recorded no time for it (its
/// `since` is then when the region was built).
pub fn since(t: &Txn<'_>, b: Off) -> Result<Option<u64>, Error> {
    Ok((t.get_u8(b + B_SINCE_UNKNOWN)? == 0).then_some(t.get_u64(b + B_SINCE)?))
}

/// Replaces a record's text block (heuristic reason, or why rollback-only).
pub fn set_text(t: &mut Txn<'_>, b: Off, text: &str) -> Result<(), Error> {
    let old = t.get_u64(b + B_TEXT)?;
    let bytes = text.as_bytes();
    let new = if bytes.is_empty() {
        0
    } else {
        let o = t.alloc(bytes.len() as u64)?;
        t.init_bytes(o, bytes)?;
        o
    };
    t.set_u64(b + B_TEXT, new)?;
    t.set_u64(b + B_TEXT_LEN, bytes.len() as u64)?;
    if old != 0 {
        t.free(old)?;
    }
    Ok(())
}

/// A record's text block.
pub fn text(t: &Txn<'_>, b: Off) -> Result<String, Error> {
    let (o, n) = (t.get_u64(b + B_TEXT)?, t.get_u64(b + B_TEXT_LEN)?);
    if o == 0 || n == 0 {
        return Ok(String::new());
    }
    if n > 1 << 20 {
        return Err(Error::Corrupt(format!("text of {n} bytes")));
    }
    let mut v = vec![0u8; n as usize];
    t.read_bytes(o, &mut v)?;
    Ok(String::from_utf8_lossy(&v).into_owned())
}
