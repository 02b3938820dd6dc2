//! Reaching the target through a proxy: which proxy a target goes through (if any), and the
//! tunnel through it.
//!
//! A tunnel is a TCP connection to the proxy on which an HTTP `CONNECT` or a SOCKS5 `CONNECT`
//! has succeeded: from then on it carries the target's bytes both ways, so the WebSocket
//! handshake and everything after it run on it exactly as on a direct connection. To an
//! `https://` proxy the connection is TLS, verified against the system's roots, and `CONNECT`
//! and the tunnel run inside that session: the target's bytes (its own TLS, for `wss://`) are
//! that session's plaintext.

mod env;
mod error;
mod http_connect;
mod socks5;

pub use env::ProxyEnv;
pub use error::{ProxyError, ProxyErrorKind};

use super::target::Target;
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How dial reaches its target.
#[derive(Clone, Debug, Default)]
pub enum ProxyChoice {
    /// Straight to the target.
    #[default]
    Direct,
    /// Through this proxy whatever the target, loopback included: someone named it for this
    /// run, so it wins over the environment and its exceptions.
    Given(Proxy),
    /// As the proxy variables say, read the way Go's `http.ProxyFromEnvironment` reads them.
    Environment(ProxyEnv),
}

impl ProxyChoice {
    /// The proxy `target` goes through, or `None` for a direct connection. Fails only for a
    /// proxy URL from the environment that cannot be used, and only when it applies.
    pub fn for_target(&self, target: &Target) -> Result<Option<Proxy>, ProxyError> {
        match self {
            ProxyChoice::Direct => Ok(None),
            ProxyChoice::Given(proxy) => Ok(Some(proxy.clone())),
            ProxyChoice::Environment(env) => env.for_target(target),
        }
    }
}

/// How to talk to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// HTTP `CONNECT` over plain TCP.
    Http,
    /// HTTP `CONNECT` over TLS to the proxy.
    Https,
    /// SOCKS5; the target's name is resolved here and its address sent.
    Socks5,
    /// SOCKS5; the target's name is sent and the proxy resolves it.
    Socks5h,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
        }
    }

    /// The port a proxy URL without one means (as Go and curl take them).
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Socks5 | Scheme::Socks5h => 1080,
        }
    }
}

/// Where a proxy setting came from, so that an error can say where to fix it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxySource {
    /// Named for this run (the command line says how).
    Given,
    /// This environment variable.
    Variable(&'static str),
}

impl fmt::Display for ProxySource {
    /// ` (from HTTP_PROXY)`, or nothing for a proxy named for this run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxySource::Given => Ok(()),
            ProxySource::Variable(name) => write!(f, " (from {name})"),
        }
    }
}

/// A proxy to connect through. Its `Display` is its URL without the credentials
/// (`socks5h://proxy.lan:1080`), and so is its `Debug`: neither ever shows a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// How to talk to it.
    pub scheme: Scheme,
    /// Its host, without IPv6 brackets.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Where the setting came from.
    pub source: ProxySource,
    /// User name and password, percent-decoded.
    credentials: Option<(Vec<u8>, Vec<u8>)>,
}

impl Proxy {
    /// Parses `SCHEME://[USER:PASS@]HOST[:PORT][/]` with SCHEME one of `http`, `https`,
    /// `socks5`, `socks5h`. A value without `://` is taken as an `http://` proxy, as Go takes
    /// `HTTP_PROXY=proxy.lan:3128`. USER and PASS are percent-decoded.
    pub fn parse(raw: &str, source: ProxySource) -> Result<Proxy, ProxyError> {
        let bad = |why: String| ProxyError {
            proxy: redact(raw),
            source,
            target: None,
            kind: ProxyErrorKind::BadUrl(why),
        };
        let raw = raw.trim();
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), raw),
        };
        let scheme = match scheme.as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            other => {
                return Err(bad(format!(
                    "unsupported scheme '{other}' (use http://, https://, socks5:// or socks5h://)"
                )));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad(
                "a proxy URL has no path: write SCHEME://HOST:PORT".into()
            ));
        }
        // The last '@' ends the credentials: a password may hold an unencoded '@'.
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |part: &str| {
                    percent_decode(part).ok_or_else(|| {
                        bad("the credentials have a '%' not followed by two hex digits".into())
                    })
                };
                (Some((decode(user)?, decode(password)?)), host_port)
            }
            None => (None, authority),
        };
        let (host, port) = match host_port.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address lacks its closing ']'".into()))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad(format!("'{host}' is not an IPv6 address")));
                }
                match after {
                    "" => (host, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (host, Some(port)),
                        None => return Err(bad("junk after the IPv6 address".into())),
                    },
                }
            }
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        if host.is_empty() {
            return Err(bad("the URL has no host".into()));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
        {
            return Err(bad(format!("'{host}' is not a host name or address")));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad(format!("'{port}' is not a port (1-65535)"))),
            },
        };
        Ok(Proxy {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            source,
            credentials,
        })
    }

    /// Whether the URL carried a user name and password.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.name();
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self}{}", self.source)?;
        if self.has_credentials() {
            f.write_str(", with credentials")?;
        }
        f.write_str(")")
    }
}

