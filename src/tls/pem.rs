//! Reading certificates and private keys from PEM files, with errors that name the file and
//! say what is wrong with it.

use super::error::{Error, FileProblem};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::path::Path;

/// PEM files larger than this are refused: a certificate chain or a bundle of roots is far
/// smaller, and the file is read whole.
const MAX_FILE: u64 = 16 << 20;

/// Every certificate in the PEM file at `path`, in file order (for a server: its own
/// certificate first, then the chain). Other PEM sections (a key kept in the same file) are
/// skipped.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(problem(path, FileProblem::NoCertificate));
    }
    Ok(certs)
}

/// The CA certificates in the PEM file at `path`, as the roots to verify peers against: a
/// server's (a client given its own CA file) or clients' (mutual TLS). An error if none is
/// usable.
pub(crate) fn roots(path: &Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(problem(
            path,
            FileProblem::Unusable("no usable CA certificate in it".into()),
        ));
    }
    Ok(roots)
}

/// The first private key in the PEM file at `path`: PKCS#8, PKCS#1 RSA or SEC1 EC.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let text = read(path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => problem(path, FileProblem::NoKey),
        e => file_error(path, e),
    })
}

/// The file's bytes, refused unless it looks like PEM at all.
fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let unreadable = |e| problem(path, FileProblem::Unreadable(e));
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE + 1).read_to_end(&mut text))
        .map_err(unreadable)?;
    if text.len() as u64 > MAX_FILE {
        return Err(problem(
            path,
            FileProblem::NotPem(format!("larger than {} MiB", MAX_FILE >> 20)),
        ));
    }
    if !text.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(problem(
            path,
            FileProblem::NotPem("no \"-----BEGIN\" line".into()),
        ));
    }
    Ok(text)
}

fn file_error(path: &Path, e: pem::Error) -> Error {
    let why = match e {
        pem::Error::NoItemsFound => return problem(path, FileProblem::NoCertificate),
        pem::Error::Io(e) => return problem(path, FileProblem::Unreadable(e)),
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("missing {:?}", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("bad line {:?}", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(why) => format!("bad base64: {why}"),
        other => other.to_string(),
    };
    problem(path, FileProblem::NotPem(why))
}

pub(crate) fn problem(path: &Path, problem: FileProblem) -> Error {
    Error::File {
        path: path.to_owned(),
        problem,
    }
}
