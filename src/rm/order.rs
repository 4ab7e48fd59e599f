//! Key order: a skip list threaded through the key entries of the shared region.
//!
//! Owns: linking a key entry into byte order when it is created and out when it is removed,
//! and finding entries by position (the first at or after a key, the last before one, the next
//! and the previous entry). The hash table (`KEYS`) stays the way to a key by name; this list is
//! the way through keys in order. Every change is made in the caller's section, journaled like
//! the rest, so a process dying half way leaves the list as it was.
//!
//! # Structure (see `layout.rs` for the bytes)
//! Every key entry in the table has a *tower* after its key bytes: the entry before it in key
//! order (level 0 only) and the next entry at each of its levels. Its height comes from its
//! key's hash (1 + a quarter of the trailing zero bits, so each level holds about a quarter of
//! the one below), so the shape is a function of the keys alone. The head (root 33) is a block
//! of [`MAX_LEVEL`] next-pointers. The *supremum* (root 34) is a key entry that sorts after
//! every key and is in neither the table nor the list: it carries the gap locks of the end of
//! the key space. Root 35 counts removals, so a cursor that kept an entry's offset knows
//! whether it may still step from it.

use super::layout::*;
use crate::shm::{Error, Off, Txn};
use std::cmp::Ordering;

/// Levels of the head; enough for 2^48 keys at a quarter per level.
pub const MAX_LEVEL: usize = 24;

