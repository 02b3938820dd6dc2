//! Connecting: TCP with a deadline, tungstenite's client handshake, and the two ends of the
//! connection it yields: a [`Reader`] for one thread and a [`Writer`] for any other.

use super::error::Error;
use super::handshake;
use super::proxy::{self, ProxyChoice};
use super::target::Target;
use crate::link::{AnyTransport, DeadlineWriter, Link, ReadBuf, ReadTimeout, Session};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    let stream = Arc::new(open_tcp(target, options, deadline)?);
    let connected = Instant::now();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(Error::Io)?;
    stream.set_write_timeout(Some(left)).map_err(Error::Io)?;
    let (surplus, transport, tls_time) = match target.secure() {
        #[cfg(feature = "tls")]
        true => tls_handshakes(&stream, request, target, options, deadline)?,
        _ => (
            handshake(&stream, &*stream, request, target, deadline)?,
            AnyTransport::Plain(DeadlineWriter(stream.clone())),
            None,
        ),
    };
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
    // The bytes that came behind the 101 are the reader's first input, not the context's, so
    // they go through the same path as every later read.
    let ctx = WebSocketContext::new(Role::Client, Some(config));
    let link = Arc::new(Link::new(ctx, Role::Client, transport));
    let reader_turn = Arc::new(ReaderTurn::default());
    let reader_stream = stream.clone();
    let reader = Reader {
        stream,
        link: link.clone(),
        reader_turn: reader_turn.clone(),
        buf: ReadBuf::new(),
        queue: VecDeque::new(),
        close: None,
        ping_interval: options.ping_interval,
        pinged: false,
        read_timeout: ReadTimeout::new(),
        pending: surplus,
        max_pending: options
            .max_message
            .saturating_mul(2)
            .saturating_add(1 << 20),
    };
    Ok((
        reader,
        Writer {
            link,
            reader_turn,
            stream: reader_stream,
        },
        timings,
    ))
}

/// The TLS handshake (SNI and the name checked: the URL's host), then the WebSocket one
/// inside it, both by the connect deadline. Returns what came behind the 101, and the
/// transport that carries the connection from then on.
#[cfg(feature = "tls")]
fn tls_handshakes(
    stream: &Arc<TcpStream>,
    request: Request,
    target: &Target,
    options: &Options,
    deadline: Instant,
) -> Result<(Vec<u8>, AnyTransport, Option<Duration>), Error> {
    use crate::link::{TlsTransport, UntilDeadline};
    use crate::tls;
    let config =
        tls::client_config(&options.trust, options.identity.as_ref()).map_err(Error::Tls)?;
    let mut session = tls::Session::client(config, &target.host).map_err(Error::Tls)?;
    let started = Instant::now();
    session.handshake(stream, deadline).map_err(Error::Tls)?;
    let tls_time = started.elapsed();
    let mut surplus = handshake(
        stream,
        session.blocking(UntilDeadline::new(stream, deadline)),
        request,
        target,
        deadline,
    )?;
    session.take_plaintext(&mut surplus);
    let transport = AnyTransport::Tls(Box::new(TlsTransport {
        session,
        sink: DeadlineWriter(stream.clone()),
    }));
    Ok((surplus, transport, Some(tls_time)))
}

fn open_tcp(target: &Target, options: &Options, deadline: Instant) -> Result<TcpStream, Error> {
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
    Err(match last {
        Some((addr, e)) if e.kind() != io::ErrorKind::TimedOut => {
            Error::Connect { addr, source: e }
        }
        _ => Error::ConnectTimeout {
            url: target.url.clone(),
            after: timeout,
        },
    })
}

/// Runs tungstenite's client handshake over `io` (the socket, or a TLS session over it)
/// with the response head [`handshake`] collected and shaped, and returns the bytes the
/// server sent after its 101.
fn handshake(
    stream: &TcpStream,
    io: impl Read + Write,
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
        Err(HandshakeError::Interrupted(_)) => Err(Error::HandshakeCut(format!(
            "no handshake response from {} in time",
            target.url
        ))),
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
                Error::HandshakeCut(format!("no handshake response from {} in time", target.url))
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
struct HeadOnly<'a, S> {
    /// The socket, for its read timeout.
    stream: &'a TcpStream,
    /// What is read and written: the socket itself, or a TLS session over it.
    io: S,
    /// The connect deadline: a server that trickles its head byte by byte still ends by it.
    deadline: Instant,
    timeout: ReadTimeout,
    /// The collected head, the part of it tungstenite has not read yet, and the surplus.
    head: Option<handshake::FinalHead>,
}

