//! An open-addressing hash table in a region: 64-bit hashes to record offsets.
//!
//! Owns: finding, inserting and removing `(hash, record)` pairs, growing the slot array, and
//! iterating it in chunks. The records are the caller's (the table never reads them; equality
//! is the caller's closure). Invariants: a slot is empty (`rec` 0), a tombstone (`rec` 1) or
//! live; the live count plus tombstones stay below 3/4 of the capacity (a power of two), so a
//! probe always ends at an empty slot; growing builds a new array (fresh memory, unjournaled),
//! switches the header's pointer (journaled) and frees the old array at commit — so a section
//! rolled back after growing finds the old table intact.
//!
//! # Layout
//! The table's root is a `u64` word (wherever the caller keeps it) holding the offset of its
//! header block:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | capacity (slots, a power of two ≥ 8) |
//! | 8 | 8 | live entries |
//! | 16 | 8 | tombstones |
//! | 24 | 8 | offset of the slot array |
//! | 32 | 8 | generation: bumped at every growth (an iteration cursor is void after one) |
//!
//! The slot array holds `capacity` slots of 16 bytes: the hash (`u64`), then the record offset
//! (`u64`; 0 empty, 1 tombstone). Probing is linear from `hash & (capacity - 1)`.

use super::{Error, Off, Txn};

const CAP: u64 = 0;
const LEN: u64 = 8;
const TOMBS: u64 = 16;
const SLOTS: u64 = 24;
const GEN: u64 = 32;
const HEADER: u64 = 40;

const EMPTY: u64 = 0;
const TOMB: u64 = 1;

/// A table whose header offset is kept in the `u64` word at `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    root: Off,
}

/// Where an iteration stopped: the next slot, and the generation it is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    slot: u64,
    generation: u64,
}

impl Cursor {
    /// The start of an iteration.
    pub const START: Cursor = Cursor {
        slot: 0,
        generation: u64::MAX,
    };
}

impl Table {
    /// The table rooted at the word `root`.
    pub const fn at(root: Off) -> Table {
        Table { root }
    }

    /// Creates an empty table with room for `capacity` slots (rounded up to a power of two, at
    /// least 8) and stores its header offset at the root. The root's old table, if any, is lost.
    pub fn create(t: &mut Txn<'_>, root: Off, capacity: u64) -> Result<Table, Error> {
        let cap = capacity.max(8).next_power_of_two();
        let slots = alloc_slots(t, cap)?;
        let h = t.alloc(HEADER)?;
        t.init_u64(h + CAP, cap)?;
        t.init_u64(h + LEN, 0)?;
        t.init_u64(h + TOMBS, 0)?;
        t.init_u64(h + SLOTS, slots)?;
        t.init_u64(h + GEN, 0)?;
        t.set_u64(root, h)?;
        Ok(Table { root })
    }

    fn header(&self, t: &Txn<'_>) -> Result<(Off, u64, Off), Error> {
        let h = t.get_u64(self.root)?;
        let cap = t.get_u64(h + CAP)?;
        if cap < 8 || !cap.is_power_of_two() || cap > 1 << 40 {
            return Err(Error::Corrupt(format!("table capacity {cap}")));
        }
        Ok((h, cap, t.get_u64(h + SLOTS)?))
    }

    /// Live entries.
    pub fn len(&self, t: &Txn<'_>) -> Result<u64, Error> {
        let h = t.get_u64(self.root)?;
        t.get_u64(h + LEN)
    }

    /// Whether the table has no live entry.
    pub fn is_empty(&self, t: &Txn<'_>) -> Result<bool, Error> {
        Ok(self.len(t)? == 0)
    }

