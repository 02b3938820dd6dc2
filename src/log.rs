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
/// Past this many buffered bytes, lines are dropped (and counted) until the flusher has
/// written the buffer: memory stays bounded, and a stalled stderr never stalls an echo.
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
    /// Taken while `state` is held (always in that order), so batches reach the sink in the
    /// order they were buffered; the flusher then lets go of `state` and writes, so lines
    /// can be appended while a slow stderr is being written to.
    sink: Mutex<Box<dyn Write + Send>>,
    pending: Condvar,
    flush_each_line: bool,
}

struct State {
    buf: Vec<u8>,
    /// Lines dropped since the last write because the buffer was full (stderr too slow).
    dropped: u64,
    /// The flusher is asleep on the condition variable: only then does a line wake it (a
    /// notify costs a system call even when nobody waits).
    flusher_waiting: bool,
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
                dropped: 0,
                flusher_waiting: false,
            }),
            sink: Mutex::new(sink),
            pending: Condvar::new(),
            flush_each_line,
        });
        if !flush_each_line {
            // The flusher lives as long as the process: a log is made once, at start.
            let shared = shared.clone();
            // A log that cannot start its flusher still works: it flushes when its buffer
            // fills and at `flush`, so the error is not worth failing start-up for.
            let _ = thread::Builder::new()
                .name("log-flusher".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut batch = Vec::with_capacity(4096);
                    loop {
                        shared.wait_and_flush(&mut batch);
                    }
                });
        }
        Log { shared }
    }

    /// Appends one line (a newline is added). Errors writing the sink are dropped: a log that
    /// cannot be written must not take connections down with it.
    pub fn line(&self, args: fmt::Arguments<'_>) {
        self.append(|buf| {
            let _ = buf.write_fmt(args);
        });
    }

    /// `recv: TEXT`, the per-message line, written without `core::fmt`: it is on the echo
    /// path, where formatting machinery would cost more than the echo itself.
    pub fn recv_text(&self, text: &str) {
        self.append(|buf| {
            buf.extend(*b"recv: ");
            push_printable(buf, text);
        });
    }

    /// `recv: N bytes binary`, likewise; put together on the stack, copied in one go.
    pub fn recv_binary(&self, len: usize) {
        const PREFIX: &[u8; 6] = b"recv: ";
        const SUFFIX: &[u8; 13] = b" bytes binary";
        let mut line = [0u8; PREFIX.len() + 20 + SUFFIX.len()];
        line[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut at = PREFIX.len() + push_decimal(&mut line[PREFIX.len()..PREFIX.len() + 20], len);
        line[at..at + SUFFIX.len()].copy_from_slice(SUFFIX);
        at += SUFFIX.len();
        self.append(|buf| buf.extend_from_slice(&line[..at]));
    }

    /// Appends one line written by `write` (a newline is added), under the one lock.
    fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.shared.lock();
        if state.buf.len() >= MAX_BUFFERED && self.shared.drop_line(&mut state) {
            return;
        }
        let was_empty = state.buf.is_empty();
        write(&mut state.buf);
        state.buf.push(b'\n');
        self.after_append(state, was_empty);
    }

    /// Writes out at once on a terminal; else wakes the flusher for the first line of a batch.
    fn after_append(&self, mut state: MutexGuard<'_, State>, was_empty: bool) {
        if self.shared.flush_each_line {
            self.shared.write_out(&mut state.buf);
        } else if was_empty && state.flusher_waiting {
            self.shared.pending.notify_one();
        }
    }

    /// Writes out everything buffered; call before the process exits.
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        self.shared.write_out(&mut state.buf);
    }

    /// [`Log::flush`], given up after `limit`: a stderr nobody reads must not keep the
    /// process from exiting.
    pub fn flush_within(&self, limit: Duration) {
        let log = self.clone();
        let (done, finished) = crossbeam_channel::bounded(1);
        let flushing = thread::Builder::new()
            .name("log-last-flush".into())
            .spawn(move || {
                log.flush();
                let _ = done.send(());
            });
        if flushing.is_ok() {
            let _ = finished.recv_timeout(limit);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked mid-line leaves at worst a partial line: keep logging.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a first pending line, lets more gather for `FLUSH_DELAY`, then writes them
    /// out from `batch` (swapped with the buffer) without holding the buffer's lock.
    fn wait_and_flush(&self, batch: &mut Vec<u8>) {
        let mut state = self.lock();
        while state.buf.is_empty() {
            state.flusher_waiting = true;
            state = self
                .pending
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.flusher_waiting = false;
        }
        drop(state);
        thread::sleep(FLUSH_DELAY);
        let mut state = self.lock();
        std::mem::swap(&mut state.buf, batch);
        let dropped = std::mem::take(&mut state.dropped);
        let mut sink = self.sink_lock();
        drop(state);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "log: {dropped} lines dropped: stderr is not keeping up"
            );
        }
        write_to(&mut **sink, batch);
    }

    /// With the buffer full, counts the line as dropped (unless each line is written at
    /// once anyway). Connections never wait for stderr: a pipe nobody reads would otherwise
    /// stop every echo.
    #[cold]
    fn drop_line(&self, state: &mut State) -> bool {
        if self.flush_each_line {
            return false;
        }
        state.dropped += 1;
        true
    }

    fn sink_lock(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        self.sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes `buf` out while the caller holds `state`.
    fn write_out(&self, buf: &mut Vec<u8>) {
        write_to(&mut **self.sink_lock(), buf);
    }
}

