//! Call tracing (`trace=PATH` in the open string, `MMXA_TRACE=PATH` in the environment): every
//! XA and data call becomes one well-formed line with the documented fields, also when threads
//! and processes write the same file at once.
//!
//! Tracing is per process and the first file turned on stays, so every test of this binary uses
//! the same file ([`trace_path`]) and reads back only the lines of its own rmid. The
//! multi-process test re-executes this binary: the children trace through `MMXA_TRACE`.

mod ffi_common;

use ffi_common::{check, xid, Rm, Worker};
use mmxa::status::*;
use mmxa::xa::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The trace file of this test process.
fn trace_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("trace");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("trace-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    })
}

/// One parsed trace line.
#[derive(Debug, Clone)]
struct Line {
    time: String,
    pid: u32,
    tid: i64,
    rmid: i32,
    entry: String,
    xid: String,
    flags: String,
    rc_name: String,
    rc: i32,
    us: u64,
}

fn field<'a>(part: Option<&'a str>, key: &str, line: &str) -> &'a str {
    let part = part.unwrap_or_else(|| panic!("missing {key} in {line:?}"));
    part.strip_prefix(key)
        .and_then(|p| p.strip_prefix('='))
        .unwrap_or_else(|| panic!("expected {key}= in {line:?}, got {part:?}"))
}

/// Parses a line, panicking on anything but the documented format.
fn parse(line: &str) -> Line {
    let mut parts = line.split(' ');
    let time = parts.next().unwrap().to_owned();
    let b = time.as_bytes();
    assert!(
        b.len() == 27
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[26] == b'Z'
            && time[..4].parse::<u32>().is_ok_and(|y| y >= 2020)
            && time[20..26].parse::<u32>().is_ok(),
        "time not RFC 3339 with microseconds: {line:?}"
    );
    let pid = field(parts.next(), "pid", line).parse().unwrap();
    let tid = field(parts.next(), "tid", line).parse().unwrap();
    let rmid = field(parts.next(), "rmid", line).parse().unwrap();
    let entry = parts.next().expect("entry").to_owned();
    let xid = field(parts.next(), "xid", line).to_owned();
    let flags = field(parts.next(), "flags", line).to_owned();
    let rc_text = field(parts.next(), "rc", line);
    let (rc_name, rest) = rc_text.split_once('(').expect("rc=NAME(N)");
    let rc = rest.strip_suffix(')').expect("rc=NAME(N)").parse().unwrap();
    let us = field(parts.next(), "us", line).parse().unwrap();
    assert!(parts.next().is_none(), "trailing fields in {line:?}");
    Line {
        time,
        pid,
        tid,
        rmid,
        entry,
        xid,
        flags,
        rc_name: rc_name.to_owned(),
        rc,
        us,
    }
}

/// Every line of the trace file (all must parse), then those of `rmid`. Another test's write
/// may be in progress while the file is read: an unterminated last line is left out.
fn lines_of(rmid: i32) -> Vec<Line> {
    let text = std::fs::read_to_string(trace_path()).expect("trace file exists");
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(parse)
        .filter(|l| l.rmid == rmid)
        .collect()
}

fn gettid() -> i64 {
    // SAFETY: no preconditions.
    i64::from(unsafe { libc::gettid() })
}

#[test]
fn open_string_traces_every_call() {
    let dir = ffi_common::private_dir();
    let extra = format!("trace={}", trace_path().display());
    let rm = Rm::new(50, dir.path(), &extra);
    let x = xid(0x41, b"gt", b"\x01\xff");
    rm.open_ok();
    check("xa_start", rm.start(&x, TMNOFLAGS), XA_OK);
    rm.put_ok("k", "v");
    assert_eq!(rm.get(b"missing"), Ok(None));
    check("delete", rm.delete(b"k"), MMXA_OK);
    check("xa_end", rm.end(&x, TMSUCCESS), XA_OK);
    check("xa_prepare", rm.prepare(&x), XA_OK);
    check("xa_commit bad flags", rm.commit(&x, TMJOIN), XAER_INVAL);
    check("xa_rollback", rm.rollback(&x), XA_OK);
    check("xa_rollback again", rm.rollback(&x), XAER_NOTA);
    let mut buf = [xid(0, b"-", b"-"); 4];
    check("xa_recover", rm.recover_into(&mut buf, TMSTARTRSCAN), 0);
    rm.close_ok();

    let lines = lines_of(50);
    let got: Vec<(&str, &str, &str, &str, i32)> = lines
        .iter()
        .map(|l| {
            (
                l.entry.as_str(),
                l.xid.as_str(),
                l.flags.as_str(),
                l.rc_name.as_str(),
                l.rc,
            )
        })
        .collect();
    let xid_text = "65.6774.01ff";
    assert_eq!(
        got,
        vec![
            ("xa_open", "-", "0x0", "XA_OK", 0),
            ("xa_start", xid_text, "0x0", "XA_OK", 0),
            ("mmxa_put", "-", "-", "MMXA_OK", 0),
            ("mmxa_get", "-", "-", "MMXA_NOTFOUND", 1),
            ("mmxa_delete", "-", "-", "MMXA_OK", 0),
            ("xa_end", xid_text, "0x4000000", "XA_OK", 0),
            ("xa_prepare", xid_text, "0x0", "XA_OK", 0),
            ("xa_commit", xid_text, "0x200000", "XAER_INVAL", -5),
            ("xa_rollback", xid_text, "0x0", "XA_OK", 0),
            ("xa_rollback", xid_text, "0x0", "XAER_NOTA", -4),
            ("xa_recover", "-", "0x1000000", "count", 0),
            ("xa_close", "-", "0x0", "XA_OK", 0),
        ]
    );
    let tid = gettid();
    for l in &lines {
        assert_eq!(l.pid, std::process::id(), "{l:?}");
        assert_eq!(l.tid, tid, "{l:?}");
        assert!(l.us < 60_000_000, "{l:?}");
    }
    // Start times never go backwards within one thread.
    assert!(lines.windows(2).all(|w| w[0].time <= w[1].time));
}

