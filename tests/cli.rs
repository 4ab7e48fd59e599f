//! The `mmxa` tool end to end, on stores that other processes are using (XA shells, see
//! `tests/shell`): status, recover in both XID formats, heuristic decisions and what the
//! monitor's later calls answer, get, and usage errors; the times of prepares and decisions in
//! `status`, `recover --json` and `dump`, also for a store written by the version-1 log format.

mod ffi_common;
mod shell;

use mmxa::status::*;
use mmxa::xa::*;
use shell::{open_string, shell_if_child, Shell};
use std::path::Path;
use std::process::{Command, Output};

fn mmxa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(args)
        .output()
        .expect("run mmxa")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = mmxa(args);
    assert_eq!(o.status.code(), Some(0), "mmxa {args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[track_caller]
fn fails(args: &[&str], code: i32) -> String {
    let o = mmxa(args);
    assert_eq!(o.status.code(), Some(code), "mmxa {args:?}: {}", text(&o));
    text(&o)
}

/// [`ok`], with the tool's process id.
#[track_caller]
fn ok_pid(args: &[&str]) -> (String, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mmxa");
    let pid = child.id();
    let o = child.wait_with_output().expect("wait for mmxa");
    assert_eq!(o.status.code(), Some(0), "mmxa {args:?}: {}", text(&o));
    (String::from_utf8(o.stdout).unwrap(), pid)
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether `s` holds a time as ISO 8601 UTC to the second (`2026-11-21T09:20:11Z`).
fn has_utc(s: &str) -> bool {
    let pat = b"dddd-dd-ddTdd:dd:ddZ";
    s.as_bytes().windows(pat.len()).any(|w| {
        w.iter().zip(pat).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
    })
}

#[test]
fn status_recover_and_heuristic_decisions_on_a_store_in_use() {
    const T: &str = "status_recover_and_heuristic_decisions_on_a_store_in_use";
    shell_if_child();
    let tmp = ffi_common::private_dir();
    let dir = dir_str(tmp.path());
    let info = open_string(tmp.path(), "lock_timeout_ms=60000");
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("open 1 {info}"), XA_OK);
    let tm_pid = tm.run("pid");
    tm.rc("put 1 c committed", MMXA_OK);
    for (g, k) in [("pp", "kp"), ("pq", "kq")] {
        tm.rc(&format!("start 1 {g} 0"), XA_OK);
        tm.rc(&format!("put 1 {k} {g}"), MMXA_OK);
        tm.rc(&format!("end 1 {g} {TMSUCCESS}"), XA_OK);
        tm.rc(&format!("prepare 1 {g}"), XA_OK);
    }
    tm.rc("start 1 act 0", XA_OK);
    tm.rc("put 1 ka x", MMXA_OK);

    let st = ok(&["status", dir]);
    assert!(st.contains(&format!("(pid {tm_pid})")), "{st}");
    assert!(st.contains("branches   3 (2 in doubt)"), "{st}");
    // Each branch with the time of its start or prepare, and its age.
    assert!(st.contains("since (UTC)"), "{st}");
    let prepared = st.lines().find(|l| l.contains("1.7070.62")).unwrap();
    assert!(has_utc(prepared) && prepared.contains("prepared"), "{st}");
    assert!(st.contains("1.7070.62") && st.contains("prepared"), "{st}");
    assert!(st.contains("active"), "{st}");
    let js = ok(&["--json", "status", &format!("dir={dir}")]);
    assert!(
        js.starts_with('{') && js.contains("\"state\":\"prepared\""),
        "{js}"
    );
    assert!(js.contains(&format!("\"peers\":[{tm_pid}]")), "{js}");
    assert!(
        js.contains("\"age_from\":\"prepare\"") && js.contains("\"age_from\":\"start\""),
        "{js}"
    );
    assert!(
        js.contains("\"since\":\"20") && js.contains("\"since_unix_ns\":1"),
        "{js}"
    );

    assert_eq!(ok(&["recover", dir]), "1.7070.62\n1.7071.62\n");
    assert_eq!(
        ok(&["recover", "--mysql", dir]),
        "X'7070',X'62',1\nX'7071',X'62',1\n"
    );
    let js = ok(&["recover", dir, "--json"]);
    assert!(js.contains("\"gtrid\":\"7070\"") && js.contains("\"mysql\":\"X'7071',X'62',1\""));
    // With the state, the prepare's time and the age.
    assert!(
        js.contains("\"state\":\"prepared\",\"since\":\"20") && js.contains("\"age_ms\":"),
        "{js}"
    );
    assert!(
        !js.contains("\"age_from\":\"start\""),
        "only in-doubt branches: {js}"
    );
    assert_eq!(ok(&["get", dir, "c"]), "committed\n");
    assert!(ok(&["--json", "get", dir, "c"]).contains("\"value\":\"committed\""));
    fails(&["get", dir, "kp"], 1); // prepared, not committed

    // Heuristic decisions: the reason is required; the monitor learns the outcome.
    fails(&["rollback", dir, "1.7070.62"], 2);
    let (out, tool_pid) = ok_pid(&[
        "rollback",
        dir,
        "1.7070.62",
        "--reason",
        "TM lost, ticket 4711",
    ]);
    assert!(out.contains("heuristically rolled back"), "{out}");
    // The audit line names the process that decided (the tool), not a peer that has the store
    // open.
    let audit = std::fs::read_to_string(tmp.path().join("mmxa.audit")).unwrap();
    assert!(
        audit.contains(&format!(
            " pid={tool_pid} xid=1.7070.62 decision=heuristic-rollback"
        )),
        "tool pid {tool_pid}, peer pid {tm_pid}:\n{audit}"
    );
    ok(&[
        "commit",
        dir,
        "X'7071',X'62',1",
        "--reason",
        "checked with the bank",
    ]);
    fails(&["commit", dir, "1.7072.62", "--reason", "nope"], 1);
    fails(&["commit", dir, "1.zz.62", "--reason", "nope"], 2);
    tm.rc(&format!("commit 1 pp {TMNOFLAGS}"), XA_HEURRB);
    tm.rc("rollback 1 pq", XA_HEURCOM);
    assert_eq!(tm.get(1, "kp"), None);
    assert_eq!(tm.get(1, "kq").as_deref(), Some("pq"));
    assert_eq!(tm.recover(1), vec!["pp".to_string(), "pq".to_string()]);
    let st = ok(&["status", dir]);
    assert!(st.contains("heuristic-rollback") && st.contains("TM lost, ticket 4711"));
    assert!(st.contains("decision=heuristic-commit reason=checked with the bank"));
    tm.rc("forget 1 pp", XA_OK);
    tm.rc("forget 1 pq", XA_OK);
    assert_eq!(ok(&["recover", dir]), "");
    // The audit trail outlives xa_forget.
    assert!(ok(&["status", dir]).contains("xid=1.7070.62 decision=heuristic-rollback"));

    // Usage and store errors.
    fails(&["status"], 2);
    let out = fails(&["frobnicate", dir], 2);
    assert!(out.contains("unknown command frobnicate"), "{out}");
    fails(&["status", dir, "--bogus"], 2);
    let empty = ffi_common::private_dir();
    fails(&["status", dir_str(empty.path())], 3);
    assert!(ok(&["--help"]).contains("usage: mmxa"));
    tm.rc(&format!("end 1 act {TMSUCCESS}"), XA_OK);
    tm.rc("rollback 1 act", XA_OK);
    tm.rc("close 1", XA_OK);
}

#[test]
fn orphan_policy_is_enforced_and_shown_by_status() {
    const T: &str = "orphan_policy_is_enforced_and_shown_by_status";
    shell_if_child();
    let tmp = ffi_common::private_dir();
    let dir = dir_str(tmp.path());
    let info = open_string(tmp.path(), "orphan_rollback_s=1");
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("open 1 {info}"), XA_OK);
    // A member with another orphan setting is refused.
    let mut other = Shell::spawn(T, "other");
    other.rc(
        &format!("open 1 {}", open_string(tmp.path(), "")),
        XAER_INVAL,
    );
    tm.rc("start 1 orphan 0", XA_OK);
    tm.rc("put 1 k v", MMXA_OK);
    tm.rc(&format!("end 1 orphan {TMSUCCESS}"), XA_OK);
    tm.rc("prepare 1 orphan", XA_OK);
    // The policy acts on its own; wait for it (generously: this is not a timing test).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let st = ok(&["status", dir]);
        if st.contains("heuristic-rollback") {
            assert!(st.contains("orphan policy"), "{st}");
            assert!(
                st.contains("decision=heuristic-rollback reason=orphan policy"),
                "{st}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired:\n{st}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tm.rc(&format!("commit 1 orphan {TMNOFLAGS}"), XA_HEURRB);
    tm.rc("forget 1 orphan", XA_OK);
    assert_eq!(tm.get(1, "k"), None);
}

/// `init` creates a store as xa_open would (relative to the current directory), and says so
/// when one exists; the other commands say when there is no store, and an unknown command is
/// named before any path is looked at.
#[test]
fn init_and_the_messages_for_missing_stores_and_bad_commands() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .permissions(PermissionsExt::from_mode(0o700))
        .tempdir()
        .unwrap();
    let store = tmp.path().join("s");
    let s = dir_str(&store);
    let out = fails(&["status", s], 3);
    assert!(
        out.contains(&format!(
            "no mmxa store in {s} (create one with mmxa init or xa_open)"
        )),
        "{out}"
    );
    let out = fails(&["bogus", s], 2);
    assert!(out.contains("unknown command bogus"), "{out}");
    let out = fails(&["bogus", "x"], 2);
    assert!(
        out.contains("unknown command bogus") && !out.contains("No such file"),
        "{out}"
    );
    fails(&["bogus"], 2);
    assert_eq!(
        ok(&["--version"]),
        format!("mmxa {}\n", env!("CARGO_PKG_VERSION"))
    );

    let info = format!("dir={s};shared_group=1");
    let out = ok(&["init", &info]);
    assert!(
        out.contains(&format!("created the mmxa store {s}")),
        "{out}"
    );
    assert!(out.contains("log-0000000000000001.seg"), "{out}");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770);
    let before = segment_bytes(&store);
    assert_eq!(before.len(), 1);
    // A new store starts with a small segment (4 MiB), not the configured 64 MiB.
    assert_eq!(before[0].1.len(), 4 << 20);
    let out = ok(&["init", &info]);
    assert!(
        out.contains("exists here already; nothing changed"),
        "{out}"
    );
    assert!(segment_bytes(&store) == before);
    let v = ok(&["verify", &info]);
    assert!(v.contains("ok: 0 records"), "{v}");
    assert!(ok(&["status", &info]).contains("branches   0"));

    // A relative directory is taken relative to the current directory.
    let o = Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(["init", "dir=rel/store"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let created = std::fs::canonicalize(tmp.path()).unwrap().join("rel/store");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("store {}", created.display())),
        "{}",
        text(&o)
    );
    assert_eq!(segment_bytes(&created).len(), 1);

    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"not a store").unwrap();
    let f = dir_str(&file);
    let out = fails(&["init", &format!("dir={f}")], 3);
    assert!(
        out.contains("not a directory") && !out.contains("File exists"),
        "{out}"
    );
    let out = fails(&["init", &format!("dir={f}/sub")], 3);
    assert!(out.contains(&format!("{f} is not a directory")), "{out}");
    let out = fails(&["status", f], 3);
    assert!(out.contains("not a directory"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store");
}

fn segment_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dump_and_verify_read_the_log_without_changing_it() {
    const T: &str = "dump_and_verify_read_the_log_without_changing_it";
    shell_if_child();
    let tmp = ffi_common::private_dir();
    let dir = dir_str(tmp.path());
    let info = open_string(tmp.path(), "");
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("open 1 {info}"), XA_OK);
    for i in 0..5 {
        tm.rc(&format!("put 1 key{i} value{i}"), MMXA_OK);
    }
    tm.rc("start 1 pp 0", XA_OK);
    tm.rc("put 1 kp prepared", MMXA_OK);
    tm.rc(&format!("end 1 pp {TMSUCCESS}"), XA_OK);
    tm.rc("prepare 1 pp", XA_OK);

    // While the store is open in another process.
    let dump = ok(&["dump", dir]);
    assert!(
        dump.contains("PUT       tag=0 key=\"key0\" value=\"value0\""),
        "{dump}"
    );
    assert!(
        dump.contains("PREPARE") && dump.contains("xid=1.7070.62"),
        "{dump}"
    );
    // The prepare's time and its age.
    let line = dump.lines().find(|l| l.contains("PREPARE")).unwrap();
    assert!(line.contains(" at=20") && line.contains(" age="), "{line}");
    assert!(has_utc(line), "{line}");
    let lines = ok(&["--json", "dump", dir]);
    assert!(lines.lines().all(|l| l.starts_with("{\"lsn\":")), "{lines}");
    assert!(lines.contains("\"kind\":\"PREPARE\",\"tag\":"), "{lines}");
    let line = lines.lines().find(|l| l.contains("PREPARE")).unwrap();
    assert!(
        line.contains("\"at\":\"20")
            && line.contains("\"at_unix_ns\":1")
            && line.contains("\"age_ms\":"),
        "{line}"
    );
    let v = ok(&["verify", dir]);
    assert!(v.contains("ok: 7 records"), "{v}");
    assert!(
        v.contains("\nzero fill: ") && !v.contains("torn tail"),
        "{v}"
    );
    tm.rc("close 1", XA_OK);
    drop(tm);

    // A torn tail (bytes after the end that never were a record) is the normal end of a log:
    // verify says ok, and neither command cuts it from the file.
    let segs = segment_bytes(tmp.path());
    let (path, mut bytes) = segs.last().cloned().unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let end = end.div_ceil(8) * 8;
    bytes[end + 5] = 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let v = ok(&["verify", dir]);
    assert!(v.contains("ok: 7 records"), "{v}");
    assert!(
        v.contains(&format!(
            "torn tail: 6 bytes ignored after the last valid record ({} from offset {end})",
            path.file_name().unwrap().to_str().unwrap()
        )),
        "{v}"
    );
    let js = ok(&["--json", "verify", dir]);
    assert!(
        js.contains(&format!("\"offset\":{end},\"torn_bytes\":6,")),
        "{js}"
    );
    ok(&["dump", dir]);
    assert_eq!(
        segment_bytes(tmp.path()),
        vec![(path.clone(), bytes.clone())]
    );

    // A flipped byte inside an early record that later synced records vouch for: corruption,
    // with the file and offset, exit status 4.
    bytes[end + 5] = 0;
    bytes[64 + 30] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = fails(&["verify", dir], 4);
    assert!(
        out.contains("corruption in") && out.contains("at offset 64"),
        "{out}"
    );
    let js = String::from_utf8(mmxa(&["--json", "verify", dir]).stdout).unwrap();
    assert!(
        js.contains("\"ok\":false") && js.contains("\"offset\":64"),
        "{js}"
    );
    fails(&["dump", dir], 4);
    assert_eq!(segment_bytes(tmp.path()), vec![(path, bytes)]);
}

