//! The allocator of the region's heap.
//!
//! Owns: the allocator state in the header and the block headers. Blocks tile the heap from
//! [`HEAP_OFF`] to `top` exactly, each with a 16-byte header in front of the offset handed out;
//! above `top` nothing is allocated (the bytes there are garbage). Small blocks come in 42 size
//! classes (see [`class_payload`]): payloads of 16 B to 256 B in steps of 16 (key entries and
//! branch records live there, and a power-of-two step would waste up to half of each), then two
//! per doubling (× 1.5, × 2) up to 2 MiB; larger ones are whole pages. Freed blocks go
//! on a free list per class (LIFO) or the large list (first fit within 2x, no splitting or
//! coalescing); otherwise blocks are cut from `top`, growing the region when needed. Every
//! metadata change is journaled (the figures are counted in the section and written once at
//! commit; the header of a block cut from `top` is not: a rollback lowers
//! `top` again), and a free list's link lives in the block header, never in the payload, so a
//! rolled-back allocation that scribbled over its payload leaves the free list intact.
//!
//! # Allocator state (at 1664 in the header)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | top: end of the last block; `HEAP_OFF` ≤ top ≤ size, 16-aligned |
//! | 8 | 8 | bytes in allocated blocks (headers included) |
//! | 16 | 8 | allocated blocks |
//! | 24 | 8 | bytes in free-listed blocks (headers included) |
//! | 32 | 8 | free-listed blocks |
//! | 40 | 8 | head of the large free list: a payload offset, 0 = empty |
//! | 48 | 336 | heads of the 42 class free lists, class 0 first |
//!
//! # Block header (16 bytes before the payload offset)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0xB10C` |
//! | 2 | 1 | state: 1 allocated, 2 free |
//! | 3 | 1 | class 0..=41 (block length 16 + [`class_payload`]), or 255: large |
//! | 4 | 4 | large: block length in 4 KiB pages (header included); small: 0 |
//! | 8 | 8 | free: the next free block's payload offset (0 = end); allocated: 0 |

use super::layout::*;
use super::region::Region;
use super::sys::PAGE;
use super::txn::Txn;
use super::{Error, Off};
use std::sync::atomic::Ordering;

const TOP: u64 = ALLOC_OFF;
const USED_BYTES: u64 = ALLOC_OFF + 8;
const USED_BLOCKS: u64 = ALLOC_OFF + 16;
const FREE_BYTES: u64 = ALLOC_OFF + 24;
const FREE_BLOCKS: u64 = ALLOC_OFF + 32;
const LARGE_HEAD: u64 = ALLOC_OFF + 40;
const HEADS: u64 = ALLOC_OFF + 48;
/// Number of small size classes.
pub const CLASSES: usize = 42;
/// The largest payload of a small block (the last class).
pub const MAX_SMALL: u64 = class_payload(CLASSES as u8 - 1);
/// Classes in steps of 16 bytes.
const FINE: u8 = 16;
const LARGE: u8 = 255;
const MAGIC: u64 = 0xB10C;
const ALLOCATED: u8 = 1;
const FREE: u8 = 2;
/// Bytes of block header.
pub const BLOCK_HEADER: u64 = 16;

const _: () = {
    assert!(HEADS + 8 * CLASSES as u64 <= ALLOC_OFF + ALLOC_AREA);
    assert!(MAX_SMALL == 2 << 20);
    assert!(class_payload(FINE - 1) == 256 && class_payload(FINE) == 384);
};

/// Allocator figures, for `mmxa status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The region's size in bytes.
    pub region_size: u64,
    /// Where the heap starts.
    pub heap_start: u64,
    /// End of the last block cut from the heap (beyond it: never used).
    pub top: u64,
    /// Bytes in allocated blocks, headers included.
    pub allocated_bytes: u64,
    /// Allocated blocks.
    pub allocated_blocks: u64,
    /// Bytes in blocks on free lists, headers included.
    pub free_bytes: u64,
    /// Blocks on free lists.
    pub free_blocks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    state: u8,
    class: u8,
    /// Block length, header included.
    len: u64,
}

/// The payload of a small block of `class`: 16 × (class + 1) up to 256 B, then 384, 512, 768,
/// 1024, … (× 1.5 and × 2 in turn) up to 2 MiB. Every one is a multiple of 16, so blocks stay
/// 16-aligned.
const fn class_payload(class: u8) -> u64 {
    if class < FINE {
        16 * (class as u64 + 1)
    } else {
        let j = (class - FINE) as u64;
        if j % 2 == 0 {
            3 << (7 + j / 2)
        } else {
            1 << (9 + j / 2)
        }
    }
}

