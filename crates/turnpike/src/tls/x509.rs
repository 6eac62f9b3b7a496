//! Just enough X.509 (RFC 5280) to describe a certificate to an operator:
//! its subject, subject alternative names, expiry (notAfter) and public key
//! (to match it with the private key).
//!
//! A small DER reader instead of a general X.509 crate: the served chain is
//! never interpreted by the server (clients verify it), so nothing more is
//! needed, and x509-parser's dependency tree roughly doubled the build cost
//! of the TLS support. The input is the operator's own file; the reader is
//! still bounds-checked everywhere and never panics (the tests feed it
//! every truncation and byte flip of real certificates).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::date;

/// What [`parse`] reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertInfo<'a> {
    /// The DER SubjectPublicKeyInfo, as rustls' `SigningKey::public_key`
    /// gives it for the private key.
    pub(crate) spki: &'a [u8],
    /// notAfter.
    pub(crate) not_after: SystemTime,
    /// The subject as `CN=…, O=…` in certificate order; empty for an empty
    /// subject.
    pub(crate) subject: String,
    /// DNS names (`DNS:…`) and IP addresses (`IP:…`) of the subject
    /// alternative name extension.
    pub(crate) alt_names: Vec<String>,
}

// Universal tags.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
// Context-specific tags.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
const SAN_DNS: u8 = 0x82;
const SAN_IP: u8 = 0x87;

/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over DER bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next TLV: (tag, contents). Definite lengths only, as DER has.
    fn next(&mut self) -> Result<(u8, &'a [u8]), String> {
        let [tag, first, rest @ ..] = self.0 else {
            return Err("truncated".to_owned());
        };
        let (len, rest) = match *first {
            short @ 0..=0x7f => (usize::from(short), rest),
            0x80 => return Err("indefinite length".to_owned()),
            long => {
                let count = usize::from(long & 0x7f);
                if count > 4 || rest.len() < count {
                    return Err("bad length".to_owned());
                }
                let len = rest[..count]
                    .iter()
                    .fold(0usize, |len, &b| (len << 8) | usize::from(b));
                (len, &rest[count..])
            }
        };
        if rest.len() < len {
            return Err("truncated".to_owned());
        }
        let (contents, after) = rest.split_at(len);
        self.0 = after;
        Ok((*tag, contents))
    }

    /// The next TLV, which must have `tag`; its contents.
    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.next()? {
            (found, contents) if found == tag => Ok(contents),
            (found, _) => Err(format!("expected {what}, found tag 0x{found:02x}")),
        }
    }

    /// Like [`Reader::expect`] but returns the whole TLV, header included.
    fn expect_whole(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        let before = self.0;
        let contents = self.expect(tag, what)?;
        let header = before.len() - self.0.len() - contents.len();
        Ok(&before[..header + contents.len()])
    }

    fn end(&self, what: &str) -> Result<(), String> {
        match self.is_empty() {
            true => Ok(()),
            false => Err(format!("{} unexpected bytes after {what}", self.0.len())),
        }
    }
}

