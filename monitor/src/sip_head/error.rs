//! Why a head could not be parsed at all. Only the start line can fail a
//! head: a header whose value does not parse is skipped, never fatal.

/// The start line (RFC 3261 §7.1, §7.2) is missing or unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the head is empty (nothing but line ends)")]
    Empty,
    #[error("the head ends inside its start line (no line end after it)")]
    TruncatedStartLine,
    #[error("the start line does not carry the version SIP/2.0")]
    BadVersion,
    #[error("the status line has no three-digit status code between 100 and 699")]
    BadStatusCode,
    #[error("the request line's method is not a token")]
    BadMethod,
    #[error("the request line's Request-URI is not a URI")]
    BadRequestUri,
    #[error("the start line is neither `METHOD URI SIP/2.0` nor `SIP/2.0 CODE REASON`")]
    MalformedStartLine,
}
