//! The bytes of the log format: segment headers, record headers, record kinds and payloads.
//!
//! Owns: every byte offset of the format (named, each field's offset chained from the one
//! before, as the tables in the module doc of `log` lay them out), the record kinds ([`Kind`],
//! the one list of them), encoding a [`Record`], checking a record header ([`probe`]) and
//! decoding a payload ([`decode`]). No I/O: callers hand in bytes. Invariant: every length read from the bytes is bounded by the slice it
//! describes before it is used, so no input makes these functions panic or read out of bounds.

use super::Lsn;
use crate::xid::Xid;

/// Segment file magic.
pub(super) const MAGIC: &[u8; 8] = b"MMXASEG1";
/// Format version written in new segment headers.
pub(super) const VERSION: u32 = 2;
/// The oldest format version read (its segments are read, never appended to).
pub(super) const OLDEST_VERSION: u32 = 1;

// Segment header fields (see "Segment header" in the module doc of `log`).
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_HEADER_LEN: usize = SH_VERSION + 4;
const SH_ID: usize = SH_HEADER_LEN + 4;
const SH_BASE: usize = SH_ID + 8;
const SH_SIZE: usize = SH_BASE + 8;
const SH_SALT: usize = SH_SIZE + 8;
/// The header CRC covers the bytes before it.
const SH_CRC: usize = SH_SALT + 8;
const SH_RESERVED: usize = SH_CRC + 4;
/// Length of a segment header; records start here.
pub(super) const SEG_HEADER: u64 = 64;
const _: () = assert!(SH_RESERVED + 12 == SEG_HEADER as usize);

/// Highest segment id and LSN a valid log can hold (2^62: far beyond any real log).
pub(super) const MAX_SEGMENT_ID: u64 = 1 << 62;
pub(super) const MAX_LSN: u64 = 1 << 62;

// Record header fields (see "Records").
const RH_CRC: usize = 0;
const RH_LEN: usize = RH_CRC + 4;
pub(super) const RH_KIND: usize = RH_LEN + 4;
/// Seven bytes that must be zero.
const RH_ZERO: usize = RH_KIND + 1;
const RH_VOUCH: usize = RH_ZERO + 7;
/// Length of a record header; the payload follows.
pub(super) const REC_HEADER: usize = RH_VOUCH + 8;

// Payload fields (see "Payloads"). Every payload starts with a tag.
const P_TAG: usize = 0;
const P_PUT_KEY_LEN: usize = P_TAG + 8;
const P_PUT_VALUE_LEN: usize = P_PUT_KEY_LEN + 4;
const P_PUT_KEY: usize = P_PUT_VALUE_LEN + 4;
const P_DELETE_KEY_LEN: usize = P_TAG + 8;
const P_DELETE_KEY: usize = P_DELETE_KEY_LEN + 4;
// Since version 2, PREPARE, HEURISTIC and MOVE carry a time after their tags ([`P_TIME`]);
// the fields after it move by its length. Version-1 offsets are these with `at = 0`.
const P_TIME: usize = P_TAG + 8;
const TIME_LEN: usize = 8;
const P_PREPARE_XID: usize = P_TAG + 8;
const P_MOVE_NEW: usize = P_TAG + 8;
const P_MOVE_XID: usize = P_MOVE_NEW + 8;
const P_HEUR_OUTCOME: usize = P_TAG + 8;
const P_HEUR_XID: usize = P_HEUR_OUTCOME + 4;
/// A COMMIT, ROLLBACK or FORGET payload is a tag; a CHECKPOINT payload is a segment id.
const P_TAG_ONLY: usize = 8;
const P_CHECKPOINT: usize = 8;

// An XID in a payload: formatID, then the two lengths, then the bytes.
const X_FORMAT: usize = 0;
const X_GTRID_LEN: usize = X_FORMAT + 8;
const X_BQUAL_LEN: usize = X_GTRID_LEN + 1;
const X_DATA: usize = X_BQUAL_LEN + 1;

/// Room for the fixed-size parts of any payload (HEURISTIC's are the largest).
const FIXED: usize = 40;
const _: () =
    assert!(P_MOVE_XID + TIME_LEN + X_DATA <= FIXED && P_HEUR_XID + TIME_LEN + X_DATA + 4 <= FIXED);

