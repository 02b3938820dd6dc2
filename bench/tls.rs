//! The load generator's TLS client: rustls with the ring provider, TLS 1.3 and
//! TLS13_AES_128_GCM_SHA256 only, so that every server under test runs the same cipher (a
//! rustls server follows the client's order, Go's crypto/tls its own); a full handshake every
//! time (no resumption); ALPN `http/1.1`. Also the test certificates for `compare --tls`.

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A client connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    /// TLS: sends close_notify (errors ignored: the server may have closed already).
    pub fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.write_tls(&mut s.sock);
        }
    }

    /// `TLS1_3 TLS13_AES_128_GCM_SHA256 X25519`: what the handshake agreed on.
    pub fn describe(&self) -> String {
        match self {
            Stream::Plain(_) => "plain TCP".into(),
            Stream::Tls(s) => format!(
                "{:?} {:?} {:?}",
                s.conn.protocol_version(),
                s.conn.negotiated_cipher_suite().map(|c| c.suite()),
                s.conn.negotiated_key_exchange_group().map(|g| g.name())
            ),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The client side of wss:// for one server address.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Client {
    /// For `addr` (HOST:PORT; the host is the SNI and the name checked against the
    /// certificate), trusting the PEM CA certificates in `ca`.
    pub fn new(addr: &str, ca: &Path) -> Res<Client> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Ok(Client {
            config: Arc::new(config),
            name: ServerName::try_from(host.to_owned())?,
        })
    }

    pub fn wrap(&self, sock: TcpStream) -> io::Result<Stream> {
        let conn = ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, sock))))
    }
}

/// The certificates of `compare --tls`, made with openssl in `dir`: a CA (`ca.pem`, what the
/// client trusts) and an ECDSA P-256 server certificate it issued for `localhost`,
/// `127.0.0.1` and `::1` (`server.pem`, key `server.key` in PKCS#8). Every server under test
/// gets the same pair.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> Res<Certs> {
    std::fs::create_dir_all(dir)?;
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ec_key = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    openssl(&[&ec_key[..], &[&p("ca.key")]].concat())?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("ca.key"),
        "-subj",
        "/CN=loadgen test CA",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &p("ca.pem"),
    ])?;
    openssl(&[&ec_key[..], &[&p("server.key")]].concat())?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n",
    )?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &p("server.key"),
        "-subj",
        "/CN=localhost",
        "-out",
        &p("server.csr"),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-CAserial",
        &p("ca.srl"),
        "-days",
        "30",
        "-extfile",
        &p("server.ext"),
        "-out",
        &p("server.pem"),
    ])?;
    Ok(Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}

fn openssl(args: &[&str]) -> Res<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run openssl (install the openssl package): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}
