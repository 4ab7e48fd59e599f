//! The hosting side: serves guest processes' calls on the store this process runs.
//!
//! Owns: the listening socket, one thread per guest connection, the connection's
//! thread-of-control number at this host, and the orphan policy's thread. Invariants: a
//! connection's calls run in order on its own thread, exactly as the guest thread made them;
//! when a connection ends without `xa_close`, its thread of control is abandoned
//! ([`Rm::abandon_toc`]) before the thread exits; stopping the server joins every thread it
//! started (the library may be unloaded next); a panic ends no thread here by unwinding out of
//! it: each catches it, does its cleanup (a connection's thread of control is abandoned) and
//! fails the store ([`Rm::fail`]), so the next `xa_open` in this process reaches it anew.

use super::wire::{self, op, In, Out};
use super::{Addr, Role};
use crate::config::Config;
use crate::error::{Error, Outcome, Result};
use crate::fxhash::FxHashMap;
use crate::inherit::NoInherit;
use crate::rm::flags::{EndMode, Scan, StartMode};
use crate::rm::{self, Rm, Toc, Vote};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Binds the store's socket, replacing a file left by a host that died (the caller holds the
/// store's lock, so no live process listens on it).
pub fn bind(path: &Path) -> io::Result<NoInherit<UnixListener>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path).map(NoInherit::new)
}

struct Conn {
    /// A second descriptor of the connection, to end it from `stop`.
    stream: NoInherit<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    rm: Arc<Rm>,
    cfg: Config,
    stopping: AtomicBool,
    conns: Mutex<FxHashMap<u64, Conn>>,
    /// Where a test makes the server's threads panic.
    #[cfg(test)]
    fault: Fault,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A panic a test injects into the server's threads (test builds only).
#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The acceptor, at its next connection.
    Accept,
    /// A connection's thread, at a request with this operation code.
    Request(u8),
}

/// Runs `body` in a thread this module starts. A panic in it is caught here, never unwinding
/// further, and fails the store: it may have left the store inconsistent. Answers whether
/// `body` panicked.
fn boundary(rm: &Rm, body: impl FnOnce()) -> bool {
    let panicked = catch_unwind(AssertUnwindSafe(body)).is_err();
    if panicked {
        rm.fail();
    }
    panicked
}

/// The server of one hosted store; stopped (and its threads joined) when dropped.
pub struct Server {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    addr: Addr,
    pid: u32,
}

impl Server {
    /// Starts accepting guests on `listener` for `rm`.
    pub fn start(
        listener: NoInherit<UnixListener>,
        addr: Addr,
        rm: Arc<Rm>,
        cfg: Config,
    ) -> io::Result<Server> {
        let shared = Shared {
            rm,
            cfg,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(FxHashMap::default()),
            #[cfg(test)]
            fault: Fault::None,
        };
        Server::spawn(listener, addr, shared)
    }

    fn spawn(listener: NoInherit<UnixListener>, addr: Addr, shared: Shared) -> io::Result<Server> {
        let shared = Arc::new(shared);
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("mmxa-host".into())
            .spawn(move || {
                boundary(&s.rm, || accept_loop(listener, &s));
            })?;
        Ok(Server {
            shared,
            acceptor: Some(acceptor),
            addr,
            pid: std::process::id(),
        })
    }
}

