//! How long `Rm::open` takes on a big, long-lived store, and what it costs in disk and memory.
//!
//! Builds a store with KEYS live keys (16-byte keys, 100-byte values) and UPDATES further
//! updates of random keys (local writes, or one-phase commits with `MMXA_OPEN_MODE=onephase`),
//! with `sync=none` so that building is fast and the default 64 MiB segments (reclaiming runs
//! as it would in production). Then it measures, each in a fresh process so nothing is
//! cached in memory by the builder: the time of `Rm::open` (best of 3), disk use against live
//! bytes, and the RSS right after the open.
//!
//! ```text
//! cargo run --release --example open_time                 # 1,000,000 keys, 10,000,000 updates
//! cargo run --release --example open_time -- 100000 1000000
//! ```
//!
//! Environment: `MMXA_OPEN_KEYS`, `MMXA_OPEN_UPDATES` (instead of the arguments),
//! `MMXA_OPEN_SEGMENT_MB` (default 64), `MMXA_OPEN_MODE` (`local` or `onephase`),
//! `MMXA_OPEN_DIR` (build there and keep the store; default: a temporary directory that is
//! removed), `MMXA_OPEN_RUNS` (default 3), `MMXA_OPEN_COLD=1` (drop the page cache before
//! each open, when permitted: root only).

use mmxa::config::{Config, SyncMode};
use mmxa::log::put_value_offset;
use mmxa::rm::flags::{EndMode, StartMode};
use mmxa::rm::Rm;
use mmxa::xid::Xid;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;

fn env_or<T: std::str::FromStr>(name: &str, arg: Option<&String>, default: T) -> T {
    arg.cloned()
        .or_else(|| std::env::var(name).ok())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {s}"))
        })
        .unwrap_or(default)
}

fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(format!("key-{i:012}").as_bytes());
    k
}

/// Value of key `i` at version `ver`: starts with the key number, so a spot check can tell it
/// belongs to its key.
fn value(i: u64, ver: u64) -> [u8; VALUE_LEN] {
    let mut v = [b'.'; VALUE_LEN];
    let head = format!("{i:016x}:{ver:016x}:");
    v[..head.len()].copy_from_slice(head.as_bytes());
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn config(dir: &Path, segment_mb: u64) -> Config {
    let mut cfg = Config::new(dir);
    cfg.sync = SyncMode::None;
    cfg.segment_size = segment_mb << 20;
    cfg
}

/// `VmRSS`, `RssAnon`, `RssFile` and `VmHWM` of this process, in KiB.
fn memory() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    )
}

fn disk(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .expect("read store directory")
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".seg") {
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            n += 1;
        }
    }
    (bytes, n)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The child: open the store once, report, spot-check, exit.
fn measure(dir: &Path, segment_mb: u64, keys: u64) {
    let t = Instant::now();
    let rm = Rm::open(config(dir, segment_mb)).unwrap_or_else(|e| panic!("open: {e}"));
    let open = t.elapsed();
    let (rss, anon, file, hwm) = memory();
    assert_eq!(rm.len() as u64, keys, "every key is there");
    let mut rng = Rng(0x5eed);
    for _ in 0..1000 {
        let i = rng.next() % keys;
        let v = rm.get(1, &key(i)).expect("read").expect("present");
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(&v[..16], format!("{i:016x}").as_bytes(), "value of key {i}");
    }
    // Point reads of committed keys outside any branch, in random order.
    const GETS: u64 = 300_000;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..GETS {
        let i = rng.next() % keys;
        bytes += rm.get(1, &key(i)).expect("read").map_or(0, |v| v.len());
    }
    let get_ns = t.elapsed().as_nanos() as u64 / GETS;
    assert_eq!(bytes, GETS as usize * VALUE_LEN);
    println!(
        "measure open_us={} get_ns={get_ns} rss_kib={rss} anon_kib={anon} file_kib={file} \
         hwm_kib={hwm}",
        open.as_micros()
    );
}

