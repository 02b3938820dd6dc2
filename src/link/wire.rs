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

/// A transport chosen per connection at run time (the client: `ws://` or `wss://`). The
/// server's connections are generic instead, so its plain path has no branch to take.
///
/// It writes into an [`Outbox`], never to the socket: the client's
/// [`OutboxLink`](super::OutboxLink) sends what collects there outside the lock. Under TLS the
/// outbox holds the encrypted records, exactly the bytes that go on the socket.
pub(crate) enum AnyTransport {
    Plain(Outbox),
    /// Boxed: a TLS session is over a kilobyte.
    #[cfg(feature = "tls")]
    Tls(Box<TlsTransport<Outbox>>),
}

impl AnyTransport {
    /// What this turn and earlier ones wrote and nobody has sent yet.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        match self {
            AnyTransport::Plain(outbox) => outbox,
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => &mut t.sink,
        }
    }
}

/// [`AnyTransport`]'s wire for one turn.
pub(crate) enum AnyWire<'a> {
    Plain(Wire<'a, Outbox>),
    #[cfg(feature = "tls")]
    Tls(tls::TlsWire<'a, Outbox>),
}

impl Transport for AnyTransport {
    type Wire<'a> = AnyWire<'a>;

    const SAYS_GOODBYE: bool = cfg!(feature = "tls");

    fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> AnyWire<'a> {
        match self {
            AnyTransport::Plain(w) => AnyWire::Plain(w.wire(input, boundary)),
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => AnyWire::Tls(t.wire(input, boundary)),
        }
    }

    fn goodbye(&mut self) {
        match self {
            AnyTransport::Plain(_) => {}
            #[cfg(feature = "tls")]
            AnyTransport::Tls(t) => t.goodbye(),
        }
    }
}

impl AtRest for AnyWire<'_> {
    fn at_rest(&self) -> bool {
        match self {
            AnyWire::Plain(w) => w.at_rest(),
            #[cfg(feature = "tls")]
            AnyWire::Tls(w) => w.at_rest(),
        }
    }
}

impl Read for AnyWire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AnyWire::Plain(w) => w.read(buf),
            #[cfg(feature = "tls")]
            AnyWire::Tls(w) => w.read(buf),
        }
    }
}

impl Write for AnyWire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AnyWire::Plain(w) => w.write(buf),
            #[cfg(feature = "tls")]
            AnyWire::Tls(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            AnyWire::Plain(w) => w.flush(),
            #[cfg(feature = "tls")]
            AnyWire::Tls(w) => w.flush(),
        }
    }
}

#[cfg(feature = "tls")]
pub(crate) use tls::TlsTransport;

#[cfg(feature = "tls")]
mod tls {
    use super::{AtRest, Boundary, Transport, write_timeout};
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
            = TlsWire<'a, S>
        where
            S: 'a;

        const SAYS_GOODBYE: bool = true;

        fn wire<'a>(&'a mut self, input: &'a [u8], boundary: &'a mut Boundary) -> TlsWire<'a, S> {
            TlsWire {
                stream: self.session.stream(input, &mut self.sink),
                boundary,
            }
        }

        fn goodbye(&mut self) {
            let _ = self.session.send_close_notify(&mut self.sink);
        }
    }

    /// One turn's TLS stream, with the boundary fed the plaintext the context reads.
    pub(crate) struct TlsWire<'a, S: Write> {
        stream: tls::Stream<'a, S>,
        boundary: &'a mut Boundary,
    }

    impl<S: Write> AtRest for TlsWire<'_, S> {
        fn at_rest(&self) -> bool {
            self.boundary.at_rest()
        }
    }

    impl<S: Write> Read for TlsWire<'_, S> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.stream.read(buf) {
                // The peer's close_notify: nothing more to decrypt. The reading thread sees
                // the TCP connection end next, as it would without TLS.
                Ok(0) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                Ok(n) => {
                    self.boundary.feed(&buf[..n]);
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        }
    }

    impl<S: Write> Write for TlsWire<'_, S> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.stream.write(buf).map_err(write_timeout)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.stream.flush().map_err(write_timeout)
        }
    }
}
