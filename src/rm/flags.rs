//! Which flags each XA entry point accepts, and what they mean once checked.
//!
//! Owns: the flag tables of the XA reference §2.2 in one place. Order of checks, the same for
//! every entry point: `TMASYNC` (`XAER_ASYNC`: mmxa has no asynchronous mode), then any bit
//! outside the entry point's set or a forbidden combination (`XAER_INVAL`). All 64 bits of the
//! C `long` are checked.

use crate::error::Error;
use crate::xa::*;
use std::os::raw::c_long;

/// An XA entry point, for flag checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `xa_open`
    Open,
    /// `xa_close`
    Close,
    /// `xa_start`
    Start,
    /// `xa_end`
    End,
    /// `xa_rollback`
    Rollback,
    /// `xa_prepare`
    Prepare,
    /// `xa_commit`
    Commit,
    /// `xa_recover`
    Recover,
    /// `xa_forget`
    Forget,
    /// `xa_complete`
    Complete,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Open => "xa_open",
            Entry::Close => "xa_close",
            Entry::Start => "xa_start",
            Entry::End => "xa_end",
            Entry::Rollback => "xa_rollback",
            Entry::Prepare => "xa_prepare",
            Entry::Commit => "xa_commit",
            Entry::Recover => "xa_recover",
            Entry::Forget => "xa_forget",
            Entry::Complete => "xa_complete",
        }
    }

    /// The flags this entry point accepts besides `TMASYNC`.
    fn allowed(self) -> c_long {
        match self {
            Entry::Open | Entry::Close | Entry::Rollback | Entry::Prepare | Entry::Forget => 0,
            Entry::Start => TMJOIN | TMRESUME | TMNOWAIT,
            Entry::End => TMSUSPEND | TMSUCCESS | TMFAIL | TMMIGRATE,
            Entry::Commit => TMONEPHASE | TMNOWAIT,
            Entry::Recover => TMSTARTRSCAN | TMENDRSCAN,
            Entry::Complete => TMMULTIPLE | TMNOWAIT,
        }
    }
}

/// Checks `flags` for `entry`: `XAER_ASYNC` for `TMASYNC` where the entry could take it,
/// `XAER_INVAL` for any other unknown bit.
pub fn check(entry: Entry, flags: c_long) -> Result<(), Error> {
    let async_ok = !matches!(entry, Entry::Recover | Entry::Complete);
    if async_ok && flags & TMASYNC != 0 {
        return Err(Error::Async(format!(
            "{}: TMASYNC is not supported (no TMUSEASYNC)",
            entry.name()
        )));
    }
    let extra = flags & !entry.allowed();
    if extra != 0 {
        return Err(Error::Invalid(format!(
            "{}: invalid flags {extra:#x}",
            entry.name()
        )));
    }
    Ok(())
}

/// What `xa_start` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// `TMNOFLAGS`: a new branch.
    New,
    /// `TMJOIN`: join a known branch.
    Join,
    /// `TMRESUME`: resume a suspended association.
    Resume,
}

/// Checks `xa_start` flags. `TMNOWAIT` is accepted and ignored: mmxa never blocks in `xa_start`.
pub fn start(flags: c_long) -> Result<StartMode, Error> {
    check(Entry::Start, flags)?;
    match (flags & TMJOIN != 0, flags & TMRESUME != 0) {
        (true, true) => Err(Error::Invalid(
            "xa_start: TMJOIN and TMRESUME together".into(),
        )),
        (true, false) => Ok(StartMode::Join),
        (false, true) => Ok(StartMode::Resume),
        (false, false) => Ok(StartMode::New),
    }
}

/// What `xa_end` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndMode {
    /// `TMSUCCESS`
    Success,
    /// `TMFAIL`
    Fail,
    /// `TMSUSPEND`: resumable in this thread of control only.
    Suspend,
    /// `TMSUSPEND|TMMIGRATE`: resumable in any thread of control.
    SuspendMigrate,
}

