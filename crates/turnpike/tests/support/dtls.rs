//! A DTLS 1.2 client over a real UDP socket (OpenSSL, through the `openssl`
//! crate the server's DTLS is built on), for tests that need a DTLS session
//! without coturn's tools, which always allocate.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContextBuilder, SslMethod, SslOptions, SslStream,
    SslVerifyMode, SslVersion,
};

/// A connected UDP socket as OpenSSL's transport: each write is one
/// datagram, each read one datagram.
#[derive(Debug)]
pub struct Datagrams(UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a read on the session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// One record's plaintext.
    Data(Vec<u8>),
    /// The server closed the session (close_notify).
    Closed,
    /// Nothing within the read timeout.
    Nothing,
}

/// An established DTLS session with a server (certificates not verified:
/// the tests are about what happens after the handshake).
pub struct DtlsClient {
    stream: SslStream<Datagrams>,
}

impl DtlsClient {
    /// Handshakes with `server`; each read waits at most `timeout`.
    pub fn connect(server: SocketAddr, timeout: Duration) -> DtlsClient {
        let local = if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let socket = UdpSocket::bind(local).unwrap();
        socket.connect(server).unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        let mut b = SslContextBuilder::new(SslMethod::dtls_client()).unwrap();
        b.set_min_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
        b.set_options(SslOptions::NO_QUERY_MTU);
        b.set_verify(SslVerifyMode::NONE);
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_mtu(1200).unwrap();
        let mut attempt = ssl.connect(Datagrams(socket));
        // Timed-out reads come back as WANT_READ: OpenSSL then resends its
        // flight on the next try, as its retransmission timer would.
        for _ in 0..10 {
            match attempt {
                Ok(stream) => return DtlsClient { stream },
                Err(HandshakeError::WouldBlock(mid)) => attempt = mid.handshake(),
                Err(e) => panic!("DTLS handshake with {server} failed: {e}"),
            }
        }
        panic!("no DTLS handshake with {server} after 10 tries");
    }

    /// Sends one record.
    pub fn send(&mut self, data: &[u8]) {
        self.stream.ssl_write(data).expect("DTLS write");
    }

    /// The next record, or how the wait ended.
    pub fn receive(&mut self) -> Received {
        let mut buf = vec![0u8; 16_384];
        match self.stream.ssl_read(&mut buf) {
            Ok(0) => Received::Closed,
            Ok(n) => {
                buf.truncate(n);
                Received::Data(buf)
            }
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Received::Closed,
            Err(e) if e.code() == ErrorCode::WANT_READ => Received::Nothing,
            Err(e) => match e.io_error().map(io::Error::kind) {
                Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Received::Nothing,
                _ => panic!("DTLS read failed: {e}"),
            },
        }
    }
}
