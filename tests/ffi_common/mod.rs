//! Helpers for tests that drive mmxa through its real C entry points (`mmxa_switch` and the
//! `mmxa_*` data API), as a transaction monitor linked against the library would.
//!
//! Every call goes through the function pointers of the exported switch, so the tests exercise
//! the same code path as C callers: the panic guard, argument conversion and the per-thread
//! registry. A [`Rm`] is only a `(rmid, open string)` pair: XA state lives in the calling OS
//! thread, so every thread that uses it must call [`Rm::open`] itself.
#![allow(dead_code)] // each test binary uses a different subset

use mmxa::ffi::abi::{XaSwitch, Xid};
use mmxa::ffi::cursor::{mmxa_cursor_close, mmxa_cursor_next, mmxa_cursor_open};
use mmxa::ffi::data::{mmxa_delete, mmxa_get, mmxa_get_for_update, mmxa_last_error, mmxa_put};
use mmxa::ffi::switch::mmxa_switch;
use mmxa::status::{MMXA_EBUFSIZE, MMXA_NOTFOUND, MMXA_OK};
use mmxa::xa::{TMENDRSCAN, TMNOFLAGS, TMSTARTRSCAN, XIDDATASIZE};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_long};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The exported switch, read through a raw pointer (it is a `static mut` for C's sake, and
/// nothing ever writes it).
pub fn switch() -> &'static XaSwitch {
    // SAFETY: `mmxa_switch` is initialised statically and never written, so a shared
    // reference to it is never aliased by a mutable one.
    unsafe { &*std::ptr::addr_of!(mmxa_switch) }
}

/// An XID with `formatID`, `gtrid` and `bqual` (each 1..=64 bytes).
pub fn xid(format_id: i64, gtrid: &[u8], bqual: &[u8]) -> Xid {
    assert!(gtrid.len() + bqual.len() <= XIDDATASIZE);
    let mut x = Xid {
        formatID: format_id as c_long,
        gtrid_length: gtrid.len() as c_long,
        bqual_length: bqual.len() as c_long,
        data: [0; XIDDATASIZE],
    };
    for (d, s) in x.data.iter_mut().zip(gtrid.iter().chain(bqual)) {
        *d = *s as c_char;
    }
    x
}

/// The identity of an XID as comparable values: `(formatID, gtrid, bqual)`.
#[allow(clippy::unnecessary_cast)] // `c_long` is `i64` only on LP64
pub fn xid_key(x: &Xid) -> (i64, Vec<u8>, Vec<u8>) {
    let g = x.gtrid_length as usize;
    let b = x.bqual_length as usize;
    let bytes: Vec<u8> = x.data.iter().map(|&c| c as u8).collect();
    (
        x.formatID as i64,
        bytes[..g].to_vec(),
        bytes[g..g + b].to_vec(),
    )
}

/// The open string for a store in `dir` with extra `key=value` settings (e.g.
/// `"lock_timeout_ms=50"`); small segments keep the tests' disk use down.
pub fn info(dir: &Path, extra: &str) -> String {
    let mut s = format!("dir={};segment_mb=4", dir.display());
    if !extra.is_empty() {
        s.push(';');
        s.push_str(extra);
    }
    s
}

