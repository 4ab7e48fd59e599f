//! The C boundary: the only module that sees raw pointers and `extern "C"`.
//!
//! Owns: argument validation and conversion (pointers, lengths, flags, rmids) into safe types,
//! the panic guard around every entry point, and the thread-local last-error message.
//! Invariant: no panic unwinds into C, no output parameter is written unless the call succeeds,
//! and nothing here keeps a caller's pointer after returning.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
pub mod cursor;
pub mod data;
mod dynreg;
mod fork;
mod guard;
pub mod switch;
mod trace;
pub mod txn;

/// Runs when the library is unloaded (`dlclose` or process exit): see [`crate::registry::unload`].
/// The trace file is closed last, when no store is open any more.
extern "C" fn on_unload() {
    let _ = std::panic::catch_unwind(crate::registry::unload);
    let _ = std::panic::catch_unwind(trace::unload);
}

#[used]
#[link_section = ".fini_array"]
static ON_UNLOAD: extern "C" fn() = on_unload;
