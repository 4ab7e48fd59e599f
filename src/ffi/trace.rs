//! Call tracing: one line per XA entry point, data call, and `ax_reg`/`ax_unreg` call mmxa
//! makes, appended to a file.
//!
//! Turned on by the environment variable `MMXA_TRACE=PATH` (read once, at the first call into
//! the library) or by `trace=PATH` in an open string (at that `xa_open`, before the store is
//! opened). There is one trace file per process and copy of the library: the first one turned
//! on stays until the library is unloaded, and a later different path is ignored.
//!
//! Invariants:
//! - off costs one relaxed atomic load per call;
//! - each line is written with a single `write(2)` to a file opened with `O_APPEND`, so lines
//!   from concurrent threads and processes never interleave;
//! - the file descriptor is never closed while calls may run (only when the library is
//!   unloaded), so a trace write can never land in a descriptor reused for a log segment;
//! - tracing never changes a result and never panics into C.
//!
//! Line format (space-separated; every field but the time and the entry name is `key=value`):
//!
//! ```text
//! 2025-11-21T07:25:31.123456Z pid=4242 tid=4243 rmid=0 xa_start xid=1.6774.6231 flags=0x0 rc=XA_OK(0) us=17
//! ```
//!
//! - time: the call's start, UTC, RFC 3339 with microseconds;
//! - `tid`: the kernel thread id (`gettid`);
//! - `xid`: `formatID.gtrid-hex.bqual-hex` (formatID in decimal), `null` for the null XID,
//!   `invalid(f,g,b)` for lengths out of range, `-` for calls without one (data calls,
//!   `xa_open`, `xa_recover`, ...);
//! - `flags`: in hex, `-` for data calls;
//! - `rc`: the return code's name and number (`xa_recover`: `count(n)` for `n` XIDs);
//! - `us`: the call's duration in microseconds.

use super::abi::Xid as CXid;
use crate::xa::*;
use std::fmt::Write as _;
use std::os::fd::IntoRawFd;
use std::os::raw::{c_int, c_long};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `MMXA_TRACE` has not been looked at yet.
const UNSET: i32 = -2;
/// Tracing is off.
const OFF: i32 = -1;

/// The trace file's descriptor, or [`UNSET`] / [`OFF`].
static FD: AtomicI32 = AtomicI32::new(UNSET);

/// How to name a call's return code.
#[derive(Clone, Copy)]
pub(super) enum Rc {
    /// An `xa_*` code.
    Xa,
    /// `xa_recover`: a count, or an `xa_*` error.
    Count,
    /// An `MMXA_*` code.
    Data,
    /// An `ax_reg`/`ax_unreg` code (`TM_*`, `TMER_*`).
    Ax,
}

/// The trace descriptor, resolving `MMXA_TRACE` at the first call. Hot path: one relaxed load.
#[inline]
fn fd() -> i32 {
    let fd = FD.load(Ordering::Relaxed);
    if fd != UNSET {
        return fd;
    }
    from_env()
}

#[cold]
fn from_env() -> i32 {
    let fd = match std::env::var_os("MMXA_TRACE").filter(|p| !p.is_empty()) {
        None => OFF,
        Some(path) => match open(Path::new(&path)) {
            Ok(fd) => fd,
            Err(e) => {
                // Nobody else can be told: the variable was set by someone who reads stderr.
                eprintln!("mmxa: MMXA_TRACE: {e}; tracing is off");
                OFF
            }
        },
    };
    match FD.compare_exchange(UNSET, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fd,
        Err(current) => {
            // Another thread got there first.
            close(fd);
            current
        }
    }
}

fn open(path: &Path) -> Result<i32, String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(IntoRawFd::into_raw_fd)
        .map_err(|e| format!("cannot open trace file {}: {e}", path.display()))
}

fn close(fd: i32) {
    if fd >= 0 {
        // SAFETY: `fd` came from `open` and was never published.
        unsafe { libc::close(fd) };
    }
}

/// Turns tracing on into `path` (from an open string's `trace=`), unless it is on already.
pub fn enable(path: &Path) -> Result<(), String> {
    if fd() >= 0 {
        return Ok(());
    }
    let fd = open(path)?;
    if FD
        .compare_exchange(OFF, fd, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        close(fd);
    }
    Ok(())
}

/// Closes the trace file when the library is unloaded; no call runs any more.
pub fn unload() {
    close(FD.swap(OFF, Ordering::AcqRel));
}

/// Runs an XA entry point, tracing it when tracing is on.
#[inline]
pub(super) fn xa(
    entry: &'static str,
    rmid: c_int,
    xid: *const CXid,
    flags: c_long,
    rc: Rc,
    f: impl FnOnce() -> c_int,
) -> c_int {
    if fd() == OFF {
        return f();
    }
    traced(entry, rmid, xid, Some(flags), rc, f)
}

/// Runs `xa_open`, which may turn tracing on: the call is timed always (it is rare) and traced
/// when tracing is on afterwards, so the `xa_open` that turned it on is in the file.
pub(super) fn open_entry(
    entry: &'static str,
    rmid: c_int,
    flags: c_long,
    f: impl FnOnce() -> c_int,
) -> c_int {
    let (wall, start) = (SystemTime::now(), Instant::now());
    let code = f();
    write_line(wall, start, entry, rmid, None, Some(flags), Rc::Xa, code);
    code
}

/// Runs a data call, tracing it when tracing is on.
#[inline]
pub(super) fn data(entry: &'static str, rmid: c_int, f: impl FnOnce() -> c_int) -> c_int {
    if fd() == OFF {
        return f();
    }
    traced(entry, rmid, std::ptr::null(), None, Rc::Data, f)
}

