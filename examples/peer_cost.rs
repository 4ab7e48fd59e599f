//! What a second process pays to use a store another process has open: the time its `xa_open`
//! takes to attach, the cost of its calls, and its private memory, for stores of different
//! sizes.
//!
//! For each size, this process creates a store with that many committed keys and keeps it open;
//! a child (this example re-executed) then opens the same store, runs the same loops as the
//! parent, and reports. The loops go through the C entry points with `sync=none`, so only the
//! calls are measured: one-phase transactions (`xa_start`, `mmxa_put`, `mmxa_get`, `xa_end`,
//! `xa_commit(TMONEPHASE)`) and committed reads (`mmxa_get` outside a branch). Private memory is
//! the process's `Private_Clean + Private_Dirty` (from `/proc/self/smaps_rollup`): the store's
//! shared region and the log's mapped segments are shared with the other process and not in it.
//!
//! ```text
//! cargo run --release --example peer_cost [KEYS ...]     # default: 0 100000 1000000
//! ```

use mmxa::ffi::abi::{XaSwitch, Xid};
use mmxa::ffi::data::{mmxa_get, mmxa_put};
use mmxa::ffi::switch::mmxa_switch;
use mmxa::xa::{TMNOFLAGS, TMONEPHASE, TMSUCCESS, XA_OK, XIDDATASIZE};
use std::ffi::CString;
use std::os::raw::{c_char, c_long};
use std::process::Command;
use std::time::Instant;

const CHILD: &str = "MMXA_PEER_COST_CHILD";
const LOOPS: u64 = 100_000;

fn switch() -> &'static XaSwitch {
    // SAFETY: the exported switch is initialised statically and never written.
    unsafe { &*std::ptr::addr_of!(mmxa_switch) }
}

fn xid(tag: &str, n: u64) -> Xid {
    let g = format!("{tag}-{n}");
    let mut x = Xid {
        formatID: 1,
        gtrid_length: g.len() as c_long,
        bqual_length: 1,
        data: [0; XIDDATASIZE],
    };
    for (d, s) in x.data.iter_mut().zip(g.bytes().chain([b'b'])) {
        *d = s as c_char;
    }
    x
}

fn check(what: &str, rc: i32) {
    assert_eq!(rc, XA_OK, "{what} answered {rc}");
}

fn open(info: &CString) {
    // SAFETY: a NUL-terminated string that outlives the call.
    let rc = unsafe { (switch().xa_open_entry)(info.as_ptr() as *mut c_char, 1, TMNOFLAGS) };
    check("xa_open", rc);
}

fn put(key: &[u8], value: &[u8]) {
    // SAFETY: both slices are valid for their lengths.
    let rc = unsafe {
        mmxa_put(
            1,
            key.as_ptr().cast(),
            key.len(),
            value.as_ptr().cast(),
            value.len(),
        )
    };
    check("mmxa_put", rc);
}

fn get(key: &[u8]) {
    let mut buf = [0u8; 128];
    let mut len = 0usize;
    // SAFETY: `buf` and `len` are live and writable.
    let rc = unsafe {
        mmxa_get(
            1,
            key.as_ptr().cast(),
            key.len(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut len,
        )
    };
    assert!(rc == 0 || rc == 1, "mmxa_get answered {rc}");
}

/// Microseconds per one-phase transaction and per committed read, `tag` keeping XIDs apart.
fn loops(tag: &str) -> (f64, f64) {
    let sw = switch();
    let t = Instant::now();
    for i in 0..LOOPS {
        let mut x = xid(tag, i);
        let key = format!("{tag}-{}", i % 1000);
        // SAFETY: `x` is a live, writable XID for each call.
        unsafe {
            check("xa_start", (sw.xa_start_entry)(&mut x, 1, TMNOFLAGS));
            put(key.as_bytes(), b"value of sixteen");
            get(key.as_bytes());
            check("xa_end", (sw.xa_end_entry)(&mut x, 1, TMSUCCESS));
            check("xa_commit", (sw.xa_commit_entry)(&mut x, 1, TMONEPHASE));
        }
    }
    let txn = t.elapsed().as_secs_f64() * 1e6 / LOOPS as f64;
    let t = Instant::now();
    for i in 0..LOOPS {
        get(format!("k{:09}", i % 1000).as_bytes());
    }
    let read = t.elapsed().as_secs_f64() * 1e6 / LOOPS as f64;
    (txn, read)
}

/// This process's private memory, in KiB (`Private_Clean + Private_Dirty`).
fn private_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn child(info: &str) {
    let info = CString::new(info).unwrap();
    let before = private_kib();
    let t = Instant::now();
    open(&info);
    let attach_ms = t.elapsed().as_secs_f64() * 1e3;
    let after_open = private_kib();
    let (txn, read) = loops("child");
    println!(
        "child {attach_ms:.2} {txn:.2} {read:.2} {} {}",
        after_open.saturating_sub(before),
        private_kib().saturating_sub(before)
    );
}

fn main() {
    if let Ok(info) = std::env::var(CHILD) {
        child(&info);
        return;
    }
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![0, 100_000, 1_000_000]
    } else {
        sizes
    };
    println!("| committed keys | first open (rebuild) ms | second process: attach ms | µs per 1PC txn: first / second | µs per committed read: first / second | second's private memory after attach / after the loops (KiB) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        let info = format!("dir={};sync=none", dir.path().display());
        let c = CString::new(info.clone()).unwrap();
        // Load, close (nobody has it open), then time the first open: a rebuild from the log.
        open(&c);
        for i in 0..n {
            put(format!("k{i:09}").as_bytes(), b"value of sixteen");
        }
        // SAFETY: as in `open`.
        unsafe { (switch().xa_close_entry)(c.as_ptr() as *mut c_char, 1, TMNOFLAGS) };
        let t = Instant::now();
        open(&c);
        let rebuild_ms = t.elapsed().as_secs_f64() * 1e3;
        let (txn, read) = loops("parent");
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, &info)
            .output()
            .expect("run the child");
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text
            .lines()
            .find_map(|l| l.strip_prefix("child "))
            .unwrap_or_else(|| {
                panic!(
                    "child said: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        println!(
            "| {n} | {rebuild_ms:.1} | {:.2} | {txn:.2} / {:.2} | {read:.2} / {:.2} | {} / {} |",
            f[0], f[1], f[2], f[3] as u64, f[4] as u64
        );
        // SAFETY: as in `open`.
        unsafe { (switch().xa_close_entry)(c.as_ptr() as *mut c_char, 1, TMNOFLAGS) };
    }
}