/// Writes and empties `buf`; errors are dropped (see [`Log::line`]).
fn write_to(sink: &mut dyn Write, buf: &mut Vec<u8>) {
    let _ = sink.write_all(buf);
    let _ = sink.flush();
    buf.clear();
}

/// Appends `text` as [`Printable`] shows it, copying it straight when it has nothing to
/// escape (the common case, checked eight bytes at a time).
fn push_printable(buf: &mut Vec<u8>, text: &str) {
    if text.len() <= MAX_LOGGED_TEXT && !needs_escaping(text.as_bytes()) {
        buf.extend_from_slice(text.as_bytes());
    } else {
        let _ = write!(buf, "{}", Printable(text));
    }
}

/// Whether `bytes` may hold a control character: a byte below 0x20, 0x7f, or 0xc2 (which
/// starts U+0080..U+00BF, the C1 controls among them). A false alarm only costs the slow path.
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Sets a byte's high bit where that byte of `x` is zero (exact for the lowest such byte,
    // which is all a yes/no answer needs).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        let x = u64::from_le_bytes(*word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        // Printable ASCII first, in fewer steps: a high bit means non-ASCII, and with none
        // set, adding one sets a high bit exactly where a byte was 0x7f.
        if (x | x.wrapping_add(ONES)) & HIGHS | below_space == 0 {
            continue;
        }
        if below_space | zero_byte(x ^ (ONES * 0x7f)) | zero_byte(x ^ (ONES * 0xc2)) != 0 {
            return true;
        }
    }
    rest.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2)
}

/// Writes `n` in decimal at the start of `out` (20 bytes hold any `usize`); returns the length.
fn push_decimal(out: &mut [u8], n: usize) -> usize {
    let mut len = 1;
    let mut rest = n / 10;
    while rest > 0 {
        len += 1;
        rest /= 10;
    }
    let mut n = n;
    for slot in out[..len].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    len
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
        write!(f, "{}", Escaped(&text[..cut]))?;
        if cut < text.len() {
            write!(f, "… ({} bytes)", text.len())?;
        }
        Ok(())
    }
}

/// Text from a peer with its control characters escaped (`\n`, `\u{1b}`), whole: what
/// [`Printable`] shows without the cut. A peer's text goes through this wherever it is shown
/// to a person, so it can neither forge a line nor send escape sequences to a terminal.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut plain_from = 0;
        for (i, c) in text.char_indices().filter(|(_, c)| c.is_control()) {
            f.write_str(&text[plain_from..i])?;
            write!(f, "{}", c.escape_default())?;
            plain_from = i + c.len_utf8();
        }
        f.write_str(&text[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lines_match_the_formatted_ones() {
        let texts = [
            "plain text",
            "",
            "tab\there",
            "del\u{7f}",
            "c1 \u{85} here",
            "é ü ß 世界",
            "x".repeat(600).as_str(),
            "12345678\n",
        ]
        .map(str::to_owned);
        for text in &texts {
            let mut fast = Vec::new();
            push_printable(&mut fast, text);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                Printable(text).to_string(),
                "{text:?}"
            );
        }
        for n in [0, 7, 10, 1234567890, usize::MAX] {
            let mut out = [0u8; 20];
            let len = push_decimal(&mut out, n);
            assert_eq!(&out[..len], n.to_string().as_bytes());
        }
        assert!(needs_escaping(b"0123456\x1f"));
        assert!(needs_escaping(b"\x00"));
        assert!(!needs_escaping("plain ascii and é ü".as_bytes()));
    }

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