/// Traces an `ax_reg`/`ax_unreg` call mmxa made; `xid` is what `ax_reg` answered.
pub(super) fn ax(
    entry: &'static str,
    rmid: c_int,
    xid: Option<&CXid>,
    wall: SystemTime,
    start: Instant,
    code: c_int,
) {
    if fd() == OFF {
        return;
    }
    let xid = xid.map_or(std::ptr::null(), |x| x as *const CXid);
    write_line(
        wall,
        start,
        entry,
        rmid,
        Some(xid),
        Some(TMNOFLAGS),
        Rc::Ax,
        code,
    );
}

#[cold]
fn traced(
    entry: &'static str,
    rmid: c_int,
    xid: *const CXid,
    flags: Option<c_long>,
    rc: Rc,
    f: impl FnOnce() -> c_int,
) -> c_int {
    let (wall, start) = (SystemTime::now(), Instant::now());
    let code = f();
    let xid = (!xid.is_null()).then_some(xid);
    write_line(wall, start, entry, rmid, xid, flags, rc, code);
    code
}

/// Formats and writes one line; `xid` is `None` for calls that take no XID.
#[allow(clippy::too_many_arguments)]
fn write_line(
    wall: SystemTime,
    start: Instant,
    entry: &str,
    rmid: c_int,
    xid: Option<*const CXid>,
    flags: Option<c_long>,
    rc: Rc,
    code: c_int,
) {
    let fd = fd();
    if fd < 0 {
        return;
    }
    let us = start.elapsed().as_micros();
    // Formatting allocates and could in theory panic; neither may reach C.
    let line = std::panic::catch_unwind(|| {
        let mut s = String::with_capacity(256);
        rfc3339(&mut s, wall);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let _ = write!(
            s,
            " pid={} tid={tid} rmid={rmid} {entry} xid=",
            std::process::id()
        );
        match xid {
            None => s.push('-'),
            // SAFETY: the entry point's contract: NULL or a readable XID.
            Some(p) => xid_text(&mut s, unsafe { p.as_ref() }),
        }
        match flags {
            Some(f) => {
                let _ = write!(s, " flags={f:#x}");
            }
            None => s.push_str(" flags=-"),
        }
        let _ = writeln!(s, " rc={}({code}) us={us}", rc_name(rc, code));
        s
    });
    if let Ok(line) = line {
        // One write(2) per line: O_APPEND makes it land whole at the end of the file. A short
        // or failed write only loses trace text.
        // SAFETY: `line` is valid for its length; `fd` stays open while the library is loaded.
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

fn xid_text(s: &mut String, x: Option<&CXid>) {
    let Some(x) = x else {
        s.push('-');
        return;
    };
    let (f, g, b) = (x.formatID, x.gtrid_length, x.bqual_length);
    if f == NULLXID {
        s.push_str("null");
        return;
    }
    let max = MAXGTRIDSIZE as c_long;
    if !(0..=max).contains(&g) || !(0..=max).contains(&b) {
        let _ = write!(s, "invalid({f},{g},{b})");
        return;
    }
    let _ = write!(s, "{f}.");
    let data = x.data.map(|c| c as u8);
    let (g, b) = (g as usize, b as usize);
    for byte in &data[..g] {
        let _ = write!(s, "{byte:02x}");
    }
    s.push('.');
    for byte in &data[g..g + b] {
        let _ = write!(s, "{byte:02x}");
    }
}

fn rc_name(rc: Rc, code: c_int) -> &'static str {
    match rc {
        Rc::Count if code >= 0 => "count",
        Rc::Xa | Rc::Count => crate::xa::code_name(code).unwrap_or("unknown"),
        Rc::Data => crate::status::code_name(code).unwrap_or("unknown"),
        Rc::Ax => match code {
            TM_JOIN => "TM_JOIN",
            TM_RESUME => "TM_RESUME",
            TM_OK => "TM_OK",
            TMER_TMERR => "TMER_TMERR",
            TMER_INVAL => "TMER_INVAL",
            TMER_PROTO => "TMER_PROTO",
            _ => "unknown",
        },
    }
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339(s: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    );
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MMXA_NOTFOUND;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_453), (2025, 12, 31));
        let mut s = String::new();
        rfc3339(
            &mut s,
            UNIX_EPOCH + Duration::new(1_709_164_800 + 3_723, 4_567_000),
        );
        assert_eq!(s, "2024-02-29T01:02:03.004567Z");
    }

    #[test]
    fn xids() {
        let mut x = CXid {
            formatID: 7,
            gtrid_length: 2,
            bqual_length: 1,
            data: [0; XIDDATASIZE],
        };
        x.data[..3].copy_from_slice(&[0x61, 0xff_u8 as _, 0x0a]);
        let mut s = String::new();
        xid_text(&mut s, Some(&x));
        assert_eq!(s, "7.61ff.0a");
        x.formatID = NULLXID;
        s.clear();
        xid_text(&mut s, Some(&x));
        assert_eq!(s, "null");
        x.formatID = 1;
        x.gtrid_length = 65;
        s.clear();
        xid_text(&mut s, Some(&x));
        assert_eq!(s, "invalid(1,65,1)");
    }

    #[test]
    fn names() {
        assert_eq!(rc_name(Rc::Xa, XAER_DUPID), "XAER_DUPID");
        assert_eq!(rc_name(Rc::Count, 3), "count");
        assert_eq!(rc_name(Rc::Count, XAER_PROTO), "XAER_PROTO");
        assert_eq!(rc_name(Rc::Data, MMXA_NOTFOUND), "MMXA_NOTFOUND");
        assert_eq!(rc_name(Rc::Ax, TM_RESUME), "TM_RESUME");
        assert_eq!(rc_name(Rc::Ax, 99), "unknown");
    }
}
