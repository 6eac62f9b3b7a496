//! Test support: certificates made with the openssl crate, and an OpenSSL
//! DTLS 1.2 client over an in-memory datagram pipe (the third-party peer of
//! the in-process tests).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    ErrorCode, Ssl, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509Name};
use turnpike_dtls::{DtlsConfig, DtlsServer, Output};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ecdsa,
}

pub fn key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        KeyKind::Ecdsa => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
    }
}

/// A certificate for `cn` with `key`, signed by `issuer` (or self-signed).
pub fn cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_u32())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    } else {
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .build(&b.x509v3_context(None, None));
        b.append_extension(san.unwrap()).unwrap();
    }
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())
        .unwrap();
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_be_bytes(b) >> 1
}

/// A self-signed leaf: (chain PEM, key PEM (PKCS#8), certificate).
pub struct Identity {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub leaf: X509,
    pub key: PKey<Private>,
}

pub fn identity(kind: KeyKind, cn: &str) -> Identity {
    let key = key(kind);
    let leaf = cert(cn, &key, None, false);
    Identity {
        chain_pem: leaf.to_pem().unwrap(),
        key_pem: key.private_key_to_pem_pkcs8().unwrap(),
        leaf,
        key,
    }
}

pub fn config(id: &Identity) -> DtlsConfig {
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).unwrap();
    DtlsConfig::new(id.chain_pem.clone(), id.key_pem.clone(), secret)
}

/// Datagram pipe of the client side: queue in, list out.
#[derive(Debug, Default)]
pub struct ClientPipe {
    pub inbox: VecDeque<Vec<u8>>,
    pub outbox: Vec<Vec<u8>>,
}

impl Read for ClientPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for ClientPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVersion {
    Dtls12,
    Dtls10Only,
}

/// An OpenSSL DTLS client at `addr` that trusts `trust` (and verifies).
pub struct Client {
    pub addr: SocketAddr,
    pub stream: SslStream<ClientPipe>,
    pub done: bool,
}

impl Client {
    pub fn new(addr: SocketAddr, trust: &X509) -> Client {
        Client::with_version(addr, trust, ClientVersion::Dtls12)
    }

    pub fn with_version(addr: SocketAddr, trust: &X509, version: ClientVersion) -> Client {
        let mut b = SslContextBuilder::new(SslMethod::dtls_client()).unwrap();
        match version {
            ClientVersion::Dtls12 => {
                b.set_min_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
            }
            ClientVersion::Dtls10Only => {
                b.set_min_proto_version(Some(SslVersion::DTLS1)).unwrap();
                b.set_max_proto_version(Some(SslVersion::DTLS1)).unwrap();
                // DTLS 1.0 needs SHA-1 and old suites: security level 0.
                b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
            }
        }
        b.set_options(SslOptions::NO_QUERY_MTU);
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(trust.clone()).unwrap();
        b.set_verify_cert_store(store.build()).unwrap();
        b.set_verify(SslVerifyMode::PEER);
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_connect_state();
        ssl.set_mtu(1200).unwrap();
        let stream = SslStream::new(ssl, ClientPipe::default()).unwrap();
        Client {
            addr,
            stream,
            done: false,
        }
    }

    /// Advances the client handshake; Err on a fatal handshake error.
    pub fn step(&mut self) -> Result<(), openssl::ssl::Error> {
        if self.done {
            return Ok(());
        }
        match self.stream.do_handshake() {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.stream.get_mut().outbox)
    }

    pub fn deliver(&mut self, datagram: Vec<u8>) {
        self.stream.get_mut().inbox.push_back(datagram);
    }

    pub fn write(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.stream.ssl_write(data).unwrap();
        self.take()
    }

    /// Application data records readable now.
    pub fn read_all(&mut self) -> Result<Vec<Vec<u8>>, openssl::ssl::Error> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(e) if e.code() == ErrorCode::WANT_READ => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Every output the server has queued.
pub fn drain(server: &mut DtlsServer) -> Vec<Output> {
    std::iter::from_fn(|| server.poll_output()).collect()
}

/// Events and data (not datagrams) seen while pumping.
#[derive(Debug, Default)]
pub struct Seen {
    pub events: Vec<Output>,
    pub to_client: usize,
}

/// Moves datagrams between `client` and `server` (at `now`) until both are
/// quiet; server datagrams for other addresses and non-transmit outputs are
/// returned in `Seen::events`.
pub fn pump(server: &mut DtlsServer, client: &mut Client, now: Instant) -> Seen {
    let mut seen = Seen::default();
    for _ in 0..50 {
        let _ = client.step();
        let from_client = client.take();
        for d in &from_client {
            server.handle_datagram(now, client.addr, d);
        }
        let mut moved = !from_client.is_empty();
        for out in drain(server) {
            match out {
                Output::Transmit { to, data } if to == client.addr => {
                    seen.to_client += 1;
                    client.deliver(data);
                    moved = true;
                }
                other => seen.events.push(other),
            }
        }
        if !moved {
            break;
        }
    }
    seen
}

/// Full handshake of `client` with `server`; panics unless both ends finish.
pub fn connect(server: &mut DtlsServer, client: &mut Client, now: Instant) -> Seen {
    let seen = pump(server, client, now);
    assert!(
        client.done,
        "client handshake did not finish: {:?}",
        seen.events
    );
    assert!(
        seen.events
            .contains(&Output::Established { peer: client.addr }),
        "no Established: {:?}",
        seen.events
    );
    seen
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub const SECOND: Duration = Duration::from_secs(1);
