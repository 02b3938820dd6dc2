//! One WebSocket connection that one thread reads while other threads write.
//!
//! tungstenite's `WebSocket<S>` needs `&mut` to read and to write, so a thread blocked in
//! `read` holds the socket and nobody else could send: not the server's Close on shutdown, not
//! the client's tick while its reader waits. So the protocol state (`WebSocketContext`) and
//! the writing half of the transport live together behind one mutex in a [`Link`], and the
//! reading thread blocks on the socket *outside* that lock, in a [`ReadBuf`]. It then hands
//! the bytes it read to the context under the lock, through [`Session`]. Every frame, whoever
//! sends it, goes through the one context while the lock is held, so frames never interleave,
//! and pongs and close replies go out in the same turn as the bytes that asked for them.
//!
//! The transport is the writer `W` plus whatever the reader reads: plain TCP today (both are
//! the same `TcpStream`, one descriptor). TLS slots in here without touching the echo loop or
//! the select loop: the reader still reads raw bytes outside the lock, and the locked side
//! gains a decrypting step before the bytes reach the context (rustls is, like the context, a
//! state machine fed with bytes).

use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Error, Message};

/// Messages larger than this are sent as fragments of this size, so that echoing a 16 MiB
/// message never needs a 16 MiB write buffer (tungstenite copies each frame into it whole).
const FRAGMENT: usize = 64 * 1024;

/// The tungstenite configuration both sides use, for these message and frame limits.
pub(crate) fn config(max_message: usize, max_frame: usize) -> WebSocketConfig {
    /// Messages sent in one turn gather up to this much before they are written out.
    const WRITE_BATCH: usize = 64 * 1024;
    WebSocketConfig::default()
        // The reader hands over at most what one read returned; a small codec buffer keeps
        // tungstenite from zero-filling 128 KiB before every read.
        .read_buffer_size(1024)
        .write_buffer_size(WRITE_BATCH)
        // One batch plus one whole message (with its frame header): a peer that stops
        // reading costs at most this much before the write deadline drops it.
        .max_write_buffer_size(WRITE_BATCH.saturating_add(max_message).saturating_add(16))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_frame))
}

/// The protocol state and the writing half of one connection, shared by every thread that
/// may send on it.
pub(crate) struct Link<W> {
    inner: Mutex<Inner<W>>,
}

struct Inner<W> {
    ctx: WebSocketContext,
    role: Role,
    writer: W,
    boundary: Boundary,
}

impl<W: Write> Link<W> {
    pub(crate) fn new(ctx: WebSocketContext, role: Role, writer: W) -> Self {
        let boundary = Boundary::default();
        Link {
            inner: Mutex::new(Inner {
                ctx,
                role,
                writer,
                boundary,
            }),
        }
    }

