//! The guest side: a thread of control of this process using a store another process hosts.
//!
//! Owns: one connection per thread of control and the translation of each call into a request
//! and its reply. Invariants: a call is one request and one reply, in order, on the calling
//! thread's own connection; any failure to exchange them breaks the connection for good
//! (`XAER_RMFAIL`, `MMXA_EIO`): its outcome is unknown, exactly as after an RM crash, and the
//! thread must `xa_open` again, which elects a new host if this one is gone.

use super::wire::{self, op, In, Out, Status};
use super::{fingerprint, Addr, Role, Store};
use crate::config::Config;
use crate::error::{Error, Outcome, Result};
use crate::inherit::NoInherit;
use crate::rm::flags::{EndMode, Scan, StartMode};
use crate::rm::{BranchReport, Report, Rm, Toc, Vote};
use crate::xid::Xid;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// This process's way to the host of one store.
pub struct Link {
    addr: Addr,
    cfg: Config,
    role: Role,
    host_pid: u32,
    lost: AtomicBool,
}

/// Why joining a host failed.
pub enum JoinError {
    /// The host answered no: the error for `xa_open`.
    Refused(Error),
    /// The host went away meanwhile.
    Lost(io::Error),
}

/// Sends the handshake on a new connection; the host's pid on success.
fn hello(stream: &mut UnixStream, cfg: &Config, role: Role) -> std::result::Result<u32, JoinError> {
    let (sync, timeout, segment, orphan) = fingerprint(cfg);
    Out::request(op::HELLO)
        .u32(wire::VERSION)
        .bool(role == Role::Admin)
        .u8(sync)
        .u64(timeout)
        .u64(segment)
        .u64(orphan)
        .send(stream)
        .map_err(JoinError::Lost)?;
    let frame = wire::recv(stream)
        .and_then(|f| f.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "host hung up")))
        .map_err(JoinError::Lost)?;
    let mut r = In::new(&frame);
    match wire::status(&mut r).map_err(JoinError::Lost)? {
        Status::Ok => r.u32().map_err(JoinError::Lost),
        Status::Err(e) => Err(JoinError::Refused(e)),
    }
}

impl Link {
    /// Joins the host listening at `addr` over `stream`, the calling thread's connection.
    pub fn join(
        mut stream: UnixStream,
        cfg: &Config,
        addr: Addr,
        role: Role,
    ) -> std::result::Result<(Arc<Link>, Remote), JoinError> {
        let host_pid = hello(&mut stream, cfg, role)?;
        let link = Arc::new(Link {
            addr,
            cfg: cfg.clone(),
            role,
            host_pid,
            lost: AtomicBool::new(false),
        });
        let remote = Remote::new(link.clone(), stream);
        Ok((link, remote))
    }

    /// Whether the host was found gone (or broke the protocol).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn gone(&self, why: impl std::fmt::Display) -> String {
        self.lost.store(true, Ordering::Release);
        format!(
            "lost the connection to process {} hosting the store {}: {why}; xa_open again",
            self.host_pid,
            self.cfg.dir.display()
        )
    }

    /// A connection for one more thread of control.
    pub fn connect(self: &Arc<Self>) -> Result<Remote> {
        let mut stream =
            UnixStream::connect(&self.addr.path).map_err(|e| Error::Io(self.gone(e)))?;
        match hello(&mut stream, &self.cfg, self.role) {
            Ok(_) => Ok(Remote::new(self.clone(), stream)),
            Err(JoinError::Refused(e)) => Err(e),
            Err(JoinError::Lost(e)) => Err(Error::Io(self.gone(e))),
        }
    }
}

/// One thread of control's connection to the host.
pub struct Remote {
    link: Arc<Link>,
    stream: Mutex<NoInherit<UnixStream>>,
    broken: Mutex<Option<String>>,
}

impl Remote {
    fn new(link: Arc<Link>, stream: UnixStream) -> Remote {
        Remote {
            link,
            stream: Mutex::new(NoInherit::new(stream)),
            broken: Mutex::new(None),
        }
    }

