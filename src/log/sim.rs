//! A simulated disk for tests: a [`Media`] that keeps live and durable bytes apart, takes
//! power-cut images and fails chosen calls.
//!
//! Owns: the model of what a power cut keeps, and fault injection. Invariants: the live bytes of
//! a file are its durable bytes with every unsynced write applied in order (the list of unsynced
//! writes is exactly what a sync has not covered yet); a created file is durable at once, as
//! [`Media::create`] promises; a removal is durable only after `sync_dir`.
//!
//! A power cut keeps the synced bytes and, of the unsynced writes, one of ([`Cut`]): none; an
//! in-order prefix with the next write torn at any byte; any subset of the writes; or any
//! subset of the dirty 4 KiB pages (the kernel writes back dirty pages of a mapping in any
//! order). Files removed but not yet
//! removed durably may survive or not. With recording on, the disk takes a [`Snapshot`] before
//! every durability event (create, sync, directory sync), so a test can build every image a
//! cut at that point could leave. Nothing here is used by the production medium.

use super::media::{Media, SegmentFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Page size of the page-granular cut.
pub const PAGE: u64 = 4096;

/// A call of the medium that a [`Fault`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Creating (reserving and mapping) a segment file.
    Create,
    /// Opening (mapping) an existing segment file.
    Open,
    /// Writing bytes into a segment.
    Write,
    /// `sync_range` or `sync_all`.
    Sync,
    /// Removing a file.
    Remove,
    /// Syncing the directory.
    SyncDir,
}

/// Fails calls of `op` with `errno`: after `skip` calls succeed, the next `count` fail
/// (`u64::MAX`: until [`SimDisk::clear_faults`]). A failed write writes nothing, or with
/// `partial` all its bytes but the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The call to fail.
    pub op: Op,
    /// The error, e.g. `libc::EIO` or `libc::ENOSPC`.
    pub errno: i32,
    /// Calls that succeed first.
    pub skip: u64,
    /// Calls that fail then.
    pub count: u64,
    /// A failing write still writes all its bytes but the last.
    pub partial: bool,
}

impl Fault {
    /// The next call of `op` fails with `errno`, once.
    pub fn once(op: Op, errno: i32) -> Fault {
        Fault {
            op,
            errno,
            skip: 0,
            count: 1,
            partial: false,
        }
    }

    /// Every call of `op` fails with `errno` until the faults are cleared.
    pub fn always(op: Op, errno: i32) -> Fault {
        Fault {
            count: u64::MAX,
            ..Fault::once(op, errno)
        }
    }
}

struct FileData {
    size: u64,
    bytes: Mutex<Bytes>,
}

struct Bytes {
    live: Vec<u8>,
    /// Shared with the snapshots that hold it; copied on the next sync.
    durable: Arc<Vec<u8>>,
    /// End of the furthest write.
    high: u64,
}

