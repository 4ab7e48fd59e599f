//! The `MMXA_*` result codes of the data API (`mmxa_put`, `mmxa_get`, `mmxa_delete`, the
//! local-transaction calls `mmxa_txn_*`).
//!
//! Owns: their values and their one-line descriptions (`mmxa_strerror`). Invariants: `MMXA_OK`
//! is 0, `MMXA_NOTFOUND` is the only positive code, every error is negative and distinct.
//! cbindgen copies the constants into `include/mmxa.h`.

use std::ffi::CStr;
use std::os::raw::{c_int, c_long};

/// Success.
pub const MMXA_OK: c_int = 0;
/// `mmxa_get`/`mmxa_delete`: the key does not exist (not an error).
pub const MMXA_NOTFOUND: c_int = 1;
/// An argument is invalid (NULL pointer with a non-zero length, empty key, ...).
pub const MMXA_EINVAL: c_int = -1;
/// The key or value is larger than the documented maximum.
pub const MMXA_ETOOBIG: c_int = -2;
/// `mmxa_get`: the buffer is too small; `*value_len` holds the length needed.
pub const MMXA_EBUFSIZE: c_int = -3;
/// A lock wait timed out; the branch is now rollback-only (`XA_RBTIMEOUT`).
pub const MMXA_ELOCKTIMEOUT: c_int = -4;
/// A deadlock was detected; the branch is now rollback-only (`XA_RBDEADLOCK`).
pub const MMXA_EDEADLOCK: c_int = -5;
/// The branch is rollback-only (or was rolled back); only `xa_end` and `xa_rollback` remain.
pub const MMXA_EROLLBACK: c_int = -6;
/// An I/O error: the write failed, or a failed sync made the store unusable until reopened.
pub const MMXA_EIO: c_int = -7;
/// The `rmid` is not open in this thread (`xa_open` first).
pub const MMXA_ENOTOPEN: c_int = -8;
/// The log is full: the write could not reserve space (disk full).
pub const MMXA_ENOSPC: c_int = -9;
/// An internal error (a bug); the message tells more.
pub const MMXA_EINTERNAL: c_int = -10;
/// Dynamic registration failed (`mmxa_switch_dynamic` only): the monitor's `ax_reg` or
/// `ax_unreg` answered an error, or the branch `ax_reg` named could not be started, joined or
/// resumed (unknown, duplicate, or in the wrong state). The message tells which.
pub const MMXA_EREGISTER: c_int = -11;
/// The call is not allowed in the thread's state: `mmxa_txn_begin` with a local transaction
/// already open (or while associated with a branch), a commit or rollback with none open, a
/// nested-transaction call outside any transaction or with no nested level open.
pub const MMXA_EPROTO: c_int = -12;

/// `mmxa_cursor_open` flag: read from the high end of the range down.
pub const MMXA_SCAN_REVERSE: c_long = 0x1;
/// `mmxa_cursor_open` flag: the low bound is exclusive (by default it is inclusive).
pub const MMXA_SCAN_LO_EXCL: c_long = 0x2;
/// `mmxa_cursor_open` flag: the high bound is inclusive (by default it is exclusive).
pub const MMXA_SCAN_HI_INCL: c_long = 0x4;
/// `mmxa_cursor_open` flag: `lo` is a prefix, the range every key that starts with it (`hi` must
/// be empty: length 0).
pub const MMXA_SCAN_PREFIX: c_long = 0x8;

/// Largest key, in bytes.
pub const MMXA_MAX_KEY: usize = 1024;
/// Largest value, in bytes.
pub const MMXA_MAX_VALUE: usize = 1024 * 1024;

/// The symbolic name of an `MMXA_*` code (`None` for any other value).
pub fn code_name(code: c_int) -> Option<&'static str> {
    Some(match code {
        MMXA_OK => "MMXA_OK",
        MMXA_NOTFOUND => "MMXA_NOTFOUND",
        MMXA_EINVAL => "MMXA_EINVAL",
        MMXA_ETOOBIG => "MMXA_ETOOBIG",
        MMXA_EBUFSIZE => "MMXA_EBUFSIZE",
        MMXA_ELOCKTIMEOUT => "MMXA_ELOCKTIMEOUT",
        MMXA_EDEADLOCK => "MMXA_EDEADLOCK",
        MMXA_EROLLBACK => "MMXA_EROLLBACK",
        MMXA_EIO => "MMXA_EIO",
        MMXA_ENOTOPEN => "MMXA_ENOTOPEN",
        MMXA_ENOSPC => "MMXA_ENOSPC",
        MMXA_EINTERNAL => "MMXA_EINTERNAL",
        MMXA_EREGISTER => "MMXA_EREGISTER",
        MMXA_EPROTO => "MMXA_EPROTO",
        _ => return None,
    })
}

/// A static, human-readable description of a data-API code (NUL-terminated for C).
pub fn describe(code: c_int) -> &'static CStr {
    match code {
        MMXA_OK => c"success",
        MMXA_NOTFOUND => c"key not found",
        MMXA_EINVAL => c"invalid argument",
        MMXA_ETOOBIG => c"key or value too large",
        MMXA_EBUFSIZE => c"buffer too small",
        MMXA_ELOCKTIMEOUT => c"lock wait timed out; branch is rollback-only",
        MMXA_EDEADLOCK => c"deadlock detected; branch is rollback-only",
        MMXA_EROLLBACK => c"branch is rollback-only",
        MMXA_EIO => c"I/O error; the store must be reopened",
        MMXA_ENOTOPEN => c"rmid not open in this thread",
        MMXA_ENOSPC => c"no space left for the log",
        MMXA_EINTERNAL => c"internal error",
        MMXA_EREGISTER => c"dynamic registration (ax_reg/ax_unreg) failed",
        MMXA_EPROTO => c"call not allowed in the thread's transaction state",
        _ => c"unknown mmxa code",
    }
}
