//! One connection's TLS, driven by hand so that it fits the connection layer's split: one
//! thread blocks reading the socket *outside* the connection's lock and gets raw bytes; under
//! the lock those bytes are decrypted and handed on, and every writer encrypts and writes its
//! records out. `rustls::StreamOwned` needs `&mut` to read and to write at once, which is
//! exactly what the split exists to avoid, so a [`Session`] owns only the TLS state, and each
//! turn under the lock borrows the bytes just read and the writer as a [`Stream`].
//!
//! Before that split exists (the TLS handshake, the HTTP request or response head), the
//! connection belongs to one thread: [`Session::handshake`] runs the handshake against a
//! deadline, and [`Blocking`] reads and writes plaintext straight over the socket.

use super::error::{Error, to_io};
use super::{sniff, subject};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// The TLS state of one connection.
#[derive(Debug)]
pub struct Session {
    pub(super) conn: Connection,
    /// Raw TLS bytes the reader handed over that rustls did not take yet (it takes more only
    /// once the plaintext it holds has been read); fed before the next input. Empty, and
    /// without an allocation, nearly always.
    backlog: Vec<u8>,
    /// Plaintext that was read ahead before the connection was split (what the reader of the
    /// request or response head took past the head's end), handed out before anything rustls
    /// holds. Empty, and without an allocation, nearly always.
    unread: Vec<u8>,
}

