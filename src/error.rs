//! The one error type of the core, and its mapping to XA and `MMXA_*` codes.
//!
//! Owns: what can go wrong, said in the core's terms ([`Error`]), the answers of a successful
//! XA call that C sees as codes ([`Vote`]), and the functions that turn them into C return codes
//! ([`Error::xa_code`] and [`XaOk::xa_code`] for the XA entry points, [`Error::mmxa_code`] for
//! the data API). Invariant: no module of the core chooses a C code; only the C boundary calls
//! the mapping functions.

use crate::status::*;
use crate::xa::*;
use std::fmt;

/// Why a branch was rolled back, as the XA specification names the reasons (`XA_RB*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rb {
    /// Rolled back for an unspecified reason (`XA_RBROLLBACK`), e.g. `xa_end(TMFAIL)`.
    Rollback,
    /// A deadlock was detected (`XA_RBDEADLOCK`).
    Deadlock,
    /// A lock wait timed out (`XA_RBTIMEOUT`).
    Timeout,
    /// Any other reason (`XA_RBOTHER`), e.g. a failed write, or a rollback by another thread.
    Other,
}

/// A heuristic outcome of a prepared branch (`XA_HEUR*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed heuristically (`XA_HEURCOM`).
    Commit,
    /// Rolled back heuristically (`XA_HEURRB`).
    Rollback,
    /// Partly committed, partly rolled back (`XA_HEURMIX`).
    Mixed,
    /// Perhaps completed heuristically (`XA_HEURHAZ`).
    Hazard,
}

impl Outcome {
    /// The outcome the log records as `code` (the log stores the XA value).
    pub fn from_log(code: i32) -> Option<Outcome> {
        Some(match code {
            XA_HEURCOM => Outcome::Commit,
            XA_HEURRB => Outcome::Rollback,
            XA_HEURMIX => Outcome::Mixed,
            XA_HEURHAZ => Outcome::Hazard,
            _ => return None,
        })
    }

    /// The value the log records for this outcome.
    pub fn to_log(self) -> i32 {
        match self {
            Outcome::Commit => XA_HEURCOM,
            Outcome::Rollback => XA_HEURRB,
            Outcome::Mixed => XA_HEURMIX,
            Outcome::Hazard => XA_HEURHAZ,
        }
    }

    /// How operators read it (`mmxa status`, the audit trail).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Commit => "heuristic-commit",
            Outcome::Rollback => "heuristic-rollback",
            Outcome::Mixed => "heuristic-mixed",
            Outcome::Hazard => "heuristic-hazard",
        }
    }
}

/// A branch's vote at `xa_prepare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// Prepared: the branch will commit if told to (`XA_OK`).
    Prepared,
    /// The branch changed nothing and is complete (`XA_RDONLY`).
    ReadOnly,
}

/// A successful XA call's answer, as its code.
pub trait XaOk {
    /// The code the entry point returns.
    fn xa_code(&self) -> i32;
}

impl XaOk for () {
    fn xa_code(&self) -> i32 {
        XA_OK
    }
}

impl XaOk for Vote {
    fn xa_code(&self) -> i32 {
        match self {
            Vote::Prepared => XA_OK,
            Vote::ReadOnly => XA_RDONLY,
        }
    }
}

/// Everything that can go wrong in the core, with a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An asynchronous call was asked for (mmxa has no asynchronous mode).
    Async(String),
    /// A malformed argument: a flag outside the entry point's set, a bad open string.
    Invalid(String),
    /// A call the state tables do not allow now (wrong association or branch state).
    Protocol(String),
    /// The XID names no branch this RM knows.
    UnknownXid(String),
    /// The XID already names a branch.
    DuplicateXid(String),
    /// The thread is doing work outside any global transaction.
    Outside(String),
    /// The rmid is not open in the calling thread.
    NotOpen(String),
    /// A key or value larger than the maximum.
    TooBig(String),
    /// The branch is rolled back, or marked rollback-only.
    RolledBack(Rb, String),
    /// A lock wait timed out just now; the branch is rollback-only from now on.
    LockTimeout(String),
    /// Waiting for a lock would have deadlocked; the branch is rollback-only from now on.
    Deadlock(String),
    /// The branch was completed heuristically.
    Heuristic(Outcome, String),
    /// The call could not complete now but may succeed later (the branch is unchanged).
    Retry(String),
    /// The store failed (a failed sync, a panic, a lost peer) and must be reopened.
    Failed(String),
    /// An I/O error or a damaged store; the store itself is still usable.
    Io(String),
    /// No disk space for the log.
    NoSpace(String),
    /// The monitor's `ax_reg`/`ax_unreg` failed, or named a branch that cannot be used.
    Register(String),
    /// A bug in mmxa.
    Internal(String),
}

