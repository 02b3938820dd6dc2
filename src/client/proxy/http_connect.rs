//! HTTP `CONNECT` (RFC 9110, 9.3.6): ask the proxy for a tunnel to `host:port`, with Basic
//! credentials when the proxy URL has them, and read its reply head, and not one byte more.

use super::{Deadline, Proxy, ProxyErrorKind};
use crate::log::Printable;
use std::io;
use std::net::TcpStream;

/// The most a proxy's reply head may take.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// The most headers a proxy's reply head may have.
pub(super) const MAX_HEADERS: usize = 64;

/// Sends `CONNECT authority` and reads the reply; `Ok` once the proxy answered 2xx.
pub(super) fn open(
    stream: &TcpStream,
    proxy: &Proxy,
    authority: &str,
    deadline: Deadline,
) -> Result<(), ProxyErrorKind> {
    deadline.write_all(stream, request(proxy, authority).as_bytes())?;
    judge(&read_head(stream, deadline)?, proxy)
}

/// [`open`] over a stream that keeps the deadline itself: the TLS session to an `https://`
/// proxy. The reply head is read from it one byte at a time, which costs no system calls
/// (the session hands out what it already decrypted), so that whatever follows the head
/// stays in the session for the target.
#[cfg(feature = "tls")]
pub(super) fn open_over(
    mut io: impl io::Read + io::Write,
    proxy: &Proxy,
    authority: &str,
    deadline: Deadline,
) -> Result<(), ProxyErrorKind> {
    io.write_all(request(proxy, authority).as_bytes())
        .and_then(|()| io.flush())
        .map_err(|e| deadline.io(e))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\n\n") && !head.ends_with(b"\n\r\n") {
        match io.read(&mut byte) {
            Ok(0) => return Err(ProxyErrorKind::Closed),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(deadline.io(e)),
        }
        // Not HTTP: said at once rather than at the deadline.
        if head.len() <= 5 && !b"HTTP/".starts_with(&head) {
            return Err(ProxyErrorKind::NotHttp);
        }
        if head.len() > MAX_HEAD {
            return Err(ProxyErrorKind::HeadTooLarge);
        }
    }
    judge(&head, proxy)
}

/// The `CONNECT` request, with Basic credentials when the proxy URL has them.
fn request(proxy: &Proxy, authority: &str) -> String {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, password)) = &proxy.credentials {
        let mut pair = user.clone();
        pair.push(b':');
        pair.extend_from_slice(password);
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&base64(&pair));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// What the proxy's reply head says: `Ok` for 2xx, else why not.
fn judge(head: &[u8], proxy: &Proxy) -> Result<(), ProxyErrorKind> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyErrorKind::HeadTooLarge),
        Ok(httparse::Status::Partial) | Err(_) => return Err(ProxyErrorKind::NotHttp),
    }
    let code = response.code.unwrap_or(0);
    let status_line = format!(
        "HTTP/1.{} {code} {}",
        response.version.unwrap_or(1),
        Printable(response.reason.unwrap_or(""))
    );
    match code {
        200..=299 => Ok(()),
        // 407 is the proxy's own; before a tunnel there is no server to send a 401 but the
        // proxy, and some proxies (tinyproxy before 1.11.2) answer a CONNECT with it.
        401 | 407 if proxy.has_credentials() => {
            Err(ProxyErrorKind::CredentialsRefused(status_line))
        }
        401 | 407 => Err(ProxyErrorKind::CredentialsWanted),
        _ => Err(ProxyErrorKind::Refused(status_line)),
    }
}

/// Reads the reply head, up to and including its blank line, by the deadline.
///
/// Whatever follows the head is the target's and must stay in the socket for the WebSocket
/// handshake, so each chunk is first peeked at, and only the part that belongs to the head
/// is then taken off the socket.
fn read_head(stream: &TcpStream, deadline: Deadline) -> Result<Vec<u8>, ProxyErrorKind> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        stream
            .set_read_timeout(Some(deadline.left()?))
            .map_err(ProxyErrorKind::Io)?;
        let n = match stream.peek(&mut chunk) {
            Ok(0) => return Err(ProxyErrorKind::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(deadline.io(e)),
        };
        let before = head.len();
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let end = match httparse::Response::new(&mut headers).parse(&head) {
            Ok(httparse::Status::Complete(end)) => Some(end),
            Ok(httparse::Status::Partial) => None,
            // More headers than a CONNECT reply ever has.
            Err(httparse::Error::TooManyHeaders) => return Err(ProxyErrorKind::HeadTooLarge),
            // Not HTTP: the caller's own parse says so.
            Err(_) => Some(head.len()),
        };
        let take = end.map_or(n, |end| end - before);
        head.truncate(before + take);
        deadline.read_exact(stream, &mut chunk[..take])?;
        if end.is_some() {
            return Ok(head);
        }
        // The peeked bytes are consumed now, so the next peek waits for new ones.
        if head.len() > MAX_HEAD {
            return Err(ProxyErrorKind::HeadTooLarge);
        }
    }
}

