//! Byte-level helpers every transport needs: protobuf varints and
//! varint-length-delimited frames, decoded from hostile input.
//!
//! Decoding never trusts a length before checking it against the caller's
//! limit, and never allocates more than that limit. The buffer forms
//! (`get_varint`, `take_delimited`) are pure; `read_delimited` reads one
//! frame from an `AsyncRead` (a QUIC stream, a TCP socket before
//! encryption).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest encoding of a `u64` varint.
pub const MAX_VARINT_LEN: usize = 10;

/// Why bytes do not decode as a varint or a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A varint longer than ten bytes, or above `u64::MAX`.
    #[error("malformed varint")]
    Varint,
    /// A frame's length prefix exceeds the limit.
    #[error("frame of {size} bytes exceeds the maximum {max}")]
    Oversized {
        /// The length the prefix announced.
        size: u64,
        /// The limit.
        max: usize,
    },
}

/// Why [`read_delimited`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadDelimitedError {
    /// The prefix or the length is bad.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The stream ended inside the frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// Reading failed.
    #[error("reading a frame: {0}")]
    Io(#[source] std::io::Error),
}

/// Appends `value` as an unsigned LEB128 varint (protobuf's encoding).
pub fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The encoded length of `value` as a varint.
pub fn varint_len(value: u64) -> usize {
    // One byte per started group of seven bits; zero still takes a byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Decodes a varint at the start of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the value and its encoded length.
pub fn get_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        // The tenth byte may only carry the top bit of a u64.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(WireError::Varint);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(WireError::Varint)
    } else {
        Ok(None)
    }
}

/// Where the frame at the start of `buf` lies, once its prefix is complete:
/// `(prefix length, body length)`. The body may not have arrived yet; its
/// length is checked against `max` already.
pub fn frame_bounds(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, WireError> {
    let Some((len, prefix)) = get_varint(buf)? else {
        return Ok(None);
    };
    if len > max as u64 {
        return Err(WireError::Oversized { size: len, max });
    }
    Ok(Some((prefix, len as usize)))
}

/// Takes one length-delimited frame body off the front of `buf` when it is
/// complete; leaves `buf` untouched otherwise.
pub fn take_delimited(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, WireError> {
    let Some((prefix, len)) = frame_bounds(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < prefix + len {
        return Ok(None);
    }
    buf.advance(prefix);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads one length-delimited frame of at most `max` bytes from `r`. The
/// prefix is read a byte at a time so nothing past the frame is consumed.
pub async fn read_delimited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Bytes, ReadDelimitedError> {
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let mut n = 0;
    let len = loop {
        prefix[n] = read_u8(r).await?;
        n += 1;
        if let Some((prefix_len, len)) = frame_bounds(&prefix[..n], max)? {
            debug_assert_eq!(prefix_len, n);
            break len;
        }
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(eof_is_truncation)?;
    Ok(Bytes::from(body))
}

async fn read_u8<R: AsyncRead + Unpin>(r: &mut R) -> Result<u8, ReadDelimitedError> {
    r.read_u8().await.map_err(eof_is_truncation)
}

fn eof_is_truncation(e: std::io::Error) -> ReadDelimitedError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadDelimitedError::Truncated
    } else {
        ReadDelimitedError::Io(e)
    }
}

#[cfg(test)]
mod tests;
