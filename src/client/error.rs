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
    /// The connection broke after the handshake.
    Lost(String),
    /// The server closed with a code other than 1000 or 1001.
    ClosedByServer(Option<CloseFrame>),
    /// TLS failed: the handshake, the certificates, or the files for them.
    #[cfg(feature = "tls")]
    Tls(crate::tls::Error),
    /// A local I/O error.
    Io(io::Error),
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
            Error::Handshake(why) => write!(f, "WebSocket handshake failed: {why}"),
            Error::Lost(why) => write!(f, "connection lost: {why}"),
            Error::ClosedByServer(frame) => {
                write!(f, "server closed the connection: {}", describe(frame))
            }
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
