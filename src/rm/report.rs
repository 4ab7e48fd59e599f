//! What operators see of a store (`mmxa status`).
//!
//! Owns: [`Report`] and [`BranchReport`], a snapshot taken under the state lock.

use super::branch::Phase;
use super::Rm;
use crate::log::Media;
use crate::xid::Xid;

/// A snapshot of a store, for operators (`mmxa status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The process hosting the store.
    pub host_pid: u32,
    /// Committed keys, and the log bytes their records take.
    pub live_keys: u64,
    pub live_bytes: u64,
    /// Log segment files and their total size.
    pub segments: u64,
    pub log_bytes: u64,
    /// Lock requests waiting now.
    pub lock_waits: u64,
    /// Every branch the store knows.
    pub branches: Vec<BranchReport>,
}

/// One branch in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchReport {
    pub xid: Xid,
    /// `active`, `idle`, `suspended`, `rollback-only`, `prepared`, `heuristic-commit`,
    /// `heuristic-rollback`, or `busy` (a completion call is in progress).
    pub state: String,
    /// Milliseconds since the branch began, was prepared or completed heuristically (or since
    /// the store was opened, for a branch recovered from the log).
    pub age_ms: u64,
    /// Keys the branch wrote (none left for a completed branch).
    pub keys: u64,
    /// The operator's reason, for a heuristic outcome.
    pub reason: String,
}

impl<M: Media> Rm<M> {
    /// A snapshot for operators.
    pub fn status(&self) -> Report {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut branches: Vec<BranchReport> = st
            .branches
            .iter()
            .map(|(xid, b)| {
                let state = match b.phase {
                    _ if b.busy => "busy",
                    Phase::Prepared => "prepared",
                    Phase::Heuristic(outcome) => outcome.name(),
                    Phase::Working if b.doomed().is_some() => "rollback-only",
                    Phase::Working if !b.active.is_empty() => "active",
                    Phase::Working if b.associated() => "suspended",
                    Phase::Working => "idle",
                };
                BranchReport {
                    xid: *xid,
                    state: state.into(),
                    age_ms: b.since.elapsed().as_millis() as u64,
                    keys: b.writes.len() as u64,
                    reason: b.reason.clone(),
                }
            })
            .collect();
        drop(st);
        branches.sort_by(|a, b| {
            (a.xid.format_id(), a.xid.data()).cmp(&(b.xid.format_id(), b.xid.data()))
        });
        let (live_keys, live_bytes) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            (index.map.len() as u64, index.bytes)
        };
        let (segments, log_bytes) = self.log.disk_usage();
        Report {
            host_pid: std::process::id(),
            live_keys,
            live_bytes,
            segments: segments as u64,
            log_bytes,
            lock_waits: self.locks.waiting() as u64,
            branches,
        }
    }
}
