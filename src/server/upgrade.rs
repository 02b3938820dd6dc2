//! The handshake policy: who may upgrade, with which subprotocol, and the switch itself.
//!
//! tungstenite validates the request (method, version, `Connection`, `Upgrade`, version 13,
//! the key) and derives the accept key; wsecho only adds policy on top:
//! - **Origin**, as gorilla's `Upgrader` does by default: a browser request whose `Origin`
//!   names another host than its `Host` header is refused with 403, so a page elsewhere cannot
//!   use a visitor's browser to talk to this server; requests without `Origin` (non-browser
//!   clients) pass; a list of allowed origins widens the rule. The front door has made sure there is
//!   exactly one `Host` (and that an absolute-form target names the same host).
//! - **Subprotocol**: an echo speaks every protocol, so the first one the client offers is
//!   accepted. (Clients that offer one fail the handshake if the server picks none.)

use super::config::Limits;
use super::http::{Reply, header, header_tokens};
use std::io::Write;
use tungstenite::handshake::server::{Request, Response, create_response, write_response};
use tungstenite::http::{HeaderValue, Version};
use tungstenite::protocol::{Role, WebSocketContext};

/// The origins allowed besides same-origin requests.
pub(crate) struct Policy {
    any_origin: bool,
    origins: Vec<String>,
}

impl Policy {
    pub(crate) fn new(allowed: &[String]) -> Policy {
        Policy {
            any_origin: allowed.iter().any(|o| o == "*"),
            origins: allowed
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with this `Origin` (and `Host`) may upgrade.
    fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        match (origin_host(origin), host) {
            (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

/// The `host[:port]` of an origin such as `https://example.com:8443`; `None` for `null` and
/// anything else that is not `scheme://authority`.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then_some(host)
}

/// Performs the upgrade: policy, tungstenite's validation, and the 101 in one write. Returns
/// the connection's protocol state, or the answer to refuse with (`None`: the peer is gone).
/// Bytes that came behind the request are the echo loop's first input, not the context's, so
/// that they go through the same path (and bookkeeping) as every later read.
pub(crate) fn accept(
    mut stream: impl Write,
    request: &httparse::Request<'_, '_>,
    policy: &Policy,
    limits: &Limits,
) -> Result<WebSocketContext, Option<Reply>> {
    let response = check(request, policy).map_err(Some)?;
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &response).map_err(|e| Some(bad_request(&e.to_string())))?;
    stream.write_all(&out).map_err(|_| None)?;
    let config = crate::link::config(limits.max_message, limits.max_frame);
    Ok(WebSocketContext::new(Role::Server, Some(config)))
}

/// The policy and tungstenite's validation, without I/O: the 101 to send, or the refusal.
pub(crate) fn check(
    request: &httparse::Request<'_, '_>,
    policy: &Policy,
) -> Result<Response, Reply> {
    if !policy.allows(header(request, "origin"), header(request, "host")) {
        return Err(Reply::text(
            403,
            "Forbidden",
            "cross-origin WebSocket refused: the Origin header does not match Host\n",
        ));
    }
    if request.version != Some(1) {
        return Err(bad_request("WebSocket needs HTTP/1.1"));
    }
    let mut response = to_http(request)
        .and_then(|r| create_response(&r).map_err(|e| e.to_string()))
        .map_err(|e| bad_request(&e))?;
    if let Some(protocol) = header_tokens(request, "sec-websocket-protocol").next()
        && let Ok(value) = HeaderValue::from_str(protocol)
    {
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    Ok(response)
}

fn bad_request(why: &str) -> Reply {
    Reply::text(
        400,
        "Bad Request",
        &format!("invalid WebSocket upgrade: {why}\n"),
    )
    .with("Sec-WebSocket-Version", "13")
}

/// The headers tungstenite's `create_response` validates; the others need not be copied.
const VALIDATED: [&str; 4] = [
    "connection",
    "upgrade",
    "sec-websocket-version",
    "sec-websocket-key",
];

/// The list headers whose token tungstenite looks for, each with that token. tungstenite
/// reads only the first line of each, and wants `Upgrade` to be exactly `websocket`; RFC 7230
/// 3.2.2 makes repeated lines one list, and a client may offer more than one protocol
/// (`Upgrade: websocket, h2c`).
const LISTS: [(&str, &str); 2] = [("connection", "Upgrade"), ("upgrade", "websocket")];

/// The parsed head as the `http::Request` tungstenite validates. The path is checked by our
/// routing, not by tungstenite, so the URI stays `/`: a request target `http::Uri` refuses
/// must not turn into a 400 here. A list header whose lines hold the token tungstenite looks
/// for is given to it as that token alone; one that does not is given as it came, for
/// tungstenite to refuse.
fn to_http(request: &httparse::Request<'_, '_>) -> Result<Request, String> {
    let mut builder = Request::builder()
        .method(request.method.unwrap_or("GET"))
        .version(Version::HTTP_11);
    let listed = LISTS
        .map(|(name, token)| header_tokens(request, name).any(|t| t.eq_ignore_ascii_case(token)));
    for ((name, token), _) in LISTS.iter().zip(listed).filter(|(_, listed)| *listed) {
        builder = builder.header(*name, token.as_bytes());
    }
    let validated = request.headers.iter().filter(|h| {
        VALIDATED.iter().any(|v| h.name.eq_ignore_ascii_case(v))
            && !LISTS
                .iter()
                .zip(listed)
                .any(|((name, _), listed)| listed && h.name.eq_ignore_ascii_case(name))
    });
    for h in validated {
        builder = builder.header(h.name, h.value);
    }
    builder.body(()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy_follows_gorilla_and_widens_with_allow_origin() {
        let strict = Policy::new(&[]);
        assert!(strict.allows(None, Some("a:8080")));
        assert!(strict.allows(Some("http://a:8080"), Some("a:8080")));
        assert!(strict.allows(Some("https://A:8080"), Some("a:8080")));
        assert!(!strict.allows(Some("http://evil:8080"), Some("a:8080")));
        assert!(!strict.allows(Some("null"), Some("a:8080")));
        assert!(!strict.allows(Some("http://a:8080"), None));
        let listed = Policy::new(&["https://app.example/".into()]);
        assert!(listed.allows(Some("https://APP.example"), Some("a:8080")));
        assert!(!listed.allows(Some("https://other.example"), Some("a:8080")));
        assert!(Policy::new(&["*".into()]).allows(Some("null"), Some("a")));
    }
}
