//! Connecting: TCP with a deadline, tungstenite's client handshake, and the two ends of the
//! connection it yields: a [`Reader`] for one thread and a [`Writer`] for any other.

use super::error::Error;
use super::handshake;
use super::proxy::{self, ProxyChoice};
use super::target::Target;
use crate::link::{
    AnyTransport, DeadlineWriter, Outbox, OutboxLink, ReadBuf, ReadTimeout, Session, Transport as _,
};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::error::Error as WsError;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::Request;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tungstenite::{Bytes, Message};

/// How to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// Deadline for resolving, connecting and the handshake together.
    pub connect_timeout: Duration,
    /// Quiet this long, ping the server; quiet for twice this, give up on it.
    pub ping_interval: Duration,
    /// Largest message accepted from the server, in bytes.
    pub max_message: usize,
    /// Extra request headers (`Origin` and `Sec-WebSocket-Protocol` included).
    pub headers: Vec<(String, String)>,
    /// Whether, and through which proxy, to reach the target.
    pub proxy: ProxyChoice,
    /// For `wss://`: which server certificates to accept.
    #[cfg(feature = "tls")]
    pub trust: crate::tls::Trust,
    /// For `wss://`: the client certificate to present to servers that ask for one.
    #[cfg(feature = "tls")]
    pub identity: Option<crate::tls::Identity>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            max_message: 16 << 20,
            headers: Vec::new(),
            proxy: ProxyChoice::Direct,
            #[cfg(feature = "tls")]
            trust: crate::tls::Trust::System,
            #[cfg(feature = "tls")]
            identity: None,
        }
    }
}

/// How long each phase of connecting took, on the monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Resolving and the TCP connect, through the proxy's tunnel if there is one.
    pub connect: Duration,
    /// The TLS handshake; `None` for `ws://`.
    pub tls: Option<Duration>,
    /// From sending the upgrade request to a complete 101.
    pub upgrade: Duration,
}

/// Connects and upgrades; the connection is then read through the [`Reader`] and written
/// through the [`Writer`] (clone it for more writing threads).
pub fn connect(target: &Target, options: &Options) -> Result<(Reader, Writer), Error> {
    connect_timed(target, options).map(|(reader, writer, _)| (reader, writer))
}

/// [`connect`], and how long its phases took.
pub fn connect_timed(
    target: &Target,
    options: &Options,
) -> Result<(Reader, Writer, Timings), Error> {
    let started = Instant::now();
    let deadline = started + options.connect_timeout;
    let request = target.request(&options.headers).map_err(Error::Target)?;
    let tunnel = open_tcp(target, options, deadline)?;
    let stream = Arc::new(tunnel.stream);
    let connected = Instant::now();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(Error::Io)?;
    stream.set_write_timeout(Some(left)).map_err(Error::Io)?;
    #[cfg(feature = "tls")]
    let (surplus, mut transport, tls_time) =
        handshakes(&stream, tunnel.tls, request, target, options, deadline)?;
    #[cfg(not(feature = "tls"))]
    let (surplus, mut transport, tls_time) = plain_handshake(&stream, request, target, deadline)?;
    let timings = Timings {
        connect: connected - started,
        tls: tls_time,
        upgrade: connected
            .elapsed()
            .saturating_sub(tls_time.unwrap_or_default()),
    };
    // Past the handshake, a write that cannot progress for a ping interval means a dead peer.
    stream
        .set_write_timeout(Some(options.ping_interval))
        .map_err(Error::Io)?;
    let config = crate::link::config(options.max_message, options.max_message);
    // The bytes that came behind the 101 are read by the reader's first turn, not by the
    // context on its own, so they go through the same path as every later read.
    let ctx = WebSocketContext::new(Role::Client, Some(config));
    let early = transport.first_input(surplus);
    let link = Arc::new(OutboxLink::new(
        ctx,
        Role::Client,
        transport,
        DeadlineWriter(stream.clone()),
    ));
    let reader = Reader {
        stream: stream.clone(),
        link: link.clone(),
        buf: ReadBuf::new(),
        queue: VecDeque::new(),
        close: None,
        ping_interval: options.ping_interval,
        pinged: false,
        read_timeout: ReadTimeout::new(),
        early,
    };
    Ok((reader, Writer { link, stream }, timings))
}

/// The WebSocket handshake straight on the socket (`ws://`, directly or through a plain
/// tunnel). Returns what came behind the 101 and the transport from then on.
fn plain_handshake(
    stream: &Arc<TcpStream>,
    request: Request,
    target: &Target,
    deadline: Instant,
) -> Result<(Vec<u8>, AnyTransport, Option<Duration>), Error> {
    let surplus = handshake(stream, &mut &**stream, request, target, deadline)?;
    Ok((surplus, AnyTransport::Plain(Outbox::default()), None))
}

