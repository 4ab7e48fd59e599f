//! An "XA shell": a child process (this test binary, re-executed) that makes XA and data calls
//! through the C entry points, one command per line on stdin, and prints each return code (and
//! data) after [`MARK`]. Tests drive several shells to script work across real processes.
//!
//! A test that uses shells calls [`shell_if_child`] first: in a shell child it serves commands
//! and exits; in the test process it returns. Commands: `open RMID INFO`, `close RMID`,
//! `start|end|commit RMID GTRID FLAGS`, `prepare|rollback|forget RMID GTRID`, `recover RMID`,
//! `put RMID KEY VALUE`, `get RMID KEY`, `del RMID KEY`, `savepoint RMID` (answers the code
//! and the id), `rollback_to RMID ID`, `pid`, `fork_sleep` (a child that lingers; answers its
//! pid), and `loop RMID NAME` (numbered
//! two-phase transactions until killed, see `work_loop`). XIDs are formatID 1, the given gtrid,
//! bqual `b`.
#![allow(dead_code)] // each test binary uses a different subset

use crate::ffi_common::{self, xid, Rm};
use mmxa::status::*;
use mmxa::xa::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

const ENV_SHELL: &str = "MMXA_SHELL";
const MARK: &str = "@mmxa-shell@ ";
/// A shell that answers nothing for this long has hung: the test fails.
const PATIENCE: Duration = Duration::from_secs(90);

// ---- the shell (child side) -------------------------------------------------------------

pub fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{MARK}{s}");
    let _ = out.flush();
}

pub fn shell_xid(gtrid: &str) -> mmxa::ffi::abi::Xid {
    xid(1, gtrid.as_bytes(), b"b")
}

fn arg<T: std::str::FromStr>(a: Option<&str>) -> T {
    a.and_then(|s| s.parse().ok()).expect("shell: bad argument")
}

fn rm(rmid: i32, infos: &BTreeMap<i32, String>) -> Rm {
    Rm {
        rmid,
        info: infos.get(&rmid).cloned().unwrap_or_default(),
    }
}

/// Runs one command and returns its answer line.
fn command(line: &str, infos: &mut BTreeMap<i32, String>) -> String {
    let mut w = line.split_whitespace();
    let cmd = w.next().unwrap_or("");
    if cmd == "pid" {
        return std::process::id().to_string();
    }
    if cmd == "fork_sleep" {
        // A child created by fork without exec that just lingers, as a monitor's helper might.
        // SAFETY: the child only calls async-signal-safe functions (sleep, _exit).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::sleep(120);
                libc::_exit(0);
            }
        }
        return pid.to_string();
    }
    let rmid: i32 = arg(w.next());
    if cmd == "open" {
        infos.insert(rmid, w.collect::<Vec<_>>().join(" "));
        return rm(rmid, infos).open().to_string();
    }
    let r = rm(rmid, infos);
    match cmd {
        "close" => r.close().to_string(),
        "start" | "end" | "commit" => {
            let x = shell_xid(w.next().unwrap_or(""));
            let flags: i64 = arg(w.next());
            match cmd {
                "start" => r.start(&x, flags),
                "end" => r.end(&x, flags),
                _ => r.commit(&x, flags),
            }
            .to_string()
        }
        "prepare" | "rollback" | "forget" => {
            let x = shell_xid(w.next().unwrap_or(""));
            match cmd {
                "prepare" => r.prepare(&x),
                "rollback" => r.rollback(&x),
                _ => r.forget(&x),
            }
            .to_string()
        }
        "recover" => {
            let mut buf = vec![shell_xid("-"); 64];
            let n = r.recover_into(&mut buf, TMSTARTRSCAN | TMENDRSCAN);
            let names: Vec<String> = buf
                .iter()
                .take(n.max(0) as usize)
                .map(|x| String::from_utf8_lossy(&ffi_common::xid_key(x).1).into_owned())
                .collect();
            format!("{n} {}", names.join(","))
        }
        "put" => {
            let key = w.next().unwrap_or("");
            let value = w.next().unwrap_or("");
            r.put(key.as_bytes(), value.as_bytes()).to_string()
        }
        "del" => r.delete(w.next().unwrap_or("").as_bytes()).to_string(),
        "savepoint" => {
            let mut id = 0u64;
            // SAFETY: a live, writable u64.
            let rc = unsafe { mmxa::ffi::data::mmxa_savepoint(rmid, &mut id) };
            format!("{rc} {id}")
        }
        "rollback_to" => {
            let id: u64 = arg(w.next());
            mmxa::ffi::data::mmxa_rollback_to_savepoint(rmid, id).to_string()
        }
        "get" => match r.get(w.next().unwrap_or("").as_bytes()) {
            Ok(Some(v)) => format!("0 {}", String::from_utf8_lossy(&v)),
            Ok(None) => MMXA_NOTFOUND.to_string(),
            Err(rc) => rc.to_string(),
        },
        "loop" => {
            let name: String = arg(w.next());
            work_loop(&r, &name)
        }
        _ => panic!("shell: unknown command {line:?}"),
    }
}