/// Reads a DER certificate. The error says which part is malformed.
pub(crate) fn parse(der: &[u8]) -> Result<CertInfo<'_>, String> {
    let mut outer = Reader(der);
    let mut certificate = Reader(outer.expect(SEQUENCE, "a certificate (SEQUENCE)")?);
    outer.end("the certificate")?;
    let mut tbs = Reader(certificate.expect(SEQUENCE, "tbsCertificate")?);
    certificate.expect(SEQUENCE, "signatureAlgorithm")?;
    certificate.next()?; // signatureValue
    certificate.end("the signature")?;

    if tbs.peek_tag() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.expect(INTEGER, "serialNumber")?;
    tbs.expect(SEQUENCE, "signature")?;
    tbs.expect(SEQUENCE, "issuer")?;
    let mut validity = Reader(tbs.expect(SEQUENCE, "validity")?);
    validity.next()?; // notBefore
    let not_after = match validity.next()? {
        (UTC_TIME, text) => time(text, false),
        (GENERALIZED_TIME, text) => time(text, true),
        (tag, _) => Err(format!("notAfter has tag 0x{tag:02x}")),
    }
    .map_err(|e| format!("notAfter: {e}"))?;
    validity.end("validity")?;
    let subject = name(tbs.expect(SEQUENCE, "subject")?)?;
    let spki = tbs.expect_whole(SEQUENCE, "subjectPublicKeyInfo")?;

    let mut alt_names = Vec::new();
    while !tbs.is_empty() {
        let (tag, contents) = tbs.next()?;
        if tag == EXTENSIONS {
            let mut wrapper = Reader(contents);
            let mut extensions = Reader(wrapper.expect(SEQUENCE, "extensions")?);
            while !extensions.is_empty() {
                let mut extension = Reader(extensions.expect(SEQUENCE, "an extension")?);
                let id = extension.expect(OID, "an extension id")?;
                if extension.peek_tag() == Some(BOOLEAN) {
                    extension.next()?;
                }
                let value = extension.expect(OCTET_STRING, "an extension value")?;
                if id == OID_SUBJECT_ALT_NAME {
                    alt_names = subject_alt_names(value)?;
                }
            }
        }
    }
    Ok(CertInfo {
        spki,
        not_after,
        subject,
        alt_names,
    })
}