/// The handshakes, all by the connect deadline: for `wss://` the TLS handshake with the
/// target (SNI and the name checked: the URL's host), then the WebSocket one inside it; with
/// an `https://` proxy (`outer`, its own handshake done) both run inside the proxy's session.
/// Returns what came behind the 101, the transport that carries the connection from then on,
/// and how long the target's TLS handshake took.
#[cfg(feature = "tls")]
fn handshakes(
    stream: &Arc<TcpStream>,
    outer: Option<crate::tls::Session>,
    request: Request,
    target: &Target,
    options: &Options,
    deadline: Instant,
) -> Result<(Vec<u8>, AnyTransport, Option<Duration>), Error> {
    use crate::link::{NestedTransport, TlsTransport, UntilDeadline};
    use crate::tls;
    let until = || UntilDeadline::new(stream, deadline);
    let tls_transport = |session| {
        AnyTransport::Tls(Box::new(TlsTransport {
            session,
            sink: Outbox::default(),
        }))
    };
    let mut outer = match (target.secure(), outer) {
        (false, None) => return plain_handshake(stream, request, target, deadline),
        // The proxy's session is the only TLS.
        (false, Some(mut outer)) => {
            let surplus = handshake(
                stream,
                &mut outer.blocking(until()),
                request,
                target,
                deadline,
            )?;
            return Ok((surplus, tls_transport(outer), None));
        }
        (true, outer) => outer,
    };
    let config =
        tls::client_config(&options.trust, options.identity.as_ref()).map_err(Error::Tls)?;
    let mut session = tls::Session::client(config, &target.host).map_err(Error::Tls)?;
    let started = Instant::now();
    match outer.as_mut() {
        None => session.handshake(stream, deadline),
        Some(outer) => session.handshake_over(outer.blocking(until())),
    }
    .map_err(Error::Tls)?;
    let tls_time = Some(started.elapsed());
    let Some(mut outer) = outer else {
        let surplus = handshake(
            stream,
            &mut session.blocking(until()),
            request,
            target,
            deadline,
        )?;
        return Ok((surplus, tls_transport(session), tls_time));
    };
    let mut inside = session.blocking(outer.blocking(until()));
    let surplus = handshake(stream, &mut inside, request, target, deadline)?;
    let nested = NestedTransport::new(session, outer);
    Ok((surplus, AnyTransport::Nested(Box::new(nested)), tls_time))
}

/// The connection that carries the target's bytes: straight to it, or a proxy's tunnel.
fn open_tcp(target: &Target, options: &Options, deadline: Instant) -> Result<proxy::Tunnel, Error> {
    let timeout = options.connect_timeout;
    if let Some(via) = options.proxy.for_target(target).map_err(Error::Proxy)? {
        return proxy::tunnel(&via, target, deadline, timeout).map_err(Error::Proxy);
    }
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            host: target.host.clone(),
            source: e,
        })?
        .collect();
    let stream = connect_first(addrs, deadline).map_err(|last| match last {
        Some((addr, e)) if e.kind() != io::ErrorKind::TimedOut => {
            Error::Connect { addr, source: e }
        }
        _ => Error::ConnectTimeout {
            url: target.url.clone(),
            after: timeout,
        },
    })?;
    Ok(proxy::Tunnel::plain(stream))
}

/// TCP to the first of `addrs` that answers before `deadline`, with Nagle off (every frame is
/// a message someone waits for). The error is the last address's failure, or `None` when the
/// deadline left no time to try one.
pub(super) fn connect_first(
    addrs: impl IntoIterator<Item = SocketAddr>,
    deadline: Instant,
) -> Result<TcpStream, Option<(SocketAddr, io::Error)>> {
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(last)
}

/// Reading and writing as one trait object, for [`handshake`]: only the three calls it
/// makes, so that each kind of stream's table holds three entries, not every provided
/// method of `Read` and `Write`, each of which would be compiled for each kind.
trait Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    fn flush(&mut self) -> io::Result<()>;
}

impl<T: Read + Write> Io for T {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Write::write(self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(self)
    }
}

