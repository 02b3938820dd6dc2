//! Who the client really is when the connection comes from a reverse proxy we trust.
//!
//! Behind nginx every connection's peer is nginx; the client's address travels in
//! `X-Forwarded-For` (each proxy appends the address it saw) or `Forwarded: for=`. Anyone can
//! send those headers, so they count only on connections from a trusted proxy, and within the
//! chain only up to the first address that is not itself a trusted proxy: the right-most
//! untrusted entry is the last one a trusted proxy wrote, so the client cannot choose it.

use crate::cidr::Cidr;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub(crate) fn new(ranges: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(addr))
    }

    /// The client behind `peer`, from the request's forwarding headers: `None` when `peer`
    /// is not trusted, when no header names one, or when the entry that would name it is not
    /// an address (garbage, `unknown`, an obfuscated `_name`). `X-Forwarded-For` wins over
    /// `Forwarded` when both are present, as it is what nginx sets.
    pub(crate) fn client(
        &self,
        peer: IpAddr,
        request: &httparse::Request<'_, '_>,
    ) -> Option<IpAddr> {
        if self.0.is_empty() || !self.trusts(peer) {
            return None;
        }
        let chain = |name: &str| -> Vec<&str> {
            request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .flat_map(|v| v.split(','))
                .collect()
        };
        let xff = chain("x-forwarded-for");
        if !xff.is_empty() {
            return self.rightmost_untrusted(xff.iter().map(|e| e.trim().parse().ok()));
        }
        let forwarded = chain("forwarded");
        self.rightmost_untrusted(forwarded.iter().filter_map(|e| forwarded_for(e)))
    }

    /// Walks the chain from the right: trusted proxies are skipped, the first other entry is
    /// the client (or nobody, if it is not an address); a chain of trusted proxies only ends
    /// at its left-most entry.
    fn rightmost_untrusted(
        &self,
        chain: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    ) -> Option<IpAddr> {
        let mut last = None;
        for entry in chain.rev() {
            let addr = entry?;
            if !self.trusts(addr) {
                return Some(addr);
            }
            last = Some(addr);
        }
        last
    }
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239), if it has one: `Some(None)`
/// when it is there but is not an address.
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = value.trim_matches('"');
    // `[2001:db8::1]:4711`, `192.0.2.1:4711`, or a bare address.
    let addr = if let Some(rest) = value.strip_prefix('[') {
        rest.split_once(']').map(|(a, _)| a).unwrap_or(rest)
    } else if value.matches(':').count() == 1 {
        value.split(':').next().unwrap_or(value)
    } else {
        value
    };
    Some(addr.parse().ok())
}

/// A connection's peer as the log names it: `CLIENT via PROXY` when a trusted proxy said who
/// the client is, else the socket's peer address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) client: Option<IpAddr>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(client) => write!(f, "{client} via {}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn client_of(proxies: &TrustedProxies, peer: &str, head: &str) -> Option<IpAddr> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head.as_bytes()).unwrap();
        proxies.client(peer.parse().unwrap(), &request)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_name() {
        let p = trusted(&["127.0.0.1"]);
        let head = "GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=7.7.7.7\r\n\r\n";
        assert_eq!(client_of(&p, "10.0.0.9", head), None);
        assert_eq!(
            client_of(&TrustedProxies::default(), "127.0.0.1", head),
            None
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let p = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        // The client forged 6.6.6.6; the outer proxy 10.0.0.2 saw 198.51.100.7.
        let head = "GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n\
                    X-Forwarded-For: 10.0.0.2\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_where_the_client_should_be_names_nobody() {
        let p = trusted(&["127.0.0.1"]);
        let head = "GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, bogus\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), None);
    }

    #[test]
    fn forwarded_for_is_read_when_there_is_no_x_forwarded_for() {
        let p = trusted(&["127.0.0.1"]);
        let head = "GET / HTTP/1.1\r\nForwarded: for=192.0.2.60;proto=https, \
                    for=\"[2001:db8::17]:4711\"\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), ip("2001:db8::17"));
        let head = "GET / HTTP/1.1\r\nForwarded: for=192.0.2.60:80;by=x\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), ip("192.0.2.60"));
        let head = "GET / HTTP/1.1\r\nForwarded: for=_hidden\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), None);
    }

    #[test]
    fn a_chain_of_trusted_proxies_ends_at_its_leftmost_entry() {
        let p = trusted(&["127.0.0.0/8"]);
        let head = "GET / HTTP/1.1\r\nX-Forwarded-For: 127.0.0.5, 127.0.0.6\r\n\r\n";
        assert_eq!(client_of(&p, "127.0.0.1", head), ip("127.0.0.5"));
    }

    #[test]
    fn the_log_names_client_and_proxy() {
        let peer = Peer {
            addr: "127.0.0.1:5000".parse().unwrap(),
            client: ip("198.51.100.7"),
        };
        assert_eq!(peer.to_string(), "198.51.100.7 via 127.0.0.1:5000");
    }
}