fn small_len(class: u8) -> u64 {
    BLOCK_HEADER + class_payload(class)
}

fn word0(state: u8, class: u8, pages: u32) -> u64 {
    MAGIC | (state as u64) << 16 | (class as u64) << 24 | (pages as u64) << 32
}

fn decode(off: Off, w: u64) -> Result<Header, Error> {
    let bad = |why: &str| Error::Corrupt(format!("block at {off}: {why} (header {w:#x})"));
    if w & 0xffff != MAGIC {
        return Err(bad("bad magic"));
    }
    let state = (w >> 16) as u8;
    let class = (w >> 24) as u8;
    let pages = (w >> 32) as u32;
    if state != ALLOCATED && state != FREE {
        return Err(bad("bad state"));
    }
    let len = if class == LARGE {
        if pages == 0 {
            return Err(bad("large block of 0 pages"));
        }
        pages as u64 * PAGE
    } else if (class as usize) < CLASSES && pages == 0 {
        small_len(class)
    } else {
        return Err(bad("bad class"));
    };
    Ok(Header { state, class, len })
}

/// The class (or large) and block length for a payload of `len` bytes.
fn size_for(len: u64) -> Result<(u8, u64), Error> {
    if len <= MAX_SMALL {
        let mut c = if len <= 256 {
            (len.max(1) - 1) / 16
        } else {
            FINE as u64
        } as u8;
        while class_payload(c) < len {
            c += 1;
        }
        Ok((c, small_len(c)))
    } else {
        let blen = len
            .checked_add(BLOCK_HEADER + PAGE - 1)
            .map(|n| n / PAGE * PAGE)
            .filter(|&b| b / PAGE <= u32::MAX as u64)
            .ok_or(Error::RegionFull {
                wanted: len,
                max: 0,
            })?;
        Ok((LARGE, blen))
    }
}

/// Sets up the state of a fresh region (alone with it).
pub(super) fn init(r: &Region) {
    r.hdr64(TOP).store(HEAP_OFF, Ordering::Relaxed);
}