/// The height of the tower of a key with `hash`.
pub fn height_for(hash: u64) -> u64 {
    let tz = (hash >> 40).trailing_zeros() as u64; // 24 bits: 0..=24 (24 when all zero)
    (1 + tz / 2).min(MAX_LEVEL as u64)
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes of a key entry with a key of `klen` bytes and a tower of `height` levels.
pub fn entry_size(klen: usize, height: u64) -> u64 {
    align8(K_KEY + klen as u64) + 8 + 8 * height
}

/// Offset of the tower of entry `k`: its previous-entry word, then its next-entry words.
fn tower(t: &Txn<'_>, k: Off) -> Result<Off, Error> {
    Ok(k + align8(K_KEY + key_len(t, k)? as u64))
}

fn height(t: &Txn<'_>, k: Off) -> Result<usize, Error> {
    let h = t.get_u8(k + K_HEIGHT)? as usize;
    if h == 0 || h > MAX_LEVEL {
        return Err(Error::Corrupt(format!(
            "key entry {k}: tower of {h} levels"
        )));
    }
    Ok(h)
}

fn head(t: &Txn<'_>) -> Result<Off, Error> {
    match t.get_u64(R_ORDER)? {
        0 => Err(Error::Corrupt("the key order has no head".into())),
        h => Ok(h),
    }
}

/// The word holding the next entry after `node` (an entry, or the head) at `level`.
fn next_word(t: &Txn<'_>, head: Off, node: Off, level: usize) -> Result<Off, Error> {
    if node == head {
        Ok(head + 8 * level as u64)
    } else {
        Ok(tower(t, node)? + 8 + 8 * level as u64)
    }
}

/// Creates the head and the supremum (a new region).
pub fn create(t: &mut Txn<'_>) -> Result<(), Error> {
    let h = t.alloc_zeroed(8 * MAX_LEVEL as u64)?;
    t.set_u64(R_ORDER, h)?;
    let s = t.alloc_zeroed(K_KEY)?;
    t.init_u64(s + K_HASH, SUPREMUM_HASH)?;
    t.set_u64(R_SUPREMUM, s)?;
    t.set_u64(R_ORDER_GEN, 0)
}

/// The supremum: the entry after the last key, holding the gap locks of the end.
pub fn supremum(t: &Txn<'_>) -> Result<Off, Error> {
    match t.get_u64(R_SUPREMUM)? {
        0 => Err(Error::Corrupt("the key order has no supremum".into())),
        s => Ok(s),
    }
}

/// Removals so far: an entry offset kept from a section is still in the list (and still the
/// same entry) as long as this has not changed.
pub fn generation(t: &Txn<'_>) -> Result<u64, Error> {
    t.get_u64(R_ORDER_GEN)
}

/// Compares the key of entry `k` with `key`.
pub fn cmp_key(t: &Txn<'_>, k: Off, key: &[u8]) -> Result<Ordering, Error> {
    let n = key_len(t, k)?;
    t.with_bytes(k + K_KEY, n as u64, |d| d.cmp(key))
}

/// For every level, the last node (an entry, or the head) whose key is before `key` — or, with
/// `or_equal`, not after it.
fn preds(t: &Txn<'_>, key: &[u8], or_equal: bool) -> Result<(Off, [Off; MAX_LEVEL]), Error> {
    let head = head(t)?;
    let mut out = [head; MAX_LEVEL];
    let mut x = head;
    for level in (0..MAX_LEVEL).rev() {
        loop {
            let n = t.get_u64(next_word(t, head, x, level)?)?;
            if n == 0 {
                break;
            }
            match cmp_key(t, n, key)? {
                Ordering::Less => x = n,
                Ordering::Equal if or_equal => x = n,
                _ => break,
            }
        }
        out[level] = x;
    }
    Ok((head, out))
}

/// Sets up the tower of a new entry `k` (allocated with [`entry_size`] for this height, zeroed).
pub fn init_height(t: &mut Txn<'_>, k: Off, hash: u64) -> Result<(), Error> {
    t.init_u8(k + K_HEIGHT, height_for(hash) as u8)
}

/// Links the new entry `k` (its key not in the list yet) into key order.
pub fn insert(t: &mut Txn<'_>, k: Off, key: &[u8]) -> Result<(), Error> {
    let (head, p) = preds(t, key, false)?;
    let h = height(t, k)?;
    let tw = tower(t, k)?;
    for (level, &pred) in p.iter().enumerate().take(h) {
        let w = next_word(t, head, pred, level)?;
        let n = t.get_u64(w)?;
        if level == 0 && n != 0 && cmp_key(t, n, key)? == Ordering::Equal {
            return Err(Error::Corrupt("a key is in the key order twice".into()));
        }
        t.set_u64(tw + 8 + 8 * level as u64, n)?;
        t.set_u64(w, k)?;
    }
    let prev = if p[0] == head { 0 } else { p[0] };
    t.set_u64(tw, prev)?;
    let n0 = t.get_u64(tw + 8)?;
    if n0 != 0 {
        let ntw = tower(t, n0)?;
        t.set_u64(ntw, k)?;
    }
    Ok(())
}

/// Unlinks entry `k` (with key `key`) from key order.
pub fn remove(t: &mut Txn<'_>, k: Off, key: &[u8]) -> Result<(), Error> {
    let (head, p) = preds(t, key, false)?;
    let h = height(t, k)?;
    let tw = tower(t, k)?;
    for (level, &pred) in p.iter().enumerate().take(h) {
        let w = next_word(t, head, pred, level)?;
        if t.get_u64(w)? != k {
            return Err(Error::Corrupt(format!(
                "key entry {k} is not in the key order at level {level}"
            )));
        }
        let n = t.get_u64(tw + 8 + 8 * level as u64)?;
        t.set_u64(w, n)?;
    }
    let prev = t.get_u64(tw)?;
    let n0 = t.get_u64(tw + 8)?;
    if n0 != 0 {
        let ntw = tower(t, n0)?;
        t.set_u64(ntw, prev)?;
    }
    let g = t.get_u64(R_ORDER_GEN)?;
    t.set_u64(R_ORDER_GEN, g + 1)
}

/// The entry after `k` (0: none).
pub fn next(t: &Txn<'_>, k: Off) -> Result<Off, Error> {
    t.get_u64(tower(t, k)? + 8)
}

/// The entry before `k` (0: none).
pub fn prev(t: &Txn<'_>, k: Off) -> Result<Off, Error> {
    t.get_u64(tower(t, k)?)
}

/// The first entry whose key is at or after `key` (`inclusive`) or after it (0: none).
pub fn first_from(t: &Txn<'_>, key: &[u8], inclusive: bool) -> Result<Off, Error> {
    let (head, p) = preds(t, key, !inclusive)?;
    t.get_u64(next_word(t, head, p[0], 0)?)
}

/// The last entry whose key is before `key`, or at or before it with `inclusive` (0: none).
pub fn last_before(t: &Txn<'_>, key: &[u8], inclusive: bool) -> Result<Off, Error> {
    let (head, p) = preds(t, key, inclusive)?;
    Ok(if p[0] == head { 0 } else { p[0] })
}

/// The first entry (0: none).
pub fn first(t: &Txn<'_>) -> Result<Off, Error> {
    t.get_u64(head(t)?)
}

/// The last entry (0: none).
pub fn last(t: &Txn<'_>) -> Result<Off, Error> {
    let head = head(t)?;
    let mut x = head;
    for level in (0..MAX_LEVEL).rev() {
        loop {
            let n = t.get_u64(next_word(t, head, x, level)?)?;
            if n == 0 {
                break;
            }
            x = n;
        }
    }
    Ok(if x == head { 0 } else { x })
}

/// Links entries created in increasing key order at the end of an empty list in constant time
/// each (building the region from the log).
pub struct Appender {
    last: [Off; MAX_LEVEL],
    head: Off,
}

impl Appender {
    /// An appender to the list, which must be empty.
    pub fn new(t: &Txn<'_>) -> Result<Appender, Error> {
        let head = head(t)?;
        if first(t)? != 0 {
            return Err(Error::Corrupt(
                "appending to a key order that is not empty".into(),
            ));
        }
        Ok(Appender {
            last: [head; MAX_LEVEL],
            head,
        })
    }

    /// Links `k`, whose key follows every key appended so far.
    pub fn append(&mut self, t: &mut Txn<'_>, k: Off) -> Result<(), Error> {
        let h = height(t, k)?;
        let tw = tower(t, k)?;
        let prev = self.last[0];
        t.set_u64(tw, if prev == self.head { 0 } else { prev })?;
        for level in 0..h {
            let w = next_word(t, self.head, self.last[level], level)?;
            t.set_u64(w, k)?;
            self.last[level] = k;
        }
        Ok(())
    }
}
