//! The exported switches and the ten XA entry points behind them.
//!
//! Each entry point checks its arguments in one order — `TMASYNC`, other flags, rmid open in
//! this thread, pointers and XID — and then calls the safe core through [`crate::registry`].
//! Every entry point runs inside [`trace`], which costs one atomic load when tracing is off.
//!
//! The two switches share every entry point but `xa_open`: opening through
//! `mmxa_switch_dynamic` resolves the monitor's `ax_reg`/`ax_unreg` and marks the rmid as
//! dynamically registered in the registry.

use super::abi::{XaSwitch, Xid as CXid};
use super::dynreg::Ax;
use super::guard::{clear_last_error, guard, set_last_error};
use super::trace::{self, Rc};
use crate::config;
use crate::error::{Error, XaOk};
use crate::registry;
use crate::rm::flags::{self, Entry};
use crate::xa::*;
use crate::xid::Xid;
use std::os::raw::{c_char, c_int, c_long};

const fn rm_name() -> [c_char; RMNAMESZ] {
    let mut name = [0 as c_char; RMNAMESZ];
    let src = b"mmxa";
    let mut i = 0;
    while i < src.len() {
        name[i] = src[i] as c_char;
        i += 1;
    }
    name
}

/// The static-registration switch: no `TMNOMIGRATE` (associations can migrate between threads
/// and processes), no `TMUSEASYNC`.
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static mut mmxa_switch: XaSwitch = XaSwitch {
    name: rm_name(),
    flags: TMNOFLAGS,
    version: 0,
    xa_open_entry: xa_open,
    xa_close_entry: xa_close,
    xa_start_entry: xa_start,
    xa_end_entry: xa_end,
    xa_rollback_entry: xa_rollback,
    xa_prepare_entry: xa_prepare,
    xa_commit_entry: xa_commit,
    xa_recover_entry: xa_recover,
    xa_forget_entry: xa_forget,
    xa_complete_entry: xa_complete,
};

/// Returns `&mmxa_switch`, for monitors that look up a function rather than a data symbol.
#[no_mangle]
pub extern "C" fn mmxa_get_xa_switch() -> *mut XaSwitch {
    &raw mut mmxa_switch
}

/// The dynamic-registration switch (`TMREGISTER`): the monitor does not call `xa_start`; the
/// first data call (`mmxa_put`, `mmxa_get`, `mmxa_delete`) of a thread that is not associated
/// with a branch calls the monitor's `ax_reg` to learn its branch (and `ax_unreg` after work
/// done outside any transaction). The monitor still calls `xa_end` and the completion routines.
/// `xa_open` looks up `ax_reg`/`ax_unreg` with `dlsym(RTLD_DEFAULT)` and answers `XAER_RMERR` if
/// the monitor does not export them. An `xa_start` called anyway behaves as in `mmxa_switch`.
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static mut mmxa_switch_dynamic: XaSwitch = XaSwitch {
    name: rm_name(),
    flags: TMREGISTER,
    version: 0,
    xa_open_entry: xa_open_dynamic,
    xa_close_entry: xa_close,
    xa_start_entry: xa_start,
    xa_end_entry: xa_end,
    xa_rollback_entry: xa_rollback,
    xa_prepare_entry: xa_prepare,
    xa_commit_entry: xa_commit,
    xa_recover_entry: xa_recover,
    xa_forget_entry: xa_forget,
    xa_complete_entry: xa_complete,
};

/// Returns `&mmxa_switch_dynamic`.
#[no_mangle]
pub extern "C" fn mmxa_get_xa_switch_dynamic() -> *mut XaSwitch {
    &raw mut mmxa_switch_dynamic
}

/// Runs one entry point: clears the last error, catches panics, records the error message.
pub(super) fn run(on_panic: c_int, rmid: c_int, f: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    clear_last_error();
    let code = guard(on_panic, || match f() {
        Ok(code) => code,
        Err(e) => {
            set_last_error(e.message());
            e.xa_code()
        }
    });
    if code == on_panic && on_panic == XAER_RMFAIL {
        // A panic may have left the instance inconsistent: fail it until reopened.
        registry::fail_after_panic(rmid);
    }
    code
}

