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
