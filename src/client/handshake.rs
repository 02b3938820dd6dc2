//! The server's answer to the upgrade, collected and shaped before tungstenite judges it.
//!
//! tungstenite validates the 101 (status, `Upgrade`, `Connection`, the accept key, the
//! subprotocol) and dial keeps it that way; what it is given is decided here:
//! - **The whole head at once.** tungstenite's handshake reader refuses a head that comes in
//!   more than 64 reads averaging under 128 bytes, as a slow link or a proxy that writes a
//!   byte at a time delivers it. So the head is collected here, bounded by [`MAX_HEAD`] and
//!   the connect deadline, and tungstenite reads it in one go.
//! - **Interim responses skipped.** A `100 Continue` (any 1xx but 101) before the final
//!   response is read and dropped, as RFC 7231 6.2 asks of a client.
//! - **`Connection` as a token list.** RFC 6455 4.1 asks for a `Connection` header whose
//!   tokens include `Upgrade`; proxies add tokens (`keep-alive, Upgrade`), and a list may be
//!   split over several lines. tungstenite compares the first line's whole value, so a list
//!   that holds the token is handed over as `Connection: Upgrade`; one that does not is handed
//!   over as it came, for tungstenite to refuse.
//! - **Extensions.** dial offers none of its own, so a 101 that names one the request did not
//!   offer fails the connection (RFC 6455 4.1); tungstenite does not check this.
//!
//! No frame is lost: reading stops at the blank line that ends the final head, and what came
//! behind it is the connection's first input.

use crate::log::Escaped;
use tungstenite::handshake::client::{Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::http::header::GetAll;

/// The largest response head, interim responses included.
pub(super) const MAX_HEAD: usize = 16 * 1024;

/// Most header lines a response may have: tungstenite's own limit.
const MAX_HEADERS: usize = 124;

/// Collects the server's bytes until the final response head is complete.
#[derive(Default)]
pub(super) struct HeadCollector {
    buf: Vec<u8>,
    /// Where to look for the blank line from: what was already searched, less two bytes.
    scanned: usize,
    /// Bytes of interim responses dropped so far; they count towards [`MAX_HEAD`].
    dropped: usize,
}

/// The final response head, as tungstenite is to see it, and the bytes behind it.
#[derive(Debug, PartialEq)]
pub(super) struct FinalHead {
    pub(super) head: Vec<u8>,
    pub(super) surplus: Vec<u8>,
}

/// The head grew past [`MAX_HEAD`] without ending.
#[derive(Debug, PartialEq)]
pub(super) struct TooLarge;

impl HeadCollector {
    /// Takes the next bytes read; returns the final head once it is complete.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Result<Option<FinalHead>, TooLarge> {
        self.buf.extend_from_slice(bytes);
        loop {
            let Some(end) = head_end(&self.buf, self.scanned) else {
                if self.dropped + self.buf.len() > MAX_HEAD {
                    return Err(TooLarge);
                }
                self.scanned = self.buf.len().saturating_sub(2);
                return Ok(None);
            };
            if self.dropped + end > MAX_HEAD {
                return Err(TooLarge);
            }
            if is_interim(&self.buf[..end]) {
                self.buf.drain(..end);
                self.dropped += end;
                self.scanned = 0;
                continue;
            }
            return Ok(Some(FinalHead {
                head: shape(&self.buf[..end]),
                surplus: self.buf[end..].to_vec(),
            }));
        }
    }
}

/// Where the response head in `buf` ends (just past its blank line), looking from `from` on.
/// Lines may end in `\r\n` or a bare `\n`, as httparse (and so tungstenite) accepts both:
/// the first `\n` followed by `\n` or `\r\n` is the blank line.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| match &buf[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// A complete 1xx response other than 101: informational, to be skipped.
fn is_interim(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    matches!(response.parse(head), Ok(httparse::Status::Complete(_)))
        && matches!(response.code, Some(100..=199) if response.code != Some(101))
}

/// The head as tungstenite is to see it: the `Connection` lines become `Connection: Upgrade`
/// when their tokens include `Upgrade`. Anything httparse does not take whole goes over as
/// it came, for tungstenite to report.
fn shape(head: &[u8]) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if !matches!(response.parse(head), Ok(httparse::Status::Complete(_))) {
        return head.to_vec();
    }
    let is_connection = |h: &httparse::Header<'_>| h.name.eq_ignore_ascii_case("connection");
    let upgrade = response
        .headers
        .iter()
        .filter(|h| is_connection(h))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !upgrade {
        return head.to_vec();
    }
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(b"HTTP/1.");
    out.push(b'0' + response.version.unwrap_or(1));
    out.push(b' ');
    out.extend_from_slice(response.code.unwrap_or(0).to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in response.headers.iter().filter(|h| !is_connection(h)) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: Upgrade\r\n\r\n");
    out
}

