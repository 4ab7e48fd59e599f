//! What operators see of a store (`mmxa status`).
//!
//! Owns: [`Report`], [`BranchReport`] and [`LocalReport`], a snapshot of the shared state taken
//! in one section.

use super::branch;
use super::layout::*;
use super::Rm;
use crate::log::Media;
use crate::shm::{Error as ShmError, Off, Txn};
use crate::xid::Xid;

/// A snapshot of a store, for operators (`mmxa status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The process that took the snapshot.
    pub host_pid: u32,
    /// Processes with the store open (their slots), the snapshot's aside.
    pub peers: Vec<u32>,
    /// Committed keys, and the log bytes their records take.
    pub live_keys: u64,
    pub live_bytes: u64,
    /// Log segment files and their total size.
    pub segments: u64,
    pub log_bytes: u64,
    /// Lock requests waiting now.
    pub lock_waits: u64,
    /// When the shared state was last rebuilt from the log (ns since the Unix epoch): what the
    /// age of a branch whose time the log did not record counts from.
    pub built_ns: u64,
    /// Every branch the store knows.
    pub branches: Vec<BranchReport>,
    /// Open local transactions (`mmxa_txn_begin`): no XID, but they hold locks.
    pub locals: Vec<LocalReport>,
}

/// One open local transaction in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReport {
    /// Its tag (what its log records name).
    pub tag: u64,
    /// The process whose thread has it open, if that process still holds its slot.
    pub pid: Option<u32>,
    /// `local`, `rollback-only`, or `busy` (its commit is in progress).
    pub state: String,
    /// When it began (wall clock, ns since the Unix epoch).
    pub since_ns: u64,
    /// Milliseconds since then.
    pub age_ms: u64,
    /// Keys it wrote.
    pub keys: u64,
}

/// One branch in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchReport {
    pub xid: Xid,
    /// `active`, `idle`, `suspended`, `rollback-only`, `prepared`, `heuristic-commit`,
    /// `heuristic-rollback`, or `busy` (a completion call is in progress).
    pub state: String,
    /// When the branch began, was prepared or was completed heuristically (wall clock, ns since
    /// the Unix epoch), as `age_from` says; `None` if the log recorded no time for it (a
    /// version-1 log): its age then counts from the rebuild.
    pub since_ns: Option<u64>,
    /// What the age counts from: `start`, `prepare`, `decision` (heuristic), or `rebuild` (the
    /// log recorded no time).
    pub age_from: &'static str,
    /// Milliseconds since then.
    pub age_ms: u64,
    /// Keys the branch wrote (none left for a completed branch).
    pub keys: u64,
    /// The operator's reason, for a heuristic outcome.
    pub reason: String,
}

impl<M: Media> Rm<M> {
    /// A snapshot for operators.
    pub fn status(&self) -> Report {
        let now = now_ns();
        let snap = self.shared(|t| {
            let mut branches = Vec::new();
            let mut locals = Vec::new();
            for b in BRANCHES.all(t)? {
                let kind = t.get_u8(b + B_KIND)?;
                if kind == KIND_TXN {
                    locals.push(local_report(t, b, now)?);
                    continue;
                }
                if kind != KIND_XA {
                    continue;
                }
                let busy = branch::busy(t, b)? != Busy::None;
                let state = match branch::phase(t, b)? {
                    _ if busy => "busy".to_string(),
                    PHASE_PREPARED => "prepared".to_string(),
                    PHASE_HEURISTIC => outcome_from_u8(t.get_u8(b + B_OUTCOME)?)?
                        .name()
                        .to_string(),
                    _ if branch::doomed(t, b)?.is_some() => "rollback-only".to_string(),
                    _ if branch::active_count(t, b)? > 0 => "active".to_string(),
                    _ if branch::associated(t, b)? => "suspended".to_string(),
                    _ => "idle".to_string(),
                };
                let phase = branch::phase(t, b)?;
                let since_ns = since(t, b)?;
                let age_from = match phase {
                    _ if since_ns.is_none() => "rebuild",
                    PHASE_PREPARED => "prepare",
                    PHASE_HEURISTIC => "decision",
                    _ => "start",
                };
                branches.push(BranchReport {
                    xid: read_xid(t, b)?,
                    state,
                    since_ns,
                    age_from,
                    age_ms: now.saturating_sub(t.get_u64(b + B_SINCE)?) / 1_000_000,
                    keys: t.get_u64(b + B_WRITES)?,
                    reason: if phase == PHASE_HEURISTIC {
                        text(t, b)?
                    } else {
                        String::new()
                    },
                });
            }
            let mut peers = Vec::new();
            for i in 0..crate::shm::SLOTS as u32 {
                let (pid, live, _) = crate::shm::slot_state(t, i)?;
                if live && i + 1 != self.slot {
                    peers.push(pid);
                }
            }
            Ok((
                (branches, locals),
                t.get_u64(R_LIVE_KEYS)?,
                t.get_u64(R_LIVE_BYTES)?,
                t.get_u64(R_WAITS)?,
                peers,
                t.get_u64(R_BUILT_NS)?,
            ))
        });
        let ((mut branches, mut locals), live_keys, live_bytes, lock_waits, peers, built_ns) =
            snap.unwrap_or_default();
        branches.sort_by(|a, b| {
            (a.xid.format_id(), a.xid.data()).cmp(&(b.xid.format_id(), b.xid.data()))
        });
        locals.sort_by_key(|l| l.tag);
        let (segments, log_bytes) = self.log.disk_usage();
        Report {
            host_pid: std::process::id(),
            peers,
            live_keys,
            live_bytes,
            segments: segments as u64,
            log_bytes,
            lock_waits,
            built_ns,
            branches,
            locals,
        }
    }
}

/// The report of the local transaction `b`. Its owner is the process of the thread associated
/// with it (a local transaction has exactly one).
fn local_report(t: &Txn<'_>, b: Off, now: u64) -> Result<LocalReport, ShmError> {
    let mut pid = None;
    if let Some(&a) = assoc(b).items(t)?.first() {
        let slot = branch::toc_slot(a);
        if slot > 0 {
            let (p, live, _) = crate::shm::slot_state(t, slot - 1)?;
            pid = live.then_some(p);
        }
    }
    let state = if branch::busy(t, b)? != Busy::None {
        "busy"
    } else if branch::doomed(t, b)?.is_some() {
        "rollback-only"
    } else {
        "local"
    };
    let since_ns = t.get_u64(b + B_SINCE)?;
    Ok(LocalReport {
        tag: branch::tag(t, b)?,
        pid,
        state: state.to_string(),
        since_ns,
        age_ms: now.saturating_sub(since_ns) / 1_000_000,
        keys: t.get_u64(b + B_WRITES)?,
    })
}
