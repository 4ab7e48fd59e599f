//! The production medium: a directory of preallocated, memory-mapped segment files, written
//! through the mapping.
//!
//! Owns: [`Mapped`] (the [`Media`] of a real store) and the only `unsafe` outside `ffi` — the
//! shared mapping, `posix_fallocate`, `sync_file_range` and the store's lock. Invariants: a
//! segment is reserved on disk (`posix_fallocate`) before it is mapped, so a full disk is an
//! error code at creation and never a SIGBUS at write; bytes below the published end are never
//! written again while readers may see them (callers write only above the log's tail and read
//! only below it).
#![allow(unsafe_code)]

use super::media::{Media, SegmentFile};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The segment files of a store directory, memory-mapped.
pub struct Mapped {
    dir: PathBuf,
    /// A copy-on-write view: see [`Mapped::private`].
    private: bool,
    /// The permission bits of the segment files it creates.
    mode: u32,
}

impl Mapped {
    /// The medium of the store in `dir`; the segment files it creates have mode 0600.
    pub fn new(dir: &Path) -> Mapped {
        Mapped::with_mode(dir, 0o600)
    }

    /// The medium of the store in `dir`; the segment files it creates have the permission bits
    /// `mode` exactly, whatever the umask (the store's file mode: 0600, or 0660 with
    /// `shared_group=1`).
    pub fn with_mode(dir: &Path, mode: u32) -> Mapped {
        Mapped {
            dir: dir.to_path_buf(),
            private: false,
            mode,
        }
    }

    /// A view of the store in `dir` for inspection, which never changes a file: segments are
    /// opened read-only and mapped copy-on-write (a torn tail cut at open stays in memory), a
    /// new segment is anonymous memory, and syncs, removals and directory syncs succeed without
    /// doing anything.
    pub fn private(dir: &Path) -> Mapped {
        Mapped {
            dir: dir.to_path_buf(),
            private: true,
            mode: 0o600,
        }
    }
}

impl Media for Mapped {
    type File = Segment;

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, name: &str, size: u64, header: &[u8]) -> io::Result<Segment> {
        if self.private {
            return Segment::anonymous(size, header);
        }
        Segment::create(&self.dir.join(name), size, header, self.mode)
    }

    fn open(&self, name: &str) -> io::Result<Segment> {
        if self.private {
            return Segment::open_private(&self.dir.join(name));
        }
        Segment::open(&self.dir.join(name))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        if self.private {
            return Ok(());
        }
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.private {
            return Ok(());
        }
        sync_dir(&self.dir)
    }
}

/// A mapped segment file.
pub struct Segment {
    /// None for a private (copy-on-write or anonymous) segment, which has nothing to sync.
    file: Option<File>,
    map: MmapRaw,
    size: u64,
}

impl Segment {
    /// Creates `path` atomically: a temporary file is given the permission bits `mode` (set
    /// exactly: the umask only narrows the mode given at creation), reserved to `size` bytes,
    /// given `header`, synced, then renamed into place and the directory synced.
    pub fn create(path: &Path, size: u64, header: &[u8], mode: u32) -> io::Result<Segment> {
        use std::os::unix::fs::PermissionsExt;
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        let reserved = file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| reserve(&file, size))
            .and_then(|()| {
                file.write_all_at(header, 0)?;
                file.sync_all()
            });
        if let Err(e) = reserved {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Segment::map(file, size)
    }

    /// Opens and maps an existing segment file.
    pub fn open(path: &Path) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        Segment::map(file, size)
    }

    fn map(file: File, size: u64) -> io::Result<Segment> {
        let len = usize::try_from(size).map_err(|_| io::Error::other("segment too large"))?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Segment {
            file: Some(file),
            map,
            size,
        })
    }

    /// Maps an existing segment file copy-on-write: writes stay in this process's memory.
    fn open_private(path: &Path) -> io::Result<Segment> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let len = usize::try_from(size).map_err(|_| io::Error::other("segment too large"))?;
        // SAFETY: a private mapping of a file opened read-only; another process may append to
        // the file meanwhile, which changes only bytes the log treats as its (torn) tail.
        let map = unsafe { MmapOptions::new().len(len).map_copy(&file)? };
        Ok(Segment {
            file: None,
            map: MmapRaw::from(map),
            size,
        })
    }

    /// A new segment in anonymous memory.
    fn anonymous(size: u64, header: &[u8]) -> io::Result<Segment> {
        let len = usize::try_from(size).map_err(|_| io::Error::other("segment too large"))?;
        let mut map = MmapOptions::new().len(len).map_anon()?;
        map[..header.len()].copy_from_slice(header);
        Ok(Segment {
            file: None,
            map: MmapRaw::from(map),
            size,
        })
    }

    fn check(&self, off: u64, len: usize) -> io::Result<usize> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(off as usize),
            _ => Err(io::Error::other(format!(
                "range {off}+{len} outside segment of {} bytes",
                self.size
            ))),
        }
    }
}

impl SegmentFile for Segment {
    #[inline]
    fn size(&self) -> u64 {
        self.size
    }

    /// Callers read only bytes that are no longer written (below the log's published end, or
    /// during the single-threaded open scan).
    fn read_into(&self, off: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let start = self.check(off, len)?;
        // SAFETY: the range is inside the mapping (checked) and, by the caller's contract, not
        // concurrently written.
        let src = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) };
        out.extend_from_slice(src);
        Ok(())
    }

    fn with_bytes<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        let start = self.check(off, len)?;
        // SAFETY: as in `read_into`; the slice does not outlive `f`.
        let src = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) };
        Ok(f(src))
    }

    /// Callers write only above the published end, under the region mutex (or in the
    /// single-threaded open scan), so no reader or other writer sees these bytes meanwhile.
    #[inline]
    fn write_at(&self, off: u64, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut at = self.check(off, total)?;
        for part in parts {
            // SAFETY: inside the mapping (checked above); exclusive by the caller's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.map.as_mut_ptr().add(at),
                    part.len(),
                )
            };
            at += part.len();
        }
        Ok(())
    }

    fn sync_range(&self, off: u64, len: usize) -> io::Result<()> {
        let start = self.check(off, len)?;
        match self.file {
            Some(_) => self.map.flush_range(start, len),
            None => Ok(()),
        }
    }

    fn sync_all(&self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: the pages written through the shared mapping
    /// are dirty in the page cache, and this queues them for writeback (`msync(MS_ASYNC)` does
    /// nothing on Linux). A writeback error is still reported by the next sync of the file.
    fn prefetch(&self, off: u64, len: usize) {
        // The first lines only: enough for the values a cursor reads ahead.
        let len = len.clamp(1, 256);
        let Ok(start) = self.check(off, len) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        for line in (0..len).step_by(64) {
            // SAFETY: `start + line` is inside the mapping (checked above); a prefetch reads
            // nothing the program sees and cannot fault.
            unsafe {
                let p = self.map.as_ptr().add(start + line);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = start;
    }

    fn start_writeback(&self, off: u64, len: usize) -> io::Result<()> {
        let start = self.check(off, len)?;
        let Some(f) = &self.file else {
            return Ok(());
        };
        let (off, len) = (start as libc::off64_t, len as libc::off64_t);
        // SAFETY: plain syscall on a valid descriptor, for a range inside the file.
        let rc =
            unsafe { libc::sync_file_range(f.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Reserves `size` bytes of disk for `file`, so later writes through the mapping cannot fail
/// for lack of space (also for a copy of a segment, see `crate::backup`).
pub fn reserve(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("size too large"))?;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Syncs a directory so that a create, rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