impl Session {
    /// A client session for `host` (a DNS name, or an IP address with or without brackets):
    /// it is sent as SNI (not for IP addresses) and checked against the certificate's names.
    pub fn client(config: Arc<ClientConfig>, host: &str) -> Result<Self, Error> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| Error::BadServerName(host.to_owned()))?;
        let conn = ClientConnection::new(config, name).map_err(Error::Tls)?;
        Ok(Session::new(conn.into()))
    }

    /// A server session.
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, Error> {
        let conn = ServerConnection::new(config).map_err(Error::Tls)?;
        Ok(Session::new(conn.into()))
    }

    fn new(conn: Connection) -> Self {
        Session {
            conn,
            backlog: Vec::new(),
            unread: Vec::new(),
        }
    }

    /// Runs the handshake over `socket` until it completes or `deadline` passes (the socket's
    /// read and write timeouts are set to what is left before each read and write, and left
    /// so: the caller sets its own afterwards). Application data that arrived with the
    /// handshake's last flight stays in the session for the first read.
    ///
    /// On a failure the peer is sent the TLS alert that says why, except when it does not
    /// speak TLS ([`Error::NotTls`]): then nothing is written, so that the caller may answer
    /// in the peer's own protocol (plain HTTP).
    pub fn handshake(&mut self, socket: &TcpStream, deadline: Instant) -> Result<(), Error> {
        let mut watch = FirstByte {
            socket,
            first: None,
        };
        loop {
            while self.conn.wants_write() {
                socket.set_write_timeout(Some(left(deadline)?))?;
                self.conn.write_tls(&mut &*socket)?;
            }
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            socket.set_read_timeout(Some(left(deadline)?))?;
            match self.conn.read_tls(&mut watch) {
                Ok(0) if watch.not_tls() => return Err(Error::NotTls),
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = self.conn.process_new_packets() {
                if watch.not_tls() {
                    return Err(Error::NotTls);
                }
                // Tell the peer why, if that still fits in the deadline.
                if let Ok(left) = left(deadline) {
                    let _ = socket.set_write_timeout(Some(left));
                    let _ = self.write_pending(&mut &*socket);
                }
                return Err(e.into());
            }
        }
    }

    /// Runs the handshake over `io`, which keeps a deadline of its own: TLS to the target
    /// inside TLS to a proxy, where `io` is the proxy's session over the socket. Otherwise as
    /// [`Session::handshake`].
    pub fn handshake_over<S: Read + Write>(&mut self, io: S) -> Result<(), Error> {
        let mut watch = FirstByte {
            socket: io,
            first: None,
        };
        loop {
            while self.conn.wants_write() {
                self.conn
                    .write_tls(&mut watch.socket)
                    .map_err(Error::from_io)?;
            }
            watch.socket.flush().map_err(Error::from_io)?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            match self.conn.read_tls(&mut watch) {
                Ok(0) if watch.not_tls() => return Err(Error::NotTls),
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from_io(e)),
            }
            if let Err(e) = self.conn.process_new_packets() {
                if watch.not_tls() {
                    return Err(Error::NotTls);
                }
                let _ = self.write_pending(&mut watch.socket);
                return Err(e.into());
            }
        }
    }

    /// The session over `input` (bytes just read from the socket) and `sink` (where its
    /// records go: the socket's writing half, or an outer TLS session's stream), for one turn
    /// under the connection's lock.
    pub fn stream<'a, W: Write>(&'a mut self, input: &'a [u8], sink: W) -> Stream<'a, W> {
        Stream {
            session: self,
            input,
            sink,
        }
    }

    /// The session over a socket that one thread owns (the HTTP head before the upgrade).
    pub fn blocking<'a, S: Read + Write>(&'a mut self, socket: S) -> Blocking<'a, S> {
        Blocking {
            session: self,
            socket,
        }
    }

    /// Writes every TLS record rustls has queued (handshake messages, alerts, encrypted data)
    /// to `sink`.
    ///
    /// The sinks here are trait objects, as rustls takes them: one copy of this code serves
    /// every kind of sink (the socket, the client's outbox, a proxy's session) at the cost of
    /// an indirect call next to a record's encryption.
    pub fn write_pending(&mut self, sink: &mut dyn Write) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sink) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Tells the peer we will send nothing more (TLS close_notify) and writes it out.
    pub fn send_close_notify(&mut self, sink: &mut dyn Write) -> io::Result<()> {
        self.conn.send_close_notify();
        self.write_pending(sink)
    }

    /// Puts `plaintext` back in front of what the session will hand out: the bytes that came
    /// behind a request or response head which the head's reader took off the session.
    /// Returns whether there is plaintext waiting to be read at all (those bytes, or what
    /// rustls decrypted along with the handshake): once the connection is split, only new
    /// bytes from the socket start a turn, so the caller must run a first turn to read it.
    pub fn unread(&mut self, mut plaintext: Vec<u8>) -> bool {
        if !self.unread.is_empty() {
            plaintext.extend_from_slice(&self.unread);
        }
        self.unread = plaintext;
        // An error here comes again with the next input, and ends the connection then.
        let waiting = self
            .conn
            .process_new_packets()
            .map_or(true, |state| state.plaintext_bytes_to_read() > 0);
        !self.unread.is_empty() || waiting
    }

    /// Moves the plaintext rustls decrypted so far onto `out`: an outer session's plaintext is
    /// an inner session's records (TLS inside a proxy's TLS).
    pub fn take_plaintext(&mut self, out: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = self.read_plain(&mut chunk) {
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Takes `records` (TLS bytes) ahead of the next input, as if the reader had handed them
    /// over already.
    pub fn feed_later(&mut self, records: &[u8]) {
        self.backlog.extend_from_slice(records);
    }

    /// Keeps `input` (TLS bytes rustls did not take this turn) for the next turn, unless the
    /// peer has sent close_notify: rustls takes nothing after it (RFC 8446, 6.1: data after
    /// a closure alert is ignored), so a peer that goes on sending would otherwise grow the
    /// backlog without bound.
    #[cold]
    fn keep(&mut self, input: &[u8]) {
        if self
            .conn
            .process_new_packets()
            .is_ok_and(|state| state.peer_has_closed())
        {
            return;
        }
        self.backlog.extend_from_slice(input);
    }

    /// Whether rustls has records queued for the peer.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The subject of the certificate the peer presented and we verified (a client's, under
    /// mutual TLS), as `CN=…, O=…`; `None` if it sent none.
    pub fn peer_subject(&self) -> Option<String> {
        let cert = self.conn.peer_certificates()?.first()?;
        subject::subject(cert)
    }

    /// The certificate the peer presented (its own, not the chain), if any.
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.conn.peer_certificates()?.first()
    }

    /// The application protocol both sides agreed on (ALPN), if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The plaintext rustls holds, else the TLS bytes left from earlier input, else `input`,
    /// fed to rustls until there is plaintext to read or nothing left to feed. Returns false
    /// when there was nothing to feed.
    fn feed(&mut self, input: &mut &[u8], sink: &mut dyn Write) -> io::Result<bool> {
        let mut fed = false;
        loop {
            let source: &mut dyn Read = if !self.backlog.is_empty() {
                &mut Backlog(&mut self.backlog)
            } else if !input.is_empty() {
                input
            } else {
                return Ok(fed);
            };
            // Never with an empty source: rustls takes a read of 0 for the peer's EOF.
            match self.conn.read_tls(source) {
                Ok(_) => fed = true,
                // rustls holds as much plaintext as it takes: hand that over first.
                Err(_) if fed => return Ok(true),
                Err(e) => return Err(e),
            }
            match self.conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => return Ok(true),
                Ok(state) if state.peer_has_closed() => return Ok(true),
                Ok(_) => {}
                Err(e) => {
                    let _ = self.write_pending(sink);
                    return Err(to_io(e));
                }
            }
        }
    }

    /// Plaintext from rustls: `Ok(0)` once the peer sent close_notify, `WouldBlock` when
    /// there is none for now.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.unread.is_empty() {
            return Ok(self.take_unread(buf));
        }
        self.conn.reader().read(buf)
    }

    /// Hands out plaintext put back with [`Session::unread`]: once per connection at most,
    /// so kept out of the way of every other read.
    #[cold]
    fn take_unread(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.unread.len());
        buf[..n].copy_from_slice(&self.unread[..n]);
        self.unread.drain(..n);
        if self.unread.is_empty() {
            self.unread = Vec::new();
        }
        n
    }

    /// Encrypts `buf` and writes the records to `sink`. rustls owns what it accepted: when
    /// writing the records fails after that, the accepted count is still returned (so the
    /// caller does not send the bytes twice) and the failure comes back at the next write or
    /// flush, which tries to write the same records again.
    fn write_plain(&mut self, buf: &[u8], sink: &mut dyn Write) -> io::Result<usize> {
        self.write_pending(sink)?;
        let n = self.conn.writer().write(buf)?;
        let _ = self.write_pending(sink);
        Ok(n)
    }
}

