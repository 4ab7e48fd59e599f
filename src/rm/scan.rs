//! Ordered range reads: cursors over key order, over committed data or inside a branch.
//!
//! Owns: what a cursor sees and locks, and reading it in batches. A cursor walks the key order
//! (`order.rs`) between its bounds, forwards or backwards. Outside any branch it reads committed
//! values and locks nothing. Inside a branch (or local transaction) it sees what the branch
//! sees — its own writes merged in, its own deletes gone — and under `isolation=serializable`
//! it takes a shared lock and a gap lock on every entry it passes and a gap lock on the first
//! entry past its range (next-key locking, see `locks.rs`): until the branch prepares or ends,
//! no other branch can change, delete or insert a key in the range it read. Each step takes one
//! section for up to [`BATCH`] entries; the values are read from the log outside it.

use super::data::{Target, Working};
use super::keys::{self, ValueLoc};
use super::layout::*;
use super::locks::{self, Mode, Try};
use super::order;
use super::{Rm, Sect, Toc};
use crate::error::{Error, Result};
use crate::log::Media;
use crate::shm::{Off, Txn};
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::Ordering;

/// Entries the first section of a cursor passes at most; each next one passes twice as many, up
/// to [`BATCH`]: a short read locks few entries it does not return, a long one takes few
/// sections.
const FIRST_BATCH: usize = 16;

/// Entries one section passes at most.
const BATCH: usize = 64;

/// Value bytes one section reads ahead at most (at least one entry).
const BATCH_BYTES: u64 = 256 << 10;

/// Journal bytes after which a locking batch stops early (the journal holds 1 MiB).
const JOURNAL_BUDGET: u64 = 256 << 10;

/// The keys a cursor reads: between two bounds, in byte order or reversed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub lo: Bound<Vec<u8>>,
    pub hi: Bound<Vec<u8>>,
    pub reverse: bool,
}