    fn broken(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` and returns the reply frame; any failure breaks the connection.
    fn call(&self, req: Out) -> std::result::Result<Vec<u8>, String> {
        if let Some(why) = self.broken().clone() {
            return Err(why);
        }
        let guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let mut stream: &UnixStream = &guard;
        let result = req
            .send(&mut stream)
            .and_then(|()| stream.flush())
            .and_then(|()| wire::recv(&mut stream))
            .and_then(|f| {
                f.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "it hung up"))
            });
        result.map_err(|e| {
            let why = self.link.gone(e);
            *self.broken() = Some(why.clone());
            why
        })
    }

    /// A malformed reply: the connection cannot be trusted any more.
    fn garbled(&self, e: io::Error) -> String {
        let why = self.link.gone(e);
        *self.broken() = Some(why.clone());
        why
    }

    /// Runs a request answered with a status and, on success, fields read by `read`.
    /// Runs a request answered with a status and, on success, fields read by `read`. A lost or
    /// garbled connection fails the handle.
    fn rpc<T>(&self, req: Out, read: impl FnOnce(&mut In<'_>) -> io::Result<T>) -> Result<T> {
        let frame = self.call(req).map_err(Error::Failed)?;
        let mut r = In::new(&frame);
        let decoded = wire::status(&mut r).and_then(|s| match s {
            Status::Ok => read(&mut r).and_then(|v| r.done().map(|()| Ok(v))),
            Status::Err(e) => Ok(Err(e)),
        });
        decoded.map_err(|e| Error::Failed(self.garbled(e)))?
    }

    fn unit(&self, req: Out) -> Result<()> {
        self.rpc(req, |_| Ok(()))
    }
}

fn start_code(mode: StartMode) -> u8 {
    match mode {
        StartMode::New => 0,
        StartMode::Join => 1,
        StartMode::Resume => 2,
    }
}

fn end_code(mode: EndMode) -> u8 {
    match mode {
        EndMode::Success => 0,
        EndMode::Fail => 1,
        EndMode::Suspend => 2,
        EndMode::SuspendMigrate => 3,
    }
}

impl Store for Remote {
    fn failed(&self) -> Option<String> {
        self.broken().clone()
    }
    fn fail(&self) {
        let mut b = self.broken();
        if b.is_none() {
            *b = Some("an internal error (panic) occurred; xa_open again".into());
        }
    }
    fn start(&self, _toc: Toc, xid: &Xid, mode: StartMode) -> Result<()> {
        self.unit(Out::request(op::START).xid(xid).u8(start_code(mode)))
    }
    fn end(&self, _toc: Toc, xid: &Xid, mode: EndMode) -> Result<()> {
        self.unit(Out::request(op::END).xid(xid).u8(end_code(mode)))
    }
    fn prepare(&self, _toc: Toc, xid: &Xid) -> Result<Vote> {
        self.rpc(Out::request(op::PREPARE).xid(xid), |r| {
            Ok(if r.bool()? {
                Vote::ReadOnly
            } else {
                Vote::Prepared
            })
        })
    }
    fn commit(&self, _toc: Toc, xid: &Xid, one_phase: bool) -> Result<()> {
        self.unit(Out::request(op::COMMIT).xid(xid).bool(one_phase))
    }
    fn rollback(&self, _toc: Toc, xid: &Xid) -> Result<()> {
        self.unit(Out::request(op::ROLLBACK).xid(xid))
    }
    fn forget(&self, _toc: Toc, xid: &Xid) -> Result<()> {
        self.unit(Out::request(op::FORGET).xid(xid))
    }
    fn recover(&self, _toc: Toc, scan: Scan, cap: usize) -> Result<Vec<Xid>> {
        let req = Out::request(op::RECOVER)
            .bool(scan.start)
            .bool(scan.end)
            .u64(cap as u64);
        self.rpc(req, |r| {
            let n = r.u32()? as usize;
            if n > cap {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too many XIDs"));
            }
            (0..n).map(|_| r.xid()).collect()
        })
    }
    fn close_toc(&self, _toc: Toc) -> Result<()> {
        // A host that is gone holds nothing of ours any more: closing succeeds.
        if self.broken().is_some() {
            return Ok(());
        }
        match self.unit(Out::request(op::CLOSE)) {
            Err(Error::Failed(_)) => Ok(()),
            r => r,
        }
    }
    fn active_branch(&self, _toc: Toc) -> Result<Option<Xid>> {
        self.rpc(Out::request(op::ACTIVE), |r| {
            if r.bool()? {
                r.xid().map(Some)
            } else {
                Ok(None)
            }
        })
    }
    fn put(&self, _toc: Toc, key: &[u8], value: Option<&[u8]>) -> Result<bool> {
        // Checked here too, so an oversized value never reaches the wire.
        <Rm>::check_kv(key, value)?;
        self.rpc(Out::request(op::PUT).bytes(key).opt_bytes(value), |r| {
            r.bool()
        })
    }
    fn get(&self, _toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        <Rm>::check_kv(key, None)?;
        self.rpc(Out::request(op::GET).bytes(key), |r| {
            r.opt_bytes().map(|v| v.map(<[u8]>::to_vec))
        })
    }
    fn get_for_update(&self, _toc: Toc, key: &[u8]) -> Result<Option<Vec<u8>>> {
        <Rm>::check_kv(key, None)?;
        self.rpc(Out::request(op::GET_FOR_UPDATE).bytes(key), |r| {
            r.opt_bytes().map(|v| v.map(<[u8]>::to_vec))
        })
    }
    fn savepoint(&self, _toc: Toc) -> Result<u64> {
        self.rpc(Out::request(op::SAVEPOINT), |r| r.u64())
    }
    fn rollback_to_savepoint(&self, _toc: Toc, id: u64) -> Result<()> {
        self.unit(Out::request(op::ROLLBACK_TO).u64(id))
    }
    fn heuristic(&self, xid: &Xid, outcome: Outcome, reason: &str) -> Result<()> {
        let req = Out::request(op::HEURISTIC)
            .xid(xid)
            .i32(outcome.to_log())
            .bytes(reason.as_bytes());
        self.unit(req)
    }
    fn status(&self) -> Result<Report> {
        self.rpc(Out::request(op::STATUS), |r| {
            let mut rep = Report {
                host_pid: r.u32()?,
                live_keys: r.u64()?,
                live_bytes: r.u64()?,
                segments: r.u64()?,
                log_bytes: r.u64()?,
                lock_waits: r.u64()?,
                branches: Vec::new(),
            };
            for _ in 0..r.u32()? {
                rep.branches.push(BranchReport {
                    xid: r.xid()?,
                    state: r.string()?,
                    age_ms: r.u64()?,
                    keys: r.u64()?,
                    reason: r.string()?,
                });
            }
            Ok(rep)
        })
    }
}