/// A worker: numbered two-phase transactions on its own keys, forever. Prints `prepared N`
/// and `committed N` after each acknowledgement; after `XAER_RMFAIL` or `MMXA_EIO` (the host
/// died) prints `lost N`, reopens (possibly becoming the host) and goes on.
fn work_loop(r: &Rm, name: &str) -> ! {
    let value = "v".repeat(4000);
    for i in 0u64.. {
        let x = shell_xid(&format!("{name}-{i}"));
        let mut rc = r.start(&x, TMNOFLAGS);
        for j in 0..4 {
            if rc == XA_OK {
                rc = r.put(format!("{name}-{i}-{j}").as_bytes(), value.as_bytes());
            }
        }
        if rc == XA_OK {
            rc = r.end(&x, TMSUCCESS);
        }
        if rc == XA_OK {
            rc = r.prepare(&x);
            if rc == XA_OK {
                say(&format!("prepared {i}"));
                rc = r.commit(&x, TMNOFLAGS);
                if rc == XA_OK {
                    say(&format!("committed {i}"));
                }
            }
        }
        if rc == XAER_RMFAIL || rc == MMXA_EIO {
            say(&format!("lost {i}"));
            // The data call failed first: xa_end answers XAER_RMFAIL and puts us in R0.
            let _ = r.end(&x, TMFAIL);
            r.close();
            let open = r.open();
            assert_eq!(open, XA_OK, "reopen after losing the host");
        } else if rc != XA_OK {
            panic!("worker {name}: transaction {i} failed with {rc}");
        }
    }
    unreachable!()
}

/// In a shell child: serve commands until stdin ends, then exit. Otherwise return.
pub fn shell_if_child() {
    if std::env::var_os(ENV_SHELL).is_none() {
        return;
    }
    let mut infos = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read a command");
        if line.trim().is_empty() {
            continue;
        }
        say(&command(&line, &mut infos));
    }
    std::process::exit(0);
}

// ---- the parent side --------------------------------------------------------------------

/// A running shell process.
pub struct Shell {
    pub name: String,
    pub child: Child,
    stdin: ChildStdin,
    pub lines: Receiver<String>,
}

impl Shell {
    pub fn spawn(test: &str, name: &str) -> Shell {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ENV_SHELL, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a shell");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find(MARK) {
                    if tx.send(line[i + MARK.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Shell {
            name: name.into(),
            child,
            stdin,
            lines,
        }
    }

    pub fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write a command");
        self.stdin.flush().expect("flush");
    }

    pub fn recv(&mut self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("shell {} answered nothing: {e}", self.name))
    }

    pub fn run(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.recv()
    }

    /// Runs `cmd` and asserts its return code.
    #[track_caller]
    pub fn rc(&mut self, cmd: &str, want: i32) {
        let got = self.run(cmd);
        let code: i32 = got
            .split(' ')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(i32::MIN);
        assert_eq!(code, want, "shell {}: {cmd} -> {got}", self.name);
    }

    /// `get`, as the value or None for `MMXA_NOTFOUND`.
    #[track_caller]
    pub fn get(&mut self, rmid: i32, key: &str) -> Option<String> {
        let got = self.run(&format!("get {rmid} {key}"));
        match got.split_once(' ') {
            Some(("0", v)) => Some(v.to_string()),
            _ if got == MMXA_NOTFOUND.to_string() => None,
            _ => panic!("shell {}: get {key} -> {got}", self.name),
        }
    }

    pub fn recover(&mut self, rmid: i32) -> Vec<String> {
        let got = self.run(&format!("recover {rmid}"));
        let (n, list) = got.split_once(' ').unwrap_or((&got, ""));
        let n: i32 = n.parse().expect("recover count");
        assert!(n >= 0, "shell {}: recover -> {got}", self.name);
        let mut v: Vec<String> = list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    pub fn sigkill(&mut self) {
        // SAFETY: plain syscall on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn open_string(dir: &Path, extra: &str) -> String {
    ffi_common::info(dir, extra)
}
