//! Who a client certificate names, as Kafka names it: the subject's distinguished name in
//! RFC 2253 form (Java's `X500Principal.getName()`: the last RDN first, `CN`, `O`, `OU`, `C`,
//! `ST`, `L`, `DC`, `UID` and `STREET` by name, other attributes as their OID and `#` with the
//! value's hex DER), so ACLs written for Kafka's `User:CN=...,O=...` principals match.

use yasna::models::{ObjectIdentifier, TaggedDerValue};
use yasna::{ASN1Result, BERReader};

/// The subject of a DER certificate, or `None` when it does not parse.
pub fn subject_name(certificate: &[u8]) -> Option<String> {
    yasna::parse_der(certificate, |reader| {
        reader.read_sequence(|certificate| {
            let subject = certificate.next().read_sequence(|tbs| {
                // version [0] EXPLICIT, serialNumber, signature, issuer, validity, subject.
                tbs.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
                for _ in 0..4 {
                    tbs.next().read_der()?;
                }
                let subject = read_name(tbs.next())?;
                // subjectPublicKeyInfo and the optional fields after it.
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok(subject)
            })?;
            certificate.next().read_der()?;
            certificate.next().read_der()?;
            Ok(subject)
        })
    })
    .ok()
}

fn read_name(reader: BERReader) -> ASN1Result<String> {
    let mut rdns = Vec::new();
    reader.read_sequence_of(|rdn| {
        let mut attributes = Vec::new();
        rdn.read_set_of(|attribute| {
            attribute.read_sequence(|pair| {
                let oid = pair.next().read_oid()?;
                let value = pair.next().read_tagged_der()?;
                attributes.push(attribute_text(&oid, &value));
                Ok(())
            })
        })?;
        rdns.push(attributes.join("+"));
        Ok(())
    })?;
    rdns.reverse();
    Ok(rdns.join(","))
}

/// Short names Java's RFC 2253 form uses.
fn short_name(oid: &ObjectIdentifier) -> Option<&'static str> {
    Some(match oid.components().as_slice() {
        [2, 5, 4, 3] => "CN",
        [2, 5, 4, 6] => "C",
        [2, 5, 4, 7] => "L",
        [2, 5, 4, 8] => "ST",
        [2, 5, 4, 9] => "STREET",
        [2, 5, 4, 10] => "O",
        [2, 5, 4, 11] => "OU",
        [0, 9, 2342, 19200300, 100, 1, 1] => "UID",
        [0, 9, 2342, 19200300, 100, 1, 25] => "DC",
        _ => return None,
    })
}

fn attribute_text(oid: &ObjectIdentifier, value: &TaggedDerValue) -> String {
    match (short_name(oid), value.as_str()) {
        (Some(name), Some(text)) => format!("{name}={}", escaped(text)),
        _ => {
            // `#` and the hex of the value's DER encoding (RFC 2253 section 2.4).
            let der = yasna::construct_der(|w| w.write_tagged_der(value));
            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
            format!("{oid}=#{hex}")
        }
    }
}

/// RFC 2253 escaping: `,+"\<>;` anywhere, `#` and a space at the start, a space at the end.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (at, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (at == 0 && (c == '#' || c == ' '))
            || (at == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_reads_as_kafka_writes_it() {
        use rcgen::DnType::*;
        let der = certificate(&[
            (CountryName, "DE"),
            (OrganizationName, "Oxbow, Inc."),
            (OrganizationalUnitName, "payments"),
            (CommonName, "svc-billing"),
        ]);
        assert_eq!(
            subject_name(&der).as_deref(),
            Some("CN=svc-billing,OU=payments,O=Oxbow\\, Inc.,C=DE")
        );
        assert_eq!(escaped(" #a+b "), "\\ #a\\+b\\ ");
    }

    #[test]
    fn anything_that_is_not_a_certificate_has_no_name() {
        assert_eq!(subject_name(b""), None);
        assert_eq!(subject_name(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        let der = certificate(&[(rcgen::DnType::CommonName, "x")]);
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(subject_name(&der[..cut]), None, "cut at {cut}");
        }
    }
}