    /// Runs `f` with the connection locked; `input` holds the bytes the reader just read
    /// (empty for a thread that only writes).
    pub(crate) fn with<T>(&self, input: &[u8], f: impl FnOnce(&mut Session<'_, W>) -> T) -> T {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        run(&mut guard, input, f)
    }

    /// Like [`Link::with`], but gives up at once (without touching `input`) if another thread
    /// holds the lock: it may be blocked writing to a peer that is itself waiting for us to
    /// read.
    pub(crate) fn try_with<T>(
        &self,
        input: &[u8],
        f: impl FnOnce(&mut Session<'_, W>) -> T,
    ) -> Option<T> {
        let mut guard = match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(run(&mut guard, input, f))
    }
}

fn run<W: Write, T>(
    guard: &mut MutexGuard<'_, Inner<W>>,
    input: &[u8],
    f: impl FnOnce(&mut Session<'_, W>) -> T,
) -> T {
    let Inner {
        ctx,
        role,
        writer,
        boundary,
    } = &mut **guard;
    boundary.feed(input);
    f(&mut Session {
        ctx,
        role: *role,
        boundary,
        io: Io { input, writer },
    })
}

/// The connection while its lock is held: read the messages in the input, send, close.
pub(crate) struct Session<'a, W> {
    ctx: &'a mut WebSocketContext,
    role: Role,
    boundary: &'a Boundary,
    io: Io<'a, W>,
}

impl<W: Write> Session<'_, W> {
    /// The next complete message in the input, or `None` once the input is used up and the
    /// reader must fetch more bytes. Pongs and close replies the context queued are sent here.
    pub(crate) fn next_message(&mut self) -> Result<Option<Message>, Error> {
        match self.ctx.read(&mut self.io) {
            Ok(message) => Ok(Some(message)),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Queues `message`; it reaches the socket at [`Session::flush`] or once the write
    /// buffer fills, so a batch of echoes costs one write. Messages over 64 KiB go out as
    /// 64 KiB fragments (the peer receives the same message, type and bytes).
    pub(crate) fn send(&mut self, message: Message) -> Result<(), Error> {
        let (data, kind) = match message {
            Message::Text(text) if text.len() > FRAGMENT => (Bytes::from(text), OpData::Text),
            Message::Binary(data) if data.len() > FRAGMENT => (data, OpData::Binary),
            small => return self.ctx.write(&mut self.io, small),
        };
        let mut start = 0;
        while start < data.len() {
            let end = (start + FRAGMENT).min(data.len());
            let opcode = OpCode::Data(if start == 0 { kind } else { OpData::Continue });
            let fragment = Frame::message(data.slice(start..end), opcode, end == data.len());
            self.ctx.write(&mut self.io, Message::Frame(fragment))?;
            start = end;
        }
        Ok(())
    }

    /// Replaces the protocol state with a fresh one when nothing is in flight: no partial
    /// frame, no fragmented message, no Close. tungstenite keeps the capacity its buffers
    /// grew to for the largest message ever seen; this is how a connection that echoed
    /// 16 MiB gives that memory back once it goes quiet. Returns whether it did.
    pub(crate) fn renew(&mut self) -> bool {
        if !self.boundary.at_rest() || !self.ctx.can_write() {
            return false;
        }
        let config = *self.ctx.get_config();
        *self.ctx = WebSocketContext::new(self.role, Some(config));
        true
    }

    /// Writes out everything queued, including pongs and close replies.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.ctx.flush(&mut self.io)
    }

    /// Starts the closing handshake with `frame` and writes it out.
    pub(crate) fn close(&mut self, frame: CloseFrame) -> Result<(), Error> {
        self.ctx.close(&mut self.io, Some(frame))
    }

    /// False once either side has sent a Close: no data may be sent after it.
    pub(crate) fn can_write(&self) -> bool {
        self.ctx.can_write()
    }
}

/// What the context reads from and writes to while the lock is held: the reader's bytes in,
/// the transport's writer out.
struct Io<'a, W> {
    input: &'a [u8],
    writer: &'a mut W,
}

impl<W> Read for Io<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // "No more bytes for now": the context keeps its partial frame and returns.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.read(buf)?;
        Ok(n)
    }
}

impl<W: Write> Write for Io<'_, W> {
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

/// The longest frame header (RFC 6455: 2 + 8 length + 4 mask bytes).
const MAX_HEADER: usize = 14;

/// Where the peer's byte stream stands between frames, read with tungstenite's own header
/// parser: only so that [`Session::renew`] knows when the context holds nothing in flight.
#[derive(Default)]
struct Boundary {
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The start of a frame header split across reads.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Inside a fragmented data message (control frames may come in between).
    fragmented: bool,
    /// The stream stopped making sense; the context will refuse it too. Never at rest again.
    lost: bool,
}

impl Boundary {
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let take = self.payload_left.min(input.len() as u64) as usize;
                self.payload_left -= take as u64;
                input = &input[take..];
                continue;
            }
            let have = self.header_len;
            let add = (MAX_HEADER - have).min(input.len());
            self.header[have..have + add].copy_from_slice(&input[..add]);
            let mut cursor = Cursor::new(&self.header[..have + add]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    input = &input[cursor.position() as usize - have..];
                    self.header_len = 0;
                    self.payload_left = len;
                    if let OpCode::Data(_) = header.opcode {
                        self.fragmented = !header.is_final;
                    }
                }
                Ok(None) if add > 0 => {
                    self.header_len = have + add;
                    input = &input[add..];
                }
                Ok(None) | Err(_) => self.lost = true,
            }
        }
    }

    fn at_rest(&self) -> bool {
        !self.lost && self.payload_left == 0 && self.header_len == 0 && !self.fragmented
    }
}

