//! Why dialing failed, as data; each message says what happened and what to check.

use super::proxy::ProxyError;
use super::target::TargetError;
use crate::log::Escaped;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tungstenite::protocol::CloseFrame;

/// Why dialing failed; each says what happened and what to check.
#[derive(Debug)]
pub enum Error {
    /// The URL or a header was refused before connecting.
    Target(TargetError),
    /// The host name did not resolve.
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The TCP connection failed.
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Nothing answered within the connect timeout.
    ConnectTimeout {
        /// The URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The server answered the upgrade with an HTTP status other than 101.
    Refused {
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The proxy did not give us a tunnel to the target.
    Proxy(ProxyError),
    /// The handshake failed otherwise.
    Handshake(String),
    /// The server stopped answering, or closed, during the handshake: a server that is
    /// restarting does that, so unlike [`Error::Handshake`] it may heal.
    HandshakeCut(String),
    /// The server did not answer the upgrade request within the connect timeout.
    HandshakeTimeout {
        /// The URL.
        url: String,
    },
    /// The connection broke after the handshake.
    Lost(String),
    /// The server closed with a code other than 1000 or 1001.
    ClosedByServer(Option<CloseFrame>),
    /// With an echo tracked for every message sent, the server sent something other than
    /// the echo of the oldest message still waiting for one: it is not an echo server, or
    /// not one that keeps the order.
    NotAnEcho {
        /// How many messages were waiting for their echo.
        waiting: usize,
    },
    /// Ctrl-C came while no connection was open (between two, or during a connect), with
    /// nothing to close.
    Interrupted,
    /// Probes went out and not all of them came back.
    Unanswered {
        /// Probes sent.
        sent: u64,
        /// Echoes received.
        received: u64,
    },
    /// TLS failed: the handshake, the certificates, or the files for them.
    #[cfg(feature = "tls")]
    Tls(crate::tls::Error),
    /// A local I/O error.
    Io(io::Error),
}

impl Error {
    /// Whether trying again later may succeed: the server may be restarting, or the network
    /// may come back. Mistakes (a malformed URL, a refused upgrade, a server that is not an
    /// echo) and deliberate ends (Close 1000, any other code than 1001, 1012 and 1013) will
    /// not heal by waiting, so reconnecting stops on them. A TLS verification failure is one
    /// of those: the variant for it answers `false` here.
    pub fn will_heal(&self) -> bool {
        match self {
            Error::Resolve { .. }
            | Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::HandshakeCut(_)
            | Error::HandshakeTimeout { .. }
            | Error::Lost(_) => true,
            // 4xx: the request is wrong (path, origin, credentials); 5xx: a server or
            // gateway that is overloaded or restarting (wsecho's own 503 at --max-conns).
            Error::Refused { status, .. } => *status >= 500,
            Error::Proxy(e) => e.will_heal(),
            // A server that is restarting may cut the handshake or not answer in time; a
            // certificate it does not trust, or one we do not, stays that way.
            #[cfg(feature = "tls")]
            Error::Tls(e) => matches!(
                e,
                crate::tls::Error::Closed | crate::tls::Error::TimedOut | crate::tls::Error::Io(_)
            ),
            Error::ClosedByServer(Some(frame)) => is_restart(frame.code),
            Error::ClosedByServer(None)
            | Error::Target(_)
            | Error::Handshake(_)
            | Error::NotAnEcho { .. }
            | Error::Interrupted
            | Error::Unanswered { .. }
            | Error::Io(_) => false,
        }
    }
}

/// Close codes that ask the client to come back: 1001 going away (a server shutting down
/// for a restart sends it), 1012 service restart, 1013 try again later.
pub(crate) fn is_restart(code: tungstenite::protocol::frame::coding::CloseCode) -> bool {
    matches!(u16::from(code), 1001 | 1012 | 1013)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Target(e) => write!(f, "{e}"),
            Error::Resolve { host, source } => {
                write!(
                    f,
                    "cannot resolve host '{host}': {source} (check the host name)"
                )
            }
            Error::Connect { addr, source } => {
                let hint = match source.kind() {
                    io::ErrorKind::ConnectionRefused => " (is the server running, on this port?)",
                    _ => "",
                };
                write!(f, "cannot connect to {addr}: {source}{hint}")
            }
            Error::ConnectTimeout { url, after } => write!(
                f,
                "cannot connect to {url}: no answer within {after:?} (check the address and any firewall, or allow more time)"
            ),
            Error::Refused { status, reason } => {
                write!(f, "server refused the WebSocket upgrade: {status} {reason}")?;
                match status {
                    403 => write!(f, " (the server may refuse this Origin)"),
                    404 => write!(f, " (check the URL's path; wsecho serves /echo)"),
                    _ => Ok(()),
                }
            }
            Error::Proxy(e) => write!(f, "{e}"),
            Error::Handshake(why) | Error::HandshakeCut(why) => {
                write!(f, "WebSocket handshake failed: {why}")
            }
            Error::HandshakeTimeout { url } => write!(
                f,
                "WebSocket handshake failed: no handshake response from {url} in time"
            ),
            Error::Lost(why) => write!(f, "connection lost: {why}"),
            Error::ClosedByServer(frame) => {
                write!(f, "server closed the connection: {}", describe(frame))
            }
            Error::NotAnEcho { waiting: 0 } => write!(
                f,
                "the server sent a message while no echo was due (is it an echo server?)"
            ),
            Error::NotAnEcho { waiting } => write!(
                f,
                "the server sent a message that is not the echo of the oldest of the {waiting} messages waiting for one (is it an echo server that keeps the order?)"
            ),
            Error::Interrupted => write!(f, "interrupted while reconnecting"),
            Error::Unanswered { sent, received } => write!(
                f,
                "{} of {sent} probes got no echo",
                sent.saturating_sub(*received)
            ),
            #[cfg(feature = "tls")]
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// `1001 (server shutting down)`, or `no status code`.
pub(crate) fn describe(frame: &Option<CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => format!("{}", u16::from(f.code)),
        Some(f) => format!("{} ({})", u16::from(f.code), Escaped(&f.reason)),
        None => "no status code".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::CloseCode;

    fn closed(code: u16) -> Error {
        Error::ClosedByServer(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        }))
    }

    #[test]
    fn what_will_heal_is_what_a_restarting_server_or_network_does() {
        let refused = |status| Error::Refused {
            status,
            reason: String::new(),
        };
        let connect = Error::Connect {
            addr: ([127, 0, 0, 1], 1).into(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        for healing in [
            connect,
            Error::Lost("reset".into()),
            Error::HandshakeCut("eof".into()),
            Error::HandshakeTimeout {
                url: "ws://127.0.0.1:1/".into(),
            },
            refused(503),
            closed(1001),
            closed(1012),
            closed(1013),
        ] {
            assert!(healing.will_heal(), "{healing}");
        }
        for lasting in [
            refused(404),
            refused(403),
            closed(1000),
            closed(1011),
            closed(4000),
            Error::ClosedByServer(None),
            Error::Handshake("chose an extension".into()),
            Error::NotAnEcho { waiting: 3 },
        ] {
            assert!(!lasting.will_heal(), "{lasting}");
        }
    }
}