impl FileData {
    fn bytes(&self) -> MutexGuard<'_, Bytes> {
        self.bytes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A write not yet covered by a sync.
#[derive(Clone)]
struct Pending {
    file: Arc<FileData>,
    off: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct State {
    live: BTreeMap<String, Arc<FileData>>,
    durable: BTreeMap<String, Arc<FileData>>,
    pending: Vec<Pending>,
    faults: Vec<Fault>,
    recording: bool,
    snapshots: Vec<Snapshot>,
    calls: BTreeMap<Op, u64>,
    injected: u64,
}

struct Inner {
    dir: PathBuf,
    state: Mutex<State>,
}

/// A simulated disk holding one store directory. Clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Inner>,
}

impl Default for SimDisk {
    fn default() -> SimDisk {
        SimDisk::new()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk {
            inner: Arc::new(Inner {
                dir: PathBuf::from("/sim"),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Removes every fault not yet used up.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// How many calls failed because of a fault.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> u64 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    /// Starts or stops taking a snapshot before every durability event.
    pub fn record(&self, on: bool) {
        self.state().recording = on;
    }

    /// Takes a snapshot now (recording or not) and keeps it with the recorded ones.
    pub fn capture(&self, what: &str) {
        let mut st = self.state();
        let snap = Snapshot::of(&st, what);
        st.snapshots.push(snap);
    }

    /// Number of snapshots kept so far.
    pub fn snapshot_count(&self) -> usize {
        self.state().snapshots.len()
    }

    /// Hands over the snapshots kept so far.
    pub fn take_snapshots(&self) -> Vec<Snapshot> {
        std::mem::take(&mut self.state().snapshots)
    }

    /// A snapshot of now, not kept.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.state(), "now")
    }

    /// Bytes after the furthest write in the last file by name (the log's tail segment).
    pub fn room(&self) -> u64 {
        let st = self.state();
        st.live
            .values()
            .next_back()
            .map_or(0, |f| f.size - f.bytes().high)
    }

    /// Names of the live files.
    pub fn names(&self) -> Vec<String> {
        self.state().live.keys().cloned().collect()
    }

    /// Counts the call; returns the error if a fault fails it (and whether a write is partial).
    fn check(st: &mut State, op: Op) -> Option<(io::Error, bool)> {
        *st.calls.entry(op).or_default() += 1;
        let i = st.faults.iter().position(|f| f.op == op)?;
        let f = &mut st.faults[i];
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        let fault = *f;
        f.count -= 1;
        if f.count == 0 {
            st.faults.remove(i);
        }
        st.injected += 1;
        Some((io::Error::from_raw_os_error(fault.errno), fault.partial))
    }

    /// Before a durability event: snapshot if recording, then apply any fault.
    fn event(&self, st: &mut State, op: Op, what: impl FnOnce() -> String) -> io::Result<()> {
        if st.recording {
            let snap = Snapshot::of(st, &what());
            st.snapshots.push(snap);
        }
        match SimDisk::check(st, op) {
            Some((e, _)) => Err(e),
            None => Ok(()),
        }
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

fn range_err(off: u64, len: usize, size: u64) -> io::Error {
    io::Error::other(format!("range {off}+{len} outside file of {size} bytes"))
}

fn range(off: u64, len: usize, size: u64) -> io::Result<std::ops::Range<usize>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= size => Ok(off as usize..end as usize),
        _ => Err(range_err(off, len, size)),
    }
}

impl Media for SimDisk {
    type File = SimFile;

    fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn create(&self, name: &str, size: u64, header: &[u8]) -> io::Result<SimFile> {
        let mut st = self.state();
        self.event(&mut st, Op::Create, || format!("create {name}"))?;
        let len = usize::try_from(size).map_err(|_| io::Error::other("file too large"))?;
        let mut bytes = vec![0u8; len];
        bytes[..header.len()].copy_from_slice(header);
        let data = Arc::new(FileData {
            size,
            bytes: Mutex::new(Bytes {
                live: bytes.clone(),
                durable: Arc::new(bytes),
                high: header.len() as u64,
            }),
        });
        st.live.insert(name.to_string(), data.clone());
        st.durable.insert(name.to_string(), data.clone());
        Ok(SimFile {
            disk: self.clone(),
            data,
        })
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        let mut st = self.state();
        if let Some((e, _)) = SimDisk::check(&mut st, Op::Open) {
            return Err(e);
        }
        let data = st.live.get(name).ok_or_else(|| not_found(name))?.clone();
        Ok(SimFile {
            disk: self.clone(),
            data,
        })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state();
        if let Some((e, _)) = SimDisk::check(&mut st, Op::Remove) {
            return Err(e);
        }
        st.live
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state();
        self.event(&mut st, Op::SyncDir, || "sync directory".into())?;
        let st = &mut *st;
        st.durable = st.live.clone();
        let durable = &st.durable;
        st.pending
            .retain(|p| durable.values().any(|f| Arc::ptr_eq(f, &p.file)));
        Ok(())
    }
}

/// A segment file on a [`SimDisk`].
pub struct SimFile {
    disk: SimDisk,
    data: Arc<FileData>,
}

impl SimFile {
    fn sync(&self, off: u64, len: usize) -> io::Result<()> {
        let r = range(off, len, self.data.size)?;
        let mut st = self.disk.state();
        self.disk
            .event(&mut st, Op::Sync, || format!("sync {off}+{len}"))?;
        {
            let mut b = self.data.bytes();
            let b = &mut *b;
            Arc::make_mut(&mut b.durable)[r.clone()].copy_from_slice(&b.live[r.clone()]);
        }
        // Keep only the unsynced parts of pending writes to this file.
        let (lo, hi) = (r.start as u64, r.end as u64);
        let mut kept = Vec::with_capacity(st.pending.len());
        for p in st.pending.drain(..) {
            let end = p.off + p.data.len() as u64;
            if !Arc::ptr_eq(&p.file, &self.data) || end <= lo || p.off >= hi {
                kept.push(p);
                continue;
            }
            if p.off < lo {
                let data = p.data[..(lo - p.off) as usize].to_vec();
                kept.push(Pending { data, ..p.clone() });
            }
            if end > hi {
                let data = p.data[(hi - p.off) as usize..].to_vec();
                kept.push(Pending { off: hi, data, ..p });
            }
        }
        st.pending = kept;
        Ok(())
    }
}

impl SegmentFile for SimFile {
    fn size(&self) -> u64 {
        self.data.size
    }

    fn write_at(&self, off: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let r = range(off, len, self.data.size)?;
        let mut st = self.disk.state();
        let fault = SimDisk::check(&mut st, Op::Write);
        let mut data = parts.concat();
        if let Some((_, partial)) = &fault {
            data.truncate(if *partial { len.saturating_sub(1) } else { 0 });
        }
        {
            let mut b = self.data.bytes();
            b.live[r.start..r.start + data.len()].copy_from_slice(&data);
            b.high = b.high.max(off + data.len() as u64);
        }
        if !data.is_empty() {
            st.pending.push(Pending {
                file: self.data.clone(),
                off,
                data,
            });
        }
        match fault {
            Some((e, _)) => Err(e),
            None => Ok(()),
        }
    }

    fn read_into(&self, off: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        let r = range(off, len, self.data.size)?;
        out.extend_from_slice(&self.data.bytes().live[r]);
        Ok(())
    }

    fn with_bytes<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
        let r = range(off, len, self.data.size)?;
        Ok(f(&self.data.bytes().live[r]))
    }

    fn sync_range(&self, off: u64, len: usize) -> io::Result<()> {
        self.sync(off, len)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(0, self.data.size as usize)
    }
}

/// What a power cut keeps of the unsynced writes of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Nothing: only synced bytes.
    Synced,
    /// The first `writes` unsynced writes in order, then `torn` bytes of the next one.
    Torn {
        /// Writes kept whole.
        writes: usize,
        /// Bytes kept of the next write.
        torn: usize,
    },
    /// These unsynced writes (indexes into [`Snapshot::writes`]), whole, and no others: writes
    /// reaching the disk out of order.
    Writes(Vec<usize>),
    /// The live content of these dirty pages (indexes into [`Snapshot::dirty_pages`]) and
    /// nothing else.
    Pages(Vec<usize>),
}

/// The durable state of a [`SimDisk`] at one moment, with the writes not yet synced.
#[derive(Clone)]
pub struct Snapshot {
    what: String,
    /// Files durably named, with their durable bytes and whether they are removed (not yet
    /// durably).
    files: Vec<(String, Arc<Vec<u8>>, bool)>,
    /// Unsynced writes, in order: file index, offset, bytes.
    pending: Vec<(usize, u64, Vec<u8>)>,
}

impl Snapshot {
    fn of(st: &State, what: &str) -> Snapshot {
        let mut files = Vec::new();
        for (name, f) in &st.durable {
            let removed = !st.live.get(name).is_some_and(|l| Arc::ptr_eq(l, f));
            files.push((name.clone(), f.bytes().durable.clone(), removed));
        }
        let pending = st
            .pending
            .iter()
            .filter_map(|p| {
                let i = st.durable.values().position(|f| Arc::ptr_eq(f, &p.file))?;
                Some((i, p.off, p.data.clone()))
            })
            .collect();
        Snapshot {
            what: what.to_string(),
            files,
            pending,
        }
    }