/// The writing half of a TCP connection, for a [`Link`]: the reading thread reads the same
/// descriptor outside the lock (`&TcpStream` reads and writes without `&mut`).
///
/// The socket's send timeout (`SO_SNDTIMEO`, the write timeout) bounds each `send` call, and
/// tungstenite calls again with what is left after a partial write: on its own that would let
/// a peer that reads a trickle hold its thread and write buffer forever. So once a write has
/// come back short (its timeout ran out part-way, or a stop and continue cut it short), the
/// rest must go out within one more write timeout: a whole write (at most 64 KiB plus one
/// 64 KiB fragment) gets between one and two. No clock is read and no syscall added while
/// writes go out whole.
pub(crate) struct Tcp(pub(crate) Arc<TcpStream>);

impl Tcp {
    /// Sends the rest of `buf` after a short write, within one more write timeout (read back
    /// from the socket, then set back on it).
    fn finish(&self, buf: &[u8], mut done: usize) -> io::Result<usize> {
        let mut stream = &*self.0;
        let Some(timeout) = stream.write_timeout()? else {
            // No timeout: only a stop and continue cuts a send short; send the rest.
            stream.write_all(&buf[done..])?;
            return Ok(buf.len());
        };
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write timed out: the peer is not reading fast enough",
                ));
            }
            if let Err(e) = stream.set_write_timeout(Some(left)) {
                break Err(e);
            }
            match stream.write(&buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if done + n == buf.len() => break Ok(buf.len()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The timeout ran out with nothing more sent: the deadline has passed.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break Err(e),
            }
        };
        let _ = stream.set_write_timeout(Some(timeout));
        result
    }
}