/// A record kind: the byte at [`RH_KIND`]. Zero is no kind, so zeroed space never parses.
/// Converted from the byte once, in [`probe`]; every other place matches on this enum, so a
/// new kind cannot be known to one and unknown to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    Put = 1,
    Delete = 2,
    Prepare = 3,
    Commit = 4,
    Rollback = 5,
    Heuristic = 6,
    Forget = 7,
    SegmentEnd = 8,
    Move = 9,
    Checkpoint = 10,
}

impl TryFrom<u8> for Kind {
    type Error = u8;

    fn try_from(b: u8) -> Result<Kind, u8> {
        Ok(match b {
            1 => Kind::Put,
            2 => Kind::Delete,
            3 => Kind::Prepare,
            4 => Kind::Commit,
            5 => Kind::Rollback,
            6 => Kind::Heuristic,
            7 => Kind::Forget,
            8 => Kind::SegmentEnd,
            9 => Kind::Move,
            10 => Kind::Checkpoint,
            _ => return Err(b),
        })
    }
}

/// Offset of a PUT's value bytes from the start of its record.
pub fn put_value_offset(key_len: usize) -> u64 {
    (REC_HEADER + P_PUT_KEY + key_len) as u64
}

/// The size a record with a payload of `len` bytes takes in the log: header, payload, padding.
pub(super) fn padded(len: usize) -> u64 {
    ((REC_HEADER + len + 7) & !7) as u64
}

/// A decoded log record, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A write of `key` (tag 0: committed by itself).
    Put {
        /// Branch tag.
        tag: u64,
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
    },
    /// A delete of `key` (tag 0: committed by itself).
    Delete {
        /// Branch tag.
        tag: u64,
        /// Key bytes.
        key: &'a [u8],
    },
    /// The branch is prepared.
    Prepare {
        /// Branch tag.
        tag: u64,
        /// The branch's XID.
        xid: Xid,
        /// When it was prepared (wall clock, ns since the Unix epoch); `None`: unknown (a
        /// version-1 log records no time).
        at: Option<u64>,
    },
    /// The branch is committed.
    Commit {
        /// Branch tag.
        tag: u64,
    },
    /// The branch is rolled back.
    Rollback {
        /// Branch tag.
        tag: u64,
    },
    /// A prepared branch was completed heuristically.
    Heuristic {
        /// Branch tag.
        tag: u64,
        /// `XA_HEURCOM`, `XA_HEURRB`, `XA_HEURMIX` or `XA_HEURHAZ`.
        outcome: i32,
        /// The branch's XID.
        xid: Xid,
        /// Why (operator text).
        reason: &'a [u8],
        /// When it was decided (wall clock, ns since the Unix epoch); `None`: unknown.
        at: Option<u64>,
    },
    /// A heuristically completed branch is forgotten.
    Forget {
        /// Branch tag.
        tag: u64,
    },
    /// A prepared branch's state moves to a new tag (its writes were re-logged under it).
    Move {
        /// The tag that is gone.
        old: u64,
        /// The tag that holds the prepared branch now.
        new: u64,
        /// The branch's XID.
        xid: Xid,
        /// When the branch was prepared (the time of its PREPARE, carried over); `None`:
        /// unknown.
        at: Option<u64>,
    },
}

pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The fields of a segment header that passed its checks.
pub(super) struct SegmentHeader {
    pub version: u32,
    pub id: u64,
    pub base: Lsn,
    pub size: u64,
    pub salt: u64,
}

/// The header of a new segment file, in format `version` ([`VERSION`] but in tests that build
/// older logs).
pub(super) fn segment_header(
    version: u32,
    id: u64,
    base: Lsn,
    size: u64,
    salt: u64,
) -> [u8; SEG_HEADER as usize] {
    let mut h = [0u8; SEG_HEADER as usize];
    h[SH_MAGIC..SH_VERSION].copy_from_slice(MAGIC);
    h[SH_VERSION..SH_HEADER_LEN].copy_from_slice(&version.to_le_bytes());
    h[SH_HEADER_LEN..SH_ID].copy_from_slice(&(SEG_HEADER as u32).to_le_bytes());
    h[SH_ID..SH_BASE].copy_from_slice(&id.to_le_bytes());
    h[SH_BASE..SH_SIZE].copy_from_slice(&base.to_le_bytes());
    h[SH_SIZE..SH_SALT].copy_from_slice(&size.to_le_bytes());
    h[SH_SALT..SH_CRC].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..SH_CRC]);
    h[SH_CRC..SH_RESERVED].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks the magic, checksum, version and header length of the first bytes of a segment
