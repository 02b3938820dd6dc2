//! What can go wrong with TLS, as data: the command line turns each case into a message that
//! says what to do (which flag or setting to reach for), the library only says what happened.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything the TLS layer reports, from reading the files to the end of a handshake.
#[derive(Debug)]
pub enum Error {
    /// A certificate or key file could not be used.
    File {
        /// The file as it was named.
        path: PathBuf,
        /// What is wrong with it.
        problem: FileProblem,
    },
    /// The key file holds a key that does not belong to the certificate (the first in the
    /// certificate file).
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The system offered no root certificate that rustls could use.
    NoUsableRoots {
        /// What the loader said about the places it looked, if anything.
        detail: String,
    },
    /// The host cannot be a TLS server name (neither a DNS name nor an IP address).
    BadServerName(String),
    /// The peer's certificate was not issued by anyone we trust.
    UnknownIssuer,
    /// The certificate is not valid for the name we asked for.
    NameMismatch {
        /// The name we connected to.
        expected: String,
        /// The DNS names and IP addresses the certificate is valid for.
        presented: Vec<String>,
    },
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet (or this box's clock is behind).
    NotYetValid,
    /// The peer's certificate was refused for another reason (rustls's words).
    BadCertificate(String),
    /// The peer did not present a certificate although we require one.
    NoPeerCertificate,
    /// The peer answered with something that is not TLS (plain HTTP, for example).
    NotTls,
    /// The peer refused the handshake with this TLS alert (for example, it wanted a client
    /// certificate, or did not trust ours).
    Refused(String),
    /// The peer closed the connection before the handshake finished.
    Closed,
    /// The handshake did not finish before its deadline.
    TimedOut,
    /// Any other TLS protocol error.
    Tls(rustls::Error),
    /// The socket failed.
    Io(io::Error),
}

/// Why a certificate or key file could not be used.
#[derive(Debug)]
pub enum FileProblem {
    /// It could not be read.
    Unreadable(io::Error),
    /// It is not PEM, or a PEM section in it is broken.
    NotPem(String),
    /// It holds no certificate.
    NoCertificate,
    /// It holds no private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    NoKey,
    /// It holds a certificate or key rustls cannot use.
    Unusable(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            Error::KeyMismatch { cert, key } => write!(
                f,
                "{}: the key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            Error::NoUsableRoots { detail } if detail.is_empty() => {
                write!(f, "no usable root certificates on this box")
            }
            Error::NoUsableRoots { detail } => {
                write!(f, "no usable root certificates on this box ({detail})")
            }
            Error::BadServerName(host) => write!(f, "{host:?} is not a valid TLS server name"),
            Error::UnknownIssuer => {
                write!(f, "the certificate is not issued by a trusted authority")
            }
            Error::NameMismatch {
                expected,
                presented,
            } if presented.is_empty() => {
                write!(
                    f,
                    "the certificate is not valid for {expected} (it names no host)"
                )
            }
            Error::NameMismatch {
                expected,
                presented,
            } => write!(
                f,
                "the certificate is not valid for {expected}; it is valid for {}",
                presented.join(", ")
            ),
            Error::Expired => write!(f, "the certificate has expired"),
            Error::NotYetValid => write!(
                f,
                "the certificate is not valid yet (is this box's clock right?)"
            ),
            Error::BadCertificate(why) => write!(f, "certificate refused: {why}"),
            Error::NoPeerCertificate => write!(f, "the peer sent no certificate"),
            Error::NotTls => write!(f, "the peer does not speak TLS"),
            Error::Refused(alert) => write!(f, "the peer refused the TLS handshake ({alert})"),
            Error::Closed => write!(f, "the peer closed the connection during the TLS handshake"),
            Error::TimedOut => write!(f, "the TLS handshake timed out"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Unreadable(e) => write!(f, "cannot read it: {e}"),
            FileProblem::NotPem(why) => write!(f, "not a PEM file ({why})"),
            FileProblem::NoCertificate => write!(f, "no certificate in it"),
            FileProblem::NoKey => write!(
                f,
                "no private key in it (PKCS#8, PKCS#1 RSA or SEC1 EC, PEM)"
            ),
            FileProblem::Unusable(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Tls(e) => Some(e),
            Error::Io(e) => Some(e),
            Error::File {
                problem: FileProblem::Unreadable(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
            _ => Error::Io(e),
        }
    }
}

impl From<rustls::Error> for Error {
    /// Sorts a handshake failure into the cases a user can act on.
    fn from(e: rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::UnknownIssuer => Error::UnknownIssuer,
                C::NotValidForName => Error::NameMismatch {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => Error::NameMismatch {
                    expected: server_name_text(&expected),
                    presented: presented.iter().map(|name| presented_name(name)).collect(),
                },
                C::Expired | C::ExpiredContext { .. } => Error::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Error::NotYetValid,
                other => Error::BadCertificate(other.to_string()),
            },
            rustls::Error::NoCertificatesPresented => Error::NoPeerCertificate,
            rustls::Error::AlertReceived(alert) => Error::Refused(format!("{alert:?}")),
            rustls::Error::InvalidMessage(
                rustls::InvalidMessage::InvalidContentType
                | rustls::InvalidMessage::UnknownProtocolVersion,
            ) => Error::NotTls,
            other => Error::Tls(other),
        }
    }
}

fn server_name_text(name: &rustls::pki_types::ServerName<'_>) -> String {
    use rustls::pki_types::ServerName;
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// A name as webpki reports it (`DnsName("example.com")`, `IpAddress(0::1)`), as a user
/// writes it (`example.com`, `::1`); anything else as it came.
fn presented_name(name: &str) -> String {
    if let Some(dns) = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
    {
        return dns.to_owned();
    }
    if let Some(ip) = name
        .strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
    {
        return ip
            .parse::<std::net::IpAddr>()
            .map_or_else(|_| ip.to_owned(), |ip| ip.to_string());
    }
    name.to_owned()
}

/// An `io::Error` that carries a TLS error, for the `Read`/`Write` adapters (tungstenite sees
/// only `io::Error`); [`Error::from_io`] takes it back out.
pub(crate) fn to_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Error {
    /// The TLS error inside an `io::Error` made by the adapters, or the `io::Error` itself.
    pub fn from_io(e: io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            return Error::from(e);
        }
        match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => Error::from(*tls),
            // Checked just above; unreachable, but no reason to panic over it.
            _ => Error::Tls(rustls::Error::General("lost TLS error".into())),
        }
    }
}
