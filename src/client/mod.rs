//! `wsecho dial`: the Go example's client, a reader thread plus one `select!` loop.
//!
//! As in gorilla's `examples/echo/client.go`: a reader thread prints every message and
//! signals `done` when the connection ends; the main thread selects over a ticker (send the
//! time), `done` (exit), and Ctrl-C (send Close 1000, wait at most a second for the server to
//! finish the close, exit). For scripts, lines the caller reads (from standard input, say)
//! can take the ticker's place. The two threads share one connection through `link`: frames
//! never interleave, and the reader answers pings while the main thread writes.

mod conn;
mod error;
mod handshake;
pub mod proxy;
pub mod target;

pub use conn::{Incoming, Options, Reader, Writer, connect};
pub use error::Error;
pub use proxy::{Proxy, ProxyChoice, ProxyEnv, ProxyError, ProxySource};
pub use target::{Target, TargetError};

use crate::log::Escaped;
use crossbeam_channel::{
    Receiver, RecvTimeoutError, Sender, after, bounded, never, select, tick, unbounded,
};
use error::describe;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

/// How long, after our Close, the server gets to finish the closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What `wsecho dial` is asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to connect.
    pub target: Target,
    /// How to connect (timeouts, headers, limits).
    pub options: Options,
    /// What to send.
    pub input: Input,
    /// Stop after sending this many messages (and receiving their echoes).
    pub count: Option<u64>,
    /// After the last message, how long to wait for outstanding echoes.
    pub wait: Duration,
}

/// What the client sends.
#[derive(Clone, Debug)]
pub enum Input {
    /// The current time every `interval`, as the Go client does.
    Ticks {
        /// Time between two ticks.
        interval: Duration,
    },
    /// Each message the caller sends on this channel (the lines of standard input,
    /// say); the channel's end is the end of input. Messages are printed without
    /// the `recv: ` prefix unless stdout is a terminal.
    Lines(Receiver<Message>),
}

/// How the reader thread saw the connection end.
enum Done {
    Closed(Option<CloseFrame>),
    Failed(Error),
    /// Whoever reads our output is gone (`| head`): a normal way for a pipeline to stop.
    OutputClosed,
}

/// Dials, runs the select loop until the connection ends or `interrupt` fires, and returns
/// `Ok` for a normal end (exit 0). Diagnostics go to stderr, messages to stdout. `open` turns
/// true once the connection is open: before that, an interrupt has nothing to close, and the
/// caller may rather end at once than wait for the connect timeout.
pub fn run(config: &Config, interrupt: Receiver<()>, open: &AtomicBool) -> Result<(), Error> {
    match config.options.proxy.for_target(&config.target) {
        Ok(Some(proxy)) => eprintln!("connecting to {} via {proxy}", config.target.url),
        _ => eprintln!("connecting to {}", config.target.url),
    }
    let (mut reader, writer) = connect(&config.target, &config.options)?;
    open.store(true, Ordering::SeqCst);

    let lines_mode = matches!(config.input, Input::Lines(_));
    let (done_tx, done) = bounded::<Done>(1);
    let (echo_tx, echoes) = unbounded::<()>();
    let prefix = !lines_mode || io::stdout().is_terminal();
    thread::Builder::new()
        .name("wsecho-reader".into())
        .spawn(move || {
            let end = read_loop(&mut reader, prefix, &echo_tx);
            let _ = done_tx.send(end);
        })
        .map_err(Error::Io)?;

    let stop = watch_interrupt(interrupt, writer.clone()).map_err(Error::Io)?;
    let (ticks, lines) = match &config.input {
        Input::Ticks { interval } => (tick(*interval), never()),
        Input::Lines(lines) => (never(), lines.clone()),
    };
    let mut ticks = ticks;
    let mut lines = lines;
    let mut finish_by = never();
    let mut finishing = false;
    let (mut sent, mut echoed) = (0u64, 0u64);
    loop {
        let mut outgoing = None;
        select! {
            recv(done) -> end => {
                if let Ok(Done::OutputClosed) = end {
                    let _ = writer.close(CloseCode::Normal, "");
                }
                return server_ended(end.ok());
            }
            recv(echoes) -> _ => {
                echoed += 1;
                if finishing && echoed >= sent {
                    break;
                }
            }
            recv(ticks) -> _ => outgoing = Some(Message::text(crate::time::rfc3339(SystemTime::now()))),
            recv(lines) -> line => match line {
                Ok(message) => outgoing = Some(message),
                Err(_) => {
                    lines = never();
                    if echoed >= sent {
                        break;
                    }
                    finish_by = after(config.wait);
                    finishing = true;
                }
            },
            recv(finish_by) -> _ => {
                eprintln!("{} of {sent} echoes still outstanding after {:?}", sent - echoed, config.wait);
                break;
            }
            recv(stop.requested) -> _ => break,
        }
        if let Some(message) = outgoing {
            if let Err(e) = writer.send(message) {
                if stop.interrupted.load(Ordering::SeqCst) {
                    // Ctrl-C cut a write the server was not taking: no Close could get through.
                    eprintln!("the server stopped reading: closed without the closing handshake");
                    return Ok(());
                }
                // The reader sees the same break and says why; prefer its account.
                return match done.recv_timeout(CLOSE_WAIT) {
                    Ok(end) => server_ended(Some(end)),
                    Err(_) => Err(e),
                };
            }
            sent += 1;
            if config.count == Some(sent) {
                ticks = never();
                lines = never();
                finish_by = after(config.wait);
                finishing = true;
            }
        }
    }
    close_and_wait(&writer, &done)
}

