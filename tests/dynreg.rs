//! Dynamic registration (`mmxa_switch_dynamic`, XA reference §5.4 and §8).
//!
//! - `tests/c/dynreg_tm.c`: a C monitor exporting `ax_reg`/`ax_unreg` from its executable drives
//!   the real switch: new branch, join from a second thread, resume after a suspend, the null
//!   XID, an `ax_reg` error, a duplicate XID, and an `xa_start` called anyway. It runs once plain
//!   and once with `MMXA_TRACE` set, whose file must show the `ax_reg`/`ax_unreg` calls.
//! - The rest drive the registry with a scripted [`Registrar`] (the monitor's answers chosen per
//!   call) and the real data and XA entry points, for the answers a well-behaved monitor never
//!   gives, and a local transaction (`mmxa_txn_begin`), which never asks the monitor; and check that without `ax_reg` in the process `xa_open` fails with `XAER_RMERR`.

mod common;
mod ffi_common;

use common::{build_program, c_dir, describe, run_ok, Lang};
use ffi_common::{check, last_error, switch, xid, Rm as FfiRm};
use mmxa::error::Error;
use mmxa::ffi::abi::Xid as CXid;
use mmxa::ffi::switch::mmxa_switch_dynamic;
use mmxa::registry::{self, Registrar, Registration};
use mmxa::rm::flags::StartMode;
use mmxa::status::*;
use mmxa::xa::*;
use mmxa::xid::Xid;
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::raw::c_char;
use std::path::Path;
use std::sync::{Arc, Mutex};

// ---- the C monitor ------------------------------------------------------------------------

/// Builds the monitor as `name` (one name per test: tests run in parallel).
fn build_monitor(name: &str) -> std::path::PathBuf {
    // -rdynamic: ax_reg and ax_unreg must be in the executable's dynamic symbol table, where
    // dlsym(RTLD_DEFAULT) finds them.
    build_program(
        Lang::C,
        name,
        &[&c_dir().join("dynreg_tm.c")],
        &["-pthread".to_owned(), "-rdynamic".to_owned()],
    )
}

#[test]
fn c_monitor_drives_the_dynamic_switch() {
    let bin = build_monitor("dynreg_tm");
    let dir = ffi_common::private_dir();
    let data = dir.path().join("data");
    let out = run_ok(&bin, &[data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    assert!(text.contains("all checks passed"), "{}", describe(&out));
    assert!(
        text.contains("TM_JOIN 1, TM_RESUME 1"),
        "{}",
        describe(&out)
    );
}

/// The same monitor with `MMXA_TRACE`: the trace shows each `ax_reg` answer next to the data call
/// that asked for it, and one `ax_unreg` per data call done under the null XID.
#[test]
fn c_monitor_under_mmxa_trace() {
    let bin = build_monitor("dynreg_tm_traced");
    let dir = ffi_common::private_dir();
    let trace = dir.path().join("trace.log");
    let out = std::process::Command::new(&bin)
        .arg(dir.path().join("data"))
        .env("MMXA_TRACE", &trace)
        .output()
        .expect("run dynreg_tm");
    assert!(out.status.success(), "{}", describe(&out));
    let text = std::fs::read_to_string(&trace).expect("trace file");
    let lines: Vec<&str> = text.lines().collect();
    let count = |entry: &str, rc: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!(" {entry} ")) && l.contains(&format!(" rc={rc}(")))
            .count()
    };
    // Numbers from dynreg_tm.c's scenarios.
    assert_eq!(count("ax_reg", "TM_JOIN"), 1, "{text}");
    assert_eq!(count("ax_reg", "TM_RESUME"), 1, "{text}");
    assert_eq!(count("ax_reg", "TMER_TMERR"), 1, "{text}");
    // The program counts what its ax_reg and ax_unreg answered; the trace must agree.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let number_after = |label: &str| -> usize {
        let at = stdout
            .find(label)
            .unwrap_or_else(|| panic!("{label} in {stdout}"));
        let digits: String = stdout[at + label.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().expect("a number")
    };
    let null_regs = lines
        .iter()
        .filter(|l| l.contains(" ax_reg xid=null ") && l.contains("rc=TM_OK(0)"))
        .count();
    assert_eq!(null_regs, number_after("null XID "), "{text}");
    assert_eq!(
        count("ax_unreg", "TM_OK"),
        number_after("ax_unreg: "),
        "{text}"
    );
    assert_eq!(null_regs, number_after("ax_unreg: "), "{text}");
    // A registration with a branch shows the XID the monitor answered.
    assert!(
        lines.iter().any(|l| l.contains(" ax_reg xid=1296914497.")),
        "{text}"
    );
    assert_eq!(count("xa_open_dynamic", "XA_OK"), 3, "{text}");
    assert_eq!(count("xa_open", "XAER_INVAL"), 1, "{text}");
    assert_eq!(count("mmxa_put", "MMXA_EREGISTER"), 2, "{text}");
}

// ---- a scripted monitor -------------------------------------------------------------------

