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
mod progress;
pub mod proxy;
mod reconnect;
mod resend;
mod stats;
pub mod target;

pub use conn::{Incoming, Options, Reader, Timings, Writer, connect, connect_timed};
pub use error::Error;
pub use progress::Progress;
pub use proxy::{Proxy, ProxyChoice, ProxyEnv, ProxyError, ProxySource};
pub use reconnect::RESET_AFTER;
pub use stats::MIN_SIZE as MIN_PROBE_SIZE;
pub use target::{Target, TargetError};

use crate::log::Escaped;
use crossbeam_channel::{
    Receiver, RecvTimeoutError, Sender, after, bounded, never, select, tick, unbounded,
};
use error::{describe, is_restart};
use reconnect::Backoff;
use resend::InFlight;
use stats::Probes;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};
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
    /// Stop after sending this many messages (and receiving their echoes). When
    /// reconnecting, ticks and lines count by their echoes: a tick lost with its connection
    /// is made up for by another.
    pub count: Option<u64>,
    /// After the last message, how long to wait for outstanding echoes (from the last
    /// reconnect on, when reconnecting).
    pub wait: Duration,
    /// Whether to ride out a broken connection by connecting again.
    pub reconnect: Option<Reconnect>,
}

/// How to reconnect: when the connection breaks, a connect fails in a way that may heal (see
/// [`Error::will_heal`]), or the server closes with 1001, 1012 or 1013. The first connect
/// retries too: a box may well start before its server. Lines of [`Input::Lines`] sent and
/// not yet echoed are sent again on the next connection, so every line is echoed exactly
/// once, in order.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// The longest wait between two attempts.
    pub max_wait: Duration,
    /// With [`Input::Lines`]: lines that may wait for their echo at once. At this many, dial
    /// reads no more input until echoes come back, so memory stays bounded.
    pub window: usize,
    /// How the line that announces each attempt words the error that caused it: as the
    /// caller would word it had that error ended the run (a command line adds hints that
    /// name its flags, which the library does not know), so both say the same.
    /// `Error::to_string` gives the library's own words.
    pub explain: fn(&Error) -> String,
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
    /// A probe of `size` bytes every `interval`, its round-trip time printed as ping(8)
    /// does, and a summary at the end; it fails (exit 1) unless every probe came back.
    Probes {
        /// Time between two probes.
        interval: Duration,
        /// Bytes per probe, at least [`MIN_PROBE_SIZE`].
        size: usize,
    },
}

/// How the reader thread saw the connection end.
enum Done {
    Closed(Option<CloseFrame>),
    Failed(Error),
    /// Whoever reads our output is gone (`| head`): a normal way for a pipeline to stop.
    OutputClosed,
}

/// How one connection's select loop ended.
enum End {
    /// Dial ended it (input done, Ctrl-C, output closed): this is how the run ends.
    Final(Result<(), Error>),
    /// The server or the network ended it: perhaps a case for reconnecting.
    Broken(Done),
}

/// Dials, runs the select loop until the connection ends or `interrupt` fires, and returns
/// `Ok` for a normal end (exit 0). Diagnostics go to stderr, messages to stdout. `progress`
/// tells the caller's Ctrl-C handling whether a connection is open: otherwise an interrupt
/// has nothing to close, and the caller may rather end at once (see [`Progress`]) than wait
/// for the connect timeout or the next reconnect.
pub fn run(config: &Config, interrupt: Receiver<()>, progress: &Progress) -> Result<(), Error> {
    match config.options.proxy.for_target(&config.target) {
        Ok(Some(proxy)) => eprintln!("connecting to {} via {proxy}", config.target.url),
        _ => eprintln!("connecting to {}", config.target.url),
    }
    let current = Arc::new(Mutex::new(None));
    let stop = watch_interrupt(interrupt, current.clone()).map_err(Error::Io)?;
    let mut dial = Dial::new(config);
    progress.start(dial.probes.clone(), &config.target.url);
    let result = dial.run(&stop, &current, progress);
    progress.finish();
    let Some(probes) = &dial.probes else {
        return result;
    };
    match probes.counts() {
        (sent, received) if result.is_ok() && received < sent => {
            Err(Error::Unanswered { sent, received })
        }
        _ => result,
    }
}

