//! An "XA shell": a child process (this test binary, re-executed) that makes XA and data calls
//! through the C entry points, one command per line on stdin, and prints each return code (and
//! data) after [`MARK`]. Tests drive several shells to script work across real processes.
//!
//! A test that uses shells calls [`shell_if_child`] (or [`shell_if_child_with`], which adds the
//! test's own commands) first: in a shell child it serves commands and exits; in the test
//! process it returns. Commands: `open RMID INFO`, `openk RMID SEGMENT_KIB INFO` (as `open`,
//! through the registry, with log segments of that many KiB: below what an open string allows,
//! so that small workloads roll and reclaim segments), `close RMID`,
//! `start|end|commit RMID GTRID FLAGS`, `prepare|rollback|forget RMID GTRID`, `recover RMID`,
//! `put RMID KEY VALUE`, `get RMID KEY`, `getu RMID KEY` (`mmxa_get_for_update`),
//! `del RMID KEY`, `savepoint RMID` (answers the code and the id), `rollback_to RMID ID`,
//! `txn_begin|txn_commit|txn_rollback RMID` (a local transaction),
//! `heur RMID GTRID commit|rollback` (an operator's heuristic decision on a prepared branch),
//! `waits RMID` (how many lock requests wait now, in every process), `lasterr` (this thread's
//! `mmxa_last_error`), `umask OCTAL` (answers the previous one),
//! `sleep MS`, `pid`, `fork_sleep` (a child that lingers; answers its pid), `fork_run CMD | CMD...` (a forked child
//! runs the commands; answers theirs, `|`-separated). XIDs are formatID 1,
//! the given gtrid, bqual `b`. A shell never dumps core (it may be meant to die at a crash
//! point, see `mmxa::crash`).
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

/// The instance `rmid` as opened by this shell.
pub fn rm(rmid: i32, infos: &BTreeMap<i32, String>) -> Rm {
    Rm {
        rmid,
        info: infos.get(&rmid).cloned().unwrap_or_default(),
    }
}

/// A test's own commands: given the words of a line and the open instances, the answer, or
/// None if the command is not one of them.
pub type Extra = fn(&[&str], &BTreeMap<i32, String>) -> Option<String>;

/// Runs one command and returns its answer line.
fn command(line: &str, infos: &mut BTreeMap<i32, String>, extra: Option<Extra>) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    if let Some(answer) = extra.and_then(|f| f(&words, infos)) {
        return answer;
    }
    let mut w = line.split_whitespace();
    let cmd = w.next().unwrap_or("");
    if cmd == "pid" {
        return std::process::id().to_string();
    }
    if cmd == "lasterr" {
        return ffi_common::last_error();
    }
    if cmd == "sleep" {
        std::thread::sleep(Duration::from_millis(arg(w.next())));
        return "0".into();
    }
    if cmd == "umask" {
        let mode = u32::from_str_radix(w.next().unwrap_or(""), 8).expect("shell: octal umask");
        // SAFETY: plain syscall.
        let old = unsafe { libc::umask(mode as libc::mode_t) };
        return format!("{old:o}");
    }
    if let Some(rest) = line.trim().strip_prefix("fork_run ") {
        // A child created by fork without exec runs the `|`-separated commands and exits;
        // the answer is theirs, `|`-separated (read through a pipe).
        let mut fds = [0; 2];
        // SAFETY: a live two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: the child runs library calls only (the test thread forks; the other threads
        // of a shell are idle), then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let answers: Vec<String> = rest
                .split('|')
                .map(|c| command(c.trim(), infos, extra))
                .collect();
            let out = answers.join("|");
            // SAFETY: writes our buffer to the pipe, then exits without running destructors.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(0);
            }
        }
        // SAFETY: closes our copy of the write end, reads the answer, reaps the child.
        unsafe { libc::close(fds[1]) };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a live buffer of that length.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: plain syscalls on our descriptor and child.
        unsafe {
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return String::from_utf8_lossy(&out).into_owned();
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
    if cmd == "openk" {
        let kib: u64 = arg(w.next());
        let info = w.collect::<Vec<_>>().join(" ");
        let mut cfg = mmxa::config::parse(info.as_bytes()).expect("shell: open string");
        cfg.segment_size = kib << 10;
        infos.insert(rmid, info);
        return match mmxa::registry::open(rmid, cfg) {
            Ok(()) => XA_OK.to_string(),
            Err(e) => format!("{} {}", e.xa_code(), e.message()),
        };
    }
    let r = rm(rmid, infos);
    match cmd {
        "close" => r.close().to_string(),
        "txn_begin" => mmxa::ffi::txn::mmxa_txn_begin(rmid).to_string(),
        "txn_commit" => mmxa::ffi::txn::mmxa_txn_commit(rmid).to_string(),
        "txn_rollback" => mmxa::ffi::txn::mmxa_txn_rollback(rmid).to_string(),
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
        // scan RMID LO HI FLAGS ("-" for an open bound): "0 k1,k2,..." or the error code.
        "scan" => {
            fn bound(s: Option<&str>) -> Option<&[u8]> {
                s.filter(|s| *s != "-").map(str::as_bytes)
            }
            let (lo, hi) = (bound(w.next()), bound(w.next()));
            let flags = w.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            match r.scan(lo, hi, flags) {
                Ok(v) => {
                    let keys: Vec<String> = v
                        .iter()
                        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    format!("0 {}", keys.join(","))
                }
                Err(rc) => rc.to_string(),
            }
        }
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
        "get" | "getu" => {
            let key = w.next().unwrap_or("").as_bytes();
            let got = if cmd == "get" {
                r.get(key)
            } else {
                r.get_for_update(key)
            };
            match got {
                Ok(Some(v)) => format!("0 {}", String::from_utf8_lossy(&v)),
                Ok(None) => MMXA_NOTFOUND.to_string(),
                Err(rc) => rc.to_string(),
            }
        }
        "heur" => {
            let gtrid = w.next().unwrap_or("");
            let outcome = match w.next() {
                Some("commit") => mmxa::error::Outcome::Commit,
                Some("rollback") => mmxa::error::Outcome::Rollback,
                other => panic!("shell: heur {gtrid} {other:?}"),
            };
            let x = mmxa::xid::Xid::from_parts(1, gtrid.as_bytes(), b"b").expect("shell: XID");
            match mmxa::registry::call(rmid, |rm, _| {
                rm.heuristic(&x, outcome, "an operator's decision (test)")
            }) {
                Ok(()) => XA_OK.to_string(),
                Err(e) => format!("{} {}", e.xa_code(), e.message()),
            }
        }
        "waits" => match mmxa::registry::call(rmid, |rm, _| Ok(rm.status().lock_waits)) {
            Ok(n) => n.to_string(),
            Err(e) => format!("{} {}", e.xa_code(), e.message()),
        },
        _ => panic!("shell: unknown command {line:?}"),
    }
}

