//! The shared layout: where everything lives in a region (offsets in bytes from the start of
//! the file, native byte order: x86_64, little-endian).
//!
//! Owns: the constants below and their compile-time checks. Changing any of them changes the
//! format: bump [`VERSION`].
//!
//! # Region header (the first [`HEAP_OFF`] bytes)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MMXAREG1` |
//! | 8 | 4 | format version, 4 (1 before branch records had their time fields and the RM's roots 30–32 held the backup pin and the store's path; 2 before local transactions' records; 3 before the key order and the sleeper counts; see `rm::layout`) |
//! | 12 | 4 | state: 1 building, 2 ready, 3 broken (a builder gave up) |
//! | 16 | 8 | size: the region's length in bytes, a multiple of 4096; only grows; read lock-free |
//! | 24 | 8 | max size: the address space every process reserves, fixed at creation |
//! | 32 | 4 | slot count, 1024 |
//! | 36 | 4 | wait word count, 256 |
//! | 40 | 4 | root count, 64 |
//! | 44 | 4 | journal capacity in bytes, 1 MiB |
//! | 48 | 8 | heap offset, [`HEAP_OFF`] |
//! | 56 | 8 | zero |
//! | 64 | 64 | the region mutex: a glibc `pthread_mutex_t` (40 bytes), process-shared, robust, error-checking; then zero |
//! | 128 | 1024 | wait words: 256 × u32, bumped (never journaled) by a releaser; futex words |
//! | 1152 | 512 | roots: 64 × u64 for the layers above (offsets of their tables, counters) |
//! | 1664 | 384 | allocator state (see `alloc`) |
//! | 2048 | 16384 | slot table: 1024 × 16 bytes (see `slots`) |
//! | 18432 | 1024 | sleepers: 256 × u32, the threads asleep on each wait word (never journaled; a releaser skips the wake-up call of a word whose count is 0) |
//! | 19456 | 1024 | zero |
//! | 20480 | 8 | journal length: bytes of entries in use, 0 = nothing to undo (the commit point) |
//! | 20488 | 4088 | zero |
//! | 24576 | 1 MiB | journal entries (see `journal`) |
//! | 1073152 | … | heap: blocks of the allocator, up to `size` |
//!
//! Writable by a journaled section: roots through the slot table (`[1152, 20480)`) and the heap
//! (`[HEAP_OFF, size)`). Never journaled: the identity fields, the size (growth is monotonic and
//! harmless to keep), the mutex, the wait words (a bump that survives a rollback is a spurious
//! wake-up) and the journal itself. Of these, the layers above may write the roots and the heap.

/// `MMXAREG1`.
pub const MAGIC: [u8; 8] = *b"MMXAREG1";
/// Format version: of this layout and of the layers' layouts in the heap (`rm::layout`); 3
/// since branch records have their time fields, the RM's roots 30–32 hold the backup pin and
/// the store's path, and local transactions have records of their own; 4 since key entries are
/// in key order (a skip list, roots 33–35) and carry gap locks.
pub const VERSION: u32 = 4;

/// Header state: being built by the one process that created it (unjournaled writes allowed).
pub const STATE_BUILDING: u32 = 1;
/// Header state: built and published; others may attach.
pub const STATE_READY: u32 = 2;
/// Header state: its builder dropped a builder section without committing; never attachable.
pub const STATE_BROKEN: u32 = 3;

pub(super) const MAGIC_OFF: u64 = 0;
pub(super) const VERSION_OFF: u64 = 8;
pub(super) const STATE_OFF: u64 = 12;
pub(super) const SIZE_OFF: u64 = 16;
pub(super) const MAX_SIZE_OFF: u64 = 24;
pub(super) const SLOT_COUNT_OFF: u64 = 32;
pub(super) const WAIT_COUNT_OFF: u64 = 36;
pub(super) const ROOT_COUNT_OFF: u64 = 40;
pub(super) const JOURNAL_CAP_OFF: u64 = 44;
pub(super) const HEAP_OFF_OFF: u64 = 48;
/// Bytes of the identity fields read (with `pread`) before anything is mapped.
pub(super) const IDENTITY_LEN: u64 = 64;

