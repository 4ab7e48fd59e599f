//! Helpers shared by the core state-machine tests (`tests/state_tables.rs`, `tests/model.rs`):
//! opening an `Rm` in a temporary directory, XIDs, and turning results into plain codes.
#![allow(dead_code)] // each test binary uses a different subset

use mmxa::config::{Config, SyncMode};
use mmxa::error::{Error, XaOk};
use mmxa::rm::flags::Scan;
use mmxa::rm::Rm;
use mmxa::status::*;
use mmxa::xid::Xid;
use std::path::Path;
use std::time::Duration;

/// A store configuration for tests: 4 MiB segments, the given sync mode and lock timeout.
pub fn config(dir: &Path, sync: SyncMode, lock_timeout: Duration) -> Config {
    let mut cfg = Config::new(dir);
    cfg.segment_size = 4 << 20;
    cfg.sync = sync;
    cfg.lock_timeout = lock_timeout;
    cfg
}

/// Opens (or reopens) a store, panicking with the reason on failure.
pub fn open(cfg: &Config) -> Rm {
    Rm::open(cfg.clone()).unwrap_or_else(|e| panic!("Rm::open({}): {e}", cfg.dir.display()))
}

/// An XID with formatID 1.
pub fn xid(gtrid: &[u8], bqual: &[u8]) -> Xid {
    Xid::from_parts(1, gtrid, bqual).expect("valid test XID")
}

/// The XA code of a result: `Ok` carries `XA_OK`/`XA_RDONLY`, `Err` its code.
pub fn code<T: XaOk>(r: Result<T, Error>) -> i32 {
    match r {
        Ok(v) => v.xa_code(),
        Err(e) => e.xa_code(),
    }
}

/// The XA code of a `()` result (`Rm::heuristic`, `Rm::close_toc`).
pub fn code0(r: Result<(), Error>) -> i32 {
    code(r)
}

/// The `MMXA_*` code of a data-call result (`MMXA_OK` on success).
pub fn dcode<T>(r: &Result<T, Error>) -> i32 {
    match r {
        Ok(_) => MMXA_OK,
        Err(e) => e.mmxa_code(),
    }
}

/// Scan flags for `Rm::recover`.
pub fn scan(start: bool, end: bool) -> Scan {
    Scan { start, end }
}

/// The symbolic name of an XA return code, for failure messages.
pub fn xa_name(code: i32) -> String {
    mmxa::xa::code_name(code).map_or_else(|| format!("code {code}"), String::from)
}

/// The symbolic name of an `MMXA_*` code, for failure messages.
pub fn mmxa_name(code: i32) -> String {
    mmxa::status::code_name(code).map_or_else(|| format!("code {code}"), String::from)
}
