//! The HTTP front door: read one request head within a deadline and a size cap, route it, and
//! answer everything that is not a WebSocket upgrade with a plain, complete response.
//!
//! Routes (the Go example's two handlers, with the statuses a careful server gives):
//! - `GET /`, `HEAD /` → 200, the test page;
//! - `GET /echo` with `Upgrade: websocket` → the upgrade (see `upgrade`);
//! - `GET /echo` without it → 426 naming the protocol to upgrade to;
//! - other methods on these paths → 405 with `Allow`; other paths → 404;
//! - a malformed head → 400, a head over the cap → 431, no head in time → 408;
//! - an HTTP/1.1 request without `Host`, any request with two, and an absolute-form target
//!   (`GET http://host/echo`, routed by its path) naming another host than `Host` → 400.

use crate::link::ReadTimeout;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// The page, embedded: the binary is the whole deployment.
pub(crate) const PAGE: &str = include_str!("../../assets/home.html");

/// What the first read of a request head asks for.
const FIRST_READ: usize = 1024;

/// Most header lines a request may have; more get 431.
pub(crate) const MAX_HEADERS: usize = 64;

/// A complete request head, and whatever followed it in the same reads (a client may send its
/// first frames right behind its upgrade request).
pub(crate) struct Head {
    buf: Vec<u8>,
    len: usize,
}

impl Head {
    /// Parses the head again, borrowing from it; it parsed once already, so this succeeds.
    pub(crate) fn parse<'h, 'b>(
        &'b self,
        headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
    ) -> Option<httparse::Request<'h, 'b>> {
        let mut request = httparse::Request::new(headers);
        match request.parse(&self.buf[..self.len]) {
            Ok(httparse::Status::Complete(_)) => Some(request),
            _ => None,
        }
    }

    /// The bytes after the head.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf[self.len..]
    }
}

/// Why no head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed or reset before sending a whole head.
    Closed,
    /// The deadline passed first.
    TimedOut,
    /// The head outgrew the cap, or has too many header lines.
    TooLarge,
    /// Not HTTP/1.x.
    Malformed(httparse::Error),
}

impl HeadError {
    /// The answer this error deserves, if the peer is still there to read it.
    pub(crate) fn reply(&self) -> Option<Reply> {
        match self {
            HeadError::Closed => None,
            HeadError::TimedOut => Some(Reply::text(
                408,
                "Request Timeout",
                "the request head took too long\n",
            )),
            HeadError::TooLarge => Some(Reply::text(
                431,
                "Request Header Fields Too Large",
                "the request head is too large\n",
            )),
            HeadError::Malformed(e) => Some(Reply::text(
                400,
                "Bad Request",
                &format!("malformed request: {e}\n"),
            )),
        }
    }
}

/// Reads from `source` until a complete head, the `deadline`, or `max` bytes, whichever comes
/// first. `stream` is the socket under `source` (itself for plain TCP; under TLS, `source`
/// decrypts what it reads), whose read timeout keeps the deadline.
pub(crate) fn read_head(
    stream: &TcpStream,
    mut source: impl Read,
    deadline: Instant,
    max: usize,
) -> Result<Head, HeadError> {
    // Most heads fit in the first KiB; the buffer doubles towards the cap only for the rest,
    // so a handshake does not zero 8 KiB it never uses.
    let mut buf = vec![0u8; FIRST_READ.min(max + 1)];
    let mut filled = 0;
    let mut timeout = ReadTimeout::new();
    loop {
        if filled == buf.len() {
            buf.resize((2 * buf.len()).min(max + 1), 0);
        }
        match timeout.until(stream, deadline) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HeadError::TimedOut),
            Err(_) => return Err(HeadError::Closed),
        }
        let n = match source.read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        };
        filled += n;
        if let Some(len) = head_length(&buf[..filled], max)? {
            buf.truncate(filled);
            return Ok(Head { buf, len });
        }
    }
}

