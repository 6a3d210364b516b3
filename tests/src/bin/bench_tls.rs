//! `cargo xtask bench`, TLS: what reading SIP inside TLS costs the SIP server.
//! A TLS server (OpenSSL, on the SIPS port) and a client exchange a MESSAGE
//! and its 200 at a fixed rate between the lab's namespaces: without sipflow,
//! with sipflow reading no plaintext (`--no-tls-plaintext`: XDP and TC only),
//! and with sipflow reading it (its uprobes on libssl, its tracepoints on
//! every socket call), in turn, twice; the server thread's CPU time is
//! measured each time. What the plaintext costs is the difference between
//! the last two. Writes target/bench/tls.{md,json}.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use sipflow_tests::{
    netns::{Lab, SERVER_IF, SERVER_V4, http_get},
    scratch_dir::ScratchDir,
};

const SIPS_PORT: u16 = 5061;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = ScratchDir::new("sipflow-bench-tls");
    let (cert, key) = sipflow_tests::tls::self_signed(dir.path());
    let exchanges = seconds * rate;
    let mut runs: Vec<(Mode, Run)> = Vec::new();
    for _ in 0..2 {
        for mode in Mode::ALL {
            let run = exchange(mode, exchanges, rate, &cert, &key);
            eprintln!(
                "{}: {exchanges} exchanges in {:.2} s, server CPU {:.3} s, {:.1} us per exchange, read by sipflow {}",
                mode.label(),
                run.wall_s,
                run.server_cpu_s,
                run.server_cpu_s / exchanges as f64 * 1e6,
                run.read_by_sipflow
            );
            runs.push((mode, run));
        }
    }
    let mean = |mode: Mode| {
        let picked: Vec<&Run> = runs.iter().filter(|(m, _)| *m == mode).map(|(_, r)| r).collect();
        picked.iter().map(|r| r.server_cpu_s).sum::<f64>() / picked.len() as f64
    };
    let cpu: Vec<f64> = Mode::ALL.iter().map(|m| mean(*m)).collect();
    // Each exchange is one SSL_read and one SSL_write in the server.
    let per_call_us = (cpu[2] - cpu[1]) / (2 * exchanges) as f64 * 1e6;
    let mut md = format!(
        "# SIP inside TLS: the server's cost ({exchanges} MESSAGE/200 exchanges at {rate}/s, means of 2 runs)\n\n\
         | | server thread CPU | per exchange |\n| --- | ---: | ---: |\n"
    );
    for (mode, cpu) in Mode::ALL.iter().zip(&cpu) {
        md += &format!("| {} | {cpu:.3} s | {:.1} us |\n", mode.label(), cpu / exchanges as f64 * 1e6);
    }
    md += &format!(
        "\nThe plaintext's cost per SSL call: {per_call_us:.2} us; the server's CPU {:+.1} % over sipflow without it.\n",
        (cpu[2] / cpu[1] - 1.0) * 100.0
    );
    let (without, with) = (cpu[0], cpu[2]);
    print!("{md}");
    let out = sipflow_tests::bench_dir();
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(out.join("tls.md"), &md).expect("write tls.md");
    let json = format!(
        r#"{{"exchanges":{exchanges},"rate":{rate},"server_cpu_s_without_sipflow":{without},"server_cpu_s_no_plaintext":{},"server_cpu_s_plaintext":{with},"per_ssl_call_us":{per_call_us}}}"#,
        cpu[1]
    );
    std::fs::write(out.join("tls.json"), json).expect("write tls.json");
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoSipflow,
    NoPlaintext,
    Plaintext,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::NoSipflow, Mode::NoPlaintext, Mode::Plaintext];

    fn label(self) -> &'static str {
        match self {
            Mode::NoSipflow => "without sipflow",
            Mode::NoPlaintext => "sipflow, --no-tls-plaintext (XDP + TC)",
            Mode::Plaintext => "sipflow reading TLS (+ uprobes, tracepoints)",
        }
    }
}

struct Run {
    wall_s: f64,
    server_cpu_s: f64,
    /// `sipflow_tls_calls_total{result="read"}`: the plaintext was taken (0 without sipflow).
    read_by_sipflow: u64,
}

fn exchange(mode: Mode, exchanges: u64, rate: u64, cert: &Path, key: &Path) -> Run {
    let mut lab = Lab::new("btls");
    match mode {
        Mode::NoSipflow => {}
        Mode::NoPlaintext => lab.start_agent(SERVER_IF, &["--no-tls-plaintext"]),
        Mode::Plaintext => lab.start_agent(SERVER_IF, &[]),
    }
    let address: SocketAddr = format!("{SERVER_V4}:{SIPS_PORT}").parse().unwrap();
    let listener = Lab::in_namespace(&lab.server, || TcpListener::bind(address).expect("bind 5061"));
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("TLS context");
    acceptor.set_private_key_file(key, SslFiletype::PEM).expect("key");
    acceptor.set_certificate_chain_file(cert).expect("certificate");
    let acceptor = acceptor.build();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut tls = acceptor.accept(stream).expect("TLS accept");
        let start = thread_cpu();
        let mut buf = vec![0u8; 4096];
        for _ in 0..exchanges {
            let n = read_message(&mut tls, &mut buf);
            assert!(n > 0, "the client went away");
            tls.write_all(OK).expect("write 200");
        }
        thread_cpu() - start
    });
    let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("TLS context");
    connector.set_verify(SslVerifyMode::NONE);
    let connector = connector.build();
    let stream = Lab::in_namespace(&lab.client, || TcpStream::connect(address).expect("connect 5061"));
    let mut tls = connector.configure().unwrap().verify_hostname(false).connect("proxy", stream).expect("handshake");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    for i in 0..exchanges {
        let due = started + Duration::from_micros(i * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        tls.write_all(MESSAGE).expect("write MESSAGE");
        assert!(read_message(&mut tls, &mut buf) > 0, "the server went away");
    }
    let wall_s = started.elapsed().as_secs_f64();
    let server_cpu_s = server.join().expect("server thread");
    let read_by_sipflow = if mode == Mode::NoSipflow { 0 } else { tls_calls_read(&lab.server) };
    Run { wall_s, server_cpu_s, read_by_sipflow }
}

/// Reads one head-only message (up to its empty line).
fn read_message(stream: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut have = 0;
    while !buf[..have].ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => have += n,
        }
    }
    have
}

fn thread_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn tls_calls_read(server: &str) -> u64 {
    let (_, metrics) = http_get(server, "http://127.0.0.1:9560/metrics").expect("scrape");
    metrics
        .lines()
        .find(|l| l.starts_with("sipflow_tls_calls_total{") && l.contains("result=\"read\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

const MESSAGE: &[u8] = b"MESSAGE sip:alice@example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS 192.0.2.1:40000;branch=z9hG4bK-bench\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: bench-tls@192.0.2.1\r\n\
CSeq: 1 MESSAGE\r\n\
Contact: <sip:bob@192.0.2.1:40000;transport=tls>\r\n\
Content-Length: 0\r\n\r\n";

const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TLS 192.0.2.1:40000;branch=z9hG4bK-bench\r\n\
From: <sip:bob@example.com>;tag=b1\r\n\
To: <sip:alice@example.com>;tag=a1\r\n\
Call-ID: bench-tls@192.0.2.1\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n";
