//! SIP inside TLS from a server whose OpenSSL reads its own socket (SSL_read_ex
//! and SSL_write_ex, the socket calls inside them; Kamailio's memory BIO is the
//! Kamailio lab's case): the binding, the Flow-Timer and the pings come from
//! the plaintext, and a UA that falls silent fails keepalive_timeout. The UA's
//! own OpenSSL, a TLS client in the same process, is probed too and must not
//! be counted; with --no-tls-plaintext nothing inside TLS is read.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use openssl::ssl::{SslAcceptor, SslStream};
use sipflow_tests::{
    memory_tls::MemoryTls,
    netns::{Lab, SERVER_IF, SERVER_V4, await_tls_processes, http_get, metric, sipflow_bin},
    peers::{TcpServer, ok_for, outbound_register, response_to},
    scratch_dir::ScratchDir,
    tls::{acceptor, self_signed},
    ua::{OutboundUa, Transport, tls_connect},
};

const FLOW_TIMER: u32 = 3;

fn tls_registrar(lab: &Lab, dir: &ScratchDir) -> TcpServer {
    let (cert, key) = self_signed(dir.path());
    let listener = Lab::in_namespace(&lab.server, || TcpListener::bind((SERVER_V4, 5061)).expect("bind 5061"));
    TcpServer::start_tls(listener, FLOW_TIMER, &cert, &key)
}

fn tls_flow(server: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(server, "http://127.0.0.1:9560/flows")?;
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
    flows.into_iter().find(|f| f["transport"] == "tls")
}

#[test]
fn a_silent_ua_over_tls_fails_by_its_flow_timer() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsS");
    let dir = ScratchDir::new("sipflow-netns-tls");
    lab.start_agent(SERVER_IF, &["--grace", "1s"]);
    let registrar = tls_registrar(&lab, &dir);
    // This process holds the SIPS socket now: the agent probes it from its next scan.
    await_tls_processes(&lab.server, 1);
    let ua = OutboundUa::register(&lab.client, registrar.addr, "alice", Transport::Tls, Duration::from_secs(1));
    thread::sleep(Duration::from_millis(2500));

    let flow = tls_flow(&lab.server).expect("the TLS flow in /flows");
    assert_eq!(flow["aor"], "sip:alice@example.com", "{flow}");
    assert_eq!(flow["flow_timer"], FLOW_TIMER, "{flow}");
    assert_eq!(flow["flow_timer_from_registrar"], true, "{flow}");
    assert_eq!(flow["kept_alive"], true, "pings read inside TLS: {flow}");
    assert_eq!(flow["state"], "alive", "{flow}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    // Once each: the server's SSL_read_ex and SSL_write_ex, not the UA's own calls.
    assert_eq!(metric(&metrics, "sipflow_requests_total", &[("method", "REGISTER")]), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "sipflow_responses_total", &[("code", "200")]), Some(1.0), "{metrics}");
    let read = metric(&metrics, "sipflow_tls_calls_total", &[("result", "read")]).unwrap_or(0.0);
    assert!(read >= 4.0, "REGISTER, 200, pings and pongs read: {read}\n{metrics}");

    // Silent from now on: Flow-Timer (3 s) + grace (1 s) after its last ping.
    ua.freeze();
    let frozen = Instant::now();
    let failed = loop {
        let flow = tls_flow(&lab.server).expect("the TLS flow");
        if flow["state"] == "failed" {
            break flow;
        }
        assert!(frozen.elapsed() < Duration::from_secs(10), "not failed 10 s after falling silent: {flow}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["reason"], "keepalive_timeout", "{failed}");
    assert_eq!(failed["would_430"], true, "{failed}");
}

#[test]
fn without_tls_plaintext_nothing_inside_tls_is_read() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsN");
    let dir = ScratchDir::new("sipflow-netns-tls-off");
    lab.start_agent(SERVER_IF, &["--no-tls-plaintext"]);
    let registrar = tls_registrar(&lab, &dir);
    let _ua = OutboundUa::register(&lab.client, registrar.addr, "alice", Transport::Tls, Duration::from_secs(1));
    thread::sleep(Duration::from_millis(1500));
    let flow = tls_flow(&lab.server).expect("the TLS flow, tracked at the TCP level");
    assert!(flow["aor"].is_null(), "{flow}");
    assert_eq!(flow["state"], "no_keepalive", "{flow}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    assert_eq!(metric(&metrics, "sipflow_requests_total", &[("method", "REGISTER")]), Some(0.0), "{metrics}");
}

/// A --tls-lib that is no TLS library: one sentence, a non-zero exit, and
/// nothing left attached to the interface.
#[test]
fn a_named_library_that_cannot_be_probed_fails_plainly() {
    sipflow_tests::root_or_skip!();
    let lab = Lab::new("tlsB");
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.server, &sipflow_bin(), "run", "-i", SERVER_IF, "--listen", "127.0.0.1:9561"])
        .args(["--pin-dir", lab.pin_dir(), "--state-file", &lab.state_file(), "--tls-lib", "/etc/hostname"])
        .output()
        .expect("run sipflow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("sipflow: cannot read SIP inside TLS: /etc/hostname"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!Lab::link_show(&lab.server, SERVER_IF).contains("xdp"), "XDP left attached");
}

