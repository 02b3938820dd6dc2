//! Closing a socket without losing the last thing we said on it.

use super::{ReadBuf, ReadTimeout};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Closes our side after a final answer (an HTTP error, our failing Close), then drains what
/// the peer still sends for a moment, so the kernel does not reset the connection (and discard
/// our answer) over unread bytes.
pub(crate) fn close_gently(stream: &TcpStream) {
    const DRAIN_FOR: Duration = Duration::from_secs(1);
    const MAX_DRAIN: usize = 1 << 20;
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN_FOR;
    let mut timeout = ReadTimeout::new();
    let mut buf = ReadBuf::new();
    let mut drained = 0;
    while drained < MAX_DRAIN {
        if timeout.until(stream, deadline).is_err() {
            return;
        }
        match buf.read_from(stream) {
            Ok([]) | Err(_) => return,
            Ok(bytes) => drained += bytes.len(),
        }
    }
}
