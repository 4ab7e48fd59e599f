//! `mmxa`: see and resolve in-doubt work in a store, also while processes have it open.
//!
//! The tool opens a store as any process does (see `mmxa::rm`): a peer of the processes that
//! have it open, working on the same shared state, or the one that rebuilds it from the log
//! while nobody else has it open. `dump` and `verify` read the log files through a
//! copy-on-write view that never changes them.

use mmxa::config::{self, Config, SyncMode};
use mmxa::error::{Error, Outcome};
use mmxa::log::{Log, LogError, Mapped, Record};
use mmxa::rm::{BranchReport, Range, Report, Rm};
use mmxa::status::MMXA_MAX_KEY;
use mmxa::xid::Xid;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Bound;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

const HELP: &str = "\
mmxa — inspect and resolve an mmxa store

usage: mmxa [--json] COMMAND STORE [ARGS]
       mmxa --version

STORE is the store's directory, or the open string the monitor passes to xa_open
(\"dir=/var/lib/app/a;sync=msync\"). Every command works while other processes have the
store open: the tool is one more peer of the processes using it. While no process has the
store open, the tool opens it (rebuilding its shared state from the log, as any first open
does) and closes it again when done.

commands:
  init STORE                   create the store (as the first xa_open with this open string
                               would: directory mode 0700, or 0770 with shared_group=1); on an
                               existing store, say so and change nothing
  status STORE                 in-doubt and active branches with the time (UTC) of their
                               start, prepare or heuristic decision and their age, open local
                               transactions (process, tag, start, age), log size, live keys,
                               lock waits now, and the latest heuristic decisions
  recover STORE [--mysql]      list in-doubt XIDs, one per line, as formatID.gtrid-hex.bqual-hex
                               (or, with --mysql, as X'gtrid-hex',X'bqual-hex',formatID)
  commit STORE XID --reason TEXT
                               heuristically commit a prepared branch; the decision and the
                               reason are durable before any lock is released, the monitor's
                               later xa_commit or xa_rollback answers XA_HEURCOM, and the
                               branch stays listed until xa_forget
  rollback STORE XID --reason TEXT
                               heuristically roll back a prepared branch (answers: XA_HEURRB)
  get STORE KEY                print the committed value of KEY
  scan STORE [--from KEY] [--to KEY] [--prefix P] [--reverse] [--limit N]
                               print the committed keys and values in byte order (memcmp, a
                               shorter key first), one key=\"...\" value=\"...\" per line
                               (bytes as dump shows them: printable ASCII quoted, else 0x and
                               hex): from KEY (--from, inclusive) to KEY (--to, exclusive), or
                               every key that starts with P (--prefix); --reverse: from the
                               last key down; --limit: at most N entries
  dump STORE                   print every record of the log, oldest first (PREPARE,
                               HEURISTIC and MOVE with the time of the prepare or decision)
  verify STORE                 check every record's checksum up to the end of the log and
                               say what follows it (zero fill, or the bytes of a write a crash
                               interrupted, which the next open erases); exit status 4 on
                               corruption (file and offset are named)
  backup STORE DEST [--verify] [segment_mb=N ...]
                               copy the store, while processes use it, into DEST (a new or
                               empty directory): a crash image of the store at one point of
                               its log, with every branch acknowledged before the backup
                               started; settings given after DEST (segment_mb) rewrite the
                               copy with them; --verify checks every record of the copy and
                               lists its in-doubt branches; exit status 4 if it is damaged

options:
  --json      machine-readable output (status, recover, get, scan, verify; dump prints one
              JSON object per record; scan an array of {\"key\":...,\"value\":...}, with
              \"key_hex\" or \"value_hex\" for bytes that are not UTF-8); status and recover
              give each branch's times
  -h, --help  this text
  --version   the version of the tool (the library's: mmxa_version())

exit status: 0 success; 1 KEY or XID not found; 2 usage error; 3 the store answered an error
(or there is no store); 4 verify (or dump) found corruption.

A relative directory (STORE or dir=) is taken relative to the current directory, as xa_open
takes it relative to the calling process's.

examples:
  mmxa init 'dir=/var/lib/app/a;shared_group=1'
  mmxa status /var/lib/app/a
  mmxa --json recover 'dir=/var/lib/app/a;sync=fdatasync'
  mmxa rollback /var/lib/app/a 4d4d5841.7478312d31.62 --reason 'TM lost, ticket 4711'
  mmxa recover --mysql /var/lib/app/a
  mmxa scan /var/lib/app/a --prefix acct: --limit 10
  mmxa backup --verify /var/lib/app/a /backup/a-2026-12-06
";

/// What `--version` prints: the library's `mmxa_version()`.
const VERSION: &str = concat!("mmxa ", env!("CARGO_PKG_VERSION"));

/// The commands, checked before any store is touched.
const COMMANDS: &[&str] = &[
    "init", "status", "recover", "commit", "rollback", "get", "scan", "dump", "verify", "backup",
];

/// A failure, with the exit status it means.
struct Fail(u8, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

fn store_err(msg: impl Into<String>) -> Fail {
    Fail(3, msg.into())
}

/// Options and operands, in any order.
struct Args {
    json: bool,
    mysql: bool,
    verify: bool,
    reason: Option<String>,
    scan: ScanArgs,
    /// The first option of `scan` given, refused by the other commands.
    scan_opt: Option<String>,
    rest: Vec<String>,
}

/// The options of `scan`.
#[derive(Default)]
struct ScanArgs {
    from: Option<String>,
    to: Option<String>,
    prefix: Option<String>,
    reverse: bool,
    limit: Option<usize>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, Fail> {
    let mut a = Args {
        json: false,
        mysql: false,
        verify: false,
        reason: None,
        scan: ScanArgs::default(),
        scan_opt: None,
        rest: Vec::new(),
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        if matches!(
            arg.as_str(),
            "--from" | "--to" | "--prefix" | "--reverse" | "--limit"
        ) {
            a.scan_opt.get_or_insert_with(|| arg.clone());
        }
        let mut value = |what: &str, slot: &Option<String>| -> Result<String, Fail> {
            if slot.is_some() {
                return Err(usage(format!("{arg} is given twice")));
            }
            it.next()
                .ok_or_else(|| usage(format!("{arg} needs {what}")))
        };
        match arg.as_str() {
            "--from" => a.scan.from = Some(value("a KEY", &a.scan.from)?),
            "--to" => a.scan.to = Some(value("a KEY", &a.scan.to)?),
            "--prefix" => a.scan.prefix = Some(value("a prefix", &a.scan.prefix)?),
            "--reverse" => a.scan.reverse = true,
            "--limit" => {
                let n = value("a number of entries", &None)?;
                a.scan.limit = Some(n.parse().map_err(|_| {
                    usage(format!(
                        "--limit {n}: expected a number of entries (0 or more)"
                    ))
                })?);
            }
            "--json" => a.json = true,
            "--mysql" => a.mysql = true,
            "--verify" => a.verify = true,
            "--reason" => a.reason = Some(it.next().ok_or_else(|| usage("--reason needs a text"))?),
            "-h" | "--help" => return Err(Fail(0, HELP.into())),
            "--version" => return Err(Fail(0, format!("{VERSION}\n"))),
            s if s.starts_with("--") => return Err(usage(format!("unknown option {s}"))),
            _ => a.rest.push(arg),
        }
    }
    Ok(a)
}

/// The store's settings from a directory or an open string (its directory as given).
fn parse_store(arg: &str) -> Result<Config, Fail> {
    let mut cfg = if arg.contains("dir=") {
        config::parse(arg.as_bytes()).map_err(usage)?
    } else {
        Config::new(arg)
    };
    cfg.trace = None;
    Ok(cfg)
}

/// Whether `dir` holds a log segment: what makes a directory a store.
fn has_log(dir: &Path) -> Result<bool, Fail> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| store_err(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("log-") && n.ends_with(".seg")
        }))
}

/// The settings of an existing store, with its directory resolved.
fn store_config(arg: &str) -> Result<Config, Fail> {
    let mut cfg = parse_store(arg)?;
    let no_store = |dir: &Path| {
        store_err(format!(
            "no mmxa store in {} (create one with mmxa init or xa_open)",
            dir.display()
        ))
    };
    match std::fs::metadata(&cfg.dir) {
        Ok(m) if !m.is_dir() => {
            return Err(store_err(format!(
                "{} is not a directory (a store is a directory)",
                cfg.dir.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_store(&cfg.dir)),
        Err(e) => return Err(store_err(format!("{}: {e}", cfg.dir.display()))),
    }
    cfg.dir = std::fs::canonicalize(&cfg.dir)
        .map_err(|e| store_err(format!("{}: {e}", cfg.dir.display())))?;
    if !has_log(&cfg.dir)? {
        return Err(no_store(&cfg.dir));
    }
    Ok(cfg)
}

/// `init`: creates the store as the first `xa_open` with this open string would, or says
/// that it exists (and changes nothing).
fn init(arg: &str) -> Result<String, Fail> {
    let mut cfg = parse_store(arg)?;
    cfg.dir = config::prepare_dir(&cfg).map_err(store_err)?;
    if has_log(&cfg.dir)? {
        return Ok(format!(
            "{}: an mmxa store exists here already; nothing changed\n",
            cfg.dir.display()
        ));
    }
    let rm = Rm::open(cfg.clone()).map_err(|e| store_err(format!("{}: {e}", cfg.dir.display())))?;
    drop(rm);
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&cfg.dir)
        .map_err(|e| store_err(format!("{}: {e}", cfg.dir.display())))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let len = e.metadata().ok()?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect();
    files.sort();
    let mut out = format!(
        "created the mmxa store {} (directory mode {:03o}, files {:03o}; segments grow to {} MiB)\n",
        cfg.dir.display(),
        cfg.dir_mode(),
        cfg.file_mode(),
        cfg.segment_size >> 20
    );
    for (name, len) in files {
        let _ = writeln!(out, "  {name:<26} {len:>10} bytes");
    }
    Ok(out)
}

/// Reaches the store as an administrator.
fn reach(cfg: &Config) -> Result<((), Arc<Rm>), Fail> {
    Rm::open_admin(cfg.clone())
        .map(|rm| ((), Arc::new(rm)))
        .map_err(store_err)
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, c| {
        let _ = write!(s, "{c:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `formatID.gtrid-hex.bqual-hex` or MySQL's `X'gtrid-hex',X'bqual-hex',formatID`.
fn parse_xid(s: &str) -> Result<Xid, Fail> {
    let bad = || {
        usage(format!(
            "{s}: not an XID (formatID.gtrid-hex.bqual-hex or X'..',X'..',N)"
        ))
    };
    let (fmt, g, b) = if let Some(rest) = s.strip_prefix("X'").or_else(|| s.strip_prefix("x'")) {
        let (g, rest) = rest.split_once("',").ok_or_else(bad)?;
        let rest = rest
            .strip_prefix("X'")
            .or_else(|| rest.strip_prefix("x'"))
            .ok_or_else(bad)?;
        let (b, fmt) = rest.split_once("',").ok_or_else(bad)?;
        (fmt, g, b)
    } else {
        let mut parts = s.splitn(3, '.');
        let fmt = parts.next().ok_or_else(bad)?;
        let g = parts.next().ok_or_else(bad)?;
        let b = parts.next().ok_or_else(bad)?;
        (fmt, g, b)
    };
    let fmt: i64 = fmt.trim().parse().map_err(|_| bad())?;
    let g = unhex(g).ok_or_else(bad)?;
    let b = unhex(b).ok_or_else(bad)?;
    Xid::from_parts(fmt, &g, &b).map_err(|e| usage(format!("{s}: {e}")))
}

fn mysql_xid(x: &Xid) -> String {
    format!(
        "X'{}',X'{}',{}",
        hex(x.gtrid()),
        hex(x.bqual()),
        x.format_id()
    )
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn xid_json(x: &Xid) -> String {
    format!(
        "{{\"xid\":{},\"formatID\":{},\"gtrid\":{},\"bqual\":{},\"mysql\":{}}}",
        js(&x.to_string()),
        x.format_id(),
        js(&hex(x.gtrid())),
        js(&hex(x.bqual())),
        js(&mysql_xid(x))
    )
}

fn in_doubt(state: &str) -> bool {
    state == "prepared" || state.starts_with("heuristic")
}

fn age(ms: u64) -> String {
    match ms {
        0..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A wall-clock time (ns since the Unix epoch) as ISO 8601 UTC, to the second.
fn iso(ns: u64) -> String {
    mmxa::audit::utc(ns / 1_000_000_000)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A branch's times as JSON fields: `since` (ISO 8601 UTC, or null when the log recorded no
/// time), `since_unix_ns`, `age_from` and `age_ms`.
fn times_json(b: &BranchReport) -> String {
    let (since, ns) = match b.since_ns {
        Some(ns) => (js(&iso(ns)), ns.to_string()),
        None => ("null".into(), "null".into()),
    };
    format!(
        "\"since\":{since},\"since_unix_ns\":{ns},\"age_from\":{},\"age_ms\":{}",
        js(b.age_from),
        b.age_ms
    )
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn status(cfg: &Config, rep: &Report, audit: &[String], json: bool) -> String {
    let mut out = String::new();
    if json {
        let branches: Vec<String> = rep
            .branches
            .iter()
            .map(|b| {
                format!(
                    "{{\"xid\":{},\"state\":{},\"in_doubt\":{},{},\"keys\":{},\"reason\":{}}}",
                    xid_json(&b.xid),
                    js(&b.state),
                    in_doubt(&b.state),
                    times_json(b),
                    b.keys,
                    js(&b.reason)
                )
            })
            .collect();
        let locals: Vec<String> = rep
            .locals
            .iter()
            .map(|l| {
                format!(
                    "{{\"tag\":{},\"pid\":{},\"state\":{},\"since\":{},\"since_unix_ns\":{},\
                     \"age_from\":\"start\",\"age_ms\":{},\"keys\":{}}}",
                    l.tag,
                    l.pid.map_or("null".into(), |p| p.to_string()),
                    js(&l.state),
                    js(&iso(l.since_ns)),
                    l.since_ns,
                    l.age_ms,
                    l.keys
                )
            })
            .collect();
        let audit: Vec<String> = audit.iter().map(|l| js(l)).collect();
        let _ = writeln!(
            out,
            "{{\"dir\":{},\"peers\":[{}],\"live_keys\":{},\"live_bytes\":{},\"segments\":{},\
             \"log_bytes\":{},\"lock_waits\":{},\"rebuilt\":{},\"branches\":[{}],\
             \"local_transactions\":[{}],\"audit\":[{}]}}",
            js(&cfg.dir.display().to_string()),
            rep.peers
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            rep.live_keys,
            rep.live_bytes,
            rep.segments,
            rep.log_bytes,
            rep.lock_waits,
            js(&iso(rep.built_ns)),
            branches.join(","),
            locals.join(","),
            audit.join(",")
        );
        return out;
    }
    let doubt = rep.branches.iter().filter(|b| in_doubt(&b.state)).count();
    let _ = writeln!(out, "store      {}", cfg.dir.display());
    let _ = writeln!(
        out,
        "open by    {} other process(es){}",
        rep.peers.len(),
        if rep.peers.is_empty() {
            String::new()
        } else {
            format!(
                " (pid {})",
                rep.peers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        out,
        "live keys  {} ({} of log records)",
        rep.live_keys,
        mib(rep.live_bytes)
    );
    let _ = writeln!(
        out,
        "log        {} segment(s), {}",
        rep.segments,
        mib(rep.log_bytes)
    );
    let _ = writeln!(out, "lock waits {} now", rep.lock_waits);
    let _ = writeln!(
        out,
        "branches   {} ({doubt} in doubt){}",
        rep.branches.len(),
        match rep.locals.len() {
            0 => String::new(),
            n => format!("; {n} local transaction(s) open"),
        }
    );
    if !rep.branches.is_empty() || !rep.locals.is_empty() {
        let _ = writeln!(
            out,
            "  {:<40} {:<19} {:<20} {:>8} {:>6}  reason",
            "XID", "state", "since (UTC)", "age", "keys"
        );
        for b in &rep.branches {
            let (since, age) = match b.since_ns {
                Some(ns) => (iso(ns), age(b.age_ms)),
                None => ("unknown".to_string(), format!(">{}", age(b.age_ms))),
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<19} {:<20} {:>8} {:>6}  {}",
                b.xid.to_string(),
                b.state,
                since,
                age,
                b.keys,
                b.reason
            );
        }
        // Local transactions have no XID: the process that has one open, and its tag.
        for l in &rep.locals {
            let who = match l.pid {
                Some(pid) => format!("local (pid {pid}, tag {})", l.tag),
                None => format!("local (tag {})", l.tag),
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<19} {:<20} {:>8} {:>6}",
                who,
                l.state,
                iso(l.since_ns),
                age(l.age_ms),
                l.keys
            );
        }
        if rep.branches.iter().any(|b| b.since_ns.is_none()) {
            let _ = writeln!(
                out,
                "  unknown: the log (written by an older mmxa) holds no time for this prepare or \
                 decision; the age counts from {}, when the store's shared state was last \
                 rebuilt from the log (its first open after every process had closed it)",
                iso(rep.built_ns)
            );
        }
    }
    if !audit.is_empty() {
        let _ = writeln!(out, "latest heuristic decisions (mmxa.audit):");
        for l in audit {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

fn run(argv: Vec<String>) -> Result<String, Fail> {
    let a = parse_args(argv)?;
    let (cmd, store) = match a.rest.as_slice() {
        [cmd, store, ..] => (cmd.as_str(), store.as_str()),
        [] => return Err(Fail(2, HELP.into())),
        [cmd] if !COMMANDS.contains(&cmd.as_str()) => {
            return Err(usage(format!("unknown command {cmd} (see --help)")))
        }
        [cmd] => return Err(usage(format!("{cmd}: STORE is missing (see --help)"))),
    };
    if !COMMANDS.contains(&cmd) {
        return Err(usage(format!("unknown command {cmd} (see --help)")));
    }
    let operands = &a.rest[2..];
    let want = |n: usize, what: &str| -> Result<(), Fail> {
        if operands.len() == n {
            Ok(())
        } else {
            Err(usage(format!("{cmd}: expected {what} (see --help)")))
        }
    };
    if let Some(opt) = &a.scan_opt {
        if cmd != "scan" {
            return Err(usage(format!("{cmd}: {opt} is an option of scan only")));
        }
    }
    if cmd == "init" {
        want(0, "no further operands")?;
        return init(store);
    }
    // Checked before the store is looked at: a usage error is one whatever the store.
    let range = if cmd == "scan" {
        want(
            0,
            "no operands after STORE (the bounds are --from, --to, --prefix)",
        )?;
        Some(scan_range(&a.scan)?)
    } else {
        None
    };
    let cfg = store_config(store)?;
    match cmd {
        "status" => {
            want(0, "no further operands")?;
            let (_site, s) = reach(&cfg)?;
            let rep = s.status();
            let audit = mmxa::audit::tail(&cfg.dir, 10).unwrap_or_default();
            Ok(status(&cfg, &rep, &audit, a.json))
        }
        "recover" => {
            want(0, "no further operands")?;
            let (_site, s) = reach(&cfg)?;
            let rep = s.status();
            let list: Vec<&BranchReport> =
                rep.branches.iter().filter(|b| in_doubt(&b.state)).collect();
            if a.json {
                let items: Vec<String> = list
                    .iter()
                    .map(|b| {
                        // The XID's object, with the branch's state and times added.
                        let x = xid_json(&b.xid);
                        format!(
                            "{},\"state\":{},{}}}",
                            &x[..x.len() - 1],
                            js(&b.state),
                            times_json(b)
                        )
                    })
                    .collect();
                return Ok(format!("[{}]\n", items.join(",")));
            }
            Ok(list.iter().fold(String::new(), |mut s, b| {
                let x = &b.xid;
                let _ = writeln!(s, "{}", if a.mysql { mysql_xid(x) } else { x.to_string() });
                s
            }))
        }
        "commit" | "rollback" => {
            want(1, "one XID")?;
            let xid = parse_xid(&operands[0])?;
            let reason = a
                .reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| usage(format!("{cmd}: --reason TEXT is required")))?;
            let (_site, s) = reach(&cfg)?;
            let outcome = if cmd == "commit" {
                Outcome::Commit
            } else {
                Outcome::Rollback
            };
            match s.heuristic(&xid, outcome, &reason) {
                Ok(()) => Ok(format!(
                    "{xid}: heuristically {}; the decision is durable and the branch stays \
                     listed until the monitor calls xa_forget\n",
                    if cmd == "commit" {
                        "committed"
                    } else {
                        "rolled back"
                    }
                )),
                Err(Error::UnknownXid(_)) => Err(Fail(1, format!("{xid}: no such branch"))),
                Err(e) => Err(store_err(format!("{xid}: {e}"))),
            }
        }
        "get" => {
            want(1, "one KEY")?;
            let key = operands[0].as_bytes();
            let (_site, s) = reach(&cfg)?;
            // Outside any branch: committed data.
            match s.get(mmxa::rm::new_toc(), key) {
                Ok(Some(v)) if a.json => Ok(format!(
                    "{{\"key\":{},\"found\":true,\"value\":{},\"value_hex\":{}}}\n",
                    js(&operands[0]),
                    std::str::from_utf8(&v).map_or("null".into(), js),
                    js(&hex(&v))
                )),
                Ok(Some(v)) => Ok(format!("{}\n", String::from_utf8_lossy(&v))),
                Ok(None) if a.json => Err(Fail(
                    1,
                    format!("{{\"key\":{},\"found\":false}}", js(&operands[0])),
                )),
                Ok(None) => Err(Fail(1, format!("{}: not found", operands[0]))),
                Err(e) => Err(store_err(e.to_string())),
            }
        }
        "scan" => match range {
            Some(range) => scan(&cfg, range, a.scan.limit, a.json),
            None => Err(usage("scan: no range")),
        },
        "dump" | "verify" => {
            want(0, "no further operands")?;
            inspect(&cfg, cmd == "verify", a.json)
        }
        "backup" => backup(&cfg, operands, a.verify, a.json),
        _ => Err(usage(format!("unknown command {cmd} (see --help)"))),
    }
}

/// The range `scan`'s options name.
fn scan_range(o: &ScanArgs) -> Result<Range, Fail> {
    let mut range = match &o.prefix {
        Some(_) if o.from.is_some() || o.to.is_some() => {
            return Err(usage(
                "scan: --prefix takes no --from or --to (the prefix sets both bounds)",
            ))
        }
        Some(p) => Range::prefix(p.as_bytes()),
        None => {
            let mut r = Range::all();
            if let Some(k) = &o.from {
                r.lo = Bound::Included(k.as_bytes().to_vec());
            }
            if let Some(k) = &o.to {
                r.hi = Bound::Excluded(k.as_bytes().to_vec());
            }
            r
        }
    };
    for (opt, k) in [
        ("--from", &o.from),
        ("--to", &o.to),
        ("--prefix", &o.prefix),
    ] {
        if let Some(k) = k.as_ref().filter(|k| k.len() > MMXA_MAX_KEY) {
            return Err(usage(format!(
                "scan: {opt}: a key of {} bytes is longer than any key can be ({MMXA_MAX_KEY})",
                k.len()
            )));
        }
    }
    if o.reverse {
        range = range.reversed();
    }
    Ok(range)
}

/// `scan`: prints the committed entries of `range` as it reads them (a cursor outside any
/// branch: committed data, no locks), at most `limit`.
fn scan(cfg: &Config, range: Range, limit: Option<usize>, json: bool) -> Result<String, Fail> {
    let (_site, s) = reach(cfg)?;
    let toc = mmxa::rm::new_toc();
    let mut cursor = s.scan(toc, range).map_err(|e| store_err(e.to_string()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // A closed pipe (`| head`) ends the listing quietly, as for dump.
    let mut open = !json || out.write_all(b"[").is_ok();
    let mut n = 0usize;
    let mut failed = None;
    while open && limit.map_or(true, |l| n < l) {
        match s.scan_next(toc, &mut cursor) {
            Ok(Some((k, v))) => {
                let item = if json {
                    let sep = if n == 0 { "" } else { "," };
                    format!(
                        "{sep}{{{},{}}}",
                        bytes_json("key", &k),
                        bytes_json("value", &v)
                    )
                } else {
                    format!("key={} value={}\n", show_all(&k), show_all(&v))
                };
                open = out.write_all(item.as_bytes()).is_ok();
                n += 1;
            }
            Ok(None) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if json && open && failed.is_none() {
        let _ = out.write_all(b"]\n");
    }
    let _ = out.flush();
    match failed {
        Some(e) => Err(store_err(format!("scan: after {n} entries: {e}"))),
        None => Ok(String::new()),
    }
}

/// `backup STORE DEST [--verify] [settings]`.
fn backup(cfg: &Config, operands: &[String], verify: bool, json: bool) -> Result<String, Fail> {
    let Some((dest, items)) = operands.split_first() else {
        return Err(usage("backup: DEST is missing (see --help)"));
    };
    let dest = std::path::PathBuf::from(dest);
    for it in items {
        let key = it.split('=').next().unwrap_or("").trim();
        if !it.contains('=') || key == "dir" || key == "trace" {
            return Err(usage(format!(
                "backup: {it}: expected a setting of the copy as key=value (e.g. segment_mb=16)"
            )));
        }
    }
    // The settings of the copy, checked as an open string would be.
    let new = if items.is_empty() {
        None
    } else {
        let info = format!("dir=/;{}", items.join(";"));
        Some(config::parse(info.as_bytes()).map_err(|e| usage(format!("backup: {e}")))?)
    };
    let (_site, s) = reach(cfg)?;
    let source_size = s.config().segment_size;
    // Rewritten only if some segment has another size (the files say, whatever the settings
    // of the processes using the store).
    let sizes: Vec<u64> = std::fs::read_dir(&cfg.dir)
        .map_err(|e| store_err(format!("{}: {e}", cfg.dir.display())))?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("log-") && n.ends_with(".seg")
        })
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .collect();
    let resize = new
        .as_ref()
        .filter(|_| {
            items
                .iter()
                .any(|i| i.trim_start().starts_with("segment_mb"))
        })
        .map(|c| c.segment_size)
        .filter(|&n| sizes.iter().any(|&s| s != n));
    let mut modes = cfg.clone();
    modes.shared_group = new.as_ref().map_or(cfg.shared_group, |c| c.shared_group);
    let opts = mmxa::backup::Options {
        dir_mode: modes.dir_mode(),
        file_mode: modes.file_mode(),
        segment_size: resize,
    };
    let mut damaged = false;
    let mut records = 0u64;
    let mut check = |dir: &std::path::Path| -> Result<(), String> {
        if !verify {
            return Ok(());
        }
        let mut visit = |_: u64, _: Record<'_>| -> Result<(), String> {
            records += 1;
            Ok(())
        };
        match Log::open_single(
            Mapped::private(dir),
            resize.unwrap_or(source_size),
            SyncMode::None,
            &mut visit,
        ) {
            Ok(_) => Ok(()),
            Err(LogError::Corrupt { file, offset, what }) => {
                damaged = true;
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                Err(format!(
                    "the copy is damaged: corruption in its {name} at offset {offset}: {what} \
                     ({records} valid records before it); {}",
                    if resize.is_some() {
                        "it was rewritten from a copy of the source".to_string()
                    } else {
                        format!(
                            "the copy holds the bytes of {}: check the source with mmxa verify",
                            cfg.dir.join(&*name).display()
                        )
                    }
                ))
            }
            Err(e) => Err(format!("verifying the copy: {e}")),
        }
    };
    let done = mmxa::backup::backup(&s, &dest, &opts, &mut check);
    drop(s);
    let sum = match done {
        Ok(sum) => sum,
        Err(e) if damaged => return Err(Fail(4, format!("backup of {}: {e}", cfg.dir.display()))),
        Err(Error::Invalid(m)) => return Err(usage(format!("backup: {m}"))),
        Err(e) => return Err(store_err(format!("backup of {}: {e}", cfg.dir.display()))),
    };
    let how = match resize {
        Some(n) => format!(", rewritten with {} MiB segments", n >> 20),
        None => String::new(),
    };
    if json {
        let xids: Vec<String> = sum.in_doubt.iter().map(xid_json).collect();
        return Ok(format!(
            "{{\"store\":{},\"dest\":{},\"lsn\":{},\"segments\":{},\"bytes\":{},\"keys\":{},\
             \"in_doubt\":[{}],\"rewritten\":{},\"verified\":{}}}\n",
            js(&cfg.dir.display().to_string()),
            js(&dest.display().to_string()),
            sum.lsn,
            sum.segments,
            sum.bytes,
            sum.keys,
            xids.join(","),
            resize.is_some(),
            if verify {
                format!("{{\"ok\":true,\"records\":{records}}}")
            } else {
                "null".into()
            }
        ));
    }
    let mut out = format!(
        "{} -> {}: copied at LSN {}, {} segment(s), {} bytes on disk, {} key(s), {} in-doubt \
         branch(es){how}\n",
        cfg.dir.display(),
        dest.display(),
        sum.lsn,
        sum.segments,
        sum.bytes,
        sum.keys,
        sum.in_doubt.len()
    );
    if verify {
        let _ = writeln!(
            out,
            "verify: ok: {records} records with valid checksums; the copy opens as a store with \
             {} key(s) and {} in-doubt branch(es){}",
            sum.keys,
            sum.in_doubt.len(),
            if sum.in_doubt.is_empty() { "" } else { ":" }
        );
        for x in &sum.in_doubt {
            let _ = writeln!(out, "  {x}");
        }
    }
    Ok(out)
}

/// Printable bytes as quoted text (`"` and `\` escaped), others as `0x` and hex.
fn show_all(b: &[u8]) -> String {
    if b.iter().all(|c| (0x20..0x7f).contains(c)) {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!("0x{}", hex(b))
    }
}

/// [`show_all`], long values shortened.
fn show(b: &[u8]) -> String {
    let head = &b[..b.len().min(64)];
    let mut s = show_all(head);
    if b.len() > head.len() {
        let _ = write!(s, "… ({} bytes)", b.len());
    }
    s
}

/// Bytes as a JSON field: `"name":"text"` if they are UTF-8, else `"name_hex":"hex"`.
fn bytes_json(name: &str, b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) => format!("{}:{}", js(name), js(t)),
        Err(_) => format!("{}:{}", js(&format!("{name}_hex")), js(&hex(b))),
    }
}

/// A field of a dumped record.
enum Field<'a> {
    Num(u64),
    Text(String),
    Bytes(&'a [u8]),
    /// A wall-clock time the record states (ns since the Unix epoch), or unknown.
    Time(Option<u64>),
}

/// One record as a line of text, or as a JSON object; ages as of `now` (ns since the epoch).
fn describe(lsn: u64, rec: &Record<'_>, json: bool, now: u64) -> String {
    use Field::*;
    let (kind, fields): (&str, Vec<(&str, Field<'_>)>) = match rec {
        Record::Put { tag, key, value } => (
            "PUT",
            vec![
                ("tag", Num(*tag)),
                ("key", Bytes(key)),
                ("value", Bytes(value)),
            ],
        ),
        Record::Delete { tag, key } => ("DELETE", vec![("tag", Num(*tag)), ("key", Bytes(key))]),
        Record::Prepare { tag, xid, at } => (
            "PREPARE",
            vec![
                ("tag", Num(*tag)),
                ("xid", Text(xid.to_string())),
                ("at", Time(*at)),
            ],
        ),
        Record::Commit { tag } => ("COMMIT", vec![("tag", Num(*tag))]),
        Record::Rollback { tag } => ("ROLLBACK", vec![("tag", Num(*tag))]),
        Record::Heuristic {
            tag,
            outcome,
            xid,
            reason,
            at,
        } => (
            "HEURISTIC",
            vec![
                ("tag", Num(*tag)),
                (
                    "outcome",
                    Text(mmxa::xa::code_name(*outcome).map_or(outcome.to_string(), String::from)),
                ),
                ("xid", Text(xid.to_string())),
                ("reason", Text(String::from_utf8_lossy(reason).into_owned())),
                ("at", Time(*at)),
            ],
        ),
        Record::Forget { tag } => ("FORGET", vec![("tag", Num(*tag))]),
        Record::Move { old, new, xid, at } => (
            "MOVE",
            vec![
                ("old", Num(*old)),
                ("new", Num(*new)),
                ("xid", Text(xid.to_string())),
                ("at", Time(*at)),
            ],
        ),
    };
    if json {
        let mut line = format!("{{\"lsn\":{lsn},\"kind\":{}", js(kind));
        for (k, v) in &fields {
            let _ = match v {
                Num(n) => write!(line, ",{}:{n}", js(k)),
                Text(t) => write!(line, ",{}:{}", js(k), js(t)),
                Bytes(b) => write!(line, ",{}", bytes_json(k, b)),
                Time(Some(ns)) => write!(
                    line,
                    ",{}:{},{}:{ns},\"age_ms\":{}",
                    js(k),
                    js(&iso(*ns)),
                    js(&format!("{k}_unix_ns")),
                    now.saturating_sub(*ns) / 1_000_000
                ),
                Time(None) => write!(
                    line,
                    ",{}:null,{}:null,\"age_ms\":null",
                    js(k),
                    js(&format!("{k}_unix_ns"))
                ),
            };
        }
        line.push('}');
        line
    } else {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| match v {
                Num(n) => format!("{k}={n}"),
                Text(t) if *k == "reason" => format!("{k}={t:?}"),
                Text(t) => format!("{k}={t}"),
                Bytes(b) => format!("{k}={}", show(b)),
                Time(Some(ns)) => format!(
                    "{k}={} age={}",
                    iso(*ns),
                    age(now.saturating_sub(*ns) / 1_000_000)
                ),
                Time(None) => format!("{k}=unknown"),
            })
            .collect();
        format!("{lsn:>12} {kind:<9} {}", body.join(" "))
    }
}

/// `dump` and `verify`: replays the log through a view that never changes the files (a store
/// in use may be appended to meanwhile: what it is writing reads as the log's tail).
fn inspect(cfg: &Config, verify: bool, json: bool) -> Result<String, Fail> {
    let mut records = 0u64;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut broken_pipe = false;
    let now = now_ns();
    let mut visit = |lsn: u64, rec: Record<'_>| -> Result<(), String> {
        records += 1;
        if !verify && !broken_pipe {
            broken_pipe = writeln!(out, "{}", describe(lsn, &rec, json, now)).is_err();
        }
        Ok(())
    };
    let opened = Log::open_single(
        Mapped::private(&cfg.dir),
        cfg.segment_size,
        SyncMode::None,
        &mut visit,
    );
    let _ = out.flush();
    drop(out);
    match opened {
        Ok(log) => {
            let end = log.written();
            let (segments, bytes) = log.disk_usage();
            let (tail_file, tail_off) = log.tail_position();
            let tail = after_end(&tail_file, tail_off)?;
            Ok(if json && verify {
                format!(
                    "{{\"ok\":true,\"records\":{records},\"end_lsn\":{end},\"segments\":{segments},\"bytes\":{bytes},\
                     \"tail\":{{\"file\":{},\"offset\":{tail_off},\"torn_bytes\":{},\"zero_bytes\":{}}},\
                     \"extra_segments\":[{}]}}\n",
                    js(&tail_file.display().to_string()),
                    tail.torn,
                    tail.zero,
                    tail.extra
                        .iter()
                        .map(|p| js(&p.display().to_string()))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else if verify {
                let mut out = format!(
                    "{}: ok: {records} records with valid checksums in {segments} segment(s), \
                     the log ends at LSN {end}\n",
                    cfg.dir.display()
                );
                let name = tail_file.file_name().map_or_else(
                    || tail_file.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                if tail.torn > 0 {
                    let _ = writeln!(
                        out,
                        "torn tail: {} bytes ignored after the last valid record ({name} from \
                         offset {tail_off}): a write that a crash interrupted before it was \
                         acknowledged, which the next open that rebuilds the store erases (on a \
                         store in use: also records appended since the check)",
                        tail.torn
                    );
                }
                let _ = writeln!(
                    out,
                    "zero fill: {} bytes of reserved, unused space to the end of {name}",
                    tail.zero
                );
                for p in &tail.extra {
                    let _ = writeln!(
                        out,
                        "ignored: {} holds no record (a new segment whose roll did not \
                         finish); the next open that rebuilds the store deletes it",
                        p.display()
                    );
                }
                out
            } else {
                String::new()
            })
        }
        Err(LogError::Corrupt { file, offset, what }) => {
            let msg = format!(
                "corruption in {} at offset {offset}: {what} ({records} valid records before it)",
                file.display()
            );
            Err(Fail(
                4,
                if json {
                    format!(
                        "{{\"ok\":false,\"records\":{records},\"file\":{},\"offset\":{offset},\"what\":{}}}",
                        js(&file.display().to_string()),
                        js(&what)
                    )
                } else {
                    msg
                },
            ))
        }
        Err(e) => Err(store_err(e.to_string())),
    }
}

/// What follows the end of the valid log.
struct AfterEnd {
    /// Bytes from the end up to the last non-zero byte of the tail segment: a torn write.
    torn: u64,
    /// Zero bytes after those, to the end of the tail segment.
    zero: u64,
    /// Segment files after the tail segment (empty: anything else is corruption).
    extra: Vec<std::path::PathBuf>,
}

/// Reads the tail segment from `off` on, and looks for segment files after it. Reads the files
/// themselves: the view `inspect` replayed has already set the torn tail aside in memory.
fn after_end(tail: &Path, off: u64) -> Result<AfterEnd, Fail> {
    use std::io::Read as _;
    let err = |e: std::io::Error| store_err(format!("{}: {e}", tail.display()));
    let mut f = std::fs::File::open(tail).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off)).map_err(err)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut pos, mut last) = (off, off);
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            last = pos + i as u64 + 1;
        }
        pos += n as u64;
    }
    let tail_name = tail.file_name().map(|n| n.to_string_lossy().into_owned());
    let dir = tail.parent().unwrap_or(Path::new("."));
    let mut extra: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| store_err(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("log-") && n.ends_with(".seg") && Some(n.as_str()) > tail_name.as_deref()
        })
        .map(|n| dir.join(n))
        .collect();
    extra.sort();
    Ok(AfterEnd {
        torn: last - off,
        zero: size.max(last) - last,
        extra,
    })
}

/// The arguments as text; one that is not UTF-8 is a usage error (`std::env::args` would panic).
fn text_args(argv: impl Iterator<Item = std::ffi::OsString>) -> Result<Vec<String>, Fail> {
    argv.map(|a| {
        a.into_string().map_err(|a| {
            usage(format!(
                "argument {:?} is not UTF-8 (keys, paths and XIDs are given as text)",
                a.to_string_lossy()
            ))
        })
    })
    .collect()
}

fn main() -> ExitCode {
    match text_args(std::env::args_os().skip(1)).and_then(run) {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(Fail(0, text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(Fail(code, msg)) => {
            if msg.starts_with('{') || msg == HELP {
                println!("{msg}");
            } else {
                eprintln!("mmxa: {}", msg.trim_end());
            }
            ExitCode::from(code)
        }
    }
}
