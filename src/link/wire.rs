//! The seam between the transport and the protocol state: what the context reads from and
//! writes to while the lock is held.
//!
//! Plain TCP passes bytes straight through: the reader's raw bytes in, the transport's writer
//! out. A TLS layer belongs here: decrypt the input before the context reads it, encrypt what
//! the context writes before the writer sends it.

use std::io::{self, Read, Write};

/// The reader's bytes in, the transport's writer out.
pub(super) struct Wire<'a, W> {
    pub(super) input: &'a [u8],
    pub(super) writer: &'a mut W,
}

impl<W> Read for Wire<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // "No more bytes for now": the context keeps its partial frame and returns.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.read(buf)?;
        Ok(n)
    }
}

impl<W: Write> Write for Wire<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf).map_err(write_timeout)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(write_timeout)
    }
}

/// A socket write deadline shows up as `WouldBlock`, which would read as "input used up";
/// name it for what it is so it ends the connection instead of being retried.
fn write_timeout(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "write timed out: the peer stopped reading",
        )
    } else {
        e
    }
}
