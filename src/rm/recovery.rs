//! Rebuilding a store from its log at open.
//!
//! Owns: the replay rules. Records are applied in log order: tag-0 writes and committed
//! branches' writes enter the index; a PREPARE without a later COMMIT or ROLLBACK rebuilds a
//! prepared branch (same XID bytes, its write set, its locks taken before the store accepts
//! work); a HEURISTIC without a later FORGET rebuilds a heuristically completed branch; every
//! other branch is rolled back, and a ROLLBACK record is logged for it so that its records can
//! never be attributed to anything later. A MOVE hands a prepared branch to the tag its writes
//! were re-logged under when its old segment was reclaimed; a repeated HEURISTIC restates an
//! outcome whose first record was reclaimed. A PREPARE or MOVE may outlive the writes before it
//! (they ended a segment that was reclaimed once the branch moved on or completed): only a
//! branch still prepared at the end of the log must have writes.
//!
//! A rebuilt in-doubt branch is dated by its record: the time of the prepare (PREPARE, or the
//! MOVE that carried it over) or of the heuristic decision, so its age, and the orphan policy,
//! go on across restarts. A record of a version-1 log states no time: the branch is then dated
//! by the rebuild and marked unknown.

use super::branch;
use super::keys::{self, Pending, ValueLoc};
use super::layout::*;
use super::locks;
use super::order;
use super::{Rm, MUTEX_WAIT};
use crate::config::{Config, Isolation, SyncMode};
use crate::error::{Error, Outcome};
use crate::log::{Log, LogError, Lsn, Mapped, Media, Record};
use crate::shm::{self, LockFile, Off, Region, Table, Txn};
use crate::xid::Xid;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A branch's latest write per key, as the replay saw it: the record's LSN and the value.
type Writes = BTreeMap<Vec<u8>, (Lsn, Option<ValueLoc>)>;

/// Committed data as the replay builds it.
#[derive(Default)]
struct Index {
    map: HashMap<Vec<u8>, ValueLoc>,
}

impl Index {
    fn set(&mut self, key: &[u8], loc: Option<ValueLoc>) {
        match loc {
            Some(l) => {
                self.map.insert(key.to_vec(), l);
            }
            None => {
                self.map.remove(key);
            }
        }
    }
}

/// The highest branch tag a valid log holds.
const MAX_TAG: u64 = 1 << 62;

/// An in-doubt branch as the log states it: XID, the LSN of the stating record, and the time
/// of its prepare or decision (`None`: the log recorded none).
type Stated = (Xid, Lsn, Option<u64>);

#[derive(Default)]
struct Replay {
    index: Index,
    pending: HashMap<u64, Writes>,
    prepared: HashMap<u64, Stated>,
    heuristic: HashMap<u64, (Stated, Outcome, String)>,
    max_tag: u64,
}

impl Replay {
    fn apply(&mut self, writes: Writes) {
        for (k, (_, v)) in writes {
            self.index.set(&k, v);
        }
    }

    /// Tags are handed out from 1 upwards, so none gets near [`MAX_TAG`]; a larger one is
    /// corruption (and would overflow the next tag).
    fn note_tag(&mut self, tag: u64) -> Result<(), String> {
        if tag > MAX_TAG {
            return Err(format!("branch tag {tag} out of range"));
        }
        self.max_tag = self.max_tag.max(tag);
        Ok(())
    }

    fn visit(&mut self, lsn: Lsn, rec: Record<'_>) -> Result<(), String> {
        let (tag, key, value) = match rec {
            Record::Put { tag, key, value } => (tag, key, Some(value)),
            Record::Delete { tag, key } => (tag, key, None),
            Record::Prepare { tag, xid, at } => {
                // Its writes may be in a reclaimed segment if the branch completed later; a
                // branch still prepared at the end must have writes (checked in `open`).
                self.pending.entry(tag).or_default();
                self.note_tag(tag)?;
                self.prepared.insert(tag, (xid, lsn, at));
                return Ok(());
            }
            Record::Commit { tag } => {
                self.prepared.remove(&tag);
                let writes = self.pending.remove(&tag).unwrap_or_default();
                self.apply(writes);
                return Ok(());
            }
            Record::Rollback { tag } => {
                self.prepared.remove(&tag);
                self.pending.remove(&tag);
                return Ok(());
            }
            Record::Heuristic {
                tag,
                outcome,
                xid,
                reason,
                at,
            } => {
                self.note_tag(tag)?;
                let outcome = Outcome::from_log(outcome)
                    .ok_or_else(|| format!("unknown heuristic outcome {outcome}"))?;
                self.prepared.remove(&tag);
                let writes = self.pending.remove(&tag).unwrap_or_default();
                if outcome == Outcome::Commit {
                    self.apply(writes);
                }
                let reason = String::from_utf8_lossy(reason).into_owned();
                self.heuristic
                    .insert(tag, ((xid, lsn, at), outcome, reason));
                return Ok(());
            }
            Record::Forget { tag } => {
                self.heuristic.remove(&tag);
                return Ok(());
            }
            Record::Move { old, new, xid, at } => {
                // The prepared branch's writes were re-logged under `new` just before, but
                // maybe in an earlier segment, reclaimed since (the branch moved on or
                // completed): as for PREPARE, a branch still prepared at the end must have
                // writes.
                self.prepared.remove(&old);
                self.pending.remove(&old);
                self.note_tag(new)?;
                self.pending.entry(new).or_default();
                self.prepared.insert(new, (xid, lsn, at));
                return Ok(());
            }
        };
        let loc = ValueLoc::of_record(lsn, key, value);
        if tag == 0 {
            self.index.set(key, loc);
        } else {
            self.note_tag(tag)?;
            if self.prepared.contains_key(&tag) {
                return Err(format!("write for branch tag {tag} after its PREPARE"));
            }
            self.pending
                .entry(tag)
                .or_default()
                .insert(key.to_vec(), (lsn, loc));
        }
        Ok(())
    }
}