/// A lab whose agent fails an unanswered ping in 2 s, and the TLS listener on
/// the server's SIPS port that a memory-BIO server (`MemoryTls`) accepts on.
struct MemoryBioLab {
    lab: Lab,
    _dir: ScratchDir,
    acceptor: SslAcceptor,
    listener: TcpListener,
    proxy: SocketAddr,
}

fn memory_bio_lab(tag: &str) -> MemoryBioLab {
    let mut lab = Lab::new(tag);
    let dir = ScratchDir::new(&format!("sipflow-netns-tls-{tag}"));
    lab.start_agent(SERVER_IF, &["--pong-timeout", "2s"]);
    let (cert, key) = self_signed(dir.path());
    let acceptor = acceptor(&cert, &key);
    let listener = Lab::in_namespace(&lab.server, || TcpListener::bind((SERVER_V4, 5061)).expect("bind 5061"));
    let proxy = listener.local_addr().unwrap();
    await_tls_processes(&lab.server, 1);
    MemoryBioLab { lab, _dir: dir, acceptor, listener, proxy }
}

/// A UA's TLS connection to `proxy`, from the lab's client namespace.
fn connect_tls(lab: &Lab, proxy: SocketAddr) -> SslStream<TcpStream> {
    let stream =
        Lab::in_namespace(&lab.client, || TcpStream::connect_timeout(&proxy, Duration::from_secs(3))).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tls_connect(stream)
}