pub(super) const MUTEX_OFF: u64 = 64;
pub(super) const MUTEX_AREA: u64 = 64;

/// Number of wait words.
pub const WAIT_WORDS: usize = 256;
pub(super) const WAIT_OFF: u64 = 128;

/// Number of root slots.
pub const ROOTS: usize = 64;
pub(super) const ROOTS_OFF: u64 = WAIT_OFF + 4 * WAIT_WORDS as u64;

pub(super) const ALLOC_OFF: u64 = ROOTS_OFF + 8 * ROOTS as u64;
pub(super) const ALLOC_AREA: u64 = 384;

/// Number of process slots.
pub const SLOTS: usize = 1024;
pub(super) const SLOT_SIZE: u64 = 16;
pub(super) const SLOTS_OFF: u64 = ALLOC_OFF + ALLOC_AREA;

pub(super) const JOURNAL_LEN_OFF: u64 = 20480;
pub(super) const JOURNAL_OFF: u64 = 24576;
/// Journal capacity in bytes: a section journaling more fails with `JournalFull`.
pub const JOURNAL_CAP: u64 = 1 << 20;

/// Where the heap starts: every offset the allocator returns is above it.
pub const HEAP_OFF: u64 = JOURNAL_OFF + JOURNAL_CAP;

/// End of the journaled header fields.
pub(super) const JOURNALED_END: u64 = JOURNAL_LEN_OFF;

/// The default and the largest allowed max size (address space reserved per process).
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;
pub(super) const LIMIT_MAX_SIZE: u64 = 1 << 40;
/// The default initial size: the header and 1 MiB of heap.
pub const DEFAULT_INITIAL_SIZE: u64 = HEAP_OFF + (1 << 20);

/// The offset of root `i` (`i < ROOTS`).
pub const fn root(i: usize) -> u64 {
    assert!(i < ROOTS, "root index");
    ROOTS_OFF + 8 * i as u64
}

pub(super) const fn wait_word(i: usize) -> u64 {
    WAIT_OFF + 4 * i as u64
}

pub(super) const SLEEPERS_OFF: u64 = 18432;

pub(super) const fn sleepers_word(i: usize) -> u64 {
    SLEEPERS_OFF + 4 * i as u64
}

pub(super) const fn slot_off(i: usize) -> u64 {
    SLOTS_OFF + SLOT_SIZE * i as u64
}

// The table above, checked.
const _: () = {
    assert!(MUTEX_OFF + MUTEX_AREA == WAIT_OFF);
    assert!(std::mem::size_of::<libc::pthread_mutex_t>() as u64 <= MUTEX_AREA);
    assert!(std::mem::align_of::<libc::pthread_mutex_t>() as u64 <= 8);
    assert!(WAIT_OFF == 128);
    assert!(ROOTS_OFF == 1152);
    assert!(ALLOC_OFF == 1664);
    assert!(SLOTS_OFF == 2048);
    assert!(SLOTS_OFF + SLOT_SIZE * SLOTS as u64 == 18432);
    assert!(SLOTS_OFF + SLOT_SIZE * SLOTS as u64 <= JOURNAL_LEN_OFF);
    assert!(SLOTS_OFF + SLOT_SIZE * SLOTS as u64 <= SLEEPERS_OFF);
    assert!(SLEEPERS_OFF + 4 * WAIT_WORDS as u64 <= JOURNAL_LEN_OFF);
    assert!(JOURNAL_LEN_OFF % 4096 == 0 && JOURNAL_OFF % 4096 == 0);
    assert!(HEAP_OFF == 1_073_152 && HEAP_OFF % 4096 == 0);
    assert!(DEFAULT_MAX_SIZE <= LIMIT_MAX_SIZE);
    assert!(IDENTITY_LEN <= MUTEX_OFF);
};
