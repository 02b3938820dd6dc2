//! The echo loop of one WebSocket connection: read, log, write back; keep the peer alive or
//! let it go; close with the code the peer earned.
//!
//! Like the Go example's `echo` handler, with what a server left alone needs besides:
//! - every text message comes back as text and every binary one as binary, byte for byte;
//!   tungstenite answers pings and Close frames;
//! - a quiet peer is pinged after `ping_interval`, and dropped with 1001 once it has said
//!   nothing (not even a pong) for `idle_timeout`: how half-open connections are reclaimed;
//! - a peer that breaks the rules gets 1002 (protocol), 1007 (invalid UTF-8) or 1009 (too
//!   big), sent before the connection ends, since tungstenite only reports these;
//! - a stopping server's 1001 is sent here if the stopping thread found this connection busy.

use super::config::Limits;
use super::tracker::{Ticket, Tracker, going_away};
use crate::link::{Link, ReadBuf, ReadTimeout, Session, Transport};
use crate::log::{Log, Printable};
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tungstenite::{Bytes, Message};

/// After the server sends its Close, how long the peer has to answer before the connection
/// is cut.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A message at least this big grows the connection's buffers...
const BIG_MESSAGE: usize = 64 * 1024;
/// ...which it gives back after this long without traffic.
const QUIET: Duration = Duration::from_secs(1);

/// One upgraded connection and what its loop needs.
pub(crate) struct Conn<'a, W> {
    /// The socket the loop reads, outside the link's lock.
    pub(crate) stream: Arc<TcpStream>,
    /// The writing half: plain TCP's writer, or TLS.
    pub(crate) transport: W,
    /// The subject of the certificate the client presented (mutual TLS), for the log.
    pub(crate) subject: Option<String>,
    pub(crate) ctx: WebSocketContext,
    /// Bytes that came behind the upgrade request, as the request's reader read them ahead.
    pub(crate) early: Vec<u8>,
    pub(crate) peer: super::forwarded::Peer,
    pub(crate) limits: &'a Limits,
    pub(crate) log: &'a Log,
    pub(crate) quiet: bool,
    pub(crate) tracker: &'a Tracker,
    pub(crate) ticket: &'a Ticket,
}

/// How a connection ended, for its close line in the log.
enum End {
    /// The closing handshake completed; the code the peer sent (or none).
    Closed(Option<CloseFrame>),
    /// The server closed it: idle peer, or the peer broke the rules.
    ClosedByServer(CloseCode, String),
    /// The TCP connection ended without a closing handshake, or failed.
    Broken(String),
}

/// Runs the echo loop until the connection ends, then logs how it ended.
pub(crate) fn serve<W: Transport + Send + 'static>(conn: Conn<'_, W>) {
    let Conn {
        stream,
        mut transport,
        subject,
        ctx,
        early,
        peer,
        limits,
        log,
        quiet,
        tracker,
        ticket,
    } = conn;
    let first = transport.first_input(early);
    let link = Arc::new(Link::new(ctx, Role::Server, transport));
    ticket.register(link.clone());
    match subject {
        Some(subject) => log.line(format_args!("open {peer} ({})", Printable(&subject))),
        None => log.line(format_args!("open {peer}")),
    }
    let mut echo = Echo {
        stream: &stream,
        link: &link,
        limits,
        log: (!quiet).then_some(log),
        tracker,
        peer_close: None,
        grown: false,
        hung_up: false,
    };
    let end = echo.run(first);
    if matches!(end, End::ClosedByServer(..) | End::Closed(_)) && !echo.hung_up {
        // Our Close (or our reply to the peer's) is written; let the peer read it rather than
        // a reset, should it have sent more behind its Close.
        link.goodbye();
        crate::link::close_gently(&stream);
    }
    match end {
        End::Closed(Some(f)) if f.reason.is_empty() => {
            log.line(format_args!("close {peer}: {}", u16::from(f.code)))
        }
        End::Closed(Some(f)) => log.line(format_args!(
            "close {peer}: {} ({})",
            u16::from(f.code),
            Printable(&f.reason)
        )),
        End::Closed(None) => log.line(format_args!("close {peer}: no status code")),
        End::ClosedByServer(code, why) => log.line(format_args!(
            "close {peer}: sent {} ({why})",
            u16::from(code)
        )),
        End::Broken(why) => log.line(format_args!("close {peer}: connection lost ({why})")),
    }
}

struct Echo<'a, W> {
    stream: &'a TcpStream,
    link: &'a Link<W>,
    limits: &'a Limits,
    /// `None` when the per-message log is off.
    log: Option<&'a Log>,
    tracker: &'a Tracker,
    /// The Close the peer sent, once it has.
    peer_close: Option<Option<CloseFrame>>,
    /// A big message grew the buffers since they were last given back.
    grown: bool,
    /// The peer closed its side of the TCP connection: nothing is left to drain.
    hung_up: bool,
}

/// What the last turn under the lock left to do.
enum Turn {
    Continue,
    Ended(End),
}

/// When the reader next wakes up if nothing arrives.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    /// Heard from the peer recently: ping when this runs out.
    Ping,
    /// Pinged: close as idle when this runs out.
    Idle,
    /// We sent Close: cut the connection when this runs out.
    Closing,
}