    /// The first record with `hash` for which `eq` says true.
    pub fn find(
        &self,
        t: &Txn<'_>,
        hash: u64,
        mut eq: impl FnMut(Off) -> Result<bool, Error>,
    ) -> Result<Option<Off>, Error> {
        let (_, cap, slots) = self.header(t)?;
        let mask = cap - 1;
        let mut i = hash & mask;
        for _ in 0..cap {
            let s = slots + 16 * i;
            let rec = t.get_u64(s + 8)?;
            if rec == EMPTY {
                return Ok(None);
            }
            if rec != TOMB && t.get_u64(s)? == hash && eq(rec)? {
                return Ok(Some(rec));
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    /// Adds `(hash, rec)` (no check for an equal record already present).
    pub fn insert(&self, t: &mut Txn<'_>, hash: u64, rec: Off) -> Result<(), Error> {
        if rec <= TOMB {
            return Err(Error::Corrupt(format!("record offset {rec}")));
        }
        let (h, cap, _) = self.header(t)?;
        let used = t.get_u64(h + LEN)? + t.get_u64(h + TOMBS)?;
        if (used + 1) * 4 > cap * 3 {
            self.grow(t)?;
        }
        let (h, cap, slots) = self.header(t)?;
        let mask = cap - 1;
        let mut i = hash & mask;
        for _ in 0..cap {
            let s = slots + 16 * i;
            let cur = t.get_u64(s + 8)?;
            if cur == EMPTY || cur == TOMB {
                if cur == TOMB {
                    let tombs = t.get_u64(h + TOMBS)?;
                    t.set_u64(h + TOMBS, tombs.saturating_sub(1))?;
                }
                t.set_u64(s, hash)?;
                t.set_u64(s + 8, rec)?;
                let len = t.get_u64(h + LEN)?;
                return t.set_u64(h + LEN, len + 1);
            }
            i = (i + 1) & mask;
        }
        Err(Error::Corrupt("hash table full".into()))
    }

    /// Removes the entry `(hash, rec)`; false if it is not there.
    pub fn remove(&self, t: &mut Txn<'_>, hash: u64, rec: Off) -> Result<bool, Error> {
        let (h, cap, slots) = self.header(t)?;
        let mask = cap - 1;
        let mut i = hash & mask;
        for _ in 0..cap {
            let s = slots + 16 * i;
            let cur = t.get_u64(s + 8)?;
            if cur == EMPTY {
                return Ok(false);
            }
            if cur == rec && t.get_u64(s)? == hash {
                // A tombstone keeps the probe chains behind it intact; if the next slot is
                // empty, no chain runs through here and the slot can be emptied outright.
                let next = slots + 16 * ((i + 1) & mask);
                let end_of_chain = t.get_u64(next + 8)? == EMPTY;
                t.set_u64(s + 8, if end_of_chain { EMPTY } else { TOMB })?;
                if !end_of_chain {
                    let tombs = t.get_u64(h + TOMBS)?;
                    t.set_u64(h + TOMBS, tombs + 1)?;
                }
                let len = t.get_u64(h + LEN)?;
                t.set_u64(h + LEN, len.saturating_sub(1))?;
                return Ok(true);
            }
            i = (i + 1) & mask;
        }
        Ok(false)
    }

    /// Doubles the capacity (or rebuilds at the same capacity when tombstones fill it).
    fn grow(&self, t: &mut Txn<'_>) -> Result<(), Error> {
        let (h, cap, slots) = self.header(t)?;
        let len = t.get_u64(h + LEN)?;
        let new_cap = if (len + 1) * 2 > cap { cap * 2 } else { cap };
        let new_slots = alloc_slots(t, new_cap)?;
        let mask = new_cap - 1;
        for i in 0..cap {
            let s = slots + 16 * i;
            let rec = t.get_u64(s + 8)?;
            if rec == EMPTY || rec == TOMB {
                continue;
            }
            let hash = t.get_u64(s)?;
            let mut j = hash & mask;
            loop {
                let d = new_slots + 16 * j;
                if t.get_u64(d + 8)? == EMPTY {
                    t.init_u64(d, hash)?;
                    t.init_u64(d + 8, rec)?;
                    break;
                }
                j = (j + 1) & mask;
            }
        }
        let gen = t.get_u64(h + GEN)?;
        t.set_u64(h + SLOTS, new_slots)?;
        t.set_u64(h + CAP, new_cap)?;
        t.set_u64(h + TOMBS, 0)?;
        t.set_u64(h + GEN, gen.wrapping_add(1))?;
        t.free(slots)
    }

    /// Up to `max` live records from `cursor` on, and where to go on (`None`: the end). A
    /// cursor from before a growth starts over from the first slot.
    pub fn scan(
        &self,
        t: &Txn<'_>,
        cursor: Cursor,
        max: usize,
    ) -> Result<(Vec<Off>, Option<Cursor>), Error> {
        let (h, cap, slots) = self.header(t)?;
        let generation = t.get_u64(h + GEN)?;
        let mut i = if cursor.generation == generation {
            cursor.slot
        } else {
            0
        };
        let mut out = Vec::new();
        while i < cap {
            if out.len() >= max {
                return Ok((
                    out,
                    Some(Cursor {
                        slot: i,
                        generation,
                    }),
                ));
            }
            let rec = t.get_u64(slots + 16 * i + 8)?;
            if rec != EMPTY && rec != TOMB {
                out.push(rec);
            }
            i += 1;
        }
        Ok((out, None))
    }

    /// Every live record (for small tables, or a store with no other process).
    pub fn all(&self, t: &Txn<'_>) -> Result<Vec<Off>, Error> {
        Ok(self.scan(t, Cursor::START, usize::MAX)?.0)
    }
}

/// A zeroed slot array of `cap` slots, allocated in this section.
fn alloc_slots(t: &mut Txn<'_>, cap: u64) -> Result<Off, Error> {
    let bytes = cap
        .checked_mul(16)
        .ok_or_else(|| Error::Corrupt("table too large".into()))?;
    t.alloc_zeroed(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::{root, Region};
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn insert_find_remove_grow_and_scan() {
        let r = Region::anonymous(8 << 20).unwrap();
        let mut t = r.lock(T).unwrap();
        let tab = Table::create(&mut t, root(40), 8).unwrap();
        t.commit().unwrap();
        let mut model: HashMap<u64, Off> = HashMap::new();
        // Records are small blocks holding their key, so `eq` can compare.
        for round in 0..3u64 {
            let mut t = r.lock(T).unwrap();
            for k in 0..500u64 {
                let key = round * 1000 + k;
                let rec = t.alloc(8).unwrap();
                t.init_u64(rec, key).unwrap();
                // Colliding hashes on purpose: eq must tell records apart.
                tab.insert(&mut t, key % 37, rec).unwrap();
                model.insert(key, rec);
            }
            // Remove a third.
            for k in (0..500u64).step_by(3) {
                let key = round * 1000 + k;
                let rec = model.remove(&key).unwrap();
                assert!(tab.remove(&mut t, key % 37, rec).unwrap());
                assert!(!tab.remove(&mut t, key % 37, rec).unwrap());
            }
            t.commit().unwrap();
        }
        let t = r.lock(T).unwrap();
        assert_eq!(tab.len(&t).unwrap(), model.len() as u64);
        for (&key, &rec) in &model {
            let got = tab
                .find(&t, key % 37, |o| Ok(t.get_u64(o)? == key))
                .unwrap();
            assert_eq!(got, Some(rec), "key {key}");
        }
        assert_eq!(tab.find(&t, 5, |_| Ok(false)).unwrap(), None);
        // Chunked scan sees every record once.
        let mut seen = Vec::new();
        let mut cur = Cursor::START;
        loop {
            let (chunk, next) = tab.scan(&t, cur, 17).unwrap();
            seen.extend(chunk);
            match next {
                Some(c) => cur = c,
                None => break,
            }
        }
        seen.sort_unstable();
        let mut want: Vec<Off> = model.values().copied().collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_rolled_back_growth_leaves_the_table_as_it_was() {
        let r = Region::anonymous(8 << 20).unwrap();
        let mut t = r.lock(T).unwrap();
        let tab = Table::create(&mut t, root(40), 8).unwrap();
        let mut recs = Vec::new();
        for k in 0..5u64 {
            let rec = t.alloc(8).unwrap();
            t.init_u64(rec, k).unwrap();
            tab.insert(&mut t, k, rec).unwrap();
            recs.push(rec);
        }
        t.commit().unwrap();
        let mut t = r.lock(T).unwrap();
        for k in 5..40u64 {
            let rec = t.alloc(8).unwrap();
            tab.insert(&mut t, k, rec).unwrap();
        }
        t.rollback();
        let t = r.lock(T).unwrap();
        assert_eq!(tab.len(&t).unwrap(), 5);
        for (k, &rec) in recs.iter().enumerate() {
            assert_eq!(tab.find(&t, k as u64, |_| Ok(true)).unwrap(), Some(rec));
        }
        t.check_heap().unwrap();
    }
}