/// A dial run: what it has sent and received, across its connections.
struct Dial<'a> {
    config: &'a Config,
    ticks: Receiver<Instant>,
    lines: Receiver<Message>,
    /// Stands in for `lines` (or `ticks`) while nothing is to be taken from them.
    idle_lines: Receiver<Message>,
    idle_ticks: Receiver<Instant>,
    /// Standard input (or the caller's channel) has ended.
    lines_ended: bool,
    /// Messages sent, each counted once, and echoes received.
    sent: u64,
    echoed: u64,
    /// With reconnecting lines: what waits for its echo, to send again.
    in_flight: Option<Arc<InFlight>>,
    /// With probes: their send times and round trips.
    probes: Option<Arc<Probes>>,
    echo_tx: Sender<()>,
    echoes: Receiver<()>,
    /// Ends the wait for the last echoes.
    finish_by: Receiver<Instant>,
}

impl<'a> Dial<'a> {
    fn new(config: &'a Config) -> Dial<'a> {
        let (ticks, lines) = match &config.input {
            Input::Ticks { interval } | Input::Probes { interval, .. } => {
                (tick(*interval), never())
            }
            Input::Lines(lines) => (never(), lines.clone()),
        };
        let in_flight = match (&config.input, &config.reconnect) {
            (Input::Lines(_), Some(_)) => Some(Arc::default()),
            _ => None,
        };
        let probes = match config.input {
            Input::Probes { size, .. } => Some(Arc::new(Probes::new(size))),
            _ => None,
        };
        let (echo_tx, echoes) = unbounded();
        Dial {
            config,
            ticks,
            lines,
            idle_lines: never(),
            idle_ticks: never(),
            lines_ended: false,
            sent: 0,
            echoed: 0,
            in_flight,
            probes,
            echo_tx,
            echoes,
            finish_by: never(),
        }
    }

    /// No more to send: the input ended or the count is reached.
    fn input_done(&self) -> bool {
        self.lines_ended || self.config.count.is_some_and(|n| self.sent >= n)
    }

    /// Connects, runs the select loop, and while reconnecting, does both again for as long
    /// as the connection ends in a way that may heal.
    fn run(
        &mut self,
        stop: &Stop,
        current: &Mutex<Option<Writer>>,
        progress: &Progress,
    ) -> Result<(), Error> {
        let mut backoff = self
            .config
            .reconnect
            .as_ref()
            .map(|r| Backoff::new(r.max_wait));
        loop {
            let (reader, writer, timings) =
                match connect_timed(&self.config.target, &self.config.options) {
                    Ok(connection) => connection,
                    Err(e) => match backoff.as_mut() {
                        Some(backoff) if e.will_heal() => {
                            self.wait_before_retry(backoff, &e, stop)?;
                            continue;
                        }
                        _ => return Err(e),
                    },
                };
            if !progress.opened() {
                // Ctrl-C came during the connect, and the process is ending.
                return Err(Error::Interrupted);
            }
            let opened = Instant::now();
            *lock(current) = Some(writer.clone());
            if let Some(probes) = &self.probes {
                probes.connected(timings);
            }
            let (done_tx, done) = bounded::<Done>(1);
            let track = self.track();
            let echo_tx = self.echo_tx.clone();
            let mut reader = reader;
            let reading = thread::Builder::new()
                .name("wsecho-reader".into())
                .spawn(move || {
                    let end = read_loop(&mut reader, &track, &echo_tx);
                    let _ = done_tx.send(end);
                })
                .map_err(Error::Io)?;
            let done = match self.connection(&writer, &done, stop) {
                End::Final(result) => return result,
                End::Broken(done) => done,
            };
            let heals = match &done {
                Done::Closed(Some(frame)) => is_restart(frame.code),
                Done::Failed(e) => e.will_heal(),
                Done::Closed(None) | Done::OutputClosed => false,
            };
            let Some(backoff) = backoff.as_mut().filter(|_| heals) else {
                return server_ended(Some(done));
            };
            *lock(current) = None;
            writer.cut();
            // The next connection's reader must be the only one taking echoes off the queue;
            // and once this one is gone, a summary Ctrl-C writes is the last line on stdout.
            let _ = reading.join();
            progress.closed();
            self.echoed += self.echoes.try_iter().count() as u64;
            if self.in_flight.is_none() && self.probes.is_none() {
                // A tick lost with its connection is made up for by the next one.
                self.sent = self.echoed;
            }
            if self.input_done() && self.echoed >= self.sent {
                // Nothing is left to send or to wait for: no reason to come back.
                if let Done::Closed(frame) = &done {
                    eprintln!("server closed the connection: {}", describe(frame));
                }
                return Ok(());
            }
            backoff.connection_ended(opened);
            let why = match done {
                Done::Failed(e) => e,
                Done::Closed(frame) => Error::ClosedByServer(frame),
                Done::OutputClosed => return Ok(()),
            };
            self.wait_before_retry(backoff, &why, stop)?;
        }
    }

    /// Says why and when dial tries again (one line per attempt), and waits; Ctrl-C ends the
    /// wait and the run.
    fn wait_before_retry(
        &self,
        backoff: &mut Backoff,
        why: &Error,
        stop: &Stop,
    ) -> Result<(), Error> {
        let why = match &self.config.reconnect {
            Some(reconnect) => (reconnect.explain)(why),
            None => why.to_string(),
        };
        let (attempt, wait) = backoff.next();
        let ms = wait.as_millis();
        eprintln!(
            "{why}; reconnecting in {}.{:02} s (attempt {attempt})",
            ms / 1000,
            ms % 1000 / 10
        );
        select! {
            recv(after(wait)) -> _ => Ok(()),
            recv(stop.requested) -> _ => Err(Error::Interrupted),
        }
    }

    /// How the reader thread handles what it receives.
    fn track(&self) -> Track {
        if let Some(probes) = &self.probes {
            return Track::Probe {
                probes: probes.clone(),
                url: self.config.target.url.clone(),
            };
        }
        let prefix = !matches!(self.config.input, Input::Lines(_)) || io::stdout().is_terminal();
        match &self.in_flight {
            Some(in_flight) => Track::Resend {
                prefix,
                in_flight: in_flight.clone(),
            },
            None => Track::Print { prefix },
        }
    }

    /// One connection's select loop: sends again what the last connection lost, then ticks
    /// or lines, until the input is done and echoed, Ctrl-C, or the connection ends.
    fn connection(&mut self, writer: &Writer, done: &Receiver<Done>, stop: &Stop) -> End {
        if let Some(in_flight) = &self.in_flight {
            for message in in_flight.waiting() {
                if let Err(e) = writer.send(message) {
                    return self.send_failed(e, done, stop);
                }
            }
        }
        self.finish_by = match self.input_done() {
            true => after(self.config.wait),
            false => never(),
        };
        let window = self.config.reconnect.as_ref().map(|r| r.window as u64);
        loop {
            let mut outgoing = None;
            let input_done = self.input_done();
            let lines = match input_done || window.is_some_and(|w| self.sent - self.echoed >= w) {
                true => &self.idle_lines,
                false => &self.lines,
            };
            let ticks = match input_done {
                true => &self.idle_ticks,
                false => &self.ticks,
            };
            select! {
                recv(done) -> end => {
                    self.echoed += self.echoes.try_iter().count() as u64;
                    return match end {
                        Ok(Done::OutputClosed) => {
                            let _ = writer.close(CloseCode::Normal, "");
                            End::Final(Ok(()))
                        }
                        Ok(end) => End::Broken(end),
                        Err(_) => End::Final(Err(Error::Lost("the reader thread stopped".into()))),
                    };
                }
                recv(self.echoes) -> _ => {
                    self.echoed += 1;
                    if input_done && self.echoed >= self.sent {
                        break;
                    }
                }
                recv(ticks) -> _ => outgoing = Some(self.next_tick()),
                recv(lines) -> line => match line {
                    Ok(message) => outgoing = Some(message),
                    Err(_) => {
                        self.lines_ended = true;
                        if self.echoed >= self.sent {
                            break;
                        }
                        self.finish_by = after(self.config.wait);
                    }
                },
                recv(self.finish_by) -> _ => {
                    eprintln!(
                        "{} of {} echoes still outstanding after {:?}",
                        self.sent - self.echoed,
                        self.sent,
                        self.config.wait
                    );
                    break;
                }
                recv(stop.requested) -> _ => break,
            }
            if let Some(message) = outgoing {
                if let Some(in_flight) = &self.in_flight {
                    in_flight.sent(message.clone());
                }
                if let Some(probes) = &self.probes {
                    probes.sending(self.sent + 1);
                }
                // Counted before the write: a message the write may have lost still
                // waits for its echo.
                self.sent += 1;
                if let Err(e) = writer.send(message) {
                    return self.send_failed(e, done, stop);
                }
                if self.input_done() {
                    self.finish_by = after(self.config.wait);
                }
            }
        }
        End::Final(close_and_wait(writer, done))
    }

    /// What a tick sends: the time, or the next probe.
    fn next_tick(&self) -> Message {
        match &self.probes {
            Some(probes) => probes.payload(self.sent + 1),
            None => Message::text(crate::time::rfc3339(SystemTime::now())),
        }
    }

    /// A write failed: Ctrl-C cut it, or the connection broke (the reader says how).
    fn send_failed(&mut self, e: Error, done: &Receiver<Done>, stop: &Stop) -> End {
        if stop.interrupted.load(Ordering::SeqCst) {
            // Ctrl-C cut a write the server was not taking: no Close could get through.
            eprintln!("the server stopped reading: closed without the closing handshake");
            return End::Final(Ok(()));
        }
        // The reader sees the same break and says why; prefer its account.
        let end = done.recv_timeout(CLOSE_WAIT);
        self.echoed += self.echoes.try_iter().count() as u64;
        End::Broken(end.unwrap_or(Done::Failed(e)))
    }
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
/// after the signal, the watcher cuts the connection open then, which fails the blocked write
/// at once. One thread that sleeps in `recv` until a signal comes; it needs no lock and no
/// polling, whichever thread the kernel handed the signal to.
fn watch_interrupt(
    interrupt: Receiver<()>,
    current: Arc<Mutex<Option<Writer>>>,
) -> io::Result<Stop> {
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
            if let (Err(RecvTimeoutError::Timeout), Some(writer)) =
                (finished.recv_timeout(CLOSE_WAIT), lock(&current).as_ref())
            {
                writer.cut();
            }
        });
    watcher.map(|_| Stop {
        requested,
        interrupted,
        _running: running,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// What the reader thread does with each message.
enum Track {
    /// Prints it (today's dial).
    Print { prefix: bool },
    /// Checks it is the echo of the oldest line waiting, takes that off the queue, prints it.
    Resend {
        prefix: bool,
        in_flight: Arc<InFlight>,
    },
    /// Times the probe it echoes and prints a ping(8) line.
    Probe { probes: Arc<Probes>, url: String },
}

/// The reader thread: prints every message, counts echoes, reports how it ended.
fn read_loop(reader: &mut Reader, track: &Track, echoes: &Sender<()>) -> Done {
    let stdout = io::stdout();
    loop {
        let message = match reader.recv() {
            Ok(Incoming::Message(m)) => m,
            Ok(Incoming::Closed(frame)) => return Done::Closed(frame),
            Err(e) => return Done::Failed(e),
        };
        let arrived = matches!(track, Track::Probe { .. }).then(Instant::now);
        let mut out = stdout.lock();
        let printed = match track {
            Track::Print { prefix } => print(&mut out, &message, *prefix),
            Track::Resend { prefix, in_flight } => match in_flight.echoed(&message) {
                Ok(()) => print(&mut out, &message, *prefix),
                Err(waiting) => return Done::Failed(Error::NotAnEcho { waiting }),
            },
            Track::Probe { probes, url } => {
                match probes.echoed(&message, arrived.unwrap_or_else(Instant::now)) {
                    Some(echo) => stats::print_echo(&mut out, url, &echo),
                    None => {
                        eprintln!("a message that answers no probe dial is waiting for: ignored");
                        continue;
                    }
                }
            }
        };
        let printed = printed.and_then(|()| out.flush());
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
