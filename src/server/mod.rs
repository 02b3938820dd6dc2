//! `wsecho serve`: the test page and the echo endpoint on one port, one thread per connection.
//!
//! The shape follows gorilla's `examples/echo`: a listener, a handler per connection, an echo
//! loop. Each module holds one idea:
//! - [`config`]: what the server is asked to do, with the defaults in one place;
//! - here: binding, the accept loop, the connection cap, and stopping on request;
//! - [`http`]: reading one request head (deadline, size cap) and the plain HTTP answers;
//! - [`upgrade`]: the handshake policy (origin, subprotocol) and the switch to WebSocket;
//! - [`echo`]: the echo loop of one WebSocket connection (keepalive, limits, close codes);
//! - [`tracker`]: who is connected, and telling them all goodbye at shutdown;
//! - [`reject`]: turning connections away without spending a thread on each;
//! - [`workers`]: a thread per connection, reused once its connection ends.

mod config;
mod echo;
mod forwarded;
mod http;
mod reject;
mod tracker;
mod upgrade;
mod workers;

pub use config::{Config, Limits};

use crate::link::DeadlineWriter;
use crate::log::Log;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tracker::Tracker;
use tungstenite::protocol::WebSocketContext;

/// Stack for each connection thread. Measured: a release build passes the whole Autobahn
/// server suite (16 MiB messages, fragmentation, every failure path) with 16 KiB stacks, and
/// an idle connection's stack has 8 to 12 KiB resident. 64 KiB leaves room for debug builds
/// and code changes; it costs address space only, never memory, beyond the touched pages.
/// Debug builds (the tests) get four times as much: their frames are several times larger,
/// and an overflow aborts the whole process.
pub const CONNECTION_STACK: usize = if cfg!(debug_assertions) { 256 } else { 64 } * 1024;