/// A server that reads every ready connection before it decrypts any (one
/// thread, TLS decrypted from memory): which connection a plaintext came from
/// cannot be told from the thread's socket reads. Taking the last one read
/// would put alice's ping on bob's flow, where it waits for a pong that never
/// comes: bob's flow would fail pong_timeout and warrant 430, a false alarm.
/// Those reads go into no flow and are counted as socket_unknown; the same
/// server reading one connection at a time is read as before.
#[test]
fn tls_reads_of_two_connections_before_either_is_decrypted_go_into_no_flow() {
    sipflow_tests::root_or_skip!();
    let MemoryBioLab { lab, _dir, acceptor, listener, proxy } = memory_bio_lab("tlsI");
    let (sent, both_sent) = mpsc::channel::<()>();
    let (done, stop) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        // Both handshakes, then one connection at a time: each REGISTER read
        // (socket, then SSL_read) and answered before the other's socket is read.
        let mut connections: Vec<MemoryTls> =
            (0..2).map(|_| MemoryTls::accept(&acceptor, listener.accept().expect("accept").0)).collect();
        for tls in &mut connections {
            let register = tls.next_message();
            tls.send(&ok_for(&register, 120));
        }
        both_sent.recv_timeout(Duration::from_secs(5)).expect("both clients sent");
        thread::sleep(Duration::from_millis(300));
        // Both sockets read, then both decrypted.
        let [alice, bob] = &mut connections[..] else { unreachable!() };
        alice.receive();
        bob.receive();
        let ping = alice.decrypt();
        let options = bob.decrypt();
        assert_eq!(ping, b"\r\n\r\n");
        alice.send(b"\r\n");
        bob.send(&response_to(&options, "200 OK"));
        let _ = stop.recv_timeout(Duration::from_secs(30));
    });

    let (mut alice, mut bob) = (connect_tls(&lab, proxy), connect_tls(&lab, proxy));
    for (tls, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let local = tls.get_ref().local_addr().unwrap();
        tls.write_all(&outbound_register(user, "TLS", local, user, &format!("{user}-reg"))).unwrap();
    }
    for tls in [&mut alice, &mut bob] {
        let mut buf = [0u8; 4096];
        let n = tls.read(&mut buf).expect("the 200");
        assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    thread::sleep(Duration::from_millis(300));
    // Read one connection at a time, after both handshakes: each REGISTER and 200 landed on its own flow.
    let flows = tls_flows(&lab.server);
    let aor_of =
        |port: u16| flows.iter().find(|f| f["remote"].as_str().is_some_and(|c| c.ends_with(&format!(":{port}"))));
    for (tls, user) in [(&alice, "alice"), (&bob, "bob")] {
        let port = tls.get_ref().local_addr().unwrap().port();
        let flow = aor_of(port).unwrap_or_else(|| panic!("{user}'s flow in /flows: {flows:?}"));
        assert_eq!(flow["aor"], format!("sip:{user}@example.com"), "{flow}");
    }

    alice.write_all(b"\r\n\r\n").unwrap();
    bob.write_all(
        b"OPTIONS sip:proxy SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK-o1\r\n\
        From: <sip:bob@example.com>;tag=o\r\nTo: <sip:proxy>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n",
    )
    .unwrap();
    sent.send(()).unwrap();
    let mut buf = [0u8; 4096];
    let n = alice.read(&mut buf).expect("the pong");
    assert_eq!(&buf[..n], b"\r\n");
    let n = bob.read(&mut buf).expect("the 200");
    assert!(buf[..n].starts_with(b"SIP/2.0 200"));

    // Past the pong timeout (2 s): no flow failed.
    thread::sleep(Duration::from_secs(3));
    let flows = tls_flows(&lab.server);
    assert!(flows.iter().all(|f| f["state"] != "failed"), "{flows:?}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    let unknown = metric(&metrics, "sipflow_tls_calls_total", &[("result", "socket_unknown")]).unwrap_or(0.0);
    assert_eq!(unknown, 2.0, "the ping and the OPTIONS, read into no flow\n{metrics}");
    let _ = done.send(());
    server.join().expect("the server thread");
}

/// A server may write a record in pieces (a socket whose buffer is nearly
/// full takes part of it): the pong's plaintext waits for the write as long
/// as its record, and is read then. Were it dropped at the first, shorter
/// piece, the ping would wait for a pong never seen and fail the flow
/// pong_timeout: a false alarm.
#[test]
fn a_record_written_in_pieces_is_read_once() {
    sipflow_tests::root_or_skip!();
    let MemoryBioLab { lab, _dir, acceptor, listener, proxy } = memory_bio_lab("tlsP");
    let (done, stop) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut tls = MemoryTls::accept(&acceptor, listener.accept().expect("accept").0);
        let register = tls.next_message();
        tls.send(&ok_for(&register, 120));
        assert_eq!(tls.next_message(), b"\r\n\r\n");
        tls.send_in_pieces(b"\r\n", 1);
        let _ = stop.recv_timeout(Duration::from_secs(30));
    });

    let mut alice = connect_tls(&lab, proxy);
    let local = alice.get_ref().local_addr().unwrap();
    alice.write_all(&outbound_register("alice", "TLS", local, "alice", "alice-reg")).unwrap();
    let mut buf = [0u8; 4096];
    let n = alice.read(&mut buf).expect("the 200");
    assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    alice.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    alice.read_exact(&mut pong).expect("the pong");
    assert_eq!(&pong, b"\r\n");

    // Past the pong timeout (2 s): the pong was seen, the flow is alive.
    thread::sleep(Duration::from_secs(3));
    let flows = tls_flows(&lab.server);
    let flow = flows.iter().find(|f| f["aor"] == "sip:alice@example.com").expect("alice's flow");
    assert_eq!(flow["state"], "alive", "{flow}");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    let read = metric(&metrics, "sipflow_tls_calls_total", &[("result", "read")]).unwrap_or(0.0);
    assert_eq!(read, 4.0, "the REGISTER, its 200, the ping and the pong\n{metrics}");
    let _ = done.send(());
    server.join().expect("the server thread");
}