/// The length of the complete head at the start of `buf`, `None` if more bytes are needed,
/// or why there will never be a usable head.
fn head_length(buf: &[u8], max: usize) -> Result<Option<usize>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max => Ok(Some(len)),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() > max => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// Where a request goes.
pub(crate) enum Route<'h, 'b> {
    /// A complete answer; the connection ends after it.
    Reply(Reply),
    /// A request for `/echo` that asks to upgrade.
    Upgrade(httparse::Request<'h, 'b>),
}

/// Routes a parsed head (see the module docs for the table).
pub(crate) fn route<'h, 'b>(request: httparse::Request<'h, 'b>) -> Route<'h, 'b> {
    let method = request.method.unwrap_or("");
    let (authority, path) = split_target(request.path.unwrap_or(""));
    let route = match host_problem(&request, authority) {
        Some(reply) => Route::Reply(reply),
        None => by_path(path, method, request),
    };
    match route {
        // A HEAD request gets the head of what GET would get, whatever the status.
        Route::Reply(mut reply) if method == "HEAD" => {
            reply.head_only = true;
            Route::Reply(reply)
        }
        route => route,
    }
}

/// The table in the module docs, for a request with its `Host` in order.
fn by_path<'h, 'b>(path: &str, method: &str, request: httparse::Request<'h, 'b>) -> Route<'h, 'b> {
    match (path, method) {
        ("/", "GET" | "HEAD") => Route::Reply(Reply::page()),
        ("/", _) => Route::Reply(
            Reply::text(405, "Method Not Allowed", "use GET\n").with("Allow", "GET, HEAD"),
        ),
        ("/echo", "GET") if asks_for_websocket(&request) => Route::Upgrade(request),
        ("/echo", "GET") => Route::Reply(
            Reply::text(
                426,
                "Upgrade Required",
                "this endpoint speaks WebSocket only\n",
            )
            .with("Upgrade", "websocket")
            .with("Sec-WebSocket-Version", "13"),
        ),
        ("/echo", _) => Route::Reply(
            Reply::text(
                405,
                "Method Not Allowed",
                "use GET with a WebSocket upgrade\n",
            )
            .with("Allow", "GET"),
        ),
        _ => Route::Reply(Reply::text(
            404,
            "Not Found",
            "not found: the page is at / and the WebSocket at /echo\n",
        )),
    }
}

/// The authority an absolute-form target names (`GET http://host:port/echo`, RFC 7230
/// 5.3.2, as a client talking to a proxy sends it), and the path to route by, without its
/// query. An origin-form target (`/echo?x`) names no authority.
fn split_target(target: &str) -> (Option<&str>, &str) {
    let absolute = target.split_once("://").filter(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
    });
    let (authority, path) = match absolute {
        Some((_, rest)) => {
            let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            (Some(authority), path)
        }
        None => (None, target),
    };
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    (authority, if path.is_empty() { "/" } else { path })
}

/// RFC 7230 5.4: an HTTP/1.1 request needs exactly one `Host`, and no request may have two
/// (400, as Go's net/http answers). An absolute-form target must name the same host as
/// `Host` does, so that whatever reads the host (the origin check) has one to go by and no
/// choice between two.
fn host_problem(request: &httparse::Request<'_, '_>, authority: Option<&str>) -> Option<Reply> {
    let mut hosts = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let why = match (hosts.next(), hosts.next()) {
        (None, _) if request.version == Some(1) => "an HTTP/1.1 request needs a Host header\n",
        (Some(_), Some(_)) => "more than one Host header\n",
        (Some(host), None)
            if authority.is_some_and(|a| !a.as_bytes().eq_ignore_ascii_case(host.value)) =>
        {
            "the request target names another host than the Host header\n"
        }
        _ => return None,
    };
    Some(Reply::text(400, "Bad Request", why))
}