/// One damaged byte in a segment that whole segments follow is corruption, whatever the sync
/// mode. A store written with `sync=none` used to read it as a torn tail: `verify` said ok, and
/// an open kept the records before the byte and deleted the later segments, with the prepared
/// branch in them (also when opened with `sync=msync`).
#[test]
fn damage_followed_by_whole_segments_is_corruption_with_sync_none() {
    use mmxa::config::{Config, SyncMode};
    use mmxa::rm::flags::{EndMode, StartMode};
    use mmxa::rm::Rm;
    use mmxa::xid::Xid;
    let template = ffi_common::private_dir();
    let mut cfg = Config::new(template.path());
    cfg.sync = SyncMode::None;
    cfg.segment_size = 4 << 20;
    cfg.lock_timeout = std::time::Duration::ZERO;
    let rm = Rm::open(cfg.clone()).unwrap();
    let value = vec![b'v'; 700];
    for i in 0..20_000 {
        let key = format!("key{i:05}");
        assert!(rm.put(1, key.as_bytes(), Some(&value)).is_ok(), "{key}");
    }
    let x = Xid::from_parts(1, b"prepared", b"b").unwrap();
    assert_eq!(rm.start(1, &x, StartMode::New), Ok(()));
    rm.put(1, b"kp", Some(b"in doubt")).unwrap();
    assert_eq!(rm.end(1, &x, EndMode::Success), Ok(()));
    assert_eq!(rm.prepare(1, &x), Ok(mmxa::rm::Vote::Prepared));
    drop(rm);
    assert_eq!(
        segment_bytes(template.path()).len(),
        4,
        "the store spans 4 segments"
    );

    for (seg, at) in [(2usize, 2_097_152usize), (1, 100)] {
        let ctx = format!("byte {at} of segment {seg} flipped");
        let tmp = ffi_common::private_dir();
        for (path, bytes) in segment_bytes(template.path()) {
            std::fs::write(tmp.path().join(path.file_name().unwrap()), bytes).unwrap();
        }
        let (path, mut bytes) = segment_bytes(tmp.path())[seg - 1].clone();
        bytes[at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let before = segment_bytes(tmp.path());
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // The offset named is that of the record holding the byte.
        let names_the_record = |msg: &str| {
            let off: Option<usize> = msg
                .split("at offset ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok());
            msg.contains(&name) && off.is_some_and(|o| o <= at && at < o + 800)
        };
        let out = fails(&["verify", dir_str(tmp.path())], 4);
        assert!(
            out.contains("corruption in") && names_the_record(&out),
            "{ctx}: {out}"
        );
        for sync in [SyncMode::None, SyncMode::Msync] {
            let mut c = cfg.clone();
            c.dir = tmp.path().to_path_buf();
            c.sync = sync;
            match Rm::open(c) {
                Ok(rm) => panic!(
                    "{ctx}: opened with sync={sync:?}, {} of 20000 keys",
                    (0..20_000)
                        .filter(|i| rm.get(1, format!("key{i:05}").as_bytes()) != Ok(None))
                        .count()
                ),
                Err(e) => assert!(
                    e.contains("corrupt") && names_the_record(&e),
                    "{ctx}, sync={sync:?}: {e}"
                ),
            }
            assert!(segment_bytes(tmp.path()) == before, "{ctx}: files changed");
        }
    }
}

/// A store written by the version-1 log format (`tests/data/v1-store`, made by mmxa 0.1 before
/// records carried times: a committed key, a prepared branch 1.6702.62 and a heuristically
/// rolled back one 1.6703.62). It opens; its in-doubt branches show an unknown time, with the
/// age counted from the open, and say so; `dump` shows the records without times. The first
/// record appended (a heuristic decision here) goes to a new segment of the current version
/// and has its time; the other branch stays unknown.
#[test]
fn a_store_of_the_version_1_format_opens_with_unknown_times() {
    let tmp = ffi_common::private_dir();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store");
    for e in std::fs::read_dir(&golden).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
    }
    let dir = dir_str(tmp.path());
    let seg1 = tmp.path().join("log-0000000000000001.seg");
    let version =
        |p: &Path| u32::from_le_bytes(std::fs::read(p).unwrap()[8..12].try_into().unwrap());
    assert_eq!(version(&seg1), 1);

    let st = ok(&["status", dir]);
    assert!(st.contains("branches   2 (2 in doubt)"), "{st}");
    for x in ["1.6702.62", "1.6703.62"] {
        let line = st.lines().find(|l| l.contains(x)).unwrap();
        assert!(line.contains("unknown") && line.contains(" >"), "{st}");
    }
    assert!(
        st.contains("unknown: the log (written by an older mmxa) holds no time"),
        "{st}"
    );
    let js = ok(&["--json", "status", dir]);
    assert!(
        js.contains("\"since\":null,\"since_unix_ns\":null,\"age_from\":\"rebuild\""),
        "{js}"
    );
    assert!(js.contains("\"rebuilt\":\"20"), "{js}");
    let js = ok(&["--json", "recover", dir]);
    assert_eq!(js.matches("\"age_from\":\"rebuild\"").count(), 2, "{js}");
    let dump = ok(&["dump", dir]);
    let line = dump.lines().find(|l| l.contains("PREPARE")).unwrap();
    assert!(line.ends_with(" at=unknown"), "{dump}");
    let js = ok(&["--json", "dump", dir]);
    assert!(
        js.contains("\"at\":null,\"at_unix_ns\":null,\"age_ms\":null"),
        "{js}"
    );
    assert_eq!(ok(&["get", dir, "committed"]), "yes\n");
    // Reading changed nothing: one segment, of version 1.
    assert!(!tmp.path().join("log-0000000000000002.seg").exists());

    ok(&[
        "rollback",
        dir,
        "1.6702.62",
        "--reason",
        "after the upgrade",
    ]);
    let seg2 = tmp.path().join("log-0000000000000002.seg");
    assert_eq!((version(&seg1), version(&seg2)), (1, 2));
    let st = ok(&["status", dir]);
    let decided = st.lines().find(|l| l.contains("1.6702.62")).unwrap();
    assert!(has_utc(decided) && !decided.contains("unknown"), "{st}");
    let old = st.lines().find(|l| l.contains("1.6703.62")).unwrap();
    assert!(old.contains("unknown"), "{st}");
    let dump = ok(&["dump", dir]);
    let line = dump
        .lines()
        .find(|l| l.contains("after the upgrade"))
        .unwrap();
    assert!(line.contains("HEURISTIC") && has_utc(line), "{dump}");
}

/// An open local transaction holds locks like a branch: `status` lists it, with the process
/// that has it open, its tag, start and age and the keys it wrote (text and `--json`), and
/// forgets it once it is committed.
#[test]
fn status_lists_open_local_transactions() {
    const T: &str = "status_lists_open_local_transactions";
    shell_if_child();
    let tmp = ffi_common::private_dir();
    let dir = dir_str(tmp.path());
    let info = open_string(tmp.path(), "");
    let mut app = Shell::spawn(T, "app");
    app.rc(&format!("open 1 {info}"), XA_OK);
    let pid = app.run("pid");
    app.rc("txn_begin 1", MMXA_OK);
    app.rc("put 1 k1 v", MMXA_OK);
    app.rc("put 1 k2 v", MMXA_OK);

    let st = ok(&["status", dir]);
    assert!(
        st.contains("branches   0 (0 in doubt); 1 local transaction(s) open"),
        "{st}"
    );
    let row = st
        .lines()
        .find(|l| l.contains(&format!("local (pid {pid}, tag ")))
        .unwrap_or_else(|| panic!("no row for the local transaction:\n{st}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // local (pid N, tag T)  local  SINCE  AGE  KEYS
    assert_eq!(cols[5], "local", "{st}");
    assert!(has_utc(cols[6]), "{st}");
    assert_eq!(cols[8], "2", "{st}");

    let js = ok(&["--json", "status", dir]);
    assert!(
        js.contains("\"local_transactions\":[{\"tag\":")
            && js.contains(&format!("\"pid\":{pid},\"state\":\"local\",\"since\":\"20"))
            && js.contains("\"age_from\":\"start\"")
            && js.contains("\"keys\":2}]"),
        "{js}"
    );
    assert!(js.contains("\"branches\":[]"), "{js}");
    // Not in doubt: recover lists nothing.
    assert_eq!(ok(&["recover", dir]), "");

    app.rc("txn_commit 1", MMXA_OK);
    let st = ok(&["status", dir]);
    assert!(
        !st.contains("local (") && !st.contains("local transaction"),
        "{st}"
    );
    assert!(
        ok(&["--json", "status", dir]).contains("\"local_transactions\":[]"),
        "{st}"
    );
    assert_eq!(ok(&["get", dir, "k1"]), "v\n");
    app.rc("close 1", XA_OK);
}

/// `scan` lists committed entries in byte order, on a store another process is using: bounds
/// (from inclusive, to exclusive), prefix, reverse, limit, bytes shown as `dump` shows them,
/// `--json`; a prepared branch's and an open local transaction's writes are not listed until
/// they commit. Usage errors are found before the store is looked at.
#[test]
fn scan_lists_committed_entries_in_byte_order() {
    use mmxa::config::Config;
    use mmxa::rm::Rm;
    const T: &str = "scan_lists_committed_entries_in_byte_order";
    shell_if_child();
    let tmp = ffi_common::private_dir();
    let dir = dir_str(tmp.path());
    let long = "v".repeat(200);
    {
        let mut cfg = Config::new(tmp.path());
        cfg.segment_size = 4 << 20;
        let rm = Rm::open(cfg).unwrap();
        let entries: [(&[u8], &[u8]); 8] = [
            (b"b", b"say \"hi\" \\ bye"),
            (b"acct:2", b"250"),
            (b"z", long.as_bytes()),
            (b"a", b"1"),
            (b"acct:10", b"7"),
            (b"bin\x00\xff", b"\xfe\x01"),
            (b"ab", b"2"),
            (b"acct:1", b"100"),
        ];
        for (k, v) in entries {
            rm.put(1, k, Some(v)).unwrap();
        }
    }
    let mut tm = Shell::spawn(T, "tm");
    tm.rc(&format!("open 1 {}", open_string(tmp.path(), "")), XA_OK);
    tm.rc("start 1 pp 0", XA_OK);
    tm.rc("put 1 acct:3 prepared", MMXA_OK);
    tm.rc(&format!("end 1 pp {TMSUCCESS}"), XA_OK);
    tm.rc("prepare 1 pp", XA_OK);
    tm.rc("txn_begin 1", MMXA_OK);
    tm.rc("put 1 acct:4 local", MMXA_OK);
    tm.rc("del 1 a", MMXA_OK);

    let line = |k: &str, v: &str| format!("key={k} value={v}\n");
    let all = [
        line("\"a\"", "\"1\""),
        line("\"ab\"", "\"2\""),
        line("\"acct:1\"", "\"100\""),
        line("\"acct:10\"", "\"7\""),
        line("\"acct:2\"", "\"250\""),
        line("\"b\"", r#""say \"hi\" \\ bye""#),
        line("0x62696e00ff", "0xfe01"),
        line("\"z\"", &format!("\"{long}\"")),
    ];
    let lines = |r: std::ops::Range<usize>| all[r].concat();
    let rev = |r: std::ops::Range<usize>| all[r].iter().rev().cloned().collect::<String>();
    assert_eq!(ok(&["scan", dir]), lines(0..8));
    assert_eq!(ok(&["scan", dir, "--from", "ab", "--to", "b"]), lines(1..5));
    assert_eq!(ok(&["scan", dir, "--from", "acct:10"]), lines(3..8));
    assert_eq!(ok(&["scan", dir, "--to", "acct:10"]), lines(0..3));
    assert_eq!(ok(&["scan", dir, "--prefix", "acct:"]), lines(2..5));
    assert_eq!(ok(&["scan", dir, "--prefix", "acct:1"]), lines(2..4));
    assert_eq!(
        ok(&["scan", "--reverse", dir, "--prefix", "acct:"]),
        rev(2..5)
    );
    assert_eq!(ok(&["scan", dir, "--reverse", "--from", "b"]), rev(5..8));
    assert_eq!(
        ok(&["scan", dir, "--reverse", "--from", "ab", "--to", "b"]),
        rev(1..5)
    );
    assert_eq!(ok(&["scan", dir, "--limit", "2"]), lines(0..2));
    assert_eq!(ok(&["scan", dir, "--reverse", "--limit", "2"]), rev(6..8));
    assert_eq!(ok(&["scan", dir, "--limit", "0"]), "");
    assert_eq!(ok(&["scan", dir, "--from", "c", "--to", "d"]), "");
    assert_eq!(ok(&["scan", dir, "--from", "b", "--to", "a"]), "");

    assert_eq!(
        ok(&["--json", "scan", dir, "--prefix", "acct:1"]),
        "[{\"key\":\"acct:1\",\"value\":\"100\"},{\"key\":\"acct:10\",\"value\":\"7\"}]\n"
    );
    assert_eq!(
        ok(&["scan", dir, "--json", "--from", "b", "--to", "c"]),
        "[{\"key\":\"b\",\"value\":\"say \\\"hi\\\" \\\\ bye\"},\
         {\"key_hex\":\"62696e00ff\",\"value_hex\":\"fe01\"}]\n"
    );
    assert_eq!(ok(&["scan", dir, "--json", "--prefix", "x"]), "[]\n");

    // Committed, they are listed; the local transaction's delete too.
    tm.rc("txn_commit 1", MMXA_OK);
    tm.rc(&format!("commit 1 pp {TMNOFLAGS}"), XA_OK);
    assert_eq!(
        ok(&[
            "scan",
            dir,
            "--prefix",
            "acct:",
            "--reverse",
            "--limit",
            "2"
        ]),
        line("\"acct:4\"", "\"local\"") + &line("\"acct:3\"", "\"prepared\"")
    );
    assert_eq!(ok(&["scan", dir, "--limit", "1"]), lines(1..2));
    tm.rc("close 1", XA_OK);

    // Errors: a missing store as for get; usage errors before the store is looked at.
    let missing = tmp.path().join("missing");
    let m = dir_str(&missing);
    let want = format!("no mmxa store in {m} (create one with mmxa init or xa_open)");
    assert!(fails(&["get", m, "k"], 3).contains(&want));
    assert!(fails(&["scan", m], 3).contains(&want));
    for (args, says) in [
        (
            &["scan", m, "--limit", "x"][..],
            "--limit x: expected a number",
        ),
        (
            &["scan", dir, "--limit", "-1"],
            "--limit -1: expected a number",
        ),
        (&["scan", dir, "--limit"], "--limit needs a number"),
        (&["scan", dir, "--from"], "--from needs a KEY"),
        (
            &["scan", m, "--prefix", "a", "--to", "b"],
            "--prefix takes no --from or --to",
        ),
        (
            &["scan", dir, "--prefix", "a", "--from", "b"],
            "--prefix takes no --from or --to",
        ),
        (
            &["scan", dir, "--from", "a", "--from", "b"],
            "--from is given twice",
        ),
        (
            &["scan", dir, "k"],
            "scan: expected no operands after STORE",
        ),
        (&["scan", dir, "--backwards"], "unknown option --backwards"),
        (
            &["get", dir, "a", "--reverse"],
            "get: --reverse is an option of scan only",
        ),
        (
            &["status", dir, "--limit", "3"],
            "status: --limit is an option of scan only",
        ),
        (&["scan"], "scan: STORE is missing"),
    ] {
        let out = fails(args, 2);
        assert!(out.contains(says), "{args:?}: {out}");
    }
    // An argument that is not UTF-8: a usage error, not a panic.
    use std::os::unix::ffi::OsStrExt;
    let o = Command::new(env!("CARGO_BIN_EXE_mmxa"))
        .args(["scan", dir, "--from"])
        .arg(std::ffi::OsStr::from_bytes(b"\xffk"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("argument \"\u{fffd}k\" is not UTF-8"),
        "{}",
        text(&o)
    );
    let big = "k".repeat(MMXA_MAX_KEY + 1);
    let out = fails(&["scan", dir, "--to", &big], 2);
    assert!(out.contains("--to: a key of 1025 bytes"), "{out}");
}
