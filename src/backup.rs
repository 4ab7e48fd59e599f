//! Backups: a consistent copy of a store that other processes keep using (`mmxa backup`).
//!
//! Owns: the copy's protocol. The copying process is a peer of the store ([`Rm::open_admin`]);
//! it pins the log ([`Rm::pin_for_backup`]: no segment is reclaimed meanwhile, and everything
//! committed is made durable), which gives one point of the log: segments `first..=tail` and
//! the end of the committed records in the tail. It copies those files with `read` and
//! `write` (the tail cut at that end: the bytes after it are zero in the copy, as the open
//! rules want after the last record), `fdatasync`s each, and unpins. The copy is a crash image
//! of the store at that point: recovery of the copy does what recovery after a crash there
//! would (branches acknowledged before the backup started are in it; branches that never
//! prepared are rolled back). `mmxa.shm` and `mmxa.lock` are never copied: the copy's first
//! open rebuilds its shared state from its log. With another segment size the copy is then
//! rewritten logically ([`crate::rm::rewrite_log`]): the segment size is part of every segment
//! file, so a byte copy cannot change it.
//!
//! Everything is written into a hidden directory beside the destination, synced, checked, and
//! renamed into place at the end: a failed or interrupted backup (a full disk, a kill) never
//! leaves a directory that looks like a valid copy under the destination's name.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::{reserve, segment_file_name, sync_dir, Lsn, Mapped, Point};
use crate::rm::Rm;
use crate::xid::Xid;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a backup is written.
#[derive(Debug, Clone)]
pub struct Options {
    /// Permission bits of the copy's directory (0700, or 0770 for a group-shared store).
    pub dir_mode: u32,
    /// Permission bits of its files (0600 or 0660).
    pub file_mode: u32,
    /// Rewrite the copy with segments of this size (a logical copy); None: a byte copy.
    pub segment_size: Option<u64>,
}

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The point of the source's log the copy stops at.
    pub lsn: Lsn,
    /// Segment files in the copy and their total size.
    pub segments: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Committed keys in the copy.
    pub keys: u64,
    /// In-doubt branches in the copy (prepared or completed heuristically).
    pub in_doubt: Vec<Xid>,
}

/// The audit trail of heuristic decisions, copied along (not part of the log).
const AUDIT_FILE: &str = "mmxa.audit";

/// Copies the store `rm` (open in this process) into `dest`, which must not exist or be an
/// empty directory. `check` looks at the finished copy (in its hidden directory) before it
/// is put in place; an error from it abandons the backup.
pub fn backup(
    rm: &Rm,
    dest: &Path,
    opts: &Options,
    check: &mut dyn FnMut(&Path) -> std::result::Result<(), String>,
) -> Result<Summary> {
    check_dest(dest)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a directory name", dest.display())))?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let mut scratch = Scratch(Vec::new());
    let copy = scratch.dir(
        &parent.join(format!(".{name}.partial-{pid}")),
        opts.dir_mode,
    )?;

    let point = rm.pin_for_backup()?;
    let copied = copy_segments(rm.dir(), &copy, &point, opts.file_mode);
    rm.unpin_backup();
    let (mut segments, mut bytes) = copied?;
    copy_file(
        &rm.dir().join(AUDIT_FILE),
        &copy.join(AUDIT_FILE),
        opts.file_mode,
    )?;

    let done = match opts.segment_size {
        None => copy,
        Some(size) => {
            let re = scratch.dir(
                &parent.join(format!(".{name}.rewrite-{pid}")),
                opts.dir_mode,
            )?;
            crate::rm::rewrite_log(&copy, &re, size, opts.file_mode)?;
            copy_file(&copy.join(AUDIT_FILE), &re.join(AUDIT_FILE), opts.file_mode)?;
            (segments, bytes) = log_files(&re)?;
            re
        }
    };
    sync_dir(&done).map_err(io_err(&done))?;
    check(&done).map_err(Error::Io)?;

    // What the copy holds, as its first open will find it (a view that changes no file).
    let mut cfg = Config::new(&done);
    cfg.segment_size = opts.segment_size.unwrap_or(rm.config().segment_size);
    let view = Rm::open_on(cfg, Mapped::private(&done))
        .map_err(|e| Error::Io(format!("the copy does not open: {e}")))?;
    let report = view.status();
    drop(view);

    // An empty `dest` (checked above) is replaced by the rename.
    fs::rename(&done, dest).map_err(io_err(dest))?;
    sync_dir(&parent).map_err(io_err(&parent))?;
    scratch.0.retain(|d| *d != done);
    Ok(Summary {
        lsn: point.end,
        segments,
        bytes,
        keys: report.live_keys,
        in_doubt: report.branches.iter().map(|b| b.xid).collect(),
    })
}