/// True when an `Upgrade` header lists `websocket`; whether the rest of the handshake is
/// valid is tungstenite's to judge.
fn asks_for_websocket(request: &httparse::Request<'_, '_>) -> bool {
    header_tokens(request, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// The comma-separated tokens of every header named `name`.
pub(crate) fn header_tokens<'a>(
    request: &'a httparse::Request<'_, '_>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    let headers: &'a [httparse::Header<'_>] = request.headers;
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The value of the first header named `name`, if it is text.
pub(crate) fn header<'a>(request: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a str> {
    let h = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))?;
    std::str::from_utf8(h.value).ok()
}

/// A complete HTTP answer that ends the connection.
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    content_type: &'static str,
    body: std::borrow::Cow<'static, str>,
    head_only: bool,
}

impl Reply {
    pub(crate) fn text(status: u16, reason: &'static str, body: &str) -> Reply {
        Reply {
            status,
            reason,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned().into(),
            head_only: false,
        }
    }

    fn page() -> Reply {
        Reply {
            status: 200,
            reason: "OK",
            headers: vec![
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ],
            content_type: "text/html; charset=utf-8",
            body: PAGE.into(),
            head_only: false,
        }
    }

    pub(crate) fn with(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// The body's first line, for the log.
    pub(crate) fn detail(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }

    /// Writes the whole answer in one write; a peer that is gone is no error worth reporting.
    pub(crate) fn send(&self, mut stream: impl Write) {
        let mut out = Vec::with_capacity(256 + self.body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        let _ = stream.write_all(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses `bytes` as the front door does and routes the result; returns the status a
    /// plain answer would have, or 101 for an upgrade that passes validation.
    fn answer(bytes: &[u8]) -> Option<u16> {
        let len = match head_length(bytes, 8 * 1024) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(e) => return e.reply().map(|r| r.status),
        };
        let head = Head {
            buf: bytes.to_vec(),
            len,
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let request = head
            .parse(&mut headers)
            .expect("a complete head parses again");
        match route(request) {
            Route::Reply(reply) => Some(reply.status),
            Route::Upgrade(request) => {
                let policy = super::super::upgrade::Policy::new(&[]);
                Some(
                    super::super::upgrade::check(&request, &policy)
                        .map_or_else(|r| r.status, |_| 101),
                )
            }
        }
    }

    #[test]
    fn routes_answer_with_the_documented_statuses() {
        let upgrade = "GET /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        for (request, status) in [
            ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", Some(200)),
            ("HEAD /?x=1 HTTP/1.0\r\n\r\n", Some(200)),
            ("POST / HTTP/1.1\r\nHost: h\r\n\r\n", Some(405)),
            ("GET /echo HTTP/1.1\r\nHost: h\r\n\r\n", Some(426)),
            ("PUT /echo HTTP/1.1\r\nHost: h\r\n\r\n", Some(405)),
            ("GET /nope HTTP/1.1\r\nHost: h\r\n\r\n", Some(404)),
            ("GET / HTTP/1.1\r\n\r\n", Some(400)),
            ("GET / HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n", Some(400)),
            ("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", Some(200)),
            ("GET HTTP://H?x HTTP/1.1\r\nHost: h\r\n\r\n", Some(200)),
            ("GET http://h/nope HTTP/1.1\r\nHost: h\r\n\r\n", Some(404)),
            ("GET http://other/ HTTP/1.1\r\nHost: h\r\n\r\n", Some(400)),
            ("GET / HTTP/1.1\r\n", None),
            ("\x16\x03\x01 TLS hello\r\n\r\n", Some(400)),
            (&format!("{upgrade}\r\n"), Some(101)),
            (&format!("{upgrade}Origin: http://evil\r\n\r\n"), Some(403)),
            (&format!("{upgrade}Origin: http://h\r\n\r\n"), Some(101)),
        ] {
            assert_eq!(answer(request.as_bytes()), status, "{request:?}");
        }
        let bad_version = format!("{}\r\n", upgrade.replace("Version: 13", "Version: 8"));
        assert_eq!(answer(bad_version.as_bytes()), Some(400));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(answer(big.as_bytes()), Some(431));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(65));
        assert_eq!(answer(many.as_bytes()), Some(431));
    }

    /// Lines that look like a request head, to get past the request line more often than
    /// random bytes would.
    fn headish() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "G\0T", ""]);
        let path =
            prop::sample::select(vec!["/", "/echo", "/echo?x", "*", "http://h/echo", "/%00"]);
        let header = (
            prop::sample::select(vec![
                "Upgrade",
                "Connection",
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Version",
                "Origin",
                "Host",
                "Sec-WebSocket-Protocol",
                "X",
            ]),
            prop::collection::vec(any::<u8>(), 0..40),
        );
        (
            method,
            path,
            prop::collection::vec(header, 0..12),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(method, path, headers, tail)| {
                let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
                for (name, value) in headers {
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(&value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&tail);
                out
            })
    }

