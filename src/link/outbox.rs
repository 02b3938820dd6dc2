//! Writing to the socket outside the lock, for a connection that one thread reads while other
//! threads write (the client: its reader thread, and the select loop that sends).
//!
//! A writer that held the link's lock while blocked on a full socket would keep the reader
//! from the lock; and a peer that is itself blocked writing to us reads nothing until we read,
//! so neither side would move again until a write timeout. So on an [`OutboxLink`] no thread
//! holds the lock over a socket call, and the reader may always wait for it:
//!
//! - **The lock** (the [`Link`]'s mutex) guards the protocol state. Under it, the context
//!   frames, parses, and writes into an [`Outbox`]: bytes, in the order they were framed,
//!   that nobody has sent yet. It is held for that work only, never over a system call.
//! - **The pen** (a second mutex) is the right to write to the socket. Its holder takes the
//!   outbox's bytes under the lock, lets go of the lock, writes them, and goes on until it
//!   finds the outbox empty; it lets go of the pen in that same turn under the lock. So bytes
//!   a thread queues while the pen is taken are either seen by the holder, or queued after it
//!   let go, and then that thread gets the pen itself.
//! - **Writing threads** take the pen first (waiting for it) and hold it over a whole message,
//!   so the fragments of two messages never interleave; each fragment is framed under the
//!   lock and written out before the next is framed, so a big message never sits whole in
//!   the outbox.
//! - **The reading thread** waits for the lock (never long), hands the context what it read,
//!   and only *tries* the pen for the pongs and close replies that queued: if another thread
//!   holds it, that thread sends them before it lets go. Then the reader goes back to reading
//!   the socket, so a peer blocked writing to us always gets read. Only on its way out (after
//!   sending a Close of its own) does it wait for the pen, so that its Close is on the wire
//!   before it shuts its side.
//!
//! Lock order: pen, then lock. Nobody waits for the pen while holding the lock.
//!
//! TLS happens under the lock, in the transport's wire: the context's frames are encrypted
//! there and the records land in the outbox, so what the pen writes is exactly what goes on
//! the socket, and the TLS state (like the protocol state) is only ever touched under the lock.

use super::session::Outgoing;
use super::wire::write_timeout;
use super::{AnyTransport, DeadlineWriter, Link, Session, Transport};
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, TryLockError};
use tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tungstenite::{Error, Message};

/// How much the reader may leave queued (pongs, close replies) while another thread is
/// blocked writing, before the peer counts as flooding us with pings it does not read the
/// answers to.
const MAX_QUEUED: usize = 1 << 20;
/// The pen's buffer keeps at most this much capacity between writes.
const KEEP: usize = 64 * 1024;

/// What the context wrote under the lock and nobody has sent yet, in order.
#[derive(Default)]
pub(crate) struct Outbox(Vec<u8>);

impl Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The right to write to the socket, and what its holder is writing.
struct Pen {
    writer: DeadlineWriter,
    sending: Vec<u8>,
    /// A write failed part-way: what follows would land inside a frame, so nothing more goes.
    failed: bool,
}

/// A [`Link`] whose frames wait in an [`Outbox`] under the lock and reach the socket outside
/// it (see the module's notes for the protocol).
pub(crate) struct OutboxLink {
    link: Link<AnyTransport>,
    pen: Mutex<Pen>,
}

impl OutboxLink {
    /// A link over `transport` (which writes into its outbox) whose pen writes to `writer`.
    pub(crate) fn new(
        ctx: WebSocketContext,
        role: Role,
        transport: AnyTransport,
        writer: DeadlineWriter,
    ) -> Self {
        OutboxLink {
            link: Link::new(ctx, role, transport),
            pen: Mutex::new(Pen {
                writer,
                sending: Vec::new(),
                failed: false,
            }),
        }
    }

