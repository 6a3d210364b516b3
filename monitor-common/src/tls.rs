//! What the kernel needs to follow SIP inside TLS: where a socket's addresses
//! and ports lie in the running kernel's `struct sock_common`. The agent reads
//! the offsets from the kernel's BTF at load time; the kernel programs read
//! the socket behind each TLS read or write with them.

/// Byte offsets into `struct sock_common` (the head of every `struct sock`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// The remote IPv4 address (`skc_daddr`), network order.
    pub daddr: u32,
    /// The local IPv4 address (`skc_rcv_saddr`).
    pub rcv_saddr: u32,
    /// The remote port (`skc_dport`), network order.
    pub dport: u32,
    /// The local port (`skc_num`), host order.
    pub num: u32,
    /// `skc_family`: AF_INET or AF_INET6.
    pub family: u32,
    /// `skc_v6_daddr` and `skc_v6_rcv_saddr`.
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    /// 1 once the agent has set the offsets; the programs read no socket before.
    pub known: u32,
}

/// Processes whose SSL calls are read at once: a SIP server and the workers
/// it forked; beyond, a process is left unread and said so.
pub const MAX_TLS_PROCESSES: u32 = 1024;
/// `TLS_PROCESSES`: one bit per process id (tgid), set for the SIP servers'.
/// A bitmap in an array, not a hash: the socket tracepoints look it up on
/// every socket call of every process on the host, and an array lookup is a
/// bounds check and an add (the verifier inlines it).
pub const TLS_PROCESSES: &str = "TLS_PROCESSES";
/// Process ids go up to 2^22 (the kernel's PID_MAX_LIMIT on 64-bit): 64 per word.
pub const TLS_PROCESS_WORDS: u32 = (1 << 22) / 64;

/// The word of `TLS_PROCESSES` that holds `tgid`'s bit, and the bit.
pub const fn tls_process_bit(tgid: u32) -> (u32, u64) {
    (tgid / 64, 1 << (tgid % 64))
}

/// The global the agent sets (`EbpfLoader::override_global`).
pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";

/// What an SSL call does with the plaintext it is given.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SslOp {
    /// SSL_read, SSL_read_ex: plaintext the peer sent.
    Read = 1,
    /// SSL_write, SSL_write_ex: plaintext the process sends.
    Write = 2,
}

/// The OpenSSL functions sipflow probes: (function, entry program, what it
/// does). The `_ex` forms (OpenSSL 1.1.1) return 1 and the count through a
/// pointer; the others return the count. A read's plaintext is there when
/// the call returns, so reads get the return program too (one serves both);
/// a write's is there at its entry, with its length, and is read when the
/// thread writes its socket: writes get no return probe, a trap fewer.
pub const SSL_FUNCTIONS: [(&str, &str, SslOp); 4] = [
    ("SSL_read", "sipflow_ssl_read", SslOp::Read),
    ("SSL_read_ex", "sipflow_ssl_read_ex", SslOp::Read),
    ("SSL_write", "sipflow_ssl_write", SslOp::Write),
    ("SSL_write_ex", "sipflow_ssl_write_ex", SslOp::Write),
];
pub const SSL_RETURN_PROGRAM: &str = "sipflow_ssl_return";

/// The tracepoints every socket read and write passes (Linux 6.4), attached
/// raw, to learn which socket an SSL call's plaintext belongs to: (tracepoint, program).
pub const SOCKET_TRACEPOINTS: [(&str, &str); 2] =
    [("sock_recv_length", "sipflow_sock_recv"), ("sock_send_length", "sipflow_sock_send")];

/// The programs that read the plaintext, tail-called through `FOLLOW_TLS` in
/// slot order: the head scanner (0), the message counter (1) as for TCP
/// segments, and the first message of an SSL call (2).
pub const TLS_FOLLOW_PROGRAMS: [&str; 3] = ["sipflow_tls_scan", "sipflow_tls_message", "sipflow_tls_first"];
pub const FOLLOW_TLS: &str = "FOLLOW_TLS";
/// Plaintext one TLS record carries at most (RFC 8446 §5.1, RFC 5246 §6.2.1).
pub const MAX_RECORD_PLAINTEXT: u32 = 1 << 14;
/// The program that reads a write's first message once its socket showed,
/// tail-called from the `sock_send_length` program through `FOLLOW_SOCK`.
pub const SOCK_FOLLOW_PROGRAMS: [&str; 1] = ["sipflow_sock_first"];
pub const FOLLOW_SOCK: &str = "FOLLOW_SOCK";
/// `FOLLOW_TLS` slot of `sipflow_tls_first`.
pub const TLS_FIRST_SLOT: u32 = 2;

// SAFETY: `SockOffsets` is `#[repr(C)]` of integers and integer arrays: every bit
// pattern is a valid value, so aya may copy it to and from the kernel as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockOffsets {}