fn tls_flows(server: &str) -> Vec<serde_json::Value> {
    let (_, body) = http_get(server, "http://127.0.0.1:9560/flows").expect("/flows");
    let flows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    flows.into_iter().filter(|f| f["transport"] == "tls").collect()
}

/// With --keep-attached the TLS probes stay pinned while the agent restarts,
/// and the new agent sets its own before it lets go of them: every ping a UA
/// sends inside TLS, before, while no agent runs and after, is read, and its
/// binding stays.
#[test]
fn a_restart_under_tls_load_loses_no_ping_and_no_binding() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsR");
    let dir = ScratchDir::new("sipflow-netns-tls-restart");
    let args = ["--keep-attached", "--grace", "1s"];
    lab.start_agent(SERVER_IF, &args);
    let registrar = tls_registrar(&lab, &dir);
    await_tls_processes(&lab.server, 1);

    let stream = Lab::in_namespace(&lab.client, || TcpStream::connect_timeout(&registrar.addr, Duration::from_secs(3)))
        .expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut tls = tls_connect(stream);
    let local = tls.get_ref().local_addr().unwrap();
    tls.write_all(&outbound_register("alice", "TLS", local, "alice", "alice-reg")).unwrap();
    let mut buf = [0u8; 4096];
    let n = tls.read(&mut buf).expect("the 200");
    assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    thread::sleep(Duration::from_millis(300));
    let calls_read = |server: &str| {
        let (_, metrics) = http_get(server, "http://127.0.0.1:9560/metrics").expect("scrape");
        metric(&metrics, "sipflow_tls_calls_total", &[("result", "read")]).unwrap_or(0.0)
    };
    // The REGISTER and its 200.
    let before = calls_read(&lab.server);
    assert_eq!(before, 2.0);
    let (stop_pinging, stopped) = mpsc::channel::<()>();
    let pinger = thread::spawn(move || {
        let mut sent = 0u32;
        while stopped.try_recv().is_err() {
            tls.write_all(b"\r\n\r\n").expect("ping");
            let mut pong = [0u8; 2];
            tls.read_exact(&mut pong).expect("pong");
            sent += 1;
            thread::sleep(Duration::from_millis(50));
        }
        // The connection stays open: its close would fail the flow tcp_fin.
        (sent, tls)
    });

    thread::sleep(Duration::from_secs(1));
    let agent = &mut lab.spawned()[0];
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().expect("wait for sipflow").success(), "sipflow exits 0 on SIGTERM");
    let tls_pins = std::path::Path::new(lab.pin_dir()).join(SERVER_IF);
    let pinned = walk(&tls_pins).into_iter().filter(|p| p.contains("SSL_read")).count();
    assert!(pinned >= 2, "the probes' links stay pinned: {:?}", walk(&tls_pins));
    // A write's plaintext is read at its socket write: its entry is probed, its return is not.
    let writes =
        |kind: &str| walk(&tls_pins).into_iter().filter(|p| p.contains("SSL_write") && p.ends_with(kind)).count();
    assert!(writes("-entry") >= 1, "SSL_write's entry is probed: {:?}", walk(&tls_pins));
    assert_eq!(writes("-return"), 0, "SSL_write's return is not: {:?}", walk(&tls_pins));
    // Pings while no agent runs.
    thread::sleep(Duration::from_secs(1));
    lab.start_agent(SERVER_IF, &args);
    await_tls_processes(&lab.server, 1);
    thread::sleep(Duration::from_secs(1));
    stop_pinging.send(()).unwrap();
    let (sent, _open) = pinger.join().expect("the pinger");
    thread::sleep(Duration::from_millis(300));

    // The server's SSL_read of each ping and SSL_write of each pong.
    let read = calls_read(&lab.server) - before;
    assert_eq!(read, f64::from(2 * sent), "every ping and pong read, across the restart ({sent} pings)");
    let flow = tls_flow(&lab.server).expect("the TLS flow");
    assert_eq!(flow["aor"], "sip:alice@example.com", "the binding stays: {flow}");
    assert_eq!(flow["state"], "alive", "{flow}");
    // Only the new agent's probes are left.
    let old_dirs = walk(&tls_pins).into_iter().filter(|p| p.contains("SSL_read_ex-entry")).count();
    assert_eq!(old_dirs, 1, "one set of probes: {:?}", walk(&tls_pins));

    let agent = &mut lab.spawned()[1];
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let pin_dir = lab.pin_dir().to_string();
    let detached = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.server))
        .args([&sipflow_bin(), "detach", "-i", SERVER_IF, "--pin-dir", &pin_dir])
        .output()
        .expect("sipflow detach");
    assert!(detached.status.success(), "{}", String::from_utf8_lossy(&detached.stderr));
}

