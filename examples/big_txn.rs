//! How long the calls that end a big transaction take: a local transaction of N writes
//! committed and one rolled back, an XA branch of N writes prepared and committed, and a local
//! transaction that scanned N keys (serializable: a next-key lock on each) committed.
//! 16-byte keys, 100-byte values, `sync=none` (the calls' own work, not the disk's).
//!
//! ```text
//! cargo run --release --example big_txn                  # 1,000, 20,000 and 100,000 writes
//! cargo run --release --example big_txn -- 20000
//! ```

use mmxa::config::{Config, SyncMode};
use mmxa::rm::flags::{EndMode, StartMode};
use mmxa::rm::{Range, Rm};
use mmxa::xid::Xid;
use std::ops::Bound;
use std::time::Instant;

fn key(p: &str, i: u64) -> Vec<u8> {
    format!("{p}-{i:010}").into_bytes()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let sizes: Vec<u64> = match std::env::args().nth(1) {
        Some(s) => vec![s.replace('_', "").parse().expect("a number of writes")],
        None => vec![1_000, 20_000, 100_000],
    };
    let dir = tempfile::Builder::new()
        .prefix("mmxa-big-txn")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into()))
        .expect("temporary directory");
    let mut cfg = Config::new(dir.path());
    cfg.sync = SyncMode::None;
    let rm = Rm::open(cfg).expect("open");
    let toc = 1;
    let value = [b'v'; 100];
    for (round, &n) in sizes.iter().enumerate() {
        let write_all = |p: &str| {
            let t = Instant::now();
            for i in 0..n {
                rm.put(toc, &key(p, i), Some(&value)).expect("put");
            }
            ms(t)
        };
        let p = format!("c{round}");
        rm.txn_begin(toc).expect("begin");
        let w = write_all(&p);
        let t = Instant::now();
        rm.txn_commit(toc).expect("commit");
        println!(
            "{n:>7} writes: local commit {:>8.1} ms (the writes took {w:.0} ms)",
            ms(t)
        );

        rm.txn_begin(toc).expect("begin");
        write_all(&format!("r{round}"));
        let t = Instant::now();
        rm.txn_rollback(toc).expect("rollback");
        println!("{n:>7} writes: local rollback {:>6.1} ms", ms(t));

        let x = Xid::from_parts(1, format!("big-{round}").as_bytes(), b"b").expect("xid");
        rm.start(toc, &x, StartMode::New).expect("xa_start");
        write_all(&format!("x{round}"));
        rm.end(toc, &x, EndMode::Success).expect("xa_end");
        let t = Instant::now();
        rm.prepare(toc, &x).expect("xa_prepare");
        let prepare = ms(t);
        let t = Instant::now();
        rm.commit(toc, &x, false).expect("xa_commit");
        println!(
            "{n:>7} writes: xa_prepare {prepare:>8.1} ms, xa_commit {:>8.1} ms",
            ms(t)
        );

        rm.txn_begin(toc).expect("begin");
        let t = Instant::now();
        let range = Range {
            lo: Bound::Included(key(&p, 0)),
            hi: Bound::Unbounded,
            reverse: false,
        };
        let mut scan = rm.scan(toc, range).expect("scan");
        let mut seen = 0u64;
        while seen < n && rm.scan_next(toc, &mut scan).expect("next").is_some() {
            seen += 1;
        }
        let s = ms(t);
        let t = Instant::now();
        rm.txn_commit(toc).expect("commit");
        println!(
            "{seen:>7} keys scanned (serializable): commit {:>8.1} ms (the scan took {s:.0} ms)",
            ms(t)
        );
    }
}