impl<S: Read + Write> HeadOnly<'_, S> {
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

impl<S: Read + Write> Read for HeadOnly<'_, S> {
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

impl<S: Read + Write> Write for HeadOnly<'_, S> {
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
pub struct Reader {
    stream: Arc<TcpStream>,
    link: Arc<Link<AnyTransport>>,
    buf: ReadBuf,
    queue: VecDeque<Message>,
    close: Option<Option<CloseFrame>>,
    ping_interval: Duration,
    pinged: bool,
    read_timeout: ReadTimeout,
    /// Bytes read but not handed to the context yet: those that came with the 101, and those
    /// read while a writer held the lock.
    pending: Vec<u8>,
    /// How much may wait in `pending` before the server counts as flooding us.
    max_pending: usize,
    /// Tells writers that `pending` is waiting for the lock (see [`Writer::send`]).
    reader_turn: Arc<ReaderTurn>,
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
    ///
    /// A writer may hold the lock while blocked on a full socket, and the server may be
    /// blocked writing to us at the same time: if the reader then waited for the lock, neither
    /// side would read again. So the reader never waits for the lock while the server has
    /// more to send: it keeps reading into `pending`, and hands over once the lock is free or
    /// the socket has gone quiet (then the writer no longer depends on us).
    fn fill(&mut self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let (queue, close) = (&mut self.queue, &mut self.close);
            match self
                .link
                .try_with(&pending, |s| take_messages(s, queue, close))
            {
                Some(result) => return self.after_hand_over(result),
                None => self.pending = pending,
            }
        }
        let timeout = if self.pending.is_empty() {
            self.ping_interval
        } else {
            BUSY_POLL
        };
        self.read_timeout
            .set(&self.stream, timeout)
            .map_err(Error::Io)?;
        let bytes = match self.buf.read_from(&*self.stream) {
            Ok([]) => {
                self.hand_over_pending()?;
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
                if !self.pending.is_empty() {
                    // The server has nothing more for now, so the writer can finish: wait.
                    return self.hand_over_pending();
                }
                self.buf.shrink();
                if self.pinged {
                    return Err(Error::Lost(format!(
                        "the server answered nothing for {:?} (not even a ping)",
                        self.ping_interval * 2
                    )));
                }
                self.pinged = true;
                return self
                    .link
                    .with(&[], |s| {
                        s.send(Message::Ping(Bytes::new())).and_then(|()| s.flush())
                    })
                    .map_err(lost);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(Error::Lost(e.to_string())),
        };
        self.pinged = false;
        if self.pending.is_empty() {
            let (queue, close) = (&mut self.queue, &mut self.close);
            match self
                .link
                .try_with(bytes, |s| take_messages(s, queue, close))
            {
                Some(result) => return self.after_hand_over(result),
                None => self.pending.extend_from_slice(bytes),
            }
        } else {
            self.pending.extend_from_slice(bytes);
        }
        self.reader_turn.claim();
        if self.pending.len() > self.max_pending {
            return Err(Error::Lost(format!(
                "the server sent over {} bytes while we could not process them",
                self.max_pending
            )));
        }
        Ok(())
    }

    /// Hands everything in `pending` over, waiting for the lock if need be.
    fn hand_over_pending(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let (queue, close) = (&mut self.queue, &mut self.close);
        let result = self.link.with(&pending, |s| take_messages(s, queue, close));
        self.after_hand_over(result)
    }

    fn after_hand_over(&self, result: Result<(), Error>) -> Result<(), Error> {
        self.reader_turn.release();
        result.inspect_err(|_| {
            // We failed the connection (and sent our Close, if the peer broke the rules):
            // let the peer read it instead of a reset.
            crate::link::close_gently(&self.stream);
        })
    }
}

/// While the reader has bytes waiting and a writer holds the lock, it reads on with this
/// timeout, so that it notices soon when the server has gone quiet.
const BUSY_POLL: Duration = Duration::from_millis(10);

/// Queues the messages the session's input completes; sends the Close a broken rule calls
/// for (1002, 1007, 1009); writes out pongs and close replies.
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

