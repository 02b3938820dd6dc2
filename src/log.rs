//! The one log every connection writes to: locked, buffered, and flushed off the hot path.
//!
//! Every echoed message may log a line, so a line costs one uncontended lock and a copy into a
//! buffer. On a terminal each line is written at once, for a person watching; otherwise (a
//! pipe, a file, journald) a flusher thread writes the buffer out shortly after the first
//! unwritten line, so a busy server issues a few writes a second instead of one per message.
//! The flusher sleeps on a condition variable while nothing is pending: an idle server never
//! wakes up for its log.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// How long a line may wait in the buffer before the flusher writes it.
const FLUSH_DELAY: Duration = Duration::from_millis(50);
/// Past this many buffered bytes the writer flushes inline: memory stays bounded even when
/// the flusher cannot keep up, and a stalled stderr slows the log, never grows it.
const MAX_BUFFERED: usize = 64 * 1024;
/// The longest message text a `recv:` line shows; a 16 MiB message is summarised, not copied.
pub const MAX_LOGGED_TEXT: usize = 512;

/// A cloneable handle to one shared, buffered log sink (stderr in the binary).
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    pending: Condvar,
    flush_each_line: bool,
}

struct State {
    buf: Vec<u8>,
    sink: Box<dyn Write + Send>,
}

impl Log {
    /// The process's stderr: flushed per line on a terminal, by the flusher thread otherwise.
    pub fn stderr() -> Log {
        let terminal = io::stderr().is_terminal();
        Log::new(Box::new(io::stderr()), terminal)
    }

    /// A log over any sink; `flush_each_line` writes every line at once (terminals, tests).
    pub fn new(sink: Box<dyn Write + Send>, flush_each_line: bool) -> Log {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(4096),
                sink,
            }),
            pending: Condvar::new(),
            flush_each_line,
        });
        if !flush_each_line {
            let weak = Arc::downgrade(&shared);
            // A log that cannot start its flusher still works: it flushes when its buffer
            // fills and at `flush`, so the error is not worth failing start-up for.
            let _ = thread::Builder::new()
                .name("log-flusher".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    while let Some(shared) = weak.upgrade() {
                        if !shared.wait_and_flush() {
                            break;
                        }
                    }
                });
        }
        Log { shared }
    }

    /// Appends one line (a newline is added). Errors writing the sink are dropped: a log that
    /// cannot be written must not take connections down with it.
    pub fn line(&self, args: fmt::Arguments<'_>) {
        let mut state = self.shared.lock();
        let was_empty = state.buf.is_empty();
        let _ = state.buf.write_fmt(args);
        state.buf.push(b'\n');
        if self.shared.flush_each_line || state.buf.len() >= MAX_BUFFERED {
            state.flush();
        } else if was_empty {
            self.shared.pending.notify_one();
        }
    }

    /// Writes out everything buffered; call before the process exits.
    pub fn flush(&self) {
        self.shared.lock().flush();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked mid-line leaves at worst a partial line: keep logging.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a first pending line, lets more gather for `FLUSH_DELAY`, writes them out.
    /// Returns false when the log has been dropped by every handle.
    fn wait_and_flush(&self) -> bool {
        let mut state = self.lock();
        while state.buf.is_empty() {
            let (next, timeout) = self
                .pending
                .wait_timeout(state, Duration::from_secs(1))
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if timeout.timed_out() && state.buf.is_empty() {
                return true;
            }
        }
        drop(state);
        thread::sleep(FLUSH_DELAY);
        self.lock().flush();
        true
    }
}

impl State {
    fn flush(&mut self) {
        let _ = self.sink.write_all(&self.buf);
        let _ = self.sink.flush();
        self.buf.clear();
    }
}

/// Message text as a log shows it: control characters escaped so a peer cannot forge log
/// lines, and long texts cut at `MAX_LOGGED_TEXT` bytes with their full size noted.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut cut = text.len().min(MAX_LOGGED_TEXT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let shown = &text[..cut];
        let mut plain_from = 0;
        for (i, c) in shown.char_indices().filter(|(_, c)| c.is_control()) {
            f.write_str(&shown[plain_from..i])?;
            write!(f, "{}", c.escape_default())?;
            plain_from = i + c.len_utf8();
        }
        f.write_str(&shown[plain_from..])?;
        if cut < text.len() {
            write!(f, "… ({} bytes)", text.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(
            Printable("a\nb\tc\u{1b}[31m").to_string(),
            "a\\nb\\tc\\u{1b}[31m"
        );
        let long = "é".repeat(600);
        let shown = Printable(&long).to_string();
        assert!(shown.ends_with("… (1200 bytes)"), "{shown}");
        assert!(shown.len() < 600);
    }
}