fn build(dir: &Path, segment_mb: u64, keys: u64, updates: u64, one_phase: bool) {
    let rm = Rm::open(config(dir, segment_mb)).expect("open a new store");
    let mut rng = Rng(0x0bad_cafe);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n_xid = 0u64;
    let mut write = |i: u64, ver: u64, slowest: &mut Duration| {
        let t = Instant::now();
        if one_phase {
            n_xid += 1;
            let x = Xid::from_parts(0x4f54, &n_xid.to_be_bytes(), b"o").unwrap();
            assert_eq!(rm.start(1, &x, StartMode::New), Ok(()));
            rm.put(1, &key(i), Some(&value(i, ver))).expect("put");
            assert_eq!(rm.end(1, &x, EndMode::Success), Ok(()));
            assert_eq!(rm.commit(1, &x, true), Ok(()));
        } else {
            rm.put(1, &key(i), Some(&value(i, ver))).expect("put");
        }
        *slowest = (*slowest).max(t.elapsed());
    };
    let total = keys + updates;
    let report_every = (total / 20).max(1);
    let mut slowest_populating = Duration::ZERO;
    for n in 0..total {
        if n == keys {
            slowest_populating = slowest;
            slowest = Duration::ZERO;
        }
        let i = if n < keys { n } else { rng.next() % keys };
        write(i, n, &mut slowest);
        if (n + 1) % report_every == 0 || n + 1 == total {
            let (bytes, segs) = disk(dir);
            eprintln!(
                "  {:>11} writes in {:6.1}s: {segs} segments, {:.0} MiB on disk, slowest write \
                 so far {:.1} ms",
                n + 1,
                started.elapsed().as_secs_f64(),
                mib(bytes),
                slowest.max(slowest_populating).as_secs_f64() * 1e3
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "built in {secs:.1}s ({:.0} writes/s); slowest single write while populating {:.1} ms, \
         while updating {:.1} ms (a write that triggers a reclaim step copies the oldest \
         segment's live data before it returns)",
        total as f64 / secs,
        slowest_populating.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    let (rss, anon, file, hwm) = memory();
    eprintln!(
        "builder memory: RSS {:.0} MiB (anon {:.0}, file {:.0}), peak {:.0} MiB",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

fn drop_caches() -> bool {
    // SAFETY: plain syscall, no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let segment_mb: u64 = env_or("MMXA_OPEN_SEGMENT_MB", None, 64);
    if args.first().map(String::as_str) == Some("--measure") {
        let dir = PathBuf::from(&args[1]);
        let keys: u64 = args[2].parse().expect("keys");
        measure(&dir, segment_mb, keys);
        return;
    }
    let keys: u64 = env_or("MMXA_OPEN_KEYS", args.first(), 1_000_000);
    let updates: u64 = env_or("MMXA_OPEN_UPDATES", args.get(1), 10_000_000);
    let runs: usize = env_or("MMXA_OPEN_RUNS", None, 3);
    let cold = std::env::var("MMXA_OPEN_COLD").is_ok_and(|v| v == "1");
    let one_phase = std::env::var("MMXA_OPEN_MODE").is_ok_and(|m| m == "onephase");
    assert!(keys > 0, "at least one key");

    let tmp;
    let dir = match std::env::var_os("MMXA_OPEN_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).expect("create MMXA_OPEN_DIR");
            assert!(
                std::fs::read_dir(&d)
                    .expect("read MMXA_OPEN_DIR")
                    .next()
                    .is_none(),
                "MMXA_OPEN_DIR must be empty"
            );
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("mmxa-open-time")
                .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
                .expect("temporary directory");
            // A store's directory must be private to its user.
            std::fs::set_permissions(
                tmp.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .expect("chmod 700");
            tmp.path().to_path_buf()
        }
    };
    eprintln!(
        "building {keys} keys ({KEY_LEN}-byte keys, {VALUE_LEN}-byte values) + {updates} updates \
         ({}), {segment_mb} MiB segments, sync=none, in {}",
        if one_phase {
            "one-phase commits"
        } else {
            "local writes"
        },
        dir.display()
    );
    build(&dir, segment_mb, keys, updates, one_phase);

    let (bytes, segs) = disk(&dir);
    // The index's measure of live data (PUT record up to its value's end) and the padded
    // records a fully compacted log would need.
    let live = keys * (put_value_offset(KEY_LEN) + VALUE_LEN as u64);
    let padded = keys * ((put_value_offset(KEY_LEN) + VALUE_LEN as u64 + 7) & !7);
    let mut best = Duration::MAX;
    let mut best_get = u64::MAX;
    let mut mem = String::new();
    for run in 0..runs {
        let dropped = cold && drop_caches();
        let out = Command::new(std::env::current_exe().expect("current_exe"))
            .args(["--measure", &dir.to_string_lossy(), &keys.to_string()])
            .env("MMXA_OPEN_SEGMENT_MB", segment_mb.to_string())
            .output()
            .expect("run the measuring process");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "measuring process failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("measure "))
            .expect("a measurement");
        let field = |name: &str| -> u64 {
            line.split(' ')
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .expect("field")
        };
        let t = Duration::from_micros(field("open_us="));
        best = best.min(t);
        best_get = best_get.min(field("get_ns="));
        mem = format!(
            "RSS after open {:.0} MiB (anon {:.0} MiB, file-backed {:.0} MiB), peak during open \
             {:.0} MiB",
            field("rss_kib=") as f64 / 1024.0,
            field("anon_kib=") as f64 / 1024.0,
            field("file_kib=") as f64 / 1024.0,
            field("hwm_kib=") as f64 / 1024.0
        );
        eprintln!(
            "open #{}: {:.3} s, get {} ns{}; {mem}",
            run + 1,
            t.as_secs_f64(),
            field("get_ns="),
            if dropped { " (page cache dropped)" } else { "" }
        );
    }
    println!("keys                 {keys}");
    println!("updates              {updates}");
    println!("segment size         {segment_mb} MiB");
    println!(
        "disk                 {:.1} MiB in {segs} segments",
        mib(bytes)
    );
    println!(
        "live                 {:.1} MiB (index measure), {:.1} MiB as padded records",
        mib(live),
        mib(padded)
    );
    println!(
        "disk / live          {:.2} (reclaim threshold: 2 x live + 3 segments = {:.1} MiB)",
        bytes as f64 / live as f64,
        mib(2 * live + 3 * (segment_mb << 20))
    );
    println!(
        "Rm::open             {:.3} s (best of {runs})",
        best.as_secs_f64()
    );
    println!("point get            {best_get} ns (best of {runs}; random committed keys)");
    println!("memory               {mem}");
}