/// What is left before `deadline`, or a time-out error once it has passed.
fn left(deadline: Instant) -> Result<std::time::Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::TimedOut);
    }
    Ok(left)
}

/// Reads a socket (or what stands for one) for rustls and remembers the first byte the peer
/// sent, to tell a peer that does not speak TLS from one that speaks it badly.
struct FirstByte<R> {
    socket: R,
    first: Option<u8>,
}

impl<R> FirstByte<R> {
    fn not_tls(&self) -> bool {
        self.first.is_some_and(|b| !sniff::is_tls_record_type(b))
    }
}

impl<R: Read> Read for FirstByte<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        if self.first.is_none() && n > 0 {
            self.first = Some(buf[0]);
        }
        Ok(n)
    }
}

/// Reads the session's leftover TLS bytes, removing what was read.
struct Backlog<'a>(&'a mut Vec<u8>);

impl Read for Backlog<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

/// One turn under the connection's lock: reads decrypt the bytes the reader handed over
/// (`WouldBlock` once they are used up, as the plain connection's input does), writes encrypt
/// and go out to the sink. Input rustls could not take yet is kept for the next turn.
pub struct Stream<'a, W: Write> {
    session: &'a mut Session,
    input: &'a [u8],
    sink: W,
}

impl<W: Write> Read for Stream<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.read_plain(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            if !self.session.feed(&mut self.input, &mut self.sink)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl<W: Write> Write for Stream<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.write_plain(buf, &mut self.sink)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.write_pending(&mut self.sink)?;
        self.sink.flush()
    }
}

impl<W: Write> Drop for Stream<'_, W> {
    fn drop(&mut self) {
        if !self.input.is_empty() {
            self.session.keep(self.input);
        }
    }
}

/// The session over a socket one thread owns: reads block on the socket until there is
/// plaintext (`Ok(0)` after the peer's close_notify; an `UnexpectedEof` error if it closed
/// without one), writes encrypt and write the records out at once.
pub struct Blocking<'a, S: Read + Write> {
    session: &'a mut Session,
    socket: S,
}

impl<S: Read + Write> Blocking<'_, S> {
    /// Tells the peer we will send nothing more (TLS close_notify) and writes it out.
    pub fn send_close_notify(&mut self) -> io::Result<()> {
        self.session.send_close_notify(&mut self.socket)
    }
}

impl<S: Read + Write> Read for Blocking<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.read_plain(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            if self.session.feed(&mut &[][..], &mut self.socket)? {
                continue;
            }
            if self.session.conn.read_tls(&mut self.socket)? == 0 {
                // rustls now knows of the EOF: the next read_plain says how it ended.
                continue;
            }
            if let Err(e) = self.session.conn.process_new_packets() {
                let _ = self.session.write_pending(&mut self.socket);
                return Err(to_io(e));
            }
        }
    }
}

impl<S: Read + Write> Write for Blocking<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.session.write_plain(buf, &mut self.socket)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.write_pending(&mut self.socket)?;
        self.socket.flush()
    }
}