/// file; `Err` says what is wrong.
pub(super) fn parse_segment_header(h: &[u8]) -> Result<SegmentHeader, String> {
    let Some(h) = h.get(..SEG_HEADER as usize) else {
        return Err("file shorter than a segment header".into());
    };
    if &h[SH_MAGIC..SH_VERSION] != MAGIC {
        return Err("bad magic".into());
    }
    if crc32fast::hash(&h[..SH_CRC]) != le_u32(h, SH_CRC) {
        return Err("segment header checksum mismatch".into());
    }
    let version = le_u32(h, SH_VERSION);
    if version > VERSION {
        return Err(format!(
            "log format version {version} is newer than this mmxa reads (versions \
             {OLDEST_VERSION} to {VERSION}): written by a newer mmxa, open it with that one"
        ));
    }
    if version < OLDEST_VERSION || le_u32(h, SH_HEADER_LEN) != SEG_HEADER as u32 {
        return Err(format!(
            "unsupported format version {version} or header length {}",
            le_u32(h, SH_HEADER_LEN)
        ));
    }
    Ok(SegmentHeader {
        version,
        id: le_u64(h, SH_ID),
        base: le_u64(h, SH_BASE),
        size: le_u64(h, SH_SIZE),
        salt: le_u64(h, SH_SALT),
    })
}

/// Writes an XID's fixed part (formatID and lengths) to `out`; returns its bytes.
fn put_xid<'x>(out: &mut [u8], xid: &'x Xid) -> &'x [u8] {
    out[X_FORMAT..X_GTRID_LEN].copy_from_slice(&xid.format_id().to_le_bytes());
    out[X_GTRID_LEN] = xid.gtrid().len() as u8;
    out[X_BQUAL_LEN] = xid.bqual().len() as u8;
    &xid.data()[..xid.gtrid().len() + xid.bqual().len()]
}

/// Scratch space for the fixed-size parts of an encoded payload.
pub(super) type Fixed = [u8; FIXED];

