//! A TLS server connection that decrypts from memory, as Kamailio's tls module
//! and Python's asyncio do: the socket is read and written outside OpenSSL,
//! and SSL_read and SSL_write only move bytes between buffers. A test drives
//! it step by step, so that it can read two connections before it decrypts
//! either.

use std::{
    collections::VecDeque,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    thread,
    time::Duration,
};

use openssl::ssl::{HandshakeError, SslAcceptor, SslStream};

/// What OpenSSL reads from and writes to instead of the socket.
#[derive(Debug, Default)]
struct Buffers {
    incoming: VecDeque<u8>,
    outgoing: Vec<u8>,
}

impl Read for Buffers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.incoming.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.incoming.read(buf)
    }
}

impl Write for Buffers {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct MemoryTls {
    socket: TcpStream,
    tls: SslStream<Buffers>,
}

impl MemoryTls {
    /// Accepts `socket`, driving the handshake by hand.
    pub fn accept(acceptor: &SslAcceptor, mut socket: TcpStream) -> Self {
        socket.set_read_timeout(Some(Duration::from_secs(3))).expect("read timeout");
        let mut attempt = acceptor.accept(Buffers::default());
        loop {
            match attempt {
                Ok(mut tls) => {
                    flush(&mut socket, tls.get_mut());
                    return Self { socket, tls };
                }
                Err(HandshakeError::WouldBlock(mut mid)) => {
                    flush(&mut socket, mid.get_mut());
                    fill(&mut socket, mid.get_mut());
                    attempt = mid.handshake();
                }
                Err(e) => panic!("TLS handshake: {e}"),
            }
        }
    }

    /// One socket read into the buffer OpenSSL decrypts from.
    pub fn receive(&mut self) {
        fill(&mut self.socket, self.tls.get_mut());
    }

    /// One SSL_read of what the buffer holds; empty when it holds no whole record.
    pub fn decrypt(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 16384];
        match self.tls.ssl_read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Reads and decrypts until a message is there.
    pub fn next_message(&mut self) -> Vec<u8> {
        for _ in 0..10 {
            self.receive();
            let message = self.decrypt();
            if !message.is_empty() {
                return message;
            }
        }
        panic!("no message on the TLS connection");
    }

    /// SSL_write into the buffer, then one socket write of its records.
    pub fn send(&mut self, plaintext: &[u8]) {
        self.tls.ssl_write(plaintext).expect("SSL_write");
        flush(&mut self.socket, self.tls.get_mut());
    }

    /// SSL_write into the buffer, then its records in two socket writes, the
    /// first of `first` bytes: as a socket whose buffer was nearly full takes them.
    pub fn send_in_pieces(&mut self, plaintext: &[u8], first: usize) {
        self.tls.ssl_write(plaintext).expect("SSL_write");
        let records = std::mem::take(&mut self.tls.get_mut().outgoing);
        self.socket.write_all(&records[..first]).expect("socket write");
        thread::sleep(Duration::from_millis(50));
        self.socket.write_all(&records[first..]).expect("socket write");
    }
}

fn flush(socket: &mut TcpStream, buffers: &mut Buffers) {
    if !buffers.outgoing.is_empty() {
        socket.write_all(&buffers.outgoing).expect("socket write");
        buffers.outgoing.clear();
    }
}

fn fill(socket: &mut TcpStream, buffers: &mut Buffers) {
    let mut buf = vec![0u8; 16384];
    let n = socket.read(&mut buf).expect("socket read");
    assert!(n > 0, "the client closed the connection");
    buffers.incoming.extend(&buf[..n]);
}