/// This thread's last error message from mmxa.
pub fn last_error() -> String {
    // SAFETY: mmxa_last_error never returns NULL and the buffer is NUL-terminated; it is
    // copied before the next mmxa call in this thread.
    unsafe { CStr::from_ptr(mmxa_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts an XA or data-API return code, naming the call and mmxa's message on failure.
#[track_caller]
pub fn check(what: &str, got: i32, want: i32) {
    if got != want {
        panic!(
            "{what}: got {got}, expected {want} (mmxa_last_error: {:?})",
            last_error()
        );
    }
}

/// `mmxa_get` or `mmxa_get_for_update`.
type GetFn = unsafe extern "C" fn(
    std::os::raw::c_int,
    *const std::ffi::c_void,
    usize,
    *mut std::ffi::c_void,
    usize,
    *mut usize,
) -> std::os::raw::c_int;

/// One resource manager instance as a monitor sees it: an rmid and its open string.
#[derive(Clone, Debug)]
pub struct Rm {
    /// The rmid passed to every call.
    pub rmid: i32,
    /// The `xa_open`/`xa_close` info string.
    pub info: String,
}

impl Rm {
    /// An instance over `dir` under `rmid`, with `extra` settings appended to the open string.
    pub fn new(rmid: i32, dir: &Path, extra: &str) -> Rm {
        Rm {
            rmid,
            info: info(dir, extra),
        }
    }

    fn info_c(&self) -> CString {
        CString::new(self.info.as_str()).expect("open string without NUL")
    }

    /// `xa_open(info, rmid, TMNOFLAGS)` in the calling thread.
    pub fn open(&self) -> i32 {
        let s = self.info_c();
        // SAFETY: a NUL-terminated string that outlives the call; xa_open only reads it.
        unsafe { (switch().xa_open_entry)(s.as_ptr() as *mut c_char, self.rmid, TMNOFLAGS) }
    }

    /// `xa_close(info, rmid, TMNOFLAGS)` in the calling thread.
    pub fn close(&self) -> i32 {
        let s = self.info_c();
        // SAFETY: as in `open`.
        unsafe { (switch().xa_close_entry)(s.as_ptr() as *mut c_char, self.rmid, TMNOFLAGS) }
    }

    /// Opens in the calling thread and asserts `XA_OK`.
    #[track_caller]
    pub fn open_ok(&self) {
        check(&format!("xa_open(rmid {})", self.rmid), self.open(), 0);
    }

    /// Closes in the calling thread and asserts `XA_OK`.
    #[track_caller]
    pub fn close_ok(&self) {
        check(&format!("xa_close(rmid {})", self.rmid), self.close(), 0);
    }

    /// `xa_start`.
    pub fn start(&self, x: &Xid, flags: c_long) -> i32 {
        let mut x = *x;
        // SAFETY: a valid, writable XID on our stack for the duration of the call.
        unsafe { (switch().xa_start_entry)(&mut x, self.rmid, flags) }
    }

    /// `xa_end`.
    pub fn end(&self, x: &Xid, flags: c_long) -> i32 {
        let mut x = *x;
        // SAFETY: as in `start`.
        unsafe { (switch().xa_end_entry)(&mut x, self.rmid, flags) }
    }

    /// `xa_prepare(xid, rmid, TMNOFLAGS)`.
    pub fn prepare(&self, x: &Xid) -> i32 {
        let mut x = *x;
        // SAFETY: as in `start`.
        unsafe { (switch().xa_prepare_entry)(&mut x, self.rmid, TMNOFLAGS) }
    }

    /// `xa_commit` (`flags` is `TMNOFLAGS` or `TMONEPHASE`).
    pub fn commit(&self, x: &Xid, flags: c_long) -> i32 {
        let mut x = *x;
        // SAFETY: as in `start`.
        unsafe { (switch().xa_commit_entry)(&mut x, self.rmid, flags) }
    }

    /// `xa_rollback(xid, rmid, TMNOFLAGS)`.
    pub fn rollback(&self, x: &Xid) -> i32 {
        let mut x = *x;
        // SAFETY: as in `start`.
        unsafe { (switch().xa_rollback_entry)(&mut x, self.rmid, TMNOFLAGS) }
    }

    /// `xa_forget(xid, rmid, TMNOFLAGS)`.
    pub fn forget(&self, x: &Xid) -> i32 {
        let mut x = *x;
        // SAFETY: as in `start`.
        unsafe { (switch().xa_forget_entry)(&mut x, self.rmid, TMNOFLAGS) }
    }

    /// One raw `xa_recover` call into `buf`.
    pub fn recover_into(&self, buf: &mut [Xid], flags: c_long) -> i32 {
        // SAFETY: `buf` holds `buf.len()` writable XIDs.
        unsafe {
            (switch().xa_recover_entry)(buf.as_mut_ptr(), buf.len() as c_long, self.rmid, flags)
        }
    }

    /// A whole recovery scan the way LIXA's TM runs it: `TMSTARTRSCAN`, then `TMNOFLAGS`
    /// while the array comes back full, with a small array so the cursor is exercised.
    /// Panics on an error code.
    #[track_caller]
    pub fn recover_all(&self) -> Vec<Xid> {
        let mut out = Vec::new();
        let mut buf = [xid(0, b"-", b"-"); 3];
        let mut flags = TMSTARTRSCAN;
        loop {
            let n = self.recover_into(&mut buf, flags);
            if n < 0 {
                check("xa_recover", n, 0);
            }
            let n = n as usize;
            assert!(n <= buf.len(), "xa_recover returned {n} > count");
            out.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                break;
            }
            flags = TMNOFLAGS;
        }
        // The scan ended implicitly; a trailing TMENDRSCAN with count 0 is accepted anyway.
        let n = self.recover_into(&mut [], TMENDRSCAN);
        check("xa_recover(TMENDRSCAN, count 0)", n, 0);
        out
    }

    /// [`Rm::recover_all`] as sorted, comparable identities.
    #[track_caller]
    pub fn recover_keys(&self) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        let mut v: Vec<_> = self.recover_all().iter().map(xid_key).collect();
        v.sort();
        v
    }

    /// `mmxa_put`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> i32 {
        // SAFETY: both slices are valid for their lengths during the call.
        unsafe {
            mmxa_put(
                self.rmid,
                key.as_ptr().cast(),
                key.len(),
                value.as_ptr().cast(),
                value.len(),
            )
        }
    }

    /// `mmxa_delete`.
    pub fn delete(&self, key: &[u8]) -> i32 {
        // SAFETY: `key` is valid for its length during the call.
        unsafe { mmxa_delete(self.rmid, key.as_ptr().cast(), key.len()) }
    }

    /// `mmxa_get`: `Ok(Some(value))`, `Ok(None)` for `MMXA_NOTFOUND`, or `Err(code)`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, i32> {
        self.read(key, mmxa_get)
    }

    /// `mmxa_get_for_update`, answered as [`Rm::get`].
    pub fn get_for_update(&self, key: &[u8]) -> Result<Option<Vec<u8>>, i32> {
        self.read(key, mmxa_get_for_update)
    }

    fn read(&self, key: &[u8], call: GetFn) -> Result<Option<Vec<u8>>, i32> {
        let mut len = 0usize;
        // SAFETY: NULL buffer with length 0 asks for the length; `len` is writable.
        let rc = unsafe {
            call(
                self.rmid,
                key.as_ptr().cast(),
                key.len(),
                std::ptr::null_mut(),
                0,
                &mut len,
            )
        };
        match rc {
            MMXA_NOTFOUND => return Ok(None),
            MMXA_OK if len == 0 => return Ok(Some(Vec::new())),
            MMXA_EBUFSIZE => {}
            other => return Err(other),
        }
        let mut buf = vec![0u8; len];
        let mut got = 0usize;
        // SAFETY: `buf` holds `buf.len()` writable bytes; `got` is writable.
        let rc = unsafe {
            call(
                self.rmid,
                key.as_ptr().cast(),
                key.len(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut got,
            )
        };
        match rc {
            MMXA_OK => {
                buf.truncate(got);
                Ok(Some(buf))
            }
            MMXA_NOTFOUND => Ok(None),
            other => Err(other),
        }
    }

    /// Every entry of a cursor over `lo..hi` with `flags` (`None` bounds are open), read with
    /// buffers of the sizes the entries need (asked first with NULL buffers), or the first error
    /// code. The cursor is closed either way.
    pub fn scan(
        &self,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        flags: c_long,
    ) -> Result<Entries, i32> {
        let mut c = 0u64;
        let (lo, hi) = (lo.unwrap_or(&[]), hi.unwrap_or(&[]));
        let ptr = |b: &[u8]| -> *const std::ffi::c_void {
            if b.is_empty() {
                std::ptr::null()
            } else {
                b.as_ptr().cast()
            }
        };
        // SAFETY: both bounds are valid for their lengths (NULL with 0); `c` is writable.
        let rc = unsafe {
            mmxa_cursor_open(
                self.rmid,
                ptr(lo),
                lo.len(),
                ptr(hi),
                hi.len(),
                flags,
                &mut c,
            )
        };
        if rc != MMXA_OK {
            return Err(rc);
        }
        let mut out = Vec::new();
        let result = loop {
            let (mut kl, mut vl) = (0usize, 0usize);
            // SAFETY: NULL buffers with capacity 0 ask the lengths; both lengths are writable.
            let rc = unsafe {
                mmxa_cursor_next(
                    c,
                    std::ptr::null_mut(),
                    0,
                    &mut kl,
                    std::ptr::null_mut(),
                    0,
                    &mut vl,
                )
            };
            match rc {
                MMXA_NOTFOUND => break Ok(out),
                MMXA_EBUFSIZE => {}
                other => break Err(other),
            }
            let (mut k, mut v) = (vec![0u8; kl], vec![0u8; vl]);
            // SAFETY: `k` and `v` hold their lengths in writable bytes; lengths are writable.
            let rc = unsafe {
                mmxa_cursor_next(
                    c,
                    k.as_mut_ptr().cast(),
                    k.len(),
                    &mut kl,
                    v.as_mut_ptr().cast(),
                    v.len(),
                    &mut vl,
                )
            };
            if rc != MMXA_OK {
                break Err(rc);
            }
            k.truncate(kl);
            v.truncate(vl);
            out.push((k, v));
        };
        assert_eq!(mmxa_cursor_close(c), MMXA_OK, "mmxa_cursor_close");
        result
    }

    /// The keys of [`Rm::scan`] as strings, asserting no error.
    #[track_caller]
    pub fn scan_keys(&self, lo: Option<&str>, hi: Option<&str>, flags: c_long) -> Vec<String> {
        match self.scan(lo.map(str::as_bytes), hi.map(str::as_bytes), flags) {
            Ok(v) => v
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect(),
            Err(code) => panic!(
                "scan on rmid {}: code {code} ({:?})",
                self.rmid,
                last_error()
            ),
        }
    }

    /// `mmxa_put` asserting `MMXA_OK`.
    #[track_caller]
    pub fn put_ok(&self, key: &str, value: &str) {
        check(
            &format!("mmxa_put({key:?}) on rmid {}", self.rmid),
            self.put(key.as_bytes(), value.as_bytes()),
            MMXA_OK,
        );
    }

    /// `mmxa_get` as a string, asserting no error code.
    #[track_caller]
    pub fn get_str(&self, key: &str) -> Option<String> {
        match self.get(key.as_bytes()) {
            Ok(v) => v.map(|v| String::from_utf8(v).expect("UTF-8 value")),
            Err(code) => panic!(
                "mmxa_get({key:?}) on rmid {}: code {code} ({:?})",
                self.rmid,
                last_error()
            ),
        }
    }
}

