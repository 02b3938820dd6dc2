//! HTTP `CONNECT` (RFC 9110, 9.3.6): ask the proxy for a tunnel to `host:port`, with Basic
//! credentials when the proxy URL has them, and read its reply head, and not one byte more.

use super::{Deadline, Proxy, ProxyErrorKind};
use crate::log::Printable;
use std::io;
use std::net::TcpStream;

/// The most a proxy's reply head may take.
pub(super) const MAX_HEAD: usize = 16 * 1024;

/// Sends `CONNECT authority` and reads the reply; `Ok` once the proxy answered 2xx.
pub(super) fn open(
    stream: &TcpStream,
    proxy: &Proxy,
    authority: &str,
    deadline: Deadline,
) -> Result<(), ProxyErrorKind> {
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
    deadline.write_all(stream, request.as_bytes())?;
    let head = read_head(stream, deadline)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
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
        407 if proxy.has_credentials() => Err(ProxyErrorKind::CredentialsRefused(status_line)),
        407 => Err(ProxyErrorKind::CredentialsWanted),
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
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let end = match httparse::Response::new(&mut headers).parse(&head) {
            Ok(httparse::Status::Complete(end)) => Some(end),
            Ok(httparse::Status::Partial) => None,
            // Not HTTP, or a head with more headers than a CONNECT reply ever has: the
            // caller's own parse says which.
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
    use super::base64;

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
