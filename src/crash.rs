//! Crash points: named places where a test can make the process die, so that the states a
//! crash leaves there are reached on purpose rather than by a lucky timer.
//!
//! Owns: the list of points ([`POINTS`]) and the one switch that arms them. `MMXA_CRASH_AT` set
//! to `name:N` (or `name`, N = 1) makes the process die the N-th time any of its threads passes
//! [`crash_point`]`(name)`. The variable is read once, at the first point passed; a malformed
//! value or an unknown name arms nothing (and says so on stderr).
//!
//! Cost when the variable is unset: one relaxed load of an atomic byte and a well-predicted
//! branch per pass (the first pass also reads the environment). The busiest point is
//! `log.appended_in_section`, passed once per append.
//!
//! The process dies by [`std::process::abort`] (SIGABRT), not by `kill(getpid(), SIGKILL)`:
//! for the store both are the same crash — no unwinding, destructors, `atexit` handlers or
//! flushing, what was written to the mapped segments stays in the page cache, the kernel drops
//! the store lock — and abort needs no `unsafe` in the core, whose only unsafe code stays the
//! mapping (`log::segment`) and the C boundary (`ffi`). A test that wants no core file sets
//! `RLIMIT_CORE` to 0 in the child.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a point: `name:N`.
pub const ENV: &str = "MMXA_CRASH_AT";

/// Every crash point, in the order a compaction step passes them (a roll can come at any
/// append, a group commit at any sync).
pub const POINTS: &[&str] = &[
    // A committed value was re-logged (tag 0).
    "compact.copied_committed",
    // A value saved for a rollback to a savepoint was re-logged (under a tag rolled back at once).
    "compact.copied_saved",
    // A working branch's write was re-logged under its own tag.
    "compact.copied_working",
    // A prepared branch's write was re-logged under its new tag.
    "compact.copied_prepared",
    // All copies of a prepared branch are appended, its MOVE is not.
    "compact.before_move",
    // The MOVE is appended.
    "compact.moved",
    // A heuristic outcome was stated again.
    "compact.restated_heuristic",
    // The CHECKPOINT naming the next segment is appended, not yet synced.
    "retire.checkpoint_appended",
    // The CHECKPOINT is durable; the old segment file still exists.
    "retire.checkpoint_synced",
    // The old segment file is deleted, the directory not yet synced.
    "retire.deleted",
    // The directory is synced.
    "retire.dir_synced",
    // An append wrote its record and advanced the shared tail, in a section not yet committed.
    "log.appended_in_section",
    // A roll created (or found) the next segment; the full one has no SEGMENT_END yet.
    "log.roll_created",
    // A segment ended with SEGMENT_END; it is not yet sealed, and the record that did not fit
    // is not yet written.
    "log.rolled",
    // The ended segment is sealed; the next one is not yet published as the tail.
    "log.roll_sealed",
    // The next segment is published as the tail (the roller's claim released).
    "log.rolled_published",
    // A group-commit leader is recorded and about to flush.
    "log.leader_flushing",
    // The leader has flushed; the new durable LSN is not yet published.
    "log.leader_flushed",
    // A lock request was queued (or granted), in a section not yet committed.
    "rm.lock_in_section",
    // A branch's write was appended and made its key's pending write, section not committed.
    "rm.write_in_section",
    // A completion's record (PREPARE, COMMIT, ROLLBACK, HEURISTIC) was appended and the branch
    // marked busy, in a section not yet committed.
    "rm.completion_logged",
    // A completion's record is appended and the branch marked busy (committed), not yet synced.
    "rm.completion_pending",
    // A commit's writes are being applied to committed data, in a section not yet committed.
    "rm.apply_in_section",
    // A dead peer's leftovers are being ended, in a section not yet committed.
    "rm.reap_in_section",
    // A completion (or rollback) too big for one section has committed a section of its
    // finishing and not begun the next.
    "rm.finish_step",
];

const UNREAD: u8 = 0;
const OFF: u8 = 1;
const ARMED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
static TARGET: OnceLock<Option<Target>> = OnceLock::new();

struct Target {
    name: String,
    n: u64,
    passed: AtomicU64,
}

/// Dies here if `MMXA_CRASH_AT` names this point and this is its N-th pass; `name` is one of
/// [`POINTS`].
#[inline]
pub fn crash_point(name: &'static str) {
    if STATE.load(Ordering::Relaxed) != OFF {
        passed(name);
    }
}

#[cold]
#[inline(never)]
fn passed(name: &str) {
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    let target = TARGET.get_or_init(|| {
        let target = std::env::var(ENV).ok().and_then(|v| match parse(&v) {
            Ok((name, n)) => Some(Target {
                name,
                n,
                passed: AtomicU64::new(0),
            }),
            Err(why) => {
                eprintln!("mmxa: {ENV}={v:?} ignored: {why}");
                None
            }
        });
        STATE.store(
            if target.is_some() { ARMED } else { OFF },
            Ordering::Relaxed,
        );
        target
    });
    if let Some(t) = target {
        if t.name == name && t.passed.fetch_add(1, Ordering::SeqCst) + 1 == t.n {
            std::process::abort();
        }
    }
}

/// Parses `name:N` or `name` into a listed point and N ≥ 1.
fn parse(v: &str) -> Result<(String, u64), String> {
    let (name, n) = match v.rsplit_once(':') {
        Some((name, n)) => (name, n.parse().map_err(|_| format!("bad count {n:?}"))?),
        None => (v, 1),
    };
    if n == 0 {
        return Err("the count starts at 1".into());
    }
    if !POINTS.contains(&name) {
        return Err(format!("no crash point {name:?}"));
    }
    Ok((name.to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_counts() {
        assert_eq!(parse("log.rolled"), Ok(("log.rolled".into(), 1)));
        assert_eq!(parse("compact.moved:12"), Ok(("compact.moved".into(), 12)));
        assert!(parse("compact.moved:0").is_err());
        assert!(parse("compact.moved:x").is_err());
        assert!(parse("nowhere:3").is_err());
    }

    #[test]
    fn unset_costs_nothing_and_never_fires() {
        // The test binary runs without MMXA_CRASH_AT (a crash here would be the answer).
        if std::env::var_os(ENV).is_none() {
            for &p in POINTS {
                crash_point(p);
            }
            assert_eq!(STATE.load(Ordering::Relaxed), OFF);
        }
    }
}