/// The writing end; any thread may send through a clone.
#[derive(Clone)]
pub struct Writer {
    link: Arc<Link<AnyTransport>>,
    /// Whether the reader holds bytes it could not hand over because a writer had the lock.
    reader_turn: Arc<ReaderTurn>,
    /// The socket itself, for [`Writer::cut`]: the link's lock may be held by a blocked write.
    stream: Arc<TcpStream>,
}

impl Writer {
    /// Sends one message and writes it out. If the reader is waiting to hand over what it
    /// read, it goes first (for at most 200 ms): a writer that kept the lock would leave the
    /// reader buffering echoes without end.
    pub fn send(&self, message: Message) -> Result<(), Error> {
        self.reader_turn.wait(READER_FIRST);
        self.link
            .with(&[], |s| s.send(message).and_then(|()| s.flush()))
            .map_err(lost)
    }

    /// Ends the connection at once, without the lock: a write blocked on a server that stopped
    /// reading fails now instead of at its timeout, and the reader sees the end.
    pub fn cut(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Starts the closing handshake; the reader sees the server's reply as [`Incoming::Closed`].
    /// Over TLS, close_notify follows the Close: nothing more will be sent either way.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), Error> {
        let closed = self
            .link
            .with(&[], |s| {
                s.close(CloseFrame {
                    code,
                    reason: reason.to_owned().into(),
                })
            })
            .map_err(lost);
        self.link.goodbye();
        closed
    }
}

/// The longest a writer lets the reader go first.
const READER_FIRST: Duration = Duration::from_millis(200);

impl Drop for Reader {
    fn drop(&mut self) {
        // A reader that stopped with bytes still waiting will never hand them over: writers
        // must not wait for it.
        self.reader_turn.release();
    }
}

/// The reader's claim to go before writers. The reader claims it when it read bytes while a
/// writer held the lock, and releases it once it has handed them over; a writer that finds it
/// claimed sleeps until then, woken by the release. Whether it is claimed is one atomic, so
/// neither side pays for a lock or a wake-up while nobody waits (the usual case).
#[derive(Default)]
struct ReaderTurn {
    claimed: AtomicBool,
    /// How many writers sleep on `released`; only then does a release wake anyone (a wake-up
    /// is a system call even when nobody sleeps).
    sleepers: Mutex<usize>,
    released: Condvar,
}

impl ReaderTurn {
    fn claim(&self) {
        self.claimed.store(true, Ordering::Release);
    }

    fn release(&self) {
        if self.claimed.swap(false, Ordering::AcqRel) {
            // Taking the sleepers' lock orders this wake-up after a writer's check of
            // `claimed`: a writer either saw it released or is asleep and counted.
            let sleepers = lock(&self.sleepers);
            if *sleepers > 0 {
                self.released.notify_all();
            }
        }
    }

    /// Waits while the reader has claimed its turn, for at most `max`.
    fn wait(&self, max: Duration) {
        if !self.claimed.load(Ordering::Acquire) {
            return;
        }
        let deadline = Instant::now() + max;
        let mut sleepers = lock(&self.sleepers);
        while self.claimed.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            *sleepers += 1;
            sleepers = self
                .released
                .wait_timeout(sleepers, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            *sleepers -= 1;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `n` writers sleep on `turn`.
    fn until_asleep(turn: &ReaderTurn, n: usize) {
        while *lock(&turn.sleepers) != n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_writer_waiting_for_the_reader_wakes_when_the_reader_has_handed_over() {
        let turn = Arc::new(ReaderTurn::default());
        turn.claim();
        let (woke, waking) = std::sync::mpsc::channel();
        let writer = {
            let turn = turn.clone();
            // Far longer than the test may take: only the release can end this wait.
            std::thread::spawn(move || {
                turn.wait(Duration::from_secs(3600));
                woke.send(()).unwrap();
            })
        };
        until_asleep(&turn, 1);
        turn.release();
        waking
            .recv_timeout(Duration::from_secs(60))
            .expect("the release did not wake the writer");
        writer.join().unwrap();
    }

    #[test]
    fn a_writer_goes_on_its_own_when_the_reader_takes_too_long() {
        let turn = ReaderTurn::default();
        turn.claim();
        turn.wait(Duration::from_millis(1));
        assert_eq!(*lock(&turn.sleepers), 0);
    }
}
