//! What can go wrong on the way through a proxy, each with a message that names the proxy
//! (without credentials), the variable it came from, and what to do.

use super::{ProxySource, http_connect, socks5};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why the proxy did not give us a tunnel. Its message names the proxy (without
/// credentials) and the variable it came from.
#[derive(Debug)]
pub struct ProxyError {
    /// The proxy's URL without credentials (for a URL that did not parse, with them hidden).
    pub proxy: String,
    /// Where the proxy setting came from.
    pub source: ProxySource,
    /// The target the tunnel was for (`host:port`), once there was one.
    pub target: Option<String>,
    /// What went wrong.
    pub kind: ProxyErrorKind,
}

/// What went wrong with a proxy.
#[derive(Debug)]
pub enum ProxyErrorKind {
    /// The proxy URL cannot be used; says why.
    BadUrl(String),
    /// An `https://` proxy, and this build has no TLS.
    #[cfg(not(feature = "tls"))]
    HttpsWithoutTls,
    /// TLS to an `https://` proxy failed (its certificate, its name, or the handshake).
    /// Boxed: a TLS error is large, and every dial result carries room for this one.
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::Error>),
    /// The proxy's host name did not resolve.
    Resolve(io::Error),
    /// The TCP connection to the proxy failed.
    Unreachable(SocketAddr, io::Error),
    /// The proxy did not connect, or answer, within the connect timeout.
    Timeout(Duration),
    /// An `https://` proxy took the connection but did not answer the TLS handshake within
    /// the connect timeout: perhaps a plain proxy waiting for the rest of a request line.
    #[cfg(feature = "tls")]
    TlsSilent(Duration),
    /// The proxy closed (or reset) the connection instead of answering.
    Closed,
    /// Reading from or writing to the proxy failed otherwise.
    Io(io::Error),
    /// An `http://` proxy did not answer `CONNECT` with HTTP.
    NotHttp,
    /// The proxy's reply head was too large, or had too many headers.
    HeadTooLarge,
    /// The proxy wants credentials and the URL has none (HTTP 407, or a SOCKS5 proxy that
    /// accepts only user/password).
    CredentialsWanted,
    /// The proxy refused the credentials in the URL; the proxy's answer.
    CredentialsRefused(String),
    /// An HTTP proxy refused `CONNECT`; its status line.
    Refused(String),
    /// A `socks5://` proxy did not answer as SOCKS5.
    NotSocks,
    /// The SOCKS5 proxy accepts none of the authentication methods we offered.
    NoAcceptableMethod,
    /// The SOCKS5 proxy could not connect to the target; its reply code.
    SocksReply(u8),
    /// The SOCKS5 proxy broke the protocol; how.
    SocksProtocol(&'static str),
    /// With `socks5://` the target's name is resolved here, and it did not resolve.
    TargetResolve(String, io::Error),
    /// A name or credential longer than SOCKS5's 255 bytes; which.
    TooLong(&'static str),
}

impl ProxyError {
    /// Whether trying again later may succeed: the proxy, or the target behind it, may be
    /// restarting. A wrong URL or credentials, or a proxy that speaks another protocol, will
    /// not heal by waiting.
    pub fn will_heal(&self) -> bool {
        use ProxyErrorKind as K;
        match &self.kind {
            K::Resolve(_) | K::Unreachable(..) | K::Timeout(_) | K::Closed | K::Io(_) => true,
            // A gateway error: the proxy could not reach the target (yet).
            K::Refused(status) => status
                .split_whitespace()
                .nth(1)
                .is_some_and(|code| code.starts_with('5')),
            // General failure, network or host unreachable, connection refused, TTL expired.
            K::SocksReply(code) => matches!(code, 1 | 3 | 4 | 5 | 6),
            K::TargetResolve(..) => true,
            #[cfg(feature = "tls")]
            K::Tls(e) => matches!(
                **e,
                crate::tls::Error::Closed | crate::tls::Error::TimedOut | crate::tls::Error::Io(_)
            ),
            #[cfg(feature = "tls")]
            K::TlsSilent(_) => true,
            #[cfg(not(feature = "tls"))]
            K::HttpsWithoutTls => false,
            K::BadUrl(_)
            | K::NotHttp
            | K::HeadTooLarge
            | K::CredentialsWanted
            | K::CredentialsRefused(_)
            | K::NotSocks
            | K::NoAcceptableMethod
            | K::SocksProtocol(_)
            | K::TooLong(_) => false,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProxyErrorKind as K;
        let (proxy, from) = (&self.proxy, self.source);
        let target = self.target.as_deref().unwrap_or("the target");
        match &self.kind {
            K::BadUrl(why) => {
                let from = match self.source {
                    ProxySource::Given => String::new(),
                    ProxySource::Variable(name) => format!(" in {name}"),
                };
                write!(f, "invalid proxy URL '{proxy}'{from}: {why}")
            }
            #[cfg(not(feature = "tls"))]
            K::HttpsWithoutTls => write!(
                f,
                "cannot use the proxy {proxy}{from}: this wsecho was built without TLS (the cargo feature tls), so it cannot reach https:// proxies"
            ),
            #[cfg(feature = "tls")]
            K::TlsSilent(after) => write!(
                f,
                "the proxy {proxy}{from} did not answer the TLS handshake within {after:?} (is it a plain HTTP proxy? then use http://)"
            ),
            #[cfg(feature = "tls")]
            K::Tls(e) if matches!(**e, crate::tls::Error::NotTls) => write!(
                f,
                "the proxy {proxy}{from} does not speak TLS (for a plain HTTP proxy use http://)"
            ),
            #[cfg(feature = "tls")]
            K::Tls(e) => write!(f, "TLS to the proxy {proxy}{from} failed: {e}"),
            K::Resolve(e) => write!(
                f,
                "cannot resolve the proxy {proxy}{from}: {e} (check the proxy's host name)"
            ),
            K::Unreachable(addr, e) => {
                write!(f, "cannot connect to the proxy {proxy}{from}")?;
                // The address it resolved to, unless the URL already says it.
                if !proxy.contains(&addr.ip().to_string()) {
                    write!(f, " at {addr}")?;
                }
                write!(f, ": {e} (is the proxy running, and is its address right?)")
            }
            K::Timeout(after) => write!(
                f,
                "no answer from the proxy {proxy}{from} within {after:?} (check its address, or raise the connect timeout)"
            ),
            K::Closed => {
                write!(
                    f,
                    "the proxy {proxy}{from} closed the connection instead of opening a tunnel to {target}"
                )?;
                match proxy.starts_with("socks") {
                    true => f.write_str(" (is it a SOCKS5 proxy? for an HTTP proxy use http://)"),
                    false => {
                        f.write_str(" (is it an HTTP proxy? for a SOCKS5 proxy use socks5://)")
                    }
                }
            }
            K::Io(e) => write!(
                f,
                "the connection to the proxy {proxy}{from} failed while opening a tunnel to {target}: {e}"
            ),
            K::NotHttp => write!(
                f,
                "the proxy {proxy}{from} did not answer CONNECT with HTTP (for a SOCKS5 proxy use socks5://)"
            ),
            K::HeadTooLarge => write!(
                f,
                "the proxy {proxy}{from} answered CONNECT with a head over {} bytes or {} headers",
                http_connect::MAX_HEAD,
                http_connect::MAX_HEADERS
            ),
            K::CredentialsWanted => write!(
                f,
                "the proxy {proxy}{from} wants credentials: put user:pass@ in the proxy URL"
            ),
            K::CredentialsRefused(answer) => write!(
                f,
                "the proxy {proxy}{from} refused the credentials in the proxy URL ({answer})"
            ),
            K::Refused(status) => write!(
                f,
                "the proxy {proxy}{from} refused to open a tunnel to {target}: {status}"
            ),
            K::NotSocks => write!(
                f,
                "the proxy {proxy}{from} did not answer as a SOCKS5 proxy (for an HTTP proxy use http://)"
            ),
            K::NoAcceptableMethod => write!(
                f,
                "the SOCKS5 proxy {proxy}{from} accepts neither no authentication nor a user name and password"
            ),
            K::SocksReply(code) => write!(
                f,
                "the SOCKS5 proxy {proxy}{from} could not connect to {target}: {} (reply {code})",
                socks5::reply_message(*code)
            ),
            K::SocksProtocol(why) => {
                write!(
                    f,
                    "the SOCKS5 proxy {proxy}{from} broke the protocol: {why}"
                )
            }
            K::TargetResolve(host, e) => write!(
                f,
                "cannot resolve host '{host}': {e} (with a socks5:// proxy names are resolved here; socks5h:// lets the proxy resolve them)"
            ),
            K::TooLong(what) => write!(
                f,
                "cannot use the SOCKS5 proxy {proxy}{from}: {what} is longer than SOCKS5's 255 bytes"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}
