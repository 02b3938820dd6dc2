//! The subject of a certificate, for the log line that names a client under mutual TLS.
//!
//! rustls and webpki verify certificates but do not hand out their subject, and an X.509
//! crate would be a large dependency for one log field. So this walks the DER just far
//! enough: `Certificate → TBSCertificate → subject`, then the attributes of that name. Every
//! length is checked against the bytes that are there; a certificate this does not
//! understand yields `None`, never a panic.

use rustls::pki_types::CertificateDer;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The certificate's subject as `CN=…, O=…` (attributes in certificate order; types this
/// does not know are shown as their dotted OID), or `None` if the DER cannot be read.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (tag, certificate, _) = tlv(cert.as_ref())?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    if tbs.first() == Some(&VERSION) {
        tbs = tlv(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity: skipped; then the subject.
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (tag, mut name, _) = tlv(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (tag, mut rdn, rest) = tlv(name)?;
        if tag != SET {
            return None;
        }
        name = rest;
        while !rdn.is_empty() {
            let (tag, attribute, rest) = tlv(rdn)?;
            if tag != SEQUENCE {
                return None;
            }
            rdn = rest;
            let (tag, oid, value) = tlv(attribute)?;
            if tag != OID {
                return None;
            }
            let (_, value, _) = tlv(value)?;
            parts.push(format!("{}={}", attribute_name(oid), text(value)));
        }
    }
    Some(parts.join(", "))
}

/// One DER tag-length-value: the tag, the value and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags do not occur in the parts of a certificate read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    let (value, after) = rest.split_at_checked(len)?;
    Some((tag, value, after))
}

/// The short name of an attribute type (id-at-*, RFC 4519), else its dotted OID.
fn attribute_name(oid: &[u8]) -> String {
    let short = match oid {
        [0x55, 0x04, 3] => "CN",
        [0x55, 0x04, 5] => "serialNumber",
        [0x55, 0x04, 6] => "C",
        [0x55, 0x04, 7] => "L",
        [0x55, 0x04, 8] => "ST",
        [0x55, 0x04, 10] => "O",
        [0x55, 0x04, 11] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted(oid),
    };
    short.to_owned()
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut arc: u64 = 0;
    for &b in oid {
        arc = arc.saturating_mul(128).saturating_add(u64::from(b & 0x7f));
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - first * 40);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        }
    }
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// An attribute's value as text fit for a log line: UTF-8 with control characters escaped
/// (string types other than UTF-8 are ASCII in practice; BMPString shows as escapes).
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_garbage_der_yields_none_without_panicking() {
        let garbage: [&[u8]; 6] = [
            &[],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x30, 0x01],
            &[0x1f, 0x00],
            &[0x30, 0x80],
        ];
        for der in garbage {
            assert_eq!(subject(&CertificateDer::from(der)), None, "{der:?}");
        }
    }

    #[test]
    fn oids_it_does_not_know_are_shown_dotted() {
        assert_eq!(attribute_name(&[0x55, 0x04, 3]), "CN");
        assert_eq!(
            attribute_name(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
    }
}
