//! The audit trail of heuristic decisions: `mmxa.audit` in the store's directory.
//!
//! Owns: one line per heuristic decision (an operator's, or the orphan policy's), appended and
//! synced after the decision itself is durable in the log. Invariant: lines are only appended;
//! the file outlives `xa_forget`, which ends the branch's listing but not its history. The log
//! stays the authority: a decision whose line could not be written is still a decision.

use crate::xid::Xid;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const FILE: &str = "mmxa.audit";

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Now, as [`utc`].
pub fn now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// Appends and syncs one decision. The file, if this call creates it, gets the permission bits
/// `mode` exactly, whatever the umask (the store's file mode).
pub fn record(
    dir: &Path,
    mode: u32,
    xid: &Xid,
    decision: &str,
    reason: &str,
) -> std::io::Result<()> {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = format!(
        "{} pid={} xid={xid} decision={decision} reason={reason}\n",
        now(),
        std::process::id()
    );
    let path = dir.join(FILE);
    let mut opts = OpenOptions::new();
    opts.append(true);
    // Set the mode only on a file we create: another user's file is not ours to chmod.
    let mut f = match opts.clone().create_new(true).mode(mode).open(&path) {
        Ok(f) => {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => opts.open(&path)?,
        Err(e) => return Err(e),
    };
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// The last `n` lines (none if the file does not exist).
pub fn tail(dir: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let f = match std::fs::File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut lines = std::collections::VecDeque::with_capacity(n + 1);
    for line in BufReader::new(f).lines() {
        lines.push_back(line?);
        if lines.len() > n {
            lines.pop_front();
        }
    }
    Ok(lines.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn record_and_tail() {
        let dir = tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .unwrap();
        assert!(tail(dir.path(), 5).unwrap().is_empty());
        let x = Xid::from_parts(1, b"g", b"b").unwrap();
        for i in 0..4 {
            record(
                dir.path(),
                0o600,
                &x,
                "heuristic-commit",
                &format!("why\n{i}"),
            )
            .unwrap();
        }
        let t = tail(dir.path(), 2).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[1].ends_with("xid=1.67.62 decision=heuristic-commit reason=why 3"));
    }
}
