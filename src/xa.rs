//! The constants of the standard `xa.h`: sizes, flags and return codes.
//!
//! Owns: the numeric values of the XA specification (X/Open CAE C193), exactly as every public
//! `xa.h` defines them. cbindgen copies this file into `include/xa.h`, so the C and Rust sides can
//! never disagree. Invariant: nothing here changes; the values are the standard's.

use std::os::raw::{c_int, c_long};

/// Size of `XID.data`.
pub const XIDDATASIZE: usize = 128;
/// Maximum size in bytes of a global transaction id.
pub const MAXGTRIDSIZE: usize = 64;
/// Maximum size in bytes of a branch qualifier.
pub const MAXBQUALSIZE: usize = 64;
/// Size of `xa_switch_t.name`, including the terminating NUL.
pub const RMNAMESZ: usize = 32;
/// Maximum size of an `xa_info` string, including the terminating NUL.
pub const MAXINFOSIZE: usize = 256;
/// `formatID` of the null XID.
pub const NULLXID: c_long = -1;

/// No flag.
pub const TMNOFLAGS: c_long = 0x0000_0000;
/// Switch flag: the RM registers dynamically (`ax_reg`).
pub const TMREGISTER: c_long = 0x0000_0001;
/// Switch flag: the RM does not support association migration.
pub const TMNOMIGRATE: c_long = 0x0000_0002;
/// Switch flag: the RM supports asynchronous operations.
pub const TMUSEASYNC: c_long = 0x0000_0004;
/// `xa_end`: with `TMSUSPEND`, the association may be resumed in another thread of control.
pub const TMMIGRATE: c_long = 0x0010_0000;
/// `xa_start`: join an existing branch.
pub const TMJOIN: c_long = 0x0020_0000;
/// `xa_complete`: wait for any asynchronous operation.
pub const TMMULTIPLE: c_long = 0x0040_0000;
/// `xa_recover`: end the recovery scan.
pub const TMENDRSCAN: c_long = 0x0080_0000;
/// `xa_recover`: start a recovery scan.
pub const TMSTARTRSCAN: c_long = 0x0100_0000;
/// `xa_end`: suspend the association.
pub const TMSUSPEND: c_long = 0x0200_0000;
/// `xa_end`: the portion of work succeeded.
pub const TMSUCCESS: c_long = 0x0400_0000;
/// `xa_start`: resume a suspended association.
pub const TMRESUME: c_long = 0x0800_0000;
/// `xa_start`/`xa_commit`/`xa_complete`: answer `XA_RETRY` rather than block.
pub const TMNOWAIT: c_long = 0x1000_0000;
/// `xa_end`: the portion of work failed.
pub const TMFAIL: c_long = 0x2000_0000;
/// `xa_commit`: one-phase commit.
pub const TMONEPHASE: c_long = 0x4000_0000;
/// Perform the call asynchronously.
pub const TMASYNC: c_long = 0x8000_0000;

