//! The fork handler: a child created by `fork` gets `/dev/null` in place of every descriptor
//! listed in [`crate::inherit`], so its copies cannot keep a store's lock or sockets
//! alive after this process dies.
//!
//! Installed once per loaded copy of the library, at the first `xa_open`. glibc's
//! `pthread_atfork` records the calling object, and removes the handler when the library is
//! unloaded with `dlclose`, so a later `fork` never calls into unmapped code.

use crate::inherit;
use std::sync::Once;

static INSTALLED: Once = Once::new();

/// Runs in the child, between `fork` and its return: async-signal-safe calls only.
extern "C" fn in_child() {
    // SAFETY: open, dup3 and close are async-signal-safe; the path is a NUL-terminated literal.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        inherit::for_each(|fd| {
            libc::dup3(null, fd, libc::O_CLOEXEC);
        });
        libc::close(null);
    }
}

/// Installs the handler (once).
pub fn install() {
    INSTALLED.call_once(|| {
        // SAFETY: registers a handler with the C signature pthread_atfork expects. Failure
        // (ENOMEM) leaves children keeping copies, as without the handler.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}