impl Txn<'_> {
    fn top(&self) -> Result<u64, Error> {
        let top = self.get_u64(TOP)?;
        if top < HEAP_OFF || top % 16 != 0 || top > self.r.mapped() {
            return Err(Error::Corrupt(format!("heap top {top}")));
        }
        Ok(top)
    }

    /// The header of the block whose payload is at `off`, checked to lie in the heap.
    fn block(&self, off: Off) -> Result<Header, Error> {
        let top = self.top()?;
        if off % 16 != 0 || off < HEAP_OFF + BLOCK_HEADER || off >= top {
            return Err(Error::Corrupt(format!("{off} is not a block of the heap")));
        }
        let h = decode(off, self.get_u64(off - BLOCK_HEADER)?)?;
        if off - BLOCK_HEADER + h.len > top {
            return Err(Error::Corrupt(format!(
                "block at {off} runs past the heap top"
            )));
        }
        Ok(h)
    }

    /// Counts a change of a figure; the figures are written once, at commit (`settle`).
    fn add(&mut self, at: u64, delta: i64) -> Result<(), Error> {
        let i = ((at - USED_BYTES) / 8) as usize;
        self.stats[i] = self.stats[i].wrapping_add(delta);
        Ok(())
    }

    fn figure(&self, at: u64) -> Result<u64, Error> {
        let i = ((at - USED_BYTES) / 8) as usize;
        Ok(self.get_u64(at)?.wrapping_add(self.stats[i] as u64))
    }

    /// Allocates a block of at least `len` bytes and returns its offset (16-aligned). The bytes
    /// are not zeroed. Fill it with `init_*` in this section (unjournaled): if the section
    /// rolls back, the block is unallocated again.
    pub fn alloc(&mut self, len: u64) -> Result<Off, Error> {
        self.usable()?;
        let max = self.r.max_size();
        if len > max {
            return Err(Error::RegionFull { wanted: len, max });
        }
        let (class, blen) = size_for(len)?;
        let found = if class == LARGE {
            self.pop_large(blen)?
        } else {
            self.pop_small(class)?
        };
        let (off, blen) = match found {
            Some(f) => f,
            None => (self.bump(class, blen)?, blen),
        };
        self.add(USED_BYTES, blen as i64)?;
        self.add(USED_BLOCKS, 1)?;
        #[cfg(debug_assertions)]
        self.fresh.insert(off, blen - BLOCK_HEADER);
        super::crash::hit(super::crash::Point::Allocated);
        Ok(off)
    }

    /// [`Txn::alloc`], with the first `len` bytes zeroed.
    pub fn alloc_zeroed(&mut self, len: u64) -> Result<Off, Error> {
        let off = self.alloc(len)?;
        if !self.r.map.zero(off, len) {
            return Err(Error::OutOfBounds { off, len });
        }
        Ok(off)
    }

    fn pop_small(&mut self, class: u8) -> Result<Option<(Off, u64)>, Error> {
        let head_at = HEADS + 8 * class as u64;
        let off = self.get_u64(head_at)?;
        if off == 0 {
            return Ok(None);
        }
        let h = self.block(off)?;
        if h.state != FREE || h.class != class {
            return Err(Error::Corrupt(format!(
                "free list {class} holds block {off} ({h:?})"
            )));
        }
        let next = self.get_u64(off - 8)?;
        self.write_u64(head_at, next)?;
        self.take(off, h)?;
        Ok(Some((off, h.len)))
    }

    fn pop_large(&mut self, blen: u64) -> Result<Option<(Off, u64)>, Error> {
        let mut link = LARGE_HEAD;
        let mut off = self.get_u64(link)?;
        // A cycle in garbage must not loop forever: no list is longer than the heap has pages.
        let mut budget = self.r.mapped() / PAGE;
        while off != 0 {
            if budget == 0 {
                return Err(Error::Corrupt("the large free list loops".into()));
            }
            budget -= 1;
            let h = self.block(off)?;
            if h.state != FREE || h.class != LARGE {
                return Err(Error::Corrupt(format!(
                    "large free list holds block {off} ({h:?})"
                )));
            }
            let next = self.get_u64(off - 8)?;
            if h.len >= blen && h.len <= 2 * blen {
                self.write_u64(link, next)?;
                self.take(off, h)?;
                return Ok(Some((off, h.len)));
            }
            link = off - 8;
            off = next;
        }
        Ok(None)
    }

    /// Marks a block taken off a free list allocated.
    fn take(&mut self, off: Off, h: Header) -> Result<(), Error> {
        let pages = if h.class == LARGE {
            (h.len / PAGE) as u32
        } else {
            0
        };
        self.write_u64(off - BLOCK_HEADER, word0(ALLOCATED, h.class, pages))?;
        self.write_u64(off - 8, 0)?;
        self.add(FREE_BYTES, -(h.len as i64))?;
        self.add(FREE_BLOCKS, -1)
    }

    fn bump(&mut self, class: u8, blen: u64) -> Result<Off, Error> {
        let top = self.top()?;
        let end = top.checked_add(blen).ok_or(Error::RegionFull {
            wanted: u64::MAX,
            max: self.r.max_size(),
        })?;
        if end > self.r.size() {
            self.r.grow(end)?;
        }
        let pages = if class == LARGE {
            (blen / PAGE) as u32
        } else {
            0
        };
        // Above `top`: not journaled (a rollback restores `top`).
        let h = self
            .r
            .map
            .u64_at(top)
            .ok_or(Error::OutOfBounds { off: top, len: 16 })?;
        h.store(word0(ALLOCATED, class, pages), Ordering::Relaxed);
        let n = self
            .r
            .map
            .u64_at(top + 8)
            .ok_or(Error::OutOfBounds { off: top, len: 16 })?;
        n.store(0, Ordering::Relaxed);
        self.write_u64(TOP, end)?;
        Ok(top + BLOCK_HEADER)
    }

    /// Frees the block at `off` when this section commits (so the section never reuses it, and
    /// a rollback finds it intact). Checked now: an offset that is not an allocated block, or
    /// one already freed in this section, is an error.
    pub fn free(&mut self, off: Off) -> Result<(), Error> {
        self.usable()?;
        let h = self.block(off)?;
        if h.state != ALLOCATED {
            return Err(Error::Corrupt(format!(
                "free of block {off}, which is free"
            )));
        }
        if self.frees.contains(&off) {
            return Err(Error::Corrupt(format!("block {off} freed twice")));
        }
        self.frees.push(off);
        Ok(())
    }

    /// The usable length of the allocated block at `off`.
    pub fn block_len(&self, off: Off) -> Result<u64, Error> {
        let h = self.block(off)?;
        if h.state != ALLOCATED {
            return Err(Error::Corrupt(format!("block {off} is free")));
        }
        Ok(h.len - BLOCK_HEADER)
    }

    /// The allocator's figures.
    pub fn usage(&self) -> Result<Usage, Error> {
        Ok(Usage {
            region_size: self.r.size(),
            heap_start: HEAP_OFF,
            top: self.top()?,
            allocated_bytes: self.figure(USED_BYTES)?,
            allocated_blocks: self.figure(USED_BLOCKS)?,
            free_bytes: self.figure(FREE_BYTES)?,
            free_blocks: self.figure(FREE_BLOCKS)?,
        })
    }

    /// Walks the whole heap and every free list, checking that they agree with each other and
    /// with the figures; returns the figures. For tests and `mmxa status --check`: it reads
    /// every block header.
    pub fn check_heap(&self) -> Result<Usage, Error> {
        let u = self.usage()?;
        let mut at = HEAP_OFF;
        let (mut used, mut used_n, mut free, mut free_n) = (0u64, 0u64, 0u64, 0u64);
        while at < u.top {
            let h = self.block(at + BLOCK_HEADER)?;
            if h.state == ALLOCATED {
                used += h.len;
                used_n += 1;
            } else {
                free += h.len;
                free_n += 1;
            }
            at += h.len;
        }
        let figures = (
            u.allocated_bytes,
            u.allocated_blocks,
            u.free_bytes,
            u.free_blocks,
        );
        if (used, used_n, free, free_n) != figures {
            return Err(Error::Corrupt(format!(
                "heap walk finds {:?}, the figures say {figures:?}",
                (used, used_n, free, free_n)
            )));
        }
        let mut listed = 0;
        for list in 0..=CLASSES {
            let (head, class) = if list == CLASSES {
                (LARGE_HEAD, LARGE)
            } else {
                (HEADS + 8 * list as u64, list as u8)
            };
            let mut off = self.get_u64(head)?;
            while off != 0 {
                let h = self.block(off)?;
                if h.state != FREE || h.class != class {
                    return Err(Error::Corrupt(format!(
                        "list {list} holds block {off} ({h:?})"
                    )));
                }
                listed += 1;
                if listed > free_n {
                    return Err(Error::Corrupt(
                        "free lists hold more blocks than the heap".into(),
                    ));
                }
                off = self.get_u64(off - 8)?;
            }
        }
        if listed != free_n {
            return Err(Error::Corrupt(format!(
                "free lists hold {listed} blocks, the heap {free_n}"
            )));
        }
        Ok(u)
    }
}

