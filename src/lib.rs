//! mmxa: an embeddable, crash-safe X/Open XA resource manager.
//!
//! The crate is a safe core (XID, open string, log, locks, the XA state machine, recovery)
//! behind one thin unsafe boundary, [`ffi`], which is all a C transaction monitor sees:
//! `struct xa_switch_t mmxa_switch` and the `mmxa_*` data API.
#![deny(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod config;
pub mod crash;
pub mod cursors;
pub mod error;
pub mod ffi;
mod fxhash;
pub mod inherit;
mod janitor;
pub mod log;
pub mod registry;
pub mod rm;
pub mod shm;
pub mod status;
pub mod xa;
pub mod xid;