    /// The event the snapshot was taken before.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Lengths of the unsynced writes, in order.
    pub fn writes(&self) -> Vec<usize> {
        self.pending.iter().map(|p| p.2.len()).collect()
    }

    /// The pages unsynced writes touched: (file index, page number), sorted.
    pub fn dirty_pages(&self) -> Vec<(usize, u64)> {
        let mut pages = BTreeSet::new();
        for (i, off, data) in &self.pending {
            let end = off + data.len() as u64;
            for page in off / PAGE..end.div_ceil(PAGE) {
                pages.insert((*i, page));
            }
        }
        pages.into_iter().collect()
    }

    /// Whether some file is removed but not durably.
    pub fn has_removed(&self) -> bool {
        self.files.iter().any(|f| f.2)
    }

    /// A new disk holding what a power cut at this snapshot leaves under `cut`; files removed
    /// but not durably survive if `keep_removed`.
    pub fn image(&self, cut: &Cut, keep_removed: bool) -> SimDisk {
        let mut files: Vec<Vec<u8>> = self.files.iter().map(|f| f.1.to_vec()).collect();
        let apply = |files: &mut Vec<Vec<u8>>, (i, off, data): &(usize, u64, Vec<u8>), n: usize| {
            let at = *off as usize;
            files[*i][at..at + n].copy_from_slice(&data[..n]);
        };
        match cut {
            Cut::Synced => {}
            Cut::Torn { writes, torn } => {
                for p in &self.pending[..*writes] {
                    apply(&mut files, p, p.2.len());
                }
                if let Some(p) = self.pending.get(*writes) {
                    apply(&mut files, p, (*torn).min(p.2.len()));
                }
            }
            Cut::Writes(which) => {
                for &w in which {
                    let p = &self.pending[w];
                    apply(&mut files, p, p.2.len());
                }
            }
            Cut::Pages(which) => {
                let mut live = files.clone();
                for p in &self.pending {
                    apply(&mut live, p, p.2.len());
                }
                let pages = self.dirty_pages();
                for &w in which {
                    let (i, page) = pages[w];
                    let lo = (page * PAGE) as usize;
                    let hi = (lo + PAGE as usize).min(live[i].len());
                    files[i][lo..hi].copy_from_slice(&live[i][lo..hi]);
                }
            }
        }
        let disk = SimDisk::new();
        {
            let mut st = disk.state();
            for ((name, _, removed), bytes) in self.files.iter().zip(files) {
                if *removed && !keep_removed {
                    continue;
                }
                let high = bytes.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
                let data = Arc::new(FileData {
                    size: bytes.len() as u64,
                    bytes: Mutex::new(Bytes {
                        high: (high as u64).next_multiple_of(8),
                        live: bytes.clone(),
                        durable: Arc::new(bytes),
                    }),
                });
                st.live.insert(name.clone(), data.clone());
                st.durable.insert(name.clone(), data);
            }
        }
        disk
    }
}
