//! Telling TLS from something else by its first byte: every TLS connection starts with a
//! record whose first byte is its content type, and a client's first record is a handshake
//! (0x16). Plain HTTP starts with a method name in ASCII letters. This is how a server
//! answers plain HTTP sent to its TLS port with an HTTP error instead of a silent close.

/// The content type of a TLS handshake record: how every TLS client starts.
pub const HANDSHAKE: u8 = 0x16;

/// Whether `byte` can start a TLS record at all: change_cipher_spec (0x14), alert (0x15),
/// handshake (0x16) or application data (0x17). A server answering a ClientHello starts
/// with a handshake or an alert record.
pub fn is_tls_record_type(byte: u8) -> bool {
    (0x14..=0x17).contains(&byte)
}

/// Whether the first bytes a client sent look like plain HTTP (an upper-case method name
/// followed by a space) rather than TLS.
pub fn looks_like_http(first: &[u8]) -> bool {
    let method_len = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len > 0 && first.get(method_len) == Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_methods_are_not_tls_and_look_like_http() {
        for head in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x",
            b"OPTIONS * HTTP/1.1",
        ] {
            assert!(!is_tls_record_type(head[0]));
            assert!(looks_like_http(head));
        }
        assert!(is_tls_record_type(HANDSHAKE));
        assert!(!looks_like_http(&[HANDSHAKE, 3, 1]));
        assert!(!looks_like_http(b"GET"), "no space yet");
        assert!(!looks_like_http(b""));
    }
}
