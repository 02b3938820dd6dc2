//! The seam between the transport and the protocol state: what the context reads from and
//! writes to while the lock is held.
//!
//! A [`Transport`] is the writing half a [`Link`](super::Link) keeps under its lock, and it
//! makes the wire for one turn. Plain TCP (any `Write`, in practice a
//! [`DeadlineWriter`](super::DeadlineWriter)) passes bytes straight through: the reader's raw
//! bytes in, the writer out. TLS ([`TlsTransport`]) decrypts the input before the context
//! reads it and encrypts what the context writes before the writer sends it. The link is
//! generic over the transport, so the plain path compiles to what it was before TLS existed.
//!
//! Either way the `Boundary` follows the bytes the context reads: for plain TCP that is the
//! input itself, for TLS the plaintext the session hands out.

use super::boundary::Boundary;
use super::outbox::Outbox;
use std::io::{self, Read, Write};

/// The writing half of a connection as its link holds it.
pub(crate) trait Transport {
    /// What the context reads from and writes to for one turn under the lock.
    type Wire<'a>: Read + Write + AtRest
    where
        Self: 'a;

    /// Whether this transport says goodbye below the WebSocket layer (TLS close_notify).
    const SAYS_GOODBYE: bool = false;

    /// The wire over `input` (bytes the reader just read from the socket) for one turn.
    fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> Self::Wire<'a>;

    /// Tells the peer nothing more will come (TLS close_notify); nothing for plain TCP.
    fn goodbye(&mut self) {}

    /// Takes the bytes that came behind the handshake, which the head's reader read ahead
    /// (plaintext, as the context reads them), and returns the input of a first turn that
    /// reads them, or `None` when there is nothing to read. Plain TCP: those bytes are that
    /// input. TLS: they go back into the session, and the first turn, with no input, reads
    /// them and whatever rustls decrypted along with the handshake.
    fn first_input(&mut self, early: Vec<u8>) -> Option<Vec<u8>>;
}

/// Whether the protocol state holds nothing in flight, judged by the bytes it was fed.
pub(crate) trait AtRest {
    fn at_rest(&self) -> bool;
}

impl<W: Write> Transport for W {
    type Wire<'a>
        = Wire<'a, W>
    where
        W: 'a;

    fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> Wire<'a, W> {
        boundary.feed(input);
        Wire {
            input,
            writer: self,
            boundary,
        }
    }

    fn first_input(&mut self, early: Vec<u8>) -> Option<Vec<u8>> {
        (!early.is_empty()).then_some(early)
    }
}

/// The reader's bytes in, the transport's writer out.
pub(crate) struct Wire<'a, W> {
    pub(super) input: &'a [u8],
    pub(super) writer: &'a mut W,
    pub(super) boundary: &'a Boundary,
}

impl<W> AtRest for Wire<'_, W> {
    fn at_rest(&self) -> bool {
        self.boundary.at_rest()
    }
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
pub(super) fn write_timeout(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "write timed out: the peer stopped reading",
        )
    } else {
        e
    }
}

/// A transport chosen per connection at run time (the client: `ws://` or `wss://`, directly
/// or through a proxy's TLS). The server's connections are generic instead, so its plain path
/// has no branch to take.
///
/// It writes into an [`Outbox`], never to the socket: the client's
/// [`OutboxLink`](super::OutboxLink) sends what collects there outside the lock. Under TLS the
/// outbox holds the encrypted records, exactly the bytes that go on the socket.
pub(crate) enum AnyTransport {
    Plain(Outbox),
    /// Boxed: a TLS session is over a kilobyte.
    #[cfg(feature = "tls")]
    Tls(Box<TlsTransport<Outbox>>),
    /// TLS to the target inside TLS to a proxy.
    #[cfg(feature = "tls")]
    Nested(Box<NestedTransport>),
}

impl AnyTransport {
    /// What this turn and earlier ones wrote and nobody has sent yet.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        match self {
            AnyTransport::Plain(outbox) => outbox,
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => &mut t.sink,
            #[cfg(feature = "tls")]
            AnyTransport::Nested(t) => &mut t.sink,
        }
    }
}

