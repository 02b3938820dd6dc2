//! A socket's read timeout, set only when it changes.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The read timeout last set on one socket, so that setting the same one again costs no
/// system call: while messages flow, an echo loop asks for the same timeout before every
/// read. Every thread that reads a socket with a timeout goes through one of these.
#[derive(Default)]
pub(crate) struct ReadTimeout {
    armed: Option<Duration>,
}

impl ReadTimeout {
    /// For a socket whose read timeout this has not set yet.
    pub(crate) fn new() -> Self {
        ReadTimeout::default()
    }

    /// Makes the socket's reads give up after `timeout` (at least a millisecond: zero would
    /// mean "never").
    pub(crate) fn set(&mut self, stream: &TcpStream, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        if self.armed != Some(timeout) {
            stream.set_read_timeout(Some(timeout))?;
            self.armed = Some(timeout);
        }
        Ok(())
    }

    /// Makes the socket's next read give up at `deadline`; fails with `TimedOut` once it has
    /// passed.
    pub(crate) fn until(&mut self, stream: &TcpStream, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.set(stream, left)
    }
}

/// A socket that one thread reads before the connection is split, every read bounded by one
/// deadline for the whole exchange. A TLS session reads the socket as often as a record needs
/// (a peer may trickle one byte at a time), so the deadline is set again before each read.
#[cfg(feature = "tls")]
pub(crate) struct UntilDeadline<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
    timeout: ReadTimeout,
}

#[cfg(feature = "tls")]
impl<'a> UntilDeadline<'a> {
    pub(crate) fn new(stream: &'a TcpStream, deadline: Instant) -> Self {
        UntilDeadline {
            stream,
            deadline,
            timeout: ReadTimeout::new(),
        }
    }
}

#[cfg(feature = "tls")]
impl io::Read for UntilDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.timeout.until(self.stream, self.deadline)?;
            match (&*self.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                read => return read,
            }
        }
    }
}

#[cfg(feature = "tls")]
impl io::Write for UntilDeadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match (&*self.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                written => return written,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