impl Range {
    /// Every key.
    pub fn all() -> Range {
        Range {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
            reverse: false,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Range {
        // The first key after every key with the prefix: the prefix without its trailing 0xff
        // bytes, its last byte plus one (none if it is all 0xff).
        let mut end = prefix.to_vec();
        while end.last() == Some(&0xff) {
            end.pop();
        }
        let hi = match end.last_mut() {
            Some(b) => {
                *b += 1;
                Bound::Excluded(end)
            }
            None => Bound::Unbounded,
        };
        Range {
            lo: Bound::Included(prefix.to_vec()),
            hi,
            reverse: false,
        }
    }

    /// The same range, read from the high end down.
    pub fn reversed(mut self) -> Range {
        self.reverse = true;
        self
    }

    /// Whether entry `k` is not past the end a cursor moves towards.
    fn not_past_end(&self, t: &Txn<'_>, k: Off) -> Sect<bool> {
        let (bound, past) = if self.reverse {
            (&self.lo, std::cmp::Ordering::Less)
        } else {
            (&self.hi, std::cmp::Ordering::Greater)
        };
        Ok(match bound {
            Bound::Unbounded => true,
            Bound::Included(b) => order::cmp_key(t, k, b)? != past,
            Bound::Excluded(b) => {
                let c = order::cmp_key(t, k, b)?;
                c != past && c != std::cmp::Ordering::Equal
            }
        })
    }

    /// The first entry a cursor at `pos` (the last key it passed, None before the first) reads
    /// next, or 0.
    fn seek(&self, t: &Txn<'_>, pos: Option<&[u8]>) -> Sect<Off> {
        Ok(match (pos, self.reverse) {
            (Some(p), false) => order::first_from(t, p, false)?,
            (Some(p), true) => order::last_before(t, p, false)?,
            (None, false) => match &self.lo {
                Bound::Unbounded => order::first(t)?,
                Bound::Included(k) => order::first_from(t, k, true)?,
                Bound::Excluded(k) => order::first_from(t, k, false)?,
            },
            (None, true) => match &self.hi {
                Bound::Unbounded => order::last(t)?,
                Bound::Included(k) => order::last_before(t, k, true)?,
                Bound::Excluded(k) => order::last_before(t, k, false)?,
            },
        })
    }

    /// The first entry past the high bound (the supremum past the last key): its gap holds
    /// the keys between the range's last entry and the bound.
    fn past_high(&self, t: &Txn<'_>) -> Sect<Off> {
        let e = match &self.hi {
            Bound::Unbounded => 0,
            Bound::Included(k) => order::first_from(t, k, false)?,
            Bound::Excluded(k) => order::first_from(t, k, true)?,
        };
        Ok(if e == 0 { order::supremum(t)? } else { e })
    }
}

/// An open cursor: where it is and what it has read ahead.
#[derive(Debug)]
pub struct Scan {
    range: Range,
    /// The open instance of the store it reads.
    instance: u64,
    /// The tag of the branch (or local transaction) it reads in; None: committed data.
    tag: Option<u64>,
    /// The branch's write epoch when the read-ahead was read (see [`Rm::note_write`]).
    epoch: u64,
    /// The key of the last entry passed; None before the first.
    pos: Option<Vec<u8>>,
    /// In a branch: the key of the last entry handed out (where to read again from when the
    /// branch's own writes made the read-ahead stale).
    returned: Option<Vec<u8>>,
    /// Entries the next section may pass.
    batch: usize,
    /// The thread that last passed the branch check, and the threads' change count then.
    checked: Option<(Toc, u64)>,
    /// The last entry passed and the key order's generation when it was: while that has not
    /// changed the entry is still there, and the next step starts from it without a search.
    finger: Option<(Off, u64)>,
    ready: VecDeque<(Vec<u8>, Vec<u8>)>,
    end: bool,
}

impl Scan {
    /// Moves past the entry [`Rm::scan_peek`] showed.
    pub fn advance(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let item = self.ready.pop_front()?;
        if self.tag.is_some() {
            self.returned = Some(item.0.clone());
        }
        Some(item)
    }
}

/// What one section of a cursor found.
struct Batch {
    found: Vec<(Vec<u8>, ValueLoc)>,
    /// A key whose shared lock must be waited for before going on.
    wait: Option<Vec<u8>>,
    end: bool,
    last: Option<(Vec<u8>, Off)>,
    generation: u64,
}

impl<M: Media> Rm<M> {
    /// Opens a cursor over `range` for the thread `toc`: inside its branch or local transaction
    /// if it has one (then only usable while the thread works in it), else over committed data.
    pub fn scan(&self, toc: Toc, range: Range) -> Result<Scan> {
        for b in [&range.lo, &range.hi] {
            if let Bound::Included(k) | Bound::Excluded(k) = b {
                Self::check_bound(k)?;
            }
        }
        let tag = self.current(toc)?.map(|w| w.tag);
        Ok(Scan {
            range,
            instance: self.instance,
            tag,
            epoch: tag.map_or(0, |t| self.write_epoch(t)),
            pos: None,
            returned: None,
            batch: FIRST_BATCH,
            checked: None,
            finger: None,
            ready: VecDeque::new(),
            end: false,
        })
    }

    fn check_bound(k: &[u8]) -> Result<()> {
        if k.len() > crate::status::MMXA_MAX_KEY {
            return Err(Error::TooBig(format!(
                "a bound of {} bytes exceeds {}",
                k.len(),
                crate::status::MMXA_MAX_KEY
            )));
        }
        Ok(())
    }

    /// The cursor's next key and value (None: no more).
    pub fn scan_next(&self, toc: Toc, s: &mut Scan) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.scan_peek(toc, s)?;
        Ok(s.advance())
    }

    /// The cursor's next key and value, left next (None: no more); [`Scan::advance`] moves on.
    pub fn scan_peek<'s>(
        &self,
        toc: Toc,
        s: &'s mut Scan,
    ) -> Result<Option<&'s (Vec<u8>, Vec<u8>)>> {
        if s.instance != self.instance {
            return Err(Error::Invalid(
                "the cursor's store was closed (a cursor reads only the store instance it was \
                 opened on)"
                    .into(),
            ));
        }
        if let Some(tag) = s.tag {
            // What was read ahead in a branch is the branch's too, and only as long as the
            // branch has not written since: then read again from the last entry handed out.
            let changes = self.toc_changes();
            if s.checked != Some((toc, changes)) {
                self.cursor_branch(toc, tag)?;
                s.checked = Some((toc, changes));
            }
            let epoch = self.write_epoch(tag);
            if epoch != s.epoch {
                s.epoch = epoch;
                s.ready.clear();
                s.pos = s.returned.clone();
                s.finger = None;
                s.end = false;
            }
        }
        while s.ready.is_empty() && !s.end {
            self.fill(toc, s)?;
        }
        Ok(s.ready.front())
    }

    /// The count of changes to this process's threads' associations (read before checking one).
    fn toc_changes(&self) -> u64 {
        self.toc_changes.load(Ordering::Acquire)
    }

    /// Notes that the branch `tag` wrote (or undid writes), so its cursors read again.
    pub(super) fn note_write(&self, tag: u64) {
        self.write_epochs[tag as usize % self.write_epochs.len()].fetch_add(1, Ordering::Release);
    }

    fn write_epoch(&self, tag: u64) -> u64 {
        self.write_epochs[tag as usize % self.write_epochs.len()].load(Ordering::Acquire)
    }

    /// The branch a cursor reads in, if the thread still works in it.
    fn cursor_branch(&self, toc: Toc, tag: u64) -> Result<Working> {
        let wrong = || {
            Error::Protocol(
                "the cursor was opened in a branch or local transaction this thread does not \
                 work in now"
                    .into(),
            )
        };
        let tocs = self.tocs()?;
        let st = tocs.get(&toc).ok_or_else(wrong)?;
        if st.local == Some(tag) {
            return Ok(Working {
                target: Target::Txn,
                tag,
            });
        }
        match st.active {
            Some(x) => Ok(Working {
                target: Target::Xa(x),
                tag,
            }),
            None => Err(wrong()),
        }
    }

    /// Reads the next batch of the cursor into its read-ahead (possibly nothing, when every
    /// entry passed was invisible or a lock had to be waited for).
    fn fill(&self, toc: Toc, s: &mut Scan) -> Result<()> {
        let working = match s.tag {
            Some(tag) => Some(self.cursor_branch(toc, tag)?),
            None => None,
        };
        let locking = working.is_some() && self.serializable();
        let slot = self.slot;
        let (range, pos, finger, batch) = (&s.range, s.pos.as_deref(), s.finger, s.batch);
        s.batch = (s.batch * 2).min(BATCH);
        let batch = self.shared(|t| {
            let owner = match &working {
                Some(w) => {
                    let b = match w.find(t)? {
                        Some(b) if t.get_u8(b + B_UNDONE)? == 0 => b,
                        _ => {
                            return Err(Error::Protocol(
                                "the cursor's branch is not the thread's branch any more (it \
                                 ended, or the thread works in another one)"
                                    .into(),
                            )
                            .into())
                        }
                    };
                    Self::usable(t, b)?;
                    Some(b)
                }
                None => None,
            };
            let lock_owner = owner.filter(|_| locking);
            let generation = order::generation(t)?;
            let step = |t: &Txn<'_>, e: Off| -> Sect<Off> {
                Ok(if range.reverse {
                    order::prev(t, e)?
                } else {
                    order::next(t, e)?
                })
            };
            let mut e = match finger {
                Some((f, g)) if g == generation => step(t, f)?,
                _ => range.seek(t, pos)?,
            };
            if let (Some(b), true, None) = (lock_owner, range.reverse, pos) {
                let past = range.past_high(t)?;
                locks::gap_lock(t, past, b)?;
            }
            let mut last: Off = 0;
            let mut out = Batch {
                found: Vec::new(),
                wait: None,
                end: false,
                last: None,
                generation,
            };
            let mut bytes = 0u64;
            for _ in 0..batch {
                if e == 0 || !range.not_past_end(t, e)? {
                    if let (Some(b), false) = (lock_owner, range.reverse) {
                        let past = if e == 0 { order::supremum(t)? } else { e };
                        locks::gap_lock(t, past, b)?;
                    }
                    out.end = true;
                    break;
                }
                if let Some(b) = lock_owner {
                    if !locks::try_next_key(t, e, b)? {
                        if locks::try_lock(t, e, b, Mode::Shared, false, slot)? != Try::Granted {
                            out.wait = Some(key_of(t, e)?);
                            break;
                        }
                        locks::lock_gap_of_held(t, e, b)?;
                    }
                }
                if let Some(v) = keys::visible(t, e, owner)? {
                    out.found.push((key_of(t, e)?, v));
                    bytes += v.len as u64;
                }
                last = e;
                e = step(t, e)?;
                if t.journal_used() > JOURNAL_BUDGET || bytes >= BATCH_BYTES {
                    break;
                }
            }
            if last != 0 {
                out.last = Some((key_of(t, last)?, last));
            }
            out.generation = order::generation(t)?;
            Ok(out)
        })?;
        if let Some((key, e)) = batch.last {
            s.pos = Some(key);
            s.finger = Some((e, batch.generation));
        }
        // The values are in the log, wherever their writes were appended: start loading all of
        // them before copying the first, so their cache misses overlap.
        for (_, loc) in &batch.found {
            self.log.prefetch(loc.lsn, loc.len as usize);
        }
        for (key, loc) in batch.found {
            if let Some(v) = self.value_at(&key, loc, working.as_ref())? {
                s.ready.push_back((key, v));
            }
        }
        s.end = batch.end;
        if let (Some(key), Some(w)) = (batch.wait, &working) {
            self.lock_in_branch(w, &key, Mode::Shared)?;
        }
        Ok(())
    }

    /// Where `key`'s value is now, as `branch` (or, None, everyone else) reads it.
    pub(super) fn visible_now(
        t: &Txn<'_>,
        key: &[u8],
        branch: Option<&Working>,
    ) -> Sect<Option<ValueLoc>> {
        let owner = match branch {
            Some(w) => Some(Self::record_of(t, w)?),
            None => None,
        };
        match keys::find(t, key)? {
            Some(k) => Ok(keys::visible(t, k, owner)?),
            None => Ok(None),
        }
    }

    /// The value at `loc`, which `key` read as in a section; if a reclaim moved it meanwhile,
    /// what the key reads as now (for `branch`, or committed data).
    pub(super) fn value_at(
        &self,
        key: &[u8],
        loc: ValueLoc,
        branch: Option<&Working>,
    ) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(loc.len as usize);
        let mut loc = Some(loc);
        // A reclaim may move the value and retire its segment between the section that found it
        // and the read: look again a few times, then read it inside a section.
        for _ in 0..3 {
            let Some(l) = loc else {
                return Ok(None);
            };
            out.clear();
            match self.log.read_into(l.lsn, l.len as usize, &mut out) {
                Ok(()) => return Ok(Some(out)),
                Err(crate::log::LogError::Gone(_)) => {}
                Err(e) => return Err(Error::Io(e.to_string())),
            }
            loc = self.shared(|t| Self::visible_now(t, key, branch))?;
        }
        // A reclaim moved it and retired its segment meanwhile: read where it is now, inside a
        // section, where no reclaim can move it again (a segment is only retired once every
        // value in it was copied, in sections, and the copy found here is not retired yet).
        self.shared(|t| {
            let Some(l) = Self::visible_now(t, key, branch)? else {
                return Ok(None);
            };
            out.clear();
            self.log
                .read_into(l.lsn, l.len as usize, &mut out)
                .map_err(|e| Error::Io(format!("reading a value: {e}")))?;
            Ok(Some(out))
        })
    }
}