impl Server {
    /// Stops accepting, ends every guest connection and joins every thread. Idempotent.
    pub fn stop(&mut self) {
        if self.pid != std::process::id() || self.shared.stopping.swap(true, Ordering::AcqRel) {
            // Inherited through fork: the sockets and threads are the parent's.
            return;
        }
        // Wake the acceptor with a connection of our own. If even that fails (the socket file
        // was removed from under us), the acceptor is left blocked rather than waited for.
        let woke = UnixStream::connect(&self.addr.path).is_ok();
        if let Some(t) = self.acceptor.take().filter(|_| woke) {
            let _ = t.join();
        }
        // End every guest connection, and any lock wait its thread is in.
        let threads: Vec<JoinHandle<()>> = {
            let mut conns = self.shared.conns();
            conns
                .values_mut()
                .filter_map(|c| {
                    let _ = c.stream.shutdown(Shutdown::Both);
                    c.thread.take()
                })
                .collect()
        };
        self.shared.rm.interrupt_waits();
        for t in threads {
            let _ = t.join();
        }
        self.shared.conns().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: NoInherit<UnixListener>, shared: &Arc<Shared>) {
    let mut next = 0u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        #[cfg(test)]
        if shared.fault == Fault::Accept {
            panic!("a test's panic in the acceptor");
        }
        let Ok(stream) = stream.map(NoInherit::new) else {
            // Out of descriptors, or the like: give the process a moment instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let Ok(copy) = stream.try_clone().map(NoInherit::new) else {
            continue;
        };
        next += 1;
        let id = next;
        let mut conns = shared.conns();
        // Forget connections that ended (their threads have exited).
        conns.retain(|_, c| c.thread.as_ref().is_some_and(|t| !t.is_finished()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("mmxa-guest".into())
            .spawn(move || serve(stream, &s))
            .ok();
        conns.insert(
            id,
            Conn {
                stream: copy,
                thread,
            },
        );
    }
}

/// Serves one guest connection until it ends, then abandons its thread of control unless it
/// closed (or the server is stopping; after a panic it is abandoned in any case), and hangs up.
fn serve(stream: NoInherit<UnixStream>, shared: &Shared) {
    let toc = rm::new_toc();
    let mut closed = false;
    let panicked = boundary(&shared.rm, || converse(&stream, shared, toc, &mut closed));
    if panicked || !closed && !shared.stopping.load(Ordering::Acquire) {
        boundary(&shared.rm, || shared.rm.abandon_toc(toc));
    }
    // The server keeps a descriptor of the connection too: end it for the guest, which learns
    // of a panic here as of a dead host.
    let _ = stream.shutdown(Shutdown::Both);
}

/// Answers the guest's requests in order until the connection ends or the guest closes.
fn converse(stream: &UnixStream, shared: &Shared, toc: Toc, closed: &mut bool) {
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(stream);
    let mut greeted = false;
    while let Ok(Some(frame)) = wire::recv(&mut reader) {
        let reply = match handle(shared, toc, &frame, &mut greeted, closed) {
            Ok(reply) => reply,
            // A malformed request: the guest is not speaking our protocol; hang up.
            Err(_) => break,
        };
        if reply
            .send(&mut writer)
            .and_then(|()| writer.flush())
            .is_err()
            || *closed
        {
            break;
        }
    }
}

fn reply(r: Result<()>) -> Out {
    match r {
        Ok(()) => Out::ok(),
        Err(e) => Out::err(&e),
    }
}

fn start_mode(v: u8) -> io::Result<StartMode> {
    Ok(match v {
        0 => StartMode::New,
        1 => StartMode::Join,
        2 => StartMode::Resume,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "start mode")),
    })
}

fn end_mode(v: u8) -> io::Result<EndMode> {
    Ok(match v {
        0 => EndMode::Success,
        1 => EndMode::Fail,
        2 => EndMode::Suspend,
        3 => EndMode::SuspendMigrate,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "end mode")),
    })
}