static NEXT_XID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An XID no other call of this process has made: `tag`, a counter and the pid in the gtrid.
pub fn fresh_xid(tag: &str) -> Xid {
    let n = NEXT_XID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    xid(
        0x10c,
        format!("{tag}-{n}-{}", std::process::id()).as_bytes(),
        b"b",
    )
}

/// `mmxa_txn_begin` in the calling thread, asserting `MMXA_OK`.
#[track_caller]
pub fn begin(r: &Rm) {
    check(
        "mmxa_txn_begin",
        mmxa::ffi::txn::mmxa_txn_begin(r.rmid),
        MMXA_OK,
    );
}

/// `mmxa_txn_commit` in the calling thread, asserting `MMXA_OK`.
#[track_caller]
pub fn commit(r: &Rm) {
    check(
        "mmxa_txn_commit",
        mmxa::ffi::txn::mmxa_txn_commit(r.rmid),
        MMXA_OK,
    );
}

/// Keys and values in the order a cursor read them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// How long a test waits for a step in another thread before it declares that thread stuck.
/// Only a failing test ever waits this long.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce() + Send>;

/// A dedicated OS thread — one XA thread of control — that runs closures in order.
///
/// Tests drive several threads of control step by step from the test thread: `run` executes a
/// closure in the worker's own thread and returns its result (re-raising its panic), `submit`
/// starts one without waiting, for calls expected to block.
pub struct Worker {
    name: String,
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
}