/// What the scripted monitor answers and what it was asked. Once the script is used up, it
/// answers the null XID.
#[derive(Default)]
struct Script {
    reg: VecDeque<Result<Registration, Error>>,
    unreg: VecDeque<Result<(), Error>>,
    reg_calls: usize,
    unreg_calls: usize,
}

#[derive(Clone, Default)]
struct Monitor(Arc<Mutex<Script>>);

impl Monitor {
    fn answer(&self, r: Result<Registration, Error>) {
        self.0.lock().unwrap().reg.push_back(r);
    }
    fn answer_unreg(&self, r: Result<(), Error>) {
        self.0.lock().unwrap().unreg.push_back(r);
    }
    fn calls(&self) -> (usize, usize) {
        let s = self.0.lock().unwrap();
        (s.reg_calls, s.unreg_calls)
    }
}

impl Registrar for Monitor {
    fn register(&self, _rmid: i32) -> Result<Registration, Error> {
        let mut s = self.0.lock().unwrap();
        s.reg_calls += 1;
        s.reg.pop_front().unwrap_or(Ok(Registration::Outside))
    }
    fn unregister(&self, _rmid: i32) -> Result<(), Error> {
        let mut s = self.0.lock().unwrap();
        s.unreg_calls += 1;
        s.unreg.pop_front().unwrap_or(Ok(()))
    }
}

/// Opens `rm` in the calling thread as the dynamic switch would, with `monitor` as its registrar.
#[track_caller]
/// The parsed open string.
fn cfg(info: &str) -> mmxa::config::Config {
    mmxa::config::parse(info.as_bytes()).expect("valid open string")
}

fn open_dynamic(rm: &FfiRm, monitor: &Monitor) {
    if let Err(e) = registry::open_dynamic(rm.rmid, cfg(&rm.info), Box::new(monitor.clone())) {
        panic!("open_dynamic: {e} ({})", e.xa_code());
    }
}

fn core_xid(x: &CXid) -> Xid {
    let (f, g, b) = ffi_common::xid_key(x);
    Xid::from_parts(f, &g, &b).expect("valid XID")
}

fn store(rmid: i32, dir: &Path) -> FfiRm {
    FfiRm::new(rmid, dir, "lock_timeout_ms=0")
}

