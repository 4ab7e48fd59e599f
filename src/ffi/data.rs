//! The data API: `mmxa_put`, `mmxa_get`, `mmxa_delete`, `mmxa_savepoint`,
//! `mmxa_rollback_to_savepoint`, `mmxa_strerror`, `mmxa_last_error`.
//!
//! Each call acts on the branch the calling thread is associated with for `rmid`, or on its
//! local transaction (`mmxa_txn_begin`, which works as a branch), or, outside both, on committed
//! data (a put or delete then commits by itself, durably).

use super::guard::{clear_last_error, guard, last_error_ptr, set_last_error};
use super::trace;
use crate::error::Error;
use crate::registry;
use crate::status::*;
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};

/// Borrows `len` bytes at `ptr`; NULL is allowed only with length 0. The length is checked
/// against `max` before any slice is built from the caller's pointer.
///
/// # Safety
/// When non-NULL, `ptr` points to `len` readable bytes.
pub(super) unsafe fn bytes<'a>(
    ptr: *const c_void,
    len: usize,
    max: usize,
    what: &str,
) -> Result<&'a [u8], Error> {
    if ptr.is_null() && len != 0 {
        return Err(Error::Invalid(format!("{what} is NULL")));
    }
    if len > max {
        return Err(Error::TooBig(format!(
            "{what} of {len} bytes exceeds the maximum of {max}"
        )));
    }
    if ptr.is_null() {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

/// A failed data call as C sees it: a core error, or a code only the boundary knows.
pub(super) struct Failure {
    code: c_int,
    msg: String,
}

impl Failure {
    pub(super) fn new(code: c_int, msg: String) -> Failure {
        Failure { code, msg }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: e.mmxa_code(),
            msg: e.message().to_string(),
        }
    }
}

pub(super) fn data_call(f: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    clear_last_error();
    guard(MMXA_EINTERNAL, || match f() {
        Ok(code) => code,
        Err(e) => {
            set_last_error(&e.msg);
            e.code
        }
    })
}

/// Writes `value` under `key` in the calling thread's branch for `rmid` (or its local
/// transaction, which every data call treats as a branch), or, outside both, as a durable
/// one-operation transaction. Keys are 1..=`MMXA_MAX_KEY` bytes, values
/// 0..=`MMXA_MAX_VALUE` bytes. Returns `MMXA_OK` or a negative `MMXA_*` code.
///
/// # Safety
/// `key` points to `key_len` readable bytes; `value` to `value_len` readable bytes (or is NULL
/// with `value_len == 0`).
#[no_mangle]
pub unsafe extern "C" fn mmxa_put(
    rmid: c_int,
    key: *const c_void,
    key_len: usize,
    value: *const c_void,
    value_len: usize,
) -> c_int {
    trace::data("mmxa_put", rmid, || {
        // SAFETY: our caller's contract is `put`'s.
        unsafe { put(rmid, key, key_len, value, value_len) }
    })
}

/// `mmxa_put`'s body.
///
/// # Safety
/// As for `mmxa_put`.
unsafe fn put(
    rmid: c_int,
    key: *const c_void,
    key_len: usize,
    value: *const c_void,
    value_len: usize,
) -> c_int {
    data_call(|| {
        // SAFETY: the caller promises `key_len` bytes at `key` and `value_len` at `value`.
        let (key, value) = unsafe {
            (
                bytes(key, key_len, MMXA_MAX_KEY, "key")?,
                bytes(value, value_len, MMXA_MAX_VALUE, "value")?,
            )
        };
        registry::data_call(rmid, |rm, toc| rm.put(toc, key, Some(value)))?;
        Ok(MMXA_OK)
    })
}

/// Reads `key`: the calling thread's branch sees its own writes, everyone else committed data.
/// Inside a branch of a store opened with `isolation=serializable` (the default) the read locks
/// the key shared until the branch prepares or ends (also when the key is absent); with
/// `isolation=read_committed` it takes no lock. Outside any branch it reads committed data
/// without locking.
/// On `MMXA_OK` the value is copied into `buf` and its length stored in `*value_len`; when
/// `buf_len` is too small, returns `MMXA_EBUFSIZE` with the needed length in `*value_len`
/// (`buf` may be NULL to ask for the length). Returns `MMXA_NOTFOUND` for an absent key; a
/// failed lock wait returns `MMXA_ELOCKTIMEOUT` or `MMXA_EDEADLOCK` and leaves the branch
/// rollback-only.
///
/// # Safety
/// `key` points to `key_len` readable bytes; `buf` to `buf_len` writable bytes (or NULL with
/// `buf_len == 0`); `value_len` to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_get(
    rmid: c_int,
    key: *const c_void,
    key_len: usize,
    buf: *mut c_void,
    buf_len: usize,
    value_len: *mut usize,
) -> c_int {
    trace::data("mmxa_get", rmid, || {
        // SAFETY: our caller's contract is `get`'s.
        unsafe { get(rmid, key, key_len, buf, buf_len, value_len, false) }
    })
}

/// `mmxa_get` that locks the key exclusively inside a branch, whatever the isolation level (as
/// `SELECT ... FOR UPDATE`): a read-modify-write takes the lock it needs at once, instead of a
/// shared lock that the write must upgrade (two branches upgrading one key deadlock). The lock
/// is held until the branch commits or rolls back. Outside any branch it is `mmxa_get`.
///
/// # Safety
/// As for `mmxa_get`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_get_for_update(
    rmid: c_int,
    key: *const c_void,
    key_len: usize,
    buf: *mut c_void,
    buf_len: usize,
    value_len: *mut usize,
) -> c_int {
    trace::data("mmxa_get_for_update", rmid, || {
        // SAFETY: our caller's contract is `get`'s.
        unsafe { get(rmid, key, key_len, buf, buf_len, value_len, true) }
    })
}

