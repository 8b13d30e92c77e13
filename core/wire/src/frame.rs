//! Length-prefixed frames: the Kafka wire's outer layer.
//!
//! A frame is a 4-byte big-endian size followed by that many bytes. The size is untrusted: it is
//! checked against a limit before anything is allocated, and the body is read in chunks so that
//! the memory held tracks the bytes that actually arrived, not the bytes that were promised.

use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest chunk read into a frame buffer at once, in bytes.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The size prefix is negative.
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    /// The size prefix is over the limit.
    #[error("frame size {size} is over the limit of {limit} bytes")]
    TooLarge {
        /// Claimed size.
        size: i32,
        /// Configured limit.
        limit: usize,
    },
    /// The connection failed or closed mid-frame.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame of at most `limit` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Bytes, FrameError> {
    let mut size_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut size_buf[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                io::Error::from(io::ErrorKind::UnexpectedEof).into()
            });
        }
        got += n;
    }
    let size = i32::from_be_bytes(size_buf);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size_usize = size as usize;
    if size_usize > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    let mut body = BytesMut::with_capacity(size_usize.min(READ_CHUNK_BYTES));
    while body.len() < size_usize {
        let want = (size_usize - body.len()).min(READ_CHUNK_BYTES);
        body.reserve(want);
        let n = (&mut *r).take(want as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(body.freeze())
}

/// Writes `body` as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let size = i32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 2 GiB"))?;
    w.write_all(&size.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(&read_frame(&mut b, 16).await.unwrap()[..], b"hello");

        a.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::TooLarge { size: i32::MAX, .. })
        ));

        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&(-5i32).to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::NegativeSize(-5))
        ));

        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&100i32.to_be_bytes()).await.unwrap();
        a.write_all(b"short").await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn clean_close_between_frames() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::Closed)
        ));
    }
}
