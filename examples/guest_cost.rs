//! What a call costs when another process hosts the store, against the same call in the host.
//!
//! Runs the same loop twice through the C entry points, with `sync=none` so that only the
//! calls are measured: once hosting the store in this process, once as a guest of
//! `mmxa serve` (the tool built next to this example). Each loop iteration is a one-phase
//! transaction (`xa_start`, `mmxa_put`, `mmxa_get`, `xa_end`, `xa_commit(TMONEPHASE)`), and
//! then a separate loop of committed reads (`mmxa_get` outside a branch).
//!
//! ```text
//! cargo build --release && cargo run --release --example guest_cost [ITERATIONS]
//! ```

use mmxa::ffi::abi::{XaSwitch, Xid};
use mmxa::ffi::data::{mmxa_get, mmxa_put};
use mmxa::ffi::switch::mmxa_switch;
use mmxa::xa::{TMNOFLAGS, TMONEPHASE, TMSUCCESS, XA_OK, XIDDATASIZE};
use std::ffi::CString;
use std::io::BufRead;
use std::os::raw::{c_char, c_long};
use std::process::{Command, Stdio};
use std::time::Instant;

fn switch() -> &'static XaSwitch {
    // SAFETY: the exported switch is initialised statically and never written.
    unsafe { &*std::ptr::addr_of!(mmxa_switch) }
}

fn xid(n: u64) -> Xid {
    let g = format!("cost-{n}");
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

/// Microseconds per transaction and per committed read.
fn measure(info: &CString, n: u64) -> (f64, f64) {
    let sw = switch();
    let rmid = 1;
    // SAFETY: every pointer passed below is to a live local of the right type.
    unsafe {
        check(
            "xa_open",
            (sw.xa_open_entry)(info.as_ptr() as *mut c_char, rmid, TMNOFLAGS),
        );
        let mut buf = [0u8; 64];
        let mut len = 0usize;
        let t = Instant::now();
        for i in 0..n {
            let mut x = xid(i);
            check("xa_start", (sw.xa_start_entry)(&mut x, rmid, TMNOFLAGS));
            let key = format!("k{}", i % 1000);
            check(
                "mmxa_put",
                mmxa_put(
                    rmid,
                    key.as_ptr().cast(),
                    key.len(),
                    b"value".as_ptr().cast(),
                    5,
                ),
            );
            check(
                "mmxa_get",
                mmxa_get(
                    rmid,
                    key.as_ptr().cast(),
                    key.len(),
                    buf.as_mut_ptr().cast(),
                    64,
                    &mut len,
                ),
            );
            check("xa_end", (sw.xa_end_entry)(&mut x, rmid, TMSUCCESS));
            check("xa_commit", (sw.xa_commit_entry)(&mut x, rmid, TMONEPHASE));
        }
        let tx = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let key = format!("k{}", i % 1000);
            check(
                "mmxa_get",
                mmxa_get(
                    rmid,
                    key.as_ptr().cast(),
                    key.len(),
                    buf.as_mut_ptr().cast(),
                    64,
                    &mut len,
                ),
            );
        }
        let get = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        check(
            "xa_close",
            (sw.xa_close_entry)(info.as_ptr() as *mut c_char, rmid, TMNOFLAGS),
        );
        (tx, get)
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let open = format!("dir={};sync=none;segment_mb=64", dir.path().display());
    let info = CString::new(open.clone()).unwrap();

    let (host_tx, host_get) = measure(&info, n);

    let tool = std::env::current_exe()
        .expect("current_exe")
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("mmxa"))
        .expect("the mmxa tool next to the examples");
    let mut serve = Command::new(&tool)
        .args(["serve", &open])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", tool.display()));
    let mut line = String::new();
    std::io::BufReader::new(serve.stderr.take().unwrap())
        .read_line(&mut line)
        .expect("mmxa serve says it hosts");
    let (guest_tx, guest_get) = measure(&info, n);
    let _ = serve.kill();
    let _ = serve.wait();

    println!("{n} iterations, sync=none; µs per operation");
    println!("| | in the hosting process | in a guest process | difference |");
    println!("|---|---:|---:|---:|");
    println!(
        "| one-phase transaction (5 calls) | {host_tx:.1} | {guest_tx:.1} | {:.1} |",
        guest_tx - host_tx
    );
    println!(
        "| committed read (1 call) | {host_get:.2} | {guest_get:.2} | {:.2} |",
        guest_get - host_get
    );
}