/// Checks `xa_end` flags: exactly one of `TMSUSPEND`, `TMSUCCESS`, `TMFAIL`; `TMMIGRATE` only
/// with `TMSUSPEND`.
pub fn end(flags: c_long) -> Result<EndMode, Error> {
    check(Entry::End, flags)?;
    let kinds = [TMSUSPEND, TMSUCCESS, TMFAIL]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count();
    if kinds != 1 {
        return Err(Error::Invalid(
            "xa_end: exactly one of TMSUSPEND, TMSUCCESS, TMFAIL is required".into(),
        ));
    }
    let migrate = flags & TMMIGRATE != 0;
    if flags & TMSUCCESS != 0 {
        Ok(EndMode::Success)
    } else if flags & TMFAIL != 0 {
        Ok(EndMode::Fail)
    } else if migrate {
        Ok(EndMode::SuspendMigrate)
    } else {
        Ok(EndMode::Suspend)
    }
    .and_then(|m| {
        if migrate && m != EndMode::SuspendMigrate {
            Err(Error::Invalid(
                "xa_end: TMMIGRATE requires TMSUSPEND".into(),
            ))
        } else {
            Ok(m)
        }
    })
}

/// Checks `xa_commit` flags; true for `TMONEPHASE`. `TMNOWAIT` is accepted: commit never waits
/// for a lock.
pub fn commit(flags: c_long) -> Result<bool, Error> {
    check(Entry::Commit, flags)?;
    Ok(flags & TMONEPHASE != 0)
}

/// The scan flags of one `xa_recover` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// `TMSTARTRSCAN`
    pub start: bool,
    /// `TMENDRSCAN`
    pub end: bool,
}

/// Checks `xa_recover` flags (`TMASYNC` is simply invalid there).
pub fn recover(flags: c_long) -> Result<Scan, Error> {
    check(Entry::Recover, flags)?;
    Ok(Scan {
        start: flags & TMSTARTRSCAN != 0,
        end: flags & TMENDRSCAN != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T>(r: Result<T, Error>) -> i32 {
        r.err().map(|e| e.xa_code()).unwrap_or(XA_OK)
    }

    #[test]
    fn async_first_then_bits() {
        for e in [
            Entry::Open,
            Entry::Close,
            Entry::Prepare,
            Entry::Rollback,
            Entry::Forget,
        ] {
            assert_eq!(code(check(e, TMASYNC)), XAER_ASYNC);
            assert_eq!(code(check(e, TMASYNC | TMJOIN)), XAER_ASYNC);
            assert_eq!(code(check(e, TMJOIN)), XAER_INVAL);
            assert_eq!(code(check(e, TMNOFLAGS)), XA_OK);
        }
        assert_eq!(code(start(TMASYNC)), XAER_ASYNC);
        assert_eq!(code(recover(TMASYNC)), XAER_INVAL);
        assert_eq!(code(check(Entry::Complete, TMASYNC)), XAER_INVAL);
        // A TM that kept flags in an int and sign-extended TMASYNC.
        assert_eq!(code(start(0xFFFF_FFFF_8000_0000_u64 as c_long)), XAER_ASYNC);
        assert_eq!(code(start(1 << 40)), XAER_INVAL);
    }

    #[test]
    fn start_modes() {
        assert_eq!(start(TMNOFLAGS).unwrap(), StartMode::New);
        assert_eq!(start(TMJOIN).unwrap(), StartMode::Join);
        assert_eq!(start(TMRESUME | TMNOWAIT).unwrap(), StartMode::Resume);
        assert_eq!(code(start(TMJOIN | TMRESUME)), XAER_INVAL);
        assert_eq!(code(start(TMSUCCESS)), XAER_INVAL);
    }

    #[test]
    fn end_modes() {
        assert_eq!(end(TMSUCCESS).unwrap(), EndMode::Success);
        assert_eq!(end(TMFAIL).unwrap(), EndMode::Fail);
        assert_eq!(end(TMSUSPEND).unwrap(), EndMode::Suspend);
        assert_eq!(end(TMSUSPEND | TMMIGRATE).unwrap(), EndMode::SuspendMigrate);
        for bad in [
            TMNOFLAGS,
            TMMIGRATE,
            TMSUCCESS | TMFAIL,
            TMSUSPEND | TMSUCCESS,
            TMSUCCESS | TMMIGRATE,
            TMFAIL | TMMIGRATE,
            TMJOIN,
        ] {
            assert_eq!(code(end(bad)), XAER_INVAL, "{bad:#x}");
        }
    }

    #[test]
    fn commit_and_recover() {
        assert!(commit(TMONEPHASE).unwrap());
        assert!(!commit(TMNOWAIT).unwrap());
        assert_eq!(code(commit(TMJOIN)), XAER_INVAL);
        let s = recover(TMSTARTRSCAN | TMENDRSCAN).unwrap();
        assert!(s.start && s.end);
        assert_eq!(code(recover(TMJOIN)), XAER_INVAL);
    }
}