impl Error {
    /// The message for humans.
    pub fn message(&self) -> &str {
        match self {
            Error::Async(m)
            | Error::Invalid(m)
            | Error::Protocol(m)
            | Error::UnknownXid(m)
            | Error::DuplicateXid(m)
            | Error::Outside(m)
            | Error::NotOpen(m)
            | Error::TooBig(m)
            | Error::RolledBack(_, m)
            | Error::LockTimeout(m)
            | Error::Deadlock(m)
            | Error::Heuristic(_, m)
            | Error::Retry(m)
            | Error::Failed(m)
            | Error::Io(m)
            | Error::NoSpace(m)
            | Error::Register(m)
            | Error::Internal(m) => m,
        }
    }

    /// Whether the branch the call worked on can no longer commit because of this error.
    pub fn rolled_back(&self) -> bool {
        matches!(
            self,
            Error::RolledBack(..) | Error::LockTimeout(_) | Error::Deadlock(_)
        )
    }

    /// The code an XA entry point returns for this error.
    pub fn xa_code(&self) -> i32 {
        match self {
            Error::Async(_) => XAER_ASYNC,
            Error::Invalid(_) | Error::TooBig(_) => XAER_INVAL,
            Error::Protocol(_) | Error::NotOpen(_) => XAER_PROTO,
            Error::UnknownXid(_) => XAER_NOTA,
            Error::DuplicateXid(_) => XAER_DUPID,
            Error::Outside(_) => XAER_OUTSIDE,
            Error::RolledBack(rb, _) => match rb {
                Rb::Rollback => XA_RBROLLBACK,
                Rb::Deadlock => XA_RBDEADLOCK,
                Rb::Timeout => XA_RBTIMEOUT,
                Rb::Other => XA_RBOTHER,
            },
            Error::LockTimeout(_) => XA_RBTIMEOUT,
            Error::Deadlock(_) => XA_RBDEADLOCK,
            Error::Heuristic(outcome, _) => outcome.to_log(),
            Error::Retry(_) => XA_RETRY,
            Error::Failed(_) => XAER_RMFAIL,
            Error::Io(_) | Error::NoSpace(_) | Error::Register(_) | Error::Internal(_) => {
                XAER_RMERR
            }
        }
    }

    /// The code a data call (`mmxa_*`) returns for this error.
    pub fn mmxa_code(&self) -> i32 {
        match self {
            Error::Protocol(_) => MMXA_EPROTO,
            Error::Async(_)
            | Error::Invalid(_)
            | Error::UnknownXid(_)
            | Error::DuplicateXid(_)
            | Error::Outside(_) => MMXA_EINVAL,
            Error::NotOpen(_) => MMXA_ENOTOPEN,
            Error::TooBig(_) => MMXA_ETOOBIG,
            Error::RolledBack(..) | Error::Heuristic(..) => MMXA_EROLLBACK,
            Error::LockTimeout(_) => MMXA_ELOCKTIMEOUT,
            Error::Deadlock(_) => MMXA_EDEADLOCK,
            Error::Retry(_) | Error::Failed(_) | Error::Io(_) => MMXA_EIO,
            Error::NoSpace(_) => MMXA_ENOSPC,
            Error::Register(_) => MMXA_EREGISTER,
            Error::Internal(_) => MMXA_EINTERNAL,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// A core result.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rollback_reason_is_an_xa_rollback_code() {
        for rb in [Rb::Rollback, Rb::Deadlock, Rb::Timeout, Rb::Other] {
            let c = Error::RolledBack(rb, String::new()).xa_code();
            assert!((XA_RBBASE..=XA_RBEND).contains(&c), "{rb:?} -> {c}");
        }
        assert_eq!(Error::LockTimeout(String::new()).xa_code(), XA_RBTIMEOUT);
        assert_eq!(Error::Deadlock(String::new()).xa_code(), XA_RBDEADLOCK);
    }

    #[test]
    fn outcomes_round_trip_through_the_log_value() {
        for o in [
            Outcome::Commit,
            Outcome::Rollback,
            Outcome::Mixed,
            Outcome::Hazard,
        ] {
            assert_eq!(Outcome::from_log(o.to_log()), Some(o));
            assert_eq!(Error::Heuristic(o, String::new()).xa_code(), o.to_log());
        }
        assert_eq!(Outcome::from_log(XA_OK), None);
    }
}
