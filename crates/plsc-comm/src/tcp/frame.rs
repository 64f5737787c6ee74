//! Frames of the TCP communicator (little-endian lengths, element data in native byte order:
//! every process of a job runs on the same architecture).
//!
//! - request (rank -> hub): descriptor words (`u64` count, then the words), payload bytes
//!   (`u64` length, then the bytes);
//! - reply (hub -> rank): status `u8`, then by status: `0` ok: counts (`u64` count, then the
//!   counts) and result bytes; `1` refused: the validation failure; `2` a peer left: peer
//!   `u64` and reason; `3` timeout: the missing peer `u64` and the wait in ms `u64`.

use std::io::{self, Read, Write};

use crate::call::Failure;
use crate::call::codec;
use crate::element::DType;
use crate::rendezvous::wire::{read_bytes, read_u64, write_bytes};

/// What the hub answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The collective ran: per-rank counts (variable-count all-gather only) and result bytes.
    Ok { counts: Vec<usize>, bytes: Vec<u8> },
    /// Validation refused the round (the same failure on every rank).
    Refused(Failure),
    /// A rank left (its connection broke) during the round.
    PeerLeft { peer: usize, reason: String },
    /// The hub's timeout passed waiting for `peer`.
    Timeout { peer: usize, waited_ms: u64 },
}

fn write_words(w: &mut impl Write, words: &[u64]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 * (words.len() + 1));
    buf.extend_from_slice(&(words.len() as u64).to_le_bytes());
    for x in words {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&buf)
}

fn read_words(r: &mut impl Read) -> io::Result<Vec<u64>> {
    let bytes = read_bytes_of(r, 8)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Reads a `u64` count of items of `size` bytes and the items.
fn read_bytes_of(r: &mut impl Read, size: usize) -> io::Result<Vec<u8>> {
    let n = read_u64(r)?;
    let len = n
        .checked_mul(size as u64)
        .filter(|&l| l <= crate::rendezvous::wire::MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    write_bytes(w, s.as_bytes())
}

fn read_string(r: &mut impl Read) -> io::Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes(r)?).into_owned())
}

/// Writes a request: the descriptor words and the payload parts, concatenated.
pub(crate) fn write_request(
    w: &mut impl Write,
    words: &[u64],
    payload: &[&[u8]],
) -> io::Result<()> {
    write_words(w, words)?;
    let len: usize = payload.iter().map(|p| p.len()).sum();
    w.write_all(&(len as u64).to_le_bytes())?;
    for p in payload {
        w.write_all(p)?;
    }
    w.flush()
}

/// Reads a request.
pub(crate) fn read_request(r: &mut impl Read) -> io::Result<(Vec<u64>, Vec<u8>)> {
    let words = read_words(r)?;
    let payload = read_bytes_of(r, 1)?;
    Ok((words, payload))
}

pub(crate) fn write_reply(w: &mut impl Write, reply: &Reply) -> io::Result<()> {
    match reply {
        Reply::Ok { counts, bytes } => {
            w.write_all(&[0])?;
            let words: Vec<u64> = counts.iter().map(|&c| c as u64).collect();
            write_words(w, &words)?;
            write_bytes(w, bytes)?;
        }
        Reply::Refused(f) => {
            w.write_all(&[1])?;
            match f {
                Failure::Mismatch(s) => {
                    w.write_all(&[0])?;
                    write_string(w, s)?;
                }
                Failure::BadLength(s) => {
                    w.write_all(&[1])?;
                    write_string(w, s)?;
                }
                Failure::DType(d) => {
                    w.write_all(&[2])?;
                    let words: Vec<u64> = d.iter().map(|&t| codec::dtype_code(t)).collect();
                    write_words(w, &words)?;
                }
                Failure::BadRank(b) => {
                    w.write_all(&[3])?;
                    w.write_all(&(*b as u64).to_le_bytes())?;
                }
            }
        }
        Reply::PeerLeft { peer, reason } => {
            w.write_all(&[2])?;
            w.write_all(&(*peer as u64).to_le_bytes())?;
            write_string(w, reason)?;
        }
        Reply::Timeout { peer, waited_ms } => {
            w.write_all(&[3])?;
            w.write_all(&(*peer as u64).to_le_bytes())?;
            w.write_all(&waited_ms.to_le_bytes())?;
        }
    }
    w.flush()
}

pub(crate) fn read_reply(r: &mut impl Read) -> io::Result<Reply> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let usize_of = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    Ok(match tag[0] {
        0 => {
            let counts = read_words(r)?.into_iter().map(usize_of).collect();
            Reply::Ok {
                counts,
                bytes: read_bytes(r)?,
            }
        }
        1 => {
            r.read_exact(&mut tag)?;
            Reply::Refused(match tag[0] {
                0 => Failure::Mismatch(read_string(r)?),
                1 => Failure::BadLength(read_string(r)?),
                2 => Failure::DType(
                    read_words(r)?
                        .into_iter()
                        .map(|c| codec::dtype_of(c).ok_or_else(|| bad("unknown dtype")))
                        .collect::<io::Result<Vec<DType>>>()?,
                ),
                3 => Failure::BadRank(usize_of(read_u64(r)?)),
                _ => return Err(bad("unknown failure kind")),
            })
        }
        2 => Reply::PeerLeft {
            peer: usize_of(read_u64(r)?),
            reason: read_string(r)?,
        },
        3 => Reply::Timeout {
            peer: usize_of(read_u64(r)?),
            waited_ms: read_u64(r)?,
        },
        _ => return Err(bad("unknown reply status")),
    })
}
