//! Test support: tiny STUN and /readyz responders, and waiting on the
//! fleet's snapshots without sleeping (dnsmasq is in the crate's
//! `testing` module, for the endpoint's tests too). Everything started here
//! is stopped by its Drop.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use turnpike_codec::{Class, HEADER_LEN, Message, MessageBuilder, MessageType, Method};
use turnpike_fleet::{Fleet, Snapshot};

/// Waits (on [`Fleet::changed`], never sleeping) until `pred` holds,
/// calling `each` on every snapshot seen; panics after 20 s.
pub async fn wait_for(
    fleet: &Fleet,
    what: &str,
    mut each: impl FnMut(&Snapshot),
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = fleet.snapshot();
        each(&snapshot);
        if pred(&snapshot) {
            return snapshot;
        }
        if tokio::time::timeout_at(deadline, fleet.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}; last snapshot: {snapshot:#?}");
        }
    }
}

/// Answers STUN Binding requests over UDP on `addr` until stopped.
pub struct StunResponder {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl StunResponder {
    pub async fn start(addr: SocketAddr) -> StunResponder {
        let socket = UdpSocket::bind(addr).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(answer) = binding_success(&buf[..n]) {
                    let _ = socket.send_to(&answer, peer).await;
                }
            }
        });
        StunResponder {
            addr,
            task: Some(task),
        }
    }

    /// Stops answering and frees the port (once this returns).
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for StunResponder {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The Binding success answering `request`, if it is a Binding request.
pub fn binding_success(request: &[u8]) -> Option<Vec<u8>> {
    let message = Message::parse(request).ok()?;
    if message.message_type() != MessageType::new(Method::BINDING, Class::Request) {
        return None;
    }
    let mut out = [0u8; HEADER_LEN];
    let builder = MessageBuilder::new(
        &mut out,
        MessageType::new(Method::BINDING, Class::Success),
        message.transaction_id(),
    )
    .ok()?;
    let n = builder.finish();
    Some(out[..n].to_vec())
}

/// Answers Binding requests with plain STUN over TCP until dropped.
pub struct StunTcpResponder {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StunTcpResponder {
    pub async fn start(ip: IpAddr) -> StunTcpResponder {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1500];
                    if stream.read_exact(&mut buf[..HEADER_LEN]).await.is_err() {
                        return;
                    }
                    let len = HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    if len > buf.len()
                        || stream.read_exact(&mut buf[HEADER_LEN..len]).await.is_err()
                    {
                        return;
                    }
                    if let Some(answer) = binding_success(&buf[..len]) {
                        let _ = stream.write_all(&answer).await;
                    }
                });
            }
        });
        StunTcpResponder { addr, task }
    }
}

impl Drop for StunTcpResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the /readyz responder answers: status, extra header lines, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP/1.1 server answering every request with the current [`Answer`].
pub struct ReadyzResponder {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    task: JoinHandle<()>,
}

impl ReadyzResponder {
    pub async fn start(addr: SocketAddr, answer: Answer) -> std::io::Result<ReadyzResponder> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let answer = Arc::new(Mutex::new(answer));
        let shared = answer.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let answer = shared.lock().unwrap().clone();
                tokio::spawn(async move {
                    // Read the request head; the probe sends no body.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(
                        head.starts_with(b"GET /readyz HTTP/1.1\r\n"),
                        "{:?}",
                        String::from_utf8_lossy(&head)
                    );
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (name, value) in &answer.headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&answer.body);
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Ok(ReadyzResponder { addr, answer, task })
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for ReadyzResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