impl<W: Transport> Echo<'_, W> {
    /// Runs the loop; a `first` turn reads what came with the upgrade request.
    fn run(&mut self, first: Option<Vec<u8>>) -> End {
        if let Some(early) = first {
            let link = self.link;
            if let Turn::Ended(end) = link.with(&early, |session| self.turn(session)) {
                return end;
            }
        }
        let mut buf = ReadBuf::new();
        let mut wait = Wait::Ping;
        let mut read_timeout = ReadTimeout::new();
        if self.tracker.stopping() {
            // The server began stopping while this connection upgraded, perhaps after the
            // goodbye went round (registration and the goodbye's snapshot share one lock,
            // and the stop is flagged before the snapshot): say goodbye here.
            self.link.with(&[], |session| {
                if session.can_write() {
                    let _ = session.close(going_away());
                }
            });
            wait = Wait::Closing;
        }
        loop {
            let timeout = match wait {
                Wait::Ping if self.grown => QUIET.min(self.limits.ping_interval),
                Wait::Ping => self.limits.ping_interval,
                Wait::Idle => self
                    .limits
                    .idle_timeout
                    .saturating_sub(self.limits.ping_interval),
                Wait::Closing => CLOSE_TIMEOUT,
            };
            // Only a changed timeout costs a syscall: while messages flow it stays the same.
            if let Err(e) = read_timeout.set(self.stream, timeout) {
                return End::Broken(e.to_string());
            }
            let turn = match buf.read_from(self.stream) {
                Ok([]) => return self.reset_end(),
                Ok(bytes) => {
                    if wait == Wait::Idle {
                        wait = Wait::Ping;
                    }
                    let link = self.link;
                    link.with(bytes, |session| self.turn(session))
                }
                Err(e) if is_timeout(&e) => {
                    buf.shrink();
                    match wait {
                        Wait::Ping if self.grown => {
                            // Quiet after big messages: give their buffers back, then wait
                            // a whole ping interval as usual. One try: a peer stalled inside
                            // a message keeps them until its next big message.
                            self.grown = false;
                            if self.link.with(&[], |s| s.renew()) {
                                crate::sys::trim_heap();
                            }
                            Turn::Continue
                        }
                        Wait::Closing => return End::Broken("no answer to our Close".into()),
                        Wait::Idle => {
                            let why = format!("idle for {:?}", self.limits.idle_timeout);
                            return self.fail(CloseCode::Away, why);
                        }
                        Wait::Ping => {
                            wait = Wait::Idle;
                            let link = self.link;
                            link.with(&[], |s| self.ping(s))
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Turn::Continue,
                Err(e) => return End::Broken(e.to_string()),
            };
            match turn {
                Turn::Continue => {}
                Turn::Ended(end) => return end,
            }
            if wait != Wait::Closing && self.peer_close.is_none() && self.tracker.stopping() {
                // The stopping thread leaves a connection it found busy to its own thread.
                self.link.with(&[], |session| {
                    if session.can_write() {
                        let _ = session.close(going_away());
                    }
                });
                wait = Wait::Closing;
            }
        }
    }

    /// Echoes every complete message in the input, then writes all of it out in one go.
    fn turn(&mut self, session: &mut Session<'_, W>) -> Turn {
        loop {
            match session.next_message() {
                Ok(Some(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    self.grown |= message.len() >= BIG_MESSAGE;
                    if let Some(log) = self.log {
                        match &message {
                            Message::Text(text) => log.recv_text(text),
                            _ => log.recv_binary(message.len()),
                        }
                    }
                    // The same message goes back: same type, same bytes, no copy.
                    if session.can_write()
                        && let Err(e) = session.send(message)
                    {
                        return self.error_turn(session, e);
                    }
                }
                Ok(Some(Message::Close(frame))) => self.peer_close = Some(frame),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return self.error_turn(session, e),
            }
        }
        if self.tracker.stopping() && session.can_write() {
            let _ = session.close(going_away());
        }
        match session.flush() {
            Ok(()) => Turn::Continue,
            Err(e) => self.error_turn(session, e),
        }
    }

    /// Pings a quiet peer; what it answers (anything) proves it is still there.
    fn ping(&self, session: &mut Session<'_, W>) -> Turn {
        if !session.can_write() {
            return Turn::Continue;
        }
        match session
            .send(Message::Ping(Bytes::new()))
            .and_then(|()| session.flush())
        {
            Ok(()) => Turn::Continue,
            Err(e) => Turn::Ended(End::Broken(e.to_string())),
        }
    }

    /// Turns a tungstenite error into the end it means: the closing handshake completing,
    /// or a Close with the code the peer earned.
    fn error_turn(&self, session: &mut Session<'_, W>, e: WsError) -> Turn {
        let (code, why) = match e {
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                return Turn::Ended(End::Closed(self.peer_close.clone().flatten()));
            }
            WsError::Protocol(p) => (CloseCode::Protocol, p.to_string()),
            WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8 in a text message".into()),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
                CloseCode::Size,
                format!("message of {size} bytes over the {max_size}-byte limit"),
            ),
            WsError::Capacity(c) => (CloseCode::Size, c.to_string()),
            other => return Turn::Ended(End::Broken(other.to_string())),
        };
        let _ = session.close(CloseFrame {
            code,
            reason: reason_for(code).into(),
        });
        Turn::Ended(End::ClosedByServer(code, why))
    }

    /// Sends Close `code` to end the connection from our side.
    fn fail(&self, code: CloseCode, why: String) -> End {
        self.link.with(&[], |session| {
            let _ = session.close(CloseFrame {
                code,
                reason: reason_for(code).into(),
            });
        });
        End::ClosedByServer(code, why)
    }

    /// The peer closed TCP: after a Close it is the end of a clean close, before it a break.
    fn reset_end(&mut self) -> End {
        self.hung_up = true;
        match &self.peer_close {
            Some(frame) => End::Closed(frame.clone()),
            None => End::Broken("closed without a Close frame".into()),
        }
    }
}

fn reason_for(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Protocol => "protocol error",
        CloseCode::Invalid => "invalid UTF-8",
        CloseCode::Size => "message too big",
        CloseCode::Away => "idle timeout",
        _ => "",
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
