//! The HTTP front door: read one request head within a deadline and a size cap, route it, and
//! answer everything that is not a WebSocket upgrade with a plain, complete response.
//!
//! Routes (the Go example's two handlers, with the statuses a careful server gives):
//! - `GET /`, `HEAD /` → 200, the test page;
//! - `GET /echo` with `Upgrade: websocket` → the upgrade (see `upgrade`);
//! - `GET /echo` without it → 426 naming the protocol to upgrade to;
//! - other methods on these paths → 405 with `Allow`; other paths → 404;
//! - a malformed head → 400, a head over the cap → 431, no head in time → 408.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// The page, embedded: the binary is the whole deployment.
pub(crate) const PAGE: &str = include_str!("../../assets/home.html");

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

/// Reads until a complete head, the `deadline`, or `max` bytes, whichever comes first.
pub(crate) fn read_head(
    stream: &TcpStream,
    deadline: Instant,
    max: usize,
) -> Result<Head, HeadError> {
    let mut buf = vec![0u8; max + 1];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Closed)?;
        let n = match (&*stream).read(&mut buf[filled..]) {
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
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut headers).parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(len)) if len <= max => {
                buf.truncate(filled);
                return Ok(Head { buf, len });
            }
            Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) if filled > max => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Malformed(e)),
        }
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
    let target = request.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match (path, method) {
        ("/", "GET") => Route::Reply(Reply::page(false)),
        ("/", "HEAD") => Route::Reply(Reply::page(true)),
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
            .with("Connection", "Upgrade")
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

    fn page(head_only: bool) -> Reply {
        Reply {
            status: 200,
            reason: "OK",
            headers: vec![
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ],
            content_type: "text/html; charset=utf-8",
            body: PAGE.into(),
            head_only,
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
    pub(crate) fn send(&self, mut stream: &TcpStream) {
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