    /// For the reading thread: runs `f` with the lock held (`input` as in [`Link::with`]),
    /// then sends what it queued, unless another thread holds the pen (that one sends it).
    /// The second result is the sending's.
    pub(crate) fn with<T>(
        &self,
        input: &[u8],
        f: impl FnOnce(&mut Session<'_, AnyTransport>) -> T,
    ) -> (T, io::Result<()>) {
        let (value, queued) = self
            .link
            .with_then(input, f, |value, t| (value, t.outbox().0.len()));
        if queued == 0 {
            return (value, Ok(()));
        }
        let sent = match self.pen.try_lock() {
            Ok(pen) => self.write_out(pen),
            Err(TryLockError::Poisoned(poisoned)) => self.write_out(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if queued > MAX_QUEUED => Err(io::Error::other(format!(
                "over {MAX_QUEUED} bytes of pongs and replies queued: the peer pings faster than it reads"
            ))),
            Err(TryLockError::WouldBlock) => Ok(()),
        };
        (value, sent)
    }

    /// For the reading thread on its way out: waits for the pen and sends everything queued.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.write_out(lock(&self.pen))
    }

    /// For a writing thread: sends `message`, holding the pen until all of it is written.
    pub(crate) fn send(&self, message: Message) -> Result<(), Error> {
        let mut pen = lock(&self.pen);
        match Outgoing::of(message) {
            Outgoing::Whole(message) => self.frame_and_write(&mut pen, message)?,
            Outgoing::Fragmented(fragments) => {
                for fragment in fragments {
                    self.frame_and_write(&mut pen, fragment)?;
                }
            }
        }
        Ok(self.write_out(pen)?)
    }

    /// For a writing thread: starts the closing handshake with `frame` and writes it out.
    /// Over TLS, close_notify follows the Close in the same turn: nothing more will be sent
    /// either way.
    pub(crate) fn close(&self, frame: CloseFrame) -> Result<(), Error> {
        let pen = lock(&self.pen);
        let closed = self.link.with_then(
            &[],
            |s| s.close(frame),
            |closed, t| {
                t.goodbye();
                closed
            },
        );
        let sent = self.write_out(pen);
        closed?;
        Ok(sent?)
    }

    /// Frames `message` and takes what is queued in the same turn under the lock, then
    /// writes it; the pen is held.
    fn frame_and_write(&self, pen: &mut Pen, message: Message) -> Result<(), Error> {
        pen.usable()?;
        self.link.with_then(
            &[],
            |s| s.send(message).and_then(|()| s.flush()),
            |framed, t| framed.map(|()| std::mem::swap(&mut t.outbox().0, &mut pen.sending)),
        )?;
        Ok(pen.write()?)
    }

    /// Writes out what is queued until the outbox is empty, then lets go of the pen. It lets
    /// go under the lock, in the turn that found the outbox empty: a thread that queues bytes
    /// later and tries the pen then finds it free (or taken by a thread that will send them).
    fn write_out<'a>(&'a self, pen: MutexGuard<'a, Pen>) -> io::Result<()> {
        let mut held = Some(pen);
        while let Some(mut pen) = held.take() {
            pen.usable()?;
            held = self.link.transport(|t| {
                std::mem::swap(&mut t.outbox().0, &mut pen.sending);
                (!pen.sending.is_empty()).then_some(pen)
            });
            if let Some(pen) = held.as_mut() {
                pen.write()?;
            }
        }
        Ok(())
    }
}

impl Pen {
    /// Fails once a write has failed part-way.
    fn usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write to the peer failed",
            ));
        }
        Ok(())
    }

    /// Writes `sending` to the socket, and empties it.
    fn write(&mut self) -> io::Result<()> {
        let written = self.writer.write_all(&self.sending).map_err(write_timeout);
        self.sending.clear();
        if self.sending.capacity() > KEEP {
            self.sending = Vec::new();
        }
        self.failed = written.is_err();
        written
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;
    use tungstenite::protocol::WebSocket;

    const LIMIT: Duration = Duration::from_secs(60);

    /// A client link over loopback, and the server's end of the socket.
    fn client_link() -> (Arc<OutboxLink>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = Arc::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        let (peer, _) = listener.accept().unwrap();
        stream.set_write_timeout(Some(LIMIT)).unwrap();
        peer.set_read_timeout(Some(LIMIT)).unwrap();
        let ctx = WebSocketContext::new(Role::Client, None);
        let transport = AnyTransport::Plain(Outbox::default());
        let link = OutboxLink::new(ctx, Role::Client, transport, DeadlineWriter(stream));
        (Arc::new(link), peer)
    }

    #[test]
    fn the_reader_gets_the_lock_while_a_writer_is_blocked_and_the_writer_sends_its_pong() {
        let (link, peer) = client_link();
        // Far more than the socket buffers hold, and the peer reads nothing yet.
        let big = vec![7u8; 16 << 20];
        let writer = {
            let (link, big) = (link.clone(), big.clone());
            std::thread::spawn(move || link.send(Message::binary(big)).unwrap())
        };
        while link.pen.try_lock().is_ok() {
            std::thread::yield_now();
        }
        // A ping from the server, read by the reader while the writer holds the pen.
        let (handed_over, done) = mpsc::channel();
        let reader = {
            let link = link.clone();
            std::thread::spawn(move || {
                let (message, sent) = link.with(&[0x89, 0x01, b'p'], |s| {
                    let message = s.next_message();
                    s.flush().map(|()| message)
                });
                handed_over.send(()).unwrap();
                (message.unwrap().unwrap(), sent.unwrap())
            })
        };
        done.recv_timeout(LIMIT)
            .expect("the reader waited for a writer blocked on the socket");
        assert!(matches!(reader.join().unwrap().0, Some(Message::Ping(_))));
        // The peer now reads: the whole message, and the pong (between fragments or after).
        let mut server = WebSocket::from_raw_socket(peer, Role::Server, None);
        let (mut got_big, mut got_pong) = (false, false);
        while !(got_big && got_pong) {
            match server.read().expect("the big message and the pong") {
                Message::Binary(data) => got_big = data == big,
                Message::Pong(data) => got_pong = data == b"p"[..],
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.join().unwrap();
    }
}