/// Every path under `dir`, as text.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            found.push(entry.path().display().to_string());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(walk(&entry.path()));
            }
        }
    }
    found
}

/// A SIP server that forks its workers (as Kamailio does; here Debian's
/// Python, its ssl module on the host's libssl): the main process and both
/// workers are read, and the REGISTER and pings a worker decrypts are read
/// into the flow. An ordinary TLS program on the same host, on no SIP port
/// (a TLS echo server and its client), is not a SIP server: its SSL calls are
/// never probed, so it pays nothing.
#[test]
fn a_forking_sip_server_is_read_and_another_tls_program_is_not() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsF");
    let dir = ScratchDir::new("sipflow-netns-tls-fork");
    let (cert, key) = self_signed(dir.path());
    lab.start_agent(SERVER_IF, &["--grace", "1s"]);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = lab.server.clone();
    lab.spawn_in_network(&server, "/usr/bin/python3", &["-c", PREFORK_SERVER, &cert, &key, SERVER_V4]);
    // The other TLS program: a server on port 44330 and a client talking to it, in one process.
    lab.spawn_in_network(&server, "/usr/bin/python3", &["-c", OTHER_TLS_PROGRAM, &cert, &key]);
    await_tls_processes(&lab.server, 3);
    let _ua = alice_registers_and_pings(&lab, "the REGISTER and pings a worker read");
    let (_, metrics) = http_get(&lab.server, "http://127.0.0.1:9560/metrics").expect("scrape");
    assert_eq!(
        metric(&metrics, "sipflow_tls_processes", &[]),
        Some(3.0),
        "the server and its two workers, and not the other TLS program\n{metrics}"
    );
}

