//! Small real SIP peers for the namespace tests, where sipp cannot do what a
//! test needs (RFC 5626 CRLF keepalives, STUN over the SIP flow).

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

/// An outbound REGISTER (RFC 5626 §4.2): reg-id, +sip.instance, ;ob, Supported: outbound.
pub fn outbound_register(user: &str, transport: &str, local: SocketAddr, instance: &str, call_id: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=t-{call_id}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Supported: path, outbound\r\n\
         Contact: <sip:{user}@{local};transport={t};ob>;reg-id=1;+sip.instance=\"<urn:uuid:{instance}>\"\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        t = transport.to_lowercase()
    )
    .into_bytes()
}

/// A registrar-ish TCP server: answers every REGISTER with 200 OK and Flow-Timer,
/// every CRLFCRLF ping with a CRLF pong (RFC 5626 §4.4.1) unless told not to,
/// and every INVITE with 430 Flow Failed. Runs until dropped.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl TcpServer {
    /// `listener` must already be bound in the server's namespace.
    pub fn start(listener: TcpListener, flow_timer: u32) -> Self {
        Self::start_with(listener, flow_timer, true)
    }

    /// The same; `pongs` false makes a server that never answers pings.
    pub fn start_with(listener: TcpListener, flow_timer: u32, pongs: bool) -> Self {
        Self::accepting(listener, move |stream, running| {
            stream.set_read_timeout(Some(Duration::from_millis(100))).ok();
            serve(stream, flow_timer, pongs, &running);
        })
    }

    /// The same over TLS (OpenSSL reading its socket itself: SSL_read_ex and
    /// SSL_write_ex, the socket calls inside them), with `cert` and `key`.
    pub fn start_tls(listener: TcpListener, flow_timer: u32, cert: &Path, key: &Path) -> Self {
        let acceptor = crate::tls::acceptor(cert, key);
        Self::accepting(listener, move |stream, running| {
            stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
            if let Ok(tls) = acceptor.accept(stream) {
                tls.get_ref().set_read_timeout(Some(Duration::from_millis(100))).ok();
                serve(tls, flow_timer, true, &running);
            }
        })
    }

    /// Accepts until dropped, each connection served by `serve` on a thread of its own.
    fn accepting(listener: TcpListener, serve: impl Fn(TcpStream, Arc<AtomicBool>) + Clone + Send + 'static) -> Self {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        thread::spawn(move || {
            while !running.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).ok();
                        let (running, serve) = (running.clone(), serve.clone());
                        thread::spawn(move || serve(stream, running));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { stop, addr }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers on `stream`, whose reads time out (100 ms) so that `stop` is seen.
fn serve(mut stream: impl Read + Write, flow_timer: u32, pongs: bool, stop: &AtomicBool) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => return,
        };
        let data = &buf[..n];
        let reply: Vec<u8> = if data == b"\r\n\r\n" && pongs {
            b"\r\n".to_vec()
        } else if data.starts_with(b"REGISTER ") {
            ok_for(data, flow_timer)
        } else if data.starts_with(b"INVITE ") {
            flow_failed_for(data)
        } else {
            continue;
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A response to `request`: its status line, then the request's header lines
/// named in `echo` as they were (To gets a tag), then `extra` and the blank line.
fn answer(request: &[u8], status: &str, echo: &[&str], extra: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in text.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if echo.contains(&name.as_str()) {
            out.push_str(line);
            if name == "to" {
                out.push_str(";tag=server");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// A 200 OK to a REGISTER (RFC 5626 §6: Require: outbound, Flow-Timer), echoing its contacts.
pub fn ok_for(request: &[u8], flow_timer: u32) -> Vec<u8> {
    let echo = ["via", "from", "to", "call-id", "cseq", "contact"];
    answer(request, "200 OK", &echo, &format!("Require: outbound\r\nFlow-Timer: {flow_timer}\r\n"))
}

/// A 430 Flow Failed to a request (RFC 5626 §5.3.1).
pub fn flow_failed_for(request: &[u8]) -> Vec<u8> {
    answer(request, "430 Flow Failed", &["via", "from", "to", "call-id", "cseq"], "")
}

/// A plain answer to a request out of a dialog: its Via, From, To (tagged), Call-ID and CSeq.
pub fn response_to(request: &[u8], status: &str) -> Vec<u8> {
    answer(request, status, &["via", "from", "to", "call-id", "cseq"], "")
}

/// An INVITE to `user`'s AOR.
pub fn invite_to(user: &str, call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{user}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:caller@example.com>;tag=c\r\nTo: <sip:{user}@example.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A UDP server on the SIP port: answers STUN Binding requests with a success
/// response and REGISTERs with 200 OK.
pub fn udp_server(socket: UdpSocket, flow_timer: u32, stop: Arc<AtomicBool>) {
    socket.set_read_timeout(Some(Duration::from_millis(100))).ok();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let data = &buf[..n];
            if n >= 20 && data[0] == 0x00 && data[1] == 0x01 {
                let mut answer = data[..20].to_vec();
                answer[0] = 0x01;
                answer[2] = 0;
                answer[3] = 0;
                let _ = socket.send_to(&answer, from);
            } else if data.starts_with(b"REGISTER ") {
                let _ = socket.send_to(&ok_for(data, flow_timer), from);
            }
        }
    });
}

/// A STUN Binding request (RFC 8489) with transaction id `id`.
pub fn stun_binding_request(id: u32) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&id.to_be_bytes());
    m
}

/// Closes with an RST rather than a FIN: SO_LINGER with a zero timeout.
pub fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        );
    }
    drop(stream);
}

/// Closes the sending side: a FIN.
pub fn finish(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// A TCP connection to the server's SIP port `port`, made from inside `namespace`.
pub fn connect(namespace: &str, port: u16) -> TcpStream {
    let stream = crate::netns::Lab::in_namespace(namespace, || {
        TcpStream::connect((crate::netns::SERVER_V4, port)).expect("connect")
    });
    stream.set_read_timeout(Some(Duration::from_millis(500))).expect("read timeout");
    stream
}

/// Sends `message` and returns what comes back within the read timeout.
pub fn exchange(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).expect("send");
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

/// Registers `user` over the connection (an outbound REGISTER) and returns the answer.
pub fn register(stream: &mut TcpStream, user: &str) -> Vec<u8> {
    let local = stream.local_addr().expect("local addr");
    exchange(stream, &outbound_register(user, "TCP", local, user, &format!("{user}-reg")))
}