impl Write for Tcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = loop {
            match (&*self.0).write(buf) {
                // A signal (Ctrl-C, SIGTERM) cut a blocked send short: not the peer's doing,
                // and the handler decides what happens next.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                sent => break sent?,
            }
        };
        match sent {
            n if n == buf.len() || n == 0 => Ok(n),
            n => self.finish(buf, n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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

/// Closes our side after a final answer (an HTTP error, our failing Close), then drains what the peer still sends for a moment,
/// so the kernel does not reset the connection (and discard our answer) over unread bytes.
pub(crate) fn linger(stream: &TcpStream) {
    const LINGER: Duration = Duration::from_secs(1);
    const MAX_DRAIN: usize = 1 << 20;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buf = ReadBuf::new();
    let mut drained = 0;
    while drained < MAX_DRAIN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match buf.read_from(stream) {
            Ok([]) | Err(_) => return,
            Ok(bytes) => drained += bytes.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;

    /// A masked client frame, as a browser would send it.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// A server-side link that writes into a Vec.
    fn server_link() -> Link<Vec<u8>> {
        Link::new(
            WebSocketContext::new(Role::Server, None),
            Role::Server,
            Vec::new(),
        )
    }

    #[test]
    fn split_input_yields_a_message_only_when_complete() {
        let link = server_link();
        let frame = client_frame(0x1, b"hello");
        let (head, tail) = frame.split_at(4);
        link.with(head, |s| assert_eq!(s.next_message().unwrap(), None));
        link.with(tail, |s| {
            assert_eq!(s.next_message().unwrap(), Some(Message::text("hello")));
            assert_eq!(s.next_message().unwrap(), None);
        });
    }

    #[test]
    fn ping_in_input_is_answered_with_a_pong_on_the_writer() {
        let link = server_link();
        link.with(&client_frame(0x9, b"p"), |s| {
            assert!(matches!(s.next_message(), Ok(Some(Message::Ping(_)))));
            assert_eq!(s.next_message().unwrap(), None);
            s.flush().unwrap();
        });
        let written = link.inner.lock().unwrap().writer.clone();
        assert_eq!(written, vec![0x8a, 0x01, b'p']);
    }

    #[test]
    fn renews_only_between_messages() {
        let link = server_link();
        let text = client_frame(0x1, b"whole");
        let (head, tail) = text.split_at(3);
        link.with(head, |s| {
            assert_eq!(s.next_message().unwrap(), None);
            assert!(!s.renew(), "mid-frame");
        });
        link.with(tail, |s| {
            assert_eq!(s.next_message().unwrap(), Some(Message::text("whole")));
            assert!(s.renew(), "between messages");
        });
        // First fragment of a message, then a ping in between: still inside the message.
        let mut input = client_frame(0x1, b"frag")[..].to_vec();
        input[0] &= 0x7f;
        input.extend(client_frame(0x9, b""));
        link.with(&input, |s| {
            assert!(matches!(s.next_message(), Ok(Some(Message::Ping(_)))));
            assert!(!s.renew(), "inside a fragmented message");
        });
        link.with(&client_frame(0x0, b"ment"), |s| {
            assert_eq!(s.next_message().unwrap(), Some(Message::text("fragment")));
            assert!(s.renew(), "after the last fragment");
        });
    }

    #[test]
    fn big_messages_go_out_as_fragments_of_one_message() {
        let link = server_link();
        let big = vec![5u8; FRAGMENT * 2 + 1];
        link.with(&[], |s| {
            s.send(Message::binary(big.clone())).unwrap();
            s.flush().unwrap();
        });
        let wire = link.inner.lock().unwrap().writer.clone();
        let mut reader = WebSocketContext::new(Role::Client, None);
        let mut io = Io {
            input: &wire,
            writer: &mut Vec::new(),
        };
        assert_eq!(reader.read(&mut io).unwrap(), Message::binary(big));
        assert_eq!(wire[0], 0x02, "first frame: binary, not final");
    }

    /// A connected pair on loopback whose writer has a small send buffer, so that a write of
    /// 1 MiB has to wait for the peer and each read of it frees room at once. (A small receive
    /// buffer on the peer would stall loopback TCP itself: the sender waits for a window as
    /// large as one it saw before.) Returns the writer (with a `timeout` write timeout) and
    /// the peer.
    fn small_buffered_pair(timeout: Duration) -> (Tcp, TcpStream) {
        #[allow(unsafe_code)]
        fn small_send_buffer(s: &TcpStream) {
            use std::os::fd::AsRawFd;
            let size: libc::c_int = 4096;
            // SAFETY: a valid socket and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "setsockopt: {}", io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        small_send_buffer(&stream);
        stream.set_write_timeout(Some(timeout)).unwrap();
        (Tcp(Arc::new(stream)), peer)
    }

    /// Reads `peer` in `chunk`-byte bites with `pause` between them, until EOF or an error;
    /// returns how much it read.
    fn read_slowly(
        mut peer: TcpStream,
        pause: Duration,
        chunk: usize,
    ) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; chunk];
            let mut got = 0;
            while let Ok(n @ 1..) = peer.read(&mut buf) {
                got += n;
                std::thread::sleep(pause);
            }
            got
        })
    }

    #[test]
    fn a_peer_that_never_reads_fails_the_write_within_two_timeouts() {
        let (mut tcp, _peer) = small_buffered_pair(Duration::from_millis(200));
        let start = Instant::now();
        let err = tcp.write(&vec![0u8; 1 << 20]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_peer_that_reads_a_trickle_fails_the_write_although_every_send_made_progress() {
        // 1 KiB every 10 ms (100 KB/s): 1 MiB would take ten seconds, or longer, while the
        // write should fail after about two timeouts (0.4 s).
        let (mut tcp, peer) = small_buffered_pair(Duration::from_millis(200));
        let reader = read_slowly(peer, Duration::from_millis(10), 1024);
        let start = Instant::now();
        let err = tcp.write(&vec![0u8; 1 << 20]).unwrap_err();
        let took = start.elapsed();
        drop(tcp);
        let got = reader.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(took < Duration::from_secs(5), "failed only after {took:?}");
        assert!(
            got > 8 * 1024,
            "the peer read only {got} bytes: it was not trickling"
        );
    }

    #[test]
    fn a_write_that_stalls_once_and_then_goes_out_succeeds_whole() {
        // The peer reads nothing for longer than the timeout (as if we had been stopped and
        // continued), then everything at once: the first send comes back short, the rest
        // goes out within the second timeout.
        // The peer wakes 0.3 s after the first timeout and has 1.2 s to read the rest: room
        // for a loaded machine to wake it late.
        let timeout = Duration::from_millis(1500);
        let (mut tcp, peer) = small_buffered_pair(timeout);
        let (started, running) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            started.send(()).unwrap();
            std::thread::sleep(timeout + Duration::from_millis(300));
            read_slowly(peer, Duration::ZERO, 64 * 1024).join().unwrap()
        });
        running.recv().unwrap();
        let big = vec![7u8; 1 << 20];
        assert_eq!(tcp.write(&big).unwrap(), big.len());
        drop(tcp);
        assert_eq!(reader.join().unwrap(), big.len());
    }

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