/// A SIP server that runs a libssl of its own (a container's, or one it
/// bundles; here a copy of the host's, found first through LD_LIBRARY_PATH):
/// its probes go on the file it maps, through /proc/PID/root, not on the
/// host's libssl.so.3, which it never calls.
#[test]
fn a_sip_server_with_a_libssl_of_its_own_is_read() {
    sipflow_tests::root_or_skip!();
    let mut lab = Lab::new("tlsO");
    let dir = ScratchDir::new("sipflow-netns-tls-own-lib");
    let (cert, key) = self_signed(dir.path());
    let host_lib = sipflow::kernel::tls_probes::default_library().expect("the host's libssl.so.3");
    let own = dir.path().join("lib");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(&host_lib, own.join("libssl.so.3")).expect("copy libssl.so.3");
    lab.start_agent(SERVER_IF, &["--grace", "1s"]);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let library_path = format!("LD_LIBRARY_PATH={}", own.display());
    let net = format!("--net=/var/run/netns/{}", lab.server);
    lab.spawn_command(
        &["env", &library_path, "nsenter", &net, "/usr/bin/python3"],
        &["-c", PREFORK_SERVER, &cert, &key, SERVER_V4],
    );
    await_tls_processes(&lab.server, 3);
    let _ua = alice_registers_and_pings(&lab, "the REGISTER and pings read in the server's own libssl");
}

/// alice registers over TLS with the lab's registrar on 5061 and pings every
/// 0.5 s: her flow is bound and kept alive from what the server decrypted.
fn alice_registers_and_pings(lab: &Lab, read: &str) -> OutboundUa {
    let proxy = format!("{SERVER_V4}:5061").parse().unwrap();
    let ua = OutboundUa::register(&lab.client, proxy, "alice", Transport::Tls, Duration::from_millis(500));
    thread::sleep(Duration::from_millis(2500));
    let flow = tls_flow(&lab.server).expect("the TLS flow in /flows");
    assert_eq!(flow["aor"], "sip:alice@example.com", "{read}: {flow}");
    assert_eq!(flow["kept_alive"], true, "{read}: {flow}");
    assert_eq!(flow["state"], "alive", "{flow}");
    ua
}

/// A TLS registrar on 5061 (argv: certificate, key, address) that forks two
/// workers, each accepting connections and answering REGISTERs with a 200
/// (Require: outbound, Flow-Timer: 3) and pings with pongs.
const PREFORK_SERVER: &str = r#"
import ctypes, os, signal, socket, ssl, sys
cert, key, address = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, 5061))
listener.listen(16)

def answer(head):
    lines = head.decode().split("\r\n")
    echo = [l for l in lines[1:] if l.split(":")[0].strip().lower() in ("via", "from", "to", "call-id", "cseq", "contact")]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(echo) + "\r\nRequire: outbound\r\nFlow-Timer: 3\r\nContent-Length: 0\r\n\r\n").encode()

def serve(connection):
    tls = context.wrap_socket(connection, server_side=True)
    data = b""
    while True:
        more = tls.recv(4096)
        if not more:
            return
        data += more
        while True:
            if data.startswith(b"\r\n\r\n"):
                tls.sendall(b"\r\n")
                data = data[4:]
                continue
            end = data.find(b"\r\n\r\n")
            if end < 0:
                break
            head, data = data[:end + 4], data[end + 4:]
            tls.sendall(answer(head))

for _ in range(2):
    if os.fork() == 0:
        # A worker goes with its server (the lab stops the server).
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        while True:
            connection, _ = listener.accept()
            try:
                serve(connection)
            except Exception:
                pass
os.wait()
"#;

/// 32-byte TLS round trips over loopback on port 44330, server and client in
/// one process (argv: certificate, key): a TLS program that is no SIP server.
const OTHER_TLS_PROGRAM: &str = r#"
import socket, ssl, sys, threading, time
cert, key = sys.argv[1], sys.argv[2]
server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_context.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 44330))
listener.listen(1)

def echo():
    connection, _ = listener.accept()
    tls = server_context.wrap_socket(connection, server_side=True)
    while True:
        data = tls.recv(32)
        if not data:
            return
        tls.sendall(data)

threading.Thread(target=echo, daemon=True).start()
client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_context.check_hostname = False
client_context.verify_mode = ssl.CERT_NONE
tls = client_context.wrap_socket(socket.create_connection(("127.0.0.1", 44330)))
while True:
    tls.sendall(b"x" * 32)
    tls.recv(32)
    time.sleep(0.01)
"#;