/// Decodes and runs one request.
fn handle(
    shared: &Shared,
    toc: Toc,
    frame: &[u8],
    greeted: &mut bool,
    closed: &mut bool,
) -> io::Result<Out> {
    let rm = &*shared.rm;
    let mut r = In::new(frame);
    let code = r.u8()?;
    if code == op::HELLO {
        let version = r.u32()?;
        let role = if r.bool()? { Role::Admin } else { Role::Member };
        let theirs = (r.u8()?, r.u64()?, r.u64()?, r.u64()?);
        r.done()?;
        let answer = if version != wire::VERSION {
            Err(Error::Protocol(format!(
                "the process hosting the store runs another mmxa protocol version ({} here, \
                 {version} there)",
                wire::VERSION
            )))
        } else {
            super::check_fingerprint(&shared.cfg, theirs, role)
        };
        return Ok(
            match answer.and_then(|()| match rm.failed() {
                Some(why) => Err(Error::Failed(why)),
                None => Ok(()),
            }) {
                Ok(()) => {
                    *greeted = true;
                    Out::ok().u32(std::process::id())
                }
                Err(e) => Out::err(&e),
            },
        );
    }
    if !*greeted {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no handshake"));
    }
    #[cfg(test)]
    if shared.fault == Fault::Request(code) {
        panic!("a test's panic serving a request");
    }
    let reply = match code {
        op::START => {
            let xid = r.xid()?;
            let mode = start_mode(r.u8()?)?;
            r.done()?;
            reply(rm.start(toc, &xid, mode))
        }
        op::END => {
            let xid = r.xid()?;
            let mode = end_mode(r.u8()?)?;
            r.done()?;
            reply(rm.end(toc, &xid, mode))
        }
        op::PREPARE => {
            let xid = r.xid()?;
            r.done()?;
            match rm.prepare(toc, &xid) {
                Ok(vote) => Out::ok().bool(vote == Vote::ReadOnly),
                Err(e) => Out::err(&e),
            }
        }
        op::COMMIT => {
            let xid = r.xid()?;
            let one_phase = r.bool()?;
            r.done()?;
            reply(rm.commit(toc, &xid, one_phase))
        }
        op::ROLLBACK => {
            let xid = r.xid()?;
            r.done()?;
            reply(rm.rollback(toc, &xid))
        }
        op::FORGET => {
            let xid = r.xid()?;
            r.done()?;
            reply(rm.forget(toc, &xid))
        }
        op::RECOVER => {
            let scan = Scan {
                start: r.bool()?,
                end: r.bool()?,
            };
            let cap = r.u64()?;
            r.done()?;
            match rm.recover(toc, scan, usize::try_from(cap).unwrap_or(usize::MAX)) {
                Ok(xids) => xids
                    .iter()
                    .fold(Out::ok().u32(xids.len() as u32), |o, x| o.xid(x)),
                Err(e) => Out::err(&e),
            }
        }
        op::CLOSE => {
            r.done()?;
            let result = rm.close_toc(toc);
            *closed = result.is_ok();
            reply(result)
        }
        op::ACTIVE => {
            r.done()?;
            match rm.active_branch(toc) {
                Some(x) => Out::ok().bool(true).xid(&x),
                None => Out::ok().bool(false),
            }
        }
        op::PUT => {
            let key = r.bytes()?;
            let value = r.opt_bytes()?;
            r.done()?;
            match rm.put(toc, key, value) {
                Ok(existed) => Out::ok().bool(existed),
                Err(e) => Out::err(&e),
            }
        }
        op::GET | op::GET_FOR_UPDATE => {
            let key = r.bytes()?;
            r.done()?;
            let read = if code == op::GET {
                rm.get(toc, key)
            } else {
                rm.get_for_update(toc, key)
            };
            match read {
                Ok(v) => Out::ok().opt_bytes(v.as_deref()),
                Err(e) => Out::err(&e),
            }
        }
        op::SAVEPOINT => {
            r.done()?;
            match rm.savepoint(toc) {
                Ok(id) => Out::ok().u64(id),
                Err(e) => Out::err(&e),
            }
        }
        op::ROLLBACK_TO => {
            let id = r.u64()?;
            r.done()?;
            reply(rm.rollback_to_savepoint(toc, id))
        }
        op::HEURISTIC => {
            let xid = r.xid()?;
            let outcome = Outcome::from_log(r.i32()?)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "outcome"))?;
            let reason = r.string()?;
            r.done()?;
            reply(rm.heuristic(&xid, outcome, &reason))
        }
        op::STATUS => {
            r.done()?;
            let rep = rm.status();
            let head = Out::ok()
                .u32(rep.host_pid)
                .u64(rep.live_keys)
                .u64(rep.live_bytes)
                .u64(rep.segments)
                .u64(rep.log_bytes)
                .u64(rep.lock_waits)
                .u32(rep.branches.len() as u32);
            rep.branches.iter().fold(head, |o, b| {
                o.xid(&b.xid)
                    .bytes(b.state.as_bytes())
                    .u64(b.age_ms)
                    .u64(b.keys)
                    .bytes(b.reason.as_bytes())
            })
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "operation")),
    };
    Ok(reply)
}

/// Enforces the orphan policy of a hosted store: every so often, rolls back heuristically the
/// branches prepared longer than the configured age ([`Rm::expire_orphans`]). Stopped and
/// joined when dropped.
pub struct Janitor {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

impl Janitor {
    pub fn start(rm: Arc<Rm>, age: std::time::Duration) -> io::Result<Janitor> {
        // Often enough that a branch outlives its age by at most a tenth of it (or a second).
        let period = (age / 10).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        );
        Janitor::every(rm, period, move |rm| {
            rm.expire_orphans(age);
        })
    }