/// The body of `mmxa_get` and `mmxa_get_for_update`.
///
/// # Safety
/// As for `mmxa_get`.
unsafe fn get(
    rmid: c_int,
    key: *const c_void,
    key_len: usize,
    buf: *mut c_void,
    buf_len: usize,
    value_len: *mut usize,
    for_update: bool,
) -> c_int {
    data_call(|| {
        // SAFETY: the caller promises `key_len` readable bytes at `key`.
        let key = unsafe { bytes(key, key_len, MMXA_MAX_KEY, "key")? };
        if value_len.is_null() {
            return Err(Error::Invalid("value_len is NULL".into()).into());
        }
        if buf.is_null() && buf_len != 0 {
            return Err(Error::Invalid("buf is NULL and buf_len > 0".into()).into());
        }
        let found = registry::data_call(rmid, |rm, toc| {
            if for_update {
                rm.get_for_update(toc, key)
            } else {
                rm.get(toc, key)
            }
        })?;
        let Some(value) = found else {
            return Ok(MMXA_NOTFOUND);
        };
        // SAFETY: checked non-NULL above; the caller promises a writable `size_t`.
        unsafe { value_len.write(value.len()) };
        if value.len() > buf_len {
            return Err(Failure {
                code: MMXA_EBUFSIZE,
                msg: format!(
                    "buffer of {buf_len} bytes is too small for {} bytes",
                    value.len()
                ),
            });
        }
        if !value.is_empty() {
            // SAFETY: `buf` is non-NULL (`buf_len` >= the non-zero length, and NULL comes only
            // with 0) and has `buf_len` writable bytes; our vector cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), buf as *mut u8, value.len()) };
        }
        Ok(MMXA_OK)
    })
}

/// Deletes `key` in the calling thread's branch for `rmid` (or, outside a branch, durably by
/// itself). Returns `MMXA_OK`, `MMXA_NOTFOUND` when the key did not exist, or an error.
///
/// # Safety
/// `key` points to `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn mmxa_delete(rmid: c_int, key: *const c_void, key_len: usize) -> c_int {
    trace::data("mmxa_delete", rmid, || {
        data_call(|| {
            // SAFETY: the caller promises `key_len` readable bytes at `key`.
            let key = unsafe { bytes(key, key_len, MMXA_MAX_KEY, "key")? };
            let existed = registry::data_call(rmid, |rm, toc| rm.put(toc, key, None))?;
            Ok(if existed { MMXA_OK } else { MMXA_NOTFOUND })
        })
    })
}

/// Sets a savepoint in the calling thread's branch for `rmid` and stores its id in
/// `*savepoint`. Returns `MMXA_OK`; `MMXA_EINVAL` when `savepoint` is NULL or the thread is
/// neither associated with a branch nor in a local transaction; `MMXA_EROLLBACK` when the
/// branch is rollback-only.
///
/// # Safety
/// `savepoint` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_savepoint(rmid: c_int, savepoint: *mut u64) -> c_int {
    trace::data("mmxa_savepoint", rmid, || {
        data_call(|| {
            if savepoint.is_null() {
                return Err(Error::Invalid("savepoint is NULL".into()).into());
            }
            let id = registry::data_call(rmid, |rm, toc| rm.savepoint(toc))?;
            // SAFETY: checked non-NULL above; the caller promises a writable `uint64_t`.
            unsafe { savepoint.write(id) };
            Ok(MMXA_OK)
        })
    })
}

/// Undoes every write of the calling thread's branch since `savepoint`, without ending the
/// branch: reads see what they saw when the savepoint was set. The savepoint stays set; later
/// ones are released. Keys locked since the savepoint stay locked until the branch ends.
/// Returns `MMXA_OK`; `MMXA_EINVAL` for an unknown or released savepoint, outside a branch (or
/// local transaction), or while another thread is joined to the branch; `MMXA_EROLLBACK` when the branch is
/// rollback-only; `MMXA_ENOSPC`/`MMXA_EIO` when the undo could not be logged (the branch is
/// then rollback-only).
#[no_mangle]
pub extern "C" fn mmxa_rollback_to_savepoint(rmid: c_int, savepoint: u64) -> c_int {
    trace::data("mmxa_rollback_to_savepoint", rmid, || {
        data_call(|| {
            registry::data_call(rmid, |rm, toc| rm.rollback_to_savepoint(toc, savepoint))?;
            Ok(MMXA_OK)
        })
    })
}

/// A static description of an `MMXA_*` code; never NULL.
#[no_mangle]
pub extern "C" fn mmxa_strerror(code: c_int) -> *const c_char {
    describe(code).as_ptr()
}

/// The library's version, as "mmxa MAJOR.MINOR.PATCH" (what `mmxa --version` prints): a static
/// string, never NULL.
#[no_mangle]
pub extern "C" fn mmxa_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// [`mmxa_version`]'s string, NUL-terminated.
const VERSION: &str = concat!("mmxa ", env!("CARGO_PKG_VERSION"), "\0");

/// This thread's message for its last failed mmxa or XA call (empty after a success). The
/// pointer stays valid until this thread's next mmxa call.
#[no_mangle]
pub extern "C" fn mmxa_last_error() -> *const c_char {
    last_error_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_cargos() {
        let p = mmxa_version();
        // SAFETY: mmxa_version returns a pointer to a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(v.to_str(), Ok(concat!("mmxa ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(mmxa_version(), p);
    }
}
