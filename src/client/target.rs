//! Where to connect: `HOST:PORT` or a `ws://` / `wss://` URL, and the upgrade request to send.

use std::fmt;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue, Uri};

/// A parsed, connectable WebSocket URL.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as it will be requested, e.g. `ws://localhost:8080/echo`.
    pub url: String,
    /// The host to resolve (without IPv6 brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

/// Why a target or header was refused, as data; the message names what to fix.
#[derive(Debug, PartialEq)]
pub enum TargetError {
    /// A `HOST:PORT` that is a URL (or has a path).
    AddrIsUrl(String),
    /// Not a URL at all.
    NotUrl(String),
    /// Any other refusal, with its message.
    Other(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::AddrIsUrl(addr) => {
                write!(f, "'{addr}' is a URL, not HOST:PORT")
            }
            TargetError::NotUrl(url) => {
                write!(f, "cannot dial '{url}': not a URL; use ws://HOST:PORT/PATH")
            }
            TargetError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// `HOST:PORT` as the Go client takes it: the echo path on that server.
    pub fn from_addr(addr: &str) -> Result<Target, TargetError> {
        if addr.contains("://") || addr.contains('/') {
            return Err(TargetError::AddrIsUrl(addr.to_string()));
        }
        Target::from_url(&format!("ws://{addr}/echo"))
    }

    /// A `ws://host[:port][/path][?query]` URL, or `wss://` (TLS, port 443 by default).
    pub fn from_url(url: &str) -> Result<Target, TargetError> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let (scheme, default_port) = match scheme.as_deref() {
            Some("ws") => ("ws", 80),
            #[cfg(feature = "tls")]
            Some("wss") => ("wss", 443),
            #[cfg(not(feature = "tls"))]
            Some("wss") => {
                return Err(TargetError::Other(format!(
                    "cannot dial {url}: this wsecho was built without TLS (the cargo feature tls); use a ws:// URL"
                )));
            }
            Some(other) => {
                return Err(TargetError::Other(format!(
                    "cannot dial {url}: unsupported scheme '{other}'; use ws://HOST:PORT/PATH"
                )));
            }
            None => {
                return Err(TargetError::NotUrl(url.to_string()));
            }
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| TargetError::Other(format!("cannot dial '{url}': malformed URL ({e})")))?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| {
            TargetError::Other(format!("cannot dial '{url}': the URL has no host"))
        })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let port = match authority.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(TargetError::Other(format!(
                        "cannot dial '{url}': '{port}' is not a port (1-65535)"
                    )));
                }
            },
            _ => default_port,
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Target {
            url: format!("{scheme}://{authority}{path}"),
            host,
            port,
        })
    }

    /// Whether the connection runs over TLS (a `wss://` URL).
    pub fn secure(&self) -> bool {
        self.url.starts_with("wss://")
    }

    /// The upgrade request: tungstenite's standard headers plus the user's.
    pub(crate) fn request(&self, extra: &[(String, String)]) -> Result<Request, TargetError> {
        let mut request = self.url.as_str().into_client_request().map_err(|e| {
            TargetError::Other(format!("cannot build a request for {}: {e}", self.url))
        })?;
        for (name, value) in extra {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TargetError::Other(format!("invalid header name '{name}'")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| TargetError::Other(format!("invalid value for header '{name}'")))?;
            request.headers_mut().append(name, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_becomes_the_echo_url() {
        let t = Target::from_addr("localhost:8080").unwrap();
        assert_eq!(
            (t.url.as_str(), t.host.as_str(), t.port),
            ("ws://localhost:8080/echo", "localhost", 8080)
        );
        let t = Target::from_addr("[::1]:9000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
    }

    #[test]
    fn urls_keep_path_and_query_and_default_to_port_80() {
        let t = Target::from_url("ws://example.com/a/b?c=d").unwrap();
        assert_eq!((t.url.as_str(), t.port), ("ws://example.com/a/b?c=d", 80));
        assert_eq!(Target::from_url("ws://h:1").unwrap().url, "ws://h:1/");
    }

    #[test]
    fn bad_targets_say_what_to_fix() {
        for (bad, says) in [
            ("http://h/echo", "unsupported scheme 'http'"),
            ("localhost:8080", "not a URL"),
            ("ws://", "malformed URL"),
            ("ws://h:99999/", "not a port"),
            ("ws://h:0/", "not a port"),
        ] {
            let e = Target::from_url(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        assert!(Target::from_addr("ws://h:1").is_err());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn wss_urls_default_to_port_443() {
        let t = Target::from_url("WSS://example.com/x").unwrap();
        assert_eq!((t.url.as_str(), t.port), ("wss://example.com/x", 443));
        assert!(t.secure());
        assert!(!Target::from_url("ws://h/").unwrap().secure());
    }
}