#[test]
fn registration_starts_a_branch_once_until_xa_end() {
    let dir = ffi_common::private_dir();
    let rm = store(40, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    let x = xid(7, b"g-new", b"b");
    m.answer(Ok(Registration::Branch(core_xid(&x), StartMode::New)));
    rm.put_ok("a", "1");
    rm.put_ok("b", "2");
    assert_eq!(rm.get_str("a").as_deref(), Some("1"));
    assert_eq!(m.calls(), (1, 0));
    check("xa_end", rm.end(&x, TMSUCCESS), XA_OK);
    check("xa_rollback", rm.rollback(&x), XA_OK);
    // Unregistered again: the next call asks, and the null XID shows committed data only.
    assert_eq!(rm.get_str("a"), None);
    assert_eq!(m.calls(), (2, 1));
    rm.close_ok();
}

#[test]
fn a_failed_xa_end_keeps_the_registration() {
    let dir = ffi_common::private_dir();
    let rm = store(41, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    let x = xid(7, b"g-keep", b"b");
    m.answer(Ok(Registration::Branch(core_xid(&x), StartMode::New)));
    rm.put_ok("a", "1");
    check(
        "xa_end(other XID)",
        rm.end(&xid(7, b"other", b"b"), TMSUCCESS),
        XAER_NOTA,
    );
    check("xa_end(TMNOFLAGS)", rm.end(&x, TMNOFLAGS), XAER_INVAL);
    rm.put_ok("b", "2");
    assert_eq!(m.calls(), (1, 0));
    check("xa_end", rm.end(&x, TMSUCCESS), XA_OK);
    check("xa_commit", rm.commit(&x, TMONEPHASE), XA_OK);
    assert_eq!(rm.get_str("b").as_deref(), Some("2"));
    // get_str asks for the length, then the value: two calls, each registered and unregistered.
    assert_eq!(m.calls(), (3, 2));
    rm.close_ok();
}

#[test]
fn unusable_answers_fail_the_data_call() {
    let dir = ffi_common::private_dir();
    let rm = store(42, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    let unknown = core_xid(&xid(7, b"g-unknown", b"b"));
    for (answer, what) in [
        (
            Registration::Branch(unknown, StartMode::Join),
            "TMJOIN of an unknown XID",
        ),
        (
            Registration::Branch(unknown, StartMode::Resume),
            "TMRESUME of an unknown XID",
        ),
    ] {
        m.answer(Ok(answer));
        check(what, rm.put(b"k", b"v"), MMXA_EREGISTER);
        assert!(
            last_error().contains("cannot be used"),
            "{what}: {}",
            last_error()
        );
    }
    // The monitor's own error code and message come through unchanged.
    m.answer(Err(Error::Register(
        "ax_reg(rmid 42) answered TMER_PROTO (-3)".into(),
    )));
    check("ax_reg error", rm.put(b"k", b"v"), MMXA_EREGISTER);
    assert!(last_error().contains("TMER_PROTO"), "{}", last_error());
    // Nothing was written and the thread is not associated: it may close.
    assert_eq!(rm.get_str("k"), None);
    rm.close_ok();
}

#[test]
fn a_failed_ax_unreg_is_reported_after_the_work() {
    let dir = ffi_common::private_dir();
    let rm = store(43, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    m.answer(Ok(Registration::Outside));
    m.answer_unreg(Err(Error::Register(
        "ax_unreg(rmid 43) answered TMER_PROTO (-3)".into(),
    )));
    check("put", rm.put(b"k", b"v"), MMXA_EREGISTER);
    assert!(
        last_error().contains("outside any transaction") && last_error().contains("ax_unreg"),
        "{}",
        last_error()
    );
    // The one-operation transaction was committed before ax_unreg was called.
    assert_eq!(rm.get_str("k").as_deref(), Some("v"));
    assert_eq!(m.calls(), (3, 3));
    rm.close_ok();
}

#[test]
fn a_local_transaction_never_asks_the_monitor() {
    let dir = ffi_common::private_dir();
    let rm = store(47, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    check("begin", mmxa::ffi::txn::mmxa_txn_begin(rm.rmid), MMXA_OK);
    rm.put_ok("a", "1");
    assert_eq!(rm.get_str("a").as_deref(), Some("1"));
    check("commit", mmxa::ffi::txn::mmxa_txn_commit(rm.rmid), MMXA_OK);
    // Outside any global transaction by the application's choice: no ax_reg, no ax_unreg.
    assert_eq!(m.calls(), (0, 0));
    // Afterwards a data call asks again (the null XID: committed data).
    assert_eq!(rm.get_str("a").as_deref(), Some("1"));
    assert_eq!(m.calls(), (2, 2));
    rm.close_ok();
}

#[test]
fn joining_a_rollback_only_branch_is_mmxa_erollback() {
    let dir = ffi_common::private_dir();
    let rm = store(44, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    let x = xid(7, b"g-doomed", b"b");
    m.answer(Ok(Registration::Branch(core_xid(&x), StartMode::New)));
    rm.put_ok("a", "1");
    check("xa_end(TMFAIL)", rm.end(&x, TMFAIL), XA_RBROLLBACK);
    let other = ffi_common::Worker::new("joiner");
    let (rm2, m2) = (rm.clone(), m.clone());
    let x2 = x;
    other.run(move || {
        open_dynamic(&rm2, &m2);
        m2.answer(Ok(Registration::Branch(core_xid(&x2), StartMode::Join)));
        check(
            "put in a rollback-only branch",
            rm2.put(b"b", b"2"),
            MMXA_EROLLBACK,
        );
        rm2.close_ok();
    });
    check(
        "xa_rollback of the idle rollback-only branch",
        rm.rollback(&x),
        XA_OK,
    );
    rm.close_ok();
}

#[test]
fn one_rmid_is_opened_through_one_switch() {
    let dir = ffi_common::private_dir();
    let rm = store(45, dir.path());
    let m = Monitor::default();
    open_dynamic(&rm, &m);
    let (rm2, m2) = (rm.clone(), m.clone());
    ffi_common::Worker::new("static").run(move || {
        check("static xa_open of a dynamic rmid", rm2.open(), XAER_INVAL);
        assert!(
            last_error().contains("mmxa_switch_dynamic"),
            "{}",
            last_error()
        );
        drop(m2);
    });
    rm.close_ok();
    // Closed everywhere: now it may be opened statically, and then not dynamically.
    rm.open_ok();
    let (rm3, m3) = (rm.clone(), m.clone());
    ffi_common::Worker::new("dynamic").run(move || {
        let e = registry::open_dynamic(rm3.rmid, cfg(&rm3.info), Box::new(m3))
            .expect_err("dynamic open of a static rmid");
        assert_eq!(e.xa_code(), XAER_INVAL, "{e}");
    });
    rm.close_ok();
}

/// This test binary exports no `ax_reg`: the dynamic switch's `xa_open` must say so.
#[test]
fn xa_open_without_ax_reg_is_xaer_rmerr() {
    let dir = ffi_common::private_dir();
    let rm = store(46, dir.path());
    let info = CString::new(rm.info.clone()).unwrap();
    // SAFETY: the switch is never written; the string outlives the call.
    let rc = unsafe {
        let sw = &*std::ptr::addr_of!(mmxa_switch_dynamic);
        assert_eq!(sw.flags, TMREGISTER);
        (sw.xa_open_entry)(info.as_ptr() as *mut c_char, rm.rmid, TMNOFLAGS)
    };
    check("dynamic xa_open", rc, XAER_RMERR);
    assert!(last_error().contains("ax_reg"), "{}", last_error());
    // Not open: the data call says so, and the static switch still works.
    check("put", rm.put(b"k", b"v"), MMXA_ENOTOPEN);
    assert!(std::ptr::eq(switch(), unsafe {
        &*std::ptr::addr_of!(mmxa::ffi::switch::mmxa_switch)
    }));
    rm.open_ok();
    rm.close_ok();
}
