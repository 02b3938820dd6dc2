//! SOCKS5 (RFC 1928) with no authentication or a user name and password (RFC 1929), the
//! CONNECT command only. `socks5://` resolves the target's name here and sends an address;
//! `socks5h://` sends the name and lets the proxy resolve it.

use super::{Deadline, Proxy, ProxyErrorKind, Scheme};
use crate::client::target::Target;
use std::net::{IpAddr, ToSocketAddrs};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASSWORD: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;
const CONNECT: u8 = 1;
const IPV4: u8 = 1;
const DOMAIN: u8 = 3;
const IPV6: u8 = 4;

/// Greets the proxy, authenticates if it asks, and has it connect to `target`.
///
/// `address` is the target's address for `socks5://` (resolved by the caller, see
/// [`addresses`]); `None` sends the target's host name, for `socks5h://`.
pub(super) fn open(
    stream: &std::net::TcpStream,
    proxy: &Proxy,
    target: &Target,
    address: Option<IpAddr>,
    deadline: Deadline,
) -> Result<(), ProxyErrorKind> {
    // Offer no authentication, and user/password when the URL has credentials: the proxy
    // picks one.
    let greeting: &[u8] = match proxy.credentials {
        Some(_) => &[VERSION, 2, NO_AUTH, USER_PASSWORD],
        None => &[VERSION, 1, NO_AUTH],
    };
    deadline.write_all(stream, greeting)?;
    let mut choice = [0u8; 2];
    deadline.read_exact(stream, &mut choice)?;
    if choice[0] != VERSION {
        return Err(ProxyErrorKind::NotSocks);
    }
    match (choice[1], &proxy.credentials) {
        (NO_AUTH, _) => {}
        (USER_PASSWORD, Some((user, password))) => {
            authenticate(stream, user, password, deadline)?;
        }
        (NO_ACCEPTABLE, None) => return Err(ProxyErrorKind::CredentialsWanted),
        (NO_ACCEPTABLE, Some(_)) => return Err(ProxyErrorKind::NoAcceptableMethod),
        _ => {
            return Err(ProxyErrorKind::SocksProtocol(
                "it chose an authentication method we did not offer",
            ));
        }
    }

    let mut request = vec![VERSION, CONNECT, 0];
    match address {
        Some(IpAddr::V4(ip)) => {
            request.push(IPV4);
            request.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            request.push(IPV6);
            request.extend_from_slice(&ip.octets());
        }
        None => {
            let name = target.host.as_bytes();
            let len = u8::try_from(name.len())
                .map_err(|_| ProxyErrorKind::TooLong("the target's host name"))?;
            request.extend_from_slice(&[DOMAIN, len]);
            request.extend_from_slice(name);
        }
    }
    request.extend_from_slice(&target.port.to_be_bytes());
    deadline.write_all(stream, &request)?;

    // VER REP RSV ATYP, then the address the proxy bound (of no use to us, but it must be
    // read so that the stream is left at the target's first byte).
    let mut reply = [0u8; 4];
    deadline.read_exact(stream, &mut reply)?;
    if reply[0] != VERSION {
        return Err(ProxyErrorKind::SocksProtocol(
            "its reply to CONNECT has the wrong version",
        ));
    }
    if reply[1] != 0 {
        return Err(ProxyErrorKind::SocksReply(reply[1]));
    }
    let bound = match reply[3] {
        IPV4 => 4,
        IPV6 => 16,
        DOMAIN => {
            let mut len = [0u8; 1];
            deadline.read_exact(stream, &mut len)?;
            usize::from(len[0])
        }
        _ => {
            return Err(ProxyErrorKind::SocksProtocol(
                "its reply to CONNECT has an unknown address type",
            ));
        }
    };
    let mut rest = [0u8; 255 + 2];
    deadline.read_exact(stream, &mut rest[..bound + 2])
}

/// RFC 1929: user name and password, each 1 to 255 bytes.
fn authenticate(
    stream: &std::net::TcpStream,
    user: &[u8],
    password: &[u8],
    deadline: Deadline,
) -> Result<(), ProxyErrorKind> {
    let user_len =
        u8::try_from(user.len()).map_err(|_| ProxyErrorKind::TooLong("the user name"))?;
    let password_len =
        u8::try_from(password.len()).map_err(|_| ProxyErrorKind::TooLong("the password"))?;
    let mut request = vec![1, user_len];
    request.extend_from_slice(user);
    request.push(password_len);
    request.extend_from_slice(password);
    deadline.write_all(stream, &request)?;
    let mut status = [0u8; 2];
    deadline.read_exact(stream, &mut status)?;
    match status[1] {
        0 => Ok(()),
        code => Err(ProxyErrorKind::CredentialsRefused(format!(
            "SOCKS5 authentication status {code}"
        ))),
    }
}

/// What to send as the target: for `socks5h://` its name (`[None]`) unless it is an address
/// already; for `socks5://` each address it resolves to here, to be tried in turn as a direct
/// connection tries them.
pub(super) fn addresses(
    proxy: &Proxy,
    target: &Target,
) -> Result<Vec<Option<IpAddr>>, ProxyErrorKind> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![Some(ip)]);
    }
    if proxy.scheme == Scheme::Socks5h {
        return Ok(vec![None]);
    }
    let failed = |e| ProxyErrorKind::TargetResolve(target.host.clone(), e);
    let addresses: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(failed)?
        .map(|addr| Some(addr.ip()))
        .collect();
    if addresses.is_empty() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses",
        )));
    }
    Ok(addresses)
}

/// What a SOCKS5 reply code means (RFC 1928, 6).
pub(super) fn reply_message(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}