#[test]
fn concurrent_threads_write_whole_lines() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 100;
    let dir = ffi_common::private_dir();
    let extra = format!("trace={}", trace_path().display());
    let rm = Rm::new(51, dir.path(), &extra);
    let workers: Vec<Worker> = (0..THREADS)
        .map(|i| Worker::new(&format!("w{i}")))
        .collect();
    let pending: Vec<_> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let rm = rm.clone();
            w.submit(move || {
                rm.open_ok();
                for r in 0..ROUNDS {
                    rm.put_ok(&format!("t{i}-{r}"), "some value");
                }
                rm.close_ok();
                gettid()
            })
        })
        .collect();
    let tids: BTreeSet<i64> = pending.into_iter().map(|p| p.wait()).collect();
    let lines = lines_of(51);
    assert_eq!(lines.len(), THREADS * (ROUNDS + 2));
    let seen: BTreeSet<i64> = lines.iter().map(|l| l.tid).collect();
    assert_eq!(seen, tids);
    for tid in tids {
        let mine: Vec<&Line> = lines.iter().filter(|l| l.tid == tid).collect();
        assert_eq!(mine.first().map(|l| l.entry.as_str()), Some("xa_open"));
        assert_eq!(mine.last().map(|l| l.entry.as_str()), Some("xa_close"));
        assert_eq!(
            mine.iter().filter(|l| l.entry == "mmxa_put").count(),
            ROUNDS
        );
    }
}

const CHILD_ENV: &str = "MMXA_TRACE_TEST_CHILD";
const CHILD_CALLS: usize = 300;

/// The child side of [`processes_append_to_one_file`]; does nothing in a normal test run.
#[test]
fn child_process_calls() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (rmid, dir) = spec.split_once(':').expect("rmid:dir");
    let dir = std::path::Path::new(dir);
    if rmid == "bad" {
        // Tracing is still off in this process: a trace file that cannot be opened fails the
        // xa_open that asks for it, before the store is opened.
        let bad = Rm::new(
            1,
            dir,
            &format!("trace={}/no/such/dir/t.log", dir.display()),
        );
        check("xa_open with a bad trace path", bad.open(), XAER_RMERR);
        let msg = ffi_common::last_error();
        assert!(msg.contains("cannot open trace file"), "{msg}");
        Rm::new(1, dir, "").open_ok();
        return;
    }
    let rm = Rm::new(rmid.parse().unwrap(), dir, "");
    rm.open_ok();
    for i in 0..CHILD_CALLS {
        rm.put_ok(&format!("k{i}"), "v");
    }
    rm.close_ok();
}

/// A `trace=` path that cannot be opened: `XAER_RMERR` (in a child, where tracing is off).
#[test]
fn unopenable_trace_file_fails_xa_open() {
    let dir = ffi_common::private_dir();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_calls", "--test-threads=1"])
        .env(CHILD_ENV, format!("bad:{}", dir.path().display()))
        .env_remove("MMXA_TRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two processes traced through `MMXA_TRACE` into one file, alongside this process: every line
/// is whole and each process's lines are all there.
#[test]
fn processes_append_to_one_file() {
    let exe = std::env::current_exe().unwrap();
    let dirs: Vec<_> = (0..2).map(|_| ffi_common::private_dir()).collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Command::new(&exe)
                .args(["--exact", "child_process_calls", "--test-threads=1"])
                .env(CHILD_ENV, format!("{}:{}", 60 + i, d.path().display()))
                .env("MMXA_TRACE", trace_path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for (i, _) in dirs.iter().enumerate() {
        let lines = lines_of(60 + i as i32);
        assert_eq!(lines.len(), CHILD_CALLS + 2, "child {i}");
        let pids: BTreeSet<u32> = lines.iter().map(|l| l.pid).collect();
        assert_eq!(pids.len(), 1);
        assert!(!pids.contains(&std::process::id()));
    }
}
