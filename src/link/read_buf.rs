//! The reading thread's buffer.

use std::io::{self, Read};

/// The reading thread's buffer: small and inline while a connection is quiet (it lives in
/// the echo loop's stack frame, in pages the handshake already touched, so an idle connection
/// holds no read buffer on the heap), and a heap buffer that doubles while big messages flow,
/// so they need few `read` calls. [`ReadBuf::shrink`] gives that back when things go quiet.
pub(crate) struct ReadBuf {
    small: [u8; Self::MIN],
    big: Vec<u8>,
}

impl ReadBuf {
    /// What a quiet connection reads into.
    pub(crate) const MIN: usize = 1024;
    /// The most one `read` asks for.
    pub(crate) const MAX: usize = 256 * 1024;

    pub(crate) fn new() -> Self {
        ReadBuf {
            small: [0; Self::MIN],
            big: Vec::new(),
        }
    }

    /// One `read` from `source`; an empty slice means the peer closed its side.
    pub(crate) fn read_from(&mut self, mut source: impl Read) -> io::Result<&[u8]> {
        if self.big.is_empty() {
            let n = source.read(&mut self.small)?;
            if n == Self::MIN {
                // The peer had more to say than fitted: ask for more from the next read on.
                self.big = vec![0; 2 * Self::MIN];
            }
            return Ok(&self.small[..n]);
        }
        let n = source.read(&mut self.big)?;
        if n == self.big.len() && n < Self::MAX {
            // Growing keeps the bytes just read, so they are returned intact.
            self.big.resize(2 * n, 0);
        }
        Ok(&self.big[..n])
    }

    /// Gives a grown buffer back once the connection has gone quiet.
    pub(crate) fn shrink(&mut self) {
        self.big = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buffer_grows_when_filled_and_shrinks_when_asked() {
        let mut buf = ReadBuf::new();
        let data: Vec<u8> = (0..8 * ReadBuf::MIN).map(|i| i as u8).collect();
        let mut source = &data[..];
        let mut got = Vec::new();
        for expected_len in [1, 2, 4] {
            let bytes = buf.read_from(&mut source).unwrap();
            assert_eq!(bytes.len(), expected_len * ReadBuf::MIN);
            got.extend_from_slice(bytes);
        }
        assert_eq!(got, &data[..7 * ReadBuf::MIN]);
        assert_eq!(buf.big.len(), 8 * ReadBuf::MIN);
        buf.shrink();
        assert_eq!(buf.read_from(&b"x"[..]).unwrap(), b"x");
        assert!(buf.big.is_empty());
    }
}