/// `raw` with whatever stands between `://` and the last `@` hidden, for error messages.
fn redact(raw: &str) -> String {
    let raw = raw.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), raw),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => raw.to_string(),
    }
}

/// `%XX` decoding; `None` for a `%` without two hex digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The connect deadline, and the timeout it came from (for messages).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// Time left, or a timeout error once it is up.
    fn left(&self) -> Result<Duration, ProxyErrorKind> {
        let left = self.at.saturating_duration_since(Instant::now());
        match left.is_zero() {
            true => Err(ProxyErrorKind::Timeout(self.timeout)),
            false => Ok(left),
        }
    }

    /// An I/O error from talking to the proxy, as a proxy error.
    fn io(&self, e: io::Error) -> ProxyErrorKind {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ProxyErrorKind::Timeout(self.timeout)
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ProxyErrorKind::Closed,
            _ => ProxyErrorKind::Io(e),
        }
    }

    /// Writes all of `bytes` by the deadline.
    fn write_all(&self, stream: &TcpStream, bytes: &[u8]) -> Result<(), ProxyErrorKind> {
        use io::Write;
        stream
            .set_write_timeout(Some(self.left()?))
            .map_err(ProxyErrorKind::Io)?;
        (&*stream).write_all(bytes).map_err(|e| self.io(e))
    }

    /// Fills `buf` by the deadline, however slowly the proxy trickles its bytes.
    fn read_exact(&self, stream: &TcpStream, buf: &mut [u8]) -> Result<(), ProxyErrorKind> {
        use io::Read;
        let mut filled = 0;
        while filled < buf.len() {
            stream
                .set_read_timeout(Some(self.left()?))
                .map_err(ProxyErrorKind::Io)?;
            match (&*stream).read(&mut buf[filled..]) {
                Ok(0) => return Err(ProxyErrorKind::Closed),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }
}

/// `host:port` as CONNECT and error messages write it (IPv6 in brackets).
fn authority(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// A tunnel to the target: the socket, and for an `https://` proxy the TLS session to the
/// proxy that the target's bytes run inside.
pub(crate) struct Tunnel {
    pub(crate) stream: TcpStream,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::Session>,
}

impl Tunnel {
    /// A tunnel with the target's bytes straight on the socket.
    pub(crate) fn plain(stream: TcpStream) -> Self {
        Tunnel {
            stream,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Connects to `proxy` and has it open a tunnel to `target`, all by `deadline`; the tunnel
/// then carries the target's bytes. Nothing the target sends is read here.
pub(crate) fn tunnel(
    proxy: &Proxy,
    target: &Target,
    deadline: Instant,
    timeout: Duration,
) -> Result<Tunnel, ProxyError> {
    let deadline = Deadline {
        at: deadline,
        timeout,
    };
    let fail = |kind| ProxyError {
        proxy: proxy.to_string(),
        source: proxy.source,
        target: Some(authority(&target.host, target.port)),
        kind,
    };
    if proxy.scheme == Scheme::Https {
        return https_tunnel(proxy, &authority(&target.host, target.port), deadline).map_err(fail);
    }
    if proxy.scheme == Scheme::Http {
        let stream = connect(proxy, deadline).map_err(fail)?;
        let authority = authority(&target.host, target.port);
        http_connect::open(&stream, proxy, &authority, deadline).map_err(fail)?;
        return Ok(Tunnel::plain(stream));
    }
    // SOCKS5 takes one address per request: when the proxy cannot reach one of the
    // target's addresses, the next one gets a new connection to the proxy.
    let mut last = None;
    for address in socks5::addresses(proxy, target).map_err(fail)? {
        let stream = connect(proxy, deadline).map_err(fail)?;
        match socks5::open(&stream, proxy, target, address, deadline) {
            Ok(()) => return Ok(Tunnel::plain(stream)),
            Err(e @ ProxyErrorKind::SocksReply(_)) => last = Some(e),
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(last.unwrap_or(ProxyErrorKind::Timeout(timeout))))
}

/// An `https://` proxy: an `http://` one behind a TLS session. Its certificate is checked
/// against the system's roots and its name; `CONNECT` then runs inside the session.
#[cfg(feature = "tls")]
fn https_tunnel(
    proxy: &Proxy,
    authority: &str,
    deadline: Deadline,
) -> Result<Tunnel, ProxyErrorKind> {
    use crate::link::UntilDeadline;
    use crate::tls;
    let stream = connect(proxy, deadline)?;
    let tls_failed = |e| match e {
        tls::Error::TimedOut => ProxyErrorKind::TlsSilent(deadline.timeout),
        e => ProxyErrorKind::Tls(Box::new(e)),
    };
    let config = tls::client_config(&tls::Trust::System, None).map_err(tls_failed)?;
    let mut session = tls::Session::client(config, &proxy.host).map_err(tls_failed)?;
    session
        .handshake(&stream, deadline.at)
        .map_err(tls_failed)?;
    let io = session.blocking(UntilDeadline::new(&stream, deadline.at));
    http_connect::open_over(io, proxy, authority, deadline)?;
    Ok(Tunnel {
        stream,
        tls: Some(session),
    })
}

/// Without TLS, an `https://` proxy cannot be reached.
#[cfg(not(feature = "tls"))]
fn https_tunnel(_: &Proxy, _: &str, _: Deadline) -> Result<Tunnel, ProxyErrorKind> {
    Err(ProxyErrorKind::HttpsWithoutTls)
}

/// TCP to the proxy, trying each of its addresses until the deadline.
fn connect(proxy: &Proxy, deadline: Deadline) -> Result<TcpStream, ProxyErrorKind> {
    let addrs = (proxy.host.as_str(), proxy.port)
        .to_socket_addrs()
        .map_err(ProxyErrorKind::Resolve)?;
    super::conn::connect_first(addrs, deadline.at).map_err(|last| match last {
        Some((addr, e)) if e.kind() != io::ErrorKind::TimedOut => {
            ProxyErrorKind::Unreachable(addr, e)
        }
        _ => ProxyErrorKind::Timeout(deadline.timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Proxy, ProxyError> {
        Proxy::parse(raw, ProxySource::Given)
    }

    #[test]
    fn proxy_urls_take_the_four_schemes_and_their_default_ports() {
        for (raw, scheme, host, port) in [
            ("http://proxy.lan:3128", Scheme::Http, "proxy.lan", 3128),
            ("http://proxy.lan", Scheme::Http, "proxy.lan", 80),
            ("HTTP://Proxy.LAN/", Scheme::Http, "proxy.lan", 80),
            ("proxy.lan:3128", Scheme::Http, "proxy.lan", 3128),
            ("https://proxy.lan", Scheme::Https, "proxy.lan", 443),
            ("socks5://10.0.0.1", Scheme::Socks5, "10.0.0.1", 1080),
            ("socks5h://[::1]:9050", Scheme::Socks5h, "::1", 9050),
            ("socks5h://[fe80::1]", Scheme::Socks5h, "fe80::1", 1080),
        ] {
            let p = parse(raw).unwrap();
            assert_eq!(
                (p.scheme, p.host.as_str(), p.port),
                (scheme, host, port),
                "{raw}"
            );
            assert!(!p.has_credentials());
        }
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let p = parse("http://us%65r:p%40ss:w@rd@proxy.lan:8080").unwrap();
        let (user, password) = p.credentials.clone().unwrap();
        assert_eq!(
            (user.as_slice(), password.as_slice()),
            (&b"user"[..], &b"p@ss:w@rd"[..])
        );
        assert_eq!(p.to_string(), "http://proxy.lan:8080");
        let debug = format!("{p:?}");
        assert!(!debug.contains("ss") && !debug.contains("user"), "{debug}");
        let p = parse("socks5://[::1]:1").unwrap();
        assert_eq!(p.to_string(), "socks5://[::1]:1");
        let p = parse("http://user@proxy.lan").unwrap();
        assert_eq!(p.credentials, Some((b"user".to_vec(), Vec::new())));
    }

    #[test]
    fn bad_proxy_urls_say_why_without_the_password() {
        for (raw, says) in [
            ("ftp://proxy.lan", "unsupported scheme 'ftp'"),
            ("socks4://proxy.lan", "unsupported scheme 'socks4'"),
            ("http://proxy.lan:99999", "not a port"),
            ("http://proxy.lan:0", "not a port"),
            ("http://proxy.lan:x", "not a port"),
            ("http://", "no host"),
            ("http://:8080", "no host"),
            ("http://proxy.lan/path", "no path"),
            ("http://[::1", "closing ']'"),
            ("http://[nope]:1", "not an IPv6 address"),
            ("http://pro xy", "not a host name"),
            ("http://u:secret%zz@proxy.lan", "two hex digits"),
            ("http://u:secret@:1", "no host"),
        ] {
            let e = parse(raw).unwrap_err().to_string();
            assert!(e.contains(says), "{raw}: {e}");
            assert!(!e.contains("secret"), "{raw}: {e}");
        }
        let e = Proxy::parse("http://u:secret@", ProxySource::Variable("HTTP_PROXY")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid proxy URL 'http://***@' in HTTP_PROXY: the URL has no host"
        );
    }

    #[test]
    fn errors_name_the_proxy_and_its_variable() {
        let e = ProxyError {
            proxy: "http://127.0.0.1:9".into(),
            source: ProxySource::Variable("https_proxy"),
            target: Some("example.com:443".into()),
            kind: ProxyErrorKind::CredentialsWanted,
        };
        assert_eq!(
            e.to_string(),
            "the proxy http://127.0.0.1:9 (from https_proxy) wants credentials: put user:pass@ in the proxy URL"
        );
    }
}
