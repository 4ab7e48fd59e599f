//! The C layouts of the standard `xa.h`: `struct xid_t` (`XID`) and `struct xa_switch_t`.
//!
//! Owns: byte-exact ABI types, checked at compile time against the sizes in the XA reference
//! (LP64: `XID` 152 bytes, `xa_switch_t` 128 bytes). cbindgen copies them into `include/xa.h`.

use crate::xa::{RMNAMESZ, XIDDATASIZE};
use std::os::raw::{c_char, c_int, c_long};

/// A transaction branch identifier (`XID`, `struct xid_t`).
///
/// `data[0..gtrid_length)` is the global transaction id, followed immediately by
/// `bqual_length` bytes of branch qualifier. `formatID == -1` is the null XID.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_snake_case)] // the standard's field name
pub struct Xid {
    /// Format identifier: -1 null XID, 0 OSI CCR naming, other values TM-defined.
    pub formatID: c_long,
    /// Length of the gtrid, 1..=64.
    pub gtrid_length: c_long,
    /// Length of the bqual, 1..=64.
    pub bqual_length: c_long,
    /// gtrid bytes followed by bqual bytes; the rest is unused.
    pub data: [c_char; XIDDATASIZE],
}

/// The resource manager switch (`struct xa_switch_t`): the RM's name, its capability flags and
/// its ten entry points.
#[repr(C)]
pub struct XaSwitch {
    /// Name of the resource manager, NUL-terminated.
    pub name: [c_char; RMNAMESZ],
    /// Options: `TMNOFLAGS`, `TMREGISTER`, `TMNOMIGRATE`, `TMUSEASYNC`.
    pub flags: c_long,
    /// Must be 0.
    pub version: c_long,
    /// `xa_open`.
    pub xa_open_entry: unsafe extern "C" fn(*mut c_char, c_int, c_long) -> c_int,
    /// `xa_close`.
    pub xa_close_entry: unsafe extern "C" fn(*mut c_char, c_int, c_long) -> c_int,
    /// `xa_start`.
    pub xa_start_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_end`.
    pub xa_end_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_rollback`.
    pub xa_rollback_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_prepare`.
    pub xa_prepare_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_commit`.
    pub xa_commit_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_recover`.
    pub xa_recover_entry: unsafe extern "C" fn(*mut Xid, c_long, c_int, c_long) -> c_int,
    /// `xa_forget`.
    pub xa_forget_entry: unsafe extern "C" fn(*mut Xid, c_int, c_long) -> c_int,
    /// `xa_complete`.
    pub xa_complete_entry: unsafe extern "C" fn(*mut c_int, *mut c_int, c_int, c_long) -> c_int,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<Xid>() == 152);
    assert!(std::mem::align_of::<Xid>() == 8);
    assert!(std::mem::size_of::<XaSwitch>() == 128);
    assert!(std::mem::offset_of!(Xid, data) == 24);
    assert!(std::mem::offset_of!(XaSwitch, flags) == 32);
    assert!(std::mem::offset_of!(XaSwitch, xa_open_entry) == 48);
    assert!(std::mem::offset_of!(XaSwitch, xa_complete_entry) == 120);
};