/// Runs tungstenite's client handshake over `io` (the socket, a TLS session over it, or one
/// inside a proxy's) with the response head [`handshake`] collected and shaped, and returns
/// the bytes the server sent after its 101.
///
/// `io` is a trait object so that one copy of tungstenite's handshake serves every kind of
/// stream (the socket, TLS, TLS inside a proxy's TLS): generic, each kind got its own, and
/// the binary was 15.5 KB larger.
fn handshake(
    stream: &TcpStream,
    io: &mut dyn Io,
    request: Request,
    target: &Target,
    deadline: Instant,
) -> Result<Vec<u8>, Error> {
    let offered = handshake::offered_extensions(&request);
    let head = HeadOnly {
        stream,
        io,
        deadline,
        timeout: ReadTimeout::new(),
        head: None,
    };
    match tungstenite::client::client(request, head) {
        Ok((ws, response)) => {
            if let Some(chosen) = handshake::unoffered_extension(&offered, &response) {
                return Err(Error::Handshake(format!(
                    "{} chose the extension '{chosen}', which dial did not offer",
                    target.url
                )));
            }
            Ok(ws.into_inner().head.map_or_else(Vec::new, |h| h.surplus))
        }
        Err(HandshakeError::Interrupted(_)) => Err(Error::HandshakeTimeout {
            url: target.url.clone(),
        }),
        Err(HandshakeError::Failure(e)) => Err(match e {
            // Under TLS 1.3 a server's refusal of our certificate (or of its absence) comes
            // at the first read after the handshake: here.
            #[cfg(feature = "tls")]
            WsError::Io(e) if is_tls(&e) => Error::Tls(crate::tls::Error::from_io(e)),
            WsError::Http(response) => Error::Refused {
                status: response.status().as_u16(),
                reason: response
                    .status()
                    .canonical_reason()
                    .unwrap_or("")
                    .to_string(),
            },
            WsError::Io(e)
                if e.kind() == io::ErrorKind::UnexpectedEof
                    || e.kind() == io::ErrorKind::ConnectionReset =>
            {
                Error::HandshakeCut(format!(
                    "{} closed the connection during the handshake (is it a WebSocket server?)",
                    target.url
                ))
            }
            WsError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Error::HandshakeTimeout {
                    url: target.url.clone(),
                }
            }
            WsError::Protocol(tungstenite::error::ProtocolError::HttparseError(e)) => {
                Error::Handshake(format!("{} did not answer with HTTP ({e})", target.url))
            }
            other => Error::Handshake(format!(
                "invalid handshake response from {}: {other}",
                target.url
            )),
        }),
    }
}

/// Whether an I/O error carries a TLS error from the session's adapters.
#[cfg(feature = "tls")]
fn is_tls(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// The socket as the handshake sees it: the first read collects the whole final response
/// head (see [`handshake`]) and tungstenite gets it in one piece; frames the server sent
/// right behind its 101 stay here for the connection instead of vanishing inside
/// tungstenite's handshake buffer.
struct HeadOnly<'a> {
    /// The socket, for its read timeout.
    stream: &'a TcpStream,
    /// What is read and written: the socket itself, or a TLS session over it.
    io: &'a mut dyn Io,
    /// The connect deadline: a server that trickles its head byte by byte still ends by it.
    deadline: Instant,
    timeout: ReadTimeout,
    /// The collected head, the part of it tungstenite has not read yet, and the surplus.
    head: Option<handshake::FinalHead>,
}

impl HeadOnly<'_> {
    /// Reads until the final response head is complete, the deadline, or too many bytes.
    fn collect(&mut self) -> io::Result<handshake::FinalHead> {
        let mut collector = handshake::HeadCollector::default();
        let mut chunk = [0u8; 2048];
        loop {
            self.timeout.until(self.stream, self.deadline)?;
            // A signal interrupts a read under a timeout even with SA_RESTART. Ctrl-C's handler
            // ends dial itself before the connection is open, so the read only goes on (the
            // deadline still bounds it) rather than report a bogus handshake failure first.
            let n = match self.io.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => read?,
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match collector.feed(&chunk[..n]) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(handshake::TooLarge) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("response head over {} bytes", handshake::MAX_HEAD),
                    ));
                }
            }
        }
    }
}

impl Read for HeadOnly<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.head.is_none() {
            self.head = Some(self.collect()?);
        }
        let Some(head) = self.head.as_mut() else {
            return Ok(0);
        };
        let n = out.len().min(head.head.len());
        out[..n].copy_from_slice(&head.head[..n]);
        head.head.drain(..n);
        Ok(n)
    }
}

impl Write for HeadOnly<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.io.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                written => return written,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

/// What the reader gets from the server.
#[derive(Debug)]
pub enum Incoming {
    /// A text or binary message.
    Message(Message),
    /// The server's Close (after ours, its reply); the connection is over.
    Closed(Option<CloseFrame>),
}

/// The reading end: one thread calls [`Reader::recv`] in a loop.
///
/// It reads the socket outside the lock, then waits for the lock (nobody holds it over a
/// system call) and hands what it read to the context; pongs and close replies go out on this
/// thread, or on a writer's that is writing at the time. So the reader never stops reading
/// because a writer is blocked on a server that is waiting for us to read.
pub struct Reader {
    stream: Arc<TcpStream>,
    link: Arc<OutboxLink>,
    buf: ReadBuf,
    queue: VecDeque<Message>,
    close: Option<Option<CloseFrame>>,
    ping_interval: Duration,
    pinged: bool,
    read_timeout: ReadTimeout,
    /// The input of a first turn that reads what came with the 101, until it has run.
    early: Option<Vec<u8>>,
}