/// The names of the extensions a `Sec-WebSocket-Extensions` header list names, lowercased
/// (`permessage-deflate; client_max_window_bits, x` names two).
fn extension_names(values: GetAll<'_, HeaderValue>) -> Vec<String> {
    let mut names = Vec::new();
    for value in values {
        for extension in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let name = extension.split(';').next().unwrap_or("").trim();
            if !name.is_empty() {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    names
}

const EXTENSIONS: &str = "sec-websocket-extensions";

/// The names of the extensions the request offers (dial offers none of its own; a user's
/// `-H` may).
pub(super) fn offered_extensions(request: &Request) -> Vec<String> {
    extension_names(request.headers().get_all(EXTENSIONS))
}

/// RFC 6455 4.1: the server may only choose extensions the request offered. Returns the
/// first one it chose that was not, ready to show (control characters escaped).
pub(super) fn unoffered_extension(offered: &[String], response: &Response) -> Option<String> {
    extension_names(response.headers().get_all(EXTENSIONS))
        .into_iter()
        .find(|chosen| !offered.contains(chosen))
        .map(|chosen| Escaped(&chosen).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{self, Read, Write};
    use tungstenite::client::IntoClientRequest;
    use tungstenite::handshake::derive_accept_key;

    #[test]
    fn the_head_ends_at_the_first_blank_line_whatever_the_line_endings() {
        assert_eq!(
            head_end(b"HTTP/1.1 101 OK\r\nA: b\r\n\r\n\x81\x00", 0),
            Some(25)
        );
        assert_eq!(head_end(b"HTTP/1.1 101 OK\nA: b\n\n\x81\x00", 0), Some(22));
        assert_eq!(
            head_end(b"HTTP/1.1 101 OK\r\nA: b\n\r\n\x81\x00", 0),
            Some(24)
        );
        assert_eq!(head_end(b"HTTP/1.1 101 OK\r\nA: b\r\n\r", 0), None);
        assert_eq!(head_end(b"HTTP/1.1 101 OK\r\nA: b\r\n", 0), None);
        // A blank line that straddles two reads is found from two bytes before the new ones.
        let buf = b"HTTP/1.1 101 OK\r\nA: b\r\n\r\n";
        assert_eq!(head_end(buf, buf.len() - 3), Some(buf.len()));
    }

    /// A stream whose reads answer the request written to it with `answer(key)`, handed out
    /// in one read, as `HeadOnly` hands the collected head to tungstenite.
    struct Scripted<F> {
        written: Vec<u8>,
        answer: F,
        reply: Option<io::Cursor<Vec<u8>>>,
    }

    impl<F: FnMut(&str) -> Vec<u8>> Read for Scripted<F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.reply.is_none() {
                let request = String::from_utf8_lossy(&self.written).into_owned();
                let key = request
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                self.reply = Some(io::Cursor::new((self.answer)(&key)));
            }
            self.reply.as_mut().map_or(Ok(0), |r| r.read(buf))
        }
    }

    impl<F> Write for Scripted<F> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What tungstenite makes of `wire` (the server's bytes for `key`) once it went through
    /// the collector in `pieces`-byte reads: the handshake's verdict and the surplus.
    fn handshake_over(
        wire: impl Fn(&str) -> Vec<u8>,
        piece: usize,
    ) -> (Result<Response, String>, Vec<u8>) {
        let request = "ws://h/echo".into_client_request().unwrap();
        let mut surplus = Vec::new();
        let stream = Scripted {
            written: Vec::new(),
            answer: |key: &str| {
                let bytes = wire(key);
                let mut collector = HeadCollector::default();
                let piece = piece.max(1);
                for (i, chunk) in bytes.chunks(piece).enumerate() {
                    match collector.feed(chunk) {
                        Ok(Some(done)) => {
                            // What came behind the head: the rest of this read, then the
                            // reads the connection would make next.
                            surplus = done.surplus;
                            surplus.extend_from_slice(&bytes[((i + 1) * piece).min(bytes.len())..]);
                            return done.head;
                        }
                        Ok(None) => {}
                        Err(TooLarge) => return b"too large".to_vec(),
                    }
                }
                Vec::new()
            },
            reply: None,
        };
        let verdict = tungstenite::client::client(request, stream)
            .map(|(_, response)| response)
            .map_err(|e| e.to_string());
        (verdict, surplus)
    }

    fn ok_101(key: &str, connection: &str, eol: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols{eol}Upgrade: websocket{eol}{connection}Sec-WebSocket-Accept: {}{eol}{eol}",
            derive_accept_key(key.as_bytes())
        )
    }

    #[test]
    fn connection_token_lists_and_interim_responses_pass() {
        for (connection, interim) in [
            ("Connection: Upgrade\r\n", ""),
            ("Connection: keep-alive, Upgrade\r\n", ""),
            ("Connection: keep-alive\r\nConnection: upgrade\r\n", ""),
            ("Connection: Upgrade\r\n", "HTTP/1.1 100 Continue\r\n\r\n"),
            (
                "Connection: Upgrade\r\n",
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n",
            ),
        ] {
            let (verdict, surplus) = handshake_over(
                |key| format!("{interim}{}\x01\x00", ok_101(key, connection, "\r\n")).into(),
                1,
            );
            assert!(verdict.is_ok(), "{connection:?} {interim:?}: {verdict:?}");
            assert_eq!(surplus, b"\x01\x00");
        }
        for connection in ["Connection: keep-alive\r\n", "", "Connection: upgraded\r\n"] {
            let (verdict, _) = handshake_over(|key| ok_101(key, connection, "\r\n").into(), 7);
            assert!(verdict.is_err(), "{connection:?}");
        }
    }

    #[test]
    fn a_head_that_never_ends_is_too_large() {
        let mut collector = HeadCollector::default();
        let line = b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        assert_eq!(collector.feed(b"HTTP/1.1 101 OK\r\n"), Ok(None));
        let mut result = Ok(None);
        for _ in 0..MAX_HEAD / line.len() + 1 {
            result = collector.feed(line);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLarge));
        // Interim responses count too: endless 100s do not go on for ever.
        let mut collector = HeadCollector::default();
        let mut result = Ok(None);
        for _ in 0..MAX_HEAD {
            result = collector.feed(b"HTTP/1.1 100 Continue\r\n\r\n");
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLarge));
    }

    fn connection_lists() -> impl Strategy<Value = Vec<Vec<String>>> {
        let token = prop::sample::select(vec![
            "keep-alive",
            "close",
            "Upgrade",
            "upgrade",
            "UPGRADE",
            "x-proxy",
            "te",
        ]);
        prop::collection::vec(
            prop::collection::vec(token.prop_map(str::to_owned), 1..4),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the interim responses, line endings, `Connection` lines and read sizes,
        /// tungstenite accepts the 101 exactly when a `Connection` token is `Upgrade`, and the
        /// bytes behind the head come out whole.
        #[test]
        fn a_101_passes_exactly_when_connection_lists_upgrade(
            lines in connection_lists(),
            interims in 0usize..3,
            bare_newlines in any::<bool>(),
            piece in 1usize..200,
            frames in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let eol = if bare_newlines { "\n" } else { "\r\n" };
            let connection: String = lines
                .iter()
                .map(|tokens| format!("Connection: {}{eol}", tokens.join(", ")))
                .collect();
            let expect_ok = lines.iter().flatten().any(|t| t.eq_ignore_ascii_case("upgrade"));
            let interim = format!("HTTP/1.1 100 Continue{eol}{eol}").repeat(interims);
            let (verdict, surplus) = handshake_over(
                |key| {
                    let mut bytes = format!("{interim}{}", ok_101(key, &connection, eol)).into_bytes();
                    bytes.extend_from_slice(&frames);
                    bytes
                },
                piece,
            );
            prop_assert_eq!(verdict.is_ok(), expect_ok, "{:?}", verdict);
            if expect_ok {
                prop_assert_eq!(surplus, frames);
            }
        }

        /// Any bytes at all: the collector ends in a head, a refusal or a wish for more, and
        /// never panics; tungstenite then judges what it was given without panicking either.
        #[test]
        fn random_answers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), piece in 1usize..64) {
            let (_verdict, _) = handshake_over(|_| bytes.clone(), piece);
        }
    }
}