/// In a shell child: serve commands until stdin ends, then exit. Otherwise return.
pub fn shell_if_child() {
    serve(None)
}

/// [`shell_if_child`] with the test's own commands, tried before the others.
pub fn shell_if_child_with(extra: Extra) {
    serve(Some(extra))
}

fn serve(extra: Option<Extra>) {
    if std::env::var_os(ENV_SHELL).is_none() {
        return;
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall with a live struct: no core file for a death at a crash point.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
    let mut infos = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read a command");
        if line.trim().is_empty() {
            continue;
        }
        say(&command(&line, &mut infos, extra));
    }
    std::process::exit(0);
}

// ---- the parent side --------------------------------------------------------------------

/// A running shell process.
pub struct Shell {
    pub name: String,
    pub child: Child,
    /// None once closed ([`Shell::finish`]).
    stdin: Option<ChildStdin>,
    pub lines: Receiver<String>,
}

impl Shell {
    pub fn spawn(test: &str, name: &str) -> Shell {
        Shell::spawn_env(test, name, &[])
    }

    /// [`Shell::spawn`] with environment variables set for the child (e.g. `MMXA_CRASH_AT`).
    pub fn spawn_env(test: &str, name: &str, env: &[(&str, &str)]) -> Shell {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ENV_SHELL, "1")
            .env_remove(mmxa::crash::ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
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
            stdin: Some(stdin),
            lines,
        }
    }

    pub fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().expect("the shell's input is open");
        writeln!(stdin, "{cmd}").expect("write a command");
        stdin.flush().expect("flush");
    }

    pub fn recv(&mut self) -> String {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("shell {} answered nothing: {e}", self.name))
    }

    /// The next line within `bound` (a liveness bound), or a failure naming `what`.
    #[track_caller]
    pub fn recv_within(&mut self, bound: Duration, what: &str) -> String {
        self.lines.recv_timeout(bound).unwrap_or_else(|e| {
            panic!(
                "shell {}: no answer to {what} within {} s: {e}",
                self.name,
                bound.as_secs()
            )
        })
    }

    /// The next line, or None once the shell has exited and every line it printed was read.
    pub fn recv_or_exit(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("shell {} answered nothing: {e}", self.name),
        }
    }

    /// Every line the shell prints until it exits.
    pub fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.recv_or_exit()).collect()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends `sig` to the shell (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own unreaped child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill({sig})");
    }

    /// Ends the shell's input, so that it exits as a process that simply returns from `main`
    /// would (no `xa_close` unless it was sent), and waits for it.
    pub fn finish(&mut self) -> std::process::ExitStatus {
        self.stdin = None;
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for a shell") {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shell {} does not exit",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
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

    /// Waits (a liveness bound: [`PATIENCE`]) until at least `n` lock requests of the store
    /// `rmid` wait, in any process.
    #[track_caller]
    pub fn await_waits(&mut self, rmid: i32, n: u64) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let got = self.run(&format!("waits {rmid}"));
            let waiting: u64 = got
                .parse()
                .unwrap_or_else(|_| panic!("shell {}: waits -> {got}", self.name));
            if waiting >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shell {}: {waiting} lock requests wait, not {n}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
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
