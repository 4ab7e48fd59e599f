//! The committed key-value index: where each committed value lives in the log.
//!
//! Owns: the map from key to the log position of its latest committed value, and the count of
//! log bytes the live entries stand for (what reclaiming compares the log's size with).
//! Invariant: an entry points at the value bytes of a durable PUT record that is still in the
//! log; `bytes` is the sum of [`Index::cost`] over the entries.

use crate::log::{put_value_offset, Lsn};
use std::collections::HashMap;

/// Where a committed (or branch-private) value lives in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ValueLoc {
    pub lsn: Lsn,
    pub len: u32,
}

impl ValueLoc {
    /// The location of the value of a PUT of `key` whose record starts at `lsn` (None for a
    /// delete).
    pub fn of_record(lsn: Lsn, key: &[u8], value: Option<&[u8]>) -> Option<ValueLoc> {
        value.map(|v| ValueLoc {
            lsn: lsn + put_value_offset(key.len()),
            len: v.len() as u32,
        })
    }
}

/// The committed key-value index, and the log bytes its live entries stand for.
#[derive(Default)]
pub(super) struct Index {
    pub map: HashMap<Vec<u8>, ValueLoc>,
    pub bytes: u64,
}

impl Index {
    /// Log bytes of the PUT record behind an entry.
    fn cost(key: &[u8], loc: &ValueLoc) -> u64 {
        put_value_offset(key.len()) + loc.len as u64
    }

    fn put(&mut self, key: &[u8], loc: ValueLoc) {
        self.bytes += Index::cost(key, &loc);
        if let Some(old) = self.map.get_mut(key) {
            self.bytes -= Index::cost(key, old);
            *old = loc;
        } else {
            self.map.insert(key.to_vec(), loc);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= Index::cost(key, &old);
        }
    }

    /// Makes `key` read as `loc` (None: absent).
    pub fn set(&mut self, key: &[u8], loc: Option<ValueLoc>) {
        match loc {
            Some(loc) => self.put(key, loc),
            None => self.remove(key),
        }
    }
}