/// Standard base64 with padding (RFC 4648, 4), for the Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Deadline;
    use super::{ProxyErrorKind, base64, read_head};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    /// A connected pair of loopback sockets: (ours, the proxy's end).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (ours, listener.accept().unwrap().0)
    }

    fn deadline(secs: u64) -> Deadline {
        let timeout = Duration::from_secs(secs);
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    #[test]
    fn the_head_is_read_to_its_blank_line_and_what_follows_stays_in_the_socket() {
        let (ours, mut proxy) = pair();
        proxy
            .write_all(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nTARGET")
            .unwrap();
        let head = read_head(&ours, deadline(10)).unwrap();
        assert!(head.ends_with(b"Via: x\r\n\r\n"), "{head:?}");
        drop(proxy);
        let mut rest = Vec::new();
        (&ours).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"TARGET");
    }

    #[test]
    fn a_head_that_trickles_in_is_put_together_without_taking_more() {
        let (ours, mut proxy) = pair();
        let writer = thread::spawn(move || {
            for byte in b"HTTP/1.0 200 OK\n\nAB" {
                proxy.write_all(&[*byte]).unwrap();
                thread::sleep(Duration::from_millis(2));
            }
        });
        let head = read_head(&ours, deadline(10)).unwrap();
        assert_eq!(head, b"HTTP/1.0 200 OK\n\n");
        writer.join().unwrap();
        let mut rest = [0u8; 2];
        (&ours).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"AB");
    }

    #[test]
    fn an_endless_head_is_cut_off() {
        let (ours, mut proxy) = pair();
        let writer = thread::spawn(move || {
            let _ = proxy.write_all(b"HTTP/1.1 200 OK\r\n");
            let line = b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            while proxy.write_all(line).is_ok() {}
        });
        let result = read_head(&ours, deadline(10));
        drop(ours);
        writer.join().unwrap();
        assert!(
            matches!(result, Err(ProxyErrorKind::HeadTooLarge)),
            "{result:?}"
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}

/// `CONNECT` inside a session, over an in-memory stream standing for it.
#[cfg(all(test, feature = "tls"))]
mod over_a_session {
    use super::super::{Deadline, Proxy, ProxySource};
    use super::{MAX_HEAD, ProxyErrorKind, open_over};
    use std::io::{self, Cursor, Read, Write};
    use std::time::{Duration, Instant};

    /// What the proxy says, and what we wrote to it.
    struct Session {
        replies: Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Session {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.replies.read(buf)
        }
    }

    impl Write for Session {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn session(replies: &[u8]) -> Session {
        Session {
            replies: Cursor::new(replies.to_vec()),
            written: Vec::new(),
        }
    }

    fn open(proxy: &str, session: &mut Session) -> Result<(), ProxyErrorKind> {
        let proxy = Proxy::parse(proxy, ProxySource::Given).expect("proxy URL");
        let timeout = Duration::from_secs(10);
        let deadline = Deadline {
            at: Instant::now() + timeout,
            timeout,
        };
        open_over(&mut *session, &proxy, "example.com:443", deadline)
    }

    #[test]
    fn the_reply_head_is_read_to_its_blank_line_and_not_a_byte_more() {
        let mut s = session(b"HTTP/1.1 200 Connection established\r\nVia: squid\r\n\r\nTARGET");
        open("https://proxy.lan", &mut s).unwrap();
        let mut rest = String::new();
        s.replies.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "TARGET");
        assert_eq!(
            s.written,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        );
    }

    #[test]
    fn credentials_go_into_the_request() {
        let mut s = session(b"HTTP/1.0 200 OK\n\n");
        open("https://Aladdin:open%20sesame@proxy.lan", &mut s).unwrap();
        let request = String::from_utf8(s.written).unwrap();
        assert!(
            request.contains("\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
            "{request}"
        );
    }

    #[test]
    fn refusals_are_told_apart() {
        let mut s = session(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        assert!(matches!(
            open("https://proxy.lan", &mut s),
            Err(ProxyErrorKind::CredentialsWanted)
        ));
        let mut s = session(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        assert!(matches!(
            open("https://u:p@proxy.lan", &mut s),
            Err(ProxyErrorKind::CredentialsRefused(_))
        ));
        let mut s = session(b"HTTP/1.1 403 Forbidden\r\n\r\n");
        match open("https://proxy.lan", &mut s) {
            Err(ProxyErrorKind::Refused(status)) => assert_eq!(status, "HTTP/1.1 403 Forbidden"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_that_is_not_http_is_refused_without_waiting_for_more() {
        let mut s = session(b"SSH-2.0-OpenSSH_9.2\r\n");
        assert!(matches!(
            open("https://proxy.lan", &mut s),
            Err(ProxyErrorKind::NotHttp)
        ));
        assert!(s.replies.position() <= 5, "read {}", s.replies.position());
    }

    #[test]
    fn an_endless_head_and_an_early_end_are_errors() {
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        while endless.len() <= MAX_HEAD {
            endless.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut s = session(&endless);
        assert!(matches!(
            open("https://proxy.lan", &mut s),
            Err(ProxyErrorKind::HeadTooLarge)
        ));
        let mut s = session(b"HTTP/1.1 200 OK\r\nVia: x\r\n");
        assert!(matches!(
            open("https://proxy.lan", &mut s),
            Err(ProxyErrorKind::Closed)
        ));
    }
}