    /// An upgrade request whose `Connection` and `Upgrade` tokens are spread over lines as
    /// `connection` and `upgrade` say, with `hosts` Host lines and an origin-form or an
    /// absolute-form target.
    fn upgrade_with(
        connection: &[Vec<&str>],
        upgrade: &[Vec<&str>],
        hosts: usize,
        absolute: bool,
        shuffle: u64,
    ) -> Vec<u8> {
        let mut lines: Vec<String> = Vec::new();
        lines.extend(
            connection
                .iter()
                .map(|t| format!("Connection: {}", t.join(", "))),
        );
        lines.extend(upgrade.iter().map(|t| format!("Upgrade: {}", t.join(","))));
        lines.extend(std::iter::repeat_n("Host: h:1".to_string(), hosts));
        lines.push("Sec-WebSocket-Version: 13".into());
        lines.push("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into());
        // Header order is the peer's business.
        let n = lines.len();
        for i in 0..n {
            lines.swap(i, (shuffle as usize).wrapping_mul(i + 7) % n);
        }
        let target = if absolute { "http://h:1/echo" } else { "/echo" };
        let mut out = format!("GET {target} HTTP/1.1\r\n");
        for line in lines {
            out.push_str(&line);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn token_lines(tokens: Vec<&'static str>) -> impl Strategy<Value = Vec<Vec<&'static str>>> {
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(tokens), 1..4),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// However the list headers are split over lines and whatever else they list, with one
        /// Host the upgrade is accepted exactly when the lists hold `Upgrade` and `websocket`;
        /// without a Host, or with two, it is a 400.
        #[test]
        fn upgrades_follow_the_token_lists_and_the_host_rule(
            connection in token_lines(vec!["keep-alive", "Upgrade", "upgrade", "close", "x"]),
            upgrade in token_lines(vec!["websocket", "WebSocket", "h2c", "TLS/1.0"]),
            hosts in 0usize..3,
            absolute in any::<bool>(),
            shuffle in any::<u64>(),
        ) {
            let bytes = upgrade_with(&connection, &upgrade, hosts, absolute, shuffle);
            let has = |lines: &[Vec<&str>], token: &str| {
                lines.iter().flatten().any(|t| t.eq_ignore_ascii_case(token))
            };
            let expected = match hosts {
                1 if !has(&upgrade, "websocket") => 426,
                1 if has(&connection, "upgrade") => 101,
                1 => 400,
                _ => 400,
            };
            prop_assert_eq!(answer(&bytes), Some(expected), "{}", String::from_utf8_lossy(&bytes));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic_the_front_door(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = answer(&bytes);
        }

        #[test]
        fn head_like_input_gets_a_status_and_never_panics(bytes in headish()) {
            if let Some(status) = answer(&bytes) {
                prop_assert!([101, 200, 400, 403, 404, 405, 426, 431].contains(&status), "{status}");
            }
        }
    }
}