/// The result of a closure submitted to a [`Worker`].
pub struct Pending<R> {
    name: String,
    rx: mpsc::Receiver<thread::Result<R>>,
}

impl Worker {
    /// Starts a worker thread named `name`.
    pub fn new(name: &str) -> Worker {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn worker thread");
        Worker {
            name: name.to_owned(),
            jobs: Some(tx),
            handle: Some(handle),
        }
    }

    /// Starts `f` in the worker's thread (after any earlier jobs) and returns at once.
    pub fn submit<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .expect("worker is running")
            .send(job)
            .expect("worker thread is gone");
        Pending {
            name: self.name.clone(),
            rx,
        }
    }

    /// Runs `f` in the worker's thread and returns its result; a panic in `f` is re-raised.
    #[track_caller]
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.submit(f).wait()
    }
}

impl<R> Pending<R> {
    /// Waits for the closure (at most [`STEP_TIMEOUT`]) and returns its result.
    #[track_caller]
    pub fn wait(self) -> R {
        match self.rx.recv_timeout(STEP_TIMEOUT) {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(e) => panic!("worker {:?} did not finish a step: {e:?}", self.name),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        // After a failure a worker may be stuck in a lock wait: leave it rather than hang.
        if !thread::panicking() {
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// A private (0700) temporary directory, as a store needs.
pub fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .expect("tempdir")
}
