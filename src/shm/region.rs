//! [`Region`]: one process's handle on a shared region — creating, attaching, growing, and the
//! lock-free accessors.
//!
//! Owns: the process-local view (the reservation, how much of the file is mapped, the file
//! descriptor) and the identity checks at attach. Invariants: the base address never moves
//! (the whole `max_size` is reserved once and the file mapped over it in place), so references
//! handed out live as long as the `Region`; the mapped length catches up with the header's size
//! at every lock acquisition and whenever a lock-free access meets an offset beyond it; the size
//! only grows, and the file is allocated (`posix_fallocate`) before the size says so, so a store
//! into the mapping never meets a hole (no `SIGBUS` on a full disk: growth fails with an error).

use super::crash::{self, Point};
use super::journal::Words;
use super::layout::*;
use super::sys::{self, Mapping, Woke, PAGE};
use super::{Error, Off};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The least address space a process reserves for a region (where it cannot have the region's
/// whole max size).
const MIN_RESERVE: u64 = 256 << 20;

/// Sizes of a new region.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Initial size in bytes (rounded up to a page; at least the header and one page of heap).
    pub initial_size: u64,
    /// The most the region may grow to; every process reserves this much address space.
    pub max_size: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            initial_size: DEFAULT_INITIAL_SIZE,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken (or spuriously), or the word no longer held the expected value.
    Woken,
    /// The timeout passed.
    TimedOut,
}

/// A process-local handle on a shared region. `Send + Sync`: threads share one handle. Not to
/// be used in a child created by `fork` (every call there fails with [`Error::Forked`]).
pub struct Region {
    pub(super) map: Mapping,
    file: File,
    path: Option<PathBuf>,
    fork_gen: u64,
    max_size: u64,
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

impl Region {
    /// Creates a fresh region at `path` (replacing any file there) with permission bits `mode`
    /// exactly, in state building. The file is built under `path.tmp` and renamed into place,
    /// so a process still mapping an old file keeps its pages (never `SIGBUS`). The caller must
    /// hold the store exclusively (see [`super::LockFile::open_or_recover`]).
    pub fn create(path: &Path, mode: u32) -> Result<Region, Error> {
        Region::create_with(path, mode, Options::default())
    }

