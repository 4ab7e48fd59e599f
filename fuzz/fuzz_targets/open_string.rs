//! `mmxa::config::parse` on arbitrary bytes: never a panic, every error says something, and a
//! string that parses renders back to an open string that parses to the same `Config`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmxa::config::{parse, Config, SyncMode};

/// The open string for `c`, every key spelled out.
fn render(c: &Config) -> Vec<u8> {
    let mut s = b"dir=".to_vec();
    s.extend(c.dir.as_os_str().as_encoded_bytes());
    let sync = match c.sync {
        SyncMode::Msync => "msync",
        SyncMode::Fdatasync => "fdatasync",
        SyncMode::None => "none",
    };
    s.extend(format!(";sync={sync}").bytes());
    s.extend(format!(";lock_timeout_ms={}", c.lock_timeout.as_millis()).bytes());
    s.extend(format!(";segment_mb={}", c.segment_size >> 20).bytes());
    if let Some(t) = &c.trace {
        s.extend(b",trace=");
        s.extend(t.as_os_str().as_encoded_bytes());
    }
    if let Some(o) = c.orphan_rollback {
        s.extend(format!(",orphan_rollback_s={}", o.as_secs()).bytes());
    }
    s
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Err(e) => assert!(!e.is_empty(), "an empty error for {data:?}"),
        Ok(c) => {
            // Whole MiB and whole seconds: nothing is lost in the rendering.
            assert_eq!(c.segment_size % (1 << 20), 0);
            let text = render(&c);
            let again = parse(&text)
                .unwrap_or_else(|e| panic!("{data:?} parsed, its rendering {text:?} did not: {e}"));
            assert_eq!(c, again, "rendered as {:?}", String::from_utf8_lossy(&text));
        }
    }
});
