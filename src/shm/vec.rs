//! Growable arrays of `u64` in a region, each owned by one word of a record.
//!
//! Owns: the array block's format and its changes. Invariants: the owning word holds 0 (empty)
//! or the offset of a block `[len, cap, items…]` with `len <= cap`; growing allocates a new
//! block, copies into it (fresh memory), switches the owning word (journaled) and frees the old
//! block at commit, so a rolled-back section finds the old array intact.
//!
//! # Layout
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | length |
//! | 8 | 8 | capacity |
//! | 16 | 8 × capacity | items |

use super::{Error, Off, Txn};

const LEN: u64 = 0;
const CAP: u64 = 8;
const ITEMS: u64 = 16;

/// The array whose block offset is kept in the word at `field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vec64 {
    field: Off,
}

impl Vec64 {
    /// The array owned by the word at `field`.
    pub const fn at(field: Off) -> Vec64 {
        Vec64 { field }
    }

    fn block(&self, t: &Txn<'_>) -> Result<Option<(Off, u64, u64)>, Error> {
        let b = t.get_u64(self.field)?;
        if b == 0 {
            return Ok(None);
        }
        let (len, cap) = (t.get_u64(b + LEN)?, t.get_u64(b + CAP)?);
        if len > cap || cap > 1 << 32 {
            return Err(Error::Corrupt(format!("array of {len}/{cap} at {b}")));
        }
        Ok(Some((b, len, cap)))
    }

    /// The number of items.
    pub fn len(&self, t: &Txn<'_>) -> Result<u64, Error> {
        Ok(self.block(t)?.map_or(0, |(_, len, _)| len))
    }

    /// Whether it has no item.
    pub fn is_empty(&self, t: &Txn<'_>) -> Result<bool, Error> {
        Ok(self.len(t)? == 0)
    }

    /// Item `i`.
    pub fn get(&self, t: &Txn<'_>, i: u64) -> Result<u64, Error> {
        match self.block(t)? {
            Some((b, len, _)) if i < len => t.get_u64(b + ITEMS + 8 * i),
            _ => Err(Error::Corrupt(format!("array index {i} out of range"))),
        }
    }

    /// Every item, in order.
    pub fn items(&self, t: &Txn<'_>) -> Result<Vec<u64>, Error> {
        let Some((b, len, _)) = self.block(t)? else {
            return Ok(Vec::new());
        };
        (0..len).map(|i| t.get_u64(b + ITEMS + 8 * i)).collect()
    }

    /// Replaces item `i`.
    pub fn set(&self, t: &mut Txn<'_>, i: u64, v: u64) -> Result<(), Error> {
        match self.block(t)? {
            Some((b, len, _)) if i < len => t.set_u64(b + ITEMS + 8 * i, v),
            _ => Err(Error::Corrupt(format!("array index {i} out of range"))),
        }
    }

    /// A block for `len` items holding the first `keep` items of the old one, switched in.
    fn regrow(
        &self,
        t: &mut Txn<'_>,
        old: Option<(Off, u64, u64)>,
        cap: u64,
    ) -> Result<Off, Error> {
        let nb = t.alloc(ITEMS + 8 * cap)?;
        let len = old.map_or(0, |(_, len, _)| len);
        t.init_u64(nb + LEN, len)?;
        t.init_u64(nb + CAP, cap)?;
        if let Some((b, len, _)) = old {
            for i in 0..len {
                let v = t.get_u64(b + ITEMS + 8 * i)?;
                t.init_u64(nb + ITEMS + 8 * i, v)?;
            }
            t.free(b)?;
        }
        t.set_u64(self.field, nb)?;
        Ok(nb)
    }