/// [`AnyTransport`]'s wire for one turn.
pub(crate) enum AnyWire<'a> {
    Plain(Wire<'a, Outbox>),
    #[cfg(feature = "tls")]
    Tls(tls::TlsWire<'a, &'a mut Outbox>),
    #[cfg(feature = "tls")]
    Nested(tls::TlsWire<'a, crate::tls::Stream<'a, &'a mut Outbox>>),
}

impl Transport for AnyTransport {
    type Wire<'a> = AnyWire<'a>;

    const SAYS_GOODBYE: bool = cfg!(feature = "tls");

    fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> AnyWire<'a> {
        match self {
            AnyTransport::Plain(w) => AnyWire::Plain(w.wire(input, boundary)),
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => AnyWire::Tls(t.wire(input, boundary)),
            #[cfg(feature = "tls")]
            AnyTransport::Nested(t) => AnyWire::Nested(t.wire(input, boundary)),
        }
    }

    fn goodbye(&mut self) {
        match self {
            AnyTransport::Plain(_) => {}
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => t.goodbye(),
            #[cfg(feature = "tls")]
            AnyTransport::Nested(t) => t.goodbye(),
        }
    }

    fn first_input(&mut self, early: Vec<u8>) -> Option<Vec<u8>> {
        match self {
            AnyTransport::Plain(w) => w.first_input(early),
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => t.first_input(early),
            #[cfg(feature = "tls")]
            AnyTransport::Nested(t) => t.first_input(early),
        }
    }
}

/// Forwards to the wire of the transport chosen.
macro_rules! any_wire {
    ($self:ident, $w:ident => $e:expr) => {
        match $self {
            AnyWire::Plain($w) => $e,
            #[cfg(feature = "tls")]
            AnyWire::Tls($w) => $e,
            #[cfg(feature = "tls")]
            AnyWire::Nested($w) => $e,
        }
    };
}

impl AtRest for AnyWire<'_> {
    fn at_rest(&self) -> bool {
        any_wire!(self, w => w.at_rest())
    }
}

impl Read for AnyWire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        any_wire!(self, w => w.read(buf))
    }
}

impl Write for AnyWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        any_wire!(self, w => w.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        any_wire!(self, w => w.flush())
    }
}

#[cfg(feature = "tls")]
pub(crate) use tls::{NestedTransport, TlsTransport};

#[cfg(feature = "tls")]
mod tls {
    use super::{AtRest, Boundary, Outbox, Transport, write_timeout};
    use crate::link::DeadlineWriter;
    use crate::tls;
    use std::io::{self, Read, Write};

    /// A TLS connection's writing half: the session's state and where its records go (the
    /// socket's writer, or the client's outbox). One [`tls::Stream`] per turn borrows both
    /// with the bytes the reader handed over.
    pub(crate) struct TlsTransport<S = DeadlineWriter> {
        pub(crate) session: tls::Session,
        pub(crate) sink: S,
    }

    impl<S: Write> Transport for TlsTransport<S> {
        type Wire<'a>
            = TlsWire<'a, &'a mut S>
        where
            S: 'a;

        const SAYS_GOODBYE: bool = true;

        fn wire<'a>(
            &'a mut self,
            input: &'a [u8],
            boundary: &'a mut Boundary,
        ) -> TlsWire<'a, &'a mut S> {
            TlsWire {
                stream: self.session.stream(input, &mut self.sink),
                boundary,
                outer_error: None,
            }
        }

        fn goodbye(&mut self) {
            let _ = self.session.send_close_notify(&mut self.sink);
        }

