//! The locked protocol state of one connection: tungstenite's context, the writer, and the
//! frame boundary, behind one mutex; [`Session`] is the connection while that lock is held.

use super::boundary::Boundary;
use super::wire::{AtRest, Transport};
use std::io;
use std::sync::{Mutex, MutexGuard, TryLockError};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tungstenite::{Bytes, Error, Message};

/// Messages larger than this are sent as fragments of this size, so that echoing a 16 MiB
/// message never needs a 16 MiB write buffer (tungstenite copies each frame into it whole).
const FRAGMENT: usize = 64 * 1024;

/// The protocol state and the writing half of one connection, shared by every thread that
/// may send on it. `W` is the transport: plain TCP's writer, or TLS (see `wire.rs`).
pub(crate) struct Link<W> {
    inner: Mutex<Inner<W>>,
}

struct Inner<W> {
    ctx: WebSocketContext,
    role: Role,
    writer: W,
    boundary: Boundary,
}

impl<W: Transport> Link<W> {
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

    /// Like [`Link::with`], then `then` with what `f` returned and the transport itself, in
    /// the same turn under the lock (the client takes what its turn wrote out of its outbox).
    pub(crate) fn with_then<T, U>(
        &self,
        input: &[u8],
        f: impl FnOnce(&mut Session<'_, W>) -> T,
        then: impl FnOnce(T, &mut W) -> U,
    ) -> U {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let value = run(&mut guard, input, f);
        then(value, &mut guard.writer)
    }

    /// Runs `f` on the transport alone, under the lock.
    pub(crate) fn transport<T>(&self, f: impl FnOnce(&mut W) -> T) -> T {
        f(&mut self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .writer)
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

    /// Tells the peer, below the WebSocket layer, that nothing more will come (TLS
    /// close_notify), once the connection is over. Nothing at all for plain TCP.
    pub(crate) fn goodbye(&self) {
        if W::SAYS_GOODBYE {
            self.inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .writer
                .goodbye();
        }
    }
}

fn run<W: Transport, T>(
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
    f(&mut Session {
        ctx,
        role: *role,
        wire: writer.wire(input, boundary),
    })
}

/// The connection while its lock is held: read the messages in the input, send, close.
pub(crate) struct Session<'a, W: Transport + 'a> {
    ctx: &'a mut WebSocketContext,
    role: Role,
    wire: W::Wire<'a>,
}

impl<W: Transport> Session<'_, W> {
    /// The next complete message in the input, or `None` once the input is used up and the
    /// reader must fetch more bytes. Pongs and close replies the context queued are sent here.
    pub(crate) fn next_message(&mut self) -> Result<Option<Message>, Error> {
        match self.ctx.read(&mut self.wire) {
            Ok(message) => Ok(Some(message)),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Queues `message`; it reaches the socket at [`Session::flush`] or once the write
    /// buffer fills, so a batch of echoes costs one write. Messages over 64 KiB go out as
    /// 64 KiB fragments (the peer receives the same message, type and bytes).
    pub(crate) fn send(&mut self, message: Message) -> Result<(), Error> {
        match Outgoing::of(message) {
            Outgoing::Whole(message) => self.ctx.write(&mut self.wire, message),
            Outgoing::Fragmented(fragments) => {
                for fragment in fragments {
                    self.ctx.write(&mut self.wire, fragment)?;
                }
                Ok(())
            }
        }
    }

    /// Replaces the protocol state with a fresh one when nothing is in flight: no partial
    /// frame, no fragmented message, no Close. tungstenite keeps the capacity its buffers
    /// grew to for the largest message ever seen; this is how a connection that echoed
    /// 16 MiB gives that memory back once it goes quiet. Returns whether it did.
    pub(crate) fn renew(&mut self) -> bool {
        if !self.wire.at_rest() || !self.ctx.can_write() {
            return false;
        }
        let config = *self.ctx.get_config();
        *self.ctx = WebSocketContext::new(self.role, Some(config));
        true
    }

    /// Writes out everything queued, including pongs and close replies.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.ctx.flush(&mut self.wire)
    }

    /// Starts the closing handshake with `frame` and writes it out.
    pub(crate) fn close(&mut self, frame: CloseFrame) -> Result<(), Error> {
        self.ctx.close(&mut self.wire, Some(frame))
    }

    /// False once either side has sent a Close: no data may be sent after it.
    pub(crate) fn can_write(&self) -> bool {
        self.ctx.can_write()
    }
}

/// How [`Session::send`] sends a message: whole, or (a data message over 64 KiB) as 64 KiB
/// fragments of one message. A writer that writes each frame out before it frames the next
/// sends them one by one.
pub(crate) enum Outgoing {
    Whole(Message),
    Fragmented(Fragments),
}

impl Outgoing {
    pub(crate) fn of(message: Message) -> Outgoing {
        let (data, kind) = match message {
            Message::Text(text) if text.len() > FRAGMENT => (Bytes::from(text), OpData::Text),
            Message::Binary(data) if data.len() > FRAGMENT => (data, OpData::Binary),
            small => return Outgoing::Whole(small),
        };
        Outgoing::Fragmented(Fragments {
            data,
            kind,
            start: 0,
        })
    }
}

/// The fragments of one big data message, in order, each a whole frame.
pub(crate) struct Fragments {
    data: Bytes,
    kind: OpData,
    start: usize,
}

impl Iterator for Fragments {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let start = self.start;
        if start >= self.data.len() {
            return None;
        }
        let end = (start + FRAGMENT).min(self.data.len());
        let opcode = OpCode::Data(if start == 0 {
            self.kind
        } else {
            OpData::Continue
        });
        self.start = end;
        let fragment = Frame::message(self.data.slice(start..end), opcode, end == self.data.len());
        Some(Message::Frame(fragment))
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
        let mut from = super::super::wire::Wire {
            input: &wire,
            writer: &mut Vec::new(),
            boundary: &Boundary::default(),
        };
        assert_eq!(reader.read(&mut from).unwrap(), Message::binary(big));
        assert_eq!(wire[0], 0x02, "first frame: binary, not final");
    }
}