    /// [`Region::create`] with explicit sizes.
    pub fn create_with(path: &Path, mode: u32, opts: Options) -> Result<Region, Error> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let ctx = |e: io::Error, what: &str| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("{what} {}: {e}", tmp.display()),
            ))
        };
        // A new file (a leftover is removed first: it may not even be ours to truncate). The
        // old region goes first too: nobody maps it any more (the caller holds the store
        // exclusively), and a small file system must not hold both at once.
        for old in [&tmp, &path.to_path_buf()] {
            match std::fs::remove_file(old) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(ctx(e, "cannot remove"))
                }
                _ => {}
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| ctx(e, "cannot create"))?;
        sys::fchmod(&file, mode).map_err(|e| ctx(e, "cannot chmod"))?;
        let mut r = Region::init(file, opts)?;
        std::fs::rename(&tmp, path).map_err(|e| ctx(e, "cannot rename"))?;
        r.path = Some(path.to_path_buf());
        Ok(r)
    }

    /// A region in process-private memory (an anonymous memory file), `initial_size` bytes,
    /// in state building: the same API, for single-process use and tests.
    pub fn anonymous(initial_size: u64) -> Result<Region, Error> {
        Region::anonymous_with(Options {
            initial_size,
            ..Options::default()
        })
    }

    /// [`Region::anonymous`] with explicit sizes.
    pub fn anonymous_with(opts: Options) -> Result<Region, Error> {
        Region::init(sys::memfd()?, opts)
    }

    fn init(file: File, opts: Options) -> Result<Region, Error> {
        let max = round_up(opts.max_size, PAGE).min(LIMIT_MAX_SIZE);
        let size = round_up(opts.initial_size.max(HEAP_OFF + PAGE), PAGE);
        if size > max {
            return Err(Error::RegionFull { wanted: size, max });
        }
        sys::allocate(&file, size)?;
        let map = Mapping::reserve(max, size.max(MIN_RESERVE))?;
        map.extend(&file, size)?;
        let r = Region {
            map,
            file,
            path: None,
            fork_gen: sys::fork_generation(),
            max_size: max,
        };
        // Alone with the memory: plain stores.
        let m = &r.map;
        m.write(MAGIC_OFF, &MAGIC);
        r.hdr32(VERSION_OFF).store(VERSION, Ordering::Relaxed);
        r.hdr32(STATE_OFF).store(STATE_BUILDING, Ordering::Relaxed);
        r.hdr64(SIZE_OFF).store(size, Ordering::Relaxed);
        r.hdr64(MAX_SIZE_OFF).store(max, Ordering::Relaxed);
        r.hdr32(SLOT_COUNT_OFF)
            .store(SLOTS as u32, Ordering::Relaxed);
        r.hdr32(WAIT_COUNT_OFF)
            .store(WAIT_WORDS as u32, Ordering::Relaxed);
        r.hdr32(ROOT_COUNT_OFF)
            .store(ROOTS as u32, Ordering::Relaxed);
        r.hdr32(JOURNAL_CAP_OFF)
            .store(JOURNAL_CAP as u32, Ordering::Relaxed);
        r.hdr64(HEAP_OFF_OFF).store(HEAP_OFF, Ordering::Relaxed);
        m.mutex_init(MUTEX_OFF)?;
        super::alloc::init(&r);
        Ok(r)
    }

    /// Attaches to the initialised, published region at `path`, after checking its magic,
    /// version, layout and state.
    pub fn open(path: &Path) -> Result<Region, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| {
                Error::Io(io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", path.display()),
                ))
            })?;
        let bad = |what: String| Error::Incompatible(format!("{}: {what}", path.display()));
        let mut id = [0u8; IDENTITY_LEN as usize];
        let flen = file.metadata()?.len();
        if flen < HEAP_OFF {
            return Err(bad(format!("{flen} bytes is too short for a region")));
        }
        file.read_exact_at(&mut id, 0)?;
        let u32_at =
            |o: u64| u32::from_le_bytes(id[o as usize..o as usize + 4].try_into().unwrap());
        let u64_at =
            |o: u64| u64::from_le_bytes(id[o as usize..o as usize + 8].try_into().unwrap());
        if id[..8] != MAGIC {
            return Err(bad("not an mmxa region (bad magic)".into()));
        }
        if u32_at(VERSION_OFF) != VERSION {
            return Err(bad(format!(
                "region format version {}",
                u32_at(VERSION_OFF)
            )));
        }
        let layout = (
            u32_at(SLOT_COUNT_OFF),
            u32_at(WAIT_COUNT_OFF),
            u32_at(ROOT_COUNT_OFF),
            u32_at(JOURNAL_CAP_OFF),
            u64_at(HEAP_OFF_OFF),
        );
        let want = (
            SLOTS as u32,
            WAIT_WORDS as u32,
            ROOTS as u32,
            JOURNAL_CAP as u32,
            HEAP_OFF,
        );
        if layout != want {
            return Err(bad(format!("layout {layout:?}, expected {want:?}")));
        }
        let max = u64_at(MAX_SIZE_OFF);
        if max % PAGE != 0 || !(HEAP_OFF + PAGE..=LIMIT_MAX_SIZE).contains(&max) {
            return Err(bad(format!("max size {max}")));
        }
        let size = u64_at(SIZE_OFF);
        if size % PAGE != 0 || size < HEAP_OFF + PAGE || size > max || size > flen {
            return Err(bad(format!("size {size} (file {flen}, max {max})")));
        }
        let state = u32_at(STATE_OFF);
        if state != STATE_READY {
            return Err(Error::NotReady(state));
        }
        let map = Mapping::reserve(max, size.max(MIN_RESERVE))?;
        map.extend(&file, size)?;
        if !map.mutex_kind_ok(MUTEX_OFF) {
            return Err(bad("the mutex is not one of ours".into()));
        }
        Ok(Region {
            map,
            file,
            path: Some(path.to_path_buf()),
            fork_gen: sys::fork_generation(),
            max_size: max,
        })
    }

    /// The file's path (`None` for an anonymous region).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The region's size in bytes as its header says now.
    pub fn size(&self) -> u64 {
        self.hdr64(SIZE_OFF).load(Ordering::Acquire)
    }

    /// The most the region may grow to.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// How much of it this process has mapped.
    pub fn mapped(&self) -> u64 {
        self.map.mapped()
    }

    /// The header's state: [`STATE_BUILDING`], [`STATE_READY`] or [`STATE_BROKEN`].
    pub fn state(&self) -> u32 {
        self.hdr32(STATE_OFF).load(Ordering::Acquire)
    }

    pub(super) fn set_state(&self, s: u32) {
        self.hdr32(STATE_OFF).store(s, Ordering::Release);
    }

    /// Publishes a built region (building → ready) so other processes may attach.
    pub fn publish(&self, timeout: Duration) -> Result<(), Error> {
        let t = self.lock(timeout)?;
        match self.state() {
            STATE_BUILDING => self.set_state(STATE_READY),
            STATE_READY => {}
            s => return Err(Error::NotReady(s)),
        }
        t.commit()
    }

    pub(super) fn check_fork(&self) -> Result<(), Error> {
        if sys::fork_generation() != self.fork_gen {
            return Err(Error::Forked);
        }
        Ok(())
    }

    /// The header is mapped from construction on, so these cannot miss.
    pub(super) fn hdr64(&self, off: u64) -> &AtomicU64 {
        self.map.u64_at(off).expect("the header is mapped")
    }

    pub(super) fn hdr32(&self, off: u64) -> &AtomicU32 {
        self.map.u32_at(off).expect("the header is mapped")
    }

    /// Maps whatever the header's size says exists beyond our mapping; returns the mapped size.
    pub(super) fn refresh(&self) -> Result<u64, Error> {
        let size = self.size();
        if size > self.map.mapped() {
            if size % PAGE != 0 || size > self.max_size {
                return Err(Error::Corrupt(format!(
                    "region size {size} (max {})",
                    self.max_size
                )));
            }
            self.map.extend(&self.file, size)?;
        }
        Ok(self.map.mapped())
    }

    /// Grows the region to hold `end` bytes (under the mutex): allocate the file, then publish
    /// the size, then map. Growth is never rolled back.
    pub(super) fn grow(&self, end: u64) -> Result<(), Error> {
        let size = self.size();
        if end <= size {
            return Ok(());
        }
        if end > self.max_size {
            return Err(Error::RegionFull {
                wanted: end,
                max: self.max_size,
            });
        }
        let step = size.clamp(PAGE, 1 << 30);
        let new = round_up(end.max(size + step), 64 << 10).min(self.max_size);
        sys::allocate(&self.file, new)?;
        crash::hit(Point::Growing);
        self.hdr64(SIZE_OFF).store(new, Ordering::Release);
        crash::hit(Point::Grown);
        self.map.extend(&self.file, new)?;
        Ok(())
    }

    /// Whether `[off, off+len)` lies in the areas the layers above own: the roots and the heap.
    pub(super) fn user_range(off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        (off >= ROOTS_OFF && end <= ALLOC_OFF) || off >= HEAP_OFF
    }

    fn lookup<T>(
        &self,
        off: Off,
        len: u64,
        get: impl Fn(&Mapping, u64) -> Option<&T>,
    ) -> Result<&T, Error> {
        self.check_fork()?;
        if let Some(a) = get(&self.map, off) {
            return Ok(a);
        }
        // Perhaps another process grew the region since we last looked.
        self.refresh()?;
        get(&self.map, off).ok_or(Error::OutOfBounds { off, len })
    }

    /// The `u64` at `off` (8-aligned, in the roots or the heap), for lock-free access.
    pub fn atomic_u64(&self, off: Off) -> Result<&AtomicU64, Error> {
        if !Region::user_range(off, 8) {
            return Err(Error::OutOfBounds { off, len: 8 });
        }
        self.lookup(off, 8, Mapping::u64_at)
    }

    /// The `u32` at `off` (4-aligned, in the roots or the heap), for lock-free access.
    pub fn atomic_u32(&self, off: Off) -> Result<&AtomicU32, Error> {
        if !Region::user_range(off, 4) {
            return Err(Error::OutOfBounds { off, len: 4 });
        }
        self.lookup(off, 4, Mapping::u32_at)
    }

    fn futex_word(&self, off: Off) -> Result<&AtomicU32, Error> {
        let in_wait = (WAIT_OFF..ROOTS_OFF).contains(&off);
        if !in_wait && !Region::user_range(off, 4) {
            return Err(Error::OutOfBounds { off, len: 4 });
        }
        self.lookup(off, 4, Mapping::u32_at)
    }

    /// Sleeps while the `u32` at `off` holds `expected`, at most `timeout` (`None`: no limit).
    /// Cross-process (not a private futex). Spurious wake-ups are possible: re-check.
    pub fn futex_wait(
        &self,
        off: Off,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<Wake, Error> {
        self.futex_word(off)?;
        match self.map.futex_wait(off, expected, timeout)? {
            Woke::TimedOut => Ok(Wake::TimedOut),
            Woke::Woken | Woke::Changed | Woke::Interrupted => Ok(Wake::Woken),
        }
    }

    /// Wakes up to `n` waiters on the `u32` at `off`; returns how many were woken.
    pub fn futex_wake(&self, off: Off, n: u32) -> Result<u32, Error> {
        self.futex_word(off)?;
        Ok(self.map.futex_wake(off, n)?)
    }

    /// The offset of the wait word for `key` (see [`Region::wait_until`]).
    pub fn wait_word_off(key: u64) -> Off {
        wait_word(wait_index(key))
    }

    /// Wakes the sleepers of wait word `i`, if it has any.
    pub(super) fn wake_index(&self, i: usize) {
        if self.hdr32(sleepers_word(i)).load(Ordering::Relaxed) != 0 {
            let _ = self.map.futex_wake(wait_word(i), u32::MAX);
        }
    }

    /// Wakes every sleeper of wait word `i` (a repair: counts may be off).
    pub(super) fn wake_index_always(&self, i: usize) {
        let _ = self.map.futex_wake(wait_word(i), u32::MAX);
    }

    /// The count of sleepers on `key`'s wait word.
    pub(super) fn sleepers(&self, key: u64) -> &AtomicU32 {
        self.hdr32(sleepers_word(wait_index(key)))
    }
}

/// Which of the [`WAIT_WORDS`] words serves `key`.
pub fn wait_index(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

impl Words for Region {
    fn load(&self, off: u64) -> Result<u64, Error> {
        let a = self
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        Ok(a.load(Ordering::Relaxed))
    }

    fn store(&self, off: u64, v: u64) -> Result<(), Error> {
        let a = self
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        a.store(v, Ordering::Relaxed);
        Ok(())
    }

    fn publish(&self, off: u64, v: u64) -> Result<(), Error> {
        let a = self
            .map
            .u64_at(off)
            .ok_or(Error::OutOfBounds { off, len: 8 })?;
        a.store(v, Ordering::Release);
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), Error> {
        if self.map.copy_within(src, dst, len) {
            Ok(())
        } else {
            Err(Error::OutOfBounds { off: src, len })
        }
    }

    fn journalable(&self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        (off >= ROOTS_OFF && end <= JOURNALED_END) || (off >= HEAP_OFF && end <= self.map.mapped())
    }
}
