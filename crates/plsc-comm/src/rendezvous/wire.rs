//! The rendezvous protocol on the wire: fixed little-endian frames.
//!
//! - hello (rank -> master): `MAGIC`, version `u32`, rank `u64`, world size `u64`;
//! - verdict (master -> rank): `MAGIC`, version `u32`, status `u8`, then by status:
//!   [`Verdict::Welcome`] nothing; `VersionMismatch` peer `u64`, theirs `u32`;
//!   `WrongWorldSize` peer, theirs, expected (`u64` each); `DuplicateRank` / `RankOutOfRange`
//!   peer, world (`u64`); `Aborted` a length-prefixed UTF-8 cause;
//! - blob (master -> rank, after the welcome): length `u64` then the bytes.
//!
//! The magic and version come first in every frame and never change place, so two builds
//! with different protocol versions still recognise each other and name the mismatch.

use std::io::{self, Read, Write};

/// Starts every frame ("PLSCRDV" and a zero byte).
pub(crate) const MAGIC: [u8; 8] = *b"PLSCRDV\0";

/// Largest blob or message accepted from the wire (guards against garbage lengths).
pub(crate) const MAX_FRAME: u64 = 1 << 30;

/// What a rank announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub version: u32,
    pub rank: u64,
    pub world: u64,
}

/// The master's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every rank joined and the layout is right.
    Welcome,
    /// Rank `peer` speaks version `theirs`.
    VersionMismatch { peer: u64, theirs: u32 },
    /// Rank `peer` announced world size `theirs`, the master expects `expected`.
    WrongWorldSize {
        peer: u64,
        theirs: u64,
        expected: u64,
    },
    /// Rank `peer` joined twice.
    DuplicateRank { peer: u64, world: u64 },
    /// A process announced rank `peer`, outside the world.
    RankOutOfRange { peer: u64, world: u64 },
    /// The master gave up (a timeout, an I/O error).
    Aborted { cause: String },
}

pub(crate) fn write_hello(w: &mut impl Write, h: Hello) -> io::Result<()> {
    let mut buf = Vec::with_capacity(28);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&h.version.to_le_bytes());
    buf.extend_from_slice(&h.rank.to_le_bytes());
    buf.extend_from_slice(&h.world.to_le_bytes());
    w.write_all(&buf)?;
    w.flush()
}

/// Reads the magic and the version of a frame; `Ok(None)` if the magic is wrong (not one of
/// our processes).
pub(crate) fn read_header(r: &mut impl Read) -> io::Result<Option<u32>> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Ok(None);
    }
    Ok(Some(read_u32(r)?))
}

/// The rest of a hello after its header.
pub(crate) fn read_hello_body(r: &mut impl Read, version: u32) -> io::Result<Hello> {
    Ok(Hello {
        version,
        rank: read_u64(r)?,
        world: read_u64(r)?,
    })
}

pub(crate) fn write_verdict(w: &mut impl Write, version: u32, v: &Verdict) -> io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&version.to_le_bytes());
    match v {
        Verdict::Welcome => buf.push(0),
        Verdict::VersionMismatch { peer, theirs } => {
            buf.push(1);
            buf.extend_from_slice(&peer.to_le_bytes());
            buf.extend_from_slice(&theirs.to_le_bytes());
        }
        Verdict::WrongWorldSize {
            peer,
            theirs,
            expected,
        } => {
            buf.push(2);
            for x in [peer, theirs, expected] {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        Verdict::DuplicateRank { peer, world } => {
            buf.push(3);
            buf.extend_from_slice(&peer.to_le_bytes());
            buf.extend_from_slice(&world.to_le_bytes());
        }
        Verdict::RankOutOfRange { peer, world } => {
            buf.push(4);
            buf.extend_from_slice(&peer.to_le_bytes());
            buf.extend_from_slice(&world.to_le_bytes());
        }
        Verdict::Aborted { cause } => {
            buf.push(5);
            buf.extend_from_slice(&(cause.len() as u64).to_le_bytes());
            buf.extend_from_slice(cause.as_bytes());
        }
    }
    w.write_all(&buf)?;
    w.flush()
}

/// The rest of a verdict after its header.
pub(crate) fn read_verdict_body(r: &mut impl Read) -> io::Result<Verdict> {
    let mut status = [0u8; 1];
    r.read_exact(&mut status)?;
    Ok(match status[0] {
        0 => Verdict::Welcome,
        1 => Verdict::VersionMismatch {
            peer: read_u64(r)?,
            theirs: read_u32(r)?,
        },
        2 => Verdict::WrongWorldSize {
            peer: read_u64(r)?,
            theirs: read_u64(r)?,
            expected: read_u64(r)?,
        },
        3 => Verdict::DuplicateRank {
            peer: read_u64(r)?,
            world: read_u64(r)?,
        },
        4 => Verdict::RankOutOfRange {
            peer: read_u64(r)?,
            world: read_u64(r)?,
        },
        5 => Verdict::Aborted {
            cause: String::from_utf8_lossy(&read_bytes(r)?).into_owned(),
        },
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown verdict status {other}"),
            ));
        }
    })
}

/// A length-prefixed byte string.
pub(crate) fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(bytes)?;
    w.flush()
}

/// Reads a length-prefixed byte string of at most [`MAX_FRAME`] bytes.
pub(crate) fn read_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u64(r)?;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the limit of {MAX_FRAME}"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
