//! The `xa_open` info string.
//!
//! Owns: parsing `dir=PATH` plus optional `key=value` settings separated by `;` or `,` into a
//! [`Config`]. Invariant: a returned `Config` is complete and every value is in range; every
//! problem is an `Err` with a message naming the offending part. Keys:
//!
//! | key | values | default |
//! |---|---|---|
//! | `dir` | the store's directory (required; created if missing) | — |
//! | `sync` | `msync`, `fdatasync`, `none` | `msync` |
//! | `lock_timeout_ms` | 0..=3600000 (0: fail at once on a conflict) | 10000 |
//! | `segment_mb` | log segment size in MiB, 4..=4096 (a new store's first segments are smaller: 4, 8, 16, ... MiB) | 64 |
//! | `trace` | a file to append a line to for every XA and data call (see `ffi::trace`) | none |
//! | `orphan_rollback_s` | roll back heuristically a branch prepared longer than this, 1..=31536000 | off |
//! | `isolation` | `serializable` (reads lock), `read_committed` (reads take no lock) | `serializable` |
//! | `shared_group` | `0`, `1`: the store's files are group-readable and -writable | `0` |

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// How records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `msync(MS_SYNC)` of the written range of the mapping.
    Msync,
    /// `fdatasync` of the segment file.
    Fdatasync,
    /// No sync: fast, and not durable across a machine crash (a process crash loses nothing).
    None,
}

/// How a branch's reads are isolated from other branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Reads take shared key locks held until the branch ends (strict two-phase locking):
    /// every history of committed branches is serializable.
    Serializable,
    /// Reads take no lock and see the latest committed value: lost updates, read skew and
    /// write skew are possible; writes still lock.
    ReadCommitted,
}

/// The settings of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The store's directory.
    pub dir: PathBuf,
    /// Durability mode.
    pub sync: SyncMode,
    /// How long a write waits for a key locked by another branch.
    pub lock_timeout: Duration,
    /// Size of each log segment file, in bytes.
    pub segment_size: u64,
    /// Where to trace every XA and data call of the process, if anywhere.
    pub trace: Option<PathBuf>,
    /// The orphan policy: a branch prepared longer than this is rolled back heuristically.
    pub orphan_rollback: Option<Duration>,
    /// How reads inside a branch are isolated.
    pub isolation: Isolation,
    /// The store is shared with the group: directory 0770, files 0660 (else 0700 and 0600).
    pub shared_group: bool,
}

impl Config {
    /// A config with the defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            sync: SyncMode::Msync,
            lock_timeout: Duration::from_millis(10_000),
            segment_size: 64 << 20,
            trace: None,
            orphan_rollback: None,
            isolation: Isolation::Serializable,
            shared_group: false,
        }
    }

    /// The mode of the store's files.
    pub fn file_mode(&self) -> u32 {
        if self.shared_group {
            0o660
        } else {
            0o600
        }
    }

    /// The mode of the store's directory.
    pub fn dir_mode(&self) -> u32 {
        if self.shared_group {
            0o770
        } else {
            0o700
        }
    }
}

fn path(key: &str, value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("{key}= is empty"));
    }
    Ok(PathBuf::from(OsStr::from_bytes(value.as_bytes())))
}

fn number(key: &str, value: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("{key}={value}: not a whole number"))?;
    if !(lo..=hi).contains(&n) {
        return Err(format!("{key}={value}: must be between {lo} and {hi}"));
    }
    Ok(n)
}

/// Parses an info string (without its NUL).
pub fn parse(info: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(info).map_err(|e| {
        format!(
            "open string is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let mut dir: Option<PathBuf> = None;
    let mut cfg = Config::new("");
    let mut seen: Vec<&str> = Vec::new();
    for item in text.split([';', ',']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("'{item}': expected key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        if seen.contains(&key) {
            return Err(format!("key '{key}' given twice"));
        }
        seen.push(key);
        match key {
            "dir" => dir = Some(path(key, value)?),
            "trace" => cfg.trace = Some(path(key, value)?),
            "sync" => {
                cfg.sync = match value {
                    "msync" => SyncMode::Msync,
                    "fdatasync" => SyncMode::Fdatasync,
                    "none" => SyncMode::None,
                    _ => return Err(format!("sync={value}: expected msync, fdatasync or none")),
                }
            }
            "lock_timeout_ms" => {
                cfg.lock_timeout = Duration::from_millis(number(key, value, 0, 3_600_000)?)
            }
            "segment_mb" => cfg.segment_size = number(key, value, 4, 4096)? << 20,
            "orphan_rollback_s" => {
                cfg.orphan_rollback = Some(Duration::from_secs(number(key, value, 1, 31_536_000)?))
            }
            "shared_group" => {
                cfg.shared_group = match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err(format!("shared_group={value}: expected 0 or 1")),
                }
            }
            "isolation" => {
                cfg.isolation = match value {
                    "serializable" => Isolation::Serializable,
                    "read_committed" => Isolation::ReadCommitted,
                    _ => {
                        return Err(format!(
                            "isolation={value}: expected serializable or read_committed"
                        ))
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown key '{key}' (known: dir, sync, lock_timeout_ms, segment_mb, trace, \
                     orphan_rollback_s, isolation, shared_group)"
                ))
            }
        }
    }
    cfg.dir = dir.ok_or("missing dir=PATH")?;
    Ok(cfg)
}

/// Creates the store's directory if it is missing (with its mode set exactly, whatever the
/// umask), and returns its canonical path. A path naming something that is not a directory, or
/// passing through one, is an error that says so. A relative path is taken relative to the
/// current directory, once: the store keeps the absolute path.
pub fn prepare_dir(cfg: &Config) -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = &cfg.dir;
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(format!(
                "dir={}: not a directory (a store is a directory; name a new or existing \
                 directory)",
                dir.display()
            ));
        }
        Ok(_) => {}
        Err(_) => {
            let created = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(cfg.dir_mode())
                .create(dir);
            if let Err(e) = created {
                // A file where a directory of the path should be: say which.
                if let Some(file) = dir
                    .ancestors()
                    .skip(1)
                    .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))
                {
                    return Err(format!(
                        "cannot create dir={}: {} is not a directory",
                        dir.display(),
                        file.display()
                    ));
                }
                return Err(format!("cannot create dir={}: {e}", dir.display()));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(cfg.dir_mode()))
                .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
        }
    }
    std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))
}