impl Reader {
    /// The next message, or the end of the connection. Pings are answered and the server is
    /// pinged when quiet; a server silent for two ping intervals is an error.
    pub fn recv(&mut self) -> Result<Incoming, Error> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Ok(Incoming::Message(message));
            }
            if let Some(close) = self.close.take() {
                return Ok(Incoming::Closed(close));
            }
            self.fill()?;
        }
    }

    /// One read from the socket, handed to the context; queues what it completes.
    fn fill(&mut self) -> Result<(), Error> {
        if let Some(early) = self.early.take() {
            let (queue, close) = (&mut self.queue, &mut self.close);
            let turn = self.link.with(&early, |s| take_messages(s, queue, close));
            return self.after_turn(turn);
        }
        self.read_timeout
            .set(&self.stream, self.ping_interval)
            .map_err(Error::Io)?;
        let bytes = match self.buf.read_from(&*self.stream) {
            Ok([]) => {
                if self.close.is_some() {
                    return Ok(());
                }
                return Err(Error::Lost(
                    "the server closed the connection without a Close frame".into(),
                ));
            }
            Ok(bytes) => bytes,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.buf.shrink();
                if self.pinged {
                    return Err(Error::Lost(format!(
                        "the server answered nothing for {:?} (not even a ping)",
                        self.ping_interval * 2
                    )));
                }
                self.pinged = true;
                let (pinged, sent) = self.link.with(&[], |s| {
                    s.send(Message::Ping(Bytes::new())).and_then(|()| s.flush())
                });
                return pinged.map_err(lost).and(sent.map_err(sent_lost));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Error::Lost(e.to_string())),
        };
        self.pinged = false;
        let (queue, close) = (&mut self.queue, &mut self.close);
        let turn = self.link.with(bytes, |s| take_messages(s, queue, close));
        self.after_turn(turn)
    }

    fn after_turn(&self, (taken, sent): (Result<(), Error>, io::Result<()>)) -> Result<(), Error> {
        if taken.is_err() {
            // We failed the connection (and queued our Close, if the peer broke the rules):
            // put it on the wire, then let the peer read it instead of a reset.
            let _ = self.link.flush();
            crate::link::close_gently(&self.stream);
        }
        taken.and(sent.map_err(sent_lost))
    }
}

/// Queues the messages the session's input completes; queues the Close a broken rule calls
/// for (1002, 1007, 1009), pongs and close replies.
fn take_messages(
    s: &mut Session<'_, AnyTransport>,
    queue: &mut VecDeque<Message>,
    close: &mut Option<Option<CloseFrame>>,
) -> Result<(), Error> {
    loop {
        match s.next_message() {
            Ok(Some(Message::Close(frame))) => *close = Some(frame),
            Ok(Some(m @ (Message::Text(_) | Message::Binary(_)))) => queue.push_back(m),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                close.get_or_insert(None);
                break;
            }
            Err(e) => {
                let code = match &e {
                    WsError::Protocol(_) => Some(CloseCode::Protocol),
                    WsError::Utf8(_) => Some(CloseCode::Invalid),
                    WsError::Capacity(_) => Some(CloseCode::Size),
                    _ => None,
                };
                if let Some(code) = code {
                    let _ = s.close(CloseFrame {
                        code,
                        reason: "".into(),
                    });
                }
                return Err(lost(e));
            }
        }
    }
    match s.flush() {
        Ok(()) | Err(WsError::ConnectionClosed) => Ok(()),
        Err(e) => Err(lost(e)),
    }
}

fn lost(e: WsError) -> Error {
    Error::Lost(e.to_string())
}

fn sent_lost(e: io::Error) -> Error {
    Error::Lost(e.to_string())
}

/// The writing end; any thread may send through a clone. A send holds the right to write to
/// the socket until its whole message is on the wire, so sends from several threads go out
/// one message after another.
#[derive(Clone)]
pub struct Writer {
    link: Arc<OutboxLink>,
    /// The socket itself, for [`Writer::cut`]: a send may be blocked on it.
    stream: Arc<TcpStream>,
}

impl Writer {
    /// Sends one message and writes it out.
    pub fn send(&self, message: Message) -> Result<(), Error> {
        self.link.send(message).map_err(lost)
    }

    /// Ends the connection at once, without the lock or the pen: a write blocked on a server
    /// that stopped reading fails now instead of at its timeout, and the reader sees the end.
    pub fn cut(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Starts the closing handshake; the reader sees the server's reply as [`Incoming::Closed`].
    /// Over TLS, close_notify follows the Close: nothing more will be sent either way.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.link
            .close(CloseFrame {
                code,
                reason: reason.to_owned().into(),
            })
            .map_err(lost)
    }
}
