//! What the log needs from its storage: a directory of fixed-size segment files.
//!
//! Owns: the contract between the log and its medium. The log is generic over [`Media`], so the
//! production medium ([`super::Mapped`], memory-mapped files) is called statically and an append
//! stays a copy into the mapping; tests use [`super::sim::SimDisk`], which keeps live and
//! durable bytes apart to build power-loss images and injects I/O errors.
//!
//! The contract, which both media honour and the log's crash safety relies on:
//! - [`Media::create`] is atomic and durable: when it returns `Ok` the file exists under its
//!   name with `size` bytes reserved (zero but for `header` at offset 0), and survives a power
//!   cut; when it fails, no file exists under the name.
//! - Bytes written with [`SegmentFile::write_at`] are visible to reads at once, and durable only
//!   once a [`SegmentFile::sync_range`] covering them (or [`SegmentFile::sync_all`]) returns
//!   `Ok`. Until then a power cut may keep any subset of them, torn at any byte.
//! - [`SegmentFile::start_writeback`] only hints: it makes nothing durable.
//! - [`Media::remove`] is durable only after [`Media::sync_dir`].
//! - Writes never extend a file: every range is inside the size given at creation.

use std::io;
use std::path::Path;

/// A directory of segment files.
pub trait Media: Send + Sync + 'static {
    /// An open segment file.
    type File: SegmentFile;
    /// The directory, for messages.
    fn dir(&self) -> &Path;
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` with `size` bytes and `header` at offset 0, atomically and durably.
    fn create(&self, name: &str, size: u64, header: &[u8]) -> io::Result<Self::File>;
    /// Opens an existing file; its size is fixed from now on.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Deletes `name` (durable after [`Media::sync_dir`]).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// One segment file. Callers write only bytes nobody reads meanwhile (above the log's
/// tail, under the region mutex, in any process) and read only bytes no longer written.
pub trait SegmentFile: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Writes `parts` back to back at `off`.
    fn write_at(&self, off: u64, parts: &[&[u8]]) -> io::Result<()>;
    /// Copies `len` bytes at `off` into `out`.
    fn read_into(&self, off: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()>;
    /// Runs `f` over `len` bytes at `off` without copying.
    fn with_bytes<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R>;
    /// Makes `len` bytes at `off` durable (`msync(MS_SYNC)`).
    fn sync_range(&self, off: u64, len: usize) -> io::Result<()>;
    /// Makes all written bytes durable (`fdatasync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Starts writing `len` bytes at `off` back to the disk without waiting for it, so that a
    /// later sync of them is quick. Promises nothing about durability: doing nothing is a valid
    /// implementation.
    fn start_writeback(&self, off: u64, len: usize) -> io::Result<()> {
        let _ = (off, len);
        Ok(())
    }
    /// Asks the processor to start loading the first bytes of `len` at `off` into its caches
    /// (a hint for a read soon after; doing nothing is a valid implementation).
    fn prefetch(&self, off: u64, len: usize) {
        let _ = (off, len);
    }
}
