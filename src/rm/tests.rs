//! Smoke tests of the core; the state tables are covered in `tests/state_tables.rs`.

use super::flags::{EndMode, Scan, StartMode};
use super::*;
use crate::config::{Config, SyncMode};

fn xid(n: u8) -> Xid {
    Xid::from_parts(1, &[b'g', n], b"b").unwrap()
}

fn open(dir: &std::path::Path) -> Rm {
    let mut cfg = Config::new(dir);
    cfg.sync = SyncMode::Msync;
    cfg.segment_size = 4 << 20;
    Rm::open(cfg).unwrap()
}

#[test]
fn two_phase_commit_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let rm = open(dir.path());
    let (a, b) = (xid(1), xid(2));
    assert_eq!(rm.start(1, &a, StartMode::New), Ok(XA_OK));
    assert_eq!(rm.put(1, b"k1", Some(b"v1")), Ok(false));
    assert_eq!(rm.get(1, b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        rm.get(2, b"k1").unwrap(),
        None,
        "uncommitted write is private"
    );
    assert_eq!(rm.end(1, &a, EndMode::Success), Ok(XA_OK));
    assert_eq!(rm.prepare(2, &a), Ok(XA_OK));
    assert_eq!(rm.start(1, &b, StartMode::New), Ok(XA_OK));
    rm.put(1, b"k2", Some(b"v2")).unwrap();
    rm.end(1, &b, EndMode::Success).unwrap();
    assert_eq!(rm.prepare(1, &b), Ok(XA_OK));
    assert_eq!(rm.commit(3, &b, false), Ok(XA_OK));
    assert_eq!(rm.get(2, b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    drop(rm);

    let rm = open(dir.path());
    let scan = Scan {
        start: true,
        end: true,
    };
    assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![a]);
    assert_eq!(rm.get(1, b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(rm.get(1, b"k1").unwrap(), None);
    assert_eq!(
        rm.locks.holder(b"k1"),
        Some(rm.state.lock().unwrap().branches[&a].tag)
    );
    assert_eq!(rm.commit(1, &a, false), Ok(XA_OK));
    assert_eq!(rm.get(1, b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.recover(1, scan, 10).unwrap(), vec![]);
    assert_eq!(rm.len(), 2);
}

#[test]
fn unprepared_work_is_rolled_back_at_open_and_xid_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let rm = open(dir.path());
    let a = xid(1);
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k", Some(b"lost")).unwrap();
    rm.put(7, b"local", Some(b"kept")).unwrap();
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"k").unwrap(), None);
    assert_eq!(rm.get(1, b"local").unwrap().as_deref(), Some(&b"kept"[..]));
    rm.start(1, &a, StartMode::New).unwrap();
    rm.put(1, b"k2", Some(b"new")).unwrap();
    rm.end(1, &a, EndMode::Success).unwrap();
    assert_eq!(rm.commit(1, &a, true), Ok(XA_OK));
    drop(rm);
    let rm = open(dir.path());
    assert_eq!(rm.get(1, b"k").unwrap(), None);
    assert_eq!(rm.get(1, b"k2").unwrap().as_deref(), Some(&b"new"[..]));
}