/// Dates a rebuilt branch as its record does (`at`), or, if the record states no time (a
/// version-1 log), by the rebuild (`built`), marked unknown.
fn since_logged(t: &mut Txn<'_>, b: Off, at: Option<u64>, built: u64) -> Result<(), shm::Error> {
    match at {
        Some(at) => set_since(t, b, at),
        None => {
            t.set_u64(b + B_SINCE, built)?;
            t.set_u8(b + B_SINCE_UNKNOWN, 1)
        }
    }
}

/// The settings every process of a store must share, as the region keeps them: sync mode and
/// isolation, lock timeout (ms), segment size, orphan age (s, 0 for off).
pub(super) type Fingerprint = (u64, u64, u64, u64);

pub(super) fn fingerprint(cfg: &Config) -> Fingerprint {
    let sync = match cfg.sync {
        SyncMode::Msync => 0,
        SyncMode::Fdatasync => 1,
        SyncMode::None => 2,
    };
    let isolation = match cfg.isolation {
        Isolation::Serializable => 0,
        Isolation::ReadCommitted => 0x10,
    };
    (
        sync | isolation,
        cfg.lock_timeout.as_millis() as u64,
        cfg.segment_size,
        cfg.orphan_rollback.map_or(0, |d| d.as_secs()),
    )
}

/// The settings in the region.
pub(super) fn stored_settings(region: &Region) -> Result<Fingerprint, shm::Error> {
    let t = region.lock(MUTEX_WAIT)?;
    let fp = (
        t.get_u64(R_FP_SYNC)?,
        t.get_u64(R_FP_TIMEOUT)?,
        t.get_u64(R_FP_SEGMENT)?,
        t.get_u64(R_FP_ORPHAN)?,
    );
    t.commit()?;
    Ok(fp)
}

/// Takes the store's settings over (an operator's tool joining a store in use).
pub(super) fn adopt_settings(cfg: &mut Config, fp: Fingerprint) {
    cfg.sync = match fp.0 & 0xf {
        1 => SyncMode::Fdatasync,
        2 => SyncMode::None,
        _ => SyncMode::Msync,
    };
    cfg.isolation = if fp.0 & 0x10 != 0 {
        Isolation::ReadCommitted
    } else {
        Isolation::Serializable
    };
    cfg.lock_timeout = Duration::from_millis(fp.1);
    cfg.segment_size = fp.2;
    cfg.orphan_rollback = (fp.3 > 0).then(|| Duration::from_secs(fp.3));
}

