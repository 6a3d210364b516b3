//! An RFC 5626 outbound user agent for the Kamailio lab, on a thread of its own:
//! it registers over TCP, TLS (OpenSSL, through the `openssl` crate) or UDP, keeps its flow alive (CRLFCRLF pings on TCP,
//! STUN Binding requests on UDP, RFC 5626 §4.4), and answers what the proxy
//! sends it over that flow: MESSAGE and OPTIONS with 200, INVITE with 486.
//!
//! sipp registers and calls well but cannot keep an outbound flow alive; these
//! are the "small test clients for pings and STUN" of the lab.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use tungstenite::{Message, WebSocket, client::IntoClientRequest};

use crate::{
    netns::Lab,
    peers::{self, outbound_register, stun_binding_request},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Tls,
    /// SIP over WebSocket (RFC 7118), in clear and over TLS.
    Ws,
    Wss,
}

impl Transport {
    /// As a Via header spells it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// Where TLS UAs append their session keys (NSS key log format, as
/// SSLKEYLOGFILE), so that tshark can read the SIP they carry.
static KEY_LOG: Mutex<Option<PathBuf>> = Mutex::new(None);

pub fn set_tls_key_log(path: &Path) {
    *KEY_LOG.lock().unwrap() = Some(path.to_path_buf());
}

/// TLS clients made from now on log no keys (the lab that wanted them is over).
pub fn clear_tls_key_log() {
    *KEY_LOG.lock().unwrap() = None;
}

/// A TLS client as a phone would be: the proxy's self-signed certificate is not checked.
pub fn tls_connect(stream: TcpStream) -> SslStream<TcpStream> {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("TLS context");
    connector.set_verify(SslVerifyMode::NONE);
    if let Some(path) = KEY_LOG.lock().unwrap().clone() {
        connector.set_keylog_callback(move |_, line| {
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
                let _ = writeln!(file, "{line}");
            }
        });
    }
    let config = connector.build().configure().expect("TLS config").verify_hostname(false);
    config.connect("proxy", stream).expect("TLS handshake with the proxy")
}

/// What the UA's thread is told to do next.
const RUN: u8 = 0;
/// Stop keepalives and answers, but keep the socket: a UA that froze.
const FREEZE: u8 = 1;
/// Close the connection as a dying process would: a FIN.
const CLOSE: u8 = 2;
/// Close with an RST.
const RESET: u8 = 3;

enum Socket {
    Tcp(TcpStream),
    Udp(UdpSocket, SocketAddr),
    Tls(Box<SslStream<TcpStream>>),
    Ws(Box<WebSocket<TcpStream>>),
    Wss(Box<WebSocket<SslStream<TcpStream>>>),
}

/// The WebSocket handshake (RFC 6455 §4) with the "sip" subprotocol (RFC 7118 §4.1).
fn ws_connect<S: Read + Write>(scheme: &str, proxy: SocketAddr, stream: S) -> WebSocket<S> {
    let mut request = format!("{scheme}://{proxy}/").into_client_request().expect("WebSocket URL");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (socket, _) = tungstenite::client::client(request, stream).expect("WebSocket handshake with the proxy");
    socket
}

/// What a WebSocket read gave: a message's bytes, or an io error for the caller's loop.
fn ws_read<S: Read + Write>(socket: &mut WebSocket<S>, buf: &mut [u8]) -> std::io::Result<usize> {
    match socket.read() {
        Ok(Message::Text(text)) => copy_into(text.as_bytes(), buf),
        Ok(Message::Binary(bytes)) => copy_into(&bytes, buf),
        // Control frames (the proxy's pong): nothing for the SIP layer.
        Ok(_) => Err(ErrorKind::WouldBlock.into()),
        Err(tungstenite::Error::Io(e)) => Err(e),
        Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => Ok(0),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

fn copy_into(bytes: &[u8], buf: &mut [u8]) -> std::io::Result<usize> {
    let n = bytes.len().min(buf.len());
    buf[..n].copy_from_slice(&bytes[..n]);
    Ok(n)
}

/// One message per frame (RFC 7118 §5); a keepalive as a WebSocket ping frame.
fn ws_send<S: Read + Write>(socket: &mut WebSocket<S>, bytes: &[u8]) -> std::io::Result<()> {
    let message = if bytes == b"\r\n\r\n" {
        Message::Ping(Vec::new().into())
    } else {
        Message::Text(String::from_utf8_lossy(bytes).into_owned().into())
    };
    socket.send(message).map_err(std::io::Error::other)
}

impl Socket {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Socket::Tcp(stream) => stream.write_all(bytes),
            Socket::Udp(socket, to) => socket.send_to(bytes, *to).map(|_| ()),
            Socket::Tls(stream) => stream.write_all(bytes),
            Socket::Ws(socket) => ws_send(socket, bytes),
            Socket::Wss(socket) => ws_send(socket, bytes),
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(stream) => stream.read(buf),
            Socket::Udp(socket, _) => socket.recv(buf),
            Socket::Tls(stream) => stream.read(buf),
            Socket::Ws(socket) => ws_read(socket, buf),
            Socket::Wss(socket) => ws_read(socket, buf),
        }
    }
}

