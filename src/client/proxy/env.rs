//! The proxy variables, read as Go's `http.ProxyFromEnvironment` reads them
//! (`golang.org/x/net/http/httpproxy`), with curl's `ALL_PROXY` as a fallback.
//!
//! - `ws://` targets use `HTTP_PROXY`, `wss://` targets `HTTPS_PROXY`; each falls back to
//!   `ALL_PROXY`. Of an upper- and a lower-case name, the first one set and not empty wins,
//!   upper case first, as Go's `getEnvAny("HTTP_PROXY", "http_proxy")` takes them.
//! - `NO_PROXY` lists exceptions, comma-separated: `*` (everything), an IP address, a CIDR
//!   block, or a domain (`example.com` is the domain and its subdomains, `.example.com` and
//!   `*.example.com` only its subdomains); an IP or domain may end in `:PORT`.
//! - `localhost` and loopback addresses never go through a proxy from the environment.
//!
//! The variables are read once, at the edge ([`ProxyEnv::from_process`]); everything else
//! works on the values as data, so tests need not touch the process's environment.

use super::{Proxy, ProxyError, ProxySource};
use crate::cidr::Cidr;
use crate::client::target::Target;
use std::fmt;
use std::net::IpAddr;

/// One variable that was set: its name (the spelling found) and its value.
#[derive(Clone)]
struct Var {
    name: &'static str,
    value: String,
}

/// The proxy variables of one process.
#[derive(Clone, Default)]
pub struct ProxyEnv {
    http: Option<Var>,
    https: Option<Var>,
    all: Option<Var>,
    no_proxy: String,
}

impl ProxyEnv {
    /// Reads the variables through `get` (a name to its value, `None` when unset).
    pub fn from_vars(get: impl Fn(&'static str) -> Option<String>) -> ProxyEnv {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                let value = get(name)?;
                (!value.trim().is_empty()).then_some(Var { name, value })
            })
        };
        ProxyEnv {
            http: first(["HTTP_PROXY", "http_proxy"]),
            https: first(["HTTPS_PROXY", "https_proxy"]),
            all: first(["ALL_PROXY", "all_proxy"]),
            no_proxy: first(["NO_PROXY", "no_proxy"])
                .map(|v| v.value)
                .unwrap_or_default(),
        }
    }

    /// Reads this process's environment.
    pub fn from_process() -> ProxyEnv {
        ProxyEnv::from_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The proxy for `target`, or `None` to connect directly. A proxy URL that cannot be used
    /// is an error (naming its variable) when, and only when, it applies to `target`.
    pub fn for_target(&self, target: &Target) -> Result<Option<Proxy>, ProxyError> {
        let secure = target.url.starts_with("wss://");
        let var = match secure {
            true => self.https.as_ref(),
            false => self.http.as_ref(),
        };
        let Some(var) = var.or(self.all.as_ref()) else {
            return Ok(None);
        };
        if bypass(&self.no_proxy, &target.host, target.port) {
            return Ok(None);
        }
        Proxy::parse(&var.value, ProxySource::Variable(var.name)).map(Some)
    }
}

impl fmt::Debug for ProxyEnv {
    /// Names the variables that are set, never their values: they may hold passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |v: &Option<Var>| v.as_ref().map(|v| v.name);
        f.debug_struct("ProxyEnv")
            .field("http", &name(&self.http))
            .field("https", &name(&self.https))
            .field("all", &name(&self.all))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Whether `host:port` goes direct: it is local, or `no_proxy` lists it.
fn bypass(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    let port = port.to_string();
    no_proxy.split(',').any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        if let Some(net) = entry
            .contains('/')
            .then(|| entry.parse::<Cidr>().ok())
            .flatten()
        {
            return ip.is_some_and(|ip| net.contains(ip));
        }
        let Some((pattern, pattern_port)) = split_port(&entry) else {
            return false;
        };
        let port_matches = pattern_port.is_none_or(|p| p == port);
        if let Ok(pattern_ip) = pattern.parse::<IpAddr>() {
            return ip == Some(pattern_ip.to_canonical()) && port_matches;
        }
        // `example.com` is the domain and its subdomains; `.example.com` and
        // `*.example.com` only the subdomains.
        let pattern = pattern.strip_prefix('*').unwrap_or(pattern);
        let matches = match pattern.strip_prefix('.') {
            Some(domain) => host.ends_with(pattern) && !domain.is_empty(),
            None => host == pattern || host.ends_with(&format!(".{pattern}")),
        };
        matches && port_matches
    })
}