/// Reads the info string: at most `MAXINFOSIZE` bytes including the NUL.
///
/// # Safety
/// `info` is NULL or points to readable memory up to its NUL or `MAXINFOSIZE` bytes.
unsafe fn info_arg<'a>(info: *const c_char) -> Result<&'a [u8], Error> {
    if info.is_null() {
        return Err(Error::Invalid("xa_info is NULL".into()));
    }
    let mut n = 0;
    while n < MAXINFOSIZE {
        // SAFETY: the caller promises readable bytes up to the NUL or MAXINFOSIZE; none was
        // found before `n`.
        if unsafe { *info.add(n) } == 0 {
            // SAFETY: the `n` bytes before the NUL were just read.
            return Ok(unsafe { std::slice::from_raw_parts(info as *const u8, n) });
        }
        n += 1;
    }
    Err(Error::Invalid(
        "xa_info has no terminating NUL within 256 bytes".into(),
    ))
}

/// Copies and validates the caller's XID; the pointer is not kept.
///
/// # Safety
/// `xid` is NULL or points to a readable `XID`.
pub(super) unsafe fn xid_arg(xid: *const CXid) -> Result<Xid, Error> {
    if xid.is_null() {
        return Err(Error::Invalid("xid is NULL".into()));
    }
    // SAFETY: non-NULL, and the caller promises a readable XID.
    let x = unsafe { &*xid };
    // SAFETY: `c_char` and `u8` have the same size and alignment, and every bit pattern is
    // valid for both.
    let data: &[u8; XIDDATASIZE] =
        unsafe { &*(&x.data as *const [c_char; XIDDATASIZE] as *const _) };
    Xid::new(x.formatID, x.gtrid_length, x.bqual_length, data)
        .map_err(|e| Error::Invalid(format!("invalid XID: {e}")))
}

/// `xa_open` of either switch.
///
/// # Safety
/// As for `xa_open`: `info` is NULL or a readable string.
unsafe fn open(info: *mut c_char, rmid: c_int, flags: c_long, dynamic: bool) -> c_int {
    let entry = if dynamic {
        "xa_open_dynamic"
    } else {
        "xa_open"
    };
    trace::open_entry(entry, rmid, flags, || {
        run(XAER_RMERR, rmid, || {
            flags::check(Entry::Open, flags)?;
            // SAFETY: the caller's contract for `info`.
            let cfg = config::parse(unsafe { info_arg(info)? }).map_err(Error::Invalid)?;
            if let Some(path) = &cfg.trace {
                trace::enable(path).map_err(Error::Io)?;
            }
            super::fork::install();
            if dynamic {
                registry::open_dynamic(rmid, cfg, Box::new(Ax::resolve()?))?;
            } else {
                registry::open(rmid, cfg)?;
            }
            Ok(XA_OK)
        })
    })
}

unsafe extern "C" fn xa_open(info: *mut c_char, rmid: c_int, flags: c_long) -> c_int {
    // SAFETY: the XA contract for `xa_info` is `open`'s.
    unsafe { open(info, rmid, flags, false) }
}

unsafe extern "C" fn xa_open_dynamic(info: *mut c_char, rmid: c_int, flags: c_long) -> c_int {
    // SAFETY: the XA contract for `xa_info` is `open`'s.
    unsafe { open(info, rmid, flags, true) }
}

unsafe extern "C" fn xa_close(info: *mut c_char, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_close", rmid, std::ptr::null(), flags, Rc::Xa, || {
        run(XAER_RMERR, rmid, || {
            flags::check(Entry::Close, flags)?;
            // SAFETY: the XA contract: `xa_info` is NULL or a readable string.
            unsafe { info_arg(info)? };
            registry::close(rmid).map(|()| XA_OK)
        })
    })
}

unsafe extern "C" fn xa_start(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_start", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            let mode = flags::start(flags)?;
            registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.start(toc, &xid, mode)
            })
            .map(|()| XA_OK)
        })
    })
}

