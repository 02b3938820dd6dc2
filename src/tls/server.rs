//! The server's TLS configuration, from files: its certificate chain and key (swappable, see
//! [`CertSlot`]) and, for mutual TLS, the authorities whose client certificates it accepts.

use super::error::{Error, FileProblem};
use super::reload::CertSlot;
use super::{ALPN_HTTP_1_1, pem, provider};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a TLS server's certificate, key and (optionally) client authorities live.
#[derive(Clone, Debug)]
pub struct ServerFiles {
    /// PEM: the server's certificate, then the rest of its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// PEM: authorities for client certificates. When set, every client must present a
    /// certificate one of them issued.
    pub client_ca: Option<PathBuf>,
}

/// A server's TLS configuration plus the handle that reloads its certificate.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    slot: Arc<CertSlot>,
}

impl ServerTls {
    /// Reads and checks every file: a problem is reported with the file it is in.
    pub fn new(files: &ServerFiles) -> Result<Self, Error> {
        let provider = provider();
        let slot = Arc::new(CertSlot::load(&files.cert, &files.key, provider.clone())?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::Tls)?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = pem::roots(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| pem::problem(path, FileProblem::Unusable(e.to_string())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(slot.clone());
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        // No TLS 1.3 session tickets: issuing them costs every full handshake about 3% of its
        // instructions and 7% of its CPU (measured with bench/tls.sh), and an echo endpoint's
        // clients gain little from resuming (rustls would keep only 256 tickets anyway).
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            slot,
        })
    }

    /// The configuration each new server [`Session`](super::Session) starts from.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Re-reads the certificate and key files (for SIGHUP): new handshakes get the new pair,
    /// open connections keep theirs. On an error the old pair stays.
    pub fn reload(&self) -> Result<(), Error> {
        self.slot.reload()
    }
}