/// Rebuilds a store's shared state from its log, in a region nobody else has (a fresh one:
/// no process had the store open), and returns the store open in this process.
pub(super) fn build<M: Media>(
    cfg: Config,
    media: M,
    region: Arc<Region>,
    lockfile: Option<Arc<LockFile>>,
    slot: u32,
    generation: u64,
) -> Result<Rm<M>, String> {
    let mut replay = Replay::default();
    let peer = Rm::<M>::peer(lockfile.as_ref(), slot);
    let log = Log::open_on(
        media,
        cfg.segment_size,
        cfg.sync,
        region.clone(),
        peer,
        &mut |lsn, rec| replay.visit(lsn, rec),
    )
    .map_err(|e| e.to_string())?;
    let built = now_ns();
    let shm_err = |e: shm::Error| format!("building the shared state: {e}");
    let mut t = region.lock_builder(MUTEX_WAIT).map_err(shm_err)?;
    let fp = fingerprint(&cfg);
    let mut max_tag = replay.max_tag;
    let result = (|| -> Result<(), String> {
        let t = &mut t;
        for (root, v) in [
            (R_FP_SYNC, fp.0),
            (R_FP_TIMEOUT, fp.1),
            (R_FP_SEGMENT, fp.2),
            (R_FP_ORPHAN, fp.3),
            (R_BUILT_NS, built),
        ] {
            t.set_u64(root, v).map_err(shm_err)?;
        }
        let n = replay.index.map.len() as u64;
        Table::create(t, R_KEYS, n + n / 2 + 64).map_err(shm_err)?;
        Table::create(t, R_BRANCHES, 64).map_err(shm_err)?;
        order::create(t).map_err(shm_err)?;
        // In key order, so each entry is linked at the end of the key order in constant time.
        let mut sorted: Vec<(&Vec<u8>, &ValueLoc)> = replay.index.map.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut order_end = order::Appender::new(t).map_err(shm_err)?;
        for (key, loc) in sorted {
            let k = keys::insert_last(t, &mut order_end, key).map_err(shm_err)?;
            keys::set_committed(t, k, Some(*loc)).map_err(shm_err)?;
        }
        let mut prepared: Vec<(u64, Stated)> =
            std::mem::take(&mut replay.prepared).into_iter().collect();
        prepared.sort_unstable_by_key(|(tag, _)| *tag);
        for (tag, (xid, lsn, at)) in prepared {
            let writes = replay.pending.remove(&tag).unwrap_or_default();
            if writes.is_empty() {
                return Err(format!(
                    "prepared branch {xid} has no writes in the log (a segment was lost)"
                ));
            }
            if branch::find(t, &xid).map_err(shm_err)?.is_some() {
                return Err(format!("XID {xid} is prepared twice in the log"));
            }
            let b = branch::create(t, &xid).map_err(shm_err)?;
            t.set_u64(b + B_TAG, tag).map_err(shm_err)?;
            t.set_u8(b + B_PHASE, PHASE_PREPARED).map_err(shm_err)?;
            t.set_u64(b + B_RECORD_LSN, lsn).map_err(shm_err)?;
            since_logged(t, b, at, built).map_err(shm_err)?;
            for (key, (rec, loc)) in writes {
                let k = keys::find_or_insert(t, &key).map_err(shm_err)?;
                if !locks::lock_now(t, k, b).map_err(shm_err)? {
                    return Err(format!("two prepared branches hold the same key ({xid})"));
                }
                keys::set_pending(
                    t,
                    k,
                    Some(Pending {
                        owner: b,
                        value: loc,
                        record: rec,
                    }),
                )
                .map_err(shm_err)?;
                let w = t.get_u64(b + B_WRITES).map_err(shm_err)?;
                t.set_u64(b + B_WRITES, w + 1).map_err(shm_err)?;
            }
        }
        for (tag, ((xid, lsn, at), outcome, reason)) in std::mem::take(&mut replay.heuristic) {
            if branch::find(t, &xid).map_err(shm_err)?.is_some() {
                return Err(format!("XID {xid} is in doubt twice in the log"));
            }
            let b = branch::create(t, &xid).map_err(shm_err)?;
            t.set_u64(b + B_TAG, tag).map_err(shm_err)?;
            t.set_u8(b + B_PHASE, PHASE_HEURISTIC).map_err(shm_err)?;
            t.set_u8(b + B_OUTCOME, outcome_to_u8(outcome))
                .map_err(shm_err)?;
            t.set_u64(b + B_RECORD_LSN, lsn).map_err(shm_err)?;
            since_logged(t, b, at, built).map_err(shm_err)?;
            set_text(t, b, &reason).map_err(shm_err)?;
            max_tag = max_tag.max(tag);
        }
        // Tags handed out from here on follow every tag in the log (branch::create took some).
        let next = t.get_u64(R_NEXT_TAG).map_err(shm_err)?;
        t.set_u64(R_NEXT_TAG, next.max(max_tag + 1))
            .map_err(shm_err)?;
        Ok(())
    })();
    match result {
        Ok(()) => t.commit().map_err(shm_err)?,
        Err(e) => return Err(e),
    }
    // Branches that never prepared are rolled back, durably, before new work can reuse XIDs.
    let mut last = None;
    let mut abandoned: Vec<u64> = replay.pending.keys().copied().collect();
    abandoned.sort_unstable();
    for tag in abandoned {
        let a = log
            .append_alone(&Record::Rollback { tag })
            .map_err(|e| format!("logging the rollback of an unprepared branch: {e}"))?;
        last = Some(a.end);
    }
    if let Some(end) = last {
        log.sync_to(end).map_err(|e| e.to_string())?;
    }
    let changes = Arc::new(AtomicU64::new(0));
    Ok(Rm {
        cfg,
        log,
        region,
        lockfile,
        slot,
        generation,
        tocs: Mutex::new(super::Tocs::counting(changes.clone())),
        toc_changes: changes,
        panicked: AtomicBool::new(false),
        interrupted: AtomicBool::new(false),
        last_reap: Mutex::new(Instant::now()),
        compacting: AtomicBool::new(false),
        compact_step_lock: Mutex::new(()),
        crashed: false,
        instance: super::new_instance(),
        write_epochs: std::array::from_fn(|_| AtomicU64::new(0)),
        deferred: Mutex::new(Vec::new()),
        finishing: Mutex::new(()),
        has_deferred: AtomicBool::new(false),
        mutex_wait: MUTEX_WAIT,
        #[cfg(test)]
        before_finish: Mutex::new(None),
    })
}

