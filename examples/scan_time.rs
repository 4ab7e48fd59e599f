//! How fast cursors read: one in-order pass over every committed key, and short range reads in
//! local transactions (serializable: shared and gap locks), on a store of KEYS keys (16-byte
//! keys loaded in a shuffled order, 100-byte values, `sync=none`).
//!
//! ```text
//! cargo run --release --example scan_time                # 1,000,000 keys
//! cargo run --release --example scan_time -- 100000
//! MMXA_SCAN_READ_COMMITTED=1 cargo run --release --example scan_time   # no read locks
//! ```

use mmxa::config::{Config, SyncMode};
use mmxa::rm::{Range, Rm};
use std::ops::Bound;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.replace('_', "").parse().expect("a number of keys"))
        .unwrap_or(1_000_000);
    let dir = tempfile::Builder::new()
        .prefix("mmxa-scan-time")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
        .expect("temporary directory");
    let mut cfg = Config::new(dir.path());
    cfg.sync = SyncMode::None;
    if std::env::var("MMXA_SCAN_READ_COMMITTED").is_ok_and(|v| v == "1") {
        cfg.isolation = mmxa::config::Isolation::ReadCommitted;
    }
    let rm = Rm::open(cfg).expect("open");
    // A shuffled load order: a multiplicative permutation of 0..n.
    let t = Instant::now();
    let toc = 1;
    let step = 0x9e37_79b9u64 | 1;
    let mut i = 0;
    while i < n {
        rm.txn_begin(toc).expect("begin");
        for _ in 0..1000.min(n - i) {
            let k = (i.wrapping_mul(step)) % n;
            let k = if n.is_power_of_two() || gcd(step, n) == 1 {
                k
            } else {
                i
            };
            rm.put(toc, &key(k), Some(&[b'v'; 100])).expect("put");
            i += 1;
        }
        rm.txn_commit(toc).expect("commit");
    }
    eprintln!("loaded {n} keys in {:.1} s", t.elapsed().as_secs_f64());
    for _ in 0..3 {
        let t = Instant::now();
        let c = cpu();
        let mut s = rm.scan(toc, Range::all()).expect("scan");
        let mut count = 0u64;
        let mut last = Vec::new();
        while let Some((k, v)) = rm.scan_next(toc, &mut s).expect("next") {
            assert!(k > last && v.len() == 100);
            last = k;
            count += 1;
        }
        assert_eq!(count, n);
        let d = t.elapsed();
        println!(
            "iterate {count} keys: {:.3} s, {:.3} µs/key (CPU {:.3} µs/key)",
            d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / n as f64,
            (cpu() - c) * 1e6 / n as f64
        );
    }
    let mut g = Rng(0x5eed);
    const READS: u64 = 10_000;
    let t = Instant::now();
    let c = cpu();
    for _ in 0..READS {
        rm.txn_begin(toc).expect("begin");
        let lo = key(g.next() % n);
        let mut r = Range::all();
        r.lo = Bound::Included(lo);
        let mut s = rm.scan(toc, r).expect("scan");
        let mut got = 0;
        while got < 100 {
            match rm.scan_next(toc, &mut s).expect("next") {
                Some(_) => got += 1,
                None => break,
            }
        }
        rm.txn_commit(toc).expect("commit");
    }
    let d = t.elapsed();
    println!(
        "{READS} range reads of 100 keys in local transactions: {:.3} s, {:.1} µs each (CPU \
         {:.1} µs)",
        d.as_secs_f64(),
        d.as_secs_f64() * 1e6 / READS as f64,
        (cpu() - c) * 1e6 / READS as f64
    );
}

/// CPU time of this process so far (user + system), in seconds.
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