/// Lays out `rec`'s payload, in the current format ([`VERSION`]), as up to four parts,
/// written back to back; its fixed-size fields go into `buf`. An unknown time is written as 0.
pub(super) fn encode<'a>(rec: &'a Record<'_>, buf: &'a mut Fixed) -> (Kind, [&'a [u8]; 4]) {
    fn time(buf: &mut Fixed, at: &Option<u64>) {
        buf[P_TIME..P_TIME + TIME_LEN].copy_from_slice(&at.unwrap_or(0).to_le_bytes());
    }
    const T: usize = TIME_LEN;
    match rec {
        Record::Put { tag, key, value } => {
            buf[P_TAG..P_PUT_KEY_LEN].copy_from_slice(&tag.to_le_bytes());
            buf[P_PUT_KEY_LEN..P_PUT_VALUE_LEN].copy_from_slice(&(key.len() as u32).to_le_bytes());
            buf[P_PUT_VALUE_LEN..P_PUT_KEY].copy_from_slice(&(value.len() as u32).to_le_bytes());
            let b: &'a Fixed = buf;
            (Kind::Put, [&b[..P_PUT_KEY], key, value, &[]])
        }
        Record::Delete { tag, key } => {
            buf[P_TAG..P_DELETE_KEY_LEN].copy_from_slice(&tag.to_le_bytes());
            buf[P_DELETE_KEY_LEN..P_DELETE_KEY].copy_from_slice(&(key.len() as u32).to_le_bytes());
            let b: &'a Fixed = buf;
            (Kind::Delete, [&b[..P_DELETE_KEY], key, &[], &[]])
        }
        Record::Commit { tag } | Record::Rollback { tag } | Record::Forget { tag } => {
            buf[P_TAG..P_TAG_ONLY].copy_from_slice(&tag.to_le_bytes());
            let kind = match rec {
                Record::Commit { .. } => Kind::Commit,
                Record::Rollback { .. } => Kind::Rollback,
                _ => Kind::Forget,
            };
            let b: &'a Fixed = buf;
            (kind, [&b[..P_TAG_ONLY], &[], &[], &[]])
        }
        Record::Prepare { tag, xid, at } => {
            buf[P_TAG..P_TIME].copy_from_slice(&tag.to_le_bytes());
            time(&mut *buf, at);
            let data = put_xid(&mut buf[T + P_PREPARE_XID..], xid);
            let b: &'a Fixed = buf;
            (
                Kind::Prepare,
                [&b[..T + P_PREPARE_XID + X_DATA], data, &[], &[]],
            )
        }
        Record::Move { old, new, xid, at } => {
            buf[P_TAG..P_TIME].copy_from_slice(&old.to_le_bytes());
            time(&mut *buf, at);
            buf[T + P_MOVE_NEW..T + P_MOVE_XID].copy_from_slice(&new.to_le_bytes());
            let data = put_xid(&mut buf[T + P_MOVE_XID..], xid);
            let b: &'a Fixed = buf;
            (Kind::Move, [&b[..T + P_MOVE_XID + X_DATA], data, &[], &[]])
        }
        Record::Heuristic {
            tag,
            outcome,
            xid,
            reason,
            at,
        } => {
            // Two fixed runs: up to the XID's bytes, and the reason length after them.
            const REASON_LEN: usize = T + P_HEUR_XID + X_DATA;
            buf[P_TAG..P_TIME].copy_from_slice(&tag.to_le_bytes());
            time(&mut *buf, at);
            buf[T + P_HEUR_OUTCOME..T + P_HEUR_XID].copy_from_slice(&outcome.to_le_bytes());
            let data = put_xid(&mut buf[T + P_HEUR_XID..], xid);
            buf[REASON_LEN..REASON_LEN + 4].copy_from_slice(&(reason.len() as u32).to_le_bytes());
            let b: &'a Fixed = buf;
            (
                Kind::Heuristic,
                [
                    &b[..REASON_LEN],
                    data,
                    &b[REASON_LEN..REASON_LEN + 4],
                    reason,
                ],
            )
        }
    }
}

/// The header of a record of `kind` whose payload is `parts`, checksummed under `salt`.
pub(super) fn record_header(
    salt: u64,
    kind: Kind,
    vouch: Lsn,
    parts: &[&[u8]],
) -> [u8; REC_HEADER] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = [0u8; REC_HEADER];
    h[RH_LEN..RH_KIND].copy_from_slice(&(len as u32).to_le_bytes());
    h[RH_KIND] = kind as u8;
    h[RH_VOUCH..REC_HEADER].copy_from_slice(&vouch.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[RH_LEN..]);
    for p in parts {
        c.update(p);
    }
    h[RH_CRC..RH_LEN].copy_from_slice(&c.finalize().to_le_bytes());
    h
}

/// What a valid record says, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    /// A record the log's user replays.
    Record(Record<'a>),
    /// The log continues at the start of the next segment.
    SegmentEnd,
    /// Segments before this one are no longer needed.
    Checkpoint(u64),
}

