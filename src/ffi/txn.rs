//! Local transactions: `mmxa_txn_begin`, `mmxa_txn_commit`, `mmxa_txn_commit_and_chain`,
//! `mmxa_txn_rollback`, `mmxa_txn_promote`, and nested transactions
//! (`mmxa_txn_begin_nested`, `mmxa_txn_commit_nested`, `mmxa_txn_rollback_nested`).
//!
//! Each call acts on the calling thread's state for `rmid`. They return `MMXA_*` codes, but
//! `mmxa_txn_promote`, which makes a branch of a global transaction, answers as `xa_start`
//! does (`XA_OK`, `XAER_*`, `XA_RB*`). None of them asks a dynamic-registration monitor
//! (`ax_reg`) anything: a local transaction is outside any global transaction.

use super::abi::Xid;
use super::data::data_call;
use super::switch::{run, xid_arg};
use super::trace::{self, Rc};
use crate::error::Error;
use crate::registry;
use crate::status::*;
use crate::xa::*;
use std::os::raw::c_int;

/// Begins a local transaction in the calling thread for `rmid`: the data calls that follow
/// (`mmxa_put`, `mmxa_get`, `mmxa_get_for_update`, `mmxa_delete`, savepoints, nested
/// transactions) work in it as in a branch — same locks, same isolation — until
/// `mmxa_txn_commit` or `mmxa_txn_rollback`, without any transaction manager. Returns
/// `MMXA_OK`; `MMXA_EPROTO` when the thread already has one open or is associated with a branch;
/// `MMXA_ENOTOPEN` when `rmid` is not open in this thread.
#[no_mangle]
pub extern "C" fn mmxa_txn_begin(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_begin", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_begin(toc))?;
            Ok(MMXA_OK)
        })
    })
}

/// Commits the calling thread's local transaction for `rmid` with one durable record (a
/// one-phase commit), then releases its locks. Returns `MMXA_OK` once durable; `MMXA_EROLLBACK`
/// when it was rollback-only (a lock timeout, a deadlock) or could not be logged: it is then
/// rolled back; `MMXA_EPROTO` when none is open; `MMXA_EIO` when the sync failed (the store must
/// be reopened; the outcome is known after recovery). The thread has no local transaction open
/// afterwards.
#[no_mangle]
pub extern "C" fn mmxa_txn_commit(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_commit", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_commit(toc))?;
            Ok(MMXA_OK)
        })
    })
}

/// `mmxa_txn_commit`, then `mmxa_txn_begin` at once when the commit succeeded: the thread is
/// in a new local transaction. On an error no local transaction is open.
#[no_mangle]
pub extern "C" fn mmxa_txn_commit_and_chain(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_commit_and_chain", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_commit_and_chain(toc))?;
            Ok(MMXA_OK)
        })
    })
}

/// Rolls back the calling thread's local transaction for `rmid` and releases its locks.
/// Returns `MMXA_OK`; `MMXA_EPROTO` when none is open.
#[no_mangle]
pub extern "C" fn mmxa_txn_rollback(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_rollback", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_rollback(toc))?;
            Ok(MMXA_OK)
        })
    })
}

/// Turns the calling thread's local transaction for `rmid` into the branch `xid` of a global
/// transaction, keeping its writes, locks and savepoints; the thread is then associated with
/// the branch as after `xa_start(xid, rmid, TMNOFLAGS)`, and the branch is an ordinary one
/// (`xa_end`, `xa_prepare`, `xa_commit`, `xa_recover`, migration). Returns `XA_OK`;
/// `XAER_DUPID` when `xid` names an existing branch (the local transaction stays open);
/// `XAER_PROTO` when the thread has no local transaction open; an `XA_RB*` code when it was
/// rollback-only (it is rolled back); `XAER_INVAL` for a NULL or invalid XID (the null XID
/// included); `XAER_RMFAIL` when the store has failed.
///
/// # Safety
/// `xid` is NULL or points to a readable `XID`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_txn_promote(rmid: c_int, xid: *const Xid) -> c_int {
    trace::xa("mmxa_txn_promote", rmid, xid, 0, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            registry::call(rmid, |rm, toc| {
                // SAFETY: our caller promises `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.txn_promote(toc, &xid)
            })
            .map(|()| XA_OK)
        })
    })
}

/// Begins a nested transaction in the calling thread's local transaction or branch for `rmid`
/// and stores its level in `*level_out` (1 for the outermost nested one). Returns `MMXA_OK`;
/// `MMXA_EPROTO` when the thread has no local transaction open and is not associated with a
/// branch; `MMXA_EINVAL` when `level_out` is NULL; `MMXA_EROLLBACK` when rollback-only.
///
/// # Safety
/// `level_out` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_txn_begin_nested(rmid: c_int, level_out: *mut u64) -> c_int {
    trace::data("mmxa_txn_begin_nested", rmid, || {
        data_call(|| {
            if level_out.is_null() {
                return Err(Error::Invalid("level_out is NULL".into()).into());
            }
            let level = registry::call(rmid, |rm, toc| rm.txn_begin_nested(toc))?;
            // SAFETY: checked non-NULL above; the caller promises a writable `uint64_t`.
            unsafe { level_out.write(level) };
            Ok(MMXA_OK)
        })
    })
}

/// Ends the innermost nested transaction: its writes become its parent's (they commit or roll
/// back with it); savepoints set inside it are released. Returns `MMXA_OK`; `MMXA_EPROTO` when
/// no nested transaction is open.
#[no_mangle]
pub extern "C" fn mmxa_txn_commit_nested(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_commit_nested", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_commit_nested(toc))?;
            Ok(MMXA_OK)
        })
    })
}

/// Undoes every write of the innermost nested transaction and ends it; its parent goes on.
/// Keys it locked stay locked until the outer transaction ends. Returns `MMXA_OK`; `MMXA_EPROTO`
/// when no nested transaction is open; `MMXA_EINVAL` while another thread is joined to the
/// branch; `MMXA_ENOSPC`/`MMXA_EIO` when the undo could not be logged (the transaction is then
/// rollback-only).
#[no_mangle]
pub extern "C" fn mmxa_txn_rollback_nested(rmid: c_int) -> c_int {
    trace::data("mmxa_txn_rollback_nested", rmid, || {
        data_call(|| {
            registry::call(rmid, |rm, toc| rm.txn_rollback_nested(toc))?;
            Ok(MMXA_OK)
        })
    })
}