    /// Runs `sweep` every `period` while the store has not failed, until dropped.
    fn every(
        rm: Arc<Rm>,
        period: std::time::Duration,
        mut sweep: impl FnMut(&Rm) + Send + 'static,
    ) -> io::Result<Janitor> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mmxa-orphans".into())
            .spawn(move || {
                let body = || {
                    let (lock, cv) = &*s;
                    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    while !*stopped {
                        stopped = cv
                            .wait_timeout(stopped, period)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                        if !*stopped && rm.failed().is_none() {
                            drop(stopped);
                            sweep(&rm);
                            stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                        }
                    }
                };
                boundary(&rm, body);
            })?;
        Ok(Janitor {
            stop,
            thread: Some(thread),
            pid: std::process::id(),
        })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return;
        }
        *self.stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::guest::{JoinError, Link, Remote};
    use super::super::Store;
    use super::*;
    use crate::log::try_lock_store;
    use crate::xid::Xid;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A store in `dir` hosted by a server whose threads panic at `fault`.
    fn host(dir: &Path, fault: Fault) -> (Arc<Rm>, Server, Config, Addr) {
        let mut cfg = Config::new(dir);
        cfg.segment_size = 4 << 20;
        let lock = try_lock_store(dir).unwrap().expect("the store's lock");
        let addr = Addr::new(&cfg).unwrap();
        let listener = bind(&addr.path).unwrap();
        let rm = Arc::new(Rm::open_locked(cfg.clone(), lock).unwrap());
        let shared = Shared {
            rm: rm.clone(),
            cfg: cfg.clone(),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(FxHashMap::default()),
            fault,
        };
        let server = Server::spawn(listener, addr.clone(), shared).unwrap();
        (rm, server, cfg, addr)
    }

    fn join(cfg: &Config, addr: &Addr) -> Result<Remote> {
        let stream = UnixStream::connect(&addr.path).map_err(|e| Error::Io(e.to_string()))?;
        match Link::join(stream, cfg, addr.clone(), Role::Member) {
            Ok((_, remote)) => Ok(remote),
            Err(JoinError::Refused(e)) => Err(e),
            Err(JoinError::Lost(e)) => Err(Error::Io(e.to_string())),
        }
    }

    /// A panic serving a guest's request ends that connection's thread without unwinding out
    /// of it, abandons the guest's thread of control (its active branch is rolled back and its
    /// locks released) and fails the store; the guest sees the connection end.
    #[test]
    fn a_panic_serving_a_guest_abandons_its_work_and_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (rm, mut server, cfg, addr) = host(dir.path(), Fault::Request(op::SAVEPOINT));
        let guest = join(&cfg, &addr).unwrap();
        let x = Xid::from_parts(1, b"g", b"b").unwrap();
        guest.start(0, &x, StartMode::New).unwrap();
        guest.put(0, b"k", Some(b"v")).unwrap();
        assert_eq!(rm.status().branches.len(), 1);
        let asked = std::thread::spawn(move || guest.savepoint(0));
        let thread = server
            .shared
            .conns()
            .values_mut()
            .find_map(|c| c.thread.take())
            .expect("the connection's thread");
        assert!(thread.join().is_ok(), "the panic stayed in the thread");
        assert!(rm.failed().is_some(), "the store failed");
        assert!(
            rm.status().branches.is_empty(),
            "the guest's branch was rolled back"
        );
        assert!(matches!(asked.join().unwrap(), Err(Error::Failed(_))));
        server.stop();
    }

    /// A panic in the acceptor ends it without unwinding out of it and fails the store.
    #[test]
    fn a_panic_in_the_acceptor_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (rm, mut server, cfg, addr) = host(dir.path(), Fault::Accept);
        assert!(join(&cfg, &addr).is_err());
        let acceptor = server.acceptor.take().expect("the acceptor");
        assert!(acceptor.join().is_ok(), "the panic stayed in the thread");
        assert!(rm.failed().is_some(), "the store failed");
        server.stop();
    }

    /// A panic in the orphan policy's thread ends it without unwinding out of it and fails the
    /// store.
    #[test]
    fn a_panic_in_the_janitor_fails_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (rm, server, _, _) = host(dir.path(), Fault::None);
        let (swept, sweeps) = mpsc::channel();
        let mut janitor = Janitor::every(rm.clone(), Duration::from_millis(1), move |_| {
            let _ = swept.send(());
            panic!("a test's panic in the orphan policy");
        })
        .unwrap();
        // Liveness bound only.
        sweeps.recv_timeout(Duration::from_secs(60)).unwrap();
        let thread = janitor.thread.take().expect("the janitor's thread");
        assert!(thread.join().is_ok(), "the panic stayed in the thread");
        assert!(rm.failed().is_some(), "the store failed");
        drop(server);
    }
}