/// Lower bound of the rollback codes.
pub const XA_RBBASE: c_int = 100;
/// Rolled back, reason unspecified.
pub const XA_RBROLLBACK: c_int = XA_RBBASE;
/// Rolled back because of a communication failure.
pub const XA_RBCOMMFAIL: c_int = XA_RBBASE + 1;
/// Rolled back because a deadlock was detected.
pub const XA_RBDEADLOCK: c_int = XA_RBBASE + 2;
/// Rolled back because a resource-integrity condition was violated.
pub const XA_RBINTEGRITY: c_int = XA_RBBASE + 3;
/// Rolled back for a reason not in this list.
pub const XA_RBOTHER: c_int = XA_RBBASE + 4;
/// Rolled back because of a protocol error inside the RM.
pub const XA_RBPROTO: c_int = XA_RBBASE + 5;
/// Rolled back because the branch took too long.
pub const XA_RBTIMEOUT: c_int = XA_RBBASE + 6;
/// Rolled back for a transient reason; the branch may be retried.
pub const XA_RBTRANSIENT: c_int = XA_RBBASE + 7;
/// Upper bound of the rollback codes.
pub const XA_RBEND: c_int = XA_RBTRANSIENT;
/// `xa_end`: suspended, but the association cannot migrate.
pub const XA_NOMIGRATE: c_int = 9;
/// The branch may have been heuristically completed.
pub const XA_HEURHAZ: c_int = 8;
/// The branch was heuristically committed.
pub const XA_HEURCOM: c_int = 7;
/// The branch was heuristically rolled back.
pub const XA_HEURRB: c_int = 6;
/// The branch was heuristically partly committed, partly rolled back.
pub const XA_HEURMIX: c_int = 5;
/// The call had no effect; it may be reissued.
pub const XA_RETRY: c_int = 4;
/// `xa_prepare`: the branch was read-only and has been committed.
pub const XA_RDONLY: c_int = 3;
/// Normal completion.
pub const XA_OK: c_int = 0;
/// Asynchronous operation already outstanding, or asynchronous mode unsupported.
pub const XAER_ASYNC: c_int = -2;
/// A resource manager error occurred in the branch.
pub const XAER_RMERR: c_int = -3;
/// The XID is not valid (not known to the RM).
pub const XAER_NOTA: c_int = -4;
/// Invalid arguments were given.
pub const XAER_INVAL: c_int = -5;
/// The routine was invoked in an improper context.
pub const XAER_PROTO: c_int = -6;
/// The resource manager is unavailable.
pub const XAER_RMFAIL: c_int = -7;
/// `xa_start`: the XID already exists.
pub const XAER_DUPID: c_int = -8;
/// `xa_start`: the RM is doing work outside a global transaction.
pub const XAER_OUTSIDE: c_int = -9;

/// `ax_reg`: the RM joins a branch it has seen before (act like `xa_start(TMJOIN)`).
pub const TM_JOIN: c_int = 2;
/// `ax_reg`: the RM resumes a suspended association (act like `xa_start(TMRESUME)`).
pub const TM_RESUME: c_int = 1;
/// `ax_reg`/`ax_unreg`: success; from `ax_reg`, `*xid` is a new branch or the null XID.
pub const TM_OK: c_int = 0;
/// `ax_reg`/`ax_unreg`: an error in the transaction manager.
pub const TMER_TMERR: c_int = -1;
/// `ax_reg`/`ax_unreg`: invalid arguments.
pub const TMER_INVAL: c_int = -2;
/// `ax_reg`/`ax_unreg`: called in an improper context.
pub const TMER_PROTO: c_int = -3;

/// The symbolic name of an `xa_` return code (`None` for any other value).
pub fn code_name(code: c_int) -> Option<&'static str> {
    Some(match code {
        XA_OK => "XA_OK",
        XA_RDONLY => "XA_RDONLY",
        XA_RETRY => "XA_RETRY",
        XA_HEURMIX => "XA_HEURMIX",
        XA_HEURRB => "XA_HEURRB",
        XA_HEURCOM => "XA_HEURCOM",
        XA_HEURHAZ => "XA_HEURHAZ",
        XA_NOMIGRATE => "XA_NOMIGRATE",
        XA_RBROLLBACK => "XA_RBROLLBACK",
        XA_RBCOMMFAIL => "XA_RBCOMMFAIL",
        XA_RBDEADLOCK => "XA_RBDEADLOCK",
        XA_RBINTEGRITY => "XA_RBINTEGRITY",
        XA_RBOTHER => "XA_RBOTHER",
        XA_RBPROTO => "XA_RBPROTO",
        XA_RBTIMEOUT => "XA_RBTIMEOUT",
        XA_RBTRANSIENT => "XA_RBTRANSIENT",
        XAER_ASYNC => "XAER_ASYNC",
        XAER_RMERR => "XAER_RMERR",
        XAER_NOTA => "XAER_NOTA",
        XAER_INVAL => "XAER_INVAL",
        XAER_PROTO => "XAER_PROTO",
        XAER_RMFAIL => "XAER_RMFAIL",
        XAER_DUPID => "XAER_DUPID",
        XAER_OUTSIDE => "XAER_OUTSIDE",
        _ => return None,
    })
}
