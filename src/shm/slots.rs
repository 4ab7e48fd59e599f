//! Process slots, liveness, and the "open" lock: who has the store open, and who died.
//!
//! Owns: the lock file (`mmxa.lock` in the store directory) and the slot table in the region.
//! The kernel is the arbiter of liveness: each process with the store open holds an
//! open-file-description (OFD) lock on the lock file — shared on byte 0 (the "open" lock), and
//! exclusive on byte `1 + slot` for the slot it claimed. The kernel drops them when the process
//! dies, however it dies; the descriptor is close-on-exec and listed in [`crate::inherit`], so
//! neither an `exec`ed nor a forked child keeps them alive.
//!
//! Invariants (the order of steps is what makes them hold under the region mutex):
//! - a claimer locks its byte before it marks the slot live, and a releaser marks the slot free
//!   before it unlocks its byte; so a slot marked live whose byte no one holds belongs to a
//!   process that died, and whoever finds it so (under the mutex) may reap it;
//! - byte 0 held exclusively means no process has the store open: only then is the region built
//!   from the log (from scratch, a new file), and the builder publishes before it downgrades to
//!   shared, so a process that gets byte 0 shared always finds a ready region.
//!
//! # Slot table entry (16 bytes, at 2048 + 16 × slot)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | pid of the process that claimed it (information only: liveness is the lock byte) |
//! | 4 | 4 | state: 0 free, 1 live |
//! | 8 | 8 | generation: raised at every claim |

use super::layout::*;
use super::region::{Options, Region};
use super::sys::{self, Ofd};
use super::txn::Txn;
use super::Error;
use crate::inherit::NoInherit;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE: u32 = 0;
const LIVE: u32 = 1;
const OPEN_BYTE: u64 = 0;

/// A slot this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Its index, `< SLOTS`.
    pub index: u32,
    /// Its generation, new at every claim.
    pub generation: u64,
}

/// A slot whose owner died without releasing it: what the layer above reaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadOwner {
    /// The slot.
    pub index: u32,
    /// The dead process's pid (information: it may be reused by now).
    pub pid: u32,
    /// The generation the dead process held.
    pub generation: u64,
}

/// How [`LockFile::open_or_recover`] found the store.
pub enum Opened {
    /// No process had it open: here is a fresh region, state building, created at the path;
    /// this process holds the store exclusively. Build it from the log (a builder section),
    /// then [`LockFile::finish_recovery`].
    Fresh(Region),
    /// Others have it open: attached to their (ready) region; byte 0 held shared.
    Attached(Region),
}

/// The store's lock file, held open by every process with the store open.
pub struct LockFile {
    file: NoInherit<File>,
    path: PathBuf,
    /// The slot this description holds (one per lock file).
    own: Mutex<Option<Slot>>,
}

fn slot_byte(i: u32) -> u64 {
    1 + i as u64
}

fn slot_fields(i: u32) -> (u64, u64, u64) {
    let base = slot_off(i as usize);
    (base, base + 4, base + 8)
}

