//! Key entries in the shared region: committed values, pending writes, and the entries' life.
//!
//! Owns: finding and creating a key's entry, its committed value (with the live-data figures
//! reclaiming compares the log with), its pending write (one branch at a time: the one holding
//! the key exclusively), and removing an entry nothing needs any more — in the table and in key
//! order (`order.rs`) alike. Locks on the entry are `locks.rs`'s. Layout: `layout.rs`.

use super::layout::*;
use super::locks;
use super::order;
use crate::log::put_value_offset;
use crate::shm::{Error, Off, Txn};

/// Where a value lives in the log: the LSN of its bytes and their length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueLoc {
    pub lsn: u64,
    pub len: u32,
}

impl ValueLoc {
    /// The location of the value of a PUT of `key` whose record starts at `lsn` (None for a
    /// delete).
    pub fn of_record(lsn: u64, key: &[u8], value: Option<&[u8]>) -> Option<ValueLoc> {
        value.map(|v| ValueLoc {
            lsn: lsn + put_value_offset(key.len()),
            len: v.len() as u32,
        })
    }
}

/// The entry of `key`, if it has one.
pub fn find(t: &Txn<'_>, key: &[u8]) -> Result<Option<Off>, Error> {
    KEYS.find(t, hash_bytes(key), |k| key_is(t, k, key))
}

/// The entry of `key`, created (empty: absent, unlocked) if it has none.
pub fn find_or_insert(t: &mut Txn<'_>, key: &[u8]) -> Result<Off, Error> {
    if let Some(k) = find(t, key)? {
        return Ok(k);
    }
    let k = new_entry(t, key)?;
    order::insert(t, k, key)?;
    // The new key splits a gap: whoever scanned that gap must see the key as scanned too.
    let after = match order::next(t, k)? {
        0 => order::supremum(t)?,
        n => n,
    };
    locks::inherit_gap(t, after, k)?;
    Ok(k)
}

/// A new entry for `key`, in the table but not yet in key order.
fn new_entry(t: &mut Txn<'_>, key: &[u8]) -> Result<Off, Error> {
    let hash = hash_bytes(key);
    let k = t.alloc_zeroed(order::entry_size(key.len(), order::height_for(hash)))?;
    t.init_u64(k + K_HASH, hash)?;
    t.init_u32(k + K_KLEN, key.len() as u32)?;
    order::init_height(t, k, hash)?;
    t.init_bytes(k + K_KEY, key)?;
    KEYS.insert(t, hash, k)?;
    Ok(k)
}

/// The entry of `key`, which must be new and follow every key `a` linked so far (building the
/// region from the log, in key order).
pub fn insert_last(t: &mut Txn<'_>, a: &mut order::Appender, key: &[u8]) -> Result<Off, Error> {
    let k = new_entry(t, key)?;
    a.append(t, k)?;
    Ok(k)
}

/// Removes `k` if nothing needs it: not committed, no pending write, no holder, no gap holder,
/// no queue. The supremum stays.
pub fn maybe_remove(t: &mut Txn<'_>, k: Off) -> Result<(), Error> {
    if t.get_u64(k + K_VAL)? != 0
        || t.get_u64(k + K_POWNER)? != 0
        || t.get_u64(k + K_XOWNER)? != 0
        || s_count(t, k)? != 0
        || t.get_u64(k + K_G1)? != 0
        || !queue(k).is_empty(t)?
        || k == order::supremum(t)?
    {
        return Ok(());
    }
    let hash = t.get_u64(k + K_HASH)?;
    if !KEYS.remove(t, hash, k)? {
        return Err(Error::Corrupt(format!("key entry {k} is not in the table")));
    }
    let key = key_of(t, k)?;
    order::remove(t, k, &key)?;
    s_more(k).clear(t)?;
    g_more(k).clear(t)?;
    t.free(k)
}

/// The committed value of `k`.
pub fn committed(t: &Txn<'_>, k: Off) -> Result<Option<ValueLoc>, Error> {
    let lsn = t.get_u64(k + K_VAL)?;
    if lsn == 0 {
        return Ok(None);
    }
    Ok(Some(ValueLoc {
        lsn,
        len: t.get_u32(k + K_VLEN)?,
    }))
}

/// Log bytes of the PUT record behind a committed value.
fn cost(key_len: usize, loc: &ValueLoc) -> u64 {
    put_value_offset(key_len) + loc.len as u64
}

/// Makes `k` read as `loc` once committed (None: absent), keeping the live figures.
pub fn set_committed(t: &mut Txn<'_>, k: Off, loc: Option<ValueLoc>) -> Result<(), Error> {
    let klen = key_len(t, k)?;
    let old = committed(t, k)?;
    let (mut keys, mut bytes) = (t.get_u64(R_LIVE_KEYS)?, t.get_u64(R_LIVE_BYTES)?);
    if let Some(o) = old {
        keys = keys.saturating_sub(1);
        bytes = bytes.saturating_sub(cost(klen, &o));
    }
    if let Some(n) = loc {
        keys += 1;
        bytes += cost(klen, &n);
    }
    t.set_u64(R_LIVE_KEYS, keys)?;
    t.set_u64(R_LIVE_BYTES, bytes)?;
    match loc {
        Some(n) => {
            t.set_u64(k + K_VAL, n.lsn)?;
            t.set_u32(k + K_VLEN, n.len)
        }
        None => {
            t.set_u64(k + K_VAL, 0)?;
            t.set_u32(k + K_VLEN, 0)
        }
    }
}

/// A key's pending write: its branch, the value (None: a delete) and the record's LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub owner: Off,
    pub value: Option<ValueLoc>,
    pub record: u64,
}

/// The pending write of `k`, if any.
pub fn pending(t: &Txn<'_>, k: Off) -> Result<Option<Pending>, Error> {
    let owner = t.get_u64(k + K_POWNER)?;
    if owner == 0 {
        return Ok(None);
    }
    let lsn = t.get_u64(k + K_PVAL)?;
    Ok(Some(Pending {
        owner,
        value: (lsn != 0)
            .then(|| t.get_u32(k + K_PLEN).map(|len| ValueLoc { lsn, len }))
            .transpose()?,
        record: t.get_u64(k + K_PREC)?,
    }))
}

/// Sets (or, with None, clears) the pending write of `k`.
pub fn set_pending(t: &mut Txn<'_>, k: Off, p: Option<Pending>) -> Result<(), Error> {
    match p {
        Some(p) => {
            t.set_u64(k + K_POWNER, p.owner)?;
            t.set_u64(k + K_PVAL, p.value.map_or(0, |v| v.lsn))?;
            t.set_u32(k + K_PLEN, p.value.map_or(0, |v| v.len))?;
            t.set_u64(k + K_PREC, p.record)
        }
        None => {
            t.set_u64(k + K_POWNER, 0)?;
            t.set_u64(k + K_PVAL, 0)?;
            t.set_u32(k + K_PLEN, 0)?;
            t.set_u64(k + K_PREC, 0)
        }
    }
}

/// What `key` reads as for `owner` (its own pending write, else the committed value).
pub fn visible(t: &Txn<'_>, k: Off, owner: Option<Off>) -> Result<Option<ValueLoc>, Error> {
    if let (Some(o), Some(p)) = (owner, pending(t, k)?) {
        if p.owner == o {
            return Ok(p.value);
        }
    }
    committed(t, k)
}
