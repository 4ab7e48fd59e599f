//! One store, many processes: who hosts a store and how the others reach it.
//!
//! Owns: the choice between hosting a store and being a guest of the process that hosts it,
//! and the [`Store`] interface both present to the registry. Invariants:
//! - exactly one process hosts a store at a time: the one holding the open-file-description
//!   lock on `mmxa.lock` (a kernel lock, released when the holder dies, so nothing stale is ever
//!   left to clean up). It runs the store ([`Rm`]) in its own memory and serves the others over
//!   the Unix socket `mmxa.sock` in the store's directory;
//! - every other process is a guest: each of its threads of control gets its own connection,
//!   which the host serves with a thread of its own and a thread-of-control number of its own,
//!   so branches, locks, `xa_recover` scans and associations are shared by all processes exactly
//!   as they are between the threads of one process;
//! - a connection that ends without `xa_close` (its process died, or closed the socket) is
//!   abandoned at once: its associations end as with `TMFAIL`, and a branch left with no
//!   association is rolled back and its locks released. Idle and prepared branches are untouched;
//! - when the host process dies, its guests' calls fail with `XAER_RMFAIL` (`MMXA_EIO` for data
//!   calls); their next `xa_open` elects a new host, which recovers the log as after a crash:
//!   prepared branches stay in doubt, unprepared ones are rolled back.
//!
//! A deployment that wants no worker to be the host starts `mmxa serve` on the store first.

mod guest;
mod host;
pub mod wire;