        fn first_input(&mut self, early: Vec<u8>) -> Option<Vec<u8>> {
            self.session.unread(early).then(Vec::new)
        }
    }

    /// TLS to the target inside TLS to a proxy (`wss://` through an `https://` proxy): the
    /// outer session's plaintext is the inner session's records.
    ///
    /// Each turn first decrypts everything the reader handed over with the outer session,
    /// then runs the inner one over that; what the inner session writes is encrypted again
    /// by the outer one on its way to the outbox. The reader still reads the raw socket
    /// outside the lock, exactly as for one layer.
    pub(crate) struct NestedTransport {
        /// TLS to the target.
        inner: tls::Session,
        /// TLS to the proxy.
        outer: tls::Session,
        /// The inner session's records, as the outer one decrypted them this turn.
        records: Vec<u8>,
        pub(crate) sink: Outbox,
    }

    impl NestedTransport {
        /// Both sessions once their handshakes are done; records the outer session already
        /// decrypted go to the inner one first.
        pub(crate) fn new(mut inner: tls::Session, mut outer: tls::Session) -> Self {
            let mut records = Vec::new();
            outer.take_plaintext(&mut records);
            inner.feed_later(&records);
            NestedTransport {
                inner,
                outer,
                records,
                sink: Outbox::default(),
            }
        }
    }

    impl Transport for NestedTransport {
        type Wire<'a> = TlsWire<'a, tls::Stream<'a, &'a mut Outbox>>;

        const SAYS_GOODBYE: bool = true;

        /// Not inlined: its 8 KiB buffer would otherwise widen the stack frame of every
        /// client turn, plain and TLS ones too.
        #[inline(never)]
        fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> Self::Wire<'a> {
            self.records.clear();
            let outer_error = {
                let mut outer = self.outer.stream(input, &mut self.sink);
                let mut chunk = [0u8; 8192];
                loop {
                    match outer.read(&mut chunk) {
                        Ok(n @ 1..) => self.records.extend_from_slice(&chunk[..n]),
                        // The proxy's close_notify; the reader sees the socket end next.
                        Ok(_) => break None,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                        Err(e) => break Some(e),
                    }
                }
            };
            TlsWire {
                stream: self
                    .inner
                    .stream(&self.records, self.outer.stream(&[], &mut self.sink)),
                boundary,
                outer_error,
            }
        }

        fn goodbye(&mut self) {
            let _ = self
                .inner
                .send_close_notify(&mut self.outer.stream(&[], &mut self.sink));
            let _ = self.outer.send_close_notify(&mut self.sink);
        }

        fn first_input(&mut self, early: Vec<u8>) -> Option<Vec<u8>> {
            self.inner.unread(early);
            // The records moved over from the outer session wait in the inner one's backlog,
            // which only a turn feeds: always run one.
            Some(Vec::new())
        }
    }

    /// One turn's TLS stream, with the boundary fed the plaintext the context reads. `W` is
    /// where the stream's records go: a writer, or an outer session's stream.
    pub(crate) struct TlsWire<'a, W: Write> {
        stream: tls::Stream<'a, W>,
        boundary: &'a mut Boundary,
        /// How the outer session failed this turn (TLS inside TLS): reported once the inner
        /// session has handed out what the outer one decrypted before that.
        outer_error: Option<io::Error>,
    }

    impl<W: Write> AtRest for TlsWire<'_, W> {
        fn at_rest(&self) -> bool {
            self.boundary.at_rest()
        }
    }

    impl<W: Write> Read for TlsWire<'_, W> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.stream.read(buf) {
                // The peer's close_notify: nothing more to decrypt. The reading thread sees
                // the TCP connection end next, as it would without TLS.
                Ok(0) if !buf.is_empty() => Err(self.used_up()),
                Ok(n) => {
                    self.boundary.feed(&buf[..n]);
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(self.used_up()),
                Err(e) => Err(e),
            }
        }
    }

    impl<W: Write> TlsWire<'_, W> {
        /// The error that ends a read once this turn's plaintext is used up.
        fn used_up(&mut self) -> io::Error {
            self.outer_error
                .take()
                .unwrap_or_else(|| io::ErrorKind::WouldBlock.into())
        }
    }

    impl<W: Write> Write for TlsWire<'_, W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.stream.write(buf).map_err(write_timeout)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.stream.flush().map_err(write_timeout)
        }
    }
}