/// Refuses a store directory that other users can reach: any access for others, or for the
/// group unless `shared_group=1`.
pub fn check_access(cfg: &Config) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
    let mode = m.permissions().mode() & 0o777;
    let allowed = cfg.dir_mode();
    if mode & !allowed != 0 {
        return Err(format!(
            "the store directory {} has mode {mode:03o}: other users could read or change the \
             store; make it {allowed:03o} (chmod {allowed:03o}){}",
            cfg.dir.display(),
            if cfg.shared_group {
                ""
            } else {
                ", or add shared_group=1 to the open string to share it with the group"
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_defaults() {
        let c = parse(b"dir=/tmp/x").unwrap();
        assert_eq!(c, Config::new("/tmp/x"));
    }

    #[test]
    fn all_keys_both_separators() {
        let c = parse(b" dir = /a b/c ; sync=none,lock_timeout_ms=0;segment_mb=4;").unwrap();
        assert_eq!(c.dir, PathBuf::from("/a b/c"));
        assert_eq!(c.sync, SyncMode::None);
        assert_eq!(c.lock_timeout, Duration::ZERO);
        assert_eq!(c.segment_size, 4 << 20);
        assert_eq!(c.trace, None);
        assert_eq!(c.orphan_rollback, None);
        assert_eq!(c.isolation, Isolation::Serializable);
        let c = parse(b"dir=/a;orphan_rollback_s=3600").unwrap();
        assert_eq!(c.orphan_rollback, Some(Duration::from_secs(3600)));
        let c = parse(b"dir=/a;isolation=read_committed").unwrap();
        assert_eq!(c.isolation, Isolation::ReadCommitted);
    }

    #[test]
    fn trace_is_a_path() {
        let c = parse(b"dir=/a;trace=/var/log/mmxa trace.log").unwrap();
        assert_eq!(c.trace, Some(PathBuf::from("/var/log/mmxa trace.log")));
        assert_eq!(c.dir, PathBuf::from("/a"));
        // A relative path is kept as given (relative to the process's working directory).
        let c = parse(b"trace = t.log , dir=/a").unwrap();
        assert_eq!(c.trace, Some(PathBuf::from("t.log")));
        // The trace setting is part of the settings a second xa_open must repeat.
        assert_ne!(c, parse(b"dir=/a").unwrap());
    }

    #[test]
    fn a_file_is_not_a_store_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = prepare_dir(&Config::new(&file)).unwrap_err();
        assert!(err.contains("f: not a directory"), "{err}");
        let err = prepare_dir(&Config::new(file.join("sub/store"))).unwrap_err();
        assert!(
            err.contains(&format!("{} is not a directory", file.display())),
            "{err}"
        );
        assert!(!err.contains("File exists"), "{err}");
        let made = prepare_dir(&Config::new(tmp.path().join("a/b"))).unwrap();
        assert!(made.is_absolute() && made.ends_with("a/b"));
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "missing dir"),
            (b"sync=none", "missing dir"),
            (b"dir=", "empty"),
            (b"dir=/a;trace=", "trace= is empty"),
            (b"dir=/a;trace=/t;trace=/u", "twice"),
            (b"dir=/a;dir=/b", "twice"),
            (b"dir=/a;bogus=1", "unknown key 'bogus'"),
            (b"dir=/a;sync", "expected key=value"),
            (b"dir=/a;sync=always", "sync=always"),
            (b"dir=/a;lock_timeout_ms=-1", "not a whole number"),
            (b"dir=/a;lock_timeout_ms=99999999", "between"),
            (b"dir=/a;segment_mb=1", "between"),
            (b"dir=/a;orphan_rollback_s=0", "between"),
            (b"dir=/a;isolation=snapshot", "isolation=snapshot"),
            (b"dir=/\xff", "UTF-8"),
            (b"dir=/a\xffb", "invalid byte at offset 6"),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }
}
