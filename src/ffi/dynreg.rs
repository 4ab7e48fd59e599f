//! Dynamic registration through the monitor's `ax_reg` and `ax_unreg` (XA reference §8).
//!
//! Owns: finding the two functions and calling them. They are looked up with
//! `dlsym(RTLD_DEFAULT, ...)` when `xa_open` is called through `mmxa_switch_dynamic`, never
//! linked: libmmxa.so has no undefined `ax_reg` symbol, so monitors that load it with `RTLD_NOW`
//! (Enduro/X) or do not use dynamic registration at all load it as before. The answers are
//! turned into a [`Registration`] for the registry, which decides what to do with them.

use super::abi::Xid as CXid;
use super::switch::xid_arg;
use super::trace;
use crate::error::Error;
use crate::registry::{Registrar, Registration};
use crate::rm::flags::StartMode;
use crate::xa::*;
use std::os::raw::{c_int, c_long};
use std::time::{Instant, SystemTime};

type AxReg = unsafe extern "C" fn(c_int, *mut CXid, c_long) -> c_int;
type AxUnreg = unsafe extern "C" fn(c_int, c_long) -> c_int;

/// The monitor's registration functions.
pub(super) struct Ax {
    reg: AxReg,
    unreg: AxUnreg,
}

impl Ax {
    /// Looks up `ax_reg` and `ax_unreg` in the process's global scope.
    pub(super) fn resolve() -> Result<Ax, Error> {
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names has no other precondition.
        let (reg, unreg) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"ax_reg".as_ptr()),
                libc::dlsym(libc::RTLD_DEFAULT, c"ax_unreg".as_ptr()),
            )
        };
        if reg.is_null() || unreg.is_null() {
            let missing = match (reg.is_null(), unreg.is_null()) {
                (true, true) => "ax_reg and ax_unreg",
                (true, false) => "ax_reg",
                _ => "ax_unreg",
            };
            return Err(Error::Io(format!(
                "mmxa_switch_dynamic: the transaction monitor does not export {missing} \
                 (dlsym(RTLD_DEFAULT) found nothing); load the monitor's library with \
                 RTLD_GLOBAL or link it, or use mmxa_switch (static registration)"
            )));
        }
        // SAFETY: the XA specification fixes these functions' C signatures.
        unsafe {
            Ok(Ax {
                reg: std::mem::transmute::<*mut libc::c_void, AxReg>(reg),
                unreg: std::mem::transmute::<*mut libc::c_void, AxUnreg>(unreg),
            })
        }
    }
}

fn tm_code_name(code: c_int) -> String {
    let name = match code {
        TM_JOIN => "TM_JOIN",
        TM_RESUME => "TM_RESUME",
        TM_OK => "TM_OK",
        TMER_TMERR => "TMER_TMERR",
        TMER_INVAL => "TMER_INVAL",
        TMER_PROTO => "TMER_PROTO",
        _ => "an unknown code",
    };
    format!("{name} ({code})")
}

impl Registrar for Ax {
    fn register(&self, rmid: i32) -> Result<Registration, Error> {
        let mut x = CXid {
            formatID: NULLXID,
            gtrid_length: 0,
            bqual_length: 0,
            data: [0; XIDDATASIZE],
        };
        let (wall, start) = (SystemTime::now(), Instant::now());
        // SAFETY: `x` is a writable XID for the duration of the call, as ax_reg requires.
        let code = unsafe { (self.reg)(rmid, &mut x, TMNOFLAGS) };
        trace::ax("ax_reg", rmid, Some(&x), wall, start, code);
        let mode = match code {
            TM_OK if x.formatID == NULLXID => return Ok(Registration::Outside),
            TM_OK => StartMode::New,
            TM_JOIN => StartMode::Join,
            TM_RESUME => StartMode::Resume,
            _ => {
                return Err(Error::Register(format!(
                    "ax_reg(rmid {rmid}) answered {}",
                    tm_code_name(code)
                )))
            }
        };
        // SAFETY: `x` is a valid XID on our stack.
        let xid = unsafe { xid_arg(&x) }.map_err(|e| {
            Error::Register(format!(
                "ax_reg(rmid {rmid}) answered {} with {e}",
                tm_code_name(code)
            ))
        })?;
        Ok(Registration::Branch(xid, mode))
    }

    fn unregister(&self, rmid: i32) -> Result<(), Error> {
        let (wall, start) = (SystemTime::now(), Instant::now());
        // SAFETY: ax_unreg takes no pointer.
        let code = unsafe { (self.unreg)(rmid, TMNOFLAGS) };
        trace::ax("ax_unreg", rmid, None, wall, start, code);
        if code == TM_OK {
            Ok(())
        } else {
            Err(Error::Register(format!(
                "ax_unreg(rmid {rmid}) answered {}",
                tm_code_name(code)
            )))
        }
    }
}
