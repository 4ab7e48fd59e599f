//! The panic guard and the thread-local last-error message.
//!
//! The message buffer is a fixed array in a const-initialised thread-local: it has no destructor,
//! so no thread-exit hook is registered and the library can be `dlclose`d safely.

use std::cell::RefCell;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

const MSG_CAP: usize = 512;

thread_local! {
    static LAST_ERROR: RefCell<[u8; MSG_CAP]> = const { RefCell::new([0; MSG_CAP]) };
}

/// Stores `msg` (truncated at a UTF-8 boundary, NUL-terminated) as this thread's last error.
pub fn set_last_error(msg: &str) {
    let mut end = msg.len().min(MSG_CAP - 1);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf[..end].copy_from_slice(&msg.as_bytes()[..end]);
            buf[end] = 0;
        }
    });
}

/// Clears this thread's last error.
pub fn clear_last_error() {
    set_last_error("");
}

/// Pointer to this thread's last-error buffer; valid until the thread's next mmxa call.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|cell| cell.as_ptr() as *const c_char)
        .unwrap_or(c"".as_ptr())
}

/// Runs `f`, turning a panic into `on_panic` (and a message) instead of unwinding into C.
pub fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("internal error (panic): {what}"));
            on_panic
        }
    }
}
