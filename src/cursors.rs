//! The cursors this process has open, by number: what `mmxa_cursor_*` hand to C instead of a
//! pointer, so a closed or made-up cursor is an error, never a wild pointer.
//!
//! Owns: numbering cursors and finding one for a call; an entry the caller's buffers were too
//! small for stays next. A cursor is used under its own mutex, so two threads calling it at
//! once take turns (each call is bounded by the lock timeout) and other cursors go on.

use crate::error::{Error, Result};
use crate::fxhash::FxHashMap;
use crate::registry;
use crate::rm::{Range, Scan};
use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

struct Cursor {
    rmid: i32,
    scan: Scan,
}

static CURSORS: Lazy<Mutex<FxHashMap<u64, Arc<Mutex<Cursor>>>>> =
    Lazy::new(|| Mutex::new(FxHashMap::default()));
static NEXT: AtomicU64 = AtomicU64::new(1);

fn table() -> MutexGuard<'static, FxHashMap<u64, Arc<Mutex<Cursor>>>> {
    CURSORS.lock().unwrap_or_else(|p| p.into_inner())
}

fn unknown(id: u64) -> Error {
    Error::Invalid(format!("no open cursor {id} (closed, or never opened)"))
}

/// Opens a cursor over `range` on `rmid` for the calling thread (see [`crate::rm::Rm::scan`])
/// and returns its number (never 0).
pub fn open(rmid: i32, range: Range) -> Result<u64> {
    let scan = registry::data_call(rmid, |rm, toc| rm.scan(toc, range))?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    table().insert(id, Arc::new(Mutex::new(Cursor { rmid, scan })));
    Ok(id)
}

/// Offers the next entry of cursor `id` to `take`, which returns whether it took it (else the
/// entry stays next). `Ok(None)` at the end; `Ok(Some(taken))` otherwise.
pub fn next(id: u64, take: impl FnOnce(&[u8], &[u8]) -> bool) -> Result<Option<bool>> {
    let c = table().get(&id).cloned().ok_or_else(|| unknown(id))?;
    let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
    let c = &mut *c;
    let scan = &mut c.scan;
    let taken = registry::data_call(c.rmid, |rm, toc| {
        Ok(rm.scan_peek(toc, scan)?.map(|(k, v)| take(k, v)))
    })?;
    if taken == Some(true) {
        c.scan.advance();
    }
    Ok(taken)
}

/// Closes cursor `id` (0, never a cursor's number, is nothing to close).
pub fn close(id: u64) -> Result<()> {
    if id == 0 {
        return Ok(());
    }
    table().remove(&id).map(|_| ()).ok_or_else(|| unknown(id))
}