unsafe extern "C" fn xa_end(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_end", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            let mode = flags::end(flags)?;
            registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.end(toc, &xid, mode)
            })
            .map(|()| XA_OK)
        })
    })
}

unsafe extern "C" fn xa_rollback(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_rollback", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            flags::check(Entry::Rollback, flags)?;
            registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.rollback(toc, &xid)
            })
            .map(|()| XA_OK)
        })
    })
}

unsafe extern "C" fn xa_prepare(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_prepare", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            flags::check(Entry::Prepare, flags)?;
            let vote = registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.prepare(toc, &xid)
            })?;
            Ok(vote.xa_code())
        })
    })
}

unsafe extern "C" fn xa_commit(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_commit", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            let one_phase = flags::commit(flags)?;
            registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.commit(toc, &xid, one_phase)
            })
            .map(|()| XA_OK)
        })
    })
}

unsafe extern "C" fn xa_recover(
    xids: *mut CXid,
    count: c_long,
    rmid: c_int,
    flags: c_long,
) -> c_int {
    trace::xa(
        "xa_recover",
        rmid,
        std::ptr::null(),
        flags,
        Rc::Count,
        // SAFETY: the XA contract for `xids` and `count` is `recover`'s.
        || unsafe { recover(xids, count, rmid, flags) },
    )
}

/// `xa_recover`'s body.
///
/// # Safety
/// As for `xa_recover`: `xids` is NULL or has room for `count` XIDs.
unsafe fn recover(xids: *mut CXid, count: c_long, rmid: c_int, flags: c_long) -> c_int {
    run(XAER_RMFAIL, rmid, || {
        let scan = flags::recover(flags)?;
        registry::call(rmid, |rm, toc| {
            if count < 0 {
                return Err(Error::Invalid("xa_recover: count is negative".into()));
            }
            if xids.is_null() && count > 0 {
                return Err(Error::Invalid(
                    "xa_recover: xids is NULL and count > 0".into(),
                ));
            }
            let cap = usize::try_from(count).unwrap_or(usize::MAX);
            let found = rm.recover(toc, scan, cap)?;
            for (i, x) in found.iter().enumerate() {
                let mut out = CXid {
                    formatID: x.format_id() as c_long,
                    gtrid_length: x.gtrid().len() as c_long,
                    bqual_length: x.bqual().len() as c_long,
                    data: [0; XIDDATASIZE],
                };
                for (d, s) in out.data.iter_mut().zip(x.data().iter()) {
                    *d = *s as c_char;
                }
                // SAFETY: `i` < `found.len()` <= `count`, and the caller promises room for
                // `count` XIDs at the non-NULL `xids` (checked above for `count` > 0).
                unsafe { xids.add(i).write(out) };
            }
            Ok(found.len() as c_int)
        })
    })
}

unsafe extern "C" fn xa_forget(xid: *mut CXid, rmid: c_int, flags: c_long) -> c_int {
    trace::xa("xa_forget", rmid, xid, flags, Rc::Xa, || {
        run(XAER_RMFAIL, rmid, || {
            flags::check(Entry::Forget, flags)?;
            registry::call(rmid, |rm, toc| {
                // SAFETY: the XA contract: `xid` is NULL or a readable XID.
                let xid = unsafe { xid_arg(xid)? };
                rm.forget(toc, &xid)
            })
            .map(|()| XA_OK)
        })
    })
}

/// No operation is ever asynchronous here, so there is nothing to complete: `XAER_PROTO`
/// (or `XAER_INVAL` for bad flags). `handle` and `retval` are never touched.
unsafe extern "C" fn xa_complete(
    _handle: *mut c_int,
    _retval: *mut c_int,
    rmid: c_int,
    flags: c_long,
) -> c_int {
    trace::xa("xa_complete", rmid, std::ptr::null(), flags, Rc::Xa, || {
        run(XAER_PROTO, rmid, || {
            flags::check(Entry::Complete, flags)?;
            registry::call(rmid, |_, _| -> Result<c_int, Error> {
                Err(Error::Protocol(
                    "xa_complete: mmxa performs no asynchronous operations".into(),
                ))
            })
        })
    })
}
