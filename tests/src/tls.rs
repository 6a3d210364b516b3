//! The lab's TLS: a self-signed certificate for the server side (Kamailio, the
//! test registrar), made with the openssl command as an operator would.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Writes `cert.pem` and `key.pem` (RSA 2048, one day, CN=proxy) into `dir`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=proxy", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (package openssl)");
    assert!(made.success(), "openssl could not make a certificate");
    (cert, key)
}

/// A server's TLS context with the lab's certificate, as `self_signed` made it.
pub fn acceptor(cert: &Path, key: &Path) -> openssl::ssl::SslAcceptor {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("TLS context");
    acceptor.set_private_key_file(key, SslFiletype::PEM).expect("TLS key");
    acceptor.set_certificate_chain_file(cert).expect("TLS certificate");
    acceptor.build()
}