/// A log error of [`rewrite_log`], saying what it was doing; running out of space stays
/// [`Error::NoSpace`].
fn rewrite_err(what: String, e: LogError) -> Error {
    match e {
        LogError::NoSpace(_) => Error::NoSpace(format!("{what}: {e}")),
        e => Error::Io(format!("{what}: {e}")),
    }
}

/// What [`rewrite_log`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Committed keys.
    pub keys: u64,
    /// Prepared branches.
    pub prepared: u64,
    /// Heuristically completed branches.
    pub heuristic: u64,
}

/// The logical copy of a log: replays the log in `src` (through a view that changes no file,
/// as recovery would) and writes into `dst`, a directory without a log, a new log whose
/// segments are `segment_size` bytes (files of mode `file_mode`) and which holds the same
/// state: every committed value (one-operation PUTs), every prepared branch (its writes, then
/// PREPARE with the same XID), every heuristically completed branch (HEURISTIC with the same
/// XID, outcome and reason). Branches that never prepared are left out, as recovery rolls them
/// back. Durable before it returns.
pub fn rewrite_log(
    src: &Path,
    dst: &Path,
    segment_size: u64,
    file_mode: u32,
) -> Result<Rewritten, Error> {
    let mut replay = Replay::default();
    let old = Log::open_single(
        Mapped::private(src),
        segment_size,
        SyncMode::None,
        &mut |lsn, rec| replay.visit(lsn, rec),
    )
    .map_err(|e| rewrite_err(format!("reading {}", src.display()), e))?;
    let new = Log::open_single(
        Mapped::with_mode(dst, file_mode),
        segment_size,
        SyncMode::Fdatasync,
        &mut |_, _| Err(format!("{} holds a log already", dst.display())),
    )
    .map_err(|e| rewrite_err(format!("creating {}", dst.display()), e))?;
    let write = |rec: &Record<'_>| {
        new.append_alone(rec)
            .map(|_| ())
            .map_err(|e| rewrite_err(format!("writing {}", dst.display()), e))
    };
    let mut buf = Vec::new();
    let mut read = |loc: &ValueLoc| {
        buf.clear();
        old.read_into(loc.lsn, loc.len as usize, &mut buf)
            .map(|()| buf.clone())
            .map_err(|e| rewrite_err(format!("reading {}", src.display()), e))
    };
    let mut done = Rewritten::default();
    // Sorted, so that a copy of a copy is the same bytes but for the segments' salts.
    let mut committed: Vec<_> = replay.index.map.iter().collect();
    committed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, loc) in committed {
        let value = read(loc)?;
        write(&Record::Put {
            tag: 0,
            key,
            value: &value,
        })?;
        done.keys += 1;
    }
    let mut tag = 0u64;
    let mut prepared: Vec<_> = replay.prepared.iter().collect();
    prepared.sort_unstable_by_key(|(t, _)| **t);
    for (old_tag, (xid, _, at)) in prepared {
        let writes = replay.pending.get(old_tag).filter(|w| !w.is_empty());
        let Some(writes) = writes else {
            return Err(Error::Io(format!(
                "prepared branch {xid} has no writes in the log (a segment was lost)"
            )));
        };
        tag += 1;
        for (key, (_, loc)) in writes {
            match loc {
                Some(loc) => {
                    let value = read(loc)?;
                    write(&Record::Put {
                        tag,
                        key,
                        value: &value,
                    })?;
                }
                None => write(&Record::Delete { tag, key })?,
            }
        }
        write(&Record::Prepare {
            tag,
            xid: *xid,
            at: *at,
        })?;
        done.prepared += 1;
    }
    let mut heuristic: Vec<_> = replay.heuristic.iter().collect();
    heuristic.sort_unstable_by_key(|(t, _)| **t);
    for (_, ((xid, _, at), outcome, reason)) in heuristic {
        tag += 1;
        write(&Record::Heuristic {
            tag,
            outcome: outcome.to_log(),
            xid: *xid,
            reason: reason.as_bytes(),
            at: *at,
        })?;
        done.heuristic += 1;
    }
    new.sync_to(new.written())
        .map_err(|e| rewrite_err(format!("syncing {}", dst.display()), e))?;
    Ok(done)
}
