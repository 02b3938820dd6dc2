//! A server certificate that can be replaced while the server runs (on SIGHUP): each new
//! handshake takes whatever pair the slot holds at that moment, handshakes already past that
//! point keep the pair they took, and a pair that fails to load never replaces a good one.

use super::error::Error;
use super::pem;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate chain and key a server presents, re-readable from the same two files.
#[derive(Debug)]
pub struct CertSlot {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    /// Loads the pair from `cert` (PEM: the server's certificate, then its chain) and `key`.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, Error> {
        let pair = load_pair(cert, key, &provider)?;
        Ok(CertSlot {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(pair),
        })
    }

    /// Reads both files again; new handshakes use the new pair from now on. On an error the
    /// old pair stays in place, and the error says which file and why.
    pub fn reload(&self) -> Result<(), Error> {
        let pair = load_pair(&self.cert, &self.key, &self.provider)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = pair;
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reads and checks a pair: the key must parse and belong to the first certificate.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let chain = pem::certificates(cert)?;
    let private = pem::private_key(key)?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| {
            pem::problem(
                key,
                super::error::FileProblem::Unusable(format!("unusable private key: {e}")),
            )
        })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) => Ok(Arc::new(pair)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(Error::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        // ring's keys always know their public half; this is a certificate rustls cannot read.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(pair))
        }
        Err(e) => Err(pem::problem(
            cert,
            super::error::FileProblem::Unusable(format!("unusable certificate: {e}")),
        )),
    }
}