use crate::config::{Config, Isolation, SyncMode};
use crate::error::{Error, Outcome, Result};
use crate::log::{try_lock_store, StoreLock};
use crate::rm::flags::{EndMode, Scan, StartMode};
use crate::rm::{Report, Rm, Toc, Vote};
use crate::xid::Xid;
pub use guest::Link;
pub use host::Server;
use std::fs::File;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a thread of control can ask of a store, whether this process hosts it or is a guest.
/// `toc` is the caller's thread-of-control number; a guest connection has its own at the host.
pub trait Store: Send + Sync {
    /// Why the store is unusable through this handle, if it is.
    fn failed(&self) -> Option<String>;
    /// Makes the handle unusable (after a panic while using it).
    fn fail(&self);
    fn start(&self, toc: Toc, xid: &Xid, mode: StartMode) -> Result<()>;
    fn end(&self, toc: Toc, xid: &Xid, mode: EndMode) -> Result<()>;
    fn prepare(&self, toc: Toc, xid: &Xid) -> Result<Vote>;
    fn commit(&self, toc: Toc, xid: &Xid, one_phase: bool) -> Result<()>;
    fn rollback(&self, toc: Toc, xid: &Xid) -> Result<()>;
    fn forget(&self, toc: Toc, xid: &Xid) -> Result<()>;
    fn recover(&self, toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>>;
    /// `xa_close` of `toc`: refused while it is associated with a branch.
    fn close_toc(&self, toc: Toc) -> Result<()>;
    /// The branch `toc` is actively associated with.
    fn active_branch(&self, toc: Toc) -> Result<Option<Xid>>;
    fn put(&self, toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool>;
    fn get(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// A read that locks the key exclusively (see [`Rm::get_for_update`]).
    fn get_for_update(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets a savepoint in `toc`'s branch (see [`Rm::savepoint`]).
    fn savepoint(&self, toc: Toc) -> Result<u64>;
    /// Rolls `toc`'s branch back to a savepoint (see [`Rm::rollback_to_savepoint`]).
    fn rollback_to_savepoint(&self, toc: Toc, id: u64) -> Result<()>;
    /// An operator's heuristic decision on a prepared branch (see [`Rm::heuristic`]).
    fn heuristic(&self, xid: &Xid, outcome: Outcome, reason: &str) -> Result<()>;
    /// A report on the store, for operators (see [`Rm::status`]).
    fn status(&self) -> Result<Report>;
}

impl Store for Rm {
    fn failed(&self) -> Option<String> {
        Rm::failed(self)
    }
    fn fail(&self) {
        Rm::fail(self)
    }
    fn start(&self, toc: Toc, xid: &Xid, mode: StartMode) -> Result<()> {
        Rm::start(self, toc, xid, mode)
    }
    fn end(&self, toc: Toc, xid: &Xid, mode: EndMode) -> Result<()> {
        Rm::end(self, toc, xid, mode)
    }
    fn prepare(&self, toc: Toc, xid: &Xid) -> Result<Vote> {
        Rm::prepare(self, toc, xid)
    }
    fn commit(&self, toc: Toc, xid: &Xid, one_phase: bool) -> Result<()> {
        Rm::commit(self, toc, xid, one_phase)
    }
    fn rollback(&self, toc: Toc, xid: &Xid) -> Result<()> {
        Rm::rollback(self, toc, xid)
    }
    fn forget(&self, toc: Toc, xid: &Xid) -> Result<()> {
        Rm::forget(self, toc, xid)
    }
    fn recover(&self, toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>> {
        Rm::recover(self, toc, scan, cap)
    }
    fn close_toc(&self, toc: Toc) -> Result<()> {
        Rm::close_toc(self, toc)
    }
    fn active_branch(&self, toc: Toc) -> Result<Option<Xid>> {
        Ok(Rm::active_branch(self, toc))
    }
    fn put(&self, toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        Rm::put(self, toc, key, value)
    }
    fn get(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Rm::get(self, toc, key)
    }
    fn get_for_update(&self, toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Rm::get_for_update(self, toc, key)
    }
    fn savepoint(&self, toc: Toc) -> Result<u64> {
        Rm::savepoint(self, toc)
    }
    fn rollback_to_savepoint(&self, toc: Toc, id: u64) -> Result<()> {
        Rm::rollback_to_savepoint(self, toc, id)
    }
    fn heuristic(&self, xid: &Xid, outcome: Outcome, reason: &str) -> Result<()> {
        Rm::heuristic(self, xid, outcome, reason)
    }
    fn status(&self) -> Result<Report> {
        Ok(Rm::status(self))
    }
}

/// How this process reaches a store.
pub enum Site {
    /// This process hosts the store and serves guests (unless it is an administrator).
    Host {
        rm: Arc<Rm>,
        server: Option<Server>,
        /// Enforces `orphan_rollback_s`, when set.
        janitor: Option<host::Janitor>,
    },
    /// Another process hosts it.
    Guest(Arc<Link>),
}

impl Site {
    /// Whether the store must be reached anew (the hosted instance failed, or the host is gone).
    pub fn failed(&self) -> bool {
        match self {
            Site::Host { rm, .. } => rm.failed().is_some(),
            Site::Guest(link) => link.lost(),
        }
    }

    /// Stops serving guests (a hosted store that failed is about to be replaced).
    pub fn stop(&mut self) {
        if let Site::Host {
            server, janitor, ..
        } = self
        {
            if let Some(s) = server {
                s.stop();
            }
            *janitor = None;
        }
    }

    /// A handle for one more thread of control.
    pub fn attach(&self) -> Result<Arc<dyn Store>> {
        match self {
            Site::Host { rm, .. } => Ok(rm.clone()),
            Site::Guest(link) => Ok(Arc::new(link.connect()?)),
        }
    }

    /// The lock this site holds on its store, to keep across a reopen in this process.
    pub fn held_lock(&self) -> Option<StoreLock> {
        match self {
            Site::Host { rm, .. } => rm.store_lock(),
            Site::Guest(_) => None,
        }
    }
}

/// The socket a store's host listens on. A path too long for a socket address is reached
/// through the directory's descriptor in `/proc/self/fd`, kept open as long as the address.
#[derive(Clone)]
pub struct Addr {
    path: PathBuf,
    _dir: Arc<File>,
}

impl Addr {
    fn new(cfg: &Config) -> Result<Addr> {
        use std::os::unix::io::AsRawFd;
        let dir = File::open(&cfg.dir)
            .map_err(|e| rmerr(format!("cannot open {}: {e}", cfg.dir.display())))?;
        let direct = cfg.dir.join("mmxa.sock");
        let path = if direct.as_os_str().len() < 100 {
            direct
        } else {
            PathBuf::from(format!("/proc/self/fd/{}/mmxa.sock", dir.as_raw_fd()))
        };
        Ok(Addr {
            path,
            _dir: Arc::new(dir),
        })
    }
}

/// The settings every process must agree on, as the handshake sends them.
pub(crate) fn fingerprint(cfg: &Config) -> Fingerprint {
    let sync = match cfg.sync {
        SyncMode::Msync => 0,
        SyncMode::Fdatasync => 1,
        SyncMode::None => 2,
    };
    let isolation = match cfg.isolation {
        Isolation::Serializable => 0,
        Isolation::ReadCommitted => 0x10,
    };
    (
        sync | isolation,
        cfg.lock_timeout.as_millis() as u64,
        cfg.segment_size,
        cfg.orphan_rollback.map_or(0, |d| d.as_secs()),
    )
}

/// The settings every member must agree on: sync mode and isolation (high nibble), lock timeout
/// (ms), segment size, orphan age (s, 0 for off).
pub(crate) type Fingerprint = (u8, u64, u64, u64);

/// What a process wants with a store: settings are checked between members; an administrator
/// (the `mmxa` tool) takes the store as it is. An administrator that has to host the store (no
/// one else has it open) serves no one: members wait for it to finish, then one of them hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A process that opened the store through `xa_open`.
    Member,
    /// An operator's tool.
    Admin,
}

/// How long a process keeps trying to reach a host that is starting or stopping (its lock is
/// held but nothing accepts connections yet or any more).
const ELECTION_PATIENCE: Duration = Duration::from_secs(30);

fn rmerr(msg: String) -> Error {
    Error::Io(msg)
}

/// Reaches the store `cfg` names: hosts it if no process does (recovering it first), else
/// becomes a guest of its host. `held` is this process's lock on the store, kept from a failed
/// instance being replaced. Returns the site and a handle for the calling thread.
pub fn establish(
    cfg: &Config,
    held: Option<StoreLock>,
    role: Role,
) -> Result<(Site, Arc<dyn Store>)> {
    let addr = Addr::new(cfg)?;
    let sock = addr.path.clone();
    let deadline = std::time::Instant::now() + ELECTION_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        let lock = match held.clone() {
            Some(lock) => Some(lock),
            None => try_lock_store(&cfg.dir).map_err(|e| rmerr(e.to_string()))?,
        };
        if let Some(lock) = lock {
            // Listen before recovering, so members that come meanwhile wait in the backlog.
            let listener = match role {
                Role::Member => Some(
                    host::bind(&sock)
                        .map_err(|e| rmerr(format!("cannot listen on {}: {e}", sock.display())))?,
                ),
                Role::Admin => None,
            };
            let rm = Arc::new(Rm::open_locked(cfg.clone(), lock).map_err(rmerr)?);
            let server = listener
                .map(|l| Server::start(l, addr, rm.clone(), cfg.clone()))
                .transpose()
                .map_err(|e| rmerr(format!("cannot start serving other processes: {e}")))?;
            let janitor = match (role, cfg.orphan_rollback) {
                (Role::Member, Some(age)) => {
                    Some(host::Janitor::start(rm.clone(), age).map_err(|e| {
                        rmerr(format!("cannot start the orphan policy's thread: {e}"))
                    })?)
                }
                _ => None,
            };
            return Ok((
                Site::Host {
                    rm: rm.clone(),
                    server,
                    janitor,
                },
                rm,
            ));
        }
        match UnixStream::connect(&sock) {
            Ok(stream) => match Link::join(stream, cfg, addr.clone(), role) {
                Ok((link, first)) => return Ok((Site::Guest(link), Arc::new(first))),
                Err(guest::JoinError::Refused(e)) => return Err(e),
                // The host went away during the handshake: elect again.
                Err(guest::JoinError::Lost(_)) => {}
            },
            // Nothing listens: the host is starting or stopping.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) => {}
            Err(e) => return Err(rmerr(format!("cannot connect to {}: {e}", sock.display()))),
        }
        if std::time::Instant::now() >= deadline {
            return Err(rmerr(format!(
                "the store {} is locked by a process that does not serve it (a child created by \
                 fork without exec keeps its parent's lock until it exits)",
                cfg.dir.display()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Refuses a guest whose settings differ from the host's.
pub(crate) fn check_fingerprint(ours: &Config, theirs: Fingerprint, role: Role) -> Result<()> {
    if fingerprint(ours) == theirs || role == Role::Admin {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "the store {} is open in another process with other settings (sync, \
         lock_timeout_ms, segment_mb, orphan_rollback_s, isolation must match)",
        ours.dir.display()
    )))
}
