//! The only file of `shm` with `unsafe`: the mapping, raw loads and stores into it, the
//! process-shared robust mutex, futexes, open-file-description byte-range locks and the fork
//! handler.
//!
//! Owns: [`Mapping`], a range of address space reserved once (`PROT_NONE`, `MAP_NORESERVE`) with
//! a file mapped over its start and extended in place, so the base never moves and a reference
//! into it stays valid for the life of the `Mapping`. Invariants: `mapped` only grows, is a
//! multiple of [`PAGE`], never exceeds the reservation, and never exceeds the file's length at
//! the moment it was extended (so no access below `mapped` can raise `SIGBUS` unless another
//! process shrinks the file, which nothing of ours does); every accessor checks its offset and
//! length against `mapped` and its alignment, and answers `None` rather than touch anything
//! outside. What the bytes mean is the callers' business: every bit pattern is a valid `u8`,
//! `u32`, `u64` or atomic, so garbage is only ever a wrong value here.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

/// The granularity of mapping and growth.
pub(super) const PAGE: u64 = 4096;

/// A reserved range of address space with a file mapped `MAP_SHARED` over `[0, mapped)`.
pub(super) struct Mapping {
    base: NonNull<u8>,
    reserved: usize,
    mapped: AtomicUsize,
    /// Serializes extension among this process's threads.
    extend: Mutex<()>,
}

