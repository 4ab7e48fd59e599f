//! The messages between a guest process and the process hosting a store.
//!
//! Owns: framing and encoding. A frame is a little-endian `u32` length, then that many bytes:
//! a request is an operation byte and its fields, a reply a status byte (0 ok, 1 error: the
//! error's kind, a detail byte and a message) and the result's fields.
//! Integers are little-endian; byte strings and XIDs are length-prefixed. Invariant: decoding
//! never trusts a length: every read is bounds-checked and a frame is at most [`MAX_FRAME`].
//!
//! Both ends are the same library version (the handshake checks [`VERSION`]), so the format
//! has no compatibility rules beyond that check.

use crate::error::{Error, Outcome, Rb};
use crate::status::MMXA_MAX_VALUE;
use crate::xid::Xid;
use std::io::{self, Read, Write};

/// Protocol version, checked by the handshake.
pub const VERSION: u32 = 2;
/// Largest frame: a PUT of the largest key and value, with room to spare.
pub const MAX_FRAME: usize = MMXA_MAX_VALUE + 64 * 1024;

/// Operation codes.
pub mod op {
    pub const HELLO: u8 = 1;
    pub const START: u8 = 2;
    pub const END: u8 = 3;
    pub const PREPARE: u8 = 4;
    pub const COMMIT: u8 = 5;
    pub const ROLLBACK: u8 = 6;
    pub const FORGET: u8 = 7;
    pub const RECOVER: u8 = 8;
    pub const CLOSE: u8 = 9;
    pub const ACTIVE: u8 = 10;
    pub const PUT: u8 = 11;
    pub const GET: u8 = 12;
    pub const HEURISTIC: u8 = 13;
    pub const STATUS: u8 = 14;
    pub const SAVEPOINT: u8 = 15;
    pub const ROLLBACK_TO: u8 = 16;
    pub const GET_FOR_UPDATE: u8 = 17;
}

const OK: u8 = 0;
const ERR: u8 = 1;

/// An error as two bytes: its kind and a detail (the rollback reason or heuristic outcome).
fn error_bytes(e: &Error) -> (u8, u8) {
    let rb = |rb: &Rb| match rb {
        Rb::Rollback => 0,
        Rb::Deadlock => 1,
        Rb::Timeout => 2,
        Rb::Other => 3,
    };
    let outcome = |o: &Outcome| match o {
        Outcome::Commit => 0,
        Outcome::Rollback => 1,
        Outcome::Mixed => 2,
        Outcome::Hazard => 3,
    };
    match e {
        Error::Async(_) => (0, 0),
        Error::Invalid(_) => (1, 0),
        Error::Protocol(_) => (2, 0),
        Error::UnknownXid(_) => (3, 0),
        Error::DuplicateXid(_) => (4, 0),
        Error::Outside(_) => (5, 0),
        Error::NotOpen(_) => (6, 0),
        Error::TooBig(_) => (7, 0),
        Error::RolledBack(r, _) => (8, rb(r)),
        Error::LockTimeout(_) => (9, 0),
        Error::Deadlock(_) => (10, 0),
        Error::Heuristic(o, _) => (11, outcome(o)),
        Error::Retry(_) => (12, 0),
        Error::Failed(_) => (13, 0),
        Error::Io(_) => (14, 0),
        Error::NoSpace(_) => (15, 0),
        Error::Register(_) => (16, 0),
        Error::Internal(_) => (17, 0),
    }
}

/// The error [`error_bytes`] encoded.
fn error_from(kind: u8, detail: u8, m: String) -> io::Result<Error> {
    let rb = match detail {
        0 => Rb::Rollback,
        1 => Rb::Deadlock,
        2 => Rb::Timeout,
        _ => Rb::Other,
    };
    let outcome = match detail {
        0 => Outcome::Commit,
        1 => Outcome::Rollback,
        2 => Outcome::Mixed,
        _ => Outcome::Hazard,
    };
    Ok(match kind {
        0 => Error::Async(m),
        1 => Error::Invalid(m),
        2 => Error::Protocol(m),
        3 => Error::UnknownXid(m),
        4 => Error::DuplicateXid(m),
        5 => Error::Outside(m),
        6 => Error::NotOpen(m),
        7 => Error::TooBig(m),
        8 => Error::RolledBack(rb, m),
        9 => Error::LockTimeout(m),
        10 => Error::Deadlock(m),
        11 => Error::Heuristic(outcome, m),
        12 => Error::Retry(m),
        13 => Error::Failed(m),
        14 => Error::Io(m),
        15 => Error::NoSpace(m),
        16 => Error::Register(m),
        17 => Error::Internal(m),
        _ => return Err(bad("unknown error kind")),
    })
}