pub struct OutboundUa {
    pub user: String,
    pub transport: Transport,
    /// The UA's own address, as the proxy sees it.
    pub local: SocketAddr,
    /// The 2xx to its REGISTER.
    pub registered: String,
    command: Arc<AtomicU8>,
    /// First lines of the requests the proxy delivered over the flow.
    pub delivered: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl OutboundUa {
    /// Registers `user` with the proxy at `proxy` from inside `namespace`, then
    /// keeps the flow alive every `keepalive` until told otherwise.
    pub fn register(namespace: &str, proxy: SocketAddr, user: &str, transport: Transport, keepalive: Duration) -> Self {
        Self::register_as(namespace, proxy, user, transport, keepalive, &format!("{user}-reg"))
    }

    /// The same UA (same +sip.instance and reg-id) started again: a new
    /// process, so a new Call-ID, over a new flow (RFC 5626 §4.2).
    pub fn restart(namespace: &str, proxy: SocketAddr, user: &str, transport: Transport, keepalive: Duration) -> Self {
        Self::register_as(namespace, proxy, user, transport, keepalive, &format!("{user}-reg-again"))
    }

    fn register_as(
        namespace: &str,
        proxy: SocketAddr,
        user: &str,
        transport: Transport,
        keepalive: Duration,
        call_id: &str,
    ) -> Self {
        let mut socket = Lab::in_namespace(namespace, || match transport {
            Transport::Tcp => Socket::Tcp(TcpStream::connect_timeout(&proxy, Duration::from_secs(3)).expect("connect")),
            Transport::Tls => {
                let stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(3)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(3))).expect("handshake timeout");
                Socket::Tls(Box::new(tls_connect(stream)))
            }
            Transport::Ws => {
                let stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(3)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(3))).expect("handshake timeout");
                Socket::Ws(Box::new(ws_connect("ws", proxy, stream)))
            }
            Transport::Wss => {
                let stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(3)).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(3))).expect("handshake timeout");
                Socket::Wss(Box::new(ws_connect("wss", proxy, tls_connect(stream))))
            }
            Transport::Udp => {
                let any: SocketAddr = if proxy.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
                let socket = UdpSocket::bind(any).expect("bind");
                socket.connect(proxy).expect("connect");
                Socket::Udp(socket, proxy)
            }
        });
        let local = match &socket {
            Socket::Tcp(s) => s.local_addr(),
            Socket::Udp(s, _) => s.local_addr(),
            Socket::Tls(s) => s.get_ref().local_addr(),
            Socket::Ws(s) => s.get_ref().local_addr(),
            Socket::Wss(s) => s.get_ref().get_ref().local_addr(),
        }
        .expect("local addr");
        match &socket {
            Socket::Tcp(s) => s.set_read_timeout(Some(Duration::from_millis(50))),
            Socket::Udp(s, _) => s.set_read_timeout(Some(Duration::from_millis(50))),
            Socket::Tls(s) => s.get_ref().set_read_timeout(Some(Duration::from_millis(50))),
            Socket::Ws(s) => s.get_ref().set_read_timeout(Some(Duration::from_millis(50))),
            Socket::Wss(s) => s.get_ref().get_ref().set_read_timeout(Some(Duration::from_millis(50))),
        }
        .expect("read timeout");
        socket.send(&outbound_register(user, transport.name(), local, user, call_id)).expect("send REGISTER");
        let registered = await_final(&mut socket).unwrap_or_else(|| panic!("{user}: no answer to REGISTER"));
        assert!(registered.starts_with("SIP/2.0 200"), "{user}: REGISTER answered {registered}");

        let command = Arc::new(AtomicU8::new(RUN));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (command, delivered) = (command.clone(), delivered.clone());
            thread::spawn(move || keep_alive(socket, transport, keepalive, &command, &delivered))
        };
        Self { user: user.into(), transport, local, registered, command, delivered, thread: Some(thread) }
    }

    /// Stops pinging and answering; the socket stays open.
    pub fn freeze(&self) {
        self.command.store(FREEZE, Ordering::Relaxed);
    }

    /// Closes the flow the way a killed process does: a FIN (TCP), silence (UDP).
    pub fn close(mut self) {
        self.finish(CLOSE);
    }

    /// Closes the connection with an RST.
    pub fn reset(mut self) {
        self.finish(RESET);
    }

    fn finish(&mut self, how: u8) {
        self.command.store(how, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for OutboundUa {
    fn drop(&mut self) {
        self.finish(CLOSE);
    }
}

/// Reads until a final response (2xx-6xx) arrives, or 3 s pass.
fn await_final(socket: &mut Socket) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 8192];
    while Instant::now() < deadline {
        match socket.receive(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("SIP/2.0 ") && !text.starts_with("SIP/2.0 1") {
                    return Some(text);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    None
}

fn keep_alive(
    mut socket: Socket,
    transport: Transport,
    every: Duration,
    command: &AtomicU8,
    delivered: &Mutex<Vec<String>>,
) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    let mut next_ping = Instant::now() + every;
    let mut stun_id = 0u32;
    loop {
        match command.load(Ordering::Relaxed) {
            CLOSE => return,
            RESET => {
                match socket {
                    Socket::Tcp(stream) => peers::reset(stream),
                    // Dropped without close_notify, as a crashing process would.
                    Socket::Tls(stream) => peers::reset(stream.get_ref().try_clone().expect("dup socket")),
                    Socket::Ws(socket) => peers::reset(socket.get_ref().try_clone().expect("dup socket")),
                    Socket::Wss(socket) => peers::reset(socket.get_ref().get_ref().try_clone().expect("dup socket")),
                    Socket::Udp(..) => {}
                }
                return;
            }
            FREEZE => {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            _ => {}
        }
        if Instant::now() >= next_ping {
            next_ping += every;
            let ping = match transport {
                Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => b"\r\n\r\n".to_vec(),
                Transport::Udp => {
                    stun_id += 1;
                    stun_binding_request(stun_id)
                }
            };
            let _ = socket.send(&ping);
        }
        let n = match socket.receive(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => continue,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(message) = next_message(&mut pending, transport) {
            if let Some(reply) = answer(&message) {
                let first = String::from_utf8_lossy(&message).lines().next().unwrap_or("").to_string();
                delivered.lock().unwrap().push(first);
                let _ = socket.send(&reply);
            }
        }
    }
}

/// Takes one whole SIP message off the front of `pending`; pongs, STUN and
/// anything that is not SIP are dropped.
fn next_message(pending: &mut Vec<u8>, transport: Transport) -> Option<Vec<u8>> {
    if !transport.is_stream() {
        // A datagram is one message (or a STUN answer, which starts with a zero byte).
        let message = std::mem::take(pending);
        return message.first().is_some_and(u8::is_ascii_alphabetic).then_some(message);
    }
    while pending.starts_with(b"\r\n") {
        pending.drain(..2);
    }
    let head_end = pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:")))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if pending.len() < head_end + body {
        return None;
    }
    Some(pending.drain(..head_end + body).collect())
}

/// The UA's answer to a request the proxy delivered; none to responses and ACKs.
fn answer(message: &[u8]) -> Option<Vec<u8>> {
    if message.starts_with(b"SIP/2.0") || message.starts_with(b"ACK ") {
        return None;
    }
    let status = if message.starts_with(b"INVITE ") { "486 Busy Here" } else { "200 OK" };
    Some(peers::response_to(message, status))
}