// SAFETY: the mapping is process-wide memory, not tied to a thread; all access through it is
// by atomics or under the region mutex (see the accessors' contracts).
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access is what the mapping is for.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Reserves `len` bytes of address space (a multiple of [`PAGE`]), mapping nothing yet. Where
    /// so much cannot be had (a limited address space: `ulimit -v`, valgrind), takes the most it
    /// can, halving down to `least` bytes: this process can then follow the region's growth only
    /// that far.
    pub(super) fn reserve(len: u64, least: u64) -> io::Result<Mapping> {
        if len == 0 || len % PAGE != 0 || len > isize::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad reservation size",
            ));
        }
        let mut len = len;
        let p = loop {
            // SAFETY: an anonymous PROT_NONE mapping at an address of the kernel's choosing: it
            // overlaps nothing of ours and touches no memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                break p;
            }
            let err = io::Error::last_os_error();
            let half = (len / 2) / PAGE * PAGE;
            if half < least.max(PAGE) {
                return Err(err);
            }
            len = half;
        };
        Ok(Mapping {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            reserved: len as usize,
            mapped: AtomicUsize::new(0),
            extend: Mutex::new(()),
        })
    }

    /// Bytes mapped so far.
    #[inline]
    pub(super) fn mapped(&self) -> u64 {
        self.mapped.load(Ordering::Acquire) as u64
    }

    /// Maps `file` over `[mapped, upto)` (no-op if already mapped that far). Refuses a size that
    /// is not a page multiple, exceeds the reservation, or exceeds the file's length now.
    pub(super) fn extend(&self, file: &File, upto: u64) -> io::Result<()> {
        let _g = self.extend.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.mapped.load(Ordering::Acquire) as u64;
        if upto <= cur {
            return Ok(());
        }
        if upto % PAGE != 0 || upto > self.reserved as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot map {upto} bytes (reserved {})", self.reserved),
            ));
        }
        let flen = file.metadata()?.len();
        if flen < upto {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is {flen} bytes, the region says {upto}"),
            ));
        }
        // SAFETY: [base+cur, base+upto) lies inside our own reservation (checked above), which
        // nothing else in this process uses, so MAP_FIXED replaces only our PROT_NONE pages; the
        // file is at least `upto` bytes long, so every mapped page is backed.
        let p = unsafe {
            libc::mmap(
                self.base.as_ptr().add(cur as usize).cast(),
                (upto - cur) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                cur as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.mapped.store(upto as usize, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn in_bounds(&self, off: u64, len: u64) -> bool {
        match off.checked_add(len) {
            Some(end) => end <= self.mapped(),
            None => false,
        }
    }

    #[inline]
    fn ptr(&self, off: u64) -> *mut u8 {
        // SAFETY: callers checked `off` is within the mapping, hence within the reservation.
        unsafe { self.base.as_ptr().add(off as usize) }
    }

    /// The `u64` at `off` (8-aligned, in bounds), as an atomic.
    #[inline]
    pub(super) fn u64_at(&self, off: u64) -> Option<&AtomicU64> {
        if off % 8 != 0 || !self.in_bounds(off, 8) {
            return None;
        }
        // SAFETY: in bounds and aligned (the base is page-aligned); mapped read-write until
        // `self` drops (the mapping is never moved or shrunk), which bounds the reference's
        // lifetime; AtomicU64 has u64's layout and every bit pattern is valid.
        Some(unsafe { &*(self.ptr(off) as *const AtomicU64) })
    }

    /// The `u32` at `off` (4-aligned, in bounds), as an atomic.
    #[inline]
    pub(super) fn u32_at(&self, off: u64) -> Option<&AtomicU32> {
        if off % 4 != 0 || !self.in_bounds(off, 4) {
            return None;
        }
        // SAFETY: as in `u64_at`.
        Some(unsafe { &*(self.ptr(off) as *const AtomicU32) })
    }

    /// The byte at `off`, as an atomic.
    #[inline]
    pub(super) fn u8_at(&self, off: u64) -> Option<&AtomicU8> {
        if !self.in_bounds(off, 1) {
            return None;
        }
        // SAFETY: as in `u64_at`; no alignment needed.
        Some(unsafe { &*(self.ptr(off) as *const AtomicU8) })
    }

    /// Copies `buf.len()` bytes at `off` into `buf`.
    ///
    /// Contract (of the callers, in `txn`): the range is written only under the region mutex,
    /// which the caller holds, so no one writes it during the copy.
    pub(super) fn read(&self, off: u64, buf: &mut [u8]) -> bool {
        if !self.in_bounds(off, buf.len() as u64) {
            return false;
        }
        // SAFETY: source in bounds of the mapping, destination a distinct local buffer; no
        // concurrent writer by the contract above.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(off), buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to `off`. Contract: the caller holds the region mutex (or is alone).
    pub(super) fn write(&self, off: u64, data: &[u8]) -> bool {
        if !self.in_bounds(off, data.len() as u64) {
            return false;
        }
        // SAFETY: destination in bounds and writable, source a distinct local buffer; no
        // other writer or reader of these bytes runs concurrently, by the contract above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(off), data.len()) };
        true
    }

    /// Fills `len` bytes at `off` with zeros. Contract: as for [`Mapping::write`].
    pub(super) fn zero(&self, off: u64, len: u64) -> bool {
        if !self.in_bounds(off, len) {
            return false;
        }
        // SAFETY: in bounds and writable; exclusive by the contract of `write`.
        unsafe { std::ptr::write_bytes(self.ptr(off), 0, len as usize) };
        true
    }

    /// Copies `len` bytes from `src` to `dst` within the mapping (the ranges may overlap).
    /// Contract: as for [`Mapping::write`].
    pub(super) fn copy_within(&self, src: u64, dst: u64, len: u64) -> bool {
        if !self.in_bounds(src, len) || !self.in_bounds(dst, len) {
            return false;
        }
        // SAFETY: both ranges in bounds; `copy` allows overlap; exclusive by the contract.
        unsafe { std::ptr::copy(self.ptr(src), self.ptr(dst), len as usize) };
        true
    }

    /// The bytes at `off..off+len`, borrowed.
    ///
    /// Contract: the caller holds the region mutex and the bytes are immutable while it does
    /// (written only by a section, which cannot run during the borrow; never by lock-free
    /// atomics), so the shared reference's promise holds.
    pub(super) fn slice(&self, off: u64, len: u64) -> Option<&[u8]> {
        if !self.in_bounds(off, len) {
            return None;
        }
        // SAFETY: in bounds and mapped for `self`'s lifetime; not written while borrowed, by
        // the contract above.
        Some(unsafe { std::slice::from_raw_parts(self.ptr(off), len as usize) })
    }

    /// `FUTEX_WAIT` (shared, not private: other processes wake it) on the `u32` at `off`.
    pub(super) fn futex_wait(
        &self,
        off: u64,
        expected: u32,
        timeout: Option<Duration>,
    ) -> io::Result<Woke> {
        let word = self
            .u32_at(off)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "futex word"))?;
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` is a valid, aligned u32 in a shared mapping; the timeout pointer is
        // null or a live timespec (relative, as FUTEX_WAIT takes it).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                tsp,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if rc == 0 {
            return Ok(Woke::Woken);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Woke::Changed),
            Some(libc::ETIMEDOUT) => Ok(Woke::TimedOut),
            Some(libc::EINTR) => Ok(Woke::Interrupted),
            _ => Err(e),
        }
    }

    /// `FUTEX_WAKE` of up to `n` waiters on the `u32` at `off`; how many were woken.
    pub(super) fn futex_wake(&self, off: u64, n: u32) -> io::Result<u32> {
        let word = self
            .u32_at(off)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "futex word"))?;
        // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads the address.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                n.min(i32::MAX as u32),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as u32)
    }

    fn mutex_ptr(&self, off: u64) -> Option<*mut libc::pthread_mutex_t> {
        let size = std::mem::size_of::<libc::pthread_mutex_t>() as u64;
        if off % 8 != 0 || !self.in_bounds(off, size) {
            return None;
        }
        Some(self.ptr(off).cast())
    }

    /// Initialises a process-shared, robust, error-checking mutex at `off`. Contract: no other
    /// process or thread can use it yet (the region is being created).
    pub(super) fn mutex_init(&self, off: u64) -> io::Result<()> {
        let m = self.mutex_ptr(off).ok_or_else(|| bad("mutex offset"))?;
        // SAFETY: `m` is in bounds and aligned; no one else uses it (contract).
        unsafe { init_mutex(m) }
    }

    /// Whether the mutex at `off` has the kind word our initialisation writes (a garbage kind
    /// could send glibc down paths that never return).
    pub(super) fn mutex_kind_ok(&self, off: u64) -> bool {
        let Some(m) = self.mutex_ptr(off) else {
            return false;
        };
        let mut fresh = std::mem::MaybeUninit::<libc::pthread_mutex_t>::zeroed();
        // SAFETY: a local mutex, initialised and destroyed here only to learn its kind word.
        if unsafe { init_mutex(fresh.as_mut_ptr()) }.is_err() {
            return false;
        }
        let want = kind_word(fresh.as_ptr().cast());
        // SAFETY: as above; the mutex was initialised just now.
        unsafe { libc::pthread_mutex_destroy(fresh.as_mut_ptr()) };
        kind_word(m.cast_const().cast()) == want
    }

    /// Locks the mutex at `off`, waiting at most `timeout` (CLOCK_MONOTONIC where glibc has
    /// `pthread_mutex_clocklock`, else a CLOCK_REALTIME deadline).
    pub(super) fn mutex_lock(&self, off: u64, timeout: Duration) -> Result<Locked, LockError> {
        let m = self
            .mutex_ptr(off)
            .ok_or_else(|| LockError::Os(bad("mutex offset")))?;
        // SAFETY: `m` points at a mutex initialised by `mutex_init` (checked at attach by
        // `mutex_kind_ok`) in shared memory mapped for our lifetime.
        let mut rc = unsafe { libc::pthread_mutex_trylock(m) };
        if rc == libc::EBUSY {
            if timeout.is_zero() {
                return Err(LockError::Timeout);
            }
            // Sleep in slices, trying again after each: the wake-up an unlock sends can go to
            // a waiter that is killed before it takes the mutex, and the kernel passes it on
            // only if the mutex is still free when that waiter's exit is processed. Once a
            // third thread has taken it meanwhile (without the waiters flag), the others
            // would sleep out their whole timeout on a free mutex.
            let deadline = super::deadline(timeout);
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                // SAFETY: as above.
                rc = unsafe { timed_lock(m, left.min(LOCK_SLICE)) };
                if rc != libc::ETIMEDOUT || left <= LOCK_SLICE {
                    break;
                }
            }
        }
        match rc {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => Ok(Locked::OwnerDied),
            libc::ETIMEDOUT => Err(LockError::Timeout),
            libc::ENOTRECOVERABLE => Err(LockError::NotRecoverable),
            libc::EDEADLK => Err(LockError::Relock),
            e => Err(LockError::Os(io::Error::from_raw_os_error(e))),
        }
    }

    /// Marks the mutex at `off` (held by this thread after `OwnerDied`) consistent again.
    pub(super) fn mutex_consistent(&self, off: u64) -> io::Result<()> {
        let m = self.mutex_ptr(off).ok_or_else(|| bad("mutex offset"))?;
        // SAFETY: this thread holds the mutex (callers: right after `OwnerDied`).
        os(unsafe { libc::pthread_mutex_consistent(m) })
    }

    /// Unlocks the mutex at `off`, held by this thread.
    pub(super) fn mutex_unlock(&self, off: u64) -> io::Result<()> {
        let m = self.mutex_ptr(off).ok_or_else(|| bad("mutex offset"))?;
        // SAFETY: this thread holds the mutex (a `Txn` unlocks on the thread that locked: it
        // is not `Send`); an error-checking mutex refuses otherwise.
        os(unsafe { libc::pthread_mutex_unlock(m) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is ours; no reference into it outlives `self` (they
        // all borrow it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.reserved) };
    }
}

/// The longest one sleep on the mutex lasts before the lock is tried again (see
/// [`Mapping::mutex_lock`]): a bound on how long a lost wake-up delays a waiter.
pub(super) const LOCK_SLICE: Duration = Duration::from_millis(20);

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Woke {
    /// A `FUTEX_WAKE` (or a spurious wake-up).
    Woken,
    /// The word did not hold `expected` when the kernel looked.
    Changed,
    /// The timeout passed.
    TimedOut,
    /// A signal arrived.
    Interrupted,
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locked {
    /// The previous owner unlocked.
    Clean,
    /// The previous owner died holding it (`EOWNERDEAD`): held now, inconsistent until
    /// [`Mapping::mutex_consistent`].
    OwnerDied,
}

/// Why a lock was not acquired.
#[derive(Debug)]
pub(super) enum LockError {
    Timeout,
    NotRecoverable,
    /// This thread holds it already (`EDEADLK`).
    Relock,
    Os(io::Error),
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn os(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// glibc's `__kind` field of `pthread_mutex_t` (x86_64: bytes 16..20).
fn kind_word(m: *const u8) -> u32 {
    // SAFETY: `m` points at a pthread_mutex_t (40 bytes on x86_64 glibc); an unaligned read
    // of 4 bytes at 16 is in bounds.
    unsafe { std::ptr::read_unaligned(m.add(16).cast::<u32>()) }
}

/// # Safety
/// `m` is valid for writes of a `pthread_mutex_t` and not in use.
unsafe fn init_mutex(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: the attribute object is local; each call gets a pointer to it after init.
    unsafe {
        os(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let a = attr.as_mut_ptr();
        let r = os(libc::pthread_mutexattr_setpshared(
            a,
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| {
            os(libc::pthread_mutexattr_setrobust(
                a,
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        .and_then(|()| {
            os(libc::pthread_mutexattr_settype(
                a,
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))
        })
        .and_then(|()| os(libc::pthread_mutex_init(m, a)));
        libc::pthread_mutexattr_destroy(a);
        r
    }
}

type ClockLock = unsafe extern "C" fn(
    *mut libc::pthread_mutex_t,
    libc::clockid_t,
    *const libc::timespec,
) -> c_int;

/// glibc's `pthread_mutex_clocklock` (2.30+), looked up at run time so older glibc still loads us.
fn clocklock() -> Option<ClockLock> {
    static F: OnceLock<Option<ClockLock>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_mutex_clocklock".as_ptr()) };
        if p.is_null() {
            None
        } else {
            // SAFETY: glibc's pthread_mutex_clocklock has exactly this signature.
            Some(unsafe { std::mem::transmute::<*mut libc::c_void, ClockLock>(p) })
        }
    })
}

fn deadline(clock: libc::clockid_t, timeout: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a live timespec.
    unsafe { libc::clock_gettime(clock, &mut now) };
    let secs = timeout.as_secs().min(1 << 40) as libc::time_t;
    let mut ts = libc::timespec {
        tv_sec: now.tv_sec.saturating_add(secs),
        tv_nsec: now.tv_nsec + timeout.subsec_nanos() as libc::c_long,
    };
    if ts.tv_nsec >= 1_000_000_000 {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1_000_000_000;
    }
    ts
}

/// # Safety
/// `m` points at an initialised mutex.
unsafe fn timed_lock(m: *mut libc::pthread_mutex_t, timeout: Duration) -> c_int {
    match clocklock() {
        Some(f) => {
            let ts = deadline(libc::CLOCK_MONOTONIC, timeout);
            // SAFETY: `m` per the contract; `ts` is live.
            unsafe { f(m, libc::CLOCK_MONOTONIC, &ts) }
        }
        None => {
            let ts = deadline(libc::CLOCK_REALTIME, timeout);
            // SAFETY: as above.
            unsafe { libc::pthread_mutex_timedlock(m, &ts) }
        }
    }
}

/// Reserves and zero-fills (on disk or in tmpfs) the first `len` bytes of `file`, so later
/// stores through a mapping cannot fail with `SIGBUS` for want of space. Never shrinks.
pub(super) fn allocate(file: &File, len: u64) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    os(rc)
}

/// Sets the file's permission bits exactly (the umask does not apply to `fchmod`).
pub(super) fn fchmod(file: &File, mode: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new anonymous memory file (`memfd_create`, close-on-exec).
pub(super) fn memfd() -> io::Result<File> {
    // SAFETY: a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"mmxa-region".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// An open-file-description lock request on one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ofd {
    Shared,
    Exclusive,
    Unlock,
}

fn flock(kind: Ofd, byte: u64) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Ofd::Shared => libc::F_RDLCK,
        Ofd::Exclusive => libc::F_WRLCK,
        Ofd::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Sets (or converts, atomically, or releases) this description's lock on `byte`, without
/// waiting: `Ok(false)` if another description holds a conflicting lock.
pub(super) fn ofd_set(file: &File, byte: u64, kind: Ofd) -> io::Result<bool> {
    let fl = flock(kind, byte);
    // SAFETY: valid descriptor and a live flock.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file description holds a lock on `byte` that would conflict with an
/// exclusive one (this description's own locks never conflict with it).
pub(super) fn ofd_held_by_other(file: &File, byte: u64) -> io::Result<bool> {
    let mut fl = flock(Ofd::Exclusive, byte);
    // SAFETY: valid descriptor and a live, writable flock.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static FORK_HANDLER: Once = Once::new();

/// Runs in a child of `fork`: async-signal-safe work only.
extern "C" fn in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // The same as the C boundary's handler (`ffi::fork`), which only a loaded switch installs:
    // the child's copies of listed descriptors (the lock file) must not keep locks alive.
    // SAFETY: open, dup3 and close are async-signal-safe; the path is a NUL-terminated literal.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        crate::inherit::for_each(|fd| {
            libc::dup3(null, fd, libc::O_CLOEXEC);
        });
        libc::close(null);
    }
}

/// How many `fork`s lie between this process and the one that first called this: a
/// `Region` records it and refuses to work in a child.
pub(super) fn fork_generation() -> u64 {
    FORK_HANDLER.call_once(|| {
        // SAFETY: registers a handler with the signature pthread_atfork expects; on failure
        // (ENOMEM) forks go undetected, as before.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Kills this process with SIGKILL at once (crash tests).
#[cfg(test)]
pub(super) fn kill_self() -> ! {
    // SAFETY: plain syscalls; SIGKILL cannot be caught, so `kill` does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    loop {
        std::thread::park();
    }
}

/// Runs `f` in a child created by `fork` and returns its exit code (tests; `f` should not
/// allocate: other threads of the test harness may hold allocator locks at the fork).
#[cfg(test)]
pub(super) fn in_forked_child(f: fn() -> i32) -> io::Result<i32> {
    // SAFETY: the child runs `f` and leaves with `_exit`, never returning into the harness.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live int.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::WEXITSTATUS(status))
}