/// Why the server could not start; each says what to change.
#[derive(Debug)]
pub enum Error {
    /// The address did not resolve or parse.
    Address {
        /// The address as given.
        addr: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The address resolved but could not be bound.
    Bind {
        /// The address as given.
        addr: String,
        /// What the OS said.
        source: io::Error,
    },
    /// The TLS certificate, key or client authorities could not be used.
    #[cfg(feature = "tls")]
    Tls(crate::tls::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Address { addr, source } => write!(
                f,
                "cannot use address '{addr}': {source} (write it as HOST:PORT, e.g. localhost:8080)"
            ),
            Error::Bind { addr, source } => {
                let hint = match source.kind() {
                    ErrorKind::AddrInUse => " (another program uses this port: pick another)",
                    ErrorKind::PermissionDenied => {
                        " (ports below 1024 need privileges: pick a port above 1023)"
                    }
                    ErrorKind::AddrNotAvailable => " (no local interface has this address)",
                    _ => "",
                };
                write!(f, "cannot listen on {addr}: {source}{hint}")
            }
            #[cfg(feature = "tls")]
            Error::Tls(e) => write!(f, "cannot serve TLS: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection thread reads: configuration, log, and the tracker.
struct Shared {
    config: Config,
    max_conns: usize,
    log: Log,
    tracker: Arc<Tracker>,
    policy: upgrade::Policy,
    trusted: forwarded::TrustedProxies,
    /// Set when the server speaks TLS (https and wss) instead of plain http and ws.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ServerTls>,
}

/// Stops a running server from another thread (a signal handler, a test).
#[derive(Clone)]
pub struct Stopper {
    tracker: Arc<Tracker>,
    wake: SocketAddr,
}

impl Stopper {
    /// Stops accepting and starts the goodbye; [`Server::run`] returns once it is over.
    pub fn stop(&self) {
        if self.tracker.begin_stop() {
            // The accept loop is blocked in accept(): one connection of our own wakes it.
            let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        }
    }
}

impl Server {
    /// Binds the listening socket, so that errors (port in use, bad address) surface before
    /// anything else starts.
    pub fn bind(config: Config, log: Log) -> Result<Server, Error> {
        use std::net::ToSocketAddrs;
        // The files first: a bad certificate should not have taken the port.
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::ServerTls::new(files).map_err(Error::Tls)?),
            None => None,
        };
        let mut addrs: Vec<SocketAddr> = config
            .addr
            .to_socket_addrs()
            .map_err(|source| Error::Address {
                addr: config.addr.clone(),
                source,
            })?
            .collect();
        // A name such as `localhost` may resolve to ::1 first; like Go, prefer IPv4, which
        // is what `127.0.0.1` clients and most tools reach.
        addrs.sort_by_key(SocketAddr::is_ipv6);
        let listener = TcpListener::bind(&addrs[..]).map_err(|source| Error::Bind {
            addr: config.addr.clone(),
            source,
        })?;
        crate::sys::limit_malloc_arenas();
        let max_conns = config.limits.max_conns.unwrap_or_else(default_max_conns);
        let policy = upgrade::Policy::new(&config.allowed_origins);
        let trusted = forwarded::TrustedProxies::new(config.trusted_proxies.clone());
        let shared = Shared {
            config,
            max_conns,
            log,
            tracker: Arc::new(Tracker::new()),
            policy,
            trusted,
            #[cfg(feature = "tls")]
            tls,
        };
        Ok(Server {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The handle that reloads the TLS certificate and key (on SIGHUP); `None` without TLS.
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<crate::tls::ServerTls> {
        self.shared.tls.clone()
    }

    /// Whether this server speaks TLS.
    fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.shared.tls.is_some() {
            return "https";
        }
        "http"
    }

    /// The handle that stops this server.
    pub fn stopper(&self) -> Stopper {
        let mut wake = self.local_addr();
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        Stopper {
            tracker: self.shared.tracker.clone(),
            wake,
        }
    }

    /// Accepts connections until stopped, then closes the open ones with 1001 (going away)
    /// and waits up to the grace period for them to finish. Returns how many were still open
    /// when the grace period ran out.
    pub fn run(self) -> usize {
        let shared = &self.shared;
        shared.log.line(format_args!(
            "listening on {}://{} (max {} connections)",
            self.scheme(),
            self.local_addr(),
            shared.max_conns
        ));
        let rejecter = reject::Rejecter::start();
        let workers = workers::Workers::new(CONNECTION_STACK, shared.config.limits.thread_linger);
        let mut backoff = Backoff::default();
        loop {
            let conn = self.listener.accept();
            if shared.tracker.stopping() {
                break;
            }
            match conn {
                Ok(conn) => {
                    backoff.reset();
                    accept(shared, conn, &workers, &rejecter);
                }
                Err(e) => backoff.after(&e, &shared.log),
            }
        }
        drop(self.listener);
        let deadline = Instant::now() + shared.config.grace;
        shared.tracker.say_goodbye();
        let left = shared.tracker.wait_until_empty(deadline);
        shared.log.line(format_args!(
            "stopped ({left} connections cut at the end of the grace period)"
        ));
        shared.log.flush_within(Duration::from_secs(1));
        left
    }
}

/// Hands one accepted connection to its own thread, or turns it away at capacity.
fn accept(
    shared: &Arc<Shared>,
    conn: (TcpStream, SocketAddr),
    workers: &workers::Workers,
    rejecter: &reject::Rejecter,
) {
    let (stream, peer) = conn;
    let Some(ticket) = shared.tracker.admit(shared.max_conns) else {
        rejecter.turn_away(stream);
        return;
    };
    let stream = Arc::new(stream);
    let job = {
        let shared = shared.clone();
        let stream = stream.clone();
        Box::new(move || handle(&shared, stream, peer, ticket))
    };
    if let Err(e) = workers.run(job) {
        shared
            .log
            .line(format_args!("cannot start a connection thread: {e}"));
        // The job, and with it the other handle to the stream, is gone.
        if let Ok(stream) = Arc::try_unwrap(stream) {
            rejecter.turn_away(stream);
        }
    }
}

/// One connection, from the first byte of its request (or of its TLS handshake) to its last
/// frame.
fn handle(shared: &Shared, stream: Arc<TcpStream>, peer: SocketAddr, ticket: tracker::Ticket) {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let _ = stream.set_nodelay(true);
    if stream
        .set_write_timeout(Some(limits.handshake_timeout))
        .is_err()
    {
        return;
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        return handle_tls(shared, tls, stream, peer, ticket, deadline);
    }
    let Some((ctx, early, peer)) = front(shared, &stream, &mut &*stream, peer, deadline) else {
        return;
    };
    if !echo_timeouts(&stream, limits) {
        return;
    }
    echo::serve(echo::Conn {
        transport: DeadlineWriter(stream.clone()),
        stream,
        subject: None,
        ctx,
        early,
        peer,
        limits,
        log: &shared.log,
        quiet: shared.config.quiet,
        tracker: &shared.tracker,
        ticket: &ticket,
    });
}

/// One TLS connection: the handshake (within the handshake deadline, on this thread), then
/// the same front door and echo loop as plain TCP, over the session. Never inlined: its
/// session and transport would otherwise widen [`handle`]'s stack frame by several KiB, and a
/// plain connection's thread would keep that page resident (measured: 4 KiB more RSS per
/// idle plain connection).
#[cfg(feature = "tls")]
#[inline(never)]
fn handle_tls(
    shared: &Shared,
    tls: &crate::tls::ServerTls,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    ticket: tracker::Ticket,
    deadline: Instant,
) {
    use crate::tls::{Error as TlsError, Session};
    let Ok(mut session) = Session::server(tls.config()) else {
        return;
    };
    match session.handshake(&stream, deadline) {
        Ok(()) => {}
        Err(TlsError::NotTls) => {
            // As nginx does: an answer the client can read, rather than a silent close.
            http::Reply::text(
                400,
                "Bad Request",
                "this port speaks TLS: use https:// or wss://\n",
            )
            .send(&*stream);
            crate::link::close_gently(&stream);
            return;
        }
        // A client that went away, or a port scan: nothing worth a line.
        Err(TlsError::Closed) => return,
        Err(e) => {
            shared
                .log
                .line(format_args!("refused {peer}: TLS handshake: {e}"));
            return;
        }
    }
    serve_tls(shared, session, stream, peer, ticket, deadline);
}

/// A TLS connection once its handshake is done: the front door and the echo loop over the
/// session. A function of its own, never inlined, so that its stack frame (the request's
/// buffers, the echo loop) and the handshake's calls (rustls and ring, the deepest this
/// thread makes) take turns on the stack instead of one sitting on top of the other: an idle
/// connection's thread keeps fewer stack pages resident.
#[cfg(feature = "tls")]
#[inline(never)]
fn serve_tls(
    shared: &Shared,
    mut session: crate::tls::Session,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    ticket: tracker::Ticket,
    deadline: Instant,
) {
    use crate::link::{TlsTransport, UntilDeadline};
    let limits = &shared.config.limits;
    let subject = session.peer_subject();
    let front = {
        let mut io = session.blocking(UntilDeadline::new(&stream, deadline));
        front(shared, &stream, &mut io, peer, deadline)
    };
    let Some((ctx, early, peer)) = front else {
        return;
    };
    // The TLS handshake left what remained of its deadline as the write timeout: set the
    // echo loop's own whatever its value.
    if stream
        .set_write_timeout(Some(limits.write_timeout))
        .is_err()
    {
        return;
    }
    echo::serve(echo::Conn {
        transport: TlsTransport {
            session,
            sink: DeadlineWriter(stream.clone()),
        },
        stream,
        subject,
        ctx,
        early,
        peer,
        limits,
        log: &shared.log,
        quiet: shared.config.quiet,
        tracker: &shared.tracker,
        ticket: &ticket,
    });
}

/// The connection before the upgrade, as one thread reads and writes it: the socket itself,
/// or a TLS session over it.
trait Front: Read + Write {
    /// Says goodbye below HTTP before the socket closes (TLS close_notify).
    fn goodbye(&mut self) {}
}

impl Front for &TcpStream {}

#[cfg(feature = "tls")]
impl<S: Read + Write> Front for crate::tls::Blocking<'_, S> {
    fn goodbye(&mut self) {
        let _ = self.send_close_notify();
    }
}

/// The front door over `io`: the request head, the route, the upgrade. Returns the protocol
/// state, the bytes that came behind the request and the peer as the log names it (the
/// client behind a trusted proxy), or `None` once the connection has had its answer (or its
/// peer is gone).
fn front(
    shared: &Shared,
    stream: &TcpStream,
    io: &mut impl Front,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<(WebSocketContext, Vec<u8>, forwarded::Peer)> {
    let limits = &shared.config.limits;
    let head = match http::read_head(stream, &mut *io, deadline, limits.max_head) {
        Ok(head) => head,
        Err(e) => {
            if let Some(reply) = e.reply() {
                finish(stream, io, &reply);
            }
            return None;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let request = head.parse(&mut headers)?;
    let request = match http::route(request) {
        http::Route::Reply(reply) => {
            finish(stream, io, &reply);
            return None;
        }
        http::Route::Upgrade(request) => request,
    };
    let peer = forwarded::Peer {
        addr: peer,
        client: shared.trusted.client(peer.ip(), &request),
    };
    let ctx = match upgrade::accept(&mut *io, &request, &shared.policy, limits) {
        Ok(ctx) => ctx,
        Err(Some(reply)) => {
            shared.log.line(format_args!(
                "refused {peer}: {} {}",
                reply.status,
                reply.detail()
            ));
            finish(stream, io, &reply);
            return None;
        }
        Err(None) => return None,
    };
    // A client may send its first frames right behind the request, before our 101.
    Some((ctx, head.rest().to_vec(), peer))
}

/// Sends a final answer and closes the connection gently.
fn finish(stream: &TcpStream, io: &mut impl Front, reply: &http::Reply) {
    reply.send(&mut *io);
    io.goodbye();
    crate::link::close_gently(stream);
}

/// The echo loop's write timeout, when it differs from the handshake's (by default it is the
/// same value, and the handshake's setting stands: one syscall less). False if the socket
/// failed.
fn echo_timeouts(stream: &TcpStream, limits: &Limits) -> bool {
    limits.write_timeout == limits.handshake_timeout
        || stream.set_write_timeout(Some(limits.write_timeout)).is_ok()
}

/// Default connection cap: what the open-files limit (raised to its hard limit) allows,
/// and no more than one connection per 64 KiB of memory, so a small box refuses with 503
/// before it runs out of memory.
fn default_max_conns() -> usize {
    const RESERVED_FDS: u64 = 32;
    let fds = crate::sys::raise_open_files_limit()
        .unwrap_or(1024)
        .saturating_sub(RESERVED_FDS);
    let by_memory = crate::sys::total_memory().map_or(u64::MAX, |m| m / (64 * 1024));
    fds.min(by_memory).clamp(1, 1 << 20) as usize
}

/// Pauses after accept errors that would otherwise repeat at once (out of descriptors),
/// doubling up to a second; the loop never exits on them.
#[derive(Default)]
struct Backoff {
    delay: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    fn after(&mut self, e: &io::Error, log: &Log) {
        // Aborted handshakes and interrupted calls are the peer's business: just go on.
        if matches!(
            e.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::Interrupted
        ) {
            return;
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        log.line(format_args!(
            "accept failed: {e}; retrying in {:?}",
            self.delay
        ));
        thread::sleep(self.delay);
    }
}