/// Ctrl-C as the select loop sees it.
struct Stop {
    /// Ctrl-C came: dial has `CLOSE_WAIT` from now to close.
    requested: Receiver<()>,
    /// Set before the request is sent, and before the connection may be cut.
    interrupted: Arc<AtomicBool>,
    /// Dropped when `run` returns: the watcher then has nothing left to cut.
    _running: Sender<()>,
}

/// Passes Ctrl-C on to the select loop, and makes sure it wins: the main thread may be
/// blocked writing to a server that stopped reading (for up to the write timeout), and then
/// neither the select loop nor a Close gets a turn. So if dial has not finished `CLOSE_WAIT`
/// after the signal, the watcher cuts the connection, which fails the blocked write at once.
/// One thread that sleeps in `recv` until a signal comes; it needs no lock and no polling,
/// whichever thread the kernel handed the signal to.
fn watch_interrupt(interrupt: Receiver<()>, writer: Writer) -> io::Result<Stop> {
    let (request, requested) = bounded::<()>(1);
    let (running, finished) = bounded::<()>(1);
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let watcher = thread::Builder::new()
        .name("wsecho-interrupt".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if interrupt.recv().is_err() {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            let _ = request.send(());
            if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(CLOSE_WAIT) {
                writer.cut();
            }
        });
    watcher.map(|_| Stop {
        requested,
        interrupted,
        _running: running,
    })
}

/// Sends Close 1000 and gives the server `CLOSE_WAIT` to finish the handshake.
fn close_and_wait(writer: &Writer, done: &Receiver<Done>) -> Result<(), Error> {
    // The server may have closed first, right behind the last echo: then its code decides.
    if let Ok(end) = done.try_recv() {
        return server_ended(Some(end));
    }
    // A failure here means the connection is already ending; the reader says how.
    let _ = writer.close(CloseCode::Normal, "");
    match done.recv_timeout(CLOSE_WAIT) {
        // The reply to our 1000 echoes it; another code is the server's own Close, which
        // crossed ours on the wire.
        Ok(Done::Closed(Some(f))) if !matches!(f.code, CloseCode::Normal | CloseCode::Away) => {
            Err(Error::ClosedByServer(Some(f)))
        }
        _ => Ok(()),
    }
}

/// The exit for a connection the server (or the network) ended.
fn server_ended(end: Option<Done>) -> Result<(), Error> {
    match end {
        Some(Done::Closed(frame)) => match &frame {
            Some(f) if matches!(f.code, CloseCode::Normal | CloseCode::Away) => {
                eprintln!("server closed the connection: {}", describe(&frame));
                Ok(())
            }
            _ => Err(Error::ClosedByServer(frame)),
        },
        Some(Done::Failed(e)) => Err(e),
        Some(Done::OutputClosed) => Ok(()),
        None => Err(Error::Lost("the reader thread stopped".into())),
    }
}

/// The reader thread: prints every message, counts echoes, reports how it ended.
fn read_loop(reader: &mut Reader, prefix: bool, echoes: &Sender<()>) -> Done {
    let stdout = io::stdout();
    loop {
        let message = match reader.recv() {
            Ok(Incoming::Message(m)) => m,
            Ok(Incoming::Closed(frame)) => return Done::Closed(frame),
            Err(e) => return Done::Failed(e),
        };
        let mut out = stdout.lock();
        let printed = print(&mut out, &message, prefix).and_then(|()| out.flush());
        drop(out);
        if let Err(e) = printed {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Done::OutputClosed;
            }
            return Done::Failed(Error::Io(e));
        }
        let _ = echoes.send(());
    }
}

fn print(out: &mut impl Write, message: &Message, prefix: bool) -> io::Result<()> {
    if prefix {
        out.write_all(b"recv: ")?;
    }
    match message {
        // A `recv:` line is for a person: the server's text cannot forge lines or drive the
        // terminal. Bare lines (`--stdin` into a pipe) are data, passed on byte for byte.
        Message::Text(text) if prefix => write!(out, "{}", Escaped(text))?,
        Message::Text(text) => out.write_all(text.as_bytes())?,
        Message::Binary(data) if prefix => {
            write!(out, "{} bytes binary: {}", data.len(), Hex(data))?
        }
        Message::Binary(data) => out.write_all(data)?,
        _ => {}
    }
    out.write_all(b"\n")
}

/// The first bytes of a binary message in hex, for a person reading `recv:` lines.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(32) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 32 {
            f.write_str("…")?;
        }
        Ok(())
    }
}
