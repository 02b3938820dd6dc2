//! The client's TLS configuration: whom to trust (the system's roots, the certificates in a
//! file, or nobody at all) and, for servers that ask, which certificate to present.

use super::error::{Error, FileProblem};
use super::{ALPN_HTTP_1_1, insecure, pem, provider};
use rustls::{ClientConfig, RootCertStore};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Which server certificates the client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Those issued by the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
    System,
    /// Those issued by the PEM certificates in this file, instead of the system's roots.
    File(PathBuf),
    /// Any certificate, for any name: no verification at all (the caller warns the user).
    Insecure,
}

/// A client certificate and its key, for servers that require one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// PEM: the client's certificate, then the rest of its chain.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Builds a client configuration; the server name (SNI, and the name checked) comes per
/// connection, in [`Session::client`](super::Session::client).
pub fn client_config(
    trust: &Trust,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?;
    let builder = match trust {
        Trust::System => builder.with_root_certificates(system_roots()?),
        Trust::File(path) => {
            let roots = pem::roots(path)?;
            builder.with_root_certificates(roots)
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::AcceptAnything::new(provider))),
    };
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = pem::certificates(&id.cert)?;
            let key = pem::private_key(&id.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                        cert: id.cert.clone(),
                        key: id.key.clone(),
                    },
                    e => pem::problem(&id.key, FileProblem::Unusable(e.to_string())),
                })?
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The system's roots, as rustls-native-certs finds them, read once per process (as Go's
/// crypto/x509 does): reading them parses every file in the system's certificate directory,
/// some 10 ms here and more on a small box, which each connect (and each reconnect) would
/// otherwise pay, and twice for `wss://` through an `https://` proxy.
fn system_roots() -> Result<Arc<RootCertStore>, Error> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(load_system_roots)
        .clone()
        .map_err(|detail| Error::NoUsableRoots { detail })
}

fn load_system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(Arc::new(roots))
}