/// Writes the figures' changes counted in the section (at commit, journaled).
pub(super) fn settle(t: &mut Txn<'_>) -> Result<(), Error> {
    for (i, at) in [USED_BYTES, USED_BLOCKS, FREE_BYTES, FREE_BLOCKS]
        .into_iter()
        .enumerate()
    {
        if t.stats[i] != 0 {
            let v = t.get_u64(at)?.wrapping_add(t.stats[i] as u64);
            t.stats[i] = 0;
            t.write_u64(at, v)?;
        }
    }
    Ok(())
}

/// Puts a block freed by a section on its free list (at commit, journaled).
pub(super) fn release(t: &mut Txn<'_>, off: Off) -> Result<(), Error> {
    let h = t.block(off)?;
    if h.state != ALLOCATED {
        return Err(Error::Corrupt(format!(
            "free of block {off}, which is free"
        )));
    }
    let head_at = if h.class == LARGE {
        LARGE_HEAD
    } else {
        HEADS + 8 * h.class as u64
    };
    let pages = if h.class == LARGE {
        (h.len / PAGE) as u32
    } else {
        0
    };
    let head = t.get_u64(head_at)?;
    t.write_u64(off - BLOCK_HEADER, word0(FREE, h.class, pages))?;
    t.write_u64(off - 8, head)?;
    t.write_u64(head_at, off)?;
    t.add(USED_BYTES, -(h.len as i64))?;
    t.add(USED_BLOCKS, -1)?;
    t.add(FREE_BYTES, h.len as i64)?;
    t.add(FREE_BLOCKS, 1)
}

#[cfg(test)]
pub(super) fn class_len(len: u64) -> u64 {
    size_for(len).map(|(_, b)| b).unwrap_or(0)
}

/// Every block from the heap start to `top`: (payload offset, allocated, block length).
#[cfg(test)]
pub(super) fn blocks(t: &Txn<'_>) -> Result<Vec<(Off, bool, u64)>, Error> {
    let top = t.top()?;
    let mut at = HEAP_OFF;
    let mut out = Vec::new();
    while at < top {
        let h = t.block(at + BLOCK_HEADER)?;
        out.push((at + BLOCK_HEADER, h.state == ALLOCATED, h.len));
        at += h.len;
    }
    Ok(out)
}