impl LockFile {
    /// Opens (creating with permission bits `mode`, whatever the umask) the lock file at `path`.
    /// Takes no lock yet.
    pub fn open(path: &Path, mode: u32) -> Result<LockFile, Error> {
        sys::fork_generation(); // installs the fork handler that keeps children off the locks
        let ctx = |e: io::Error| {
            Error::Io(io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", path.display()),
            ))
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        // Set the mode only on a file we create: another user's file is not ours to chmod.
        let file = match opts.clone().create_new(true).mode(mode).open(path) {
            Ok(f) => {
                sys::fchmod(&f, mode)?;
                f
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => opts.open(path).map_err(ctx)?,
            Err(e) => return Err(ctx(e)),
        };
        Ok(LockFile {
            file: NoInherit::new(file),
            path: path.to_path_buf(),
            own: Mutex::new(None),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the store's region at `region_path`: if no process has the store open (byte 0
    /// can be locked exclusively) creates a fresh one ([`Opened::Fresh`]: rebuild it from the
    /// log); otherwise takes byte 0 shared and attaches ([`Opened::Attached`]). While another
    /// process recovers (holds byte 0 exclusively) retries with back-off until `timeout`, then
    /// fails with [`Error::Timeout`].
    pub fn open_or_recover(
        &self,
        region_path: &Path,
        mode: u32,
        opts: Options,
        timeout: Duration,
    ) -> Result<Opened, Error> {
        let deadline = super::deadline(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Exclusive)? {
                return match Region::create_with(region_path, mode, opts) {
                    Ok(r) => Ok(Opened::Fresh(r)),
                    Err(e) => {
                        let _ = sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Unlock);
                        Err(e)
                    }
                };
            }
            if sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Shared)? {
                return match Region::open(region_path) {
                    Ok(r) => Ok(Opened::Attached(r)),
                    Err(e) => {
                        let _ = sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Unlock);
                        Err(e)
                    }
                };
            }
            // Someone holds it exclusively: recovering. Wait for it (or for its death).
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Ends a recovery: publishes the built region, then turns the exclusive hold on byte 0
    /// into a shared one (atomically: no one can slip in between and find nothing open).
    pub fn finish_recovery(&self, region: &Region, timeout: Duration) -> Result<(), Error> {
        region.publish(timeout)?;
        if !sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Shared)? {
            return Err(Error::Io(io::Error::other(
                "cannot downgrade the open lock",
            )));
        }
        Ok(())
    }

    /// Gives up byte 0 (the store is closed for this process; closing the file does it too).
    pub fn close_store(&self) -> Result<(), Error> {
        sys::ofd_set(&self.file, OPEN_BYTE, Ofd::Unlock)?;
        Ok(())
    }

    /// Whether any process holds byte 0 (has the store open), this one aside.
    pub fn store_open_elsewhere(&self) -> Result<bool, Error> {
        Ok(sys::ofd_held_by_other(&self.file, OPEN_BYTE)?)
    }

    /// Claims a free slot: locks the first slot byte no other process holds (the kernel
    /// decides), then, in one section, calls `reap` if the slot's previous owner died without
    /// releasing it (its state in the layers above is still there), and marks the slot live
    /// under a new generation. One slot per lock file.
    pub fn claim_slot(
        &self,
        region: &Region,
        timeout: Duration,
        reap: impl FnOnce(&mut Txn<'_>, DeadOwner) -> Result<(), Error>,
    ) -> Result<Slot, Error> {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        if own.is_some() {
            return Err(Error::Io(io::Error::other(
                "this lock file holds a slot already",
            )));
        }
        for i in 0..SLOTS as u32 {
            if !sys::ofd_set(&self.file, slot_byte(i), Ofd::Exclusive)? {
                continue;
            }
            match self.take(region, i, timeout, reap) {
                Ok(slot) => {
                    *own = Some(slot);
                    return Ok(slot);
                }
                Err(e) => {
                    let _ = sys::ofd_set(&self.file, slot_byte(i), Ofd::Unlock);
                    return Err(e);
                }
            }
        }
        Err(Error::NoFreeSlot)
    }

    fn take(
        &self,
        region: &Region,
        i: u32,
        timeout: Duration,
        reap: impl FnOnce(&mut Txn<'_>, DeadOwner) -> Result<(), Error>,
    ) -> Result<Slot, Error> {
        let mut t = region.lock(timeout)?;
        let (pid_at, state_at, gen_at) = slot_fields(i);
        let generation = t.get_u64(gen_at)?;
        if t.get_u32(state_at)? != FREE {
            let dead = DeadOwner {
                index: i,
                pid: t.get_u32(pid_at)?,
                generation,
            };
            reap(&mut t, dead)?;
        }
        let slot = Slot {
            index: i,
            generation: generation.wrapping_add(1),
        };
        t.write_u32(pid_at, std::process::id())?;
        t.write_u32(state_at, LIVE)?;
        t.write_u64(gen_at, slot.generation)?;
        t.commit()?;
        Ok(slot)
    }

    /// The slot this lock file holds.
    pub fn slot(&self) -> Option<Slot> {
        *self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases this process's slot: marks it free (a section), then unlocks its byte.
    pub fn release_slot(&self, region: &Region, timeout: Duration) -> Result<(), Error> {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = *own else {
            return Ok(());
        };
        let mut t = region.lock(timeout)?;
        let (_, state_at, gen_at) = slot_fields(slot.index);
        if t.get_u64(gen_at)? == slot.generation {
            t.write_u32(state_at, FREE)?;
        }
        t.commit()?;
        sys::ofd_set(&self.file, slot_byte(slot.index), Ofd::Unlock)?;
        *own = None;
        Ok(())
    }

    /// Whether no process holds slot `index`'s byte (its owner, if any, is dead). This
    /// process's own slot is never dead.
    pub fn is_dead(&self, index: u32) -> Result<bool, Error> {
        if index as usize >= SLOTS {
            return Err(Error::OutOfBounds {
                off: index as u64,
                len: 1,
            });
        }
        if self.slot().is_some_and(|s| s.index == index) {
            return Ok(false);
        }
        Ok(!sys::ofd_held_by_other(&self.file, slot_byte(index))?)
    }

    /// The slots marked live whose owners are dead. Under the mutex (`t`), so the answer holds
    /// until `t` ends: a claimer marks a slot live only under the mutex, after locking its byte.
    pub fn dead_slots(&self, t: &Txn<'_>) -> Result<Vec<DeadOwner>, Error> {
        let mut dead = Vec::new();
        for i in 0..SLOTS as u32 {
            let (pid_at, state_at, gen_at) = slot_fields(i);
            if t.get_u32(state_at)? == FREE {
                continue;
            }
            if self.is_dead(i)? {
                dead.push(DeadOwner {
                    index: i,
                    pid: t.get_u32(pid_at)?,
                    generation: t.get_u64(gen_at)?,
                });
            }
        }
        Ok(dead)
    }

    /// Marks a dead owner's slot free, in the section that reaped it (no-op if the slot was
    /// claimed again since: its generation moved on).
    pub fn free_dead_slot(&self, t: &mut Txn<'_>, dead: &DeadOwner) -> Result<(), Error> {
        let (_, state_at, gen_at) = slot_fields(dead.index);
        if t.get_u64(gen_at)? == dead.generation && t.get_u32(state_at)? != FREE {
            t.write_u32(state_at, FREE)?;
        }
        Ok(())
    }
}

/// The state of slot `index` as the table says (pid, live, generation): for `mmxa status`.
pub fn slot_state(t: &Txn<'_>, index: u32) -> Result<(u32, bool, u64), Error> {
    if index as usize >= SLOTS {
        return Err(Error::OutOfBounds {
            off: index as u64,
            len: 1,
        });
    }
    let (pid_at, state_at, gen_at) = slot_fields(index);
    Ok((
        t.get_u32(pid_at)?,
        t.get_u32(state_at)? != FREE,
        t.get_u64(gen_at)?,
    ))
}
