//! Cursors: `mmxa_cursor_open`, `mmxa_cursor_next`, `mmxa_cursor_close`.
//!
//! A cursor reads keys in byte order between two bounds, inside the calling thread's branch or
//! local transaction (seeing its writes; locking under `isolation=serializable`) or over
//! committed data. C holds a cursor by number (`uint64_t`), never by pointer.

use super::data::{bytes, data_call, Failure};
use super::trace;
use crate::cursors;
use crate::error::Error;
use crate::rm::Range;
use crate::status::*;
use std::ffi::c_void;
use std::ops::Bound;
use std::os::raw::{c_int, c_long};

const SCAN_FLAGS: c_long =
    MMXA_SCAN_REVERSE | MMXA_SCAN_LO_EXCL | MMXA_SCAN_HI_INCL | MMXA_SCAN_PREFIX;

/// Opens a cursor over the keys between `lo` and `hi` in byte order (`memcmp`, a shorter key
/// before the longer ones it begins): `lo` inclusive and `hi` exclusive unless `flags` say
/// otherwise (`MMXA_SCAN_LO_EXCL`, `MMXA_SCAN_HI_INCL`); a bound of length 0 is open (from
/// the first key, to the last). `MMXA_SCAN_PREFIX`: every key that starts with `lo` (then
/// `hi` must be empty: length 0). `MMXA_SCAN_REVERSE`: from the high end down.
/// Inside a branch or local transaction of the calling thread the cursor sees its writes and,
/// under `isolation=serializable`, locks every key it reads and the gaps between them (no
/// phantoms) until the branch prepares or ends; only a thread working in that branch may use it
/// then. Outside, it reads committed data without locking, from any thread.
/// Stores the cursor's number in `*cursor` (never 0) and returns `MMXA_OK`; `MMXA_EINVAL` for a
/// NULL `cursor`, a NULL bound with a length, unknown flags or a prefix with a `hi`;
/// `MMXA_ETOOBIG` for a bound over `MMXA_MAX_KEY`; `MMXA_EROLLBACK` in a rollback-only branch.
/// Close every cursor with `mmxa_cursor_close`.
///
/// # Safety
/// `lo` points to `lo_len` readable bytes, `hi` to `hi_len` (or NULL with length 0); `cursor`
/// to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn mmxa_cursor_open(
    rmid: c_int,
    lo: *const c_void,
    lo_len: usize,
    hi: *const c_void,
    hi_len: usize,
    flags: c_long,
    cursor: *mut u64,
) -> c_int {
    trace::data("mmxa_cursor_open", rmid, || {
        data_call(|| {
            if cursor.is_null() {
                return Err(Error::Invalid("cursor is NULL".into()).into());
            }
            if flags & !SCAN_FLAGS != 0 {
                return Err(Error::Invalid(format!("unknown flags {flags:#x}")).into());
            }
            // SAFETY: the caller promises `lo_len` readable bytes at `lo`, `hi_len` at `hi`.
            let (lo, hi) = unsafe {
                (
                    bytes(lo, lo_len, MMXA_MAX_KEY, "lo")?,
                    bytes(hi, hi_len, MMXA_MAX_KEY, "hi")?,
                )
            };
            let mut range = if flags & MMXA_SCAN_PREFIX != 0 {
                if !hi.is_empty() || flags & (MMXA_SCAN_LO_EXCL | MMXA_SCAN_HI_INCL) != 0 {
                    return Err(Error::Invalid(
                        "MMXA_SCAN_PREFIX takes no hi bound and no bound flags".into(),
                    )
                    .into());
                }
                Range::prefix(lo)
            } else {
                let bound = |b: &[u8], inclusive: bool| match (b.is_empty(), inclusive) {
                    (true, _) => Bound::Unbounded,
                    (false, true) => Bound::Included(b.to_vec()),
                    (false, false) => Bound::Excluded(b.to_vec()),
                };
                let mut r = Range::all();
                r.lo = bound(lo, flags & MMXA_SCAN_LO_EXCL == 0);
                r.hi = bound(hi, flags & MMXA_SCAN_HI_INCL != 0);
                r
            };
            if flags & MMXA_SCAN_REVERSE != 0 {
                range = range.reversed();
            }
            let id = cursors::open(rmid, range)?;
            // SAFETY: checked non-NULL; the caller promises a writable `uint64_t`.
            unsafe { cursor.write(id) };
            Ok(MMXA_OK)
        })
    })
}

/// Reads the cursor's next key and value. `MMXA_OK`: copied into `key` and `value`, lengths in
/// `*key_len` and `*value_len`; `MMXA_NOTFOUND`: no more keys; `MMXA_EBUFSIZE`: `key_cap` or
/// `value_cap` is too small — the lengths needed are stored and the entry stays next (`key` and
/// `value` may be NULL with a capacity of 0 to ask the lengths); `MMXA_EINVAL`: an unknown
/// cursor, a NULL `key_len` or `value_len`, or a NULL buffer with a capacity; `MMXA_EPROTO`: a
/// cursor opened in a branch, used by a thread not working in it now; `MMXA_ELOCKTIMEOUT` /
/// `MMXA_EDEADLOCK`: a lock wait failed (the branch is rollback-only); `MMXA_ENOTOPEN`: the
/// cursor's rmid is not open in this thread.
///
/// # Safety
/// `key` points to `key_cap` writable bytes and `value` to `value_cap` (or NULL with capacity 0);
/// `key_len` and `value_len` to writable `size_t`s.
#[no_mangle]
pub unsafe extern "C" fn mmxa_cursor_next(
    cursor: u64,
    key: *mut c_void,
    key_cap: usize,
    key_len: *mut usize,
    value: *mut c_void,
    value_cap: usize,
    value_len: *mut usize,
) -> c_int {
    data_call(|| {
        if key_len.is_null() || value_len.is_null() {
            return Err(Error::Invalid("key_len or value_len is NULL".into()).into());
        }
        if (key.is_null() && key_cap != 0) || (value.is_null() && value_cap != 0) {
            return Err(Error::Invalid("a NULL buffer with a capacity".into()).into());
        }
        let taken = cursors::next(cursor, |k, v| {
            // SAFETY: both checked non-NULL; the caller promises writable `size_t`s.
            unsafe {
                key_len.write(k.len());
                value_len.write(v.len());
            }
            if k.len() > key_cap || v.len() > value_cap {
                return false;
            }
            // SAFETY: a buffer is non-NULL whenever its capacity is (checked above), the
            // lengths fit the capacities the caller promises writable, and our vectors cannot
            // overlap the caller's memory.
            unsafe {
                if !k.is_empty() {
                    std::ptr::copy_nonoverlapping(k.as_ptr(), key as *mut u8, k.len());
                }
                if !v.is_empty() {
                    std::ptr::copy_nonoverlapping(v.as_ptr(), value as *mut u8, v.len());
                }
            }
            true
        })?;
        match taken {
            None => Ok(MMXA_NOTFOUND),
            Some(true) => Ok(MMXA_OK),
            Some(false) => Err(Failure::new(
                MMXA_EBUFSIZE,
                format!("buffers of {key_cap} and {value_cap} bytes are too small"),
            )),
        }
    })
}

/// Closes a cursor (its locks stay with the branch). `MMXA_OK`, or `MMXA_EINVAL` for an unknown
/// cursor.
#[no_mangle]
pub extern "C" fn mmxa_cursor_close(cursor: u64) -> c_int {
    data_call(|| {
        cursors::close(cursor)?;
        Ok(MMXA_OK)
    })
}