/// `HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address, split; `None` for an
/// entry without a host (ignored, as Go ignores it).
fn split_port(entry: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        // Two colons or more: an IPv6 address without brackets, and no port.
        None if entry.matches(':').count() > 1 => (entry, None),
        None => match entry.split_once(':') {
            Some((host, port)) => (host, Some(port).filter(|p| !p.is_empty())),
            None => (entry, None),
        },
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_vars(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn chosen(env: &ProxyEnv, url: &str) -> Option<String> {
        let mut target = Target::from_url(&url.replacen("wss://", "ws://", 1)).unwrap();
        target.url = url.to_string();
        env.for_target(&target)
            .unwrap()
            .map(|p| format!("{p}{}", p.source))
    }

    #[test]
    fn ws_takes_http_proxy_and_wss_https_proxy_each_falling_back_to_all_proxy() {
        let e = env(&[
            ("HTTP_PROXY", "http://h:1"),
            ("HTTPS_PROXY", "http://s:2"),
            ("ALL_PROXY", "socks5://a:3"),
        ]);
        assert_eq!(
            chosen(&e, "ws://example.com/").as_deref(),
            Some("http://h:1 (from HTTP_PROXY)")
        );
        assert_eq!(
            chosen(&e, "wss://example.com/").as_deref(),
            Some("http://s:2 (from HTTPS_PROXY)")
        );
        let e = env(&[
            ("all_proxy", "socks5h://a:3"),
            ("HTTPS_PROXY", "http://s:2"),
        ]);
        assert_eq!(
            chosen(&e, "ws://example.com/").as_deref(),
            Some("socks5h://a:3 (from all_proxy)")
        );
        // wss never takes HTTP_PROXY, as in Go.
        let e = env(&[("HTTP_PROXY", "http://h:1")]);
        assert_eq!(chosen(&e, "wss://example.com/"), None);
        assert_eq!(chosen(&env(&[]), "ws://example.com/"), None);
    }

    #[test]
    fn upper_case_wins_and_empty_counts_as_unset() {
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:1"),
        ]);
        assert_eq!(
            chosen(&e, "ws://example.com/").as_deref(),
            Some("http://upper:1 (from HTTP_PROXY)")
        );
        let e = env(&[("HTTP_PROXY", ""), ("http_proxy", "http://lower:1")]);
        assert_eq!(
            chosen(&e, "ws://example.com/").as_deref(),
            Some("http://lower:1 (from http_proxy)")
        );
        let e = env(&[
            ("HTTP_PROXY", "http://h:1"),
            ("NO_PROXY", " "),
            ("no_proxy", "example.com"),
        ]);
        assert_eq!(chosen(&e, "ws://example.com/"), None);
    }

    #[test]
    fn local_targets_never_go_through_a_proxy_from_the_environment() {
        let e = env(&[("HTTP_PROXY", "http://h:1")]);
        for url in [
            "ws://localhost:8080/",
            "ws://LOCALHOST/",
            "ws://127.0.0.1/",
            "ws://127.1.2.3:9/",
            "ws://[::1]:9/",
            "ws://[::ffff:127.0.0.1]/",
        ] {
            assert_eq!(chosen(&e, url), None, "{url}");
        }
        assert!(chosen(&e, "ws://0.0.0.0/").is_some());
        assert!(chosen(&e, "ws://localhost.example.com/").is_some());
    }

    #[test]
    fn no_proxy_matches_as_go_does() {
        for (no_proxy, host, port, direct) in [
            ("*", "example.com", 80, true),
            ("a.com, *", "example.com", 80, true),
            ("example.com", "example.com", 80, true),
            ("example.com", "www.example.com", 80, true),
            ("example.com", "notexample.com", 80, false),
            (".example.com", "example.com", 80, false),
            (".example.com", "www.example.com", 80, true),
            ("*.example.com", "example.com", 80, false),
            ("*.example.com", "a.b.example.com", 80, true),
            ("EXAMPLE.com", "www.Example.COM", 80, true),
            ("example.com:8080", "example.com", 8080, true),
            ("example.com:8080", "example.com", 80, false),
            (".example.com:443", "www.example.com", 443, true),
            ("10.0.0.1", "10.0.0.1", 80, true),
            ("10.0.0.1", "10.0.0.2", 80, false),
            ("10.0.0.1:9000", "10.0.0.1", 9000, true),
            ("10.0.0.1:9000", "10.0.0.1", 80, false),
            ("10.0.0.0/8", "10.200.0.9", 80, true),
            ("10.0.0.0/8", "11.0.0.1", 80, false),
            ("10.0.0.0/8", "::ffff:10.0.0.1", 80, true),
            ("0.0.0.0/0", "192.0.2.1", 80, true),
            ("10.0.0.0/8", "ten.example", 80, false),
            ("fd00::/8", "fd12::1", 80, true),
            ("fd00::/8", "fe80::1", 80, false),
            ("2001:db8::1", "2001:db8::1", 80, true),
            ("[2001:db8::1]:443", "2001:db8::1", 443, true),
            ("[2001:db8::1]:443", "2001:db8::1", 80, false),
            ("[2001:db8::1]", "2001:db8::1", 80, true),
            (":80", "example.com", 80, false),
            (",, ,", "example.com", 80, false),
            ("", "example.com", 80, false),
            ("a.com,b.com", "x.b.com", 80, true),
            (".", "example.com", 80, false),
        ] {
            assert_eq!(
                bypass(no_proxy, host, port),
                direct,
                "NO_PROXY={no_proxy:?} host={host} port={port}"
            );
        }
    }

    #[test]
    fn a_bad_proxy_url_fails_only_where_it_applies_and_names_its_variable() {
        let e = env(&[("https_proxy", "ftp://x"), ("HTTP_PROXY", "http://h:1")]);
        assert!(chosen(&e, "ws://example.com/").is_some());
        let mut target = Target::from_url("ws://example.com/").unwrap();
        target.url = "wss://example.com/".into();
        let err = e.for_target(&target).unwrap_err().to_string();
        assert!(
            err.contains("in https_proxy") && err.contains("unsupported scheme"),
            "{err}"
        );
        let e = env(&[("HTTP_PROXY", "ftp://x"), ("NO_PROXY", "example.com")]);
        assert_eq!(chosen(&e, "ws://example.com/"), None);
    }

    #[test]
    fn debug_shows_which_variables_are_set_but_not_their_values() {
        let e = env(&[("http_proxy", "http://user:secret@h:1")]);
        let debug = format!("{e:?}");
        assert!(
            debug.contains("http_proxy") && !debug.contains("secret"),
            "{debug}"
        );
    }
}