/// Decodes the payload of a record of `kind` from a segment of format `version`; `None` when
/// it is malformed.
pub(super) fn decode(kind: Kind, version: u32, p: &[u8]) -> Option<Entry<'_>> {
    let tag = || p.get(P_TAG..P_TAG + 8).map(|b| le_u64(b, 0));
    // The time field and the shift of what follows it (none before version 2).
    let timed = matches!(kind, Kind::Prepare | Kind::Move | Kind::Heuristic);
    let (t, at) = if timed && version >= 2 {
        let at = le_u64(p.get(P_TIME..P_TIME + TIME_LEN)?, 0);
        (TIME_LEN, (at != 0).then_some(at))
    } else {
        (0, None)
    };
    let xid_at = |at: usize| -> Option<(Xid, usize)> {
        let head = p.get(at..at + X_DATA)?;
        let (g, b) = (head[X_GTRID_LEN] as usize, head[X_BQUAL_LEN] as usize);
        let end = at + X_DATA + g + b;
        let data = p.get(at + X_DATA..end)?;
        let xid = Xid::new(le_u64(head, X_FORMAT) as i64, g as i64, b as i64, data).ok()?;
        Some((xid, end))
    };
    let rec = match kind {
        Kind::Put => {
            let kl = le_u32(p.get(P_PUT_KEY_LEN..P_PUT_KEY_LEN + 4)?, 0) as usize;
            let vl = le_u32(p.get(P_PUT_VALUE_LEN..P_PUT_VALUE_LEN + 4)?, 0) as usize;
            if p.len() != P_PUT_KEY + kl + vl {
                return None;
            }
            Record::Put {
                tag: tag()?,
                key: &p[P_PUT_KEY..P_PUT_KEY + kl],
                value: &p[P_PUT_KEY + kl..],
            }
        }
        Kind::Delete => {
            let kl = le_u32(p.get(P_DELETE_KEY_LEN..P_DELETE_KEY_LEN + 4)?, 0) as usize;
            if p.len() != P_DELETE_KEY + kl {
                return None;
            }
            Record::Delete {
                tag: tag()?,
                key: &p[P_DELETE_KEY..],
            }
        }
        Kind::Prepare => {
            let (xid, end) = xid_at(t + P_PREPARE_XID)?;
            if end != p.len() {
                return None;
            }
            Record::Prepare {
                tag: tag()?,
                xid,
                at,
            }
        }
        Kind::Commit | Kind::Rollback | Kind::Forget => {
            if p.len() != P_TAG_ONLY {
                return None;
            }
            let tag = tag()?;
            match kind {
                Kind::Commit => Record::Commit { tag },
                Kind::Rollback => Record::Rollback { tag },
                _ => Record::Forget { tag },
            }
        }
        Kind::Move => {
            let (xid, end) = xid_at(t + P_MOVE_XID)?;
            if end != p.len() {
                return None;
            }
            Record::Move {
                old: tag()?,
                new: le_u64(p.get(t + P_MOVE_NEW..t + P_MOVE_XID)?, 0),
                xid,
                at,
            }
        }
        Kind::Heuristic => {
            let outcome = le_u32(p.get(t + P_HEUR_OUTCOME..t + P_HEUR_XID)?, 0) as i32;
            let (xid, end) = xid_at(t + P_HEUR_XID)?;
            let rl = le_u32(p.get(end..end + 4)?, 0) as usize;
            if p.len() != end + 4 + rl {
                return None;
            }
            Record::Heuristic {
                tag: tag()?,
                outcome,
                xid,
                reason: &p[end + 4..],
                at,
            }
        }
        Kind::SegmentEnd => return p.is_empty().then_some(Entry::SegmentEnd),
        Kind::Checkpoint => {
            return (p.len() == P_CHECKPOINT).then(|| Entry::Checkpoint(le_u64(p, 0)));
        }
    };
    Some(Entry::Record(rec))
}

/// A CHECKPOINT payload naming `first`, the first segment still needed.
pub(super) fn checkpoint_payload(first: u64) -> [u8; P_CHECKPOINT] {
    first.to_le_bytes()
}

/// A record header that passed the checks.
pub(super) struct Header {
    pub kind: Kind,
    /// Payload length.
    pub len: usize,
    /// Header, payload and padding.
    pub total: u64,
    pub vouch: Lsn,
}

/// Checks the record at `off` of a segment's bytes `seg`: known kind, zero bytes, fits, CRC
/// matches.
pub(super) fn probe(seg: &[u8], salt: u64, off: u64) -> Option<Header> {
    let at = usize::try_from(off).ok()?;
    let h = seg.get(at..at.checked_add(REC_HEADER)?)?;
    let kind = Kind::try_from(h[RH_KIND]).ok()?;
    if h[RH_ZERO..RH_VOUCH].iter().any(|&b| b != 0) {
        return None;
    }
    let len = le_u32(h, RH_LEN) as usize;
    let total = padded(len) as usize;
    let payload = seg.get(at + REC_HEADER..at + REC_HEADER + len)?;
    if at + total > seg.len() {
        return None;
    }
    let mut c = crc32fast::Hasher::new();
    c.update(&salt.to_le_bytes());
    c.update(&h[RH_LEN..REC_HEADER]);
    c.update(payload);
    if c.finalize() != le_u32(h, RH_CRC) {
        return None;
    }
    Some(Header {
        kind,
        len,
        total: padded(len),
        vouch: le_u64(h, RH_VOUCH),
    })
}

/// Whether the first `n` bytes of `b` (or all of `b`, if shorter) are zero; word-wise for speed.
pub(super) fn is_zero(b: &[u8], n: usize) -> bool {
    let b = &b[..n.min(b.len())];
    let words = b.chunks_exact(8);
    let rest = words.remainder();
    words.fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
    }) == 0
        && rest.iter().all(|&c| c == 0)
}