/// The hidden directories of a backup under way, removed unless the backup succeeds.
struct Scratch(Vec<PathBuf>);

impl Scratch {
    fn dir(&mut self, path: &Path, mode: u32) -> Result<PathBuf> {
        // A leftover of an earlier backup by a process with the same pid.
        if path.exists() {
            fs::remove_dir_all(path).map_err(io_err(path))?;
        }
        fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .map_err(io_err(path))?;
        self.0.push(path.to_path_buf());
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
        Ok(path.to_path_buf())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = fs::remove_dir_all(d);
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |e| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace(format!("{}: {e}", path.display()))
        } else {
            Error::Io(format!("{}: {e}", path.display()))
        }
    }
}

/// `dest` must be absent or an empty directory.
fn check_dest(dest: &Path) -> Result<()> {
    match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Invalid(format!(
                    "{}: exists and is not empty (a backup goes into a new or empty directory)",
                    dest.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Invalid(format!("{}: {e}", dest.display()))),
    }
}

/// Copies segments `p.first..=p.tail` of `src` into `dst`, the tail only up to `p.end`.
/// Returns how many files and bytes.
fn copy_segments(src: &Path, dst: &Path, p: &Point, mode: u32) -> Result<(u64, u64)> {
    let pause = std::env::var("MMXA_BACKUP_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let (mut files, mut bytes) = (0, 0);
    for id in p.first..=p.tail {
        let name = segment_file_name(id);
        let from = src.join(&name);
        let f = match File::open(&from) {
            // Retired already but not yet unlisted (a reclaim died between the deletion and
            // its publication): the CHECKPOINT naming its successor is in the log.
            Err(e) if e.kind() == io::ErrorKind::NotFound && files == 0 && id < p.tail => continue,
            r => r.map_err(io_err(&from))?,
        };
        let size = f.metadata().map_err(io_err(&from))?.len();
        let keep = if id == p.tail {
            p.end.saturating_sub(p.tail_base)
        } else {
            size
        };
        if keep > size {
            return Err(Error::Io(format!(
                "{}: {size} bytes, but the log's end is at offset {keep}",
                from.display()
            )));
        }
        let to = dst.join(&name);
        copy_range(&f, &from, &to, keep, size, mode)?;
        files += 1;
        bytes += size;
        if let Some(ms) = pause {
            // Tests: widens the window in which others append and would reclaim.
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    Ok((files, bytes))
}

/// Writes the first `keep` bytes of `f` into a new file `to` of `size` bytes (the rest zero,
/// reserved on disk as every segment is), then `fdatasync`s it.
fn copy_range(f: &File, from: &Path, to: &Path, keep: u64, size: u64, mode: u32) -> Result<()> {
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(io_err(to))?;
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(to))?;
    if size > 0 {
        reserve(&out, size).map_err(io_err(to))?;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < keep {
        let n = (keep - off).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], off).map_err(io_err(from))?;
        out.write_all_at(&buf[..n], off).map_err(io_err(to))?;
        off += n as u64;
    }
    out.sync_data().map_err(io_err(to))
}

/// Copies a whole file if it exists.
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let f = match File::open(from) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(io_err(from))?,
    };
    let len = f.metadata().map_err(io_err(from))?.len();
    copy_range(&f, from, to, len, len, mode)
}

/// The segment files of a log directory: how many, and their total size.
fn log_files(dir: &Path) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("log-") && name.ends_with(".seg") {
            n += 1;
            bytes += e.metadata().map_err(io_err(dir))?.len();
        }
    }
    Ok((n, bytes))
}