    /// Inserts `v` at position `i` (`i <= len`), shifting later items up.
    pub fn insert(&self, t: &mut Txn<'_>, i: u64, v: u64) -> Result<(), Error> {
        let old = self.block(t)?;
        let (mut b, len, cap) = old.unwrap_or((0, 0, 0));
        if i > len {
            return Err(Error::Corrupt(format!("array insert at {i} past {len}")));
        }
        if len == cap {
            b = self.regrow(t, old, (cap * 2).max(4))?;
        }
        let mut j = len;
        while j > i {
            let prev = t.get_u64(b + ITEMS + 8 * (j - 1))?;
            t.set_u64(b + ITEMS + 8 * j, prev)?;
            j -= 1;
        }
        t.set_u64(b + ITEMS + 8 * i, v)?;
        t.set_u64(b + LEN, len + 1)
    }

    /// Appends `v`.
    pub fn push(&self, t: &mut Txn<'_>, v: u64) -> Result<(), Error> {
        let len = self.len(t)?;
        self.insert(t, len, v)
    }

    /// Removes item `i`, keeping the order of the others.
    pub fn remove(&self, t: &mut Txn<'_>, i: u64) -> Result<u64, Error> {
        let Some((b, len, _)) = self.block(t)? else {
            return Err(Error::Corrupt("remove from an empty array".into()));
        };
        if i >= len {
            return Err(Error::Corrupt(format!("array remove at {i} of {len}")));
        }
        let v = t.get_u64(b + ITEMS + 8 * i)?;
        for j in i..len - 1 {
            let next = t.get_u64(b + ITEMS + 8 * (j + 1))?;
            t.set_u64(b + ITEMS + 8 * j, next)?;
        }
        if len == 1 {
            t.set_u64(self.field, 0)?;
            t.free(b)?;
        } else {
            t.set_u64(b + LEN, len - 1)?;
        }
        Ok(v)
    }

    /// Removes the first item equal to `v`; false if there is none.
    pub fn remove_value(&self, t: &mut Txn<'_>, v: u64) -> Result<bool, Error> {
        match self.position(t, |x| x == v)? {
            Some(i) => self.remove(t, i).map(|_| true),
            None => Ok(false),
        }
    }

    /// The index of the first item for which `pred` says true.
    pub fn position(
        &self,
        t: &Txn<'_>,
        mut pred: impl FnMut(u64) -> bool,
    ) -> Result<Option<u64>, Error> {
        let Some((b, len, _)) = self.block(t)? else {
            return Ok(None);
        };
        for i in 0..len {
            if pred(t.get_u64(b + ITEMS + 8 * i)?) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Keeps the first `n` items.
    pub fn truncate(&self, t: &mut Txn<'_>, n: u64) -> Result<(), Error> {
        match self.block(t)? {
            Some((b, len, _)) if n < len => {
                if n == 0 {
                    t.set_u64(self.field, 0)?;
                    t.free(b)
                } else {
                    t.set_u64(b + LEN, n)
                }
            }
            _ => Ok(()),
        }
    }

    /// Removes every item and frees the block.
    pub fn clear(&self, t: &mut Txn<'_>) -> Result<(), Error> {
        self.truncate(t, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{root, Region};
    use super::*;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn push_insert_remove_and_rollback() {
        let r = Region::anonymous(4 << 20).unwrap();
        let v = Vec64::at(root(41));
        let mut t = r.lock(T).unwrap();
        for i in 0..10 {
            v.push(&mut t, i).unwrap();
        }
        v.insert(&mut t, 0, 100).unwrap();
        assert_eq!(v.remove(&mut t, 3).unwrap(), 2);
        assert!(v.remove_value(&mut t, 7).unwrap());
        assert!(!v.remove_value(&mut t, 77).unwrap());
        t.commit().unwrap();
        let want = vec![100, 0, 1, 3, 4, 5, 6, 8, 9];
        let mut t = r.lock(T).unwrap();
        assert_eq!(v.items(&t).unwrap(), want);
        for i in 0..100 {
            v.push(&mut t, 1000 + i).unwrap();
        }
        v.clear(&mut t).unwrap();
        t.rollback();
        let mut t = r.lock(T).unwrap();
        assert_eq!(v.items(&t).unwrap(), want);
        v.clear(&mut t).unwrap();
        assert!(v.is_empty(&t).unwrap());
        t.commit().unwrap();
        r.lock(T).unwrap().check_heap().unwrap();
    }
}
