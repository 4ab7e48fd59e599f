//! The transaction branch identifier as the core sees it.
//!
//! Owns: validation and identity of XIDs. An [`Xid`] always holds a valid, non-null identifier:
//! `1..=64` gtrid bytes, `1..=64` bqual bytes and a full 64-bit `formatID`; the unused tail of
//! its buffer is zero, so derived equality and hashing compare exactly `formatID`, both lengths
//! and the `gtrid_length + bqual_length` meaningful bytes — never trailing garbage.

use crate::xa::{MAXBQUALSIZE, MAXGTRIDSIZE, XIDDATASIZE};
use std::fmt;
use std::hash::{Hash, Hasher};

/// A validated branch identifier.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Xid {
    format_id: i64,
    gtrid_len: u8,
    bqual_len: u8,
    data: [u8; XIDDATASIZE],
}

/// Why a would-be XID is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidError {
    /// `formatID == -1`: the null XID names no branch.
    Null,
    /// `gtrid_length` outside `1..=64`.
    GtridLength(i64),
    /// `bqual_length` outside `1..=64`.
    BqualLength(i64),
}

impl fmt::Display for XidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XidError::Null => write!(f, "the null XID (formatID -1) names no branch"),
            XidError::GtridLength(n) => write!(f, "gtrid_length {n} is outside 1..=64"),
            XidError::BqualLength(n) => write!(f, "bqual_length {n} is outside 1..=64"),
        }
    }
}

impl Xid {
    /// Validates the three header fields first, then copies only the meaningful bytes of
    /// `data` (which may be the caller's whole 128-byte buffer).
    pub fn new(
        format_id: i64,
        gtrid_length: i64,
        bqual_length: i64,
        data: &[u8],
    ) -> Result<Xid, XidError> {
        if format_id == -1 {
            return Err(XidError::Null);
        }
        if !(1..=MAXGTRIDSIZE as i64).contains(&gtrid_length) {
            return Err(XidError::GtridLength(gtrid_length));
        }
        if !(1..=MAXBQUALSIZE as i64).contains(&bqual_length) {
            return Err(XidError::BqualLength(bqual_length));
        }
        let n = (gtrid_length + bqual_length) as usize;
        if data.len() < n {
            // Only reachable from Rust callers; the C boundary always passes 128 bytes.
            return Err(XidError::BqualLength(bqual_length));
        }
        let mut buf = [0u8; XIDDATASIZE];
        buf[..n].copy_from_slice(&data[..n]);
        Ok(Xid {
            format_id,
            gtrid_len: gtrid_length as u8,
            bqual_len: bqual_length as u8,
            data: buf,
        })
    }

    /// Builds an XID from its parts (convenience for tests and tools).
    pub fn from_parts(format_id: i64, gtrid: &[u8], bqual: &[u8]) -> Result<Xid, XidError> {
        let mut data = [0u8; XIDDATASIZE];
        let g = gtrid.len().min(MAXGTRIDSIZE + 1);
        let b = bqual.len().min(MAXBQUALSIZE + 1);
        if g <= MAXGTRIDSIZE && b <= MAXBQUALSIZE {
            data[..g].copy_from_slice(gtrid);
            data[g..g + b].copy_from_slice(bqual);
        }
        Xid::new(format_id, g as i64, b as i64, &data)
    }

    /// The `formatID`, all 64 bits of it.
    pub fn format_id(&self) -> i64 {
        self.format_id
    }

    /// The global transaction id bytes.
    pub fn gtrid(&self) -> &[u8] {
        &self.data[..self.gtrid_len as usize]
    }

    /// The branch qualifier bytes.
    pub fn bqual(&self) -> &[u8] {
        let g = self.gtrid_len as usize;
        &self.data[g..g + self.bqual_len as usize]
    }

    /// The full 128-byte data buffer, tail zeroed (what `xa_recover` hands back).
    pub fn data(&self) -> &[u8; XIDDATASIZE] {
        &self.data
    }
}

impl Hash for Xid {
    /// Hashes what equality compares, without the zero tail (most XIDs use a few dozen of the
    /// 128 bytes), so lookups stay cheap.
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_i64(self.format_id);
        h.write_u8(self.gtrid_len);
        h.write_u8(self.bqual_len);
        h.write(&self.data[..(self.gtrid_len + self.bqual_len) as usize]);
    }
}

impl fmt::Display for Xid {
    /// `formatID.gtrid-hex.bqual-hex`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.format_id)?;
        for b in self.gtrid() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ".")?;
        for b in self.bqual() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_never_matter() {
        let mut a = [0xAAu8; 128];
        let mut b = [0x55u8; 128];
        a[..5].copy_from_slice(b"gt1bq");
        b[..5].copy_from_slice(b"gt1bq");
        let x = Xid::new(7, 3, 2, &a).unwrap();
        let y = Xid::new(7, 3, 2, &b).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.gtrid(), b"gt1");
        assert_eq!(x.bqual(), b"bq");
        assert!(x.data()[5..].iter().all(|&c| c == 0));
    }

    #[test]
    fn lengths_and_format_distinguish() {
        let d = *b"abcdef";
        let x = Xid::new(1, 3, 3, &d).unwrap();
        assert_ne!(x, Xid::new(1, 2, 4, &d).unwrap());
        assert_ne!(x, Xid::new(2, 3, 3, &d).unwrap());
        assert_ne!(x, Xid::new(1 << 40, 3, 3, &d).unwrap());
    }

    #[test]
    fn validation() {
        let d = [1u8; 128];
        assert_eq!(Xid::new(-1, 1, 1, &d), Err(XidError::Null));
        assert_eq!(Xid::new(0, 0, 1, &d), Err(XidError::GtridLength(0)));
        assert_eq!(Xid::new(0, 65, 1, &d), Err(XidError::GtridLength(65)));
        assert_eq!(Xid::new(0, 1, 0, &d), Err(XidError::BqualLength(0)));
        assert_eq!(Xid::new(0, 64, 65, &d), Err(XidError::BqualLength(65)));
        assert_eq!(Xid::new(0, -3, 1, &d), Err(XidError::GtridLength(-3)));
        assert!(Xid::new(0, 64, 64, &d).is_ok());
        assert!(Xid::new(i64::MIN, 1, 1, &d).is_ok());
    }
}
