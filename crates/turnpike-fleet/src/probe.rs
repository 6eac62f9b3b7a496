//! Health probes of one relay: a STUN Binding (UDP, or plain STUN over TCP
//! when the relay offers no UDP), and `GET /readyz` on its admin port when
//! configured. [`classify_readyz`] is the pure reading of the answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turnpike_codec::{
    Class, HEADER_LEN, Message, MessageBuilder, MessageType, Method, TransactionId,
};

use crate::health::ProbeOutcome;
use crate::{Relay, Transport};

/// Most of a /readyz body read: the relay's answer is one short line.
const MAX_BODY: usize = 4096;

/// Largest STUN answer read (a Binding success is about 50 bytes; with
/// SOFTWARE and FINGERPRINT, still far below).
const MAX_STUN: usize = 1500;

/// Probes `relay` (bounded by `timeout` in all): STUN, and /readyz when
/// `admin_port` is set, at once.
pub async fn probe(relay: &Relay, admin_port: Option<u16>, timeout: Duration) -> ProbeOutcome {
    let work = async {
        let ip = target_ip(relay).await?;
        let stun = stun(relay, ip);
        match admin_port {
            None => stun.await.map(|()| Readyz::default()),
            Some(port) => {
                let (stun, readyz) = tokio::join!(stun, readyz(SocketAddr::new(ip, port)));
                stun?;
                readyz
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => ProbeOutcome::Passed {
            draining: r.draining,
            allocations: r.allocations,
            capacity: r.capacity,
        },
        Ok(Err(reason)) => ProbeOutcome::Failed(reason),
        Err(_) => ProbeOutcome::Failed(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The relay's first address; a static relay given by name is resolved
/// through the system here, as a client would.
async fn target_ip(relay: &Relay) -> Result<IpAddr, String> {
    if let Some(ip) = relay.addresses.first() {
        return Ok(*ip);
    }
    let port = relay.endpoints.first().map_or(3478, |e| e.port);
    tokio::net::lookup_host((relay.name.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", relay.name))?
        .next()
        .map(|addr| addr.ip())
        .ok_or_else(|| format!("{} has no address", relay.name))
}

/// A Binding to the UDP endpoint, else over TCP to the TCP endpoint; a
/// relay offering only TLS is checked by a TCP connection to it (a STUN
/// probe there would need a TLS handshake).
async fn stun(relay: &Relay, ip: IpAddr) -> Result<(), String> {
    let pick = |t| relay.endpoints.iter().find(|e| e.transport == t);
    if let Some(e) = pick(Transport::Udp) {
        return stun_udp(SocketAddr::new(ip, e.port)).await;
    }
    if let Some(e) = pick(Transport::Tcp) {
        return stun_tcp(SocketAddr::new(ip, e.port)).await;
    }
    if let Some(e) = pick(Transport::Tls) {
        let addr = SocketAddr::new(ip, e.port);
        return TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("TLS port {addr}: {e}"));
    }
    Err("the relay has no endpoint".to_owned())
}

fn binding_request(buf: &mut [u8; HEADER_LEN]) -> Result<TransactionId, String> {
    // Unpredictable, so that an off-path answer cannot pass for the relay's.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    let id = TransactionId::Rfc5389(rand::Rng::random(&mut rng));
    let builder = MessageBuilder::new(buf, MessageType::new(Method::BINDING, Class::Request), id)
        .map_err(|e| format!("cannot build a Binding request: {e:?}"))?;
    builder.finish();
    Ok(id)
}

/// `Ok(true)`: the Binding success for `id`; `Ok(false)`: something else
/// (a stray datagram, another transaction), to be ignored.
fn check_answer(packet: &[u8], id: TransactionId) -> Result<bool, String> {
    let Ok(message) = Message::parse(packet) else {
        return Ok(false);
    };
    if message.transaction_id() != id {
        return Ok(false);
    }
    let binding = |class| MessageType::new(Method::BINDING, class);
    let t = message.message_type();
    if t == binding(Class::Success) {
        Ok(true)
    } else if t == binding(Class::Error) {
        Err("STUN Binding error response".to_owned())
    } else {
        Ok(false)
    }
}

async fn stun_udp(addr: SocketAddr) -> Result<(), String> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let fail = |e: std::io::Error| format!("STUN over UDP to {addr}: {e}");
    let socket = UdpSocket::bind(local).await.map_err(fail)?;
    socket.connect(addr).await.map_err(fail)?;
    let mut request = [0u8; HEADER_LEN];
    let id = binding_request(&mut request)?;
    socket.send(&request).await.map_err(fail)?;
    let mut buf = [0u8; MAX_STUN];
    // The caller's timeout bounds this loop.
    loop {
        let n = socket.recv(&mut buf).await.map_err(fail)?;
        if check_answer(&buf[..n], id)? {
            return Ok(());
        }
    }
}

/// Plain STUN over TCP (RFC 8489 section 6.2.2): the message length comes
/// from the header, no extra framing.
async fn stun_tcp(addr: SocketAddr) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("STUN over TCP to {addr}: {e}");
    let mut stream = TcpStream::connect(addr).await.map_err(fail)?;
    let mut request = [0u8; HEADER_LEN];
    let id = binding_request(&mut request)?;
    stream.write_all(&request).await.map_err(fail)?;
    loop {
        let mut buf = [0u8; MAX_STUN];
        stream
            .read_exact(&mut buf[..HEADER_LEN])
            .await
            .map_err(fail)?;
        let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let total = HEADER_LEN + body;
        if total > MAX_STUN {
            return Err(format!(
                "STUN over TCP to {addr}: a {total}-byte answer to a Binding"
            ));
        }
        stream
            .read_exact(&mut buf[HEADER_LEN..total])
            .await
            .map_err(fail)?;
        if check_answer(&buf[..total], id)? {
            return Ok(());
        }
    }
}

/// What /readyz said of a relay that answered it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readyz {
    pub draining: bool,
    pub allocations: Option<u64>,
    /// `x-turnpike-capacity`: the allocations the relay takes at most
    /// (absent: no limit).
    pub capacity: Option<u64>,
}

async fn readyz(addr: SocketAddr) -> Result<Readyz, String> {
    let fail = |e: &dyn std::fmt::Display| format!("GET http://{addr}/readyz: {e}");
    let stream = TcpStream::connect(addr).await.map_err(|e| fail(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    // The connection task ends with this exchange, also when the caller's
    // timeout drops this future midway: a relay that never answers must not
    // keep a task and a socket per probe round.
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let request = Request::get("/readyz")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    async {
        let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
        let status = response.status().as_u16();
        let text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let draining = text("x-turnpike-draining");
        let allocations = text("x-turnpike-allocations");
        let capacity = text("x-turnpike-capacity").and_then(|v| v.trim().parse::<u64>().ok());
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(&*e))?
            .to_bytes();
        classify_readyz(status, draining.as_deref(), allocations.as_deref(), &body)
            .map(|r| Readyz { capacity, ..r })
            .map_err(|e| fail(&e))
    }
    .await
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads a /readyz answer: 200 is ready, 503 saying draining is draining
/// (alive, not to be handed out), anything else a failure. The
/// `x-turnpike-draining` header, when present, decides over the body;
/// `x-turnpike-allocations` gives the allocation count.
pub fn classify_readyz(
    status: u16,
    draining_header: Option<&str>,
    allocations_header: Option<&str>,
    body: &[u8],
) -> Result<Readyz, String> {
    let allocations = allocations_header.and_then(|v| v.trim().parse::<u64>().ok());
    let header = draining_header.map(|v| v.trim().eq_ignore_ascii_case("true"));
    let body_text = String::from_utf8_lossy(body);
    let draining = header.unwrap_or_else(|| body_text.contains("draining"));
    match status {
        200 => Ok(Readyz {
            draining,
            allocations,
            capacity: None,
        }),
        503 if draining => Ok(Readyz {
            draining: true,
            allocations,
            capacity: None,
        }),
        _ => {
            let line: String = body_text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            Err(format!("{status} {}", line.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_answers() {
        let ready = |draining, allocations| {
            Ok(Readyz {
                draining,
                allocations,
                capacity: None,
            })
        };
        assert_eq!(
            classify_readyz(200, None, None, b"ready\n"),
            ready(false, None)
        );
        assert_eq!(
            classify_readyz(200, Some("false"), Some("17"), b"ready\n"),
            ready(false, Some(17))
        );
        assert_eq!(
            classify_readyz(503, None, None, b"not ready: draining\n"),
            ready(true, None)
        );
        assert_eq!(
            classify_readyz(503, Some("true"), Some(" 3 "), b""),
            ready(true, Some(3))
        );
        // The header decides over the body.
        assert_eq!(
            classify_readyz(503, Some("false"), None, b"not ready: draining\n"),
            Err("503 not ready: draining".into())
        );
        assert_eq!(
            classify_readyz(200, Some("TRUE"), None, b"ready"),
            ready(true, None)
        );
        assert_eq!(
            classify_readyz(503, None, None, b"not ready: 1 of 4 workers silent\n"),
            Err("503 not ready: 1 of 4 workers silent".into())
        );
        assert_eq!(
            classify_readyz(404, None, None, b"draining"),
            Err("404 draining".into())
        );
        // A nonsense count is no count.
        assert_eq!(
            classify_readyz(200, None, Some("many"), b""),
            ready(false, None)
        );
        assert!(classify_readyz(500, None, None, &[0xff, 0xfe, b'\n']).is_err());
    }

    #[test]
    fn only_the_matching_binding_success_counts() {
        let mut request = [0u8; HEADER_LEN];
        let id = binding_request(&mut request).unwrap();
        let answer = |class, id| {
            let mut buf = [0u8; HEADER_LEN];
            MessageBuilder::new(&mut buf, MessageType::new(Method::BINDING, class), id)
                .unwrap()
                .finish();
            buf
        };
        assert_eq!(check_answer(&answer(Class::Success, id), id), Ok(true));
        assert!(check_answer(&answer(Class::Error, id), id).is_err());
        let other = TransactionId::Rfc5389([7; 12]);
        assert_eq!(check_answer(&answer(Class::Success, other), id), Ok(false));
        assert_eq!(check_answer(b"garbage", id), Ok(false));
        // Our own request echoed back is not an answer.
        assert_eq!(check_answer(&request, id), Ok(false));
    }
}