/// GeneralNames: DNS names and IP addresses, other kinds skipped.
fn subject_alt_names(value: &[u8]) -> Result<Vec<String>, String> {
    let mut outer = Reader(value);
    let mut names = Reader(outer.expect(SEQUENCE, "subjectAltName")?);
    let mut out = Vec::new();
    while !names.is_empty() {
        match names.next()? {
            (SAN_DNS, dns) => out.push(format!("DNS:{}", String::from_utf8_lossy(dns))),
            (SAN_IP, bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                out.extend(ip.map(|ip| format!("IP:{ip}")));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A Name (SEQUENCE OF RelativeDistinguishedName) as `CN=…, O=…`.
fn name(contents: &[u8]) -> Result<String, String> {
    let mut rdns = Reader(contents);
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let mut attributes = Reader(rdns.expect(SET, "a name component (SET)")?);
        while !attributes.is_empty() {
            let mut attribute = Reader(attributes.expect(SEQUENCE, "an attribute")?);
            let oid = attribute.expect(OID, "an attribute type")?;
            let (tag, value) = attribute.next()?;
            parts.push(format!("{}={}", attribute_name(oid), string(tag, value)));
        }
    }
    Ok(parts.join(", "))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".to_owned(),
        [0x55, 0x04, 0x05] => "serialNumber".to_owned(),
        [0x55, 0x04, 0x06] => "C".to_owned(),
        [0x55, 0x04, 0x07] => "L".to_owned(),
        [0x55, 0x04, 0x08] => "ST".to_owned(),
        [0x55, 0x04, 0x09] => "street".to_owned(),
        [0x55, 0x04, 0x0a] => "O".to_owned(),
        [0x55, 0x04, 0x0b] => "OU".to_owned(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".to_owned(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".to_owned(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".to_owned(),
        other => dotted_oid(other),
    }
}

/// `2.5.4.97` from the DER contents of an OID.
fn dotted_oid(bytes: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in bytes {
        value = value
            .saturating_mul(128)
            .saturating_add(u64::from(b & 0x7f));
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A directory string of any of the usual types; anything else as `#hex`.
fn string(tag: u8, value: &[u8]) -> String {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => String::from_utf8_lossy(value).into_owned(),
        // Teletex is in practice used for Latin-1.
        T61_STRING => value.iter().map(|&b| char::from(b)).collect(),
        BMP_STRING => char::decode_utf16(
            value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        UNIVERSAL_STRING => value
            .chunks_exact(4)
            .map(|q| {
                char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => value.iter().fold(String::from("#"), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
    }
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049, RFC 5280 section 4.1.2.5.1)
/// or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn time(text: &[u8], generalized: bool) -> Result<SystemTime, String> {
    let digits = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or("too short")?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(format!("{:?} is not a time", String::from_utf8_lossy(text)));
        }
        Ok(part.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
    };
    let (year, rest) = if generalized {
        (digits(0..4)?, 4)
    } else {
        let yy = digits(0..2)?;
        (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
    };
    let (month, day) = (digits(rest..rest + 2)?, digits(rest + 2..rest + 4)?);
    let (hour, minute, second) = (
        digits(rest + 4..rest + 6)?,
        digits(rest + 6..rest + 8)?,
        digits(rest + 8..rest + 10)?,
    );
    if text.get(rest + 10..) != Some(b"Z".as_slice()) {
        return Err(format!(
            "{:?} is not a UTC time",
            String::from_utf8_lossy(text)
        ));
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("{:?} is not a time", String::from_utf8_lossy(text)));
    }
    let secs = date::unix_from_utc((year, month, day), (hour, minute, second));
    Ok(date::from_unix_seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    /// `openssl req -x509 -newkey ec … -subj "/C=DE/ST=Berlin/O=Turnpike
    /// Tests/OU=Relays/CN=turn.example.com/emailAddress=ops@example.com"
    /// -addext "subjectAltName=DNS:turn.example.com,DNS:*.turn.example.com,
    /// IP:192.0.2.1,IP:2001:db8::1" -days 3650` (UTCTime validity).
    const FULL: &str = "-----BEGIN CERTIFICATE-----
MIICqDCCAk6gAwIBAgIUNkZnZVNUrMKWm3o2CAIDRSJ8DZkwCgYIKoZIzj0EAwIw
gYMxCzAJBgNVBAYTAkRFMQ8wDQYDVQQIDAZCZXJsaW4xFzAVBgNVBAoMDlR1cm5w
aWtlIFRlc3RzMQ8wDQYDVQQLDAZSZWxheXMxGTAXBgNVBAMMEHR1cm4uZXhhbXBs
ZS5jb20xHjAcBgkqhkiG9w0BCQEWD29wc0BleGFtcGxlLmNvbTAeFw0yNjExMjEy
MTI0MDlaFw0zNjExMTgyMTI0MDlaMIGDMQswCQYDVQQGEwJERTEPMA0GA1UECAwG
QmVybGluMRcwFQYDVQQKDA5UdXJucGlrZSBUZXN0czEPMA0GA1UECwwGUmVsYXlz
MRkwFwYDVQQDDBB0dXJuLmV4YW1wbGUuY29tMR4wHAYJKoZIhvcNAQkBFg9vcHNA
ZXhhbXBsZS5jb20wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARGRDtVw35MvzVg
kfJPUtcSdpi8a22yiDIPHgHtKzhnzRvuD5QoEeQgvVlxKdSotFonZ7WG01gyrr17
SjQwiH9xo4GdMIGaMB0GA1UdDgQWBBTAhdaAXuJVBaJPdpzHcKY5yHLG1zAfBgNV
HSMEGDAWgBTAhdaAXuJVBaJPdpzHcKY5yHLG1zAPBgNVHRMBAf8EBTADAQH/MEcG
A1UdEQRAMD6CEHR1cm4uZXhhbXBsZS5jb22CEioudHVybi5leGFtcGxlLmNvbYcE
wAACAYcQIAENuAAAAAAAAAAAAAAAATAKBggqhkjOPQQDAgNIADBFAiEA7/Tr+MgP
O0ogp3RB0XilV5PzuECHzuqZqNSIztp0b0sCIGFEpNwAN/a/P1ysn2Z3C8Qmg8CX
0C6kvod6gf4lvdIG
-----END CERTIFICATE-----
";

    /// An empty subject, names only in subjectAltName, and a notAfter in
    /// 2081 (GeneralizedTime): `-subj "/" -days 20000`.
    const SAN_ONLY: &str = "-----BEGIN CERTIFICATE-----
MIIBfDCCASGgAwIBAgIUdAzDLDgSb02atU/OzYTU9YGtt6EwCgYIKoZIzj0EAwIw
ADAgFw0yNjExMjEyMTI0MDZaGA8yMDgxMDgyNDIxMjQwNlowADBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABKeOyONz8KKZURfQf1F1BUGiGRqXL4j1N/RxfZ/fd7KM
JCteTpSdSWVrTMSCLYd5ct1p3ywhCEVgsnuzvsu2QASjdzB1MB0GA1UdDgQWBBQ5
GFMwvgI7yVKVuKUIKeZZ9Vm+pDAfBgNVHSMEGDAWgBQ5GFMwvgI7yVKVuKUIKeZZ
9Vm+pDAlBgNVHREEHjAcghRzYW4tb25seS5leGFtcGxlLmNvbYcExjNkBzAMBgNV
HRMBAf8EAjAAMAoGCCqGSM49BAMCA0kAMEYCIQD8wFxKe3r6rskeW7Dkg51JmGtw
eMyh4pWvEM5X6K6RUgIhAL2mj1vKBxVhZNEqNLwtXWp/VZZa6IAzqbYaAGi8SNgo
-----END CERTIFICATE-----
";

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn utc(text: &str) -> String {
        date::format_utc(time(text.as_bytes(), text.len() == 15).unwrap())
    }

    #[test]
    fn reads_subject_names_expiry_and_key() {
        let der = der_of(FULL);
        let info = parse(&der).unwrap();
        // What `openssl x509 -noout -subject -enddate` says, in
        // certificate order.
        assert_eq!(
            info.subject,
            "C=DE, ST=Berlin, O=Turnpike Tests, OU=Relays, CN=turn.example.com, emailAddress=ops@example.com"
        );
        assert_eq!(date::format_utc(info.not_after), "2036-11-18 21:24:09 UTC");
        assert_eq!(
            info.alt_names,
            [
                "DNS:turn.example.com",
                "DNS:*.turn.example.com",
                "IP:192.0.2.1",
                "IP:2001:db8::1"
            ]
        );
        // A P-256 SubjectPublicKeyInfo: SEQUENCE of 0x59 bytes.
        assert_eq!(&info.spki[..2], &[0x30, 0x59]);
        assert_eq!(info.spki.len(), 0x5b);

        let der = der_of(SAN_ONLY);
        let info = parse(&der).unwrap();
        assert_eq!(info.subject, "");
        assert_eq!(date::format_utc(info.not_after), "2081-08-24 21:24:06 UTC");
        assert_eq!(
            info.alt_names,
            ["DNS:san-only.example.com", "IP:198.51.100.7"]
        );
    }

    #[test]
    fn times() {
        assert_eq!(utc("700101000000Z"), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc("491231235959Z"), "2049-12-31 23:59:59 UTC");
        assert_eq!(utc("500101000000Z"), "1950-01-01 00:00:00 UTC");
        assert_eq!(utc("20000229120000Z"), "2000-02-29 12:00:00 UTC");
        assert_eq!(utc("99991231235959Z"), "9999-12-31 23:59:59 UTC");
        for bad in [
            "7001010000Z",
            "700101000000",
            "700101000000+0100",
            "701301000000Z",
            "70010100000aZ",
            "",
        ] {
            assert!(time(bad.as_bytes(), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn string_types_and_unknown_attributes() {
        assert_eq!(string(BMP_STRING, &[0x00, 0xfc, 0x00, 0x62]), "üb");
        assert_eq!(string(UNIVERSAL_STRING, &[0, 0, 0, 0x41]), "A");
        assert_eq!(string(T61_STRING, &[0xe9]), "é");
        assert_eq!(string(0x03, &[0xab, 0x01]), "#ab01");
        // organizationIdentifier, 2.5.4.97.
        assert_eq!(attribute_name(&[0x55, 0x04, 0x61]), "2.5.4.97");
        assert_eq!(dotted_oid(&[0x2a, 0x86, 0x48]), "1.2.840");
    }

    /// Every truncation and every single-byte change of real certificates
    /// gives a result or an error, never a panic.
    #[test]
    fn malformed_input_never_panics() {
        for pem in [FULL, SAN_ONLY] {
            let der = der_of(pem);
            for len in 0..der.len() {
                assert!(parse(&der[..len]).is_err(), "truncated to {len}");
            }
            for i in 0..der.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = der.clone();
                    bad[i] ^= flip;
                    let _ = parse(&bad);
                }
            }
            let mut long = der.clone();
            long.push(0);
            assert!(parse(&long).is_err());
        }
        assert!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[0x30, 0x80, 0x00, 0x00]).is_err());
    }
}