/// A frame being built.
pub struct Out(Vec<u8>);

impl Out {
    /// A request for `op`.
    pub fn request(op: u8) -> Out {
        let mut v = vec![0; 4];
        v.push(op);
        Out(v)
    }

    /// A successful reply.
    pub fn ok() -> Out {
        Out::request(OK)
    }

    /// A reply carrying an error.
    pub fn err(e: &Error) -> Out {
        let (kind, detail) = error_bytes(e);
        Out::request(ERR)
            .u8(kind)
            .u8(detail)
            .bytes(e.message().as_bytes())
    }

    pub fn u8(mut self, v: u8) -> Out {
        self.0.push(v);
        self
    }

    pub fn bool(self, v: bool) -> Out {
        self.u8(v as u8)
    }

    pub fn u32(mut self, v: u32) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i32(mut self, v: i32) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Out {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(self, b: &[u8]) -> Out {
        let mut o = self.u32(b.len() as u32);
        o.0.extend_from_slice(b);
        o
    }

    pub fn opt_bytes(self, b: Option<&[u8]>) -> Out {
        match b {
            Some(b) => self.bool(true).bytes(b),
            None => self.bool(false),
        }
    }

    pub fn xid(mut self, x: &Xid) -> Out {
        self.0.extend_from_slice(&x.format_id().to_le_bytes());
        self.0.push(x.gtrid().len() as u8);
        self.0.push(x.bqual().len() as u8);
        self.0.extend_from_slice(x.gtrid());
        self.0.extend_from_slice(x.bqual());
        self
    }

    /// Writes the frame.
    pub fn send(mut self, w: &mut impl Write) -> io::Result<()> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        w.write_all(&self.0)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed message: {what}"),
    )
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn recv(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(bad("frame length out of range"));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// A received frame being decoded.
pub struct In<'a> {
    buf: &'a [u8],
}

impl<'a> In<'a> {
    pub fn new(buf: &'a [u8]) -> In<'a> {
        In { buf }
    }

    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> io::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(bad("boolean out of range")),
        }
    }

    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn opt_bytes(&mut self) -> io::Result<Option<&'a [u8]>> {
        if self.bool()? {
            self.bytes().map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn string(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    pub fn xid(&mut self) -> io::Result<Xid> {
        let format_id = i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let g = self.u8()? as usize;
        let b = self.u8()? as usize;
        let gtrid = self.take(g)?;
        let bqual = self.take(b)?;
        Xid::from_parts(format_id, gtrid, bqual).map_err(|e| bad(&e.to_string()))
    }

    /// Nothing may follow the last field.
    pub fn done(&self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

/// How a reply started: its status, decoded.
pub enum Status {
    Ok,
    Err(Error),
}

/// Reads a reply's status; on `Status::Ok` the fields follow in `r`.
pub fn status(r: &mut In<'_>) -> io::Result<Status> {
    match r.u8()? {
        OK => Ok(Status::Ok),
        ERR => {
            let (kind, detail) = (r.u8()?, r.u8()?);
            Ok(Status::Err(error_from(kind, detail, r.string()?)?))
        }
        _ => Err(bad("unknown reply status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let x = Xid::from_parts(7, b"gtrid", b"bq").unwrap();
        let mut buf = Vec::new();
        Out::request(op::PUT)
            .xid(&x)
            .bytes(b"key")
            .opt_bytes(None)
            .u64(u64::MAX)
            .send(&mut buf)
            .unwrap();
        let frame = recv(&mut &buf[..]).unwrap().unwrap();
        let mut r = In::new(&frame);
        assert_eq!(r.u8().unwrap(), op::PUT);
        assert_eq!(r.xid().unwrap(), x);
        assert_eq!(r.bytes().unwrap(), b"key");
        assert_eq!(r.opt_bytes().unwrap(), None);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        r.done().unwrap();
        // Every truncation of the body fails cleanly.
        for n in 0..frame.len() {
            let mut r = In::new(&frame[..n]);
            let ok = r.u8().is_ok()
                && r.xid().is_ok()
                && r.bytes().is_ok()
                && r.opt_bytes().is_ok()
                && r.u64().is_ok();
            assert!(!ok, "prefix of {n} bytes decoded");
        }
        // A length beyond the frame, or beyond MAX_FRAME, is refused.
        assert!(In::new(&[9, 0, 0, 0, 1]).bytes().is_err());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(recv(&mut &huge[..]).is_err());
        assert!(recv(&mut &[][..]).unwrap().is_none());
    }
}
